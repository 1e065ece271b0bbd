//! The node: a composition of parts that own their state and their timers, and a router
//! between them (see `docs/architecture.md`).
//!
//! | part | owns |
//! |---|---|
//! | `sessions` | relay connections: input, output, handshakes, the memory budget, held producers |
//! | `groups` | which local clients are members of which cluster, subscribers of which topic |
//! | `requests` | requests in progress, their deadlines, the one REPLY each |
//! | `tunnels` | tunnels, their builds, windows and queues |
//! | `castflow` | per-group credit windows of multicasts between nodes |
//! | `trees` | the Scribe trees, where each multicast and anycast goes, messages held for a tree |
//! | [`Mesh`] | links to other nodes and the overlay over them |
//!
//! A part changes only its own state. What it needs of another it asks as an effect
//! (`effect.rs`), which the node routes at once (`router.rs`); what it needs to read of
//! another it is handed as a value or a read-only view. Drivers see one machine: [`Input`]
//! in, [`Output`] out, one deadline.

mod api;
mod castflow;
mod config;
mod effect;
mod groups;
mod ids;
mod lifecycle;
mod peers;
mod relay;
mod requests;
mod router;
mod sessions;
mod stats;
mod tether;
mod trees;
mod tunnels;
// Visible to the crate for the fuzz harnesses (`fuzzing/node_wire.rs`, `fuzzing/peer.rs`).
pub(crate) mod wire;

#[cfg(test)]
mod discovery_tests;
#[cfg(test)]
mod fairness_tests;
#[cfg(test)]
mod join_tests;
#[cfg(test)]
mod network_tests;
#[cfg(test)]
mod repair_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tether_tests;

pub use api::{CloseReason, Event, Input, Output};
pub use config::{Config, ConfigError};
pub use ids::ConnId;
pub use stats::Stats;

pub(crate) use wire::MAX_OVERHEAD;

use crate::mesh::{LinkId, Mesh, MeshConfig, Security};
use crate::time::Instant;
use bytes::BytesMut;
use castflow::CastFlow;
use effect::Effects;
use groups::Groups;
use ids::KeyCounter;
use lifecycle::Lifecycle;
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use requests::Requests;
use sessions::Sessions;
use std::collections::VecDeque;
use trees::Trees;
use tunnels::Tunnels;

/// What a node reports of itself: its place in the network (nothing for a lone node).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// This node's overlay id, if it is networked.
    pub id: Option<crate::overlay::NodeId>,
    /// Peers the overlay knows.
    pub peers: usize,
    /// The overlay has converged (a lone node always has).
    pub converged: bool,
    /// Links open or opening.
    pub links: usize,
    /// Bytes of data queued in links and not yet sealed for their sockets.
    pub link_queued: usize,
    /// Signatures made with the network key (one per genuine link).
    pub signatures: u64,
    /// Multicast trees this node takes part in.
    pub trees: usize,
    /// The mesh's counters.
    pub mesh: Option<crate::mesh::MeshStats>,
}

/// The parts of a node of a network: its links and overlay, the trees over them, and the
/// flow of multicasts between nodes.
#[derive(Debug)]
struct Network {
    mesh: Mesh,
    trees: Trees,
    casts: CastFlow,
}

/// An Iris node as a state machine. See the crate docs for the drive loop.
#[derive(Debug)]
pub struct Node {
    cfg: Config,
    now: Instant,
    /// Every random choice (which member takes a request, which way an anycast goes).
    rng: ChaCha8Rng,
    /// This node's keys for requests and tunnels.
    keys: KeyCounter,
    sessions: Sessions,
    groups: Groups,
    requests: Requests,
    tunnels: Tunnels,
    /// `None` for a lone node.
    net: Option<Network>,
    life: Lifecycle,
    /// The router's queue (see `effect.rs`).
    fx: Effects,
    outputs: VecDeque<Output>,
}

