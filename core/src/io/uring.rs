//! The io_uring backend of [`Env`] (Linux): an own small completion driver on the
//! `io-uring` crate, hosted inside each worker's tokio current-thread runtime.
//!
//! # The driver
//!
//! Each worker thread has one ring, owned by a driver that the worker's [`UringEnv`], its
//! listeners and its streams share through an `Rc`.
//!
//! - **Operation table.** Starting an operation (accept, connect, recv, send, shutdown,
//!   poll, splice) takes a slot in the table and moves into it everything the kernel
//!   will read or write: the [`IoBuf`], the socket address storage (a splice's
//!   descriptors, see below). The submission entry points into that
//!   memory, which is heap memory and does not move while the slot holds it. The slot
//!   gives it back only once the operation's completion has been drained: to the future
//!   that awaits it, or, if that future was dropped, to the allocator.
//! - **Submission.** Entries go into the SQ ring (or, when it is full, into a backlog that
//!   never fails) and are not submitted one by one: the first one wakes the driver task,
//!   which runs after the tasks that are ready now and submits the whole batch with one
//!   `io_uring_enter`.
//! - **Completion.** The ring's file descriptor is registered with tokio's reactor
//!   ([`AsyncFd`]); it polls readable while completions are waiting. The driver task
//!   drains the CQ, stores each result in its slot and wakes the task that awaits it.
//! - **Everything else** (timers, spawning, the clock, randomness, name resolution) is the
//!   tokio backend's ([`TokioEnv`]): a uring worker is a tokio worker whose sockets go
//!   through the ring.
//!
//! A socket is closed with IORING_OP_CLOSE once its last handle (the stream, or both halves
//! of a split one) is dropped; `abort` sets a zero linger first, so that this close sends
//! an RST.
//!
//! # Cancellation
//!
//! Dropping the future of an operation in flight (a read that lost a race against a
//! timeout, a connect past its deadline, an accept loop stopped by shutdown) marks its slot
//! abandoned and queues an IORING_OP_ASYNC_CANCEL for it. The slot keeps the buffer until
//! the completion arrives (ECANCELED, or whatever the operation had reached) and only then
//! frees it: the kernel never writes into freed memory. A socket that an abandoned accept
//! had already taken is closed. A recv that completed after its future was dropped may have
//! consumed bytes, which are then lost: by the cancellation rule of [`crate::io`], the core
//! closes such a stream and never reads it again.
//!
//! When the driver itself goes (the worker's runtime is shutting down), it submits what is
//! queued and waits briefly for the cancelled operations; buffers the kernel may still hold
//! after that are leaked, never freed.
//!
//! # Sockets stay in blocking mode (until they splice)
//!
//! io_uring arms its own poll for a socket operation that cannot complete at once, but
//! some kernels hand EAGAIN back instead for a file in O_NONBLOCK mode. So listeners,
//! accepted and connected sockets are left (or put) in blocking mode; no thread ever
//! blocks on them, since every operation on them goes through the ring.
//!
//! The exception is splicing ([`Splice`]): splice(2) on the worker thread must not block,
//! and IORING_OP_SPLICE always runs on an io-wq worker thread, where a blocking socket
//! would hold the thread while it waits; so a socket is put in O_NONBLOCK mode when it
//! first splices. Its recv and send then handle an EAGAIN from such a kernel themselves:
//! they wait for readiness with IORING_OP_POLL_ADD and try again, never handing EAGAIN to
//! the caller.
//!
//! # Splice
//!
//! A read half splices to a write half of this backend ([`OwnedRead::splice_to`]) in one
//! of two ways, the worker's [`SpliceMethod`] (`--uring-splice`):
//!
//! - **`syscall`** (the default): splice(2), nonblocking, called on the worker thread;
//!   when it says EAGAIN the socket is waited for with IORING_OP_POLL_ADD through the
//!   ring. The kernel cannot run a splice inline from the ring (it hands every
//!   IORING_OP_SPLICE to an io-wq thread), so this is the way with no thread hand-off:
//!   1 GiB through one connection ran at 1.06 of a direct loopback transfer this way and
//!   at 0.92 with IORING_OP_SPLICE in the same rounds (16 cores, bench/RESULTS.md).
//! - **`op`**: IORING_OP_SPLICE (Linux 5.7), a fill of the pipe hard-linked to its flush.
//!   io-wq looks a splice's descriptors up when it runs the operation, not when it is
//!   submitted: a descriptor closed meanwhile and its number reused would splice another
//!   file's bytes. So the slot of a splice holds both descriptors (the socket's and the
//!   pipe end's, shared through an `Rc`) until the completion, and a socket or a pipe
//!   dropped while an abandoned splice still names it is closed only then. Where the
//!   worker's ring lacks the operation, `splice_to` says `None` and the caller copies.
//!
//! # One ring, one thread
//!
//! The kernel finishes much of a ring's work (a socket became readable: retry the recv)
//! as task work on the thread that submitted it, and a ring's teardown queues task work
//! to the thread that created it. Both come with a notification that interrupts (EINTR)
//! a blocking system call that thread is making. So a ring is created, used and dropped
//! on its worker thread only, whose one blocking call is the reactor's `epoll_wait`
//! (which retries), and [`probe`] uses a thread of its own.
//!
//! # Availability
//!
//! [`probe`] sets up a ring the size a worker uses and asks the kernel for the operations
//! and features this backend needs. The binary's `--io auto` chooses with it, and
//! `--io uring` explains a refusal with its error ([`UringUnavailable`]).

use super::tokio::{bind_std, TokioEnv};
use super::{BindOptions, BufResult, Env, Instant, IoBuf, Listener, OwnedRead, OwnedWrite, Splice, Stream};
use io_uring::{opcode, squeue, types, IoUring, Probe};
use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, SockRef, Socket, Type};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::mem::ManuallyDrop;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Entries of the submission ring. A burst beyond it waits in the driver's backlog.
const SQ_ENTRIES: u32 = 256;
/// Entries of the completion ring: room for the completions of a busy tick. Beyond it the
/// kernel keeps completions aside (IORING_FEAT_NODROP) until the next drain.
const CQ_ENTRIES: u32 = 4096;
/// Operations one worker may have in flight (awaited or abandoned). Far above any
/// configured connection limit; it bounds the table and keeps every slot index below the
/// reserved [`UNTRACKED`] key.
const OPS_IN_FLIGHT_MAX: usize = 1 << 24;
/// Submit-and-drain rounds in one poll of the driver task before it yields to others.
const DRIVER_ROUNDS_MAX: usize = 64;
/// At teardown: how long to wait, at most, for cancelled operations to complete...
const TEARDOWN_WAIT: Duration = Duration::from_secs(1);
/// ...in waits of this length.
const TEARDOWN_STEP: Duration = Duration::from_millis(10);
/// Every failed submission is counted; one in this many is logged.
const SUBMIT_FAILURE_LOG_EVERY: u64 = 1024;
/// The key of entries whose completion nobody awaits (cancel and close).
const UNTRACKED: u64 = u64::MAX;

