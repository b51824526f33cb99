//! Request and response heads: tokenised by `httparse`, then checked field by field as
//! RELIABILITY.md section A says.
//!
//! `httparse` (strict defaults: no obs-fold, no space before a colon, single spaces in
//! the start line) finds the lines, names and values. What it leaves to us, and what
//! this module decides:
//!
//! - line discipline: no bare CR, and no bare LF either (httparse accepts a lone LF as
//!   a line end; we refuse it, so that no peer can disagree with us about where a line
//!   ends);
//! - bytes: names are tokens, values are HTAB/SP/VCHAR/obs-text (no NUL, DEL or other
//!   control byte; httparse's own byte classes are exactly these, which `scan` relies
//!   on and a test pins), targets are visible ASCII without `#`;
//! - framing (A1–A9): one Content-Length of 1*DIGIT, or exactly one
//!   `Transfer-Encoding: chunked`, never both, never TE on HTTP/1.0;
//! - Host (A15), the target forms (A14), CONNECT (A16), Upgrade (A17);
//! - which fields are forwarded (A19, A21): hop-by-hop fields, the fields `Connection`
//!   names, the framing fields and the forwarding fields we set ourselves are left out.
//!
//! A head is never modified in place: the writers ([`super::write_request`],
//! [`super::write_response`]) build what is sent from these validated parts.

use super::lex::{
    all_field_vchar, crlf_only, is_authority, is_field_value, is_token, list_contains, list_elements,
    parse_content_length, range_in,
};
use super::{BodyKind, Limits, Reject, Underscores, Version};
use std::mem::MaybeUninit;
use std::ops::Range;

/// Bytes a request line may have beyond its target (method, two spaces, `HTTP/1.1`,
/// CRLF) before an incomplete line counts as over [`Limits::uri_bytes_max`] (414).
pub const REQUEST_LINE_SLACK_BYTES: usize = 64;

/// A parsed, validated request head. It owns a copy of the head's bytes; names and
/// values are ranges into it, so parsing allocates twice (the copy and the field list)
/// whatever the number of fields, three times when [`Limits::headers_max`] is over 128
/// (httparse's field slots are on the stack up to that).
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// Bytes of the head in the input, final CRLF included: the body (or the next
    /// request) starts here.
    pub head_len: usize,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// How the body is delimited (never [`BodyKind::UntilClose`] for a request).
    pub body: BodyKind,
    /// The client allows the connection to stay open after this exchange (1.1 without
    /// `Connection: close`; 1.0 with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent (the field is forwarded; the backend's 100 is
    /// relayed).
    pub expect_continue: bool,
    /// The protocol asked for by `Upgrade` (such as `websocket`), with `h2c`/`h2` tokens
    /// removed; `None` when nothing is left. Only set when `Connection` lists `upgrade`.
    pub upgrade: Option<Range<usize>>,
    raw: Vec<u8>,
    method: Range<usize>,
    /// The target in origin form (`/path?q`) or `*` (OPTIONS); an absolute-form target is
    /// reduced to its path, its authority becoming `authority`.
    target: TargetRepr,
    /// The authority to send as Host.
    authority: Range<usize>,
    /// The fields to forward: hop-by-hop fields, framing fields, Host and the
    /// forwarding fields we set ourselves are already left out.
    fields: Vec<(Range<usize>, Range<usize>)>,
}

/// Bytes of one entry of a head's list of fields.
const FIELD_ENTRY_BYTES: usize = std::mem::size_of::<(Range<usize>, Range<usize>)>();

/// Where the forwarded target's bytes live.
#[derive(Debug, Clone)]
enum TargetRepr {
    /// A range of the raw head (origin form, `*`, or the path of an absolute form).
    Raw(Range<usize>),
    /// Built by us: `/` and the query of an absolute form without a path
    /// (`http://a?q` is forwarded as `/?q`).
    Owned(Vec<u8>),
}

impl RequestHead {
    /// Heap bytes the head holds (its copy of the head and its list of fields), kept
    /// when it is parsed into again.
    pub fn heap_bytes(&self) -> usize {
        self.raw.capacity() + FIELD_ENTRY_BYTES * self.fields.capacity()
    }

    /// A head with nothing in it, to parse into with [`parse_request_into`].
    pub fn empty() -> RequestHead {
        RequestHead {
            head_len: 0,
            version: Version::H11,
            body: BodyKind::None,
            keep_alive: false,
            expect_continue: false,
            upgrade: None,
            raw: Vec::new(),
            method: 0..0,
            target: TargetRepr::Raw(0..0),
            authority: 0..0,
            fields: Vec::new(),
        }
    }

    /// The method, as sent (methods are case-sensitive).
    pub fn method(&self) -> &[u8] {
        slice(&self.raw, &self.method)
    }

