//! The harness's end of one link to the fuzzed node: a real [`Link`] (plain, or sealed with
//! the network key), which does the HELLO or the signed handshake, says IDENT, answers the
//! node's overlay probes as a live node would, and checks everything the node sends on it.
//!
//! Checked here, for every link: every frame the node sends is one the peer's link reads
//! (it never fails on the node's bytes: no bad frame, record, item or size); every control
//! message parses as a message between nodes, the first being the node's IDENT (its own
//! contact, once), no overlay or node message before it; every node message (on either
//! channel) decodes; the node replies to a request at most as often as it was asked it.

use crate::link::handshake::HandshakeError;
use crate::link::{Link, LinkConfig, LinkError, LinkEvent, LinkInput, NetworkKey, ToSign};
use crate::mesh::wire::{self as peer_wire, PeerMsg};
use crate::node::wire::{self, NodeMsg, Wanted};
use crate::overlay::{Contact, NodeId, OverlayMsg};
use crate::time::Instant;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// Most ids of each kind remembered for peers to answer with.
const MAX_NOTED: usize = 16;

/// What the peers learned from the node, shared by all links.
#[derive(Default)]
pub(super) struct Notes {
    /// The node's keys for its own requests and tunnels (from its anycasts and
    /// confirmations): what replies and tunnel traffic to it name.
    pub(super) requests: Vec<u64>,
    pub(super) tunnels: Vec<u64>,
    /// Requests peers anycast to the node, per (origin, origin's id); the node's replies.
    pub(super) asked: BTreeMap<(NodeId, u64), u32>,
    answered: BTreeMap<(NodeId, u64), u32>,
}

impl Notes {
    /// Replies the node sent peers.
    pub(super) fn answered(&self) -> u32 {
        self.answered.values().sum()
    }

    fn note(ids: &mut Vec<u64>, id: u64) {
        if !ids.contains(&id) {
            if ids.len() == MAX_NOTED {
                ids.remove(0);
            }
            ids.push(id);
        }
    }
}

/// The harness's end of a link.
pub(super) struct PeerEnd {
    pub(super) link: Link,
    /// Who this end says it is.
    pub(super) who: Contact,
    /// It says IDENT as soon as its link is up (else only when the fuzzer makes it).
    auto_ident: bool,
    /// Its IDENT went out.
    ident_sent: bool,
    /// It answers pings, joins and leaf requests, and its join answer names other peers.
    responsive: bool,
    /// Its HELLO names another network or version: the node refuses it.
    foreign: bool,
    /// The node's IDENT came.
    heard_ident: bool,
    /// The node's CLOSE came: nothing more may follow it.
    pub(super) node_closed: bool,
    /// Bytes the node handed for this link and the harness has not reported written.
    pub(super) unflushed: usize,
}

/// How the harness's end of a new link behaves, chosen by the fuzzer.
pub(super) struct Manner {
    pub(super) say_ident: bool,
    pub(super) responsive: bool,
    pub(super) foreign: bool,
}

impl Manner {
    /// Mostly a well-behaved node.
    pub(super) fn from_byte(b: u8) -> Manner {
        Manner {
            say_ident: !b.is_multiple_of(8),
            responsive: b % 4 != 1,
            foreign: b % 32 == 31,
        }
    }
}

impl PeerEnd {
    /// A link's other end: `initiator` if the node accepted it.
    pub(super) fn new(
        key: Option<&std::sync::Arc<NetworkKey>>,
        mut cfg: LinkConfig,
        initiator: bool,
        seed: u8,
        who: Contact,
        manner: Manner,
    ) -> PeerEnd {
        use crate::link::Role;
        if manner.foreign {
            if seed.is_multiple_of(2) {
                cfg.network = "another network".into();
            } else {
                cfg.version += 1;
            }
        }
        let role = if initiator {
            Role::Initiator
        } else {
            Role::Responder
        };
        let link = match key {
            Some(key) => Link::new(role, key.clone(), cfg, [seed; 32], Instant::ZERO),
            None => Link::plain(role, cfg, Instant::ZERO),
        };
        PeerEnd {
            link,
            who,
            auto_ident: manner.say_ident,
            ident_sent: false,
            responsive: manner.responsive,
            foreign: manner.foreign,
            heard_ident: false,
            node_closed: false,
            unflushed: 0,
        }
    }

    /// Queues a message between nodes as a control message (ignored if the link cannot
    /// take it: not open, closing, full, too large); true if queued.
    pub(super) fn send_control(&mut self, msg: &PeerMsg) -> bool {
        self.link.send_control(peer_wire::encode(msg)).is_ok()
    }

    /// Says IDENT as `c`: the node knows this end as the first it hears (a second one is
    /// a violation).
    pub(super) fn say_ident(&mut self, c: Contact) {
        if self.send_control(&PeerMsg::Ident(0, c)) && !self.ident_sent {
            self.ident_sent = true;
            self.who = c;
        }
    }

