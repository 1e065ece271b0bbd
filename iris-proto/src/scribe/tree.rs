//! One multicast tree as one node sees it: its parent, its children, whether it has local
//! members, and the capacities reported through each neighbour.

use super::group::Group;
use crate::overlay::{Contact, NodeId};
use std::sync::Arc;

/// A child in a tree: the node that subscribed through this one.
#[derive(Debug, Clone)]
pub(crate) struct Child {
    pub(crate) contact: Contact,
    /// Capacity reachable through it (its subtree), as it last reported.
    pub(crate) capacity: u32,
    /// Capacity last reported to it (the rest of the tree, through this node).
    pub(crate) told: u32,
}

/// This node's part of one tree.
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    /// Shared by the group's trees on this node: a node in 100,000 groups is in 500,000
    /// trees, and the name is the same for each five.
    pub(crate) group: Arc<Group>,
    pub(crate) index: u8,
    /// The node subscribed through; `None` at the root (the node closest to the key).
    pub(crate) parent: Option<Contact>,
    /// Capacity reachable through the parent (the rest of the tree), as it last reported.
    pub(crate) parent_capacity: u32,
    /// Capacity last reported to the parent (this subtree).
    pub(crate) parent_told: u32,
    /// This node's own capacity as of the last beat: what its neighbours' reports of it
    /// were built from (see [`Scribe::anycast`](super::Scribe::anycast)).
    pub(crate) local_told: u32,
    pub(crate) children: Children,
    /// This node has members (or subscribers) of the group.
    pub(crate) local: bool,
    /// Since when (it is owed the group's messages sent since: see `window`).
    pub(crate) local_since: Option<crate::time::Instant>,

    /// When it last subscribed: a tree whose parents keep failing subscribes again at most
    /// once a beat, not in a loop.
    pub(crate) attached_at: Option<crate::time::Instant>,
}

impl Tree {
    pub(crate) fn new(group: Arc<Group>, index: u8) -> Tree {
        Tree {
            group,
            index,
            parent: None,
            parent_capacity: 0,
            parent_told: 0,
            local_told: 0,
            children: Children::default(),
            local: false,
            local_since: None,

            attached_at: None,
        }
    }

    /// Nothing to carry any more: no members here and nobody below.
    pub(crate) fn is_empty(&self) -> bool {
        !self.local && self.children.is_empty()
    }

    /// Whether `node` is this tree's parent or a child here.
    pub(crate) fn is_neighbour(&self, node: NodeId) -> bool {
        self.parent.is_some_and(|p| p.id == node) || self.children.contains_key(&node)
    }

    /// Capacity reachable from this node: `local` here, plus what each neighbour reported.
    pub(crate) fn total_capacity(&self, local: u32) -> u32 {
        let parent = if self.parent.is_some() {
            self.parent_capacity
        } else {
            0
        };
        self.children
            .values()
            .map(|c| c.capacity)
            .fold(local.saturating_add(parent), u32::saturating_add)
    }
}

/// The children of one tree, in the order of their ids: a sorted vector, not a map. Most
/// trees have a handful of children or none, and a node may be in hundreds of thousands
/// of trees: a B-tree map allocates a node for eleven entries whatever the count (about
/// 1 KiB for one child), this holds what it holds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Children(Vec<Child>);

impl Children {
    fn find(&self, id: &NodeId) -> Result<usize, usize> {
        self.0.binary_search_by(|c| c.contact.id.cmp(id))
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn contains_key(&self, id: &NodeId) -> bool {
        self.find(id).is_ok()
    }

    pub(crate) fn get(&self, id: &NodeId) -> Option<&Child> {
        self.find(id).ok().map(|i| &self.0[i])
    }

    pub(crate) fn get_mut(&mut self, id: &NodeId) -> Option<&mut Child> {
        self.find(id).ok().map(|i| &mut self.0[i])
    }

    /// Adds or replaces a child (its contact's id is its key).
    pub(crate) fn insert(&mut self, child: Child) {
        match self.find(&child.contact.id) {
            Ok(i) => self.0[i] = child,
            Err(i) => self.0.insert(i, child),
        }
    }

    /// Removes the child `id`; the room it took goes back once the vector is mostly empty.
    pub(crate) fn remove(&mut self, id: &NodeId) -> Option<Child> {
        let i = self.find(id).ok()?;
        let child = self.0.remove(i);
        if self.0.len() <= self.0.capacity() / 4 {
            self.0.shrink_to_fit();
        }
        Some(child)
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &NodeId> {
        self.0.iter().map(|c| &c.contact.id)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Child> {
        self.0.iter()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&NodeId, &Child)> {
        self.0.iter().map(|c| (&c.contact.id, c))
    }

    /// Each child with its id (a copy: the id is the key and must not change).
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (NodeId, &mut Child)> {
        self.0.iter_mut().map(|c| (c.contact.id, c))
    }
}
