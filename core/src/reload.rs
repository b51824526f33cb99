//! Configuration hot reload: a new configuration is checked whole, then put in force as
//! the next *generation* without dropping a connection.
//!
//! # What a reload does
//!
//! The binary reloads on SIGHUP: it re-reads its `--config` file, applies the same
//! command-line overrides as at start-up, and hands the result to [`Live::reload`]. In
//! order:
//!
//! 1. **Checked whole, first.** A file that does not parse or validate changes nothing:
//!    the error (every problem, each with `FILE:LINE:COL`) is logged, the old
//!    configuration keeps serving, and [`Reloads::config_reload_failures_total`] counts
//!    it (RELIABILITY.md D6). Since the file is read and parsed completely before
//!    anything is applied, a half-written file is never applied either (D7); writing a
//!    temporary file and renaming it over the old one keeps the reload from seeing a
//!    half-written file at all.
//! 2. **Only pools change live.** Listeners (names, binds, modes, which pool each uses)
//!    and process settings (`workers`, `max_connections`, `buffer_size`) are the sockets,
//!    threads and buffers the process was started with: a configuration that changes
//!    them is refused, saying what changed, and the old one stays (a documented
//!    limitation: those need a restart). Timeouts may change: `connect` and `idle` apply
//!    to new connections, `drain` to the next drain and to shutdown.
//! 3. **Built off the data path, then published.** [`Shared::next_generation`] builds the
//!    new generation of every changed pool, carrying over by backend address the active
//!    counters (so least-connections and the C11 invariants see one count per backend
//!    across generations) and the health state (hysteresis, ejection, slow-start clock;
//!    a new backend slow-starts when the pool has slow start). Unchanged pools are kept
//!    as they are. Each listener's route is then swapped atomically; a connection keeps
//!    the generation it started with.
//! 4. **Drain.** A backend that the reload removes, or whose weight goes to 0, takes no
//!    new connection from that moment; its open connections go on with their real bytes
//!    until `timeouts.drain` after the reload, then are reset and counted in
//!    [`PoolStats::drained_cut_total`](crate::proxy::PoolStats) (C12, invariant I3).
//!    Backends that stay are not drained.
//! 5. **Health tasks follow.** [`run_health`] stops the probe tasks of the pool
//!    generations no longer in force and starts the new ones; a backend that stays keeps
//!    its probe cadence, so the reload leaves no gap longer than one interval.
//!
//! One log line per reload gives the new generation and what changed per pool; one
//! line per drained backend says how many connections its deadline cut, if any.
//!
//! ```
//! use gobalancer::config::Config;
//! use gobalancer::io::Instant;
//! use gobalancer::reload::Live;
//!
//! let text = |backends: &str| {
//!     format!(
//!         "(listeners: [(bind: \"127.0.0.1:8080\", pool: \"web\")],
//!           pools: [(name: \"web\", backends: [{backends}])])"
//!     )
//! };
//! let first = Config::parse(&text("(address: \"10.0.0.1:80\")"), "lb.ron").unwrap();
//! let live = Live::new(first).unwrap();
//!
//! // A reload that adds a backend: generation 2.
//! let next = Config::parse(&text("(address: \"10.0.0.1:80\"), (address: \"10.0.0.2:80\")"), "lb.ron");
//! let report = live.reload(next, Instant::ZERO).unwrap();
//! assert_eq!(report.generation, 2);
//! assert_eq!(live.current().pools[0].targets.len(), 2);
//!
//! // A file with a syntax error changes nothing, and is counted.
//! let broken = Config::parse("(listeners: [", "lb.ron");
//! assert!(live.reload(broken, Instant::ZERO).is_err());
//! assert_eq!(live.current().generation, 2);
//! assert_eq!(live.reloads.failures(), 1);
//! ```

use crate::balancer::Algorithm;
use crate::config::{Config, ConfigError, PoolConfig};
use crate::health;
use crate::io::{race, Either, Env, Instant};
use crate::proxy::{Pool, Shared, Shutdown, ShutdownTrigger};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Process-wide reload counters.
#[derive(Debug, Default)]
pub struct Reloads {
    /// Reloads that were applied (including those that changed nothing).
    pub config_reloads_total: AtomicU64,
    /// Reloads refused: the file did not parse or validate, it changed what needs a
    /// restart, or the process does not run from a file.
    pub config_reload_failures_total: AtomicU64,
    /// The generation of the configuration in force: 1 at start-up, one more per
    /// applied reload that changed something.
    pub generation: AtomicU64,
}

