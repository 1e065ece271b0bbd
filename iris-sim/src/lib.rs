//! Many Iris overlay nodes in one thread, in virtual time.
//!
//! One event queue ordered by (time, sequence number); nodes are called directly; every
//! random choice (ids, latencies, churn, faults) comes from the seed, so a seed replays a run
//! exactly and its trace hash proves it. The network model gives each link a base latency
//! drawn once, jitter, FIFO order, an optional bandwidth, breaks that heal, a partition that
//! heals and delay spikes. An oracle outside the nodes checks cheap invariants after every
//! event and, once the network has been quiet, that every leaf set is the true nearest live
//! nodes and that keys routed from every node reach the numerically closest live node
//! without loops.

mod oracle;

use bytes::BytesMut;
use iris_proto::Instant;
use iris_proto::overlay::{NodeId, Overlay, OverlayConfig, OverlayEvent, wire};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::time::Duration;

pub use oracle::Violation;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Nodes in the network.
    pub nodes: usize,
    /// Virtual minutes of churn after the joins.
    pub minutes: f64,
    /// Fraction of the nodes replaced per virtual minute.
    pub churn: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Range of the links' base latencies (one way); each message adds up to a tenth of the
    /// range as jitter.
    pub latency: (Duration, Duration),
    /// Joins are spread over this long (zero: all at once).
    pub join_spread: Duration,
    /// The overlay's own settings.
    pub overlay: OverlayConfig,
    /// Keys routed from every live node by the final oracle.
    pub keys_per_node: usize,
    /// Bytes per second each link carries (`None`: unlimited).
    pub bandwidth: Option<u64>,
    /// Chance that a churned node comes back with its old id (a restart) instead of a new one.
    pub restart_same_id: f64,
    /// A partition that heals, if any.
    pub partition: Option<Partition>,
    /// Link breaks per virtual minute across the network, each lasting 10 to 60 s.
    pub link_breaks: f64,
    /// Fraction of messages delayed by `spike_delay` on top of their latency (the link stays
    /// FIFO, so what follows waits too: a real delay spike).
    pub spike_rate: f64,
    /// How long a spike delays.
    pub spike_delay: Duration,
}

/// A partition: from `start` after the joins, for `length`, a `fraction` of the nodes cannot
/// reach the others.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Partition {
    /// When it starts, counted from the end of the joins.
    pub start: Duration,
    /// How long it lasts.
    pub length: Duration,
    /// Share of the nodes on the minority side.
    pub fraction: f64,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            nodes: 100,
            minutes: 1.0,
            churn: 0.05,
            seed: 1,
            latency: (Duration::from_millis(1), Duration::from_millis(30)),
            join_spread: Duration::from_secs(20),
            overlay: OverlayConfig::default(),
            keys_per_node: 4,
            bandwidth: None,
            restart_same_id: 0.2,
            partition: None,
            link_breaks: 0.0,
            spike_rate: 0.0,
            spike_delay: Duration::from_secs(5),
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Live nodes at the end.
    pub nodes: usize,
    /// Virtual seconds simulated.
    pub virtual_secs: f64,
    /// Events processed.
    pub events: u64,
    /// Wall-clock seconds.
    pub wall_secs: f64,
    /// Events per wall-clock second.
    pub events_per_sec: f64,
    /// Mean hops of the oracle's routes.
    pub mean_hops: f64,
    /// 99th percentile of hops.
    pub p99_hops: u32,
    /// Virtual seconds from the last fault until every live node was converged.
    pub convergence_secs: f64,
    /// Overlay bytes sent per node per virtual second, churn phase included.
    pub maintenance_bytes_per_node_per_sec: f64,
    /// Live, reachable peers declared dead after they had been up longer than the failure
    /// detector needs (a slow link must not kill a node).
    pub false_deaths: u64,
    /// Invariant violations found.
    pub violations: Vec<Violation>,
    /// Hash of every event processed: equal for equal seeds.
    pub trace_hash: u64,
}

impl Summary {
    /// The summary as one JSON object.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"nodes\":{},\"virtual_secs\":{:.1},\"events\":{},\"wall_secs\":{:.2},\"events_per_sec\":{:.0},\"mean_hops\":{:.3},\"p99_hops\":{},\"convergence_secs\":{:.1},\"maintenance_bytes_per_node_per_sec\":{:.1},\"false_deaths\":{},\"violations\":{},\"trace_hash\":\"{:016x}\"}}",
            self.nodes,
            self.virtual_secs,
            self.events,
            self.wall_secs,
            self.events_per_sec,
            self.mean_hops,
            self.p99_hops,
            self.convergence_secs,
            self.maintenance_bytes_per_node_per_sec,
            self.false_deaths,
            self.violations.len(),
            self.trace_hash
        )
    }
}

