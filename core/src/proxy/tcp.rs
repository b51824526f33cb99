//! L4 TCP forwarding.
//!
//! A connection's life:
//!
//! 1. **Accept**, unless the process-wide connection limit is reached: then the accept
//!    loop pauses and new connections wait in the kernel's backlog (HAProxy's maxconn).
//! 2. **Connect**: the pool's balancer yields the pick and then the fallbacks; each
//!    attempt holds a [`Lease`](crate::balancer::Lease) on its backend (the active
//!    counter) and is bounded by the connect timeout. A refused or timed-out connect moves
//!    on to the next candidate at once; a backend is never tried twice for one
//!    connection. When every candidate fails, the client gets an RST.
//! 3. **Pump**: bytes move both ways through two fixed-size buffers from the worker's
//!    pool (no allocation per read). A FIN from one side is passed on as a FIN to the
//!    other, whose reply still flows back (half-close). The connection is closed when
//!    both directions have ended, when nothing moved for the idle timeout, or when either
//!    side fails; a backend failing mid-stream resets the client (RST, not a clean FIN),
//!    so that the client cannot take a truncated stream for a complete one.
//!    With splicing on ([`super::SpliceSettings`]), a direction that has moved the
//!    threshold's bytes switches to splice(2): socket to a pipe from the worker's pool to
//!    socket, without copying into user space. Counts, half-close, idle timeout and the
//!    RST rules are the same; with no pipe free, or streams that cannot splice, the
//!    direction goes on copying.
//! 4. **Drain**: when a reload removes the backend (or sets its weight to 0), the pump
//!    goes on with the real bytes until the drain deadline and then resets both sides
//!    (see [`super::drain`]).
//!
//! A connection loads its listener's [`Route`](super::Route) once, at the start: it
//! keeps that pool generation and those timeouts for its whole life, whatever reloads
//! happen meanwhile.

use super::{http, ConnPermit, ListenerShared, Shutdown, Worker};
use crate::balancer::PickKey;
use crate::config::Mode;
use crate::io::{
    self, race, Either, Env, Instant, IoBuf, Listener, OwnedRead, OwnedWrite, Pipe, PipePool, Splice, Stream,
};
use std::cell::Cell;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

/// Pause of the accept loop while the connection limit is reached.
const LIMIT_PAUSE: Duration = Duration::from_millis(10);
/// First pause after a failed accept (EMFILE, ENFILE, ENOBUFS...); doubles up to the max.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest pause after failed accepts: short enough to resume quickly, long enough not to
/// spin on a full file table.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(100);
/// After the shutdown drain deadline, how long cut connections get to send their RSTs.
const CUT_GRACE: Duration = Duration::from_millis(100);
/// At most one warning per this interval from one accept loop.
const WARN_INTERVAL: Duration = Duration::from_secs(1);

/// How a proxied connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Both directions finished with FIN.
    Completed {
        /// Index of the backend in the pool.
        backend: usize,
        /// Bytes from client to backend.
        bytes_up: u64,
        /// Bytes from backend to client.
        bytes_down: u64,
    },
    /// No byte moved for the idle timeout; both sides were closed.
    IdleTimeout {
        /// Index of the backend in the pool.
        backend: usize,
    },
    /// The backend failed mid-stream; the client was reset.
    BackendFailed {
        /// Index of the backend in the pool.
        backend: usize,
    },
    /// The client failed mid-stream; the backend was reset.
    ClientFailed {
        /// Index of the backend in the pool.
        backend: usize,
    },
    /// A reload drained the backend and the connection was still open at the drain
    /// deadline; both sides were reset.
    Drained {
        /// Index of the backend in the pool.
        backend: usize,
    },
    /// Every candidate refused or timed out (or none was available); the client was reset.
    NoBackend {
        /// How many backends were tried.
        attempts: usize,
    },
}

