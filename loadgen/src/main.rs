//! The `loadgen` binary: load against a target (`loadgen [OPTIONS] URL`), test backends
//! (`loadgen serve`), and the merge of several runs' JSON results (`loadgen merge`).
//!
//! Flags follow wrk's where they overlap (`-c`, `-t`, `-d`, `-H`, `--latency`,
//! `--timeout`) and wrk2's for the open loop (`-R`/`--rate`).

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use gobalancer::config::{parse_duration, parse_size};
use gobalancer::proxy::Shutdown;
use gobalancer::testbackend::{Script, BODY_BYTES_MAX};
use gobalancer_loadgen::client::Plan;
use gobalancer_loadgen::driver::{self, Running};
use gobalancer_loadgen::http::{
    build_request, parse_header, Framing, RequestSpec, ResponseFraming, REQUEST_BODY_BYTES_MAX,
};
use gobalancer_loadgen::plot::percentile_svg;
use gobalancer_loadgen::report::{Report, MERGE_FILES_MAX, REPORT_BYTES_MAX};
use gobalancer_loadgen::serve::{self, ServeOptions};
use gobalancer_loadgen::stats::Stats;
use gobalancer_loadgen::target::{Protocol, Target};
use std::io::{IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator and test backends for gobalancer",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Examples:\n  loadgen -c 50 -t 2 -d 10s --latency http://127.0.0.1:8080/\n  loadgen --rate 20000 -c 100 -d 30s --warmup 5s --json run.json http://127.0.0.1:8080/\n  loadgen --request-bytes 128 tcp://127.0.0.1:9001      (against `loadgen serve --reply echo`)\n  loadgen merge a.json b.json --json all.json --plot all.svg"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Target: http://HOST[:PORT][/PATH] or tcp://HOST:PORT.
    #[arg(required = true)]
    target: Option<String>,
    /// Connections to keep open, over all threads.
    #[arg(short = 'c', long, default_value_t = 10)]
    connections: u32,
    /// Worker threads (one event loop each).
    #[arg(short = 't', long, default_value_t = 2)]
    threads: u32,
    /// Measured duration, after the warm-up, e.g. "10s", "1m30s". Also bounds a -n run.
    #[arg(short = 'd', long, default_value = "10s")]
    duration: String,
    /// Stop after this many measured requests.
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// Warm-up before the measurement: requests are sent but not recorded.
    #[arg(long, default_value = "0s")]
    warmup: String,
    /// Open loop: total requests per second, latency measured from each request's due
    /// time (wrk2's correction of coordinated omission). Without it: closed loop.
    #[arg(short = 'R', long)]
    rate: Option<u64>,
    /// A new connection for every request, closed after the reply (with --rate: a
    /// connection rate).
    #[arg(long)]
    new_conn: bool,
    /// HTTP: request header, "Name: value"; repeat for more.
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// HTTP: request method.
    #[arg(short = 'm', long, default_value = "GET")]
    method: String,
    /// HTTP: request body size, e.g. "1KiB" (the body is that many 'x').
    #[arg(long, default_value = "0")]
    body: String,
    /// TCP: request size.
    #[arg(long, default_value = "64")]
    request_bytes: String,
    /// TCP: reply size to wait for (default: the request size, as an echo sends).
    #[arg(long)]
    reply_bytes: Option<String>,
    /// Limit on each reply, from its send.
    #[arg(long, default_value = "2s")]
    timeout: String,
    /// Limit on each connect.
    #[arg(long, default_value = "2s")]
    connect_timeout: String,
    /// Print the detailed latency distribution.
    #[arg(long)]
    latency: bool,
    /// Write the results as JSON (for `loadgen merge` and scripts).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw the latency percentile curve as SVG.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// No progress line, even on a terminal.
    #[arg(short = 'q', long)]
    quiet: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run test backends that reply with their own names.
    Serve(ServeArgs),
    /// Merge JSON results of several runs (e.g. from several machines) into one; the
    /// latency histograms add exactly.
    Merge {
        /// JSON files written by `loadgen --json`.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write the merged results as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Draw the merged latency percentile curve as SVG.
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
        /// Print the detailed latency distribution.
        #[arg(long)]
        latency: bool,
    },
}

