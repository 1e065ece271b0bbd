//! Flow control of relay clients: a client's input is decoded only while its next packet can
//! be queued. A packet bound for a congested consumer is held and only its producer stops
//! being read until that consumer drains (or is cut as a slow consumer); a large message
//! reserves its memory when it starts to arrive; under memory pressure the node stops
//! reading new input, and out of memory it cuts its largest consumer.

use super::castflow;
use super::conns::Cut;
use super::memory::{LARGE_PACKET, Pressure};
use super::session::{Phase, Session};
use super::{CloseReason, ConnId, Node, Output, Timer, decode_client};
use crate::relay::codec::client_packet_len;
use crate::relay::{ClientPacket, Name};
use crate::scribe::Group;
use bytes::BytesMut;

/// What a held producer's packet waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blocker {
    /// A congested local consumer to drain.
    Consumer(ConnId),
    /// Peers' credit for this node's multicasts (see `castflow`).
    Network,
}

impl Node {
    pub(super) fn on_data(&mut self, conn: ConnId, data: &[u8]) {
        let Some(s) = self.conns.map.get_mut(&conn) else {
            return;
        };
        self.stats.bytes_in += data.len() as u64;
        s.rbuf.extend_from_slice(data);
        self.process(conn);
    }

    pub(super) fn on_flushed(&mut self, conn: ConnId, n: usize) {
        if self.conns.flushed(conn, n) {
            self.decongest(conn);
        }
    }

    /// Runs everything the input set off to completion: cuts, deadlines of new congestion,
    /// the memory policy, producers whose consumer drained; then tells the driver which
    /// connections to pause or resume and hands it what sockets may take.
    pub(super) fn settle(&mut self) {
        loop {
            // What peers said may queue client writes and more peer messages.
            let peers = self.drain_peers();
            self.flush_trees();
            for (conn, why) in std::mem::take(&mut self.conns.doomed) {
                self.cut(conn, why);
            }
            for conn in std::mem::take(&mut self.conns.congested_now) {
                if let Some(s) = self.conns.map.get_mut(&conn)
                    && s.congested.is_some()
                {
                    let deadline = self.now + self.cfg.slow_consumer_timeout;
                    s.congested = Some(deadline);
                    self.timers.set(Timer::SlowConsumer(conn), deadline);
                }
            }
            let was_tight = self.conns.mem.is_tight();
            let pressure = self.conns.mem.pressure();
            if pressure == Pressure::Exhausted
                && let Some(conn) = self.largest_consumer()
            {
                self.cut(conn, Cut::Memory);
                continue;
            }
            if was_tight != self.conns.mem.is_tight() {
                if !was_tight {
                    self.stats.memory_tight += 1;
                }
                self.pause_check.extend(self.conns.map.keys().copied());
            }
            self.wake_memory_waiters();
            if let Some(producer) = self.wakeups.pop_front() {
                self.resume_producer(producer);
                continue;
            }
            let peers_pending = self.mesh.as_ref().is_some_and(|m| m.has_incoming());
            if self.conns.doomed.is_empty()
                && self.conns.congested_now.is_empty()
                && !peers
                && !peers_pending
            {
                break;
            }
        }
        // A shutdown that waited for the requests in progress goes on once they are done.
        self.check_drained();
        self.return_cast_credit();
        self.stats.memory_peak = self.conns.mem.peak() as u64;
        self.tell_pauses();
        self.stats.requests_expired_queued += self.conns.transmit(self.now, &mut self.outputs);
        self.drain_mesh();
        if std::mem::take(&mut self.stopping) {
            self.outputs.push_back(Output::Event(super::Event::Stopped));
        }
    }

    /// Decodes and carries out the client's buffered packets while it may go on, then
    /// charges what stays buffered.
    fn process(&mut self, conn: ConnId) {
        loop {
            let Some(s) = self.conns.map.get_mut(&conn) else {
                return;
            };
            if s.held.is_some() || s.wants_memory {
                break;
            }
            let phase = s.phase;
            match (decode_client(&mut s.rbuf, &self.cfg.limits), phase) {
                (Ok(None), _) => break,
                (Ok(Some(packet)), Phase::Handshake { .. }) => self.on_init(conn, packet),
                (Ok(Some(packet)), Phase::Active) => {
                    if let Some((packet, blocker)) = self.on_packet(conn, packet) {
                        self.hold(conn, packet, blocker);
                    }
                }
                (Err(e), Phase::Handshake { .. }) => {
                    self.close(conn, CloseReason::Refused(format!("bad handshake: {e}")))
                }
                (Err(e), Phase::Active) => self.violation(conn, e.to_string()),
            }
        }
        self.charge_input(conn);
    }

