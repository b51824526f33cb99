//! The command line's part of the configuration: quick mode and overrides.
//!
//! Quick mode (`--listen ADDR --backend ADDR[,weight=N][,name=NAME] …`) builds a whole
//! [`Config`] without a file: one listener named `cli` over one pool named `cli`.
//! Overrides (`--workers`, `--connect-timeout`, …) adjust a config from either source.
//! Both end in the same validation as a file, and problems name the flag that set the
//! value (`<command line>: --backend[1]: …`) instead of a line and column.
//!
//! The health flags (`--health-check`, `--health-interval`, `--rise`, `--fall`,
//! `--slow-start`) are overrides too, applied to every pool and, being the last word,
//! to every backend's check as well (replacing a backend's own value for that field).
//! `--health-check` turns checks on where the file has none, or changes their kind
//! (and path); the timing flags only tune checks that exist, so without any check they
//! are an error rather than silently ignored.

use super::health::timeout_default_for;
use super::{
    parse_addr, parse_duration, parse_size, BackendConfig, CheckConfig, CheckKind, Config, ConfigError, ListenerConfig,
    Mode, PoolConfig, PoolHealth, Problem, Provenance, COMMAND_LINE, HTTP_PATH_DEFAULT,
};
use crate::balancer::{Algorithm, WEIGHT_MAX};
use std::time::Duration;

/// The flags of quick mode, as given: parsing happens in [`Config::from_flags`], so
/// that every bad flag is reported at once and in the config's own words.
///
/// Example: `gobalancer --listen 127.0.0.1:8080 --mode tcp --algorithm weighted
/// --backend 127.0.0.1:9001 --backend 127.0.0.1:9002,weight=3`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuickFlags {
    /// `--listen`: the address to accept clients on. Required.
    pub listen: String,
    /// `--mode`: `tcp` or `http`; empty means `tcp`.
    pub mode: String,
    /// `--algorithm`: a balancing algorithm name; empty means `round-robin`.
    pub algorithm: String,
    /// `--backend`, once per backend: `ADDR[,weight=N][,name=NAME]`.
    pub backends: Vec<String>,
}

/// Values set on the command line on top of a file or of quick mode; `None` keeps the
/// configured value. Durations and sizes are strings in the config-file grammar.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--workers`.
    pub workers: Option<usize>,
    /// `--connect-timeout`, e.g. `"3s"`.
    pub connect_timeout: Option<String>,
    /// `--idle-timeout`.
    pub idle_timeout: Option<String>,
    /// `--drain-timeout`.
    pub drain_timeout: Option<String>,
    /// `--max-connections`.
    pub max_connections: Option<usize>,
    /// `--buffer-size`, e.g. `"16KiB"` or `"4096"`.
    pub buffer_size: Option<String>,
    /// `--health-check`: `tcp`, `http` (path `/`) or `http:/PATH`. Turns active checks
    /// on for every pool, or changes the kind (and path) of the checks a file defines.
    pub health_check: Option<String>,
    /// `--health-interval`, e.g. `"2s"`.
    pub health_interval: Option<String>,
    /// `--rise`.
    pub rise: Option<u32>,
    /// `--fall`.
    pub fall: Option<u32>,
    /// `--slow-start`, e.g. `"30s"`; `"0s"` turns slow start off.
    pub slow_start: Option<String>,
}

/// What `--health-check` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum CheckFlag {
    Tcp,
    /// The path, checked by validation like a file's.
    Http(String),
}

/// Parses a `--health-check` value: `tcp`, `http` or `http:/PATH`.
fn parse_check_flag(text: &str) -> Result<CheckFlag, String> {
    match text {
        "tcp" => Ok(CheckFlag::Tcp),
        "http" => Ok(CheckFlag::Http(HTTP_PATH_DEFAULT.to_string())),
        _ => match text.strip_prefix("http:") {
            Some(path) => Ok(CheckFlag::Http(path.to_string())),
            None => Err(format!(
                "unknown health check {text:?}; expected tcp, http or http:/PATH (such as http:/health)"
            )),
        },
    }
}

/// A problem with a flag: it has no line or column, only the flag.
fn flag_problem(flag: &str, message: String) -> Problem {
    Problem {
        origin: COMMAND_LINE.to_string(),
        line: None,
        col: None,
        path: flag.to_string(),
        message,
    }
}

