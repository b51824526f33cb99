//! Forwarding: the state shared by every worker, the per-worker state, the L4 TCP proxy
//! ([`tcp`], which also runs every listener's accept loop) and the L7 HTTP/1.1 proxy
//! ([`http`], for listeners with `mode: "http"`).
//!
//! [`Shared`] is one *generation* of the configuration, built from a validated
//! [`Config`] off the data path and immutable apart from counters (atomics): every worker
//! holds an `Arc` of it. A reload ([`crate::reload`]) builds the next generation with
//! [`Shared::next_generation`] and publishes it per listener: each [`ListenerShared`]
//! holds its current [`Route`] (pool and forwarding settings) in an atomically swapped
//! pointer, which the accept loop loads once per connection. A connection keeps the
//! route it started with, so an old generation lives exactly as long as its
//! connections. The listeners themselves and the connection limit are the same objects
//! in every generation: changing them needs a restart.
//!
//! Per-worker state ([`Worker`]) lives in an `Rc`: buffer pool and open-connection
//! count, touched by one thread only.

pub mod drain;
pub mod http;
pub mod tcp;

pub use drain::DrainSignal;

use crate::balancer::{ActiveCounter, Balancer};
use crate::config::{Config, Mode, PoolConfig};
use crate::health::PoolMonitor;
use crate::io::{Instant, IoBuf, PipePool};
use arc_swap::ArcSwap;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A backend as the data path sees it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Name used in logs.
    pub name: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// Fires when a reload drains this backend (removed, or weight set to 0): open
    /// connections on it are cut at the drain's deadline. Per generation: a backend
    /// that stays has a quiet signal in the new generation.
    pub drain: Arc<DrainSignal>,
}

/// Counters of one pool that outlive its generations: every generation of the pool of
/// the same name shares one.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Connections cut at a drain deadline after a reload removed (or set to weight 0)
    /// their backend.
    pub drained_cut_total: AtomicU64,
    /// HTTP requests, retries, pool reuse and errors (`http` listeners only).
    pub http: http::HttpStats,
}

/// A pool: its backends, the balancing state over them, and their health. Index `i` of
/// `targets` is backend `i` of `balancer`, of `health` and of `config.backends`.
pub struct Pool {
    /// The pool's name, for logs.
    pub name: String,
    /// The backends, in configuration order.
    pub targets: Vec<Target>,
    /// Selection and per-backend active-connection counters. The counter of a backend
    /// that stays across a reload is shared with the next generation's balancer.
    pub balancer: Balancer,
    /// Health state; publishes effective weights to `balancer`.
    pub health: Arc<PoolMonitor>,
    /// Counters shared by every generation of this pool.
    pub stats: Arc<PoolStats>,
    /// The configuration this generation was built from.
    pub config: PoolConfig,
}

impl Pool {
    /// Builds a pool generation. With `old` (the previous generation of the pool of the
    /// same name), backends are matched by address: one that stays keeps its active
    /// counter and its health state (hysteresis, ejection, slow-start clock), and
    /// `old`'s monitor is retired and forwards to the new one.
    fn build(config: &PoolConfig, old: Option<&Pool>, now: Instant) -> Arc<Pool> {
        let weights: Vec<u32> = config.backends.iter().map(|b| b.weight).collect();
        let counters: Vec<Option<Arc<ActiveCounter>>> = match old {
            Some(old) => {
                let by_addr = old.index_by_addr();
                let old_counters = old.balancer.counters();
                config
                    .backends
                    .iter()
                    .map(|b| by_addr.get(&b.address).and_then(|&j| old_counters.get(j).cloned()))
                    .collect()
            }
            None => vec![None; weights.len()],
        };
        let balancer = Balancer::with_counters(config.algorithm, &weights, counters);
        let health = PoolMonitor::new_carrying(config, balancer.clone(), old.map(|o| &o.health), now);
        let mut drains = kept_drains(old, config);
        Arc::new(Pool {
            name: config.name.clone(),
            targets: config
                .backends
                .iter()
                .map(|b| Target {
                    name: b.name.clone(),
                    addr: b.address,
                    drain: drains.remove(&b.address).unwrap_or_default(),
                })
                .collect(),
            balancer,
            health,
            stats: old.map(|o| o.stats.clone()).unwrap_or_default(),
            config: config.clone(),
        })
    }

