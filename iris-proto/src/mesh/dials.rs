//! Dialing: connections this node asks its driver to open (to reach a peer it has no link
//! to, or to join through a seed or a node discovery found), the messages that wait for
//! them, and the seeds, retried while the node knows nobody.

use super::events::{Incoming, MeshEvent, MeshOutput};
use super::send::Waiting;
use super::{DialId, Map, Mesh, MeshConfig};
use crate::overlay::{Contact, NodeId, OverlayInput};
use crate::time::Instant;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// How often a node that knows nobody dials its seeds again (every heartbeat period if
/// they refused it). A dial still in flight by then is not waited for: after a partition
/// the heal is found at the next fresh connection, not after the kernel's backed-off
/// retries of a connection begun while the path was down.
const SEED_RETRY: Duration = Duration::from_secs(1);

/// A dial toward a peer in flight this long is not waited for by a message to that peer: a
/// fresh dial takes what it held and what comes next (the old one, should it connect after
/// all, makes a second link, one of the two is kept). A dial begun while a partition was
/// still on hangs until the driver's connect timeout (5 s) even though the path is back a
/// moment later; found by swarm testing, where a graveyard ping of the neighbour across
/// the heal waited for the dial begun before it, and the two sides' trees merged 6 s after
/// the heal instead of 3 s (a member that left meanwhile lost what was sent in the cut).
///
/// When a dial taken over fails, the peer still not linked and the fresh dial this old
/// too, the peer is unreachable: what waits for the fresh dial goes another way at once,
/// and the fresh dial goes on. Without it, toward a peer across a broken pair, a message
/// every second moved what waited to a new dial each time, no dial ever failed as the
/// peer's, and an origin's answers to an ask never went around (found by swarm testing).
pub(super) const STALE_DIAL: Duration = Duration::from_secs(1);

/// A dial in flight.
pub(super) struct Dial {
    pub(super) addr: SocketAddr,
    /// The peer it is to reach, if a particular one.
    pub(super) expect: Option<NodeId>,
    /// Messages for that peer, held until its link is up.
    pub(super) pending: Vec<Waiting>,
    /// Join the overlay through whoever answers.
    pub(super) join: bool,
    /// When it began.
    pub(super) started: Instant,
}

/// The dials in flight and the state of the seeds.
pub(super) struct Dials {
    dials: Map<DialId, Dial>,
    /// The dial in flight toward each peer.
    dialing: Map<NodeId, DialId>,
    next: u64,
    /// When the seeds are tried again if the node still knows nobody.
    next_seed_try: Instant,
    /// It was given somewhere to join (seeds, or a join through an address).
    wants_peers: bool,
    /// Seeds whose last handshake failed, with the reason; cleared when one is joined.
    refusals: BTreeMap<SocketAddr, String>,
}

impl Dials {
    pub(super) fn new(cfg: &MeshConfig, now: Instant) -> Dials {
        Dials {
            dials: Map::default(),
            dialing: Map::default(),
            next: 0,
            next_seed_try: now,
            wants_peers: !cfg.seeds.is_empty() || cfg.seeds_to_come,
            refusals: BTreeMap::new(),
        }
    }

    pub(super) fn next_seed_try(&self) -> Instant {
        self.next_seed_try
    }

    /// Whether seeds refused this node's handshake since it last joined one.
    pub(super) fn refused(&self) -> bool {
        !self.refusals.is_empty()
    }

    pub(super) fn note_refusal(&mut self, seed: SocketAddr, reason: String) {
        self.refusals.insert(seed, reason);
    }

    pub(super) fn clear_refusals(&mut self) {
        self.refusals.clear();
    }

    /// Takes the dial a connection answers (it reaches its peer no more by dialing), and
    /// whether it was the one toward its peer (not superseded by a later one).
    pub(super) fn take(&mut self, dial: DialId) -> Option<(Dial, bool)> {
        let d = self.dials.remove(&dial)?;
        let current = match d.expect {
            Some(e) if self.dialing.get(&e) == Some(&dial) => {
                self.dialing.remove(&e);
                true
            }
            Some(_) => false,
            None => true,
        };
        Some((d, current))
    }

    /// The messages waiting for the dial in flight toward `peer`, if one is.
    pub(super) fn pending_for(&mut self, peer: NodeId) -> Option<&mut Vec<Waiting>> {
        let d = self.dialing.get(&peer)?;
        self.dials.get_mut(d).map(|d| &mut d.pending)
    }

    /// Whether the dial in flight toward `peer` began [`STALE_DIAL`] ago or more.
    pub(super) fn is_stale(&self, peer: NodeId, now: Instant) -> bool {
        self.dialing
            .get(&peer)
            .and_then(|d| self.dials.get(d))
            .is_some_and(|d| now.saturating_duration_since(d.started) >= STALE_DIAL)
    }

