//! Health-check settings: active probes, passive detection, slow start, and what a pool
//! does when no backend is left.
//!
//! These are plain values; the health state machine that reads them lives in
//! `crate::health`. They follow HAProxy's `check` (`inter`, `rise`, `fall`, `slowstart`,
//! `httpchk`) and Envoy's outlier detection and panic mode. Every field has a default
//! ([`Default`] on each type), so a pool that says nothing about health runs with no
//! active checks, passive detection after 5 consecutive failures, no slow start, and
//! refuses clients when every backend is down.
//!
//! A pool's active check ([`PoolHealth::check`]) is the template; each backend carries
//! its own resolved copy ([`BackendConfig::check`](super::BackendConfig::check)) with
//! that backend's overrides applied, so the health module never merges anything. Only
//! the timing fields and the HTTP `path` and `host` may differ per backend; validation
//! holds code-built configs to the same rule ([`PoolConfig::set_health_check`] keeps it).
//!
//! The HTTP fields are checked at parse time to be safe to write into a request line
//! and a `Host` header as they are: no spaces, no control characters, ASCII only.

use super::PoolConfig;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// `interval` when left out: HAProxy's `inter` default.
pub const CHECK_INTERVAL_DEFAULT: Duration = Duration::from_secs(2);
/// `timeout` when left out (or the interval, when that is shorter).
pub const CHECK_TIMEOUT_DEFAULT: Duration = Duration::from_secs(1);
/// `rise` when left out: HAProxy's default.
pub const RISE_DEFAULT: u32 = 2;
/// `fall` when left out: HAProxy's default.
pub const FALL_DEFAULT: u32 = 3;
/// Largest `rise` or `fall`: above this a backend would take hours to change state at
/// ordinary intervals, which is a typo rather than a policy.
pub const THRESHOLD_MAX: u32 = 100;
/// `jitter_percent` when left out: spreads probes of many backends over time.
pub const JITTER_PERCENT_DEFAULT: u8 = 10;
/// Largest `jitter_percent`: beyond half, a wait could shrink to nothing.
pub const JITTER_PERCENT_MAX: u8 = 50;
/// HTTP probe method when left out.
pub const HTTP_METHOD_DEFAULT: &str = "GET";
/// HTTP probe path when left out.
pub const HTTP_PATH_DEFAULT: &str = "/";
/// Expected statuses when left out: any success or redirect, as HAProxy's `httpchk`.
pub const HTTP_EXPECT_DEFAULT: (u16, u16) = (200, 399);
/// The status codes an `expect` range may name.
pub const HTTP_STATUS_MIN: u16 = 100;
/// See [`HTTP_STATUS_MIN`].
pub const HTTP_STATUS_MAX: u16 = 599;
/// Ranges in one `expect` at most: there are only 500 codes to name.
pub const EXPECT_RANGES_MAX: usize = 64;
/// `body_bytes_max` when left out: enough for a JSON status document.
pub const HEALTH_BODY_BYTES_DEFAULT: usize = 4 * 1024;
/// Largest `body_bytes_max`: probes run for every backend, so each read is bounded.
pub const HEALTH_BODY_BYTES_MAX: usize = 1024 * 1024;
/// Longest probe `method`, in bytes.
pub const HTTP_METHOD_BYTES_MAX: usize = 32;
/// Longest probe `path`, in bytes.
pub const HTTP_PATH_BYTES_MAX: usize = 1024;
/// Longest probe `host`, in bytes: a DNS name (253) and a port.
pub const HTTP_HOST_BYTES_MAX: usize = 260;
/// `consecutive_failures` when left out: Envoy's outlier detection default.
pub const CONSECUTIVE_FAILURES_DEFAULT: u32 = 5;
/// Largest `consecutive_failures`.
pub const CONSECUTIVE_FAILURES_MAX: u32 = 1000;
/// `ejection` when left out: Envoy's `base_ejection_time`.
pub const EJECTION_DEFAULT: Duration = Duration::from_secs(10);
/// `max_ejection` when left out (or `ejection`, when that is longer): Envoy's
/// `max_ejection_time`.
pub const MAX_EJECTION_DEFAULT: Duration = Duration::from_secs(300);
/// `max_ejected_percent` when left out.
pub const MAX_EJECTED_PERCENT_DEFAULT: u8 = 50;

/// A pool's health settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolHealth {
    /// Active checks for the pool's backends (before per-backend overrides); None = off
    /// (default).
    pub check: Option<CheckConfig>,
    /// Passive detection (always present; `consecutive_failures: 0` disables it).
    pub passive: PassiveConfig,
    /// Slow start window; `Duration::ZERO` = off (default off).
    pub slow_start: Duration,
    /// What to do when no backend is available.
    pub when_all_down: AllDown,
}

impl Default for PoolHealth {
    fn default() -> Self {
        PoolHealth {
            check: None,
            passive: PassiveConfig::default(),
            slow_start: Duration::ZERO,
            when_all_down: AllDown::Refuse,
        }
    }
}

