//! Configuration hot reload over loopback: a removed backend drains (its open
//! connections keep flowing until the drain deadline, then are reset and counted), a bad
//! reload changes nothing and fails no request, active counters and health state carry
//! over to the new generation.
//!
//! The drain test runs on each I/O backend (`epoll::NAME`, `uring::NAME`; the latter is
//! skipped, saying why, where the machine lacks io_uring) and with splice on
//! (`splice::NAME`).
// Clients run on plain threads; waits are bounded with the real clock.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use gobalancer::reload::ReloadError;
use gobalancer::testbackend::{Reply, Script};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown as NetShutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod epoll {
    #[test]
    fn removed_backend_drains_then_cuts_at_the_deadline() {
        super::removed_backend_drains_then_cuts_at_the_deadline(super::IoKind::Epoll)
    }
}

/// The same with every direction spliced from its first byte.
mod splice {
    #[test]
    fn removed_backend_drains_then_cuts_at_the_deadline() {
        super::removed_backend_drains_then_cuts_at_the_deadline(super::IoKind::EpollSplice)
    }
}

mod uring {
    #[test]
    fn removed_backend_drains_then_cuts_at_the_deadline() {
        if let Some(io) = super::uring_or_skip("uring::removed_backend_drains_then_cuts_at_the_deadline") {
            super::removed_backend_drains_then_cuts_at_the_deadline(io)
        }
    }
}

/// Short, so the test is quick; long enough that a loaded machine finishes the short
/// connection well before it.
const DRAIN: Duration = Duration::from_millis(1000);

/// Writes one byte and reads its echo.
fn ping(s: &mut TcpStream) -> std::io::Result<()> {
    s.write_all(b"x")?;
    let mut one = [0u8; 1];
    s.read_exact(&mut one)
}

/// Polls `cond` every few milliseconds until it holds.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < CLIENT_WAIT, "{what}: not within {CLIENT_WAIT:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn removed_backend_drains_then_cuts_at_the_deadline(io: IoKind) {
    let b = start_backends(vec![Script::new("e", Reply::Echo), Script::new("n", Reply::Name)]);
    let (echo, name) = (b.addrs[0], b.addrs[1]);
    let p = start_proxy_on(io, &config("round-robin", &[(echo, 1)], ""));
    // Two connections open on the echo backend: a long one and a short one.
    let mut long = connect_from(Ipv4Addr::LOCALHOST, p.addr).expect("connect");
    let mut short = connect_from(Ipv4Addr::LOCALHOST, p.addr).expect("connect");
    ping(&mut long).expect("long: echo before the reload");
    ping(&mut short).expect("short: echo before the reload");

    // The echo backend leaves the pool; the name backend joins.
    let reloaded = Instant::now();
    let report = p
        .reload(&config(
            "round-robin",
            &[(name, 1)],
            &format!("timeouts: (drain: \"{}ms\"),", DRAIN.as_millis()),
        ))
        .expect("reload applied");
    assert_eq!(report.generation, 2);
    assert_eq!(
        report.to_string(),
        "pool p: added b0, removed b0; timeouts: drain 30s -> 1s"
    );

    // The short one finishes normally, with the removed backend's real bytes.
    ping(&mut short).expect("short: echo after the reload");
    short.shutdown(NetShutdown::Write).expect("half-close");
    let mut rest = String::new();
    short.read_to_string(&mut rest).expect("clean end");
    assert_eq!(rest, "bye from e\n");
    assert!(
        reloaded.elapsed() < DRAIN,
        "the short connection took too long to test anything"
    );
    // No new connection reaches the removed backend.
    for _ in 0..10 {
        assert_eq!(fetch_name(p.addr).expect("served"), "n");
    }

    // The long one keeps flowing until the deadline, then is reset.
    let mut pings_after_reload = 0;
    let cut = loop {
        long.set_read_timeout(Some(CLIENT_WAIT)).expect("timeout");
        if let Err(e) = ping(&mut long) {
            break e;
        }
        pings_after_reload += 1;
        // Wait a little, on a read: an RST arriving meanwhile ends it at once.
        long.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
        let mut one = [0u8; 1];
        match long.read(&mut one) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => break e,
            Ok(n) => panic!("unexpected {n} bytes on the long connection"),
        }
        assert!(reloaded.elapsed() < DRAIN + CLIENT_WAIT, "never cut");
    };
    let at = reloaded.elapsed();
    assert!(
        matches!(cut.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
        "reset, not a clean end: {cut:?}"
    );
    assert!(at >= DRAIN, "cut after {at:?}, before the drain timeout");
    assert!(at < DRAIN + Duration::from_secs(3), "cut only after {at:?}");
    assert!(
        pings_after_reload >= 3,
        "the long connection kept flowing: {pings_after_reload} pings"
    );

    p.assert_counters_return_to_zero();
    let old = &p.shared.pools[0];
    let stats = &p.current().pools[0].stats;
    wait_for("the cut is counted", || {
        stats.drained_cut_total.load(Ordering::Relaxed) == 1
    });
    assert_eq!(old.targets[0].drain.cut(), 1, "only the long connection was cut");
    assert_eq!(old.targets[0].drain.open(), 0);
    assert!(
        Arc::ptr_eq(&old.stats, stats),
        "one counter for every generation of the pool"
    );
}

