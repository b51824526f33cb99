//! What a person reads after a run: the text report, and the SVG timeline.
//!
//! The timeline draws, for each backend, how many requests it received in each time
//! bucket (one line per backend), failed requests as a red line, and every fault as a
//! labelled vertical mark, so a failover reads at a glance: one line drops to zero at
//! the crash mark, the others rise, and it comes back after the bounce mark.

use crate::log::{Log, What};
use crate::oracle::Report;
use crate::runner::RunOutput;
use crate::scenario::Prepared;
use gobalancer_loadgen::client::TapOutcome;
use gobalancer_loadgen::plot::escape;
use std::fmt::Write as _;
use std::time::Duration;

/// Buckets on the time axis of the SVG.
const BUCKETS: usize = 120;
const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 400.0;
const MARGIN_LEFT: f64 = 60.0;
const MARGIN_RIGHT: f64 = 160.0;
const MARGIN_TOP: f64 = 30.0;
const MARGIN_BOTTOM: f64 = 130.0;
/// Line colours of the backends, in order (then repeated).
const COLOURS: [&str; 8] = [
    "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
];

fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

/// The command that replays `seed` of the scenario at `origin`.
pub fn replay_command(origin: &str, seed: u64) -> String {
    format!(
        "cargo run -p gobalancer-sim --release -- run {origin} --seed {seed} --trace trace-{seed}.txt --svg timeline-{seed}.svg"
    )
}

/// The text report of one seed.
pub fn text(p: &Prepared, r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "scenario {} ({}), seed {}", p.scenario.name, p.origin, r.seed);
    let replies: Vec<String> = r.replies.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    let failures: Vec<String> = r.failures.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    let _ = writeln!(
        o,
        "  requests: {} sent, {} replied ({}), {} failed ({}), {} in flight at the end, {} lost with their client",
        r.sent,
        r.replied(),
        replies.join(", "),
        r.failures.values().sum::<u64>(),
        if failures.is_empty() {
            "none".into()
        } else {
            failures.join(", ")
        },
        r.run_over,
        r.client_lost
    );
    let total: u64 = r.received.iter().map(|(_, n)| n).sum();
    let shares: Vec<String> = r
        .received
        .iter()
        .map(|(b, n)| format!("{b} {:.1}% ({n})", 100.0 * *n as f64 / total.max(1) as f64))
        .collect();
    let _ = writeln!(o, "  share: {}", shares.join(", "));
    for d in &r.detections {
        let _ = writeln!(
            o,
            "  detection: {} died at {} ({}); {}",
            d.backend,
            secs(d.died),
            d.cause,
            match d.last_pick {
                Some(t) => format!("{} picks after, the last at {}: {}", d.picks, secs(t), secs(d.took)),
                None => "never picked after".into(),
            }
        );
    }
    for rc in &r.recoveries {
        let _ = writeln!(
            o,
            "  recovery: {} back at {} ({}); {}",
            rc.backend,
            secs(rc.back),
            rc.cause,
            match rc.took {
                Some(t) => format!("full weight after {}", secs(t)),
                None => format!("not at full weight within {}", secs(rc.window)),
            }
        );
    }
    if let Some((from, n, rate)) = r.liveness {
        let _ = writeln!(
            o,
            "  liveness: from {}: {:.2}% of {n} idempotent requests succeeded",
            secs(from),
            rate * 100.0
        );
    }
    let streams: Vec<String> = r
        .streams
        .iter()
        .map(|(h, n)| match r.failed_connects.get(h) {
            Some(a) => format!("{h} {n} ({a} failed connects)"),
            None => format!("{h} {n}"),
        })
        .collect();
    let _ = writeln!(
        o,
        "  conservation: at most {} active leases; at the end {}; streams at quiescence: {}{}",
        r.total_active_max,
        match r.at_end {
            Some((t, open)) => format!("{t} leases, {open} client connections"),
            None => "no balancer state".into(),
        },
        streams.join(", "),
        match r.pooled_idle {
            Some(n) if p.l7 => format!("; {n} pooled idle backend connections"),
            _ => String::new(),
        }
    );
    if p.l7 {
        let ours: Vec<String> = r.ours.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        let _ = writeln!(
            o,
            "  http: responses of ours: {}; received again: {} retries on another backend, {} re-sends on a fresh connection",
            if ours.is_empty() { "none".into() } else { ours.join(", ") },
            r.resent.0,
            r.resent.1
        );
    }
    if r.reloads != (0, 0) {
        let _ = writeln!(
            o,
            "  reloads: {} applied, {} refused; drained backends: {} in-flight requests finished, {} cut at the deadline (drained_cut_total {})",
            r.reloads.0, r.reloads.1, r.drain_finished, r.drain_cut, r.drained_cut_total
        );
    }
    let _ = writeln!(
        o,
        "  trace: {} events, digest {:016x}; {} simulated",
        r.digest.1,
        r.digest.0,
        secs(r.elapsed)
    );
    if r.violations.is_empty() {
        let _ = writeln!(o, "  violations: none");
    } else {
        let _ = writeln!(o, "  violations: {}", r.violations.len());
        for v in &r.violations {
            let _ = writeln!(o, "    {v}");
        }
        let _ = writeln!(o, "  replay: {}", replay_command(&p.origin, r.seed));
    }
    o
}