impl Node {
    /// A node at time `now`, with all randomness drawn from `seed`.
    pub fn new(cfg: Config, seed: [u8; 32], now: Instant) -> Result<Node, ConfigError> {
        cfg.validate()?;
        let mut node = Node {
            sessions: Sessions::new(&cfg),
            groups: Groups::new(cfg.max_subscriptions_per_client),
            requests: Requests::new(cfg.max_pending_requests),
            tunnels: Tunnels::new(&cfg),
            cfg,
            now,
            rng: ChaCha8Rng::from_seed(seed),
            keys: KeyCounter::default(),
            net: None,
            life: Lifecycle::default(),
            fx: Effects::default(),
            outputs: VecDeque::new(),
        };
        // A lone node has nothing to converge with.
        node.life.ready = true;
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
            .saturating_add(MAX_OVERHEAD);
        mesh.link.max_message = mesh.link.max_message.max(need);
        let mut node = Node::new(cfg, seed, now)?;
        node.outputs.clear();
        node.life.ready = false;
        let mut mesh_seed = [0u8; 32];
        rand::Rng::fill_bytes(&mut node.rng, &mut mesh_seed);
        // A sixteenth of a link's data queue (1 MiB) per peer and group for multicasts: what
        // a window lets into a link is ahead of any request sent after it (a TCP stream
        // keeps its order), so a larger window costs requests beside a flood that much
        // wait (4 MiB: 18 ms at 360 MB/s) and gains no throughput on a LAN (one group's
        // flow is bounded at a window per round trip: 1 GB/s at 1 ms). Producers wait once
        // half a queue's worth waits here.
        let queue = mesh.link.max_data_queue;
        let grace = node.cfg.slow_consumer_grace;
        let mut trees = Trees::new(mesh.scribe.clone(), now);
        // Trees may take a quarter of the memory budget; clients keep the rest.
        trees.set_max_bytes(node.cfg.max_memory / 4);
        node.net = Some(Network {
            trees,
            casts: CastFlow::new((queue / 16) as u64, queue / 2, grace),
            mesh: Mesh::new(mesh, security, mesh_seed, now),
        });
        node.settle();
        Ok(node)
    }

    /// Feeds one input. Never fails: bad client bytes close that client and nothing else.
    pub fn handle(&mut self, now: Instant, input: Input<'_>) {
        // Time never runs backwards inside the core, whatever the driver's clock does.
        self.now = self.now.max(now);
        if let Some(n) = self.net.as_mut() {
            n.casts.now = self.now;
        }
        match input {
            Input::ClientConnected(conn) => self.on_connected(conn),
            Input::ClientData(conn, data) => self.on_client_data(conn, data),
            Input::ClientRead(conn, buf) => self.on_client_read(conn, buf),
            Input::ClientFlushed(conn, n) => self.on_client_flushed(conn, n),
            Input::ClientGone(conn) => self.close_client(conn, CloseReason::Gone),
            Input::Timeout => self.on_timeout(),
            Input::Shutdown(reason) => self.shutdown(reason),
            peer => self.on_peer_input(peer),
        }
        self.settle();
    }

