//! `--metrics ADDR`: the node's counters over HTTP, for Prometheus (`/metrics`), for
//! readiness probes (`/ready`), for people (`/`, a status page) and for tools
//! (`/status.json`, what `iris status` and the page read).
//!
//! The node's counters live in the core (`iris_proto::Stats`, `MeshStats`); a request takes
//! a snapshot on the node's thread, listed once as [`metrics`], and renders it with
//! `prometheus-client` or as JSON (`status.rs`). The endpoint is the smallest HTTP/1.1
//! responder that serves a few GETs: requests are rare and small, so it reads one bounded
//! request per connection, answers and closes.

mod status;

pub use status::{PAGE, status_json};

use crate::runtime::{ReadBytes, Runtime, WriteBytes};
use iris_proto::{MeshStats, Node, NodeId, PeerStatus, Stats};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::time::Duration;

/// Most bytes of a scrape request read before giving up on it.
const MAX_REQUEST: usize = 8 << 10;
/// A scraper that has not sent its request by then is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What one scrape reports, taken from the node at once.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The node's overlay id (networked nodes).
    pub id: Option<NodeId>,
    /// The peers the overlay keeps, with their links.
    pub peer_list: Vec<PeerStatus>,
    /// The core's counters.
    pub stats: Stats,
    /// The links' counters (networked nodes).
    pub mesh: Option<MeshStats>,
    /// Peers the overlay knows.
    pub peers: usize,
    /// Peer links open or opening.
    pub links: usize,
    /// Bytes queued in peer links, not yet handed to their sockets.
    pub link_queued: usize,
    /// Bytes of broadcasts and events waiting for a peer's credit.
    pub casts_waiting: usize,
    /// Bytes of this node's broadcasts and events kept for tree nodes that miss them.
    pub casts_kept: usize,
    /// Signatures made with the network key (one per genuine link, none for strangers).
    pub signatures: u64,
    /// Relay connections (handshaking or active).
    pub clients: usize,
    /// Bytes charged to the memory budget.
    pub memory_used: usize,
    /// The part of `memory_used` that is group and tree state.
    pub tree_memory: usize,
    /// The memory budget.
    pub memory_budget: usize,
    /// Multicast trees this node takes part in.
    pub trees: usize,
    /// Clusters and topics with local members or subscribers.
    pub groups: (usize, usize),
    /// The overlay has converged.
    pub converged: bool,
    /// The relay port is open.
    pub ready: bool,
}

impl Snapshot {
    /// Reads everything off the node.
    pub fn of(node: &Node, ready: bool) -> Snapshot {
        let status = node.status();
        Snapshot {
            id: status.id,
            peer_list: node.peer_statuses(),
            stats: node.stats(),
            mesh: status.mesh,
            peers: status.peers,
            links: status.links,
            link_queued: status.link_queued,
            casts_waiting: node.casts_waiting_bytes(),
            casts_kept: node.casts_kept_bytes(),
            signatures: status.signatures,
            clients: node.client_count(),
            memory_used: node.memory_used(),
            tree_memory: node.memory_used() - node.client_memory_used(),
            memory_budget: node.config().max_memory,
            trees: status.trees,
            groups: node.group_counts(),
            converged: status.converged,
            ready,
        }
    }
}

type Labels = Vec<(&'static str, &'static str)>;

/// What one metric of a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A level (peers, bytes queued).
    Gauge(u64),
    /// A count since the node started.
    Counter(u64),
    /// Counts since the node started, one for each value of a label.
    Family(&'static str, Vec<(&'static str, u64)>),
}

/// One metric of a snapshot: the same list feeds the Prometheus text and the status JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    /// Its name, without the `iris_` prefix (nor a counter's `_total`).
    pub name: &'static str,
    /// What it counts.
    pub help: &'static str,
    /// Its value.
    pub value: Value,
}

fn level(name: &'static str, help: &'static str, v: usize) -> Metric {
    let value = Value::Gauge(u64::try_from(v).unwrap_or(u64::MAX));
    Metric { name, help, value }
}

