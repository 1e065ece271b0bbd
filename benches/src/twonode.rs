//! Two nodes, each its own `iris` process with encrypted links: broadcast, request round
//! trips and tunnel throughput between clients on different nodes, next to the same on one
//! of those nodes, and next to what one core can seal with AES-256-GCM (the links' cipher)
//! in the same run: the ceiling of one link's throughput.

use crate::iris;
use crate::report::Report;
use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit, Nonce};
use iris_tokio::Tokio;
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bytes per second one core seals with AES-256-GCM in 64 KiB records, over about a
/// second.
pub(crate) fn aead_ceiling() -> f64 {
    let cipher = Aes256Gcm::new(&[7u8; 32].into());
    let mut buf = vec![0x5au8; 64 << 10];
    let (start, mut sealed, mut counter) = (Instant::now(), 0usize, 0u64);
    while start.elapsed() < Duration::from_secs(1) {
        counter += 1;
        let mut n = Nonce::<Aes256Gcm>::default();
        n[4..].copy_from_slice(&counter.to_be_bytes());
        let tag = cipher
            .encrypt_inout_detached(&n, b"header", buf.as_mut_slice().into())
            .expect("sealing cannot fail");
        std::hint::black_box(tag);
        sealed += buf.len();
    }
    sealed as f64 / start.elapsed().as_secs_f64()
}

/// Runs every scenario on one node and across the two, into `report`.
pub(crate) async fn run(report: &mut Report, quick: bool) -> Result<(), BoxError> {
    let iris_bin = crate::ring::iris_binary()?;
    let nodes = crate::ring::boot(&iris_bin, 2, &crate::ring::key())?;
    let (a, b) = (nodes[0].port, nodes[1].port);
    let ceiling = aead_ceiling();
    report.row(format!(
        "| AES-256-GCM seal, one core, 64 KiB records (ceiling) | {:.1} MB/s | | measured in this run |",
        ceiling / 1e6
    ));
    let rounds = if quick { 2_000 } else { 10_000 };
    let mut one = Vec::new();
    let mut cross = Vec::new();
    for (name, to) in [("one node", a), ("two nodes", b)] {
        report.latency(
            &format!("request 64 B, {name}"),
            iris::request_latency::<Tokio>(to, a, 64, rounds).await?,
        );
    }
    for size in [64usize, 65536] {
        let n = if size == 64 {
            if quick { 100_000 } else { 1_000_000 }
        } else if quick {
            2_000
        } else {
            8_192
        };
        for (name, to) in [("one node", a), ("two nodes", b)] {
            let cpu = Cpu::start(&nodes);
            let r = iris::broadcast::<Tokio>(to, a, size, n).await?;
            if size == 65536 {
                report.row(cpu.row(&format!("CPU during broadcast {size} B, {name}")));
            }
            report.rate(&format!("broadcast {size} B, {name}"), size, r);
            if size == 65536 {
                if to == a { &mut one } else { &mut cross }.push(("broadcast", r));
            }
        }
        for (name, to) in [("one node", a), ("two nodes", b)] {
            let cpu = Cpu::start(&nodes);
            let r = iris::tunnel::<Tokio>(to, a, size, n.min(200_000)).await?;
            if size == 65536 {
                report.row(cpu.row(&format!("CPU during tunnel {size} B, {name}")));
            }
            report.rate(&format!("tunnel {size} B, {name}"), size, r);
            if size == 65536 {
                if to == a { &mut one } else { &mut cross }.push(("tunnel", r));
            }
        }
    }
    for ((what, o), (_, c)) in one.iter().zip(&cross) {
        let bytes = |r: &crate::report::Rate| {
            r.delivered as f64 * 65536.0 / r.elapsed.as_secs_f64().max(1e-9)
        };
        report.row(format!(
            "| {what} 64 KiB, two nodes vs one / vs the seal ceiling | {:.2}x one node | {:.2}x ceiling | {:.1} of {:.1} MB/s |",
            bytes(c) / bytes(o),
            bytes(c) / ceiling,
            bytes(c) / 1e6,
            ceiling / 1e6
        ));
    }
    Ok(())
}

/// CPU used by each node process and by the harness (the clients) over a scenario, as a
/// share of one core: where the time of a run goes.
struct Cpu<'a> {
    nodes: &'a [crate::ring::NodeProcess],
    start: std::time::Instant,
    node_cpu: Vec<std::time::Duration>,
    own: std::time::Duration,
}

impl<'a> Cpu<'a> {
    fn start(nodes: &'a [crate::ring::NodeProcess]) -> Cpu<'a> {
        Cpu {
            nodes,
            start: std::time::Instant::now(),
            node_cpu: nodes.iter().map(|n| n.cpu_time()).collect(),
            own: crate::ring::cpu_time_of("self"),
        }
    }

    fn row(&self, what: &str) -> String {
        let wall = self.start.elapsed().as_secs_f64().max(1e-9);
        let share = |now: std::time::Duration, then: std::time::Duration| {
            100.0 * now.saturating_sub(then).as_secs_f64() / wall
        };
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .zip(&self.node_cpu)
            .zip(["A", "B"])
            .map(|((n, &then), name)| format!("node {name} {:.0} %", share(n.cpu_time(), then)))
            .collect();
        let own = share(crate::ring::cpu_time_of("self"), self.own);
        format!(
            "| {what} | {} | clients {own:.0} % | of one core, over {wall:.1} s (2 cores in all) |",
            nodes.join(", ")
        )
    }
}
