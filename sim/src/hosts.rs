//! The software of a scenario's hosts: the real balancer (with its data path's connects
//! observed), recorder backends, loadgen clients, and the clock that ends the run.
//!
//! Each host is registered with turmoil as a factory, so `bounce` restarts it with fresh
//! state; what the oracle needs survives in the shared [`Log`](crate::log::Log).

use crate::log::{parse_reply, Reception, Request, SharedLog, What, REPLY_HEAD_BYTES_MAX};
use crate::scenario::{BackendSpec, FailWith, Health, MixEntry};
use crate::world::BalancerHandle;
use crate::{SimEnv, SimListener, SimStream};
use gobalancer::config::Config;
use gobalancer::io::{BindOptions, Env, Instant, IoBuf, Listener, OwnedRead, OwnedWrite, SplitMix64};
use gobalancer::proxy::{tcp, Shutdown, Worker};
use gobalancer_loadgen::client::{run_worker_with_tap, Live, Plan, Share, Tap, TapOutcome};
use gobalancer_loadgen::http::{build_request, RequestSpec};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Idle buffers the simulated balancer keeps.
const BUFFERS_KEPT_MAX: usize = 64;
/// Largest request head a recorder backend reads.
const HEAD_BYTES_MAX: usize = 16 * 1024;
/// Most header fields a recorder backend parses.
const HEADERS_MAX: usize = 32;
/// Path prefix of the workload's requests: `/r/ID`. Anything else is a health check.
pub const REQUEST_PATH: &str = "/r/";
/// The header naming a request (sent by clients, echoed by backends).
pub const REQ_ID_HEADER: &str = "X-Req-Id";

/// Simulated time since the start of the run, from inside a host. Host clocks
/// ([`SimEnv::now`]) restart with the host; this one does not.
pub fn sim_now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// [`SimEnv`] that reports its connects. On the balancer's data path each connect is a
/// pick (one per attempt on a backend; an L7 attempt on a pooled connection makes no
/// connect, and the runner sees its pick as a rise of the backend's active count). On every host, a connect that yields no stream
/// (refused, cut by a partition, or abandoned while pending against a crashed or held
/// peer) is counted: turmoil registers the socket before the SYN goes out and never
/// removes it then, so the stream counts at quiescence must allow for each.
#[derive(Clone)]
pub struct TapEnv {
    inner: SimEnv,
    host: Rc<str>,
    log: SharedLog,
    /// Backend addresses to scenario backend index, on the data path only.
    picks: Option<Rc<BTreeMap<SocketAddr, u16>>>,
}

impl TapEnv {
    /// The environment of `host`, counting failed connects into `log`.
    pub fn new(inner: SimEnv, host: &str, log: SharedLog) -> TapEnv {
        TapEnv {
            inner,
            host: host.into(),
            log,
            picks: None,
        }
    }
}

/// Counts a connect that ended without a stream, or was dropped before it ended.
struct Pending<'a> {
    env: &'a TapEnv,
    done: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Ok(mut log) = self.env.log.try_borrow_mut() {
                *log.failed_connects.entry(self.env.host.to_string()).or_default() += 1;
            }
        }
    }
}

impl Env for TapEnv {
    type Stream = SimStream;
    type Listener = SimListener;

    async fn bind(&self, addr: SocketAddr, opts: BindOptions) -> io::Result<SimListener> {
        self.inner.bind(addr, opts).await
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<SimStream> {
        if let Some(b) = self.picks.as_ref().and_then(|p| p.get(&addr)) {
            self.log.borrow_mut().push(sim_now(), What::Pick { backend: *b });
        }
        let mut pending = Pending { env: self, done: false };
        let res = self.inner.connect(addr).await;
        pending.done = res.is_ok();
        res
    }

    async fn resolve(&self, name: &str) -> io::Result<Vec<SocketAddr>> {
        self.inner.resolve(name).await
    }

    fn spawn<F: Future<Output = ()> + 'static>(&self, fut: F) {
        self.inner.spawn(fut)
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }

