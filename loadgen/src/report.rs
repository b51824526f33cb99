//! Results for people and for machines: the human summary, the JSON file, and the merge
//! of several JSON files.
//!
//! The JSON carries the summary numbers (for a quick `jq`) and the full latency
//! histograms in HdrHistogram's compressed V2 format, base64-encoded: the same encoding
//! HdrHistogram's log tools read. `loadgen merge` decodes and adds them, so the merged
//! percentiles are exactly those of one run that had seen every request.

use crate::stats::{new_histogram, ErrorKind, Stats};
use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;
use thiserror::Error;

/// Version of the JSON layout; `merge` refuses files of another.
pub const FORMAT: u32 = 1;
/// Most files one `loadgen merge` reads.
pub const MERGE_FILES_MAX: usize = 10_000;
/// Largest JSON result file read, in bytes.
pub const REPORT_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// JSON key of the count of raw TCP replies (which have no status).
pub const TCP_STATUS_KEY: &str = "tcp";

/// Latency percentiles of one histogram, in nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Summary {
    /// The percentiles of `h`.
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// How the run was set up, for the report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The target URL.
    pub target: String,
    /// `http` or `tcp`.
    pub protocol: String,
    /// Worker threads.
    pub threads: u32,
    /// Connections.
    pub connections: u32,
    /// Open-loop rate, if any.
    pub rate_per_s: Option<u64>,
    /// A new connection per request.
    pub new_conn: bool,
    /// Warm-up, in seconds.
    pub warmup_s: f64,
}

/// One run's results, or several merged. This is the `--json` file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`FORMAT`].
    pub format: u32,
    /// How it ran (of the first file, for a merge; connections and threads add up).
    #[serde(flatten)]
    pub run: RunInfo,
    /// Loadgen instances merged into this report (1 for a plain run).
    pub instances: u32,
    /// Measured window in seconds (the longest of the instances).
    pub elapsed_s: f64,
    /// Completed replies.
    pub requests: u64,
    /// Replies per second: the sum over instances, each over its own window.
    pub requests_per_s: f64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Successful connects.
    pub connects: u64,
    /// Sends that fell behind the open-loop schedule (see `LATE_SEND_NS`).
    pub late_sends: u64,
    /// Replies by HTTP status ([`TCP_STATUS_KEY`] for raw TCP).
    pub statuses: BTreeMap<String, u64>,
    /// Errors by kind (every kind listed, zeros included).
    pub errors: BTreeMap<String, u64>,
    /// Latency percentiles, nanoseconds.
    pub latency_ns: Summary,
    /// Connect-time percentiles, nanoseconds.
    pub connect_ns: Summary,
    /// The latency histogram: HdrHistogram V2 deflate, base64.
    pub latency_histogram: String,
    /// The connect-time histogram, encoded the same way.
    pub connect_histogram: String,
}

/// A report that cannot be read, written or merged.
#[derive(Debug, Error)]
pub enum ReportError {
    /// JSON syntax or shape.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// A histogram did not decode.
    #[error("histogram {0}: {1}")]
    Histogram(&'static str, String),
    /// A file of another layout version.
    #[error("format {0}; this loadgen reads format {FORMAT}")]
    Format(u32),
    /// Nothing to merge.
    #[error("no reports to merge")]
    Empty,
    /// A count in the file makes no sense.
    #[error("{0}")]
    Invalid(String),
}

fn encode(h: &Histogram<u64>) -> Result<String, ReportError> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .map_err(|e| ReportError::Histogram("encode", format!("{e:?}")))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn decode(what: &'static str, s: &str) -> Result<Histogram<u64>, ReportError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| ReportError::Histogram(what, e.to_string()))?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| ReportError::Histogram(what, format!("{e:?}")))?;
    // Re-home into loadgen's bounds so that histograms from any source add up.
    let mut out = new_histogram();
    out.add(&h)
        .map_err(|e| ReportError::Histogram(what, format!("{e:?}")))?;
    Ok(out)
}

impl Report {
    /// The report of a run that measured `stats` over `elapsed`.
    pub fn new(run: RunInfo, stats: &Stats, elapsed: Duration) -> Result<Report, ReportError> {
        let elapsed_s = elapsed.as_secs_f64();
        Ok(Report {
            format: FORMAT,
            run,
            instances: 1,
            elapsed_s,
            requests: stats.requests,
            requests_per_s: if elapsed_s > 0.0 {
                stats.requests as f64 / elapsed_s
            } else {
                0.0
            },
            bytes_read: stats.bytes_read,
            bytes_written: stats.bytes_written,
            connects: stats.connects,
            late_sends: stats.late_sends,
            statuses: stats
                .statuses()
                .map(|(s, n)| {
                    let key = if s == 0 {
                        TCP_STATUS_KEY.to_string()
                    } else {
                        s.to_string()
                    };
                    (key, n)
                })
                .collect(),
            errors: ErrorKind::ALL
                .into_iter()
                .map(|k| (k.name().to_string(), stats.errors(k)))
                .collect(),
            latency_ns: Summary::of(&stats.latency),
            connect_ns: Summary::of(&stats.connect),
            latency_histogram: encode(&stats.latency)?,
            connect_histogram: encode(&stats.connect)?,
        })
    }

