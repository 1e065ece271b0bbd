//! What one part of the node asks of another. Parts never hold each other: a part's
//! `handle_*` method changes its own state and pushes effects here, and the node's router
//! (`router.rs`) carries each one out by calling the part it is for, at once and in the
//! order emitted, depth first: exactly the order of the calls they stand for. Work a part
//! keeps for the end of an input (cuts, wakeups, tree messages) it hands out instead
//! through its own `poll_*`, which the router's loop drains in a fixed order.

use super::ids::{ConnId, PeerReqKey, ReqKey, TunKey};
use super::sessions::Cut;
use super::wire::{Anycast, NodeMsg};
use crate::mesh::Class;
use crate::overlay::{Contact, NodeId};
use crate::relay::{Name, NodePacket};
use crate::scribe::Group;
use crate::time::Instant;
use bytes::Bytes;

/// One thing a part asks of another.
#[derive(Debug)]
pub(crate) enum Effect {
    // ---- to the sessions (relay connections) ----
    /// Queue a packet for a client.
    Send(ConnId, NodePacket),
    /// Queue a request for a member: dropped unsent if still queued at the instant.
    SendExpiring(ConnId, NodePacket, Instant),
    /// A client broke the protocol: tell it why and close it.
    Violation(ConnId, String),
    /// Cut a consumer that does not keep up.
    Cut(ConnId, Cut),
    /// Charge bytes a part holds for clients (tunnel buffers) to the memory budget.
    Charge(usize),
    /// Give bytes charged with [`Effect::Charge`] back.
    Release(usize),
    /// A producer held for the network may go on: it is tried again once the input is
    /// handled ([`Effect::Retry`]).
    Wake(ConnId),
    /// Try a held producer's packet again now.
    Retry(ConnId),
    /// A client that waited for memory for a large message reads on now.
    ReadOn(ConnId),

    // ---- from the sessions ----
    /// A client finished its handshake as a member of this cluster.
    Registered(ConnId, Name),
    /// A client connection is gone: every part forgets it.
    Closed {
        /// The connection.
        conn: ConnId,
        /// Its last packet was held for peers' multicast credit.
        held_for_network: bool,
    },
    /// A consumer drained: what waits for it goes on.
    Decongested(ConnId),

    // ---- to the trees ----
    /// Local members of a group appeared (`true`) or all left.
    GroupChanged(Group, bool),
    /// A multicast waiting for credit toward a lost peer: route it around the peer.
    Reroute(Bytes),

    // ---- to the multicast flow ----
    /// Pass a multicast of a group to a tree neighbour, under the group's credit; `true`:
    /// the neighbour is a child on the multicast's tree (so it leads to members: see
    /// `castflow::flowed`).
    CastTo(Contact, Group, Bytes, bool),

    // ---- pending work the router loop takes from the parts ----
    /// News from the mesh: a peer's message, a link up or down, a peer dead.
    News(crate::mesh::Incoming),
    /// Peers came or went: messages held for a tree may go on now.
    ReleaseHeld,
    /// A draining shutdown has nothing left in progress: it goes on.
    Drained,

    // ---- to the node (where several parts meet) ----
    /// A multicast reached this node: its members of the group get it.
    Deliver(Group, Bytes),
    /// An anycast ends here: one of this node's members of its cluster takes it.
    Landed(Anycast),

    // ---- to the mesh ----
    /// Send a node message to a peer; if no link takes it, carry out `refused`.
    ToPeer {
        /// The peer.
        to: Contact,
        /// The queue it takes on the link.
        class: Class,
        /// The encoded message.
        bytes: Bytes,
        /// What a refusal means.
        refused: Refusal,
    },
    /// Open a link to a peer now for a message that will need it soon (the reply a member
    /// is working out), so that the dial overlaps the wait instead of following it.
    Reach(Contact),
    /// Keep the link to a peer however idle (a tunnel runs over it).
    Pin(NodeId),
    /// Undo one [`Effect::Pin`].
    Unpin(NodeId),

    // ---- to the tunnels ----
    /// Forward what tunnel `key` holds toward its end `side` as far as that end takes it.
    Pump(TunKey, usize),
}

/// What it means that a peer's link did not take a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Nothing: the message was worth its moment only, or its loss is someone else's to
    /// notice (tree maintenance, tunnel traffic whose link loss ends the tunnel).
    Ignore,
    /// Tree maintenance: never refused for a full link, kept until the link takes it (see
    /// `trees::deferred`).
    Defer,
    /// A peer told to stop holding a group back (`CastUntether`): it is told again a grace
    /// later if it still does.
    Untether {
        /// The peer.
        to: NodeId,
        /// Its group.
        group: Group,
    },
    /// Credit returned to a peer (`CastCredit`): owed again, and sent a grace later.
    Credit {
        /// The peer.
        to: Contact,
        /// Its group.
        group: Group,
        /// The credit.
        bytes: u64,
    },
    /// A multicast sent under credit: it is dropped, and its credit comes back.
    Cast {
        /// The peer.
        to: NodeId,
        /// Its group.
        group: Group,
        /// Its size.
        len: usize,
    },
    /// A request or a tunnel build on its way: lost (counted; its origin times out). One
    /// that was leaving this node for its own client fails at once.
    Anycast(Option<Start>),
    /// A reply for another node's client (that client times out).
    Reply(PeerReqKey),
}

/// A request or tunnel build of this node's client, as it starts on its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// A request, by this node's key.
    Request(ReqKey),
    /// A tunnel build, by this node's key.
    Build(TunKey),
}

/// Builds a [`Effect::ToPeer`] for a node message.
pub(crate) fn to_peer(to: Contact, class: Class, msg: &NodeMsg, refused: Refusal) -> Effect {
    Effect::ToPeer {
        to,
        class,
        bytes: super::wire::encode(msg),
        refused,
    }
}

/// The router's queue of effects (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Effects(Vec<Effect>);

impl Effects {
    /// Asks for `e`.
    pub(crate) fn push(&mut self, e: Effect) {
        self.0.push(e);
    }

    /// How many are queued (the mark a router call routes from).
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Turns the effects pushed since `mark` around, so that [`Effects::pop_above`] hands
    /// them out in the order they were pushed.
    pub(crate) fn settle_order(&mut self, mark: usize) {
        self.0[mark..].reverse();
    }

    /// The next effect above `mark`, if any.
    pub(crate) fn pop_above(&mut self, mark: usize) -> Option<Effect> {
        if self.0.len() > mark {
            self.0.pop()
        } else {
            None
        }
    }

    /// The effects queued, oldest first (for tests of one part).
    #[cfg(test)]
    pub(crate) fn drain(&mut self) -> std::vec::Drain<'_, Effect> {
        self.0.drain(..)
    }
}
