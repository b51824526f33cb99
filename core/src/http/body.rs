//! Body framing: the chunked decoder and encoder.
//!
//! The decoder is a byte-level state machine (RFC 9112 §7.1): every framing byte moves
//! it one step, so input split at any byte boundary (a size line in three reads, a CR in
//! one read and its LF in the next) decodes exactly as if it came at once, and no
//! framing byte is ever buffered. Data is handed back as ranges of the caller's input,
//! never copied. The only memory it keeps is the trailer section, bounded by
//! [`Limits::trailer_bytes_max`].

use super::lex::{is_field_vchar, is_tchar, is_token, push_field, trim_ows};
use super::{Limits, Reject};
use std::ops::Range;

/// What follows a chunk's data: written after every chunk produced with
/// [`encode_chunk_header`].
pub const CHUNK_DATA_END: &[u8] = b"\r\n";

/// Hex digits a chunk size may have: 16 hold any u64. A longer size (even with leading
/// zeros) is refused, so a size line cannot be stretched forever.
pub const CHUNK_SIZE_DIGITS_MAX: u8 = 16;

/// One step of [`ChunkedDecoder::decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input used (framing and data).
    pub consumed: usize,
    /// Payload bytes found in this step, as a range of the input (possibly empty).
    pub data: Range<usize>,
    /// The last chunk and the trailer section have been read: the body is complete and
    /// `consumed` ends exactly at its end.
    pub done: bool,
}

/// A sans-IO chunked-body decoder (RFC 9112 §7.1): strict about sizes (hex only, no
/// sign, no overflow), CRLFs (no bare LF), extensions (bounded, no control bytes) and
/// trailers (validated like header fields, bounded).
///
/// Extensions are checked against the grammar (`;name[=token|"quoted"]`, BWS around
/// `;` and `=`) and then discarded: we re-frame the body and send none. Trailer fields
/// are kept, minus framing, hop-by-hop, forwarding and underscore names.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    limits: Limits,
    state: State,
    /// Bytes of the current chunk's extensions so far.
    ext_bytes: usize,
    /// The trailer line being read (no CRLF), at most `trailer_bytes_max` bytes.
    line: Vec<u8>,
    /// Bytes of the trailer section so far, CRLFs included.
    trailer_bytes: usize,
    /// Trailer fields read so far (kept or not), at most `headers_max`.
    trailer_fields: usize,
    /// The kept trailer fields, as `name: value\r\n` lines.
    trailers: Vec<u8>,
}

/// Where the decoder is in the chunked grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the hex digits of a chunk size (`digits` of them so far).
    Size {
        size: u64,
        digits: u8,
    },
    /// In a size line's extensions, after the digits.
    Ext {
        size: u64,
        at: Ext,
    },
    /// The CR of a size line was read; its LF must follow.
    SizeLf {
        size: u64,
    },
    /// In a chunk's data; `remaining` > 0.
    Data {
        remaining: u64,
    },
    /// After a chunk's data: CR, then LF, must follow.
    DataCr,
    DataLf,
    /// In the trailer section, reading a line into `line`.
    Trailer,
    /// The CR of a trailer line (or of the final empty line) was read.
    TrailerLf,
    /// The body is complete.
    Done,
    /// A framing error was returned; it is returned again.
    Failed(Reject),
}

/// Where a byte falls in `*( BWS ";" BWS name [ BWS "=" BWS value ] )`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ext {
    /// After the size or an extension: BWS then `;`, or the CR (only when no BWS was
    /// read: BWS is only allowed before a `;`).
    BeforeSemi { ws: bool },
    /// After `;`: BWS, then a name.
    BeforeName,
    /// In a name.
    Name,
    /// After a name and some BWS: `=` or `;`.
    AfterName,
    /// After `=`: BWS, then a value.
    BeforeValue,
    /// In a token value.
    Token,
    /// In a quoted-string value.
    Quoted,
    /// After a `\` in a quoted string.
    QuotedPair,
}

