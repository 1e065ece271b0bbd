//! Hand-made seeds. For `node_peers`: scripts of the operations that take a fuzzer long to
//! stumble on together (a peer that joins, then anycasts a request to a cluster whose
//! member answers; a tunnel built from a peer and used both ways; multicasts to a member
//! and a subscriber; a tree the peer subscribes to, through which the node's client reaches
//! the peer's members), each plain and sealed, committed as
//! `fuzz/corpus/node_peers/seed-<name>`. For `node_wire`: one valid message of every kind.
//!
//! The tests check that every script still reaches what it was written for (the encoding
//! of the operations follows the harness: a change there shows here), and that the
//! committed files are the seeds' current bytes (`IRIS_WRITE_SEEDS=1` rewrites them).

use super::node_peers::{Reached, run};
use std::path::PathBuf;

/// The bytes of a `node_peers` input, built operation by operation.
struct Script(Vec<u8>);

// Identities of the peers (`node_peers::identities`).
const P0: u8 = 0;
// Groups in the harness's pool: cluster and topic of "", "a", "b", "c", in that order.
const CLUSTER_A: u8 = 2;
const TOPIC_B: u8 = 5;
const CLUSTER_C: u8 = 6;
// Names clients use: "", "a", "b", "c".
const A: u8 = 1;
const B: u8 = 2;
const C: u8 = 3;

impl Script {
    fn new(sealed: bool, seeded: bool) -> Script {
        Script(vec![
            if sealed { 7 } else { 0 } + if seeded { 8 } else { 0 },
        ])
    }

    fn ops(mut self, b: &[u8]) -> Script {
        self.0.extend_from_slice(b);
        self
    }

    /// A varint field's value (`Reader::wide`).
    fn wide(v: u64) -> Vec<u8> {
        match u8::try_from(v) {
            Ok(b) => vec![9, b],
            Err(_) => [&[10][..], &v.to_le_bytes()].concat(),
        }
    }

    /// Peer `who` connects to the node, a well-behaved node.
    fn connect(self, who: u8) -> Script {
        self.ops(&[10, who, 2])
    }

    /// The node's first dial in flight connects to the node it dialed.
    fn answer_dial(self) -> Script {
        self.ops(&[11, 0, 2, 2])
    }

    /// The peer of link `l` sends JOIN as identity `who` (the node learns it).
    fn join(self, l: u8, who: u8) -> Script {
        self.ops(&[14, l, 0, 0, who, 0])
    }

    /// A client connects and says INIT as a member of `name` (or as no member).
    fn client(self, name: u8) -> Script {
        self.ops(&[1, name])
    }

    /// Client `conn` (among the open ones) subscribes to topic `name`.
    fn subscribe(self, conn: u8, name: u8) -> Script {
        self.ops(&[2, conn, 4, name, 0])
    }

    /// Client `conn` requests of cluster `name` (id 7, a long timeout).
    fn request(self, conn: u8, name: u8) -> Script {
        self.ops(&[2, conn, 1, 7, name, 5, 3, 0])
    }

    /// Client `conn` replies to the request it was delivered first (member id 0).
    fn reply(self, conn: u8) -> Script {
        self.ops(&[2, conn, 3, 0, 0, 5, 0])
    }

    /// Client `conn` confirms the tunnel offered first (build id 0), as its tunnel 5.
    fn tun_confirm(self, conn: u8) -> Script {
        self.ops(&[2, conn, 8, 0, 5, 0])
    }

    /// Client `conn` sends a chunk on its tunnel 5.
    fn tun_transfer(self, conn: u8) -> Script {
        self.ops(&[2, conn, 10, 5, 5, 1, 0])
    }

    /// Time passes: `b` × 37 ms.
    fn time(self, b: u8) -> Script {
        self.ops(&[8, b])
    }

    /// The peer of link `l` anycasts to tree 0 of `group`, from identity `origin`: a
    /// request (id 7) or a tunnel build (its tunnel 3).
    fn anycast(self, l: u8, group: u8, origin: u8, tunnel: bool) -> Script {
        let mut b = vec![12, l, 6, group, 0, 1, if tunnel { 0 } else { 1 }, origin, 0];
        b.extend(Script::wide(if tunnel { 3 } else { 7 }));
        b.extend(Script::wide(5000));
        b.extend([1, 50, 0, 1, 0]);
        if !tunnel {
            b.extend([0x41, 5]);
        }
        b.extend([1, 0]);
        self.ops(&b)
    }

    /// The peer of link `l` multicasts on tree 0 of `group`, as its own (sequence `seq`).
    fn cast(self, l: u8, group: u8, seq: u8) -> Script {
        let mut b = vec![12, l, 4, group, 0, 1, P0];
        b.extend(Script::wide(1));
        b.extend(Script::wide(u64::from(seq)));
        // Via, hops, flags (neither tail nor resent), no previous message, the payload.
        b.extend([0, 1, 0, 1]);
        b.extend(Script::wide(0));
        b.extend([0x43, 5, 1, 0]);
        self.ops(&b)
    }

