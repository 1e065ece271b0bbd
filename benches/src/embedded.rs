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

/// The floor of any path that crosses threads: a bare message to a task on another thread
/// (a current-thread tokio runtime, as a node's) and its answer back, through channels,
/// with nothing else done. A request to a node on its own thread makes at least this trip.
async fn thread_round_trip(rounds: usize) -> Result<Vec<std::time::Duration>, BoxError> {
    let (to_thread, asked) = tokio::sync::mpsc::channel::<tokio::sync::oneshot::Sender<()>>(1);
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().build()?;
        rt.block_on(async move {
            let mut asked = asked;
            while let Some(answer) = asked.recv().await {
                let _ = answer.send(());
            }
        });
        Ok::<_, std::io::Error>(())
    });
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..rounds + rounds / 10 {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let t = std::time::Instant::now();
        to_thread.send(answer).await?;
        answered.await?;
        // The first tenth warms up.
        if i >= rounds / 10 {
            samples.push(t.elapsed());
        }
    }
    drop(to_thread);
    thread.join().map_err(|_| "the echo thread panicked")??;
    Ok(samples)
}

/// Request round trips with the node, its member and the requester all on one thread: the
/// node run with `run_with` inside `R`'s single-threaded runtime, its clients attached
/// there.
fn in_thread_latency<R: Runtime>(
    size: usize,
    rounds: usize,
) -> Result<Vec<std::time::Duration>, BoxError> {
    std::thread::spawn(move || {
        let opts = iris_driver::driver::NodeOptions {
            port: 0,
            relay: false,
            ..Default::default()
        };
        let (latency, _stats) = R::block_on(iris_driver::driver::run_with::<R, _, _, _>(
            opts,
            |node| async move {
                let dial = Dial::Attached(node);
                iris::request_latency::<R>(dial.clone(), dial, size, rounds).await
            },
        ))??;
        latency
    })
    .join()
    .map_err(|_| "the in-thread node panicked")?
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
        report.latency(
            &format!("a bare round trip to another thread (baseline, round {round})"),
            thread_round_trip(rounds).await?,
        );
        let latency = in_thread_latency::<Tokio>(64, rounds)?;
        report.latency(
            &format!("request 64 B, tokio in-thread (round {round})"),
            latency,
        );
        let latency = in_thread_latency::<Smol>(64, rounds)?;
        report.latency(
            &format!("request 64 B, smol in-thread (round {round})"),
            latency,
        );
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
