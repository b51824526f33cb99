//! What a run recorded: every request the clients sent and how it ended, every request
//! the backends received, every pick of a backend by the balancer's data path, weight
//! changes and faults, in the order they happened.
//!
//! The log lives outside the simulated hosts (an `Rc` shared into each host's
//! software), so it survives crashes and restarts: a crashed client's requests stay
//! recorded without an outcome, which is how the oracle tells a client-side loss from a
//! lost reply. Everything is appended in the simulation's own deterministic order, so
//! the digest of the event trace is the same for the same seed in any process.

use gobalancer_loadgen::client::TapOutcome;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::Duration;

/// Bytes of a reply kept per request: enough for its head, which names the request
/// and the backend.
pub const REPLY_HEAD_BYTES_MAX: usize = 1024;

/// Shared handle on the log of one run.
pub type SharedLog = Rc<RefCell<Log>>;

/// One request as the oracle sees it. Its id is its index in [`Log::requests`].
#[derive(Clone, Debug)]
pub struct Request {
    /// Index of the client host in the scenario.
    pub client: u16,
    /// Index of its kind in the workload's mix.
    pub mix: u16,
    /// When the client wrote it.
    pub sent: Duration,
    /// The first outcome the client heard, and when.
    pub outcome: Option<(Duration, TapOutcome)>,
    /// Outcomes heard: I1 wants exactly one.
    pub outcomes: u32,
    /// The first bytes of its reply (cleared once parsed).
    pub head: Vec<u8>,
    /// What the reply said about itself, once complete.
    pub reply: Option<ReplyMeta>,
    /// Times a backend received it (I2).
    pub seen: u32,
    /// The backend that received it first, and when.
    pub seen_by: Option<(u16, Duration)>,
    /// Every reception by a backend, in order (I2: retries of the L7 proxy).
    pub receptions: Vec<Reception>,
}

/// One reception of a request by a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reception {
    /// Backend index in the scenario.
    pub backend: u16,
    /// When it arrived.
    pub at: Duration,
    /// Whether it came on a connection that had carried a request before (a reused,
    /// pooled backend connection of the L7 proxy).
    pub reused: bool,
    /// Whether the backend wrote any byte of a reply to it.
    pub answered: bool,
}

/// What a complete reply's head said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyMeta {
    /// The status code.
    pub status: u16,
    /// `X-Req-Id`: whose reply it is.
    pub id: Option<u64>,
    /// `X-Backend`: who sent it.
    pub backend: Option<String>,
    /// Status lines in the reply's bytes: never more than one.
    pub heads: u32,
}

/// A trace event.
#[derive(Clone, Debug, PartialEq)]
pub enum What {
    /// A fault of the (expanded) timeline was applied.
    Fault(String),
    /// A client wrote request `id`.
    Sent {
        /// Request id.
        id: u64,
        /// Client index.
        client: u16,
    },
    /// A backend received request `id`.
    Seen {
        /// Request id.
        id: u64,
        /// Backend index in the scenario.
        backend: u16,
    },
    /// Request `id` ended.
    Outcome {
        /// Request id.
        id: u64,
        /// How.
        outcome: TapOutcome,
    },
    /// The balancer's data path connected (or tried to) to a backend.
    Pick {
        /// Backend index in the scenario.
        backend: u16,
    },
    /// A backend's effective weight changed.
    Weight {
        /// Backend index in the scenario.
        backend: u16,
        /// New weight.
        weight: u32,
    },
    /// Something that fails the seed at once (a host error, a panic).
    Failure(String),
}

/// One line of the trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Simulated time since the start.
    pub at: Duration,
    /// What happened.
    pub what: What,
}

/// Stream counts sampled at quiescence.
#[derive(Clone, Debug, Default)]
pub struct Quiet {
    /// When they were sampled.
    pub at: Duration,
    /// Established TCP streams per host name, for running hosts.
    pub streams: Vec<(String, usize)>,
    /// Idle backend connections the balancer's worker keeps for reuse (its `http`
    /// listeners' upstream pools), when the balancer runs.
    pub pooled_idle: Option<usize>,
}

/// Everything one run recorded.
#[derive(Debug, Default)]
pub struct Log {
    /// The trace, in order.
    pub events: Vec<Event>,
    /// Every request, by id.
    pub requests: Vec<Request>,
    /// Requests that a backend received but no client sent (ids out of range or
    /// unparseable): each one is a violation.
    pub strangers: Vec<(u16, Duration, String)>,
    /// Set by the clock host once the run is quiet.
    pub quiet: Option<Quiet>,
    /// Per host, connects that yielded no stream (refused, or abandoned while pending):
    /// turmoil leaves each one's socket in the host's table, so it shows in the stream
    /// counts.
    pub failed_connects: std::collections::BTreeMap<String, u64>,
    digest: u64,
    events_total: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

impl Log {
    /// An empty log.
    pub fn new() -> SharedLog {
        Rc::new(RefCell::new(Log {
            digest: FNV_OFFSET,
            ..Log::default()
        }))
    }

