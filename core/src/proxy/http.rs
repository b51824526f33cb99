//! L7 HTTP/1.1 forwarding.
//!
//! A client connection is a loop of exchanges. For each request:
//!
//! 1. **Head.** Bytes are read until [`http::parse_request`] has a whole head, within
//!    `timeouts.request_head` of the request's first byte (slowloris gets 408) and
//!    `timeouts.keep_alive` of the previous response (an idle keep-alive connection is
//!    closed without a byte). A rejected head gets its status (400, 405, 413, 414, 431,
//!    501) and the connection is closed; nothing reaches a backend.
//! 2. **Pick.** The listener's route is loaded for this request, so each request is
//!    balanced on its own with the pool's current weights and health. A backend with
//!    `max_requests_per_backend` requests in flight is passed over; when all are, the
//!    answer is 503 at once.
//! 3. **Connection.** An idle pooled connection to the backend is reused when there is
//!    one (per worker and listener, most recent first, younger than `timeouts.pool_idle`);
//!    otherwise one is opened. A refused or timed-out connect moves on to the next
//!    backend for any method: nothing was sent.
//! 4. **Request.** The head is rewritten by us ([`http::write_request`]): hop-by-hop
//!    fields out, `X-Forwarded-For`, `X-Forwarded-Proto` and `Forwarded` set, framing of
//!    our own. A body already whole in the read buffer is *buffered*: it is sent with a
//!    Content-Length and can be sent again. A longer body is streamed, re-chunked or
//!    length-counted by us, through one buffer per direction, while the response head
//!    is awaited at the same time (a backend may answer early).
//! 5. **Response.** 1xx heads are relayed (`100 Continue` to a client that asked) or
//!    dropped; a 101 to an upgrade request turns the connection into a tunnel. The final
//!    head is rewritten ([`http::write_response`]) and the body streamed with our
//!    framing. A backend that fails before the first response byte is retried as the
//!    retry rules allow (README, "Retries"), or answered with 502 (504 for a timeout); one that fails
//!    after it aborts the client connection, which never sees a second status line.
//! 6. **Reuse.** The backend connection goes back to the pool only after a complete,
//!    clean exchange: whole request sent, whole response read, no byte beyond it, and
//!    the backend keeping the connection. The client connection stays open when both it
//!    and the response allow; bytes already read after the request are the next
//!    request (pipelining, answered in order).
//!
//! Error responses are ours, short, and close the connection after a lingering close:
//! the write side is shut and what the client still sends is read and dropped for a
//! moment, so that the kernel does not answer it with an RST that would destroy the
//! error response before the client reads it.

use super::{ListenerShared, Pool, Shutdown, Worker};
use crate::balancer::PickKey;
use crate::config::{HttpConfig, Timeouts};
use crate::http::{
    self, BodyKind, ChunkedDecoder, Forwarding, Limits, Reject, RequestHead, ResponseFraming, ResponseHead, Version,
    WRITE_SLACK_BYTES,
};
use crate::io::{self, race, Either, Env, Instant, IoBuf, OwnedRead, OwnedWrite, Pipe, PipePool, Splice, Stream};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

/// Bytes of the small buffer an idle keep-alive connection waits with: the worker's full
/// buffer goes back to its pool meanwhile, which keeps an idle connection's memory low.
const IDLE_READ_BYTES: usize = 1024;
/// How long a lingering close reads and drops what the client still sends.
const LINGER: Duration = Duration::from_millis(500);
/// How many bytes a lingering close reads at most.
const LINGER_BYTES: usize = 256 * 1024;
/// Re-framed body bytes gathered before a write, at most (about): bounds the memory a
/// body of many small chunks can take, while writing them in few system calls.
const PENDING_FLUSH_BYTES: usize = 64 * 1024;
/// A streamed request (head and body) is kept for a retry while it is at most this long.
const REPLAY_BYTES_MAX: usize = 64 * 1024;
/// Retry tokens are counted in thousandths of a retry.
const TOKEN: i64 = 1000;
/// A quiet pool can always retry this many requests in a row, whatever the budget.
const RETRY_TOKENS_MIN: i64 = 3 * TOKEN;
/// The most retries a budget can save up.
const RETRY_TOKENS_MAX: i64 = 100 * TOKEN;

/// Everything an `http` listener needs besides the pool: one copy per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    /// Limits, retries, pooling.
    pub http: HttpConfig,
    /// Every timeout, the HTTP ones included.
    pub timeouts: Timeouts,
}

impl HttpSettings {
    fn limits(&self) -> Limits {
        self.http.limits()
    }
}

/// Counters of HTTP traffic on one pool, shared by its generations (in
/// [`PoolStats`](super::PoolStats)).
#[derive(Debug)]
pub struct HttpStats {
    /// Requests whose head was accepted and sent towards this pool.
    pub requests_total: std::sync::atomic::AtomicU64,
    /// Requests sent again after a failed attempt.
    pub retries_total: std::sync::atomic::AtomicU64,
    /// Requests sent on a reused pooled connection.
    pub pool_hits_total: std::sync::atomic::AtomicU64,
    /// Requests that needed a new backend connection.
    pub pool_misses_total: std::sync::atomic::AtomicU64,
    /// Responses of ours (502, 503, 504) for this pool's failures.
    pub errors_total: std::sync::atomic::AtomicU64,
    /// Client connections aborted after a response head went out.
    pub aborted_total: std::sync::atomic::AtomicU64,
    /// Bodies, requests' and responses' together, whose rest moved by splice (zero-copy)
    /// rather than through a buffer.
    pub spliced_bodies_total: std::sync::atomic::AtomicU64,
    /// The retry budget, in thousandths of a retry.
    retry_tokens: AtomicI64,
}

impl Default for HttpStats {
    fn default() -> Self {
        HttpStats {
            requests_total: Default::default(),
            retries_total: Default::default(),
            pool_hits_total: Default::default(),
            pool_misses_total: Default::default(),
            errors_total: Default::default(),
            aborted_total: Default::default(),
            spliced_bodies_total: Default::default(),
            retry_tokens: AtomicI64::new(RETRY_TOKENS_MIN),
        }
    }
}

impl HttpStats {
    /// Counts a request in, earning `percent`/100 of a retry.
    fn count_request(&self, percent: u8) {
        self.requests_total.fetch_add(1, Ordering::Relaxed);
        let earn = i64::from(percent) * TOKEN / 100;
        if earn > 0 {
            let before = self.retry_tokens.fetch_add(earn, Ordering::Relaxed);
            if before + earn > RETRY_TOKENS_MAX {
                self.retry_tokens.fetch_sub(earn, Ordering::Relaxed);
            }
        }
    }

    /// Spends one retry if the budget has it.
    fn take_retry(&self) -> bool {
        let mut cur = self.retry_tokens.load(Ordering::Relaxed);
        loop {
            if cur < TOKEN {
                return false;
            }
            match self
                .retry_tokens
                .compare_exchange_weak(cur, cur - TOKEN, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.retries_total.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Err(now) => cur = now,
            }
        }
    }

    /// The share of pooled reuse among requests sent, in percent.
    pub fn pool_hit_percent(&self) -> f64 {
        let hits = self.pool_hits_total.load(Ordering::Relaxed) as f64;
        let misses = self.pool_misses_total.load(Ordering::Relaxed) as f64;
        if hits + misses == 0.0 {
            0.0
        } else {
            100.0 * hits / (hits + misses)
        }
    }
}

/// Parsed heads of one kind kept by a worker for reuse: a request's head and its
/// response's are parsed into kept ones ([`http::parse_request_into`]), so that a
/// keep-alive exchange allocates nothing for them (it allocated six times before: the
/// box, the copy of the head and the list of fields, for each head). Bounded in count
/// and in the size of what each one keeps.
pub struct HeadPool<T> {
    kept: RefCell<Vec<Box<T>>>,
}

/// The heads [`HeadPool`] keeps.
pub trait Reusable {
    /// A head with nothing in it.
    fn empty() -> Self;
    /// Heap bytes it holds on to.
    fn heap_bytes(&self) -> usize;
}

impl Reusable for RequestHead {
    fn empty() -> Self {
        RequestHead::empty()
    }
    fn heap_bytes(&self) -> usize {
        RequestHead::heap_bytes(self)
    }
}

