//! Conformance of every I/O backend to the [`Env`] contract, over loopback.
//!
//! One set of tests, written once against the trait, runs on each real backend:
//! `tokio_backend::NAME` (epoll on Linux, kqueue on the BSDs and macOS) and `uring::NAME`
//! (io_uring; skipped, saying why, where the machine lacks it). Both ends of every
//! connection are the backend under test, so its accept and its connect are both covered.
//!
//! The contract: EOF after the peer's FIN, and EOF again after that; half-close (a FIN one
//! way leaves the other way open); `abort` resets the peer (ConnectionReset), through a
//! whole stream or a split write half; writes may be short and large transfers still
//! arrive byte-exact, both ways at once; reads append to what a buffer holds and refuse a
//! full one; connect refused, and connect timed out against a black hole; a read or an
//! accept that loses to a timeout leaves nothing behind (the stream closes cleanly, the
//! listener and the worker go on); hundreds of connections at once; input arriving on an
//! idle stream (bytes, or a FIN) is seen at once by `input_pending_now`, and by the cheap
//! `input_pending` (readiness, or the io_uring watch) within a few turns of the loop. After every test on
//! io_uring, each operation the test started must have come back from the kernel.
// Tests bound their waits with the real clock and fill a listen queue with a std socket.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{closed_port, uring_or_skip};
use gobalancer::io::tokio::TokioEnv;
#[cfg(target_os = "linux")]
use gobalancer::io::uring::UringEnv;
use gobalancer::io::{join, timeout_at, BindOptions, Env, IoBuf, Listener, OwnedRead, OwnedWrite, SplitMix64, Stream};
use std::cell::Cell;
use std::future::Future;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

/// A whole test may take this long before it counts as hung.
const TEST_LIMIT: Duration = Duration::from_secs(30);
/// How long cancelled operations may take to come back from the kernel after a test.
const SETTLE_LIMIT: Duration = Duration::from_secs(5);
/// How long a peer may take to see the end of a stream that was closed.
const PEER_SEES_END_LIMIT: Duration = Duration::from_secs(5);

const LISTEN: BindOptions = BindOptions {
    reuse_port: false,
    backlog: 1024,
};

/// What the suite asks of a backend beyond [`Env`].
trait Backend: Env {
    /// Operations the backend has handed to the kernel and not had back (0 where the
    /// backend has no such thing).
    fn ops_in_flight(&self) -> usize {
        0
    }
}

impl Backend for TokioEnv {}

#[cfg(target_os = "linux")]
impl Backend for UringEnv {
    fn ops_in_flight(&self) -> usize {
        UringEnv::ops_in_flight(self)
    }
}

/// Runs `body` on a fresh worker thread (current-thread runtime and `LocalSet`, as the
/// binary's workers) with the env `make` builds there, bounded by [`TEST_LIMIT`]; then
/// waits for the backend's operations to come back from the kernel. A thread of its own,
/// because a dropped io_uring ring interrupts its creating thread's next blocking call.
fn run_on<E, Fut>(make: fn() -> E, body: fn(E) -> Fut)
where
    E: Backend,
    Fut: Future<Output = ()> + 'static,
{
    let worker = std::thread::Builder::new()
        .name("conformance".into())
        .spawn(move || run_here(make, body))
        .expect("worker thread");
    if let Err(panic) = worker.join() {
        std::panic::resume_unwind(panic);
    }
}

fn run_here<E: Backend, Fut: Future<Output = ()>>(make: fn() -> E, body: fn(E) -> Fut) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let env = make();
        let deadline = env.now() + TEST_LIMIT;
        timeout_at(&env, deadline, body(env.clone()))
            .await
            .unwrap_or_else(|| panic!("the test did not finish within {TEST_LIMIT:?}"));
        let settle = env.now() + SETTLE_LIMIT;
        while env.ops_in_flight() > 0 {
            assert!(
                env.now() < settle,
                "{} operations still in the kernel {SETTLE_LIMIT:?} after the test",
                env.ops_in_flight()
            );
            env.sleep(Duration::from_millis(5)).await;
        }
    });
}

