//! `weighted`: smooth weighted round robin with a per-prefix guarantee.
//!
//! Backend `i` with weight `w_i` out of a total `W` gets share `w_i / W`, and not in
//! bursts: for **every** prefix of the pick sequence, of any length `N`, every backend's
//! count is within one pick of its ideal share:
//!
//! ```text
//! |count_i(N) - N * w_i / W| < 1
//! ```
//!
//! # Why a Pfair schedule and not nginx's smooth WRR
//!
//! nginx's smooth weighted round robin has the same goal (interleaved, not bursty) but
//! scans every backend on every pick (O(n)), and its fairness is argued by example
//! rather than bounded per prefix. Here picking is treated as scheduling unit jobs on
//! one processor, which has a proven answer (Baruah, Cohen, Plaxton and Varvel,
//! "Proportionate progress", 1996; Anderson and Srinivasan's Pfair windows): the k-th
//! pick (k = 1, 2, ...) of backend `i` is a job with
//!
//! ```text
//! release  r = floor((k - 1) * W / w_i)      deadline  d = ceil(k * W / w_i)
//! ```
//!
//! and slot `t` (the t-th pick overall, from 0) goes to the released job (`r <= t`)
//! with the earliest deadline; ties go to the job released first (it has waited
//! longest, which spreads a heavy backend's picks out), then to the lower index. The shares sum to exactly 1, so
//! a schedule meeting every window exists, and earliest-deadline-first on one processor
//! finds one whenever one exists. A job done inside its window `[r, d)` is exactly the
//! bound above: after `N` slots every job with `d <= N` is done and none with `r >= N`
//! has started, so `floor(N w_i / W) <= count_i(N) <= ceil(N w_i / W)`.
//!
//! Each backend has one job queued at a time, in one of two binary heaps: pending (by
//! release) or ready (by deadline). A pick moves the jobs released by now from pending
//! to ready, pops the earliest deadline, and queues that backend's next job: O(log n)
//! amortized, because every job enters and leaves each heap once and there is one job
//! per pick. (A single pick can release several jobs at once, e.g. equal weights
//! release everyone's next job on the same slot; the total never exceeds one move per
//! pick.)
//!
//! The schedule repeats with period `W`: backend `i`'s `w_i`-th job has deadline
//! exactly `W` and its next release is `W`. So slots are counted modulo `W`, which
//! keeps every number below `W <= EFFECTIVE_WEIGHT_MAX * n`; the first job of the next period is
//! parked in a third heap, which becomes the ready heap when the period ends (all
//! jobs of the period are done by then, since all their deadlines are `<= W`).
//!
//! For weights `[5, 1, 1]` one period is `0 0 0 1 0 2 0`: EDF runs a heavy backend
//! ahead of its ideal share while it may (up to, never beyond, one pick). The schedule
//! is also the turn order in which Maglev's table is filled (see `consistent_hash`).
//!
//! Fallbacks are the backends after the pick in index rotation: a retry is not a new
//! slot of the schedule, so it does not disturb the shares of other connections.
//!
//! # Precomputed periods
//!
//! Weights change rarely (health checks, slow start) and picks happen on every
//! connection, so when the period is short the schedule is not run per pick at all:
//! `Table` runs it once, at build time, for one whole period and stores the position
//! picked at every slot, and a pick takes a ticket from an atomic counter and reads
//! slot `ticket mod period`, with no lock (like `round-robin`). The weights are first
//! divided by their greatest common divisor `g`: scaling every weight by `g` scales `W`
//! by `g` and leaves every window `[r, d)` of the first `W / g` slots as it is (`W / w_i`
//! does not change), and the jobs of the next `W / g` slots are the same windows moved
//! by `W / g`, so the schedule of the scaled weights is the reduced one repeated `g`
//! times. The sequence of picks is therefore exactly the one the heaps would produce,
//! slot for slot, and the per-prefix bound is the same. The ticket lives in the plan,
//! so a new plan starts at slot 0, as the heaps do after a change.
//!
//! A table is built when the reduced period is at most [`TABLE_SLOTS_MAX`] (1 MiB of
//! positions); it costs O(period log n) at [`Balancer::set_weights`](super::Balancer::set_weights),
//! off the hot path, while picks go on with the previous plan: measured in a release
//! build with weights 1 to 4, 0.3 ms at 1,000 backends, 3 ms at 10,000 and 43 ms at
//! 100,000 (period 250,000). Longer periods (weights with no common factor during a slow-start
//! ramp, or very many backends) use the heaps under the Mutex, as described above.
//!
//! # Changing weights
//!
//! [`Balancer::set_weights`](super::Balancer::set_weights) restarts the schedule with
//! the new weights, from slot 0 of a new period, under the same lock. The bound above
//! then holds for every prefix of the picks counted from the change. (Carrying the old
//! schedule's progress over would not help: the old jobs' windows were computed for
//! the old shares, and under a slow-start ramp the weights change again before a
//! period ends anyway.)

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::round_robin::{position, Rotation};
use super::{lock, Plan};

