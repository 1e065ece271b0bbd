//! The node in virtual time, driven by sans-IO clients.

use super::*;
use crate::relay::client::{ClientSession, SessionEvent};
use crate::relay::codec::{CLIENT_MAGIC, Limits, PROTOCOL_VERSION, RELAY_MAGIC};
use crate::relay::{ClientPacket, NodePacket, ReplyOutcome};
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// A node plus in-memory clients; time moves only when a test says so.
///
/// It plays the driver: a client's bytes are fed while the node lets it be read (what a
/// paused client writes waits, as in its socket, until it is resumed), and what the node
/// transmits is read and flushed at once, unless the test stalled that client (then it
/// piles up unflushed until the test lets the client read).
struct Harness {
    node: Node,
    now: Instant,
    next_conn: u64,
    clients: BTreeMap<ConnId, ClientSession>,
    inbox: BTreeMap<ConnId, Vec<NodePacket>>,
    closed: BTreeSet<ConnId>,
    events: Vec<Event>,
    /// Clients the node asked not to read, with what they wrote meanwhile.
    paused: BTreeMap<ConnId, Vec<u8>>,
    /// Clients that do not read: transmits handed to them but not yet read.
    stalled: BTreeMap<ConnId, VecDeque<Bytes>>,
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
            paused: BTreeMap::new(),
            stalled: BTreeMap::new(),
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
        if let Some(waiting) = self.paused.get_mut(&conn) {
            waiting.extend_from_slice(bytes);
            return;
        }
        self.node.handle(self.now, Input::ClientData(conn, bytes));
        self.drain();
    }

    /// The client stops reading its socket.
    fn stall(&mut self, conn: ConnId) {
        self.stalled.insert(conn, VecDeque::new());
    }

    /// The stalled client reads at least `n` bytes (whole transmits) and stays stalled.
    fn read(&mut self, conn: ConnId, n: usize) {
        let mut got = 0;
        while got < n {
            let Some(data) = self.stalled.get_mut(&conn).and_then(|q| q.pop_front()) else {
                break;
            };
            got += data.len();
            self.deliver(conn, &data);
            self.node
                .handle(self.now, Input::ClientFlushed(conn, data.len()));
            self.drain();
        }
    }

    /// Bytes handed to a stalled client and not yet read.
    fn unread(&self, conn: ConnId) -> usize {
        self.stalled
            .get(&conn)
            .map_or(0, |q| q.iter().map(Bytes::len).sum())
    }

    fn deliver(&mut self, conn: ConnId, data: &[u8]) {
        let c = self.clients.get_mut(&conn).unwrap();
        c.feed(data);
        while let Some(ev) = c.poll().unwrap() {
            if let SessionEvent::Packet(p) = ev {
                self.inbox.entry(conn).or_default().push(p);
            }
        }
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
                    if let Some(q) = self.stalled.get_mut(&conn) {
                        q.push_back(data);
                        continue;
                    }
                    self.deliver(conn, &data);
                    self.node
                        .handle(self.now, Input::ClientFlushed(conn, data.len()));
                }
                Output::PauseReading(conn) => {
                    assert!(
                        self.paused.insert(conn, Vec::new()).is_none(),
                        "paused twice"
                    );
                }
                Output::ResumeReading(conn) => {
                    let waiting = self.paused.remove(&conn).expect("resumed unpaused");
                    if !waiting.is_empty() {
                        self.node
                            .handle(self.now, Input::ClientData(conn, &waiting));
                    }
                }
                Output::Close(conn) => {
                    assert!(self.closed.insert(conn), "closed twice");
                    // A closed socket takes whatever was handed before its close.
                    if let Some(q) = self.stalled.remove(&conn) {
                        for data in q {
                            self.deliver(conn, &data);
                        }
                    }
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
fn a_hung_member_takes_no_more_than_its_window_while_another_has_room() {
    let mut h = Harness::new();
    let hung = h.connect("svc");
    let good = h.connect("svc");
    let c = h.connect("");
    for id in 0..200 {
        request(&mut h, c, id, "svc", "x", 60_000);
        // The good member answers at once; the hung one never does.
        for p in h.take(good) {
            if let NodePacket::Request { id, .. } = p {
                let reply = ClientPacket::Reply {
                    id,
                    outcome: Ok(Bytes::from_static(b"a")),
                };
                h.send(good, reply);
            }
        }
    }
    // The hung member filled its window (8) and got nothing past it.
    assert_eq!(h.take(hung).len(), 8);
}

#[test]
fn local_members_share_requests_by_how_fast_they_answer() {
    // Two members of one node: one answers after 1 ms, the other after 50 ms. Requests
    // come one every 2 ms, so both always have room; the share follows what each can
    // take (uniform before: 50 / 50).
    let mut h = Harness::new();
    let fast = h.connect("svc");
    let slow = h.connect("svc");
    let c = h.connect("");
    let mut due: Vec<(Duration, ConnId, u64)> = Vec::new();
    let (mut to_fast, mut to_slow) = (0u32, 0u32);
    let mut now = Duration::ZERO;
    for id in 0..2000u64 {
        request(&mut h, c, id, "svc", "x", 60_000);
        for (m, delay) in [(fast, 1), (slow, 50)] {
            for p in h.take(m) {
                if let NodePacket::Request { id, .. } = p {
                    *(if m == fast {
                        &mut to_fast
                    } else {
                        &mut to_slow
                    }) += 1;
                    due.push((now + Duration::from_millis(delay), m, id));
                }
            }
        }
        h.advance(Duration::from_millis(2));
        now += Duration::from_millis(2);
        let (ready, later): (Vec<_>, Vec<_>) = due.into_iter().partition(|d| d.0 <= now);
        due = later;
        for (_, m, id) in ready {
            let reply = ClientPacket::Reply {
                id,
                outcome: Ok(Bytes::from_static(b"a")),
            };
            h.send(m, reply);
        }
        h.take(c);
    }
    // Reply times measured as 2 ms and 50 ms: weights 50 and 2 per free slot.
    let slow_share = f64::from(to_slow) / f64::from(to_fast + to_slow);
    assert!(
        (0.01..0.15).contains(&slow_share),
        "the slow member took {to_slow}, the fast one {to_fast}"
    );
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
fn a_message_over_the_backlog_cap_cuts_the_consumer_at_once_with_a_reason() {
    let cfg = Config {
        client_backlog_high: 5_000,
        max_client_backlog: 10_000,
        ..Config::default()
    };
    let mut h = Harness::with(cfg, [1; 32]);
    let slow = h.connect("svc");
    let sender = h.connect("");
    h.stall(slow);
    h.send(
        sender,
        ClientPacket::Broadcast {
            cluster: "svc".into(),
            message: Bytes::from(vec![0u8; 20_000]),
        },
    );
    assert!(h.closed.contains(&slow));
    assert!(!h.closed.contains(&sender));
    // The reason goes ahead of the message it could not take.
    assert_eq!(
        h.take(slow),
        vec![NodePacket::Close {
            reason: "slow consumer: more than 10000 bytes unread".into()
        }]
    );
    let s = h.node.stats();
    assert_eq!((s.slow_consumers, s.cut_backlog_cap), (1, 1));
    assert_eq!(h.node.memory_used(), 0, "everything it held is released");
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
    // The member may still answer for the drain's time; it does not.
    let drain = Config::default().shutdown_drain;
    h.advance(drain - Duration::from_millis(1));
    assert!(h.take(c).is_empty() && h.take(m).is_empty() && h.closed.is_empty());
    h.advance(Duration::from_millis(1));
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

/// A restart does not fail the work in progress: the member answers what it holds during
/// the drain, its client gets the reply, and only then is everyone closed; a node with
/// nothing in progress closes at once.
#[test]
fn shutdown_waits_for_the_requests_in_progress() {
    let mut h = Harness::new();
    let m = h.connect("svc");
    let c = h.connect("");
    request(&mut h, c, 5, "svc", "x", 60_000);
    let [NodePacket::Request { id, .. }] = h.take(m)[..] else {
        panic!("the member got no request");
    };
    h.node.handle(h.now, Input::Shutdown("restart"));
    h.drain();
    assert!(h.closed.is_empty(), "closed before the drain");
    h.advance(Duration::from_millis(200));
    h.send(
        m,
        ClientPacket::Reply {
            id,
            outcome: Ok(bytes("done")),
        },
    );
    assert_eq!(
        h.take(c),
        vec![
            NodePacket::Reply {
                id: 5,
                outcome: ReplyOutcome::Success(bytes("done"))
            },
            NodePacket::Close {
                reason: "restart".into()
            }
        ]
    );
    assert!(h.closed.contains(&m) && h.closed.contains(&c));
    assert_eq!(h.events.last(), Some(&Event::Stopped));
    assert_eq!(h.node.poll_timeout(), None);

    let mut h = Harness::new();
    let c = h.connect("");
    h.node.handle(h.now, Input::Shutdown("restart"));
    h.drain();
    assert!(h.closed.contains(&c), "nothing in progress: closed at once");
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
    // Members get what their windows leave room for first, so only the share past that is
    // drawn: two seeds may by chance give the same counts, not every one of six.
    assert!((4..10).any(|s| run([s; 32]) != run([3; 32])));
}

/// Cluster "svc" with one member that does not read, a producer, and a bystander pair
/// (a member of "calm" and a plain client), under a congestion mark of 10 KB.
struct Congested {
    h: Harness,
    consumer: ConnId,
    producer: ConnId,
    calm: ConnId,
    asker: ConnId,
}

fn congested() -> Congested {
    // These cases are about throttling and the deadline: no grace (a consumer past it
    // holds back only a group with no other consumer; see `tether_tests.rs`).
    let cfg = Config {
        client_backlog_high: 10_000,
        slow_consumer_timeout: Duration::from_secs(10),
        slow_consumer_grace: Duration::from_secs(10),
        ..Config::default()
    };
    let mut h = Harness::with(cfg, [1; 32]);
    let consumer = h.connect("svc");
    let producer = h.connect("");
    let calm = h.connect("calm");
    let asker = h.connect("");
    h.stall(consumer);
    Congested {
        h,
        consumer,
        producer,
        calm,
        asker,
    }
}

/// Sends `n` broadcasts of 1000 bytes from `from` to cluster "svc", each starting with its
/// number.
fn flood(h: &mut Harness, from: ConnId, first: u32, n: u32) {
    for i in first..first + n {
        let mut msg = vec![0u8; 1000];
        msg[..4].copy_from_slice(&i.to_be_bytes());
        h.send(
            from,
            ClientPacket::Broadcast {
                cluster: "svc".into(),
                message: msg.into(),
            },
        );
    }
}

/// The numbers of the broadcasts a client received, in order.
fn numbers(h: &mut Harness, conn: ConnId) -> Vec<u32> {
    h.take(conn)
        .into_iter()
        .map(|p| match p {
            NodePacket::Broadcast { message } => {
                u32::from_be_bytes(message[..4].try_into().unwrap())
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[test]
fn a_congested_consumer_pauses_only_its_producers_and_loses_nothing() {
    let Congested {
        mut h,
        consumer,
        producer,
        calm,
        asker,
    } = congested();
    flood(&mut h, producer, 0, 10);
    assert!(h.paused.is_empty(), "10 KB is not over the mark");
    flood(&mut h, producer, 10, 20);
    assert_eq!(
        h.paused.keys().copied().collect::<Vec<_>>(),
        vec![producer],
        "only the producer waits"
    );
    assert_eq!(h.node.stats().producers_held, 1);
    // Everyone else is served meanwhile: a request and its reply between two others.
    request(&mut h, asker, 1, "calm", "q", 1000);
    let NodePacket::Request { id, .. } = h.take(calm)[0].clone() else {
        panic!("the member got no request");
    };
    h.send(
        calm,
        ClientPacket::Reply {
            id,
            outcome: Ok(bytes("a")),
        },
    );
    assert_eq!(
        h.take(asker),
        vec![NodePacket::Reply {
            id: 1,
            outcome: ReplyOutcome::Success(bytes("a"))
        }]
    );
    // The consumer reads a little: not yet down to half the mark, the producer still waits.
    h.read(consumer, 1);
    assert!(h.paused.contains_key(&producer));
    // It reads on: at half the mark the producer's held message and the rest flow.
    while h.paused.contains_key(&producer) || h.unread(consumer) > 0 {
        h.read(consumer, 1000);
    }
    assert_eq!(numbers(&mut h, consumer), (0..30).collect::<Vec<_>>());
    // Nothing was cut, and the deadline no longer applies.
    h.advance(Duration::from_secs(60));
    assert!(h.closed.is_empty());
    assert_eq!(h.node.stats().slow_consumers, 0);
    assert_eq!(h.node.memory_used(), 0);
}

#[test]
fn a_stuck_consumer_is_cut_at_its_deadline_with_a_reason_and_its_producer_goes_on() {
    let Congested {
        mut h,
        consumer,
        producer,
        ..
    } = congested();
    let other = h.connect("svc");
    flood(&mut h, producer, 0, 30);
    assert!(h.paused.contains_key(&producer));
    h.advance(Duration::from_millis(9_999));
    assert!(!h.closed.contains(&consumer));
    h.advance(Duration::from_millis(1));
    assert!(h.closed.contains(&consumer));
    assert!(!h.closed.contains(&producer));
    assert!(h.paused.is_empty(), "the producer is read again");
    let got = h.take(consumer);
    assert_eq!(
        got.last(),
        Some(&NodePacket::Close {
            reason: "slow consumer: more than 10000 bytes unread for 10000 ms".into()
        })
    );
    // Its CLOSE came ahead of what was still queued: it got less than the others did.
    assert!(got.len() - 1 < 30);
    assert_eq!(numbers(&mut h, other), (0..30).collect::<Vec<_>>());
    let s = h.node.stats();
    assert_eq!((s.slow_consumers, s.cut_lagging), (1, 1));
}

#[test]
fn a_producer_to_another_topic_is_not_held_by_a_congested_subscriber() {
    let mut h = Harness::with(
        Config {
            client_backlog_high: 10_000,
            ..Config::default()
        },
        [2; 32],
    );
    let slow = h.connect("");
    let fast = h.connect("");
    let (p1, p2) = (h.connect(""), h.connect(""));
    for (c, t) in [(slow, "a"), (slow, "b"), (fast, "b")] {
        h.send(c, ClientPacket::Subscribe { topic: t.into() });
    }
    h.stall(slow);
    let publish = |h: &mut Harness, from, topic: &str| {
        h.send(
            from,
            ClientPacket::Publish {
                topic: topic.into(),
                event: Bytes::from(vec![1u8; 1000]),
            },
        )
    };
    for _ in 0..20 {
        publish(&mut h, p1, "a");
    }
    assert!(h.paused.contains_key(&p1));
    // "b" also reaches the slow subscriber: its publisher waits too, once it publishes.
    publish(&mut h, p2, "b");
    assert!(h.paused.contains_key(&p2));
    // A request from p2's neighbour to nobody is unaffected, and fast got nothing extra.
    assert!(h.take(fast).is_empty());
    let solo = h.connect("");
    h.send(solo, ClientPacket::Subscribe { topic: "c".into() });
    publish(&mut h, solo, "c");
    assert_eq!(h.take(solo).len(), 1);
    assert!(!h.paused.contains_key(&solo));
}

#[test]
fn requests_avoid_congested_members_while_another_is_free() {
    let mut h = Harness::with(
        Config {
            client_backlog_high: 10_000,
            ..Config::default()
        },
        [5; 32],
    );
    let busy = h.connect("svc");
    let free = h.connect("svc");
    let c = h.connect("");
    h.stall(busy);
    // Congest `busy` with a broadcast both members get (`free` reads it at once).
    h.send(
        c,
        ClientPacket::Broadcast {
            cluster: "svc".into(),
            message: Bytes::from(vec![0u8; 12_000]),
        },
    );
    h.take(free);
    for id in 0..40 {
        request(&mut h, c, id, "svc", "x", 1000);
    }
    assert_eq!(
        h.take(free).len(),
        40,
        "every request went to the free member"
    );
    assert!(h.paused.is_empty());
}

#[test]
fn a_broadcast_to_thirty_stalled_members_is_held_once() {
    let mut h = Harness::new();
    let members: Vec<ConnId> = (0..30).map(|_| h.connect("svc")).collect();
    for &m in &members {
        h.stall(m);
    }
    let sender = h.connect("");
    let message = Bytes::from(vec![9u8; 4 << 20]);
    h.send(
        sender,
        ClientPacket::Broadcast {
            cluster: "svc".into(),
            message: message.clone(),
        },
    );
    // 30 recipients, one copy charged (plus a few bytes of headers each).
    let used = h.node.memory_used();
    assert!(
        (4 << 20..(4 << 20) + 30 * 16).contains(&used),
        "charged {used} bytes"
    );
    assert_eq!(h.node.stats().memory_peak as usize, used.max(4 << 20));
    for &m in &members {
        h.read(m, usize::MAX);
        assert_eq!(
            h.take(m),
            vec![NodePacket::Broadcast {
                message: message.clone()
            }]
        );
    }
    assert_eq!(h.node.memory_used(), 0);
}

#[test]
fn silent_connections_cannot_keep_a_client_out_and_the_client_past_the_cap_is_told_why() {
    let mut h = Harness::with(
        Config {
            max_clients: 2,
            max_handshakes: 100,
            ..Config::default()
        },
        [3; 32],
    );
    // 120 connections that never send INIT: the pool keeps the newest 100.
    let silent: Vec<ConnId> = (0..120).map(|_| h.connect_raw()).collect();
    assert_eq!(h.node.stats().handshakes_evicted, 20);
    assert!(silent[..20].iter().all(|c| h.closed.contains(c)));
    assert!(!h.closed.contains(&silent[20]));
    // Real clients still get in.
    let a = h.connect("");
    let _b = h.connect("svc");
    // The third is past max_clients (2): denied with the reason, then closed.
    let c = h.connect_raw();
    let mut init = BytesMut::new();
    ClientSession::encode_init("", &mut init);
    h.node.handle(h.now, Input::ClientData(c, &init));
    let mut got = Vec::new();
    while let Some(o) = h.node.poll_output() {
        got.push(o);
    }
    let mut deny = BytesMut::new();
    NodePacket::Deny {
        magic: bytes(RELAY_MAGIC),
        reason: "Too many clients: this node serves at most 2.".into(),
    }
    .encode(&mut deny);
    assert_eq!(got[0], Output::Transmit(c, deny.freeze()));
    assert_eq!(got[1], Output::Close(c));
    assert!(matches!(
        &got[2],
        Output::Event(Event::ClientClosed { reason: CloseReason::Refused(why), .. }) if why.contains("Too many")
    ));
    assert_eq!(h.node.stats().clients_denied, 1);
    // Once a client leaves, the next one gets in.
    h.send(a, ClientPacket::Close);
    h.connect("");
}

#[test]
fn a_large_message_reserves_its_memory_and_waits_for_room() {
    // The consumer may hold both messages (12 MiB) unread: it is not what is tested here.
    let mut h = Harness::with(
        Config {
            max_memory: 16 << 20,
            max_client_backlog: 16 << 20,
            limits: Limits {
                max_message_size: 8 << 20,
                ..Limits::default()
            },
            ..Config::default()
        },
        [4; 32],
    );
    let m = h.connect("svc");
    let (a, b) = (h.connect(""), h.connect(""));
    // Two 6 MiB broadcasts start to arrive: the first reserves 6 MiB of the 8 MiB that
    // large messages may take, the second must wait (its client is not read meanwhile).
    let wire = |len: usize| {
        let mut w = BytesMut::new();
        ClientPacket::Broadcast {
            cluster: "svc".into(),
            message: Bytes::from(vec![7u8; len]),
        }
        .encode(&mut w);
        w
    };
    let (wa, wb) = (wire(6 << 20), wire(6 << 20));
    h.raw(a, &wa[..1000]);
    assert!(h.node.memory_used() >= 6 << 20, "reserved in full");
    h.raw(b, &wb[..1000]);
    assert!(h.paused.contains_key(&b) && !h.paused.contains_key(&a));
    assert_eq!(h.node.stats().memory_waits, 1);
    h.raw(b, &wb[1000..]); // waits in its socket
    h.raw(a, &wa[1000..]);
    // a's message went out; its reservation freed room for b, which finished too.
    let got = h.take(m);
    assert_eq!(got.len(), 2);
    assert!(h.closed.is_empty(), "nobody was cut: {:?}", h.events);
    // Memory went tight meanwhile (12 MiB of 16), which paused every reader; with all
    // written, all read again.
    assert_eq!(h.node.stats().memory_tight, 1);
    assert!(h.paused.is_empty());
    assert_eq!(h.node.memory_used(), 0);
}

#[test]
fn memory_pressure_pauses_input_and_exhaustion_cuts_the_largest_consumer() {
    let mut h = Harness::with(
        Config {
            max_memory: 4 << 20,
            max_client_backlog: 4 << 20,
            client_backlog_high: 4 << 20,
            limits: Limits {
                max_message_size: 1 << 20,
                ..Limits::default()
            },
            ..Config::default()
        },
        [6; 32],
    );
    let stuck: Vec<ConnId> = (0..4).map(|_| h.connect("")).collect();
    for (i, &c) in stuck.iter().enumerate() {
        h.send(
            c,
            ClientPacket::Subscribe {
                topic: format!("t{i}").as_str().into(),
            },
        );
        h.stall(c);
    }
    let p = h.connect("");
    let bystander = h.connect("");
    // 900 KB to each of the four: 3.6 MB held, over three quarters of 4 MiB.
    for i in 0..4 {
        h.send(
            p,
            ClientPacket::Publish {
                topic: format!("t{i}").as_str().into(),
                event: Bytes::from(vec![0u8; 900_000]),
            },
        );
    }
    assert_eq!(h.node.stats().memory_tight, 1);
    assert!(
        h.paused.contains_key(&bystander),
        "under pressure nobody new is read"
    );
    // What the bystander sends waits; as consumers read, memory frees and it flows.
    h.send(bystander, ClientPacket::Subscribe { topic: "t0".into() });
    for &c in &stuck[..2] {
        h.read(c, usize::MAX);
    }
    assert!(h.paused.is_empty(), "under half again");
    // Now three large events come in one read (pressure can only stop the next read):
    // more than the budget holds, so the consumer holding the most is cut.
    let mut wire = BytesMut::new();
    for topic in ["t3", "t2", "t3"] {
        ClientPacket::Publish {
            topic: topic.into(),
            event: Bytes::from(vec![0u8; 1 << 20]),
        }
        .encode(&mut wire);
    }
    h.raw(p, &wire);
    assert!(
        h.closed.contains(&stuck[3]),
        "t3's subscriber held the most"
    );
    assert_eq!(h.node.stats().cut_memory, 1);
    assert!(h.node.memory_used() <= 4 << 20);
}

/// Names kept for a connection's life (its cluster, its topics) do not share the read
/// buffer they arrived in: each would keep all of it alive (up to a read's worth per
/// subscription).
#[test]
fn kept_names_do_not_pin_the_read_buffer_they_came_in() {
    let mut h = Harness::new();
    let conn = h.connect_raw();
    let mut b = BytesMut::new();
    ClientSession::encode_init("svc", &mut b);
    ClientPacket::Subscribe {
        topic: "news".into(),
    }
    .encode(&mut b);
    // One read: the buffer is not reallocated, so where it started is known.
    h.raw(conn, &b);
    assert!(h.clients[&conn].is_accepted());
    let end = h.node.sessions.read_buf(conn).as_ptr() as usize;
    let read = end - b.len()..end;
    let at = |name: &crate::relay::Name| name.as_bytes().as_ptr() as usize;
    let (clusters, topics) = h.node.groups.names();
    let cluster = clusters.first().expect("registered");
    let topic = topics.first().expect("subscribed");
    assert_eq!((cluster.as_str(), topic.as_str()), ("svc", "news"));
    assert!(
        !read.contains(&at(cluster)),
        "the cluster name pins the read"
    );
    assert!(!read.contains(&at(topic)), "the topic name pins the read");
}

/// A client read through its lent input buffer (`Node::lend_input`, `Input::ClientRead`)
/// in pieces of any size: the same packets as through `Input::ClientData`, its bytes
/// counted, its memory charged as it was while the buffer is out, and a large message
/// read into the one allocation reserved for it, without moving.
#[test]
fn a_clients_input_read_into_its_lent_buffer_is_decoded_in_place() {
    let mut h = Harness::new();
    let member = h.connect("svc");
    let c = h.connect("");
    let messages: Vec<Bytes> = [100usize, 70_000, 3, 2 << 20]
        .iter()
        .enumerate()
        .map(|(i, &n)| Bytes::from(vec![i as u8 + 1; n]))
        .collect();
    let mut wire = BytesMut::new();
    for m in &messages {
        ClientPacket::Broadcast {
            cluster: "svc".into(),
            message: m.clone(),
        }
        .encode(&mut wire);
    }
    let bytes_in = h.node.stats().bytes_in;
    let large_at = wire.len() - (2 << 20);
    let mut fed = 0;
    let mut large_buffer: Option<*const u8> = None;
    while fed < wire.len() {
        let piece = 40_000.min(wire.len() - fed);
        let charged = h.node.memory_used();
        let mut input = h.node.lend_input(c, 1 << 16);
        // Lent: charged as before, and nothing decoded from an empty stand-in.
        assert_eq!(h.node.memory_used(), charged);
        let waiting = input.len();
        assert!(
            input.capacity() - waiting >= piece.min(1 << 16),
            "room to read into"
        );
        if fed > large_at + piece {
            // Well into the large message: its whole size is allocated, and it stays put.
            let at = input.as_ptr();
            assert_eq!(
                *large_buffer.get_or_insert(at),
                at,
                "the large message moved"
            );
            assert!(input.capacity() >= (2 << 20));
        }
        input.extend_from_slice(&wire[fed..fed + piece]);
        fed += piece;
        h.node.handle(h.now, Input::ClientRead(c, input));
        h.drain();
    }
    assert!(large_buffer.is_some());
    assert_eq!(h.node.stats().bytes_in - bytes_in, wire.len() as u64);
    let got: Vec<Bytes> = h
        .take(member)
        .into_iter()
        .filter_map(|p| match p {
            NodePacket::Broadcast { message } => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(got, messages);
    // A buffer given back that was never lent is taken as plain data.
    let mut stray = BytesMut::new();
    ClientPacket::Broadcast {
        cluster: "svc".into(),
        message: Bytes::from_static(b"x"),
    }
    .encode(&mut stray);
    h.node.handle(h.now, Input::ClientRead(c, stray));
    h.drain();
    assert_eq!(h.take(member).len(), 1);
}
