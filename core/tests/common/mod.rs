//! In-process harness for the loopback tests: test backends (on the tokio backend) and a
//! one-worker balancer (on the I/O backend a test names), each on its own thread, plus
//! blocking clients.
// Tests run servers on threads and bound their waits with the real clock.
#![allow(clippy::disallowed_methods, dead_code)]

use gobalancer::config::Config;
use gobalancer::io::tokio::{bind_std, spawn_worker};
use gobalancer::io::{BindOptions, Env};
use gobalancer::proxy::{tcp, Shared, Shutdown, ShutdownTrigger, SpliceSettings, Worker};
use gobalancer::reload::{self as hot, Live, ReloadError, ReloadReport};
use gobalancer::testbackend::{self, Script, Stats};
use socket2::{Domain, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown as NetShutdown, SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Upper bound on any single client wait in these tests.
pub const CLIENT_WAIT: Duration = Duration::from_secs(10);

/// A free loopback address to bind later, or a closed port to refuse connections.
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// `N` distinct closed ports. Two calls of [`closed_port`] may return the same port (the
/// kernel hands a freed port out again), which a pool refuses as a duplicate backend:
/// these are bound together, so they differ, and then closed.
pub fn closed_ports<const N: usize>() -> [SocketAddr; N] {
    let held: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    std::array::from_fn(|i| held[i].local_addr().expect("addr"))
}

/// Servers on a thread, stopped and joined on drop.
pub struct Running {
    trigger: Option<ShutdownTrigger>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(t) = self.trigger.take() {
            t.trigger();
        }
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

/// Test backends on loopback ports.
pub struct Backends {
    pub addrs: Vec<SocketAddr>,
    _running: Running,
}

pub fn start_backends(scripts: Vec<Script>) -> Backends {
    let mut socks = Vec::new();
    let mut addrs = Vec::new();
    for _ in &scripts {
        let s = bind_std(
            "127.0.0.1:0".parse().expect("addr"),
            BindOptions {
                reuse_port: false,
                backlog: 1024,
            },
        )
        .expect("bind backend");
        addrs.push(s.local_addr().expect("addr"));
        socks.push(s);
    }
    let (trigger, shutdown) = Shutdown::new();
    let thread = spawn_worker("test-backends".into(), move |env| async move {
        let mut tasks = Vec::new();
        for (sock, script) in socks.into_iter().zip(scripts) {
            let l = env.listener_from_std(sock).expect("register backend");
            tasks.push(tokio::task::spawn_local(testbackend::serve(
                env.clone(),
                l,
                Rc::new(script),
                Rc::new(Stats::default()),
                shutdown.clone(),
            )));
        }
        for t in tasks {
            let _ = t.await;
        }
    })
    .expect("backend thread");
    Backends {
        addrs,
        _running: Running {
            trigger: Some(trigger),
            thread: Some(thread),
        },
    }
}

/// A one-worker balancer serving the first listener of a config, on a loopback port of
/// its own (the config's bind address is not used).
pub struct Proxy {
    pub addr: SocketAddr,
    /// The generation the proxy started with.
    pub shared: Arc<Shared>,
    /// The configuration in force and the reload counters.
    pub live: Arc<Live>,
    /// Every generation put in force by [`Proxy::reload`], oldest first.
    generations: Mutex<Vec<Arc<Shared>>>,
    _running: Running,
}

impl Proxy {
    /// Reloads with the RON text `config` (origin `<reload>`), as SIGHUP does with the
    /// file. The listener's bind address must stay `127.0.0.1:1` (a listener change
    /// needs a restart).
    pub fn reload(&self, config: &str) -> Result<ReloadReport, ReloadError> {
        let next = Config::parse(config, "<reload>");
        let result = self.live.reload(next, balancer_now());
        self.generations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(self.live.current());
        result
    }

    /// The generation in force.
    pub fn current(&self) -> Arc<Shared> {
        self.live.current()
    }

    /// Waits until every backend's active counter, in every generation, is back to
    /// zero; panics if that takes longer than the client wait.
    pub fn assert_counters_return_to_zero(&self) {
        let deadline = Instant::now() + CLIENT_WAIT;
        loop {
            let total: u64 = self
                .generations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|g| g.total_active())
                .sum::<u64>()
                + self.shared.total_active();
            if total == 0 && self.shared.conn_limit.open() == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "active counters stuck at {total}, open {}",
                self.shared.conn_limit.open()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The I/O backend a balancer under test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoKind {
    /// tokio: epoll on Linux.
    Epoll,
    /// tokio with `--splice auto` and a threshold of 0: every direction splices from its
    /// first byte (where the platform has splice; elsewhere the same as `Epoll`).
    EpollSplice,
    /// io_uring (Linux).
    Uring,
    /// io_uring with `--splice auto` and a threshold of 0: every direction splices from its
    /// first byte (`--uring-splice syscall`: splice(2), readiness through the ring).
    UringSplice,
    /// As `UringSplice` with `--uring-splice op`: IORING_OP_SPLICE.
    UringSpliceOp,
}

/// Set (to anything) where io_uring must be available, e.g. on CI machines known to have
/// it: a test that would be skipped fails instead.
pub const REQUIRE_URING: &str = "GOBALANCER_REQUIRE_URING";

/// Whether io_uring can serve the backend here (the probe `--io auto` uses), or why not.
pub fn uring_available() -> Result<(), String> {
    #[cfg(target_os = "linux")]
    return gobalancer::io::uring::probe().map_err(|e| e.to_string());
    #[cfg(not(target_os = "linux"))]
    return Err("io_uring exists on Linux only".to_string());
}

/// Reports `test` skipped because `what` is unavailable here, and returns None; panics
/// instead when [`REQUIRE_URING`] is set.
fn skip(test: &str, what: &str, reason: &str) -> Option<IoKind> {
    assert!(
        std::env::var_os(REQUIRE_URING).is_none(),
        "{test}: {what} is unavailable but {REQUIRE_URING} is set: {reason}"
    );
    // Straight to the process's stderr: `eprintln!` is captured by the test harness and
    // shown only for failures, and a skip must be seen.
    let _ = writeln!(io::stderr(), "SKIPPED {test} ({what}): {reason}");
    None
}

/// `Some(IoKind::Uring)` where io_uring works (the same probe as `--io auto`); elsewhere
/// prints `SKIPPED <test> (io_uring): <reason>` and returns None, or panics if
/// [`REQUIRE_URING`] is set.
pub fn uring_or_skip(test: &str) -> Option<IoKind> {
    match uring_available() {
        Ok(()) => Some(IoKind::Uring),
        Err(reason) => skip(test, "io_uring", &reason),
    }
}

/// `Some(IoKind::UringSplice)` where io_uring works (the probe of `--io auto`; splice(2)
/// needs nothing more); elsewhere skips or panics as [`uring_or_skip`] does.
pub fn uring_splice_or_skip(test: &str) -> Option<IoKind> {
    uring_or_skip(test)?;
    #[cfg(target_os = "linux")]
    return Some(IoKind::UringSplice);
    #[cfg(not(target_os = "linux"))]
    return skip(test, "io_uring splice", "splice exists on Linux only");
}

/// `Some(IoKind::UringSpliceOp)` where io_uring works and has IORING_OP_SPLICE (the
/// probes of `--io auto` and of the start line's splice note); elsewhere skips or panics
/// as [`uring_or_skip`] does.
pub fn uring_splice_op_or_skip(test: &str) -> Option<IoKind> {
    uring_or_skip(test)?;
    #[cfg(target_os = "linux")]
    let splice =
        gobalancer::io::uring::probe_splice(gobalancer::io::uring::SpliceMethod::Op).map_err(|e| e.to_string());
    #[cfg(not(target_os = "linux"))]
    let splice: Result<(), String> = Err("splice exists on Linux only".to_string());
    match splice {
        Ok(()) => Some(IoKind::UringSpliceOp),
        Err(reason) => skip(test, "IORING_OP_SPLICE", &reason),
    }
}

/// The balancer's clock (the tokio backend's clock is process-wide, and io_uring's is
/// the same one).
pub fn balancer_now() -> gobalancer::io::Instant {
    gobalancer::io::tokio::TokioEnv::new().now()
}

/// The balancer's worker: serves `listener` until shutdown, then drains.
async fn run_proxy<E: Env>(
    env: E,
    listener: E::Listener,
    live: Arc<Live>,
    buffer_size: usize,
    splice: Option<SpliceSettings>,
    shutdown: Shutdown,
) {
    let worker = Worker::with_splice(buffer_size, 16, splice);
    // Health checks run on the same thread here; the binary gives them one of their own.
    env.spawn(hot::run_health(env.clone(), live.subscribe(), shutdown.clone()));
    let shared = live.current();
    let l = shared.listeners[0].clone();
    tcp::serve(
        env.clone(),
        listener,
        l,
        shared.conn_limit.clone(),
        worker.clone(),
        shutdown,
    )
    .await;
    let deadline = env.now() + live.current().drain_timeout;
    tcp::drain(&env, &worker, deadline).await;
}

/// Names the I/O backend of [`start_proxy`]: `uring` runs the suites that use it on
/// io_uring (skipped, saying why, where io_uring is unavailable); unset or anything else,
/// epoll. `scripts/test.sh` runs the L7 suites a second time with `uring`.
pub const TEST_IO: &str = "GOBALANCER_TEST_IO";

/// A one-worker balancer on the backend [`TEST_IO`] names (epoll by default).
pub fn start_proxy(config: &str) -> Proxy {
    let io = match std::env::var(TEST_IO).as_deref() {
        Ok("uring") => uring_or_skip(&format!("{TEST_IO}=uring")).unwrap_or(IoKind::Epoll),
        _ => IoKind::Epoll,
    };
    start_proxy_on(io, config)
}

/// With `on`, splicing from the first byte through pipes of `BULK_PIPE` (the bulk
/// benchmark's setting; the default size otherwise).
fn splice_from_the_first_byte(on: bool) -> Option<SpliceSettings> {
    on.then(|| SpliceSettings {
        after: 0,
        pipe_bytes: std::env::var("BULK_PIPE")
            .ok()
            .and_then(|v| gobalancer::config::parse_size(&v).ok())
            .unwrap_or(SpliceSettings::PIPE_BYTES_DEFAULT),
        ..SpliceSettings::default()
    })
}

/// A one-worker balancer on the backend `io`.
pub fn start_proxy_on(io: IoKind, config: &str) -> Proxy {
    let config = Config::parse(config, "<test>").unwrap_or_else(|e| panic!("test config: {e}"));
    let live = Live::new(config.clone()).expect("shared state");
    let shared = live.current();
    let sock = bind_std("127.0.0.1:0".parse().expect("addr"), BindOptions::default()).expect("bind proxy");
    let addr = sock.local_addr().expect("addr");
    let (trigger, shutdown) = Shutdown::new();
    let live2 = live.clone();
    let buffer_size = config.buffer_size;
    let thread = match io {
        IoKind::Epoll | IoKind::EpollSplice => spawn_worker("test-proxy".into(), move |env| async move {
            let listener = env.listener_from_std(sock).expect("register proxy");
            let splice = splice_from_the_first_byte(io == IoKind::EpollSplice);
            run_proxy(env, listener, live2, buffer_size, splice, shutdown).await
        }),
        #[cfg(target_os = "linux")]
        IoKind::Uring | IoKind::UringSplice | IoKind::UringSpliceOp => {
            gobalancer::io::uring::spawn_worker("test-proxy-uring".into(), move |env| async move {
                if io == IoKind::UringSpliceOp {
                    env.set_splice_method(gobalancer::io::uring::SpliceMethod::Op);
                }
                let listener = env.listener_from_std(sock).expect("register proxy");
                let splice = splice_from_the_first_byte(io != IoKind::Uring);
                run_proxy(env, listener, live2, buffer_size, splice, shutdown).await
            })
        }
        #[cfg(not(target_os = "linux"))]
        IoKind::Uring | IoKind::UringSplice | IoKind::UringSpliceOp => {
            panic!("io_uring exists on Linux only; check with uring_or_skip first")
        }
    }
    .expect("proxy thread");
    Proxy {
        addr,
        shared,
        live,
        generations: Mutex::new(Vec::new()),
        _running: Running {
            trigger: Some(trigger),
            thread: Some(thread),
        },
    }
}

/// A config with one listener and one pool over `backends` (address, weight); `extra`
/// holds more top-level fields, e.g. `timeouts: (idle: "300ms"), max_connections: 2,`.
pub fn config(algorithm: &str, backends: &[(SocketAddr, u32)], extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, (a, w))| format!("(address: \"{a}\", name: \"b{i}\", weight: {w})"))
        .collect();
    format!(
        "({extra} listeners: [(name: \"t\", bind: \"127.0.0.1:1\", pool: \"p\")],
          pools: [(name: \"p\", algorithm: \"{algorithm}\", backends: [{}])])",
        list.join(", ")
    )
}

/// Connects from `local` (any 127.0.0.0/8 address) to `addr`.
pub fn connect_from(local: Ipv4Addr, addr: SocketAddr) -> io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::from((local, 0)).into())?;
    s.connect_timeout(&addr.into(), CLIENT_WAIT)?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(CLIENT_WAIT))?;
    s.set_write_timeout(Some(CLIENT_WAIT))?;
    Ok(s)
}

/// Through a `Reply::Name` backend: reads the name line, half-closes, reads to EOF.
pub fn fetch_name_from(local: Ipv4Addr, addr: SocketAddr) -> io::Result<String> {
    let mut s = connect_from(local, addr)?;
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\n") {
        if s.read(&mut byte)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("closed after {:?}", String::from_utf8_lossy(&got)),
            ));
        }
        got.push(byte[0]);
    }
    s.shutdown(NetShutdown::Write)?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)?;
    got.pop();
    Ok(String::from_utf8_lossy(&got).into_owned())
}

pub fn fetch_name(addr: SocketAddr) -> io::Result<String> {
    fetch_name_from(Ipv4Addr::LOCALHOST, addr)
}

/// Writes `data`, half-closes, and reads everything until EOF.
pub fn exchange(addr: SocketAddr, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut s = connect_from(Ipv4Addr::LOCALHOST, addr)?;
    s.write_all(data)?;
    s.shutdown(NetShutdown::Write)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}
pub mod http;
