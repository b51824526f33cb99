//! L4 TCP balancing over loopback, with three real test backends: each algorithm's
//! distribution, failover past a stopped or black-holed backend, half-close, idle
//! timeout, reset on backend failure, the connection limit, and counters back to zero.
//!
//! Every test runs four times, with the balancer on each I/O backend: `epoll::NAME`
//! (tokio), `splice::NAME` (tokio splicing every direction from its first byte),
//! `uring::NAME` (io_uring; skipped, saying why, where the machine lacks it) and
//! `uring_splice::NAME` (io_uring splicing every direction from its first byte; skipped
//! where io_uring or its splice is unavailable).
// A raw backend thread scripts a mid-stream reset; the balancer itself runs on its workers.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use gobalancer::testbackend::{Reply, Script};
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Generates `epoll::NAME`, `splice::NAME`, `uring::NAME` and `uring_splice::NAME`
/// tests calling `NAME(io)`.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod epoll {
            $(
                #[test]
                fn $name() {
                    super::$name(super::IoKind::Epoll)
                }
            )*
        }
        mod splice {
            $(
                #[test]
                fn $name() {
                    super::$name(super::IoKind::EpollSplice)
                }
            )*
        }
        mod uring {
            $(
                #[test]
                fn $name() {
                    if let Some(io) = super::uring_or_skip(concat!("uring::", stringify!($name))) {
                        super::$name(io)
                    }
                }
            )*
        }
        mod uring_splice {
            $(
                #[test]
                fn $name() {
                    if let Some(io) = super::uring_splice_or_skip(concat!("uring_splice::", stringify!($name))) {
                        super::$name(io)
                    }
                }
            )*
        }
        mod uring_splice_op {
            $(
                #[test]
                fn $name() {
                    if let Some(io) = super::uring_splice_op_or_skip(concat!("uring_splice_op::", stringify!($name))) {
                        super::$name(io)
                    }
                }
            )*
        }
    };
}

on_every_backend!(
    round_robin_rotates_exactly,
    weighted_every_prefix_within_one_pick_of_its_share,
    least_connections_rotates_ties_and_avoids_the_busy_backend,
    power_of_two_serves_everyone_and_spreads,
    consistent_hash_keeps_each_client_on_its_backend,
    stopped_backend_is_skipped_without_failing_a_client,
    half_close_reaches_the_backend_and_the_reply_comes_back,
    urgent_data_is_stepped_over_as_a_plain_read_would,
    idle_connection_is_closed_at_the_idle_timeout,
    black_holed_backend_times_out_and_the_next_one_serves,
    backend_failing_mid_stream_resets_the_client,
    no_reachable_backend_resets_the_client,
    connection_limit_holds_new_connections_in_the_backlog,
);

fn name_backends(names: &[&str]) -> Backends {
    start_backends(names.iter().map(|n| Script::new(*n, Reply::Name)).collect())
}

fn weighted(b: &Backends, weights: &[u32]) -> Vec<(SocketAddr, u32)> {
    b.addrs.iter().copied().zip(weights.iter().copied()).collect()
}

fn counts(names: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in names {
        *m.entry(n.clone()).or_default() += 1;
    }
    m
}

fn round_robin_rotates_exactly(io: IoKind) {
    let b = name_backends(&["a", "b", "c"]);
    let p = start_proxy_on(io, &config("round-robin", &weighted(&b, &[1, 5, 1]), ""));
    let names: Vec<String> = (0..300).map(|_| fetch_name(p.addr).expect("served")).collect();
    let order = ["a", "b", "c"];
    let first = order.iter().position(|n| *n == names[0]).expect("known name");
    for (i, n) in names.iter().enumerate() {
        assert_eq!(
            n,
            order[(first + i) % 3],
            "pick {i} breaks the rotation (weights are ignored)"
        );
    }
    p.assert_counters_return_to_zero();
}