impl Reusable for ResponseHead {
    fn empty() -> Self {
        ResponseHead::empty()
    }
    fn heap_bytes(&self) -> usize {
        ResponseHead::heap_bytes(self)
    }
}

/// Most heads a [`HeadPool`] keeps: more than a worker has exchanges between two
/// awaits in practice; beyond it they are freed.
const HEADS_KEPT_MAX: usize = 256;

/// Largest head storage kept: a head parsed from a 32 KiB head is freed, not kept.
const HEAD_KEPT_BYTES_MAX: usize = 4096;

impl<T: Reusable> Default for HeadPool<T> {
    fn default() -> Self {
        HeadPool {
            kept: RefCell::new(Vec::new()),
        }
    }
}

impl<T: Reusable> HeadPool<T> {
    /// A head to parse into, given back when the guard is dropped.
    pub fn take(&self) -> Kept<'_, T> {
        let head = self.kept.borrow_mut().pop().unwrap_or_else(|| Box::new(T::empty()));
        Kept {
            head: std::mem::ManuallyDrop::new(head),
            pool: self,
        }
    }
}

/// A head taken from a [`HeadPool`], back in it when dropped.
pub struct Kept<'p, T: Reusable> {
    /// Moved out only by `drop`.
    head: std::mem::ManuallyDrop<Box<T>>,
    pool: &'p HeadPool<T>,
}

impl<T: Reusable> std::ops::Deref for Kept<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.head
    }
}

impl<T: Reusable> std::ops::DerefMut for Kept<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.head
    }
}

impl<T: Reusable> Drop for Kept<'_, T> {
    fn drop(&mut self) {
        // SAFETY: `head` is taken once, here, and never used after: `self` is being
        // dropped.
        let head = unsafe { std::mem::ManuallyDrop::take(&mut self.head) };
        let mut kept = self.pool.kept.borrow_mut();
        if kept.len() < HEADS_KEPT_MAX && head.heap_bytes() <= HEAD_KEPT_BYTES_MAX {
            kept.push(head);
        }
    }
}

type Rd<E> = <<E as Env>::Stream as Stream>::Read;
type Wr<E> = <<E as Env>::Stream as Stream>::Write;

/// An idle backend connection, kept for reuse.
struct Pooled<E: Env> {
    r: Rd<E>,
    w: Wr<E>,
    since: Instant,
    drain: Arc<super::DrainSignal>,
}

/// Idle backend connections of one worker and listener, by backend address. Most
/// recently used first out: the warmest connection is the least likely to have been
/// closed by the backend.
pub struct Upstreams<E: Env> {
    idle: RefCell<BTreeMap<SocketAddr, Vec<Pooled<E>>>>,
    /// Counts the idle connections of every pool of the worker.
    worker: Rc<Worker>,
}

impl<E: Env> Upstreams<E> {
    /// An empty pool, counted on `worker`.
    pub fn new(worker: Rc<Worker>) -> Upstreams<E> {
        Upstreams {
            idle: RefCell::new(BTreeMap::new()),
            worker,
        }
    }

    /// Keeps the worker's count in step after `list` changed from `before` entries.
    fn recount(&self, before: usize, after: usize) {
        self.worker.set_pooled_idle(after, before);
    }

    /// An idle connection to `addr` younger than `max_idle` on a backend that is not
    /// draining; older ones met on the way are closed. With `sure`, whether the backend
    /// closed or wrote to a connection is checked as of now (a system call each, see
    /// [`OwnedRead::input_pending_now`]); without, as of the event loop's last turn,
    /// for a request that is sent again on a fresh connection should it meet a closed
    /// one (RELIABILITY C7).
    fn checkout(&self, addr: SocketAddr, now: Instant, max_idle: Duration, sure: bool) -> Option<(Rd<E>, Wr<E>)> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        let before = list.len();
        let found = Self::take_usable(list, now, max_idle, sure);
        self.recount(before, list.len());
        found
    }

    /// Pops the most recent usable connection of `list`, dropping unusable ones.
    fn take_usable(list: &mut Vec<Pooled<E>>, now: Instant, max_idle: Duration, sure: bool) -> Option<(Rd<E>, Wr<E>)> {
        while let Some(mut p) = list.pop() {
            // A connection on which the backend closed, reset or sent unasked-for bytes
            // while it was idle is dropped: those bytes must never be read as the next
            // request's response.
            if now.saturating_duration_since(p.since) < max_idle && p.drain.deadline().is_none() {
                let pending = if sure {
                    p.r.input_pending_now()
                } else {
                    p.r.input_pending()
                };
                if !pending {
                    return Some((p.r, p.w));
                }
            }
        }
        None
    }

    /// Keeps a connection for reuse, unless `max` are already kept for `addr`. Its
    /// input is watched while it waits, so that the checks before reuse and in the
    /// sweep need no system call where the I/O backend can tell (see
    /// [`OwnedRead::watch_input`]).
    fn checkin(&self, addr: SocketAddr, mut conn: Pooled<E>, max: usize) {
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        if list.len() < max {
            conn.r.watch_input();
            list.push(conn);
            self.recount(0, 1);
        }
    }

    /// Closes connections idle for `max_idle` or more, those of draining backends, and
    /// those the backend closed or wrote to.
    pub fn sweep(&self, now: Instant, max_idle: Duration) {
        let mut idle = self.idle.borrow_mut();
        for list in idle.values_mut() {
            let before = list.len();
            list.retain_mut(|p| {
                now.saturating_duration_since(p.since) < max_idle
                    && p.drain.deadline().is_none()
                    && !p.r.input_pending()
            });
            self.worker.set_pooled_idle(list.len(), before);
        }
        idle.retain(|_, l| !l.is_empty());
    }

    /// Idle connections kept, all backends together.
    pub fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }

    /// Closes every idle connection.
    pub fn clear(&self) {
        let before = self.idle_count();
        self.idle.borrow_mut().clear();
        self.recount(before, 0);
    }
}

/// Sweeps `upstreams` every second until `shutdown`, then closes what is left.
pub async fn sweep_upstreams<E: Env>(
    env: E,
    upstreams: Rc<Upstreams<E>>,
    shared: Arc<ListenerShared>,
    mut shutdown: Shutdown,
) {
    loop {
        if let Either::Left(()) = race(shutdown.wait(), env.sleep(Duration::from_secs(1))).await {
            upstreams.clear();
            return;
        }
        let max_idle = shared.route().http.timeouts.pool_idle;
        upstreams.sweep(env.now(), max_idle);
    }
}

/// How an HTTP client connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpOutcome {
    /// Closed by the client or after a response that ended the connection, with this
    /// many exchanges answered by backends.
    Closed {
        /// Responses relayed from backends.
        served: u64,
    },
    /// An error response of ours was sent and the connection closed.
    Refused {
        /// The status sent.
        status: u16,
        /// Responses relayed before it.
        served: u64,
    },
    /// Aborted (RST) after a response head had gone out, or cut by a drain.
    Aborted {
        /// Responses relayed before.
        served: u64,
    },
    /// An upgrade (WebSocket) tunnel ran and ended.
    Tunnel {
        /// Responses relayed before the upgrade.
        served: u64,
    },
}

/// The client side of a connection: its halves and its read buffer. `buf` is `None`
/// only after a read was abandoned (cancellation rule): the connection is then closed.
struct Client<E: Env> {
    r: Rd<E>,
    w: Wr<E>,
    buf: Option<IoBuf>,
    /// The small buffer an idle connection waits with ([`IDLE_READ_BYTES`]).
    idle: Option<IoBuf>,
    /// Once shutdown begins, responses say `Connection: close`.
    shutdown: Shutdown,
}

