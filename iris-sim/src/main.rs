//! `iris-sim`: simulate a network of Iris nodes with churn; the last line is a JSON summary.
//!
//! ```text
//! cargo run --release -p iris-sim -- --nodes 1000 --minutes 10 --churn 0.05 --seed 7
//! cargo run --release -p iris-sim -- --swarm --budget 3600
//! cargo run --release -p iris-sim -- --swarm --budget 60 --swarm-from 42 --max-nodes 200
//! ```

use clap::Parser;
use iris_proto::NetworkKey;
use iris_proto::Security;
use iris_sim::{SimConfig, Summary, run, swarm};
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
    /// Stalls per virtual minute: a random live node stops (as under SIGSTOP) for
    /// --stall-secs, then resumes with every timer late.
    #[arg(long, default_value_t = 0.0, value_name = "RATE")]
    stalls: f64,
    /// How long a stall lasts, in seconds.
    #[arg(long, default_value_t = 12, value_name = "SECS")]
    stall_secs: u64,
    /// A partition that heals: `FRACTION:START:SECS` cuts FRACTION of the nodes off from
    /// the rest START seconds after the joins, for SECS seconds (e.g. `0.3:60:30`).
    #[arg(long, value_name = "FRACTION:START:SECS", value_parser = parse_partition)]
    partition: Option<iris_sim::Partition>,
    /// Swarm testing: draw a fresh seed, draw every option of a run from it, run, and
    /// repeat until the budget is spent or a run fails (which prints its replay).
    #[arg(long, conflicts_with = "swarm_seed")]
    swarm: bool,
    /// Seconds of wall time a swarm may take (no run starts after it is spent).
    #[arg(long, default_value_t = 300.0, requires = "swarm")]
    budget: f64,
    /// The first seed of a swarm (fresh from the OS otherwise): a swarm replays whole from
    /// its first seed, each next one following from the last. CI derives it from the commit.
    #[arg(long, value_name = "SEED", requires = "swarm")]
    swarm_from: Option<u64>,
    /// Replay one swarm run from its seed.
    #[arg(long, value_name = "SEED")]
    swarm_seed: Option<u64>,
    /// Largest network a swarm run may draw.
    #[arg(long, default_value_t = 3000)]
    max_nodes: usize,
}

/// The simulator allocates many small buffers (one per record) on one thread: mimalloc
/// is markedly faster at that than the system allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    if args.swarm {
        return swarm_until(
            args.swarm_from.unwrap_or_else(fresh_seed),
            args.budget,
            args.max_nodes,
        );
    }
    if let Some(seed) = args.swarm_seed {
        return swarm_run(seed, args.max_nodes, args.check_determinism);
    }
    let mut cfg = SimConfig {
        nodes: args.nodes.max(1),
        minutes: args.minutes,
        churn: args.churn,
        seed: args.seed,
        ..SimConfig::default()
    };
    cfg.overlay.repair = !args.no_repair;
    cfg.stalls = args.stalls.max(0.0);
    cfg.stall_length = std::time::Duration::from_secs(args.stall_secs);
    cfg.partition = args.partition;
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
    } + &if args.stalls > 0.0 {
        format!(" --stalls {} --stall-secs {}", args.stalls, args.stall_secs)
    } else {
        String::new()
    } + &args
        .partition
        .as_ref()
        .map(|p| {
            format!(
                " --partition {}:{}:{}",
                p.fraction,
                p.start.as_secs(),
                p.length.as_secs()
            )
        })
        .unwrap_or_default();
    let ok = run_checked(&cfg, args.check_determinism, &replay);
    exit(ok)
}

/// Parses `FRACTION:START:SECS` (a share of the nodes in (0, 1), whole seconds).
fn parse_partition(s: &str) -> Result<iris_sim::Partition, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let [fraction, start, secs] = parts[..] else {
        return Err(format!(
            "{s:?}: expected FRACTION:START:SECS, e.g. 0.3:60:30"
        ));
    };
    let fraction: f64 = fraction
        .parse()
        .map_err(|e| format!("fraction {fraction:?}: {e}"))?;
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(format!("fraction {fraction}: must be between 0 and 1"));
    }
    let secs_of = |what: &str, v: &str| {
        v.parse::<u64>()
            .map(std::time::Duration::from_secs)
            .map_err(|e| format!("{what} {v:?}: {e}"))
    };
    Ok(iris_sim::Partition {
        start: secs_of("start", start)?,
        length: secs_of("length", secs)?,
        fraction,
    })
}