impl Config {
    /// Builds a configuration from quick-mode flags, validated like a file.
    pub fn from_flags(flags: &QuickFlags) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let bind = if flags.listen.is_empty() {
            problems.push(flag_problem(
                "--listen",
                "an address to listen on is required, e.g. 127.0.0.1:8080".into(),
            ));
            None
        } else {
            parse_addr(&flags.listen)
                .map_err(|e| problems.push(flag_problem("--listen", e)))
                .ok()
        };
        let mode = match flags.mode.as_str() {
            "" => Some(Mode::Tcp),
            text => text.parse().map_err(|e| problems.push(flag_problem("--mode", e))).ok(),
        };
        let algorithm = match flags.algorithm.as_str() {
            "" => Some(Algorithm::RoundRobin),
            text => text
                .parse::<Algorithm>()
                .map_err(|e| problems.push(flag_problem("--algorithm", e.to_string())))
                .ok(),
        };
        let mut backends = Vec::with_capacity(flags.backends.len());
        for (i, spec) in flags.backends.iter().enumerate() {
            match parse_backend_flag(spec) {
                Ok(backend) => backends.push(backend),
                Err(why) => problems.push(flag_problem(
                    &format!("--backend[{i}]"),
                    format!("--backend {spec}: {why}"),
                )),
            }
        }
        let (Some(bind), Some(mode), Some(algorithm), true) = (bind, mode, algorithm, problems.is_empty()) else {
            return Err(ConfigError::new(problems));
        };
        let config = Config {
            listeners: vec![ListenerConfig {
                name: "cli".into(),
                bind,
                mode,
                pool: "cli".into(),
            }],
            pools: vec![PoolConfig {
                name: "cli".into(),
                algorithm,
                backends,
                health: PoolHealth::default(),
            }],
            provenance: Provenance::quick_mode(flags.backends.len()),
            ..Config::default()
        };
        config.validate()?;
        Ok(config)
    }

    /// Applies command-line overrides, then validates the result. On any problem the
    /// configuration is left exactly as it was: a bad flag never half-applies.
    pub fn apply_overrides(&mut self, o: &Overrides) -> Result<(), ConfigError> {
        let mut next = self.clone();
        let mut problems = Vec::new();
        if let Some(workers) = o.workers {
            next.workers = workers;
            next.provenance.set_by_flag("workers", "--workers");
        }
        if let Some(max_connections) = o.max_connections {
            next.max_connections = max_connections;
            next.provenance.set_by_flag("max_connections", "--max-connections");
        }
        if let Some(text) = &o.buffer_size {
            match parse_size(text) {
                Ok(bytes) => next.buffer_size = bytes,
                Err(e) => problems.push(flag_problem("--buffer-size", e)),
            }
            next.provenance.set_by_flag("buffer_size", "--buffer-size");
        }
        let timeouts = [
            (
                &o.connect_timeout,
                "timeouts.connect",
                "--connect-timeout",
                &mut next.timeouts.connect,
            ),
            (
                &o.idle_timeout,
                "timeouts.idle",
                "--idle-timeout",
                &mut next.timeouts.idle,
            ),
            (
                &o.drain_timeout,
                "timeouts.drain",
                "--drain-timeout",
                &mut next.timeouts.drain,
            ),
        ];
        for (value, path, flag, field) in timeouts {
            if let Some(text) = value {
                match parse_duration(text) {
                    Ok(d) => *field = d,
                    Err(e) => problems.push(flag_problem(flag, e)),
                }
                next.provenance.set_by_flag(path, flag);
            }
        }
        if let Some(text) = &o.slow_start {
            match parse_duration(text) {
                Ok(window) => {
                    for (i, pool) in next.pools.iter_mut().enumerate() {
                        pool.health.slow_start = window;
                        next.provenance
                            .set_by_flag(&format!("pools[{i}].slow_start"), "--slow-start");
                    }
                }
                Err(e) => problems.push(flag_problem("--slow-start", e)),
            }
        }
        next.apply_check_overrides(o, &mut problems);
        if !problems.is_empty() {
            return Err(ConfigError::new(problems));
        }
        next.validate()?;
        *self = next;
        Ok(())
    }

    /// The active-check flags: `--health-check` first (it may create the checks the
    /// others tune), then `--health-interval`, `--rise` and `--fall`.
    fn apply_check_overrides(&mut self, o: &Overrides, problems: &mut Vec<Problem>) {
        let kind = o.health_check.as_deref().and_then(|text| {
            parse_check_flag(text)
                .map_err(|e| problems.push(flag_problem("--health-check", e)))
                .ok()
        });
        let interval = o.health_interval.as_deref().and_then(|text| {
            parse_duration(text)
                .map_err(|e| problems.push(flag_problem("--health-interval", e)))
                .ok()
        });
        let flags = CheckFlags {
            kind,
            interval,
            rise: o.rise,
            fall: o.fall,
        };
        let mut any_check = false;
        for i in 0..self.pools.len() {
            any_check |= self.apply_check_flags(i, &flags);
        }
        let tuning = [
            ("--health-interval", o.health_interval.is_some()),
            ("--rise", o.rise.is_some()),
            ("--fall", o.fall.is_some()),
        ];
        // A bad --health-check was reported already; the others depend on it.
        if !any_check && o.health_check.is_none() {
            for (flag, _) in tuning.iter().filter(|(_, given)| *given) {
                problems.push(flag_problem(
                    flag,
                    format!(
                        "{flag} tunes active health checks, and none is defined; add --health-check tcp (or \
                         http:/PATH), or a health_check to a pool in the file"
                    ),
                ));
            }
        }
    }

    /// Applies the check flags to pool `i` and its backends; returns whether the pool
    /// has a check afterwards.
    fn apply_check_flags(&mut self, i: usize, flags: &CheckFlags) -> bool {
        let entry = format!("pools[{i}]");
        let Some(pool) = self.pools.get(i) else {
            return false;
        };
        let old = pool.health.check.clone();
        let mut new = match (&old, &flags.kind) {
            (None, None) => return false,
            (Some(check), None) => check.clone(),
            (Some(check), Some(kind)) => {
                self.provenance
                    .set_by_flag(&format!("{entry}.health_check.kind"), "--health-check");
                self.provenance
                    .set_by_flag(&format!("{entry}.health_check.path"), "--health-check");
                CheckConfig {
                    kind: kind.apply_to(&check.kind),
                    ..check.clone()
                }
            }
            (None, Some(kind)) => {
                self.provenance
                    .set_by_flag(&format!("{entry}.health_check"), "--health-check");
                CheckConfig {
                    kind: kind.apply_to(&CheckKind::Tcp),
                    ..CheckConfig::default()
                }
            }
        };
        flags.apply_to(&mut new);
        let pool_timeout_written = self.provenance.written(&format!("{entry}.health_check.timeout"));
        if !pool_timeout_written {
            new.timeout = timeout_default_for(new.interval);
        }
        let backend_checks: Vec<Option<CheckConfig>> = (0..pool.backends.len())
            .map(|j| {
                let mut check = new.clone();
                if let (Some(base), Some(own)) = (&old, &pool.backends[j].check) {
                    keep_overrides(&mut check, base, own, flags);
                }
                let written = pool_timeout_written
                    || self
                        .provenance
                        .written(&format!("{entry}.backends[{j}].health_check.timeout"));
                if !written {
                    check.timeout = timeout_default_for(check.interval);
                }
                Some(check)
            })
            .collect();
        for (field, flag, given) in [
            ("interval", "--health-interval", flags.interval.is_some()),
            ("rise", "--rise", flags.rise.is_some()),
            ("fall", "--fall", flags.fall.is_some()),
        ] {
            if given {
                self.provenance
                    .set_by_flag(&format!("{entry}.health_check.{field}"), flag);
            }
        }
        let Some(pool) = self.pools.get_mut(i) else {
            return false;
        };
        for (backend, check) in pool.backends.iter_mut().zip(backend_checks) {
            backend.check = check;
        }
        pool.health.check = Some(new);
        true
    }
}

