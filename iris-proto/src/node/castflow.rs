//! Flow control of multicasts between nodes, so that a broadcast or an event is throttled
//! at its source instead of being lost on the way.
//!
//! Each node may have at most a window of multicast bytes toward a peer that the peer has
//! not yet taken: the receiver returns credit (`CastCredit`, a control message, so that a
//! data flood never holds it up) as it carries what it received on, and withholds it while
//! a local member that a multicast was delivered to is congested or while its own
//! multicasts toward other peers wait for credit. A multicast with no credit toward its
//! next hop waits in this node, in order; while more than a mark waits here, clients
//! producing multicasts are held (as for a congested local consumer), so that the
//! back-pressure reaches the producer across any number of hops and memory stays bounded:
//! what waits in a node is the mark plus one window per peer feeding it.
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

/// The blocker of a producer held because this node's multicasts wait for credit: no
/// connection has this id (drivers number connections from zero).
pub(super) const NETWORK: ConnId = ConnId(u64::MAX);

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
    /// Local members congested when multicasts from peers were delivered to them.
    blockers: Vec<ConnId>,
    /// Producers held until less waits.
    pub(super) held: Vec<ConnId>,
}

#[derive(Debug)]
struct Outbound {
    to: Contact,
    credit: i64,
    waiting: VecDeque<Bytes>,
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

    /// More than the mark waits for credit: producers of multicasts must wait.
    pub(super) fn congested(&self) -> bool {
        self.waiting > self.mark
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
            o.waiting.push_back(bytes);
            self.casts.waiting += len;
            self.stats.casts_waited += 1;
        }
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
                Some(b) if may_send(o.credit, window, b.len()) => b.len(),
                _ => break,
            };
            let bytes = o.waiting.pop_front().expect("front exists");
            o.credit -= len as i64;
            let to = o.to;
            self.casts.waiting -= len;
            self.send_under_credit(to, bytes);
        }
        self.wake_cast_producers();
    }

    /// A multicast of `len` bytes came from `from`: it is owed credit once carried on.
    pub(super) fn cast_received(&mut self, from: Contact, len: usize) {
        let e = self.casts.owed.entry(from.id).or_insert((from, 0));
        e.0 = from;
        e.1 += len as u64;
        self.casts.owed_total += len as u64;
    }

    /// Returns credit to the peers owed some, unless a member it was delivered to is still
    /// congested or this node's own multicasts wait. Credit goes in steps of a quarter
    /// window (a sender blocked for credit is always owed at least that much).
    pub(super) fn return_cast_credit(&mut self) {
        let step = self.casts.window / 4;
        if self.casts.owed_total < step.max(1) {
            return;
        }
        let conns = &self.conns;
        self.casts.blockers.retain(|&c| conns.is_congested(c));
        if !self.casts.blockers.is_empty() || self.casts.congested() {
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
        let waiting: Vec<Bytes> = o.waiting.into();
        self.casts.waiting -= waiting.iter().map(Bytes::len).sum::<usize>();
        self.wake_cast_producers();
        waiting
    }

    /// Producers held for the network go on once at most half the mark waits.
    fn wake_cast_producers(&mut self) {
        if self.casts.waiting <= self.casts.mark / 2 {
            self.wakeups.extend(self.casts.held.drain(..));
        }
    }
}

/// Whether a message of `len` bytes may go with `credit` left: there is credit for it, or
/// nothing at all is outstanding (a message larger than the window goes alone).
fn may_send(credit: i64, window: i64, len: usize) -> bool {
    credit >= len as i64 || credit >= window
}
