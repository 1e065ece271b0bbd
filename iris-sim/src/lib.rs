//! Many Iris overlay nodes in one thread, in virtual time.
//!
//! One event queue ordered by (time, sequence number); nodes are called directly; every
//! random choice (ids, latencies, churn) comes from the seed, so a seed replays a run exactly
//! and its trace hash proves it. An oracle outside the nodes checks cheap invariants after
//! every event and, once the network has been quiet, that every leaf set is the true nearest
//! live nodes and that keys routed from every node reach the numerically closest live node
//! without loops.

mod oracle;

use iris_proto::Instant;
use iris_proto::overlay::{NodeId, Overlay, OverlayConfig, OverlayMsg};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
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
    /// One-way message latency, uniform in this range.
    pub latency: (Duration, Duration),
    /// Joins are spread over this long.
    pub join_spread: Duration,
    /// The overlay's own settings.
    pub overlay: OverlayConfig,
    /// Keys routed from every live node by the final oracle.
    pub keys_per_node: usize,
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
    /// Virtual seconds from the end of churn until every live node was converged.
    pub convergence_secs: f64,
    /// Overlay bytes sent per live node per virtual second, churn phase included.
    pub maintenance_bytes_per_node_per_sec: f64,
    /// Invariant violations found.
    pub violations: Vec<Violation>,
    /// Hash of every event processed: equal for equal seeds.
    pub trace_hash: u64,
}

impl Summary {
    /// The summary as one JSON object.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"nodes\":{},\"virtual_secs\":{:.1},\"events\":{},\"wall_secs\":{:.2},\"events_per_sec\":{:.0},\"mean_hops\":{:.3},\"p99_hops\":{},\"convergence_secs\":{:.1},\"maintenance_bytes_per_node_per_sec\":{:.1},\"violations\":{},\"trace_hash\":\"{:016x}\"}}",
            self.nodes,
            self.virtual_secs,
            self.events,
            self.wall_secs,
            self.events_per_sec,
            self.mean_hops,
            self.p99_hops,
            self.convergence_secs,
            self.maintenance_bytes_per_node_per_sec,
            self.violations.len(),
            self.trace_hash
        )
    }
}

#[derive(Debug)]
enum Event {
    /// A new node takes `slot` and joins.
    Join { slot: usize },
    /// A message arrives (if its addressee is still the node in `slot`).
    Deliver {
        slot: usize,
        to: NodeId,
        from: NodeId,
        msg: OverlayMsg,
    },
    /// A node's deadline.
    Timer { slot: usize, id: NodeId },
    /// Churn: a random live node crashes or leaves, and a new one will replace it.
    Churn,
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
}

/// Runs a whole simulation: joins, churn, then quiet until convergence, then the oracle.
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
    // Churn starts once the joins are done, at exponential intervals.
    sim.churn_until = joined + (cfg.minutes * 60e9) as u64;
    if cfg.churn > 0.0 && cfg.minutes > 0.0 {
        let first = joined + sim.churn_gap();
        sim.push(first, Event::Churn);
    }
    sim.run_until(sim.churn_until);
    // Quiet phase: no churn; wait for every node to converge (or give up after a while).
    // The slowest failure detection: table entries, pinged every few periods.
    let o = &cfg.overlay;
    let detect = o.heartbeat_period * (o.heartbeat_misses * o.table_ping_every.max(1) + 2);
    let limit = sim.churn_until + (detect * 6 + cfg.overlay.boot_quiet).as_nanos() as u64;
    let mut converged_at = None;
    let step = 1_000_000_000;
    // Crashes just before the end need a detection time to be noticed at all: convergence
    // only counts after that.
    let mut t = sim.churn_until + detect.as_nanos() as u64;
    sim.run_until(t);
    while t < limit {
        t += step;
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
    let (hops, mut violations) = oracle::check_final(&sim.live(), cfg.keys_per_node, &mut keys);
    sim.violations.append(&mut violations);
    let mut sorted = hops.clone();
    sorted.sort_unstable();
    let live = sim.by_id.len();
    let wall_secs = wall.elapsed().as_secs_f64();
    Summary {
        nodes: live,
        virtual_secs: end as f64 / 1e9,
        events: sim.events,
        wall_secs,
        events_per_sec: sim.events as f64 / wall_secs.max(1e-9),
        mean_hops: hops.iter().map(|&h| f64::from(h)).sum::<f64>() / hops.len().max(1) as f64,
        p99_hops: sorted
            .get(sorted.len().saturating_sub(1) * 99 / 100)
            .copied()
            .unwrap_or(0),
        convergence_secs: (end - sim.churn_until) as f64 / 1e9,
        maintenance_bytes_per_node_per_sec: sim.bytes_sent as f64
            / cfg.nodes.max(1) as f64
            / (end as f64 / 1e9),
        violations: sim.violations,
        trace_hash: sim.hash,
    }
}

impl Sim {
    fn new(cfg: SimConfig) -> Sim {
        Sim {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            slots: (0..cfg.nodes).map(|_| None).collect(),
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

    fn churn_gap(&mut self) -> u64 {
        // Replacements per second across the network; gaps are exponential.
        let rate = self.cfg.churn * self.cfg.nodes as f64 / 60.0;
        let u: f64 = self.rng.random_range(1e-12..1.0);
        (-u.ln() / rate * 1e9) as u64
    }

    fn trace(&mut self, kind: u64, slot: usize) {
        for word in [self.now, kind, slot as u64] {
            self.hash = (self.hash ^ word).wrapping_mul(0x0000_0100_0000_01b3);
        }
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
                let id = loop {
                    let id = NodeId(self.rng.random());
                    if !self.by_id.contains_key(&id) {
                        break id;
                    }
                };
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
                self.after(slot);
            }
            Event::Deliver {
                slot,
                to,
                from,
                msg,
            } => {
                self.trace(2, slot);
                let Some(node) = self.slots[slot].as_mut().filter(|n| n.overlay.id() == to) else {
                    return; // the addressee is gone: the message is lost
                };
                node.overlay.handle_message(now, from, msg);
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
                let live: Vec<usize> = self.by_id.values().copied().collect();
                if live.len() > 1 {
                    let slot = live[self.rng.random_range(0..live.len())];
                    let graceful = self.rng.random_bool(0.5);
                    if let Some(mut node) = self.slots[slot].take() {
                        if graceful {
                            node.overlay.leave();
                            self.slots[slot] = Some(node);
                            self.after(slot);
                            node = self.slots[slot].take().expect("just put back");
                        }
                        self.by_id.remove(&node.overlay.id());
                    }
                    // A new node takes the slot a little later (new id: a restart, as churn).
                    let delay = self.rng.random_range(1_000_000_000..10_000_000_000u64);
                    self.push(self.now + delay, Event::Join { slot });
                }
                let next = self.now + self.churn_gap();
                if next < self.churn_until {
                    self.push(next, Event::Churn);
                }
            }
        }
    }

    /// After a node was called: check it, ship its messages, schedule its deadline.
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
        while node.overlay.poll_event().is_some() {}
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
        let (lo, hi) = (
            self.cfg.latency.0.as_nanos() as u64,
            self.cfg.latency.1.as_nanos() as u64,
        );
        for (to, msg) in out {
            self.bytes_sent += msg.wire_size() as u64;
            let Some(&to_slot) = self.by_id.get(&to) else {
                continue; // no such live node: lost on the way
            };
            let at = self.now + self.rng.random_range(lo..=hi);
            self.push(
                at,
                Event::Deliver {
                    slot: to_slot,
                    to,
                    from,
                    msg,
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
