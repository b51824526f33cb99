//! The scenario language: what a scenario file (RON) says, and its checks before
//! anything runs.
//!
//! A scenario states a topology (the balancer with its full gobalancer configuration,
//! scripted backends, client hosts), a workload driven by loadgen's client engine, a
//! timeline of faults, and expectations. Every struct denies unknown fields, and every
//! value parsed from a string (durations) is parsed during deserialization, so a typo
//! is reported by ron with its line and column, like the balancer's own configuration.
//!
//! ```ron
//! (
//!     name: "failover",
//!     seeds: [1, 2, 3],           // what `cargo test` runs, and `run` without --seed
//!     duration: "20s",            // simulated time of the workload
//!     balancer: (config: r#"(
//!         timeouts: (connect: "500ms", idle: "2s"),
//!         listeners: [(bind: "0.0.0.0:8080", pool: "p")],
//!         pools: [(name: "p", backends: [
//!             (address: "${backend-1}:9000"), (address: "${backend-2}:9000"),
//!         ])],
//!     )"#),
//!     backends: [(name: "backend-1"), (name: "backend-2", latency: "5ms")],
//!     clients: ["client-1"],
//!     workload: (load: Open(rate_per_s: 200, connections: 16),
//!                mix: [(method: "GET", weight: 9), (method: "POST", weight: 1)]),
//!     timeline: [(at: "5s", fault: Crash("backend-2"))],
//!     expect: (detection: [(backend: "backend-2", max: "4s")]),
//! )
//! ```
//!
//! `${HOST}` in the configuration text stands for that simulated host's address (turmoil
//! hands out addresses, and gobalancer does not resolve names). The `reload` family of
//! faults (`Reload`, `BackendAdded`, `BackendRemoved`, `BackendDrained`) is applied by
//! the balancer host through the core's hot reload (`gobalancer::reload::Live`), the
//! same code path as the binary's SIGHUP; `Reload`'s configuration text takes `${HOST}`
//! too, and is substituted (not parsed) before the run: a bad one is a test of D6.

use gobalancer::config::{parse_duration, Config, Mode};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Longest scenario a run accepts, in simulated time: a bound on memory (every request
/// is recorded) and on wall time.
pub const DURATION_MAX: Duration = Duration::from_secs(3600);
/// Most hosts of one scenario.
pub const HOSTS_MAX: usize = 200;
/// Most faults after chaos is expanded.
pub const FAULTS_MAX: usize = 10_000;
/// Longest host name, in bytes.
pub const HOST_NAME_BYTES_MAX: usize = 64;
/// The name of the host the runner adds to end the run (turmoil ends a run when its
/// clients finish): scenarios may not use it.
pub const CLOCK_HOST: &str = "sim-clock";
/// Methods a request mix may use. `HEAD` is left out: loadgen frames every reply of a
/// run the same way, and a HEAD reply has no body.
pub const METHODS: [&str; 6] = ["GET", "PUT", "DELETE", "OPTIONS", "POST", "PATCH"];

/// A duration written as in the balancer's configuration (`"3s"`, `"250ms"`, `"1m30s"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    /// Whole seconds.
    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }

    /// Milliseconds.
    pub const fn millis(ms: u64) -> Dur {
        Dur(Duration::from_millis(ms))
    }
}

impl fmt::Display for Dur {
    /// The largest unit that divides it: what [`parse_duration`] reads back exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0.as_micros();
        if us == 0 {
            f.write_str("0s")
        } else if us.is_multiple_of(1_000_000) {
            write!(f, "{}s", us / 1_000_000)
        } else if us.is_multiple_of(1_000) {
            write!(f, "{}ms", us / 1_000)
        } else {
            write!(f, "{us}us")
        }
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"3s\" or \"250ms\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Dur, E> {
                parse_duration(s).map(Dur).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// A whole scenario file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename = "Scenario", deny_unknown_fields)]
pub struct Scenario {
    /// Name in reports.
    pub name: String,
    /// What it shows, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Seeds that `cargo test` runs, and that `run` runs without `--seed`.
    #[serde(default)]
    pub seeds: Vec<u64>,
    /// A pinned regression whose bug is not fixed yet: the text of the violation it
    /// still shows. The regression test then requires that violation (and says so
    /// once the bug is fixed, so that this line is removed); `run` reports it as usual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_failure: Option<String>,
    /// Simulated time of the workload. Faults happen within it.
    pub duration: Dur,
    /// Time after the workload before the conservation checks (I5). Default: the
    /// balancer's connect plus idle timeout plus one second, by which every connection
    /// that a fault left hanging has been closed.
    #[serde(default)]
    pub quiesce: Option<Dur>,
    /// Message latency of every link.
    #[serde(default)]
    pub network: Network,
    /// The balancer host.
    pub balancer: BalancerSpec,
    /// Backend hosts, in registration order.
    pub backends: Vec<BackendSpec>,
    /// Client hosts; the workload's connections are split evenly over them.
    pub clients: Vec<String>,
    /// What the clients send.
    pub workload: Workload,
    /// Faults, each at a time from the start.
    #[serde(default)]
    pub timeline: Vec<TimedFault>,
    /// Bounds checked after the run, on top of the invariants.
    #[serde(default)]
    pub expect: Expectations,
}

/// Link latency: each message takes between `min_latency` and `max_latency`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename = "Network", deny_unknown_fields)]
pub struct Network {
    /// Default 1ms.
    #[serde(default = "one_ms")]
    pub min_latency: Dur,
    /// Default 5ms.
    #[serde(default = "five_ms")]
    pub max_latency: Dur,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            min_latency: one_ms(),
            max_latency: five_ms(),
        }
    }
}

