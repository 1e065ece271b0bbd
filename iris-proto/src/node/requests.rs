//! Request/reply: node-owned deadlines and exactly one REPLY per REQUEST, whether the member
//! that answers is a client of this node or of another.
//!
//! The origin node keeps the request until one outcome went to its client: the member's
//! reply (from a local member, or relayed by the member's node), or "timed out" at the
//! deadline. A member's node keeps what it delivered only to relay the reply back; the
//! origin alone decides the outcome, so a dead member node, a broken tree or a leaving node
//! all end in the one timed-out REPLY.

use super::effect::{Effect, Effects, Refusal, to_peer};
use super::ids::{ClientReqId, ConnId, Endpoint, KeyCounter, MemberReqId, PeerReqKey, ReqKey};
use super::stats::Stats;
use super::wire::NodeMsg;
use crate::mesh::Class;
use crate::overlay::Contact;
use crate::relay::{Name, NodePacket, ReplyOutcome};
use crate::time::Instant;
use crate::timer::Timers;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::Duration;

/// A request in progress on this node: asked by one of its clients (it owns the deadline),
/// or delivered to one of its members for another node.
#[derive(Debug)]
struct Pending {
    /// Who gets the outcome: a local client (by its own request id), or the origin node
    /// (by the origin's key for the request).
    origin: Endpoint<ClientReqId, PeerReqKey>,
    /// The local member it was delivered to and this node's id for it there; `None` while
    /// it is on its way elsewhere, or when no member took it.
    member: Option<(ConnId, MemberReqId)>,
}

/// One connection's requests: those it asked, those delivered to it.
#[derive(Debug, Default)]
struct OfConn {
    /// Requests this client made that await an outcome.
    requested: BTreeMap<ClientReqId, ReqKey>,
    /// Requests delivered to this member and awaiting its REPLY, with when each went.
    delivered: BTreeMap<MemberReqId, (ReqKey, Instant)>,
    /// How long this member takes to answer, smoothed over its successful replies (`None`
    /// before the first).
    reply_time: Option<Duration>,
    /// The next id for a REQUEST delivered to this member (counts from 0).
    next_member_id: u64,
}

/// The requests in progress on this node.
#[derive(Debug)]
pub(crate) struct Requests {
    /// Most requests one client may have awaiting a reply.
    max_pending: usize,
    pending: BTreeMap<ReqKey, Pending>,
    /// Per connection (kept while it lives, so that member ids are never reused).
    of: BTreeMap<ConnId, OfConn>,
    timers: Timers<ReqKey>,
    pub(crate) stats: Stats,
    /// Replies dropped since the node last reported them.
    pub(crate) losses: super::stats::Losses,
}

impl Requests {
    pub(crate) fn new(max_pending: usize) -> Requests {
        Requests {
            max_pending,
            pending: BTreeMap::new(),
            of: BTreeMap::new(),
            timers: Timers::default(),
            stats: Stats::default(),
            losses: super::stats::Losses::default(),
        }
    }

    /// Whether nothing is in progress (a draining shutdown waits for that).
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Whether request `key` of this node is still waiting for its outcome.
    pub(crate) fn is_pending(&self, key: ReqKey) -> bool {
        self.pending.contains_key(&key)
    }

    /// How long member `conn` takes to answer, smoothed (`None` before its first reply).
    pub(crate) fn reply_time(&self, conn: ConnId) -> Option<Duration> {
        self.of.get(&conn).and_then(|o| o.reply_time)
    }

    /// Requests delivered to member `conn` and not yet answered.
    pub(crate) fn delivered_to(&self, conn: ConnId) -> usize {
        self.of.get(&conn).map_or(0, |o| o.delivered.len())
    }

    /// Whether `conn` may not ask for more at once (a request would be shed).
    pub(crate) fn at_bound(&self, conn: ConnId) -> bool {
        self.of
            .get(&conn)
            .is_some_and(|o| o.requested.len() >= self.max_pending)
    }

    /// When the next deadline passes.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Deadlines that passed: local origins get their timed-out REPLY.
    pub(crate) fn handle_timeout(&mut self, now: Instant, fx: &mut Effects) {
        while let Some(key) = self.timers.pop_due(now) {
            self.expire(key, fx);
        }
    }

