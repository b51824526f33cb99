//! Zero-copy forwarding: splice(2) from a socket into a pipe and from the pipe into
//! another socket, so that the bytes never cross into user space.
//!
//! A stream half offers it as a capability: [`OwnedRead::splice_to`](super::OwnedRead::splice_to)
//! returns a [`Splice`] between it and a destination half, or `None` when the pair
//! cannot splice (another backend, another platform, the simulation): the caller then
//! copies. Only the tokio backend on Linux splices today.
//!
//! Pipes come from a bounded per-worker [`PipePool`]. Bytes in a pipe belong to the
//! connection until they are written: a pipe goes back to the pool only when empty, and
//! one dropped with bytes in it is closed (its connection is being torn down anyway).

use std::cell::{Cell, RefCell};
use std::io;
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
    #[cfg(target_os = "linux")]
    read: std::os::fd::OwnedFd,
    #[cfg(target_os = "linux")]
    write: std::os::fd::OwnedFd,
    /// Bytes in the pipe, not yet spliced out.
    pending: usize,
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

    /// A new nonblocking pipe of (about) `size` bytes.
    #[cfg(target_os = "linux")]
    fn open(size: usize, live: Rc<Cell<usize>>) -> io::Result<Pipe> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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
            read,
            write,
            pending: 0,
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
    /// belonged to a connection that is gone).
    pub fn give(&self, pipe: Pipe) {
        if pipe.pending == 0 && Rc::ptr_eq(&pipe.live, &self.live) {
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
pub struct Splice<'a> {
    inner: Inner<'a>,
}

#[cfg(target_os = "linux")]
struct Inner<'a> {
    src: &'a tokio::net::TcpStream,
    dst: &'a tokio::net::TcpStream,
}

#[cfg(not(target_os = "linux"))]
struct Inner<'a> {
    never: std::convert::Infallible,
    _life: std::marker::PhantomData<&'a ()>,
}

impl<'a> Splice<'a> {
    /// A splice from `src` to `dst` (tokio sockets).
    #[cfg(target_os = "linux")]
    pub(crate) fn tokio(src: &'a tokio::net::TcpStream, dst: &'a tokio::net::TcpStream) -> Splice<'a> {
        Splice {
            inner: Inner { src, dst },
        }
    }

    /// Moves bytes from the source into `pipe`, which must be empty, waiting until the
    /// source is readable. `Ok(0)`: the source sent FIN.
    pub async fn fill(&mut self, pipe: &mut Pipe) -> io::Result<usize> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            use tokio::io::Interest;
            if pipe.pending != 0 {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "fill of a non-empty pipe"));
            }
            let src = self.inner.src;
            let len = pipe.capacity;
            let pipe_w = pipe.write.as_raw_fd();
            loop {
                let res = src.try_io(Interest::READABLE, || {
                    // SAFETY: both descriptors are open for the duration of the call (the
                    // socket is borrowed, the pipe is borrowed mutably); null offsets are
                    // required for sockets and pipes.
                    let r = unsafe {
                        libc::splice(
                            src.as_raw_fd(),
                            std::ptr::null_mut(),
                            pipe_w,
                            std::ptr::null_mut(),
                            len,
                            libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
                        )
                    };
                    // The pipe is empty, so EAGAIN can only mean that the socket has
                    // nothing to read: `try_io` then clears its readiness.
                    usize::try_from(r).map_err(|_| io::Error::last_os_error())
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
        #[cfg(not(target_os = "linux"))]
        {
            let _ = pipe;
            match self.inner.never {}
        }
    }

    /// Moves some of the bytes in `pipe` to the destination, waiting until it is
    /// writable; returns how many moved (at least one).
    pub async fn flush(&mut self, pipe: &mut Pipe) -> io::Result<usize> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            use tokio::io::Interest;
            let dst = self.inner.dst;
            let pipe_r = pipe.read.as_raw_fd();
            loop {
                let len = pipe.pending;
                if len == 0 {
                    return Err(io::Error::new(io::ErrorKind::InvalidInput, "flush of an empty pipe"));
                }
                let res = dst.try_io(Interest::WRITABLE, || {
                    // SAFETY: as in `fill`: both descriptors are open and borrowed.
                    let r = unsafe {
                        libc::splice(
                            pipe_r,
                            std::ptr::null_mut(),
                            dst.as_raw_fd(),
                            std::ptr::null_mut(),
                            len,
                            libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
                        )
                    };
                    // The pipe holds bytes, so EAGAIN means the socket is full. splice(2)
                    // has no MSG_NOSIGNAL: a reset peer raises SIGPIPE as well as EPIPE.
                    // Rust's runtime ignores SIGPIPE before `main` (as the binary and the
                    // test harness run), so only the EPIPE error is seen here.
                    usize::try_from(r).map_err(|_| io::Error::last_os_error())
                });
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
        #[cfg(not(target_os = "linux"))]
        {
            let _ = pipe;
            match self.inner.never {}
        }
    }
}
