//! The file format: what ron deserializes, before defaults and validation.
//!
//! These `Raw*` types mirror the RON text one to one. They are separate from the public
//! [`Config`] types for two reasons: optional fields must be told apart from defaults
//! (a backend without a `name` is named after its address), and every value that is
//! parsed from a string (durations, sizes, addresses, modes, algorithms) is parsed
//! *during* deserialization by a small wrapper type, so that a bad value is reported by
//! ron with the line and column where it sits rather than later without one.
//!
//! Every struct denies unknown fields: a misspelt `helth_check` is an error naming the
//! field, never silently ignored. The serde names (`Config`, `Listener`, …) are what
//! ron checks when a file spells a struct name out, as in `Listener(bind: …)`.

use super::health::{parse_expect, timeout_default_for};
use super::validate::Finding;
use super::{
    parse_addr, parse_duration, parse_size, AllDown, BackendConfig, CheckConfig, CheckKind, Config, HttpConfig,
    ListenerConfig, Mode, PassiveConfig, PoolConfig, PoolHealth, Provenance, Timeouts, HEALTH_BODY_BYTES_DEFAULT,
    HTTP_EXPECT_DEFAULT, HTTP_METHOD_DEFAULT, HTTP_PATH_DEFAULT,
};
use crate::balancer::{Algorithm, WEIGHT_MAX};
use crate::http::Underscores;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(rename = "Config", deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    workers: Explicit<Count<usize>>,
    #[serde(default)]
    max_connections: Explicit<Count<usize>>,
    #[serde(default)]
    buffer_size: Explicit<Size>,
    #[serde(default)]
    timeouts: RawTimeouts,
    listeners: Vec<RawListener>,
    pools: Vec<RawPool>,
    #[serde(default)]
    http: RawHttp,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename = "Http", deny_unknown_fields)]
struct RawHttp {
    #[serde(default)]
    header_bytes_max: Explicit<Size>,
    #[serde(default)]
    headers_max: Explicit<Count<usize>>,
    #[serde(default)]
    uri_bytes_max: Explicit<Size>,
    #[serde(default)]
    body_bytes_max: Explicit<Size>,
    #[serde(default)]
    underscores: Explicit<UnderscoresName>,
    #[serde(default)]
    retries: Explicit<Count<u32>>,
    #[serde(default)]
    retry_budget_percent: Explicit<Count<u8>>,
    #[serde(default)]
    retry_on_timeout: Explicit<bool>,
    #[serde(default)]
    pool_idle_max: Explicit<Count<usize>>,
    #[serde(default)]
    max_requests_per_backend: Explicit<Count<u64>>,
}

impl RawHttp {
    fn into_config(self) -> HttpConfig {
        let d = HttpConfig::default();
        HttpConfig {
            header_bytes_max: self.header_bytes_max.0.map_or(d.header_bytes_max, |v| v.0),
            headers_max: self.headers_max.0.map_or(d.headers_max, |v| v.0),
            uri_bytes_max: self.uri_bytes_max.0.map_or(d.uri_bytes_max, |v| v.0),
            body_bytes_max: self.body_bytes_max.0.map_or(d.body_bytes_max, |v| v.0 as u64),
            underscores: self.underscores.0.map_or(d.underscores, |v| v.0),
            retries: self.retries.0.map_or(d.retries, |v| v.0),
            retry_budget_percent: self.retry_budget_percent.0.map_or(d.retry_budget_percent, |v| v.0),
            retry_on_timeout: self.retry_on_timeout.0.unwrap_or(d.retry_on_timeout),
            pool_idle_max: self.pool_idle_max.0.map_or(d.pool_idle_max, |v| v.0),
            max_requests_per_backend: self
                .max_requests_per_backend
                .0
                .map_or(d.max_requests_per_backend, |v| v.0),
        }
    }
}

/// An underscore policy written as a string: `"allow"`, `"drop"` or `"reject"`.
#[derive(Debug)]
struct UnderscoresName(Underscores);

