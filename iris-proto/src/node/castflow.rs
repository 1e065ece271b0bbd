//! Flow control of multicasts between nodes, so that a broadcast or an event is throttled
//! at its source instead of being lost on the way.
//!
//! Each node may have at most a window of one group's multicast bytes toward a peer that
//! the peer has not yet taken: the receiver returns credit for that group (`CastCredit`, a
//! control message, so that a data flood never holds it up) as it carries what it received
//! on. It withholds a group's credit while a local member of the group that a multicast was
//! delivered to is congested, and, once more than twice the mark of the group's multicasts
//! from peers waits here to be passed on, for each further one until it has left. A
//! multicast with no credit toward its next hop waits in this node, in order; while more
//! than a mark of this node's own clients' multicasts to a group waits here, the clients
//! that send to that group are held (as for a congested local consumer). So back-pressure
//! reaches the producer across any number of hops.
//!
//! **Why per group.** Multicasts of different groups cross the same links, in different
//! orders and directions (each group has its own trees). With one window per link, a
//! lagging member of one group stalls every group its node receives from that peer, and
//! clients that consume one group and produce another (the seed's ring of gophers) then
//! wait for each other in a cycle: the ring benchmark's open loop stalled until a node cut
//! a gopher as a slow consumer. Per group, what waits on a member waits only on that
//! group's consumers, and a chain of such clients ends at one that reads freely.
//!
//! **Memory.** What waits in a node is bounded per group (a mark of its own clients'
//! multicasts plus a message per held producer, twice the mark plus a window per feeding
//! peer of what it passes on) and in total: past four marks of own multicasts waiting, all
//! producers of multicasts are held; past eight marks of passed-on multicasts waiting,
//! credit is held for every further one. Those totals couple groups again, so they sit
//! well above what a few busy groups reach.
//!
//! Credit goes back a quarter window at a time, and a sender with less than that
//! outstanding never waits for it. So that quiet groups leave no state behind, a node owed
//! small amounts for more than [`MAX_OWED_ENTRIES`] peers and groups returns all of them,
//! and a sender forgets a group whose credit is whole and which has nothing waiting.
//!
//! Credit is never withheld because this node's *own* clients' multicasts wait: a client
//! that consumes and produces would otherwise wait for itself. The clients carry that
//! back-pressure themselves (a held producer stops reading, its consumer congests, its
//! node withholds that group's credit).
//!
//! **A slow consumer holds back its own share only.** Withheld credit throttles every
//! consumer downstream of the sender, so it is withheld only for members that hold back
//! their group (see `Sessions::holds_back`: within their grace, or past it when the group
//! has no other consumer at their node). A node whose multicasts of a group have waited for
//! one peer's credit for the grace while they went on elsewhere (other peers, local
//! members) tells that peer so (`CastUntether`): its congested members of the group stop
//! holding it back and queue what comes in their own share, and it tells its own peers the
//! same where the group's multicasts wait for them. A group whose only consumer is slow
//! still throttles its producers to that consumer's pace.
//!
//! Requests, replies, tunnels and the overlay's control traffic are not affected.

use super::effect::{Effect, Effects, Refusal, to_peer};
use super::ids::ConnId;
use super::stats::{Losses, Stats};
use super::wire::NodeMsg;
use crate::mesh::Class;
use crate::overlay::{Contact, NodeId};
use crate::relay::ClientPacket;
use crate::scribe::Group;
use crate::time::Instant;
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Own multicasts waiting (in marks) past which every producer of multicasts is held.
const OWN_TOTAL_MARKS: usize = 4;
/// Passed-on multicasts waiting (in marks) past which credit is held for every group.
const PASSED_TOTAL_MARKS: usize = 8;
/// Peers and groups owed less than a step of credit, past which all of it is returned.
/// Credit goes back a step at a time, so each group that ever received a little would
/// otherwise keep an entry here, and its sender one, for as long as the link lives.
const MAX_OWED_ENTRIES: usize = 1024;

