//! Writing heads: what we send is built by us from validated parts, never copied raw.
//!
//! Every name and value goes through [`is_token`] / [`is_field_value`] on its way out
//! (A20), even the ones the parser already checked: a value derived elsewhere (the
//! proxy's protocol name, a future configured header) cannot smuggle a CRLF through
//! here. Field names keep the case they arrived with; the fields we add are lowercase.

use super::lex::{is_field_value, is_token, push_field};
use super::{BodyKind, Reject, RequestHead, ResponseHead};
use std::io::Write as _;
use std::net::IpAddr;

/// Room reserved beyond a head's own bytes for what the writers add (framing,
/// forwarding and connection fields; an IPv6 address at most 45 bytes, twice).
pub const WRITE_SLACK_BYTES: usize = 256;

/// What the proxy adds to a forwarded request.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding {
    /// The client's address: appended as `X-Forwarded-For` and `Forwarded: for=`.
    /// Client-sent `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` and
    /// `Forwarded` are replaced, never trusted.
    pub client_ip: IpAddr,
    /// `http` (`X-Forwarded-Proto`, `Forwarded: proto=`).
    pub proto: &'static str,
    /// The framing we send: [`BodyKind::None`], `Length(n)` (Content-Length: n) or
    /// `Chunked` (Transfer-Encoding: chunked).
    pub body: BodyKind,
    /// Ask the backend to keep the connection (`Connection: keep-alive` is implied in
    /// 1.1; `false` sends `Connection: close`).
    pub keep_alive: bool,
    /// Forward the request's upgrade (`Connection: upgrade` and `Upgrade: <protocol>`).
    pub upgrade: bool,
}

/// How a forwarded response is framed to the client.
#[derive(Debug, Clone, Copy)]
pub struct ResponseFraming {
    /// The framing we send: `None`, `Length(n)`, `Chunked`, or `UntilClose` (no framing
    /// field; the connection closes after the body).
    pub body: BodyKind,
    /// `false` sends `Connection: close`.
    pub keep_alive: bool,
    /// A 101 switching protocols: `Connection: upgrade` and the backend's `Upgrade`.
    pub upgrade: bool,
}

