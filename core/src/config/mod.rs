//! The configuration: a RON file (or quick-mode flags), checked before anything binds.
//!
//! A [`Config`] is built off the data path and only ever exists validated: every
//! constructor ([`Config::parse`], [`Config::load`], [`Config::from_flags`],
//! [`Config::apply_overrides`]) runs the same checks, so the proxy may rely on them
//! (every listener's pool exists, every pool has a backend that can take traffic, every
//! timeout is finite and non-zero, every health check's timeout fits its interval and
//! its `rise` and `fall` are at least 1). A bad config never replaces a good one: the reload
//! path keeps the old `Config` when a new one fails to build.
//!
//! # The file
//!
//! ```ron
//! (
//!     workers: 0,                 // 0 = one per core
//!     max_connections: 10000,
//!     buffer_size: "16KiB",       // or an integer number of bytes
//!     timeouts: (connect: "3s", idle: "60s", drain: "30s"),
//!     listeners: [(name: "front", bind: "127.0.0.1:8080", mode: "tcp", pool: "web")],
//!     pools: [(
//!         name: "web",
//!         algorithm: "round-robin",
//!         health_check: (kind: "http", path: "/health", interval: "2s", rise: 2, fall: 3),
//!         passive: (consecutive_failures: 5, ejection: "10s", max_ejection: "5m"),
//!         slow_start: "30s",
//!         when_all_down: "refuse",
//!         backends: [
//!             (address: "127.0.0.1:9001"),
//!             (address: "127.0.0.1:9002", name: "b2", weight: 3, health_check: (interval: "5s")),
//!         ],
//!     )],
//! )
//! ```
//!
//! `config/example.ron` at the repository root explains every field. Durations
//! ([`parse_duration`]) and sizes ([`parse_size`]) are strings with units; unknown
//! fields are errors, never ignored.
//!
//! # Health settings
//!
//! Each pool has a [`PoolHealth`]: an optional active check ([`CheckConfig`], TCP or
//! HTTP), passive detection ([`PassiveConfig`]), a slow-start window and an
//! [`AllDown`] policy; `health.rs` holds the types and their defaults. A backend may
//! override the check's timings and its HTTP `path` and `host`; the result is resolved
//! here, so every [`BackendConfig::check`] is the complete check to run against that
//! backend and the health module merges nothing. The quick-mode flags `--health-check`,
//! `--health-interval`, `--rise`, `--fall` and `--slow-start` ([`Overrides`]) set the
//! same fields on every pool.
//!
//! # Errors that say where
//!
//! A [`ConfigError`] lists every problem as `ORIGIN:LINE:COL: FIELD_PATH: message`.
//! Syntax and type errors take their position from ron. Semantic problems (a duplicate
//! backend, an unknown pool) are found after deserialization, and their position is
//! recovered from the source text by `locate.rs`; the same lookup serves
//! [`Config::location`], which the binary uses to point at a listener whose address is
//! in use. Values set by flags are reported by flag (`<command line>: --backend[1]`).
//!
//! # Layout
//!
//! - `schema.rs`: the file format as ron sees it, and the defaults.
//! - `health.rs`: the health-check settings, their defaults and limits.
//! - `validate.rs`: the semantic rules.
//! - `locate.rs`: field path ↔ line and column in the source.
//! - `duration.rs`, `size.rs`: the value grammars shared by the file and the flags.
//! - `cli.rs`: quick mode and overrides.
//! - `error.rs`: [`ConfigError`] and [`Problem`].

mod cli;
mod duration;
mod error;
mod health;
mod http;
mod locate;
mod schema;
mod size;
#[cfg(test)]
mod tests;
mod validate;

pub use cli::{Overrides, QuickFlags};
pub use duration::parse_duration;
pub use error::{ConfigError, Problem, PROBLEMS_MAX};
pub use health::{
    AllDown, CheckConfig, CheckKind, PassiveConfig, PoolHealth, CHECK_INTERVAL_DEFAULT, CHECK_TIMEOUT_DEFAULT,
    CONSECUTIVE_FAILURES_DEFAULT, CONSECUTIVE_FAILURES_MAX, EJECTION_DEFAULT, EXPECT_RANGES_MAX, FALL_DEFAULT,
    HEALTH_BODY_BYTES_DEFAULT, HEALTH_BODY_BYTES_MAX, HTTP_EXPECT_DEFAULT, HTTP_HOST_BYTES_MAX, HTTP_METHOD_BYTES_MAX,
    HTTP_METHOD_DEFAULT, HTTP_PATH_BYTES_MAX, HTTP_PATH_DEFAULT, HTTP_STATUS_MAX, HTTP_STATUS_MIN,
    JITTER_PERCENT_DEFAULT, JITTER_PERCENT_MAX, MAX_EJECTED_PERCENT_DEFAULT, MAX_EJECTION_DEFAULT, RISE_DEFAULT,
    THRESHOLD_MAX,
};
pub use http::HttpConfig;
pub use size::parse_size;