    /// A client's REQUEST. Returns this node's key for it if it is to be delivered (the
    /// node finds it a member); otherwise its one REPLY is out already, or the client broke
    /// the protocol.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn handle_request(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: ClientReqId,
        timeout_ms: u64,
        keys: &mut KeyCounter,
        fx: &mut Effects,
    ) -> Option<ReqKey> {
        self.stats.requests += 1;
        let o = self.of.entry(conn).or_default();
        if o.requested.contains_key(&id) {
            // Two pending requests under one id could not be told apart by the client.
            let what = format!("request id {} is already pending", id.0);
            fx.push(Effect::Violation(conn, what));
            return None;
        }
        // A zero timeout has already passed; a client over its bound is shed. Either way the
        // one REPLY goes out now and nothing is delivered.
        let shed = o.requested.len() >= self.max_pending;
        if timeout_ms == 0 || shed {
            if shed {
                self.stats.requests_shed += 1;
            }
            self.stats.requests_timed_out += 1;
            fx.push(timed_out(conn, id));
            return None;
        }
        let key = ReqKey(keys.next());
        o.requested.insert(id, key);
        self.pending.insert(
            key,
            Pending {
                origin: Endpoint::Local(conn, id),
                member: None,
            },
        );
        self.timers
            .set(key, now + Duration::from_millis(timeout_ms));
        Some(key)
    }

    /// A request this node was chosen for (`key` names it here): `member` gets it, unless
    /// its time runs out while it waits for that member's socket.
    pub(crate) fn deliver(
        &mut self,
        now: Instant,
        key: ReqKey,
        member: ConnId,
        request: Bytes,
        timeout_ms: u64,
        fx: &mut Effects,
    ) {
        let expires = self
            .timers
            .get(key)
            .unwrap_or(now + Duration::from_millis(timeout_ms));
        self.deliver_until(now, key, member, request, timeout_ms, expires, fx);
    }

    /// Hands a request to `member`, unless it still waits for the member's socket at
    /// `expires`.
    #[allow(clippy::too_many_arguments)]
    fn deliver_until(
        &mut self,
        now: Instant,
        key: ReqKey,
        member: ConnId,
        request: Bytes,
        timeout_ms: u64,
        expires: Instant,
        fx: &mut Effects,
    ) {
        let o = self.of.entry(member).or_default();
        let id = MemberReqId(o.next_member_id);
        o.next_member_id += 1;
        o.delivered.insert(id, (key, now));
        if let Some(req) = self.pending.get_mut(&key) {
            req.member = Some((member, id));
        }
        // The requester's timeout goes out unchanged: a 1 ms timeout stays 1.
        let packet = NodePacket::Request {
            id: id.0,
            request,
            timeout_ms,
        };
        fx.push(Effect::SendExpiring(member, packet, expires));
    }

    /// A request for a local member on behalf of another node (an anycast that ended
    /// here), kept until the member answers or the origin has surely given up.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn accept_remote(
        &mut self,
        now: Instant,
        origin: Contact,
        their_key: PeerReqKey,
        budget_ms: u64,
        timeout_ms: u64,
        member: ConnId,
        request: Bytes,
        keys: &mut KeyCounter,
        fx: &mut Effects,
    ) {
        let key = ReqKey(keys.next());
        self.pending.insert(
            key,
            Pending {
                origin: Endpoint::Remote(origin, their_key),
                member: None,
            },
        );
        // The member must have it within the budget, which counts the way back; its
        // answer is passed on until the origin has surely given up (it asked before now).
        // The budget plans each hop with care, so an answer after it may still be in time.
        let budget = Duration::from_millis(budget_ms);
        let kept = budget.max(Duration::from_millis(timeout_ms));
        self.timers.set(key, now + kept);
        self.stats.requests_served_for_peers += 1;
        // The reply goes straight to the origin: a dial there, if one is needed, runs
        // while the member thinks (it cost a tenth of the answers of slow members on
        // requests with half a second to live).
        fx.push(Effect::Reach(origin));
        self.deliver_until(now, key, member, request, timeout_ms, now + budget, fx);
    }

    /// A member's REPLY. A failure with no text means "no reply": the requester times out
    /// instead. A late or unknown id is ignored, as the protocol says.
    pub(crate) fn handle_reply(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: MemberReqId,
        outcome: Result<Bytes, Name>,
        fx: &mut Effects,
    ) {
        if matches!(&outcome, Err(fault) if fault.is_empty()) {
            return;
        }
        let Some(o) = self.of.get_mut(&conn) else {
            return;
        };
        let Some((key, sent)) = o.delivered.remove(&id) else {
            return;
        };
        // A failure says nothing of what the member can take: one that fails fast must not
        // draw more requests for it.
        if outcome.is_ok() {
            o.reply_time = Some(smoothed(o.reply_time, now.saturating_duration_since(sent)));
        }
        let Some(req) = self.pending.remove(&key) else {
            return;
        };
        self.timers.cancel(key);
        match req.origin {
            Endpoint::Local(origin, id) => self.answer(origin, id, outcome, fx),
            Endpoint::Remote(node, id) => {
                let class = match &outcome {
                    Ok(reply) if reply.len() > 1024 => Class::Urgent,
                    _ => Class::Control,
                };
                let msg = NodeMsg::Reply { id: id.0, outcome };
                fx.push(to_peer(node, class, &msg, Refusal::Reply(id)));
            }
            Endpoint::Nowhere => {}
        }
    }

    /// A member's outcome relayed by its node for this node's request `key`.
    pub(crate) fn handle_remote_reply(
        &mut self,
        key: ReqKey,
        outcome: Result<Bytes, Name>,
        fx: &mut Effects,
    ) {
        let Some(Pending {
            origin: Endpoint::Local(origin, id),
            ..
        }) = self.pending.get(&key)
        else {
            // Answered or expired already: the one REPLY went out.
            return;
        };
        let (origin, id) = (*origin, *id);
        self.pending.remove(&key);
        self.timers.cancel(key);
        self.answer(origin, id, outcome, fx);
    }

    /// A request of this node's client could not leave the node: it fails at once.
    pub(crate) fn refused(&mut self, key: ReqKey, fx: &mut Effects) {
        self.stats.requests_refused += 1;
        self.expire(key, fx);
    }

    /// A reply for another node could not be sent (its origin times out).
    pub(crate) fn reply_refused(&mut self) {
        self.stats.replies_refused += 1;
        self.losses.note("reply_refused", || {
            "a member's reply to another node's request: no link to that node took it".into()
        });
    }

    /// Every request in progress ends now (the node stops): local origins get their
    /// timed-out REPLY.
    pub(crate) fn expire_all(&mut self, fx: &mut Effects) {
        let keys: Vec<ReqKey> = self.pending.keys().copied().collect();
        for key in keys {
            self.expire(key, fx);
        }
    }

    /// The deadline passed (or the node stops): a local origin gets its timed-out REPLY; a
    /// request served for another node is forgotten (its origin keeps its own deadline).
    fn expire(&mut self, key: ReqKey, fx: &mut Effects) {
        let Some(req) = self.pending.remove(&key) else {
            return;
        };
        self.timers.cancel(key);
        if let Some((member, id)) = req.member
            && let Some(o) = self.of.get_mut(&member)
        {
            o.delivered.remove(&id);
        }
        if let Endpoint::Local(origin, id) = req.origin {
            if let Some(o) = self.of.get_mut(&origin) {
                o.requested.remove(&id);
            }
            self.stats.requests_timed_out += 1;
            fx.push(timed_out(origin, id));
        }
    }

    /// A connection is gone: its own requests have nobody left to answer; the origins of
    /// those it was serving time out at their deadline, as the protocol says for a member
    /// that goes away.
    pub(crate) fn handle_closed(&mut self, conn: ConnId) {
        let Some(o) = self.of.remove(&conn) else {
            return;
        };
        for (_, key) in o.requested {
            if let Some(req) = self.pending.remove(&key) {
                self.timers.cancel(key);
                if let Some((member, id)) = req.member
                    && let Some(m) = self.of.get_mut(&member)
                {
                    m.delivered.remove(&id);
                }
            }
        }
        for (_, (key, _)) in o.delivered {
            if let Some(req) = self.pending.get_mut(&key) {
                req.member = None;
            }
        }
    }

    /// The one REPLY of a local client's request.
    fn answer(
        &mut self,
        origin: ConnId,
        id: ClientReqId,
        outcome: Result<Bytes, Name>,
        fx: &mut Effects,
    ) {
        if let Some(o) = self.of.get_mut(&origin) {
            o.requested.remove(&id);
        }
        let outcome = match outcome {
            Ok(reply) => ReplyOutcome::Success(reply),
            Err(fault) => ReplyOutcome::Fault(fault),
        };
        fx.push(Effect::Send(
            origin,
            NodePacket::Reply { id: id.0, outcome },
        ));
    }
}

