//! Semantic checks: what deserializes fine but cannot run.
//!
//! Every rule runs and every finding is kept, so one `--check` run lists all the faults
//! in a file. The checks work on a [`Config`] after defaults are filled in, whatever
//! built it (a file, quick-mode flags, or a file with flag overrides on top), so the
//! three paths cannot drift apart. Each finding names the field path of the offending
//! value; [`Config`] turns that into `file:line:col` (or the flag that set it).
//!
//! The limits follow HAProxy where it has one (weights 0..=256, "declared at" for
//! duplicates, `rise`/`fall` of at least 1) and otherwise bound everything a config can
//! make the process allocate or wait for.
//!
//! A backend's health check is the pool's with overrides applied, so a fault in the
//! pool's check would show up again in every backend. A backend's check is therefore
//! only checked where it differs from the pool's: each fault is reported once, at the
//! value that was written.

use super::health::format_range;
use super::http::{HEADERS_MAX_LIMIT, HEADER_BYTES_MAX_LIMIT, POOL_IDLE_MAX_LIMIT, RETRIES_MAX};
use super::{
    format_duration, format_size, CheckConfig, CheckKind, Config, PassiveConfig, BACKENDS_PER_POOL_MAX,
    BUFFER_BYTES_MAX, BUFFER_BYTES_MIN, CONSECUTIVE_FAILURES_MAX, EXPECT_RANGES_MAX, HEALTH_BODY_BYTES_MAX,
    HTTP_HOST_BYTES_MAX, HTTP_METHOD_BYTES_MAX, HTTP_PATH_BYTES_MAX, HTTP_STATUS_MAX, HTTP_STATUS_MIN,
    JITTER_PERCENT_MAX, LISTENERS_MAX, NAME_BYTES_MAX, POOLS_MAX, THRESHOLD_MAX, TIMEOUT_MAX, WORKERS_MAX,
};
use crate::balancer::Algorithm;
use crate::balancer::WEIGHT_MAX;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// One semantic fault: the path of the value at fault and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Finding {
    pub path: String,
    pub message: String,
}

/// Collects findings; `Config` is kept to describe where earlier declarations are.
struct Findings<'a> {
    config: &'a Config,
    found: Vec<Finding>,
}

impl Findings<'_> {
    fn add(&mut self, path: String, message: String) {
        self.found.push(Finding { path, message });
    }

    /// Reports `value_path` (in entry `entry`) when `key` was already used by an earlier
    /// entry, naming that entry and where it was declared, as HAProxy does.
    fn first_use<K: Ord>(
        &mut self,
        seen: &mut BTreeMap<K, String>,
        key: K,
        entry: String,
        field: &str,
        describe: impl FnOnce() -> String,
    ) {
        if let Some(first) = seen.get(&key) {
            let earlier = self.config.declared(first, &format!("{first}.{field}"));
            self.add(
                format!("{entry}.{field}"),
                format!("{} is already used by {earlier}", describe()),
            );
        } else {
            seen.insert(key, entry);
        }
    }
}

pub(super) fn validate(config: &Config) -> Vec<Finding> {
    let mut f = Findings {
        config,
        found: Vec::new(),
    };
    check_process(&mut f);
    check_listeners(&mut f);
    check_pools(&mut f);
    f.found
}

