//! Runs one seed of a prepared scenario: builds the simulated world, steps it while
//! applying the timeline's faults at their times, and samples the balancer's counters
//! and weights between steps.
//!
//! One seed decides everything: turmoil's network (latencies, random link failures),
//! every host's [`SimEnv`](crate::SimEnv) randomness, and the expansion of `Chaos`
//! entries into concrete crashes and bounces. The same seed therefore gives the same
//! trace, event for event, in any process.
//!
//! A host whose software returns an error, and any panic (in a host's main task, in a
//! task it spawned, or in the runner itself), fails the seed (I6). Panics in spawned
//! tasks are swallowed by tokio, so a panic hook counts them on this thread.

use crate::hosts::{self, ClientSetup, ReloadOp, ReloadRecord, Reloader};
use crate::log::{Log, Quiet, SharedLog, What};
use crate::scenario::{Fault, Load, Prepared, TimedFault, CLOCK_HOST};
use crate::world::BalancerHandle;
use gobalancer::io::{fnv1a64, SplitMix64};
use gobalancer_loadgen::client::Plan;
use gobalancer_loadgen::http::{Framing, ResponseFraming};
use gobalancer_loadgen::target::Target;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::{Arc, Once};
use std::time::Duration;

/// Extra simulated time turmoil allows past the clock's wake-up before it calls the run
/// stuck.
const TURMOIL_SLACK: Duration = Duration::from_secs(30);
/// A counter above this has wrapped below zero.
const COUNTER_NEGATIVE: u64 = 1 << 62;

thread_local! {
    /// Panics seen on this thread since the hook was installed: tokio catches panics of
    /// spawned tasks, so this is how a run learns of them.
    static PANICS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.borrow_mut().push(info.to_string()));
            previous(info);
        }));
    });
}

fn take_panics() -> Vec<String> {
    PANICS.with(|p| std::mem::take(&mut *p.borrow_mut()))
}

/// The balancer's counters, sampled between steps (I5).
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Most active leases at once.
    pub total_active_max: u64,
    /// Problems seen while sampling, each with its time (first few only).
    pub problems: Vec<(Duration, String)>,
    /// At the end of the run: `total_active`, `conn_limit.open()`, per backend active.
    pub at_end: Option<(u64, usize, Vec<u64>)>,
    /// `drained_cut_total` of the workload's pool at the end of the run.
    pub drained_cut_total: u64,
}

/// What one seed produced.
pub struct RunOutput {
    /// The seed.
    pub seed: u64,
    /// The log (requests, receptions, trace).
    pub log: Log,
    /// The timeline as run: chaos expanded, sorted by time.
    pub faults: Vec<TimedFault>,
    /// Counters sampled between steps.
    pub counters: Counters,
    /// Failures that stopped the run (host errors, panics).
    pub failures: Vec<String>,
    /// Simulated time when the run stopped.
    pub elapsed: Duration,
    /// What each reload did, in order (the reload faults).
    pub reloads: Vec<ReloadRecord>,
}

impl RunOutput {
    /// Stream counts at quiescence, when the clock got there.
    pub fn quiet(&self) -> Option<&Quiet> {
        self.log.quiet.as_ref()
    }
}

/// Expands `Chaos` entries with `seed` and sorts the timeline by time (stable: faults at
/// the same time keep their order).
pub fn expand(timeline: &[TimedFault], seed: u64) -> Vec<TimedFault> {
    let mut out = Vec::new();
    for (i, f) in timeline.iter().enumerate() {
        let Fault::Chaos {
            hosts,
            every,
            until,
            min_running,
        } = &f.fault
        else {
            out.push(f.clone());
            continue;
        };
        let mut rng = SplitMix64::new(seed ^ fnv1a64(format!("chaos {i}").as_bytes()));
        let mut up = vec![true; hosts.len()];
        let span = u64::try_from((every.1 .0 - every.0 .0).as_micros()).unwrap_or(u64::MAX);
        let gap = |rng: &mut SplitMix64| every.0 .0 + Duration::from_micros(rng.next_u64() % (span + 1));
        let mut at = f.at.0 + gap(&mut rng);
        while at <= until.0 && out.len() < crate::scenario::FAULTS_MAX {
            let k = (rng.next_u64() % hosts.len() as u64) as usize;
            let running = up.iter().filter(|u| **u).count();
            let fault = if !up[k] {
                up[k] = true;
                Fault::Bounce(hosts[k].clone())
            } else if running > *min_running as usize && rng.next_u64().is_multiple_of(2) {
                up[k] = false;
                Fault::Crash(hosts[k].clone())
            } else {
                // A restart in place: its open connections are cut, it stays up.
                Fault::Bounce(hosts[k].clone())
            };
            out.push(TimedFault {
                at: crate::scenario::Dur(at),
                fault,
            });
            at += gap(&mut rng);
        }
    }
    out.sort_by_key(|f| f.at);
    out
}

