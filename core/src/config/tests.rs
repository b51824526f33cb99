//! Tests of the whole pipeline: RON text in, a `Config` or located problems out.
//!
//! Each rule test states the text the reported position points at, rather than a bare
//! column number, so that a wrong column shows which token it landed on.

use super::*;
use crate::balancer::WEIGHT_MAX;
use proptest::prelude::*;
use std::net::SocketAddr;

const EXAMPLE: &str = include_str!("../../../config/example.ron");

/// One listener over one pool of two backends; rule tests edit one line of it.
const VALID: &str = r#"(
    listeners: [
        (name: "front", bind: "127.0.0.1:8080", pool: "web"),
    ],
    pools: [
        (
            name: "web",
            backends: [
                (address: "127.0.0.1:9001"),
                (address: "127.0.0.1:9002", name: "b2", weight: 3),
            ],
        ),
    ],
)"#;

/// `VALID` with `from` replaced by `to` (which must occur).
fn edit(from: &str, to: &str) -> String {
    assert!(VALID.contains(from), "{from:?} is not in VALID");
    VALID.replacen(from, to, 1)
}

/// The rest of the line at a problem's position.
fn text_at(src: &str, problem: &Problem) -> String {
    let (Some(line), Some(col)) = (problem.line, problem.col) else {
        return "<no position>".to_string();
    };
    src.lines()
        .nth(line - 1)
        .map(|l| l.chars().skip(col - 1).collect())
        .unwrap_or_default()
}

/// Parses `src`, which must fail, and checks every problem: the text its position
/// points at (a prefix), its path and its message.
#[track_caller]
fn assert_problems(src: &str, expected: &[(&str, &str, &str)]) {
    let error = Config::parse(src, "lb.ron").expect_err("the config was accepted");
    let found: Vec<(String, String, String)> = error
        .problems()
        .iter()
        .map(|p| (text_at(src, p), p.path.clone(), p.message.clone()))
        .collect();
    let matches = found.len() == expected.len()
        && found
            .iter()
            .zip(expected)
            .all(|(f, e)| f.0.starts_with(e.0) && f.1 == e.1 && f.2 == e.2);
    assert!(matches, "expected {expected:#?}\nfound {found:#?}\nerror:\n{error}");
    for p in error.problems() {
        assert_eq!(p.origin, "lb.ron");
    }
}

#[track_caller]
fn parse(src: &str) -> Config {
    Config::parse(src, "lb.ron").unwrap_or_else(|e| panic!("rejected:\n{e}"))
}

#[test]
fn the_example_parses_with_the_documented_values() {
    let config = Config::parse(EXAMPLE, "config/example.ron").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.workers, 0);
    assert_eq!(config.max_connections, 10_000);
    assert_eq!(config.buffer_size, 16 * 1024);
    assert_eq!(config.timeouts, Timeouts::default());
    assert_eq!(
        config.listeners,
        [ListenerConfig {
            name: "front".into(),
            bind: "127.0.0.1:8080".parse().expect("addr"),
            mode: Mode::Tcp,
            pool: "web".into()
        }]
    );
    let pool = config.pool("web").expect("pool web");
    assert_eq!(pool.algorithm, Algorithm::RoundRobin);
    assert_eq!(
        pool.backends,
        [
            BackendConfig {
                address: "127.0.0.1:9001".parse().expect("addr"),
                name: "127.0.0.1:9001".into(),
                weight: 1
            },
            BackendConfig {
                address: "127.0.0.1:9002".parse().expect("addr"),
                name: "b2".into(),
                weight: 3
            },
        ]
    );
    assert!(config.pool("api").is_none());
    assert_eq!(config.location("listeners[0].bind"), "config/example.ron:26:19");
    assert!(EXAMPLE
        .lines()
        .nth(25)
        .expect("line 26")
        .contains("bind: \"127.0.0.1:8080\""));
}

#[test]
fn the_embedded_default_parses() {
    parse(include_str!("../../../config/default.ron"));
}

