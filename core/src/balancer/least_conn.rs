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
//!   [`BUCKET_ACTIVE_MAX`], as buckets: one per weight and active count, each an
//!   intrusive list in sequence order threaded through the per-backend keys, plus a
//!   heap for the backends that arrive out of sequence order. A pick and a release
//!   move one backend by one count: O(1) when it arrives in order (always for a pick,
//!   whose sequence number is the highest yet; for a release when no backend of its new
//!   bucket was picked after it), O(log m) in a heap of m late arrivals otherwise, plus
//!   one comparison per distinct weight to find the least loaded; see `Buckets`;
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

use std::cmp::Ordering;
use std::collections::BTreeSet;
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

/// No backend: the end of a bucket's list, or "not in a late heap". Backend indices
/// are below it (a pool of 2^32 - 1 backends or more uses the ordered set).
const NIL: u32 = u32::MAX;

/// The shared load order of one pool.
///
/// A plain Mutex: the critical section is a few list operations, and leases are taken
/// and released once per connection attempt, so contention stays low.
pub(super) struct LeastConn {
    state: Mutex<State>,
}

struct State {
    /// The available backends (weight > 0), least loaded first.
    order: Order,
    /// By backend index, every backend's current key (the one it sits under in `order`
    /// if its weight is above 0) and, when bucketed, its links there.
    slots: Vec<Slot>,
    /// Next pick sequence number; starts after the initial ones (the indices).
    seq: u64,
    /// The backend whose counter the next pick re-reads.
    sweep: usize,
}

/// One backend's key and, in the bucketed order, its place in its bucket: 32 bytes,
/// aligned so that each lies within one cache line (a pick or a release reads and
/// writes those of the backend it moves and of its neighbours).
#[derive(Clone, Copy, Debug)]
#[repr(align(32))]
struct Slot {
    active: u64,
    /// When the backend was last picked (higher = more recently); no two backends share
    /// one.
    seq: u64,
    weight: u32,
    /// Buckets only: the backends before and after it in its bucket's list (`NIL` at
    /// the ends), when it is in the list.
    prev: u32,
    next: u32,
    /// Buckets only: its position in its bucket's late heap, or `NIL` when it is in the
    /// list instead.
    late: u32,
}

impl Slot {
    fn new(active: u64, weight: u32, seq: u64) -> Slot {
        Slot {
            active,
            seq,
            weight,
            prev: NIL,
            next: NIL,
            late: NIL,
        }
    }

    /// The key of backend `idx`, whose slot this is.
    fn load(&self, idx: usize) -> Load {
        Load {
            active: self.active,
            weight: self.weight,
            seq: self.seq,
            idx,
        }
    }
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
        let slots: Vec<Slot> = weights
            .iter()
            .zip(counters)
            .enumerate()
            .map(|(idx, (&weight, counter))| Slot::new(counter.get(), weight, idx as u64))
            .collect();
        let mut state = State {
            order: Order::Tree(BTreeSet::new()),
            seq: slots.len() as u64,
            slots,
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
        let (least, class, counter) = loop {
            let (least, class) = state.least_untried(tried)?;
            let (slot, counter) = state.slots.get(least).zip(counters.get(least))?;
            let active = counter.get();
            if active == slot.active || rekeyed >= STALE_REKEYS_PER_PICK_MAX {
                break (least, class, counter);
            }
            // Another balancer sharing the counter moved it: look again on its real
            // count.
            let seq = slot.seq;
            state.rekey_stale(least, active, seq);
            rekeyed += 1;
        };
        let before = counter.claim();
        let seq = state.seq;
        state.seq += 1;
        state.rekey(least, class, before + 1, seq);
        Some(least)
    }

    /// Counts a lease on backend `idx` out on its counter and moves the backend one
    /// connection down, under the lock. Its sequence number stays: releasing is not
    /// being picked.
    pub(super) fn release(&self, idx: usize, counters: &[Arc<ActiveCounter>]) {
        let mut state = lock(&self.state);
        let Some(counter) = counters.get(idx) else {
            debug_assert!(false, "lease on backend {idx} outside the pool");
            return;
        };
        let Some(seq) = state.slots.get(idx).map(|slot| slot.seq) else {
            debug_assert!(false, "backend {idx} outside the pool");
            counter.release();
            return;
        };
        let before = counter.release();
        state.rekey(idx, None, before.saturating_sub(1), seq);
    }

