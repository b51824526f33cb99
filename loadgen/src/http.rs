//! The wire formats loadgen speaks: building the HTTP/1.1 request once, and framing each
//! reply (an HTTP/1.1 response, or a raw TCP reply of a fixed size).
//!
//! [`Framing`] is a pure state machine in the style of `quinn-proto`: bytes go in, a
//! count of bytes consumed and, once a whole reply has gone by, a [`Reply`] come out. It
//! never holds a body in memory (bodies are counted and skipped), so a response of any
//! size costs one read buffer. Framing follows RFC 9112 section 6.3: no body for `HEAD`,
//! 1xx, 204 and 304; chunked when `Transfer-Encoding` ends in `chunked`; otherwise
//! `Content-Length`; otherwise the body runs until the server closes.
//!
//! Every limit is named and checked, so a hostile or broken server costs a
//! [`FrameError`] (counted as a malformed response), never a panic or unbounded memory.

use thiserror::Error;

/// Largest response head accepted, in bytes. It must fit the connection's read buffer
/// (the head is parsed in one piece), so it equals [`READ_BUF_BYTES`].
pub const HEAD_BYTES_MAX: usize = READ_BUF_BYTES;
/// Read buffer of one client connection, in bytes. Memory per connection is about this.
pub const READ_BUF_BYTES: usize = 16 * 1024;
/// Most header fields in one response head.
pub const HEADERS_MAX: usize = 64;
/// Longest chunk-size line (size, extensions and CRLF), in bytes.
pub const CHUNK_LINE_BYTES_MAX: usize = 1024;
/// Most bytes of trailer fields after the last chunk.
pub const TRAILER_BYTES_MAX: usize = 16 * 1024;
/// Most interim (1xx) responses before the final one: a server that sends `100
/// Continue` for ever must not keep a connection busy for ever.
pub const INTERIM_RESPONSES_MAX: u32 = 16;
/// Largest request body loadgen will build, in bytes (it is held in memory and sent
/// with every request).
pub const REQUEST_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Most `-H` headers on one request.
pub const REQUEST_HEADERS_MAX: usize = 64;

/// How the HTTP request is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestSpec {
    /// Method token, e.g. `GET`.
    pub method: String,
    /// Request target, e.g. `/index.html?x=1`.
    pub path: String,
    /// `Host` header value unless `headers` has one.
    pub host: String,
    /// Extra header fields, in order (`-H "Name: value"`).
    pub headers: Vec<(String, String)>,
    /// Body size in bytes; the body is that many `x`.
    pub body_bytes: usize,
    /// Add `Connection: close` (one request per connection).
    pub close: bool,
}

/// Why a request could not be built.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RequestError {
    /// The method is not an HTTP token.
    #[error("method {0:?} is not an HTTP token")]
    Method(String),
    /// A header line has no colon or a bad name or value.
    #[error("header {0:?}: expected \"Name: value\" with a token name and no CR or LF")]
    Header(String),
    /// Too many headers.
    #[error("{0} headers; the limit is {REQUEST_HEADERS_MAX}")]
    TooManyHeaders(usize),
    /// The body is over [`REQUEST_BODY_BYTES_MAX`].
    #[error("a body of {0} bytes; the limit is {REQUEST_BODY_BYTES_MAX}")]
    BodyTooLarge(usize),
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses one `-H` argument, `"Name: value"`.
pub fn parse_header(line: &str) -> Result<(String, String), RequestError> {
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| RequestError::Header(line.to_string()))?;
    let value = value.trim();
    if !is_token(name) || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(RequestError::Header(line.to_string()));
    }
    Ok((name.to_string(), value.to_string()))
}

