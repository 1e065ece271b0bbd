//! Scribe: multicast trees over the Pastry overlay, one set per group (a cluster or a topic).
//!
//! A group is spread over several trees (`splits`, 5 by default, as in the original), whose
//! keys are hashes of the group and the tree's index, so that roots and load spread over the
//! network. A node with members of a group joins all of the group's trees:
//!
//! - **Subscribe.** It sends SUBSCRIBE toward the tree's key. Every hop on the way takes the
//!   sender as a child and, if it was not in the tree yet, subscribes onward, once; the node
//!   the overlay routes the key to (no next hop) is the root. Parents are thus always closer
//!   to the key than their children in Pastry's order, so parent pointers never form a loop.
//! - **Unsubscribe.** A node with no members left and no children tells its parent, which
//!   forgets it and may prune itself in turn.
//! - **Beats.** Tree neighbours (parent, children) beat every `beat` period, one message per
//!   neighbour whatever the number of trees they share, carrying the capacities that changed
//!   (for requests: what is reachable through the sender, excluding the receiver's side).
//!   Every `refresh_every` beats a child lists the trees it has the receiver as parent for,
//!   so that a parent that lost track of a child takes it back, or says it is not in the
//!   tree (NOT_IN_TREE) and the child re-subscribes.
//! - **Repair.** A neighbour silent for `misses` beats, whose link is lost, which the overlay
//!   found dead, or which restarted (a new epoch), is dropped: its subtrees re-subscribe,
//!   avoiding it. A root that the overlay no longer routes its key to (a closer node joined)
//!   subscribes to the new root. When routes change, the next hop toward a key may be a
//!   node's own child: the child is let go (NOT_IN_TREE: it subscribes again along its own
//!   route) and the node subscribes on its next beat, so the tree neither loops nor keeps
//!   two roots.
//!
//! This machine keeps the trees; the node decides what travels on them, asking it where to
//! flood a multicast, where to send an anycast (weighted by the capacities reported), and
//! whether a message was seen before (see the `window` module).

mod beats;
mod group;
mod probe;
mod repair;
mod tree;
mod window;

#[cfg(test)]
mod tests;

pub use beats::Listed;
pub(crate) use group::TreeKeys;
pub use group::{Group, GroupKind};

use crate::overlay::{Contact, NodeId, Overlay};
use crate::time::Instant;
use crate::timer::Timers;
use rand::RngExt;
use rand::rngs::ChaCha8Rng;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tree::{Child, Tree};
use window::Windows;
pub(crate) use window::{MAX_HEADS, Verdict};

/// Settings of the trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScribeConfig {
    /// Trees per group.
    pub splits: u8,
    /// Beat period between tree neighbours.
    pub beat: Duration,
    /// Beats missed before a neighbour is dropped.
    pub misses: u32,
    /// Every this many beats a child lists its trees to its parents.
    pub refresh_every: u32,
    /// Most trees this node takes part in; more subscriptions through it are refused. The
    /// node's memory budget bounds them too (see [`TREE_BYTES`]).
    pub max_trees: usize,
    /// Most children per tree; more are refused.
    pub max_children: usize,
    /// Most (origin, tree) pairs remembered for duplicate suppression.
    pub max_windows: usize,
    /// Round trip assumed for a hop the overlay has not measured (it measures the peers it
    /// pings). Each hop of a request or tunnel build takes its hop's round trip off the
    /// time left, so that what could no longer be answered in time is not delivered.
    pub hop_rtt: Duration,
    /// A neighbour this node passes multicasts to and has not heard from for this long is
    /// probed (`probe.rs`); zero: never.
    pub probe_after: Duration,
    /// How long a probed neighbour has to answer before the trees route around it, beyond
    /// the round trip the overlay plans with for it.
    pub probe_wait: Duration,
}

impl Default for ScribeConfig {
    fn default() -> ScribeConfig {
        ScribeConfig {
            splits: 5,
            beat: Duration::from_secs(1),
            misses: 3,
            refresh_every: 10,
            max_trees: 1 << 20,
            max_children: 1 << 10,
            max_windows: 1 << 16,
            hop_rtt: Duration::from_millis(50),
            probe_after: Duration::from_millis(500),
            probe_wait: Duration::from_millis(500),
        }
    }
}

