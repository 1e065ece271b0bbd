//! The delivery auditor: expectations recorded when clients send, checked when clients
//! receive, and settled at the end (in the manner of TigerBeetle's `auditor.zig`: nothing
//! may be left unexplained). It sees only what clients see, never the nodes' state.
//!
//! - Broadcasts and events: each must reach every member (subscriber) that was live and
//!   joined from `settle` before it was sent until `horizon` after (a stable recipient),
//!   never a client outside the group, never twice.
//! - Requests: exactly one REPLY each for a requester that lived to see its deadline; none
//!   delivered to a member after its deadline; answered by a member whenever the cluster kept
//!   a stable member.
//! - Tunnels: each end receives the other's messages in order with no gap or duplicate; a
//!   tunnel ends either completed at both ends, or with an error at both ends (or with the
//!   death of an end's node).

use std::collections::{BTreeMap, BTreeSet};

/// A client as the auditor knows it (unique over the whole run).
pub(crate) type ClientKey = u64;

/// How long before a message a recipient must have joined, and how long after it must
/// stay, to be owed the message (nanoseconds): trees form within a beat or two.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Windows {
    pub(crate) settle: u64,
    pub(crate) horizon: u64,
}

#[derive(Debug, Clone)]
struct ClientLife {
    /// The group it joined (cluster or topic index, by kind), with when.
    cluster: Option<usize>,
    topics: Vec<usize>,
    joined: u64,
    left: Option<u64>,
    node: usize,
}

#[derive(Debug)]
struct Multicast {
    group: usize,
    sent: u64,
    sender: ClientKey,
    got: BTreeMap<ClientKey, u32>,
}

#[derive(Debug)]
struct Request {
    cluster: usize,
    sent: u64,
    deadline: u64,
    replies: u32,
    success: bool,
    timed_out: bool,
}

#[derive(Debug, Default)]
struct TunnelEnd {
    /// Next message number expected from the other end.
    next: u32,
    /// Closed, and with which reason (empty: graceful).
    closed: Option<String>,
}

#[derive(Debug)]
struct Tunnel {
    messages: u32,
    origin: ClientKey,
    member: Option<ClientKey>,
    ends: [TunnelEnd; 2],
}

/// What the auditor concluded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Audit {
    /// Violations found, described (each counted once).
    pub violations: Vec<String>,
    /// Deliveries of broadcasts to stable members / those owed.
    pub broadcast_delivery: f64,
    /// The same for events.
    pub publish_delivery: f64,
    /// Broadcasts and events owed to stable recipients, counted per recipient.
    pub expected_deliveries: u64,
    /// Broadcasts and events owed to stable recipients and never delivered although their
    /// sender was stable too (joined `settle` before, alive until `horizon` after): losses
    /// between healthy nodes, which no crash excuses.
    pub stable_losses: u64,
    /// The first few of them, described (sender and recipient nodes, time).
    pub stable_loss_examples: Vec<String>,
    /// Deliveries of a message a client had already received.
    pub duplicates: u64,
    /// Deliveries to a client outside the message's group.
    pub misdeliveries: u64,
    /// Requests sent.
    pub requests: u64,
    /// Among requests to clusters that kept a stable member until the deadline: the share
    /// answered by a member.
    pub requests_answered: f64,
    /// Requests whose requester lived past the deadline without exactly one REPLY.
    pub requests_without_one_outcome: u64,
    /// Requests delivered to a member after their deadline.
    pub late_requests: u64,
    /// Tunnel messages out of order, missing or repeated, and tunnels closed inconsistently.
    pub tunnel_order_violations: u64,
    /// Tunnels built.
    pub tunnels: u64,
    /// Tunnels that carried every message both ways and closed cleanly.
    pub tunnels_completed: u64,
    /// Tunnels an end of which was closed with an error (the other node or link gone).
    pub tunnels_broken: u64,
    /// Requests answered "timed out".
    pub requests_timed_out: u64,
}

