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
    assert_eq!(config.http, HttpConfig::default());
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
    assert_eq!(pool.algorithm, Algorithm::Weighted);
    let check = CheckConfig {
        kind: CheckKind::Http {
            method: "GET".into(),
            path: "/health".into(),
            host: Some("web.local".into()),
            expect: vec![(200, 399)],
            body_bytes_max: 4096,
        },
        ..CheckConfig::default()
    };
    assert_eq!(
        pool.health,
        PoolHealth {
            check: Some(check.clone()),
            passive: PassiveConfig::default(),
            slow_start: Duration::from_secs(30),
            when_all_down: AllDown::Refuse,
        }
    );
    let overridden = CheckConfig {
        kind: CheckKind::Http {
            method: "GET".into(),
            path: "/alt".into(),
            host: Some("web.local".into()),
            expect: vec![(200, 399)],
            body_bytes_max: 4096,
        },
        interval: Duration::from_secs(5),
        ..check.clone()
    };
    assert_eq!(
        pool.backends,
        [
            BackendConfig {
                address: "127.0.0.1:9001".parse().expect("addr"),
                name: "127.0.0.1:9001".into(),
                weight: 1,
                check: Some(check),
            },
            BackendConfig {
                address: "127.0.0.1:9002".parse().expect("addr"),
                name: "b2".into(),
                weight: 3,
                check: Some(overridden),
            },
        ]
    );
    assert!(config.pool("api").is_none());
    assert_eq!(config.location("listeners[0].bind"), "config/example.ron:46:19");
    assert!(EXAMPLE
        .lines()
        .nth(45)
        .expect("line 46")
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
    assert_eq!(config.pools[0].health, PoolHealth::default());
    assert!(config.pools[0].backends.iter().all(|b| b.check.is_none()));
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
            "Unexpected field named `helth_check` in `Config`, expected one of `workers`, `max_connections`, `buffer_size`, `timeouts`, `listeners`, `pools`, or `http` instead",
        )],
    );
    assert_problems(
        &edit("weight: 3", "wieght: 3"),
        &[(
            "wieght: 3",
            "pools[0].backends[1].wieght",
            "Unexpected field named `wieght` in `Backend`, expected one of `address`, `name`, `weight`, or `health_check` instead",
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
fn http_mode_and_section_are_read() {
    let text = edit(
        "pool: \"web\"",
        "mode: \"http\", pool: \"web\"",
    )
    .replacen(
        "(\n    listeners",
        "(\n    http: (header_bytes_max: \"8KiB\", headers_max: 50, uri_bytes_max: \"2KiB\", body_bytes_max: \"1MiB\", \
         underscores: \"reject\", retries: 2, retry_budget_percent: 10, retry_on_timeout: true, pool_idle_max: 8, \
         max_requests_per_backend: 100),\n    timeouts: (request_head: \"5s\", keep_alive: \"7s\", response: \"9s\", \
         tunnel: \"1m\", pool_idle: \"2s\"),\n    listeners",
        1,
    );
    let c = Config::parse(&text, "t.ron").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.listeners[0].mode, Mode::Http);
    assert_eq!(c.http.header_bytes_max, 8 * 1024);
    assert_eq!(c.http.headers_max, 50);
    assert_eq!(c.http.uri_bytes_max, 2 * 1024);
    assert_eq!(c.http.body_bytes_max, 1024 * 1024);
    assert_eq!(c.http.underscores, crate::http::Underscores::Reject);
    assert_eq!(c.http.retries, 2);
    assert_eq!(c.http.retry_budget_percent, 10);
    assert!(c.http.retry_on_timeout);
    assert_eq!(c.http.pool_idle_max, 8);
    assert_eq!(c.http.max_requests_per_backend, 100);
    assert_eq!(c.timeouts.request_head, Duration::from_secs(5));
    assert_eq!(c.timeouts.keep_alive, Duration::from_secs(7));
    assert_eq!(c.timeouts.response, Duration::from_secs(9));
    assert_eq!(c.timeouts.tunnel, Duration::from_secs(60));
    assert_eq!(c.timeouts.pool_idle, Duration::from_secs(2));
}

#[test]
fn http_limits_are_checked() {
    let text = VALID.replacen(
        "(\n    listeners",
        "(\n    http: (headers_max: 0, retries: 9, retry_budget_percent: 101, body_bytes_max: 0, \
         max_requests_per_backend: 0, underscores: \"keep\"),\n    listeners",
        1,
    );
    let e = Config::parse(&text, "t.ron")
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    assert!(e.to_string().contains("unknown underscore policy \"keep\""), "{e}");
    let text = VALID.replacen(
        "(\n    listeners",
        "(\n    http: (headers_max: 0, retries: 9, retry_budget_percent: 101, body_bytes_max: 0, \
         max_requests_per_backend: 0, uri_bytes_max: \"64KiB\"),\n    timeouts: (response: \"0s\"),\n    listeners",
        1,
    );
    let msg = Config::parse(&text, "t.ron")
        .err()
        .unwrap_or_else(|| panic!("accepted"))
        .to_string();
    for path in [
        "http.headers_max",
        "http.retries",
        "http.retry_budget_percent",
        "http.body_bytes_max",
        "http.max_requests_per_backend",
        "http.uri_bytes_max",
        "timeouts.response",
    ] {
        assert!(msg.contains(path), "{path} not reported in {msg}");
    }
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
            check: None,
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
        health: PoolHealth::default(),
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

// Health checks: defaults, overrides, and their rules.

/// `VALID` with `fields` added to the pool, before its backends.
fn with_pool_fields(fields: &str) -> String {
    edit(
        "            name: \"web\",\n",
        &format!("            name: \"web\",\n            {fields}\n"),
    )
}

/// `with_pool_fields(pool)`, with `over` as the second backend's `health_check`.
fn with_override(pool: &str, over: &str) -> String {
    with_pool_fields(pool).replacen("weight: 3)", &format!("weight: 3, health_check: {over})"), 1)
}

#[test]
fn an_empty_health_check_is_tcp_with_every_default() {
    let config = parse(&with_pool_fields("health_check: (),"));
    let pool = &config.pools[0];
    assert_eq!(pool.health.check, Some(CheckConfig::default()));
    assert_eq!(pool.health.passive, PassiveConfig::default());
    assert!(pool.backends.iter().all(|b| b.check == Some(CheckConfig::default())));
    let config = parse(&with_pool_fields("health_check: (kind: \"http\"),"));
    let http = CheckConfig {
        kind: CheckKind::http("/"),
        ..CheckConfig::default()
    };
    assert_eq!(config.pools[0].health.check, Some(http));
}

#[test]
fn every_health_field_is_read() {
    let config = parse(&with_override(
        r#"health_check: HealthCheck(kind: "http", path: "/h?x=1", method: "HEAD", host: "web.local:8080", expect: "200,204,300-302", interval: "3s", timeout: "500ms", rise: 1, fall: 100, jitter_percent: 50, body_bytes_max: 0),
            passive: Passive(consecutive_failures: 0, ejection: "1s", max_ejection: "1s", max_ejected_percent: 100),
            algorithm: "weighted", slow_start: "24h",
            when_all_down: "fail-open","#,
        r#"HealthCheckOverride(interval: "10s", timeout: "2s", rise: 3, fall: 4, jitter_percent: 0, path: "/alt", host: "b2.local")"#,
    ));
    let pool = &config.pools[0];
    let check = CheckConfig {
        kind: CheckKind::Http {
            method: "HEAD".into(),
            path: "/h?x=1".into(),
            host: Some("web.local:8080".into()),
            expect: vec![(200, 200), (204, 204), (300, 302)],
            body_bytes_max: 0,
        },
        interval: Duration::from_secs(3),
        timeout: Duration::from_millis(500),
        rise: 1,
        fall: 100,
        jitter_percent: 50,
    };
    assert_eq!(
        pool.health,
        PoolHealth {
            check: Some(check.clone()),
            passive: PassiveConfig {
                consecutive_failures: 0,
                ejection: Duration::from_secs(1),
                max_ejection: Duration::from_secs(1),
                max_ejected_percent: 100,
            },
            slow_start: Duration::from_secs(24 * 3600),
            when_all_down: AllDown::FailOpen,
        }
    );
    // The first backend takes the pool's check; the second overrides what it may.
    assert_eq!(pool.backends[0].check.as_ref(), Some(&check));
    let CheckKind::Http { method, expect, .. } = check.kind.clone() else {
        panic!("not http");
    };
    assert_eq!(
        pool.backends[1].check,
        Some(CheckConfig {
            kind: CheckKind::Http {
                method,
                path: "/alt".into(),
                host: Some("b2.local".into()),
                expect,
                body_bytes_max: 0,
            },
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            rise: 3,
            fall: 4,
            jitter_percent: 0,
        })
    );
    // A bare integer is one status.
    let config = parse(&with_pool_fields("health_check: (kind: \"http\", expect: 204),"));
    assert!(matches!(
        &config.pools[0].health.check,
        Some(CheckConfig { kind: CheckKind::Http { expect, .. }, .. }) if expect == &[(204, 204)]
    ));
}

#[test]
fn defaults_follow_the_values_they_depend_on() {
    // A short interval shortens the default timeout, for the pool and for a backend
    // that only overrides the interval.
    let config = parse(&with_override(
        "health_check: (interval: \"500ms\"),",
        "(interval: \"300ms\")",
    ));
    let timeouts: Vec<Duration> = config.pools[0]
        .backends
        .iter()
        .filter_map(|b| b.check.as_ref().map(|c| c.timeout))
        .collect();
    assert_eq!(timeouts, [Duration::from_millis(500), Duration::from_millis(300)]);
    // A long first ejection raises the default cap with it.
    let config = parse(&with_pool_fields("passive: (ejection: \"10m\"),"));
    assert_eq!(config.pools[0].health.passive.max_ejection, Duration::from_secs(600));
    // A written timeout is the backend's too, and must fit its shorter interval.
    assert_problems(
        &with_override("health_check: (timeout: \"1s\"),", "(interval: \"200ms\")"),
        &[(
            "\"200ms\")",
            "pools[0].backends[1].health_check.interval",
            "timeout 1s is longer than the interval 200ms; a probe must finish before the next one starts",
        )],
    );
}

#[test]
fn health_values_that_do_not_parse_are_located() {
    assert_problems(
        &with_pool_fields("health_check: (kind: \"udp\"),"),
        &[(
            "\"udp\"",
            "pools[0].health_check.kind",
            "unknown health check kind \"udp\"; expected \"tcp\" or \"http\"",
        )],
    );
    assert_problems(
        &with_pool_fields("when_all_down: \"panic\","),
        &[(
            "\"panic\"",
            "pools[0].when_all_down",
            "unknown when_all_down \"panic\"; expected \"refuse\" or \"fail-open\"",
        )],
    );
    assert_problems(
        &with_pool_fields("health_check: (kind: \"http\", expect: \"2xx\"),"),
        &[(
            "\"2xx\"",
            "pools[0].health_check.expect",
            "\"2xx\" in expect \"2xx\" is not a status code or a range; expected status codes or ranges such as \"200-399\" or \"200,204,300-302\"",
        )],
    );
    assert_problems(
        &with_pool_fields("health_check: (rise: -1),"),
        &[(
            "-1",
            "pools[0].health_check.rise",
            "-1 is negative; expected a non-negative integer",
        )],
    );
    assert_problems(
        &with_pool_fields("health_check: (jitter_percent: 300),"),
        &[("300", "pools[0].health_check.jitter_percent", "300 is too large")],
    );
    assert_problems(
        &with_pool_fields("health_check: (interval: 2),"),
        &[(
            "2)",
            "pools[0].health_check.interval",
            "a duration is a string with a unit, e.g. \"2s\" or \"2ms\", not the bare number 2",
        )],
    );
    assert_problems(
        &with_pool_fields("slow_start: \"30\","),
        &[(
            "\"30\"",
            "pools[0].slow_start",
            "duration \"30\" needs a unit (h, m, s, ms or us), e.g. \"30s\"",
        )],
    );
    assert_problems(
        &with_pool_fields("health_check: (kind: \"http\", body_bytes_max: \"4KB\"),"),
        &[(
            "\"4KB\"",
            "pools[0].health_check.body_bytes_max",
            "unknown unit \"KB\" in size \"4KB\"; use B, KiB, MiB or GiB",
        )],
    );
}

#[test]
fn unknown_health_fields_are_rejected_with_their_name() {
    assert_problems(
        &with_pool_fields("health_check: (inter: \"2s\"),"),
        &[(
            "inter:",
            "pools[0].health_check.inter",
            "Unexpected field named `inter` in `HealthCheck`, expected one of `kind`, `interval`, `timeout`, `rise`, `fall`, `jitter_percent`, `method`, `path`, `host`, `expect`, or `body_bytes_max` instead",
        )],
    );
    // A backend cannot change the kind of check.
    assert_problems(
        &with_override("health_check: (),", "(kind: \"http\")"),
        &[(
            "kind:",
            "pools[0].backends[1].health_check.kind",
            "Unexpected field named `kind` in `HealthCheckOverride`, expected one of `interval`, `timeout`, `rise`, `fall`, `jitter_percent`, `path`, or `host` instead",
        )],
    );
    assert_problems(
        &with_pool_fields("passive: (ejections: \"1s\"),"),
        &[(
            "ejections:",
            "pools[0].passive.ejections",
            "Unexpected field named `ejections` in `Passive`, expected one of `consecutive_failures`, `ejection`, `max_ejection`, or `max_ejected_percent` instead",
        )],
    );
}

#[test]
fn http_fields_need_an_http_check() {
    assert_problems(
        &with_pool_fields("health_check: (path: \"/health\", expect: \"200\"),"),
        &[
            (
                "\"/health\"",
                "pools[0].health_check.path",
                "`path` applies to HTTP checks only; this check is kind \"tcp\", the default (add kind: \"http\" for an HTTP check)",
            ),
            (
                "\"200\"",
                "pools[0].health_check.expect",
                "`expect` applies to HTTP checks only; this check is kind \"tcp\", the default (add kind: \"http\" for an HTTP check)",
            ),
        ],
    );
    assert_problems(
        &with_pool_fields("health_check: (kind: \"tcp\", method: \"GET\", host: \"a\", body_bytes_max: 1),"),
        &[
            (
                "\"GET\"",
                "pools[0].health_check.method",
                "`method` applies to HTTP checks only; this check is kind \"tcp\" (write kind: \"http\" for an HTTP check)",
            ),
            (
                "\"a\"",
                "pools[0].health_check.host",
                "`host` applies to HTTP checks only; this check is kind \"tcp\" (write kind: \"http\" for an HTTP check)",
            ),
            (
                "1)",
                "pools[0].health_check.body_bytes_max",
                "`body_bytes_max` applies to HTTP checks only; this check is kind \"tcp\" (write kind: \"http\" for an HTTP check)",
            ),
        ],
    );
    assert_problems(
        &with_override("health_check: (),", "(rise: 1, path: \"/alt\")"),
        &[(
            "\"/alt\"",
            "pools[0].backends[1].health_check.path",
            "`path` applies to HTTP checks only; the pool's check is kind \"tcp\", the default (add kind: \"http\" for an HTTP check)",
        )],
    );
}

#[test]
fn slow_start_needs_a_weight_aware_algorithm() {
    assert_problems(
        &with_pool_fields("slow_start: \"30s\","),
        &[(
            "\"30s\",",
            "pools[0].slow_start",
            "slow start ramps weights, which round-robin ignores; use algorithm \"weighted\" (the same rotation when weights are equal)",
        )],
    );
}

#[test]
fn a_backend_override_needs_a_pool_check() {
    assert_problems(
        &with_override("algorithm: \"weighted\", slow_start: \"1s\",", "(rise: 3)"),
        &[(
            "(rise: 3)",
            "pools[0].backends[1].health_check",
            "backend overrides a health check the pool does not define; add a health_check to the pool",
        )],
    );
}

#[test]
fn active_check_values_are_bounded() {
    let src = with_pool_fields(
        "health_check: (kind: \"http\", interval: \"0s\", timeout: \"25h\", rise: 0, fall: 101, jitter_percent: 51,\n                \
         method: \"get\", path: \"health\", host: \"a b\", expect: \"99-200,399-200,600\", body_bytes_max: \"2MiB\"),",
    );
    assert_problems(
        &src,
        &[
            (
                "\"0s\"",
                "pools[0].health_check.interval",
                "must be greater than zero (probes would run back to back)",
            ),
            (
                "\"25h\"",
                "pools[0].health_check.timeout",
                "25h is above the limit of 24h",
            ),
            (
                "0, fall",
                "pools[0].health_check.rise",
                "must be 1..=100, not 0: a backend changes state only after at least one probe result",
            ),
            ("101", "pools[0].health_check.fall", "101 is above the limit of 100"),
            (
                "51",
                "pools[0].health_check.jitter_percent",
                "51% is above the limit of 50% of the interval",
            ),
            (
                "\"get\"",
                "pools[0].health_check.method",
                "\"get\" is not an HTTP method: use upper-case letters A-Z only, such as \"GET\" or \"HEAD\"",
            ),
            (
                "\"health\"",
                "pools[0].health_check.path",
                "\"health\" must start with '/', as in \"/health\"",
            ),
            (
                "\"a b\"",
                "pools[0].health_check.host",
                "\"a b\" contains a space; a Host header cannot",
            ),
            (
                "\"99-200",
                "pools[0].health_check.expect",
                "status 99 in 99-200 is outside 100..=599",
            ),
            (
                "\"99-200",
                "pools[0].health_check.expect",
                "range 399-200 is empty: it starts above its end (write 200-399)",
            ),
            (
                "\"99-200",
                "pools[0].health_check.expect",
                "status 600 in 600 is outside 100..=599",
            ),
            (
                "\"2MiB\"",
                "pools[0].health_check.body_bytes_max",
                "2MiB is above the limit of 1MiB",
            ),
        ],
    );
    assert_problems(
        &with_pool_fields("health_check: (interval: \"1s\", timeout: \"2s\"),"),
        &[(
            "\"2s\"",
            "pools[0].health_check.timeout",
            "timeout 2s is longer than the interval 1s; a probe must finish before the next one starts",
        )],
    );
    for (path, why) in [
        (
            "/a#b",
            "\"/a#b\" contains '#': a fragment is never sent to a server; percent-encode it as %23",
        ),
        ("/a\\tb", "\"/a\\tb\" contains a control character; percent-encode it"),
        ("/é", "\"/é\" contains a non-ASCII character; percent-encode it"),
        ("", "\"\" must start with '/', as in \"/health\""),
    ] {
        assert_problems(
            &with_pool_fields(&format!("health_check: (kind: \"http\", path: \"{path}\"),")),
            &[("\"", "pools[0].health_check.path", why)],
        );
    }
    assert_problems(
        &with_pool_fields("health_check: (kind: \"http\", host: \"\", method: \"\"),"),
        &[
            (
                "\"\", method",
                "pools[0].health_check.host",
                "must not be empty (leave host out to send the backend's address)",
            ),
            (
                "\"\"),",
                "pools[0].health_check.method",
                "must not be empty; write an HTTP method such as \"GET\"",
            ),
        ],
    );
    // The bounds themselves are accepted.
    parse(&with_pool_fields(
        "health_check: (kind: \"http\", interval: \"24h\", timeout: \"24h\", rise: 100, fall: 1, jitter_percent: 0, expect: \"100-599\", body_bytes_max: \"1MiB\"),",
    ));
}

#[test]
fn passive_and_slow_start_values_are_bounded() {
    assert_problems(
        &with_pool_fields(
            "passive: (consecutive_failures: 1001, ejection: \"0s\", max_ejection: \"25h\", max_ejected_percent: 101),\n            algorithm: \"weighted\", slow_start: \"25h\",",
        ),
        &[
            (
                "1001",
                "pools[0].passive.consecutive_failures",
                "1001 is above the limit of 1000 (0 turns passive detection off)",
            ),
            (
                "\"0s\"",
                "pools[0].passive.ejection",
                "must be greater than zero (an ejection of zero would not take the backend out)",
            ),
            ("\"25h\"", "pools[0].passive.max_ejection", "25h is above the limit of 24h"),
            (
                "101",
                "pools[0].passive.max_ejected_percent",
                "101% is above 100% (the share of the pool's backends ejected at once)",
            ),
            ("\"25h\"", "pools[0].slow_start", "25h is above the limit of 24h"),
        ],
    );
    assert_problems(
        &with_pool_fields("passive: (ejection: \"1m\", max_ejection: \"30s\"),"),
        &[(
            "\"30s\"",
            "pools[0].passive.max_ejection",
            "30s is shorter than ejection 1m; ejections double from ejection up to max_ejection",
        )],
    );
}

#[test]
fn backend_overrides_are_checked_once_where_written() {
    // A fault of the pool's check is reported there only, not again for each backend.
    assert_problems(
        &with_override("health_check: (rise: 0),", "(fall: 2)"),
        &[(
            "0),",
            "pools[0].health_check.rise",
            "must be 1..=100, not 0: a backend changes state only after at least one probe result",
        )],
    );
    assert_problems(
        &with_override(
            "health_check: (kind: \"http\"),",
            "(rise: 0, timeout: \"3s\", jitter_percent: 60, path: \"x\", host: \"a\\nb\")",
        ),
        &[
            (
                "0, timeout",
                "pools[0].backends[1].health_check.rise",
                "must be 1..=100, not 0: a backend changes state only after at least one probe result",
            ),
            (
                "\"3s\"",
                "pools[0].backends[1].health_check.timeout",
                "timeout 3s is longer than the interval 2s; a probe must finish before the next one starts",
            ),
            (
                "60",
                "pools[0].backends[1].health_check.jitter_percent",
                "60% is above the limit of 50% of the interval",
            ),
            (
                "\"x\"",
                "pools[0].backends[1].health_check.path",
                "\"x\" must start with '/', as in \"/health\"",
            ),
            (
                "\"a\\nb\"",
                "pools[0].backends[1].health_check.host",
                "\"a\\nb\" contains a control character; a Host header cannot",
            ),
        ],
    );
}

#[test]
fn nested_health_paths_are_located() {
    let src = with_override(
        "health_check: (\n                interval: \"2s\",\n                timeout: \"1s\",\n            ),",
        "(rise: 3)",
    );
    let config = parse(&src);
    let line_of = |needle: &str| src.lines().position(|l| l.contains(needle)).map(|i| i + 1);
    let timeout_line = line_of("timeout: \"1s\"").expect("timeout line");
    assert_eq!(
        config.location("pools[0].health_check.timeout"),
        format!("lb.ron:{timeout_line}:26")
    );
    let backend_line = line_of("health_check: (rise: 3)").expect("backend line");
    let rise_col = src
        .lines()
        .nth(backend_line - 1)
        .and_then(|l| l.find("3)"))
        .expect("rise")
        + 1;
    assert_eq!(
        config.location("pools[0].backends[1].health_check.rise"),
        format!("lb.ron:{backend_line}:{rise_col}")
    );
    // Left out: located at the entry that would hold it.
    let override_col = src
        .lines()
        .nth(backend_line - 1)
        .and_then(|l| l.find("(rise"))
        .expect("override")
        + 1;
    assert_eq!(
        config.location("pools[0].backends[1].health_check.path"),
        format!("lb.ron:{backend_line}:{override_col}")
    );
    assert_eq!(
        config.location("pools[0].passive.ejection"),
        config.location("pools[0]")
    );
}

#[test]
fn code_built_checks_must_match_their_pool() {
    let mut config = parse(VALID);
    config.pools[0].backends[0].check = Some(CheckConfig::default());
    assert_eq!(
        config.validate().expect_err("accepted").to_string(),
        "lb.ron:9:17: pools[0].backends[0].health_check: backend overrides a health check the pool does not define; add a health_check to the pool"
    );
    config.pools[0].set_health_check(Some(CheckConfig::default()));
    config.validate().unwrap_or_else(|e| panic!("{e}"));
    config.pools[0].backends[1].check = None;
    config.pools[0].backends[0].check = Some(CheckConfig {
        kind: CheckKind::http("/"),
        ..CheckConfig::default()
    });
    let error = config.validate().expect_err("accepted");
    assert_eq!(
        error.to_string(),
        "lb.ron:9:17: pools[0].backends[0].health_check: the backend's health check differs from the pool's in kind, method, expect or body_bytes_max, which a backend cannot override (the pool's check is kind \"tcp\")\n\
         lb.ron:10:17: pools[0].backends[1].health_check: the backend has no health check but its pool has one; a backend's check is the pool's with overrides applied (PoolConfig::set_health_check sets both)"
    );
    // Timings may differ, and are checked.
    config.pools[0].set_health_check(Some(CheckConfig::default()));
    if let Some(check) = config.pools[0].backends[1].check.as_mut() {
        check.fall = 0;
        check.interval = Duration::from_secs(7);
    }
    assert_eq!(
        config.validate().expect_err("accepted").to_string(),
        "lb.ron:10:17: pools[0].backends[1].health_check.fall: must be 1..=100, not 0: a backend changes state only after at least one probe result"
    );
    config.pools[0].set_health_check(None);
    config.validate().unwrap_or_else(|e| panic!("{e}"));
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
