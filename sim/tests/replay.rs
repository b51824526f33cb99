//! A failing seed keeps failing the same way, and shrinking it keeps the seed and
//! finds the fault that matters.
//!
//! The scenario below fails on purpose: it expects backend-2 to keep a third of the
//! traffic although the timeline crashes it for good at 3s. Its other faults and its
//! request mix have nothing to do with that failure.

use gobalancer_sim::scenario::{self, Fault, Scenario};
use gobalancer_sim::{oracle, report, runner, shrink};

const FAILING: &str = r##"(
    name: "deliberately-failing",
    seeds: [5],
    duration: "8s",
    balancer: (config: r#"(
        timeouts: (connect: "500ms", idle: "2s", drain: "1s"),
        listeners: [(bind: "0.0.0.0:8080", pool: "p")],
        pools: [(name: "p", passive: (consecutive_failures: 3, ejection: "20s"), backends: [
            (address: "${backend-1}:9000", name: "backend-1"),
            (address: "${backend-2}:9000", name: "backend-2"),
            (address: "${backend-3}:9000", name: "backend-3"),
        ])],
    )"#),
    backends: [(name: "backend-1"), (name: "backend-2"), (name: "backend-3")],
    clients: ["client-1"],
    workload: (
        load: Open(rate_per_s: 80, connections: 8),
        mix: [(method: "GET", weight: 2), (method: "POST"), (method: "PUT")],
    ),
    timeline: [
        (at: "1s", fault: LinkLatency("lb", "backend-1", "3ms")),
        (at: "2s", fault: Partition("client-1", "backend-3")),
        (at: "3s", fault: Crash("backend-2")),
        (at: "6s", fault: Repair("client-1", "backend-3")),
    ],
    expect: (share: [(backend: "backend-2", min: 0.30)]),
)"##;

fn prepared() -> scenario::Prepared {
    let s = Scenario::parse(FAILING, "deliberately-failing.ron").unwrap_or_else(|e| panic!("{e}"));
    scenario::prepare(s, "deliberately-failing.ron", Some(FAILING)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_failing_seed_fails_again_with_the_same_trace() {
    let p = prepared();
    let seed = 5;
    println!("simulation seed {seed}");
    let first = oracle::check(&p, &runner::run(&p, seed).expect("runs"));
    let again = oracle::check(&p, &runner::run(&p, seed).expect("runs"));
    assert!(!first.violations.is_empty(), "the expectation is meant to fail");
    assert!(first
        .violations
        .iter()
        .any(|v| v.message.starts_with("share of backend-2")));
    assert_eq!(first.digest, again.digest, "same seed, same trace");
    assert_eq!(first.violations, again.violations, "same seed, same violations");
    let text = report::text(&p, &first);
    assert!(
        text.contains("cargo run -p gobalancer-sim --release -- run deliberately-failing.ron --seed 5"),
        "the report says how to replay: {text}"
    );
    let other = oracle::check(&p, &runner::run(&p, seed + 1).expect("runs"));
    assert_ne!(first.digest, other.digest, "another seed, another trace");
}

#[test]
fn shrinking_keeps_the_seed_and_finds_the_fault_that_matters() {
    let p = prepared();
    let seed = 5;
    println!("simulation seed {seed}");
    let mut lines = Vec::new();
    let shrunk = shrink::shrink(&p, seed, &mut |l: &str| lines.push(l.to_string())).expect("it fails, so it shrinks");
    println!("{}", lines.join("\n"));
    assert_eq!(shrunk.faults, (4, 1));
    assert_eq!(shrunk.scenario.timeline[0].fault, Fault::Crash("backend-2".into()));
    assert_eq!(shrunk.mix, (3, 1));
    assert_eq!(shrunk.scenario.seeds, vec![seed]);
    assert!(shrunk.runs <= shrink::RUNS_MAX);

    // What it writes reads back, and replays the failure.
    let ron = shrunk.scenario.to_ron().expect("serializes");
    let dir = std::env::temp_dir().join(format!("gobalancer-sim-shrink-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("shrunk.ron");
    std::fs::write(&path, &ron).expect("write");
    let back = scenario::load(path.to_str().expect("utf-8 path")).unwrap_or_else(|e| panic!("{e}\n{ron}"));
    let r = oracle::check(&back, &runner::run(&back, seed).expect("runs"));
    assert!(
        r.violations.iter().any(|v| v.message.starts_with("share of backend-2")),
        "the pinned scenario still fails: {:?}",
        r.violations
    );
    let _ = std::fs::remove_dir_all(&dir);
}
