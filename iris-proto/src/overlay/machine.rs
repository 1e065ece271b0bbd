//! The overlay as a state machine: joining, liveness, repair, leaving and convergence.
//!
//! Peers are named by id; the caller (the node, or the simulator) delivers
//! [`OverlayMsg`]s between them and feeds time in.
//!
//! - Join: a new node sends JOIN to any known node; it is routed toward the joiner's id, and
//!   every node on the path sends the joiner the routing-table rows it shares with it; the
//!   last one (the closest) adds its leaf set. The joiner then pings everyone it learned of.
//! - Liveness: leaves are pinged each period, table entries every few; a peer silent for
//!   `misses` of its periods is dead: forgotten, not probed on hearsay for a while, and the
//!   leaf set repaired by asking the leaves for theirs. Any message from a node itself
//!   brings it back at once (it restarted, or its link healed).
//! - Gossip: a pong carries the responder's leaf set whenever it changed since it last told
//!   that peer, so leaf sets converge without a flood of announcements.
//! - Trust: an id heard of second-hand (join state, gossip, repair) is only probed; it
//!   enters the leaf set or the table when it answers itself. Stale gossip about a dead node
//!   therefore never brings it back, however long it circulates.
//! - Leave: a leaving node tells its peers, who forget and repair at once.
//! - Healing: forgotten peers wait in a small graveyard; now and then one is pinged, and if
//!   it answers (a partition healed, a link came back) it is learned again, and the next
//!   self-lookup through it merges the two rings.
//! - Convergence: no change for `boot_quiet` after start, then `change_quiet` after each change.

use super::{LeafSet, NodeId, RoutingTable, next_hop};
use crate::time::Instant;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Forgotten peers remembered for healing.
const GRAVEYARD: usize = 32;

/// Timers and sizes of the overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayConfig {
    /// Leaf set size (half on each side).
    pub leaf_set_size: usize,
    /// Ping period.
    pub heartbeat_period: Duration,
    /// Periods without a pong before a peer is dead.
    pub heartbeat_misses: u32,
    /// Quiet time after boot before the node counts as converged.
    pub boot_quiet: Duration,
    /// Quiet time after a later change.
    pub change_quiet: Duration,
    /// Routing-table entries (not leaves) are pinged every this many periods: they matter
    /// less for correctness than leaves, and there are more of them.
    pub table_ping_every: u32,
    /// Every this many periods a node routes a lookup of its own id through the overlay
    /// and learns its neighbourhood afresh: it heals a join that went astray under churn.
    pub self_lookup_every: u32,
    /// Whether leaf sets are repaired after a death and refreshed by gossip (tests turn it
    /// off to show the oracle catching the damage).
    pub repair: bool,
}

impl Default for OverlayConfig {
    fn default() -> OverlayConfig {
        OverlayConfig {
            leaf_set_size: 16,
            heartbeat_period: Duration::from_secs(3),
            heartbeat_misses: 3,
            boot_quiet: Duration::from_secs(10),
            change_quiet: Duration::from_secs(3),
            table_ping_every: 3,
            self_lookup_every: 10,
            repair: true,
        }
    }
}

/// What overlay nodes say to each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlayMsg {
    /// Route toward `joiner`'s id; everyone on the path answers with [`OverlayMsg::JoinState`].
    Join {
        /// The new node.
        joiner: NodeId,
    },
    /// State for a joiner: table rows shared with it, and the leaf set from the last hop.
    JoinState {
        /// Ids from the sender's rows up to its shared prefix with the joiner.
        rows: Vec<NodeId>,
        /// The sender's leaf set, if it is the joiner's closest node.
        leaves: Option<Vec<NodeId>>,
    },
    /// Liveness probe.
    Ping,
    /// Liveness answer, with the leaf set when it changed since last told.
    Pong {
        /// The responder's leaf set.
        leaves: Option<Vec<NodeId>>,
    },
    /// Asks for the receiver's leaf set (repair).
    LeafRequest,
    /// The leaf set asked for.
    LeafReply {
        /// The sender's leaf set.
        leaves: Vec<NodeId>,
    },
    /// The sender is leaving for good.
    Leave,
}

