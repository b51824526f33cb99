//! Backend selection: which backend of a pool a new connection goes to, and where it
//! retries when that backend fails.
//!
//! Everything here is pure in the `quinn-proto` sense: no sockets, no clock, no global
//! RNG. The one thing a pick may depend on besides the pool's own state is the
//! [`PickKey`] the caller fills in (a fixed-seed hash of the client address and a random
//! number drawn from `Env::random_u64`), so a simulated run replays the same picks from
//! the same seed.
//!
//! # Shape
//!
//! A [`Balancer`] is built once per backend set (off the hot path) from an
//! [`Algorithm`] and one weight per backend; backend `i` is index `i` of that slice.
//! Weight 0 means drained: the backend keeps its index but is never selected, which is
//! how health checks and operators take a backend out without renumbering the pool.
//! The balancer is shared by every worker thread (`Clone` is an `Arc` clone).
//!
//! [`Balancer::select`] returns a [`Selection`]: a lazy iterator whose first item is the
//! pick and whose following items are the fallbacks to try, in order, after a connect
//! failure (the pingora shape). Each item is a [`Lease`]: the connection attempt's claim
//! on the backend. Creating it counts one active connection on that backend, dropping
//! it uncounts it, so every error path gives its count back without anyone having to
//! remember to. A selection never yields the same backend twice, and, iterated to the
//! end, yields every available backend exactly once.
//!
//! # Algorithms
//!
//! One file each; each documents its own guarantee and cost.
//!
//! | name                | file                | pick cost          | shared state                   |
//! |---------------------|---------------------|--------------------|--------------------------------|
//! | `round-robin`       | [`round_robin`]     | O(1)               | one atomic ticket, swapped plan |
//! | `weighted`          | [`weighted`]        | O(1) with a precomputed period, else O(log n) amortized | precomputed period in a swapped plan, or Pfair schedule, Mutex |
//! | `least-connections` | [`least_conn`]      | O(1) with few distinct weights (O(log m) to re-key out of pick order), else O(log n) | intrusive lists per weight and count, or ordered set, Mutex |
//! | `power-of-two`      | [`power_of_two`]    | O(1)               | the active counters, swapped plan |
//! | `consistent-hash`   | [`consistent_hash`] | O(1)               | Maglev table in a swapped plan |
//!
//! No pick scans the backend list: a pool may hold many thousands of backends and a pick
//! happens on every accepted connection. Building the tables in [`Balancer::new`] and
//! [`Balancer::set_weights`] may scan; fallbacks may cost more than a pick but are
//! bounded and never repeat.
//!
//! ```
//! use gobalancer::balancer::{Algorithm, Balancer, PickKey};
//!
//! // Backend 1 is drained (weight 0): never selected.
//! let pool = Balancer::new(Algorithm::RoundRobin, &[1, 0, 1]);
//! let picks: Vec<usize> = (0..4)
//!     .filter_map(|_| pool.select(PickKey::default()).next())
//!     .map(|lease| lease.index())
//!     .collect();
//! assert_eq!(picks, [0, 2, 0, 2]);
//!
//! // The pick and then its fallbacks: every available backend once.
//! let tried: Vec<usize> = pool.select(PickKey::default()).map(|lease| lease.index()).collect();
//! assert_eq!(tried, [0, 2]);
//!
//! // Leases count active connections while they live.
//! let lease = pool.select(PickKey::default()).next();
//! assert_eq!(pool.total_active(), 1);
//! drop(lease);
//! assert_eq!(pool.total_active(), 0);
//! ```
//!
//! # Changing weights
//!
//! The backend *set* is fixed for a balancer's life; the *weights* are not. Health
//! checking publishes every backend's effective weight (0 while it is down or ejected,
//! ramping up during slow start) several times a second, and [`Balancer::set_weights`]
//! applies them in place, so the active counters and the leases alive carry on
//! untouched. The change is built off the hot path and then published whole:
//!
//! - round-robin, power-of-two and consistent-hash read an immutable `Plan` (the
//!   weights, the available backends and, for consistent-hash, the Maglev table)
//!   through an [`ArcSwap`]: a pick loads it without a lock; `set_weights` builds the
//!   next plan while the previous one keeps serving (a Maglev table takes milliseconds
//!   to seconds), then swaps it in;
//! - weighted restarts its Pfair schedule: a short period is precomputed into the new
//!   plan (whose ticket starts at slot 0) and picked without a lock like the above;
//!   a long one restarts its heaps under the Mutex its picks then take;
//! - least-connections re-keys its load order in place, under its Mutex.
//!
//! A selection that is mid-iteration when the weights change finishes walking the plan
//! it started from, so it still never yields a backend twice, but every candidate is
//! checked against the current weights before it is yielded: once `set_weights` has
//! returned, a backend it set to 0 is never yielded, not even as a fallback. (Backends
//! that became available meanwhile are not added to that selection.)
//!
//! ```
//! use gobalancer::balancer::{Algorithm, Balancer, PickKey};
//!
//! let pool = Balancer::new(Algorithm::RoundRobin, &[1, 1, 1]);
//! let held = pool.select(PickKey::default()).next(); // on backend 0
//!
//! // Backend 0 fails its health checks; backend 2 is slow-starting at weight 1.
//! pool.set_weights(&[0, 4, 1]).expect("one weight per backend");
//! let tried: Vec<usize> = pool.select(PickKey::default()).map(|lease| lease.index()).collect();
//! assert_eq!(tried, [2, 1]);
//!
//! // The lease taken before the change still counts, and still uncounts.
//! assert_eq!(pool.active(0), 1);
//! drop(held);
//! assert_eq!(pool.active(0), 0);
//! ```
//!
//! # Carrying counts over a reload
//!
//! A config reload builds a new balancer for the new backend set and swaps it in, while
//! connections made through the old one are still open. The count of a backend that
//! stays must not restart at zero (least-connections would pile onto it), so counts live
//! in shared [`ActiveCounter`]s: [`Balancer::counters`] hands them out and
//! [`Balancer::with_counters`] builds a balancer on them, and a lease of either balancer
//! counts on the same counter. Matching backends across the reload (by address) is the
//! caller's job; indices may differ.
//!
//! ```
//! use gobalancer::balancer::{Algorithm, Balancer, PickKey};
//!
//! let old = Balancer::new(Algorithm::LeastConnections, &[1, 1]);
//! let held = old.select(PickKey::default()).next(); // on backend 0
//!
//! // Backend 1 leaves, backend 0 stays (as the new index 1), a new backend 0 arrives.
//! let carried = old.counters();
//! let new = Balancer::with_counters(
//!     Algorithm::LeastConnections,
//!     &[1, 1],
//!     vec![None, Some(carried[0].clone())],
//! );
//! assert_eq!(new.active(1), 1);
//! // The new backend 0 is the less loaded one.
//! assert_eq!(new.select(PickKey::default()).next().map(|l| l.index()), Some(0));
//! drop(held);
//! assert_eq!(new.active(1), 0);
//! ```