    async fn sleep_until(&self, deadline: Instant) {
        self.inner.sleep_until(deadline).await
    }

    fn wall_clock(&self) -> SystemTime {
        self.inner.wall_clock()
    }

    fn random_u64(&self) -> u64 {
        self.inner.random_u64()
    }
}

/// A reload the runner hands to the balancer host, to apply at the next instant it runs.
#[derive(Clone, Debug)]
pub enum ReloadOp {
    /// A full configuration text (placeholders substituted), parsed by the host as the
    /// binary parses its file on SIGHUP.
    Text(String),
    /// The configuration in force with this backend added to pool `pool` (weight 1).
    Add {
        /// The pool's name.
        pool: String,
        /// The backend's name.
        name: String,
        /// Its address.
        address: SocketAddr,
    },
    /// The configuration in force with the backend at this address removed from `pool`.
    Remove {
        /// The pool's name.
        pool: String,
        /// Its address.
        address: SocketAddr,
    },
    /// The configuration in force with the backend at this address at weight 0.
    Drain {
        /// The pool's name.
        pool: String,
        /// Its address.
        address: SocketAddr,
    },
}

/// What one reload did, as the balancer host saw it.
#[derive(Clone, Debug)]
pub struct ReloadRecord {
    /// Simulated time when `Live::reload` ran.
    pub at: Duration,
    /// Whether it was applied.
    pub applied: bool,
    /// The error, when refused.
    pub error: Option<String>,
    /// `config_reload_failures_total` after it.
    pub failures_total: u64,
    /// The generation in force after it.
    pub generation: u64,
    /// The workload pool's backends after it (address, weight), when applied.
    pub backends: Vec<(SocketAddr, u32)>,
    /// The drain timeout in force after it.
    pub drain: Duration,
    /// Backends of the workload pool with active checks after it.
    pub checked: usize,
}

/// The runner's side of the balancer's reloads: a mailbox the balancer host drains
/// whenever it is woken, and what each reload did.
#[derive(Default)]
pub struct Reloader {
    /// Reloads not applied yet.
    pub queue: RefCell<std::collections::VecDeque<ReloadOp>>,
    /// Wakes the balancer host's reload task.
    pub wake: tokio::sync::Notify,
    /// One record per reload, in order.
    pub records: RefCell<Vec<ReloadRecord>>,
    /// `drained_cut_total` of the workload's pool, as last seen.
    pub drained_cut_total: Cell<u64>,
}

impl Reloader {
    /// Queues `op` for the balancer host.
    pub fn send(&self, op: ReloadOp) {
        self.queue.borrow_mut().push_back(op);
        self.wake.notify_one();
    }
}

/// The configuration in force with `op` applied, checked whole: what the binary would
/// read from its file.
fn next_config(current: &Config, op: ReloadOp) -> Result<Config, gobalancer::config::ConfigError> {
    let mut config = current.clone();
    let pool_of =
        |config: &mut Config, pool: &str| -> Option<usize> { config.pools.iter().position(|p| p.name == pool) };
    match op {
        ReloadOp::Text(text) => return Config::parse(&text, "reload"),
        ReloadOp::Add { pool, name, address } => {
            if let Some(i) = pool_of(&mut config, &pool) {
                let p = &mut config.pools[i];
                if let Some(b) = p.backends.iter_mut().find(|b| b.address == address) {
                    b.weight = 1;
                } else {
                    // The pool's check, without another backend's overrides.
                    let check = p.health.check.clone();
                    p.backends.push(gobalancer::config::BackendConfig {
                        address,
                        name,
                        weight: 1,
                        check,
                    });
                }
            }
        }
        ReloadOp::Remove { pool, address } => {
            if let Some(i) = pool_of(&mut config, &pool) {
                config.pools[i].backends.retain(|b| b.address != address);
            }
        }
        ReloadOp::Drain { pool, address } => {
            if let Some(i) = pool_of(&mut config, &pool) {
                for b in config.pools[i].backends.iter_mut().filter(|b| b.address == address) {
                    b.weight = 0;
                }
            }
        }
    }
    config.validate()?;
    Ok(config)
}

