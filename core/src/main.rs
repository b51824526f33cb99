//! The `gobalancer` binary: flags, logging, binding, worker threads and signals.
//!
//! Thread per core: every worker runs a current-thread tokio runtime with its own
//! `SO_REUSEPORT` listener per configured listener. Every socket of every worker is bound
//! before any worker starts, so a listen address in use stops the process with nothing
//! bound. SIGINT and SIGTERM stop the accept loops; open connections then have up to the
//! drain timeout to finish. SIGHUP reloads the `--config` file (see
//! [`gobalancer::reload`]): pools change live, listeners and process settings need a
//! restart.
// The binary is where threads are started and the real clock is handed to the core.
#![allow(clippy::disallowed_methods)]

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use gobalancer::config::{Config, Overrides, QuickFlags};
use gobalancer::io::tokio::{bind_std, spawn_worker, TokioEnv};
#[cfg(target_os = "linux")]
use gobalancer::io::uring::{self, UringEnv};
use gobalancer::io::{BindOptions, Env};
use gobalancer::proxy::{tcp, Shared, Shutdown, ShutdownTrigger, SpliceSettings, Worker};
use gobalancer::reload::{self, Live};
use gobalancer::testbackend::{self, Reply, Script, Stats};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;

/// The configuration `cargo run --bin gobalancer` serves with no arguments: a listener on
/// 127.0.0.1:8080 over three built-in demo backends.
const EMBEDDED_DEFAULT: &str = include_str!("../../config/default.ron");
const EMBEDDED_ORIGIN: &str = "<embedded default>";
/// Idle buffers each worker keeps for reuse.
const BUFFERS_KEPT_MAX: usize = 1024;

