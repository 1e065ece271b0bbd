//! Beats between tree neighbours: capacities that changed, and on refresh beats the
//! trees each neighbour is this node's parent in, cut to fit link records.

use super::{Group, Scribe, ScribeMsg};
use crate::overlay::{Contact, NodeId};
use std::collections::BTreeMap;

/// On refresh beats, the trees with keys in `from..=to` in which the receiver is the
/// sender's parent. A node in many trees lists them over several beats, a range of keys
/// each, so that every beat fits one link record (a control message is never cut into
/// parts, and a list of 100,000 trees is 1.6 MB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The first key the list covers.
    pub from: NodeId,
    /// The last key the list covers.
    pub to: NodeId,
    /// The trees in that range in which the receiver is the sender's parent, in order.
    pub keys: Vec<NodeId>,
}

impl Listed {
    /// A list that covers every key.
    pub fn all(keys: Vec<NodeId>) -> Listed {
        Listed {
            from: NodeId(0),
            to: NodeId(u128::MAX),
            keys,
        }
    }

    /// Whether it covers every key.
    pub fn is_all(&self) -> bool {
        self.from == NodeId(0) && self.to == NodeId(u128::MAX)
    }
}

/// Capacities one beat carries at most: with the keys below, a beat fits a 64 KiB record.
const BEAT_CAPS: usize = 1400;
/// Keys one refresh beat lists at most.
const BEAT_KEYS: usize = 1800;

/// The beats that carry `caps` and, on refresh, the sorted `parents` list: one if they
/// fit, else several, the list cut into ranges of keys that together cover every key.
pub(super) fn beat_messages(
    caps: Vec<(NodeId, u32)>,
    parents: Option<Vec<NodeId>>,
) -> Vec<ScribeMsg> {
    let mut lists: Vec<Listed> = Vec::new();
    if let Some(keys) = parents {
        let mut from = NodeId(0);
        let mut chunks = keys.chunks(BEAT_KEYS).peekable();
        while let Some(chunk) = chunks.next() {
            let to = match chunks.peek() {
                Some(_) => *chunk.last().expect("chunks are not empty"),
                None => NodeId(u128::MAX),
            };
            lists.push(Listed {
                from,
                to,
                keys: chunk.to_vec(),
            });
            from = NodeId(to.0.saturating_add(1));
        }
        if lists.is_empty() {
            lists.push(Listed::all(Vec::new()));
        }
    }
    let cap_chunks: Vec<Vec<(NodeId, u32)>> = caps.chunks(BEAT_CAPS).map(<[_]>::to_vec).collect();
    let n = cap_chunks.len().max(lists.len()).max(1);
    let mut cap_chunks = cap_chunks.into_iter();
    let mut lists = lists.into_iter();
    (0..n)
        .map(|_| ScribeMsg::Beat {
            caps: cap_chunks.next().unwrap_or_default(),
            parents: lists.next(),
        })
        .collect()
}

/// A beat being put together for one neighbour: changed capacities, and the trees it is
/// this node's parent in.
type BeatDraft = (Vec<(NodeId, u32)>, Vec<NodeId>);

impl Scribe {
    /// One beat to each neighbour: the capacities that changed for it, and on refresh beats
    /// the trees it is this node's parent in.
    pub(super) fn beat(&mut self, capacity: &dyn Fn(&Group) -> u32) {
        let refresh = self.ticks.is_multiple_of(u64::from(self.cfg.refresh_every))
            || std::mem::take(&mut self.refresh_due);
        let mut beats: BTreeMap<NodeId, BeatDraft> = self
            .neighbours
            .keys()
            .map(|&id| (id, (Vec::new(), Vec::new())))
            .collect();
        for (&key, t) in self.trees.iter_mut() {
            let local = if t.local { capacity(&t.group) } else { 0 };
            t.local_told = local;
            // What lies behind each neighbour is the total less its own share.
            let total = t.total_capacity(local);
            if let Some(p) = t.parent
                && let Some(b) = beats.get_mut(&p.id)
            {
                let cap = total.saturating_sub(t.parent_capacity);
                if cap != t.parent_told {
                    t.parent_told = cap;
                    b.0.push((key, cap));
                }
                b.1.push(key);
            }
            for (id, c) in t.children.iter_mut() {
                let cap = total.saturating_sub(c.capacity);
                if cap != c.told
                    && let Some(b) = beats.get_mut(&id)
                {
                    c.told = cap;
                    b.0.push((key, cap));
                }
            }
        }
        // A parent being left still counts as one until it is told (`release_lingering`).
        for &(_, key, old) in &self.lingering {
            if let Some(b) = beats.get_mut(&old.id) {
                b.1.push(key);
            }
        }
        for (id, (caps, parents)) in beats {
            let Some(n) = self.neighbours.get(&id) else {
                continue;
            };
            let parents = refresh.then(|| {
                let mut keys = parents;
                // Lingering parents come after the trees: sorted, as ranges need.
                keys.sort_unstable();
                keys.dedup();
                keys
            });
            for msg in beat_messages(caps, parents) {
                self.outbox.push_back((n.contact, msg));
            }
        }
    }

    pub(super) fn on_beat(
        &mut self,
        from: Contact,
        caps: Vec<(NodeId, u32)>,
        parents: Option<Listed>,
    ) {
        for (key, cap) in caps {
            let Some(t) = self.trees.get_mut(&key) else {
                continue;
            };
            if t.parent.is_some_and(|p| p.id == from.id) {
                t.parent_capacity = cap;
            } else if let Some(c) = t.children.get_mut(&from.id) {
                c.capacity = cap;
            }
        }
        let Some(listed) = parents else {
            return;
        };
        let mut parents = listed.keys;
        // Sorted, to look trees up in it: a neighbour may list thousands.
        parents.sort_unstable();
        parents.dedup();
        // The sender lists the trees it is our child in, for a range of keys: the ones we
        // lost are told so, and the ones in the range we hold it in that it no longer
        // lists go.
        for &key in &parents {
            let known = self
                .trees
                .get(&key)
                .is_some_and(|t| t.children.contains_key(&from.id));
            if !known {
                self.outbox.push_back((from, ScribeMsg::NotInTree { key }));
            }
        }
        if listed.from > listed.to {
            return;
        }
        let stale: Vec<NodeId> = self
            .trees
            .range(listed.from..=listed.to)
            .filter(|(k, t)| t.children.contains_key(&from.id) && parents.binary_search(k).is_err())
            .map(|(&k, _)| k)
            .collect();
        for key in stale {
            if let Some(t) = self.trees.get_mut(&key) {
                t.children.remove(&from.id);
            }
            self.unref(from.id);
            self.prune(key);
        }
    }
}