fn weighted_every_prefix_within_one_pick_of_its_share(io: IoKind) {
    let b = name_backends(&["a", "b", "c"]);
    let weights = [1u32, 2, 3];
    let p = start_proxy_on(io, &config("weighted", &weighted(&b, &weights), ""));
    let names: Vec<String> = (0..300).map(|_| fetch_name(p.addr).expect("served")).collect();
    let total: u32 = weights.iter().sum();
    let mut seen = [0f64; 3];
    for (i, n) in names.iter().enumerate() {
        let idx = ["a", "b", "c"].iter().position(|x| x == n).expect("known name");
        seen[idx] += 1.0;
        let picks = (i + 1) as f64;
        for (j, w) in weights.iter().enumerate() {
            let ideal = picks * f64::from(*w) / f64::from(total);
            assert!(
                (seen[j] - ideal).abs() < 1.0,
                "after {picks} picks backend {j} has {} (ideal {ideal})",
                seen[j]
            );
        }
    }
    p.assert_counters_return_to_zero();
}

/// Opens a connection through a `Reply::Name` backend and keeps it open: the backend
/// waits for our FIN, so it stays active. Returns the stream and the backend's name.
fn hold(addr: SocketAddr) -> (std::net::TcpStream, String) {
    let mut s = connect_from(Ipv4Addr::LOCALHOST, addr).expect("connect");
    let mut line = Vec::new();
    let mut one = [0u8; 1];
    while !line.ends_with(b"\n") {
        s.read_exact(&mut one).expect("name");
        line.push(one[0]);
    }
    line.pop();
    (s, String::from_utf8_lossy(&line).into_owned())
}

fn least_connections_rotates_ties_and_avoids_the_busy_backend(io: IoKind) {
    let b = name_backends(&["a", "b", "c"]);
    let p = start_proxy_on(io, &config("least-connections", &weighted(&b, &[1, 1, 1]), ""));
    // Sequential connections leave every counter at zero: ties rotate evenly.
    let names: Vec<String> = (0..30).map(|_| fetch_name(p.addr).expect("served")).collect();
    let c = counts(&names);
    assert!(c.values().all(|n| *n == 10), "{c:?}");
    // A held connection makes its backend the busiest: it is not picked while the
    // others are idle.
    let (held, busy) = hold(p.addr);
    for _ in 0..20 {
        assert_ne!(fetch_name(p.addr).expect("served"), busy, "picked the busiest backend");
    }
    drop(held);
    p.assert_counters_return_to_zero();
}

fn power_of_two_serves_everyone_and_spreads(io: IoKind) {
    let b = name_backends(&["a", "b", "c"]);
    let p = start_proxy_on(io, &config("power-of-two", &weighted(&b, &[1, 1, 1]), ""));
    let names: Vec<String> = (0..300).map(|_| fetch_name(p.addr).expect("served")).collect();
    let c = counts(&names);
    assert_eq!(c.len(), 3, "{c:?}");
    assert!(c.values().all(|n| *n >= 30), "{c:?}");
    p.assert_counters_return_to_zero();
}

fn consistent_hash_keeps_each_client_on_its_backend(io: IoKind) {
    let b = name_backends(&["a", "b", "c"]);
    let p = start_proxy_on(io, &config("consistent-hash", &weighted(&b, &[1, 1, 1]), ""));
    let mut by_client = BTreeMap::new();
    for round in 0..5 {
        for host in 2..=41u8 {
            let ip = Ipv4Addr::new(127, 0, 0, host);
            let n = fetch_name_from(ip, p.addr).expect("served");
            let first = by_client.entry(host).or_insert_with(|| n.clone());
            assert_eq!(*first, n, "client {ip} moved in round {round}");
        }
    }
    let used: std::collections::BTreeSet<&String> = by_client.values().collect();
    assert!(used.len() >= 2, "40 clients all hashed to one backend: {by_client:?}");
    p.assert_counters_return_to_zero();
}

fn stopped_backend_is_skipped_without_failing_a_client(io: IoKind) {
    let b = name_backends(&["a", "c"]);
    let stopped = closed_port();
    let list = vec![(b.addrs[0], 1), (stopped, 1), (b.addrs[1], 1)];
    for algorithm in [
        "round-robin",
        "weighted",
        "least-connections",
        "power-of-two",
        "consistent-hash",
    ] {
        let p = start_proxy_on(io, &config(algorithm, &list, ""));
        for i in 0..60 {
            let n = fetch_name(p.addr).unwrap_or_else(|e| panic!("{algorithm}: connection {i} failed: {e}"));
            assert!(n == "a" || n == "c", "{algorithm}: {n}");
        }
        p.assert_counters_return_to_zero();
    }
}

