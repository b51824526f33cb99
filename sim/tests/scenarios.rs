//! The scenario suites: every file in `scenarios/` runs on the seeds it lists, and every
//! seed must pass the oracle (invariants I1 to I6 and the file's expectations). The
//! pinned regressions in `scenarios/regressions/` run the same way.
//!
//! A failing seed prints its report and the command that replays it. Sweeps over many
//! seeds are for `scripts/sim-sweep.sh`, not for this test.

use gobalancer_sim::scenario::{self, Prepared};
use gobalancer_sim::{oracle, report, runner};
use std::path::{Path, PathBuf};

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("scenarios")
}

fn load(relative: &str) -> Prepared {
    let path = scenarios_dir().join(relative);
    scenario::load_as(&path, &format!("scenarios/{relative}")).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs every seed the file lists; panics with the reports of the failing ones. A
/// pinned regression with a `known_failure` must still show it on every seed.
fn run_file(relative: &str) {
    let p = load(relative);
    assert!(
        !p.scenario.seeds.is_empty(),
        "{relative}: list the seeds cargo test runs"
    );
    let mut failed = Vec::new();
    for &seed in &p.scenario.seeds {
        println!("simulation seed {seed}");
        let out = runner::run(&p, seed).unwrap_or_else(|e| panic!("{relative}: seed {seed}: {e}"));
        let r = oracle::check(&p, &out);
        let text = report::text(&p, &r);
        print!("{text}");
        match &p.scenario.known_failure {
            None if !r.violations.is_empty() => failed.push(text),
            None => {}
            Some(known) => {
                let still = r.violations.iter().any(|v| v.to_string().contains(known.as_str()));
                assert!(
                    still,
                    "{relative}: seed {seed} no longer shows its known failure {known:?}: \
                     if the bug is fixed, remove `known_failure` from the file\n{text}"
                );
                println!("  known failure still present: {known}");
            }
        }
    }
    assert!(failed.is_empty(), "{relative}: failing seeds:\n{}", failed.join("\n"));
}

macro_rules! suites {
    ($($test:ident => $file:literal,)*) => {
        $(
            #[test]
            fn $test() {
                run_file($file);
            }
        )*

        /// The files the tests above run.
        const FILES: &[&str] = &[$($file),*];
    };
}

suites! {
    failover => "failover.ron",
    partition_and_repair => "partition.ron",
    stall_longer_than_the_timeouts => "stall.ron",
    kill_restart_chaos => "chaos.ron",
    slow_backend => "slow-backend.ron",
    all_backends_down_then_back => "all-down.ron",
    client_crash_mid_request => "client-crash.ron",
    link_failures => "link-failures.ron",
    fairness_round_robin => "fairness-round-robin.ron",
    fairness_weighted => "fairness-weighted.ron",
    fairness_least_connections => "fairness-least-connections.ron",
    fairness_power_of_two => "fairness-power-of-two.ron",
    fairness_consistent_hash => "fairness-consistent-hash.ron",
    health_flapping => "health-flapping.ron",
    health_recovery_ramp => "health-recovery-ramp.ron",
    health_crash_detection => "health-crash-detection.ron",
    drain_on_removal => "drain.ron",
    bad_reloads_keep_serving => "reload-bad.ron",
    reloads_under_load => "reload-under-load.ron",
    backend_added_slow_starts => "backend-added.ron",
    backend_added_during_another_ramp => "backend-added-during-ramp.ron",
    http_refused_backend => "http-refused.ron",
    http_blackhole_connect => "http-blackhole.ron",
    http_reset_after_request => "http-reset.ron",
    http_cut_after_head => "http-cut.ron",
    http_partition_mid_stream => "http-partition.ron",
    http_stall_beyond_response_timeout => "http-stall.ron",
    http_stale_pooled_connections => "http-stale-pool.ron",
    http_link_failures => "http-link-failures.ron",
    http_kill_restart_chaos => "http-chaos.ron",
    http_client_crash => "http-client-crash.ron",
    http_failover => "http-failover.ron",
    http_fairness_per_request => "http-fairness.ron",
    http_reloads_under_load => "http-reload-under-load.ron",
    http_drain_on_removal => "http-drain.ron",
    http_one_way_client_partition => "http-client-oneway.ron",
}

fn ron_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".ron"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn every_scenario_file_has_a_test() {
    for f in ron_files(&scenarios_dir()) {
        assert!(
            FILES.contains(&f.as_str()),
            "scenarios/{f} is run by no test: add it to `suites!`"
        );
    }
}

#[test]
fn pinned_regressions_pass() {
    for f in ron_files(&scenarios_dir().join("regressions")) {
        run_file(&format!("regressions/{f}"));
    }
}

#[test]
fn benchmark_scenarios_are_valid() {
    // Too long for a test run (they are timed in release mode); checked, not run.
    let dir = scenarios_dir().join("bench");
    let files = ron_files(&dir);
    assert!(!files.is_empty(), "scenarios/bench has the speed benchmark");
    for f in files {
        load(&format!("bench/{f}"));
    }
}
