//! The node: relay sessions and local routing, and (when networked) the mesh of links to
//! other nodes with the overlay over it; driven by [`Node::handle`] and drained with
//! [`Node::poll_output`].

mod castflow;
mod config;
mod conns;
mod flow;
mod held;
mod memory;
mod network;
mod outbox;
mod requests;
mod session;
mod stats;
mod tunnel;
mod wire;

#[cfg(test)]
mod discovery_tests;
#[cfg(test)]
mod network_tests;
#[cfg(test)]
mod tests;

pub use config::{Config, ConfigError};
pub use stats::Stats;

use crate::mesh::{DialId, LinkId, Mesh, MeshConfig, MeshEvent, MeshOutput, Security};
use crate::overlay::Contact;
use crate::relay::codec::{CLIENT_MAGIC, PROTOCOL_VERSION, RELAY_MAGIC, decode_client};
use crate::relay::{ClientPacket, Name, NodePacket};
use crate::scribe::{Group, Scribe};
use crate::time::Instant;
use crate::timer::Timers;
use bytes::Bytes;
use conns::{Conns, Cut};
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
        /// Where an accepted connection comes from, if the driver knows: inbound
        /// handshakes in flight are bounded per source address too
        /// ([`crate::MeshConfig::max_inbound_handshakes_per_addr`]).
        from: Option<std::net::SocketAddr>,
    },
    /// Bytes arrived from a peer link, in order.
    PeerData(LinkId, &'a [u8]),
    /// The driver wrote this many bytes of earlier transmits to the peer link's socket (the
    /// link's frames are handed out as the socket takes them, so that control messages
    /// keep their priority over queued data on a slow link).
    PeerFlushed(LinkId, usize),
    /// A peer link's socket closed or failed.
    PeerGone(LinkId),
    /// A dial could not connect.
    DialFailed(DialId),
    /// Join the overlay through the node at this address (an operator named it).
    JoinVia(SocketAddr),
    /// A datagram arrived on the discovery socket (see [`Output::Beacon`]).
    Beacon {
        /// Where it came from (answers go there).
        from: SocketAddr,
        /// What it held.
        data: &'a [u8],
    },
    /// The signature asked for by [`Output::Sign`].
    Signed(LinkId, &'a [u8]),
}

/// Something the node asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write these bytes to the client's socket, after everything transmitted before, and
    /// report them with [`Input::ClientFlushed`] once written. The node hands out a bounded
    /// amount at a time and more as flushes come back (pulled writes): what a client has not
    /// yet been handed stays in the node, which can still drop it or put a CLOSE before it.
    Transmit(ConnId, Bytes),
    /// Close the client's socket once everything transmitted before is written (or after a
    /// short grace, if the client stopped reading).
    Close(ConnId),
    /// Stop reading the client's socket (feed no more [`Input::ClientData`] for it) until
    /// [`Output::ResumeReading`]: its next message cannot be queued yet, so TCP pushes back
    /// on it. Bytes already read when this comes may still be fed.
    PauseReading(ConnId),
    /// Read the client's socket again.
    ResumeReading(ConnId),
    /// Open a TCP connection to another node; answer with [`Input::PeerConnected`] naming
    /// this dial, or [`Input::DialFailed`].
    Dial(DialId, SocketAddr),
    /// Write these bytes to the peer link's socket, after everything before, and report
    /// them with [`Input::PeerFlushed`] once written (pulled, like client writes).
    PeerTransmit(LinkId, Bytes),
    /// Close the peer link's socket once everything before is written.
    PeerClose(LinkId),
    /// Send a discovery datagram: to `to`, or (`None`) to every address discovery looks
    /// at (the well-known ports on this host; the local subnet where asked). Best effort:
    /// a beacon that cannot be sent is dropped. Report datagrams received on the discovery
    /// socket with [`Input::Beacon`].
    Beacon {
        /// One address (an answer), or everywhere discovery looks.
        to: Option<SocketAddr>,
        /// The datagram.
        data: Bytes,
    },
    /// A link's handshake needs this signed with the network key it names (only with
    /// `LinkConfig::offload_signatures`): sign it off the node's thread (an RSA
    /// private-key operation is milliseconds) and answer with [`Input::Signed`].
    Sign(LinkId, crate::link::ToSign),
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
    /// clients, too slow, pushed out of a full handshake pool). A client that sent a valid
    /// INIT is told why with `DENY`; before that nothing is sent.
    Refused(String),
    /// It did not read what it was sent (unwritten bytes over the congestion mark for too
    /// long, over its hard cap, or the most of all when the memory budget ran out); it was
    /// told this text with `CLOSE`, ahead of whatever was still queued for it.
    SlowConsumer(String),
    /// The node is shutting down.
    Shutdown,
}

