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

use super::state::{slow_start_weight, EjectOutcome, Hysteresis, Passive, PassiveRules, WEIGHT_SCALE};
use crate::balancer::Balancer;
use crate::config::{AllDown, CheckConfig, PoolConfig, PoolHealth};
use crate::io::Instant;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
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
    /// Event counters.
    pub stats: HealthStats,
}

impl PoolMonitor {
    /// The monitor of `pool`, publishing to `balancer` (built over the same backends in
    /// the same order). Every backend starts available at full weight.
    pub fn new(pool: &PoolConfig, balancer: Balancer) -> Arc<PoolMonitor> {
        let checks: Vec<Option<CheckConfig>> = pool.backends.iter().map(|b| b.check.clone()).collect();
        let backends = checks
            .iter()
            .map(|c| Backend {
                active: c.as_ref().map(|c| Hysteresis::new(c.rise, c.fall, true)),
                passive: Passive::default(),
                available_since: None,
                last_probe: "none yet".to_string(),
            })
            .collect();
        let base: Vec<u32> = pool.backends.iter().map(|b| b.weight).collect();
        let monitor = Arc::new(PoolMonitor {
            pool: pool.name.clone(),
            names: pool.backends.iter().map(|b| b.name.clone()).collect(),
            failing: base.iter().map(|_| AtomicBool::new(false)).collect(),
            base,
            checks,
            settings: pool.health.clone(),
            balancer,
            inner: Mutex::new(Inner {
                backends,
                published: Vec::new(),
                all_down: false,
            }),
            last_no_backend_warn_ns: AtomicU64::new(u64::MAX),
            stats: HealthStats::default(),
        });
        let mut inner = monitor.lock();
        monitor.publish(&mut inner, Instant::ZERO);
        drop(inner);
        monitor
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
        let Some(failing) = self.failing.get(idx) else {
            return;
        };
        if ok {
            if !failing.swap(false, Ordering::AcqRel) {
                return;
            }
            let mut inner = self.lock();
            if let Some(b) = inner.backends.get_mut(idx) {
                b.passive.on_success();
            }
            return;
        }
        failing.store(true, Ordering::Release);
        let mut inner = self.lock();
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

    /// An active probe's result for backend `idx`.
    pub fn record_probe(&self, idx: usize, result: &Result<String, String>, now: Instant) {
        let mut inner = self.lock();
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
        for (i, b) in inner.backends.iter_mut().enumerate() {
            if b.passive.expire(now) {
                tracing::info!(pool = %self.pool, backend = %self.names[i], "ejection ended; backend half-open");
                if let Some(f) = self.failing.get(i) {
                    f.store(false, Ordering::Release);
                }
            }
        }
        self.publish(&mut inner, now);
    }

    /// Recomputes effective weights and hands them to the balancer if they changed.
    fn publish(&self, inner: &mut Inner, now: Instant) {
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