/// The multicast flow state of a node.
#[derive(Debug, Default)]
pub(crate) struct CastFlow {
    /// Bytes of one group a peer may have outstanding from this node (and this node from a
    /// peer).
    window: u64,
    /// Bytes of one group waiting for credit above which its producers are held (until
    /// half of it).
    mark: usize,
    /// How long a peer may hold back a group that goes on elsewhere before it is told to
    /// stop (`CastUntether`).
    grace: Duration,
    /// The node's time, as of its current input.
    pub(crate) now: Instant,
    /// Peers and groups blocked for credit, in the order their grace runs out: at most one
    /// entry for each (see [`Outbound::pending`]), so that a peer blocked and freed many
    /// times within a grace costs one.
    tethers: VecDeque<(Instant, NodeId, Group)>,
    /// Credit no link took, owed again once its time comes (a grace later): else the
    /// sender's window for that group would stay short by it for as long as both live.
    credit_retries: VecDeque<(Instant, Contact, Group, u64)>,
    /// Per peer and group: the credit left and what waits for more.
    out: BTreeMap<(NodeId, Group), Outbound>,
    /// Per peer and group: bytes received and not yet credited back.
    owed: BTreeMap<(NodeId, Group), (Contact, u64)>,
    /// Entries of `owed` at a step or more (due back unless blocked): with none, and few
    /// entries, nothing need be looked at.
    owed_due: usize,
    /// Per group: what waits, who is held, who holds its credit back.
    groups: BTreeMap<Group, GroupFlow>,
    /// Bytes waiting for credit, every peer and group together.
    waiting: usize,
    /// Bytes of this node's own clients' multicasts among them.
    waiting_own: usize,
    /// Producers held, every group together.
    held: usize,
    /// A peer's multicast is being passed on (what is sent now is not this node's own).
    passing_on: bool,
    /// While it is: who sent it and its size, for the credit it is owed (taken by the copy
    /// that holds the credit until it leaves).
    transit: Option<(Contact, u64)>,
    pub(crate) stats: Stats,
    /// Multicasts dropped since the node last reported them.
    pub(crate) losses: Losses,
}

/// One group's multicasts in this node.
#[derive(Debug, Default)]
struct GroupFlow {
    /// Bytes of this node's own clients' multicasts waiting for credit.
    waiting_own: usize,
    /// Bytes of peers' multicasts waiting for credit to be passed on.
    waiting_passed: usize,
    /// Local members congested when the group's multicasts from peers were delivered to
    /// them: the group's credit waits for them to drain.
    blockers: Vec<ConnId>,
    /// Producers held until less of the group waits.
    held: Vec<ConnId>,
    /// Copies of the group's multicasts that went on without waiting (to a peer under
    /// credit, or to local members not congested), while anything of it waited.
    flowed: u64,
}

impl GroupFlow {
    fn idle(&self) -> bool {
        self.waiting_own == 0
            && self.waiting_passed == 0
            && self.blockers.is_empty()
            && self.held.is_empty()
    }
}

#[derive(Debug)]
struct Outbound {
    to: Contact,
    credit: i64,
    waiting: VecDeque<Waiting>,
    /// While something waits: since when the peer holds the group back.
    blocked: Option<Blocked>,
    /// An entry of [`CastFlow::tethers`] is due for it.
    pending: bool,
}

/// A peer holding a group's multicasts back.
#[derive(Debug, Clone, Copy)]
struct Blocked {
    /// When to look again whether the group goes on elsewhere meanwhile.
    check_at: Instant,
    /// The group's [`GroupFlow::flowed`] when the peer began to hold it back.
    flowed: u64,
    /// The peer was told to stop holding it back.
    told: bool,
}

/// A multicast waiting for credit, with the credit owed upstream once it leaves (`None`
/// if none is held for it).
#[derive(Debug)]
struct Waiting {
    bytes: Bytes,
    /// From this node's own clients (not passed on for a peer).
    own: bool,
    upstream: Option<(Contact, u64)>,
}

impl CastFlow {
    /// Windows of `window` bytes per peer and group; producers held above `mark` bytes
    /// of their group waiting; a peer holding a group back past `grace` while it goes on
    /// elsewhere is told to stop.
    pub(crate) fn new(window: u64, mark: usize, grace: Duration) -> CastFlow {
        CastFlow {
            window: window.max(4),
            mark,
            grace,
            ..CastFlow::default()
        }
    }

