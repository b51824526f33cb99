//! The I/O trait (`Env`) and its real backends.
//!
//! Everything the proxy core may observe comes through [`Env`]: sockets, spawning, time,
//! randomness and name resolution. The core is generic over it, so the same proxy code
//! runs on real sockets ([`tokio`], epoll on Linux and kqueue on the
//! BSDs and macOS; `uring`, io_uring on Linux) and on turmoil's simulated network (the
//! `gobalancer-sim` crate).
//!
//! Reads and writes use **owned buffers**: an [`IoBuf`] goes into the call and comes back
//! with the result. That is the only shape a completion-based backend (io_uring) can serve
//! without an extra copy, and readiness backends serve it for free.
//!
//! # Cancellation rule
//!
//! On a completion backend a dropped read may already have consumed bytes. The core never
//! drops an in-flight read and then keeps using the stream: when a read loses a race
//! against a timeout ([`race`]), the connection it belongs to is closed.
//!
//! # Thread per core
//!
//! Each worker runs a single-threaded runtime. Futures handed to [`Env::spawn`] need not
//! be `Send`, and per-worker state uses `Rc`/`Cell`.
#![allow(async_fn_in_trait)] // Futures are deliberately not `Send`: thread per core.

pub mod adapter;
mod buf;
mod race;
pub mod splice;
pub mod tokio;
#[cfg(target_os = "linux")]
pub mod uring;

pub use buf::IoBuf;
pub use race::{join, race, Either};
pub use splice::{Pipe, PipePool, Splice};

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// The result of an owned-buffer operation: the outcome and the buffer, returned in
/// every case so that it can go back to its pool.
pub type BufResult<T> = (io::Result<T>, IoBuf);

/// A point on an [`Env`]'s monotonic clock: the time elapsed since the environment's
/// origin. Pure code (balancer, health) takes it as an argument, so tests construct it
/// directly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(Duration);

impl Instant {
    /// The environment's origin.
    pub const ZERO: Instant = Instant(Duration::ZERO);

    /// The instant `since_origin` after the origin.
    pub const fn from_origin(since_origin: Duration) -> Instant {
        Instant(since_origin)
    }

    /// Time since the origin.
    pub const fn since_origin(self) -> Duration {
        self.0
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl std::ops::Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_add(rhs))
    }
}

/// Options for a listening socket.
#[derive(Clone, Copy, Debug)]
pub struct BindOptions {
    /// `SO_REUSEPORT`: one listener per worker on the same address; the kernel spreads
    /// connections across them.
    pub reuse_port: bool,
    /// Length of the kernel's accept queue.
    pub backlog: u32,
}

impl Default for BindOptions {
    fn default() -> Self {
        BindOptions {
            reuse_port: true,
            backlog: 1024,
        }
    }
}

/// Reading half of a stream (or a whole stream).
pub trait OwnedRead: 'static {
    /// Reads into the spare capacity of `buf` (appending after its filled bytes).
    /// `Ok(0)` means end of stream (the peer sent FIN). `buf` must have spare capacity.
    async fn read(&mut self, buf: IoBuf) -> BufResult<usize>;

    /// Zero-copy capability: a [`Splice`] from this half to `dst`, which moves bytes
    /// through a kernel pipe without copying them into user space. `None` (the default)
    /// when this pair cannot splice: the caller copies through buffers instead. On Linux
    /// the tokio backend splices between its own TCP halves (splice(2)) and the io_uring
    /// backend between its own (splice(2) on the worker, or IORING_OP_SPLICE where the
    /// kernel has it: [`uring::SpliceMethod`]); a pair of two backends, other platforms
    /// and the simulation return `None`. The copy loop a splice falls back to also takes
    /// over when a fill says [`Splice::must_copy`].
    fn splice_to<'a, W: OwnedWrite>(&'a mut self, dst: &'a mut W) -> Option<Splice<'a>> {
        let _ = dst;
        None
    }

    /// True when something is already waiting to be read: bytes, the peer's FIN, or an
    /// error such as a reset. Checked without waiting and without consuming anything.
    /// The HTTP proxy asks it of an idle pooled backend connection before reuse: a
    /// connection the backend closed, or on which it sent bytes nobody asked for, is
    /// not reused (HAProxy watches idle connections the same way). `false` (the
    /// default) where a backend cannot tell; the simulation's streams say `false`.
    ///
    /// Cheap when it can be: the tokio backend answers from the reactor's readiness
    /// (no system call unless the reactor saw the socket become readable since the
    /// last read drained it), the io_uring backend from the watch that
    /// [`watch_input`](OwnedRead::watch_input) armed; otherwise a one-byte `MSG_PEEK`.
    fn input_pending(&mut self) -> bool {
        false
    }

    /// [`input_pending`](OwnedRead::input_pending) as of now, not as of the event
    /// loop's last turn: the cheap answer first, then, where it says nothing arrived,
    /// a one-byte `MSG_PEEK` (a system call). The cheap answer lags by up to one turn
    /// of the worker's event loop (the reactor's readiness, the ring's completions), so
    /// a connection the backend closed during a busy turn still looks idle to it; the
    /// HTTP proxy asks this instead when the request could not be sent again should the
    /// connection turn out closed. The default is `input_pending`.
    fn input_pending_now(&mut self) -> bool {
        self.input_pending()
    }

    /// Starts watching for input while the stream sits idle, so that a later
    /// [`input_pending`](OwnedRead::input_pending) can answer without a system call.
    /// The HTTP proxy calls it when a backend connection goes into the pool. The next
    /// read (or splice) ends the watch. A no-op by default, and on the tokio backend,
    /// whose reactor watches every socket anyway; the io_uring backend arms a poll.
    fn watch_input(&mut self) {}
}