#[test]
fn a_bad_reload_keeps_the_old_config_serving_and_is_counted() {
    let b = start_backends(vec![Script::new("a", Reply::Name), Script::new("b", Reply::Name)]);
    let list = [(b.addrs[0], 1), (b.addrs[1], 1)];
    let p = start_proxy(&config("round-robin", &list, ""));
    // A client keeps fetching through every reload attempt.
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = {
        let (stop, served, failed, addr) = (stop.clone(), served.clone(), failed.clone(), p.addr);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match fetch_name(addr) {
                    Ok(n) if n == "a" || n == "b" => served.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    wait_for("traffic before the reloads", || served.load(Ordering::Relaxed) >= 20);

    // A syntax error (a missing comma), located.
    let syntax = "(\n  listeners: [(name: \"t\", bind: \"127.0.0.1:1\" pool: \"p\")],\n  pools: [],\n)";
    let err = p.reload(syntax).expect_err("syntax error");
    assert!(matches!(err, ReloadError::Invalid(_)), "{err:?}");
    assert!(err.to_string().starts_with("<reload>:2:"), "{err}");
    // Semantically invalid: the same backend twice, every problem located.
    let dup = config("round-robin", &[(b.addrs[0], 1), (b.addrs[0], 1)], "");
    let err = p.reload(&dup).expect_err("duplicate backend");
    assert!(err.to_string().contains("<reload>:2:"), "{err}");
    assert!(err.to_string().contains("pools[0].backends[1]"), "{err}");
    // Valid, but a process setting changed: needs a restart.
    let err = p
        .reload(&config("round-robin", &list, "max_connections: 5,"))
        .expect_err("restart needed");
    assert_eq!(
        err.to_string(),
        "listener/process changes need a restart: max_connections 10000 -> 5"
    );

    let before = served.load(Ordering::Relaxed);
    wait_for("traffic after the reloads", || {
        served.load(Ordering::Relaxed) >= before + 20
    });
    stop.store(true, Ordering::Relaxed);
    client.join().expect("client thread");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "a bad reload failed requests");
    assert_eq!(p.live.reloads.failures(), 3);
    assert_eq!(p.live.reloads.successes(), 0);
    assert_eq!(p.live.reloads.generation(), 1);
    assert!(
        Arc::ptr_eq(&p.current(), &p.shared),
        "the first generation is still in force"
    );
    p.assert_counters_return_to_zero();
}

/// Opens a connection through a `Reply::Name` backend and keeps it open. Returns the
/// stream and the backend's name.
fn hold(addr: SocketAddr) -> (TcpStream, String) {
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

#[test]
fn a_connection_open_across_a_reload_is_counted_once_on_its_kept_backend() {
    let b = start_backends(vec![
        Script::new("b0", Reply::Name),
        Script::new("b1", Reply::Name),
        Script::new("b2", Reply::Name),
    ]);
    let p = start_proxy(&config("least-connections", &[(b.addrs[0], 1), (b.addrs[1], 1)], ""));
    let (held, busy) = hold(p.addr);
    let busy_addr = if busy == "b0" { b.addrs[0] } else { b.addrs[1] };
    // A backend joins; both old ones stay (in a new order).
    let next = [(b.addrs[2], 1), (b.addrs[1], 1), (b.addrs[0], 1)];
    p.reload(&config("least-connections", &next, ""))
        .expect("reload applied");
    let new = p.current();
    let idx = new.pools[0]
        .targets
        .iter()
        .position(|t| t.addr == busy_addr)
        .expect("kept");
    // The held connection counts on its backend in the new generation, once in all.
    assert_eq!(new.pools[0].balancer.active(idx), 1);
    assert_eq!(p.shared.total_active() + new.total_active(), 1);
    // Least-connections sees it: new connections avoid the busy backend.
    for _ in 0..12 {
        let n = fetch_name(p.addr).expect("served");
        assert_ne!(n, busy, "picked the backend with the open connection");
    }
    drop(held);
    p.assert_counters_return_to_zero();
    wait_for("the new generation's count is back to zero", || {
        new.pools[0].balancer.active(idx) == 0
    });
}

#[test]
fn a_backend_down_on_its_checks_stays_out_after_a_reload_that_keeps_it() {
    let b = start_backends(vec![Script::new("a", Reply::Name), Script::new("c", Reply::Name)]);
    let dead = closed_port();
    let checks = "health_check: (kind: \"tcp\", interval: \"50ms\", timeout: \"40ms\", rise: 2, fall: 1), \
                  passive: (consecutive_failures: 0),";
    let pool = |backends: &[(SocketAddr, &str)]| {
        let list: Vec<String> = backends
            .iter()
            .map(|(a, n)| format!("(address: \"{a}\", name: \"{n}\")"))
            .collect();
        format!(
            "(listeners: [(bind: \"127.0.0.1:1\", pool: \"p\")],
              pools: [(name: \"p\", algorithm: \"weighted\", {checks} backends: [{}])])",
            list.join(", ")
        )
    };
    let p = start_proxy(&pool(&[(b.addrs[0], "a"), (dead, "dead")]));
    let first = p.shared.pools[0].health.clone();
    wait_for("dead is down", || !first.snapshot(balancer_now())[1].checks_up);

    // A backend joins; `dead` stays. Its state carries over: still down at once, before
    // any probe of the new generation.
    p.reload(&pool(&[(b.addrs[1], "c"), (dead, "dead"), (b.addrs[0], "a")]))
        .expect("reload applied");
    let monitor = p.current().pools[0].health.clone();
    let snap = monitor.snapshot(balancer_now());
    assert!(!snap[1].checks_up && snap[1].weight == 0, "{snap:?}");
    assert!(snap[0].checks_up && snap[2].checks_up, "{snap:?}");
    assert!(first.is_retired());
    for _ in 0..20 {
        let n = fetch_name(p.addr).expect("served");
        assert!(n == "a" || n == "c", "{n}");
    }
    // The new generation's probes keep it down.
    std::thread::sleep(Duration::from_millis(200));
    let snap = monitor.snapshot(balancer_now());
    assert!(!snap[1].checks_up && snap[1].weight == 0, "{snap:?}");
    assert!(snap[1].last_probe.contains("connect failed"), "{snap:?}");
    p.assert_counters_return_to_zero();
}

#[test]
fn a_passively_ejected_backend_stays_ejected_after_a_reload_that_keeps_it() {
    let b = start_backends(vec![Script::new("a", Reply::Name), Script::new("c", Reply::Name)]);
    let dead = closed_port();
    let pool = |backends: &[(SocketAddr, &str)]| {
        let list: Vec<String> = backends
            .iter()
            .map(|(a, n)| format!("(address: \"{a}\", name: \"{n}\")"))
            .collect();
        format!(
            "(listeners: [(bind: \"127.0.0.1:1\", pool: \"p\")],
              pools: [(name: \"p\", passive: (consecutive_failures: 2, ejection: \"30s\", max_ejection: \"60s\", max_ejected_percent: 50),
                       backends: [{}])])",
            list.join(", ")
        )
    };
    let p = start_proxy(&pool(&[(b.addrs[0], "a"), (dead, "dead")]));
    for _ in 0..6 {
        assert_eq!(fetch_name(p.addr).expect("served by a after failover"), "a");
    }
    let stats = p.shared.pools[0].health.stats.clone();
    assert_eq!(stats.ejections_total.load(Ordering::Relaxed), 1);

    p.reload(&pool(&[(dead, "dead"), (b.addrs[0], "a"), (b.addrs[1], "c")]))
        .expect("reload applied");
    let monitor = p.current().pools[0].health.clone();
    let snap = monitor.snapshot(balancer_now());
    assert!(snap[0].ejected && snap[0].weight == 0, "{snap:?}");
    for _ in 0..20 {
        let n = fetch_name(p.addr).expect("served");
        assert!(n == "a" || n == "c", "{n}");
    }
    // Never tried again: no new ejection, no refused connect counted; the counters are
    // the pool's, shared by both generations.
    assert!(Arc::ptr_eq(&stats, &monitor.stats));
    assert_eq!(stats.ejections_total.load(Ordering::Relaxed), 1);
    p.assert_counters_return_to_zero();
}

#[test]
fn a_backend_added_by_a_reload_ramps_through_slow_start() {
    let b = start_backends(vec![Script::new("a", Reply::Name), Script::new("c", Reply::Name)]);
    let pool = |backends: &[(SocketAddr, &str)]| {
        let list: Vec<String> = backends
            .iter()
            .map(|(a, n)| format!("(address: \"{a}\", name: \"{n}\")"))
            .collect();
        format!(
            "(listeners: [(bind: \"127.0.0.1:1\", pool: \"p\")],
              pools: [(name: \"p\", algorithm: \"weighted\", slow_start: \"1s\", backends: [{}])])",
            list.join(", ")
        )
    };
    let p = start_proxy(&pool(&[(b.addrs[0], "a")]));
    p.reload(&pool(&[(b.addrs[0], "a"), (b.addrs[1], "c")]))
        .expect("reload applied");
    let monitor = p.current().pools[0].health.clone();
    let full = monitor.snapshot(balancer_now())[0].weight;
    let first = monitor.snapshot(balancer_now())[1].weight;
    assert!(first > 0 && first < full / 2, "c starts low: {first} of {full}");
    wait_for("c at full weight", || {
        monitor.snapshot(balancer_now())[1].weight == full
    });
    p.assert_counters_return_to_zero();
}

/// Regression (review): a backend kept by one reload and removed by a later one must
/// drain the connections of every generation that uses it, not only those opened in the
/// generation just before the removal.
#[test]
fn a_drain_reaches_connections_from_older_generations() {
    let b = start_backends(vec![Script::new("e", Reply::Echo), Script::new("n", Reply::Name)]);
    let (echo, name) = (b.addrs[0], b.addrs[1]);
    let drain = format!("timeouts: (drain: \"{}ms\"),", DRAIN.as_millis());
    let p = start_proxy(&config("weighted", &[(echo, 1)], &drain));
    let mut long = connect_from(Ipv4Addr::LOCALHOST, p.addr).expect("connect");
    ping(&mut long).expect("echo in generation 1");
    // Generation 2 keeps the echo backend (the pool changes: a backend joins)...
    p.reload(&config("weighted", &[(echo, 1), (name, 1)], &drain))
        .expect("reload 2");
    ping(&mut long).expect("still flowing in generation 2");
    // ...generation 3 removes it: the connection from generation 1 is cut at the deadline.
    let removed = Instant::now();
    p.reload(&config("weighted", &[(name, 1)], &drain)).expect("reload 3");
    long.set_read_timeout(Some(CLIENT_WAIT)).expect("timeout");
    let mut buf = [0u8; 16];
    let end = loop {
        match long.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(_) => continue,
            Err(e) => break Err(e.kind()),
        }
    };
    assert_eq!(end, Err(ErrorKind::ConnectionReset), "cut with a reset");
    let at = removed.elapsed();
    assert!(at >= DRAIN && at < DRAIN + CLIENT_WAIT, "cut after {at:?}");
    p.assert_counters_return_to_zero();
}
