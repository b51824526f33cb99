//! `power-of-two`: the less loaded of two random candidates.
//!
//! Two distinct available backends are drawn from `PickKey::random`, and the one with
//! the lower `active / weight` (exact cross-multiplication, ties to the first drawn)
//! wins. This gets most of least-connections' balance with no shared lock: the pick
//! reads two atomic counters, so it is O(1) and never serialises workers. Mitzenmacher's
//! "power of two choices" result is why two are enough: the maximum load drops from
//! O(log n / log log n) for one random choice to O(log log n).
//!
//! Its guarantee: with two or more backends available, the pick is never the strictly
//! most loaded backend (it is at most as loaded as the other candidate).
//!
//! Fallbacks: the losing candidate, then every other backend in rotation order from a
//! random start (so the retries of many connections do not all land on the same next
//! backend).
//!
//! All three numbers (first candidate, second candidate, rotation start) come from one
//! `random` through SplitMix64, so the caller draws one random number per connection.
//!
//! # Changing weights
//!
//! The candidates are drawn from the backends whose effective weight is above 0 and
//! compared on `active / effective weight`, both read from the balancer's swapped plan,
//! so [`Balancer::set_weights`](super::Balancer::set_weights) takes effect on the next
//! pick without a lock on this path. A slow-starting backend at weight 1 of 100 looks
//! 100 times as loaded per connection, so it wins a draw only while nearly idle.

use std::sync::Arc;

use super::round_robin::{position, Rotation};
use super::{load_cmp, splitmix64, ActiveCounter};

/// What a draw reads of one available backend, kept together in the plan so that a
/// candidate costs one entry and its counter (two cache lines at most) instead of four
/// lookups (position -> index -> weight, counter pointer -> counter), which at 10,000
/// backends and more are cache misses.
#[derive(Clone, Debug)]
pub(super) struct Candidate {
    counter: Arc<ActiveCounter>,
    /// Backend index.
    idx: usize,
    weight: u32,
}

impl Candidate {
    /// Backend index.
    pub(super) fn idx(&self) -> usize {
        self.idx
    }

    /// The backend's active counter (the balancer's, shared).
    pub(super) fn counter(&self) -> &ActiveCounter {
        &self.counter
    }

    /// By position in `available`; `weights` and `counters` by backend index.
    pub(super) fn all(available: &[usize], weights: &[u32], counters: &[Arc<ActiveCounter>]) -> Vec<Candidate> {
        available
            .iter()
            .map(|&idx| Candidate {
                counter: Arc::clone(&counters[idx]),
                idx,
                weight: weights[idx],
            })
            .collect()
    }
}

/// The candidates of one selection, in the order they will be tried.
#[derive(Clone, Debug)]
pub(super) struct Walk {
    /// The winner, then the other candidate (`None` when only one backend exists);
    /// positions in the plan's available list.
    drawn: [Option<usize>; 2],
    /// How many of `drawn` have been yielded.
    yielded: usize,
    /// The selection's random number: the rotation after the drawn two starts from it.
    random: u64,
    /// Made when the first fallback after the drawn two is asked for (few selections
    /// get that far, and it costs two hashes and a division).
    rest: Option<Rotation>,
}

impl Walk {
    /// `candidates` (not empty) are the plan's, by position.
    // Inlined into the pick by hand: left to itself the compiler calls it out of line,
    // which measured 20 ns (a third) more per pick from another crate (bench/pick).
    #[inline(always)]
    pub(super) fn new(random: u64, candidates: &[Candidate]) -> Walk {
        let (first, second) = candidates_of(random, candidates.len());
        let drawn = match second {
            Some(second) => {
                let (a, b) = (&candidates[first], &candidates[second]);
                if load_cmp(b.counter.get(), b.weight, a.counter.get(), a.weight).is_lt() {
                    [Some(second), Some(first)]
                } else {
                    [Some(first), Some(second)]
                }
            }
            None => [Some(first), None],
        };
        Walk {
            drawn,
            yielded: 0,
            random,
            rest: None,
        }
    }

