//! What a run measured: latency histograms, counters, statuses and errors by kind.
//!
//! Each worker fills its own [`Stats`] (no sharing on the hot path); at the end they are
//! merged with [`Stats::merge`], which is exact: HdrHistograms with the same bounds add
//! bucket by bucket, and counters add. The same merge combines the JSON results of
//! several loadgen instances (`loadgen merge`), so load from many machines reports one
//! true p99, not an average of p99s.

use hdrhistogram::Histogram;
use std::fmt;

/// Lowest latency the histograms tell apart, in nanoseconds.
pub const LATENCY_NS_MIN: u64 = 1;
/// Highest latency recorded exactly, in nanoseconds (one hour); larger values are
/// recorded as this.
pub const LATENCY_NS_MAX: u64 = 3_600 * 1_000_000_000;
/// Significant decimal digits kept by the histograms: 3 gives 0.1% resolution.
pub const LATENCY_SIGFIG: u8 = 3;
/// HTTP status codes are three digits (httparse enforces it), so `0..1000` covers all;
/// 0 stands for raw TCP replies, which have none.
pub const STATUS_CODES: usize = 1000;

/// Kinds of failure, each counted on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// The connect failed: refused, unreachable, reset.
    Connect,
    /// The connect took longer than `--connect-timeout`.
    ConnectTimeout,
    /// Writing the request failed (e.g. reset by the peer).
    Write,
    /// Reading the reply failed (e.g. reset by the peer).
    Read,
    /// The peer closed the connection before the reply was complete.
    Closed,
    /// The reply took longer than `--timeout`.
    Timeout,
    /// The reply was not valid HTTP/1.1 (or not of the expected size).
    Malformed,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Connect,
        ErrorKind::ConnectTimeout,
        ErrorKind::Write,
        ErrorKind::Read,
        ErrorKind::Closed,
        ErrorKind::Timeout,
        ErrorKind::Malformed,
    ];

    /// The name used in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::Write => "write",
            ErrorKind::Read => "read",
            ErrorKind::Closed => "closed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Malformed => "malformed",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A new, empty latency histogram with loadgen's bounds.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants within hdrhistogram's documented range (low >= 1,
    // high >= 2 * low, sigfig <= 5), so creation cannot fail.
    Histogram::new_with_bounds(LATENCY_NS_MIN, LATENCY_NS_MAX, LATENCY_SIGFIG).expect("constant histogram bounds")
}

/// Measurements of one worker, or of several merged.
#[derive(Clone, Debug)]
pub struct Stats {
    /// Latency of each completed reply, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Time to connect, in nanoseconds, for each successful connect.
    pub connect: Histogram<u64>,
    /// Completed replies (any status).
    pub requests: u64,
    /// Bytes read from the target.
    pub bytes_read: u64,
    /// Bytes written to the target.
    pub bytes_written: u64,
    /// Successful connects.
    pub connects: u64,
    /// Requests sent later than due on an idle connection by more than
    /// [`LATE_SEND_NS`](crate::client::LATE_SEND_NS): loadgen could not keep up with
    /// its own schedule.
    pub late_sends: u64,
    statuses: Vec<u64>,
    errors: [u64; ErrorKind::ALL.len()],
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl Stats {
    /// Empty measurements.
    pub fn new() -> Stats {
        Stats {
            latency: new_histogram(),
            connect: new_histogram(),
            requests: 0,
            bytes_read: 0,
            bytes_written: 0,
            connects: 0,
            late_sends: 0,
            statuses: vec![0; STATUS_CODES],
            errors: [0; ErrorKind::ALL.len()],
        }
    }

    /// Records a completed reply with `status` (0 for TCP) after `latency_ns`.
    pub fn record_reply(&mut self, status: u16, latency_ns: u64) {
        self.requests += 1;
        self.latency.saturating_record(latency_ns.max(LATENCY_NS_MIN));
        self.add_status(status, 1);
    }

    /// Records a successful connect that took `connect_ns`.
    pub fn record_connect(&mut self, connect_ns: u64) {
        self.connects += 1;
        self.connect.saturating_record(connect_ns.max(LATENCY_NS_MIN));
    }

    /// Counts one error of `kind`.
    pub fn record_error(&mut self, kind: ErrorKind) {
        self.errors[kind.index()] += 1;
    }

    /// Adds `n` replies with `status` to the counts (used by merges).
    pub fn add_status(&mut self, status: u16, n: u64) {
        // Codes over 999 cannot come out of httparse; fold them into 0 rather than index
        // out of bounds if a hand-written JSON file has one.
        let i = usize::from(status);
        let i = if i < STATUS_CODES { i } else { 0 };
        self.statuses[i] += n;
    }

    /// Adds `n` errors of `kind` (used by merges).
    pub fn add_errors(&mut self, kind: ErrorKind, n: u64) {
        self.errors[kind.index()] += n;
    }

    /// Errors of `kind`.
    pub fn errors(&self, kind: ErrorKind) -> u64 {
        self.errors[kind.index()]
    }

    /// Errors of every kind.
    pub fn errors_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// `(status, count)` for every status seen, in order.
    pub fn statuses(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.statuses
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| (s as u16, *n))
    }

