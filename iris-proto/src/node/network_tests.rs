//! Relay operations between clients of different nodes, in memory.

use crate::relay::{ClientPacket, NodePacket, ReplyOutcome};
use crate::testnet::Net;
use bytes::Bytes;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[test]
fn a_broadcast_reaches_every_member_on_every_node_once() {
    let mut net = Net::ready(4);
    let members: Vec<_> = (0..4).map(|i| (i, net.client(i, "svc"))).collect();
    let plain = net.client(2, "");
    let sender = net.client(1, "");
    // Trees form within a beat.
    net.secs(2);
    for n in 0..10 {
        net.send(
            1,
            sender,
            ClientPacket::Broadcast {
                cluster: "svc".into(),
                message: b(&format!("m{n}")),
            },
        );
    }
    net.secs(1);
    for &(i, m) in &members {
        let got = net.take(i, m);
        let want: Vec<NodePacket> = (0..10)
            .map(|n| NodePacket::Broadcast {
                message: b(&format!("m{n}")),
            })
            .collect();
        let mut got_sorted = got.clone();
        got_sorted.sort_by_key(|p| format!("{p:?}"));
        let mut want_sorted = want.clone();
        want_sorted.sort_by_key(|p| format!("{p:?}"));
        assert_eq!(got_sorted, want_sorted, "member on node {i}: {got:?}");
    }
    assert!(net.take(2, plain).is_empty());
    assert!(net.take(1, sender).is_empty());
}

#[test]
fn an_event_reaches_subscribers_on_other_nodes_and_stops_after_unsubscribe() {
    let mut net = Net::ready(3);
    let sub = net.client(2, "");
    net.send(
        2,
        sub,
        ClientPacket::Subscribe {
            topic: "news".into(),
        },
    );
    let publisher = net.client(0, "");
    net.secs(2);
    let publish = |net: &mut Net, e: &str| {
        net.send(
            0,
            publisher,
            ClientPacket::Publish {
                topic: "news".into(),
                event: b(e),
            },
        );
        net.secs(1);
    };
    publish(&mut net, "e1");
    assert_eq!(
        net.take(2, sub),
        vec![NodePacket::Publish {
            topic: "news".into(),
            event: b("e1")
        }]
    );
    net.send(
        2,
        sub,
        ClientPacket::Unsubscribe {
            topic: "news".into(),
        },
    );
    net.secs(2);
    publish(&mut net, "e2");
    assert!(net.take(2, sub).is_empty());
    // The trees of a topic nobody holds are gone everywhere.
    for i in 0..3 {
        assert_eq!(net.node(i).scribe().unwrap().tree_count(), 0, "node {i}");
    }
}

#[test]
fn a_request_is_answered_by_a_member_on_another_node() {
    let mut net = Net::ready(3);
    let m = net.client(2, "echo");
    let c = net.client(0, "");
    net.secs(2);
    net.send(
        0,
        c,
        ClientPacket::Request {
            id: 7,
            cluster: "echo".into(),
            request: b("ping"),
            timeout_ms: 5000,
        },
    );
    let got = net.take(2, m);
    let [
        NodePacket::Request {
            id,
            request,
            timeout_ms,
        },
    ] = &got[..]
    else {
        panic!("the member got {got:?}");
    };
    assert_eq!((request, *timeout_ms), (&b("ping"), 5000));
    net.send(
        2,
        m,
        ClientPacket::Reply {
            id: *id,
            outcome: Ok(b("pong")),
        },
    );
    assert_eq!(
        net.take(0, c),
        vec![NodePacket::Reply {
            id: 7,
            outcome: ReplyOutcome::Success(b("pong"))
        }]
    );
    // Exactly one: nothing more comes, not even at the deadline.
    net.secs(10);
    assert!(net.take(0, c).is_empty());
}

#[test]
fn a_request_to_a_cluster_nobody_serves_times_out_at_its_deadline() {
    let mut net = Net::ready(3);
    let c = net.client(1, "");
    net.send(
        1,
        c,
        ClientPacket::Request {
            id: 1,
            cluster: "nobody".into(),
            request: b("x"),
            timeout_ms: 500,
        },
    );
    net.millis(499);
    assert!(net.take(1, c).is_empty());
    net.millis(1);
    assert_eq!(
        net.take(1, c),
        vec![NodePacket::Reply {
            id: 1,
            outcome: ReplyOutcome::TimedOut
        }]
    );
}