fn one_ms() -> Dur {
    Dur::millis(1)
}
fn five_ms() -> Dur {
    Dur::millis(5)
}
fn one_s() -> Dur {
    Dur::secs(1)
}
fn two_s() -> Dur {
    Dur::secs(2)
}
fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn one_f() -> f64 {
    1.0
}
fn lb() -> String {
    "lb".to_string()
}
fn port_9000() -> u16 {
    9000
}
fn default_mix() -> Vec<MixEntry> {
    vec![MixEntry {
        method: "GET".into(),
        weight: 1,
        body_bytes: 0,
    }]
}

/// The balancer host: gobalancer with this configuration, one worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename = "Balancer", deny_unknown_fields)]
pub struct BalancerSpec {
    /// Host name; default `lb`.
    #[serde(default = "lb")]
    pub name: String,
    /// The full gobalancer configuration (RON text); `${HOST}` is that host's address.
    pub config: String,
    /// The listener the workload connects to; default the first.
    #[serde(default)]
    pub listener: Option<String>,
}

/// How a backend fails once `fail_after` requests were served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailWith {
    /// Close the connection without a reply.
    #[default]
    Reset,
    /// Never reply; read until the peer closes.
    Stall,
    /// Send the first half of the reply, then close.
    Cut,
    /// Send the reply's head and the first half of its body, then close (RELIABILITY
    /// C4: a response cut after its head).
    CutBody,
}

/// What a backend's health endpoint (any request that is not the workload's) answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// 200 always.
    #[default]
    Up,
    /// 200 and 500 in turn (RELIABILITY.md C9).
    Flapping,
    /// 503 always.
    Down,
}

/// A scripted backend: an HTTP/1.1 server that records every request it receives.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename = "Backend", deny_unknown_fields)]
pub struct BackendSpec {
    /// Host name.
    pub name: String,
    /// Port it listens on; default 9000.
    #[serde(default = "port_9000")]
    pub port: u16,
    /// Delay before each reply.
    #[serde(default)]
    pub latency: Dur,
    /// Up to this much more delay, drawn uniformly per request.
    #[serde(default)]
    pub jitter: Dur,
    /// Share of requests answered `500`, in percent.
    #[serde(default)]
    pub error_percent: u8,
    /// After this many requests were served, every later one fails as `fail_with` says.
    #[serde(default)]
    pub fail_after: Option<u64>,
    /// How requests fail after `fail_after`.
    #[serde(default)]
    pub fail_with: FailWith,
    /// Runs but listens on nothing: every connect is refused.
    #[serde(default)]
    pub refusing: bool,
    /// The health endpoint.
    #[serde(default)]
    pub health: Health,
    /// Closes a connection that waited this long for its next request (a backend's
    /// keep-alive timeout, RELIABILITY C7); default never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<Dur>,
}

/// Closed loop: each connection sends its next request when the last one ended. Open
/// loop: requests are due at a fixed rate over all connections, whatever the replies do.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Load {
    /// Closed loop over `connections` connections.
    Closed {
        /// Connections over all clients.
        connections: u32,
    },
    /// Open loop at `rate_per_s` over `connections` connections.
    Open {
        /// Requests per second over all clients.
        rate_per_s: u64,
        /// Connections over all clients.
        connections: u32,
    },
}

/// One kind of request in the mix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "Mix", deny_unknown_fields)]
pub struct MixEntry {
    /// One of [`METHODS`].
    pub method: String,
    /// Relative frequency; default 1.
    #[serde(default = "one")]
    pub weight: u32,
    /// Body size.
    #[serde(default)]
    pub body_bytes: usize,
}

impl MixEntry {
    /// RFC 9110 section 9.2.2: may be repeated without changing the outcome.
    pub fn idempotent(&self) -> bool {
        is_idempotent(&self.method)
    }
}

/// RFC 9110 section 9.2.2, for the methods of [`METHODS`].
pub fn is_idempotent(method: &str) -> bool {
    matches!(method, "GET" | "PUT" | "DELETE" | "OPTIONS")
}

