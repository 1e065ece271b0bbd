//! The simulator's look at the multicast trees once the faults are over: every tree of the
//! workload whole (one root, reached from every member), looked at twice so that a
//! subscription on its way is not taken for a defect.

use crate::oracle::{self, Violation};
use crate::{Sim, Workload};
use iris_proto::NodeId;
use std::collections::BTreeMap;
use std::time::Duration;

/// Trees repair within a few beats of the routes they follow, and move onto routes that
/// changed at their next refresh (`refresh_every` beats): after five beats every tree of
/// the workload must be whole (one root, reached from every member), or be so at one of
/// the next two refreshes. A subscription may be on its way at any moment (a tree moving
/// onto a route that changed, a neighbour suspected and routed around): a look at one
/// instant sees a branch hanging from a parent that has not yet heard of it. So each look
/// is two, [`SECOND_LOOK`] apart, far longer than any message takes, and a defect counts
/// only when both see it: a cycle, or a branch hanging from a node outside the tree.
pub(crate) fn tree_phase(sim: &mut Sim, w: &Workload) -> Vec<Violation> {
    let cfg = iris_proto::ScribeConfig::default();
    let groups = (0..w.clusters)
        .map(|c| iris_proto::inspect::Group::cluster(format!("svc-{c}").as_str().into()))
        .chain(
            (0..w.topics)
                .map(|t| iris_proto::inspect::Group::topic(format!("topic-{t}").as_str().into())),
        );
    let keys: Vec<NodeId> = groups
        .flat_map(|g| (0..cfg.splits).map(move |i| g.tree_key(i)))
        .collect();
    let mut wait = cfg.beat * 5;
    let mut found = Vec::new();
    for _ in 0..3 {
        sim.run_until(sim.now + wait.as_nanos() as u64);
        let first = look_at_trees(sim, &keys);
        found.clear();
        if !first.is_empty() {
            sim.run_until(sim.now + SECOND_LOOK.as_nanos() as u64);
            let second = look_at_trees(sim, &keys);
            let seen: Vec<_> = first.iter().map(same_defect).collect();
            found.extend(
                second
                    .into_iter()
                    .filter(|v| seen.contains(&same_defect(v))),
            );
        }
        if found.is_empty() {
            break;
        }
        wait = cfg.beat * cfg.refresh_every;
    }
    found
}

/// How long after a look at the trees that found a defect the second look is taken.
const SECOND_LOOK: Duration = Duration::from_secs(2);

/// What makes two looks' findings the same defect: its kind and tree, and the node for a
/// branch (a split tree whose count of roots changed between the looks is still split).
fn same_defect(
    v: &Violation,
) -> (
    std::mem::Discriminant<Violation>,
    Option<NodeId>,
    Option<NodeId>,
) {
    let (key, node) = match v {
        Violation::TreeSplit { key, .. } => (Some(*key), None),
        Violation::TreeOrphan { key, node } => (Some(*key), Some(*node)),
        _ => (None, None),
    };
    (std::mem::discriminant(v), key, node)
}

/// The defects of the workload's trees at this instant.
fn look_at_trees(sim: &Sim, keys: &[NodeId]) -> Vec<Violation> {
    let scribes: BTreeMap<NodeId, &iris_proto::inspect::Scribe> = sim
        .by_id
        .iter()
        .filter_map(|(&id, &s)| Some((id, sim.slots[s].as_ref()?.node.scribe()?)))
        .collect();
    let mut found = Vec::new();
    oracle::check_trees(&scribes, keys.iter().copied(), &mut found);
    found
}
