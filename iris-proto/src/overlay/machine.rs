//! The overlay as a state machine: joining, liveness, repair, leaving and convergence.
//!
//! Peers are named by [`Contact`]s (id and address); the caller (the node's mesh) delivers
//! [`OverlayMsg`]s between them, dialing addresses as needed, and feeds time in.
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
//! - Versions: every contact carries its node's epoch (incarnation). A message from an
//!   older epoch than the one known is a zombie's and is ignored; a newer one means the
//!   node restarted, and it is told our leaf set afresh. Gossip about a dead node of the
//!   epoch that died is ignored however long it circulates, while news of a later epoch
//!   (a restart) is probed at once.
//! - Leave: a leaving node tells its peers, who forget and repair at once.
//! - Healing: forgotten peers wait in a small graveyard; now and then one is pinged, and if
//!   it answers (a partition healed, a link came back) it is learned again, and the next
//!   self-lookup through it merges the two rings.
//! - Convergence: no change for `boot_quiet` after start while alone (a lone node waits to
//!   be found), `change_quiet` once in a network (its join answered, or joined by others),
//!   and `change_quiet` after each later change.

use super::graveyard::Graveyard;
use super::routing_table::Offer;
use super::rtt::{RttSpread, smoothed_rtt};
use super::vouch::Vouches;
use super::{Contact, LeafSet, NodeId, RoutingTable, next_hop};
use crate::time::Instant;
use crate::timer::Timers;
use hearsay::Suspect;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

mod hearsay;

/// The overlay's deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The heartbeat period: pings, deaths, lookups.
    Ping,
    /// Quiet for the convergence period since the last change.
    Settle,
}

/// Timers and sizes of the overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayConfig {
    /// Leaf set size (half on each side).
    pub leaf_set_size: usize,
    /// Ping period.
    pub heartbeat_period: Duration,
    /// Periods without a pong before a peer is dead.
    pub heartbeat_misses: u32,
    /// Quiet time after boot before a node still alone counts as converged (a network of
    /// one); a node whose join was answered, or that others joined, waits `change_quiet`.
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
        joiner: Contact,
    },
    /// State for a joiner: table rows shared with it, and the leaf set from the last hop.
    JoinState {
        /// Nodes from the sender's rows up to its shared prefix with the joiner.
        rows: Vec<Contact>,
        /// The sender's leaf set, if it is the joiner's closest node.
        leaves: Option<Vec<Contact>>,
    },
    /// Liveness probe, with the sender's leaf set when it changed since last told (two
    /// neighbours ping each other only one way, so pings gossip too).
    Ping {
        /// The sender's leaf set.
        leaves: Option<Vec<Contact>>,
        /// The sender's smoothed round trip to the receiver, if it measured one: of two
        /// neighbours only one pings, and the other plans its requests with this.
        rtt: Option<Duration>,
    },
    /// Liveness answer, with the leaf set when it changed since last told.
    Pong {
        /// The responder's leaf set.
        leaves: Option<Vec<Contact>>,
    },
    /// Asks for the receiver's leaf set (repair).
    LeafRequest,
    /// The leaf set asked for.
    LeafReply {
        /// The sender's leaf set.
        leaves: Vec<Contact>,
    },
    /// The sender is leaving for good.
    Leave,
}

impl OverlayMsg {
    /// Bytes on the wire.
    pub fn wire_size(&self) -> usize {
        super::wire::size(self)
    }
}

/// What the overlay is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlayInput {
    /// A message from a peer.
    Message(Contact, OverlayMsg),
    /// Join the ring through this contact, any node already on it.
    Join(Contact),
    /// Leave for good: peers are told and repair at once.
    Leave,
    /// Another node answered where `id` was dialed (at `addr`): if `id` is still known to
    /// live there, it is gone for certain (a process owns its port) and is forgotten now
    /// rather than after its missed heartbeats. (If it restarted elsewhere, its new epoch
    /// moved it, and it is kept.)
    Replaced {
        /// The node that was expected.
        id: NodeId,
        /// Where it was dialed.
        addr: Option<SocketAddr>,
    },
    /// The deadline from [`Overlay::poll_timeout`] passed: pings, deaths, convergence.
    Timeout,
}