    /// Applies new effective weights (by backend index): re-keys every backend in
    /// place with its new weight and current count, and rebuilds the order (choosing
    /// buckets or the set anew). O(n log n), off the hot path.
    pub(super) fn reweigh(&self, weights: &[u32], counters: &[Arc<ActiveCounter>]) {
        let mut state = lock(&self.state);
        for (slot, (&weight, counter)) in state.slots.iter_mut().zip(weights.iter().zip(counters)) {
            slot.active = counter.get();
            slot.weight = weight;
        }
        state.rebuild(forced_tree());
    }
}

impl State {
    /// Builds `order` from `slots`: buckets when the weights, counts and pool size
    /// allow and `tree` is false, the ordered set otherwise.
    fn rebuild(&mut self, tree: bool) {
        let slots = &mut self.slots;
        let mut weights: Vec<u32> = slots.iter().map(|slot| slot.weight).filter(|&w| w > 0).collect();
        weights.sort_unstable();
        weights.dedup();
        let bucketed = !tree
            && weights.len() <= WEIGHT_CLASSES_MAX
            && slots.len() < NIL as usize
            && slots
                .iter()
                .all(|slot| slot.weight == 0 || slot.active <= BUCKET_ACTIVE_MAX);
        self.order = if bucketed {
            let mut buckets = Buckets::new(&weights);
            // In sequence order, so every bucket's backends arrive in order and all go
            // in its list.
            let mut available: Vec<usize> = (0..slots.len()).filter(|&idx| slots[idx].weight > 0).collect();
            available.sort_unstable_by_key(|&idx| slots[idx].seq);
            for idx in available {
                let inserted = buckets.attach(slots, idx);
                debug_assert!(inserted, "checked above");
            }
            Order::Buckets(buckets)
        } else {
            Order::Tree(
                slots
                    .iter()
                    .enumerate()
                    .filter(|(_, slot)| slot.weight > 0)
                    .map(|(idx, slot)| slot.load(idx))
                    .collect(),
            )
        };
    }

    /// The least loaded available backend not in `tried`, and its class when
    /// bucketed.
    #[inline(always)]
    fn least_untried(&mut self, tried: &Tried) -> Option<(usize, Option<usize>)> {
        match &self.order {
            Order::Buckets(buckets) if tried.is_empty() => buckets.least(),
            _ => self.least_untried_slow(tried),
        }
    }

    /// [`State::least_untried`] for fallbacks and the ordered set; out of line, so
    /// that a pick's path stays small.
    #[inline(never)]
    fn least_untried_slow(&mut self, tried: &Tried) -> Option<(usize, Option<usize>)> {
        let slots = &mut self.slots;
        match &mut self.order {
            Order::Tree(set) => set
                .iter()
                .find(|load| !tried.contains(load.idx))
                .map(|load| (load.idx, None)),
            Order::Buckets(buckets) => {
                // Take the tried ones out, look, and put them back under the same keys:
                // a fallback costs O(tried) list or heap operations, picks none.
                let available = |slots: &[Slot], idx: usize| slots.get(idx).is_some_and(|slot| slot.weight > 0);
                for idx in tried.iter() {
                    if available(slots, idx) {
                        buckets.detach(slots, idx);
                    }
                }
                let least = buckets.least();
                for idx in tried.iter() {
                    if available(slots, idx) {
                        let inserted = buckets.attach(slots, idx);
                        debug_assert!(inserted, "it was there before");
                    }
                }
                least
            }
        }
    }

    /// Gives backend `idx` the key (`active`, `seq`) (its weight stays): out of `order`
    /// under the old key, back in under the new one if its weight is above 0. `class`
    /// is its class in the bucketed order when the caller knows it (the pick does),
    /// which saves looking it up.
    #[inline(always)]
    fn rekey(&mut self, idx: usize, class: Option<usize>, active: u64, seq: u64) {
        let Some(slot) = self.slots.get_mut(idx) else {
            debug_assert!(false, "backend {idx} outside the pool");
            return;
        };
        if slot.weight == 0 {
            // Drained: in no order, only the key is kept.
            slot.active = active;
            slot.seq = seq;
            return;
        }
        let linked = match &mut self.order {
            Order::Buckets(buckets) => {
                let weight = slot.weight;
                let class = match class {
                    Some(class) => buckets.classes.get_mut(class),
                    None => buckets.classes.iter_mut().find(|class| class.weight == weight),
                };
                match class {
                    Some(class) => class.rekey(&mut self.slots, idx, active, seq),
                    None => {
                        debug_assert!(false, "weight {weight} has no class");
                        slot.active = active;
                        slot.seq = seq;
                        false
                    }
                }
            }
            Order::Tree(set) => {
                tree_rekey(set, slot, idx, active, seq);
                true
            }
        };
        if !linked {
            // A count beyond the buckets: the set holds any count.
            self.rebuild(true);
        }
    }