/// What a pool does with a new client when no backend is available.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AllDown {
    /// Reset the client (503 in L7 mode) at once. File: `"refuse"`. The default.
    #[default]
    Refuse,
    /// Treat every configured backend as up (Envoy's panic mode). File: `"fail-open"`.
    FailOpen,
}

impl AllDown {
    /// The name used in configuration files and logs.
    pub fn name(self) -> &'static str {
        match self {
            AllDown::Refuse => "refuse",
            AllDown::FailOpen => "fail-open",
        }
    }
}

impl fmt::Display for AllDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AllDown {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "refuse" => Ok(AllDown::Refuse),
            "fail-open" => Ok(AllDown::FailOpen),
            _ => Err(format!(
                "unknown when_all_down {s:?}; expected \"refuse\" or \"fail-open\""
            )),
        }
    }
}

/// One active check: what to probe and how often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckConfig {
    pub kind: CheckKind,
    /// Time between the starts of two probes, before jitter. Default 2s.
    pub interval: Duration,
    /// Limit on one probe; at most `interval`. Default 1s (or `interval` if shorter).
    pub timeout: Duration,
    /// Consecutive successes that bring a down backend up; 1..=100, default 2.
    pub rise: u32,
    /// Consecutive failures that take an up backend down; 1..=100, default 3.
    pub fall: u32,
    /// Each wait is `interval` ± this share of it, drawn from `Env` randomness;
    /// 0..=50, default 10.
    pub jitter_percent: u8,
}

impl Default for CheckConfig {
    /// A TCP check every 2s with a 1s timeout, rise 2, fall 3, 10% jitter.
    fn default() -> Self {
        CheckConfig {
            kind: CheckKind::Tcp,
            interval: CHECK_INTERVAL_DEFAULT,
            timeout: CHECK_TIMEOUT_DEFAULT,
            rise: RISE_DEFAULT,
            fall: FALL_DEFAULT,
            jitter_percent: JITTER_PERCENT_DEFAULT,
        }
    }
}

/// What a probe does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// The probe succeeds when a TCP connect succeeds within the timeout.
    Tcp,
    /// The probe sends one HTTP/1.1 request and succeeds on an expected status.
    Http {
        /// Upper-case letters only (a subset of the HTTP token grammar); default "GET".
        method: String,
        /// Starts with `/`; printable ASCII without spaces or `#`; default "/".
        path: String,
        /// The `Host` header; None sends the backend's address. Printable ASCII, no
        /// spaces.
        host: Option<String>,
        /// Inclusive status ranges, each within 100..=599 and non-empty; default
        /// `[(200, 399)]`. File form: `"200-399"` or `"200,204,300-302"`.
        expect: Vec<(u16, u16)>,
        /// At most this much of the response body is read; 0..=1MiB, default 4KiB.
        body_bytes_max: usize,
    },
}

impl CheckKind {
    /// An HTTP check of `path` with every other field at its default.
    pub fn http(path: impl Into<String>) -> CheckKind {
        CheckKind::Http {
            method: HTTP_METHOD_DEFAULT.to_string(),
            path: path.into(),
            host: None,
            expect: vec![HTTP_EXPECT_DEFAULT],
            body_bytes_max: HEALTH_BODY_BYTES_DEFAULT,
        }
    }

    /// `"tcp"` or `"http"`, as in the file.
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http { .. } => "http",
        }
    }
}

/// Passive detection: ejecting a backend on the failures real traffic sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassiveConfig {
    /// Consecutive connect failures or resets that eject a backend; 0 = passive
    /// detection off; at most 1000. Default 5.
    pub consecutive_failures: u32,
    /// The first ejection's length; it doubles on each ejection up to `max_ejection`.
    /// Default 10s.
    pub ejection: Duration,
    /// The longest ejection; at least `ejection`. Default 300s (or `ejection` if longer).
    pub max_ejection: Duration,
    /// At most this share of the pool's backends is ejected at once; 0..=100, default 50.
    pub max_ejected_percent: u8,
}

impl Default for PassiveConfig {
    fn default() -> Self {
        PassiveConfig {
            consecutive_failures: CONSECUTIVE_FAILURES_DEFAULT,
            ejection: EJECTION_DEFAULT,
            max_ejection: MAX_EJECTION_DEFAULT,
            max_ejected_percent: MAX_EJECTED_PERCENT_DEFAULT,
        }
    }
}

impl PoolConfig {
    /// Sets the pool's active check and gives every backend the same one, dropping any
    /// per-backend overrides: the way for code that builds a config to turn checks on
    /// or off while keeping the pool and its backends consistent.
    pub fn set_health_check(&mut self, check: Option<CheckConfig>) {
        for backend in &mut self.backends {
            backend.check.clone_from(&check);
        }
        self.health.check = check;
    }
}

/// The timeout a check gets when none is written: the default, unless the interval is
/// shorter (a probe must finish before the next one starts). A zero interval is left
/// for validation to report, so the timeout does not repeat that problem.
pub(super) fn timeout_default_for(interval: Duration) -> Duration {
    if interval.is_zero() {
        CHECK_TIMEOUT_DEFAULT
    } else {
        CHECK_TIMEOUT_DEFAULT.min(interval)
    }
}

