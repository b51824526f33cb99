//! Health checking over loopback: a backend whose health endpoint starts failing stops
//! receiving new connections and comes back through slow start; a flapping endpoint
//! never changes state; all backends down gives the configured behaviour at once.
// Scripted backends run on plain threads; waits are bounded with the real clock.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An HTTP backend whose `/health` answers 200 or 503 as a switch says, and whose other
/// paths answer 200 with its name. One thread per connection; stops when dropped.
struct HealthBackend {
    addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    /// When set, `/health` alternates 200 and 503 on every probe.
    flapping: Arc<AtomicBool>,
    probes: Arc<AtomicU64>,
    served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl HealthBackend {
    fn start(name: &'static str) -> HealthBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let b = HealthBackend {
            addr: listener.local_addr().expect("addr"),
            healthy: Arc::new(AtomicBool::new(true)),
            flapping: Arc::new(AtomicBool::new(false)),
            probes: Arc::new(AtomicU64::new(0)),
            served: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (healthy, flapping, probes, served, stop) = (
            b.healthy.clone(),
            b.flapping.clone(),
            b.probes.clone(),
            b.served.clone(),
            b.stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (mut s, _) = match listener.accept() {
                    Ok(c) => c,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                    Err(_) => continue,
                };
                let (healthy, flapping, probes, served) =
                    (healthy.clone(), flapping.clone(), probes.clone(), served.clone());
                std::thread::spawn(move || {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(CLIENT_WAIT));
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                        match s.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let reply = if head.starts_with(b"GET /health ") {
                        let n = probes.fetch_add(1, Ordering::Relaxed);
                        let ok = if flapping.load(Ordering::Relaxed) {
                            n % 2 == 0
                        } else {
                            healthy.load(Ordering::Relaxed)
                        };
                        if ok {
                            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n".to_string()
                        } else {
                            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\nConnection: close\r\n\r\ndown\n"
                                .to_string()
                        }
                    } else {
                        served.fetch_add(1, Ordering::Relaxed);
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}\n",
                            name.len() + 1
                        )
                    };
                    let _ = s.write_all(reply.as_bytes());
                });
            }
        });
        b
    }
}

impl Drop for HealthBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The balancer's clock (the tokio backend's clock is process-wide).
fn now() -> gobalancer::io::Instant {
    use gobalancer::io::Env;
    gobalancer::io::tokio::TokioEnv::new().now()
}

/// One HTTP request through the (L4) balancer; returns the backend's name.
fn get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(CLIENT_WAIT))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.lines().last().unwrap_or_default().to_string())
}