    /// Reads a report from JSON.
    pub fn from_json(text: &str) -> Result<Report, ReportError> {
        let r: Report = serde_json::from_str(text)?;
        if r.format != FORMAT {
            return Err(ReportError::Format(r.format));
        }
        Ok(r)
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> Result<String, ReportError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// The measurements inside the report, histograms decoded.
    pub fn stats(&self) -> Result<Stats, ReportError> {
        let mut s = Stats::new();
        s.latency = decode("latency", &self.latency_histogram)?;
        s.connect = decode("connect", &self.connect_histogram)?;
        s.requests = self.requests;
        s.bytes_read = self.bytes_read;
        s.bytes_written = self.bytes_written;
        s.connects = self.connects;
        s.late_sends = self.late_sends;
        for (k, n) in &self.statuses {
            let code = if k == TCP_STATUS_KEY {
                0
            } else {
                k.parse::<u16>()
                    .map_err(|_| ReportError::Invalid(format!("status {k:?} is not a number")))?
            };
            s.add_status(code, *n);
        }
        for (k, n) in &self.errors {
            let kind =
                ErrorKind::from_name(k).ok_or_else(|| ReportError::Invalid(format!("unknown error kind {k:?}")))?;
            s.add_errors(kind, *n);
        }
        Ok(s)
    }

    /// Merges several reports into one, exactly: histograms and counters add; the rate
    /// is the sum of the instances' rates (they ran side by side); the window is the
    /// longest.
    pub fn merge(reports: &[Report]) -> Result<Report, ReportError> {
        let first = reports.first().ok_or(ReportError::Empty)?;
        let mut stats = first.stats()?;
        let mut run = first.run.clone();
        let mut instances = first.instances;
        let mut elapsed_s = first.elapsed_s;
        let mut requests_per_s = first.requests_per_s;
        for r in &reports[1..] {
            stats
                .merge(&r.stats()?)
                .map_err(|e| ReportError::Histogram("merge", format!("{e:?}")))?;
            instances += r.instances;
            elapsed_s = elapsed_s.max(r.elapsed_s);
            requests_per_s += r.requests_per_s;
            run.threads += r.run.threads;
            run.connections += r.run.connections;
            run.rate_per_s = match (run.rate_per_s, r.run.rate_per_s) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
            if r.run.target != run.target && !run.target.split(" + ").any(|t| t == r.run.target) {
                run.target = format!("{} + {}", run.target, r.run.target);
            }
        }
        let mut merged = Report::new(run, &stats, Duration::from_secs_f64(elapsed_s.max(0.0)))?;
        merged.instances = instances;
        merged.requests_per_s = requests_per_s;
        Ok(merged)
    }

    /// The human summary, in the spirit of wrk's. `stats` (the decoded measurements)
    /// adds a percentile table when `latency_table` is set.
    pub fn human(&self, stats: Option<&Stats>, latency_table: bool) -> String {
        let mut o = String::new();
        let r = &self.run;
        let lp = match r.rate_per_s {
            Some(rate) => format!("open loop at {rate} req/s"),
            None => "closed loop".to_string(),
        };
        let _ = writeln!(
            o,
            "{} @ {} ({lp}{})",
            self.describe_duration(),
            r.target,
            if r.new_conn { ", new connection per request" } else { "" }
        );
        let _ = writeln!(
            o,
            "  {} threads and {} connections{}",
            r.threads,
            r.connections,
            if self.instances > 1 {
                format!(", {} instances merged", self.instances)
            } else {
                String::new()
            }
        );
        let l = &self.latency_ns;
        let _ = writeln!(
            o,
            "  Latency  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {})",
            fmt_ns(l.p50),
            fmt_ns(l.p90),
            fmt_ns(l.p99),
            fmt_ns(l.p999),
            fmt_ns(l.max),
            fmt_ns(l.mean as u64)
        );
        if self.connect_ns.count > 0 {
            let c = &self.connect_ns;
            let _ = writeln!(
                o,
                "  Connect  p50 {}  p99 {}  max {}  ({} connects)",
                fmt_ns(c.p50),
                fmt_ns(c.p99),
                fmt_ns(c.max),
                self.connects
            );
        }
        if latency_table {
            if let Some(s) = stats {
                let _ = writeln!(o, "  Latency distribution");
                for (label, q) in [
                    ("50%", 0.5),
                    ("75%", 0.75),
                    ("90%", 0.9),
                    ("99%", 0.99),
                    ("99.9%", 0.999),
                    ("99.99%", 0.9999),
                    ("99.999%", 0.99999),
                    ("100%", 1.0),
                ] {
                    let _ = writeln!(o, "    {label:>8}  {}", fmt_ns(s.latency.value_at_quantile(q)));
                }
            }
        }
        let _ = writeln!(
            o,
            "  {} requests in {:.2}s, {} read, {} written",
            self.requests,
            self.elapsed_s,
            fmt_bytes(self.bytes_read),
            fmt_bytes(self.bytes_written)
        );
        let statuses: Vec<String> = self.statuses.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        if !statuses.is_empty() {
            let _ = writeln!(o, "  Replies  {}", statuses.join(", "));
        }
        let errors: Vec<String> = self
            .errors
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        if !errors.is_empty() {
            let _ = writeln!(o, "  Errors   {}", errors.join(", "));
        }
        if self.late_sends > 0 {
            let _ = writeln!(
                o,
                "  Warning: {} requests were sent late on idle connections: loadgen fell behind its schedule (add threads or lower --rate)",
                self.late_sends
            );
        }
        let _ = writeln!(o, "Requests/sec: {:.2}", self.requests_per_s);
        let per_s = if self.elapsed_s > 0.0 {
            self.bytes_read as f64 / self.elapsed_s
        } else {
            0.0
        };
        let _ = writeln!(o, "Transfer/sec: {}", fmt_bytes(per_s as u64));
        o
    }

    fn describe_duration(&self) -> String {
        format!("{:.1}s run", self.elapsed_s)
    }
}

/// `1234` ns as `1.23us`, and so on up to seconds.
pub fn fmt_ns(ns: u64) -> String {
    let v = ns as f64;
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.2}us", v / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2}ms", v / 1e6)
    } else {
        format!("{:.2}s", v / 1e9)
    }
}