    /// Whether any of this node's own multicasts waits for credit (if not, none of its
    /// clients must wait for the network).
    pub(crate) fn any_own_waiting(&self) -> bool {
        self.waiting_own > 0
    }

    /// Whether a client's multicast to `group` must wait: too much of this node's own
    /// multicasts to it (or to all groups together) waits for credit.
    pub(crate) fn congested(&self, group: &Group) -> bool {
        self.waiting_own > self.mark * OWN_TOTAL_MARKS
            || self
                .groups
                .get(group)
                .is_some_and(|g| g.waiting_own > self.mark)
    }

    /// Members of `group` that a multicast from a peer was just delivered to: those
    /// congested may hold the group's credit back (while they hold the group back: see
    /// [`CastFlow::return_credit`]); if any was not, the group went on here.
    pub(crate) fn delivered_to(
        &mut self,
        group: &Group,
        members: &[ConnId],
        congested: impl Fn(ConnId) -> bool,
    ) {
        let mut flowed = false;
        for &m in members {
            if congested(m) {
                let g = group_flow(&mut self.groups, group);
                if !g.blockers.contains(&m) {
                    g.blockers.push(m);
                }
            } else {
                flowed = true;
            }
        }
        if flowed {
            self.flowed(group);
        }
    }

    /// A copy of a multicast of `group` went on without waiting, to local members or to a
    /// child on one of its trees: to consumers. (Not to a parent: the way up may lead only
    /// to a root without members, and a group whose only consumer is slow must stay
    /// throttled.)
    pub(crate) fn flowed(&mut self, group: &Group) {
        if let Some(g) = self.groups.get_mut(group) {
            g.flowed += 1;
        }
    }

    /// A producer's multicast to `group` waits for the group's credit.
    pub(crate) fn hold(&mut self, group: &Group, conn: ConnId) {
        group_flow(&mut self.groups, group).held.push(conn);
        self.held += 1;
    }

    /// A held producer is gone.
    pub(crate) fn unhold(&mut self, conn: ConnId) {
        for g in self.groups.values_mut() {
            let before = g.held.len();
            g.held.retain(|&c| c != conn);
            self.held -= before - g.held.len();
        }
        self.groups.retain(|_, g| !g.idle());
    }

    /// Bytes waiting for credit.
    pub(crate) fn waiting_bytes(&self) -> usize {
        self.waiting
    }

    /// Entries kept per peer and group: credit outstanding toward peers, credit owed to
    /// them.
    pub(crate) fn entries(&self) -> (usize, usize) {
        (self.out.len(), self.owed.len())
    }

    /// Credit to send for a group step by step: a quarter window.
    fn step(&self) -> u64 {
        self.window / 4
    }

    fn tidy(&mut self, group: &Group) {
        if self.groups.get(group).is_some_and(GroupFlow::idle) {
            self.groups.remove(group);
        }
    }
}

/// The group a client's multicast goes to.
pub(crate) fn cast_group(packet: &ClientPacket) -> Option<Group> {
    match packet {
        ClientPacket::Broadcast { cluster, .. } => Some(Group::cluster(cluster.clone())),
        ClientPacket::Publish { topic, .. } => Some(Group::topic(topic.clone())),
        _ => None,
    }
}