/// Builds the request bytes, sent unchanged with every request.
pub fn build_request(spec: &RequestSpec) -> Result<Vec<u8>, RequestError> {
    if !is_token(&spec.method) {
        return Err(RequestError::Method(spec.method.clone()));
    }
    if spec.headers.len() > REQUEST_HEADERS_MAX {
        return Err(RequestError::TooManyHeaders(spec.headers.len()));
    }
    if spec.body_bytes > REQUEST_BODY_BYTES_MAX {
        return Err(RequestError::BodyTooLarge(spec.body_bytes));
    }
    let has = |name: &str| spec.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut head = format!("{} {} HTTP/1.1\r\n", spec.method, spec.path);
    if !has("host") {
        head.push_str(&format!("Host: {}\r\n", spec.host));
    }
    for (n, v) in &spec.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    // A body needs its length; so does a POST or PUT without one, or some servers
    // wait for a body that never comes.
    let wants_length = spec.body_bytes > 0 || matches!(spec.method.as_str(), "POST" | "PUT" | "PATCH");
    if wants_length && !has("content-length") {
        head.push_str(&format!("Content-Length: {}\r\n", spec.body_bytes));
    }
    if spec.close && !has("connection") {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.resize(bytes.len() + spec.body_bytes, b'x');
    Ok(bytes)
}

/// One complete reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code; 0 for a raw TCP reply.
    pub status: u16,
    /// Body bytes (HTTP) or reply bytes (TCP).
    pub body_bytes: u64,
    /// The server will close the connection after this reply (HTTP/1.0 without
    /// keep-alive, `Connection: close`, or a body delimited by the close itself).
    pub close: bool,
}

/// Why a reply could not be framed. Each is counted as a malformed response.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    /// httparse rejected the head.
    #[error("malformed response head")]
    Head,
    /// The head did not fit [`HEAD_BYTES_MAX`].
    #[error("response head over {HEAD_BYTES_MAX} bytes")]
    HeadTooLarge,
    /// More than [`INTERIM_RESPONSES_MAX`] 1xx responses.
    #[error("more than {INTERIM_RESPONSES_MAX} interim (1xx) responses")]
    TooManyInterim,
    /// Content-Length is not a number, or two disagree.
    #[error("bad Content-Length")]
    ContentLength,
    /// A chunk-size line or a chunk's closing CRLF is wrong, or a line is too long.
    #[error("bad chunked encoding")]
    Chunk,
    /// Trailer fields over [`TRAILER_BYTES_MAX`].
    #[error("trailers over {TRAILER_BYTES_MAX} bytes")]
    Trailers,
    /// Bytes arrived when no reply was expected (a raw TCP reply longer than asked).
    #[error("bytes arrived after the reply")]
    Unexpected,
}

/// What one call to [`Framing::feed`] made of the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The reply is not complete: read more.
    NeedMore,
    /// A whole reply went by.
    Done(Reply),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Head,
    Fixed { left: u64 },
    ChunkSize,
    ChunkData { left: u64 },
    ChunkEnd,
    Trailers { bytes: usize },
    UntilClose,
}

/// Frames HTTP/1.1 responses on one connection, one after the other.
#[derive(Clone, Debug)]
pub struct ResponseFraming {
    state: State,
    head_request: bool,
    status: u16,
    close: bool,
    body_bytes: u64,
    interim: u32,
}

impl ResponseFraming {
    /// A framer for responses to `HEAD` (`head_request`, no bodies) or other requests.
    pub fn new(head_request: bool) -> ResponseFraming {
        ResponseFraming {
            state: State::Head,
            head_request,
            status: 0,
            close: false,
            body_bytes: 0,
            interim: 0,
        }
    }

    fn done(&mut self) -> Step {
        let reply = Reply {
            status: self.status,
            body_bytes: self.body_bytes,
            close: self.close,
        };
        *self = ResponseFraming::new(self.head_request);
        Step::Done(reply)
    }