/// The running balancer's worker, for the clock to read its pooled idle backend
/// connections at quiescence (I5). Replaced when the host restarts.
pub type WorkerHandle = Rc<RefCell<Option<Rc<Worker>>>>;

/// Registers the balancer host: gobalancer with `config` (already validated), one
/// worker, its data path's connects reported to `log` as picks of the backend at that
/// address (`backends`: address to scenario backend index). The configuration is put in
/// force through the core's [`Live`](gobalancer::reload::Live), as in the binary; the
/// reloads queued on `reloader` are applied by `Live::reload` on the host's own clock,
/// and health checks follow the generations through `reload::run_health`.
#[allow(clippy::too_many_arguments)]
pub fn balancer(
    sim: &mut turmoil::Sim<'_>,
    seed: u64,
    name: &str,
    config: Config,
    pool: usize,
    backends: BTreeMap<SocketAddr, u16>,
    log: SharedLog,
    reloader: Rc<Reloader>,
    workers: WorkerHandle,
) -> BalancerHandle {
    let host = name.to_string();
    let handle: BalancerHandle = Rc::default();
    let handle2 = handle.clone();
    let backends = Rc::new(backends);
    sim.host(name, move || {
        let host = host.clone();
        let config = config.clone();
        let handle = handle2.clone();
        let backends = backends.clone();
        let log = log.clone();
        let reloader = reloader.clone();
        let workers = workers.clone();
        async move {
            // Health checks connect through `env`, the data path through `data`: only
            // the latter's connects are picks.
            let env = TapEnv::new(SimEnv::new(seed, &host), &host, log.clone());
            let data = TapEnv {
                picks: Some(backends),
                ..env.clone()
            };
            let live = gobalancer::reload::Live::new(config.clone())?;
            let shared = live.current();
            *handle.borrow_mut() = Some(shared.clone());
            let worker = Worker::new(config.buffer_size, BUFFERS_KEPT_MAX);
            *workers.borrow_mut() = Some(worker.clone());
            let mut serving = Vec::new();
            for l in &shared.listeners {
                let listener = data.bind(l.bind, BindOptions::default()).await?;
                serving.push(tcp::serve(
                    data.clone(),
                    listener,
                    l.clone(),
                    shared.conn_limit.clone(),
                    worker.clone(),
                    Shutdown::never(),
                ));
            }
            drop(shared);
            for s in serving {
                env.spawn(s);
            }
            env.spawn(gobalancer::reload::run_health(
                env.clone(),
                live.subscribe(),
                Shutdown::never(),
            ));
            let pool_name = config.pools.get(pool).map(|p| p.name.clone()).unwrap_or_default();
            loop {
                reloader.wake.notified().await;
                loop {
                    let op = reloader.queue.borrow_mut().pop_front();
                    let Some(op) = op else { break };
                    let next = next_config(&live.config(), op);
                    let result = live.reload(next, env.now());
                    let current = live.current();
                    *handle.borrow_mut() = Some(current.clone());
                    let in_force = live.config();
                    let pool = in_force.pool(&pool_name);
                    let backends = pool
                        .map(|p| p.backends.iter().map(|b| (b.address, b.weight)).collect())
                        .unwrap_or_default();
                    let checked = pool.map_or(0, |p| p.backends.iter().filter(|b| b.check.is_some()).count());
                    reloader.records.borrow_mut().push(ReloadRecord {
                        at: sim_now(),
                        applied: result.is_ok(),
                        error: result.err().map(|e| e.to_string()),
                        failures_total: live.reloads.failures(),
                        generation: live.reloads.generation(),
                        backends,
                        drain: current.drain_timeout,
                        checked,
                    });
                }
            }
        }
    });
    handle
}