    /// The peer of link `l` subscribes to tree `index` of `group` (as the node's child).
    fn subscribe_tree(self, l: u8, group: u8, index: u8) -> Script {
        self.ops(&[12, l, 0, group, index, 1, 1, 0])
    }

    /// The peer of link `l` beats: capacity 10 for both trees of `group`.
    fn beat(self, l: u8, group: u8) -> Script {
        let mut b = vec![12, l, 3, 2];
        for index in 0..2 {
            b.extend([1, group, index, 1]);
            b.extend(Script::wide(10));
        }
        b.extend([0, 1, 0]);
        self.ops(&b)
    }

    /// The peer of link `l` answers the node's first noted request (or tunnel, for a tunnel
    /// message): REPLY; TUNNEL_DATA, TUNNEL_ALLOW, TUNNEL_CLOSE.
    fn reply_to_node(self, l: u8) -> Script {
        self.ops(&[12, l, 8, 0, 1, 0x44, 5, 1, 0])
    }

    fn tunnel_data(self, l: u8) -> Script {
        self.ops(&[12, l, 12, 0, 0x42, 5, 1, 1, 0])
    }

    fn tunnel_allow(self, l: u8) -> Script {
        let mut b = vec![12, l, 14, 0];
        b.extend(Script::wide(100));
        b.extend([1, 0]);
        self.ops(&b)
    }

    fn tunnel_close(self, l: u8) -> Script {
        self.ops(&[12, l, 15, 0, 0, 0, 1, 0])
    }

    /// The peer of link `l` leaves the overlay (overlay LEAVE).
    fn leave(self, l: u8) -> Script {
        self.ops(&[14, l, 0, 6, 0])
    }
}

/// A seed: its name, its script, and what it must reach.
struct Seed(String, Script, fn(&Reached) -> bool);

/// Every seed.
fn seeds() -> Vec<Seed> {
    // A peer that connected and joined.
    let joined = |sealed| Script::new(sealed, false).connect(P0).join(0, P0);
    let mut all = Vec::new();
    for sealed in [false, true] {
        let s = |name: &str| {
            if sealed {
                format!("sealed-{name}")
            } else {
                name.to_string()
            }
        };
        all.push(Seed(
            s("request-from-peer"),
            joined(sealed)
                .client(A)
                .anycast(0, CLUSTER_A, P0, false)
                .reply(0)
                .time(20),
            |r| r.stats.requests_served_for_peers == 1 && r.replies == 1,
        ));
        all.push(Seed(
            s("tunnel-from-peer"),
            joined(sealed)
                .client(A)
                .anycast(0, CLUSTER_A, P0, true)
                .tun_confirm(0)
                .tunnel_data(0)
                .tunnel_allow(0)
                .tun_transfer(0)
                .time(10)
                .tunnel_close(0),
            |r| r.stats.tunnels_served_for_peers == 1,
        ));
        all.push(Seed(
            s("casts-from-peer"),
            joined(sealed)
                .client(A)
                .client(0)
                .subscribe(1, B)
                .cast(0, CLUSTER_A, 1)
                .cast(0, TOPIC_B, 2)
                .cast(0, TOPIC_B, 2)
                .time(30),
            |r| r.stats.casts_delivered == 2 && r.stats.casts_duplicate >= 1,
        ));
        all.push(Seed(
            s("request-to-peer"),
            joined(sealed)
                .subscribe_tree(0, CLUSTER_C, 0)
                .subscribe_tree(0, CLUSTER_C, 1)
                .beat(0, CLUSTER_C)
                .client(0)
                .request(0, C)
                .reply_to_node(0)
                .reply_to_node(0)
                .leave(0)
                .time(40),
            |r| r.stats.requests == 1 && r.stats.requests_timed_out == 0,
        ));
    }
    all.push(Seed(
        "seeded-join".into(),
        Script::new(false, true).answer_dial().time(60).client(A),
        |r| r.mesh.links_up >= 1,
    ));
    all
}

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/node_peers")
}

#[test]
fn every_seed_reaches_what_it_was_written_for() {
    for Seed(name, script, reached) in seeds() {
        let r = run(&script.0);
        assert!(
            reached(&r),
            "seed {name} fell short: {:?}, {:?}, {} replies",
            r.stats,
            r.mesh,
            r.replies
        );
    }
}