/// One line per seed, for sweeps.
pub fn brief(r: &Report) -> String {
    if r.violations.is_empty() {
        format!(
            "seed {} ok: {} sent, {} replied, digest {:016x}",
            r.seed,
            r.sent,
            r.replied(),
            r.digest.0
        )
    } else {
        format!(
            "seed {} FAIL: {}",
            r.seed,
            r.violations
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(" | ")
        )
    }
}

/// The SVG timeline of one run.
pub fn svg(p: &Prepared, out: &RunOutput) -> String {
    let s = &p.scenario;
    let log: &Log = &out.log;
    let end = s.duration.0.max(Duration::from_millis(1));
    let bucket = |t: Duration| ((t.as_secs_f64() / end.as_secs_f64() * BUCKETS as f64) as usize).min(BUCKETS - 1);
    let nb = s.backends.len();
    let mut counts = vec![vec![0u64; BUCKETS]; nb];
    let mut failed = vec![0u64; BUCKETS];
    for e in &log.events {
        match e.what {
            What::Seen { backend, .. } if e.at <= end => {
                if let Some(c) = counts.get_mut(usize::from(backend)) {
                    c[bucket(e.at)] += 1;
                }
            }
            What::Outcome { outcome, .. }
                if e.at <= end && !matches!(outcome, TapOutcome::Reply { .. } | TapOutcome::RunOver) =>
            {
                failed[bucket(e.at)] += 1;
            }
            _ => {}
        }
    }
    let ymax = counts
        .iter()
        .flatten()
        .chain(failed.iter())
        .copied()
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let x = |i: f64| MARGIN_LEFT + plot_w * i / BUCKETS as f64;
    let y = |n: f64| MARGIN_TOP + plot_h * (1.0 - n / ymax);
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{MARGIN_LEFT}" y="18" font-size="13">{} (seed {}): requests received per backend per {:.2}s</text>"#,
        escape(&s.name),
        out.seed,
        end.as_secs_f64() / BUCKETS as f64
    );
    // Axes and a few ticks.
    let _ = writeln!(
        o,
        r##"<path d="M{MARGIN_LEFT},{MARGIN_TOP} V{} H{}" stroke="#333" fill="none"/>"##,
        MARGIN_TOP + plot_h,
        MARGIN_LEFT + plot_w
    );
    for k in 0..=4 {
        let n = ymax * f64::from(k) / 4.0;
        let _ = writeln!(
            o,
            r##"<text x="{}" y="{}" text-anchor="end" fill="#333">{:.0}</text>"##,
            MARGIN_LEFT - 4.0,
            y(n) + 4.0,
            n
        );
        let t = end.as_secs_f64() * f64::from(k) / 4.0;
        let _ = writeln!(
            o,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#333">{t:.1}s</text>"##,
            x(BUCKETS as f64 * f64::from(k) / 4.0),
            MARGIN_TOP + plot_h + 14.0
        );
    }
    let mut series: Vec<(String, &str, &Vec<u64>)> = s
        .backends
        .iter()
        .zip(counts.iter())
        .enumerate()
        .map(|(i, (b, c))| (b.name.clone(), COLOURS[i % COLOURS.len()], c))
        .collect();
    series.push(("failed".into(), "#d62728", &failed));
    for (i, (name, colour, c)) in series.iter().enumerate() {
        let points: Vec<String> = c
            .iter()
            .enumerate()
            .map(|(k, n)| format!("{:.1},{:.1}", x(k as f64 + 0.5), y(*n as f64)))
            .collect();
        let dash = if *name == "failed" {
            r#" stroke-dasharray="4 2""#
        } else {
            ""
        };
        let _ = writeln!(
            o,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="1.5"{dash}/>"#,
            points.join(" ")
        );
        let ly = MARGIN_TOP + 14.0 * i as f64;
        let lx = MARGIN_LEFT + plot_w + 12.0;
        let _ = writeln!(
            o,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            lx + 16.0,
            lx + 20.0,
            ly + 4.0,
            escape(name)
        );
    }
    // Faults: a vertical mark and a slanted label under the axis.
    for f in &out.faults {
        if f.at.0 > end {
            continue;
        }
        let fx = MARGIN_LEFT + plot_w * f.at.0.as_secs_f64() / end.as_secs_f64();
        let _ = writeln!(
            o,
            r##"<line x1="{fx:.1}" y1="{MARGIN_TOP}" x2="{fx:.1}" y2="{}" stroke="#888" stroke-dasharray="2 3"/>"##,
            MARGIN_TOP + plot_h
        );
        let ly = MARGIN_TOP + plot_h + 24.0;
        let _ = writeln!(
            o,
            r##"<text x="{fx:.1}" y="{ly}" transform="rotate(35 {fx:.1} {ly})" fill="#555">{:.2}s {}</text>"##,
            f.at.0.as_secs_f64(),
            escape(&f.fault.label())
        );
    }
    let _ = writeln!(o, "</svg>");
    o
}