    /// The target to forward: origin form or `*`.
    pub fn target(&self) -> &[u8] {
        match &self.target {
            TargetRepr::Raw(r) => slice(&self.raw, r),
            TargetRepr::Owned(t) => t,
        }
    }

    /// The Host to forward; empty only for an HTTP/1.0 request that sent none (such a
    /// request is forwarded as HTTP/1.0 without Host, see [`super::write_request`]).
    pub fn authority(&self) -> &[u8] {
        slice(&self.raw, &self.authority)
    }

    /// The upgrade protocol, when there is one to forward.
    pub fn upgrade_protocol(&self) -> Option<&[u8]> {
        self.upgrade.as_ref().map(|r| slice(&self.raw, r))
    }

    /// The end-to-end fields to forward, as (name, value).
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        fields_of(&self.raw, &self.fields)
    }

    /// The value of the (first) forwarded field called `name` (ASCII
    /// case-insensitive).
    pub fn field(&self, name: &[u8]) -> Option<&[u8]> {
        field_of(&self.raw, &self.fields, name)
    }

    /// GET, HEAD, PUT, DELETE, OPTIONS, TRACE: RFC 9110 §9.2.2. Only these may be
    /// retried after they were written.
    pub fn is_idempotent(&self) -> bool {
        matches!(
            self.method(),
            b"GET" | b"HEAD" | b"PUT" | b"DELETE" | b"OPTIONS" | b"TRACE"
        )
    }

    /// Bytes of the head kept (a bound on what the writer copies from it).
    pub(super) fn raw_len(&self) -> usize {
        self.raw.len()
    }

    /// A HEAD request: its response has no body whatever its framing fields say.
    pub fn is_head(&self) -> bool {
        self.method() == b"HEAD"
    }
}

/// A parsed, validated response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// Bytes of the head in the input.
    pub head_len: usize,
    /// The status code, 100..=999.
    pub status: u16,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// How the body is delimited, given the request's method (HEAD, and 1xx/204/304
    /// statuses, have none).
    pub body: BodyKind,
    /// The backend allows the connection to stay open (1.1 without `Connection: close`,
    /// and a body not delimited by close).
    pub keep_alive: bool,
    raw: Vec<u8>,
    reason: Range<usize>,
    fields: Vec<(Range<usize>, Range<usize>)>,
    /// The first element of the (first) `Upgrade` field: hop-by-hop, so not in
    /// `fields`, but a 101 has to name the protocol it switches to.
    upgrade: Option<Range<usize>>,
    /// The Content-Length the backend sent, even when the body is [`BodyKind::None`]
    /// (a response to HEAD, a 304): the proxy may forward it.
    content_length: Option<u64>,
}

impl ResponseHead {
    /// Heap bytes the head holds, as [`RequestHead::heap_bytes`].
    pub fn heap_bytes(&self) -> usize {
        self.raw.capacity() + FIELD_ENTRY_BYTES * self.fields.capacity()
    }

    /// A head with nothing in it, to parse into with [`parse_response_into`].
    pub fn empty() -> ResponseHead {
        ResponseHead {
            head_len: 0,
            status: 0,
            version: Version::H11,
            body: BodyKind::None,
            keep_alive: false,
            raw: Vec::new(),
            reason: 0..0,
            fields: Vec::new(),
            upgrade: None,
            content_length: None,
        }
    }

    /// The reason phrase (empty when the backend sent none, or one with obs-text).
    pub fn reason(&self) -> &[u8] {
        slice(&self.raw, &self.reason)
    }

    /// The end-to-end fields to forward, as (name, value): hop-by-hop and framing fields
    /// left out.
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        fields_of(&self.raw, &self.fields)
    }

    /// The value of the (first) field called `name` (ASCII case-insensitive), among the
    /// forwarded fields.
    pub fn field(&self, name: &[u8]) -> Option<&[u8]> {
        field_of(&self.raw, &self.fields, name)
    }

    /// The protocol of the backend's `Upgrade` field (first element, such as
    /// `websocket`), whatever the status; [`super::write_response`] writes it for a 101.
    pub fn upgrade_protocol(&self) -> Option<&[u8]> {
        self.upgrade.as_ref().map(|r| slice(&self.raw, r))
    }

    /// Bytes of the head kept (a bound on what the writer copies from it).
    pub(super) fn raw_len(&self) -> usize {
        self.raw.len()
    }

    /// The backend's Content-Length, validated, also where it does not delimit a body
    /// (HEAD, 304).
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }
}

/// `raw[r]`, or empty: ranges are built by the parser inside `raw`, so the fallback is
/// never taken, but a bug must not become a panic on a client's path.
fn slice<'a>(raw: &'a [u8], r: &Range<usize>) -> &'a [u8] {
    raw.get(r.clone()).unwrap_or_default()
}

