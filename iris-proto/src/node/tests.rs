//! The node in virtual time, driven by sans-IO clients.

use super::*;
use crate::relay::client::{ClientSession, SessionEvent};
use crate::relay::codec::Limits;
use crate::relay::{ClientPacket, NodePacket, ReplyOutcome};
use std::collections::BTreeMap;
use std::time::Duration;

/// A node plus in-memory clients; time moves only when a test says so.
struct Harness {
    node: Node,
    now: Instant,
    next_conn: u64,
    clients: BTreeMap<ConnId, ClientSession>,
    inbox: BTreeMap<ConnId, Vec<NodePacket>>,
    closed: BTreeSet<ConnId>,
    events: Vec<Event>,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(Config::default(), [7; 32])
    }

    fn with(cfg: Config, seed: [u8; 32]) -> Harness {
        let mut h = Harness {
            node: Node::new(cfg, seed, Instant::ZERO).unwrap(),
            now: Instant::ZERO,
            next_conn: 0,
            clients: BTreeMap::new(),
            inbox: BTreeMap::new(),
            closed: BTreeSet::new(),
            events: Vec::new(),
        };
        h.drain();
        h
    }

    fn connect_raw(&mut self) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.clients
            .insert(conn, ClientSession::new(Limits::default()));
        self.node.handle(self.now, Input::ClientConnected(conn));
        self.drain();
        conn
    }

    fn connect(&mut self, cluster: &str) -> ConnId {
        let conn = self.connect_raw();
        let mut b = BytesMut::new();
        ClientSession::encode_init(cluster, &mut b);
        self.raw(conn, &b);
        assert!(
            self.clients[&conn].is_accepted(),
            "handshake for {cluster:?}"
        );
        conn
    }

    fn raw(&mut self, conn: ConnId, bytes: &[u8]) {
        self.node.handle(self.now, Input::ClientData(conn, bytes));
        self.drain();
    }

    fn send(&mut self, conn: ConnId, p: ClientPacket) {
        let mut b = BytesMut::new();
        p.encode(&mut b);
        self.raw(conn, &b);
    }

    fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        while let Some(at) = self.node.poll_timeout().filter(|&at| at <= target) {
            self.now = at.max(self.now);
            self.node.handle(self.now, Input::Timeout);
            self.drain();
        }
        self.now = target;
    }

    fn drain(&mut self) {
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Transmit(conn, data) => {
                    assert!(!self.closed.contains(&conn), "transmit after close");
                    let c = self.clients.get_mut(&conn).unwrap();
                    c.feed(&data);
                    while let Some(ev) = c.poll().unwrap() {
                        if let SessionEvent::Packet(p) = ev {
                            self.inbox.entry(conn).or_default().push(p);
                        }
                    }
                    self.node
                        .handle(self.now, Input::ClientFlushed(conn, data.len()));
                }
                Output::Close(conn) | Output::Abort(conn) => {
                    assert!(self.closed.insert(conn), "closed twice");
                }
                Output::Event(e) => self.events.push(e),
                other => panic!("a lone node has no peers: {other:?}"),
            }
        }
    }

    fn take(&mut self, conn: ConnId) -> Vec<NodePacket> {
        self.inbox.remove(&conn).unwrap_or_default()
    }
}

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[test]
fn lone_node_is_ready_at_once() {
    let h = Harness::new();
    assert_eq!(h.events, vec![Event::Ready]);
}

#[test]
fn wrong_version_is_denied_naming_both_versions() {
    let mut h = Harness::new();
    let c = h.connect_raw();
    let mut b = BytesMut::new();
    ClientPacket::Init {
        magic: bytes(CLIENT_MAGIC),
        version: bytes("v0.9"),
        cluster: "".into(),
    }
    .encode(&mut b);
    h.node.handle(h.now, Input::ClientData(c, &b));
    let mut got = Vec::new();
    while let Some(o) = h.node.poll_output() {
        got.push(o);
    }
    let mut deny = BytesMut::new();
    NodePacket::Deny {
        magic: bytes(RELAY_MAGIC),
        reason: "Unsupported protocol. Client: v0.9. Iris: v1.0-draft2.".into(),
    }
    .encode(&mut deny);
    assert_eq!(got[0], Output::Transmit(c, deny.freeze()));
    assert_eq!(got[1], Output::Close(c));
}

