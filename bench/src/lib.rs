//! The hot functions that gobalancer's benchmarks measure, in one registry shared by the
//! criterion benches (`benches/`, wall time) and the instruction-count harness
//! (`src/bin/icount.rs`, run under valgrind by `scripts/perf-gate.sh`).
//!
//! Keeping one list means that the gate and the timings measure exactly the same code.
//! Every workload is deterministic (fixed seeds, fixed inputs): the instruction counts
//! must repeat exactly from run to run, or a 5% gate would be noise.
//!
//! A [`Workload`] is set up once (building a 10,000-backend balancer is not what is being
//! measured) and then called once per iteration; each call returns a value that the
//! caller passes through `black_box`, so that the work cannot be optimised away.

use gobalancer::balancer::{Algorithm, Balancer, PickKey};
use gobalancer::config::Config;
use gobalancer::io::SplitMix64;
use gobalancer_loadgen::http::{Framing, ResponseFraming, Step};
use gobalancer_loadgen::stats::Stats;

/// The annotated example configuration: every field, two pools' worth of structure.
pub const EXAMPLE_CONFIG: &str = include_str!("../../config/example.ron");

/// One iteration of a workload; returns something for `black_box`.
pub type Iteration = Box<dyn FnMut() -> u64>;

/// A named hot function.
pub struct Workload {
    /// Name, `group/function/size`; the key of its baseline.
    pub name: String,
    /// Iterations per measurement in the instruction-count harness: enough that the
    /// per-iteration count is exact to a hundredth, few enough that valgrind (about 50
    /// times slower than native) takes well under a second.
    pub icount_iters: u64,
    /// Builds the state and returns the iteration.
    pub setup: Box<dyn Fn() -> Iteration>,
}

/// Backend counts of the instruction-count picks. Criterion's pick bench covers more
/// sizes; under valgrind a 100,000-backend Maglev table takes seconds to build.
pub const ICOUNT_PICK_SIZES: [usize; 2] = [10, 10_000];

/// A balancer of `n` backends with weights 1 to 4, as the pick benches use.
pub fn balancer(algorithm: Algorithm, n: usize) -> Balancer {
    let weights: Vec<u32> = (0..n).map(|i| 1 + (i % 4) as u32).collect();
    Balancer::new(algorithm, &weights)
}

/// One pick: a selection's first candidate and its lease, dropped at once (so the
/// active counter goes up and down, as on a real connection).
pub fn pick_iteration(balancer: Balancer, seed: u64) -> Iteration {
    let mut rng = SplitMix64::new(seed);
    Box::new(move || {
        let key = PickKey {
            client: rng.next_u64(),
            random: rng.next_u64(),
        };
        let lease = balancer.select(std::hint::black_box(key)).next();
        lease.map_or(u64::MAX, |l| l.index() as u64)
    })
}

