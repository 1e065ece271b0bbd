//! [`ClientMachine`]: the client's whole side of one relay connection, without IO.

use super::error::{BuildError, CallError, End, RequestError};
use super::event::{Event, Input, Output};
use super::id::{BuildId, NodeRequestId, RequestId, TunnelId};
use super::session::{ClientSession, SessionError, SessionEvent};
use super::tunnel::{Outgoing, Phase, TunnelState, chunk_limit_of};
use crate::relay::codec::{self, Limits};
use crate::relay::{Name, NodePacket, ReplyOutcome};
use crate::time::Instant;
use bytes::BytesMut;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// Bytes the application may queue for the node before calls that send wait
/// ([`CallError::SendBufferFull`]).
pub const DEFAULT_SEND_BUFFER: usize = 1 << 20;

/// The window this client grants the node per tunnel, as the Go client does: the node
/// sends at most this much of a tunnel's messages before the application takes some.
pub const DEFAULT_TUNNEL_WINDOW: u64 = 64 << 20;

/// What a [`ClientMachine`] may hold and grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// Bounds on what the node may send (message, name and chunk sizes), checked before
    /// anything is buffered.
    pub limits: Limits,
    /// Bytes queued for the node and not yet handed to the driver, beyond which calls
    /// that send are refused with [`CallError::SendBufferFull`] until the driver reports
    /// a flush. Replies to the node's requests, tunnel grants and closes are queued
    /// regardless: they answer the node, and holding them back could stall it.
    pub send_buffer: usize,
    /// The window granted to the node on each tunnel, and re-granted as the application
    /// takes messages.
    pub tunnel_window: u64,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            limits: Limits::default(),
            send_buffer: DEFAULT_SEND_BUFFER,
            tunnel_window: DEFAULT_TUNNEL_WINDOW,
        }
    }
}

/// The client's side of one relay connection as a state machine: the handshake, the ids
/// and outcomes of its requests, its tunnels (builds, allowance both ways, chunking and
/// reassembly, closes), its subscriptions, and how the connection ended. It never reads a
/// clock or touches a socket.
///
/// The drive loop, as for the node:
/// 1. tell it what the application asks with its methods ([`ClientMachine::request`],
///    [`ClientMachine::tunnel_send`], ...), and what the stream did with
///    [`ClientMachine::handle`];
/// 2. after every such call, drain [`ClientMachine::poll_output`] until `None`: write each
///    [`Output::Transmit`] and report it with [`Input::Flushed`] once written; deliver each
///    [`Output::Event`];
/// 3. once [`Event::Ended`] has come, write what is left to transmit and close the stream.
///
/// It keeps no timer: the node owns the deadline of every request and tunnel build and
/// always answers (spec sections 6 and 7), so there is no `poll_timeout`. Time comes in
/// only with received bytes, to date the deadline of a request delivered to this member.
///
/// Every queue is bounded: what the application queues to send by
/// [`ClientConfig::send_buffer`]; pending requests and tunnels by the application's own
/// calls; the node's bytes by [`ClientConfig::limits`] and, per tunnel, by the window this
/// end grants; events by the bytes of one call, since they are drained after each.
#[derive(Debug)]
pub struct ClientMachine {
    config: ClientConfig,
    /// Registered under a cluster: only members are sent broadcasts, requests and tunnels.
    member: bool,
    session: ClientSession,
    /// Packets queued for the node, not yet handed out.
    send: BytesMut,
    /// Bytes handed out in a transmit and not yet reported flushed: until they are, nothing
    /// more is handed out, so the send buffer is what pushes back on the application.
    in_flight: usize,
    events: VecDeque<Event>,
    next_request: u64,
    next_tunnel: u64,
    /// This client's requests awaiting the node's REPLY.
    requests: BTreeSet<RequestId>,
    /// Tunnels being built, open, or closing. Ordered, so that the events of an ending
    /// session come in one order.
    tunnels: BTreeMap<TunnelId, TunnelState>,
    topics: BTreeSet<Name>,
    /// This end sent CLOSE: the node's CLOSE without a reason is the answer, not a drop.
    closing: bool,
    ended: Option<End>,
    /// Packets from the node that named nothing known (a reply to no pending request, a
    /// tunnel or topic this end does not have, a delivery a plain client cannot take).
    ignored: u64,
}