    /// The next candidate; `candidates` as given to [`Walk::new`].
    #[inline]
    pub(super) fn next<'a>(&mut self, candidates: &'a [Candidate]) -> Option<&'a Candidate> {
        self.next_pos(candidates.len()).and_then(|pos| candidates.get(pos))
    }

    fn next_pos(&mut self, n: usize) -> Option<usize> {
        while self.yielded < self.drawn.len() {
            let candidate = self.drawn[self.yielded];
            self.yielded += 1;
            if candidate.is_some() {
                return candidate;
            }
        }
        // The rotation covers all n positions once; skip the (at most two) drawn.
        let drawn = self.drawn;
        let random = self.random;
        self.rest
            .get_or_insert_with(|| Rotation::new(position(splitmix64(splitmix64(random)), n), n))
            .find(|&pos| !drawn.contains(&Some(pos)))
    }
}

/// Two distinct positions out of `n` (> 0) from one random number; the second is
/// `None` when there is only one backend.
///
/// The second is drawn from the `n - 1` positions other than the first (an offset of
/// 1..n from it), so it is distinct without a retry loop. The modulo bias is below
/// n / 2^64: irrelevant for any real pool.
pub(super) fn candidates_of(random: u64, n: usize) -> (usize, Option<usize>) {
    let first = position(random, n);
    if n < 2 {
        return (first, None);
    }
    let offset = 1 + position(splitmix64(random), n - 1);
    // first < n and offset < n, so first + offset < 2n: one subtraction is the
    // remainder, and the sum does not overflow for any n a Vec can hold.
    let second = first + offset;
    (first, Some(if second >= n { second - n } else { second }))
}

#[cfg(test)]
mod tests {
    use super::candidates_of as candidates;
    use crate::balancer::{Algorithm, Balancer, Lease, PickKey, WEIGHT_MAX};
    use proptest::prelude::*;

    fn pick(pool: &Balancer, random: u64) -> Option<Lease> {
        pool.select(PickKey { client: 0, random }).next()
    }

    #[test]
    fn a_single_backend_is_always_the_pick() {
        let pool = Balancer::new(Algorithm::PowerOfTwo, &[0, 7, 0]);
        for random in [0, 1, 2, u64::MAX] {
            let tried: Vec<usize> = pool
                .select(PickKey { client: 0, random })
                .map(|lease| lease.index())
                .collect();
            assert_eq!(tried, [1]);
        }
    }

    #[test]
    fn the_lighter_candidate_wins_then_the_other() {
        let pool = Balancer::new(Algorithm::PowerOfTwo, &[1, 1]);
        // With two backends the candidates are always both of them.
        let held = pick(&pool, 0);
        assert_eq!(held.as_ref().map(Lease::index), Some(0));
        for random in 0..20 {
            let tried: Vec<usize> = pool
                .select(PickKey { client: 0, random })
                .map(|lease| lease.index())
                .collect();
            assert_eq!(tried, [1, 0], "random {random}");
        }
    }

    #[test]
    fn load_is_relative_to_weight() {
        // Backend 0 holds 3 connections at weight 4 (0.75), backend 1 holds 1 at
        // weight 1 (1.0): backend 0 is the lighter one.
        let pool = Balancer::new(Algorithm::PowerOfTwo, &[4, 1]);
        // Every selection yields every backend once, so `find` can place a lease
        // wherever the test wants it (the leases passed over are dropped).
        let mut held = Vec::new();
        for want in [0, 0, 0, 1] {
            held.extend(pool.select(PickKey::default()).find(|lease| lease.index() == want));
        }
        assert_eq!((pool.active(0), pool.active(1)), (3, 1));
        for random in 0..20 {
            assert_eq!(pick(&pool, random).map(|lease| lease.index()), Some(0));
        }
    }

