//! The client machine driven with bytes as a node sends them, and read back as a node
//! reads what it transmits.

use super::*;
use crate::Instant;
use crate::relay::codec::{Limits, PROTOCOL_VERSION, RELAY_MAGIC, decode_client};
use crate::relay::{ClientPacket, DecodeError, NodePacket, ReplyOutcome};
use bytes::{Bytes, BytesMut};
use std::time::Duration;

pub(super) const SECOND: Duration = Duration::from_secs(1);

/// A machine and what it has done: the bytes it transmitted (each flushed at once) and its
/// events.
pub(super) struct Harness {
    pub(super) m: ClientMachine,
    pub(super) now: Instant,
    wire: BytesMut,
    events: Vec<Event>,
}

impl Harness {
    /// A machine whose handshake the node has accepted, with nothing left to read.
    pub(super) fn accepted(cluster: &str) -> Harness {
        Harness::with_config(cluster, ClientConfig::default())
    }

    fn with_config(cluster: &str, config: ClientConfig) -> Harness {
        let mut h = Harness::connecting(cluster, config);
        assert!(matches!(h.sent().as_slice(), [ClientPacket::Init { .. }]));
        h.feed(&[accept()]);
        assert_eq!(h.take_events(), vec![Event::Accepted]);
        h
    }

    fn connecting(cluster: &str, config: ClientConfig) -> Harness {
        let mut h = Harness {
            m: ClientMachine::new(cluster, config),
            now: Instant::from_nanos(1_000_000_000),
            wire: BytesMut::new(),
            events: Vec::new(),
        };
        h.drain();
        h
    }

    /// Feeds the node's packets in one read, then drains.
    pub(super) fn feed(&mut self, packets: &[NodePacket]) {
        let mut b = BytesMut::new();
        for p in packets {
            p.encode(&mut b);
        }
        self.m.handle(self.now, Input::Received(b));
        self.drain();
    }

    /// Writes everything the machine hands out (reporting each flush) and keeps its events.
    pub(super) fn drain(&mut self) {
        while let Some(out) = self.m.poll_output() {
            match out {
                Output::Transmit(bytes) => {
                    self.wire.extend_from_slice(&bytes);
                    self.m.handle(self.now, Input::Flushed(bytes.len()));
                }
                Output::Event(e) => self.events.push(e),
            }
        }
    }

    /// The packets transmitted since the last call, as the node decodes them.
    pub(super) fn sent(&mut self) -> Vec<ClientPacket> {
        let mut out = Vec::new();
        while let Some(p) = decode_client(&mut self.wire, &Limits::default()).unwrap() {
            out.push(p);
        }
        assert!(self.wire.is_empty(), "a partial packet on the wire");
        out
    }

    pub(super) fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Starts a tunnel and lets the node confirm it with `chunk_limit`, granting
    /// `allowance`.
    pub(super) fn open_tunnel(&mut self, chunk_limit: u64, allowance: u64) -> TunnelId {
        let t = self.m.tunnel("svc", SECOND).unwrap();
        self.drain();
        self.feed(&[
            NodePacket::TunConfirm {
                tun_id: t.get(),
                chunk_limit: Some(chunk_limit),
            },
            NodePacket::TunAllow {
                tun_id: t.get(),
                space: allowance,
            },
        ]);
        self.sent();
        self.take_events();
        t
    }
}

fn accept() -> NodePacket {
    NodePacket::Init {
        magic: Bytes::from_static(RELAY_MAGIC.as_bytes()),
        version: Bytes::from_static(PROTOCOL_VERSION.as_bytes()),
    }
}

pub(super) fn reply(id: RequestId, outcome: ReplyOutcome) -> NodePacket {
    NodePacket::Reply {
        id: id.get(),
        outcome,
    }
}

fn transfer(t: TunnelId, size_or_cont: u64, payload: &'static [u8]) -> NodePacket {
    NodePacket::TunTransfer {
        tun_id: t.get(),
        size_or_cont,
        payload: Bytes::from_static(payload),
    }
}

#[test]
fn handshake_sends_init_and_reports_acceptance() {
    let mut h = Harness::connecting("svc", ClientConfig::default());
    match h.sent().as_slice() {
        [ClientPacket::Init { cluster, .. }] => assert_eq!(cluster.as_str(), "svc"),
        other => panic!("{other:?}"),
    }
    assert!(!h.m.is_accepted());
    h.feed(&[accept()]);
    assert!(h.m.is_accepted());
    assert_eq!(h.take_events(), vec![Event::Accepted]);
}