#[derive(Debug)]
enum Event {
    /// A node takes `slot` and joins (a new id, or an old one restarting).
    Join { slot: usize },
    /// A framed message arrives (if its addressee is still the node in `slot`).
    Deliver {
        slot: usize,
        to: NodeId,
        frame: BytesMut,
    },
    /// A node's deadline.
    Timer { slot: usize, id: NodeId },
    /// Churn: a random live node crashes or leaves, and another will take its slot.
    Churn,
    /// The partition starts or heals.
    Partition { on: bool },
    /// A random link breaks for a while.
    LinkBreak,
}

struct Queued {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Queued) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Queued) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Queued) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

struct SimNode {
    overlay: Overlay,
    timer_at: Option<u64>,
}

/// A simulation in progress.
struct Sim {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    slots: Vec<Option<SimNode>>,
    by_id: BTreeMap<NodeId, usize>,
    events: u64,
    bytes_sent: u64,
    hash: u64,
    violations: Vec<Violation>,
    churn_until: u64,
    /// Per directed link: when it is free to send again, and its last delivery (FIFO).
    links: HashMap<(NodeId, NodeId), (u64, u64)>,
    /// Broken links (smaller id first) and when they heal.
    broken: HashMap<(NodeId, NodeId), u64>,
    /// During a partition: the ids on the minority side.
    minority: Option<BTreeSet<NodeId>>,
    /// When each live id (re)joined, to tell false deaths from real ones.
    born: BTreeMap<NodeId, u64>,
    false_deaths: u64,
    /// Ids that left by churn and may come back (restarts with the same id).
    departed: Vec<NodeId>,
    /// The last fault (churn, partition, break); healing is awaited from there.
    last_fault: u64,
    /// The slowest failure detection, in nanoseconds (table entries).
    detect: u64,
}

/// Runs a whole simulation: joins, faults, then quiet until convergence, then the oracle.
pub fn run(cfg: &SimConfig) -> Summary {
    let wall = std::time::Instant::now();
    let mut sim = Sim::new(cfg.clone());
    for slot in 0..cfg.nodes {
        let at = sim.rng.random_range(0..=cfg.join_spread.as_nanos() as u64);
        // The first node founds the ring at time 0; the others join after it.
        let at = if slot == 0 { 0 } else { at.max(1) };
        sim.push(at, Event::Join { slot });
    }
    let joined = cfg.join_spread.as_nanos() as u64;
    sim.churn_until = joined + (cfg.minutes * 60e9) as u64;
    if cfg.churn > 0.0 && cfg.minutes > 0.0 {
        let first = joined + sim.churn_gap();
        sim.push(first, Event::Churn);
    }
    if let Some(p) = cfg.partition {
        let start = joined + p.start.as_nanos() as u64;
        let end = start + p.length.as_nanos() as u64;
        sim.push(start, Event::Partition { on: true });
        sim.push(end, Event::Partition { on: false });
        sim.churn_until = sim.churn_until.max(end);
    }
    if cfg.link_breaks > 0.0 && cfg.minutes > 0.0 {
        let first = joined + sim.gap(cfg.link_breaks / 60.0);
        sim.push(first, Event::LinkBreak);
    }
    sim.run_until(sim.churn_until);

    // Quiet phase. Faults just before its start need the failure detector's time to be
    // noticed at all, and healed links a graveyard probe plus a self-lookup to be used
    // again: convergence only counts after that.
    let o = &cfg.overlay;
    let heal = if cfg.partition.is_some() || cfg.link_breaks > 0.0 {
        let cycle = o.heartbeat_period * o.self_lookup_every.max(1);
        Duration::from_nanos(sim.detect) * 2 + cycle * 3
    } else {
        Duration::from_nanos(sim.detect)
    };
    let settle_from = sim.churn_until.max(sim.last_fault);
    let limit = settle_from
        + (heal + Duration::from_nanos(sim.detect) * 6 + o.boot_quiet).as_nanos() as u64;
    let mut t = settle_from + heal.as_nanos() as u64;
    sim.run_until(t);
    let mut converged_at = None;
    while t < limit {
        t += 1_000_000_000;
        sim.run_until(t);
        if sim.all_converged() {
            converged_at = Some(t);
            break;
        }
    }
    let end = converged_at.unwrap_or(limit);
    if converged_at.is_none() {
        sim.violations.push(Violation::NotConverged);
    }
    // The oracle draws its keys from a generator of its own, derived from the seed.
    let mut keys = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6f72_6163_6c65);
    let (hops, mut violations) = oracle::check_final(
        &sim.live(),
        cfg.overlay.leaf_set_size / 2,
        cfg.keys_per_node,
        &mut keys,
    );
    sim.violations.append(&mut violations);
    let mut sorted = hops.clone();
    sorted.sort_unstable();
    let wall_secs = wall.elapsed().as_secs_f64();
    Summary {
        nodes: sim.by_id.len(),
        virtual_secs: end as f64 / 1e9,
        events: sim.events,
        wall_secs,
        events_per_sec: sim.events as f64 / wall_secs.max(1e-9),
        mean_hops: hops.iter().map(|&h| f64::from(h)).sum::<f64>() / hops.len().max(1) as f64,
        p99_hops: sorted
            .get(sorted.len().saturating_sub(1) * 99 / 100)
            .copied()
            .unwrap_or(0),
        convergence_secs: (end - settle_from) as f64 / 1e9,
        maintenance_bytes_per_node_per_sec: sim.bytes_sent as f64
            / cfg.nodes.max(1) as f64
            / (end as f64 / 1e9),
        false_deaths: sim.false_deaths,
        violations: sim.violations,
        trace_hash: sim.hash,
    }
}