/// The auditor.
#[derive(Debug)]
pub(crate) struct Auditor {
    w: Windows,
    clients: BTreeMap<ClientKey, ClientLife>,
    broadcasts: BTreeMap<u64, Multicast>,
    publishes: BTreeMap<u64, Multicast>,
    requests: BTreeMap<(ClientKey, u64), Request>,
    tunnels: BTreeMap<u64, Tunnel>,
    duplicates: u64,
    misdeliveries: u64,
    late_requests: u64,
    second_replies: u64,
    tunnel_order: u64,
    violations: Vec<String>,
    stable_losses: u64,
    stable_loss_examples: Vec<String>,
    /// Stalls: the node's slot, from, until.
    stalls: Vec<(usize, u64, u64)>,
    /// Partitions: the minority side's slots, from, until (ns).
    partitions: Vec<(BTreeSet<usize>, u64, u64)>,
    /// Set by a test: every broadcast delivery is counted twice, as a broken node would do.
    pub(crate) inject_duplicate: bool,
}

impl Auditor {
    pub(crate) fn new(w: Windows) -> Auditor {
        Auditor {
            w,
            clients: BTreeMap::new(),
            broadcasts: BTreeMap::new(),
            publishes: BTreeMap::new(),
            requests: BTreeMap::new(),
            tunnels: BTreeMap::new(),
            duplicates: 0,
            misdeliveries: 0,
            late_requests: 0,
            second_replies: 0,
            tunnel_order: 0,
            violations: Vec::new(),
            stable_losses: 0,
            stable_loss_examples: Vec::new(),
            stalls: Vec::new(),
            partitions: Vec::new(),
            inject_duplicate: false,
        }
    }

    /// A client finished its handshake (and subscribed to its topics) at `now`.
    pub(crate) fn joined(
        &mut self,
        c: ClientKey,
        node: usize,
        cluster: Option<usize>,
        topics: Vec<usize>,
        now: u64,
    ) {
        self.clients.insert(
            c,
            ClientLife {
                cluster,
                topics,
                joined: now,
                left: None,
                node,
            },
        );
    }

    /// A client's node died (or it closed).
    pub(crate) fn left(&mut self, c: ClientKey, now: u64) {
        if let Some(l) = self.clients.get_mut(&c)
            && l.left.is_none()
        {
            l.left = Some(now);
        }
    }

    pub(crate) fn sent_broadcast(&mut self, id: u64, cluster: usize, sender: ClientKey, now: u64) {
        self.broadcasts.insert(
            id,
            Multicast {
                group: cluster,
                sent: now,
                sender,
                got: BTreeMap::new(),
            },
        );
    }

    pub(crate) fn sent_publish(&mut self, id: u64, topic: usize, sender: ClientKey, now: u64) {
        self.publishes.insert(
            id,
            Multicast {
                group: topic,
                sent: now,
                sender,
                got: BTreeMap::new(),
            },
        );
    }

    pub(crate) fn got_broadcast(&mut self, c: ClientKey, id: u64) {
        let times = if self.inject_duplicate { 2 } else { 1 };
        for _ in 0..times {
            let member_of = self.clients.get(&c).and_then(|l| l.cluster);
            let Some(m) = self.broadcasts.get_mut(&id) else {
                note(
                    &mut self.violations,
                    format!("client {c} got broadcast {id} nobody sent"),
                );
                return;
            };
            if member_of != Some(m.group) {
                self.misdeliveries += 1;
                note(
                    &mut self.violations,
                    format!("client {c} got broadcast {id} of another cluster"),
                );
            }
            let n = m.got.entry(c).or_default();
            *n += 1;
            if *n > 1 {
                self.duplicates += 1;
                note(
                    &mut self.violations,
                    format!("client {c} got broadcast {id} twice"),
                );
            }
        }
    }

    pub(crate) fn got_publish(&mut self, c: ClientKey, id: u64) {
        let topics = self
            .clients
            .get(&c)
            .map(|l| l.topics.clone())
            .unwrap_or_default();
        let Some(m) = self.publishes.get_mut(&id) else {
            note(
                &mut self.violations,
                format!("client {c} got event {id} nobody published"),
            );
            return;
        };
        if !topics.contains(&m.group) {
            self.misdeliveries += 1;
            note(
                &mut self.violations,
                format!("client {c} got event {id} of a topic it is not subscribed to"),
            );
        }
        let n = m.got.entry(c).or_default();
        *n += 1;
        if *n > 1 {
            self.duplicates += 1;
            note(
                &mut self.violations,
                format!("client {c} got event {id} twice"),
            );
        }
    }

    pub(crate) fn sent_request(
        &mut self,
        c: ClientKey,
        id: u64,
        cluster: usize,
        now: u64,
        deadline: u64,
    ) {
        self.requests.insert(
            (c, id),
            Request {
                cluster,
                sent: now,
                deadline,
                replies: 0,
                success: false,
                timed_out: false,
            },
        );
    }