    /// Backend index by address.
    fn index_by_addr(&self) -> BTreeMap<SocketAddr, usize> {
        self.targets.iter().enumerate().map(|(i, t)| (t.addr, i)).collect()
    }

    /// The backends of this generation that `next` drains: gone from it, or taking
    /// traffic here and weight 0 there.
    fn drained_by(&self, next: &PoolConfig) -> Vec<usize> {
        let next_weight: BTreeMap<SocketAddr, u32> = next.backends.iter().map(|b| (b.address, b.weight)).collect();
        self.config
            .backends
            .iter()
            .enumerate()
            .filter(|(_, b)| match next_weight.get(&b.address) {
                None => true,
                Some(&w) => w == 0 && b.weight > 0,
            })
            .map(|(i, _)| i)
            .collect()
    }
}

/// The drain signals of `old`'s backends that stay in `next` without being drained by
/// it, by address. Shared with the next generation, so that a later reload that drains
/// such a backend reaches the connections of every generation that still uses it, not
/// only those of the generation just before that reload.
fn kept_drains(old: Option<&Pool>, next: &PoolConfig) -> BTreeMap<SocketAddr, Arc<DrainSignal>> {
    let Some(old) = old else {
        return BTreeMap::new();
    };
    let drained = old.drained_by(next);
    old.targets
        .iter()
        .enumerate()
        .filter(|(j, t)| !drained.contains(j) && t.drain.deadline().is_none())
        .map(|(_, t)| (t.addr, t.drain.clone()))
        .collect()
}

/// Settings of one listener's forwarding.
#[derive(Debug, Clone, Copy)]
pub struct TcpSettings {
    /// Limit on one connect attempt to a backend.
    pub connect_timeout: Duration,
    /// A connection on which no byte moved in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// Size of each per-direction buffer.
    pub buffer_size: usize,
}

impl TcpSettings {
    fn of(config: &Config) -> TcpSettings {
        TcpSettings {
            connect_timeout: config.timeouts.connect,
            idle_timeout: config.timeouts.idle,
            buffer_size: config.buffer_size,
        }
    }
}

/// Where a listener sends a new connection, in one generation: the pool and the
/// forwarding settings, published together so that a connection never mixes two
/// generations.
pub struct Route {
    /// The pool it balances over.
    pub pool: Arc<Pool>,
    /// Forwarding settings.
    pub settings: TcpSettings,
    /// What the listener proxies: its mode never changes across reloads.
    pub mode: Mode,
    /// Limits, timeouts, retries and pooling of an `http` listener.
    pub http: http::HttpSettings,
    /// The configuration generation this route belongs to.
    pub generation: u64,
}

/// One listener: where it binds and where it forwards. The same object in every
/// generation; only its route changes.
pub struct ListenerShared {
    /// The listener's name, for logs.
    pub name: String,
    /// The address to bind.
    pub bind: SocketAddr,
    /// The current route, swapped whole by a reload and loaded once per connection.
    route: ArcSwap<Route>,
}

impl ListenerShared {
    /// The route in force: what a connection accepted now uses for its whole life.
    pub fn route(&self) -> Arc<Route> {
        self.route.load_full()
    }

    /// The pool in force.
    pub fn pool(&self) -> Arc<Pool> {
        self.route.load().pool.clone()
    }

    /// The forwarding settings in force.
    pub fn settings(&self) -> TcpSettings {
        self.route.load().settings
    }

    /// The HTTP settings in force (an `http` listener's).
    pub fn http_settings(&self) -> http::HttpSettings {
        self.route.load().http
    }

    /// A listener serving `route`, for tests and simulations that drive single
    /// connections.
    pub fn new(name: String, bind: SocketAddr, route: Route) -> ListenerShared {
        ListenerShared {
            name,
            bind,
            route: ArcSwap::from_pointee(route),
        }
    }
}