#[test]
fn the_committed_seeds_are_the_scripts() {
    let write = std::env::var_os("IRIS_WRITE_SEEDS").is_some();
    for Seed(name, script, _) in seeds() {
        let path = corpus().join(format!("seed-{name}"));
        if write {
            std::fs::write(&path, &script.0).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(
            committed == script.0,
            "{} is not the script's bytes (IRIS_WRITE_SEEDS=1 rewrites it)",
            path.display()
        );
    }
}

/// Seeds of `node_wire`: one valid message of every kind (the decoder's whole format, for
/// the fuzzer to start from), committed as `fuzz/corpus/node_wire/seed-<kind>`.
fn wire_seeds() -> Vec<(&'static str, bytes::Bytes)> {
    use crate::node::wire::{Anycast, Cast, NodeMsg, Via, Wanted, encode};
    use crate::overlay::{Contact, NodeId};
    use crate::scribe::{Group, ScribeMsg};
    use bytes::Bytes;
    let g = Group::cluster("svc".into());
    let c = Contact::new(NodeId(5), "127.0.0.1:9".parse().unwrap(), 3);
    let anycast = |id, wanted| Anycast {
        key: g.tree_key(1),
        cluster: "svc".into(),
        index: 1,
        origin: c,
        id,
        timeout_ms: 5000,
        budget_ms: 4000,
        due_ms: 0,
        via: Via::Routed,
        hops: 2,
        wanted,
    };
    [
        (
            "subscribe",
            NodeMsg::Tree(ScribeMsg::Subscribe {
                key: g.tree_key(2),
                group: g.clone(),
                index: 2,
            }),
        ),
        (
            "unsubscribe",
            NodeMsg::Tree(ScribeMsg::Unsubscribe { key: NodeId(1) }),
        ),
        (
            "not-in-tree",
            NodeMsg::Tree(ScribeMsg::NotInTree { key: NodeId(1) }),
        ),
        (
            "beat",
            NodeMsg::Tree(ScribeMsg::Beat {
                caps: vec![(NodeId(1), 7), (g.tree_key(0), u32::MAX)],
                parents: Some(crate::scribe::Listed::all(vec![NodeId(3)])),
            }),
        ),
        (
            "cast",
            NodeMsg::Cast(Cast {
                key: Group::topic("news".into()).tree_key(4),
                group: Group::topic("news".into()),
                index: 4,
                origin: NodeId(5),
                epoch: 1,
                seq: 300,
                via: Via::Tree,
                hops: 3,
                tail: false,
                resent: false,
                prev_ms: 0,
                payload: Bytes::from_static(b"event"),
            }),
        ),
        (
            "anycast-request",
            NodeMsg::Anycast(anycast(77, Wanted::Request(Bytes::from_static(b"ask")))),
        ),
        (
            "anycast-tunnel",
            NodeMsg::Anycast(anycast(78, Wanted::Tunnel)),
        ),
        (
            "reply",
            NodeMsg::Reply {
                id: 1,
                outcome: Ok(Bytes::from_static(b"answer")),
            },
        ),
        (
            "reply-fault",
            NodeMsg::Reply {
                id: 2,
                outcome: Err("kaput".into()),
            },
        ),
        (
            "tunnel-confirm",
            NodeMsg::TunnelConfirm {
                tun: 1,
                peer: 2,
                window: 4 << 20,
            },
        ),
        ("tunnel-refused", NodeMsg::TunnelRefused { tun: 3 }),
        (
            "tunnel-data",
            NodeMsg::TunnelData {
                tun: 1,
                size_or_cont: 5,
                payload: Bytes::from_static(b"chunk"),
            },
        ),
        ("tunnel-allow", NodeMsg::TunnelAllow { tun: 1, space: 9 }),
        (
            "tunnel-close",
            NodeMsg::TunnelClose {
                tun: 1,
                reason: "done".into(),
            },
        ),
        (
            "cast-credit",
            NodeMsg::CastCredit {
                group: Group::topic("ring".into()),
                bytes: 1 << 22,
            },
        ),
        (
            "cast-untether",
            NodeMsg::CastUntether {
                group: Group::topic("ring".into()),
            },
        ),
        (
            "forward",
            NodeMsg::Forward {
                from: c,
                to: NodeId(5),
                hops: 1,
                inner: Bytes::from_static(b"\x1a\x00"),
            },
        ),
        (
            "cast-ask",
            NodeMsg::CastAsk {
                key: Group::topic("news".into()).tree_key(4),
                origin: NodeId(5),
                epoch: 1,
                asker: c,
                ranges: vec![(3, 9), (12, 12)],
                within_ms: 60_000,
                sent_ms: 1_000,
                hops: 0,
            },
        ),
        (
            "heads",
            NodeMsg::Tree(ScribeMsg::Heads {
                key: Group::topic("news".into()).tree_key(4),
                heads: vec![(NodeId(5), 1, 12, 250)],
            }),
        ),
        (
            "cast-gone",
            NodeMsg::CastGone {
                key: Group::topic("news".into()).tree_key(4),
                epoch: 1,
                gone: vec![(3, 9)],
                skipped: vec![(0, 2)],
            },
        ),
    ]
    .into_iter()
    .map(|(name, msg)| (name, encode(&msg)))
    .collect()
}

#[test]
fn the_committed_wire_seeds_are_every_kind() {
    let write = std::env::var_os("IRIS_WRITE_SEEDS").is_some();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/node_wire");
    for (name, bytes) in wire_seeds() {
        let path = dir.join(format!("seed-{name}"));
        if write {
            std::fs::write(&path, &bytes).unwrap();
        }
        assert!(
            std::fs::read(&path).unwrap_or_default() == bytes,
            "{} is not the message's bytes (IRIS_WRITE_SEEDS=1 rewrites it)",
            path.display()
        );
        assert!(crate::node::wire::decode(&bytes).is_ok());
    }
}