/// Deadlines the node keeps (see [`crate::timer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Handshake(ConnId),
    SlowConsumer(ConnId),
    Request(u64),
    TunnelBuild(u64),
    /// The oldest message held for a tree in repair has waited its time.
    Held,
    /// Shutdown stops waiting for the requests in progress.
    Drain,
}

/// Where one end of a request or a tunnel is: one table serves both the local and the
/// remote case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// A client of this node, with its own id for the request or tunnel.
    Local(ConnId, u64),
    /// Another node, with that node's key for the request or tunnel.
    Remote(Contact, u64),
    /// Not known yet (a tunnel build on its way to some member).
    Nowhere,
}

/// An Iris node as a state machine. See the crate docs for the drive loop.
#[derive(Debug)]
pub struct Node {
    cfg: Config,
    rng: ChaCha8Rng,
    now: Instant,
    /// Relay connections and their write path.
    conns: Conns,
    /// Connections still in their handshake, oldest first (the pool's eviction order).
    handshaking: BTreeSet<(Instant, ConnId)>,
    /// Connections past their handshake.
    active: usize,
    /// Cluster name -> member connections, in join order.
    clusters: BTreeMap<Name, Vec<ConnId>>,
    /// Topic name -> subscribed connections, in subscription order.
    topics: BTreeMap<Name, Vec<ConnId>>,
    requests: BTreeMap<u64, PendingRequest>,
    tunnels: BTreeMap<u64, Tunnel>,
    timers: Timers<Timer>,
    next_key: u64,
    outputs: VecDeque<Output>,
    /// Producers whose held packet may now be queued.
    wakeups: VecDeque<ConnId>,
    /// Connections whose read pause may have changed.
    pause_check: Vec<ConnId>,
    /// Clients waiting for memory to reserve a large message, in arrival order.
    memory_waiters: VecDeque<ConnId>,
    stats: Stats,
    /// Shutdown began: no new connections.
    stopped: bool,
    /// Shutdown waits for the requests in progress (`Timer::Drain` bounds it).
    draining: bool,
    /// What the clients are told when shutdown closes them.
    closing_reason: String,
    /// Links to other nodes and the overlay; `None` for a lone node.
    mesh: Option<Mesh>,
    /// The multicast trees, for a node of a network.
    scribe: Option<Scribe>,
    /// Number of the next multicast or anycast this node starts (trees round-robin on it).
    next_cast: u64,
    /// Peers whose links failed (or a dial to them did) lately, routed around until then.
    unreachable: BTreeMap<crate::overlay::NodeId, Instant>,
    /// Windows of multicast bytes between this node and its peers.
    casts: castflow::CastFlow,
    /// Tree keys of the groups this node's clients send to, hashed once.
    tree_keys: crate::scribe::TreeKeys,
    /// Messages waiting at the closest node of their key for a tree in repair.
    held: held::Held,
    /// When a peer last came or went (or its link did): trees may be moving.
    routes_moved_at: Option<Instant>,
    /// [`Event::Ready`] has been emitted.
    ready: bool,
    /// Shutdown is done once what it set off is out: [`Event::Stopped`] goes last.
    stopping: bool,
}

impl Node {
    /// A node at time `now`, with all randomness drawn from `seed`.
    pub fn new(cfg: Config, seed: [u8; 32], now: Instant) -> Result<Node, ConfigError> {
        cfg.validate()?;
        let mut node = Node {
            conns: Conns::new(
                cfg.client_backlog_high,
                cfg.max_client_backlog,
                cfg.max_memory,
            ),
            cfg,
            rng: ChaCha8Rng::from_seed(seed),
            now,
            handshaking: BTreeSet::new(),
            active: 0,
            clusters: BTreeMap::new(),
            topics: BTreeMap::new(),
            requests: BTreeMap::new(),
            tunnels: BTreeMap::new(),
            timers: Timers::default(),
            next_key: 0,
            outputs: VecDeque::new(),
            wakeups: VecDeque::new(),
            pause_check: Vec::new(),
            memory_waiters: VecDeque::new(),
            stats: Stats::default(),
            stopped: false,
            draining: false,
            closing_reason: String::new(),
            mesh: None,
            scribe: None,
            next_cast: 0,
            unreachable: BTreeMap::new(),
            casts: castflow::CastFlow::default(),
            tree_keys: crate::scribe::TreeKeys::default(),
            held: held::Held::default(),
            routes_moved_at: None,
            ready: true,
            stopping: false,
        };
        // A lone node has nothing to converge with.
        node.outputs.push_back(Output::Event(Event::Ready));
        Ok(node)
    }