#[derive(Args, Debug)]
struct ServeArgs {
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
    /// HTTP: body size of each reply, e.g. "4KiB" (the name, a newline, then 'x').
    #[arg(long)]
    body_bytes: Option<String>,
    /// After this many requests (HTTP) or connections (TCP), each backend fails every
    /// later one as --fail-with says.
    #[arg(long)]
    fail_after: Option<u64>,
    /// How to fail after --fail-after: reset (RST), stall (never answer), cut (half a
    /// reply, then FIN).
    #[arg(long, default_value = "reset")]
    fail_with: String,
    /// HTTP: health endpoint path ("" for none). It answers 200 while healthy, 503
    /// after `POST /control/health/down` (until `POST /control/health/up`) or after
    /// --health-fail-after requests.
    #[arg(long, default_value = "/health")]
    health_path: String,
    /// HTTP: the health endpoint turns to 503 after this many requests.
    #[arg(long)]
    health_fail_after: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Serve(args)) => serve_main(args),
        Some(Command::Merge {
            files,
            json,
            plot,
            latency,
        }) => merge_main(&files, json.as_deref(), plot.as_deref(), latency),
        None => run_main(cli.run),
    }
}

fn duration_flag(flag: &str, v: &str) -> anyhow::Result<Duration> {
    parse_duration(v).map_err(|e| anyhow::anyhow!("{flag} {v}: {e}"))
}

fn size_flag(flag: &str, v: &str) -> anyhow::Result<usize> {
    parse_size(v).map_err(|e| anyhow::anyhow!("{flag} {v}: {e}"))
}

fn plan_from(args: &RunArgs) -> anyhow::Result<Plan> {
    let text = args.target.as_deref().context("a target URL is required")?;
    let target = Target::parse(text).map_err(anyhow::Error::msg)?;
    let (request, reply) = match target.protocol {
        Protocol::Http => {
            let headers = args
                .headers
                .iter()
                .map(|h| parse_header(h))
                .collect::<Result<Vec<_>, _>>()?;
            let spec = RequestSpec {
                method: args.method.clone(),
                path: target.path.clone(),
                host: target.host_header.clone(),
                headers,
                body_bytes: size_flag("--body", &args.body)?,
                close: args.new_conn,
            };
            let head_request = spec.method.eq_ignore_ascii_case("HEAD");
            (build_request(&spec)?, Framing::Http(ResponseFraming::new(head_request)))
        }
        Protocol::Tcp => {
            let req = size_flag("--request-bytes", &args.request_bytes)?;
            if req == 0 || req > REQUEST_BODY_BYTES_MAX {
                bail!("--request-bytes {req}: expected 1 to {REQUEST_BODY_BYTES_MAX}");
            }
            let rep = match &args.reply_bytes {
                Some(v) => size_flag("--reply-bytes", v)?,
                None => req,
            };
            (vec![b'x'; req], Framing::tcp(rep as u64))
        }
    };
    let plan = Plan {
        target,
        request,
        reply,
        connections: args.connections,
        threads: args.threads,
        duration: duration_flag("-d", &args.duration)?,
        requests: args.requests,
        warmup: duration_flag("--warmup", &args.warmup)?,
        rate_per_s: args.rate,
        new_conn: args.new_conn,
        timeout: duration_flag("--timeout", &args.timeout)?,
        connect_timeout: duration_flag("--connect-timeout", &args.connect_timeout)?,
    };
    plan.validate()?;
    Ok(plan)
}

fn run_main(args: RunArgs) -> anyhow::Result<()> {
    let plan = plan_from(&args)?;
    let (warmup, duration) = (plan.warmup, plan.duration);
    println!(
        "Running {:?} test @ {} ({} threads, {} connections{})",
        duration,
        plan.target,
        plan.threads,
        plan.connections,
        if warmup.is_zero() {
            String::new()
        } else {
            format!(", {warmup:?} warm-up")
        }
    );
    let running = driver::start(plan).context("cannot start the worker threads")?;
    let show = !args.quiet && std::io::stderr().is_terminal();
    wait_with_progress(&running, show, warmup, duration);
    let result = running.wait()?;
    let report = Report::new(result.info, &result.stats, result.elapsed)?;
    finish(
        &report,
        &result.stats,
        args.json.as_deref(),
        args.plot.as_deref(),
        args.latency,
    )
}