/// What reading a request head gave.
enum HeadRead<'w> {
    Head(Kept<'w, RequestHead>),
    /// Closed before a request began (EOF, error, keep-alive timeout, shutdown).
    Closed,
    /// Answer with this status and close.
    Refuse(u16, &'static str),
}

/// What an exchange leaves the client connection in.
enum Next<E: Env> {
    /// The response was complete and the connection may carry another request.
    KeepAlive,
    /// The response was complete; close the connection (FIN).
    Close,
    /// Answer with this status, then close.
    Refuse(u16),
    /// Reset the client: a response was cut after its head went out.
    Abort,
    /// The backend switched protocols: the connection becomes a tunnel to it.
    Upgrade(Box<Upgraded<E>>),
}

/// The backend side of an upgraded connection, and the bytes it sent after its 101.
struct Upgraded<E: Env> {
    br: Rd<E>,
    bw: Wr<E>,
    bbuf: Option<IoBuf>,
    idx: usize,
}

/// Serves one HTTP client connection until it closes. Public so that tests and the
/// simulation can drive a single connection.
pub async fn serve_connection<E: Env>(
    env: &E,
    client: E::Stream,
    peer: SocketAddr,
    shared: &ListenerShared,
    worker: &Worker,
    upstreams: &Upstreams<E>,
    shutdown: &Shutdown,
) -> HttpOutcome {
    let (r, w) = client.into_split();
    let mut c: Client<E> = Client {
        r,
        w,
        buf: Some(worker.take_buffer()),
        idle: Some(IoBuf::with_capacity(IDLE_READ_BYTES)),
        shutdown: shutdown.clone(),
    };
    let mut served = 0u64;
    let mut first = true;
    loop {
        // The head is read under the settings in force when the wait for it begins; the
        // request is balanced and forwarded under those in force when it has come, so
        // that a keep-alive connection idle across a reload does not send its next
        // request by the old pool (a backend the reload added was left out until every
        // such connection had carried a request).
        let head_settings = shared.http_settings();
        let head = match read_head(env, &mut c, &head_settings, first, worker, shutdown).await {
            HeadRead::Head(h) => h,
            HeadRead::Closed => {
                give_back(worker, &mut c);
                return HttpOutcome::Closed { served };
            }
            HeadRead::Refuse(status, why) => {
                tracing::debug!(listener = %shared.name, %peer, status, why, "request refused");
                refuse(env, &mut c, status, worker).await;
                return HttpOutcome::Refused { status, served };
            }
        };
        first = false;
        let route = shared.route();
        let settings = route.http;
        let pool = route.pool.clone();
        let next = exchange(env, &mut c, &head, peer, &pool, &settings, worker, upstreams).await;
        match next {
            Next::KeepAlive if !shutdown.is_triggered() => served += 1,
            Next::KeepAlive | Next::Close => {
                served += 1;
                close(env, &mut c, worker).await;
                return HttpOutcome::Closed { served };
            }
            Next::Refuse(status) => {
                refuse(env, &mut c, status, worker).await;
                return HttpOutcome::Refused { status, served };
            }
            Next::Abort => {
                pool.stats.http.aborted_total.fetch_add(1, Ordering::Relaxed);
                if let Some(b) = c.buf.take() {
                    worker.give_buffer(b);
                }
                c.w.abort();
                return HttpOutcome::Aborted { served };
            }
            Next::Upgrade(up) => {
                // Boxed: a tunnel's future (two pumps, splice included) is the biggest
                // of a connection's, and rare; inline, every connection's task would be
                // sized for it, idle ones included.
                Box::pin(tunnel(env, c, *up, &pool, &settings, worker)).await;
                return HttpOutcome::Tunnel { served };
            }
        }
    }
}

fn give_back<E: Env>(worker: &Worker, c: &mut Client<E>) {
    if let Some(b) = c.buf.take() {
        worker.give_buffer(b);
    }
}

/// Reads until a whole request head is in the buffer. The first byte of a request must
/// come within the keep-alive timeout (the head timeout for a new connection), and the
/// whole head within `timeouts.request_head` of that byte.
async fn read_head<'w, E: Env>(
    env: &E,
    c: &mut Client<E>,
    s: &HttpSettings,
    first: bool,
    worker: &'w Worker,
    shutdown: &Shutdown,
) -> HeadRead<'w> {
    let limits = s.limits();
    let wait = if first {
        s.timeouts.request_head
    } else {
        s.timeouts.keep_alive
    };
    let idle_deadline = env.now() + wait;
    let mut head_deadline: Option<Instant> = None;
    // Taken from the worker's pool once there are bytes to parse, so that a connection
    // idling between requests holds no head; kept across reads of a partial head.
    let mut partial: Option<Kept<'w, RequestHead>> = None;
    loop {
        let Some(buf) = c.buf.as_mut() else {
            return HeadRead::Closed;
        };
        if !buf.is_empty() {
            if head_deadline.is_none() {
                head_deadline = Some(env.now() + s.timeouts.request_head);
            }
            let mut head = partial.take().unwrap_or_else(|| worker.request_heads.take());
            match http::parse_request_into(buf.bytes(), &limits, s.http.underscores, &mut head) {
                Ok(true) => return HeadRead::Head(head),
                Ok(false) => partial = Some(head),
                Err(Reject { status, reason }) => return HeadRead::Refuse(status, reason),
            }
            if buf.spare_capacity() == 0 {
                if grow_for_head(&mut c.buf, &limits, worker) {
                    continue;
                }
                return HeadRead::Refuse(431, "request head over the limit");
            }
        }
        let deadline = head_deadline.unwrap_or(idle_deadline);
        let empty = buf.is_empty();
        let got = if empty {
            // Idle: wait with a small buffer, the full one back in the worker's pool, and
            // stop at shutdown.
            give_back(worker, c);
            let mut sd = shutdown.clone();
            // Pinned in place, raced by reference (see `attempt_on`).
            let res = {
                let read = pin!(read_into(&mut c.r, &mut c.idle));
                io::timeout_at(env, deadline, race(pin!(sd.wait()), read)).await
            };
            let mut full = worker.take_buffer();
            if let Some(small) = c.idle.as_mut() {
                full.extend_within_capacity(small.bytes());
                small.clear();
            }
            c.buf = Some(full);
            match res {
                None | Some(Either::Left(())) => return HeadRead::Closed,
                Some(Either::Right(r)) => r,
            }
        } else {
            match io::timeout_at(env, deadline, pin!(read_into(&mut c.r, &mut c.buf))).await {
                None => return HeadRead::Refuse(408, "request head timeout"),
                Some(r) => r,
            }
        };
        match got {
            Ok(0) | Err(_) => return HeadRead::Closed,
            Ok(_) => {}
        }
    }
}

/// A full buffer whose head is not complete yet: moved, once, into a buffer one byte
/// longer than the head limit (the worker's buffers may be shorter than a head may be).
/// False when it already is that long: the head is over the limit.
fn grow_for_head(slot: &mut Option<IoBuf>, limits: &Limits, worker: &Worker) -> bool {
    let Some(buf) = slot.as_ref() else {
        return false;
    };
    if buf.capacity() > limits.head_bytes_max {
        return false;
    }
    let mut bigger = IoBuf::with_capacity(limits.head_bytes_max + 1);
    bigger.extend_within_capacity(buf.bytes());
    if let Some(old) = slot.replace(bigger) {
        worker.give_buffer(old);
    }
    true
}

/// Reads once into `slot`'s spare capacity. The slot is empty while the read is in
/// flight, so an abandoned read leaves it `None` and the stream is not read again.
async fn read_into<R: OwnedRead>(r: &mut R, slot: &mut Option<IoBuf>) -> std::io::Result<usize> {
    let Some(buf) = slot.take() else {
        return Err(std::io::ErrorKind::NotConnected.into());
    };
    let (res, buf) = r.read(buf).await;
    *slot = Some(buf);
    res
}

/// Writes `bytes` whole.
async fn write_bytes<W: OwnedWrite>(w: &mut W, bytes: Vec<u8>) -> std::io::Result<()> {
    let (res, _) = w.write_all(IoBuf::from_vec(bytes)).await;
    res
}

/// Sends our error response, then closes with a lingering close.
async fn refuse<E: Env>(env: &E, c: &mut Client<E>, status: u16, worker: &Worker) {
    let mut out = Vec::with_capacity(160);
    http::error_response(status, &mut out);
    let deadline = env.now() + LINGER;
    if io::timeout_at(env, deadline, write_bytes(&mut c.w, out))
        .await
        .is_none()
    {
        give_back(worker, c);
        return;
    }
    close(env, c, worker).await;
}