/// The loadgen plan of the workload: HTTP to the balancer's listener, requests built by
/// the clients' taps.
pub fn plan(p: &Prepared) -> Result<Plan, String> {
    let w = &p.scenario.workload;
    let (connections, rate_per_s) = match w.load {
        Load::Closed { connections } => (connections, None),
        Load::Open {
            rate_per_s,
            connections,
        } => (connections, Some(rate_per_s)),
    };
    let target = Target::parse(&format!("http://{}:{}/", p.scenario.balancer.name, p.port()))?;
    let plan = Plan {
        target,
        request: Vec::new(),
        reply: Framing::Http(ResponseFraming::new(false)),
        connections,
        threads: u32::try_from(p.scenario.clients.len()).unwrap_or(u32::MAX),
        duration: p.scenario.duration.0,
        requests: None,
        warmup: Duration::ZERO,
        rate_per_s,
        new_conn: w.new_conn,
        timeout: w.timeout.0,
        connect_timeout: w.connect_timeout.0,
    };
    plan.validate().map_err(|e| format!("workload: {e}"))?;
    Ok(plan)
}

/// Applies one fault to the world; `running` follows the tracked hosts' state. The
/// reload family is queued for the balancer host, which applies it through the core's
/// `reload::Live` when it next runs (the step that follows).
fn apply(
    sim: &mut turmoil::Sim<'_>,
    p: &Prepared,
    fault: &Fault,
    running: &mut BTreeMap<String, bool>,
    reloader: &Reloader,
) {
    let pool = || p.config.pools[p.pool].name.clone();
    let address = |h: &str| {
        p.backend(h).map(|i| {
            let b = &p.scenario.backends[i];
            SocketAddr::new(p.addrs[&b.name], b.port)
        })
    };
    match fault {
        Fault::Crash(h) => {
            sim.crash(h.as_str());
            if let Some(up) = running.get_mut(h) {
                *up = false;
            }
        }
        Fault::Bounce(h) => {
            sim.bounce(h.as_str());
            if let Some(up) = running.get_mut(h) {
                *up = true;
            }
        }
        Fault::Partition(a, b) => sim.partition(a.as_str(), b.as_str()),
        Fault::Repair(a, b) => sim.repair(a.as_str(), b.as_str()),
        Fault::PartitionOneway(a, b) => sim.partition_oneway(a.as_str(), b.as_str()),
        Fault::RepairOneway(a, b) => sim.repair_oneway(a.as_str(), b.as_str()),
        Fault::Hold(a, b) => sim.hold(a.as_str(), b.as_str()),
        Fault::Release(a, b) => sim.release(a.as_str(), b.as_str()),
        Fault::LinkLatency(a, b, d) => sim.set_link_latency(a.as_str(), b.as_str(), d.0),
        Fault::LinkFailRate(a, b, r) => sim.set_link_fail_rate(a.as_str(), b.as_str(), *r),
        Fault::Reload(text) => {
            // Checked before the run: every placeholder names a host.
            let text = crate::scenario::substitute(text, &p.addrs).unwrap_or_else(|_| text.clone());
            reloader.send(ReloadOp::Text(text));
        }
        Fault::BackendAdded(h) => {
            if let Some(address) = address(h) {
                reloader.send(ReloadOp::Add {
                    pool: pool(),
                    name: h.clone(),
                    address,
                });
            }
        }
        Fault::BackendRemoved(h) => {
            if let Some(address) = address(h) {
                reloader.send(ReloadOp::Remove { pool: pool(), address });
            }
        }
        Fault::BackendDrained(h) => {
            if let Some(address) = address(h) {
                reloader.send(ReloadOp::Drain { pool: pool(), address });
            }
        }
        // Expanded before running.
        Fault::Chaos { .. } => {}
    }
}

