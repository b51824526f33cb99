//! The health state of one backend, as plain data: rise/fall hysteresis of active
//! checks, passive ejection with exponential back-off, and the slow-start ramp.
//!
//! Nothing here reads a clock or touches a socket: time comes in as an argument and
//! transitions come out as values, so every rule is tested exactly (quinn-proto style).

use crate::io::Instant;
use std::time::Duration;

pub use crate::balancer::WEIGHT_SCALE;

/// Rise/fall hysteresis (HAProxy `rise`/`fall`, Pingora's consecutive-result
/// thresholds): the state flips only after `rise` consecutive successes or `fall`
/// consecutive failures, so one lost probe never ejects a backend and one lucky probe
/// never restores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hysteresis {
    up: bool,
    rise: u32,
    fall: u32,
    /// Consecutive results against the current state.
    streak: u32,
}

impl Hysteresis {
    /// Starts `up` (a new backend is assumed up until `fall` probes fail, HAProxy's
    /// default); thresholds below 1 are treated as 1.
    pub fn new(rise: u32, fall: u32, up: bool) -> Hysteresis {
        Hysteresis {
            up,
            rise: rise.max(1),
            fall: fall.max(1),
            streak: 0,
        }
    }

    /// The same state and streak under new thresholds (a reload changed the check):
    /// a backend keeps its state, and a streak already at or past a lowered threshold
    /// flips on the next result against the state.
    pub fn with_thresholds(&self, rise: u32, fall: u32) -> Hysteresis {
        Hysteresis {
            rise: rise.max(1),
            fall: fall.max(1),
            ..self.clone()
        }
    }

    /// Whether the backend counts as up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Records one probe result; returns the new state when it changed.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            // A result that agrees with the state resets the opposite streak.
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak >= needed {
            self.up = ok;
            self.streak = 0;
            Some(ok)
        } else {
            None
        }
    }
}

/// Passive detection settings (a copy of the pool's config, kept here so that this
/// module depends on nothing but time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassiveRules {
    /// Consecutive failures that eject; 0 disables passive detection.
    pub consecutive_failures: u32,
    /// Length of the first ejection.
    pub ejection: Duration,
    /// Longest ejection.
    pub max_ejection: Duration,
}

/// Passive ejection of one backend (Envoy's outlier detection, simplified): after
/// `consecutive_failures` failed connects or resets the backend is ejected for
/// `ejection × 2^(n-1)` (capped); when that ends it is half-open: one more failure
/// ejects it again for longer, one success clears the back-off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Passive {
    failures: u32,
    ejected_until: Option<Instant>,
    /// Ejections since the last success; sets the back-off.
    ejections: u32,
}

/// Why [`Passive::on_failure`] did not eject although the threshold was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EjectOutcome {
    /// Below the threshold, or passive detection is off.
    Counted,
    /// Ejected until the instant.
    Ejected(Instant),
    /// The threshold was reached but the pool's ejection budget is spent.
    Refused,
    /// Already ejected.
    AlreadyEjected,
}

impl Passive {
    /// True while ejected at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|t| now < t)
    }

    /// When the current ejection ends, if any (past or future).
    pub fn ejected_until(&self) -> Option<Instant> {
        self.ejected_until
    }

    /// Consecutive failures counted so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A successful connect: the failure streak and the back-off are cleared.
    pub fn on_success(&mut self) {
        self.failures = 0;
        if self.ejected_until.is_none() {
            self.ejections = 0;
        }
    }

    /// Ends an ejection whose time has come (half-open: traffic may try it again).
    /// Returns true when it did.
    pub fn expire(&mut self, now: Instant) -> bool {
        match self.ejected_until {
            Some(t) if now >= t => {
                self.ejected_until = None;
                self.failures = 0;
                true
            }
            _ => false,
        }
    }

    /// A failed connect or a reset. `may_eject` says whether the pool's ejection budget
    /// allows one more ejected backend.
    pub fn on_failure(&mut self, now: Instant, rules: &PassiveRules, may_eject: bool) -> EjectOutcome {
        if rules.consecutive_failures == 0 {
            return EjectOutcome::Counted;
        }
        if self.is_ejected(now) {
            return EjectOutcome::AlreadyEjected;
        }
        self.failures = self.failures.saturating_add(1);
        // Half-open after an ejection: a single failure ejects again.
        let threshold = if self.ejections > 0 {
            1
        } else {
            rules.consecutive_failures
        };
        if self.failures < threshold {
            return EjectOutcome::Counted;
        }
        if !may_eject {
            return EjectOutcome::Refused;
        }
        let length = ejection_length(rules, self.ejections);
        self.ejections = self.ejections.saturating_add(1);
        self.failures = 0;
        let until = now + length;
        self.ejected_until = Some(until);
        EjectOutcome::Ejected(until)
    }
}

