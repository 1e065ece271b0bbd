//! The mesh: this node's links to other nodes, and the overlay that runs over them.
//!
//! The [`Overlay`] names peers by [`Contact`] (id and address). The mesh turns that into
//! links: it keeps one identified link per peer, asks the driver to dial an address when a
//! peer has none ([`MeshOutput::Dial`]), holds the messages for it until the link is up and
//! the peer has said who it is, and drops them (counted) if the dial fails or someone else
//! answers. Links are [`Link`]s: authenticated and encrypted with the network key, or plain
//! in simulations of many nodes.
//!
//! - Every link starts with IDENT both ways: the peer's id and the address it listens at.
//!   Messages before it are a violation; the link is closed.
//! - Two nodes that dial each other at once end up with two links; both keep the one dialed
//!   by the smaller id and close the other, so they agree without talking.
//! - A link's liveness is the overlay's business (heartbeats): a closed link is simply
//!   redialed by the next message, so a broken connection is not a dead node.
//! - Links nobody used for `link_idle` are closed (peers probed once and not kept).
//! - While the node knows nobody, its seeds are dialed again every heartbeat period.

pub mod discovery;
pub mod wire;

#[cfg(test)]
mod tests;

use crate::link::{Link, LinkConfig, LinkEvent, NetworkKey, Role};
use crate::overlay::{Contact, NodeId, Overlay, OverlayConfig, OverlayEvent, OverlayMsg};
use crate::time::Instant;
use crate::timer::Timers;
use bytes::Bytes;
use discovery::{Discovery, DiscoveryConfig};
use rand::rngs::ChaCha8Rng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use wire::PeerMsg;

/// A map for lookups only (never iterated where order could reach an output), hashed with
/// a fixed seed so that no OS randomness is involved.
type Map<K, V> = hashbrown::HashMap<K, V, foldhash::fast::FixedState>;

/// A connection to another node, named by the driver (like [`crate::ConnId`] for clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub u64);

/// A dial the node asked for, named by the node; the driver answers with the link it
/// opened or with the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DialId(pub u64);

/// How links prove membership.
#[derive(Debug, Clone)]
pub enum Security {
    /// The network's RSA key signs every handshake; records are sealed.
    Rsa(Arc<NetworkKey>),
    /// No cryptography (see [`Link::plain`]): for simulations only.
    Plain,
}

/// The mesh's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshConfig {
    /// This node's id; `None` draws one from the seed.
    pub id: Option<NodeId>,
    /// The address other nodes dial to reach this one (the driver's peer listener).
    pub listen: SocketAddr,
    /// This start's incarnation: it must grow from one start of an id to the next, so that
    /// peers tell news of this start from news of an earlier one. The core reads no clock:
    /// the tokio driver fills in its boot time in milliseconds when this is 0.
    pub epoch: u64,
    /// Nodes to join through; retried while the node knows nobody.
    pub seeds: Vec<SocketAddr>,
    /// The overlay's timers and sizes.
    pub overlay: OverlayConfig,
    /// The links' bounds and network name.
    pub link: LinkConfig,
    /// Most links and dials at once; a message that would need another is dropped.
    pub max_links: usize,
    /// Most inbound links still in their handshake; a new one beyond it closes the oldest.
    /// Anyone can connect to the peer port and say nothing: without this, strangers would
    /// hold every link slot until their handshakes timed out, and genuine nodes would be
    /// refused. A genuine handshake takes milliseconds, so it completes before it is oldest.
    pub max_inbound_handshakes: usize,
    /// Most inbound links from one source address still in their handshake; a new one
    /// beyond it is refused at once (counted in `handshakes_refused_per_addr`). One host's
    /// flood then holds at most this many of the slots above, and the oldest of a genuine
    /// node's are not evicted by it. Nodes sharing an address (one host, one NAT) should
    /// not need more at once: a genuine handshake takes milliseconds.
    pub max_inbound_handshakes_per_addr: usize,
    /// Messages held for a peer while its link comes up; more are dropped.
    pub max_pending: usize,
    /// A link with no message either way for this long is closed.
    pub link_idle: Duration,
    /// A side of a link that closed reads on for at most this long, until the peer closes
    /// its own (what the peer sent before it heard of the close is not lost); a leaving
    /// node goes on passing on what reaches it for at most this long, until every peer
    /// has closed its side. Keep it under the driver's shutdown grace.
    pub close_linger: Duration,
    /// The multicast trees' settings.
    pub scribe: crate::scribe::ScribeConfig,
    /// Beacons to find nodes of the network without seeds; `None`: none sent or heeded.
    pub discovery: Option<DiscoveryConfig>,
}

impl MeshConfig {
    /// Defaults for a node reachable at `listen`, of network `network`.
    pub fn new(network: &str, listen: SocketAddr) -> MeshConfig {
        MeshConfig {
            id: None,
            listen,
            epoch: 0,
            seeds: Vec::new(),
            overlay: OverlayConfig::default(),
            link: LinkConfig {
                network: network.to_string(),
                ..LinkConfig::default()
            },
            max_links: 1024,
            max_inbound_handshakes: 64,
            max_inbound_handshakes_per_addr: 8,
            max_pending: 64,
            link_idle: Duration::from_secs(60),
            close_linger: Duration::from_millis(1500),
            scribe: crate::scribe::ScribeConfig::default(),
            discovery: None,
        }
    }
}

impl MeshConfig {
    /// Checks the settings: a zero period or bound would spin or refuse everything.
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        use crate::ConfigError::Zero;
        let o = &self.overlay;
        for (zero, name) in [
            (self.max_links == 0, "max_links"),
            (self.max_inbound_handshakes == 0, "max_inbound_handshakes"),
            (
                self.max_inbound_handshakes_per_addr == 0,
                "max_inbound_handshakes_per_addr",
            ),
            (self.link_idle.is_zero(), "link_idle"),
            (o.heartbeat_period.is_zero(), "heartbeat_period"),
            (o.heartbeat_misses == 0, "heartbeat_misses"),
            (o.leaf_set_size == 0, "leaf_set_size"),
        ] {
            if zero {
                return Err(Zero(name));
            }
        }
        Ok(())
    }
}

