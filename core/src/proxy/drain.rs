//! Draining a backend that a reload removed (or set to weight 0): its open connections
//! go on with their real bytes until a deadline, then are cut.
//!
//! Each [`Target`](super::Target) of a pool generation carries a [`DrainSignal`]. It is
//! quiet for the target's whole life unless a reload drains the backend: the reload
//! first takes the backend out of every balancer (weight 0, so no new connection and
//! no fallback reaches it), then [`DrainSignal::start`]s the drain with an absolute
//! deadline, `reload instant + timeouts.drain`, on the data path's clock.
//!
//! Every connection pumping bytes on the target races [`DrainSignal::cut_at_deadline`]
//! against its data path. Until the drain starts, that future only waits on a
//! `tokio::sync::Notify` (no timer, no polling; not a `watch`, whose receivers pick a
//! wait list with tokio's unseeded random generator, so wake order, and the simulation's
//! trace, would change from process to process); once it starts, it sleeps until the
//! deadline and then completes, and the pump resets both sides (the client sees an
//! RST, as for a backend failure, so it cannot take a cut stream for a complete one).
//! Dropping the pump's in-flight reads at that point is exactly the cancellation rule
//! of [`crate::io`]: the connection is closed, never read again. Connections that end
//! on their own before the deadline are untouched (RELIABILITY.md C12, invariant I3:
//! nothing is cut at removal time).
//!
//! The signal also keeps the numbers of its drain: connections that saw it start
//! ([`DrainSignal::open`]) and connections cut ([`DrainSignal::cut`]). The connection
//! whose end brings `open` back to zero after at least one cut logs the one line saying
//! how many the deadline cut.

use crate::io::{Env, Instant};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// The drain of one backend of one pool generation.
#[derive(Debug)]
pub struct DrainSignal {
    /// `Some(deadline)` once the drain started; set once.
    deadline: Mutex<Option<Instant>>,
    /// Wakes the connections waiting for the drain to start, in the order they waited.
    started: tokio::sync::Notify,
    /// Connections that saw the drain start and have not ended yet.
    open: AtomicUsize,
    /// Connections cut at the deadline.
    cut: AtomicU64,
}

impl Default for DrainSignal {
    fn default() -> Self {
        DrainSignal {
            deadline: Mutex::new(None),
            started: tokio::sync::Notify::new(),
            open: AtomicUsize::new(0),
            cut: AtomicU64::new(0),
        }
    }
}

impl DrainSignal {
    /// Starts the drain: connections still open at `deadline` are cut. A second call
    /// keeps the first deadline (a backend is drained once per generation).
    pub fn start(&self, deadline: Instant) {
        {
            let mut d = self.deadline.lock().unwrap_or_else(|e| e.into_inner());
            if d.is_some() {
                return;
            }
            *d = Some(deadline);
        }
        self.started.notify_waiters();
    }

    /// The deadline, once the drain started.
    pub fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections that saw the drain start and are still open.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections cut at the deadline so far.
    pub fn cut(&self) -> u64 {
        self.cut.load(Ordering::Relaxed)
    }

    /// Completes at the drain's deadline, counting the connection as cut; pends forever
    /// while the backend is not drained. Race it against the data path of one
    /// connection on this target; `pool` and `backend` name it in the log line.
    ///
    /// While pending after the drain started, the future counts the connection as open
    /// on the drain; dropping it (the connection ended, on its own or cut) uncounts it.
    pub async fn cut_at_deadline<E: Env>(&self, env: &E, pool: &str, backend: &str) {
        let deadline = loop {
            // Registered before the check, so a start in between still wakes it.
            let mut started = pin!(self.started.notified());
            started.as_mut().enable();
            if let Some(d) = self.deadline() {
                break d;
            }
            started.await;
        };
        let _open = OpenOnDrain::new(self, pool, backend);
        env.sleep_until(deadline).await;
        self.cut.fetch_add(1, Ordering::Relaxed);
    }
}

/// One connection counted open on a drain; the last one out after a cut logs the
/// drain's result.
struct OpenOnDrain<'a> {
    drain: &'a DrainSignal,
    pool: &'a str,
    backend: &'a str,
}

impl<'a> OpenOnDrain<'a> {
    fn new(drain: &'a DrainSignal, pool: &'a str, backend: &'a str) -> Self {
        drain.open.fetch_add(1, Ordering::AcqRel);
        OpenOnDrain { drain, pool, backend }
    }
}

impl Drop for OpenOnDrain<'_> {
    fn drop(&mut self) {
        // Every connection counts its cut before it uncounts itself, so the one that
        // brings `open` to zero sees every cut of the drain.
        if self.drain.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            let cut = self.drain.cut();
            if cut > 0 {
                tracing::warn!(
                    pool = %self.pool,
                    backend = %self.backend,
                    connections = cut,
                    "drain deadline reached; cut the connections still open on the drained backend"
                );
            }
        }
    }
}
