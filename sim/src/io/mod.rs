//! [`SimEnv`]: the turmoil backend of gobalancer's I/O trait. Like the real backends under
//! `core/src/io/`, it is the one place in this crate that reads a clock (turmoil's paused
//! tokio clock, never the real one).
#![allow(async_fn_in_trait)]

use gobalancer::io::adapter::{read_into, write_from};
use gobalancer::io::{
    fnv1a64, BindOptions, BufResult, Env, Instant, IoBuf, Listener, OwnedRead, OwnedWrite, SplitMix64, Stream,
};
use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;

/// The simulated environment of one host.
#[derive(Clone)]
pub struct SimEnv {
    origin: tokio::time::Instant,
    rng: Rc<RefCell<SplitMix64>>,
}

impl SimEnv {
    /// The environment of host `host` in a run seeded with `seed`. Must be created inside
    /// the host's software (its clock is the host's simulated clock).
    pub fn new(seed: u64, host: &str) -> SimEnv {
        // The clock is turmoil's paused tokio clock, not the real one.
        #[allow(clippy::disallowed_methods)]
        let origin = tokio::time::Instant::now();
        // Different hosts get unrelated streams; the same host in the same run always
        // gets the same one.
        let host_seed = seed ^ fnv1a64(host.as_bytes()).rotate_left(17);
        SimEnv {
            origin,
            rng: Rc::new(RefCell::new(SplitMix64::new(host_seed))),
        }
    }
}

impl Env for SimEnv {
    type Stream = SimStream;
    type Listener = SimListener;

    async fn bind(&self, addr: SocketAddr, _opts: BindOptions) -> io::Result<SimListener> {
        // turmoil binds only the unspecified address or loopback: a host has one address.
        let addr = if addr.ip().is_loopback() {
            addr
        } else {
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()))
        };
        Ok(SimListener {
            inner: turmoil::net::TcpListener::bind(addr).await?,
        })
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<SimStream> {
        Ok(SimStream {
            inner: turmoil::net::TcpStream::connect(addr).await?,
        })
    }

    async fn resolve(&self, name: &str) -> io::Result<Vec<SocketAddr>> {
        let (host, port) = name
            .rsplit_once(':')
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: expected HOST:PORT")))?;
        let port: u16 = port
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{name}: bad port")))?;
        Ok(vec![SocketAddr::new(turmoil::lookup(host), port)])
    }

    fn spawn<F: Future<Output = ()> + 'static>(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }

    fn now(&self) -> Instant {
        #[allow(clippy::disallowed_methods)] // turmoil's paused clock
        let now = tokio::time::Instant::now();
        Instant::from_origin(now.saturating_duration_since(self.origin))
    }

    async fn sleep_until(&self, deadline: Instant) {
        tokio::time::sleep_until(self.origin + deadline.since_origin()).await
    }

    fn wall_clock(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + turmoil::since_epoch().unwrap_or(Duration::ZERO)
    }

    fn random_u64(&self) -> u64 {
        self.rng.borrow_mut().next_u64()
    }
}

/// A simulated listening socket.
pub struct SimListener {
    inner: turmoil::net::TcpListener,
}

impl Listener for SimListener {
    type Stream = SimStream;

    async fn accept(&mut self) -> io::Result<(SimStream, SocketAddr)> {
        let (s, peer) = self.inner.accept().await?;
        Ok((SimStream { inner: s }, peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A simulated TCP stream.
pub struct SimStream {
    inner: turmoil::net::TcpStream,
}

impl OwnedRead for SimStream {
    async fn read(&mut self, buf: IoBuf) -> BufResult<usize> {
        read_into(&mut self.inner, buf).await
    }
}

impl OwnedWrite for SimStream {
    async fn write(&mut self, buf: IoBuf) -> BufResult<usize> {
        write_from(&mut self.inner, buf).await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.inner.shutdown().await
    }

    fn abort(self) {
        // turmoil has no RST: the stream closes as if dropped.
    }
}

impl Stream for SimStream {
    type Read = SimReadHalf;
    type Write = SimWriteHalf;

    fn into_split(self) -> (SimReadHalf, SimWriteHalf) {
        let (r, w) = self.inner.into_split();
        (SimReadHalf { inner: r }, SimWriteHalf { inner: w })
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Reading half of a [`SimStream`].
pub struct SimReadHalf {
    inner: turmoil::net::tcp::OwnedReadHalf,
}

impl OwnedRead for SimReadHalf {
    async fn read(&mut self, buf: IoBuf) -> BufResult<usize> {
        read_into(&mut self.inner, buf).await
    }
}

/// Writing half of a [`SimStream`].
pub struct SimWriteHalf {
    inner: turmoil::net::tcp::OwnedWriteHalf,
}

impl OwnedWrite for SimWriteHalf {
    async fn write(&mut self, buf: IoBuf) -> BufResult<usize> {
        write_from(&mut self.inner, buf).await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.inner.shutdown().await
    }

    fn abort(self) {
        // turmoil has no RST: the stream closes as if dropped.
    }
}
