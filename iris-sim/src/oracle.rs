//! The oracle: checks made from outside the nodes, against the true set of live nodes.

use iris_proto::NodeId;
use iris_proto::inspect::Overlay;
use rand::RngExt;
use rand::rngs::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};

/// Something that must never happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A node lists itself in its own leaf set.
    SelfInLeafSet(NodeId),
    /// After quiescence a leaf set differs from the true nearest live nodes.
    WrongLeafSet {
        /// The node.
        node: NodeId,
        /// Leaves it lacks.
        missing: usize,
        /// Leaves it should not have (dead or not nearest).
        extra: usize,
        /// One leaf it lacks, to start an investigation from.
        a_missing: Option<NodeId>,
        /// One leaf it should not have.
        an_extra: Option<NodeId>,
    },
    /// A route went round in a circle.
    RoutingLoop {
        /// The key.
        key: NodeId,
    },
    /// A route ended elsewhere than at the numerically closest live node.
    WrongDestination {
        /// The key.
        key: NodeId,
        /// Where it ended.
        got: NodeId,
        /// Where it should have.
        want: NodeId,
    },
    /// A route was sent to a node that is not alive.
    DeadHop {
        /// The key.
        key: NodeId,
        /// The node that chose the hop.
        at: NodeId,
        /// The dead node it chose.
        dead: NodeId,
    },
    /// Not every node converged within the quiet phase.
    NotConverged,
    /// A message did not survive the wire format.
    Wire(String),
    /// Once quiet, a multicast tree still has more than one root (or none, while nodes
    /// are in it): parts of a group would not hear each other.
    TreeSplit {
        /// The tree.
        key: NodeId,
        /// Nodes in the tree that have no parent.
        roots: usize,
    },
    /// A node takes part in a tree, but the tree's root does not reach it (a stray branch).
    TreeOrphan {
        /// The tree.
        key: NodeId,
        /// The node.
        node: NodeId,
    },
}

/// Cheap checks, after every event.
pub(crate) fn check_cheap<'a>(nodes: impl Iterator<Item = &'a Overlay>, out: &mut Vec<Violation>) {
    for n in nodes {
        if n.leaves().contains(n.id()) {
            out.push(Violation::SelfInLeafSet(n.id()));
        }
    }
}

/// Full checks at quiescence; returns the hop counts of the routes taken.
pub(crate) fn check_final(
    live: &[&Overlay],
    half: usize,
    keys_per_node: usize,
    rng: &mut ChaCha8Rng,
) -> (Vec<u32>, Vec<Violation>) {
    let mut out = Vec::new();
    let ids: BTreeSet<NodeId> = live.iter().map(|n| n.id()).collect();
    let by_id: BTreeMap<NodeId, &Overlay> = live.iter().map(|n| (n.id(), *n)).collect();
    let sorted: Vec<NodeId> = ids.iter().copied().collect();
    for n in live {
        // Judged against the configured size, not the node's own view of it.
        let want = true_leaves(n.id(), &sorted, half);
        let have: BTreeSet<NodeId> = n.leaves().members().collect();
        let missing = want.difference(&have).count();
        let extra = have.difference(&want).count();
        if missing + extra > 0 {
            out.push(Violation::WrongLeafSet {
                node: n.id(),
                missing,
                extra,
                a_missing: want.difference(&have).next().copied(),
                an_extra: have.difference(&want).next().copied(),
            });
        }
    }
    let mut hops = Vec::new();
    for n in live {
        for _ in 0..keys_per_node {
            let key = NodeId(rng.random());
            match route(&by_id, n.id(), key) {
                Ok((dest, h)) => {
                    let want = closest(&sorted, key);
                    if dest != want {
                        out.push(Violation::WrongDestination {
                            key,
                            got: dest,
                            want,
                        });
                    }
                    hops.push(h);
                }
                Err(v) => out.push(v),
            }
        }
    }
    (hops, out)
}

/// The `half` nearest live ids on each side of `own`.
fn true_leaves(own: NodeId, sorted: &[NodeId], half: usize) -> BTreeSet<NodeId> {
    let n = sorted.len();
    let at = sorted.binary_search(&own).unwrap_or(0);
    let take = half.min(n.saturating_sub(1));
    let mut set = BTreeSet::new();
    for i in 1..=take {
        set.insert(sorted[(at + i) % n]);
        set.insert(sorted[(at + n - i) % n]);
    }
    set
}

fn closest(sorted: &[NodeId], key: NodeId) -> NodeId {
    // The closest is a ring neighbour of the key's insertion point.
    let n = sorted.len();
    let at = sorted.partition_point(|&x| x < key);
    let a = sorted[at % n];
    let b = sorted[(at + n - 1) % n];
    if key.prefers(a, b) { a } else { b }
}

fn route(
    by_id: &BTreeMap<NodeId, &Overlay>,
    from: NodeId,
    key: NodeId,
) -> Result<(NodeId, u32), Violation> {
    let mut at = from;
    let mut seen = BTreeSet::new();
    let mut hops = 0;
    loop {
        if !seen.insert(at) {
            return Err(Violation::RoutingLoop { key });
        }
        let node = by_id[&at];
        match node.next_hop(key) {
            None => return Ok((at, hops)),
            Some(next) if !by_id.contains_key(&next) => {
                return Err(Violation::DeadHop {
                    key,
                    at,
                    dead: next,
                });
            }
            Some(next) => {
                at = next;
                hops += 1;
            }
        }
    }
}

/// At quiescence: every tree of the workload's groups has exactly one root, and every node
/// in a tree hangs from it (following parents from any member ends at the root).
pub(crate) fn check_trees(
    nodes: &BTreeMap<NodeId, &iris_proto::inspect::Scribe>,
    keys: impl Iterator<Item = NodeId>,
    out: &mut Vec<Violation>,
) {
    for key in keys {
        let members: Vec<(NodeId, Option<NodeId>)> = nodes
            .iter()
            .filter_map(|(&id, s)| s.relations(key).map(|(parent, _)| (id, parent)))
            .collect();
        if members.is_empty() {
            continue;
        }
        let roots = members.iter().filter(|(_, p)| p.is_none()).count();
        if roots != 1 {
            out.push(Violation::TreeSplit { key, roots });
            continue;
        }
        let parent: BTreeMap<NodeId, Option<NodeId>> = members.iter().copied().collect();
        for &(id, _) in &members {
            let mut at = id;
            let mut steps = 0;
            while let Some(Some(p)) = parent.get(&at) {
                at = *p;
                steps += 1;
                if steps > members.len() {
                    break;
                }
            }
            if parent.get(&at) != Some(&None) {
                out.push(Violation::TreeOrphan { key, node: id });
            }
        }
    }
}
