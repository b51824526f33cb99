//! loadgen's per-reply costs: framing an HTTP/1.1 response (Content-Length and chunked)
//! and recording its latency. loadgen must never be the bottleneck of a benchmark, so
//! these stay small.
//!
//! `cargo bench -p gobalancer-bench --bench framing`

use criterion::{criterion_group, criterion_main, Criterion};
use gobalancer_bench::workloads;

fn framing(c: &mut Criterion) {
    let mut group = c.benchmark_group("loadgen");
    for w in workloads().into_iter().filter(|w| w.name.starts_with("loadgen/")) {
        let mut iteration = (w.setup)();
        let name = w.name.trim_start_matches("loadgen/").to_string();
        group.bench_function(name, |b| b.iter(&mut iteration));
    }
    group.finish();
}

criterion_group!(benches, framing);
criterion_main!(benches);
