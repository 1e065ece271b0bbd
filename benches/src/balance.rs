//! Balancing of requests across three `iris` processes: a client of node B asks a cluster
//! with one member on each of nodes A, B and C, one request at a time and then 600 at
//! once (members answer at once); then a cluster with a member on A that answers in 1 ms
//! and one on C that answers in 50 ms, asked 50 times a second. How many each member got.

use crate::iris::{Dial, settle};
use crate::report::Report;
use bytes::Bytes;
use iris_tokio::Tokio;
use iris_tokio::client::{Connection, ServiceHandler, ServiceLimits};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const REQUESTS: u64 = 600;

/// A member that counts what it gets and answers after `delay`.
struct Member {
    got: Arc<AtomicU64>,
    delay: Duration,
}

impl ServiceHandler for Member {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        self.got.fetch_add(1, Ordering::Relaxed);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        Ok(request)
    }
}

/// Registers a member of `cluster` on each of `nodes` with its reply delay; returns the
/// connections and their counters.
async fn members(
    cluster: &str,
    nodes: &[(u16, Duration)],
) -> Result<(Vec<Connection>, Vec<Arc<AtomicU64>>), BoxError> {
    let (mut conns, mut counts) = (Vec::new(), Vec::new());
    for &(port, delay) in nodes {
        let got = Arc::new(AtomicU64::new(0));
        let dial: Dial<Tokio> = port.into();
        let member = Member {
            got: got.clone(),
            delay,
        };
        conns.push(
            dial.register(cluster, member, ServiceLimits::default())
                .await?,
        );
        counts.push(got);
    }
    Ok((conns, counts))
}

/// Capacities travel up the trees once a beat (1 s): a member that just registered is
/// reachable at once but weighed only from its node's next beat on. Requests from a node
/// with a member of its own go there first and cannot tell (`settle` is done at once).
async fn beats() {
    tokio::time::sleep(Duration::from_millis(2500)).await;
}

/// What each counter holds, and resets them.
fn take(counts: &[Arc<AtomicU64>]) -> Vec<u64> {
    counts
        .iter()
        .map(|c| c.swap(0, Ordering::Relaxed))
        .collect()
}

/// `n` requests from `client` to `cluster` sent every `every` (at once if zero, one at a
/// time awaiting each if `None`); every one must be answered.
async fn ask(
    client: &Connection,
    cluster: &str,
    n: u64,
    every: Option<Duration>,
) -> Result<(), BoxError> {
    let payload = Bytes::from_static(b"balance");
    let timeout = Duration::from_secs(30);
    let Some(every) = every else {
        for _ in 0..n {
            client.request(cluster, payload.clone(), timeout).await?;
        }
        return Ok(());
    };
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (client, cluster, payload) = (client.clone(), cluster.to_string(), payload.clone());
        set.spawn(async move { client.request(&cluster, payload, timeout).await });
        if !every.is_zero() {
            tokio::time::sleep(every).await;
        }
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

/// Runs the scenario into `report`.
pub(crate) async fn run(report: &mut Report) -> Result<(), BoxError> {
    let iris_bin = crate::ring::iris_binary()?;
    let nodes = crate::ring::boot(&iris_bin, 3, &crate::ring::key())?;
    let (a, b, c) = (nodes[0].port, nodes[1].port, nodes[2].port);
    let zero = Duration::ZERO;
    let (_equal, counts) = members("balance", &[(a, zero), (b, zero), (c, zero)]).await?;
    let requester: Dial<Tokio> = b.into();
    let requester = requester.connect().await?;
    settle(&requester, "balance").await?;
    beats().await;
    take(&counts);
    ask(&requester, "balance", REQUESTS, None).await?;
    let paced = take(&counts);
    ask(&requester, "balance", REQUESTS, Some(zero)).await?;
    let burst = take(&counts);
    let shares = |v: &[u64]| {
        let names = ["A", "B (the requester's)", "C"];
        let parts: Vec<String> = v
            .iter()
            .zip(names)
            .map(|(n, name)| format!("{name} {n}"))
            .collect();
        parts.join(", ")
    };
    report.row(format!(
        "| {REQUESTS} requests from B, one at a time, members answering at once | {} |",
        shares(&paced)
    ));
    report.row(format!(
        "| {REQUESTS} requests from B at once, members answering at once | {} |",
        shares(&burst)
    ));

    let slow = Duration::from_millis(50);
    let fast = Duration::from_millis(1);
    let (_uneven, counts) = members("balance-uneven", &[(a, fast), (c, slow)]).await?;
    settle(&requester, "balance-uneven").await?;
    beats().await;
    take(&counts);
    ask(
        &requester,
        "balance-uneven",
        500,
        Some(Duration::from_millis(20)),
    )
    .await?;
    let uneven = take(&counts);
    let total = (uneven[0] + uneven[1]).max(1) as f64;
    report.row(format!(
        "| 500 requests from B, 50 a second, to a member on A answering in 1 ms and one on C in 50 ms | A {} ({:.0} %), C {} ({:.0} %) |",
        uneven[0],
        100.0 * uneven[0] as f64 / total,
        uneven[1],
        100.0 * uneven[1] as f64 / total,
    ));
    requester.close().await?;
    Ok(())
}