/// The operations this backend submits, with the Linux version that brought each.
const REQUIRED_OPS: [(u8, &str, &str); 8] = [
    (opcode::Accept::CODE, "ACCEPT", "5.5"),
    (opcode::Connect::CODE, "CONNECT", "5.5"),
    (opcode::Recv::CODE, "RECV", "5.6"),
    (opcode::Send::CODE, "SEND", "5.6"),
    (opcode::Shutdown::CODE, "SHUTDOWN", "5.11"),
    (opcode::Close::CODE, "CLOSE", "5.6"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL", "5.5"),
    (opcode::PollAdd::CODE, "POLL_ADD", "5.1"),
];

/// The operations [`SpliceMethod::Op`] submits besides [`REQUIRED_OPS`] ([`probe_splice`]);
/// without them that method copies.
const SPLICE_OPS: [(u8, &str, &str); 1] = [(opcode::Splice::CODE, "SPLICE", "5.7")];

/// How an io_uring worker moves the bytes of a splice (`--uring-splice`; see the module
/// documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SpliceMethod {
    /// splice(2) on the worker thread, nonblocking, waiting for readiness with
    /// IORING_OP_POLL_ADD: no thread hand-off per pipe load.
    #[default]
    Syscall,
    /// IORING_OP_SPLICE, which the kernel runs on an io-wq worker thread.
    Op,
}

/// Why the io_uring backend cannot run on this machine.
#[derive(Debug, thiserror::Error)]
pub enum UringUnavailable {
    /// The system call does not exist (or a filter pretends so).
    #[error(
        "io_uring_setup(2) failed with ENOSYS: the kernel is older than 5.1 or built without \
         io_uring (CONFIG_IO_URING), or a seccomp filter answers ENOSYS"
    )]
    NoSyscall,
    /// The system call was refused; the text says by what, as far as can be told.
    #[error("io_uring_setup(2) failed with EPERM: {0}")]
    NotPermitted(String),
    /// Setting up a ring failed for another reason.
    #[error("cannot set up an io_uring ring: {0}{1}")]
    Setup(io::Error, &'static str),
    /// The kernel cannot list its operations (IORING_REGISTER_PROBE came with Linux 5.6).
    #[error("cannot list the kernel's io_uring operations (IORING_REGISTER_PROBE needs Linux 5.6): {0}")]
    Probe(io::Error),
    /// Operations this backend submits are missing.
    #[error("the kernel lacks io_uring operations this backend needs: {}", .0.join(", "))]
    MissingOps(Vec<String>),
    /// A ring feature this backend relies on is missing.
    #[error("the kernel lacks the io_uring feature {0}")]
    MissingFeature(&'static str),
}

/// The operations this backend needs, by their io_uring names.
pub fn required_operations() -> Vec<&'static str> {
    REQUIRED_OPS.iter().map(|(_, name, _)| *name).collect()
}

/// How `method` splices (`--splice auto`), for the start line.
pub fn splice_description(method: SpliceMethod) -> &'static str {
    match method {
        SpliceMethod::Syscall => "splice(2) on the worker, readiness by IORING_OP_POLL_ADD",
        SpliceMethod::Op => "IORING_OP_SPLICE + IORING_OP_POLL_ADD",
    }
}

/// The operations of `ops` that `probe` lacks, as "NAME (Linux VERSION)".
fn missing_ops(probe: &Probe, ops: &[(u8, &str, &str)]) -> Vec<String> {
    ops.iter()
        .filter(|(code, _, _)| !probe.is_supported(*code))
        .map(|(_, name, since)| format!("{name} (Linux {since})"))
        .collect()
}

/// Checks that io_uring can serve this backend here: sets up a ring of the size a worker
/// uses and asks the kernel for the operations ([`required_operations`]) and the features
/// (NODROP, FAST_POLL) the driver needs. Cheap enough to call once per start or per test.
///
/// The ring lives on a short-lived thread of its own. Tearing a ring down queues kernel
/// work to the thread that created it, with a notification that interrupts (EINTR)
/// whatever blocking call that thread is making at the moment, such as a test client's
/// `read` or the binary's start-up.
pub fn probe() -> Result<(), UringUnavailable> {
    on_probe_thread(probe_on_this_thread)
}

/// Checks that this backend can splice here with `method`, the way [`probe`] checks that
/// it can run: [`SpliceMethod::Syscall`] needs nothing more than the backend itself,
/// [`SpliceMethod::Op`] needs IORING_OP_SPLICE. Where it cannot, io_uring workers copy;
/// each worker's ring also checks for itself, so a worker never submits an operation its
/// kernel lacks.
pub fn probe_splice(method: SpliceMethod) -> Result<(), UringUnavailable> {
    if method == SpliceMethod::Syscall {
        return Ok(());
    }
    on_probe_thread(|| {
        let ring = build_ring().map_err(classify_setup_error)?;
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(UringUnavailable::Probe)?;
        let missing = missing_ops(&probe, &SPLICE_OPS);
        if missing.is_empty() {
            Ok(())
        } else {
            Err(UringUnavailable::MissingOps(missing))
        }
    })
}

/// Runs a probe on a short-lived thread of its own (see [`probe`]).
fn on_probe_thread(f: impl FnOnce() -> Result<(), UringUnavailable> + Send + 'static) -> Result<(), UringUnavailable> {
    let probing = std::thread::Builder::new().name("io_uring-probe".into()).spawn(f);
    match probing {
        Ok(handle) => handle.join().unwrap_or_else(|_| {
            Err(UringUnavailable::Setup(
                io::Error::other("the probe thread panicked"),
                "",
            ))
        }),
        Err(e) => Err(UringUnavailable::Setup(e, " (cannot start the probe's thread)")),
    }
}

fn probe_on_this_thread() -> Result<(), UringUnavailable> {
    let ring = build_ring().map_err(classify_setup_error)?;
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(UringUnavailable::Probe)?;
    let missing = missing_ops(&probe, &REQUIRED_OPS);
    if !missing.is_empty() {
        return Err(UringUnavailable::MissingOps(missing));
    }
    let params = ring.params();
    if !params.is_feature_nodrop() {
        return Err(UringUnavailable::MissingFeature(
            "NODROP (Linux 5.5): completions would be lost when the completion ring overflows",
        ));
    }
    if !params.is_feature_fast_poll() {
        return Err(UringUnavailable::MissingFeature(
            "FAST_POLL (Linux 5.7): every waiting socket operation would hold a kernel worker thread",
        ));
    }
    Ok(())
}

/// A ring of the size every worker uses.
///
/// With COOP_TASKRUN (Linux 5.19) the kernel does not interrupt the worker with an IPI
/// for every completion that needs its task work: the work runs at the worker's next
/// system call (its `epoll_wait` wakes for it). Older kernels refuse the flag (EINVAL)
/// and get a plain ring.
fn build_ring() -> io::Result<IoUring> {
    match IoUring::builder()
        .setup_cqsize(CQ_ENTRIES)
        .setup_coop_taskrun()
        .build(SQ_ENTRIES)
    {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            IoUring::builder().setup_cqsize(CQ_ENTRIES).build(SQ_ENTRIES)
        }
        built => built,
    }
}

/// Turns a failed ring set-up into the reason an operator can act on.
fn classify_setup_error(e: io::Error) -> UringUnavailable {
    match e.raw_os_error() {
        Some(libc::ENOSYS) => UringUnavailable::NoSyscall,
        Some(libc::EPERM) => UringUnavailable::NotPermitted(eperm_reason()),
        Some(libc::ENOMEM) => UringUnavailable::Setup(
            e,
            " (before Linux 5.12, ring memory counts against RLIMIT_MEMLOCK: raise `ulimit -l`)",
        ),
        Some(libc::EINVAL) => UringUnavailable::Setup(
            e,
            " (kernels before 5.5 refuse the ring's parameters; this backend needs Linux 5.11 or later)",
        ),
        _ => UringUnavailable::Setup(e, ""),
    }
}

