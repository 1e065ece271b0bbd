//! A networked [`Node`] fed by linked peers and by its clients, from arbitrary bytes.
//!
//! The harness is the node's driver and plays its peers. A peer's link is a real [`Link`]
//! held by the harness ([`PeerEnd`]): plain (HELLO only) on most inputs, sealed with the
//! network key on one in eight, where the handshake is the real one (both sides sign, the
//! node through [`Output::Sign`]; signatures are cached by transcript, see
//! [`super::peer::signature`]) and everything a peer says goes through the real record
//! layer, so that the decoders behind it are reached. The bytes choose operations:
//!
//! - the client operations of [`super::clients`];
//! - a peer connects, as one of four identities (its IDENT may later name another, or the
//!   node itself), or the node's dials are answered (by whom it dialed, someone else, or a
//!   failure); the node is told to join through one of them;
//! - a peer sends node messages built from the bytes (tree messages, casts and anycasts on
//!   the trees of the groups the clients use, replies and tunnel traffic naming the
//!   requests and tunnels the node started, mostly valid, values at the edges), overlay
//!   messages, IDENTs, garbage as a message or as a node message, raw bytes under the
//!   link's framing; a frame may come in two reads;
//! - a peer's socket flushes, closes gracefully, or is gone; time passes (or jumps a day in
//!   one step, a stalled process waking).
//!
//! Checked, besides the client promises and those of [`super::peer`] on every frame the
//! node sends: no panic on any peer bytes; the node never writes to, nor closes, a link it
//! closed or was told is gone, nor one it was never given; never asks for a signature on a
//! plain network; never dials itself nor reuses a dial id; a deadline it is woken for moves
//! on. After shutdown: every client and every link is closed, the memory budget is back to
//! zero, [`crate::Event::Stopped`] came once, and more time sends nothing more.

use super::clients::{Clients, Drive, client_op};
use super::node_inputs::config;
use super::node_wire::{PoolsView, contact, node_msg};
use super::peer::{Manner, Notes, PeerEnd, signature};
use super::reader::Reader;
use crate::link::{LinkConfig, NetworkKey, RekeyLimits, ToSign};
use crate::mesh::one_way;
use crate::mesh::wire::PeerMsg;
use crate::mesh::{DialId, LinkId, MeshConfig, Security};
use crate::node::wire::{NodeMsg, Wanted};
use crate::node::{ConnId, Event, Input, Node, Output};
use crate::overlay::{Contact, NodeId, OverlayMsg};
use crate::scribe::{Group, ScribeConfig};
use crate::time::Instant;
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The fuzzed node's id: the middle of the ring, so that the peers' ids fall either side.
pub(super) const NODE_ID: NodeId = NodeId(1 << 127);
const NODE_EPOCH: u64 = 1;
/// Trees per group: few, so that casts and anycasts find them.
const SPLITS: u8 = 2;
/// Most links the harness opens in one input.
const MAX_LINKS: u64 = 12;

fn node_addr() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 100], 7000))
}

/// The node's contact, as its IDENT must say.
fn node_contact() -> Contact {
    Contact::new(NODE_ID, node_addr(), NODE_EPOCH)
}

/// The peers the harness plays: ids either side of the node's and next to it, on v4 and
/// v6 addresses.
fn identities() -> [Contact; 4] {
    let at = |ip: [u8; 4]| SocketAddr::from((ip, 7000));
    [
        Contact::new(NodeId(1 << 126), at([10, 0, 0, 1]), 5),
        Contact::new(NodeId(3 << 126), at([10, 0, 0, 2]), 5),
        Contact::new(
            NodeId((1 << 127) + 1),
            SocketAddr::from((std::net::Ipv6Addr::from(0xfd00_u128 << 112 | 3), 7000)),
            5,
        ),
        Contact::new(NodeId((1 << 127) - (1 << 64)), at([10, 0, 0, 4]), 5),
    ]
}

fn key() -> Arc<NetworkKey> {
    static KEY: OnceLock<Arc<NetworkKey>> = OnceLock::new();
    KEY.get_or_init(|| {
        let pem = include_bytes!("../../tests/fixtures/net-pkcs8.pem");
        Arc::new(NetworkKey::from_bytes(pem).expect("fixture key"))
    })
    .clone()
}

