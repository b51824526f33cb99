//! Zero-copy L4 forwarding (`--splice auto`) over loopback, one connection driven at a
//! time through `proxy_connection` on a worker, so that each test sees the connection's
//! [`Outcome`] and the worker's pipe pool: large transfers both ways arrive byte-exact
//! with exact counts, after the threshold and from the first byte; half-close; a backend
//! reset mid-splice resets the client; an exhausted pipe pool falls back to copying,
//! still exact; an idle spliced connection is cut at the idle timeout; a pipe whose
//! splice was abandoned in flight is never reused. Every test runs on the tokio backend
//! (`tokio::NAME`, splice(2)) and on io_uring with each splice method (`uring::NAME`,
//! splice(2) with readiness through the ring; `uring_op::NAME`, IORING_OP_SPLICE; skipped,
//! saying why, where io_uring cannot splice). The L4 suite also runs with splice on
//! (`l4.rs`, `splice::NAME`, `uring_splice::NAME` and `uring_splice_op::NAME`).
// Tests bound their waits with the real clock.
#![allow(clippy::disallowed_methods)]
#![cfg(target_os = "linux")]

mod common;

use gobalancer::config::Config;
use gobalancer::io::tokio::{spawn_worker, TokioEnv};
use gobalancer::io::uring::{SpliceMethod, UringEnv};
use gobalancer::io::{join, BindOptions, Env, IoBuf, Listener, OwnedRead, OwnedWrite, PipePool, SplitMix64, Stream};
use gobalancer::proxy::tcp::{proxy_connection, Outcome};
use gobalancer::proxy::{Shared, SpliceSettings, Worker};
use std::future::Future;
use std::io::{self, ErrorKind};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

const TEST_LIMIT: Duration = Duration::from_secs(60);
const LISTEN: BindOptions = BindOptions {
    reuse_port: false,
    backlog: 64,
};
const BUFFER: usize = 16 * 1024;

/// Runs `body` on a tokio worker thread like the binary's, bounded by [`TEST_LIMIT`].
fn on_tokio<F, Fut>(body: F)
where
    F: FnOnce(TokioEnv) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let h = spawn_worker("splice-test".into(), move |env| async move {
        if ::tokio::time::timeout(TEST_LIMIT, body(env)).await.is_err() {
            panic!("test hung for {TEST_LIMIT:?}");
        }
    })
    .expect("worker thread");
    if let Err(panic) = h.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Runs `body` on an io_uring worker thread like the binary's, splicing with `method`,
/// bounded by [`TEST_LIMIT`].
fn on_uring<F, Fut>(method: SpliceMethod, body: F)
where
    F: FnOnce(UringEnv) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let h = gobalancer::io::uring::spawn_worker("splice-test-uring".into(), move |env| async move {
        env.set_splice_method(method);
        if ::tokio::time::timeout(TEST_LIMIT, body(env)).await.is_err() {
            panic!("test hung for {TEST_LIMIT:?}");
        }
    })
    .expect("worker thread");
    if let Err(panic) = h.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Generates `tokio::NAME`, `uring::NAME` and `uring_op::NAME` tests running `NAME(env)`
/// on a worker of each backend and splice method.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod tokio {
            $(
                #[test]
                fn $name() {
                    super::on_tokio(super::$name)
                }
            )*
        }
        mod uring {
            $(
                #[test]
                fn $name() {
                    if super::common::uring_splice_or_skip(concat!("uring::", stringify!($name))).is_some() {
                        super::on_uring(super::SpliceMethod::Syscall, super::$name)
                    }
                }
            )*
        }
        mod uring_op {
            $(
                #[test]
                fn $name() {
                    if super::common::uring_splice_op_or_skip(concat!("uring_op::", stringify!($name))).is_some() {
                        super::on_uring(super::SpliceMethod::Op, super::$name)
                    }
                }
            )*
        }
    };
}

