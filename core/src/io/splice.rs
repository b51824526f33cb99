//! Zero-copy forwarding: splice(2) from a socket into a pipe and from the pipe into
//! another socket, so that the bytes never cross into user space.
//!
//! A stream half offers it as a capability: [`OwnedRead::splice_to`](super::OwnedRead::splice_to)
//! returns a [`Splice`] between it and a destination half, or `None` when the pair
//! cannot splice (another backend, another platform, the simulation): the caller then
//! copies. On Linux both real backends splice: the tokio (epoll) backend with splice(2)
//! when the socket is ready, the io_uring backend with splice(2) when its ring says the
//! socket is ready, or with IORING_OP_SPLICE (see [`Splice`]).
//!
//! Pipes come from a bounded per-worker [`PipePool`]. Bytes in a pipe belong to the
//! connection until they are written: a pipe goes back to the pool only when empty, and
//! one dropped with bytes in it is closed (its connection is being torn down anyway).
//! So is a pipe whose io_uring splice was abandoned in flight ([`Pipe::in_flight`]): the
//! kernel may still move bytes into or out of it after the connection is gone.

use std::cell::{Cell, RefCell};
use std::io;
#[cfg(target_os = "linux")]
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::rc::Rc;

/// Pipes are never shrunk below this, Linux's default pipe size (16 pages): with the
/// default 16 KiB buffer, 1 GiB over one connection ran at 0.46 of direct loopback
/// through 16 KiB pipes and at 0.82 through 64 KiB ones (bench/RESULTS.md). A pipe holds
/// references to the socket's pages, not a copy of them.
pub const PIPE_SIZE_MIN: usize = 64 * 1024;

/// A kernel pipe used as the intermediate buffer of a splice, with the count of bytes
/// spliced into it and not yet out.
#[derive(Debug)]
pub struct Pipe {
    /// The read end. Shared (`Rc`) so that an io_uring splice keeps it open until its
    /// completion, even when the pipe itself is dropped meanwhile: the kernel looks the
    /// descriptor up when the operation runs, and a number closed and reused by then
    /// would splice another file's bytes.
    #[cfg(target_os = "linux")]
    read: Rc<OwnedFd>,
    /// The write end, shared for the same reason.
    #[cfg(target_os = "linux")]
    write: Rc<OwnedFd>,
    /// Bytes in the pipe, not yet spliced out.
    pending: usize,
    /// An io_uring splice into or out of the pipe was started and its completion not
    /// yet collected. Still set when the pipe comes back: the operation was abandoned
    /// and may move bytes later, so the pipe is never reused.
    in_flight: bool,
    /// How many bytes the pipe holds.
    capacity: usize,
    /// The pool's live-pipe counter, decremented when the pipe is closed.
    live: Rc<Cell<usize>>,
}

impl Pipe {
    /// Bytes spliced in and not yet out.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// How many bytes the pipe holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// True while an io_uring splice into or out of the pipe has not completed (see
    /// [`PipePool::give`]); always false on the tokio backend, whose splices are
    /// synchronous system calls.
    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// A new nonblocking pipe of (about) `size` bytes.
    #[cfg(target_os = "linux")]
    fn open(size: usize, live: Rc<Cell<usize>>) -> io::Result<Pipe> {
        use std::os::fd::FromRawFd;
        let mut fds = [-1 as libc::c_int; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        if size > PIPE_SIZE_MIN {
            let want = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
            // SAFETY: fcntl on a descriptor we own; F_SETPIPE_SZ takes an int argument.
            // A failure (above /proc/sys/fs/pipe-max-size for an unprivileged process)
            // leaves the default size, which still works.
            unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
        }
        // SAFETY: fcntl on a descriptor we own; F_GETPIPE_SZ takes no argument.
        let got = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        if got <= 0 {
            return Err(io::Error::last_os_error());
        }
        live.set(live.get() + 1);
        Ok(Pipe {
            read: Rc::new(read),
            write: Rc::new(write),
            pending: 0,
            in_flight: false,
            capacity: usize::try_from(got).unwrap_or(size),
            live,
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn open(_size: usize, _live: Rc<Cell<usize>>) -> io::Result<Pipe> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "splice exists on Linux only",
        ))
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        self.live.set(self.live.get().saturating_sub(1));
    }
}

/// A bounded per-worker pool of pipes. At most `max` pipes exist at once (in use and
/// idle together); when none is free, [`PipePool::take`] says so and the caller copies.
#[derive(Debug)]
pub struct PipePool {
    idle: RefCell<Vec<Pipe>>,
    live: Rc<Cell<usize>>,
    max: usize,
    size: usize,
}

impl PipePool {
    /// A pool of at most `max` pipes of `size` bytes each (at least [`PIPE_SIZE_MIN`]:
    /// smaller sizes keep the kernel's default).
    pub fn new(max: usize, size: usize) -> PipePool {
        PipePool {
            idle: RefCell::new(Vec::new()),
            live: Rc::new(Cell::new(0)),
            max,
            size,
        }
    }

