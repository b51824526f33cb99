//! `least-connections`: the backend with the fewest active connections relative to its
//! weight.
//!
//! Load is `active / weight`, compared exactly by cross-multiplication (see
//! `load_cmp`), so 1/3 and 2/6 tie and 1/3 never ties with 1/2 through integer
//! division. Among equal loads the backend picked least recently goes first, so an idle
//! pool rotates instead of piling every short connection onto backend 0.
//!
//! The available backends live in a `BTreeSet` ordered by (load, last-picked sequence
//! number, backend index), behind a Mutex, with every backend's current key alongside
//! so it can be found and moved in O(log n). A pick takes the first entry and
//! re-inserts it with one more connection; a released lease re-inserts it with one
//! less. Both happen under the lock together with the update of the backend's active
//! counter, and the new key is computed from the value the counter held, so a pick and
//! its increment are one step: two workers picking at once get two different backends
//! when the loads say so, never the same "least loaded" one twice.
//!
//! Fallbacks are the least loaded backend not tried yet by this selection, chosen at
//! the moment of the retry (loads move between attempts). Finding it skips the entries
//! already tried that sort before it: at most one skip per earlier attempt, so bounded
//! by the number of retries the caller allows.
//!
//! # Changing weights
//!
//! [`Balancer::set_weights`](super::Balancer::set_weights) re-keys the set in place,
//! under the same lock: every backend's entry is taken out and, if its new weight is
//! above 0, put back with the new weight and the count its counter holds now. There is
//! only ever this one set, so no pick can read a stale copy of it. A drained backend
//! keeps its key outside the set (its leases still end and are counted out) and
//! rejoins with its current count when its weight comes back. Sequence numbers are
//! kept, so ties still go to the backend picked least recently.
//!
//! # Shared counters
//!
//! While a balancer's counters are its own, every change of a counter happens under
//! this lock, so every key is exact and the pick is never more loaded than another
//! available backend. With counters shared across a reload ([`Balancer::with_counters`](super::Balancer::with_counters)),
//! the other balancer's leases move a counter without touching this set, and that
//! backend's key is stale until this balancer next touches it. Three things bound the
//! damage:
//!
//! - a pick or a lease drop re-keys its backend from the value the counter returned;
//! - before taking the first entry, a pick re-reads its counter, and if the key is
//!   stale re-keys it and looks again, up to [`STALE_REKEYS_PER_PICK_MAX`] times, so a
//!   backend the other balancer has loaded up is not picked on its old count;
//! - each pick also re-reads one more backend's counter, sweeping the pool in index
//!   order, so a backend whose count fell (the old balancer's connections ending) is
//!   seen again within `n` picks even if nothing else touches it.
//!
//! Until then a pick can go to a backend that is more loaded than one whose old leases
//! have ended since. That is accepted: it lasts only while the old balancer's
//! connections drain, and every key heals within `n` picks of the last of them.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use super::{load_cmp, lock, ActiveCounter};

/// Stale entries a pick re-keys from their counters before it settles for the first
/// entry as it is. Bounds a pick's work when another balancer sharing the counters
/// keeps moving them; within one balancer no key is ever stale.
pub const STALE_REKEYS_PER_PICK_MAX: usize = 8;

/// The shared load order of one pool.
///
/// A plain Mutex: the critical section is two `BTreeSet` operations, and leases are
/// taken and released once per connection attempt, so contention stays low.
pub(super) struct LeastConn {
    state: Mutex<State>,
}

struct State {
    /// The available backends (weight > 0), least loaded first.
    order: BTreeSet<Load>,
    /// By backend index, every backend's current key: the one it sits under in
    /// `order` if its weight is above 0.
    loads: Vec<Load>,
    /// Next pick sequence number; starts after the initial ones (the indices).
    seq: u64,
    /// The backend whose counter the next pick re-reads.
    sweep: usize,
}

/// One backend's place in the load order.
#[derive(Clone, Copy, Debug)]
struct Load {
    active: u64,
    weight: u32,
    /// When the backend was last picked (higher = more recently).
    seq: u64,
    idx: usize,
}

impl Ord for Load {
    fn cmp(&self, other: &Self) -> Ordering {
        load_cmp(self.active, self.weight, other.active, other.weight)
            .then(self.seq.cmp(&other.seq))
            .then(self.idx.cmp(&other.idx))
    }
}

