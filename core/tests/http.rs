//! L7 HTTP/1.1 proxying over loopback, RELIABILITY.md section A: every parsing and
//! smuggling row as raw bytes through a real listener, with a mock backend that records
//! every byte it receives (a rejected request must reach it not at all), plus the
//! forwarding basics: keep-alive reuse on both sides, pipelining order, forwarding and
//! hop-by-hop fields, bodyless responses, re-framing of bodies both ways, and upgrades.
// Clients and mock backends run on plain threads; waits are bounded with the real clock.
#![allow(clippy::disallowed_methods)]

mod common;

use common::http::*;
use common::{start_proxy, Proxy};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A proxy over one normal backend, with `extra` config fields.
fn one_backend(extra: &str) -> (MockBackend, Proxy) {
    let b = MockBackend::normal("a");
    let p = start_proxy(&http_config(&[b.addr], extra));
    (b, p)
}

/// Sends `bytes` on a new connection and checks that the answer is exactly one response
/// of ours with `status`, `connection: close`, and that the connection then closes.
fn check_refused(p: &Proxy, bytes: &[u8], status: u16) -> Result<(), String> {
    let (out, end) = raw_exchange(p.addr, bytes, WAIT);
    let resps = parse_responses(&out).map_err(|e| format!("{e}: {:?}", String::from_utf8_lossy(&out)))?;
    let got: Vec<u16> = resps.iter().map(|r| r.status).collect();
    if got != [status] {
        return Err(format!(
            "expected [{status}], got {got:?} ({:?})",
            String::from_utf8_lossy(&out)
        ));
    }
    if !resps[0].closes() {
        return Err(format!("{status} without connection: close"));
    }
    if end == RawEnd::Timeout {
        return Err(format!("connection left open after the {status}"));
    }
    Ok(())
}

/// One row of the section A rejection table.
struct Row {
    id: &'static str,
    bytes: Vec<u8>,
    status: u16,
    /// The backend must see no byte at all. `false` only for a body too long to be
    /// whole in the proxy's first read: it is streamed, so its head may be sent before
    /// the bad framing is found; then no complete request may reach the backend.
    fwd_zero: bool,
}

fn row(id: &'static str, bytes: &[u8], status: u16) -> Row {
    Row {
        id,
        bytes: bytes.to_vec(),
        status,
        fwd_zero: true,
    }
}

/// A POST head with the given framing lines and then `body`.
fn post(framing: &str, body: &str) -> Vec<u8> {
    format!("POST / HTTP/1.1\r\nHost: a\r\n{framing}\r\n{body}").into_bytes()
}

/// A chunked POST with `body` as its raw chunked body.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut v = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    v.extend_from_slice(body);
    v
}

