//! `least-connections`: the backend with the fewest active connections relative to its
//! weight.
//!
//! Load is `active / weight`, compared exactly by cross-multiplication (see
//! `load_cmp`), so 1/3 and 2/6 tie and 1/3 never ties with 1/2 through integer
//! division. Among equal loads the backend picked least recently goes first, so an idle
//! pool rotates instead of piling every short connection onto backend 0.
//!
//! The available backends are kept in (load, last-picked sequence number, backend
//! index) order, behind a Mutex, with every backend's current key alongside so it can
//! be found and moved. A pick takes the first backend and re-keys it with one more
//! connection; a released lease re-keys it with one less. Both happen under the lock
//! together with the update of the backend's active counter, and the new key is
//! computed from the value the counter held, so a pick and its increment are one step:
//! two workers picking at once get two different backends when the loads say so, never
//! the same "least loaded" one twice.
//!
//! The order is held one of two ways, which give exactly the same order (a property
//! test runs both on the same operations and compares every pick):
//!
//! - with at most [`WEIGHT_CLASSES_MAX`] distinct weights among the available backends
//!   (the usual case: equal weights, or a few tiers) and counts up to
//!   [`BUCKET_ACTIVE_MAX`], as queues: one per weight and active count, in sequence
//!   order, so a pick and a release are O(1) amortized plus one comparison per distinct
//!   weight (counts move by one, and a pick's new sequence number is the highest yet,
//!   so it joins the back of its next queue); see `Buckets`;
//! - otherwise (a slow-start ramp giving many backends different weights at once), as
//!   a `BTreeSet`: O(log n) comparisons per pick and per release.
//!
//! The choice is made when the balancer is built and at every weight change; a count
//! beyond the buckets' range switches to the set until the next change.
//!
//! Fallbacks are the least loaded backend not tried yet by this selection, chosen at
//! the moment of the retry (loads move between attempts). Finding it skips the entries
//! already tried that sort before it: at most one skip per earlier attempt, so bounded
//! by the number of retries the caller allows.
//!
//! # Changing weights
//!
//! [`Balancer::set_weights`](super::Balancer::set_weights) re-keys every backend in
//! place and rebuilds the order, under the same lock: a backend whose new weight is
//! above 0 goes back in with the new weight and the count its counter holds now. There
//! is only ever this one order, so no pick can read a stale copy of it. A drained backend
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

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex};

use super::{load_cmp, lock, ActiveCounter};

/// Stale entries a pick re-keys from their counters before it settles for the first
/// entry as it is. Bounds a pick's work when another balancer sharing the counters
/// keeps moving them; within one balancer no key is ever stale.
pub const STALE_REKEYS_PER_PICK_MAX: usize = 8;

/// Most distinct weights among the available backends for the bucketed order; more
/// (a slow-start ramp over many backends at once) use the ordered set.
pub const WEIGHT_CLASSES_MAX: usize = 8;

/// Highest active count the bucketed order keeps buckets for (one per count and weight
/// class); a backend counted higher switches the pool to the ordered set.
pub const BUCKET_ACTIVE_MAX: u64 = 1 << 16;

/// The shared load order of one pool.
///
/// A plain Mutex: the critical section is a few queue operations, and leases are taken
/// and released once per connection attempt, so contention stays low.
pub(super) struct LeastConn {
    state: Mutex<State>,
}