/// The (name, value) pairs `list` ranges over in `raw`: what both heads forward.
fn fields_of<'a>(
    raw: &'a [u8],
    list: &'a [(Range<usize>, Range<usize>)],
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
    list.iter().map(move |(n, v)| (slice(raw, n), slice(raw, v)))
}

/// The value of the first of `list`'s fields called `name` (ASCII case-insensitive).
fn field_of<'a>(raw: &'a [u8], list: &'a [(Range<usize>, Range<usize>)], name: &[u8]) -> Option<&'a [u8]> {
    fields_of(raw, list)
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// What a field name means to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    Upgrade,
    /// Hop-by-hop (RFC 9110 §7.6.1 and the legacy ones): never forwarded.
    HopByHop,
    /// X-Forwarded-For/-Proto/-Host and Forwarded: set by us, never trusted from a
    /// client.
    Forwarding,
    /// Anything else: end-to-end.
    Other,
}

/// What `name` is, compared exactly (ASCII case-insensitive): the meaning the framing
/// and Host checks use. One dispatch on the length and the first byte, then at most
/// one full comparison.
fn classify(name: &[u8]) -> Name {
    // `Close` is a reserved field name (RFC 9110 §16.3.2.2), so that it never clashes
    // with the `close` connection option: a field by that name is never forwarded.
    let Some(&first) = name.first() else {
        return Name::Other;
    };
    let (known, class): (&[u8], Name) = match (name.len(), first | 0x20) {
        (2, b't') => (b"te", Name::HopByHop),
        (4, b'h') => (b"host", Name::Host),
        (5, b'c') => (b"close", Name::HopByHop),
        (7, b'u') => (b"upgrade", Name::Upgrade),
        (7, b't') => (b"trailer", Name::HopByHop),
        (9, b'f') => (b"forwarded", Name::Forwarding),
        (10, b'c') => (b"connection", Name::Connection),
        (10, b'k') => (b"keep-alive", Name::HopByHop),
        (14, b'c') => (b"content-length", Name::ContentLength),
        (14, b'h') => (b"http2-settings", Name::HopByHop),
        (15, b'x') => (b"x-forwarded-for", Name::Forwarding),
        (16, b'p') => (b"proxy-connection", Name::HopByHop),
        (16, b'x') => (b"x-forwarded-host", Name::Forwarding),
        (17, b't') => (b"transfer-encoding", Name::TransferEncoding),
        (17, b'x') => (b"x-forwarded-proto", Name::Forwarding),
        _ => return Name::Other,
    };
    if name.eq_ignore_ascii_case(known) {
        class
    } else {
        Name::Other
    }
}

/// The longest name [`classify`] knows (`transfer-encoding`, `x-forwarded-proto`).
const KNOWN_NAME_MAX: usize = 17;

/// What `name` could be read as by a backend that takes `_` for `-` (A21): under
/// [`Underscores::Allow`], `Transfer_Encoding` or `X_Forwarded_For` is forwarded only
/// if this says [`Name::Other`], so that the policy never lets a framing, Host,
/// hop-by-hop or forwarding field through in disguise. `has_underscore` says whether
/// `name` contains `_`; without one this is [`classify`].
fn classify_loose(name: &[u8], has_underscore: bool) -> Name {
    if !has_underscore {
        return classify(name);
    }
    let mut buf = [0u8; KNOWN_NAME_MAX];
    // Longer than any known name: nothing to be mistaken for.
    let Some(dashed) = buf.get_mut(..name.len()) else {
        return Name::Other;
    };
    for (d, &b) in dashed.iter_mut().zip(name) {
        *d = if b == b'_' { b'-' } else { b };
    }
    classify(dashed)
}

/// Transfer codings with a registered name that we do not implement: a request using
/// one alone gets 501 (RFC 9112 §6.1 "SHOULD respond with 501"); any other value of
/// Transfer-Encoding but `chunked` is malformed or obfuscated (`xchunked`,
/// `chunked;ext=1`, lists) and gets 400.
const KNOWN_CODINGS: [&[u8]; 8] = [
    b"gzip",
    b"x-gzip",
    b"deflate",
    b"compress",
    b"x-compress",
    b"identity",
    b"br",
    b"zstd",
];

/// Which head [`scan`] reads, and so which fields it keeps.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// A client's request, with the listener's underscore policy: end-to-end fields
    /// only, forwarding fields replaced by ours.
    Request(Underscores),
    /// A backend's response: its forwarding fields are its own business and kept.
    Response,
}