/// What the mesh asks of its driver (through the node's outputs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshOutput {
    /// Open a TCP connection to `addr`; report [`crate::Input::PeerConnected`] with this
    /// dial, or [`crate::Input::DialFailed`].
    Dial(DialId, SocketAddr),
    /// Write these bytes to the link's socket, after everything before.
    Transmit(LinkId, Bytes),
    /// Close the link's socket once everything before is written.
    Close(LinkId),
    /// Sign this for the link's handshake, off the node's thread; answer with
    /// [`Mesh::on_signed`].
    Sign(LinkId, crate::link::ToSign),
    /// Send a discovery beacon: to `to`, or (`None`) to wherever the driver looks for
    /// nodes (the well-known ports on this host, the local subnet if asked).
    Beacon {
        /// One address (an answer), or everywhere discovery looks.
        to: Option<SocketAddr>,
        /// The beacon.
        data: Bytes,
    },
    /// Something happened.
    Event(MeshEvent),
}

/// Which queue of a link a node message takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Small and urgent (tree maintenance, replies, window updates): ahead of all data, in
    /// the link's control queue, which refuses more when full.
    Control,
    /// Bulk (broadcasts, events, requests): behind control, in the link's data queue, which
    /// refuses more when it holds `max_data_queue` bytes.
    Data,
    /// Tunnel data: like data, but never refused; every tunnel's window bounds it.
    Stream,
}

/// Why a node message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The peer's queue for this class is full (the link is slower than the traffic).
    Full,
    /// No link could take it: the node is leaving, too many links, or too many messages
    /// waiting for the peer's link to come up.
    NoLink,
}

/// What the mesh hands its node, besides outputs for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A node message from a peer, which said who it is.
    Message(Contact, Bytes),
    /// The peer has no link to this node any more (closed, failed, or it left). Its next
    /// message would come on a new link; state bound to the old one (tunnels) is over.
    /// `failed`: it ended by an error or a cut, not a close (the peer may be dead).
    Unlinked {
        /// The peer.
        node: NodeId,
        /// Ended by an error or a cut.
        failed: bool,
    },
    /// A link to the peer is up and it said who it is.
    Linked(NodeId),
    /// A dial to reach the peer failed: it is probably gone. The node messages that waited
    /// for that link come back, so that the node may route them another way.
    Unreachable(NodeId, Vec<Bytes>),
    /// The overlay found the peer dead, or it left.
    Down(NodeId),
}

/// What the mesh reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshEvent {
    /// The overlay has been quiet for its convergence period.
    Converged {
        /// Peers known.
        peers: usize,
    },
    /// A peer was found dead or left.
    PeerDown(NodeId),
    /// A link's handshake failed: another network, another key, another version, garbage,
    /// or the peer hung up on it (it may have refused us). Worth a warning: nodes that
    /// should be one network are not.
    HandshakeFailed {
        /// The link.
        link: LinkId,
        /// The address this node dialed, if it dialed (the driver knows an accepted
        /// link's remote address).
        addr: Option<SocketAddr>,
        /// Why, for the log.
        reason: String,
    },
    /// Every seed that answered refused this node's handshake and nobody else is known:
    /// said on each retry. The node does not become ready (open its relay port) meanwhile,
    /// rather than serve quietly as a network of one.
    SeedsRefused {
        /// Each refusing seed and its reason.
        reasons: Vec<(SocketAddr, String)>,
    },
    /// A link is up and its peer said who it is.
    LinkUp {
        /// The link.
        link: LinkId,
        /// The peer.
        peer: NodeId,
    },
    /// An established link ended, with the reason.
    LinkClosed {
        /// The link.
        link: LinkId,
        /// The peer, if it had said who it is.
        peer: Option<NodeId>,
        /// Why, for the log.
        reason: String,
    },
    /// A dial failed.
    DialFailed(SocketAddr),
    /// Discovery heard a node of this network it did not know, and joins through it.
    Discovered {
        /// The node.
        peer: NodeId,
        /// Its peer address.
        addr: SocketAddr,
    },
    /// The node knows nobody although it was given seeds or joined through someone: said
    /// once per heartbeat period while it lasts. Its seeds are retried each time, and the
    /// driver may offer others ([`crate::Input::JoinVia`]).
    Alone,
}

/// Counters of the mesh.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshStats {
    /// Links whose handshake completed and whose peer identified itself.
    pub links_up: u64,
    /// Links closed for a failed handshake or a broken link protocol.
    pub links_failed: u64,
    /// Links closed as duplicates of another to the same peer.
    pub links_duplicate: u64,
    /// Links closed for idleness.
    pub links_idle: u64,
    /// Connections refused at once: too many links, or the node is leaving.
    pub links_refused: u64,
    /// Inbound links closed in their handshake to make room for a newer one.
    pub handshakes_evicted: u64,
    /// Inbound links refused because their source address had
    /// [`MeshConfig::max_inbound_handshakes_per_addr`] handshakes in flight.
    pub handshakes_refused_per_addr: u64,
    /// Signatures made with the network key by links that are gone (see
    /// [`Mesh::signatures`] for every link's).
    pub signatures_closed_links: u64,
    /// Dials that failed.
    pub dials_failed: u64,
    /// Messages dropped: queue full, dial failed, link limit, or another node answered.
    pub messages_dropped: u64,
    /// Node messages refused because the peer's data queue was full.
    pub data_refused: u64,
    /// Messages from peers that did not parse or broke the link protocol.
    pub bad_messages: u64,
    /// Discovery beacons sent (answers included).
    pub beacons_sent: u64,
    /// Beacons heard that were garbage or another network's.
    pub beacons_foreign: u64,
    /// Joins through a node that discovery found.
    pub discovered: u64,
}

