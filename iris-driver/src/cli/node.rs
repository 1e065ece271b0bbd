//! The node itself (`iris --net ...`, `iris --dev`): its flags, key, logging, signals, and
//! a node run until a signal stops it.

use crate::driver::{self, NetworkOptions, NodeOptions};
use crate::runtime::Runtime;
use iris_proto::{MeshConfig, Security};
use std::process::ExitCode;
use std::sync::Arc;
use tracing_subscriber::EnvFilter;

/// The node's flags (`iris --net ...`, `iris --dev`).
#[derive(Debug, clap::Args)]
pub(super) struct NodeArgs {
    /// Run a lone development node: random network name and key, no peers, no discovery.
    #[arg(long)]
    pub(super) dev: bool,

    /// Network name; nodes join only nodes of the same network (and the same key).
    #[arg(long, value_name = "NAME")]
    pub(super) net: Option<String>,

    /// Path of the network's shared RSA private key: PKCS#1 or PKCS#8, PEM or DER, at least
    /// 2048 bits (`openssl genrsa -out net.pem 2048`).
    #[arg(long, value_name = "PATH")]
    pub(super) rsa: Option<std::path::PathBuf>,

    /// During a key rotation, the network's key before the one given with --rsa: links
    /// authenticated with it are accepted too, so that a network moves from one key to the
    /// next a node at a time (restart each with `--rsa NEW --rsa-previous OLD`, then each
    /// without --rsa-previous).
    #[arg(long, value_name = "PATH")]
    pub(super) rsa_previous: Option<std::path::PathBuf>,

    /// A node of the network to join through, as HOST:PORT (its peer address); repeat for
    /// several. Retried while this node knows nobody. A host name is resolved again on every
    /// retry and every address it names is joined through (a Kubernetes headless Service,
    /// round-robin DNS); one that resolves to nothing yet is retried. Without seeds the node
    /// starts a network of its own, which others may join through it.
    #[arg(long = "seed", value_name = "HOST:PORT")]
    pub(super) seeds: Vec<String>,

    /// Where the peer listener binds. Loopback by default: reaching other machines is an
    /// explicit choice (e.g. `0.0.0.0:7000` with `--advertise 10.0.0.5:7000`).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR:PORT")]
    pub(super) peer_bind: std::net::SocketAddr,

    /// The peer address other nodes are told to dial (default: the bound address).
    #[arg(long, value_name = "ADDR:PORT")]
    pub(super) advertise: Option<std::net::SocketAddr>,

    /// Where to look for other nodes of the network besides the seeds: `host` (other nodes
    /// on this machine, over loopback UDP), `lan` (this machine and every address of its
    /// IPv4 subnets: opt-in, it sends to every host there) or `none`.
    #[arg(long, default_value = "host", value_name = "SCOPE")]
    pub(super) discover: crate::discovery::Discover,