    /// Appends an event and folds it into the digest.
    pub fn push(&mut self, at: Duration, what: What) {
        let mut h = fnv(
            self.digest,
            &u64::try_from(at.as_nanos()).unwrap_or(u64::MAX).to_le_bytes(),
        );
        h = match &what {
            What::Fault(s) => fnv(fnv(h, b"F"), s.as_bytes()),
            What::Sent { id, client } => fnv(fnv(fnv(h, b"S"), &id.to_le_bytes()), &client.to_le_bytes()),
            What::Seen { id, backend } => fnv(fnv(fnv(h, b"B"), &id.to_le_bytes()), &backend.to_le_bytes()),
            What::Outcome { id, outcome } => fnv(fnv(fnv(h, b"O"), &id.to_le_bytes()), outcome_tag(outcome).as_bytes()),
            What::Pick { backend } => fnv(fnv(h, b"P"), &backend.to_le_bytes()),
            What::Weight { backend, weight } => fnv(fnv(fnv(h, b"W"), &backend.to_le_bytes()), &weight.to_le_bytes()),
            What::Failure(s) => fnv(fnv(h, b"X"), s.as_bytes()),
        };
        self.digest = h;
        self.events_total += 1;
        self.events.push(Event { at, what });
    }

    /// Digest of every event so far, and their number.
    pub fn digest(&self) -> (u64, u64) {
        (self.digest, self.events_total)
    }
}

/// A short, stable name for an outcome (trace and digest).
pub fn outcome_tag(o: &TapOutcome) -> String {
    match o {
        TapOutcome::Reply { status, extra_bytes: 0 } => format!("reply {status}"),
        TapOutcome::Reply { status, extra_bytes } => format!("reply {status} +{extra_bytes}B"),
        TapOutcome::Failed(k) => format!("failed {k}"),
        TapOutcome::Timeout => "timeout".into(),
        TapOutcome::RunOver => "run-over".into(),
    }
}

/// Parses a reply's head as the recorder backends write it.
pub fn parse_reply(bytes: &[u8]) -> Option<ReplyMeta> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = resp.parse(bytes) else {
        return None;
    };
    let value = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    let heads = bytes.windows(7).filter(|w| w == b"HTTP/1.").count();
    Some(ReplyMeta {
        status: resp.code.unwrap_or(0),
        id: value("x-req-id").and_then(|v| v.trim().parse().ok()),
        backend: value("x-backend"),
        heads: u32::try_from(heads).unwrap_or(u32::MAX),
    })
}

/// Writes the trace, one event per line: `SECONDS WHAT`.
pub fn format_trace(events: &[Event], backends: &[String], clients: &[String]) -> String {
    let name = |v: &[String], i: u16| v.get(usize::from(i)).cloned().unwrap_or_else(|| format!("#{i}"));
    let mut out = String::new();
    for e in events {
        let _ = write!(out, "{:>12.6} ", e.at.as_secs_f64());
        let _ = match &e.what {
            What::Fault(s) => writeln!(out, "fault {s}"),
            What::Sent { id, client } => writeln!(out, "sent {id} by {}", name(clients, *client)),
            What::Seen { id, backend } => writeln!(out, "seen {id} at {}", name(backends, *backend)),
            What::Outcome { id, outcome } => writeln!(out, "outcome {id} {}", outcome_tag(outcome)),
            What::Pick { backend } => writeln!(out, "pick {}", name(backends, *backend)),
            What::Weight { backend, weight } => writeln!(out, "weight {} {weight}", name(backends, *backend)),
            What::Failure(s) => writeln!(out, "FAILURE {s}"),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_heads_name_request_and_backend() {
        let r =
            parse_reply(b"HTTP/1.1 200 OK\r\nX-Backend: b1\r\nX-Req-Id: 42\r\nContent-Length: 3\r\n\r\nb1\n").unwrap();
        assert_eq!(
            (r.status, r.id, r.backend.as_deref(), r.heads),
            (200, Some(42), Some("b1"), 1)
        );
        assert!(parse_reply(b"HTTP/1.1 200").is_none());
    }

    #[test]
    fn the_digest_depends_on_every_event_and_on_order() {
        let a = Log::new();
        let b = Log::new();
        a.borrow_mut().push(Duration::from_millis(1), What::Pick { backend: 0 });
        a.borrow_mut().push(Duration::from_millis(2), What::Pick { backend: 1 });
        b.borrow_mut().push(Duration::from_millis(1), What::Pick { backend: 1 });
        b.borrow_mut().push(Duration::from_millis(2), What::Pick { backend: 0 });
        assert_ne!(a.borrow().digest(), b.borrow().digest());
        assert_eq!(a.borrow().digest().1, 2);
    }
}