/// What the overlay asks of its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlayOutput {
    /// Send this message to this peer.
    Send(Contact, OverlayMsg),
    /// Something happened.
    Event(OverlayEvent),
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
    /// A tracked peer stayed silent for its misses and was taken for dead: whatever link
    /// to it is open carries nothing (the peer is gone, or the path is a black hole) and
    /// may stand in the way of the fresh link it dials when it comes back.
    Silent(NodeId),
    /// This node's heartbeat came this late: it was stopped (SIGSTOP, a suspended VM), so
    /// its peers got a fresh chance instead of being taken for dead.
    Resumed {
        /// How long past its due time the heartbeat came.
        late: Duration,
    },
}

#[derive(Debug, Clone)]
struct Peer {
    addr: SocketAddr,
    epoch: u64,
    last_heard: Instant,
    /// When it last pinged us.
    pinged_at: Option<Instant>,
    /// Leaf-set version last sent to this peer.
    told: u64,
    /// When we last pinged it, until its pong; and the round trip that pong measured.
    ping_sent: Option<Instant>,
    rtt: Option<Duration>,
}

/// A forgotten peer, not probed on hearsay until `until` unless the news is of a later epoch.
#[derive(Debug, Clone, Copy)]
struct Tombstone {
    until: Instant,
    epoch: u64,
}

/// One node's overlay state machine.
#[derive(Debug)]
pub struct Overlay {
    own: Contact,
    cfg: OverlayConfig,
    leaves: LeafSet,
    table: RoutingTable,
    /// Every peer in the leaf set or the table, with liveness.
    peers: BTreeMap<NodeId, Peer>,
    /// Recently dead or departed peers, not probed on hearsay until then (they answer
    /// nothing, and gossip about them circulates for a while).
    dead: BTreeMap<NodeId, Tombstone>,
    /// Ids heard of second-hand and pinged, until when their answer is awaited.
    probing: BTreeMap<NodeId, Instant>,
    /// Peers forgotten for silence, probed now and then (bounded: `graveyard.rs`).
    graveyard: Graveyard,
    /// The contact of the last join, retried while the node knows nobody.
    contact: Option<Contact>,
    leaf_version: u64,
    outbox: VecDeque<(Contact, OverlayMsg)>,
    events: VecDeque<OverlayEvent>,
    timers: Timers<Timer>,
    /// Heartbeat periods elapsed.
    ticks: u64,
    last_change: Instant,
    quiet: Duration,
    converged: bool,
    left: bool,
    /// Its own join was answered by the node closest to it (or it is a founder, told to
    /// join nobody). Until then it passes joins on to its own contact, once per joiner, and
    /// answers none as the closest node while it has no contact: a node still joining that
    /// answered others' joins would start a separate ring with them.
    joined: bool,
    /// Joiners whose joins were passed on lately (bounded): a second pass is answered here,
    /// so that contacts joining through each other cannot bounce a join for ever.
    passed_on: VecDeque<NodeId>,
    /// Its own join through where it was told to join (a seed, an address discovery
    /// found) was answered with a leaf set, or it founded the network (it was told to join
    /// nowhere). Until then its owner keeps joining through its seeds: nodes that joined
    /// through this one meanwhile (their seed is this node) are not its network, only an
    /// island of it, whatever they answered each other.
    seeded: bool,
    /// Round trips to all peers together: the guess for a peer not measured yet.
    rtts: RttSpread,
    /// Peers whose leaf set seemed to be from another part of the ring (see `doubt`):
    /// when first seen so, and whether they were asked for it again since (bounded).
    suspects: BTreeMap<NodeId, Suspect>,
    /// Nodes a neighbour lists that this node cannot reach itself (`vouch.rs`).
    vouches: Vouches,
    /// Peers looked up for that reason.
    misplaced: u64,
    /// Heartbeat periods that came late: the node itself was stopped.
    lateness: crate::time::Lateness,
    /// Times this node found it had been stopped (its heartbeat came over two periods
    /// late) and gave its peers a fresh chance instead of taking them for dead.
    resumed: u64,
}

