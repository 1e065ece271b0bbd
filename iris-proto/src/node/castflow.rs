//! Flow control of multicasts between nodes, so that a broadcast or an event is throttled
//! at its source instead of being lost on the way.
//!
//! Each node may have at most a window of multicast bytes toward a peer that the peer has
//! not yet taken: the receiver returns credit (`CastCredit`, a control message, so that a
//! data flood never holds it up) as it carries what it received on. It withholds it while
//! a local member that a multicast was delivered to is congested, and, once more than
//! twice the mark of peers' multicasts waits here to be passed on, for each further one
//! until it has left. A multicast with no credit toward its next hop waits in this node,
//! in order; while more than a mark of this node's own clients' multicasts waits here,
//! those clients are held (as for a congested local consumer). So back-pressure reaches
//! the producer across any number of hops, and memory stays bounded: what waits in a node
//! is the mark for its own clients, twice that plus a window per feeding peer for what it
//! passes on.
//!
//! Holding credit for every multicast passed on would be tighter, and can deadlock:
//! multicasts of different trees cross the same links in different orders, and links
//! whose multicasts wait for each other's credit in a cycle wait for ever (the ring
//! benchmark at 4 KiB did). Past the bound that can still happen; the bound is large
//! against what one link's window lets through.
//!
//! Credit is never withheld because this node's *own* clients' multicasts wait: a ring of
//! clients passing messages on across nodes would otherwise wait for itself for ever. The
//! clients themselves carry that back-pressure (a held producer stops reading, its
//! consumer congests, its node withholds credit).
//!
//! The window is per link, not per group: while one member lags, the multicasts that its
//! node receives from a peer stall together (until it drains or is cut as a slow
//! consumer). Requests, replies, tunnels and the overlay's control traffic are not
//! affected.

use super::conns::Conns;
use super::wire::NodeMsg;
use super::{ConnId, Node};
use crate::mesh::Class;
use crate::overlay::{Contact, NodeId};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};

/// The multicast flow state of a node.
#[derive(Debug, Default)]
pub(super) struct CastFlow {
    /// Bytes a peer may have outstanding from this node (and this node from a peer).
    window: u64,
    /// Bytes waiting for credit above which producers are held (until half of it).
    mark: usize,
    /// Per peer: the credit left and what waits for more.
    out: BTreeMap<NodeId, Outbound>,
    /// Per peer: bytes received and not yet credited back.
    owed: BTreeMap<NodeId, (Contact, u64)>,
    owed_total: u64,
    /// Bytes waiting for credit, every peer together.
    waiting: usize,
    /// Bytes of this node's own clients' multicasts among them.
    waiting_own: usize,
    /// A peer's multicast is being passed on (what is sent now is not this node's own).
    passing_on: bool,
    /// While it is: who sent it and its size, for the credit it is owed (taken by the copy
    /// that holds the credit until it leaves).
    transit: Option<(Contact, u64)>,
    /// Local members congested when multicasts from peers were delivered to them.
    blockers: Vec<ConnId>,
    /// Producers held until less waits.
    pub(super) held: Vec<ConnId>,
}

#[derive(Debug)]
struct Outbound {
    to: Contact,
    credit: i64,
    waiting: VecDeque<Waiting>,
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
    /// Windows of `window` bytes per peer; producers held above `mark` bytes waiting.
    pub(super) fn new(window: u64, mark: usize) -> CastFlow {
        CastFlow {
            window: window.max(1),
            mark,
            ..CastFlow::default()
        }
    }

    /// More than the mark of this node's own multicasts waits for credit: its clients'
    /// broadcasts and events must wait.
    pub(super) fn congested(&self) -> bool {
        self.waiting_own > self.mark
    }

    /// Members that a multicast from a peer was just delivered to: those congested hold
    /// this node's credit back until they drain.
    pub(super) fn delivered_to(&mut self, conns: &Conns, members: &[ConnId]) {
        for &m in members {
            if conns.is_congested(m) && !self.blockers.contains(&m) {
                self.blockers.push(m);
            }
        }
    }

    /// Bytes waiting for credit.
    pub(super) fn waiting_bytes(&self) -> usize {
        self.waiting
    }
}

impl Node {
    /// Sends an encoded multicast to a peer under its window, or queues it for credit.
    pub(super) fn send_cast(&mut self, to: Contact, bytes: Bytes) {
        let window = self.casts.window as i64;
        let o = self.casts.out.entry(to.id).or_insert_with(|| Outbound {
            to,
            credit: window,
            waiting: VecDeque::new(),
        });
        o.to = to;
        let len = bytes.len();
        if o.waiting.is_empty() && may_send(o.credit, window, len) {
            o.credit -= len as i64;
            self.send_under_credit(to, bytes);
        } else {
            // (Every copy of a peer's multicast is the peer's, whichever holds its credit.)
            let own = !self.casts.passing_on;
            // Credit for a peer's multicast is held back only past a bound of such
            // multicasts waiting: holding it always lets links whose multicasts wait for
            // each other in a cycle (paths through different trees) wait for ever.
            let upstream =
                if own || self.casts.waiting - self.casts.waiting_own < self.casts.mark * 2 {
                    None
                } else {
                    self.casts.transit.take()
                };
            if own {
                self.casts.waiting_own += len;
            }
            o.waiting.push_back(Waiting {
                bytes,
                own,
                upstream,
            });
            self.casts.waiting += len;
            self.stats.casts_waited += 1;
        }
    }

