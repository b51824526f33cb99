//! The oracle: after every run, checks the invariants of RELIABILITY.md section E and
//! the scenario's own expectations, and says what it measured.
//!
//! What "a request" means here: one request of the workload, written by loadgen's
//! client engine with a unique id (`X-Req-Id`, also in its path), carried by the L4
//! proxy, recorded by the backend that received it and echoed in the reply.
//!
//! - **I1, exactly one outcome**: every request written ends exactly once (a reply, a
//!   failure, a timeout, or the end of the run), unless its own client crashed or
//!   restarted while it was in flight. A reply is the reply to *this* request (its
//!   echoed id), from the backend that received it, with one status line and nothing
//!   after it; no backend receives a request no client sent.
//! - **I2, at most once**: no request is received more than once by the backends
//!   (non-idempotent ones never; idempotent ones at most `1 + retries`, and the L4
//!   proxy never retries a request it has written, so `retries` is 0).
//!
//! With an `http` (L7) listener the proxy answers some requests itself and retries
//! some, so three rules read differently (and only there):
//!
//! - **I1**: a reply without `X-Backend` and `X-Req-Id` is the proxy's own; for a
//!   well-formed workload request it may only be 502, 503 or 504. A 503 means no
//!   backend took the request, so no backend may have received it; a 504 comes no
//!   sooner than `timeouts.response` after the request was sent. A backend's reply
//!   must come from a backend that received the request and wrote a reply to it.
//! - **I2**: an idempotent request is received at most `1 + http.retries` times. Each
//!   retry goes to a backend that had not received it yet, except a re-send on a
//!   fresh connection to the same backend after a reused (pooled) connection failed
//!   (C7: the reception before it came on a reused connection of that backend),
//!   which counts as one of the retries too. No
//!   request is received again after a backend wrote reply bytes to it, unless the
//!   link to that backend or a host on it was faulted in between (the bytes may then
//!   never have reached the proxy). Non-idempotent requests: at most once, as in L4.
//! - **I5**: at quiescence the balancer also holds its pooled idle backend
//!   connections (`Worker::pooled_idle_connections`, at most `http.pool_idle_max`
//!   per backend), each one stream on the balancer and one on a backend: the
//!   balancer may hold that many more streams, each backend at most that many, and
//!   the backends together at most that many beyond their own allowances.
//! - **I3, drain**: after each applied reload (the reload faults, through the core's
//!   `reload::Live`), a backend it removed or set to weight 0 gets no new connection
//!   (no pick after the reload instant, until a later reload brings it back), and a
//!   request in flight on it is not cut before the reload plus `timeouts.drain`;
//!   `drained_cut_total` counts at least the requests cut at that deadline. A refused
//!   reload (D6) keeps the generation in force and adds exactly one to
//!   `config_reload_failures_total`.
//! - **I4, liveness**: idempotent requests sent after the last fault plus a grace
//!   period succeed (at least `expect.liveness.min` of them, default all).
//! - **I5, conservation**: between every two steps, no counter below zero, the
//!   per-backend active counts add up to the total, and no more leases than open client
//!   connections; at quiescence, no lease and no client connection is left, and no
//!   client host holds a stream (the balancer only its health probes).
//! - **I6, no panic**: a panic or a host error anywhere fails the seed.

use crate::log::{Reception, What};
use crate::runner::RunOutput;
use crate::scenario::{is_idempotent, Fault, Prepared};
use gobalancer::balancer::WEIGHT_SCALE;
use gobalancer_loadgen::client::TapOutcome;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Retries of a request the L4 proxy has written: none (it only moves on to another
/// backend when the connect fails, before any byte of the request was sent).
pub const L4_RETRIES: u32 = 0;
/// Examples kept per kind of violation.
const EXAMPLES_MAX: usize = 3;

/// A broken invariant or expectation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// `I1` to `I6`, or `expect`.
    pub rule: &'static str,
    /// What went wrong, with an example or a count.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.message)
    }
}

/// A backend's death (crash, or cut off from the balancer) and when its last pick came.
#[derive(Clone, Debug)]
pub struct Detection {
    /// Backend name.
    pub backend: String,
    /// When it died.
    pub died: Duration,
    /// Why.
    pub cause: String,
    /// Last pick after the death (before it came back), if any.
    pub last_pick: Option<Duration>,
    /// Picks after the death.
    pub picks: u64,
    /// Time from the death to the last pick (zero without one).
    pub took: Duration,
}

/// A backend's recovery and when it was back at full weight.
#[derive(Clone, Debug)]
pub struct Recovery {
    /// Backend name.
    pub backend: String,
    /// When it came back.
    pub back: Duration,
    /// Why.
    pub cause: String,
    /// Time to full weight, if reached before it died again or the run ended.
    pub took: Option<Duration>,
    /// How long there was to reach it.
    pub window: Duration,
}

