//! Where a value sits in RON source text.
//!
//! ron reports a position only for the first syntax or type error. Semantic problems
//! (a duplicate backend, an unknown pool) are found after deserialization, when the
//! positions are gone, yet an operator needs `file:line:col` to fix them. This module
//! recovers positions by scanning the source a second time:
//!
//! - [`index`] maps each field path such as `pools[0].backends[1].address` to the
//!   line and column where that value starts.
//! - [`error_site`] goes the other way for ron's own errors: it moves ron's position
//!   onto the token it concerns (ron sometimes points at the whitespace before a value,
//!   or inside it) and names the field path there.
//!
//! The scanner is deliberately small and forgiving. It skips strings (with escapes),
//! raw strings, char literals, `//` and nested `/* */` comments and `#![...]`
//! attributes, tracks the nesting of `(`, `[` and `{`, recognises `key:` at the current
//! depth and counts list elements by commas. It never recurses (so hostile nesting
//! cannot overflow the stack), never panics, and on text that is not valid RON it
//! simply gives a less precise answer.

use std::collections::BTreeMap;

/// A 1-based line and column; columns count characters, as ron's do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Position {
    pub line: usize,
    pub col: usize,
}

impl Position {
    const START: Position = Position { line: 1, col: 1 };
}

/// Where every value in `src` starts, by field path: one scan answers every lookup.
///
/// Paths use the syntax of problem reports: fields joined by `.`, list indices in
/// brackets (`pools[0].backends[1].address`); the root value is the empty path. A value
/// the source does not spell out (a defaulted field) has no entry.
pub(crate) fn index(src: &str) -> BTreeMap<String, Position> {
    let tokens = tokenize(src);
    let mut walker = Walker::new();
    let mut positions = BTreeMap::new();
    let mut i = 0;
    while i < tokens.len() {
        let (next, started) = walker.step(&tokens, i);
        if let Some((path, at)) = started {
            // The first wins (only invalid text repeats a path).
            positions.entry(path).or_insert(at);
        }
        i = next;
    }
    positions
}

/// Where to report a ron error found at `at`, and the field path there.
///
/// The position is moved to the start of the token that contains `at`, or the next
/// token when `at` falls in whitespace or a comment; past the last token it stays put.
pub(crate) fn error_site(src: &str, at: Position) -> (Position, String) {
    let tokens = tokenize(src);
    let snapped = tokens.iter().find(|t| t.end > at).map_or(at, |t| t.start);
    let mut walker = Walker::new();
    let mut i = 0;
    while i < tokens.len() && tokens[i].start <= snapped {
        i = walker.step(&tokens, i).0;
    }
    (snapped, walker.current_path())
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Open(char),
    Close,
    Comma,
    Colon,
    /// Identifiers, numbers, `true`, struct names: anything unquoted.
    Word(String),
    /// A string or char literal, with its contents (escapes left as written: only map
    /// keys ever look at them).
    Literal(String),
}

#[derive(Clone, Debug)]
struct Token {
    kind: Kind,
    start: Position,
    /// Just past the token's last character.
    end: Position,
}

/// A character iterator that knows its line and column.
struct Cursor<'a> {
    rest: std::str::Chars<'a>,
    pos: Position,
}