    /// An empty pipe: an idle one, or a new one while fewer than the maximum exist.
    /// `None` when the pool is exhausted or a pipe cannot be created.
    pub fn take(&self) -> Option<Pipe> {
        if let Some(p) = self.idle.borrow_mut().pop() {
            return Some(p);
        }
        if self.live.get() >= self.max {
            return None;
        }
        match Pipe::open(self.size, self.live.clone()) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::debug!(error = %e, "cannot create a pipe for splicing; copying");
                None
            }
        }
    }

    /// Gives a pipe back: kept when it is empty, closed when it still holds bytes (they
    /// belonged to a connection that is gone) or when an io_uring splice on it was
    /// abandoned in flight (it may still move bytes of that connection).
    pub fn give(&self, pipe: Pipe) {
        if pipe.pending == 0 && !pipe.in_flight && Rc::ptr_eq(&pipe.live, &self.live) {
            self.idle.borrow_mut().push(pipe);
        }
    }

    /// Pipes open now, in use and idle.
    pub fn live(&self) -> usize {
        self.live.get()
    }

    /// Idle pipes in the pool.
    pub fn idle(&self) -> usize {
        self.idle.borrow().len()
    }
}

/// A splice between a source half and a destination half, borrowed from both (see
/// [`OwnedRead::splice_to`](super::OwnedRead::splice_to)).
///
/// - **tokio (epoll)**: splice(2) with `SPLICE_F_NONBLOCK` on the nonblocking sockets,
///   waiting for readiness on EAGAIN.
/// - **io_uring**, as the worker's [`SpliceMethod`](super::uring::SpliceMethod) says. The
///   two sockets are put in O_NONBLOCK mode when they first splice, every splice carries
///   `SPLICE_F_NONBLOCK`, and an EAGAIN waits for readiness with IORING_OP_POLL_ADD
///   (POLLIN to fill, POLLOUT to flush) before the next try.
///   - `Syscall` (the default): splice(2) on the worker thread, as on epoll but with the
///     ring's poll for readiness. Should O_NONBLOCK not be settable, the splice uses `Op`
///     where the ring has IORING_OP_SPLICE, and the caller copies where it has not.
///   - `Op`: IORING_OP_SPLICE. The kernel always runs it on an io-wq worker thread, where
///     a splice from a blocking socket would wait for data and hold that thread for as
///     long as the connection idles (hence O_NONBLOCK). A flush that moved less than the
///     pipe held polls before the next one. A fill is hard-linked to a flush of the same
///     pipe load (IOSQE_IO_HARDLINK), which io-wq runs right after it: one round trip
///     through the ring per load instead of two, and the next [`Splice::flush`] reports
///     what that linked flush moved. Should O_NONBLOCK not be settable, every splice
///     polls first and none is linked.
pub struct Splice<'a> {
    inner: Inner<'a>,
}

#[cfg(target_os = "linux")]
enum Inner<'a> {
    Tokio {
        src: &'a tokio::net::TcpStream,
        dst: &'a tokio::net::TcpStream,
    },
    Uring {
        ops: super::uring::UringSplice<'a>,
        /// splice(2) on this thread (`Syscall`, with both sockets in O_NONBLOCK mode)
        /// rather than IORING_OP_SPLICE.
        now: bool,
        /// Wait for the source to be readable before the next fill.
        poll_src: bool,
        /// Wait for the destination to be writable before the next flush.
        poll_dst: bool,
        /// What the flush linked to the last fill did, for the next [`Splice::flush`]
        /// to report.
        linked: Option<io::Result<usize>>,
    },
}

#[cfg(not(target_os = "linux"))]
struct Inner<'a> {
    never: std::convert::Infallible,
    _life: std::marker::PhantomData<&'a ()>,
}