pub mod consistent_hash;
pub mod least_conn;
pub mod power_of_two;
pub mod round_robin;
pub mod weighted;

use std::cmp::Ordering;
use std::fmt;
use std::iter::{self, FusedIterator};
use std::ops::Deref;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering as MemoryOrdering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;

use consistent_hash::Maglev;
use least_conn::LeastConn;
use round_robin::{Rotation, RoundRobin};
use weighted::Weighted;

/// Highest weight a backend may have (HAProxy's limit).
///
/// Bounding it keeps every product in the ratio comparisons and schedules far from
/// overflow and keeps the weighted schedule's period (the sum of weights) small.
pub const WEIGHT_MAX: u32 = 256;

/// Effective weights (set by health checking through [`Balancer::set_weights`]) come in
/// units of 1/`WEIGHT_SCALE` of a configured weight point, so that a backend of weight 1
/// can still ramp smoothly during slow start (HAProxy's `eweight` does the same).
pub const WEIGHT_SCALE: u32 = 64;

/// Highest effective weight: [`WEIGHT_MAX`] configured points at full scale. Products in
/// the ratio comparisons (u128) and the weighted schedule's period (u64) stay far from
/// overflow at 100,000 backends.
pub const EFFECTIVE_WEIGHT_MAX: u32 = WEIGHT_MAX * WEIGHT_SCALE;

/// The selection algorithm of a pool, as named in the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    /// Exact rotation over the available backends; weights only mark drained ones.
    RoundRobin,
    /// Smooth weighted round robin: interleaved, within one pick of the ideal share.
    Weighted,
    /// Fewest active connections relative to weight; ties rotate.
    LeastConnections,
    /// The less loaded of two random candidates.
    PowerOfTwo,
    /// Maglev consistent hashing on the client address.
    ConsistentHash,
}

/// The valid algorithm names, in [`Algorithm::ALL`] order, for error messages.
const VALID_NAMES: &str = "round-robin, weighted, least-connections, power-of-two, consistent-hash";

impl Algorithm {
    /// Every algorithm, in documentation order.
    pub const ALL: [Algorithm; 5] = [
        Algorithm::RoundRobin,
        Algorithm::Weighted,
        Algorithm::LeastConnections,
        Algorithm::PowerOfTwo,
        Algorithm::ConsistentHash,
    ];

    /// The name used in configuration files and logs.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round-robin",
            Algorithm::Weighted => "weighted",
            Algorithm::LeastConnections => "least-connections",
            Algorithm::PowerOfTwo => "power-of-two",
            Algorithm::ConsistentHash => "consistent-hash",
        }
    }
}

/// A configuration named an algorithm that does not exist.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown balancing algorithm {given:?}; valid names: {valid}", valid = VALID_NAMES)]
pub struct UnknownAlgorithm {
    /// The name as written in the configuration.
    pub given: String,
}

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|algorithm| algorithm.name() == s)
            .ok_or_else(|| UnknownAlgorithm { given: s.to_owned() })
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// By hand rather than derived: the configuration spells algorithms the way operators
// read them ("least-connections"), and a typo should get an error listing the choices.
impl<'de> serde::Deserialize<'de> for Algorithm {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;

        impl serde::de::Visitor<'_> for NameVisitor {
            type Value = Algorithm;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a balancing algorithm name, one of: {VALID_NAMES}")
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Algorithm, E> {
                name.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_str(NameVisitor)
    }
}

/// What selection may look at for one pick. Callers fill it from the connection and
/// `Env`; it is the only input besides the pool's own state, which keeps picks
/// reproducible under simulation.
#[derive(Clone, Copy, Debug, Default)]
pub struct PickKey {
    /// Fixed-seed hash of the client IP (used by `consistent-hash`).
    pub client: u64,
    /// A fresh random number from `Env::random_u64` (used by `power-of-two`).
    pub random: u64,
}

/// Live leases on one backend.
///
/// Shared (`Arc`) so that it can outlive the balancer that made it: on a config reload
/// the counter of a backend that stays is handed to the new balancer
/// ([`Balancer::with_counters`]), and the old balancer's leases still decrement it as
/// their connections end.
#[derive(Debug, Default)]
pub struct ActiveCounter(AtomicU64);

impl ActiveCounter {
    /// Live leases on this backend, taken from any balancer sharing the counter.
    pub fn get(&self) -> u64 {
        self.0.load(MemoryOrdering::Relaxed)
    }

    /// Counts one lease in; returns the count before.
    ///
    /// Relaxed: the counter orders nothing else. Least-connections, the one algorithm
    /// that must see a pick and its increment as one step, does both under its lock.
    fn claim(&self) -> u64 {
        self.0.fetch_add(1, MemoryOrdering::Relaxed)
    }

    /// Counts one lease out; returns the count before.
    fn release(&self) -> u64 {
        let before = self.0.fetch_sub(1, MemoryOrdering::Relaxed);
        // Every lease counted itself in before it existed, so this cannot have been 0.
        debug_assert!(before > 0, "lease released twice");
        before
    }
}

/// [`Balancer::set_weights`] was given a different number of weights than the pool has
/// backends. Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{given} effective weights given for a pool of {backends} backends")]
pub struct WeightsLenMismatch {
    /// Backends in the pool ([`Balancer::len`]).
    pub backends: usize,
    /// Weights given.
    pub given: usize,
}

/// Shared balancing state of one pool, used by every worker thread at once.
///
/// Cheap to clone: the state lives behind an `Arc`. Rebuild it (and swap it in) when the
/// backend set changes; change weights in place with [`Balancer::set_weights`]. Picks
/// themselves never allocate tables.
#[derive(Clone)]
pub struct Balancer {
    inner: Arc<Handle>,
}

/// What the clones of one [`Balancer`] share: the balancer's one reference to its state.
///
/// Every other reference to `Inner` is a live lease's, so `Inner`'s strong count is one
/// plus the leases alive: that is [`Balancer::total_active`], with no counter of its own
/// to move on every lease. (A selection borrows the balancer instead of holding a
/// reference.)
struct Handle {
    inner: Arc<Inner>,
}

impl Deref for Handle {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.inner
    }
}

