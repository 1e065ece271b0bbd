//! The leaf set: the nodes numerically nearest to this one, half on each side of the ring.
//! It alone makes routing correct: a key within its range is delivered to the nearest leaf.

use super::id::NodeId;

/// The nearest known nodes on each side of `own`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSet {
    own: NodeId,
    half: usize,
    /// Counter-clockwise neighbours (smaller ids, wrapping), nearest first.
    left: Vec<NodeId>,
    /// Clockwise neighbours (larger ids, wrapping), nearest first.
    right: Vec<NodeId>,
}

impl LeafSet {
    /// An empty leaf set of `size` entries (`size / 2` each side; the default is 16).
    pub fn new(own: NodeId, size: usize) -> LeafSet {
        let half = (size / 2).max(1);
        LeafSet {
            own,
            half,
            left: Vec::with_capacity(half + 1),
            right: Vec::with_capacity(half + 1),
        }
    }

    /// Offers a node; returns true if the leaf set changed.
    pub fn insert(&mut self, id: NodeId) -> bool {
        if id == self.own {
            return false;
        }
        let own = self.own;
        // A node may sit on both sides while the ring holds few nodes.
        let r = insert_sorted(&mut self.right, id, self.half, |x| own.cw(x));
        let l = insert_sorted(&mut self.left, id, self.half, |x| x.cw(own));
        r || l
    }

    /// True if `id` would become a leaf if offered.
    pub fn wants(&self, id: NodeId) -> bool {
        if id == self.own || self.contains(id) {
            return false;
        }
        let own = self.own;
        let fits = |side: &[NodeId], dist: &dyn Fn(NodeId) -> u128| {
            side.len() < self.half || side.last().is_some_and(|&far| dist(id) < dist(far))
        };
        fits(&self.right, &|x| own.cw(x)) || fits(&self.left, &|x| x.cw(own))
    }

    /// Forgets a node; returns true if it was a leaf.
    pub fn remove(&mut self, id: NodeId) -> bool {
        let before = self.left.len() + self.right.len();
        self.left.retain(|&x| x != id);
        self.right.retain(|&x| x != id);
        before != self.left.len() + self.right.len()
    }

    /// True if `id` is a leaf.
    pub fn contains(&self, id: NodeId) -> bool {
        self.left.contains(&id) || self.right.contains(&id)
    }

    /// Every leaf once, left side first.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        let left = self.left.iter().copied();
        left.chain(
            self.right
                .iter()
                .copied()
                .filter(|id| !self.left.contains(id)),
        )
    }

    /// Counter-clockwise leaves, nearest first.
    pub fn left(&self) -> &[NodeId] {
        &self.left
    }

    /// Clockwise leaves, nearest first.
    pub fn right(&self) -> &[NodeId] {
        &self.right
    }

    /// True if a side is not full, which means this node knows every node on the ring
    /// (as far as it can tell) and the leaf set covers every key.
    pub fn is_partial(&self) -> bool {
        self.left.len() < self.half || self.right.len() < self.half
    }

    /// True if `key` falls between the farthest leaves, through this node.
    pub fn covers(&self, key: NodeId) -> bool {
        if self.is_partial() {
            return true;
        }
        let (Some(&far_left), Some(&far_right)) = (self.left.last(), self.right.last()) else {
            return true;
        };
        // When the two sides reach past each other, the leaves are the whole ring.
        if self.own.cw(far_right) >= self.own.cw(far_left) {
            return true;
        }
        far_left.cw(key) <= far_left.cw(far_right)
    }

    /// True if the leaf set is full and `key` lies more than twice as far as the farthest
    /// leaf on either side: not a node just past the edge (one this node has yet to hear of,
    /// or one that learned of a death before this node did), but one from elsewhere on the
    /// ring.
    pub fn far_beyond(&self, key: NodeId) -> bool {
        let (Some(&far_left), Some(&far_right)) = (self.left.last(), self.right.last()) else {
            return false;
        };
        !self.is_partial()
            && self.own.cw(key) / 2 > self.own.cw(far_right)
            && key.cw(self.own) / 2 > far_left.cw(self.own)
    }

    /// This node or the leaf numerically closest to `key`.
    pub fn closest(&self, key: NodeId) -> NodeId {
        self.members().fold(
            self.own,
            |best, id| if key.prefers(id, best) { id } else { best },
        )
    }
}

/// Inserts `id` into `side` (sorted by `dist`, nearest first), keeping at most `cap`.
fn insert_sorted(
    side: &mut Vec<NodeId>,
    id: NodeId,
    cap: usize,
    dist: impl Fn(NodeId) -> u128,
) -> bool {
    if side.contains(&id) {
        return false;
    }
    let d = dist(id);
    let at = side.partition_point(|&x| dist(x) < d);
    if at >= cap {
        return false;
    }
    side.insert(at, id);
    side.truncate(cap);
    true
}
