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
//!
//! One concern a file: the link table and what links report (`links.rs`), the send path
//! (`send.rs`), dialing and seeds (`dials.rs`), admission of inbound links (`admission.rs`),
//! discovery beacons (`beacons.rs`, `discovery.rs`), leaving (`leave.rs`), the idle sweep
//! (`sweep.rs`), what it tells of each peer (`status.rs`). The mesh is driven like every
//! machine of the core: [`Mesh::handle`], [`Mesh::poll_output`] (what its driver does) and
//! [`Mesh::poll_timeout`]; what it tells its node comes out of [`Mesh::poll_incoming`].

mod admission;
mod beacons;
mod config;
mod dials;
pub(crate) mod discovery;
mod events;
mod leave;
mod links;
pub(crate) mod one_way;
mod send;
mod status;
mod sweep;
pub(crate) mod wire;

#[cfg(test)]
mod bare_tests;
#[cfg(test)]
mod tests;

pub use config::{MeshConfig, Security};
#[cfg(feature = "inspect")]
pub use events::Undelivered;
pub use events::{Incoming, MeshEvent, MeshOutput, MeshStats};
pub use send::Class;
pub use send::Refused;
pub use status::PeerStatus;

use crate::link::{Link, LinkConfig};
use crate::overlay::{Contact, NodeId, Overlay, OverlayEvent, OverlayOutput};
use crate::time::Instant;
use crate::timer::Timers;
use admission::Admission;
use bytes::BytesMut;
use dials::Dials;
use discovery::Discovery;
use links::PeerLink;
use one_way::OneWay;
use rand::rngs::ChaCha8Rng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use wire::PeerMsg;

use crate::lookup::LookupMap as Map;

/// A connection to another node, named by the driver (like [`crate::ConnId`] for clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub u64);

/// A dial the node asked for, named by the node; the driver answers with the link it
/// opened or with the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DialId(pub u64);