on_both_backends!(
    large_transfers_both_ways_after_the_threshold,
    large_transfers_both_ways_from_the_first_byte,
    splice_off_copies_with_the_same_counts,
    half_close_then_a_large_reply,
    backend_reset_mid_splice_resets_the_client,
    exhausted_pipe_pool_falls_back_to_copying,
    spliced_activity_keeps_the_connection_out_of_the_idle_timeout,
    idle_spliced_connection_is_cut_and_its_clean_pipes_are_reused,
    pipe_of_an_abandoned_splice_is_never_reused,
    small_messages_past_the_threshold_are_copied,
);

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut r = SplitMix64::new(seed);
    (0..len).map(|_| r.next_u64() as u8).collect()
}

async fn send_all<W: OwnedWrite>(w: &mut W, data: &[u8]) -> io::Result<()> {
    for chunk in data.chunks(64 * 1024) {
        let (res, _) = w.write_all(IoBuf::from_vec(chunk.to_vec())).await;
        res?;
    }
    Ok(())
}

async fn read_to_end<R: OwnedRead>(r: &mut R) -> (Vec<u8>, io::Result<()>) {
    let mut out = Vec::new();
    let mut buf = IoBuf::with_capacity(64 * 1024);
    loop {
        let (res, b) = r.read(buf).await;
        buf = b;
        match res {
            Ok(0) => return (out, Ok(())),
            Ok(_) => {
                out.extend_from_slice(buf.bytes());
                buf.clear();
            }
            Err(e) => return (out, Err(e)),
        }
    }
}

/// A backend listener, the proxy's address, the shared state over that backend and a
/// worker splicing with `splice`; the proxy listener goes to [`serve`].
struct Rig<E: Env> {
    env: E,
    backend: E::Listener,
    proxy_addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    worker: Rc<Worker>,
}

async fn rig<E: Env>(env: E, splice: Option<SpliceSettings>) -> (Rig<E>, E::Listener) {
    rig_with(env, splice, "").await
}

/// As [`rig`], with `extra` top-level config fields, e.g. `timeouts: (idle: "1s"),`.
async fn rig_with<E: Env>(env: E, splice: Option<SpliceSettings>, extra: &str) -> (Rig<E>, E::Listener) {
    let any = "127.0.0.1:0".parse().expect("addr");
    let backend = env.bind(any, LISTEN).await.expect("bind backend");
    let proxy = env.bind(any, LISTEN).await.expect("bind proxy");
    let baddr = backend.local_addr().expect("addr");
    let text = format!(
        "({extra} listeners: [(name: \"t\", bind: \"127.0.0.1:1\", pool: \"p\")],
          pools: [(name: \"p\", algorithm: \"round-robin\", backends: [(address: \"{baddr}\", name: \"b0\", weight: 1)])])"
    );
    let config = Config::parse(&text, "<test>").expect("config");
    let shared = Shared::from_config(&config).expect("shared");
    let rig = Rig {
        env,
        backend,
        proxy_addr: proxy.local_addr().expect("addr"),
        shared,
        worker: Worker::with_splice(BUFFER, 16, splice),
    };
    (rig, proxy)
}

/// Serves `n` connections on `listener`; their outcomes in accept order.
fn serve<E: Env>(rig: &Rig<E>, mut listener: E::Listener, n: usize) -> ::tokio::task::JoinHandle<Vec<Outcome>> {
    let env = rig.env.clone();
    let shared = rig.shared.clone();
    let worker = rig.worker.clone();
    ::tokio::task::spawn_local(async move {
        let mut handles = Vec::new();
        for _ in 0..n {
            let (s, peer) = listener.accept().await.expect("accept");
            let env = env.clone();
            let shared = shared.clone();
            let worker = worker.clone();
            handles.push(::tokio::task::spawn_local(async move {
                proxy_connection(&env, s, peer, &shared.listeners[0], &worker).await
            }));
        }
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.expect("proxy task"));
        }
        out
    })
}

