//! Loopback tests of the client engine against `loadgen serve` backends: real sockets,
//! the tokio backend, about a second per run. They check that counts add up and that
//! every kind of broken target is counted as its kind of error, within the run's
//! duration.

use gobalancer::proxy::{Shutdown, ShutdownTrigger};
use gobalancer::testbackend::{FailWith, Reply, Script};
use gobalancer_loadgen::client::Plan;
use gobalancer_loadgen::driver::{self, RunResult};
use gobalancer_loadgen::http::{build_request, Framing, RequestSpec, ResponseFraming};
use gobalancer_loadgen::report::Report;
use gobalancer_loadgen::serve::{self, ServeOptions};
use gobalancer_loadgen::stats::ErrorKind;
use gobalancer_loadgen::target::Target;
use std::net::SocketAddr;
use std::time::Duration;

/// Backends on an ephemeral loopback port; they stop when the trigger is dropped.
struct Backend {
    addr: SocketAddr,
    _stop: ShutdownTrigger,
}

fn backend(script: Script) -> Backend {
    let (stop, shutdown) = Shutdown::new();
    let opts = ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        count: 1,
        name_prefix: "b".into(),
        script,
    };
    let (addrs, _thread) = serve::start(&opts, shutdown).unwrap();
    Backend {
        addr: addrs[0],
        _stop: stop,
    }
}

fn http_plan(addr: SocketAddr, connections: u32, threads: u32, duration_ms: u64) -> Plan {
    let target = Target::parse(&format!("http://{addr}/")).unwrap();
    let spec = RequestSpec {
        method: "GET".into(),
        path: target.path.clone(),
        host: target.host_header.clone(),
        headers: vec![],
        body_bytes: 0,
        close: false,
    };
    Plan {
        request: build_request(&spec).unwrap(),
        reply: Framing::Http(ResponseFraming::new(false)),
        target,
        connections,
        threads,
        duration: Duration::from_millis(duration_ms),
        requests: None,
        warmup: Duration::ZERO,
        rate_per_s: None,
        new_conn: false,
        timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
    }
}

/// Runs `plan` and checks that it ended within its time (warm-up, duration, and a
/// two seconds of slack for thread start on a loaded machine).
// Tests may read the real clock: the bound on a whole run is what is being checked.
#[allow(clippy::disallowed_methods)]
fn run(plan: Plan) -> RunResult {
    let limit = plan.warmup + plan.duration + Duration::from_secs(2);
    plan.validate().unwrap();
    let started = std::time::Instant::now();
    let result = driver::start(plan).unwrap().wait().unwrap();
    let took = started.elapsed();
    assert!(took <= limit, "the run took {took:?}, more than {limit:?}");
    result
}

#[test]
fn http_closed_loop_counts_add_up() {
    let b = backend(Script::new("", Reply::Http));
    let mut plan = http_plan(b.addr, 4, 2, 800);
    plan.warmup = Duration::from_millis(200);
    let r = run(plan);
    let s = &r.stats;
    assert!(s.requests > 100, "only {} replies", s.requests);
    assert_eq!(s.statuses().collect::<Vec<_>>(), vec![(200, s.requests)]);
    assert_eq!(s.errors_total(), 0);
    assert_eq!(s.latency.len(), s.requests);
    // Every reply is the same size; replies in flight at the end add at most one each.
    let one = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\nX-Backend: b-1\r\nConnection: keep-alive\r\n\r\nb-1\n".len() as u64;
    assert!(s.bytes_read >= s.requests * one && s.bytes_read <= (s.requests + 4) * one);
    // The JSON report carries the same numbers back.
    let report = Report::new(r.info.clone(), s, r.elapsed).unwrap();
    let back = Report::from_json(&report.to_json().unwrap()).unwrap().stats().unwrap();
    assert_eq!(back.latency, s.latency);
}

