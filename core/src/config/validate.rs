//! Semantic checks: what deserializes fine but cannot run.
//!
//! Every rule runs and every finding is kept, so one `--check` run lists all the faults
//! in a file. The checks work on a [`Config`] after defaults are filled in, whatever
//! built it (a file, quick-mode flags, or a file with flag overrides on top), so the
//! three paths cannot drift apart. Each finding names the field path of the offending
//! value; [`Config`] turns that into `file:line:col` (or the flag that set it).
//!
//! The limits follow HAProxy where it has one (weights 0..=256, "declared at" for
//! duplicates) and otherwise bound everything a config can make the process allocate.

use super::{
    format_duration, format_size, Config, Mode, BACKENDS_PER_POOL_MAX, BUFFER_BYTES_MAX, BUFFER_BYTES_MIN,
    LISTENERS_MAX, NAME_BYTES_MAX, POOLS_MAX, TIMEOUT_MAX, WORKERS_MAX,
};
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
    ];
    for (name, value) in timeouts {
        check_timeout(f, name, value);
    }
}

fn check_timeout(f: &mut Findings<'_>, name: &str, value: Duration) {
    let path = format!("timeouts.{name}");
    if value.is_zero() {
        f.add(
            path,
            "must be greater than zero (a zero timeout would expire at once)".into(),
        );
    } else if value > TIMEOUT_MAX {
        f.add(
            path,
            format!(
                "{} is above the limit of {}",
                format_duration(value),
                format_duration(TIMEOUT_MAX)
            ),
        );
    }
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
        // L7 mode is parsed so that files can say it, and refused here until the HTTP
        // proxy lands; this is the one check to remove then.
        if l.mode == Mode::Http {
            f.add(
                format!("{entry}.mode"),
                "mode \"http\" (L7) is not available in this build yet; it lands with the HTTP proxy. Use mode: \"tcp\"".into(),
            );
        }
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
