//! The scriptable test backend: one implementation shared by the binary's built-in demo,
//! the integration tests, the simulation and `loadgen serve`.
//!
//! A backend replies with its own name, so that whoever drives traffic through the
//! balancer can see where each connection or request went. It can be told to add latency,
//! to fail a share of its connections, to send bodies of a given size, to reset, stall
//! or cut its replies after N requests, and (HTTP) to serve a health endpoint that can be
//! switched down and up by a control request or after N requests. It is generic over
//! [`Env`], so the same code serves real loopback sockets and turmoil's simulated network.
//!
//! # HTTP endpoints (with [`Script::health_path`] set)
//!
//! | request | answer |
//! |---|---|
//! | any method, the health path | `200 ok` while healthy, `503 down` after |
//! | `POST /control/health/down` | `200`; the health endpoint answers `503` from now on |
//! | `POST /control/health/up` | `200`; healthy again (unless `health_fail_after` has passed) |
//! | anything else | the scripted reply |
//!
//! Health and control requests get no latency and no failures, and do not count
//! towards `fail_after` or `health_fail_after`: a prober must not change the script.

use crate::io::{race, Either};
use crate::io::{Env, IoBuf, Listener, Stream};
use crate::proxy::Shutdown;
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

/// Largest request head the HTTP mode accepts; beyond it the request gets a 431.
const HEAD_BYTES_MAX: usize = 16 * 1024;
/// Most headers the HTTP mode parses in one request head.
const HEADERS_MAX: usize = 64;
/// Read buffer of one connection.
const READ_BUF_BYTES: usize = 16 * 1024;
/// Largest HTTP body [`Script::body_bytes`] may ask for: the reply is built once per
/// connection and held in memory.
pub const BODY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Control request that switches the health endpoint to `503`.
pub const CONTROL_HEALTH_DOWN: &str = "/control/health/down";
/// Control request that switches the health endpoint back to `200`.
pub const CONTROL_HEALTH_UP: &str = "/control/health/up";

/// How a backend fails once [`Script::fail_after`] has passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailWith {
    /// Reset the connection (RST) instead of replying.
    Reset,
    /// Never reply; keep reading until the client closes.
    Stall,
    /// Send the first half of the reply, then close (FIN): a reply cut short.
    Cut,
}

/// What a backend says to each connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// HTTP/1.1: every request gets `200 OK` with the backend's name as the body and in an
    /// `X-Backend` header. Keep-alive unless the client asks for `Connection: close`.
    Http,
    /// Raw TCP: writes `NAME\n` at once, then discards input until the client's FIN.
    Name,
    /// Raw TCP: echoes every byte; after the client's FIN writes `bye from NAME\n` and
    /// closes (exercises half-close).
    Echo,
}

/// A backend's script.
#[derive(Clone, Debug)]
pub struct Script {
    /// Name it replies with.
    pub name: String,
    /// What it replies.
    pub reply: Reply,
    /// Delay before each reply.
    pub latency: Duration,
    /// Share of connections (HTTP: requests) that fail, in percent: a `500` in HTTP mode,
    /// an immediate reset in the TCP modes. Drawn from [`Env::random_u64`].
    pub fail_percent: u8,
    /// HTTP: size of the body of a normal reply, in bytes: the name, a newline, then `x`
    /// filler (cut short when smaller than the name). `None`: the name and a newline. At
    /// most [`BODY_BYTES_MAX`].
    pub body_bytes: Option<usize>,
    /// After this many requests (HTTP) or connections (TCP modes) were served, every
    /// later one fails as [`Script::fail_with`] says. `None`: never.
    pub fail_after: Option<u64>,
    /// How requests fail after [`Script::fail_after`].
    pub fail_with: FailWith,
    /// HTTP: path of the health endpoint, which also enables the control requests.
    /// `None`: no health endpoint; every path gets the scripted reply.
    pub health_path: Option<String>,
    /// HTTP: the health endpoint answers `503` once this many requests were served.
    pub health_fail_after: Option<u64>,
}

impl Script {
    /// A backend named `name` replying `reply`, with no latency and no failures.
    pub fn new(name: impl Into<String>, reply: Reply) -> Script {
        Script {
            name: name.into(),
            reply,
            latency: Duration::ZERO,
            fail_percent: 0,
            body_bytes: None,
            fail_after: None,
            fail_with: FailWith::Reset,
            health_path: None,
            health_fail_after: None,
        }
    }