/// Links with small queues, frequent rekeys and signatures handed to the driver.
fn link_config() -> LinkConfig {
    LinkConfig {
        network: "fuzz".into(),
        handshake_timeout: Duration::from_secs(3),
        max_record: 4096,
        max_control_queue: 1 << 14,
        max_data_queue: 1 << 15,
        rekey: RekeyLimits {
            records: 16,
            bytes: 1 << 16,
        },
        offload_signatures: true,
        ..LinkConfig::default()
    }
}

/// Fast timers and small bounds, so that a short input reaches them.
fn mesh_config(seeded: bool) -> MeshConfig {
    let mut m = MeshConfig::new("fuzz", node_addr());
    m.id = Some(NODE_ID);
    m.epoch = NODE_EPOCH;
    if seeded {
        m.seeds = vec![identities()[0].addr];
    }
    m.overlay.heartbeat_period = Duration::from_secs(1);
    m.overlay.boot_quiet = Duration::from_secs(2);
    m.overlay.change_quiet = Duration::from_secs(1);
    m.overlay.leaf_set_size = 4;
    m.link = link_config();
    m.max_links = 4;
    m.max_inbound_handshakes = 2;
    m.max_inbound_handshakes_per_addr = 2;
    m.max_pending = 4;
    m.link_idle = Duration::from_secs(8);
    m.close_linger = Duration::from_millis(500);
    m.scribe = ScribeConfig {
        splits: SPLITS,
        beat: Duration::from_secs(1),
        misses: 3,
        refresh_every: 3,
        max_trees: 8,
        max_children: 3,
        max_windows: 8,
        hop_rtt: Duration::from_millis(50),
        probe_after: Duration::from_millis(500),
        probe_wait: Duration::from_millis(500),
    };
    m
}

/// The peers' side of the harness.
struct Peers {
    /// The network key, on a sealed network.
    key: Option<Arc<NetworkKey>>,
    ends: BTreeMap<LinkId, PeerEnd>,
    /// Links the node closed or was told are gone: nothing more may come for them.
    over: BTreeSet<LinkId>,
    next_link: u64,
    /// Dials the node asked for and nobody answered yet.
    dials: Vec<(DialId, SocketAddr)>,
    dialed: BTreeSet<DialId>,
    /// Signatures the node asked for, answered before any peer speaks again.
    signs: VecDeque<(LinkId, ToSign)>,
    /// A link whose frame the node has read only part of: the rest comes first.
    cutting: Option<LinkId>,
    notes: Notes,
    /// Outputs for the network (events aside) the node gave so far.
    outputs: u64,
    groups: Vec<Group>,
    contacts: Vec<Contact>,
    stopped: u32,
}

struct Driver {
    node: Node,
    now: Instant,
    clients: Clients,
    peers: Peers,
}

/// Runs the byte-chosen operations against a networked node; panics if the node breaks a
/// promise.
pub fn node_peers(data: &[u8]) {
    run(data);
}

/// What a run reached, for tests of the harness itself.
#[cfg_attr(not(test), allow(dead_code))]
pub(super) struct Reached {
    pub(super) stats: crate::Stats,
    pub(super) mesh: crate::MeshStats,
    /// Replies the node sent peers.
    pub(super) replies: u32,
}

