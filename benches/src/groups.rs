//! Many groups over five `iris` processes: every node subscribes to every topic, one event
//! goes to each of a sample of topics from one node, and each node's resident memory is
//! read at boot, with the groups, and after every subscriber has left; several cycles, to
//! see whether memory comes back and whether it grows from cycle to cycle.

use crate::report::Report;
use crate::ring::NodeProcess;
use bytes::Bytes;
use iris_tokio::Tokio;
use iris_tokio::client::{Connection, Limits, TopicHandler};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Nodes of the network.
const NODES: usize = 5;
/// Topics per subscribing connection (under the node's default `--max-subscriptions`).
const PER_CONN: usize = 4000;
/// Topics one event is published to, from node 0, per cycle.
const SAMPLE: usize = 2000;

pub(crate) struct Count(pub(crate) Arc<AtomicU64>);

impl TopicHandler for Count {
    async fn handle_event(&self, _event: Bytes) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

async fn connect(port: u16) -> Result<Connection, BoxError> {
    let dial: crate::iris::Dial<Tokio> = port.into();
    Ok(dial.connect().await?)
}

fn topic(t: usize) -> String {
    format!("group-{t}")
}

fn rss_mib(nodes: &[NodeProcess]) -> String {
    let v: Vec<String> = nodes
        .iter()
        .map(|n| format!("{:.0}", n.rss_kib().1 as f64 / 1024.0))
        .collect();
    v.join(" / ")
}

/// Waits until every node reports `trees` trees (`None`: any count that holds still).
async fn wait_trees(nodes: &[NodeProcess], trees: u64) -> Result<Duration, BoxError> {
    let start = Instant::now();
    loop {
        let now: Vec<u64> = nodes.iter().map(|n| n.metric("iris_trees")).collect();
        if now.iter().all(|&t| t == trees) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(300) {
            return Err(format!("trees {now:?}, waited for {trees} on each node").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `cycles` cycles with `topics` groups into `report`.
pub(crate) async fn run(report: &mut Report, topics: usize, cycles: usize) -> Result<(), BoxError> {
    let iris_bin = crate::ring::iris_binary()?;
    let nodes = crate::ring::boot(&iris_bin, NODES, &crate::ring::key())?;
    report.row(format!(
        "| {} nodes ({}), {topics} topics each subscribed on every node | RSS MiB per node |",
        NODES,
        iris_bin.display()
    ));
    report.row(format!("| boot | {} |", rss_mib(&nodes)));
    let publisher = connect(nodes[0].port).await?;
    for cycle in 0..cycles {
        cycle_once(report, &nodes, &publisher, topics, cycle).await?;
    }
    publisher.close().await?;
    for n in &nodes {
        let losses = n.losses();
        if !losses.is_empty() {
            report.row(format!("| losses counted by a node | {losses:?} |"));
        }
    }
    Ok(())
}

/// One cycle: every node subscribes to every topic, the sample is published and counted,
/// every subscriber leaves; RSS read along the way.
async fn cycle_once(
    report: &mut Report,
    nodes: &[NodeProcess],
    publisher: &Connection,
    topics: usize,
    cycle: usize,
) -> Result<(), BoxError> {
    let counts: Vec<Arc<AtomicU64>> = (0..NODES).map(|_| Arc::default()).collect();
    let mut subscribers = Vec::new();
    let start = Instant::now();
    for (n, node) in nodes.iter().enumerate() {
        for first in (0..topics).step_by(PER_CONN) {
            let c = connect(node.port).await?;
            for t in first..(first + PER_CONN).min(topics) {
                let limits = Limits {
                    concurrency: 1,
                    memory: 1 << 20,
                };
                c.subscribe(&topic(t), Count(counts[n].clone()), limits)
                    .await?;
            }
            subscribers.push(c);
        }
    }
    let subscribed = start.elapsed();
    let formed = wait_trees(nodes, 5 * topics as u64).await?;
    report.row(format!(
        "| cycle {cycle}: every tree formed ({:.1} s to subscribe, {:.1} s more for trees) | {} |",
        subscribed.as_secs_f64(),
        formed.as_secs_f64(),
        rss_mib(nodes)
    ));
    let step = topics / SAMPLE;
    for s in 0..SAMPLE {
        publisher
            .publish(&topic(s * step), Bytes::from_static(b"sampled"))
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        if got.iter().all(|&g| g >= SAMPLE as u64) || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    report.row(format!(
        "| cycle {cycle}: {SAMPLE} events from node 0, delivered per node | {got:?} |"
    ));
    if got.iter().any(|&g| g != SAMPLE as u64) {
        let losses: Vec<Vec<String>> = nodes.iter().map(NodeProcess::losses).collect();
        let trees: Vec<u64> = nodes.iter().map(|n| n.metric("iris_trees")).collect();
        for n in nodes {
            eprintln!("{}", n.metrics_text());
        }
        return Err(format!(
            "events delivered per node {got:?}, {SAMPLE} sent; trees {trees:?}; \
             losses counted {losses:?}"
        )
        .into());
    }
    for c in subscribers {
        c.close().await?;
    }
    let left = wait_trees(nodes, 0).await?;
    // The allocator returns memory at its own pace; what origins keep for repair and
    // the windows go after two minutes.
    tokio::time::sleep(Duration::from_secs(10)).await;
    report.row(format!(
        "| cycle {cycle}: every subscriber gone (trees gone in {:.1} s), 10 s later | {} |",
        left.as_secs_f64(),
        rss_mib(nodes)
    ));
    tokio::time::sleep(Duration::from_secs(120)).await;
    report.row(format!(
        "| cycle {cycle}: 130 s after the subscribers left | {} |",
        rss_mib(nodes)
    ));
    Ok(())
}