/// Something the mesh is told.
#[derive(Debug)]
pub enum MeshInput<'a> {
    /// A connection opened: accepted by the peer listener (`dial` is `None`), or the
    /// answer to [`MeshOutput::Dial`]; `from`: where an accepted one comes from, if known.
    Connected {
        /// The driver's name for it.
        link: LinkId,
        /// The dial it answers, if any.
        dial: Option<DialId>,
        /// Its source address, if the driver knows.
        from: Option<SocketAddr>,
    },
    /// Bytes from a link's socket, in order.
    Data(LinkId, &'a [u8]),
    /// The buffer [`Mesh::lend_input`] lent for a link, given back with the bytes read from
    /// its socket appended.
    Read(LinkId, BytesMut),
    /// The driver wrote this many bytes of a link's frames: it may be handed more.
    Flushed(LinkId, usize),
    /// A link's socket closed under us.
    Gone(LinkId),
    /// A dial failed: what was held for it comes back to be routed another way.
    DialFailed(DialId),
    /// Join through the node at this address (discovery found it, or an operator named it).
    JoinVia(SocketAddr),
    /// A datagram on the discovery socket.
    Beacon {
        /// Where it came from.
        from: SocketAddr,
        /// What it held.
        data: &'a [u8],
    },
    /// The signature a link asked for ([`MeshOutput::Sign`]).
    Signed(LinkId, &'a [u8]),
    /// The deadline from [`Mesh::poll_timeout`] passed.
    Timeout,
    /// Leave the overlay for good (see `leave.rs`).
    Leave,
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
    /// A leaving node's peers have all closed, and the node has passed on what they sent
    /// last: its own sides close.
    Passed,
    /// The next discovery beacon.
    Beacon,
}

/// The mesh state machine, owned and drained by the node.
pub struct Mesh {
    cfg: MeshConfig,
    /// `cfg.link`, shared by every link (one copy a node, not one a link).
    link_cfg: Arc<LinkConfig>,
    /// When forged beacons were last reported, and how many had been counted by then.
    forged_said: (Option<Instant>, u64),
    /// Each peer's incarnation and fastest one-way trip (`one_way`), remembered across
    /// its links: a link made after a partition or a stall may carry only late messages
    /// at first, and would take them for the fastest trip. Dropped by the idle sweep once
    /// unlinked and heard from no more for two windows (what they held has expired).
    clocks: Map<NodeId, (u64, OneWay)>,
    security: Security,
    overlay: Overlay,
    rng: ChaCha8Rng,
    /// Boxed: a link is a kilobyte, and the table's slots stay small and cache-friendly.
    links: Map<LinkId, Box<PeerLink>>,
    /// The identified link chosen for each peer.
    by_id: Map<NodeId, LinkId>,
    /// Links with frames to transmit.
    /// (A queue with a flag on each link rather than a set: no allocation per event.)
    dirty: VecDeque<LinkId>,
    /// Dials in flight and the seeds.
    dials: Dials,
    /// Inbound links still in their handshake.
    admission: Admission,
    timers: Timers<MeshTimer>,
    outputs: VecDeque<MeshOutput>,
    /// What the node is handed: peers' messages and the news of links and peers.
    inbox: VecDeque<Incoming>,
    /// Peers whose links are kept however idle (a tunnel runs over them), with a count.
    pinned: BTreeMap<NodeId, u32>,
    /// Beacons: when to send them, whom this node answered lately.
    discovery: Option<Discovery>,
    /// Leaving: farewells go out on open links only, nothing is dialed.
    leaving: bool,
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

/// The secrets discovery beacons are authenticated under: the network key's, and during a
/// key rotation the previous key's too; without keys (simulations), one derived from the
/// network's name, which protects nothing.
fn beacon_secrets(security: &Security, link: &LinkConfig) -> Vec<[u8; 32]> {
    match security {
        Security::Rsa(key) => std::iter::once(key.beacon_secret())
            .chain(link.previous_key.as_ref().map(|k| k.beacon_secret()))
            .collect(),
        Security::Plain => vec![crate::link::key::derive_beacon_secret(
            link.network.as_bytes(),
        )],
    }
}

impl Mesh {
    /// A mesh that dials its seeds at once.
    pub fn new(cfg: MeshConfig, security: Security, seed: [u8; 32], now: Instant) -> Mesh {
        let discovery = cfg.discovery.clone().map(|d| {
            let secrets = beacon_secrets(&security, &cfg.link);
            Discovery::new(d, &cfg.link.network, cfg.link.version, secrets)
        });
        let mut rng = ChaCha8Rng::from_seed(seed);
        let id = cfg
            .id
            .unwrap_or_else(|| NodeId(rng.next_u64() as u128 | (u128::from(rng.next_u64()) << 64)));
        let own = Contact::new(id, cfg.listen, cfg.epoch);
        // A node given seeds is part of a network once its join through one is answered;
        // one given none founds a network (others may join it).
        let founder = cfg.seeds.is_empty() && !cfg.seeds_to_come;
        let overlay = Overlay::new(own, cfg.overlay.clone(), now, founder);
        let mut timers = Timers::default();
        timers.set(MeshTimer::Sweep, now + cfg.link_idle / 6);
        if cfg.discovery.is_some() {
            timers.set(MeshTimer::Beacon, now);
        }
        let mut mesh = Mesh {
            overlay,
            security,
            rng,
            links: Map::default(),
            by_id: Map::default(),
            dirty: VecDeque::new(),
            dials: Dials::new(&cfg, now),
            admission: Admission::default(),
            timers,
            outputs: VecDeque::new(),
            inbox: VecDeque::new(),
            pinned: BTreeMap::new(),
            discovery,
            leaving: false,
            stats: MeshStats::default(),
            link_cfg: Arc::new(cfg.link.clone()),
            forged_said: (None, 0),
            clocks: Map::default(),
            cfg,
        };
        mesh.try_seeds(now);
        mesh
    }

    /// Feeds one input.
    pub fn handle(&mut self, now: Instant, input: MeshInput<'_>) {
        match input {
            MeshInput::Connected { link, dial, from } => self.on_connected(now, link, dial, from),
            MeshInput::Data(link, data) => self.on_data(now, link, data),
            MeshInput::Read(link, buf) => self.on_read(now, link, buf),
            MeshInput::Flushed(link, n) => self.on_flushed(link, n),
            MeshInput::Gone(link) => self.on_gone(now, link),
            MeshInput::DialFailed(dial) => self.on_dial_failed(now, dial),
            MeshInput::JoinVia(addr) => self.join_via(now, addr),
            MeshInput::Beacon { from, data } => self.on_beacon(now, from, data),
            MeshInput::Signed(link, signature) => self.on_signed(now, link, signature),
            MeshInput::Timeout => self.on_timeout(now),
            MeshInput::Leave => self.leave(now),
        }
    }

    /// The next thing for the driver: queued outputs first, then the frames the links'
    /// sockets may take (pulled as the driver reports them written).
    #[must_use]
    pub fn poll_output(&mut self) -> Option<MeshOutput> {
        if let Some(o) = crate::queue::pop_front(&mut self.outputs) {
            return Some(o);
        }
        self.poll_transmit()
    }

    /// What the mesh has for the node: peers' messages, links lost, peers down.
    #[must_use]
    pub fn poll_incoming(&mut self) -> Option<Incoming> {
        crate::queue::pop_front(&mut self.inbox)
    }

    /// When [`MeshInput::Timeout`] is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t = [self.overlay.poll_timeout(), self.timers.next()]
            .into_iter()
            .flatten()
            .min();
        // Seeds are retried only while the node looks for its network: a deadline that
        // holds only in that state, not a timer to cancel and re-arm.
        if self.seeking() && !self.cfg.seeds.is_empty() {
            return t.map(|t| t.min(self.dials.next_seed_try()));
        }
        t
    }

    /// The overlay, for inspection (leaf set, routing, convergence).
    pub fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    /// Whether the node has said farewell ([`MeshInput::Leave`]): it dials nobody now, and
    /// its peers, having read the farewell, route nothing to it.
    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// Whether a link to `peer` is up and it said who it is: a message for a peer without
    /// one waits for a dial and a handshake first.
    pub fn is_linked(&self, peer: NodeId) -> bool {
        self.by_id.contains_key(&peer)
    }

    /// The peer at the end of the link to `peer`, if one is up (the overlay may not know
    /// the peer yet: it joined again after a partition, and its messages come first).
    pub fn linked_contact(&self, peer: NodeId) -> Option<Contact> {
        self.by_id.get(&peer).and_then(|&link| self.peer_of(link))
    }

    /// Counters.
    pub fn stats(&self) -> &MeshStats {
        &self.stats
    }

    /// Signatures made with the network key, every link's so far: one per genuine link,
    /// none for a peer that never proved it holds the key.
    pub fn signatures(&self) -> u64 {
        self.stats.signatures_closed_links
            + self
                .links
                .iter_unordered()
                .map(|(_, pl)| pl.link.stats().signatures)
                .sum::<u64>()
    }

    /// How much longer than its fastest trip a message `peer` stamped `sent` (its clock,
    /// ms; [`one_way::stamp`]) took to arrive at `now`: `None` while no link to it has
    /// carried a stamped overlay message (see [`one_way`]).
    pub(crate) fn transit_excess(&self, peer: NodeId, now: Instant, sent: u64) -> Option<Duration> {
        let (_, clock) = self.clocks.get(&peer)?;
        clock.excess(now, sent)
    }

    /// A message stamped `clock` by `peer` arrived now. A peer that restarted (another
    /// epoch) has another clock: what was learnt of the last one is dropped.
    fn clock_sample(&mut self, now: Instant, peer: Contact, clock: u64) {
        let entry = self
            .clocks
            .get_or_insert_with(peer.id, || (peer.epoch, OneWay::default()));
        if entry.0 != peer.epoch {
            *entry = (peer.epoch, OneWay::default());
        }
        entry.1.sample(now, clock);
    }

    /// Links open or opening.
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// Bytes of data queued in links and not yet sealed for their sockets.
    pub fn queued_bytes(&self) -> usize {
        self.links
            .iter_unordered()
            .map(|(_, pl)| pl.link.data_queued())
            .sum()
    }

    /// True while seeds refused this node's handshake and it knows nobody: it must not
    /// pass for a network of one.
    pub fn refused_by_seeds(&self) -> bool {
        self.dials.refused() && self.overlay.peer_count() == 0
    }

    /// The identified peer of a link, if any.
    pub fn peer_of(&self, id: LinkId) -> Option<Contact> {
        self.links.get(&id).and_then(|pl| pl.peer)
    }

    /// Whether the node still looks for its network: it knows nobody, or its join
    /// through a seed has not been answered yet (its seeds were down, or refused it, or
    /// left). Others may have joined through this node meanwhile (their seed is this
    /// node): together they are an island, not the network, until this node reaches its
    /// seeds and the two rings merge.
    fn seeking(&self) -> bool {
        self.overlay.peer_count() == 0 || !self.overlay.is_seeded()
    }

    /// Time passed.
    fn on_timeout(&mut self, now: Instant) {
        self.overlay
            .handle(now, crate::overlay::OverlayInput::Timeout);
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                MeshTimer::Handshake(id) => self.handshake_timeout(now, id),
                MeshTimer::Sweep => self.sweep(now),
                MeshTimer::Linger(id) => self.linger_over(now, id),
                MeshTimer::Left => self.left_timeout(),
                MeshTimer::Passed => self.passed_timeout(now),
                MeshTimer::Beacon => self.send_beacon(now, None),
            }
        }
        if now >= self.dials.next_seed_try() && self.seeking() {
            self.still_alone(now);
        }
        self.pump(now);
    }

    /// Ships what the overlay wants sent and reports what it noticed.
    fn pump(&mut self, now: Instant) {
        while let Some(out) = self.overlay.poll_output() {
            match out {
                OverlayOutput::Send(to, msg) => {
                    let clock = one_way::stamp(now);
                    let bytes = wire::encode(&PeerMsg::Overlay(clock, msg));
                    let _ = self.send_as(now, to, Class::Control, bytes);
                }
                OverlayOutput::Event(e) => {
                    let e = match e {
                        OverlayEvent::Converged { peers } => MeshEvent::Converged { peers },
                        OverlayEvent::PeerDown(id) => {
                            self.inbox.push_back(Incoming::Down(id));
                            MeshEvent::PeerDown(id)
                        }
                        OverlayEvent::Resumed { late } => MeshEvent::Resumed { late },
                        OverlayEvent::Silent(id) => {
                            self.mark_silent(id);
                            continue;
                        }
                    };
                    self.outputs.push_back(MeshOutput::Event(e));
                }
            }
        }
    }

    /// The overlay took `peer` for dead after its silence: the link it was silent on is
    /// marked, not closed. After a partition it is often half-open (the peer's end is
    /// gone and nothing told ours), and the fresh link the peer dials once the path is
    /// back must replace it (`keep_one_link`); but a peer that was only stopped (SIGSTOP)
    /// still writes on it when it resumes, and what it wrote must not meet a closed socket.
    /// Anything that arrives on the link clears the mark.
    fn mark_silent(&mut self, peer: NodeId) {
        if let Some(pl) = self.by_id.get(&peer).and_then(|l| self.links.get_mut(l)) {
            pl.silent = true;
            self.stats.links_silent += 1;
        }
    }

    /// The links' ids, in order (for work whose outcome must not hang on hash order).
    fn sorted_links(&self) -> Vec<LinkId> {
        self.links.keys_sorted()
    }

    /// A fresh link for a connection in `role`.
    fn new_link(&mut self, role: crate::link::Role, now: Instant) -> Link {
        match &self.security {
            Security::Rsa(key) => {
                let mut seed = [0u8; 32];
                self.rng.fill_bytes(&mut seed);
                Link::new(role, key.clone(), self.link_cfg.clone(), seed, now)
            }
            Security::Plain => Link::plain(role, self.link_cfg.clone(), now),
        }
    }
}
