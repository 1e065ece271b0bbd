//! Routes toward a tree's key: the overlay's, around the peers this node lost recently. A
//! crashed node's links fail at once, long before its neighbours' heartbeats declare it
//! dead, and routing through it meanwhile would lose what is sent.

use super::Trees;
use crate::node::wire::Via;
use crate::overlay::{Contact, NodeId, Overlay};
use crate::relay::Name;
use crate::scribe::Router;
use crate::time::Instant;
use std::collections::BTreeMap;
use std::time::Duration;

/// What the trees read of the rest of the node while they route.
pub(crate) struct View<'a> {
    /// The time.
    pub(crate) now: Instant,
    /// The overlay (this node's contact, routes, round trips).
    pub(crate) overlay: &'a Overlay,
    /// The links (which peers a message reaches without a dial first).
    pub(crate) mesh: &'a crate::mesh::Mesh,
    /// Requests this node's members of a cluster could take now (0 with no member here).
    pub(crate) capacity: &'a dyn Fn(&Name) -> u32,
    /// Requests this node's members of a cluster could take now without waiting behind
    /// others (0 once each holds its window unanswered, or is congested).
    pub(crate) free: &'a dyn Fn(&Name) -> u32,
    /// The node is shutting down: its members take nothing new while another member can.
    pub(crate) stopped: bool,
}

/// The overlay's routes around the peers lost lately.
pub(super) struct Routes<'a> {
    overlay: &'a Overlay,
    unreachable: &'a BTreeMap<NodeId, Instant>,
    now: Instant,
}

impl<'a> Routes<'a> {
    pub(super) fn new(v: &View<'a>, unreachable: &'a BTreeMap<NodeId, Instant>) -> Routes<'a> {
        Routes {
            overlay: v.overlay,
            unreachable,
            now: v.now,
        }
    }

    /// Neither `avoid` nor lost lately.
    fn usable(&self, id: NodeId, avoid: Option<NodeId>) -> bool {
        Some(id) != avoid
            && self
                .unreachable
                .get(&id)
                .is_none_or(|&until| until <= self.now)
    }
}

impl Router for Routes<'_> {
    fn own(&self) -> Contact {
        self.overlay.contact()
    }

    fn next_hop(&self, key: NodeId, avoid: Option<NodeId>) -> Option<Contact> {
        self.overlay.route_where(key, |id| self.usable(id, avoid))
    }

    fn planned_rtt(&self, id: NodeId) -> Option<Duration> {
        self.overlay.planned_rtt(id)
    }
}

impl Trees {
    /// The next hop toward `key` (around peers lost recently); `None` here.
    pub(super) fn route(&self, v: &View<'_>, key: NodeId) -> Option<Contact> {
        Routes::new(v, &self.unreachable).next_hop(key, None)
    }

    /// The next hop of a message routed toward a tree this node is not in. At the key's
    /// closest node (no next hop) the tree may still live one step away: a node that just
    /// joined closest to a key is routed to before the old root hands the tree over, so
    /// the message goes on once, to the closest other node. Otherwise nobody anywhere
    /// is a member.
    pub(super) fn toward(&self, v: &View<'_>, key: NodeId, via: Via) -> Option<(Contact, Via)> {
        if let Some(next) = self.route(v, key) {
            return Some((next, via));
        }
        if via == Via::Detour {
            return None;
        }
        let routes = Routes::new(v, &self.unreachable);
        let closest_other = v
            .overlay
            .leaves()
            .members()
            .filter(|id| routes.usable(*id, None))
            .fold(None, |best: Option<NodeId>, id| match best {
                Some(b) if !key.prefers(id, b) => Some(b),
                _ => Some(id),
            })?;
        let c = v.overlay.contact_of(closest_other)?;
        Some((c, Via::Detour))
    }

    /// How long a message waits at the key's closest node for a tree in repair: its
    /// members subscribe again at once, or at the next beat if they did a beat ago.
    pub(super) fn hold_for(&self) -> Duration {
        self.scribe.config().beat * 2
    }
}