/// Longest (reduced) period that is precomputed into a `Table`: 262,144 slots, 1 MiB.
/// Covers equal weights up to 262,144 backends, and weights 1 to 4 up to 100,000.
pub const TABLE_SLOTS_MAX: usize = 1 << 18;

/// One period of the Pfair schedule, precomputed: a pick is one atomic ticket and one
/// read. Immutable but for the ticket; lives in the plan it was built from.
pub(super) struct Table {
    /// The position picked at each slot of the reduced period.
    slots: Vec<u32>,
    /// The next slot to fill, counted from this plan's publication (wraps after 2^64
    /// picks; the sequence then skips at most one period's remainder once).
    ticket: AtomicU64,
}

impl Table {
    /// The table for positive `weights` (by position), or `None` when there are none or
    /// the reduced period is longer than [`TABLE_SLOTS_MAX`].
    pub(super) fn new(weights: &[u32]) -> Option<Table> {
        let divisor = weights.iter().fold(0, |g, &w| gcd(g, w));
        if divisor == 0 || u32::try_from(weights.len()).is_err() {
            return None;
        }
        let reduced: Vec<u32> = weights.iter().map(|&w| w / divisor).collect();
        let period: u64 = reduced.iter().map(|&w| u64::from(w)).sum();
        if period > TABLE_SLOTS_MAX as u64 {
            return None;
        }
        let mut schedule = Schedule::new(&reduced);
        // Positions fit in u32 (checked above); the schedule never idles a slot.
        let slots: Vec<u32> = (0..period)
            .map_while(|_| schedule.pick().map(|pos| pos as u32))
            .collect();
        (slots.len() as u64 == period).then(|| Table {
            slots,
            ticket: AtomicU64::new(0),
        })
    }

    /// Takes the next slot; returns its position. Relaxed: the ticket only has to be
    /// unique, as round-robin's.
    fn pick(&self) -> usize {
        let ticket = self.ticket.fetch_add(1, Ordering::Relaxed);
        self.slots[position(ticket, self.slots.len())] as usize
    }

