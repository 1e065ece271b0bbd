//! Whom a congested consumer holds back. Within its grace, every producer of its groups
//! (throttling, so that nothing is lost); past it, only a group with no other consumer at
//! its node: the group goes on for the others, and what goes to it queues in its own share
//! until it drains or is cut (see `Sessions::holds_back` and `castflow`).

use super::ConnId;
use super::groups::Groups;
use super::sessions::Sessions;
use crate::scribe::{Group, Scribe};

/// Whether the member `conn` of `group` holds back the group's producers (or, for
/// multicasts from a peer, the group's credit). The group has another consumer here if
/// another local member is not congested, or if its multicasts go on from here to other
/// nodes: this node's own go on wherever it has a tree neighbour (`from_peer` false), a
/// peer's only where it has two (one is where it came from).
pub(super) fn holds_back(
    sessions: &Sessions,
    groups: &Groups,
    scribe: Option<&Scribe>,
    conn: ConnId,
    group: &Group,
    from_peer: bool,
) -> bool {
    sessions.holds_back(conn, || {
        let free = |&o: &ConnId| o != conn && !sessions.is_congested(o);
        let local = groups.of_group(group).is_some_and(|m| m.iter().any(free));
        let min = if from_peer { 2 } else { 1 };
        local || scribe.is_some_and(|s| s.has_neighbours(group, min))
    })
}
