//! The routing table: row `r` holds nodes sharing exactly `r` leading digits with this one,
//! one per value of their next digit. It makes routing fast (one more shared digit per hop).

use super::id::{BASE, DIGITS, NodeId};

/// Pastry's routing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingTable {
    own: NodeId,
    rows: Vec<[Option<NodeId>; BASE]>,
}

impl RoutingTable {
    /// An empty table.
    pub fn new(own: NodeId) -> RoutingTable {
        RoutingTable {
            own,
            rows: vec![[None; BASE]; DIGITS],
        }
    }

    /// Offers a node; it takes its slot if the slot is empty. Returns true if it did.
    pub fn insert(&mut self, id: NodeId) -> bool {
        if id == self.own {
            return false;
        }
        let row = self.own.shared_prefix(id);
        let slot = &mut self.rows[row][id.digit(row)];
        if slot.is_some() {
            return false;
        }
        *slot = Some(id);
        true
    }

    /// True if `id` would take an empty slot if offered.
    pub fn wants(&self, id: NodeId) -> bool {
        if id == self.own {
            return false;
        }
        let row = self.own.shared_prefix(id);
        self.rows[row][id.digit(row)].is_none()
    }

    /// Forgets a node; returns true if it was in the table.
    pub fn remove(&mut self, id: NodeId) -> bool {
        if id == self.own {
            return false;
        }
        let row = self.own.shared_prefix(id);
        let slot = &mut self.rows[row][id.digit(row)];
        if *slot == Some(id) {
            *slot = None;
            return true;
        }
        false
    }

    /// The entry for `key`: a node sharing one more digit with it than this node does.
    pub fn lookup(&self, key: NodeId) -> Option<NodeId> {
        let row = self.own.shared_prefix(key);
        if row >= DIGITS {
            return None;
        }
        self.rows[row][key.digit(row)]
    }

    /// Row `r`, as shared with a joining node whose path passes here.
    pub fn row(&self, r: usize) -> &[Option<NodeId>; BASE] {
        &self.rows[r]
    }

    /// Every entry.
    pub fn entries(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.rows.iter().flatten().flatten().copied()
    }
}
