//! Relay traffic between nodes: what the mesh hands the node, the trees (Scribe) that carry
//! broadcasts, events, requests and tunnel builds, and the direct messages that carry
//! replies and tunnel data.
//!
//! - **Multicast** (broadcast to a cluster, event on a topic): the origin node delivers to
//!   its own members, then sends the message on one of the group's trees (round-robin),
//!   numbered. If it is in that tree it floods it to its tree neighbours; otherwise the
//!   message is routed toward the tree's key until it meets a node of the tree. Every tree
//!   node delivers to its members and floods on, never back where it came from, and takes
//!   each message once (see `scribe::window`).
//! - **Anycast** (request, tunnel build): the same entry into the tree, then a walk in it:
//!   each node sends it to its own members or to a neighbour, at random in proportion to
//!   the capacity reported through each way, never back. The node that takes it delivers to
//!   one local member chosen uniformly; the reply (or the tunnel's confirmation) goes straight
//!   back to the origin node over their direct link.

use super::held::Parked;
use super::wire::{self, Anycast, Cast, NodeMsg, Via, Wanted};
use super::{Node, Timer};
use crate::mesh::{Class, Incoming, Mesh};
use crate::overlay::{Contact, NodeId, Overlay};
use crate::relay::NodePacket;
use crate::scribe::{Group, GroupKind, Pick, Router, Verdict};
use crate::time::Instant;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::Duration;

/// Most hops a tree message may take: trees are a few hops deep; this only bounds what a
/// repair in progress could make wander.
const MAX_HOPS: u8 = 64;

/// How long a peer whose link failed (or whom a dial failed to reach) is routed around:
/// long enough for the overlay's heartbeats to find it dead, if it is.
const UNREACHABLE_FOR: Duration = Duration::from_secs(10);

/// The overlay's routes around the peers this node lost recently: a crashed node's links
/// fail at once, long before its neighbours' heartbeats declare it dead, and routing
/// through it meanwhile would lose what is sent.
pub(super) struct Routes<'a> {
    overlay: &'a Overlay,
    unreachable: &'a BTreeMap<NodeId, Instant>,
    now: Instant,
}

impl Router for Routes<'_> {
    fn own(&self) -> Contact {
        self.overlay.contact()
    }

    fn next_hop(&self, key: NodeId, avoid: Option<NodeId>) -> Option<Contact> {
        self.overlay.route_where(key, |id| self.usable(id, avoid))
    }
}

impl Routes<'_> {
    /// Neither `avoid` nor lost lately.
    fn usable(&self, id: NodeId, avoid: Option<NodeId>) -> bool {
        Some(id) != avoid
            && self
                .unreachable
                .get(&id)
                .is_none_or(|&until| until <= self.now)
    }
}

/// The routes of a networked node (`None` for a lone one).
fn routes<'a>(
    mesh: &'a Option<Mesh>,
    unreachable: &'a BTreeMap<NodeId, Instant>,
    now: Instant,
) -> Option<Routes<'a>> {
    Some(Routes {
        overlay: mesh.as_ref()?.overlay(),
        unreachable,
        now,
    })
}

impl Node {
    /// Handles what the mesh handed over, until it has nothing more.
    pub(super) fn drain_peers(&mut self) -> bool {
        let mut any = false;
        let mut moved = false;
        while let Some(incoming) = self.mesh.as_mut().and_then(|m| m.poll_incoming()) {
            any = true;
            // A peer came or went: trees may move (messages that find none wait, `held`).
            if !matches!(incoming, Incoming::Message(..)) {
                moved = true;
                self.routes_moved_at = Some(self.now);
            }
            let until = self.now + UNREACHABLE_FOR;
            match incoming {
                Incoming::Message(from, bytes) => self.on_peer_message(from, bytes),
                Incoming::Unlinked { node, failed } => {
                    if failed {
                        self.unreachable.insert(node, until);
                    }
                    self.peer_lost(node);
                }
                Incoming::Unreachable(node, undelivered) => {
                    self.unreachable.insert(node, until);
                    self.peer_lost(node);
                    for bytes in undelivered {
                        self.reroute(bytes);
                    }
                }
                Incoming::Linked(node) => {
                    self.unreachable.remove(&node);
                }
                Incoming::Down(node) => self.peer_lost(node),
            }
        }
        if moved {
            self.release_held();
        }
        any
    }