/// Who refused io_uring: the `kernel.io_uring_disabled` sysctl (Linux 6.6) if it says
/// so, otherwise most likely a seccomp filter.
fn eperm_reason() -> String {
    const SECCOMP: &str = "most likely a seccomp filter (the default profiles of container runtimes block io_uring)";
    match std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        Ok(v) => match v.trim() {
            "2" => "io_uring is disabled by the sysctl kernel.io_uring_disabled = 2".to_string(),
            "1" => "the sysctl kernel.io_uring_disabled = 1 allows io_uring only to members of \
                    kernel.io_uring_group and to CAP_SYS_ADMIN"
                .to_string(),
            other => format!("not by the sysctl kernel.io_uring_disabled (it is {other}); {SECCOMP}"),
        },
        Err(_) => SECCOMP.to_string(),
    }
}

/// What an operation's slot holds for the kernel until the completion arrives.
#[derive(Default)]
enum Held {
    #[default]
    Nothing,
    /// Recv writes into its spare capacity; send reads its filled bytes.
    Buf(IoBuf),
    /// Accept writes the peer's address and its length.
    Accept(Box<AcceptAddr>),
    /// Connect reads the address; it is held, never read back.
    #[allow(dead_code)]
    Connect(Box<SockAddr>),
    /// A splice's two descriptors, input then output, kept open until the completion:
    /// io-wq looks them up only when it runs the operation (see the module
    /// documentation). Dropping them here closes them with close(2).
    #[allow(dead_code)]
    Splice([Rc<OwnedFd>; 2]),
}

/// Where an accept puts the peer's address.
struct AcceptAddr {
    storage: SockAddrStorage,
    len: libc::socklen_t,
}

/// Frees what a completion nobody awaits gave back. A socket that an abandoned accept
/// took is closed (its client sees the connection end); buffers are just dropped.
fn discard(held: Held, res: i32) {
    if let (Held::Accept(_), Ok(fd)) = (&held, RawFd::try_from(res)) {
        if fd >= 0 {
            // SAFETY: the kernel installed `fd` for this accept and handed it to nobody
            // else: the future that would have owned it is gone.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    drop(held);
}

/// An operation's state in the table.
enum OpState {
    Free,
    /// Submitted (or queued); the future awaits it.
    Waiting(Option<Waker>),
    /// Completed with this result; the future has not collected it yet.
    Done(i32),
    /// Submitted; the future was dropped; a cancel is queued.
    Abandoned,
}

struct Slot {
    /// Bumped on every reuse, so that a stale key never finds a new operation.
    generation: u32,
    state: OpState,
    held: Held,
}

/// What a completed operation gives back.
struct Completion {
    res: i32,
    held: Held,
}

/// What dropping an operation's future leaves to do.
enum Abandon {
    /// In flight: cancel it; the slot stays until its completion.
    Cancel,
    /// Already completed: free what it held.
    Finished(Held, i32),
    /// Nothing (unknown key).
    Gone,
}

/// The operation table: a slab of slots, each owning what the kernel may touch.
struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Operations queued or submitted whose completion has not been drained.
    in_flight: usize,
}

fn key_of(index: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(index)
}

fn index_of(key: u64) -> usize {
    (key & 0xFFFF_FFFF) as usize
}

fn generation_of(key: u64) -> u32 {
    (key >> 32) as u32
}

impl Table {
    /// A slot owning `held`, waiting for its completion; None when the table is full.
    fn alloc(&mut self, held: Held) -> Option<u64> {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                if self.slots.len() >= OPS_IN_FLIGHT_MAX {
                    return None;
                }
                self.slots.push(Slot {
                    generation: 0,
                    state: OpState::Free,
                    held: Held::Nothing,
                });
                u32::try_from(self.slots.len() - 1).ok()?
            }
        };
        let slot = self.slots.get_mut(index as usize)?;
        slot.generation = slot.generation.wrapping_add(1);
        slot.state = OpState::Waiting(None);
        slot.held = held;
        self.in_flight += 1;
        Some(key_of(index, slot.generation))
    }

    /// Takes back a slot just allocated whose operation was never queued.
    fn unalloc(&mut self, key: u64) -> Held {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.release(key)
    }

    /// The live slot `key` names.
    fn get(&mut self, key: u64) -> Option<&mut Slot> {
        self.slots
            .get_mut(index_of(key))
            .filter(|s| s.generation == generation_of(key) && !matches!(s.state, OpState::Free))
    }

    /// Frees the slot of `key`, handing back what it held.
    fn release(&mut self, key: u64) -> Held {
        let Some(slot) = self.get(key) else {
            return Held::Nothing;
        };
        slot.state = OpState::Free;
        let held = std::mem::take(&mut slot.held);
        // `get` found the slot, so the index fits in u32.
        self.free.push(index_of(key) as u32);
        held
    }

    /// Records the completion of `key`; the awaiting task's waker goes into `woken`.
    fn complete(&mut self, key: u64, res: i32, woken: &mut Vec<Waker>) {
        let Some(slot) = self.get(key) else {
            return;
        };
        match std::mem::replace(&mut slot.state, OpState::Done(res)) {
            OpState::Waiting(waker) => {
                self.in_flight = self.in_flight.saturating_sub(1);
                woken.extend(waker);
            }
            OpState::Abandoned => {
                self.in_flight = self.in_flight.saturating_sub(1);
                discard(self.release(key), res);
            }
            // One completion per operation (no multishot): nothing else is expected.
            other => slot.state = other,
        }
    }

    /// Polls the operation `key`: its completion, or Pending with the waker stored.
    /// `Ready(None)` means the table lost it (a bug, reported as an error).
    fn poll(&mut self, key: u64, cx: &mut Context<'_>) -> Poll<Option<Completion>> {
        let Some(slot) = self.get(key) else {
            return Poll::Ready(None);
        };
        match &mut slot.state {
            OpState::Done(res) => {
                let res = *res;
                let held = self.release(key);
                Poll::Ready(Some(Completion { res, held }))
            }
            OpState::Waiting(waker) => {
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            OpState::Free | OpState::Abandoned => Poll::Ready(None),
        }
    }

    /// The future of `key` was dropped.
    fn abandon(&mut self, key: u64) -> Abandon {
        let Some(slot) = self.get(key) else {
            return Abandon::Gone;
        };
        match slot.state {
            OpState::Waiting(_) => {
                slot.state = OpState::Abandoned;
                Abandon::Cancel
            }
            OpState::Done(res) => Abandon::Finished(self.release(key), res),
            OpState::Free | OpState::Abandoned => Abandon::Gone,
        }
    }

    /// Forgets (leaks) what in-flight operations hold: the kernel may still write there.
    fn leak_in_flight(&mut self) -> usize {
        let mut leaked = 0;
        for slot in &mut self.slots {
            if matches!(slot.state, OpState::Waiting(_) | OpState::Abandoned) {
                std::mem::forget(std::mem::take(&mut slot.held));
                slot.state = OpState::Free;
                leaked += 1;
            }
        }
        leaked
    }
}

/// The ring, the table and the submissions not yet made.
struct Inner {
    ring: IoUring,
    table: Table,
    /// Entries that did not fit in the SQ ring, in order.
    backlog: VecDeque<squeue::Entry>,
    /// Entries are in the SQ ring or the backlog that the kernel has not taken yet.
    unsubmitted: bool,
    /// The driver task, to wake when there is something to submit.
    task: Option<Waker>,
    /// Spare vector for the wakers of one drain.
    woken: Vec<Waker>,
    submit_failures: u64,
}