    /// The table's period (reduced), for tests.
    #[cfg(test)]
    fn period(&self) -> usize {
        self.slots.len()
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The shared schedule of one pool.
///
/// Behind a plain Mutex: the critical section is a few heap operations, far shorter
/// than anything else done per connection, so the lock is uncontended in practice.
pub(super) struct Weighted {
    turns: Mutex<Turns>,
}

/// A schedule and the plan it was built from: its tasks are positions in that plan's
/// available list, so the two are only ever replaced together. No schedule when the
/// plan has a [`Table`]: picks on that plan use the table.
struct Turns {
    schedule: Option<Schedule>,
    plan: Arc<Plan>,
}

impl Turns {
    fn new(plan: Arc<Plan>) -> Turns {
        let schedule = plan
            .weighted
            .is_none()
            .then(|| Schedule::new(&plan.available_weights()));
        Turns { schedule, plan }
    }
}

impl Weighted {
    pub(super) fn new(plan: Arc<Plan>) -> Weighted {
        Weighted {
            turns: Mutex::new(Turns::new(plan)),
        }
    }

    /// The pick on `plan` (the current one) when it has a table: no lock. `None` when
    /// it has none or no backend is available; then [`Weighted::start`] picks.
    #[inline]
    pub(super) fn start_lock_free(plan: &Plan) -> Option<Rotation> {
        let table = plan.weighted.as_ref()?;
        Some(Rotation::new(table.pick(), plan.available.len()))
    }

    /// Takes the next slot and returns the rotation starting at its backend, with the
    /// plan its positions refer to; `None` when no backend is available. (Reached for
    /// a plan with a table only in the moment between its publication and
    /// [`Weighted::replan`]; the table of the plan held here then serves.)
    pub(super) fn start(&self) -> Option<(Rotation, Arc<Plan>)> {
        let mut turns = lock(&self.turns);
        let turns = &mut *turns;
        let pos = match (&mut turns.schedule, &turns.plan.weighted) {
            (Some(schedule), _) => schedule.pick()?,
            (None, Some(table)) => table.pick(),
            (None, None) => return None,
        };
        let rotation = Rotation::new(pos, turns.plan.available.len());
        Some((rotation, Arc::clone(&turns.plan)))
    }

    /// Restarts the schedule on a new plan: the next pick is slot 0 of the new
    /// weights' period. The schedule is built before the lock is taken and the old one
    /// freed after it is released, so picks wait only for the swap.
    pub(super) fn replan(&self, plan: Arc<Plan>) {
        let fresh = Turns::new(plan);
        let previous = std::mem::replace(&mut *lock(&self.turns), fresh);
        drop(previous);
    }
}

/// A Pfair earliest-deadline-first schedule over positive weights.
pub(super) struct Schedule {
    weights: Vec<u64>,
    /// Sum of weights: the period.
    total: u64,
    /// The next slot to fill, in `0..total`.
    slot: u64,
    /// By task: which job (1-based, `1..=weight`) of the current period is queued.
    job: Vec<u64>,
    /// Released jobs: (deadline, release, task), earliest deadline, then earliest
    /// release, then lowest task first.
    ready: BinaryHeap<Reverse<(u64, u64, usize)>>,
    /// Jobs not yet released: (release, deadline, task).
    pending: BinaryHeap<Reverse<(u64, u64, usize)>>,
    /// First jobs of the next period, as they will sit in `ready` (release 0).
    next_period: BinaryHeap<Reverse<(u64, u64, usize)>>,
}

impl Schedule {
    /// `weights` by task; all must be > 0 (zero weights have no jobs and would divide by
    /// zero, so they are filtered before they get here).
    pub(super) fn new(weights: &[u32]) -> Schedule {
        debug_assert!(weights.iter().all(|&w| w > 0));
        let weights: Vec<u64> = weights.iter().map(|&w| u64::from(w.max(1))).collect();
        let total = weights.iter().sum();
        let mut schedule = Schedule {
            job: vec![1; weights.len()],
            ready: BinaryHeap::with_capacity(weights.len()),
            pending: BinaryHeap::with_capacity(weights.len()),
            next_period: BinaryHeap::with_capacity(weights.len()),
            weights,
            total,
            slot: 0,
        };
        // Every first job is released at slot 0.
        let first_jobs: Vec<Reverse<(u64, u64, usize)>> = (0..schedule.weights.len())
            .map(|task| Reverse((schedule.deadline(task, 1), 0, task)))
            .collect();
        schedule.ready = BinaryHeap::from(first_jobs);
        schedule
    }

    /// `ceil(k * W / w)`, the deadline of job `k` of `task`. At most `W`.
    fn deadline(&self, task: usize, k: u64) -> u64 {
        let w = u128::from(self.weights[task]);
        let numerator = u128::from(k) * u128::from(self.total);
        // k <= w, so the quotient is <= W and fits back into u64.
        numerator.div_ceil(w) as u64
    }

    /// `floor((k - 1) * W / w)`, the release of job `k` of `task`. Below `W`.
    fn release(&self, task: usize, k: u64) -> u64 {
        let w = u128::from(self.weights[task]);
        (u128::from(k - 1) * u128::from(self.total) / w) as u64
    }

    /// Fills the next slot; returns the task picked, or `None` if there are no tasks.
    pub(super) fn pick(&mut self) -> Option<usize> {
        while let Some(&Reverse((release, deadline, task))) = self.pending.peek() {
            if release > self.slot {
                break;
            }
            self.pending.pop();
            self.ready.push(Reverse((deadline, release, task)));
        }
        let task = match self.ready.pop() {
            Some(Reverse((_, _, task))) => task,
            // Unreachable: the shares sum to 1, so EDF never idles a slot. Taking the
            // earliest pending job keeps the pool serving if that ever broke.
            None => {
                debug_assert!(self.total == 0, "Pfair schedule idled at slot {}", self.slot);
                let Reverse((_, _, task)) = self.pending.pop()?;
                task
            }
        };

        let k = self.job[task] + 1;
        if k > self.weights[task] {
            self.job[task] = 1;
            let deadline = self.deadline(task, 1);
            self.next_period.push(Reverse((deadline, 0, task)));
        } else {
            self.job[task] = k;
            let job = (self.release(task, k), self.deadline(task, k), task);
            self.pending.push(Reverse(job));
        }

        self.slot += 1;
        if self.slot == self.total {
            // Every job of the period met its deadline (all are <= W), so nothing is
            // left but the next period's first jobs; appending onto the empty heap is a
            // swap, not a rebuild.
            debug_assert!(self.ready.is_empty() && self.pending.is_empty());
            self.slot = 0;
            self.ready.append(&mut self.next_period);
        }
        Some(task)
    }
}

#[cfg(test)]
mod tests {
    use super::{Schedule, Table, TABLE_SLOTS_MAX};
    use crate::balancer::{picks, Algorithm, Balancer, PickKey, EFFECTIVE_WEIGHT_MAX, WEIGHT_MAX};
    use proptest::prelude::*;

    /// Weights whose period has no common factor and is longer than a table holds.
    fn long_period() -> Vec<u32> {
        let mut weights = vec![EFFECTIVE_WEIGHT_MAX; 17];
        weights.push(EFFECTIVE_WEIGHT_MAX - 1);
        weights
    }

    #[test]
    fn long_periods_use_the_heaps_and_the_same_schedule() {
        let weights = long_period();
        let period: usize = weights.iter().map(|&w| w as usize).sum();
        assert!(period > TABLE_SLOTS_MAX);
        assert!(Table::new(&weights).is_none());
        let pool = Balancer::new(Algorithm::Weighted, &weights);
        assert!(pool.inner.plan.load().weighted.is_none());
        let mut schedule = Schedule::new(&weights);
        let expected: Vec<usize> = (0..3_000).filter_map(|_| schedule.pick()).collect();
        assert_eq!(picks(&pool, 3_000), expected);
        // To a short period (a table) and back: each change restarts at slot 0.
        pool.set_weights(&vec![2; weights.len()]).expect("same length");
        assert!(pool.inner.plan.load().weighted.is_some());
        assert_eq!(picks(&pool, 20), (0..20).map(|k| k % 18).collect::<Vec<_>>());
        pool.set_weights(&weights).expect("same length");
        assert_eq!(picks(&pool, 3_000), expected);
    }

    #[test]
    fn five_one_one_interleaves() {
        let pool = Balancer::new(Algorithm::Weighted, &[5, 1, 1]);
        // Two periods: the schedule repeats every W = 7 picks.
        assert_eq!(picks(&pool, 14), [0, 0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0]);
    }

    #[test]
    fn equal_weights_are_plain_rotation() {
        let pool = Balancer::new(Algorithm::Weighted, &[3, 3, 3]);
        assert_eq!(picks(&pool, 9), [0, 1, 2, 0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn two_to_one_alternates() {
        let pool = Balancer::new(Algorithm::Weighted, &[2, 1]);
        assert_eq!(picks(&pool, 6), [0, 1, 0, 0, 1, 0]);
    }

    #[test]
    fn drained_backends_never_appear() {
        let pool = Balancer::new(Algorithm::Weighted, &[0, 3, 0, 1, 0]);
        assert_eq!(picks(&pool, 8), [1, 1, 3, 1, 1, 1, 3, 1]);
    }

    #[test]
    fn weights_above_the_limit_count_as_the_limit() {
        let clamped = Balancer::new(Algorithm::Weighted, &[EFFECTIVE_WEIGHT_MAX * 4, 1]);
        let exact = Balancer::new(Algorithm::Weighted, &[EFFECTIVE_WEIGHT_MAX, 1]);
        let period = EFFECTIVE_WEIGHT_MAX as usize + 1;
        assert_eq!(picks(&clamped, 2 * period), picks(&exact, 2 * period));
    }

    #[test]
    fn fallbacks_follow_the_pick_in_index_rotation() {
        let pool = Balancer::new(Algorithm::Weighted, &[1, 2, 0, 1]);
        // Slot 0 goes to backend 1 (earliest deadline), then 3 and wrap to 0.
        let tried: Vec<usize> = pool.select(PickKey::default()).map(|lease| lease.index()).collect();
        assert_eq!(tried, [1, 3, 0]);
    }

    #[test]
    fn no_tasks_no_picks() {
        assert_eq!(Schedule::new(&[]).pick(), None);
        assert!(picks(&Balancer::new(Algorithm::Weighted, &[0, 0]), 3).is_empty());
    }

    #[test]
    fn a_change_restarts_the_schedule() {
        let pool = Balancer::new(Algorithm::Weighted, &[5, 1, 1]);
        assert_eq!(picks(&pool, 3), [0, 0, 0]);
        pool.set_weights(&[1, 1, 1]).expect("three weights");
        assert_eq!(picks(&pool, 6), [0, 1, 2, 0, 1, 2]);
        // Slow start of backend 2: 1, then 2, against 4 and 4.
        pool.set_weights(&[4, 4, 1]).expect("three weights");
        assert_eq!(picks(&pool, 9), [0, 1, 0, 1, 0, 1, 2, 0, 1]);
        pool.set_weights(&[4, 4, 2]).expect("three weights");
        assert_eq!(picks(&pool, 10), [0, 1, 2, 0, 1, 0, 1, 2, 0, 1]);
        pool.set_weights(&[0, 0, 0]).expect("three weights");
        assert!(picks(&pool, 2).is_empty());
    }

    #[test]
    fn the_same_weights_do_not_restart_the_schedule() {
        let pool = Balancer::new(Algorithm::Weighted, &[2, 1]);
        assert_eq!(picks(&pool, 1), [0]);
        pool.set_weights(&[2, 1]).expect("two weights");
        assert_eq!(picks(&pool, 5), [1, 0, 0, 1, 0]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// The precomputed table is the heap schedule slot for slot, also for weights
        /// with a common factor (the table then holds the reduced period, repeated).
        #[test]
        fn the_table_is_the_schedule(
            weights in prop::collection::vec(1..=WEIGHT_MAX, 1..=8),
            factor in 1u32..=8,
        ) {
            let scaled: Vec<u32> = weights.iter().map(|&w| w * factor).collect();
            let period: usize = scaled.iter().map(|&w| w as usize).sum();
            let Some(table) = Table::new(&scaled) else {
                return Err(TestCaseError::fail("short periods get a table"));
            };
            prop_assert_eq!(period % table.period(), 0);
            let mut schedule = Schedule::new(&scaled);
            for slot in 0..period {
                prop_assert_eq!(Some(table.slots[slot % table.period()] as usize), schedule.pick(), "slot {}", slot);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// After a change, every prefix of the picks counted from the change stays
        /// strictly within one pick of every backend's ideal share under the new
        /// weights, whatever the schedule had done before it.
        #[test]
        fn every_prefix_from_a_change_within_one_pick(
            before in prop::collection::vec(0..=WEIGHT_MAX, 1..=8),
            after in prop::collection::vec(prop_oneof![Just(0), 1..=WEIGHT_MAX], 8),
            picked_before in 0usize..300,
        ) {
            let after = &after[..before.len()];
            let pool = Balancer::new(Algorithm::Weighted, &before);
            picks(&pool, picked_before);
            pool.set_weights(after).expect("same length");
            let total: u64 = after.iter().map(|&w| u64::from(w)).sum();
            let sequence = picks(&pool, 2 * total as usize);
            prop_assert_eq!(sequence.len(), 2 * total as usize);
            let mut counts = vec![0u64; after.len()];
            for (n, &pick) in sequence.iter().enumerate() {
                prop_assert!(after[pick] > 0, "drained backend {} picked", pick);
                counts[pick] += 1;
                let slots = n as u64 + 1;
                for (i, &w) in after.iter().enumerate() {
                    let have = i128::from(counts[i]) * i128::from(total);
                    let ideal = i128::from(slots) * i128::from(w);
                    prop_assert!((have - ideal).abs() < i128::from(total));
                }
            }
        }

        /// Every prefix of three periods stays strictly within one pick of every
        /// backend's ideal share, and drained backends never appear.
        #[test]
        fn every_prefix_within_one_pick(
            weights in prop::collection::vec(0..=WEIGHT_MAX, 1..=8),
        ) {
            let pool = Balancer::new(Algorithm::Weighted, &weights);
            let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            let sequence = picks(&pool, 3 * total as usize);
            let mut counts = vec![0u64; weights.len()];
            for (n, &pick) in sequence.iter().enumerate() {
                prop_assert!(weights[pick] > 0, "drained backend {} picked", pick);
                counts[pick] += 1;
                let slots = n as u64 + 1;
                for (i, &w) in weights.iter().enumerate() {
                    // |count - N w / W| < 1, multiplied through by W.
                    let have = i128::from(counts[i]) * i128::from(total);
                    let ideal = i128::from(slots) * i128::from(w);
                    prop_assert!(
                        (have - ideal).abs() < i128::from(total),
                        "backend {} has {} picks after {} slots, ideal {}/{}",
                        i, counts[i], slots, ideal, total
                    );
                }
            }
        }
    }
}
