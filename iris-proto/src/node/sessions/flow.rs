//! Flow control of relay clients: a client's input is decoded only while its next packet can
//! be queued. A packet bound for a congested consumer is held and only its producer stops
//! being read until that consumer drains (or is cut as a slow consumer); a large message
//! reserves its memory when it starts to arrive; under memory pressure the node stops
//! reading new input, and out of memory it cuts its largest consumer.

use super::memory::{LARGE_PACKET, Pressure};
use super::{Cut, Session, Sessions, Tether, Timer};
use crate::node::effect::{Effect, Effects};
use crate::node::{ConnId, Output};
use crate::relay::ClientPacket;
use crate::relay::codec::client_packet_len;
use crate::time::Instant;
use bytes::BytesMut;

/// What a held producer's packet waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blocker {
    /// A congested local consumer to drain.
    Consumer(ConnId),
    /// Peers' credit for this node's multicasts (see `castflow`).
    Network,
}

impl Sessions {
    /// Charges a client's buffered input to the budget. A large packet reserves its whole
    /// size when it starts, so that once begun it can always finish; if the reservation
    /// does not fit, the client is not read until it does.
    pub(crate) fn charge_input(&mut self, conn: ConnId) {
        let Some(s) = self.map.get_mut(&conn).filter(|s| s.lent.is_none()) else {
            return;
        };
        let mem = &mut self.mem;
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

    /// Parks a producer's packet until `blocker` drains; the producer is not read meanwhile.
    pub(crate) fn hold(&mut self, conn: ConnId, packet: ClientPacket, blocker: Blocker) {
        let weight = packet_weight(&packet);
        let Some(s) = self.map.get_mut(&conn) else {
            return;
        };
        s.held = Some((packet, blocker));
        self.mem.charge(weight);
        if let Blocker::Consumer(b) = blocker
            && let Some(b) = self.map.get_mut(&b)
            && !b.waiters.contains(&conn)
        {
            b.waiters.push(conn);
        }
        self.stats.producers_held += 1;
        self.pause_check.push(conn);
    }

    /// A producer held for a consumer is woken when any of `consumers` drains too (each
    /// once). A stale entry, left when it was woken by another, only wakes it for nothing.
    pub(crate) fn wait_also(&mut self, producer: ConnId, consumers: &[ConnId]) {
        for c in consumers {
            if let Some(s) = self.map.get_mut(c)
                && !s.waiters.contains(&producer)
            {
                s.waiters.push(producer);
            }
        }
    }

    /// Takes a held producer's packet back, to be tried again.
    pub(crate) fn take_held(&mut self, conn: ConnId) -> Option<ClientPacket> {
        let s = self.map.get_mut(&conn)?;
        let (packet, _) = s.held.take()?;
        self.mem.release(packet_weight(&packet));
        self.pause_check.push(conn);
        Some(packet)
    }

    /// A producer held for the network may go on (see `castflow`).
    pub(crate) fn wake(&mut self, conn: ConnId) {
        self.wakeups.push_back(conn);
    }

    /// A consumer drained to half its congestion mark: its deadline is off, its producers
    /// go on, and tunnels toward it forward again.
    pub(crate) fn decongest(&mut self, conn: ConnId, fx: &mut Effects) {
        let Some(s) = self.map.get_mut(&conn) else {
            return;
        };
        if s.congested.take().is_some() {
            self.timers.cancel(Timer::SlowConsumer(conn));
            self.timers.cancel(Timer::Grace(conn));
        }
        s.tether = Tether::Held;
        self.wakeups.extend(s.waiters.drain(..));
        fx.push(Effect::Decongested(conn));
    }

    /// Whether `conn` holds back the producers of a group now: it is congested, and within
    /// its grace, or past it while `others` says the group has no other consumer that
    /// takes more. (A consumer past its grace that holds others back for long would set
    /// the pace of every consumer of the group by the slowest until the slowest is cut;
    /// past the grace, what goes to it queues in its own share instead, bounded by
    /// `max_client_backlog`, and its deadline stands.)
    pub(crate) fn holds_back(&self, conn: ConnId, others: impl FnOnce() -> bool) -> bool {
        match self.map.get(&conn) {
            Some(s) if s.congested.is_some() => match s.tether {
                Tether::Held => true,
                Tether::Grace => !others(),
                Tether::Loose => false,
            },
            _ => false,
        }
    }

    /// The node that sends this node a group's multicasts has other consumers to feed: a
    /// congested member of the group holds nobody back any more.
    pub(crate) fn untether(&mut self, conn: ConnId) {
        self.loosen(conn, Tether::Loose);
    }

    /// A congested consumer holds back fewer producers: those waiting for it try again.
    pub(super) fn loosen(&mut self, conn: ConnId, to: Tether) {
        let Some(s) = self.map.get_mut(&conn) else {
            return;
        };
        if s.congested.is_none() || to <= s.tether {
            return;
        }
        if s.tether == Tether::Held {
            self.stats.consumers_loosened += 1;
        }
        s.tether = to;
        self.wakeups.extend(s.waiters.drain(..));
    }

    /// Charges bytes other parts hold for clients (tunnel buffers).
    pub(crate) fn charge(&mut self, n: usize) {
        self.mem.charge(n);
    }

    /// Gives back a [`Sessions::charge`].
    pub(crate) fn release(&mut self, n: usize) {
        self.mem.release(n);
    }

    /// The sessions' work left once everything routed is done, most urgent first: cuts,
    /// the memory policy, a client whose large message now fits, a held producer to try
    /// again. (Deadlines of newly congested consumers are set on the way.)
    pub(crate) fn poll_effect(&mut self, now: Instant) -> Option<Effect> {
        if let Some((conn, why)) = self.doomed.pop_front() {
            return Some(Effect::Cut(conn, why));
        }
        self.set_congestion_deadlines(now);
        let was_tight = self.mem.is_tight();
        if self.mem.pressure() == Pressure::Exhausted
            && let Some(conn) = self.largest_consumer()
        {
            return Some(Effect::Cut(conn, Cut::Memory));
        }
        if was_tight != self.mem.is_tight() {
            if !was_tight {
                self.stats.memory_tight += 1;
            }
            self.pause_check.extend(self.map.keys().copied());
        }
        if let Some(conn) = self.next_memory_waiter() {
            return Some(Effect::ReadOn(conn));
        }
        self.wakeups.pop_front().map(Effect::Retry)
    }

    /// Tells the driver which connections to stop or start reading.
    pub(crate) fn tell_pauses(&mut self) {
        self.stats.memory_peak = self.mem.peak() as u64;
        let tight = self.mem.is_tight();
        for conn in std::mem::take(&mut self.pause_check) {
            let Some(s) = self.map.get_mut(&conn) else {
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

    /// Unhooks a closing connection from flow control: its held packet, the producers
    /// waiting for it (they go on: the consumer is gone). True if its packet was held for
    /// the network (the multicast flow holds it too).
    pub(super) fn forget_flow(&mut self, s: &mut Session) -> bool {
        let mut network = false;
        if let Some((packet, blocker)) = s.held.take() {
            self.mem.release(packet_weight(&packet));
            match blocker {
                Blocker::Network => network = true,
                Blocker::Consumer(b) => {
                    if let Some(b) = self.map.get_mut(&b) {
                        b.waiters.retain(|&c| c != s.id);
                    }
                }
            }
        }
        self.wakeups.extend(s.waiters.drain(..));
        network
    }

    /// Consumers that passed the congestion mark get their deadline.
    fn set_congestion_deadlines(&mut self, now: Instant) {
        for conn in std::mem::take(&mut self.congested_now) {
            if let Some(s) = self.map.get_mut(&conn)
                && s.congested.is_some()
            {
                let deadline = now + self.cfg.slow_consumer_timeout;
                s.congested = Some(deadline);
                self.timers.set(Timer::SlowConsumer(conn), deadline);
                if self.cfg.slow_consumer_grace < self.cfg.slow_consumer_timeout {
                    let grace = now + self.cfg.slow_consumer_grace;
                    self.timers.set(Timer::Grace(conn), grace);
                }
            }
        }
    }

    /// The first client waiting for memory for a large message, if it fits now (in
    /// arrival order: one that does not fit keeps the others waiting).
    fn next_memory_waiter(&mut self) -> Option<ConnId> {
        while let Some(&conn) = self.memory_waiters.front() {
            let Some(s) = self.map.get_mut(&conn) else {
                self.memory_waiters.pop_front();
                continue;
            };
            let n = client_packet_len(&s.rbuf, &self.cfg.limits).unwrap_or(0);
            if n >= LARGE_PACKET && !self.mem.fits_large(n, s.rbuf.len()) {
                return None;
            }
            // Its input is charged when it is read on, which makes the reservation.
            s.wants_memory = false;
            self.memory_waiters.pop_front();
            self.pause_check.push(conn);
            return Some(conn);
        }
        None
    }

    /// The consumer holding the most unwritten bytes, if anyone holds any.
    fn largest_consumer(&self) -> Option<ConnId> {
        self.map
            .values()
            .filter(|s| s.outbox.backlog() > 0)
            .max_by_key(|s| (s.outbox.backlog(), std::cmp::Reverse(s.id)))
            .map(|s| s.id)
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
