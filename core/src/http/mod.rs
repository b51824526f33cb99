//! The HTTP/1.1 codec: sans-IO, so that the proxy ([`crate::proxy::http`]), the health
//! probes and the fuzz targets share one parser and one framing, and tests drive it with
//! plain byte slices.
//!
//! Heads are tokenised by `httparse`; everything `httparse` leaves to the caller (framing,
//! Host, hop-by-hop headers, the strictness of RELIABILITY.md section A) is decided here.
//! Bodies are framed by us: [`ChunkedDecoder`] takes chunked framing apart and
//! [`encode_chunk_header`] / [`encode_last_chunk`] put it back, so raw client framing
//! bytes never reach a pooled backend connection.
//!
//! Every rejection is a [`Reject`]: the status to answer (400, 405, 414, 431, 501 for a
//! request; the proxy answers 502 for any response rejection) and a short reason for the
//! log. A rejected message is never forwarded, and its connection is closed.
//!
//! The choices RELIABILITY.md section A leaves open, decided once here:
//!
//! - CL+TE is refused (400), never repaired (A1). Two Content-Length fields are refused
//!   even when equal, and so is any list (`5, 5` too) (A3, A4).
//! - Transfer-Encoding must be exactly one field, exactly `chunked` (OWS around it is
//!   fine). A lone registered coding (`gzip`, `identity`, ...) gets 501; anything else
//!   (`xchunked`, `chunked;ext=1`, lists) 400 (A6, A7). TE on HTTP/1.0: 400 (A8).
//! - Bare LF is refused like bare CR, in heads and chunked framing (400; 502 for a
//!   response).
//! - An empty Host is refused, as is a second Host even when equal (A15). An absolute
//!   form's authority becomes Host; a Host that differs from it is refused.
//! - CONNECT: 405 (A16). `h2c`/`h2` upgrades are stripped, the first other protocol is
//!   forwarded (A17); an Upgrade in HTTP/1.0 is ignored.
//! - Underscore names (A21): per [`Underscores`]; even `Allow` never forwards a name
//!   that reads as a framing, Host, hop-by-hop or forwarding field once `_` is read as
//!   `-` (`Transfer_Encoding`, `X_Forwarded_For`).
//! - `Expect` is forwarded whatever its value; `100-continue` is flagged.
//! - Responses: only exactly `chunked` is accepted as Transfer-Encoding (`gzip,
//!   chunked` is refused: we do not forward codings we cannot check).

mod body;
mod head;
mod lex;
mod write;

#[cfg(test)]
mod tests;

pub use body::{
    encode_chunk_header, encode_last_chunk, ChunkedDecoder, Decoded, CHUNK_DATA_END, CHUNK_SIZE_DIGITS_MAX,
};
pub use head::{
    parse_request, parse_request_into, parse_response, parse_response_into, RequestHead, ResponseHead,
    REQUEST_LINE_SLACK_BYTES,
};
pub use write::{
    error_response, reason_phrase, write_request, write_response, Forwarding, ResponseFraming, WRITE_SLACK_BYTES,
};

use std::fmt;

/// Why a message was refused: the status to answer and a reason for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    /// 400, 405, 414, 431 or 501 for requests (413 is the proxy's, for bodies); for
    /// responses it is 502, and the proxy answers 502 whatever this says. 400 or 431
    /// for chunked framing errors, 500 for a value of ours the writer refuses.
    pub status: u16,
    /// Short, static, for logs and tests.
    pub reason: &'static str,
}

impl Reject {
    /// A rejection with `status`.
    pub const fn new(status: u16, reason: &'static str) -> Reject {
        Reject { status, reason }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.status, self.reason)
    }
}

/// Limits on what a peer may send; every one bounds memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of a whole head (start line, fields, final CRLF). More: 431 (414 when the
    /// request line alone is over `uri_bytes_max`).
    pub head_bytes_max: usize,
    /// Header fields in one head. More: 431.
    pub headers_max: usize,
    /// Bytes of a request target. More: 414.
    pub uri_bytes_max: usize,
    /// Bytes of one chunk's extensions (`;name=value...`). More: 400.
    pub chunk_ext_bytes_max: usize,
    /// Bytes of a chunked body's trailer section. More: 431.
    pub trailer_bytes_max: usize,
}

impl Default for Limits {
    /// HAProxy-like: 32 KiB heads, 100 fields, 8 KiB targets, 1 KiB chunk extensions,
    /// 8 KiB trailers.
    fn default() -> Self {
        Limits {
            head_bytes_max: 32 * 1024,
            headers_max: 100,
            uri_bytes_max: 8 * 1024,
            chunk_ext_bytes_max: 1024,
            trailer_bytes_max: 8 * 1024,
        }
    }
}

/// The HTTP version of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0
    H10,
    /// HTTP/1.1
    H11,
}

/// How a body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body (a request with neither Content-Length nor Transfer-Encoding; a response
    /// to HEAD; 1xx, 204, 304).
    None,
    /// Exactly this many bytes (Content-Length).
    Length(u64),
    /// Transfer-Encoding: chunked.
    Chunked,
    /// Responses only: the body runs until the backend closes.
    UntilClose,
}

/// What to do with a request header whose name contains `_` (RELIABILITY A21): such a
/// name can be read as the `-` form by some backends (`X_Forwarded_For`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Underscores {
    /// Forward it unchanged.
    Allow,
    /// Remove the field, forward the request (the default, Envoy's `DROP_HEADER`).
    #[default]
    Drop,
    /// Refuse the request with 400.
    Reject,
}