impl Sim {
    fn new(cfg: SimConfig) -> Sim {
        let o = &cfg.overlay;
        let detect = o.heartbeat_period * (o.heartbeat_misses * o.table_ping_every.max(1) + 2);
        Sim {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            slots: (0..cfg.nodes).map(|_| None).collect(),
            detect: detect.as_nanos() as u64,
            cfg,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            by_id: BTreeMap::new(),
            events: 0,
            bytes_sent: 0,
            hash: 0xcbf2_9ce4_8422_2325,
            violations: Vec::new(),
            churn_until: 0,
            links: HashMap::new(),
            broken: HashMap::new(),
            minority: None,
            born: BTreeMap::new(),
            false_deaths: 0,
            departed: Vec::new(),
            last_fault: 0,
        }
    }

    fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at,
            seq: self.seq,
            event,
        }));
    }

    /// An exponential gap between churn events (replacements per second network-wide).
    fn churn_gap(&mut self) -> u64 {
        self.gap(self.cfg.churn * self.cfg.nodes as f64 / 60.0)
    }

    /// An exponential gap for events at `rate` per second.
    fn gap(&mut self, rate: f64) -> u64 {
        let u: f64 = self.rng.random_range(1e-12..1.0);
        (-u.ln() / rate * 1e9) as u64
    }

    /// Folds an event into the trace hash (FNV-1a over its time, kind and slot).
    fn trace(&mut self, kind: u64, slot: usize) {
        for word in [self.now, kind, slot as u64] {
            self.hash = (self.hash ^ word).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// True if messages between `a` and `b` cannot pass now.
    fn cut(&self, a: NodeId, b: NodeId) -> bool {
        let split = self
            .minority
            .as_ref()
            .is_some_and(|m| m.contains(&a) != m.contains(&b));
        split
            || self
                .broken
                .get(&pair(a, b))
                .is_some_and(|&until| until > self.now)
    }

    /// When a message of `size` bytes sent now from `from` arrives at `to`.
    fn arrival(&mut self, from: NodeId, to: NodeId, size: usize) -> u64 {
        let (lo, hi) = (
            self.cfg.latency.0.as_nanos() as u64,
            self.cfg.latency.1.as_nanos() as u64,
        );
        // Each link has its own base latency, drawn once from the seed; messages add jitter.
        let span = hi.saturating_sub(lo);
        let base = lo + mix(self.cfg.seed, pair(from, to)) % (span + 1);
        let jitter = self.rng.random_range(0..=span / 10);
        let spike = if self.cfg.spike_rate > 0.0 && self.rng.random_bool(self.cfg.spike_rate) {
            self.cfg.spike_delay.as_nanos() as u64
        } else {
            0
        };
        let (free, last) = self.links.get(&(from, to)).copied().unwrap_or((0, 0));
        let tx = self
            .cfg
            .bandwidth
            .map_or(0, |bw| size as u64 * 1_000_000_000 / bw.max(1));
        let depart = self.now.max(free) + tx;
        // TCP keeps a link's messages in order: nothing overtakes a delayed one.
        let at = (depart + base + jitter + spike).max(last);
        self.links.insert((from, to), (depart, at));
        at
    }

    fn run_until(&mut self, until: u64) {
        while let Some(Reverse(q)) = self.queue.peek() {
            if q.at > until {
                break;
            }
            let Some(Reverse(q)) = self.queue.pop() else {
                break;
            };
            self.now = q.at;
            self.events += 1;
            self.step(q.event);
        }
        self.now = self.now.max(until);
    }

    fn step(&mut self, event: Event) {
        let now = Instant::from_nanos(self.now);
        match event {
            Event::Join { slot } => {
                self.trace(1, slot);
                let id = self.new_id();
                let mut overlay = Overlay::new(id, self.cfg.overlay.clone(), now);
                let live: Vec<NodeId> = self.by_id.keys().copied().collect();
                if !live.is_empty() {
                    let contact = live[self.rng.random_range(0..live.len())];
                    overlay.join(now, contact);
                }
                self.slots[slot] = Some(SimNode {
                    overlay,
                    timer_at: None,
                });
                self.by_id.insert(id, slot);
                self.born.insert(id, self.now);
                self.after(slot);
            }
            Event::Deliver {
                slot,
                to,
                mut frame,
            } => {
                self.trace(2, slot);
                let Some(node) = self.slots[slot].as_mut().filter(|n| n.overlay.id() == to) else {
                    return; // the addressee is gone: the message is lost
                };
                // Every message crosses the wire format, as it will between real nodes.
                match wire::decode(&mut frame) {
                    Ok(Some((from, msg))) if frame.is_empty() => {
                        node.overlay.handle_message(now, from, msg)
                    }
                    other => self.violations.push(Violation::Wire(format!("{other:?}"))),
                }
                self.after(slot);
            }
            Event::Timer { slot, id } => {
                self.trace(3, slot);
                let at = self.now;
                let Some(node) = self.slots[slot].as_mut().filter(|n| n.overlay.id() == id) else {
                    return;
                };
                if node.timer_at != Some(at) {
                    return; // superseded by an earlier deadline
                }
                node.timer_at = None;
                node.overlay.handle_timeout(now);
                self.after(slot);
            }
            Event::Churn => {
                self.trace(4, 0);
                self.churn_one();
                let next = self.now + self.churn_gap();
                if next < self.churn_until {
                    self.push(next, Event::Churn);
                }
            }
            Event::Partition { on } => {
                self.trace(5, usize::from(on));
                self.last_fault = self.now;
                self.minority = on.then(|| {
                    let fraction = self.cfg.partition.map_or(0.5, |p| p.fraction);
                    let ids: Vec<NodeId> = self.by_id.keys().copied().collect();
                    ids.into_iter()
                        .filter(|_| self.rng.random_bool(fraction))
                        .collect()
                });
            }
            Event::LinkBreak => {
                self.trace(6, 0);
                self.break_a_link();
                let next = self.now + self.gap(self.cfg.link_breaks / 60.0);
                if next < self.churn_until {
                    self.push(next, Event::LinkBreak);
                }
            }
        }
    }

    /// A fresh id, or (a restart) the id of a node that left earlier.
    fn new_id(&mut self) -> NodeId {
        if !self.departed.is_empty() && self.rng.random_bool(self.cfg.restart_same_id) {
            let i = self.rng.random_range(0..self.departed.len());
            let id = self.departed.swap_remove(i);
            if !self.by_id.contains_key(&id) {
                return id;
            }
        }
        loop {
            let id = NodeId(self.rng.random());
            if !self.by_id.contains_key(&id) {
                return id;
            }
        }
    }

    /// A random live node crashes or leaves gracefully; a node joins its slot later.
    fn churn_one(&mut self) {
        let live: Vec<usize> = self.by_id.values().copied().collect();
        if live.len() < 2 {
            return;
        }
        let slot = live[self.rng.random_range(0..live.len())];
        if self.rng.random_bool(0.5) {
            if let Some(node) = self.slots[slot].as_mut() {
                node.overlay.leave();
            }
            self.after(slot);
        }
        if let Some(node) = self.slots[slot].take() {
            let id = node.overlay.id();
            self.by_id.remove(&id);
            self.born.remove(&id);
            self.departed.push(id);
        }
        self.last_fault = self.now;
        let delay = self.rng.random_range(1_000_000_000..10_000_000_000u64);
        self.push(self.now + delay, Event::Join { slot });
    }

    /// Breaks the link between a random live node and one of its leaves for 10 to 60 s.
    fn break_a_link(&mut self) {
        let live: Vec<usize> = self.by_id.values().copied().collect();
        if live.is_empty() {
            return;
        }
        let slot = live[self.rng.random_range(0..live.len())];
        let Some(node) = self.slots[slot].as_ref() else {
            return;
        };
        let a = node.overlay.id();
        let peers: Vec<NodeId> = node.overlay.leaves().members().collect();
        if peers.is_empty() {
            return;
        }
        let b = peers[self.rng.random_range(0..peers.len())];
        let until = self.now + self.rng.random_range(10_000_000_000..60_000_000_000u64);
        self.broken.insert(pair(a, b), until);
        self.last_fault = self.last_fault.max(until);
    }

    /// After a node was called: check it, ship its messages, note its verdicts, schedule
    /// its deadline.
    fn after(&mut self, slot: usize) {
        let Some(node) = self.slots[slot].as_mut() else {
            return;
        };
        // Cheap invariants of the node just touched: the only one that can have changed.
        oracle::check_cheap(std::iter::once(&node.overlay), &mut self.violations);
        let from = node.overlay.id();
        let mut out = Vec::new();
        while let Some(m) = node.overlay.poll_send() {
            out.push(m);
        }
        let mut downs = Vec::new();
        let mut alone = false;
        while let Some(e) = node.overlay.poll_event() {
            match e {
                OverlayEvent::PeerDown(id) => downs.push(id),
                OverlayEvent::Alone => alone = true,
                OverlayEvent::Converged { .. } => {}
            }
        }
        if alone {
            // Discovery's part: offer another live node to join through.
            let live: Vec<NodeId> = self
                .by_id
                .keys()
                .copied()
                .filter(|&id| id != node.overlay.id())
                .collect();
            if !live.is_empty() {
                let contact = live[self.rng.random_range(0..live.len())];
                node.overlay.join(Instant::from_nanos(self.now), contact);
            }
        }
        let deadline = node
            .overlay
            .poll_timeout()
            .map(|t| t.as_nanos().max(self.now));
        let reschedule = match (deadline, node.timer_at) {
            (Some(d), Some(t)) => d < t,
            (Some(_), None) => true,
            _ => false,
        };
        if reschedule {
            node.timer_at = deadline;
        }
        if let (true, Some(d)) = (reschedule, deadline) {
            self.push(d, Event::Timer { slot, id: from });
        }
        for id in downs {
            let up_long = self
                .born
                .get(&id)
                .is_some_and(|&b| self.now.saturating_sub(b) > self.detect);
            if up_long && !self.cut(from, id) {
                self.false_deaths += 1;
            }
        }
        for (to, msg) in out {
            let mut frame = BytesMut::with_capacity(msg.wire_size());
            wire::encode(from, &msg, &mut frame);
            let size = frame.len();
            self.bytes_sent += size as u64;
            let Some(&to_slot) = self.by_id.get(&to) else {
                continue; // no such live node: lost on the way
            };
            if self.cut(from, to) {
                continue; // partitioned or broken: lost
            }
            let at = self.arrival(from, to, size);
            self.push(
                at,
                Event::Deliver {
                    slot: to_slot,
                    to,
                    frame,
                },
            );
        }
    }

    fn all_converged(&self) -> bool {
        self.by_id.values().all(|&s| {
            self.slots[s]
                .as_ref()
                .is_some_and(|n| n.overlay.is_converged())
        })
    }

    fn live(&self) -> Vec<&Overlay> {
        self.by_id
            .values()
            .filter_map(|&s| self.slots[s].as_ref().map(|n| &n.overlay))
            .collect()
    }
}

/// A link's key, the same both ways.
fn pair(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    if a <= b { (a, b) } else { (b, a) }
}

/// A stable pseudo-random number for a link (SplitMix64 over the seed and both ids).
fn mix(seed: u64, (a, b): (NodeId, NodeId)) -> u64 {
    let mut x = seed ^ (a.0 as u64) ^ ((b.0 >> 64) as u64).rotate_left(17);
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
