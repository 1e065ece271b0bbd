//! Properties of the client machine over sequences the unit tests do not spell out: what
//! the node answers and when, how a tunnel's grants come, what garbage arrives.

use super::tests::{Harness, SECOND, reply};
use super::*;
use crate::relay::{ClientPacket, NodePacket, ReplyOutcome};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

/// What the application or the node does next, in the request proptest.
#[derive(Debug, Clone)]
enum Step {
    Request,
    /// The node answers the pending request at this index (mod their number), or an id
    /// nobody asked for.
    Answer(usize, u8),
    Stray(u64),
    Close,
    Eof,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Request),
        4 => (any::<usize>(), 0u8..3).prop_map(|(i, k)| Step::Answer(i, k)),
        1 => (1000u64..2000).prop_map(Step::Stray),
        1 => Just(Step::Close),
        1 => Just(Step::Eof),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the node answers and whenever the session ends, every request the machine
    /// started gets exactly one outcome, and the end is the last event.
    #[test]
    fn every_request_gets_exactly_one_outcome(steps in proptest::collection::vec(step(), 0..60)) {
        let mut h = Harness::accepted("");
        let mut started = Vec::new();
        for s in steps {
            match s {
                Step::Request => {
                    if let Ok(id) = h.m.request("svc", b"q", SECOND) {
                        started.push(id);
                    }
                }
                Step::Answer(i, kind) => {
                    if !started.is_empty() {
                        let id = started[i % started.len()];
                        let outcome = match kind {
                            0 => ReplyOutcome::TimedOut,
                            1 => ReplyOutcome::Success(Bytes::from_static(b"r")),
                            _ => ReplyOutcome::Fault("f".into()),
                        };
                        h.feed(&[reply(id, outcome)]);
                    }
                }
                Step::Stray(id) => h.feed(&[reply(RequestId(id), ReplyOutcome::TimedOut)]),
                Step::Close => h.feed(&[NodePacket::Close { reason: "".into() }]),
                Step::Eof => h.m.handle(h.now, Input::Eof),
            }
            h.drain();
        }
        h.m.handle(h.now, Input::Eof);
        h.drain();
        let events = h.take_events();
        let mut outcomes = std::collections::BTreeMap::new();
        for e in &events[..events.len() - 1] {
            match e {
                Event::Reply { request, .. } => *outcomes.entry(*request).or_insert(0) += 1,
                other => prop_assert!(false, "unexpected {other:?}"),
            }
        }
        prop_assert!(matches!(events.last(), Some(Event::Ended(_))));
        prop_assert_eq!(outcomes.len(), started.len());
        prop_assert!(outcomes.values().all(|&n| n == 1));
    }

    /// Messages sent under any chunk limit and any sequence of grants arrive whole and in
    /// order, and no byte is sent beyond what the node allowed.
    #[test]
    fn tunnel_sends_stay_within_the_allowance_and_reassemble(
        sizes in proptest::collection::vec(1usize..200, 1..12),
        chunk_limit in 1u64..64,
        grants in proptest::collection::vec(1u64..150, 1..40),
    ) {
        let mut h = Harness::accepted("");
        let t = h.open_tunnel(chunk_limit, 0);
        let messages: Vec<Bytes> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| Bytes::from(vec![i as u8; n]))
            .collect();
        let mut pending: std::collections::VecDeque<Outgoing> =
            messages.iter().map(|m| Outgoing::new(t, m.clone()).unwrap()).collect();
        let mut granted = 0u64;
        for g in grants.into_iter().chain(std::iter::repeat_n(1000, 20)) {
            h.feed(&[NodePacket::TunAllow { tun_id: t.get(), space: g }]);
            granted += g;
            while let Some(msg) = pending.front_mut() {
                match h.m.tunnel_send(msg) {
                    Ok(()) => {
                        pending.pop_front();
                    }
                    Err(CallError::NoAllowance) => break,
                    Err(e) => prop_assert!(false, "{e}"),
                }
            }
            h.drain();
        }
        prop_assert!(pending.is_empty());
        let mut reassembly = Reassembly::default();
        let mut sent = 0u64;
        let mut got = Vec::new();
        for p in h.sent() {
            let ClientPacket::TunTransfer { size_or_cont, payload, .. } = p else {
                prop_assert!(false, "{p:?}");
                unreachable!()
            };
            prop_assert!(payload.len() as u64 <= chunk_limit);
            sent += payload.len() as u64;
            prop_assert!(sent <= granted);
            let r = reassembly.push(size_or_cont, &payload, u64::MAX);
            prop_assert_eq!(r.discarded, 0);
            got.extend(r.message);
        }
        prop_assert_eq!(got, messages);
        prop_assert_eq!(h.m.allowance(t), Some(granted - sent));
    }
}

