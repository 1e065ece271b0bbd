//! The trees' side of multicast repair (see the `window` module): whether a message is new
//! here, what this node asks origins for, and the heads a parent tells a child that
//! subscribes. The node's side (asking, answering, resending) is `node::trees::repair`.

use super::window::{Ask, Verdict};
use super::{Group, Scribe, ScribeMsg};
use crate::overlay::{Contact, NodeId};
use crate::time::Instant;
use std::time::Duration;

impl Scribe {
    /// Whether message `seq` of `origin` on the tree of `key` is new here (and remembers it);
    /// `prev_ms` is how long before it the origin sent its previous message on the tree
    /// (see [`crate::node`]'s wire: 0 for none, else milliseconds plus one). Numbers it
    /// skips are asked for again if this node has members of the group and `repair` (not
    /// for its own messages: it sent them).
    pub(crate) fn check(
        &mut self,
        now: Instant,
        origin: NodeId,
        epoch: u64,
        key: NodeId,
        (seq, prev_ms): (u64, u64),
        repair: bool,
    ) -> Verdict {
        let owed = self.local_for(now, key).filter(|_| repair);
        let v = self
            .windows
            .check(now, origin, epoch, key, (seq, prev_ms), owed);
        if v == Verdict::Old {
            self.stats.duplicates += 1;
        }
        v
    }

    /// When an origin is next to be asked for messages missing here.
    pub(crate) fn next_ask(&self) -> Option<Instant> {
        self.windows.next_ask()
    }

    /// The origins to ask now for messages missing here (see the `window` module), each
    /// with how long this node has had members of the group: nothing older is owed here.
    pub(crate) fn asks(&mut self, now: Instant) -> Vec<Ask> {
        let mut asks = self.windows.asks(now);
        for a in &mut asks {
            let owed = self.local_for(now, a.key).unwrap_or_default();
            a.within_ms = owed.as_millis().try_into().unwrap_or(u64::MAX);
        }
        asks
    }

    /// How long this node has had members of the tree's group (`None`: it has none).
    pub(super) fn local_for(&self, now: Instant, key: NodeId) -> Option<Duration> {
        let since = self.trees.get(&key)?.local_since?;
        Some(now.saturating_duration_since(since))
    }

    /// An origin no longer has `gone` of tree `key`, and `skipped` were sent before this
    /// node had members: returns how many of `gone` were still missing here (lost).
    pub(crate) fn gone(
        &mut self,
        origin: NodeId,
        epoch: u64,
        key: NodeId,
        gone: &[(u64, u64)],
        skipped: &[(u64, u64)],
    ) -> u64 {
        self.windows.gone(origin, epoch, key, skipped);
        self.windows.gone(origin, epoch, key, gone)
    }

    /// Messages given up on (their origins never answered) since the last call, with
    /// their groups.
    pub(crate) fn take_given_up(&mut self) -> Vec<(Group, u64)> {
        self.windows
            .take_given_up()
            .into_iter()
            .map(|(key, n)| {
                let group = self.trees.get(&key).map_or_else(
                    || Group::topic(crate::relay::Name::from("(a tree since left)")),
                    |t| t.group.clone(),
                );
                (group, n)
            })
            .collect()
    }

    /// The parent's heads (see [`ScribeMsg::Heads`]): what this node lacks of them it asks
    /// for, if it has members. (They go no further: a child asks only for itself, and its
    /// own children learn of a gap from the messages, tails and heads of their own.)
    pub(super) fn on_heads(
        &mut self,
        now: Instant,
        from: Contact,
        key: NodeId,
        heads: Vec<(NodeId, u64, u64, u64)>,
    ) {
        let from_parent = self
            .trees
            .get(&key)
            .and_then(|t| t.parent)
            .is_some_and(|p| p.id == from.id);
        if from_parent {
            let owed = self.local_for(now, key);
            self.windows.learn_heads(now, key, &heads, owed);
        }
    }

    /// Tells a child that just subscribed what this node took lately on the tree.
    pub(super) fn send_heads(&mut self, now: Instant, to: Contact, key: NodeId) {
        let heads = self.windows.heads(now, key);
        if !heads.is_empty() {
            self.outbox.push_back((to, ScribeMsg::Heads { key, heads }));
        }
    }
}