#[test]
fn wrong_magic_and_non_init_close_silently() {
    let mut h = Harness::new();
    let c = h.connect_raw();
    let mut b = BytesMut::new();
    ClientPacket::Init {
        magic: bytes("http-client-magic"),
        version: bytes(PROTOCOL_VERSION),
        cluster: "".into(),
    }
    .encode(&mut b);
    h.raw(c, &b);
    assert!(h.closed.contains(&c));
    assert!(h.take(c).is_empty());

    let d = h.connect_raw();
    h.raw(d, b"GET / HTTP/1.1\r\n");
    assert!(h.closed.contains(&d));
    assert!(h.take(d).is_empty());
}

#[test]
fn stalled_handshake_is_dropped_at_the_deadline_only() {
    let mut h = Harness::new();
    let c = h.connect_raw();
    h.raw(c, &[0x00, 0x11, b'i', b'r']);
    h.advance(Duration::from_millis(4999));
    assert!(!h.closed.contains(&c));
    let other = h.connect("x");
    h.advance(Duration::from_millis(1));
    assert!(h.closed.contains(&c));
    assert!(!h.closed.contains(&other));
    assert_eq!(h.node.stats().handshake_timeouts, 1);
}

#[test]
fn broadcast_reaches_every_member_but_not_plain_clients() {
    let mut h = Harness::new();
    let a = h.connect("svc");
    let b = h.connect("svc");
    let other = h.connect("other");
    let plain = h.connect("");
    h.send(
        a,
        ClientPacket::Broadcast {
            cluster: "svc".into(),
            message: bytes("hi"),
        },
    );
    let want = vec![NodePacket::Broadcast {
        message: bytes("hi"),
    }];
    assert_eq!(h.take(a), want);
    assert_eq!(h.take(b), want);
    assert!(h.take(other).is_empty());
    assert!(h.take(plain).is_empty());
    // No members: dropped silently, the sender keeps its connection.
    h.send(
        plain,
        ClientPacket::Broadcast {
            cluster: "nobody".into(),
            message: bytes("x"),
        },
    );
    assert!(!h.closed.contains(&plain));
}

fn request(h: &mut Harness, from: ConnId, id: u64, cluster: &str, body: &str, timeout_ms: u64) {
    h.send(
        from,
        ClientPacket::Request {
            id,
            cluster: cluster.into(),
            request: bytes(body),
            timeout_ms,
        },
    );
}

#[test]
fn request_is_forwarded_with_its_timeout_and_answered_once() {
    let mut h = Harness::new();
    let m = h.connect("svc");
    let c = h.connect("");
    request(&mut h, c, 42, "svc", "ping", 1);
    let delivered = h.take(m);
    assert_eq!(
        delivered,
        vec![NodePacket::Request {
            id: 0,
            request: bytes("ping"),
            timeout_ms: 1
        }]
    );
    h.send(
        m,
        ClientPacket::Reply {
            id: 0,
            outcome: Ok(Bytes::new()),
        },
    );
    assert_eq!(
        h.take(c),
        vec![NodePacket::Reply {
            id: 42,
            outcome: ReplyOutcome::Success(Bytes::new())
        }]
    );
    // The deadline passing afterwards sends nothing more; a second reply is ignored.
    h.advance(Duration::from_secs(1));
    h.send(
        m,
        ClientPacket::Reply {
            id: 0,
            outcome: Ok(bytes("again")),
        },
    );
    assert!(h.take(c).is_empty());
    assert!(!h.closed.contains(&m));
}