/// Closes the client connection after a complete response: FIN, then what the client
/// still sends is read and dropped for [`LINGER`], so that unread bytes do not turn the
/// close into an RST that could destroy the response in flight.
async fn close<E: Env>(env: &E, c: &mut Client<E>, worker: &Worker) {
    if c.w.shutdown().await.is_err() {
        give_back(worker, c);
        return;
    }
    if let Some(b) = c.buf.as_mut() {
        b.clear();
    }
    let deadline = env.now() + LINGER;
    let mut drained = 0usize;
    while drained < LINGER_BYTES {
        match io::timeout_at(env, deadline, read_into(&mut c.r, &mut c.buf)).await {
            Some(Ok(n)) if n > 0 => {
                drained += n;
                if let Some(b) = c.buf.as_mut() {
                    b.clear();
                }
            }
            _ => break,
        }
    }
    give_back(worker, c);
}

/// How the request body goes to the backend.
enum Upload {
    /// Nothing to send after the head (no body, or a buffered body sent with it).
    Done,
    /// `remaining` bytes of a Content-Length body to stream from the client.
    Length { remaining: u64 },
    /// A chunked body to decode from the client and re-chunk.
    Chunked(Box<ChunkedDecoder>),
}

/// The bytes of the request to send, and how the rest of its body follows.
struct Outgoing {
    /// Head, and the whole body when buffered.
    first: Vec<u8>,
    /// `true` when `first` is the whole request: it can be sent again.
    replayable: bool,
    /// What is left to stream after `first` (only for the first attempt that streams).
    upload: Option<Upload>,
}

/// Why an attempt failed before any response byte reached the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Writing the request failed or the backend closed or reset before answering.
    Reset,
    /// No response head within `timeouts.response`.
    Timeout,
    /// The response was malformed or ambiguous.
    BadResponse,
    /// The client went away or misbehaved while its body was being streamed.
    Client(u16),
}

/// The result of one attempt on one backend connection.
enum Attempt<E: Env> {
    /// The response went out (or the client was aborted or refused once it started);
    /// the exchange is over.
    Over(Next<E>),
    /// Failed before any response byte reached the client.
    Failed {
        failure: Failure,
        /// Some of the request was written (or a write was attempted).
        written: bool,
        /// No response byte at all arrived from the backend.
        no_response_byte: bool,
    },
}

/// One request: pick, connect, send, relay; retried as the rules allow.
#[allow(clippy::too_many_arguments)]
async fn exchange<E: Env>(
    env: &E,
    c: &mut Client<E>,
    head: &RequestHead,
    peer: SocketAddr,
    pool: &Pool,
    s: &HttpSettings,
    worker: &Worker,
    upstreams: &Upstreams<E>,
) -> Next<E> {
    let stats = &pool.stats.http;
    // 1. The body: refused above the limit, buffered when it is already whole.
    if let BodyKind::Length(n) = head.body {
        if n > s.http.body_bytes_max {
            return Next::Refuse(413);
        }
    }
    let start = env.now();
    let body_deadline = start + s.timeouts.request_body;
    let Some(buf) = c.buf.as_mut() else {
        return Next::Abort;
    };
    let mut out = match prepare(head, peer, buf, s) {
        Ok(o) => o,
        Err(status) => return Next::Refuse(status),
    };
    stats.count_request(s.http.retry_budget_percent);
    let key = PickKey {
        client: super::tcp::client_key(peer),
        random: env.random_u64(),
    };
    let mut candidates = 0usize;
    let mut at_limit = false;
    let mut retries_left = s.http.retries;
    // The last failure of an attempt that had sent the request: it decides the status
    // when no backend is left. Connect failures alone give 503.
    let mut sent_failure: Option<Failure> = None;
    for lease in pool.balancer.select(key) {
        let idx = lease.index();
        let Some(target) = pool.targets.get(idx) else {
            continue;
        };
        candidates += 1;
        // The lease counts itself: more than the limit means the limit was already met.
        if pool.balancer.active(idx) > s.http.max_requests_per_backend {
            at_limit = true;
            continue;
        }
        // A pooled connection, then (once, if it turns out stale) a fresh one.
        let mut fresh_tried = false;
        loop {
            // The first attempt runs at `start`: nothing awaited since.
            let now = if candidates == 1 && !fresh_tried {
                start
            } else {
                env.now()
            };
            let pooled = if fresh_tried {
                None
            } else {
                // A request that C7 would send again on a fresh connection can take
                // the cheap check; one that could not be sent again (not idempotent,
                // not buffered, no retry left) pays a peek to be sure.
                let sure = !(out.replayable && head.is_idempotent() && retries_left > 0);
                upstreams.checkout(target.addr, now, s.timeouts.pool_idle, sure)
            };
            let reused = pooled.is_some();
            let (br, bw) = match pooled {
                Some(conn) => {
                    stats.pool_hits_total.fetch_add(1, Ordering::Relaxed);
                    conn
                }
                None => {
                    let deadline = now + s.timeouts.connect;
                    match io::timeout_at(env, deadline, env.connect(target.addr)).await {
                        Some(Ok(stream)) => {
                            stats.pool_misses_total.fetch_add(1, Ordering::Relaxed);
                            stream.into_split()
                        }
                        Some(Err(e)) => {
                            pool.health.report_connect(idx, false, "connect failed", env.now());
                            tracing::warn!(pool = %pool.name, backend = %target.name, error = %e, "connect failed; trying the next backend");
                            break;
                        }
                        None => {
                            pool.health.report_connect(idx, false, "connect timed out", env.now());
                            tracing::warn!(pool = %pool.name, backend = %target.name, "connect timed out; trying the next backend");
                            break;
                        }
                    }
                }
            };
            let attempt = attempt_on(
                env,
                c,
                head,
                &mut out,
                br,
                bw,
                pool,
                idx,
                s,
                worker,
                upstreams,
                body_deadline,
            )
            .await;
            match attempt {
                Attempt::Over(next) => return next,
                Attempt::Failed {
                    failure: Failure::Client(status),
                    ..
                } => return Next::Refuse(status),
                Attempt::Failed {
                    failure,
                    written,
                    no_response_byte,
                } => {
                    if written {
                        sent_failure = Some(failure);
                    }
                    // C7: a reused connection that the backend had closed (nothing came
                    // back): once more on a fresh connection, when the request can be
                    // sent again and was idempotent or never written.
                    // It is one of the request's retries (RELIABILITY I2: an idempotent
                    // request reaches backends at most 1 + retries times).
                    if reused
                        && !fresh_tried
                        && failure == Failure::Reset
                        && no_response_byte
                        && out.replayable
                        && (head.is_idempotent() || !written)
                        && retries_left > 0
                    {
                        fresh_tried = true;
                        retries_left -= 1;
                        continue;
                    }
                    if !written {
                        // Nothing was sent: any other backend may take it.
                        break;
                    }
                    let retry_ok = out.replayable
                        && head.is_idempotent()
                        && no_response_byte
                        && retries_left > 0
                        && match failure {
                            Failure::Reset => true,
                            Failure::Timeout => s.http.retry_on_timeout,
                            _ => false,
                        }
                        && stats.take_retry();
                    if !retry_ok {
                        stats.errors_total.fetch_add(1, Ordering::Relaxed);
                        return Next::Refuse(status_of(failure));
                    }
                    retries_left -= 1;
                    tracing::info!(pool = %pool.name, backend = %target.name, ?failure, "retrying on another backend");
                    break;
                }
            }
        }
        drop(lease);
    }
    stats.errors_total.fetch_add(1, Ordering::Relaxed);
    if candidates == 0 {
        pool.health.note_no_backend(env.now());
        return Next::Refuse(503);
    }
    if at_limit && sent_failure.is_none() {
        tracing::warn!(pool = %pool.name, "every backend is at max_requests_per_backend; 503");
        return Next::Refuse(503);
    }
    Next::Refuse(sent_failure.map_or(503, status_of))
}

fn status_of(f: Failure) -> u16 {
    match f {
        Failure::Reset | Failure::BadResponse => 502,
        Failure::Timeout => 504,
        Failure::Client(s) => s,
    }
}

