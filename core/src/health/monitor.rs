//! One pool's health: the state of each backend, and the effective weights it publishes
//! to the pool's balancer.
//!
//! Three sources feed it: active probe results ([`PoolMonitor::record_probe`]),
//! connection outcomes from the data path ([`PoolMonitor::report_connect`], passive
//! detection), and a periodic tick ([`PoolMonitor::tick`]) that ends ejections and moves
//! slow-start ramps along. After each change it recomputes every backend's effective
//! weight and, when they differ from what was published, hands them to the balancer,
//! which every worker reads. The monitor is shared by all workers and the health thread
//! (`Arc`, a `Mutex` around the state); the data path takes the lock only when a result
//! can change something: a failure, or a success after failures.
//!
//! # Across a reload
//!
//! A reload that changes a pool builds a new monitor with
//! [`PoolMonitor::new_carrying`]: every backend that stays (same address) keeps its
//! state: hysteresis and its streak, passive ejection and back-off, slow-start clock,
//! when its next probe is due. A backend the reload adds starts up, and ramps through
//! slow start when the pool has it (like a recovered one). The old monitor is then
//! *retired*, atomically with the copy (under its lock): it ignores probe results and
//! ticks (its probe tasks are being stopped) and forwards the data path's reports on
//! backends that stay to the new monitor, so a connection of the old generation that
//! fails still counts towards the backend's passive ejection. Event counters
//! ([`HealthStats`]) are shared by every generation of the pool.

use super::state::{slow_start_weight, EjectOutcome, Hysteresis, Passive, PassiveRules, WEIGHT_SCALE};
use crate::balancer::Balancer;
use crate::config::{AllDown, CheckConfig, PoolConfig, PoolHealth};
use crate::io::Instant;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// Warnings about a pool with no available backend are logged at most this often.
const NO_BACKEND_WARN_INTERVAL: Duration = Duration::from_secs(1);

/// Counters of one pool's health events (monotonic).
#[derive(Debug, Default)]
pub struct HealthStats {
    /// Backends that went from available to unavailable or back.
    pub transitions_total: AtomicU64,
    /// Passive ejections.
    pub ejections_total: AtomicU64,
    /// Passive ejections refused because the pool's ejection budget was spent.
    pub ejections_refused_total: AtomicU64,
    /// Times the pool entered the all-down state.
    pub all_down_total: AtomicU64,
    /// Client connections that found no backend to try.
    pub no_backend_total: AtomicU64,
}

/// A backend's health as seen from outside, for logs and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendStatus {
    /// The backend's name.
    pub name: String,
    /// Active checks say up (always true without active checks).
    pub checks_up: bool,
    /// Passively ejected now.
    pub ejected: bool,
    /// The published effective weight, in [`WEIGHT_SCALE`] units.
    pub weight: u32,
    /// The last probe's result.
    pub last_probe: String,
}

#[derive(Debug)]
struct Backend {
    active: Option<Hysteresis>,
    passive: Passive,
    /// When it last became available again, for slow start; `None` = full weight.
    available_since: Option<Instant>,
    last_probe: String,
    /// When the next active probe is due, as its probe task scheduled it: a reload's
    /// new probe task starts there, so the probe cadence has no gap.
    next_probe_at: Option<Instant>,
}

#[derive(Debug)]
struct Inner {
    backends: Vec<Backend>,
    /// The weights last handed to the balancer.
    published: Vec<u32>,
    all_down: bool,
}

/// The health of one pool.
#[derive(Debug)]
pub struct PoolMonitor {
    pool: String,
    names: Vec<String>,
    /// Backend identity across reloads.
    addrs: Vec<SocketAddr>,
    /// Configured weights (0 = drained).
    base: Vec<u32>,
    checks: Vec<Option<CheckConfig>>,
    settings: PoolHealth,
    balancer: Balancer,
    inner: Mutex<Inner>,
    /// Per backend: a failure was counted since the last success. Lets a success skip
    /// the lock in the common case.
    failing: Vec<AtomicBool>,
    /// Last no-backend warning, in nanoseconds since the clock's origin.
    last_no_backend_warn_ns: AtomicU64,
    /// Event counters, shared by every generation of the pool.
    pub stats: Arc<HealthStats>,
    /// Set when a reload replaced this monitor: where the data path's reports go now.
    successor: OnceLock<Successor>,
}