fn family(
    name: &'static str,
    help: &'static str,
    label: &'static str,
    series: &[(&'static str, u64)],
) -> Metric {
    let value = Value::Family(label, series.to_vec());
    Metric { name, help, value }
}

/// Every metric of the snapshot, in the order they are shown.
pub fn metrics(s: &Snapshot) -> Vec<Metric> {
    let st = &s.stats;
    let mut m = vec![
        level(
            "ready",
            "1 once the relay port is open",
            usize::from(s.ready),
        ),
        level(
            "converged",
            "1 while the overlay has converged",
            usize::from(s.converged),
        ),
        level("peers", "Nodes the overlay knows", s.peers),
        level("links", "Peer links open or opening", s.links),
        level(
            "link_queued_bytes",
            "Bytes queued in peer links",
            s.link_queued,
        ),
        level(
            "casts_waiting_bytes",
            "Bytes of broadcasts and events waiting for a peer's credit",
            s.casts_waiting,
        ),
        level(
            "casts_kept_bytes",
            "Bytes of this node's broadcasts and events kept for tree nodes that miss them",
            s.casts_kept,
        ),
        level("clients", "Relay connections", s.clients),
        level(
            "memory_used_bytes",
            "Bytes charged to the memory budget (client data, and group and tree state)",
            s.memory_used,
        ),
        level(
            "tree_memory_bytes",
            "Bytes of group and tree state charged to the memory budget (at most a quarter)",
            s.tree_memory,
        ),
        level("memory_budget_bytes", "The memory budget", s.memory_budget),
        level("trees", "Multicast trees this node takes part in", s.trees),
        level("clusters", "Clusters with members on this node", s.groups.0),
        level("topics", "Topics with subscribers on this node", s.groups.1),
        level(
            "memory_peak_bytes",
            "Most bytes ever charged to the budget",
            usize::try_from(st.memory_peak).unwrap_or(usize::MAX),
        ),
        family(
            "client_messages",
            "Messages received from relay clients, by kind",
            "kind",
            &[
                ("broadcast", st.broadcasts),
                ("publish", st.publishes),
                ("request", st.requests),
            ],
        ),
        family(
            "bytes",
            "Bytes moved, by side and direction",
            "way",
            &[
                ("client_in", st.bytes_in),
                ("client_out", st.bytes_out),
                ("peer_in", st.peer_bytes_in),
                ("peer_out", st.peer_bytes_out),
                ("tree_out", st.tree_bytes_out),
            ],
        ),
        family(
            "clients_events",
            "Relay connection events",
            "event",
            &[
                ("accepted", st.clients_accepted),
                ("closed", st.clients_closed),
                ("refused", st.clients_refused),
                ("denied", st.clients_denied),
                ("handshake_evicted", st.handshakes_evicted),
                ("handshake_timeout", st.handshake_timeouts),
                ("protocol_violation", st.protocol_violations),
            ],
        ),
        family(
            "slow_consumers_cut",
            "Clients cut as slow consumers, by reason",
            "reason",
            &[
                ("lagging", st.cut_lagging),
                ("backlog_cap", st.cut_backlog_cap),
                ("memory", st.cut_memory),
            ],
        ),
        family(
            "dropped",
            "Messages not delivered, by reason",
            "reason",
            &[
                ("cast_no_link", st.casts_dropped),
                ("cast_no_tree", st.casts_no_tree),
                ("cast_gone", st.casts_gone),
                ("cast_unrepaired", st.casts_unrepaired),
                ("anycast_no_tree", st.anycasts_no_tree),
                ("anycast_lost", st.anycasts_lost),
                ("anycast_expired", st.anycasts_expired),
                ("peer_unreachable", st.undelivered),
                ("reply_refused", st.replies_refused),
                ("request_expired_queued", st.requests_expired_queued),
                ("peer_message_bad", st.peer_messages_bad),
                ("tree_message", st.tree_messages_dropped),
            ],
        ),
        Metric {
            name: "trees_refused",
            help: "Multicast trees refused because this node takes part in --max-trees already: those groups' messages do not pass here",
            value: Value::Counter(st.trees_refused),
        },
        family(
            "cast_repair",
            "Broadcasts and events missed by tree nodes and asked for again",
            "event",
            &[
                ("asked", st.casts_asked),
                ("resent", st.casts_resent),
                ("repaired", st.casts_repaired),
                ("tails", st.cast_tails),
            ],
        ),
        Metric {
            name: "held_for_tree",
            help: "Multicasts and anycasts that found no tree while the overlay moved and waited for one",
            value: Value::Counter(st.held),
        },
        family(
            "requests",
            "Requests by outcome at this node",
            "outcome",
            &[
                ("timed_out", st.requests_timed_out),
                ("refused_queue_full", st.requests_refused),
                ("shed_too_many_pending", st.requests_shed),
                ("served_for_peers", st.requests_served_for_peers),
            ],
        ),
        family(
            "tunnels",
            "Tunnel events",
            "event",
            &[
                ("opened", st.tunnels_opened),
                ("failed", st.tunnels_failed),
                ("broken", st.tunnels_broken),
                ("served_for_peers", st.tunnels_served_for_peers),
            ],
        ),
        family(
            "casts",
            "Broadcasts and events crossing nodes",
            "event",
            &[
                ("sent", st.casts_sent),
                ("delivered", st.casts_delivered),
                ("rerouted", st.rerouted),
                ("stray", st.casts_stray),
                ("duplicate", st.casts_duplicate),
                ("neighbour_suspected", st.tree_neighbours_suspected),
                ("hop_suspected", st.routed_hops_suspected),
            ],
        ),
        family(
            "flow",
            "Back-pressure events",
            "event",
            &[
                ("producer_held", st.producers_held),
                ("consumer_loosened", st.consumers_loosened),
                ("untether_sent", st.cast_untethers_sent),
                ("credit_refused", st.cast_credits_refused),
                ("memory_wait", st.memory_waits),
                ("memory_tight", st.memory_tight),
            ],
        ),
    ];
    if let Some(mesh) = &s.mesh {
        m.extend([
            Metric {
                name: "signatures",
                help: "Signatures made with the network key: one per genuine link, none for strangers",
                value: Value::Counter(s.signatures),
            },
            family(
                "links_events",
                "Peer link events",
                "event",
                &[
                    ("up", mesh.links_up),
                    ("handshake_failed", mesh.links_failed),
                    ("duplicate", mesh.links_duplicate),
                    ("idle", mesh.links_idle),
                    ("silent", mesh.links_silent),
                    ("replaced", mesh.links_replaced),
                    ("refused", mesh.links_refused),
                    ("evicted", mesh.links_evicted),
                    ("handshake_evicted", mesh.handshakes_evicted),
                    ("handshake_refused_per_addr", mesh.handshakes_refused_per_addr),
                    ("dial_failed", mesh.dials_failed),
                ],
            ),
            family(
                "link_messages_dropped",
                "Messages the links could not take, by reason",
                "reason",
                &[
                    ("no_link", mesh.messages_dropped),
                    ("data_queue_full", mesh.data_refused),
                    ("control_queue_full", mesh.control_refused),
                    ("bad", mesh.bad_messages),
                ],
            ),
            family(
                "discovery",
                "Discovery beacons",
                "event",
                &[
                    ("sent", mesh.beacons_sent),
                    ("foreign", mesh.beacons_foreign),
                    ("forged", mesh.beacons_forged),
                    ("replayed", mesh.beacons_replayed),
                    ("joined", mesh.discovered),
                ],
            ),
        ]);
    }
    m
}

/// The snapshot in the Prometheus text format (OpenMetrics flavour).
pub fn render(s: &Snapshot) -> String {
    let mut r = Registry::with_prefix("iris");
    for m in metrics(s) {
        match m.value {
            Value::Gauge(v) => {
                let g = Gauge::<i64>::default();
                g.set(i64::try_from(v).unwrap_or(i64::MAX));
                r.register(m.name, m.help, g);
            }
            Value::Counter(v) => {
                let c = Counter::<u64>::default();
                c.inc_by(v);
                r.register(m.name, m.help, c);
            }
            Value::Family(label, series) => {
                let f = Family::<Labels, Counter>::default();
                for (value, n) in series {
                    f.get_or_create(&vec![(label, value)]).inc_by(n);
                }
                r.register(m.name, m.help, f);
            }
        }
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

/// Answers one scrape on `stream` with what `snapshot` gives at that moment.
pub(crate) async fn serve<R: Runtime>(
    mut rd: R::Reader,
    mut wr: R::Writer,
    snapshot: impl FnOnce() -> Snapshot,
) {
    let mut req = bytes::BytesMut::with_capacity(MAX_REQUEST);
    let read = async {
        while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < MAX_REQUEST {
            req.reserve(1024.min(MAX_REQUEST - req.len()));
            let n = rd.read_buf(&mut req).await?;
            if n == 0 {
                break;
            }
        }
        Ok::<_, std::io::Error>(())
    };
    if !matches!(
        crate::runtime::timeout::<R, _>(REQUEST_TIMEOUT, read).await,
        Some(Ok(()))
    ) {
        return;
    }
    let line = req[..].split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next();
    // A query string (a page's cache-buster) does not change what is asked for.
    let path = parts
        .next()
        .map(|p| p.split(|&b| b == b'?').next().unwrap_or(p));
    const TEXT: &str = "text/plain; charset=utf-8";
    let (status, kind, body) = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(&snapshot()),
        ),
        (Some(b"GET"), Some(b"/")) => ("200 OK", "text/html; charset=utf-8", PAGE.to_string()),
        (Some(b"GET"), Some(b"/status.json")) => {
            ("200 OK", "application/json", status_json(&snapshot()))
        }
        // For readiness probes (a Kubernetes DaemonSet's): 200 once the relay port is open.
        (Some(b"GET"), Some(b"/ready")) => match snapshot().ready {
            true => ("200 OK", TEXT, "ready\n".to_string()),
            false => ("503 Service Unavailable", TEXT, "not ready\n".to_string()),
        },
        (Some(b"GET"), _) => (
            "404 Not Found",
            TEXT,
            "try / (status page), /metrics, /status.json or /ready\n".to_string(),
        ),
        _ => ("405 Method Not Allowed", TEXT, "GET only\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // A client that asks and never reads must not hold one of the few scrape slots.
    let write = async {
        wr.write_all(head.as_bytes()).await?;
        wr.write_all(body.as_bytes()).await?;
        wr.shutdown().await
    };
    let _ = crate::runtime::timeout::<R, _>(REQUEST_TIMEOUT, write).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_renders_every_family_with_its_values() {
        let mut s = Snapshot {
            peers: 4,
            clients: 2,
            ready: true,
            mesh: Some(MeshStats {
                links_failed: 3,
                ..MeshStats::default()
            }),
            ..Snapshot::default()
        };
        s.stats.casts_dropped = 7;
        s.stats.broadcasts = 11;
        let text = render(&s);
        for line in [
            "iris_peers 4",
            "iris_clients 2",
            "iris_ready 1",
            "iris_dropped_total{reason=\"cast_no_link\"} 7",
            "iris_client_messages_total{kind=\"broadcast\"} 11",
            "iris_links_events_total{event=\"handshake_failed\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
