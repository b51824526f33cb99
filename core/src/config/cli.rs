//! The command line's part of the configuration: quick mode and overrides.
//!
//! Quick mode (`--listen ADDR --backend ADDR[,weight=N][,name=NAME] …`) builds a whole
//! [`Config`] without a file: one listener named `cli` over one pool named `cli`.
//! Overrides (`--workers`, `--connect-timeout`, …) adjust a config from either source.
//! Both end in the same validation as a file, and problems name the flag that set the
//! value (`<command line>: --backend[1]: …`) instead of a line and column.

use super::{
    parse_addr, parse_duration, parse_size, BackendConfig, Config, ConfigError, ListenerConfig, Mode, PoolConfig,
    Problem, Provenance, COMMAND_LINE,
};
use crate::balancer::{Algorithm, WEIGHT_MAX};

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
        if !problems.is_empty() {
            return Err(ConfigError::new(problems));
        }
        next.validate()?;
        *self = next;
        Ok(())
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Timeouts;
    use std::time::Duration;

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
    fn http_mode_is_refused_for_now() {
        let quick = QuickFlags {
            mode: "http".into(),
            ..flags(&["127.0.0.1:9001"])
        };
        let e = Config::from_flags(&quick).err().unwrap_or_else(|| panic!("accepted"));
        assert_eq!(
            messages(&e),
            ["<command line>: --mode: mode \"http\" (L7) is not available in this build yet; it lands with the HTTP proxy. Use mode: \"tcp\""]
        );
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
                drain: Duration::from_secs(90)
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
}