fn bad(reason: &'static str) -> Reject {
    Reject::new(400, reason)
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body.
    pub fn new(limits: &Limits) -> ChunkedDecoder {
        ChunkedDecoder {
            limits: *limits,
            state: State::Size { size: 0, digits: 0 },
            ext_bytes: 0,
            line: Vec::new(),
            trailer_bytes: 0,
            trailer_fields: 0,
            trailers: Vec::new(),
        }
    }

    /// Decodes from `input` (the bytes after what earlier steps consumed). Returns at
    /// most one data range per call; call again with the rest while `consumed` > 0 and
    /// not `done`. `Err` for a framing error: 400 (or 431 for oversized trailers).
    ///
    /// Framing bytes are consumed into the decoder's state, so a call with only part of
    /// a size line consumes all of it and returns an empty data range. Empty input, or
    /// any call after `done`, consumes nothing. After an `Err`, every call returns it
    /// again.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, Reject> {
        let mut pos = 0;
        loop {
            match self.state {
                State::Done => {
                    return Ok(Decoded {
                        consumed: pos,
                        data: pos..pos,
                        done: true,
                    })
                }
                State::Failed(r) => return Err(r),
                State::Data { remaining } => {
                    let available = input.len().saturating_sub(pos);
                    if available == 0 {
                        break;
                    }
                    // `take` <= available, so it fits a usize.
                    let take = remaining.min(available as u64);
                    let take_len = usize::try_from(take).unwrap_or(available);
                    self.state = match remaining - take {
                        0 => State::DataCr,
                        left => State::Data { remaining: left },
                    };
                    let end = pos + take_len;
                    return Ok(Decoded {
                        consumed: end,
                        data: pos..end,
                        done: false,
                    });
                }
                // The common framing, without a step per byte: CRLF after a chunk's
                // data, and a size line of hex digits and CRLF. Anything else (an
                // extension, a split CRLF, a bad byte) goes through `step`.
                State::DataCr if input.get(pos..pos + 2) == Some(&b"\r\n"[..]) => {
                    pos += 2;
                    self.state = State::Size { size: 0, digits: 0 };
                }
                State::Size { mut size, mut digits } => {
                    while let Some(v) = input.get(pos).copied().and_then(hex_value) {
                        if digits >= CHUNK_SIZE_DIGITS_MAX {
                            return self.fail(bad("chunk size too long"));
                        }
                        // 16 digits never overflow a u64; checked anyway.
                        let Some(next) = size.checked_mul(16).and_then(|s| s.checked_add(v)) else {
                            return self.fail(bad("chunk size overflow"));
                        };
                        size = next;
                        digits += 1;
                        pos += 1;
                    }
                    self.state = State::Size { size, digits };
                    if digits > 0 && input.get(pos..pos + 2) == Some(&b"\r\n"[..]) {
                        pos += 2;
                        self.ext_bytes = 0;
                        self.state = match size {
                            0 => State::Trailer,
                            remaining => State::Data { remaining },
                        };
                        continue;
                    }
                    let Some(&b) = input.get(pos) else {
                        break;
                    };
                    pos += 1;
                    if let Err(r) = self.step(b) {
                        return self.fail(r);
                    }
                }
                _ => {
                    let Some(&b) = input.get(pos) else {
                        break;
                    };
                    pos += 1;
                    if let Err(r) = self.step(b) {
                        self.state = State::Failed(r);
                        return Err(r);
                    }
                }
            }
        }
        Ok(Decoded {
            consumed: pos,
            data: pos..pos,
            done: false,
        })
    }

    /// Records a framing error: it is returned now and by every later call.
    fn fail(&mut self, r: Reject) -> Result<Decoded, Reject> {
        self.state = State::Failed(r);
        Err(r)
    }

    /// The trailer fields read so far, validated, as `name: value\r\n` lines ready to
    /// write after the last chunk (framing and hop-by-hop fields left out).
    pub fn trailers(&self) -> &[u8] {
        &self.trailers
    }

    /// The body is complete.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// One framing byte (never called in `Data`, `Done` or `Failed`).
    fn step(&mut self, b: u8) -> Result<(), Reject> {
        self.state = match self.state {
            State::Size { size, digits } => match hex_value(b) {
                Some(v) => {
                    if digits >= CHUNK_SIZE_DIGITS_MAX {
                        return Err(bad("chunk size too long"));
                    }
                    // 16 digits never overflow a u64; checked anyway.
                    let size = size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(v))
                        .ok_or(bad("chunk size overflow"))?;
                    State::Size {
                        size,
                        digits: digits + 1,
                    }
                }
                None if digits == 0 => return Err(bad("chunk size without digits")),
                None => {
                    self.ext_bytes = 0;
                    self.ext(size, Ext::BeforeSemi { ws: false }, b)?
                }
            },
            State::Ext { size, at } => self.ext(size, at, b)?,
            State::SizeLf { size } => match (b, size) {
                (b'\n', 0) => State::Trailer,
                (b'\n', remaining) => State::Data { remaining },
                _ => return Err(bad("chunk size line without LF after CR")),
            },
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf if b == b'\n' => State::Size { size: 0, digits: 0 },
            State::DataCr | State::DataLf => return Err(bad("chunk data not followed by CRLF")),
            State::Trailer => self.trailer_byte(b)?,
            State::TrailerLf => self.trailer_lf(b)?,
            // `decode` handles these without calling `step`.
            s @ (State::Data { .. } | State::Done | State::Failed(_)) => s,
        };
        Ok(())
    }

    /// One byte of a size line after its digits: extensions, then CR.
    fn ext(&mut self, size: u64, at: Ext, b: u8) -> Result<State, Reject> {
        if b == b'\r' {
            return match at {
                Ext::BeforeSemi { ws: false } | Ext::Name | Ext::Token => Ok(State::SizeLf { size }),
                _ => Err(bad("chunk extension incomplete")),
            };
        }
        self.ext_bytes += 1;
        if self.ext_bytes > self.limits.chunk_ext_bytes_max {
            return Err(bad("chunk extensions too long"));
        }
        let next = match (at, b) {
            (Ext::BeforeSemi { .. }, b' ' | b'\t') => Ext::BeforeSemi { ws: true },
            (Ext::BeforeSemi { .. } | Ext::Name | Ext::AfterName | Ext::Token, b';') => Ext::BeforeName,
            (Ext::BeforeName, b' ' | b'\t') => Ext::BeforeName,
            (Ext::BeforeName | Ext::Name, b) if is_tchar(b) => Ext::Name,
            (Ext::Name | Ext::AfterName, b' ' | b'\t') => Ext::AfterName,
            (Ext::Name | Ext::AfterName, b'=') => Ext::BeforeValue,
            (Ext::BeforeValue, b' ' | b'\t') => Ext::BeforeValue,
            (Ext::BeforeValue, b'"') => Ext::Quoted,
            (Ext::BeforeValue | Ext::Token, b) if is_tchar(b) => Ext::Token,
            (Ext::Token, b' ' | b'\t') => Ext::BeforeSemi { ws: true },
            (Ext::Quoted, b'"') => Ext::BeforeSemi { ws: false },
            (Ext::Quoted, b'\\') => Ext::QuotedPair,
            (Ext::Quoted | Ext::QuotedPair, b) if is_field_vchar(b) => Ext::Quoted,
            _ => return Err(bad("invalid chunk extension")),
        };
        Ok(State::Ext { size, at: next })
    }

    /// Counts one byte of the trailer section against its limit.
    fn count_trailer_byte(&mut self) -> Result<(), Reject> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > self.limits.trailer_bytes_max {
            return Err(Reject::new(431, "trailer section too large"));
        }
        Ok(())
    }

    /// One byte of a trailer line.
    fn trailer_byte(&mut self, b: u8) -> Result<State, Reject> {
        self.count_trailer_byte()?;
        match b {
            b'\r' => Ok(State::TrailerLf),
            b'\n' => Err(bad("bare LF in trailers")),
            b' ' | b'\t' if self.line.is_empty() => Err(bad("obs-fold in trailers")),
            _ => {
                self.line.push(b);
                Ok(State::Trailer)
            }
        }
    }

    /// The LF ending a trailer line: the empty line ends the body, any other line is
    /// one field.
    fn trailer_lf(&mut self, b: u8) -> Result<State, Reject> {
        self.count_trailer_byte()?;
        if b != b'\n' {
            return Err(bad("bare CR in trailers"));
        }
        if self.line.is_empty() {
            return Ok(State::Done);
        }
        self.trailer_fields += 1;
        if self.trailer_fields > self.limits.headers_max {
            return Err(Reject::new(431, "too many trailer fields"));
        }
        let line = std::mem::take(&mut self.line);
        let result = self.trailer_field(&line);
        // Keep the line's allocation for the next one.
        self.line = line;
        self.line.clear();
        result.map(|()| State::Trailer)
    }

    /// Checks a trailer field line (`name:OWS value OWS`, no space before the colon)
    /// and keeps it unless its name is one that must never arrive late.
    fn trailer_field(&mut self, line: &[u8]) -> Result<(), Reject> {
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .ok_or(bad("trailer line without colon"))?;
        let (name, rest) = line.split_at(colon);
        let value = trim_ows(rest.get(1..).unwrap_or_default());
        if !is_token(name) || !value.iter().all(|&b| is_field_vchar(b)) {
            return Err(bad("invalid trailer field"));
        }
        if !name.contains(&b'_') && !DROPPED_TRAILERS.iter().any(|d| name.eq_ignore_ascii_case(d)) {
            push_field(&mut self.trailers, name, value);
        }
        Ok(())
    }
}