/// The framing and connection facts gathered from a head's fields, before deciding,
/// and the fields to forward.
struct Scan<'b> {
    host: Option<&'b [u8]>,
    host_count: usize,
    content_length: Option<&'b [u8]>,
    content_length_count: usize,
    transfer_encoding: Option<&'b [u8]>,
    transfer_encoding_count: usize,
    /// Connection lists `close` / `keep-alive` / `upgrade`.
    close: bool,
    keep_alive: bool,
    upgrade_listed: bool,
    /// Connection lists some other option, which may name a field to leave out.
    connection_names_other: bool,
    /// The value of the first `Upgrade` field.
    first_upgrade: Option<&'b [u8]>,
    /// A forwarded request field is `Expect: 100-continue`.
    expect_continue: bool,
    /// The fields to forward, as ranges of the head.
    fields: Vec<(Range<usize>, Range<usize>)>,
}

/// One pass over the fields of `head` (httparse's `headers`, which borrow from it): the
/// underscore policy, the facts of [`Scan`] and the fields to forward. `reject` is the
/// rejection to use for a malformed field.
///
/// Byte classes are httparse's (1.10, strict defaults): a name is 1*tchar (its
/// `TOKEN_MAP`, equal to [`is_tchar`]) followed by `:`, and a value has only HTAB, SP,
/// VCHAR and obs-text bytes (its `HEADER_VALUE_MAP`, equal to [`is_field_vchar`], on
/// every SIMD path), trimmed of SP/HTAB at both ends; anything else is an error before
/// we see the head. `httparse_guarantees_field_bytes` in the tests pins this for every
/// byte value at every SIMD block position; debug builds (tests, fuzzing) check it here
/// too.
///
/// [`is_tchar`]: super::lex::is_tchar
///
/// The fields to forward go into `fields` (emptied first): the storage of a head parsed
/// earlier, so that a keep-alive connection's heads need no new allocation.
fn scan<'b>(
    head: &[u8],
    headers: &[httparse::Header<'b>],
    side: Side,
    reject: Reject,
    mut fields: Vec<(Range<usize>, Range<usize>)>,
) -> Result<Scan<'b>, Reject> {
    fields.clear();
    fields.reserve(headers.len());
    let mut s = Scan {
        host: None,
        host_count: 0,
        content_length: None,
        content_length_count: 0,
        transfer_encoding: None,
        transfer_encoding_count: 0,
        close: false,
        keep_alive: false,
        upgrade_listed: false,
        connection_names_other: false,
        first_upgrade: None,
        expect_continue: false,
        fields,
    };
    for h in headers {
        let name = h.name.as_bytes();
        debug_assert!(is_token(name) && all_field_vchar(h.value) && is_field_value(h.value));
        let has_underscore = name.iter().fold(false, |found, &b| found | (b == b'_'));
        if side == Side::Request(Underscores::Reject) && has_underscore {
            return Err(Reject::new(400, "underscore in a field name"));
        }
        let class = classify(name);
        match class {
            Name::Host => {
                s.host_count += 1;
                s.host = Some(h.value);
            }
            Name::ContentLength => {
                s.content_length_count += 1;
                s.content_length = Some(h.value);
            }
            Name::TransferEncoding => {
                s.transfer_encoding_count += 1;
                s.transfer_encoding = Some(h.value);
            }
            Name::Connection => {
                for e in list_elements(h.value) {
                    if e.is_empty() {
                        continue;
                    }
                    if !is_token(e) {
                        return Err(reject);
                    }
                    let close = e.eq_ignore_ascii_case(b"close");
                    let keep_alive = e.eq_ignore_ascii_case(b"keep-alive");
                    let upgrade = e.eq_ignore_ascii_case(b"upgrade");
                    s.close |= close;
                    s.keep_alive |= keep_alive;
                    s.upgrade_listed |= upgrade;
                    s.connection_names_other |= !(close || keep_alive || upgrade);
                }
            }
            Name::Upgrade if s.first_upgrade.is_none() => s.first_upgrade = Some(h.value),
            _ => {}
        }
        // Whether the field is forwarded, before looking at what Connection names.
        // Framing fields and Host are classified first, so `Connection: content-length`
        // or `Connection: host` change nothing (A19): we write those ourselves anyway.
        let candidate = match side {
            Side::Request(Underscores::Drop) if has_underscore => false,
            Side::Request(_) => classify_loose(name, has_underscore) == Name::Other,
            Side::Response => matches!(class, Name::Other | Name::Forwarding),
        };
        if candidate {
            if matches!(side, Side::Request(_)) && is_expect_continue(name, h.value) {
                s.expect_continue = true;
            }
            let n = range_in(head, name).ok_or(reject)?;
            let v = range_in(head, h.value).ok_or(reject)?;
            s.fields.push((n, v));
        }
    }
    // A field named by Connection is hop-by-hop (RFC 9110 §7.6.1). `close`,
    // `keep-alive` and `upgrade` name fields that are never forwarded anyway, so the
    // usual Connection costs nothing here.
    if s.connection_names_other {
        s.fields.retain(|(n, _)| !named_by_connection(headers, slice(head, n)));
        if matches!(side, Side::Request(_)) {
            s.expect_continue = s
                .fields
                .iter()
                .any(|(n, v)| is_expect_continue(slice(head, n), slice(head, v)));
        }
    }
    Ok(s)
}

