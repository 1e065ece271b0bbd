//! The sessions: the node's relay connections, from their handshake to their close. This
//! part owns each connection's input and output (its outbox, with congestion marks and a
//! hard cap), the pool of connections still in their handshake, the node's memory budget,
//! and the flow control of producers (a packet held for a congested consumer or for the
//! network, clients waiting for memory). It decodes what clients send and hands the node
//! whole packets; what a packet asks for is the business of the other parts.
//!
//! - `write.rs`: the one way bytes reach a client (outboxes, shared payloads, marks).
//! - `flow.rs`: input charges, held producers, the memory policy, read pauses.

mod flow;
mod memory;
mod outbox;
mod session;
mod write;

pub(crate) use flow::Blocker;

use super::effect::{Effect, Effects};
use super::stats::Stats;
use super::{CloseReason, Config, ConnId, Event, Output};
use crate::relay::codec::{CLIENT_MAGIC, PROTOCOL_VERSION, RELAY_MAGIC, decode_client};
use crate::relay::{ClientPacket, DecodeError, Name, NodePacket};
use crate::time::Instant;
use crate::timer::Timers;
use bytes::{Bytes, BytesMut};
use memory::Memory;
use session::{Phase, Session, Tether};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

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

/// Deadlines of the sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// A connection must have sent INIT by then.
    Handshake(ConnId),
    /// A congested consumer must have drained by then.
    SlowConsumer(ConnId),
    /// A congested consumer's grace runs out (see `flow.rs`).
    Grace(ConnId),
}

/// What decoding a connection's input gave.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// Nothing to do now: no whole packet, or the connection waits (held, or for memory),
    /// or it is gone.
    Wait,
    /// A packet of an active client.
    Packet(ClientPacket),
}

/// The node's relay connections.
#[derive(Debug)]
pub(crate) struct Sessions {
    cfg: Config,
    map: BTreeMap<ConnId, Session>,
    /// Connections still in their handshake, oldest first (the pool's eviction order).
    handshaking: BTreeSet<(Instant, ConnId)>,
    /// Connections past their handshake.
    active: usize,
    timers: Timers<Timer>,
    /// Connections that may have bytes to hand the driver.
    dirty: VecDeque<ConnId>,
    /// Consumers to cut once the current input is handled.
    doomed: VecDeque<(ConnId, Cut)>,
    /// Consumers that passed the congestion mark since the node last looked.
    congested_now: Vec<ConnId>,
    mem: Memory,
    /// Encode buffer for packets going to many connections.
    scratch: BytesMut,
    /// Producers whose held packet may now be queued.
    wakeups: VecDeque<ConnId>,
    /// Connections whose read pause may have changed.
    pause_check: Vec<ConnId>,
    /// Clients waiting for memory to reserve a large message, in arrival order.
    memory_waiters: VecDeque<ConnId>,
    /// What the driver is to do for clients, in order.
    outputs: VecDeque<Output>,
    pub(crate) stats: Stats,
}

impl Sessions {
    pub(crate) fn new(cfg: &Config) -> Sessions {
        Sessions {
            map: BTreeMap::new(),
            handshaking: BTreeSet::new(),
            active: 0,
            timers: Timers::default(),
            dirty: VecDeque::new(),
            doomed: VecDeque::new(),
            congested_now: Vec::new(),
            mem: Memory::new(cfg.max_memory),
            scratch: BytesMut::new(),
            wakeups: VecDeque::new(),
            pause_check: Vec::new(),
            memory_waiters: VecDeque::new(),
            outputs: VecDeque::new(),
            stats: Stats::default(),
            cfg: cfg.clone(),
        }
    }

    /// Connections known (handshaking or active).
    pub(crate) fn count(&self) -> usize {
        self.map.len()
    }

    /// Whether `conn` is a connection past its handshake.
    pub(crate) fn is_active(&self, conn: ConnId) -> bool {
        self.map.get(&conn).is_some_and(Session::is_active)
    }

    /// A connection's undecoded input (for tests of where names point).
    #[cfg(test)]
    pub(crate) fn read_buf(&self, conn: ConnId) -> &BytesMut {
        &self.map[&conn].rbuf
    }

