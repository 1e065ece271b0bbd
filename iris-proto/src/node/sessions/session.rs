//! Per-connection state of a relay client as the node sees it: its input, its output and
//! its place in flow control. (What it is a member of, and its requests and tunnels, are
//! kept by the parts that own those: `groups`, `requests`, `tunnels`.)

use super::Blocker;
use super::outbox::Outbox;
use crate::node::ConnId;
use crate::relay::ClientPacket;
use crate::time::Instant;
use bytes::BytesMut;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for INIT; dropped at the deadline.
    Handshake { deadline: Instant },
    /// Handshake done: any packet of the client's direction may come.
    Active,
}

/// Whom a congested consumer holds back, from the most to the fewest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Tether {
    /// The producers of every group it is a member of (within its grace).
    Held,
    /// Past its grace: only the producers of a group that has no other consumer.
    Grace,
    /// Nobody: the node a group's multicasts come from has other consumers to feed.
    Loose,
}

/// One relay client connection.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: ConnId,
    pub(crate) phase: Phase,
    /// Bytes received and not yet decoded (at most one incomplete packet after decoding).
    pub(crate) rbuf: BytesMut,
    /// While `rbuf` is lent to the driver to read into (`Node::lend_input`), its length
    /// then: it is charged as it was until it comes back.
    pub(crate) lent: Option<usize>,
    /// Bytes charged to the memory budget for `rbuf`: its length, or the whole announced
    /// size of a large packet in progress (reserved when it starts).
    pub(crate) in_charge: usize,
    /// The large-packet reservation included in `in_charge`, if any.
    pub(crate) reserved: usize,
    /// Waiting for memory to reserve its next large packet: not read meanwhile.
    pub(crate) wants_memory: bool,
    /// Outgoing bytes, queued and in flight.
    pub(crate) outbox: Outbox,
    /// In the queue of connections with bytes to hand the driver.
    pub(crate) dirty: bool,
    /// Unwritten bytes passed the congestion mark: until when it may stay so before it is
    /// cut as a slow consumer.
    pub(crate) congested: Option<Instant>,
    /// While congested: whom it still holds back (see `flow.rs`).
    pub(crate) tether: Tether,
    /// Producers whose next packet waits for this connection to drain.
    pub(crate) waiters: Vec<ConnId>,
    /// This producer's next packet, which could not be queued, and what it waits for.
    pub(crate) held: Option<(ClientPacket, Blocker)>,
    /// Whether the driver was last told to stop reading this connection.
    pub(crate) told_paused: bool,
}

impl Session {
    pub(crate) fn new(id: ConnId, deadline: Instant) -> Session {
        Session {
            id,
            phase: Phase::Handshake { deadline },
            rbuf: BytesMut::new(),
            lent: None,
            in_charge: 0,
            reserved: 0,
            wants_memory: false,
            outbox: Outbox::default(),
            dirty: false,
            congested: None,
            tether: Tether::Held,
            waiters: Vec::new(),
            held: None,
            told_paused: false,
        }
    }

    /// Whether the handshake is done.
    pub(crate) fn is_active(&self) -> bool {
        self.phase == Phase::Active
    }
}