/// Builds the request to send: our head, and the body when it is already whole in `buf`
/// (then consumed from `buf`, which keeps only what follows the request). `Err` is the
/// status to refuse the request with.
fn prepare(head: &RequestHead, peer: SocketAddr, buf: &mut IoBuf, s: &HttpSettings) -> Result<Outgoing, u16> {
    let limits = s.limits();
    let after = buf.bytes().get(head.head_len..).unwrap_or(&[]);
    let mut fwd = Forwarding {
        client_ip: peer.ip(),
        proto: "http",
        body: BodyKind::None,
        keep_alive: true,
        upgrade: head.upgrade.is_some(),
    };
    // Sized by the writer, which reserves what it needs in one allocation.
    let mut first = Vec::new();
    match head.body {
        BodyKind::None | BodyKind::UntilClose => {
            http::write_request(head, &fwd, &mut first).map_err(|r| r.status)?;
            buf.consume(head.head_len);
            Ok(Outgoing {
                first,
                replayable: true,
                upload: None,
            })
        }
        BodyKind::Length(n) => {
            fwd.body = BodyKind::Length(n);
            let whole = usize::try_from(n).ok().filter(|&n| n <= after.len());
            // Room for the head as the writer reserves it and the buffered body: one
            // allocation.
            first.reserve(head.head_len + WRITE_SLACK_BYTES + whole.unwrap_or(0));
            http::write_request(head, &fwd, &mut first).map_err(|r| r.status)?;
            match whole {
                Some(n) => {
                    first.extend_from_slice(&after[..n]);
                    buf.consume(head.head_len + n);
                    Ok(Outgoing {
                        first,
                        replayable: true,
                        upload: None,
                    })
                }
                None => {
                    buf.consume(head.head_len);
                    Ok(Outgoing {
                        first,
                        replayable: false,
                        upload: Some(Upload::Length { remaining: n }),
                    })
                }
            }
        }
        BodyKind::Chunked => {
            // Try the whole body from what is buffered; a framing error is refused
            // before anything is sent.
            let mut dec = ChunkedDecoder::new(&limits);
            let mut payload = Vec::new();
            let mut pos = 0usize;
            let mut done = false;
            loop {
                let rest = after.get(pos..).unwrap_or(&[]);
                let d = dec.decode(rest).map_err(|r| r.status)?;
                if let Some(data) = rest.get(d.data.clone()) {
                    payload.extend_from_slice(data);
                }
                if payload.len() as u64 > s.http.body_bytes_max {
                    return Err(413);
                }
                pos += d.consumed;
                if d.done {
                    done = true;
                    break;
                }
                if d.consumed == 0 {
                    break;
                }
            }
            if done {
                let trailers = dec.trailers();
                if trailers.is_empty() {
                    fwd.body = BodyKind::Length(payload.len() as u64);
                    http::write_request(head, &fwd, &mut first).map_err(|r| r.status)?;
                    first.extend_from_slice(&payload);
                } else {
                    fwd.body = BodyKind::Chunked;
                    http::write_request(head, &fwd, &mut first).map_err(|r| r.status)?;
                    if !payload.is_empty() {
                        http::encode_chunk_header(payload.len(), &mut first);
                        first.extend_from_slice(&payload);
                        first.extend_from_slice(http::CHUNK_DATA_END);
                    }
                    http::encode_last_chunk(trailers, &mut first);
                }
                buf.consume(head.head_len + pos);
                Ok(Outgoing {
                    first,
                    replayable: true,
                    upload: None,
                })
            } else {
                fwd.body = BodyKind::Chunked;
                http::write_request(head, &fwd, &mut first).map_err(|r| r.status)?;
                buf.consume(head.head_len);
                Ok(Outgoing {
                    first,
                    replayable: false,
                    upload: Some(Upload::Chunked(Box::new(ChunkedDecoder::new(&limits)))),
                })
            }
        }
    }
}

/// How the body upload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpEnd {
    /// The whole request is written.
    Done,
    /// Writing to the backend failed.
    BackendFailed,
    /// The client closed, failed, or sent a bad or oversized body: the status to answer
    /// if no response has started.
    Client(u16),
}

/// What reading the response head gave.
enum HeadEnd<'w> {
    Head(Kept<'w, ResponseHead>),
    /// Closed or reset before a whole head; `bytes` says whether any byte came.
    Closed {
        bytes: bool,
    },
    Bad,
    /// Writing a relayed 100 Continue to the client failed.
    ClientGone,
}