impl Inner {
    /// Queues `entry` for the next submission; returns the driver task's waker, to be
    /// woken once the borrow of the driver ends.
    ///
    /// # Safety
    ///
    /// Every pointer in `entry` must stay valid, and the memory it points to untouched by
    /// anyone else, until the completion of `entry` has been drained.
    unsafe fn queue(&mut self, entry: squeue::Entry) -> Option<Waker> {
        self.unsubmitted = true;
        if self.backlog.is_empty() {
            let mut sq = self.ring.submission();
            // SAFETY: the caller's contract covers the entry's pointers.
            if unsafe { sq.push(&entry) }.is_ok() {
                return self.task.take();
            }
        }
        self.backlog.push_back(entry);
        self.task.take()
    }

    /// Queues a cancel of the operation `key`; its completion is ignored.
    fn queue_cancel(&mut self, key: u64) -> Option<Waker> {
        let entry = opcode::AsyncCancel::new(key).build().user_data(UNTRACKED);
        // SAFETY: a cancel names its target by key and carries no pointer.
        unsafe { self.queue(entry) }
    }

    /// Queues the close of `fd`; its completion is ignored.
    fn queue_close(&mut self, fd: OwnedFd) -> Option<Waker> {
        let entry = opcode::Close::new(types::Fd(fd.into_raw_fd()))
            .build()
            .user_data(UNTRACKED);
        // SAFETY: a close carries no pointer; the descriptor is the ring's to close now.
        unsafe { self.queue(entry) }
    }

    fn has_unsubmitted(&self) -> bool {
        self.unsubmitted || !self.backlog.is_empty()
    }

    /// Moves the backlog into the SQ ring as far as it fits and submits. Interrupted or
    /// busy submissions are left for the next round.
    fn flush(&mut self) -> io::Result<()> {
        {
            let mut sq = self.ring.submission();
            while let Some(entry) = self.backlog.front() {
                // SAFETY: every backlog entry came through `queue`, whose contract keeps
                // its pointers valid until its completion.
                if unsafe { sq.push(entry) }.is_err() {
                    break;
                }
                self.backlog.pop_front();
            }
        }
        // Completions the kernel set aside (CQ ring overflow) are flushed by an enter too.
        let overflow = self.ring.submission().cq_overflow();
        if !self.unsubmitted && !overflow {
            return Ok(());
        }
        match self.ring.submit() {
            Ok(_) => {
                self.unsubmitted = !self.backlog.is_empty() || !self.ring.submission().is_empty();
                Ok(())
            }
            Err(e) => {
                self.submit_failures += 1;
                match e.raw_os_error() {
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY) => Ok(()),
                    _ => Err(e),
                }
            }
        }
    }

    /// Drains the CQ ring into the table.
    fn drain(&mut self, woken: &mut Vec<Waker>) {
        for cqe in self.ring.completion() {
            let key = cqe.user_data();
            if key != UNTRACKED {
                self.table.complete(key, cqe.result(), woken);
            }
        }
    }

    /// Submits what is queued and waits (at most [`TEARDOWN_WAIT`]) for the operations
    /// still in flight, all of them abandoned and cancelled by now; leaks what they hold
    /// if they do not complete.
    fn teardown(&mut self) {
        let can_wait = self.ring.params().is_feature_ext_arg();
        let step = types::Timespec::from(TEARDOWN_STEP);
        let mut woken = Vec::new();
        let rounds = TEARDOWN_WAIT.as_millis() / TEARDOWN_STEP.as_millis().max(1);
        for _ in 0..rounds {
            let submitted = self.flush();
            self.drain(&mut woken);
            // No future can await a driver that is being dropped: nobody to wake.
            woken.clear();
            if self.table.in_flight == 0 && !self.has_unsubmitted() {
                return;
            }
            if submitted.is_err() || !can_wait {
                break;
            }
            let args = types::SubmitArgs::new().timespec(&step);
            if let Err(e) = self.ring.submitter().submit_with_args(1, &args) {
                if !matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) {
                    break;
                }
            }
        }
        let leaked = self.table.leak_in_flight();
        if leaked > 0 {
            tracing::warn!(
                operations = leaked,
                "io_uring: operations still in the kernel at worker exit; their buffers are leaked, not freed"
            );
        }
    }
}

/// One worker's ring: the operation table, the submission batch, and the registration
/// of the ring's descriptor with the worker's reactor.
struct Driver {
    /// Declared (so dropped) first: deregisters the descriptor before `inner` closes it.
    registration: AsyncFd<RingFd>,
    inner: RefCell<Inner>,
    /// The ring has IORING_OP_SPLICE ([`SPLICE_OPS`]).
    splice_op: bool,
    /// How this worker splices ([`UringEnv::set_splice_method`]).
    splice_method: Cell<SpliceMethod>,
}

/// The ring's descriptor, as the reactor sees it; owned by the `IoUring` in `Inner`.
struct RingFd(RawFd);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

fn wake(waker: Option<Waker>) {
    if let Some(w) = waker {
        w.wake();
    }
}

fn lost_operation() -> io::Error {
    io::Error::other("io_uring driver lost track of an operation")
}

/// A completion's result: a count or a descriptor, or the negated errno.
fn os_result(res: i32) -> io::Result<usize> {
    usize::try_from(res).map_err(|_| io::Error::from_raw_os_error(res.saturating_neg()))
}

