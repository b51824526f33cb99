//! The tokio backend of [`Env`]: epoll on Linux, kqueue on the BSDs and macOS (through
//! tokio and mio).
//!
//! Each worker runs a current-thread runtime inside a `LocalSet`; [`TokioEnv::spawn`] is
//! `spawn_local`. Listeners are bound with socket2 so that every worker can hold its own
//! `SO_REUSEPORT` socket on the same address.
// This file is one of the two places (with main.rs) allowed to read the real clock and OS
// entropy: it is what provides them to the rest of the core.
#![allow(clippy::disallowed_methods)]

use super::adapter::{read_into, write_from};
use super::{BindOptions, BufResult, Env, Instant, IoBuf, Listener, OwnedRead, OwnedWrite, SplitMix64, Stream};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::SystemTime;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The process-wide origin of every [`TokioEnv`]'s clock, so that instants taken on
/// different workers (and by the health checker) compare meaningfully.
static ORIGIN: OnceLock<tokio::time::Instant> = OnceLock::new();

/// Real sockets and the real clock. One per worker thread.
#[derive(Clone)]
pub struct TokioEnv {
    origin: tokio::time::Instant,
    rng: Rc<RefCell<SplitMix64>>,
}

impl TokioEnv {
    /// A new environment on the process-wide clock, with a random stream seeded from the
    /// operating system.
    pub fn new() -> TokioEnv {
        TokioEnv {
            origin: *ORIGIN.get_or_init(tokio::time::Instant::now),
            rng: Rc::new(RefCell::new(SplitMix64::new(rand::random::<u64>()))),
        }
    }

    /// Wraps an already bound standard listener (see [`bind_std`]). Must be called on the
    /// worker's runtime.
    pub fn listener_from_std(&self, l: std::net::TcpListener) -> io::Result<TokioListener> {
        l.set_nonblocking(true)?;
        Ok(TokioListener {
            inner: tokio::net::TcpListener::from_std(l)?,
        })
    }
}

impl Default for TokioEnv {
    fn default() -> Self {
        TokioEnv::new()
    }
}

/// Binds a listening socket outside any runtime, so that the binary can bind every
/// listener of every worker before it starts serving: if one address is in use, nothing
/// is bound and the process exits with the error.
pub fn bind_std(addr: SocketAddr, opts: BindOptions) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))))]
    if opts.reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(opts.backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

impl Env for TokioEnv {
    type Stream = TokioStream;
    type Listener = TokioListener;

    async fn bind(&self, addr: SocketAddr, opts: BindOptions) -> io::Result<TokioListener> {
        self.listener_from_std(bind_std(addr, opts)?)
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<TokioStream> {
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(TokioStream { inner: s })
    }

    async fn resolve(&self, name: &str) -> io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host(name).await?.collect())
    }

    fn spawn<F: Future<Output = ()> + 'static>(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }

    fn now(&self) -> Instant {
        Instant::from_origin(tokio::time::Instant::now().saturating_duration_since(self.origin))
    }

    async fn sleep_until(&self, deadline: Instant) {
        tokio::time::sleep_until(self.origin + deadline.since_origin()).await
    }

    fn wall_clock(&self) -> SystemTime {
        SystemTime::now()
    }

    fn random_u64(&self) -> u64 {
        self.rng.borrow_mut().next_u64()
    }
}

/// A tokio listening socket.
pub struct TokioListener {
    inner: tokio::net::TcpListener,
}

impl Listener for TokioListener {
    type Stream = TokioStream;