fn half_close_reaches_the_backend_and_the_reply_comes_back(io: IoKind) {
    let b = start_backends(vec![Script::new("e", Reply::Echo)]);
    let p = start_proxy_on(io, &config("round-robin", &weighted(&b, &[1]), ""));
    let got = exchange(p.addr, b"ping").expect("exchange");
    assert_eq!(got, b"pingbye from e\n");
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let got = exchange(p.addr, &big).expect("exchange");
    assert_eq!(&got[..big.len()], &big[..], "bulk bytes arrive intact");
    assert_eq!(&got[big.len()..], b"bye from e\n");
    p.assert_counters_return_to_zero();
}

/// TCP urgent data (MSG_OOB) in the middle of a stream: the bytes around it arrive and the
/// urgent byte is stepped over, as a plain read does (gobalancer forwards no out-of-band
/// data). Splicing stops at the urgent mark (splice(2) says EAGAIN there for ever), so a
/// splicing direction goes on by copying: without that the bytes after the mark never
/// arrived, and on io_uring the worker spun on a readable socket that splice would not read.
fn urgent_data_is_stepped_over_as_a_plain_read_would(io: IoKind) {
    let b = start_backends(vec![Script::new("e", Reply::Echo)]);
    let p = start_proxy_on(io, &config("round-robin", &weighted(&b, &[1]), ""));
    let before: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
    let after: Vec<u8> = (0..150_000u32).map(|i| (i % 241) as u8).collect();
    let mut s = connect_from(Ipv4Addr::LOCALHOST, p.addr).expect("connect");
    s.write_all(&before).expect("write");
    // Let the proxy splice what came before the mark.
    std::thread::sleep(Duration::from_millis(50));
    socket2::SockRef::from(&s).send_out_of_band(b"U").expect("urgent byte");
    s.write_all(&after).expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("half-close");
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("the echo, then EOF");
    let mut want = before.clone();
    want.extend_from_slice(&after);
    want.extend_from_slice(b"bye from e\n");
    assert!(
        got == want,
        "{io:?}: {} bytes back, {} expected (first difference at {:?})",
        got.len(),
        want.len(),
        got.iter().zip(&want).position(|(a, b)| a != b)
    );
    p.assert_counters_return_to_zero();
}

fn idle_connection_is_closed_at_the_idle_timeout(io: IoKind) {
    let b = start_backends(vec![Script::new("e", Reply::Echo)]);
    let p = start_proxy_on(
        io,
        &config("round-robin", &weighted(&b, &[1]), "timeouts: (idle: \"300ms\"),"),
    );
    let mut s = connect_from(Ipv4Addr::LOCALHOST, p.addr).expect("connect");
    // Activity keeps it open...
    for _ in 0..3 {
        s.write_all(b"x").expect("write");
        let mut one = [0u8; 1];
        s.read_exact(&mut one).expect("echo");
        std::thread::sleep(Duration::from_millis(100));
    }
    // ...silence closes it.
    let mut rest = Vec::new();
    let n = s
        .read_to_end(&mut rest)
        .expect("closed cleanly, not timed out on the client side");
    assert_eq!(n, 0);
    p.assert_counters_return_to_zero();
}

fn black_holed_backend_times_out_and_the_next_one_serves(io: IoKind) {
    // A listener with a backlog of 0 whose queue is already full drops further SYNs: a
    // black hole on loopback.
    let hole = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    hole.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).expect("bind");
    hole.listen(0).expect("listen");
    let hole_addr = hole.local_addr().expect("addr").as_socket().expect("inet");
    let _filler = std::net::TcpStream::connect(hole_addr).expect("fill the queue");
    let b = name_backends(&["good"]);
    let p = start_proxy_on(
        io,
        &config(
            "round-robin",
            &[(hole_addr, 1), (b.addrs[0], 1)],
            "timeouts: (connect: \"200ms\"),",
        ),
    );
    for _ in 0..4 {
        assert_eq!(fetch_name(p.addr).expect("served by the next backend"), "good");
    }
    p.assert_counters_return_to_zero();
}

