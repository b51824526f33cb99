//! `least-connections`: the backend with the fewest active connections relative to its
//! weight.
//!
//! Load is `active / weight`, compared exactly by cross-multiplication (see
//! `load_cmp`), so 1/3 and 2/6 tie and 1/3 never ties with 1/2 through integer
//! division. Among equal loads the backend picked least recently goes first, so an idle
//! pool rotates instead of piling every short connection onto backend 0.
//!
//! The backends live in a `BTreeSet` ordered by (load, last-picked sequence number,
//! position), behind a Mutex, with each backend's current key alongside so it can be
//! found and moved in O(log n). A pick takes the first entry and re-inserts it with one
//! more connection; a released lease re-inserts it with one less. Both happen under the
//! lock together with the update of the shared active counters, so a pick and its
//! increment are one step: two workers picking at once get two different backends when
//! the loads say so, never the same "least loaded" one twice.
//!
//! Fallbacks are the least loaded backend not tried yet by this selection, chosen at
//! the moment of the retry (loads move between attempts). Finding it skips the entries
//! already tried that sort before it: at most one skip per earlier attempt, so bounded
//! by the number of retries the caller allows.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::Mutex;

use super::{load_cmp, lock};

/// The shared load order of one pool.
///
/// A plain Mutex: the critical section is two `BTreeSet` operations, and leases are
/// taken and released once per connection attempt, so contention stays low.
pub(super) struct LeastConn {
    state: Mutex<State>,
}

struct State {
    order: BTreeSet<Load>,
    /// By position: the key under which each backend currently sits in `order`.
    loads: Vec<Load>,
    /// Next pick sequence number; starts after the initial ones (the positions).
    seq: u64,
}

/// One backend's place in the load order.
#[derive(Clone, Copy, Debug)]
struct Load {
    active: u64,
    weight: u32,
    /// When the backend was last picked (higher = more recently).
    seq: u64,
    pos: usize,
}

impl Ord for Load {
    fn cmp(&self, other: &Self) -> Ordering {
        load_cmp(self.active, self.weight, other.active, other.weight)
            .then(self.seq.cmp(&other.seq))
            .then(self.pos.cmp(&other.pos))
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
    /// `weights` by position in the available list; all > 0.
    pub(super) fn new(weights: &[u32]) -> LeastConn {
        // Initial sequence numbers are the positions, so an idle pool starts its
        // rotation at the lowest index.
        let loads: Vec<Load> = weights
            .iter()
            .enumerate()
            .map(|(pos, &weight)| Load {
                active: 0,
                weight,
                seq: pos as u64,
                pos,
            })
            .collect();
        LeastConn {
            state: Mutex::new(State {
                order: loads.iter().copied().collect(),
                seq: loads.len() as u64,
                loads,
            }),
        }
    }

    /// Claims the least loaded backend whose position is not in `tried`: moves it one
    /// connection up and calls `count(pos)` under the lock. `None` when every backend
    /// has been tried.
    fn claim(&self, tried: &BTreeSet<usize>, count: impl FnOnce(usize)) -> Option<usize> {
        let mut state = lock(&self.state);
        let least = *state.order.iter().find(|load| !tried.contains(&load.pos))?;
        state.order.remove(&least);
        let claimed = Load {
            active: least.active + 1,
            seq: state.seq,
            ..least
        };
        state.seq += 1;
        state.order.insert(claimed);
        state.loads[least.pos] = claimed;
        count(least.pos);
        Some(least.pos)
    }

    /// Moves the backend at `pos` one connection down and calls `uncount()` under the
    /// lock. Its sequence number stays: releasing is not being picked.
    pub(super) fn release(&self, pos: usize, uncount: impl FnOnce()) {
        let mut state = lock(&self.state);
        let current = state.loads[pos];
        debug_assert!(current.active > 0, "lease released twice");
        state.order.remove(&current);
        let released = Load {
            active: current.active.saturating_sub(1),
            ..current
        };
        state.order.insert(released);
        state.loads[pos] = released;
        uncount();
    }
}

/// The positions one selection has tried so far.
#[derive(Debug, Default)]
pub(super) struct Walk {
    tried: BTreeSet<usize>,
}

impl Walk {
    pub(super) fn new() -> Walk {
        Walk::default()
    }

    /// Claims the next candidate: the least loaded backend not tried yet.
    pub(super) fn next(&mut self, lc: &LeastConn, count: impl FnOnce(usize)) -> Option<usize> {
        let pos = lc.claim(&self.tried, count)?;
        self.tried.insert(pos);
        Some(pos)
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

    #[derive(Clone, Debug)]
    enum Step {
        Pick,
        Drop(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![2 => Just(Step::Pick), 1 => any::<usize>().prop_map(Step::Drop)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// No pick has a higher active/weight than any other available backend had at
        /// the moment of the pick.
        #[test]
        fn never_picks_a_more_loaded_backend(
            weights in prop::collection::vec(0..=WEIGHT_MAX, 1..=8),
            steps in prop::collection::vec(step(), 0..120),
        ) {
            let pool = Balancer::new(Algorithm::LeastConnections, &weights);
            let available: Vec<usize> = (0..weights.len()).filter(|&i| weights[i] > 0).collect();
            let mut held: Vec<Lease> = Vec::new();
            for step in steps {
                match step {
                    Step::Pick => {
                        let before: Vec<u64> = (0..weights.len()).map(|i| pool.active(i)).collect();
                        let Some(lease) = pool.select(PickKey::default()).next() else {
                            prop_assert!(available.is_empty());
                            continue;
                        };
                        let p = lease.index();
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
                }
            }
        }
    }
}