impl PartialOrd for Load {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

// Equality must agree with `cmp`: loads 1/2 and 2/4 are the same load.
impl PartialEq for Load {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Load {}

impl LeastConn {
    /// `weights` and `counters` by backend index; weight 0 = not in the order.
    pub(super) fn new(weights: &[u32], counters: &[Arc<ActiveCounter>]) -> LeastConn {
        // Initial sequence numbers are the indices, so an idle pool starts its
        // rotation at the lowest index.
        let loads: Vec<Load> = weights
            .iter()
            .zip(counters)
            .enumerate()
            .map(|(idx, (&weight, counter))| Load {
                active: counter.get(),
                weight,
                seq: idx as u64,
                idx,
            })
            .collect();
        LeastConn {
            state: Mutex::new(State {
                order: loads.iter().filter(|load| load.weight > 0).copied().collect(),
                seq: loads.len() as u64,
                loads,
                sweep: 0,
            }),
        }
    }

    /// Claims the least loaded available backend whose index is not in `tried`: counts
    /// it in on its counter and moves it one connection up, under the lock. `None`
    /// when every available backend has been tried.
    fn claim(&self, tried: &BTreeSet<usize>, counters: &[Arc<ActiveCounter>]) -> Option<usize> {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        state.sweep_one(counters);
        let mut rekeyed = 0;
        let least = loop {
            let least = *state.order.iter().find(|load| !tried.contains(&load.idx))?;
            let active = counters[least.idx].get();
            if active == least.active || rekeyed >= STALE_REKEYS_PER_PICK_MAX {
                break least;
            }
            // Another balancer sharing the counter moved it: look again on its real
            // count.
            state.rekey(Load { active, ..least });
            rekeyed += 1;
        };
        let before = counters[least.idx].claim();
        let claimed = Load {
            active: before + 1,
            seq: state.seq,
            ..least
        };
        state.seq += 1;
        state.rekey(claimed);
        Some(least.idx)
    }

    /// Counts a lease on backend `idx` out on its counter and moves the backend one
    /// connection down, under the lock. Its sequence number stays: releasing is not
    /// being picked.
    pub(super) fn release(&self, idx: usize, counters: &[Arc<ActiveCounter>]) {
        let mut state = lock(&self.state);
        let before = counters[idx].release();
        let current = state.loads[idx];
        state.rekey(Load {
            active: before.saturating_sub(1),
            ..current
        });
    }

    /// Applies new effective weights (by backend index): re-keys every backend in
    /// place with its new weight and current count. O(n log n), off the hot path.
    pub(super) fn reweigh(&self, weights: &[u32], counters: &[Arc<ActiveCounter>]) {
        let mut state = lock(&self.state);
        for (idx, (&weight, counter)) in weights.iter().zip(counters).enumerate() {
            let current = state.loads[idx];
            state.rekey(Load {
                active: counter.get(),
                weight,
                ..current
            });
        }
    }
}

impl State {
    /// Replaces the key of backend `new.idx` by `new`: out of `order` under the old
    /// key, back in under the new one if its weight is above 0.
    fn rekey(&mut self, new: Load) {
        let old = self.loads[new.idx];
        if old.weight > 0 {
            let removed = self.order.remove(&old);
            debug_assert!(removed, "backend {} missing from the load order", old.idx);
        }
        if new.weight > 0 {
            self.order.insert(new);
        }
        self.loads[new.idx] = new;
    }

    /// Re-reads the counter of the next backend in the sweep and re-keys it if another
    /// balancer moved it.
    fn sweep_one(&mut self, counters: &[Arc<ActiveCounter>]) {
        let Some(&current) = self.loads.get(self.sweep) else {
            return;
        };
        self.sweep = (self.sweep + 1) % self.loads.len();
        let active = counters[current.idx].get();
        if active != current.active {
            self.rekey(Load { active, ..current });
        }
    }
}

/// The backends one selection has tried so far.
#[derive(Debug, Default)]
pub(super) struct Walk {
    tried: BTreeSet<usize>,
}

impl Walk {
    pub(super) fn new() -> Walk {
        Walk::default()
    }

    /// Claims the next candidate: the least loaded available backend not tried yet.
    /// Returns its backend index.
    pub(super) fn next(&mut self, lc: &LeastConn, counters: &[Arc<ActiveCounter>]) -> Option<usize> {
        let idx = lc.claim(&self.tried, counters)?;
        self.tried.insert(idx);
        Some(idx)
    }
}

#[cfg(test)]
mod tests {
    use crate::balancer::{Algorithm, Balancer, Lease, PickKey, WEIGHT_MAX};
    use proptest::prelude::*;