impl<'de> Deserialize<'de> for UnderscoresName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_parsed(deserializer, "\"allow\", \"drop\" or \"reject\"", |s| {
            super::http::parse_underscores(s).map(UnderscoresName)
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename = "Timeouts", deny_unknown_fields)]
struct RawTimeouts {
    #[serde(default)]
    connect: Explicit<DurationText>,
    #[serde(default)]
    idle: Explicit<DurationText>,
    #[serde(default)]
    drain: Explicit<DurationText>,
    #[serde(default)]
    request_head: Explicit<DurationText>,
    #[serde(default)]
    request_body: Explicit<DurationText>,
    #[serde(default)]
    keep_alive: Explicit<DurationText>,
    #[serde(default)]
    response: Explicit<DurationText>,
    #[serde(default)]
    tunnel: Explicit<DurationText>,
    #[serde(default)]
    pool_idle: Explicit<DurationText>,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "Listener", deny_unknown_fields)]
struct RawListener {
    #[serde(default)]
    name: Explicit<String>,
    bind: Address,
    #[serde(default)]
    mode: Explicit<Mode>,
    pool: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "Pool", deny_unknown_fields)]
struct RawPool {
    name: String,
    #[serde(default)]
    algorithm: Explicit<AlgorithmName>,
    backends: Vec<RawBackend>,
    #[serde(default)]
    health_check: Explicit<RawCheck>,
    #[serde(default)]
    passive: RawPassive,
    #[serde(default)]
    slow_start: Explicit<DurationText>,
    #[serde(default)]
    when_all_down: Explicit<AllDownName>,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "Backend", deny_unknown_fields)]
struct RawBackend {
    address: Address,
    #[serde(default)]
    name: Explicit<String>,
    #[serde(default)]
    weight: Explicit<Weight>,
    #[serde(default)]
    health_check: Explicit<RawCheckOverride>,
}

/// A pool's active check. The HTTP-only fields are read whatever the `kind`, so that
/// one given with a TCP check is reported by name rather than as an unknown field.
#[derive(Debug, Deserialize)]
#[serde(rename = "HealthCheck", deny_unknown_fields)]
struct RawCheck {
    #[serde(default)]
    kind: Explicit<CheckKindName>,
    #[serde(default)]
    interval: Explicit<DurationText>,
    #[serde(default)]
    timeout: Explicit<DurationText>,
    #[serde(default)]
    rise: Explicit<Count<u32>>,
    #[serde(default)]
    fall: Explicit<Count<u32>>,
    #[serde(default)]
    jitter_percent: Explicit<Count<u8>>,
    #[serde(default)]
    method: Explicit<String>,
    #[serde(default)]
    path: Explicit<String>,
    #[serde(default)]
    host: Explicit<String>,
    #[serde(default)]
    expect: Explicit<Expect>,
    #[serde(default)]
    body_bytes_max: Explicit<Size>,
}

/// A backend's changes to its pool's check: timings, and the HTTP `path` and `host`.
/// The kind, method, expected statuses and body bound are the pool's, so `kind` here
/// is an unknown field.
#[derive(Debug, Deserialize)]
#[serde(rename = "HealthCheckOverride", deny_unknown_fields)]
struct RawCheckOverride {
    #[serde(default)]
    interval: Explicit<DurationText>,
    #[serde(default)]
    timeout: Explicit<DurationText>,
    #[serde(default)]
    rise: Explicit<Count<u32>>,
    #[serde(default)]
    fall: Explicit<Count<u32>>,
    #[serde(default)]
    jitter_percent: Explicit<Count<u8>>,
    #[serde(default)]
    path: Explicit<String>,
    #[serde(default)]
    host: Explicit<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename = "Passive", deny_unknown_fields)]
struct RawPassive {
    #[serde(default)]
    consecutive_failures: Explicit<Count<u32>>,
    #[serde(default)]
    ejection: Explicit<DurationText>,
    #[serde(default)]
    max_ejection: Explicit<DurationText>,
    #[serde(default)]
    max_ejected_percent: Explicit<Count<u8>>,
}

