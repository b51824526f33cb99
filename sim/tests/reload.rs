//! The reload faults drive the core's hot reload, and the oracle's I3 checks catch a
//! drain that goes wrong: a run of `scenarios/drain.ron` passes, and the same run with a
//! pick of the removed backend after the reload, a request cut before the deadline, or
//! a refused reload that moved the generation, fails with I3.

use gobalancer_loadgen::client::TapOutcome;
use gobalancer_sim::log::What;
use gobalancer_sim::scenario::{self, Prepared};
use gobalancer_sim::{oracle, runner};
use std::path::Path;
use std::time::Duration;

fn load(relative: &str) -> Prepared {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scenarios")
        .join(relative);
    scenario::load_as(&path, relative).unwrap_or_else(|e| panic!("{e}"))
}

fn i3(r: &oracle::Report) -> Vec<String> {
    r.violations
        .iter()
        .filter(|v| v.rule == "I3")
        .map(|v| v.to_string())
        .collect()
}

#[test]
fn the_oracle_catches_a_broken_drain() {
    let p = load("drain.ron");
    let out = runner::run(&p, 1).unwrap_or_else(|e| panic!("{e}"));
    let r = oracle::check(&p, &out);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.reloads, (1, 0));
    assert!(r.drain_finished > 0 && r.drain_cut > 0, "{r:?}");
    let reload = out.reloads[0].at;
    let removed = p
        .backend("backend-2")
        .and_then(|b| u16::try_from(b).ok())
        .unwrap_or(u16::MAX);

    // A new connection to the removed backend after the reload.
    let mut late = runner::run(&p, 1).unwrap_or_else(|e| panic!("{e}"));
    late.log
        .push(reload + Duration::from_millis(100), What::Pick { backend: removed });
    let v = i3(&oracle::check(&p, &late));
    assert!(v.iter().any(|m| m.contains("new connections to a backend")), "{v:?}");

    // A request in flight on it cut at the reload instead of the deadline.
    let mut early = runner::run(&p, 1).unwrap_or_else(|e| panic!("{e}"));
    let q = early
        .log
        .requests
        .iter_mut()
        .find(|q| {
            q.seen_by.is_some_and(|(b, at)| b == removed && at < reload)
                && q.outcome.is_some_and(|(end, _)| end > reload)
        })
        .unwrap_or_else(|| panic!("no request in flight on the removed backend"));
    q.outcome = Some((reload, TapOutcome::Failed(gobalancer_loadgen::stats::ErrorKind::Closed)));
    let v = i3(&oracle::check(&p, &early));
    assert!(v.iter().any(|m| m.contains("cut before its drain deadline")), "{v:?}");
}

#[test]
fn a_refused_reload_must_keep_the_generation_and_be_counted() {
    let p = load("reload-bad.ron");
    let out = runner::run(&p, 1).unwrap_or_else(|e| panic!("{e}"));
    let r = oracle::check(&p, &out);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(r.reloads, (1, 3));
    assert!(out.reloads[..3].iter().all(|rec| !rec.applied && rec.generation == 1));
    assert_eq!(out.reloads[3].generation, 2);
    let mut bad = out;
    bad.reloads[1].generation = 2;
    let v = i3(&oracle::check(&p, &bad));
    assert!(v.iter().any(|m| m.contains("refused reloads")), "{v:?}");
}