/// The timed-out REPLY of a client's request.
/// A reply time folded into the smoothed one: a quarter of the way from the old value, so
/// that one slow answer does not swing a member's share.
fn smoothed(old: Option<Duration>, sample: Duration) -> Duration {
    match old {
        None => sample,
        Some(old) if sample >= old => old + (sample - old) / 4,
        Some(old) => old - (old - sample) / 4,
    }
}

fn timed_out(conn: ConnId, id: ClientReqId) -> Effect {
    Effect::Send(
        conn,
        NodePacket::Reply {
            id: id.0,
            outcome: ReplyOutcome::TimedOut,
        },
    )
}

#[cfg(test)]
mod tests {
    //! The part alone: no node, no sessions; its effects are what it asks of the others.
    use super::*;

    fn sent(fx: &mut Effects) -> Vec<(ConnId, NodePacket)> {
        fx.drain()
            .map(|e| match e {
                Effect::Send(c, p) | Effect::SendExpiring(c, p, _) => (c, p),
                other => panic!("unexpected effect {other:?}"),
            })
            .collect()
    }

    #[test]
    fn one_reply_per_request_whatever_the_member_does() {
        let ms = Duration::from_millis;
        let (origin, member) = (ConnId(1), ConnId(2));
        let mut r = Requests::new(8);
        let mut keys = KeyCounter::default();
        let mut fx = Effects::default();
        let t0 = Instant::ZERO;
        let key = r
            .handle_request(t0, origin, ClientReqId(7), 100, &mut keys, &mut fx)
            .expect("to be delivered");
        r.deliver(t0, key, member, Bytes::from_static(b"q"), 100, &mut fx);
        let got = sent(&mut fx);
        let [(to, NodePacket::Request { id, .. })] = got.as_slice() else {
            panic!("{got:?}");
        };
        assert_eq!(*to, member);
        assert_eq!(r.delivered_to(member), 1);
        // The member answers: the origin gets its REPLY under its own id...
        let ok = Ok(Bytes::from_static(b"a"));
        r.handle_reply(t0 + ms(3), member, MemberReqId(*id), ok.clone(), &mut fx);
        let got = sent(&mut fx);
        assert!(matches!(
            got.as_slice(),
            [(o, NodePacket::Reply { id: 7, outcome: ReplyOutcome::Success(_) })] if *o == origin
        ));
        // The member's reply time is measured from the delivery.
        assert_eq!(r.reply_time(member), Some(ms(3)));
        // ...once: a second answer, and the deadline, are nothing.
        r.handle_reply(t0 + ms(4), member, MemberReqId(*id), ok, &mut fx);
        r.handle_timeout(t0 + Duration::from_secs(1), &mut fx);
        assert!(sent(&mut fx).is_empty());
        assert!(r.is_empty() && r.delivered_to(member) == 0);
    }

