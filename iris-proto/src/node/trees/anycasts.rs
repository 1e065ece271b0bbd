//! Anycasts on the trees: a request or tunnel build enters its cluster's tree like a
//! multicast, then walks it toward capacity until a node takes it for one of its members.

use super::held::Parked;
use super::{MAX_HOPS, Trees, View};
use crate::mesh::Class;
use crate::mesh::one_way;
use crate::node::effect::{Effect, Effects, Refusal, Start, to_peer};
use crate::node::wire::{Anycast, NodeMsg, Via};
use crate::overlay::{Contact, NodeId};
use crate::scribe::{Group, Pick};
use rand::rngs::ChaCha8Rng;

impl Trees {
    /// Starts an anycast from this node (a client's request or tunnel build, named `a.id`
    /// here): it fails at once ([`Refusal::Anycast`]) if its first hop refuses it.
    pub(crate) fn start_anycast(
        &mut self,
        v: &View<'_>,
        rng: &mut ChaCha8Rng,
        mut a: Anycast,
        start: Start,
        fx: &mut Effects,
    ) {
        let splits = self.scribe.config().splits;
        let index = (self.next_cast % u64::from(splits)) as u8;
        self.next_cast += 1;
        a.index = index;
        let group = Group::cluster(a.cluster.clone());
        a.key = self.keys.get(&group, splits, index);
        self.pass_anycast(v, rng, a, None, Some(start), fx);
    }

    /// A peer's anycast.
    pub(crate) fn handle_anycast(
        &mut self,
        v: &View<'_>,
        rng: &mut ChaCha8Rng,
        from: Contact,
        mut a: Anycast,
        fx: &mut Effects,
    ) {
        a.hops = a.hops.saturating_add(1);
        a.budget_ms = a
            .budget_ms
            .saturating_sub(self.late_by(v, from.id, a.due_ms));
        self.pass_anycast(v, rng, a, Some(from), None, fx);
    }

    /// Passes an anycast on from here: to a local member, a tree neighbour, or toward the
    /// tree. `start`: it is leaving this node for its own client.
    pub(super) fn pass_anycast(
        &mut self,
        v: &View<'_>,
        rng: &mut ChaCha8Rng,
        mut a: Anycast,
        from: Option<Contact>,
        start: Option<Start>,
        fx: &mut Effects,
    ) {
        if a.budget_ms == 0 || a.hops >= MAX_HOPS {
            return self.expired(&a);
        }
        let in_tree = self.scribe.in_tree(a.key);
        let way = if in_tree {
            match self.pick(v, rng, &a, from) {
                Pick::Local => return fx.push(Effect::Landed(a)),
                Pick::Neighbour(c) => Some((c, Via::Tree)),
                Pick::None => None,
            }
        } else {
            self.toward(v, a.key, a.via)
        };
        // A node that has left dials nobody: with no way on, or one it has no link to, the
        // anycast would be dropped here; it goes back where it came from (see `bounce`).
        let way = match bounce(v, from) {
            Some(back) if way.is_none_or(|(c, _)| !v.mesh.is_linked(c.id)) => {
                Some((back, Via::Routed))
            }
            _ => way,
        };
        let Some((next, via)) = way else {
            if !in_tree {
                // No tree at the key's closest nodes: no member anywhere, unless the tree
                // is moving.
                return self.park(v, Parked::Anycast(a, from), fx);
            }
            self.stats.anycasts_lost += 1;
            self.losses.note("anycast_lost", || {
                format!(
                    "a request or tunnel of {}: no member reachable from here",
                    a.cluster
                )
            });
            return;
        };
        a.via = via;
        let cost = self.hop_cost(v, next.id);
        a.budget_ms = a.budget_ms.saturating_sub(cost);
        if a.budget_ms == 0 {
            return self.expired(&a);
        }
        a.due_ms = one_way::stamp(v.now) + cost / 2;
        let msg = NodeMsg::Anycast(a);
        // Ahead of bulk data on the link: a request does not wait behind a flood of
        // broadcasts (issue 22).
        fx.push(to_peer(next, Class::Urgent, &msg, Refusal::Anycast(start)));
    }

