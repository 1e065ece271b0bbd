//! Per-connection state of a relay client as the node sees it.

use super::ConnId;
use crate::relay::Name;
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
    /// Encoded packets not yet handed to the driver; coalesced into one transmit.
    pub(crate) out: BytesMut,
    /// Bytes handed to the driver and not yet reported written.
    pub(crate) backlog: usize,
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
            out: BytesMut::new(),
            backlog: 0,
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
}