#[test]
fn deny_and_eof_during_the_handshake_end_the_session() {
    let mut h = Harness::connecting("", ClientConfig::default());
    h.feed(&[NodePacket::Deny {
        magic: Bytes::from_static(RELAY_MAGIC.as_bytes()),
        reason: "Too many clients".into(),
    }]);
    assert_eq!(
        h.take_events(),
        vec![Event::Ended(End::Session(SessionError::Denied(
            "Too many clients".into()
        )))]
    );
    assert_eq!(h.m.broadcast("c", b"x"), Err(CallError::Ended));

    let mut h = Harness::connecting("", ClientConfig::default());
    h.m.handle(h.now, Input::Eof);
    h.drain();
    assert_eq!(
        h.take_events(),
        vec![Event::Ended(End::Dropped(
            "node closed the connection during the handshake".into()
        ))]
    );
}

#[test]
fn a_request_is_answered_once_by_reply_fault_or_timeout() {
    let mut h = Harness::accepted("");
    let a =
        h.m.request("svc", b"a", Duration::from_millis(1500))
            .unwrap();
    let b = h.m.request("svc", b"b", SECOND).unwrap();
    let c = h.m.request("svc", b"c", SECOND).unwrap();
    h.drain();
    assert_eq!(
        h.sent(),
        vec![
            ClientPacket::Request {
                id: a.get(),
                cluster: "svc".into(),
                request: Bytes::from_static(b"a"),
                timeout_ms: 1500,
            },
            ClientPacket::Request {
                id: b.get(),
                cluster: "svc".into(),
                request: Bytes::from_static(b"b"),
                timeout_ms: 1000,
            },
            ClientPacket::Request {
                id: c.get(),
                cluster: "svc".into(),
                request: Bytes::from_static(b"c"),
                timeout_ms: 1000,
            },
        ]
    );
    assert_eq!(h.m.pending_requests(), 3);
    h.feed(&[
        reply(b, ReplyOutcome::Fault("it failed".into())),
        reply(a, ReplyOutcome::Success(Bytes::from_static(b"A"))),
        reply(c, ReplyOutcome::TimedOut),
    ]);
    assert_eq!(
        h.take_events(),
        vec![
            Event::Reply {
                request: b,
                outcome: Err(RequestError::Remote("it failed".into())),
            },
            Event::Reply {
                request: a,
                outcome: Ok(Bytes::from_static(b"A")),
            },
            Event::Reply {
                request: c,
                outcome: Err(RequestError::TimedOut),
            },
        ]
    );
    assert_eq!(h.m.pending_requests(), 0);
}

#[test]
fn a_reply_for_an_unknown_or_answered_id_is_ignored() {
    let mut h = Harness::accepted("");
    let a = h.m.request("svc", b"a", SECOND).unwrap();
    h.drain();
    h.feed(&[
        reply(a, ReplyOutcome::TimedOut),
        reply(a, ReplyOutcome::TimedOut),
        reply(RequestId(99), ReplyOutcome::TimedOut),
    ]);
    assert_eq!(h.take_events().len(), 1, "one outcome per request");
    assert_eq!(h.m.ignored(), 2);
    assert_eq!(h.m.ended(), None);
}

#[test]
fn the_end_fails_what_is_pending_then_reports_why() {
    let mut h = Harness::accepted("svc");
    let r = h.m.request("svc", b"a", SECOND).unwrap();
    let building = h.m.tunnel("svc", SECOND).unwrap();
    h.drain();
    h.feed(&[NodePacket::TunInit {
        build_id: 7,
        chunk_limit: 10,
    }]);
    let inbound = match h.take_events().as_slice() {
        [Event::InboundTunnel { tunnel, build }] if build.get() == 7 => *tunnel,
        other => panic!("{other:?}"),
    };
    h.feed(&[NodePacket::Close {
        reason: "node shutting down".into(),
    }]);
    assert_eq!(
        h.take_events(),
        vec![
            Event::Reply {
                request: r,
                outcome: Err(RequestError::Closed),
            },
            Event::TunnelBuilt {
                tunnel: building,
                outcome: Err(BuildError::Closed),
            },
            Event::TunnelClosed {
                tunnel: inbound,
                reason: "connection closed".into(),
            },
            Event::Ended(End::Dropped("node shutting down".into())),
        ]
    );
    assert_eq!(
        h.m.ended(),
        Some(&End::Dropped("node shutting down".into()))
    );
    assert_eq!(h.m.request("svc", b"a", SECOND), Err(CallError::Ended));
    assert_eq!(h.m.reply(NodeRequestId(0), Ok(b"x")), Err(CallError::Ended));
    // Bytes after the end are not read.
    h.feed(&[reply(r, ReplyOutcome::TimedOut)]);
    assert!(h.take_events().is_empty());
}