#[test]
fn silent_member_and_empty_cluster_time_out_exactly_once_at_the_deadline() {
    let mut h = Harness::new();
    let m = h.connect("svc");
    let c = h.connect("");
    request(&mut h, c, 1, "svc", "a", 100);
    request(&mut h, c, 2, "empty", "b", 100);
    h.advance(Duration::from_millis(99));
    assert!(h.take(c).is_empty());
    h.advance(Duration::from_millis(1));
    let timed_out = |id| NodePacket::Reply {
        id,
        outcome: ReplyOutcome::TimedOut,
    };
    assert_eq!(h.take(c), vec![timed_out(1), timed_out(2)]);
    // The member's late reply is ignored.
    h.send(
        m,
        ClientPacket::Reply {
            id: 0,
            outcome: Ok(bytes("late")),
        },
    );
    h.advance(Duration::from_secs(10));
    assert!(h.take(c).is_empty());
    assert_eq!(h.node.stats().requests_timed_out, 2);
}

#[test]
fn fault_is_forwarded_and_an_empty_fault_means_no_reply() {
    let mut h = Harness::new();
    let m = h.connect("svc");
    let c = h.connect("");
    request(&mut h, c, 1, "svc", "a", 50);
    request(&mut h, c, 2, "svc", "b", 50);
    h.send(
        m,
        ClientPacket::Reply {
            id: 0,
            outcome: Err("boom".into()),
        },
    );
    h.send(
        m,
        ClientPacket::Reply {
            id: 1,
            outcome: Err("".into()),
        },
    );
    assert_eq!(
        h.take(c),
        vec![NodePacket::Reply {
            id: 1,
            outcome: ReplyOutcome::Fault("boom".into())
        }]
    );
    h.advance(Duration::from_millis(50));
    assert_eq!(
        h.take(c),
        vec![NodePacket::Reply {
            id: 2,
            outcome: ReplyOutcome::TimedOut
        }]
    );
}

#[test]
fn requests_are_balanced_uniformly_among_local_members() {
    let mut h = Harness::new();
    let members: Vec<ConnId> = (0..4).map(|_| h.connect("svc")).collect();
    let c = h.connect("");
    for id in 0..4000 {
        request(&mut h, c, id, "svc", "x", 1000);
    }
    for m in members {
        let n = h.take(m).len();
        // Binomial(4000, 1/4): mean 1000, sd ~27; 5 sd either side.
        assert!((865..=1135).contains(&n), "member got {n} of 4000");
    }
}

#[test]
fn member_leaving_makes_its_requests_time_out_and_origin_leaving_is_quiet() {
    let mut h = Harness::new();
    let m = h.connect("svc");
    let c = h.connect("");
    request(&mut h, c, 9, "svc", "x", 20);
    assert_eq!(h.take(m).len(), 1);
    h.send(m, ClientPacket::Close);
    assert_eq!(h.take(m), vec![NodePacket::Close { reason: "".into() }]);
    assert!(h.closed.contains(&m));
    h.advance(Duration::from_millis(20));
    assert_eq!(
        h.take(c),
        vec![NodePacket::Reply {
            id: 9,
            outcome: ReplyOutcome::TimedOut
        }]
    );
    let m2 = h.connect("svc");
    request(&mut h, c, 10, "svc", "y", 20);
    h.node.handle(h.now, Input::ClientGone(c));
    h.drain();
    h.send(
        m2,
        ClientPacket::Reply {
            id: 0,
            outcome: Ok(bytes("z")),
        },
    );
    h.advance(Duration::from_secs(1));
    assert!(!h.closed.contains(&m2));
}

