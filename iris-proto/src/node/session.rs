//! Per-connection state of a relay client as the node sees it.

use super::ConnId;
use super::outbox::Outbox;
use crate::relay::{ClientPacket, Name};
use crate::time::Instant;
use bytes::BytesMut;
use std::collections::{BTreeMap, BTreeSet};

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for INIT; dropped at the deadline.
    Handshake { deadline: Instant },
    /// Handshake done: any packet of the client's direction may come.
    Active,
}

/// One relay client connection.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: ConnId,
    pub(crate) phase: Phase,
    /// Bytes received and not yet decoded (at most one incomplete packet after decoding).
    pub(crate) rbuf: BytesMut,
    /// Bytes charged to the memory budget for `rbuf`: its length, or the whole announced
    /// size of a large packet in progress (reserved when it starts).
    pub(crate) in_charge: usize,
    /// The large-packet reservation included in `in_charge`, if any.
    pub(crate) reserved: usize,
    /// Waiting for memory to reserve its next large packet: not read meanwhile.
    pub(crate) wants_memory: bool,
    /// Outgoing bytes, queued and in flight.
    pub(crate) outbox: Outbox,
    /// In the node's queue of connections with bytes to hand the driver.
    pub(crate) dirty: bool,
    /// Unwritten bytes passed the congestion mark: until when it may stay so before it is
    /// cut as a slow consumer.
    pub(crate) congested: Option<Instant>,
    /// Producers whose next packet waits for this connection to drain.
    pub(crate) waiters: Vec<ConnId>,
    /// This producer's next packet, which could not be queued, and the consumer it waits for.
    pub(crate) held: Option<(ClientPacket, super::flow::Blocker)>,
    /// Whether the driver was last told to stop reading this connection.
    pub(crate) told_paused: bool,
    /// The cluster this connection is a member of, if any.
    pub(crate) cluster: Option<Name>,
    pub(crate) topics: BTreeSet<Name>,
    /// Next node-chosen id for a REQUEST delivered to this member (counts from 0).
    pub(crate) next_request_id: u64,
    /// Requests delivered to this member and awaiting its REPLY: node id -> request key.
    pub(crate) delivered: BTreeMap<u64, u64>,
    /// Requests this client made that await an outcome: client id -> request key.
    pub(crate) requested: BTreeMap<u64, u64>,
    /// Next node-chosen build id for a TUN_INIT offered to this member.
    pub(crate) next_build_id: u64,
    /// Inbound tunnel offers awaiting this member's TUN_CONFIRM: build id -> tunnel key.
    pub(crate) builds: BTreeMap<u64, u64>,
    /// Tunnels by this client's tunnel id -> tunnel key (being built by it, or open).
    pub(crate) tunnels: BTreeMap<u64, u64>,
}

impl Session {
    pub(crate) fn new(id: ConnId, deadline: Instant) -> Session {
        Session {
            id,
            phase: Phase::Handshake { deadline },
            rbuf: BytesMut::new(),
            in_charge: 0,
            reserved: 0,
            wants_memory: false,
            outbox: Outbox::default(),
            dirty: false,
            congested: None,
            waiters: Vec::new(),
            held: None,
            told_paused: false,
            cluster: None,
            topics: BTreeSet::new(),
            next_request_id: 0,
            delivered: BTreeMap::new(),
            requested: BTreeMap::new(),
            next_build_id: 0,
            builds: BTreeMap::new(),
            tunnels: BTreeMap::new(),
        }
    }

    /// Tunnels held, counting offers not yet confirmed, for the per-client bound.
    pub(crate) fn tunnel_count(&self) -> usize {
        self.tunnels.len() + self.builds.len()
    }

    /// Whether the handshake is done.
    pub(crate) fn is_active(&self) -> bool {
        self.phase == Phase::Active
    }
}
