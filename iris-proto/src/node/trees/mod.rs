//! The trees: relay traffic between nodes on the Scribe trees of each group. This part owns
//! the [`Scribe`] machine, the messages held for a tree in repair, and the peers routed
//! around because their links failed lately; it decides where each multicast and anycast
//! goes next, and hands the rest of the node what it decided as effects (deliver here, pass
//! to a neighbour under credit, send to a peer, an anycast landed here).
//!
//! - **Multicast** (broadcast to a cluster, event on a topic): the origin node delivers to
//!   its own members, then sends the message on one of the group's trees (round-robin),
//!   numbered. If it is in that tree it floods it to its tree neighbours; otherwise the
//!   message is routed toward the tree's key until it meets a node of the tree. Every tree
//!   node delivers to its members and floods on, never back where it came from, and takes
//!   each message once (see `scribe::window`). (`casts.rs`)
//! - **Anycast** (request, tunnel build): the same entry into the tree, then a walk in it:
//!   each node sends it to its own members or to a neighbour, at random in proportion to
//!   the capacity reported through each way, never back. The node that takes it delivers to
//!   one local member chosen uniformly; the reply (or the tunnel's confirmation) goes straight
//!   back to the origin node over their direct link. (`anycasts.rs`)
//! - Messages that reach the key's closest node before its tree does wait there a little
//!   (`held.rs`); routes avoid peers lost lately (`routes.rs`).

mod anycasts;
mod casts;
mod deferred;
mod held;
mod repair;
mod routes;
mod sent;
#[cfg(test)]
mod tests;

pub(crate) use routes::View;

use super::effect::{Effect, Effects, Refusal, to_peer};
use super::stats::{Losses, Stats};
use super::wire::{self, NodeMsg};
use crate::mesh::Class;
use crate::overlay::{Contact, NodeId};
use crate::scribe::{Group, GroupKind, Scribe, ScribeConfig, ScribeInput, ScribeMsg, TreeKeys};
use crate::time::Instant;
use held::Held;
use rand::rngs::ChaCha8Rng;
use std::collections::BTreeMap;
use std::time::Duration;

/// Most hops a tree message may take: trees are a few hops deep; this only bounds what a
/// repair in progress could make wander.
const MAX_HOPS: u8 = 64;

/// How long a peer whose link failed (or whom a dial failed to reach, or that did not
/// answer a probe) is routed around unless it speaks first: long enough for the overlay's
/// heartbeats to find it dead, if it is.
const UNREACHABLE_FOR: Duration = Duration::from_secs(10);

/// The trees of a node of a network, and what travels on them.
#[derive(Debug)]
pub(crate) struct Trees {
    scribe: Scribe,
    /// Tree keys of the groups this node's clients send to, hashed once.
    keys: TreeKeys,
    /// Number of the next multicast or anycast this node starts (trees round-robin on it).
    next_cast: u64,
    /// Peers whose links failed (or a dial to them did) lately, routed around until then.
    unreachable: BTreeMap<NodeId, Instant>,
    /// This node's own multicasts, numbered per tree and kept for those who miss them.
    sent: sent::Sent,
    /// Messages waiting at the closest node of their key for a tree in repair.
    held: Held,
    /// When the oldest held message has waited its time.
    held_until: Option<Instant>,
    /// When a peer last came or went (or its link did): trees may be moving.
    moved_at: Option<Instant>,
    /// A peer came or went since the held messages were last looked at.
    moved: bool,
    pub(crate) stats: Stats,
    /// Messages dropped since the node last reported them.
    pub(crate) losses: Losses,
    /// Tree messages waiting for room on their peer's link.
    deferred: deferred::Deferred,
}

impl Trees {
    pub(crate) fn new(cfg: ScribeConfig, now: Instant) -> Trees {
        Trees {
            scribe: Scribe::new(cfg, now),
            keys: TreeKeys::default(),
            next_cast: 0,
            unreachable: BTreeMap::new(),
            sent: sent::Sent::default(),
            held: Held::default(),
            held_until: None,
            moved_at: None,
            moved: false,
            stats: Stats::default(),
            losses: Losses::default(),
            deferred: deferred::Deferred::default(),
        }
    }