    /// The next thing for the driver to do; call until `None` after every `handle`.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        crate::queue::pop_front(&mut self.outputs)
    }

    /// When the node next wants [`Input::Timeout`]; `None` if it has no deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let parts = [
            self.sessions.poll_timeout(),
            self.requests.poll_timeout(),
            self.tunnels.poll_timeout(),
            self.life.poll_timeout(),
        ];
        let net = self.net.as_ref().map_or([None, None, None], |n| {
            [
                n.mesh.poll_timeout(),
                n.trees.poll_timeout(),
                n.casts.poll_timeout(),
            ]
        });
        parts.into_iter().chain(net).flatten().min()
    }

    /// A buffer to read client `conn`'s next bytes into, with room for `room` more at least:
    /// the client's own input buffer, lent (what waits undecoded stays at its front), so
    /// that bytes read into it are never copied on their way in. Give it back with
    /// [`Input::ClientRead`] once read into (also if nothing was read), before lending the
    /// same client's again. Meanwhile the client's input is charged as it was.
    pub fn lend_input(&mut self, conn: ConnId, room: usize) -> BytesMut {
        self.sessions.lend_input(conn, room)
    }

    /// A buffer to read peer link `link`'s next bytes into, with room for `room` more at
    /// least: the link's own read buffer, lent (what waits undecoded stays at its front),
    /// so that records are opened where they were read. Give it back with
    /// [`Input::PeerRead`] once read into (also if nothing was read), before any other
    /// bytes of that link.
    pub fn lend_peer_input(&mut self, link: LinkId, room: usize) -> BytesMut {
        match self.net.as_mut() {
            Some(n) => n.mesh.lend_input(link, room),
            None => BytesMut::with_capacity(room),
        }
    }

    /// Counters since the node started.
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        s.absorb(&self.sessions.stats);
        s.absorb(&self.requests.stats);
        s.absorb(&self.tunnels.stats);
        if let Some(n) = &self.net {
            s.absorb(&n.trees.counters());
            s.absorb(&n.casts.stats);
        }
        s
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// What the node reports of itself (for metrics and status pages).
    pub fn status(&self) -> NodeStatus {
        let Some(n) = &self.net else {
            return NodeStatus {
                converged: true,
                ..NodeStatus::default()
            };
        };
        NodeStatus {
            id: Some(n.mesh.overlay().id()),
            peers: n.mesh.overlay().peer_count(),
            converged: n.mesh.overlay().is_converged(),
            links: n.mesh.link_count(),
            link_queued: n.mesh.queued_bytes(),
            signatures: n.mesh.signatures(),
            trees: n.trees.scribe().tree_count(),
            mesh: Some(n.mesh.stats().clone()),
        }
    }

    /// Every peer the overlay keeps, with its link's state (empty for a lone node).
    pub fn peer_statuses(&self) -> Vec<crate::mesh::PeerStatus> {
        self.net
            .as_ref()
            .map_or_else(Vec::new, |n| n.mesh.peer_statuses())
    }

    /// The mesh (links and overlay), if the node is networked.
    #[cfg(any(test, feature = "inspect"))]
    pub fn mesh(&self) -> Option<&Mesh> {
        self.net.as_ref().map(|n| &n.mesh)
    }

    /// The multicast trees, if the node is networked.
    #[cfg(any(test, feature = "inspect"))]
    pub fn scribe(&self) -> Option<&crate::scribe::Scribe> {
        self.net.as_ref().map(|n| n.trees.scribe())
    }

    /// Connections currently known (handshaking or active).
    pub fn client_count(&self) -> usize {
        self.sessions.count()
    }

    /// Clusters with members here, and topics with subscribers here.
    pub fn group_counts(&self) -> (usize, usize) {
        self.groups.counts()
    }

    /// Bytes of multicasts waiting in this node for a peer's credit.
    pub fn casts_waiting_bytes(&self) -> usize {
        self.net.as_ref().map_or(0, |n| n.casts.waiting_bytes())
    }

    /// Bytes of this node's clients' multicasts kept for tree nodes that may ask for them
    /// again (bounded: `trees::sent`).
    pub fn casts_kept_bytes(&self) -> usize {
        self.net.as_ref().map_or(0, |n| n.trees.kept_bytes())
    }

    /// Multicast flow entries this node keeps per peer and group: (credit outstanding
    /// toward peers, credit owed to peers). Bounded however many groups come and go.
    pub fn cast_flow_entries(&self) -> (usize, usize) {
        self.net.as_ref().map_or((0, 0), |n| n.casts.entries())
    }

    /// Bytes charged to the memory budget now: what the node holds for its clients, and
    /// its group and tree state (estimated, see [`crate::TREE_BYTES`]).
    pub fn memory_used(&self) -> usize {
        self.sessions.memory_used()
    }

    /// The part of [`Node::memory_used`] that is not group or tree state: what the node
    /// holds for its clients.
    pub fn client_memory_used(&self) -> usize {
        self.sessions.client_memory_used()
    }
}
