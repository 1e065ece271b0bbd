//! Many Iris nodes in one thread, in virtual time.
//!
//! Each simulated machine runs a real [`iris_proto::Node`] with its mesh: the simulator is
//! its driver. It answers the node's dials with connections, carries the bytes of every link
//! (handshake, records, overlay messages) and reports closes, exactly as the tokio driver
//! does with sockets. One event queue ordered by (time, sequence number); nodes are called
//! directly; every random choice (ids, latencies, churn, faults) comes from the seed, so a
//! seed replays a run exactly and its trace hash proves it. The network model gives each
//! pair of machines a base latency drawn once, jitter, FIFO byte streams, an optional
//! bandwidth per connection, link breaks and a partition that heal (connections across
//! them are cut and dials time out meanwhile) and delay spikes. Links are plain (no
//! cryptography) unless [`SimConfig::security`] says otherwise: the real handshake costs
//! two RSA signatures per link, too many for thousands of nodes on one core. An oracle outside the nodes checks cheap invariants after every
//! event and, once the network has been quiet, that every leaf set is the true nearest live
//! nodes and that keys routed from every node reach the numerically closest live node
//! without loops.

mod auditor;
mod clients;
mod config;
mod oracle;
pub mod swarm;
mod tree_check;
mod workload;

use bytes::Bytes;
use iris_proto::NodeId;
use iris_proto::inspect::Overlay;
use iris_proto::{
    Config, DialId, Event as NodeEvent, Input, Instant, LinkId, MeshConfig, MeshEvent, Node, Output,
};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

pub use auditor::Audit;
pub use config::{Partition, SimConfig, Summary};
pub use oracle::Violation;
pub use workload::Workload;

/// A map for lookups, hashed with a fixed seed and never walked in its own order (see
/// `LookupMap`): runs stay deterministic.
type Map<K, V> = iris_proto::inspect::LookupMap<K, V>;

/// A dial fails after this long when the network drops its packets (a partition, a break).
const CONNECT_TIMEOUT: u64 = 5_000_000_000;

#[derive(Debug)]
enum Event {
    /// A node takes `slot` and joins (a new id, or an old one restarting).
    Join { slot: usize },
    /// A node's deadline.
    Timer { slot: usize, inc: u64 },
    /// A connection attempt reaches the machine in slot `to`.
    Syn {
        from: usize,
        inc: u64,
        dial: DialId,
        to: usize,
    },
    /// The dialer learns the outcome: a connection, or a failure.
    Dialed {
        slot: usize,
        inc: u64,
        dial: DialId,
        conn: Option<u64>,
    },
    /// Bytes arrive at one end of a connection.
    Deliver { conn: u64, side: usize, data: Bytes },
    /// One end learns that the connection is gone.
    Fin { conn: u64, side: usize },
    /// Churn: a random live node crashes or leaves, and another will take its slot.
    Churn,
    /// A node that left gracefully exits: whatever it still held closes.
    Exit { slot: usize, inc: u64 },
    /// The partition starts or heals.
    Partition { on: bool },
    /// A random link breaks for a while.
    LinkBreak,
    /// A client has read what its node wrote it (its socket drains at the client's rate);
    /// `written` is when the node handed it to the socket.
    ClientRead {
        client: usize,
        life: u64,
        data: Bytes,
        written: u64,
    },
    /// A client writes, after thinking (a service answering).
    ClientWrite {
        client: usize,
        life: u64,
        data: Bytes,
    },
    /// An actor acts.
    Act { client: usize, life: u64 },
    /// The node hosting the first service crashes (a fault the test chose).
    KillServiceNode,
    /// A random live node stops for a while (see `SimConfig::stalls`).
    Stall,
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
    node: Node,
    /// Which incarnation of the slot this is: events for an earlier one are dropped.
    inc: u64,
    timer_at: Option<u64>,
    /// Stopped until then (a stall): its events wait, in order, until it resumes.
    stalled_until: u64,
}

impl SimNode {
    fn overlay(&self) -> &Overlay {
        self.node
            .mesh()
            .expect("simulated nodes are networked")
            .overlay()
    }
}

/// A TCP connection between two machines. Side 0 dialed, side 1 accepted; side `s` knows
/// it as `LinkId(2 * id + s)`.
struct Conn {
    /// Each end's slot and incarnation.
    ends: [(usize, u64); 2],
    /// Each end still holds it.
    open: [bool; 2],
    /// Per direction (by receiving side): when the sender may send again (bandwidth),
    /// and the last arrival (FIFO).
    free: [u64; 2],
    last: [u64; 2],
}