struct PeerLink {
    link: Link,
    dialed: bool,
    /// The address dialed, for links this node opened.
    addr: Option<SocketAddr>,
    /// Set by the peer's IDENT.
    peer: Option<Contact>,
    /// Who we dialed this link to reach, if anyone in particular.
    expect: Option<NodeId>,
    /// Messages for `expect`, held until the peer identifies itself.
    pending: Vec<(Class, Bytes)>,
    /// Join the overlay through this peer once it identifies itself.
    join: bool,
    /// Broke the protocol: closing, and ignored meanwhile.
    bad: bool,
    /// Ended by an error or a cut rather than a close.
    failed: bool,
    /// This side closed it (it waits for the peer's CLOSE, up to `close_linger`).
    closing: bool,
    /// The handshake deadline, until the link is up.
    deadline: Option<Instant>,
    /// In the `dirty` queue.
    queued: bool,
    last_used: Instant,
    /// Bytes handed to the driver and not yet reported written.
    inflight: usize,
}

struct Dial {
    addr: SocketAddr,
    expect: Option<NodeId>,
    pending: Vec<(Class, Bytes)>,
    join: bool,
}

/// The driver is handed a link's frames only while less than this is in flight, so that
/// what is queued stays in the link, control ahead of data, until the socket can take it.
const BATCH: usize = 256 << 10;

/// Queues a message on a link in the queue its class says.
fn put(link: &mut Link, class: Class, bytes: Bytes) -> Result<(), Refused> {
    let sent = match class {
        Class::Control => link.send_control(bytes),
        Class::Data => link.send_data(bytes),
        Class::Stream => link.send_data_unbounded(bytes),
    };
    sent.map_err(|e| match e {
        crate::link::SendError::Full => Refused::Full,
        _ => Refused::NoLink,
    })
}

/// The mesh's deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum MeshTimer {
    /// A link's handshake must be done by then.
    Handshake(LinkId),
    /// Idle links are closed.
    Sweep,
    /// A link whose side closed stops waiting for the peer's CLOSE.
    Linger(LinkId),
    /// A leaving node stops waiting for its peers to close their sides.
    Left,
    /// The next discovery beacon.
    Beacon,
}

/// The mesh state machine, owned and drained by the node.
pub struct Mesh {
    cfg: MeshConfig,
    security: Security,
    overlay: Overlay,
    rng: ChaCha8Rng,
    /// Boxed: a link is a kilobyte, and the table's slots stay small and cache-friendly.
    links: Map<LinkId, Box<PeerLink>>,
    /// Inbound links in their handshake, oldest first (some may be open or gone since).
    inbound_handshakes: VecDeque<(LinkId, Option<IpAddr>)>,
    /// The identified link chosen for each peer.
    by_id: Map<NodeId, LinkId>,
    dials: Map<DialId, Dial>,
    /// The dial in flight toward each peer.
    dialing: Map<NodeId, DialId>,
    next_dial: u64,
    /// Links with frames to transmit.
    /// (A queue with a flag on each link rather than a set: no allocation per event.)
    dirty: VecDeque<LinkId>,
    /// Handshake deadlines of links not yet up, and the idle sweep.
    timers: Timers<MeshTimer>,
    outputs: VecDeque<MeshOutput>,
    next_seed_try: Instant,
    /// Leaving: farewells go out on open links only, nothing is dialed.
    leaving: bool,
    /// It was given somewhere to join (seeds, or a join through an address).
    wants_peers: bool,
    /// Seeds whose last handshake failed, with the reason; cleared when one is joined.
    seed_refusals: std::collections::BTreeMap<SocketAddr, String>,
    /// What the node is handed: peers' messages and the news of links and peers.
    inbox: VecDeque<Incoming>,
    /// Peers whose links are kept however idle (a tunnel runs over them), with a count.
    pinned: std::collections::BTreeMap<NodeId, u32>,
    /// Beacons: when to send them, whom this node answered lately.
    discovery: Option<Discovery>,
    stats: MeshStats,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("id", &self.overlay.id())
            .field("links", &self.links.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Mesh {
    /// A mesh that dials its seeds at once.
    pub fn new(cfg: MeshConfig, security: Security, seed: [u8; 32], now: Instant) -> Mesh {
        let mut rng = ChaCha8Rng::from_seed(seed);
        let id = cfg
            .id
            .unwrap_or_else(|| NodeId(rng.next_u64() as u128 | (u128::from(rng.next_u64()) << 64)));
        let own = Contact::new(id, cfg.listen, cfg.epoch);
        let overlay = Overlay::new(own, cfg.overlay.clone(), now);
        let mut mesh = Mesh {
            overlay,
            security,
            rng,
            links: Map::default(),
            inbound_handshakes: VecDeque::new(),
            by_id: Map::default(),
            dials: Map::default(),
            dialing: Map::default(),
            next_dial: 0,
            dirty: VecDeque::new(),
            timers: {
                let mut t = Timers::default();
                t.set(MeshTimer::Sweep, now + cfg.link_idle / 2);
                if cfg.discovery.is_some() {
                    t.set(MeshTimer::Beacon, now);
                }
                t
            },
            outputs: VecDeque::new(),
            next_seed_try: now,
            leaving: false,
            wants_peers: !cfg.seeds.is_empty(),
            seed_refusals: std::collections::BTreeMap::new(),
            inbox: VecDeque::new(),
            pinned: std::collections::BTreeMap::new(),
            discovery: cfg
                .discovery
                .clone()
                .map(|d| Discovery::new(d, &cfg.link.network, cfg.link.version)),
            stats: MeshStats::default(),
            cfg,
        };
        mesh.try_seeds(now);
        mesh
    }

    /// The overlay, for inspection (leaf set, routing, convergence).
    pub fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    /// Counters.
    pub fn stats(&self) -> &MeshStats {
        &self.stats
    }

    /// Signatures made with the network key, every link's so far: one per genuine link,
    /// none for a peer that never proved it holds the key.
    #[allow(clippy::disallowed_methods)] // a sum: order-free
    pub fn signatures(&self) -> u64 {
        self.stats.signatures_closed_links
            + self
                .links
                .values()
                .map(|pl| pl.link.stats().signatures)
                .sum::<u64>()
    }

    /// Links open or opening.
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// Bytes of data queued in links and not yet sealed for their sockets.
    #[allow(clippy::disallowed_methods)] // a sum: order-free
    pub fn queued_bytes(&self) -> usize {
        self.links.values().map(|pl| pl.link.data_queued()).sum()
    }

    /// True while seeds refused this node's handshake and it knows nobody: it must not
    /// pass for a network of one.
    pub fn refused_by_seeds(&self) -> bool {
        !self.seed_refusals.is_empty() && self.overlay.peer_count() == 0
    }

    /// Sends a node message to a peer: on its link, or once the link dialed for it is up.
    pub fn send(
        &mut self,
        now: Instant,
        to: Contact,
        class: Class,
        bytes: Bytes,
    ) -> Result<(), Refused> {
        // Control messages share their channel with IDENT and the overlay: tagged.
        let bytes = match class {
            Class::Control => wire::encode(&PeerMsg::Node(bytes)),
            Class::Data | Class::Stream => bytes,
        };
        self.send_as(now, to, class, bytes)
    }

    /// What the mesh has for the node: peers' messages, links lost, peers down.
    #[must_use]
    pub fn poll_incoming(&mut self) -> Option<Incoming> {
        self.inbox.pop_front()
    }

    /// Whether [`Mesh::poll_incoming`] has something.
    pub fn has_incoming(&self) -> bool {
        !self.inbox.is_empty()
    }

    /// Keeps the link to `peer` however idle, until as many [`Mesh::unpin`]s.
    pub fn pin(&mut self, peer: NodeId) {
        *self.pinned.entry(peer).or_default() += 1;
    }

    /// Undoes one [`Mesh::pin`].
    pub fn unpin(&mut self, peer: NodeId) {
        if let Some(n) = self.pinned.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                self.pinned.remove(&peer);
            }
        }
    }