#[test]
fn close_is_graceful_only_when_this_end_asked() {
    let mut h = Harness::accepted("");
    h.m.close().unwrap();
    h.m.close().unwrap();
    h.drain();
    assert_eq!(h.sent(), vec![ClientPacket::Close], "one CLOSE");
    h.feed(&[NodePacket::Close { reason: "".into() }]);
    assert_eq!(h.take_events(), vec![Event::Ended(End::Closed)]);
    assert_eq!(h.m.close(), Err(CallError::Ended));

    let mut h = Harness::accepted("");
    h.feed(&[NodePacket::Close { reason: "".into() }]);
    assert_eq!(
        h.take_events(),
        vec![Event::Ended(End::Dropped(
            "the node closed the connection".into()
        ))]
    );

    let mut h = Harness::accepted("");
    h.m.handle(h.now, Input::Eof);
    h.m.handle(h.now, Input::Failed("later".into()));
    h.drain();
    assert_eq!(
        h.take_events(),
        vec![Event::Ended(End::Dropped(
            "the node closed the connection".into()
        ))],
        "ended once, for the first reason"
    );
}

#[test]
fn bad_bytes_from_the_node_end_the_session_with_what_was_wrong() {
    let mut h = Harness::accepted("");
    h.m.handle(h.now, Input::Received(BytesMut::from(&[0x06u8, 0x00][..])));
    h.drain();
    assert_eq!(
        h.take_events(),
        vec![Event::Ended(End::Session(SessionError::Protocol(
            DecodeError::UnknownOpcode(0x06)
        )))]
    );
}

#[test]
fn arguments_are_checked_before_anything_is_queued() {
    let mut h = Harness::accepted("");
    let ms = Duration::from_micros(999);
    assert_eq!(h.m.broadcast("", b"x"), Err(CallError::EmptyCluster));
    assert_eq!(h.m.broadcast("c", b""), Err(CallError::EmptyBroadcast));
    assert_eq!(h.m.request("", b"x", SECOND), Err(CallError::EmptyCluster));
    assert_eq!(h.m.request("c", b"", SECOND), Err(CallError::EmptyRequest));
    assert_eq!(
        h.m.request("c", b"x", ms),
        Err(CallError::TimeoutUnderOneMs)
    );
    assert_eq!(h.m.publish("", b"x"), Err(CallError::EmptyTopic));
    assert_eq!(h.m.publish("t", b""), Err(CallError::EmptyEvent));
    assert_eq!(h.m.subscribe(""), Err(CallError::EmptyTopic));
    assert_eq!(h.m.unsubscribe("t"), Err(CallError::NotSubscribed));
    assert_eq!(h.m.tunnel("", SECOND), Err(CallError::EmptyCluster));
    assert_eq!(h.m.tunnel("c", ms), Err(CallError::TimeoutUnderOneMs));
    assert_eq!(
        Outgoing::new(TunnelId(0), Bytes::new()).err(),
        Some(CallError::EmptyTunnelMessage)
    );
    h.m.subscribe("t").unwrap();
    assert_eq!(h.m.subscribe("t"), Err(CallError::AlreadySubscribed));
    assert!(CallError::AlreadySubscribed.is_argument());
    assert!(!CallError::Ended.is_argument());
    h.drain();
    assert_eq!(
        h.sent(),
        vec![ClientPacket::Subscribe { topic: "t".into() }]
    );
    // Arguments are checked before the state of the connection.
    h.m.handle(h.now, Input::Eof);
    assert_eq!(h.m.broadcast("", b"x"), Err(CallError::EmptyCluster));
    assert_eq!(h.m.broadcast("c", b"x"), Err(CallError::Ended));
}

