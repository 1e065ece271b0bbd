//! Routes of the relay side: what a client's packets ask of the parts, and the flow control
//! that decides whether a packet may go now (a congested consumer, the network's credit)
//! or its producer waits.

use super::effect::Start;
use super::groups::Groups;
use super::ids::{BuildId, ClientReqId, ClientTunId, ConnId, MemberReqId};
use super::requests::Requests;
use super::router::call;
use super::sessions::{Blocker, Decoded, Sessions};
use super::tether;
use super::wire::{Anycast, Via, Wanted};
use super::{CloseReason, Node};
use crate::overlay::Contact;
use crate::relay::{ClientPacket, Name, NodePacket};
use crate::scribe::Group;
use bytes::{Bytes, BytesMut};
use rand::RngExt;
use std::time::Duration;

impl Node {
    pub(super) fn on_connected(&mut self, conn: ConnId) {
        let (now, stopped) = (self.now, self.life.stopped);
        call!(self, |fx| self
            .sessions
            .handle_connected(now, conn, stopped, fx));
    }

    pub(super) fn on_client_data(&mut self, conn: ConnId, data: &[u8]) {
        self.sessions.handle_data(conn, data);
        self.process(conn);
    }

    pub(super) fn on_client_read(&mut self, conn: ConnId, buf: BytesMut) {
        self.sessions.give_back_input(conn, buf);
        self.process(conn);
    }

    pub(super) fn on_client_flushed(&mut self, conn: ConnId, n: usize) {
        if self.sessions.handle_flushed(conn, n) {
            call!(self, |fx| self.sessions.decongest(conn, fx));
        }
    }

    /// Decodes and carries out the client's buffered packets while it may go on, then
    /// charges what stays buffered.
    pub(super) fn process(&mut self, conn: ConnId) {
        loop {
            match call!(self, |fx| self.sessions.decode(conn, fx)) {
                Decoded::Wait => break,
                Decoded::Packet(packet) => {
                    if let Some((packet, blocker)) = self.on_packet(conn, packet) {
                        self.hold(conn, packet, blocker);
                    }
                }
            }
        }
        self.sessions.charge_input(conn);
    }

    /// Tries a held producer's packet again, then goes on with its input.
    pub(super) fn retry_producer(&mut self, conn: ConnId) {
        let Some(packet) = self.sessions.take_held(conn) else {
            return;
        };
        if let Some((packet, blocker)) = self.on_packet(conn, packet) {
            return self.hold(conn, packet, blocker);
        }
        self.process(conn);
    }

    /// Carries out one packet of an active client. Returns the packet instead if its
    /// delivery must wait (the caller holds it).
    fn on_packet(&mut self, conn: ConnId, packet: ClientPacket) -> Option<(ClientPacket, Blocker)> {
        if let Some(blocker) = self.blocker(conn, &packet) {
            return Some((packet, blocker));
        }
        match packet {
            ClientPacket::Init { .. } => {
                let what = "INIT after the handshake".to_string();
                call!(self, |fx| self.sessions.violation(conn, what, fx));
            }
            ClientPacket::Close => self.close_client(conn, CloseReason::Graceful),
            ClientPacket::Broadcast { cluster, message } => {
                self.sessions.stats.broadcasts += 1;
                let packet = NodePacket::Broadcast {
                    message: message.clone(),
                };
                self.cast_own(Group::cluster(cluster), &packet, message);
            }
            ClientPacket::Request {
                id,
                cluster,
                request,
                timeout_ms,
            } => self.on_request(conn, ClientReqId(id), cluster, request, timeout_ms),
            ClientPacket::Reply { id, outcome } => {
                let id = MemberReqId(id);
                let now = self.now;
                call!(self, |fx| self
                    .requests
                    .handle_reply(now, conn, id, outcome, fx));
            }
            ClientPacket::Subscribe { topic } => {
                call!(self, |fx| self.groups.handle_subscribe(conn, topic, fx));
            }
            ClientPacket::Unsubscribe { topic } => {
                call!(self, |fx| self.groups.handle_unsubscribe(conn, &topic, fx));
            }
            ClientPacket::Publish { topic, event } => {
                self.sessions.stats.publishes += 1;
                let packet = NodePacket::Publish {
                    topic: topic.clone(),
                    event: event.clone(),
                };
                self.cast_own(Group::topic(topic), &packet, event);
            }
            tunnel => self.on_tunnel_packet(conn, tunnel),
        }
        None
    }