/// Process-wide limit on open client connections (HAProxy's `maxconn`). When it is
/// reached, workers stop accepting and new connections wait in the kernel's backlog.
#[derive(Debug)]
pub struct ConnLimit {
    max: usize,
    open: AtomicUsize,
    /// How many times an accept loop found the limit reached and paused.
    pub saturated_total: AtomicU64,
}

impl ConnLimit {
    /// A limit of `max` connections.
    pub fn new(max: usize) -> Arc<ConnLimit> {
        Arc::new(ConnLimit {
            max,
            open: AtomicUsize::new(0),
            saturated_total: AtomicU64::new(0),
        })
    }

    /// Takes a slot if one is free; the slot is given back when the permit drops.
    pub fn try_acquire(self: &Arc<Self>) -> Option<ConnPermit> {
        let mut cur = self.open.load(Ordering::Relaxed);
        loop {
            if cur >= self.max {
                return None;
            }
            match self
                .open
                .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(ConnPermit { limit: self.clone() }),
                Err(now) => cur = now,
            }
        }
    }

    /// True while fewer than the maximum are open.
    pub fn has_room(&self) -> bool {
        self.open.load(Ordering::Relaxed) < self.max
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// One slot of a [`ConnLimit`].
#[derive(Debug)]
pub struct ConnPermit {
    limit: Arc<ConnLimit>,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.limit.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Everything the workers share: one generation of a validated config.
pub struct Shared {
    /// One entry per configured listener; the same objects in every generation.
    pub listeners: Vec<Arc<ListenerShared>>,
    /// This generation's pools, in configuration order.
    pub pools: Vec<Arc<Pool>>,
    /// The process-wide connection limit; the same in every generation.
    pub conn_limit: Arc<ConnLimit>,
    /// How long open connections may finish after shutdown begins, and how long a
    /// drained backend's connections may go on after the reload that drained it.
    pub drain_timeout: Duration,
    /// 1 for the configuration the process started with, one more per reload that
    /// changed something.
    pub generation: u64,
}

impl Shared {
    /// Builds the shared state of generation 1. The config has been validated, so every
    /// listener's pool exists; a listener whose pool is missing anyway is reported, not
    /// unwrapped.
    pub fn from_config(config: &Config) -> Result<Arc<Shared>, String> {
        let pools: Vec<Arc<Pool>> = config
            .pools
            .iter()
            .map(|p| Pool::build(p, None, Instant::ZERO))
            .collect();
        let routes = routes(config, &pools, 1)?;
        let listeners = config
            .listeners
            .iter()
            .zip(routes)
            .map(|(l, route)| Arc::new(ListenerShared::new(l.name.clone(), l.bind, route)))
            .collect();
        Ok(Arc::new(Shared {
            listeners,
            pools,
            conn_limit: ConnLimit::new(config.max_connections),
            drain_timeout: config.timeouts.drain,
            generation: 1,
        }))
    }

    /// Builds the next generation from `config` and puts it in force, at `now` on the
    /// data path's clock. Call it on the generation in force, one reload at a time:
    /// [`crate::reload::Live`] does both.
    ///
    /// `config` must keep this generation's listeners (names, binds, modes, pools) and
    /// process settings: [`crate::reload`] checks that first, and this returns an error,
    /// having changed nothing, when the listeners differ anyway.
    ///
    /// A pool whose configuration is unchanged is carried over as it is (same balancer,
    /// same health tasks). A changed pool gets a new generation: backends are matched by
    /// address, and one that stays keeps its active counter and health state. Then, in
    /// this order:
    ///
    /// 1. the old generation's balancer stops yielding the backends the new config
    ///    drains (removed, or weight 0), so that not even a selection in flight on the old
    ///    generation reaches them;
    /// 2. every listener's route is swapped: new connections use the new generation;
    /// 3. the drained backends' connections get their deadline, `now +
    ///    timeouts.drain` (of the new config), and are cut if still open then.
    pub fn next_generation(&self, config: &Config, now: Instant) -> Result<Arc<Shared>, String> {
        if config.listeners.len() != self.listeners.len()
            || config
                .listeners
                .iter()
                .zip(&self.listeners)
                .any(|(c, l)| c.name != l.name || c.bind != l.bind)
        {
            return Err("the listeners changed; that needs a restart".to_string());
        }
        // Checked before anything changes, so that `routes` below cannot fail once old
        // monitors are retired: every listener keeps its mode and its pool exists in
        // `config`.
        for (l, old) in config.listeners.iter().zip(&self.listeners) {
            if l.mode != old.route().mode || config.pool(&l.pool).is_none() {
                return Err(format!(
                    "listener {}: mode {} over pool {} cannot be served",
                    l.name, l.mode, l.pool
                ));
            }
        }
        let generation = self.generation + 1;
        let mut replaced: Vec<(Arc<Pool>, Vec<usize>)> = Vec::new();
        let pools: Vec<Arc<Pool>> = config
            .pools
            .iter()
            .map(|p| match self.pools.iter().find(|old| old.name == p.name) {
                Some(old) if old.config == *p => old.clone(),
                Some(old) => {
                    replaced.push((old.clone(), old.drained_by(p)));
                    Pool::build(p, Some(old), now)
                }
                None => Pool::build(p, None, now),
            })
            .collect();
        let routes = routes(config, &pools, generation)?;
        // 1. Out of the old balancers. Their monitors were retired by `Pool::build` and
        // publish no more weights, so the zeros stay.
        for (old, drained) in &replaced {
            if drained.is_empty() {
                continue;
            }
            let mut weights = old.balancer.weights();
            for &i in drained {
                if let Some(w) = weights.get_mut(i) {
                    *w = 0;
                }
            }
            if let Err(e) = old.balancer.set_weights(&weights) {
                tracing::error!(pool = %old.name, error = %e, "cannot take drained backends out of the old generation");
            }
        }
        // 2. New connections use the new generation.
        for (l, route) in self.listeners.iter().zip(routes) {
            l.route.store(Arc::new(route));
        }
        // 3. Deadlines for the drained backends' open connections.
        let deadline = now + config.timeouts.drain;
        for (old, drained) in &replaced {
            for &i in drained {
                if let Some(t) = old.targets.get(i) {
                    t.drain.start(deadline);
                }
            }
        }
        Ok(Arc::new(Shared {
            listeners: self.listeners.clone(),
            pools,
            conn_limit: self.conn_limit.clone(),
            drain_timeout: config.timeouts.drain,
            generation,
        }))
    }

    /// Connections on this generation's pools (live leases), counting each once: a
    /// connection counts on the balancer it was selected from.
    pub fn total_active(&self) -> u64 {
        self.pools.iter().map(|p| p.balancer.total_active()).sum()
    }
}

/// Every listener's route over `pools` (built from `config`, in its order).
fn routes(config: &Config, pools: &[Arc<Pool>], generation: u64) -> Result<Vec<Route>, String> {
    let settings = TcpSettings::of(config);
    let http = http::HttpSettings {
        http: config.http,
        timeouts: config.timeouts,
    };
    config
        .listeners
        .iter()
        .map(|l| {
            let pool = pools
                .iter()
                .find(|p| p.name == l.pool)
                .ok_or_else(|| format!("listener {}: unknown pool {}", l.name, l.pool))?;
            Ok(Route {
                pool: pool.clone(),
                settings,
                mode: l.mode,
                http,
                generation,
            })
        })
        .collect()
}

/// Zero-copy forwarding (`--splice auto`): a direction of an L4 connection switches from
/// copying to splice(2) once it has moved `after` bytes and its last read filled the
/// buffer (bulk, not small messages), when both of its streams can splice (see
/// [`crate::io::OwnedRead::splice_to`]) and the worker has a pipe free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpliceSettings {
    /// Bytes a direction moves through the copy path before it splices (and then only
    /// once a read fills the buffer); 0 splices from the first byte.
    pub after: u64,
    /// Most pipes one worker holds at once (each is two descriptors); when all are in
    /// use, new directions go on copying.
    pub pipes_max: usize,
    /// Size asked of each pipe (F_SETPIPE_SZ). A pipe holds references to socket pages,
    /// not copies, and a bigger one moves more per system call: 1 GiB through one
    /// connection ran at 0.75 of direct loopback through 64 KiB pipes and 0.97 to 1.1
    /// through 256 KiB ones with epoll, 0.41 and 0.88 to 0.98 with io_uring's
    /// IORING_OP_SPLICE (16 cores, bench/RESULTS.md). Where the kernel refuses the size (above `fs.pipe-max-size`, or
    /// past the user's pipe page budget, `fs.pipe-user-pages-soft`, 64 MiB of pipes by
    /// default for a user without CAP_SYS_RESOURCE) the pipe keeps the kernel's default.
    pub pipe_bytes: usize,
}

impl SpliceSettings {
    /// Default of `after`: like HAProxy's splice-auto, short exchanges are copied and
    /// only bulk transfers splice.
    pub const AFTER_DEFAULT: u64 = 64 * 1024;
    /// Default of `pipes_max` per worker.
    pub const PIPES_MAX_DEFAULT: usize = 256;
    /// Default of `pipe_bytes`: 256 KiB. Larger pipes measured no faster (512 KiB and
    /// 1 MiB: 0.86 to 1.0 of direct), and 256 of them, a worker's default maximum, fit
    /// the default pipe page budget of an unprivileged user (64 MiB).
    pub const PIPE_BYTES_DEFAULT: usize = 256 * 1024;
}

impl Default for SpliceSettings {
    fn default() -> Self {
        SpliceSettings {
            after: Self::AFTER_DEFAULT,
            pipes_max: Self::PIPES_MAX_DEFAULT,
            pipe_bytes: Self::PIPE_BYTES_DEFAULT,
        }
    }
}

/// Per-worker state: touched by one thread only.
pub struct Worker {
    buffers: RefCell<Vec<IoBuf>>,
    buffer_size: usize,
    buffers_kept_max: usize,
    open: Cell<usize>,
    /// Splice settings and the pipe pool, when splicing is on.
    splice: Option<(u64, PipePool)>,
    /// Idle backend connections kept by this worker's HTTP upstream pools.
    pooled_idle: Cell<usize>,
    /// Fired when the shutdown drain deadline passes: every open connection is reset.
    cut: Shutdown,
    cut_trigger: ShutdownTrigger,
    /// Request heads kept for reuse by the HTTP proxy.
    pub request_heads: http::HeadPool<crate::http::RequestHead>,
    /// Response heads kept for reuse by the HTTP proxy.
    pub response_heads: http::HeadPool<crate::http::ResponseHead>,
}

impl Worker {
    /// Buffers of `buffer_size` bytes; at most `buffers_kept_max` idle ones are kept.
    /// Splicing is off.
    pub fn new(buffer_size: usize, buffers_kept_max: usize) -> Rc<Worker> {
        Worker::with_splice(buffer_size, buffers_kept_max, None)
    }

    /// As [`Worker::new`], splicing with `splice` when given: pipes of
    /// `splice.pipe_bytes`, never less than the kernel's default of 64 KiB (see
    /// [`crate::io::splice::PIPE_SIZE_MIN`]), from a pool of at most `splice.pipes_max`.
    pub fn with_splice(buffer_size: usize, buffers_kept_max: usize, splice: Option<SpliceSettings>) -> Rc<Worker> {
        let (cut_trigger, cut_signal) = Shutdown::new();
        Rc::new(Worker {
            buffers: RefCell::new(Vec::new()),
            buffer_size,
            buffers_kept_max,
            open: Cell::new(0),
            pooled_idle: Cell::new(0),
            splice: splice.map(|s| (s.after, PipePool::new(s.pipes_max, s.pipe_bytes))),
            cut: cut_signal,
            cut_trigger,
            request_heads: Default::default(),
            response_heads: Default::default(),
        })
    }

    /// Resets every connection still open on this worker (the shutdown drain deadline
    /// passed): like a reload's drain cut, both sides get an RST, so that neither takes
    /// the cut stream for a complete one.
    pub fn cut_open_connections(&self) {
        self.cut_trigger.trigger();
    }

    /// Completes when [`Worker::cut_open_connections`] is called.
    pub fn cut_signal(&self) -> impl std::future::Future<Output = ()> + 'static {
        let mut cut = self.cut.clone();
        async move { cut.wait().await }
    }

    /// The splice threshold and the pipe pool, when splicing is on.
    pub fn splice(&self) -> Option<(u64, &PipePool)> {
        self.splice.as_ref().map(|(after, pool)| (*after, pool))
    }

    /// A buffer from the pool, allocated only when the pool is empty.
    pub fn take_buffer(&self) -> IoBuf {
        self.buffers
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| IoBuf::with_capacity(self.buffer_size))
    }

    /// Returns a buffer to the pool (dropped when the pool is full or it is not ours).
    pub fn give_buffer(&self, mut buf: IoBuf) {
        let mut pool = self.buffers.borrow_mut();
        if pool.len() < self.buffers_kept_max && buf.capacity() == self.buffer_size {
            buf.clear();
            pool.push(buf);
        }
    }

    /// Idle buffers held by the pool.
    pub fn pooled_buffers(&self) -> usize {
        self.buffers.borrow().len()
    }

    /// Idle backend connections held for reuse by this worker's `http` listeners. The
    /// simulation's conservation check allows this many established streams at rest.
    pub fn pooled_idle_connections(&self) -> usize {
        self.pooled_idle.get()
    }

    /// Records a change in the number of pooled idle connections.
    pub(crate) fn set_pooled_idle(&self, delta_in: usize, delta_out: usize) {
        self.pooled_idle
            .set((self.pooled_idle.get() + delta_in).saturating_sub(delta_out));
    }

    /// Client connections open on this worker.
    pub fn open_connections(&self) -> usize {
        self.open.get()
    }

    /// Counts a connection open for as long as the guard lives.
    pub fn track(self: &Rc<Self>) -> OpenGuard {
        self.open.set(self.open.get() + 1);
        OpenGuard { worker: self.clone() }
    }
}