/// Prints a progress line on stderr every second while the run goes (when `show`), and
/// returns once every worker has finished.
// The binary may read the real clock: this is a display, not a measurement.
#[allow(clippy::disallowed_methods)]
fn wait_with_progress(running: &Running, show: bool, warmup: Duration, duration: Duration) {
    /// How often to check whether the workers have finished.
    const POLL: Duration = Duration::from_millis(50);
    /// How often to redraw the progress line.
    const REDRAW: Duration = Duration::from_secs(1);
    let started = std::time::Instant::now();
    let mut last_draw = started;
    let mut last_count = 0;
    let total = warmup + duration;
    while !running.is_finished() {
        std::thread::sleep(POLL);
        if !show || last_draw.elapsed() < REDRAW {
            continue;
        }
        let now = std::time::Instant::now();
        let (requests, errors) = running.progress();
        let rate = (requests - last_count.min(requests)) as f64 / now.duration_since(last_draw).as_secs_f64();
        let t = now.duration_since(started);
        let phase = if t < warmup { "warm-up" } else { "measuring" };
        let width = 30usize;
        let done = ((t.as_secs_f64() / total.as_secs_f64().max(1e-9)) * width as f64).min(width as f64) as usize;
        eprint!(
            "\r[{}{}] {:>5.0}s/{:.0}s {phase:<9} {requests} replies, {rate:.0}/s, {errors} errors   ",
            "#".repeat(done),
            " ".repeat(width - done),
            t.as_secs_f64(),
            total.as_secs_f64()
        );
        let _ = std::io::stderr().flush();
        last_draw = now;
        last_count = requests;
    }
    if show {
        eprint!("\r{}\r", " ".repeat(100));
    }
}

fn finish(
    report: &Report,
    stats: &Stats,
    json: Option<&Path>,
    plot: Option<&Path>,
    latency: bool,
) -> anyhow::Result<()> {
    print!("{}", report.human(Some(stats), latency));
    if let Some(path) = json {
        std::fs::write(path, report.to_json()? + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = plot {
        let title = format!(
            "{}: {:.0} req/s, p99 {}",
            report.run.target,
            report.requests_per_s,
            gobalancer_loadgen::report::fmt_ns(report.latency_ns.p99)
        );
        std::fs::write(path, percentile_svg(&title, &stats.latency))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn merge_main(files: &[PathBuf], json: Option<&Path>, plot: Option<&Path>, latency: bool) -> anyhow::Result<()> {
    if files.len() > MERGE_FILES_MAX {
        bail!("{} files; the limit is {MERGE_FILES_MAX}", files.len());
    }
    let mut reports = Vec::with_capacity(files.len());
    for f in files {
        let mut text = String::new();
        std::fs::File::open(f)
            .with_context(|| format!("opening {}", f.display()))?
            .take(REPORT_BYTES_MAX)
            .read_to_string(&mut text)
            .with_context(|| format!("reading {}", f.display()))?;
        reports.push(Report::from_json(&text).with_context(|| format!("{}", f.display()))?);
    }
    let merged = Report::merge(&reports)?;
    let stats = merged.stats()?;
    finish(&merged, &stats, json, plot, latency)
}

fn serve_main(args: ServeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.fail_percent <= 100,
        "--fail-percent {}: at most 100",
        args.fail_percent
    );
    let reply = serve::parse_reply(&args.reply).map_err(anyhow::Error::msg)?;
    let mut script = Script::new(String::new(), reply);
    script.latency = duration_flag("--latency", &args.latency)?;
    script.fail_percent = args.fail_percent;
    if let Some(b) = &args.body_bytes {
        let n = size_flag("--body-bytes", b)?;
        anyhow::ensure!(n <= BODY_BYTES_MAX, "--body-bytes {b}: at most {BODY_BYTES_MAX} bytes");
        script.body_bytes = Some(n);
    }
    script.fail_after = args.fail_after;
    script.fail_with = serve::parse_fail_with(&args.fail_with).map_err(anyhow::Error::msg)?;
    script.health_path = match args.health_path.as_str() {
        "" => None,
        p if p.starts_with('/') => Some(p.to_string()),
        p => bail!("--health-path {p:?}: a path starts with '/'"),
    };
    script.health_fail_after = args.health_fail_after;
    let opts = ServeOptions {
        listen: args.listen,
        count: args.count,
        name_prefix: args.name,
        script,
    };
    let (_trigger, shutdown) = Shutdown::new();
    let (addrs, thread) = serve::start(&opts, shutdown).context("loadgen serve")?;
    for a in &addrs {
        println!("serving {a}");
    }
    // Scripts wait for these lines before they start load.
    let _ = std::io::stdout().flush();
    thread
        .join()
        .map_err(|_| anyhow::anyhow!("the backend thread panicked"))?;
    Ok(())
}
