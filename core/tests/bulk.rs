//! Benchmark, not a timed test (ignored by default): one bulk transfer (1 GiB by default)
//! over one connection, directly to a loopback sink and through one-worker L4 proxies
//! with `--splice auto` (from the first byte) and with `--splice off`, on the epoll
//! backend and, where io_uring works, on the io_uring backend (splice on with each
//! `--uring-splice` method: `syscall` and `op`), in alternating rounds; prints the
//! medians and the ratios to direct.
//!
//! `cargo test --release -p gobalancer --test bulk -- --ignored --nocapture`, with
//! `BULK_BYTES` (1073741824), `BULK_ROUNDS` (5), `BULK_BUFFER` (the proxy's
//! `buffer_size`, "16KiB") and `BULK_MODE`: `tcp` (the default: L4 proxies, the bytes
//! then a half-close) or `http` (L7 proxies: the bytes as the body of one POST with a
//! Content-Length, answered by the sink with the count; with splice on, the body is
//! spliced from the client to the backend).
// Clients and the sink run on plain threads and time themselves with the real clock.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Limit on one transfer: a stuck round fails instead of hanging.
const TRANSFER_LIMIT: Duration = Duration::from_secs(120);
const CHUNK: usize = 256 * 1024;

/// Serves each connection to a new loopback port on a thread of its own, with `per_conn`.
fn start_sink_with(per_conn: fn(TcpStream)) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind sink");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || per_conn(s));
        }
    });
    addr
}

/// A sink: per connection, reads to EOF, replies with the count (8 bytes, little
/// endian) and closes.
fn start_sink() -> SocketAddr {
    start_sink_with(|mut s| {
        let mut buf = vec![0u8; CHUNK];
        let mut n: u64 = 0;
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => n += k as u64,
                Err(_) => return,
            }
        }
        let _ = s.write_all(&n.to_le_bytes());
    })
}

/// An HTTP sink: per connection, one request with a Content-Length body, read whole and
/// answered with the count of body bytes (8 bytes, little endian, as the response's
/// body); then the connection closes.
fn start_http_sink() -> SocketAddr {
    start_sink_with(|mut s| {
        let mut buf = vec![0u8; CHUNK];
        let mut head = Vec::new();
        // The head, then what came after it is the start of the body.
        let (len, mut n) = loop {
            let Ok(k) = s.read(&mut buf) else { return };
            if k == 0 {
                return;
            }
            head.extend_from_slice(&buf[..k]);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
                let Some(len) = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                else {
                    return;
                };
                break (len, (head.len() - end - 4) as u64);
            }
        };
        while n < len {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(k) => n += k as u64,
            }
        }
        let mut resp = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\n".to_vec();
        resp.extend_from_slice(&n.to_le_bytes());
        let _ = s.write_all(&resp);
    })
}

/// A connection to `addr` whose reads and writes give up after [`TRANSFER_LIMIT`].
fn connect_bounded(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(TRANSFER_LIMIT)).expect("timeout");
    s.set_write_timeout(Some(TRANSFER_LIMIT)).expect("timeout");
    s
}

/// Writes `bytes` bytes of filler in [`CHUNK`]-sized writes.
fn send_filler(s: &mut TcpStream, bytes: u64) {
    let buf = vec![0x5a_u8; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let k = left.min(CHUNK as u64) as usize;
        s.write_all(&buf[..k]).expect("write");
        left -= k as u64;
    }
}

/// Sends `bytes` as the body of one POST to `addr` and waits for the sink's count;
/// seconds taken.
fn transfer_http(addr: SocketAddr, bytes: u64) -> f64 {
    let mut s = connect_bounded(addr);
    let start = Instant::now();
    let head = format!("POST /bulk HTTP/1.1\r\nHost: sink\r\nConnection: close\r\nContent-Length: {bytes}\r\n\r\n");
    s.write_all(head.as_bytes()).expect("write");
    send_filler(&mut s, bytes);
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("the response");
    let secs = start.elapsed().as_secs_f64();
    assert!(
        resp.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&resp)
    );
    let count = resp.get(resp.len().saturating_sub(8)..).expect("count");
    assert_eq!(
        u64::from_le_bytes(count.try_into().expect("8 bytes")),
        bytes,
        "the sink got another count"
    );
    secs
}