/// What the clients send.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename = "Workload", deny_unknown_fields)]
pub struct Workload {
    /// Closed or open loop.
    pub load: Load,
    /// The request mix; default all `GET`.
    #[serde(default = "default_mix")]
    pub mix: Vec<MixEntry>,
    /// One connection per request (default), so that each request is one pick.
    #[serde(default = "yes")]
    pub new_conn: bool,
    /// Limit on one reply; default 2s.
    #[serde(default = "two_s")]
    pub timeout: Dur,
    /// Limit on one connect; default 1s.
    #[serde(default = "one_s")]
    pub connect_timeout: Dur,
}

/// A fault and when it happens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename = "Fault", deny_unknown_fields)]
pub struct TimedFault {
    /// From the start of the run.
    pub at: Dur,
    /// What happens.
    pub fault: Fault,
}

/// The fault language. Host arguments are host names of the scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Fault {
    /// The host's software stops; peers see their connections close.
    Crash(String),
    /// The host's software restarts with fresh state (a crashed host comes back).
    Bounce(String),
    /// Messages between the two hosts are dropped (connects are refused).
    Partition(String, String),
    /// Undoes a partition.
    Repair(String, String),
    /// Messages from the first host to the second are dropped.
    PartitionOneway(String, String),
    /// Undoes a one-way partition.
    RepairOneway(String, String),
    /// Messages between the two hosts are held (a stall), delivered on release.
    Hold(String, String),
    /// Delivers held messages and ends the hold.
    Release(String, String),
    /// Every message between the two hosts takes exactly this long.
    LinkLatency(String, String, Dur),
    /// Each message between the two hosts breaks the link with this probability (TCP
    /// has no retransmission in turmoil: streams in flight stall or break).
    LinkFailRate(String, String, f64),
    /// From `at` to `until`, every `every.0` to `every.1` (seeded), one of `hosts`
    /// at random is crashed (if more than `min_running` are up) or bounced. Expanded
    /// into crashes and bounces before the run, so a shrunk scenario lists them.
    Chaos {
        /// The hosts to pick from.
        hosts: Vec<String>,
        /// Shortest and longest gap between two events.
        every: (Dur, Dur),
        /// No event after this time.
        until: Dur,
        /// Never crash below this many running hosts of `hosts`; default 1.
        #[serde(default = "one")]
        min_running: u32,
    },
    /// Reload the balancer with this full configuration text (`${HOST}` substituted).
    /// A text that does not parse or validate is refused by the balancer, which keeps
    /// serving the configuration in force (D6).
    Reload(String),
    /// Reload with this backend host added (on its port, weight 1, named after the
    /// host) to the workload's pool of the configuration in force.
    BackendAdded(String),
    /// Reload with this backend removed from the workload's pool: it drains.
    BackendRemoved(String),
    /// Reload with this backend's weight set to 0: it drains.
    BackendDrained(String),
}

impl Fault {
    /// Short name for reports and traces.
    pub fn label(&self) -> String {
        match self {
            Fault::Crash(h) => format!("crash {h}"),
            Fault::Bounce(h) => format!("bounce {h}"),
            Fault::Partition(a, b) => format!("partition {a} {b}"),
            Fault::Repair(a, b) => format!("repair {a} {b}"),
            Fault::PartitionOneway(a, b) => format!("partition-oneway {a}->{b}"),
            Fault::RepairOneway(a, b) => format!("repair-oneway {a}->{b}"),
            Fault::Hold(a, b) => format!("hold {a} {b}"),
            Fault::Release(a, b) => format!("release {a} {b}"),
            Fault::LinkLatency(a, b, d) => format!("latency {a} {b} {d}"),
            Fault::LinkFailRate(a, b, r) => format!("fail-rate {a} {b} {r}"),
            Fault::Chaos { hosts, .. } => format!("chaos over {}", hosts.join(",")),
            Fault::Reload(_) => "reload".into(),
            Fault::BackendAdded(h) => format!("backend-added {h}"),
            Fault::BackendRemoved(h) => format!("backend-removed {h}"),
            Fault::BackendDrained(h) => format!("backend-drained {h}"),
        }
    }

    /// The hosts it names.
    fn hosts(&self) -> Vec<&str> {
        match self {
            Fault::Crash(h) | Fault::Bounce(h) => vec![h],
            Fault::BackendAdded(h) | Fault::BackendRemoved(h) | Fault::BackendDrained(h) => vec![h],
            Fault::Partition(a, b)
            | Fault::Repair(a, b)
            | Fault::PartitionOneway(a, b)
            | Fault::RepairOneway(a, b)
            | Fault::Hold(a, b)
            | Fault::Release(a, b)
            | Fault::LinkLatency(a, b, _)
            | Fault::LinkFailRate(a, b, _) => vec![a, b],
            Fault::Chaos { hosts, .. } => hosts.iter().map(String::as_str).collect(),
            Fault::Reload(_) => vec![],
        }
    }
}

