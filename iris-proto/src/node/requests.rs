//! Request/reply: node-owned deadlines and exactly one REPLY per REQUEST.

use super::session::Session;
use super::{ConnId, Node, Timer};
use crate::relay::{Name, NodePacket, ReplyOutcome};
use crate::time::Instant;
use bytes::Bytes;
use std::time::Duration;

/// A request awaiting its outcome. It lives until exactly one REPLY has gone to the origin
/// (or the origin has gone away).
#[derive(Debug)]
pub(crate) struct PendingRequest {
    origin: ConnId,
    /// The origin's own request id.
    origin_id: u64,
    /// The member it was delivered to and the node's id for it there; `None` when the cluster
    /// had no member or the member left (the origin then times out at the deadline).
    member: Option<(ConnId, u64)>,
    deadline: Instant,
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
            self.stats.requests_timed_out += 1;
            return self.conns.send(
                conn,
                &NodePacket::Reply {
                    id,
                    outcome: ReplyOutcome::TimedOut,
                },
            );
        }
        let key = self.next_key();
        let deadline = self.now + Duration::from_millis(timeout_ms);
        let member = self.pick_member(&cluster, true).and_then(|m| {
            let s = self.conns.map.get_mut(&m)?;
            let node_id = s.next_request_id;
            s.next_request_id += 1;
            s.delivered.insert(node_id, key);
            Some((m, node_id))
        });
        if let Some((m, node_id)) = member {
            // The requester's timeout goes out unchanged: a 1 ms timeout stays 1.
            self.conns.send(
                m,
                &NodePacket::Request {
                    id: node_id,
                    request,
                    timeout_ms,
                },
            );
        }
        if let Some(origin) = self.conns.map.get_mut(&conn) {
            origin.requested.insert(id, key);
        }
        self.requests.insert(
            key,
            PendingRequest {
                origin: conn,
                origin_id: id,
                member,
                deadline,
            },
        );
        self.timers.insert((deadline, Timer::Request(key)));
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
        self.timers.remove(&(req.deadline, Timer::Request(key)));
        self.forget_origin_id(&req);
        let outcome = match outcome {
            Ok(reply) => ReplyOutcome::Success(reply),
            Err(fault) => ReplyOutcome::Fault(fault),
        };
        self.conns.send(
            req.origin,
            &NodePacket::Reply {
                id: req.origin_id,
                outcome,
            },
        );
    }

    /// The deadline passed (or the node stops): the origin gets its timed-out REPLY.
    pub(super) fn expire_request(&mut self, key: u64) {
        let Some(req) = self.requests.remove(&key) else {
            return;
        };
        self.timers.remove(&(req.deadline, Timer::Request(key)));
        if let Some((member, node_id)) = req.member {
            if let Some(s) = self.conns.map.get_mut(&member) {
                s.delivered.remove(&node_id);
            }
        }
        self.forget_origin_id(&req);
        self.stats.requests_timed_out += 1;
        self.conns.send(
            req.origin,
            &NodePacket::Reply {
                id: req.origin_id,
                outcome: ReplyOutcome::TimedOut,
            },
        );
    }

    /// Drops the request bookkeeping of a connection that is going away.
    pub(super) fn forget_requests(&mut self, s: &mut Session) {
        // Its own requests: nobody is left to answer.
        for (_, key) in std::mem::take(&mut s.requested) {
            if let Some(req) = self.requests.remove(&key) {
                self.timers.remove(&(req.deadline, Timer::Request(key)));
                if let Some((member, node_id)) = req.member {
                    if let Some(m) = self.conns.map.get_mut(&member) {
                        m.delivered.remove(&node_id);
                    }
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

    fn forget_origin_id(&mut self, req: &PendingRequest) {
        if let Some(origin) = self.conns.map.get_mut(&req.origin) {
            origin.requested.remove(&req.origin_id);
        }
    }
}