#[test]
fn defaults_fill_what_the_file_leaves_out() {
    let config = parse(VALID);
    assert_eq!(
        config,
        Config {
            listeners: config.listeners.clone(),
            pools: config.pools.clone(),
            ..Config::default()
        }
    );
    assert_eq!(config.pools[0].backends[0].name, "127.0.0.1:9001");
    let config = parse(&edit("(name: \"front\", bind", "(bind"));
    assert_eq!(config.listeners[0].name, "listener-0");
    let config = parse(&edit("(address: \"127.0.0.1:9001\")", "(address: \"[::0001]:9001\")"));
    assert_eq!(config.pools[0].backends[0].name, "[::1]:9001");
}

#[test]
fn every_value_form_is_read() {
    let config = parse(
        r#"Config(
            workers: 8, max_connections: 5, buffer_size: 4096,
            timeouts: Timeouts(idle: "1m30s"),
            listeners: [Listener(name: "a", bind: "[::1]:80", mode: "tcp", pool: "p")],
            pools: [Pool(name: "p", algorithm: "consistent-hash", backends: [Backend(address: "10.0.0.1:80", weight: 0), (address: "10.0.0.2:80", weight: 256)])],
        )"#,
    );
    assert_eq!(
        (config.workers, config.max_connections, config.buffer_size),
        (8, 5, 4096)
    );
    assert_eq!(
        config.timeouts,
        Timeouts {
            idle: Duration::from_secs(90),
            ..Timeouts::default()
        }
    );
    assert_eq!(config.pools[0].algorithm, Algorithm::ConsistentHash);
    let weights: Vec<u32> = config.pools[0].backends.iter().map(|b| b.weight).collect();
    assert_eq!(weights, [0, WEIGHT_MAX]);
}

#[test]
fn equality_ignores_where_the_values_came_from() {
    let reformatted = VALID.replace('\n', " ");
    assert_eq!(parse(VALID), Config::parse(&reformatted, "other.ron").expect("valid"));
}

// D1: invalid RON.

#[test]
fn syntax_errors_have_line_and_column() {
    assert_problems(
        &edit("name: \"b2\", weight: 3", "name: \"b2\" weight: 3"),
        &[("weight: 3", "pools[0].backends[1].weight", "Expected comma")],
    );
    // A missing closing paren: ron notices at the next token, where it wanted a field.
    assert_problems(
        &edit("(address: \"127.0.0.1:9001\"),", "(address: \"127.0.0.1:9001\","),
        &[(
            "(address: \"127.0.0.1:9002\"",
            "pools[0].backends[0]",
            "Expected identifier",
        )],
    );
    // Cut short: ron points at the list that lacks its first element.
    let error = Config::parse("(\n  listeners: [", "lb.ron").expect_err("accepted");
    assert_eq!(
        error.to_string(),
        "lb.ron:2:14: listeners: Expected opening `(` for struct `Listener`"
    );
    let error = Config::parse("(\n  workers: 1", "lb.ron").expect_err("accepted");
    assert_eq!(error.to_string(), "lb.ron:2:12: workers: Expected comma");
    let error = Config::parse("", "lb.ron").expect_err("accepted");
    assert_eq!(
        error.to_string(),
        "lb.ron:1:1: Expected opening `(` for struct `Config`"
    );
    assert_problems(
        &format!("{VALID} trailing"),
        &[("trailing", "", "Non-whitespace trailing characters")],
    );
}