    /// The well-known UDP ports discovery binds (the first free one) and sends beacons to.
    /// Nodes look for each other only on the same ports: a different list keeps a group of
    /// nodes apart from the rest on one host.
    #[arg(long, value_delimiter = ',', value_name = "PORT,...",
          default_values_t = crate::discovery::DEFAULT_PORTS)]
    pub(super) discovery_ports: Vec<u16>,

    /// Relay port for local clients, on 127.0.0.1 and ::1. 0 picks a free port.
    #[arg(long, default_value_t = 55555, value_name = "PORT")]
    pub(super) port: u16,

    /// Log filter, e.g. `info`, `debug`, `iris_driver=trace` (RUST_LOG overrides it).
    #[arg(long, default_value = "info", value_name = "FILTER")]
    pub(super) log: String,

    /// Largest message, request, reply or event a client may send, in bytes.
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    pub(super) max_message_size: u64,

    /// Most relay clients at once (past their handshake); the next is denied with the
    /// reason. Default: what the open-file limit allows once the node has raised it as far
    /// as the OS lets it (clients need one descriptor each; some are kept for peers).
    #[arg(long, value_name = "N")]
    pub(super) max_clients: Option<usize>,

    /// Most connections still in their handshake; when full, the oldest is closed, so
    /// connections that never send INIT cannot keep clients out.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub(super) max_handshakes: usize,

    /// Unwritten bytes for one client above which the producers sending to it stop being
    /// read until it catches up (only they: everyone else is served). Default: 8 MiB, or
    /// half the per-client cap if that is smaller.
    #[arg(long, value_name = "BYTES")]
    pub(super) client_backlog_high: Option<usize>,

    /// Milliseconds a client may stay congested before it is cut as a slow consumer.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub(super) slow_consumer_timeout_ms: u64,

    /// Milliseconds a congested client may hold back a topic or cluster that has other
    /// consumers; past it the others go on at their rate and what goes to it queues in its
    /// own share until it drains or is cut. A group's only consumer always throttles its
    /// producers instead.
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub(super) slow_consumer_grace_ms: u64,

    /// Hard cap on unwritten bytes for one client (its share of the memory budget); beyond
    /// it the client is cut at once. Default: a quarter of --max-memory, at most 256 MiB.
    #[arg(long, value_name = "BYTES")]
    pub(super) max_client_backlog: Option<usize>,

    /// Memory budget for everything the node holds for clients (queued messages, partial
    /// input, tunnel buffers), e.g. `1G`, `512M` or bytes. Over three quarters the node stops
    /// reading new input; over the whole it cuts its largest consumers.
    #[arg(long, default_value = "1G", value_name = "SIZE", value_parser = parse_size)]
    pub(super) max_memory: usize,

    /// Each peer link's kernel socket buffers, each way, e.g. `64K` or bytes; 0 (the
    /// default) for the kernel's own sizing. Small buffers keep requests from waiting
    /// behind bulk multicasts in the kernel, at some cost to the bulk; never on links across
    /// a WAN, which need about their bandwidth times their round trip.
    #[arg(long, default_value = "0", value_name = "SIZE", value_parser = parse_link_buffer)]
    pub(super) link_buffer: usize,

    /// Serve the node's counters (Prometheus text) at http://ADDR/metrics, e.g.
    /// `127.0.0.1:9100`.
    #[arg(long, value_name = "ADDR:PORT")]
    pub(super) metrics: Option<std::net::SocketAddr>,

    /// Milliseconds a node shutting down (SIGTERM, SIGINT) waits for the requests in
    /// progress to be answered before it closes its clients; its members take no new ones
    /// meanwhile. 0 to fail them at once. At most 2000, so that the node still exits within
    /// 3 s of the signal.
    #[arg(long, default_value_t = 1000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(0..=2000))]
    pub(super) shutdown_drain_ms: u64,

    /// Most multicast trees this node takes part in (each cluster or topic with members
    /// anywhere has 5; a node is in the trees of its own clients' groups and in those that
    /// pass through it). Past it, or past a quarter of --max-memory of tree state, trees
    /// are refused, logged at warn and counted in `iris_trees_refused_total`: those
    /// groups' messages do not pass through this node.
    #[arg(long, default_value_t = iris_proto::ScribeConfig::default().max_trees, value_name = "N",
          value_parser = at_least_one)]
    pub(super) max_trees: usize,

    /// Most topics one client connection may subscribe to; its next SUBSCRIBE closes it
    /// with the reason.
    #[arg(long, default_value_t = iris_proto::Config::default().max_subscriptions_per_client,
          value_name = "N", value_parser = at_least_one)]
    pub(super) max_subscriptions: usize,

    /// Milliseconds a new client has to complete its handshake.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub(super) handshake_timeout_ms: u64,
}