/// Everything the oracle found for one seed.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Digest of the trace and its length.
    pub digest: (u64, u64),
    /// Requests written.
    pub sent: u64,
    /// Complete replies, by status.
    pub replies: BTreeMap<u16, u64>,
    /// Other outcomes, by kind.
    pub failures: BTreeMap<String, u64>,
    /// In flight when the run ended.
    pub run_over: u64,
    /// Lost with their client (crash or restart).
    pub client_lost: u64,
    /// Requests received per backend (by scenario order), and in all.
    pub received: Vec<(String, u64)>,
    /// Deaths and last picks.
    pub detections: Vec<Detection>,
    /// Recoveries and full weight.
    pub recoveries: Vec<Recovery>,
    /// Liveness window start, requests in it, and their success rate.
    pub liveness: Option<(Duration, u64, f64)>,
    /// Stream counts at quiescence.
    pub streams: Vec<(String, usize)>,
    /// Pooled idle backend connections of the balancer at quiescence (L7).
    pub pooled_idle: Option<usize>,
    /// Responses of the proxy's own (L7), by status.
    pub ours: BTreeMap<u16, u64>,
    /// Receptions beyond the first (L7): retries on another backend, and re-sends on a
    /// fresh connection after a reused one failed (C7).
    pub resent: (u64, u64),
    /// Connects that yielded no stream, per host.
    pub failed_connects: BTreeMap<String, u64>,
    /// Most active leases at once.
    pub total_active_max: u64,
    /// Counters at the end: total active, open client connections.
    pub at_end: Option<(u64, usize)>,
    /// Reloads applied and refused.
    pub reloads: (u64, u64),
    /// Requests in flight on a drained backend at its reload that got their reply.
    pub drain_finished: u64,
    /// Requests in flight on a drained backend that failed at or after its deadline.
    pub drain_cut: u64,
    /// `drained_cut_total` of the workload's pool at the end.
    pub drained_cut_total: u64,
    /// Broken rules.
    pub violations: Vec<Violation>,
    /// Simulated time the run took.
    pub elapsed: Duration,
}

impl Report {
    /// Requests that got a complete reply.
    pub fn replied(&self) -> u64 {
        self.replies.values().sum()
    }
}

/// Collects violations of one kind: a count and the first few examples.
struct Tally {
    rule: &'static str,
    what: &'static str,
    count: u64,
    examples: Vec<String>,
}

impl Tally {
    fn new(rule: &'static str, what: &'static str) -> Tally {
        Tally {
            rule,
            what,
            count: 0,
            examples: Vec::new(),
        }
    }

    fn add(&mut self, example: impl FnOnce() -> String) {
        self.count += 1;
        if self.examples.len() < EXAMPLES_MAX {
            self.examples.push(example());
        }
    }