use crate::balancer::Algorithm;
use duration::format_duration;
use size::format_size;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The origin of values set by flags, in problems and locations.
pub const COMMAND_LINE: &str = "<command line>";
/// The origin of a configuration built in code ([`Config::default`]).
pub const BUILT_IN: &str = "<built-in>";

/// Worker threads at most (`workers: 0` means one per core).
pub const WORKERS_MAX: usize = 1024;
/// `max_connections` when the file leaves it out.
pub const MAX_CONNECTIONS_DEFAULT: usize = 10_000;
/// `buffer_size` when the file leaves it out.
pub const BUFFER_BYTES_DEFAULT: usize = 16 * 1024;
/// Smallest per-direction proxy buffer: below this, syscall overhead dominates.
pub const BUFFER_BYTES_MIN: usize = 1024;
/// Largest per-direction proxy buffer: two of these per connection, times
/// `max_connections`, is the proxy's memory bound.
pub const BUFFER_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Longest timeout of any kind. Longer ones are almost always a unit mistake, and a
/// bound keeps deadline arithmetic far from overflow.
pub const TIMEOUT_MAX: Duration = Duration::from_secs(24 * 3600);
/// Listeners at most.
pub const LISTENERS_MAX: usize = 1024;
/// Pools at most.
pub const POOLS_MAX: usize = 1024;
/// Backends in one pool at most.
pub const BACKENDS_PER_POOL_MAX: usize = 10_000;
/// Longest listener, pool or backend name, in bytes: names go into logs and metrics.
pub const NAME_BYTES_MAX: usize = 128;
/// Largest configuration text: far above any real config, small enough to read whole.
pub const CONFIG_BYTES_MAX: usize = 4 * 1024 * 1024;

/// A validated configuration.
///
/// Equality compares the settings only, not where they came from: a reload that
/// reformats the file compares equal to the running config.
#[derive(Clone, Debug)]
pub struct Config {
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Process-wide limit on open client connections.
    pub max_connections: usize,
    /// Per-direction proxy buffer, in bytes.
    pub buffer_size: usize,
    /// Connect, idle and drain timeouts.
    pub timeouts: Timeouts,
    /// At least one once validated; binds and names are unique.
    pub listeners: Vec<ListenerConfig>,
    /// Every listener's pool is here; names are unique.
    pub pools: Vec<PoolConfig>,
    /// Limits, retries and upstream pooling of `http` listeners.
    pub http: HttpConfig,
    /// Where each value came from, for [`Config::location`] and problem reports.
    provenance: Provenance,
}

/// Timeouts; each is finite and non-zero once validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Limit on one connect attempt to a backend.
    pub connect: Duration,
    /// A connection on which no byte moved for this long is closed.
    pub idle: Duration,
    /// After SIGTERM or SIGINT, how long open connections may finish; after a reload
    /// that removes a backend (or sets its weight to 0), how long its open connections
    /// may go on before they are cut.
    pub drain: Duration,
    /// HTTP: from a request's first byte to the end of its head (HAProxy's `timeout
    /// http-request`): a slowloris client gets 408 at this deadline however it trickles.
    pub request_head: Duration,
    /// HTTP: from the end of a request head to the end of its body: a client trickling
    /// its body (RUDY) gets 408 at this deadline however it trickles.
    pub request_body: Duration,
    /// HTTP: how long a keep-alive client connection may wait for the first byte of its
    /// next request (HAProxy's `timeout http-keep-alive`); closed silently after it.
    pub keep_alive: Duration,
    /// HTTP: from the end of the request to the response head (HAProxy's `timeout
    /// server` for the first byte): 504 after it.
    pub response: Duration,
    /// HTTP: an upgraded (WebSocket) connection on which nothing moved for this long is
    /// closed (HAProxy's `timeout tunnel`).
    pub tunnel: Duration,
    /// HTTP: an idle pooled backend connection is closed after this long. Shorter than
    /// the keep-alive timeout of common backends (5 s in Node.js and Apache), so that we
    /// close first rather than reuse a connection the backend is closing.
    pub pool_idle: Duration,
}

