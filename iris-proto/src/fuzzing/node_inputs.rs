//! Sequences of node inputs from arbitrary bytes: several clients, mostly valid packets with
//! extreme values, raw garbage, split writes, flushes, disconnects, time jumps and shutdown,
//! fed to a lone [`Node`] by a driver that keeps the contract (it reports only bytes it was
//! handed, feeds nothing for a closed connection). In the manner of quinn's `streams`
//! target: the bytes choose operations, the checks are the node's promises.
//!
//! Checked: no panic; every byte the node sends a client decodes as node packets; a client
//! never gets more REPLYs for an id than it sent REQUESTs with it, nor more TUN_CONFIRMs
//! than TUN_INITs; after shutdown every connection is closed, no deadline is left, and the
//! memory budget is back to zero (every charge was released).

use crate::node::{Config, ConnId, Input, Node, Output};
use crate::relay::client::ClientSession;
use crate::relay::codec::{Limits, decode_client, decode_node};
use crate::relay::{ClientPacket, Name, NodePacket};
use crate::time::Instant;
use bytes::{Bytes, BytesMut};
use std::collections::BTreeMap;
use std::time::Duration;

/// Most connections one input opens.
const MAX_CONNS: usize = 8;

/// Limits small enough for the fuzzer to reach every bound.
fn config() -> Config {
    Config {
        limits: Limits {
            max_message_size: 1 << 16,
            max_name_size: 64,
            max_chunk_size: 1 << 12,
        },
        tunnel_window: 1 << 13,
        max_clients: 4,
        max_handshakes: 3,
        client_backlog_high: 1 << 12,
        max_client_backlog: 1 << 15,
        max_memory: 1 << 17,
        max_pending_requests: 4,
        max_tunnels_per_client: 3,
        max_subscriptions_per_client: 3,
        ..Config::default()
    }
}

/// What the fuzzing driver knows of one connection.
#[derive(Default)]
struct Conn {
    /// Handed by the node and not yet reported written.
    unflushed: usize,
    /// What the node sent, not yet decoded.
    rx: BytesMut,
    /// What the client sent, not yet decoded (raw bytes can be valid packets too); `None`
    /// once it stopped being valid.
    tx: Option<BytesMut>,
    closed: bool,
    /// REQUESTs sent per id, REPLYs received per id.
    requests: BTreeMap<u64, u32>,
    replies: BTreeMap<u64, u32>,
    /// TUN_INITs sent per tunnel id, TUN_CONFIRMs received per tunnel id.
    tun_inits: BTreeMap<u64, u32>,
    tun_confirms: BTreeMap<u64, u32>,
}

struct Driver {
    node: Node,
    now: Instant,
    conns: Vec<Conn>,
    limits: Limits,
}

