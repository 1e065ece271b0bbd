//! The next-hop rule of Pastry.

use super::id::NodeId;
use super::leaf_set::LeafSet;
use super::routing_table::RoutingTable;

/// Where a message for `key` goes next from the node owning `leaves` and `table`: `None`
/// means this node is the destination.
///
/// 1. `key` within the leaf set's range: the leaf (or this node) numerically closest;
/// 2. else the routing table entry sharing one more digit with `key`;
/// 3. else any known node that shares at least as long a prefix with `key` and is
///    numerically closer to it than this node (the rare case of a missing table entry);
/// 4. else deliver here.
///
/// Every hop either lengthens the shared prefix or keeps it and gets numerically closer, so
/// routing cannot loop.
pub fn next_hop(
    own: NodeId,
    leaves: &LeafSet,
    table: &RoutingTable,
    key: NodeId,
) -> Option<NodeId> {
    if leaves.covers(key) {
        let best = leaves.closest(key);
        return (best != own).then_some(best);
    }
    if let Some(hop) = table.lookup(key) {
        return Some(hop);
    }
    let prefix = own.shared_prefix(key);
    leaves
        .members()
        .chain(table.entries())
        .filter(|&id| id.shared_prefix(key) >= prefix && key.prefers(id, own))
        .fold(None, |best: Option<NodeId>, id| match best {
            Some(b) if !key.prefers(id, b) => Some(b),
            _ => Some(id),
        })
}