/// Bounds checked after the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename = "Expect", deny_unknown_fields)]
pub struct Expectations {
    /// Each backend's share of the requests the backends received.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub share: Vec<ShareBound>,
    /// Time from a backend's death (crash, partition or hold from the balancer, or
    /// refusing from the start) to the balancer's last pick of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detection: Vec<TimeBound>,
    /// Time from a backend's recovery (bounce, repair, release) to its full weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovery: Vec<TimeBound>,
    /// Share of requests sent in a window that got a complete reply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub success_rate: Vec<RateBound>,
    /// I4: after the last fault, idempotent requests succeed again.
    #[serde(default)]
    pub liveness: Liveness,
    /// The run must complete at least this many requests (a run that sends nothing
    /// proves nothing); default 1.
    #[serde(default = "one_u64")]
    pub min_replies: u64,
    /// Requests in flight on a drained backend at its reload that must get their reply
    /// (I3); default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub drain_finished_min: u64,
    /// The pool's `drained_cut_total` at the end must be at least this (C12); default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub drained_cut_min: u64,
    /// Reloads the balancer must have refused (D6); default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reloads_refused_min: u64,
    /// How many requests ended a given way: the outcome's trace tag (`reply 200`,
    /// `reply 502`, `failed reset`, `timeout`, ...) starts with `outcome`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outcomes: Vec<OutcomeBound>,
    /// L7: receptions beyond a request's first (retries on another backend and
    /// re-sends on a fresh connection together) must be at least this; default 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub resent_min: u64,
}

/// Bounds on the number of requests that ended one way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "Outcome", deny_unknown_fields)]
pub struct OutcomeBound {
    /// Prefix of the outcome's tag, as the trace writes it: `reply 504`, `failed`.
    pub outcome: String,
    /// Fewest; default 0.
    #[serde(default)]
    pub min: u64,
    /// Most; default no bound.
    #[serde(default)]
    pub max: Option<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn one_u64() -> u64 {
    1
}

/// A backend's share of traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename = "Share", deny_unknown_fields)]
pub struct ShareBound {
    /// Backend host name.
    pub backend: String,
    /// Lowest share, 0 to 1.
    #[serde(default)]
    pub min: f64,
    /// Highest share, 0 to 1.
    #[serde(default = "one_f")]
    pub max: f64,
    /// Window start (by arrival at the backends); default 0.
    #[serde(default)]
    pub from: Dur,
    /// Window end; default the end of the workload.
    #[serde(default)]
    pub to: Option<Dur>,
}

/// A time bound on one backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename = "Bound", deny_unknown_fields)]
pub struct TimeBound {
    /// Backend host name.
    pub backend: String,
    /// Shortest time allowed (a recovery faster than the slow-start window skipped the
    /// ramp); default 0.
    #[serde(default)]
    pub min: Dur,
    /// Longest time allowed.
    pub max: Dur,
}

/// A success-rate bound over the requests sent in a window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename = "Rate", deny_unknown_fields)]
pub struct RateBound {
    /// Window start; default 0.
    #[serde(default)]
    pub from: Dur,
    /// Window end; default the end of the workload.
    #[serde(default)]
    pub to: Option<Dur>,
    /// Lowest share of complete replies, 0 to 1.
    pub min: f64,
}

/// I4 liveness.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename = "Liveness", deny_unknown_fields)]
pub struct Liveness {
    /// Default on.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Time after the last fault before the rate is held to `min`. Default from the
    /// configuration: fall and rise times the check interval (with jitter), plus the
    /// check timeout, slow start, the connect timeout and one second.
    #[serde(default)]
    pub grace: Option<Dur>,
    /// Default 1 (every idempotent request).
    #[serde(default = "one_f")]
    pub min: f64,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            enabled: true,
            grace: None,
            min: 1.0,
        }
    }
}

/// Why a scenario cannot run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioError {
    /// One line per problem, each starting with the file (and line:col when known).
    pub problems: Vec<String>,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}

impl std::error::Error for ScenarioError {}

fn ron_options() -> ron::Options {
    // `implicit_some`: `fail_after: 5` rather than `fail_after: Some(5)`.
    ron::Options::default().with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
}

impl Scenario {
    /// Parses scenario text; `origin` names it in messages (`FILE:LINE:COL: ...`).
    pub fn parse(src: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        ron_options().from_str(src).map_err(|e| ScenarioError {
            problems: vec![format!(
                "{origin}:{}:{}: {}",
                e.span.start.line, e.span.start.col, e.code
            )],
        })
    }