#[test]
fn duplicate_pending_request_id_is_a_violation() {
    let mut h = Harness::new();
    let _m = h.connect("svc");
    let c = h.connect("");
    request(&mut h, c, 1, "svc", "a", 1000);
    request(&mut h, c, 1, "svc", "b", 1000);
    assert!(h.closed.contains(&c));
    assert!(
        matches!(h.take(c).last(), Some(NodePacket::Close { reason }) if reason.as_str().contains("already pending"))
    );
}

#[test]
fn pubsub_with_double_subscribe_and_unknown_unsubscribe() {
    let mut h = Harness::new();
    let a = h.connect("");
    let b = h.connect("svc");
    for _ in 0..2 {
        h.send(a, ClientPacket::Subscribe { topic: "t".into() });
    }
    h.send(b, ClientPacket::Subscribe { topic: "t".into() });
    h.send(
        b,
        ClientPacket::Unsubscribe {
            topic: "never".into(),
        },
    );
    h.send(
        a,
        ClientPacket::Publish {
            topic: "t".into(),
            event: bytes("e1"),
        },
    );
    let ev = |e: &str| NodePacket::Publish {
        topic: "t".into(),
        event: bytes(e),
    };
    // Subscribed twice, delivered once; the publisher gets its own event.
    assert_eq!(h.take(a), vec![ev("e1")]);
    assert_eq!(h.take(b), vec![ev("e1")]);
    h.send(b, ClientPacket::Unsubscribe { topic: "t".into() });
    h.send(
        b,
        ClientPacket::Publish {
            topic: "t".into(),
            event: bytes("e2"),
        },
    );
    assert_eq!(h.take(a), vec![ev("e2")]);
    assert!(h.take(b).is_empty());
    assert!(h.closed.is_empty());
}

#[test]
fn violation_closes_only_that_client_with_a_reason() {
    let mut h = Harness::new();
    let good = h.connect("svc");
    let bad = h.connect("");
    h.raw(bad, &[0x05, 0x00, 0x07]);
    assert!(h.closed.contains(&bad));
    assert_eq!(
        h.take(bad),
        vec![NodePacket::Close {
            reason: "invalid bool byte 0x07".into()
        }]
    );
    h.send(
        good,
        ClientPacket::Broadcast {
            cluster: "svc".into(),
            message: bytes("still here"),
        },
    );
    assert_eq!(h.take(good).len(), 1);
    assert_eq!(h.node.stats().protocol_violations, 1);
}

#[test]
fn slow_consumer_is_dropped_at_the_backlog_cap() {
    let cfg = Config {
        client_backlog_high: 5_000,
        max_client_backlog: 10_000,
        ..Config::default()
    };
    let mut h = Harness::with(cfg, [1; 32]);
    let slow = h.connect("svc");
    let sender = h.connect("");
    // A driver ignoring `reading_paused`, never reporting flushes: the hard cap still holds.
    for _ in 0..30 {
        let mut b = BytesMut::new();
        ClientPacket::Broadcast {
            cluster: "svc".into(),
            message: Bytes::from(vec![0u8; 1000]),
        }
        .encode(&mut b);
        h.node.handle(h.now, Input::ClientData(sender, &b));
        while let Some(o) = h.node.poll_output() {
            if let Output::Close(c) | Output::Abort(c) = o {
                h.closed.insert(c);
            }
        }
    }
    assert!(h.closed.contains(&slow));
    assert!(!h.closed.contains(&sender));
    assert_eq!(h.node.stats().slow_consumers, 1);
}

#[test]
fn shutdown_answers_pending_requests_and_closes_everyone_with_the_reason() {
    let mut h = Harness::new();
    let m = h.connect("svc");
    let c = h.connect("");
    request(&mut h, c, 5, "svc", "x", 60_000);
    h.take(m);
    h.node.handle(h.now, Input::Shutdown("node shutting down"));
    h.drain();
    assert_eq!(
        h.take(c),
        vec![
            NodePacket::Reply {
                id: 5,
                outcome: ReplyOutcome::TimedOut
            },
            NodePacket::Close {
                reason: "node shutting down".into()
            }
        ]
    );
    assert_eq!(
        h.take(m),
        vec![NodePacket::Close {
            reason: "node shutting down".into()
        }]
    );
    assert!(h.closed.contains(&m) && h.closed.contains(&c));
    assert_eq!(h.events.last(), Some(&Event::Stopped));
    assert_eq!(h.node.poll_timeout(), None);
}

