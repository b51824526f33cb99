//! Active probes, generic over [`Env`]: a TCP probe (the connect succeeds) and an HTTP
//! probe (a request whose response status is in the expected set).
//!
//! The HTTP probe is a minimal, strict HTTP/1.1 client: one request with
//! `Connection: close`, a response head parsed by the L7 proxy's own codec
//! ([`crate::http::parse_response`], so a backend whose responses the proxy would refuse
//! with a 502 fails its probe too), bounded in size, and at most `body_bytes_max` bytes of
//! body read.

use crate::config::{CheckConfig, CheckKind};
use crate::http::{self, BodyKind, Limits};
use crate::io::{self, Env, IoBuf, OwnedRead, OwnedWrite, Stream};
use std::cell::Cell;
use std::net::SocketAddr;

/// Largest response head a probe reads.
const HEAD_BYTES_MAX: usize = 8 * 1024;
/// Most response headers a probe parses.
const HEADERS_MAX: usize = 64;

/// The codec's limits for a probe's response.
fn limits() -> Limits {
    Limits {
        head_bytes_max: HEAD_BYTES_MAX,
        headers_max: HEADERS_MAX,
        ..Limits::default()
    }
}

/// What one probe found: `Ok` with a short description, or `Err` with the reason.
pub type ProbeResult = Result<String, String>;

/// Runs one probe of `addr`, bounded by the check's timeout.
pub async fn probe<E: Env>(env: &E, addr: SocketAddr, check: &CheckConfig) -> ProbeResult {
    let deadline = env.now() + check.timeout;
    // Set once the response head is in: the status decides, and a body that trickles
    // past the timeout (a keep-alive server ignoring `Connection: close`, a streaming
    // health endpoint) must not turn a good answer into a timeout.
    let verdict: Cell<Option<ProbeResult>> = Cell::new(None);
    let work = async {
        let stream = env.connect(addr).await.map_err(|e| format!("connect failed: {e}"))?;
        match &check.kind {
            CheckKind::Tcp => {
                let (_, mut w) = stream.into_split();
                // Polite close; a failure here says nothing about the backend's health.
                let _ = w.shutdown().await;
                Ok("connected".to_string())
            }
            CheckKind::Http {
                method,
                path,
                host,
                expect,
                body_bytes_max,
            } => {
                let host = host.clone().unwrap_or_else(|| addr.to_string());
                http_probe(stream, method, path, &host, expect, *body_bytes_max, &verdict).await
            }
        }
    };
    match io::timeout_at(env, deadline, work).await {
        Some(r) => r,
        None => verdict
            .take()
            .unwrap_or_else(|| Err(format!("timed out after {:?}", check.timeout))),
    }
}

async fn http_probe<S: Stream>(
    stream: S,
    method: &str,
    path: &str,
    host: &str,
    expect: &[(u16, u16)],
    body_bytes_max: usize,
    verdict: &Cell<Option<ProbeResult>>,
) -> ProbeResult {
    let (mut r, mut w) = stream.into_split();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: gobalancer-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    let (res, _) = w.write_all(IoBuf::from_vec(request.into_bytes())).await;
    res.map_err(|e| format!("request write failed: {e}"))?;
    let mut buf = IoBuf::with_capacity(HEAD_BYTES_MAX);
    let limits = limits();
    let (status, length) = loop {
        match http::parse_response(buf.bytes(), &limits, method == "HEAD") {
            // Interim responses (100 Continue, 103 Early Hints) are skipped.
            Ok(Some(head)) if (100..200).contains(&head.status) && head.status != 101 => {
                buf.consume(head.head_len);
                continue;
            }
            Ok(Some(head)) => {
                buf.consume(head.head_len);
                let length = match head.body {
                    BodyKind::None => Some(0),
                    BodyKind::Length(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
                    BodyKind::Chunked | BodyKind::UntilClose => None,
                };
                break (head.status, length);
            }
            Ok(None) => {}
            Err(e) => return Err(format!("malformed response: {}", e.reason)),
        }
        if buf.spare_capacity() == 0 {
            return Err(format!("response head larger than {HEAD_BYTES_MAX} bytes"));
        }
        let (res, b) = r.read(buf).await;
        buf = b;
        match res {
            Ok(0) => return Err("closed before a complete response head".to_string()),
            Ok(_) => {}
            Err(e) => return Err(format!("read failed: {e}")),
        }
    };
    let result = if expect.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status)) {
        Ok(format!("HTTP {status}"))
    } else {
        Err(format!("HTTP {status} is not an expected status"))
    };
    verdict.set(Some(result.clone()));
    // Read (and drop) the body, at most `body_bytes_max` of it and never past its
    // Content-Length: the status decides; the body is only drained so that the backend
    // sees a well-behaved client.
    let limit = length.map_or(body_bytes_max, |l| l.min(body_bytes_max));
    let mut body = buf.len();
    buf.clear();
    while body < limit {
        let (res, b) = r.read(buf).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => break,
            Ok(n) => body += n,
        }
        buf.clear();
    }
    result
}
