//! Multicasts that a tree node missed, asked for again: a node with members of a group
//! that skipped numbers of an origin's messages on one of its trees asks the origin (an
//! ask routed toward the origin's id, as a Pastry key); the origin sends what it still
//! keeps straight back, under the group's credit, and says which numbers are gone. What
//! the asker takes is delivered there only, never passed on: every tree node asks for
//! itself. What is gone, or never answered, is counted and reported as lost.
//!
//! So a stalled, crashed or cut-off node on a tree costs the nodes behind it a delay, not
//! the messages; a node that was stalled or cut off itself gets what its members missed
//! once it is back (within what the origin keeps, `sent.rs`).

use super::casts::own_cast;
use super::sent::Resend;
use super::{MAX_HOPS, Trees, View};
use crate::mesh::Class;
use crate::node::effect::{Effect, Effects, Refusal, to_peer};
use crate::node::wire::{self, Cast, MAX_ASK_RANGES, NodeMsg, Range, Via};
use crate::overlay::{Contact, NodeId};
use crate::scribe::Group;

impl Trees {
    /// Tails due, asks due, and what was given up; what was kept for its time goes.
    pub(crate) fn handle_repair_timeout(&mut self, v: &View<'_>, fx: &mut Effects) {
        self.sent.expire(v.now);
        let own = v.overlay.contact();
        for (key, group, index, numbered) in self.sent.due_tails(v.now) {
            self.stats.cast_tails += 1;
            let tail = own_cast(v, (key, group, index), numbered, None);
            self.pass_cast(v, tail, None, fx);
        }
        if self.scribe.next_ask().is_some_and(|t| t <= v.now) {
            for ask in self.scribe.asks(v.now) {
                self.stats.casts_asked += 1;
                let msg = NodeMsg::CastAsk {
                    key: ask.key,
                    origin: ask.origin,
                    epoch: ask.epoch,
                    asker: own,
                    ranges: ask.ranges,
                    within_ms: ask.within_ms,
                    sent_ms: 0, // stamped by `route_ask`
                    hops: 0,
                };
                self.route_ask(v, (ask.key, ask.origin), None, msg, fx);
            }
        }
        for (group, n) in self.scribe.take_given_up() {
            self.stats.casts_unrepaired += n;
            self.losses.add("cast_unrepaired", n, || {
                format!("{group}: its origin never answered")
            });
        }
    }

    /// A peer's ask for an origin's multicasts, or an origin's word that some are gone.
    pub(crate) fn handle_repair_msg(
        &mut self,
        v: &View<'_>,
        from: Contact,
        msg: NodeMsg,
        fx: &mut Effects,
    ) {
        match msg {
            NodeMsg::CastGone {
                key,
                epoch,
                gone,
                skipped,
            } => self.handle_gone(from, key, epoch, (&gone, &skipped)),
            ask => self.handle_ask(v, from, ask, fx),
        }
    }

    /// A peer's ask for an origin's multicasts: answered here if this node is the origin,
    /// passed on toward it otherwise.
    fn handle_ask(&mut self, v: &View<'_>, from: Contact, mut msg: NodeMsg, fx: &mut Effects) {
        let NodeMsg::CastAsk {
            key,
            origin,
            epoch,
            asker,
            ref mut within_ms,
            sent_ms,
            ref mut hops,
            ..
        } = msg
        else {
            return;
        };
        // The asker's members are older by what this trip took beyond the fastest: a
        // swarm run held asks 4 s behind a delay spike, and the origin, taking their
        // `within_ms` as of their arrival, called owed messages older than the members.
        let late = v.mesh.transit_excess(from.id, v.now, sent_ms);
        *within_ms = within_ms.saturating_add(late.map_or(0, |d| d.as_millis() as u64));
        let within_ms = *within_ms;
        let own = v.overlay.contact();
        if origin != own.id {
            if *hops >= MAX_HOPS {
                return;
            }
            *hops += 1;
            return self.route_ask(v, (key, origin), Some(from.id), msg, fx);
        }
        let NodeMsg::CastAsk { ranges, .. } = msg else {
            return;
        };
        let (mut gone, mut skipped) = (Vec::new(), Vec::new());
        if epoch != own.epoch {
            // Asked of an earlier incarnation of this node: all of it is gone.
            gone = ranges;
        } else {
            let within = std::time::Duration::from_millis(within_ms);
            for range in ranges.into_iter().take(MAX_ASK_RANGES) {
                let r = self.sent.resend(v.now, key, range, within);
                gone.extend(r.gone);
                skipped.extend(r.skipped);
                if let Some(tree) = r.tree {
                    self.resend(own, asker, key, tree, r.again, fx);
                }
            }
        }
        if !gone.is_empty() || !skipped.is_empty() {
            gone.truncate(MAX_ASK_RANGES);
            skipped.truncate(MAX_ASK_RANGES);
            let msg = NodeMsg::CastGone {
                key,
                epoch,
                gone,
                skipped,
            };
            fx.push(to_peer(asker, Class::Control, &msg, Refusal::Ignore));
        }
    }