    /// A client's tunnel packet.
    fn on_tunnel_packet(&mut self, conn: ConnId, packet: ClientPacket) {
        match packet {
            ClientPacket::TunInit {
                tun_id,
                cluster,
                timeout_ms,
            } => self.on_tun_init(conn, ClientTunId(tun_id), cluster, timeout_ms),
            ClientPacket::TunConfirm { build_id, tun_id } => {
                let (build, id) = (BuildId(build_id), ClientTunId(tun_id));
                call!(self, |fx| self.tunnels.handle_confirm(conn, build, id, fx));
            }
            ClientPacket::TunAllow { tun_id, space } => {
                let id = ClientTunId(tun_id);
                call!(self, |fx| self.tunnels.handle_allow(conn, id, space, fx));
            }
            ClientPacket::TunTransfer {
                tun_id,
                size_or_cont,
                payload,
            } => {
                let id = ClientTunId(tun_id);
                call!(self, |fx| self.tunnels.handle_transfer(
                    conn,
                    id,
                    size_or_cont,
                    payload,
                    fx
                ));
            }
            ClientPacket::TunClose { tun_id } => {
                let id = ClientTunId(tun_id);
                call!(self, |fx| self.tunnels.handle_close(conn, id, fx));
            }
            _ => unreachable!("not a tunnel packet"),
        }
    }

    /// What a packet would have to wait for: a congested member of a broadcast's cluster or
    /// subscriber of a published topic, or, for a request, the first member when every
    /// member is congested; a multicast also the network's credit. Other packets never wait
    /// (replies and tunnel traffic have their own bounds, and holding them could deadlock
    /// two clients serving each other).
    fn blocker(&self, conn: ConnId, packet: &ClientPacket) -> Option<Blocker> {
        if let Some(group) = super::castflow::cast_group(packet) {
            if let Some(c) = self.holders(&group).next() {
                return Some(Blocker::Consumer(c));
            }
            // Multicasts to other nodes wait while too many of the group's wait for credit.
            let n = self.net.as_ref()?;
            let congested = n.casts.any_own_waiting() && n.casts.congested(&group);
            return congested.then_some(Blocker::Network);
        }
        match packet {
            ClientPacket::Request { cluster, .. } => {
                let members = self.groups.members(cluster)?;
                // A request the node would refuse at once waits for nobody.
                let refused = self.requests.at_bound(conn);
                if refused || !members.iter().all(|&c| self.sessions.is_congested(c)) {
                    return None;
                }
                members.first().map(|&c| Blocker::Consumer(c))
            }
            _ => None,
        }
    }

    /// Parks a producer's packet until `blocker` drains; the producer is not read meanwhile.
    /// A multicast held for a consumer waits for every member of its group that holds it
    /// back: one past its grace may hold it only because another is congested, and the
    /// packet must go on when that other one drains.
    fn hold(&mut self, conn: ConnId, packet: ClientPacket, blocker: Blocker) {
        let group = super::castflow::cast_group(&packet);
        if let (Blocker::Consumer(_), Some(g)) = (blocker, &group) {
            let holders: Vec<ConnId> = self.holders(g).collect();
            self.sessions.wait_also(conn, &holders);
        }
        let group = group.filter(|_| matches!(blocker, Blocker::Network));
        self.sessions.hold(conn, packet, blocker);
        if let (Some(group), Some(n)) = (group, self.net.as_mut()) {
            n.casts.hold(&group, conn);
        }
    }

