//! What the driver tells the machine ([`Input`]) and what the machine asks of the driver
//! and the application ([`Output`], [`Event`]).

use super::error::{BuildError, End, RequestError};
use super::id::{BuildId, NodeRequestId, RequestId, TunnelId};
use crate::relay::Name;
use crate::time::Instant;
use bytes::{Bytes, BytesMut};

/// Something the stream did, for [`super::ClientMachine::handle`].
#[derive(Debug)]
pub enum Input {
    /// Bytes read from the node. Read into the buffer that
    /// [`super::ClientMachine::read_buffer`] hands out, and the bytes of a packet split
    /// across reads are never copied; any other buffer works too.
    Received(BytesMut),
    /// The driver wrote this many bytes of earlier [`Output::Transmit`]s to the stream.
    Flushed(usize),
    /// The node's stream ended (it read to its end).
    Eof,
    /// Reading or writing the stream failed: the driver's description, reported as the
    /// reason the connection dropped.
    Failed(String),
}

/// What the machine asks for, from [`super::ClientMachine::poll_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write these bytes to the node, after everything transmitted before, and report them
    /// with [`Input::Flushed`] once written. Writes are pulled: the machine hands out
    /// everything queued at once, then nothing until that is flushed, so the bytes the
    /// application may queue are bounded by [`super::ClientConfig::send_buffer`] however
    /// slow the socket.
    Transmit(Bytes),
    /// Something for the application.
    Event(Event),
}

/// Something for the application, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The node accepted the handshake. Always the first event, unless the session ends
    /// first ([`Event::Ended`]).
    Accepted,
    /// The outcome of request `request`: exactly one per request the machine started.
    Reply {
        /// Which request.
        request: RequestId,
        /// The member's reply, or how it failed.
        outcome: Result<Bytes, RequestError>,
    },
    /// A broadcast to this member's cluster.
    Broadcast(Bytes),
    /// A request delivered to this member, to answer with
    /// [`super::ClientMachine::reply`].
    Request {
        /// The node's id for it.
        id: NodeRequestId,
        /// The payload.
        request: Bytes,
        /// When its requester stops waiting (arrival plus its timeout): work on it that has
        /// not started by then is wasted, as the node discards a later reply.
        deadline: Instant,
    },
    /// An event published to a topic this connection subscribes to.
    Publish {
        /// The topic.
        topic: Name,
        /// The payload.
        event: Bytes,
    },
    /// The outcome of tunnel build `tunnel`: exactly one per
    /// [`super::ClientMachine::tunnel`]. On success the tunnel is open; the machine has
    /// already granted the node its window.
    TunnelBuilt {
        /// Which tunnel.
        tunnel: TunnelId,
        /// Open, or how it failed.
        outcome: Result<(), BuildError>,
    },
    /// A remote client built a tunnel to this member; the machine has confirmed it and
    /// granted the node its window. It is open.
    InboundTunnel {
        /// The tunnel's id in this connection.
        tunnel: TunnelId,
        /// The node's id for the build the machine confirmed.
        build: BuildId,
    },
    /// A whole message on a tunnel, in order. Once the application takes it, tell the
    /// machine with [`super::ClientMachine::tunnel_consumed`]: that re-grants the node
    /// the window the message used.
    TunnelMessage {
        /// Which tunnel.
        tunnel: TunnelId,
        /// The message.
        message: Bytes,
    },
    /// The node granted more allowance on a tunnel: a send waiting on
    /// [`super::CallError::NoAllowance`] may go on.
    TunnelAllowance {
        /// Which tunnel.
        tunnel: TunnelId,
    },
    /// A tunnel closed: the other end closed it or failed, this end's close was
    /// acknowledged, or the connection ended. The machine has forgotten it.
    TunnelClosed {
        /// Which tunnel.
        tunnel: TunnelId,
        /// Empty for a graceful close, else why.
        reason: String,
    },
    /// The session ended: always the last event. Every pending request, build and tunnel
    /// got its closing event before it.
    Ended(End),
}
