//! Multicasts on the trees: a client's broadcast or event starts here, a peer's passes
//! through; each tree node delivers to its members and floods on; a message that finds no
//! tree at the key's closest node waits there a little while the tree may be moving.

use super::held::Parked;
use super::{MAX_HOPS, Trees, View};
use crate::node::effect::{Effect, Effects};
use crate::node::wire::{self, Cast, NodeMsg, Via};
use crate::overlay::Contact;
use crate::scribe::{Group, Verdict};
use bytes::Bytes;
use rand::rngs::ChaCha8Rng;

impl Trees {
    /// Multicasts a client's broadcast or event to the other nodes with members (this
    /// node's own members got it already).
    pub(crate) fn multicast(
        &mut self,
        v: &View<'_>,
        group: Group,
        payload: Bytes,
        fx: &mut Effects,
    ) {
        let count = self.next_cast;
        self.next_cast += 1;
        let splits = self.scribe.config().splits;
        let index = (count % u64::from(splits)) as u8;
        let key = self.keys.get(&group, splits, index);
        let numbered = self.sent.send(v.now, key, &group, index, &payload, count);
        let cast = own_cast(v, (key, group, index), numbered, Some(payload));
        self.stats.casts_sent += 1;
        self.pass_cast(v, cast, None, fx);
    }

    /// A peer's multicast (the node has it pass on under that peer's credit).
    pub(crate) fn handle_cast(
        &mut self,
        v: &View<'_>,
        from: Contact,
        mut c: Cast,
        fx: &mut Effects,
    ) {
        c.hops = c.hops.saturating_add(1);
        self.pass_cast(v, c, Some(from), fx);
    }

    /// Passes a multicast on from here: into the tree, along it, or toward it.
    pub(super) fn pass_cast(
        &mut self,
        v: &View<'_>,
        c: Cast,
        from: Option<Contact>,
        fx: &mut Effects,
    ) {
        let from_id = from.map(|f| f.id);
        if c.resent {
            if let Some(deliver) = self.take_resent(v, c) {
                fx.push(deliver);
            }
            return;
        }
        if !self.scribe.in_tree(c.key) {
            if c.via == Via::Tree
                && let Some(f) = from
            {
                // The sender holds us as a tree neighbour; we do not: it must repair.
                self.not_in_tree(f, c.key, fx);
            }
            return self.route_cast(v, c, from, fx);
        }
        if c.via == Via::Tree
            && let Some(f) = from
            && !self.scribe.passes_here(c.key, f.id)
        {
            // Along an edge this node no longer has (the sender has not heard yet, or it is
            // leaving and sends what it still held): the sender must repair, and the
            // multicast still goes through the tree from here, where the sequence window
            // keeps it from being delivered twice.
            self.not_in_tree(f, c.key, fx);
        }
        if self.scribe.check(
            v.now,
            c.origin,
            c.epoch,
            c.key,
            (c.seq, c.prev_ms),
            c.origin != v.overlay.id(),
        ) == Verdict::Old
        {
            self.stats.casts_duplicate += 1;
            return;
        }
        let targets = self.scribe.flood_targets(c.key, from_id);
        // The origin delivered to its own members already; a tail is for the trees only.
        if from.is_some() && !c.tail {
            fx.push(Effect::Deliver(c.group.clone(), c.payload.clone()));
        }
        if c.hops >= MAX_HOPS || targets.is_empty() {
            return;
        }
        let out = Cast {
            via: Via::Tree,
            ..c
        };
        let group = out.group.clone();
        let parent = self.scribe.parent(out.key).map(|p| p.id);
        let bytes = wire::encode(&NodeMsg::Cast(out));
        let routes = super::routes::Routes::new(v, &self.unreachable);
        for to in targets {
            // A neighbour silent lately is probed under the data (`scribe::probe`).
            self.scribe.sending_to(v.now, to.id, &routes);
            let child = parent != Some(to.id);
            fx.push(Effect::CastTo(to, group.clone(), bytes.clone(), child));
        }
    }

