//! Pick cost of every algorithm at 10 to 100,000 backends: one `select` and its first
//! lease (which also increments and, when dropped, decrements the active counter).
//!
//! `cargo bench -p gobalancer-bench --bench pick`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use gobalancer::balancer::{Algorithm, Balancer, PickKey};
use gobalancer::io::SplitMix64;
use std::hint::black_box;

fn pick(c: &mut Criterion) {
    for algorithm in Algorithm::ALL {
        let mut group = c.benchmark_group(format!("pick/{algorithm}"));
        for n in [10usize, 100, 1_000, 10_000, 100_000] {
            let weights: Vec<u32> = (0..n).map(|i| 1 + (i % 4) as u32).collect();
            let balancer = Balancer::new(algorithm, &weights);
            let mut rng = SplitMix64::new(42);
            group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                b.iter(|| {
                    let key = PickKey {
                        client: rng.next_u64(),
                        random: rng.next_u64(),
                    };
                    let lease = balancer.select(black_box(key)).next();
                    black_box(lease.map(|l| l.index()))
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, pick);
criterion_main!(benches);