/// A backend connection that reads everything the client sends while sending `reply`,
/// then half-closes; returns what it read.
async fn exchange_backend<L: Listener>(backend: &mut L, reply: Vec<u8>) -> Vec<u8> {
    let (s, _) = backend.accept().await.expect("backend accept");
    let (mut r, mut w) = s.into_split();
    let (got, ()) = join(
        async {
            let (got, res) = read_to_end(&mut r).await;
            res.expect("backend read");
            got
        },
        async {
            send_all(&mut w, &reply).await.expect("backend write");
            w.shutdown().await.expect("backend shutdown");
        },
    )
    .await;
    got
}

/// A client connection that sends `request` and half-closes while reading the reply.
async fn exchange_client<E: Env>(env: &E, addr: std::net::SocketAddr, request: &[u8]) -> Vec<u8> {
    let c = env.connect(addr).await.expect("client connect");
    let (mut r, mut w) = c.into_split();
    let ((), got) = join(
        async {
            send_all(&mut w, request).await.expect("client write");
            w.shutdown().await.expect("client shutdown");
        },
        async {
            let (got, res) = read_to_end(&mut r).await;
            res.expect("client read");
            got
        },
    )
    .await;
    got
}

fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference at byte {i}");
    }
}

/// Large transfers both ways at once, byte-exact, with exact counts; both directions
/// spliced (a pipe each) and the pipes back in the pool, empty, afterwards.
async fn large_both_ways<E: Env>(env: E, after: u64) {
    {
        let splice = SpliceSettings {
            after,
            ..SpliceSettings::default()
        };
        let (mut rig, listener) = rig(env.clone(), Some(splice)).await;
        let outcomes = serve(&rig, listener, 1);
        let up = pattern(1, 8 * 1024 * 1024 + 123);
        let down = pattern(2, 6 * 1024 * 1024 + 4567);
        let (got_up, got_down) = join(
            exchange_backend(&mut rig.backend, down.clone()),
            exchange_client(&env, rig.proxy_addr, &up),
        )
        .await;
        assert_same("client to backend", &got_up, &up);
        assert_same("backend to client", &got_down, &down);
        let outcomes = outcomes.await.expect("serve");
        assert_eq!(
            outcomes,
            vec![Outcome::Completed {
                backend: 0,
                bytes_up: up.len() as u64,
                bytes_down: down.len() as u64,
            }]
        );
        let (_, pool) = rig.worker.splice().expect("splicing on");
        assert_eq!(pool.live(), 2, "one pipe per direction");
        assert_eq!(pool.idle(), 2, "both pipes back in the pool");
    }
}

async fn large_transfers_both_ways_after_the_threshold<E: Env>(env: E) {
    large_both_ways(env, SpliceSettings::AFTER_DEFAULT).await;
}

async fn large_transfers_both_ways_from_the_first_byte<E: Env>(env: E) {
    large_both_ways(env, 0).await;
}

async fn splice_off_copies_with_the_same_counts<E: Env>(env: E) {
    {
        let (mut rig, listener) = rig(env.clone(), None).await;
        let outcomes = serve(&rig, listener, 1);
        let up = pattern(3, 3 * 1024 * 1024 + 1);
        let down = pattern(4, 2 * 1024 * 1024 + 7);
        let (got_up, got_down) = join(
            exchange_backend(&mut rig.backend, down.clone()),
            exchange_client(&env, rig.proxy_addr, &up),
        )
        .await;
        assert_same("client to backend", &got_up, &up);
        assert_same("backend to client", &got_down, &down);
        assert_eq!(
            outcomes.await.expect("serve"),
            vec![Outcome::Completed {
                backend: 0,
                bytes_up: up.len() as u64,
                bytes_down: down.len() as u64,
            }]
        );
        assert!(rig.worker.splice().is_none());
    }
}

