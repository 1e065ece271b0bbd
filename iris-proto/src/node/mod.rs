//! The node: relay sessions and local routing, and (when networked) the mesh of links to
//! other nodes with the overlay over it; driven by [`Node::handle`] and drained with
//! [`Node::poll_output`].

mod config;
mod requests;
mod session;
mod stats;
mod tunnel;

#[cfg(test)]
mod tests;

pub use config::{Config, ConfigError};
pub use stats::Stats;

use crate::mesh::{DialId, LinkId, Mesh, MeshConfig, MeshEvent, MeshOutput, Security};
use crate::relay::codec::{CLIENT_MAGIC, PROTOCOL_VERSION, RELAY_MAGIC, decode_client};
use crate::relay::{ClientPacket, Name, NodePacket};
use crate::time::Instant;
use bytes::{Bytes, BytesMut};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use requests::PendingRequest;
use session::{Phase, Session};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use tunnel::Tunnel;

/// A relay client connection, named by the driver. Ids must not be reused while the node
/// still knows the connection (a driver counting up from 0 is fine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// Something the driver tells the node.
#[derive(Debug)]
pub enum Input<'a> {
    /// A relay client connected.
    ClientConnected(ConnId),
    /// Bytes arrived from a client, in order.
    ClientData(ConnId, &'a [u8]),
    /// The driver wrote this many bytes of earlier transmits to the client's socket.
    ClientFlushed(ConnId, usize),
    /// The client's socket closed or failed; the node forgets it without writing to it.
    ClientGone(ConnId),
    /// The deadline from [`Node::poll_timeout`] has passed.
    Timeout,
    /// Stop serving: every client is told `reason` and closed, peers are told the node
    /// leaves, then [`Event::Stopped`].
    Shutdown(&'a str),
    /// A connection to another node opened: accepted by the peer listener (`dial` is
    /// `None`), or the answer to [`Output::Dial`].
    PeerConnected {
        /// The driver's name for it.
        link: LinkId,
        /// The dial it answers, if any.
        dial: Option<DialId>,
    },
    /// Bytes arrived from a peer link, in order.
    PeerData(LinkId, &'a [u8]),
    /// A peer link's socket closed or failed.
    PeerGone(LinkId),
    /// A dial could not connect.
    DialFailed(DialId),
    /// Join the overlay through the node at this address (discovery found it).
    JoinVia(SocketAddr),
}

/// Something the node asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write these bytes to the client's socket, after everything transmitted before.
    Transmit(ConnId, Bytes),
    /// Close the client's socket once everything transmitted before is written.
    Close(ConnId),
    /// Drop the client's socket at once, discarding whatever is not yet written: it stopped
    /// reading, so a graceful close could wait for ever.
    Abort(ConnId),
    /// Open a TCP connection to another node; answer with [`Input::PeerConnected`] naming
    /// this dial, or [`Input::DialFailed`].
    Dial(DialId, SocketAddr),
    /// Write these bytes to the peer link's socket, after everything before.
    PeerTransmit(LinkId, Bytes),
    /// Close the peer link's socket once everything before is written.
    PeerClose(LinkId),
    /// Something worth logging or counting happened.
    Event(Event),
}

/// Notable things for logs and statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The node serves: the driver may open the relay port. A lone node is ready at once;
    /// with an overlay this waits for convergence.
    Ready,
    /// A client completed its handshake; `cluster` is empty for a plain client.
    ClientAttached {
        /// The connection.
        conn: ConnId,
        /// The cluster it registered under.
        cluster: Name,
    },
    /// The node stopped serving a client.
    ClientClosed {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// Shutdown finished: every client was told and closed (and peers told the node left:
    /// write the transmits before this one, then exit).
    Stopped,
    /// The overlay reports something: convergence, a peer down, a link closed, a dial failed.
    Mesh(MeshEvent),
}

/// Why a client connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent CLOSE.
    Graceful,
    /// The socket closed under us.
    Gone,
    /// The client broke the protocol after its handshake; it was told this text.
    Violation(String),
    /// Refused before or at the handshake (not an Iris client, wrong version, too many
    /// clients, too slow); no CLOSE is sent before a completed handshake.
    Refused(String),
    /// It let more than `max_client_backlog` bytes pile up.
    SlowConsumer,
    /// The node is shutting down.
    Shutdown,
}