    /// [`State::rekey`] of a key found stale (shared counters only); out of line, so
    /// that a pick's path stays small.
    #[cold]
    #[inline(never)]
    fn rekey_stale(&mut self, idx: usize, active: u64, seq: u64) {
        self.rekey(idx, None, active, seq);
    }

    /// Re-reads the counter of the next backend in the sweep and re-keys it if another
    /// balancer moved it.
    fn sweep_one(&mut self, counters: &[Arc<ActiveCounter>]) {
        let idx = self.sweep;
        let (Some(slot), Some(counter)) = (self.slots.get(idx), counters.get(idx)) else {
            return;
        };
        // A compare, not `%`: a 64-bit division costs more than the rest of the sweep.
        self.sweep = if idx + 1 < self.slots.len() { idx + 1 } else { 0 };
        let active = counter.get();
        if active != slot.active {
            let seq = slot.seq;
            self.rekey_stale(idx, active, seq);
        }
    }
}

/// [`State::rekey`] in the ordered set; out of line, so that the bucketed path stays
/// small.
#[inline(never)]
fn tree_rekey(set: &mut BTreeSet<Load>, slot: &mut Slot, idx: usize, active: u64, seq: u64) {
    let removed = set.remove(&slot.load(idx));
    debug_assert!(removed, "backend {idx} missing from the load order");
    slot.active = active;
    slot.seq = seq;
    set.insert(slot.load(idx));
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

/// The load order as buckets, for few distinct weights: a pick and a release in O(1)
/// when in order, against O(log n) comparisons of the ordered set.
///
/// Backends are grouped by weight (a class) and, within a class, by active count (a
/// bucket). Within a class the load order is the count order, so a class's least
/// loaded backend (its head, kept up to date by every change) is the first of its
/// lowest non-empty bucket, and the pool's is the least of the classes' heads (at most
/// [`WEIGHT_CLASSES_MAX`] comparisons). Within a bucket all loads are equal and the
/// order is by sequence number.
///
/// A bucket holds its backends two ways. Its list is a doubly linked list in
/// ascending sequence order, threaded through the backends' [`Slot`]s (no allocation,
/// O(1) unlinking from anywhere): a backend whose sequence number is above that of the
/// list's last joins at the back. That is every pick (its new number is the highest
/// yet) and every release of a backend that no other in its new bucket was picked
/// after, such as each short connection that ends before the next pick. Any other
/// backend (a release out of pick order, a re-key, a fallback's put-back) goes into the
/// bucket's late heap, a binary min-heap by sequence number whose positions are kept in
/// the slots, so it too is taken out in O(log m). The bucket's first is the lesser of
/// the list's head and the heap's top.
///
/// When a class's head leaves, the next is the first of the lowest non-empty bucket,
/// found by stepping up the counts from the old head's: at most one step after a pick
/// (the bucket it joined is the next one up) and none after a release (it lands
/// below); after a count moved by another balancer sharing the counters, as many steps
/// as the counts it jumped, at most [`BUCKET_ACTIVE_MAX`].
struct Buckets {
    classes: Vec<Class>,
}

struct Class {
    /// The count of the head's bucket while the class has a backend: no backend of the
    /// class is counted below it.
    low: usize,
    /// The class's least loaded backend and its sequence number; `NIL` when the class
    /// is empty.
    head: u32,
    head_seq: u64,
    weight: u32,
    /// Backends in the class.
    live: usize,
    /// By active count.
    buckets: Vec<Bucket>,
}

struct Bucket {
    /// Its list: first and last backend, `NIL` when empty.
    first: u32,
    last: u32,
    /// Its late heap: backend indices, a min-heap by sequence number.
    late: Vec<u32>,
}

impl Buckets {
    /// `weights` ascending and distinct.
    fn new(weights: &[u32]) -> Buckets {
        Buckets {
            classes: weights
                .iter()
                .map(|&weight| Class {
                    low: 0,
                    head: NIL,
                    head_seq: 0,
                    weight,
                    live: 0,
                    buckets: Vec::new(),
                })
                .collect(),
        }
    }

    /// The class of the backend whose slot is `slot`.
    fn class(&mut self, slot: Option<&Slot>) -> Option<&mut Class> {
        let weight = slot?.weight;
        let class = self.classes.iter_mut().find(|class| class.weight == weight);
        debug_assert!(class.is_some(), "weight {weight} has no class");
        class
    }

    /// Puts backend `idx` in under its key (its weight > 0; it is in no bucket).
    /// `false` (and nothing changed) when the weight has no class or the count is
    /// beyond [`BUCKET_ACTIVE_MAX`].
    fn attach(&mut self, slots: &mut [Slot], idx: usize) -> bool {
        self.class(slots.get(idx)).is_some_and(|class| class.link(slots, idx))
    }

    /// Takes backend `idx` out (it is in under its key).
    fn detach(&mut self, slots: &mut [Slot], idx: usize) {
        if let Some(class) = self.class(slots.get(idx)) {
            class.unlink(slots, idx);
            if class.head == idx as u32 {
                class.refresh(slots);
            }
        }
    }

    /// The least loaded backend, and its class: the least of the classes' heads.
    #[inline(always)]
    fn least(&self) -> Option<(usize, Option<usize>)> {
        // (count, weight, seq, class) of the best so far.
        let mut best: Option<(u64, u64, u64, usize)> = None;
        for (c, class) in self.classes.iter().enumerate() {
            if class.head == NIL {
                continue;
            }
            let (count, weight, seq) = (class.low as u64, u64::from(class.weight), class.head_seq);
            // count <= BUCKET_ACTIVE_MAX and weight < 2^32: the products fit in u64.
            let better = best.is_none_or(|(best_count, best_weight, best_seq, _)| {
                match (count * best_weight).cmp(&(best_count * weight)) {
                    Ordering::Less => true,
                    Ordering::Greater => false,
                    // Sequence numbers are unique: no tie to break by index.
                    Ordering::Equal => seq < best_seq,
                }
            });
            if better {
                best = Some((count, weight, seq, c));
            }
        }
        let (_, _, _, c) = best?;
        Some((self.classes.get(c)?.head as usize, Some(c)))
    }
}

impl Class {
    /// Moves backend `idx` (in this class under its key) to the key (`active`, `seq`).
    /// `false` when the count is beyond [`BUCKET_ACTIVE_MAX`]: the slot then holds the
    /// new key but the buckets no longer hold it, and must be rebuilt.
    #[inline(always)]
    fn rekey(&mut self, slots: &mut [Slot], idx: usize, active: u64, seq: u64) -> bool {
        let was_head = self.head == idx as u32;
        self.unlink(slots, idx);
        if let Some(slot) = slots.get_mut(idx) {
            slot.active = active;
            slot.seq = seq;
        }
        if !self.link(slots, idx) {
            return false;
        }
        if was_head {
            self.refresh(slots);
        }
        true
    }

    /// Puts backend `idx` (of this class, in no bucket) into the bucket of its count,
    /// and makes it the head if it comes first. `false` (and nothing changed) when the
    /// count is beyond [`BUCKET_ACTIVE_MAX`].
    #[inline(always)]
    fn link(&mut self, slots: &mut [Slot], idx: usize) -> bool {
        let Some(&slot) = slots.get(idx) else {
            return false;
        };
        if slot.active > BUCKET_ACTIVE_MAX {
            return false;
        }
        let count = slot.active as usize;
        if self.buckets.len() <= count {
            self.buckets.resize_with(count + 1, || Bucket {
                first: NIL,
                last: NIL,
                late: Vec::new(),
            });
        }
        let bucket = &mut self.buckets[count];
        let in_order = bucket.last == NIL || slots[bucket.last as usize].seq < slot.seq;
        if in_order {
            let entry = &mut slots[idx];
            entry.prev = bucket.last;
            entry.next = NIL;
            entry.late = NIL;
            match bucket.last {
                NIL => bucket.first = idx as u32,
                last => slots[last as usize].next = idx as u32,
            }
            bucket.last = idx as u32;
        } else {
            bucket.push_late(slots, idx as u32);
        }
        // Below every other backend of the class, or level with the head and picked
        // before it.
        if self.head == NIL || count < self.low || (count == self.low && slot.seq < self.head_seq) {
            self.low = count;
            self.head = idx as u32;
            self.head_seq = slot.seq;
        }
        self.live += 1;
        true
    }

    /// Takes backend `idx` (in this class under its key) out of its bucket. The head
    /// is left as it was: when it was this backend, the caller refreshes it.
    #[inline(always)]
    fn unlink(&mut self, slots: &mut [Slot], idx: usize) {
        let Some(&slot) = slots.get(idx) else {
            return;
        };
        let Some(bucket) = self.buckets.get_mut(slot.active as usize) else {
            debug_assert!(false, "backend {idx} missing from its bucket");
            return;
        };
        if slot.late == NIL {
            match slot.prev {
                NIL => bucket.first = slot.next,
                prev => slots[prev as usize].next = slot.next,
            }
            match slot.next {
                NIL => bucket.last = slot.prev,
                next => slots[next as usize].prev = slot.prev,
            }
        } else {
            bucket.remove_late(slots, slot.late as usize);
        }
        self.live -= 1;
    }

    /// Finds the head anew: the first of the lowest non-empty bucket, from `low` up
    /// (no backend is below `low`).
    fn refresh(&mut self, slots: &[Slot]) {
        self.head = NIL;
        if self.live == 0 {
            return;
        }
        // Ends: some bucket at or above `low` holds a backend.
        while let Some(bucket) = self.buckets.get(self.low) {
            if let Some(first) = bucket.first(slots) {
                self.head = first as u32;
                self.head_seq = slots[first].seq;
                return;
            }
            self.low += 1;
        }
        debug_assert!(false, "class of weight {} lost its backends", self.weight);
    }
}

impl Bucket {
    /// The backend with the lowest sequence number: the list's first or the heap's top.
    #[inline(always)]
    fn first(&self, slots: &[Slot]) -> Option<usize> {
        match (self.first, self.late.first()) {
            (NIL, None) => None,
            (NIL, Some(&late)) => Some(late as usize),
            (first, None) => Some(first as usize),
            (first, Some(&late)) => {
                if slots[first as usize].seq < slots[late as usize].seq {
                    Some(first as usize)
                } else {
                    Some(late as usize)
                }
            }
        }
    }

    fn push_late(&mut self, slots: &mut [Slot], idx: u32) {
        let pos = self.late.len();
        self.late.push(idx);
        slots[idx as usize].late = pos as u32;
        self.sift_up(slots, pos);
    }

    /// Removes the heap entry at `pos`.
    fn remove_late(&mut self, slots: &mut [Slot], pos: usize) {
        let Some(last) = self.late.pop() else {
            debug_assert!(false, "late heap empty");
            return;
        };
        if let Some(&removed) = self.late.get(pos) {
            slots[removed as usize].late = NIL;
            self.late[pos] = last;
            slots[last as usize].late = pos as u32;
            // The moved entry may belong above or below `pos`.
            self.sift_up(slots, pos);
            self.sift_down(slots, slots[last as usize].late as usize);
        } else {
            slots[last as usize].late = NIL;
        }
    }

    fn seq_at(&self, slots: &[Slot], pos: usize) -> u64 {
        slots[self.late[pos] as usize].seq
    }

    /// Swaps the heap entries at `a` and `b`, and their positions in the slots.
    fn swap(&mut self, slots: &mut [Slot], a: usize, b: usize) {
        self.late.swap(a, b);
        slots[self.late[a] as usize].late = a as u32;
        slots[self.late[b] as usize].late = b as u32;
    }

    fn sift_up(&mut self, slots: &mut [Slot], mut pos: usize) {
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if self.seq_at(slots, parent) <= self.seq_at(slots, pos) {
                break;
            }
            self.swap(slots, parent, pos);
            pos = parent;
        }
    }

    fn sift_down(&mut self, slots: &mut [Slot], mut pos: usize) {
        loop {
            let left = 2 * pos + 1;
            if left >= self.late.len() {
                break;
            }
            let right = left + 1;
            let child = if right < self.late.len() && self.seq_at(slots, right) < self.seq_at(slots, left) {
                right
            } else {
                left
            };
            if self.seq_at(slots, pos) <= self.seq_at(slots, child) {
                break;
            }
            self.swap(slots, pos, child);
            pos = child;
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
    use super::{LeastConn, Order, Slot, State, Tried, NIL};
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
    fn a_slot_fits_in_half_a_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 32);
        assert_eq!(std::mem::align_of::<Slot>(), 32);
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

    /// Checks the structure of the order against the slots: every available backend is
    /// in it exactly once under its key; in the buckets, every list is linked both ways
    /// in ascending sequence order, every late heap is a heap whose positions the slots
    /// record, and every class's head and `low` are its least loaded backend's.
    fn check(state: &State) {
        let available: Vec<usize> = (0..state.slots.len()).filter(|&i| state.slots[i].weight > 0).collect();
        match &state.order {
            Order::Tree(set) => {
                let expected: Vec<(usize, u64, u64)> = available
                    .iter()
                    .map(|&i| (i, state.slots[i].active, state.slots[i].seq))
                    .collect();
                let mut held: Vec<(usize, u64, u64)> = set.iter().map(|l| (l.idx, l.active, l.seq)).collect();
                held.sort_unstable();
                assert_eq!(held, expected);
            }
            Order::Buckets(buckets) => {
                let slots = &state.slots;
                let mut seen = vec![0usize; slots.len()];
                for class in &buckets.classes {
                    let mut live = 0;
                    let mut least: Option<(usize, u64, usize)> = None;
                    for (count, bucket) in class.buckets.iter().enumerate() {
                        let mut members: Vec<usize> = Vec::new();
                        let (mut prev, mut at) = (NIL, bucket.first);
                        while at != NIL {
                            let slot = &slots[at as usize];
                            assert_eq!(slot.prev, prev, "backward link of {at}");
                            assert_eq!(slot.late, NIL, "{at} is listed, not late");
                            if prev != NIL {
                                assert!(slots[prev as usize].seq < slot.seq, "list out of order at {at}");
                            }
                            members.push(at as usize);
                            (prev, at) = (at, slot.next);
                        }
                        assert_eq!(bucket.last, prev, "last of bucket {count}");
                        for (pos, &idx) in bucket.late.iter().enumerate() {
                            assert_eq!(slots[idx as usize].late as usize, pos, "heap position of {idx}");
                            if pos > 0 {
                                let parent = bucket.late[(pos - 1) / 2] as usize;
                                assert!(slots[parent].seq < slots[idx as usize].seq, "heap order at {idx}");
                            }
                            members.push(idx as usize);
                        }
                        for &idx in &members {
                            assert_eq!(slots[idx].active, count as u64, "count of {idx}");
                            assert_eq!(slots[idx].weight, class.weight, "weight of {idx}");
                            seen[idx] += 1;
                            let key = (count, slots[idx].seq, idx);
                            if least.is_none_or(|(c, s, _)| (count, slots[idx].seq) < (c, s)) {
                                least = Some(key);
                            }
                        }
                        live += members.len();
                    }
                    assert_eq!(class.live, live, "backends of weight {}", class.weight);
                    match least {
                        None => assert_eq!(class.head, NIL),
                        Some((count, seq, idx)) => {
                            assert_eq!((class.low, class.head_seq, class.head as usize), (count, seq, idx));
                        }
                    }
                }
                for (idx, &times) in seen.iter().enumerate() {
                    assert_eq!(
                        times,
                        usize::from(slots[idx].weight > 0),
                        "backend {idx} in the buckets"
                    );
                }
            }
        }
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
            check(&lock(&lc.state));
        }
        for idx in held {
            lc.release(idx, &counters);
        }
        check(&lock(&lc.state));
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

    /// Steps for pools of up to [`LARGE_POOL`] backends with weights 1 to 4 (always
    /// bucketed): mostly picks and releases, so that buckets hold many backends and
    /// releases out of pick order fill deep late heaps.
    const LARGE_POOL: usize = 96;

    fn large_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (1usize..4).prop_map(Op::Pick),
            7 => any::<usize>().prop_map(Op::Drop),
            1 => prop::collection::vec(prop_oneof![1 => Just(0), 6 => 1..=4u32], LARGE_POOL).prop_map(Op::Reweigh),
            1 => (any::<usize>(), any::<bool>()).prop_map(|(i, up)| Op::Foreign(i, up)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// As above, in larger pools with few distinct weights.
        #[test]
        fn buckets_pick_as_the_ordered_set_in_larger_pools(
            weights in prop::collection::vec(1..=4u32, 1..=LARGE_POOL),
            ops in prop::collection::vec(large_op(), 0..1_000),
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