/// A typical response of a small HTTP API, as loadgen frames it on every reply.
pub const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: gobalancer-bench\r\nDate: Thu, 26 Nov 2026 10:00:00 GMT\r\nContent-Type: application/json\r\nContent-Length: 27\r\nX-Backend: backend-1\r\nConnection: keep-alive\r\n\r\n{\"ok\":true,\"items\":[1,2,3]}";

/// The same body, chunked in three pieces.
pub const CHUNKED_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n{\"ok\":tru\r\n9\r\ne,\"items\"\r\n9\r\n:[1,2,3]}\r\n0\r\n\r\n";

fn frame_iteration(bytes: &'static [u8]) -> Iteration {
    let mut f = Framing::Http(ResponseFraming::new(false));
    Box::new(move || match f.feed(std::hint::black_box(bytes)) {
        Ok((n, Step::Done(r))) => n as u64 + r.body_bytes,
        _ => u64::MAX,
    })
}

/// A small GET as a load generator sends it.
pub const GET_REQUEST: &[u8] =
    b"GET /api/items?id=42 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: loadgen\r\nAccept: */*\r\n\r\n";

/// A browser's GET: a dozen fields, cookies, the usual head of real traffic.
pub const BROWSER_REQUEST: &[u8] = b"GET /static/app.js?v=3 HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0\r\nAccept: */*\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br, zstd\r\nReferer: https://www.example.com/\r\nConnection: keep-alive\r\nCookie: session=7f3a9c2e1b; theme=dark; consent=yes\r\nSec-Fetch-Dest: script\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Site: same-origin\r\nPriority: u=1\r\n\r\n";

/// A 16 KiB body in 1 KiB chunks, with its terminator.
pub fn chunked_body_16k() -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..16 {
        out.extend_from_slice(b"400\r\n");
        out.extend(std::iter::repeat_n(b'x', 1024));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// The L7 proxy's per-request work in the codec: parse a request head, write the
/// forwarded head, parse a response head, write it back. Heads are parsed into a head
/// kept from the previous iteration, as the proxy does with its per-worker pool of
/// heads (a fresh `parse_request` adds the allocations of a new head).
fn http_workloads(w: &mut Vec<Workload>) {
    use gobalancer::http::{self, BodyKind, Forwarding, Limits, ResponseFraming as Out, Underscores};
    for (name, bytes) in [("small-get", GET_REQUEST), ("browser", BROWSER_REQUEST)] {
        w.push(Workload {
            name: format!("http/parse-request/{name}"),
            icount_iters: 5_000,
            setup: Box::new(move || {
                let mut head = http::RequestHead::empty();
                Box::new(move || {
                    let limits = Limits::default();
                    match http::parse_request_into(std::hint::black_box(bytes), &limits, Underscores::Drop, &mut head) {
                        Ok(true) => head.head_len as u64,
                        _ => u64::MAX,
                    }
                })
            }),
        });
    }
    w.push(Workload {
        name: "http/forward-request/browser".into(),
        icount_iters: 5_000,
        setup: Box::new(|| {
            let limits = Limits::default();
            let head = http::parse_request(BROWSER_REQUEST, &limits, Underscores::Drop);
            let mut out = Vec::with_capacity(1024);
            Box::new(move || {
                let Ok(Some(head)) = head.as_ref() else {
                    return u64::MAX;
                };
                let fwd = Forwarding {
                    client_ip: std::net::Ipv4Addr::new(10, 1, 2, 3).into(),
                    proto: "http",
                    body: BodyKind::None,
                    keep_alive: true,
                    upgrade: false,
                };
                out.clear();
                match http::write_request(std::hint::black_box(head), &fwd, &mut out) {
                    Ok(()) => out.len() as u64,
                    Err(_) => u64::MAX,
                }
            })
        }),
    });
    w.push(Workload {
        name: "http/relay-response/small".into(),
        icount_iters: 5_000,
        setup: Box::new(|| {
            let mut out = Vec::with_capacity(1024);
            let mut h = http::ResponseHead::empty();
            Box::new(move || {
                match http::parse_response_into(std::hint::black_box(RESPONSE), &Limits::default(), false, &mut h) {
                    Ok(true) => {
                        out.clear();
                        let framing = Out {
                            body: h.body,
                            keep_alive: true,
                            upgrade: false,
                        };
                        http::write_response(&h, &framing, &mut out);
                        out.len() as u64
                    }
                    _ => u64::MAX,
                }
            })
        }),
    });
    w.push(Workload {
        name: "http/dechunk/16KiB".into(),
        icount_iters: 500,
        setup: Box::new(|| {
            let body = chunked_body_16k();
            Box::new(move || {
                let mut dec = http::ChunkedDecoder::new(&Limits::default());
                let mut pos = 0usize;
                let mut payload = 0u64;
                loop {
                    let rest = body.get(pos..).unwrap_or(&[]);
                    match dec.decode(std::hint::black_box(rest)) {
                        Ok(d) => {
                            payload += d.data.len() as u64;
                            pos += d.consumed;
                            if d.done {
                                return payload;
                            }
                            if d.consumed == 0 {
                                return u64::MAX;
                            }
                        }
                        Err(_) => return u64::MAX,
                    }
                }
            })
        }),
    });
}

/// Every workload, in a fixed order.
pub fn workloads() -> Vec<Workload> {
    let mut w = Vec::new();
    for algorithm in Algorithm::ALL {
        for n in ICOUNT_PICK_SIZES {
            w.push(Workload {
                name: format!("pick/{algorithm}/{n}"),
                icount_iters: 10_000,
                setup: Box::new(move || pick_iteration(balancer(algorithm, n), 42)),
            });
        }
    }
    w.push(Workload {
        name: "config/parse/example".into(),
        icount_iters: 20,
        setup: Box::new(|| {
            Box::new(
                || match Config::parse(std::hint::black_box(EXAMPLE_CONFIG), "example.ron") {
                    Ok(c) => c.listeners.len() as u64,
                    Err(_) => u64::MAX,
                },
            )
        }),
    });
    w.push(Workload {
        name: "loadgen/frame/content-length".into(),
        icount_iters: 5_000,
        setup: Box::new(|| frame_iteration(RESPONSE)),
    });
    w.push(Workload {
        name: "loadgen/frame/chunked".into(),
        icount_iters: 5_000,
        setup: Box::new(|| frame_iteration(CHUNKED_RESPONSE)),
    });
    w.push(Workload {
        name: "loadgen/record".into(),
        icount_iters: 10_000,
        setup: Box::new(|| {
            let mut stats = Stats::new();
            let mut rng = SplitMix64::new(7);
            Box::new(move || {
                // Latencies from 10 us to about 1 ms, the loopback range.
                let ns = 10_000 + rng.next_u64() % 1_000_000;
                stats.record_reply(200, ns);
                stats.requests
            })
        }),
    });
    http_workloads(&mut w);
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workload_runs_and_names_are_unique() {
        let all = workloads();
        let mut names: Vec<&str> = all.iter().map(|w| w.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len());
        for w in &all {
            if w.name.ends_with("/10000") {
                continue; // Built in debug mode these take long; criterion covers them.
            }
            let mut it = (w.setup)();
            let v = it();
            assert_ne!(v, u64::MAX, "{} failed", w.name);
        }
    }

    #[test]
    fn framing_inputs_are_whole_responses() {
        for bytes in [RESPONSE, CHUNKED_RESPONSE] {
            let mut f = ResponseFraming::new(false);
            assert!(matches!(f.feed(bytes), Ok((n, Step::Done(_))) if n == bytes.len()));
        }
    }
}
