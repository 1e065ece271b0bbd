//! How a node is run: its options, and the seed of its randomness.

use crate::discovery::Discover;
use iris_proto::{Config, MeshConfig, MeshEvent, Security};
use std::net::SocketAddr;

/// How a node joins a network of nodes.
#[derive(Debug, Clone)]
pub struct NetworkOptions {
    /// Where the peer listener binds; port 0 picks a free one. Loopback by default, so a
    /// node reaches beyond its host only when told to.
    pub bind: SocketAddr,
    /// The address peers are told to dial; `None`: the bound address (which must then not
    /// be a wildcard like 0.0.0.0).
    pub advertise: Option<SocketAddr>,
    /// The mesh's settings (network name, seeds, overlay timers); its `listen` is replaced
    /// by the advertised address.
    pub mesh: MeshConfig,
    /// How links authenticate: the network key.
    pub security: Security,
    /// Mesh events (convergence, peers down) are copied here too, for embedding and tests.
    pub events: Option<std::sync::mpsc::Sender<MeshEvent>>,
    /// Where to look for other nodes besides the seeds (the `iris` command's default is
    /// [`Discover::Host`]).
    pub discover: Discover,
    /// The well-known discovery ports ([`crate::discovery::DEFAULT_PORTS`] unless a test
    /// or an operator keeps a group of nodes apart).
    pub discovery_ports: Vec<u16>,
    /// Seeds by host name, resolved again on every retry (see [`crate::seeds`]); set
    /// `mesh.seeds_to_come` with them.
    pub seed_names: Vec<crate::seeds::SeedName>,
    /// Each peer link's kernel buffers, each way ([`crate::runtime::bound_buffers`]);
    /// 0 ([`DEFAULT_LINK_BUFFER`]): the kernel's own sizing. Small buffers keep a request
    /// from waiting behind a bulk flow in the kernel, at some cost to the flow (64 KiB:
    /// request p99 beside a 64 KiB flood 6.7-8.3 ms against 8.0-9.6, the flood 364-386
    /// MB/s against 434-467, `benches/README.md`); a link with a large bandwidth-delay
    /// product (a WAN) must not have them: its window is about twice this.
    pub link_buffer: usize,
}

/// The default of [`NetworkOptions::link_buffer`]: the kernel's own sizing.
pub const DEFAULT_LINK_BUFFER: usize = 0;

/// How to run a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Relay port on 127.0.0.1 and `[::1]`; 0 picks a free one (reported by [`NodeHandle::port`](super::NodeHandle::port)).
    pub port: u16,
    /// Whether to open the relay port at all. An embedded node that serves only clients of
    /// its own process ([`NodeHandle::attach`](super::NodeHandle::attach)) can go without; its port then reads 0.
    pub relay: bool,
    /// The core's bounds and timeouts.
    pub config: Config,
    /// Seed of the node's randomness.
    pub seed: [u8; 32],
    /// `None`: a lone node (dev mode). `Some`: a node of a network.
    pub network: Option<NetworkOptions>,
    /// Serve the node's counters to Prometheus at `http://ADDR/metrics`.
    pub metrics: Option<SocketAddr>,
}

impl Default for NodeOptions {
    fn default() -> NodeOptions {
        NodeOptions {
            port: 55555,
            relay: true,
            config: Config::default(),
            seed: random_seed(),
            network: None,
            metrics: None,
        }
    }
}

/// A seed from the operating system (the driver may read OS randomness; the core may not).
pub fn random_seed() -> [u8; 32] {
    use rand::TryRng;
    let mut seed = [0u8; 32];
    if rand::rngs::SysRng.try_fill_bytes(&mut seed).is_err() {
        // No OS randomness: fall back to the clock, which still differs between runs.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        seed[..16].copy_from_slice(&t.to_le_bytes());
    }
    seed
}