/// `Expect: 100-continue` (ASCII case-insensitive).
fn is_expect_continue(name: &[u8], value: &[u8]) -> bool {
    name.len() == 6 && name.eq_ignore_ascii_case(b"expect") && value.eq_ignore_ascii_case(b"100-continue")
}

/// Whether some `Connection` field lists `name`: such a field is hop-by-hop (RFC 9110
/// §7.6.1). The lists were validated by [`scan`]; their total size is bounded by the
/// head limit, so the rescan per field stays small and allocation-free.
fn named_by_connection(headers: &[httparse::Header<'_>], name: &[u8]) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .any(|h| list_contains(h.value, name))
}

/// Field slots kept on the stack: enough for [`Limits::default`]'s 100 fields, so that
/// the usual parse allocates nothing for httparse.
const STACK_FIELDS: usize = 128;

/// Exactly `n` uninitialised field slots for httparse (it never reads one before
/// writing it): from `stack` when they fit, else from `heap`.
fn field_slots<'s, 'b>(
    stack: &'s mut [MaybeUninit<httparse::Header<'b>>; STACK_FIELDS],
    heap: &'s mut Vec<MaybeUninit<httparse::Header<'b>>>,
    n: usize,
) -> &'s mut [MaybeUninit<httparse::Header<'b>>] {
    if n <= STACK_FIELDS {
        return stack.get_mut(..n).unwrap_or_default();
    }
    heap.resize_with(n, MaybeUninit::uninit);
    heap
}

/// The head parsed by httparse, or what to answer.
enum Tokenised {
    Partial,
    Complete(usize),
}

/// The part of `buf` httparse is run over: at most `head_bytes_max` bytes, so that its
/// work is bounded whatever the caller's buffer holds.
fn window<'b>(buf: &'b [u8], limits: &Limits) -> &'b [u8] {
    buf.get(..limits.head_bytes_max).unwrap_or(buf)
}

/// httparse's answer, with `TooManyHeaders` mapped to `too_many` and every other error
/// to `malformed`.
fn tokenised(r: httparse::Result<usize>, malformed: Reject, too_many: Reject) -> Result<Tokenised, Reject> {
    match r {
        Ok(httparse::Status::Complete(n)) => Ok(Tokenised::Complete(n)),
        Ok(httparse::Status::Partial) => Ok(Tokenised::Partial),
        Err(httparse::Error::TooManyHeaders) => Err(too_many),
        Err(_) => Err(malformed),
    }
}

/// Parses a request head at the start of `buf`. `Ok(None)`: incomplete, and within the
/// limits so far. `Err`: the status to answer before closing.
///
/// Statuses: 400 malformed or ambiguous; 405 CONNECT; 414 a target over
/// [`Limits::uri_bytes_max`]; 431 a head over [`Limits::head_bytes_max`] or more than
/// [`Limits::headers_max`] fields; 501 a Transfer-Encoding that is a known coding other
/// than `chunked`.
pub fn parse_request(buf: &[u8], limits: &Limits, underscores: Underscores) -> Result<Option<RequestHead>, Reject> {
    let mut head = RequestHead::empty();
    Ok(parse_request_into(buf, limits, underscores, &mut head)?.then_some(head))
}