/// Counts one open connection on a [`Worker`].
pub struct OpenGuard {
    worker: Rc<Worker>,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.worker.open.set(self.worker.open.get().saturating_sub(1));
    }
}

/// Tells servers to stop: cloned into every accept loop; [`ShutdownTrigger::trigger`]
/// fires all of them. Works on any runtime (a flag and a `tokio::sync::Notify`, which
/// need no reactor), so the simulation uses it too. Not a `tokio::sync::watch`: its
/// receivers pick a wait list with tokio's unseeded random generator, so the order in
/// which waiters wake, and with it a simulated run's trace, would vary between processes.
#[derive(Clone, Debug)]
pub struct Shutdown {
    state: Arc<ShutdownState>,
}

#[derive(Debug, Default)]
struct ShutdownState {
    fired: AtomicBool,
    notify: tokio::sync::Notify,
}

impl ShutdownState {
    fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }
}

/// The sending side of [`Shutdown`]; dropping it fires the signal too.
#[derive(Debug)]
pub struct ShutdownTrigger {
    state: Arc<ShutdownState>,
}

impl Shutdown {
    /// A new signal and its trigger.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let state = Arc::new(ShutdownState::default());
        (ShutdownTrigger { state: state.clone() }, Shutdown { state })
    }

    /// A signal that never fires.
    pub fn never() -> Shutdown {
        Shutdown { state: Arc::default() }
    }

    /// True once triggered.
    pub fn is_triggered(&self) -> bool {
        self.state.fired.load(Ordering::Acquire)
    }

    /// Completes when triggered (or when the trigger is dropped).
    pub async fn wait(&mut self) {
        loop {
            // Registered before the check, so a trigger in between still wakes it.
            let mut notified = std::pin::pin!(self.state.notify.notified());
            notified.as_mut().enable();
            if self.is_triggered() {
                return;
            }
            notified.await;
        }
    }
}

impl ShutdownTrigger {
    /// Fires every clone of the signal.
    pub fn trigger(&self) {
        self.state.fire();
    }
}

impl Drop for ShutdownTrigger {
    fn drop(&mut self) {
        self.state.fire();
    }
}
