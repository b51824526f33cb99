//! The L7 proxy's per-request work in the HTTP codec: parsing a request head (a small
//! GET and a browser's), writing the forwarded head, parsing and writing back a response
//! head, and de-chunking a 16 KiB body.
//!
//! `cargo bench -p gobalancer-bench --bench http`

use criterion::{criterion_group, criterion_main, Criterion};
use gobalancer_bench::workloads;

fn http(c: &mut Criterion) {
    let mut group = c.benchmark_group("http");
    for w in workloads().into_iter().filter(|w| w.name.starts_with("http/")) {
        let mut iteration = (w.setup)();
        let name = w.name.trim_start_matches("http/").to_string();
        group.bench_function(name, |b| b.iter(&mut iteration));
    }
    group.finish();
}

criterion_group!(benches, http);
criterion_main!(benches);