impl ScribeConfig {
    /// Checks the settings: zero would spin or refuse everything.
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        use crate::ConfigError::Zero;
        for (zero, name) in [
            (self.splits == 0, "splits"),
            (self.beat.is_zero(), "beat"),
            (self.misses == 0, "misses"),
            (self.refresh_every == 0, "refresh_every"),
            (self.max_trees == 0, "max_trees"),
            (self.max_children == 0, "max_children"),
            (self.max_windows == 0, "max_windows"),
        ] {
            if zero {
                return Err(Zero(name));
            }
        }
        Ok(())
    }
}

/// What tree nodes say to each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScribeMsg {
    /// Take the sender as a child in the tree of `key` (and join it yourself if need be).
    Subscribe {
        /// The tree.
        key: NodeId,
        /// Its group.
        group: Group,
        /// Its index among the group's trees.
        index: u8,
    },
    /// Forget the sender as a child in the tree of `key`.
    Unsubscribe {
        /// The tree.
        key: NodeId,
    },
    /// Liveness, changed capacities, and now and then the list of trees the receiver is the
    /// sender's parent in.
    Beat {
        /// Capacity reachable through the sender, per tree, where it changed.
        caps: Vec<(NodeId, u32)>,
        /// Trees in which the receiver is the sender's parent (on refresh beats).
        parents: Option<Listed>,
    },
    /// The sender has no such tree (or not the receiver as child in it): re-subscribe.
    NotInTree {
        /// The tree.
        key: NodeId,
    },
    /// To a child that just subscribed: the last multicast the sender took from each
    /// origin on the tree lately, so that a child that was away (re-parenting, stalled, cut
    /// off) learns at once what it missed and asks for it (see the `window` module).
    Heads {
        /// The tree.
        key: NodeId,
        /// (origin, its epoch, the number, how long ago it was taken, in ms).
        heads: Vec<(NodeId, u64, u64, u64)>,
    },
    /// Say something at once: the sender passes multicasts through the receiver and has
    /// not heard from it lately (see `probe.rs`).
    Probe,
}

/// What the trees are told.
pub enum ScribeInput<'a> {
    /// Local members of a group appeared: join its trees.
    Join(&'a Group),
    /// The last local member of a group left: leave its trees unless others hang below.
    Leave(&'a Group),
    /// A tree message from a peer.
    Message(Contact, ScribeMsg),
    /// Any message from a peer: a neighbour is alive; one of another epoch restarted, and
    /// everything it held for us is gone.
    Heard(Contact),
    /// A peer is gone (unlinked, dead, left): its children entries go, the trees it was
    /// parent in subscribe again around it.
    Lost(NodeId),
    /// The deadline from [`Scribe::poll_timeout`] passed: beats, liveness, root moves,
    /// with this node's own capacity for a group.
    Timeout(&'a dyn Fn(&Group) -> u32),
    /// Tell the neighbours now, not at the next beat, the capacities that changed (a node
    /// shutting down stops offering its members).
    ReportNow(&'a dyn Fn(&Group) -> u32),
}

impl std::fmt::Debug for ScribeInput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScribeInput::Join(g) => f.debug_tuple("Join").field(g).finish(),
            ScribeInput::Leave(g) => f.debug_tuple("Leave").field(g).finish(),
            ScribeInput::Message(c, m) => f.debug_tuple("Message").field(c).field(m).finish(),
            ScribeInput::Heard(c) => f.debug_tuple("Heard").field(c).finish(),
            ScribeInput::Lost(n) => f.debug_tuple("Lost").field(n).finish(),
            ScribeInput::Timeout(_) => f.write_str("Timeout"),
            ScribeInput::ReportNow(_) => f.write_str("ReportNow"),
        }
    }
}

/// Where an anycast goes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// To a local member.
    Local,
    /// To this tree neighbour.
    Neighbour(Contact),
    /// Nowhere: no capacity reachable from here (but where it came from).
    None,
}

/// The overlay as trees use it.
pub trait Router {
    /// This node.
    fn own(&self) -> Contact;
    /// The next hop toward `key`, as if `avoid` were unknown; `None` at the closest node.
    fn next_hop(&self, key: NodeId, avoid: Option<NodeId>) -> Option<Contact>;
    /// The round trip to plan with for a peer, if the overlay has measured any.
    fn planned_rtt(&self, _id: NodeId) -> Option<Duration> {
        None
    }
}

