//! Criterion micro-benchmarks of the relay codec, of one node routing messages, and of
//! messages crossing nodes through the core (whole `Node`s over in-memory links, no sockets).
//!
//! `cargo bench -p iris-benches --bench codec`

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use iris_proto::NetworkKey;
use iris_proto::Security;
use iris_proto::relay::ReplyOutcome;
use iris_proto::relay::codec::{Limits, decode_client, encode_broadcast};
use iris_proto::relay::{ClientPacket, NodePacket};
use iris_proto::testnet::Net;
use iris_proto::{ConnId, Input, Instant, Node, Output};
use std::hint::black_box;
use std::sync::Arc;

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
    for size in [64usize, 1024, 64 * 1024] {
        let mut node = Node::new(Default::default(), [0; 32], Instant::ZERO).unwrap();
        let (member, sender) = (ConnId(0), ConnId(1));
        for (conn, cluster) in [(member, "svc"), (sender, "")] {
            node.handle(Instant::ZERO, Input::ClientConnected(conn));
            let mut init = BytesMut::new();
            iris_proto::relay::client::ClientSession::encode_init(cluster, &mut init);
            node.handle(Instant::ZERO, Input::ClientData(conn, &init));
        }
        while node.poll_output().is_some() {}
        let per_batch = batch(size);
        let mut wire = BytesMut::new();
        for _ in 0..per_batch {
            ClientPacket::Broadcast {
                cluster: "svc".into(),
                message: Bytes::from(vec![1u8; size]),
            }
            .encode(&mut wire);
        }
        g.throughput(Throughput::Elements(per_batch as u64));
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

/// Messages per measured batch: 1000 small ones, or 4 MiB of large ones (a peer's data
/// queue holds 16 MiB, so one batch is never cut by the drop policy for events).
fn batch(size: usize) -> usize {
    1000.min((4 << 20) / size)
}

/// The wire bytes of `n` packets.
fn wire_of(n: usize, packet: impl Fn(u64) -> ClientPacket) -> BytesMut {
    let mut wire = BytesMut::new();
    for i in 0..n as u64 {
        packet(i).encode(&mut wire);
    }
    wire
}

/// A network of `nodes` nodes with a sender on node 0 and one member of `svc` on the last
/// node (node 0 itself when alone).
fn network(nodes: usize, security: Security) -> (Net, ConnId, (usize, ConnId)) {
    let mut net = Net::ready_with(nodes, security);
    let sender = net.client(0, "");
    let member = (nodes - 1, net.client(nodes - 1, "svc"));
    // Long enough for the member's subscription to reach every tree root and for the
    // first capacity beats.
    net.secs(3);
    (net, sender, member)
}

/// Broadcasts and requests from a client of one node to a member on another, through two
/// whole nodes and their links; the same through one networked node (the harness's own
/// cost, the client's decoding included); with sealed links.
fn cross_node(c: &mut Criterion) {
    let pem = include_bytes!("../../iris-proto/tests/fixtures/net-pkcs8.pem");
    let key = Arc::new(NetworkKey::from_bytes(pem).unwrap());
    let mut g = c.benchmark_group("node");
    for size in [64usize, 64 * 1024] {
        let n = batch(size);
        g.throughput(Throughput::Elements(n as u64));
        let casts = wire_of(n, |_| ClientPacket::Broadcast {
            cluster: "svc".into(),
            message: Bytes::from(vec![1u8; size]),
        });
        let requests = wire_of(n, |id| ClientPacket::Request {
            id,
            cluster: "svc".into(),
            request: Bytes::from(vec![2u8; size]),
            timeout_ms: 60_000,
        });
        let reply = Bytes::from(vec![3u8; size]);
        for (name, nodes, security) in [
            ("local", 1, Security::Plain),
            ("cross", 2, Security::Plain),
            ("cross_sealed", 2, Security::Rsa(key.clone())),
        ] {
            let (mut net, sender, (at, member)) = network(nodes, security);
            g.bench_function(BenchmarkId::new(format!("broadcast_{name}"), size), |b| {
                b.iter(|| {
                    net.send_bytes(0, sender, &casts);
                    assert_eq!(net.take(at, member).len(), n);
                })
            });
            g.bench_function(BenchmarkId::new(format!("request_{name}"), size), |b| {
                b.iter(|| {
                    net.send_bytes(0, sender, &requests);
                    let ids: Vec<u64> = net
                        .take(at, member)
                        .into_iter()
                        .filter_map(|p| match p {
                            NodePacket::Request { id, .. } => Some(id),
                            _ => None,
                        })
                        .collect();
                    assert_eq!(ids.len(), n);
                    let replies = wire_of(n, |i| ClientPacket::Reply {
                        id: ids[i as usize],
                        outcome: Ok(reply.clone()),
                    });
                    net.send_bytes(at, member, &replies);
                    let answered = net
                        .take(0, sender)
                        .iter()
                        .filter(|p| {
                            matches!(
                                p,
                                NodePacket::Reply {
                                    outcome: ReplyOutcome::Success(_),
                                    ..
                                }
                            )
                        })
                        .count();
                    assert_eq!(answered, n);
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, codec, node_routing, cross_node);
criterion_main!(benches);