struct Inner {
    algorithm: Algorithm,
    /// Live leases by backend index; possibly shared with other balancers. (The live
    /// leases of this balancer, over the pool, are the strong count: see [`Handle`].)
    counters: Vec<Arc<ActiveCounter>>,
    /// The current effective weights by backend index, stored before the plan that
    /// carries them is published: what a selection checks each candidate against, so
    /// one started on an older plan never yields a backend drained since.
    effective: Vec<AtomicU32>,
    /// The current plan; replaced whole by `set_weights`.
    plan: ArcSwap<Plan>,
    /// Serialises `set_weights` calls, which may take a while (a Maglev build); picks
    /// never take it.
    reweigh: Mutex<()>,
    policy: Policy,
}

/// One set of effective weights and what is derived from it. Immutable once built, so
/// a selection can keep walking the plan it started from after a newer one is
/// published.
struct Plan {
    /// By backend index, clamped to [`EFFECTIVE_WEIGHT_MAX`].
    weights: Vec<u32>,
    /// Backend indices with weight > 0, ascending. The algorithms work on positions in
    /// this list ("pos"); a selection turns a position back into a backend index
    /// through the plan it started from.
    available: Vec<usize>,
    /// `consistent-hash` only: its lookup table over `available`.
    maglev: Option<Maglev>,
    /// `weighted` only: one period of its schedule over `available`, when short enough
    /// to precompute (see [`weighted`]).
    weighted: Option<weighted::Table>,
    /// `power-of-two` only: by position in `available`, what a candidate's comparison
    /// reads, side by side (see [`power_of_two`]).
    candidates: Vec<power_of_two::Candidate>,
}

impl Plan {
    /// Clamps `weights` and derives the rest. Scans the pool; for `consistent-hash` it
    /// also builds the Maglev table, for `weighted` the precomputed period if short
    /// enough, for `power-of-two` the candidate entries (`counters` by backend index).
    fn new(algorithm: Algorithm, weights: &[u32], counters: &[Arc<ActiveCounter>]) -> Plan {
        let weights: Vec<u32> = weights.iter().map(|&w| w.min(EFFECTIVE_WEIGHT_MAX)).collect();
        let available: Vec<usize> = (0..weights.len()).filter(|&idx| weights[idx] > 0).collect();
        let mut plan = Plan {
            weights,
            available,
            maglev: None,
            weighted: None,
            candidates: Vec::new(),
        };
        if algorithm == Algorithm::PowerOfTwo {
            plan.candidates = power_of_two::Candidate::all(&plan.available, &plan.weights, counters);
        }
        if algorithm == Algorithm::Weighted {
            plan.weighted = weighted::Table::new(&plan.available_weights());
        }
        if algorithm == Algorithm::ConsistentHash {
            // The table size follows the configured count, not the available one, so
            // availability changes keep the size and move few clients.
            plan.maglev = Some(Maglev::new(
                &plan.available,
                &plan.available_weights(),
                plan.weights.len(),
            ));
        }
        plan
    }

    /// Weights by position in `available`; all > 0.
    fn available_weights(&self) -> Vec<u32> {
        self.available.iter().map(|&idx| self.weights[idx]).collect()
    }
}

/// The per-algorithm state that lives as long as the balancer.
enum Policy {
    RoundRobin(RoundRobin),
    Weighted(Weighted),
    LeastConnections(LeastConn),
    PowerOfTwo,
    ConsistentHash,
}

impl Balancer {
    /// Builds the balancing state for one pool, every counter at zero.
    ///
    /// Index `i` of `weights` is backend `i`. Weight 0 means drained: never selected.
    /// Weights above [`EFFECTIVE_WEIGHT_MAX`] are treated as that (config validation
    /// rejects them earlier; clamping here keeps the arithmetic bounds true regardless).
    pub fn new(algorithm: Algorithm, weights: &[u32]) -> Balancer {
        Balancer::with_counters(algorithm, weights, vec![None; weights.len()])
    }

    /// Like [`Balancer::new`], but backend `i` counts on `counters[i]` when that is
    /// `Some` (a counter taken from another balancer's [`Balancer::counters`]), or on a
    /// fresh zero counter when it is `None`. Leases of both balancers then count on the
    /// same counter, so a reload keeps the counts of the backends that stay.
    ///
    /// `counters` should hold one entry per backend (debug builds assert it); missing
    /// entries are fresh counters and extra ones are ignored.
    ///
    /// Least-connections starts from the counts the counters hold now. See
    /// [`least_conn`] for how it follows counts that the other balancer's leases move.
    pub fn with_counters(algorithm: Algorithm, weights: &[u32], counters: Vec<Option<Arc<ActiveCounter>>>) -> Balancer {
        debug_assert_eq!(counters.len(), weights.len(), "one counter slot per backend");
        let counters: Vec<Arc<ActiveCounter>> = counters
            .into_iter()
            .chain(iter::repeat_with(|| None))
            .take(weights.len())
            .map(Option::unwrap_or_default)
            .collect();
        let plan = Arc::new(Plan::new(algorithm, weights, &counters));
        let policy = match algorithm {
            Algorithm::RoundRobin => Policy::RoundRobin(RoundRobin::new()),
            Algorithm::Weighted => Policy::Weighted(Weighted::new(Arc::clone(&plan))),
            Algorithm::LeastConnections => Policy::LeastConnections(LeastConn::new(&plan.weights, &counters)),
            Algorithm::PowerOfTwo => Policy::PowerOfTwo,
            Algorithm::ConsistentHash => Policy::ConsistentHash,
        };
        let effective = plan.weights.iter().map(|&w| AtomicU32::new(w)).collect();
        Balancer {
            inner: Arc::new(Handle {
                inner: Arc::new(Inner {
                    algorithm,
                    counters,
                    effective,
                    plan: ArcSwap::new(plan),
                    reweigh: Mutex::new(()),
                    policy,
                }),
            }),
        }
    }