/// Deadlines the node keeps; ordered so that timers are a `BTreeSet<(Instant, Timer)>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Handshake(ConnId),
    SlowConsumer(ConnId),
    Request(u64),
    TunnelBuild(u64),
}

/// An Iris node as a state machine. See the crate docs for the drive loop.
#[derive(Debug)]
pub struct Node {
    cfg: Config,
    rng: ChaCha8Rng,
    now: Instant,
    sessions: BTreeMap<ConnId, Session>,
    /// Cluster name -> member connections, in join order.
    clusters: BTreeMap<Name, Vec<ConnId>>,
    /// Topic name -> subscribed connections, in subscription order.
    topics: BTreeMap<Name, Vec<ConnId>>,
    requests: BTreeMap<u64, PendingRequest>,
    tunnels: BTreeMap<u64, Tunnel>,
    timers: BTreeSet<(Instant, Timer)>,
    next_key: u64,
    outputs: VecDeque<Output>,
    /// Connections whose `out` holds bytes not yet transmitted.
    dirty: VecDeque<ConnId>,
    /// Connections to drop as slow consumers once the current input is handled.
    doomed: Vec<ConnId>,
    /// Connections whose unwritten bytes passed the high watermark, with their deadline.
    congested: BTreeMap<ConnId, Instant>,
    /// Reused encode buffer for packets sent to many connections.
    scratch: BytesMut,
    stats: Stats,
    stopped: bool,
    /// Links to other nodes and the overlay; `None` for a lone node.
    mesh: Option<Mesh>,
    /// [`Event::Ready`] has been emitted.
    ready: bool,
}

impl Node {
    /// A node at time `now`, with all randomness drawn from `seed`.
    pub fn new(cfg: Config, seed: [u8; 32], now: Instant) -> Result<Node, ConfigError> {
        cfg.validate()?;
        let mut node = Node {
            cfg,
            rng: ChaCha8Rng::from_seed(seed),
            now,
            sessions: BTreeMap::new(),
            clusters: BTreeMap::new(),
            topics: BTreeMap::new(),
            requests: BTreeMap::new(),
            tunnels: BTreeMap::new(),
            timers: BTreeSet::new(),
            next_key: 0,
            outputs: VecDeque::new(),
            dirty: VecDeque::new(),
            doomed: Vec::new(),
            congested: BTreeMap::new(),
            scratch: BytesMut::new(),
            stats: Stats::default(),
            stopped: false,
            mesh: None,
            ready: true,
        };
        // A lone node has nothing to converge with.
        node.outputs.push_back(Output::Event(Event::Ready));
        Ok(node)
    }

    /// A node of a network: it dials its seeds, joins the overlay, and is
    /// [`Event::Ready`] (the relay port may open) once the overlay has converged.
    pub fn networked(
        cfg: Config,
        mesh: MeshConfig,
        security: Security,
        seed: [u8; 32],
        now: Instant,
    ) -> Result<Node, ConfigError> {
        mesh.validate()?;
        let mut node = Node::new(cfg, seed, now)?;
        node.outputs.clear();
        node.ready = false;
        let mut mesh_seed = [0u8; 32];
        rand::Rng::fill_bytes(&mut node.rng, &mut mesh_seed);
        node.mesh = Some(Mesh::new(mesh, security, mesh_seed, now));
        Ok(node)
    }

    /// The mesh (links and overlay), if the node is networked.
    pub fn mesh(&self) -> Option<&Mesh> {
        self.mesh.as_ref()
    }