    /// Routes a multicast toward its tree (this node is not in it); `from` is the peer it
    /// came from, if any.
    pub(super) fn route_cast(
        &mut self,
        v: &View<'_>,
        c: Cast,
        from: Option<Contact>,
        fx: &mut Effects,
    ) {
        let Some((next, via)) = self.toward(v, c.key, c.via) else {
            return self.park(v, Parked::Cast(c, from), fx);
        };
        if c.hops >= MAX_HOPS {
            return;
        }
        // A hop silent lately is probed under the data (`scribe::probe`).
        let routes = super::routes::Routes::new(v, &self.unreachable);
        self.scribe.routing_via(v.now, next, &routes);
        let group = c.group.clone();
        let out = Cast { via, ..c };
        fx.push(Effect::CastTo(
            next,
            group,
            wire::encode(&NodeMsg::Cast(out)),
            false,
        ));
    }

    /// Holds a message that found no tree, if the overlay moved lately (see `held.rs`);
    /// drops it, counted, otherwise or if too much waits already.
    pub(super) fn park(&mut self, v: &View<'_>, msg: Parked, _fx: &mut Effects) {
        let hold = self.hold_for();
        let moving = self
            .moved_at
            .is_some_and(|t| v.now.saturating_duration_since(t) < hold);
        let cast = matches!(msg, Parked::Cast(..));
        // A tail carries nothing: with no tree (its last member went), nothing was lost.
        let tail = msg.is_tail();
        let was_empty = self.held.is_empty();
        if !moving || !self.held.park(v.now, msg) {
            if tail {
                return;
            }
            if cast {
                self.stats.casts_no_tree += 1;
            } else {
                self.stats.anycasts_no_tree += 1;
            }
            return;
        }
        self.stats.held += 1;
        if was_empty {
            self.held_until = Some(v.now + hold);
        }
    }

    /// Passes on the held messages whose tree is here now (or whose key has a closer node
    /// now), and drops those that waited their time.
    pub(crate) fn release_held(&mut self, v: &View<'_>, rng: &mut ChaCha8Rng, fx: &mut Effects) {
        if self.held.is_empty() {
            return;
        }
        let hold = self.hold_for();
        for (since, msg) in self.held.take_all() {
            let key = msg.key();
            let ready = self.scribe.in_tree(key) || self.route(v, key).is_some();
            let waited = v.now.saturating_duration_since(since);
            match msg {
                msg if !ready && waited < hold => self.held.put_back(since, msg),
                Parked::Cast(c, _) if !ready => self.stats.casts_no_tree += u64::from(!c.tail),
                Parked::Anycast(..) if !ready => self.stats.anycasts_no_tree += 1,
                Parked::Cast(c, from) => self.pass_cast(v, c, from, fx),
                Parked::Anycast(mut a, from) => {
                    a.budget_ms = a.budget_ms.saturating_sub(waited.as_millis() as u64);
                    if a.budget_ms == 0 {
                        self.expired(&a);
                    } else {
                        self.pass_anycast(v, rng, a, from, None, fx);
                    }
                }
            }
        }
        self.held_until = self.held.oldest().map(|oldest| oldest + hold);
    }
}

/// A message of this node's own on its way to tree `(key, group, index)`, numbered
/// `(seq, prev_ms)` there (see `sent.rs`): a client's, or a tail (`None`).
pub(super) fn own_cast(
    v: &View<'_>,
    (key, group, index): (crate::overlay::NodeId, Group, u8),
    (seq, prev_ms): (u64, u64),
    payload: Option<Bytes>,
) -> Cast {
    let own = v.overlay.contact();
    Cast {
        key,
        group,
        index,
        origin: own.id,
        epoch: own.epoch,
        seq,
        via: Via::Routed,
        hops: 0,
        tail: payload.is_none(),
        resent: false,
        prev_ms,
        payload: payload.unwrap_or_default(),
    }
}