    /// A tree message for `to` that must not be lost to a full link: sent if its link
    /// takes it and nothing waits before it, else kept for [`Trees::retry_deferred`].
    pub(crate) fn send_or_defer(
        &mut self,
        to: Contact,
        bytes: bytes::Bytes,
        mut send: impl FnMut(Contact, bytes::Bytes) -> Result<(), crate::mesh::Refused>,
    ) {
        if !self.deferred.is_waiting(to.id) {
            match send(to, bytes.clone()) {
                Err(crate::mesh::Refused::Full) => {}
                // Sent, or no link: the trees notice a lost link and repair.
                _ => return,
            }
        }
        if !self.deferred.defer(to, bytes) {
            self.stats.tree_messages_dropped += 1;
            self.losses.note("tree_message", || {
                format!(
                    "to node {}: {} bytes wait already",
                    to.id,
                    self.deferred.bytes()
                )
            });
        }
    }

    /// Sends the tree messages that waited for room on their links, as far as the links
    /// take them now.
    pub(crate) fn retry_deferred(
        &mut self,
        send: impl FnMut(Contact, bytes::Bytes) -> Result<(), crate::mesh::Refused>,
    ) {
        if self.deferred.is_empty() {
            return;
        }
        let dropped = self.deferred.retry(send);
        if dropped > 0 {
            self.stats.tree_messages_dropped += dropped as u64;
            self.losses
                .note("tree_message", || format!("{dropped} no link took"));
        }
    }

    /// The trees refused for `max_trees` or memory since last asked (see
    /// [`Scribe::take_full`]), counted in the node's stats.
    pub(crate) fn take_full(&mut self) -> Option<crate::scribe::TreesRefused> {
        let full = self.scribe.take_full();
        if let Some(r) = &full {
            self.stats.trees_refused += r.count;
        }
        full
    }

    /// Bytes of this node's multicasts kept for tree nodes that may ask for them.
    pub(crate) fn kept_bytes(&self) -> usize {
        self.sent.kept_bytes()
    }