impl CastFlow {
    /// Sends an encoded multicast of `group` to a peer under its window, or queues it for
    /// credit.
    /// (`down`: `to` is a child on one of the group's trees.)
    pub(crate) fn send_cast(
        &mut self,
        to: Contact,
        group: &Group,
        bytes: Bytes,
        down: bool,
        fx: &mut Effects,
    ) {
        let (window, step) = (self.window as i64, self.step() as i64);
        let o = slot(&mut self.out, to.id, group, || Outbound {
            to,
            credit: window,
            waiting: VecDeque::new(),
            blocked: None,
            pending: false,
        });
        o.to = to;
        let len = bytes.len();
        if o.waiting.is_empty() && may_send(o.credit, window, step, len) {
            o.credit -= len as i64;
            if down {
                self.flowed(group);
            }
            return send_under_credit(to, group, bytes, fx);
        }
        if o.blocked.is_none() {
            let check_at = self.now + self.grace;
            let flowed = self.groups.get(group).map_or(0, |g| g.flowed);
            o.blocked = Some(Blocked {
                check_at,
                flowed,
                told: false,
            });
            if !o.pending {
                o.pending = true;
                self.tethers.push_back((check_at, to.id, group.detached()));
            }
        }
        // (Every copy of a peer's multicast is the peer's, whichever holds its credit.)
        let own = !self.passing_on;
        let mark = self.mark;
        let passed_total = self.waiting - self.waiting_own;
        let g = group_flow(&mut self.groups, group);
        // Credit for a peer's multicast is held back only past a bound of the group's
        // multicasts waiting: below it, what waits is owed upstream at once so that short
        // bursts do not throttle the sender.
        let upstream =
            if own || (g.waiting_passed < mark * 2 && passed_total < mark * PASSED_TOTAL_MARKS) {
                None
            } else {
                self.transit.take()
            };
        if own {
            g.waiting_own += len;
            self.waiting_own += len;
        } else {
            g.waiting_passed += len;
        }
        o.waiting.push_back(Waiting {
            bytes,
            own,
            upstream,
        });
        self.waiting += len;
        self.stats.casts_waited += 1;
    }

    /// A multicast of a group from `from` is being passed on (what is sent until
    /// [`CastFlow::end_transit`] is that peer's): the credit for it is owed at once unless a
    /// copy has to wait, in which case it is owed when that copy leaves.
    pub(crate) fn begin_transit(&mut self, from: Contact, len: usize) {
        self.transit = Some((from, len as u64));
        self.passing_on = true;
    }

    /// The multicast of `group` begun with [`CastFlow::begin_transit`] went on.
    pub(crate) fn end_transit(&mut self, group: &Group) {
        self.passing_on = false;
        if let Some((from, len)) = self.transit.take() {
            self.owe(from, group, len);
        }
    }

    fn owe(&mut self, to: Contact, group: &Group, len: u64) {
        let step = self.step();
        let e = slot(&mut self.owed, to.id, group, || (to, 0));
        e.0 = to;
        let was_due = e.1 >= step;
        e.1 += len;
        if !was_due && e.1 >= step {
            self.owed_due += 1;
        }
    }

    /// A multicast sent under credit found no link: the peer will never credit it back.
    pub(crate) fn refused(&mut self, to: NodeId, group: Group, len: usize) {
        self.stats.casts_dropped += 1;
        self.losses
            .note("cast_no_link", || format!("{group}, to node {to}"));
        if let Some(o) = self.out.get_mut(&(to, group)) {
            o.credit += len as i64;
        }
    }

    /// A peer took `bytes` of this node's multicasts of `group`: what waited for it goes.
    pub(crate) fn handle_credit(
        &mut self,
        from: NodeId,
        group: Group,
        bytes: u64,
        fx: &mut Effects,
    ) {
        let (window, step) = (self.window as i64, self.step() as i64);
        let key = (from, group);
        let Some(o) = self.out.get_mut(&key) else {
            return;
        };
        // Never more than a window: credit from a link before a reconnection cannot
        // inflate the next one's.
        o.credit = (o.credit + bytes as i64).min(window);
        while let Some(o) = self.out.get_mut(&key) {
            let len = match o.waiting.front() {
                Some(w) if may_send(o.credit, window, step, w.bytes.len()) => w.bytes.len(),
                _ => break,
            };
            let w = o.waiting.pop_front().expect("front exists");
            o.credit -= len as i64;
            let to = o.to;
            self.left_waiting(&key.1, &w);
            send_under_credit(to, &key.1, w.bytes, fx);
        }
        if let Some(o) = self.out.get_mut(&key)
            && o.waiting.is_empty()
        {
            o.blocked = None;
            // Nothing outstanding and nothing waiting: a fresh entry would be the same.
            if o.credit >= window {
                self.out.remove(&key);
            }
        }
        self.wake_producers(fx);
        self.tidy(&key.1);
    }