/// State of a recorder backend that lives as long as its software (a bounce resets it).
struct BackendState {
    spec: BackendSpec,
    index: u16,
    log: SharedLog,
    /// Workload requests answered normally, for `fail_after`.
    served: Cell<u64>,
    /// Health requests answered, for the flapping endpoint.
    health_checks: Cell<u64>,
}

/// Registers a recorder backend: an HTTP/1.1 server that records every workload
/// request it receives in `log`, echoes its `X-Req-Id`, and misbehaves as scripted.
pub fn backend(sim: &mut turmoil::Sim<'_>, seed: u64, spec: &BackendSpec, index: u16, log: SharedLog) {
    let spec = spec.clone();
    sim.host(spec.name.clone(), move || {
        let state = Rc::new(BackendState {
            spec: spec.clone(),
            index,
            log: log.clone(),
            served: Cell::new(0),
            health_checks: Cell::new(0),
        });
        async move {
            let env = SimEnv::new(seed, &state.spec.name);
            if state.spec.refusing {
                // Up, but nothing listens: connects are refused.
                std::future::pending::<()>().await;
            }
            let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, state.spec.port));
            let mut listener = env.bind(addr, BindOptions::default()).await?;
            loop {
                let (stream, _) = listener.accept().await?;
                env.spawn(serve_connection(env.clone(), stream, state.clone()));
            }
        }
    });
}

/// One parsed request head.
struct Head {
    len: usize,
    body: usize,
    close: bool,
    /// `Some` for a workload request: its id (`None` inside when it has none or a bad one).
    request: Option<Option<u64>>,
    method: String,
}

fn parse_head(bytes: &[u8]) -> Result<Option<Head>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let mut body = 0;
    let mut close = req.version == Some(0);
    let mut id = None;
    for h in req.headers.iter() {
        let v = String::from_utf8_lossy(h.value);
        if h.name.eq_ignore_ascii_case("content-length") {
            body = v.trim().parse().map_err(|_| ())?;
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = v.to_ascii_lowercase().contains("close");
        } else if h.name.eq_ignore_ascii_case(REQ_ID_HEADER) {
            id = v.trim().parse().ok();
        }
    }
    let path = req.path.unwrap_or("");
    Ok(Some(Head {
        len,
        body,
        close,
        request: path.starts_with(REQUEST_PATH).then_some(id),
        method: req.method.unwrap_or("").to_string(),
    }))
}

