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
//! [`Node::networked`] adds the [`mesh`]: links to other nodes ([`link`]: authenticated and
//! encrypted with the network key) and the Pastry [`overlay`] over them. The core never
//! opens a socket: it asks for a dial ([`Output::Dial`]) and is told the outcome. The node
//! reports [`Event::Ready`] (the driver may open the relay port) once the overlay has
//! converged.
//!
//! The relay protocol's client side ([`relay::client`]) lives here too, so the Rust client
//! libraries of every driver share one implementation of the protocol.
#![forbid(unsafe_code)]

pub mod fuzzing;
pub mod link;
pub mod mesh;
pub mod node;
pub mod overlay;
pub mod relay;
pub mod scribe;
pub mod time;
pub mod timer;

#[cfg(any(test, feature = "testnet"))]
pub mod testnet;

pub use mesh::{DialId, LinkId, MeshConfig, MeshEvent, Security};
pub use node::{CloseReason, Config, ConfigError, ConnId, Event, Input, Node, Output, Stats};
pub use time::Instant;