#[test]
fn wrong_types_and_missing_fields_are_located() {
    assert_problems(
        &edit("weight: 3", "weight: \"3\""),
        &[(
            "\"3\"",
            "pools[0].backends[1].weight",
            "Expected a weight, an integer 0..=256 but found the string \"3\" instead",
        )],
    );
    assert_problems(
        &edit("weight: 3", "weight: -3"),
        &[(
            "-3",
            "pools[0].backends[1].weight",
            "weight must be an integer 0..=256, not -3",
        )],
    );
    assert_problems(
        &edit("weight: 3", "weight: 99999999999"),
        &[(
            "99999999999",
            "pools[0].backends[1].weight",
            "weight must be an integer 0..=256, not 99999999999",
        )],
    );
    assert_problems(
        &edit("(address: \"127.0.0.1:9001\")", "(name: \"b1\")"),
        &[(
            ")",
            "pools[0].backends[0]",
            "Unexpected missing field named `address` in `Backend`",
        )],
    );
    assert_problems(
        &edit("bind: \"127.0.0.1:8080\"", "bind: \"localhost:8080\""),
        &[(
            "\"localhost:8080\"",
            "listeners[0].bind",
            "invalid address \"localhost:8080\": expected IP:PORT such as \"127.0.0.1:8080\" or \"[::1]:8080\" (host names are not resolved)",
        )],
    );
    assert_problems(
        &edit("bind: \"127.0.0.1:8080\"", "bind: \"127.0.0.1:65536\""),
        &[(
            "\"127.0.0.1:65536\"",
            "listeners[0].bind",
            "invalid address \"127.0.0.1:65536\": port 65536 is out of range 1..=65535",
        )],
    );
    assert_problems(
        &edit("pool: \"web\"", "mode: \"udp\", pool: \"web\""),
        &[(
            "\"udp\"",
            "listeners[0].mode",
            "unknown mode \"udp\"; expected \"tcp\" or \"http\"",
        )],
    );
    assert_problems(
        &edit("name: \"web\",", "name: \"web\", algorithm: \"random\","),
        &[(
            "\"random\"",
            "pools[0].algorithm",
            "unknown balancing algorithm \"random\"; valid names: round-robin, weighted, least-connections, power-of-two, consistent-hash",
        )],
    );
    assert_problems(
        &edit("(\n    listeners", "(\n    timeouts: (idle: 60),\n    listeners"),
        &[(
            "60",
            "timeouts.idle",
            "a duration is a string with a unit, e.g. \"60s\" or \"60ms\", not the bare number 60",
        )],
    );
    assert_problems(
        &edit("(\n    listeners", "(\n    timeouts: (idle: \"1.5s\"),\n    listeners"),
        &[(
            "\"1.5s\"",
            "timeouts.idle",
            "fractional durations are not supported (\"1.5s\"); use a smaller unit, e.g. \"1500ms\"",
        )],
    );
    assert_problems(
        &edit("(\n    listeners", "(\n    buffer_size: \"16KB\",\n    listeners"),
        &[(
            "\"16KB\"",
            "buffer_size",
            "unknown unit \"KB\" in size \"16KB\"; use B, KiB, MiB or GiB",
        )],
    );
    assert_problems(
        &edit("(\n    listeners", "(\n    workers: 1.5,\n    listeners"),
        &[(
            "1.5",
            "workers",
            "Expected a non-negative integer but found the floating point number `1.5` instead",
        )],
    );
    assert_problems(
        &edit("(\n    listeners", "(\n    max_connections: -1,\n    listeners"),
        &[(
            "-1",
            "max_connections",
            "-1 is negative; expected a non-negative integer",
        )],
    );
    assert_problems(
        &edit("(\n    listeners", "(\n    buffer_size: -1,\n    listeners"),
        &[("-1", "buffer_size", "size -1 must not be negative")],
    );
    assert_problems(
        &edit("(\n    listeners", "(\n    workers: 1,\n    workers: 2,\n    listeners"),
        &[(
            "workers: 2",
            "workers",
            "Unexpected duplicate field named `workers` in `Config`",
        )],
    );
    assert_problems(
        &edit("(\n    listeners", "Cfg(\n    listeners"),
        &[("Cfg(", "", "Expected struct `Config` but found `Cfg`")],
    );
}

// D2: unknown key.

