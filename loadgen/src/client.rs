//! The client engine: one worker's connections, generic over [`Env`], so the same code
//! measures real sockets (through [`driver`](crate::driver)) and drives the simulation.
//!
//! A worker resolves the target, then runs each of its connections as a task. A
//! connection's life is a loop: wait until its next request is due (open loop) or go at
//! once (closed loop), connect if it has no stream, write the request, read until
//! [`Framing`] says the reply is complete, record, repeat. Every wait is bounded: a
//! connect by `connect_timeout`, a reply by `timeout`, and everything by the end of the
//! run, so a target that stalls, refuses or vanishes costs counted errors, never a hang.
//!
//! The timeline of a run, from the worker's start `t0`:
//!
//! ```text
//! t0 ---- warm-up ---- measure_from ---------- duration ---------- end
//!         (sent, not recorded)      (recorded)                      (in flight: dropped)
//! ```
//!
//! A request belongs to the measurement when its latency start (see
//! [`latency_start`]) falls in the measured window. Requests in flight at `end` are
//! neither successes nor errors: the run ended, the target did not fail.
//!
//! Per the I/O trait's cancellation rule, a connection whose read lost a race against a
//! deadline is dropped, never read again.
//!
//! A caller that must follow every single request (the simulation's oracle) runs a
//! worker with a [`Tap`] ([`run_worker_with_tap`]): the tap builds each request (so it
//! can give each a unique id), sees the bytes of its reply, and hears how it ended,
//! exactly once per request written.

use crate::http::{Framing, Reply, Step, READ_BUF_BYTES};
use crate::schedule::{latency_start, Backoff, Schedule};
use crate::stats::{ErrorKind, Stats};
use crate::target::Target;
use gobalancer::io::{timeout_at, Env, Instant, IoBuf, OwnedRead, OwnedWrite};
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Most connections of one run: each holds a [`READ_BUF_BYTES`] buffer, and loopback
/// has about this many ephemeral ports.
pub const CONNECTIONS_MAX: u32 = 65_536;
/// Most worker threads.
pub const THREADS_MAX: u32 = 1024;
/// Highest `--rate`, in requests per second.
pub const RATE_PER_S_MAX: u64 = 100_000_000;
/// Longest duration, warm-up, timeout or connect timeout.
pub const DURATION_MAX: Duration = Duration::from_secs(24 * 3600);
/// A send on an idle connection more than this late (nanoseconds) counts as a late
/// send: loadgen itself fell behind its schedule, and the open-loop results understate
/// the offered rate. Tokio's timer granularity is 1 ms, so lateness under that is normal.
pub const LATE_SEND_NS: u64 = 5_000_000;
/// How long name resolution may take before the run gives up.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// After the end of the run, how long a worker waits for its connection tasks to see
/// it. They all race the end, so this is only a backstop.
pub const END_GRACE: Duration = Duration::from_secs(1);

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Where to.
    pub target: Target,
    /// The bytes of one request, sent unchanged every time.
    pub request: Vec<u8>,
    /// How each reply is framed (a fresh copy per connection).
    pub reply: Framing,
    /// Connections, over all threads.
    pub connections: u32,
    /// Worker threads (each a single-threaded runtime).
    pub threads: u32,
    /// Measured time, after the warm-up. Also the limit of a `requests` run.
    pub duration: Duration,
    /// Stop after this many measured requests (over all threads).
    pub requests: Option<u64>,
    /// Time at the start whose requests are sent but not recorded.
    pub warmup: Duration,
    /// Open loop: requests per second over all connections. `None`: closed loop.
    pub rate_per_s: Option<u64>,
    /// Open a new connection for every request (and close it after the reply).
    pub new_conn: bool,
    /// Limit on one reply, from its send.
    pub timeout: Duration,
    /// Limit on one connect.
    pub connect_timeout: Duration,
}

/// A plan that cannot run.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    /// Connections out of range.
    #[error("-c {0}: expected 1 to {CONNECTIONS_MAX} connections")]
    Connections(u32),
    /// Threads out of range or more threads than connections.
    #[error("-t {threads}: expected 1 to {THREADS_MAX} threads, and no more than the {connections} connections")]
    Threads {
        /// Threads asked for.
        threads: u32,
        /// Connections asked for.
        connections: u32,
    },
    /// A duration is zero or too long.
    #[error("{0}: expected more than 0 and at most 24h")]
    Duration(&'static str),
    /// Rate out of range.
    #[error("--rate {0}: expected 1 to {RATE_PER_S_MAX} requests per second")]
    Rate(u64),
    /// `-n 0`.
    #[error("-n 0: expected at least one request")]
    Requests,
}