/// The client half-closes after its request; the backend reads to EOF, then sends a
/// large reply, which the client still gets whole.
async fn half_close_then_a_large_reply<E: Env>(env: E) {
    {
        let splice = SpliceSettings {
            after: 0,
            ..SpliceSettings::default()
        };
        let (mut rig, listener) = rig(env.clone(), Some(splice)).await;
        let outcomes = serve(&rig, listener, 1);
        let request = pattern(5, 100_000);
        let reply = pattern(6, 4 * 1024 * 1024 + 99);
        let backend = async {
            let (s, _) = rig.backend.accept().await.expect("backend accept");
            let (mut r, mut w) = s.into_split();
            let (got, res) = read_to_end(&mut r).await;
            res.expect("backend read");
            // Only after the client's FIN arrived: the other direction is still open.
            send_all(&mut w, &reply).await.expect("backend write");
            w.shutdown().await.expect("backend shutdown");
            got
        };
        let client = async {
            let c = env.connect(rig.proxy_addr).await.expect("client connect");
            let (mut r, mut w) = c.into_split();
            send_all(&mut w, &request).await.expect("client write");
            w.shutdown().await.expect("client shutdown");
            let (got, res) = read_to_end(&mut r).await;
            res.expect("client read");
            got
        };
        let (got_req, got_reply) = join(backend, client).await;
        assert_same("request", &got_req, &request);
        assert_same("reply", &got_reply, &reply);
        assert_eq!(
            outcomes.await.expect("serve"),
            vec![Outcome::Completed {
                backend: 0,
                bytes_up: request.len() as u64,
                bytes_down: reply.len() as u64,
            }]
        );
    }
}

/// The backend resets the connection in the middle of a spliced reply: the client gets
/// a reset, never a clean end, and the outcome says the backend failed.
async fn backend_reset_mid_splice_resets_the_client<E: Env>(env: E) {
    {
        let splice = SpliceSettings {
            after: 0,
            ..SpliceSettings::default()
        };
        let (mut rig, listener) = rig(env.clone(), Some(splice)).await;
        let outcomes = serve(&rig, listener, 1);
        let reply = pattern(7, 16 * 1024 * 1024);
        let backend = async {
            let (mut s, _) = rig.backend.accept().await.expect("backend accept");
            send_all(&mut s, &reply).await.expect("backend write");
            // At once: part of the reply is still in the backend's send buffer, the
            // proxy's pipe or its sockets.
            s.abort();
        };
        let client = async {
            let c = env.connect(rig.proxy_addr).await.expect("client connect");
            let (mut r, _w) = c.into_split();
            // Slow to start reading, so that the transfer backs up through the splice.
            env.sleep(Duration::from_millis(100)).await;
            read_to_end(&mut r).await
        };
        let ((), (got, res)) = join(backend, client).await;
        assert!(got.len() <= reply.len());
        assert_same("reply before the reset", &got, &reply[..got.len()]);
        let err = res.expect_err("the client must not see a clean end");
        assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
        assert_eq!(
            outcomes.await.expect("serve"),
            vec![Outcome::BackendFailed { backend: 0 }]
        );
    }
}

