//! Whom a congested consumer holds back. Within its grace, every producer of its groups
//! (throttling, so that nothing is lost); past it, only a group with no other consumer at
//! its node: the group goes on for the others, and what goes to it queues in its own share
//! until it drains or is cut (see `Sessions::holds_back` and `castflow`).

use super::ConnId;
use super::groups::Groups;
use super::sessions::Sessions;
use crate::overlay::NodeId;
use crate::scribe::{Group, Scribe};

/// Whether the member `conn` of `group` holds back the group's producers (or, for
/// multicasts from peer `from`, the group's credit owed to it). The group has another
/// consumer here if another local member is not congested, or if this node has a child on
/// one of the group's trees other than `from`: a subtree holds members, or it is pruned.
/// (The way up is no such proof: it may lead only to a root without members, and a
/// group's only consumer must go on throttling its producers.)
pub(super) fn holds_back(
    sessions: &Sessions,
    groups: &Groups,
    scribe: Option<&Scribe>,
    conn: ConnId,
    group: &Group,
    from: Option<NodeId>,
) -> bool {
    sessions.holds_back(conn, || {
        let free = |&o: &ConnId| o != conn && !sessions.is_congested(o);
        let local = groups.of_group(group).is_some_and(|m| m.iter().any(free));
        local || scribe.is_some_and(|s| s.has_child_besides(group, from))
    })
}