    /// Sends what the trees want sent.
    pub(super) fn flush_trees(&mut self) {
        while let Some((to, msg)) = self.scribe.as_mut().and_then(|s| s.poll_send()) {
            let bytes = wire::encode(&NodeMsg::Tree(msg));
            self.stats.tree_bytes_out += bytes.len() as u64;
            self.send_bytes(to, Class::Control, bytes);
        }
    }

    /// This node as peers reach it.
    pub(super) fn own_contact(&self) -> Contact {
        self.mesh
            .as_ref()
            .map(|m| m.overlay().contact())
            .unwrap_or_else(|| Contact::new(NodeId(0), ([0, 0, 0, 0], 0).into(), 0))
    }

    /// Sends a node message to a peer; false if it was refused (a full queue, no link).
    pub(super) fn send_peer(&mut self, to: Contact, class: Class, msg: &NodeMsg) -> bool {
        self.send_bytes(to, class, wire::encode(msg))
    }

    pub(super) fn send_bytes(&mut self, to: Contact, class: Class, bytes: Bytes) -> bool {
        let now = self.now;
        let Some(m) = self.mesh.as_mut() else {
            return false;
        };
        self.stats.peer_bytes_out += bytes.len() as u64;
        m.send(now, to, class, bytes).is_ok()
    }

    /// Keeps the link to a peer however idle (a tunnel runs over it).
    pub(super) fn pin(&mut self, node: Contact) {
        if let Some(m) = self.mesh.as_mut() {
            m.pin(node.id);
        }
    }

    pub(super) fn unpin(&mut self, node: Contact) {
        if let Some(m) = self.mesh.as_mut() {
            m.unpin(node.id);
        }
    }

    /// Local members of a group appeared or all left: join or leave its trees.
    pub(super) fn group_changed(&mut self, group: Group, present: bool) {
        let now = self.now;
        let (Some(scribe), Some(routes)) = (
            self.scribe.as_mut(),
            routes(&self.mesh, &self.unreachable, now),
        ) else {
            return;
        };
        if present {
            scribe.join(now, &group, &routes);
        } else {
            scribe.leave(&group);
        }
    }

    /// Tells the tree neighbours at once that this node's members take nothing new (it is
    /// shutting down and draining).
    pub(super) fn stop_offering(&mut self) {
        if let Some(scribe) = self.scribe.as_mut() {
            scribe.report_now(|_| 0);
        }
        self.flush_trees();
    }

    /// The trees' deadlines.
    pub(super) fn trees_timeout(&mut self) {
        let now = self.now;
        self.unreachable.retain(|_, until| *until > now);
        let Node {
            scribe,
            mesh,
            clusters,
            conns,
            unreachable,
            draining,
            ..
        } = self;
        let (Some(scribe), Some(routes)) = (scribe.as_mut(), routes(mesh, unreachable, now)) else {
            return;
        };
        if scribe.poll_timeout().is_some_and(|t| t <= now) {
            // A node shutting down offers its members for nothing new.
            let capacity = |g: &Group| match g.kind {
                GroupKind::Cluster if !*draining => {
                    super::requests::capacity(clusters, conns, &g.name)
                }
                _ => 0,
            };
            scribe.handle_timeout(now, &routes, capacity);
        }
    }

