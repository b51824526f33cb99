//! The turmoil backend of gobalancer's I/O trait, and the building blocks of simulated
//! runs.
//!
//! [`SimEnv`] implements [`Env`] over turmoil's simulated network and its paused tokio
//! clock, so the very proxy code that serves real sockets runs here, host by host, under
//! one seed. Randomness comes from a [`SplitMix64`] seeded from the run's seed and the
//! host's name, so a run replays bit for bit.
//!
//! What turmoil does not model (tested on real sockets instead): retransmission (a lost
//! segment stalls the stream for ever, so idle timeouts are mandatory), RST (an aborted
//! stream here closes like a dropped one), socket options, `SO_REUSEPORT`, windows,
//! splice and io_uring.
//!
//! On top of it, the scenario runner (README: "Simulation and scenarios"):
//!
//! - [`scenario`]: the RON scenario language and its checks before a run;
//! - [`hosts`]: the hosts' software (the real balancer, recorder backends, loadgen
//!   clients, the clock);
//! - [`runner`]: one seed of a scenario, faults applied between steps;
//! - [`log`]: what a run recorded, and the trace digest;
//! - [`oracle`]: invariants I1 to I6 and the scenario's expectations;
//! - [`report`]: the text report and the SVG timeline;
//! - [`shrink`]: the smallest failing scenario for a seed.
//!
//! Running a scenario file from a test:
//!
//! ```no_run
//! use gobalancer_sim::{oracle, runner, scenario};
//!
//! let p = scenario::load("scenarios/failover.ron").expect("a valid scenario");
//! let out = runner::run(&p, 1).expect("it runs");
//! let report = oracle::check(&p, &out);
//! assert!(report.violations.is_empty(), "{:?}", report.violations);
//! ```
#![allow(async_fn_in_trait)]

pub mod hosts;
pub mod io;
pub mod log;
pub mod oracle;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod shrink;
pub mod world;

pub use io::{SimEnv, SimListener, SimReadHalf, SimStream, SimWriteHalf};