/// Swarm runs from fresh seeds until `budget` seconds are spent; stops at the first
/// failure, which has printed its replay.
fn swarm_until(first: u64, budget: f64, max_nodes: usize) -> ExitCode {
    let start = std::time::Instant::now();
    let mut seed = first;
    println!("swarm: first seed {seed}, budget {budget:.0} s, at most {max_nodes} nodes");
    let mut runs = 0;
    while start.elapsed().as_secs_f64() < budget {
        if swarm_run(seed, max_nodes, false) == ExitCode::FAILURE {
            println!(
                "swarm: run {} failed after {:.0} s",
                runs + 1,
                start.elapsed().as_secs_f64()
            );
            return ExitCode::FAILURE;
        }
        runs += 1;
        // The next seed follows from this one, so a whole swarm replays from its first.
        seed = splitmix(seed);
    }
    println!(
        "swarm: {runs} runs passed in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

/// One swarm run, drawn from `seed`.
fn swarm_run(seed: u64, max_nodes: usize, check_determinism: bool) -> ExitCode {
    let cfg = swarm::draw(seed, max_nodes);
    println!("swarm seed {seed}: {}", swarm::describe(&cfg));
    let replay =
        format!("cargo run --release -p iris-sim -- --swarm-seed {seed} --max-nodes {max_nodes}");
    exit(run_checked(&cfg, check_determinism, &replay))
}

/// Runs `cfg`, prints what it measured and any violation, and the replay line if it failed.
fn run_checked(cfg: &SimConfig, check_determinism: bool, replay: &str) -> bool {
    let s = run(cfg);
    let mut ok = report(&s);
    if check_determinism {
        let again = run(cfg);
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
    ok
}

/// Prints a run's figures and its first violations; true if it had none.
fn report(s: &Summary) -> bool {
    println!(
        "{} nodes, {:.0} virtual s, {} events in {:.2} s ({:.0} events/s, peak RSS {} MiB); hops mean {:.2} p99 {}; tables {:.1}% full; converged {:.0} s after the last fault (bound {:.0} s); {:.0} B/s per node; {} violations",
        s.nodes,
        s.virtual_secs,
        s.events,
        s.wall_secs,
        s.events_per_sec,
        s.peak_rss_mib,
        s.mean_hops,
        s.p99_hops,
        s.table_fill * 100.0,
        s.convergence_secs,
        s.convergence_bound_secs,
        s.maintenance_bytes_per_node_per_sec,
        s.violations.len()
    );
    for v in s.violations.iter().take(10) {
        println!("violation: {v:?}");
    }
    if let Some(a) = &s.audit {
        println!(
            "messaging: broadcast delivery {:.5}, publish delivery {:.5} ({} owed, {} lost between stable nodes), {} requests answered {:.5}, {} tunnels ({} completed), tree maintenance {:.0} B/s per node",
            a.broadcast_delivery,
            a.publish_delivery,
            a.expected_deliveries,
            a.stable_losses,
            a.requests,
            a.requests_answered,
            a.tunnels,
            a.tunnels_completed,
            s.tree_bytes_per_node_per_sec
        );
        for v in a.violations.iter().take(10) {
            println!("violation: {v}");
        }
        for l in a.stable_loss_examples.iter().take(10) {
            println!("lost between stable nodes: {l}");
        }
    }
    s.violation_count() == 0
}

/// A seed nobody chose: the clock and the process id, mixed. Only the swarm's first seed
/// comes from here; everything after it is drawn from that seed.
fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    splitmix(nanos ^ u64::from(std::process::id()).rotate_left(32))
}

/// SplitMix64's step: a well-mixed next value from any 64-bit state.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