/// A simulation in progress.
struct Sim {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    slots: Vec<Option<SimNode>>,
    incarnations: Vec<u64>,
    addrs: Map<SocketAddr, usize>,
    by_id: BTreeMap<NodeId, usize>,
    conns: Map<u64, Conn>,
    /// The connections each slot has an end of, whichever incarnation: a process that exits
    /// closes its own without a walk over every connection of the network.
    slot_conns: Vec<Vec<u64>>,
    next_conn: u64,
    events: u64,
    bytes_sent: u64,
    hash: u64,
    violations: Vec<Violation>,
    churn_until: u64,
    /// Broken machine pairs (smaller slot first) and when they heal.
    broken: Map<(usize, usize), u64>,
    /// During a partition: the slots on the minority side.
    minority: Option<BTreeSet<usize>>,
    /// When each live id (re)joined, to tell false deaths from real ones.
    born: BTreeMap<NodeId, u64>,
    false_deaths: u64,
    /// Slots whose node was stopped at some point (a stall): taken for dead then, which is
    /// no false death.
    stalled: std::collections::BTreeSet<usize>,
    /// Ids that left by churn and may come back (restarts with the same id).
    departed: Vec<NodeId>,
    /// The last fault (churn, partition, break); healing is awaited from there.
    last_fault: u64,
    /// The slowest failure detection, in nanoseconds (table entries).
    detect: u64,
    /// A node's outputs, reused between calls.
    outs: Vec<Output>,
    /// The messaging workload's clients, and who owns which connection.
    clients: Vec<workload::Slot>,
    conn_owner: Map<(usize, iris_proto::ConnId), usize>,
    auditor: Option<auditor::Auditor>,
    next_client_key: u64,
    next_client_conn: u64,
    next_msg: u64,
    /// Tree maintenance bytes of nodes that are gone.
    tree_bytes_gone: u64,
}

/// Runs a whole simulation: joins, faults, then quiet until convergence, then the oracle.
pub fn run(cfg: &SimConfig) -> Summary {
    let wall = std::time::Instant::now();
    let mut sim = Sim::new(cfg.clone());
    sim.place_clients();
    for slot in 0..cfg.nodes {
        let at = sim.rng.random_range(0..=cfg.join_spread.as_nanos() as u64);
        // The first node founds the ring at time 0; the others join after it.
        let at = if slot == 0 { 0 } else { at.max(1) };
        sim.push(at, Event::Join { slot });
    }
    let joined = cfg.join_spread.as_nanos() as u64;
    sim.churn_until = joined + (cfg.minutes * 60e9) as u64;
    // Faults begin after the joins and end at `churn_until`, where the quiet phase begins:
    // a first one drawn past it does not happen (as its successors would not).
    if cfg.churn > 0.0 && cfg.minutes > 0.0 {
        let first = joined + sim.churn_gap();
        if first < sim.churn_until {
            sim.push(first, Event::Churn);
        }
    }
    if let Some(p) = cfg.partition {
        let start = joined + p.start.as_nanos() as u64;
        let end = start + p.length.as_nanos() as u64;
        sim.push(start, Event::Partition { on: true });
        sim.push(end, Event::Partition { on: false });
        sim.churn_until = sim.churn_until.max(end);
    }
    if let Some(at) = cfg.kill_service_node_at {
        sim.push(joined + at.as_nanos() as u64, Event::KillServiceNode);
    }
    if cfg.link_breaks > 0.0 && cfg.minutes > 0.0 {
        let first = joined + sim.gap(cfg.link_breaks / 60.0);
        if first < sim.churn_until {
            sim.push(first, Event::LinkBreak);
        }
    }
    if cfg.stalls > 0.0 && cfg.minutes > 0.0 {
        let first = joined + sim.gap(cfg.stalls / 60.0);
        if first < sim.churn_until {
            sim.push(first, Event::Stall);
        }
    }
    sim.run_until(sim.churn_until);

    let quiet = quiet_phase(&mut sim, cfg);
    // The final checks: routing tables are judged once the failure detector had time to
    // find every dead entry (a table entry is pinged every few periods).
    let end = quiet.settled_at().max(quiet.from + sim.detect);
    sim.run_until(end);
    // Peers never send what does not parse: any such message is a bug in the core.
    for n in sim.slots.iter().flatten() {
        let bad = n.node.mesh().map_or(0, |m| m.stats().bad_messages);
        if bad > 0 {
            sim.violations.push(Violation::Wire(format!(
                "node {} received {bad} malformed peer messages",
                n.overlay().id()
            )));
        }
    }
    if let Some(w) = cfg.workload.clone() {
        let found = tree_check::tree_phase(&mut sim, &w);
        sim.violations.extend(found);
    }
    // The oracle draws its keys from a generator of its own, derived from the seed.
    let mut keys = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6f72_6163_6c65);
    let (hops, mut violations, fill) = oracle::check_final(
        &sim.live(),
        cfg.overlay.leaf_set_size / 2,
        cfg.keys_per_node,
        &mut keys,
    );
    sim.violations.append(&mut violations);
    let mut sorted = hops.clone();
    sorted.sort_unstable();
    let audit = sim.finish_audit(end);
    let tree_bytes = sim.tree_bytes_gone
        + sim
            .slots
            .iter()
            .flatten()
            .map(|n| n.node.stats().tree_bytes_out)
            .sum::<u64>();
    let links: Vec<usize> = sim
        .slots
        .iter()
        .flatten()
        .map(|n| n.node.status().links)
        .collect();
    let links_refused = sim
        .slots
        .iter()
        .flatten()
        .filter_map(|n| n.node.status().mesh)
        .map(|m| m.links_refused)
        .sum();
    let wall_secs = wall.elapsed().as_secs_f64();
    Summary {
        links_mean: links.iter().sum::<usize>() as f64 / links.len().max(1) as f64,
        links_max: links.iter().copied().max().unwrap_or(0),
        links_refused,
        convergence_bound_secs: quiet.bound.as_secs_f64(),
        table_fill: fill.filled as f64 / fill.fillable.max(1) as f64,
        peak_rss_mib: peak_rss_mib(),
        audit,
        tree_bytes_per_node_per_sec: tree_bytes as f64
            / cfg.nodes.max(1) as f64
            / (end as f64 / 1e9),
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
        convergence_secs: (quiet.settled_at() - quiet.from) as f64 / 1e9,
        maintenance_bytes_per_node_per_sec: sim.bytes_sent as f64
            / cfg.nodes.max(1) as f64
            / (end as f64 / 1e9),
        false_deaths: sim.false_deaths,
        misplaced_helped: sim.live().iter().map(|o| o.misplaced_helped()).sum(),
        violations: sim.violations,
        trace_hash: sim.hash,
    }
}

