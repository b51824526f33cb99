//! Forwarding: the state shared by every worker, the per-worker state, and the L4 TCP
//! proxy ([`tcp`]).
//!
//! [`Shared`] is built once from a validated [`Config`] off the data path and is
//! immutable apart from counters (atomics): every worker holds an `Arc` of it. Per-worker
//! state ([`Worker`]) lives in an `Rc`: buffer pool and open-connection count, touched by
//! one thread only.

pub mod tcp;

use crate::balancer::Balancer;
use crate::config::{Config, Mode};
use crate::health::PoolMonitor;
use crate::io::IoBuf;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A backend as the data path sees it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Name used in logs.
    pub name: String,
    /// Where to connect.
    pub addr: SocketAddr,
}

/// A pool: its backends, the balancing state over them, and their health. Index `i` of
/// `targets` is backend `i` of `balancer` and of `health`.
pub struct Pool {
    /// The pool's name, for logs.
    pub name: String,
    /// The backends, in configuration order.
    pub targets: Vec<Target>,
    /// Selection and per-backend active-connection counters.
    pub balancer: Balancer,
    /// Health state; publishes effective weights to `balancer`.
    pub health: Arc<PoolMonitor>,
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

/// One listener: where it binds and where it forwards.
pub struct ListenerShared {
    /// The listener's name, for logs.
    pub name: String,
    /// The address to bind.
    pub bind: SocketAddr,
    /// The pool it balances over.
    pub pool: Arc<Pool>,
    /// Forwarding settings.
    pub settings: TcpSettings,
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

/// Everything the workers share, built from a validated config.
pub struct Shared {
    /// One entry per configured listener.
    pub listeners: Vec<Arc<ListenerShared>>,
    /// The pools, in configuration order.
    pub pools: Vec<Arc<Pool>>,
    /// The process-wide connection limit.
    pub conn_limit: Arc<ConnLimit>,
    /// How long open connections may finish after shutdown begins.
    pub drain_timeout: Duration,
}

impl Shared {
    /// Builds the shared state. The config has been validated, so every listener's pool
    /// exists; a listener whose pool is missing anyway is reported, not unwrapped.
    pub fn from_config(config: &Config) -> Result<Arc<Shared>, String> {
        let pools: Vec<Arc<Pool>> = config
            .pools
            .iter()
            .map(|p| {
                let weights: Vec<u32> = p.backends.iter().map(|b| b.weight).collect();
                let balancer = Balancer::new(p.algorithm, &weights);
                let health = PoolMonitor::new(p, balancer.clone());
                Arc::new(Pool {
                    name: p.name.clone(),
                    targets: p
                        .backends
                        .iter()
                        .map(|b| Target {
                            name: b.name.clone(),
                            addr: b.address,
                        })
                        .collect(),
                    balancer,
                    health,
                })
            })
            .collect();
        let settings = TcpSettings {
            connect_timeout: config.timeouts.connect,
            idle_timeout: config.timeouts.idle,
            buffer_size: config.buffer_size,
        };
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            if l.mode != Mode::Tcp {
                return Err(format!(
                    "listener {}: only mode \"tcp\" is available in this build",
                    l.name
                ));
            }
            let pool = pools
                .iter()
                .find(|p| p.name == l.pool)
                .ok_or_else(|| format!("listener {}: unknown pool {}", l.name, l.pool))?;
            listeners.push(Arc::new(ListenerShared {
                name: l.name.clone(),
                bind: l.bind,
                pool: pool.clone(),
                settings,
            }));
        }
        Ok(Arc::new(Shared {
            listeners,
            pools,
            conn_limit: ConnLimit::new(config.max_connections),
            drain_timeout: config.timeouts.drain,
        }))
    }
}

/// Per-worker state: touched by one thread only.
pub struct Worker {
    buffers: RefCell<Vec<IoBuf>>,
    buffer_size: usize,
    buffers_kept_max: usize,
    open: Cell<usize>,
}

impl Worker {
    /// Buffers of `buffer_size` bytes; at most `buffers_kept_max` idle ones are kept.
    pub fn new(buffer_size: usize, buffers_kept_max: usize) -> Rc<Worker> {
        Rc::new(Worker {
            buffers: RefCell::new(Vec::new()),
            buffer_size,
            buffers_kept_max,
            open: Cell::new(0),
        })
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
/// fires all of them. Works on any runtime (it is `tokio::sync::watch`, which needs no
/// reactor), so the simulation uses it too.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: tokio::sync::watch::Receiver<bool>,
    /// Set by [`Shutdown::never`]: keeps the channel open so that `wait` pends.
    _keep: Option<Arc<tokio::sync::watch::Sender<bool>>>,
}

/// The sending side of [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: tokio::sync::watch::Sender<bool>,
}

impl Shutdown {
    /// A new signal and its trigger.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (ShutdownTrigger { tx }, Shutdown { rx, _keep: None })
    }

    /// A signal that never fires.
    pub fn never() -> Shutdown {
        let (tx, rx) = tokio::sync::watch::channel(false);
        Shutdown {
            rx,
            _keep: Some(Arc::new(tx)),
        }
    }

    /// True once triggered.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes when triggered (or when the trigger is dropped).
    pub async fn wait(&mut self) {
        // An error means the trigger is gone: treat it as a shutdown.
        let _ = self.rx.wait_for(|v| *v).await;
    }
}

impl ShutdownTrigger {
    /// Fires every clone of the signal.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }
}
