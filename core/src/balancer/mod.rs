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
//! | name                | file                | pick cost          | shared state          |
//! |---------------------|---------------------|--------------------|-----------------------|
//! | `round-robin`       | [`round_robin`]     | O(1)               | one atomic ticket     |
//! | `weighted`          | [`weighted`]        | O(log n) amortized | Pfair schedule, Mutex |
//! | `least-connections` | [`least_conn`]      | O(log n)           | ordered set, Mutex    |
//! | `power-of-two`      | [`power_of_two`]    | O(1)               | the active counters   |
//! | `consistent-hash`   | [`consistent_hash`] | O(1)               | Maglev table, no lock |
//!
//! No pick scans the backend list: a pool may hold many thousands of backends and a pick
//! happens on every accepted connection. Building the tables in [`Balancer::new`] may
//! scan; fallbacks may cost more than a pick but are bounded and never repeat.
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

pub mod consistent_hash;
pub mod least_conn;
pub mod power_of_two;
pub mod round_robin;
pub mod weighted;

use std::cmp::Ordering;
use std::fmt;
use std::iter::FusedIterator;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering as MemoryOrdering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use consistent_hash::Maglev;
use least_conn::LeastConn;
use round_robin::{Rotation, RoundRobin};
use weighted::Weighted;

/// Highest weight a backend may have (HAProxy's limit).
///
/// Bounding it keeps every product in the ratio comparisons and schedules far from
/// overflow and keeps the weighted schedule's period (the sum of weights) small.
pub const WEIGHT_MAX: u32 = 256;

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

/// Shared balancing state of one pool, used by every worker thread at once.
///
/// Cheap to clone: the state lives behind an `Arc`. Rebuild it (and swap it in) when the
/// backend set or a weight changes; picks themselves never allocate tables.
#[derive(Clone)]
pub struct Balancer {
    inner: Arc<Inner>,
}

struct Inner {
    algorithm: Algorithm,
    /// By backend index, clamped to [`WEIGHT_MAX`].
    weights: Vec<u32>,
    /// Backend indices with weight > 0, ascending. The algorithms work on positions in
    /// this list ("pos"); a lease turns a position back into a backend index.
    available: Vec<usize>,
    /// Live leases by backend index.
    active: Vec<AtomicU64>,
    /// Sum of `active`, kept separately so reading it never scans the pool.
    total_active: AtomicU64,
    policy: Policy,
}

/// The per-algorithm state that lives as long as the balancer.
enum Policy {
    RoundRobin(RoundRobin),
    Weighted(Weighted),
    LeastConnections(LeastConn),
    PowerOfTwo,
    ConsistentHash(Maglev),
}