impl OverlayMsg {
    /// Bytes on the wire in the plain framing, header included.
    pub fn wire_size(&self) -> usize {
        super::wire::size(self)
    }
}

/// What the overlay reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlayEvent {
    /// No routing change for the quiet period.
    Converged {
        /// Peers known.
        peers: usize,
    },
    /// A peer was found dead or left.
    PeerDown(NodeId),
    /// The node has joined through a contact but knows nobody: the join was lost, or the
    /// contact is gone. It retries through the same contact each period; the driver may
    /// offer another (discovery, seeds) with [`Overlay::join`].
    Alone,
}

#[derive(Debug, Clone)]
struct Peer {
    last_heard: Instant,
    /// Leaf-set version last sent to this peer.
    told: u64,
}

/// One node's overlay state machine.
#[derive(Debug)]
pub struct Overlay {
    own: NodeId,
    cfg: OverlayConfig,
    leaves: LeafSet,
    table: RoutingTable,
    /// Every peer in the leaf set or the table, with liveness.
    peers: BTreeMap<NodeId, Peer>,
    /// Recently dead or departed peers, not probed on hearsay until then (they answer
    /// nothing, and gossip about them circulates for a while).
    dead: BTreeMap<NodeId, Instant>,
    /// Ids heard of second-hand and pinged, until when their answer is awaited.
    probing: BTreeMap<NodeId, Instant>,
    /// Peers forgotten for silence, oldest first, probed now and then (bounded).
    graveyard: VecDeque<NodeId>,
    /// The contact of the last join, retried while the node knows nobody.
    contact: Option<NodeId>,
    leaf_version: u64,
    outbox: VecDeque<(NodeId, OverlayMsg)>,
    events: VecDeque<OverlayEvent>,
    next_ping: Instant,
    /// Heartbeat periods elapsed.
    ticks: u64,
    last_change: Instant,
    quiet: Duration,
    converged: bool,
    left: bool,
}