/// [`node_peers`], telling what the run reached.
pub(super) fn run(data: &[u8]) -> Reached {
    let mut bytes = Bytes::copy_from_slice(data);
    let mut r = Reader(&mut bytes);
    let head = r.b();
    let sealed = head % 8 == 7;
    let security = if sealed {
        Security::Rsa(key())
    } else {
        Security::Plain
    };
    let cfg = config();
    let limits = cfg.limits;
    let mesh = mesh_config(head / 8 % 2 == 1);
    let node =
        Node::networked(cfg, mesh, security, [9; 32], Instant::ZERO).expect("valid fuzz config");
    let mut groups = Vec::new();
    for name in ["", "a", "b", "c"] {
        groups.push(Group::cluster(name.into()));
        groups.push(Group::topic(name.into()));
    }
    let mut contacts = identities().to_vec();
    contacts.push(node_contact());
    let mut d = Driver {
        node,
        now: Instant::ZERO,
        clients: Clients::new(limits),
        peers: Peers {
            key: sealed.then(key),
            ends: BTreeMap::new(),
            over: BTreeSet::new(),
            next_link: 0,
            dials: Vec::new(),
            dialed: BTreeSet::new(),
            signs: VecDeque::new(),
            cutting: None,
            notes: Notes::default(),
            outputs: 0,
            groups,
            contacts,
            stopped: 0,
        },
    };
    d.settle();
    while let Some(op) = r.byte() {
        match op % 16 {
            op @ 0..=8 => client_op(&mut d, op, &mut r),
            9 => {
                if r.byte() == Some(0) {
                    break;
                }
            }
            10 => d.connect(&mut r),
            11 => d.answer_dial(&mut r),
            12 | 13 => d.send_node_msg(&mut r),
            14 => d.send_other(&mut r),
            _ => d.link_event(&mut r),
        }
    }
    d.finish();
    Reached {
        stats: d.node.stats(),
        mesh: d.node.status().mesh.unwrap_or_default(),
        replies: d.peers.notes.answered(),
    }
}

impl Drive for Driver {
    fn handle(&mut self, input: Input<'_>) {
        self.node.handle(self.now, input);
        self.settle();
    }

    fn lend(&mut self, c: ConnId, room: usize) -> BytesMut {
        self.node.lend_input(c, room)
    }

    /// Wakes the node at each deadline up to `by` from now; a day passes in one step (a
    /// process that stalled).
    fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        if by >= Duration::from_secs(3600) {
            self.now = target;
            return self.handle(Input::Timeout);
        }
        let mut same = 0;
        while let Some(at) = self.node.poll_timeout().filter(|&at| at <= target) {
            if at <= self.now {
                same += 1;
                assert!(
                    same < 1000,
                    "a deadline at {at:?} is not cleared by a timeout"
                );
            } else {
                same = 0;
            }
            self.now = self.now.max(at);
            self.handle(Input::Timeout);
        }
        self.now = target;
    }

    fn clients(&mut self) -> &mut Clients {
        &mut self.clients
    }
}

impl Driver {
    /// Carries out what the node asked and what the peers say back, until nothing is left.
    fn settle(&mut self) {
        loop {
            while let Some(out) = self.node.poll_output() {
                if let Some(out) = self.clients.on_output(out) {
                    self.on_output(out);
                }
            }
            if let Some((link, to_sign)) = self.peers.signs.pop_front() {
                let key = self.peers.key.clone().expect("checked when asked");
                let sig = signature(&key, &to_sign);
                self.node.handle(self.now, Input::Signed(link, &sig));
                continue;
            }
            if let Some((link, frame)) = self.peers.next_frame() {
                self.node.handle(self.now, Input::PeerData(link, &frame));
                continue;
            }
            return;
        }
    }

