//! The mesh's settings and how its links prove membership.

use crate::link::{LinkConfig, NetworkKey};
use crate::overlay::{NodeId, OverlayConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::discovery::DiscoveryConfig;

/// How links prove membership.
#[derive(Debug, Clone)]
pub enum Security {
    /// The network's RSA key signs every handshake; records are sealed.
    Rsa(Arc<NetworkKey>),
    /// No cryptography (plain links, which only say their network and version): for
    /// simulations only.
    Plain,
}

/// The mesh's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshConfig {
    /// This node's id; `None` draws one from the seed.
    pub id: Option<NodeId>,
    /// The address other nodes dial to reach this one (the driver's peer listener).
    pub listen: SocketAddr,
    /// This start's incarnation: it must grow from one start of an id to the next, so that
    /// peers tell news of this start from news of an earlier one. The core reads no clock:
    /// the tokio driver fills in its boot time in milliseconds when this is 0.
    pub epoch: u64,
    /// Nodes to join through; retried while the node knows nobody.
    pub seeds: Vec<SocketAddr>,
    /// Seeds the driver finds later and offers with [`crate::Input::JoinVia`] (host names
    /// it resolves again on every retry, which may resolve to nothing yet). The node is
    /// then no founder of a network, however few `seeds` it has, and says
    /// [`super::MeshEvent::Alone`] each heartbeat period while it knows nobody.
    pub seeds_to_come: bool,
    /// The overlay's timers and sizes.
    pub overlay: OverlayConfig,
    /// The links' bounds and network name.
    pub link: LinkConfig,
    /// Most links and dials at once. At the bound, a new one takes the place of the least
    /// recently used link that no route and no tunnel needs; if every link is needed, a
    /// connection is refused and a message that would need a dial is dropped (counted).
    /// Links closing (lingering for their peer's close) count only up to as many again.
    pub max_links: usize,
    /// Most inbound links still in their handshake; a new one beyond it closes the oldest.
    /// Anyone can connect to the peer port and say nothing: without this, strangers would
    /// hold every link slot until their handshakes timed out, and genuine nodes would be
    /// refused. A genuine handshake takes milliseconds, so it completes before it is oldest.
    pub max_inbound_handshakes: usize,
    /// Most inbound links from one source address still in their handshake; a new one
    /// beyond it is refused at once (counted in `handshakes_refused_per_addr`). One host's
    /// flood then holds at most this many of the slots above, and the oldest of a genuine
    /// node's are not evicted by it. Nodes sharing an address (one host, one NAT) should
    /// not need more at once: a genuine handshake takes milliseconds.
    pub max_inbound_handshakes_per_addr: usize,
    /// Messages held for a peer while its link comes up; more are dropped.
    pub max_pending: usize,
    /// A link with no message either way for this long is closed; one whose peer the
    /// overlay does not track (neither a leaf nor a table entry) for a third of it.
    pub link_idle: Duration,
    /// A side of a link that closed reads on for at most this long, until the peer closes
    /// its own (what the peer sent before it heard of the close is not lost); a leaving
    /// node goes on passing on what reaches it for at most this long, until every peer
    /// has closed its side. Keep it under the driver's shutdown grace.
    pub close_linger: Duration,
    /// The multicast trees' settings.
    pub scribe: crate::scribe::ScribeConfig,
    /// Beacons to find nodes of the network without seeds; `None`: none sent or heeded.
    pub discovery: Option<DiscoveryConfig>,
}

impl MeshConfig {
    /// Defaults for a node reachable at `listen`, of network `network`.
    pub fn new(network: &str, listen: SocketAddr) -> MeshConfig {
        MeshConfig {
            id: None,
            listen,
            epoch: 0,
            seeds: Vec::new(),
            seeds_to_come: false,
            overlay: OverlayConfig::default(),
            link: LinkConfig {
                network: network.to_string(),
                ..LinkConfig::default()
            },
            max_links: 1024,
            max_inbound_handshakes: 64,
            max_inbound_handshakes_per_addr: 8,
            max_pending: 64,
            link_idle: Duration::from_secs(60),
            close_linger: Duration::from_millis(1500),
            scribe: crate::scribe::ScribeConfig::default(),
            discovery: None,
        }
    }
}

impl MeshConfig {
    /// Checks the settings: a zero period or bound would spin or refuse everything.
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        use crate::ConfigError::Zero;
        let o = &self.overlay;
        for (zero, name) in [
            (self.max_links == 0, "max_links"),
            (self.max_inbound_handshakes == 0, "max_inbound_handshakes"),
            (
                self.max_inbound_handshakes_per_addr == 0,
                "max_inbound_handshakes_per_addr",
            ),
            (self.link_idle.is_zero(), "link_idle"),
            (o.heartbeat_period.is_zero(), "heartbeat_period"),
            (o.heartbeat_misses == 0, "heartbeat_misses"),
            (o.leaf_set_size == 0, "leaf_set_size"),
        ] {
            if zero {
                return Err(Zero(name));
            }
        }
        Ok(())
    }
}