/// The monitor that replaced a retired one, and where each backend went.
#[derive(Debug)]
struct Successor {
    monitor: Arc<PoolMonitor>,
    /// By this monitor's backend index: the backend's index in `monitor`, if it stayed.
    index: Vec<Option<usize>>,
}

impl PoolMonitor {
    /// The monitor of `pool`, publishing to `balancer` (built over the same backends in
    /// the same order). Every backend starts available at full weight.
    pub fn new(pool: &PoolConfig, balancer: Balancer) -> Arc<PoolMonitor> {
        PoolMonitor::new_carrying(pool, balancer, None, Instant::ZERO)
    }

    /// The monitor of a pool's new generation after a reload, at `now`: like
    /// [`PoolMonitor::new`], but each backend of `pool` that `old` also has (same
    /// address) keeps its health state, counters are shared with `old`, and `old` is
    /// retired (see the module documentation). A backend new to the pool starts up and,
    /// when the pool has slow start, ramps from `now`. With `old` = `None` this is
    /// `new`.
    ///
    /// The weights published to `balancer` are the effective weights at `now`.
    pub fn new_carrying(
        pool: &PoolConfig,
        balancer: Balancer,
        old: Option<&Arc<PoolMonitor>>,
        now: Instant,
    ) -> Arc<PoolMonitor> {
        let checks: Vec<Option<CheckConfig>> = pool.backends.iter().map(|b| b.check.clone()).collect();
        let addrs: Vec<SocketAddr> = pool.backends.iter().map(|b| b.address).collect();
        // Held from the copy to the retirement: no probe result or report lands in the
        // old state after it was copied.
        let old_inner = old.map(|o| o.lock());
        let from: Vec<Option<usize>> = match old {
            Some(o) => {
                let by_addr: BTreeMap<SocketAddr, usize> = o.addrs.iter().enumerate().map(|(j, a)| (*a, j)).collect();
                addrs.iter().map(|a| by_addr.get(a).copied()).collect()
            }
            None => vec![None; addrs.len()],
        };
        let prev = |i: usize| -> Option<&Backend> {
            let j = from.get(i).copied().flatten()?;
            old_inner.as_ref()?.backends.get(j)
        };
        let backends: Vec<Backend> = checks
            .iter()
            .enumerate()
            .map(|(i, check)| {
                let before = prev(i);
                Backend {
                    active: match (check, before.and_then(|b| b.active.as_ref())) {
                        (Some(c), Some(h)) => Some(h.with_thresholds(c.rise, c.fall)),
                        (Some(c), None) => Some(Hysteresis::new(c.rise, c.fall, true)),
                        (None, _) => None,
                    },
                    passive: before.map(|b| b.passive.clone()).unwrap_or_default(),
                    available_since: before.and_then(|b| b.available_since),
                    last_probe: before.map_or_else(|| "none yet".to_string(), |b| b.last_probe.clone()),
                    // A probe due later than one new interval (the interval shrank) is
                    // brought forward.
                    next_probe_at: match (check, before.and_then(|b| b.next_probe_at)) {
                        (Some(c), Some(at)) => Some(at.min(now + c.interval)),
                        _ => None,
                    },
                }
            })
            .collect();
        // What the old generation published, by new index: a backend new to the pool
        // counts as unavailable until now, which starts its slow-start ramp.
        let published: Vec<u32> = match &old_inner {
            Some(o) => (0..addrs.len())
                .map(|i| from[i].and_then(|j| o.published.get(j).copied()).unwrap_or(0))
                .collect(),
            None => Vec::new(),
        };
        let base: Vec<u32> = pool.backends.iter().map(|b| b.weight).collect();
        let monitor = Arc::new(PoolMonitor {
            pool: pool.name.clone(),
            names: pool.backends.iter().map(|b| b.name.clone()).collect(),
            failing: (0..addrs.len())
                .map(|i| {
                    let was = match (old, from[i]) {
                        (Some(o), Some(j)) => o.failing.get(j).is_some_and(|f| f.load(Ordering::Acquire)),
                        _ => false,
                    };
                    AtomicBool::new(was)
                })
                .collect(),
            addrs,
            base,
            checks,
            settings: pool.health.clone(),
            balancer,
            inner: Mutex::new(Inner {
                backends,
                published,
                all_down: old_inner.as_ref().is_some_and(|o| o.all_down),
            }),
            last_no_backend_warn_ns: AtomicU64::new(u64::MAX),
            stats: old.map(|o| o.stats.clone()).unwrap_or_default(),
            successor: OnceLock::new(),
        });
        let mut inner = monitor.lock();
        let before = inner.published.clone();
        let weights = monitor.effective_weights(&mut inner, now);
        if !before.is_empty() {
            // Only backends that stayed can change state; a new one merely joins.
            let changed = (0..weights.len())
                .filter(|&i| from[i].is_some() && (weights[i] > 0) != (before[i] > 0))
                .count();
            monitor
                .stats
                .transitions_total
                .fetch_add(changed as u64, Ordering::Relaxed);
        }
        if let Err(e) = monitor.balancer.set_weights(&weights) {
            tracing::error!(pool = %monitor.pool, error = ?e, "cannot publish effective weights");
        }
        inner.published = weights;
        drop(inner);
        if let Some(o) = old {
            let mut index = vec![None; o.addrs.len()];
            for (i, j) in from.iter().enumerate() {
                if let Some(j) = j {
                    index[*j] = Some(i);
                }
            }
            // A monitor is replaced once; a second `set` cannot happen.
            let _ = o.successor.set(Successor {
                monitor: monitor.clone(),
                index,
            });
        }
        drop(old_inner);
        monitor
    }