    /// Parses the head at the front of `buf`: `Ok(None)` when it is not all there yet.
    fn head(&mut self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() >= HEAD_BYTES_MAX => return Err(FrameError::HeadTooLarge),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(FrameError::HeadTooLarge),
            Err(_) => return Err(FrameError::Head),
        };
        let status = resp.code.ok_or(FrameError::Head)?;
        let mut close = resp.version == Some(0);
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut encoded = false;
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let v = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or(FrameError::ContentLength)?;
                if length.is_some_and(|l| l != v) {
                    return Err(FrameError::ContentLength);
                }
                length = Some(v);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                encoded = true;
                // Only the last coding decides the framing (RFC 9112 6.3 item 4).
                let last = h.value.rsplit(|b| *b == b',').next().unwrap_or(b"");
                chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            } else if h.name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|b| *b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        close = false;
                    }
                }
            }
        }
        self.status = status;
        self.close = close;
        self.body_bytes = 0;
        self.state = if (100..200).contains(&status) && status != 101 {
            self.interim += 1;
            if self.interim > INTERIM_RESPONSES_MAX {
                return Err(FrameError::TooManyInterim);
            }
            State::Head
        } else if status == 101 {
            // Switching protocols: whatever follows is not HTTP/1.1 any more.
            self.close = true;
            State::Fixed { left: 0 }
        } else if self.head_request || status == 204 || status == 304 {
            State::Fixed { left: 0 }
        } else if encoded && chunked {
            State::ChunkSize
        } else if encoded {
            self.close = true;
            State::UntilClose
        } else if let Some(left) = length {
            State::Fixed { left }
        } else {
            self.close = true;
            State::UntilClose
        };
        Ok(Some(len))
    }

    /// Consumes a prefix of `buf`. Returns the bytes consumed and whether a response is
    /// complete; after [`Step::Done`] the framer is ready for the next response and any
    /// bytes not consumed belong to it.
    pub fn feed(&mut self, buf: &[u8]) -> Result<(usize, Step), FrameError> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match self.state {
                State::Head => match self.head(rest)? {
                    None => return Ok((pos, Step::NeedMore)),
                    Some(n) => pos += n,
                },
                State::Fixed { left } => {
                    let n = left.min(rest.len() as u64);
                    pos += n as usize;
                    self.body_bytes += n;
                    if n == left {
                        return Ok((pos, self.done()));
                    }
                    self.state = State::Fixed { left: left - n };
                    return Ok((pos, Step::NeedMore));
                }
                State::ChunkSize => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((n, size))) => {
                        pos += n;
                        self.state = if size == 0 {
                            State::Trailers { bytes: 0 }
                        } else {
                            State::ChunkData { left: size }
                        };
                    }
                    Ok(httparse::Status::Partial) if rest.len() >= CHUNK_LINE_BYTES_MAX => {
                        return Err(FrameError::Chunk)
                    }
                    Ok(httparse::Status::Partial) => return Ok((pos, Step::NeedMore)),
                    Err(_) => return Err(FrameError::Chunk),
                },
                State::ChunkData { left } => {
                    let n = left.min(rest.len() as u64);
                    pos += n as usize;
                    self.body_bytes += n;
                    if n < left {
                        self.state = State::ChunkData { left: left - n };
                        return Ok((pos, Step::NeedMore));
                    }
                    self.state = State::ChunkEnd;
                }
                State::ChunkEnd => {
                    if rest.len() < 2 {
                        return Ok((pos, Step::NeedMore));
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(FrameError::Chunk);
                    }
                    pos += 2;
                    self.state = State::ChunkSize;
                }
                State::Trailers { bytes } => match rest.windows(2).position(|w| w == b"\r\n") {
                    Some(0) => {
                        pos += 2;
                        return Ok((pos, self.done()));
                    }
                    Some(line) => {
                        let bytes = bytes + line + 2;
                        if bytes > TRAILER_BYTES_MAX {
                            return Err(FrameError::Trailers);
                        }
                        pos += line + 2;
                        self.state = State::Trailers { bytes };
                    }
                    None if bytes + rest.len() > TRAILER_BYTES_MAX => return Err(FrameError::Trailers),
                    None => return Ok((pos, Step::NeedMore)),
                },
                State::UntilClose => {
                    self.body_bytes += rest.len() as u64;
                    return Ok((buf.len(), Step::NeedMore));
                }
            }
        }
    }

    /// The server closed the connection. Returns the response when its body was
    /// delimited by the close, `None` when the close cut a response short.
    pub fn eof(&mut self) -> Option<Reply> {
        match self.state {
            State::UntilClose => match self.done() {
                Step::Done(r) => Some(r),
                Step::NeedMore => None,
            },
            _ => None,
        }
    }

    /// True when no byte of a response has been consumed yet.
    pub fn is_idle(&self) -> bool {
        self.state == State::Head && self.interim == 0
    }
}