    /// Feeds one input. Never fails: bad client bytes close that client and nothing else.
    pub fn handle(&mut self, now: Instant, input: Input<'_>) {
        // Time never runs backwards inside the core, whatever the driver's clock does.
        self.now = self.now.max(now);
        match input {
            Input::ClientConnected(conn) => self.on_connected(conn),
            Input::ClientData(conn, data) => self.on_data(conn, data),
            Input::ClientFlushed(conn, n) => {
                if let Some(s) = self.sessions.get_mut(&conn) {
                    s.backlog = s.backlog.saturating_sub(n);
                    // Hysteresis: resume at half the watermark, not just below it.
                    if s.backlog + s.out.len() <= self.cfg.client_backlog_high / 2 {
                        self.uncongest(conn);
                    }
                }
            }
            Input::ClientGone(conn) => self.close(conn, CloseReason::Gone),
            Input::Timeout => {
                self.on_timeout();
                let now = self.now;
                if let Some(m) = self.mesh.as_mut()
                    && m.poll_timeout().is_some_and(|t| t <= now)
                {
                    m.handle_timeout(now);
                }
            }
            Input::Shutdown(reason) => self.shutdown(reason),
            Input::PeerConnected { link, dial } => {
                let now = self.now;
                if let Some(m) = self.mesh.as_mut() {
                    m.on_connected(now, link, dial);
                } else {
                    // A lone node has no peer listener; a driver that reports one anyway
                    // gets the link closed.
                    self.outputs.push_back(Output::PeerClose(link));
                }
            }
            Input::PeerData(link, data) => {
                let now = self.now;
                if let Some(m) = self.mesh.as_mut() {
                    m.on_data(now, link, data);
                }
            }
            Input::PeerGone(link) => {
                let now = self.now;
                if let Some(m) = self.mesh.as_mut() {
                    m.on_gone(now, link);
                }
            }
            Input::DialFailed(dial) => {
                let now = self.now;
                if let Some(m) = self.mesh.as_mut() {
                    m.on_dial_failed(now, dial);
                }
            }
            Input::JoinVia(addr) => {
                let now = self.now;
                if let Some(m) = self.mesh.as_mut() {
                    m.join_via(now, addr);
                }
            }
        }
        for conn in std::mem::take(&mut self.doomed) {
            self.close(conn, CloseReason::SlowConsumer);
        }
        self.note_congestion();
    }

    /// True while some client has more than `client_backlog_high` bytes unwritten: the
    /// driver should then stop reading from clients (feed no [`Input::ClientData`]) until
    /// this turns false, which can only happen in a later `handle`. Producers are throttled
    /// through TCP instead of the node buffering without bound or dropping messages.
    #[must_use]
    pub fn reading_paused(&self) -> bool {
        !self.congested.is_empty()
    }