fn check_process(f: &mut Findings<'_>) {
    let c = f.config;
    if c.workers > WORKERS_MAX {
        f.add(
            "workers".into(),
            format!(
                "{} workers is above the limit of {WORKERS_MAX} (0 means one per core)",
                c.workers
            ),
        );
    }
    if c.max_connections == 0 {
        f.add(
            "max_connections".into(),
            "must be at least 1 (0 would refuse every client)".into(),
        );
    }
    if !(BUFFER_BYTES_MIN..=BUFFER_BYTES_MAX).contains(&c.buffer_size) {
        f.add(
            "buffer_size".into(),
            format!(
                "{} is outside the allowed range {}..={}",
                format_size(c.buffer_size),
                format_size(BUFFER_BYTES_MIN),
                format_size(BUFFER_BYTES_MAX)
            ),
        );
    }
    let timeouts = [
        ("connect", c.timeouts.connect),
        ("idle", c.timeouts.idle),
        ("drain", c.timeouts.drain),
        ("request_head", c.timeouts.request_head),
        ("request_body", c.timeouts.request_body),
        ("keep_alive", c.timeouts.keep_alive),
        ("response", c.timeouts.response),
        ("tunnel", c.timeouts.tunnel),
        ("pool_idle", c.timeouts.pool_idle),
    ];
    for (name, value) in timeouts {
        check_duration(f, format!("timeouts.{name}"), value, ZERO_TIMEOUT);
    }
    check_http(f);
}

/// The `http` section: every limit finite and non-zero, so that no request is refused
/// by a limit of 0 and none can make the process allocate without bound.
fn check_http(f: &mut Findings<'_>) {
    let h = &f.config.http;
    let sizes = [
        ("header_bytes_max", h.header_bytes_max, 1024, HEADER_BYTES_MAX_LIMIT),
        ("headers_max", h.headers_max, 1, HEADERS_MAX_LIMIT),
        ("uri_bytes_max", h.uri_bytes_max, 16, HEADER_BYTES_MAX_LIMIT),
        ("pool_idle_max", h.pool_idle_max, 0, POOL_IDLE_MAX_LIMIT),
    ];
    for (name, value, min, max) in sizes {
        if !(min..=max).contains(&value) {
            f.add(
                format!("http.{name}"),
                format!("{value} is outside the allowed range {min}..={max}"),
            );
        }
    }
    if h.uri_bytes_max > h.header_bytes_max {
        f.add(
            "http.uri_bytes_max".into(),
            format!(
                "{} is larger than header_bytes_max ({}): the request line is part of the head",
                h.uri_bytes_max, h.header_bytes_max
            ),
        );
    }
    if h.body_bytes_max == 0 {
        f.add(
            "http.body_bytes_max".into(),
            "must be at least 1 byte (requests without a body are not limited by it)".into(),
        );
    }
    if h.retries > RETRIES_MAX {
        f.add(
            "http.retries".into(),
            format!("{} retries is above the limit of {RETRIES_MAX}", h.retries),
        );
    }
    if h.retry_budget_percent > 100 {
        f.add(
            "http.retry_budget_percent".into(),
            format!("{}% is above 100%", h.retry_budget_percent),
        );
    }
    if h.max_requests_per_backend == 0 {
        f.add(
            "http.max_requests_per_backend".into(),
            "must be at least 1 (0 would refuse every request)".into(),
        );
    }
}

/// Why a zero timeout is refused.
const ZERO_TIMEOUT: &str = "a zero timeout would expire at once";

/// A duration that must be above zero (`zero_why` says why) and at most [`TIMEOUT_MAX`].
/// Returns whether it is valid, so that rules relating two durations run only on valid
/// ones.
fn check_duration(f: &mut Findings<'_>, path: String, value: Duration, zero_why: &str) -> bool {
    if value.is_zero() {
        f.add(path, format!("must be greater than zero ({zero_why})"));
        false
    } else {
        check_duration_max(f, path, value)
    }
}

/// A duration that may be zero, at most [`TIMEOUT_MAX`].
fn check_duration_max(f: &mut Findings<'_>, path: String, value: Duration) -> bool {
    if value > TIMEOUT_MAX {
        f.add(
            path,
            format!(
                "{} is above the limit of {}",
                format_duration(value),
                format_duration(TIMEOUT_MAX)
            ),
        );
        return false;
    }
    true
}

fn check_name(f: &mut Findings<'_>, path: String, name: &str) {
    if name.is_empty() {
        f.add(path, "must not be empty".into());
    } else if name.len() > NAME_BYTES_MAX {
        f.add(
            path,
            format!("is {} bytes long; the limit is {NAME_BYTES_MAX}", name.len()),
        );
    } else if name.chars().any(char::is_control) {
        f.add(path, format!("{name:?} contains a control character"));
    }
}