    /// A member got request `id` of client `origin` at `now`.
    pub(crate) fn request_delivered(
        &mut self,
        member: ClientKey,
        origin: ClientKey,
        id: u64,
        now: u64,
    ) {
        let cluster = self.clients.get(&member).and_then(|l| l.cluster);
        let Some(r) = self.requests.get(&(origin, id)) else {
            note(
                &mut self.violations,
                format!("member {member} got request {origin}/{id} nobody sent"),
            );
            return;
        };
        if cluster != Some(r.cluster) {
            self.misdeliveries += 1;
            note(
                &mut self.violations,
                format!("member {member} got request {origin}/{id} of another cluster"),
            );
        }
        if now > r.deadline {
            self.late_requests += 1;
            note(
                &mut self.violations,
                format!(
                    "member {member} got request {origin}/{id} {} ms after its deadline",
                    (now - r.deadline) / 1_000_000
                ),
            );
        }
    }

    pub(crate) fn got_reply(&mut self, c: ClientKey, id: u64, success: bool, timed_out: bool) {
        let Some(r) = self.requests.get_mut(&(c, id)) else {
            note(
                &mut self.violations,
                format!("client {c} got a REPLY for request {id} it never sent"),
            );
            return;
        };
        r.replies += 1;
        r.success |= success;
        r.timed_out |= timed_out;
        if r.replies > 1 {
            self.second_replies += 1;
            note(
                &mut self.violations,
                format!("client {c} got {} REPLYs for request {id}", r.replies),
            );
        }
    }

    pub(crate) fn tunnel_started(&mut self, tunnel: u64, origin: ClientKey, messages: u32) {
        self.tunnels.insert(
            tunnel,
            Tunnel {
                messages,
                origin,
                member: None,
                ends: Default::default(),
            },
        );
    }

    /// A member accepted tunnel `tunnel`.
    pub(crate) fn tunnel_accepted(&mut self, tunnel: u64, member: ClientKey) {
        if let Some(t) = self.tunnels.get_mut(&tunnel) {
            t.member = Some(member);
        }
    }

    /// End `side` (0: origin, 1: member) received message `seq`.
    pub(crate) fn tunnel_message(&mut self, tunnel: u64, side: usize, seq: u32) {
        let Some(t) = self.tunnels.get_mut(&tunnel) else {
            return;
        };
        let end = &mut t.ends[side];
        if seq != end.next || end.closed.is_some() {
            self.tunnel_order += 1;
            let what = if end.closed.is_some() {
                "after its close"
            } else {
                "out of order"
            };
            note(
                &mut self.violations,
                format!(
                    "tunnel {tunnel} end {side} got message {seq} {what} (expected {})",
                    end.next
                ),
            );
        }
        end.next = end.next.max(seq + 1);
    }

    /// End `side` of `tunnel` was closed, with `reason` (empty: graceful).
    pub(crate) fn tunnel_closed(&mut self, tunnel: u64, side: usize, reason: &str) {
        if let Some(t) = self.tunnels.get_mut(&tunnel) {
            t.ends[side]
                .closed
                .get_or_insert_with(|| reason.to_string());
        }
    }