impl Driver {
    /// Sets up the ring and registers it with the current runtime's reactor.
    fn new() -> io::Result<Rc<Driver>> {
        let ring = build_ring().map_err(|e| {
            let kind = e.kind();
            io::Error::new(kind, classify_setup_error(e))
        })?;
        // SAFETY: the descriptor belongs to `ring`, which moves into `inner` and is dropped
        // after `registration` (field order of `Driver`): it stays open, and the same, for
        // as long as the registration lives.
        let registration = unsafe { AsyncFd::register_with_interest(RingFd(ring.as_raw_fd()), Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        // A kernel that cannot list its operations (before 5.6) cannot splice here.
        let mut probe = Probe::new();
        let splice_op =
            ring.submitter().register_probe(&mut probe).is_ok() && missing_ops(&probe, &SPLICE_OPS).is_empty();
        Ok(Rc::new(Driver {
            registration,
            splice_op,
            splice_method: Cell::new(SpliceMethod::default()),
            inner: RefCell::new(Inner {
                ring,
                table: Table {
                    slots: Vec::new(),
                    free: Vec::new(),
                    in_flight: 0,
                },
                backlog: VecDeque::new(),
                unsubmitted: false,
                task: None,
                woken: Vec::new(),
                submit_failures: 0,
            }),
        }))
    }

    /// Starts an operation: `held` moves into a slot of the table and `entry` is queued
    /// under that slot's key.
    ///
    /// # Safety
    ///
    /// Every pointer in `entry` must point into heap memory owned by `held` (which the
    /// slot keeps, untouched, until the completion has been drained, wherever the returned
    /// future goes) or be null. An operation that io-wq runs with descriptors it looks up
    /// only then (a splice) must hold those descriptors in `held` as well.
    unsafe fn start(self: &Rc<Self>, entry: squeue::Entry, held: Held) -> io::Result<Op> {
        let mut inner = self.inner.borrow_mut();
        let Some(key) = inner.table.alloc(held) else {
            return Err(io::Error::other(format!(
                "io_uring: more than {OPS_IN_FLIGHT_MAX} operations in flight on one worker"
            )));
        };
        // SAFETY: by the caller's contract the entry points into `held`, which the slot
        // `key` now owns until the completion for `key` has been drained.
        let waker = unsafe { inner.queue(entry.user_data(key)) };
        drop(inner);
        wake(waker);
        Ok(Op {
            driver: self.clone(),
            key,
            finished: false,
        })
    }

    /// Starts two operations, `first` hard-linked to `second` (IOSQE_IO_HARDLINK): the
    /// kernel starts the second once the first has completed, whatever its result. Both
    /// slots are taken before either entry is queued, so that a full table never leaves
    /// the link flag on an entry whose partner is missing.
    ///
    /// Should the SQ ring fill up between the two, the kernel may get them in two
    /// submissions, unlinked; callers must be correct either way.
    ///
    /// # Safety
    ///
    /// As for [`Driver::start`], for each entry and what it holds.
    unsafe fn start_linked(
        self: &Rc<Self>,
        first: (squeue::Entry, Held),
        second: (squeue::Entry, Held),
    ) -> io::Result<(Op, Op)> {
        let full = || {
            io::Error::other(format!(
                "io_uring: more than {OPS_IN_FLIGHT_MAX} operations in flight on one worker"
            ))
        };
        let mut inner = self.inner.borrow_mut();
        let Some(k1) = inner.table.alloc(first.1) else {
            return Err(full());
        };
        let Some(k2) = inner.table.alloc(second.1) else {
            drop(inner.table.unalloc(k1));
            return Err(full());
        };
        let head = first.0.flags(squeue::Flags::IO_HARDLINK).user_data(k1);
        // SAFETY: by the caller's contract each entry points only into what it holds, which
        // its slot owns until the completion of that slot's key has been drained.
        let waker = unsafe { inner.queue(head) };
        // SAFETY: as above.
        let waker = unsafe { inner.queue(second.0.user_data(k2)) }.or(waker);
        drop(inner);
        wake(waker);
        let op = |key| Op {
            driver: self.clone(),
            key,
            finished: false,
        };
        Ok((op(k1), op(k2)))
    }

    /// The future of `key` was dropped: cancel the operation, or free what it held if it
    /// has completed already.
    fn abandon(&self, key: u64) {
        let mut inner = self.inner.borrow_mut();
        match inner.table.abandon(key) {
            Abandon::Cancel => {
                let waker = inner.queue_cancel(key);
                drop(inner);
                wake(waker);
            }
            Abandon::Finished(held, res) => {
                drop(inner);
                discard(held, res);
            }
            Abandon::Gone => {}
        }
    }

    /// Closes `fd` through the ring.
    fn close(&self, fd: OwnedFd) {
        let waker = self.inner.borrow_mut().queue_close(fd);
        wake(waker);
    }

    /// The driver task's body: submit, drain, wake; then wait for the ring to become
    /// readable or for something to submit.
    fn poll_drive(&self, cx: &mut Context<'_>) -> Poll<()> {
        // The wakers of one round, in a vector kept between polls (no allocation per poll).
        let mut woken = std::mem::take(&mut self.inner.borrow_mut().woken);
        let polled = self.drive_rounds(cx, &mut woken);
        self.inner.borrow_mut().woken = woken;
        polled
    }

    fn drive_rounds(&self, cx: &mut Context<'_>, woken: &mut Vec<Waker>) -> Poll<()> {
        for _ in 0..DRIVER_ROUNDS_MAX {
            let submit_failed = {
                let mut inner = self.inner.borrow_mut();
                let submitted = inner.flush();
                if let Err(e) = &submitted {
                    if inner.submit_failures % SUBMIT_FAILURE_LOG_EVERY == 1 {
                        tracing::error!(error = %e, failures = inner.submit_failures, "io_uring: submission failed; retrying");
                    }
                }
                inner.drain(woken);
                submitted.is_err()
            };
            for w in woken.drain(..) {
                w.wake();
            }
            if submit_failed {
                // Let the other tasks run before trying again.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match self.registration.poll_read_ready(cx) {
                Poll::Ready(Ok(mut guard)) => {
                    guard.clear_ready();
                }
                Poll::Ready(Err(e)) => {
                    tracing::error!(error = %e, "io_uring: the reactor gave up on the ring; its operations cannot complete");
                    return Poll::Ready(());
                }
                Poll::Pending => {
                    let mut inner = self.inner.borrow_mut();
                    // A busy submission leaves entries behind: go round again.
                    if inner.has_unsubmitted() {
                        continue;
                    }
                    if !inner.task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        inner.task = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.inner.get_mut().teardown();
    }
}

/// The driver task of a worker: runs until the worker's runtime drops it.
async fn drive(driver: Rc<Driver>) {
    std::future::poll_fn(|cx| driver.poll_drive(cx)).await
}

/// An operation in flight. Dropping it before completion abandons the operation (see the
/// module documentation): the table keeps what it holds until the kernel is done.
struct Op {
    driver: Rc<Driver>,
    key: u64,
    finished: bool,
}

impl Future for Op {
    /// None: the table lost the operation (a bug).
    type Output = Option<Completion>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Completion>> {
        let this = self.get_mut();
        let polled = this.driver.inner.borrow_mut().table.poll(this.key, cx);
        if polled.is_ready() {
            this.finished = true;
        }
        polled
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        if !self.finished {
            self.driver.abandon(self.key);
        }
    }
}

/// A socket of one worker, closed through the ring when dropped.
struct SockFd {
    /// Shared only with the slot of a splice in flight ([`Held::Splice`]).
    fd: ManuallyDrop<Rc<OwnedFd>>,
    driver: Rc<Driver>,
    /// Whether the socket was put in O_NONBLOCK mode for splicing: None until tried.
    nonblocking: Cell<Option<bool>>,
}

impl SockFd {
    fn new(fd: OwnedFd, driver: Rc<Driver>) -> SockFd {
        SockFd {
            fd: ManuallyDrop::new(Rc::new(fd)),
            driver,
            nonblocking: Cell::new(None),
        }
    }

    /// Puts the socket in O_NONBLOCK mode (tried once); whether it is.
    fn make_nonblocking(&self) -> bool {
        if let Some(done) = self.nonblocking.get() {
            return done;
        }
        let done = match self.socket_ref().set_nonblocking(true) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "io_uring: cannot make a socket nonblocking; every splice polls first");
                false
            }
        };
        self.nonblocking.set(Some(done));
        done
    }

    fn target(&self) -> types::Fd {
        types::Fd(self.fd.as_raw_fd())
    }

    fn socket_ref(&self) -> SockRef<'_> {
        SockRef::from(self)
    }
}

impl AsFd for SockFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for SockFd {
    fn drop(&mut self) {
        // SAFETY: `fd` is taken exactly once, here, and `self` is not used afterwards.
        let fd = unsafe { ManuallyDrop::take(&mut self.fd) };
        match Rc::try_unwrap(fd) {
            Ok(fd) => self.driver.close(fd),
            // An abandoned splice still names the socket: its slot closes it once the
            // kernel is done with it.
            Err(shared) => drop(shared),
        }
    }
}

fn inet(addr: SockAddr) -> io::Result<SocketAddr> {
    addr.as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an internet socket address"))
}

/// Waits until `sock` reports one of `events` (or an error or hangup), with
/// IORING_OP_POLL_ADD. Dropping the wait consumes nothing.
async fn poll_ready(sock: &SockFd, events: libc::c_short) -> io::Result<()> {
    // The poll(2) event bits, widened without sign extension.
    let entry = opcode::PollAdd::new(sock.target(), u32::from(events.cast_unsigned())).build();
    // SAFETY: a poll carries no pointer, and the kernel takes its file at submission.
    let op = unsafe { sock.driver.start(entry, Held::Nothing) }?;
    let done = op.await.ok_or_else(lost_operation)?;
    os_result(done.res).map(|_| ())
}

/// True for the EAGAIN a kernel may hand back for a socket in O_NONBLOCK mode (see the
/// module documentation).
fn is_eagain(res: &io::Result<usize>) -> bool {
    matches!(res, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Receives into the spare capacity of `buf`; on EAGAIN (a socket made nonblocking for
/// splicing) waits until it is readable and tries again.
async fn recv(sock: &SockFd, mut buf: IoBuf) -> BufResult<usize> {
    loop {
        let (res, b) = recv_once(sock, buf).await;
        buf = b;
        if !is_eagain(&res) {
            return (res, buf);
        }
        if let Err(e) = poll_ready(sock, libc::POLLIN).await {
            return (Err(e), buf);
        }
    }
}

/// One IORING_OP_RECV into the spare capacity of `buf`.
async fn recv_once(sock: &SockFd, mut buf: IoBuf) -> BufResult<usize> {
    let (ptr, spare) = buf.spare_raw();
    if spare == 0 {
        return (
            Err(io::Error::new(io::ErrorKind::InvalidInput, "read into a full buffer")),
            buf,
        );
    }
    let len = u32::try_from(spare).unwrap_or(u32::MAX);
    let entry = opcode::Recv::new(sock.target(), ptr, len).build();
    // SAFETY: `ptr..ptr + len` is spare capacity of `buf`'s heap allocation, which moves
    // into the table with `buf` and stays there, untouched, until the completion.
    let op = match unsafe { sock.driver.start(entry, Held::Buf(buf)) } {
        Ok(op) => op,
        Err(e) => return (Err(e), IoBuf::default()),
    };
    let Some(Completion {
        res,
        held: Held::Buf(mut buf),
    }) = op.await
    else {
        return (Err(lost_operation()), IoBuf::default());
    };
    match os_result(res) {
        Ok(n) if n <= spare => {
            // SAFETY: the kernel wrote `n` bytes at the start of the spare capacity that
            // `spare_raw` reported, and nothing touched `buf` in between.
            unsafe { buf.assume_filled(n) };
            (Ok(n), buf)
        }
        Ok(n) => (
            Err(io::Error::other(format!(
                "io_uring: recv reported {n} bytes into {spare}"
            ))),
            buf,
        ),
        Err(e) => (Err(e), buf),
    }
}

/// Sends some of the unconsumed bytes of `buf`, consuming what was sent; on EAGAIN (a
/// socket made nonblocking for splicing) waits until it is writable and tries again.
async fn send(sock: &SockFd, mut buf: IoBuf) -> BufResult<usize> {
    loop {
        let (res, b) = send_once(sock, buf).await;
        buf = b;
        if !is_eagain(&res) {
            return (res, buf);
        }
        if let Err(e) = poll_ready(sock, libc::POLLOUT).await {
            return (Err(e), buf);
        }
    }
}

/// One IORING_OP_SEND of the unconsumed bytes of `buf`.
async fn send_once(sock: &SockFd, buf: IoBuf) -> BufResult<usize> {
    if buf.is_empty() {
        return (Ok(0), buf);
    }
    let bytes = buf.bytes();
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    // MSG_NOSIGNAL: a peer that reset the connection is an EPIPE error, not a SIGPIPE.
    let entry = opcode::Send::new(sock.target(), bytes.as_ptr(), len)
        .flags(libc::MSG_NOSIGNAL)
        .build();
    // SAFETY: the entry points at the filled bytes of `buf`'s heap allocation, which moves
    // into the table with `buf` and stays there, untouched, until the completion.
    let op = match unsafe { sock.driver.start(entry, Held::Buf(buf)) } {
        Ok(op) => op,
        Err(e) => return (Err(e), IoBuf::default()),
    };
    let Some(Completion {
        res,
        held: Held::Buf(mut buf),
    }) = op.await
    else {
        return (Err(lost_operation()), IoBuf::default());
    };
    match os_result(res) {
        Ok(n) => {
            buf.consume(n);
            (Ok(n), buf)
        }
        Err(e) => (Err(e), buf),
    }
}

/// The io_uring side of a [`Splice`] between two sockets of this backend: the
/// operations it is made of. The loop around them (poll when the last try said EAGAIN,
/// the pipe's in-flight mark) is [`Splice`]'s.
pub(crate) struct UringSplice<'a> {
    src: &'a SockFd,
    dst: &'a SockFd,
}

impl UringSplice<'_> {
    /// Whether the source's next byte is TCP urgent data ([`super::splice::at_urgent_mark`]).
    pub(crate) fn src_at_urgent_mark(&self) -> bool {
        super::splice::at_urgent_mark(self.src.fd.as_fd())
    }

    /// splice(2) of at most `len` bytes from the source into the pipe's write end, now,
    /// on this thread ([`SpliceMethod::Syscall`]; the source must be in O_NONBLOCK mode).
    /// `Ok(0)`: the source sent FIN; EAGAIN: it has nothing now.
    pub(crate) fn fill_now(&self, pipe_w: &OwnedFd, len: usize) -> io::Result<usize> {
        super::splice::splice_now(self.src.fd.as_fd(), pipe_w.as_fd(), len)
    }

    /// splice(2) of at most `len` bytes from the pipe's read end into the destination,
    /// now, on this thread (as [`UringSplice::fill_now`]). EAGAIN: the destination is full.
    pub(crate) fn drain_now(&self, pipe_r: &OwnedFd, len: usize) -> io::Result<usize> {
        super::splice::splice_now(pipe_r.as_fd(), self.dst.fd.as_fd(), len)
    }

    /// Puts the source in O_NONBLOCK mode (once); false if it could not be.
    pub(crate) fn src_nonblocking(&self) -> bool {
        self.src.make_nonblocking()
    }

    /// Puts the destination in O_NONBLOCK mode (once); false if it could not be.
    pub(crate) fn dst_nonblocking(&self) -> bool {
        self.dst.make_nonblocking()
    }

    /// Waits until the source is readable (bytes, FIN or an error).
    pub(crate) async fn src_readable(&self) -> io::Result<()> {
        poll_ready(self.src, libc::POLLIN).await
    }

    /// Waits until the destination is writable (or failed).
    pub(crate) async fn dst_writable(&self) -> io::Result<()> {
        poll_ready(self.dst, libc::POLLOUT).await
    }

    /// One IORING_OP_SPLICE of at most `len` bytes from the source into the pipe's
    /// write end. `Ok(0)`: the source sent FIN.
    pub(crate) async fn fill_pipe(&self, pipe_w: &Rc<OwnedFd>, len: usize) -> io::Result<usize> {
        splice_op(&self.src.driver, &self.src.fd, pipe_w, len).await
    }

    /// One IORING_OP_SPLICE of at most `len` bytes from the pipe's read end into the
    /// destination.
    pub(crate) async fn drain_pipe(&self, pipe_r: &Rc<OwnedFd>, len: usize) -> io::Result<usize> {
        splice_op(&self.src.driver, pipe_r, &self.dst.fd, len).await
    }

    /// An IORING_OP_SPLICE of at most `len` bytes from the source into the pipe,
    /// hard-linked to one of at most `len` bytes from the pipe into the destination: io-wq
    /// runs the second on the same thread right after the first, so that a bulk transfer
    /// makes one round trip through the ring per pipe load instead of two. Returns both
    /// results: the bytes into the pipe, and the bytes out of it (EAGAIN when the first
    /// moved nothing or the destination is full). The destination must be in O_NONBLOCK
    /// mode, or the second splice could wait on an io-wq thread.
    pub(crate) async fn through_pipe(
        &self,
        pipe_w: &Rc<OwnedFd>,
        pipe_r: &Rc<OwnedFd>,
        len: usize,
    ) -> (io::Result<usize>, io::Result<usize>) {
        let fill = splice_entry(&self.src.fd, pipe_w, len);
        let flush = splice_entry(pipe_r, &self.dst.fd, len);
        // SAFETY: splices carry no pointer; each slot holds the two descriptors its entry
        // names (clones of their `Rc`) until its completion, as in `splice_op`.
        let started = unsafe { self.src.driver.start_linked(fill, flush) };
        let (fill, flush) = match started {
            Ok(ops) => ops,
            Err(e) => return (Err(e), Err(io::ErrorKind::WouldBlock.into())),
        };
        let (fill, flush) = super::join(fill, flush).await;
        let result = |done: Option<Completion>| done.ok_or_else(lost_operation).and_then(|d| os_result(d.res));
        (result(fill), result(flush))
    }
}

/// The entry of an IORING_OP_SPLICE of at most `len` bytes from `fd_in` to `fd_out` (a
/// socket and a pipe end), and what its slot must hold: both descriptors. Nonblocking
/// on the pipe; on the socket as far as it is in O_NONBLOCK mode.
fn splice_entry(fd_in: &Rc<OwnedFd>, fd_out: &Rc<OwnedFd>, len: usize) -> (squeue::Entry, Held) {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    // Offsets -1: neither a socket nor a pipe has a file position to splice at.
    let entry = opcode::Splice::new(types::Fd(fd_in.as_raw_fd()), -1, types::Fd(fd_out.as_raw_fd()), -1, len)
        .flags(libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE)
        .build();
    (entry, Held::Splice([fd_in.clone(), fd_out.clone()]))
}

/// One IORING_OP_SPLICE of at most `len` bytes from `fd_in` to `fd_out` (see
/// [`splice_entry`]).
async fn splice_op(driver: &Rc<Driver>, fd_in: &Rc<OwnedFd>, fd_out: &Rc<OwnedFd>, len: usize) -> io::Result<usize> {
    let (entry, held) = splice_entry(fd_in, fd_out, len);
    // SAFETY: a splice carries no pointer; the slot holds both descriptors (clones of
    // their `Rc`) until the completion, so neither is closed, nor its number reused,
    // while io-wq may still look it up.
    let op = unsafe { driver.start(entry, held) }?;
    let done = op.await.ok_or_else(lost_operation)?;
    os_result(done.res)
}

/// A splice from `src` to `dst` when `dst` is a socket of this backend and the worker can
/// splice with its method (IORING_OP_SPLICE needs [`SPLICE_OPS`]).
fn splice_between<'a, W: OwnedWrite>(src: &'a SockFd, dst: &'a mut W) -> Option<Splice<'a>> {
    let dst = sock_of(dst)?;
    // splice(2) on this thread only on nonblocking sockets; otherwise IORING_OP_SPLICE,
    // where the ring has it, or a copy.
    let now =
        src.driver.splice_method.get() == SpliceMethod::Syscall && src.make_nonblocking() && dst.make_nonblocking();
    if !now && !src.driver.splice_op {
        return None;
    }
    Some(Splice::uring(UringSplice { src, dst }, now))
}

/// The socket under a destination that is one of ours (a whole stream or a write half);
/// `None` for any other backend's stream.
fn sock_of<W: OwnedWrite>(dst: &mut W) -> Option<&SockFd> {
    let any: &mut dyn std::any::Any = dst;
    if any.is::<UringWriteHalf>() {
        return any.downcast_mut::<UringWriteHalf>().map(|w| &*w.sock);
    }
    any.downcast_mut::<UringStream>().map(|s| &*s.sock)
}

/// Sends FIN.
async fn shutdown_write(sock: &SockFd) -> io::Result<()> {
    let entry = opcode::Shutdown::new(sock.target(), libc::SHUT_WR).build();
    // SAFETY: a shutdown carries no pointer.
    let op = unsafe { sock.driver.start(entry, Held::Nothing) }?;
    let done = op.await.ok_or_else(lost_operation)?;
    os_result(done.res).map(|_| ())
}

/// Makes the final close send an RST instead of a FIN.
fn set_zero_linger(sock: &SockFd) {
    // A failure only means the socket is already gone; the close still happens.
    let _ = sock.socket_ref().set_linger(Some(Duration::ZERO));
}

/// Real sockets through this worker's io_uring; time, spawning and randomness as in
/// [`TokioEnv`]. One per worker thread, created on it (see [`spawn_worker`]).
#[derive(Clone)]
pub struct UringEnv {
    base: TokioEnv,
    driver: Rc<Driver>,
}

impl UringEnv {
    /// Sets up this worker's ring and starts the task that drives it. Must be called
    /// inside a `LocalSet` on a current-thread runtime with I/O enabled, as
    /// [`spawn_worker`] does. Fails, saying why, where io_uring is unavailable.
    pub fn new() -> io::Result<UringEnv> {
        let driver = Driver::new()?;
        tokio::task::spawn_local(drive(driver.clone()));
        Ok(UringEnv {
            base: TokioEnv::new(),
            driver,
        })
    }

    /// Wraps an already bound standard listener (see [`bind_std`]); puts it back in
    /// blocking mode (see the module documentation).
    pub fn listener_from_std(&self, l: std::net::TcpListener) -> io::Result<UringListener> {
        l.set_nonblocking(false)?;
        Ok(UringListener {
            sock: SockFd::new(OwnedFd::from(l), self.driver.clone()),
        })
    }

    /// Sets how this worker splices from now on (`--uring-splice`); a splice already
    /// under way keeps its method.
    pub fn set_splice_method(&self, method: SpliceMethod) {
        self.driver.splice_method.set(method);
    }

    /// How this worker splices.
    pub fn splice_method(&self) -> SpliceMethod {
        self.driver.splice_method.get()
    }

    /// Operations queued or in the kernel whose completion has not been drained,
    /// abandoned ones included. Zero on an idle worker once cancellations are through;
    /// for tests and diagnostics.
    pub fn ops_in_flight(&self) -> usize {
        self.driver.inner.borrow().table.in_flight
    }
}

impl Env for UringEnv {
    type Stream = UringStream;
    type Listener = UringListener;

    async fn bind(&self, addr: SocketAddr, opts: BindOptions) -> io::Result<UringListener> {
        self.listener_from_std(bind_std(addr, opts)?)
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<UringStream> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        let sock = SockFd::new(OwnedFd::from(socket), self.driver.clone());
        let target = Box::new(SockAddr::from(addr));
        let entry = opcode::Connect::new(sock.target(), target.as_ptr().cast::<libc::sockaddr>(), target.len()).build();
        // SAFETY: the entry points at the address in `target`'s heap allocation, which the
        // table holds until the completion.
        let op = unsafe { self.driver.start(entry, Held::Connect(target)) }?;
        let done = op.await.ok_or_else(lost_operation)?;
        os_result(done.res)?;
        sock.socket_ref().set_tcp_nodelay(true)?;
        Ok(UringStream { sock: Rc::new(sock) })
    }

    async fn resolve(&self, name: &str) -> io::Result<Vec<SocketAddr>> {
        self.base.resolve(name).await
    }

    fn spawn<F: Future<Output = ()> + 'static>(&self, fut: F) {
        self.base.spawn(fut)
    }

    fn now(&self) -> Instant {
        self.base.now()
    }

    async fn sleep_until(&self, deadline: Instant) {
        self.base.sleep_until(deadline).await
    }

    fn wall_clock(&self) -> SystemTime {
        self.base.wall_clock()
    }

    fn random_u64(&self) -> u64 {
        self.base.random_u64()
    }
}

/// A listening socket whose accepts go through the ring.
pub struct UringListener {
    sock: SockFd,
}

impl Listener for UringListener {
    type Stream = UringStream;