    fn pick(pool: &Balancer) -> Lease {
        match pool.select(PickKey::default()).next() {
            Some(lease) => lease,
            None => panic!("no backend available"),
        }
    }

    #[test]
    fn idle_pool_rotates_on_ties() {
        let pool = Balancer::new(Algorithm::LeastConnections, &[1, 1, 1]);
        // Each connection finishes before the next starts: all loads are always 0, and
        // the tie goes to the backend picked least recently.
        let picks: Vec<usize> = (0..6).map(|_| pick(&pool).index()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn held_connections_spread_by_weight() {
        let pool = Balancer::new(Algorithm::LeastConnections, &[2, 1]);
        let held: Vec<Lease> = (0..6).map(|_| pick(&pool)).collect();
        let picks: Vec<usize> = held.iter().map(Lease::index).collect();
        // 0/2 vs 0/1 tie -> 0; 1/2 > 0/1 -> 1; 1/2 < 1/1 -> 0; 2/2 = 1/1, 1 waited
        // longer -> 1; 2/2 < 2/1 -> 0; 3/2 < 2/1 -> 0.
        assert_eq!(picks, [0, 1, 0, 1, 0, 0]);
        assert_eq!((pool.active(0), pool.active(1)), (4, 2));
    }

    #[test]
    fn released_connections_are_picked_again() {
        let pool = Balancer::new(Algorithm::LeastConnections, &[1, 1, 1]);
        let first = pick(&pool);
        let second = pick(&pool);
        let third = pick(&pool);
        assert_eq!([first.index(), second.index(), third.index()], [0, 1, 2]);
        drop(second);
        assert_eq!(pick(&pool).index(), 1);
    }

    #[test]
    fn drained_backends_never_appear() {
        let pool = Balancer::new(Algorithm::LeastConnections, &[0, 1, 0, 3]);
        let held: Vec<Lease> = (0..8).map(|_| pick(&pool)).collect();
        assert!(held.iter().all(|lease| lease.index() == 1 || lease.index() == 3));
        assert_eq!((pool.active(1), pool.active(3)), (2, 6));
    }

    #[test]
    fn fallbacks_are_the_least_loaded_untried() {
        let pool = Balancer::new(Algorithm::LeastConnections, &[1, 1, 1]);
        let held = [pick(&pool), pick(&pool), pick(&pool), pick(&pool)];
        let [_, on_1, on_2, on_0] = held;
        assert_eq!([on_1.index(), on_2.index(), on_0.index()], [1, 2, 0]);
        drop(on_1);
        assert_eq!((pool.active(0), pool.active(1), pool.active(2)), (2, 0, 1));
        // Backend 1 is least loaded; when it fails, 2 (load 1) before 0 (load 2).
        // The failed attempts' leases are dropped before each retry, as a caller would.
        let tried: Vec<usize> = pool.select(PickKey::default()).map(|lease| lease.index()).collect();
        assert_eq!(tried, [1, 2, 0]);
        assert_eq!((pool.active(0), pool.active(1), pool.active(2)), (2, 0, 1));
    }

    #[test]
    fn a_change_rekeys_the_held_load() {
        let pool = Balancer::new(Algorithm::LeastConnections, &[1, 1]);
        let mut held: Vec<Lease> = (0..4).map(|_| pick(&pool)).collect();
        assert_eq!((pool.active(0), pool.active(1)), (2, 2));
        pool.set_weights(&[3, 1]).expect("two weights");
        // 2/3 against 2/1: backend 0 until 6/3 ties 2/1, then 1 (picked longer ago).
        let next: Vec<usize> = (0..5)
            .map(|_| {
                let lease = pick(&pool);
                let idx = lease.index();
                held.push(lease);
                idx
            })
            .collect();
        assert_eq!(next, [0, 0, 0, 0, 1]);
    }

    #[test]
    fn a_drained_backend_rejoins_with_its_current_count() {
        let pool = Balancer::new(Algorithm::LeastConnections, &[1, 1, 1]);
        let held = [pick(&pool), pick(&pool), pick(&pool), pick(&pool)];
        let [on_0, on_1, on_2, again_on_0] = held;
        assert_eq!(
            [on_0.index(), on_1.index(), on_2.index(), again_on_0.index()],
            [0, 1, 2, 0]
        );
        pool.set_weights(&[1, 0, 1]).expect("three weights");
        // Its leases still end while it is drained; the others are 2 and 1.
        drop(on_1);
        assert_eq!(pool.active(1), 0);
        let again_on_2 = pick(&pool);
        assert_eq!(again_on_2.index(), 2);
        // Back at count 0, below the others' 2 and 2.
        pool.set_weights(&[1, 1, 1]).expect("three weights");
        assert_eq!(pick(&pool).index(), 1);
        drop((on_0, on_2, again_on_0, again_on_2));
        assert_eq!(pool.total_active(), 0);
    }

    #[test]
    fn a_pick_rereads_a_count_another_balancer_raised() {
        let old = Balancer::new(Algorithm::LeastConnections, &[1, 1]);
        let on_0 = pick(&old);
        let new = Balancer::with_counters(
            Algorithm::LeastConnections,
            &[1, 1],
            old.counters().into_iter().map(Some).collect(),
        );
        // The old balancer keeps picking for a while after the reload, all on 1.
        old.set_weights(&[0, 1]).expect("two weights");
        let on_1: Vec<Lease> = (0..3).map(|_| pick(&old)).collect();
        assert_eq!((new.active(0), new.active(1)), (1, 3));
        // The new set still has backend 1 at 0 connections; the pick re-reads it.
        assert_eq!(pick(&new).index(), 0);
        drop((on_0, on_1));
    }

    #[test]
    fn a_count_another_balancer_lowered_is_seen_within_n_picks() {
        let old = Balancer::new(Algorithm::LeastConnections, &[1, 1, 1]);
        let held: Vec<Lease> = (0..6).map(|_| pick(&old)).collect();
        let new = Balancer::with_counters(
            Algorithm::LeastConnections,
            &[1, 1, 1],
            old.counters().into_iter().map(Some).collect(),
        );
        let mut on_new: Vec<Lease> = (0..3).map(|_| pick(&new)).collect();
        assert_eq!((new.active(0), new.active(1), new.active(2)), (3, 3, 3));
        // The old connections end; the new set has not touched any backend since.
        drop(held);
        // Within n = 3 picks the sweep has re-read every counter, so the picks spread
        // over the real counts (1, 1, 1) instead of the stale ones.
        on_new.extend((0..3).map(|_| pick(&new)));
        assert_eq!((new.active(0), new.active(1), new.active(2)), (2, 2, 2));
        drop(on_new);
        assert_eq!(new.total_active() + old.total_active(), 0);
    }

    #[derive(Clone, Debug)]
    enum Step {
        Pick,
        Drop(usize),
        /// New effective weights (the first `len()` are used).
        Reweigh(Vec<u32>),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => Just(Step::Pick),
            2 => any::<usize>().prop_map(Step::Drop),
            1 => prop::collection::vec(prop_oneof![Just(0), 1..=WEIGHT_MAX], 8).prop_map(Step::Reweigh),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// No pick has a higher active/weight than any other available backend had at
        /// the moment of the pick, under the weights in force, through weight changes.
        #[test]
        fn never_picks_a_more_loaded_backend(
            initial in prop::collection::vec(0..=WEIGHT_MAX, 1..=8),
            steps in prop::collection::vec(step(), 0..120),
        ) {
            let pool = Balancer::new(Algorithm::LeastConnections, &initial);
            let mut weights = initial.clone();
            let mut held: Vec<Lease> = Vec::new();
            for step in steps {
                let available: Vec<usize> = (0..weights.len()).filter(|&i| weights[i] > 0).collect();
                match step {
                    Step::Pick => {
                        let before: Vec<u64> = (0..weights.len()).map(|i| pool.active(i)).collect();
                        let Some(lease) = pool.select(PickKey::default()).next() else {
                            prop_assert!(available.is_empty());
                            continue;
                        };
                        let p = lease.index();
                        prop_assert!(weights[p] > 0, "picked drained {}", p);
                        for &other in &available {
                            // before[p] / w[p] <= before[other] / w[other]
                            prop_assert!(
                                u128::from(before[p]) * u128::from(weights[other])
                                    <= u128::from(before[other]) * u128::from(weights[p]),
                                "picked {} at {}/{} over {} at {}/{}",
                                p, before[p], weights[p], other, before[other], weights[other]
                            );
                        }
                        held.push(lease);
                    }
                    Step::Drop(which) => {
                        if !held.is_empty() {
                            held.swap_remove(which % held.len());
                        }
                    }
                    Step::Reweigh(new) => {
                        weights = new[..initial.len()].to_vec();
                        prop_assert_eq!(pool.set_weights(&weights), Ok(()));
                    }
                }
            }
            held.clear();
            prop_assert_eq!(pool.total_active(), 0);
        }
    }
}