impl Reloads {
    /// Applied reloads so far.
    pub fn successes(&self) -> u64 {
        self.config_reloads_total.load(Ordering::Relaxed)
    }

    /// Refused reloads so far.
    pub fn failures(&self) -> u64 {
        self.config_reload_failures_total.load(Ordering::Relaxed)
    }

    /// The generation in force.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new configuration does not parse or validate.
    #[error("{0}")]
    Invalid(ConfigError),
    /// It changes listeners or process settings.
    #[error("listener/process changes need a restart: {}", .0.join("; "))]
    RestartNeeded(Vec<String>),
    /// There is nothing to reload from (the process runs on flags or the embedded
    /// default).
    #[error("{0}")]
    Refused(String),
    /// The new generation could not be built (a check that validation should have made
    /// failed); nothing was changed.
    #[error("cannot build the new generation: {0}")]
    Build(String),
}

/// What an applied reload changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadReport {
    /// The generation in force after the reload (unchanged when nothing changed).
    pub generation: u64,
    /// Per pool, in the new configuration's order, then the pools removed.
    pub pools: Vec<PoolChange>,
    /// Timeout changes, as `connect 3s -> 1s`.
    pub timeouts: Vec<String>,
}

impl ReloadReport {
    /// Whether the reload changed anything.
    pub fn is_empty(&self) -> bool {
        self.pools.is_empty() && self.timeouts.is_empty()
    }
}

impl fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no changes");
        }
        let mut parts: Vec<String> = self.pools.iter().map(|p| p.to_string()).collect();
        if !self.timeouts.is_empty() {
            parts.push(format!("timeouts: {}", self.timeouts.join(", ")));
        }
        f.write_str(&parts.join("; "))
    }
}

/// How one pool changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolChange {
    /// The pool's name.
    pub pool: String,
    /// What happened to it.
    pub kind: PoolChangeKind,
}

/// What happened to one pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolChangeKind {
    /// New in this configuration.
    Added,
    /// Gone from it (no listener used it).
    Removed,
    /// Changed.
    Changed {
        /// Names of the backends added.
        added: Vec<String>,
        /// Names of the backends removed (drained).
        removed: Vec<String>,
        /// Backends whose weight changed: name, old, new (new 0: drained).
        reweighted: Vec<(String, u32, u32)>,
        /// Backends renamed: old name, new name (same address).
        renamed: Vec<(String, String)>,
        /// The algorithm, when it changed: old, new.
        algorithm: Option<(Algorithm, Algorithm)>,
        /// Health settings (checks, passive detection, slow start, all-down policy)
        /// changed.
        health: bool,
    },
}

impl fmt::Display for PoolChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pool {}: ", self.pool)?;
        match &self.kind {
            PoolChangeKind::Added => f.write_str("added"),
            PoolChangeKind::Removed => f.write_str("removed"),
            PoolChangeKind::Changed {
                added,
                removed,
                reweighted,
                renamed,
                algorithm,
                health,
            } => {
                let mut parts = Vec::new();
                if !added.is_empty() {
                    parts.push(format!("added {}", added.join(" ")));
                }
                if !removed.is_empty() {
                    parts.push(format!("removed {}", removed.join(" ")));
                }
                if !reweighted.is_empty() {
                    let list: Vec<String> = reweighted.iter().map(|(n, a, b)| format!("{n} {a}->{b}")).collect();
                    parts.push(format!("reweighted {}", list.join(" ")));
                }
                if !renamed.is_empty() {
                    let list: Vec<String> = renamed.iter().map(|(a, b)| format!("{a}->{b}")).collect();
                    parts.push(format!("renamed {}", list.join(" ")));
                }
                if let Some((a, b)) = algorithm {
                    parts.push(format!("algorithm {a}->{b}"));
                }
                if *health {
                    parts.push("health settings changed".to_string());
                }
                f.write_str(&parts.join(", "))
            }
        }
    }
}