impl Plan {
    /// Checks every limit.
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.connections == 0 || self.connections > CONNECTIONS_MAX {
            return Err(PlanError::Connections(self.connections));
        }
        if self.threads == 0 || self.threads > THREADS_MAX || self.threads > self.connections {
            return Err(PlanError::Threads {
                threads: self.threads,
                connections: self.connections,
            });
        }
        for (name, d, zero_ok) in [
            ("-d", self.duration, false),
            ("--warmup", self.warmup, true),
            ("--timeout", self.timeout, false),
            ("--connect-timeout", self.connect_timeout, false),
        ] {
            if (d.is_zero() && !zero_ok) || d > DURATION_MAX {
                return Err(PlanError::Duration(name));
            }
        }
        if let Some(r) = self.rate_per_s {
            if r == 0 || r > RATE_PER_S_MAX {
                return Err(PlanError::Rate(r));
            }
        }
        if self.requests == Some(0) {
            return Err(PlanError::Requests);
        }
        Ok(())
    }

    /// Splits connections and requests over the threads as evenly as they divide.
    pub fn shares(&self) -> Vec<Share> {
        let t = self.threads.max(1);
        let mut first_slot = 0;
        (0..t)
            .map(|w| {
                let connections = self.connections / t + u32::from(w < self.connections % t);
                let requests = self
                    .requests
                    .map(|n| n / u64::from(t) + u64::from(u64::from(w) < n % u64::from(t)));
                let share = Share {
                    worker: w,
                    first_slot,
                    connections,
                    requests,
                };
                first_slot += connections;
                share
            })
            .collect()
    }
}

/// One worker's part of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    /// Worker index.
    pub worker: u32,
    /// Index of its first connection among all connections (open-loop phase).
    pub first_slot: u32,
    /// Its connections.
    pub connections: u32,
    /// Its measured requests, for a `-n` run.
    pub requests: Option<u64>,
}

/// Counters a worker publishes while it runs, for the progress line. One writer (the
/// worker), so plain stores; aligned to a cache line so that workers do not share one.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct Live {
    /// Measured replies so far.
    pub requests: AtomicU64,
    /// Measured errors so far.
    pub errors: AtomicU64,
}

/// What one worker measured.
#[derive(Clone, Debug)]
pub struct WorkerResult {
    /// Its measurements.
    pub stats: Stats,
    /// Its measured window: from the end of the warm-up to the end of the run (or to its
    /// last reply, in a `-n` run that finished early).
    pub elapsed: Duration,
}

/// How one request ended, as a [`Tap`] hears it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TapOutcome {
    /// A complete reply. `extra_bytes`: bytes that had already arrived after it when its
    /// connection was closed (a reply should be alone on its exchange; on a kept-alive
    /// connection such bytes stay buffered and are framed as the next reply instead).
    Reply {
        /// Its status (0 for a raw TCP reply).
        status: u16,
        /// Bytes after the reply on a connection closed after it.
        extra_bytes: usize,
    },
    /// The request failed (counted as an error of this kind).
    Failed(ErrorKind),
    /// No complete reply within the timeout.
    Timeout,
    /// The run ended while the request was in flight: neither a success nor an error.
    RunOver,
}

/// Follows every request of a worker: used by the simulation to tag each request with a
/// unique id and check that each ends exactly once. All calls come from the worker's
/// own thread, in the order things happen.
pub trait Tap {
    /// The bytes of the next request on connection `slot` (instead of
    /// [`Plan::request`]), and the id that names it in the calls below. Called once per
    /// request, on an open connection, just before it is written.
    fn request(&self, slot: u64) -> (u64, Vec<u8>);
    /// Bytes of request `id`'s reply, in order, as the framer consumes them.
    fn reply_bytes(&self, id: u64, bytes: &[u8]);
    /// How request `id` ended; exactly once per [`Tap::request`], unless the worker
    /// itself is dropped (its host crashed).
    fn outcome(&self, id: u64, outcome: TapOutcome);
}

/// A worker that could not start.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The target's name did not resolve.
    #[error("cannot resolve {name}: {source}")]
    Resolve {
        /// The name.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// Resolution took longer than [`RESOLVE_TIMEOUT`].
    #[error("resolving {0} took longer than {RESOLVE_TIMEOUT:?}")]
    ResolveTimeout(String),
    /// The name resolved to nothing.
    #[error("{0} resolves to no address")]
    NoAddress(String),
}

