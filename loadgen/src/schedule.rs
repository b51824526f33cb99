//! When requests are due, and from when their latency counts. Pure: time comes in as
//! [`Instant`]s.
//!
//! # Open loop
//!
//! With `--rate R` and `C` connections, connection `i` sends its `k`-th request at
//! `start + (i + k*C) / R` seconds: each connection runs at `R/C` requests per second,
//! and the connections interleave so that the whole run sends one request every `1/R`
//! seconds. Times are computed from `k` in integer nanoseconds, never accumulated, so
//! the schedule does not drift over a long run.
//!
//! # Coordinated omission
//!
//! A closed-loop client waits for each response before it sends the next request, so a
//! server that stalls for a second also stops the client from sending for a second: the
//! requests that would have waited are never sent, and the stall shows up as one slow
//! sample instead of a second's worth. wrk2's correction measures each request from the
//! time it was *due*. [`latency_start`] applies it, with one refinement: when the
//! connection was idle at the due time (the previous response had come back, loadgen was
//! only waiting for its timer), the wait between the due time and the actual send is
//! loadgen's own timer slack (tokio's timer has millisecond granularity), not the
//! server's, and the latency counts from the send.

use gobalancer::io::Instant;
use std::time::Duration;

const NANOS_PER_S: u128 = 1_000_000_000;

/// The open-loop schedule of one connection.
#[derive(Clone, Debug)]
pub struct Schedule {
    start: Instant,
    /// This connection's index among all connections (of every worker).
    slot: u64,
    /// All connections of the run.
    slots: u64,
    /// Requests per second of the whole run.
    rate_per_s: u64,
    /// Index of the next request of this connection.
    next: u64,
}

impl Schedule {
    /// Connection `slot` of `slots`, in a run of `rate_per_s` requests per second from
    /// `start`. `slots` and `rate_per_s` are at least 1 (checked when the plan is built).
    pub fn new(start: Instant, slot: u64, slots: u64, rate_per_s: u64) -> Schedule {
        debug_assert!(slot < slots && rate_per_s > 0);
        Schedule {
            start,
            slot,
            slots: slots.max(1),
            rate_per_s: rate_per_s.max(1),
            next: 0,
        }
    }

    /// Due time of this connection's `k`-th request.
    pub fn at(&self, k: u64) -> Instant {
        let n = u128::from(self.slot) + u128::from(k) * u128::from(self.slots);
        let nanos = n * NANOS_PER_S / u128::from(self.rate_per_s);
        self.start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Due time of the next request.
    pub fn due(&self) -> Instant {
        self.at(self.next)
    }

    /// Moves on to the following request (the current one was sent).
    pub fn advance(&mut self) {
        self.next += 1;
    }
}

/// From when a request's latency counts. `due` is its scheduled time (`None` in the
/// closed loop), `reached` when the connection was free to send it, `sent` when it was
/// written. See the module documentation.
pub fn latency_start(due: Option<Instant>, reached: Instant, sent: Instant) -> Instant {
    match due {
        Some(due) if reached < due => sent,
        Some(due) => due.min(sent),
        None => sent,
    }
}

/// Delay before reconnecting after a failed connect: it doubles from
/// [`Backoff::FIRST_MS`] to [`Backoff::MAX_MS`], so a refused port costs a few hundred
/// attempts per second per connection rather than a busy loop, and resets on success.
#[derive(Clone, Debug)]
pub struct Backoff {
    next_ms: u64,
}

impl Backoff {
    /// First delay, in milliseconds.
    pub const FIRST_MS: u64 = 1;
    /// Longest delay, in milliseconds.
    pub const MAX_MS: u64 = 100;

    /// A backoff at its first delay.
    pub fn new() -> Backoff {
        Backoff {
            next_ms: Self::FIRST_MS,
        }
    }

    /// The next delay; each call doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next_ms;
        self.next_ms = (d * 2).min(Self::MAX_MS);
        Duration::from_millis(d)
    }

    /// After a successful connect.
    pub fn reset(&mut self) {
        self.next_ms = Self::FIRST_MS;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ns: u64) -> Instant {
        Instant::from_origin(Duration::from_nanos(ns))
    }

    #[test]
    fn connections_interleave_evenly() {
        // 1000 req/s over 4 connections: one request every ms across the run, each
        // connection every 4 ms.
        let mut due = Vec::new();
        for slot in 0..4 {
            let s = Schedule::new(t(0), slot, 4, 1000);
            due.extend((0..3).map(|k| s.at(k).since_origin().as_micros()));
        }
        due.sort_unstable();
        assert_eq!(due, (0..12).map(|i| i * 1000).collect::<Vec<_>>());
    }

    #[test]
    fn the_schedule_does_not_drift() {
        // 3 req/s does not divide a second into whole nanoseconds; request 3,000,000
        // must still land exactly on the millionth second.
        let s = Schedule::new(t(5), 0, 1, 3);
        assert_eq!(s.at(3_000_000), t(5) + Duration::from_secs(1_000_000));
        assert_eq!(s.at(1), t(5 + 333_333_333));
        let mut s = s;
        assert_eq!(s.due(), t(5));
        s.advance();
        assert_eq!(s.due(), t(5 + 333_333_333));
    }

    #[test]
    fn latency_counts_from_the_due_time_only_when_the_server_held_the_connection() {
        // Closed loop: from the send.
        assert_eq!(latency_start(None, t(10), t(12)), t(12));
        // Idle connection, late timer: from the send.
        assert_eq!(latency_start(Some(t(100)), t(50), t(101)), t(101));
        // The previous response came back late: from the due time.
        assert_eq!(latency_start(Some(t(100)), t(130), t(131)), t(100));
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new();
        let ms: Vec<u128> = (0..9).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, [1, 2, 4, 8, 16, 32, 64, 100, 100]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(1));
    }
}