impl Router for Overlay {
    fn own(&self) -> Contact {
        self.contact()
    }

    fn next_hop(&self, key: NodeId, avoid: Option<NodeId>) -> Option<Contact> {
        self.route(key, avoid)
    }

    fn planned_rtt(&self, id: NodeId) -> Option<Duration> {
        Overlay::planned_rtt(self, id)
    }
}

/// Counters of the trees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScribeStats {
    /// Subscriptions refused: too many trees here, or too many children in one.
    pub refused: u64,
    /// Neighbours dropped (silent, unlinked, dead, restarted).
    pub neighbours_lost: u64,
    /// Subscriptions sent (joins, repairs, root moves).
    pub subscribes: u64,
    /// Multicast messages dropped as seen before.
    pub duplicates: u64,
    /// Children let go because the overlay came to route the tree's key through them
    /// (they re-subscribe along their own route, and this node subscribes through them).
    pub handed_over: u64,
    /// Trees moved onto their route because their parent no longer was its next hop.
    pub rerouted: u64,
    /// Trees refused because this node takes part in `max_trees` already: a group of its
    /// own clients, or a peer's subscription through it (its group's messages then do not
    /// pass here). Counted in `refused` too.
    pub full: u64,
    /// Neighbours routed around because they did not answer a probe under data.
    pub suspected: u64,
    /// Next hops toward a tree (or an origin) routed around because they did not answer
    /// a probe under data.
    pub hops_suspected: u64,
}

/// Bytes one tree takes in a node's memory, on average: its entry in the map of trees
/// (about 330 bytes once the map's own slack is counted) and its group's name. Tree state is
/// charged to the node's memory budget at this rate; `iris-sim/tests/group_memory.rs`
/// measures the real figure and checks this estimate against it.
pub const TREE_BYTES: usize = 256;

/// Bytes each tree neighbour entry (a child in one tree, or the parent) adds to
/// [`TREE_BYTES`].
pub const NEIGHBOUR_BYTES: usize = 80;

/// Trees refused since last reported: the last one's group, how many, and whether the
/// last refusal was for memory (else for `max_trees`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreesRefused {
    /// The group of the last tree refused.
    pub group: Group,
    /// Trees refused.
    pub count: u64,
    /// The last refusal was for the memory bound ([`Scribe::set_max_bytes`]).
    pub memory: bool,
}

/// A tree neighbour: how many of this node's trees it is in, and when it was last heard.
#[derive(Debug, Clone)]
struct Neighbour {
    contact: Contact,
    trees: u32,
    last_heard: Instant,
    /// When it was probed, until it answers (see `probe.rs`).
    probed: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Beat,
    /// The wait for a probed neighbour's answer.
    Probe(NodeId),
}

/// The trees of one node.
#[derive(Debug)]
pub struct Scribe {
    cfg: ScribeConfig,
    trees: BTreeMap<NodeId, Tree>,
    neighbours: BTreeMap<NodeId, Neighbour>,
    windows: Windows,
    timers: Timers<Timer>,
    ticks: u64,
    outbox: VecDeque<(Contact, ScribeMsg)>,
    stats: ScribeStats,
    /// Parents left for a route's new next hop, told to unsubscribe a beat later (see
    /// `follow_routes`): (when, tree, old parent).
    lingering: VecDeque<(Instant, NodeId, Contact)>,
    /// Trees refused since [`Scribe::take_full`] was last called.
    full_since: Option<TreesRefused>,
    /// Most bytes of tree state, estimated (see [`TREE_BYTES`]).
    max_bytes: usize,
    /// Tree neighbour entries: the sum of every neighbour's `trees`.
    refs: usize,
    /// Per tree without a parent: the parent it lost, routed around until the tree has
    /// settled (`refresh_every` beats after it attached), then forgotten at a refresh
    /// (`follow_routes`). Apart from the trees: few have one at a time.
    avoided: BTreeMap<NodeId, NodeId>,
    /// Beats that came late: the node itself was stopped.
    lateness: crate::time::Lateness,
    /// The peers tree traffic is routed through, probed under the data (`probe.rs`).
    hops: probe::Hops,
    /// Hops and neighbours that did not answer a probe, until [`Scribe::take_unanswered`]
    /// (drained at every timeout: at most one entry per probe out).
    unanswered: Vec<NodeId>,
    /// Per (tree, origin): the furthest head passed on to children (see `on_heads`),
    /// at most `max_windows` of them.
    heads_passed: BTreeMap<(NodeId, NodeId), (u64, u64)>,
    /// The next beat lists the trees each neighbour is a parent in, whatever the tick:
    /// after a stop, parents that took this node for gone say so at once (they answer
    /// NOT-IN-TREE, and it subscribes again) instead of at the next refresh.
    refresh_due: bool,
}