#[test]
fn a_tunnel_between_nodes_carries_both_ways_in_order_and_closes_at_both_ends() {
    let mut net = Net::ready(3);
    let m = net.client(2, "svc");
    let c = net.client(0, "");
    net.secs(2);
    net.send(
        0,
        c,
        ClientPacket::TunInit {
            tun_id: 5,
            cluster: "svc".into(),
            timeout_ms: 5000,
        },
    );
    let got = net.take(2, m);
    let [
        NodePacket::TunInit {
            build_id,
            chunk_limit: 65536,
        },
    ] = got[..]
    else {
        panic!("the member got {got:?}");
    };
    net.send(
        2,
        m,
        ClientPacket::TunConfirm {
            build_id,
            tun_id: 9,
        },
    );
    net.send(
        2,
        m,
        ClientPacket::TunAllow {
            tun_id: 9,
            space: 1 << 20,
        },
    );
    assert_eq!(
        net.take(0, c),
        vec![
            NodePacket::TunConfirm {
                tun_id: 5,
                chunk_limit: Some(65536)
            },
            NodePacket::TunAllow {
                tun_id: 5,
                space: 4 << 20
            }
        ]
    );
    assert_eq!(
        net.take(2, m),
        vec![NodePacket::TunAllow {
            tun_id: 9,
            space: 4 << 20
        }]
    );
    net.send(
        0,
        c,
        ClientPacket::TunAllow {
            tun_id: 5,
            space: 1 << 20,
        },
    );
    for n in 0..20u8 {
        net.send(
            0,
            c,
            ClientPacket::TunTransfer {
                tun_id: 5,
                size_or_cont: 1,
                payload: Bytes::from(vec![n]),
            },
        );
        net.send(
            2,
            m,
            ClientPacket::TunTransfer {
                tun_id: 9,
                size_or_cont: 1,
                payload: Bytes::from(vec![100 + n]),
            },
        );
    }
    let payloads = |got: Vec<NodePacket>| -> Vec<u8> {
        got.into_iter()
            .filter_map(|p| match p {
                NodePacket::TunTransfer { payload, .. } => Some(payload[0]),
                _ => None,
            })
            .collect()
    };
    assert_eq!(payloads(net.take(2, m)), (0..20).collect::<Vec<_>>());
    assert_eq!(payloads(net.take(0, c)), (100..120).collect::<Vec<_>>());
    net.send(0, c, ClientPacket::TunClose { tun_id: 5 });
    assert_eq!(
        net.take(0, c),
        vec![NodePacket::TunClose {
            tun_id: 5,
            reason: "".into()
        }]
    );
    assert_eq!(
        net.take(2, m),
        vec![NodePacket::TunClose {
            tun_id: 9,
            reason: "".into()
        }]
    );
}

#[test]
fn a_dead_member_node_ends_requests_in_time_and_tunnels_with_a_reason() {
    let mut net = Net::ready(3);
    let m = net.client(2, "svc");
    let c = net.client(0, "");
    net.secs(2);
    net.send(
        0,
        c,
        ClientPacket::TunInit {
            tun_id: 1,
            cluster: "svc".into(),
            timeout_ms: 5000,
        },
    );
    let NodePacket::TunInit { build_id, .. } = net.take(2, m)[0] else {
        panic!("no offer");
    };
    net.send(
        2,
        m,
        ClientPacket::TunConfirm {
            build_id,
            tun_id: 1,
        },
    );
    net.take(0, c);
    net.take(2, m);
    net.send(
        0,
        c,
        ClientPacket::Request {
            id: 3,
            cluster: "svc".into(),
            request: b("q"),
            timeout_ms: 2000,
        },
    );
    assert!(matches!(net.take(2, m)[..], [NodePacket::Request { .. }]));
    net.kill(2);
    // The tunnel ends at once, with a reason; the request gets its one timed-out REPLY.
    let got = net.take(0, c);
    assert!(
        matches!(&got[..], [NodePacket::TunClose { tun_id: 1, reason }] if !reason.is_empty()),
        "{got:?}"
    );
    net.secs(3);
    assert_eq!(
        net.take(0, c),
        vec![NodePacket::Reply {
            id: 3,
            outcome: ReplyOutcome::TimedOut
        }]
    );
}

#[test]
fn requests_spread_over_nodes_by_capacity() {
    let mut net = Net::ready(4);
    // Three members on node 3, one on node 2: three to one.
    let on3: Vec<_> = (0..3).map(|_| net.client(3, "svc")).collect();
    let on2 = net.client(2, "svc");
    let c = net.client(0, "");
    net.secs(3);
    for id in 0..400 {
        net.send(
            0,
            c,
            ClientPacket::Request {
                id,
                cluster: "svc".into(),
                request: b("q"),
                timeout_ms: 60_000,
            },
        );
        // Members answer at once: no member's window fills.
        let members: Vec<(usize, crate::ConnId)> =
            on3.iter().map(|&m| (3, m)).chain([(2, on2)]).collect();
        for (i, m) in members {
            for p in net.take(i, m) {
                if let NodePacket::Request { id, .. } = p {
                    net.send(
                        i,
                        m,
                        ClientPacket::Reply {
                            id,
                            outcome: Ok(b("a")),
                        },
                    );
                }
            }
        }
    }
    let served2 = net.node(2).stats().requests_served_for_peers;
    let served3 = net.node(3).stats().requests_served_for_peers;
    assert_eq!(served2 + served3, 400);
    let share = served3 as f64 / 400.0;
    assert!((0.65..0.85).contains(&share), "node 3 took {share:.2}");
    assert_eq!(net.take(0, c).len(), 400, "every request answered once");
}