    /// Returns credit to the peers owed a step of it for a group, unless a member of that
    /// group a multicast was delivered to still holds it back from that peer (`holds_back`:
    /// member, group, peer); members `congested` no more are forgotten. (A sender blocked
    /// for credit always has at least a step outstanding, see [`may_send`].)
    pub(crate) fn return_credit(
        &mut self,
        congested: impl Fn(ConnId) -> bool,
        holds_back: impl Fn(ConnId, &Group, NodeId) -> bool,
        fx: &mut Effects,
    ) {
        let step = self.step();
        // Too many small debts: all of them go back (once each), so that both ends forget
        // the groups that are quiet.
        let all = self.owed.len() > MAX_OWED_ENTRIES;
        if self.owed_due == 0 && !all {
            return;
        }
        let due_at = if all { 1 } else { step };
        let flows = &mut self.groups;
        let due: Vec<((NodeId, Group), Contact, u64)> = self
            .owed
            .iter()
            .filter(|(_, (_, n))| *n >= due_at)
            .filter(|((peer, group), _)| match flows.get_mut(group) {
                Some(g) => {
                    g.blockers.retain(|&c| congested(c));
                    !g.blockers.iter().any(|&c| holds_back(c, group, *peer))
                }
                None => true,
            })
            .map(|(key, &(peer, n))| (key.clone(), peer, n))
            .collect();
        for (key, peer, bytes) in due {
            self.owed.remove(&key);
            if bytes >= step {
                self.owed_due -= 1;
            }
            self.tidy(&key.1);
            self.stats.cast_credits_sent += 1;
            let msg = NodeMsg::CastCredit {
                group: key.1.clone(),
                bytes,
            };
            let refused = Refusal::Credit {
                to: peer,
                group: key.1,
                bytes,
            };
            fx.push(to_peer(peer, Class::Control, &msg, refused));
        }
    }

    /// The node stops: what waits for credit goes to its links now, past the windows, so
    /// that it leaves with the farewells instead of being lost with the node (receivers take
    /// whatever arrives; windows only pace a sender that goes on).
    pub(crate) fn flush(&mut self, fx: &mut Effects) {
        let keys: Vec<(NodeId, Group)> = self.out.keys().cloned().collect();
        for key in keys {
            let Some(o) = self.out.get_mut(&key) else {
                continue;
            };
            let to = o.to;
            o.blocked = None;
            for w in std::mem::take(&mut o.waiting) {
                self.left_waiting(&key.1, &w);
                send_under_credit(to, &key.1, w.bytes, fx);
            }
        }
    }

    /// A peer is gone: what waited for it is routed around it if it can be, and neither
    /// side owes the other anything (a new link starts with fresh windows).
    pub(crate) fn handle_peer_lost(&mut self, node: NodeId, fx: &mut Effects) {
        self.credit_retries.retain(|(_, to, ..)| to.id != node);
        let step = self.step();
        let (owed, due) = (&mut self.owed, &mut self.owed_due);
        owed.retain(|(peer, _), (_, n)| {
            let keep = *peer != node;
            if !keep && *n >= step {
                *due -= 1;
            }
            keep
        });
        let keys: Vec<(NodeId, Group)> = self
            .out
            .keys()
            .filter(|(peer, _)| *peer == node)
            .cloned()
            .collect();
        for key in keys {
            let Some(o) = self.out.remove(&key) else {
                continue;
            };
            for w in o.waiting {
                self.left_waiting(&key.1, &w);
                fx.push(Effect::Reroute(w.bytes));
            }
            self.tidy(&key.1);
        }
        self.wake_producers(fx);
    }

    /// Credit for `group` that no link to `to` took: owed again a grace later (unless the
    /// peer is lost meanwhile, which clears both ends' windows).
    pub(crate) fn credit_refused(&mut self, to: Contact, group: Group, bytes: u64) {
        self.stats.cast_credits_refused += 1;
        self.credit_retries
            .push_back((self.now + self.grace, to, group.detached(), bytes));
    }