    /// The scenario as RON text that [`Scenario::parse`] reads back.
    pub fn to_ron(&self) -> Result<String, String> {
        let pretty = ron::ser::PrettyConfig::new()
            .struct_names(false)
            .escape_strings(false)
            .extensions(ron::extensions::Extensions::IMPLICIT_SOME);
        ron_options().to_string_pretty(self, pretty).map_err(|e| e.to_string())
    }

    /// Every host name, in registration order: backends, the balancer, the clients.
    pub fn hosts(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.backends.iter().map(|b| b.name.as_str()).collect();
        v.push(&self.balancer.name);
        v.extend(self.clients.iter().map(String::as_str));
        v
    }
}

/// A scenario checked and resolved, ready to run.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The scenario as written (chaos not yet expanded: that needs the seed).
    pub scenario: Scenario,
    /// Where it came from, for messages and the replay command.
    pub origin: String,
    /// The configuration text with every `${HOST}` replaced.
    pub config_text: String,
    /// The parsed configuration.
    pub config: Config,
    /// Index of the workload's listener in `config.listeners`.
    pub listener: usize,
    /// Index of that listener's pool in `config.pools`.
    pub pool: usize,
    /// For each backend of the scenario, its index in that pool, if it is in it.
    pub pool_index: Vec<Option<usize>>,
    /// Each host's simulated address, by name.
    pub addrs: BTreeMap<String, IpAddr>,
    /// Quiescence wait after the workload.
    pub quiesce: Duration,
    /// Liveness grace after the last fault.
    pub grace: Duration,
    /// Whether the workload's listener is an `http` (L7) listener: requests are
    /// balanced one by one, may be retried, and may end with a response of ours.
    pub l7: bool,
}

impl Prepared {
    /// The workload's port on the balancer.
    pub fn port(&self) -> u16 {
        self.config.listeners[self.listener].bind.port()
    }

    /// The index of backend host `name` in the scenario's backend list.
    pub fn backend(&self, name: &str) -> Option<usize> {
        self.scenario.backends.iter().position(|b| b.name == name)
    }
}

/// Reads, parses and checks a scenario file.
pub fn load(path: &str) -> Result<Prepared, ScenarioError> {
    load_as(std::path::Path::new(path), path)
}

/// [`load`], naming the file `origin` in messages and replay commands (tests read
/// files by absolute path but print them relative to the workspace).
pub fn load_as(path: &std::path::Path, origin: &str) -> Result<Prepared, ScenarioError> {
    let src = std::fs::read_to_string(path).map_err(|e| ScenarioError {
        problems: vec![format!("{origin}: cannot read: {e}")],
    })?;
    let scenario = Scenario::parse(&src, origin)?;
    prepare(scenario, origin, Some(&src))
}

/// Checks a parsed scenario and resolves its configuration. `src`, when given, is the
/// file's text: configuration problems are then reported at their place in the file.
pub fn prepare(scenario: Scenario, origin: &str, src: Option<&str>) -> Result<Prepared, ScenarioError> {
    let mut p = Vec::new();
    check_shape(&scenario, origin, &mut p);
    if !p.is_empty() {
        return Err(ScenarioError { problems: p });
    }
    let addrs = addresses(&scenario);
    let config_text = match substitute(&scenario.balancer.config, &addrs) {
        Ok(t) => t,
        Err(unknown) => {
            return Err(ScenarioError {
                problems: unknown
                    .into_iter()
                    .map(|u| format!("{origin}: balancer.config: ${{{u}}} names no host of the scenario"))
                    .collect(),
            })
        }
    };
    let config = match Config::parse(&config_text, "balancer.config") {
        Ok(c) => c,
        Err(e) => {
            // Placeholders change columns on their lines, never line numbers, so the
            // lines map back onto the file when the text sits in it verbatim (a raw
            // string).
            let base = src.and_then(|s| position_of(s, &scenario.balancer.config));
            return Err(ScenarioError {
                problems: e
                    .problems()
                    .iter()
                    .map(|pr| match (base, pr.line) {
                        (Some((l0, c0)), Some(line)) => {
                            let col = pr.col.unwrap_or(1) + if line == 1 { c0 - 1 } else { 0 };
                            let path = if pr.path.is_empty() {
                                String::new()
                            } else {
                                format!(" balancer.config: {}:", pr.path)
                            };
                            format!("{origin}:{}:{col}:{path} {}", l0 + line - 1, pr.message)
                        }
                        _ => format!("{origin}: {pr}"),
                    })
                    .collect(),
            });
        }
    };
    let listener = match &scenario.balancer.listener {
        None => 0,
        Some(name) => match config.listeners.iter().position(|l| &l.name == name) {
            Some(i) => i,
            None => {
                return Err(ScenarioError {
                    problems: vec![format!(
                        "{origin}: balancer.listener: the configuration has no listener {name:?}"
                    )],
                })
            }
        },
    };
    let l = &config.listeners[listener];
    let Some(pool) = config.pools.iter().position(|q| q.name == l.pool) else {
        return Err(ScenarioError {
            problems: vec![format!("{origin}: listener {:?} has no pool", l.name)],
        });
    };
    let pool_index: Vec<Option<usize>> = scenario
        .backends
        .iter()
        .map(|b| {
            let addr = SocketAddr::new(addrs[&b.name], b.port);
            config.pools[pool].backends.iter().position(|c| c.address == addr)
        })
        .collect();
    for bc in &config.pools[pool].backends {
        if !scenario
            .backends
            .iter()
            .any(|b| SocketAddr::new(addrs[&b.name], b.port) == bc.address)
        {
            p.push(format!(
                "{origin}: balancer.config: backend {} ({}) is no backend host of the scenario (write \"${{NAME}}:PORT\")",
                bc.name, bc.address
            ));
        }
    }
    check_expectations(&scenario, &pool_index, origin, &mut p);
    for (i, f) in scenario.timeline.iter().enumerate() {
        if let Fault::Reload(text) = &f.fault {
            if let Err(unknown) = substitute(text, &addrs) {
                for u in unknown {
                    p.push(format!(
                        "{origin}: timeline[{i}] (reload at {}): ${{{u}}} names no host of the scenario",
                        f.at
                    ));
                }
            }
        }
    }
    if !p.is_empty() {
        return Err(ScenarioError { problems: p });
    }
    let l7 = config.listeners[listener].mode == Mode::Http;
    let quiesce = scenario
        .quiesce
        .map_or_else(|| default_quiesce(&config, pool, l7), |d| d.0);
    let grace = scenario
        .expect
        .liveness
        .grace
        .map_or_else(|| default_grace(&config, pool, l7), |d| d.0);
    Ok(Prepared {
        scenario,
        origin: origin.to_string(),
        config_text,
        config,
        listener,
        pool,
        pool_index,
        addrs,
        quiesce,
        grace,
        l7,
    })
}