/// A pool of one pipe and two connections at once: one direction gets the pipe, the
/// other three copy, and every byte and count is still exact.
async fn exhausted_pipe_pool_falls_back_to_copying<E: Env>(env: E) {
    {
        let splice = SpliceSettings {
            after: 0,
            pipes_max: 1,
            ..SpliceSettings::default()
        };
        let (mut rig, listener) = rig(env.clone(), Some(splice)).await;
        let outcomes = serve(&rig, listener, 2);
        let sizes = [
            (3 * 1024 * 1024 + 11, 2 * 1024 * 1024 + 13),
            (2 * 1024 * 1024 + 17, 3 * 1024 * 1024 + 19),
        ];
        let mut want = Vec::new();
        for (i, (u, d)) in sizes.iter().enumerate() {
            want.push((pattern(10 + i as u64, *u), pattern(20 + i as u64, *d)));
        }
        // Connect both first, so that both connections are open at once.
        let c0 = env.connect(rig.proxy_addr).await.expect("connect");
        let c1 = env.connect(rig.proxy_addr).await.expect("connect");
        let (b0, _) = rig.backend.accept().await.expect("backend accept");
        let (b1, _) = rig.backend.accept().await.expect("backend accept");
        async fn both<S: Stream>(s: S, send: &[u8]) -> Vec<u8> {
            let (mut r, mut w) = s.into_split();
            let ((), got) = join(
                async {
                    send_all(&mut w, send).await.expect("write");
                    w.shutdown().await.expect("shutdown");
                },
                async {
                    let (got, res) = read_to_end(&mut r).await;
                    res.expect("read");
                    got
                },
            )
            .await;
            got
        }
        // Connections are accepted in order, so client i pairs with backend i.
        let ((g_c0, g_b0), (g_c1, g_b1)) = join(
            join(both(c0, &want[0].0), both(b0, &want[0].1)),
            join(both(c1, &want[1].0), both(b1, &want[1].1)),
        )
        .await;
        assert_same("conn 0 down", &g_c0, &want[0].1);
        assert_same("conn 0 up", &g_b0, &want[0].0);
        assert_same("conn 1 down", &g_c1, &want[1].1);
        assert_same("conn 1 up", &g_b1, &want[1].0);
        let outcomes = outcomes.await.expect("serve");
        for (i, o) in outcomes.iter().enumerate() {
            assert_eq!(
                *o,
                Outcome::Completed {
                    backend: 0,
                    bytes_up: want[i].0.len() as u64,
                    bytes_down: want[i].1.len() as u64,
                },
                "connection {i}"
            );
        }
        let (_, pool) = rig.worker.splice().expect("splicing on");
        assert_eq!(pool.live(), 1, "never more pipes than the pool's maximum");
        assert_eq!(pool.idle(), 1);
    }
}

/// A spliced transfer that trickles for several idle timeouts is not cut: every splice
/// counts as activity. Then, once nothing moves, the idle timeout closes it.
async fn spliced_activity_keeps_the_connection_out_of_the_idle_timeout<E: Env>(env: E) {
    {
        let splice = SpliceSettings {
            after: 0,
            ..SpliceSettings::default()
        };
        let (mut rig, listener) = rig_with(env.clone(), Some(splice), "timeouts: (idle: \"300ms\"),").await;
        let outcomes = serve(&rig, listener, 2);
        let chunk = pattern(8, 64 * 1024);
        let rounds = 10;
        let backend = async {
            let (s, _) = rig.backend.accept().await.expect("backend accept");
            let (mut r, mut w) = s.into_split();
            let (got, res) = read_to_end(&mut r).await;
            res.expect("backend read");
            w.shutdown().await.expect("backend shutdown");
            got
        };
        let client = async {
            let c = env.connect(rig.proxy_addr).await.expect("client connect");
            let (mut r, mut w) = c.into_split();
            for _ in 0..rounds {
                send_all(&mut w, &chunk).await.expect("client write");
                env.sleep(Duration::from_millis(100)).await;
            }
            w.shutdown().await.expect("client shutdown");
            let (got, res) = read_to_end(&mut r).await;
            res.expect("client read");
            got
        };
        let (got, back) = join(backend, client).await;
        assert_eq!(got.len(), chunk.len() * rounds);
        assert!(back.is_empty());
        // A second connection on which nothing moves is closed at the idle timeout.
        let idle = env.connect(rig.proxy_addr).await.expect("client connect");
        let (_b, _) = rig.backend.accept().await.expect("backend accept");
        let outcomes = outcomes.await.expect("serve");
        drop(idle);
        assert_eq!(
            outcomes,
            vec![
                Outcome::Completed {
                    backend: 0,
                    bytes_up: (chunk.len() * rounds) as u64,
                    bytes_down: 0,
                },
                Outcome::IdleTimeout { backend: 0 },
            ]
        );
    }
}