    /// The origin `from` no longer has `gone` of tree `key` (they are lost here), and
    /// sent `skipped` before this node had members.
    fn handle_gone(
        &mut self,
        from: Contact,
        key: NodeId,
        epoch: u64,
        (gone, skipped): (&[Range], &[Range]),
    ) {
        let n = self.scribe.gone(from.id, epoch, key, gone, skipped);
        if n > 0 {
            self.stats.casts_gone += n;
            let group = self.scribe.group_of(key).cloned();
            self.losses.add("cast_gone", n, || match group {
                Some(g) => format!("{g}: no longer kept by node {}", from.id),
                None => format!("tree {key}: no longer kept by node {}", from.id),
            });
        }
    }

    /// A multicast sent again straight to this node: delivered if it is still missing
    /// here, never passed on.
    pub(super) fn take_resent(&mut self, v: &View<'_>, c: Cast) -> Option<Effect> {
        if !self.scribe.in_tree(c.key) {
            return None; // its members left meanwhile: nobody here is owed it
        }
        if self
            .scribe
            .check(v.now, c.origin, c.epoch, c.key, (c.seq, 0), true)
            == crate::scribe::Verdict::Old
        {
            self.stats.casts_duplicate += 1;
            return None;
        }
        self.stats.casts_repaired += 1;
        (!c.tail).then(|| Effect::Deliver(c.group, c.payload))
    }

    /// Sends kept messages of tree `key` again to `asker`, under the group's credit.
    fn resend(
        &mut self,
        own: Contact,
        asker: Contact,
        key: NodeId,
        (group, index): (Group, u8),
        again: Vec<Resend>,
        fx: &mut Effects,
    ) {
        for (seq, payload) in again {
            self.stats.casts_resent += 1;
            let c = Cast {
                key,
                group: group.clone(),
                index,
                origin: own.id,
                epoch: own.epoch,
                seq,
                via: Via::Tree,
                hops: 0,
                tail: payload.is_none(),
                resent: true,
                prev_ms: 0,
                payload: payload.unwrap_or_default(),
            };
            let bytes = wire::encode(&NodeMsg::Cast(c));
            fx.push(Effect::CastTo(asker, group.clone(), bytes, false));
        }
    }

    /// Passes a message on toward node `to` for `from` (`hops` so far): straight to `to` if
    /// it can, else along the overlay's route to its id, around `avoid` (a hop that could
    /// not be reached; `to` itself when an origin's answer could not go straight). Dropped
    /// and counted past [`MAX_HOPS`], or where no hop is left (`to` is gone, or this node
    /// is the closest to it but for it).
    pub(crate) fn forward(
        &mut self,
        v: &View<'_>,
        (from, to, hops): (Contact, NodeId, u8),
        inner: bytes::Bytes,
        avoid: Option<NodeId>,
        fx: &mut Effects,
    ) {
        let next = match avoid {
            _ if hops >= MAX_HOPS => None,
            None => self.way_to(v, to),
            Some(hop) if hop == to => v.overlay.route(to, Some(to)),
            Some(hop) => v
                .mesh
                .linked_contact(to)
                .or_else(|| v.overlay.contact_of(to))
                .or_else(|| v.overlay.route(to, Some(hop))),
        };
        let Some(next) = next.filter(|n| Some(n.id) != avoid) else {
            self.stats.undelivered += 1;
            self.losses.note("peer_unreachable", || {
                let what = wire::decode(&inner).map_or("a message".into(), |m| m.describe());
                format!("{what} for node {to}: no way to it")
            });
            return;
        };
        self.stats.rerouted += 1;
        let msg = NodeMsg::Forward {
            from,
            to,
            hops,
            inner,
        };
        fx.push(to_peer(next, Class::Urgent, &msg, Refusal::Ignore));
    }

    /// Sends an ask one hop on toward `origin`: straight to it over a link or where the
    /// overlay knows it, else along the overlay's route to its id; dropped where no hop is
    /// known (the origin is gone, or not yet back: the asker asks again).
    fn route_ask(
        &mut self,
        v: &View<'_>,
        (key, origin): (NodeId, NodeId),
        from: Option<NodeId>,
        mut msg: NodeMsg,
        fx: &mut Effects,
    ) {
        if let NodeMsg::CastAsk { sent_ms, .. } = &mut msg {
            *sent_ms = crate::mesh::one_way::stamp(v.now);
        }
        // A node that knows no way toward the origin (it joined on one side of a partition
        // and its overlay has not yet heard of the other side's nodes, seconds after the
        // heal) asks up the tree that brought it the origin's head: found by swarm testing,
        // where such asks went nowhere for 8 s and a member that left meanwhile never got
        // what was sent during the cut.
        let next = self
            .way_to(v, origin)
            .or_else(|| self.scribe.parent(key).filter(|p| Some(p.id) != from));
        if let Some(next) = next {
            let routes = super::routes::Routes::new(v, &self.unreachable);
            self.scribe.routing_via(v.now, next, &routes);
            fx.push(to_peer(next, Class::Control, &msg, Refusal::Ignore));
        }
    }

    /// The hop toward node `to`: straight to it over a link or where the overlay knows
    /// it, else along the trees' route to its id.
    fn way_to(&self, v: &View<'_>, to: NodeId) -> Option<Contact> {
        v.mesh
            .linked_contact(to)
            .or_else(|| v.overlay.contact_of(to))
            .or_else(|| self.route(v, to))
    }
}
