//! The node on each runtime, reached each way: a tokio node and a smol node in this
//! process, their clients attached through in-memory pipes (embedded) or through loopback
//! TCP to the node's relay port (socket), the same scenarios alternating between the four
//! (and NATS beside them with `--nats`). Clients run on their node's runtime.

use crate::iris::{self, Dial};
use crate::report::Report;
use iris_driver::runtime::Runtime;
use iris_smol::Smol;
use iris_tokio::Tokio;
use std::sync::Arc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A way to reach a node: its runtime and its dial.
#[derive(Clone)]
enum Way {
    Tokio(Dial<Tokio>),
    Smol(Dial<Smol>),
}

/// Runs `$scenario` (a function of `crate::iris`, generic over the runtime) on `$way`:
/// `twice` passes the dial as both the member's and the sender's, `once` as the only one.
macro_rules! on {
    (twice $way:expr, $scenario:ident($($arg:expr),*)) => {
        match $way {
            Way::Tokio(d) => iris::$scenario::<Tokio>(d.clone(), d.clone(), $($arg),*).await,
            Way::Smol(d) => iris::$scenario::<Smol>(d.clone(), d.clone(), $($arg),*).await,
        }
    };
    (once $way:expr, $scenario:ident($($arg:expr),*)) => {
        match $way {
            Way::Tokio(d) => iris::$scenario::<Tokio>(d.clone(), $($arg),*).await,
            Way::Smol(d) => iris::$scenario::<Smol>(d.clone(), $($arg),*).await,
        }
    };
}

fn node<R: Runtime>() -> Result<Arc<iris_driver::driver::NodeHandle<R>>, BoxError> {
    Ok(Arc::new(iris_driver::driver::NodeHandle::<R>::spawn(
        iris_driver::driver::NodeOptions {
            port: 0,
            ..Default::default()
        },
    )?))
}

pub(crate) async fn run(
    report: &mut Report,
    quick: bool,
    nats: Option<&crate::nats::Server>,
) -> Result<(), BoxError> {
    let tokio_node = node::<Tokio>()?;
    let smol_node = node::<Smol>()?;
    let ways = [
        ("tokio socket", Way::Tokio(Dial::Port(tokio_node.port()))),
        (
            "tokio embedded",
            Way::Tokio(Dial::Embedded(tokio_node.clone())),
        ),
        ("smol socket", Way::Smol(Dial::Port(smol_node.port()))),
        (
            "smol embedded",
            Way::Smol(Dial::Embedded(smol_node.clone())),
        ),
    ];
    let rounds = if quick { 5_000 } else { 20_000 };
    if let Some(server) = nats {
        report.latency(
            "nats request 64 B (baseline)",
            crate::nats::request(server.port, 64, rounds).await?,
        );
    }
    // Each way twice, alternating, so that a noisy moment hits all.
    for round in 1..=2 {
        for (name, way) in &ways {
            let latency = on!(twice way, request_latency(64, rounds))?;
            report.latency(&format!("request 64 B, {name} (round {round})"), latency);
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
        for (name, way) in &ways {
            let rate = on!(twice way, broadcast(size, n))?;
            report.rate(&format!("broadcast {size} B, {name}"), size, rate);
            let rate = on!(once way, publish(size, n))?;
            report.rate(&format!("publish {size} B, {name}"), size, rate);
        }
    }
    drop(ways);
    Arc::try_unwrap(tokio_node)
        .map_err(|_| "the tokio node is still shared")?
        .stop("benchmark finished")?;
    Arc::try_unwrap(smol_node)
        .map_err(|_| "the smol node is still shared")?
        .stop("benchmark finished")?;
    Ok(())
}