    /// Bytes charged to the memory budget now.
    pub(crate) fn memory_used(&self) -> usize {
        self.mem.used()
    }

    /// The part of [`Sessions::memory_used`] held for clients.
    pub(crate) fn client_memory_used(&self) -> usize {
        self.mem.client_used()
    }

    /// Sets the bytes of group and tree state, counted in the memory budget.
    pub(crate) fn set_group_bytes(&mut self, bytes: usize) {
        self.mem.set_groups(bytes);
    }

    /// The next thing for the driver to do for a client.
    pub(crate) fn poll_output(&mut self) -> Option<Output> {
        crate::queue::pop_front(&mut self.outputs)
    }

    /// When a handshake or a slow consumer's grace next runs out.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Handshakes and slow consumers whose time ran out.
    pub(crate) fn handle_timeout(&mut self, now: Instant, fx: &mut Effects) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Handshake(conn) => {
                    self.stats.handshake_timeouts += 1;
                    let why = CloseReason::Refused("handshake timed out".into());
                    self.close(conn, why, fx);
                }
                Timer::SlowConsumer(conn) => self.cut(conn, Cut::Lagging, fx),
                Timer::Grace(conn) => self.loosen(conn, Tether::Grace),
            }
        }
    }

    /// A client connected; `stopped`: the node is shutting down and takes nobody.
    pub(crate) fn handle_connected(
        &mut self,
        now: Instant,
        conn: ConnId,
        stopped: bool,
        fx: &mut Effects,
    ) {
        if stopped {
            self.stats.clients_refused += 1;
            self.outputs.push_back(Output::Close(conn));
            self.event(Event::ClientClosed {
                conn,
                reason: CloseReason::Refused("node is shutting down".into()),
            });
            return;
        }
        // The pool of handshakes is bounded apart from clients: a full pool makes room by
        // closing its oldest, so silent connections can never keep real clients out.
        if self.handshaking.len() >= self.cfg.max_handshakes
            && let Some(&(_, oldest)) = self.handshaking.first()
        {
            self.stats.handshakes_evicted += 1;
            let why = format!(
                "no INIT while {} newer connections waited",
                self.cfg.max_handshakes
            );
            self.close(oldest, CloseReason::Refused(why), fx);
        }
        let deadline = now + self.cfg.handshake_timeout;
        self.map.insert(conn, Session::new(conn, deadline));
        self.handshaking.insert((deadline, conn));
        self.timers.set(Timer::Handshake(conn), deadline);
        // Under memory pressure a new connection is not read either.
        self.pause_check.push(conn);
    }

    /// Bytes arrived from a client, in order (the node decodes them with
    /// [`Sessions::decode`]).
    pub(crate) fn handle_data(&mut self, conn: ConnId, data: &[u8]) {
        let Some(s) = self.map.get_mut(&conn) else {
            return;
        };
        self.stats.bytes_in += data.len() as u64;
        s.rbuf.extend_from_slice(data);
    }

    /// Lends a client's input buffer to the driver to read into, with room for `room` more
    /// bytes at least (for all of a large packet in progress, if it was reserved): what
    /// is read lands after what waits, and no byte is copied on its way in. While lent,
    /// the buffer counts as it was; lending twice hands out an empty buffer.
    pub(crate) fn lend_input(&mut self, conn: ConnId, room: usize) -> BytesMut {
        let Some(s) = self.map.get_mut(&conn).filter(|s| s.lent.is_none()) else {
            return BytesMut::with_capacity(room);
        };
        s.lent = Some(s.rbuf.len());
        let mut buf = std::mem::take(&mut s.rbuf);
        // A large packet in progress has its whole size allocated already: read only the
        // rest of it into that, rather than moving it all to a larger buffer.
        let room = match s.reserved.checked_sub(buf.len()) {
            Some(rest) if rest > 0 => rest,
            _ => room,
        };
        buf.reserve(room);
        buf
    }

    /// A lent input buffer comes back with the bytes read appended.
    pub(crate) fn give_back_input(&mut self, conn: ConnId, buf: BytesMut) {
        let Some(s) = self.map.get_mut(&conn) else {
            return;
        };
        match s.lent.take() {
            Some(had) if had <= buf.len() => {
                self.stats.bytes_in += (buf.len() - had) as u64;
                s.rbuf = buf;
            }
            // Not lent (or not this buffer): taken as plain data.
            _ => {
                self.stats.bytes_in += buf.len() as u64;
                s.rbuf.extend_from_slice(&buf);
            }
        }
    }

    /// The next packet of an active client, if it may go on. A handshake (INIT) is carried
    /// out here; a client that breaks the protocol is closed here, with the reason.
    pub(crate) fn decode(&mut self, conn: ConnId, fx: &mut Effects) -> Decoded {
        loop {
            let Some(s) = self.map.get_mut(&conn) else {
                return Decoded::Wait;
            };
            if s.held.is_some() || s.wants_memory || s.lent.is_some() {
                return Decoded::Wait;
            }
            let phase = s.phase;
            match (decode_client(&mut s.rbuf, &self.cfg.limits), phase) {
                (Ok(None), _) => return Decoded::Wait,
                (Ok(Some(packet)), Phase::Handshake { .. }) => self.init(conn, packet, fx),
                (Ok(Some(packet)), Phase::Active) => return Decoded::Packet(packet),
                (Err(e), Phase::Handshake { .. }) => self.refuse_bad_handshake(conn, e, fx),
                (Err(e), Phase::Active) => self.violation(conn, e.to_string(), fx),
            }
        }
    }

    /// A client breaks the protocol: it is told what it did wrong, then dropped.
    pub(crate) fn violation(&mut self, conn: ConnId, what: String, fx: &mut Effects) {
        self.stats.protocol_violations += 1;
        self.send(
            conn,
            &NodePacket::Close {
                reason: what.as_str().into(),
            },
        );
        self.close(conn, CloseReason::Violation(what), fx);
    }

    /// Cuts a consumer that does not keep up: what is still queued for it is dropped and
    /// its CLOSE goes right after what its driver already holds.
    pub(crate) fn cut(&mut self, conn: ConnId, why: Cut, fx: &mut Effects) {
        if !self.map.contains_key(&conn) {
            return;
        }
        let text = match why {
            Cut::Lagging => {
                self.stats.cut_lagging += 1;
                format!(
                    "slow consumer: more than {} bytes unread for {} ms",
                    self.cfg.client_backlog_high,
                    self.cfg.slow_consumer_timeout.as_millis()
                )
            }
            Cut::Cap => {
                self.stats.cut_backlog_cap += 1;
                format!(
                    "slow consumer: more than {} bytes unread",
                    self.cfg.max_client_backlog
                )
            }
            Cut::Memory => {
                self.stats.cut_memory += 1;
                "slow consumer: the node's memory budget ran out".to_string()
            }
        };
        self.discard_queued(conn);
        self.send(
            conn,
            &NodePacket::Close {
                reason: text.as_str().into(),
            },
        );
        self.close(conn, CloseReason::SlowConsumer(text), fx);
    }

    /// Forgets a connection (every other part hears of it: [`Effect::Closed`]). Sends
    /// CLOSE "" for a graceful close; other reasons send whatever the caller already queued.
    pub(crate) fn close(&mut self, conn: ConnId, reason: CloseReason, fx: &mut Effects) {
        if reason == CloseReason::Graceful {
            self.send(
                conn,
                &NodePacket::Close {
                    reason: Name::default(),
                },
            );
        }
        let Some(backlog) = self.map.get(&conn).map(|s| s.outbox.backlog()) else {
            return;
        };
        // What is queued goes out before the socket closes, unless the client was not
        // reading anyway: then it would only pin memory in the driver.
        if backlog > self.cfg.client_backlog_high && reason != CloseReason::Gone {
            self.discard_queued(conn);
            // Keep the reason it is owed: the CLOSE goes right after what is in flight.
            if let CloseReason::Violation(why) | CloseReason::SlowConsumer(why) = &reason {
                self.send(
                    conn,
                    &NodePacket::Close {
                        reason: why.as_str().into(),
                    },
                );
            }
        }
        let mut transmits = VecDeque::new();
        if reason != CloseReason::Gone
            && let Some(s) = self.map.get_mut(&conn)
        {
            while let Some(b) = s.outbox.poll_transmit_all() {
                transmits.push_back(Output::Transmit(conn, b));
            }
        }
        let Some(mut s) = self.remove(conn) else {
            return;
        };
        match s.phase {
            Phase::Handshake { deadline } => {
                self.timers.cancel(Timer::Handshake(conn));
                self.handshaking.remove(&(deadline, conn));
            }
            Phase::Active => self.active -= 1,
        }
        if s.congested.take().is_some() {
            self.timers.cancel(Timer::SlowConsumer(conn));
            self.timers.cancel(Timer::Grace(conn));
        }
        let held_for_network = self.forget_flow(&mut s);
        fx.push(Effect::Closed {
            conn,
            held_for_network,
        });
        if reason != CloseReason::Gone {
            self.outputs.extend(transmits);
            self.outputs.push_back(Output::Close(conn));
        }
        if matches!(reason, CloseReason::SlowConsumer(_)) {
            self.stats.slow_consumers += 1;
        }
        self.stats.clients_closed += 1;
        self.event(Event::ClientClosed { conn, reason });
    }

    /// Every connection, in order (shutdown closes them all).
    pub(crate) fn conns(&self) -> Vec<ConnId> {
        self.map.keys().copied().collect()
    }

    /// Carries out INIT: the client is accepted (and registered under its cluster), or
    /// denied with the reason, or dropped (not an Iris client).
    fn init(&mut self, conn: ConnId, packet: ClientPacket, fx: &mut Effects) {
        let ClientPacket::Init {
            magic,
            version,
            cluster,
        } = packet
        else {
            let why = CloseReason::Refused("first packet is not INIT".into());
            return self.close(conn, why, fx);
        };
        if magic != CLIENT_MAGIC.as_bytes() {
            return self.close(conn, CloseReason::Refused("wrong magic".into()), fx);
        }
        if let Some(reason) = self.denial(&version) {
            self.send(
                conn,
                &NodePacket::Deny {
                    magic: Bytes::from_static(RELAY_MAGIC.as_bytes()),
                    reason: reason.as_str().into(),
                },
            );
            return self.close(conn, CloseReason::Refused(reason), fx);
        }
        let Some(s) = self.map.get_mut(&conn) else {
            return;
        };
        if let Phase::Handshake { deadline } = s.phase {
            self.timers.cancel(Timer::Handshake(conn));
            self.handshaking.remove(&(deadline, conn));
        }
        s.phase = Phase::Active;
        self.active += 1;
        // Kept for the connection's life: not in the read buffer it arrived in.
        let cluster = cluster.detached();
        if !cluster.is_empty() {
            fx.push(Effect::Registered(conn, cluster.clone()));
        }
        self.stats.clients_accepted += 1;
        self.send(
            conn,
            &NodePacket::Init {
                magic: Bytes::from_static(RELAY_MAGIC.as_bytes()),
                version: Bytes::from_static(PROTOCOL_VERSION.as_bytes()),
            },
        );
        self.event(Event::ClientAttached { conn, cluster });
    }

    /// Why a client with this protocol version is denied, if it is.
    fn denial(&mut self, version: &[u8]) -> Option<String> {
        if version != PROTOCOL_VERSION.as_bytes() {
            return Some(format!(
                "Unsupported protocol. Client: {}. Iris: {PROTOCOL_VERSION}.",
                String::from_utf8_lossy(version)
            ));
        }
        if self.active >= self.cfg.max_clients {
            self.stats.clients_denied += 1;
            return Some(format!(
                "Too many clients: this node serves at most {}.",
                self.cfg.max_clients
            ));
        }
        None
    }

    fn refuse_bad_handshake(&mut self, conn: ConnId, e: DecodeError, fx: &mut Effects) {
        self.close(
            conn,
            CloseReason::Refused(format!("bad handshake: {e}")),
            fx,
        );
    }

    fn event(&mut self, e: Event) {
        self.outputs.push_back(Output::Event(e));
    }
}