impl Overlay {
    /// A node alone on its ring: the founder of a network (`founder`: it is to join no
    /// other), or one that joins its network through a seed ([`OverlayInput::Join`]).
    pub fn new(own: Contact, cfg: OverlayConfig, now: Instant, founder: bool) -> Overlay {
        Overlay {
            own,
            leaves: LeafSet::new(own.id, cfg.leaf_set_size),
            table: RoutingTable::new(own.id),
            peers: BTreeMap::new(),
            dead: BTreeMap::new(),
            probing: BTreeMap::new(),
            graveyard: Graveyard::default(),
            contact: None,
            leaf_version: 0,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            timers: {
                let mut t = Timers::default();
                t.set(Timer::Ping, now + cfg.heartbeat_period);
                t.set(Timer::Settle, now + cfg.boot_quiet);
                t
            },
            ticks: 0,
            last_change: now,
            quiet: cfg.boot_quiet,
            converged: false,
            left: false,
            joined: founder,
            passed_on: VecDeque::new(),
            seeded: founder,
            rtts: RttSpread::default(),
            suspects: BTreeMap::new(),
            vouches: Vouches::default(),
            misplaced: 0,
            lateness: crate::time::Lateness::new(now),
            resumed: 0,
            cfg,
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.own.id
    }

    /// Whether this node is part of the network it was told to join: a join it sent
    /// through a seed was answered with a leaf set (or it founded the network).
    pub fn is_seeded(&self) -> bool {
        self.seeded
    }

    /// This node's id and address.
    pub fn contact(&self) -> Contact {
        self.own
    }

    /// The round trip to a peer this node pings, smoothed over its pongs.
    pub fn rtt(&self, id: NodeId) -> Option<Duration> {
        self.peers.get(&id).and_then(|p| p.rtt)
    }

    /// The round trip to plan with for `id`: measured if it was, else a cautious guess from
    /// every peer measured (their mean plus four deviations, as TCP sets its first
    /// retransmission timeout); `None` before any pong.
    pub fn planned_rtt(&self, id: NodeId) -> Option<Duration> {
        self.rtt(id).or_else(|| self.rtts.cautious())
    }

    /// The address of a peer in the leaf set or the table.
    pub fn peer_addr(&self, id: NodeId) -> Option<SocketAddr> {
        self.peers.get(&id).map(|p| p.addr)
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

    /// How many times a peer showed a leaf set from another part of the ring and this node
    /// looked the peer up for it (see `doubt`): 0 in a settled ring.
    pub fn misplaced_helped(&self) -> u64 {
        self.misplaced
    }

    /// Times this node found it had been stopped (its heartbeat came over two periods late)
    /// and gave its peers a fresh chance instead of taking them for dead.
    pub fn resumed(&self) -> u64 {
        self.resumed
    }

    /// True once quiet for the convergence period.
    pub fn is_converged(&self) -> bool {
        self.converged
    }

    /// Where a message for `key` goes next; `None`: here.
    pub fn next_hop(&self, key: NodeId) -> Option<NodeId> {
        next_hop(self.own.id, &self.leaves, &self.table, key)
    }

    /// The next hop toward `key` as a contact (id, address, epoch), as if `avoid` were
    /// unknown here (a peer believed gone); `None`: this node is the closest it knows.
    pub fn route(&self, key: NodeId, avoid: Option<NodeId>) -> Option<Contact> {
        self.route_where(key, |id| Some(id) != avoid)
    }

    /// A known peer as a contact (id, address, epoch).
    pub fn contact_of(&self, id: NodeId) -> Option<Contact> {
        self.peers
            .get(&id)
            .map(|p| Contact::new(id, p.addr, p.epoch))
    }

    /// The next hop toward `key` among the known nodes that `usable` accepts.
    pub fn route_where(&self, key: NodeId, usable: impl Fn(NodeId) -> bool) -> Option<Contact> {
        let hop =
            match super::route::route_where(self.own.id, &self.leaves, &self.table, key, &usable) {
                Some(hop) => hop,
                // A node that left is the destination of nothing: what still reaches it (sent
                // before its peers heard of the leave) goes on to the closest of them.
                None if self.left => self
                    .leaves
                    .members()
                    .chain(self.table.entries())
                    .filter(|&id| usable(id))
                    .reduce(|best, id| if key.prefers(id, best) { id } else { best })?,
                // Closest here, as far as this node knows first-hand: but a neighbour may
                // list a closer node this one cannot reach (a broken pair, `vouch.rs`).
                None => self.vouches.hop(self.own.id, key, &usable)?,
            };
        let p = self.peers.get(&hop)?;
        Some(Contact::new(hop, p.addr, p.epoch))
    }

    /// Feeds one input; what it led to comes out of [`Overlay::poll_output`].
    pub fn handle(&mut self, now: Instant, input: OverlayInput) {
        match input {
            OverlayInput::Message(from, msg) => self.handle_message(now, from, msg),
            OverlayInput::Join(contact) => self.join(contact),
            OverlayInput::Leave => self.leave(),
            OverlayInput::Replaced { id, addr } => self.replaced(now, id, addr),
            OverlayInput::Timeout => self.handle_timeout(now),
        }
        self.settle_sooner();
    }

    /// The long quiet of a boot is for a lone node, which waits to be found before it
    /// passes for a network of one. A node in a network already (its join answered, or a
    /// founder that others joined) waits only as long as after any change, counted from
    /// the last change: it serves in seconds, as the original's nodes did.
    fn settle_sooner(&mut self) {
        if !self.converged
            && self.quiet > self.cfg.change_quiet
            && self.seeded
            && !self.peers.is_empty()
        {
            self.quiet = self.cfg.change_quiet;
            self.timers
                .set(Timer::Settle, self.last_change + self.quiet);
        }
    }

    fn replaced(&mut self, now: Instant, id: NodeId, addr: Option<SocketAddr>) {
        if addr.is_some() && self.peers.get(&id).map(|p| p.addr) == addr {
            self.forget(now, id, 0, false);
        }
    }

    fn join(&mut self, contact: Contact) {
        self.contact = Some(contact);
        if self.peers.is_empty() {
            self.joined = false;
        }
        self.send(contact, OverlayMsg::Join { joiner: self.own });
    }

    fn leave(&mut self) {
        for p in self.peer_contacts() {
            self.send(p, OverlayMsg::Leave);
        }
        self.left = true;
    }

    fn handle_message(&mut self, now: Instant, from: Contact, msg: OverlayMsg) {
        if self.left || from.id == self.own.id || !self.heard(now, from) {
            return;
        }
        // Any message but a farewell is first-hand proof that its sender is alive, even one
        // declared dead a moment ago (it restarted, or its link or partition healed).
        if !matches!(msg, OverlayMsg::Leave) {
            self.alive(now, from);
        }
        match msg {
            OverlayMsg::Join { joiner } => self.on_join(now, joiner),
            OverlayMsg::JoinState { rows, leaves } => {
                if leaves.is_some() {
                    // (While unseeded, the only joins of its own in flight are those sent
                    // through its seeds: see `tick`.)
                    self.joined = true;
                    self.seeded = true;
                }
                for id in rows.into_iter().chain(leaves.into_iter().flatten()) {
                    self.hear_of(now, id);
                }
            }
            OverlayMsg::Ping { leaves, rtt } => {
                if let Some(p) = self.peers.get_mut(&from.id) {
                    p.pinged_at = Some(now);
                    // The path is the same both ways: the pinger's measure is ours too,
                    // and ours may be old (see `tick`: only one of the two pings).
                    if rtt.is_some() {
                        p.rtt = rtt;
                    }
                }
                if self.cfg.repair
                    && let Some(leaves) = leaves
                {
                    self.hear_leaves(now, from, leaves);
                }
                let leaves = self.leaves_for(from.id);
                self.send(from, OverlayMsg::Pong { leaves });
            }
            OverlayMsg::Pong { leaves } => {
                let period = self.cfg.heartbeat_period;
                if let Some(p) = self.peers.get_mut(&from.id)
                    && let Some(sent) = p.ping_sent.take()
                {
                    let sample = now.saturating_duration_since(sent);
                    p.rtt = smoothed_rtt(p.rtt, sample, period);
                    self.rtts.sample(sample, period);
                }
                if self.cfg.repair
                    && let Some(leaves) = leaves
                {
                    self.hear_leaves(now, from, leaves);
                }
            }
            OverlayMsg::LeafRequest => {
                let leaves = self.leaf_contacts();
                self.send(from, OverlayMsg::LeafReply { leaves });
            }
            OverlayMsg::LeafReply { leaves } => self.hear_leaves(now, from, leaves),
            OverlayMsg::Leave => self.forget(now, from.id, from.epoch, false),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.left {
            return;
        }
        self.dead.retain(|_, t| t.until > now);
        self.probing.retain(|_, until| *until > now);
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Ping => self.tick(now),
                Timer::Settle => {
                    if !self.converged
                        && now.saturating_duration_since(self.last_change) >= self.quiet
                    {
                        self.converged = true;
                        self.events.push_back(OverlayEvent::Converged {
                            peers: self.peers.len(),
                        });
                    }
                }
            }
        }
    }

    /// One heartbeat period: pings, deaths, lookups.
    fn tick(&mut self, now: Instant) {
        self.timers
            .set(Timer::Ping, now + self.cfg.heartbeat_period);
        self.ticks += 1;
        let since = self.lateness.since(now);
        if self.lateness.jumped(now, self.cfg.heartbeat_period) {
            // This node was stopped (SIGSTOP, a suspended VM): its peers' silence is its
            // own. Each gets the misses it would have had left a period ago, and this
            // period's ping; whoever really died meanwhile stays silent and goes then.
            let fresh = now.saturating_sub(self.cfg.heartbeat_period);
            for p in self.peers.values_mut() {
                p.last_heard = p.last_heard.max(fresh);
                p.pinged_at = None;
            }
            self.resumed += 1;
            self.events.push_back(OverlayEvent::Resumed {
                late: since.saturating_sub(self.cfg.heartbeat_period),
            });
        }
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
            self.forget(now, id, 0, true);
        }
        self.ping_peers(now, self.ticks.is_multiple_of(every));
        // Knowing nobody, retry the last join's contact (the mesh tells its driver,
        // which may offer another).
        if self.peers.is_empty()
            && let Some(contact) = self.contact
        {
            self.send(contact, OverlayMsg::Join { joiner: self.own });
        }
        self.ask_suspects(now);
        self.ask_vouchers(now);
        let lookup = u64::from(self.cfg.self_lookup_every.max(1));
        self.probe_graveyard(now, self.ticks % lookup == lookup / 2);
        // Self-lookups wait until the node is part of its network: until then the joins
        // through its seeds are its only ones, so their answer tells it it joined.
        if self.seeded
            && self.cfg.repair
            && self.ticks.is_multiple_of(lookup)
            && !self.peers.is_empty()
        {
            // Rotate through the peers so that lookups start from all over the ring.
            let i = (self.ticks / lookup) as usize % self.peers.len();
            if let Some((&id, p)) = self.peers.iter().nth(i) {
                let via = Contact::new(id, p.addr, p.epoch);
                self.send(via, OverlayMsg::Join { joiner: self.own });
            }
        }
    }