    /// The local members of `group` that hold back its producers now (see `tether`).
    fn holders<'a>(&'a self, group: &'a Group) -> impl Iterator<Item = ConnId> + 'a {
        let scribe = self.net.as_ref().map(|n| n.trees.scribe());
        let (sessions, groups) = (&self.sessions, &self.groups);
        let members = groups.of_group(group).unwrap_or_default();
        members
            .iter()
            .copied()
            .filter(move |&c| tether::holds_back(sessions, groups, scribe, c, group, None))
    }

    /// A client's broadcast or event: to the local members of the group, then to the
    /// other nodes with members. If a local member not congested took it, the group went
    /// on here (a peer holding it back meanwhile holds back others: see `castflow`).
    fn cast_own(&mut self, group: Group, packet: &NodePacket, payload: Bytes) {
        if let Some(members) = self.groups.of_group(&group) {
            self.sessions.fan_out(members, packet);
            let sessions = &self.sessions;
            if let Some(n) = self.net.as_mut()
                && members.iter().any(|&c| !sessions.is_congested(c))
            {
                n.casts.flowed(&group);
            }
        }
        self.with_trees(|t, v, _, fx| t.multicast(v, group, payload, fx));
    }

    fn on_request(
        &mut self,
        conn: ConnId,
        id: ClientReqId,
        cluster: Name,
        request: Bytes,
        timeout_ms: u64,
    ) {
        let now = self.now;
        let Some(key) = call!(self, |fx| self.requests.handle_request(
            now,
            conn,
            id,
            timeout_ms,
            &mut self.keys,
            fx
        )) else {
            return;
        };
        let Some(origin) = self.own_contact() else {
            // A lone node: a local member, if there is one.
            if let Some(m) = self.pick_member(&cluster, true) {
                call!(self, |fx| self
                    .requests
                    .deliver(now, key, m, request, timeout_ms, fx));
            }
            return;
        };
        let anycast = new_anycast(origin, cluster, key.0, timeout_ms, Wanted::Request(request));
        self.with_trees(|t, v, rng, fx| t.start_anycast(v, rng, anycast, Start::Request(key), fx));
    }

    fn on_tun_init(&mut self, conn: ConnId, id: ClientTunId, cluster: Name, timeout_ms: u64) {
        let now = self.now;
        if !call!(self, |fx| self.tunnels.check_init(conn, id, timeout_ms, fx)) {
            return;
        }
        let Some(origin) = self.own_contact() else {
            // A lone node knows every member: none means none, at once.
            let Some(member) = self.pick_member(&cluster, true) else {
                return call!(self, |fx| self.tunnels.refuse_build(conn, id, fx));
            };
            let key = self.tunnels.open(now, conn, id, timeout_ms, &mut self.keys);
            return call!(self, |fx| self.tunnels.offer(now, key, member, fx));
        };
        // Across nodes a member may be anywhere: the build travels like a request.
        let key = self.tunnels.open(now, conn, id, timeout_ms, &mut self.keys);
        self.tunnels.wait_for_member(now, key, timeout_ms);
        let anycast = new_anycast(origin, cluster, key.0, timeout_ms, Wanted::Tunnel);
        self.with_trees(|t, v, rng, fx| t.start_anycast(v, rng, anycast, Start::Build(key), fx));
    }

    /// This node as peers reach it (`None` for a lone node).
    pub(super) fn own_contact(&self) -> Option<Contact> {
        self.net.as_ref().map(|n| n.mesh.overlay().contact())
    }

    /// A member of `cluster` chosen at random: among those with room in their window, by
    /// what each can take (its free slots times how fast it answers, as in [`capacity`]);
    /// with none, uniformly, among those not congested if `spare_congested` and any is not.
    pub(super) fn pick_member(&mut self, cluster: &Name, spare_congested: bool) -> Option<ConnId> {
        let members = self.groups.members(cluster)?;
        // Members with room in their window first: a hung member must not take every
        // other request this node keeps for its members (it prefers them while any has
        // room, see `free_capacity`).
        let (sessions, requests) = (&self.sessions, &self.requests);
        let weight = |m: ConnId| u64::from(can_take(sessions, requests, m).unwrap_or(0));
        let total: u64 = members.iter().map(|&m| weight(m)).sum();
        if total > 0 {
            let mut r = self.rng.random_range(0..total);
            for &m in members {
                let w = weight(m);
                if r < w {
                    return Some(m);
                }
                r -= w;
            }
        }
        let free = |m: &&ConnId| !self.sessions.is_congested(**m);
        let free_count = if spare_congested {
            members.iter().filter(free).count()
        } else {
            0
        };
        if free_count == 0 || free_count == members.len() {
            let i = self.rng.random_range(0..members.len());
            return Some(members[i]);
        }
        let i = self.rng.random_range(0..free_count);
        members.iter().filter(free).nth(i).copied()
    }
}

