//! The node's relay connections and the one way bytes reach them: each connection's
//! outbox, shared payloads for large messages, congestion marks, the hard cap on unwritten
//! bytes, and the memory charges of all of it.

use super::memory::{LARGE_PACKET, Memory};
use super::outbox::{SHARE_MIN, SharedId};
use super::session::Session;
use super::{ConnId, Output};
use crate::relay::NodePacket;
use crate::time::Instant;
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::{BTreeMap, VecDeque};

/// Why the node cuts a consumer that does not keep up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// Its unwritten bytes stayed over the congestion mark for `slow_consumer_timeout`.
    Lagging,
    /// Its unwritten bytes passed `max_client_backlog`.
    Cap,
    /// The node's memory budget ran out and it held the most unwritten bytes.
    Memory,
}

/// Relay connections by id, with their write path.
#[derive(Debug)]
pub(crate) struct Conns {
    pub(crate) map: BTreeMap<ConnId, Session>,
    /// Connections that may have bytes to hand the driver.
    dirty: VecDeque<ConnId>,
    /// Consumers to cut once the current input is handled.
    pub(crate) doomed: Vec<(ConnId, Cut)>,
    /// Consumers that passed the congestion mark since the node last looked.
    pub(crate) congested_now: Vec<ConnId>,
    pub(crate) mem: Memory,
    /// The congestion mark and the hard cap, in unwritten bytes per connection.
    high: usize,
    cap: usize,
    /// Encode buffer for packets going to many connections.
    scratch: BytesMut,
}

impl Conns {
    pub(crate) fn new(high: usize, cap: usize, max_memory: usize) -> Conns {
        Conns {
            map: BTreeMap::new(),
            dirty: VecDeque::new(),
            doomed: Vec::new(),
            congested_now: Vec::new(),
            mem: Memory::new(max_memory),
            high,
            cap,
            scratch: BytesMut::new(),
        }
    }

    /// Whether `conn`'s unwritten bytes are over the congestion mark (until they drain to half).
    pub(crate) fn is_congested(&self, conn: ConnId) -> bool {
        self.map.get(&conn).is_some_and(|s| s.congested.is_some())
    }

    /// Queues one packet for one connection.
    pub(crate) fn send(&mut self, conn: ConnId, packet: &NodePacket) {
        self.fan_out(std::slice::from_ref(&conn), packet);
    }

    /// Queues one packet for every listed connection: encoded once; a large payload is
    /// shared by all of them (one allocation, charged once), a small one is copied.
    pub(crate) fn fan_out(&mut self, conns: &[ConnId], packet: &NodePacket) {
        let mut split: Option<(usize, Bytes)> = None;
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        packet.encode_with(&mut scratch, |out, payload| {
            if payload.len() >= SHARE_MIN {
                split = Some((out.len(), payload.clone()));
            } else {
                out.put_slice(payload);
            }
        });
        match split {
            None => {
                for &conn in conns {
                    self.write(conn, |out| out.extend_from_slice(&scratch));
                }
            }
            Some((at, payload)) => {
                // A payload below the large size is a slice of a read buffer holding other
                // packets too: one exact copy frees that buffer and makes the charge true.
                let payload = if payload.len() < LARGE_PACKET {
                    Bytes::copy_from_slice(&payload)
                } else {
                    payload
                };
                let id = self.mem.share(payload.len());
                let (head, tail) = scratch.split_at(at);
                for &conn in conns {
                    self.write_shared(conn, head, &payload, id, tail);
                }
                self.mem.unshare_if_unused(id);
            }
        }
        self.scratch = scratch;
    }

    /// Appends bytes encoded by `encode` to a connection's outbox.
    pub(crate) fn write(&mut self, conn: ConnId, encode: impl FnOnce(&mut BytesMut)) {
        let Some(s) = self.map.get_mut(&conn) else {
            return;
        };
        let n = s.outbox.push(encode);
        self.mem.charge(n);
        self.wrote(conn);
    }