    /// Milliseconds an anycast from `from` arrived after it was due by the budget's plan
    /// (`due_ms`, on `from`'s clock): more than the fastest trip seen on the link took, and
    /// more than the half of the hop's cost its sender allowed for the way here (a delay
    /// spike, a stalled link, a queue). Without it a request held up on the way would reach
    /// its member after the requester gave up.
    fn late_by(&self, v: &View<'_>, from: NodeId, due_ms: u64) -> u64 {
        v.mesh
            .transit_excess(from, v.now, due_ms)
            .map_or(0, |late| late.as_millis() as u64)
    }

    /// Milliseconds a hop to `next` takes off an anycast's budget: a round trip, to leave
    /// room for the way back (a request that could not be answered in time is not
    /// delivered), and two more if the message must wait for a dial and a handshake (the
    /// connection's and the link's). A peer not measured yet counts as slow as the slow
    /// ones measured (see `Overlay::planned_rtt`).
    fn hop_cost(&self, v: &View<'_>, next: NodeId) -> u64 {
        let rtt = v
            .overlay
            .planned_rtt(next)
            .unwrap_or(self.scribe.config().hop_rtt);
        let trips = if v.mesh.is_linked(next) { 1 } else { 3 };
        (rtt.as_millis() as u64).max(1) * trips
    }

    /// Where an anycast in a tree of this node goes: its local members or a neighbour, by
    /// the capacity each way reports, never back to a neighbour it came from. A node
    /// shutting down gives its members nothing new while another can take it: what its
    /// neighbours sent before they heard (see `Trees::stop_offering`), or before they heard
    /// it left, may go back where it came from. But a leaving node dials nobody: to a
    /// neighbour it has no link to any more (its links close once its peers have closed
    /// their sides; an anycast can still come by a link dialed to it since) the anycast
    /// would be dropped, and its own members, still draining, take it rather.
    fn pick(&self, v: &View<'_>, rng: &mut ChaCha8Rng, a: &Anycast, from: Option<Contact>) -> Pick {
        // From a node that is no tree neighbour, it enters the tree here.
        let came = from
            .map(|f| f.id)
            .filter(|&f| self.scribe.is_neighbour(a.key, f));
        let local = (v.capacity)(&a.cluster);
        // The requester's own node is the cheapest place for a request: no hop, no link.
        // Its members take it while they have room (as NATS prefers local queue
        // subscribers); past that, the tree spreads it by the capacity reported.
        if from.is_none() && !v.stopped && (v.free)(&a.cluster) > 0 {
            return Pick::Local;
        }
        let (offered, came) = if v.stopped { (0, None) } else { (local, came) };
        match self.scribe.anycast(a.key, came, offered, rng) {
            Pick::None if local > 0 => Pick::Local,
            Pick::Neighbour(c) if v.stopped && local > 0 && !v.mesh.is_linked(c.id) => Pick::Local,
            pick => pick,
        }
    }

    /// A request or tunnel build that could not go on from here (a full queue, no link).
    pub(crate) fn anycast_refused(&mut self) {
        self.stats.anycasts_lost += 1;
        self.losses.note("anycast_lost", || {
            "a request or tunnel: its next hop took nothing".into()
        });
    }

    /// A request or tunnel build whose time ran out on the way (or that went too many
    /// hops): dropped here, its origin answers it timed out.
    pub(super) fn expired(&mut self, a: &Anycast) {
        self.stats.anycasts_expired += 1;
        self.losses.note("anycast_expired", || {
            format!(
                "a request or tunnel of {}: its time ran out after {} hops",
                a.cluster, a.hops
            )
        });
    }
}

/// Where a node that has left (said farewell: its members are gone, and it dials nobody)
/// sends an anycast it has no way on for: back to the peer it came from, by the link it came
/// on. That peer read the farewell before it (it went first on the same link, and control
/// goes ahead of data), so it no longer counts this node as a way to the tree: it sends the
/// anycast on another way, or to a member of its own. `None`: not left, or the anycast is
/// this node's own.
fn bounce(v: &View<'_>, from: Option<Contact>) -> Option<Contact> {
    from.filter(|_| v.mesh.is_leaving())
}