/// Parses an `expect` list: status codes and inclusive ranges separated by commas,
/// such as `"200-399"` or `"200,204,300-302"`. Only the shape is checked here;
/// whether each code is a real status and each range non-empty is for validation,
/// which reports every such fault at once.
pub(super) fn parse_expect(s: &str) -> Result<Vec<(u16, u16)>, String> {
    let usage = "expected status codes or ranges such as \"200-399\" or \"200,204,300-302\"";
    if s.trim().is_empty() {
        return Err(format!("expect {s:?} is empty; {usage}"));
    }
    let code = |text: &str| -> Option<u16> {
        let text = text.trim();
        let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        text.parse().ok().filter(|_| digits_only)
    };
    s.split(',')
        .map(|part| {
            let range = match part.split_once('-') {
                Some((lo, hi)) => code(lo).zip(code(hi)),
                None => code(part).map(|c| (c, c)),
            };
            range.ok_or_else(|| {
                format!(
                    "{:?} in expect {s:?} is not a status code or a range; {usage}",
                    part.trim()
                )
            })
        })
        .collect()
}

/// Writes `expect` ranges back in the file's form, for messages.
pub(super) fn format_range((lo, hi): (u16, u16)) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let check = CheckConfig::default();
        assert_eq!(check.kind, CheckKind::Tcp);
        assert_eq!(
            (
                check.interval,
                check.timeout,
                check.rise,
                check.fall,
                check.jitter_percent
            ),
            (Duration::from_secs(2), Duration::from_secs(1), 2, 3, 10)
        );
        assert_eq!(
            CheckKind::http("/health"),
            CheckKind::Http {
                method: "GET".into(),
                path: "/health".into(),
                host: None,
                expect: vec![(200, 399)],
                body_bytes_max: 4096,
            }
        );
        assert_eq!(
            PassiveConfig::default(),
            PassiveConfig {
                consecutive_failures: 5,
                ejection: Duration::from_secs(10),
                max_ejection: Duration::from_secs(300),
                max_ejected_percent: 50,
            }
        );
        assert_eq!(
            PoolHealth::default(),
            PoolHealth {
                check: None,
                passive: PassiveConfig::default(),
                slow_start: Duration::ZERO,
                when_all_down: AllDown::Refuse,
            }
        );
    }

    #[test]
    fn all_down_names_round_trip() {
        for policy in [AllDown::Refuse, AllDown::FailOpen] {
            assert_eq!(policy.name().parse::<AllDown>(), Ok(policy));
            assert_eq!(policy.to_string(), policy.name());
        }
        assert_eq!(
            "open".parse::<AllDown>(),
            Err("unknown when_all_down \"open\"; expected \"refuse\" or \"fail-open\"".to_string())
        );
    }

    #[test]
    fn the_timeout_default_follows_a_short_interval() {
        assert_eq!(timeout_default_for(Duration::from_secs(5)), Duration::from_secs(1));
        assert_eq!(
            timeout_default_for(Duration::from_millis(300)),
            Duration::from_millis(300)
        );
        assert_eq!(timeout_default_for(Duration::ZERO), Duration::from_secs(1));
    }

    #[test]
    fn expect_lists_codes_and_ranges() {
        assert_eq!(parse_expect("200-399"), Ok(vec![(200, 399)]));
        assert_eq!(
            parse_expect("200, 204,300-302"),
            Ok(vec![(200, 200), (204, 204), (300, 302)])
        );
        // Shape only: validation reports reversed ranges and codes outside 100..=599.
        assert_eq!(parse_expect("399-200,700"), Ok(vec![(399, 200), (700, 700)]));
        let usage = "expected status codes or ranges such as \"200-399\" or \"200,204,300-302\"";
        assert_eq!(parse_expect(""), Err(format!("expect \"\" is empty; {usage}")));
        for (text, part) in [
            ("2xx", "2xx"),
            ("200,", ""),
            ("200-", "200-"),
            ("-1", "-1"),
            ("+200", "+200"),
            ("70000", "70000"),
            ("200-300-400", "200-300-400"),
        ] {
            assert_eq!(
                parse_expect(text),
                Err(format!(
                    "{part:?} in expect {text:?} is not a status code or a range; {usage}"
                )),
                "{text}"
            );
        }
        assert_eq!(format_range((200, 200)), "200");
        assert_eq!(format_range((200, 399)), "200-399");
    }

    proptest! {
        #[test]
        fn expect_parsing_never_panics(s in "\\PC{0,24}") {
            let _ = parse_expect(&s);
        }

        #[test]
        fn expect_round_trips(ranges in prop::collection::vec((100u16..600, 100u16..600), 1..6)) {
            let text: Vec<String> = ranges.iter().map(|r| format_range(*r)).collect();
            prop_assert_eq!(parse_expect(&text.join(",")), Ok(ranges));
        }
    }
}