    /// A node of a network: it dials its seeds, joins the overlay, and is
    /// [`Event::Ready`] (the relay port may open) once the overlay has converged.
    pub fn networked(
        cfg: Config,
        mut mesh: MeshConfig,
        security: Security,
        seed: [u8; 32],
        now: Instant,
    ) -> Result<Node, ConfigError> {
        mesh.validate()?;
        mesh.scribe.validate()?;
        // The largest message a client may send must fit a link with what a node message
        // adds around it; otherwise it would be lost between nodes. (Every node of a
        // network must agree on this: a peer refuses a larger message by ending the link.)
        let need = usize::try_from(cfg.limits.max_message_size)
            .unwrap_or(usize::MAX)
            .saturating_add(wire::MAX_OVERHEAD);
        mesh.link.max_message = mesh.link.max_message.max(need);
        let mut node = Node::new(cfg, seed, now)?;
        node.outputs.clear();
        node.ready = false;
        let mut mesh_seed = [0u8; 32];
        rand::Rng::fill_bytes(&mut node.rng, &mut mesh_seed);
        node.scribe = Some(Scribe::new(mesh.scribe.clone(), now));
        // A quarter of a link's data queue per peer for multicasts leaves room for requests
        // beside them; producers wait once half a queue's worth waits here.
        let queue = mesh.link.max_data_queue;
        node.casts = castflow::CastFlow::new((queue / 4) as u64, queue / 2);
        node.mesh = Some(Mesh::new(mesh, security, mesh_seed, now));
        node.settle();
        Ok(node)
    }

    /// The mesh (links and overlay), if the node is networked.
    pub fn mesh(&self) -> Option<&Mesh> {
        self.mesh.as_ref()
    }

    /// The multicast trees, if the node is networked.
    pub fn scribe(&self) -> Option<&Scribe> {
        self.scribe.as_ref()
    }