impl Default for Timeouts {
    /// 3s, 60s, 30s: HAProxy's usual `timeout connect` and a minute of idle time; for
    /// HTTP, 10 s for a request head, 15 s of keep-alive, 30 s for a response head, an
    /// hour for a tunnel, 4 s for a pooled connection and 5 minutes for a request body.
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(3),
            idle: Duration::from_secs(60),
            drain: Duration::from_secs(30),
            request_head: Duration::from_secs(10),
            request_body: Duration::from_secs(300),
            keep_alive: Duration::from_secs(15),
            response: Duration::from_secs(30),
            tunnel: Duration::from_secs(3600),
            pool_idle: Duration::from_secs(4),
        }
    }
}

/// What a listener proxies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// L4: bytes are forwarded as they come.
    Tcp,
    /// L7 HTTP/1.1: each request is parsed, checked and balanced on its own.
    Http,
}

impl Mode {
    /// The name used in configuration files and flags.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Tcp => "tcp",
            Mode::Http => "http",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tcp" => Ok(Mode::Tcp),
            "http" => Ok(Mode::Http),
            _ => Err(format!("unknown mode {s:?}; expected \"tcp\" or \"http\"")),
        }
    }
}

// Written as a string ("tcp") in the file, like algorithms, rather than as a RON enum
// variant (`Tcp`), so that the file and the flags spell it the same way.
impl<'de> serde::Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        schema::deserialize_parsed(deserializer, "a mode string, \"tcp\" or \"http\"", str::parse)
    }
}

/// A listening socket and the pool it sends clients to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    /// For logs; defaults to `listener-N`, N its index in `listeners`.
    pub name: String,
    pub bind: SocketAddr,
    pub mode: Mode,
    /// The name of a pool in [`Config::pools`].
    pub pool: String,
}

/// A named set of backends and how to choose among them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    pub name: String,
    /// Defaults to round robin.
    pub algorithm: Algorithm,
    /// Never empty once validated.
    pub backends: Vec<BackendConfig>,
    /// Active and passive checks, slow start, and the all-down policy.
    pub health: PoolHealth,
}

/// One upstream server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendConfig {
    pub address: SocketAddr,
    /// Unique within its pool; defaults to the address in canonical form.
    pub name: String,
    /// 0..=[`WEIGHT_MAX`](crate::balancer::WEIGHT_MAX); 0 means drained (no new
    /// connections). Defaults to 1.
    pub weight: u32,
    /// The pool's active check with this backend's overrides applied; None = no active
    /// checks. Some exactly when the pool's [`PoolHealth::check`] is, and of the same
    /// kind, method, expected statuses and body bound (only timings, `path` and `host`
    /// may be overridden).
    pub check: Option<CheckConfig>,
}

impl Default for Config {
    /// Every process-wide default, with no listeners or pools (so not valid as is): a
    /// base for configurations built in code, which then call [`Config::validate`].
    fn default() -> Self {
        Config {
            workers: 0,
            max_connections: MAX_CONNECTIONS_DEFAULT,
            buffer_size: BUFFER_BYTES_DEFAULT,
            timeouts: Timeouts::default(),
            listeners: Vec::new(),
            pools: Vec::new(),
            http: HttpConfig::default(),
            provenance: Provenance::built_in(),
        }
    }
}

impl PartialEq for Config {
    fn eq(&self, other: &Self) -> bool {
        self.workers == other.workers
            && self.max_connections == other.max_connections
            && self.buffer_size == other.buffer_size
            && self.timeouts == other.timeouts
            && self.listeners == other.listeners
            && self.pools == other.pools
            && self.http == other.http
    }
}

impl Eq for Config {}