    /// Replaces the effective weights: `effective[i]` for backend `i`, 0 = takes no new
    /// connections, clamped to [`EFFECTIVE_WEIGHT_MAX`] like [`Balancer::new`]'s.
    ///
    /// Off the hot path: it scans the pool and may rebuild tables (for consistent-hash
    /// a Maglev table: milliseconds, seconds at 100,000 backends), while picks go on
    /// with the previous weights; picks that start after it returns use the new ones.
    /// Giving the weights already in force changes nothing (no table is rebuilt, no
    /// schedule restarts). Counters and live leases are untouched: a lease taken before
    /// the change decrements the same counter when it ends. Concurrent calls are applied
    /// one after the other.
    ///
    /// What each algorithm does with the new weights is documented in its module.
    pub fn set_weights(&self, effective: &[u32]) -> Result<(), WeightsLenMismatch> {
        let inner = &*self.inner;
        if effective.len() != inner.counters.len() {
            return Err(WeightsLenMismatch {
                backends: inner.counters.len(),
                given: effective.len(),
            });
        }
        let _writer = lock(&inner.reweigh);
        let unchanged = inner
            .plan
            .load()
            .weights
            .iter()
            .copied()
            .eq(effective.iter().map(|&w| w.min(EFFECTIVE_WEIGHT_MAX)));
        if unchanged {
            return Ok(());
        }
        // Built before anything is published: until the swap below, picks keep using
        // the previous plan, and for consistent-hash the previous table.
        let plan = Arc::new(Plan::new(inner.algorithm, effective, &inner.counters));
        // Availability first: from here on, selections still walking an older plan
        // skip the backends drained by this change.
        for (slot, &weight) in inner.effective.iter().zip(&plan.weights) {
            slot.store(weight, MemoryOrdering::Relaxed);
        }
        inner.plan.store(Arc::clone(&plan));
        match &inner.policy {
            Policy::Weighted(weighted) => weighted.replan(plan),
            Policy::LeastConnections(lc) => lc.reweigh(&plan.weights, &inner.counters),
            Policy::RoundRobin(_) | Policy::PowerOfTwo | Policy::ConsistentHash => {}
        }
        Ok(())
    }

    /// The effective weights in force, by backend index (clamped).
    pub fn weights(&self) -> Vec<u32> {
        self.inner.plan.load().weights.clone()
    }

    /// The active counter of every backend, by index, to carry into a rebuilt balancer
    /// with [`Balancer::with_counters`].
    pub fn counters(&self) -> Vec<Arc<ActiveCounter>> {
        self.inner.counters.clone()
    }

    pub fn algorithm(&self) -> Algorithm {
        self.inner.algorithm
    }

    /// Number of backends, drained ones included (the length of the weights given).
    pub fn len(&self) -> usize {
        self.inner.counters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.counters.is_empty()
    }

    /// The pick and then the fallbacks, lazily: the first item is the pick, each
    /// `next()` is the next candidate to try after the previous one failed. Every
    /// backend with weight > 0 appears at most once; nothing if none is available.
    ///
    /// Nothing happens until the first `next()`: an unused selection takes no
    /// round-robin ticket and no weighted slot.
    ///
    /// The selection borrows the balancer and takes no reference count of its own;
    /// each lease it yields holds one, so leases outlive the selection, the balancer
    /// and a reload as before.
    pub fn select(&self, key: PickKey) -> Selection<'_> {
        Selection {
            inner: &self.inner.inner,
            key,
            cursor: Cursor::Start,
        }
    }

    /// Active connections (live leases) on backend `idx`, counting the leases of every
    /// balancer sharing its counter; 0 for an index outside the pool, which has no
    /// connections by definition.
    pub fn active(&self, idx: usize) -> u64 {
        self.inner.counters.get(idx).map_or(0, |counter| counter.get())
    }

    /// Live leases taken from this balancer, over the whole pool. Unlike
    /// [`Balancer::active`], this leaves out the leases of other balancers sharing the
    /// counters: summed over the old and the new balancer of a reload, it counts every
    /// connection once.
    ///
    /// Every lease holds one strong reference to this balancer's state, and the only
    /// other one is the balancer's own, so this is the strong count less
    /// one: a single load, as reading the counter it replaces was.
    pub fn total_active(&self) -> u64 {
        (Arc::strong_count(&self.inner.inner) - 1) as u64
    }
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("algorithm", &self.inner.algorithm)
            .field("backends", &self.len())
            .field("available", &self.inner.plan.load().available.len())
            .field("total_active", &self.total_active())
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Whether backend `idx` takes new connections under the current weights.
    fn is_available(&self, idx: usize) -> bool {
        self.effective
            .get(idx)
            .is_some_and(|weight| weight.load(MemoryOrdering::Relaxed) > 0)
    }

    /// The cursor a fresh selection starts from: for most algorithms this is where the
    /// pick is made.
    fn start(&self, key: PickKey) -> Cursor {
        match &self.policy {
            Policy::RoundRobin(rr) => {
                let plan = self.plan.load();
                match plan.available.len() {
                    0 => Cursor::Done,
                    n => Cursor::Rotation {
                        rotation: rr.start(n),
                        plan,
                    },
                }
            }
            Policy::Weighted(weighted) => {
                let plan = self.plan.load();
                if let Some(rotation) = Weighted::start_lock_free(&plan) {
                    return Cursor::Rotation { rotation, plan };
                }
                drop(plan);
                match weighted.start() {
                    Some((rotation, plan)) => Cursor::Rotation {
                        rotation,
                        plan: PlanGuard::from_inner(plan),
                    },
                    None => Cursor::Done,
                }
            }
            Policy::LeastConnections(_) => Cursor::LeastConnections(least_conn::Walk::new()),
            Policy::PowerOfTwo => {
                let plan = self.plan.load();
                let n = plan.available.len();
                if n == 0 {
                    return Cursor::Done;
                }
                let walk = power_of_two::Walk::new(key.random, &plan.candidates);
                Cursor::PowerOfTwo { walk, plan }
            }
            Policy::ConsistentHash => {
                let plan = self.plan.load();
                let walk = match &plan.maglev {
                    Some(maglev) if !plan.available.is_empty() => consistent_hash::Walk::new(maglev, key.client),
                    _ => return Cursor::Done,
                };
                Cursor::ConsistentHash { walk, plan }
            }
        }
    }
}

/// The candidates of one connection: the pick, then the fallbacks. See
/// [`Balancer::select`].
pub struct Selection<'a> {
    /// The balancer's state, borrowed: the leases yielded clone it, the selection
    /// does not need to.
    inner: &'a Arc<Inner>,
    key: PickKey,
    cursor: Cursor,
}

/// A selection's hold on the plan it walks: arc-swap's guard, which protects the plan
/// from being freed without moving its reference count (a debt slot of arc-swap's; it
/// becomes a counted reference if a newer plan is published meanwhile, or if the
/// thread already holds many guards).
type PlanGuard = arc_swap::Guard<Arc<Plan>>;

/// Where a selection is. Each walk works on the plan it holds, so a newer
/// plan published meanwhile cannot make it repeat a backend or index out of bounds.
enum Cursor {
    /// `next()` has not been called yet.
    Start,
    /// Round-robin and weighted: the pick, then the following backends in order.
    Rotation {
        rotation: Rotation,
        plan: PlanGuard,
    },
    PowerOfTwo {
        walk: power_of_two::Walk,
        plan: PlanGuard,
    },
    /// Works on the live ordered set (by backend index), not on a plan.
    LeastConnections(least_conn::Walk),
    ConsistentHash {
        walk: consistent_hash::Walk,
        plan: PlanGuard,
    },
    Done,
}

