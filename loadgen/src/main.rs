//! The `loadgen` binary. `loadgen serve` runs test backends; the client side lands with
//! the load generator itself.

use anyhow::Context;
use clap::{Parser, Subcommand};
use gobalancer::config::parse_duration;
use gobalancer::proxy::Shutdown;
use gobalancer::testbackend::Script;
use gobalancer_loadgen::serve::{self, ServeOptions};
use std::net::SocketAddr;

#[derive(Parser, Debug)]
#[command(name = "loadgen", version, about = "Load generator and test backends for gobalancer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run test backends that reply with their own names.
    Serve {
        /// First address; backend i listens on port + i.
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: SocketAddr,
        /// Number of backends.
        #[arg(long, default_value_t = 3)]
        count: u16,
        /// Reply: http (200 with the name), name (TCP: the name and a newline), echo.
        #[arg(long, default_value = "http")]
        reply: String,
        /// Name prefix: backends are PREFIX-1, PREFIX-2, ...
        #[arg(long, default_value = "backend")]
        name: String,
        /// Delay before each reply, e.g. "20ms".
        #[arg(long, default_value = "0s")]
        latency: String,
        /// Share of connections (HTTP: requests) that fail, in percent.
        #[arg(long, default_value_t = 0)]
        fail_percent: u8,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            listen,
            count,
            reply,
            name,
            latency,
            fail_percent,
        } => {
            anyhow::ensure!(fail_percent <= 100, "--fail-percent {fail_percent}: at most 100");
            let reply = serve::parse_reply(&reply).map_err(anyhow::Error::msg)?;
            let latency = parse_duration(&latency).map_err(|e| anyhow::anyhow!("--latency {latency}: {e}"))?;
            let mut script = Script::new(String::new(), reply);
            script.latency = latency;
            script.fail_percent = fail_percent;
            let opts = ServeOptions {
                listen,
                count,
                name_prefix: name,
                script,
            };
            let (_trigger, shutdown) = Shutdown::new();
            let (addrs, thread) = serve::start(&opts, shutdown).context("loadgen serve")?;
            for a in &addrs {
                println!("serving {a}");
            }
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("the backend thread panicked"))?;
            Ok(())
        }
    }
}