impl Scribe {
    /// No trees yet; the first beat is one period away.
    pub fn new(cfg: ScribeConfig, now: Instant) -> Scribe {
        let mut timers = Timers::default();
        timers.set(Timer::Beat, now + cfg.beat);
        Scribe {
            // Longer than origins keep their messages (`trees::sent::KEEP_FOR`): a node never
            // asks again for what it took and then forgot.
            windows: Windows::new(cfg.max_windows, Duration::from_secs(120)),
            cfg,
            trees: BTreeMap::new(),
            neighbours: BTreeMap::new(),
            timers,
            ticks: 0,
            outbox: VecDeque::new(),
            stats: ScribeStats::default(),
            lingering: VecDeque::new(),
            full_since: None,
            max_bytes: usize::MAX,
            refs: 0,
            avoided: BTreeMap::new(),
            lateness: crate::time::Lateness::new(now),
            hops: probe::Hops::default(),
            unanswered: Vec::new(),
            refresh_due: false,
            heads_passed: BTreeMap::new(),
        }
    }

    /// The trees refused for `max_trees` or memory since the last call, so that a refusal
    /// is reported (logged, counted), never silent.
    pub fn take_full(&mut self) -> Option<TreesRefused> {
        self.full_since.take()
    }

    /// Bounds the tree state this node keeps (estimated at [`TREE_BYTES`] a tree and
    /// [`NEIGHBOUR_BYTES`] a neighbour entry): past it, trees are refused as past
    /// `max_trees`. Nodes give their trees a quarter of their memory budget.
    pub fn set_max_bytes(&mut self, max: usize) {
        self.max_bytes = max;
    }

    /// The bound of [`Scribe::set_max_bytes`].
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The memory the trees take here, estimated (see [`TREE_BYTES`]).
    pub fn state_bytes(&self) -> usize {
        self.trees.len() * TREE_BYTES + self.refs * NEIGHBOUR_BYTES
    }

    /// Whether one more tree may be taken on; if not, it is refused for `group`, counted
    /// and reported.
    fn room_for_tree(&mut self, group: &Group) -> bool {
        let memory = self.state_bytes() + TREE_BYTES + NEIGHBOUR_BYTES > self.max_bytes;
        if self.trees.len() < self.cfg.max_trees && !memory {
            return true;
        }
        self.stats.refused += 1;
        self.stats.full += 1;
        let count = self.full_since.as_ref().map_or(0, |r| r.count) + 1;
        self.full_since = Some(TreesRefused {
            group: group.detached(),
            count,
            memory,
        });
        false
    }

    /// The settings.
    pub fn config(&self) -> &ScribeConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> &ScribeStats {
        &self.stats
    }

    /// Trees this node takes part in.
    pub fn tree_count(&self) -> usize {
        self.trees.len()
    }

    /// This node's parent in the tree of `key` (`None`: not in it, or its root), and its
    /// children there: for inspection (tests, the simulator's tools).
    pub fn relations(&self, key: NodeId) -> Option<(Option<NodeId>, Vec<NodeId>)> {
        let t = self.trees.get(&key)?;
        Some((t.parent.map(|p| p.id), t.children.keys().copied().collect()))
    }

    /// This node's parent on the tree of `key`, if it has one.
    pub fn parent(&self, key: NodeId) -> Option<Contact> {
        self.trees.get(&key)?.parent
    }

