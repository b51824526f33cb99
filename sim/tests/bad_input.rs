//! Bad scenarios are rejected before anything runs, with a message that says where and
//! what: unknown fields (with line and column), unknown hosts, faults outside the run,
//! expectations that name no backend, and faults that need configuration reload.

use gobalancer_sim::scenario::{self, Scenario};

const GOOD: &str = r##"(
    name: "small",
    seeds: [1],
    duration: "10s",
    balancer: (config: r#"(
        listeners: [(bind: "0.0.0.0:8080", pool: "p")],
        pools: [(name: "p", backends: [(address: "${b1}:9000"), (address: "${b2}:9000")])],
    )"#),
    backends: [(name: "b1"), (name: "b2")],
    clients: ["c1"],
    workload: (load: Closed(connections: 2)),
    timeline: [(at: "2s", fault: Crash("b1")), (at: "4s", fault: Bounce("b1"))],
    expect: (detection: [(backend: "b1", max: "5s")], share: [(backend: "b2", min: 0.1)]),
)"##;

/// The problems of `GOOD` with `from` replaced by `to`.
fn problems(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from}");
    let src = GOOD.replacen(from, to, 1);
    match Scenario::parse(&src, "bad.ron").and_then(|s| scenario::prepare(s, "bad.ron", Some(&src))) {
        Ok(_) => panic!("accepted: {src}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_good_one_is_accepted() {
    let s = Scenario::parse(GOOD, "good.ron").unwrap_or_else(|e| panic!("{e}"));
    let p = scenario::prepare(s, "good.ron", Some(GOOD)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.pool_index, vec![Some(0), Some(1)]);
}

#[test]
fn unknown_fields_are_reported_with_line_and_column() {
    let e = problems("(name: \"b1\")", "(name: \"b1\", latncy: \"1ms\")");
    assert!(e.starts_with("bad.ron:9:29: "), "{e}");
    assert!(e.contains("latncy"), "{e}");
    let e = problems("workload: (", "workload: (rate: 3, ");
    assert!(e.starts_with("bad.ron:11:") && e.contains("rate"), "{e}");
    // Also inside enum variants.
    let e = problems("Closed(connections: 2)", "Closed(connections: 2, think: \"1s\")");
    assert!(e.starts_with("bad.ron:11:") && e.contains("think"), "{e}");
}

#[test]
fn problems_in_the_balancer_config_point_into_the_file() {
    let e = problems("pool: \"p\")]", "pool: \"p\", mood: \"tcp\")]");
    assert!(e.starts_with("bad.ron:6:"), "{e}");
    assert!(e.contains("mood"), "{e}");
    let e = problems("${b2}", "${b3}");
    assert!(e.contains("${b3} names no host"), "{e}");
}

#[test]
fn unknown_hosts_are_rejected() {
    let e = problems("Crash(\"b1\")", "Crash(\"b9\")");
    assert!(e.contains("unknown host \"b9\""), "{e}");
    let e = problems("Bounce(\"b1\")", "Bounce(\"lb2\")");
    assert!(e.contains("unknown host \"lb2\""), "{e}");
}

#[test]
fn faults_must_fall_within_the_run() {
    let e = problems("(at: \"4s\"", "(at: \"11s\"");
    assert!(e.contains("after the end of the workload (10s)"), "{e}");
    let e = problems("(at: \"2s\"", "(at: \"-2s\"");
    assert!(
        e.contains("must not be negative") && e.starts_with("bad.ron:12:"),
        "{e}"
    );
}

#[test]
fn expectations_must_name_a_backend() {
    let e = problems("(backend: \"b1\", max", "(backend: \"c1\", max");
    assert!(e.contains("expect.detection[0]: \"c1\" names no backend"), "{e}");
    let e = problems("(backend: \"b2\", min", "(backend: \"nobody\", min");
    assert!(e.contains("expect.share[0]: \"nobody\" names no backend"), "{e}");
}

#[test]
fn reload_faults_must_name_backends_and_hosts() {
    let e = problems("Bounce(\"b1\")", "BackendAdded(\"c1\")");
    assert!(e.contains("\"c1\" is not a backend"), "{e}");
    let e = problems(
        "Bounce(\"b1\")",
        "Reload(\"(pools: [(address: \\\"${nobody}:9000\\\")])\")",
    );
    assert!(e.contains("${nobody} names no host"), "{e}");
    // A reload text that does not parse is allowed: the balancer must refuse it (D6).
    let src = GOOD.replacen("Bounce(\"b1\")", "Reload(\"(listeners: [\")", 1);
    let s = Scenario::parse(&src, "bad.ron").unwrap_or_else(|e| panic!("{e}"));
    scenario::prepare(s, "bad.ron", Some(&src)).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn other_nonsense_is_named() {
    let e = problems("Crash(\"b1\")", "Partition(\"b1\", \"b1\")");
    assert!(e.contains("two different hosts"), "{e}");
    let e = problems("connections: 2", "connections: 0");
    assert!(e.contains("connections 0"), "{e}");
    let e = problems("clients: [\"c1\"]", "clients: [\"b1\"]");
    assert!(e.contains("used twice"), "{e}");
    let e = problems("workload: (", "workload: (mix: [(method: \"HEAD\")], ");
    assert!(e.contains("\"HEAD\""), "{e}");
}
