//! Request/reply: node-owned deadlines and exactly one REPLY per REQUEST, whether the member
//! that answers is a client of this node or of another.
//!
//! The origin node keeps the request until one outcome went to its client: the member's
//! reply (from a local member, or relayed by the member's node), or "timed out" at the
//! deadline. A member's node keeps what it delivered only to relay the reply back; the
//! origin alone decides the outcome, so a dead member node, a broken tree or a leaving node
//! all end in the one timed-out REPLY.

use super::session::Session;
use super::wire::{Anycast, NodeMsg, Wanted};
use super::{ConnId, Endpoint, Node, Timer};
use crate::mesh::Class;
use crate::relay::{Name, NodePacket, ReplyOutcome};
use bytes::Bytes;
use std::time::Duration;

/// A request in progress on this node: asked by one of its clients (it owns the deadline),
/// or delivered to one of its members for another node.
#[derive(Debug)]
pub(crate) struct PendingRequest {
    /// Who gets the outcome: a local client (by its own request id), or the origin node
    /// (by the origin's key for the request).
    origin: Endpoint,
    /// The local member it was delivered to and this node's id for it there; `None` while
    /// it is on its way elsewhere, or when no member took it.
    member: Option<(ConnId, u64)>,
}

impl Node {
    pub(super) fn on_request(
        &mut self,
        conn: ConnId,
        id: u64,
        cluster: Name,
        request: Bytes,
        timeout_ms: u64,
    ) {
        self.stats.requests += 1;
        let Some(origin) = self.conns.map.get(&conn) else {
            return;
        };
        if origin.requested.contains_key(&id) {
            // Two pending requests under one id could not be told apart by the client.
            return self.violation(conn, format!("request id {id} is already pending"));
        }
        // A zero timeout has already passed; a client over its bound is shed. Either way the
        // one REPLY goes out now and nothing is delivered.
        let shed = origin.requested.len() >= self.cfg.max_pending_requests;
        if timeout_ms == 0 || shed {
            if shed {
                self.stats.requests_shed += 1;
            }
            return self.reply_timed_out(conn, id);
        }
        let key = self.next_key();
        if let Some(origin) = self.conns.map.get_mut(&conn) {
            origin.requested.insert(id, key);
        }
        self.requests.insert(
            key,
            PendingRequest {
                origin: Endpoint::Local(conn, id),
                member: None,
            },
        );
        self.timers.set(
            Timer::Request(key),
            self.now + Duration::from_millis(timeout_ms),
        );
        if self.scribe.is_none() {
            // A lone node: a local member, if there is one.
            if let Some(m) = self.pick_member(&cluster, true) {
                self.deliver_request(key, m, request, timeout_ms);
            }
            return;
        }
        let anycast = Anycast {
            key: Default::default(),
            cluster,
            index: 0,
            origin: self.own_contact(),
            id: key,
            timeout_ms,
            budget_ms: timeout_ms,
            via: super::wire::Via::Routed,
            hops: 0,
            wanted: Wanted::Request(request),
        };
        if !self.start_anycast(anycast) {
            // The first hop's queue is full: the request fails at once, as timed out.
            self.stats.requests_refused += 1;
            self.expire_request(key);
        }
    }

    /// A request this node was chosen for (`key` names it here): one of its members gets
    /// it, unless its time runs out while it waits for that member's socket.
    pub(super) fn deliver_request(
        &mut self,
        key: u64,
        member: ConnId,
        request: Bytes,
        timeout_ms: u64,
    ) {
        let expires = self
            .timers
            .get(Timer::Request(key))
            .unwrap_or(self.now + Duration::from_millis(timeout_ms));
        let Some(s) = self.conns.map.get_mut(&member) else {
            return;
        };
        let node_id = s.next_request_id;
        s.next_request_id += 1;
        s.delivered.insert(node_id, key);
        if let Some(req) = self.requests.get_mut(&key) {
            req.member = Some((member, node_id));
        }
        // The requester's timeout goes out unchanged: a 1 ms timeout stays 1.
        self.conns.send_expiring(
            member,
            &NodePacket::Request {
                id: node_id,
                request,
                timeout_ms,
            },
            expires,
        );
    }

    /// A request for a local member on behalf of another node (an anycast that ended here).
    pub(super) fn accept_remote_request(&mut self, a: &Anycast, member: ConnId, request: Bytes) {
        let key = self.next_key();
        self.requests.insert(
            key,
            PendingRequest {
                origin: Endpoint::Remote(a.origin, a.id),
                member: None,
            },
        );
        // Kept until the member answers, or until the origin has surely given up.
        self.timers.set(
            Timer::Request(key),
            self.now + Duration::from_millis(a.budget_ms),
        );
        self.stats.requests_served_for_peers += 1;
        self.deliver_request(key, member, request, a.timeout_ms);
    }