    /// Takes what waits for the dial in flight toward `peer` (which goes on).
    pub(super) fn take_pending(&mut self, peer: NodeId) -> Vec<Waiting> {
        self.pending_for(peer)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Takes what the dial toward `peer` holds, for a fresh dial that supersedes it: the
    /// old one is no longer the peer's (see [`STALE_DIAL`]).
    pub(super) fn supersede(&mut self, peer: NodeId) -> Vec<Waiting> {
        let Some(d) = self.dialing.remove(&peer) else {
            return Vec::new();
        };
        self.dials
            .get_mut(&d)
            .map(|d| std::mem::take(&mut d.pending))
            .unwrap_or_default()
    }

    /// Dials in flight.
    pub(super) fn len(&self) -> usize {
        self.dials.len()
    }
}

impl Mesh {
    /// Joins through the node at `addr` (discovery found it, or an operator named it).
    pub(super) fn join_via(&mut self, now: Instant, addr: SocketAddr) {
        if addr == self.cfg.listen {
            return;
        }
        self.dials.wants_peers = true;
        if let Some(c) = self.link_to_addr(addr) {
            self.overlay.handle(now, OverlayInput::Join(c));
            self.pump(now);
        } else {
            self.dial(now, addr, None, Vec::new(), true);
        }
    }

    /// A dial failed: what was held for it comes back to be routed another way.
    pub(super) fn on_dial_failed(&mut self, now: Instant, dial: DialId) {
        let Some((d, current)) = self.dials.take(dial) else {
            return;
        };
        self.stats.dials_failed += 1;
        let returned = self.node_messages(now, d.pending);
        match d.expect {
            Some(e) if current => self.inbox.push_back(Incoming::Unreachable(e, returned)),
            // A later dial toward that peer took over from this one: unless it got through
            // or is new, the peer is unreachable by now, and what waits for it goes another
            // way.
            Some(e) if !self.is_linked(e) && self.dials.is_stale(e, now) => {
                self.stats.messages_dropped += returned.len() as u64;
                let waiting = self.dials.take_pending(e);
                let returned = self.node_messages(now, waiting);
                self.inbox.push_back(Incoming::Unreachable(e, returned));
            }
            _ => self.stats.messages_dropped += returned.len() as u64,
        }
        self.outputs
            .push_back(MeshOutput::Event(MeshEvent::DialFailed(d.addr)));
        self.pump(now);
    }

    /// Still not in its network at the seed period: the seeds (or the node joined
    /// through) may be down, or gone for good. Said each period while the node knows
    /// nobody, so that discovery can offer another; the seeds are tried again.
    pub(super) fn still_alone(&mut self, now: Instant) {
        if self.dials.wants_peers && self.overlay.peer_count() == 0 {
            self.outputs.push_back(MeshOutput::Event(MeshEvent::Alone));
        }
        if self.refused_by_seeds() {
            let reasons = self
                .dials
                .refusals
                .iter()
                .map(|(a, r)| (*a, r.clone()))
                .collect();
            self.outputs
                .push_back(MeshOutput::Event(MeshEvent::SeedsRefused { reasons }));
        }
        self.try_seeds(now);
    }

    /// Joins through every seed: dialed (the join goes once its link is up), or, if it is
    /// linked already, at once.
    pub(super) fn try_seeds(&mut self, now: Instant) {
        let heartbeat = self.cfg.overlay.heartbeat_period;
        let period = match self.refused_by_seeds() {
            true => heartbeat,
            false => heartbeat.min(SEED_RETRY),
        };
        self.dials.next_seed_try = now + period;
        for addr in self.cfg.seeds.clone() {
            let dialing =
                self.dials.dials.iter_unordered().any(|(_, d)| {
                    d.addr == addr && now.saturating_duration_since(d.started) < period
                });
            if dialing || addr == self.cfg.listen {
                continue;
            }
            match self.link_to_addr(addr) {
                Some(c) => self.overlay.handle(now, OverlayInput::Join(c)),
                None => self.dial(now, addr, None, Vec::new(), true),
            }
        }
    }

    /// An identified link's peer at `addr`, if any, but not over a link its peer was
    /// silent on until taken for dead: after a partition such a link is often half-open
    /// and its kernel's retries backed off for many seconds; a fresh dial goes through
    /// at once. (The smallest such contact: whatever the map's order.)
    fn link_to_addr(&self, addr: SocketAddr) -> Option<Contact> {
        self.by_id
            .iter_unordered()
            .map(|(_, l)| l)
            .filter_map(|l| {
                self.links
                    .get(l)
                    .filter(|pl| !pl.silent)
                    .and_then(|pl| pl.peer)
            })
            .filter(|c| c.addr == addr)
            .min()
    }

    pub(super) fn can_dial(&mut self, now: Instant) -> bool {
        !self.leaving && self.room_for_link(now)
    }

    /// Asks the driver to dial `addr` (to reach `expect`, with what waits for it).
    pub(super) fn dial(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        expect: Option<NodeId>,
        pending: Vec<Waiting>,
        join: bool,
    ) {
        if !self.can_dial(now) {
            self.stats.messages_dropped += pending.len() as u64;
            return;
        }
        let d = DialId(self.dials.next);
        self.dials.next += 1;
        if let Some(e) = expect {
            self.dials.dialing.insert(e, d);
        }
        self.dials.dials.insert(
            d,
            Dial {
                addr,
                expect,
                pending,
                join,
                started: now,
            },
        );
        self.outputs.push_back(MeshOutput::Dial(d, addr));
    }
}