#[test]
fn unknown_fields_are_rejected_with_their_name() {
    assert_problems(
        &edit("(\n    listeners", "(\n    helth_check: (path: \"/\"),\n    listeners"),
        &[(
            "helth_check:",
            "helth_check",
            "Unexpected field named `helth_check` in `Config`, expected one of `workers`, `max_connections`, `buffer_size`, `timeouts`, `listeners`, or `pools` instead",
        )],
    );
    assert_problems(
        &edit("weight: 3", "wieght: 3"),
        &[(
            "wieght: 3",
            "pools[0].backends[1].wieght",
            "Unexpected field named `wieght` in `Backend`, expected one of `address`, `name`, or `weight` instead",
        )],
    );
}

// D3, D4, D5, D8 and the process limits: semantic rules, all reported at once.

#[test]
fn a_pool_needs_a_backend() {
    let src = VALID.replace(
        "[\n                (address: \"127.0.0.1:9001\"),\n                (address: \"127.0.0.1:9002\", name: \"b2\", weight: 3),\n            ]",
        "[]",
    );
    assert_problems(
        &src,
        &[("[]", "pools[0].backends", "a pool needs at least one backend")],
    );
}

#[test]
fn duplicate_backend_addresses_name_both_positions() {
    assert_problems(
        &edit("\"127.0.0.1:9002\", name", "\"127.0.0.1:9001\", name"),
        &[(
            "\"127.0.0.1:9001\", name",
            "pools[0].backends[1].address",
            "address 127.0.0.1:9001 is already used by pools[0].backends[0], declared at lb.ron:9:27",
        )],
    );
    // Written differently, same socket address.
    assert_problems(
        &edit(
            "\"127.0.0.1:9002\", name",
            "\"127.0.0.1:9001\"), (address: \"127.0.0.1:9001\", name",
        ),
        &[
            (
                "\"127.0.0.1:9001\"), (",
                "pools[0].backends[1].address",
                "address 127.0.0.1:9001 is already used by pools[0].backends[0], declared at lb.ron:9:27",
            ),
            (
                "\"127.0.0.1:9001\", name",
                "pools[0].backends[2].address",
                "address 127.0.0.1:9001 is already used by pools[0].backends[0], declared at lb.ron:9:27",
            ),
        ],
    );
}

#[test]
fn duplicate_backend_names_name_both_positions() {
    assert_problems(
        &edit(
            "(address: \"127.0.0.1:9001\")",
            "(address: \"127.0.0.1:9001\", name: \"b2\")",
        ),
        &[(
            "\"b2\", weight",
            "pools[0].backends[1].name",
            "backend name \"b2\" is already used by pools[0].backends[0], declared at lb.ron:9:51",
        )],
    );
    // A defaulted name collides too, and is located at its backend.
    assert_problems(
        &edit("name: \"b2\"", "name: \"127.0.0.1:9001\""),
        &[(
            "\"127.0.0.1:9001\", weight",
            "pools[0].backends[1].name",
            "backend name \"127.0.0.1:9001\" is already used by pools[0].backends[0], declared at lb.ron:9:17",
        )],
    );
}

#[test]
fn weights_are_bounded_and_not_all_zero() {
    assert_problems(
        &edit("weight: 3", "weight: 257"),
        &[(
            "257",
            "pools[0].backends[1].weight",
            "weight 257 is above the maximum 256",
        )],
    );
    // Weight 0 alone drains one backend; all zero leaves the pool with no traffic.
    parse(&edit("weight: 3", "weight: 0"));
    assert_problems(
        &edit(
            "(address: \"127.0.0.1:9001\")",
            "(address: \"127.0.0.1:9001\", weight: 0)",
        )
        .replace("weight: 3", "weight: 0"),
        &[(
            "[",
            "pools[0].backends",
            "every backend has weight 0, so the pool can take no traffic; weight 0 marks one backend as drained, \
             at least one needs a weight above 0",
        )],
    );
}