    /// Multicasts a client's broadcast or event to the other nodes with members.
    pub(super) fn multicast(&mut self, group: Group, payload: Bytes) {
        let Some(scribe) = self.scribe.as_ref() else {
            return;
        };
        let seq = self.next_cast;
        self.next_cast += 1;
        let splits = scribe.config().splits;
        let index = (seq % u64::from(splits)) as u8;
        let own = self.own_contact();
        let cast = Cast {
            key: self.tree_keys.get(&group, splits, index),
            group,
            index,
            origin: own.id,
            epoch: own.epoch,
            seq,
            via: Via::Routed,
            hops: 0,
            payload,
        };
        self.stats.casts_sent += 1;
        self.pass_cast(cast, None);
    }

    /// Starts an anycast from this node (a client's request or tunnel build, named `a.id`
    /// here); false if the first hop refused it (its queue is full).
    pub(super) fn start_anycast(&mut self, mut a: Anycast) -> bool {
        let Some(scribe) = self.scribe.as_ref() else {
            return false;
        };
        let splits = scribe.config().splits;
        let index = (self.next_cast % u64::from(splits)) as u8;
        self.next_cast += 1;
        a.index = index;
        let group = Group::cluster(a.cluster.clone());
        a.key = self.tree_keys.get(&group, splits, index);
        self.pass_anycast(a, None)
    }

    fn on_peer_message(&mut self, from: Contact, bytes: Bytes) {
        self.stats.peer_bytes_in += bytes.len() as u64;
        let msg = match wire::decode(&bytes) {
            Ok(m) => m,
            Err(_) => {
                // An authenticated peer that speaks garbage is a bug there; count it.
                self.stats.peer_messages_bad += 1;
                return;
            }
        };
        let now = self.now;
        if let (Some(scribe), Some(routes)) = (
            self.scribe.as_mut(),
            routes(&self.mesh, &self.unreachable, now),
        ) {
            scribe.heard_from(now, from, &routes);
        }
        match msg {
            NodeMsg::Tree(t) => {
                let mut joined = false;
                if let (Some(scribe), Some(routes)) = (
                    self.scribe.as_mut(),
                    routes(&self.mesh, &self.unreachable, now),
                ) {
                    let trees = scribe.tree_count();
                    scribe.handle(now, from, t, &routes);
                    joined = scribe.tree_count() > trees;
                }
                // A subscription made this node part of a tree: maybe the root that held
                // messages wait for. (Only then: beats are many, and change no tree.)
                if joined {
                    self.release_held();
                }
            }
            NodeMsg::Cast(mut c) => {
                c.hops = c.hops.saturating_add(1);
                let group = c.group.clone();
                self.in_transit(from, &group, bytes.len(), |node| {
                    node.pass_cast(c, Some(from))
                });
            }
            NodeMsg::Anycast(mut a) => {
                a.hops = a.hops.saturating_add(1);
                self.pass_anycast(a, Some(from));
            }
            NodeMsg::Reply { id, outcome } => self.on_remote_reply(id, outcome),
            NodeMsg::TunnelConfirm { tun, peer, window } => {
                self.on_remote_confirm(from, tun, peer, window)
            }
            NodeMsg::TunnelRefused { tun } => self.on_remote_refused(tun),
            NodeMsg::TunnelData {
                tun,
                size_or_cont,
                payload,
            } => self.on_remote_data(from, tun, size_or_cont, payload),
            NodeMsg::TunnelAllow { tun, space } => self.on_remote_allow(from, tun, space),
            NodeMsg::TunnelClose { tun, reason } => self.on_remote_close(from, tun, reason),
            NodeMsg::CastCredit { group, bytes } => self.on_cast_credit(from.id, group, bytes),
        }
    }

    /// A message whose next hop could not be reached: one routed toward a tree (or walking
    /// one) is sent again, around the lost peer; anything else was for that peer only.
    fn reroute(&mut self, bytes: Bytes) {
        match wire::decode(&bytes) {
            Ok(NodeMsg::Cast(c)) if c.via != Via::Tree => {
                self.stats.rerouted += 1;
                self.route_cast(c, None);
            }
            Ok(NodeMsg::Anycast(a)) => {
                self.stats.rerouted += 1;
                self.pass_anycast(a, None);
            }
            _ => self.stats.undelivered += 1,
        }
    }