/// Sends `bytes` to `addr`, half-closes and waits for the sink's count; seconds taken.
fn transfer(addr: SocketAddr, bytes: u64) -> f64 {
    let mut s = connect_bounded(addr);
    let start = Instant::now();
    send_filler(&mut s, bytes);
    s.shutdown(Shutdown::Write).expect("half-close");
    let mut count = [0u8; 8];
    s.read_exact(&mut count).expect("the sink's count");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(u64::from_le_bytes(count), bytes, "the sink got another count");
    secs
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
#[ignore = "benchmark: cargo test --release -p gobalancer --test bulk -- --ignored --nocapture"]
fn bulk_transfer_splice_on_off_and_direct() {
    let bytes: u64 = env_or("BULK_BYTES", 1 << 30);
    let rounds: usize = env_or("BULK_ROUNDS", 5);
    let buffer: String = env_or("BULK_BUFFER", "16KiB".to_string());
    let http = match env_or("BULK_MODE", "tcp".to_string()).as_str() {
        "tcp" => false,
        "http" => true,
        other => panic!("BULK_MODE must be tcp or http, not {other:?}"),
    };
    let extra = format!("buffer_size: \"{buffer}\",");
    let (sink, cfg) = if http {
        let sink = start_http_sink();
        (sink, http::http_config(&[sink], &extra))
    } else {
        let sink = start_sink();
        (sink, config("round-robin", &[(sink, 1)], &extra))
    };
    let transfer = if http { transfer_http } else { transfer };
    let on = start_proxy_on(IoKind::EpollSplice, &cfg);
    let off = start_proxy_on(IoKind::Epoll, &cfg);
    let mut runs = vec![
        ("direct", sink),
        ("epoll splice on", on.addr),
        ("epoll splice off", off.addr),
    ];
    // Skipped, saying why, where io_uring cannot run or has no IORING_OP_SPLICE.
    let uring = uring_splice_or_skip("bulk (io_uring)").map(|_| {
        (
            start_proxy_on(IoKind::UringSplice, &cfg),
            start_proxy_on(IoKind::Uring, &cfg),
        )
    });
    let uring_op = uring_splice_op_or_skip("bulk (io_uring, IORING_OP_SPLICE)").map(|io| start_proxy_on(io, &cfg));
    if let Some((on, off)) = &uring {
        runs.push(("io_uring splice on", on.addr));
        runs.push(("io_uring splice off", off.addr));
    }
    if let Some(op) = &uring_op {
        runs.push(("io_uring splice op", op.addr));
    }
    let mut secs: Vec<Vec<f64>> = vec![Vec::new(); runs.len()];
    for round in 1..=rounds {
        for (i, (name, addr)) in runs.iter().enumerate() {
            let s = transfer(*addr, bytes);
            println!(
                "round {round} {name:<19} {s:.3} s {:.2} GiB/s",
                bytes as f64 / s / f64::from(1 << 30)
            );
            secs[i].push(s);
        }
    }
    let gibps: Vec<f64> = secs
        .iter_mut()
        .map(|v| bytes as f64 / median(v) / f64::from(1 << 30))
        .collect();
    let mode = if http { "L7 POST body" } else { "L4" };
    println!("{mode}: medians of {rounds} rounds, {bytes} bytes, buffer_size {buffer}:");
    for ((name, _), g) in runs.iter().zip(&gibps) {
        println!("{name:<19} {g:.2} GiB/s, {:.3} of direct", g / gibps[0]);
    }
}