#[test]
fn ports_must_not_be_zero() {
    assert_problems(
        &edit("\"127.0.0.1:9001\"", "\"127.0.0.1:0\""),
        &[(
            "\"127.0.0.1:0\"",
            "pools[0].backends[0].address",
            "port 0 in 127.0.0.1:0 is not a valid backend port",
        )],
    );
    assert_problems(
        &edit("\"127.0.0.1:8080\"", "\"0.0.0.0:0\""),
        &[(
            "\"0.0.0.0:0\"",
            "listeners[0].bind",
            "port 0 in 0.0.0.0:0 is not allowed: a listener needs a fixed port clients can reach",
        )],
    );
    assert_problems(
        &edit("\"127.0.0.1:9001\"", "\"[::]:80\""),
        &[(
            "\"[::]:80\"",
            "pools[0].backends[0].address",
            "[::]:80 is the unspecified address; a backend needs the IP it listens on",
        )],
    );
}

#[test]
fn process_settings_are_bounded() {
    let src = edit(
        "(\n    listeners",
        "(\n    workers: 1025,\n    max_connections: 0,\n    buffer_size: 512,\n    timeouts: (connect: \"0s\", idle: \"25h\", drain: \"0ms\"),\n    listeners",
    );
    assert_problems(
        &src,
        &[
            (
                "1025",
                "workers",
                "1025 workers is above the limit of 1024 (0 means one per core)",
            ),
            (
                "0,",
                "max_connections",
                "must be at least 1 (0 would refuse every client)",
            ),
            ("512", "buffer_size", "512B is outside the allowed range 1KiB..=16MiB"),
            (
                "\"0s\"",
                "timeouts.connect",
                "must be greater than zero (a zero timeout would expire at once)",
            ),
            ("\"25h\"", "timeouts.idle", "25h is above the limit of 24h"),
            (
                "\"0ms\"",
                "timeouts.drain",
                "must be greater than zero (a zero timeout would expire at once)",
            ),
        ],
    );
    assert_problems(
        &edit("(\n    listeners", "(\n    buffer_size: \"32MiB\",\n    listeners"),
        &[(
            "\"32MiB\"",
            "buffer_size",
            "32MiB is outside the allowed range 1KiB..=16MiB",
        )],
    );
    // The bounds themselves are accepted.
    parse(&edit(
        "(\n    listeners",
        "(\n    workers: 1024, buffer_size: \"16MiB\", timeouts: (connect: \"1us\", idle: \"24h\"),\n    listeners",
    ));
    parse(&edit(
        "(\n    listeners",
        "(\n    buffer_size: \"1KiB\",\n    listeners",
    ));
}

#[test]
fn listeners_are_required_and_unique() {
    let src = VALID.replace(
        "[\n        (name: \"front\", bind: \"127.0.0.1:8080\", pool: \"web\"),\n    ]",
        "[]",
    );
    assert_problems(&src, &[("[]", "listeners", "at least one listener is required")]);
    let src = edit(
        "(name: \"front\", bind: \"127.0.0.1:8080\", pool: \"web\"),",
        "(name: \"front\", bind: \"127.0.0.1:8080\", pool: \"web\"),\n        (name: \"front\", bind: \"127.0.0.1:8080\", pool: \"web\"),",
    );
    assert_problems(
        &src,
        &[
            (
                "\"front\", bind",
                "listeners[1].name",
                "listener name \"front\" is already used by listeners[0], declared at lb.ron:3:16",
            ),
            (
                "\"127.0.0.1:8080\", pool",
                "listeners[1].bind",
                "bind address 127.0.0.1:8080 is already used by listeners[0], declared at lb.ron:3:31",
            ),
        ],
    );
}

#[test]
fn listeners_must_name_a_known_pool() {
    assert_problems(
        &edit("pool: \"web\"", "pool: \"api\""),
        &[(
            "\"api\"",
            "listeners[0].pool",
            "unknown pool \"api\" (defined pools: \"web\")",
        )],
    );
    let src = VALID.replace(
        "[\n        (\n            name: \"web\",\n            backends: [\n                (address: \"127.0.0.1:9001\"),\n                (address: \"127.0.0.1:9002\", name: \"b2\", weight: 3),\n            ],\n        ),\n    ]",
        "[]",
    );
    assert_problems(
        &src,
        &[(
            "\"web\"",
            "listeners[0].pool",
            "unknown pool \"web\" (no pools are defined)",
        )],
    );
}

