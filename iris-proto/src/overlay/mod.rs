//! The Pastry overlay: ids, leaf set, routing table and the next-hop rule.
//!
//! [`LeafSet`], [`RoutingTable`] and [`next_hop`] are the state and the routing decision;
//! [`Overlay`] is the state machine around them (join, liveness, repair, leave,
//! convergence), which the simulator drives today and the node will drive over links.

mod graveyard;
pub(crate) mod id;
pub(crate) mod leaf_set;
pub(crate) mod machine;
pub(crate) mod route;
pub(crate) mod routing_table;
pub(crate) mod wire;

mod rtt;
#[cfg(test)]
mod tests;
mod vouch;

pub use id::{Contact, NodeId};
pub use leaf_set::LeafSet;
pub use machine::{Overlay, OverlayConfig, OverlayEvent, OverlayInput, OverlayMsg, OverlayOutput};
pub use route::next_hop;
pub use routing_table::RoutingTable;