impl ClientMachine {
    /// A session about to hand-shake as a member of `cluster`, or as a plain client if it
    /// is empty. The INIT packet is the first transmit.
    pub fn new(cluster: &str, config: ClientConfig) -> ClientMachine {
        let mut send = BytesMut::new();
        ClientSession::encode_init(cluster, &mut send);
        ClientMachine {
            config,
            member: !cluster.is_empty(),
            session: ClientSession::new(config.limits),
            send,
            in_flight: 0,
            events: VecDeque::new(),
            next_request: 0,
            next_tunnel: 0,
            requests: BTreeSet::new(),
            tunnels: BTreeMap::new(),
            topics: BTreeSet::new(),
            closing: false,
            ended: None,
            ignored: 0,
        }
    }

    /// Feeds what the stream did. `now` dates the deadlines of requests delivered to this
    /// member. Remote bytes never make this fail or panic: a violation ends the session
    /// ([`Event::Ended`]) with what was wrong.
    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::Received(data) => self.on_received(now, data),
            Input::Flushed(n) => self.in_flight = self.in_flight.saturating_sub(n),
            Input::Eof => {
                let why = if self.session.is_accepted() {
                    "the node closed the connection"
                } else {
                    "node closed the connection during the handshake"
                };
                self.end(End::Dropped(why.into()));
            }
            Input::Failed(why) => self.end(End::Dropped(why)),
        }
    }

    /// The next thing to do: bytes to write first, then events in order. Drain until
    /// `None` after every call.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.in_flight == 0 && !self.send.is_empty() {
            let bytes = self.send.split().freeze();
            self.in_flight = bytes.len();
            return Some(Output::Transmit(bytes));
        }
        self.events.pop_front().map(Output::Event)
    }

    /// The buffer to read the node's next bytes into, to pass back in
    /// [`Input::Received`]: it holds the start of a packet split across reads, so the
    /// read appends to it and nothing is copied.
    pub fn read_buffer(&mut self) -> BytesMut {
        std::mem::take(self.session.read_buf())
    }

    /// Sends `message` to every member of `cluster`.
    pub fn broadcast(&mut self, cluster: &str, message: &[u8]) -> Result<(), CallError> {
        check(!cluster.is_empty(), CallError::EmptyCluster)?;
        check(!message.is_empty(), CallError::EmptyBroadcast)?;
        self.check_room()?;
        codec::encode_broadcast(&mut self.send, cluster, message);
        Ok(())
    }

    /// Sends `request` to one member of `cluster`, which has `timeout` to answer (the node
    /// keeps that deadline). Exactly one [`Event::Reply`] for the returned id follows.
    pub fn request(
        &mut self,
        cluster: &str,
        request: &[u8],
        timeout: Duration,
    ) -> Result<RequestId, CallError> {
        check(!cluster.is_empty(), CallError::EmptyCluster)?;
        check(!request.is_empty(), CallError::EmptyRequest)?;
        let ms = timeout_ms(timeout)?;
        self.check_room()?;
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.requests.insert(id);
        codec::encode_request(&mut self.send, id.0, cluster, request, ms);
        Ok(id)
    }

    /// Publishes `event` to every subscriber of `topic`.
    pub fn publish(&mut self, topic: &str, event: &[u8]) -> Result<(), CallError> {
        check(!topic.is_empty(), CallError::EmptyTopic)?;
        check(!event.is_empty(), CallError::EmptyEvent)?;
        self.check_room()?;
        codec::encode_publish_client(&mut self.send, topic, event);
        Ok(())
    }

    /// Subscribes to `topic`: its events come as [`Event::Publish`]. Subscribing twice is
    /// refused here, as the reference clients do (the node would ignore it).
    pub fn subscribe(&mut self, topic: &str) -> Result<(), CallError> {
        check(!topic.is_empty(), CallError::EmptyTopic)?;
        check(
            !self.topics.contains(topic.as_bytes()),
            CallError::AlreadySubscribed,
        )?;
        self.check_room()?;
        self.topics.insert(Name::from(topic));
        codec::encode_subscribe(&mut self.send, topic);
        Ok(())
    }

    /// Ends the subscription to `topic`; events for it that are still on their way are
    /// dropped from now on.
    pub fn unsubscribe(&mut self, topic: &str) -> Result<(), CallError> {
        check(
            self.topics.contains(topic.as_bytes()),
            CallError::NotSubscribed,
        )?;
        self.check_room()?;
        self.topics.remove(topic.as_bytes());
        codec::encode_unsubscribe(&mut self.send, topic);
        Ok(())
    }

    /// True while subscribed to `topic`.
    pub fn is_subscribed(&self, topic: &str) -> bool {
        self.topics.contains(topic.as_bytes())
    }

    /// Starts building a tunnel to one member of `cluster`, which the node has `timeout`
    /// to build. Exactly one [`Event::TunnelBuilt`] for the returned id follows.
    pub fn tunnel(&mut self, cluster: &str, timeout: Duration) -> Result<TunnelId, CallError> {
        check(!cluster.is_empty(), CallError::EmptyCluster)?;
        let ms = timeout_ms(timeout)?;
        self.check_room()?;
        let id = self.next_tunnel_id();
        self.tunnels.insert(id, TunnelState::building());
        codec::encode_tun_init(&mut self.send, id.0, cluster, ms);
        Ok(id)
    }

    /// Queues the chunks of `message` that the node's allowance and the send buffer allow.
    /// `Ok` once all are queued; [`CallError::NoAllowance`] or
    /// [`CallError::SendBufferFull`] to call again after the wait they name (what was
    /// queued stays queued); [`CallError::TunnelClosed`] or [`CallError::Ended`] if it
    /// never can be.
    pub fn tunnel_send(&mut self, message: &mut Outgoing) -> Result<(), CallError> {
        loop {
            if message.is_done() {
                return Ok(());
            }
            self.check_room()?;
            let tunnel = message.tunnel();
            let t = match self.tunnels.get_mut(&tunnel) {
                Some(t) if t.phase == Phase::Open => t,
                _ => return Err(CallError::TunnelClosed),
            };
            let Some((size_or_cont, chunk)) = message.next_chunk(t.chunk_limit) else {
                return Ok(());
            };
            let len = chunk.len();
            // Only whole chunks are sent, within the allowance: the node may count on it.
            if t.allowance < len as u64 {
                return Err(CallError::NoAllowance);
            }
            t.allowance -= len as u64;
            codec::encode_tun_transfer(&mut self.send, tunnel.0, size_or_cont, &chunk);
            message.advance(len);
        }
    }

    /// The application took a message of `len` bytes from `tunnel`: re-grants the node
    /// that much window (the Go client's rule: per message taken).
    pub fn tunnel_consumed(&mut self, tunnel: TunnelId, len: usize) {
        if self.ended.is_none() && len > 0 && self.tunnels.contains_key(&tunnel) {
            codec::encode_tun_allow(&mut self.send, tunnel.0, len as u64);
        }
    }

    /// Asks the node to close `tunnel`. True if its [`Event::TunnelClosed`] is to come (the
    /// node's acknowledgement); false if it is not open (already closed, or unknown).
    pub fn close_tunnel(&mut self, tunnel: TunnelId) -> bool {
        match self.tunnels.get_mut(&tunnel).map(|t| &mut t.phase) {
            Some(phase @ Phase::Open) => {
                *phase = Phase::Closing;
                codec::encode_tun_close_request(&mut self.send, tunnel.0);
                true
            }
            Some(Phase::Closing) => true,
            Some(Phase::Building { .. }) | None => false,
        }
    }

    /// The application holds `tunnel` no longer: an open one is closed without waiting
    /// for the acknowledgement, and the machine forgets it. A build in progress is
    /// forgotten too; if the node confirms it later, the machine closes it then.
    pub fn release_tunnel(&mut self, tunnel: TunnelId) {
        if let Some(t) = self.tunnels.remove(&tunnel)
            && t.phase == Phase::Open
            && self.ended.is_none()
        {
            codec::encode_tun_close_request(&mut self.send, tunnel.0);
        }
    }

    /// Answers the node's request `id` with a reply or a fault text. A fault with no
    /// text counts as no answer: the requester times out (spec section 6).
    pub fn reply(
        &mut self,
        id: NodeRequestId,
        outcome: Result<&[u8], &str>,
    ) -> Result<(), CallError> {
        if self.ended.is_some() {
            return Err(CallError::Ended);
        }
        codec::encode_reply(&mut self.send, id.0, outcome);
        Ok(())
    }

    /// Asks the node to close the connection; [`Event::Ended`] with [`End::Closed`] comes
    /// once it confirms.
    pub fn close(&mut self) -> Result<(), CallError> {
        if self.ended.is_some() {
            return Err(CallError::Ended);
        }
        if !self.closing {
            self.closing = true;
            codec::encode_close_request(&mut self.send);
        }
        Ok(())
    }

    /// True once the node accepted the handshake.
    pub fn is_accepted(&self) -> bool {
        self.session.is_accepted()
    }

    /// Why the session ended, once it has.
    pub fn ended(&self) -> Option<&End> {
        self.ended.as_ref()
    }

    /// This client's requests still awaiting their reply.
    pub fn pending_requests(&self) -> usize {
        self.requests.len()
    }

    /// Tunnels being built, open or closing.
    pub fn tunnels(&self) -> usize {
        self.tunnels.len()
    }

    /// Bytes queued for the node and not yet handed out.
    pub fn queued(&self) -> usize {
        self.send.len()
    }

    /// The node's allowance for sending on `tunnel`, if it is known.
    pub fn allowance(&self, tunnel: TunnelId) -> Option<u64> {
        self.tunnels.get(&tunnel).map(|t| t.allowance)
    }

    /// Packets from the node ignored because they named nothing this end knows.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    fn next_tunnel_id(&mut self) -> TunnelId {
        let id = TunnelId(self.next_tunnel);
        self.next_tunnel += 1;
        id
    }

    /// The state every sending call checks after its arguments: the connection still up,
    /// then room in the send buffer.
    fn check_room(&self) -> Result<(), CallError> {
        check(self.ended.is_none(), CallError::Ended)?;
        check(
            self.send.len() < self.config.send_buffer,
            CallError::SendBufferFull,
        )
    }

    fn on_received(&mut self, now: Instant, data: BytesMut) {
        if self.ended.is_some() {
            return;
        }
        let buf = self.session.read_buf();
        if buf.is_empty() {
            *buf = data;
        } else {
            // O(1) when `data` continues the buffer `read_buffer` handed out.
            buf.unsplit(data);
        }
        while self.ended.is_none() {
            match self.session.poll() {
                Ok(None) => break,
                Ok(Some(SessionEvent::Accepted)) => self.events.push_back(Event::Accepted),
                Ok(Some(SessionEvent::Packet(packet))) => self.on_packet(now, packet),
                Err(e) => self.end(End::Session(e)),
            }
        }
    }

    fn on_packet(&mut self, now: Instant, packet: NodePacket) {
        match packet {
            NodePacket::Reply { id, outcome } => self.on_reply(RequestId(id), outcome),
            NodePacket::Broadcast { message } => self.deliver(Event::Broadcast(message)),
            NodePacket::Request {
                id,
                request,
                timeout_ms,
            } => self.deliver(Event::Request {
                id: NodeRequestId(id),
                request,
                deadline: now + Duration::from_millis(timeout_ms),
            }),
            NodePacket::Publish { topic, event } => {
                if self.topics.contains(&topic.as_bytes()[..]) {
                    self.events.push_back(Event::Publish { topic, event });
                } else {
                    // Unsubscribed while it was on its way.
                    self.ignored += 1;
                }
            }
            NodePacket::TunInit {
                build_id,
                chunk_limit,
            } => self.on_tun_init(BuildId(build_id), chunk_limit),
            NodePacket::TunConfirm {
                tun_id,
                chunk_limit,
            } => self.on_tun_confirm(TunnelId(tun_id), chunk_limit),
            NodePacket::TunAllow { tun_id, space } => self.on_tun_allow(TunnelId(tun_id), space),
            NodePacket::TunTransfer {
                tun_id,
                size_or_cont,
                payload,
            } => self.on_tun_transfer(TunnelId(tun_id), size_or_cont, &payload),
            NodePacket::TunClose { tun_id, reason } => {
                self.on_tun_close(TunnelId(tun_id), reason.to_string())
            }
            NodePacket::Close { reason } => {
                let why = if reason.is_empty() && self.closing {
                    End::Closed
                } else if reason.is_empty() {
                    End::Dropped("the node closed the connection".into())
                } else {
                    End::Dropped(reason.to_string())
                };
                self.end(why);
            }
            // The session turns these into errors once accepted; kept for completeness.
            NodePacket::Init { .. } | NodePacket::Deny { .. } => self.end(End::Session(
                SessionError::Handshake("handshake packet after the handshake"),
            )),
        }
    }

    /// The one REPLY of a request.
    fn on_reply(&mut self, request: RequestId, outcome: ReplyOutcome) {
        if !self.requests.remove(&request) {
            // A reply to nothing pending: ignored rather than fatal, so that a confused
            // node cannot break this connection's other requests.
            self.ignored += 1;
            return;
        }
        let outcome = match outcome {
            ReplyOutcome::Success(reply) => Ok(reply),
            ReplyOutcome::Fault(fault) => Err(RequestError::Remote(fault.to_string())),
            ReplyOutcome::TimedOut => Err(RequestError::TimedOut),
        };
        self.events.push_back(Event::Reply { request, outcome });
    }

    /// The node grants `space` more on a tunnel.
    fn on_tun_allow(&mut self, tunnel: TunnelId, space: u64) {
        let Some(t) = self.tunnels.get_mut(&tunnel) else {
            self.ignored += 1;
            return;
        };
        t.allowance = t.allowance.saturating_add(space);
        if t.phase == Phase::Open {
            self.events.push_back(Event::TunnelAllowance { tunnel });
        }
    }

    /// The node closed a tunnel (a build closed before its confirmation is reported
    /// with the confirmation).
    fn on_tun_close(&mut self, tunnel: TunnelId, reason: String) {
        match self.tunnels.get_mut(&tunnel).map(|t| &mut t.phase) {
            Some(Phase::Building { closed }) => {
                closed.get_or_insert(reason);
            }
            Some(Phase::Open | Phase::Closing) => {
                self.tunnels.remove(&tunnel);
                self.events
                    .push_back(Event::TunnelClosed { tunnel, reason });
            }
            None => self.ignored += 1,
        }
    }

    /// A broadcast or request: for members only (the node sends them no others).
    fn deliver(&mut self, event: Event) {
        if self.member {
            self.events.push_back(event);
        } else {
            self.ignored += 1;
        }
    }

    /// The node offers a tunnel built by a remote client. Every client library accepts at
    /// once: TUN_CONFIRM with a tunnel id of this end, then its window.
    fn on_tun_init(&mut self, build: BuildId, chunk_limit: u64) {
        let tunnel = self.next_tunnel_id();
        codec::encode_tun_confirm(&mut self.send, build.0, tunnel.0);
        codec::encode_tun_allow(&mut self.send, tunnel.0, self.config.tunnel_window);
        if self.member {
            self.tunnels.insert(tunnel, TunnelState::open(chunk_limit));
            self.events
                .push_back(Event::InboundTunnel { tunnel, build });
        } else {
            // Only members are offered tunnels; a plain client has nobody to hand one to.
            // Confirmed and closed at once, so the builder hears now rather than at its
            // timeout.
            codec::encode_tun_close_request(&mut self.send, tunnel.0);
            self.ignored += 1;
        }
    }

    fn on_tun_confirm(&mut self, tunnel: TunnelId, chunk_limit: Option<u64>) {
        let closed = match self.tunnels.get(&tunnel).map(|t| &t.phase) {
            Some(Phase::Building { closed }) => closed.clone(),
            known => {
                if known.is_none() && chunk_limit.is_some() {
                    // Built for a builder that gave up ([`ClientMachine::release_tunnel`]):
                    // close what nobody will use.
                    codec::encode_tun_close_request(&mut self.send, tunnel.0);
                }
                self.ignored += 1;
                return;
            }
        };
        let Some(limit) = chunk_limit else {
            self.tunnels.remove(&tunnel);
            self.events.push_back(Event::TunnelBuilt {
                tunnel,
                outcome: Err(BuildError::TimedOut),
            });
            return;
        };
        self.events.push_back(Event::TunnelBuilt {
            tunnel,
            outcome: Ok(()),
        });
        if let Some(reason) = closed {
            self.tunnels.remove(&tunnel);
            self.events
                .push_back(Event::TunnelClosed { tunnel, reason });
            return;
        }
        if let Some(t) = self.tunnels.get_mut(&tunnel) {
            t.phase = Phase::Open;
            t.chunk_limit = chunk_limit_of(limit);
        }
        codec::encode_tun_allow(&mut self.send, tunnel.0, self.config.tunnel_window);
    }

    fn on_tun_transfer(&mut self, tunnel: TunnelId, size_or_cont: u64, payload: &[u8]) {
        let t = match self.tunnels.get_mut(&tunnel) {
            Some(t) if matches!(t.phase, Phase::Open | Phase::Closing) => t,
            _ => {
                self.ignored += 1;
                return;
            }
        };
        let r = t
            .reassembly
            .push(size_or_cont, payload, self.config.limits.max_message_size);
        if r.discarded > 0 {
            // The window a discarded part used comes back to the node at once: nobody will
            // ever take it.
            codec::encode_tun_allow(&mut self.send, tunnel.0, r.discarded as u64);
        }
        if let Some(message) = r.message {
            self.events
                .push_back(Event::TunnelMessage { tunnel, message });
        }
    }

    /// Ends the session once: every pending request, build and tunnel gets its closing
    /// event, in id order, then [`Event::Ended`]. What is queued to send stays, for the
    /// driver to write before it closes the stream.
    fn end(&mut self, why: End) {
        if self.ended.is_some() {
            return;
        }
        for request in std::mem::take(&mut self.requests) {
            self.events.push_back(Event::Reply {
                request,
                outcome: Err(RequestError::Closed),
            });
        }
        for (tunnel, t) in std::mem::take(&mut self.tunnels) {
            self.events.push_back(match t.phase {
                Phase::Building { .. } => Event::TunnelBuilt {
                    tunnel,
                    outcome: Err(BuildError::Closed),
                },
                Phase::Open | Phase::Closing => Event::TunnelClosed {
                    tunnel,
                    reason: "connection closed".into(),
                },
            });
        }
        self.topics.clear();
        // Nothing more is read: the partial packet is garbage now.
        *self.session.read_buf() = BytesMut::new();
        self.events.push_back(Event::Ended(why.clone()));
        self.ended = Some(why);
    }
}

fn check(ok: bool, otherwise: CallError) -> Result<(), CallError> {
    if ok { Ok(()) } else { Err(otherwise) }
}

/// A timeout as the wire carries it: whole milliseconds, at least one.
fn timeout_ms(timeout: Duration) -> Result<u64, CallError> {
    let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    check(ms > 0, CallError::TimeoutUnderOneMs)?;
    Ok(ms)
}
