//! Strangers at the peer port: one networked `iris` process, flooded with connections that
//! replay a genuine member's recorded first flight (HELLO, AUTH) and with connections that
//! send garbage. Reports the node's CPU time per attempt (from `/proc`) and a relay client's
//! request latency before and during the flood.

use crate::report::Report;
use iris_proto::Instant;
use iris_proto::inspect::{Link, LinkInput, Role};
use iris_proto::{LinkConfig, NetworkKey};
use iris_tokio::Tokio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connections of each kind, and how many are open at once.
const ATTEMPTS: usize = 1500;
const AT_ONCE: usize = 32;

pub(crate) async fn run(report: &mut Report, quick: bool) -> Result<(), BoxError> {
    let iris = crate::ring::iris_binary()?;
    let key_path = crate::ring::key();
    let nodes = crate::ring::boot(&iris, 1, &key_path)?;
    let node = &nodes[0];
    let peer = node
        .peer
        .ok_or("the node did not say where its peer listener is")?;
    let key = Arc::new(NetworkKey::from_bytes(&std::fs::read(&key_path)?)?);
    let flight = record_flight(peer, key, &node.network).await?;
    let attempts = if quick { ATTEMPTS / 5 } else { ATTEMPTS };
    let rounds = if quick { 1_000 } else { 5_000 };

    report.latency(
        "request 64 B, no flood",
        crate::iris::request_latency::<Tokio>(node.port, node.port, 64, rounds).await?,
    );
    for (what, bytes) in [
        ("replayed first flights", flight),
        ("garbage", vec![0x5a; 300]),
    ] {
        // The flood alone, for the node's CPU per attempt.
        let cpu = node.cpu_time();
        let start = std::time::Instant::now();
        let refused = flood(peer, bytes.clone(), attempts).await?;
        let wall = start.elapsed();
        let used = node.cpu_time().saturating_sub(cpu);
        report.row(format!(
            "| node CPU per attempt, {what} | {:.3} ms | {:.0} % of a core | {attempts} connections ({refused} closed by the node) in {:.1} s |",
            used.as_secs_f64() * 1e3 / attempts as f64,
            100.0 * used.as_secs_f64() / wall.as_secs_f64(),
            wall.as_secs_f64()
        ));
        // Again, for as long as a relay client's requests go on.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flooding = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += flood(peer, bytes.clone(), AT_ONCE * 4).await?;
                }
                Ok::<usize, BoxError>(n)
            })
        };
        let latency =
            crate::iris::request_latency::<Tokio>(node.port, node.port, 64, rounds).await?;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let during = flooding.await??;
        report.latency(
            &format!("request 64 B, during {what} ({during} of them meanwhile)"),
            latency,
        );
    }
    let losses = node.losses();
    report.row(format!(
        "| the node after the flood | {} | | counters not zero |",
        if losses.is_empty() {
            "nothing lost".to_string()
        } else {
            losses.join(", ")
        }
    ));
    drop(nodes);
    Ok(())
}

/// A genuine member's first flight toward the node at `peer`: its HELLO and, once the
/// node's HELLO is in, its signed AUTH; what an eavesdropper on the wire would record.
async fn record_flight(
    peer: std::net::SocketAddr,
    key: Arc<NetworkKey>,
    network: &str,
) -> Result<Vec<u8>, BoxError> {
    let cfg = LinkConfig {
        network: network.into(),
        ..LinkConfig::default()
    };
    let mut link = Link::new(Role::Initiator, key, cfg, [7; 32], Instant::ZERO);
    let mut stream = TcpStream::connect(peer).await?;
    let mut flight = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    // HELLO, then AUTH once the node's HELLO arrived: two transmits from this end.
    while flight.is_empty() || !link.is_open() && link.stats().signatures == 0 {
        while let Some(f) = link.poll_transmit() {
            flight.extend_from_slice(&f);
            stream.write_all(&f).await?;
        }
        if link.stats().signatures > 0 {
            break;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await??;
        if n == 0 {
            return Err("the node closed a genuine handshake".into());
        }
        link.handle(Instant::ZERO, LinkInput::Bytes(&buf[..n]));
    }
    while let Some(f) = link.poll_transmit() {
        flight.extend_from_slice(&f);
        stream.write_all(&f).await?;
    }
    Ok(flight)
}

/// `attempts` connections to `peer`, `AT_ONCE` at a time, each writing `bytes` and waiting
/// for the node to close it; returns how many the node closed.
async fn flood(
    peer: std::net::SocketAddr,
    bytes: Vec<u8>,
    attempts: usize,
) -> Result<usize, BoxError> {
    let bytes = Arc::new(bytes);
    let permits = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
    let mut tasks = Vec::with_capacity(attempts);
    for _ in 0..attempts {
        let permit = permits.clone().acquire_owned().await?;
        let bytes = bytes.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let Ok(mut s) = TcpStream::connect(peer).await else {
                return false;
            };
            if s.write_all(&bytes).await.is_err() {
                return true;
            }
            let mut sink = [0u8; 4096];
            // The node answers with its HELLO, then closes; a node that kept the stranger
            // would hold this connection until the handshake timeout.
            loop {
                match tokio::time::timeout(Duration::from_secs(30), s.read(&mut sink)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return true,
                    Ok(Ok(_)) => {}
                    Err(_) => return false,
                }
            }
        }));
    }
    let mut closed = 0;
    for t in tasks {
        closed += usize::from(t.await?);
    }
    Ok(closed)
}