#[cfg(target_os = "linux")]
fn is_eagain(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Linux's SIOCATMARK (`asm-generic/sockios.h`), which the libc crate does not export for
/// Linux.
#[cfg(target_os = "linux")]
const SIOCATMARK: libc::c_ulong = 0x8905;

/// Whether the next byte to read from the socket `fd` is TCP urgent data (MSG_OOB).
/// splice(2) stops at that mark and says EAGAIN for as long as it is there (0 once the
/// sender's FIN has come in), while the socket stays readable and the bytes after the
/// mark wait; a plain read steps over the urgent byte. So a fill that says EAGAIN or 0
/// asks this, and at the mark returns [`Splice::must_copy`]'s error.
#[cfg(target_os = "linux")]
pub(crate) fn at_urgent_mark(fd: BorrowedFd<'_>) -> bool {
    let mut at: libc::c_int = 0;
    // SAFETY: SIOCATMARK writes one int through the pointer, which points to `at`; the
    // descriptor is open (borrowed).
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCATMARK as _, &mut at as *mut libc::c_int) };
    r == 0 && at != 0
}

/// The error of a fill whose source is at TCP urgent data (see [`at_urgent_mark`]).
#[cfg(target_os = "linux")]
fn urgent_mark() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "the source is at TCP urgent data, which splice cannot pass: copy",
    )
}

