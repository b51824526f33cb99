//! Config parse cost: the annotated example (every field) and the embedded default,
//! through the whole pipeline (RON, schema, validation with line:col).
//!
//! `cargo bench -p gobalancer-bench --bench config_parse`

use criterion::{criterion_group, criterion_main, Criterion};
use gobalancer::config::Config;
use gobalancer_bench::EXAMPLE_CONFIG;
use std::hint::black_box;

const DEFAULT_CONFIG: &str = include_str!("../../config/default.ron");

fn config_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("config/parse");
    for (name, text) in [("example", EXAMPLE_CONFIG), ("default", DEFAULT_CONFIG)] {
        group.bench_function(name, |b| {
            b.iter(|| Config::parse(black_box(text), "bench.ron").map(|c| c.listeners.len()))
        });
    }
    group.finish();
}

criterion_group!(benches, config_parse);
criterion_main!(benches);