/// [`OwnedRead::input_pending`] for a non-blocking or blocking socket: a one-byte
/// `MSG_PEEK` that does not wait.
pub(crate) fn socket_input_pending(sock: socket2::SockRef<'_>) -> bool {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    #[cfg(target_os = "linux")]
    let res = sock.recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT);
    // Off Linux the only sockets are tokio's, which are non-blocking.
    #[cfg(not(target_os = "linux"))]
    let res = sock.peek(&mut byte);
    match res {
        // Bytes (n > 0) or the peer's FIN (0).
        Ok(_) => true,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    }
}

/// Writing half of a stream (or a whole stream).
pub trait OwnedWrite: 'static {
    /// Writes some of the unconsumed bytes of `buf` and consumes what was written.
    async fn write(&mut self, buf: IoBuf) -> BufResult<usize>;

    /// Writes every unconsumed byte of `buf`. On success `buf` comes back empty.
    async fn write_all(&mut self, mut buf: IoBuf) -> BufResult<()> {
        while !buf.is_empty() {
            let (res, b) = self.write(buf).await;
            buf = b;
            match res {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
                Ok(_) => {}
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Sends FIN: no more bytes in this direction; the other direction stays open.
    async fn shutdown(&mut self) -> io::Result<()>;

    /// Closes with RST instead of FIN (zero linger). Backends that cannot send an RST
    /// (the simulated network) close normally.
    fn abort(self)
    where
        Self: Sized;
}

/// A connected byte stream.
pub trait Stream: OwnedRead + OwnedWrite + Sized {
    /// The reading half after [`Stream::into_split`].
    type Read: OwnedRead;
    /// The writing half after [`Stream::into_split`]; aborting it resets the connection.
    type Write: OwnedWrite;

    /// Splits into halves that can be used from two futures at once.
    fn into_split(self) -> (Self::Read, Self::Write);

    /// Address of the remote end.
    fn peer_addr(&self) -> io::Result<SocketAddr>;

    /// Address of the local end.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A bound, listening socket.
pub trait Listener: 'static {
    /// The stream type of accepted connections.
    type Stream: Stream;

    /// Waits for the next connection.
    async fn accept(&mut self) -> io::Result<(Self::Stream, SocketAddr)>;

    /// The address actually bound (a port 0 bind reports the chosen port).
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// Everything the core may observe of the outside world.
///
/// Cloning is cheap; each worker holds its own clone.
pub trait Env: Clone + 'static {
    /// Connected stream.
    type Stream: Stream;
    /// Listening socket producing [`Env::Stream`]s.
    type Listener: Listener<Stream = Self::Stream>;

    /// Binds a listening socket.
    async fn bind(&self, addr: SocketAddr, opts: BindOptions) -> io::Result<Self::Listener>;

    /// Opens a connection (with `TCP_NODELAY` where the backend has it). No timeout of
    /// its own: callers race it against [`Env::sleep_until`].
    async fn connect(&self, addr: SocketAddr) -> io::Result<Self::Stream>;

    /// Resolves `name` ("host:port") to addresses.
    async fn resolve(&self, name: &str) -> io::Result<Vec<SocketAddr>>;

    /// Runs `fut` on the current worker. It need not be `Send`.
    fn spawn<F: Future<Output = ()> + 'static>(&self, fut: F);

    /// The monotonic clock.
    fn now(&self) -> Instant;

    /// Completes at `deadline` (at once if it has passed).
    async fn sleep_until(&self, deadline: Instant);

    /// Wall-clock time, for logs only; never for timeouts.
    fn wall_clock(&self) -> SystemTime;

    /// A uniformly distributed random number. Seeded by the environment: from the OS in
    /// production, from the scenario seed in the simulation.
    fn random_u64(&self) -> u64;

    /// Sleeps for `dur`.
    async fn sleep(&self, dur: Duration) {
        let deadline = self.now() + dur;
        self.sleep_until(deadline).await
    }
}

/// Runs `fut` with a deadline. `None` means the deadline passed first; `fut` has then
/// been dropped, so by the cancellation rule any stream it was reading must be closed.
pub async fn timeout_at<E: Env, F: Future>(env: &E, deadline: Instant, fut: F) -> Option<F::Output> {
    match race(fut, env.sleep_until(deadline)).await {
        Either::Left(v) => Some(v),
        Either::Right(()) => None,
    }
}

/// A small portable PRNG (SplitMix64). Written here rather than taken from `rand` so that
/// the simulation's streams never change with a dependency upgrade: a seed must replay
/// the same run for as long as the scenario file exists.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub const fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next number of the stream.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// FNV-1a, 64 bit: a fixed, seedless hash for things that must hash the same in every
/// process and on every run (seeds from host names, trace digests, client keys).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // Reference stream of SplitMix64 from seed 0 (Vigna's splitmix64.c).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn fnv_reference_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn instant_arithmetic_saturates() {
        let t = Instant::from_origin(Duration::from_secs(1));
        assert_eq!(t.saturating_duration_since(Instant::ZERO), Duration::from_secs(1));
        assert_eq!(Instant::ZERO.saturating_duration_since(t), Duration::ZERO);
        assert_eq!((t + Duration::MAX).since_origin(), Duration::MAX);
    }
}