    /// Charges a client's buffered input to the budget. A large packet reserves its whole
    /// size when it starts, so that once begun it can always finish; if the reservation
    /// does not fit, the client is not read until it does.
    fn charge_input(&mut self, conn: ConnId) {
        let Some(s) = self.conns.map.get_mut(&conn) else {
            return;
        };
        let mem = &mut self.conns.mem;
        let large = client_packet_len(&s.rbuf, &self.cfg.limits).filter(|&n| n >= LARGE_PACKET);
        match large {
            Some(n) if n == s.reserved => {}
            Some(n) => {
                mem.unreserve_large(s.reserved);
                s.reserved = 0;
                if mem.reserve_large(n, s.rbuf.len()) {
                    s.reserved = n;
                    // One exact allocation for the whole message: growing by doubling
                    // could hold twice what is charged.
                    if s.rbuf.capacity() < n {
                        let mut exact = BytesMut::with_capacity(n);
                        exact.extend_from_slice(&s.rbuf);
                        s.rbuf = exact;
                    }
                } else if !s.wants_memory {
                    s.wants_memory = true;
                    self.stats.memory_waits += 1;
                    self.memory_waiters.push_back(conn);
                    self.pause_check.push(conn);
                }
            }
            None => {
                mem.unreserve_large(s.reserved);
                s.reserved = 0;
            }
        }
        let charge = s.rbuf.len().max(s.reserved);
        mem.recharge(s.in_charge, charge);
        s.in_charge = charge;
    }

    /// The consumer a packet would have to wait for: a congested member of a broadcast's
    /// cluster or subscriber of a published topic, or, for a request, the first member when
    /// every member is congested. Other packets never wait (replies and tunnel traffic have
    /// their own bounds, and holding them could deadlock two clients serving each other).
    pub(super) fn blocker(&self, conn: ConnId, packet: &ClientPacket) -> Option<Blocker> {
        let congested = |c: &&ConnId| self.conns.is_congested(**c);
        let consumer = |m: &Vec<ConnId>| m.iter().find(congested).map(|&c| Blocker::Consumer(c));
        // Multicasts to other nodes wait while too many of the group's wait for credit.
        let network = |group: fn(Name) -> Group, name: &Name| {
            let congested = self.scribe.is_some()
                && self.casts.any_own_waiting()
                && self.casts.congested(&group(name.clone()));
            congested.then_some(Blocker::Network)
        };
        match packet {
            ClientPacket::Broadcast { cluster, .. } => self
                .clusters
                .get(cluster)
                .and_then(consumer)
                .or_else(|| network(Group::cluster, cluster)),
            ClientPacket::Publish { topic, .. } => self
                .topics
                .get(topic)
                .and_then(consumer)
                .or_else(|| network(Group::topic, topic)),
            ClientPacket::Request { cluster, .. } => {
                let members = self.clusters.get(cluster)?;
                // A request the node would refuse at once waits for nobody.
                let refused = self
                    .conns
                    .map
                    .get(&conn)
                    .is_none_or(|s| s.requested.len() >= self.cfg.max_pending_requests);
                if refused || !members.iter().all(|c| self.conns.is_congested(*c)) {
                    return None;
                }
                members.first().map(|&c| Blocker::Consumer(c))
            }
            _ => None,
        }
    }

    /// Parks a producer's packet until `blocker` drains; the producer is not read meanwhile.
    fn hold(&mut self, conn: ConnId, packet: ClientPacket, blocker: Blocker) {
        let weight = packet_weight(&packet);
        let Some(s) = self.conns.map.get_mut(&conn) else {
            return;
        };
        let group = matches!(blocker, Blocker::Network)
            .then(|| castflow::cast_group(&packet))
            .flatten();
        s.held = Some((packet, blocker));
        self.conns.mem.charge(weight);
        match blocker {
            Blocker::Network => {
                if let Some(group) = group {
                    self.casts.hold(&group, conn);
                }
            }
            Blocker::Consumer(b) => {
                if let Some(b) = self.conns.map.get_mut(&b) {
                    b.waiters.push(conn);
                }
            }
        }
        self.stats.producers_held += 1;
        self.pause_check.push(conn);
    }

