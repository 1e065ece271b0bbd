//! Routes of the network side: what the driver reports of peer links (to the mesh), what
//! the mesh reports of peers (links up and down, peers dead) and what peers say (to the
//! trees, the multicast flow, requests and tunnels), and the deliveries that end there.

use super::ids::{ConnId, PeerReqKey, PeerTunKey, ReqKey, TunKey};
use super::router::call;
use super::wire::{self, Anycast, NodeMsg, Wanted};
use super::{Input, Node, Output};
use crate::mesh::{Incoming, MeshInput};
use crate::overlay::{Contact, NodeId};
use crate::relay::NodePacket;
use crate::scribe::{Group, GroupKind};
use bytes::Bytes;

impl Node {
    /// What the driver reports of peer links, discovery and signatures: the mesh's.
    pub(super) fn on_peer_input(&mut self, input: Input<'_>) {
        let now = self.now;
        let Some(n) = self.net.as_mut() else {
            // A lone node has no peer listener; a driver that reports a link anyway gets it
            // closed.
            if let Input::PeerConnected { link, .. } = input {
                self.outputs.push_back(Output::PeerClose(link));
            }
            return;
        };
        let input = match input {
            Input::PeerConnected { link, dial, from } => MeshInput::Connected { link, dial, from },
            Input::PeerData(link, data) => MeshInput::Data(link, data),
            Input::PeerRead(link, buf) => MeshInput::Read(link, buf),
            Input::PeerFlushed(link, n) => MeshInput::Flushed(link, n),
            Input::PeerGone(link) => MeshInput::Gone(link),
            Input::DialFailed(dial) => MeshInput::DialFailed(dial),
            Input::JoinVia(addr) => MeshInput::JoinVia(addr),
            Input::Beacon { from, data } => MeshInput::Beacon { from, data },
            Input::Signed(link, signature) => MeshInput::Signed(link, signature),
            Input::ClientConnected(_)
            | Input::ClientData(..)
            | Input::ClientRead(..)
            | Input::ClientFlushed(..)
            | Input::ClientGone(_)
            | Input::Timeout
            | Input::Shutdown(_) => unreachable!("client inputs are routed by Node::handle"),
        };
        n.mesh.handle(now, input);
    }

    /// News from the mesh about a peer.
    pub(super) fn on_news(&mut self, news: Incoming) {
        let now = self.now;
        if let Some(n) = self.net.as_mut()
            && !matches!(news, Incoming::Message(..))
        {
            n.trees.peer_moved(now);
        }
        match news {
            Incoming::Message(from, bytes) => self.on_peer_message(from, bytes),
            Incoming::Unlinked { node, failed } => {
                if failed {
                    self.mark_unreachable(node);
                }
                self.peer_lost(node);
            }
            Incoming::Unreachable(node, undelivered) => {
                self.mark_unreachable(node);
                self.peer_lost(node);
                for u in undelivered {
                    self.with_trees(|t, v, rng, fx| {
                        t.reroute(v, rng, (&u.bytes, Some(node)), u.waited, fx)
                    });
                }
            }
            Incoming::Linked(node) => {
                if let Some(n) = self.net.as_mut() {
                    n.trees.handle_linked(now, node);
                }
            }
            Incoming::Down(node) => self.peer_lost(node),
        }
    }

    fn mark_unreachable(&mut self, node: NodeId) {
        let now = self.now;
        if let Some(n) = self.net.as_mut() {
            n.trees.mark_unreachable(now, node);
        }
    }

    /// A peer is gone (its link closed, or the overlay found it dead): multicasts waiting
    /// for its credit go around it (those already in the tree are lost with it, as those in
    /// its link are), trees repair around it, tunnels through it end.
    fn peer_lost(&mut self, node: NodeId) {
        if let Some(n) = self.net.as_mut() {
            call!(self, |fx| n.casts.handle_peer_lost(node, fx));
        }
        self.with_trees(|t, v, _, _| t.handle_lost(v, node));
        call!(self, |fx| self.tunnels.handle_peer_lost(node, fx));
    }

