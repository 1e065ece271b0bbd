//! The relay clients of a fuzzed node, shared by the lone node's harness (`node_inputs`)
//! and the networked one's (`node_peers`): the operations the fuzzer's bytes choose for
//! them, and the checks of what the node promises them.
//!
//! Checked here: every byte the node sends a client decodes as node packets; a client never
//! gets more REPLYs for an id than it sent REQUESTs with it, nor more TUN_CONFIRMs than
//! TUN_INITs; nothing is sent to a connection after its close, nor closed twice.

use super::reader::Reader;
use crate::node::{ConnId, Input, Output};
use crate::relay::client::ClientSession;
use crate::relay::codec::{Limits, decode_client, decode_node};
use crate::relay::{ClientPacket, Name, NodePacket};
use bytes::{Bytes, BytesMut};
use std::collections::BTreeMap;
use std::time::Duration;

/// Most connections one input opens.
pub(super) const MAX_CONNS: usize = 8;

/// What the fuzzing driver knows of one connection.
#[derive(Default)]
pub(super) struct Conn {
    /// Handed by the node and not yet reported written.
    unflushed: usize,
    /// What the node sent, not yet decoded.
    rx: BytesMut,
    /// What the client sent, not yet decoded (raw bytes can be valid packets too); `None`
    /// once it stopped being valid.
    tx: Option<BytesMut>,
    pub(super) closed: bool,
    /// REQUESTs sent per id, REPLYs received per id.
    requests: BTreeMap<u64, u32>,
    replies: BTreeMap<u64, u32>,
    /// TUN_INITs sent per tunnel id, TUN_CONFIRMs received per tunnel id.
    tun_inits: BTreeMap<u64, u32>,
    tun_confirms: BTreeMap<u64, u32>,
}

/// The clients of one node.
pub(super) struct Clients {
    pub(super) conns: Vec<Conn>,
    limits: Limits,
}

/// A driver of one node, as the client operations need it.
pub(super) trait Drive {
    /// Feeds one input and carries out everything it led to.
    fn handle(&mut self, input: Input<'_>);
    /// Lets time pass.
    fn advance(&mut self, by: Duration);
    /// The node's clients.
    fn clients(&mut self) -> &mut Clients;
    /// The node's input buffer for client `c`, lent ([`crate::Node::lend_input`]).
    fn lend(&mut self, c: ConnId, room: usize) -> BytesMut;

    /// Client `c` sends `bytes` (nothing for a closed connection): as a driver copies them
    /// in, or, for an odd count, read into the buffer the node lends.
    fn data(&mut self, c: ConnId, bytes: &[u8]) {
        let clients = self.clients();
        if clients.conns[c.0 as usize].closed || bytes.is_empty() {
            return;
        }
        clients.note_sent(c, bytes);
        if bytes.len() % 2 == 1 {
            let mut input = self.lend(c, bytes.len());
            input.extend_from_slice(bytes);
            self.handle(Input::ClientRead(c, input));
        } else {
            self.handle(Input::ClientData(c, bytes));
        }
    }
}

/// One client operation, `op` in `0..=8`: connect (1: and say INIT), send a packet (2-4),
/// raw bytes (5), flush (6), disconnect (7), let time pass (8).
pub(super) fn client_op<D: Drive>(d: &mut D, op: u8, r: &mut Reader<'_>) {
    match op {
        0 | 1 => {
            if d.clients().conns.len() >= MAX_CONNS {
                return;
            }
            let c = d.clients().connect();
            d.handle(Input::ClientConnected(c));
            if op == 1 {
                let mut init = BytesMut::new();
                ClientSession::encode_init(pick_name(r).as_str(), &mut init);
                d.data(c, &init);
            }
        }
        2..=4 => {
            if let Some(c) = d.clients().pick_open(r) {
                let p = packet(r);
                let mut wire = BytesMut::new();
                p.encode(&mut wire);
                // Sometimes in two reads, cut anywhere.
                let cut = usize::from(r.byte().unwrap_or(0)) % (wire.len() + 1);
                d.data(c, &wire[..cut]);
                d.data(c, &wire[cut..]);
            }
        }
        5 => {
            if let Some(c) = d.clients().pick_open(r) {
                let n = usize::from(r.byte().unwrap_or(0)) % 24;
                let raw = r.take(n);
                d.data(c, &raw);
            }
        }
        6 => {
            if let Some(c) = d.clients().pick_open(r) {
                // Part or all of what it was handed.
                let conn = &mut d.clients().conns[c.0 as usize];
                let n = match r.byte().unwrap_or(0) {
                    0..=127 => conn.unflushed,
                    b => conn.unflushed.min(usize::from(b) * 97),
                };
                conn.unflushed -= n;
                d.handle(Input::ClientFlushed(c, n));
            }
        }
        7 => {
            if let Some(c) = d.clients().pick_open(r) {
                d.clients().conns[c.0 as usize].closed = true;
                d.handle(Input::ClientGone(c));
            }
        }
        _ => {
            let ms = match r.byte().unwrap_or(0) {
                255 => 86_400_000,
                b => u64::from(b) * 37,
            };
            d.advance(Duration::from_millis(ms));
        }
    }
}

impl Clients {
    pub(super) fn new(limits: Limits) -> Clients {
        Clients {
            conns: Vec::new(),
            limits,
        }
    }

    fn connect(&mut self) -> ConnId {
        let c = ConnId(self.conns.len() as u64);
        self.conns.push(Conn {
            tx: Some(BytesMut::new()),
            ..Conn::default()
        });
        c
    }

