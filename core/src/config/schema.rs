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

use super::{
    parse_addr, parse_duration, parse_size, BackendConfig, Config, ListenerConfig, Mode, PoolConfig, Provenance,
    Timeouts,
};
use crate::balancer::{Algorithm, WEIGHT_MAX};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(rename = "Config", deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    workers: Explicit<Count>,
    #[serde(default)]
    max_connections: Explicit<Count>,
    #[serde(default)]
    buffer_size: Explicit<Size>,
    #[serde(default)]
    timeouts: RawTimeouts,
    listeners: Vec<RawListener>,
    pools: Vec<RawPool>,
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
}

#[derive(Debug, Deserialize)]
#[serde(rename = "Backend", deny_unknown_fields)]
struct RawBackend {
    address: Address,
    #[serde(default)]
    name: Explicit<String>,
    #[serde(default)]
    weight: Explicit<Weight>,
}

impl RawConfig {
    /// Fills in the defaults. Nothing is checked here: validation runs on the result,
    /// the same way for files, flags and overrides.
    pub(super) fn into_config(self, provenance: Provenance) -> Config {
        let defaults = Config::default();
        let timeout_defaults = Timeouts::default();
        Config {
            workers: self.workers.0.map_or(defaults.workers, |v| v.0),
            max_connections: self.max_connections.0.map_or(defaults.max_connections, |v| v.0),
            buffer_size: self.buffer_size.0.map_or(defaults.buffer_size, |v| v.0),
            timeouts: Timeouts {
                connect: self.timeouts.connect.0.map_or(timeout_defaults.connect, |v| v.0),
                idle: self.timeouts.idle.0.map_or(timeout_defaults.idle, |v| v.0),
                drain: self.timeouts.drain.0.map_or(timeout_defaults.drain, |v| v.0),
            },
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
            pools: self
                .pools
                .into_iter()
                .map(|p| PoolConfig {
                    name: p.name,
                    algorithm: p.algorithm.0.map_or(Algorithm::RoundRobin, |a| a.0),
                    backends: p
                        .backends
                        .into_iter()
                        .map(|b| BackendConfig {
                            // The canonical form, so "[::0001]:80" and "[::1]:80" name the
                            // same backend.
                            name: b.name.0.unwrap_or_else(|| b.address.0.to_string()),
                            address: b.address.0,
                            weight: b.weight.0.map_or(1, |w| w.0),
                        })
                        .collect(),
                })
                .collect(),
            provenance,
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

/// A count (workers, connections): a non-negative integer, with messages that say
/// what is wrong with a negative or oversized one (ron's own is "Integer is out of
/// bounds").
#[derive(Debug)]
struct Count(usize);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountVisitor;

        impl Visitor<'_> for CountVisitor {
            type Value = Count;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                usize::try_from(v)
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

        deserializer.deserialize_any(CountVisitor)
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

/// A socket address written as a string, `"IP:PORT"` (see [`parse_addr`]).
#[derive(Debug)]
struct Address(SocketAddr);

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AddressVisitor;

        impl Visitor<'_> for AddressVisitor {
            type Value = Address;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address string such as \"127.0.0.1:8080\" or \"[::1]:8080\"")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                parse_addr(s).map(Address).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(AddressVisitor)
    }
}

/// A balancing algorithm name. Parsed here through `FromStr` rather than through
/// `Algorithm`'s own `Deserialize`, so the message is the same as for `--algorithm`.
#[derive(Debug)]
struct AlgorithmName(Algorithm);

impl<'de> Deserialize<'de> for AlgorithmName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AlgorithmVisitor;

        impl Visitor<'_> for AlgorithmVisitor {
            type Value = AlgorithmName;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an algorithm name string such as \"round-robin\"")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                s.parse().map(AlgorithmName).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(AlgorithmVisitor)
    }
}