/// The parsed active-check flags.
struct CheckFlags {
    kind: Option<CheckFlag>,
    interval: Option<Duration>,
    rise: Option<u32>,
    fall: Option<u32>,
}

impl CheckFlags {
    fn apply_to(&self, check: &mut CheckConfig) {
        if let Some(interval) = self.interval {
            check.interval = interval;
        }
        if let Some(rise) = self.rise {
            check.rise = rise;
        }
        if let Some(fall) = self.fall {
            check.fall = fall;
        }
    }
}

impl CheckFlag {
    /// The kind `--health-check` makes of `current`: an HTTP check keeps its method,
    /// host, expected statuses and body bound and takes the new path; a change of kind
    /// starts from that kind's defaults.
    fn apply_to(&self, current: &CheckKind) -> CheckKind {
        match (self, current) {
            (CheckFlag::Tcp, _) => CheckKind::Tcp,
            (CheckFlag::Http(new_path), CheckKind::Http { .. }) => {
                let mut kind = current.clone();
                if let CheckKind::Http { path, .. } = &mut kind {
                    path.clone_from(new_path);
                }
                kind
            }
            (CheckFlag::Http(path), CheckKind::Tcp) => CheckKind::http(path.clone()),
        }
    }
}

/// Carries a backend's own values (where `own` differs from the pool's old check
/// `base`) into its new check, except for the fields a flag set.
fn keep_overrides(check: &mut CheckConfig, base: &CheckConfig, own: &CheckConfig, flags: &CheckFlags) {
    if flags.interval.is_none() && own.interval != base.interval {
        check.interval = own.interval;
    }
    if own.timeout != base.timeout {
        check.timeout = own.timeout;
    }
    if flags.rise.is_none() && own.rise != base.rise {
        check.rise = own.rise;
    }
    if flags.fall.is_none() && own.fall != base.fall {
        check.fall = own.fall;
    }
    if own.jitter_percent != base.jitter_percent {
        check.jitter_percent = own.jitter_percent;
    }
    if let (
        CheckKind::Http { path, host, .. },
        CheckKind::Http {
            path: base_path,
            host: base_host,
            ..
        },
        CheckKind::Http {
            path: own_path,
            host: own_host,
            ..
        },
    ) = (&mut check.kind, &base.kind, &own.kind)
    {
        if flags.kind.is_none() && own_path != base_path {
            path.clone_from(own_path);
        }
        if own_host != base_host {
            host.clone_from(own_host);
        }
    }
}