    async fn accept(&mut self) -> io::Result<(UringStream, SocketAddr)> {
        let mut addr = Box::new(AcceptAddr {
            storage: SockAddrStorage::zeroed(),
            len: 0,
        });
        addr.len = addr.storage.size_of();
        let entry = opcode::Accept::new(
            self.sock.target(),
            (&raw mut addr.storage).cast::<libc::sockaddr>(),
            &raw mut addr.len,
        )
        .flags(libc::SOCK_CLOEXEC)
        .build();
        // SAFETY: the entry points at the storage and the length inside `addr`'s heap
        // allocation, which the table holds until the completion.
        let op = unsafe { self.sock.driver.start(entry, Held::Accept(addr)) }?;
        let done = op.await.ok_or_else(lost_operation)?;
        let fd = RawFd::try_from(os_result(done.res)?).map_err(|_| lost_operation())?;
        // SAFETY: the kernel installed `fd` for this accept; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let Held::Accept(addr) = done.held else {
            return Err(lost_operation());
        };
        let AcceptAddr { storage, len } = *addr;
        // SAFETY: the kernel wrote the peer's address into `storage` and its length into
        // `len`, the family field telling which kind of address it is.
        let peer = inet(unsafe { SockAddr::new(storage, len) })?;
        let sock = SockFd::new(fd, self.sock.driver.clone());
        sock.socket_ref().set_tcp_nodelay(true)?;
        Ok((UringStream { sock: Rc::new(sock) }, peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        inet(self.sock.socket_ref().local_addr()?)
    }
}

/// A TCP stream whose reads and writes go through the ring.
pub struct UringStream {
    sock: Rc<SockFd>,
}

impl OwnedRead for UringStream {
    async fn read(&mut self, buf: IoBuf) -> BufResult<usize> {
        recv(&self.sock, buf).await
    }