/// Runs the byte-chosen operations; panics if the node breaks a promise.
pub fn node_inputs(data: &[u8]) {
    let cfg = config();
    let limits = cfg.limits;
    let node = Node::new(cfg, [9; 32], Instant::ZERO).expect("valid fuzz config");
    let mut d = Driver {
        node,
        now: Instant::ZERO,
        conns: Vec::new(),
        limits,
    };
    d.drain();
    let mut bytes = Bytes::copy_from_slice(data);
    let mut r = Reader(&mut bytes);
    while let Some(op) = r.byte() {
        match op % 10 {
            0 | 1 if d.conns.len() < MAX_CONNS => {
                let c = ConnId(d.conns.len() as u64);
                d.conns.push(Conn {
                    tx: Some(BytesMut::new()),
                    ..Conn::default()
                });
                d.handle(Input::ClientConnected(c));
                if op % 10 == 1 {
                    let mut init = BytesMut::new();
                    ClientSession::encode_init(pick_name(&mut r).as_str(), &mut init);
                    d.data(c, &init);
                }
            }
            2..=4 => {
                if let Some(c) = d.pick_open(&mut r) {
                    let p = packet(&mut r);
                    let mut wire = BytesMut::new();
                    p.encode(&mut wire);
                    // Sometimes in two reads, cut anywhere.
                    let cut = usize::from(r.byte().unwrap_or(0)) % (wire.len() + 1);
                    d.data(c, &wire[..cut]);
                    d.data(c, &wire[cut..]);
                }
            }
            5 => {
                if let Some(c) = d.pick_open(&mut r) {
                    let n = usize::from(r.byte().unwrap_or(0)) % 24;
                    let raw = r.take(n);
                    d.data(c, &raw);
                }
            }
            6 => {
                if let Some(c) = d.pick_open(&mut r) {
                    // Part or all of what it was handed.
                    let conn = &d.conns[c.0 as usize];
                    let n = match r.byte().unwrap_or(0) {
                        0..=127 => conn.unflushed,
                        b => conn.unflushed.min(usize::from(b) * 97),
                    };
                    d.conns[c.0 as usize].unflushed -= n;
                    d.handle(Input::ClientFlushed(c, n));
                }
            }
            7 => {
                if let Some(c) = d.pick_open(&mut r) {
                    d.conns[c.0 as usize].closed = true;
                    d.handle(Input::ClientGone(c));
                }
            }
            8 => {
                let ms = match r.byte().unwrap_or(0) {
                    255 => 86_400_000,
                    b => u64::from(b) * 37,
                };
                d.advance(Duration::from_millis(ms));
            }
            _ => {
                if r.byte() == Some(0) {
                    break;
                }
            }
        }
    }
    // Every deadline passes, then the node stops: all promises come due.
    d.advance(Duration::from_secs(86_400));
    d.handle(Input::Shutdown("fuzz over"));
    // Requests with deadlines beyond the day are waited for, but only the drain's time.
    d.advance(crate::Config::default().shutdown_drain);
    for (i, c) in d.conns.iter().enumerate() {
        assert!(c.closed, "connection {i} left open after shutdown");
    }
    assert_eq!(d.node.client_count(), 0);
    assert_eq!(d.node.poll_timeout(), None, "a deadline outlived shutdown");
    assert_eq!(
        d.node.memory_used(),
        0,
        "a memory charge was never released"
    );
}

impl Driver {
    fn handle(&mut self, input: Input<'_>) {
        self.node.handle(self.now, input);
        self.drain();
    }

    fn data(&mut self, c: ConnId, bytes: &[u8]) {
        if self.conns[c.0 as usize].closed || bytes.is_empty() {
            return;
        }
        self.note_sent(c, bytes);
        self.handle(Input::ClientData(c, bytes));
    }

    fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        while let Some(at) = self.node.poll_timeout().filter(|&at| at <= target) {
            self.now = self.now.max(at);
            self.handle(Input::Timeout);
        }
        self.now = target;
    }

    fn drain(&mut self) {
        while let Some(out) = self.node.poll_output() {
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
                Output::PauseReading(_) | Output::ResumeReading(_) | Output::Event(_) => {}
                other => panic!("a lone node asked for {other:?}"),
            }
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
    fn pick_open(&self, r: &mut Reader<'_>) -> Option<ConnId> {
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

/// The fuzzer's bytes, consumed from the front.
struct Reader<'a>(&'a mut Bytes);

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        if self.0.is_empty() {
            return None;
        }
        let b = self.0[0];
        *self.0 = self.0.slice(1..);
        Some(b)
    }

    fn take(&mut self, n: usize) -> Bytes {
        self.0.split_to(n.min(self.0.len()))
    }

    /// A number, mostly small, sometimes at the edges.
    fn number(&mut self) -> u64 {
        match self.byte().unwrap_or(0) {
            0 => 0,
            1 => 1,
            2 => u64::MAX,
            3 => u64::from(u32::MAX),
            b => u64::from(b) % 16,
        }
    }

    /// A payload length near the interesting sizes.
    fn size(&mut self) -> usize {
        match self.byte().unwrap_or(0) {
            0 => 0,
            1 => (1 << 12) - 1,
            2 => 1 << 12,
            3 => 1 << 14,
            4 => (1 << 16) - 64,
            b => usize::from(b),
        }
    }
}

fn pick_name(r: &mut Reader<'_>) -> Name {
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
