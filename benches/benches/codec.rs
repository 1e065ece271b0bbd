//! Criterion micro-benchmarks of the relay codec and of one node routing messages.
//!
//! `cargo bench -p iris-benches --bench codec`

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use iris_proto::relay::codec::{Limits, decode_client, encode_broadcast};
use iris_proto::relay::{ClientPacket, NodePacket};
use iris_proto::{ConnId, Input, Instant, Node, Output};
use std::hint::black_box;

const SIZES: [usize; 3] = [64, 1024, 64 * 1024];

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    for size in SIZES {
        let payload = Bytes::from(vec![0xabu8; size]);
        // A batch of packets as one read delivers them, to measure per-packet cost.
        let per_batch = (1 << 20) / (size + 16);
        let mut wire = BytesMut::new();
        for _ in 0..per_batch {
            encode_broadcast(&mut wire, "bench-cluster", &payload);
        }
        let wire = wire.freeze();
        g.throughput(Throughput::Elements(per_batch as u64));
        g.bench_with_input(
            BenchmarkId::new("decode_broadcast", size),
            &wire,
            |b, wire| {
                let limits = Limits::default();
                b.iter(|| {
                    let mut buf = BytesMut::from(&wire[..]);
                    let mut n = 0;
                    while let Some(p) = decode_client(&mut buf, &limits).unwrap() {
                        black_box(p);
                        n += 1;
                    }
                    assert_eq!(n, per_batch);
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("encode_delivery", size),
            &payload,
            |b, payload| {
                let mut out = BytesMut::with_capacity(wire.len() + 1024);
                b.iter(|| {
                    out.clear();
                    for _ in 0..per_batch {
                        NodePacket::Broadcast {
                            message: payload.clone(),
                        }
                        .encode(&mut out);
                    }
                    black_box(out.len());
                })
            },
        );
    }
    g.finish();
}

/// One node, one sender, one member: decode, route and encode a broadcast, no sockets.
fn node_routing(c: &mut Criterion) {
    let mut g = c.benchmark_group("node");
    for size in [64usize, 1024] {
        let mut node = Node::new(Default::default(), [0; 32], Instant::ZERO).unwrap();
        let (member, sender) = (ConnId(0), ConnId(1));
        for (conn, cluster) in [(member, "svc"), (sender, "")] {
            node.handle(Instant::ZERO, Input::ClientConnected(conn));
            let mut init = BytesMut::new();
            iris_proto::relay::client::ClientSession::encode_init(cluster, &mut init);
            node.handle(Instant::ZERO, Input::ClientData(conn, &init));
        }
        while node.poll_output().is_some() {}
        let per_batch = 1000;
        let mut wire = BytesMut::new();
        for _ in 0..per_batch {
            ClientPacket::Broadcast {
                cluster: "svc".into(),
                message: Bytes::from(vec![1u8; size]),
            }
            .encode(&mut wire);
        }
        g.throughput(Throughput::Elements(per_batch));
        g.bench_function(BenchmarkId::new("broadcast_routed", size), |b| {
            b.iter(|| {
                node.handle(Instant::ZERO, Input::ClientData(sender, &wire));
                while let Some(out) = node.poll_output() {
                    if let Output::Transmit(conn, data) = out {
                        node.handle(Instant::ZERO, Input::ClientFlushed(conn, data.len()));
                    }
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, codec, node_routing);
criterion_main!(benches);