/// The wait after the workload before the conservation checks. L4: a connect and the
/// idle timeout (a connection stuck on a silent backend is closed by then), and a
/// second. L7: a request written at the very end may try a connect on every backend
/// of the pool, wait the response timeout on each attempt that may time out (one,
/// or `1 + retries` with `retry_on_timeout`), then relay a body under the idle
/// timeout and linger half a second after closing: all of that, and a second.
fn default_quiesce(config: &Config, pool: usize, l7: bool) -> Duration {
    let t = &config.timeouts;
    if !l7 {
        return t.connect + t.idle + Duration::from_secs(1);
    }
    let backends = u32::try_from(config.pools[pool].backends.len()).unwrap_or(u32::MAX);
    let timeouts = if config.http.retry_on_timeout {
        1 + config.http.retries
    } else {
        1
    };
    t.connect * backends + t.response * timeouts + t.idle + Duration::from_millis(1500)
}

/// I4's bound: fall×interval + rise×interval (each with its jitter) + the check timeout
/// + slow start + the connect timeout, and a second for message latency and the
///   workload's own reconnect backoff. L7 adds `timeouts.pool_idle`: a backend
///   connection pooled before the last fault may be reused until then (a silent one
///   then costs its request the response timeout, and it is not retried).
fn default_grace(config: &Config, pool: usize, l7: bool) -> Duration {
    let p = &config.pools[pool];
    let checks = p
        .backends
        .iter()
        .filter_map(|b| b.check.as_ref())
        .map(|c| {
            let jitter = 1.0 + f64::from(c.jitter_percent) / 100.0;
            c.interval.mul_f64(f64::from(c.fall + c.rise) * jitter) + c.timeout
        })
        .max()
        .unwrap_or(Duration::ZERO);
    let pooled = if l7 { config.timeouts.pool_idle } else { Duration::ZERO };
    checks + p.health.slow_start + config.timeouts.connect + pooled + Duration::from_secs(1)
}

/// Each host's simulated address. turmoil hands out addresses in the order names are
/// first looked up; a throwaway simulation is asked rather than its scheme copied, and
/// the runner looks the names up in the same order.
pub fn addresses(scenario: &Scenario) -> BTreeMap<String, IpAddr> {
    let sim = turmoil::Builder::new().build();
    scenario
        .hosts()
        .into_iter()
        .map(|h| (h.to_string(), sim.lookup(h)))
        .collect()
}

