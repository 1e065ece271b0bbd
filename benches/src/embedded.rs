//! An embedded node against the same node over its relay port: one `NodeHandle` in this
//! process, its clients attached through in-memory pipes or through loopback TCP, the
//! same scenarios alternating between the two (and NATS beside them with `--nats`).

use crate::iris::{self, Dial};
use crate::report::Report;
use std::sync::Arc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) async fn run(
    report: &mut Report,
    quick: bool,
    nats: Option<&crate::nats::Server>,
) -> Result<(), BoxError> {
    let node = Arc::new(iris_tokio::driver::NodeHandle::spawn(
        iris_tokio::driver::NodeOptions {
            port: 0,
            ..Default::default()
        },
    )?);
    let ways = [
        ("socket", Dial::Port(node.port())),
        ("embedded", Dial::Embedded(node.clone())),
    ];
    let rounds = if quick { 5_000 } else { 20_000 };
    if let Some(server) = nats {
        report.latency(
            "nats request 64 B (baseline)",
            crate::nats::request(server.port, 64, rounds).await?,
        );
    }
    // Each way twice, alternating, so that a noisy moment hits both.
    for round in 1..=2 {
        for (name, dial) in &ways {
            report.latency(
                &format!("request 64 B, {name} (round {round})"),
                iris::request_latency(dial.clone(), dial.clone(), 64, rounds).await?,
            );
        }
    }
    for size in [64usize, 65536] {
        let n = match (size, quick) {
            (64, true) => 100_000,
            (64, false) => 1_000_000,
            (_, true) => 2_000,
            (_, false) => 16_384,
        };
        if let Some(server) = nats {
            report.rate(
                &format!("nats pub/sub {size} B (baseline)"),
                size,
                crate::nats::pub_sub(server.port, size, n).await?,
            );
        }
        for (name, dial) in &ways {
            report.rate(
                &format!("broadcast {size} B, {name}"),
                size,
                iris::broadcast(dial.clone(), dial.clone(), size, n).await?,
            );
            report.rate(
                &format!("publish {size} B, {name}"),
                size,
                iris::publish(dial.clone(), size, n).await?,
            );
        }
    }
    drop(ways);
    let node = Arc::try_unwrap(node).map_err(|_| "the node is still shared")?;
    node.stop("benchmark finished")?;
    Ok(())
}