/// A request or tunnel build of this node's client, about to enter its cluster's trees.
fn new_anycast(
    origin: Contact,
    cluster: Name,
    id: u64,
    timeout_ms: u64,
    wanted: Wanted,
) -> Anycast {
    Anycast {
        key: Default::default(),
        cluster,
        index: 0,
        origin,
        id,
        timeout_ms,
        budget_ms: timeout_ms,
        due_ms: 0,
        via: Via::Routed,
        hops: 0,
        wanted,
    }
}

/// Requests a member is given at once before others share them: a small window.
const WINDOW: usize = 8;

/// The free slots of a member's window; `None` while it is congested.
fn room(sessions: &Sessions, requests: &Requests, member: ConnId) -> Option<u32> {
    (!sessions.is_congested(member))
        .then(|| WINDOW.saturating_sub(requests.delivered_to(member)) as u32)
}

/// The reply time against which members are weighed: one answering in this time counts
/// its free slots once, a faster one more (up to [`MAX_SPEEDUP`] times), a slower one no
/// less than once.
const REFERENCE_REPLY: Duration = Duration::from_millis(100);

/// How many times a fast member's free slots count at most (replies in 1 ms or less).
const MAX_SPEEDUP: u32 = 100;

/// How many times a member's free slots count, by how fast it answers: requests it could
/// take within [`REFERENCE_REPLY`] per slot. A member not yet measured counts as fast,
/// so that it is tried and measured.
fn speed(reply_time: Option<Duration>) -> u32 {
    match reply_time {
        None => MAX_SPEEDUP,
        Some(t) => {
            let t = t.as_micros().max(1);
            (REFERENCE_REPLY.as_micros() / t).clamp(1, u128::from(MAX_SPEEDUP)) as u32
        }
    }
}

/// What a member can take: its free slots times how fast it answers ([`speed`]); `None`
/// while it is congested. Weighs the member both in its node's [`capacity`] and in the
/// choice among the node's own members ([`Node::pick_member`]).
fn can_take(sessions: &Sessions, requests: &Requests, member: ConnId) -> Option<u32> {
    room(sessions, requests, member).map(|r| r.saturating_mul(speed(requests.reply_time(member))))
}

/// A node's capacity for `cluster`, as its trees report it: each local member counts for
/// the requests it could take within [`REFERENCE_REPLY`] (its free slots in a small window,
/// times how many answers it gives in that time: a member answering in 1 ms counts 50 times
/// one answering in 50 ms), at least one; congested members count one; no members,
/// nothing. So the trees spread requests by what members can take, not only by how many
/// are free (issue 22).
pub(super) fn capacity(
    groups: &Groups,
    sessions: &Sessions,
    requests: &Requests,
    cluster: &Name,
) -> u32 {
    groups.members(cluster).map_or(0, |members| {
        members
            .iter()
            .map(|&m| can_take(sessions, requests, m).map_or(1, |w| w.max(1)))
            .fold(0u32, u32::saturating_add)
    })
}

/// What of [`capacity`] is room now: the windows' free slots of the members that are not
/// congested (no floor of one).
pub(super) fn free_capacity(
    groups: &Groups,
    sessions: &Sessions,
    requests: &Requests,
    cluster: &Name,
) -> u32 {
    groups.members(cluster).map_or(0, |members| {
        members
            .iter()
            .filter_map(|&m| room(sessions, requests, m))
            .sum()
    })
}