    /// The driver wrote `n` bytes of a link's frames: it may be handed more.
    pub fn on_flushed(&mut self, id: LinkId, n: usize) {
        if let Some(pl) = self.links.get_mut(&id) {
            pl.inflight = pl.inflight.saturating_sub(n);
            self.mark(id);
        }
    }

    /// The id of the identified peer of a link, if any.
    pub fn peer_of(&self, id: LinkId) -> Option<Contact> {
        self.links.get(&id).and_then(|pl| pl.peer)
    }

    /// Joins through the node at `addr` (discovery found it, or an operator named it).
    pub fn join_via(&mut self, now: Instant, addr: SocketAddr) {
        if addr == self.cfg.listen {
            return;
        }
        self.wants_peers = true;
        if let Some(c) = self.link_to_addr(addr) {
            self.overlay.join(now, c);
            self.pump(now);
        } else {
            self.dial(addr, None, Vec::new(), true);
        }
    }

    /// A datagram arrived on the discovery socket from `from`: maybe a beacon of a node of
    /// this network that this node does not know yet.
    pub fn on_beacon(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let own = self.overlay.id();
        let peers = self.overlay.peer_count();
        let Some(d) = self.discovery.as_mut() else {
            return;
        };
        if self.leaving {
            return;
        }
        let overlay = &self.overlay;
        let verdict = match d.heard(now, from, data, own, peers, |id| {
            overlay.contact_of(id).is_some()
        }) {
            Ok(v) => v,
            Err(discovery::Ignored::Known) => return,
            Err(_) => {
                self.stats.beacons_foreign += 1;
                return;
            }
        };
        if verdict.answer {
            self.send_beacon(now, Some(from));
        }
        if let Some(addr) = verdict.join {
            self.stats.discovered += 1;
            if let Ok(b) = discovery::Beacon::decode(data) {
                self.outputs
                    .push_back(MeshOutput::Event(MeshEvent::Discovered {
                        peer: b.id,
                        addr,
                    }));
            }
            self.join_via(now, addr);
        }
    }

    /// Sends this node's beacon (`to` one address, or everywhere), and schedules the next
    /// round when it is the periodic one.
    fn send_beacon(&mut self, now: Instant, to: Option<SocketAddr>) {
        let settled = self.overlay.peer_count() > 0 && self.overlay.is_converged();
        let Some(d) = self.discovery.as_ref() else {
            return;
        };
        if self.leaving {
            return;
        }
        if to.is_none() {
            let next = d.next_after(now, settled);
            self.timers.set(MeshTimer::Beacon, next);
        }
        let data = d.beacon(
            self.overlay.id(),
            self.cfg.listen,
            self.overlay.peer_count(),
        );
        self.stats.beacons_sent += 1;
        self.outputs.push_back(MeshOutput::Beacon { to, data });
    }

    /// Leaves the overlay for good: peers are told, and repair at once.
    ///
    /// The node does not vanish with its farewells: what its peers sent it before they
    /// heard of the leave is still on its way, and it passes that on (it is no message's
    /// destination any more) until every peer has closed its side of their link, which
    /// each does on reading the farewell, or `close_linger` has passed. Then it closes its
    /// own sides. Dials in flight and links not yet identified are not waited for.
    pub fn leave(&mut self, now: Instant) {
        if self.leaving {
            return;
        }
        self.leaving = true;
        self.overlay.leave();
        self.pump(now);
        for id in self.sorted_links() {
            if self.links.get(&id).is_some_and(|pl| pl.peer.is_none()) {
                self.close_link(now, id, "leaving");
            }
        }
        self.timers
            .set(MeshTimer::Left, now + self.cfg.close_linger);
        self.finish_leave_if_done(now);
    }

    /// A leaving node's peers have all closed their sides: nothing more is coming, and
    /// its own sides close (at once, or when they have nothing more to send).
    fn finish_leave_if_done(&mut self, now: Instant) {
        #[allow(clippy::disallowed_methods)] // any(): the order cannot show
        let waiting = self
            .links
            .values()
            .any(|pl| pl.peer.is_some() && !pl.closing && !pl.link.is_peer_closed());
        if self.leaving && !waiting {
            self.timers.cancel(MeshTimer::Left);
            for id in self.sorted_links() {
                self.close_link(now, id, "left");
            }
        }
    }

