//! Relay operations between clients of different nodes, in memory.

use crate::ConnId;
use crate::Event;
use crate::relay::{ClientPacket, NodePacket, ReplyOutcome};
use crate::testnet::Net;
use bytes::{Bytes, BytesMut};
use std::time::Duration;

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

/// Opens a tunnel from client `from` (node, connection, tunnel id) to the member of
/// "svc" at `to`, which confirms it as its tunnel id; what both clients were told is read.
pub(super) fn open_tunnel(net: &mut Net, from: (usize, ConnId, u64), to: (usize, ConnId, u64)) {
    net.send(
        from.0,
        from.1,
        ClientPacket::TunInit {
            tun_id: from.2,
            cluster: "svc".into(),
            timeout_ms: 5000,
        },
    );
    let got = net.take(to.0, to.1);
    let [NodePacket::TunInit { build_id, .. }] = got[..] else {
        panic!("the member got {got:?}");
    };
    net.send(
        to.0,
        to.1,
        ClientPacket::TunConfirm {
            build_id,
            tun_id: to.2,
        },
    );
    net.take(from.0, from.1);
    net.take(to.0, to.1);
}

/// Found by swarm testing (seed 10299683644721871928 at 200 nodes: a dial failing just
/// after a partition healed): a node that lost its link to the other end of a tunnel
/// ended its own end, and the other node, alive and never told, kept its end open for
/// good. It is now told, over a new link.
#[test]
fn a_tunnel_lost_on_one_side_is_closed_at_the_other_end_too() {
    let mut net = Net::ready(3);
    let m = net.client(2, "svc");
    let c = net.client(0, "");
    net.secs(2);
    open_tunnel(&mut net, (0, c, 5), (2, m, 9));
    // Node 0's socket to node 2 fails; node 2 notices nothing.
    net.fail_links_one_side(0, 2);
    let got = net.take(0, c);
    assert!(
        matches!(&got[..], [NodePacket::TunClose { tun_id: 5, reason }] if !reason.is_empty()),
        "{got:?}"
    );
    let got = net.take(2, m);
    assert!(
        matches!(&got[..], [NodePacket::TunClose { tun_id: 9, reason }] if !reason.is_empty()),
        "the member's end stayed open: {got:?}"
    );
}