    #[test]
    fn a_members_reply_time_is_smoothed_and_failures_do_not_count() {
        let ms = Duration::from_millis;
        let (origin, member) = (ConnId(1), ConnId(2));
        let mut r = Requests::new(8);
        let mut keys = KeyCounter::default();
        let mut fx = Effects::default();
        // Each request is delivered at `at` and answered `took` later.
        let mut ask = |r: &mut Requests, at: u64, took: u64, outcome: Result<Bytes, Name>| {
            let t = Instant::ZERO + ms(at);
            let key = r
                .handle_request(t, origin, ClientReqId(at), 1000, &mut keys, &mut fx)
                .expect("to be delivered");
            r.deliver(t, key, member, Bytes::new(), 1000, &mut fx);
            let got = sent(&mut fx);
            let [(_, NodePacket::Request { id, .. })] = got.as_slice() else {
                panic!("{got:?}");
            };
            r.handle_reply(t + ms(took), member, MemberReqId(*id), outcome, &mut fx);
            sent(&mut fx);
        };
        assert_eq!(r.reply_time(member), None);
        ask(&mut r, 0, 40, Ok(Bytes::new()));
        assert_eq!(r.reply_time(member), Some(ms(40)));
        // One slow answer moves it a quarter of the way.
        ask(&mut r, 100, 120, Ok(Bytes::new()));
        assert_eq!(r.reply_time(member), Some(ms(60)));
        // A fast failure is no sign of room: unchanged.
        ask(&mut r, 300, 1, Err("no".into()));
        assert_eq!(r.reply_time(member), Some(ms(60)));
        ask(&mut r, 400, 20, Ok(Bytes::new()));
        assert_eq!(r.reply_time(member), Some(ms(50)));
    }