    /// An output for the network.
    fn on_output(&mut self, out: Output) {
        let p = &mut self.peers;
        if !matches!(out, Output::Event(_)) {
            p.outputs += 1;
        }
        match out {
            Output::PeerTransmit(link, bytes) => {
                assert!(
                    !p.over.contains(&link),
                    "the node wrote to {link:?} after its end"
                );
                let end = p
                    .ends
                    .get_mut(&link)
                    .unwrap_or_else(|| panic!("the node wrote to {link:?}, never given"));
                assert!(
                    !end.node_closed || bytes.is_empty(),
                    "the node wrote to {link:?} after its CLOSE"
                );
                end.unflushed += bytes.len();
                end.link
                    .handle(Instant::ZERO, crate::link::LinkInput::Bytes(&bytes));
                end.process(
                    p.key.as_deref(),
                    node_contact(),
                    &p.contacts[..4],
                    &mut p.notes,
                );
            }
            Output::PeerClose(link) => {
                assert!(
                    p.over.insert(link),
                    "the node closed {link:?} after its end"
                );
                let mut end = p
                    .ends
                    .remove(&link)
                    .unwrap_or_else(|| panic!("the node closed {link:?}, never given"));
                end.link.handle(Instant::ZERO, crate::link::LinkInput::Eof);
                end.process(
                    p.key.as_deref(),
                    node_contact(),
                    &p.contacts[..4],
                    &mut p.notes,
                );
            }
            Output::Dial(dial, addr) => {
                assert!(p.dialed.insert(dial), "dial id {dial:?} used twice");
                assert_ne!(addr, node_addr(), "the node dialed itself");
                p.dials.push((dial, addr));
            }
            Output::Sign(link, to_sign) => {
                assert!(p.key.is_some(), "a plain network asked for a signature");
                assert!(
                    p.ends.contains_key(&link) && !p.over.contains(&link),
                    "a signature for {link:?}, not open"
                );
                p.signs.push_back((link, to_sign));
            }
            Output::Event(Event::Stopped) => p.stopped += 1,
            Output::Event(_) => {}
            other => panic!("unexpected output {other:?}"),
        }
    }

    /// A peer connects to the node's peer port, or the node is told to join through one.
    fn connect(&mut self, r: &mut Reader<'_>) {
        let b = r.b();
        let who = identities()[usize::from(b % 4)];
        if b / 4 % 8 == 7 {
            return self.handle(Input::JoinVia(who.addr));
        }
        let Some(link) = self.peers.new_link() else {
            return;
        };
        let end = PeerEnd::new(
            self.peers.key.as_ref(),
            link_config(),
            true,
            link.0 as u8,
            who,
            Manner::from_byte(r.b()),
        );
        self.peers.ends.insert(link, end);
        let from = SocketAddr::new(who.addr.ip(), 40_000 + link.0 as u16);
        self.handle(Input::PeerConnected {
            link,
            dial: None,
            from: Some(from),
        });
    }

    /// A dial the node asked for connects (to whom it dialed, or someone else) or fails.
    fn answer_dial(&mut self, r: &mut Reader<'_>) {
        if self.peers.dials.is_empty() {
            return;
        }
        let i = usize::from(r.b()) % self.peers.dials.len();
        let (dial, addr) = self.peers.dials.remove(i);
        let how = r.b();
        if how.is_multiple_of(4) {
            return self.handle(Input::DialFailed(dial));
        }
        let ids = identities();
        let who = match ids.iter().find(|c| c.addr == addr) {
            Some(c) if how % 4 != 1 => *c,
            _ => ids[usize::from(how / 4) % 4],
        };
        self.open_dialed(dial, who, Manner::from_byte(r.b()));
    }

    fn open_dialed(&mut self, dial: DialId, who: Contact, manner: Manner) {
        let Some(link) = self.peers.new_link() else {
            return self.handle(Input::DialFailed(dial));
        };
        let end = PeerEnd::new(
            self.peers.key.as_ref(),
            link_config(),
            false,
            link.0 as u8,
            who,
            manner,
        );
        self.peers.ends.insert(link, end);
        self.handle(Input::PeerConnected {
            link,
            dial: Some(dial),
            from: None,
        });
    }

    /// A peer sends a node message built from the bytes, on the channel its kind takes
    /// (or the other one, now and then).
    fn send_node_msg(&mut self, r: &mut Reader<'_>) {
        let Some(link) = self.peers.pick(r) else {
            return;
        };
        let p = &self.peers;
        let pools = PoolsView {
            groups: &p.groups,
            contacts: &p.contacts,
            requests: &p.notes.requests,
            tunnels: &p.notes.tunnels,
            splits: SPLITS,
            oversized: false,
        };
        let mut msg = node_msg(r, &pools);
        if let NodeMsg::Anycast(a) = &mut msg {
            // Sent now, by a peer whose clock is the node's.
            a.due_ms = one_way::stamp(self.now);
        }
        if let NodeMsg::Anycast(a) = &msg
            && matches!(a.wanted, Wanted::Request(_))
        {
            *self
                .peers
                .notes
                .asked
                .entry((a.origin.id, a.id))
                .or_default() += 1;
        }
        let bulk = matches!(
            msg,
            NodeMsg::Cast(_) | NodeMsg::Anycast(_) | NodeMsg::TunnelData { .. }
        );
        let data = bulk != r.b().is_multiple_of(8);
        let bytes = crate::node::wire::encode(&msg);
        let end = self.peers.ends.get_mut(&link).expect("picked");
        let _ = if data {
            end.link.send_data(bytes)
        } else {
            end.link
                .send_control(crate::mesh::wire::encode(&PeerMsg::Node(bytes)))
        };
        self.deliver_cut(link, r);
    }