impl RawConfig {
    /// Fills in the defaults. Values are not checked here: validation runs on the
    /// result, the same way for files, flags and overrides. What is returned besides
    /// the config are faults of the file's shape that the config cannot express: an
    /// HTTP-only field on a TCP check, a backend override with no pool check.
    pub(super) fn into_config(self, provenance: Provenance) -> (Config, Vec<Finding>) {
        let defaults = Config::default();
        let timeout_defaults = Timeouts::default();
        let mut shape = Vec::new();
        let pools = self
            .pools
            .into_iter()
            .enumerate()
            .map(|(i, p)| p.into_pool(&format!("pools[{i}]"), &mut shape))
            .collect();
        let config = Config {
            workers: self.workers.0.map_or(defaults.workers, |v| v.0),
            max_connections: self.max_connections.0.map_or(defaults.max_connections, |v| v.0),
            buffer_size: self.buffer_size.0.map_or(defaults.buffer_size, |v| v.0),
            timeouts: Timeouts {
                connect: self.timeouts.connect.0.map_or(timeout_defaults.connect, |v| v.0),
                idle: self.timeouts.idle.0.map_or(timeout_defaults.idle, |v| v.0),
                drain: self.timeouts.drain.0.map_or(timeout_defaults.drain, |v| v.0),
                request_head: self
                    .timeouts
                    .request_head
                    .0
                    .map_or(timeout_defaults.request_head, |v| v.0),
                request_body: self
                    .timeouts
                    .request_body
                    .0
                    .map_or(timeout_defaults.request_body, |v| v.0),
                keep_alive: self.timeouts.keep_alive.0.map_or(timeout_defaults.keep_alive, |v| v.0),
                response: self.timeouts.response.0.map_or(timeout_defaults.response, |v| v.0),
                tunnel: self.timeouts.tunnel.0.map_or(timeout_defaults.tunnel, |v| v.0),
                pool_idle: self.timeouts.pool_idle.0.map_or(timeout_defaults.pool_idle, |v| v.0),
            },
            http: self.http.into_config(),
            listeners: self
                .listeners
                .into_iter()
                .enumerate()
                .map(|(i, l)| ListenerConfig {
                    // Named after its index, so `listener-1` is `listeners[1]` in messages.
                    name: l.name.0.unwrap_or_else(|| format!("listener-{i}")),
                    bind: l.bind.0,
                    mode: l.mode.0.unwrap_or(Mode::Tcp),
                    pool: l.pool,
                })
                .collect(),
            pools,
            provenance,
        };
        (config, shape)
    }
}

impl RawPool {
    fn into_pool(self, entry: &str, shape: &mut Vec<Finding>) -> PoolConfig {
        let check_path = format!("{entry}.health_check");
        if let Some(check) = &self.health_check.0 {
            check.http_only_fields(&check_path, shape);
        }
        let pool_check = self.health_check.0.as_ref().map(|c| c.resolve(None));
        let backends = self
            .backends
            .into_iter()
            .enumerate()
            .map(|(j, b)| {
                let override_path = format!("{entry}.backends[{j}].health_check");
                let check = match (&self.health_check.0, &b.health_check.0) {
                    (Some(pool), over) => {
                        if let Some(over) = over {
                            pool.check_override(over, &override_path, shape);
                        }
                        Some(pool.resolve(over.as_ref()))
                    }
                    (None, Some(_)) => {
                        shape.push(Finding {
                            path: override_path,
                            message: "backend overrides a health check the pool does not define; add a \
                                      health_check to the pool"
                                .into(),
                        });
                        None
                    }
                    (None, None) => None,
                };
                BackendConfig {
                    // The canonical form, so "[::0001]:80" and "[::1]:80" name the
                    // same backend.
                    name: b.name.0.unwrap_or_else(|| b.address.0.to_string()),
                    address: b.address.0,
                    weight: b.weight.0.map_or(1, |w| w.0),
                    check,
                }
            })
            .collect();
        let passive_defaults = PassiveConfig::default();
        let ejection = self.passive.ejection.0.map_or(passive_defaults.ejection, |v| v.0);
        PoolConfig {
            name: self.name,
            algorithm: self.algorithm.0.map_or(Algorithm::RoundRobin, |a| a.0),
            backends,
            health: PoolHealth {
                check: pool_check,
                passive: PassiveConfig {
                    consecutive_failures: self
                        .passive
                        .consecutive_failures
                        .0
                        .map_or(passive_defaults.consecutive_failures, |v| v.0),
                    ejection,
                    // A long first ejection raises the default cap with it, rather than
                    // making a file that only sets `ejection` invalid.
                    max_ejection: self
                        .passive
                        .max_ejection
                        .0
                        .map_or(passive_defaults.max_ejection.max(ejection), |v| v.0),
                    max_ejected_percent: self
                        .passive
                        .max_ejected_percent
                        .0
                        .map_or(passive_defaults.max_ejected_percent, |v| v.0),
                },
                slow_start: self.slow_start.0.map_or(Duration::ZERO, |v| v.0),
                when_all_down: self.when_all_down.0.map_or(AllDown::Refuse, |v| v.0),
            },
        }
    }
}