/// An idle spliced connection (every direction waiting for its source) is cut at the
/// idle timeout; its pipes never held a byte nor an operation in flight, so they go
/// back to the pool and serve the next connection, exact.
async fn idle_spliced_connection_is_cut_and_its_clean_pipes_are_reused<E: Env>(env: E) {
    let splice = SpliceSettings {
        after: 0,
        pipes_max: 2,
        ..SpliceSettings::default()
    };
    let (mut rig, listener) = rig_with(env.clone(), Some(splice), "timeouts: (idle: \"300ms\"),").await;
    let outcomes = serve(&rig, listener, 2);
    let idle = env.connect(rig.proxy_addr).await.expect("client connect");
    let (idle_b, _) = rig.backend.accept().await.expect("backend accept");
    let up = pattern(30, 1024 * 1024 + 3);
    let down = pattern(31, 512 * 1024 + 5);
    // Long after the idle timeout of the first connection.
    env.sleep(Duration::from_millis(600)).await;
    let (got_up, got_down) = join(
        exchange_backend(&mut rig.backend, down.clone()),
        exchange_client(&env, rig.proxy_addr, &up),
    )
    .await;
    assert_same("client to backend", &got_up, &up);
    assert_same("backend to client", &got_down, &down);
    drop((idle, idle_b));
    assert_eq!(
        outcomes.await.expect("serve"),
        vec![
            Outcome::IdleTimeout { backend: 0 },
            Outcome::Completed {
                backend: 0,
                bytes_up: up.len() as u64,
                bytes_down: down.len() as u64,
            },
        ]
    );
    let (_, pool) = rig.worker.splice().expect("splicing on");
    assert_eq!(pool.live(), 2, "the idle connection's pipes were reused");
    assert_eq!(pool.idle(), 2);
}

/// A connected pair on `listener`: (client side, server side).
async fn pair<E: Env>(env: &E, listener: &mut E::Listener) -> (E::Stream, E::Stream) {
    let addr = listener.local_addr().expect("addr");
    let (c, s) = join(env.connect(addr), listener.accept()).await;
    (c.expect("connect"), s.expect("accept").0)
}

/// A fill dropped while its io_uring splice is in flight (a connection cut by a timeout
/// in the middle of a splice) leaves the pipe marked; the pool closes it instead of
/// reusing it, and the next pipe carries only its own connection's bytes. On the tokio
/// backend a splice is a system call that is never in flight across an await.
async fn pipe_of_an_abandoned_splice_is_never_reused<E: Env>(env: E) {
    // Only IORING_OP_SPLICE can be abandoned in flight; splice(2) is done when it returns.
    let uring = (&env as &dyn std::any::Any)
        .downcast_ref::<UringEnv>()
        .filter(|u| u.splice_method() == SpliceMethod::Op)
        .cloned();
    let any = "127.0.0.1:0".parse().expect("addr");
    let mut listener = env.bind(any, LISTEN).await.expect("bind");
    let pool = PipePool::new(4, 64 * 1024);
    {
        let (mut a_client, mut a_server) = pair(&env, &mut listener).await;
        let (mut b_client, _b_server) = pair(&env, &mut listener).await;
        send_all(&mut a_client, &pattern(40, 200_000)).await.expect("write");
        env.sleep(Duration::from_millis(50)).await;
        let mut pipe = pool.take().expect("a pipe");
        {
            let mut sp = a_server.splice_to(&mut b_client).expect("this pair splices");
            let mut fill = Box::pin(sp.fill(&mut pipe));
            let first = std::future::poll_fn(|cx| std::task::Poll::Ready(fill.as_mut().poll(cx))).await;
            if uring.is_some() {
                assert!(first.is_pending(), "an io_uring splice completes through the ring");
            }
            // Dropped here, in flight on io_uring: the cut.
        }
        assert_eq!(pipe.in_flight(), uring.is_some());
        let reusable = !pipe.in_flight() && pipe.pending() == 0;
        pool.give(pipe);
        if uring.is_some() {
            assert_eq!(pool.idle(), 0, "a pipe with an abandoned splice is not kept");
            assert_eq!(pool.live(), 0);
        } else {
            assert_eq!(pool.idle(), usize::from(reusable));
        }
    }
    if let Some(u) = &uring {
        // The cancelled splice completes; its descriptors close then.
        for _ in 0..500 {
            if u.ops_in_flight() == 0 {
                break;
            }
            env.sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(u.ops_in_flight(), 0, "the abandoned splice never completed");
    }
    // A new connection through the next pipe gets its own bytes, exactly.
    let (mut c_client, mut c_server) = pair(&env, &mut listener).await;
    let (mut d_client, mut d_server) = pair(&env, &mut listener).await;
    let data = pattern(41, 300_000);
    let mut pipe = pool.take().expect("a pipe");
    let (got, moved) = join(
        async {
            send_all(&mut c_client, &data).await.expect("write");
            c_client.shutdown().await.expect("shutdown");
            let mut got = Vec::new();
            let mut buf = IoBuf::with_capacity(64 * 1024);
            while got.len() < data.len() {
                let (res, b) = d_server.read(buf).await;
                buf = b;
                match res {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        got.extend_from_slice(buf.bytes());
                        buf.clear();
                    }
                }
            }
            got
        },
        async {
            let mut sp = c_server.splice_to(&mut d_client).expect("this pair splices");
            let mut moved = 0usize;
            loop {
                match sp.fill(&mut pipe).await.expect("fill") {
                    0 => break,
                    _ => {
                        while pipe.pending() > 0 {
                            moved += sp.flush(&mut pipe).await.expect("flush");
                        }
                    }
                }
            }
            moved
        },
    )
    .await;
    assert_eq!(moved, data.len());
    assert_same("through the next pipe", &got, &data);
    pool.give(pipe);
    assert_eq!(pool.idle(), 1);
}