    fn on_peer_message(&mut self, from: Contact, bytes: Bytes) {
        let len = bytes.len();
        let decoded = wire::decode(&bytes);
        if let Some(n) = self.net.as_mut() {
            n.trees.received(len, decoded.is_ok());
        }
        // An authenticated peer that speaks garbage is a bug there: counted, dropped.
        let Ok(msg) = decoded else {
            return;
        };
        self.with_trees(|t, v, _, _| t.heard_from(v, from));
        match msg {
            NodeMsg::Tree(msg) => {
                self.with_trees(|t, v, rng, fx| t.handle_tree_msg(v, rng, from, msg, fx))
            }
            NodeMsg::Cast(c) => {
                let group = c.group.clone();
                if let Some(n) = self.net.as_mut() {
                    n.casts.begin_transit(from, len);
                }
                self.with_trees(|t, v, _, fx| t.handle_cast(v, from, c, fx));
                if let Some(n) = self.net.as_mut() {
                    n.casts.end_transit(&group);
                }
            }
            NodeMsg::Anycast(a) => {
                self.with_trees(|t, v, rng, fx| t.handle_anycast(v, rng, from, a, fx))
            }
            NodeMsg::Reply { id, outcome } => self.on_remote_reply(id, outcome),
            NodeMsg::TunnelConfirm { tun, peer, window } => {
                let (key, peer) = (TunKey(tun), PeerTunKey(peer));
                call!(self, |fx| self
                    .tunnels
                    .handle_remote_confirm(from, key, peer, window, fx));
            }
            NodeMsg::TunnelRefused { tun } => {
                call!(self, |fx| self.tunnels.handle_refused(TunKey(tun), fx));
            }
            NodeMsg::TunnelData {
                tun,
                size_or_cont,
                payload,
            } => {
                let key = TunKey(tun);
                call!(self, |fx| self.tunnels.handle_remote_data(
                    from,
                    key,
                    size_or_cont,
                    payload,
                    fx
                ));
            }
            NodeMsg::TunnelAllow { tun, space } => {
                let key = TunKey(tun);
                call!(self, |fx| self
                    .tunnels
                    .handle_remote_allow(from, key, space, fx));
            }
            NodeMsg::TunnelClose { tun, reason } => {
                let key = TunKey(tun);
                call!(self, |fx| self
                    .tunnels
                    .handle_remote_close(from, key, reason, fx));
            }
            msg @ (NodeMsg::CastAsk { .. } | NodeMsg::CastGone { .. }) => {
                self.with_trees(|t, v, _, fx| t.handle_repair_msg(v, from, msg, fx));
            }
            NodeMsg::CastCredit { group, bytes } => {
                if let Some(n) = self.net.as_mut() {
                    call!(self, |fx| n.casts.handle_credit(from.id, group, bytes, fx));
                }
            }
            NodeMsg::CastUntether { group } => self.on_untether(&group),
            msg @ NodeMsg::Forward { .. } => self.on_forward(msg),
        }
    }

    /// A message passed on for node `to`: taken here as `sender`'s if this is `to` (only
    /// asks for multicasts and their answers come this way), else passed on toward it.
    /// A member's outcome for this node's request `id`, straight from its node or passed on.
    fn on_remote_reply(&mut self, id: u64, outcome: Result<Bytes, crate::relay::Name>) {
        let key = ReqKey(id);
        call!(self, |fx| self
            .requests
            .handle_remote_reply(key, outcome, fx));
    }

    fn on_forward(&mut self, msg: NodeMsg) {
        let NodeMsg::Forward {
            from: sender,
            to,
            hops,
            inner,
        } = msg
        else {
            return;
        };
        let own = self.net.as_ref().map(|n| n.mesh.overlay().id());
        if own != Some(to) {
            let hops = hops.saturating_add(1);
            self.with_trees(|t, v, _, fx| t.forward(v, (sender, to, hops), inner, None, fx));
            return;
        }
        match wire::decode(&inner) {
            Ok(NodeMsg::Cast(c)) if c.resent => {
                self.with_trees(|t, v, _, fx| t.handle_cast(v, sender, c, fx));
            }
            Ok(msg @ (NodeMsg::CastGone { .. } | NodeMsg::CastAsk { .. })) => {
                self.with_trees(|t, v, _, fx| t.handle_repair_msg(v, sender, msg, fx));
            }
            Ok(NodeMsg::Reply { id, outcome }) => self.on_remote_reply(id, outcome),
            // Nothing else is passed on: a confused or malicious peer.
            _ => {
                if let Some(n) = self.net.as_mut() {
                    n.trees.received(0, false);
                }
            }
        }
    }