fn rejection_table() -> Vec<Row> {
    let mut rows = vec![
        // A1 CL.TE
        row(
            "A1 CL+TE",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX",
            400,
        ),
        // A2 TE.CL and spacing variants
        row(
            "A2 TE+CL",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nX",
            400,
        ),
        row(
            "A2 TE:<tab>chunked + CL",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\nX",
            400,
        ),
        row(
            "A2 'chunked ' + CL",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked \r\n\r\n0\r\n\r\nX",
            400,
        ),
        // A3 differing duplicate CL
        row(
            "A3 CL 5 + CL 6",
            &post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
            400,
        ),
        // A4 lists and empty
        row("A4 CL '5, 6'", &post("Content-Length: 5, 6\r\n", "hello!"), 400),
        row("A4 CL '0,'", &post("Content-Length: 0,\r\n", ""), 400),
        row("A4 CL empty", &post("Content-Length:\r\n", ""), 400),
        row(
            "A4 CL '5, 5' (decided: 400)",
            &post("Content-Length: 5, 5\r\n", "hello"),
            400,
        ),
        row(
            "A4 CL 5 twice (decided: 400)",
            &post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            400,
        ),
    ];
    // A5 CL syntax
    for (id, v) in [
        ("A5 CL +5", "+5"),
        ("A5 CL -1", "-1"),
        ("A5 CL 0x5", "0x5"),
        ("A5 CL '5 5'", "5 5"),
        ("A5 CL 5a", "5a"),
        ("A5 CL overflow", "99999999999999999999"),
    ] {
        rows.push(row(id, &post(&format!("Content-Length: {v}\r\n"), "hello"), 400));
    }
    // A6 TE not ending in chunked (a known coding alone: 501)
    rows.push(row("A6 TE gzip", &post("Transfer-Encoding: gzip\r\n", "hello"), 501));
    rows.push(row(
        "A6 TE identity",
        &post("Transfer-Encoding: identity\r\n", "hello"),
        501,
    ));
    rows.push(row(
        "A6 TE 'chunked, gzip'",
        &post("Transfer-Encoding: chunked, gzip\r\n", "0\r\n\r\n"),
        400,
    ));
    rows.push(row(
        "A6 TE 'gzip, chunked'",
        &post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"),
        400,
    ));
    // A7 TE obfuscation and duplicates
    for (id, framing) in [
        ("A7 TE 'chunked, chunked'", "Transfer-Encoding: chunked, chunked\r\n"),
        (
            "A7 two TE lines",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        ),
        ("A7 TE xchunked", "Transfer-Encoding: xchunked\r\n"),
        ("A7 'Transfer-Encoding : chunked'", "Transfer-Encoding : chunked\r\n"),
        ("A7 TE:<VT>chunked", "Transfer-Encoding:\x0bchunked\r\n"),
        ("A7 TE chunked;ext=1", "Transfer-Encoding: chunked;ext=1\r\n"),
    ] {
        rows.push(row(id, &post(framing, "0\r\n\r\n"), 400));
    }
    // A8 TE on HTTP/1.0
    rows.push(row(
        "A8 TE on 1.0",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ));
    rows.push(row(
        "A8 TE on 1.0 with Host",
        b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ));
    // A10 chunk framing (the whole body comes in the first write, so it is checked
    // before anything is sent)
    for (id, body) in [
        (
            "A10 size ffffffffffffffffffff",
            &b"ffffffffffffffffffff\r\nx\r\n0\r\n\r\n"[..],
        ),
        ("A10 size 0x5", b"0x5\r\nhello\r\n0\r\n\r\n"),
        ("A10 size -1", b"-1\r\nhello\r\n0\r\n\r\n"),
        ("A10 missing CRLF after data", b"5\r\nhelloX\r\n0\r\n\r\n"),
        ("A10 '5;' bare LF", b"5;\nhello\r\n0\r\n\r\n"),
        ("A10 '5;' bare semicolon", b"5;\r\nhello\r\n0\r\n\r\n"),
        ("A10 NUL in ext", b"5;a\x00b\r\nhello\r\n0\r\n\r\n"),
        ("A10 bare LF after size", b"5\nhello\r\n0\r\n\r\n"),
    ] {
        rows.push(row(id, &chunked(body), 400));
    }
    for (name, kib) in [
        ("A10 8 KiB chunk ext (streamed)", 8),
        ("A10 64 KiB chunk ext (streamed)", 64),
    ] {
        let mut long_ext = b"5;x=".to_vec();
        long_ext.extend(std::iter::repeat_n(b'a', kib * 1024));
        long_ext.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        rows.push(Row {
            fwd_zero: false,
            ..row(name, &chunked(&long_ext), 400)
        });
    }
    // A11 space before colon
    rows.push(row("A11 'Host : a'", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400));
    rows.push(row(
        "A11 'Content-Length : 5'",
        &post("Content-Length : 5\r\n", "hello"),
        400,
    ));
    // A12 obs-fold
    rows.push(row(
        "A12 obs-fold",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
        400,
    ));
    rows.push(row(
        "A12 folded TE",
        &post("Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n"),
        400,
    ));
    // A13 control bytes
    for (id, line) in [
        ("A13 NUL in name", &b"X\x00Y: a"[..]),
        ("A13 NUL in value", b"X: a\x00b"),
        ("A13 bare CR in value", b"X: a\rb"),
        ("A13 DEL in value", b"X: a\x7fb"),
        ("A13 8-bit byte in name", b"X\xe9: a"),
        ("A13 bare LF line end", b"X: a\nY: b"),
    ] {
        let mut v = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        v.extend_from_slice(line);
        v.extend_from_slice(b"\r\n\r\n");
        rows.push(row(id, &v, 400));
    }
    // A14 request target and version
    for (id, bytes) in [
        ("A14 'GET admin'", &b"GET admin HTTP/1.1\r\nHost: a\r\n\r\n"[..]),
        ("A14 'GET *'", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("A14 'OPTIONS */x'", b"OPTIONS */x HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("A14 space in target", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("A14 CTL in target", b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("A14 '#' in target", b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("A14 8-bit target", b"GET /\xe9 HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("A14 HTTP/1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"),
        ("A14 HTTP/11", b"GET / HTTP/11\r\nHost: a\r\n\r\n"),
        ("A14 HTTP/2.0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
        ("A14 no version (0.9)", b"GET /\r\n\r\n"),
        ("A14 two spaces", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"),
        // A15 Host rules
        ("A15 no Host on 1.1", b"GET / HTTP/1.1\r\nX: a\r\n\r\n"),
        (
            "A15 two different Hosts",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ),
        ("A15 two equal Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
        (
            "A15 absolute form + other Host",
            b"GET http://a/ HTTP/1.1\r\nHost: b\r\n\r\n",
        ),
        (
            "A15 bad authority chars in Host",
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        ),
        ("A15 userinfo in Host", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"),
        ("A15 slash in Host", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"),
        (
            "A15 userinfo in absolute form",
            b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
    ] {
        rows.push(row(id, bytes, 400));
    }
    // A16 CONNECT
    rows.push(row(
        "A16 CONNECT",
        b"CONNECT evil:443 HTTP/1.1\r\nHost: evil:443\r\n\r\n",
        405,
    ));
    rows
}

/// A1–A16 (and A13's bare CR for A20): every rejected request gets its status and a
/// close, and the backend receives not one byte, not even a connection.
#[test]
fn a_rejected_requests_never_reach_the_backend() {
    let (b, p) = one_backend("");
    let mut failures = Vec::new();
    for r in rejection_table() {
        if !r.fwd_zero {
            // A streamed row's head may reach a backend, and may arrive there late (after
            // this loop moved on, on a busy machine): it gets a backend and proxy of its
            // own, so that its bytes are never counted against the next row.
            let (sb, sp) = one_backend("");
            if let Err(e) = check_refused(&sp, &r.bytes, r.status) {
                failures.push(format!("{}: {e}", r.id));
            }
            sp.assert_counters_return_to_zero();
            if sb.request_count() != 0 {
                failures.push(format!("{}: a complete request reached the backend", r.id));
            }
            continue;
        }
        let before = b.bytes_received();
        if let Err(e) = check_refused(&p, &r.bytes, r.status) {
            failures.push(format!("{}: {e}", r.id));
        }
        std::thread::sleep(Duration::from_millis(5));
        let after = b.bytes_received();
        if after != before {
            failures.push(format!("{}: the backend received {} bytes", r.id, after - before));
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(b.request_count(), 0, "no request reached the backend");
    assert_eq!(b.conn_count(), 0, "not even a connection");
    let stats = &p.current().pools[0].stats.http;
    assert_eq!(stats.requests_total.load(Ordering::Relaxed), 0);
    // The proxy keeps serving.
    let mut c = Client::connect(p.addr);
    c.send(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.body_text().as_str()), (200, "a /after"));
    drop(c);
    p.assert_counters_return_to_zero();
}

/// A21 with `underscores: "reject"`: 400, nothing forwarded.
#[test]
fn a21_underscore_reject_policy_refuses() {
    let (b, p) = one_backend("http: (underscores: \"reject\"),");
    check_refused(
        &p,
        b"GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 1.2.3.4\r\n\r\n",
        400,
    )
    .expect("A21 reject");
    b.assert_saw_nothing("A21 reject");
    p.assert_counters_return_to_zero();
}

/// A21 with the default policy (drop): `X_Forwarded_For` never reaches the backend and
/// our `X-Forwarded-For` replaces the client's; with "allow" the field passes.
#[test]
fn a21_underscore_names_are_dropped_by_default_and_xff_is_ours() {
    let (b, p) = one_backend("");
    let mut c = Client::connect(p.addr);
    c.send(b"GET /u HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 1.2.3.4\r\nX-Forwarded-For: 6.6.6.6\r\nX_Other: y\r\n\r\n");
    assert_eq!(c.response().status, 200);
    let req = &b.requests()[0];
    assert!(!contains(&b.all_bytes(), b"X_Forwarded_For"), "{}", req.head);
    assert!(!contains(&b.all_bytes(), b"X_Other"), "{}", req.head);
    assert!(!contains(&b.all_bytes(), b"1.2.3.4"), "{}", req.head);
    assert!(!contains(&b.all_bytes(), b"6.6.6.6"), "{}", req.head);
    assert_eq!(req.all("x-forwarded-for"), ["127.0.0.1"], "{}", req.head);
    drop(c);
    p.assert_counters_return_to_zero();

    let (b, p) = one_backend("http: (underscores: \"allow\"),");
    let mut c = Client::connect(p.addr);
    c.send(b"GET /u HTTP/1.1\r\nHost: a\r\nX_Custom: 1\r\n\r\n");
    assert_eq!(c.response().status, 200);
    assert_eq!(b.requests()[0].header("X_Custom"), Some("1"));
    drop(c);
    p.assert_counters_return_to_zero();
}

/// A9: a request without framing has no body. HTTP/1.0 without keep-alive: one response,
/// then close; the trailing request is never sent, as a body or otherwise. HTTP/1.1: the
/// trailing bytes are the next request, framed by us.
#[test]
fn a9_request_without_framing_has_no_body() {
    let (b, p) = one_backend("");
    let (out, end) = raw_exchange(
        p.addr,
        b"GET / HTTP/1.0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        WAIT,
    );
    assert_ne!(end, RawEnd::Timeout, "1.0 without keep-alive closes");
    assert_eq!(statuses(&out), [200]);
    let reqs = b.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].target, "/");
    assert!(reqs[0].body.is_empty());
    assert!(
        !contains(&b.all_bytes(), b"smuggled"),
        "{:?}",
        String::from_utf8_lossy(&b.all_bytes())
    );

    // HTTP/1.1: the trailing bytes are a separate request.
    let mut c = Client::connect(p.addr);
    c.send(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().body_text(), "a /one");
    assert_eq!(c.response().body_text(), "a /smuggled");
    let reqs = b.requests();
    assert_eq!(reqs.len(), 3);
    assert!(
        reqs[1].body.is_empty() && !reqs[1].has("content-length"),
        "{}",
        reqs[1].head
    );
    assert_eq!(reqs[2].target, "/smuggled");
    assert_eq!(
        reqs[2].all("x-forwarded-for"),
        ["127.0.0.1"],
        "parsed and re-written by us"
    );
    drop(c);
    p.assert_counters_return_to_zero();
}

/// A10: a million 1-byte chunks (6 MB of framing for 1 MB of body) decode to the right
/// body, and the backend gets our framing (the chunks of one read go out in one write).
#[test]
fn a10_many_one_byte_chunks_are_reframed() {
    const N: usize = 1_000_000;
    let (b, p) = one_backend("");
    let mut body = Vec::with_capacity(6 * N + 5);
    for _ in 0..N {
        body.extend_from_slice(b"1\r\nz\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let mut c = Client::connect(p.addr);
    c.send(&chunked(&body));
    let r = c.response();
    assert_eq!((r.status, r.header("x-body-len")), (200, Some("1000000")));
    let req = &b.requests()[0];
    assert!(req.body == vec![b'z'; N], "the body differs ({} bytes)", req.body.len());
    assert!(
        req.chunked || req.header("content-length") == Some("1000000"),
        "{}",
        req.head
    );
    drop(c);
    p.assert_counters_return_to_zero();
}

/// A15: an absolute-form target with a matching Host is forwarded in origin form with
/// the authority as the only Host; without Host too.
#[test]
fn a15_absolute_form_is_forwarded_in_origin_form() {
    let (b, p) = one_backend("");
    let mut c = Client::connect(p.addr);
    c.send(b"GET http://Example.com:8080/p?q=1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n");
    assert_eq!(c.response().status, 200);
    c.send(b"GET http://other.example?x HTTP/1.1\r\nHost: other.example\r\n\r\n");
    assert_eq!(c.response().status, 200);
    let reqs = b.requests();
    assert_eq!(reqs[0].target, "/p?q=1");
    assert_eq!(reqs[0].all("host"), ["Example.com:8080"], "{}", reqs[0].head);
    assert_eq!(reqs[1].target, "/?x");
    assert_eq!(reqs[1].all("host"), ["other.example"]);
    drop(c);
    p.assert_counters_return_to_zero();
}

/// A17(a): an h2c upgrade is stripped: the backend sees no `h2c` token and no
/// HTTP2-Settings, and the connection stays HTTP/1.1.
#[test]
fn a17a_h2c_upgrade_is_stripped() {
    let b = MockBackend::start("a", Behavior::Upgrade101);
    let p = start_proxy(&http_config(&[b.addr], ""));
    let mut c = Client::connect(p.addr);
    c.send(
        b"GET /h2 HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\
          Connection: Upgrade, HTTP2-Settings\r\n\r\n",
    );
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.head);
    c.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().body_text(), "a /next");
    let all = b.all_bytes();
    assert!(
        !contains(&all.to_ascii_lowercase(), b"h2c"),
        "{:?}",
        String::from_utf8_lossy(&all)
    );
    assert!(!contains(&all.to_ascii_lowercase(), b"http2-settings"));
    assert!(!b.requests()[0].has("upgrade"));
    drop(c);
    p.assert_counters_return_to_zero();
}

/// A17(b)/(c): a WebSocket upgrade answered with 200 (no 101) leaves the connection in
/// HTTP framing: a `GET /admin` pipelined behind it is parsed by us as a request of its
/// own, and raw bytes after it are refused as a malformed request, never tunnelled.
#[test]
fn a17bc_upgrade_answered_200_gives_no_tunnel() {
    let (b, p) = one_backend("");
    let mut c = Client::connect(p.addr);
    c.send(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\
          GET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    let r1 = c.response();
    assert_eq!((r1.status, r1.body_text().as_str()), (200, "a /ws"));
    let r2 = c.response();
    assert_eq!((r2.status, r2.body_text().as_str()), (200, "a /admin"));
    let reqs = b.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].header("upgrade"), Some("websocket"), "the upgrade is offered");
    assert_eq!(reqs[1].target, "/admin");
    assert_eq!(reqs[1].all("x-forwarded-for"), ["127.0.0.1"], "/admin was parsed by us");
    // (c) no tunnel: raw bytes now are an HTTP request, and a bad one.
    let before = b.bytes_received();
    c.send(b"\x81\x05hello\r\n\r\n");
    let r3 = c.response();
    assert_eq!(r3.status, 400);
    c.expect_closed("after the 400");
    assert_eq!(b.bytes_received(), before, "raw bytes were tunnelled");
    p.assert_counters_return_to_zero();
}

/// WebSocket: a 101 turns the connection into a tunnel; bytes pipelined after the
/// upgrade request go into it only after the 101, and echo works both ways.
#[test]
fn websocket_upgrade_tunnels_after_101() {
    let b = MockBackend::start("a", Behavior::Upgrade101);
    let p = start_proxy(&http_config(&[b.addr], ""));
    let mut c = Client::connect(p.addr);
    c.send(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: k\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 101, "{}", r.head);
    assert_eq!(r.header("upgrade"), Some("websocket"));
    c.send(b"ping-1");
    let mut got = Vec::new();
    wait_for("echo", WAIT, || {
        let mut tmp = [0u8; 64];
        if let Ok(n) = std::io::Read::read(&mut c.s, &mut tmp) {
            got.extend_from_slice(&tmp[..n]);
        }
        got.len() >= 6
    });
    assert_eq!(got, b"ping-1");
    let req = &b.requests()[0];
    assert_eq!(req.header("upgrade"), Some("websocket"));
    assert_eq!(req.header("sec-websocket-key"), Some("k"));
    // Half-close ends the tunnel both ways.
    c.s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let (rest, end) = c.finish(WAIT);
    assert!(rest.is_empty() && end == RawEnd::Eof, "{end:?} {rest:?}");
    p.assert_counters_return_to_zero();
}

/// A17(b) with a 101: a request pipelined behind the upgrade request is held until the
/// backend switches protocols and then belongs to the tunnel: it reaches the backend raw,
/// after the upgrade request, and is never parsed or forwarded as a request of ours.
#[test]
fn a17b_bytes_pipelined_behind_an_upgrade_go_into_the_tunnel_after_101() {
    let b = MockBackend::start("a", Behavior::Upgrade101);
    let p = start_proxy(&http_config(&[b.addr], ""));
    let admin = b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut req = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_vec();
    req.extend_from_slice(admin);
    let mut c = Client::connect(p.addr);
    c.send(&req);
    let r = c.response();
    assert_eq!(r.status, 101, "{}", r.head);
    b.wait_until("the pipelined bytes in the tunnel", WAIT, |recs| {
        recs.first().is_some_and(|c| contains(&c.bytes, b"/admin"))
    });
    let conns = b.conns();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].requests.len(), 1, "only the upgrade request was parsed");
    let head_end = find(&conns[0].bytes, b"\r\n\r\n").expect("head") + 4;
    assert_eq!(&conns[0].bytes[head_end..], admin, "raw, after the upgrade request");
    // The backend echoes what it got in the tunnel.
    let mut got = std::mem::take(&mut c.buf);
    wait_for("echo", WAIT, || {
        let mut tmp = [0u8; 256];
        if let Ok(n) = std::io::Read::read(&mut c.s, &mut tmp) {
            got.extend_from_slice(&tmp[..n]);
        }
        got.len() >= admin.len()
    });
    assert_eq!(got, admin);
    drop(c);
    p.assert_counters_return_to_zero();
}

/// A18: the backend answers before the body: the backend connection is not reused, the
/// client connection closes after the response, and the body (holding `GET /smuggled`)
/// never reaches the backend as a request, on that connection or a pooled one.
#[test]
fn a18_early_answer_closes_both_sides() {
    let b = MockBackend::scripted("a", vec![Behavior::EarlyReply(200), Behavior::Normal]);
    let p = start_proxy(&http_config(&[b.addr], ""));
    let smuggled = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut body = smuggled.to_vec();
    body.resize(100, b' ');
    let mut c = Client::connect(p.addr);
    c.send(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert!(r.closes(), "the client's unread body ends the connection: {}", r.head);
    // The body, then a second request, after the answer.
    let _ = std::io::Write::write_all(&mut c.s, &body);
    let _ = std::io::Write::write_all(&mut c.s, b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n");
    let (rest, end) = c.finish(WAIT);
    assert_ne!(end, RawEnd::Timeout);
    assert_eq!(status_line_count(&rest), 0, "{:?}", String::from_utf8_lossy(&rest));
    // A new client: a new backend connection (the first was not pooled).
    let mut c2 = Client::connect(p.addr);
    c2.send(b"GET /fresh HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c2.response().body_text(), "a /fresh");
    drop(c2);
    let conns = b.conns();
    assert_eq!(conns.len(), 2, "the early-answered connection was reused: {conns:?}");
    assert!(
        b.requests()
            .iter()
            .all(|r| r.target != "/smuggled" && r.target != "/second"),
        "{:?}",
        b.requests()
    );
    assert!(!contains(&b.all_bytes(), b"smuggled"));
    p.assert_counters_return_to_zero();
}

/// A18 with part of the body sent before the early answer.
#[test]
fn a18_early_answer_mid_body_is_not_pooled() {
    let b = MockBackend::scripted("a", vec![Behavior::EarlyReply(413), Behavior::Normal]);
    let p = start_proxy(&http_config(&[b.addr], ""));
    let mut c = Client::connect(p.addr);
    let mut first = b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n".to_vec();
    first.extend_from_slice(&[b'.'; 40]);
    c.send(&first);
    let r = c.response();
    assert_eq!(r.status, 413);
    let mut rest = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    rest.resize(60, b' ');
    let _ = std::io::Write::write_all(&mut c.s, &rest);
    let (more, end) = c.finish(WAIT);
    assert_ne!(end, RawEnd::Timeout);
    assert_eq!(status_line_count(&more), 0);
    let mut c2 = Client::connect(p.addr);
    c2.send(b"GET /fresh HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c2.response().body_text(), "a /fresh");
    drop(c2);
    assert_eq!(b.conn_count(), 2);
    assert!(
        b.requests().iter().all(|r| r.target != "/smuggled"),
        "{:?}",
        b.requests()
    );
    p.assert_counters_return_to_zero();
}

/// A19: `Connection` naming framing fields or Host removes neither.
#[test]
fn a19_connection_cannot_strip_framing_or_host() {
    let (b, p) = one_backend("");
    let mut c = Client::connect(p.addr);
    c.send(b"POST /a19 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Content-Length, Host\r\nContent-Length: 5\r\n\r\nhello");
    let r = c.response();
    assert_eq!((r.status, r.header("x-body-len")), (200, Some("5")));
    c.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().body_text(), "a /next", "framing stayed intact");
    let reqs = b.requests();
    assert_eq!(reqs[0].body, b"hello");
    assert_eq!(reqs[0].header("content-length"), Some("5"));
    assert_eq!(reqs[0].all("host"), ["a"]);
    assert_eq!(reqs[1].target, "/next");
    drop(c);
    p.assert_counters_return_to_zero();
}

/// A22: `Expect: 100-continue` answered 401 before the body: the client gets the 401
/// and the connection closes; the body never reaches the backend as a request, and the
/// backend connection is not reused.
#[test]
fn a22_expect_answered_401_before_the_body() {
    let b = MockBackend::scripted("a", vec![Behavior::EarlyReply(401), Behavior::Normal]);
    let p = start_proxy(&http_config(&[b.addr], ""));
    let mut c = Client::connect(p.addr);
    c.send(b"POST /auth HTTP/1.1\r\nHost: a\r\nContent-Length: 36\r\nExpect: 100-continue\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 401, "{}", r.head);
    let _ = std::io::Write::write_all(&mut c.s, b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n");
    let (rest, end) = c.finish(WAIT);
    assert_ne!(end, RawEnd::Timeout, "the client connection must end after the 401");
    assert_eq!(status_line_count(&rest), 0, "{:?}", String::from_utf8_lossy(&rest));
    let mut c2 = Client::connect(p.addr);
    c2.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c2.response().body_text(), "a /next");
    drop(c2);
    assert_eq!(b.conn_count(), 2, "the 401 connection was reused");
    assert!(b.requests().iter().all(|r| r.target != "/smuggled"));
    p.assert_counters_return_to_zero();
}

/// A22: with a normal backend the `100 Continue` is relayed, then the body goes through
/// and the connection stays usable.
#[test]
fn a22_expect_100_continue_is_relayed() {
    let (b, p) = one_backend("");
    let mut c = Client::connect(p.addr);
    c.send(b"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 100, "{}", r.head);
    c.send(b"hello");
    let r = c.response();
    assert_eq!((r.status, r.header("x-body-len")), (200, Some("5")));
    c.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().body_text(), "a /next");
    assert_eq!(b.requests()[0].body, b"hello");
    drop(c);
    p.assert_counters_return_to_zero();
}

/// A23: every bad response framing gets 502; the backend connection is closed, never
/// pooled (the next request opens a new one), and the bad response is not retried.
#[test]
fn a23_bad_response_framing_is_502_and_not_pooled() {
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..150 {
        many.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"content-length: 2\r\n\r\nok");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "CL+TE",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "two CLs",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!".to_vec(),
        ),
        (
            "chunked, chunked",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, chunked\r\n\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "bare CR",
            b"HTTP/1.1 200 OK\r\nx: a\rb\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        ),
        (
            "obs-fold",
            b"HTTP/1.1 200 OK\r\nx: a\r\n b\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        ),
        ("150 header fields", many),
        (
            "TE on 1.0",
            b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "CL 5, 5",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\nhello".to_vec(),
        ),
    ];
    let mut failures = Vec::new();
    for (id, raw) in cases {
        let b = MockBackend::scripted("a", vec![Behavior::Raw(raw), Behavior::Normal]);
        let p = start_proxy(&http_config(&[b.addr], ""));
        if let Err(e) = check_refused(&p, b"GET /bad HTTP/1.1\r\nHost: a\r\n\r\n", 502) {
            failures.push(format!("{id}: {e}"));
        }
        let mut c = Client::connect(p.addr);
        c.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
        match c.try_response(false, WAIT) {
            Ok(r) if r.status == 200 && r.body_text() == "a /next" => {}
            other => failures.push(format!("{id}: next request got {other:?}")),
        }
        drop(c);
        let conns = b.conns();
        if conns.len() != 2 || conns[0].requests.len() != 1 {
            failures.push(format!(
                "{id}: the bad connection was reused: {} conns, {:?} requests each",
                conns.len(),
                conns.iter().map(|c| c.requests.len()).collect::<Vec<_>>()
            ));
        }
        let stats = &p.current().pools[0].stats.http;
        if stats.retries_total.load(Ordering::Relaxed) != 0 {
            failures.push(format!("{id}: a bad response was retried"));
        }
        p.assert_counters_return_to_zero();
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A23: bytes after a complete response never become the next response; the backend
/// connection they came on is not pooled.
#[test]
fn a23_bytes_after_a_complete_response_are_not_the_next_response() {
    let junk = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nSMUGGLED";
    let mut raw = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst".to_vec();
    raw.extend_from_slice(junk);
    let b = MockBackend::scripted("a", vec![Behavior::Raw(raw), Behavior::Normal]);
    let p = start_proxy(&http_config(&[b.addr], ""));
    let mut c = Client::connect(p.addr);
    c.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().body_text(), "first");
    c.send(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.response();
    assert_eq!(r.body_text(), "a /2", "the trailing bytes became the next response");
    drop(c);
    assert_eq!(b.conn_count(), 2);
    p.assert_counters_return_to_zero();
}

/// A23: the same with the trailing bytes arriving a moment after the response (after
/// the connection could have gone back to the pool).
#[test]
fn a23_late_bytes_after_a_response_are_not_the_next_response() {
    let junk = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nSMUGGLED".to_vec();
    let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst".to_vec();
    let b = MockBackend::scripted(
        "a",
        vec![
            Behavior::RawThenLate(raw, Duration::from_millis(50), junk),
            Behavior::Normal,
        ],
    );
    let p = start_proxy(&http_config(&[b.addr], ""));
    let mut c = Client::connect(p.addr);
    c.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().body_text(), "first");
    std::thread::sleep(Duration::from_millis(150));
    c.send(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.try_response(false, WAIT);
    assert!(
        matches!(&r, Ok(r) if r.body_text() != "SMUGGLED"),
        "the late bytes became the next response: {r:?}"
    );
    drop(c);
    p.assert_counters_return_to_zero();
}

/// Keep-alive on both sides: two requests on one client connection use one backend
/// connection; a second client connection reuses the pooled backend connection.
#[test]
fn keep_alive_reuses_connections_on_both_sides() {
    let (b, p) = one_backend("");
    let stats = p.current().pools[0].stats.clone();
    let mut c = Client::connect(p.addr);
    c.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.response();
    assert!(!r.closes());
    c.send(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().body_text(), "a /2");
    assert_eq!(b.conn_count(), 1);
    assert_eq!(stats.http.pool_misses_total.load(Ordering::Relaxed), 1);
    assert_eq!(stats.http.pool_hits_total.load(Ordering::Relaxed), 1);
    drop(c);
    let mut c = Client::connect(p.addr);
    c.send(b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().body_text(), "a /3");
    assert_eq!(b.conn_count(), 1, "the pooled connection serves another client");
    assert_eq!(stats.http.pool_hits_total.load(Ordering::Relaxed), 2);
    assert_eq!(stats.http.requests_total.load(Ordering::Relaxed), 3);
    // HTTP/1.0 keep-alive.
    c.send(b"GET /4 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.response();
    assert_eq!(r.body_text(), "a /4");
    c.send(b"GET /5 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let r = c.response();
    assert!(r.closes());
    c.expect_closed("after Connection: close");
    p.assert_counters_return_to_zero();
}

/// Pipelining: three requests in one write get three responses in order.
#[test]
fn pipelined_requests_are_answered_in_order() {
    let (b, p) = one_backend("");
    let mut c = Client::connect(p.addr);
    c.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let (out, end) = c.finish(WAIT);
    assert_ne!(end, RawEnd::Timeout);
    let bodies: Vec<String> = parse_responses(&out)
        .expect("responses")
        .iter()
        .map(Resp::body_text)
        .collect();
    assert_eq!(bodies, ["a /1", "a /2", "a /3"]);
    assert_eq!(b.request_count(), 3);
    p.assert_counters_return_to_zero();
}

/// Forwarding fields are ours: client-sent X-Forwarded-For/-Proto/-Host and Forwarded
/// are replaced; Host is kept.
#[test]
fn forwarding_fields_are_set_and_client_values_replaced() {
    let (b, p) = one_backend("");
    let mut c = Client::connect(p.addr);
    c.send(
        b"GET /f HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n\
          X-Forwarded-Host: evil\r\nForwarded: for=6.6.6.6;proto=https\r\nX-Keep: 1\r\n\r\n",
    );
    assert_eq!(c.response().status, 200);
    let req = &b.requests()[0];
    assert_eq!(req.all("x-forwarded-for"), ["127.0.0.1"], "{}", req.head);
    assert_eq!(req.all("x-forwarded-proto"), ["http"]);
    assert_eq!(req.all("forwarded"), ["for=127.0.0.1;proto=http"]);
    assert!(!req.has("x-forwarded-host"));
    assert_eq!(req.all("host"), ["shop.example"]);
    assert_eq!(req.header("x-keep"), Some("1"));
    assert!(!contains(&b.all_bytes(), b"6.6.6.6"));
    drop(c);
    p.assert_counters_return_to_zero();
}

/// Hop-by-hop fields, and those `Connection` names, are not forwarded; an `Upgrade`
/// without `Connection: upgrade` is dropped.
#[test]
fn hop_by_hop_fields_are_stripped() {
    let (b, p) = one_backend("");
    let mut c = Client::connect(p.addr);
    c.send(
        b"GET /h HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\n\
          TE: trailers\r\nTrailer: X-T\r\nProxy-Connection: keep-alive\r\nUpgrade: websocket\r\nX-End: e\r\n\r\n",
    );
    assert_eq!(c.response().status, 200);
    let req = &b.requests()[0];
    for name in ["x-secret", "keep-alive", "te", "trailer", "proxy-connection", "upgrade"] {
        assert!(!req.has(name), "{name} forwarded: {}", req.head);
    }
    assert!(
        req.all("connection")
            .iter()
            .all(|v| !v.to_ascii_lowercase().contains("x-secret")),
        "{}",
        req.head
    );
    assert_eq!(req.header("x-end"), Some("e"));
    assert_eq!(req.all("host"), ["a"]);
    drop(c);
    p.assert_counters_return_to_zero();
}

/// HEAD gets no body whatever the response's Content-Length; 204 and 304 have none; the
/// connection goes on after each.
#[test]
fn head_204_and_304_have_no_body() {
    let (b, p) = one_backend("");
    let mut c = Client::connect(p.addr);
    c.send(b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.head_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("4"), "{}", r.head);
    c.send(b"GET /status/204 HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 204);
    assert!(
        r.header("content-length").is_none() && r.header("transfer-encoding").is_none(),
        "{}",
        r.head
    );
    c.send(b"GET /status/304 HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 304);
    assert!(r.header("transfer-encoding").is_none(), "{}", r.head);
    c.send(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.response();
    assert_eq!(r.body_text(), "a /after");
    assert!(c.buf.is_empty(), "stray bytes: {:?}", c.buf);
    assert_eq!(b.conn_count(), 1, "the backend connection was reused throughout");
    drop(c);
    p.assert_counters_return_to_zero();
}

/// A chunked request body is re-framed: whole in the first read it goes with a
/// Content-Length; streamed it is re-chunked; chunk extensions never pass.
#[test]
fn chunked_request_bodies_are_reframed() {
    let (b, p) = one_backend("");
    let mut c = Client::connect(p.addr);
    c.send(&chunked(b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"));
    let r = c.response();
    assert_eq!((r.status, r.header("x-body-len")), (200, Some("11")));
    let req = &b.requests()[0];
    assert_eq!(req.body, b"hello world");
    assert_eq!(req.header("content-length"), Some("11"), "{}", req.head);
    assert!(!req.has("transfer-encoding"));
    // Streamed: the head and the first chunk, then the rest later.
    c.send(b"POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=2\r\nhello\r\n");
    std::thread::sleep(Duration::from_millis(50));
    c.send(b"6;e=\"q\"\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.header("x-body-len")), (200, Some("11")));
    let req = &b.requests()[1];
    assert_eq!(req.body, b"hello world");
    assert!(req.chunked || req.has("content-length"), "{}", req.head);
    assert!(
        !contains(&req.raw_body, b"ext"),
        "{:?}",
        String::from_utf8_lossy(&req.raw_body)
    );
    assert!(!contains(&b.all_bytes(), b";e="));
    drop(c);
    p.assert_counters_return_to_zero();
}

/// A chunked response is streamed to a 1.1 client with our chunking (no extension), and
/// delimited by close for a 1.0 client; a close-delimited response is chunked for 1.1.
#[test]
fn chunked_and_close_delimited_responses_are_reframed() {
    let (b, p) = one_backend("");
    let mut c = Client::connect(p.addr);
    c.send(b"GET /chunked HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.response();
    assert_eq!((r.framing, r.body_text().as_str()), (Framing::Chunked, "hello world"));
    c.send(b"GET /eof HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.response();
    assert_eq!((r.framing, r.body_text().as_str()), (Framing::Chunked, "until close"));
    assert!(!r.closes(), "{}", r.head);
    c.send(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().body_text(), "a /after");
    drop(c);
    let (out, end) = raw_exchange(p.addr, b"GET /chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", WAIT);
    assert_eq!(end, RawEnd::Eof, "a 1.0 close-delimited body ends with FIN");
    let resps = parse_responses(&out).expect("response");
    assert_eq!(resps.len(), 1);
    assert_eq!(
        (resps[0].framing, resps[0].body_text().as_str()),
        (Framing::Close, "hello world")
    );
    assert!(resps[0].header("transfer-encoding").is_none());
    assert!(b.request_count() >= 4);
    p.assert_counters_return_to_zero();
}

/// Issue 7 / RELIABILITY: TCP urgent data (MSG_OOB) inside a spliced Content-Length body,
/// from the client and from the backend. splice(2) stops at the urgent mark (EAGAIN there,
/// or 0 once the FIN is in), so the rest of the body is copied, stepping over the urgent
/// byte as a plain read does: the body arrives whole (its length counts the bytes around
/// the urgent byte, as the receiver sees them) and both connections go on. Before, the
/// splice waited at the mark until the idle timeout.
#[test]
fn urgent_data_inside_a_spliced_body_is_stepped_over() {
    use std::io::{Read, Write};
    for io in splicing_backends("urgent_data_inside_a_spliced_body") {
        // From the client.
        let b = MockBackend::normal("a");
        let p = common::start_proxy_on(io, &http_config(&[b.addr], ""));
        let body = pattern(7, 300_000);
        let mut c = Client::connect(p.addr);
        let mut req = b"POST /oob HTTP/1.1\r\nHost: a\r\nContent-Length: 300000\r\n\r\n".to_vec();
        req.extend_from_slice(&body[..150_000]);
        c.send(&req);
        // Let the proxy splice what came before the mark.
        std::thread::sleep(Duration::from_millis(50));
        socket2::SockRef::from(&c.s)
            .send_out_of_band(b"U")
            .expect("urgent byte");
        c.send(&body[150_000..]);
        assert_eq!(c.response().body_text(), "a /oob", "{io:?}");
        c.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.response().body_text(), "a /next", "{io:?}");
        let seen = b.requests().into_iter().find(|r| r.target == "/oob").expect("the POST");
        assert!(
            seen.body == body,
            "{io:?}: the request body differs ({} bytes)",
            seen.body.len()
        );
        let stats = p.current().pools[0].stats.clone();
        assert_eq!(stats.http.spliced_bodies_total.load(Ordering::Relaxed), 1, "{io:?}");
        drop(c);
        p.assert_counters_return_to_zero();

        // From the backend: a raw one, answering one request.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let body = pattern(8, 300_000);
        let sent = body.clone();
        let backend = std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n")
                .expect("head");
            s.write_all(&sent[..150_000]).expect("body");
            std::thread::sleep(Duration::from_millis(50));
            socket2::SockRef::from(&s).send_out_of_band(b"U").expect("urgent byte");
            s.write_all(&sent[150_000..]).expect("body");
            // Open until the proxy is done with it.
            let _ = s.read(&mut buf);
        });
        let p = common::start_proxy_on(io, &http_config(&[addr], ""));
        let mut c = Client::connect(p.addr);
        c.send(b"GET /oob HTTP/1.1\r\nHost: a\r\n\r\n");
        let r = c.response();
        assert_eq!(r.status, 200, "{io:?}");
        assert!(
            r.body == body,
            "{io:?}: the response body differs ({} bytes)",
            r.body.len()
        );
        let stats = p.current().pools[0].stats.clone();
        assert_eq!(stats.http.spliced_bodies_total.load(Ordering::Relaxed), 1, "{io:?}");
        drop(c);
        drop(p);
        backend.join().expect("backend thread");
    }
}

/// The splicing backends to run `test` on: epoll, and io_uring with each splice method
/// where it can (skipped, saying why, elsewhere).
fn splicing_backends(test: &str) -> Vec<common::IoKind> {
    let mut kinds = vec![common::IoKind::EpollSplice];
    kinds.extend(common::uring_splice_or_skip(&format!("{test} (io_uring)")));
    kinds.extend(common::uring_splice_op_or_skip(&format!(
        "{test} (io_uring, IORING_OP_SPLICE)"
    )));
    kinds
}

/// RELIABILITY B8 / issue 7: a Content-Length response body is spliced (zero-copy) from
/// its first byte after the head when the worker splices (threshold 0 here), on epoll
/// and on io_uring: every byte arrives, none of what follows the body is taken from the
/// backend, and the backend connection is reused for the next request.
#[test]
fn content_length_bodies_are_spliced_exactly_and_the_connection_is_reused() {
    for io in splicing_backends("content_length_bodies_are_spliced") {
        let b = MockBackend::normal("a");
        let p = common::start_proxy_on(io, &http_config(&[b.addr], ""));
        let mut c = Client::connect(p.addr);
        for (i, n) in [3_000_000usize, 70_000, 1, 0, 5_000_000].into_iter().enumerate() {
            c.send(format!("GET /big/{n} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
            let r = c.response();
            assert_eq!(r.status, 200, "{io:?} request {i}");
            assert_eq!(r.body.len(), n, "{io:?} request {i}");
            assert!(r.body.iter().all(|&x| x == b'x'), "{io:?} request {i}");
        }
        c.send(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.response().body_text(), "a /after", "{io:?}");
        drop(c);
        assert_eq!(b.conn_count(), 1, "{io:?}: the backend connection was not reused");
        // The three bodies bigger than a buffer at least went through the pipe.
        let spliced = p.current().pools[0]
            .stats
            .http
            .spliced_bodies_total
            .load(Ordering::Relaxed);
        assert!(spliced >= 3, "{io:?}: {spliced} bodies spliced");
        p.assert_counters_return_to_zero();

        // C4 while splicing: half the body, then a reset: the client gets the head and
        // what came, then an abort; never a complete body or a second status line.
        let cut = MockBackend::start("cut", Behavior::HalfBodyThenReset);
        let p = common::start_proxy_on(io, &http_config(&[cut.addr], ""));
        let mut c = Client::connect(p.addr);
        c.send(b"GET /half HTTP/1.1\r\nHost: a\r\n\r\n");
        let (out, end) = c.finish(WAIT);
        assert_ne!(end, RawEnd::Timeout, "{io:?}");
        assert_eq!(
            status_line_count(&out),
            1,
            "{io:?}: {:?}",
            String::from_utf8_lossy(&out)
        );
        let body_start = find(&out, b"\r\n\r\n").expect("head") + 4;
        assert!(out.len() - body_start < 100, "{io:?}: a complete body after a reset");
        p.assert_counters_return_to_zero();
    }
}

/// Bytes that differ from one position to the next (a byte lost, doubled or moved shows).
fn pattern(seed: usize, n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 31 + seed * 7) % 251) as u8).collect()
}

/// Issue 7: a Content-Length request body too big for the replay copy (64 KiB) is
/// spliced from the client to the backend (threshold 0 here), on epoll and on io_uring:
/// every byte arrives in order, nothing of the client's next request goes with it (one
/// body is pipelined with a GET in the same write), and both connections are reused. A
/// body that fits the replay copy is copied, so that it keeps its retry. A client that
/// stops in the middle of a spliced body: no complete request reaches the backend.
#[test]
fn content_length_request_bodies_are_spliced_exactly() {
    for io in splicing_backends("content_length_request_bodies_are_spliced") {
        let b = MockBackend::normal("a");
        let p = common::start_proxy_on(io, &http_config(&[b.addr], ""));
        let sizes = [3_000_000usize, 70_000, 65_000, 1, 0, 5_000_001];
        let mut c = Client::connect(p.addr);
        for (i, &n) in sizes.iter().enumerate() {
            let mut req = format!("POST /up/{i} HTTP/1.1\r\nHost: a\r\nContent-Length: {n}\r\n\r\n").into_bytes();
            req.extend_from_slice(&pattern(i, n));
            if i == 0 {
                req.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
            }
            c.send(&req);
            assert_eq!(c.response().body_text(), format!("a /up/{i}"), "{io:?} request {i}");
            if i == 0 {
                assert_eq!(c.response().body_text(), "a /next", "{io:?}: the pipelined GET");
            }
        }
        drop(c);
        let seen: Vec<_> = b.requests().into_iter().filter(|r| r.method == "POST").collect();
        assert_eq!(seen.len(), sizes.len(), "{io:?}");
        for (i, (r, &n)) in seen.iter().zip(&sizes).enumerate() {
            assert_eq!(r.target, format!("/up/{i}"), "{io:?}");
            assert_eq!(
                r.header("content-length"),
                Some(n.to_string().as_str()),
                "{io:?} request {i}"
            );
            assert!(
                r.body == pattern(i, n),
                "{io:?} request {i}: the body differs ({} bytes)",
                r.body.len()
            );
        }
        assert_eq!(b.conn_count(), 1, "{io:?}: the backend connection was not reused");
        let stats = p.current().pools[0].stats.clone();
        assert_eq!(
            stats.http.spliced_bodies_total.load(Ordering::Relaxed),
            3,
            "{io:?}: the 3,000,000, 70,000 and 5,000,001 byte bodies spliced, the others copied"
        );
        p.assert_counters_return_to_zero();

        // The client stops half-way through a spliced body and closes.
        let mut c = Client::connect(p.addr);
        let mut req = b"POST /cut HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n".to_vec();
        req.extend_from_slice(&pattern(9, 300_000));
        c.send(&req);
        std::thread::sleep(Duration::from_millis(50));
        drop(c);
        p.assert_counters_return_to_zero();
        assert!(
            b.requests().iter().all(|r| r.target != "/cut"),
            "{io:?}: a cut body reached the backend as a complete request"
        );
        p.assert_counters_return_to_zero();
    }
}