/// Frames the reply to one request: an HTTP/1.1 response, or a raw TCP reply of a fixed
/// number of bytes.
#[derive(Clone, Debug)]
pub enum Framing {
    /// HTTP/1.1.
    Http(ResponseFraming),
    /// Raw TCP: `left` bytes of the reply are still to come out of `size`.
    Tcp {
        /// Bytes of a whole reply.
        size: u64,
        /// Bytes still expected of the current reply.
        left: u64,
    },
}

impl Framing {
    /// A raw TCP reply of `size` bytes.
    pub fn tcp(size: u64) -> Framing {
        Framing::Tcp { size, left: size }
    }

    /// See [`ResponseFraming::feed`].
    pub fn feed(&mut self, buf: &[u8]) -> Result<(usize, Step), FrameError> {
        match self {
            Framing::Http(h) => h.feed(buf),
            Framing::Tcp { size, left } => {
                let n = (*left).min(buf.len() as u64);
                *left -= n;
                if *left > 0 {
                    return Ok((n as usize, Step::NeedMore));
                }
                *left = *size;
                if *size == 0 && !buf.is_empty() {
                    return Err(FrameError::Unexpected);
                }
                Ok((
                    n as usize,
                    Step::Done(Reply {
                        status: 0,
                        body_bytes: *size,
                        close: false,
                    }),
                ))
            }
        }
    }

    /// See [`ResponseFraming::eof`]; a raw TCP reply cut short is never complete.
    pub fn eof(&mut self) -> Option<Reply> {
        match self {
            Framing::Http(h) => h.eof(),
            Framing::Tcp { .. } => None,
        }
    }

    /// Forgets a partly framed reply (after its connection failed).
    pub fn reset(&mut self) {
        match self {
            Framing::Http(h) => *h = ResponseFraming::new(h.head_request),
            Framing::Tcp { size, left } => *left = *size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes, the way reads would deliver it, and
    /// collects the replies.
    fn frame(f: &mut ResponseFraming, input: &[u8], step: usize) -> Result<Vec<Reply>, FrameError> {
        let mut buf: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                let (n, s) = f.feed(&buf)?;
                buf.drain(..n);
                match s {
                    Step::Done(r) => out.push(r),
                    Step::NeedMore => break,
                }
            }
        }
        assert!(buf.is_empty(), "bytes left over: {:?}", String::from_utf8_lossy(&buf));
        Ok(out)
    }

    fn reply(status: u16, body_bytes: u64, close: bool) -> Reply {
        Reply {
            status,
            body_bytes,
            close,
        }
    }

    #[test]
    fn content_length_responses_back_to_back_at_every_split() {
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 503 Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        for step in 1..=two.len() {
            let mut f = ResponseFraming::new(false);
            assert_eq!(
                frame(&mut f, two, step).unwrap(),
                vec![reply(200, 5, false), reply(503, 0, true)],
                "split every {step} bytes"
            );
        }
    }