/// What `next` changes that a reload cannot apply: listeners and process settings. Empty
/// when the reload may go ahead.
pub fn restart_needed(running: &Config, next: &Config) -> Vec<String> {
    let mut reasons = Vec::new();
    if running.workers != next.workers {
        reasons.push(format!("workers {} -> {}", running.workers, next.workers));
    }
    if running.max_connections != next.max_connections {
        reasons.push(format!(
            "max_connections {} -> {}",
            running.max_connections, next.max_connections
        ));
    }
    if running.buffer_size != next.buffer_size {
        reasons.push(format!("buffer_size {} -> {}", running.buffer_size, next.buffer_size));
    }
    let count = running.listeners.len().max(next.listeners.len());
    for i in 0..count {
        match (running.listeners.get(i), next.listeners.get(i)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => {
                let mut what = Vec::new();
                if a.name != b.name {
                    what.push(format!("name {} -> {}", a.name, b.name));
                }
                if a.bind != b.bind {
                    what.push(format!("bind {} -> {}", a.bind, b.bind));
                }
                if a.mode != b.mode {
                    what.push(format!("mode {} -> {}", a.mode, b.mode));
                }
                if a.pool != b.pool {
                    what.push(format!("pool {} -> {}", a.pool, b.pool));
                }
                reasons.push(format!("listeners[{i}] ({}): {}", a.name, what.join(", ")));
            }
            (Some(a), None) => reasons.push(format!("listeners[{i}] ({}) removed", a.name)),
            (None, Some(b)) => reasons.push(format!("listeners[{i}] ({}) added", b.name)),
            (None, None) => {}
        }
    }
    reasons
}

/// What `next` changes in the pools and timeouts of `running`.
pub fn changes(running: &Config, next: &Config, generation: u64) -> ReloadReport {
    let mut pools = Vec::new();
    for p in &next.pools {
        match running.pool(&p.name) {
            None => pools.push(PoolChange {
                pool: p.name.clone(),
                kind: PoolChangeKind::Added,
            }),
            Some(old) if old == p => {}
            Some(old) => pools.push(PoolChange {
                pool: p.name.clone(),
                kind: pool_change(old, p),
            }),
        }
    }
    for p in &running.pools {
        if next.pool(&p.name).is_none() {
            pools.push(PoolChange {
                pool: p.name.clone(),
                kind: PoolChangeKind::Removed,
            });
        }
    }
    let mut timeouts = Vec::new();
    let (a, b) = (running.timeouts, next.timeouts);
    for (name, x, y) in [
        ("connect", a.connect, b.connect),
        ("idle", a.idle, b.idle),
        ("drain", a.drain, b.drain),
    ] {
        if x != y {
            timeouts.push(format!("{name} {x:?} -> {y:?}"));
        }
    }
    ReloadReport {
        generation,
        pools,
        timeouts,
    }
}

/// How pool `old` became `new` (same name, different configuration).
fn pool_change(old: &PoolConfig, new: &PoolConfig) -> PoolChangeKind {
    let before: BTreeMap<SocketAddr, &crate::config::BackendConfig> =
        old.backends.iter().map(|b| (b.address, b)).collect();
    let after: BTreeMap<SocketAddr, &crate::config::BackendConfig> =
        new.backends.iter().map(|b| (b.address, b)).collect();
    let added = new
        .backends
        .iter()
        .filter(|b| !before.contains_key(&b.address))
        .map(|b| b.name.clone())
        .collect();
    let removed = old
        .backends
        .iter()
        .filter(|b| !after.contains_key(&b.address))
        .map(|b| b.name.clone())
        .collect();
    let mut reweighted = Vec::new();
    let mut renamed = Vec::new();
    let mut checks_changed = false;
    for b in &new.backends {
        if let Some(a) = before.get(&b.address) {
            if a.weight != b.weight {
                reweighted.push((b.name.clone(), a.weight, b.weight));
            }
            if a.name != b.name {
                renamed.push((a.name.clone(), b.name.clone()));
            }
            checks_changed |= a.check != b.check;
        }
    }
    PoolChangeKind::Changed {
        added,
        removed,
        reweighted,
        renamed,
        algorithm: (old.algorithm != new.algorithm).then_some((old.algorithm, new.algorithm)),
        health: old.health != new.health || checks_changed,
    }
}