    /// The body of a normal HTTP reply.
    fn body(&self) -> Vec<u8> {
        let mut body = format!("{}\n", self.name).into_bytes();
        if let Some(n) = self.body_bytes {
            body.resize(n.min(BODY_BYTES_MAX), b'x');
        }
        body
    }

    /// True when request (or connection) number `served + 1` must fail.
    fn past_fail_after(&self, served: u64) -> bool {
        self.fail_after.is_some_and(|n| served >= n)
    }
}

/// What a backend has seen, for tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub connections: Cell<u64>,
    /// Connections open now.
    pub open: Cell<u64>,
    /// HTTP requests answered (any status).
    pub requests: Cell<u64>,
    /// Connections or requests failed on purpose.
    pub failures: Cell<u64>,
    /// Health and control requests answered.
    pub health_checks: Cell<u64>,
    /// Switched down by [`CONTROL_HEALTH_DOWN`].
    pub health_down: Cell<bool>,
}

impl Stats {
    /// What the health endpoint says now.
    pub fn healthy(&self, script: &Script) -> bool {
        !self.health_down.get() && script.health_fail_after.is_none_or(|n| self.requests.get() < n)
    }
}

/// Serves `listener` with `script` until `shutdown` fires.
pub async fn serve<E: Env>(
    env: E,
    mut listener: E::Listener,
    script: Rc<Script>,
    stats: Rc<Stats>,
    mut shutdown: Shutdown,
) {
    loop {
        let (stream, _peer) = match race(shutdown.wait(), listener.accept()).await {
            Either::Left(()) => return,
            Either::Right(Ok(c)) => c,
            Either::Right(Err(e)) => {
                tracing::warn!(backend = %script.name, error = %e, "test backend: accept failed");
                env.sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Connections served before this one, for `fail_after` in the TCP modes.
        let served = stats.connections.get();
        stats.connections.set(served + 1);
        let env2 = env.clone();
        let script = script.clone();
        let stats = stats.clone();
        env.spawn(async move {
            stats.open.set(stats.open.get() + 1);
            handle(&env2, stream, &script, &stats, served).await;
            stats.open.set(stats.open.get() - 1);
        });
    }
}

fn should_fail<E: Env>(env: &E, script: &Script) -> bool {
    script.fail_percent > 0 && env.random_u64() % 100 < u64::from(script.fail_percent)
}

/// Reads and discards until the client closes: a stalled server.
async fn stall<S: Stream>(stream: &mut S, mut buf: IoBuf) {
    loop {
        buf.clear();
        let (res, b) = stream.read(buf).await;
        buf = b;
        if !matches!(res, Ok(n) if n > 0) {
            return;
        }
    }
}

async fn handle<E: Env, S: Stream>(env: &E, mut stream: S, script: &Script, stats: &Stats, served: u64) {
    match script.reply {
        Reply::Http => http(env, stream, script, stats).await,
        Reply::Name | Reply::Echo => {
            if script.past_fail_after(served) {
                stats.failures.set(stats.failures.get() + 1);
                match script.fail_with {
                    FailWith::Reset => stream.abort(),
                    FailWith::Stall => stall(&mut stream, IoBuf::with_capacity(READ_BUF_BYTES)).await,
                    FailWith::Cut => {
                        let _ = stream.shutdown().await;
                    }
                }
                return;
            }
            if should_fail(env, script) {
                stats.failures.set(stats.failures.get() + 1);
                stream.abort();
                return;
            }
            if !script.latency.is_zero() {
                env.sleep(script.latency).await;
            }
            if script.reply == Reply::Name {
                let (res, _) = stream
                    .write_all(IoBuf::from_vec(format!("{}\n", script.name).into_bytes()))
                    .await;
                if res.is_err() {
                    return;
                }
            }
            let mut buf = IoBuf::with_capacity(READ_BUF_BYTES);
            loop {
                let (res, b) = stream.read(buf).await;
                buf = b;
                match res {
                    Ok(0) => break,
                    Ok(_) if script.reply == Reply::Echo => {
                        let (res, b) = stream.write_all(buf).await;
                        buf = b;
                        if res.is_err() {
                            return;
                        }
                    }
                    Ok(_) => buf.clear(),
                    Err(_) => return,
                }
            }
            if script.reply == Reply::Echo {
                let bye = IoBuf::from_vec(format!("bye from {}\n", script.name).into_bytes());
                let (res, _) = stream.write_all(bye).await;
                if res.is_err() {
                    return;
                }
            }
            let _ = stream.shutdown().await;
        }
    }
}

/// Which endpoint a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    /// The scripted reply.
    Normal,
    /// The health endpoint.
    Health,
    /// A control request switching health down (`false`) or up (`true`).
    SetHealth(bool),
}

/// What the HTTP mode made of one request head.
struct Head {
    /// Bytes of the head, including the final CRLFCRLF.
    len: usize,
    /// Content-Length of the request body (0 without one).
    body: u64,
    /// The client asked to close after this response.
    close: bool,
    /// The endpoint asked for.
    endpoint: Endpoint,
}

fn endpoint(method: Option<&str>, path: Option<&str>, health_path: Option<&str>) -> Endpoint {
    let (Some(health), Some(path)) = (health_path, path) else {
        return Endpoint::Normal;
    };
    match (method, path) {
        (_, p) if p == health => Endpoint::Health,
        (Some("POST"), CONTROL_HEALTH_DOWN) => Endpoint::SetHealth(false),
        (Some("POST"), CONTROL_HEALTH_UP) => Endpoint::SetHealth(true),
        _ => Endpoint::Normal,
    }
}

fn parse_head(bytes: &[u8], health_path: Option<&str>) -> Result<Option<Head>, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err("malformed request"),
    };
    let mut body = 0u64;
    let mut close = req.version == Some(0);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            body = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or("bad content-length")?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // The test backend does not decode chunked bodies; the L7 proxy re-frames
            // bodies with Content-Length before they reach a backend.
            return Err("transfer-encoding not supported by the test backend");
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.contains("close") {
                close = true;
            } else if v.contains("keep-alive") {
                close = false;
            }
        }
    }
    let endpoint = endpoint(req.method, req.path, health_path);
    Ok(Some(Head {
        len,
        body,
        close,
        endpoint,
    }))
}

