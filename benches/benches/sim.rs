//! Criterion benchmark of the simulator: events processed per second at 100 and 1000 nodes.
//!
//! `cargo bench -p iris-benches --bench sim`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use iris_sim::{SimConfig, run};
use std::time::Duration;

fn events_per_second(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim");
    g.sample_size(10);
    for (nodes, minutes) in [(100usize, 1.0), (1000, 0.25)] {
        let cfg = SimConfig {
            nodes,
            minutes,
            churn: 0.05,
            seed: 1,
            ..SimConfig::default()
        };
        // Runs are deterministic: every iteration processes exactly this many events.
        let events = run(&cfg).events;
        g.throughput(Throughput::Elements(events));
        g.measurement_time(Duration::from_secs(if nodes > 100 { 40 } else { 10 }));
        g.bench_function(BenchmarkId::new("events", nodes), |b| b.iter(|| run(&cfg)));
    }
    g.finish();
}

criterion_group!(benches, events_per_second);
criterion_main!(benches);