    /// HTTP replies whose status is not 2xx or 3xx (wrk's "Non-2xx or 3xx responses").
    pub fn non_2xx_3xx(&self) -> u64 {
        self.statuses()
            .filter(|(s, _)| *s != 0 && !(200..400).contains(s))
            .map(|(_, n)| n)
            .sum()
    }

    /// Adds `other` into `self`, exactly.
    pub fn merge(&mut self, other: &Stats) -> Result<(), hdrhistogram::AdditionError> {
        self.latency.add(&other.latency)?;
        self.connect.add(&other.connect)?;
        self.requests += other.requests;
        self.bytes_read += other.bytes_read;
        self.bytes_written += other.bytes_written;
        self.connects += other.connects;
        self.late_sends += other.late_sends;
        for (a, b) in self.statuses.iter_mut().zip(&other.statuses) {
            *a += b;
        }
        for (a, b) in self.errors.iter_mut().zip(&other.errors) {
            *a += b;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_is_exact() {
        // Two workers with disjoint latency ranges: the merged p50 and max are those of
        // the union, which averaging percentiles would get wrong.
        let mut a = Stats::new();
        let mut b = Stats::new();
        let mut all = Stats::new();
        for i in 1..=1000u64 {
            a.record_reply(200, i * 1_000);
            all.record_reply(200, i * 1_000);
        }
        for i in 1..=3000u64 {
            b.record_reply(if i % 3 == 0 { 503 } else { 200 }, 5_000_000 + i * 1_000);
            all.record_reply(if i % 3 == 0 { 503 } else { 200 }, 5_000_000 + i * 1_000);
        }
        a.record_error(ErrorKind::Connect);
        b.record_error(ErrorKind::Connect);
        b.record_error(ErrorKind::Timeout);
        let mut m = a.clone();
        m.merge(&b).unwrap();
        assert_eq!(m.requests, 4000);
        assert_eq!(m.latency, all.latency);
        assert_eq!(m.latency.value_at_quantile(0.5), all.latency.value_at_quantile(0.5));
        assert!(m.latency.value_at_quantile(0.5) > 5_000_000);
        assert_eq!(m.statuses().collect::<Vec<_>>(), vec![(200, 3000), (503, 1000)]);
        assert_eq!(m.non_2xx_3xx(), 1000);
        assert_eq!((m.errors(ErrorKind::Connect), m.errors(ErrorKind::Timeout)), (2, 1));
        assert_eq!(m.errors_total(), 3);
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut s = Stats::new();
        s.record_reply(200, 0);
        s.record_reply(200, u64::MAX);
        s.add_status(4242, 1);
        assert_eq!(s.latency.len(), 2);
        assert!(s.latency.max() >= LATENCY_NS_MAX);
        assert_eq!(s.statuses().collect::<Vec<_>>(), vec![(0, 1), (200, 2)]);
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_name(k.name()), Some(k));
        }
    }
}