/// Builds a tunnel from `c` (id `tun`) to the only member `m` (which names it `mtun`).
fn open_tunnel(h: &mut Harness, c: ConnId, tun: u64, m: ConnId, mtun: u64) {
    h.send(
        c,
        ClientPacket::TunInit {
            tun_id: tun,
            cluster: "svc".into(),
            timeout_ms: 1000,
        },
    );
    let offer = h.take(m);
    let [
        NodePacket::TunInit {
            build_id,
            chunk_limit: 65536,
        },
    ] = offer[..]
    else {
        panic!("expected one offer, got {offer:?}");
    };
    h.send(
        m,
        ClientPacket::TunConfirm {
            build_id,
            tun_id: mtun,
        },
    );
    assert_eq!(
        h.take(c),
        vec![
            NodePacket::TunConfirm {
                tun_id: tun,
                chunk_limit: Some(65536)
            },
            NodePacket::TunAllow {
                tun_id: tun,
                space: 4 << 20
            }
        ]
    );
    assert_eq!(
        h.take(m),
        vec![NodePacket::TunAllow {
            tun_id: mtun,
            space: 4 << 20
        }]
    );
}

fn transfer(h: &mut Harness, from: ConnId, tun_id: u64, size_or_cont: u64, len: usize) {
    h.send(
        from,
        ClientPacket::TunTransfer {
            tun_id,
            size_or_cont,
            payload: Bytes::from(vec![1u8; len]),
        },
    );
}

#[test]
fn tunnel_allowance_gates_first_chunks_but_forces_continuations() {
    let mut h = Harness::new();
    let m = h.connect("svc");
    let c = h.connect("");
    open_tunnel(&mut h, c, 3, m, 8);
    // The member grants only 10 bytes; c sends a 30-byte message in three chunks.
    h.send(
        m,
        ClientPacket::TunAllow {
            tun_id: 8,
            space: 10,
        },
    );
    transfer(&mut h, c, 3, 30, 10);
    transfer(&mut h, c, 3, 0, 10);
    transfer(&mut h, c, 3, 0, 10);
    let got = h.take(m);
    assert_eq!(
        got.len(),
        3,
        "continuations pass without allowance: {got:?}"
    );
    // Each forwarded chunk is re-granted to the sender.
    let regrant: u64 = h
        .take(c)
        .iter()
        .map(|p| match p {
            NodePacket::TunAllow { tun_id: 3, space } => *space,
            other => panic!("unexpected {other:?}"),
        })
        .sum();
    assert_eq!(regrant, 30);
    // The next message's first chunk waits: allowance is now 10 - 30 = -20.
    transfer(&mut h, c, 3, 5, 5);
    assert!(h.take(m).is_empty());
    h.send(
        m,
        ClientPacket::TunAllow {
            tun_id: 8,
            space: 24,
        },
    );
    assert!(h.take(m).is_empty(), "-20 + 24 = 4 < 5");
    h.send(
        m,
        ClientPacket::TunAllow {
            tun_id: 8,
            space: 1,
        },
    );
    assert_eq!(
        h.take(m),
        vec![NodePacket::TunTransfer {
            tun_id: 8,
            size_or_cont: 5,
            payload: Bytes::from(vec![1u8; 5])
        }]
    );
}