    fn finish(self, out: &mut Vec<Violation>) {
        if self.count > 0 {
            out.push(Violation {
                rule: self.rule,
                message: format!("{} ({}), e.g. {}", self.what, self.count, self.examples.join("; ")),
            });
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

/// Whether a backend is dead, and why, as the timeline goes.
#[derive(Clone, Debug, Default)]
struct Alive {
    crashed: bool,
    cut: bool,
    held: bool,
    refusing: bool,
}

impl Alive {
    fn dead(&self) -> bool {
        self.crashed || self.cut || self.held || self.refusing
    }
}

/// Whether a request's reply is one of the L7 proxy's own: it names neither the
/// request nor a backend.
fn is_ours(q: &crate::log::Request) -> bool {
    q.reply.as_ref().is_some_and(|m| m.id.is_none() && m.backend.is_none())
}

/// Checks one run.
pub fn check(p: &Prepared, out: &RunOutput) -> Report {
    let s = &p.scenario;
    let log = &out.log;
    let end = s.duration.0;
    let mut r = Report {
        seed: out.seed,
        digest: log.digest(),
        elapsed: out.elapsed,
        total_active_max: out.counters.total_active_max,
        ..Report::default()
    };
    let mut v = Vec::new();
    let backend_names: Vec<&str> = s.backends.iter().map(|b| b.name.as_str()).collect();

    // Client crashes and restarts: a request in flight then has no outcome (I1 (c)).
    let mut client_kills: Vec<Vec<Duration>> = vec![Vec::new(); s.clients.len()];
    for f in &out.faults {
        if let Fault::Crash(h) | Fault::Bounce(h) = &f.fault {
            if let Some(i) = s.clients.iter().position(|c| c == h) {
                client_kills[i].push(f.at.0);
            }
        }
    }

    // I1 and I2, request by request.
    let mut never = Tally::new("I1", "requests that never ended");
    let mut twice = Tally::new("I1", "requests that ended more than once");
    let mut stale = Tally::new("I1", "replies that belong to another request or to nobody");
    let mut extra = Tally::new("I1", "replies with a second status line or bytes after them");
    let mut phantom = Tally::new("I1", "replies to requests no backend received");
    let mut wrong_backend = Tally::new(
        "I1",
        "replies from a backend other than the one that received the request",
    );
    let mut unsafe_twice = Tally::new("I2", "non-idempotent requests received more than once");
    let mut safe_many = Tally::new("I2", "idempotent requests received more than 1 + retries times");
    let mut ours_bad = Tally::new(
        "I1",
        "responses of the proxy's own that a well-formed request never gets (only 502, 503, 504)",
    );
    let mut ours_503 = Tally::new("I1", "503 (no backend took it) for requests a backend received");
    let mut ours_504 = Tally::new("I1", "504 sooner than timeouts.response after the request");
    let mut same_backend = Tally::new("I2", "retries on a backend that had already received the request");
    let mut after_reply = Tally::new(
        "I2",
        "requests sent again after a backend had written reply bytes to them",
    );
    let retries = if p.l7 { p.config.http.retries } else { L4_RETRIES };
    let impaired = impairments(p, out);
    r.sent = log.requests.len() as u64;
    for (id, q) in log.requests.iter().enumerate() {
        let method = s
            .workload
            .mix
            .get(usize::from(q.mix))
            .map_or("?", |m| m.method.as_str());
        match q.outcomes {
            0 => {
                // A request waits for its reply at most the workload's timeout: a
                // crash later than that did not cut it.
                let killed = client_kills
                    .get(usize::from(q.client))
                    .is_some_and(|k| k.iter().any(|t| *t >= q.sent && *t <= q.sent + s.workload.timeout.0));
                if killed {
                    r.client_lost += 1;
                } else if out.failures.is_empty() {
                    never.add(|| format!("{method} {id} sent at {}", secs(q.sent)));
                }
            }
            1 => {}
            n => twice.add(|| format!("{method} {id}: {n} outcomes")),
        }
        match q.outcome {
            Some((ended, TapOutcome::Reply { status, extra_bytes })) => {
                *r.replies.entry(status).or_default() += 1;
                match &q.reply {
                    // L7: a response of the proxy's own names neither request nor backend.
                    Some(meta) if p.l7 && meta.id.is_none() && meta.backend.is_none() => {
                        *r.ours.entry(status).or_default() += 1;
                        if meta.heads > 1 || extra_bytes > 0 {
                            extra.add(|| format!("{id}: {} status lines, {extra_bytes} bytes after", meta.heads));
                        }
                        match status {
                            503 if q.seen > 0 => ours_503
                                .add(|| format!("{method} {id} got 503 at {}, received {} times", secs(ended), q.seen)),
                            504 if ended < q.sent + p.config.timeouts.response => ours_504
                                .add(|| format!("{method} {id} sent at {} got 504 at {}", secs(q.sent), secs(ended))),
                            502..=504 => {}
                            _ => ours_bad.add(|| format!("{method} {id} got {status} at {}", secs(ended))),
                        }
                    }
                    Some(meta) if meta.id == Some(id as u64) => {
                        if meta.heads > 1 || extra_bytes > 0 {
                            extra.add(|| format!("{id}: {} status lines, {extra_bytes} bytes after", meta.heads));
                        }
                        let got = meta.backend.as_deref().unwrap_or("");
                        let by = |want: fn(&Reception) -> bool| {
                            q.receptions
                                .iter()
                                .any(|x| want(x) && backend_names.get(usize::from(x.backend)).copied() == Some(got))
                        };
                        if q.receptions.is_empty() {
                            phantom.add(|| format!("{id} answered by {:?}", meta.backend));
                        } else if !by(|x| x.answered) {
                            let want: Vec<&str> = q
                                .receptions
                                .iter()
                                .map(|x| backend_names.get(usize::from(x.backend)).copied().unwrap_or("?"))
                                .collect();
                            wrong_backend.add(|| {
                                format!(
                                    "{id} received by {}, answered by {got}{}",
                                    want.join(" then "),
                                    if by(|_| true) {
                                        " (which wrote no reply to it)"
                                    } else {
                                        ""
                                    }
                                )
                            });
                        }
                    }
                    Some(meta) => stale.add(|| format!("{id} got the reply to {:?} from {:?}", meta.id, meta.backend)),
                    None => stale.add(|| format!("{id}: the reply has no readable head")),
                }
            }
            Some((_, TapOutcome::RunOver)) => r.run_over += 1,
            Some((_, o)) => *r.failures.entry(crate::log::outcome_tag(&o)).or_default() += 1,
            None => {}
        }
        if q.seen > 1 {
            if !is_idempotent(method) {
                unsafe_twice.add(|| format!("{method} {id} received {} times", q.seen));
            } else if !p.l7 {
                if q.seen > 1 + retries {
                    safe_many.add(|| format!("{method} {id} received {} times", q.seen));
                }
            } else {
                let name = |b: u16| backend_names.get(usize::from(b)).copied().unwrap_or("?");
                let mut retried = 0u32;
                for (k, w) in q.receptions.windows(2).enumerate() {
                    let (before, now) = (w[0], w[1]);
                    // C7: once more on a fresh connection after a reused one failed.
                    let fresh = before.reused && !now.reused && before.backend == now.backend;
                    // Either way it is one of the request's `retries`.
                    retried += 1;
                    if fresh {
                        r.resent.1 += 1;
                    } else {
                        r.resent.0 += 1;
                        if q.receptions[..=k].iter().any(|x| x.backend == now.backend) {
                            same_backend.add(|| {
                                format!(
                                    "{method} {id} received again by {} at {}",
                                    name(now.backend),
                                    secs(now.at)
                                )
                            });
                        }
                    }
                    if before.answered && !impaired(usize::from(before.backend), before.at, now.at) {
                        after_reply.add(|| {
                            format!(
                                "{method} {id}: {} answered it (received at {}), {} received it again at {}",
                                name(before.backend),
                                secs(before.at),
                                name(now.backend),
                                secs(now.at)
                            )
                        });
                    }
                }
                if retried > retries {
                    safe_many.add(|| {
                        let by: Vec<String> = q
                            .receptions
                            .iter()
                            .map(|x| format!("{}{}", name(x.backend), if x.reused { " (reused)" } else { "" }))
                            .collect();
                        format!("{method} {id} received {} times: {}", q.seen, by.join(", "))
                    });
                }
            }
        }
    }
    let mut strangers = Tally::new("I1", "requests received that no client sent");
    for (b, at, what) in &log.strangers {
        strangers.add(|| {
            format!(
                "{} at {}: {what}",
                backend_names.get(usize::from(*b)).copied().unwrap_or("?"),
                secs(*at)
            )
        });
    }
    for t in [
        never,
        twice,
        stale,
        extra,
        phantom,
        wrong_backend,
        strangers,
        ours_bad,
        ours_503,
        ours_504,
        unsafe_twice,
        safe_many,
        same_backend,
        after_reply,
    ] {
        t.finish(&mut v);
    }

    // Receptions per backend, picks and weights from the trace.
    let nb = s.backends.len();
    let mut received = vec![0u64; nb];
    let mut picks: Vec<Vec<Duration>> = vec![Vec::new(); nb];
    let mut weights: Vec<Vec<(Duration, u32)>> = vec![Vec::new(); nb];
    for e in &log.events {
        match e.what {
            What::Seen { backend, .. } => {
                if let Some(c) = received.get_mut(usize::from(backend)) {
                    *c += 1;
                }
            }
            What::Pick { backend } => {
                if let Some(c) = picks.get_mut(usize::from(backend)) {
                    c.push(e.at);
                }
            }
            What::Weight { backend, weight } => {
                if let Some(c) = weights.get_mut(usize::from(backend)) {
                    c.push((e.at, weight));
                }
            }
            _ => {}
        }
    }
    r.received = backend_names.iter().map(|n| n.to_string()).zip(received).collect();

    // Deaths and recoveries, from the timeline.
    let lb = s.balancer.name.as_str();
    let mut alive: Vec<Alive> = s
        .backends
        .iter()
        .map(|b| Alive {
            refusing: b.refusing,
            ..Alive::default()
        })
        .collect();
    // (backend, time, dead after?, cause)
    let mut transitions: Vec<(usize, Duration, bool, String)> = Vec::new();
    for (i, b) in s.backends.iter().enumerate() {
        if b.refusing {
            transitions.push((i, Duration::ZERO, true, "refusing".into()));
        }
    }
    for f in &out.faults {
        let link = |a: &str, b: &str| -> Option<usize> {
            let other = if a == lb {
                b
            } else if b == lb {
                a
            } else {
                return None;
            };
            backend_names.iter().position(|n| *n == other)
        };
        let (k, change): (Option<usize>, fn(&mut Alive)) = match &f.fault {
            Fault::Crash(h) => (backend_names.iter().position(|n| n == h), |a| a.crashed = true),
            Fault::Bounce(h) => (backend_names.iter().position(|n| n == h), |a| a.crashed = false),
            Fault::Partition(a, b) | Fault::PartitionOneway(a, b) => (link(a, b), |a| a.cut = true),
            Fault::Repair(a, b) | Fault::RepairOneway(a, b) => (link(a, b), |a| a.cut = false),
            Fault::Hold(a, b) => (link(a, b), |a| a.held = true),
            Fault::Release(a, b) => (link(a, b), |a| a.held = false),
            _ => (None, |_| {}),
        };
        if let Some(k) = k {
            let before = alive[k].dead();
            change(&mut alive[k]);
            let after = alive[k].dead();
            if before != after {
                transitions.push((k, f.at.0, after, f.fault.label()));
            }
        }
    }
    for (n, &(k, at, dead, ref cause)) in transitions.iter().enumerate() {
        let until = transitions[n + 1..]
            .iter()
            .find(|t| t.0 == k)
            .map_or(end, |t| t.1)
            .min(end);
        let name = backend_names[k].to_string();
        if dead {
            let after: Vec<Duration> = picks[k].iter().copied().filter(|t| *t > at && *t <= until).collect();
            let last = after.last().copied();
            r.detections.push(Detection {
                backend: name,
                died: at,
                cause: cause.clone(),
                last_pick: last,
                picks: after.len() as u64,
                took: last.map_or(Duration::ZERO, |l| l - at),
            });
        } else {
            // Effective weights are published in units of 1/WEIGHT_SCALE.
            let full = p.pool_index[k].map_or(0, |i| p.config.pools[p.pool].backends[i].weight) * WEIGHT_SCALE;
            let before = weights[k].iter().rev().find(|(t, _)| *t <= at).map(|(_, w)| *w);
            let took = if before == Some(full) {
                Some(Duration::ZERO)
            } else {
                weights[k]
                    .iter()
                    .find(|(t, w)| *t > at && *t <= until && *w == full)
                    .map(|(t, _)| *t - at)
            };
            r.recoveries.push(Recovery {
                backend: name,
                back: at,
                cause: cause.clone(),
                took,
                window: until.saturating_sub(at),
            });
        }
    }
    for b in &s.expect.detection {
        for d in r.detections.iter().filter(|d| d.backend == b.backend) {
            if d.took > b.max.0 || d.took < b.min.0 {
                v.push(Violation {
                    rule: "expect",
                    message: format!(
                        "detection of {} ({} at {}): last pick {} later, expected {} to {}",
                        d.backend,
                        d.cause,
                        secs(d.died),
                        secs(d.took),
                        b.min,
                        b.max
                    ),
                });
            }
        }
        if !r.detections.iter().any(|d| d.backend == b.backend) {
            v.push(Violation {
                rule: "expect",
                message: format!("detection of {}: it never died in this run", b.backend),
            });
        }
    }
    for b in &s.expect.recovery {
        for rc in r.recoveries.iter().filter(|x| x.backend == b.backend) {
            match rc.took {
                Some(t) if t > b.max.0 || t < b.min.0 => v.push(Violation {
                    rule: "expect",
                    message: format!(
                        "recovery of {} ({} at {}): full weight after {}, expected {} to {}",
                        rc.backend,
                        rc.cause,
                        secs(rc.back),
                        secs(t),
                        b.min,
                        b.max
                    ),
                }),
                None if rc.window >= b.max.0 => v.push(Violation {
                    rule: "expect",
                    message: format!(
                        "recovery of {} ({} at {}): not at full weight within {}",
                        rc.backend,
                        rc.cause,
                        secs(rc.back),
                        b.max
                    ),
                }),
                _ => {}
            }
        }
        if !r.recoveries.iter().any(|x| x.backend == b.backend) {
            v.push(Violation {
                rule: "expect",
                message: format!("recovery of {}: it never came back in this run", b.backend),
            });
        }
    }

    // Shares, by arrival at the backends.
    for b in &s.expect.share {
        let to = b.to.map_or(end, |t| t.0);
        let mut per = vec![0u64; nb];
        for q in &log.requests {
            if let Some((k, at)) = q.seen_by {
                if at >= b.from.0 && at < to {
                    if let Some(c) = per.get_mut(usize::from(k)) {
                        *c += 1;
                    }
                }
            }
        }
        let total: u64 = per.iter().sum();
        let k = backend_names.iter().position(|n| *n == b.backend).unwrap_or(0);
        let share = per[k] as f64 / total.max(1) as f64;
        if total == 0 || share < b.min || share > b.max {
            v.push(Violation {
                rule: "expect",
                message: format!(
                    "share of {} in [{}, {}): {:.4} of {total}, expected {} to {}",
                    b.backend,
                    b.from,
                    crate::scenario::Dur(to),
                    share,
                    b.min,
                    b.max
                ),
            });
        }
    }

    // Success rates. A request counts when it ended within the run and not with its
    // client.
    let rate = |from: Duration, to: Duration, idempotent_only: bool| -> (u64, u64, Vec<String>) {
        let (mut n, mut ok, mut bad) = (0u64, 0u64, Vec::new());
        for (id, q) in log.requests.iter().enumerate() {
            let method = s
                .workload
                .mix
                .get(usize::from(q.mix))
                .map_or("?", |m| m.method.as_str());
            if q.sent < from || q.sent >= to || (idempotent_only && !is_idempotent(method)) {
                continue;
            }
            match q.outcome {
                Some((_, TapOutcome::RunOver)) | None => {}
                // L7: a response of the proxy's own (502, 503, 504) is an outcome, not a
                // success.
                Some((_, TapOutcome::Reply { .. })) if !(p.l7 && is_ours(q)) => {
                    n += 1;
                    ok += 1;
                }
                Some((at, o)) => {
                    n += 1;
                    if bad.len() < EXAMPLES_MAX {
                        bad.push(format!(
                            "{method} {id} sent at {}: {} at {}",
                            secs(q.sent),
                            crate::log::outcome_tag(&o),
                            secs(at)
                        ));
                    }
                }
            }
        }
        (n, ok, bad)
    };
    for b in &s.expect.success_rate {
        let to = b.to.map_or(end, |t| t.0);
        let (n, ok, bad) = rate(b.from.0, to, false);
        let got = ok as f64 / n.max(1) as f64;
        if n == 0 || got < b.min {
            v.push(Violation {
                rule: "expect",
                message: format!(
                    "success rate in [{}, {}): {got:.4} of {n}, expected at least {}; e.g. {}",
                    b.from,
                    crate::scenario::Dur(to),
                    b.min,
                    bad.join("; ")
                ),
            });
        }
    }
    if s.expect.liveness.enabled {
        let last = out.faults.iter().map(|f| f.at.0).max().unwrap_or(Duration::ZERO);
        let from = last + p.grace;
        let (n, ok, bad) = rate(from, end, true);
        if n > 0 {
            let got = ok as f64 / n as f64;
            r.liveness = Some((from, n, got));
            if got < s.expect.liveness.min {
                v.push(Violation {
                    rule: "I4",
                    message: format!(
                        "after the last fault ({}) and a grace of {}: {got:.4} of {n} idempotent requests succeeded, expected at least {}; e.g. {}",
                        secs(last),
                        secs(p.grace),
                        s.expect.liveness.min,
                        bad.join("; ")
                    ),
                });
            }
        }
    }
    for b in &s.expect.outcomes {
        let n = log
            .requests
            .iter()
            .filter(|q| {
                q.outcome
                    .is_some_and(|(_, o)| crate::log::outcome_tag(&o).starts_with(b.outcome.as_str()))
            })
            .count() as u64;
        if n < b.min || b.max.is_some_and(|m| n > m) {
            v.push(Violation {
                rule: "expect",
                message: format!(
                    "{n} requests ended with {:?}, expected {} to {}",
                    b.outcome,
                    b.min,
                    b.max.map_or("any".into(), |m| m.to_string())
                ),
            });
        }
    }
    if r.resent.0 + r.resent.1 < s.expect.resent_min {
        v.push(Violation {
            rule: "expect",
            message: format!(
                "{} receptions beyond the first ({} retries, {} re-sends on a fresh connection), expected at least {}",
                r.resent.0 + r.resent.1,
                r.resent.0,
                r.resent.1,
                s.expect.resent_min
            ),
        });
    }
    if r.replied() < s.expect.min_replies {
        v.push(Violation {
            rule: "expect",
            message: format!(
                "{} complete replies, expected at least {}",
                r.replied(),
                s.expect.min_replies
            ),
        });
    }

    drain(p, out, &mut r, &mut v);

    // I5.
    for (at, what) in &out.counters.problems {
        v.push(Violation {
            rule: "I5",
            message: format!("at {}: {what}", secs(*at)),
        });
    }
    if let Some((total, open, per)) = &out.counters.at_end {
        r.at_end = Some((*total, *open));
        if out.failures.is_empty() && (*total != 0 || *open != 0) {
            v.push(Violation {
                rule: "I5",
                message: format!(
                    "at quiescence: {total} active leases (per backend {per:?}) and {open} open client connections"
                ),
            });
        }
    }
    match out.quiet() {
        Some(q) => {
            r.streams = q.streams.clone();
            r.pooled_idle = q.pooled_idle;
            r.failed_connects = log.failed_connects.clone();
            // L7: idle pooled backend connections, one stream on the balancer and one
            // on their backend each.
            let pooled = if p.l7 { q.pooled_idle.unwrap_or(0) as u64 } else { 0 };
            let pooled_max = p.config.http.pool_idle_max as u64 * s.backends.len() as u64;
            if p.l7 && pooled > pooled_max {
                v.push(Violation {
                    rule: "I5",
                    message: format!(
                        "at quiescence ({}): {pooled} pooled idle backend connections, more than http.pool_idle_max ({}) per backend",
                        secs(q.at),
                        p.config.http.pool_idle_max
                    ),
                });
            }
            // Streams the backends hold beyond their own allowances: the backend ends
            // of the balancer's pooled connections.
            let mut on_backends = 0u64;
            let checked = p.config.pools[p.pool]
                .backends
                .iter()
                .filter(|b| b.check.is_some())
                .count()
                // A reload may have added checked backends (a removed one's probes stop).
                .max(out.reloads.iter().map(|rec| rec.checked).max().unwrap_or(0));
            // A backend whose link to the balancer dropped messages (partition, link
            // failures) may keep the end of a connection whose close was lost: turmoil
            // does not retransmit, and nothing times out an idle backend connection.
            let lossy: Vec<&str> = out
                .faults
                .iter()
                .filter_map(|f| match &f.fault {
                    Fault::Partition(a, b) | Fault::PartitionOneway(a, b) => Some((a, b)),
                    Fault::LinkFailRate(a, b, rate) if *rate > 0.0 => Some((a, b)),
                    _ => None,
                })
                .filter_map(|(a, b)| {
                    if a == lb {
                        Some(b.as_str())
                    } else if b == lb {
                        Some(a.as_str())
                    } else {
                        None
                    }
                })
                .collect();
            for (h, n) in &q.streams {
                // The balancer may be probing each checked backend; and every host keeps
                // the sockets of its failed connects (a turmoil artifact).
                let probes = if h == lb { checked } else { 0 };
                let failed = log.failed_connects.get(h).copied().unwrap_or(0);
                let backend = backend_names.contains(&h.as_str());
                if backend && lossy.contains(&h.as_str()) {
                    continue;
                }
                let own = probes as u64 + failed;
                let allowed = own + if h == lb || backend { pooled } else { 0 };
                if backend {
                    on_backends += (*n as u64).saturating_sub(own);
                }
                if *n as u64 > allowed {
                    v.push(Violation {
                        rule: "I5",
                        message: format!(
                            "at quiescence ({}): {n} established streams on {h}, expected at most {allowed} ({probes} probes, {failed} failed connects{})",
                            secs(q.at),
                            if p.l7 { format!(", {pooled} pooled idle") } else { String::new() }
                        ),
                    });
                }
            }
            if on_backends > pooled {
                v.push(Violation {
                    rule: "I5",
                    message: format!(
                        "at quiescence ({}): the backends hold {on_backends} streams beyond their probes and failed connects, more than the balancer's {pooled} pooled idle connections",
                        secs(q.at)
                    ),
                });
            }
        }
        None if out.failures.is_empty() => v.push(Violation {
            rule: "I5",
            message: "the run never reached quiescence".into(),
        }),
        None => {}
    }

    // I6.
    for f in &out.failures {
        v.push(Violation {
            rule: "I6",
            message: f.clone(),
        });
    }
    r.violations = v;
    r
}

/// Per backend, the spans of the timeline in which what it sent the balancer may have
/// been lost or delayed: its link to the balancer partitioned, held, failing or slowed,
/// and the instants it or the balancer crashed or restarted. Returns whether backend
/// `b` had one overlapping `[from, to]`.
fn impairments(p: &Prepared, out: &RunOutput) -> impl Fn(usize, Duration, Duration) -> bool {
    let s = &p.scenario;
    let lb = s.balancer.name.as_str();
    let nb = s.backends.len();
    let mut spans: Vec<Vec<(Duration, Duration)>> = vec![Vec::new(); nb];
    // Per backend: since when the link is cut, held, failing, slowed.
    let mut open: Vec<[Option<Duration>; 4]> = vec![[None; 4]; nb];
    let link = |a: &str, b: &str| -> Option<usize> {
        let other = if a == lb {
            b
        } else if b == lb {
            a
        } else {
            return None;
        };
        p.backend(other)
    };
    for f in &out.faults {
        let at = f.at.0;
        let (k, slot, on) = match &f.fault {
            Fault::Crash(h) | Fault::Bounce(h) => {
                if h == lb {
                    for sp in spans.iter_mut() {
                        sp.push((at, at));
                    }
                } else if let Some(b) = p.backend(h) {
                    spans[b].push((at, at));
                }
                continue;
            }
            Fault::Partition(a, b) | Fault::PartitionOneway(a, b) => (link(a, b), 0, true),
            Fault::Repair(a, b) | Fault::RepairOneway(a, b) => (link(a, b), 0, false),
            Fault::Hold(a, b) => (link(a, b), 1, true),
            Fault::Release(a, b) => (link(a, b), 1, false),
            Fault::LinkFailRate(a, b, rate) => (link(a, b), 2, *rate > 0.0),
            Fault::LinkLatency(a, b, d) => (link(a, b), 3, !d.0.is_zero()),
            _ => continue,
        };
        let Some(k) = k else { continue };
        match (open[k][slot], on) {
            (None, true) => open[k][slot] = Some(at),
            (Some(since), false) => {
                spans[k].push((since, at));
                open[k][slot] = None;
            }
            _ => {}
        }
    }
    for (k, o) in open.iter().enumerate() {
        for since in o.iter().flatten() {
            spans[k].push((*since, Duration::MAX));
        }
    }
    move |b: usize, from: Duration, to: Duration| {
        spans
            .get(b)
            .is_some_and(|sp| sp.iter().any(|(a, z)| *a <= to && *z >= from))
    }
}

/// I3 (drain) and D6 (refused reloads), from the reload records and the trace.
fn drain(p: &Prepared, out: &RunOutput, r: &mut Report, v: &mut Vec<Violation>) {
    let s = &p.scenario;
    let log = &out.log;
    let index = |addr: &std::net::SocketAddr| {
        s.backends.iter().position(|b| {
            p.addrs
                .get(&b.name)
                .is_some_and(|ip| std::net::SocketAddr::new(*ip, b.port) == *addr)
        })
    };
    // Backends whose failures other faults explain: not checked for cuts.
    let mut faulted = vec![false; s.backends.len()];
    let lb_faulted = out.faults.iter().any(|f| {
        let hosts: Vec<&str> = match &f.fault {
            Fault::Crash(h) | Fault::Bounce(h) => vec![h],
            Fault::Partition(a, b)
            | Fault::Repair(a, b)
            | Fault::PartitionOneway(a, b)
            | Fault::RepairOneway(a, b)
            | Fault::Hold(a, b)
            | Fault::Release(a, b)
            | Fault::LinkLatency(a, b, _)
            | Fault::LinkFailRate(a, b, _) => vec![a, b],
            _ => vec![],
        };
        for h in &hosts {
            if let Some(i) = p.backend(h) {
                faulted[i] = true;
            }
        }
        hosts.contains(&s.balancer.name.as_str())
    });
    // Per backend, the windows in which a reload had it drained: (reload, deadline, end).
    let mut windows: Vec<Vec<(Duration, Duration, Duration)>> = vec![Vec::new(); s.backends.len()];
    let mut serving: Vec<bool> = (0..s.backends.len())
        .map(|i| p.pool_index[i].is_some_and(|k| p.config.pools[p.pool].backends[k].weight > 0))
        .collect();
    let mut failures_before = 0;
    let mut generation_before = 1;
    let mut refused = Tally::new(
        "I3",
        "refused reloads that changed the generation or were not counted once",
    );
    for rec in &out.reloads {
        if rec.applied {
            r.reloads.0 += 1;
            let mut now_serving = vec![false; s.backends.len()];
            for (addr, w) in &rec.backends {
                if let Some(i) = index(addr) {
                    now_serving[i] = *w > 0;
                }
            }
            for i in 0..s.backends.len() {
                if serving[i] && !now_serving[i] {
                    windows[i].push((rec.at, rec.at + rec.drain, Duration::MAX));
                } else if !serving[i] && now_serving[i] {
                    if let Some(w) = windows[i].last_mut().filter(|w| w.2 == Duration::MAX) {
                        w.2 = rec.at;
                    }
                }
            }
            serving = now_serving;
            if rec.failures_total != failures_before {
                refused.add(|| format!("an applied reload at {} moved the failure counter", secs(rec.at)));
            }
        } else {
            r.reloads.1 += 1;
            if rec.failures_total != failures_before + 1 || rec.generation != generation_before {
                refused.add(|| {
                    format!(
                        "reload at {} refused ({}): failures {} -> {}, generation {} -> {}",
                        secs(rec.at),
                        rec.error.as_deref().unwrap_or("?"),
                        failures_before,
                        rec.failures_total,
                        generation_before,
                        rec.generation
                    )
                });
            }
        }
        failures_before = rec.failures_total;
        generation_before = rec.generation;
    }
    refused.finish(v);
    r.drained_cut_total = out.counters.drained_cut_total;
    let mut picked = Tally::new("I3", "new connections to a backend after a reload drained it");
    for e in &log.events {
        if let What::Pick { backend } = e.what {
            let b = usize::from(backend);
            if let Some(w) = windows
                .get(b)
                .and_then(|ws| ws.iter().find(|w| e.at > w.0 && e.at < w.2))
            {
                picked.add(|| {
                    format!(
                        "{} picked at {}, drained by the reload at {}",
                        s.backends[b].name,
                        secs(e.at),
                        secs(w.0)
                    )
                });
            }
        }
    }
    picked.finish(v);
    let mut early = Tally::new("I3", "requests on a drained backend cut before its drain deadline");
    for (id, q) in log.requests.iter().enumerate() {
        let (Some((b, seen)), Some((ended, outcome))) = (q.seen_by, q.outcome) else {
            continue;
        };
        let b = usize::from(b);
        // In flight at a reload that drained its backend.
        let Some(w) = windows
            .get(b)
            .and_then(|ws| ws.iter().find(|w| seen <= w.0 && ended >= w.0))
        else {
            continue;
        };
        match outcome {
            TapOutcome::Reply { .. } => r.drain_finished += 1,
            TapOutcome::RunOver | TapOutcome::Timeout => {}
            TapOutcome::Failed(_) if ended >= w.1 => r.drain_cut += 1,
            TapOutcome::Failed(_) if faulted[b] || lb_faulted => {}
            TapOutcome::Failed(k) => early.add(|| {
                format!(
                    "{id} on {} failed ({k}) at {}, drained at {} until {}",
                    s.backends[b].name,
                    secs(ended),
                    secs(w.0),
                    secs(w.1)
                )
            }),
        }
    }
    early.finish(v);
    if !lb_faulted && faulted.iter().all(|f| !f) && r.drained_cut_total < r.drain_cut {
        v.push(Violation {
            rule: "I3",
            message: format!(
                "{} requests were cut at their drain deadline but drained_cut_total is {}",
                r.drain_cut, r.drained_cut_total
            ),
        });
    }
    let e = &s.expect;
    if r.drain_finished < e.drain_finished_min {
        v.push(Violation {
            rule: "expect",
            message: format!(
                "{} requests on drained backends finished; expected at least {}",
                r.drain_finished, e.drain_finished_min
            ),
        });
    }
    if r.drained_cut_total < e.drained_cut_min {
        v.push(Violation {
            rule: "expect",
            message: format!(
                "drained_cut_total {}; expected at least {}",
                r.drained_cut_total, e.drained_cut_min
            ),
        });
    }
    if r.reloads.1 < e.reloads_refused_min {
        v.push(Violation {
            rule: "expect",
            message: format!(
                "{} reloads refused; expected at least {}",
                r.reloads.1, e.reloads_refused_min
            ),
        });
    }
}