fn response(status: &str, name: &str, id: Option<u64>, close: bool) -> IoBuf {
    let body = format!("{name}\n");
    let id = id.map(|i| format!("{REQ_ID_HEADER}: {i}\r\n")).unwrap_or_default();
    let conn = if close { "close" } else { "keep-alive" };
    IoBuf::from_vec(
        format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nX-Backend: {name}\r\n{id}Connection: {conn}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

async fn serve_connection(env: SimEnv, mut stream: SimStream, state: Rc<BackendState>) {
    let spec = &state.spec;
    let mut buf = IoBuf::with_capacity(HEAD_BYTES_MAX);
    // Workload requests this connection carried before the one at hand.
    let mut carried = 0u32;
    loop {
        let head = loop {
            match parse_head(buf.bytes()) {
                Ok(Some(h)) => break h,
                Ok(None) if buf.spare_capacity() > 0 => {}
                _ => return,
            }
            // Between requests, a backend with a keep-alive timeout closes the
            // connection once it has waited that long for the next one.
            let res = match spec.keep_alive.filter(|_| buf.is_empty()) {
                Some(limit) => {
                    let read = gobalancer::io::timeout_at(&env, env.now() + limit.0, stream.read(buf)).await;
                    let Some((res, b)) = read else { return };
                    buf = b;
                    res
                }
                None => {
                    let (res, b) = stream.read(buf).await;
                    buf = b;
                    res
                }
            };
            if !matches!(res, Ok(n) if n > 0) {
                return;
            }
        };
        buf.consume(head.len);
        let mut left = head.body;
        while left > 0 {
            if buf.is_empty() {
                let (res, b) = stream.read(buf).await;
                buf = b;
                if !matches!(res, Ok(n) if n > 0) {
                    return;
                }
            }
            let n = buf.len().min(left);
            buf.consume(n);
            left -= n;
        }
        let reply = match head.request {
            None => {
                let n = state.health_checks.get();
                state.health_checks.set(n + 1);
                let up = match spec.health {
                    Health::Up => true,
                    Health::Down => false,
                    Health::Flapping => n.is_multiple_of(2),
                };
                let status = if up { "200 OK" } else { "503 Service Unavailable" };
                response(status, &spec.name, None, head.close)
            }
            Some(id) => {
                let reception = record(&state, id, &head.method, carried > 0);
                carried += 1;
                if spec.fail_after.is_some_and(|n| state.served.get() >= n) {
                    match spec.fail_with {
                        FailWith::Reset => {}
                        FailWith::Stall => loop {
                            buf.clear();
                            let (res, b) = stream.read(buf).await;
                            buf = b;
                            if !matches!(res, Ok(n) if n > 0) {
                                break;
                            }
                        },
                        FailWith::Cut | FailWith::CutBody => {
                            answered(&state, reception);
                            let whole = response("200 OK", &spec.name, id, head.close);
                            // Half the reply, or its head and half its body.
                            let body = spec.name.len() + 1;
                            let cut = if spec.fail_with == FailWith::Cut {
                                whole.len() / 2
                            } else {
                                whole.len() - body + body / 2
                            };
                            let half = IoBuf::from_vec(whole.bytes()[..cut].to_vec());
                            let _ = stream.write_all(half).await;
                            let _ = stream.shutdown().await;
                        }
                    }
                    return;
                }
                let jitter = u64::try_from(spec.jitter.0.as_nanos()).unwrap_or(u64::MAX);
                let delay =
                    spec.latency.0 + Duration::from_nanos(if jitter > 0 { env.random_u64() % (jitter + 1) } else { 0 });
                if !delay.is_zero() {
                    env.sleep(delay).await;
                }
                state.served.set(state.served.get() + 1);
                let failed = spec.error_percent > 0 && env.random_u64() % 100 < u64::from(spec.error_percent);
                let status = if failed { "500 Internal Server Error" } else { "200 OK" };
                answered(&state, reception);
                response(status, &spec.name, id, head.close)
            }
        };
        let (res, _) = stream.write_all(reply).await;
        if res.is_err() {
            return;
        }
        if head.close {
            let _ = stream.shutdown().await;
            // Wait for the peer's FIN rather than dropping at once, so the reply is not
            // raced by the close.
            loop {
                buf.clear();
                let (res, b) = stream.read(buf).await;
                buf = b;
                if !matches!(res, Ok(n) if n > 0) {
                    return;
                }
            }
        }
    }
}

/// A request's reception: its id and the index of the reception in its record.
type ReceptionRef = Option<(usize, usize)>;

/// Records that this backend received workload request `id` (on a connection that had
/// carried a request before, when `reused`).
fn record(state: &BackendState, id: Option<u64>, method: &str, reused: bool) -> ReceptionRef {
    let now = sim_now();
    let mut log = state.log.borrow_mut();
    let known = id
        .and_then(|i| usize::try_from(i).ok())
        .filter(|i| *i < log.requests.len());
    match (id, known) {
        (Some(id), Some(i)) => {
            let r = &mut log.requests[i];
            r.seen += 1;
            if r.seen_by.is_none() {
                r.seen_by = Some((state.index, now));
            }
            r.receptions.push(Reception {
                backend: state.index,
                at: now,
                reused,
                answered: false,
            });
            let k = r.receptions.len() - 1;
            log.push(
                now,
                What::Seen {
                    id,
                    backend: state.index,
                },
            );
            Some((i, k))
        }
        _ => {
            let what = format!("{method} with {REQ_ID_HEADER} {id:?}, which no client sent");
            log.strangers.push((state.index, now, what));
            None
        }
    }
}

/// Notes that this backend is about to write reply bytes for a reception.
fn answered(state: &BackendState, reception: ReceptionRef) {
    if let Some((i, k)) = reception {
        let mut log = state.log.borrow_mut();
        if let Some(r) = log.requests.get_mut(i).and_then(|r| r.receptions.get_mut(k)) {
            r.answered = true;
        }
    }
}

/// What every client host needs to build its requests.
pub struct ClientSetup {
    /// The loadgen plan (its duration is cut to what is left when a host restarts).
    pub plan: Plan,
    /// This client's share of the plan.
    pub share: Share,
    /// The request mix.
    pub mix: Rc<Vec<MixEntry>>,
    /// End of the workload, in simulated time.
    pub end: Duration,
}

/// Follows one client's requests into the log.
struct ClientTap {
    log: SharedLog,
    client: u16,
    mix: Rc<Vec<MixEntry>>,
    mix_total: u64,
    rng: RefCell<SplitMix64>,
    host: String,
    close: bool,
}

impl Tap for ClientTap {
    fn request(&self, _slot: u64) -> (u64, Vec<u8>) {
        let mut pick = self.rng.borrow_mut().next_u64() % self.mix_total.max(1);
        let k = self
            .mix
            .iter()
            .position(|m| {
                let w = u64::from(m.weight);
                if pick < w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .unwrap_or(0);
        let now = sim_now();
        let mut log = self.log.borrow_mut();
        let id = log.requests.len() as u64;
        let entry = &self.mix[k];
        let spec = RequestSpec {
            method: entry.method.clone(),
            path: format!("{REQUEST_PATH}{id}"),
            host: self.host.clone(),
            headers: vec![(REQ_ID_HEADER.to_string(), id.to_string())],
            body_bytes: entry.body_bytes,
            close: self.close,
        };
        // The scenario's methods and sizes were checked before the run.
        let bytes = build_request(&spec).unwrap_or_default();
        log.requests.push(Request {
            client: self.client,
            mix: u16::try_from(k).unwrap_or(u16::MAX),
            sent: now,
            outcome: None,
            outcomes: 0,
            head: Vec::new(),
            reply: None,
            seen: 0,
            seen_by: None,
            receptions: Vec::new(),
        });
        log.push(
            now,
            What::Sent {
                id,
                client: self.client,
            },
        );
        (id, bytes)
    }

    fn reply_bytes(&self, id: u64, bytes: &[u8]) {
        let mut log = self.log.borrow_mut();
        if let Some(r) = usize::try_from(id).ok().and_then(|i| log.requests.get_mut(i)) {
            let room = REPLY_HEAD_BYTES_MAX.saturating_sub(r.head.len());
            r.head.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }

    fn outcome(&self, id: u64, outcome: TapOutcome) {
        let now = sim_now();
        let mut log = self.log.borrow_mut();
        if let Some(r) = usize::try_from(id).ok().and_then(|i| log.requests.get_mut(i)) {
            r.outcomes += 1;
            if r.outcome.is_none() {
                r.outcome = Some((now, outcome));
                if matches!(outcome, TapOutcome::Reply { .. }) {
                    r.reply = parse_reply(&r.head);
                }
                r.head = Vec::new();
            }
        }
        log.push(now, What::Outcome { id, outcome });
    }
}

/// Registers client host `name` (index `client`): loadgen's engine running `setup`'s
/// share of the plan, every request followed into `log`. A host (not a turmoil client)
/// so that it can crash; a restart runs what is left of the workload.
pub fn client(sim: &mut turmoil::Sim<'_>, seed: u64, name: &str, client: u16, setup: Rc<ClientSetup>, log: SharedLog) {
    let host = name.to_string();
    sim.host(name, move || {
        let host = host.clone();
        let setup = setup.clone();
        let log = log.clone();
        async move {
            let now = sim_now();
            if now >= setup.end {
                return Ok(());
            }
            let env = TapEnv::new(SimEnv::new(seed, &host), &host, log.clone());
            let mut plan = setup.plan.clone();
            plan.duration = setup.end - now;
            let tap = Rc::new(ClientTap {
                log,
                client,
                mix_total: setup.mix.iter().map(|m| u64::from(m.weight)).sum(),
                mix: setup.mix.clone(),
                rng: RefCell::new(SplitMix64::new(
                    seed ^ gobalancer::io::fnv1a64(host.as_bytes()) ^ 0x006d_6978,
                )),
                host: plan.target.host_header.clone(),
                close: plan.new_conn,
            });
            run_worker_with_tap(env, Arc::new(plan), setup.share, Arc::new(Live::default()), tap).await?;
            Ok(())
        }
    });
}

/// Registers the clock: a turmoil client (the run ends when it returns) that sleeps
/// until `quiet_at`, then counts the established streams of each host in `running`,
/// and the balancer's pooled idle backend connections (`balancer` names its host).
/// The streams are counted again `settle` later (more than a message's latency), and
/// each host's smaller count is kept: a stream whose close is on the wire at
/// `quiet_at` (a TCP health probe shuts down as soon as it connects, and its backend
/// end lives until the FIN arrives) is gone by then, while a leaked one is in both.
pub fn clock(
    sim: &mut turmoil::Sim<'_>,
    name: &str,
    quiet_at: Duration,
    settle: Duration,
    running: Rc<RefCell<BTreeMap<String, bool>>>,
    log: SharedLog,
    balancer: (String, WorkerHandle),
) {
    sim.client(name, async move {
        tokio::time::sleep(quiet_at.saturating_sub(sim_now())).await;
        let count = || -> Vec<(String, usize)> {
            running
                .borrow()
                .iter()
                .filter(|(_, up)| **up)
                .map(|(h, _)| (h.clone(), turmoil::established_tcp_stream_count_on(h.as_str())))
                .collect()
        };
        let at = sim_now();
        let first = count();
        let (lb, workers) = balancer;
        let pooled_idle = running
            .borrow()
            .get(&lb)
            .copied()
            .unwrap_or(false)
            .then(|| workers.borrow().as_ref().map(|w| w.pooled_idle_connections()))
            .flatten();
        tokio::time::sleep(settle).await;
        let second = count();
        let streams = first
            .into_iter()
            .map(|(h, n)| {
                let later = second.iter().find(|(h2, _)| *h2 == h).map_or(n, |(_, m)| *m);
                (h, n.min(later))
            })
            .collect();
        log.borrow_mut().quiet = Some(crate::log::Quiet {
            at,
            streams,
            pooled_idle,
        });
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_tell_workload_requests_from_health_checks() {
        let h = parse_head(b"POST /r/7 HTTP/1.1\r\nX-Req-Id: 7\r\nContent-Length: 2\r\nConnection: close\r\n\r\nxx")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.request, h.body, h.close, h.method.as_str()),
            (Some(Some(7)), 2, true, "POST")
        );
        let h = parse_head(b"GET /health HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.request, None);
        assert!(parse_head(b"GET /r/1 HTTP/1.1\r\n").unwrap().is_none());
        assert!(parse_head(b"\x00\x01 nonsense\r\n\r\n").is_err());
    }

    #[test]
    fn replies_echo_the_id() {
        let r = response("200 OK", "b1", Some(3), false);
        let meta = parse_reply(r.bytes()).unwrap();
        assert_eq!((meta.id, meta.backend.as_deref()), (Some(3), Some("b1")));
    }
}