/// The process's peak resident memory in MiB, from `/proc/self/status` (0 elsewhere).
fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib / 1024)
}

/// What the quiet phase after the last fault measured (virtual ns).
struct Quiet {
    /// When it began.
    from: u64,
    /// The liveness bound it was held to.
    bound: Duration,
    /// When the overlay was right, if it was within the bound.
    right_at: Option<u64>,
}

impl Quiet {
    /// When the overlay was right, or the bound's end if it never was.
    fn settled_at(&self) -> u64 {
        self.right_at
            .unwrap_or(self.from + self.bound.as_nanos() as u64)
    }
}

/// Quiet phase: every second, is the overlay right (every leaf set the true nearest live
/// nodes, every table entry a live node in its slot)? It must be within the liveness bound.
/// (What nodes say of themselves, `is_converged`, is for their readiness: a node calls
/// itself unconverged while its table still fills, which is no fault.)
fn quiet_phase(sim: &mut Sim, cfg: &SimConfig) -> Quiet {
    let from = sim.churn_until.max(sim.last_fault);
    let bound = liveness_bound(cfg, sim.by_id.len());
    let limit = from + bound.as_nanos() as u64;
    let mut t = from;
    let mut right_at = None;
    while t < limit {
        t += 1_000_000_000;
        sim.run_until(t);
        if oracle::overlay_right(&sim.live(), cfg.overlay.leaf_set_size / 2) {
            right_at = Some(t);
            break;
        }
    }
    if right_at.is_none() {
        sim.violations.push(Violation::NotConverged {
            bound_secs: bound.as_secs(),
        });
    }
    Quiet {
        from,
        bound,
        right_at,
    }
}

/// How long after the last fault the overlay must be right (every leaf set the true nearest
/// live nodes, every routing-table entry a live node in its slot):
///
/// - a dead routing-table entry is noticed after `heartbeat_misses × table_ping_every + 2`
///   heartbeat periods (table entries are pinged every `table_ping_every` periods; the
///   last pong may come just before a ping is due; leaves are pinged every period, so
///   they are noticed sooner); a node joining at the last fault is quiet for `boot_quiet`:
///   whichever is longer;
/// - repair then takes a round of leaf-set gossip per hop a join or a lookup routes through,
///   `⌈log16 N⌉` of them, plus two for the exchange between the dead node's neighbours;
/// - and `change_quiet` more, the time a node waits before it calls itself converged (a
///   margin here: the check itself looks at the nodes' state, not at what they say);
/// - after link breaks and partitions, a node that gave up on a peer hears of it again
///   only through a graveyard probe or a self-lookup, each once a self-lookup cycle
///   (`self_lookup_every` periods): two of those more.
///
/// With the default overlay settings (3 s heartbeat, 3 misses, tables pinged every third
/// period) that is 33 s + 3 s + 3 s × (⌈log16 N⌉ + 2): 48 s up to 256 nodes, 51 s up to
/// 4096, 54 s up to 65,536; 60 s more with link breaks or a partition.
pub fn liveness_bound(cfg: &SimConfig, nodes: usize) -> Duration {
    let o = &cfg.overlay;
    let hops = (nodes.max(2) as f64).log(16.0).ceil() as u32;
    let detect = o.heartbeat_period * (o.heartbeat_misses * o.table_ping_every.max(1) + 2);
    let mut bound = detect.max(o.boot_quiet) + o.change_quiet + o.heartbeat_period * (hops + 2);
    if cfg.partition.is_some() || cfg.link_breaks > 0.0 || cfg.stalls > 0.0 {
        bound += o.heartbeat_period * o.self_lookup_every.max(1) * 2;
    }
    bound
}