    /// The links' ids, in order (for work whose outcome must not hang on hash order).
    fn sorted_links(&self) -> Vec<LinkId> {
        #[allow(clippy::disallowed_methods)] // sorted below
        let mut ids: Vec<LinkId> = self.links.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// The driver opened a connection: accepted (`dial` is `None`) or answering a dial.
    pub fn on_connected(
        &mut self,
        now: Instant,
        id: LinkId,
        dial: Option<DialId>,
        from: Option<SocketAddr>,
    ) {
        let d = dial.and_then(|d| self.dials.remove(&d));
        // Anyone may connect to the peer listener: unauthenticated links are bounded too.
        if self.leaving || (d.is_none() && self.links.len() >= self.cfg.max_links) {
            self.stats.links_refused += 1;
            if let Some(e) = d.and_then(|d| d.expect) {
                self.dialing.remove(&e);
            }
            self.outputs.push_back(MeshOutput::Close(id));
            return;
        }
        if let Some(d) = &d
            && let Some(e) = d.expect
        {
            self.dialing.remove(&e);
        }
        if dial.is_none() && !self.admit_inbound_handshake(now, id, from.map(|a| a.ip())) {
            self.stats.handshakes_refused_per_addr += 1;
            self.outputs.push_back(MeshOutput::Close(id));
            return;
        }
        let role = if dial.is_some() {
            Role::Initiator
        } else {
            Role::Responder
        };
        let link = match &self.security {
            Security::Rsa(key) => {
                let mut seed = [0u8; 32];
                self.rng.fill_bytes(&mut seed);
                Link::new(role, key.clone(), self.cfg.link.clone(), seed, now)
            }
            Security::Plain => Link::plain(role, self.cfg.link.clone(), now),
        };
        let addr = d.as_ref().map(|d| d.addr);
        let (expect, pending, join) =
            d.map_or((None, Vec::new(), false), |d| (d.expect, d.pending, d.join));
        let deadline = link.poll_timeout();
        if let Some(d) = deadline {
            self.timers.set(MeshTimer::Handshake(id), d);
        }
        self.links.insert(
            id,
            Box::new(PeerLink {
                link,
                dialed: dial.is_some(),
                addr,
                peer: None,
                expect,
                pending,
                join,
                bad: false,
                failed: false,
                closing: false,
                deadline,
                queued: false,
                last_used: now,
                inflight: 0,
            }),
        );
        self.mark(id);
    }

    /// Bytes from a link's socket, in order.
    pub fn on_data(&mut self, now: Instant, id: LinkId, data: &[u8]) {
        let Some(pl) = self.links.get_mut(&id) else {
            return;
        };
        pl.link.handle_bytes(data);
        self.drain_link(now, id);
        self.pump(now);
    }

    /// The signature a link asked for ([`MeshOutput::Sign`]).
    pub fn on_signed(&mut self, now: Instant, id: LinkId, signature: &[u8]) {
        let Some(pl) = self.links.get_mut(&id) else {
            return;
        };
        pl.link.signed(signature);
        self.drain_link(now, id);
        self.pump(now);
    }

    /// A link's socket closed under us.
    pub fn on_gone(&mut self, now: Instant, id: LinkId) {
        if let Some(pl) = self.links.get_mut(&id) {
            pl.link.handle_eof();
            self.drain_link(now, id);
            self.remove_link(id);
            self.pump(now);
        }
    }

    /// A dial failed: what was held for it is dropped.
    pub fn on_dial_failed(&mut self, now: Instant, dial: DialId) {
        let Some(d) = self.dials.remove(&dial) else {
            return;
        };
        self.stats.dials_failed += 1;
        let returned = self.node_messages(d.pending);
        if let Some(e) = d.expect {
            self.dialing.remove(&e);
            self.inbox.push_back(Incoming::Unreachable(e, returned));
        } else {
            self.stats.messages_dropped += returned.len() as u64;
        }
        self.outputs
            .push_back(MeshOutput::Event(MeshEvent::DialFailed(d.addr)));
        self.pump(now);
    }

    /// Time passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.overlay.handle_timeout(now);
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                MeshTimer::Handshake(id) => {
                    if let Some(pl) = self.links.get_mut(&id) {
                        pl.link.handle_timeout(now);
                    }
                    self.drain_link(now, id);
                }
                MeshTimer::Sweep => self.sweep(now),
                MeshTimer::Linger(id) => {
                    if let Some(pl) = self.links.get_mut(&id) {
                        pl.link.abandon();
                    }
                    self.drain_link(now, id);
                }
                MeshTimer::Left => {
                    // Peers that did not close in time are not waited for any longer.
                    for id in self.sorted_links() {
                        if let Some(pl) = self.links.get_mut(&id) {
                            pl.link.close_abruptly("left");
                        }
                        self.mark(id);
                    }
                }
                MeshTimer::Beacon => self.send_beacon(now, None),
            }
        }
        if now >= self.next_seed_try && self.overlay.peer_count() == 0 {
            // Still nobody: the seeds (or the node joined through) may be gone for good.
            // Say so each period, so that discovery can offer another.
            if self.wants_peers {
                self.outputs.push_back(MeshOutput::Event(MeshEvent::Alone));
            }
            if self.refused_by_seeds() {
                let reasons = self
                    .seed_refusals
                    .iter()
                    .map(|(a, r)| (*a, r.clone()))
                    .collect();
                self.outputs
                    .push_back(MeshOutput::Event(MeshEvent::SeedsRefused { reasons }));
            }
            self.try_seeds(now);
        }
        self.pump(now);
    }

    /// When [`Mesh::handle_timeout`] is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = [self.overlay.poll_timeout(), self.timers.next()]
            .into_iter()
            .flatten()
            .min();
        // Seeds are retried only while the node knows nobody: a deadline that holds only
        // in that state, not a timer to cancel and re-arm.
        if self.overlay.peer_count() == 0 && !self.cfg.seeds.is_empty() {
            t = t.map(|t| t.min(self.next_seed_try));
        }
        t
    }

    /// Closes the links nobody used for `link_idle` (unless a tunnel keeps them).
    fn sweep(&mut self, now: Instant) {
        self.timers
            .set(MeshTimer::Sweep, now + self.cfg.link_idle / 2);
        #[allow(clippy::disallowed_methods)] // sorted below
        let mut idle: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, pl)| now.saturating_duration_since(pl.last_used) >= self.cfg.link_idle)
            .filter(|(_, pl)| !pl.peer.is_some_and(|c| self.pinned.contains_key(&c.id)))
            .map(|(&id, _)| id)
            .collect();
        idle.sort_unstable();
        for id in idle {
            self.stats.links_idle += 1;
            self.close_link(now, id, "idle");
        }
    }

    /// The next thing for the driver.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<MeshOutput> {
        if let Some(o) = self.outputs.pop_front() {
            return Some(o);
        }
        while let Some(&id) = self.dirty.front() {
            let Some(pl) = self.links.get_mut(&id) else {
                self.dirty.pop_front(); // removed meanwhile
                continue;
            };
            if pl.inflight < BATCH
                && let Some(frame) = pl.link.poll_transmit()
            {
                pl.inflight += frame.len();
                return Some(MeshOutput::Transmit(id, frame));
            }
            self.dirty.pop_front();
            pl.queued = false;
            if pl.link.is_closed() && pl.inflight < BATCH {
                // Its last frame (the close) is out: the socket can go.
                self.remove_link(id);
                return Some(MeshOutput::Close(id));
            }
        }
        None
    }

    /// Dials every seed (joining through whichever answers).
    fn try_seeds(&mut self, now: Instant) {
        let period = self.cfg.overlay.heartbeat_period;
        self.next_seed_try = now + period;
        for addr in self.cfg.seeds.clone() {
            #[allow(clippy::disallowed_methods)] // any: order-free
            let busy =
                self.dials.values().any(|d| d.addr == addr) || self.link_to_addr(addr).is_some();
            if !busy && addr != self.cfg.listen {
                self.dial(addr, None, Vec::new(), true);
            }
        }
    }

    /// An identified link's peer at `addr`, if any.
    #[allow(clippy::disallowed_methods)] // the smallest contact wins, whatever the order
    fn link_to_addr(&self, addr: SocketAddr) -> Option<Contact> {
        self.by_id
            .values()
            .filter_map(|l| self.links.get(l).and_then(|pl| pl.peer))
            .filter(|c| c.addr == addr)
            .min()
    }

    fn can_dial(&self) -> bool {
        !self.leaving && self.links.len() + self.dials.len() < self.cfg.max_links
    }

    fn dial(
        &mut self,
        addr: SocketAddr,
        expect: Option<NodeId>,
        pending: Vec<(Class, Bytes)>,
        join: bool,
    ) {
        if !self.can_dial() {
            self.stats.messages_dropped += pending.len() as u64;
            return;
        }
        let d = DialId(self.next_dial);
        self.next_dial += 1;
        if let Some(e) = expect {
            self.dialing.insert(e, d);
        }
        self.dials.insert(
            d,
            Dial {
                addr,
                expect,
                pending,
                join,
            },
        );
        self.outputs.push_back(MeshOutput::Dial(d, addr));
    }

    /// Ships what the overlay wants sent and reports what it noticed.
    fn pump(&mut self, now: Instant) {
        while let Some((to, msg)) = self.overlay.poll_send() {
            let bytes = wire::encode(&PeerMsg::Overlay(msg));
            let _ = self.send_as(now, to, Class::Control, bytes);
        }
        while let Some(e) = self.overlay.poll_event() {
            let e = match e {
                OverlayEvent::Converged { peers } => MeshEvent::Converged { peers },
                OverlayEvent::PeerDown(id) => {
                    self.inbox.push_back(Incoming::Down(id));
                    MeshEvent::PeerDown(id)
                }
            };
            self.outputs.push_back(MeshOutput::Event(e));
        }
    }

    /// Queues `bytes` for `to`: on its identified link, else held for the link being
    /// opened to it (dialed if none is).
    fn send_as(
        &mut self,
        now: Instant,
        to: Contact,
        class: Class,
        bytes: Bytes,
    ) -> Result<(), Refused> {
        if let Some(&id) = self.by_id.get(&to.id) {
            let pl = self.links.get_mut(&id).expect("by_id names live links");
            pl.last_used = now;
            let sent = put(&mut pl.link, class, bytes);
            self.mark(id);
            return sent.inspect_err(|_| {
                if class == Class::Data {
                    self.stats.data_refused += 1;
                } else {
                    self.stats.messages_dropped += 1;
                }
            });
        }
        if self.leaving {
            return Err(Refused::NoLink);
        }
        if to.addr == self.cfg.listen {
            // Stale: that node lived at this address before us. Its silence will tell the
            // overlay it is gone.
            self.stats.messages_dropped += 1;
            return Err(Refused::NoLink);
        }
        let max = self.cfg.max_pending;
        let hold = |pending: &mut Vec<(Class, Bytes)>, stats: &mut MeshStats, bytes| {
            if pending.len() < max {
                pending.push((class, bytes));
                Ok(())
            } else {
                stats.messages_dropped += 1;
                Err(Refused::NoLink)
            }
        };
        if let Some(d) = self.dialing.get(&to.id).and_then(|d| self.dials.get_mut(d)) {
            return hold(&mut d.pending, &mut self.stats, bytes);
        }
        // A link that is up but whose peer has not yet said who it is may be the one.
        #[allow(clippy::disallowed_methods)] // the smallest id wins, whatever the order
        let opening = self
            .links
            .iter()
            .filter(|(_, pl)| pl.peer.is_none() && pl.expect == Some(to.id) && !pl.link.is_closed())
            .map(|(&l, _)| l)
            .min()
            .and_then(|l| self.links.get_mut(&l));
        if let Some(pl) = opening {
            return hold(&mut pl.pending, &mut self.stats, bytes);
        }
        if !self.can_dial() {
            self.stats.messages_dropped += 1;
            return Err(Refused::NoLink);
        }
        self.dial(to.addr, Some(to.id), vec![(class, bytes)], false);
        Ok(())
    }

    /// Handles what a link reports after it was fed.
    fn drain_link(&mut self, now: Instant, id: LinkId) {
        let me = self.overlay.contact();
        loop {
            let Some(pl) = self.links.get_mut(&id) else {
                return;
            };
            let Some(event) = pl.link.poll_event() else {
                break;
            };
            if pl.bad && !matches!(event, LinkEvent::Closed(_)) {
                continue; // closing for a violation: nothing more it says counts
            }
            match event {
                LinkEvent::Sign(to_sign) => {
                    self.outputs.push_back(MeshOutput::Sign(id, to_sign));
                }
                LinkEvent::Established => {
                    if pl.deadline.take().is_some() {
                        self.timers.cancel(MeshTimer::Handshake(id));
                    }
                    // A fresh link's queue is empty: this cannot fail.
                    let _ = pl.link.send_control(wire::encode(&PeerMsg::Ident(me)));
                }
                LinkEvent::Control(bytes) => {
                    pl.last_used = now;
                    let peer = pl.peer;
                    match (wire::decode_bytes(&bytes), peer) {
                        (Ok(PeerMsg::Ident(c)), None) => self.on_ident(now, id, c),
                        (Ok(PeerMsg::Overlay(m)), Some(c)) => {
                            let farewell = matches!(m, OverlayMsg::Leave);
                            self.overlay.handle_message(now, c, m);
                            if farewell {
                                // Nothing more goes to a peer that left: what is queued
                                // for it still does (it passes that on), then our CLOSE.
                                self.close_link(now, id, "you left");
                            }
                        }
                        (Ok(PeerMsg::Node(b)), Some(c)) => {
                            self.inbox.push_back(Incoming::Message(c, b))
                        }
                        (Ok(PeerMsg::Overlay(_) | PeerMsg::Node(_)), None) => {
                            self.violation(id, "message before IDENT")
                        }
                        (Ok(PeerMsg::Ident(_)), Some(_)) => self.violation(id, "second IDENT"),
                        (Err(_), _) => self.violation(id, "malformed peer message"),
                    }
                }
                LinkEvent::Data(bytes) => {
                    pl.last_used = now;
                    match pl.peer {
                        Some(c) => self.inbox.push_back(Incoming::Message(c, bytes)),
                        None => self.violation(id, "data before IDENT"),
                    }
                }
                LinkEvent::PeerClosed(reason) => {
                    if self.leaving {
                        // Its side is done; ours stays open for what we pass on, until
                        // every peer's side is.
                        self.finish_leave_if_done(now);
                        continue;
                    }
                    if !pl.closing {
                        let peer = pl.peer.map(|c| c.id);
                        self.outputs
                            .push_back(MeshOutput::Event(MeshEvent::LinkClosed {
                                link: id,
                                peer,
                                reason: format!("closed by peer: {reason:?}"),
                            }));
                    }
                    // What is queued for it still goes out (it reads until our CLOSE).
                    self.close_link(now, id, "closed");
                }
                LinkEvent::Closed(e) => {
                    let closing = pl.closing;
                    if closing {
                        self.timers.cancel(MeshTimer::Linger(id));
                    }
                    if closing && matches!(e, crate::link::LinkError::ClosedByPeer(_)) {
                        // The end of a close this side began: nothing to report.
                        self.mark(id);
                        self.forget_peer_of(id);
                        continue;
                    }
                    let peer = pl.peer.map(|c| c.id);
                    if !matches!(e, crate::link::LinkError::ClosedByPeer(_)) {
                        self.stats.links_failed += 1;
                        pl.failed = true;
                    }
                    let event = if pl.deadline.is_some() {
                        // Never established: the two ends are not one network.
                        if let Some(a) = pl.addr.filter(|a| self.cfg.seeds.contains(a)) {
                            self.seed_refusals.insert(a, e.to_string());
                        }
                        MeshEvent::HandshakeFailed {
                            link: id,
                            addr: pl.addr,
                            reason: e.to_string(),
                        }
                    } else {
                        MeshEvent::LinkClosed {
                            link: id,
                            peer,
                            reason: e.to_string(),
                        }
                    };
                    self.outputs.push_back(MeshOutput::Event(event));
                    // Ended before its peer said who it is (refused: the node is leaving,
                    // full, or not of this network): what was held for the node dialed
                    // goes back to be routed another way, as when a dial fails.
                    if pl.peer.is_none()
                        && let Some(e) = pl.expect
                        && !pl.pending.is_empty()
                    {
                        let pending = std::mem::take(&mut pl.pending);
                        let returned = self.node_messages(pending);
                        self.inbox.push_back(Incoming::Unreachable(e, returned));
                    }
                    // Let the driver write what is left (a close record) and close.
                    self.mark(id);
                    self.forget_peer_of(id);
                }
            }
        }
        self.mark(id);
    }

    fn on_ident(&mut self, now: Instant, id: LinkId, c: Contact) {
        if c.id == self.overlay.id() {
            // A stale contact led back here (a seed list naming this node, say): harmless.
            return self.close_link(now, id, "connected to itself");
        }
        let pl = self.links.get_mut(&id).expect("caller holds the link");
        pl.peer = Some(c);
        // A seed let us in: whatever others said, this node is not on its own.
        self.seed_refusals.clear();
        let dialer = |pl: &PeerLink, own: NodeId, peer: NodeId| if pl.dialed { own } else { peer };
        let own = self.overlay.id();
        let mine = dialer(pl, own, c.id);
        if let Some(&other) = self.by_id.get(&c.id) {
            let theirs = dialer(&self.links[&other], own, c.id);
            // Both ends keep the link dialed by the smaller id (the older one if the same
            // node dialed both), so they agree without a word.
            let (keep, drop) = if mine < theirs {
                (id, other)
            } else {
                (other, id)
            };
            let moved = std::mem::take(&mut self.links.get_mut(&drop).expect("live").pending);
            self.links
                .get_mut(&keep)
                .expect("live")
                .pending
                .extend(moved);
            self.by_id.insert(c.id, keep);
            self.stats.links_duplicate += 1;
            self.close_link(now, drop, "duplicate link");
        } else {
            self.by_id.insert(c.id, id);
        }
        self.stats.links_up += 1;
        self.outputs.push_back(MeshOutput::Event(MeshEvent::LinkUp {
            link: id,
            peer: c.id,
        }));
        self.inbox.push_back(Incoming::Linked(c.id));
        let keep = self.by_id[&c.id];
        let pl = self.links.get_mut(&keep).expect("live");
        let pending = std::mem::take(&mut pl.pending);
        pl.last_used = now;
        let join = std::mem::take(&mut pl.join);
        let pl_addr = pl.addr;
        if let Some(e) = pl.expect.filter(|&e| e != c.id) {
            // Someone else lives at that address now: the node expected there is gone for
            // sure, and what was meant for it goes back to be routed another way.
            let returned = self.node_messages(pending);
            self.inbox.push_back(Incoming::Unreachable(e, returned));
            self.overlay.replaced(now, e, pl_addr);
        } else {
            for (class, bytes) in pending {
                if put(&mut pl.link, class, bytes).is_err() {
                    self.stats.messages_dropped += 1;
                }
            }
        }
        self.mark(keep);
        if join {
            self.overlay.join(now, c);
        }
    }

    /// The node messages among messages that waited for a link (overlay messages, only
    /// worth their moment, are dropped).
    fn node_messages(&mut self, pending: Vec<(Class, Bytes)>) -> Vec<Bytes> {
        let mut out = Vec::new();
        for (class, bytes) in pending {
            // Control messages were tagged for the link: node messages are unwrapped.
            match class {
                Class::Data | Class::Stream => out.push(bytes),
                Class::Control => match wire::decode_bytes(&bytes) {
                    Ok(PeerMsg::Node(b)) => out.push(b),
                    _ => self.stats.messages_dropped += 1,
                },
            }
        }
        out
    }

    fn violation(&mut self, id: LinkId, why: &str) {
        self.stats.bad_messages += 1;
        if let Some(pl) = self.links.get_mut(&id) {
            pl.bad = true;
        }
        let peer = self.links.get(&id).and_then(|pl| pl.peer.map(|c| c.id));
        self.outputs
            .push_back(MeshOutput::Event(MeshEvent::LinkClosed {
                link: id,
                peer,
                reason: why.to_string(),
            }));
        if let Some(pl) = self.links.get_mut(&id) {
            pl.link.close_abruptly(why);
        }
        self.forget_peer_of(id);
        self.mark(id);
    }

    /// Closes this side of a link gracefully: nothing new is sent on it, what is queued
    /// goes out, then its CLOSE; it reads on until the peer's CLOSE (for `close_linger` at
    /// most), then the driver closes the socket.
    fn close_link(&mut self, now: Instant, id: LinkId, why: &str) {
        self.forget_peer_of(id);
        if let Some(pl) = self.links.get_mut(&id) {
            self.stats.messages_dropped += pl.pending.len() as u64;
            pl.pending.clear();
            pl.link.close(why);
            if !pl.closing && !pl.link.is_closed() {
                pl.closing = true;
                self.timers
                    .set(MeshTimer::Linger(id), now + self.cfg.close_linger);
            }
            self.mark(id);
        }
    }

    /// Makes room for inbound link `id` (from `ip`, if known) among those in their
    /// handshake: `false` if its address already has its share in flight (the link is to
    /// be refused); past the overall bound, the oldest still handshaking is closed.
    fn admit_inbound_handshake(&mut self, now: Instant, id: LinkId, ip: Option<IpAddr>) -> bool {
        let links = &self.links;
        self.inbound_handshakes.retain(|(l, _)| {
            links
                .get(l)
                .is_some_and(|pl| !pl.link.is_open() && !pl.link.is_closed())
        });
        if let Some(ip) = ip {
            let same = self
                .inbound_handshakes
                .iter()
                .filter(|(_, from)| *from == Some(ip))
                .count();
            if same >= self.cfg.max_inbound_handshakes_per_addr {
                return false;
            }
        }
        while self.inbound_handshakes.len() >= self.cfg.max_inbound_handshakes {
            let Some((oldest, _)) = self.inbound_handshakes.pop_front() else {
                break;
            };
            self.stats.handshakes_evicted += 1;
            self.close_link(now, oldest, "handshake evicted by a newer one");
        }
        self.inbound_handshakes.push_back((id, ip));
        true
    }

    /// Notes that a link may have frames to transmit.
    fn mark(&mut self, id: LinkId) {
        if let Some(pl) = self.links.get_mut(&id)
            && !pl.queued
        {
            pl.queued = true;
            self.dirty.push_back(id);
        }
    }

    /// Unmaps the link from its peer, so that new messages go elsewhere.
    fn forget_peer_of(&mut self, id: LinkId) {
        if let Some(c) = self.links.get(&id).and_then(|pl| pl.peer)
            && self.by_id.get(&c.id) == Some(&id)
        {
            self.by_id.remove(&c.id);
            let failed = self.links.get(&id).is_some_and(|pl| pl.failed || pl.bad);
            self.inbox
                .push_back(Incoming::Unlinked { node: c.id, failed });
        }
    }

    fn remove_link(&mut self, id: LinkId) {
        self.forget_peer_of(id);
        if let Some(pl) = self.links.remove(&id) {
            self.stats.messages_dropped += pl.pending.len() as u64;
            self.stats.signatures_closed_links += pl.link.stats().signatures;
            if pl.deadline.is_some() {
                self.timers.cancel(MeshTimer::Handshake(id));
            }
            if pl.closing {
                self.timers.cancel(MeshTimer::Linger(id));
            }
        }
    }
}