impl Config {
    /// Parses and validates RON text. `origin` names the source in messages: a file
    /// path, or a label such as `<embedded default>`.
    pub fn parse(src: &str, origin: &str) -> Result<Config, ConfigError> {
        if src.len() > CONFIG_BYTES_MAX {
            return Err(ConfigError::whole(
                origin,
                format!(
                    "the configuration is {} bytes; the limit is {}",
                    src.len(),
                    format_size(CONFIG_BYTES_MAX)
                ),
            ));
        }
        let raw: schema::RawConfig = ron::Options::default().from_str(src).map_err(|e| {
            let at = locate::Position {
                line: e.span.start.line,
                col: e.span.start.col,
            };
            let (at, path) = locate::error_site(src, at);
            ConfigError::new(vec![Problem {
                origin: origin.to_string(),
                line: Some(at.line),
                col: Some(at.col),
                path,
                message: e.code.to_string(),
            }])
        })?;
        // The file's own shape faults (an HTTP-only field on a TCP check, a backend
        // override with no pool check to override) are found while filling in defaults,
        // and reported together with the semantic ones.
        let (config, shape) = raw.into_config(Provenance::file(origin, src));
        config.report(shape)?;
        Ok(config)
    }

    /// Reads and parses a file; an unreadable file is a [`ConfigError`] too.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let cannot_read =
            |e: std::io::Error| ConfigError::whole(&origin, format!("cannot read the configuration: {e}"));
        let file = std::fs::File::open(path).map_err(cannot_read)?;
        // Read one byte past the limit, so an oversized file is reported, not truncated.
        let mut bytes = Vec::new();
        file.take(CONFIG_BYTES_MAX as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(cannot_read)?;
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                let valid = e.utf8_error().valid_up_to();
                let prefix = String::from_utf8_lossy(&e.as_bytes()[..valid]);
                let line = prefix.matches('\n').count() + 1;
                let col = prefix.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                return Err(ConfigError::new(vec![Problem {
                    origin,
                    line: Some(line),
                    col: Some(col),
                    path: String::new(),
                    message: "the configuration is not valid UTF-8".to_string(),
                }]));
            }
        };
        Config::parse(&text, &origin)
    }

    /// Runs every semantic check; for configurations built or changed in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.report(Vec::new())
    }

    /// Validates, adding `earlier` findings; fails when there is any finding at all.
    fn report(&self, mut findings: Vec<validate::Finding>) -> Result<(), ConfigError> {
        findings.extend(validate::validate(self));
        if findings.is_empty() {
            return Ok(());
        }
        // A flag applied to every pool (`--rise 0`) fails the same way in each; say so once.
        let mut seen = std::collections::BTreeSet::new();
        let problems = findings
            .into_iter()
            .map(|f| self.problem(&f.path, f.message))
            .filter(|p| seen.insert(p.to_string()))
            .collect();
        Err(ConfigError::new(problems))
    }

    /// Where the value at `path` (such as `listeners[0].bind`) was written:
    /// `ORIGIN:LINE:COL`, or just `ORIGIN` when there is no position (flags, configs
    /// built in code). A value the file leaves out is located at the entry holding it.
    pub fn location(&self, path: &str) -> String {
        let site = self.provenance.site(path);
        match site.position {
            Some(at) => format!("{}:{}:{}", site.origin, at.line, at.col),
            None => site.origin,
        }
    }

    /// The pool called `name`.
    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// A problem about the value at `path`, located and named by where it came from.
    fn problem(&self, path: &str, message: String) -> Problem {
        let site = self.provenance.site(path);
        Problem {
            origin: site.origin,
            line: site.position.map(|p| p.line),
            col: site.position.map(|p| p.col),
            path: site.path,
            message,
        }
    }

    /// Names an earlier entry for "already used by" messages, HAProxy style:
    /// `pools[0].backends[0], declared at lb.ron:9:29`.
    fn declared(&self, entry: &str, value_path: &str) -> String {
        let name = self.provenance.site(entry).path;
        let site = self.provenance.site(value_path);
        match site.position {
            Some(at) => format!("{name}, declared at {}:{}:{}", site.origin, at.line, at.col),
            None if site.origin == COMMAND_LINE => format!("{name} on the command line"),
            None => format!("{name} in {}", site.origin),
        }
    }
}