    /// Settles everything at `end` (time of the last event).
    pub(crate) fn finish(mut self, end: u64) -> Audit {
        let (b_owed, b_got) = self.settle(true, end);
        let (p_owed, p_got) = self.settle(false, end);
        let requests: Vec<(ClientKey, Request)> = std::mem::take(&mut self.requests)
            .into_iter()
            .map(|((c, _), r)| (c, r))
            .collect();
        let (without_one, answerable, answered) = self.settle_requests(&requests, end);
        let mut tunnels_completed = 0;
        let tunnels_broken = self
            .tunnels
            .values()
            .filter(|t| {
                t.ends
                    .iter()
                    .any(|e| e.closed.as_ref().is_some_and(|r| !r.is_empty()))
            })
            .count() as u64;
        let requests_timed_out = requests.iter().filter(|(_, r)| r.timed_out).count() as u64;
        for (&id, t) in &self.tunnels {
            let origin_alive = self
                .clients
                .get(&t.origin)
                .is_some_and(|l| l.left.is_none());
            let member_alive = t
                .member
                .and_then(|m| self.clients.get(&m))
                .is_some_and(|l| l.left.is_none());
            let [o, m] = &t.ends;
            let complete = o.next == t.messages && m.next == t.messages;
            match (&o.closed, &m.closed) {
                (Some(a), Some(b)) if a.is_empty() && b.is_empty() && complete => {
                    tunnels_completed += 1
                }
                (Some(a), Some(b)) if !a.is_empty() || !b.is_empty() => {
                    // Failed: both ends must say so (an error, or the other's close).
                    if a.is_empty() != b.is_empty() && !complete && origin_alive && member_alive {
                        self.tunnel_order += 1;
                        self.violations.push(format!(
                            "tunnel {id}: one end closed with an error, the other cleanly ({a:?} / {b:?})"
                        ));
                    }
                }
                (Some(_), Some(_)) => {
                    self.tunnel_order += 1;
                    self.violations
                        .push(format!("tunnel {id} closed cleanly with messages missing"));
                }
                (None, _) | (_, None) => {
                    // An end still open: only if its peer's node died, or the run ended first.
                    let one_closed = o.closed.is_some() || m.closed.is_some();
                    if one_closed && origin_alive && member_alive && t.member.is_some() {
                        self.tunnel_order += 1;
                        self.violations.push(format!(
                            "tunnel {id}: closed at one end only ({:?} / {:?})",
                            o.closed, m.closed
                        ));
                    }
                }
            }
        }
        Audit {
            broadcast_delivery: ratio(b_got, b_owed),
            publish_delivery: ratio(p_got, p_owed),
            expected_deliveries: b_owed + p_owed,
            stable_losses: self.stable_losses,
            stable_loss_examples: std::mem::take(&mut self.stable_loss_examples),
            duplicates: self.duplicates,
            misdeliveries: self.misdeliveries,
            requests: requests.len() as u64,
            requests_answered: ratio(answered, answerable),
            requests_without_one_outcome: without_one + self.second_replies,
            late_requests: self.late_requests,
            tunnel_order_violations: self.tunnel_order,
            tunnels: self.tunnels.len() as u64,
            tunnels_completed,
            tunnels_broken,
            requests_timed_out,
            violations: self.violations,
        }
    }

    /// Checks each request's outcomes at `end`: (requests without exactly one REPLY
    /// although owed one, requests a stable member could answer, those answered).
    fn settle_requests(&mut self, requests: &[(ClientKey, Request)], end: u64) -> (u64, u64, u64) {
        let mut without_one = 0;
        let (mut answerable, mut answered) = (0u64, 0u64);
        for (c, r) in requests {
            // Owed an outcome: the requester lived a second past the deadline, within the
            // run; past the end of a stall its node was in at the deadline (a stopped node
            // times nothing out: a swarm run's requester's node stopped 0.2 s after the
            // request and was killed while stopped, its client 4 s past the deadline).
            let acts = self
                .clients
                .get(c)
                .map_or(r.deadline, |l| self.acts_on(l.node, r.deadline));
            let due = acts + 1_000_000_000;
            let lived = self.alive_through(*c, r.sent, due);
            if lived && due <= end && r.replies != 1 {
                without_one += 1;
                note(
                    &mut self.violations,
                    format!(
                        "client {c}'s request sent at {} ms got {} REPLYs",
                        r.sent / 1_000_000,
                        r.replies
                    ),
                );
            }
            if lived && self.stable_member(r.cluster, r.sent, r.deadline) {
                answerable += 1;
                answered += u64::from(r.success);
            }
        }
        (without_one, answerable, answered)
    }