/// Replaces every `${HOST}` with the host's address; the unknown names otherwise.
pub fn substitute(text: &str, addrs: &BTreeMap<String, IpAddr>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut unknown = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find('}') {
            Some(j) => {
                let name = &after[..j];
                match addrs.get(name) {
                    Some(ip) => out.push_str(&ip.to_string()),
                    None => unknown.push(name.to_string()),
                }
                rest = &after[j + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    if unknown.is_empty() {
        Ok(out)
    } else {
        Err(unknown)
    }
}

/// 1-based line and column where `needle` starts in `haystack`, if it is there once.
fn position_of(haystack: &str, needle: &str) -> Option<(usize, usize)> {
    let at = haystack.find(needle)?;
    if haystack[at + 1..].contains(needle) {
        return None;
    }
    let before = &haystack[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Some((line, col))
}

fn check_name(name: &str, what: &str, origin: &str, p: &mut Vec<String>) {
    if name.is_empty()
        || name.len() > HOST_NAME_BYTES_MAX
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        p.push(format!(
            "{origin}: {what} {name:?}: a host name is 1 to {HOST_NAME_BYTES_MAX} letters, digits, '-' or '_'"
        ));
    }
    if name == CLOCK_HOST {
        p.push(format!("{origin}: {what} {name:?}: reserved for the runner"));
    }
}

/// `what` names the value, with its origin.
fn check_fraction(v: f64, what: &str, p: &mut Vec<String>) {
    if !(0.0..=1.0).contains(&v) {
        p.push(format!("{what} is {v}; expected 0 to 1"));
    }
}

/// Everything that can be checked without the configuration.
fn check_shape(s: &Scenario, origin: &str, p: &mut Vec<String>) {
    let end = s.duration.0;
    if end.is_zero() || end > DURATION_MAX {
        p.push(format!(
            "{origin}: duration {}: expected more than 0 and at most 1h",
            s.duration
        ));
    }
    if s.network.min_latency > s.network.max_latency {
        p.push(format!(
            "{origin}: network: min_latency {} is above max_latency {}",
            s.network.min_latency, s.network.max_latency
        ));
    }
    if s.backends.is_empty() {
        p.push(format!("{origin}: backends: at least one backend"));
    }
    if s.clients.is_empty() {
        p.push(format!("{origin}: clients: at least one client"));
    }
    check_name(&s.balancer.name, "balancer.name", origin, p);
    for (i, b) in s.backends.iter().enumerate() {
        check_name(&b.name, &format!("backends[{i}].name"), origin, p);
        if b.port == 0 {
            p.push(format!("{origin}: backends[{i}].port: not 0"));
        }
        if b.error_percent > 100 {
            p.push(format!(
                "{origin}: backends[{i}].error_percent {}: at most 100",
                b.error_percent
            ));
        }
    }
    for (i, c) in s.clients.iter().enumerate() {
        check_name(c, &format!("clients[{i}]"), origin, p);
    }
    let hosts = s.hosts();
    if hosts.len() > HOSTS_MAX {
        p.push(format!("{origin}: {} hosts; at most {HOSTS_MAX}", hosts.len()));
    }
    let mut seen = BTreeSet::new();
    for h in &hosts {
        if !seen.insert(*h) {
            p.push(format!("{origin}: host name {h:?} is used twice"));
        }
    }
    let w = &s.workload;
    let connections = match w.load {
        Load::Closed { connections } => connections,
        Load::Open {
            rate_per_s,
            connections,
        } => {
            if rate_per_s == 0 || rate_per_s > 1_000_000 {
                p.push(format!(
                    "{origin}: workload.load.rate_per_s {rate_per_s}: expected 1 to 1000000"
                ));
            }
            connections
        }
    };
    if connections == 0 || connections > 10_000 {
        p.push(format!(
            "{origin}: workload.load.connections {connections}: expected 1 to 10000"
        ));
    } else if (connections as usize) < s.clients.len() {
        p.push(format!(
            "{origin}: workload.load.connections {connections}: at least one per client ({})",
            s.clients.len()
        ));
    }
    if w.mix.is_empty() || w.mix.iter().all(|m| m.weight == 0) {
        p.push(format!(
            "{origin}: workload.mix: at least one entry with a weight above 0"
        ));
    }
    for (i, m) in w.mix.iter().enumerate() {
        if !METHODS.contains(&m.method.as_str()) {
            p.push(format!(
                "{origin}: workload.mix[{i}].method {:?}: expected one of {}",
                m.method,
                METHODS.join(", ")
            ));
        }
        if m.body_bytes > 64 * 1024 {
            p.push(format!("{origin}: workload.mix[{i}].body_bytes: at most 64KiB"));
        }
    }
    if w.timeout.0.is_zero() || w.connect_timeout.0.is_zero() {
        p.push(format!("{origin}: workload: timeouts must be above 0"));
    }
    let known: BTreeSet<&str> = hosts.iter().copied().collect();
    for (i, f) in s.timeline.iter().enumerate() {
        let at = format!("{origin}: timeline[{i}] ({} at {})", f.fault.label(), f.at);
        if f.at.0 > end {
            p.push(format!("{at}: after the end of the workload ({})", s.duration));
        }
        for h in f.fault.hosts() {
            if !known.contains(h) {
                p.push(format!("{at}: unknown host {h:?}"));
            }
        }
        match &f.fault {
            Fault::BackendAdded(h) | Fault::BackendRemoved(h) | Fault::BackendDrained(h)
                if !s.backends.iter().any(|b| &b.name == h) =>
            {
                p.push(format!("{at}: {h:?} is not a backend of the scenario"));
            }
            Fault::Partition(a, b)
            | Fault::Repair(a, b)
            | Fault::PartitionOneway(a, b)
            | Fault::RepairOneway(a, b)
            | Fault::Hold(a, b)
            | Fault::Release(a, b)
            | Fault::LinkLatency(a, b, _)
            | Fault::LinkFailRate(a, b, _)
                if a == b =>
            {
                p.push(format!("{at}: a link joins two different hosts"));
            }
            Fault::LinkFailRate(_, _, r) => check_fraction(*r, &format!("{at}: the rate"), p),
            Fault::Chaos {
                hosts,
                every,
                until,
                min_running,
            } => {
                if hosts.is_empty() {
                    p.push(format!("{at}: chaos needs hosts"));
                }
                if every.0 .0.is_zero() || every.0 > every.1 {
                    p.push(format!("{at}: every: expected 0 < min <= max"));
                }
                if *until > s.duration || *until < f.at {
                    p.push(format!("{at}: until {until}: expected between `at` and the end"));
                }
                if *min_running as usize > hosts.len() {
                    p.push(format!("{at}: min_running {min_running}: more than the hosts"));
                }
                if hosts.iter().any(|h| h == &s.balancer.name || s.clients.contains(h)) {
                    p.push(format!("{at}: chaos picks among backends only"));
                }
            }
            _ => {}
        }
    }
}

fn check_expectations(s: &Scenario, pool_index: &[Option<usize>], origin: &str, p: &mut Vec<String>) {
    let e = &s.expect;
    let end = s.duration;
    let index = |name: &str| s.backends.iter().position(|b| b.name == name);
    for (i, b) in e.outcomes.iter().enumerate() {
        if b.max.is_some_and(|m| m < b.min) {
            p.push(format!(
                "{origin}: expect.outcomes[{i}]: min {} is above max {:?}",
                b.min, b.max
            ));
        }
    }
    for (i, b) in e.share.iter().enumerate() {
        let at = format!("{origin}: expect.share[{i}]");
        if index(&b.backend).is_none() {
            p.push(format!("{at}: {:?} names no backend", b.backend));
        }
        check_fraction(b.min, &format!("{at}: min"), p);
        check_fraction(b.max, &format!("{at}: max"), p);
        if b.min > b.max {
            p.push(format!("{at}: min {} is above max {}", b.min, b.max));
        }
        if b.to.is_some_and(|t| t > end || t <= b.from) {
            p.push(format!(
                "{at}: the window must lie within the workload and not be empty"
            ));
        }
    }
    for (what, list) in [("detection", &e.detection), ("recovery", &e.recovery)] {
        for (i, b) in list.iter().enumerate() {
            let at = format!("{origin}: expect.{what}[{i}]");
            if b.min > b.max {
                p.push(format!("{at}: min {} is above max {}", b.min, b.max));
            }
            match index(&b.backend) {
                None => p.push(format!("{at}: {:?} names no backend", b.backend)),
                Some(k) if pool_index[k].is_none() => {
                    p.push(format!("{at}: backend {:?} is not in the workload's pool", b.backend))
                }
                Some(_) => {}
            }
        }
    }
    for (i, r) in e.success_rate.iter().enumerate() {
        let at = format!("{origin}: expect.success_rate[{i}]");
        check_fraction(r.min, &format!("{at}: min"), p);
        if r.to.is_some_and(|t| t > end || t <= r.from) {
            p.push(format!(
                "{at}: the window must lie within the workload and not be empty"
            ));
        }
    }
    check_fraction(e.liveness.min, &format!("{origin}: expect.liveness.min"), p);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_they_parse() {
        for (d, s) in [
            (Dur::secs(3), "3s"),
            (Dur::millis(1500), "1500ms"),
            (Dur(Duration::from_micros(7)), "7us"),
            (Dur::default(), "0s"),
        ] {
            assert_eq!(d.to_string(), s);
            assert_eq!(parse_duration(s).map(Dur), Ok(d));
        }
    }

    #[test]
    fn placeholders_are_replaced_and_unknown_ones_named() {
        let mut a = BTreeMap::new();
        a.insert("b1".to_string(), IpAddr::from([192, 168, 0, 1]));
        assert_eq!(
            substitute("x ${b1}:9 ${b1}", &a),
            Ok("x 192.168.0.1:9 192.168.0.1".into())
        );
        assert_eq!(substitute("${nope} ${b1} ${x", &a), Err(vec!["nope".to_string()]));
    }

    #[test]
    fn positions_are_one_based() {
        assert_eq!(position_of("ab\ncd", "d"), Some((2, 2)));
        assert_eq!(position_of("aXa", "a"), None);
    }
}
