//! Building blocks of a simulated world: hosts that run the real balancer, the shared
//! test backend, and simple clients, all on [`SimEnv`].
//!
//! Every host derives its random stream from the run's seed and its own name, so adding
//! a host does not change what the others draw.

use crate::SimEnv;
use gobalancer::config::Config;
use gobalancer::health;
use gobalancer::io::{BindOptions, Env, IoBuf, OwnedRead, OwnedWrite, Stream};
use gobalancer::proxy::{tcp, Shared, Shutdown, Worker};
use gobalancer::testbackend::{self, Reply, Script, Stats};
use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Idle buffers the simulated balancer keeps.
const BUFFERS_KEPT_MAX: usize = 64;
/// Longest line [`fetch_line`] reads.
const LINE_BYTES_MAX: usize = 1024;

/// Registers host `name` running the shared test backend on `port`. A bounced host
/// starts afresh.
pub fn backend(sim: &mut turmoil::Sim<'_>, seed: u64, name: &str, port: u16, reply: Reply) {
    let host = name.to_string();
    sim.host(name, move || {
        let host = host.clone();
        async move {
            let env = SimEnv::new(seed, &host);
            let addr = SocketAddr::from(([0, 0, 0, 0], port));
            let listener = env.bind(addr, BindOptions::default()).await?;
            let script = Rc::new(Script::new(host.clone(), reply));
            testbackend::serve(env, listener, script, Rc::new(Stats::default()), Shutdown::never()).await;
            Ok(())
        }
    });
}

/// Registers `n` hosts `backend-1` .. `backend-n` running the shared test backend on
/// `port`, in that order (turmoil gives addresses in registration order); returns their
/// addresses.
pub fn backends(sim: &mut turmoil::Sim<'_>, seed: u64, n: usize, port: u16, reply: Reply) -> Vec<SocketAddr> {
    (1..=n)
        .map(|b| {
            let name = format!("backend-{b}");
            backend(sim, seed, &name, port, reply);
            SocketAddr::new(sim.lookup(name), port)
        })
        .collect()
}

/// The running balancer's shared state, for tests to inspect counters and health
/// between simulation steps. Replaced when the host restarts.
pub type BalancerHandle = Rc<RefCell<Option<Arc<Shared>>>>;

/// Registers host `name` running gobalancer with the RON configuration `config` (its
/// listeners and pools; one worker). A config that does not validate fails the host, and
/// so the run, with the error.
pub fn balancer(sim: &mut turmoil::Sim<'_>, seed: u64, name: &str, config: &str) -> BalancerHandle {
    let host = name.to_string();
    let config = config.to_string();
    let handle: BalancerHandle = Rc::default();
    let handle2 = handle.clone();
    sim.host(name, move || {
        let host = host.clone();
        let config = config.clone();
        let handle = handle2.clone();
        async move {
            let env = SimEnv::new(seed, &host);
            let config = Config::parse(&config, "<simulation>").map_err(|e| e.to_string())?;
            let shared = Shared::from_config(&config)?;
            *handle.borrow_mut() = Some(shared.clone());
            let worker = Worker::new(config.buffer_size, BUFFERS_KEPT_MAX);
            let mut serving = Vec::new();
            for l in &shared.listeners {
                let listener = env.bind(l.bind, BindOptions::default()).await?;
                serving.push(tcp::serve(
                    env.clone(),
                    listener,
                    l.clone(),
                    shared.conn_limit.clone(),
                    worker.clone(),
                    Shutdown::never(),
                ));
            }
            for s in serving {
                env.spawn(s);
            }
            // Health checks run on the balancer's host, as on the binary's health thread.
            for pool in &shared.pools {
                let addrs = pool.targets.iter().map(|t| t.addr).collect();
                env.spawn(health::run(env.clone(), pool.health.clone(), addrs, Shutdown::never()));
            }
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    handle
}

/// The RON text of a one-listener, one-pool balancer config on port `port` over
/// `backends`, with short timeouts that suit a simulated run.
pub fn simple_config(port: u16, algorithm: &str, backends: &[SocketAddr]) -> String {
    let list: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, a)| format!("(address: \"{a}\", name: \"backend-{}\")", i + 1))
        .collect();
    format!(
        "(timeouts: (connect: \"1s\", idle: \"5s\", drain: \"1s\"),
          listeners: [(name: \"front\", bind: \"0.0.0.0:{port}\", mode: \"tcp\", pool: \"p\")],
          pools: [(name: \"p\", algorithm: \"{algorithm}\", backends: [{}])])",
        list.join(", ")
    )
}

/// Connects to `addr`, reads one line (a `Reply::Name` backend's name), half-closes, and
/// waits for the other side to close. Bounded by `limit` overall.
pub async fn fetch_line<E: Env>(env: &E, addr: SocketAddr, limit: Duration) -> io::Result<String> {
    let deadline = env.now() + limit;
    let work = async {
        let stream = env.connect(addr).await?;
        let (mut r, mut w) = stream.into_split();
        let mut buf = IoBuf::with_capacity(LINE_BYTES_MAX);
        let line = loop {
            if let Some(pos) = buf.bytes().iter().position(|b| *b == b'\n') {
                break String::from_utf8_lossy(&buf.bytes()[..pos]).into_owned();
            }
            if buf.spare_capacity() == 0 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
            let (res, b) = r.read(buf).await;
            buf = b;
            if res? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before a full line",
                ));
            }
        };
        w.shutdown().await?;
        loop {
            buf.clear();
            let (res, b) = r.read(buf).await;
            buf = b;
            if res? == 0 {
                break;
            }
        }
        Ok(line)
    };
    gobalancer::io::timeout_at(env, deadline, work)
        .await
        .unwrap_or_else(|| Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")))
}