    /// A multicast reached this node: its members of the group get it (and those congested
    /// hold the group's credit back until they drain).
    pub(super) fn deliver(&mut self, group: &Group, payload: Bytes) {
        let Some(members) = self.groups.of_group(group) else {
            return;
        };
        self.sessions.stats.casts_delivered += 1;
        let packet = match group.kind {
            GroupKind::Cluster => NodePacket::Broadcast { message: payload },
            GroupKind::Topic => NodePacket::Publish {
                topic: group.name.clone(),
                event: payload,
            },
        };
        self.sessions.fan_out(members, &packet);
        if let Some(n) = self.net.as_mut() {
            let sessions = &self.sessions;
            n.casts
                .delivered_to(group, members, |c| sessions.is_congested(c));
        }
    }

    /// The node that sends this one `group`'s multicasts has other consumers to feed:
    /// congested members of the group here stop holding it back, and so do the peers it
    /// waits for here.
    fn on_untether(&mut self, group: &Group) {
        for &m in self.groups.of_group(group).unwrap_or_default() {
            self.sessions.untether(m);
        }
        if let Some(n) = self.net.as_mut() {
            call!(self, |fx| n.casts.untether(group, fx));
        }
    }

    /// An anycast ends here: one of this node's members of the cluster gets it.
    pub(super) fn landed(&mut self, a: Anycast) {
        let now = self.now;
        let Some(member) = self.pick_member(&a.cluster, true) else {
            if let Some(n) = self.net.as_mut() {
                n.trees.anycast_lost();
            }
            return;
        };
        let own = self
            .own_contact()
            .is_some_and(|c| a.origin.id == c.id && a.origin.epoch == c.epoch);
        match (a.wanted, own) {
            (Wanted::Request(request), true) => {
                let key = ReqKey(a.id);
                if self.requests.is_pending(key) {
                    call!(self, |fx| self.requests.deliver(
                        now,
                        key,
                        member,
                        request,
                        a.timeout_ms,
                        fx
                    ));
                }
            }
            (Wanted::Request(request), false) => {
                let their = PeerReqKey(a.id);
                call!(self, |fx| self.requests.accept_remote(
                    now,
                    a.origin,
                    their,
                    a.budget_ms,
                    a.timeout_ms,
                    member,
                    request,
                    &mut self.keys,
                    fx
                ));
            }
            (Wanted::Tunnel, true) => {
                let key = TunKey(a.id);
                if self.tunnels.contains(key) {
                    call!(self, |fx| self.tunnels.offer(now, key, member, fx));
                }
            }
            (Wanted::Tunnel, false) => {
                let their = PeerTunKey(a.id);
                call!(self, |fx| self.tunnels.accept_remote(
                    now,
                    a.origin,
                    their,
                    a.budget_ms,
                    member,
                    &mut self.keys,
                    fx
                ));
            }
        }
    }

    /// Forwards what tunnel `key` holds toward its end `dest`, a chunk at a time (a client
    /// there may become congested by the one before), then re-grants the sender.
    pub(super) fn pump(&mut self, key: TunKey, dest: usize) {
        let client: Option<ConnId> = self.tunnels.client_at(key, dest);
        let mut forwarded = 0;
        loop {
            let congested = client.is_some_and(|c| self.sessions.is_congested(c));
            match call!(self, |fx| self.tunnels.pump_step(key, dest, congested, fx)) {
                Some(len) => forwarded += len,
                None => break,
            }
        }
        call!(self, |fx| self.tunnels.regrant(key, dest, forwarded, fx));
    }
}