/// Trailer names never forwarded: framing, routing, hop-by-hop, and the forwarding
/// fields (a backend that merges trailers into the head must not learn a client's
/// "X-Forwarded-For" from them). Names with `_` are dropped too (A21, the Drop policy:
/// the decoder has no per-listener setting).
const DROPPED_TRAILERS: [&[u8]; 15] = [
    b"content-length",
    b"transfer-encoding",
    b"host",
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"upgrade",
    b"http2-settings",
    b"expect",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"forwarded",
];

fn hex_value(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

/// Appends a chunk header for `len` payload bytes (`len` > 0): `{len:x}\r\n`.
pub fn encode_chunk_header(len: usize, out: &mut Vec<u8>) {
    debug_assert!(len > 0, "a zero-length chunk would end the body");
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 2 * std::mem::size_of::<usize>()];
    let mut start = digits.len();
    let mut n = len;
    for d in digits.iter_mut().rev() {
        *d = HEX.get(n & 0xf).copied().unwrap_or(b'0');
        start -= 1;
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
    out.extend_from_slice(CHUNK_DATA_END);
}

/// Appends the last chunk, `trailers` (lines from [`ChunkedDecoder::trailers`]) and the
/// final CRLF.
pub fn encode_last_chunk(trailers: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    out.extend_from_slice(trailers);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` in steps, as a driver would, feeding `split` bytes at a time.
    /// Returns the payload, or the error; panics if the body is not complete at the end.
    fn decode_all(input: &[u8], split: usize, limits: &Limits) -> Result<(Vec<u8>, usize, Vec<u8>), Reject> {
        let mut d = ChunkedDecoder::new(limits);
        let mut payload = Vec::new();
        let mut pos = 0;
        let mut fed = 0;
        loop {
            fed = (fed + split).min(input.len()).max(pos);
            let window = &input[pos..fed];
            let step = d.decode(window)?;
            payload.extend_from_slice(&window[step.data.clone()]);
            pos += step.consumed;
            if step.done {
                return Ok((payload, pos, d.trailers().to_vec()));
            }
            if step.consumed == 0 && fed == input.len() {
                panic!("body incomplete at {pos} of {}", input.len());
            }
        }
    }

    fn err(input: &[u8]) -> u16 {
        let mut d = ChunkedDecoder::new(&Limits::default());
        let mut pos = 0;
        loop {
            match d.decode(&input[pos..]) {
                Err(r) => return r.status,
                Ok(s) if s.done => panic!("accepted {:?}", String::from_utf8_lossy(input)),
                Ok(s) if s.consumed == 0 => panic!("incomplete, not refused: {:?}", String::from_utf8_lossy(input)),
                Ok(s) => pos += s.consumed,
            }
        }
    }

    #[test]
    fn decodes_a_body_at_every_split() {
        let body = b"5\r\nhello\r\n1;a=b ; c=\"q\\\"x\"\r\n \r\nA\r\n0123456789\r\n0\r\nX-Sum: 1\r\nContent-Length: 9\r\n\r\nNEXT";
        let len = body.len() - 4;
        for split in 1..=body.len() {
            let (payload, end, trailers) = decode_all(body, split, &Limits::default()).unwrap();
            assert_eq!(payload, b"hello 0123456789", "split {split}");
            assert_eq!(end, len, "split {split}");
            assert_eq!(trailers, b"X-Sum: 1\r\n");
        }
    }

    #[test]
    fn one_call_per_data_range_and_nothing_after_done() {
        let mut d = ChunkedDecoder::new(&Limits::default());
        let input = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let s = d.decode(input).unwrap();
        assert_eq!(
            s,
            Decoded {
                consumed: 6,
                data: 3..6,
                done: false
            }
        );
        let s = d.decode(&input[6..]).unwrap();
        assert_eq!(
            s,
            Decoded {
                consumed: 7,
                data: 5..7,
                done: false
            }
        );
        let s = d.decode(&input[13..]).unwrap();
        assert_eq!(
            s,
            Decoded {
                consumed: 7,
                data: 7..7,
                done: true
            }
        );
        assert_eq!(
            d.decode(b"more").unwrap(),
            Decoded {
                consumed: 0,
                data: 0..0,
                done: true
            }
        );
        assert!(d.is_done());
        assert_eq!(ChunkedDecoder::new(&Limits::default()).decode(b"").unwrap().consumed, 0);
    }

    #[test]
    fn a10_framing_errors() {
        let mut big_ext = b"5;e=".to_vec();
        big_ext.extend(std::iter::repeat_n(b'a', 64 * 1024));
        big_ext.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        let cases: [(&[u8], u16); 22] = [
            (b"ffffffffffffffffffff\r\n", 400),
            (b"00000000000000001\r\n", 400),
            (b"0x5\r\nhello\r\n0\r\n\r\n", 400),
            (b"-1\r\n", 400),
            (b"+5\r\nhello\r\n0\r\n\r\n", 400),
            (b"\r\n", 400),
            (b" 5\r\nhello\r\n0\r\n\r\n", 400),
            (b"5 \r\nhello\r\n0\r\n\r\n", 400),
            (b"5\r\nhelloXX0\r\n\r\n", 400),
            (b"5\r\nhello\n0\r\n\r\n", 400),
            (b"5;\n", 400),
            (b"5\n", 400),
            (b"5;\r\nhello\r\n0\r\n\r\n", 400),
            (b"5;a\0b\r\n", 400),
            (b"5;a=\"\0\"\r\n", 400),
            (b"5;a=\r\n", 400),
            (&big_ext, 400),
            (b"5\rhello", 400),
            (b"0\r\nX: a\n\r\n", 400),
            (b"0\r\nX: a\rb\r\n\r\n", 400),
            (b"0\r\nX: a\r\n b\r\n\r\n", 400),
            (b"0\r\nX : a\r\n\r\n", 400),
        ];
        for (input, status) in cases {
            assert_eq!(err(input), status, "{:?}", String::from_utf8_lossy(input));
        }
        assert_eq!(err(b"0\r\nX: \x7f\r\n\r\n"), 400);
        assert_eq!(err(b"0\r\nnocolon\r\n\r\n"), 400);
    }

    #[test]
    fn trailers_are_bounded_and_filtered() {
        let limits = Limits {
            trailer_bytes_max: 32,
            ..Limits::default()
        };
        let mut long = b"0\r\n".to_vec();
        long.extend_from_slice(b"X-Long: ");
        long.extend(std::iter::repeat_n(b'a', 40));
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(decode_all(&long, long.len(), &limits).unwrap_err().status, 431);
        let many = b"0\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n";
        let two = Limits {
            headers_max: 2,
            ..Limits::default()
        };
        assert_eq!(decode_all(many, many.len(), &two).unwrap_err().status, 431);
        let input = b"0\r\nTransfer-Encoding: chunked\r\nX_A: 1\r\nhost: h\r\nX-Ok:  v \r\n\r\n";
        let (payload, _, trailers) = decode_all(input, 3, &Limits::default()).unwrap();
        assert!(payload.is_empty());
        assert_eq!(trailers, b"X-Ok: v\r\n");
    }

    #[test]
    fn one_byte_chunks_are_linear_and_bounded() {
        let n = 100_000;
        let mut input = Vec::with_capacity(n * 6 + 5);
        for _ in 0..n {
            input.extend_from_slice(b"1\r\nx\r\n");
        }
        input.extend_from_slice(b"0\r\n\r\n");
        let mut d = ChunkedDecoder::new(&Limits::default());
        let (mut pos, mut bytes, mut calls) = (0, 0, 0);
        loop {
            let s = d.decode(&input[pos..]).unwrap();
            calls += 1;
            bytes += s.data.len();
            pos += s.consumed;
            if s.done {
                break;
            }
        }
        assert_eq!((bytes, pos), (n, input.len()));
        // One call per chunk plus the end: each call does constant framing work.
        assert_eq!(calls, n + 1);
        assert!(d.line.capacity() == 0 && d.trailers().is_empty());
    }

    #[test]
    fn encoder_writes_lowercase_hex() {
        let mut out = Vec::new();
        encode_chunk_header(1, &mut out);
        encode_chunk_header(0xabc, &mut out);
        encode_chunk_header(usize::MAX, &mut out);
        encode_last_chunk(b"x: 1\r\n", &mut out);
        let expect = format!("1\r\nabc\r\n{:x}\r\n0\r\nx: 1\r\n\r\n", usize::MAX);
        assert_eq!(out, expect.as_bytes());
    }
}
