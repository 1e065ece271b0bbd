//! The routing table: row `r` holds nodes sharing exactly `r` leading digits with this one,
//! one per value of their next digit. It makes routing fast (one more shared digit per hop).
//!
//! Any node of a slot's prefix routes as well as another, so which one a slot keeps is free
//! to choose, and the choice decides where the load falls: if every node kept the first it
//! heard of, every node would keep the same few (joiners copy their rows from the nodes on
//! their join path, and those rows fill with the network's oldest nodes), and those few
//! would carry a link and a ping from every node of the network. So a slot prefers, among
//! the nodes it hears of, the one closest to this node by XOR distance: it shares the slot's
//! prefix like any other, and past it the one nearest this node's own id, which is another
//! node for every node. The table's load spreads evenly however the network grew.

use super::id::{BASE, DIGITS, NodeId};

/// Pastry's routing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingTable {
    own: NodeId,
    /// Only the rows up to the last that holds a node: of the 32 a 128-bit id allows, a
    /// network of N nodes fills about log16(N) (4 at 10,000 nodes: half a kilobyte each,
    /// where all 32 would be 16 KiB a node).
    rows: Vec<[Option<NodeId>; BASE]>,
}

/// A row no node has reached.
const EMPTY_ROW: [Option<NodeId>; BASE] = [None; BASE];

impl RoutingTable {
    /// An empty table.
    pub fn new(own: NodeId) -> RoutingTable {
        RoutingTable {
            own,
            rows: Vec::new(),
        }
    }

    /// Offers a node: it takes its slot if the slot is empty or holds a node it is
    /// preferred to (see the module docs).
    pub fn offer(&mut self, id: NodeId) -> Offer {
        if id == self.own {
            return Offer::Refused;
        }
        let row = self.own.shared_prefix(id);
        let own = self.own;
        if row >= self.rows.len() {
            self.rows.resize(row + 1, EMPTY_ROW);
        }
        let slot = &mut self.rows[row][id.digit(row)];
        match *slot {
            None => {
                *slot = Some(id);
                Offer::Taken
            }
            Some(old) if closer(own, id, old) => {
                *slot = Some(id);
                Offer::Replaced(old)
            }
            Some(_) => Offer::Refused,
        }
    }

    /// [`RoutingTable::offer`], telling only whether it took the node.
    pub fn insert(&mut self, id: NodeId) -> bool {
        !matches!(self.offer(id), Offer::Refused)
    }

    /// True if `id` would take its slot if offered.
    pub fn wants(&self, id: NodeId) -> bool {
        if id == self.own {
            return false;
        }
        let row = self.own.shared_prefix(id);
        self.row(row)[id.digit(row)].is_none_or(|old| closer(self.own, id, old))
    }

    /// Forgets a node; returns true if it was in the table.
    pub fn remove(&mut self, id: NodeId) -> bool {
        if id == self.own {
            return false;
        }
        let row = self.own.shared_prefix(id);
        let Some(slot) = self.rows.get_mut(row).map(|r| &mut r[id.digit(row)]) else {
            return false;
        };
        if *slot != Some(id) {
            return false;
        }
        *slot = None;
        while self
            .rows
            .last()
            .is_some_and(|r| r.iter().all(Option::is_none))
        {
            self.rows.pop();
        }
        true
    }

    /// The entry for `key`: a node sharing one more digit with it than this node does.
    pub fn lookup(&self, key: NodeId) -> Option<NodeId> {
        let row = self.own.shared_prefix(key);
        if row >= DIGITS {
            return None;
        }
        self.row(row)[key.digit(row)]
    }

    /// Row `r`, as shared with a joining node whose path passes here.
    pub fn row(&self, r: usize) -> &[Option<NodeId>; BASE] {
        self.rows.get(r).unwrap_or(&EMPTY_ROW)
    }

    /// Every entry.
    pub fn entries(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.rows.iter().flatten().flatten().copied()
    }
}

/// What offering a node to the table did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Its slot keeps the node it holds.
    Refused,
    /// It took an empty slot.
    Taken,
    /// It took the slot of this node, which the table no longer holds.
    Replaced(NodeId),
}

/// Whether `a` is nearer than `b` to `own` by XOR distance.
fn closer(own: NodeId, a: NodeId, b: NodeId) -> bool {
    (a.0 ^ own.0) < (b.0 ^ own.0)
}