/// State shared by the connections of one worker (one thread: `Rc`, `Cell`).
struct Ctx {
    plan: Arc<Plan>,
    addr: SocketAddr,
    t0: Instant,
    measure_from: Instant,
    end: Instant,
    /// Measured requests left to send in a `-n` run.
    tickets: Cell<Option<u64>>,
    stats: RefCell<Stats>,
    live: Arc<Live>,
    /// Follows every request, when the caller asked for it.
    tap: Option<Rc<dyn Tap>>,
}

impl Ctx {
    fn out_of_tickets(&self) -> bool {
        self.tickets.get() == Some(0)
    }

    fn take_ticket(&self) -> bool {
        match self.tickets.get() {
            None => true,
            Some(0) => false,
            Some(n) => {
                self.tickets.set(Some(n - 1));
                true
            }
        }
    }

    fn error(&self, kind: ErrorKind) {
        let mut s = self.stats.borrow_mut();
        s.record_error(kind);
        self.live.errors.store(s.errors_total(), Ordering::Relaxed);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Runs one worker's share of `plan` on `env` until the run ends, and returns what it
/// measured. `live` is updated as replies come in.
pub async fn run_worker<E: Env>(
    env: E,
    plan: Arc<Plan>,
    share: Share,
    live: Arc<Live>,
) -> Result<WorkerResult, EngineError> {
    run(env, plan, share, live, None).await
}

/// [`run_worker`], with `tap` building every request and hearing how each ended.
pub async fn run_worker_with_tap<E: Env>(
    env: E,
    plan: Arc<Plan>,
    share: Share,
    live: Arc<Live>,
    tap: Rc<dyn Tap>,
) -> Result<WorkerResult, EngineError> {
    run(env, plan, share, live, Some(tap)).await
}

async fn run<E: Env>(
    env: E,
    plan: Arc<Plan>,
    share: Share,
    live: Arc<Live>,
    tap: Option<Rc<dyn Tap>>,
) -> Result<WorkerResult, EngineError> {
    let name = plan.target.authority.clone();
    let addrs = match timeout_at(&env, env.now() + RESOLVE_TIMEOUT, env.resolve(&name)).await {
        None => return Err(EngineError::ResolveTimeout(name)),
        Some(Err(source)) => return Err(EngineError::Resolve { name, source }),
        Some(Ok(a)) => a,
    };
    let addr = *addrs.first().ok_or(EngineError::NoAddress(name))?;
    let t0 = env.now();
    let measure_from = t0 + plan.warmup;
    let ctx = Rc::new(Ctx {
        addr,
        t0,
        measure_from,
        end: measure_from + plan.duration,
        tickets: Cell::new(share.requests),
        stats: RefCell::new(Stats::new()),
        live,
        plan,
        tap,
    });
    // Each task holds a sender; `recv` returns `None` once every task has finished and
    // dropped its sender. No message is ever sent.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(1);
    for i in 0..share.connections {
        let slot = u64::from(share.first_slot) + u64::from(i);
        env.spawn(connection(env.clone(), ctx.clone(), slot, done_tx.clone()));
    }
    drop(done_tx);
    let _ = timeout_at(&env, ctx.end + END_GRACE, done_rx.recv()).await;
    let elapsed = env.now().min(ctx.end).saturating_duration_since(ctx.measure_from);
    let stats = ctx.stats.replace(Stats::new());
    Ok(WorkerResult { stats, elapsed })
}

/// The two buffers of a connection. Each goes into an I/O call and comes back; one lost
/// to a deadline is replaced (and its connection dropped).
struct Bufs {
    read: IoBuf,
    write: IoBuf,
    request_bytes: usize,
}

impl Bufs {
    fn new(request_bytes: usize) -> Bufs {
        Bufs {
            read: IoBuf::with_capacity(READ_BUF_BYTES),
            write: IoBuf::with_capacity(request_bytes),
            request_bytes,
        }
    }
}

/// How one request ended.
enum Outcome {
    Reply(Reply),
    Failed(ErrorKind),
    /// The deadline passed (a timeout, or the end of the run).
    Deadline,
}

enum Opened<S> {
    Stream(S),
    Failed,
    RunOver,
}

async fn open<E: Env>(env: &E, ctx: &Ctx) -> Opened<E::Stream> {
    let began = env.now();
    let limit = began + ctx.plan.connect_timeout;
    let (deadline, by_end) = if limit < ctx.end {
        (limit, false)
    } else {
        (ctx.end, true)
    };
    let measured = began >= ctx.measure_from;
    match timeout_at(env, deadline, env.connect(ctx.addr)).await {
        None if by_end => Opened::RunOver,
        None => {
            if measured {
                ctx.error(ErrorKind::ConnectTimeout);
            }
            Opened::Failed
        }
        Some(Err(_)) => {
            if measured {
                ctx.error(ErrorKind::Connect);
            }
            Opened::Failed
        }
        Some(Ok(s)) => {
            if measured {
                let took = env.now().saturating_duration_since(began);
                ctx.stats.borrow_mut().record_connect(nanos(took));
            }
            Opened::Stream(s)
        }
    }
}

/// One connection's loop; see the module documentation.
async fn connection<E: Env>(env: E, ctx: Rc<Ctx>, slot: u64, _done: tokio::sync::mpsc::Sender<()>) {
    let plan = ctx.plan.clone();
    let mut schedule = plan
        .rate_per_s
        .map(|r| Schedule::new(ctx.t0, slot, u64::from(plan.connections), r));
    let mut backoff = Backoff::new();
    let mut framing = plan.reply.clone();
    let mut bufs = Bufs::new(plan.request.len());
    let mut stream: Option<E::Stream> = None;
    loop {
        let due = schedule.as_ref().map(Schedule::due);
        let reached = env.now();
        if reached >= ctx.end || due.is_some_and(|d| d >= ctx.end) || ctx.out_of_tickets() {
            break;
        }
        if let Some(d) = due.filter(|d| *d > reached) {
            env.sleep_until(d).await;
        }
        let mut s = match stream.take() {
            Some(s) => s,
            None => match open(&env, &ctx).await {
                Opened::Stream(s) => {
                    backoff.reset();
                    s
                }
                Opened::Failed => {
                    // The same request is retried: in the open loop its due time stays,
                    // so the outage counts in the latency of the requests it delayed.
                    let wait = env.now() + backoff.next_delay();
                    env.sleep_until(wait.min(ctx.end)).await;
                    continue;
                }
                Opened::RunOver => break,
            },
        };
        let sent = env.now();
        let start = latency_start(due, reached, sent);
        let measured = start >= ctx.measure_from;
        if measured && !ctx.take_ticket() {
            break;
        }
        if let Some(sch) = schedule.as_mut() {
            sch.advance();
        }
        if measured {
            if let Some(d) = due.filter(|d| reached < *d) {
                if nanos(sent.saturating_duration_since(d)) > LATE_SEND_NS {
                    ctx.stats.borrow_mut().late_sends += 1;
                }
            }
        }
        let limit = sent + plan.timeout;
        let (deadline, by_end) = if limit < ctx.end {
            (limit, false)
        } else {
            (ctx.end, true)
        };
        let tapped = ctx.tap.as_ref().map(|t| (t.clone(), t.request(slot)));
        let request = tapped
            .as_ref()
            .map_or(plan.request.as_slice(), |(_, (_, r))| r.as_slice());
        let follow = tapped.as_ref().map(|(t, (id, _))| (t.as_ref(), *id));
        let outcome = exchange(
            &env,
            &ctx,
            &mut s,
            &mut bufs,
            &mut framing,
            deadline,
            measured,
            request,
            follow,
        )
        .await;
        let tell = |o: TapOutcome| {
            if let Some((t, id)) = follow {
                t.outcome(id, o);
            }
        };
        match outcome {
            Outcome::Reply(r) => {
                if measured {
                    let latency = env.now().saturating_duration_since(start);
                    let mut st = ctx.stats.borrow_mut();
                    st.record_reply(r.status, nanos(latency));
                    ctx.live.requests.store(st.requests, Ordering::Relaxed);
                }
                if r.close || plan.new_conn {
                    tell(TapOutcome::Reply {
                        status: r.status,
                        extra_bytes: bufs.read.len(),
                    });
                    // Bytes after a closing reply are not the next reply's.
                    bufs.read.clear();
                    framing.reset();
                } else {
                    tell(TapOutcome::Reply {
                        status: r.status,
                        extra_bytes: 0,
                    });
                    stream = Some(s);
                }
            }
            Outcome::Failed(kind) => {
                tell(TapOutcome::Failed(kind));
                if measured {
                    ctx.error(kind);
                }
                bufs.read.clear();
                framing.reset();
            }
            Outcome::Deadline if by_end => {
                tell(TapOutcome::RunOver);
                break;
            }
            Outcome::Deadline => {
                tell(TapOutcome::Timeout);
                if measured {
                    ctx.error(ErrorKind::Timeout);
                }
                framing.reset();
            }
        }
    }
}

/// Writes `request` and reads its reply on `s`, until `deadline`. `follow`: the tap
/// that sees the reply's bytes, and the request's id.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
async fn exchange<E: Env, S: OwnedRead + OwnedWrite>(
    env: &E,
    ctx: &Ctx,
    s: &mut S,
    bufs: &mut Bufs,
    framing: &mut Framing,
    deadline: Instant,
    measured: bool,
    request: &[u8],
    follow: Option<(&dyn Tap, u64)>,
) -> Outcome {
    let mut w = std::mem::take(&mut bufs.write);
    if w.capacity() < request.len() {
        // A tapped request may be longer than `Plan::request`.
        w = IoBuf::with_capacity(request.len());
    }
    w.clear();
    w.extend_within_capacity(request);
    match timeout_at(env, deadline, s.write_all(w)).await {
        None => {
            bufs.write = IoBuf::with_capacity(bufs.request_bytes);
            return Outcome::Deadline;
        }
        Some((res, w)) => {
            bufs.write = w;
            if res.is_err() {
                return Outcome::Failed(ErrorKind::Write);
            }
        }
    }
    if measured {
        ctx.stats.borrow_mut().bytes_written += request.len() as u64;
    }
    loop {
        // Bytes already buffered first: the rest of an earlier read, or a reply of 0
        // bytes (raw TCP) that needs no read at all.
        match framing.feed(bufs.read.bytes()) {
            Ok((n, step)) => {
                if let Some((t, id)) = follow {
                    t.reply_bytes(id, &bufs.read.bytes()[..n]);
                }
                bufs.read.consume(n);
                if let Step::Done(r) = step {
                    return Outcome::Reply(r);
                }
            }
            Err(_) => return Outcome::Failed(ErrorKind::Malformed),
        }
        if bufs.read.spare_capacity() == 0 {
            // The framer bounds heads and lines below the buffer size; a full buffer
            // without progress is a reply it cannot frame.
            return Outcome::Failed(ErrorKind::Malformed);
        }
        let r = std::mem::take(&mut bufs.read);
        match timeout_at(env, deadline, s.read(r)).await {
            None => {
                bufs.read = IoBuf::with_capacity(READ_BUF_BYTES);
                return Outcome::Deadline;
            }
            Some((res, r)) => {
                bufs.read = r;
                match res {
                    Ok(0) => {
                        return match framing.eof() {
                            Some(r) => Outcome::Reply(r),
                            None => Outcome::Failed(ErrorKind::Closed),
                        }
                    }
                    Ok(n) => {
                        if measured {
                            ctx.stats.borrow_mut().bytes_read += n as u64;
                        }
                    }
                    Err(_) => return Outcome::Failed(ErrorKind::Read),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Target;

    fn plan(connections: u32, threads: u32, requests: Option<u64>) -> Plan {
        Plan {
            target: Target::parse("tcp://127.0.0.1:1").unwrap(),
            request: vec![b'x'; 4],
            reply: Framing::tcp(4),
            connections,
            threads,
            duration: Duration::from_secs(1),
            requests,
            warmup: Duration::ZERO,
            rate_per_s: None,
            new_conn: false,
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn shares_split_connections_slots_and_requests() {
        let s = plan(10, 3, Some(8)).shares();
        let got: Vec<_> = s.iter().map(|s| (s.first_slot, s.connections, s.requests)).collect();
        assert_eq!(got, [(0, 4, Some(3)), (4, 3, Some(3)), (7, 3, Some(2))]);
    }

    #[test]
    fn limits_are_checked() {
        assert!(plan(1, 1, None).validate().is_ok());
        assert_eq!(plan(0, 1, None).validate(), Err(PlanError::Connections(0)));
        assert!(matches!(plan(2, 3, None).validate(), Err(PlanError::Threads { .. })));
        assert_eq!(plan(1, 1, Some(0)).validate(), Err(PlanError::Requests));
        let mut p = plan(1, 1, None);
        p.rate_per_s = Some(0);
        assert_eq!(p.validate(), Err(PlanError::Rate(0)));
        p.rate_per_s = None;
        p.duration = Duration::ZERO;
        assert_eq!(p.validate(), Err(PlanError::Duration("-d")));
    }
}
