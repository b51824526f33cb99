//! The scriptable test backend: one implementation shared by the binary's built-in demo,
//! the integration tests, the simulation and `loadgen serve`.
//!
//! A backend replies with its own name, so that whoever drives traffic through the
//! balancer can see where each connection or request went. It can be told to add latency
//! and to fail a share of its connections. It is generic over [`Env`], so the same code
//! serves real loopback sockets and turmoil's simulated network.

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
}

impl Script {
    /// A backend named `name` replying `reply`, with no latency and no failures.
    pub fn new(name: impl Into<String>, reply: Reply) -> Script {
        Script {
            name: name.into(),
            reply,
            latency: Duration::ZERO,
            fail_percent: 0,
        }
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
        stats.connections.set(stats.connections.get() + 1);
        let env2 = env.clone();
        let script = script.clone();
        let stats = stats.clone();
        env.spawn(async move {
            stats.open.set(stats.open.get() + 1);
            handle(&env2, stream, &script, &stats).await;
            stats.open.set(stats.open.get() - 1);
        });
    }
}

fn should_fail<E: Env>(env: &E, script: &Script) -> bool {
    script.fail_percent > 0 && env.random_u64() % 100 < u64::from(script.fail_percent)
}

async fn handle<E: Env, S: Stream>(env: &E, mut stream: S, script: &Script, stats: &Stats) {
    match script.reply {
        Reply::Http => http(env, stream, script, stats).await,
        Reply::Name | Reply::Echo => {
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

/// What the HTTP mode made of one request head.
struct Head {
    /// Bytes of the head, including the final CRLFCRLF.
    len: usize,
    /// Content-Length of the request body (0 without one).
    body: u64,
    /// The client asked to close after this response.
    close: bool,
}

fn parse_head(bytes: &[u8]) -> Result<Option<Head>, &'static str> {
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
    Ok(Some(Head { len, body, close }))
}

fn response(status: &str, name: &str, close: bool) -> IoBuf {
    let body = format!("{name}\n");
    let conn = if close { "close" } else { "keep-alive" };
    IoBuf::from_vec(
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Backend: {name}\r\nConnection: {conn}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

async fn http<E: Env, S: Stream>(env: &E, mut stream: S, script: &Script, stats: &Stats) {
    let mut buf = IoBuf::with_capacity(HEAD_BYTES_MAX);
    loop {
        // Read until a whole head is buffered.
        let head = loop {
            match parse_head(buf.bytes()) {
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
        if !script.latency.is_zero() {
            env.sleep(script.latency).await;
        }
        stats.requests.set(stats.requests.get() + 1);
        let status = if should_fail(env, script) {
            stats.failures.set(stats.failures.get() + 1);
            "500 Internal Server Error"
        } else {
            "200 OK"
        };
        let (res, _) = stream.write_all(response(status, &script.name, head.close)).await;
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
        let h = parse_head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.len, h.body, h.close), (27, 0, false));
        let h = parse_head(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
            .unwrap()
            .unwrap();
        assert_eq!((h.body, h.close), (3, true));
        let h = parse_head(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(h.close);
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost").unwrap().is_none());
        assert!(parse_head(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n").is_err());
    }
}