/// Samples the balancer between two steps: weight changes into the log, counter checks
/// into `c`. Reloads replace the workload pool's generation: backends are mapped to the
/// scenario's by address, and every generation seen is kept, since a connection holds
/// its lease on the balancer it was selected from until it ends.
struct Sampler {
    handle: BalancerHandle,
    /// The workload pool's name.
    pool: String,
    /// Backend address to scenario backend index.
    by_addr: BTreeMap<SocketAddr, u16>,
    /// Per scenario backend, its weight in the pool in force (0 when not in it).
    weights: Vec<u32>,
    /// Every generation of the workload pool seen, the one in force last.
    generations: Vec<Arc<gobalancer::proxy::Pool>>,
    /// L7: per scenario backend, its active count at the last sample (of the generation
    /// then in force). An HTTP request on a pooled backend connection makes no
    /// connect, so a rise of a backend's count is how its pick shows.
    leases: Option<Vec<u64>>,
}

impl Sampler {
    fn sample(&mut self, now: Duration, log: &SharedLog, c: &mut Counters) {
        let Some(shared) = self.handle.borrow().clone() else {
            return;
        };
        let Some(pool) = shared.pools.iter().find(|q| q.name == self.pool).cloned() else {
            return;
        };
        let new_generation = !self.generations.last().is_some_and(|g| Arc::ptr_eq(g, &pool));
        if new_generation {
            // A restarted host starts again at generation 1: the old ones are gone.
            if shared.generation == 1 {
                self.generations.clear();
            }
            self.generations.push(pool.clone());
        }
        let in_pool: Vec<Option<u16>> = pool
            .targets
            .iter()
            .map(|t| self.by_addr.get(&t.addr).copied())
            .collect();
        let w = pool.balancer.weights();
        let mut now_weights = vec![0u32; self.by_addr.len()];
        for (i, b) in in_pool.iter().enumerate() {
            if let (Some(b), Some(w)) = (b, w.get(i)) {
                if let Some(x) = now_weights.get_mut(usize::from(*b)) {
                    *x = *w;
                }
            }
        }
        if now_weights != self.weights {
            let mut log = log.borrow_mut();
            let known: Vec<u16> = in_pool.iter().flatten().copied().collect();
            for (b, (new, old)) in now_weights
                .iter()
                .zip(self.weights.iter().chain(std::iter::repeat(&u32::MAX)))
                .enumerate()
            {
                let b = u16::try_from(b).unwrap_or(u16::MAX);
                // Backends never in the pool have no weight to report.
                if new != old && (known.contains(&b) || *old != u32::MAX) {
                    log.push(
                        now,
                        What::Weight {
                            backend: b,
                            weight: *new,
                        },
                    );
                }
            }
            self.weights = now_weights;
        }
        if let Some(last) = self.leases.as_mut() {
            let mut now_active = vec![0u64; last.len()];
            for (i, b) in in_pool.iter().enumerate() {
                if let Some(x) = b.and_then(|b| now_active.get_mut(usize::from(b))) {
                    *x = pool.balancer.active(i);
                }
            }
            if !new_generation {
                let mut log = log.borrow_mut();
                for (b, (new, old)) in now_active.iter().zip(last.iter()).enumerate() {
                    if new > old && *new < COUNTER_NEGATIVE {
                        let backend = u16::try_from(b).unwrap_or(u16::MAX);
                        log.push(now, What::Pick { backend });
                    }
                }
            }
            *last = now_active;
        }
        let total: u64 = self
            .generations
            .iter()
            .fold(0u64, |a, g| a.wrapping_add(g.balancer.total_active()));
        let per: Vec<u64> = (0..pool.targets.len()).map(|i| pool.balancer.active(i)).collect();
        let open = shared.conn_limit.open();
        c.total_active_max = c.total_active_max.max(total);
        c.drained_cut_total = pool.stats.drained_cut_total.load(std::sync::atomic::Ordering::Relaxed);
        let mut problem = |what: String| {
            if c.problems.len() < 10 {
                c.problems.push((now, what));
            }
        };
        let negative = self.generations.iter().any(|g| {
            g.balancer.total_active() > COUNTER_NEGATIVE
                || (0..g.targets.len()).any(|i| g.balancer.active(i) > COUNTER_NEGATIVE)
        });
        if total > COUNTER_NEGATIVE || negative {
            problem(format!("a counter went below zero: total {total}, per backend {per:?}"));
        }
        // Across generations a backend that stays shares its counter, and a lease
        // counts on the balancer it came from: the sums match within one generation.
        let sum: u64 = per.iter().fold(0u64, |a, b| a.wrapping_add(*b));
        if self.generations.len() == 1 && sum != total {
            problem(format!(
                "per-backend active counts {per:?} add up to {sum}, not total_active {total}"
            ));
        }
        // Each client connection holds at most one lease at a time.
        if total > open as u64 {
            problem(format!("{total} leases for {open} open client connections"));
        }
        c.at_end = Some((total, open, per));
    }
}

