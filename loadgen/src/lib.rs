//! gobalancer's load generator and test backends.
//!
//! The client engine ([`client`]) is generic over [`gobalancer::io::Env`], like the proxy
//! core: on real sockets [`driver`] runs it on one single-threaded tokio runtime per
//! thread (thread per core, as wrk does), and the simulation drives the very same code
//! on turmoil's network. Around it:
//!
//! - [`target`]: `http://HOST:PORT/PATH` or `tcp://HOST:PORT`;
//! - [`http`]: the request bytes, and [`http::Framing`], the pure reply framer (HTTP/1.1
//!   with Content-Length, chunked or close-delimited bodies; fixed-size TCP replies);
//! - [`schedule`]: the open-loop schedule and the coordinated-omission rule (pure);
//! - [`stats`]: HdrHistograms and counters per worker, merged exactly;
//! - [`report`]: the human summary, the `--json` file and `loadgen merge`;
//! - [`plot`]: the `--plot` percentile curve (SVG);
//! - [`serve`]: `loadgen serve`, the scriptable test backend of the core crate
//!   ([`gobalancer::testbackend`]) on a range of ports.
//!
//! Running a plan against in-process backends, as the loopback tests do:
//!
//! ```no_run
//! use gobalancer_loadgen::{client::Plan, driver, http::Framing, target::Target};
//! use std::time::Duration;
//!
//! let plan = Plan {
//!     target: Target::parse("tcp://127.0.0.1:9001").unwrap(),
//!     request: vec![b'x'; 64],
//!     reply: Framing::tcp(64), // an echo backend sends the 64 bytes back
//!     connections: 4,
//!     threads: 1,
//!     duration: Duration::from_secs(1),
//!     requests: None,
//!     warmup: Duration::ZERO,
//!     rate_per_s: None,
//!     new_conn: false,
//!     timeout: Duration::from_secs(2),
//!     connect_timeout: Duration::from_secs(2),
//! };
//! let result = driver::start(plan).unwrap().wait().unwrap();
//! println!("{} replies", result.stats.requests);
//! ```

pub mod client;
pub mod driver;
pub mod http;
pub mod plot;
pub mod report;
pub mod schedule;
pub mod serve;
pub mod stats;
pub mod target;