    /// Passes a multicast from a peer on (`pass` does it); the credit for it is owed at once
    /// unless a copy had to wait, in which case it is owed when that copy leaves.
    pub(super) fn in_transit(&mut self, from: Contact, len: usize, pass: impl FnOnce(&mut Node)) {
        self.casts.transit = Some((from, len as u64));
        self.casts.passing_on = true;
        pass(self);
        self.casts.passing_on = false;
        if let Some((from, len)) = self.casts.transit.take() {
            self.owe(from, len);
        }
    }

    fn owe(&mut self, to: Contact, len: u64) {
        let e = self.casts.owed.entry(to.id).or_insert((to, 0));
        e.0 = to;
        e.1 += len;
        self.casts.owed_total += len;
    }

    /// Hands a multicast the window made room for to the link. The window bounds what it
    /// queues there, so the link's own bound on data (which requests meet) does not apply.
    fn send_under_credit(&mut self, to: Contact, bytes: Bytes) {
        let len = bytes.len() as i64;
        if !self.send_bytes(to, Class::Stream, bytes) {
            // No link: the peer will never credit it back.
            self.stats.casts_dropped += 1;
            if let Some(o) = self.casts.out.get_mut(&to.id) {
                o.credit += len;
            }
        }
    }

    /// A peer took `bytes` of this node's multicasts: what waited for it goes.
    pub(super) fn on_cast_credit(&mut self, from: NodeId, bytes: u64) {
        let window = self.casts.window as i64;
        let Some(o) = self.casts.out.get_mut(&from) else {
            return;
        };
        // Never more than a window: credit from a link before a reconnection cannot
        // inflate the next one's.
        o.credit = (o.credit + bytes as i64).min(window);
        loop {
            let Some(o) = self.casts.out.get_mut(&from) else {
                return;
            };
            let len = match o.waiting.front() {
                Some(w) if may_send(o.credit, window, w.bytes.len()) => w.bytes.len(),
                _ => break,
            };
            let w = o.waiting.pop_front().expect("front exists");
            o.credit -= len as i64;
            let to = o.to;
            self.left_waiting(&w);
            self.send_under_credit(to, w.bytes);
        }
        self.wake_cast_producers();
    }

    /// Returns credit to the peers owed some, unless a member a multicast was delivered to
    /// is still congested. Credit goes in steps of a quarter window (a sender blocked for
    /// credit is always owed at least that much).
    pub(super) fn return_cast_credit(&mut self) {
        let step = self.casts.window / 4;
        if self.casts.owed_total < step.max(1) {
            return;
        }
        let conns = &self.conns;
        self.casts.blockers.retain(|&c| conns.is_congested(c));
        if !self.casts.blockers.is_empty() {
            return;
        }
        let due: Vec<(Contact, u64)> = self
            .casts
            .owed
            .values()
            .filter(|(_, n)| *n >= step.max(1))
            .copied()
            .collect();
        for (peer, bytes) in due {
            self.casts.owed.remove(&peer.id);
            self.casts.owed_total -= bytes;
            self.stats.cast_credits_sent += 1;
            self.send_peer(peer, Class::Control, &NodeMsg::CastCredit { bytes });
        }
    }

    /// A peer is gone: what waited for it is routed around it if it can be, and neither
    /// side owes the other anything (a new link starts with a fresh window).
    pub(super) fn cast_peer_lost(&mut self, node: NodeId) -> Vec<Bytes> {
        if let Some((_, n)) = self.casts.owed.remove(&node) {
            self.casts.owed_total -= n;
        }
        let Some(o) = self.casts.out.remove(&node) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(o.waiting.len());
        for w in o.waiting {
            self.left_waiting(&w);
            out.push(w.bytes);
        }
        self.wake_cast_producers();
        out
    }

    /// A multicast stopped waiting: its upstream is owed its credit now.
    fn left_waiting(&mut self, w: &Waiting) {
        let len = w.bytes.len();
        self.casts.waiting -= len;
        if w.own {
            self.casts.waiting_own -= len;
        }
        // Owed even if that peer's link went meanwhile: credit beyond a window is capped at
        // the sender, and a peer that is gone never reads it.
        if let Some((from, n)) = w.upstream {
            self.owe(from, n);
        }
    }

    /// Producers held for the network go on once at most half the mark waits.
    fn wake_cast_producers(&mut self) {
        if self.casts.waiting_own <= self.casts.mark / 2 {
            self.wakeups.extend(self.casts.held.drain(..));
        }
    }
}

/// Whether a message of `len` bytes may go with `credit` left: there is credit for it, or
/// nothing at all is outstanding (a message larger than the window goes alone).
fn may_send(credit: i64, window: i64, len: usize) -> bool {
    credit >= len as i64 || credit >= window
}