    /// Tries a held producer's packet again, then goes on with its input.
    fn resume_producer(&mut self, conn: ConnId) {
        let Some(s) = self.conns.map.get_mut(&conn) else {
            return;
        };
        let Some((packet, _)) = s.held.take() else {
            return;
        };
        self.conns.mem.release(packet_weight(&packet));
        self.pause_check.push(conn);
        if let Some((packet, blocker)) = self.on_packet(conn, packet) {
            return self.hold(conn, packet, blocker);
        }
        self.process(conn);
    }

    /// A consumer drained to half its congestion mark: its deadline is off, its producers
    /// go on, and tunnels toward it forward again.
    fn decongest(&mut self, conn: ConnId) {
        let Some(s) = self.conns.map.get_mut(&conn) else {
            return;
        };
        if s.congested.take().is_some() {
            self.timers.cancel(Timer::SlowConsumer(conn));
        }
        self.wakeups.extend(s.waiters.drain(..));
        let tunnels: Vec<u64> = s.tunnels.values().copied().collect();
        for key in tunnels {
            self.pump_toward(key, conn);
        }
    }

    /// Unhooks a closing connection from flow control: its held packet, the producers
    /// waiting for it (they go on: the consumer is gone).
    pub(super) fn forget_flow(&mut self, s: &mut Session) {
        if let Some((packet, blocker)) = s.held.take() {
            self.conns.mem.release(packet_weight(&packet));
            match blocker {
                Blocker::Network => self.casts.unhold(s.id),
                Blocker::Consumer(b) => {
                    if let Some(b) = self.conns.map.get_mut(&b) {
                        b.waiters.retain(|&c| c != s.id);
                    }
                }
            }
        }
        self.wakeups.extend(s.waiters.drain(..));
    }

    /// Clients waiting for memory for a large message get it in arrival order, as it frees.
    fn wake_memory_waiters(&mut self) {
        while let Some(&conn) = self.memory_waiters.front() {
            let Some(s) = self.conns.map.get_mut(&conn) else {
                self.memory_waiters.pop_front();
                continue;
            };
            let n = client_packet_len(&s.rbuf, &self.cfg.limits).unwrap_or(0);
            if n >= LARGE_PACKET && !self.conns.mem.fits_large(n, s.rbuf.len()) {
                break;
            }
            // `process` charges its input, which makes the reservation.
            s.wants_memory = false;
            self.memory_waiters.pop_front();
            self.pause_check.push(conn);
            self.process(conn);
        }
    }

    /// The consumer holding the most unwritten bytes, if anyone holds any.
    fn largest_consumer(&self) -> Option<ConnId> {
        self.conns
            .map
            .values()
            .filter(|s| s.outbox.backlog() > 0)
            .max_by_key(|s| (s.outbox.backlog(), std::cmp::Reverse(s.id)))
            .map(|s| s.id)
    }

    /// Tells the driver which connections to stop or start reading.
    fn tell_pauses(&mut self) {
        let tight = self.conns.mem.is_tight();
        for conn in std::mem::take(&mut self.pause_check) {
            let Some(s) = self.conns.map.get_mut(&conn) else {
                continue;
            };
            // Under pressure only a large message already under way is read on: its memory
            // is reserved, and finishing it frees its client's share.
            let paused = s.held.is_some() || s.wants_memory || (tight && s.reserved == 0);
            if paused != s.told_paused {
                s.told_paused = paused;
                self.outputs.push_back(if paused {
                    Output::PauseReading(conn)
                } else {
                    Output::ResumeReading(conn)
                });
            }
        }
    }
}

/// Bytes a held packet keeps alive.
fn packet_weight(p: &ClientPacket) -> usize {
    match p {
        ClientPacket::Broadcast { cluster, message } => cluster.len() + message.len(),
        ClientPacket::Publish { topic, event } => topic.len() + event.len(),
        ClientPacket::Request {
            cluster, request, ..
        } => cluster.len() + request.len(),
        _ => 0,
    }
}