#[test]
fn a_dead_member_node_ends_requests_in_time_and_tunnels_with_a_reason() {
    let mut net = Net::ready(3);
    let m = net.client(2, "svc");
    let c = net.client(0, "");
    net.secs(2);
    open_tunnel(&mut net, (0, c, 1), (2, m, 1));
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

/// Requests from a client of node 1 to members on nodes 0, 1 and 2: how many each member
/// got. `burst`: all sent in one read before any is answered; else one at a time, each
/// answered at once.
fn local_shares(burst: bool) -> [usize; 3] {
    let mut net = Net::ready(3);
    let members: Vec<(usize, crate::ConnId)> = (0..3).map(|i| (i, net.client(i, "svc"))).collect();
    let c = net.client(1, "");
    net.secs(3);
    let request = |id| ClientPacket::Request {
        id,
        cluster: "svc".into(),
        request: b("q"),
        timeout_ms: 60_000,
    };
    let mut got = [0usize; 3];
    let mut serve = |net: &mut Net| {
        for &(i, m) in &members {
            for p in net.take(i, m) {
                if let NodePacket::Request { id, .. } = p {
                    got[i] += 1;
                    let reply = ClientPacket::Reply {
                        id,
                        outcome: Ok(b("a")),
                    };
                    net.send(i, m, reply);
                }
            }
        }
    };
    if burst {
        let mut all = BytesMut::new();
        for id in 0..600 {
            request(id).encode(&mut all);
        }
        net.send_bytes(1, c, &all);
        net.millis(100);
        serve(&mut net);
    } else {
        for id in 0..600 {
            net.send(1, c, request(id));
            serve(&mut net);
        }
    }
    net.secs(1);
    serve(&mut net);
    let answered = net
        .take(1, c)
        .into_iter()
        .filter(|p| matches!(p, NodePacket::Reply { .. }))
        .count();
    assert_eq!(answered, 600, "every request answered once");
    got
}

#[test]
fn requests_prefer_the_member_on_the_requesters_own_node_while_it_has_room() {
    // One at a time, each answered at once: the member beside the requester always has
    // room, and takes them all (no hop, no link).
    let paced = local_shares(false);
    assert_eq!(paced, [0, 600, 0]);
    // 600 at once: it takes its window first, then the tree spreads the rest over all
    // three by the capacity they reported at their last beat, the requester's own node
    // included (weighed by their room now at the nodes a burst passes, the nearer one's
    // ran out and the farthest took most: [396, 34, 170]; with the origin weighing its
    // own members by their room now, [267, 34, 299]; now [189, 229, 182]).
    let burst = local_shares(true);
    assert_eq!(burst.iter().sum::<usize>(), 600);
    assert!(burst[1] >= 150, "{burst:?}");
    let (low, high) = (burst[0].min(burst[2]), burst[0].max(burst[2]));
    assert!(low >= 120 && low * 4 >= high * 3, "{burst:?}");
}

/// `n` nodes whose links queue at most `queue` bytes of data (so multicast windows of a
/// quarter of it, producers held past half of it waiting), with the nodes' `config`, run
/// until they have formed their network.
pub(super) fn small_queues(n: usize, queue: usize, config: crate::Config) -> Net {
    use crate::mesh::Security;
    use crate::testnet::mesh_config;
    let mut net = Net::new();
    for i in 0..n {
        let seeds: Vec<usize> = if i == 0 { vec![] } else { vec![0] };
        let mut cfg = mesh_config(i, &seeds);
        cfg.link.max_data_queue = queue;
        net.add_with(config.clone(), cfg, Security::Plain);
    }
    net.secs(20);
    net
}

/// The indices (first four bytes) of the events a client received, sorted: multicasts take
/// several trees, so their order across nodes is not kept.
pub(super) fn event_indices(got: Vec<NodePacket>) -> Vec<u32> {
    let mut ids: Vec<u32> = got
        .into_iter()
        .filter_map(|p| match p {
            NodePacket::Publish { event: m, .. } | NodePacket::Broadcast { message: m } => {
                Some(u32::from_be_bytes(m[..4].try_into().unwrap()))
            }
            _ => None,
        })
        .collect();
    ids.sort_unstable();
    ids
}

/// Two nodes whose links and members congest early (256 KiB link queues: 64 KiB windows,
/// producers held past 128 KiB waiting; members congested past 64 KiB unread), so that a
/// few MiB show the bounds.
fn congestible_pair() -> Net {
    let config = crate::Config {
        client_backlog_high: 64 << 10,
        ..crate::Config::default()
    };
    small_queues(2, 256 << 10, config)
}

pub(super) fn event(i: u32, size: usize) -> Bytes {
    let mut e = vec![1u8; size];
    e[..4].copy_from_slice(&i.to_be_bytes());
    e.into()
}

#[test]
fn a_stalled_link_holds_the_publisher_fails_requests_at_once_and_loses_nothing() {
    // Two nodes whose link holds little: 64 KiB of data queued, beyond what is in flight
    // (so 16 KiB of multicast window per peer, producers held past 32 KiB waiting).
    let mut net = small_queues(2, 64 << 10, crate::Config::default());
    let sub = net.client(1, "svc");
    net.send(1, sub, ClientPacket::Subscribe { topic: "t".into() });
    let (p, q, t) = (net.client(0, ""), net.client(0, ""), net.client(0, ""));
    net.secs(2);
    // A tunnel from node 0 to the member on node 1, open before the link stalls.
    net.send(
        0,
        t,
        ClientPacket::TunInit {
            tun_id: 1,
            cluster: "svc".into(),
            timeout_ms: 5000,
        },
    );
    let NodePacket::TunInit { build_id, .. } = net.take(1, sub)[0] else {
        panic!("no offer");
    };
    net.send(
        1,
        sub,
        ClientPacket::TunConfirm {
            build_id,
            tun_id: 7,
        },
    );
    net.send(
        1,
        sub,
        ClientPacket::TunAllow {
            tun_id: 7,
            space: 64 << 20,
        },
    );
    net.take(0, t);
    net.take(1, sub);
    net.stall(0, 1);
    // 1 MiB of events toward node 1: beyond the window they wait in node 0, and past the
    // mark the publisher is held (not read) instead of anything being dropped.
    for i in 0..256 {
        net.send(
            0,
            p,
            ClientPacket::Publish {
                topic: "t".into(),
                event: event(i, 4096),
            },
        );
    }
    let st = net.node(0).stats().clone();
    assert_eq!(st.casts_dropped, 0);
    assert!(st.producers_held >= 1, "the publisher was never held");
    assert!(st.casts_waited > 0);
    let waiting = net.node(0).casts_waiting_bytes();
    assert!(waiting <= (32 << 10) + 8192, "{waiting} bytes wait");
    // Requests behind the full link fail at once, as timed out, long before their 60 s
    // deadline (those that fit beside the multicast window, in the socket and the link's
    // queue, wait).
    for id in 0..128 {
        net.send(
            0,
            q,
            ClientPacket::Request {
                id,
                cluster: "svc".into(),
                request: Bytes::from(vec![2u8; 4096]),
                timeout_ms: 60_000,
            },
        );
    }
    let failed = net
        .take(0, q)
        .into_iter()
        .filter(|r| {
            matches!(
                r,
                NodePacket::Reply {
                    outcome: ReplyOutcome::TimedOut,
                    ..
                }
            )
        })
        .count();
    assert!(failed >= 32, "{failed} failed at once");
    assert_eq!(net.node(0).stats().requests_refused as usize, failed);
    // Tunnel data is never refused: 1 MiB through the stalled link, all of it delivered
    // once the link drains, in order.
    let mut sent = 0u32;
    let mut allowance: i64 = 4 << 20;
    while sent < 256 {
        let mut chunk = vec![0u8; 4096];
        chunk[..4].copy_from_slice(&sent.to_be_bytes());
        allowance -= 4096;
        assert!(allowance >= 0);
        net.send(
            0,
            t,
            ClientPacket::TunTransfer {
                tun_id: 1,
                size_or_cont: 4096,
                payload: chunk.into(),
            },
        );
        sent += 1;
    }
    net.unstall(0, 1);
    let got = net.take(1, sub);
    let chunks: Vec<u32> = got
        .iter()
        .filter_map(|p| match p {
            NodePacket::TunTransfer { payload, .. } => {
                Some(u32::from_be_bytes(payload[..4].try_into().unwrap()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(chunks, (0..256).collect::<Vec<_>>());
    // Every event arrives once the link drains: none was lost.
    assert_eq!(event_indices(got), (0..256).collect::<Vec<_>>());
    assert_eq!(net.node(0).stats().casts_dropped, 0);
    assert_eq!(net.node(0).casts_waiting_bytes(), 0);
}

#[test]
fn a_stuck_subscriber_on_another_node_throttles_its_publisher_and_loses_nothing() {
    let mut net = congestible_pair();
    let sub = net.client(1, "");
    net.send(1, sub, ClientPacket::Subscribe { topic: "t".into() });
    let member = net.client(1, "svc");
    let (p, c) = (net.client(0, ""), net.client(0, ""));
    net.secs(2);
    net.stall_client(1, sub);
    // 4 MiB of events for a subscriber that reads nothing.
    for i in 0..1024 {
        net.send(
            0,
            p,
            ClientPacket::Publish {
                topic: "t".into(),
                event: event(i, 4096),
            },
        );
    }
    let (st0, st1) = (net.node(0).stats().clone(), net.node(1).stats().clone());
    assert!(st0.producers_held >= 1, "the publisher was never held");
    assert_eq!(st0.casts_dropped + st1.casts_dropped, 0);
    // Node 1 holds the subscriber's mark and one window, not the flood.
    assert!(
        st1.memory_peak < 512 << 10,
        "node 1 held {} bytes",
        st1.memory_peak
    );
    assert!(net.node(0).casts_waiting_bytes() <= (128 << 10) + 8192);
    // Requests between other clients of the same two nodes go on meanwhile.
    for id in 0..10 {
        net.send(
            0,
            c,
            ClientPacket::Request {
                id,
                cluster: "svc".into(),
                request: b("ping"),
                timeout_ms: 5000,
            },
        );
        let NodePacket::Request { id: rid, .. } = net.take(1, member)[0] else {
            panic!("request {id} did not reach the member");
        };
        net.send(
            1,
            member,
            ClientPacket::Reply {
                id: rid,
                outcome: Ok(b("pong")),
            },
        );
        assert_eq!(
            net.take(0, c),
            vec![NodePacket::Reply {
                id,
                outcome: ReplyOutcome::Success(b("pong"))
            }]
        );
    }
    // The subscriber reads again (before its slow-consumer deadline): every event.
    net.unstall_client(1, sub);
    assert_eq!(
        event_indices(net.take(1, sub)),
        (0..1024).collect::<Vec<_>>()
    );
    assert_eq!(net.node(0).casts_waiting_bytes(), 0);
}

/// A member that reads nothing holds up its own group's multicasts from a peer, not
/// another group's from the same peer: windows are per group.
#[test]
fn a_stuck_member_holds_up_only_its_own_groups_multicasts() {
    let mut net = congestible_pair();
    let (stuck, live) = (net.client(1, "stuck"), net.client(1, "live"));
    let (p, q) = (net.client(0, ""), net.client(0, ""));
    net.secs(2);
    net.stall_client(1, stuck);
    // 4 MiB for the stuck member (16 of its windows), then 4 MiB for the other.
    let flood = |net: &mut Net, from, cluster: &str| {
        for i in 0..1024 {
            let message = event(i, 4096);
            let cluster = cluster.into();
            net.send(0, from, ClientPacket::Broadcast { cluster, message });
        }
    };
    flood(&mut net, p, "stuck");
    assert!(net.node(0).stats().producers_held >= 1, "never held");
    flood(&mut net, q, "live");
    assert_eq!(
        event_indices(net.take(1, live)),
        (0..1024).collect::<Vec<_>>()
    );
    net.unstall_client(1, stuck);
    assert_eq!(
        event_indices(net.take(1, stuck)),
        (0..1024).collect::<Vec<_>>()
    );
    assert_eq!(net.node(0).casts_waiting_bytes(), 0);
}

/// Credit goes back in steps, so a sender with less than a step outstanding must not wait
/// for more: a message nearly a window large after a small one would wait for ever.
#[test]
fn a_large_multicast_after_a_small_one_never_waits_for_credit_that_is_not_coming() {
    // 16 KiB windows, credit returned 4 KiB at a time.
    let mut net = small_queues(2, 64 << 10, crate::Config::default());
    let member = net.client(1, "svc");
    let p = net.client(0, "");
    net.secs(2);
    for (i, size) in [(0, 1024), (1, 15 << 10), (2, 1024)] {
        let message = event(i, size);
        net.send(
            0,
            p,
            ClientPacket::Broadcast {
                cluster: "svc".into(),
                message,
            },
        );
    }
    net.secs(1);
    let got: Vec<usize> = net
        .take(1, member)
        .into_iter()
        .filter_map(|p| match p {
            NodePacket::Broadcast { message } => Some(message.len()),
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), 3, "got sizes {got:?}");
    assert_eq!(net.node(0).casts_waiting_bytes(), 0);
}

/// A node that shuts down while its multicasts wait for a peer's credit sends them before
/// it leaves: what it took from its clients reaches the survivors.
#[test]
fn a_node_that_stops_first_sends_the_multicasts_waiting_for_credit() {
    let mut net = congestible_pair();
    let sub = net.client(1, "");
    net.send(1, sub, ClientPacket::Subscribe { topic: "t".into() });
    let p = net.client(0, "");
    net.secs(2);
    net.stall_client(1, sub);
    for i in 0..256 {
        let event = event(i, 4096);
        net.send(
            0,
            p,
            ClientPacket::Publish {
                topic: "t".into(),
                event,
            },
        );
    }
    let accepted = net.node(0).stats().publishes;
    assert!(
        net.node(0).casts_waiting_bytes() > 0,
        "nothing waited for credit"
    );
    assert!(accepted < 256, "the publisher was never held");
    net.shutdown(0, "bye");
    assert_eq!(net.node(0).casts_waiting_bytes(), 0);
    net.unstall_client(1, sub);
    let got = event_indices(net.take(1, sub));
    assert_eq!(got, (0..accepted as u32).collect::<Vec<_>>());
}

/// Requests from node 0 at 50 a second for 20 s to two members on nodes 2 and 3, each
/// answering after its own delay; the share each got.
fn shares(fast_ms: u64, slow_ms: u64) -> (f64, f64) {
    let mut net = Net::ready(4);
    let fast = net.client(2, "svc");
    let slow = net.client(3, "svc");
    let c = net.client(0, "");
    net.secs(3);
    let mut due: Vec<(crate::Instant, usize, crate::ConnId, u64)> = Vec::new();
    let (mut to_fast, mut to_slow) = (0u32, 0u32);
    for id in 0..1000u64 {
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
        for (node, member, delay) in [(2, fast, fast_ms), (3, slow, slow_ms)] {
            for p in net.take(node, member) {
                if let NodePacket::Request { id, .. } = p {
                    if node == 2 {
                        to_fast += 1;
                    } else {
                        to_slow += 1;
                    }
                    let at = net.now + std::time::Duration::from_millis(delay);
                    due.push((at, node, member, id));
                }
            }
        }
        net.millis(20);
        let now = net.now;
        let (ready, later): (Vec<_>, Vec<_>) = due.into_iter().partition(|d| d.0 <= now);
        due = later;
        for (_, node, member, id) in ready {
            net.send(
                node,
                member,
                ClientPacket::Reply {
                    id,
                    outcome: Ok(b("a")),
                },
            );
        }
    }
    let total = f64::from(to_fast + to_slow);
    (f64::from(to_fast) / total, f64::from(to_slow) / total)
}

#[test]
fn requests_follow_the_capacity_members_report() {
    // Equal members share evenly. A slower member gets fewer: it holds requests unanswered
    // (less room), and its node weighs its room by how fast it answers (issue 22; the
    // harness answers on 20 ms steps, so the fast member is measured at about 20 ms, not
    // 1). Before the weighing by reply time: 1 ms against 50 ms shared 56 / 44, against
    // 200 ms 66 / 34.
    let (even_a, even_b) = shares(1, 1);
    assert!((0.4..0.6).contains(&even_a), "{even_a}");
    assert!((even_a + even_b - 1.0).abs() < 1e-9, "{even_a} + {even_b}");
    for slow_ms in [50, 200] {
        let (fast, slow) = shares(1, slow_ms);
        assert!(
            fast > 0.75,
            "the fast member took {fast} against {slow_ms} ms"
        );
        // Still tried, so that a member that became fast is seen to be.
        assert!(slow > 0.02, "the {slow_ms} ms member took {slow}");
    }
}

#[test]
fn messages_as_large_as_the_relay_allows_cross_nodes() {
    // The largest message a client may send (64 MiB by default) must fit a peer link too,
    // with the names and ids a node message adds around it.
    let max = crate::Config::default().limits.max_message_size as usize;
    let mut net = Net::ready(2);
    let member = net.client(1, "svc");
    let sender = net.client(0, "");
    net.secs(2);
    let big = Bytes::from(vec![7u8; max]);
    net.send(
        0,
        sender,
        ClientPacket::Broadcast {
            cluster: "svc".into(),
            message: big.clone(),
        },
    );
    net.send(
        0,
        sender,
        ClientPacket::Request {
            id: 1,
            cluster: "svc".into(),
            request: big.clone(),
            timeout_ms: 10_000,
        },
    );
    let got = net.take(1, member);
    assert_eq!(got.len(), 2, "the member got {} of 2", got.len());
    assert!(matches!(&got[0], NodePacket::Broadcast { message } if message.len() == max));
    let NodePacket::Request { id, request, .. } = &got[1] else {
        panic!("no request");
    };
    assert_eq!(request.len(), max);
    net.send(
        1,
        member,
        ClientPacket::Reply {
            id: *id,
            outcome: Ok(big.clone()),
        },
    );
    let replies = net.take(0, sender);
    assert!(
        matches!(&replies[..], [NodePacket::Reply { id: 1, outcome: ReplyOutcome::Success(r) }] if r.len() == max),
        "{:?}",
        replies
            .iter()
            .map(|r| format!("{r:?}").chars().take(80).collect::<String>())
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_member_that_just_registered_is_reached_before_any_beat() {
    let mut net = Net::ready(4);
    let c = net.client(0, "");
    net.secs(2);
    // Registered this instant: its node's subscription has reached the trees (links are
    // immediate here), its capacity has not been reported by any beat yet.
    let m = net.client(3, "fresh");
    // Ten requests: two through each of the cluster's five trees.
    for id in 0..10 {
        net.send(
            0,
            c,
            ClientPacket::Request {
                id,
                cluster: "fresh".into(),
                request: b("q"),
                timeout_ms: 5000,
            },
        );
    }
    let got = net.take(3, m);
    assert_eq!(got.len(), 10, "{} of 10 reached the new member", got.len());
}

#[test]
fn a_member_that_moves_to_another_node_gets_each_broadcast_once() {
    let mut net = Net::ready(2);
    let sender = net.client(0, "");
    let old = net.client(0, "c");
    net.secs(2);
    for i in 0..200u32 {
        net.send(
            0,
            sender,
            ClientPacket::Broadcast {
                cluster: "c".into(),
                message: event(i, 64),
            },
        );
    }
    assert_eq!(net.take(0, old).len(), 200);
    net.send(0, old, ClientPacket::Close);
    let new = net.client(1, "c");
    net.secs(2);
    for i in 0..2000u32 {
        net.send(
            0,
            sender,
            ClientPacket::Broadcast {
                cluster: "c".into(),
                message: event(i, 64),
            },
        );
    }
    net.secs(2);
    let mut got: Vec<u32> = net
        .take(1, new)
        .into_iter()
        .filter_map(|p| match p {
            NodePacket::Broadcast { message } => {
                Some(u32::from_be_bytes(message[..4].try_into().unwrap()))
            }
            _ => None,
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..2000).collect::<Vec<_>>());
}

/// The whispers ring between nodes: members pass every broadcast on to the next node's
/// cluster, with flow control engaged (the initiator's flood waits for credit behind
/// stalled links): every message comes back once, none dropped. (The deadlock this design
/// avoids, every node withholding credit while its own multicasts wait, needs slow real
/// sockets to show: the ring benchmark at 64 KiB hung with it.)
#[test]
fn a_ring_of_members_passing_broadcasts_on_never_waits_for_itself() {
    let n = 4;
    // 16 KiB windows, producers held past 32 KiB waiting.
    let mut net = small_queues(n, 64 << 10, crate::Config::default());
    let members: Vec<_> = (0..n).map(|i| net.client(i, &format!("g{i}"))).collect();
    let initiator = net.client(0, "");
    net.secs(2);
    for i in 0..n {
        for j in 0..n {
            if i != j {
                net.stall(i, j);
            }
        }
    }
    let total = 400u32;
    for k in 0..total {
        net.send(
            0,
            initiator,
            ClientPacket::Broadcast {
                cluster: "g1".into(),
                message: event(k, 4096),
            },
        );
    }
    // Members forward what they have while the links are stalled, then as they drain.
    let mut back = Vec::new();
    let forward = |net: &mut Net, back: &mut Vec<u32>| {
        let mut moved = false;
        for (i, &member) in members.iter().enumerate() {
            for p in net.take(i, member) {
                let NodePacket::Broadcast { message } = p else {
                    continue;
                };
                moved = true;
                if i == 0 {
                    back.push(u32::from_be_bytes(message[..4].try_into().unwrap()));
                } else {
                    let next = format!("g{}", (i + 1) % n);
                    net.send(
                        i,
                        member,
                        ClientPacket::Broadcast {
                            cluster: next.as_str().into(),
                            message,
                        },
                    );
                }
            }
        }
        moved
    };
    forward(&mut net, &mut back);
    for i in 0..n {
        for j in 0..n {
            net.unstall(i, j);
        }
    }
    for _ in 0..10_000 {
        if !forward(&mut net, &mut back) {
            net.millis(10);
            if !forward(&mut net, &mut back) {
                break;
            }
        }
    }
    back.sort_unstable();
    assert_eq!(back, (0..total).collect::<Vec<_>>());
    assert!(net.node(0).stats().casts_waited > 0);
    for i in 0..n {
        assert_eq!(net.node(i).stats().casts_dropped, 0);
    }
}

/// The seed's ring run open loop, as the benchmark runs it on processes: the initiator
/// writes whenever its node reads it and reads what comes back on its own; each forwarder
/// reads only while its node takes what it writes (a blocked writer reads nothing). The
/// groups' trees cross the same links in both directions, so a window shared by every group
/// of a link would let one stuck group hold up another's credit, all the way round the ring
/// (which a slow-consumer cut then breaks).
#[test]
fn an_open_loop_ring_of_members_that_read_only_after_writing_loses_nothing() {
    for run in 0..12 {
        open_loop_ring(run);
    }
}

fn open_loop_ring(run: u32) {
    let n = 4;
    let name = |i: usize| format!("ring {run} gopher {i}");
    // 16 KiB windows, producers held past 32 KiB waiting, members congested past 32 KiB
    // unread: as on processes, where each is a few MiB.
    let config = crate::Config {
        client_backlog_high: 32 << 10,
        ..crate::Config::default()
    };
    let mut net = small_queues(n, 64 << 10, config);
    let members: Vec<_> = (0..n).map(|i| net.client(i, &name(i))).collect();
    net.secs(2);
    let (total, batch, size) = (3000u32, 16u32, 4096);
    // Messages each forwarder passes on per millisecond: node 2's is the slowest hop.
    let rates = [0, 8, 4, 8];
    let mut pending = vec![std::collections::VecDeque::new(); n];
    let mut sent = 0u32;
    let mut back = Vec::new();
    let deadline = net.now + Duration::from_secs(120);
    while back.len() < total as usize && net.now < deadline {
        if sent < total && !net.is_paused(0, members[0]) {
            let mut wire = BytesMut::new();
            for k in sent..(sent + batch).min(total) {
                ClientPacket::Broadcast {
                    cluster: name(1).as_str().into(),
                    message: event(k, size),
                }
                .encode(&mut wire);
            }
            sent = (sent + batch).min(total);
            net.send_bytes(0, members[0], &wire);
        }
        for (i, &member) in members.iter().enumerate().skip(1) {
            // What the forwarder's socket holds: it takes no more past a few messages.
            pending[i].extend(net.take(i, member));
            if net.is_paused(i, member) {
                continue;
            }
            let mut wire = BytesMut::new();
            for _ in 0..rates[i] {
                let Some(p) = pending[i].pop_front() else {
                    break;
                };
                if let NodePacket::Broadcast { message } = p {
                    let next = name((i + 1) % n);
                    ClientPacket::Broadcast {
                        cluster: next.as_str().into(),
                        message,
                    }
                    .encode(&mut wire);
                }
            }
            if !wire.is_empty() {
                net.send_bytes(i, member, &wire);
            }
            if pending[i].len() >= 16 {
                net.stall_client(i, member);
            } else {
                net.unstall_client(i, member);
            }
        }
        back.extend(event_indices(net.take(0, members[0])));
        net.millis(1);
    }
    for (i, &member) in members.iter().enumerate() {
        assert!(
            !net.is_closed(i, member),
            "run {run}: node {i} cut its member"
        );
        assert_eq!(net.node(i).stats().casts_dropped, 0);
    }
    back.sort_unstable();
    let lost = total as usize - back.len();
    assert_eq!(lost, 0, "{lost} of {total} never came back ({sent} sent)");
    assert_eq!(back, (0..total).collect::<Vec<_>>());
    // The slowest hop held the initiator back across the ring: nothing else would have.
    assert!(
        net.node(0).stats().producers_held > 0,
        "run {run}: never throttled"
    );
}

/// Groups that received a little once do not stay in the flow state of either node for
/// ever: past a bound of small debts, the receiver returns them all and both forget.
#[test]
fn quiet_groups_leave_no_flow_state_behind() {
    let mut net = Net::ready(2);
    let subscribers: Vec<_> = (0..3).map(|_| net.client(1, "")).collect();
    let topics = 3000;
    for t in 0..topics {
        let topic = format!("t{t}");
        let s = subscribers[t % subscribers.len()];
        net.send(
            1,
            s,
            ClientPacket::Subscribe {
                topic: topic.as_str().into(),
            },
        );
    }
    let p = net.client(0, "");
    net.secs(5);
    for t in 0..topics {
        let topic = format!("t{t}");
        net.send(
            0,
            p,
            ClientPacket::Publish {
                topic: topic.as_str().into(),
                event: event(t as u32, 100),
            },
        );
    }
    net.secs(1);
    let got: usize = subscribers.iter().map(|&s| net.take(1, s).len()).sum();
    assert_eq!(got, topics, "every event delivered");
    let (out0, owed0) = net.node(0).cast_flow_entries();
    let (out1, owed1) = net.node(1).cast_flow_entries();
    // Without the bound, node 0 kept ~3000 entries toward node 1 and node 1 as many owed
    // (fewer only where a tree's root sits on node 0 itself).
    assert!(owed1 <= 1024, "node 1 owes {owed1} groups");
    assert!(out0 <= 1024, "node 0 keeps {out0} groups outstanding");
    assert!(owed0 + out1 <= 1024, "reverse direction: {owed0} / {out1}");
}

/// Client `conn` of node `i` requests `r{id}` of `cluster`.
fn ask(net: &mut Net, i: usize, conn: ConnId, cluster: &str, id: u64, timeout_ms: u64) {
    net.send(
        i,
        conn,
        ClientPacket::Request {
            id,
            cluster: cluster.into(),
            request: b(&format!("r{id}")),
            timeout_ms,
        },
    );
}

/// Packets sorted by their REPLY id (others first).
fn by_id(mut replies: Vec<NodePacket>) -> Vec<NodePacket> {
    replies.sort_by_key(|p| match p {
        NodePacket::Reply { id, .. } => *id,
        _ => 0,
    });
    replies
}

/// The replies `echo` gives to requests 1 to `n` (`r1`, `r2`, ...).
fn echoed(n: u64) -> Vec<NodePacket> {
    (1..=n)
        .map(|id| NodePacket::Reply {
            id,
            outcome: ReplyOutcome::Success(b(&format!("r{id}"))),
        })
        .collect()
}

/// Member `member` of node `i` answers each of `requests` with the request itself.
fn echo(net: &mut Net, i: usize, member: ConnId, requests: Vec<NodePacket>) {
    for p in requests {
        let NodePacket::Request { id, request, .. } = p else {
            panic!("the member got {p:?}");
        };
        net.send(
            i,
            member,
            ClientPacket::Reply {
                id,
                outcome: Ok(request),
            },
        );
    }
}

/// The ids of the successful replies client `conn` of node `i` got, in order; any other
/// packet fails the test.
fn succeeded(net: &mut Net, i: usize, conn: ConnId) -> Vec<u64> {
    let mut got: Vec<u64> = net
        .take(i, conn)
        .into_iter()
        .map(|p| match p {
            NodePacket::Reply {
                id,
                outcome: ReplyOutcome::Success(_),
            } => id,
            other => panic!("{other:?}"),
        })
        .collect();
    got.sort_unstable();
    got
}

/// Requests on their way through a node when it leaves gracefully (written to its socket,
/// not yet read) are passed on by it, not lost: it keeps routing what reaches it until
/// every peer has closed its side. And requests sent right after, while the member's node
/// is slow to subscribe again around it, wait at the tree's new root for the tree. Each
/// node but the requester's and the member's leaves in turn, in a network of its own.
#[test]
fn requests_in_flight_through_a_leaving_node_are_all_answered() {
    let (mut held_somewhere, mut parked) = (false, 0);
    for victim in 2..5 {
        let mut net = Net::ready(5);
        let m = net.client(1, "echo");
        let c = net.client(0, "");
        net.secs(2);
        // Node 0 writes to the victim but the victim has not read it yet.
        net.stall(0, victim);
        for id in 1..=40 {
            ask(&mut net, 0, c, "echo", id, 5000);
        }
        let mut requests = net.take(1, m);
        held_somewhere |= requests.len() < 40;
        // The member's node is slow to write: the trees' repair lags behind the requests.
        for j in (0..5).filter(|&j| j != 1) {
            net.stall(1, j);
        }
        net.shutdown(victim, "restart");
        net.unstall(0, victim);
        // And requests sent right after the leave, while the trees repair.
        for id in 41..=50 {
            ask(&mut net, 0, c, "echo", id, 5000);
        }
        for j in (0..5).filter(|&j| j != 1) {
            net.unstall(1, j);
        }
        let mut replies = Vec::new();
        for _ in 0..10 {
            requests.extend(net.take(1, m));
            echo(&mut net, 1, m, std::mem::take(&mut requests));
            net.millis(100);
            replies.extend(net.take(0, c));
        }
        assert_eq!(by_id(replies), echoed(50), "node {victim} left");
        parked += (0..5)
            .filter(|&i| i != victim)
            .map(|i| net.node(i).stats().held)
            .sum::<u64>();
    }
    assert!(
        held_somewhere,
        "no request ever went through a leaving node"
    );
    assert!(parked > 0, "no request ever raced a tree's repair");
}

/// A request that finds no tree while the overlay moves waits for one, but not for ever:
/// after its hold it counts as finding no tree, and its origin answers at the deadline.
#[test]
fn a_request_held_for_a_tree_that_never_comes_is_dropped_after_its_hold() {
    let mut net = Net::ready(4);
    let c = net.client(0, "");
    net.secs(2);
    net.shutdown(3, "restart");
    ask(&mut net, 0, c, "nobody", 1, 10_000);
    let held: u64 = (0..3).map(|i| net.node(i).stats().held).sum();
    assert_eq!(held, 1, "the request was not held");
    net.secs(3);
    let no_tree: u64 = (0..3).map(|i| net.node(i).stats().anycasts_no_tree).sum();
    assert_eq!(no_tree, 1, "the request is still held");
    assert!(net.take(0, c).is_empty());
    net.secs(8);
    assert_eq!(
        net.take(0, c),
        vec![NodePacket::Reply {
            id: 1,
            outcome: ReplyOutcome::TimedOut
        }]
    );
    // In a settled network nothing is held: nobody is a member.
    net.secs(10);
    ask(&mut net, 0, c, "nobody", 2, 1000);
    let held_after: u64 = (0..3).map(|i| net.node(i).stats().held).sum();
    assert_eq!(held_after, 1);
}

/// A member node that shuts down lets its member answer what it holds, and meanwhile sends
/// new requests to the other members: a restarted service node fails no request.
#[test]
fn a_node_shutting_down_lets_its_member_finish_and_gives_it_nothing_new() {
    let mut net = Net::ready(3);
    let (m1, m2) = (net.client(1, "echo"), net.client(2, "echo"));
    let c = net.client(0, "");
    net.secs(2);
    // Until one request is held by node 1's member (requests spread by capacity).
    let mut id = 0;
    let held = loop {
        id += 1;
        assert!(id < 100, "node 1's member never got a request");
        ask(&mut net, 0, c, "echo", id, 5000);
        let got = net.take(1, m1);
        if !got.is_empty() {
            assert_eq!(got.len(), 1, "{got:?}");
            break got;
        }
        let to_m2 = net.take(2, m2);
        echo(&mut net, 2, m2, to_m2);
    };
    net.take(0, c);
    net.shutdown(1, "restart");
    assert!(!net.is_closed(1, m1), "closed with a request in progress");
    // New requests meanwhile go to the other member only.
    for n in 0..10 {
        ask(&mut net, 0, c, "echo", 1000 + n, 5000);
    }
    assert!(
        net.take(1, m1).is_empty(),
        "the draining node's member got more"
    );
    let to_m2 = net.take(2, m2);
    assert_eq!(to_m2.len(), 10, "{to_m2:?}");
    echo(&mut net, 2, m2, to_m2);
    echo(&mut net, 1, m1, held);
    assert!(net.is_closed(1, m1), "not closed once its work was done");
    net.millis(100);
    let mut want: Vec<u64> = (1000..1010).collect();
    want.insert(0, id);
    assert_eq!(succeeded(&mut net, 0, c), want);
}

/// Requests still on their way to a member's node when it has left (its member closed) go
/// back into the tree, to the other member, rather than being lost there.
#[test]
fn requests_reaching_a_member_node_after_it_left_go_to_another_member() {
    let mut net = Net::ready(3);
    let (m1, m2) = (net.client(1, "echo"), net.client(2, "echo"));
    let c = net.client(0, "");
    net.secs(2);
    // Some written to node 1 (by the requester's node, or by a tree parent that chose
    // node 1's member), not yet read.
    net.stall(0, 1);
    net.stall(2, 1);
    for id in 1..=40 {
        ask(&mut net, 0, c, "echo", id, 5000);
    }
    // Those that reached node 1's member another way are answered: it has nothing in
    // progress and leaves at once.
    let reached = net.take(1, m1);
    echo(&mut net, 1, m1, reached);
    net.shutdown(1, "restart");
    assert!(net.is_closed(1, m1));
    let served_by_1 = net.node(1).stats().requests_served_for_peers;
    net.unstall(0, 1);
    net.unstall(2, 1);
    for _ in 0..5 {
        let to_m2 = net.take(2, m2);
        echo(&mut net, 2, m2, to_m2);
        net.millis(100);
    }
    assert_eq!(succeeded(&mut net, 0, c), (1..=40).collect::<Vec<_>>());
    assert_eq!(
        net.node(1).stats().requests_served_for_peers,
        served_by_1,
        "its closed member got more"
    );
}

#[test]
fn peer_statuses_list_every_peer_with_its_link_and_traffic() {
    let net = Net::ready(3);
    let ids: Vec<_> = (0..3).map(|i| net.node(i).status().id.unwrap()).collect();
    for i in 0..3 {
        let peers = net.node(i).peer_statuses();
        let mut want: Vec<_> = (0..3).filter(|&j| j != i).map(|j| ids[j]).collect();
        want.sort_unstable();
        assert_eq!(peers.iter().map(|p| p.id).collect::<Vec<_>>(), want);
        for p in &peers {
            let j = ids.iter().position(|&id| id == p.id).unwrap();
            assert_eq!(p.addr, crate::testnet::addr(j));
            // Three nodes are each other's neighbours, linked, pinged and talking.
            assert!(p.leaf && p.linked, "{p:?}");
            assert!(p.rtt.is_some(), "{p:?}");
            assert!(p.messages.0 > 0 && p.messages.1 > 0, "{p:?}");
        }
    }
    // A lone node has none.
    let lone = crate::Node::new(crate::Config::default(), [1; 32], crate::Instant::ZERO).unwrap();
    assert!(lone.peer_statuses().is_empty());
}

#[test]
fn trees_past_max_trees_are_refused_loudly() {
    use crate::testnet::mesh_config;
    use crate::{Event, Security};
    let mut net = Net::new();
    for i in 0..2 {
        let mut cfg = mesh_config(i, if i == 0 { &[] } else { &[0] });
        // One group's 5 trees fit, not two groups'.
        cfg.scribe.max_trees = 7;
        net.add(cfg, Security::Plain);
    }
    net.secs(20);
    let sub = net.client(1, "");
    for topic in ["first", "second", "third"] {
        net.send(
            1,
            sub,
            ClientPacket::Subscribe {
                topic: topic.into(),
            },
        );
    }
    net.secs(2);
    let reports: Vec<(String, u64, usize)> = net
        .events_of(1)
        .into_iter()
        .filter_map(|e| match e {
            Event::TreesFull {
                group,
                refused,
                max_trees,
                memory: None,
            } => Some((group.clone(), *refused, *max_trees)),
            _ => None,
        })
        .collect();
    // The second topic took the last 2 trees; the rest were refused, each counted and
    // reported with its group (refusals that come together are reported at once).
    let want =
        [("topic second", 3, 7), ("topic third", 5, 7)].map(|(g, n, m)| (g.to_string(), n, m));
    assert_eq!(reports, want);
    assert_eq!(net.node(1).stats().trees_refused, 8);
    assert_eq!(net.node(1).status().trees, 7);
}

#[test]
fn subscriptions_past_what_a_link_queues_at_once_build_every_tree() {
    use crate::testnet::mesh_config;
    use crate::{Config, Security};
    // 30,000 topics in one read: 150,000 trees, half of them rooted at the other node, whose
    // SUBSCRIBEs overflow the link's control queue (1 MiB) while the link is slow.
    const TOPICS: usize = 30_000;
    let config = Config {
        max_subscriptions_per_client: TOPICS,
        ..Config::default()
    };
    let mut net = Net::new();
    for i in 0..2 {
        let seeds: &[usize] = if i == 0 { &[] } else { &[0] };
        net.add_with(config.clone(), mesh_config(i, seeds), Security::Plain);
    }
    net.secs(20);
    let sub = net.client(1, "");
    let mut b = BytesMut::new();
    for t in 0..TOPICS {
        ClientPacket::Subscribe {
            topic: format!("t{t}").as_str().into(),
        }
        .encode(&mut b);
    }
    // The link is slower than the burst: its socket takes nothing for a moment.
    net.stall(1, 0);
    net.send_bytes(1, sub, &b);
    net.millis(100);
    net.unstall(1, 0);
    net.secs(2);
    assert_eq!(net.node(1).status().trees, 5 * TOPICS);
    // Every tree node 1 hangs from node 0 is one node 0 holds it in: none half-built.
    let whole = |net: &Net| {
        let (id0, id1) = (net.node(0).status().id, net.node(1).status().id);
        let (s0, s1) = (net.node(0).scribe().unwrap(), net.node(1).scribe().unwrap());
        let mut through_0 = 0;
        for t in 0..TOPICS {
            let group = crate::scribe::Group::topic(format!("t{t}").as_str().into());
            for key in s1.keys(&group) {
                if s1.parent(key).map(|p| p.id) == id0 {
                    through_0 += 1;
                    let children = s0.relations(key).map(|(_, c)| c).unwrap_or_default();
                    assert!(children.contains(&id1.unwrap()), "tree {key} of topic t{t}");
                }
            }
        }
        assert!(through_0 > TOPICS, "{through_0} trees through node 0");
    };
    whole(&net);
    // Refresh beats list those 75,000 trees in ranges of keys, many beats each: node 0
    // keeps every one (a range read as the whole list would drop the rest).
    net.secs(12);
    whole(&net);
    // One event to every topic from the other node: every one arrives.
    let publisher = net.client(0, "");
    let mut b = BytesMut::new();
    for t in 0..TOPICS {
        ClientPacket::Publish {
            topic: format!("t{t}").as_str().into(),
            event: Bytes::from_static(b"e"),
        }
        .encode(&mut b);
    }
    net.send_bytes(0, publisher, &b);
    net.secs(2);
    let got = net
        .take(1, sub)
        .into_iter()
        .filter(|p| matches!(p, NodePacket::Publish { .. }))
        .count();
    assert_eq!(got, TOPICS);
    for i in 0..2 {
        let s = net.node(i).stats();
        assert_eq!((s.tree_messages_dropped, s.casts_stray), (0, 0), "node {i}");
    }
}

#[test]
fn tails_after_the_last_subscriber_left_are_not_counted_as_lost() {
    let mut net = Net::ready(3);
    let sub = net.client(2, "");
    net.send(2, sub, ClientPacket::Subscribe { topic: "t".into() });
    net.secs(2);
    let publisher = net.client(0, "");
    for i in 0..5u8 {
        net.send(
            0,
            publisher,
            ClientPacket::Publish {
                topic: "t".into(),
                event: vec![i].into(),
            },
        );
    }
    net.secs(1);
    let got = net
        .take(2, sub)
        .into_iter()
        .filter(|p| matches!(p, NodePacket::Publish { .. }))
        .count();
    assert_eq!(got, 5);
    // The subscriber goes; the origin's tails (numbered, carrying nothing) follow the
    // burst for a minute, and find no tree: nothing was lost, and nothing is counted.
    net.send(2, sub, ClientPacket::Close);
    net.secs(60);
    let tails: u64 = (0..3).map(|i| net.node(i).stats().cast_tails).sum();
    assert!(tails > 0, "tails were sent");
    for i in 0..3 {
        assert_eq!(net.node(i).stats().casts_no_tree, 0, "node {i}");
    }
}

#[test]
fn trees_past_their_share_of_memory_are_refused_loudly_and_charged() {
    use crate::testnet::mesh_config;
    use crate::{Config, Event, Security};
    use crate::{NEIGHBOUR_BYTES, TREE_BYTES};
    // A quarter of the budget holds one group's 5 trees (and their parents), not two's.
    let share = 5 * (TREE_BYTES + NEIGHBOUR_BYTES) + TREE_BYTES;
    let mut config = Config {
        max_memory: 4 * share,
        max_client_backlog: 4 * share,
        client_backlog_high: share,
        ..Config::default()
    };
    config.limits.max_message_size = share as u64;
    config.limits.max_chunk_size = share as u64;
    config.limits.max_name_size = 64;
    let mut net = Net::new();
    net.add(mesh_config(0, &[]), Security::Plain);
    net.add_with(config, mesh_config(1, &[0]), Security::Plain);
    net.secs(20);
    let sub = net.client(1, "");
    assert_eq!(net.node(1).memory_used(), 0);
    for topic in ["first", "second"] {
        net.send(
            1,
            sub,
            ClientPacket::Subscribe {
                topic: topic.into(),
            },
        );
    }
    net.secs(2);
    let reports: Vec<(String, u64, Option<usize>)> = net
        .events_of(1)
        .into_iter()
        .filter_map(|e| match e {
            Event::TreesFull {
                group,
                refused,
                memory,
                ..
            } => Some((group.clone(), *refused, *memory)),
            _ => None,
        })
        .collect();
    // The second topic found no room for its first tree: the warning names the group and
    // the memory bound, not `max_trees`.
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].0, "topic second");
    assert_eq!(reports[0].2, Some(share));
    assert!(reports[0].1 >= 4, "{reports:?}");
    // What the trees take is charged to the budget, within their quarter.
    let used = net.node(1).memory_used();
    assert!(used >= 5 * TREE_BYTES && used <= share, "{used} of {share}");
    // Leaving gives the share back: the next topic gets its trees.
    net.send(1, sub, ClientPacket::Close);
    net.secs(2);
    assert_eq!(net.node(1).status().trees, 0);
    assert_eq!(net.node(1).memory_used(), 0);
}

/// Stops node `i` for 12 s and resumes it: a second later it has taken none of its peers
/// for dead (its own stall is not their silence).
fn stop_and_resume_without_deaths(net: &mut Net, i: usize) {
    let before = net.events_of(i).len();
    net.freeze(i);
    net.secs(12);
    net.thaw(i);
    net.secs(1);
    let downs: Vec<_> = net.events_of(i)[before..]
        .iter()
        .filter(|e| matches!(e, Event::Mesh(crate::MeshEvent::PeerDown(_))))
        .map(|e| format!("{e:?}"))
        .collect();
    assert!(
        downs.is_empty(),
        "its own stall taken for its peers' deaths: {downs:?}"
    );
}

/// Found by swarm testing: a node stopped a moment after it joined, before its first
/// heartbeat, had no earlier heartbeat to tell its stall by, and took every peer it had
/// learned for dead when it resumed.
#[test]
fn a_node_stopped_before_its_first_heartbeat_keeps_its_peers() {
    let mut net = Net::ready(4);
    let new = net.add(crate::testnet::mesh_config(4, &[0]), crate::Security::Plain);
    net.millis(500);
    assert!(
        net.node(new).status().peers >= 3,
        "it joined and learned its peers"
    );
    stop_and_resume_without_deaths(&mut net, new);
    net.secs(5);
    assert_eq!(net.node(new).status().peers, 4);
}

#[test]
fn a_node_resuming_from_a_stall_keeps_its_peers_and_trees() {
    use crate::MeshEvent;
    let mut net = Net::ready(4);
    let sub = net.client(3, "");
    net.send(3, sub, ClientPacket::Subscribe { topic: "t".into() });
    let publisher = net.client(0, "");
    net.secs(3);
    let lost_before = net.node(3).scribe().unwrap().stats().neighbours_lost;
    let trees_before = net.node(3).status().trees;
    let events_before = net.events_of(3).len();
    // Node 3 stops for 12 s (SIGSTOP): its peers see it silent, and its own timers are
    // all late when it resumes.
    stop_and_resume_without_deaths(&mut net, 3);
    // It says it was stopped, and for about how long.
    let resumed: Vec<_> = net.events_of(3)[events_before..]
        .iter()
        .filter_map(|e| match e {
            Event::Mesh(MeshEvent::Resumed { late }) => Some(*late),
            _ => None,
        })
        .collect();
    assert!(
        resumed.len() == 1 && resumed[0] >= Duration::from_secs(10),
        "{resumed:?}"
    );
    assert_eq!(
        net.node(3).scribe().unwrap().stats().neighbours_lost,
        lost_before,
        "tree neighbours dropped for its own stall"
    );
    assert_eq!(net.node(3).status().trees, trees_before);
    // And it is whole again: the ring knows it, events reach its subscriber.
    net.secs(5);
    for i in 0..3 {
        assert_eq!(net.node(i).status().peers, 3, "node {i}");
    }
    net.take(3, sub);
    net.send(
        0,
        publisher,
        ClientPacket::Publish {
            topic: "t".into(),
            event: b("after"),
        },
    );
    net.secs(1);
    assert_eq!(
        net.take(3, sub),
        [NodePacket::Publish {
            topic: "t".into(),
            event: b("after")
        }]
    );
}

#[test]
fn a_reply_lost_with_its_requester_node_is_reported() {
    let mut net = Net::ready(2);
    let member = net.client(1, "echo");
    let requester = net.client(0, "");
    net.secs(2);
    net.send(
        0,
        requester,
        ClientPacket::Request {
            id: 7,
            cluster: "echo".into(),
            request: b("ping"),
            timeout_ms: 5000,
        },
    );
    net.secs(1);
    let got = net.take(1, member);
    let [NodePacket::Request { id, .. }] = &got[..] else {
        panic!("{got:?}");
    };
    // The requester's node dies while the member thinks: its reply has nowhere to go.
    net.kill(0);
    net.send(
        1,
        member,
        ClientPacket::Reply {
            id: *id,
            outcome: Ok(b("pong")),
        },
    );
    net.secs(1);
    let dropped = dropped(&net, 1);
    assert!(
        matches!(&dropped[..], [("peer_unreachable", what, 1)] if what.starts_with("a reply")),
        "{dropped:?}"
    );
    assert_eq!(net.node(1).stats().undelivered, 1);
}

#[test]
fn a_request_whose_time_runs_out_is_reported() {
    let mut net = Net::ready(2);
    let _member = net.client(1, "echo");
    let requester = net.client(0, "");
    net.secs(2);
    // A millisecond cannot pay for the hop to the member's node.
    net.send(
        0,
        requester,
        ClientPacket::Request {
            id: 7,
            cluster: "echo".into(),
            request: b("ping"),
            timeout_ms: 1,
        },
    );
    net.secs(1);
    let reported: Vec<_> = dropped(&net, 0)
        .into_iter()
        .map(|(reason, _, count)| (reason, count))
        .collect();
    assert_eq!(reported, [("anycast_expired", 1)]);
    assert_eq!(net.node(0).stats().anycasts_expired, 1);
    // The requester is answered all the same: timed out.
    let got = net.take(0, requester);
    assert!(
        matches!(
            &got[..],
            [NodePacket::Reply {
                id: 7,
                outcome: ReplyOutcome::TimedOut
            }]
        ),
        "{got:?}"
    );
}

/// The losses node `i` reported: (reason, what, count).
fn dropped(net: &Net, i: usize) -> Vec<(&'static str, String, u64)> {
    net.events_of(i)
        .into_iter()
        .filter_map(|e| match e {
            Event::Dropped {
                reason,
                what,
                count,
            } => Some((*reason, what.clone(), *count)),
            _ => None,
        })
        .collect()
}

/// A member's reply that cannot go straight to the requester's node (the two nodes cannot
/// reach each other, both reach the others) goes around through the overlay, as an
/// origin's answers to an ask do: the requester gets it, not a timeout.
#[test]
fn a_reply_that_cannot_go_straight_back_goes_around() {
    let mut net = Net::ready(4);
    let m = net.client(2, "echo");
    let c = net.client(0, "");
    net.secs(2);
    for id in 1..=20 {
        ask(&mut net, 0, c, "echo", id, 5000);
    }
    net.millis(500);
    let requests = net.take(2, m);
    assert_eq!(requests.len(), 20, "the member got {requests:?}");
    // Now nodes 0 and 2 cannot reach each other (node 2's link to node 0 failed, and its
    // dials fail); the member answers.
    net.cut.insert((0, 2));
    net.fail_links_one_side(2, 0);
    echo(&mut net, 2, m, requests);
    net.secs(3);
    assert_eq!(by_id(net.take(0, c)), echoed(20));
}
