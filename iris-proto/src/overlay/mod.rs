//! The Pastry overlay: ids, leaf set, routing table and the next-hop rule.
//!
//! This is the state and the routing decision; joining, state exchange, repair, heartbeats
//! and convergence build on it.

pub mod id;
pub mod leaf_set;
pub mod route;
pub mod routing_table;

#[cfg(test)]
mod tests;

pub use id::NodeId;
pub use leaf_set::LeafSet;
pub use route::next_hop;
pub use routing_table::RoutingTable;