    fn splice_to<'a, W: OwnedWrite>(&'a mut self, dst: &'a mut W) -> Option<Splice<'a>> {
        splice_between(&self.sock, dst)
    }
}

impl OwnedWrite for UringStream {
    async fn write(&mut self, buf: IoBuf) -> BufResult<usize> {
        send(&self.sock, buf).await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        shutdown_write(&self.sock).await
    }

    fn abort(self) {
        set_zero_linger(&self.sock);
    }
}

impl Stream for UringStream {
    type Read = UringReadHalf;
    type Write = UringWriteHalf;

    fn into_split(self) -> (UringReadHalf, UringWriteHalf) {
        (
            UringReadHalf {
                watch: None,
                sock: self.sock.clone(),
            },
            UringWriteHalf { sock: self.sock },
        )
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        inet(self.sock.socket_ref().peer_addr()?)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        inet(self.sock.socket_ref().local_addr()?)
    }
}

/// Reading half of a [`UringStream`]; the socket closes when both halves are gone.
pub struct UringReadHalf {
    /// The poll that [`OwnedRead::watch_input`] armed on an idle connection, until the
    /// next read, splice or check ends it. Declared before `sock`, so that on drop its
    /// cancel is queued ahead of the socket's close: a poll in flight holds the socket's
    /// file, and the close alone would not end the connection until the poll did.
    watch: Option<Op>,
    sock: Rc<SockFd>,
}

impl OwnedRead for UringReadHalf {
    async fn read(&mut self, buf: IoBuf) -> BufResult<usize> {
        self.watch = None;
        recv(&self.sock, buf).await
    }