    /// A peer is gone (its link closed, or the overlay found it dead): trees repair around
    /// it, tunnels through it end.
    fn peer_lost(&mut self, node: NodeId) {
        let now = self.now;
        // Multicasts waiting for its credit go around it (those already in the tree are
        // lost with it, as those in its link are).
        for bytes in self.cast_peer_lost(node) {
            self.reroute(bytes);
        }
        if let (Some(scribe), Some(routes)) = (
            self.scribe.as_mut(),
            routes(&self.mesh, &self.unreachable, now),
        ) {
            scribe.lost(now, node, &routes);
        }
        self.tunnels_lost(node);
    }

    /// Passes a multicast on from here: into the tree, along it, or toward it.
    fn pass_cast(&mut self, c: Cast, from: Option<Contact>) {
        let now = self.now;
        let Some(scribe) = self.scribe.as_mut() else {
            return;
        };
        let from_id = from.map(|f| f.id);
        if !scribe.in_tree(c.key) {
            if c.via == Via::Tree
                && let Some(f) = from
            {
                // The sender holds us as a tree neighbour; we do not: it must repair.
                self.stats.casts_stray += 1;
                let msg = NodeMsg::Tree(crate::scribe::ScribeMsg::NotInTree { key: c.key });
                self.send_peer(f, Class::Control, &msg);
            }
            return self.route_cast(c, from);
        }
        if c.via == Via::Tree && from_id.is_some_and(|f| !scribe.is_neighbour(c.key, f)) {
            // Along an edge this node no longer has (the sender has not heard yet, or it is
            // leaving and sends what it still held): the sender must repair, and the
            // multicast still goes through the tree from here, where the sequence window
            // keeps it from being delivered twice.
            self.stats.casts_stray += 1;
            if let Some(f) = from {
                let msg = NodeMsg::Tree(crate::scribe::ScribeMsg::NotInTree { key: c.key });
                self.send_peer(f, Class::Control, &msg);
            }
        }
        let Some(scribe) = self.scribe.as_mut() else {
            return;
        };
        if scribe.check(now, c.origin, c.epoch, c.key, c.seq) == Verdict::Old {
            self.stats.casts_duplicate += 1;
            return;
        }
        let targets = scribe.flood_targets(c.key, from_id);
        // The origin delivered to its own members already.
        if from.is_some() {
            self.deliver_cast(&c.group, &c.payload);
        }
        if c.hops >= MAX_HOPS || targets.is_empty() {
            return;
        }
        let out = Cast {
            via: Via::Tree,
            ..c
        };
        let group = out.group.clone();
        let bytes = wire::encode(&NodeMsg::Cast(out));
        for to in targets {
            self.send_cast(to, &group, bytes.clone());
        }
    }

    /// Routes a multicast toward its tree (this node is not in it); `from` is the peer it
    /// came from, if any.
    fn route_cast(&mut self, c: Cast, from: Option<Contact>) {
        let Some((next, via)) = self.toward(c.key, c.via) else {
            self.park(Parked::Cast(c, from));
            return;
        };
        if c.hops >= MAX_HOPS {
            return;
        }
        let group = c.group.clone();
        let out = Cast { via, ..c };
        self.send_cast(next, &group, wire::encode(&NodeMsg::Cast(out)));
    }