    /// When a peer's grace for holding a group back next runs out, or refused credit is
    /// owed again.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let tether = self.tethers.front().map(|&(at, _, _)| at);
        let retry = self.credit_retries.front().map(|&(at, ..)| at);
        tether.into_iter().chain(retry).min()
    }

    /// Peers that held a group back for their grace: those whose group went on elsewhere
    /// meanwhile are told to stop holding it back; the others are looked at again a grace
    /// later (a group whose only consumers are behind them stays throttled).
    pub(crate) fn handle_timeout(&mut self, now: Instant, fx: &mut Effects) {
        while self
            .credit_retries
            .front()
            .is_some_and(|&(at, ..)| at <= now)
        {
            let (_, to, group, bytes) = self.credit_retries.pop_front().expect("front exists");
            self.owe(to, &group, bytes);
        }
        while let Some(&(at, peer, _)) = self.tethers.front() {
            if at > now {
                break;
            }
            let (_, _, group) = self.tethers.pop_front().expect("front exists");
            let flowed = self.groups.get(&group).map_or(0, |g| g.flowed);
            let key = (peer, group);
            let Some(o) = self.out.get_mut(&key) else {
                continue;
            };
            o.pending = false;
            let Some(b) = o.blocked.as_mut().filter(|b| !b.told) else {
                continue;
            };
            if b.check_at <= now {
                if flowed > b.flowed {
                    b.told = true;
                    self.stats.cast_untethers_sent += 1;
                    fx.push(untether_msg(o.to, key.1));
                    continue;
                }
                // Nothing went on elsewhere: look again a grace later.
                b.check_at = now + self.grace;
            }
            // (Blocked again since this entry was made: its own grace.)
            o.pending = true;
            self.tethers.push_back((b.check_at, key.0, key.1));
        }
    }

    /// The node that sends this one `group`'s multicasts has other consumers to feed: the
    /// peers that hold the group back here are told the same.
    pub(crate) fn untether(&mut self, group: &Group, fx: &mut Effects) {
        for ((_, g), o) in self.out.iter_mut() {
            if g != group {
                continue;
            }
            if let Some(b) = o.blocked.as_mut().filter(|b| !b.told) {
                b.told = true;
                self.stats.cast_untethers_sent += 1;
                fx.push(untether_msg(o.to, g.clone()));
            }
        }
    }

    /// No link took a `CastUntether` for `to` (its control queue was full): it is told
    /// again a grace later if it still holds the group back, rather than never.
    pub(crate) fn untether_refused(&mut self, to: NodeId, group: Group) {
        let key = (to, group);
        let Some(o) = self.out.get_mut(&key) else {
            return;
        };
        let Some(b) = o.blocked.as_mut().filter(|b| b.told) else {
            return;
        };
        b.told = false;
        b.check_at = self.now + self.grace;
        if !o.pending {
            o.pending = true;
            self.tethers
                .push_back((b.check_at, key.0, key.1.detached()));
        }
    }

    /// A multicast of `group` stopped waiting: its upstream is owed its credit now.
    fn left_waiting(&mut self, group: &Group, w: &Waiting) {
        let len = w.bytes.len();
        self.waiting -= len;
        if w.own {
            self.waiting_own -= len;
        }
        if let Some(g) = self.groups.get_mut(group) {
            if w.own {
                g.waiting_own -= len;
            } else {
                g.waiting_passed -= len;
            }
        }
        // Owed even if that peer's link went meanwhile: credit beyond a window is capped at
        // the sender, and a peer that is gone never reads it.
        if let Some((from, n)) = w.upstream {
            self.owe(from, group, n);
        }
    }

    /// Producers held for the network go on once at most half the mark of their group
    /// waits (and at most half the total bound of every group's).
    fn wake_producers(&mut self, fx: &mut Effects) {
        let c = self;
        if c.held == 0 || c.waiting_own > c.mark * OWN_TOTAL_MARKS / 2 {
            return;
        }
        let half = c.mark / 2;
        for g in c.groups.values_mut() {
            if !g.held.is_empty() && g.waiting_own <= half {
                c.held -= g.held.len();
                for conn in g.held.drain(..) {
                    fx.push(Effect::Wake(conn));
                }
            }
        }
        c.groups.retain(|_, g| !g.idle());
    }
}

/// A `CastUntether` for `group` to peer `to`, told again if no link takes it.
fn untether_msg(to: Contact, group: Group) -> Effect {
    let msg = NodeMsg::CastUntether {
        group: group.clone(),
    };
    let refused = Refusal::Untether { to: to.id, group };
    to_peer(to, Class::Control, &msg, refused)
}