impl RawCheck {
    fn is_http(&self) -> bool {
        matches!(self.kind.0, Some(CheckKindName::Http))
    }

    /// What a TCP check is called in messages, and how to make it HTTP.
    fn tcp_note(&self) -> &'static str {
        if self.kind.0.is_some() {
            "is kind \"tcp\" (write kind: \"http\" for an HTTP check)"
        } else {
            "is kind \"tcp\", the default (add kind: \"http\" for an HTTP check)"
        }
    }

    /// Reports each HTTP-only field given with a TCP check, by its own path.
    fn http_only_fields(&self, check_path: &str, shape: &mut Vec<Finding>) {
        if self.is_http() {
            return;
        }
        let given = [
            ("method", self.method.0.is_some()),
            ("path", self.path.0.is_some()),
            ("host", self.host.0.is_some()),
            ("expect", self.expect.0.is_some()),
            ("body_bytes_max", self.body_bytes_max.0.is_some()),
        ];
        for (field, _) in given.iter().filter(|(_, given)| *given) {
            shape.push(Finding {
                path: format!("{check_path}.{field}"),
                message: format!("`{field}` applies to HTTP checks only; this check {}", self.tcp_note()),
            });
        }
    }

    /// Reports a backend's `path` or `host` when the pool's check is TCP.
    fn check_override(&self, over: &RawCheckOverride, override_path: &str, shape: &mut Vec<Finding>) {
        if self.is_http() {
            return;
        }
        let given = [("path", over.path.0.is_some()), ("host", over.host.0.is_some())];
        for (field, _) in given.iter().filter(|(_, given)| *given) {
            shape.push(Finding {
                path: format!("{override_path}.{field}"),
                message: format!(
                    "`{field}` applies to HTTP checks only; the pool's check {}",
                    self.tcp_note()
                ),
            });
        }
    }

    /// The check with `over` applied and defaults filled in. Defaults come last, so a
    /// backend that only shortens the interval also gets the shorter default timeout.
    fn resolve(&self, over: Option<&RawCheckOverride>) -> CheckConfig {
        let defaults = CheckConfig::default();
        let pick = |over: Option<&Explicit<DurationText>>, pool: &Explicit<DurationText>| {
            over.and_then(|o| o.0.as_ref()).or(pool.0.as_ref()).map(|v| v.0)
        };
        let interval = pick(over.map(|o| &o.interval), &self.interval).unwrap_or(defaults.interval);
        let timeout = pick(over.map(|o| &o.timeout), &self.timeout).unwrap_or_else(|| timeout_default_for(interval));
        let count = |over: Option<&Explicit<Count<u32>>>, pool: &Explicit<Count<u32>>, default: u32| {
            over.and_then(|o| o.0.as_ref())
                .or(pool.0.as_ref())
                .map_or(default, |v| v.0)
        };
        let text = |over: Option<&Explicit<String>>, pool: &Explicit<String>| {
            over.and_then(|o| o.0.clone()).or_else(|| pool.0.clone())
        };
        let kind = if self.is_http() {
            CheckKind::Http {
                method: self.method.0.clone().unwrap_or_else(|| HTTP_METHOD_DEFAULT.to_string()),
                path: text(over.map(|o| &o.path), &self.path).unwrap_or_else(|| HTTP_PATH_DEFAULT.to_string()),
                host: text(over.map(|o| &o.host), &self.host),
                expect: self
                    .expect
                    .0
                    .as_ref()
                    .map_or_else(|| vec![HTTP_EXPECT_DEFAULT], |e| e.0.clone()),
                body_bytes_max: self
                    .body_bytes_max
                    .0
                    .as_ref()
                    .map_or(HEALTH_BODY_BYTES_DEFAULT, |v| v.0),
            }
        } else {
            CheckKind::Tcp
        };
        CheckConfig {
            kind,
            interval,
            timeout,
            rise: count(over.map(|o| &o.rise), &self.rise, defaults.rise),
            fall: count(over.map(|o| &o.fall), &self.fall, defaults.fall),
            jitter_percent: over
                .and_then(|o| o.jitter_percent.0.as_ref())
                .or(self.jitter_percent.0.as_ref())
                .map_or(defaults.jitter_percent, |v| v.0),
        }
    }
}