    pub(super) fn on_reply(&mut self, conn: ConnId, node_id: u64, outcome: Result<Bytes, Name>) {
        // A failure with no text means "no reply": the requester times out instead.
        if matches!(&outcome, Err(fault) if fault.is_empty()) {
            return;
        }
        let Some(key) = self
            .conns
            .map
            .get_mut(&conn)
            .and_then(|s| s.delivered.remove(&node_id))
        else {
            // Late (after the deadline) or never delivered: ignored, as the protocol says.
            return;
        };
        let Some(req) = self.requests.remove(&key) else {
            return;
        };
        self.timers.cancel(Timer::Request(key));
        match req.origin {
            Endpoint::Local(origin, id) => self.answer(origin, id, outcome),
            Endpoint::Remote(node, id) => {
                let class = match &outcome {
                    Ok(reply) if reply.len() > 1024 => Class::Data,
                    _ => Class::Control,
                };
                let msg = NodeMsg::Reply { id, outcome };
                if !self.send_peer(node, class, &msg) {
                    self.stats.replies_refused += 1;
                }
            }
            Endpoint::Nowhere => {}
        }
    }

    /// A member's outcome relayed by its node for request `key` of this node.
    pub(super) fn on_remote_reply(&mut self, key: u64, outcome: Result<Bytes, Name>) {
        let Some(PendingRequest {
            origin: Endpoint::Local(origin, id),
            ..
        }) = self.requests.get(&key)
        else {
            // Answered or expired already: the one REPLY went out.
            return;
        };
        let (origin, id) = (*origin, *id);
        self.requests.remove(&key);
        self.timers.cancel(Timer::Request(key));
        self.answer(origin, id, outcome);
    }

    /// The deadline passed (or the node stops): a local origin gets its timed-out REPLY; a
    /// request served for another node is forgotten (its origin keeps its own deadline).
    pub(super) fn expire_request(&mut self, key: u64) {
        let Some(req) = self.requests.remove(&key) else {
            return;
        };
        self.timers.cancel(Timer::Request(key));
        if let Some((member, node_id)) = req.member
            && let Some(s) = self.conns.map.get_mut(&member)
        {
            s.delivered.remove(&node_id);
        }
        if let Endpoint::Local(origin, id) = req.origin {
            if let Some(s) = self.conns.map.get_mut(&origin) {
                s.requested.remove(&id);
            }
            self.stats.requests_timed_out += 1;
            self.conns.send(
                origin,
                &NodePacket::Reply {
                    id,
                    outcome: ReplyOutcome::TimedOut,
                },
            );
        }
    }

    /// Drops the request bookkeeping of a connection that is going away.
    pub(super) fn forget_requests(&mut self, s: &mut Session) {
        // Its own requests: nobody is left to answer.
        for (_, key) in std::mem::take(&mut s.requested) {
            if let Some(req) = self.requests.remove(&key) {
                self.timers.cancel(Timer::Request(key));
                if let Some((member, node_id)) = req.member
                    && let Some(m) = self.conns.map.get_mut(&member)
                {
                    m.delivered.remove(&node_id);
                }
            }
        }
        // Requests it was serving: their origins time out at the deadline, as the protocol
        // says for a member that goes away.
        for (_, key) in std::mem::take(&mut s.delivered) {
            if let Some(req) = self.requests.get_mut(&key) {
                req.member = None;
            }
        }
    }

    /// A member of `cluster` chosen uniformly at random, among those not congested if
    /// `spare_congested` and any is not.
    pub(super) fn pick_member(&mut self, cluster: &Name, spare_congested: bool) -> Option<ConnId> {
        use rand::RngExt;
        let members = self.clusters.get(cluster)?;
        let free = if spare_congested {
            members
                .iter()
                .filter(|&&m| !self.conns.is_congested(m))
                .count()
        } else {
            0
        };
        if free == 0 || free == members.len() {
            let i = self.rng.random_range(0..members.len());
            return Some(members[i]);
        }
        let i = self.rng.random_range(0..free);
        members
            .iter()
            .filter(|&&m| !self.conns.is_congested(m))
            .nth(i)
            .copied()
    }

    /// This node's capacity for `cluster` (see [`capacity`]).
    pub(super) fn capacity_of(&self, cluster: &Name) -> u32 {
        capacity(&self.clusters, &self.conns, cluster)
    }

    /// The one REPLY of a local client's request.
    fn answer(&mut self, origin: ConnId, id: u64, outcome: Result<Bytes, Name>) {
        if let Some(s) = self.conns.map.get_mut(&origin) {
            s.requested.remove(&id);
        }
        let outcome = match outcome {
            Ok(reply) => ReplyOutcome::Success(reply),
            Err(fault) => ReplyOutcome::Fault(fault),
        };
        self.conns.send(origin, &NodePacket::Reply { id, outcome });
    }

    fn reply_timed_out(&mut self, conn: ConnId, id: u64) {
        self.stats.requests_timed_out += 1;
        self.conns.send(
            conn,
            &NodePacket::Reply {
                id,
                outcome: ReplyOutcome::TimedOut,
            },
        );
    }
}

/// A node's capacity for `cluster`, as its trees report it: each local member counts for
/// the requests it could take at once (a small window, less what it holds unanswered), at
/// least one; congested members count one; no members, nothing.
pub(super) fn capacity(
    clusters: &std::collections::BTreeMap<Name, Vec<ConnId>>,
    conns: &super::conns::Conns,
    cluster: &Name,
) -> u32 {
    const WINDOW: usize = 8;
    clusters.get(cluster).map_or(0, |members| {
        members
            .iter()
            .filter_map(|m| conns.map.get(m))
            .map(|s| {
                if s.congested.is_some() {
                    1
                } else {
                    WINDOW.saturating_sub(s.delivered.len()).max(1) as u32
                }
            })
            .sum()
    })
}
