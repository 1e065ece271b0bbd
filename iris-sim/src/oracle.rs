//! The oracle: checks made from outside the nodes, against the true set of live nodes.

use iris_proto::NodeId;
use iris_proto::inspect::Overlay;
use iris_proto::inspect::{DIGIT_BITS, DIGITS};
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
    /// The overlay was not right (leaf sets, table entries) within the liveness bound after
    /// the last fault (see `liveness_bound`).
    NotConverged {
        /// The bound, in virtual seconds.
        bound_secs: u64,
    },
    /// Once quiet, a routing table holds a node that is not alive.
    DeadTableEntry {
        /// The node whose table it is.
        node: NodeId,
        /// The dead entry.
        entry: NodeId,
    },
    /// A routing table holds a node in a slot its id does not fit (row `r` holds ids that
    /// share exactly `r` digits with the node, column `c` those whose next digit is `c`).
    MisplacedTableEntry {
        /// The node whose table it is.
        node: NodeId,
        /// The entry.
        entry: NodeId,
        /// Its row.
        row: usize,
        /// Its column.
        column: usize,
    },
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
) -> (Vec<u32>, Vec<Violation>, TableFill) {
    let by_id: BTreeMap<NodeId, &Overlay> = live.iter().map(|n| (n.id(), *n)).collect();
    let sorted: Vec<NodeId> = by_id.keys().copied().collect();
    let mut out = wrong_leaf_sets(live, half);
    let fill = check_tables(live, &sorted, &mut out);
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
    (hops, out, fill)
}

/// The nodes whose leaf sets are not the `half` nearest live nodes on each side (judged
/// against the configured size, not the node's own view of it).
/// Whether the overlay is right: every leaf set the true nearest live nodes, and every
/// routing-table entry a live node in its slot. The liveness check waits for this.
pub(crate) fn overlay_right(live: &[&Overlay], half: usize) -> bool {
    if !wrong_leaf_sets(live, half).is_empty() {
        return false;
    }
    let mut sorted: Vec<NodeId> = live.iter().map(|n| n.id()).collect();
    sorted.sort_unstable();
    let mut wrong = Vec::new();
    check_tables(live, &sorted, &mut wrong);
    wrong.is_empty()
}

pub(crate) fn wrong_leaf_sets(live: &[&Overlay], half: usize) -> Vec<Violation> {
    let mut sorted: Vec<NodeId> = live.iter().map(|n| n.id()).collect();
    sorted.sort_unstable();
    let mut out = Vec::new();
    for n in live {
        let want = true_leaves(n.id(), &sorted, half);
        let have: BTreeSet<NodeId> = n.leaves().members().collect();
        if want == have {
            continue;
        }
        out.push(Violation::WrongLeafSet {
            node: n.id(),
            missing: want.difference(&have).count(),
            extra: have.difference(&want).count(),
            a_missing: want.difference(&have).next().copied(),
            an_extra: have.difference(&want).next().copied(),
        });
    }
    out
}

/// Every routing-table entry is a live node (`sorted`: the live ids) in the slot its id
/// fits. Returns how many slots are filled and how many a live node could fill: a table
/// with holes routes correctly (through the leaf set), only in more hops.
pub(crate) fn check_tables(
    live: &[&Overlay],
    sorted: &[NodeId],
    out: &mut Vec<Violation>,
) -> TableFill {
    let mut fill = TableFill::default();
    for n in live {
        check_table(n.id(), |row| n.table().row(row), sorted, out, &mut fill);
    }
    fill
}

/// [`check_tables`] for one node, whose table row `r` is `row(r)`.
fn check_table<'a>(
    own: NodeId,
    row: impl Fn(usize) -> &'a [Option<NodeId>],
    sorted: &[NodeId],
    out: &mut Vec<Violation>,
    fill: &mut TableFill,
) {
    for r in 0..DIGITS {
        for (column, entry) in row(r).iter().enumerate() {
            if let Some(&entry) = entry.as_ref() {
                fill.filled += 1;
                if sorted.binary_search(&entry).is_err() {
                    out.push(Violation::DeadTableEntry { node: own, entry });
                }
                if own.shared_prefix(entry) != r || entry.digit(r) != column {
                    out.push(Violation::MisplacedTableEntry {
                        node: own,
                        entry,
                        row: r,
                        column,
                    });
                }
            }
            if own.digit(r) != column && any_with_prefix(sorted, own, r, column) {
                fill.fillable += 1;
            }
        }
        if !others_with_prefix(sorted, own, r) {
            return; // no live node shares one more digit: the rows below are empty
        }
    }
}