/// The configuration in force and its generation of shared state, replaced whole by
/// each applied reload. One per process.
pub struct Live {
    /// The configuration in force. The lock also serialises reloads.
    config: Mutex<Config>,
    /// The generation in force; [`run_health`] and any other observer subscribe.
    current: tokio::sync::watch::Sender<Arc<Shared>>,
    /// Reload counters.
    pub reloads: Reloads,
}

impl Live {
    /// Generation 1, built from `config`.
    pub fn new(config: Config) -> Result<Arc<Live>, String> {
        let shared = Shared::from_config(&config)?;
        let reloads = Reloads::default();
        reloads.generation.store(shared.generation, Ordering::Relaxed);
        Ok(Arc::new(Live {
            config: Mutex::new(config),
            current: tokio::sync::watch::channel(shared).0,
            reloads,
        }))
    }

    /// The generation in force.
    pub fn current(&self) -> Arc<Shared> {
        self.current.borrow().clone()
    }

    /// A receiver that sees every generation put in force from now on.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Shared>> {
        self.current.subscribe()
    }

    /// The configuration in force.
    pub fn config(&self) -> Config {
        self.config.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Applies `next` (the result of parsing and validating the new file) at `now`, on
    /// the data path's clock, or refuses it, leaving the configuration in force as it
    /// was. Either way the outcome is counted and logged.
    pub fn reload(&self, next: Result<Config, ConfigError>, now: Instant) -> Result<ReloadReport, ReloadError> {
        let mut config = self.config.lock().unwrap_or_else(PoisonError::into_inner);
        let next = next.map_err(|e| self.fail(ReloadError::Invalid(e)))?;
        let reasons = restart_needed(&config, &next);
        if !reasons.is_empty() {
            return Err(self.fail(ReloadError::RestartNeeded(reasons)));
        }
        let current = self.current();
        if next == *config {
            // Same settings (perhaps reformatted): keep the generation, but locate later
            // problems in the new text.
            *config = next;
            self.reloads.config_reloads_total.fetch_add(1, Ordering::Relaxed);
            tracing::info!(generation = current.generation, "configuration reloaded: no changes");
            return Ok(changes(&config, &config, current.generation));
        }
        let shared = current
            .next_generation(&next, now)
            .map_err(|e| self.fail(ReloadError::Build(e)))?;
        let report = changes(&config, &next, shared.generation);
        *config = next;
        self.reloads.generation.store(shared.generation, Ordering::Relaxed);
        self.reloads.config_reloads_total.fetch_add(1, Ordering::Relaxed);
        self.current.send_replace(shared.clone());
        tracing::info!(
            generation = shared.generation,
            drain_timeout_ms = shared.drain_timeout.as_millis() as u64,
            changes = %report,
            "configuration reloaded"
        );
        Ok(report)
    }

    /// Refuses a reload for `why` (for example: the process runs on flags, so there is
    /// no file to read again), counting and logging it like any other refusal.
    pub fn refuse(&self, why: impl Into<String>) -> ReloadError {
        self.fail(ReloadError::Refused(why.into()))
    }

    /// Counts and logs a refused reload.
    fn fail(&self, error: ReloadError) -> ReloadError {
        self.reloads
            .config_reload_failures_total
            .fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            generation = self.reloads.generation(),
            failures_total = self.reloads.failures(),
            error = %error,
            "configuration reload refused; the configuration in force stays"
        );
        error
    }
}

impl fmt::Debug for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Live")
            .field("generation", &self.reloads.generation())
            .field("reloads", &self.reloads)
            .finish_non_exhaustive()
    }
}