    /// The next hop of a message routed toward a tree this node is not in. At the key's
    /// closest node (no next hop) the tree may still live one step away: a node that just
    /// joined closest to a key is routed to before the old root hands the tree over, so
    /// the message goes on once, to the closest other node. Otherwise nobody anywhere
    /// is a member.
    fn toward(&self, key: NodeId, via: Via) -> Option<(Contact, Via)> {
        if let Some(next) = self.route(key) {
            return Some((next, via));
        }
        if via == Via::Detour {
            return None;
        }
        let routes = routes(&self.mesh, &self.unreachable, self.now)?;
        let closest_other = routes
            .overlay
            .leaves()
            .members()
            .filter(|id| routes.usable(*id, None))
            .fold(None, |best: Option<NodeId>, id| match best {
                Some(b) if !key.prefers(id, b) => Some(b),
                _ => Some(id),
            })?;
        let c = routes.overlay.contact_of(closest_other)?;
        Some((c, Via::Detour))
    }

    /// Delivers a multicast to this node's members of its group.
    fn deliver_cast(&mut self, group: &Group, payload: &Bytes) {
        match group.kind {
            GroupKind::Cluster => {
                if let Some(members) = self.clusters.get(&group.name) {
                    self.stats.casts_delivered += 1;
                    self.conns.fan_out(
                        members,
                        &NodePacket::Broadcast {
                            message: payload.clone(),
                        },
                    );
                    self.casts.delivered_to(group, &self.conns, members);
                }
            }
            GroupKind::Topic => {
                if let Some(subscribers) = self.topics.get(&group.name) {
                    self.stats.casts_delivered += 1;
                    self.conns.fan_out(
                        subscribers,
                        &NodePacket::Publish {
                            topic: group.name.clone(),
                            event: payload.clone(),
                        },
                    );
                    self.casts.delivered_to(group, &self.conns, subscribers);
                }
            }
        }
    }

    /// Passes an anycast on from here: to a local member, a tree neighbour, or toward the
    /// tree. False only if it could not leave the origin (a full queue).
    fn pass_anycast(&mut self, mut a: Anycast, from: Option<Contact>) -> bool {
        let Some(scribe) = self.scribe.as_ref() else {
            return false;
        };
        if a.budget_ms == 0 || a.hops >= MAX_HOPS {
            self.stats.anycasts_expired += 1;
            return true;
        }
        let from_id = from.map(|f| f.id);
        let next = if scribe.in_tree(a.key) {
            // From a node that is no tree neighbour, it enters the tree here.
            let came = from_id.filter(|&f| scribe.is_neighbour(a.key, f));
            let local = self.capacity_of(&a.cluster);
            let Some(scribe) = self.scribe.as_ref() else {
                return false;
            };
            // A node shutting down gives its members nothing new while another can take it:
            // what its neighbours sent before they heard (see `Node::stop_offering`), or
            // before they heard it left, may go back where it came from.
            let (offered, came) = if self.stopped {
                (0, None)
            } else {
                (local, came)
            };
            let pick = match scribe.anycast(a.key, came, offered, &mut self.rng) {
                Pick::None if local > 0 => Pick::Local,
                pick => pick,
            };
            match pick {
                Pick::Local => {
                    self.land_anycast(a);
                    return true;
                }
                Pick::Neighbour(c) => {
                    a.via = Via::Tree;
                    c
                }
                Pick::None => {
                    self.stats.anycasts_lost += 1;
                    return true;
                }
            }
        } else {
            match self.toward(a.key, a.via) {
                Some((c, via)) => {
                    a.via = via;
                    c
                }
                // No tree at the key's closest nodes: no member anywhere, unless the tree
                // is moving.
                None => {
                    self.park(Parked::Anycast(a, from));
                    return true;
                }
            }
        };
        // The time the hop takes (a round trip, to leave room for the way back) is off the
        // budget: a request that could not be answered in time is not delivered.
        let hop = self
            .mesh
            .as_ref()
            .and_then(|m| m.overlay().rtt(next.id))
            .or(self.scribe.as_ref().map(|s| s.config().hop_rtt))
            .unwrap_or_default();
        a.budget_ms = a.budget_ms.saturating_sub((hop.as_millis() as u64).max(1));
        if a.budget_ms == 0 {
            self.stats.anycasts_expired += 1;
            return true;
        }
        let sent = self.send_peer(next, Class::Data, &NodeMsg::Anycast(a));
        if !sent {
            self.stats.anycasts_lost += 1;
        }
        sent || from.is_some()
    }