#[test]
fn pool_names_are_unique_and_not_empty() {
    let src = VALID.replace(
        "        ),\n    ],\n)",
        "        ),\n        (name: \"web\", backends: [(address: \"127.0.0.1:9003\")]),\n        (name: \"\", backends: [(address: \"127.0.0.1:9004\")]),\n    ],\n)",
    );
    assert_problems(
        &src,
        &[
            (
                "\"web\", backends",
                "pools[1].name",
                "pool name \"web\" is already used by pools[0], declared at lb.ron:7:19",
            ),
            ("\"\", backends", "pools[2].name", "must not be empty"),
        ],
    );
}

#[test]
fn names_are_bounded() {
    let long = "x".repeat(NAME_BYTES_MAX + 1);
    assert_problems(
        &edit("name: \"b2\"", &format!("name: \"{long}\"")),
        &[(
            "\"xxx",
            "pools[0].backends[1].name",
            "is 129 bytes long; the limit is 128",
        )],
    );
    assert_problems(
        &edit("name: \"front\"", "name: \"fr\\nont\""),
        &[(
            "\"fr\\nont\"",
            "listeners[0].name",
            "\"fr\\nont\" contains a control character",
        )],
    );
}

#[test]
fn http_mode_is_refused_until_it_lands() {
    assert_problems(
        &edit("pool: \"web\"", "mode: \"http\", pool: \"web\""),
        &[(
            "\"http\"",
            "listeners[0].mode",
            "mode \"http\" (L7) is not available in this build yet; it lands with the HTTP proxy. Use mode: \"tcp\"",
        )],
    );
}

#[test]
fn all_problems_are_reported_in_source_order() {
    let src = edit("pool: \"web\"", "pool: \"api\"")
        .replace("weight: 3", "weight: 300")
        .replace("\"127.0.0.1:9001\"", "\"127.0.0.1:0\"");
    let error = Config::parse(&src, "lb.ron").expect_err("accepted");
    assert_eq!(
        error.to_string(),
        "lb.ron:3:55: listeners[0].pool: unknown pool \"api\" (defined pools: \"web\")\n\
         lb.ron:9:27: pools[0].backends[0].address: port 0 in 127.0.0.1:0 is not a valid backend port\n\
         lb.ron:10:65: pools[0].backends[1].weight: weight 300 is above the maximum 256"
    );
}

#[test]
fn counts_are_bounded() {
    let mut config = parse(VALID);
    let address = |i: usize| SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250 + 1) as u8], 80));
    config.pools[0].backends = (0..=BACKENDS_PER_POOL_MAX)
        .map(|i| BackendConfig {
            address: address(i),
            name: format!("b{i}"),
            weight: 1,
        })
        .collect();
    config.listeners = (0..=LISTENERS_MAX)
        .map(|i| ListenerConfig {
            name: format!("l{i}"),
            bind: address(i),
            mode: Mode::Tcp,
            pool: "web".into(),
        })
        .collect();
    let small = PoolConfig {
        name: String::new(),
        algorithm: Algorithm::RoundRobin,
        backends: parse(VALID).pools[0].backends.clone(),
    };
    config.pools.extend((1..=POOLS_MAX).map(|i| PoolConfig {
        name: format!("p{i}"),
        ..small.clone()
    }));
    let error = config.validate().expect_err("too many");
    assert_eq!(
        error.to_string(),
        "lb.ron:2:16: listeners: 1025 listeners is above the limit of 1024\n\
         lb.ron:5:12: pools: 1025 pools is above the limit of 1024\n\
         lb.ron:8:23: pools[0].backends: 10001 backends is above the limit of 10000 per pool"
    );
}

// Locations for the binary, and files.

