//! The Pastry overlay: ids, leaf set, routing table and the next-hop rule.
//!
//! [`LeafSet`], [`RoutingTable`] and [`next_hop`] are the state and the routing decision;
//! [`Overlay`] is the state machine around them (join, liveness, repair, leave,
//! convergence), which the simulator drives today and the node will drive over links.

pub mod id;
pub mod leaf_set;
pub mod machine;
pub mod route;
pub mod routing_table;
pub mod wire;

#[cfg(test)]
mod tests;

pub use id::{Contact, NodeId};
pub use leaf_set::LeafSet;
pub use machine::{Overlay, OverlayConfig, OverlayEvent, OverlayInput, OverlayMsg, OverlayOutput};
pub use route::next_hop;
pub use routing_table::RoutingTable;