impl Overlay {
    /// A node alone on its ring.
    pub fn new(own: NodeId, cfg: OverlayConfig, now: Instant) -> Overlay {
        Overlay {
            own,
            leaves: LeafSet::new(own, cfg.leaf_set_size),
            table: RoutingTable::new(own),
            peers: BTreeMap::new(),
            dead: BTreeMap::new(),
            probing: BTreeMap::new(),
            graveyard: VecDeque::new(),
            contact: None,
            leaf_version: 0,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            next_ping: now + cfg.heartbeat_period,
            ticks: 0,
            last_change: now,
            quiet: cfg.boot_quiet,
            converged: false,
            left: false,
            cfg,
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.own
    }

    /// The leaf set.
    pub fn leaves(&self) -> &LeafSet {
        &self.leaves
    }

    /// The routing table.
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// Peers known (leaf set and table).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// True once quiet for the convergence period.
    pub fn is_converged(&self) -> bool {
        self.converged
    }

    /// Where a message for `key` goes next; `None`: here.
    pub fn next_hop(&self, key: NodeId) -> Option<NodeId> {
        next_hop(self.own, &self.leaves, &self.table, key)
    }

    /// Joins the ring through `contact`, any node already on it.
    pub fn join(&mut self, _now: Instant, contact: NodeId) {
        self.contact = Some(contact);
        self.send(contact, OverlayMsg::Join { joiner: self.own });
    }

    /// Leaves for good: peers are told and repair at once.
    pub fn leave(&mut self) {
        let peers: Vec<NodeId> = self.peers.keys().copied().collect();
        for p in peers {
            self.send(p, OverlayMsg::Leave);
        }
        self.left = true;
    }

    /// A message from `from`.
    pub fn handle_message(&mut self, now: Instant, from: NodeId, msg: OverlayMsg) {
        if self.left {
            return;
        }
        if let Some(p) = self.peers.get_mut(&from) {
            p.last_heard = now;
        }
        // Any message but a farewell is first-hand proof that its sender is alive, even one
        // declared dead a moment ago (it restarted, or its link or partition healed).
        if !matches!(msg, OverlayMsg::Leave) {
            self.probing.remove(&from);
            self.dead.remove(&from);
            let revived = !self.peers.contains_key(&from) && self.graveyard.contains(&from);
            self.learn(now, from);
            if revived && self.cfg.repair {
                // A peer given up for dead answers: the rings may have been apart. Look
                // ourselves up through it now rather than at the next scheduled lookup.
                self.graveyard.retain(|&g| g != from);
                self.send(from, OverlayMsg::Join { joiner: self.own });
            }
        }
        match msg {
            OverlayMsg::Join { joiner } => self.on_join(now, joiner),
            OverlayMsg::JoinState { rows, leaves } => {
                for id in rows.into_iter().chain(leaves.into_iter().flatten()) {
                    self.hear_of(now, id);
                }
            }
            OverlayMsg::Ping => {
                let leaves = self.leaves_for(from);
                self.send(from, OverlayMsg::Pong { leaves });
            }
            OverlayMsg::Pong { leaves } => {
                if self.cfg.repair {
                    for id in leaves.into_iter().flatten() {
                        self.hear_of(now, id);
                    }
                }
            }
            OverlayMsg::LeafRequest => {
                let leaves = self.leaves.members().collect();
                self.send(from, OverlayMsg::LeafReply { leaves });
            }
            OverlayMsg::LeafReply { leaves } => {
                for id in leaves {
                    self.hear_of(now, id);
                }
            }
            OverlayMsg::Leave => self.forget(now, from, false),
        }
    }

    /// Time passed: pings, deaths, convergence.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.left {
            return;
        }
        self.dead.retain(|_, until| *until > now);
        self.probing.retain(|_, until| *until > now);
        if now >= self.next_ping {
            self.next_ping = now + self.cfg.heartbeat_period;
            self.ticks += 1;
            let every = u64::from(self.cfg.table_ping_every.max(1));
            let leaf_limit = self.cfg.heartbeat_period * self.cfg.heartbeat_misses;
            let table_limit = leaf_limit * self.cfg.table_ping_every.max(1);
            let silent: Vec<NodeId> = self
                .peers
                .iter()
                .filter(|(id, p)| {
                    let limit = if self.leaves.contains(**id) {
                        leaf_limit
                    } else {
                        table_limit
                    };
                    now.saturating_duration_since(p.last_heard) > limit
                })
                .map(|(&id, _)| id)
                .collect();
            for id in silent {
                self.forget(now, id, true);
            }
            let table_turn = self.ticks % every == 0;
            let peers: Vec<NodeId> = self
                .peers
                .keys()
                .copied()
                .filter(|&p| table_turn || self.leaves.contains(p))
                .collect();
            for p in peers {
                self.send(p, OverlayMsg::Ping);
            }
            if self.peers.is_empty() {
                if let Some(contact) = self.contact {
                    self.send(contact, OverlayMsg::Join { joiner: self.own });
                    self.events.push_back(OverlayEvent::Alone);
                }
            }
            let lookup = u64::from(self.cfg.self_lookup_every.max(1));
            if self.ticks % lookup == lookup / 2 {
                self.probe_graveyard(now);
            }
            if self.cfg.repair && self.ticks % lookup == 0 && !self.peers.is_empty() {
                // Rotate through the peers so that lookups start from all over the ring.
                let i = (self.ticks / lookup) as usize % self.peers.len();
                if let Some(&via) = self.peers.keys().nth(i) {
                    self.send(via, OverlayMsg::Join { joiner: self.own });
                }
            }
        }
        if !self.converged && now.saturating_duration_since(self.last_change) >= self.quiet {
            self.converged = true;
            self.events.push_back(OverlayEvent::Converged {
                peers: self.peers.len(),
            });
        }
    }

    /// The next message to send.
    #[must_use]
    pub fn poll_send(&mut self) -> Option<(NodeId, OverlayMsg)> {
        self.outbox.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<OverlayEvent> {
        self.events.pop_front()
    }

    /// When [`Overlay::handle_timeout`] is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.left {
            return None;
        }
        let settle = (!self.converged).then(|| self.last_change + self.quiet);
        Some(settle.map_or(self.next_ping, |s| s.min(self.next_ping)))
    }

    fn on_join(&mut self, now: Instant, joiner: NodeId) {
        let next = self.next_hop(joiner).filter(|&n| n != joiner);
        let prefix = self.own.shared_prefix(joiner);
        let mut rows: Vec<NodeId> = (0..=prefix.min(super::id::DIGITS - 1))
            .flat_map(|r| self.table.row(r).iter().flatten().copied())
            .collect();
        rows.push(self.own);
        let leaves = next.is_none().then(|| self.leaves.members().collect());
        self.send(joiner, OverlayMsg::JoinState { rows, leaves });
        match next {
            Some(hop) => self.send(hop, OverlayMsg::Join { joiner }),
            // The closest node learns the joiner last, so the join is not routed to it.
            None => self.hear_of(now, joiner),
        }
    }

    /// Someone mentioned `id`: if it would be useful, ask it directly; it is learned when
    /// it answers.
    fn hear_of(&mut self, now: Instant, id: NodeId) {
        if id == self.own
            || self.peers.contains_key(&id)
            || self.dead.contains_key(&id)
            || self.probing.contains_key(&id)
            || !(self.leaves.wants(id) || self.table.wants(id))
        {
            return;
        }
        let patience = self.cfg.heartbeat_period * self.cfg.heartbeat_misses;
        self.probing.insert(id, now + patience);
        self.send(id, OverlayMsg::Ping);
    }

    /// Offers a node that has just spoken to us to the leaf set and the table; tracks it if
    /// either keeps it.
    fn learn(&mut self, now: Instant, id: NodeId) {
        if id == self.own {
            return;
        }
        let leaf = self.leaves.insert(id);
        let table = self.table.insert(id);
        if leaf {
            self.leaf_version += 1;
        }
        if leaf || table {
            self.peers.entry(id).or_insert(Peer {
                last_heard: now,
                told: 0,
            });
            self.changed(now);
        }
    }

    /// Pings the oldest forgotten peer whose tombstone has expired; it goes to the back of
    /// the graveyard, so every entry gets its turn.
    fn probe_graveyard(&mut self, now: Instant) {
        for _ in 0..self.graveyard.len() {
            let Some(id) = self.graveyard.pop_front() else {
                return;
            };
            if self.peers.contains_key(&id) {
                continue; // already back
            }
            self.graveyard.push_back(id);
            if !self.dead.contains_key(&id) {
                let patience = self.cfg.heartbeat_period * self.cfg.heartbeat_misses;
                self.probing.insert(id, now + patience);
                self.send(id, OverlayMsg::Ping);
                return;
            }
        }
    }

    /// Drops a dead (`silent`) or departed peer and repairs.
    fn forget(&mut self, now: Instant, id: NodeId, silent: bool) {
        let was_leaf = self.leaves.remove(id);
        let was_entry = self.table.remove(id);
        let known = self.peers.remove(&id).is_some();
        let detection = self.cfg.heartbeat_period * (self.cfg.heartbeat_misses + 2);
        self.dead.insert(id, now + detection * 2);
        // Only the silent go to the graveyard: a node that said goodbye is not coming back.
        if silent && known {
            self.graveyard.retain(|&g| g != id);
            self.graveyard.push_back(id);
            if self.graveyard.len() > GRAVEYARD {
                self.graveyard.pop_front();
            }
        }
        if !(was_leaf || was_entry) {
            return;
        }
        self.events.push_back(OverlayEvent::PeerDown(id));
        self.changed(now);
        if was_leaf {
            self.leaf_version += 1;
            if self.cfg.repair {
                // The surviving leaves know who lies beyond the gap.
                let leaves: Vec<NodeId> = self.leaves.members().collect();
                for l in leaves {
                    self.send(l, OverlayMsg::LeafRequest);
                }
            }
        }
    }

    fn leaves_for(&mut self, to: NodeId) -> Option<Vec<NodeId>> {
        // Only neighbours need our leaf set; table entries live elsewhere on the ring.
        if !self.leaves.contains(to) {
            return None;
        }
        let version = self.leaf_version;
        let p = self.peers.get_mut(&to)?;
        if p.told == version {
            return None;
        }
        p.told = version;
        Some(self.leaves.members().collect())
    }

    fn changed(&mut self, now: Instant) {
        self.last_change = now;
        if self.converged {
            self.converged = false;
            self.quiet = self.cfg.change_quiet;
        }
    }

    fn send(&mut self, to: NodeId, msg: OverlayMsg) {
        self.outbox.push_back((to, msg));
    }
}