/// Parses one `--backend` value, `ADDR[,weight=N][,name=NAME]`. The error says what is
/// wrong with the value; the caller prefixes the flag and the value.
fn parse_backend_flag(spec: &str) -> Result<BackendConfig, String> {
    let mut parts = spec.split(',');
    let address_text = parts.next().unwrap_or_default();
    if address_text.is_empty() {
        return Err("missing the address; expected ADDR[,weight=N][,name=NAME]".into());
    }
    let address = parse_addr(address_text)?;
    let mut weight = None;
    let mut name = None;
    for option in parts {
        match option.split_once('=') {
            Some(("weight", value)) if weight.is_none() => {
                // Parsed as a plain decimal; the 0..=256 range is checked by validation
                // together with file weights.
                let digits_only = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
                let parsed = value.parse::<u32>().ok().filter(|_| digits_only);
                weight = Some(parsed.ok_or_else(|| format!("weight must be an integer 0..={WEIGHT_MAX}"))?);
            }
            Some(("name", value)) if name.is_none() => {
                if value.is_empty() {
                    return Err("name must not be empty".into());
                }
                name = Some(value.to_string());
            }
            Some((key @ ("weight" | "name"), _)) => return Err(format!("{key} is given more than once")),
            _ => {
                return Err(format!(
                    "unknown option {option:?}; expected weight=N or name=NAME after the address"
                ))
            }
        }
    }
    Ok(BackendConfig {
        name: name.unwrap_or_else(|| address.to_string()),
        address,
        weight: weight.unwrap_or(1),
        check: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AllDown, Timeouts};

    fn flags(backends: &[&str]) -> QuickFlags {
        QuickFlags {
            listen: "127.0.0.1:8080".into(),
            mode: "tcp".into(),
            algorithm: "weighted".into(),
            backends: backends.iter().map(|b| b.to_string()).collect(),
        }
    }

    fn messages(e: &ConfigError) -> Vec<String> {
        e.problems().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn quick_mode_builds_one_listener_over_one_pool() {
        let config = Config::from_flags(&flags(&["127.0.0.1:9001", "127.0.0.1:9002,weight=3,name=b2"]))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.listeners.len(), 1);
        let listener = &config.listeners[0];
        assert_eq!((listener.name.as_str(), listener.pool.as_str()), ("cli", "cli"));
        assert_eq!(
            listener.bind,
            "127.0.0.1:8080".parse().unwrap_or_else(|e| panic!("{e}"))
        );
        assert_eq!(listener.mode, Mode::Tcp);
        let pool = config.pool("cli").unwrap_or_else(|| panic!("no cli pool"));
        assert_eq!(pool.algorithm, Algorithm::Weighted);
        let backends: Vec<(String, String, u32)> = pool
            .backends
            .iter()
            .map(|b| (b.address.to_string(), b.name.clone(), b.weight))
            .collect();
        assert_eq!(
            backends,
            [
                ("127.0.0.1:9001".into(), "127.0.0.1:9001".into(), 1),
                ("127.0.0.1:9002".into(), "b2".into(), 3)
            ]
        );
        assert_eq!(config.timeouts, Timeouts::default());
        assert_eq!(config.location("listeners[0].bind"), "<command line>");
    }

    #[test]
    fn empty_mode_and_algorithm_take_the_defaults() {
        let quick = QuickFlags {
            mode: String::new(),
            algorithm: String::new(),
            ..flags(&["127.0.0.1:9001"])
        };
        let config = Config::from_flags(&quick).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.listeners[0].mode, Mode::Tcp);
        assert_eq!(config.pools[0].algorithm, Algorithm::RoundRobin);
    }

    #[test]
    fn every_bad_flag_is_reported_with_the_flag() {
        let quick = QuickFlags {
            listen: "localhost:80".into(),
            mode: "udp".into(),
            algorithm: "random".into(),
            backends: vec![
                "127.0.0.1:9001".into(),
                "127.0.0.1:9002,weight=x".into(),
                "127.0.0.1:9003,weight=-1".into(),
                "127.0.0.1:9004,color=red".into(),
                "127.0.0.1:9005,weight=1,weight=2".into(),
                "127.0.0.1:9006,name=".into(),
                ",weight=1".into(),
                "127.0.0.1".into(),
            ],
        };
        let e = Config::from_flags(&quick).err().unwrap_or_else(|| panic!("accepted"));
        assert_eq!(
            messages(&e),
            [
                "<command line>: --listen: invalid address \"localhost:80\": expected IP:PORT such as \"127.0.0.1:8080\" or \"[::1]:8080\" (host names are not resolved)",
                "<command line>: --mode: unknown mode \"udp\"; expected \"tcp\" or \"http\"",
                "<command line>: --algorithm: unknown balancing algorithm \"random\"; valid names: round-robin, weighted, least-connections, power-of-two, consistent-hash",
                "<command line>: --backend[1]: --backend 127.0.0.1:9002,weight=x: weight must be an integer 0..=256",
                "<command line>: --backend[2]: --backend 127.0.0.1:9003,weight=-1: weight must be an integer 0..=256",
                "<command line>: --backend[3]: --backend 127.0.0.1:9004,color=red: unknown option \"color=red\"; expected weight=N or name=NAME after the address",
                "<command line>: --backend[4]: --backend 127.0.0.1:9005,weight=1,weight=2: weight is given more than once",
                "<command line>: --backend[5]: --backend 127.0.0.1:9006,name=: name must not be empty",
                "<command line>: --backend[6]: --backend ,weight=1: missing the address; expected ADDR[,weight=N][,name=NAME]",
                "<command line>: --backend[7]: --backend 127.0.0.1: invalid address \"127.0.0.1\": expected IP:PORT such as \"127.0.0.1:8080\" or \"[::1]:8080\" (host names are not resolved)",
            ]
        );
    }

    #[test]
    fn quick_mode_is_validated_like_a_file() {
        let e = Config::from_flags(&flags(&["127.0.0.1:9001,weight=300", "127.0.0.1:9001", "127.0.0.1:0"]))
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert_eq!(
            messages(&e),
            [
                "<command line>: --backend[0]: weight 300 is above the maximum 256",
                "<command line>: --backend[1]: address 127.0.0.1:9001 is already used by --backend[0] on the command line",
                "<command line>: --backend[2]: port 0 in 127.0.0.1:0 is not a valid backend port",
            ]
        );
        let e = Config::from_flags(&flags(&[]))
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert_eq!(
            messages(&e),
            ["<command line>: --backend: a pool needs at least one backend"]
        );
        let e = Config::from_flags(&QuickFlags {
            listen: String::new(),
            ..flags(&["127.0.0.1:1"])
        })
        .err()
        .unwrap_or_else(|| panic!("accepted"));
        assert_eq!(
            messages(&e),
            ["<command line>: --listen: an address to listen on is required, e.g. 127.0.0.1:8080"]
        );
        let e = Config::from_flags(&QuickFlags {
            listen: "127.0.0.1:0".into(),
            ..flags(&["127.0.0.1:1"])
        })
        .err()
        .unwrap_or_else(|| panic!("accepted"));
        assert_eq!(
            messages(&e),
            ["<command line>: --listen: port 0 in 127.0.0.1:0 is not allowed: a listener needs a fixed port clients can reach"]
        );
    }

    #[test]
    fn http_mode_builds_an_l7_listener() {
        let quick = QuickFlags {
            mode: "http".into(),
            ..flags(&["127.0.0.1:9001"])
        };
        let config = Config::from_flags(&quick).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.listeners[0].mode, Mode::Http);
    }

    #[test]
    fn overrides_replace_values_and_revalidate() {
        let mut config = Config::from_flags(&flags(&["127.0.0.1:9001"])).unwrap_or_else(|e| panic!("{e}"));
        let o = Overrides {
            workers: Some(4),
            connect_timeout: Some("250ms".into()),
            idle_timeout: Some("2m".into()),
            drain_timeout: Some("1m30s".into()),
            max_connections: Some(7),
            buffer_size: Some("64KiB".into()),
            ..Overrides::default()
        };
        config.apply_overrides(&o).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.workers, 4);
        assert_eq!(config.max_connections, 7);
        assert_eq!(config.buffer_size, 64 * 1024);
        assert_eq!(
            config.timeouts,
            Timeouts {
                connect: Duration::from_millis(250),
                idle: Duration::from_secs(120),
                drain: Duration::from_secs(90),
                ..Timeouts::default()
            }
        );
        config
            .apply_overrides(&Overrides::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.workers, 4);
    }

    #[test]
    fn bad_overrides_name_the_flag_and_change_nothing() {
        let src = "(listeners: [(bind: \"127.0.0.1:80\", pool: \"p\")], pools: [(name: \"p\", backends: [(address: \"10.0.0.1:80\")])])";
        let mut config = Config::parse(src, "lb.ron").unwrap_or_else(|e| panic!("{e}"));
        let before = config.clone();
        let o = Overrides {
            workers: Some(5000),
            connect_timeout: Some("3".into()),
            idle_timeout: Some("0s".into()),
            drain_timeout: None,
            max_connections: Some(0),
            buffer_size: Some("16KB".into()),
            ..Overrides::default()
        };
        let e = config.apply_overrides(&o).err().unwrap_or_else(|| panic!("accepted"));
        assert_eq!(
            messages(&e),
            [
                "<command line>: --buffer-size: unknown unit \"KB\" in size \"16KB\"; use B, KiB, MiB or GiB",
                "<command line>: --connect-timeout: duration \"3\" needs a unit (h, m, s, ms or us), e.g. \"3s\"",
            ]
        );
        let o = Overrides {
            connect_timeout: None,
            buffer_size: None,
            ..o
        };
        let e = config.apply_overrides(&o).err().unwrap_or_else(|| panic!("accepted"));
        assert_eq!(
            messages(&e),
            [
                "<command line>: --workers: 5000 workers is above the limit of 1024 (0 means one per core)",
                "<command line>: --max-connections: must be at least 1 (0 would refuse every client)",
                "<command line>: --idle-timeout: must be greater than zero (a zero timeout would expire at once)",
            ]
        );
        assert_eq!(config, before);
        assert_eq!(config.location("workers"), "lb.ron:1:1");
        // Once applied, an overridden value is located on the command line.
        config
            .apply_overrides(&Overrides {
                workers: Some(2),
                ..Overrides::default()
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.location("workers"), "<command line>");
        assert_eq!(config.location("listeners[0].bind"), "lb.ron:1:21");
    }

    fn quick(backends: &[&str], o: &Overrides) -> Result<Config, ConfigError> {
        let mut config = Config::from_flags(&flags(backends))?;
        config.apply_overrides(o)?;
        Ok(config)
    }

    #[test]
    fn health_flags_turn_checks_on_in_quick_mode() {
        let o = Overrides {
            health_check: Some("http:/health".into()),
            health_interval: Some("500ms".into()),
            rise: Some(1),
            fall: Some(2),
            slow_start: Some("30s".into()),
            ..Overrides::default()
        };
        let config = quick(&["127.0.0.1:9001", "127.0.0.1:9002"], &o).unwrap_or_else(|e| panic!("{e}"));
        let pool = &config.pools[0];
        // The default timeout (1s) would not fit the interval, so it follows it.
        let check = CheckConfig {
            kind: CheckKind::http("/health"),
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(500),
            rise: 1,
            fall: 2,
            ..CheckConfig::default()
        };
        assert_eq!(pool.health.check.as_ref(), Some(&check));
        assert!(pool.backends.iter().all(|b| b.check.as_ref() == Some(&check)));
        assert_eq!(pool.health.slow_start, Duration::from_secs(30));
        assert_eq!(pool.health.when_all_down, AllDown::Refuse);
        assert_eq!(config.location("pools[0].health_check.rise"), "<command line>");

        for (flag, kind) in [("tcp", CheckKind::Tcp), ("http", CheckKind::http("/"))] {
            let o = Overrides {
                health_check: Some(flag.into()),
                ..Overrides::default()
            };
            let config = quick(&["127.0.0.1:9001"], &o).unwrap_or_else(|e| panic!("{e}"));
            let expected = CheckConfig {
                kind,
                ..CheckConfig::default()
            };
            assert_eq!(config.pools[0].health.check.as_ref(), Some(&expected));
        }
    }

    #[test]
    fn bad_health_flags_name_the_flag() {
        let o = Overrides {
            health_check: Some("udp".into()),
            health_interval: Some("3".into()),
            slow_start: Some("soon".into()),
            ..Overrides::default()
        };
        let e = quick(&["127.0.0.1:9001"], &o)
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert_eq!(
            messages(&e),
            [
                "<command line>: --slow-start: duration \"soon\" has a unit without a number",
                "<command line>: --health-check: unknown health check \"udp\"; expected tcp, http or http:/PATH (such as http:/health)",
                "<command line>: --health-interval: duration \"3\" needs a unit (h, m, s, ms or us), e.g. \"3s\"",
            ]
        );
        let o = Overrides {
            health_check: Some("http:health".into()),
            health_interval: Some("0s".into()),
            rise: Some(0),
            fall: Some(101),
            slow_start: Some("25h".into()),
            ..Overrides::default()
        };
        let e = quick(&["127.0.0.1:9001"], &o)
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert_eq!(
            messages(&e),
            [
                "<command line>: --health-interval: must be greater than zero (probes would run back to back)",
                "<command line>: --rise: must be 1..=100, not 0: a backend changes state only after at least one probe result",
                "<command line>: --fall: 101 is above the limit of 100",
                "<command line>: --health-check: \"health\" must start with '/', as in \"/health\"",
                "<command line>: --slow-start: 25h is above the limit of 24h",
            ]
        );
    }

    #[test]
    fn check_tuning_flags_need_a_check() {
        let o = Overrides {
            health_interval: Some("5s".into()),
            rise: Some(3),
            fall: Some(3),
            ..Overrides::default()
        };
        let e = quick(&["127.0.0.1:9001"], &o)
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        let why = "tunes active health checks, and none is defined; add --health-check tcp (or http:/PATH), or a health_check to a pool in the file";
        assert_eq!(
            messages(&e),
            [
                format!("<command line>: --health-interval: --health-interval {why}"),
                format!("<command line>: --rise: --rise {why}"),
                format!("<command line>: --fall: --fall {why}"),
            ]
        );
        // --slow-start needs no check.
        let o = Overrides {
            slow_start: Some("10s".into()),
            ..Overrides::default()
        };
        let config = quick(&["127.0.0.1:9001"], &o).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.pools[0].health.check, None);
        assert_eq!(config.pools[0].health.slow_start, Duration::from_secs(10));
    }

    /// Two pools: `web` with an HTTP check and backend overrides, `db` without checks.
    const TWO_POOLS: &str = r#"(
    listeners: [(bind: "127.0.0.1:80", pool: "web"), (bind: "127.0.0.1:81", pool: "db")],
    pools: [
        (
            name: "web",
            health_check: (kind: "http", path: "/health", host: "web.local", timeout: "400ms", rise: 2),
            backends: [
                (address: "10.0.0.1:80"),
                (address: "10.0.0.2:80", health_check: (rise: 5, path: "/alt", host: "b.local")),
                (address: "10.0.0.3:80", health_check: (interval: "5s", jitter_percent: 0)),
            ],
        ),
        (name: "db", backends: [(address: "10.0.1.1:5432")]),
    ],
)"#;

    fn checks(config: &Config, pool: usize) -> Vec<CheckConfig> {
        config.pools[pool]
            .backends
            .iter()
            .filter_map(|b| b.check.clone())
            .collect()
    }

    fn http_parts(check: &CheckConfig) -> (String, Option<String>) {
        match &check.kind {
            CheckKind::Http { path, host, .. } => (path.clone(), host.clone()),
            CheckKind::Tcp => ("<tcp>".into(), None),
        }
    }

    #[test]
    fn health_flags_tune_the_file_checks_and_win_over_backend_values() {
        let mut config = Config::parse(TWO_POOLS, "lb.ron").unwrap_or_else(|e| panic!("{e}"));
        let o = Overrides {
            rise: Some(4),
            health_interval: Some("1s".into()),
            ..Overrides::default()
        };
        config.apply_overrides(&o).unwrap_or_else(|e| panic!("{e}"));
        // Only pools with a check are tuned; no check is created.
        assert_eq!(config.pools[1].health.check, None);
        assert!(checks(&config, 1).is_empty());
        let web = checks(&config, 0);
        // rise, interval, timeout, jitter, (path, host)
        type Summary = (u32, Duration, Duration, u8, (String, Option<String>));
        let summary: Vec<Summary> = web
            .iter()
            .map(|c| (c.rise, c.interval, c.timeout, c.jitter_percent, http_parts(c)))
            .collect();
        let parts = |path: &str, host: &str| (path.to_string(), Some(host.to_string()));
        assert_eq!(
            summary,
            [
                (
                    4,
                    Duration::from_secs(1),
                    Duration::from_millis(400),
                    10,
                    parts("/health", "web.local")
                ),
                // The flag replaces the backend's rise; its path and host stay.
                (
                    4,
                    Duration::from_secs(1),
                    Duration::from_millis(400),
                    10,
                    parts("/alt", "b.local")
                ),
                (
                    4,
                    Duration::from_secs(1),
                    Duration::from_millis(400),
                    0,
                    parts("/health", "web.local")
                ),
            ]
        );
        assert_eq!(config.location("pools[0].health_check.rise"), "<command line>");
        assert_eq!(config.location("pools[0].health_check.timeout"), "lb.ron:6:87");

        // A new path replaces every backend's; method, host and expect stay.
        let o = Overrides {
            health_check: Some("http:/ready".into()),
            ..Overrides::default()
        };
        config.apply_overrides(&o).unwrap_or_else(|e| panic!("{e}"));
        let paths: Vec<(String, Option<String>)> = checks(&config, 0).iter().map(http_parts).collect();
        assert_eq!(
            paths,
            [
                parts("/ready", "web.local"),
                parts("/ready", "b.local"),
                parts("/ready", "web.local")
            ]
        );
        // --health-check applies to every pool: `db` gets one now.
        assert_eq!(
            config.pools[1].health.check,
            Some(CheckConfig {
                kind: CheckKind::http("/ready"),
                ..CheckConfig::default()
            })
        );
        assert_eq!(checks(&config, 1).len(), 1);
        config.validate().unwrap_or_else(|e| panic!("{e}"));

        // To TCP: the HTTP fields go, the timings stay.
        let o = Overrides {
            health_check: Some("tcp".into()),
            ..Overrides::default()
        };
        config.apply_overrides(&o).unwrap_or_else(|e| panic!("{e}"));
        assert!(checks(&config, 0).iter().all(|c| c.kind == CheckKind::Tcp));
        assert_eq!(checks(&config, 0)[2].jitter_percent, 0);
    }

    #[test]
    fn a_written_timeout_is_kept_and_checked_against_a_flag_interval() {
        let mut config = Config::parse(TWO_POOLS, "lb.ron").unwrap_or_else(|e| panic!("{e}"));
        let before = config.clone();
        let o = Overrides {
            health_interval: Some("300ms".into()),
            ..Overrides::default()
        };
        let e = config.apply_overrides(&o).err().unwrap_or_else(|| panic!("accepted"));
        assert_eq!(
            messages(&e),
            ["lb.ron:6:87: pools[0].health_check.timeout: timeout 400ms is longer than the interval 300ms; a probe must finish before the next one starts"]
        );
        assert_eq!(config, before);
        // One failure per pool is reported once.
        let src = TWO_POOLS.replace("(name: \"db\", backends", "(name: \"db\", health_check: (), backends");
        let mut config = Config::parse(&src, "lb.ron").unwrap_or_else(|e| panic!("{e}"));
        let o = Overrides {
            rise: Some(0),
            ..Overrides::default()
        };
        let e = config.apply_overrides(&o).err().unwrap_or_else(|| panic!("accepted"));
        assert_eq!(
            messages(&e),
            ["<command line>: --rise: must be 1..=100, not 0: a backend changes state only after at least one probe result"]
        );
    }
}
