//! L7 resource limits over loopback, RELIABILITY.md section B, scaled down to run in
//! seconds: timeouts of a few hundred milliseconds, 50 slowloris connections instead of
//! 1 000, 1 000 pipelined requests instead of 10 000.
//!
//! B9 (fd exhaustion) is not here: it needs a lowered RLIMIT_NOFILE, and the proxy under
//! test runs inside the test process, whose limit the tests must not change (it would
//! hit every other test running in parallel). It is in tests/binary.rs
//! (`fd_exhaustion_backs_off_without_spinning_and_recovers`), which starts the binary in
//! http mode with RLIMIT_NOFILE 256 and floods it with 400 connections.
// Clients and mock backends run on plain threads; waits are bounded with the real clock.
#![allow(clippy::disallowed_methods)]

mod common;

use common::http::*;
use common::{start_proxy, Proxy};
use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn proxy(b: &[&MockBackend], extra: &str) -> Proxy {
    let addrs: Vec<_> = b.iter().map(|b| b.addr).collect();
    start_proxy(&http_config(&addrs, extra))
}

/// B1: slowloris. 50 connections trickle a header byte every 50 ms and never end the
/// head: each gets 408 and a close at `request_head` (500 ms), whatever it trickles; a
/// legitimate client is served meanwhile; nothing reaches the backend.
#[test]
fn b1_slowloris_gets_408_at_the_head_deadline() {
    let b = MockBackend::normal("a");
    let p = proxy(&[&b], "timeouts: (request_head: \"500ms\"),");
    let addr = p.addr;
    let threads: Vec<_> = (0..50)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                s.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
                let start = Instant::now();
                let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ");
                let mut got = Vec::new();
                let mut tmp = [0u8; 512];
                let end = loop {
                    if start.elapsed() > Duration::from_secs(4) {
                        break RawEnd::Timeout;
                    }
                    let _ = s.write_all(b"a");
                    match s.read(&mut tmp) {
                        Ok(0) => break RawEnd::Eof,
                        Ok(n) => got.extend_from_slice(&tmp[..n]),
                        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                        }
                        Err(_) => break RawEnd::Reset,
                    }
                };
                (got, end, start.elapsed())
            })
        })
        .collect();
    // A legitimate client is served at once meanwhile.
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let mut c = Client::connect(p.addr);
    c.send(b"GET /legit HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().body_text(), "a /legit");
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    drop(c);
    for t in threads {
        let (got, end, took) = t.join().expect("slowloris thread");
        assert_eq!(statuses(&got), [408], "{:?}", String::from_utf8_lossy(&got));
        assert_ne!(end, RawEnd::Timeout);
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_millis(2500),
            "closed after {took:?}"
        );
    }
    assert_eq!(b.request_count(), 1, "only the legitimate request");
    p.assert_counters_return_to_zero();
}

/// B2: a request body that stalls: closed at the idle timeout (408, no response had
/// started); the backend connection is aborted, not pooled, and counters come back.
#[test]
fn b2_stalled_body_is_cut_at_the_idle_timeout() {
    let b = MockBackend::normal("a");
    let p = proxy(&[&b], "timeouts: (idle: \"400ms\"),");
    let mut c = Client::connect(p.addr);
    let start = Instant::now();
    c.send(b"POST /rudy HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\nabc");
    std::thread::sleep(Duration::from_millis(100));
    c.send(b"d");
    let (out, end) = c.finish(WAIT);
    let took = start.elapsed();
    assert_ne!(end, RawEnd::Timeout);
    assert_eq!(statuses(&out), [408], "{:?}", String::from_utf8_lossy(&out));
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(2),
        "{took:?}"
    );
    b.wait_all_closed(WAIT);
    assert_eq!(b.request_count(), 0);
    // The backend connection was not pooled: the next request opens another.
    let mut c = Client::connect(p.addr);
    c.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().status, 200);
    assert_eq!(b.conn_count(), 2);
    drop(c);
    p.assert_counters_return_to_zero();
}