/// Reads until the stream ends; returns the bytes and how it ended.
fn read_until_end(s: &mut std::net::TcpStream) -> (Vec<u8>, Result<(), ErrorKind>) {
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) => return (got, Err(e.kind())),
        }
    }
}

fn backend_failing_mid_stream_resets_the_client(io: IoKind) {
    let backend = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = backend.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut s, _) = backend.accept().expect("accept");
        s.write_all(b"partial").expect("write");
        std::thread::sleep(Duration::from_millis(50));
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .expect("linger");
        drop(s);
    });
    let p = start_proxy_on(io, &config("round-robin", &[(addr, 1)], ""));
    let mut s = connect_from(Ipv4Addr::LOCALHOST, p.addr).expect("connect");
    let (got, end) = read_until_end(&mut s);
    server.join().expect("backend thread");
    assert!(b"partial".starts_with(&got), "{got:?}");
    assert_eq!(
        end,
        Err(ErrorKind::ConnectionReset),
        "a cut stream must not look complete"
    );
    p.assert_counters_return_to_zero();
}

fn no_reachable_backend_resets_the_client(io: IoKind) {
    let p = start_proxy_on(io, &config("round-robin", &closed_ports::<2>().map(|a| (a, 1)), ""));
    let mut s = connect_from(Ipv4Addr::LOCALHOST, p.addr).expect("connect");
    let (got, end) = read_until_end(&mut s);
    assert!(got.is_empty());
    assert_eq!(end, Err(ErrorKind::ConnectionReset));
    p.assert_counters_return_to_zero();
}

fn connection_limit_holds_new_connections_in_the_backlog(io: IoKind) {
    let b = start_backends(vec![Script::new("e", Reply::Echo)]);
    let p = start_proxy_on(io, &config("round-robin", &weighted(&b, &[1]), "max_connections: 2,"));
    let echo = |s: &mut std::net::TcpStream| {
        s.write_all(b"x").expect("write");
        let mut one = [0u8; 1];
        s.read_exact(&mut one).map(|_| one[0])
    };
    let mut first = connect_from(Ipv4Addr::LOCALHOST, p.addr).expect("connect");
    let mut second = connect_from(Ipv4Addr::LOCALHOST, p.addr).expect("connect");
    assert_eq!(echo(&mut first).expect("served"), b'x');
    assert_eq!(echo(&mut second).expect("served"), b'x');
    // The third is accepted by the kernel but not by the balancer until a slot frees up.
    let mut third = connect_from(Ipv4Addr::LOCALHOST, p.addr).expect("connect");
    third
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let waited = echo(&mut third).expect_err("not served while at the limit");
    assert!(
        matches!(waited.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{waited}"
    );
    drop(first);
    third.set_read_timeout(Some(CLIENT_WAIT)).expect("timeout");
    let mut one = [0u8; 1];
    third.read_exact(&mut one).expect("served once a slot is free");
    assert_eq!(one[0], b'x');
    assert!(
        p.shared
            .conn_limit
            .saturated_total
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    drop((second, third));
    p.assert_counters_return_to_zero();
}

/// Regression (review): connections still open when the shutdown drain deadline passes
/// are reset, not closed with a FIN that would look like a complete stream.
#[test]
fn shutdown_resets_connections_left_at_the_drain_deadline() {
    let b = name_backends(&["a"]);
    let p = start_proxy(&config(
        "round-robin",
        &weighted(&b, &[1]),
        "timeouts: (drain: \"200ms\"),",
    ));
    let (mut held, name) = hold(p.addr);
    assert_eq!(name, "a");
    // Stops accepting, waits out the drain timeout, cuts what is left, and joins.
    drop(p);
    held.set_read_timeout(Some(CLIENT_WAIT)).expect("timeout");
    let mut buf = [0u8; 8];
    let err = held.read(&mut buf).expect_err("reset, not a clean end");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
}