    /// Carries out an output for a client; hands back any other.
    pub(super) fn on_output(&mut self, out: Output) -> Option<Output> {
        match out {
            Output::Transmit(c, bytes) => {
                let conn = &mut self.conns[c.0 as usize];
                assert!(!conn.closed, "transmit after close");
                conn.unflushed += bytes.len();
                conn.rx.extend_from_slice(&bytes);
                self.check_packets(c);
            }
            Output::Close(c) => {
                let conn = &mut self.conns[c.0 as usize];
                assert!(!conn.closed, "closed twice");
                conn.closed = true;
            }
            Output::PauseReading(_) | Output::ResumeReading(_) => {}
            other => return Some(other),
        }
        None
    }

    /// Reports every byte handed to the open clients as written.
    pub(super) fn flush_all(&mut self) -> Vec<(ConnId, usize)> {
        let mut done = Vec::new();
        for (i, c) in self.conns.iter_mut().enumerate() {
            if !c.closed && c.unflushed > 0 {
                done.push((ConnId(i as u64), std::mem::take(&mut c.unflushed)));
            }
        }
        done
    }

    /// After shutdown: every connection is closed.
    pub(super) fn assert_all_closed(&self) {
        for (i, c) in self.conns.iter().enumerate() {
            assert!(c.closed, "connection {i} left open after shutdown");
        }
    }

    /// Decodes what a client got so far and checks the one-outcome promises.
    fn check_packets(&mut self, c: ConnId) {
        let conn = &mut self.conns[c.0 as usize];
        loop {
            match decode_node(&mut conn.rx, &self.limits) {
                Ok(Some(NodePacket::Reply { id, .. })) => {
                    let n = conn.replies.entry(id).or_default();
                    *n += 1;
                    let sent = conn.requests.get(&id).copied().unwrap_or(0);
                    assert!(*n <= sent, "REPLY {id} number {n}, {sent} REQUESTs");
                }
                Ok(Some(NodePacket::TunConfirm { tun_id, .. })) => {
                    let n = conn.tun_confirms.entry(tun_id).or_default();
                    *n += 1;
                    let sent = conn.tun_inits.get(&tun_id).copied().unwrap_or(0);
                    assert!(
                        *n <= sent,
                        "TUN_CONFIRM {tun_id} number {n}, {sent} TUN_INITs"
                    );
                }
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(e) => panic!("the node sent bytes that do not decode: {e}"),
            }
        }
    }

    /// An open connection named by the next byte, if any is open.
    pub(super) fn pick_open(&self, r: &mut Reader<'_>) -> Option<ConnId> {
        let open: Vec<usize> = (0..self.conns.len())
            .filter(|&i| !self.conns[i].closed)
            .collect();
        let i = *open.get(usize::from(r.byte()?) % open.len().max(1))?;
        Some(ConnId(i as u64))
    }

    /// Counts the REQUESTs and TUN_INITs in what the client sends, as the node will see
    /// them (a packet may come in pieces, or out of raw bytes).
    fn note_sent(&mut self, c: ConnId, bytes: &[u8]) {
        let conn = &mut self.conns[c.0 as usize];
        let Some(tx) = conn.tx.as_mut() else {
            return;
        };
        tx.extend_from_slice(bytes);
        loop {
            match decode_client(tx, &self.limits) {
                Ok(Some(ClientPacket::Request { id, .. })) => {
                    *conn.requests.entry(id).or_default() += 1
                }
                Ok(Some(ClientPacket::TunInit { tun_id, .. })) => {
                    *conn.tun_inits.entry(tun_id).or_default() += 1
                }
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(_) => {
                    conn.tx = None;
                    return;
                }
            }
        }
    }
}

/// One of the few names clients use (so that they meet in groups).
pub(super) fn pick_name(r: &mut Reader<'_>) -> Name {
    match r.byte().unwrap_or(0) % 4 {
        0 => Name::default(),
        1 => "a".into(),
        2 => "b".into(),
        _ => "c".into(),
    }
}

/// A client packet: mostly valid, with values from the edges.
fn packet(r: &mut Reader<'_>) -> ClientPacket {
    let payload = |r: &mut Reader<'_>| Bytes::from(vec![0x5a; r.size()]);
    match r.byte().unwrap_or(0) % 14 {
        0 => ClientPacket::Broadcast {
            cluster: pick_name(r),
            message: payload(r),
        },
        1 | 2 => ClientPacket::Request {
            id: r.number(),
            cluster: pick_name(r),
            request: payload(r),
            timeout_ms: r.number(),
        },
        3 => ClientPacket::Reply {
            id: r.number(),
            outcome: if r.byte().unwrap_or(0).is_multiple_of(2) {
                Ok(payload(r))
            } else {
                Err(pick_name(r))
            },
        },
        4 => ClientPacket::Subscribe {
            topic: pick_name(r),
        },
        5 => ClientPacket::Unsubscribe {
            topic: pick_name(r),
        },
        6 => ClientPacket::Publish {
            topic: pick_name(r),
            event: payload(r),
        },
        7 => ClientPacket::TunInit {
            tun_id: r.number(),
            cluster: pick_name(r),
            timeout_ms: r.number(),
        },
        8 => ClientPacket::TunConfirm {
            build_id: r.number(),
            tun_id: r.number(),
        },
        9 => ClientPacket::TunAllow {
            tun_id: r.number(),
            space: r.number(),
        },
        10 | 11 => {
            let len = r.size().min(1 << 12);
            ClientPacket::TunTransfer {
                tun_id: r.number(),
                size_or_cont: match r.byte().unwrap_or(0) % 3 {
                    0 => 0,
                    1 => len as u64,
                    _ => r.number(),
                },
                payload: Bytes::from(vec![0xa5; len]),
            }
        }
        12 => ClientPacket::TunClose { tun_id: r.number() },
        _ => ClientPacket::Close,
    }
}