/// Bytes with a binary unit.
pub fn fmt_bytes(b: u64) -> String {
    let v = b as f64;
    if b < 1024 {
        format!("{b}B")
    } else if b < 1024 * 1024 {
        format!("{:.2}KiB", v / 1024.0)
    } else if b < 1024 * 1024 * 1024 {
        format!("{:.2}MiB", v / (1024.0 * 1024.0))
    } else {
        format!("{:.2}GiB", v / (1024.0 * 1024.0 * 1024.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(target: &str) -> RunInfo {
        RunInfo {
            target: target.into(),
            protocol: "http".into(),
            threads: 1,
            connections: 2,
            rate_per_s: None,
            new_conn: false,
            warmup_s: 0.0,
        }
    }

    #[test]
    fn json_round_trip_and_merge_are_exact() {
        let mut a = Stats::new();
        let mut b = Stats::new();
        for i in 1..=500u64 {
            a.record_reply(200, i * 997);
            b.record_reply(404, 1_000_000 + i * 13);
        }
        a.record_error(ErrorKind::Closed);
        b.record_connect(50_000);
        let ra = Report::new(run("http://a/"), &a, Duration::from_secs(2)).unwrap();
        let rb = Report::new(run("http://b/"), &b, Duration::from_secs(4)).unwrap();
        let ra = Report::from_json(&ra.to_json().unwrap()).unwrap();
        assert_eq!(ra.stats().unwrap().latency, a.latency);

        let m = Report::merge(&[ra.clone(), rb.clone()]).unwrap();
        let mut all = a.clone();
        all.merge(&b).unwrap();
        assert_eq!(m.stats().unwrap().latency, all.latency);
        assert_eq!(m.latency_ns, Summary::of(&all.latency));
        assert_eq!(m.requests, 1000);
        assert_eq!((m.instances, m.run.connections, m.elapsed_s), (2, 4, 4.0));
        assert_eq!(m.requests_per_s, 250.0 + 125.0);
        assert_eq!(m.statuses.get("404"), Some(&500));
        assert_eq!(m.errors.get("closed"), Some(&1));
        assert_eq!(m.connects, 1);
        assert_eq!(m.run.target, "http://a/ + http://b/");
        // Merging a merge keeps counting instances.
        let mm = Report::merge(&[m, rb]).unwrap();
        assert_eq!(mm.instances, 3);
        assert!(mm
            .human(Some(&mm.stats().unwrap()), true)
            .contains("3 instances merged"));
    }

    #[test]
    fn bad_files_are_errors() {
        assert!(Report::from_json("{").is_err());
        let mut r = Report::new(run("x"), &Stats::new(), Duration::from_secs(1)).unwrap();
        r.format = 99;
        assert!(matches!(
            Report::from_json(&r.to_json().unwrap()),
            Err(ReportError::Format(99))
        ));
        r.format = FORMAT;
        r.latency_histogram = "not base64!".into();
        assert!(r.stats().is_err());
        assert!(matches!(Report::merge(&[]), Err(ReportError::Empty)));
    }

    #[test]
    fn units_read_naturally() {
        assert_eq!(fmt_ns(999), "999ns");
        assert_eq!(fmt_ns(45_100), "45.10us");
        assert_eq!(fmt_ns(2_500_000), "2.50ms");
        assert_eq!(fmt_bytes(3 * 1024 * 1024), "3.00MiB");
    }
}