/// [`parse_request`] into `out`, reusing its allocations (the copy of the head and the
/// list of fields): `Ok(true)` when a whole head was parsed into `out`; `Ok(false)`
/// when the head is not complete yet (`out` untouched). After an error `out` is an
/// unspecified but valid head. The proxy keeps parsed heads per worker and parses the
/// next request into one, so that a request costs no allocation for its head.
pub fn parse_request_into(
    buf: &[u8],
    limits: &Limits,
    underscores: Underscores,
    out: &mut RequestHead,
) -> Result<bool, Reject> {
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_FIELDS];
    let mut heap = Vec::new();
    let slots = field_slots(&mut stack, &mut heap, limits.headers_max);
    let mut req = httparse::Request::new(&mut []);
    let malformed = Reject::new(400, "malformed request head");
    let too_many = Reject::new(431, "too many header fields");
    let head_len = match tokenised(
        req.parse_with_uninit_headers(window(buf, limits), slots),
        malformed,
        too_many,
    )? {
        Tokenised::Complete(n) => n,
        Tokenised::Partial => {
            check_incomplete_request(buf, limits)?;
            return Ok(false);
        }
    };
    let head = buf.get(..head_len).ok_or(malformed)?;
    if !crlf_only(head) {
        return Err(Reject::new(400, "bare CR or LF in the head"));
    }
    let version = match req.version {
        Some(0) => Version::H10,
        Some(1) => Version::H11,
        _ => return Err(Reject::new(400, "unsupported version")),
    };
    let method = req.method.ok_or(malformed)?.as_bytes();
    if method == b"CONNECT" {
        return Err(Reject::new(405, "CONNECT is not served"));
    }
    let path = req.path.ok_or(malformed)?.as_bytes();
    if path.len() > limits.uri_bytes_max {
        return Err(Reject::new(414, "request target too long"));
    }
    let method_range = range_in(head, method).ok_or(malformed)?;
    let target = parse_target(method, path)?;
    let headers: &[httparse::Header<'_>] = req.headers;
    let s = scan(
        head,
        headers,
        Side::Request(underscores),
        malformed,
        std::mem::take(&mut out.fields),
    )?;

    let body = request_body(&s, version)?;

    // Host (A15): at most one, a valid authority; required on 1.1; when the target is
    // in absolute form its authority wins and a differing Host is refused.
    if s.host_count > 1 {
        return Err(Reject::new(400, "more than one Host"));
    }
    if let Some(h) = s.host {
        if !is_authority(h) {
            return Err(Reject::new(400, "invalid Host"));
        }
    }
    let authority = match (&target, s.host) {
        (Target::Absolute { authority, .. }, Some(h)) if !authority.eq_ignore_ascii_case(h) => {
            return Err(Reject::new(400, "Host differs from the target's authority"));
        }
        (Target::Absolute { authority, .. }, _) => range_in(head, authority).ok_or(malformed)?,
        (_, Some(h)) => range_in(head, h).ok_or(malformed)?,
        (_, None) if version == Version::H11 => return Err(Reject::new(400, "HTTP/1.1 request without Host")),
        (_, None) => 0..0,
    };
    let target = match target {
        Target::Raw(t) => TargetRepr::Raw(range_in(head, t).ok_or(malformed)?),
        Target::Absolute { path, .. } if path.first() == Some(&b'/') => {
            TargetRepr::Raw(range_in(head, path).ok_or(malformed)?)
        }
        Target::Absolute { path, .. } => TargetRepr::Owned([b"/", path].concat()),
    };

    let keep_alive = match version {
        Version::H11 => !s.close,
        Version::H10 => s.keep_alive && !s.close,
    };
    // RFC 9110 §7.8: an Upgrade in an HTTP/1.0 request is ignored.
    let upgrade = if s.upgrade_listed && version == Version::H11 && s.first_upgrade.is_some() {
        request_upgrade(headers)?
            .map(|p| range_in(head, p).ok_or(malformed))
            .transpose()?
    } else {
        None
    };
    let expect_continue = s.expect_continue;
    let fields = s.fields;
    let raw = refill(&mut out.raw, head);

    *out = RequestHead {
        head_len,
        version,
        body,
        keep_alive,
        expect_continue,
        upgrade,
        raw,
        method: method_range,
        target,
        authority,
        fields,
    };
    Ok(true)
}

/// A copy of `bytes` in the allocation `old` held (taken from it).
fn refill(old: &mut Vec<u8>, bytes: &[u8]) -> Vec<u8> {
    let mut v = std::mem::take(old);
    v.clear();
    v.extend_from_slice(bytes);
    v
}

/// An incomplete request head is refused early once it can no longer fit: 414 when the
/// request line alone (no line end yet) is longer than a target may be, or when its
/// line is complete and its target is too long; 431 when the bytes so far exceed
/// [`Limits::head_bytes_max`].
fn check_incomplete_request(buf: &[u8], limits: &Limits) -> Result<(), Reject> {
    // httparse skips empty lines before the request line; so do we.
    let start = buf.iter().position(|b| *b != b'\r' && *b != b'\n').unwrap_or(buf.len());
    let rest = buf.get(start..).unwrap_or_default();
    let line_max = limits.uri_bytes_max.saturating_add(REQUEST_LINE_SLACK_BYTES);
    let too_long = Reject::new(414, "request target too long");
    let scan_len = rest.len().min(line_max.saturating_add(1));
    let scanned = rest.get(..scan_len).unwrap_or(rest);
    // The line so far (all of it when its LF has not arrived): its target, complete or
    // not, is measured as soon as it is over the limit.
    let line_end = scanned.iter().position(|b| *b == b'\n');
    let line = scanned.get(..line_end.unwrap_or(scanned.len())).unwrap_or_default();
    let target_len = line.split(|b| *b == b' ').nth(1).map_or(0, <[u8]>::len);
    if target_len > limits.uri_bytes_max || (line_end.is_none() && rest.len() > line_max) {
        return Err(too_long);
    }
    if buf.len() > limits.head_bytes_max {
        return Err(Reject::new(431, "request head too large"));
    }
    Ok(())
}

