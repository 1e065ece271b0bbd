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
                    |t| (*t.group).clone(),
                );
                (group, n)
            })
            .collect()
    }

    /// A tree neighbour's heads (see [`ScribeMsg::Heads`]): what this node lacks of them
    /// it asks for, if it has members; and what went further than this node had it passes
    /// on to its other tree neighbours. Heads go both ways along an edge when a node
    /// subscribes: when trees that grew apart in a partition merge (one root subscribes
    /// into the other tree), each side learns what was sent on the other, beyond the two
    /// nodes of the new edge, where a tail may never come again (found in the simulator:
    /// messages lost for good, silently, when only the subscriber learned).
    /// Each node passes a given head on once (`heads_passed`), so even a cycle that forms
    /// for a moment while trees merge carries it around only once.
    pub(super) fn on_heads(
        &mut self,
        now: Instant,
        from: Contact,
        key: NodeId,
        heads: Vec<(NodeId, u64, u64, u64)>,
    ) {
        // From the parent being left too: it may be the only one to know of an origin
        // this node's side of a tree that was split never heard from (found by swarm
        // testing: such heads were dropped, and what that origin sent during the split
        // was never asked for).
        if !self.passes_here(key, from.id) {
            return;
        }
        let owed = self.local_for(now, key);
        let ahead = self.windows.learn_heads(now, key, &heads, owed);
        let max = self.cfg.max_windows;
        let mut onward = Vec::new();
        for head @ (origin, epoch, seq, _) in ahead {
            let passed = self.heads_passed.get(&(key, origin));
            if passed.is_some_and(|&p| p >= (epoch, seq)) {
                continue;
            }
            if passed.is_none() && self.heads_passed.len() >= max {
                self.heads_passed.pop_first();
            }
            self.heads_passed.insert((key, origin), (epoch, seq));
            onward.push(head);
        }
        if onward.is_empty() {
            return;
        }
        for to in self.flood_targets(key, Some(from.id)) {
            let heads = onward.clone();
            self.outbox.push_back((to, ScribeMsg::Heads { key, heads }));
        }
    }

    /// Tells a tree neighbour of a new edge (a child that just subscribed, or the parent
    /// this node just subscribed to) what this node took lately on the tree.
    pub(super) fn send_heads(&mut self, now: Instant, to: Contact, key: NodeId) {
        let heads = self.windows.heads(now, key);
        if !heads.is_empty() {
            self.outbox.push_back((to, ScribeMsg::Heads { key, heads }));
        }
    }
}
