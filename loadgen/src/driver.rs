//! Runs a [`Plan`] on real sockets: one thread per worker, each a single-threaded tokio
//! runtime with its own [`TokioEnv`](gobalancer::io::tokio::TokioEnv) (started by the
//! core's [`spawn_worker`]), so workers share nothing but their progress counters.

use crate::client::{run_worker, EngineError, Live, Plan, WorkerResult};
use crate::report::RunInfo;
use crate::stats::Stats;
use crate::target::Protocol;
use gobalancer::io::tokio::spawn_worker;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;
use thiserror::Error;

/// A run in progress.
pub struct Running {
    workers: Vec<JoinHandle<()>>,
    results: mpsc::Receiver<Result<WorkerResult, EngineError>>,
    live: Vec<Arc<Live>>,
    plan: Arc<Plan>,
}

/// What a whole run measured.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// Every worker's measurements, merged.
    pub stats: Stats,
    /// The longest measured window of any worker.
    pub elapsed: Duration,
    /// How it ran, for the report.
    pub info: RunInfo,
}

/// A run that failed as a whole (errors of single requests are counted, not raised).
#[derive(Debug, Error)]
pub enum RunError {
    /// A worker could not start its run.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A worker thread panicked or vanished: a bug.
    #[error("a loadgen worker thread died: {0}")]
    Worker(String),
}

/// The report's description of `plan`.
pub fn run_info(plan: &Plan) -> RunInfo {
    RunInfo {
        target: plan.target.to_string(),
        protocol: match plan.target.protocol {
            Protocol::Http => "http",
            Protocol::Tcp => "tcp",
        }
        .to_string(),
        threads: plan.threads,
        connections: plan.connections,
        rate_per_s: plan.rate_per_s,
        new_conn: plan.new_conn,
        warmup_s: plan.warmup.as_secs_f64(),
    }
}

/// Starts every worker of `plan` (which must have passed [`Plan::validate`]).
pub fn start(plan: Plan) -> io::Result<Running> {
    let plan = Arc::new(plan);
    let (tx, results) = mpsc::channel();
    let mut workers = Vec::new();
    let mut live = Vec::new();
    for share in plan.shares() {
        let l = Arc::new(Live::default());
        let (tx, p, l2) = (tx.clone(), plan.clone(), l.clone());
        workers.push(spawn_worker(
            format!("loadgen-{}", share.worker),
            move |env| async move {
                // The receiver only goes away if the caller gave up on the run.
                let _ = tx.send(run_worker(env, p, share, l2).await);
            },
        )?);
        live.push(l);
    }
    Ok(Running {
        workers,
        results,
        live,
        plan,
    })
}

impl Running {
    /// Measured replies and errors so far, over all workers.
    pub fn progress(&self) -> (u64, u64) {
        self.live.iter().fold((0, 0), |(r, e), l| {
            (
                r + l.requests.load(Ordering::Relaxed),
                e + l.errors.load(Ordering::Relaxed),
            )
        })
    }

    /// True once every worker has finished.
    pub fn is_finished(&self) -> bool {
        self.workers.iter().all(JoinHandle::is_finished)
    }

    /// Waits for every worker and merges what they measured.
    pub fn wait(self) -> Result<RunResult, RunError> {
        for w in self.workers {
            w.join().map_err(|_| RunError::Worker("a worker panicked".into()))?;
        }
        let mut stats = Stats::new();
        let mut elapsed = Duration::ZERO;
        let mut seen = 0;
        for r in self.results.try_iter() {
            let r = r?;
            stats
                .merge(&r.stats)
                .map_err(|e| RunError::Worker(format!("histograms do not add: {e:?}")))?;
            elapsed = elapsed.max(r.elapsed);
            seen += 1;
        }
        if seen != self.live.len() {
            return Err(RunError::Worker(format!(
                "{} of {} workers reported",
                seen,
                self.live.len()
            )));
        }
        Ok(RunResult {
            stats,
            elapsed,
            info: run_info(&self.plan),
        })
    }
}
