//! Health checking in the simulation: crash detection time, the slow-start ramp after
//! recovery (C10), all backends down then back (C13), a flapping health endpoint (C9),
//! and kill/restart chaos with health checks on. Every run prints its seed.

use gobalancer::io::{BindOptions, Env, Instant, IoBuf, Listener, OwnedRead, OwnedWrite, SplitMix64, Stream};
use gobalancer::testbackend::Reply;
use gobalancer_sim::world::{self, BalancerHandle};
use gobalancer_sim::SimEnv;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_millis(500);
const RISE: u32 = 2;
const FALL: u32 = 3;
/// The checks' jitter is ±10% of the interval.
const JITTER: f64 = 0.10;

#[derive(Debug, Clone)]
struct Record {
    started: Duration,
    ended: Duration,
    result: Result<String, String>,
}

type Records = Rc<RefCell<Vec<Record>>>;

fn builder(seed: u64, secs: u64) -> turmoil::Sim<'static> {
    turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_secs(secs))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(5))
        .build()
}

/// The RON config of a balancer on port 8080 with TCP health checks over `backends`.
fn config(algorithm: &str, backends: &[SocketAddr], health_extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, a)| format!("(address: \"{a}\", name: \"backend-{}\")", i + 1))
        .collect();
    format!(
        "(timeouts: (connect: \"1s\", idle: \"5s\", drain: \"1s\"),
          listeners: [(bind: \"0.0.0.0:8080\", pool: \"p\")],
          pools: [(name: \"p\", algorithm: \"{algorithm}\",
                   health_check: (kind: \"tcp\", interval: \"1s\", timeout: \"500ms\", rise: {RISE}, fall: {FALL}),
                   passive: (consecutive_failures: 0), {health_extra}
                   backends: [{}])])",
        list.join(", ")
    )
}

/// Three `Reply::Name` backends and a balancer; returns the balancer's address and handle.
fn world3(sim: &mut turmoil::Sim<'_>, seed: u64, algorithm: &str, health_extra: &str) -> (SocketAddr, BalancerHandle) {
    let backends = world::backends(sim, seed, 3, 9000, Reply::Name);
    let handle = world::balancer(sim, seed, "lb", &config(algorithm, &backends, health_extra));
    (SocketAddr::new(sim.lookup("lb"), 8080), handle)
}

/// `n` clients making connections back to back until `until`.
fn clients(sim: &mut turmoil::Sim<'_>, seed: u64, n: usize, lb: SocketAddr, until: Duration) -> Records {
    let records: Records = Rc::default();
    for c in 0..n {
        let host = format!("client-{c}");
        let records = records.clone();
        sim.client(host.clone(), async move {
            let env = SimEnv::new(seed, &host);
            while env.now().since_origin() < until {
                let started = env.now().since_origin();
                let result = world::fetch_line(&env, lb, Duration::from_secs(10))
                    .await
                    .map_err(|e| e.to_string());
                let ended = env.now().since_origin();
                records.borrow_mut().push(Record { started, ended, result });
                env.sleep(Duration::from_millis(env.random_u64() % 20)).await;
            }
            Ok(())
        });
    }
    records
}

/// Published effective weights of the balancer's only pool.
fn weights(handle: &BalancerHandle) -> Vec<u32> {
    handle
        .borrow()
        .as_ref()
        .map(|s| s.pools[0].balancer.weights())
        .unwrap_or_default()
}

fn step(sim: &mut turmoil::Sim<'_>, seed: u64) -> bool {
    match sim.step() {
        Ok(done) => done,
        Err(e) => panic!("seed {seed}: simulation failed: {e}"),
    }
}

/// Worst-case time for `n` consecutive probe results to be seen: `n` jittered
/// intervals plus one probe timeout.
fn detection_bound(n: u32) -> Duration {
    INTERVAL.mul_f64(f64::from(n) * (1.0 + JITTER)) + TIMEOUT
}

#[test]
fn crash_is_detected_in_bound_and_recovery_ramps_up() {
    for seed in [1u64, 2, 3] {
        println!("simulation seed {seed}");
        let mut sim = builder(seed, 120);
        let (lb, handle) = world3(&mut sim, seed, "weighted", "slow_start: \"10s\",");
        let records = clients(&mut sim, seed, 6, lb, Duration::from_secs(50));
        let crash_at = Duration::from_secs(10);
        let bounce_at = Duration::from_secs(20);
        let (mut crashed, mut bounced) = (false, false);
        let (mut down_at, mut up_at) = (None, None);
        loop {
            let now = sim.elapsed();
            if !crashed && now >= crash_at {
                sim.crash("backend-2");
                crashed = true;
            }
            if !bounced && now >= bounce_at {
                sim.bounce("backend-2");
                bounced = true;
            }
            let w = weights(&handle);
            if crashed && down_at.is_none() && w.get(1) == Some(&0) {
                down_at = Some(now);
            }
            if bounced && up_at.is_none() && w.get(1).is_some_and(|w| *w > 0) {
                up_at = Some(now);
            }
            if step(&mut sim, seed) {
                break;
            }
        }
        let down_at = down_at.expect("backend-2 detected down");
        let up_at = up_at.expect("backend-2 back up");
        let detection = down_at - crash_at;
        assert!(
            detection <= detection_bound(FALL),
            "seed {seed}: detection took {detection:?}"
        );
        let recovery = up_at - bounce_at;
        assert!(
            recovery <= detection_bound(RISE),
            "seed {seed}: recovery took {recovery:?}"
        );
        println!("seed {seed}: detected in {detection:?}, back after {recovery:?}");

        let records = records.borrow();
        // Nobody is left without service: a connection may fail only if it was in flight
        // when the backend crashed (its bytes went down with the host).
        for r in records.iter() {
            if let Err(e) = &r.result {
                assert!(
                    r.started <= crash_at && r.ended >= crash_at,
                    "seed {seed}: a client failed outside the crash instant: {r:?} ({e})"
                );
            }
        }
        // After detection, backend-2 serves nothing until it is back.
        assert!(!records
            .iter()
            .any(|r| r.started > down_at && r.ended < up_at && r.result.as_deref() == Ok("backend-2")));
        // The ramp: in the first tenth of the slow-start window, backend-2 has at most a
        // tenth of its full share (one third); after the window, about its full share.
        let share = |from: Duration, to: Duration| {
            let window: Vec<&Record> = records
                .iter()
                .filter(|r| r.started >= from && r.started < to && r.result.is_ok())
                .collect();
            let on_b = window.iter().filter(|r| r.result.as_deref() == Ok("backend-2")).count();
            (on_b as f64 / window.len().max(1) as f64, window.len())
        };
        let (early, n_early) = share(up_at, up_at + Duration::from_secs(1));
        assert!(
            n_early >= 30,
            "seed {seed}: enough traffic to judge the ramp: {n_early}"
        );
        assert!(
            early <= 0.1 / 3.0 + 0.01,
            "seed {seed}: share in the first tenth of the ramp: {early}"
        );
        let (late, n_late) = share(up_at + Duration::from_secs(11), up_at + Duration::from_secs(25));
        assert!(n_late >= 100, "seed {seed}: {n_late}");
        assert!(
            (late - 1.0 / 3.0).abs() < 0.05,
            "seed {seed}: share at full weight: {late}"
        );
    }
}

#[test]
fn all_backends_down_refuses_at_once_and_recovers() {
    for seed in [4u64, 5] {
        println!("simulation seed {seed}");
        let mut sim = builder(seed, 120);
        let (lb, handle) = world3(&mut sim, seed, "round-robin", "");
        let records = clients(&mut sim, seed, 3, lb, Duration::from_secs(40));
        let (crash_at, bounce_at) = (Duration::from_secs(5), Duration::from_secs(20));
        let (mut crashed, mut bounced) = (false, false);
        let mut all_down_at = None;
        loop {
            let now = sim.elapsed();
            if !crashed && now >= crash_at {
                sim.crash("backend-1");
                sim.crash("backend-2");
                sim.crash("backend-3");
                crashed = true;
            }
            if !bounced && now >= bounce_at {
                sim.bounce("backend-1");
                sim.bounce("backend-2");
                sim.bounce("backend-3");
                bounced = true;
            }
            if crashed && all_down_at.is_none() && weights(&handle).iter().all(|w| *w == 0) {
                all_down_at = Some(now);
            }
            if step(&mut sim, seed) {
                break;
            }
        }
        let all_down_at = all_down_at.expect("every backend detected down");
        assert!(all_down_at - crash_at <= detection_bound(FALL), "seed {seed}");
        let records = records.borrow();
        // While all are down: refused at once, not left waiting for connect timeouts.
        let refused: Vec<&Record> = records
            .iter()
            .filter(|r| r.started > all_down_at && r.ended < bounce_at)
            .collect();
        assert!(refused.len() > 20, "seed {seed}: {}", refused.len());
        for r in &refused {
            assert!(
                r.result.is_err(),
                "seed {seed}: served while everything was down? {r:?}"
            );
            assert!(
                r.ended - r.started < Duration::from_millis(100),
                "seed {seed}: not refused at once: {r:?}"
            );
        }
        // Recovery is automatic: once probes have seen `rise` successes, all is served.
        let live_from = bounce_at + detection_bound(RISE) + Duration::from_secs(1);
        let after: Vec<&Record> = records.iter().filter(|r| r.started > live_from).collect();
        assert!(after.len() > 50, "seed {seed}");
        assert!(
            after.iter().all(|r| r.result.is_ok()),
            "seed {seed}: not served after recovery"
        );
        let shared = handle.borrow().clone().expect("balancer");
        let stats = &shared.pools[0].health.stats;
        assert_eq!(stats.all_down_total.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}

/// A host whose `/health` answers 200 and 500 in turn, and anything else 200.
fn flapping_backend(sim: &mut turmoil::Sim<'_>, seed: u64, name: &str) {
    let host = name.to_string();
    sim.host(name, move || {
        let host = host.clone();
        async move {
            let env = SimEnv::new(seed, &host);
            let mut listener = env
                .bind(SocketAddr::from(([0, 0, 0, 0], 9000)), BindOptions::default())
                .await?;
            let mut n = 0u64;
            loop {
                let (stream, _) = listener.accept().await?;
                n += 1;
                let status = if n.is_multiple_of(2) {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                env.spawn(async move {
                    let (mut r, mut w) = stream.into_split();
                    let mut buf = IoBuf::with_capacity(4096);
                    while !buf.bytes().windows(4).any(|x| x == b"\r\n\r\n") {
                        let (res, b) = r.read(buf).await;
                        buf = b;
                        if !matches!(res, Ok(n) if n > 0) || buf.spare_capacity() == 0 {
                            return;
                        }
                    }
                    let reply = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    let _ = w.write_all(IoBuf::from_vec(reply.into_bytes())).await;
                    let _ = w.shutdown().await;
                });
            }
        }
    });
}

#[test]
fn flapping_health_endpoint_never_changes_state() {
    let seed = 6;
    println!("simulation seed {seed}");
    let mut sim = builder(seed, 60);
    flapping_backend(&mut sim, seed, "flappy");
    world::backend(&mut sim, seed, "steady", 9000, Reply::Http);
    let backends = [
        SocketAddr::new(sim.lookup("flappy"), 9000),
        SocketAddr::new(sim.lookup("steady"), 9000),
    ];
    let list: Vec<String> = backends.iter().map(|a| format!("(address: \"{a}\")")).collect();
    let config = format!(
        "(listeners: [(bind: \"0.0.0.0:8080\", pool: \"p\")],
          pools: [(name: \"p\", health_check: (kind: \"http\", path: \"/health\", interval: \"500ms\", timeout: \"200ms\", rise: 2, fall: 3),
                   backends: [{}])])",
        list.join(", ")
    );
    let handle = world::balancer(&mut sim, seed, "lb", &config);
    // A client that just lets time pass: the run lasts as long as it does.
    sim.client("clock", async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(())
    });
    let mut min_weight = u32::MAX;
    loop {
        if let Some(w) = weights(&handle).first() {
            min_weight = min_weight.min(*w);
        }
        if step(&mut sim, seed) {
            break;
        }
    }
    let shared = handle.borrow().clone().expect("balancer");
    let stats = &shared.pools[0].health.stats;
    assert_eq!(stats.transitions_total.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert!(min_weight > 0, "the flapping backend was never taken out");
    let snap = shared.pools[0].health.snapshot(Instant::ZERO);
    assert!(snap[0].last_probe.starts_with("HTTP"), "probes ran: {snap:?}");
}

#[test]
fn kill_restart_chaos_with_health_checks() {
    for seed in [7u64, 8, 9, 10] {
        println!("simulation seed {seed}");
        let mut sim = builder(seed, 200);
        let (lb, handle) = world3(&mut sim, seed, "least-connections", "slow_start: \"2s\",");
        let run_for = Duration::from_secs(60);
        let records = clients(&mut sim, seed, 4, lb, run_for);
        let mut rng = SplitMix64::new(seed);
        let mut running = [true; 3];
        let mut next_fault = Duration::from_secs(1 + rng.next_u64() % 3);
        let mut faults = Vec::new();
        loop {
            let now = sim.elapsed();
            if now >= next_fault && now < run_for {
                let b = (rng.next_u64() % 3) as usize;
                let name = format!("backend-{}", b + 1);
                if running[b] && running.iter().filter(|r| **r).count() > 1 {
                    sim.crash(name.as_str());
                    running[b] = false;
                    faults.push(now);
                } else if !running[b] {
                    sim.bounce(name.as_str());
                    running[b] = true;
                }
                next_fault = now + Duration::from_millis(1000 + rng.next_u64() % 2000);
            }
            if step(&mut sim, seed) {
                break;
            }
        }
        // Let in-flight work finish, then everything must be released.
        for _ in 0..10_000 {
            if step(&mut sim, seed) && sim.elapsed() > run_for + Duration::from_secs(10) {
                break;
            }
        }
        let records = records.borrow();
        assert!(records.len() > 500, "seed {seed}: {}", records.len());
        for r in records.iter() {
            if r.result.is_err() {
                assert!(
                    faults.iter().any(|f| r.started <= *f && r.ended >= *f),
                    "seed {seed}: a client failed without a crash during its connection: {r:?}"
                );
            }
        }
        let shared = handle.borrow().clone().expect("balancer");
        assert_eq!(
            shared.pools[0].balancer.total_active(),
            0,
            "seed {seed}: counters back to zero"
        );
        assert_eq!(shared.conn_limit.open(), 0, "seed {seed}: no connection left open");
    }
}