    /// What the trees take of the memory budget: their state (estimated, see
    /// [`Scribe::state_bytes`]) and the tree messages waiting for room on a link.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.scribe.state_bytes() + self.deferred.bytes()
    }

    /// Bounds the tree state (see [`Scribe::set_max_bytes`]).
    pub(crate) fn set_max_bytes(&mut self, max: usize) {
        self.scribe.set_max_bytes(max);
        // Tree messages waiting for room: a quarter of that (a sixteenth of the budget).
        self.deferred.set_max(max / 4);
    }

    /// The trees machine, for inspection.
    pub(crate) fn scribe(&self) -> &Scribe {
        &self.scribe
    }

    /// When the trees next beat, a held message has waited its time, a tail or an ask
    /// for missed messages is due, or a kept message's time is up.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        [
            self.scribe.poll_timeout(),
            self.held_until,
            self.scribe.next_ask(),
            self.sent.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Held messages whose time is up (they are dropped, counted).
    pub(crate) fn handle_held_timeout(
        &mut self,
        v: &View<'_>,
        rng: &mut ChaCha8Rng,
        fx: &mut Effects,
    ) {
        if self.held_until.is_some_and(|t| t <= v.now) {
            self.release_held(v, rng, fx);
        }
    }

    /// Beats, liveness, root moves. `draining`: the node shuts down and offers its members
    /// for nothing new.
    pub(crate) fn handle_timeout(&mut self, v: &View<'_>, draining: bool) {
        let now = v.now;
        self.unreachable.retain(|_, until| *until > now);
        if self.scribe.poll_timeout().is_some_and(|t| t <= now) {
            let routes = routes::Routes::new(v, &self.unreachable);
            let capacity = |g: &Group| match g.kind {
                GroupKind::Cluster if !draining => (v.capacity)(&g.name),
                _ => 0,
            };
            self.scribe
                .handle(now, ScribeInput::Timeout(&capacity), &routes);
        }
        for hop in self.scribe.take_unanswered() {
            self.unreachable.insert(hop, now + UNREACHABLE_FOR);
        }
    }

    /// Local members of a group appeared or all left: join or leave its trees.
    pub(crate) fn handle_group_changed(&mut self, v: &View<'_>, group: Group, present: bool) {
        let routes = routes::Routes::new(v, &self.unreachable);
        let input = if present {
            ScribeInput::Join(&group)
        } else {
            ScribeInput::Leave(&group)
        };
        self.scribe.handle(v.now, input, &routes);
    }

    /// Tells the tree neighbours at once that this node's members take nothing new (it is
    /// shutting down and draining).
    pub(crate) fn stop_offering(&mut self, v: &View<'_>) {
        let routes = routes::Routes::new(v, &self.unreachable);
        self.scribe
            .handle(v.now, ScribeInput::ReportNow(&|_| 0), &routes);
    }

    /// The trees' counters, with those the tree state machine keeps itself.
    pub(crate) fn counters(&self) -> Stats {
        Stats {
            tree_neighbours_suspected: self.scribe.stats().suspected,
            routed_hops_suspected: self.scribe.stats().hops_suspected,
            ..self.stats.clone()
        }
    }

    /// The next tree message to send (the node sends them once it has nothing more
    /// urgent to do).
    pub(crate) fn poll_send(&mut self) -> Option<Effect> {
        let (to, msg) = self.scribe.poll_output()?;
        let bytes = wire::encode(&NodeMsg::Tree(msg));
        self.stats.tree_bytes_out += bytes.len() as u64;
        Some(Effect::ToPeer {
            to,
            class: Class::Control,
            bytes,
            refused: Refusal::Defer,
        })
    }

    /// After peers came or went: the held messages whose tree is here now go on (the
    /// node asks once the news is all in).
    pub(crate) fn poll_moved(&mut self) -> bool {
        std::mem::take(&mut self.moved)
    }

    /// Any message from a peer: a tree neighbour is alive (or restarted), and a peer routed
    /// around (its link failed, or it did not answer a probe) is reachable again.
    pub(crate) fn heard_from(&mut self, v: &View<'_>, from: Contact) {
        self.unreachable.remove(&from.id);
        let routes = routes::Routes::new(v, &self.unreachable);
        self.scribe.handle(v.now, ScribeInput::Heard(from), &routes);
    }

    /// A tree message from a peer.
    pub(crate) fn handle_tree_msg(
        &mut self,
        v: &View<'_>,
        rng: &mut ChaCha8Rng,
        from: Contact,
        msg: ScribeMsg,
        fx: &mut Effects,
    ) {
        let trees = self.scribe.tree_count();
        let routes = routes::Routes::new(v, &self.unreachable);
        self.scribe
            .handle(v.now, ScribeInput::Message(from, msg), &routes);
        // A subscription made this node part of a tree: maybe the root that held messages
        // wait for. (Only then: beats are many, and change no tree.)
        if self.scribe.tree_count() > trees {
            self.release_held(v, rng, fx);
        }
    }

    /// A peer came or went (or its link did): trees may move, and messages that find none
    /// wait a little (`held.rs`).
    pub(crate) fn peer_moved(&mut self, now: Instant) {
        self.moved_at = Some(now);
        self.moved = true;
    }

    /// A link to `node` is up: it is reachable again, and trees with this node's messages
    /// kept get a tail again (see `sent.rs`).
    pub(crate) fn handle_linked(&mut self, now: Instant, node: NodeId) {
        self.unreachable.remove(&node);
        self.sent.retail(now, true);
    }

    /// The overlay settled after a change: trees with this node's messages kept get a
    /// tail again (see `sent.rs`).
    pub(crate) fn handle_converged(&mut self, now: Instant) {
        self.sent.retail(now, false);
    }

    /// `node`'s link failed, or a dial to it did: it is routed around for a while.
    pub(crate) fn mark_unreachable(&mut self, now: Instant, node: NodeId) {
        self.unreachable.insert(node, now + UNREACHABLE_FOR);
    }

    /// A peer is gone: the trees it was in repair around it.
    pub(crate) fn handle_lost(&mut self, v: &View<'_>, node: NodeId) {
        let routes = routes::Routes::new(v, &self.unreachable);
        self.scribe.handle(v.now, ScribeInput::Lost(node), &routes);
        self.deferred.forget(node);
    }

    /// A peer's message of `len` bytes arrived (`ok`: it parsed; one that does not is a bug
    /// in that peer).
    pub(crate) fn received(&mut self, len: usize, ok: bool) {
        self.stats.peer_bytes_in += len as u64;
        if !ok {
            self.stats.peer_messages_bad += 1;
        }
    }

    /// A node message of `len` bytes went to a peer's link.
    pub(crate) fn sent(&mut self, len: usize) {
        self.stats.peer_bytes_out += len as u64;
    }

    /// An anycast that landed here found no local member after all.
    pub(crate) fn anycast_lost(&mut self) {
        self.stats.anycasts_lost += 1;
        self.losses.note("anycast_lost", || {
            "a request or tunnel: no local member after all".into()
        });
    }

    /// A message whose next hop could not be reached: one routed toward a tree (or walking
    /// one) is sent again, around the lost peer; anything else was for that peer only.
    pub(crate) fn reroute(
        &mut self,
        v: &View<'_>,
        rng: &mut ChaCha8Rng,
        (bytes, unreachable): (&bytes::Bytes, Option<NodeId>),
        waited: Duration,
        fx: &mut Effects,
    ) {
        match wire::decode(bytes) {
            Ok(NodeMsg::Cast(c)) if c.via != wire::Via::Tree => {
                self.stats.rerouted += 1;
                self.route_cast(v, c, None, fx);
            }
            // An ask for an origin, the origin's answer, or a member's reply to a request,
            // that cannot go straight: around, through the overlay (a route between two
            // nodes that stays broken while the others work).
            Ok(
                NodeMsg::Cast(wire::Cast { resent: true, .. })
                | NodeMsg::CastGone { .. }
                | NodeMsg::CastAsk { .. }
                | NodeMsg::Reply { .. },
            ) if unreachable.is_some() => {
                let own = v.overlay.contact();
                if let Some(to) = unreachable {
                    self.forward(v, (own, to, 0), bytes.clone(), Some(to), fx);
                }
            }
            Ok(NodeMsg::Forward {
                from,
                to,
                hops,
                inner,
            }) => {
                let hops = hops.saturating_add(1);
                self.forward(v, (from, to, hops), inner, unreachable, fx);
            }
            Ok(NodeMsg::Anycast(mut a)) => {
                // Its time left went by while it waited for the dial.
                a.budget_ms = a.budget_ms.saturating_sub(waited.as_millis() as u64);
                self.stats.rerouted += 1;
                self.pass_anycast(v, rng, a, None, None, fx);
            }
            Ok(m) => {
                self.stats.undelivered += 1;
                self.losses.note("peer_unreachable", || m.describe());
            }
            Err(_) => self.stats.undelivered += 1,
        }
    }

    /// Tells a peer that sent along a tree edge this node does not have that it must
    /// repair. (What it sent goes on from here, toward the tree or through it: not a loss,
    /// so it is counted but not reported as one; it is common when the last member of a
    /// node leaves while multicasts are on their way to it.)
    fn not_in_tree(&mut self, to: Contact, key: NodeId, fx: &mut Effects) {
        self.stats.casts_stray += 1;
        let msg = NodeMsg::Tree(ScribeMsg::NotInTree { key });
        fx.push(to_peer(to, Class::Control, &msg, Refusal::Ignore));
    }
}