/// One attempt of a request on one backend connection.
#[allow(clippy::too_many_arguments)]
async fn attempt_on<E: Env>(
    env: &E,
    c: &mut Client<E>,
    head: &RequestHead,
    out: &mut Outgoing,
    mut br: Rd<E>,
    mut bw: Wr<E>,
    pool: &Pool,
    idx: usize,
    s: &HttpSettings,
    worker: &Worker,
    upstreams: &Upstreams<E>,
    body_deadline: Instant,
) -> Attempt<E> {
    let Some(target) = pool.targets.get(idx) else {
        return Attempt::Failed {
            failure: Failure::Reset,
            written: false,
            no_response_byte: true,
        };
    };
    let limits = s.limits();
    let splice = worker.splice().map(|(after, pipes)| BodySplice {
        after,
        pipes,
        spliced: &pool.stats.http.spliced_bodies_total,
    });
    // 1. The head (and buffered body). A streamed request is copied as it goes, while it
    // fits in `REPLAY_BYTES_MAX`: whole, it can be sent again like a buffered one.
    let mut replay: Option<Vec<u8>> = None;
    let first = if out.upload.is_some() {
        let first = std::mem::take(&mut out.first);
        if first.len() <= REPLAY_BYTES_MAX {
            replay = Some(first.clone());
        }
        first
    } else {
        out.first.clone()
    };
    if write_bytes(&mut bw, first).await.is_err() {
        return Attempt::Failed {
            failure: Failure::Reset,
            written: true,
            no_response_byte: true,
        };
    }
    let upload = out.upload.take().unwrap_or(Upload::Done);
    let mut bbuf = Some(worker.take_buffer());
    // 2. The streamed body and the response head, at once.
    let deadline = Cell::new(match upload {
        Upload::Done => env.now() + s.timeouts.response,
        _ => (env.now() + s.timeouts.idle).min(body_deadline),
    });
    let mut up_end: Option<UpEnd> = match upload {
        Upload::Done => Some(UpEnd::Done),
        _ => None,
    };
    // The futures are pinned where they are made and raced through `Pin<&mut _>`:
    // passed by value, each (about 2 KiB together) was copied into the race's state and
    // again into ours on every request (3% of the proxy's CPU time in a profile).
    let got = {
        let up = pin!(stream_body(
            env,
            &mut c.r,
            &mut c.buf,
            &mut bw,
            upload,
            s,
            (&deadline, body_deadline),
            &mut replay,
            splice,
        ));
        let down = pin!(read_response_head(worker, &mut br, &mut bbuf, &mut c.w, head, &limits));
        let watchdog = pin!(async {
            loop {
                let d = deadline.get();
                env.sleep_until(d).await;
                if env.now() >= deadline.get() {
                    return;
                }
            }
        });
        let drain = pin!(target.drain.cut_at_deadline(env, &pool.name, &target.name));
        head_phase(up, down, watchdog, drain, &mut up_end, || {
            deadline.set(env.now() + s.timeouts.response)
        })
        .await
    };
    if let (Some(UpEnd::Done), Some(whole)) = (up_end, replay) {
        out.first = whole;
        out.replayable = true;
    }
    let resp = match got {
        Phase::Head(HeadEnd::Head(r)) => r,
        Phase::Head(HeadEnd::Closed { bytes }) => {
            drop_buf(worker, &mut bbuf);
            if let Some(UpEnd::Client(status)) = up_end {
                return Attempt::Failed {
                    failure: Failure::Client(status),
                    written: true,
                    no_response_byte: !bytes,
                };
            }
            pool.health
                .report_connect(idx, false, "closed before responding", env.now());
            return Attempt::Failed {
                failure: Failure::Reset,
                written: true,
                no_response_byte: !bytes,
            };
        }
        Phase::Head(HeadEnd::Bad) => {
            drop_buf(worker, &mut bbuf);
            pool.health.report_connect(idx, false, "bad response", env.now());
            tracing::warn!(pool = %pool.name, backend = %target.name, "malformed response; 502");
            return Attempt::Failed {
                failure: Failure::BadResponse,
                written: true,
                no_response_byte: false,
            };
        }
        Phase::Head(HeadEnd::ClientGone) => {
            drop_buf(worker, &mut bbuf);
            return Attempt::Over(Next::Abort);
        }
        Phase::UpFailed(status) => {
            drop_buf(worker, &mut bbuf);
            bw.abort();
            return Attempt::Failed {
                failure: Failure::Client(status),
                written: true,
                no_response_byte: true,
            };
        }
        Phase::Timeout => {
            drop_buf(worker, &mut bbuf);
            if up_end.is_none() {
                // The client stopped sending its body: 408, not the backend's fault.
                bw.abort();
                return Attempt::Failed {
                    failure: Failure::Client(408),
                    written: true,
                    no_response_byte: true,
                };
            }
            pool.health.report_connect(idx, false, "response timeout", env.now());
            tracing::warn!(pool = %pool.name, backend = %target.name, "response timeout; 504");
            bw.abort();
            return Attempt::Failed {
                failure: Failure::Timeout,
                written: true,
                no_response_byte: true,
            };
        }
        Phase::Drained => {
            drop_buf(worker, &mut bbuf);
            pool.stats.drained_cut_total.fetch_add(1, Ordering::Relaxed);
            bw.abort();
            return Attempt::Over(Next::Abort);
        }
    };
    // The request body is unfinished when the backend answered early: the backend
    // connection cannot be reused, and the client's unread body ends its connection.
    let request_done = up_end == Some(UpEnd::Done);
    if let Some(b) = bbuf.as_mut() {
        b.consume(resp.head_len);
    }
    // 3. Upgrade.
    if resp.status == 101 {
        if head.upgrade.is_none() || !request_done {
            drop_buf(worker, &mut bbuf);
            pool.health.report_connect(idx, false, "unrequested 101", env.now());
            return Attempt::Failed {
                failure: Failure::BadResponse,
                written: true,
                no_response_byte: false,
            };
        }
        let mut hb = Vec::with_capacity(128);
        http::write_response(
            &resp,
            &ResponseFraming {
                body: BodyKind::None,
                keep_alive: true,
                upgrade: true,
            },
            &mut hb,
        );
        if write_bytes(&mut c.w, hb).await.is_err() {
            drop_buf(worker, &mut bbuf);
            return Attempt::Over(Next::Abort);
        }
        pool.health.report_connect(idx, true, "upgraded", env.now());
        return Attempt::Over(Next::Upgrade(Box::new(Upgraded { br, bw, bbuf, idx })));
    }
    // 4. The final head to the client.
    let client_11 = head.version == Version::H11;
    let (body_out, close_after) = match resp.body {
        BodyKind::None => (BodyKind::None, false),
        BodyKind::Length(n) => (BodyKind::Length(n), false),
        BodyKind::Chunked | BodyKind::UntilClose if client_11 => (BodyKind::Chunked, false),
        BodyKind::Chunked | BodyKind::UntilClose => (BodyKind::UntilClose, true),
    };
    let keep_client = head.keep_alive && request_done && !close_after && !c.shutdown.is_triggered();
    // A response to HEAD has no body, but says how long the GET's would be.
    let framing_body = match resp.content_length() {
        Some(n) if head.is_head() && !matches!(resp.status, 204 | 304) => BodyKind::Length(n),
        _ => body_out,
    };
    // Sized by the writer, in one allocation.
    let mut hb = Vec::new();
    http::write_response(
        &resp,
        &ResponseFraming {
            body: framing_body,
            keep_alive: keep_client,
            upgrade: false,
        },
        &mut hb,
    );
    // 5. The head and the body, streamed; from the head on, a failure aborts the client.
    let body_end = {
        let activity = Cell::new(env.now());
        // Pinned in place and raced by reference, as in the head phase.
        let relay = pin!(relay_body(
            env,
            &mut br,
            &mut bbuf,
            &mut c.w,
            hb,
            (resp.body, body_out),
            &limits,
            &activity,
            splice,
        ));
        let watchdog = pin!(async {
            loop {
                let d = activity.get() + s.timeouts.idle;
                env.sleep_until(d).await;
                if env.now() >= activity.get() + s.timeouts.idle {
                    return;
                }
            }
        });
        let drain = pin!(target.drain.cut_at_deadline(env, &pool.name, &target.name));
        let cut = pin!(worker.cut_signal());
        match race(relay, race(watchdog, race(drain, cut))).await {
            Either::Left(r) => r,
            // The removed backend's drain ran out mid-body (C12): counted like a cut
            // before the head.
            Either::Right(Either::Right(Either::Left(()))) => {
                pool.stats.drained_cut_total.fetch_add(1, Ordering::Relaxed);
                RelayEnd::Cut
            }
            Either::Right(_) => RelayEnd::Cut,
        }
    };
    match body_end {
        RelayEnd::Done => {
            let now = env.now();
            pool.health.report_connect(idx, true, "response", now);
            let clean = bbuf.as_ref().is_some_and(IoBuf::is_empty);
            drop_buf(worker, &mut bbuf);
            if resp.keep_alive && request_done && clean && resp.body != BodyKind::UntilClose {
                upstreams.checkin(
                    target.addr,
                    Pooled {
                        r: br,
                        w: bw,
                        since: now,
                        drain: target.drain.clone(),
                    },
                    s.http.pool_idle_max,
                );
            }
            Attempt::Over(if keep_client { Next::KeepAlive } else { Next::Close })
        }
        RelayEnd::BackendFailed => {
            drop_buf(worker, &mut bbuf);
            pool.health.report_connect(idx, false, "failed mid-response", env.now());
            Attempt::Over(Next::Abort)
        }
        RelayEnd::ClientFailed => {
            drop_buf(worker, &mut bbuf);
            bw.abort();
            Attempt::Over(Next::Abort)
        }
        RelayEnd::Cut => {
            drop_buf(worker, &mut bbuf);
            bw.abort();
            Attempt::Over(Next::Abort)
        }
    }
}

fn drop_buf(worker: &Worker, slot: &mut Option<IoBuf>) {
    if let Some(b) = slot.take() {
        worker.give_buffer(b);
    }
}

/// How the head phase of an attempt ended.
enum Phase<'w> {
    Head(HeadEnd<'w>),
    /// The client failed while streaming its body, before a response came.
    UpFailed(u16),
    Timeout,
    Drained,
}

/// Drives the body upload and the response-head read together: the head ends the
/// phase, whether or not the upload finished (`up_end` says how it ended, if it did).
/// An upload that fails on the client's side ends it with that status; one whose
/// backend write fails stops, and the head read goes on (the backend may have answered
/// early, say with a 413). `on_upload_done` runs once when the upload completes.
async fn head_phase<'w>(
    up: impl Future<Output = UpEnd>,
    down: impl Future<Output = HeadEnd<'w>>,
    watchdog: impl Future<Output = ()>,
    drain: impl Future<Output = ()>,
    up_end: &mut Option<UpEnd>,
    mut on_upload_done: impl FnMut(),
) -> Phase<'w> {
    let mut up = pin!(up);
    let mut down = pin!(down);
    let mut watchdog = pin!(watchdog);
    let mut drain = pin!(drain);
    std::future::poll_fn(|cx| {
        if up_end.is_none() {
            if let Poll::Ready(end) = up.as_mut().poll(cx) {
                *up_end = Some(end);
                match end {
                    UpEnd::Done => on_upload_done(),
                    UpEnd::Client(status) => return Poll::Ready(Phase::UpFailed(status)),
                    UpEnd::BackendFailed => {}
                }
            }
        }
        if let Poll::Ready(h) = down.as_mut().poll(cx) {
            return Poll::Ready(Phase::Head(h));
        }
        if watchdog.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Phase::Timeout);
        }
        if drain.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Phase::Drained);
        }
        Poll::Pending
    })
    .await
}

/// Takes a body apart from its incoming framing and puts it back in ours: the one step
/// shared by the request upload and the response relay.
struct Reframe {
    /// The chunked decoder when the body comes chunked.
    dec: Option<Box<ChunkedDecoder>>,
    /// Bytes left of a Content-Length body (`u64::MAX` for the other kinds).
    remaining: u64,
    /// The body ends when the sender closes.
    until_close: bool,
    /// Write the payload chunked.
    chunk_out: bool,
}

/// One [`Reframe::decode`] step: input used, payload found in it, body complete.
struct Reframed {
    consumed: usize,
    data: std::ops::Range<usize>,
    done: bool,
}

impl Reframe {
    fn new(body_in: BodyKind, chunk_out: bool, limits: &Limits) -> Reframe {
        Reframe {
            dec: (body_in == BodyKind::Chunked).then(|| Box::new(ChunkedDecoder::new(limits))),
            remaining: match body_in {
                BodyKind::None => 0,
                BodyKind::Length(n) => n,
                _ => u64::MAX,
            },
            until_close: body_in == BodyKind::UntilClose,
            chunk_out,
        }
    }