fn check_listeners(f: &mut Findings<'_>) {
    let c = f.config;
    if c.listeners.is_empty() {
        f.add("listeners".into(), "at least one listener is required".into());
    } else if c.listeners.len() > LISTENERS_MAX {
        f.add(
            "listeners".into(),
            format!("{} listeners is above the limit of {LISTENERS_MAX}", c.listeners.len()),
        );
    }
    let mut names = BTreeMap::new();
    let mut binds = BTreeMap::new();
    for (i, l) in c.listeners.iter().enumerate() {
        let entry = format!("listeners[{i}]");
        check_name(f, format!("{entry}.name"), &l.name);
        f.first_use(&mut names, l.name.as_str(), entry.clone(), "name", || {
            format!("listener name {:?}", l.name)
        });
        if l.bind.port() == 0 {
            f.add(
                format!("{entry}.bind"),
                format!(
                    "port 0 in {} is not allowed: a listener needs a fixed port clients can reach",
                    l.bind
                ),
            );
        }
        f.first_use(&mut binds, l.bind, entry.clone(), "bind", || {
            format!("bind address {}", l.bind)
        });
        if c.pool(&l.pool).is_none() {
            let defined: Vec<String> = c.pools.iter().map(|p| format!("{:?}", p.name)).collect();
            let known = if defined.is_empty() {
                "no pools are defined".to_string()
            } else {
                format!("defined pools: {}", defined.join(", "))
            };
            f.add(format!("{entry}.pool"), format!("unknown pool {:?} ({known})", l.pool));
        }
    }
}

fn check_pools(f: &mut Findings<'_>) {
    let c = f.config;
    if c.pools.len() > POOLS_MAX {
        f.add(
            "pools".into(),
            format!("{} pools is above the limit of {POOLS_MAX}", c.pools.len()),
        );
    }
    let mut names = BTreeMap::new();
    for (i, pool) in c.pools.iter().enumerate() {
        let entry = format!("pools[{i}]");
        check_name(f, format!("{entry}.name"), &pool.name);
        f.first_use(&mut names, pool.name.as_str(), entry.clone(), "name", || {
            format!("pool name {:?}", pool.name)
        });
        check_backends(f, i);
        check_health(f, i);
    }
}

fn check_backends(f: &mut Findings<'_>, pool_index: usize) {
    let c = f.config;
    let Some(pool) = c.pools.get(pool_index) else {
        return;
    };
    let list = format!("pools[{pool_index}].backends");
    if pool.backends.is_empty() {
        f.add(list.clone(), "a pool needs at least one backend".into());
        return;
    }
    if pool.backends.len() > BACKENDS_PER_POOL_MAX {
        f.add(
            list.clone(),
            format!(
                "{} backends is above the limit of {BACKENDS_PER_POOL_MAX} per pool",
                pool.backends.len()
            ),
        );
    }
    let mut addresses: BTreeMap<SocketAddr, String> = BTreeMap::new();
    let mut names: BTreeMap<&str, (String, SocketAddr)> = BTreeMap::new();
    for (j, b) in pool.backends.iter().enumerate() {
        let entry = format!("{list}[{j}]");
        check_backend_address(f, &entry, b.address);
        if b.weight > WEIGHT_MAX {
            f.add(
                format!("{entry}.weight"),
                format!("weight {} is above the maximum {WEIGHT_MAX}", b.weight),
            );
        }
        check_name(f, format!("{entry}.name"), &b.name);
        f.first_use(&mut addresses, b.address, entry.clone(), "address", || {
            format!("address {}", b.address)
        });
        match names.get(b.name.as_str()) {
            // Two backends with one address and a defaulted name repeat each other's
            // name too; the address finding already covers that pair.
            Some((_, first_address)) if *first_address == b.address => {}
            Some((first, _)) => {
                let earlier = f.config.declared(first, &format!("{first}.name"));
                f.add(
                    format!("{entry}.name"),
                    format!("backend name {:?} is already used by {earlier}", b.name),
                );
            }
            None => {
                names.insert(b.name.as_str(), (entry, b.address));
            }
        }
    }
    if pool.backends.iter().all(|b| b.weight == 0) {
        f.add(
            list,
            "every backend has weight 0, so the pool can take no traffic; weight 0 marks one backend as drained, \
             at least one needs a weight above 0"
                .into(),
        );
    }
}