    async fn accept(&mut self) -> io::Result<(TokioStream, SocketAddr)> {
        let (s, peer) = self.inner.accept().await?;
        s.set_nodelay(true)?;
        Ok((TokioStream { inner: s }, peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A tokio TCP stream.
pub struct TokioStream {
    inner: tokio::net::TcpStream,
}

impl OwnedRead for TokioStream {
    async fn read(&mut self, buf: IoBuf) -> BufResult<usize> {
        read_into(&mut self.inner, buf).await
    }

    #[cfg(target_os = "linux")]
    fn splice_to<'a, W: OwnedWrite>(&'a mut self, dst: &'a mut W) -> Option<super::Splice<'a>> {
        Some(super::Splice::tokio(&self.inner, tcp_of(dst)?))
    }
}

impl OwnedWrite for TokioStream {
    async fn write(&mut self, buf: IoBuf) -> BufResult<usize> {
        write_from(&mut self.inner, buf).await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.inner.shutdown().await
    }

    fn abort(self) {
        // A failure here only means the socket is already gone; the drop closes it anyway.
        let _ = self.inner.set_zero_linger();
    }
}

impl Stream for TokioStream {
    type Read = TokioReadHalf;
    type Write = TokioWriteHalf;

    fn into_split(self) -> (TokioReadHalf, TokioWriteHalf) {
        let (r, w) = self.inner.into_split();
        (TokioReadHalf { inner: r }, TokioWriteHalf { inner: w })
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Reading half of a [`TokioStream`].
pub struct TokioReadHalf {
    inner: OwnedReadHalf,
}

impl OwnedRead for TokioReadHalf {
    async fn read(&mut self, buf: IoBuf) -> BufResult<usize> {
        read_into(&mut self.inner, buf).await
    }

    fn input_pending(&mut self) -> bool {
        // The reactor's readiness first: mio's epoll (kqueue) registration is
        // edge-triggered, and tokio clears a socket's read readiness once a read came
        // back short or with EAGAIN, so readiness still clear means nothing arrived since
        // the last read drained the socket, and `try_io` says WouldBlock without a system
        // call. Set, it runs the peek, and a peek that says WouldBlock clears it again.
        let stream: &tokio::net::TcpStream = self.inner.as_ref();
        let peeked = stream.try_io(tokio::io::Interest::READABLE, || {
            if super::socket_input_pending(SockRef::from(stream)) {
                Ok(())
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            }
        });
        peeked.is_ok()
    }

    fn input_pending_now(&mut self) -> bool {
        // The peek sees the socket as it is; the readiness would only add a second one.
        super::socket_input_pending(SockRef::from(self.inner.as_ref()))
    }

    #[cfg(target_os = "linux")]
    fn splice_to<'a, W: OwnedWrite>(&'a mut self, dst: &'a mut W) -> Option<super::Splice<'a>> {
        Some(super::Splice::tokio(self.inner.as_ref(), tcp_of(dst)?))
    }
}

/// The tokio socket under a destination that is one of ours (a whole stream or a write
/// half); `None` for any other backend's stream.
#[cfg(target_os = "linux")]
fn tcp_of<W: OwnedWrite>(dst: &mut W) -> Option<&tokio::net::TcpStream> {
    let any: &mut dyn std::any::Any = dst;
    if any.is::<TokioWriteHalf>() {
        return any.downcast_mut::<TokioWriteHalf>().map(|w| w.inner.as_ref());
    }
    any.downcast_mut::<TokioStream>().map(|s| &s.inner)
}

/// Writing half of a [`TokioStream`].
pub struct TokioWriteHalf {
    inner: OwnedWriteHalf,
}

impl OwnedWrite for TokioWriteHalf {
    async fn write(&mut self, buf: IoBuf) -> BufResult<usize> {
        write_from(&mut self.inner, buf).await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.inner.shutdown().await
    }

    fn abort(self) {
        // Zero linger turns the final close into an RST. `forget` keeps the drop of this
        // half from sending a FIN first; the socket closes when the read half is dropped.
        let _ = SockRef::from(self.inner.as_ref()).set_linger(Some(std::time::Duration::ZERO));
        self.inner.forget();
    }
}

/// Starts a worker thread: a current-thread runtime with a `LocalSet`, so that `f`'s
/// future and everything it spawns through [`TokioEnv::spawn`] stay on this thread.
/// Used by the binary for its workers and by tests for in-process servers.
pub fn spawn_worker<F, Fut>(name: String, f: F) -> io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce(TokioEnv) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name(name).spawn(move || {
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async move {
            let env = TokioEnv::new();
            f(env).await
        });
    })
}
