//! Nodes a neighbour vouches for that this node cannot reach itself: the broken pair.
//!
//! Two neighbours on the ring whose link fails while every other node reaches both (a
//! route broken between them, a firewall rule) each give the other up for silence. The
//! overlay learns nodes only first-hand, so neither takes the other back, however often
//! their common neighbours list it. For a key between them, the one farther from it then
//! takes itself for the closest node: it delivered requests meant for the other and rooted
//! a second tree of the key, and what was published on one side of the split tree missed
//! the members on the other (found by swarm testing).
//!
//! So a node remembers, for a node that a neighbour lists in its leaf set and that this
//! node wants as a leaf but does not have, which neighbour listed it (a **vouch**). Once a
//! vouch has held for [`HELD`] (its voucher has listed the node all along, and the node is
//! still not learned), a key this node would take for its own but that the vouched node is
//! closer to goes to the voucher, which knows the node and routes on to it; it never comes
//! back, since the voucher's closest node to such a key is the vouched one or closer still.
//! The wait keeps the ordinary gaps out: a node just heard of is learned as soon as it
//! answers, and one that crashed or hung is dropped from its neighbours' leaf sets within
//! their detection time (9 s), before its vouch holds. Vouches are refreshed by asking
//! their vouchers for their leaf sets every heartbeat period (only while any is kept) and
//! dropped when a voucher stops listing the node, stops answering, or is no longer a peer.

use super::{Contact, NodeId};
use crate::time::Instant;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Vouched nodes kept at most (a broken pair needs one; a join storm can show several).
pub(super) const MAX_VOUCHED: usize = 8;
/// How long a voucher must have listed a node before keys are routed through it: longer
/// than a neighbour takes to drop a node that crashed or hung (three silent periods).
pub(super) const HELD: Duration = Duration::from_secs(12);

/// One vouched node.
#[derive(Debug, Clone, Copy)]
struct Vouch {
    /// The neighbour that lists it.
    via: NodeId,
    /// Since when `via` has listed it without a break.
    since: Instant,
    /// When `via` last listed it.
    heard: Instant,
    /// Listed for [`HELD`] at the last refresh: keys may be routed through `via`.
    held: bool,
}

/// The vouched nodes (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Vouches {
    by_node: BTreeMap<NodeId, Vouch>,
}

impl Vouches {
    /// `via` listed `leaves` as its whole leaf set: what it no longer lists, it no longer
    /// vouches for; of what it lists, the nodes `wanted` here (wanted as leaves, not
    /// known) are vouched for by it.
    pub(super) fn note(
        &mut self,
        now: Instant,
        via: NodeId,
        leaves: &[Contact],
        wanted: impl Fn(NodeId) -> bool,
    ) {
        self.by_node
            .retain(|&node, v| v.via != via || leaves.iter().any(|c| c.id == node));
        for c in leaves {
            if !wanted(c.id) {
                continue;
            }
            if let Some(v) = self.by_node.get_mut(&c.id) {
                if v.via == via {
                    v.heard = now;
                }
                continue;
            }
            if self.by_node.len() < MAX_VOUCHED {
                let v = Vouch {
                    via,
                    since: now,
                    heard: now,
                    held: false,
                };
                self.by_node.insert(c.id, v);
            }
        }
    }

    /// The node is known first-hand now (or gone): no vouch needed.
    pub(super) fn remove(&mut self, node: NodeId) {
        self.by_node.remove(&node);
    }

    /// Drops the vouches not refreshed within `stale`, and those whose voucher is not
    /// `alive` (a peer) any more; marks those listed for [`HELD`]; returns the vouchers
    /// left, to be asked again. Once a heartbeat period.
    pub(super) fn refresh(
        &mut self,
        now: Instant,
        stale: Duration,
        alive: impl Fn(NodeId) -> bool,
    ) -> BTreeSet<NodeId> {
        self.by_node
            .retain(|_, v| now.saturating_duration_since(v.heard) < stale && alive(v.via));
        for v in self.by_node.values_mut() {
            v.held = now.saturating_duration_since(v.since) >= HELD;
        }
        self.by_node.values().map(|v| v.via).collect()
    }

    /// For a key this node would take for its own: the voucher of the node closest to
    /// `key` among those vouched for long enough and closer to it than `own`, if its
    /// voucher is `usable`.
    pub(super) fn hop(
        &self,
        own: NodeId,
        key: NodeId,
        usable: impl Fn(NodeId) -> bool,
    ) -> Option<NodeId> {
        self.by_node
            .iter()
            .filter(|(_, v)| v.held && usable(v.via))
            .filter(|&(&node, _)| key.prefers(node, own))
            .reduce(|best, x| if key.prefers(*x.0, *best.0) { x } else { best })
            .map(|(_, v)| v.via)
    }
}