    /// The next thing for the driver to do; call until `None` after every `handle`.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(out) = self.outputs.pop_front() {
            return Some(out);
        }
        while let Some(conn) = self.dirty.pop_front() {
            if let Some(data) = self.take_out(conn) {
                return Some(Output::Transmit(conn, data));
            }
        }
        self.poll_mesh()
    }

    /// When the node next wants [`Input::Timeout`]; `None` if it has no deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let relay = self.timers.first().map(|(at, _)| *at);
        let mesh = self.mesh.as_ref().and_then(Mesh::poll_timeout);
        relay.into_iter().chain(mesh).min()
    }

    /// Counters since the node started.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Connections currently known (handshaking or active).
    pub fn client_count(&self) -> usize {
        self.sessions.len()
    }

    /// The mesh's next output, as the node's.
    fn poll_mesh(&mut self) -> Option<Output> {
        let out = self.mesh.as_mut()?.poll_output()?;
        Some(match out {
            MeshOutput::Dial(d, addr) => Output::Dial(d, addr),
            MeshOutput::Transmit(l, b) => Output::PeerTransmit(l, b),
            MeshOutput::Close(l) => Output::PeerClose(l),
            MeshOutput::Event(e) => {
                if matches!(e, MeshEvent::Converged { .. }) && !self.ready {
                    self.ready = true;
                    self.outputs.push_back(Output::Event(Event::Ready));
                }
                Output::Event(Event::Mesh(e))
            }
        })
    }

    fn on_connected(&mut self, conn: ConnId) {
        if self.stopped || self.sessions.len() >= self.cfg.max_clients {
            self.stats.clients_refused += 1;
            self.outputs.push_back(Output::Close(conn));
            let why = if self.stopped {
                "node is shutting down"
            } else {
                "too many clients"
            };
            self.event(Event::ClientClosed {
                conn,
                reason: CloseReason::Refused(why.into()),
            });
            return;
        }
        let deadline = self.now + self.cfg.handshake_timeout;
        self.sessions.insert(conn, Session::new(conn, deadline));
        self.timers.insert((deadline, Timer::Handshake(conn)));
    }

    fn on_data(&mut self, conn: ConnId, data: &[u8]) {
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        self.stats.bytes_in += data.len() as u64;
        s.rbuf.extend_from_slice(data);
        // Handlers may close this very connection; look it up afresh for every packet.
        while let Some(s) = self.sessions.get_mut(&conn) {
            let phase = s.phase;
            match (decode_client(&mut s.rbuf, &self.cfg.limits), phase) {
                (Ok(None), _) => return,
                (Ok(Some(packet)), Phase::Handshake { .. }) => self.on_init(conn, packet),
                (Ok(Some(packet)), Phase::Active) => self.on_packet(conn, packet),
                (Err(e), Phase::Handshake { .. }) => {
                    self.close(conn, CloseReason::Refused(format!("bad handshake: {e}")))
                }
                (Err(e), Phase::Active) => self.violation(conn, e.to_string()),
            }
        }
    }

    fn on_init(&mut self, conn: ConnId, packet: ClientPacket) {
        let ClientPacket::Init {
            magic,
            version,
            cluster,
        } = packet
        else {
            return self.close(
                conn,
                CloseReason::Refused("first packet is not INIT".into()),
            );
        };
        if magic != CLIENT_MAGIC.as_bytes() {
            return self.close(conn, CloseReason::Refused("wrong magic".into()));
        }
        if version != PROTOCOL_VERSION.as_bytes() {
            let reason = format!(
                "Unsupported protocol. Client: {}. Iris: {PROTOCOL_VERSION}.",
                String::from_utf8_lossy(&version)
            );
            self.send(
                conn,
                &NodePacket::Deny {
                    magic: Bytes::from_static(RELAY_MAGIC.as_bytes()),
                    reason: reason.as_str().into(),
                },
            );
            return self.close(conn, CloseReason::Refused(reason));
        }
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        if let Phase::Handshake { deadline } = s.phase {
            self.timers.remove(&(deadline, Timer::Handshake(conn)));
        }
        s.phase = Phase::Active;
        if !cluster.is_empty() {
            s.cluster = Some(cluster.clone());
            self.clusters.entry(cluster.clone()).or_default().push(conn);
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

    fn on_packet(&mut self, conn: ConnId, packet: ClientPacket) {
        match packet {
            ClientPacket::Init { .. } => self.violation(conn, "INIT after the handshake".into()),
            ClientPacket::Close => self.close(conn, CloseReason::Graceful),
            ClientPacket::Broadcast { cluster, message } => {
                self.stats.broadcasts += 1;
                self.scratch.clear();
                NodePacket::Broadcast { message }.encode(&mut self.scratch);
                if let Some(members) = self.clusters.get(&cluster) {
                    fan_out(
                        &mut self.sessions,
                        &mut self.dirty,
                        &mut self.doomed,
                        self.cfg.max_client_backlog,
                        members,
                        &self.scratch,
                    );
                }
            }
            ClientPacket::Request {
                id,
                cluster,
                request,
                timeout_ms,
            } => self.on_request(conn, id, cluster, request, timeout_ms),
            ClientPacket::Reply { id, outcome } => self.on_reply(conn, id, outcome),
            ClientPacket::Subscribe { topic } => self.subscribe(conn, topic),
            ClientPacket::Unsubscribe { topic } => self.unsubscribe(conn, &topic),
            ClientPacket::Publish { topic, event } => {
                self.stats.publishes += 1;
                if self.topics.contains_key(&topic) {
                    self.scratch.clear();
                    NodePacket::Publish {
                        topic: topic.clone(),
                        event,
                    }
                    .encode(&mut self.scratch);
                    fan_out(
                        &mut self.sessions,
                        &mut self.dirty,
                        &mut self.doomed,
                        self.cfg.max_client_backlog,
                        &self.topics[&topic],
                        &self.scratch,
                    );
                }
            }
            ClientPacket::TunInit {
                tun_id,
                cluster,
                timeout_ms,
            } => self.on_tun_init(conn, tun_id, cluster, timeout_ms),
            ClientPacket::TunConfirm { build_id, tun_id } => {
                self.on_tun_confirm(conn, build_id, tun_id)
            }
            ClientPacket::TunAllow { tun_id, space } => self.on_tun_allow(conn, tun_id, space),
            ClientPacket::TunTransfer {
                tun_id,
                size_or_cont,
                payload,
            } => self.on_tun_transfer(conn, tun_id, size_or_cont, payload),
            ClientPacket::TunClose { tun_id } => self.on_tun_close(conn, tun_id),
        }
    }

    fn subscribe(&mut self, conn: ConnId, topic: Name) {
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        // Subscribing twice is ignored (the original node dropped the connection).
        if s.topics.contains(&topic) {
            return;
        }
        if s.topics.len() >= self.cfg.max_subscriptions_per_client {
            let max = self.cfg.max_subscriptions_per_client;
            return self.violation(conn, format!("more than {max} subscriptions"));
        }
        s.topics.insert(topic.clone());
        self.topics.entry(topic).or_default().push(conn);
    }

    fn unsubscribe(&mut self, conn: ConnId, topic: &Name) {
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        // Unsubscribing an unknown topic is ignored (the original dropped the connection).
        if s.topics.remove(topic) {
            remove_member(&mut self.topics, topic, conn);
        }
    }

    fn on_timeout(&mut self) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > self.now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Handshake(conn) => {
                    self.stats.handshake_timeouts += 1;
                    self.close(conn, CloseReason::Refused("handshake timed out".into()));
                }
                Timer::SlowConsumer(conn) => {
                    self.congested.remove(&conn);
                    self.close(conn, CloseReason::SlowConsumer);
                }
                Timer::Request(key) => self.expire_request(key),
                Timer::TunnelBuild(key) => self.expire_build(key),
            }
        }
    }

    fn shutdown(&mut self, reason: &str) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        // Every pending request gets its one REPLY before its connection closes.
        let keys: Vec<u64> = self.requests.keys().copied().collect();
        for key in keys {
            self.expire_request(key);
        }
        let conns: Vec<ConnId> = self.sessions.keys().copied().collect();
        for conn in conns {
            let active = matches!(self.sessions.get(&conn), Some(s) if s.phase == Phase::Active);
            if active {
                self.send(
                    conn,
                    &NodePacket::Close {
                        reason: reason.into(),
                    },
                );
            }
            self.close(conn, CloseReason::Shutdown);
        }
        // Peers hear of the leave before the driver sees Stopped.
        let now = self.now;
        if let Some(m) = self.mesh.as_mut() {
            m.leave(now);
        }
        while let Some(out) = self.poll_mesh() {
            self.outputs.push_back(out);
        }
        self.event(Event::Stopped);
    }

    /// Tells the client what it did wrong, then drops it.
    fn violation(&mut self, conn: ConnId, what: String) {
        self.stats.protocol_violations += 1;
        self.send(
            conn,
            &NodePacket::Close {
                reason: what.as_str().into(),
            },
        );
        self.close(conn, CloseReason::Violation(what));
    }

    /// Forgets a connection: memberships, subscriptions, requests, tunnels. Sends CLOSE ""
    /// for a graceful close; other reasons send whatever the caller already queued.
    fn close(&mut self, conn: ConnId, reason: CloseReason) {
        if reason == CloseReason::Graceful {
            self.send(
                conn,
                &NodePacket::Close {
                    reason: Name::default(),
                },
            );
        }
        let Some(mut s) = self.sessions.remove(&conn) else {
            return;
        };
        if let Phase::Handshake { deadline } = s.phase {
            self.timers.remove(&(deadline, Timer::Handshake(conn)));
        }
        self.uncongest(conn);
        if let Some(cluster) = s.cluster.take() {
            remove_member(&mut self.clusters, &cluster, conn);
        }
        for topic in std::mem::take(&mut s.topics) {
            remove_member(&mut self.topics, &topic, conn);
        }
        self.forget_requests(&mut s);
        self.forget_tunnels(&mut s);
        if reason == CloseReason::SlowConsumer {
            self.outputs.push_back(Output::Abort(conn));
        } else if reason != CloseReason::Gone {
            if !s.out.is_empty() {
                let data = s.out.split().freeze();
                self.stats.bytes_out += data.len() as u64;
                self.outputs.push_back(Output::Transmit(conn, data));
            }
            self.outputs.push_back(Output::Close(conn));
        }
        if reason == CloseReason::SlowConsumer {
            self.stats.slow_consumers += 1;
        }
        self.stats.clients_closed += 1;
        self.event(Event::ClientClosed { conn, reason });
    }

    /// Encodes `packet` into the connection's outgoing bytes.
    fn send(&mut self, conn: ConnId, packet: &NodePacket) {
        write_to(
            &mut self.sessions,
            &mut self.dirty,
            &mut self.doomed,
            self.cfg.max_client_backlog,
            conn,
            |out| packet.encode(out),
        );
    }

    /// Marks clients whose unwritten bytes passed the watermark (checked once per input, so
    /// the hot send path stays a copy).
    fn note_congestion(&mut self) {
        let high = self.cfg.client_backlog_high;
        // Only connections written to since the last drain can have grown.
        for &conn in &self.dirty {
            let Some(s) = self.sessions.get(&conn) else {
                continue;
            };
            if s.backlog + s.out.len() > high && !self.congested.contains_key(&conn) {
                let deadline = self.now + self.cfg.slow_consumer_timeout;
                self.congested.insert(conn, deadline);
                self.timers.insert((deadline, Timer::SlowConsumer(conn)));
            }
        }
    }

    fn uncongest(&mut self, conn: ConnId) {
        if let Some(deadline) = self.congested.remove(&conn) {
            self.timers.remove(&(deadline, Timer::SlowConsumer(conn)));
        }
    }

    fn take_out(&mut self, conn: ConnId) -> Option<Bytes> {
        let s = self.sessions.get_mut(&conn)?;
        if s.out.is_empty() {
            return None;
        }
        let data = s.out.split().freeze();
        s.backlog += data.len();
        self.stats.bytes_out += data.len() as u64;
        Some(data)
    }

    fn event(&mut self, e: Event) {
        self.outputs.push_back(Output::Event(e));
    }

    fn next_key(&mut self) -> u64 {
        self.next_key += 1;
        self.next_key
    }

    /// A member of `cluster` chosen uniformly at random.
    fn pick_member(&mut self, cluster: &Name) -> Option<ConnId> {
        use rand::RngExt;
        let members = self.clusters.get(cluster)?;
        let i = self.rng.random_range(0..members.len());
        Some(members[i])
    }
}