    /// Decodes from `input`: at most one run of payload per step.
    fn decode(&mut self, input: &[u8]) -> Result<Reframed, Reject> {
        match self.dec.as_mut() {
            Some(d) => d.decode(input).map(|step| Reframed {
                consumed: step.consumed,
                data: step.data,
                done: step.done,
            }),
            None => {
                let n = (input.len() as u64).min(self.remaining) as usize;
                self.remaining -= n as u64;
                Ok(Reframed {
                    consumed: n,
                    data: 0..n,
                    done: !self.until_close && self.remaining == 0,
                })
            }
        }
    }

    /// Appends `payload` in our framing, and the last chunk (with the trailers read) when
    /// `done`.
    fn frame(&self, payload: &[u8], done: bool, out: &mut Vec<u8>) {
        if !payload.is_empty() {
            if self.chunk_out {
                http::encode_chunk_header(payload.len(), out);
                out.extend_from_slice(payload);
                out.extend_from_slice(http::CHUNK_DATA_END);
            } else {
                out.extend_from_slice(payload);
            }
        }
        if done && self.chunk_out {
            http::encode_last_chunk(self.dec.as_ref().map_or(&[][..], |d| d.trailers()), out);
        }
    }
}

/// Streams the rest of the request body from the client to the backend, with our
/// framing. Each byte moved pushes `deadline` to `timeouts.idle` from now, never past
/// `body_deadline`. What is written is appended to `replay` while it fits
/// [`REPLAY_BYTES_MAX`]; past that, `replay` becomes `None`.
///
/// With `splice` (the worker's threshold and pipes), the rest of a Content-Length body,
/// once the buffer is drained and at least the threshold is left, is spliced: client
/// socket to pipe to backend socket, never more than the body's bytes (what follows is
/// the client's next request). Only a body the replay copy could not hold anyway is
/// spliced, so that splicing never costs a request its retry.
#[allow(clippy::too_many_arguments)]
async fn stream_body<R: OwnedRead, W: OwnedWrite, E: Env>(
    env: &E,
    cr: &mut R,
    cbuf: &mut Option<IoBuf>,
    bw: &mut W,
    upload: Upload,
    s: &HttpSettings,
    (deadline, body_deadline): (&Cell<Instant>, Instant),
    replay: &mut Option<Vec<u8>>,
    mut splice: Option<BodySplice<'_>>,
) -> UpEnd {
    let idle = s.timeouts.idle;
    // Each byte moves the watchdog to `idle` from now, never past the body's deadline.
    let push = |now: Instant| deadline.set((now + idle).min(body_deadline));
    let mut rf = match upload {
        Upload::Done => return UpEnd::Done,
        Upload::Length { remaining } => Reframe::new(BodyKind::Length(remaining), false, &s.limits()),
        Upload::Chunked(dec) => Reframe {
            dec: Some(dec),
            remaining: u64::MAX,
            until_close: false,
            chunk_out: true,
        },
    };
    let mut total = 0u64;
    // Payload and our framing, written once per buffer read.
    let mut pending: Vec<u8> = Vec::new();
    loop {
        if rf.dec.is_none() && rf.remaining == 0 {
            return UpEnd::Done;
        }
        let Some(inb) = cbuf.as_mut() else {
            return UpEnd::Client(400);
        };
        let Reframed { consumed, data, done } = match rf.decode(inb.bytes()) {
            Ok(step) => step,
            Err(r) => return UpEnd::Client(r.status),
        };
        let payload = inb.bytes().get(data).unwrap_or(&[]);
        total += payload.len() as u64;
        if total > s.http.body_bytes_max {
            return UpEnd::Client(413);
        }
        rf.frame(payload, done, &mut pending);
        inb.consume(consumed);
        // Many small chunks in one read go out in one write.
        let read_next = consumed == 0 || inb.is_empty();
        if !pending.is_empty() && (done || read_next || pending.len() >= PENDING_FLUSH_BYTES) {
            match replay {
                Some(r) if r.len() + pending.len() <= REPLAY_BYTES_MAX => r.extend_from_slice(&pending),
                _ => *replay = None,
            }
            let (res, buf) = bw.write_all(IoBuf::from_vec(std::mem::take(&mut pending))).await;
            if res.is_err() {
                return UpEnd::BackendFailed;
            }
            pending = buf.into_vec();
            pending.clear();
            push(env.now());
        }
        if done {
            return UpEnd::Done;
        }
        if consumed == 0 || cbuf.as_ref().is_some_and(IoBuf::is_empty) {
            if let Some(BodySplice { after, pipes, spliced }) = splice {
                let drained = pending.is_empty() && cbuf.as_ref().is_some_and(IoBuf::is_empty);
                let too_big_to_replay = replay
                    .as_ref()
                    .is_none_or(|r| (r.len() as u64).saturating_add(rf.remaining) > REPLAY_BYTES_MAX as u64);
                if rf.dec.is_none() && !rf.until_close && drained && too_big_to_replay && rf.remaining >= after.max(1) {
                    if let Some(sp) = cr.splice_to(bw) {
                        if let Some(mut pipe) = pipes.take() {
                            *replay = None;
                            spliced.fetch_add(1, Ordering::Relaxed);
                            let end = splice_body(sp, &mut pipe, rf.remaining, || push(env.now())).await;
                            // Back to the pool only empty and with no splice in flight.
                            pipes.give(pipe);
                            match end {
                                SpliceEnd::Done => return UpEnd::Done,
                                // The client closed or failed before the body's end.
                                SpliceEnd::SourceFailed => return UpEnd::Client(400),
                                SpliceEnd::SinkFailed => return UpEnd::BackendFailed,
                                // The rest of the body is copied.
                                SpliceEnd::Copy(left) => {
                                    rf.remaining = left;
                                    splice = None;
                                }
                            }
                        }
                    }
                }
            }
            match read_into(cr, cbuf).await {
                Ok(0) | Err(_) => return UpEnd::Client(400),
                Ok(_) => push(env.now()),
            }
        }
    }
}

/// Writes everything in `slot` (which comes back empty).
async fn write_slot<W: OwnedWrite>(w: &mut W, slot: &mut Option<IoBuf>) -> std::io::Result<()> {
    let Some(buf) = slot.take() else {
        return Err(std::io::ErrorKind::NotConnected.into());
    };
    let (res, mut buf) = w.write_all(buf).await;
    buf.clear();
    *slot = Some(buf);
    res
}

/// Reads the final response head. Interim 1xx heads are consumed: `100 Continue` is
/// relayed to a client that sent `Expect: 100-continue`, others are dropped. A 101
/// is final.
async fn read_response_head<'w, R: OwnedRead, W: OwnedWrite>(
    worker: &'w Worker,
    br: &mut R,
    bbuf: &mut Option<IoBuf>,
    cw: &mut W,
    req: &RequestHead,
    limits: &Limits,
) -> HeadEnd<'w> {
    let mut any = false;
    let mut h = worker.response_heads.take();
    loop {
        let Some(buf) = bbuf.as_mut() else {
            return HeadEnd::Closed { bytes: any };
        };
        if !buf.is_empty() {
            match http::parse_response_into(buf.bytes(), limits, req.is_head(), &mut h) {
                Ok(true) if (100..200).contains(&h.status) && h.status != 101 => {
                    buf.consume(h.head_len);
                    if h.status == 100 && req.expect_continue && req.version == Version::H11 {
                        let msg = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
                        if write_bytes(cw, msg).await.is_err() {
                            return HeadEnd::ClientGone;
                        }
                    }
                    continue;
                }
                Ok(true) => return HeadEnd::Head(h),
                Ok(false) => {}
                Err(_) => return HeadEnd::Bad,
            }
            if buf.spare_capacity() == 0 {
                if grow_for_head(bbuf, limits, worker) {
                    continue;
                }
                return HeadEnd::Bad;
            }
        }
        match read_into(br, bbuf).await {
            Ok(0) | Err(_) => return HeadEnd::Closed { bytes: any },
            Ok(_) => any = true,
        }
    }
}