/// A request target, checked (A14).
enum Target<'b> {
    /// Origin form (`/path?q`) or `*`: forwarded as is.
    Raw(&'b [u8]),
    /// Absolute form: the authority becomes Host, the rest (path and query, possibly
    /// empty or starting with `?`) is forwarded.
    Absolute { authority: &'b [u8], path: &'b [u8] },
}

/// Checks a target: visible ASCII only, no `#` (a fragment is never sent, RFC 9110
/// §4.2.4); origin form starts with `/`; `*` alone and only for OPTIONS; absolute form
/// `http://` or `https://` with a valid authority and no userinfo. Authority form is
/// CONNECT's only, and CONNECT is refused before this.
fn parse_target<'b>(method: &[u8], t: &'b [u8]) -> Result<Target<'b>, Reject> {
    let bad = Reject::new(400, "invalid request target");
    if t.is_empty() || !t.iter().all(|&b| (0x21..=0x7e).contains(&b) && b != b'#') {
        return Err(bad);
    }
    if t.first() == Some(&b'/') {
        return Ok(Target::Raw(t));
    }
    if t == b"*" {
        return if method == b"OPTIONS" {
            Ok(Target::Raw(t))
        } else {
            Err(bad)
        };
    }
    let after_scheme = strip_prefix_ignore_case(t, b"http://").or_else(|| strip_prefix_ignore_case(t, b"https://"));
    let Some(rest) = after_scheme else {
        return Err(bad);
    };
    let end = rest.iter().position(|b| *b == b'/' || *b == b'?').unwrap_or(rest.len());
    let (authority, path) = rest.split_at_checked(end).ok_or(bad)?;
    if !is_authority(authority) {
        return Err(bad);
    }
    Ok(Target::Absolute { authority, path })
}

fn strip_prefix_ignore_case<'b>(s: &'b [u8], prefix: &[u8]) -> Option<&'b [u8]> {
    let (head, rest) = s.split_at_checked(prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then_some(rest)
}

/// The request's body framing (A1–A9).
fn request_body(s: &Scan<'_>, version: Version) -> Result<BodyKind, Reject> {
    if let Some(te) = s.transfer_encoding {
        if version == Version::H10 {
            return Err(Reject::new(400, "Transfer-Encoding in HTTP/1.0"));
        }
        if s.content_length_count > 0 {
            return Err(Reject::new(400, "both Content-Length and Transfer-Encoding"));
        }
        if s.transfer_encoding_count > 1 {
            return Err(Reject::new(400, "more than one Transfer-Encoding"));
        }
        if te.eq_ignore_ascii_case(b"chunked") {
            return Ok(BodyKind::Chunked);
        }
        if KNOWN_CODINGS.iter().any(|c| te.eq_ignore_ascii_case(c)) {
            return Err(Reject::new(501, "unsupported transfer coding"));
        }
        return Err(Reject::new(400, "invalid Transfer-Encoding"));
    }
    content_length(s, Reject::new(400, "invalid Content-Length")).map(|cl| cl.map_or(BodyKind::None, BodyKind::Length))
}

/// The single Content-Length, if any. Two fields are refused even when equal, and so
/// is any list (`5, 5` included): one strict rule, no merging to get wrong.
fn content_length(s: &Scan<'_>, bad: Reject) -> Result<Option<u64>, Reject> {
    match (s.content_length, s.content_length_count) {
        (None, _) => Ok(None),
        (Some(v), 1) => parse_content_length(v).map(Some).ok_or(bad),
        (Some(_), _) => Err(bad),
    }
}

/// The protocol to forward from a request's Upgrade fields (A17): the elements of
/// every Upgrade field in order, `h2c` and `h2` removed (HTTP/2 cleartext upgrade is
/// never passed on, RFC 9113 §3.1); the first one left wins, the others are dropped.
/// An element that is not `token ["/" token]` gets 400.
fn request_upgrade<'b>(headers: &[httparse::Header<'b>]) -> Result<Option<&'b [u8]>, Reject> {
    let mut chosen = None;
    for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case("upgrade")) {
        for e in list_elements(h.value) {
            if e.is_empty() {
                continue;
            }
            if !is_protocol(e) {
                return Err(Reject::new(400, "invalid Upgrade"));
            }
            if chosen.is_none() && !e.eq_ignore_ascii_case(b"h2c") && !e.eq_ignore_ascii_case(b"h2") {
                chosen = Some(e);
            }
        }
    }
    Ok(chosen)
}

/// `protocol = protocol-name ["/" protocol-version]` (RFC 9110 §7.8), both tokens.
fn is_protocol(e: &[u8]) -> bool {
    let mut parts = e.splitn(2, |b| *b == b'/');
    parts.next().is_some_and(is_token) && parts.next().is_none_or(is_token)
}