    /// This period's pings: every leaf, and on a `table_turn` every table entry, unless
    /// the peer's own ping covers the pair.
    fn ping_peers(&mut self, now: Instant, table_turn: bool) {
        // A peer that pinged us within half of our period for it covers this pair: its
        // ping proved it alive, and our pong will prove us. With any phase between the two
        // nodes' timers exactly one of them ends up pinging, once per period: for leaves
        // (every period) as for table entries (every `table_ping_every` periods), which
        // are often each other's entries too.
        let leaf_covered = self.cfg.heartbeat_period / 2;
        let table_covered = leaf_covered * self.cfg.table_ping_every.max(1);
        let peers: Vec<Contact> = self
            .peers
            .iter()
            .filter(|(id, p)| {
                let leaf = self.leaves.contains(**id);
                let covered = if leaf { leaf_covered } else { table_covered };
                (table_turn || leaf)
                    && p.pinged_at
                        .is_none_or(|t| now.saturating_duration_since(t) >= covered)
            })
            .map(|(&id, p)| Contact::new(id, p.addr, p.epoch))
            .collect();
        for p in peers {
            let leaves = self.leaves_for(p.id);
            let mut rtt = None;
            if let Some(peer) = self.peers.get_mut(&p.id) {
                peer.ping_sent = Some(now);
                rtt = peer.rtt;
            }
            self.send(p, OverlayMsg::Ping { leaves, rtt });
        }
    }