/// A field that may be left out: `None` when absent. Unlike `Option<T>`, the file
/// writes the bare value (`name: "b2"`), not `Some("b2")`.
#[derive(Debug)]
struct Explicit<T>(Option<T>);

impl<T> Default for Explicit<T> {
    fn default() -> Self {
        Explicit(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Explicit<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(|v| Explicit(Some(v)))
    }
}

/// A count (workers, connections, thresholds): a non-negative integer that fits `T`,
/// with messages that say what is wrong with a negative or oversized one (ron's own is
/// "Integer is out of bounds"). The field's own range is checked by validation.
#[derive(Debug)]
struct Count<T>(T);

impl<'de, T: TryFrom<u64>> Deserialize<'de> for Count<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountVisitor<T>(std::marker::PhantomData<T>);

        impl<T: TryFrom<u64>> Visitor<'_> for CountVisitor<T> {
            type Value = Count<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                T::try_from(v)
                    .map(Count)
                    .map_err(|_| E::custom(format!("{v} is too large")))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!("{v} is negative; expected a non-negative integer"))),
                }
            }

            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
                Err(E::custom(format!("{v} is too large")))
            }

            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "{v} is out of range; expected a non-negative integer"
                )))
            }
        }

        deserializer.deserialize_any(CountVisitor(std::marker::PhantomData))
    }
}

/// A backend weight. Anything that fits a `u32` is read here, so that a weight above
/// [`WEIGHT_MAX`] is reported by validation together with every other problem; what
/// does not fit gets the same message as `--backend …,weight=x`.
#[derive(Debug)]
struct Weight(u32);

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WeightVisitor;

        fn out_of_range<E: de::Error>(v: impl fmt::Display) -> E {
            E::custom(format!("weight must be an integer 0..={WEIGHT_MAX}, not {v}"))
        }

        impl Visitor<'_> for WeightVisitor {
            type Value = Weight;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a weight, an integer 0..={WEIGHT_MAX}")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                u32::try_from(v).map(Weight).map_err(|_| out_of_range(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u32::try_from(v).map(Weight).map_err(|_| out_of_range(v))
            }

            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
                Err(out_of_range(v))
            }

            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
                Err(out_of_range(v))
            }
        }

        deserializer.deserialize_any(WeightVisitor)
    }
}

/// A duration written as a string, e.g. `"3s"` (see [`parse_duration`]).
#[derive(Debug)]
struct DurationText(Duration);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = DurationText;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"3s\" or \"500ms\"")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                parse_duration(s).map(DurationText).map_err(E::custom)
            }

            // A bare number is the one mistake worth a specific answer: it has no unit.
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "a duration is a string with a unit, e.g. \"{v}s\" or \"{v}ms\", not the bare number {v}"
                )))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "a duration is a string with a unit, e.g. \"3s\", not the number {v}"
                )))
            }
        }

        deserializer.deserialize_any(DurationVisitor)
    }
}

