//! `round-robin`: exact rotation over the available backends.
//!
//! Weights only decide availability (0 = drained); otherwise every available backend
//! gets the same share, in index order, and across all worker threads together the
//! picks are an exact rotation: one shared ticket counter, pick = `available[ticket % n]`.
//!
//! Each selection takes **one** ticket, and its fallbacks are the backends that follow
//! the pick in rotation order. Taking a fresh ticket per retry would look equivalent but
//! is not: between two retries of one connection, other connections advance the ticket,
//! so the retry can land right back on the backend that just failed.
//!
//! `Rotation` (the pick and its followers) is also the fallback order of `weighted`.
//!
//! # Changing weights
//!
//! After [`Balancer::set_weights`](super::Balancer::set_weights) the rotation is over the
//! backends whose new weight is above 0, in index order. The ticket counter carries on,
//! so the rotation continues from ticket `t` at `available[t % n]` of the new list
//! rather than restarting at the lowest index: a pool whose availability flaps does not
//! send an extra share to backend 0 at every change. The list lives in the balancer's
//! swapped plan, so a pick takes one ticket and loads the plan, and no lock.

use std::sync::atomic::{AtomicU64, Ordering};

/// The shared ticket counter of one pool.
pub(super) struct RoundRobin {
    ticket: AtomicU64,
}

impl RoundRobin {
    pub(super) fn new() -> RoundRobin {
        RoundRobin {
            ticket: AtomicU64::new(0),
        }
    }

    /// Takes one ticket and returns the rotation it starts; `n` (> 0) is the number of
    /// available backends.
    ///
    /// Relaxed is enough: the ticket only has to be unique, it orders nothing else. The
    /// counter wraps after 2^64 picks (centuries at any real rate); the rotation then
    /// skips at most one step once.
    pub(super) fn start(&self, n: usize) -> Rotation {
        let ticket = self.ticket.fetch_add(1, Ordering::Relaxed);
        Rotation::new(position(ticket, n), n)
    }
}

/// `value % n` as a position; `n` > 0.
pub(super) fn position(value: u64, n: usize) -> usize {
    // n fits in u64 on every supported target, and the remainder is < n, so both
    // conversions are lossless.
    (value % n as u64) as usize
}

/// Positions `start, start + 1, ..., start + n - 1` (mod `n`): every position exactly
/// once, beginning at `start`.
#[derive(Clone, Debug)]
pub(super) struct Rotation {
    start: usize,
    step: usize,
    n: usize,
}

impl Rotation {
    /// `start` < `n`.
    pub(super) fn new(start: usize, n: usize) -> Rotation {
        debug_assert!(start < n || n == 0);
        Rotation { start, step: 0, n }
    }
}

impl Iterator for Rotation {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.step >= self.n {
            return None;
        }
        // start < n and step < n, so the sum is below 2n: one subtraction is the
        // remainder (a division per candidate measured a few ns of every pick).
        let sum = self.start + self.step;
        let pos = if sum >= self.n { sum - self.n } else { sum };
        self.step += 1;
        Some(pos)
    }
}

#[cfg(test)]
mod tests {
    use crate::balancer::{picks, Algorithm, Balancer, PickKey};
    use proptest::prelude::*;