    /// The keys of a group's trees, in index order.
    pub fn keys(&self, group: &Group) -> impl Iterator<Item = NodeId> + '_ {
        let g = group.clone();
        (0..self.cfg.splits).map(move |i| g.tree_key(i))
    }

    /// Feeds one input; the tree messages it led to come out of [`Scribe::poll_output`].
    pub fn handle(&mut self, now: Instant, input: ScribeInput<'_>, router: &impl Router) {
        match input {
            ScribeInput::Join(group) => self.join(now, group, router),
            ScribeInput::Leave(group) => self.leave(group),
            ScribeInput::Message(from, msg) => self.handle_message(now, from, msg, router),
            ScribeInput::Heard(from) => self.heard_from(now, from, router),
            ScribeInput::Lost(node) => self.lost(now, node, router),
            ScribeInput::Timeout(capacity) => self.handle_timeout(now, router, capacity),
            ScribeInput::ReportNow(capacity) => self.beat(capacity),
        }
    }

    /// The group of a tree being created here, shared with its sibling trees here if any
    /// (found by their keys), else in an allocation of its own.
    fn group_of_siblings(&self, group: &Group, index: u8) -> Arc<Group> {
        (0..self.cfg.splits)
            .filter(|&i| i != index)
            .find_map(|i| {
                let t = self.trees.get(&group.tree_key(i))?;
                (*t.group == *group).then(|| t.group.clone())
            })
            .unwrap_or_else(|| Arc::new(group.detached()))
    }

    fn join(&mut self, now: Instant, group: &Group, router: &impl Router) {
        let mut shared: Option<Arc<Group>> = None;
        for index in 0..self.cfg.splits {
            let key = group.tree_key(index);
            if !self.trees.contains_key(&key) {
                if !self.room_for_tree(group) {
                    continue;
                }
                let shared = shared
                    .get_or_insert_with(|| self.group_of_siblings(group, index))
                    .clone();
                self.trees.insert(key, Tree::new(shared, index));
                self.attach(now, key, None, false, router);
            }
            if let Some(t) = self.trees.get_mut(&key) {
                if !t.local {
                    t.local_since = Some(now);
                }
                t.local = true;
            }
        }
    }

    fn leave(&mut self, group: &Group) {
        for index in 0..self.cfg.splits {
            let key = group.tree_key(index);
            if let Some(t) = self.trees.get_mut(&key) {
                t.local = false;
                t.local_since = None;
            }
            self.windows.clear_gaps(key);
            self.prune(key);
        }
    }

    /// Whether this node takes part in the tree of `key`.
    pub fn in_tree(&self, key: NodeId) -> bool {
        self.trees.contains_key(&key)
    }

    /// The group of the tree of `key`, if this node is in it.
    pub fn group_of(&self, key: NodeId) -> Option<&Group> {
        self.trees.get(&key).map(|t| &*t.group)
    }

    /// Whether `node` is this node's parent or child in the tree of `key`.
    pub fn is_neighbour(&self, key: NodeId, node: NodeId) -> bool {
        self.trees.get(&key).is_some_and(|t| t.is_neighbour(node))
    }

    /// Whether `node` is a tree neighbour on the tree of `key`, or the parent this node is
    /// leaving (it lingers a beat, see `attach`): what it passes here meanwhile (multicasts,
    /// heads) is taken as from a neighbour.
    pub fn passes_here(&self, key: NodeId, node: NodeId) -> bool {
        self.is_neighbour(key, node)
            || self
                .lingering
                .iter()
                .any(|&(_, k, old)| k == key && old.id == node)
    }

    /// Whether this node has a child other than `except` on one of `group`'s trees: a
    /// way to members of the group elsewhere (a subtree without members is pruned; the
    /// way up may lead only to a root without members).
    pub fn has_child_besides(&self, group: &Group, except: Option<NodeId>) -> bool {
        self.keys(group).any(|key| {
            self.trees
                .get(&key)
                .is_some_and(|t| t.children.keys().any(|&c| Some(c) != except))
        })
    }

    /// Where a multicast on the tree of `key` goes from here: every neighbour but `except`.
    pub fn flood_targets(&self, key: NodeId, except: Option<NodeId>) -> Vec<Contact> {
        let Some(t) = self.trees.get(&key) else {
            return Vec::new();
        };
        t.parent
            .iter()
            .copied()
            .chain(t.children.values().map(|c| c.contact))
            .filter(|c| Some(c.id) != except)
            .collect()
    }

    /// Where an anycast on the tree of `key` that came from `from` goes: to local members
    /// or a neighbour, at random in proportion to the capacity reachable that way (`local`
    /// here), never back to `from`.
    ///
    /// An anycast weighs this node's members by the capacity it reported at its last beat,
    /// as stale as what it knows of the other ways: weighed by their room now, which a
    /// burst uses up here long before the next beat tells of it anywhere, a node on the
    /// way would send most of the burst on to the farthest member (a burst of 600 over
    /// three equal members split 396 / 170 between the two remote ones), and the burst's
    /// origin would keep only its members' windows (34 of 600).
    pub fn anycast(
        &self,
        key: NodeId,
        from: Option<NodeId>,
        local: u32,
        rng: &mut ChaCha8Rng,
    ) -> Pick {
        let Some(t) = self.trees.get(&key) else {
            return Pick::None;
        };
        // Its own members weigh what it last told its neighbours, as theirs weigh what they
        // told (else a burst's origin, its members' windows just filled, would send all the
        // rest away). Not before its first beat with members: a new member is reached.
        let local = Some(t.local_told)
            .filter(|&told| told > 0 && local > 0)
            .unwrap_or(local);
        let mut ways: Vec<(Pick, u32)> = Vec::new();
        if t.local && local > 0 {
            ways.push((Pick::Local, local));
        }
        if let Some(p) = t.parent
            && Some(p.id) != from
            && t.parent_capacity > 0
        {
            ways.push((Pick::Neighbour(p), t.parent_capacity));
        }
        for (&id, c) in t.children.iter() {
            if Some(id) != from && c.capacity > 0 {
                ways.push((Pick::Neighbour(c.contact), c.capacity));
            }
        }
        let total: u64 = ways.iter().map(|&(_, w)| u64::from(w)).sum();
        if total == 0 {
            return Pick::None;
        }
        let mut r = rng.random_range(0..total);
        for (pick, w) in ways {
            if r < u64::from(w) {
                return pick;
            }
            r -= u64::from(w);
        }
        Pick::None
    }

    fn handle_message(
        &mut self,
        now: Instant,
        from: Contact,
        msg: ScribeMsg,
        router: &impl Router,
    ) {
        self.heard_from(now, from, router);
        match msg {
            ScribeMsg::Subscribe { key, group, index } => {
                self.on_subscribe(now, from, key, group, index, router)
            }
            ScribeMsg::Unsubscribe { key } => {
                if let Some(t) = self.trees.get_mut(&key)
                    && t.children.remove(&from.id).is_some()
                {
                    self.unref(from.id);
                    self.prune(key);
                }
            }
            ScribeMsg::Beat { caps, parents } => self.on_beat(from, caps, parents),
            ScribeMsg::Heads { key, heads } => self.on_heads(now, from, key, heads),
            ScribeMsg::Probe => self.on_probe(from),
            ScribeMsg::NotInTree { key } => {
                let Some(t) = self.trees.get_mut(&key) else {
                    return;
                };
                if t.children.remove(&from.id).is_some() {
                    self.unref(from.id);
                    self.prune(key);
                } else if t.parent.is_some_and(|p| p.id == from.id) {
                    // The parent lost the tree (or us): subscribe again, maybe through it.
                    // Once a beat at most, as for a lost parent: it says so for every
                    // multicast that crosses our SUBSCRIBE (which may wait on a full link
                    // while multicasts go ahead), and each SUBSCRIBE would queue behind
                    // the last. The next beat's root check attaches it otherwise.
                    t.parent = None;
                    let recent = t
                        .attached_at
                        .is_some_and(|at| now.saturating_duration_since(at) < self.cfg.beat);
                    self.unref(from.id);
                    if !recent {
                        self.attach(now, key, None, false, router);
                    }
                }
            }
        }
    }

    /// Beats, liveness, root moves; `capacity` is this node's own capacity for a group.
    fn handle_timeout(
        &mut self,
        now: Instant,
        router: &impl Router,
        capacity: &dyn Fn(&Group) -> u32,
    ) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Beat => {
                    self.timers.set(Timer::Beat, now + self.cfg.beat);
                    self.tick(now, router, capacity);
                }
                Timer::Probe(id) => self.probe_over(now, id, router),
            }
        }
    }

    /// When [`ScribeInput::Timeout`] is next due; `None` while the node is in no tree (it
    /// has nothing to beat for).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.trees.is_empty() && self.neighbours.is_empty() && self.hops.is_empty() {
            return None;
        }
        self.timers.next()
    }

    /// The next tree message to send.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<(Contact, ScribeMsg)> {
        crate::queue::pop_front(&mut self.outbox)
    }

    fn tick(&mut self, now: Instant, router: &impl Router, capacity: &dyn Fn(&Group) -> u32) {
        self.ticks += 1;
        if self.lateness.jumped(now, self.cfg.beat) {
            // This node was stopped: its neighbours' silence is its own. Each gets the
            // misses it had left a beat ago; this beat tells them this node is back.
            let fresh = now.saturating_sub(self.cfg.beat);
            for n in self.neighbours.values_mut() {
                n.last_heard = n.last_heard.max(fresh);
            }
            self.refresh_due = true;
        }
        self.release_lingering(now);
        self.hops.forget_unused(now);
        let limit = self.cfg.beat * self.cfg.misses;
        let silent: Vec<NodeId> = self
            .neighbours
            .iter()
            .filter(|(_, n)| now.saturating_duration_since(n.last_heard) > limit)
            .map(|(&id, _)| id)
            .collect();
        for id in silent {
            self.lost(now, id, router);
        }
        // A root the overlay no longer routes its key to hands over to the new root; a tree
        // whose parent was lost within a beat of its last subscription subscribes now.
        // The last parent lost is routed around only while there is another way.
        let roots: Vec<(NodeId, Option<NodeId>)> = self
            .trees
            .iter()
            .filter(|(_, t)| t.parent.is_none())
            .filter_map(|(&k, _)| {
                let avoid = self.avoided.get(&k).copied();
                if router.next_hop(k, avoid).is_some() {
                    Some((k, avoid))
                } else {
                    router.next_hop(k, None).map(|_| (k, None))
                }
            })
            .collect();
        for (key, avoid) in roots {
            self.attach(now, key, avoid, false, router);
        }
        if self.ticks.is_multiple_of(u64::from(self.cfg.refresh_every)) {
            self.follow_routes(now, router);
        }
        if self.ticks.is_multiple_of(60) {
            self.windows.expire(now);
        }
        self.beat(capacity);
    }

    /// Moves each tree whose parent is no longer the next hop toward its key (and was not
    /// attached within the last refresh) onto its route. Subscriptions follow the routes
    /// of their moment: while the overlay settles (a partition heals, a node's leaf set is
    /// mended) three nodes could each subscribe through the next, a cycle that no root
    /// reaches and that keeps itself alive with beats; multicasts to its members were lost
    /// for good. Routes are loop-free once the overlay has settled, so a parent graph that
    /// follows them is one tree.
    fn follow_routes(&mut self, now: Instant, router: &impl Router) {
        let settled = self.cfg.beat * self.cfg.refresh_every;
        let moved: Vec<NodeId> = self
            .trees
            .iter()
            .filter(|(_, t)| {
                t.attached_at
                    .is_none_or(|at| now.saturating_duration_since(at) >= settled)
            })
            .filter_map(|(&k, t)| {
                let parent = t.parent?;
                let hop = router.next_hop(k, None);
                (hop.map(|h| h.id) != Some(parent.id)).then_some(k)
            })
            .collect();
        // The node routed around when a parent was lost is not avoided for good: it may
        // have been only slow (a probe unanswered), and a tree off the overlay's routes is
        // not covered by their being loop-free.
        let trees = &self.trees;
        self.avoided.retain(|k, _| {
            trees.get(k).is_some_and(|t| {
                t.attached_at
                    .is_some_and(|at| now.saturating_duration_since(at) < settled)
            })
        });
        for key in moved {
            self.stats.rerouted += 1;
            self.attach(now, key, None, true, router);
        }
    }

    /// Tells the parents left by `follow_routes` a beat ago, unless the tree came back to
    /// one (then only the reference it took again is dropped).
    fn release_lingering(&mut self, now: Instant) {
        while self
            .lingering
            .front()
            .is_some_and(|&(due, _, _)| due <= now)
        {
            let Some((_, key, old)) = self.lingering.pop_front() else {
                break;
            };
            let back = self
                .trees
                .get(&key)
                .and_then(|t| t.parent)
                .is_some_and(|p| p.id == old.id);
            if !back {
                self.outbox.push_back((old, ScribeMsg::Unsubscribe { key }));
            }
            self.unref(old.id);
        }
    }

    fn on_subscribe(
        &mut self,
        now: Instant,
        from: Contact,
        key: NodeId,
        group: Group,
        index: u8,
        router: &impl Router,
    ) {
        if key != group.tree_key(index) || index >= self.cfg.splits {
            return; // not a tree of that group: a confused or malicious peer
        }
        let fresh = !self.trees.contains_key(&key);
        if fresh && !self.room_for_tree(&group) {
            return;
        }
        if fresh {
            let shared = self.group_of_siblings(&group, index);
            self.trees.insert(key, Tree::new(shared, index));
        }
        let Some(t) = self.trees.get_mut(&key) else {
            return;
        };
        if t.children.contains_key(&from.id) {
            self.send_heads(now, from, key);
            return;
        }
        if t.children.len() >= self.cfg.max_children || t.parent.is_some_and(|p| p.id == from.id) {
            self.stats.refused += 1;
            if fresh {
                self.trees.remove(&key);
            }
            return;
        }
        // A node subscribes only for members of its own or below it: until its first beat
        // says how many, it counts as one, so that requests reach a member that registered
        // a moment ago instead of finding the tree empty.
        t.children.insert(Child {
            contact: from,
            capacity: 1,
            told: u32::MAX,
        });
        self.add_ref(now, from);
        if fresh {
            self.attach(now, key, None, false, router);
        } else {
            self.send_heads(now, from, key);
        }
    }

    /// Gives a tree a parent: the next hop toward its key (around `avoid`), told by a
    /// SUBSCRIBE; or none, at the root.
    /// `linger`: the old parent is told a beat later (multicasts it sends meanwhile still
    /// arrive while the new parent joins the tree; the windows drop what comes twice).
    fn attach(
        &mut self,
        now: Instant,
        key: NodeId,
        avoid: Option<NodeId>,
        linger: bool,
        router: &impl Router,
    ) {
        let Some(t) = self.trees.get_mut(&key) else {
            return;
        };
        let hop = router.next_hop(key, avoid);
        if let Some(old) = t.parent.take() {
            if linger {
                self.lingering.push_back((now + self.cfg.beat, key, old));
            } else {
                self.outbox.push_back((old, ScribeMsg::Unsubscribe { key }));
                self.unref(old.id);
            }
        }
        let Some(t) = self.trees.get_mut(&key) else {
            return;
        };
        t.parent_capacity = 0;
        t.parent_told = u32::MAX;
        t.attached_at = Some(now);
        let Some(h) = hop else {
            return; // the root
        };
        if t.children.remove(&h.id).is_some() {
            // The overlay now routes the key through a child: the tree took its shape
            // before the routes changed (a root whose key moved on, a node whose parent
            // died). Never a child of its own child, that would be a loop; and staying
            // parentless for good would split the tree. So the child is let go (it
            // subscribes again along its own route) and this node stays parentless until
            // its next beat, when it subscribes along its route, through the former child
            // if the routes still say so. Should the child's route lead back here while
            // the overlay settles, it is simply taken back as a child: no loop forms.
            self.outbox.push_back((h, ScribeMsg::NotInTree { key }));
            self.unref(h.id);
            self.stats.handed_over += 1;
            return;
        }
        t.parent = Some(h);
        let msg = ScribeMsg::Subscribe {
            key,
            group: (*t.group).clone(),
            index: t.index,
        };
        self.stats.subscribes += 1;
        self.outbox.push_back((h, msg));
        self.add_ref(now, h);
        // And what this node took on the tree goes up: the new parent's side of the tree
        // learns of what was sent on this side (see `on_heads`).
        self.send_heads(now, h, key);
    }

    /// Leaves a tree nobody needs here any more.
    fn prune(&mut self, key: NodeId) {
        let Some(t) = self.trees.get(&key) else {
            return;
        };
        if !t.is_empty() {
            return;
        }
        let parent = t.parent;
        self.trees.remove(&key);
        self.avoided.remove(&key);
        self.windows.forget_tree(key);
        if let Some(p) = parent {
            self.outbox.push_back((p, ScribeMsg::Unsubscribe { key }));
            self.unref(p.id);
        }
    }

    fn add_ref(&mut self, now: Instant, c: Contact) {
        let n = self.neighbours.entry(c.id).or_insert(Neighbour {
            contact: c,
            trees: 0,
            last_heard: now,
            probed: None,
        });
        n.trees += 1;
        self.refs += 1;
    }

    fn unref(&mut self, id: NodeId) {
        if let Some(n) = self.neighbours.get_mut(&id) {
            self.refs -= usize::from(n.trees > 0);
            n.trees = n.trees.saturating_sub(1);
            if n.trees == 0 {
                self.neighbours.remove(&id);
            }
        }
    }
}
