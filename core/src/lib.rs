//! gobalancer: an L4/L7 load balancer built on one I/O trait.
//!
//! - [`io`]: the [`io::Env`] trait (sockets, time, randomness, spawning) and the tokio
//!   backend. The simulation's turmoil backend lives in the `gobalancer-sim` crate.
//! - [`balancer`]: the selection algorithms, pure and tested without sockets.
//! - [`config`]: the RON configuration, its validation, and the command-line overlay.
//! - [`health`]: active probes, passive ejection, slow start; publishes effective
//!   weights to the balancers.
//! - [`http`]: the sans-IO HTTP/1.1 codec (heads, chunked framing, forwarded heads)
//!   shared by the L7 proxy, the health probes and the fuzz targets.
//! - [`proxy`]: L4 TCP and L7 HTTP/1.1 forwarding, generic over [`io::Env`].
//! - [`reload`]: configuration hot reload: checked whole, applied as a new generation,
//!   removed backends drained.
//! - [`testbackend`]: the scriptable test backend shared by the demo, the tests, the
//!   simulation and `loadgen serve`.

pub mod balancer;
pub mod config;
pub mod health;
pub mod http;
pub mod io;
pub mod proxy;
pub mod reload;
pub mod testbackend;