/// `ejection × 2^previous`, capped at `max_ejection`.
pub fn ejection_length(rules: &PassiveRules, previous: u32) -> Duration {
    let factor = 1u32.checked_shl(previous.min(31)).unwrap_or(u32::MAX);
    rules
        .ejection
        .saturating_mul(factor)
        .min(rules.max_ejection.max(rules.ejection))
}

/// The effective weight, in [`WEIGHT_SCALE`] units, of an available backend of
/// configured weight `base` that became available `since` ago, under a slow-start
/// window of `window` (zero = off). The ramp is linear and starts above zero, so a
/// recovering backend always takes some traffic: after 10% of the window it has at most
/// 10% of its weight (rounded up to one unit).
pub fn slow_start_weight(base: u32, since: Option<Duration>, window: Duration) -> u32 {
    let full = base.saturating_mul(WEIGHT_SCALE);
    let Some(since) = since else {
        return full;
    };
    if window.is_zero() || since >= window || full == 0 {
        return full;
    }
    let ramped = u128::from(full) * since.as_nanos() / window.as_nanos();
    (ramped as u32).clamp(1, full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(ms: u64) -> Instant {
        Instant::from_origin(Duration::from_millis(ms))
    }

    #[test]
    fn hysteresis_flips_after_exact_thresholds() {
        let mut h = Hysteresis::new(2, 3, true);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), Some(false));
        assert!(!h.is_up());
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), Some(true));
        assert!(h.is_up());
        // A success in the middle of a failure streak starts it over.
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), Some(false));
    }

    #[test]
    fn new_thresholds_keep_the_state_and_the_streak() {
        let mut h = Hysteresis::new(2, 5, true);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        // fall 5 -> 3: the streak of two carries over, so one more failure flips it.
        let mut h = h.with_thresholds(2, 3);
        assert!(h.is_up());
        assert_eq!(h.observe(false), Some(false));
        // Down stays down under new thresholds.
        let mut h = h.with_thresholds(1, 1);
        assert!(!h.is_up());
        assert_eq!(h.observe(true), Some(true));
    }

    #[test]
    fn passive_ejects_backs_off_and_half_opens() {
        let rules = PassiveRules {
            consecutive_failures: 3,
            ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
        };
        let mut p = Passive::default();
        assert_eq!(p.on_failure(at(0), &rules, true), EjectOutcome::Counted);
        assert_eq!(p.on_failure(at(1), &rules, true), EjectOutcome::Counted);
        assert_eq!(p.on_failure(at(2), &rules, true), EjectOutcome::Ejected(at(10_002)));
        assert!(p.is_ejected(at(10_001)));
        assert_eq!(p.on_failure(at(3), &rules, true), EjectOutcome::AlreadyEjected);
        assert!(!p.expire(at(10_001)));
        assert!(p.expire(at(10_002)));
        assert!(!p.is_ejected(at(10_002)));
        // Half-open: one failure ejects again, for twice as long.
        assert_eq!(
            p.on_failure(at(10_003), &rules, true),
            EjectOutcome::Ejected(at(30_003))
        );
        assert!(p.expire(at(30_003)));
        // Then capped.
        assert_eq!(
            p.on_failure(at(30_004), &rules, true),
            EjectOutcome::Ejected(at(55_004))
        );
        assert!(p.expire(at(60_000)));
        // A success clears the back-off: three failures are needed again.
        p.on_success();
        assert_eq!(p.on_failure(at(60_001), &rules, true), EjectOutcome::Counted);
        assert_eq!(p.on_failure(at(60_002), &rules, true), EjectOutcome::Counted);
        assert_eq!(p.on_failure(at(60_003), &rules, false), EjectOutcome::Refused);
        assert!(!p.is_ejected(at(60_003)));
    }

    #[test]
    fn passive_off_never_ejects() {
        let rules = PassiveRules {
            consecutive_failures: 0,
            ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(1),
        };
        let mut p = Passive::default();
        for i in 0..100 {
            assert_eq!(p.on_failure(at(i), &rules, true), EjectOutcome::Counted);
        }
    }

    #[test]
    fn slow_start_ramps_linearly_from_above_zero() {
        let w = Duration::from_secs(100);
        assert_eq!(slow_start_weight(2, None, w), 2 * WEIGHT_SCALE);
        assert_eq!(slow_start_weight(2, Some(Duration::ZERO), w), 1);
        assert_eq!(
            slow_start_weight(2, Some(Duration::from_secs(10)), w),
            2 * WEIGHT_SCALE / 10
        );
        assert_eq!(slow_start_weight(2, Some(Duration::from_secs(50)), w), WEIGHT_SCALE);
        assert_eq!(slow_start_weight(2, Some(w), w), 2 * WEIGHT_SCALE);
        assert_eq!(
            slow_start_weight(2, Some(Duration::from_secs(10)), Duration::ZERO),
            2 * WEIGHT_SCALE
        );
        assert_eq!(slow_start_weight(0, Some(Duration::ZERO), w), 0);
    }

    proptest! {
        /// Alternating results never change the state when both thresholds exceed 1.
        #[test]
        fn alternating_results_never_flip(rise in 2u32..10, fall in 2u32..10, up: bool, first: bool, n in 0usize..200) {
            let mut h = Hysteresis::new(rise, fall, up);
            for i in 0..n {
                prop_assert_eq!(h.observe((i % 2 == 0) == first), None);
            }
            prop_assert_eq!(h.is_up(), up);
        }

        /// The state flips exactly at the threshold of consecutive opposite results.
        #[test]
        fn flips_exactly_at_the_threshold(rise in 1u32..10, fall in 1u32..10, up: bool, noise in proptest::collection::vec(any::<bool>(), 0..20)) {
            let mut h = Hysteresis::new(rise, fall, up);
            for r in noise {
                h.observe(r);
            }
            let state = h.is_up();
            // One result agreeing with the state clears any partial streak.
            prop_assert_eq!(h.observe(state), None);
            let needed = if state { fall } else { rise };
            for i in 1..=needed {
                let flipped = h.observe(!state);
                if i < needed {
                    prop_assert_eq!(flipped, None);
                } else {
                    prop_assert_eq!(flipped, Some(!state));
                }
            }
        }

        /// The ramp is monotonic, never zero for a positive weight, and within one unit
        /// of linear.
        #[test]
        fn ramp_is_monotonic_and_linear(base in 1u32..=256, window_ms in 1u64..100_000, a in 0u64..100_000, b in 0u64..100_000) {
            let window = Duration::from_millis(window_ms);
            let (a, b) = (a.min(b), a.max(b));
            let wa = slow_start_weight(base, Some(Duration::from_millis(a)), window);
            let wb = slow_start_weight(base, Some(Duration::from_millis(b)), window);
            prop_assert!(wa >= 1 && wa <= wb && wb <= base * WEIGHT_SCALE);
            let ideal = f64::from(base * WEIGHT_SCALE) * (a.min(window_ms) as f64) / window_ms as f64;
            prop_assert!((f64::from(wa) - ideal.max(1.0)).abs() <= 1.0);
        }
    }
}
