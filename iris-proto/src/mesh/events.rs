//! What the mesh tells its owners: its driver ([`MeshOutput`], [`MeshEvent`]) and its node
//! ([`Incoming`]), and its counters.

use super::{DialId, LinkId};
use crate::overlay::{Contact, NodeId};
use bytes::Bytes;
use std::net::SocketAddr;
use std::time::Duration;

/// What the mesh asks of its driver (through the node's outputs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshOutput {
    /// Open a TCP connection to `addr`; report [`crate::Input::PeerConnected`] with this
    /// dial, or [`crate::Input::DialFailed`].
    Dial(DialId, SocketAddr),
    /// Write these bytes to the link's socket, after everything before.
    Transmit(LinkId, Bytes),
    /// Close the link's socket once everything before is written.
    Close(LinkId),
    /// Sign this for the link's handshake, off the node's thread; answer with
    /// [`crate::Input::Signed`].
    Sign(LinkId, crate::link::ToSign),
    /// Send a discovery beacon: to `to`, or (`None`) to wherever the driver looks for
    /// nodes (the well-known ports on this host, the local subnet if asked).
    Beacon {
        /// One address (an answer), or everywhere discovery looks.
        to: Option<SocketAddr>,
        /// The beacon.
        data: Bytes,
    },
    /// Something happened.
    Event(MeshEvent),
}

/// What the mesh hands its node, besides outputs for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A node message from a peer, which said who it is.
    Message(Contact, Bytes),
    /// The peer has no link to this node any more (closed, failed, or it left). Its next
    /// message would come on a new link; state bound to the old one (tunnels) is over.
    /// `failed`: it ended by an error or a cut, not a close (the peer may be dead).
    Unlinked {
        /// The peer.
        node: NodeId,
        /// Ended by an error or a cut.
        failed: bool,
    },
    /// A link to the peer is up and it said who it is.
    Linked(NodeId),
    /// A dial to reach the peer failed: it is probably gone. The node messages that waited
    /// for that link come back, so that the node may route them another way.
    Unreachable(NodeId, Vec<Undelivered>),
    /// The overlay found the peer dead, or it left.
    Down(NodeId),
}

/// A node message that waited for a link that never came up, back to its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undelivered {
    /// The message.
    pub bytes: Bytes,
    /// How long it waited: time a request had left went by meanwhile.
    pub waited: Duration,
}

/// What the mesh reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshEvent {
    /// This node's heartbeat came `late`: it was stopped (SIGSTOP, a suspended VM), and
    /// took its peers' silence for its own rather than for their deaths.
    Resumed {
        /// How long past its due time the heartbeat came.
        late: std::time::Duration,
    },
    /// The overlay has been quiet for its convergence period.
    Converged {
        /// Peers known.
        peers: usize,
    },
    /// A peer was found dead or left.
    PeerDown(NodeId),
    /// A link's handshake failed: another network, another key, another version, garbage,
    /// or the peer hung up on it (it may have refused us). Worth a warning: nodes that
    /// should be one network are not.
    HandshakeFailed {
        /// The link.
        link: LinkId,
        /// The address this node dialed, if it dialed (the driver knows an accepted
        /// link's remote address).
        addr: Option<SocketAddr>,
        /// Why, for the log.
        reason: String,
    },
    /// Every seed that answered refused this node's handshake and nobody else is known:
    /// said on each retry. The node does not become ready (open its relay port) meanwhile,
    /// rather than serve quietly as a network of one.
    SeedsRefused {
        /// Each refusing seed and its reason.
        reasons: Vec<(SocketAddr, String)>,
    },
    /// A link is up and its peer said who it is.
    LinkUp {
        /// The link.
        link: LinkId,
        /// The peer.
        peer: NodeId,
    },
    /// An established link ended, with the reason.
    LinkClosed {
        /// The link.
        link: LinkId,
        /// The peer, if it had said who it is.
        peer: Option<NodeId>,
        /// Why, for the log.
        reason: String,
    },
    /// A dial failed.
    DialFailed(SocketAddr),
    /// Discovery heard a node of this network it did not know, and joins through it.
    Discovered {
        /// The node.
        peer: NodeId,
        /// Its peer address.
        addr: SocketAddr,
    },
    /// Beacons of this network's name but not made with its key were ignored: a node with
    /// another network key, or someone forging them. Said at the first and then at most
    /// once a minute, with how many since it was last said and where the last came from.
    BeaconsForged {
        /// Where the last one came from.
        from: SocketAddr,
        /// How many since this was last said.
        count: u64,
    },
    /// The node knows nobody although it was given seeds or joined through someone: said
    /// once per heartbeat period while it lasts. Its seeds are retried each time, and the
    /// driver may offer others ([`crate::Input::JoinVia`]).
    Alone,
}

/// Counters of the mesh.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshStats {
    /// Links whose handshake completed and whose peer identified itself.
    pub links_up: u64,
    /// Links closed for a failed handshake or a broken link protocol.
    pub links_failed: u64,
    /// Links closed as duplicates of another to the same peer.
    pub links_duplicate: u64,
    /// Links closed for idleness.
    pub links_idle: u64,
    /// Links whose peer stayed silent on them and was taken for dead (kept open: the
    /// peer may only have been stopped).
    pub links_silent: u64,
    /// Links a peer had been silent on, replaced by a fresh one it dialed.
    pub links_replaced: u64,
    /// Connections refused at once: too many links, or the node is leaving.
    pub links_refused: u64,
    /// Idle links closed to make room for a new one at `max_links` (least recently used,
    /// needed by no route and no tunnel).
    pub links_evicted: u64,
    /// Inbound links closed in their handshake to make room for a newer one.
    pub handshakes_evicted: u64,
    /// Inbound links refused because their source address had
    /// [`crate::MeshConfig::max_inbound_handshakes_per_addr`] handshakes in flight.
    pub handshakes_refused_per_addr: u64,
    /// Signatures made with the network key by links that are gone (see
    /// [`crate::NodeStatus::signatures`] for every link's).
    pub signatures_closed_links: u64,
    /// Dials that failed.
    pub dials_failed: u64,
    /// Messages dropped: too large for a record, dial failed, link limit, too many waiting
    /// for a dial, or another node answered.
    pub messages_dropped: u64,
    /// Node messages refused because the peer's data queue was full.
    pub data_refused: u64,
    /// Control messages refused because the peer's control queue was full (tree messages
    /// wait and are offered again: each offer counts).
    pub control_refused: u64,
    /// Messages from peers that did not parse or broke the link protocol.
    pub bad_messages: u64,
    /// Discovery beacons sent (answers included).
    pub beacons_sent: u64,
    /// Beacons heard that were garbage, another network's, or of the earlier
    /// unauthenticated layout.
    pub beacons_foreign: u64,
    /// Beacons of this network's name without a MAC under its key: forged, ignored.
    pub beacons_forged: u64,
    /// Beacons no newer than one taken from their node already: replayed, ignored.
    pub beacons_replayed: u64,
    /// Joins through a node that discovery found.
    pub discovered: u64,
}