/// A node packet naming ids this end may know (0..3), or raw bytes.
fn node_bytes() -> impl Strategy<Value = Vec<u8>> {
    let id = 0u64..3;
    let payload = proptest::collection::vec(any::<u8>(), 0..8).prop_map(Bytes::from);
    let packet = prop_oneof![
        (id.clone(), 0u8..3, payload.clone()).prop_map(|(id, k, p)| NodePacket::Reply {
            id,
            outcome: match k {
                0 => ReplyOutcome::TimedOut,
                1 => ReplyOutcome::Success(p),
                _ => ReplyOutcome::Fault("f".into()),
            },
        }),
        payload
            .clone()
            .prop_map(|message| NodePacket::Broadcast { message }),
        (id.clone(), payload.clone()).prop_map(|(id, request)| NodePacket::Request {
            id,
            request,
            timeout_ms: 10,
        }),
        (id.clone(), 1u64..5).prop_map(|(build_id, chunk_limit)| NodePacket::TunInit {
            build_id,
            chunk_limit
        }),
        (id.clone(), proptest::option::of(1u64..5)).prop_map(|(tun_id, chunk_limit)| {
            NodePacket::TunConfirm {
                tun_id,
                chunk_limit,
            }
        }),
        (id.clone(), 0u64..10).prop_map(|(tun_id, space)| NodePacket::TunAllow { tun_id, space }),
        (id.clone(), 0u64..10, payload).prop_map(|(tun_id, size_or_cont, payload)| {
            NodePacket::TunTransfer {
                tun_id,
                size_or_cont,
                payload,
            }
        }),
        id.clone().prop_map(|tun_id| NodePacket::TunClose {
            tun_id,
            reason: "".into()
        }),
        Just(NodePacket::Close { reason: "".into() }),
    ]
    .prop_map(|p| {
        let mut b = BytesMut::new();
        p.encode(&mut b);
        b.to_vec()
    });
    prop_oneof![
        8 => packet,
        1 => proptest::collection::vec(any::<u8>(), 0..12),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the node sends (packets about known and unknown ids, garbage), cut
    /// anywhere, the machine neither panics nor ends twice, the end is its last event,
    /// and it then holds nothing pending.
    #[test]
    fn garbage_from_the_node_never_panics(
        packets in proptest::collection::vec(node_bytes(), 0..30),
        cut in 1usize..20,
        member in any::<bool>(),
    ) {
        let mut h = Harness::accepted(if member { "svc" } else { "" });
        for _ in 0..2 {
            let _ = h.m.request("svc", b"q", SECOND);
            let _ = h.m.tunnel("svc", SECOND);
        }
        let wire: Vec<u8> = packets.concat();
        for piece in wire.chunks(cut) {
            let mut buf = h.m.read_buffer();
            buf.extend_from_slice(piece);
            h.m.handle(h.now, Input::Received(buf));
            h.drain();
            // The application sends what it may, as it would.
            let _ = h.m.tunnel_send(&mut Outgoing::new(TunnelId(0), Bytes::from_static(b"xyz")).unwrap());
            h.m.tunnel_consumed(TunnelId(1), 1);
            h.drain();
        }
        let events = h.take_events();
        let ends = events.iter().filter(|e| matches!(e, Event::Ended(_))).count();
        prop_assert!(ends <= 1);
        if ends == 1 {
            prop_assert!(matches!(events.last(), Some(Event::Ended(_))));
            prop_assert_eq!(h.m.pending_requests(), 0);
            prop_assert_eq!(h.m.tunnels(), 0);
        }
    }
}
