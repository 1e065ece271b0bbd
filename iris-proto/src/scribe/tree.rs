//! One multicast tree as one node sees it: its parent, its children, whether it has local
//! members, and the capacities reported through each neighbour.

use super::group::Group;
use crate::overlay::{Contact, NodeId};
use std::collections::BTreeMap;

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
    pub(crate) group: Group,
    pub(crate) index: u8,
    /// The node subscribed through; `None` at the root (the node closest to the key).
    pub(crate) parent: Option<Contact>,
    /// Capacity reachable through the parent (the rest of the tree), as it last reported.
    pub(crate) parent_capacity: u32,
    /// Capacity last reported to the parent (this subtree).
    pub(crate) parent_told: u32,
    pub(crate) children: BTreeMap<NodeId, Child>,
    /// This node has members (or subscribers) of the group.
    pub(crate) local: bool,
    /// Since when (it is owed the group's messages sent since: see `window`).
    pub(crate) local_since: Option<crate::time::Instant>,

    /// When it last subscribed: a tree whose parents keep failing subscribes again at most
    /// once a beat, not in a loop.
    pub(crate) attached_at: Option<crate::time::Instant>,
    /// The last parent lost: routed around until the tree has settled (`refresh_every`
    /// beats after it attached), then forgotten at a refresh (`follow_routes`).
    pub(crate) avoid: Option<NodeId>,
}

impl Tree {
    pub(crate) fn new(group: Group, index: u8) -> Tree {
        Tree {
            group,
            index,
            parent: None,
            parent_capacity: 0,
            parent_told: 0,
            children: BTreeMap::new(),
            local: false,
            local_since: None,

            attached_at: None,
            avoid: None,
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