#[test]
fn location_points_at_the_value_or_its_entry() {
    let config = parse(VALID);
    assert_eq!(config.location("listeners[0].bind"), "lb.ron:3:31");
    // Defaulted: the entry that would hold it.
    assert_eq!(config.location("pools[0].backends[0].weight"), "lb.ron:9:17");
    assert_eq!(config.location("timeouts.idle"), "lb.ron:1:1");
    assert_eq!(config.location("no.such[3].path"), "lb.ron:1:1");
    assert_eq!(Config::default().location("listeners[0].bind"), "<built-in>");
}

#[test]
fn load_reads_files_and_reports_read_errors() {
    let dir = std::env::temp_dir().join(format!("gobalancer-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let good = dir.join("good.ron");
    std::fs::write(&good, VALID).expect("write");
    assert_eq!(Config::load(&good).expect("loads"), parse(VALID));

    let missing = dir.join("missing.ron");
    let error = Config::load(&missing).expect_err("missing file");
    assert!(
        error
            .to_string()
            .starts_with(&format!("{}: cannot read the configuration: ", missing.display())),
        "{error}"
    );

    let bad = dir.join("bad.ron");
    std::fs::write(&bad, b"(\n  workers: \xff)").expect("write");
    let error = Config::load(&bad).expect_err("invalid UTF-8");
    assert_eq!(
        error.to_string(),
        format!("{}:2:12: the configuration is not valid UTF-8", bad.display())
    );

    let big = dir.join("big.ron");
    std::fs::write(&big, vec![b' '; CONFIG_BYTES_MAX + 1]).expect("write");
    let error = Config::load(&big).expect_err("too big");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: the configuration is 4194305 bytes; the limit is 4MiB",
            big.display()
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn programmatic_configs_validate_too() {
    let mut config = parse(VALID);
    config.pools[0].backends[1].weight = WEIGHT_MAX + 1;
    let error = config.validate().expect_err("weight");
    assert_eq!(
        error.to_string(),
        "lb.ron:10:65: pools[0].backends[1].weight: weight 257 is above the maximum 256"
    );
    let error = Config::default().validate().expect_err("no listeners");
    assert_eq!(
        error.to_string(),
        "<built-in>: listeners: at least one listener is required"
    );
}

// Never panic, whatever the input.

/// Small edits of the example: deletions, insertions and replacements of characters
/// that matter to RON's structure.
fn mutated_example() -> impl Strategy<Value = String> {
    let chars: Vec<char> = EXAMPLE.chars().collect();
    let len = chars.len();
    let edit = (
        0..len,
        0usize..3,
        prop::sample::select(vec![
            '(', ')', '[', ']', ',', ':', '"', '/', '*', '#', 'r', '0', '-', '\\', '\n', 'é',
        ]),
    );
    prop::collection::vec(edit, 1..6).prop_map(move |edits| {
        let mut text = chars.clone();
        for (at, kind, c) in edits {
            let at = at.min(text.len().saturating_sub(1));
            match kind {
                0 if !text.is_empty() => {
                    text.remove(at);
                }
                1 => text.insert(at, c),
                _ if !text.is_empty() => text[at] = c,
                _ => {}
            }
        }
        text.into_iter().collect()
    })
}

/// Every problem has a sane position: within the text (or one past its end).
fn assert_sane(src: &str, error: &ConfigError) {
    let lines = src.split('\n').count();
    for p in error.problems() {
        if let (Some(line), Some(col)) = (p.line, p.col) {
            assert!(line >= 1 && line <= lines, "{p}");
            let width = src.split('\n').nth(line - 1).map_or(0, |l| l.chars().count());
            assert!(col >= 1 && col <= width + 1, "{p}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(src in "\\PC{0,200}") {
        if let Err(e) = Config::parse(&src, "fuzz") {
            assert_sane(&src, &e);
        }
    }

    #[test]
    fn mutated_example_never_panics(src in mutated_example()) {
        match Config::parse(&src, "fuzz") {
            Ok(config) => prop_assert!(config.validate().is_ok()),
            Err(e) => assert_sane(&src, &e),
        }
    }
}
