//! Groups (a cluster or a topic) and the keys of their trees.

use crate::overlay::NodeId;
use crate::relay::Name;
use sha2::{Digest, Sha256};

/// What kind of name a group is: clusters and topics of the same name are different groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupKind {
    /// Service connections registered under a name (broadcast, request, tunnel).
    Cluster = 0,
    /// Connections subscribed to a name (publish).
    Topic = 1,
}

impl GroupKind {
    /// From its wire byte.
    pub fn from_byte(b: u8) -> Option<GroupKind> {
        match b {
            0 => Some(GroupKind::Cluster),
            1 => Some(GroupKind::Topic),
            _ => None,
        }
    }
}

/// A cluster or a topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Group {
    /// Cluster or topic.
    pub kind: GroupKind,
    /// Its name.
    pub name: Name,
}

impl std::fmt::Display for Group {
    /// `cluster NAME` or `topic NAME`, for logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            GroupKind::Cluster => "cluster",
            GroupKind::Topic => "topic",
        };
        write!(f, "{kind} {}", self.name)
    }
}

impl Group {
    /// The cluster `name`.
    pub fn cluster(name: Name) -> Group {
        Group {
            kind: GroupKind::Cluster,
            name,
        }
    }

    /// The topic `name`.
    pub fn topic(name: Name) -> Group {
        Group {
            kind: GroupKind::Topic,
            name,
        }
    }

    /// The same group with its name in an allocation of its own (see [`Name::detached`]),
    /// for state that outlives the message it came in.
    pub fn detached(&self) -> Group {
        Group {
            kind: self.kind,
            name: self.name.detached(),
        }
    }

    /// The key of the group's tree number `index`: where on the ring its root lives. The
    /// trees of one group have unrelated keys, so their roots and their load spread over
    /// the network.
    pub fn tree_key(&self, index: u8) -> NodeId {
        let mut h = Sha256::new();
        h.update(b"iris-tree");
        h.update([self.kind as u8, index]);
        h.update(self.name.as_bytes());
        let digest = h.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        NodeId(u128::from_be_bytes(first))
    }
}

/// The tree keys of groups recently sent to. A group's keys are SHA-256 hashes of its
/// name, which for a small message cost more than all the rest of sending it (a third of
/// the core's instructions per broadcast across a link). Bounded: past [`TreeKeys::CAP`]
/// groups it starts over.
#[derive(Debug, Default)]
pub(crate) struct TreeKeys {
    map: crate::lookup::LookupMap<Group, Box<[NodeId]>>,
}

impl TreeKeys {
    /// Groups remembered at most.
    pub(crate) const CAP: usize = 4096;

    /// The key of `group`'s tree `index` of `splits`.
    pub(crate) fn get(&mut self, group: &Group, splits: u8, index: u8) -> NodeId {
        if let Some(keys) = self.map.get(group)
            && keys.len() == usize::from(splits)
            && let Some(&key) = keys.get(usize::from(index))
        {
            return key;
        }
        if index >= splits {
            return group.tree_key(index);
        }
        if self.map.len() >= Self::CAP {
            self.map.clear();
        }
        let keys: Box<[NodeId]> = (0..splits).map(|i| group.tree_key(i)).collect();
        let key = keys[usize::from(index)];
        self.map.insert(group.detached(), keys);
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_keys_are_the_keys_and_the_memory_stays_bounded() {
        let mut keys = TreeKeys::default();
        for round in 0..2 {
            for n in 0..TreeKeys::CAP + 10 {
                let g = Group::topic(format!("t{n}").as_str().into());
                for i in 0..5 {
                    assert_eq!(keys.get(&g, 5, i), g.tree_key(i), "round {round}");
                }
                assert!(keys.map.len() <= TreeKeys::CAP);
            }
        }
        // Another split count for the same group is not served from the old entry.
        let g = Group::cluster("svc".into());
        assert_eq!(keys.get(&g, 5, 4), g.tree_key(4));
        assert_eq!(keys.get(&g, 3, 2), g.tree_key(2));
    }

    #[test]
    fn trees_of_one_name_and_kinds_have_distinct_keys() {
        let c = Group::cluster("svc".into());
        let t = Group::topic("svc".into());
        let mut keys: Vec<NodeId> = (0..5).map(|i| c.tree_key(i)).collect();
        keys.extend((0..5).map(|i| t.tree_key(i)));
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n);
        // Stable: a key is a function of the group and the index only.
        assert_eq!(c.tree_key(3), Group::cluster("svc".into()).tree_key(3));
    }
}