fn response_bytes(status: &str, name: &str, body: &[u8], close: bool) -> Vec<u8> {
    let conn = if close { "close" } else { "keep-alive" };
    let mut bytes = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Backend: {name}\r\nConnection: {conn}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn response(status: &str, name: &str, close: bool) -> IoBuf {
    IoBuf::from_vec(response_bytes(status, name, format!("{name}\n").as_bytes(), close))
}

async fn http<E: Env, S: Stream>(env: &E, mut stream: S, script: &Script, stats: &Stats) {
    let mut buf = IoBuf::with_capacity(HEAD_BYTES_MAX);
    // The normal replies are built once per connection, not per request: the backend
    // is on the measured path of every benchmark.
    let body = script.body();
    let ok = [false, true].map(|close| response_bytes("200 OK", &script.name, &body, close));
    let mut out = IoBuf::with_capacity(ok[0].len().max(ok[1].len()));
    loop {
        // Read until a whole head is buffered.
        let head = loop {
            match parse_head(buf.bytes(), script.health_path.as_deref()) {
                Ok(Some(h)) => break Ok(h),
                Ok(None) if buf.spare_capacity() == 0 => break Err("431 Request Header Fields Too Large"),
                Ok(None) => {}
                Err(_) => break Err("400 Bad Request"),
            }
            let (res, b) = stream.read(buf).await;
            buf = b;
            match res {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let head = match head {
            Ok(h) => h,
            Err(status) => {
                let _ = stream.write_all(response(status, &script.name, true)).await;
                let _ = stream.shutdown().await;
                return;
            }
        };
        buf.consume(head.len);
        // Discard the body.
        let mut left = head.body;
        while left > 0 {
            if buf.is_empty() {
                let (res, b) = stream.read(buf).await;
                buf = b;
                match res {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
            let n = (buf.len() as u64).min(left);
            buf.consume(n as usize);
            left -= n;
        }
        let reply = match head.endpoint {
            Endpoint::Health => {
                stats.health_checks.set(stats.health_checks.get() + 1);
                if stats.healthy(script) {
                    response_bytes("200 OK", &script.name, b"ok\n", head.close)
                } else {
                    response_bytes("503 Service Unavailable", &script.name, b"down\n", head.close)
                }
            }
            Endpoint::SetHealth(up) => {
                stats.health_checks.set(stats.health_checks.get() + 1);
                stats.health_down.set(!up);
                let body: &[u8] = if up { b"health up\n" } else { b"health down\n" };
                response_bytes("200 OK", &script.name, body, head.close)
            }
            Endpoint::Normal => {
                if script.past_fail_after(stats.requests.get()) {
                    stats.failures.set(stats.failures.get() + 1);
                    match script.fail_with {
                        FailWith::Reset => stream.abort(),
                        FailWith::Stall => stall(&mut stream, buf).await,
                        FailWith::Cut => {
                            let whole = &ok[usize::from(head.close)];
                            let half = IoBuf::from_vec(whole[..whole.len() / 2].to_vec());
                            let _ = stream.write_all(half).await;
                            let _ = stream.shutdown().await;
                        }
                    }
                    return;
                }
                if !script.latency.is_zero() {
                    env.sleep(script.latency).await;
                }
                stats.requests.set(stats.requests.get() + 1);
                if should_fail(env, script) {
                    stats.failures.set(stats.failures.get() + 1);
                    response_bytes("500 Internal Server Error", &script.name, &body, head.close)
                } else {
                    out.clear();
                    out.extend_within_capacity(&ok[usize::from(head.close)]);
                    let (res, b) = stream.write_all(out).await;
                    out = b;
                    if res.is_err() {
                        return;
                    }
                    if head.close {
                        let _ = stream.shutdown().await;
                        return;
                    }
                    continue;
                }
            }
        };
        let (res, _) = stream.write_all(IoBuf::from_vec(reply)).await;
        if res.is_err() {
            return;
        }
        if head.close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads_and_flags() {
        let h = parse_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", None).unwrap().unwrap();
        assert_eq!((h.len, h.body, h.close, h.endpoint), (27, 0, false, Endpoint::Normal));
        let h = parse_head(
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!((h.body, h.close), (3, true));
        let h = parse_head(b"GET / HTTP/1.0\r\n\r\n", None).unwrap().unwrap();
        assert!(h.close);
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost", None).unwrap().is_none());
        assert!(parse_head(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", None).is_err());
    }

    #[test]
    fn health_and_control_endpoints_only_with_a_health_path() {
        let ep = |req: &[u8], hp| parse_head(req, hp).unwrap().unwrap().endpoint;
        assert_eq!(ep(b"GET /health HTTP/1.1\r\n\r\n", None), Endpoint::Normal);
        assert_eq!(ep(b"GET /health HTTP/1.1\r\n\r\n", Some("/health")), Endpoint::Health);
        assert_eq!(ep(b"HEAD /hz HTTP/1.1\r\n\r\n", Some("/hz")), Endpoint::Health);
        let down = b"POST /control/health/down HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(ep(down, Some("/health")), Endpoint::SetHealth(false));
        assert_eq!(ep(down, None), Endpoint::Normal);
        let up = b"POST /control/health/up HTTP/1.1\r\n\r\n";
        assert_eq!(ep(up, Some("/health")), Endpoint::SetHealth(true));
        assert_eq!(
            ep(b"GET /control/health/up HTTP/1.1\r\n\r\n", Some("/health")),
            Endpoint::Normal
        );
    }

    #[test]
    fn health_follows_the_switch_and_the_request_count() {
        let mut script = Script::new("b", Reply::Http);
        script.health_fail_after = Some(2);
        let stats = Stats::default();
        assert!(stats.healthy(&script));
        stats.health_down.set(true);
        assert!(!stats.healthy(&script));
        stats.health_down.set(false);
        stats.requests.set(2);
        assert!(!stats.healthy(&script));
        assert!(!script.past_fail_after(5));
        script.fail_after = Some(3);
        assert!(!script.past_fail_after(2) && script.past_fail_after(3));
        script.body_bytes = Some(5);
        assert_eq!(script.body(), b"b\nxxx");
        script.body_bytes = Some(1);
        assert_eq!(script.body(), b"b");
    }
}