/// Runs a node with these flags on runtime `R` until SIGINT or SIGTERM, and says how it
/// ended.
pub(super) fn run<R: Runtime>(args: NodeArgs) -> ExitCode {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&args.log))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .init();

    let seed = driver::random_seed();
    let network = if args.dev {
        let network = format!(
            "dev-{:02x}{:02x}{:02x}{:02x}",
            seed[0], seed[1], seed[2], seed[3]
        );
        tracing::info!("development mode: lone node of network {network:?}, no peers");
        None
    } else {
        match network_options(&args) {
            Ok(net) => Some(net),
            Err(e) => {
                eprintln!("iris: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let mut opts = NodeOptions {
        port: args.port,
        seed,
        network,
        metrics: args.metrics,
        ..NodeOptions::default()
    };
    // Raised whether or not --max-clients is given, so that the count given can be served.
    let by_fd_limit = clients_by_fd_limit(args.max_handshakes);
    let c = &mut opts.config;
    c.limits.max_message_size = args.max_message_size;
    c.max_clients = args.max_clients.unwrap_or(by_fd_limit);
    c.max_handshakes = args.max_handshakes;
    c.max_subscriptions_per_client = args.max_subscriptions;
    c.max_memory = args.max_memory;
    c.handshake_timeout = std::time::Duration::from_millis(args.handshake_timeout_ms);
    c.max_client_backlog = args
        .max_client_backlog
        .unwrap_or((args.max_memory / 4).min(256 << 20));
    c.client_backlog_high = args
        .client_backlog_high
        .unwrap_or((c.max_client_backlog / 2).min(8 << 20));
    c.slow_consumer_timeout = std::time::Duration::from_millis(args.slow_consumer_timeout_ms);
    c.slow_consumer_grace = std::time::Duration::from_millis(args.slow_consumer_grace_ms);
    c.shutdown_drain = std::time::Duration::from_millis(args.shutdown_drain_ms);
    if let Err(e) = opts.config.validate() {
        eprintln!("iris: {e}");
        return ExitCode::from(2);
    }

    tracing::debug!("runtime: {}", R::NAME);
    super::tools::run_tool::<R>(async {
        // Signals are caught from the first instant: a node still joining its network leaves
        // it gracefully too.
        let signals = R::shutdown_signals().map_err(|e| e.to_string())?;
        let run = driver::run::<R>(opts, None, signals).await;
        run.map(drop).map_err(|e| e.to_string())
    })
}

/// The network half of the options: the key checked, the seeds resolved.
fn network_options(args: &NodeArgs) -> Result<NetworkOptions, String> {
    let (Some(net), Some(rsa)) = (&args.net, &args.rsa) else {
        return Err("a network node needs --net NAME and --rsa KEY (or use --dev)".into());
    };
    if net.is_empty() {
        return Err("the network name must not be empty".into());
    }
    let key = crate::key_file::load_network_key(rsa).map_err(|e| e.to_string())?;
    let previous = match &args.rsa_previous {
        None => None,
        Some(path) => {
            let previous = crate::key_file::load_network_key(path)
                .map_err(|e| format!("--rsa-previous: {e}"))?;
            if previous == key {
                return Err("--rsa-previous is the same key as --rsa".into());
            }
            Some(Arc::new(previous))
        }
    };
    match &previous {
        Some(p) => tracing::info!(
            "network key {}; previous key {} accepted too (key rotation)",
            key.id_hex(),
            p.id_hex()
        ),
        None => tracing::info!("network key {}", key.id_hex()),
    }
    let (mut seeds, mut seed_names) = (Vec::new(), Vec::new());
    for s in &args.seeds {
        match crate::seeds::parse_seed(s)? {
            Ok(addr) => seeds.push(addr),
            Err(name) => seed_names.push(name),
        }
    }
    let mut mesh = MeshConfig::new(net, args.peer_bind);
    mesh.seeds = seeds;
    mesh.seeds_to_come = !seed_names.is_empty();
    mesh.scribe.max_trees = args.max_trees;
    mesh.link.previous_key = previous;
    Ok(NetworkOptions {
        bind: args.peer_bind,
        advertise: args.advertise,
        mesh,
        security: Security::Rsa(Arc::new(key)),
        events: None,
        discover: args.discover,
        discovery_ports: args.discovery_ports.clone(),
        seed_names,
        link_buffer: args.link_buffer,
    })
}

/// Raises the open-file limit as far as the OS lets this process, and says how many clients
/// that leaves room for: one descriptor each, after the handshake pool, peer links (the
/// mesh's 1024 by default) and a few for listeners and files.
fn clients_by_fd_limit(handshakes: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("cannot read or raise the open-file limit: {e}");
            return iris_proto::Config::default().max_clients;
        }
    };
    let reserved = handshakes as u64 + 1024 + 64;
    let clients = limit.saturating_sub(reserved).clamp(64, 1 << 20) as usize;
    tracing::info!("open-file limit {limit}: serving up to {clients} clients");
    clients
}

/// A count of at least one.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a count")),
    }
}

/// A size in bytes, with an optional K, M or G suffix (powers of 1024).
/// A `--link-buffer` size: the kernel takes at most 2 GiB (and caps it lower itself).
fn parse_link_buffer(s: &str) -> Result<usize, String> {
    let n = parse_size(s)?;
    if n > 1 << 30 {
        return Err(format!(
            "{s:?} is more than a socket buffer can be (at most 1G)"
        ));
    }
    Ok(n)
}

fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.eq_ignore_ascii_case(&'k') => (&t[..i], 10),
        Some((i, c)) if c.eq_ignore_ascii_case(&'m') => (&t[..i], 20),
        Some((i, c)) if c.eq_ignore_ascii_case(&'g') => (&t[..i], 30),
        _ => (t, 0),
    };
    let n: usize = digits
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 1G, 512M or a number of bytes)"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_suffixes_and_refuse_nonsense() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }
}