fn check_backend_address(f: &mut Findings<'_>, entry: &str, address: SocketAddr) {
    if address.port() == 0 {
        f.add(
            format!("{entry}.address"),
            format!("port 0 in {address} is not a valid backend port"),
        );
    }
    if address.ip().is_unspecified() {
        f.add(
            format!("{entry}.address"),
            format!("{address} is the unspecified address; a backend needs the IP it listens on"),
        );
    }
}

fn check_health(f: &mut Findings<'_>, pool_index: usize) {
    let c = f.config;
    let Some(pool) = c.pools.get(pool_index) else {
        return;
    };
    let entry = format!("pools[{pool_index}]");
    if let Some(check) = &pool.health.check {
        check_active(f, &format!("{entry}.health_check"), check, None);
    }
    check_passive(f, &entry, &pool.health.passive);
    check_duration_max(f, format!("{entry}.slow_start"), pool.health.slow_start);
    // Slow start works through weights, and round robin ignores weights by contract
    // (exact rotation). `weighted` with equal weights gives the same rotation and ramps.
    if !pool.health.slow_start.is_zero() && pool.algorithm == Algorithm::RoundRobin {
        f.add(
            format!("{entry}.slow_start"),
            "slow start ramps weights, which round-robin ignores; use algorithm \"weighted\" (the same rotation when weights are equal)".into(),
        );
    }
    for (j, backend) in pool.backends.iter().enumerate() {
        let at = format!("{entry}.backends[{j}].health_check");
        match (&pool.health.check, &backend.check) {
            (None, None) => {}
            (None, Some(_)) => f.add(
                at,
                "backend overrides a health check the pool does not define; add a health_check to the pool".into(),
            ),
            // Only code can build these two: the file and the flags resolve every
            // backend's check from its pool's.
            (Some(_), None) => f.add(
                at,
                "the backend has no health check but its pool has one; a backend's check is the pool's with \
                 overrides applied (PoolConfig::set_health_check sets both)"
                    .into(),
            ),
            (Some(base), Some(check)) if !same_fixed_fields(base, check) => f.add(
                at,
                format!(
                    "the backend's health check differs from the pool's in kind, method, expect or body_bytes_max, \
                     which a backend cannot override (the pool's check is kind {:?})",
                    base.kind.name()
                ),
            ),
            (Some(base), Some(check)) => check_active(f, &at, check, Some(base)),
        }
    }
}

/// Whether `check` differs from `base` only in what a backend may override.
fn same_fixed_fields(base: &CheckConfig, check: &CheckConfig) -> bool {
    let mut check = check.clone();
    check.interval = base.interval;
    check.timeout = base.timeout;
    check.rise = base.rise;
    check.fall = base.fall;
    check.jitter_percent = base.jitter_percent;
    if let (
        CheckKind::Http {
            path: base_path,
            host: base_host,
            ..
        },
        CheckKind::Http { path, host, .. },
    ) = (&base.kind, &mut check.kind)
    {
        path.clone_from(base_path);
        host.clone_from(base_host);
    }
    check == *base
}