    #[test]
    fn picks_are_deterministic_in_the_random_number() {
        let a = Balancer::new(Algorithm::PowerOfTwo, &[1, 2, 3, 4, 5]);
        let b = Balancer::new(Algorithm::PowerOfTwo, &[1, 2, 3, 4, 5]);
        for random in [3, 99, 1 << 40, u64::MAX] {
            let in_a: Vec<usize> = a.select(PickKey { client: 0, random }).map(|l| l.index()).collect();
            let in_b: Vec<usize> = b.select(PickKey { client: 0, random }).map(|l| l.index()).collect();
            assert_eq!(in_a, in_b);
        }
    }

    #[test]
    fn a_change_compares_on_the_new_weights() {
        let pool = Balancer::new(Algorithm::PowerOfTwo, &[1, 1]);
        let held: Vec<Lease> = [pick(&pool, 0), pick(&pool, 0), pick(&pool, 0)]
            .into_iter()
            .flatten()
            .collect();
        // Loads 2/1 and 1/1: backend 1 wins.
        assert_eq!((pool.active(0), pool.active(1)), (2, 1));
        assert_eq!(pick(&pool, 5).map(|l| l.index()), Some(1));
        // At weight 4, backend 0's 2 connections are a load of 1/2: it wins now.
        pool.set_weights(&[4, 1]).expect("two weights");
        assert_eq!(pick(&pool, 5).map(|l| l.index()), Some(0));
        // Drained, it is not even a fallback.
        pool.set_weights(&[0, 1]).expect("two weights");
        let tried: Vec<usize> = pool
            .select(PickKey { client: 0, random: 5 })
            .map(|l| l.index())
            .collect();
        assert_eq!(tried, [1]);
        drop(held);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn candidates_are_distinct_and_in_range(random: u64, n in 1usize..10_000) {
            let (first, second) = candidates(random, n);
            prop_assert!(first < n);
            match second {
                Some(second) => prop_assert!(second < n && second != first),
                None => prop_assert_eq!(n, 1),
            }
        }

        /// With two or more backends available, the pick is never strictly more loaded
        /// (active / weight) than every other available backend, under the weights in
        /// force, and never a drained one, through weight changes.
        #[test]
        fn never_picks_the_strictly_most_loaded(
            initial in prop::collection::vec(0..=WEIGHT_MAX, 2..=8),
            randoms in prop::collection::vec(any::<u64>(), 1..80),
            drops in prop::collection::vec(any::<usize>(), 80),
            changes in prop::collection::vec(
                prop::option::weighted(0.1, prop::collection::vec(prop_oneof![Just(0), 1..=WEIGHT_MAX], 8)),
                80,
            ),
        ) {
            let pool = Balancer::new(Algorithm::PowerOfTwo, &initial);
            let mut weights = initial.clone();
            let mut held: Vec<Lease> = Vec::new();
            for (step, random) in randoms.into_iter().enumerate() {
                if let Some(new) = &changes[step] {
                    weights = new[..initial.len()].to_vec();
                    prop_assert_eq!(pool.set_weights(&weights), Ok(()));
                }
                let available: Vec<usize> = (0..weights.len()).filter(|&i| weights[i] > 0).collect();
                let before: Vec<u64> = (0..weights.len()).map(|i| pool.active(i)).collect();
                let Some(lease) = pick(&pool, random) else {
                    prop_assert!(available.is_empty());
                    continue;
                };
                let p = lease.index();
                prop_assert!(weights[p] > 0, "picked drained {}", p);
                if available.len() >= 2 {
                    let strictly_most = available.iter().filter(|&&o| o != p).all(|&o| {
                        u128::from(before[p]) * u128::from(weights[o])
                            > u128::from(before[o]) * u128::from(weights[p])
                    });
                    prop_assert!(!strictly_most, "picked the strictly most loaded {}", p);
                }
                held.push(lease);
                // Drop one lease now and then so loads move both ways.
                if drops[step] % 3 == 0 {
                    held.swap_remove(drops[step] % held.len());
                }
            }
        }
    }
}