impl Balancer {
    /// Builds the balancing state for one pool.
    ///
    /// Index `i` of `weights` is backend `i`. Weight 0 means drained: never selected.
    /// Weights above [`WEIGHT_MAX`] are treated as [`WEIGHT_MAX`] (config validation
    /// rejects them earlier; clamping here keeps the arithmetic bounds true regardless).
    pub fn new(algorithm: Algorithm, weights: &[u32]) -> Balancer {
        let weights: Vec<u32> = weights.iter().map(|&w| w.min(WEIGHT_MAX)).collect();
        let available: Vec<usize> = (0..weights.len()).filter(|&idx| weights[idx] > 0).collect();
        let available_weights: Vec<u32> = available.iter().map(|&idx| weights[idx]).collect();
        let policy = match algorithm {
            Algorithm::RoundRobin => Policy::RoundRobin(RoundRobin::new()),
            Algorithm::Weighted => Policy::Weighted(Weighted::new(&available_weights)),
            Algorithm::LeastConnections => Policy::LeastConnections(LeastConn::new(&available_weights)),
            Algorithm::PowerOfTwo => Policy::PowerOfTwo,
            Algorithm::ConsistentHash => {
                Policy::ConsistentHash(Maglev::new(&available, &available_weights, weights.len()))
            }
        };
        let active = weights.iter().map(|_| AtomicU64::new(0)).collect();
        Balancer {
            inner: Arc::new(Inner {
                algorithm,
                weights,
                available,
                active,
                total_active: AtomicU64::new(0),
                policy,
            }),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.inner.algorithm
    }

    /// Number of backends, drained ones included (the length of the weights given).
    pub fn len(&self) -> usize {
        self.inner.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.weights.is_empty()
    }

    /// The pick and then the fallbacks, lazily: the first item is the pick, each
    /// `next()` is the next candidate to try after the previous one failed. Every
    /// backend with weight > 0 appears at most once; nothing if none is available.
    ///
    /// Nothing happens until the first `next()`: an unused selection takes no
    /// round-robin ticket and no weighted slot.
    pub fn select(&self, key: PickKey) -> Selection {
        Selection {
            inner: Arc::clone(&self.inner),
            key,
            cursor: Cursor::Start,
        }
    }

    /// Active connections (leases alive) on backend `idx`; 0 for an index outside the
    /// pool, which has no connections by definition.
    pub fn active(&self, idx: usize) -> u64 {
        self.inner
            .active
            .get(idx)
            .map_or(0, |count| count.load(MemoryOrdering::Relaxed))
    }

    /// Active connections over the whole pool.
    pub fn total_active(&self) -> u64 {
        self.inner.total_active.load(MemoryOrdering::Relaxed)
    }
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("algorithm", &self.inner.algorithm)
            .field("backends", &self.len())
            .field("available", &self.inner.available.len())
            .field("total_active", &self.total_active())
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Weight of the backend at `pos` in `available`.
    fn weight_at(&self, pos: usize) -> u32 {
        self.weights[self.available[pos]]
    }

    fn active_at(&self, pos: usize) -> u64 {
        self.active[self.available[pos]].load(MemoryOrdering::Relaxed)
    }

    /// Counts one more live lease on the backend at `pos`. Least-connections calls it
    /// under its own lock so that its ordered view and these counters move together.
    fn count_claim(&self, pos: usize) {
        self.active[self.available[pos]].fetch_add(1, MemoryOrdering::Relaxed);
        self.total_active.fetch_add(1, MemoryOrdering::Relaxed);
    }

    fn count_release(&self, pos: usize) {
        let before = self.active[self.available[pos]].fetch_sub(1, MemoryOrdering::Relaxed);
        let total_before = self.total_active.fetch_sub(1, MemoryOrdering::Relaxed);
        // Every lease counted itself up before it existed, so neither can have been 0.
        debug_assert!(before > 0 && total_before > 0, "lease released twice");
    }

    /// The cursor a fresh selection starts from: for most algorithms this is where the
    /// pick is made.
    fn start(&self, key: PickKey) -> Cursor {
        let n = self.available.len();
        if n == 0 {
            return Cursor::Done;
        }
        match &self.policy {
            Policy::RoundRobin(rr) => Cursor::Rotation(rr.start(n)),
            Policy::Weighted(weighted) => Cursor::Rotation(weighted.start(n)),
            Policy::LeastConnections(_) => Cursor::LeastConnections(least_conn::Walk::new()),
            Policy::PowerOfTwo => Cursor::PowerOfTwo(power_of_two::Walk::new(key.random, n, |pos| {
                (self.active_at(pos), self.weight_at(pos))
            })),
            Policy::ConsistentHash(maglev) => Cursor::ConsistentHash(consistent_hash::Walk::new(maglev, key.client, n)),
        }
    }
}

/// The candidates of one connection: the pick, then the fallbacks. See
/// [`Balancer::select`].
pub struct Selection {
    inner: Arc<Inner>,
    key: PickKey,
    cursor: Cursor,
}

enum Cursor {
    /// `next()` has not been called yet.
    Start,
    /// Round-robin and weighted: the pick, then the following backends in order.
    Rotation(Rotation),
    PowerOfTwo(power_of_two::Walk),
    LeastConnections(least_conn::Walk),
    ConsistentHash(consistent_hash::Walk),
    Done,
}

impl Iterator for Selection {
    type Item = Lease;

    fn next(&mut self) -> Option<Lease> {
        if matches!(self.cursor, Cursor::Start) {
            self.cursor = self.inner.start(self.key);
        }
        let inner = &self.inner;
        let count = |pos: usize| {
            inner.count_claim(pos);
            pos
        };
        let claimed = match (&mut self.cursor, &inner.policy) {
            (Cursor::Rotation(rotation), _) => rotation.next().map(count),
            (Cursor::PowerOfTwo(walk), _) => walk.next().map(count),
            (Cursor::ConsistentHash(walk), Policy::ConsistentHash(maglev)) => walk.next(maglev).map(count),
            // Least-connections counts the lease inside its own lock, so the pick and
            // the increment are one step and concurrent picks spread out.
            (Cursor::LeastConnections(walk), Policy::LeastConnections(lc)) => {
                walk.next(lc, |pos| inner.count_claim(pos))
            }
            // Start was replaced above; a cursor never pairs with another policy.
            _ => None,
        };
        match claimed {
            Some(pos) => Some(Lease {
                inner: Arc::clone(&self.inner),
                pos,
            }),
            None => {
                self.cursor = Cursor::Done;
                None
            }
        }
    }
}

impl FusedIterator for Selection {}

impl fmt::Debug for Selection {
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
/// so it decrements the same counters even after the pool has been rebuilt and swapped.
pub struct Lease {
    inner: Arc<Inner>,
    /// Position in `inner.available`.
    pos: usize,
}

impl Lease {
    /// The backend this lease is on: its index in the weights the balancer was built
    /// from.
    pub fn index(&self) -> usize {
        self.inner.available[self.pos]
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        match &self.inner.policy {
            Policy::LeastConnections(lc) => {
                lc.release(self.pos, || self.inner.count_release(self.pos));
            }
            _ => self.inner.count_release(self.pos),
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

#[cfg(test)]
mod tests {
    use super::{Algorithm, Balancer, Lease, PickKey, Selection, VALID_NAMES, WEIGHT_MAX};
    use proptest::prelude::*;
    use serde::de::value::{Error as ValueError, StrDeserializer};
    use serde::de::IntoDeserializer;
    use serde::Deserialize;

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
}
