//! Hand-made seeds: for `node_wire`, one valid message of every kind. The tests check that
//! the committed files are the seeds' current bytes (`IRIS_WRITE_SEEDS=1` rewrites them).

use std::path::PathBuf;

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
                parents: Some(vec![NodeId(3)]),
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