/// The rules for one active check at `at`. With `base` (the pool's check, for a
/// backend's), a field equal to the base's was checked there and is skipped.
fn check_active(f: &mut Findings<'_>, at: &str, check: &CheckConfig, base: Option<&CheckConfig>) {
    let differs = |same: bool| base.is_none() || !same;
    let interval_differs = differs(base.is_some_and(|b| b.interval == check.interval));
    let timeout_differs = differs(base.is_some_and(|b| b.timeout == check.timeout));
    let interval_ok = if interval_differs {
        check_duration(
            f,
            format!("{at}.interval"),
            check.interval,
            "probes would run back to back",
        )
    } else {
        !check.interval.is_zero() && check.interval <= TIMEOUT_MAX
    };
    let timeout_ok = if timeout_differs {
        check_duration(f, format!("{at}.timeout"), check.timeout, ZERO_TIMEOUT)
    } else {
        !check.timeout.is_zero() && check.timeout <= TIMEOUT_MAX
    };
    if interval_ok && timeout_ok && check.timeout > check.interval && (interval_differs || timeout_differs) {
        // Reported at whichever this entry wrote: the timeout if it is its own.
        let field = if timeout_differs { "timeout" } else { "interval" };
        f.add(
            format!("{at}.{field}"),
            format!(
                "timeout {} is longer than the interval {}; a probe must finish before the next one starts",
                format_duration(check.timeout),
                format_duration(check.interval)
            ),
        );
    }
    for (field, value, base_value) in [
        ("rise", check.rise, base.map(|b| b.rise)),
        ("fall", check.fall, base.map(|b| b.fall)),
    ] {
        if base_value == Some(value) {
            continue;
        }
        if value == 0 {
            f.add(
                format!("{at}.{field}"),
                format!(
                    "must be 1..={THRESHOLD_MAX}, not 0: a backend changes state only after at least one probe result"
                ),
            );
        } else if value > THRESHOLD_MAX {
            f.add(
                format!("{at}.{field}"),
                format!("{value} is above the limit of {THRESHOLD_MAX}"),
            );
        }
    }
    if differs(base.is_some_and(|b| b.jitter_percent == check.jitter_percent))
        && check.jitter_percent > JITTER_PERCENT_MAX
    {
        f.add(
            format!("{at}.jitter_percent"),
            format!(
                "{}% is above the limit of {JITTER_PERCENT_MAX}% of the interval",
                check.jitter_percent
            ),
        );
    }
    if let CheckKind::Http {
        method,
        path,
        host,
        expect,
        body_bytes_max,
    } = &check.kind
    {
        let (base_path, base_host) = match base.map(|b| &b.kind) {
            Some(CheckKind::Http { path, host, .. }) => (Some(path), Some(host)),
            _ => (None, None),
        };
        if base_path != Some(path) {
            check_http_path(f, format!("{at}.path"), path);
        }
        if let (Some(host), true) = (host, base_host != Some(host)) {
            check_http_host(f, format!("{at}.host"), host);
        }
        // The rest cannot differ from the base's (see `same_fixed_fields`).
        if base.is_none() {
            check_http_method(f, format!("{at}.method"), method);
            check_expect(f, format!("{at}.expect"), expect);
            if *body_bytes_max > HEALTH_BODY_BYTES_MAX {
                f.add(
                    format!("{at}.body_bytes_max"),
                    format!(
                        "{} is above the limit of {}",
                        format_size(*body_bytes_max),
                        format_size(HEALTH_BODY_BYTES_MAX)
                    ),
                );
            }
        }
    }
}

fn check_http_method(f: &mut Findings<'_>, path: String, method: &str) {
    if method.is_empty() {
        f.add(path, "must not be empty; write an HTTP method such as \"GET\"".into());
    } else if method.len() > HTTP_METHOD_BYTES_MAX {
        f.add(
            path,
            format!("is {} bytes long; the limit is {HTTP_METHOD_BYTES_MAX}", method.len()),
        );
    } else if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        f.add(
            path,
            format!("{method:?} is not an HTTP method: use upper-case letters A-Z only, such as \"GET\" or \"HEAD\""),
        );
    }
}