    /// Whether a reload replaced this monitor.
    pub fn is_retired(&self) -> bool {
        self.successor.get().is_some()
    }

    /// The pool's name.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// Backends with an active check: (index, check).
    pub fn checks(&self) -> impl Iterator<Item = (usize, &CheckConfig)> {
        self.checks
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
    }

    /// Whether anything needs a periodic [`PoolMonitor::tick`]: passive ejections to
    /// end or slow-start ramps to move.
    pub fn needs_ticks(&self) -> bool {
        self.settings.passive.consecutive_failures > 0 || !self.settings.slow_start.is_zero()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every update is a
        // single assignment); keep serving rather than poison every worker.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn rules(&self) -> PassiveRules {
        PassiveRules {
            consecutive_failures: self.settings.passive.consecutive_failures,
            ejection: self.settings.passive.ejection,
            max_ejection: self.settings.passive.max_ejection,
        }
    }

    /// The data path's report of a connection to backend `idx`: `ok` after a
    /// successful connect, not `ok` after a refused or timed-out connect or a reset.
    pub fn report_connect(&self, idx: usize, ok: bool, why: &str, now: Instant) {
        if self.forward(idx, ok, why, now) {
            return;
        }
        let Some(failing) = self.failing.get(idx) else {
            return;
        };
        if ok {
            // The common case, a success on a backend with no failure counted, is one
            // plain load: no locked read-modify-write on a line every worker shares.
            if !failing.load(Ordering::Acquire) || !failing.swap(false, Ordering::AcqRel) {
                return;
            }
            let mut inner = self.lock();
            if self.is_retired() {
                drop(inner);
                self.forward(idx, ok, why, now);
                return;
            }
            if let Some(b) = inner.backends.get_mut(idx) {
                b.passive.on_success();
            }
            return;
        }
        let mut inner = self.lock();
        // Retired while this report waited for the lock: the state was copied already.
        if self.is_retired() {
            drop(inner);
            self.forward(idx, ok, why, now);
            return;
        }
        // Set under the lock, with the failure counted below: a success that clears the
        // flag then always finds the failure to clear (set before the lock, a concurrent
        // success could clear it first and leave this failure counted for ever).
        failing.store(true, Ordering::Release);
        let eligible = self.base.iter().filter(|w| **w > 0).count();
        let ejected = inner.backends.iter().filter(|b| b.passive.is_ejected(now)).count();
        let budget = usize::from(self.settings.passive.max_ejected_percent) * eligible;
        let may_eject = (ejected + 1) * 100 <= budget;
        let rules = self.rules();
        let Some(b) = inner.backends.get_mut(idx) else {
            return;
        };
        match b.passive.on_failure(now, &rules, may_eject) {
            EjectOutcome::Ejected(until) => {
                self.stats.ejections_total.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    pool = %self.pool,
                    backend = %self.names[idx],
                    reason = why,
                    ejected_for_ms = until.saturating_duration_since(now).as_millis() as u64,
                    "backend ejected after consecutive failures"
                );
                self.publish(&mut inner, now);
            }
            EjectOutcome::Refused => {
                self.stats.ejections_refused_total.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    pool = %self.pool,
                    backend = %self.names[idx],
                    reason = why,
                    max_ejected_percent = self.settings.passive.max_ejected_percent,
                    "backend keeps failing but the pool's ejection budget is spent; not ejecting"
                );
            }
            EjectOutcome::Counted | EjectOutcome::AlreadyEjected => {}
        }
    }

    /// Hands a data-path report to the successor, if this monitor is retired; true
    /// when it was (the report then belongs to the successor, or to nobody when the
    /// backend left the pool).
    fn forward(&self, idx: usize, ok: bool, why: &str, now: Instant) -> bool {
        let Some(next) = self.successor.get() else {
            return false;
        };
        if let Some(Some(j)) = next.index.get(idx) {
            next.monitor.report_connect(*j, ok, why, now);
        }
        true
    }

    /// An active probe's result for backend `idx`.
    pub fn record_probe(&self, idx: usize, result: &Result<String, String>, now: Instant) {
        let mut inner = self.lock();
        // A retired monitor's probe tasks are being stopped; the new monitor's own
        // tasks probe the backends that stayed.
        if self.is_retired() {
            return;
        }
        let Some(b) = inner.backends.get_mut(idx) else {
            return;
        };
        b.last_probe = match result {
            Ok(s) => s.clone(),
            Err(s) => s.clone(),
        };
        let Some(active) = b.active.as_mut() else {
            return;
        };
        let Some(up) = active.observe(result.is_ok()) else {
            return;
        };
        let check = self.checks.get(idx).and_then(|c| c.as_ref());
        let (threshold, reason) = match (up, check) {
            (true, Some(c)) => (c.rise, "consecutive successful health checks"),
            (false, Some(c)) => (c.fall, "consecutive failed health checks"),
            (_, None) => (0, "health checks"),
        };
        tracing::warn!(
            pool = %self.pool,
            backend = %self.names[idx],
            state = if up { "up" } else { "down" },
            reason = %format!("{threshold} {reason}"),
            last_probe = %b.last_probe,
            "backend health changed"
        );
        // A backend coming back after active checks also sheds its passive back-off.
        if up {
            b.passive.on_success();
        }
        self.publish(&mut inner, now);
    }

    /// Ends ejections whose time has come and moves slow-start ramps along.
    pub fn tick(&self, now: Instant) {
        let mut inner = self.lock();
        if self.is_retired() {
            return;
        }
        for (i, b) in inner.backends.iter_mut().enumerate() {
            if b.passive.expire(now) {
                tracing::info!(pool = %self.pool, backend = %self.names[i], "ejection ended; backend half-open");
                // Half-open: the next success must take the lock to clear the back-off
                // (found by the chaos sweep, seed 27: without this, successes never reset
                // it and every later ejection doubled until the backend stayed out).
                if let Some(f) = self.failing.get(i) {
                    f.store(true, Ordering::Release);
                }
            }
        }
        self.publish(&mut inner, now);
    }

    /// When backend `idx`'s next probe is due, if a probe task (of this monitor or of
    /// the one it replaced) has scheduled one.
    pub fn next_probe_at(&self, idx: usize) -> Option<Instant> {
        self.lock().backends.get(idx).and_then(|b| b.next_probe_at)
    }

    /// Records when backend `idx`'s next probe is due.
    pub fn schedule_probe(&self, idx: usize, at: Instant) {
        if let Some(b) = self.lock().backends.get_mut(idx) {
            b.next_probe_at = Some(at);
        }
    }

    /// Recomputes effective weights and hands them to the balancer if they changed.
    fn publish(&self, inner: &mut Inner, now: Instant) {
        let weights = self.effective_weights(inner, now);
        let published = &mut inner.published;
        if weights != *published {
            if !published.is_empty() {
                let changed = weights
                    .iter()
                    .zip(published.iter())
                    .filter(|(a, b)| (**a > 0) != (**b > 0))
                    .count();
                self.stats
                    .transitions_total
                    .fetch_add(changed as u64, Ordering::Relaxed);
            }
            if let Err(e) = self.balancer.set_weights(&weights) {
                tracing::error!(pool = %self.pool, error = ?e, "cannot publish effective weights");
                return;
            }
            *published = weights;
        }
    }

    /// Every backend's effective weight at `now`; moves slow-start clocks and the
    /// all-down state (logging its changes) along the way.
    fn effective_weights(&self, inner: &mut Inner, now: Instant) -> Vec<u32> {
        let window = self.settings.slow_start;
        let mut weights = Vec::with_capacity(self.base.len());
        let Inner {
            backends,
            published,
            all_down,
        } = inner;
        for (i, b) in backends.iter_mut().enumerate() {
            let base = self.base.get(i).copied().unwrap_or(0);
            let available = base > 0 && b.active.as_ref().is_none_or(|a| a.is_up()) && !b.passive.is_ejected(now);
            let was_available = published.get(i).is_some_and(|w| *w > 0) && !*all_down;
            if !available {
                // Remember nothing: the ramp starts when it comes back.
                b.available_since = None;
                weights.push(0);
                continue;
            }
            if !published.is_empty() && !was_available && b.available_since.is_none() && !window.is_zero() {
                b.available_since = Some(now);
            }
            let since = b.available_since.map(|t| now.saturating_duration_since(t));
            if since.is_some_and(|s| s >= window) {
                b.available_since = None;
            }
            weights.push(slow_start_weight(base, since, window));
        }
        let none_up = weights.iter().all(|w| *w == 0);
        if none_up && !*all_down {
            self.stats.all_down_total.fetch_add(1, Ordering::Relaxed);
            match self.settings.when_all_down {
                AllDown::Refuse => {
                    tracing::error!(pool = %self.pool, "no backend available: refusing connections until one recovers")
                }
                AllDown::FailOpen => tracing::error!(
                    pool = %self.pool,
                    "no backend available: failing open, every configured backend takes traffic again"
                ),
            }
        } else if !none_up && *all_down {
            tracing::info!(pool = %self.pool, "a backend is available again");
        }
        *all_down = none_up;
        if none_up && self.settings.when_all_down == AllDown::FailOpen {
            weights = self.base.iter().map(|w| w.saturating_mul(WEIGHT_SCALE)).collect();
        }
        weights
    }

    /// Counts a client connection that found no backend to try, warning at most once
    /// a second.
    pub fn note_no_backend(&self, now: Instant) {
        self.stats.no_backend_total.fetch_add(1, Ordering::Relaxed);
        let now_ns = u64::try_from(now.since_origin().as_nanos()).unwrap_or(u64::MAX);
        let last = self.last_no_backend_warn_ns.load(Ordering::Relaxed);
        let interval = NO_BACKEND_WARN_INTERVAL.as_nanos() as u64;
        if (last == u64::MAX || now_ns.saturating_sub(last) >= interval)
            && self
                .last_no_backend_warn_ns
                .compare_exchange(last, now_ns, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                pool = %self.pool,
                refused_total = self.stats.no_backend_total.load(Ordering::Relaxed),
                "no backend available for a client connection"
            );
        }
    }

    /// Every backend's status.
    pub fn snapshot(&self, now: Instant) -> Vec<BackendStatus> {
        let inner = self.lock();
        inner
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| BackendStatus {
                name: self.names.get(i).cloned().unwrap_or_default(),
                checks_up: b.active.as_ref().is_none_or(|a| a.is_up()),
                ejected: b.passive.is_ejected(now),
                weight: inner.published.get(i).copied().unwrap_or(0),
                last_probe: b.last_probe.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn at(ms: u64) -> Instant {
        Instant::from_origin(Duration::from_millis(ms))
    }

    /// Pool `p` of a parsed config with `health` settings over `backends` (name, port).
    fn pool(health: &str, backends: &[(&str, u16)]) -> PoolConfig {
        let list: Vec<String> = backends
            .iter()
            .map(|(n, port)| format!("(address: \"10.0.0.1:{port}\", name: \"{n}\")"))
            .collect();
        let text = format!(
            "(listeners: [(bind: \"127.0.0.1:1\", pool: \"p\")],
              pools: [(name: \"p\", algorithm: \"weighted\", {health} backends: [{}])])",
            list.join(", ")
        );
        let config = Config::parse(&text, "test").unwrap_or_else(|e| panic!("{e}"));
        config.pools[0].clone()
    }

    fn monitor(config: &PoolConfig, old: Option<&Arc<PoolMonitor>>, now: Instant) -> Arc<PoolMonitor> {
        let weights: Vec<u32> = config.backends.iter().map(|b| b.weight).collect();
        PoolMonitor::new_carrying(config, Balancer::new(config.algorithm, &weights), old, now)
    }

    const CHECKS: &str = "health_check: (kind: \"tcp\", interval: \"1s\", timeout: \"500ms\", rise: 2, fall: 2),
                          passive: (consecutive_failures: 1, ejection: \"10s\", max_ejected_percent: 100),
                          slow_start: \"10s\",";

    #[test]
    fn state_of_the_backends_that_stay_carries_over_by_address() {
        let first = pool(CHECKS, &[("a", 1), ("b", 2), ("c", 3)]);
        let old = monitor(&first, None, at(0));
        // a goes down on its checks, b is ejected, c is due for a probe at 1.5s.
        old.record_probe(0, &Err("refused".into()), at(100));
        old.record_probe(0, &Err("refused".into()), at(200));
        old.report_connect(1, false, "refused", at(300));
        old.schedule_probe(2, at(1500));
        let snap = old.snapshot(at(400));
        assert!(!snap[0].checks_up && snap[1].ejected, "{snap:?}");
        let transitions = old.stats.transitions_total.load(Ordering::Relaxed);

        // The reload reorders them, renames c and adds d.
        let next = pool(CHECKS, &[("d", 4), ("c2", 3), ("b", 2), ("a", 1)]);
        let new = monitor(&next, Some(&old), at(1000));
        let snap = new.snapshot(at(1000));
        assert!(!snap[3].checks_up && snap[3].weight == 0, "a stays down: {snap:?}");
        assert!(snap[2].ejected && snap[2].weight == 0, "b stays ejected: {snap:?}");
        assert_eq!(snap[1].weight, 64, "c keeps its full weight");
        assert_eq!(snap[0].weight, 1, "d, new, slow-starts from the reload");
        assert_eq!(new.balancer.weights(), [1, 64, 0, 0]);
        assert_eq!(new.next_probe_at(1), Some(at(1500)), "c keeps its probe cadence");
        assert_eq!(new.next_probe_at(0), None, "d's first probe is spread as at start-up");
        // Joining is not a state change; the counters are the pool's, shared.
        assert!(Arc::ptr_eq(&old.stats, &new.stats));
        assert_eq!(new.stats.transitions_total.load(Ordering::Relaxed), transitions);
        // a comes back after `rise` probes of the new generation; d ramps on.
        new.record_probe(3, &Ok("connected".into()), at(2000));
        new.record_probe(3, &Ok("connected".into()), at(3000));
        assert!(new.snapshot(at(3000))[3].checks_up);
        new.tick(at(6000));
        assert_eq!(new.snapshot(at(6000))[0].weight, 32, "half the window, half the weight");
    }

    #[test]
    fn a_success_after_an_ejection_clears_the_back_off() {
        // Regression (chaos sweep, seed 27): successes after a half-open ejection must
        // reset the back-off, or every later ejection lasts twice as long as the last.
        let passive =
            "passive: (consecutive_failures: 2, ejection: \"10s\", max_ejection: \"5m\", max_ejected_percent: 100),";
        let m = monitor(&pool(passive, &[("a", 1), ("b", 2)]), None, at(0));
        m.report_connect(0, false, "refused", at(0));
        m.report_connect(0, false, "refused", at(1));
        assert!(m.snapshot(at(2))[0].ejected);
        m.tick(at(10_001));
        assert!(!m.snapshot(at(10_001))[0].ejected, "half-open after 10s");
        m.report_connect(0, true, "connected", at(10_002));
        // Back to a clean state: one failure is not enough, two eject for the base 10s.
        m.report_connect(0, false, "refused", at(20_000));
        assert!(!m.snapshot(at(20_000))[0].ejected);
        m.report_connect(0, false, "refused", at(20_001));
        assert!(m.snapshot(at(20_002))[0].ejected);
        m.tick(at(30_001));
        assert!(!m.snapshot(at(30_001))[0].ejected, "ejected for 10s, not 20s");
    }

    #[test]
    fn a_retired_monitor_forwards_reports_and_ignores_probes() {
        let first = pool(CHECKS, &[("a", 1), ("b", 2)]);
        let old = monitor(&first, None, at(0));
        let next = pool(CHECKS, &[("b", 2), ("c", 3)]);
        let new = monitor(&next, Some(&old), at(0));
        assert!(old.is_retired() && !new.is_retired());
        // A connection of the old generation fails on b: b is ejected in the new one.
        old.report_connect(1, false, "refused", at(10));
        assert!(new.snapshot(at(10))[0].ejected);
        assert_eq!(new.balancer.weights()[0], 0);
        // a left: its reports go nowhere.
        old.report_connect(0, false, "refused", at(10));
        assert_eq!(new.stats.ejections_total.load(Ordering::Relaxed), 1);
        // The old generation's probe tasks are being stopped: their results are ignored,
        // and its balancer keeps what it had.
        let frozen = old.balancer.weights();
        old.record_probe(1, &Err("refused".into()), at(20));
        old.record_probe(1, &Err("refused".into()), at(30));
        old.tick(at(40_000));
        assert_eq!(old.balancer.weights(), frozen);
        assert!(old.snapshot(at(40)).iter().all(|s| s.checks_up));
    }

    #[test]
    fn a_changed_check_keeps_the_state_under_the_new_thresholds() {
        let first = pool(CHECKS, &[("a", 1)]);
        let old = monitor(&first, None, at(0));
        old.record_probe(0, &Err("refused".into()), at(100));
        old.schedule_probe(0, at(5000));
        // fall 2 -> 1 and a shorter interval: the carried streak flips it on the next
        // failure, and the probe due in 5s is brought forward to one new interval.
        let next = pool(
            "health_check: (kind: \"tcp\", interval: \"500ms\", timeout: \"100ms\", rise: 2, fall: 1),",
            &[("a", 1)],
        );
        let new = monitor(&next, Some(&old), at(1000));
        assert!(new.snapshot(at(1000))[0].checks_up);
        assert_eq!(new.next_probe_at(0), Some(at(1500)));
        new.record_probe(0, &Err("refused".into()), at(1500));
        assert!(!new.snapshot(at(1500))[0].checks_up);
    }
}