    /// (owed, delivered) over the broadcasts or the events.
    fn settle(&mut self, broadcasts: bool, end: u64) -> (u64, u64) {
        let messages = if broadcasts {
            std::mem::take(&mut self.broadcasts)
        } else {
            std::mem::take(&mut self.publishes)
        };
        let (mut owed, mut got) = (0u64, 0u64);
        for (&id, m) in &messages {
            if m.sent + self.w.horizon > end {
                continue; // still owed time
            }
            // A sender whose node died at once may not have got it out: nothing is owed.
            if !self.alive_through(m.sender, m.sent, m.sent + self.w.settle) {
                continue;
            }
            for (&c, l) in &self.clients {
                let member = if broadcasts {
                    l.cluster == Some(m.group)
                } else {
                    l.topics.contains(&m.group)
                };
                if member && self.stable(l, m.sent) {
                    owed += 1;
                    let delivered = m.got.contains_key(&c);
                    got += u64::from(delivered);
                    let sender = self.clients.get(&m.sender);
                    let sender_stable = sender.is_some_and(|s| {
                        self.stable(s, m.sent)
                            && !self.stalled_near(s, m.sent)
                            && self.outlived_cut(s, l, m.sent)
                    });
                    if !delivered && sender_stable && !self.stalled_near(l, m.sent) {
                        self.stable_losses += 1;
                        if self.stable_loss_examples.len() < 20 {
                            let kind = if broadcasts { "broadcast" } else { "event" };
                            let from = self.clients.get(&m.sender).map_or(0, |s| s.node);
                            let left = |who: &str, l: Option<&ClientLife>| {
                                l.and_then(|l| l.left).map_or(String::new(), |t| {
                                    format!(", the {who} left at {} ms", t / 1_000_000)
                                })
                            };
                            let gone = left("sender", self.clients.get(&m.sender))
                                + &left("recipient", Some(l));
                            self.stable_loss_examples.push(format!(
                                "{kind} {id} of group {} from node {from} at {} ms, to client {c} on node {}{gone}",
                                m.group,
                                m.sent / 1_000_000,
                                l.node
                            ));
                        }
                    }
                }
            }
        }
        if broadcasts {
            self.broadcasts = messages;
        } else {
            self.publishes = messages;
        }
        (owed, got)
    }

    /// Node `slot` stops (as under SIGSTOP) from `from` until `until`.
    pub(crate) fn stalled(&mut self, slot: usize, from: u64, until: u64) {
        self.stalls.push((slot, from, until));
    }

    /// A partition cut the nodes in `minority` off from the rest from `from` to `until`.
    pub(crate) fn partitioned(&mut self, minority: BTreeSet<usize>, from: u64, until: u64) {
        self.partitions.push((minority, from, until));
    }

    /// Whether a message sent at `t` from `sender` to `to` is owed across the partitions:
    /// if one was on then (or began within `settle` after, with the message on its way),
    /// both must have lived `horizon` past the heal. Between the two sides that is plain;
    /// on one side too, since the message's tree path may run through the other side (a
    /// swarm run lost an event sent 160 ms before a cut to a node on the sender's side,
    /// through the root on the other, and the recipient died 7.6 s into the 16 s cut, before
    /// its side's trees had formed and told it of the gap). A message kept by an origin that
    /// crashed before the heal is lost with the origin.
    fn outlived_cut(&self, sender: &ClientLife, to: &ClientLife, t: u64) -> bool {
        self.partitions.iter().all(|(_, from, until)| {
            let during = from.saturating_sub(self.w.settle) <= t && t < *until;
            let lived = |l: &ClientLife| l.left.is_none_or(|left| left >= until + self.w.horizon);
            !during || (lived(sender) && lived(to))
        })
    }

    /// Whether the client's node stalled between `settle` before `t` and `horizon` after.
    fn stalled_near(&self, l: &ClientLife, t: u64) -> bool {
        let (from, to) = (t.saturating_sub(self.w.settle), t + self.w.horizon);
        self.stalls
            .iter()
            .any(|&(slot, a, b)| slot == l.node && a <= to && b >= from)
    }

    /// When the node in `slot` acts on a deadline at `t`: then, or when a stall it was in
    /// at `t` ended.
    fn acts_on(&self, slot: usize, t: u64) -> u64 {
        self.stalls
            .iter()
            .filter(|&&(s, a, b)| s == slot && a <= t && t < b)
            .map(|&(_, _, b)| b)
            .fold(t, u64::max)
    }

    /// Joined `settle` before `t` and alive until `horizon` after.
    fn stable(&self, l: &ClientLife, t: u64) -> bool {
        l.joined + self.w.settle <= t && l.left.is_none_or(|left| left >= t + self.w.horizon)
    }

    fn alive_through(&self, c: ClientKey, from: u64, to: u64) -> bool {
        self.clients
            .get(&c)
            .is_some_and(|l| l.joined <= from && l.left.is_none_or(|left| left >= to))
    }

    /// Whether some member of `cluster` was joined by `from - settle` and alive until `to`.
    fn stable_member(&self, cluster: usize, from: u64, to: u64) -> bool {
        self.clients.values().any(|l| {
            l.cluster == Some(cluster)
                && l.joined + self.w.settle <= from
                && l.left.is_none_or(|left| left >= to)
        })
    }