/// Takes in what one io_uring splice from the source into the empty `pipe` said: `Some`
/// to return (bytes moved, FIN, or an error), `None` to try again, after waiting for the
/// source (`poll` set) when it said EAGAIN. `at_mark` says whether the source is at TCP
/// urgent data ([`at_urgent_mark`]).
#[cfg(target_os = "linux")]
fn filled(
    res: io::Result<usize>,
    pipe: &mut Pipe,
    poll: &mut bool,
    at_mark: impl FnOnce() -> bool,
) -> Option<io::Result<usize>> {
    match res {
        Ok(n) => {
            pipe.pending += n;
            *poll = false;
            Some(Ok(n))
        }
        // The pipe is empty, so EAGAIN means the socket has nothing, or is at TCP urgent
        // data, where splice never goes on.
        Err(e) if is_eagain(&e) && at_mark() => Some(Err(urgent_mark())),
        Err(e) if is_eagain(&e) => {
            *poll = true;
            None
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
        Err(e) => Some(Err(e)),
    }
}

/// Takes in what one io_uring splice of `len` bytes from `pipe` into the destination
/// said, as [`filled`] does. With `short_waits`, a short one waits for the destination
/// (`poll`) before the next: for IORING_OP_SPLICE, where a try costs a round trip through
/// an io-wq thread; not for splice(2), where it costs one system call and the reader, on
/// another core, has often made room by then.
#[cfg(target_os = "linux")]
fn flushed(
    res: io::Result<usize>,
    pipe: &mut Pipe,
    len: usize,
    short_waits: bool,
    poll: &mut bool,
) -> Option<io::Result<usize>> {
    match res {
        Ok(0) => Some(Err(io::ErrorKind::WriteZero.into())),
        Ok(n) => {
            pipe.pending = pipe.pending.saturating_sub(n);
            *poll = short_waits && n < len;
            Some(Ok(n))
        }
        // The pipe holds bytes, so EAGAIN means the socket is full.
        Err(e) if is_eagain(&e) => {
            *poll = true;
            None
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
        Err(e) => Some(Err(e)),
    }
}

impl<'a> Splice<'a> {
    /// A splice from `src` to `dst` (tokio sockets).
    #[cfg(target_os = "linux")]
    pub(crate) fn tokio(src: &'a tokio::net::TcpStream, dst: &'a tokio::net::TcpStream) -> Splice<'a> {
        Splice {
            inner: Inner::Tokio { src, dst },
        }
    }

    /// A splice through the io_uring driver (see [`super::uring`]).
    #[cfg(target_os = "linux")]
    /// `now`: with splice(2) on this thread (both sockets are in O_NONBLOCK mode), else
    /// with IORING_OP_SPLICE.
    pub(crate) fn uring(ops: super::uring::UringSplice<'a>, now: bool) -> Splice<'a> {
        Splice {
            inner: Inner::Uring {
                ops,
                now,
                poll_src: false,
                poll_dst: false,
                linked: None,
            },
        }
    }

    /// True for the error of a fill that cannot splice on but loses nothing by stopping:
    /// the pipe is empty and the source's bytes are still in its socket, so the caller
    /// copies the rest of the direction instead. That is the case when the source's next
    /// byte is TCP urgent data (MSG_OOB), which splice(2) never passes; a plain read steps
    /// over the urgent byte, as it does for every proxy that does not forward
    /// out-of-band data. Also ENOSYS and EOPNOTSUPP (splice(2) filtered out or not
    /// offered for these files).
    pub fn must_copy(e: &io::Error) -> bool {
        e.kind() == io::ErrorKind::Unsupported
    }

    /// Moves bytes from the source into `pipe`, which must be empty, waiting until the
    /// source is readable. `Ok(0)`: the source sent FIN; [`Splice::must_copy`]: copy
    /// instead.
    pub async fn fill(&mut self, pipe: &mut Pipe) -> io::Result<usize> {
        self.fill_at_most(pipe, usize::MAX).await
    }

    /// As [`Splice::fill`], moving at most `max` bytes (at least 1): a body of known
    /// length is spliced without taking a byte of what follows it from the source.
    pub async fn fill_at_most(&mut self, pipe: &mut Pipe, max: usize) -> io::Result<usize> {
        #[cfg(target_os = "linux")]
        {
            if pipe.pending != 0 || pipe.in_flight || max == 0 {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "fill of a non-empty pipe"));
            }
            // A splice whose source always has bytes and whose destination always has
            // room never waits: spend the task's budget, so that the worker's other
            // connections (and, on io_uring, the ring's completions) get their turn.
            tokio::task::coop::consume_budget().await;
            let res = match &mut self.inner {
                Inner::Tokio { src, .. } => tokio_fill(src, pipe, max).await,
                Inner::Uring {
                    ops,
                    now: true,
                    poll_src,
                    ..
                } => loop {
                    if *poll_src {
                        // Dropping this wait moves no byte: the pipe stays reusable.
                        ops.src_readable().await?;
                    }
                    let res = ops.fill_now(&pipe.write, pipe.capacity.min(max));
                    if let Some(done) = filled(res, pipe, poll_src, || ops.src_at_urgent_mark()) {
                        break done;
                    }
                },
                Inner::Uring {
                    ops,
                    now: false,
                    poll_src,
                    poll_dst,
                    linked,
                } => {
                    let len = pipe.capacity.min(max);
                    *linked = None;
                    loop {
                        if *poll_src || !ops.src_nonblocking() {
                            // Dropping this wait moves no byte: the pipe stays reusable.
                            ops.src_readable().await?;
                        }
                        // Link a flush when it cannot wait on an io-wq thread, and when
                        // the destination is not known to be full.
                        let link = !*poll_dst && ops.dst_nonblocking();
                        pipe.in_flight = true;
                        let (res, out) = if link {
                            let (res, out) = ops.through_pipe(&pipe.write, &pipe.read, len).await;
                            (res, Some(out))
                        } else {
                            (ops.fill_pipe(&pipe.write, len).await, None)
                        };
                        // Not reached if the future is dropped at the await above: the
                        // flag then stays set and the pool closes the pipe.
                        pipe.in_flight = false;
                        if let Some(done) = filled(res, pipe, poll_src, || ops.src_at_urgent_mark()) {
                            if done.is_ok() {
                                *linked = out;
                            }
                            break done;
                        }
                    }
                }
            };
            // At the urgent mark, splice(2) also says 0 once the sender's FIN is in: the
            // bytes after the mark are still there.
            if matches!(res, Ok(0)) && self.src_at_urgent_mark() {
                return Err(urgent_mark());
            }
            res
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (pipe, max);
            match self.inner.never {}
        }
    }

    /// Whether the source's next byte is TCP urgent data ([`at_urgent_mark`]).
    #[cfg(target_os = "linux")]
    fn src_at_urgent_mark(&self) -> bool {
        match &self.inner {
            Inner::Tokio { src, .. } => at_urgent_mark(src.as_fd()),
            Inner::Uring { ops, .. } => ops.src_at_urgent_mark(),
        }
    }

    /// Moves some of the bytes in `pipe` to the destination, waiting until it is
    /// writable; returns how many moved (at least one).
    pub async fn flush(&mut self, pipe: &mut Pipe) -> io::Result<usize> {
        #[cfg(target_os = "linux")]
        {
            if pipe.pending == 0 || pipe.in_flight {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "flush of an empty pipe"));
            }
            // As in a fill: a flush that never waits spends the task's budget.
            tokio::task::coop::consume_budget().await;
            match &mut self.inner {
                Inner::Tokio { dst, .. } => tokio_flush(dst, pipe).await,
                Inner::Uring {
                    ops,
                    now: true,
                    poll_dst,
                    ..
                } => loop {
                    if *poll_dst {
                        ops.dst_writable().await?;
                    }
                    let len = pipe.pending;
                    let res = ops.drain_now(&pipe.read, len);
                    if let Some(done) = flushed(res, pipe, len, false, poll_dst) {
                        return done;
                    }
                },
                Inner::Uring {
                    ops,
                    now: false,
                    poll_dst,
                    linked,
                    ..
                } => loop {
                    let len = pipe.pending;
                    match linked.take() {
                        // The flush linked to the fill moved these bytes already.
                        Some(Ok(n)) if n > 0 => {
                            let n = n.min(len);
                            pipe.pending -= n;
                            *poll_dst = n < len;
                            return Ok(n);
                        }
                        // Nothing moved: the destination is full, or the linked flush ran
                        // before the fill (submitted apart, see `through_pipe`).
                        Some(Ok(_)) => {}
                        Some(Err(e)) if is_eagain(&e) => *poll_dst = true,
                        Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                        // ECANCELED: the linked flush never ran; try again.
                        Some(Err(e)) if e.raw_os_error() == Some(libc::ECANCELED) => {}
                        Some(Err(e)) => return Err(e),
                        None => {}
                    }
                    if *poll_dst || !ops.dst_nonblocking() {
                        ops.dst_writable().await?;
                    }
                    pipe.in_flight = true;
                    let res = ops.drain_pipe(&pipe.read, len).await;
                    pipe.in_flight = false;
                    if let Some(done) = flushed(res, pipe, len, true, poll_dst) {
                        return done;
                    }
                },
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = pipe;
            match self.inner.never {}
        }
    }
}

