//! Shrinking a failing seed: with the seed fixed, find a smaller scenario (fewer faults,
//! fewer kinds of request) that still fails the same way, and write it as RON, ready to
//! be pinned under `scenarios/regressions/`.
//!
//! The structured part is shrunk by delta debugging (Zeller's ddmin) over the fault
//! list, then by dropping request kinds from the mix one at a time. Chaos entries are
//! first expanded with the seed into the crashes and bounces they made, so each can be
//! dropped on its own. "The same way" means a violation with the same rule and subject
//! as one of the original's (`expect: detection of backend-2`, `I1: requests that never
//! ended`), so a shrink step cannot trade the bug for another one; and a candidate may
//! not leave fewer backends running at any time than the original did (dropping the
//! bounces of a chaos run could otherwise "shrink" it to a run where every backend is
//! dead, which fails liveness for a reason of its own).
//!
//! Why not proptest's shrinker: it shrinks values it generated itself, through its
//! strategies; here the failing input is a given file and the seed must stay fixed, and
//! a deterministic ddmin over the list is simpler to follow and to bound (each step is
//! one simulated run).

use crate::oracle::{self, Violation};
use crate::runner;
use crate::scenario::{Fault, Prepared, Scenario, TimedFault};
use std::collections::BTreeSet;

/// Most simulated runs one shrink may take.
pub const RUNS_MAX: usize = 400;

/// The result of a shrink.
pub struct Shrunk {
    /// The smallest failing scenario found.
    pub scenario: Scenario,
    /// Its violations.
    pub violations: Vec<Violation>,
    /// Simulated runs taken.
    pub runs: usize,
    /// Faults before (chaos expanded) and after.
    pub faults: (usize, usize),
    /// Mix entries before and after.
    pub mix: (usize, usize),
}

/// The rule and subject of a violation: its message up to the first `(` or `:`.
fn key(v: &Violation) -> String {
    let subject = v.message.split(['(', ':']).next().unwrap_or("").trim();
    format!("{} {subject}", v.rule)
}

struct Search<'a> {
    base: &'a Prepared,
    /// Backend host names.
    backends: Vec<String>,
    /// The fewest backends the original kept running: candidates keep at least as many.
    fewest_running: usize,
    seed: u64,
    keys: BTreeSet<String>,
    runs: usize,
    progress: &'a mut dyn FnMut(&str),
}

/// The fewest backends running (not crashed) at any time of `timeline`.
fn fewest_running(backends: &[String], timeline: &[TimedFault]) -> usize {
    let mut up = vec![true; backends.len()];
    let mut fewest = backends.len();
    for f in timeline {
        let (host, state) = match &f.fault {
            Fault::Crash(h) => (h, false),
            Fault::Bounce(h) => (h, true),
            _ => continue,
        };
        if let Some(i) = backends.iter().position(|b| b == host) {
            up[i] = state;
            fewest = fewest.min(up.iter().filter(|u| **u).count());
        }
    }
    fewest
}

impl Search<'_> {
    /// Runs `timeline` and `mix`; the violations if it fails the same way.
    fn fails(&mut self, timeline: &[TimedFault], mix: &[crate::scenario::MixEntry]) -> Option<Vec<Violation>> {
        if self.runs >= RUNS_MAX || fewest_running(&self.backends, timeline) < self.fewest_running {
            return None;
        }
        self.runs += 1;
        let mut p = self.base.clone();
        p.scenario.timeline = timeline.to_vec();
        p.scenario.workload.mix = mix.to_vec();
        let out = runner::run(&p, self.seed).ok()?;
        let report = oracle::check(&p, &out);
        let same = report.violations.iter().any(|v| self.keys.contains(&key(v)));
        (self.progress)(&format!(
            "run {}: {} faults, {} mix entries: {}",
            self.runs,
            timeline.len(),
            mix.len(),
            if same {
                "still fails"
            } else {
                "passes (or fails otherwise)"
            }
        ));
        same.then_some(report.violations)
    }
}

/// Shrinks `p` at `seed`. `progress` hears one line per simulated run.
pub fn shrink(p: &Prepared, seed: u64, progress: &mut dyn FnMut(&str)) -> Result<Shrunk, String> {
    let out = runner::run(p, seed)?;
    let first = oracle::check(p, &out);
    if first.violations.is_empty() {
        return Err(format!("seed {seed} does not fail: nothing to shrink"));
    }
    let mut faults = runner::expand(&p.scenario.timeline, seed);
    let mut mix = p.scenario.workload.mix.clone();
    let before = (faults.len(), mix.len());
    let backends: Vec<String> = p.scenario.backends.iter().map(|b| b.name.clone()).collect();
    let mut search = Search {
        fewest_running: fewest_running(&backends, &faults),
        backends,
        base: p,
        seed,
        keys: first.violations.iter().map(key).collect(),
        runs: 1,
        progress,
    };
    let mut violations = search
        .fails(&faults, &mix)
        .ok_or("the scenario with its chaos expanded no longer fails the same way")?;

    // ddmin over the faults: remove chunks, halving their size when none can go.
    let mut n = 2usize;
    while faults.len() >= 2 && search.runs < RUNS_MAX {
        let chunk = faults.len().div_ceil(n);
        let mut reduced = false;
        let mut start = 0;
        while start < faults.len() {
            let mut candidate = faults.clone();
            candidate.drain(start..(start + chunk).min(faults.len()));
            if let Some(v) = search.fails(&candidate, &mix) {
                faults = candidate;
                violations = v;
                reduced = true;
                n = (n - 1).max(2);
                break;
            }
            start += chunk;
        }
        if !reduced {
            if chunk == 1 {
                break;
            }
            n = (n * 2).min(faults.len());
        }
    }
    if faults.len() == 1 {
        if let Some(v) = search.fails(&[], &mix) {
            faults.clear();
            violations = v;
        }
    }
    // The mix: drop kinds one at a time while it still fails.
    let mut i = 0;
    while mix.len() > 1 && i < mix.len() {
        let mut candidate = mix.clone();
        candidate.remove(i);
        match search.fails(&faults, &candidate) {
            Some(v) => {
                mix = candidate;
                violations = v;
            }
            None => i += 1,
        }
    }
    let mut scenario = p.scenario.clone();
    scenario.timeline = faults;
    scenario.workload.mix = mix;
    scenario.seeds = vec![seed];
    scenario.description = format!(
        "Shrunk from {} (scenario {}) at seed {seed}: {}. Pinned as a regression: it fails until the bug is fixed.",
        p.origin,
        p.scenario.name,
        violations.iter().map(key).collect::<Vec<_>>().join("; ")
    );
    scenario.name = format!("{}-seed{seed}", p.scenario.name);
    Ok(Shrunk {
        faults: (before.0, scenario.timeline.len()),
        mix: (before.1, scenario.workload.mix.len()),
        scenario,
        violations,
        runs: search.runs,
    })
}
