//! Health checking: active probes, passive ejection, slow start and the all-down
//! policy, for every pool.
//!
//! - `state.rs`: the pure rules (rise/fall hysteresis, ejection back-off, the ramp).
//! - `probe.rs`: TCP and HTTP probes, generic over [`Env`].
//! - `monitor.rs`: one pool's state and the effective weights it publishes to the
//!   pool's balancer, which every worker reads.
//!
//! Probes run once per process, not once per worker: [`run`] drives every probe and the
//! periodic tick of one pool on whatever `Env` it is given (the binary gives it a thread
//! of its own; the simulation runs it on the balancer's host). Workers feed connection
//! outcomes in through [`PoolMonitor::report_connect`].

mod monitor;
mod probe;
pub mod state;

pub use monitor::{BackendStatus, HealthStats, PoolMonitor};
pub use probe::{probe, ProbeResult};

use crate::io::{race, Either, Env};
use crate::proxy::Shutdown;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How often ejections are ended and slow-start ramps moved along.
pub const TICK: Duration = Duration::from_millis(100);

/// Probes every backend of `monitor` that has an active check, at its interval with
/// jitter, and ticks the monitor, until `shutdown` fires. `addrs[i]` is backend `i`'s
/// address. A reload stops one pool generation's `run` and starts the next one's (see
/// [`crate::reload::run_health`]).
pub async fn run<E: Env>(env: E, monitor: Arc<PoolMonitor>, addrs: Vec<SocketAddr>, shutdown: Shutdown) {
    for (idx, check) in monitor.checks() {
        let Some(addr) = addrs.get(idx).copied() else {
            continue;
        };
        let check = check.clone();
        let env2 = env.clone();
        let monitor2 = monitor.clone();
        let mut shutdown2 = shutdown.clone();
        env.spawn(async move {
            // A backend carried over a reload keeps its cadence: its first probe here
            // is the one the previous generation's task had scheduled, so the reload
            // leaves no gap longer than an interval. Otherwise, spread the first probes
            // over one interval so that a pool's backends are not all probed at the same
            // instant.
            let first = match monitor2.next_probe_at(idx) {
                Some(at) => at,
                None => env2.now() + jittered(&env2, check.interval, 100) / 2,
            };
            if let Either::Left(()) = race(shutdown2.wait(), env2.sleep_until(first)).await {
                return;
            }
            loop {
                // Probes start one (jittered) interval apart, however long each takes
                // (the timeout is at most the interval), so `fall` failures are seen
                // within fall x interval + timeout of a crash.
                let next = env2.now() + jittered(&env2, check.interval, check.jitter_percent);
                monitor2.schedule_probe(idx, next);
                let result = match race(shutdown2.wait(), probe(&env2, addr, &check)).await {
                    Either::Left(()) => return,
                    Either::Right(r) => r,
                };
                monitor2.record_probe(idx, &result, env2.now());
                if let Either::Left(()) = race(shutdown2.wait(), env2.sleep_until(next)).await {
                    return;
                }
            }
        });
    }
    if !monitor.needs_ticks() {
        return;
    }
    let mut shutdown = shutdown;
    loop {
        if let Either::Left(()) = race(shutdown.wait(), env.sleep(TICK)).await {
            return;
        }
        monitor.tick(env.now());
    }
}

/// `interval` ± `percent`%, drawn from the environment's random stream.
fn jittered<E: Env>(env: &E, interval: Duration, percent: u8) -> Duration {
    let span = interval.as_nanos() as u64 / 100 * u64::from(percent.min(100));
    if span == 0 {
        return interval;
    }
    let offset = env.random_u64() % (2 * span + 1);
    let nanos = (interval.as_nanos() as u64).saturating_sub(span).saturating_add(offset);
    Duration::from_nanos(nanos)
}
