//! The same seed gives the same run: one seed run twice in this process, and in two
//! child processes, yields the same digest of the event trace (DESIGN.md section 4).

use gobalancer::io::{fnv1a64, Env};
use gobalancer::testbackend::Reply;
use gobalancer_sim::{world, SimEnv};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

const CHILD_SEED_VAR: &str = "GOBALANCER_SIM_CHILD_SEED";
const CLIENTS: usize = 4;
const CONNECTIONS_PER_CLIENT: usize = 25;

/// Runs a world of three backends, a power-of-two balancer and four clients making
/// connections at random intervals; returns the digest of the trace and its length.
fn run(seed: u64) -> (u64, usize) {
    println!("simulation seed {seed}");
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_secs(120))
        .build();
    let backends = world::backends(&mut sim, seed, 3, 9000, Reply::Name);
    world::balancer(
        &mut sim,
        seed,
        "lb",
        &world::simple_config(8080, "power-of-two", &backends),
    );
    let lb = SocketAddr::new(sim.lookup("lb"), 8080);
    let trace: Rc<RefCell<Vec<String>>> = Rc::default();
    for c in 0..CLIENTS {
        let name = format!("client-{c}");
        let trace = trace.clone();
        let host = name.clone();
        sim.client(name, async move {
            let env = SimEnv::new(seed, &host);
            for i in 0..CONNECTIONS_PER_CLIENT {
                env.sleep(Duration::from_millis(env.random_u64() % 50)).await;
                let got = world::fetch_line(&env, lb, Duration::from_secs(5)).await;
                let at = env.now().since_origin().as_nanos();
                trace.borrow_mut().push(format!("{at} {host} {i} {got:?}"));
            }
            Ok(())
        });
    }
    if let Err(e) = sim.run() {
        panic!("seed {seed}: simulation failed: {e}");
    }
    let trace = trace.borrow();
    let mut digest = 0u64;
    for line in trace.iter() {
        digest = fnv1a64(format!("{digest:016x}{line}").as_bytes());
    }
    assert!(
        trace.iter().all(|l| l.contains("Ok(\"backend-")),
        "seed {seed}: every connection is served: {trace:#?}"
    );
    (digest, trace.len())
}

#[test]
fn same_seed_same_trace_in_one_process() {
    let (a, n) = run(7);
    let (b, m) = run(7);
    assert_eq!(n, CLIENTS * CONNECTIONS_PER_CLIENT);
    assert_eq!((a, n), (b, m), "seed 7 replays identically");
    let (c, _) = run(8);
    assert_ne!(a, c, "another seed gives another run (the digest is not constant)");
}

#[test]
fn same_seed_same_trace_in_two_processes() {
    let seed = 11;
    let (here, _) = run(seed);
    let exe = std::env::current_exe().expect("test binary path");
    let mut digests = Vec::new();
    for _ in 0..2 {
        let out = std::process::Command::new(&exe)
            .args(["--exact", "child_process_digest", "--nocapture", "--test-threads=1"])
            .env(CHILD_SEED_VAR, seed.to_string())
            .output()
            .expect("run the child test process");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed: {stdout}");
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("DIGEST "))
            .unwrap_or_else(|| panic!("child printed no digest: {stdout}"));
        digests.push(line.to_string());
    }
    assert_eq!(digests[0], digests[1], "two processes, same seed, same trace");
    assert_eq!(digests[0], format!("{here:016x}"), "child processes match this one");
}

/// Runs only when spawned by `same_seed_same_trace_in_two_processes`.
#[test]
fn child_process_digest() {
    let Ok(seed) = std::env::var(CHILD_SEED_VAR) else {
        return;
    };
    let seed: u64 = seed.parse().expect("numeric seed");
    let (digest, _) = run(seed);
    println!("DIGEST {digest:016x}");
}

const CHILD_SCENARIO_VAR: &str = "GOBALANCER_SIM_CHILD_SCENARIO_SEED";
/// A failover, a reload whose drain deadline cuts several connections at once (the
/// order of simultaneous wake-ups must not depend on anything but the seed), and an L7
/// failover (requests balanced one by one over pooled backend connections, retries).
const SCENARIOS: [&str; 3] = ["failover.ron", "drain.ron", "http-failover.ron"];

/// Digest of the trace of one seed of a scenario file.
fn scenario_digest(name: &str, seed: u64) -> u64 {
    use gobalancer_sim::{oracle, runner, scenario};
    println!("simulation seed {seed} of {name}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(name);
    let p = scenario::load_as(&path, name).unwrap_or_else(|e| panic!("{e}"));
    let out = runner::run(&p, seed).unwrap_or_else(|e| panic!("{e}"));
    let report = oracle::check(&p, &out);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    // The trace, and what quiescence found: stream counts and pooled connections.
    let quiet = format!("{:?} {:?}", report.streams, report.pooled_idle);
    fnv1a64(format!("{:016x} {quiet}", report.digest.0).as_bytes())
}

#[test]
fn a_scenario_file_replays_identically_in_two_processes() {
    for name in SCENARIOS {
        replays_in_two_processes(name, 3);
    }
}

fn replays_in_two_processes(name: &str, seed: u64) {
    let here = scenario_digest(name, seed);
    let exe = std::env::current_exe().expect("test binary path");
    let mut digests = Vec::new();
    for _ in 0..2 {
        let out = std::process::Command::new(&exe)
            .args(["--exact", "child_scenario_digest", "--nocapture", "--test-threads=1"])
            .env(CHILD_SCENARIO_VAR, format!("{name}:{seed}"))
            .output()
            .expect("run the child test process");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed: {stdout}");
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("SCENARIO DIGEST "))
            .unwrap_or_else(|| panic!("child printed no digest: {stdout}"));
        digests.push(line.to_string());
    }
    assert_eq!(digests[0], digests[1], "{name}: two processes, same seed, same trace");
    assert_eq!(
        digests[0],
        format!("{here:016x}"),
        "{name}: child processes match this one"
    );
}

/// Runs only when spawned by `a_scenario_file_replays_identically_in_two_processes`.
#[test]
fn child_scenario_digest() {
    let Ok(spec) = std::env::var(CHILD_SCENARIO_VAR) else {
        return;
    };
    let (name, seed) = spec.rsplit_once(':').expect("NAME:SEED");
    let seed: u64 = seed.parse().expect("numeric seed");
    println!("SCENARIO DIGEST {:016x}", scenario_digest(name, seed));
}