/// Reads exactly `n` bytes (fewer only at EOF).
async fn read_n<R: OwnedRead>(r: &mut R, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < n {
        let (res, buf) = r.read(IoBuf::with_capacity(n - out.len())).await;
        match res.expect("read") {
            0 => break,
            _ => out.extend_from_slice(buf.bytes()),
        }
    }
    out
}

/// Splice-auto splices bulk, not chatter: a connection that carries small requests and
/// replies (200 round trips of 64 bytes each way, 12,800 bytes, past a 1 KiB threshold)
/// never fills a buffer, so it keeps copying: no pipe is taken, and the counts are
/// exact. (A pipe round trip per small message cost more than the copy: on io_uring each
/// splice runs on a kernel worker thread.)
async fn small_messages_past_the_threshold_are_copied<E: Env>(env: E) {
    const ROUNDS: usize = 200;
    const SIZE: usize = 64;
    let splice = SpliceSettings {
        after: 1024,
        ..SpliceSettings::default()
    };
    let (mut rig, listener) = rig(env.clone(), Some(splice)).await;
    let outcomes = serve(&rig, listener, 1);
    let proxy_addr = rig.proxy_addr;
    let backend = &mut rig.backend;
    let client = async {
        let c = env.connect(proxy_addr).await.expect("client connect");
        let (mut r, mut w) = c.into_split();
        for i in 0..ROUNDS {
            let msg = pattern(i as u64, SIZE);
            send_all(&mut w, &msg).await.expect("client write");
            assert_same("echo", &read_n(&mut r, SIZE).await, &msg);
        }
        w.shutdown().await.expect("client shutdown");
        let (rest, res) = read_to_end(&mut r).await;
        res.expect("client read");
        assert!(rest.is_empty(), "nothing after the echoes");
    };
    let echo = async {
        let (s, _) = backend.accept().await.expect("backend accept");
        let (mut r, mut w) = s.into_split();
        for _ in 0..ROUNDS {
            let got = read_n(&mut r, SIZE).await;
            send_all(&mut w, &got).await.expect("backend write");
        }
        let (rest, res) = read_to_end(&mut r).await;
        res.expect("backend read");
        assert!(rest.is_empty(), "nothing after the requests");
        w.shutdown().await.expect("backend shutdown");
    };
    join(client, echo).await;
    let total = (ROUNDS * SIZE) as u64;
    assert_eq!(
        outcomes.await.expect("serve"),
        vec![Outcome::Completed {
            backend: 0,
            bytes_up: total,
            bytes_down: total,
        }]
    );
    let (_, pool) = rig.worker.splice().expect("splicing on");
    assert_eq!(pool.live(), 0, "no pipe taken: small messages are copied");
}