    /// A peer sends an overlay message, an IDENT, or garbage.
    fn send_other(&mut self, r: &mut Reader<'_>) {
        let Some(link) = self.peers.pick(r) else {
            return;
        };
        let kind = r.b() % 8;
        let raw = |r: &mut Reader<'_>| {
            let n = usize::from(r.b()) % 40;
            r.take(n)
        };
        let msg = match kind {
            0..=3 => Some(PeerMsg::Overlay(
                one_way::stamp(self.now),
                self.overlay_msg(r),
            )),
            5 => Some(PeerMsg::Node(raw(r))),
            _ => None,
        };
        let end = self.peers.ends.get_mut(&link).expect("picked");
        match (kind, msg) {
            (_, Some(msg)) => {
                end.send_control(&msg);
            }
            (4, None) => {
                let mut who = match r.b() % 6 {
                    4 => node_contact(),
                    5 => end.who,
                    i => identities()[usize::from(i)],
                };
                who.epoch = match r.b() % 4 {
                    0 => 4,
                    1 => 6,
                    _ => who.epoch,
                };
                end.say_ident(who);
            }
            (6, None) => {
                let _ = end.link.send_control(raw(r));
            }
            _ => {
                let _ = end.link.send_data(raw(r));
            }
        }
        self.deliver_cut(link, r);
    }

    /// An overlay message naming the pooled nodes (or any).
    fn overlay_msg(&self, r: &mut Reader<'_>) -> OverlayMsg {
        let p = &self.peers;
        let pools = PoolsView {
            groups: &p.groups,
            contacts: &p.contacts,
            requests: &[],
            tunnels: &[],
            splits: SPLITS,
            oversized: false,
        };
        let contacts = |r: &mut Reader<'_>| (0..r.b() % 5).map(|_| contact(r, &pools)).collect();
        let maybe = |r: &mut Reader<'_>| match r.b() % 2 {
            0 => None,
            _ => Some(contacts(r)),
        };
        match r.b() % 7 {
            0 => OverlayMsg::Join {
                joiner: contact(r, &pools),
            },
            1 => {
                let rows = (0..r.b() % 5).map(|_| contact(r, &pools)).collect();
                OverlayMsg::JoinState {
                    rows,
                    leaves: maybe(r),
                }
            }
            2 => OverlayMsg::Ping {
                leaves: maybe(r),
                // A round trip from the peer's pings: anything up to 255 ms, or none.
                rtt: (r.b() % 2 == 1).then(|| Duration::from_millis(u64::from(r.b()))),
            },
            3 => OverlayMsg::Pong { leaves: maybe(r) },
            4 => OverlayMsg::LeafRequest,
            5 => OverlayMsg::LeafReply {
                leaves: (0..r.b() % 5).map(|_| contact(r, &pools)).collect(),
            },
            _ => OverlayMsg::Leave,
        }
    }

    /// Something happens to a peer's socket: a flush, a graceful close, its end, raw bytes.
    fn link_event(&mut self, r: &mut Reader<'_>) {
        let Some(link) = self.peers.pick(r) else {
            return;
        };
        let end = self.peers.ends.get_mut(&link).expect("picked");
        match r.b() % 6 {
            0 | 1 | 5 => {
                let n = match r.b() {
                    0..=127 => end.unflushed,
                    b => end.unflushed.min(usize::from(b) * 97),
                };
                end.unflushed -= n;
                self.handle(Input::PeerFlushed(link, n));
            }
            2 => {
                end.link.close("bye");
                self.settle();
            }
            3 => {
                self.peers.ends.remove(&link);
                self.peers.over.insert(link);
                self.handle(Input::PeerGone(link));
            }
            _ => {
                let n = usize::from(r.b()) % 48;
                let raw = r.take(n);
                self.handle(Input::PeerData(link, &raw));
            }
        }
    }

    /// Hands the node what a peer's link has to send, the first frame cut in two reads.
    fn deliver_cut(&mut self, link: LinkId, r: &mut Reader<'_>) {
        let Some(frame) = self
            .peers
            .ends
            .get_mut(&link)
            .and_then(|e| e.link.poll_transmit())
        else {
            return self.settle();
        };
        let cut = usize::from(r.b()) % (frame.len() + 1);
        // Nothing else of this link's may come between the two reads.
        self.peers.cutting = Some(link);
        self.handle(Input::PeerData(link, &frame[..cut]));
        self.peers.cutting = None;
        if !self.peers.over.contains(&link) {
            self.handle(Input::PeerData(link, &frame[cut..]));
        }
    }

    /// Shutdown, with peers that behave: flushes, farewells answered, dials answered.
    fn finish(&mut self) {
        self.flush_all();
        self.handle(Input::Shutdown("fuzz over"));
        let linger = Duration::from_millis(500);
        for _ in 0..4 {
            self.flush_all();
            self.advance(linger);
        }
        // Dials nobody answered connect now, to a node that has left.
        while let Some((dial, addr)) = self.peers.dials.pop() {
            let who = identities()
                .into_iter()
                .find(|c| c.addr == addr)
                .unwrap_or(identities()[0]);
            self.open_dialed(dial, who, Manner::from_byte(2));
        }
        for _ in 0..4 {
            self.flush_all();
            self.advance(linger);
        }
        self.clients.assert_all_closed();
        assert_eq!(self.node.client_count(), 0);
        assert_eq!(
            self.node.client_memory_used(),
            0,
            "a memory charge was never released"
        );
        assert_eq!(
            self.peers.stopped, 1,
            "Stopped said {} times",
            self.peers.stopped
        );
        if let Some(l) = self.peers.ends.keys().next() {
            panic!("link {l:?} left open after shutdown");
        }
        assert_eq!(self.node.status().links, 0);
        // Nothing more is sent, however long. (A stopped node may still report events: one
        // that knows nobody says it is alone every heartbeat period.)
        let before = self.peers.outputs;
        self.advance(Duration::from_secs(30));
        assert_eq!(self.peers.outputs, before, "a stopped node goes on");
    }

    /// Reports every byte handed to clients and links as written.
    fn flush_all(&mut self) {
        for (c, n) in self.clients.flush_all() {
            self.handle(Input::ClientFlushed(c, n));
        }
        let links: Vec<(LinkId, usize)> = self
            .peers
            .ends
            .iter_mut()
            .filter(|(_, e)| e.unflushed > 0)
            .map(|(&l, e)| (l, std::mem::take(&mut e.unflushed)))
            .collect();
        for (l, n) in links {
            if !self.peers.over.contains(&l) {
                self.handle(Input::PeerFlushed(l, n));
            }
        }
    }
}

impl Peers {
    fn new_link(&mut self) -> Option<LinkId> {
        if self.next_link >= MAX_LINKS {
            return None;
        }
        self.next_link += 1;
        Some(LinkId(self.next_link))
    }

    /// A link still open on the harness's side, named by the next byte.
    fn pick(&self, r: &mut Reader<'_>) -> Option<LinkId> {
        let b = usize::from(r.byte()?);
        let n = self.ends.len();
        (n > 0).then(|| *self.ends.keys().nth(b % n).expect("in range"))
    }

    /// The next frame a peer's link has for the node.
    fn next_frame(&mut self) -> Option<(LinkId, Bytes)> {
        for (&l, end) in self.ends.iter_mut() {
            if self.cutting == Some(l) {
                continue;
            }
            if let Some(frame) = end.link.poll_transmit() {
                return Some((l, frame));
            }
        }
        None
    }
}
