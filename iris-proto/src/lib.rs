//! The Iris node as a pure state machine: no sockets, no clock, no threads, no OS randomness.
//!
//! # The drive loop
//!
//! A driver (the tokio driver, the smol driver, the simulator) owns one [`Node`] and runs:
//!
//! 1. feed every event with [`Node::handle`]`(now, input)`: a client connected, bytes
//!    arrived, bytes were written, a socket closed, the deadline passed, shutdown; for a
//!    node of a network also a peer link opened (accepted, or answering a dial), its bytes,
//!    its close, a dial that failed;
//! 2. after every `handle`, drain [`Node::poll_output`] until `None`, and do what each
//!    [`Output`] says (write bytes, close a socket, dial an address, log an event);
//! 3. sleep until [`Node::poll_timeout`] (a level query: ask again after every `handle`)
//!    or until the next event, whichever comes first; on the deadline feed
//!    [`Input::Timeout`].
//!
//! # Time and randomness
//!
//! Time is an [`Instant`] passed in by the caller, never read here; randomness (request load
//! balancing) comes from the seed given to [`Node::new`]. The same inputs at the same instants
//! give the same outputs, which is what lets the simulator replay any run from its seed.
//!
//! # Errors
//!
//! Remote bytes never make `handle` fail or panic: a client that breaks the protocol is told
//! why (`CLOSE "<reason>"`) and closed, counted in [`Stats`], and nobody else notices.
//! `Result` is reserved for the caller's own mistakes ([`ConfigError`]).
//!
//! # Bounds
//!
//! Every buffer and map is bounded by a [`Config`] field: codec lengths are checked before
//! anything is buffered, a client's unwritten output is capped (slow consumers are dropped),
//! and pending requests, tunnels and subscriptions per client are limited.
//!
//! # Nodes of a network
//!
//! [`Node::networked`] adds the mesh: links to other nodes (authenticated and encrypted
//! with the network key, [`NetworkKey`]) and the Pastry overlay over them, with the
//! multicast trees of each group on top ([`MeshConfig`]). The core never opens a socket: it asks for a dial ([`Output::Dial`]) and is told the outcome. The node
//! reports [`Event::Ready`] (the driver may open the relay port) once the overlay has
//! converged.
//!
//! The relay protocol's client side ([`relay::client`]) lives here too, so the Rust client
//! libraries of every driver share one implementation of the protocol.
#![forbid(unsafe_code)]
// Items reachable only through the `inspect` module are unreachable without that feature;
// a workspace build (the simulator enables it) still checks every one of them.
#![cfg_attr(not(feature = "inspect"), allow(unreachable_pub, dead_code))]

pub mod relay;

mod link;
mod lookup;
mod mesh;
mod node;
mod overlay;
mod queue;
mod scribe;
mod time;
mod timer;

#[cfg(any(fuzzing, test, feature = "fuzzing"))]
pub mod fuzzing;
#[cfg(any(test, feature = "testnet"))]
pub mod testnet;

pub use link::{KeyError, KeyId, LinkConfig, NetworkKey, RekeyLimits, ToSign};
pub use mesh::discovery::DiscoveryConfig;
pub use mesh::{DialId, LinkId, MeshConfig, MeshEvent, MeshStats, PeerStatus, Security};
pub use node::{
    CloseReason, Config, ConfigError, ConnId, Event, Input, Node, NodeStatus, Output, Stats,
};
pub use overlay::{NodeId, OverlayConfig};
pub use scribe::{NEIGHBOUR_BYTES, ScribeConfig, TREE_BYTES};
pub use time::Instant;

/// The machines inside a node, for the simulator's oracle, benchmarks of one machine and
/// tests (feature `inspect`). Not part of the stable surface: their shape follows the
/// node's.
#[cfg(feature = "inspect")]
pub mod inspect {
    pub use crate::link::{
        HANDSHAKE_VERSION, Link, LinkError, LinkEvent, LinkInput, LinkStats, Role, SendError,
    };
    /// The fixed-seed lookup map the determinism guard allows (the simulator uses it too).
    pub use crate::lookup::LookupMap;
    pub use crate::mesh::{Class, Incoming, Mesh, MeshInput, MeshOutput, Refused, Undelivered};
    /// Digits of ids, as the routing table reads them.
    pub use crate::overlay::id::{BASE, DIGIT_BITS, DIGITS};
    pub use crate::overlay::{
        Contact, LeafSet, Overlay, OverlayEvent, OverlayInput, OverlayMsg, OverlayOutput,
        RoutingTable, next_hop,
    };
    pub use crate::scribe::{
        Group, GroupKind, Listed, Pick, Router, Scribe, ScribeInput, ScribeMsg, TreesRefused,
    };
}
