//! What a driver and its node say to each other: the inputs it feeds ([`Input`]), the
//! outputs it carries out ([`Output`]), and the events worth a log line ([`Event`]).

use super::ids::ConnId;
use crate::mesh::{DialId, LinkId, MeshEvent};
use crate::relay::Name;
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;

/// Something the driver tells the node.
#[derive(Debug)]
pub enum Input<'a> {
    /// A relay client connected.
    ClientConnected(ConnId),
    /// Bytes arrived from a client, in order.
    ClientData(ConnId, &'a [u8]),
    /// The buffer [`crate::Node::lend_input`] lent for a client, given back with the bytes
    /// read from its socket appended: the same as [`Input::ClientData`] with those bytes,
    /// without copying them.
    ClientRead(ConnId, BytesMut),
    /// The driver wrote this many bytes of earlier transmits to the client's socket.
    ClientFlushed(ConnId, usize),
    /// The client's socket closed or failed; the node forgets it without writing to it.
    ClientGone(ConnId),
    /// The deadline from [`crate::Node::poll_timeout`] has passed.
    Timeout,
    /// Stop serving: every client is told `reason` and closed, peers are told the node
    /// leaves, then [`Event::Stopped`].
    Shutdown(&'a str),
    /// A connection to another node opened: accepted by the peer listener (`dial` is
    /// `None`), or the answer to [`Output::Dial`].
    PeerConnected {
        /// The driver's name for it.
        link: LinkId,
        /// The dial it answers, if any.
        dial: Option<DialId>,
        /// Where an accepted connection comes from, if the driver knows: inbound
        /// handshakes in flight are bounded per source address too
        /// ([`crate::MeshConfig::max_inbound_handshakes_per_addr`]).
        from: Option<std::net::SocketAddr>,
    },
    /// Bytes arrived from a peer link, in order.
    PeerData(LinkId, &'a [u8]),
    /// The buffer [`crate::Node::lend_peer_input`] lent for a link, given back with the
    /// bytes read from its socket appended: [`Input::PeerData`] without copying them.
    PeerRead(LinkId, BytesMut),
    /// The driver wrote this many bytes of earlier transmits to the peer link's socket (the
    /// link's frames are handed out as the socket takes them, so that control messages
    /// keep their priority over queued data on a slow link).
    PeerFlushed(LinkId, usize),
    /// A peer link's socket closed or failed.
    PeerGone(LinkId),
    /// A dial could not connect.
    DialFailed(DialId),
    /// Join the overlay through the node at this address (an operator named it).
    JoinVia(SocketAddr),
    /// A datagram arrived on the discovery socket (see [`Output::Beacon`]).
    Beacon {
        /// Where it came from (answers go there).
        from: SocketAddr,
        /// What it held.
        data: &'a [u8],
    },
    /// The signature asked for by [`Output::Sign`].
    Signed(LinkId, &'a [u8]),
}

/// Something the node asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write these bytes to the client's socket, after everything transmitted before, and
    /// report them with [`Input::ClientFlushed`] once written. The node hands out a bounded
    /// amount at a time and more as flushes come back (pulled writes): what a client has not
    /// yet been handed stays in the node, which can still drop it or put a CLOSE before it.
    Transmit(ConnId, Bytes),
    /// Close the client's socket once everything transmitted before is written (or after a
    /// short grace, if the client stopped reading).
    Close(ConnId),
    /// Stop reading the client's socket (feed no more [`Input::ClientData`] for it) until
    /// [`Output::ResumeReading`]: its next message cannot be queued yet, so TCP pushes back
    /// on it. Bytes already read when this comes may still be fed.
    PauseReading(ConnId),
    /// Read the client's socket again.
    ResumeReading(ConnId),
    /// Open a TCP connection to another node; answer with [`Input::PeerConnected`] naming
    /// this dial, or [`Input::DialFailed`].
    Dial(DialId, SocketAddr),
    /// Write these bytes to the peer link's socket, after everything before, and report
    /// them with [`Input::PeerFlushed`] once written (pulled, like client writes).
    PeerTransmit(LinkId, Bytes),
    /// Close the peer link's socket once everything before is written.
    PeerClose(LinkId),
    /// Send a discovery datagram: to `to`, or (`None`) to every address discovery looks
    /// at (the well-known ports on this host; the local subnet where asked). Best effort:
    /// a beacon that cannot be sent is dropped. Report datagrams received on the discovery
    /// socket with [`Input::Beacon`].
    Beacon {
        /// One address (an answer), or everywhere discovery looks.
        to: Option<SocketAddr>,
        /// The datagram.
        data: Bytes,
    },
    /// A link's handshake needs this signed with the network key it names (only with
    /// `LinkConfig::offload_signatures`): sign it off the node's thread (an RSA
    /// private-key operation is milliseconds) and answer with [`Input::Signed`].
    Sign(LinkId, crate::link::ToSign),
    /// Something worth logging or counting happened.
    Event(Event),
}

/// Notable things for logs and statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The node serves: the driver may open the relay port. A lone node is ready at once;
    /// with an overlay this waits for convergence.
    Ready,
    /// A client completed its handshake; `cluster` is empty for a plain client.
    ClientAttached {
        /// The connection.
        conn: ConnId,
        /// The cluster it registered under.
        cluster: Name,
    },
    /// The node stopped serving a client.
    ClientClosed {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// Shutdown finished: every client was told and closed (and peers told the node left:
    /// write the transmits before this one, then exit).
    Stopped,
    /// The overlay reports something: convergence, a peer down, a link closed, a dial failed.
    Mesh(MeshEvent),
    /// Messages were dropped (each is counted in [`crate::Stats`] under the same reason):
    /// reported after the input that dropped them, one event per reason, so that no loss
    /// is silent.
    Dropped {
        /// Why: the reason label of the `dropped` counters (`cast_no_link`, `cast_gone`,
        /// `peer_unreachable`, ...).
        reason: &'static str,
        /// What the last one was: its group or kind.
        what: String,
        /// How many since the last report.
        count: u64,
    },
    /// Trees were refused because this node takes part in `ScribeConfig::max_trees`
    /// already, or its tree state reached its share of the memory budget (reported once
    /// for every refusals that came together): messages of those
    /// groups are not carried through this node, or, for its own clients' groups, do not
    /// reach them from other nodes.
    TreesFull {
        /// The last group refused, as `cluster NAME` or `topic NAME`.
        group: String,
        /// Refusals since the last report.
        refused: u64,
        /// The bound on trees.
        max_trees: usize,
        /// Set when the last refusal was for memory: the bytes of tree state allowed (a
        /// quarter of `Config::max_memory`).
        memory: Option<usize>,
    },
}

/// Why a client connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent CLOSE.
    Graceful,
    /// The socket closed under us.
    Gone,
    /// The client broke the protocol after its handshake; it was told this text.
    Violation(String),
    /// Refused before or at the handshake (not an Iris client, wrong version, too many
    /// clients, too slow, pushed out of a full handshake pool). A client that sent a valid
    /// INIT is told why with `DENY`; before that nothing is sent.
    Refused(String),
    /// It did not read what it was sent (unwritten bytes over the congestion mark for too
    /// long, over its hard cap, or the most of all when the memory budget ran out); it was
    /// told this text with `CLOSE`, ahead of whatever was still queued for it.
    SlowConsumer(String),
    /// The node is shutting down.
    Shutdown,
}