impl Cursor<'_> {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.rest.clone().nth(ahead)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.rest.next()?;
        if c == '\n' {
            self.pos.line += 1;
            self.pos.col = 1;
        } else {
            self.pos.col += 1;
        }
        Some(c)
    }

    /// Consumes a quoted literal whose opening `quote` is next, honouring `\` escapes.
    /// An unterminated literal runs to the end of the input.
    fn quoted(&mut self, quote: char) -> String {
        let mut text = String::new();
        self.bump();
        while let Some(c) = self.bump() {
            match c {
                '\\' => {
                    text.push(c);
                    if let Some(escaped) = self.bump() {
                        text.push(escaped);
                    }
                }
                c if c == quote => break,
                c => text.push(c),
            }
        }
        text
    }

    /// If a raw string (`r"…"`, `r#"…"#`, …) starts `ahead` characters from here, the
    /// number of `#` it uses.
    fn raw_string_hashes(&self, ahead: usize) -> Option<usize> {
        if self.peek(ahead) != Some('r') {
            return None;
        }
        let mut hashes = 0;
        loop {
            match self.peek(ahead + 1 + hashes) {
                Some('#') => hashes += 1,
                Some('"') => return Some(hashes),
                _ => return None,
            }
        }
    }

    /// Consumes a raw string: `prefix` characters (`r` or `br`), the hashes, the quote,
    /// the body, and the closing quote with as many hashes.
    fn raw(&mut self, prefix: usize, hashes: usize) -> String {
        for _ in 0..prefix + hashes + 1 {
            self.bump();
        }
        let mut text = String::new();
        while let Some(c) = self.bump() {
            if c == '"' && (0..hashes).all(|k| self.peek(k) == Some('#')) {
                for _ in 0..hashes {
                    self.bump();
                }
                return text;
            }
            text.push(c);
        }
        text
    }

    fn skip_line_comment(&mut self) {
        while let Some(c) = self.peek(0) {
            if c == '\n' {
                return;
            }
            self.bump();
        }
    }

    /// Skips a block comment; RON block comments nest.
    fn skip_block_comment(&mut self) {
        self.bump();
        self.bump();
        let mut depth = 1usize;
        while let Some(c) = self.bump() {
            if c == '/' && self.peek(0) == Some('*') {
                self.bump();
                depth += 1;
            } else if c == '*' && self.peek(0) == Some('/') {
                self.bump();
                depth -= 1;
                if depth == 0 {
                    return;
                }
            }
        }
    }
}

fn is_word_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '(' | ')' | '[' | ']' | '{' | '}' | ',' | ':' | '"' | '\'')
}