fn pool_config(backends: &[&HealthBackend], health: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("(address: \"{}\", name: \"b{i}\")", b.addr))
        .collect();
    format!(
        "(listeners: [(bind: \"127.0.0.1:1\", pool: \"p\")],
          pools: [(name: \"p\", algorithm: \"weighted\", {health} backends: [{}])])",
        list.join(", ")
    )
}

/// Polls `cond` every few milliseconds until it holds; returns how long that took.
fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

#[test]
fn failing_backend_is_taken_out_and_returns_through_slow_start() {
    let a = HealthBackend::start("a");
    let b = HealthBackend::start("b");
    let interval = Duration::from_millis(100);
    let timeout = Duration::from_millis(50);
    let (rise, fall) = (2u32, 2u32);
    let p = start_proxy(&pool_config(
        &[&a, &b],
        "health_check: (kind: \"http\", path: \"/health\", interval: \"100ms\", timeout: \"50ms\", rise: 2, fall: 2),
         passive: (consecutive_failures: 0), slow_start: \"2s\",",
    ));
    let monitor = p.shared.pools[0].health.clone();
    let weight_of_b = || monitor.snapshot(now())[1].weight;
    wait_for(CLIENT_WAIT, "first probes of b", || {
        b.probes.load(Ordering::Relaxed) >= 2
    });
    let names: Vec<String> = (0..10).map(|_| get(p.addr).expect("served")).collect();
    assert!(names.iter().any(|n| n == "b"), "{names:?}");

    // b's health endpoint starts failing: it is taken out within fall x interval (+10%
    // jitter) + timeout. The bound is generous: this machine is shared and noisy; the
    // simulation checks the exact bound.
    b.healthy.store(false, Ordering::Relaxed);
    let bound = interval * fall + interval / 10 * fall + timeout;
    let took = wait_for(CLIENT_WAIT, "b taken out", || weight_of_b() == 0);
    assert!(took <= bound + Duration::from_secs(2), "took {took:?}, bound {bound:?}");
    let served_before = b.served.load(Ordering::Relaxed);
    for _ in 0..30 {
        assert_eq!(get(p.addr).expect("served by a"), "a");
    }
    assert_eq!(
        b.served.load(Ordering::Relaxed),
        served_before,
        "no new connection reached b"
    );

    // b recovers: back after `rise` good probes, at a low weight that ramps up.
    b.healthy.store(true, Ordering::Relaxed);
    let _ = rise;
    wait_for(CLIENT_WAIT, "b back", || weight_of_b() > 0);
    let full = monitor.snapshot(now())[0].weight;
    let first = weight_of_b();
    assert!(first < full / 2, "b restarts low: {first} of {full}");
    let mut last = first;
    wait_for(CLIENT_WAIT, "b at full weight", || {
        let w = weight_of_b();
        assert!(w >= last, "the ramp never goes down: {last} then {w}");
        last = w;
        w == full
    });
    let names: Vec<String> = (0..20).map(|_| get(p.addr).expect("served")).collect();
    assert_eq!(
        names.iter().filter(|n| *n == "b").count(),
        10,
        "round robin again: {names:?}"
    );
    p.assert_counters_return_to_zero();
}

#[test]
fn flapping_health_endpoint_never_changes_state() {
    let a = HealthBackend::start("a");
    let b = HealthBackend::start("b");
    b.flapping.store(true, Ordering::Relaxed);
    let p = start_proxy(&pool_config(
        &[&a, &b],
        "health_check: (kind: \"http\", path: \"/health\", interval: \"30ms\", timeout: \"20ms\", rise: 2, fall: 3),",
    ));
    wait_for(CLIENT_WAIT, "20 probes of b", || b.probes.load(Ordering::Relaxed) >= 20);
    let monitor = &p.shared.pools[0].health;
    assert_eq!(monitor.stats.transitions_total.load(Ordering::Relaxed), 0);
    assert!(monitor.snapshot(now())[1].weight > 0);
    let names: Vec<String> = (0..10).map(|_| get(p.addr).expect("served")).collect();
    assert_eq!(names.iter().filter(|n| *n == "b").count(), 5, "{names:?}");
}

#[test]
fn all_backends_down_refuses_at_once_or_fails_open_as_configured() {
    let a = HealthBackend::start("a");
    let b = HealthBackend::start("b");
    a.healthy.store(false, Ordering::Relaxed);
    b.healthy.store(false, Ordering::Relaxed);
    let checks =
        "health_check: (kind: \"http\", path: \"/health\", interval: \"30ms\", timeout: \"20ms\", rise: 1, fall: 1),";
    let refuse = start_proxy(&pool_config(&[&a, &b], checks));
    let open = start_proxy(&pool_config(
        &[&a, &b],
        &format!("{checks} when_all_down: \"fail-open\","),
    ));
    for p in [&refuse, &open] {
        let m = p.shared.pools[0].health.clone();
        wait_for(CLIENT_WAIT, "both down", || {
            m.snapshot(now()).iter().all(|s| !s.checks_up)
        });
    }
    // Refuse: the client is reset at once, not left hanging.
    let mut s = TcpStream::connect(refuse.addr).expect("connect");
    s.set_read_timeout(Some(CLIENT_WAIT)).expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let err = s.read(&mut buf).expect_err("reset");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    assert!(started.elapsed() < CLIENT_WAIT);
    let stats = &refuse.shared.pools[0].health.stats;
    assert!(stats.no_backend_total.load(Ordering::Relaxed) >= 1);
    assert_eq!(stats.all_down_total.load(Ordering::Relaxed), 1);
    // Fail open: every configured backend takes traffic again.
    let names: Vec<String> = (0..4)
        .map(|_| get(open.addr).expect("served while failing open"))
        .collect();
    assert_eq!(names.iter().filter(|n| *n == "a").count(), 2, "{names:?}");
    // Recovery is automatic.
    a.healthy.store(true, Ordering::Relaxed);
    wait_for(CLIENT_WAIT, "a back", || get(refuse.addr).is_ok_and(|n| n == "a"));
    refuse.assert_counters_return_to_zero();
    open.assert_counters_return_to_zero();
}

#[test]
fn refused_connects_eject_a_backend_passively_before_any_probe() {
    let a = HealthBackend::start("a");
    let dead = closed_port();
    let config = format!(
        "(listeners: [(bind: \"127.0.0.1:1\", pool: \"p\")],
          pools: [(name: \"p\", passive: (consecutive_failures: 3, ejection: \"30s\", max_ejection: \"60s\", max_ejected_percent: 50),
                   backends: [(address: \"{}\", name: \"a\"), (address: \"{dead}\", name: \"dead\")])])",
        a.addr
    );
    let p = start_proxy(&config);
    for _ in 0..10 {
        assert_eq!(get(p.addr).expect("served by a after failover"), "a");
    }
    let stats = &p.shared.pools[0].health.stats;
    assert_eq!(
        stats.ejections_total.load(Ordering::Relaxed),
        1,
        "ejected once, then skipped"
    );
    let snap = p.shared.pools[0].health.snapshot(now());
    assert!(snap[1].ejected && snap[1].weight == 0, "{snap:?}");
    p.assert_counters_return_to_zero();
}

/// Regression (review): a backend that answers 200 but never finishes its body (or keeps
/// the connection open) is healthy: the status decides, not the body's end.
#[test]
fn http_probe_is_decided_by_the_status_not_the_body() {
    use gobalancer::config::{CheckConfig, CheckKind};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut head = [0u8; 512];
        let _ = s.read(&mut head);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort");
        std::thread::sleep(Duration::from_millis(600));
    });
    let check = CheckConfig {
        kind: CheckKind::http("/health"),
        timeout: Duration::from_millis(200),
        ..CheckConfig::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = rt.block_on(async {
        let env = gobalancer::io::tokio::TokioEnv::new();
        gobalancer::health::probe(&env, addr, &check).await
    });
    server.join().expect("server");
    assert_eq!(result, Ok("HTTP 200".to_string()));
}

/// Regression (review): a backend that answers in full and closes, while its client keeps
/// sending, did not fail: the exchange must not count against it (nor reset the client).
#[test]
fn a_backend_closing_after_its_reply_is_not_a_failure() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut first = [0u8; 5];
        s.read_exact(&mut first).expect("request");
        s.write_all(b"reply").expect("reply");
        // Closes with the client still sending.
    });
    let config = format!(
        "(listeners: [(bind: \"127.0.0.1:1\", pool: \"p\")],
          pools: [(name: \"p\", passive: (consecutive_failures: 1, max_ejected_percent: 100),
                   backends: [(address: \"{addr}\")])])"
    );
    let p = start_proxy(&config);
    let mut c = TcpStream::connect(p.addr).expect("connect");
    c.set_read_timeout(Some(CLIENT_WAIT)).expect("timeout");
    c.write_all(b"hello").expect("request");
    let mut got = Vec::new();
    c.read_to_end(&mut got).expect("the reply, then a clean end");
    assert_eq!(got, b"reply");
    server.join().expect("server");
    // The client goes on writing into the closed exchange.
    for _ in 0..5 {
        let _ = c.write_all(b"more");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(c);
    p.assert_counters_return_to_zero();
    let stats = &p.shared.pools[0].health.stats;
    assert_eq!(
        stats.ejections_total.load(Ordering::Relaxed),
        0,
        "the backend did not fail"
    );
}