/// Runs the health checks of every pool generation in force, on `env`, until
/// `shutdown` fires: [`health::run`] for each pool of the current generation; when a
/// reload puts a new generation in force, the tasks of pool generations it no longer
/// holds are stopped (each has its own trigger) and those of its new ones started.
/// Unchanged pools keep their tasks.
pub async fn run_health<E: Env>(
    env: E,
    mut generations: tokio::sync::watch::Receiver<Arc<Shared>>,
    mut shutdown: Shutdown,
) {
    let mut running: Vec<(Arc<Pool>, ShutdownTrigger)> = Vec::new();
    loop {
        let shared = generations.borrow_and_update().clone();
        let mut next = Vec::with_capacity(shared.pools.len());
        for pool in &shared.pools {
            match running.iter().position(|(p, _)| Arc::ptr_eq(p, pool)) {
                Some(i) => next.push(running.swap_remove(i)),
                None => {
                    let (trigger, stop) = Shutdown::new();
                    let addrs = pool.targets.iter().map(|t| t.addr).collect();
                    env.spawn(health::run(env.clone(), pool.health.clone(), addrs, stop));
                    next.push((pool.clone(), trigger));
                }
            }
        }
        // Started before stopped: the new tasks pick up where the old ones' schedule was.
        for (_, stop) in running.drain(..) {
            stop.trigger();
        }
        running = next;
        match race(shutdown.wait(), generations.changed()).await {
            Either::Left(()) => break,
            Either::Right(Ok(())) => {}
            // No more reloads can come: run what is running until shutdown.
            Either::Right(Err(_)) => {
                shutdown.wait().await;
                break;
            }
        }
    }
    for (_, stop) in running {
        stop.trigger();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(backends: &str, extra: &str) -> Config {
        Config::parse(
            &format!(
                "({extra} listeners: [(name: \"front\", bind: \"127.0.0.1:8080\", pool: \"web\")],
                  pools: [(name: \"web\", backends: [{backends}])])"
            ),
            "lb.ron",
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn listener_and_process_changes_need_a_restart() {
        let a = config("(address: \"10.0.0.1:80\")", "");
        assert!(restart_needed(&a, &a).is_empty());
        let b = config(
            "(address: \"10.0.0.1:80\")",
            "workers: 4, max_connections: 9, buffer_size: 4096,",
        );
        assert_eq!(
            restart_needed(&a, &b),
            [
                "workers 0 -> 4",
                "max_connections 10000 -> 9",
                "buffer_size 16384 -> 4096"
            ]
        );
        let text = "(listeners: [(name: \"front\", bind: \"127.0.0.1:9090\", pool: \"web\")],
                     pools: [(name: \"web\", backends: [(address: \"10.0.0.1:80\")])])";
        let c = Config::parse(text, "lb.ron").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            restart_needed(&a, &c),
            ["listeners[0] (front): bind 127.0.0.1:8080 -> 127.0.0.1:9090"]
        );
        // Timeouts and pools change live.
        let d = config(
            "(address: \"10.0.0.2:80\")",
            "timeouts: (connect: \"1s\", idle: \"5s\", drain: \"2s\"),",
        );
        assert!(restart_needed(&a, &d).is_empty());
    }

    #[test]
    fn changes_name_what_happened_to_each_backend() {
        let a = config(
            "(address: \"10.0.0.1:80\", name: \"a\"), (address: \"10.0.0.2:80\", name: \"b\"), (address: \"10.0.0.3:80\", name: \"c\")",
            "",
        );
        let b = Config::parse(
            "(timeouts: (drain: \"1s\"), listeners: [(name: \"front\", bind: \"127.0.0.1:8080\", pool: \"web\")],
              pools: [(name: \"web\", algorithm: \"weighted\", slow_start: \"10s\",
                       backends: [(address: \"10.0.0.2:80\", name: \"b\", weight: 3), (address: \"10.0.0.3:80\", name: \"c2\"),
                                  (address: \"10.0.0.4:80\", name: \"d\")]),
                      (name: \"spare\", backends: [(address: \"10.0.0.9:80\")])])",
            "lb.ron",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let report = changes(&a, &b, 2);
        assert_eq!(
            report.to_string(),
            "pool web: added d, removed a, reweighted b 1->3, renamed c->c2, algorithm round-robin->weighted, \
             health settings changed; pool spare: added; timeouts: drain 30s -> 1s"
        );
        assert!(changes(&a, &a, 1).is_empty());
        assert_eq!(changes(&a, &a, 1).to_string(), "no changes");
    }

    #[test]
    fn a_refused_reload_changes_nothing_and_is_counted() {
        let live = Live::new(config("(address: \"10.0.0.1:80\")", "")).unwrap_or_else(|e| panic!("{e}"));
        let before = live.current();
        let bad = Config::parse("(listeners: [(bind: \"127.0.0.1:8080\" pool: \"web\")])", "lb.ron");
        let err = live.reload(bad, Instant::ZERO).expect_err("syntax error");
        assert!(err.to_string().starts_with("lb.ron:1:"), "{err}");
        let restart = config("(address: \"10.0.0.1:80\")", "workers: 3,");
        let err = live.reload(Ok(restart), Instant::ZERO).expect_err("restart needed");
        assert_eq!(
            err.to_string(),
            "listener/process changes need a restart: workers 0 -> 3"
        );
        live.refuse("running on flags");
        assert_eq!(live.reloads.failures(), 3);
        assert_eq!(live.reloads.successes(), 0);
        assert!(Arc::ptr_eq(&before, &live.current()));
        assert_eq!(live.reloads.generation(), 1);
    }

    #[test]
    fn a_reload_carries_counters_and_drains_only_what_left() {
        let live = Live::new(config(
            "(address: \"10.0.0.1:80\", name: \"a\"), (address: \"10.0.0.2:80\", name: \"b\"), (address: \"10.0.0.3:80\", name: \"c\")",
            "timeouts: (drain: \"5s\"),",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let first = live.current();
        let old = first.pools[0].clone();
        let key = crate::balancer::PickKey::default();
        let leases: Vec<_> = (0..3).filter_map(|_| old.balancer.select(key).next()).collect();
        assert_eq!(old.balancer.total_active(), 3);
        // a stays, b goes to weight 0, c is removed, d is new.
        let next = config(
            "(address: \"10.0.0.4:80\", name: \"d\"), (address: \"10.0.0.2:80\", name: \"b\", weight: 0), (address: \"10.0.0.1:80\", name: \"a\")",
            "timeouts: (drain: \"5s\"),",
        );
        let now = Instant::from_origin(std::time::Duration::from_secs(100));
        let report = live.reload(Ok(next), now).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.generation, 2);
        let second = live.current();
        let new = &second.pools[0];
        // a's counter is carried: one lease, seen by the new balancer, counted once.
        assert_eq!(new.balancer.active(2), 1);
        assert_eq!(new.balancer.active(0), 0);
        assert_eq!(new.balancer.total_active(), 0);
        // Drains: b (weight 0) and c (removed), at now + 5s; a is not drained.
        let deadline = Some(now + std::time::Duration::from_secs(5));
        assert_eq!(old.targets[0].drain.deadline(), None);
        assert_eq!(old.targets[1].drain.deadline(), deadline);
        assert_eq!(old.targets[2].drain.deadline(), deadline);
        // The old generation yields only a now, even as a fallback.
        let tried: Vec<usize> = old.balancer.select(key).map(|l| l.index()).collect();
        assert_eq!(tried, [0]);
        // The new one never picks b.
        let picks: Vec<usize> = (0..6)
            .filter_map(|_| new.balancer.select(key).next().map(|l| l.index()))
            .collect();
        assert!(picks.iter().all(|&i| i != 1), "{picks:?}");
        assert!(old.health.is_retired() && !new.health.is_retired());
        drop(leases);
        assert_eq!(new.balancer.active(2), 0);
        assert_eq!(old.balancer.total_active(), 0);
        assert_eq!(live.reloads.generation(), 2);
        assert_eq!(live.reloads.successes(), 1);
    }

    #[test]
    fn an_unchanged_pool_is_kept_as_it_is() {
        let live = Live::new(config("(address: \"10.0.0.1:80\")", "")).unwrap_or_else(|e| panic!("{e}"));
        let first = live.current();
        let report = live
            .reload(
                Ok(config("(address: \"10.0.0.1:80\")", "timeouts: (idle: \"5s\"),")),
                Instant::ZERO,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.to_string(), "timeouts: idle 60s -> 5s");
        let second = live.current();
        assert_eq!(second.generation, 2);
        assert!(Arc::ptr_eq(&first.pools[0], &second.pools[0]));
        let route = second.listeners[0].route();
        assert_eq!(route.settings.idle_timeout, std::time::Duration::from_secs(5));
        assert_eq!(route.generation, 2);
        // Nothing changed: same generation, still counted as applied.
        let report = live
            .reload(
                Ok(config("(address: \"10.0.0.1:80\")", "timeouts: (idle: \"5s\"),")),
                Instant::ZERO,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(report.is_empty());
        assert_eq!(live.current().generation, 2);
        assert_eq!(live.reloads.successes(), 2);
    }
}