/// Generates `tokio_backend::NAME` and `uring::NAME` tests running `NAME` on each backend.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod tokio_backend {
            $(
                #[test]
                fn $name() {
                    super::run_on(gobalancer::io::tokio::TokioEnv::new, super::$name);
                }
            )*
        }
        mod uring {
            $(
                #[test]
                fn $name() {
                    let skip = super::uring_or_skip(concat!("conformance uring::", stringify!($name))).is_none();
                    #[cfg(target_os = "linux")]
                    if !skip {
                        super::run_on(super::uring_env, super::$name);
                    }
                    let _ = skip;
                }
            )*
        }
    };
}

conformance!(
    eof_after_the_peer_closes,
    half_close_leaves_the_other_direction_open,
    abort_resets_the_peer,
    large_transfers_arrive_byte_exact_both_ways,
    reads_append_to_what_the_buffer_holds,
    addresses_match_on_both_ends,
    connect_to_a_closed_port_is_refused,
    connect_to_a_black_hole_times_out_and_the_worker_goes_on,
    a_read_that_loses_to_a_timeout_leaves_a_stream_that_closes_cleanly,
    an_accept_that_loses_to_a_timeout_leaves_the_listener_working,
    reads_losing_races_at_every_moment_leave_nothing_behind,
    hundreds_of_connections_at_once,
    idle_input_is_seen_now_and_within_a_few_turns,
);

#[cfg(target_os = "linux")]
fn uring_env() -> UringEnv {
    UringEnv::new().expect("io_uring ring")
}

// ---------------------------------------------------------------------------------------
// Helpers

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn listen<E: Env>(env: &E) -> E::Listener {
    env.bind(loopback(), LISTEN).await.expect("bind")
}

/// A connected (client, server) pair through `listener`.
async fn pair<E: Env>(env: &E, listener: &mut E::Listener) -> (E::Stream, E::Stream) {
    let addr = listener.local_addr().expect("listener address");
    let (client, server) = join(env.connect(addr), listener.accept()).await;
    (client.expect("connect"), server.expect("accept").0)
}

/// Reads until EOF.
async fn read_to_end<R: OwnedRead>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = IoBuf::with_capacity(16 * 1024);
    loop {
        let (res, b) = r.read(buf).await;
        buf = b;
        if res? == 0 {
            return Ok(out);
        }
        out.extend_from_slice(buf.bytes());
        buf.clear();
    }
}

async fn write_bytes<W: OwnedWrite>(w: &mut W, data: &[u8]) -> io::Result<()> {
    w.write_all(IoBuf::from_vec(data.to_vec())).await.0
}

/// Writes `data` with `write` (not `write_all`), in pieces of varying sizes, going on from
/// wherever each write stopped (writes may be short); then sends FIN.
async fn send_in_pieces<W: OwnedWrite>(w: &mut W, data: &[u8]) -> io::Result<()> {
    const PIECES: [usize; 6] = [1, 7, 1500, 64 * 1024, 1 << 20, 3 << 20];
    let mut at = 0;
    for piece in PIECES.iter().cycle() {
        if at >= data.len() {
            break;
        }
        let end = (at + piece).min(data.len());
        let mut buf = IoBuf::from_vec(data[at..end].to_vec());
        while !buf.is_empty() {
            let (res, b) = w.write(buf).await;
            buf = b;
            match res? {
                0 => return Err(ErrorKind::WriteZero.into()),
                n => at += n,
            }
        }
    }
    w.shutdown().await
}

/// `len` reproducible pseudo-random bytes.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Panics, naming the first differing byte, unless `got` is `want` (no 8 MiB dumps).
fn assert_same_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    panic!(
        "{what}: got {} bytes, want {}; first difference at {first:?}",
        got.len(),
        want.len()
    );
}

/// A fresh connection on `env` carries bytes both ways.
async fn fresh_connection_works<E: Env>(env: &E, listener: &mut E::Listener) {
    let (mut client, mut server) = pair(env, listener).await;
    write_bytes(&mut client, b"still here").await.expect("write");
    client.shutdown().await.expect("FIN");
    assert_eq!(read_to_end(&mut server).await.expect("read"), b"still here");
    write_bytes(&mut server, b"yes").await.expect("write back");
    drop(server);
    assert_eq!(read_to_end(&mut client).await.expect("read back"), b"yes");
}

// ---------------------------------------------------------------------------------------
// The contract