/// Removes `conn` from the list under `name`, dropping the entry once empty so that names
/// nobody uses do not accumulate.
fn remove_member(map: &mut BTreeMap<Name, Vec<ConnId>>, name: &Name, conn: ConnId) {
    if let Some(list) = map.get_mut(name) {
        list.retain(|&c| c != conn);
        if list.is_empty() {
            map.remove(name);
        }
    }
}

/// Copies one encoded packet to every listed connection. A free function so that the member
/// list can stay borrowed from the node's maps while sessions are written (no clone per message).
fn fan_out(
    sessions: &mut BTreeMap<ConnId, Session>,
    dirty: &mut VecDeque<ConnId>,
    doomed: &mut Vec<ConnId>,
    max_backlog: usize,
    conns: &[ConnId],
    packet: &[u8],
) {
    for &conn in conns {
        write_to(sessions, dirty, doomed, max_backlog, conn, |out| {
            out.extend_from_slice(packet)
        });
    }
}

/// The one way bytes reach a connection: appended to its outgoing buffer, the connection
/// marked for transmission, and doomed if its unwritten bytes pass the hard cap.
fn write_to(
    sessions: &mut BTreeMap<ConnId, Session>,
    dirty: &mut VecDeque<ConnId>,
    doomed: &mut Vec<ConnId>,
    max_backlog: usize,
    conn: ConnId,
    write: impl FnOnce(&mut BytesMut),
) {
    let Some(s) = sessions.get_mut(&conn) else {
        return;
    };
    if s.out.is_empty() {
        dirty.push_back(conn);
    }
    write(&mut s.out);
    if s.out.len() + s.backlog > max_backlog && !doomed.contains(&conn) {
        doomed.push(conn);
    }
}