#[cfg(target_os = "linux")]
/// One nonblocking splice(2) of at most `len` bytes from `fd_in` to `fd_out` (a socket
/// and a pipe end), on this thread.
pub(crate) fn splice_now(fd_in: BorrowedFd<'_>, fd_out: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the call (borrowed); null offsets, as sockets
    // and pipes require. splice(2) has no MSG_NOSIGNAL: a reset peer raises SIGPIPE as
    // well as EPIPE, and Rust's runtime ignores SIGPIPE before `main` (the binary and the
    // test harness), so only the EPIPE error is seen here.
    let r = unsafe {
        libc::splice(
            fd_in.as_raw_fd(),
            std::ptr::null_mut(),
            fd_out.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
        )
    };
    usize::try_from(r).map_err(|_| io::Error::last_os_error())
}

/// [`Splice::fill`] on the tokio backend: splice(2) when the socket is readable.
#[cfg(target_os = "linux")]
async fn tokio_fill(src: &tokio::net::TcpStream, pipe: &mut Pipe, max: usize) -> io::Result<usize> {
    use tokio::io::Interest;
    let len = pipe.capacity.min(max);
    loop {
        // The pipe is empty, so EAGAIN means that the socket has nothing to read
        // (`try_io` then clears its readiness), or that it is at TCP urgent data: then
        // the readiness must stay, for the copy that takes over, since edge-triggered
        // epoll would not report the bytes after the mark again.
        let res = src.try_io(Interest::READABLE, || {
            match splice_now(src.as_fd(), pipe.write.as_fd(), len) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && at_urgent_mark(src.as_fd()) => Err(urgent_mark()),
                res => res,
            }
        });
        match res {
            Ok(n) => {
                pipe.pending += n;
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => src.readable().await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// [`Splice::flush`] on the tokio backend: splice(2) when the socket is writable.
#[cfg(target_os = "linux")]
async fn tokio_flush(dst: &tokio::net::TcpStream, pipe: &mut Pipe) -> io::Result<usize> {
    use tokio::io::Interest;
    loop {
        let len = pipe.pending;
        // The pipe holds bytes, so EAGAIN means the socket is full.
        let res = dst.try_io(Interest::WRITABLE, || splice_now(pipe.read.as_fd(), dst.as_fd(), len));
        match res {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                pipe.pending = pipe.pending.saturating_sub(n);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