/// A byte size: an integer, or a string such as `"16KiB"` (see [`parse_size`]).
#[derive(Debug)]
struct Size(usize);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;

        impl Visitor<'_> for SizeVisitor {
            type Value = Size;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes, or a string such as \"16KiB\"")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                parse_size(s).map(Size).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                usize::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("size {v} is too large")))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!("size {v} must not be negative"))),
                }
            }

            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
                Err(E::custom(format!("size {v} is too large")))
            }

            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
                Err(E::custom(format!("size {v} is out of range")))
            }
        }

        deserializer.deserialize_any(SizeVisitor)
    }
}

/// Deserializes a string value through `parse`: a bad value is reported by ron at its
/// line and column with `parse`'s message, and `expecting` says what a value of another
/// type should have been. Shared by every name and address written as a string.
pub(super) fn deserialize_parsed<'de, D, T, E>(
    deserializer: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, E>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    E: fmt::Display,
{
    struct Parsed<T, E> {
        expecting: &'static str,
        parse: fn(&str) -> Result<T, E>,
    }

    impl<T, E: fmt::Display> Visitor<'_> for Parsed<T, E> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_str<Er: de::Error>(self, s: &str) -> Result<T, Er> {
            (self.parse)(s).map_err(Er::custom)
        }
    }

    deserializer.deserialize_str(Parsed { expecting, parse })
}

/// A socket address written as a string, `"IP:PORT"` (see [`parse_addr`]).
#[derive(Debug)]
struct Address(SocketAddr);

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_parsed(
            deserializer,
            "an address string such as \"127.0.0.1:8080\" or \"[::1]:8080\"",
            |s| parse_addr(s).map(Address),
        )
    }
}

/// A balancing algorithm name. Parsed here through `FromStr` rather than through
/// `Algorithm`'s own `Deserialize`, so the message is the same as for `--algorithm`.
#[derive(Debug)]
struct AlgorithmName(Algorithm);

impl<'de> Deserialize<'de> for AlgorithmName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_parsed(deserializer, "an algorithm name string such as \"round-robin\"", |s| {
            s.parse().map(AlgorithmName)
        })
    }
}

/// A health check kind: `"tcp"` or `"http"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CheckKindName {
    Tcp,
    Http,
}

impl<'de> Deserialize<'de> for CheckKindName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_parsed(deserializer, "a check kind string, \"tcp\" or \"http\"", |s| match s {
            "tcp" => Ok(CheckKindName::Tcp),
            "http" => Ok(CheckKindName::Http),
            _ => Err(format!("unknown health check kind {s:?}; expected \"tcp\" or \"http\"")),
        })
    }
}

/// The all-down policy, `"refuse"` or `"fail-open"`, parsed through `FromStr` like the
/// other names.
#[derive(Debug)]
struct AllDownName(AllDown);

impl<'de> Deserialize<'de> for AllDownName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_parsed(deserializer, "a policy string, \"refuse\" or \"fail-open\"", |s| {
            s.parse().map(AllDownName)
        })
    }
}

/// Expected HTTP statuses: a string of codes and ranges (`"200-399"`,
/// `"200,204,300-302"`), or one code as a bare integer.
#[derive(Debug)]
struct Expect(Vec<(u16, u16)>);

impl<'de> Deserialize<'de> for Expect {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ExpectVisitor;

        impl Visitor<'_> for ExpectVisitor {
            type Value = Expect;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("expected statuses, a string such as \"200-399\" or \"200,204\"")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                parse_expect(s).map(Expect).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                u16::try_from(v)
                    .map(|code| Expect(vec![(code, code)]))
                    .map_err(|_| E::custom(format!("{v} is not an HTTP status code")))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Err(E::custom(format!("{v} is not an HTTP status code")))
            }
        }

        deserializer.deserialize_any(ExpectVisitor)
    }
}