struct State {
    /// The available backends (weight > 0), least loaded first.
    order: Order,
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

/// The available backends in load order, one of two ways; both give exactly the order
/// of [`Load`]'s `Ord`.
enum Order {
    Buckets(Buckets),
    Tree(BTreeSet<Load>),
}

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
        let mut state = State {
            order: Order::Tree(BTreeSet::new()),
            seq: loads.len() as u64,
            loads,
            sweep: 0,
        };
        state.rebuild(forced_tree());
        LeastConn {
            state: Mutex::new(state),
        }
    }

    /// Claims the least loaded available backend whose index is not in `tried`: counts
    /// it in on its counter and moves it one connection up, under the lock. `None`
    /// when every available backend has been tried.
    fn claim(&self, tried: &Tried, counters: &[Arc<ActiveCounter>]) -> Option<usize> {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        state.sweep_one(counters);
        let mut rekeyed = 0;
        let least = loop {
            let least = state.least_untried(tried)?;
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
    /// place with its new weight and current count, and rebuilds the order (choosing
    /// buckets or the set anew). O(n log n), off the hot path.
    pub(super) fn reweigh(&self, weights: &[u32], counters: &[Arc<ActiveCounter>]) {
        let mut state = lock(&self.state);
        for (load, (&weight, counter)) in state.loads.iter_mut().zip(weights.iter().zip(counters)) {
            load.active = counter.get();
            load.weight = weight;
        }
        state.rebuild(forced_tree());
    }
}

impl State {
    /// Builds `order` from `loads`: buckets when the weights and counts allow and
    /// `tree` is false, the ordered set otherwise.
    fn rebuild(&mut self, tree: bool) {
        let available = || self.loads.iter().filter(|load| load.weight > 0);
        let mut weights: Vec<u32> = available().map(|load| load.weight).collect();
        weights.sort_unstable();
        weights.dedup();
        let bucketed =
            !tree && weights.len() <= WEIGHT_CLASSES_MAX && available().all(|load| load.active <= BUCKET_ACTIVE_MAX);
        self.order = if bucketed {
            let mut buckets = Buckets::new(&weights, self.loads.len());
            // In load order, so every bucket's entries arrive in sequence order.
            let mut sorted: Vec<Load> = available().copied().collect();
            sorted.sort_unstable();
            for load in sorted {
                let inserted = buckets.attach(load);
                debug_assert!(inserted, "checked above");
            }
            Order::Buckets(buckets)
        } else {
            Order::Tree(available().copied().collect())
        };
    }

    /// The least loaded available backend not in `tried`.
    fn least_untried(&mut self, tried: &Tried) -> Option<Load> {
        match &mut self.order {
            Order::Tree(set) => set.iter().find(|load| !tried.contains(load.idx)).copied(),
            Order::Buckets(buckets) => {
                if tried.is_empty() {
                    return buckets.least();
                }
                // Take the tried ones out, look, and put them back under the same keys:
                // a fallback costs O(tried) queue operations, picks none.
                let out: Vec<Load> = tried
                    .iter()
                    .map(|idx| self.loads[idx])
                    .filter(|load| load.weight > 0)
                    .collect();
                for load in &out {
                    buckets.detach(*load);
                }
                let least = buckets.least();
                for load in out {
                    let inserted = buckets.attach(load);
                    debug_assert!(inserted, "it was there before");
                }
                least
            }
        }
    }

    /// Replaces the key of backend `new.idx` by `new`: out of `order` under the old
    /// key, back in under the new one if its weight is above 0.
    fn rekey(&mut self, new: Load) {
        let old = self.loads[new.idx];
        self.loads[new.idx] = new;
        match &mut self.order {
            Order::Tree(set) => {
                if old.weight > 0 {
                    let removed = set.remove(&old);
                    debug_assert!(removed, "backend {} missing from the load order", old.idx);
                }
                if new.weight > 0 {
                    set.insert(new);
                }
            }
            Order::Buckets(buckets) => {
                // The new key goes in first: its bucket is then not empty when the old
                // one's is left, so finding the class's lowest bucket takes one step.
                if new.weight > 0 && !buckets.attach(new) {
                    // A count beyond the buckets: the set holds any count.
                    self.rebuild(true);
                    return;
                }
                if old.weight > 0 {
                    buckets.leave(old, new.weight == 0);
                }
            }
        }
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

/// Whether balancers built on this thread must use the ordered set: only tests ask,
/// to check that both orders pick alike.
fn forced_tree() -> bool {
    #[cfg(test)]
    {
        FORCE_TREE.with(|force| force.get())
    }
    #[cfg(not(test))]
    {
        false
    }
}

#[cfg(test)]
thread_local! {
    /// Makes balancers built on this thread use the ordered set.
    static FORCE_TREE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The load order as queues, for few distinct weights: a pick and a release in O(1)
/// (amortized), against O(log n) comparisons of the ordered set.
///
/// Backends are grouped by weight (a class) and, within a class, by active count (a
/// bucket). Within a class the load order is the count order, so a class's least
/// loaded backend is the first of its lowest non-empty bucket, and the pool's is the
/// least of the classes' (at most [`WEIGHT_CLASSES_MAX`] comparisons). Within a bucket
/// the order is by sequence number (all loads there are equal). A pick gives its
/// backend the highest sequence number yet, so it joins the back of the next bucket's
/// queue in order; a release or a re-key may bring an older number, which goes into
/// the bucket's heap instead. The bucket's first is the lesser of the queue's front and
/// the heap's top. Entries are not removed when a backend leaves a bucket: each backend
/// has a stamp, bumped whenever it moves, and an entry with an old stamp is skipped
/// (and dropped) when it reaches the front; a bucket that empties drops all its entries,
/// and one holding more than twice its backends' worth is compacted.
struct Buckets {
    classes: Vec<Class>,
    /// By backend index: the stamp of its valid entry.
    stamps: Vec<u64>,
}

struct Class {
    weight: u32,
    /// By active count.
    buckets: Vec<Bucket>,
    /// Backends in the class.
    live: usize,
    /// The lowest count with a backend, when `live > 0`.
    low: usize,
}

#[derive(Default)]
struct Bucket {
    /// Ascending sequence numbers.
    queue: VecDeque<Entry>,
    /// Entries that arrived out of sequence order.
    late: BinaryHeap<Reverse<Entry>>,
    /// Backends in the bucket (entries with a current stamp).
    live: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    seq: u64,
    idx: usize,
    stamp: u64,
}

impl Buckets {
    /// `weights` ascending and distinct; `backends` in the pool.
    fn new(weights: &[u32], backends: usize) -> Buckets {
        Buckets {
            classes: weights
                .iter()
                .map(|&weight| Class {
                    weight,
                    buckets: Vec::new(),
                    live: 0,
                    low: 0,
                })
                .collect(),
            stamps: vec![0; backends],
        }
    }

    fn class(&mut self, weight: u32) -> Option<&mut Class> {
        self.classes.iter_mut().find(|class| class.weight == weight)
    }

    /// Puts backend `load.idx` in under `load` (its weight > 0), invalidating any entry
    /// it had. `false` (and nothing changed) when the weight has no class or the count
    /// is beyond [`BUCKET_ACTIVE_MAX`].
    fn attach(&mut self, load: Load) -> bool {
        let Some(stamp) = self.stamps.get_mut(load.idx) else {
            return false;
        };
        let Some(class) = self.classes.iter_mut().find(|class| class.weight == load.weight) else {
            return false;
        };
        if load.active > BUCKET_ACTIVE_MAX {
            return false;
        }
        *stamp += 1;
        let entry = Entry {
            seq: load.seq,
            idx: load.idx,
            stamp: *stamp,
        };
        let active = load.active as usize;
        if class.buckets.len() <= active {
            class.buckets.resize_with(active + 1, Bucket::default);
        }
        let bucket = &mut class.buckets[active];
        if bucket.queue.back().is_none_or(|back| back.seq < entry.seq) {
            bucket.queue.push_back(entry);
        } else {
            bucket.late.push(Reverse(entry));
        }
        bucket.live += 1;
        if bucket.queue.len() + bucket.late.len() > 2 * bucket.live + 16 {
            let stamps = &self.stamps;
            bucket.queue.retain(|e| stamps[e.idx] == e.stamp);
            bucket.late.retain(|Reverse(e)| stamps[e.idx] == e.stamp);
        }
        if class.live == 0 || active < class.low {
            class.low = active;
        }
        class.live += 1;
        true
    }

    /// Takes backend `load.idx` out (it is in under `load`).
    fn detach(&mut self, load: Load) {
        self.leave(load, true);
    }

    /// Counts backend `load.idx` out of the bucket of `load`; `invalidate` bumps its
    /// stamp (not needed when it has just been attached elsewhere, which did).
    fn leave(&mut self, load: Load, invalidate: bool) {
        if invalidate {
            self.stamps[load.idx] += 1;
        }
        let Some(class) = self.class(load.weight) else {
            debug_assert!(false, "backend {} has no class", load.idx);
            return;
        };
        let active = load.active as usize;
        let bucket = &mut class.buckets[active];
        bucket.live -= 1;
        if bucket.live == 0 {
            bucket.queue.clear();
            bucket.late.clear();
        }
        class.live -= 1;
        if class.live > 0 && class.low == active && class.buckets[active].live == 0 {
            // Not empty, so some bucket above holds a backend.
            class.low = (active + 1..class.buckets.len())
                .find(|&count| class.buckets[count].live > 0)
                .unwrap_or(active);
        }
    }

    /// The least loaded backend.
    fn least(&mut self) -> Option<Load> {
        let stamps = &self.stamps;
        let mut best: Option<Load> = None;
        for class in &mut self.classes {
            if class.live == 0 {
                continue;
            }
            let Some(first) = class.buckets[class.low].first(stamps) else {
                debug_assert!(false, "lowest bucket of weight {} is empty", class.weight);
                continue;
            };
            let load = Load {
                active: class.low as u64,
                weight: class.weight,
                seq: first.seq,
                idx: first.idx,
            };
            if best.is_none_or(|best| load < best) {
                best = Some(load);
            }
        }
        best
    }
}

impl Bucket {
    /// The valid entry with the lowest sequence number, dropping stale ones in front.
    fn first(&mut self, stamps: &[u64]) -> Option<Entry> {
        let valid = |entry: &Entry| stamps[entry.idx] == entry.stamp;
        while self.queue.front().is_some_and(|entry| !valid(entry)) {
            self.queue.pop_front();
        }
        while self.late.peek().is_some_and(|Reverse(entry)| !valid(entry)) {
            self.late.pop();
        }
        match (self.queue.front(), self.late.peek()) {
            (Some(&queued), Some(&Reverse(late))) => Some(queued.min(late)),
            (Some(&queued), None) => Some(queued),
            (None, Some(&Reverse(late))) => Some(late),
            (None, None) => None,
        }
    }
}

/// The backends one selection has tried so far: inline for the first few (a pick and
/// its usual retries allocate nothing), a set beyond.
#[derive(Debug, Default)]
struct Tried {
    few: [usize; TRIED_INLINE],
    len: usize,
    /// `None` until the inline slots are full: dropping it is then a single check
    /// (an empty set's drop still walks its iterator).
    more: Option<BTreeSet<usize>>,
}

const TRIED_INLINE: usize = 4;

impl Tried {
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn contains(&self, idx: usize) -> bool {
        self.few[..self.len.min(TRIED_INLINE)].contains(&idx)
            || self.more.as_ref().is_some_and(|more| more.contains(&idx))
    }

    fn insert(&mut self, idx: usize) {
        if self.len < TRIED_INLINE {
            self.few[self.len] = idx;
        } else {
            self.more.get_or_insert_default().insert(idx);
        }
        self.len += 1;
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.few[..self.len.min(TRIED_INLINE)]
            .iter()
            .copied()
            .chain(self.more.iter().flat_map(|more| more.iter().copied()))
    }
}

/// The backends one selection has tried so far.
#[derive(Debug, Default)]
pub(super) struct Walk {
    tried: Tried,
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
    use super::{LeastConn, Order, Tried};
    use crate::balancer::{lock, ActiveCounter, Algorithm, Balancer, Lease, PickKey, WEIGHT_MAX};
    use proptest::prelude::*;
    use std::sync::Arc;

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

    /// One step of the differential test below.
    #[derive(Clone, Debug)]
    enum Op {
        /// A selection trying this many candidates, keeping the last.
        Pick(usize),
        Drop(usize),
        Reweigh(Vec<u32>),
        /// Another balancer sharing the counter of this backend takes (true) or ends
        /// (false) a connection on it.
        Foreign(usize, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (1usize..4).prop_map(Op::Pick),
            4 => any::<usize>().prop_map(Op::Drop),
            1 => prop::collection::vec(prop_oneof![Just(0), 1..=4u32, 1..=WEIGHT_MAX], 12).prop_map(Op::Reweigh),
            1 => (any::<usize>(), any::<bool>()).prop_map(|(i, up)| Op::Foreign(i, up)),
        ]
    }

    /// Runs `ops` on a `LeastConn` built on this thread, returning every claim.
    fn run(weights: &[u32], ops: &[Op], tree: bool) -> Vec<Option<usize>> {
        super::FORCE_TREE.with(|force| force.set(tree));
        let counters: Vec<Arc<ActiveCounter>> = weights.iter().map(|_| Arc::default()).collect();
        let lc = LeastConn::new(weights, &counters);
        let mut distinct: Vec<u32> = weights.iter().copied().filter(|&w| w > 0).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let expect_tree = tree || distinct.len() > super::WEIGHT_CLASSES_MAX;
        assert_eq!(matches!(lock(&lc.state).order, Order::Tree(_)), expect_tree);
        let mut held: Vec<usize> = Vec::new();
        let mut foreign: Vec<usize> = Vec::new();
        let mut claims = Vec::new();
        for op in ops {
            match op {
                Op::Pick(tries) => {
                    let mut tried = Tried::default();
                    let mut last = None;
                    for _ in 0..*tries {
                        let claimed = lc.claim(&tried, &counters);
                        claims.push(claimed);
                        let Some(idx) = claimed else { break };
                        tried.insert(idx);
                        // The failed attempt before this one ends.
                        if let Some(previous) = last.replace(idx) {
                            lc.release(previous, &counters);
                        }
                    }
                    held.extend(last);
                }
                Op::Drop(which) => {
                    if !held.is_empty() {
                        lc.release(held.swap_remove(which % held.len()), &counters);
                    }
                }
                Op::Reweigh(new) => lc.reweigh(&new[..weights.len()], &counters),
                Op::Foreign(which, up) => {
                    if *up {
                        let idx = which % weights.len();
                        counters[idx].claim();
                        foreign.push(idx);
                    } else if !foreign.is_empty() {
                        counters[foreign.swap_remove(which % foreign.len())].release();
                    }
                }
            }
        }
        for idx in held {
            lc.release(idx, &counters);
        }
        for idx in foreign {
            counters[idx].release();
        }
        assert!(counters.iter().all(|c| c.get() == 0));
        super::FORCE_TREE.with(|force| force.set(false));
        claims
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The bucketed order picks exactly as the ordered set does (the reference:
        /// load, then least recently picked), through fallbacks, releases, weight
        /// changes and counts moved by another balancer.
        #[test]
        fn buckets_pick_as_the_ordered_set(
            weights in prop::collection::vec(prop_oneof![Just(0), 1..=4u32, 1..=WEIGHT_MAX], 1..=12),
            ops in prop::collection::vec(op(), 0..150),
        ) {
            prop_assert_eq!(run(&weights, &ops, false), run(&weights, &ops, true));
        }
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