/// Parses `IP:PORT` (`127.0.0.1:8080`, `[::1]:8080`). Host names are refused rather
/// than resolved: resolution at start-up would make the config depend on DNS.
pub(crate) fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    // A port past 65535 is the one typo worth its own message.
    if let Some((host, port)) = s.rsplit_once(':') {
        let host_ok = host.parse::<std::net::Ipv4Addr>().is_ok()
            || host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok());
        if host_ok && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("invalid address {s:?}: port {port} is out of range 1..=65535"));
        }
    }
    Err(format!(
        "invalid address {s:?}: expected IP:PORT such as \"127.0.0.1:8080\" or \"[::1]:8080\" (host names are not resolved)"
    ))
}

/// Where a configuration's values came from.
#[derive(Clone, Debug)]
struct Provenance {
    /// The file path or label given to [`Config::parse`], or [`COMMAND_LINE`].
    origin: String,
    /// The RON text, kept to locate values on demand. Shared: configs are cloned into
    /// snapshots, and positions are only needed when something goes wrong.
    source: Option<Arc<Source>>,
    /// Values set by flags: field path → flag (`timeouts.connect` → `--connect-timeout`).
    /// A path below an entry (`pools[0].backends[1].weight`) belongs to its flag.
    flags: BTreeMap<String, String>,
}

/// The text of a configuration file and, once first needed, where each value starts.
struct Source {
    text: String,
    /// Built on the first lookup: one scan of the text serves every problem of a
    /// config with thousands of them.
    positions: OnceLock<BTreeMap<String, locate::Position>>,
}

// By hand: a derived `Debug` would print the whole file into every logged config.
impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("bytes", &self.text.len())
            .finish_non_exhaustive()
    }
}

/// Where one value is: what to print as its origin, path and position.
struct Site {
    origin: String,
    path: String,
    position: Option<locate::Position>,
}

impl Provenance {
    fn file(origin: &str, text: &str) -> Provenance {
        let source = Source {
            text: text.to_string(),
            positions: OnceLock::new(),
        };
        Provenance {
            origin: origin.to_string(),
            source: Some(Arc::new(source)),
            flags: BTreeMap::new(),
        }
    }

    fn built_in() -> Provenance {
        Provenance {
            origin: BUILT_IN.to_string(),
            source: None,
            flags: BTreeMap::new(),
        }
    }

    /// Quick mode: one listener and one pool, every value from a flag or a default.
    fn quick_mode(backends: usize) -> Provenance {
        let mut p = Provenance {
            origin: COMMAND_LINE.to_string(),
            source: None,
            flags: BTreeMap::new(),
        };
        p.set_by_flag("listeners[0].bind", "--listen");
        p.set_by_flag("listeners[0].mode", "--mode");
        p.set_by_flag("pools[0].algorithm", "--algorithm");
        p.set_by_flag("pools[0].backends", "--backend");
        for i in 0..backends {
            p.set_by_flag(&format!("pools[0].backends[{i}]"), &format!("--backend[{i}]"));
        }
        p
    }

    fn set_by_flag(&mut self, path: &str, flag: &str) {
        self.flags.insert(path.to_string(), flag.to_string());
    }

    /// Whether the file spells out the value at `path` itself (rather than leaving it
    /// to a default), and no flag has replaced it since: an override only recomputes a
    /// default, never a value the operator wrote.
    fn written(&self, path: &str) -> bool {
        let in_file = self.source.as_deref().is_some_and(|source| {
            source
                .positions
                .get_or_init(|| locate::index(&source.text))
                .contains_key(path)
        });
        in_file && self.site(path).origin != COMMAND_LINE
    }

    fn site(&self, path: &str) -> Site {
        // The most specific flag that set this path or an entry above it.
        let flag = self
            .flags
            .iter()
            .filter(|(set, _)| {
                path.strip_prefix(set.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
            })
            .max_by_key(|(set, _)| set.len());
        if let Some((_, flag)) = flag {
            return Site {
                origin: COMMAND_LINE.to_string(),
                path: flag.clone(),
                position: None,
            };
        }
        let position = self.source.as_deref().and_then(|source| {
            let positions = source.positions.get_or_init(|| locate::index(&source.text));
            // A value the file leaves out is located at the entry that would hold it.
            let mut at = path;
            loop {
                if let Some(found) = positions.get(at) {
                    return Some(*found);
                }
                if at.is_empty() {
                    return None;
                }
                at = at.rfind(['.', '[']).map_or("", |cut| &at[..cut]);
            }
        });
        Site {
            origin: self.origin.clone(),
            path: path.to_string(),
            position,
        }
    }
}