/// B2: RUDY proper: a body trickled faster than the idle timeout must still end at a
/// total deadline ("closed at body idle/total timeout").
#[test]
fn b2_trickled_body_is_cut_at_a_total_deadline() {
    let b = MockBackend::normal("a");
    let p = proxy(
        &[&b],
        "timeouts: (idle: \"400ms\", request_head: \"500ms\", request_body: \"1s\", response: \"1s\"),",
    );
    let mut c = Client::connect(p.addr);
    c.s.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    let start = Instant::now();
    c.send(b"POST /rudy HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n");
    let mut closed = false;
    while start.elapsed() < Duration::from_secs(4) {
        if c.s.write_all(b"x").is_err() {
            closed = true;
            break;
        }
        let mut tmp = [0u8; 256];
        match c.s.read(&mut tmp) {
            Ok(_) => {
                closed = true;
                break;
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "a 10 bytes/s body was still accepted after 4 s");
    // Cut at `request_body` (1 s), well before the 4 s bound.
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "cut after {:?}",
        start.elapsed()
    );
    p.assert_counters_return_to_zero();
}

/// B3: an idle keep-alive connection is closed at the keep-alive timeout without a
/// byte.
#[test]
fn b3_idle_keep_alive_is_closed_silently() {
    let b = MockBackend::normal("a");
    let p = proxy(&[&b], "timeouts: (keep_alive: \"300ms\"),");
    let mut c = Client::connect(p.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response().status, 200);
    let start = Instant::now();
    let (rest, end) = c.finish(WAIT);
    let took = start.elapsed();
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert_eq!(end, RawEnd::Eof);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    p.assert_counters_return_to_zero();
}

/// B4: 150 one-byte header fields (limit 100): 431.
#[test]
fn b4_too_many_header_fields_get_431() {
    let b = MockBackend::normal("a");
    let p = proxy(&[&b], "");
    let mut req = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..150 {
        req.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    let (out, end) = raw_exchange(p.addr, &req, WAIT);
    assert_eq!(statuses(&out), [431]);
    assert_ne!(end, RawEnd::Timeout);
    b.assert_saw_nothing("B4");
    p.assert_counters_return_to_zero();
}

/// B5: one 70 KiB field, and 200 fields of 400 bytes (within the field count): 431.
#[test]
fn b5_oversized_heads_get_431() {
    let b = MockBackend::normal("a");
    let p = proxy(&[&b], "http: (headers_max: 1000),");
    let mut one = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    one.extend(std::iter::repeat_n(b'v', 70 * 1024));
    one.extend_from_slice(b"\r\n\r\n");
    let mut many = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..200 {
        many.extend_from_slice(format!("x-{i:03}: {}\r\n", "v".repeat(400)).as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    for (id, req) in [("one 70 KiB field", one), ("200 x 400 B", many)] {
        let (out, end) = raw_exchange(p.addr, &req, WAIT);
        assert_eq!(statuses(&out), [431], "{id}");
        assert_ne!(end, RawEnd::Timeout, "{id}");
    }
    b.assert_saw_nothing("B5");
    p.assert_counters_return_to_zero();
}

/// B6: a 100 KiB request target: 414.
#[test]
fn b6_long_request_line_gets_414() {
    let b = MockBackend::normal("a");
    let p = proxy(&[&b], "");
    let mut req = b"GET /".to_vec();
    req.extend(std::iter::repeat_n(b'a', 100 * 1024));
    req.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
    let (out, end) = raw_exchange(p.addr, &req, WAIT);
    assert_eq!(statuses(&out), [414]);
    assert_ne!(end, RawEnd::Timeout);
    b.assert_saw_nothing("B6");
    p.assert_counters_return_to_zero();
}

/// B7: a Content-Length over `body_bytes_max` gets 413 before anything is sent; a
/// chunked body that grows past it is cut with 413 and never completes at the backend;
/// a large body within the limit streams through whole.
#[test]
fn b7_bodies_over_the_limit_get_413() {
    let b = MockBackend::normal("a");
    let p = proxy(&[&b], "http: (body_bytes_max: \"64KiB\"),");
    let (out, _) = raw_exchange(
        p.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10737418240\r\n\r\nxxxx",
        WAIT,
    );
    assert_eq!(statuses(&out), [413]);
    b.assert_saw_nothing("B7 CL over the limit");

    // Chunked, endless: 413 once past 64 KiB.
    let mut c = Client::connect(p.addr);
    c.send(b"POST /endless HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    let piece = {
        let mut v = b"4000\r\n".to_vec();
        v.extend(std::iter::repeat_n(b'c', 0x4000));
        v.extend_from_slice(b"\r\n");
        v
    };
    for _ in 0..8 {
        if c.s.write_all(&piece).is_err() {
            break;
        }
    }
    let (out, end) = c.finish(WAIT);
    assert_ne!(end, RawEnd::Timeout);
    assert_eq!(statuses(&out), [413], "{:?}", String::from_utf8_lossy(&out));
    assert_eq!(b.request_count(), 0, "a body over the limit completed at the backend");

    // Within the limit, in several writes: whole.
    let body = vec![b'y'; 60 * 1024];
    let mut c = Client::connect(p.addr);
    c.send(format!("POST /ok HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
    for part in body.chunks(8 * 1024) {
        c.send(part);
    }
    let r = c.response();
    assert_eq!((r.status, r.header("x-body-len")), (200, Some("61440")));
    drop(c);
    p.assert_counters_return_to_zero();
}

/// B8: a slow reader of a large response: the proxy keeps serving others, and the
/// stalled connection is closed by the idle timeout (backend side too).
#[test]
fn b8_slow_reader_is_cut_at_the_idle_timeout() {
    let b = MockBackend::normal("a");
    let p = proxy(&[&b], "timeouts: (idle: \"500ms\"),");
    let total: usize = 256 * 1024 * 1024;
    let mut slow = connect(p.addr);
    slow.write_all(format!("GET /big/{total} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .expect("write");
    let mut first = vec![0u8; 16 * 1024];
    slow.read_exact(&mut first).expect("the response starts");
    assert!(first.starts_with(b"HTTP/1.1 200"));
    // Others are served while it stalls.
    for i in 0..5 {
        let started = Instant::now();
        let mut c = Client::connect(p.addr);
        c.send(format!("GET /other{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        assert_eq!(c.response().status, 200);
        assert!(
            started.elapsed() < Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
    }
    // Backpressure: while the client reads nothing, the backend can write only what the
    // socket buffers on the way hold (a few MiB each on loopback) and the proxy's
    // buffer: nothing like the 256 MiB it is asked for.
    std::thread::sleep(Duration::from_millis(200));
    let written: u64 = b.conns().iter().map(|c| c.written).sum();
    assert!(
        written < 64 * 1024 * 1024,
        "{written} bytes left the backend for a client that read 16 KiB"
    );
    // The stalled exchange is cut: the backend's writer ends well before 256 MiB.
    b.wait_until("the big response's connection closed", Duration::from_secs(4), |r| {
        r.first().is_some_and(|c| c.done)
    });
    let mut rest = Vec::new();
    let end = read_until_end(&mut slow, &mut rest, WAIT);
    assert_ne!(end, RawEnd::Timeout, "the slow reader's connection was not closed");
    assert!(rest.len() + first.len() < total, "the whole response went through");
    p.assert_counters_return_to_zero();
}

/// B7, backpressure: a 96 MiB upload to a backend that leaves the body unread for
/// 600 ms. While it does, the client can write only what the socket buffers on the way
/// and the proxy's one buffer hold (a few MiB each on loopback), nothing like the whole
/// body; then the body arrives whole.
#[test]
fn b7_upload_to_a_stalled_backend_is_held_back_at_the_client() {
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;
    const LEN: usize = 96 * 1024 * 1024;
    let b = MockBackend::start("a", Behavior::StallBody(Duration::from_millis(600)));
    let p = proxy(&[&b], "");
    let s = connect(p.addr);
    s.set_write_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let written = Arc::new(AtomicU64::new(0));
    let mut w = s.try_clone().expect("clone");
    let progress = written.clone();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        w.write_all(format!("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {LEN}\r\n\r\n").as_bytes())?;
        let piece = vec![b'u'; 256 * 1024];
        for _ in 0..LEN / piece.len() {
            w.write_all(&piece)?;
            progress.fetch_add(piece.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    });
    b.wait_until("the upload's head", Duration::from_secs(5), |r| !r.is_empty());
    std::thread::sleep(Duration::from_millis(300));
    let held = written.load(Ordering::Relaxed);
    assert!(
        held < 48 * 1024 * 1024,
        "{held} bytes of the body written while the backend read none of it"
    );
    writer
        .join()
        .expect("writer")
        .expect("the whole body written once the backend reads");
    let mut c = Client { s, buf: Vec::new() };
    let r = c.response();
    assert_eq!(
        (r.status, r.header("x-body-len")),
        (200, Some(LEN.to_string().as_str()))
    );
    drop(c);
    p.assert_counters_return_to_zero();
}

/// B10: with `max_connections: 2`, a third connection waits in the backlog until a slot
/// frees; established connections are unaffected; the limit is counted.
#[test]
fn b10_connection_flood_waits_in_the_backlog() {
    let b = MockBackend::normal("a");
    let p = proxy(&[&b], "max_connections: 2,");
    let mut first = Client::connect(p.addr);
    let mut second = Client::connect(p.addr);
    first.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n");
    second.send(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(first.response().status, 200);
    assert_eq!(second.response().status, 200);
    let mut third = Client::connect(p.addr);
    third.send(b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(
        matches!(
            third.try_response(false, Duration::from_millis(300)),
            Err(RawEnd::Timeout)
        ),
        "served while at the limit"
    );
    // Established connections keep working.
    second.send(b"GET /2b HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(second.response().body_text(), "a /2b");
    drop(first);
    assert_eq!(third.response().body_text(), "a /3");
    assert!(p.shared.conn_limit.saturated_total.load(Ordering::Relaxed) > 0);
    drop((second, third));
    p.assert_counters_return_to_zero();
}

/// B11: 1 000 pipelined requests sent at once and not read for a while: all answered,
/// in order, once read.
#[test]
fn b11_pipelined_flood_is_answered_in_order() {
    let b = MockBackend::normal("a");
    let p = proxy(&[&b], "");
    let n = 1000;
    let mut reqs = Vec::new();
    for i in 0..n {
        let close = if i == n - 1 { "Connection: close\r\n" } else { "" };
        reqs.extend_from_slice(format!("GET /{i} HTTP/1.1\r\nHost: a\r\n{close}\r\n").as_bytes());
    }
    let mut s = connect(p.addr);
    // Written from a thread: the proxy may stop reading while its answers are unread.
    let mut w = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || w.write_all(&reqs));
    std::thread::sleep(Duration::from_millis(300));
    let mut out = Vec::new();
    let end = read_until_end(&mut s, &mut out, Duration::from_secs(10));
    writer.join().expect("writer").expect("written");
    assert_eq!(end, RawEnd::Eof);
    let resps = parse_responses(&out).expect("responses");
    assert_eq!(resps.len(), n);
    for (i, r) in resps.iter().enumerate() {
        assert_eq!(r.body_text(), format!("a /{i}"), "response {i} out of order");
    }
    p.assert_counters_return_to_zero();
}

/// B11, bounded: 1 000 pipelined requests for 64 KiB answers, none read for a while. The
/// proxy answers in order and reads the next request only once the previous answer is on
/// its way, so an unread client holds back its own pipeline: what reached the backend
/// stops at what the socket buffers hold (about a hundred answers), not the 1 000 (64
/// MiB) a proxy that read ahead would fetch and keep. Read, everything arrives, in order.
#[test]
fn b11_unread_pipeline_stops_at_the_socket_buffers() {
    let b = MockBackend::normal("a");
    let p = proxy(&[&b], "");
    let n = 1000usize;
    let size = |i: usize| 65_536 + i;
    let mut reqs = Vec::new();
    for i in 0..n {
        let close = if i == n - 1 { "Connection: close\r\n" } else { "" };
        reqs.extend_from_slice(format!("GET /big/{} HTTP/1.1\r\nHost: a\r\n{close}\r\n", size(i)).as_bytes());
    }
    let mut s = connect(p.addr);
    let mut w = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || w.write_all(&reqs));
    std::thread::sleep(Duration::from_millis(300));
    let seen = b.request_count();
    std::thread::sleep(Duration::from_millis(200));
    let later = b.request_count();
    assert!(
        later < n / 2 && later <= seen + 2,
        "the backend got {seen} then {later} of {n} requests while the client read nothing"
    );
    let mut out = Vec::new();
    let end = read_until_end(&mut s, &mut out, Duration::from_secs(20));
    writer.join().expect("writer").expect("written");
    assert_eq!(end, RawEnd::Eof);
    let resps = parse_responses(&out).expect("responses");
    assert_eq!(resps.len(), n);
    for (i, r) in resps.iter().enumerate() {
        assert_eq!(r.body.len(), size(i), "response {i} out of order");
    }
    assert_eq!(b.request_count(), n);
    p.assert_counters_return_to_zero();
}

/// B12: a backend that never answers, with `max_requests_per_backend: 2`: two requests
/// wait (and get 504 at the response timeout), every other one gets 503 at once; a second
/// backend in the pool keeps serving.
#[test]
fn b12_pool_exhaustion_gets_503_fast() {
    let silent = MockBackend::start("s", Behavior::Silent);
    let p = proxy(
        &[&silent],
        "http: (max_requests_per_backend: 2), timeouts: (response: \"1s\"),",
    );
    let addr = p.addr;
    let waiting: Vec<_> = (0..2)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.send(format!("GET /wait{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
                c.response().status
            })
        })
        .collect();
    silent.wait_requests(2);
    let started = Instant::now();
    let fast: Vec<_> = (0..20)
        .map(|i| {
            std::thread::spawn(move || {
                let (out, _) = raw_exchange(addr, format!("GET /x{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(), WAIT);
                statuses(&out)
            })
        })
        .collect();
    for t in fast {
        assert_eq!(t.join().expect("client"), [503]);
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    for t in waiting {
        assert_eq!(t.join().expect("client"), 504);
    }
    assert_eq!(silent.request_count(), 2);
    p.assert_counters_return_to_zero();

    // With a second backend, the one at its limit is passed over.
    let silent = MockBackend::start("s", Behavior::Silent);
    let normal = MockBackend::normal("n");
    let p = proxy(
        &[&silent, &normal],
        "http: (max_requests_per_backend: 1), timeouts: (response: \"1s\"),",
    );
    let addr = p.addr;
    // Round robin: of two requests, one lands on each backend.
    let holds: Vec<_> = (0..2)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.send(format!("GET /hold{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
                c.response().status
            })
        })
        .collect();
    silent.wait_requests(1);
    // The other one is answered by the normal backend, whose slot then frees.
    normal.wait_requests(1);
    let pool = p.current().pools[0].clone();
    wait_for("the normal backend's slot free", WAIT, || pool.balancer.active(1) == 0);
    for i in 0..6 {
        let started = Instant::now();
        let mut c = Client::connect(p.addr);
        c.send(format!("GET /n{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        let r = c.response();
        assert_eq!((r.status, r.body_text()), (200, format!("n /n{i}")));
        assert!(
            started.elapsed() < Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
    }
    let mut got: Vec<u16> = holds.into_iter().map(|t| t.join().expect("hold")).collect();
    got.sort_unstable();
    assert_eq!(got, [200, 504]);
    assert_eq!(silent.request_count(), 1);
    p.assert_counters_return_to_zero();
}