    fn write_shared(
        &mut self,
        conn: ConnId,
        head: &[u8],
        payload: &Bytes,
        id: SharedId,
        tail: &[u8],
    ) {
        let Some(s) = self.map.get_mut(&conn) else {
            return;
        };
        let n = s.outbox.push_shared(
            |out| out.extend_from_slice(head),
            payload.clone(),
            id,
            |out| out.extend_from_slice(tail),
        );
        self.mem.add_ref(id);
        self.mem.charge(n);
        self.wrote(conn);
    }

    /// After a write: queue the connection for transmission, and note whether it passed
    /// the congestion mark or the hard cap.
    fn wrote(&mut self, conn: ConnId) {
        let Some(s) = self.map.get_mut(&conn) else {
            return;
        };
        if !s.dirty {
            s.dirty = true;
            self.dirty.push_back(conn);
        }
        let backlog = s.outbox.backlog();
        if backlog > self.high && s.congested.is_none() {
            // The deadline is set by the node, which knows the time.
            s.congested = Some(Instant::ZERO);
            self.congested_now.push(conn);
        }
        if backlog > self.cap && !self.doomed.iter().any(|&(c, _)| c == conn) {
            self.doomed.push((conn, Cut::Cap));
        }
    }

    /// The driver wrote `n` bytes to `conn`. True if that ended its congestion.
    pub(crate) fn flushed(&mut self, conn: ConnId, n: usize) -> bool {
        let Some(s) = self.map.get_mut(&conn) else {
            return false;
        };
        let released = s.outbox.flushed(n);
        self.mem.give_back(released);
        if s.outbox.wants_transmit() && !s.dirty {
            s.dirty = true;
            self.dirty.push_back(conn);
        }
        // Hysteresis: uncongested at half the mark, not just below it.
        s.congested.is_some() && s.outbox.backlog() <= self.high / 2
    }

    /// Moves what the drivers' sockets may take at `now` into `outputs`; returns how many
    /// queued requests expired on the way.
    pub(crate) fn transmit(&mut self, now: Instant, outputs: &mut VecDeque<Output>) -> u64 {
        let mut expired = 0;
        while let Some(conn) = self.dirty.pop_front() {
            let Some(s) = self.map.get_mut(&conn) else {
                continue;
            };
            s.dirty = false;
            let mut released = 0;
            while let Some(bytes) = s.outbox.poll_transmit(now, &mut expired, &mut released) {
                outputs.push_back(Output::Transmit(conn, bytes));
            }
            self.mem.release(released);
        }
        expired
    }

    /// Queues one packet for one connection, to be dropped if it is still queued (not yet
    /// handed to the socket) at `expires`.
    pub(crate) fn send_expiring(&mut self, conn: ConnId, packet: &NodePacket, expires: Instant) {
        let Some(s) = self.map.get_mut(&conn) else {
            return;
        };
        let mut b = BytesMut::new();
        packet.encode(&mut b);
        let n = s.outbox.push_expiring(b.freeze(), expires);
        self.mem.charge(n);
        self.wrote(conn);
    }

    /// Drops a connection's queued bytes (not those in flight), releasing their memory.
    pub(crate) fn discard_queued(&mut self, conn: ConnId) {
        if let Some(s) = self.map.get_mut(&conn) {
            let released = s.outbox.discard_queued();
            self.mem.give_back(released);
        }
    }

    /// Removes a connection, releasing everything it held.
    pub(crate) fn remove(&mut self, conn: ConnId) -> Option<Session> {
        let mut s = self.map.remove(&conn)?;
        let released = s.outbox.discard_all();
        self.mem.give_back(released);
        self.mem.release(s.in_charge);
        self.mem.unreserve_large(s.reserved);
        s.in_charge = 0;
        s.reserved = 0;
        Some(s)
    }
}
