//! Benchmark, not a timed test (ignored by default): one bulk transfer (1 GiB by default)
//! over one connection, directly to a loopback sink and through one-worker L4 proxies
//! with `--splice auto` (from the first byte) and with `--splice off`, on the epoll
//! backend and, where io_uring can splice, on the io_uring backend, in alternating
//! rounds; prints the medians and the ratios to direct.
//!
//! `cargo test --release -p gobalancer --test bulk -- --ignored --nocapture`, with
//! `BULK_BYTES` (1073741824), `BULK_ROUNDS` (5) and `BULK_BUFFER` (the proxy's
//! `buffer_size`, "16KiB").
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

/// A sink on a loopback port: per connection, reads to EOF, replies with the count (8
/// bytes, little endian) and closes.
fn start_sink() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind sink");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
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
            });
        }
    });
    addr
}

/// Sends `bytes` to `addr`, half-closes and waits for the sink's count; seconds taken.
fn transfer(addr: SocketAddr, bytes: u64) -> f64 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(TRANSFER_LIMIT)).expect("timeout");
    s.set_write_timeout(Some(TRANSFER_LIMIT)).expect("timeout");
    let buf = vec![0x5a_u8; CHUNK];
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let k = left.min(CHUNK as u64) as usize;
        s.write_all(&buf[..k]).expect("write");
        left -= k as u64;
    }
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
    let sink = start_sink();
    let cfg = config("round-robin", &[(sink, 1)], &format!("buffer_size: \"{buffer}\","));
    let on = start_proxy_on(IoKind::EpollSplice, &cfg);
    let off = start_proxy_on(IoKind::Epoll, &cfg);
    let mut runs = vec![
        ("direct", sink),
        ("epoll splice on", on.addr),
        ("epoll splice off", off.addr),
    ];
    // Skipped, saying why, where io_uring cannot splice.
    let uring = uring_splice_or_skip("bulk (io_uring)").map(|_| {
        (
            start_proxy_on(IoKind::UringSplice, &cfg),
            start_proxy_on(IoKind::Uring, &cfg),
        )
    });
    if let Some((on, off)) = &uring {
        runs.push(("io_uring splice on", on.addr));
        runs.push(("io_uring splice off", off.addr));
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
    println!("medians of {rounds} rounds, {bytes} bytes, buffer_size {buffer}:");
    for ((name, _), g) in runs.iter().zip(&gibps) {
        println!("{name:<19} {g:.2} GiB/s, {:.3} of direct", g / gibps[0]);
    }
}
