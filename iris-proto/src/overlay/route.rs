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
    route_where(own, leaves, table, key, |_| true)
}

/// [`next_hop`] as if `avoid` were unknown here. A join is routed toward the joiner's own
/// id, and a node that already knows the joiner must pass the join on to the closest node
/// *other than* the joiner, not stop because the best hop is the joiner itself.
pub(crate) fn next_hop_avoiding(
    own: NodeId,
    leaves: &LeafSet,
    table: &RoutingTable,
    key: NodeId,
    avoid: NodeId,
) -> Option<NodeId> {
    route_where(own, leaves, table, key, |id| id != avoid)
}

/// The rule over the known nodes that `usable` accepts (generic, so that plain routing
/// pays nothing for the filter).
#[inline]
pub(crate) fn route_where(
    own: NodeId,
    leaves: &LeafSet,
    table: &RoutingTable,
    key: NodeId,
    usable: impl Fn(NodeId) -> bool,
) -> Option<NodeId> {
    if leaves.covers(key) {
        let best = leaves
            .members()
            .filter(|&id| usable(id))
            .fold(
                own,
                |best, id| if key.prefers(id, best) { id } else { best },
            );
        return (best != own).then_some(best);
    }
    if let Some(hop) = table.lookup(key).filter(|&id| usable(id)) {
        return Some(hop);
    }
    let prefix = own.shared_prefix(key);
    leaves
        .members()
        .chain(table.entries())
        .filter(|&id| usable(id) && id.shared_prefix(key) >= prefix && key.prefers(id, own))
        .fold(None, |best: Option<NodeId>, id| match best {
            Some(b) if !key.prefers(id, b) => Some(b),
            _ => Some(id),
        })
}