async fn eof_after_the_peer_closes<E: Backend>(env: E) {
    let mut l = listen(&env).await;
    let (mut client, mut server) = pair(&env, &mut l).await;
    write_bytes(&mut server, b"hello").await.expect("write");
    drop(server);
    assert_eq!(read_to_end(&mut client).await.expect("read"), b"hello");
    // EOF stays EOF.
    let (res, _) = client.read(IoBuf::with_capacity(16)).await;
    assert_eq!(res.expect("read after EOF"), 0);
}

async fn half_close_leaves_the_other_direction_open<E: Backend>(env: E) {
    let mut l = listen(&env).await;
    let (client, mut server) = pair(&env, &mut l).await;
    let (mut cr, mut cw) = client.into_split();
    write_bytes(&mut cw, b"ping").await.expect("write");
    cw.shutdown().await.expect("FIN");
    // The server sees the bytes, then the FIN...
    assert_eq!(read_to_end(&mut server).await.expect("read"), b"ping");
    // ...and still answers, in several writes, before its own FIN.
    for _ in 0..3 {
        write_bytes(&mut server, b"pong")
            .await
            .expect("write after the peer's FIN");
    }
    server.shutdown().await.expect("FIN");
    assert_eq!(read_to_end(&mut cr).await.expect("read"), b"pongpongpong");
}