#[test]
fn writes_are_pulled_and_the_send_buffer_pushes_back() {
    let config = ClientConfig {
        send_buffer: 100,
        ..ClientConfig::default()
    };
    let mut h = Harness::with_config("", config);
    h.m.broadcast("c", &[1; 60]).unwrap();
    let Some(Output::Transmit(first)) = h.m.poll_output() else {
        panic!("a transmit")
    };
    // Nothing more is handed out until that is flushed: what queues meanwhile counts.
    h.m.broadcast("c", &[2; 60]).unwrap();
    h.m.broadcast("c", &[3; 60]).unwrap();
    assert_eq!(h.m.poll_output(), None);
    assert!(h.m.queued() >= 100);
    assert_eq!(h.m.broadcast("c", &[4; 1]), Err(CallError::SendBufferFull));
    assert_eq!(
        h.m.request("c", &[4; 1], SECOND),
        Err(CallError::SendBufferFull)
    );
    assert_eq!(
        h.m.pending_requests(),
        0,
        "a refused request is not pending"
    );
    // Replies to the node go out regardless.
    h.m.reply(NodeRequestId(3), Err("busy")).unwrap();
    h.m.handle(h.now, Input::Flushed(first.len()));
    let Some(Output::Transmit(rest)) = h.m.poll_output() else {
        panic!("the rest, in one transmit")
    };
    assert_eq!(h.m.queued(), 0);
    h.m.broadcast("c", &[5; 1]).unwrap();
    h.wire.extend_from_slice(&first);
    h.wire.extend_from_slice(&rest);
    let sent = h.sent();
    assert_eq!(sent.len(), 4);
    assert_eq!(
        sent[3],
        ClientPacket::Reply {
            id: 3,
            outcome: Err("busy".into()),
        }
    );
}

#[test]
fn deliveries_reach_members_and_subscribers_only() {
    let mut h = Harness::accepted("svc");
    h.m.subscribe("news").unwrap();
    h.drain();
    h.sent();
    h.feed(&[
        NodePacket::Broadcast {
            message: Bytes::from_static(b"b"),
        },
        NodePacket::Request {
            id: 4,
            request: Bytes::from_static(b"r"),
            timeout_ms: 250,
        },
        NodePacket::Publish {
            topic: "news".into(),
            event: Bytes::from_static(b"e"),
        },
        NodePacket::Publish {
            topic: "other".into(),
            event: Bytes::from_static(b"e"),
        },
    ]);
    assert_eq!(
        h.take_events(),
        vec![
            Event::Broadcast(Bytes::from_static(b"b")),
            Event::Request {
                id: NodeRequestId(4),
                request: Bytes::from_static(b"r"),
                deadline: h.now + Duration::from_millis(250),
            },
            Event::Publish {
                topic: "news".into(),
                event: Bytes::from_static(b"e"),
            },
        ]
    );
    h.m.reply(NodeRequestId(4), Ok(b"R")).unwrap();
    h.m.unsubscribe("news").unwrap();
    assert!(!h.m.is_subscribed("news"));
    h.drain();
    assert_eq!(
        h.sent(),
        vec![
            ClientPacket::Reply {
                id: 4,
                outcome: Ok(Bytes::from_static(b"R")),
            },
            ClientPacket::Unsubscribe {
                topic: "news".into()
            },
        ]
    );
    h.feed(&[NodePacket::Publish {
        topic: "news".into(),
        event: Bytes::from_static(b"late"),
    }]);
    assert!(h.take_events().is_empty());

    // A plain client takes neither broadcasts nor requests, and closes offered tunnels.
    let mut h = Harness::accepted("");
    h.feed(&[
        NodePacket::Broadcast {
            message: Bytes::from_static(b"b"),
        },
        NodePacket::Request {
            id: 0,
            request: Bytes::from_static(b"r"),
            timeout_ms: 250,
        },
        NodePacket::TunInit {
            build_id: 3,
            chunk_limit: 100,
        },
    ]);
    assert!(h.take_events().is_empty());
    assert_eq!(h.m.ignored(), 3);
    assert_eq!(
        h.sent(),
        vec![
            ClientPacket::TunConfirm {
                build_id: 3,
                tun_id: 0
            },
            ClientPacket::TunAllow {
                tun_id: 0,
                space: DEFAULT_TUNNEL_WINDOW
            },
            ClientPacket::TunClose { tun_id: 0 },
        ]
    );
    assert_eq!(h.m.tunnels(), 0);
}