#[test]
fn request_count_and_open_loop_rate_are_kept() {
    let b = backend(Script::new("", Reply::Http));
    let mut plan = http_plan(b.addr, 3, 1, 3_000);
    plan.requests = Some(500);
    let r = run(plan);
    assert_eq!(r.stats.requests, 500);
    assert!(r.elapsed < Duration::from_secs(3), "a -n run ends at its last reply");

    let mut plan = http_plan(b.addr, 4, 2, 1_000);
    plan.rate_per_s = Some(2_000);
    plan.new_conn = true;
    let r = run(plan);
    let n = r.stats.requests;
    // Never above the rate; the lower bound only says it ran (a loaded CI machine may
    // fall behind the schedule without that being the engine's fault).
    assert!((1_000..=2_000).contains(&n), "{n} replies at 2000/s for 1s");
    // One connect per request; a connection opened for a request whose reply was still
    // on its way when the run ended is counted as a connect, not as a reply (at most one
    // per connection slot).
    assert!(
        (n..=n + 4).contains(&r.stats.connects),
        "one connect per request: {} connects, {n} replies",
        r.stats.connects
    );
    assert_eq!(r.stats.errors_total(), 0);
}

#[test]
fn tcp_echo_round_trips() {
    let b = backend(Script::new("", Reply::Echo));
    let mut plan = http_plan(b.addr, 2, 1, 500);
    plan.target = Target::parse(&format!("tcp://{}", b.addr)).unwrap();
    plan.request = vec![b'x'; 100];
    plan.reply = Framing::tcp(100);
    let r = run(plan);
    assert!(r.stats.requests > 100);
    assert_eq!(r.stats.statuses().collect::<Vec<_>>(), vec![(0, r.stats.requests)]);
    assert_eq!(r.stats.bytes_written, r.stats.requests * 100);
    assert_eq!(r.stats.errors_total(), 0);
}

#[test]
fn a_closed_port_counts_connect_errors_and_ends_on_time() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let r = run(http_plan(port, 2, 1, 1_000));
    assert_eq!(r.stats.requests, 0);
    assert!(r.stats.errors(ErrorKind::Connect) > 10);
    assert_eq!(r.stats.errors_total(), r.stats.errors(ErrorKind::Connect));
}

#[test]
fn broken_backends_are_counted_by_kind() {
    let scripted = |fail_with| {
        let mut s = Script::new("", Reply::Http);
        s.fail_after = Some(5);
        s.fail_with = fail_with;
        backend(s)
    };
    // Cut: half a reply, then FIN.
    let b = scripted(FailWith::Cut);
    let r = run(http_plan(b.addr, 1, 1, 300));
    assert_eq!(r.stats.requests, 5);
    assert!(r.stats.errors(ErrorKind::Closed) > 0);
    assert_eq!(r.stats.errors_total(), r.stats.errors(ErrorKind::Closed));

    // Reset: RST instead of a reply.
    let b = scripted(FailWith::Reset);
    let r = run(http_plan(b.addr, 1, 1, 300));
    assert_eq!(r.stats.requests, 5);
    let resets = r.stats.errors(ErrorKind::Read) + r.stats.errors(ErrorKind::Closed) + r.stats.errors(ErrorKind::Write);
    assert!(resets > 0 && resets == r.stats.errors_total());

    // Stall: no reply at all, so every later request times out.
    let b = scripted(FailWith::Stall);
    let mut plan = http_plan(b.addr, 1, 1, 1_000);
    plan.timeout = Duration::from_millis(200);
    let r = run(plan);
    assert_eq!(r.stats.requests, 5);
    assert!((2..=5).contains(&r.stats.errors(ErrorKind::Timeout)));

    // Malformed: a raw TCP backend answering an HTTP client.
    let b = backend(Script::new("", Reply::Name));
    let r = run(http_plan(b.addr, 1, 1, 300));
    assert_eq!(r.stats.requests, 0);
    assert!(r.stats.errors(ErrorKind::Malformed) > 0);
}