/// What is wrong with a character that cannot go into a request line or header as is.
fn describe_unsafe(c: char) -> Option<&'static str> {
    match c {
        ' ' => Some("a space"),
        c if c.is_ascii_control() => Some("a control character"),
        c if !c.is_ascii() => Some("a non-ASCII character"),
        _ => None,
    }
}

fn check_http_path(f: &mut Findings<'_>, at: String, path: &str) {
    if !path.starts_with('/') {
        f.add(at, format!("{path:?} must start with '/', as in \"/health\""));
    } else if path.len() > HTTP_PATH_BYTES_MAX {
        f.add(
            at,
            format!("is {} bytes long; the limit is {HTTP_PATH_BYTES_MAX}", path.len()),
        );
    } else if let Some(what) = path.chars().find_map(describe_unsafe) {
        f.add(at, format!("{path:?} contains {what}; percent-encode it"));
    } else if path.contains('#') {
        f.add(
            at,
            format!("{path:?} contains '#': a fragment is never sent to a server; percent-encode it as %23"),
        );
    }
}

fn check_http_host(f: &mut Findings<'_>, at: String, host: &str) {
    if host.is_empty() {
        f.add(
            at,
            "must not be empty (leave host out to send the backend's address)".into(),
        );
    } else if host.len() > HTTP_HOST_BYTES_MAX {
        f.add(
            at,
            format!("is {} bytes long; the limit is {HTTP_HOST_BYTES_MAX}", host.len()),
        );
    } else if let Some(what) = host.chars().find_map(describe_unsafe) {
        f.add(at, format!("{host:?} contains {what}; a Host header cannot"));
    }
}

fn check_expect(f: &mut Findings<'_>, at: String, expect: &[(u16, u16)]) {
    if expect.is_empty() {
        f.add(at, "must name at least one status, such as \"200-399\"".into());
        return;
    }
    if expect.len() > EXPECT_RANGES_MAX {
        f.add(
            at,
            format!("{} ranges is above the limit of {EXPECT_RANGES_MAX}", expect.len()),
        );
        return;
    }
    for &(lo, hi) in expect {
        let range = format_range((lo, hi));
        let codes = if lo == hi { vec![lo] } else { vec![lo, hi] };
        for code in codes {
            if !(HTTP_STATUS_MIN..=HTTP_STATUS_MAX).contains(&code) {
                f.add(
                    at.clone(),
                    format!("status {code} in {range} is outside {HTTP_STATUS_MIN}..={HTTP_STATUS_MAX}"),
                );
            }
        }
        if lo > hi {
            f.add(
                at.clone(),
                format!("range {range} is empty: it starts above its end (write {hi}-{lo})"),
            );
        }
    }
}

fn check_passive(f: &mut Findings<'_>, entry: &str, passive: &PassiveConfig) {
    let at = format!("{entry}.passive");
    if passive.consecutive_failures > CONSECUTIVE_FAILURES_MAX {
        f.add(
            format!("{at}.consecutive_failures"),
            format!(
                "{} is above the limit of {CONSECUTIVE_FAILURES_MAX} (0 turns passive detection off)",
                passive.consecutive_failures
            ),
        );
    }
    let ejection_ok = check_duration(
        f,
        format!("{at}.ejection"),
        passive.ejection,
        "an ejection of zero would not take the backend out",
    );
    let max_ok = check_duration_max(f, format!("{at}.max_ejection"), passive.max_ejection);
    if ejection_ok && max_ok && passive.max_ejection < passive.ejection {
        f.add(
            format!("{at}.max_ejection"),
            format!(
                "{} is shorter than ejection {}; ejections double from ejection up to max_ejection",
                format_duration(passive.max_ejection),
                format_duration(passive.ejection)
            ),
        );
    }
    if passive.max_ejected_percent > 100 {
        f.add(
            format!("{at}.max_ejected_percent"),
            format!(
                "{}% is above 100% (the share of the pool's backends ejected at once)",
                passive.max_ejected_percent
            ),
        );
    }
}