/// Hands a multicast the window made room for to the link. The window bounds what it queues
/// there, so the link's own bound on data (which requests meet) does not apply; if no link
/// takes it, its credit comes back ([`CastFlow::refused`]).
fn send_under_credit(to: Contact, group: &Group, bytes: Bytes, fx: &mut Effects) {
    let refused = Refusal::Cast {
        to: to.id,
        group: group.clone(),
        len: bytes.len(),
    };
    fx.push(Effect::ToPeer {
        to,
        class: Class::Stream,
        bytes,
        refused,
    });
}

/// The entry of `peer` and `group`, made by `new` if there is none. A new entry's group is
/// detached from the message it came in: entries can outlive it by far, and would keep the
/// whole buffer it was read into alive.
fn slot<'a, V>(
    map: &'a mut BTreeMap<(NodeId, Group), V>,
    peer: NodeId,
    group: &Group,
    new: impl FnOnce() -> V,
) -> &'a mut V {
    let key = (peer, group.clone());
    if !map.contains_key(&key) {
        map.insert((peer, group.detached()), new());
    }
    map.get_mut(&key).expect("inserted above")
}

/// A group's flow state, made if there is none (its group detached, as for [`slot`]).
fn group_flow<'a>(groups: &'a mut BTreeMap<Group, GroupFlow>, group: &Group) -> &'a mut GroupFlow {
    if !groups.contains_key(group) {
        groups.insert(group.detached(), GroupFlow::default());
    }
    groups.get_mut(group).expect("inserted above")
}