    /// Handles what the link reports after the node's bytes: signs, says IDENT, answers,
    /// checks.
    pub(super) fn process(
        &mut self,
        key: Option<&NetworkKey>,
        node: Contact,
        others: &[Contact],
        notes: &mut Notes,
    ) {
        while let Some(event) = self.link.poll_output() {
            match event {
                LinkEvent::Sign(to_sign) => {
                    let key = key.expect("only a sealed link signs");
                    let signature = signature(key, &to_sign);
                    self.link
                        .handle(Instant::ZERO, LinkInput::Signed(&signature));
                }
                LinkEvent::Established => {
                    if self.auto_ident {
                        self.say_ident(self.who);
                    }
                }
                LinkEvent::Control(bytes) => self.on_control(&bytes, node, others, notes),
                LinkEvent::Data(bytes) => self.on_node_msg(&bytes, node, notes),
                LinkEvent::PeerClosed(_) => {
                    // As a node does: what it still has goes out, then its own CLOSE.
                    self.node_closed = true;
                    self.link.close("closed");
                }
                LinkEvent::Closed(e) => self.on_closed(e),
            }
        }
    }

    fn on_closed(&mut self, e: LinkError) {
        match e {
            LinkError::ClosedByPeer(_) => self.node_closed = true,
            // The node closed the socket: after a handshake it refused, a record it could
            // not open, or a violation of ours; its end is the one that says why.
            LinkError::Truncated | LinkError::Handshake(HandshakeError::PeerClosed) => {}
            LinkError::Handshake(HandshakeError::Network | HandshakeError::Version { .. })
                if self.foreign => {}
            e => panic!("the node sent bytes its peer's link refused: {e}"),
        }
    }

    fn on_control(&mut self, bytes: &Bytes, node: Contact, others: &[Contact], notes: &mut Notes) {
        let msg = peer_wire::decode_bytes(bytes)
            .unwrap_or_else(|e| panic!("the node sent a control message that does not parse: {e}"));
        if let PeerMsg::Ident(_, c) = msg {
            assert!(!self.heard_ident, "the node said IDENT twice");
            assert_eq!(c, node, "the node's IDENT is not its contact");
            self.heard_ident = true;
            return;
        }
        assert!(self.heard_ident, "the node sent {msg:?} before its IDENT");
        match msg {
            PeerMsg::Overlay(clock, m) => self.on_overlay(clock, m, others),
            PeerMsg::Node(b) => self.on_node_msg(&b, node, notes),
            PeerMsg::Ident(..) => unreachable!("handled above"),
        }
    }

    /// Answers the node's overlay messages as a live node would, at once (so stamped with
    /// the clock of the message it answers: the harness delivers without delay).
    fn on_overlay(&mut self, clock: u64, m: OverlayMsg, others: &[Contact]) {
        if matches!(m, OverlayMsg::Leave) {
            self.link.close("you left");
            return;
        }
        if !self.responsive {
            return;
        }
        let answer = match m {
            OverlayMsg::Ping { .. } => OverlayMsg::Pong { leaves: None },
            OverlayMsg::Join { .. } => OverlayMsg::JoinState {
                rows: Vec::new(),
                leaves: Some(
                    others
                        .iter()
                        .filter(|c| c.id != self.who.id)
                        .copied()
                        .collect(),
                ),
            },
            OverlayMsg::LeafRequest => OverlayMsg::LeafReply { leaves: Vec::new() },
            _ => return,
        };
        self.send_control(&PeerMsg::Overlay(clock, answer));
    }

    fn on_node_msg(&mut self, bytes: &Bytes, node: Contact, notes: &mut Notes) {
        let msg = wire::decode(bytes)
            .unwrap_or_else(|e| panic!("the node sent a node message that does not decode: {e}"));
        match msg {
            // The node's own requests and tunnel builds (not those it passes on).
            NodeMsg::Anycast(a) if a.origin.id == node.id => match a.wanted {
                Wanted::Request(_) => Notes::note(&mut notes.requests, a.id),
                Wanted::Tunnel => Notes::note(&mut notes.tunnels, a.id),
            },
            NodeMsg::TunnelConfirm { peer, .. } => Notes::note(&mut notes.tunnels, peer),
            NodeMsg::Reply { id, .. } => {
                let key = (self.who.id, id);
                let n = notes.answered.entry(key).or_default();
                *n += 1;
                let asked = notes.asked.get(&key).copied().unwrap_or(0);
                assert!(
                    *n <= asked,
                    "reply {n} to request {id} of {:?}, asked {asked} times",
                    self.who.id
                );
            }
            _ => {}
        }
    }
}

/// A signature of the network key over `to_sign`. An RSA private-key operation takes
/// milliseconds, a thousand fuzz runs' worth; but a handshake's transcript depends only on
/// both ephemeral keys, which come from fixed seeds here, so the same few transcripts come
/// back run after run. Each is signed once per process, with a salt drawn from the message
/// itself: the cache changes how fast a run is, never what it does.
pub(super) fn signature(key: &NetworkKey, to_sign: &ToSign) -> Vec<u8> {
    static CACHE: Mutex<BTreeMap<[u8; 33], Vec<u8>>> = Mutex::new(BTreeMap::new());
    assert_eq!(
        to_sign.key,
        key.id(),
        "a signature asked of a key nobody holds"
    );
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    if cache.len() >= 1024 {
        cache.clear();
    }
    cache
        .entry(to_sign.message)
        .or_insert_with(|| {
            use sha2::Digest;
            let seed: [u8; 32] = sha2::Sha256::digest(to_sign.message).into();
            key.sign_seeded(seed, &to_sign.message)
        })
        .clone()
}