/// How relaying a response body ended.
enum RelayEnd {
    Done,
    BackendFailed,
    ClientFailed,
    /// Idle timeout, drain deadline or shutdown cut.
    Cut,
}

/// Writes the response head `head` and streams the response body from the backend to
/// the client: decoded from `body_in`'s framing and written in `body_out`'s. The head
/// goes out with the first body bytes, in one write, and a buffer of plain payload is
/// written as it is, without a copy. With `splice` (the worker's threshold and pipes),
/// the rest of a Content-Length body forwarded as it is, once at least the threshold is
/// left, is spliced: socket to pipe to socket, never more than the body's bytes.
#[allow(clippy::too_many_arguments)]
async fn relay_body<E: Env, R: OwnedRead, W: OwnedWrite>(
    env: &E,
    br: &mut R,
    bbuf: &mut Option<IoBuf>,
    cw: &mut W,
    head: Vec<u8>,
    (body_in, body_out): (BodyKind, BodyKind),
    limits: &Limits,
    activity: &Cell<Instant>,
    mut splice: Option<BodySplice<'_>>,
) -> RelayEnd {
    let chunk_out = body_out == BodyKind::Chunked;
    // Bytes to write before anything else: the head, then framing and copied payload.
    let mut pending = head;
    let mut rf = Reframe::new(body_in, chunk_out, limits);
    loop {
        let Some(inb) = bbuf.as_mut() else {
            return RelayEnd::BackendFailed;
        };
        let Ok(Reframed { consumed, data, done }) = rf.decode(inb.bytes()) else {
            return RelayEnd::BackendFailed;
        };
        let whole = data.start == 0 && data.end == inb.len() && consumed == inb.len();
        if pending.is_empty() && !chunk_out && whole && consumed > 0 {
            // The buffer is all payload: write it as it is.
            if write_slot(cw, bbuf).await.is_err() {
                return RelayEnd::ClientFailed;
            }
            // Activity matters only while there is more to move (the clock is read
            // about six times per request: each read saved shows in a profile).
            if !done {
                activity.set(env.now());
            }
        } else {
            rf.frame(inb.bytes().get(data).unwrap_or(&[]), done, &mut pending);
            inb.consume(consumed);
            // Many small chunks in one read go out in one write.
            let read_next = consumed == 0 || inb.is_empty();
            if !pending.is_empty() && (done || read_next || pending.len() >= PENDING_FLUSH_BYTES) {
                let (res, buf) = cw.write_all(IoBuf::from_vec(std::mem::take(&mut pending))).await;
                if res.is_err() {
                    return RelayEnd::ClientFailed;
                }
                pending = buf.into_vec();
                pending.clear();
                if !done {
                    activity.set(env.now());
                }
            }
        }
        if done {
            return RelayEnd::Done;
        }
        if consumed == 0 || bbuf.as_ref().is_some_and(IoBuf::is_empty) {
            if let (Some(BodySplice { after, pipes, spliced }), BodyKind::Length(_), false) =
                (splice, body_in, chunk_out)
            {
                let drained = pending.is_empty() && bbuf.as_ref().is_some_and(IoBuf::is_empty);
                if drained && rf.remaining > 0 && rf.remaining >= after {
                    if let Some(sp) = br.splice_to(cw) {
                        if let Some(mut pipe) = pipes.take() {
                            spliced.fetch_add(1, Ordering::Relaxed);
                            let end = splice_body(sp, &mut pipe, rf.remaining, || activity.set(env.now())).await;
                            // Back to the pool only empty and with no splice in flight.
                            pipes.give(pipe);
                            match end {
                                SpliceEnd::Done => return RelayEnd::Done,
                                SpliceEnd::SourceFailed => return RelayEnd::BackendFailed,
                                SpliceEnd::SinkFailed => return RelayEnd::ClientFailed,
                                // The rest of the body is copied.
                                SpliceEnd::Copy(left) => {
                                    rf.remaining = left;
                                    splice = None;
                                }
                            }
                        }
                    }
                }
            }
            match read_into(br, bbuf).await {
                Ok(0) if rf.until_close => {
                    if chunk_out {
                        let mut last = Vec::new();
                        rf.frame(&[], true, &mut last);
                        if write_bytes(cw, last).await.is_err() {
                            return RelayEnd::ClientFailed;
                        }
                    }
                    return RelayEnd::Done;
                }
                Ok(0) | Err(_) => return RelayEnd::BackendFailed,
                Ok(_) => activity.set(env.now()),
            }
        }
    }
}

/// What a body needs to splice: the worker's threshold and pipes (see
/// [`Worker::splice`]), and the pool's count of spliced bodies.
#[derive(Clone, Copy)]
struct BodySplice<'a> {
    after: u64,
    pipes: &'a PipePool,
    spliced: &'a std::sync::atomic::AtomicU64,
}

/// How splicing the rest of a body ended.
enum SpliceEnd {
    Done,
    /// The sender closed before the body's end, or reading from it failed.
    SourceFailed,
    /// Writing to the receiver failed.
    SinkFailed,
    /// The sender cannot splice on ([`Splice::must_copy`]: TCP urgent data): these many
    /// bytes of the body are left, still in its socket, to be copied.
    Copy(u64),
}

/// Splices the last `remaining` bytes of a Content-Length body through `pipe`, never
/// taking more than that from the sender (so that what follows stays in its socket: the
/// backend's next response on a pooled connection, the client's next request), calling
/// `progress` whenever bytes move. Used both ways: a response body from the backend,
/// a request body from the client.
async fn splice_body(mut sp: Splice<'_>, pipe: &mut Pipe, mut remaining: u64, progress: impl Fn()) -> SpliceEnd {
    while remaining > 0 {
        let max = usize::try_from(remaining).unwrap_or(usize::MAX);
        match sp.fill_at_most(pipe, max).await {
            Ok(0) => return SpliceEnd::SourceFailed,
            Ok(_) => progress(),
            Err(e) if Splice::must_copy(&e) => return SpliceEnd::Copy(remaining),
            Err(_) => return SpliceEnd::SourceFailed,
        }
        while pipe.pending() > 0 {
            match sp.flush(pipe).await {
                Ok(n) => {
                    remaining = remaining.saturating_sub(n as u64);
                    progress();
                }
                Err(_) => return SpliceEnd::SinkFailed,
            }
        }
    }
    SpliceEnd::Done
}

/// Runs an upgraded connection as a tunnel: bytes both ways, FIN passed on, closed after
/// `timeouts.tunnel` without traffic, cut by a drain or shutdown.
async fn tunnel<E: Env>(
    env: &E,
    mut c: Client<E>,
    upgraded: Upgraded<E>,
    pool: &Pool,
    s: &HttpSettings,
    worker: &Worker,
) {
    let Upgraded {
        br,
        mut bw,
        mut bbuf,
        idx,
    } = upgraded;
    let Some(target) = pool.targets.get(idx) else {
        return;
    };
    // Bytes that came with the heads belong to the tunnel: the client's go to the
    // backend, the backend's to the client.
    if let Some(b) = c.buf.as_mut() {
        if !b.is_empty() {
            let bytes = b.bytes().to_vec();
            b.clear();
            if write_bytes(&mut bw, bytes).await.is_err() {
                c.w.abort();
                return;
            }
        }
    }
    if let Some(b) = bbuf.as_mut() {
        if !b.is_empty() {
            let bytes = b.bytes().to_vec();
            b.clear();
            if write_bytes(&mut c.w, bytes).await.is_err() {
                bw.abort();
                return;
            }
        }
    }
    let up = c.buf.take().unwrap_or_else(|| worker.take_buffer());
    let down = bbuf.take().unwrap_or_else(|| worker.take_buffer());
    // A tunnel to a removed backend still open when its drain runs out is cut and
    // counted (C12); a shutdown's cut is not a drain's.
    let drained = Cell::new(false);
    let drain = async {
        if let Either::Left(()) = race(
            target.drain.cut_at_deadline(env, &pool.name, &target.name),
            worker.cut_signal(),
        )
        .await
        {
            drained.set(true);
        }
    };
    let (_, up, down) =
        super::tcp::pump_split(env, (c.r, c.w), (br, bw), up, down, s.timeouts.tunnel, None, drain).await;
    if drained.get() {
        pool.stats.drained_cut_total.fetch_add(1, Ordering::Relaxed);
    }
    worker.give_buffer(up);
    worker.give_buffer(down);
}
