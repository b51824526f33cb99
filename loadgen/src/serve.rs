//! `loadgen serve`: test backends on a range of ports.
//!
//! Every backend runs the core's scriptable test backend ([`gobalancer::testbackend`]),
//! so what a benchmark or a deployment test talks to is exactly what the integration
//! tests and the simulation talk to. All backends of one `serve` share one thread: a
//! backend is cheap, and a benchmark on a small machine should leave the cores to the
//! proxy and the load generator.

use gobalancer::io::tokio::{bind_std, spawn_worker};
use gobalancer::io::BindOptions;
use gobalancer::proxy::Shutdown;
use gobalancer::testbackend::{self, FailWith, Reply, Script, Stats};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::thread::JoinHandle;

/// What to serve.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// First address; backend `i` listens on its port + i.
    pub listen: SocketAddr,
    /// How many backends.
    pub count: u16,
    /// Backend `i` is named `{name_prefix}-{i+1}`.
    pub name_prefix: String,
    /// Script shared by every backend (its name is replaced).
    pub script: Script,
}

/// Binds every backend's port (all or nothing), then serves them on one thread until
/// `shutdown` fires. Returns the bound addresses and the thread.
pub fn start(opts: &ServeOptions, shutdown: Shutdown) -> io::Result<(Vec<SocketAddr>, JoinHandle<()>)> {
    let mut bound = Vec::new();
    for i in 0..opts.count {
        let port = opts.listen.port().checked_add(i).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "--count {} from port {} runs past 65535",
                    opts.count,
                    opts.listen.port()
                ),
            )
        })?;
        let addr = SocketAddr::new(opts.listen.ip(), port);
        let sock = bind_std(
            addr,
            BindOptions {
                reuse_port: false,
                backlog: 1024,
            },
        )
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        let mut script = opts.script.clone();
        script.name = format!("{}-{}", opts.name_prefix, i + 1);
        bound.push((sock, script));
    }
    let addrs = bound
        .iter()
        .map(|(s, _)| s.local_addr())
        .collect::<io::Result<Vec<_>>>()?;
    let thread = spawn_worker("loadgen-serve".into(), move |env| async move {
        let mut tasks = Vec::new();
        for (sock, script) in bound {
            match env.listener_from_std(sock) {
                Ok(l) => tasks.push(tokio::task::spawn_local(testbackend::serve(
                    env.clone(),
                    l,
                    Rc::new(script),
                    Rc::new(Stats::default()),
                    shutdown.clone(),
                ))),
                Err(e) => tracing::error!(error = %e, "cannot register a test backend"),
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    })?;
    Ok((addrs, thread))
}

/// Parses `http`, `name` or `echo`.
pub fn parse_reply(s: &str) -> Result<Reply, String> {
    match s {
        "http" => Ok(Reply::Http),
        "name" => Ok(Reply::Name),
        "echo" => Ok(Reply::Echo),
        other => Err(format!("unknown reply {other:?}: expected http, name or echo")),
    }
}

/// Parses `reset`, `stall` or `cut`.
pub fn parse_fail_with(s: &str) -> Result<FailWith, String> {
    match s {
        "reset" => Ok(FailWith::Reset),
        "stall" => Ok(FailWith::Stall),
        "cut" => Ok(FailWith::Cut),
        other => Err(format!("unknown failure {other:?}: expected reset, stall or cut")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies_and_failures() {
        assert_eq!(parse_reply("echo"), Ok(Reply::Echo));
        assert!(parse_reply("tls").is_err());
        assert_eq!(parse_fail_with("stall"), Ok(FailWith::Stall));
        assert!(parse_fail_with("explode").is_err());
    }
}
