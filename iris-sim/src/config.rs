//! What to simulate ([`SimConfig`]) and what a run measured ([`Summary`]).

use crate::Violation;
use iris_proto::OverlayConfig;
use iris_proto::Security;
use std::time::Duration;

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
    /// Stalls per virtual minute across the network: a random live node stops for
    /// `stall_length` (a process under SIGSTOP, a suspended VM): it handles nothing, what
    /// reaches it waits, and its timers all fire late when it resumes.
    pub stalls: f64,
    /// How long a stall lasts.
    pub stall_length: Duration,
    /// How links authenticate: plain by default (see the crate docs).
    pub security: Security,
    /// Relay clients and what they do (`None`: the overlay alone).
    pub workload: Option<crate::Workload>,
    /// Crash the node hosting the workload's first service this long after the joins
    /// (with requests and tunnels to it in flight).
    pub kill_service_node_at: Option<Duration>,
    /// For the auditor's own test: report every broadcast delivery twice, as a node that
    /// forwarded a message twice would, so that the auditor must catch it.
    #[doc(hidden)]
    pub inject_duplicate_deliveries: bool,
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
            stalls: 0.0,
            stall_length: Duration::from_secs(12),
            security: Security::Plain,
            workload: None,
            kill_service_node_at: None,
            inject_duplicate_deliveries: false,
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
    /// Bytes written to links (handshakes, framing and overlay messages) per node per
    /// virtual second, churn phase included.
    pub maintenance_bytes_per_node_per_sec: f64,
    /// Live, reachable peers declared dead after they had been up longer than the failure
    /// detector needs (a slow link must not kill a node).
    pub false_deaths: u64,
    /// Times a live node found a peer whose leaf set was from another part of the ring
    /// and looked it up for it (`Overlay::misplaced_helped`).
    pub misplaced_helped: u64,
    /// Invariant violations found.
    pub violations: Vec<Violation>,
    /// Hash of every event processed (and every byte clients read): equal for equal seeds.
    pub trace_hash: u64,
    /// What the delivery auditor concluded (the messaging workload only).
    pub audit: Option<crate::Audit>,
    /// Bytes of tree maintenance (subscriptions, beats) sent per node per virtual second.
    pub tree_bytes_per_node_per_sec: f64,
    /// Links of the live nodes at the end: mean and most per node (load concentrated on a
    /// few nodes shows here first).
    pub links_mean: f64,
    /// ... the most any node holds.
    pub links_max: usize,
    /// Connections refused by the live nodes because they held `max_links` already.
    pub links_refused: u64,
    /// The liveness bound convergence was held to, in virtual seconds (see
    /// [`crate::liveness_bound`]).
    pub convergence_bound_secs: f64,
    /// Routing-table slots filled, over the slots some live node fits (1: no holes).
    pub table_fill: f64,
    /// Peak resident memory of the simulator's process, in MiB (0 where the OS does not
    /// say): the nodes' state dominates it at size.
    pub peak_rss_mib: u64,
}

impl Summary {
    /// All violations: the overlay oracle's and the delivery auditor's.
    pub fn violation_count(&self) -> usize {
        self.violations.len() + self.audit.as_ref().map_or(0, |a| a.violations.len())
    }

    /// The summary as one JSON object.
    pub fn to_json(&self) -> String {
        let mut json = self.overlay_json();
        if let Some(a) = &self.audit {
            json.pop();
            json.push_str(&format!(
                ",\"broadcast_delivery\":{:.5},\"publish_delivery\":{:.5},\"expected_deliveries\":{},\"stable_losses\":{},\"duplicates\":{},\"misdeliveries\":{},\"requests\":{},\"requests_answered\":{:.5},\"requests_without_one_outcome\":{},\"late_requests\":{},\"tunnels\":{},\"tunnels_completed\":{},\"tunnel_order_violations\":{},\"tree_bytes_per_node_s\":{:.1},\"wall_s\":{:.2}}}",
                a.broadcast_delivery,
                a.publish_delivery,
                a.expected_deliveries,
                a.stable_losses,
                a.duplicates,
                a.misdeliveries,
                a.requests,
                a.requests_answered,
                a.requests_without_one_outcome,
                a.late_requests,
                a.tunnels,
                a.tunnels_completed,
                a.tunnel_order_violations,
                self.tree_bytes_per_node_per_sec,
                self.wall_secs,
            ));
        }
        json
    }

    fn overlay_json(&self) -> String {
        format!(
            "{{\"nodes\":{},\"virtual_secs\":{:.1},\"events\":{},\"wall_secs\":{:.2},\"events_per_sec\":{:.0},\"mean_hops\":{:.3},\"p99_hops\":{},\"convergence_secs\":{:.1},\"maintenance_bytes_per_node_per_sec\":{:.1},\"false_deaths\":{},\"misplaced_helped\":{},\"links_mean\":{:.1},\"links_max\":{},\"links_refused\":{},\"convergence_bound_secs\":{:.0},\"table_fill\":{:.4},\"peak_rss_mib\":{},\"violations\":{},\"trace_hash\":\"{:016x}\"}}",
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
            self.misplaced_helped,
            self.links_mean,
            self.links_max,
            self.links_refused,
            self.convergence_bound_secs,
            self.table_fill,
            self.peak_rss_mib,
            self.violation_count(),
            self.trace_hash
        )
    }
}