/// Whether a message of `len` bytes may go with `credit` left of `window`: there is credit
/// for it, or less than a step of credit is outstanding (which the receiver may keep until
/// more arrives, so the sender must not wait for it; a message larger than the window goes
/// this way too).
fn may_send(credit: i64, window: i64, step: i64, len: usize) -> bool {
    credit >= len as i64 || window - credit < step
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::Name;

    #[test]
    fn a_multicast_that_found_no_link_is_noted_with_its_group() {
        let mut flow = CastFlow::new(1 << 20, 1 << 20, Duration::from_millis(500));
        let group = Group::topic(Name::from("news"));
        flow.refused(NodeId(1 << 100), group.clone(), 10);
        flow.refused(NodeId(2 << 100), group, 10);
        assert_eq!(flow.stats.casts_dropped, 2);
        let noted = flow.losses.take();
        assert_eq!(
            noted,
            [(
                "cast_no_link",
                "topic news, to node 00000020".to_string(),
                2
            )]
        );
        assert!(flow.losses.take().is_empty(), "reported once");
    }

    fn peer(n: u128) -> Contact {
        Contact {
            id: NodeId(n << 100),
            addr: ([127, 0, 0, 1], 4000 + n as u16).into(),
            epoch: 1,
        }
    }

    /// The grace of the tests below, and a flow with windows of 1000 bytes under it.
    const GRACE: Duration = Duration::from_millis(500);

    fn flow() -> (CastFlow, Group, Effects) {
        let flow = CastFlow::new(1000, 1 << 20, GRACE);
        (flow, Group::topic(Name::from("news")), Effects::default())
    }

    /// A `CastUntether` no link took is sent again a grace later, while the peer still
    /// holds the group back.
    #[test]
    fn a_refused_untether_is_sent_again_a_grace_later() {
        let (mut flow, group, mut fx) = flow();
        let (slow, fast) = (peer(1), peer(2));
        let msg = Bytes::from(vec![0u8; 1000]);
        flow.send_cast(slow, &group, msg.clone(), true, &mut fx);
        flow.send_cast(slow, &group, msg.clone(), true, &mut fx);
        flow.send_cast(fast, &group, msg.clone(), true, &mut fx);
        flow.now = flow.now + GRACE;
        flow.handle_timeout(flow.now, &mut fx);
        assert_eq!(flow.stats.cast_untethers_sent, 1);
        flow.untether_refused(slow.id, group.clone());
        flow.handle_timeout(flow.now, &mut fx);
        assert_eq!(flow.stats.cast_untethers_sent, 1, "not before a grace");
        flow.now = flow.now + GRACE;
        flow.handle_timeout(flow.now, &mut fx);
        assert_eq!(flow.stats.cast_untethers_sent, 2);
    }

    /// Credit that no link took (the sender unreachable for a moment) is returned again a
    /// grace later, whole: else that sender's window for the group stayed short by it for
    /// as long as both nodes lived. A peer lost meanwhile is owed nothing.
    #[test]
    fn refused_credit_is_returned_again_a_grace_later() {
        let (mut flow, group, mut fx) = flow();
        let (sender, gone) = (peer(1), peer(2));
        let credits = |flow: &mut CastFlow, fx: &mut Effects| -> Vec<(NodeId, u64)> {
            flow.return_credit(|_| false, |_, _, _| false, fx);
            std::iter::from_fn(|| fx.pop_above(0))
                .filter_map(|e| match e {
                    Effect::ToPeer {
                        to,
                        refused: Refusal::Credit { bytes, .. },
                        ..
                    } => Some((to.id, bytes)),
                    _ => None,
                })
                .collect()
        };
        for from in [sender, gone] {
            flow.begin_transit(from, 600);
            flow.end_transit(&group);
        }
        let mut sent = credits(&mut flow, &mut fx);
        sent.sort();
        assert_eq!(sent, vec![(sender.id, 600), (gone.id, 600)]);
        // Neither link took it.
        flow.credit_refused(sender, group.clone(), 600);
        flow.credit_refused(gone, group.clone(), 600);
        assert_eq!(flow.stats.cast_credits_refused, 2);
        flow.handle_timeout(flow.now, &mut fx);
        assert!(credits(&mut flow, &mut fx).is_empty(), "not before a grace");
        flow.handle_peer_lost(gone.id, &mut fx);
        flow.now = flow.now + GRACE;
        assert_eq!(flow.poll_timeout(), Some(flow.now));
        flow.handle_timeout(flow.now, &mut fx);
        assert_eq!(credits(&mut flow, &mut fx), vec![(sender.id, 600)]);
        assert_eq!(flow.poll_timeout(), None);
    }

    /// A peer blocked and freed a thousand times within a grace costs one entry; it is
    /// told to let go only if the group went on to a child meanwhile, and only once.
    #[test]
    fn a_blocked_peer_is_told_once_and_only_if_the_group_went_on_elsewhere() {
        let (mut flow, group, mut fx) = flow();
        let (slow, fast) = (peer(1), peer(2));
        let msg = Bytes::from(vec![0u8; 1000]);
        for _ in 0..1000 {
            flow.send_cast(slow, &group, msg.clone(), true, &mut fx);
            flow.send_cast(slow, &group, msg.clone(), true, &mut fx);
            flow.handle_credit(slow.id, group.clone(), 1000, &mut fx);
        }
        assert_eq!(flow.tethers.len(), 1);
        let untethers = |fx: &mut Effects| {
            std::iter::from_fn(|| fx.pop_above(0))
                .filter(|e| {
                    matches!(
                        e,
                        Effect::ToPeer {
                            class: Class::Control,
                            ..
                        }
                    )
                })
                .count()
        };
        untethers(&mut fx);
        // Still blocked a grace on, nothing went elsewhere but up the tree (which may lead
        // to no member): not told, looked at again.
        flow.send_cast(peer(3), &group, msg.clone(), false, &mut fx);
        flow.now = flow.now + GRACE;
        flow.handle_timeout(flow.now, &mut fx);
        assert_eq!(untethers(&mut fx), 0);
        assert_eq!(flow.tethers.len(), 1);
        // The group goes on to a child meanwhile: told, once.
        flow.send_cast(fast, &group, msg.clone(), true, &mut fx);
        flow.now = flow.now + GRACE;
        flow.handle_timeout(flow.now, &mut fx);
        flow.handle_timeout(flow.now + GRACE, &mut fx);
        assert_eq!(untethers(&mut fx), 1);
        assert_eq!(flow.stats.cast_untethers_sent, 1);
        assert!(flow.tethers.is_empty());
    }
}