/// The address of the machine in `slot` (never dialed for real: the simulator routes it).
fn addr_of(slot: usize) -> SocketAddr {
    let n = slot as u32 + 1;
    SocketAddr::from((
        Ipv4Addr::new(127, (n >> 16) as u8, (n >> 8) as u8, n as u8),
        7000,
    ))
}

impl Sim {
    fn new(cfg: SimConfig) -> Sim {
        let o = &cfg.overlay;
        let detect = o.heartbeat_period * (o.heartbeat_misses * o.table_ping_every.max(1) + 2);
        let nodes = cfg.nodes;
        Sim {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            slots: (0..cfg.nodes).map(|_| None).collect(),
            incarnations: vec![0; cfg.nodes],
            addrs: {
                let mut m = Map::default();
                for s in 0..cfg.nodes {
                    m.insert(addr_of(s), s);
                }
                m
            },
            detect: detect.as_nanos() as u64,
            cfg,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            by_id: BTreeMap::new(),
            conns: Map::default(),
            slot_conns: vec![Vec::new(); nodes],
            next_conn: 0,
            events: 0,
            bytes_sent: 0,
            hash: 0xcbf2_9ce4_8422_2325,
            violations: Vec::new(),
            churn_until: 0,
            broken: Map::default(),
            minority: None,
            born: BTreeMap::new(),
            false_deaths: 0,
            stalled: std::collections::BTreeSet::new(),
            departed: Vec::new(),
            last_fault: 0,
            outs: Vec::new(),
            clients: Vec::new(),
            conn_owner: Map::default(),
            auditor: None,
            next_client_key: 0,
            next_client_conn: 0,
            next_msg: 0,
            tree_bytes_gone: 0,
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

    /// True if packets between machines `a` and `b` are dropped now.
    fn cut(&self, a: usize, b: usize) -> bool {
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

    /// A partition begins (`on`: a random share of the nodes is cut off from the rest, and
    /// the auditor told who is on which side until when) or heals.
    fn partition(&mut self, on: bool) {
        self.trace(8, usize::from(on));
        self.last_fault = self.now;
        self.minority = on.then(|| {
            let fraction = self.cfg.partition.map_or(0.5, |p| p.fraction);
            let slots: Vec<usize> = self.by_id.values().copied().collect();
            slots
                .into_iter()
                .filter(|_| self.rng.random_bool(fraction))
                .collect()
        });
        self.cut_connections();
        if let (Some(minority), Some(p), Some(a)) =
            (&self.minority, self.cfg.partition, self.auditor.as_mut())
        {
            let until = self.now + p.length.as_nanos() as u64;
            a.partitioned(minority.clone(), self.now, until);
        }
    }

    /// One-way latency between two machines now: a base drawn once per pair, plus jitter.
    fn latency(&mut self, a: usize, b: usize) -> u64 {
        let (lo, hi) = (
            self.cfg.latency.0.as_nanos() as u64,
            self.cfg.latency.1.as_nanos() as u64,
        );
        let span = hi.saturating_sub(lo);
        let base = lo + mix(self.cfg.seed, pair(a, b)) % (span + 1);
        base + self.rng.random_range(0..=span / 10)
    }

    /// When `size` bytes written now on `conn` arrive at `side`.
    fn arrival(&mut self, conn: u64, side: usize, size: usize) -> u64 {
        let Some(c) = self.conns.get(&conn) else {
            return self.now;
        };
        let (a, b) = (c.ends[0].0, c.ends[1].0);
        let (free, last) = (c.free[side], c.last[side]);
        let lat = self.latency(a, b);
        // Spikes are a fault: they stop with the others, when the quiet phase begins.
        let spiking = self.cfg.spike_rate > 0.0 && self.now < self.churn_until;
        let spike = if spiking && self.rng.random_bool(self.cfg.spike_rate) {
            self.cfg.spike_delay.as_nanos() as u64
        } else {
            0
        };
        let tx = self
            .cfg
            .bandwidth
            .map_or(0, |bw| size as u64 * 1_000_000_000 / bw.max(1));
        let depart = self.now.max(free) + tx;
        // A byte stream: nothing overtakes a delayed segment.
        let at = (depart + lat + spike).max(last);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.free[side] = depart;
            c.last[side] = at;
        }
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

    /// The live node in `slot` if it is incarnation `inc`.
    fn node(&mut self, slot: usize, inc: u64) -> Option<&mut SimNode> {
        self.slots[slot].as_mut().filter(|n| n.inc == inc)
    }

    /// The slot whose node handles `event`, if one does.
    fn target(&self, event: &Event) -> Option<usize> {
        match *event {
            Event::Timer { slot, .. } | Event::Dialed { slot, .. } | Event::Exit { slot, .. } => {
                Some(slot)
            }
            Event::Syn { to, .. } => Some(to),
            Event::Deliver { conn, side, .. } | Event::Fin { conn, side } => {
                self.conns.get(&conn).map(|c| c.ends[side].0)
            }
            Event::ClientRead { client, .. }
            | Event::ClientWrite { client, .. }
            | Event::Act { client, .. } => self.clients.get(client).map(|c| c.home),
            _ => None,
        }
    }

    fn step(&mut self, event: Event) {
        let now = Instant::from_nanos(self.now);
        // A stopped node's events wait until it resumes, in the order they came; its
        // deadline fires then, late, as a stopped process's timers do.
        if let Some(slot) = self.target(&event)
            && let Some(n) = self.slots[slot].as_mut()
            && n.stalled_until > self.now
        {
            let resume = n.stalled_until;
            if let Event::Timer { .. } = event {
                n.timer_at = Some(resume);
            }
            self.push(resume, event);
            return;
        }
        match event {
            Event::Join { slot } => {
                self.trace(1, slot);
                self.spawn(slot);
            }
            Event::Exit { slot, inc } => {
                self.trace(11, slot);
                if self.node(slot, inc).is_some() {
                    self.exit(slot);
                }
            }
            Event::Timer { slot, inc } => {
                self.trace(2, slot);
                let at = self.now;
                let Some(n) = self.node(slot, inc) else {
                    return;
                };
                if n.timer_at != Some(at) {
                    return; // superseded by an earlier deadline
                }
                n.timer_at = None;
                n.node.handle(now, Input::Timeout);
                self.after(slot);
            }
            Event::Syn {
                from,
                inc,
                dial,
                to,
            } => {
                self.trace(3, to);
                let back = self.now + self.latency(from, to);
                // Nobody listening there: refused (`conn` stays `None`).
                let to_inc = self.slots[to].as_ref().map(|n| n.inc);
                let conn = to_inc.map(|to_inc| {
                    let id = self.next_conn;
                    self.next_conn += 1;
                    self.slot_conns[from].push(id);
                    self.slot_conns[to].push(id);
                    self.conns.insert(
                        id,
                        Conn {
                            ends: [(from, inc), (to, to_inc)],
                            open: [true, true],
                            free: [0, 0],
                            // The dialer hears of the connection before any of its bytes.
                            last: [back, 0],
                        },
                    );
                    id
                });
                self.push(
                    back,
                    Event::Dialed {
                        slot: from,
                        inc,
                        dial,
                        conn,
                    },
                );
                let (Some(id), Some(to_inc)) = (conn, to_inc) else {
                    return;
                };
                if let Some(n) = self.node(to, to_inc) {
                    n.node.handle(
                        now,
                        Input::PeerConnected {
                            link: LinkId(2 * id + 1),
                            dial: None,
                            from: None,
                        },
                    );
                }
                self.after(to);
            }
            Event::Dialed {
                slot,
                inc,
                dial,
                conn,
            } => {
                self.trace(4, slot);
                let alive = self.node(slot, inc).is_some();
                match conn {
                    Some(id) if alive => {
                        if let Some(n) = self.node(slot, inc) {
                            n.node.handle(
                                now,
                                Input::PeerConnected {
                                    link: LinkId(2 * id),
                                    dial: Some(dial),
                                    from: None,
                                },
                            );
                        }
                    }
                    Some(id) => self.close_end(id, 0),
                    None => {
                        if let Some(n) = self.node(slot, inc) {
                            n.node.handle(now, Input::DialFailed(dial));
                        }
                    }
                }
                self.after(slot);
            }
            Event::Deliver { conn, side, data } => {
                let Some(c) = self.conns.get(&conn) else {
                    return;
                };
                let (slot, inc) = c.ends[side];
                let open = c.open[side];
                self.trace(5, slot);
                if !open {
                    return;
                }
                if let Some(n) = self.node(slot, inc) {
                    n.node
                        .handle(now, Input::PeerData(LinkId(2 * conn + side as u64), &data));
                    self.after(slot);
                }
            }
            Event::Fin { conn, side } => {
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                let (slot, inc) = c.ends[side];
                let was_open = std::mem::replace(&mut c.open[side], false);
                if !c.open[0] && !c.open[1] {
                    self.forget_conn(conn);
                }
                self.trace(6, slot);
                if was_open && let Some(n) = self.node(slot, inc) {
                    n.node
                        .handle(now, Input::PeerGone(LinkId(2 * conn + side as u64)));
                    self.after(slot);
                }
            }
            Event::Churn => {
                self.trace(7, 0);
                self.churn_one();
                let next = self.now + self.churn_gap();
                if next < self.churn_until {
                    self.push(next, Event::Churn);
                }
            }
            Event::Partition { on } => self.partition(on),
            Event::ClientRead {
                client,
                life,
                data,
                written,
            } => self.client_read(client, life, data, written),
            Event::ClientWrite { client, life, data } => {
                if self.clients[client]
                    .life
                    .as_ref()
                    .is_some_and(|l| l.key == life)
                {
                    self.client_write(client, data);
                }
            }
            Event::Act { client, life } => self.act(client, life),
            Event::KillServiceNode => {
                self.trace(10, 0);
                if let Some(slot) = self.clients.first().map(|c| c.home)
                    && self.slots[slot].is_some()
                {
                    self.remove_node(slot, false);
                }
            }
            Event::Stall => {
                let live: Vec<usize> = self.by_id.values().copied().collect();
                if !live.is_empty() {
                    let slot = live[self.rng.random_range(0..live.len())];
                    self.trace(13, slot);
                    let until = self.now + self.cfg.stall_length.as_nanos() as u64;
                    if let Some(n) = self.slots[slot].as_mut() {
                        n.stalled_until = until;
                    }
                    self.stalled.insert(slot);
                    self.last_fault = self.last_fault.max(until);
                    if let Some(a) = self.auditor.as_mut() {
                        a.stalled(slot, self.now, until);
                    }
                }
                let next = self.now + self.gap(self.cfg.stalls / 60.0);
                if next < self.churn_until {
                    self.push(next, Event::Stall);
                }
            }
            Event::LinkBreak => {
                self.trace(9, 0);
                self.break_a_link();
                self.cut_connections();
                let next = self.now + self.gap(self.cfg.link_breaks / 60.0);
                if next < self.churn_until {
                    self.push(next, Event::LinkBreak);
                }
            }
        }
    }

    /// Starts a node in `slot`: a new id or (a restart) an old one, joining through a
    /// random live node.
    fn spawn(&mut self, slot: usize) {
        // A node taking a churned node's place is a change the network must settle from.
        self.last_fault = self.last_fault.max(self.now);
        let id = self.new_id();
        self.incarnations[slot] += 1;
        let inc = self.incarnations[slot];
        let mut mesh = MeshConfig::new("sim", addr_of(slot));
        mesh.id = Some(id);
        // A restart of an id must come with a larger epoch: virtual milliseconds do.
        mesh.epoch = self.now / 1_000_000 + 1;
        mesh.overlay = self.cfg.overlay.clone();
        let live: Vec<usize> = self.by_id.values().copied().collect();
        if !live.is_empty() {
            mesh.seeds = vec![addr_of(live[self.rng.random_range(0..live.len())])];
        }
        let mut seed = [0u8; 32];
        rand::Rng::fill_bytes(&mut self.rng, &mut seed);
        let now = Instant::from_nanos(self.now);
        let node = Node::networked(
            Config::default(),
            mesh,
            self.cfg.security.clone(),
            seed,
            now,
        )
        .expect("valid configuration");
        self.slots[slot] = Some(SimNode {
            node,
            inc,
            timer_at: None,
            stalled_until: 0,
        });
        self.by_id.insert(id, slot);
        self.born.insert(id, self.now);
        self.after(slot);
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
        let graceful = self.rng.random_bool(0.5);
        self.remove_node(slot, graceful);
    }

    /// The node in `slot` leaves (telling its peers) or crashes; a node joins its slot later.
    ///
    /// A node that leaves gracefully is gone from the network at once (its clients are
    /// closed, its peers told), but its process lives on while they close their sides of
    /// its links, passing on what still reaches it, as a real one does until its driver's
    /// grace runs out.
    fn remove_node(&mut self, slot: usize, graceful: bool) {
        if graceful {
            if let Some(n) = self.slots[slot].as_mut() {
                n.node
                    .handle(Instant::from_nanos(self.now), Input::Shutdown("leaving"));
            }
            self.after(slot);
        }
        let Some(n) = self.slots[slot].as_ref() else {
            return;
        };
        let (id, inc) = (n.overlay().id(), n.inc);
        self.by_id.remove(&id);
        self.born.remove(&id);
        self.departed.push(id);
        self.clients_die(slot);
        if !graceful {
            self.exit(slot);
        }
        self.last_fault = self.now;
        let delay = self.rng.random_range(1_000_000_000..10_000_000_000u64);
        if graceful {
            // It drains its requests in progress, then its links, for at most this long
            // (then its driver closes what is left).
            let linger = Config::default().shutdown_drain
                + MeshConfig::new("sim", addr_of(slot)).close_linger;
            let exit = self.now + (linger + Duration::from_millis(100)).as_nanos() as u64;
            self.push(exit, Event::Exit { slot, inc });
            self.push((self.now + delay).max(exit + 1), Event::Join { slot });
        } else {
            self.push(self.now + delay, Event::Join { slot });
        }
    }

    /// The process in `slot` is gone: the kernel closes whatever it still held.
    fn exit(&mut self, slot: usize) {
        if let Some(n) = self.slots[slot].take() {
            self.tree_bytes_gone += n.node.stats().tree_bytes_out;
        }
        let mut held: Vec<(u64, usize)> = self.slot_conns[slot]
            .iter()
            .filter_map(|id| self.conns.get(id).map(|c| (*id, c)))
            .flat_map(|(id, c)| {
                (0..2)
                    .filter(move |&s| c.ends[s].0 == slot && c.open[s])
                    .map(move |s| (id, s))
            })
            .collect();
        held.sort_unstable();
        for (id, side) in held {
            self.close_end(id, side);
        }
    }

    /// Closes one end of a connection: the other end hears of it after the data in flight.
    fn close_end(&mut self, conn: u64, side: usize) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.open[side] = false;
        let other = 1 - side;
        if !c.open[other] {
            self.forget_conn(conn);
            return;
        }
        let at = self.arrival(conn, other, 0);
        self.push(at, Event::Fin { conn, side: other });
    }

    /// A connection both ends have closed is gone.
    fn forget_conn(&mut self, conn: u64) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        for (slot, _) in c.ends {
            let held = &mut self.slot_conns[slot];
            if let Some(i) = held.iter().position(|&id| id == conn) {
                held.swap_remove(i);
            }
        }
    }

    /// Connections across a cut die: both ends hear of it at once (a reset after the
    /// network dropped their packets; real TCP would take longer to notice).
    fn cut_connections(&mut self) {
        let mut dead: Vec<u64> = self
            .conns
            .iter_unordered()
            .filter(|(_, c)| self.cut(c.ends[0].0, c.ends[1].0))
            .map(|(&id, _)| id)
            .collect();
        dead.sort_unstable();
        for conn in dead {
            for side in 0..2 {
                if self.conns.get(&conn).is_some_and(|c| c.open[side]) {
                    self.push(self.now, Event::Fin { conn, side });
                }
            }
        }
    }

    /// Breaks the link between a random live node and one of its leaves for 10 to 60 s.
    fn break_a_link(&mut self) {
        let live: Vec<usize> = self.by_id.values().copied().collect();
        if live.is_empty() {
            return;
        }
        let slot = live[self.rng.random_range(0..live.len())];
        let Some(n) = self.slots[slot].as_ref() else {
            return;
        };
        let peers: Vec<NodeId> = n.overlay().leaves().members().collect();
        if peers.is_empty() {
            return;
        }
        let b = peers[self.rng.random_range(0..peers.len())];
        let Some(&b) = self.by_id.get(&b) else {
            return;
        };
        let until = self.now + self.rng.random_range(10_000_000_000..60_000_000_000u64);
        self.broken.insert(pair(slot, b), until);
        self.last_fault = self.last_fault.max(until);
    }

    /// After a node was called: check it, carry out its outputs, note its verdicts,
    /// schedule its deadline.
    fn after(&mut self, slot: usize) {
        let Some(n) = self.slots[slot].as_mut() else {
            return;
        };
        // Cheap invariants of the node just touched: the only one that can have changed.
        oracle::check_cheap(std::iter::once(n.overlay()), &mut self.violations);
        let from = n.overlay().id();
        let inc = n.inc;
        let mut outs = std::mem::take(&mut self.outs);
        while let Some(o) = n.node.poll_output() {
            outs.push(o);
        }
        let deadline = n.node.poll_timeout().map(|t| t.as_nanos().max(self.now));
        let reschedule = match (deadline, n.timer_at) {
            (Some(d), Some(t)) => d < t,
            (Some(_), None) => true,
            _ => false,
        };
        if reschedule {
            n.timer_at = deadline;
        }
        if let (true, Some(d)) = (reschedule, deadline) {
            self.push(d, Event::Timer { slot, inc });
        }
        let mut alone = false;
        let mut ready = false;
        let mut resumed = Vec::new();
        let mut flushed: Vec<(LinkId, usize)> = Vec::new();
        for o in outs.drain(..) {
            match o {
                Output::PeerTransmit(link, data) => {
                    let (conn, side) = (link.0 / 2, (link.0 % 2) as usize);
                    self.bytes_sent += data.len() as u64;
                    let other = 1 - side;
                    // The socket takes it: written as far as the node is concerned (a
                    // bandwidth limit delays the arrival, FIFO, not the write).
                    flushed.push((link, data.len()));
                    if !self.conns.get(&conn).is_some_and(|c| c.open[other]) {
                        continue; // the peer is gone: lost
                    }
                    let at = self.arrival(conn, other, data.len());
                    self.push(
                        at,
                        Event::Deliver {
                            conn,
                            side: other,
                            data,
                        },
                    );
                }
                Output::PeerClose(link) => self.close_end(link.0 / 2, (link.0 % 2) as usize),
                // The simulated nodes join through seeds; discovery is off in their config.
                Output::Beacon { .. } => {}
                // Simulated links sign in place, in virtual time (`offload_signatures` off).
                Output::Sign(..) => {}
                Output::Dial(dial, addr) => {
                    let to = self.addrs.get(&addr).copied();
                    match to {
                        Some(to) if !self.cut(slot, to) => {
                            let at = self.now + self.latency(slot, to);
                            self.push(
                                at,
                                Event::Syn {
                                    from: slot,
                                    inc,
                                    dial,
                                    to,
                                },
                            );
                        }
                        // Packets dropped (or an address nobody has): the dial times out.
                        _ => self.push(
                            self.now + CONNECT_TIMEOUT,
                            Event::Dialed {
                                slot,
                                inc,
                                dial,
                                conn: None,
                            },
                        ),
                    }
                }
                Output::Event(NodeEvent::Mesh(MeshEvent::PeerDown(id))) => {
                    let up_long = self
                        .born
                        .get(&id)
                        .is_some_and(|&b| self.now.saturating_sub(b) > self.detect);
                    let cut = self
                        .by_id
                        .get(&id)
                        .is_some_and(|&s| self.cut(slot, s) || self.stalled.contains(&s));
                    if up_long && !cut {
                        self.false_deaths += 1;
                    }
                }
                Output::Event(NodeEvent::Mesh(MeshEvent::Alone)) => alone = true,
                Output::Event(NodeEvent::Ready) => ready = true,
                Output::Transmit(conn, data) => self.client_transmit(slot, conn, data),
                Output::Close(conn) => self.client_closed(slot, conn),
                Output::PauseReading(conn) => self.client_paused(slot, conn, true),
                Output::ResumeReading(conn) => resumed.push(conn),
                Output::Event(_) => {}
            }
        }
        self.outs = outs;
        for conn in resumed {
            self.client_paused(slot, conn, false);
        }
        if ready {
            self.attach_clients(slot);
        }
        if !flushed.is_empty() {
            let now = Instant::from_nanos(self.now);
            if let Some(n) = self.slots[slot].as_mut() {
                for (link, len) in flushed {
                    n.node.handle(now, Input::PeerFlushed(link, len));
                }
            }
            self.after(slot);
        }
        if alone {
            // Discovery's part: offer another live node to join through.
            let live: Vec<usize> = self
                .by_id
                .iter()
                .filter(|&(&id, _)| id != from)
                .map(|(_, &s)| s)
                .collect();
            if !live.is_empty() {
                let contact = addr_of(live[self.rng.random_range(0..live.len())]);
                if let Some(n) = self.slots[slot].as_mut() {
                    n.node
                        .handle(Instant::from_nanos(self.now), Input::JoinVia(contact));
                }
                self.after(slot);
            }
        }
    }

    fn live(&self) -> Vec<&Overlay> {
        self.by_id
            .values()
            .filter_map(|&s| self.slots[s].as_ref().map(SimNode::overlay))
            .collect()
    }
}

/// A pair's key, the same both ways.
fn pair(a: usize, b: usize) -> (usize, usize) {
    if a <= b { (a, b) } else { (b, a) }
}

/// A stable pseudo-random number for a pair of machines (SplitMix64 over the seed and both).
fn mix(seed: u64, (a, b): (usize, usize)) -> u64 {
    let mut x = seed ^ (a as u64) ^ (b as u64).rotate_left(17);
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