/// How full the routing tables are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TableFill {
    /// Entries held.
    pub(crate) filled: u64,
    /// Slots some live node fits.
    pub(crate) fillable: u64,
}

/// Whether a live id shares `row` digits with `own` and has `column` next.
fn any_with_prefix(sorted: &[NodeId], own: NodeId, row: usize, column: usize) -> bool {
    // Ids with that prefix are one range: the prefix followed by any bits.
    let rest = 128 - DIGIT_BITS * (row as u32 + 1);
    let shared = own.0.checked_shr(rest + DIGIT_BITS).unwrap_or(0);
    let low = shared.checked_shl(rest + DIGIT_BITS).unwrap_or(0) | ((column as u128) << rest);
    let high = low | ((1u128 << rest) - 1);
    let at = sorted.partition_point(|x| x.0 < low);
    sorted.get(at).is_some_and(|x| x.0 <= high)
}

/// Whether a live id other than `own` shares `row + 1` digits with it.
fn others_with_prefix(sorted: &[NodeId], own: NodeId, row: usize) -> bool {
    let rest = 128 - DIGIT_BITS * (row as u32 + 1);
    let low = own
        .0
        .checked_shr(rest)
        .unwrap_or(0)
        .checked_shl(rest)
        .unwrap_or(0);
    let high = low | 1u128.checked_shl(rest).map_or(u128::MAX, |b| b - 1);
    let at = sorted.partition_point(|x| x.0 < low);
    sorted[at..]
        .iter()
        .take_while(|x| x.0 <= high)
        .any(|&x| x != own)
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

#[cfg(test)]
mod tests {
    use super::*;
    use iris_proto::inspect::BASE;

    fn id(hex_prefix: u128, digits: u32) -> NodeId {
        NodeId(hex_prefix << (128 - 4 * digits))
    }

    #[test]
    fn a_dead_or_misplaced_table_entry_is_caught_and_fill_counts_live_slots() {
        let own = id(0x10, 2);
        let (a, b, dead) = (id(0x2, 1), id(0x11, 2), id(0x3, 1));
        let mut sorted = vec![own, a, b];
        sorted.sort_unstable();
        let mut rows = vec![[None; BASE]; DIGITS];
        rows[0][2] = Some(a); // right
        rows[0][3] = Some(dead); // right slot, but the node is gone
        rows[0][5] = Some(b); // b shares one digit: it belongs in row 1, column 1
        let (mut out, mut fill) = (Vec::new(), TableFill::default());
        check_table(own, |r| &rows[r][..], &sorted, &mut out, &mut fill);
        assert_eq!(
            out,
            vec![
                Violation::DeadTableEntry {
                    node: own,
                    entry: dead
                },
                Violation::MisplacedTableEntry {
                    node: own,
                    entry: b,
                    row: 0,
                    column: 5
                },
            ]
        );
        // Live nodes fit row 0 column 2 (a) and row 1 column 1 (b); nothing shares two
        // digits with own, so the rows past 1 are not looked at.
        assert_eq!(
            fill,
            TableFill {
                filled: 3,
                fillable: 2
            }
        );
        // The table put right is clean.
        rows[0][3] = None;
        rows[0][5] = None;
        rows[1][1] = Some(b);
        let (mut out, mut fill) = (Vec::new(), TableFill::default());
        check_table(own, |r| &rows[r][..], &sorted, &mut out, &mut fill);
        assert_eq!(out, vec![]);
        assert_eq!((fill.filled, fill.fillable), (2, 2));
    }

    #[test]
    fn true_leaves_wrap_around_the_ring() {
        let sorted: Vec<NodeId> = (1..=6u128).map(|i| NodeId(i << 100)).collect();
        let want: BTreeSet<NodeId> = [sorted[4], sorted[5], sorted[1], sorted[2]].into();
        assert_eq!(true_leaves(sorted[0], &sorted, 2), want);
    }
}