    /// A request served for another node: the member must have it within the budget, but
    /// its answer goes back until the requester's whole timeout has passed (the budget
    /// plans hops with care, so it is shorter than the time really left); and the link to
    /// the origin is opened while the member thinks.
    #[test]
    fn a_member_answering_after_the_budget_is_still_passed_on_until_the_timeout() {
        use crate::overlay::{Contact, NodeId};
        let member = ConnId(2);
        let origin = Contact::new(NodeId(9), ([127, 0, 0, 1], 9).into(), 1);
        let mut r = Requests::new(8);
        let mut keys = KeyCounter::default();
        let mut fx = Effects::default();
        let t0 = Instant::ZERO;
        let ms = Duration::from_millis;
        let request = |r: &mut Requests, fx: &mut Effects, keys: &mut KeyCounter, their| {
            r.accept_remote(
                t0,
                origin,
                PeerReqKey(their),
                100,
                500,
                member,
                Bytes::new(),
                keys,
                fx,
            );
            let effects: Vec<Effect> = fx.drain().collect();
            let [
                Effect::Reach(to),
                Effect::SendExpiring(m, NodePacket::Request { id, .. }, until),
            ] = effects.as_slice()
            else {
                panic!("{effects:?}");
            };
            assert!(*to == origin && *m == member && *until == t0 + ms(100));
            MemberReqId(*id)
        };
        let (first, second) = (
            request(&mut r, &mut fx, &mut keys, 1),
            request(&mut r, &mut fx, &mut keys, 2),
        );
        // Past the budget, within the timeout: passed on to the origin's node.
        r.handle_timeout(t0 + ms(300), &mut fx);
        assert!(fx.drain().next().is_none());
        r.handle_reply(
            t0 + ms(300),
            member,
            first,
            Ok(Bytes::from_static(b"a")),
            &mut fx,
        );
        let effects: Vec<Effect> = fx.drain().collect();
        assert!(
            matches!(effects.as_slice(), [Effect::ToPeer { to, .. }] if *to == origin),
            "{effects:?}"
        );
        // Past the timeout the origin has given up: forgotten, and the answer goes nowhere.
        r.handle_timeout(t0 + ms(500), &mut fx);
        r.handle_reply(
            t0 + ms(500),
            member,
            second,
            Ok(Bytes::from_static(b"a")),
            &mut fx,
        );
        assert!(fx.drain().next().is_none());
        assert!(r.is_empty());
    }

    #[test]
    fn a_member_that_leaves_leaves_its_requests_to_time_out_and_ids_are_checked() {
        let (origin, member) = (ConnId(1), ConnId(2));
        let mut r = Requests::new(1);
        let mut keys = KeyCounter::default();
        let mut fx = Effects::default();
        let t0 = Instant::ZERO;
        let key = r
            .handle_request(t0, origin, ClientReqId(1), 50, &mut keys, &mut fx)
            .unwrap();
        r.deliver(t0, key, member, Bytes::new(), 50, &mut fx);
        sent(&mut fx);
        // Over the bound: shed at once, with its one REPLY.
        assert!(r.at_bound(origin));
        let shed = r.handle_request(t0, origin, ClientReqId(2), 50, &mut keys, &mut fx);
        assert!(shed.is_none());
        assert!(matches!(
            sent(&mut fx).as_slice(),
            [(
                _,
                NodePacket::Reply {
                    id: 2,
                    outcome: ReplyOutcome::TimedOut
                }
            )]
        ));
        // The member goes: nothing yet; the deadline gives the one timed-out REPLY.
        r.handle_closed(member);
        assert!(sent(&mut fx).is_empty());
        r.handle_timeout(t0 + Duration::from_millis(50), &mut fx);
        assert!(matches!(
            sent(&mut fx).as_slice(),
            [(o, NodePacket::Reply { id: 1, outcome: ReplyOutcome::TimedOut })] if *o == origin
        ));
        // A pending id used again is a protocol violation.
        let again = r.handle_request(t0, origin, ClientReqId(3), 50, &mut keys, &mut fx);
        let dup = r.handle_request(t0, origin, ClientReqId(3), 50, &mut keys, &mut fx);
        assert!(again.is_some() && dup.is_none());
        assert!(matches!(
            fx.drain().collect::<Vec<_>>().as_slice(),
            [Effect::Violation(o, _)] if *o == origin
        ));
    }
}