/// One step of `sim`; a host error or a panic anywhere goes into `failures` (I6) and
/// ends the run. Returns whether the run is over.
pub fn guarded_step(sim: &mut turmoil::Sim<'_>, failures: &mut Vec<String>) -> bool {
    install_panic_hook();
    let step = catch_unwind(AssertUnwindSafe(|| sim.step()));
    let panics = take_panics();
    let now = sim.elapsed().as_secs_f64();
    for p in &panics {
        failures.push(format!("panic at {now:.3}s: {p}"));
    }
    match step {
        Ok(Ok(done)) => done || !panics.is_empty(),
        Ok(Err(e)) => {
            failures.push(format!("host failed at {now:.3}s: {e}"));
            true
        }
        Err(_) => {
            if panics.is_empty() {
                failures.push(format!("the simulation panicked at {now:.3}s"));
            }
            true
        }
    }
}

/// Runs `p` with `seed`.
pub fn run(p: &Prepared, seed: u64) -> Result<RunOutput, String> {
    install_panic_hook();
    take_panics();
    let s = &p.scenario;
    let faults = expand(&s.timeline, seed);
    let end = s.duration.0;
    let quiet_at = end + p.quiesce;
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(quiet_at + TURMOIL_SLACK)
        .min_message_latency(s.network.min_latency.0)
        .max_message_latency(s.network.max_latency.0)
        .build();
    // Addresses first, in the order `scenario::addresses` used, so `${HOST}` resolved
    // to the addresses these hosts get.
    for h in s.hosts() {
        if Some(&sim.lookup(h)) != p.addrs.get(h) {
            return Err(format!("host {h} got another address than the configuration says"));
        }
    }
    let log = Log::new();
    let mut by_addr = BTreeMap::new();
    for (i, b) in s.backends.iter().enumerate() {
        let i16 = u16::try_from(i).map_err(|_| "too many backends".to_string())?;
        hosts::backend(&mut sim, seed, b, i16, log.clone());
        by_addr.insert(SocketAddr::new(p.addrs[&b.name], b.port), i16);
    }
    let reloader = Rc::new(Reloader::default());
    let workers = hosts::WorkerHandle::default();
    let handle = hosts::balancer(
        &mut sim,
        seed,
        &s.balancer.name,
        p.config.clone(),
        p.pool,
        by_addr.clone(),
        log.clone(),
        reloader.clone(),
        workers.clone(),
    );
    let plan = plan(p)?;
    let mix = Rc::new(s.workload.mix.clone());
    for (i, (name, share)) in s.clients.iter().zip(plan.shares()).enumerate() {
        let setup = Rc::new(ClientSetup {
            plan: plan.clone(),
            share,
            mix: mix.clone(),
            end,
        });
        hosts::client(
            &mut sim,
            seed,
            name,
            u16::try_from(i).unwrap_or(u16::MAX),
            setup,
            log.clone(),
        );
    }
    // L7: the backends' streams are counted too (the backend ends of pooled
    // connections, I5).
    let counted_backends = s.backends.iter().filter(|_| p.l7).map(|b| &b.name);
    let running: Rc<RefCell<BTreeMap<String, bool>>> = Rc::new(RefCell::new(
        std::iter::once(&s.balancer.name)
            .chain(s.clients.iter())
            .chain(counted_backends)
            .map(|h| (h.clone(), true))
            .collect(),
    ));
    hosts::clock(
        &mut sim,
        CLOCK_HOST,
        quiet_at,
        // Twice the longest message latency: a FIN on the wire at `quiet_at` has
        // arrived, and its stream is closed.
        s.network.max_latency.0 * 2 + Duration::from_millis(10),
        running.clone(),
        log.clone(),
        (s.balancer.name.clone(), workers),
    );

    let mut sampler = Sampler {
        handle,
        pool: p.config.pools[p.pool].name.clone(),
        by_addr,
        weights: Vec::new(),
        generations: Vec::new(),
        leases: p.l7.then(|| vec![0; s.backends.len()]),
    };
    let mut counters = Counters::default();
    let mut failures = Vec::new();
    let mut next = 0;
    loop {
        let now = sim.elapsed();
        while let Some(f) = faults.get(next).filter(|f| f.at.0 <= now) {
            apply(&mut sim, p, &f.fault, &mut running.borrow_mut(), &reloader);
            log.borrow_mut().push(now, What::Fault(f.fault.label()));
            next += 1;
        }
        sampler.sample(now, &log, &mut counters);
        if guarded_step(&mut sim, &mut failures) {
            break;
        }
    }
    let elapsed = sim.elapsed();
    sampler.sample(elapsed, &log, &mut counters);
    for f in &failures {
        log.borrow_mut().push(elapsed, What::Failure(f.clone()));
    }
    drop(sim);
    let reloads = std::mem::take(&mut *reloader.records.borrow_mut());
    // The hosts' software held clones of the log; the simulation is gone, so this is
    // the last handle unless a host leaked one.
    let log = match Rc::try_unwrap(log) {
        Ok(l) => l.into_inner(),
        Err(shared) => std::mem::take(&mut *shared.borrow_mut()),
    };
    Ok(RunOutput {
        seed,
        log,
        faults,
        counters,
        failures,
        elapsed,
        reloads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_until_done(mut sim: turmoil::Sim<'_>) -> Vec<String> {
        let mut failures = Vec::new();
        for _ in 0..100_000 {
            if guarded_step(&mut sim, &mut failures) {
                break;
            }
        }
        failures
    }

    #[test]
    fn a_panic_in_a_spawned_task_fails_the_run() {
        let mut sim = turmoil::Builder::new().build();
        sim.client("c", async {
            // tokio catches this panic; the hook still sees it.
            let task = tokio::task::spawn_local(async { panic!("planted panic") });
            let _ = task.await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(())
        });
        let failures = run_until_done(sim);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].contains("planted panic"), "{failures:?}");
    }

    #[test]
    fn a_host_error_fails_the_run() {
        let mut sim = turmoil::Builder::new().build();
        sim.host("h", || async { Err("planted error".into()) });
        sim.client("c", async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(())
        });
        let failures = run_until_done(sim);
        assert!(
            failures
                .iter()
                .any(|f| f.contains("host failed") && f.contains("planted error")),
            "{failures:?}"
        );
    }

    #[test]
    fn chaos_expands_the_same_way_for_the_same_seed_and_keeps_one_up() {
        use crate::scenario::Dur;
        let chaos = TimedFault {
            at: Dur::secs(0),
            fault: Fault::Chaos {
                hosts: vec!["a".into(), "b".into()],
                every: (Dur::secs(1), Dur::secs(3)),
                until: Dur::secs(60),
                min_running: 1,
            },
        };
        let a = expand(std::slice::from_ref(&chaos), 7);
        assert_eq!(a, expand(std::slice::from_ref(&chaos), 7));
        assert_ne!(a, expand(std::slice::from_ref(&chaos), 8));
        assert!(a.len() >= 20 && a.len() <= 60, "{}", a.len());
        assert!(a.windows(2).all(|w| w[1].at.0 - w[0].at.0 >= Duration::from_secs(1)));
        let mut up = [true, true];
        for f in &a {
            match &f.fault {
                Fault::Crash(h) => up[usize::from(h == "b")] = false,
                Fault::Bounce(h) => up[usize::from(h == "b")] = true,
                other => panic!("{other:?}"),
            }
            assert!(up.iter().any(|u| *u), "one host stays up");
        }
    }
}