#[test]
fn first_chunk_after_an_incomplete_message_is_forced() {
    let mut h = Harness::new();
    let m = h.connect("svc");
    let c = h.connect("");
    open_tunnel(&mut h, c, 1, m, 1);
    h.send(
        m,
        ClientPacket::TunAllow {
            tun_id: 1,
            space: 4,
        },
    );
    // A 100-byte message abandoned after 4 bytes, then a new one: it goes regardless.
    transfer(&mut h, c, 1, 100, 4);
    transfer(&mut h, c, 1, 3, 3);
    assert_eq!(h.take(m).len(), 2);
}

#[test]
fn tunnel_close_is_acknowledged_and_the_other_end_told_after_queued_data() {
    let mut h = Harness::new();
    let m = h.connect("svc");
    let c = h.connect("");
    open_tunnel(&mut h, c, 3, m, 8);
    transfer(&mut h, c, 3, 2, 2); // no allowance granted by m: queued
    assert!(h.take(m).is_empty());
    h.send(c, ClientPacket::TunClose { tun_id: 3 });
    assert_eq!(
        h.take(c),
        vec![NodePacket::TunClose {
            tun_id: 3,
            reason: "".into()
        }]
    );
    let got = h.take(m);
    assert_eq!(got.len(), 2);
    assert!(matches!(got[0], NodePacket::TunTransfer { tun_id: 8, .. }));
    assert_eq!(
        got[1],
        NodePacket::TunClose {
            tun_id: 8,
            reason: "".into()
        }
    );
    // Packets for the closed id are ignored; closing it again is still acknowledged.
    transfer(&mut h, m, 8, 1, 1);
    h.send(m, ClientPacket::TunClose { tun_id: 8 });
    assert_eq!(h.take(m).len(), 1);
    assert!(h.closed.is_empty());
}

