//! `iris-sim`: simulate a network of Iris nodes with churn; the last line is a JSON summary.
//!
//! ```text
//! cargo run --release -p iris-sim -- --nodes 1000 --minutes 10 --churn 0.05 --seed 7
//! ```

use clap::Parser;
use iris_proto::NetworkKey;
use iris_proto::Security;
use iris_sim::{SimConfig, run};
use std::process::ExitCode;
use std::sync::Arc;

/// Simulate many Iris overlay nodes in virtual time, with churn, and check them.
#[derive(Debug, Parser)]
struct Args {
    /// Nodes in the network.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Virtual minutes of churn after the joins.
    #[arg(long, default_value_t = 1.0)]
    minutes: f64,
    /// Fraction of nodes replaced per virtual minute.
    #[arg(long, default_value_t = 0.05)]
    churn: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run twice and compare the trace hashes.
    #[arg(long)]
    check_determinism: bool,
    /// Disable leaf-set repair (to watch the oracle catch the damage).
    #[arg(long)]
    no_repair: bool,
    /// Secure every link with this network key (RSA, PEM or DER): the real handshake,
    /// two RSA signatures per link, so keep the network small. Links are plain without it.
    #[arg(long, value_name = "PATH")]
    rsa: Option<std::path::PathBuf>,
    /// What runs on the nodes besides the overlay: `none`, or `messaging` (100 services in
    /// 10 clusters, 50 topics with 3 subscribers each, 100 actors broadcasting, publishing,
    /// requesting and tunnelling throughout, all checked by the delivery auditor).
    #[arg(long, default_value = "none", value_parser = ["none", "messaging"])]
    workload: String,
}

/// The simulator allocates many small buffers (one per record) on one thread: mimalloc
/// is markedly faster at that than the system allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    let mut cfg = SimConfig {
        nodes: args.nodes.max(1),
        minutes: args.minutes,
        churn: args.churn,
        seed: args.seed,
        ..SimConfig::default()
    };
    cfg.overlay.repair = !args.no_repair;
    if args.workload == "messaging" {
        cfg.workload = Some(iris_sim::Workload::default());
    }
    if let Some(path) = &args.rsa {
        let key = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| NetworkKey::from_bytes(&b).map_err(|e| e.to_string()));
        match key {
            Ok(k) => cfg.security = Security::Rsa(Arc::new(k)),
            Err(e) => {
                eprintln!("iris-sim: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    let replay = format!(
        "cargo run --release -p iris-sim -- --nodes {} --minutes {} --churn {} --seed {}{}{}",
        args.nodes,
        args.minutes,
        args.churn,
        args.seed,
        if args.no_repair { " --no-repair" } else { "" },
        args.rsa
            .as_ref()
            .map(|p| format!(" --rsa {}", p.display()))
            .unwrap_or_default()
    ) + &if args.workload == "none" {
        String::new()
    } else {
        format!(" --workload {}", args.workload)
    };
    let s = run(&cfg);
    println!(
        "{} nodes, {:.0} virtual s, {} events in {:.2} s ({:.0} events/s); hops mean {:.2} p99 {}; converged {:.1} s after churn; {:.0} B/s per node; {} violations",
        s.nodes,
        s.virtual_secs,
        s.events,
        s.wall_secs,
        s.events_per_sec,
        s.mean_hops,
        s.p99_hops,
        s.convergence_secs,
        s.maintenance_bytes_per_node_per_sec,
        s.violations.len()
    );
    let mut ok = s.violation_count() == 0;
    for v in s.violations.iter().take(10) {
        println!("violation: {v:?}");
    }
    if let Some(a) = &s.audit {
        println!(
            "messaging: broadcast delivery {:.5}, publish delivery {:.5} ({} owed), {} requests answered {:.5}, {} tunnels ({} completed), tree maintenance {:.0} B/s per node",
            a.broadcast_delivery,
            a.publish_delivery,
            a.expected_deliveries,
            a.requests,
            a.requests_answered,
            a.tunnels,
            a.tunnels_completed,
            s.tree_bytes_per_node_per_sec
        );
        for v in a.violations.iter().take(10) {
            println!("violation: {v}");
        }
    }
    if args.check_determinism {
        let again = run(&cfg);
        if again.trace_hash == s.trace_hash {
            println!("deterministic: both runs hashed {:016x}", s.trace_hash);
        } else {
            println!(
                "NOT deterministic: {:016x} then {:016x}",
                s.trace_hash, again.trace_hash
            );
            ok = false;
        }
    }
    if !ok {
        println!("replay with: {replay}");
    }
    println!("{}", s.to_json());
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
