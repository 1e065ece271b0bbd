//! The one way bytes reach a client: each connection's outbox, shared payloads for large
//! messages, congestion marks, the hard cap on unwritten bytes, and the memory charges of
//! all of it. Bytes are handed to the driver as its sockets take them (pulled writes).

use super::memory::LARGE_PACKET;
use super::outbox::{SHARE_MIN, SharedId};
use super::{Cut, Session, Sessions};
use crate::node::{ConnId, Output};
use crate::relay::NodePacket;
use crate::time::Instant;
use bytes::{BufMut, Bytes, BytesMut};

impl Sessions {
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

    /// The driver wrote `n` bytes to `conn`; a consumer that drained to half its
    /// congestion mark is congested no more (its producers go on: see `flow.rs`).
    pub(crate) fn handle_flushed(&mut self, conn: ConnId, n: usize) -> bool {
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
        s.congested.is_some() && s.outbox.backlog() <= self.cfg.client_backlog_high / 2
    }

    /// Hands the driver what the sockets may take at `now`; queued requests whose time ran
    /// out on the way are dropped (counted).
    pub(crate) fn transmit(&mut self, now: Instant) {
        let mut expired = 0;
        while let Some(conn) = self.dirty.pop_front() {
            let Some(s) = self.map.get_mut(&conn) else {
                continue;
            };
            s.dirty = false;
            let mut released = 0;
            while let Some(bytes) = s.outbox.poll_transmit(now, &mut expired, &mut released) {
                self.outputs.push_back(Output::Transmit(conn, bytes));
            }
            self.mem.release(released);
        }
        self.stats.requests_expired_queued += expired;
    }

    /// Drops a connection's queued bytes (not those in flight), releasing their memory.
    pub(super) fn discard_queued(&mut self, conn: ConnId) {
        if let Some(s) = self.map.get_mut(&conn) {
            let released = s.outbox.discard_queued();
            self.mem.give_back(released);
        }
    }

    /// Removes a connection, releasing everything it held.
    pub(super) fn remove(&mut self, conn: ConnId) -> Option<Session> {
        let mut s = self.map.remove(&conn)?;
        let released = s.outbox.discard_all();
        self.mem.give_back(released);
        self.mem.release(s.in_charge);
        self.mem.unreserve_large(s.reserved);
        s.in_charge = 0;
        s.reserved = 0;
        Some(s)
    }

    /// Appends bytes encoded by `encode` to a connection's outbox.
    fn write(&mut self, conn: ConnId, encode: impl FnOnce(&mut BytesMut)) {
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
        if backlog > self.cfg.client_backlog_high && s.congested.is_none() {
            // Its deadline is set once the input is handled (see `flow.rs`).
            s.congested = Some(Instant::ZERO);
            self.congested_now.push(conn);
        }
        if backlog > self.cfg.max_client_backlog && !self.doomed.iter().any(|&(c, _)| c == conn) {
            self.doomed.push_back((conn, Cut::Cap));
        }
    }
}
