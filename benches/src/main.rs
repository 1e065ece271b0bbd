//! `iris-bench`: the end-to-end benchmark harness.
//!
//! Runs one Iris node (in-process, on its own thread, or an external one with `--port`) and
//! measures, through the Rust client: broadcast and publish delivered per second, request
//! round trips (p50/p99 with one in flight, rate with 32 in flight) and tunnel throughput,
//! at 64 B, 1 KiB and 64 KiB. In the same run it measures baselines on this machine: a raw
//! TCP ping-pong on loopback and, with `--nats`, a `nats-server` driven by a raw-protocol
//! client, so results can be quoted as ratios.
//!
//! ```text
//! cargo run --release -p iris-benches -- --nats
//! ```

mod balance;
mod chart;
mod embedded;
mod flood;
mod groups;
mod iris;
mod nats;
mod overload;
mod priority;
mod raw;
mod report;
mod ring;
mod slowsub;
mod tcp;
mod twonode;

use clap::Parser;
use iris_tokio::Tokio;
use report::Report;

/// End-to-end benchmarks of one Iris node through the Rust client.
#[derive(Debug, Parser)]
struct Args {
    /// Use a running node on this relay port instead of an in-process one.
    #[arg(long)]
    port: Option<u16>,
    /// Also run nats-server (must be on PATH) on loopback for a side-by-side baseline.
    #[arg(long)]
    nats: bool,
    /// Smaller message counts, for a quick look.
    #[arg(long)]
    quick: bool,
    /// Scenarios to run (all but overload, ring, twonode and embedded by default): request,
    /// broadcast, publish, tunnel; or one of overload, ring (the whispers ring on `iris`
    /// processes), twonode (two `iris` processes against one), embedded (a node in this
    /// process, its clients through in-memory pipes against through its port), flood
    /// (strangers at a networked node's peer port), groups (many topics over five `iris`
    /// processes, their memory before, with and after the groups), priority (requests
    /// between two `iris` processes alone and beside a 64 KiB publish flood), slowsub (a
    /// fast subscriber's rate beside a slow one on two `iris` processes), balance (requests'
    /// shares over members on three `iris` processes).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Topics in the groups scenario (each subscribed on every one of 5 nodes).
    #[arg(long, default_value_t = 100_000)]
    groups: usize,
    /// Subscribe-and-leave cycles in the groups scenario.
    #[arg(long, default_value_t = 2)]
    group_cycles: usize,
    /// Seconds of flooding per payload size in the overload scenario.
    #[arg(long, default_value_t = 60)]
    overload_secs: u64,
    /// The node's memory budget in the overload scenario, in MiB.
    #[arg(long, default_value_t = 256)]
    overload_memory_mib: usize,
    /// Nodes in the whispers ring (each its own `iris` process).
    #[arg(long, default_value_t = 4)]
    ring_nodes: usize,
    /// Payload sizes of the ring, in bytes.
    #[arg(long, value_delimiter = ',', default_values_t = [64usize, 256, 1024, 4096, 16384, 65536])]
    ring_sizes: Vec<usize>,
    /// Ring modes: closed (at most --ring-window in flight), open (as fast as it takes).
    #[arg(long, value_delimiter = ',', default_values_t = ["closed".to_string(), "open".to_string()])]
    ring_modes: Vec<String>,
    /// Messages in flight in the closed-loop ring.
    #[arg(long, default_value_t = 1024)]
    ring_window: u64,
    /// Runs per ring size and mode.
    #[arg(long, default_value_t = 1)]
    ring_runs: u64,
    /// Seconds of sending per ring run.
    #[arg(long, default_value_t = 5.0)]
    ring_secs: f64,
    /// Draw the ring's throughput against message size into this SVG file.
    #[arg(long)]
    chart: Option<std::path::PathBuf>,
    /// Payload sizes in bytes.
    #[arg(long, value_delimiter = ',', default_values_t = [64usize, 1024, 65536])]
    sizes: Vec<usize>,
}

