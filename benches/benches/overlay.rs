//! Criterion benchmark of Pastry routing decisions.
//!
//! `cargo bench -p iris-benches --bench overlay`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use iris_proto::NodeId;
use iris_proto::inspect::{LeafSet, RoutingTable, next_hop};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use std::hint::black_box;

/// `n` nodes with true leaf sets (16) and routing tables holding a fifth of the others.
fn network(n: usize) -> Vec<(NodeId, LeafSet, RoutingTable)> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let ids: Vec<NodeId> = (0..n).map(|_| NodeId(rng.random())).collect();
    ids.iter()
        .map(|&own| {
            let mut leaves = LeafSet::new(own, 16);
            let mut table = RoutingTable::new(own);
            for &id in &ids {
                leaves.insert(id);
                if rng.random_bool(0.2) {
                    table.insert(id);
                }
            }
            (own, leaves, table)
        })
        .collect()
}

fn routing(c: &mut Criterion) {
    let mut g = c.benchmark_group("overlay");
    for n in [100usize, 1000] {
        let nodes = network(n);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let keys: Vec<(usize, NodeId)> = (0..1000)
            .map(|_| (rng.random_range(0..n), NodeId(rng.random())))
            .collect();
        g.throughput(Throughput::Elements(keys.len() as u64));
        g.bench_function(BenchmarkId::new("next_hop", n), |b| {
            b.iter(|| {
                for &(at, key) in &keys {
                    let (own, leaves, table) = &nodes[at];
                    black_box(next_hop(*own, leaves, table, key));
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