/// Accepts connections on `listener` and forwards each to the listener's pool until
/// `shutdown` fires. Returns when the accept loop has stopped; open connections go on in
/// their own tasks (see [`drain`]).
pub async fn serve<E: Env>(
    env: E,
    mut listener: E::Listener,
    shared: Arc<ListenerShared>,
    conn_limit: Arc<super::ConnLimit>,
    worker: Rc<Worker>,
    mut shutdown: Shutdown,
) {
    let mut last_warn: Option<Instant> = None;
    let mut backoff = ACCEPT_BACKOFF_MIN;
    // An `http` listener keeps idle backend connections for reuse, per worker; a
    // sweeper closes the expired ones until shutdown.
    let http = shared.route().mode == Mode::Http;
    let upstreams: Rc<http::Upstreams<E>> = Rc::new(http::Upstreams::new(worker.clone()));
    if http {
        env.spawn(http::sweep_upstreams(
            env.clone(),
            upstreams.clone(),
            shared.clone(),
            shutdown.clone(),
        ));
    }
    loop {
        // 1. Room under the connection limit, or a pause until some frees up. Checked
        // before accepting, so that at the limit new connections wait in the backlog.
        while !conn_limit.has_room() {
            if !pause_at_limit(&env, &shared, &conn_limit, &mut shutdown, &mut last_warn).await {
                return;
            }
        }
        // 2. The next connection.
        let accepted = match race(shutdown.wait(), listener.accept()).await {
            Either::Left(()) => return,
            Either::Right(r) => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                // Another worker may have taken the last slot since the check above.
                let permit = loop {
                    if let Some(p) = conn_limit.try_acquire() {
                        break p;
                    }
                    if !pause_at_limit(&env, &shared, &conn_limit, &mut shutdown, &mut last_warn).await {
                        return;
                    }
                };
                let env2 = env.clone();
                let shared2 = shared.clone();
                let open = worker.track();
                let worker2 = worker.clone();
                if http {
                    let upstreams = upstreams.clone();
                    let shutdown = shutdown.clone();
                    env.spawn(async move {
                        let outcome =
                            http::serve_connection(&env2, stream, peer, &shared2, &worker2, &upstreams, &shutdown)
                                .await;
                        tracing::debug!(listener = %shared2.name, %peer, ?outcome, "connection closed");
                        drop(open);
                        drop::<ConnPermit>(permit);
                    });
                } else {
                    env.spawn(async move {
                        let outcome = proxy_connection(&env2, stream, peer, &shared2, &worker2).await;
                        tracing::debug!(listener = %shared2.name, %peer, ?outcome, "connection closed");
                        drop(open);
                        drop::<ConnPermit>(permit);
                    });
                }
            }
            Err(e) => {
                // Out of file descriptors or a transient network error: back off without
                // spinning, keep serving the open connections, and try again.
                if should_warn(&env, &mut last_warn) {
                    tracing::warn!(listener = %shared.name, error = %e, pause_ms = backoff.as_millis() as u64, "accept failed; backing off");
                }
                if let Either::Left(()) = race(shutdown.wait(), env.sleep(backoff)).await {
                    return;
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

/// Counts and logs (rate-limited) a pause at the connection limit, then sleeps briefly.
/// Returns false when shutdown fired during the pause.
async fn pause_at_limit<E: Env>(
    env: &E,
    shared: &ListenerShared,
    conn_limit: &super::ConnLimit,
    shutdown: &mut Shutdown,
    last_warn: &mut Option<Instant>,
) -> bool {
    conn_limit.saturated_total.fetch_add(1, Ordering::Relaxed);
    if should_warn(env, last_warn) {
        tracing::warn!(listener = %shared.name, open = conn_limit.open(), "connection limit reached; pausing accepts");
    }
    matches!(race(shutdown.wait(), env.sleep(LIMIT_PAUSE)).await, Either::Right(()))
}

/// Waits until `worker` has no open connection or `deadline` passes; returns how many
/// connections were still open (they are cut when the worker's runtime stops).
pub async fn drain<E: Env>(env: &E, worker: &Worker, deadline: Instant) -> usize {
    // Polling every 10 ms keeps this free of wake-up plumbing; it runs once per shutdown.
    while worker.open_connections() > 0 && env.now() < deadline {
        env.sleep(Duration::from_millis(10)).await;
    }
    let cut = worker.open_connections();
    if cut > 0 {
        // Reset them rather than letting the runtime's end close them with a FIN that
        // would look like a complete stream; give the tasks a moment to do it.
        worker.cut_open_connections();
        let grace = env.now() + CUT_GRACE;
        while worker.open_connections() > 0 && env.now() < grace {
            env.sleep(Duration::from_millis(5)).await;
        }
    }
    cut
}

fn should_warn<E: Env>(env: &E, last: &mut Option<Instant>) -> bool {
    let now = env.now();
    match *last {
        Some(t) if now.saturating_duration_since(t) < WARN_INTERVAL => false,
        _ => {
            *last = Some(now);
            true
        }
    }
}

/// A fixed-seed hash of the client's IP address, for consistent hashing: the same client
/// maps to the same key in every worker and every process.
pub fn client_key(peer: SocketAddr) -> u64 {
    match peer.ip() {
        IpAddr::V4(a) => io::fnv1a64(&a.octets()),
        IpAddr::V6(a) => io::fnv1a64(&a.octets()),
    }
}

/// Forwards one client connection. Public so that the simulation and tests can drive a
/// single connection.
pub async fn proxy_connection<E: Env>(
    env: &E,
    client: E::Stream,
    peer: SocketAddr,
    shared: &ListenerShared,
    worker: &Worker,
) -> Outcome {
    // One load per connection: this generation's pool and timeouts, for its whole life.
    let route = shared.route();
    let pool = &*route.pool;
    let settings = route.settings;
    let key = PickKey {
        client: client_key(peer),
        random: env.random_u64(),
    };
    let mut attempts = 0;
    let mut connected = None;
    for lease in pool.balancer.select(key) {
        attempts += 1;
        let Some(target) = pool.targets.get(lease.index()) else {
            continue;
        };
        let deadline = env.now() + settings.connect_timeout;
        match io::timeout_at(env, deadline, env.connect(target.addr)).await {
            Some(Ok(stream)) => {
                pool.health.report_connect(lease.index(), true, "connected", env.now());
                connected = Some((stream, lease));
                break;
            }
            Some(Err(e)) => {
                pool.health
                    .report_connect(lease.index(), false, "connect failed", env.now());
                tracing::warn!(pool = %pool.name, backend = %target.name, addr = %target.addr, error = %e, "connect failed; trying the next backend");
            }
            None => {
                pool.health
                    .report_connect(lease.index(), false, "connect timed out", env.now());
                tracing::warn!(pool = %pool.name, backend = %target.name, addr = %target.addr, timeout_ms = settings.connect_timeout.as_millis() as u64, "connect timed out; trying the next backend");
            }
        }
        // The lease drops here: the failed attempt no longer counts as active.
    }
    let Some((backend, lease)) = connected else {
        if attempts == 0 {
            // Every backend is down, ejected or drained (and the pool refuses rather than
            // failing open): counted, and logged at most once a second.
            pool.health.note_no_backend(env.now());
        } else {
            tracing::warn!(pool = %pool.name, listener = %shared.name, attempts, "no backend could be reached; resetting the client");
        }
        client.abort();
        return Outcome::NoBackend { attempts };
    };
    let idx = lease.index();
    let up = worker.take_buffer();
    let down = worker.take_buffer();
    let backend_drain = async {
        match pool.targets.get(idx) {
            Some(t) => t.drain.cut_at_deadline(env, &pool.name, &t.name).await,
            None => std::future::pending().await,
        }
    };
    // A reload's drain deadline for this backend, or the shutdown's for the worker.
    let shutdown_cut = worker.cut_signal();
    let drain = async {
        race(backend_drain, shutdown_cut).await;
    };
    let splice = worker.splice().map(|(after, pool)| SpliceCtx { after, pool });
    let (end, up, down) = pump(env, client, backend, up, down, settings.idle_timeout, splice, drain).await;
    worker.give_buffer(up);
    worker.give_buffer(down);
    drop(lease);
    match end {
        PumpEnd::Done { bytes_up, bytes_down } => Outcome::Completed {
            backend: idx,
            bytes_up,
            bytes_down,
        },
        PumpEnd::Idle => Outcome::IdleTimeout { backend: idx },
        PumpEnd::BackendFailed => {
            pool.health.report_connect(idx, false, "failed mid-stream", env.now());
            Outcome::BackendFailed { backend: idx }
        }
        PumpEnd::ClientFailed => Outcome::ClientFailed { backend: idx },
        PumpEnd::Drained => {
            pool.stats.drained_cut_total.fetch_add(1, Ordering::Relaxed);
            Outcome::Drained { backend: idx }
        }
    }
}

/// How one direction of the pump ended.
enum DirEnd {
    /// The source sent FIN and the FIN was passed on.
    Eof,
    /// Reading the source failed.
    ReadFailed,
    /// Writing the destination failed.
    WriteFailed,
}

/// How the whole pump ended.
pub(super) enum PumpEnd {
    Done {
        bytes_up: u64,
        bytes_down: u64,
    },
    Idle,
    BackendFailed,
    ClientFailed,
    /// The drain deadline of the backend passed.
    Drained,
}

/// Splicing for one connection: the threshold and the worker's pipe pool.
#[derive(Clone, Copy)]
pub(super) struct SpliceCtx<'a> {
    after: u64,
    pool: &'a PipePool,
}

/// Copies `src` to `dst` until EOF or an error, then passes the FIN on. With `splice`,
/// switches to splicing once `bytes` reaches its threshold and the last read filled the
/// buffer (from the first byte with a threshold of 0), if the pair can splice and a pipe
/// is free; the pipe lives in `pipe`, outside this future, so that bytes still in it are
/// never mistaken for an empty pipe when the future is dropped.
///
/// The full read is HAProxy's splice-auto heuristic: a direction that fills its buffer
/// is moving bulk; one that carries small messages (requests and replies on a long
/// keep-alive connection) passes the byte threshold too, given time, but a pipe round
/// trip per small message costs more than the copy (with IORING_OP_SPLICE, which the
/// kernel runs on an io-wq thread, small requests through one worker on connections past
/// the threshold ran at 0.72 of HAProxy's rate, against 1.12 copied).
///
/// A splice that cannot go on ([`Splice::must_copy`]: the source is at TCP urgent data)
/// leaves its pipe empty, and the direction copies from there on.
#[allow(clippy::too_many_arguments)]
async fn copy_dir<E: Env, R: OwnedRead, W: OwnedWrite>(
    env: &E,
    src: &mut R,
    dst: &mut W,
    slot: &mut Option<IoBuf>,
    pipe: &mut Option<Pipe>,
    mut splice: Option<SpliceCtx<'_>>,
    activity: &Cell<Instant>,
    bytes: &Cell<u64>,
) -> DirEnd {
    let mut last_read_full = false;
    loop {
        if let Some(ctx) = splice {
            if bytes.get() >= ctx.after && (ctx.after == 0 || last_read_full) {
                match src.splice_to(dst) {
                    // This pair cannot splice: copy for the rest of the connection.
                    None => splice = None,
                    Some(sp) => {
                        if pipe.is_none() {
                            *pipe = ctx.pool.take();
                        }
                        // No pipe free: copy this round and try again on the next.
                        if let Some(p) = pipe.as_mut() {
                            match splice_dir(env, sp, p, activity, bytes).await {
                                // The source cannot splice on (urgent data): the pipe is
                                // empty, so copy the rest of the direction.
                                None => splice = None,
                                Some(DirEnd::Eof) => {
                                    return match dst.shutdown().await {
                                        Ok(()) => DirEnd::Eof,
                                        Err(_) => DirEnd::WriteFailed,
                                    }
                                }
                                Some(e) => return e,
                            }
                        }
                    }
                }
            }
        }
        let Some(mut buf) = slot.take() else {
            return DirEnd::ReadFailed;
        };
        let room = buf.spare_capacity();
        let (res, buf) = src.read(buf).await;
        let n = match res {
            Ok(0) => {
                *slot = Some(buf);
                return match dst.shutdown().await {
                    Ok(()) => DirEnd::Eof,
                    // The destination is already gone: what it would have got is lost.
                    Err(_) => DirEnd::WriteFailed,
                };
            }
            Ok(n) => n,
            Err(_) => {
                *slot = Some(buf);
                return DirEnd::ReadFailed;
            }
        };
        activity.set(env.now());
        let (res, buf) = dst.write_all(buf).await;
        *slot = Some(buf);
        if res.is_err() {
            return DirEnd::WriteFailed;
        }
        bytes.set(bytes.get() + n as u64);
        last_read_full = n >= room;
        activity.set(env.now());
    }
}

/// Splices through `pipe` (empty on entry) until the source's EOF (returned as
/// [`DirEnd::Eof`], with the pipe empty and the FIN not yet passed on) or an error; `None`
/// when the source cannot splice on ([`Splice::must_copy`]), with the pipe empty.
/// `bytes` counts what reached the destination.
async fn splice_dir<E: Env>(
    env: &E,
    mut sp: Splice<'_>,
    pipe: &mut Pipe,
    activity: &Cell<Instant>,
    bytes: &Cell<u64>,
) -> Option<DirEnd> {
    loop {
        match sp.fill(pipe).await {
            Ok(0) => return Some(DirEnd::Eof),
            Ok(_) => {}
            Err(e) if Splice::must_copy(&e) => return None,
            Err(_) => return Some(DirEnd::ReadFailed),
        }
        activity.set(env.now());
        while pipe.pending() > 0 {
            match sp.flush(pipe).await {
                Ok(n) => {
                    bytes.set(bytes.get() + n as u64);
                    activity.set(env.now());
                }
                Err(_) => return Some(DirEnd::WriteFailed),
            }
        }
    }
}

/// Moves bytes both ways until both directions end, the connection idles out, a side
/// fails, or `drain` completes (the backend's drain deadline). Returns the buffers for
/// the pool; pipes go back to `splice`'s pool when empty and are closed otherwise.
#[allow(clippy::too_many_arguments)]
async fn pump<E: Env, S: Stream, B: Stream>(
    env: &E,
    client: S,
    backend: B,
    up: IoBuf,
    down: IoBuf,
    idle_timeout: Duration,
    splice: Option<SpliceCtx<'_>>,
    drain: impl Future<Output = ()>,
) -> (PumpEnd, IoBuf, IoBuf) {
    let (cr, cw) = client.into_split();
    let (br, bw) = backend.into_split();
    pump_split(env, (cr, cw), (br, bw), up, down, idle_timeout, splice, drain).await
}

/// [`pump`] over halves already split: the client's `(read, write)` and the backend's.
/// The HTTP proxy uses it for upgraded (WebSocket) connections.
#[allow(clippy::too_many_arguments)]
pub(super) async fn pump_split<E: Env, CR: OwnedRead, CW: OwnedWrite, BR: OwnedRead, BW: OwnedWrite>(
    env: &E,
    client: (CR, CW),
    backend: (BR, BW),
    up: IoBuf,
    down: IoBuf,
    idle_timeout: Duration,
    splice: Option<SpliceCtx<'_>>,
    drain: impl Future<Output = ()>,
) -> (PumpEnd, IoBuf, IoBuf) {
    let (mut cr, mut cw) = client;
    let (mut br, mut bw) = backend;
    let mut up_slot = Some(up);
    let mut down_slot = Some(down);
    let mut up_pipe = None;
    let mut down_pipe = None;
    // When a read or a write last completed, in either direction.
    let activity = Cell::new(env.now());
    let bytes_up = Cell::new(0u64);
    let bytes_down = Cell::new(0u64);

    let end = {
        let upf = copy_dir(
            env,
            &mut cr,
            &mut bw,
            &mut up_slot,
            &mut up_pipe,
            splice,
            &activity,
            &bytes_up,
        );
        let downf = copy_dir(
            env,
            &mut br,
            &mut cw,
            &mut down_slot,
            &mut down_pipe,
            splice,
            &activity,
            &bytes_down,
        );
        let watchdog = async {
            loop {
                let deadline = activity.get() + idle_timeout;
                env.sleep_until(deadline).await;
                if env.now() >= activity.get() + idle_timeout {
                    return;
                }
            }
        };
        drive(upf, downf, watchdog, drain).await
    };
    // Every future that borrowed the halves is gone: by the cancellation rule, a stream
    // whose read was abandoned is closed here, never read again.
    let end = match end {
        Driven::BothEof => PumpEnd::Done {
            bytes_up: bytes_up.get(),
            bytes_down: bytes_down.get(),
        },
        Driven::Idle => PumpEnd::Idle,
        Driven::Drained => PumpEnd::Drained,
        // Client -> backend failed: a client read error is the client's failure; a
        // backend write error is the backend's.
        Driven::Up(DirEnd::ReadFailed, _) => PumpEnd::ClientFailed,
        // The backend answered in full and closed; the client kept sending and the write
        // failed: the backend ended the exchange, it did not fail. No RST to a client
        // that has its complete reply, and nothing counted against the backend.
        Driven::Up(DirEnd::WriteFailed, true) => PumpEnd::Done {
            bytes_up: bytes_up.get(),
            bytes_down: bytes_down.get(),
        },
        Driven::Up(_, _) => PumpEnd::BackendFailed,
        Driven::Down(DirEnd::ReadFailed) => PumpEnd::BackendFailed,
        Driven::Down(_) => PumpEnd::ClientFailed,
    };
    match end {
        // The client must not mistake a cut stream for a complete one: RST it.
        PumpEnd::BackendFailed => {
            cw.abort();
            drop(bw);
        }
        // The backend's request was cut: RST it as well, so it stops working on it.
        PumpEnd::ClientFailed => {
            bw.abort();
            drop(cw);
        }
        // Cut at the drain deadline: the client must not take the cut stream for a
        // complete one, and the backend stops working on it.
        PumpEnd::Drained => {
            cw.abort();
            bw.abort();
        }
        _ => {}
    }
    if let Some(ctx) = splice {
        // An empty pipe goes back for the next connection; one still holding bytes of
        // this (cut) connection is closed.
        for p in [up_pipe, down_pipe].into_iter().flatten() {
            ctx.pool.give(p);
        }
    }
    let up = up_slot.unwrap_or_default();
    let down = down_slot.unwrap_or_default();
    (end, up, down)
}

enum Driven {
    BothEof,
    Idle,
    Drained,
    /// Client -> backend failed; `true` when the backend had already finished its side
    /// with a clean FIN.
    Up(DirEnd, bool),
    Down(DirEnd),
}

/// Polls both directions, the watchdog and the drain deadline, in that order, every
/// time. A direction that ends with EOF is done and the other goes on; one that fails
/// ends everything at once.
async fn drive(
    up: impl Future<Output = DirEnd>,
    down: impl Future<Output = DirEnd>,
    watchdog: impl Future<Output = ()>,
    drain: impl Future<Output = ()>,
) -> Driven {
    let mut up = pin!(up);
    let mut down = pin!(down);
    let mut watchdog = pin!(watchdog);
    let mut drain = pin!(drain);
    let mut up_done = false;
    let mut down_done = false;
    std::future::poll_fn(|cx| {
        if !up_done {
            if let Poll::Ready(end) = up.as_mut().poll(cx) {
                match end {
                    DirEnd::Eof => up_done = true,
                    e => return Poll::Ready(Driven::Up(e, down_done)),
                }
            }
        }
        if !down_done {
            if let Poll::Ready(end) = down.as_mut().poll(cx) {
                match end {
                    DirEnd::Eof => down_done = true,
                    e => return Poll::Ready(Driven::Down(e)),
                }
            }
        }
        if up_done && down_done {
            return Poll::Ready(Driven::BothEof);
        }
        if watchdog.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Driven::Idle);
        }
        if drain.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Driven::Drained);
        }
        Poll::Pending
    })
    .await
}