/// How many messages to push for a payload size: about `bytes_budget` bytes, within bounds.
fn count_for(size: usize, quick: bool) -> usize {
    let (budget, max) = if quick {
        (64 << 20, 200_000)
    } else {
        (512 << 20, 1_000_000)
    };
    (budget / size.max(1)).clamp(2_000, max)
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = Args::parse();
    // The node has its own thread; the clients share one more, so the run fits 2 cores.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut report = Report::default();
    rt.block_on(async {
        // Two iris processes, alone: they compete with nothing else of the harness.
        if args.only.iter().any(|o| o == "twonode") {
            twonode::run(&mut report, args.quick).await?;
            return Ok(());
        }
        // The ring runs alone: its nodes are processes of their own.
        if args.only.iter().any(|o| o == "ring") {
            let modes = args
                .ring_modes
                .iter()
                .map(|m| match m.as_str() {
                    "closed" => Ok(ring::Mode::Closed(args.ring_window)),
                    "open" => Ok(ring::Mode::Open),
                    other => Err(format!("unknown ring mode {other:?} (closed, open)")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let plan = ring::Plan {
                nodes: args.ring_nodes,
                sizes: args.ring_sizes.clone(),
                modes,
                runs: args.ring_runs,
                secs: args.ring_secs,
            };
            let runs = ring::bench(&plan).await?;
            for r in &runs {
                report.row(ring::row(r));
            }
            report.row(ring::summary(&runs));
            if let Some(path) = &args.chart {
                chart::draw(path, &runs)?;
                eprintln!("chart written to {}", path.display());
            }
            return Ok(());
        }
        // Requests beside a flood across two iris processes, alone.
        if args.only.iter().any(|o| o == "priority") {
            priority::run(&mut report, args.quick).await?;
            return Ok(());
        }
        // Requests balanced over three iris processes, alone.
        if args.only.iter().any(|o| o == "balance") {
            balance::run(&mut report).await?;
            return Ok(());
        }
        // A slow subscriber beside a fast one across two iris processes, alone.
        if args.only.iter().any(|o| o == "slowsub") {
            slowsub::run(&mut report, args.quick).await?;
            return Ok(());
        }
        // Many groups over five iris processes, alone: it reads their memory.
        if args.only.iter().any(|o| o == "groups") {
            groups::run(&mut report, args.groups, args.group_cycles).await?;
            return Ok(());
        }
        // Strangers at a networked node's peer port, alone.
        if args.only.iter().any(|o| o == "flood") {
            flood::run(&mut report, args.quick).await?;
            return Ok(());
        }
        // An embedded node against the same node over its port, alone.
        if args.only.iter().any(|o| o == "embedded") {
            let nats = if args.nats {
                Some(nats::Server::start()?)
            } else {
                None
            };
            embedded::run(&mut report, args.quick, nats.as_ref()).await?;
            return Ok(());
        }
        let node = match args.port {
            Some(_) => None,
            None => Some(iris_tokio::driver::NodeHandle::spawn(
                iris_tokio::driver::NodeOptions {
                    port: 0,
                    ..Default::default()
                },
            )?),
        };
        let port = args
            .port
            .or(node.as_ref().map(|n| n.port()))
            .unwrap_or(55555);
        let nats = if args.nats {
            Some(nats::Server::start()?)
        } else {
            None
        };

        let run = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
        // Overload runs alone: it measures the process's peak memory, which earlier
        // scenarios would have raised.
        if args.only.iter().any(|o| o == "overload") {
            for &size in &args.sizes {
                let outcome =
                    overload::run(size, args.overload_secs, args.overload_memory_mib << 20).await?;
                for row in outcome.rows() {
                    report.row(row);
                }
            }
            return Ok(());
        }
        report.latency(
            "tcp ping-pong 64 B (baseline)",
            tcp::ping_pong(if args.quick { 5_000 } else { 20_000 }).await?,
        );
        // Latency first: the floods below leave the process with big, fragmented heaps.
        if run("request") {
            let rounds = if args.quick { 5_000 } else { 20_000 };
            if let Some(server) = &nats {
                report.latency(
                    "nats request 64 B (baseline)",
                    nats::request(server.port, 64, rounds).await?,
                );
            }
            for &size in &args.sizes {
                let rounds = if size > 4096 { rounds / 10 } else { rounds };
                report.latency(
                    &format!("iris request {size} B"),
                    iris::request_latency::<Tokio>(port, port, size, rounds).await?,
                );
                report.rate(
                    &format!("iris request {size} B, 32 in flight"),
                    size,
                    iris::request_rate::<Tokio>(port, size, rounds * 2, 32).await?,
                );
            }
        }
        for &size in &args.sizes {
            let n = count_for(size, args.quick);
            if let Some(server) = &nats
                && (run("broadcast") || run("publish"))
            {
                report.rate(
                    &format!("nats pub/sub {size} B (baseline)"),
                    size,
                    nats::pub_sub(server.port, size, n).await?,
                );
            }
            if run("broadcast") {
                report.rate(
                    &format!("iris broadcast {size} B"),
                    size,
                    iris::broadcast::<Tokio>(port, port, size, n).await?,
                );
            }
            if run("publish") {
                report.rate(
                    &format!("iris publish {size} B"),
                    size,
                    iris::publish::<Tokio>(port, size, n).await?,
                );
            }
            if run("tunnel") {
                report.rate(
                    &format!("iris tunnel {size} B"),
                    size,
                    iris::tunnel::<Tokio>(port, port, size, n.min(200_000)).await?,
                );
            }
        }
        if let Some(node) = node {
            node.stop("benchmark finished")?;
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })?;
    report.print();
    Ok(())
}