impl Iterator for Selection<'_> {
    type Item = Lease;

    fn next(&mut self) -> Option<Lease> {
        // The plan a selection starts from is the current one, so its pick needs no
        // availability check: only the fallbacks, which may come after a change, do.
        let mut fresh = false;
        if matches!(self.cursor, Cursor::Start) {
            self.cursor = self.inner.start(self.key);
            fresh = true;
        }
        let inner = self.inner;
        // Each turn consumes one candidate of a finite walk, so this ends; it repeats
        // only for candidates drained after the selection started.
        loop {
            let candidate = match (&mut self.cursor, &inner.policy) {
                (Cursor::Rotation { rotation, plan }, _) => {
                    rotation.next().and_then(|pos| plan.available.get(pos).copied())
                }
                // Claims on the candidate's own counter: the draw has just read it, so
                // this touches no other memory (at 100,000 backends, one miss fewer).
                (Cursor::PowerOfTwo { walk, plan }, _) => match walk.next(&plan.candidates) {
                    Some(candidate) => {
                        let idx = candidate.idx();
                        if std::mem::take(&mut fresh) || inner.is_available(idx) {
                            candidate.counter().claim();
                            return Some(Lease {
                                inner: Arc::clone(inner),
                                idx,
                            });
                        }
                        continue;
                    }
                    None => None,
                },
                (Cursor::ConsistentHash { walk, plan }, _) => plan
                    .maglev
                    .as_ref()
                    .and_then(|maglev| walk.next(maglev, &plan.available)),
                // Least-connections claims under its own lock, on its live set (which
                // only holds available backends), so the pick and the increment are
                // one step and concurrent picks spread out.
                (Cursor::LeastConnections(walk), Policy::LeastConnections(lc)) => {
                    let claimed = walk.next(lc, &inner.counters);
                    if let Some(idx) = claimed {
                        return Some(Lease {
                            inner: Arc::clone(inner),
                            idx,
                        });
                    }
                    None
                }
                // Start was replaced above; a cursor never pairs with another policy.
                _ => None,
            };
            let Some(idx) = candidate else {
                self.cursor = Cursor::Done;
                return None;
            };
            if std::mem::take(&mut fresh) || inner.is_available(idx) {
                inner.counters[idx].claim();
                return Some(Lease {
                    inner: Arc::clone(inner),
                    idx,
                });
            }
        }
    }
}

impl FusedIterator for Selection<'_> {}

impl fmt::Debug for Selection<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Selection")
            .field("algorithm", &self.inner.algorithm)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// One connection attempt's claim on a backend.
///
/// Creating it counted one active connection on the backend; dropping it uncounts it.
/// Because the count rides on the value, every error path (a failed connect, a
/// cancelled future, a panic unwinding) gives it back, counters never go negative, and
/// they read zero once all leases are gone. The lease holds the balancer it came from,
/// so it decrements the same counter after weights change, and after the pool has been
/// rebuilt and swapped.
pub struct Lease {
    inner: Arc<Inner>,
    /// Backend index.
    idx: usize,
}

impl Lease {
    /// The backend this lease is on: its index in the weights the balancer was built
    /// from.
    pub fn index(&self) -> usize {
        self.idx
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let inner = &self.inner;
        match &inner.policy {
            Policy::LeastConnections(lc) => lc.release(self.idx, &inner.counters),
            _ => {
                inner.counters[self.idx].release();
            }
        }
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease").field("index", &self.index()).finish()
    }
}

/// Locks `mutex`, recovering the state if another thread panicked while holding it.
///
/// The critical sections in this module only move entries between collections and do
/// not panic between the halves of an update, so the state a panicking thread left is
/// still consistent and the pool keeps balancing.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Orders two backends by load: `active_a / weight_a` against `active_b / weight_b`,
/// by exact cross-multiplication (no division, so no rounding makes unequal loads tie).
/// Weights are >= 1 for available backends; u128 cannot overflow for u64 * u32.
fn load_cmp(active_a: u64, weight_a: u32, active_b: u64, weight_b: u32) -> Ordering {
    let a = u128::from(active_a) * u128::from(weight_b);
    let b = u128::from(active_b) * u128::from(weight_a);
    a.cmp(&b)
}