#[test]
fn tunnel_to_self_and_unconfirmed_offer_times_out() {
    let mut h = Harness::new();
    let m = h.connect("svc");
    // A member builds a tunnel to its own cluster: it is offered to itself.
    h.send(
        m,
        ClientPacket::TunInit {
            tun_id: 1,
            cluster: "svc".into(),
            timeout_ms: 10_000,
        },
    );
    assert!(matches!(h.take(m)[..], [NodePacket::TunInit { .. }]));
    // It never confirms: after the confirm timeout (5 s) the builder hears "timed out"
    // and the connection stays.
    h.advance(Duration::from_millis(4999));
    assert!(h.take(m).is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(
        h.take(m),
        vec![NodePacket::TunConfirm {
            tun_id: 1,
            chunk_limit: None
        }]
    );
    assert!(h.closed.is_empty());
    // A late confirm is told the tunnel is dead.
    h.send(
        m,
        ClientPacket::TunConfirm {
            build_id: 0,
            tun_id: 2,
        },
    );
    assert!(
        matches!(&h.take(m)[..], [NodePacket::TunClose { tun_id: 2, reason }] if !reason.is_empty())
    );
}

#[test]
fn tunnel_to_an_empty_cluster_fails_at_once() {
    let mut h = Harness::new();
    let c = h.connect("");
    h.send(
        c,
        ClientPacket::TunInit {
            tun_id: 1,
            cluster: "nobody".into(),
            timeout_ms: 1000,
        },
    );
    assert_eq!(
        h.take(c),
        vec![NodePacket::TunConfirm {
            tun_id: 1,
            chunk_limit: None
        }]
    );
}

#[test]
fn closing_a_connection_closes_its_tunnels_at_the_other_end() {
    let mut h = Harness::new();
    let m = h.connect("svc");
    let c = h.connect("");
    open_tunnel(&mut h, c, 3, m, 8);
    h.node.handle(h.now, Input::ClientGone(c));
    h.drain();
    assert_eq!(
        h.take(m),
        vec![NodePacket::TunClose {
            tun_id: 8,
            reason: "".into()
        }]
    );
}

#[test]
fn exceeding_the_tunnel_allowance_is_a_violation() {
    let mut h = Harness::new();
    let m = h.connect("svc");
    let c = h.connect("");
    open_tunnel(&mut h, c, 3, m, 8);
    // m grants nothing; c sends far beyond its 4 MiB window.
    for _ in 0..70 {
        transfer(&mut h, c, 3, 65536, 65536);
    }
    assert!(h.closed.contains(&c));
    assert!(!h.closed.contains(&m));
}

#[test]
fn same_seed_same_outputs() {
    fn run(seed: [u8; 32]) -> Vec<Vec<NodePacket>> {
        let mut h = Harness::with(Config::default(), seed);
        let ms: Vec<ConnId> = (0..3).map(|_| h.connect("svc")).collect();
        let c = h.connect("");
        for id in 0..50 {
            request(&mut h, c, id, "svc", "x", 1000);
        }
        ms.iter().map(|&m| h.take(m)).collect()
    }
    assert_eq!(run([3; 32]), run([3; 32]));
    assert_ne!(run([3; 32]), run([4; 32]));
}

/// Sends `n` broadcasts of 1000 bytes from `from` to cluster "svc" without flushing anything.
fn flood(h: &mut Harness, from: ConnId, n: usize) -> Vec<(ConnId, usize)> {
    let mut transmitted = Vec::new();
    for _ in 0..n {
        let mut b = BytesMut::new();
        ClientPacket::Broadcast {
            cluster: "svc".into(),
            message: Bytes::from(vec![0u8; 1000]),
        }
        .encode(&mut b);
        h.node.handle(h.now, Input::ClientData(from, &b));
        while let Some(o) = h.node.poll_output() {
            match o {
                Output::Transmit(c, d) => transmitted.push((c, d.len())),
                Output::Close(c) | Output::Abort(c) => {
                    h.closed.insert(c);
                }
                Output::Event(_) => {}
                other => panic!("a lone node has no peers: {other:?}"),
            }
        }
    }
    transmitted
}

fn throttled() -> Config {
    Config {
        client_backlog_high: 10_000,
        slow_consumer_timeout: Duration::from_secs(10),
        ..Config::default()
    }
}

#[test]
fn congestion_pauses_reading_until_the_backlog_halves_and_loses_nothing() {
    let mut h = Harness::with(throttled(), [1; 32]);
    let consumer = h.connect("svc");
    let producer = h.connect("");
    let sent = flood(&mut h, producer, 9);
    assert!(!h.node.reading_paused(), "9 KB is under the watermark");
    let more = flood(&mut h, producer, 2);
    assert!(h.node.reading_paused(), "11 KB is over it");
    // The consumer's socket drains: 5 KB written is not enough (hysteresis at half)...
    let total: usize = sent.iter().chain(&more).map(|(_, n)| n).sum();
    h.node.handle(h.now, Input::ClientFlushed(consumer, 5_000));
    assert!(h.node.reading_paused());
    // ...but down to half the watermark resumes reading.
    h.node
        .handle(h.now, Input::ClientFlushed(consumer, total - 5_000));
    assert!(!h.node.reading_paused());
    // Nothing was dropped and the deadline no longer applies.
    h.advance(Duration::from_secs(60));
    assert!(h.closed.is_empty());
    assert_eq!(h.node.stats().slow_consumers, 0);
}

#[test]
fn a_consumer_stuck_past_the_deadline_is_dropped_and_reading_resumes() {
    let mut h = Harness::with(throttled(), [1; 32]);
    let stuck = h.connect("svc");
    let producer = h.connect("");
    flood(&mut h, producer, 11);
    assert!(h.node.reading_paused());
    h.advance(Duration::from_millis(9_999));
    assert!(!h.closed.contains(&stuck));
    h.advance(Duration::from_millis(1));
    assert!(h.closed.contains(&stuck));
    assert!(!h.closed.contains(&producer));
    assert!(!h.node.reading_paused());
    assert_eq!(h.node.stats().slow_consumers, 1);
}