async fn abort_resets_the_peer<E: Backend>(env: E) {
    let mut l = listen(&env).await;

    // A whole stream, while the peer's read is already waiting.
    let (client, mut server) = pair(&env, &mut l).await;
    let env2 = &env;
    let (res, ()) = join(read_to_end(&mut server), async move {
        env2.sleep(Duration::from_millis(20)).await;
        client.abort();
    })
    .await;
    let kind = res.map(|b| b.len()).map_err(|e| e.kind());
    assert_eq!(kind, Err(ErrorKind::ConnectionReset), "abort of a whole stream");

    // The write half of a split stream: the RST goes out once the read half is gone too.
    let (client, mut server) = pair(&env, &mut l).await;
    let (r, w) = client.into_split();
    w.abort();
    drop(r);
    let kind = read_to_end(&mut server).await.map(|b| b.len()).map_err(|e| e.kind());
    assert_eq!(kind, Err(ErrorKind::ConnectionReset), "abort of a write half");

    // Writing to a reset peer fails with an error (not a signal).
    let mut failed = None;
    for _ in 0..100 {
        match server.write(IoBuf::from_vec(vec![0; 1024])).await.0 {
            Ok(_) => env.sleep(Duration::from_millis(1)).await,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let e = failed.expect("writes to a reset peer fail");
    assert!(
        matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset),
        "{e}"
    );
}

async fn large_transfers_arrive_byte_exact_both_ways<E: Backend>(env: E) {
    const BYTES: usize = 8 << 20;
    let mut l = listen(&env).await;
    let (client, server) = pair(&env, &mut l).await;
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = pattern(1, BYTES);
    let down = pattern(2, BYTES);
    let ((sent_up, got_up), (sent_down, got_down)) = join(
        join(send_in_pieces(&mut cw, &up), read_to_end(&mut sr)),
        join(send_in_pieces(&mut sw, &down), read_to_end(&mut cr)),
    )
    .await;
    sent_up.expect("client to server");
    sent_down.expect("server to client");
    assert_same_bytes("client to server", &got_up.expect("server reads"), &up);
    assert_same_bytes("server to client", &got_down.expect("client reads"), &down);
}

async fn reads_append_to_what_the_buffer_holds<E: Backend>(env: E) {
    let mut l = listen(&env).await;
    let (mut client, mut server) = pair(&env, &mut l).await;
    write_bytes(&mut server, b"cdef").await.expect("write");
    // Six bytes of room; "ab" filled after one consumed byte.
    let mut buf = IoBuf::with_capacity(6);
    buf.extend_within_capacity(b"xab");
    buf.consume(1);
    while buf.len() < 6 {
        let (res, b) = client.read(buf).await;
        buf = b;
        assert!(res.expect("read") > 0, "EOF before the bytes");
    }
    assert_eq!(buf.bytes(), b"abcdef");
    // A full buffer is refused, and comes back intact.
    let (res, buf) = client.read(buf).await;
    assert_eq!(res.map_err(|e| e.kind()), Err(ErrorKind::InvalidInput));
    assert_eq!(buf.bytes(), b"abcdef");
}

async fn addresses_match_on_both_ends<E: Backend>(env: E) {
    let mut l = listen(&env).await;
    let addr = l.local_addr().expect("listener address");
    assert_ne!(addr.port(), 0, "a port 0 bind reports the chosen port");
    let (client, accepted) = join(env.connect(addr), l.accept()).await;
    let client = client.expect("connect");
    let (server, peer) = accepted.expect("accept");
    assert_eq!(client.peer_addr().expect("peer"), addr);
    assert_eq!(server.local_addr().expect("local"), addr);
    assert_eq!(peer, client.local_addr().expect("client local"));
    assert_eq!(server.peer_addr().expect("server peer"), peer);
}

async fn connect_to_a_closed_port_is_refused<E: Backend>(env: E) {
    match env.connect(closed_port()).await {
        Ok(_) => panic!("connected to a closed port"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}"),
    }
}

async fn connect_to_a_black_hole_times_out_and_the_worker_goes_on<E: Backend>(env: E) {
    // A listener with a backlog of 0 whose queue is already full drops further SYNs: a
    // black hole on loopback.
    let hole = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    hole.bind(&loopback().into()).expect("bind");
    hole.listen(0).expect("listen");
    let hole_addr = hole.local_addr().expect("addr").as_socket().expect("inet");
    let filler = std::net::TcpStream::connect(hole_addr).expect("fill the queue");

    let limit = Duration::from_millis(200);
    let start = env.now();
    let attempt = timeout_at(&env, start + limit, env.connect(hole_addr)).await;
    assert!(attempt.is_none(), "a connect into a full queue completed");
    assert!(env.now().saturating_duration_since(start) >= limit);
    // The abandoned connect leaves the worker able to connect elsewhere.
    let mut l = listen(&env).await;
    fresh_connection_works(&env, &mut l).await;
    drop((filler, hole));
}

async fn a_read_that_loses_to_a_timeout_leaves_a_stream_that_closes_cleanly<E: Backend>(env: E) {
    let mut l = listen(&env).await;
    let (mut client, mut server) = pair(&env, &mut l).await;
    let lost = timeout_at(
        &env,
        env.now() + Duration::from_millis(100),
        client.read(IoBuf::with_capacity(1024)),
    )
    .await;
    assert!(lost.is_none(), "nothing was sent, yet the read completed");
    // By the cancellation rule the stream is closed now, never read again...
    drop(client);
    // ...and the abandoned read holds nothing open: the peer sees a clean FIN, promptly.
    let end = timeout_at(&env, env.now() + PEER_SEES_END_LIMIT, read_to_end(&mut server))
        .await
        .expect("the peer sees the end of the stream");
    assert_eq!(end.expect("a FIN, not an error"), b"");
    // The worker goes on.
    fresh_connection_works(&env, &mut l).await;
}

async fn an_accept_that_loses_to_a_timeout_leaves_the_listener_working<E: Backend>(env: E) {
    let mut l = listen(&env).await;
    for _ in 0..3 {
        let lost = timeout_at(&env, env.now() + Duration::from_millis(30), l.accept()).await;
        assert!(lost.is_none(), "accepted a connection nobody made");
    }
    fresh_connection_works(&env, &mut l).await;
}

async fn reads_losing_races_at_every_moment_leave_nothing_behind<E: Backend>(env: E) {
    // The peer writes at about the moment the read's deadline passes, so some reads are
    // dropped while waiting, some just after their bytes arrived (the kernel completes a
    // recv nobody awaits any more), some complete in time. Every stream is then dropped
    // (the cancellation rule); the worker must come out with nothing in flight.
    const ROUNDS: usize = 200;
    let mut l = listen(&env).await;
    for _ in 0..ROUNDS {
        let (mut client, mut server) = pair(&env, &mut l).await;
        let write_after = Duration::from_micros(env.random_u64() % 2000);
        let (read, _) = join(
            timeout_at(
                &env,
                env.now() + Duration::from_millis(1),
                client.read(IoBuf::with_capacity(64)),
            ),
            async {
                env.sleep(write_after).await;
                write_bytes(&mut server, b"racing").await
            },
        )
        .await;
        if let Some((res, buf)) = read {
            res.expect("a read that completes in time succeeds");
            assert!(b"racing".starts_with(buf.bytes()));
        }
    }
    // On this project's machine about a quarter of the reads complete in time: both
    // outcomes are exercised, though neither can be required of every machine.
    fresh_connection_works(&env, &mut l).await;
}

async fn hundreds_of_connections_at_once<E: Backend>(env: E) {
    // More than the io_uring backend's submission ring holds at once (256).
    const CONNECTIONS: usize = 300;
    const BYTES: usize = 4096;
    let mut l = listen(&env).await;
    let addr = l.local_addr().expect("listener address");
    let served = Rc::new(Cell::new(0usize));
    let checked = Rc::new(Cell::new(0usize));
    for i in 0..CONNECTIONS {
        let env2 = env.clone();
        let checked = checked.clone();
        env.spawn(async move {
            let mut s = env2.connect(addr).await.expect("connect");
            let data = pattern(i as u64, BYTES);
            write_bytes(&mut s, &data).await.expect("write");
            s.shutdown().await.expect("FIN");
            assert_same_bytes("echo", &read_to_end(&mut s).await.expect("read echo"), &data);
            checked.set(checked.get() + 1);
        });
    }
    for _ in 0..CONNECTIONS {
        let (mut s, _) = l.accept().await.expect("accept");
        let served = served.clone();
        env.spawn(async move {
            let got = read_to_end(&mut s).await.expect("read");
            write_bytes(&mut s, &got).await.expect("echo");
            served.set(served.get() + 1);
        });
    }
    while checked.get() < CONNECTIONS || served.get() < CONNECTIONS {
        env.sleep(Duration::from_millis(5)).await;
    }
}

/// What the HTTP pool asks of an idle backend connection: after one exchange the stream
/// sits idle, watched; nothing pending. Then the peer (a plain socket on another thread)
/// writes a byte and closes, or only closes, while this worker is busy (the thread
/// sleeps, the loop does not turn): `input_pending_now` sees it at once; the cheap
/// `input_pending` may lag, but sees it within a few turns of the loop.
async fn idle_input_is_seen_now_and_within_a_few_turns<E: Backend>(env: E) {
    use std::io::{Read, Write};
    for late in [&b"x"[..], b""] {
        let peer = std::net::TcpListener::bind(loopback()).expect("bind peer");
        let addr = peer.local_addr().expect("peer address");
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let late_bytes = late.to_vec();
        let t = std::thread::spawn(move || {
            let (mut s, _) = peer.accept().expect("accept");
            let mut req = [0u8; 3];
            s.read_exact(&mut req).expect("request");
            s.write_all(b"reply").expect("reply");
            // Until the test says so; a dropped sender ends the wait too.
            let _ = wait.recv_timeout(TEST_LIMIT);
            s.write_all(&late_bytes).expect("late bytes");
            // Dropped: FIN.
        });
        let (mut r, mut w) = env.connect(addr).await.expect("connect").into_split();
        write_bytes(&mut w, b"req").await.expect("request");
        let mut got = Vec::new();
        while got.len() < 5 {
            let (res, buf) = r.read(IoBuf::with_capacity(16)).await;
            assert!(res.expect("reply") > 0, "EOF before the reply");
            got.extend_from_slice(buf.bytes());
        }
        assert_eq!(got, b"reply");
        r.watch_input();
        env.sleep(Duration::from_millis(10)).await;
        assert!(!r.input_pending(), "nothing arrived yet (late {late:?})");
        assert!(!r.input_pending_now(), "nothing arrived yet (late {late:?})");
        go.send(()).expect("peer thread");
        t.join().expect("peer thread");
        // Busy: the bytes and the FIN are in the socket, the loop has not turned.
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            r.input_pending_now(),
            "input_pending_now missed the peer's input (late {late:?})"
        );
        let deadline = std::time::Instant::now() + PEER_SEES_END_LIMIT;
        while !r.input_pending() {
            assert!(
                std::time::Instant::now() < deadline,
                "input_pending never saw the peer's input (late {late:?})"
            );
            env.sleep(Duration::from_millis(1)).await;
        }
    }
}