    fn input_pending(&mut self) -> bool {
        let Some(op) = self.watch.as_mut() else {
            return super::socket_input_pending(self.sock.socket_ref());
        };
        // The watch's completion, if the driver has drained it: the socket became
        // readable (bytes, FIN, reset) while it sat idle. Polled with a waker that does
        // nothing, since nobody waits on it; still pending means nothing arrived yet,
        // and the watch stays armed.
        match Pin::new(op).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(_) => {
                self.watch = None;
                true
            }
            Poll::Pending => false,
        }
    }

    fn input_pending_now(&mut self) -> bool {
        // A watch that completed has seen input; otherwise one peek, not the fallback
        // peek of `input_pending` and another.
        (self.watch.is_some() && self.input_pending()) || super::socket_input_pending(self.sock.socket_ref())
    }

    fn watch_input(&mut self) {
        if self.watch.is_some() {
            return;
        }
        // One-shot POLL_ADD: completes on the first byte, the FIN (POLLIN, POLLRDHUP) or
        // an error (always reported). One submission entry, no system call of its own:
        // it goes in with the ring's next submit. Where the ring is full the watch is
        // not armed and `input_pending` peeks instead.
        let events = u32::from((libc::POLLIN | libc::POLLRDHUP).cast_unsigned());
        let entry = opcode::PollAdd::new(self.sock.target(), events).build();
        // SAFETY: a poll carries no pointer, and the kernel takes its file at submission.
        self.watch = unsafe { self.sock.driver.start(entry, Held::Nothing) }.ok();
    }

    fn splice_to<'a, W: OwnedWrite>(&'a mut self, dst: &'a mut W) -> Option<Splice<'a>> {
        self.watch = None;
        splice_between(&self.sock, dst)
    }
}

/// Writing half of a [`UringStream`]; aborting it makes the final close an RST.
pub struct UringWriteHalf {
    sock: Rc<SockFd>,
}

impl OwnedWrite for UringWriteHalf {
    async fn write(&mut self, buf: IoBuf) -> BufResult<usize> {
        send(&self.sock, buf).await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        shutdown_write(&self.sock).await
    }

    fn abort(self) {
        set_zero_linger(&self.sock);
    }
}

/// Starts a worker thread on io_uring: a current-thread runtime with a `LocalSet`, whose
/// ring is set up on the thread before `f` runs. Returns once the ring is up, or with the
/// reason it could not be set up. The io_uring twin of
/// [`tokio::spawn_worker`](super::tokio::spawn_worker).
pub fn spawn_worker<F, Fut>(name: String, f: F) -> io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce(UringEnv) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<io::Result<()>>(1);
    let handle = std::thread::Builder::new().name(name).spawn(move || {
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async move {
            match UringEnv::new() {
                Ok(env) => {
                    // The spawning thread waits for this; if it is gone, nobody listens.
                    let _ = ready_tx.send(Ok(()));
                    f(env).await
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        });
    })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => {
            let _ = handle.join();
            Err(io::Error::other(
                "the worker thread ended before its io_uring ring was set up",
            ))
        }
    }
}