    /// Feeds one input. Never fails: bad client bytes close that client and nothing else.
    pub fn handle(&mut self, now: Instant, input: Input<'_>) {
        // Time never runs backwards inside the core, whatever the driver's clock does.
        self.now = self.now.max(now);
        match input {
            Input::ClientConnected(conn) => self.on_connected(conn),
            Input::ClientData(conn, data) => self.on_data(conn, data),
            Input::ClientFlushed(conn, n) => self.on_flushed(conn, n),
            Input::ClientGone(conn) => self.close(conn, CloseReason::Gone),
            Input::Timeout => {
                self.on_timeout();
                let now = self.now;
                if let Some(m) = self.mesh.as_mut()
                    && m.poll_timeout().is_some_and(|t| t <= now)
                {
                    m.handle_timeout(now);
                }
                self.trees_timeout();
            }
            Input::Shutdown(reason) => self.shutdown(reason),
            Input::PeerConnected { link, dial, from } => {
                let now = self.now;
                if let Some(m) = self.mesh.as_mut() {
                    m.on_connected(now, link, dial, from);
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
            Input::PeerFlushed(link, n) => {
                if let Some(m) = self.mesh.as_mut() {
                    m.on_flushed(link, n);
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
            Input::Beacon { from, data } => {
                let now = self.now;
                if let Some(m) = self.mesh.as_mut() {
                    m.on_beacon(now, from, data);
                }
            }
            Input::Signed(link, signature) => {
                let now = self.now;
                if let Some(m) = self.mesh.as_mut() {
                    m.on_signed(now, link, signature);
                }
            }
        }
        self.settle();
    }

    /// The next thing for the driver to do; call until `None` after every `handle`.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When the node next wants [`Input::Timeout`]; `None` if it has no deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let relay = self.timers.next();
        let mesh = self.mesh.as_ref().and_then(Mesh::poll_timeout);
        let trees = self.scribe.as_ref().and_then(Scribe::poll_timeout);
        [relay, mesh, trees].into_iter().flatten().min()
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
        self.conns.map.len()
    }

    /// Clusters with members here, and topics with subscribers here.
    pub fn group_counts(&self) -> (usize, usize) {
        (self.clusters.len(), self.topics.len())
    }

    /// Bytes of multicasts waiting in this node for a peer's credit.
    pub fn casts_waiting_bytes(&self) -> usize {
        self.casts.waiting_bytes()
    }

    /// Multicast flow entries this node keeps per peer and group: (credit outstanding
    /// toward peers, credit owed to peers). Bounded however many groups come and go.
    pub fn cast_flow_entries(&self) -> (usize, usize) {
        self.casts.entries()
    }

    /// Bytes charged to the memory budget now.
    pub fn memory_used(&self) -> usize {
        self.conns.mem.used()
    }

    /// Moves the mesh's outputs to the node's, noting convergence.
    fn drain_mesh(&mut self) {
        // A node its seeds refused must not pass for a network of one: it stays unready
        // (relay port closed) and keeps retrying, loudly.
        let refused = self.mesh.as_ref().is_some_and(Mesh::refused_by_seeds);
        while let Some(out) = self.mesh.as_mut().and_then(Mesh::poll_output) {
            let out = match out {
                MeshOutput::Dial(d, addr) => Output::Dial(d, addr),
                MeshOutput::Transmit(l, b) => Output::PeerTransmit(l, b),
                MeshOutput::Close(l) => Output::PeerClose(l),
                MeshOutput::Beacon { to, data } => Output::Beacon { to, data },
                MeshOutput::Sign(l, s) => Output::Sign(l, s),
                MeshOutput::Event(e) => {
                    let converged = matches!(e, MeshEvent::Converged { .. });
                    self.outputs.push_back(Output::Event(Event::Mesh(e)));
                    if converged && !self.ready && !refused {
                        self.ready = true;
                        self.outputs.push_back(Output::Event(Event::Ready));
                    }
                    continue;
                }
            };
            self.outputs.push_back(out);
        }
    }

    fn on_connected(&mut self, conn: ConnId) {
        if self.stopped {
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
            self.close(oldest, CloseReason::Refused(why));
        }
        let deadline = self.now + self.cfg.handshake_timeout;
        self.conns.map.insert(conn, Session::new(conn, deadline));
        self.handshaking.insert((deadline, conn));
        self.timers.set(Timer::Handshake(conn), deadline);
        // Under memory pressure a new connection is not read either.
        self.pause_check.push(conn);
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
        let denial = if version != PROTOCOL_VERSION.as_bytes() {
            Some(format!(
                "Unsupported protocol. Client: {}. Iris: {PROTOCOL_VERSION}.",
                String::from_utf8_lossy(&version)
            ))
        } else if self.active >= self.cfg.max_clients {
            self.stats.clients_denied += 1;
            Some(format!(
                "Too many clients: this node serves at most {}.",
                self.cfg.max_clients
            ))
        } else {
            None
        };
        if let Some(reason) = denial {
            self.conns.send(
                conn,
                &NodePacket::Deny {
                    magic: Bytes::from_static(RELAY_MAGIC.as_bytes()),
                    reason: reason.as_str().into(),
                },
            );
            return self.close(conn, CloseReason::Refused(reason));
        }
        let Some(s) = self.conns.map.get_mut(&conn) else {
            return;
        };
        if let Phase::Handshake { deadline } = s.phase {
            self.timers.cancel(Timer::Handshake(conn));
            self.handshaking.remove(&(deadline, conn));
        }
        s.phase = Phase::Active;
        self.active += 1;
        if !cluster.is_empty() {
            // Kept for the connection's life: not in the read buffer it arrived in.
            let cluster = cluster.detached();
            s.cluster = Some(cluster.clone());
            let members = self.clusters.entry(cluster.clone()).or_default();
            members.push(conn);
            if members.len() == 1 {
                self.group_changed(Group::cluster(cluster.clone()), true);
            }
        }
        self.stats.clients_accepted += 1;
        self.conns.send(
            conn,
            &NodePacket::Init {
                magic: Bytes::from_static(RELAY_MAGIC.as_bytes()),
                version: Bytes::from_static(PROTOCOL_VERSION.as_bytes()),
            },
        );
        self.event(Event::ClientAttached { conn, cluster });
    }

    /// Carries out one packet of an active client. Returns the packet instead if its
    /// delivery must wait for a congested consumer (the caller holds it).
    fn on_packet(
        &mut self,
        conn: ConnId,
        packet: ClientPacket,
    ) -> Option<(ClientPacket, flow::Blocker)> {
        if let Some(blocker) = self.blocker(conn, &packet) {
            return Some((packet, blocker));
        }
        match packet {
            ClientPacket::Init { .. } => self.violation(conn, "INIT after the handshake".into()),
            ClientPacket::Close => self.close(conn, CloseReason::Graceful),
            ClientPacket::Broadcast { cluster, message } => {
                self.stats.broadcasts += 1;
                if let Some(members) = self.clusters.get(&cluster) {
                    self.conns.fan_out(
                        members,
                        &NodePacket::Broadcast {
                            message: message.clone(),
                        },
                    );
                }
                self.multicast(Group::cluster(cluster), message);
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
                if let Some(subscribers) = self.topics.get(&topic) {
                    let packet = NodePacket::Publish {
                        topic: topic.clone(),
                        event: event.clone(),
                    };
                    self.conns.fan_out(subscribers, &packet);
                }
                self.multicast(Group::topic(topic), event);
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
        None
    }

    fn subscribe(&mut self, conn: ConnId, topic: Name) {
        let Some(s) = self.conns.map.get_mut(&conn) else {
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
        // Kept for the subscription's life: not in the read buffer it arrived in.
        let topic = topic.detached();
        s.topics.insert(topic.clone());
        let subscribers = self.topics.entry(topic.clone()).or_default();
        subscribers.push(conn);
        if subscribers.len() == 1 {
            self.group_changed(Group::topic(topic), true);
        }
    }

    fn unsubscribe(&mut self, conn: ConnId, topic: &Name) {
        let Some(s) = self.conns.map.get_mut(&conn) else {
            return;
        };
        // Unsubscribing an unknown topic is ignored (the original dropped the connection).
        if s.topics.remove(topic) && remove_member(&mut self.topics, topic, conn) {
            self.group_changed(Group::topic(topic.clone()), false);
        }
    }

    fn on_timeout(&mut self) {
        while let Some(timer) = self.timers.pop_due(self.now) {
            match timer {
                Timer::Handshake(conn) => {
                    self.stats.handshake_timeouts += 1;
                    self.close(conn, CloseReason::Refused("handshake timed out".into()));
                }
                Timer::SlowConsumer(conn) => self.cut(conn, Cut::Lagging),
                Timer::Request(key) => self.expire_request(key),
                Timer::TunnelBuild(key) => self.expire_build(key),
                Timer::Held => self.release_held(),
                Timer::Drain => self.finish_shutdown(),
            }
        }
    }

    /// Stops taking connections and, while requests are in progress, waits for them (up
    /// to `shutdown_drain`, its members taking no new ones) before it closes its clients
    /// and leaves: a restart does not fail the work it was doing.
    fn shutdown(&mut self, reason: &str) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.closing_reason = reason.into();
        if self.requests.is_empty() || self.cfg.shutdown_drain.is_zero() {
            return self.finish_shutdown();
        }
        self.draining = true;
        self.stop_offering();
        self.timers
            .set(Timer::Drain, self.now + self.cfg.shutdown_drain);
    }

    /// Ends a drain once nothing is in progress any more.
    pub(super) fn check_drained(&mut self) {
        if self.draining && self.requests.is_empty() {
            self.finish_shutdown();
        }
    }

    /// The rest of the shutdown: clients answered and closed, peers told. Reached once:
    /// from `shutdown`, or from a drain (which this ends, with its timer).
    fn finish_shutdown(&mut self) {
        self.draining = false;
        self.timers.cancel(Timer::Drain);
        let reason = std::mem::take(&mut self.closing_reason);
        let reason = reason.as_str();
        // Every pending request gets its one REPLY before its connection closes.
        let keys: Vec<u64> = self.requests.keys().copied().collect();
        for key in keys {
            self.expire_request(key);
        }
        let conns: Vec<ConnId> = self.conns.map.keys().copied().collect();
        for conn in conns {
            let active = self.conns.map.get(&conn).is_some_and(Session::is_active);
            if active {
                self.conns.send(
                    conn,
                    &NodePacket::Close {
                        reason: reason.into(),
                    },
                );
            }
            self.close(conn, CloseReason::Shutdown);
        }
        // Multicasts waiting for credit leave before the links close.
        self.flush_casts();
        // Peers hear of the leave before the driver sees Stopped (once settled).
        let now = self.now;
        if let Some(m) = self.mesh.as_mut() {
            m.leave(now);
        }
        self.stopping = true;
    }

    /// Tells the client what it did wrong, then drops it.
    fn violation(&mut self, conn: ConnId, what: String) {
        self.stats.protocol_violations += 1;
        self.conns.send(
            conn,
            &NodePacket::Close {
                reason: what.as_str().into(),
            },
        );
        self.close(conn, CloseReason::Violation(what));
    }

    /// Cuts a consumer that does not keep up: what is still queued for it is dropped and
    /// its CLOSE goes right after what its driver already holds.
    fn cut(&mut self, conn: ConnId, why: Cut) {
        if !self.conns.map.contains_key(&conn) {
            return;
        }
        let (text, counter) = match why {
            Cut::Lagging => (
                format!(
                    "slow consumer: more than {} bytes unread for {} ms",
                    self.cfg.client_backlog_high,
                    self.cfg.slow_consumer_timeout.as_millis()
                ),
                &mut self.stats.cut_lagging,
            ),
            Cut::Cap => (
                format!(
                    "slow consumer: more than {} bytes unread",
                    self.cfg.max_client_backlog
                ),
                &mut self.stats.cut_backlog_cap,
            ),
            Cut::Memory => (
                "slow consumer: the node's memory budget ran out".to_string(),
                &mut self.stats.cut_memory,
            ),
        };
        *counter += 1;
        self.conns.discard_queued(conn);
        self.conns.send(
            conn,
            &NodePacket::Close {
                reason: text.as_str().into(),
            },
        );
        self.close(conn, CloseReason::SlowConsumer(text));
    }

    /// Forgets a connection: memberships, subscriptions, requests, tunnels, the producers
    /// waiting for it. Sends CLOSE "" for a graceful close; other reasons send whatever the
    /// caller already queued.
    fn close(&mut self, conn: ConnId, reason: CloseReason) {
        if reason == CloseReason::Graceful {
            self.conns.send(
                conn,
                &NodePacket::Close {
                    reason: Name::default(),
                },
            );
        }
        let Some(s) = self.conns.map.get(&conn) else {
            return;
        };
        // What is queued goes out before the socket closes, unless the client was not
        // reading anyway: then it would only pin memory in the driver.
        if s.outbox.backlog() > self.cfg.client_backlog_high && reason != CloseReason::Gone {
            self.conns.discard_queued(conn);
            if reason != CloseReason::Graceful {
                // Keep the reason it is owed: the CLOSE goes right after what is in flight.
                if let CloseReason::Violation(why) | CloseReason::SlowConsumer(why) = &reason {
                    self.conns.send(
                        conn,
                        &NodePacket::Close {
                            reason: why.as_str().into(),
                        },
                    );
                }
            }
        }
        let mut transmits = VecDeque::new();
        if reason != CloseReason::Gone
            && let Some(s) = self.conns.map.get_mut(&conn)
        {
            while let Some(b) = s.outbox.poll_transmit_all() {
                transmits.push_back(Output::Transmit(conn, b));
            }
        }
        let Some(mut s) = self.conns.remove(conn) else {
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
        }
        self.forget_flow(&mut s);
        if let Some(cluster) = s.cluster.take()
            && remove_member(&mut self.clusters, &cluster, conn)
        {
            self.group_changed(Group::cluster(cluster), false);
        }
        for topic in std::mem::take(&mut s.topics) {
            if remove_member(&mut self.topics, &topic, conn) {
                self.group_changed(Group::topic(topic), false);
            }
        }
        self.forget_requests(&mut s);
        self.forget_tunnels(&mut s);
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

    fn event(&mut self, e: Event) {
        self.outputs.push_back(Output::Event(e));
    }

    fn next_key(&mut self) -> u64 {
        self.next_key += 1;
        self.next_key
    }
}

/// Removes `conn` from the list under `name`, dropping the entry once empty so that names
/// nobody uses do not accumulate; true if it was the last.
fn remove_member(map: &mut BTreeMap<Name, Vec<ConnId>>, name: &Name, conn: ConnId) -> bool {
    if let Some(list) = map.get_mut(name) {
        list.retain(|&c| c != conn);
        if list.is_empty() {
            map.remove(name);
            return true;
        }
    }
    false
}