/// SplitMix64's finalizer: a fixed, fast, well-mixing hash of a u64. Used wherever a
/// pick needs more than one random-looking number from one input, and for Maglev's
/// per-backend permutation; fixed so that every worker and every restart agrees.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The first pick of `count` fresh selections with the default key: the pick sequence
/// that the per-algorithm tests pin.
#[cfg(test)]
pub(crate) fn picks(pool: &Balancer, count: usize) -> Vec<usize> {
    (0..count)
        .filter_map(|_| pool.select(PickKey::default()).next())
        .map(|lease| lease.index())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{
        ActiveCounter, Algorithm, Balancer, Lease, PickKey, Selection, WeightsLenMismatch, EFFECTIVE_WEIGHT_MAX,
        VALID_NAMES, WEIGHT_MAX,
    };
    use proptest::prelude::*;
    use serde::de::value::{Error as ValueError, StrDeserializer};
    use serde::de::IntoDeserializer;
    use serde::Deserialize;
    use std::sync::Arc;

    #[test]
    fn names_round_trip() {
        for algorithm in Algorithm::ALL {
            assert_eq!(algorithm.name().parse(), Ok(algorithm));
            assert_eq!(algorithm.to_string(), algorithm.name());
        }
        let names: Vec<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
        assert_eq!(names.join(", "), VALID_NAMES);
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let message = match "least-conn".parse::<Algorithm>() {
            Ok(algorithm) => panic!("parsed as {algorithm}"),
            Err(err) => err.to_string(),
        };
        assert!(message.contains("\"least-conn\""), "{message}");
        for algorithm in Algorithm::ALL {
            assert!(message.contains(algorithm.name()), "{message}");
        }
    }

    #[test]
    fn deserializes_from_names() {
        for algorithm in Algorithm::ALL {
            let name: StrDeserializer<'_, ValueError> = algorithm.name().into_deserializer();
            assert_eq!(Algorithm::deserialize(name), Ok(algorithm));
        }
        assert_eq!(
            ron::from_str::<Algorithm>("\"power-of-two\""),
            Ok(Algorithm::PowerOfTwo)
        );
        let typo: StrDeserializer<'_, ValueError> = "RoundRobin".into_deserializer();
        let message = match Algorithm::deserialize(typo) {
            Ok(algorithm) => panic!("deserialized as {algorithm}"),
            Err(err) => err.to_string(),
        };
        assert!(message.contains(VALID_NAMES), "{message}");
    }

    #[test]
    fn shared_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Balancer>();
        send::<Lease>();
        send::<Selection>();
    }

    #[test]
    fn len_counts_drained_backends() {
        let pool = Balancer::new(Algorithm::Weighted, &[0, 3, 0]);
        assert_eq!((pool.len(), pool.is_empty()), (3, false));
        assert!(Balancer::new(Algorithm::Weighted, &[]).is_empty());
        assert_eq!(pool.algorithm(), Algorithm::Weighted);
        assert_eq!(pool.active(99), 0);
    }

    #[test]
    fn a_lease_outlives_its_balancer_handle() {
        let pool = Balancer::new(Algorithm::LeastConnections, &[1, 1]);
        let lease = pool.select(PickKey::default()).next();
        let observer = pool.clone();
        drop(pool);
        assert_eq!(observer.total_active(), 1);
        drop(lease);
        assert_eq!(observer.total_active(), 0);
    }

    #[test]
    fn concurrent_picks_keep_exact_counts() {
        const THREADS: u64 = 2;
        const PICKS_PER_THREAD: u64 = 600;
        for algorithm in Algorithm::ALL {
            let pool = Balancer::new(algorithm, &[1, 2, 0, 3]);
            let picked: Vec<Vec<u64>> = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..THREADS)
                    .map(|thread| {
                        let pool = pool.clone();
                        scope.spawn(move || {
                            let mut picked = vec![0u64; 4];
                            let mut held: Vec<Lease> = Vec::new();
                            for k in 0..PICKS_PER_THREAD {
                                let key = PickKey {
                                    client: super::splitmix64(k),
                                    random: super::splitmix64(k ^ (thread << 32)),
                                };
                                if let Some(lease) = pool.select(key).next() {
                                    picked[lease.index()] += 1;
                                    held.push(lease);
                                }
                                // Keep a few connections open at a time.
                                if held.len() > 3 {
                                    held.remove(0);
                                }
                            }
                            picked
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|worker| worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                    .collect()
            });
            let per_backend: Vec<u64> = (0..4).map(|i| picked.iter().map(|p| p[i]).sum()).collect();
            assert_eq!(
                per_backend.iter().sum::<u64>(),
                THREADS * PICKS_PER_THREAD,
                "{algorithm}"
            );
            assert_eq!(per_backend[2], 0, "{algorithm} picked the drained backend");
            if algorithm == Algorithm::RoundRobin {
                // One ticket per selection: the tickets 0..1200 split exactly.
                assert_eq!(per_backend, [400, 400, 0, 400]);
            }
            if algorithm == Algorithm::Weighted {
                // 1200 slots are exactly 200 periods of W = 6.
                assert_eq!(per_backend, [200, 400, 0, 600]);
            }
            assert_eq!(pool.total_active(), 0, "{algorithm}");
            assert!((0..4).all(|i| pool.active(i) == 0), "{algorithm}");
        }
    }

    #[test]
    fn set_weights_rejects_a_length_mismatch_and_changes_nothing() {
        for algorithm in Algorithm::ALL {
            let pool = Balancer::new(algorithm, &[1, 0, 2]);
            assert_eq!(
                pool.set_weights(&[1, 1]),
                Err(WeightsLenMismatch { backends: 3, given: 2 }),
                "{algorithm}"
            );
            assert_eq!(pool.set_weights(&[1, 1, 1, 1]).map_err(|e| e.given), Err(4));
            assert_eq!(pool.weights(), [1, 0, 2], "{algorithm}");
            let mut tried: Vec<usize> = pool.select(PickKey::default()).map(|l| l.index()).collect();
            tried.sort_unstable();
            assert_eq!(tried, [0, 2], "{algorithm}");
        }
        let message = WeightsLenMismatch { backends: 3, given: 2 }.to_string();
        assert_eq!(message, "2 effective weights given for a pool of 3 backends");
    }

    #[test]
    fn weights_are_the_clamped_weights_in_force() {
        let pool = Balancer::new(Algorithm::PowerOfTwo, &[1, 100_000, 0]);
        assert_eq!(pool.weights(), [1, EFFECTIVE_WEIGHT_MAX, 0]);
        assert_eq!(pool.set_weights(&[0, 7, 300_000]), Ok(()));
        assert_eq!(pool.weights(), [0, 7, EFFECTIVE_WEIGHT_MAX]);
        assert_eq!(pool.len(), 3);
    }

    #[test]
    fn a_drained_backend_is_never_yielded_and_its_leases_still_count_out() {
        for algorithm in Algorithm::ALL {
            let pool = Balancer::new(algorithm, &[1, 1, 1]);
            let held: Vec<Lease> = (0..6u64)
                .filter_map(|k| pool.select(PickKey { client: k, random: k }).next())
                .collect();
            let on_1 = pool.active(1);
            pool.set_weights(&[1, 0, 1]).expect("three weights");
            for k in 0..50u64 {
                let key = PickKey {
                    client: super::splitmix64(k),
                    random: super::splitmix64(!k),
                };
                assert!(pool.select(key).all(|lease| lease.index() != 1), "{algorithm}");
            }
            assert_eq!(pool.active(1), on_1, "{algorithm}");
            drop(held);
            assert_eq!((pool.total_active(), pool.active(1)), (0, 0), "{algorithm}");
            // And it comes back.
            pool.set_weights(&[0, 1, 0]).expect("three weights");
            let tried: Vec<usize> = pool.select(PickKey::default()).map(|l| l.index()).collect();
            assert_eq!(tried, [1], "{algorithm}");
        }
    }

    #[test]
    fn a_selection_mid_iteration_survives_a_change() {
        // The change lands after the selection has yielded `after` candidates, for every
        // possible `after`, and swaps which half of the pool is available.
        for algorithm in Algorithm::ALL {
            for after in 0..=4 {
                let pool = Balancer::new(algorithm, &[1, 1, 1, 1, 0, 0, 0, 0]);
                let mut selection = pool.select(PickKey { client: 9, random: 9 });
                let mut tried: Vec<usize> = selection.by_ref().take(after).map(|l| l.index()).collect();
                pool.set_weights(&[0, 0, 1, 1, 1, 1, 0, 0]).expect("eight weights");
                let rest: Vec<usize> = selection.map(|l| l.index()).collect();
                assert!(
                    rest.iter().all(|&i| (2..=5).contains(&i)),
                    "{algorithm} after {after}: {rest:?}"
                );
                if after == 0 {
                    // Nothing was picked before the change: the selection is a new one.
                    let mut all = rest.clone();
                    all.sort_unstable();
                    assert_eq!(all, [2, 3, 4, 5], "{algorithm}");
                }
                tried.extend(rest);
                let mut unique = tried.clone();
                unique.sort_unstable();
                unique.dedup();
                assert_eq!(unique.len(), tried.len(), "{algorithm} after {after}: {tried:?}");
                assert_eq!(pool.total_active(), 0);
            }
        }
    }

    #[test]
    fn with_counters_shares_counts_between_two_balancers() {
        for algorithm in Algorithm::ALL {
            let old = Balancer::new(algorithm, &[1, 1, 1]);
            let mut held: Vec<Lease> = (0..5u64)
                .filter_map(|k| old.select(PickKey { client: k, random: k }).next())
                .collect();
            let before: Vec<u64> = (0..3).map(|i| old.active(i)).collect();
            // Backend 0 leaves; 1 and 2 stay as 0 and 1; a new backend joins as 2.
            let carried = old.counters();
            let new = Balancer::with_counters(
                algorithm,
                &[1, 1, 1],
                vec![Some(Arc::clone(&carried[1])), Some(Arc::clone(&carried[2])), None],
            );
            assert!(Arc::ptr_eq(&new.counters()[0], &carried[1]));
            assert_eq!([new.active(0), new.active(1), new.active(2)], [before[1], before[2], 0]);
            assert_eq!(new.total_active(), 0, "{algorithm}: only its own leases");
            held.extend((0..5u64).filter_map(|k| new.select(PickKey { client: k, random: k }).next()));
            // Both balancers' leases count on the shared counters.
            for (old_idx, new_idx) in [(1, 0), (2, 1)] {
                assert_eq!(old.active(old_idx), new.active(new_idx), "{algorithm}");
            }
            assert_eq!(old.total_active() + new.total_active(), 10, "{algorithm}");
            // Old leases end after the reload, in any order with the new ones.
            held.reverse();
            held.clear();
            assert!((0..3).all(|i| old.active(i) == 0 && new.active(i) == 0), "{algorithm}");
            assert_eq!(old.total_active() + new.total_active(), 0, "{algorithm}");
        }
    }

    #[test]
    fn with_counters_of_none_is_new() {
        let fresh = Balancer::with_counters(Algorithm::RoundRobin, &[1, 1], vec![None, None]);
        assert_eq!(fresh.counters().iter().map(|c| c.get()).collect::<Vec<_>>(), [0, 0]);
        let counter = Arc::new(ActiveCounter::default());
        let pool = Balancer::with_counters(Algorithm::RoundRobin, &[1], vec![Some(Arc::clone(&counter))]);
        let lease = pool.select(PickKey::default()).next();
        assert_eq!(counter.get(), 1);
        drop(lease);
        assert_eq!(counter.get(), 0);
    }

    #[test]
    fn picks_during_weight_changes_keep_exact_counts() {
        // Backend 2 is drained in every set of weights, so it is never picked even by a
        // pick racing a change.
        const WEIGHT_SETS: [[u32; 4]; 4] = [[1, 2, 0, 3], [0, 2, 0, 1], [3, 0, 0, 3], [1, 1, 0, 0]];
        for algorithm in Algorithm::ALL {
            let pool = Balancer::new(algorithm, &WEIGHT_SETS[0]);
            let picked_drained = std::thread::scope(|scope| {
                let picker = {
                    let pool = pool.clone();
                    scope.spawn(move || {
                        let mut held: Vec<Lease> = Vec::new();
                        let mut drained = 0;
                        for k in 0..2_000u64 {
                            let key = PickKey {
                                client: super::splitmix64(k),
                                random: super::splitmix64(!k),
                            };
                            let mut selection = pool.select(key);
                            // A pick, and its first fallback now and then.
                            held.extend(selection.by_ref().take(1 + usize::from(k % 7 == 0)));
                            drained += held.iter().filter(|lease| lease.index() == 2).count();
                            if held.len() > 5 {
                                held.drain(..3);
                            }
                        }
                        drained
                    })
                };
                // Slow start: fewer changes than picks, but many.
                let changes = if algorithm == Algorithm::ConsistentHash { 8 } else { 200 };
                for change in 0..changes {
                    let weights = WEIGHT_SETS[change % WEIGHT_SETS.len()];
                    pool.set_weights(&weights).expect("four weights");
                }
                picker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            });
            assert_eq!(picked_drained, 0, "{algorithm}");
            assert_eq!(pool.total_active(), 0, "{algorithm}");
            assert!((0..4).all(|i| pool.active(i) == 0), "{algorithm}");
        }
    }

    fn algorithm() -> impl Strategy<Value = Algorithm> {
        prop::sample::select(Algorithm::ALL.to_vec())
    }

    fn key() -> impl Strategy<Value = PickKey> {
        (any::<u64>(), any::<u64>()).prop_map(|(client, random)| PickKey { client, random })
    }

    #[derive(Clone, Debug)]
    enum Step {
        /// Iterate a selection and keep the lease of its k-th candidate (k wraps),
        /// dropping the ones before it as failed attempts.
        Pick(PickKey, usize),
        /// Drop the held lease at this index (wraps).
        Drop(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            2 => (key(), 0usize..4).prop_map(|(key, k)| Step::Pick(key, k)),
            1 => any::<usize>().prop_map(Step::Drop),
        ]
    }

    fn available(weights: &[u32]) -> Vec<usize> {
        (0..weights.len()).filter(|&i| weights[i] > 0).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Iterated to the end, a selection yields every available backend exactly once
        /// (so never one twice, and never a drained one), under any load.
        #[test]
        fn a_full_selection_is_every_available_backend_once(
            algorithm in algorithm(),
            weights in prop::collection::vec(0..=WEIGHT_MAX, 0..=8),
            preload in prop::collection::vec(key(), 0..10),
            key in key(),
        ) {
            let pool = Balancer::new(algorithm, &weights);
            let _held: Vec<Lease> = preload.into_iter().filter_map(|k| pool.select(k).next()).collect();
            let mut tried: Vec<usize> = pool.select(key).map(|lease| lease.index()).collect();
            tried.sort_unstable();
            prop_assert_eq!(tried, available(&weights));
        }

        /// After any sequence of picks and drops, active() is the number of live leases
        /// per backend, and everything reads zero once they are gone.
        #[test]
        fn counters_match_live_leases(
            algorithm in algorithm(),
            weights in prop::collection::vec(0..=WEIGHT_MAX, 1..=8),
            steps in prop::collection::vec(step(), 0..60),
        ) {
            let pool = Balancer::new(algorithm, &weights);
            let mut held: Vec<Lease> = Vec::new();
            for step in steps {
                match step {
                    Step::Pick(key, k) => {
                        let mut selection = pool.select(key);
                        let n = available(&weights).len();
                        if n > 0 {
                            held.extend(selection.nth(k % n));
                        }
                    }
                    Step::Drop(which) => {
                        if !held.is_empty() {
                            held.swap_remove(which % held.len());
                        }
                    }
                }
                for i in 0..weights.len() {
                    let live = held.iter().filter(|lease| lease.index() == i).count() as u64;
                    prop_assert_eq!(pool.active(i), live);
                }
                prop_assert_eq!(pool.total_active(), held.len() as u64);
            }
            held.clear();
            prop_assert_eq!(pool.total_active(), 0);
            prop_assert!((0..weights.len()).all(|i| pool.active(i) == 0));
        }
    }

    /// One step of a pool's life with weight changes.
    #[derive(Clone, Debug)]
    enum Event {
        /// A selection: keep the lease of its k-th candidate (k wraps).
        Pick(PickKey, usize),
        /// Drop the held lease at this index (wraps).
        Drop(usize),
        /// New effective weights (the first `len()` are used).
        SetWeights(Vec<u32>),
        /// A selection takes `k` candidates, the weights change, it takes the rest.
        SetWeightsMidSelection(PickKey, usize, Vec<u32>),
    }

    /// Weights with a good share of zeros, so availability flips often.
    fn effective_weights() -> impl Strategy<Value = Vec<u32>> {
        prop::collection::vec(prop_oneof![1 => Just(0u32), 2 => 1..=WEIGHT_MAX], 8)
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            4 => (key(), 0usize..4).prop_map(|(key, k)| Event::Pick(key, k)),
            3 => any::<usize>().prop_map(Event::Drop),
            2 => effective_weights().prop_map(Event::SetWeights),
            1 => (key(), 0usize..4, effective_weights()).prop_map(|(key, k, w)| Event::SetWeightsMidSelection(key, k, w)),
        ]
    }

    fn assert_counts(pool: &Balancer, held: &[Lease]) -> Result<(), TestCaseError> {
        for i in 0..pool.len() {
            let live = held.iter().filter(|lease| lease.index() == i).count() as u64;
            prop_assert_eq!(pool.active(i), live, "backend {}", i);
        }
        prop_assert_eq!(pool.total_active(), held.len() as u64);
        Ok(())
    }

    proptest! {
        // Fewer cases than above: consistent-hash cases build several 65,537-slot
        // tables each, and the debug test run should stay within seconds.
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Through any interleaving of weight changes, picks and drops: counters equal
        /// the live leases and reach zero, no backend at effective weight 0 is ever
        /// yielded, and a selection the change lands in never yields one twice.
        #[test]
        fn weight_changes_keep_counters_exact_and_drained_backends_out(
            algorithm in algorithm(),
            weights in prop::collection::vec(0..=WEIGHT_MAX, 1..=8),
            events in prop::collection::vec(event(), 0..40),
        ) {
            let n = weights.len();
            // A consistent-hash change rebuilds a 65,537-slot table; a few suffice.
            let mut rebuilds_left = if algorithm == Algorithm::ConsistentHash { 3 } else { usize::MAX };
            let pool = Balancer::new(algorithm, &weights);
            let mut held: Vec<Lease> = Vec::new();
            for event in events {
                match event {
                    Event::Pick(key, k) => {
                        let current = pool.weights();
                        let tried: Vec<Lease> = pool.select(key).take(k + 1).collect();
                        prop_assert!(tried.iter().all(|lease| current[lease.index()] > 0));
                        held.extend(tried.into_iter().last());
                    }
                    Event::Drop(which) => {
                        if !held.is_empty() {
                            held.swap_remove(which % held.len());
                        }
                    }
                    Event::SetWeights(new) => {
                        if rebuilds_left > 0 {
                            rebuilds_left -= 1;
                            prop_assert_eq!(pool.set_weights(&new[..n]), Ok(()));
                            let clamped: Vec<u32> = new[..n].iter().map(|&w| w.min(EFFECTIVE_WEIGHT_MAX)).collect();
                            prop_assert_eq!(pool.weights(), clamped);
                        }
                    }
                    Event::SetWeightsMidSelection(key, k, new) => {
                        if rebuilds_left == 0 {
                            continue;
                        }
                        rebuilds_left -= 1;
                        let mut selection = pool.select(key);
                        let mut tried: Vec<Lease> = selection.by_ref().take(k).collect();
                        prop_assert_eq!(pool.set_weights(&new[..n]), Ok(()));
                        let rest: Vec<Lease> = selection.collect();
                        prop_assert!(rest.iter().all(|lease| new[lease.index()] > 0));
                        tried.extend(rest);
                        let mut indices: Vec<usize> = tried.iter().map(Lease::index).collect();
                        indices.sort_unstable();
                        indices.dedup();
                        prop_assert_eq!(indices.len(), tried.len());
                        // Keep one of them, as a caller whose last attempt connected.
                        held.extend(tried.pop());
                    }
                }
                assert_counts(&pool, &held)?;
            }
            held.clear();
            prop_assert_eq!(pool.total_active(), 0);
            prop_assert!((0..n).all(|i| pool.active(i) == 0));
        }

        /// Two balancers on shared counters (a reload): the counters equal the live
        /// leases of both, whichever balancer took them and in whatever order they end.
        #[test]
        fn shared_counters_count_both_balancers(
            algorithm in algorithm(),
            weights in prop::collection::vec(0..=WEIGHT_MAX, 1..=8),
            steps in prop::collection::vec((any::<bool>(), step()), 0..60),
        ) {
            let old = Balancer::new(algorithm, &weights);
            let new = Balancer::with_counters(algorithm, &weights, old.counters().into_iter().map(Some).collect());
            let mut held: Vec<Lease> = Vec::new();
            for (on_new, step) in steps {
                let pool = if on_new { &new } else { &old };
                match step {
                    Step::Pick(key, k) => held.extend(pool.select(key).take(k + 1).last()),
                    Step::Drop(which) => {
                        if !held.is_empty() {
                            held.swap_remove(which % held.len());
                        }
                    }
                }
                for i in 0..weights.len() {
                    let live = held.iter().filter(|lease| lease.index() == i).count() as u64;
                    prop_assert_eq!(old.active(i), live);
                    prop_assert_eq!(new.active(i), live);
                }
                prop_assert_eq!(old.total_active() + new.total_active(), held.len() as u64);
            }
            held.clear();
            prop_assert!((0..weights.len()).all(|i| old.active(i) == 0 && new.active(i) == 0));
        }
    }
}