    /// An anycast ends here: one of this node's members of the cluster gets it.
    fn land_anycast(&mut self, a: Anycast) {
        let Some(member) = self.pick_member(&a.cluster, true) else {
            self.stats.anycasts_lost += 1;
            return;
        };
        let own =
            a.origin.id == self.own_contact().id && a.origin.epoch == self.own_contact().epoch;
        match (&a.wanted, own) {
            (Wanted::Request(request), true) => {
                let request = request.clone();
                if self.requests.contains_key(&a.id) {
                    self.deliver_request(a.id, member, request, a.timeout_ms);
                }
            }
            (Wanted::Request(request), false) => {
                let request = request.clone();
                self.accept_remote_request(&a, member, request);
            }
            (Wanted::Tunnel, true) => {
                if self.tunnels.contains_key(&a.id) {
                    self.offer_tunnel(a.id, member);
                }
            }
            (Wanted::Tunnel, false) => self.accept_remote_tunnel(&a, member),
        }
    }

    /// The next hop toward `key` (around peers lost recently); `None` here.
    fn route(&self, key: NodeId) -> Option<Contact> {
        routes(&self.mesh, &self.unreachable, self.now)?.next_hop(key, None)
    }

    /// How long a message waits at the key's closest node for a tree in repair: its
    /// members subscribe again at once, or at the next beat if they did a beat ago.
    fn hold_for(&self) -> Duration {
        self.scribe
            .as_ref()
            .map_or(Duration::ZERO, |s| s.config().beat * 2)
    }

    /// Holds a message that found no tree, if the overlay moved lately (see the `held`
    /// module); drops it, counted, otherwise or if too much waits already.
    fn park(&mut self, msg: Parked) {
        let hold = self.hold_for();
        let moving = self
            .routes_moved_at
            .is_some_and(|t| self.now.saturating_duration_since(t) < hold);
        let cast = matches!(msg, Parked::Cast(..));
        let was_empty = self.held.is_empty();
        if !moving || !self.held.park(self.now, msg) {
            if cast {
                self.stats.casts_no_tree += 1;
            } else {
                self.stats.anycasts_no_tree += 1;
            }
            return;
        }
        self.stats.held += 1;
        if was_empty {
            self.timers.set(Timer::Held, self.now + hold);
        }
    }

    /// Passes on the held messages whose tree is here now (or whose key has a closer node
    /// now), and drops those that waited their time.
    pub(super) fn release_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let (now, hold) = (self.now, self.hold_for());
        for (since, msg) in self.held.take_all() {
            let key = msg.key();
            let ready =
                self.scribe.as_ref().is_some_and(|s| s.in_tree(key)) || self.route(key).is_some();
            let waited = now.saturating_duration_since(since);
            match msg {
                msg if !ready && waited < hold => self.held.put_back(since, msg),
                Parked::Cast(..) if !ready => self.stats.casts_no_tree += 1,
                Parked::Anycast(..) if !ready => self.stats.anycasts_no_tree += 1,
                Parked::Cast(c, from) => self.pass_cast(c, from),
                Parked::Anycast(mut a, from) => {
                    a.budget_ms = a.budget_ms.saturating_sub(waited.as_millis() as u64);
                    if a.budget_ms == 0 {
                        self.stats.anycasts_expired += 1;
                    } else {
                        self.pass_anycast(a, from);
                    }
                }
            }
        }
        match self.held.oldest() {
            Some(oldest) => self.timers.set(Timer::Held, oldest + hold),
            None => {
                self.timers.cancel(Timer::Held);
            }
        }
    }
}