fn tokenize(src: &str) -> Vec<Token> {
    let mut cur = Cursor {
        rest: src.chars(),
        pos: Position::START,
    };
    let mut tokens = Vec::new();
    while let Some(c) = cur.peek(0) {
        let start = cur.pos;
        let kind = match c {
            c if c.is_whitespace() => {
                cur.bump();
                continue;
            }
            '/' if cur.peek(1) == Some('/') => {
                cur.skip_line_comment();
                continue;
            }
            '/' if cur.peek(1) == Some('*') => {
                cur.skip_block_comment();
                continue;
            }
            '(' | '[' | '{' => {
                cur.bump();
                Kind::Open(c)
            }
            ')' | ']' | '}' => {
                cur.bump();
                Kind::Close
            }
            ',' => {
                cur.bump();
                Kind::Comma
            }
            ':' => {
                cur.bump();
                Kind::Colon
            }
            '"' | '\'' => Kind::Literal(cur.quoted(c)),
            'b' if matches!(cur.peek(1), Some('"' | '\'')) => {
                cur.bump();
                let quote = cur.peek(0).unwrap_or('"');
                Kind::Literal(cur.quoted(quote))
            }
            'b' if cur.raw_string_hashes(1).is_some() => {
                let hashes = cur.raw_string_hashes(1).unwrap_or(0);
                Kind::Literal(cur.raw(2, hashes))
            }
            'r' if cur.raw_string_hashes(0).is_some() => {
                let hashes = cur.raw_string_hashes(0).unwrap_or(0);
                Kind::Literal(cur.raw(1, hashes))
            }
            _ => {
                let mut word = String::new();
                while let Some(c) = cur.peek(0) {
                    let comment = c == '/' && matches!(cur.peek(1), Some('/' | '*'));
                    if !is_word_char(c) || comment {
                        break;
                    }
                    word.push(c);
                    cur.bump();
                }
                Kind::Word(word)
            }
        };
        tokens.push(Token {
            kind,
            start,
            end: cur.pos,
        });
    }
    tokens
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FrameKind {
    /// The whole document: holds exactly one value, whose path is empty.
    Root,
    /// `( … )`: a struct with `key: value` fields, or a tuple of positional values.
    Paren,
    /// `[ … ]`: a list.
    Bracket,
    /// `{ … }`: a map, whose keys may be literals.
    Brace,
}

/// One open container while walking the tokens.
#[derive(Debug)]
struct Frame {
    kind: FrameKind,
    /// The path of the container itself.
    path: String,
    /// The key of the field being read, in a struct or map.
    key: Option<String>,
    /// The index of the element being read, in a list or tuple.
    index: usize,
    /// Whether the next token starts a value (after the opener, a comma or a key).
    expect_value: bool,
    /// Whether a `key:` was seen: then this paren is a struct, not a tuple, and a value
    /// without a key is a fault of the struct itself.
    keyed: bool,
}

impl Frame {
    fn new(kind: FrameKind, path: String) -> Frame {
        Frame {
            kind,
            path,
            key: None,
            index: 0,
            expect_value: true,
            keyed: false,
        }
    }

    fn child_path(&self) -> String {
        match (self.kind, &self.key) {
            (FrameKind::Root, _) => String::new(),
            (_, Some(key)) if self.path.is_empty() => key.clone(),
            (_, Some(key)) => format!("{}.{key}", self.path),
            (_, None) if self.keyed => self.path.clone(),
            (_, None) => format!("{}[{}]", self.path, self.index),
        }
    }
}

/// Walks tokens one step at a time, keeping the stack of open containers.
struct Walker {
    /// Never empty: the root frame is never popped.
    stack: Vec<Frame>,
}

impl Walker {
    fn new() -> Walker {
        Walker {
            stack: vec![Frame::new(FrameKind::Root, String::new())],
        }
    }

    fn top(&mut self) -> &mut Frame {
        let last = self.stack.len() - 1;
        &mut self.stack[last]
    }

    /// Consumes the token at `i` (and its key colon, struct-name paren or attribute
    /// body); returns the index of the next unread token and, when a value starts
    /// here, its path and position.
    fn step(&mut self, tokens: &[Token], i: usize) -> (usize, Option<(String, Position)>) {
        let token = &tokens[i];
        let next_kind = tokens.get(i + 1).map(|t| &t.kind);
        match &token.kind {
            Kind::Comma => {
                let top = self.top();
                if top.kind != FrameKind::Root {
                    top.key = None;
                    top.index += 1;
                    top.expect_value = true;
                }
                return (i + 1, None);
            }
            Kind::Close => {
                // Mismatched closers only happen in invalid text; popping anyway keeps
                // the walk going and the answer approximate.
                if self.stack.len() > 1 {
                    self.stack.pop();
                }
                return (i + 1, None);
            }
            Kind::Colon => return (i + 1, None),
            Kind::Word(word) if word.starts_with('#') => return (skip_attribute(tokens, i), None),
            _ => {}
        }

        let top = self.top();
        let keyed = matches!(top.kind, FrameKind::Paren | FrameKind::Brace);
        if keyed && next_kind == Some(&Kind::Colon) {
            let key = match &token.kind {
                Kind::Word(word) => Some(word.strip_prefix("r#").unwrap_or(word).to_string()),
                Kind::Literal(text) => Some(text.clone()),
                _ => None,
            };
            if key.is_some() {
                top.key = key;
                top.keyed = true;
                top.expect_value = true;
                return (i + 2, None);
            }
        }

        if !top.expect_value && top.key.is_none() && top.kind != FrameKind::Root {
            // A second value without a comma between (invalid, but report it as the
            // next element rather than as the previous one).
            top.index += 1;
        }
        top.expect_value = false;
        let path = top.child_path();
        let started = Some((path.clone(), token.start));
        match (&token.kind, next_kind) {
            (Kind::Open(c), _) => {
                self.stack.push(Frame::new(frame_kind(*c), path));
                (i + 1, started)
            }
            // `Name(` : a struct name, an enum variant or `Some(`. The paren belongs to
            // the value that starts at the name.
            (Kind::Word(_), Some(Kind::Open('('))) => {
                self.stack.push(Frame::new(FrameKind::Paren, path));
                (i + 2, started)
            }
            _ => (i + 1, started),
        }
    }

    /// The path of the innermost value being read.
    fn current_path(&self) -> String {
        let Some(top) = self.stack.last() else {
            return String::new();
        };
        match (top.kind, &top.key) {
            (FrameKind::Root, _) => String::new(),
            (_, Some(_)) => top.child_path(),
            (FrameKind::Bracket, None) if top.index > 0 || !top.expect_value => top.child_path(),
            (_, None) => top.path.clone(),
        }
    }
}

fn frame_kind(open: char) -> FrameKind {
    match open {
        '[' => FrameKind::Bracket,
        '{' => FrameKind::Brace,
        _ => FrameKind::Paren,
    }
}

/// Skips `#![enable(...)]`-style attributes: the `#…` word and a balanced group after it.
fn skip_attribute(tokens: &[Token], i: usize) -> usize {
    let mut j = i + 1;
    if !matches!(tokens.get(j).map(|t| &t.kind), Some(Kind::Open(_))) {
        return j;
    }
    let mut depth = 0usize;
    while let Some(token) = tokens.get(j) {
        j += 1;
        match token.kind {
            Kind::Open(_) => depth += 1,
            Kind::Close => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    break;
                }
            }
            _ => {}
        }
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locate(src: &str, path: &str) -> Option<Position> {
        index(src).get(path).copied()
    }

    fn at(line: usize, col: usize) -> Position {
        Position { line, col }
    }

    /// The rest of the line from where `path` was located: lets a test show which text
    /// a position points at instead of counting columns by hand.
    fn text_at(src: &str, path: &str) -> Option<String> {
        let pos = locate(src, path)?;
        let line = src.lines().nth(pos.line - 1)?;
        Some(line.chars().skip(pos.col - 1).collect())
    }

    fn assert_at(src: &str, path: &str, expected_prefix: &str) {
        let found = text_at(src, path);
        assert!(
            found.as_deref().is_some_and(|t| t.starts_with(expected_prefix)),
            "{path}: expected text starting {expected_prefix:?}, found {found:?}"
        );
    }

    const NESTED: &str = r#"(
    workers: 2,
    listeners: [
        (name: "a,b:[c]", bind: "127.0.0.1:80", pool: "web"),
        Listener(bind: "127.0.0.1:81", pool: "web",),
    ],
    pools: [(
        name: "web",
        backends: [
            (address: "10.0.0.1:80"), (address: "10.0.0.2:80",
             weight: 3),
        ],
    )],
)"#;

    #[test]
    fn finds_fields_and_list_elements() {
        assert_eq!(locate(NESTED, ""), Some(at(1, 1)));
        assert_eq!(locate(NESTED, "workers"), Some(at(2, 14)));
        assert_at(NESTED, "workers", "2,");
        assert_at(NESTED, "listeners", "[");
        assert_at(NESTED, "listeners[0]", "(name: \"a,b");
        assert_at(NESTED, "listeners[0].name", "\"a,b:[c]\"");
        assert_at(NESTED, "listeners[0].bind", "\"127.0.0.1:80\"");
        assert_at(NESTED, "listeners[0].pool", "\"web\"),");
        // A struct name belongs to the value it names.
        assert_at(NESTED, "listeners[1]", "Listener(");
        assert_at(NESTED, "listeners[1].pool", "\"web\",),");
        assert_at(NESTED, "pools[0]", "(");
        assert_at(NESTED, "pools[0].name", "\"web\",");
        assert_at(NESTED, "pools[0].backends[0]", "(address: \"10.0.0.1:80\")");
        assert_at(NESTED, "pools[0].backends[1].address", "\"10.0.0.2:80\",");
        assert_eq!(locate(NESTED, "pools[0].backends[1].weight"), Some(at(11, 22)));
        assert_at(NESTED, "pools[0].backends[1].weight", "3),");
    }

    #[test]
    fn finds_health_check_fields_nested_in_pools_and_backends() {
        let src = r#"(pools: [
    (name: "a", backends: [(address: "x")]),
    (
        name: "web",
        health_check: HealthCheck(kind: "http", timeout: "1s"),
        passive: (ejection: "10s"),
        backends: [
            (address: "10.0.0.1:80"),
            (address: "10.0.0.2:80", health_check: (interval: "5s", rise: 3)),
        ],
    ),
])"#;
        assert_at(src, "pools[1].health_check", "HealthCheck(");
        assert_at(src, "pools[1].health_check.timeout", "\"1s\"),");
        assert_at(src, "pools[1].passive.ejection", "\"10s\"),");
        assert_at(src, "pools[1].backends[1].health_check", "(interval");
        assert_at(src, "pools[1].backends[1].health_check.rise", "3)),");
        assert_eq!(locate(src, "pools[1].backends[0].health_check"), None);
        assert_eq!(locate(src, "pools[0].health_check.timeout"), None);
    }

    #[test]
    fn missing_values_are_none() {
        assert_eq!(locate(NESTED, "timeouts"), None);
        assert_eq!(locate(NESTED, "listeners[2]"), None);
        assert_eq!(locate(NESTED, "pools[0].backends[0].weight"), None);
        // A trailing comma does not make an element.
        assert_eq!(locate(NESTED, "listeners[1].name"), None);
        assert_eq!(locate(NESTED, "pools[0].backends[2]"), None);
        assert_eq!(locate("", ""), None);
    }

    #[test]
    fn skips_comments_strings_and_attributes() {
        let src = concat!(
            "#![enable(implicit_some)]\n",
            "// (a: [1, 2]),\n",
            "( /* outer /* inner: ( */ still: [ */\n",
            "  a: \"quote \\\" ( [ , :\", // b: 1,\n",
            "  b: r#\"raw \" ), x: \"#, c: 'x', d: '\\'',\n",
            "  e: br\"(\", f: b\"[\", g: { \"k:\": [ 1, 2 ] },\n",
            "  h: [ (x: 1), (x: 2) ],\n",
            ")",
        );
        assert_eq!(locate(src, ""), Some(at(3, 1)));
        assert_at(src, "a", "\"quote");
        assert_at(src, "b", "r#\"raw");
        assert_eq!(locate(src, "x"), None);
        assert_eq!(locate(src, "still"), None);
        assert_at(src, "c", "'x'");
        assert_at(src, "d", "'\\''");
        assert_at(src, "e", "br\"(\"");
        assert_at(src, "f", "b\"[\"");
        assert_at(src, "g", "{ \"k:\"");
        assert_at(src, "g.k:", "[ 1, 2 ]");
        assert_at(src, "g.k:[1]", "2 ]");
        assert_at(src, "h[1].x", "2) ]");
    }

    #[test]
    fn index_holds_every_spelled_out_value() {
        let positions = index(NESTED);
        assert_eq!(positions.len(), 19);
        assert_eq!(positions.keys().next().map(String::as_str), Some(""));
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let src = "(name: \"déjà vu\", next: 1)";
        assert_eq!(locate(src, "next"), Some(at(1, 25)));
    }

    #[test]
    fn raw_identifiers_are_keys() {
        assert_eq!(locate("(r#type: 1)", "type"), Some(at(1, 10)));
    }

    #[test]
    fn error_site_snaps_to_the_token_and_names_the_path() {
        // ron points at the space before a bad value, or inside it.
        let src = "(\n  pools: [(backends: [(address: \"x\"), (weight:  -1)])],\n)";
        let weight = (at(2, 49), "pools[0].backends[1].weight".to_string());
        assert_eq!(error_site(src, at(2, 48)), weight);
        assert_eq!(error_site(src, at(2, 50)), weight);
        // An unknown key is reported with its own name.
        let src = "(\n  helth_check: (),\n)";
        assert_eq!(error_site(src, at(2, 3)), (at(2, 3), "helth_check".to_string()));
        // A missing field is reported at the closing paren of its struct.
        let src = "(listeners: [(bind: \"a\"), (name: \"b\")])";
        assert_eq!(error_site(src, at(1, 37)), (at(1, 37), "listeners[1]".to_string()));
        // A value without a key inside a struct is the struct's fault.
        let src = "(a: (b: 1, (c: 2)))";
        assert_eq!(error_site(src, at(1, 12)), (at(1, 12), "a".to_string()));
        // Past the end the position stays.
        assert_eq!(error_site("(a: [", at(1, 6)), (at(1, 6), "a".to_string()));
    }

    #[test]
    fn tolerates_garbage() {
        for src in [
            "))]]",
            "((((((",
            "\"unterminated",
            "/* open",
            "r#\"open",
            "#![",
            ": : ,",
            "b",
            "r",
            "br#",
        ] {
            assert_eq!(locate(src, "a[0].b"), None);
            let _ = error_site(src, at(1, 3));
        }
    }
}