/// Parses a response head at the start of `buf`, the answer to a request whose method
/// was HEAD when `head_request`. `Ok(None)`: incomplete and within limits. `Err`: the
/// response is malformed or ambiguous; the proxy answers 502 and closes the backend
/// connection.
///
/// Strict like requests (A23): CL+TE, two Content-Lengths, a Transfer-Encoding other
/// than exactly `chunked` (even `gzip, chunked`, which RFC 9112 allows in a response:
/// we cannot decode gzip and will not forward a coding we did not check), TE on
/// HTTP/1.0, bare CR/LF and obs-fold are all refused.
pub fn parse_response(buf: &[u8], limits: &Limits, head_request: bool) -> Result<Option<ResponseHead>, Reject> {
    let mut head = ResponseHead::empty();
    Ok(parse_response_into(buf, limits, head_request, &mut head)?.then_some(head))
}

/// [`parse_response`] into `out`, reusing its allocations, as [`parse_request_into`]
/// does for requests.
pub fn parse_response_into(
    buf: &[u8],
    limits: &Limits,
    head_request: bool,
    out: &mut ResponseHead,
) -> Result<bool, Reject> {
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_FIELDS];
    let mut heap = Vec::new();
    let slots = field_slots(&mut stack, &mut heap, limits.headers_max);
    let mut resp = httparse::Response::new(&mut []);
    let malformed = Reject::new(502, "malformed response head");
    let too_many = Reject::new(502, "too many response header fields");
    let parsed =
        httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, window(buf, limits), slots);
    let head_len = match tokenised(parsed, malformed, too_many)? {
        Tokenised::Complete(n) => n,
        Tokenised::Partial if buf.len() > limits.head_bytes_max => {
            return Err(Reject::new(502, "response head too large"));
        }
        Tokenised::Partial => return Ok(false),
    };
    let head = buf.get(..head_len).ok_or(malformed)?;
    if !crlf_only(head) {
        return Err(Reject::new(502, "bare CR or LF in the response head"));
    }
    let version = match resp.version {
        Some(0) => Version::H10,
        Some(1) => Version::H11,
        _ => return Err(malformed),
    };
    let status = match resp.code {
        Some(c) if (100..=999).contains(&c) => c,
        _ => return Err(Reject::new(502, "invalid status code")),
    };
    // httparse gives a static "" for a reason with obs-text: keep it empty then.
    let reason = resp.reason.and_then(|r| range_in(head, r.as_bytes())).unwrap_or(0..0);
    let headers: &[httparse::Header<'_>] = resp.headers;
    let s = scan(
        head,
        headers,
        Side::Response,
        malformed,
        std::mem::take(&mut out.fields),
    )?;

    // Framing is checked whatever the status: a backend that sends CL+TE on a 204 is
    // confused about framing, and its connection is not one to reuse.
    let content_length = content_length(&s, Reject::new(502, "invalid Content-Length in response"))?;
    let chunked = match s.transfer_encoding {
        None => false,
        Some(_) if version == Version::H10 => return Err(Reject::new(502, "Transfer-Encoding in HTTP/1.0 response")),
        Some(_) if s.content_length_count > 0 => {
            return Err(Reject::new(502, "both Content-Length and Transfer-Encoding"))
        }
        Some(_) if s.transfer_encoding_count > 1 => return Err(Reject::new(502, "more than one Transfer-Encoding")),
        Some(te) if te.eq_ignore_ascii_case(b"chunked") => true,
        Some(_) => return Err(Reject::new(502, "unsupported Transfer-Encoding in response")),
    };
    let no_body_status = (100..200).contains(&status) || status == 204 || status == 304;
    let body = if no_body_status || head_request {
        BodyKind::None
    } else if chunked {
        BodyKind::Chunked
    } else if let Some(n) = content_length {
        BodyKind::Length(n)
    } else {
        BodyKind::UntilClose
    };
    let connection_allows = match version {
        Version::H11 => !s.close,
        Version::H10 => s.keep_alive && !s.close,
    };
    // A 101 turns the connection into a tunnel; a no-body status that still announces
    // chunked framing may be followed by chunks we would read as the next response.
    let keep_alive = connection_allows && body != BodyKind::UntilClose && status != 101 && !(no_body_status && chunked);

    let upgrade = match s.first_upgrade {
        Some(v) => match list_elements(v).find(|e| !e.is_empty()) {
            Some(p) if is_protocol(p) => Some(range_in(head, p).ok_or(malformed)?),
            Some(_) => return Err(Reject::new(502, "invalid Upgrade in response")),
            None => None,
        },
        None => None,
    };
    let fields = s.fields;
    let raw = refill(&mut out.raw, head);

    *out = ResponseHead {
        head_len,
        status,
        version,
        body,
        keep_alive,
        raw,
        reason,
        fields,
        upgrade,
        content_length,
    };
    Ok(true)
}