    /// What the overlay asks of its owner next: the messages to send, then the events.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<OverlayOutput> {
        if let Some((to, msg)) = crate::queue::pop_front(&mut self.outbox) {
            return Some(OverlayOutput::Send(to, msg));
        }
        crate::queue::pop_front(&mut self.events).map(OverlayOutput::Event)
    }

    /// When [`OverlayInput::Timeout`] is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.left {
            return None;
        }
        self.timers.next()
    }

    /// Notes a message from a tracked peer: false if it comes from an earlier incarnation
    /// (a zombie, to be ignored); a later one restarted, perhaps elsewhere.
    fn heard(&mut self, now: Instant, from: Contact) -> bool {
        let Some(p) = self.peers.get_mut(&from.id) else {
            return true;
        };
        if from.epoch < p.epoch {
            return false;
        }
        if from.epoch > p.epoch {
            // It restarted: follow it, and since it lost what we told it, tell it our leaf
            // set again.
            p.epoch = from.epoch;
            p.addr = from.addr;
            p.told = 0;
        }
        p.last_heard = now;
        true
    }

    /// A node spoke to us itself: it is learned, and one given up for dead that answers
    /// may mean the rings were apart.
    fn alive(&mut self, now: Instant, from: Contact) {
        self.probing.remove(&from.id);
        self.dead.remove(&from.id);
        let revived = !self.peers.contains_key(&from.id) && self.graveyard.contains(from.id);
        self.learn(now, from);
        if revived && self.cfg.repair && self.seeded {
            // Look ourselves up through it now rather than at the next scheduled lookup.
            self.graveyard.remove(from.id);
            self.send(from, OverlayMsg::Join { joiner: self.own });
        }
    }

    fn on_join(&mut self, now: Instant, joiner: Contact) {
        if joiner.id == self.own.id {
            return; // our own lookup came back: nobody closer to hand it to
        }
        // A node still joining passes the join on to its own contact (once per joiner):
        // answering it would start a separate ring with the joiner.
        if !self.joined
            && !self.passed_on.contains(&joiner.id)
            && let Some(contact) = self.contact.filter(|c| c.id != joiner.id)
        {
            if self.passed_on.len() >= 64 {
                self.passed_on.pop_front();
            }
            self.passed_on.push_back(joiner.id);
            self.send(contact, OverlayMsg::Join { joiner });
            return;
        }
        let next = super::route::next_hop_avoiding(
            self.own.id,
            &self.leaves,
            &self.table,
            joiner.id,
            joiner.id,
        )
        .and_then(|n| self.contact_of(n));
        let prefix = self.own.id.shared_prefix(joiner.id);
        let mut rows: Vec<Contact> = (0..=prefix.min(super::id::DIGITS - 1))
            .flat_map(|r| self.table.row(r).iter().flatten().copied())
            .filter_map(|id| self.contact_of(id))
            .collect();
        rows.push(self.own);
        // Only a node of a network answers as its closest node: one that has not joined
        // yet (its seed link is not up, or its seed did not answer) would start a ring of
        // its own with the joiner. Its joiner learns the rows and tries again (its seed
        // retries), by when this node has joined, or passes joins to its contact.
        let closest = next.is_none() && (self.joined || self.contact.is_some());
        let leaves = closest.then(|| self.leaf_contacts());
        self.send(joiner, OverlayMsg::JoinState { rows, leaves });
        match next {
            Some(hop) => self.send(hop, OverlayMsg::Join { joiner }),
            // The closest node learns the joiner last, so the join is not routed to it.
            None => self.hear_of(now, joiner),
        }
    }

    /// Someone mentioned `id`: if it would be useful, ask it directly; it is learned when
    /// it answers.
    fn hear_of(&mut self, now: Instant, c: Contact) {
        let id = c.id;
        if id == self.own.id
            || self.peers.contains_key(&id)
            || self.dead.get(&id).is_some_and(|t| t.epoch >= c.epoch)
            || self.probing.contains_key(&id)
            || !(self.leaves.wants(id) || self.table.wants(id))
        {
            return;
        }
        let patience = self.cfg.heartbeat_period * self.cfg.heartbeat_misses;
        self.probing.insert(id, now + patience);
        self.send(
            c,
            OverlayMsg::Ping {
                leaves: None,
                rtt: None,
            },
        );
    }

    /// Offers a node that has just spoken to us to the leaf set and the table; tracks it if
    /// either keeps it.
    fn learn(&mut self, now: Instant, c: Contact) {
        let id = c.id;
        if id == self.own.id {
            return;
        }
        let leaf = self.leaves.insert(id);
        let (table, replaced) = match self.table.offer(id) {
            Offer::Refused => (false, false),
            Offer::Taken => (true, false),
            Offer::Replaced(old) => {
                // A nearer node took its slot: it is tracked no more unless it is a leaf
                // (it is not dead, only not needed: no event).
                if !self.leaves.contains(old) {
                    self.peers.remove(&old);
                }
                (true, true)
            }
        };
        if leaf {
            self.leaf_version += 1;
        }
        if leaf || table {
            self.vouches.remove(id);
            self.peers.entry(id).or_insert(Peer {
                addr: c.addr,
                epoch: c.epoch,
                last_heard: now,
                pinged_at: None,
                told: 0,
                ping_sent: None,
                rtt: None,
            });
            // A nearer entry for a slot that routed already changes no route's outcome:
            // the overlay is as converged as before (otherwise, in a large network, entries
            // improving now and then would keep it from ever counting as converged).
            if leaf || !replaced {
                self.changed(now);
            }
        }
    }

    /// Pings the forgotten peers the leaf set would take back whose turn it is (see
    /// `graveyard.rs`: every period at first), and on a graveyard `round` the next other
    /// one whose tombstone has expired. Neighbours first: after a partition a node's
    /// graveyard fills with the far side's nodes, and two neighbours that gave each other
    /// up, each the other's only missing leaf, waited their turn for many minutes (found
    /// by swarm testing: 939 nodes, a third cut off for 35 s); and when they were probed
    /// only once their tombstones expired, at graveyard rounds 30 s apart, the two sides
    /// of a partition merged up to a minute after it healed.
    fn probe_graveyard(&mut self, now: Instant, round: bool) {
        let (peers, leaves) = (&self.peers, &self.leaves);
        let mut pings = self.graveyard.due(now, self.cfg.heartbeat_period, |id| {
            !peers.contains_key(&id) && leaves.wants(id)
        });
        if round {
            let (dead, probing) = (&self.dead, &self.probing);
            let other = self.graveyard.next_in_turn(
                |id| peers.contains_key(&id),
                |id| !dead.contains_key(&id) && !probing.contains_key(&id),
            );
            pings.extend(other.filter(|c| !pings.contains(c)));
        }
        // (Not marked as probed: that mark is for hearsay, and must not hold back the
        // probe of a later epoch, a restart, at a new address.)
        for c in pings {
            self.send(
                c,
                OverlayMsg::Ping {
                    leaves: None,
                    rtt: None,
                },
            );
        }
    }

    /// Drops a dead (`silent`) or departed peer and repairs.
    fn forget(&mut self, now: Instant, id: NodeId, epoch: u64, silent: bool) {
        // A contact that is gone can pass no join on (see `joined`).
        if self.contact.is_some_and(|c| c.id == id) {
            self.contact = None;
        }
        let was_leaf = self.leaves.remove(id);
        let was_entry = self.table.remove(id);
        let known = self.peers.remove(&id);
        let detection = self.cfg.heartbeat_period * (self.cfg.heartbeat_misses + 2);
        let epoch = known.as_ref().map_or(epoch, |p| p.epoch.max(epoch));
        self.dead.insert(
            id,
            Tombstone {
                until: now + detection * 2,
                epoch,
            },
        );
        if silent && known.is_some() {
            self.events.push_back(OverlayEvent::Silent(id));
        }
        // Only the silent go to the graveyard: a node that said goodbye is not coming back.
        if let (true, Some(p)) = (silent, known) {
            let c = Contact::new(id, p.addr, p.epoch);
            self.graveyard.bury(c, now, self.cfg.heartbeat_period);
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
                for l in self.leaf_contacts() {
                    self.send(l, OverlayMsg::LeafRequest);
                }
            }
        }
    }

    fn leaves_for(&mut self, to: NodeId) -> Option<Vec<Contact>> {
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
        Some(self.leaf_contacts())
    }

    /// The leaf set as contacts (every leaf is a tracked peer).
    fn leaf_contacts(&self) -> Vec<Contact> {
        self.leaves
            .members()
            .filter_map(|id| self.contact_of(id))
            .collect()
    }

    /// Every tracked peer as a contact, in id order.
    fn peer_contacts(&self) -> Vec<Contact> {
        self.peers
            .iter()
            .map(|(&id, p)| Contact::new(id, p.addr, p.epoch))
            .collect()
    }

    fn changed(&mut self, now: Instant) {
        self.last_change = now;
        if self.converged {
            self.converged = false;
            self.quiet = self.cfg.change_quiet;
        }
        self.timers.set(Timer::Settle, now + self.quiet);
    }

    fn send(&mut self, to: Contact, msg: OverlayMsg) {
        self.outbox.push_back((to, msg));
    }
}