    #[test]
    fn chunked_with_extensions_and_trailers_at_every_split() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Sum: 1\r\n\r\n";
        for step in 1..=r.len() {
            let mut f = ResponseFraming::new(false);
            assert_eq!(
                frame(&mut f, r, step).unwrap(),
                vec![reply(200, 15, false)],
                "step {step}"
            );
        }
    }

    #[test]
    fn bodiless_statuses_head_requests_and_interim_responses() {
        let mut f = ResponseFraming::new(false);
        let r = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n";
        assert_eq!(frame(&mut f, r, 7).unwrap(), vec![reply(204, 0, false)]);
        let mut f = ResponseFraming::new(true);
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n";
        assert_eq!(frame(&mut f, r, 100).unwrap(), vec![reply(200, 0, false)]);
    }

    #[test]
    fn a_body_without_length_runs_until_close() {
        let mut f = ResponseFraming::new(false);
        let (n, s) = f.feed(b"HTTP/1.0 200 OK\r\n\r\nabc").unwrap();
        assert_eq!((n, s), (22, Step::NeedMore));
        assert_eq!(f.eof(), Some(reply(200, 3, true)));
        // A close in the middle of a framed body is a cut, not a response.
        let mut f = ResponseFraming::new(false);
        f.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").unwrap();
        assert_eq!(f.eof(), None);
        assert!(ResponseFraming::new(false).is_idle());
    }

    #[test]
    fn malformed_responses_are_errors_not_panics() {
        let cases: [(&[u8], FrameError); 6] = [
            (b"HTTP/1.1 2x0 OK\r\n\r\n", FrameError::Head),
            (b"SSH-2.0-OpenSSH\r\n\r\n", FrameError::Head),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                FrameError::ContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                FrameError::ContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                FrameError::Chunk,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
                FrameError::Chunk,
            ),
        ];
        for (input, want) in cases {
            let mut f = ResponseFraming::new(false);
            assert_eq!(
                frame(&mut f, input, input.len()),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        // A head that never ends is bounded by the read buffer.
        let mut f = ResponseFraming::new(false);
        let mut endless = b"HTTP/1.1 200 OK\r\n".to_vec();
        endless.resize(HEAD_BYTES_MAX, b'a');
        assert_eq!(f.feed(&endless), Err(FrameError::HeadTooLarge));
        // So is a stream of interim responses.
        let mut f = ResponseFraming::new(false);
        let many = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(INTERIM_RESPONSES_MAX as usize + 1);
        assert_eq!(f.feed(&many), Err(FrameError::TooManyInterim));
    }

    #[test]
    fn tcp_replies_have_a_fixed_size() {
        let mut f = Framing::tcp(4);
        assert_eq!(f.feed(b"ab").unwrap(), (2, Step::NeedMore));
        assert_eq!(f.feed(b"cdEF").unwrap(), (2, Step::Done(reply(0, 4, false))));
        assert_eq!(f.feed(b"EFGH").unwrap(), (4, Step::Done(reply(0, 4, false))));
        assert_eq!(f.eof(), None);
    }

    #[test]
    fn builds_requests_with_host_length_and_close() {
        let spec = RequestSpec {
            method: "POST".into(),
            path: "/p".into(),
            host: "h:8080".into(),
            headers: vec![parse_header("X-A:  1 ").unwrap()],
            body_bytes: 3,
            close: true,
        };
        assert_eq!(
            build_request(&spec).unwrap(),
            b"POST /p HTTP/1.1\r\nHost: h:8080\r\nX-A: 1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nxxx"
        );
        let spec = RequestSpec {
            method: "GET".into(),
            headers: vec![parse_header("host: other").unwrap()],
            body_bytes: 0,
            close: false,
            ..spec
        };
        assert_eq!(build_request(&spec).unwrap(), b"GET /p HTTP/1.1\r\nhost: other\r\n\r\n");
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("Bad Name: v").is_err());
        let bad = RequestSpec {
            method: "G T".into(),
            ..spec
        };
        assert!(build_request(&bad).is_err());
    }
}