    #[test]
    fn rotates_in_index_order() {
        let pool = Balancer::new(Algorithm::RoundRobin, &[1, 1, 1]);
        assert_eq!(picks(&pool, 6), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn ignores_weights_except_drained() {
        let pool = Balancer::new(Algorithm::RoundRobin, &[5, 0, 1, 256, 0]);
        assert_eq!(picks(&pool, 7), [0, 2, 3, 0, 2, 3, 0]);
    }

    #[test]
    fn fallbacks_follow_the_pick_in_rotation_order() {
        let pool = Balancer::new(Algorithm::RoundRobin, &[1, 1, 0, 1]);
        assert_eq!(picks(&pool, 1), [0]);
        // Second ticket: pick backend 1, then 3, then wrap to 0; drained 2 never.
        let tried: Vec<usize> = pool.select(PickKey::default()).map(|lease| lease.index()).collect();
        assert_eq!(tried, [1, 3, 0]);
    }

    #[test]
    fn one_ticket_per_selection_not_per_retry() {
        let pool = Balancer::new(Algorithm::RoundRobin, &[1, 1, 1]);
        let mut first = pool.select(PickKey::default());
        assert_eq!(first.next().map(|l| l.index()), Some(0));
        // Another connection takes its pick in between our pick and our retry.
        assert_eq!(picks(&pool, 1), [1]);
        // Our retry still continues our own rotation, and the next connection gets the
        // next ticket: the retries do not consume tickets.
        assert_eq!(first.next().map(|l| l.index()), Some(1));
        assert_eq!(picks(&pool, 1), [2]);
    }

    #[test]
    fn an_unused_selection_takes_no_ticket() {
        let pool = Balancer::new(Algorithm::RoundRobin, &[1, 1]);
        drop(pool.select(PickKey::default()));
        assert_eq!(picks(&pool, 2), [0, 1]);
    }

    #[test]
    fn nothing_available_selects_nothing() {
        assert!(picks(&Balancer::new(Algorithm::RoundRobin, &[0, 0]), 3).is_empty());
        assert!(picks(&Balancer::new(Algorithm::RoundRobin, &[]), 3).is_empty());
    }

    #[test]
    fn a_change_continues_the_tickets_over_the_new_set() {
        let pool = Balancer::new(Algorithm::RoundRobin, &[1, 1, 1, 1]);
        assert_eq!(picks(&pool, 2), [0, 1]);
        // Ticket 2 of the new set [0, 2, 3] is backend 3, then the rotation goes on.
        pool.set_weights(&[1, 0, 1, 1]).expect("four weights");
        assert_eq!(picks(&pool, 5), [3, 0, 2, 3, 0]);
        // Weights other than 0 still do not matter.
        pool.set_weights(&[9, 0, 1, 200]).expect("four weights");
        assert_eq!(picks(&pool, 3), [2, 3, 0]);
        pool.set_weights(&[0, 0, 0, 0]).expect("four weights");
        assert!(picks(&pool, 3).is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// After a change, pick k is exactly the (t + k mod n)-th backend of the new
        /// available set, where t is the number of tickets taken before: an exact
        /// rotation over the new set.
        #[test]
        fn exact_rotation_over_the_new_set(
            before in prop::collection::vec(0..=crate::balancer::WEIGHT_MAX, 1..=8),
            after in prop::collection::vec(prop_oneof![Just(0), 1..=crate::balancer::WEIGHT_MAX], 8),
            picked_before in 0usize..20,
            count in 0usize..40,
        ) {
            let after = &after[..before.len()];
            let pool = Balancer::new(Algorithm::RoundRobin, &before);
            let tickets = picks(&pool, picked_before).len();
            pool.set_weights(after).expect("same length");
            let available: Vec<usize> = (0..after.len()).filter(|&i| after[i] > 0).collect();
            let expected: Vec<usize> = if available.is_empty() {
                Vec::new()
            } else {
                (0..count).map(|k| available[(tickets + k) % available.len()]).collect()
            };
            prop_assert_eq!(picks(&pool, count), expected);
        }

        /// Pick k is exactly the (k mod n)-th available backend.
        #[test]
        fn exact_rotation(weights in prop::collection::vec(0..=crate::balancer::WEIGHT_MAX, 1..=8), count in 0usize..50) {
            let pool = Balancer::new(Algorithm::RoundRobin, &weights);
            let available: Vec<usize> = (0..weights.len()).filter(|&i| weights[i] > 0).collect();
            let expected: Vec<usize> = if available.is_empty() {
                Vec::new()
            } else {
                (0..count).map(|k| available[k % available.len()]).collect()
            };
            prop_assert_eq!(picks(&pool, count), expected);
        }
    }
}