    /// The node a client lives on.
    #[allow(dead_code)]
    pub(crate) fn node_of(&self, c: ClientKey) -> Option<usize> {
        self.clients.get(&c).map(|l| l.node)
    }
}

/// Records a violation; the first thousand are kept in full, the counts say the rest.
fn note(violations: &mut Vec<String>, v: String) {
    if violations.len() < 1000 {
        violations.push(v);
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auditor() -> Auditor {
        Auditor::new(Windows {
            settle: 10,
            horizon: 100,
        })
    }

    #[test]
    fn a_missed_stable_member_a_duplicate_and_a_stranger_are_all_counted() {
        let mut a = auditor();
        a.joined(1, 0, Some(7), vec![], 0);
        a.joined(2, 0, Some(7), vec![], 0);
        a.joined(3, 0, None, vec![], 0);
        a.sent_broadcast(1, 7, 3, 50);
        a.got_broadcast(1, 1);
        a.got_broadcast(1, 1);
        a.got_broadcast(3, 1);
        let audit = a.finish(1000);
        assert_eq!(audit.broadcast_delivery, 0.5, "client 2 never got it");
        assert_eq!((audit.duplicates, audit.misdeliveries), (1, 1));
        assert_eq!(audit.violations.len(), 2);
    }

    /// A message sent across a partition is a loss between stable nodes only if both
    /// ends outlived the heal: an origin that crashed before it took its kept messages
    /// along.
    #[test]
    fn a_loss_across_a_partition_counts_only_if_both_ends_outlived_the_heal() {
        let audit = |sender_left: Option<u64>| {
            let mut a = auditor();
            a.joined(1, 0, None, vec![], 0);
            a.joined(2, 1, Some(7), vec![], 0);
            a.partitioned(BTreeSet::from([1]), 40, 400);
            a.sent_broadcast(3, 7, 1, 50);
            if let Some(t) = sender_left {
                a.left(1, t);
            }
            a.finish(10_000)
        };
        // The sender crashed 300 after the send (past `horizon`), before the heal.
        assert_eq!(audit(Some(350)).stable_losses, 0);
        // It lived past the heal: the message should have been asked for and delivered.
        assert_eq!(audit(Some(600)).stable_losses, 1);
        assert_eq!(audit(None).stable_losses, 1);
    }

    #[test]
    fn a_request_without_a_reply_and_a_late_delivery_are_caught() {
        let mut a = auditor();
        a.joined(1, 0, None, vec![], 0);
        a.joined(2, 1, Some(0), vec![], 0);
        a.sent_request(1, 5, 0, 20, 500);
        a.request_delivered(2, 1, 5, 600);
        let audit = a.finish(10_000_000_000);
        assert_eq!(audit.requests_without_one_outcome, 1);
        assert_eq!(audit.late_requests, 1);
        assert_eq!(audit.requests_answered, 0.0);
    }

    /// A stopped node times nothing out: a requester whose node stopped before the
    /// deadline and died stopped is owed no outcome; one whose node resumed is.
    #[test]
    fn a_request_is_owed_its_outcome_only_once_the_requesters_node_could_act() {
        let audit = |left: u64| {
            let mut a = auditor();
            a.joined(1, 0, None, vec![], 0);
            a.sent_request(1, 5, 0, 20, 500_000_000);
            a.stalled(0, 100_000_000, 9_000_000_000);
            a.left(1, left);
            a.finish(20_000_000_000).requests_without_one_outcome
        };
        // Died stopped, 4 s past the deadline: nothing owed.
        assert_eq!(audit(4_500_000_000), 0);
        // Lived a second past the stall's end: its timed-out REPLY was owed.
        assert_eq!(audit(10_500_000_000), 1);
    }

    #[test]
    fn tunnels_out_of_order_or_closed_at_one_end_are_caught() {
        let mut a = auditor();
        a.joined(1, 0, None, vec![], 0);
        a.joined(2, 1, Some(0), vec![], 0);
        a.tunnel_started(9, 1, 2);
        a.tunnel_accepted(9, 2);
        a.tunnel_message(9, 1, 1);
        a.tunnel_closed(9, 0, "the other node is gone");
        let audit = a.finish(1000);
        assert_eq!(audit.tunnel_order_violations, 2, "{:?}", audit.violations);
    }
}