#[test]
fn a_tunnel_is_built_granted_its_window_and_sends_within_its_allowance() {
    let mut h = Harness::accepted("");
    let t = h.m.tunnel("svc", Duration::from_millis(300)).unwrap();
    h.drain();
    assert_eq!(
        h.sent(),
        vec![ClientPacket::TunInit {
            tun_id: t.get(),
            cluster: "svc".into(),
            timeout_ms: 300,
        }]
    );
    // Not open yet: nothing may be sent on it.
    let mut msg = Outgoing::new(t, Bytes::from_static(b"0123456789")).unwrap();
    assert_eq!(h.m.tunnel_send(&mut msg), Err(CallError::TunnelClosed));
    h.feed(&[
        NodePacket::TunConfirm {
            tun_id: t.get(),
            chunk_limit: Some(4),
        },
        NodePacket::TunAllow {
            tun_id: t.get(),
            space: 6,
        },
    ]);
    assert_eq!(
        h.take_events(),
        vec![
            Event::TunnelBuilt {
                tunnel: t,
                outcome: Ok(()),
            },
            Event::TunnelAllowance { tunnel: t },
        ]
    );
    assert_eq!(
        h.sent(),
        vec![ClientPacket::TunAllow {
            tun_id: t.get(),
            space: DEFAULT_TUNNEL_WINDOW,
        }]
    );
    // 6 bytes of allowance: one chunk of 4, then the next (4) does not fit.
    assert_eq!(h.m.tunnel_send(&mut msg), Err(CallError::NoAllowance));
    assert_eq!(msg.sent(), 4);
    assert_eq!(h.m.allowance(t), Some(2));
    h.feed(&[NodePacket::TunAllow {
        tun_id: t.get(),
        space: 100,
    }]);
    assert_eq!(h.m.tunnel_send(&mut msg), Ok(()));
    assert!(msg.is_done());
    assert_eq!(h.m.allowance(t), Some(96));
    h.drain();
    let chunks: Vec<_> = h
        .sent()
        .into_iter()
        .map(|p| match p {
            ClientPacket::TunTransfer {
                size_or_cont,
                payload,
                ..
            } => (size_or_cont, payload),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        chunks,
        vec![
            (10, Bytes::from_static(b"0123")),
            (0, Bytes::from_static(b"4567")),
            (0, Bytes::from_static(b"89")),
        ]
    );
}

#[test]
fn a_timed_out_build_fails_and_an_abandoned_one_is_closed_when_confirmed() {
    let mut h = Harness::accepted("");
    let t = h.m.tunnel("svc", SECOND).unwrap();
    h.drain();
    h.feed(&[NodePacket::TunConfirm {
        tun_id: t.get(),
        chunk_limit: None,
    }]);
    assert_eq!(
        h.take_events(),
        vec![Event::TunnelBuilt {
            tunnel: t,
            outcome: Err(BuildError::TimedOut),
        }]
    );
    assert_eq!(h.m.tunnels(), 0);

    let u = h.m.tunnel("svc", SECOND).unwrap();
    h.drain();
    h.sent();
    h.m.release_tunnel(u);
    h.feed(&[NodePacket::TunConfirm {
        tun_id: u.get(),
        chunk_limit: Some(65536),
    }]);
    assert!(h.take_events().is_empty());
    assert_eq!(h.sent(), vec![ClientPacket::TunClose { tun_id: u.get() }]);
}

#[test]
fn chunks_are_reassembled_and_the_window_comes_back_as_messages_are_taken() {
    let mut h = Harness::accepted("");
    let t = h.open_tunnel(4, 0);
    h.feed(&[
        transfer(t, 6, b"abcd"),
        transfer(t, 0, b"ef"),
        // Incomplete when the next starts: discarded, and its window re-granted at once.
        transfer(t, 5, b"xyz"),
        transfer(t, 2, b"gh"),
        // A continuation of nothing.
        transfer(t, 0, b"??"),
    ]);
    assert_eq!(
        h.take_events(),
        vec![
            Event::TunnelMessage {
                tunnel: t,
                message: Bytes::from_static(b"abcdef"),
            },
            Event::TunnelMessage {
                tunnel: t,
                message: Bytes::from_static(b"gh"),
            },
        ]
    );
    assert_eq!(
        h.sent(),
        vec![
            ClientPacket::TunAllow {
                tun_id: t.get(),
                space: 3
            },
            ClientPacket::TunAllow {
                tun_id: t.get(),
                space: 2
            },
        ]
    );
    h.m.tunnel_consumed(t, 6);
    h.drain();
    assert_eq!(
        h.sent(),
        vec![ClientPacket::TunAllow {
            tun_id: t.get(),
            space: 6
        }]
    );
}

#[test]
fn an_inbound_tunnel_is_confirmed_and_granted_its_window() {
    let mut h = Harness::accepted("svc");
    h.feed(&[NodePacket::TunInit {
        build_id: 42,
        chunk_limit: 3,
    }]);
    let t = match h.take_events().as_slice() {
        [Event::InboundTunnel { tunnel, build }] => {
            assert_eq!(*build, BuildId(42));
            *tunnel
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(
        h.sent(),
        vec![
            ClientPacket::TunConfirm {
                build_id: 42,
                tun_id: t.get()
            },
            ClientPacket::TunAllow {
                tun_id: t.get(),
                space: DEFAULT_TUNNEL_WINDOW
            },
        ]
    );
    h.feed(&[NodePacket::TunAllow {
        tun_id: t.get(),
        space: 1000,
    }]);
    let mut msg = Outgoing::new(t, Bytes::from_static(b"hello")).unwrap();
    h.m.tunnel_send(&mut msg).unwrap();
    h.drain();
    assert_eq!(h.sent().len(), 2, "chunks of the node's limit, 3 bytes");
}

#[test]
fn tunnel_close_waits_for_the_acknowledgement_and_the_other_end_can_close() {
    let mut h = Harness::accepted("");
    let t = h.open_tunnel(100, 100);
    assert!(h.m.close_tunnel(t));
    assert!(h.m.close_tunnel(t), "still waiting");
    h.drain();
    assert_eq!(h.sent(), vec![ClientPacket::TunClose { tun_id: t.get() }]);
    let mut msg = Outgoing::new(t, Bytes::from_static(b"x")).unwrap();
    assert_eq!(h.m.tunnel_send(&mut msg), Err(CallError::TunnelClosed));
    // Data still on its way is delivered until the acknowledgement.
    h.feed(&[
        transfer(t, 1, b"z"),
        NodePacket::TunClose {
            tun_id: t.get(),
            reason: "".into(),
        },
    ]);
    assert_eq!(
        h.take_events(),
        vec![
            Event::TunnelMessage {
                tunnel: t,
                message: Bytes::from_static(b"z"),
            },
            Event::TunnelClosed {
                tunnel: t,
                reason: "".into(),
            },
        ]
    );
    assert!(!h.m.close_tunnel(t));

    let u = h.open_tunnel(100, 100);
    h.feed(&[NodePacket::TunClose {
        tun_id: u.get(),
        reason: "remote node gone".into(),
    }]);
    assert_eq!(
        h.take_events(),
        vec![Event::TunnelClosed {
            tunnel: u,
            reason: "remote node gone".into(),
        }]
    );
    // Releasing a closed tunnel sends nothing; releasing an open one closes it.
    h.m.release_tunnel(u);
    let v = h.open_tunnel(100, 100);
    h.m.release_tunnel(v);
    h.drain();
    assert_eq!(h.sent(), vec![ClientPacket::TunClose { tun_id: v.get() }]);
    assert_eq!(h.m.tunnels(), 0);
}

#[test]
fn a_close_before_the_confirmation_comes_after_the_build_outcome() {
    let mut h = Harness::accepted("");
    let t = h.m.tunnel("svc", SECOND).unwrap();
    h.drain();
    h.feed(&[
        NodePacket::TunClose {
            tun_id: t.get(),
            reason: "early".into(),
        },
        NodePacket::TunConfirm {
            tun_id: t.get(),
            chunk_limit: Some(10),
        },
    ]);
    assert_eq!(
        h.take_events(),
        vec![
            Event::TunnelBuilt {
                tunnel: t,
                outcome: Ok(()),
            },
            Event::TunnelClosed {
                tunnel: t,
                reason: "early".into(),
            },
        ]
    );
}

#[test]
fn packets_split_anywhere_give_the_same_events_through_the_read_buffer() {
    let packets = [
        accept(),
        NodePacket::Broadcast {
            message: Bytes::from(vec![9u8; 300]),
        },
        NodePacket::Request {
            id: 1,
            request: Bytes::from_static(b"req"),
            timeout_ms: 5,
        },
        NodePacket::Close {
            reason: "bye".into(),
        },
    ];
    let mut wire = BytesMut::new();
    for p in &packets {
        p.encode(&mut wire);
    }
    let whole = {
        let mut h = Harness::connecting("svc", ClientConfig::default());
        h.feed(&packets);
        h.take_events()
    };
    assert_eq!(whole.len(), 4);
    for step in [1, 2, 3, 7, 64] {
        let mut h = Harness::connecting("svc", ClientConfig::default());
        for piece in wire.chunks(step) {
            let mut buf = h.m.read_buffer();
            buf.extend_from_slice(piece);
            h.m.handle(h.now, Input::Received(buf));
            h.drain();
        }
        assert_eq!(h.take_events(), whole, "split every {step} bytes");
    }
}