#[derive(Parser, Debug)]
#[command(
    name = "gobalancer",
    version,
    about = "A fast L4 load balancer with a deterministic simulation harness"
)]
struct Cli {
    /// RON configuration file (see config/example.ron).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the configuration and exit: 0 if valid, 1 if not (like `nginx -t`).
    #[arg(long)]
    check: bool,
    /// Quick mode: address to listen on (with --backend, instead of a file).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Quick mode: listener mode.
    #[arg(long, default_value = "tcp", value_name = "tcp|http")]
    mode: String,
    /// Quick mode: balancing algorithm.
    #[arg(long, default_value = "round-robin", value_name = "NAME")]
    algorithm: String,
    /// Quick mode: a backend, `ADDR[,weight=N][,name=NAME]`; repeat for each.
    #[arg(long, value_name = "SPEC")]
    backend: Vec<String>,
    /// Worker threads (0: one per core).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// I/O backend.
    #[arg(long, value_enum, default_value_t = IoChoice::Auto)]
    io: IoChoice,
    /// Limit on one connect attempt to a backend, e.g. "3s", "500ms".
    #[arg(long, value_name = "DURATION")]
    connect_timeout: Option<String>,
    /// Close a connection on which nothing moved for this long.
    #[arg(long, value_name = "DURATION")]
    idle_timeout: Option<String>,
    /// How long open connections may finish after SIGTERM or SIGINT, and connections on
    /// a backend that a reload removed.
    #[arg(long, value_name = "DURATION")]
    drain_timeout: Option<String>,
    /// Process-wide limit on open client connections.
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Active health check for every pool: `tcp`, or `http:/PATH`.
    #[arg(long, value_name = "tcp|http:/PATH")]
    health_check: Option<String>,
    /// Interval between health checks of one backend, e.g. "2s".
    #[arg(long, value_name = "DURATION")]
    health_interval: Option<String>,
    /// Consecutive successful checks that bring a backend back up.
    #[arg(long, value_name = "N")]
    rise: Option<u32>,
    /// Consecutive failed checks that take a backend down.
    #[arg(long, value_name = "N")]
    fall: Option<u32>,
    /// Ramp a recovered or new backend's weight up linearly over this window, e.g. "30s".
    #[arg(long, value_name = "DURATION")]
    slow_start: Option<String>,
    /// Per-direction buffer size, e.g. "16KiB".
    #[arg(long, value_name = "SIZE")]
    buffer_size: Option<String>,
    /// Zero-copy forwarding (Linux): `auto` splices a direction once it has moved
    /// --splice-after bytes (splice(2); on io_uring as --uring-splice says); `off`
    /// always copies.
    #[arg(long, value_enum, default_value_t = SpliceChoice::Auto)]
    splice: SpliceChoice,
    /// With --splice auto: bytes a direction copies before it splices, once a read fills
    /// its buffer (bulk, not small messages), e.g. "64KiB" (0: from the first byte).
    #[arg(long, value_name = "SIZE", default_value = "64KiB")]
    splice_after: String,
    /// With --splice auto: the size asked of each pipe, e.g. "256KiB" (the kernel's
    /// default where it refuses more).
    #[arg(long, value_name = "SIZE", default_value = "256KiB")]
    splice_pipe_size: String,
    /// With --splice auto on io_uring: `syscall` calls splice(2) on the worker when the
    /// ring's poll says the socket is ready; `op` submits IORING_OP_SPLICE, which the
    /// kernel runs on an io-wq thread (a hand-off per pipe load: slower).
    #[arg(long, value_enum, default_value_t = UringSpliceChoice::Syscall)]
    uring_splice: UringSpliceChoice,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level (error, warn, info, debug, trace) or a tracing filter.
    #[arg(long, default_value = "info", value_name = "LEVEL")]
    log_level: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum IoChoice {
    /// io_uring where it works, else epoll/kqueue.
    Auto,
    /// epoll (Linux) or kqueue (BSD, macOS), through tokio.
    Epoll,
    /// io_uring.
    Uring,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SpliceChoice {
    /// Splice bulk transfers where the I/O backend can (epoll and io_uring on Linux).
    Auto,
    /// Always copy through user-space buffers.
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum UringSpliceChoice {
    /// splice(2) on the worker thread, readiness by IORING_OP_POLL_ADD.
    Syscall,
    /// IORING_OP_SPLICE (Linux 5.7), run by the kernel on io-wq threads.
    Op,
}

#[cfg(target_os = "linux")]
impl UringSpliceChoice {
    fn method(self) -> uring::SpliceMethod {
        match self {
            UringSpliceChoice::Syscall => uring::SpliceMethod::Syscall,
            UringSpliceChoice::Op => uring::SpliceMethod::Op,
        }
    }
}

/// Largest `--splice-pipe-size`: far above any kernel's `fs.pipe-max-size` default.
const PIPE_BYTES_LIMIT: usize = 64 * 1024 * 1024;

/// The workers' splice settings from `--splice`, `--splice-after` and
/// `--splice-pipe-size`.
fn splice_settings(cli: &Cli) -> anyhow::Result<Option<SpliceSettings>> {
    let after = gobalancer::config::parse_size(&cli.splice_after)
        .map_err(|e| anyhow::anyhow!("--splice-after {}: {e}", cli.splice_after))?;
    let pipe_bytes = gobalancer::config::parse_size(&cli.splice_pipe_size)
        .map_err(|e| anyhow::anyhow!("--splice-pipe-size {}: {e}", cli.splice_pipe_size))?;
    if pipe_bytes > PIPE_BYTES_LIMIT {
        anyhow::bail!("--splice-pipe-size {}: at most 64MiB", cli.splice_pipe_size);
    }
    Ok(match cli.splice {
        SpliceChoice::Off => None,
        SpliceChoice::Auto => Some(SpliceSettings {
            after: after as u64,
            pipe_bytes,
            ..SpliceSettings::default()
        }),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli) {
        eprintln!("gobalancer: {e:#}");
        return ExitCode::FAILURE;
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gobalancer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cli: &Cli) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .with_context(|| format!("--log-level {}: not a level or filter", cli.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match cli.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// Where the configuration came from.
enum Source {
    /// `--config FILE`: SIGHUP reads it again.
    File(PathBuf),
    Flags,
    /// The embedded default: the binary also runs the demo backends.
    Demo,
}

fn load_config(cli: &Cli) -> anyhow::Result<(Config, Source)> {
    let quick = cli.listen.is_some() || !cli.backend.is_empty();
    let (mut config, source) = match (&cli.config, quick) {
        (Some(_), true) => bail!("use either --config FILE or --listen/--backend, not both"),
        (Some(path), false) => (
            Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?,
            Source::File(path.clone()),
        ),
        (None, true) => {
            let Some(listen) = cli.listen.clone() else {
                bail!("--backend needs --listen ADDR (or use --config FILE)");
            };
            if cli.backend.is_empty() {
                bail!("--listen needs at least one --backend ADDR (or use --config FILE)");
            }
            let flags = QuickFlags {
                listen,
                mode: cli.mode.clone(),
                algorithm: cli.algorithm.clone(),
                backends: cli.backend.clone(),
            };
            (
                Config::from_flags(&flags).map_err(|e| anyhow::anyhow!("{e}"))?,
                Source::Flags,
            )
        }
        (None, false) => (
            Config::parse(EMBEDDED_DEFAULT, EMBEDDED_ORIGIN).map_err(|e| anyhow::anyhow!("{e}"))?,
            Source::Demo,
        ),
    };
    config
        .apply_overrides(&overrides(cli))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((config, source))
}

/// The flags that override the file's values, at start-up and again on every reload.
fn overrides(cli: &Cli) -> Overrides {
    Overrides {
        workers: cli.workers,
        connect_timeout: cli.connect_timeout.clone(),
        idle_timeout: cli.idle_timeout.clone(),
        drain_timeout: cli.drain_timeout.clone(),
        max_connections: cli.max_connections,
        buffer_size: cli.buffer_size.clone(),
        health_check: cli.health_check.clone(),
        health_interval: cli.health_interval.clone(),
        rise: cli.rise,
        fall: cli.fall,
        slow_start: cli.slow_start.clone(),
    }
}

/// SIGHUP: reads the configuration file again, with the same overrides, and hands it to
/// [`Live::reload`], which applies it or keeps the one in force (and logs which). The
/// flags and the embedded default have no file to read again.
fn reload_config(live: &Live, source: &Source, cli: &Cli) {
    match source {
        Source::File(path) => {
            let next = Config::load(path).and_then(|mut config| {
                config.apply_overrides(&overrides(cli))?;
                Ok(config)
            });
            // The workers' clock: drain deadlines and health clocks are on it.
            let now = TokioEnv::new().now();
            let _ = live.reload(next, now);
        }
        Source::Flags => {
            live.refuse("the process runs on --listen/--backend flags, not a --config file: nothing to reload; restart to change the configuration");
        }
        Source::Demo => {
            live.refuse("the process runs on the embedded default configuration, not a --config file: nothing to reload; restart with --config FILE");
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let (config, source) = load_config(&cli)?;
    let splice = splice_settings(&cli)?;
    if cli.check {
        println!(
            "configuration OK: {} listener(s), {} pool(s), {} backend(s)",
            config.listeners.len(),
            config.pools.len(),
            config.pools.iter().map(|p| p.backends.len()).sum::<usize>()
        );
        return Ok(());
    }
    let (io, io_note) = select_io(cli.io)?;
    let (splice, splice_note) = splice_for(io, splice, cli.uring_splice);
    let workers = match config.workers {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        n => n,
    };
    // Watched before anything is bound or started: a signal that arrives from here on
    // is handled, not the default action (SIGHUP would end the process).
    let signals = Signals::watch()?;
    let live = Live::new(config.clone()).map_err(|e| anyhow::anyhow!(e))?;
    let shared = live.current();

    // Demo backends first, so that the balancer's first connections find them.
    let (trigger, shutdown) = Shutdown::new();
    let mut threads = Vec::new();
    if let Source::Demo = source {
        threads.push(start_demo_backends(&shared, shutdown.clone())?);
    }

    threads.push(start_health(&live, shutdown.clone())?);

    // Bind every socket of every worker before serving anything.
    let mut sockets: Vec<Vec<std::net::TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, l) in shared.listeners.iter().enumerate() {
        for per_worker in sockets.iter_mut() {
            let s = bind_std(l.bind, BindOptions::default()).map_err(|e| {
                anyhow::anyhow!(
                    "{}: listeners[{i}].bind: cannot listen on {}: {e}",
                    config.location(&format!("listeners[{i}].bind")),
                    l.bind
                )
            })?;
            per_worker.push(s);
        }
    }

    let listeners: Vec<String> = shared
        .listeners
        .iter()
        .map(|l| format!("{}={} ({} -> {})", l.name, l.bind, l.route().mode, l.pool().name))
        .collect();
    let pools: Vec<String> = shared
        .pools
        .iter()
        .map(|p| {
            format!(
                "{}: {} over {} backend(s)",
                p.name,
                p.balancer.algorithm(),
                p.targets.len()
            )
        })
        .collect();
    tracing::info!(
        workers,
        io = io.name(),
        io_note = %io_note,
        splice = %splice_note,
        listeners = %listeners.join(", "),
        pools = %pools.join("; "),
        max_connections = config.max_connections,
        "gobalancer started"
    );
    if let Source::Demo = source {
        print_demo_help(&shared);
    }

    for (id, socks) in sockets.into_iter().enumerate() {
        let live = live.clone();
        let shutdown = shutdown.clone();
        let buffer_size = config.buffer_size;
        let name = format!("worker-{id}");
        let t = match io {
            Io::Readiness => spawn_worker(name, move |env| {
                worker_main(env, id, socks, live, buffer_size, splice, shutdown)
            }),
            #[cfg(target_os = "linux")]
            Io::Uring => {
                let method = cli.uring_splice.method();
                uring::spawn_worker(name, move |env| {
                    env.set_splice_method(method);
                    worker_main(env, id, socks, live, buffer_size, splice, shutdown)
                })
            }
        }
        .context("cannot start a worker thread")?;
        threads.push(t);
    }
    drop(shared);

    signals.serve(&trigger, || reload_config(&live, &source, &cli))?;
    let drain_timeout = live.current().drain_timeout;
    tracing::info!(
        drain_timeout_ms = drain_timeout.as_millis() as u64,
        "shutting down: no new connections; draining open ones"
    );
    for t in threads {
        if t.join().is_err() {
            tracing::error!("a worker thread panicked");
        }
    }
    tracing::info!("gobalancer stopped");
    Ok(())
}

/// The splice settings the workers get on backend `io`, and what the start line says of
/// them: with `--uring-splice op`, io_uring splices only where its probe finds
/// IORING_OP_SPLICE.
fn splice_for(
    io: Io,
    splice: Option<SpliceSettings>,
    uring_splice: UringSpliceChoice,
) -> (Option<SpliceSettings>, String) {
    let Some(s) = splice else {
        return (None, "off".to_string());
    };
    #[cfg(not(target_os = "linux"))]
    let _ = uring_splice;
    if !cfg!(target_os = "linux") {
        return (None, "off (splice(2) exists on Linux only)".to_string());
    }
    let how = match io {
        Io::Readiness => "splice(2)".to_string(),
        #[cfg(target_os = "linux")]
        Io::Uring => match uring::probe_splice(uring_splice.method()) {
            Ok(()) => uring::splice_description(uring_splice.method()).to_string(),
            Err(e) => return (None, format!("off (the io_uring backend copies: {e})")),
        },
    };
    (
        Some(s),
        format!(
            "after {} bytes, at most {} pipes of {} bytes per worker ({how})",
            s.after, s.pipes_max, s.pipe_bytes
        ),
    )
}

/// The I/O backend the workers run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Io {
    /// tokio: epoll on Linux, kqueue on the BSDs and macOS.
    Readiness,
    /// io_uring (Linux).
    #[cfg(target_os = "linux")]
    Uring,
}

impl Io {
    fn name(self) -> &'static str {
        match self {
            Io::Readiness if cfg!(any(target_os = "linux", target_os = "android")) => "epoll",
            Io::Readiness => "kqueue",
            #[cfg(target_os = "linux")]
            Io::Uring => "io_uring",
        }
    }
}

/// Chooses the I/O backend for `--io`, with the reason the start line gives. `uring`
/// fails, saying why, where io_uring is unavailable; `auto` probes it and falls back.
fn select_io(choice: IoChoice) -> anyhow::Result<(Io, String)> {
    match choice {
        IoChoice::Epoll => Ok((Io::Readiness, "requested".to_string())),
        IoChoice::Uring => match probe_uring() {
            Ok((io, found)) => Ok((io, format!("requested; {found}"))),
            Err(e) => bail!(
                "--io uring: io_uring is unavailable on this machine: {e}; use --io epoll (or auto, which falls back)"
            ),
        },
        IoChoice::Auto => match probe_uring() {
            Ok((io, found)) => Ok((io, format!("auto: {found}"))),
            Err(e) => Ok((
                Io::Readiness,
                format!(
                    "auto: io_uring unavailable, falling back to {}: {e}",
                    Io::Readiness.name()
                ),
            )),
        },
    }
}

/// io_uring and what its probe found, or why it cannot serve here.
#[cfg(target_os = "linux")]
fn probe_uring() -> Result<(Io, String), String> {
    uring::probe().map_err(|e| e.to_string())?;
    Ok((
        Io::Uring,
        format!(
            "io_uring probe passed (ring set-up and {})",
            uring::required_operations().join(", ")
        ),
    ))
}

#[cfg(not(target_os = "linux"))]
fn probe_uring() -> Result<(Io, String), String> {
    Err("io_uring exists on Linux only".to_string())
}

/// What a worker needs of its environment beyond [`Env`]: taking over a listener bound
/// before the workers start.
trait WorkerEnv: Env {
    fn listener_from_std(&self, l: std::net::TcpListener) -> std::io::Result<Self::Listener>;
}

impl WorkerEnv for TokioEnv {
    fn listener_from_std(&self, l: std::net::TcpListener) -> std::io::Result<Self::Listener> {
        TokioEnv::listener_from_std(self, l)
    }
}

#[cfg(target_os = "linux")]
impl WorkerEnv for UringEnv {
    fn listener_from_std(&self, l: std::net::TcpListener) -> std::io::Result<Self::Listener> {
        UringEnv::listener_from_std(self, l)
    }
}

async fn worker_main<E: WorkerEnv>(
    env: E,
    id: usize,
    sockets: Vec<std::net::TcpListener>,
    live: Arc<Live>,
    buffer_size: usize,
    splice: Option<SpliceSettings>,
    shutdown: Shutdown,
) {
    let worker = Worker::with_splice(buffer_size, BUFFERS_KEPT_MAX, splice);
    // The listeners and the connection limit are the same in every generation.
    let shared = live.current();
    let mut serving = Vec::new();
    for (sock, l) in sockets.into_iter().zip(shared.listeners.iter()) {
        match env.listener_from_std(sock) {
            Ok(listener) => serving.push(tokio::task::spawn_local(tcp::serve(
                env.clone(),
                listener,
                l.clone(),
                shared.conn_limit.clone(),
                worker.clone(),
                shutdown.clone(),
            ))),
            Err(e) => tracing::error!(worker = id, listener = %l.name, error = %e, "cannot register the listener"),
        }
    }
    drop(shared);
    for s in serving {
        let _ = s.await;
    }
    // The drain timeout of the configuration in force when shutdown began.
    let deadline = env.now() + live.current().drain_timeout;
    let cut = tcp::drain(&env, &worker, deadline).await;
    if cut > 0 {
        tracing::warn!(
            worker = id,
            connections = cut,
            "drain timeout reached; cutting open connections"
        );
    }
}

/// Runs every pool's health checks and ticks on a thread of their own: probes run once
/// per process, and the effective weights they publish reach every worker. A reload
/// swaps the probe tasks of the pools it changed.
fn start_health(live: &Live, shutdown: Shutdown) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let generations = live.subscribe();
    spawn_worker("health".into(), move |env| async move {
        reload::run_health(env, generations, shutdown).await;
    })
    .context("cannot start the health-check thread")
}

/// The signals the process acts on, watched from start-up: SIGTERM and SIGINT stop it,
/// SIGHUP reloads the configuration.
struct Signals {
    rt: tokio::runtime::Runtime,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (on a runtime of this thread's own).
    fn watch() -> anyhow::Result<Signals> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the signal runtime")?;
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            // `signal` registers with the runtime it is called in.
            let in_runtime = rt.enter();
            let term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
            let int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
            let hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
            drop(in_runtime);
            Ok(Signals { rt, term, int, hup })
        }
        #[cfg(not(unix))]
        Ok(Signals { rt })
    }

    /// Calls `on_reload` for every SIGHUP until SIGTERM or SIGINT, then fires `trigger`.
    #[cfg_attr(not(unix), allow(unused_mut, unused_variables))]
    fn serve(mut self, trigger: &ShutdownTrigger, mut on_reload: impl FnMut()) -> anyhow::Result<()> {
        self.rt.block_on(async {
            #[cfg(unix)]
            {
                use gobalancer::io::{race, Either};
                let which = loop {
                    match race(self.hup.recv(), race(self.term.recv(), self.int.recv())).await {
                        Either::Left(_) => {
                            tracing::info!(signal = "SIGHUP", "signal received; reloading the configuration");
                            on_reload();
                        }
                        Either::Right(Either::Left(_)) => break "SIGTERM",
                        Either::Right(Either::Right(_)) => break "SIGINT",
                    }
                };
                tracing::info!(signal = which, "signal received");
            }
            #[cfg(not(unix))]
            {
                tokio::signal::ctrl_c().await.context("cannot watch Ctrl-C")?;
            }
            anyhow::Ok(())
        })?;
        trigger.trigger();
        Ok(())
    }
}

/// Runs the built-in demo backends (HTTP, replying with their names) on the addresses
/// the embedded default config names, in a thread of their own.
fn start_demo_backends(shared: &Shared, shutdown: Shutdown) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let mut bound = Vec::new();
    for pool in &shared.pools {
        for t in &pool.targets {
            let s = bind_std(
                t.addr,
                BindOptions {
                    reuse_port: false,
                    backlog: 1024,
                },
            )
            .with_context(|| format!("demo backend {}: cannot listen on {}", t.name, t.addr))?;
            bound.push((t.name.clone(), s));
        }
    }
    spawn_worker("demo-backends".into(), move |env| async move {
        let mut serving = Vec::new();
        for (name, sock) in bound {
            match env.listener_from_std(sock) {
                Ok(l) => serving.push(tokio::task::spawn_local(testbackend::serve(
                    env.clone(),
                    l,
                    Rc::new(Script::new(name, Reply::Http)),
                    Rc::new(Stats::default()),
                    shutdown.clone(),
                ))),
                Err(e) => tracing::error!(backend = %name, error = %e, "cannot start a demo backend"),
            }
        }
        for s in serving {
            let _ = s.await;
        }
    })
    .context("cannot start the demo backends' thread")
}

fn print_demo_help(shared: &Shared) {
    let listen = shared.listeners.first().map(|l| l.bind.to_string()).unwrap_or_default();
    let lines = [
        String::new(),
        format!("gobalancer is serving its built-in demo on {listen}: three test backends on loopback,"),
        "round robin, TCP mode. Each reply names the backend that served it.".to_string(),
        String::new(),
        format!("  try it:              curl http://{listen}/        (run it a few times)"),
        "  your own backends:   cargo run --release --bin gobalancer -- --listen 127.0.0.1:8080 \\".to_string(),
        "                         --backend 10.0.0.1:80 --backend 10.0.0.2:80,weight=3 --algorithm weighted"
            .to_string(),
        "  a config file:       cargo run --release --bin gobalancer -- --config config/example.ron".to_string(),
        "  all flags:           cargo run --release --bin gobalancer -- --help".to_string(),
        "  stop:                Ctrl-C".to_string(),
        String::new(),
    ];
    println!("{}", lines.join("\n"));
}