/// Appends the request head to send to a backend: `METHOD target HTTP/1.1`, `Host`, the
/// forwarded fields, our framing and forwarding fields. `Err` when a value derived by us
/// would not be a valid field value (it is never written raw).
///
/// Order: request line, `host`, the client's end-to-end fields in their order and
/// case, `content-length` or `transfer-encoding: chunked`, `x-forwarded-for`,
/// `x-forwarded-proto`, `forwarded`, then `connection`: `upgrade` (`upgrade, close`
/// when `!fwd.keep_alive`) with `upgrade: <protocol>` when `fwd.upgrade` and the
/// request asked for one, else `close` when `!fwd.keep_alive`.
///
/// The request line says `HTTP/1.1`, except for an HTTP/1.0 request without Host
/// (empty [`RequestHead::authority`]): that one is sent as `HTTP/1.0` without Host, with
/// `connection: keep-alive` when `fwd.keep_alive` (1.0 closes by default), and cannot
/// carry chunked framing (`Err` 500).
///
/// On `Err` (400 for a part of the request, 500 for a part of `fwd`), `out` is left as
/// it was: nothing half-written can reach a backend.
pub fn write_request(head: &RequestHead, fwd: &Forwarding, out: &mut Vec<u8>) -> Result<(), Reject> {
    let start = out.len();
    let result = append_request(head, fwd, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn append_request(head: &RequestHead, fwd: &Forwarding, out: &mut Vec<u8>) -> Result<(), Reject> {
    let bad_head = Reject::new(400, "request part not valid on the wire");
    let bad_fwd = Reject::new(500, "forwarding value not valid on the wire");
    let target = head.target();
    if !is_token(head.method()) || target.is_empty() || !target.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(bad_head);
    }
    // An HTTP/1.0 request without Host has no authority to give the backend, and a
    // 1.1 request without Host is refused by RFC-abiding servers (nginx, HAProxy): it
    // is forwarded as what it is, HTTP/1.0 without Host.
    let authority = head.authority();
    let h10 = authority.is_empty();
    if h10 && fwd.body == BodyKind::Chunked {
        return Err(Reject::new(500, "chunked framing on an HTTP/1.0 request"));
    }
    // One allocation at most: the head's own bytes bound what is copied from it, and
    // what we add (framing, forwarding fields, connection) fits in the slack.
    out.reserve(head.raw_len() + WRITE_SLACK_BYTES);
    out.extend_from_slice(head.method());
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(if h10 { b" HTTP/1.0\r\n" } else { b" HTTP/1.1\r\n" });
    if !h10 {
        checked_field(out, b"host", authority, bad_head)?;
    }
    for (name, value) in head.fields() {
        checked_field(out, name, value, bad_head)?;
    }
    match fwd.body {
        BodyKind::None => {}
        BodyKind::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        BodyKind::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        BodyKind::UntilClose => return Err(Reject::new(500, "a request body cannot be delimited by close")),
    }
    let proto = fwd.proto.as_bytes();
    if !is_token(proto) {
        return Err(bad_fwd);
    }
    // The values derived from `fwd` are written in place and checked there, like any
    // other value (on `Err` the caller truncates `out`).
    out.extend_from_slice(b"x-forwarded-for: ");
    let value = out.len();
    push_ip(out, fwd.client_ip);
    end_checked_value(out, value, bad_fwd)?;
    checked_field(out, b"x-forwarded-proto", proto, bad_fwd)?;
    // RFC 7239 §6: an IPv6 node is quoted and bracketed.
    out.extend_from_slice(b"forwarded: ");
    let value = out.len();
    match fwd.client_ip {
        IpAddr::V4(_) => {
            out.extend_from_slice(b"for=");
            push_ip(out, fwd.client_ip);
        }
        IpAddr::V6(_) => {
            out.extend_from_slice(b"for=\"[");
            push_ip(out, fwd.client_ip);
            out.extend_from_slice(b"]\"");
        }
    }
    out.extend_from_slice(b";proto=");
    out.extend_from_slice(proto);
    end_checked_value(out, value, bad_fwd)?;
    match head.upgrade_protocol() {
        Some(protocol) if fwd.upgrade => {
            // The client's `close` stays with its upgrade: it applies if the backend
            // declines to switch.
            let connection: &[u8] = if fwd.keep_alive { b"upgrade" } else { b"upgrade, close" };
            push_field(out, b"connection", connection);
            checked_field(out, b"upgrade", protocol, bad_head)?;
        }
        _ if !fwd.keep_alive => out.extend_from_slice(b"connection: close\r\n"),
        _ if h10 => out.extend_from_slice(b"connection: keep-alive\r\n"),
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Ends the field whose value was appended from `value` on: checks it as
/// [`checked_field`] would and appends the CRLF, or returns `err`.
fn end_checked_value(out: &mut Vec<u8>, value: usize, err: Reject) -> Result<(), Reject> {
    if !out.get(value..).is_some_and(is_field_value) {
        return Err(err);
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Appends `n` in decimal (what `{n}` formats).
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    for d in digits.iter_mut().rev() {
        // `n % 10` < 10.
        *d = b'0' + (n % 10) as u8;
        start -= 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
}

/// Appends `ip` as its `Display` writes it: by hand for IPv4 (the usual case), through
/// `fmt` for IPv6 (RFC 5952 compression).
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_decimal(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

/// Appends `name: value\r\n` after checking both, or returns `err`.
fn checked_field(out: &mut Vec<u8>, name: &[u8], value: &[u8], err: Reject) -> Result<(), Reject> {
    if !is_token(name) || !is_field_value(value) {
        return Err(err);
    }
    push_field(out, name, value);
    Ok(())
}

/// Appends the response head to send to the client (always `HTTP/1.1`).
///
/// The backend's reason phrase is kept as it was, also when empty (`HTTP/1.1 200 `), so
/// that what the client sees is what the backend said; it cannot hold a control byte
/// (the parser drops a reason with obs-text). A forwarded field whose name or value is
/// not valid is dropped (never written raw; the parser already refused such heads, so
/// this only guards against a bug). Statuses 1xx, 204 and 304 get no framing field
/// whatever `framing.body` says. `connection: upgrade` and `upgrade: <protocol>` are
/// written for a 101 with `framing.upgrade` and a protocol; otherwise
/// `connection: close` when `!framing.keep_alive`.
pub fn write_response(head: &ResponseHead, framing: &ResponseFraming, out: &mut Vec<u8>) {
    let status = if (100..=999).contains(&head.status) {
        head.status
    } else {
        502
    };
    // The backend's reason is kept as it was (empty stays empty: a client must not
    // depend on it, RFC 9112 §4); one that is not plain text is never written.
    let reason = head.reason();
    let reason = if reason.iter().all(|b| *b == b'\t' || (0x20..=0x7e).contains(b)) {
        reason
    } else {
        b""
    };
    out.reserve(head.raw_len() + WRITE_SLACK_BYTES);
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
    for (name, value) in head.fields() {
        if is_token(name) && is_field_value(value) {
            push_field(out, name, value);
        }
    }
    if !((100..200).contains(&status) || status == 204 || status == 304) {
        match framing.body {
            BodyKind::Length(n) => {
                out.extend_from_slice(b"content-length: ");
                push_decimal(out, n);
                out.extend_from_slice(b"\r\n");
            }
            BodyKind::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            BodyKind::None | BodyKind::UntilClose => {}
        }
    }
    let upgrade = head
        .upgrade_protocol()
        .filter(|p| status == 101 && framing.upgrade && is_field_value(p));
    match upgrade {
        Some(protocol) => {
            out.extend_from_slice(b"connection: upgrade\r\n");
            push_field(out, b"upgrade", protocol);
        }
        None if !framing.keep_alive => out.extend_from_slice(b"connection: close\r\n"),
        None => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// The standard reason phrase of `status` (RFC 9110 §15), or `""` for one without.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Appends a complete error response of ours: `status`, a short text body, and
/// `Connection: close`.
///
/// The body is the reason phrase and a newline (`Bad Request\n`); a status without a
/// standard phrase gets `Error`. A status outside 100..=999 is written as 500.
pub fn error_response(status: u16, out: &mut Vec<u8>) {
    let status = if (100..=999).contains(&status) { status } else { 500 };
    let reason = match reason_phrase(status) {
        "" => "Error",
        r => r,
    };
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reason}\n",
        reason.len() + 1
    );
}
