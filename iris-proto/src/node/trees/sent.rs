//! The multicasts this node's clients sent, numbered per tree and kept a while, so that a
//! tree node that missed some (a stalled or crashed node on the way, a partition) can ask
//! for them again (see `scribe::window`), and tails that tell tree nodes how far the
//! numbers went once a burst ends.
//!
//! **Numbers.** Each tree this node sends on has a counter of its own that grows by one
//! per message, so that a tree node can tell what it missed. A tree's first counter starts
//! at the node's count of everything it sent, so a tree forgotten here and used again
//! starts above every number it had: tree nodes that still remember it see a gap and ask,
//! and are told the numbers are gone (counted there as lost: a tree is forgotten here only
//! after [`FORGET_AFTER`] unused, longer than tree nodes remember an origin, or past
//! [`MAX_TREES`] at once).
//!
//! **Kept.** The last [`KEEP_FOR`] of messages, at most [`KEEP_BYTES`] of payload and
//! [`KEEP_MAX`] messages, the oldest going first. A message older than that can no longer
//! be sent again: a tree node that asks for it is told it is gone. Small payloads are
//! copied, so that what is kept never pins the larger buffer they were read into.
//!
//! **Tails.** A message that ends a burst on a tree is followed by a tail (a numbered
//! message nobody delivers) after [`TAILS`]: a tree node that missed the burst's last
//! messages learns of them from it. The second tail is for a tree that was in repair when
//! the first went.

use crate::overlay::NodeId;
use crate::scribe::Group;
use crate::time::Instant;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// How long a message is kept for tree nodes that missed it.
pub(crate) const KEEP_FOR: Duration = Duration::from_secs(60);
/// Payload bytes kept at most.
pub(crate) const KEEP_BYTES: usize = 16 << 20;
/// Messages kept at most.
pub(crate) const KEEP_MAX: usize = 1 << 16;
/// When tails follow the last message on a tree: soon for a message lost on its way,
/// later for a tree node that was stalled, cut off or re-parenting when it went (up to
/// about as long as messages are kept: after that they could not be sent again anyway).
pub(crate) const TAILS: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(4),
    Duration::from_secs(12),
    Duration::from_secs(25),
    Duration::from_secs(50),
];
/// After a link comes up, when trees with messages kept get a tail again, and how often
/// at most: a partition that heals brings its nodes back link by link, and a message
/// sent while its tree was on the other side (or nowhere) is found by a tail that
/// arrives once the trees are whole again.
const RETAIL_AFTER: Duration = Duration::from_secs(1);
const RETAIL_EVERY: Duration = Duration::from_secs(5);
/// A tree unused this long, with nothing kept, is forgotten.
pub(crate) const FORGET_AFTER: Duration = Duration::from_secs(120);
/// Trees remembered at most; past it the idle ones are forgotten at once.
pub(crate) const MAX_TREES: usize = 1 << 16;
/// Payloads up to this size are copied when kept.
const COPY_BELOW: usize = 4096;
/// Bytes counted per kept message besides its payload.
const OVERHEAD: usize = 64;

/// A message sent again: its number and payload (`None`: a tail).
pub(crate) type Resend = (u64, Option<Bytes>);

/// What can be sent again of a range of numbers on one tree.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Resends {
    /// The tree's group and index (`None`: the tree is not known here).
    pub(crate) tree: Option<(Group, u8)>,
    /// The messages still kept, sent within the time asked about.
    pub(crate) again: Vec<Resend>,
    /// The numbers no longer kept that may have been sent within that time.
    pub(crate) gone: Option<(u64, u64)>,
    /// The numbers sent before that time (or never sent on this tree): not owed.
    pub(crate) skipped: Vec<(u64, u64)>,
}

/// One tree this node sends on.
#[derive(Debug)]
struct Outgoing {
    group: Group,
    index: u8,
    /// The next message's number.
    next: u64,
    /// The number of `kept[0]`.
    first_kept: u64,
    /// When each kept message was sent, and what it was.
    kept: VecDeque<(Instant, Option<Bytes>)>,
    /// When the last message no longer kept was sent (`None`: all are kept).
    dropped_sent_at: Option<Instant>,
    /// When the last message was sent (for the next one's `prev_ms`).
    last_sent: Option<Instant>,
    last_used: Instant,
    /// When the next tail is due, and how many are left after it.
    tail: Option<(Instant, usize)>,
}

/// The numbered multicasts of this node.
#[derive(Debug, Default)]
pub(crate) struct Sent {
    trees: BTreeMap<NodeId, Outgoing>,
    /// Kept messages, oldest first: when sent, and on which tree.
    order: VecDeque<(Instant, NodeId)>,
    /// Payload bytes kept (with [`OVERHEAD`] each).
    bytes: usize,
    /// Tails due: when, on which tree.
    tails: BTreeSet<(Instant, NodeId)>,
    /// When idle trees were last looked for.
    swept_at: Option<Instant>,
    /// When tails were last sent again because a link came up.
    retailed_at: Option<Instant>,
}

impl Sent {
    /// Numbers a client's message on tree `key` (of `group`, index `index`) and keeps it;
    /// `start` is where a tree new here starts counting. Returns its number and how long
    /// after the previous one on the tree it goes (the wire's `prev_ms`).
    pub(crate) fn send(
        &mut self,
        now: Instant,
        key: NodeId,
        group: &Group,
        index: u8,
        payload: &Bytes,
        start: u64,
    ) -> (u64, u64) {
        let kept = if payload.len() < COPY_BELOW {
            Bytes::copy_from_slice(payload)
        } else {
            payload.clone()
        };
        let size = kept.len();
        let numbered = self.number(now, key, group, index, start, Some(kept), size);
        let t = self.trees.get_mut(&key).expect("numbered above");
        if let Some((at, _)) = t.tail.take() {
            self.tails.remove(&(at, key));
        }
        let at = now + TAILS[0];
        t.tail = Some((at, TAILS.len() - 1));
        self.tails.insert((at, key));
        numbered
    }

    /// The tails due by `now`, numbered: (tree, group, index, (number, `prev_ms`)).
    pub(crate) fn due_tails(&mut self, now: Instant) -> Vec<(NodeId, Group, u8, (u64, u64))> {
        let mut out = Vec::new();
        while let Some(&(at, key)) = self.tails.first() {
            if at > now {
                break;
            }
            self.tails.pop_first();
            let Some(t) = self.trees.get_mut(&key) else {
                continue;
            };
            let Some((_, left)) = t.tail.take() else {
                continue;
            };
            if left > 0 {
                let i = TAILS.len() - left;
                let next = now + TAILS[i].saturating_sub(TAILS[i - 1]);
                t.tail = Some((next, left - 1));
                self.tails.insert((next, key));
            }
            let (group, index) = (t.group.clone(), t.index);
            let numbered = self.number(now, key, &group, index, 0, None, 0);
            out.push((key, group, index, numbered));
        }
        out
    }

    /// A link came up (a peer came back, or a partition heals): every tree with messages
    /// kept gets a tail soon, at most once every [`RETAIL_EVERY`] (`throttled`); or the
    /// overlay settled after a change (not throttled: it says so once per quiet period),
    /// when trees that grew apart in a partition have merged, or are about to: a tail sent
    /// only at the first link-up went through a tree still split, and tree nodes across the
    /// split never learned what they missed (found in `a_partition_that_heals_...`, once
    /// the two sides of a partition found each other within seconds).
    pub(crate) fn retail(&mut self, now: Instant, throttled: bool) {
        if throttled
            && self
                .retailed_at
                .is_some_and(|at| now.saturating_duration_since(at) < RETAIL_EVERY)
        {
            return;
        }
        self.retailed_at = Some(now);
        let at = now + RETAIL_AFTER;
        for (&key, t) in &mut self.trees {
            if t.kept.is_empty() {
                continue;
            }
            let left = match t.tail {
                Some((due, _)) if due <= at => continue,
                Some((due, left)) => {
                    self.tails.remove(&(due, key));
                    left
                }
                None => 0,
            };
            t.tail = Some((at, left));
            self.tails.insert((at, key));
        }
    }

    /// What can be sent again of numbers `lo..=hi` on tree `key` that were sent within
    /// `within` of `now` (its group and index, and the messages), the numbers no longer
    /// kept that may have been, and those that were not (not owed to the asker).
    pub(crate) fn resend(
        &self,
        now: Instant,
        key: NodeId,
        (lo, hi): (u64, u64),
        within: Duration,
    ) -> Resends {
        let Some(t) = self.trees.get(&key) else {
            return Resends {
                gone: Some((lo, hi)),
                ..Resends::default()
            };
        };
        let mut r = Resends {
            tree: Some((t.group.clone(), t.index)),
            ..Resends::default()
        };
        // Numbers at or above `next` were never sent: nothing to say about them.
        let hi = hi.min(t.next.saturating_sub(1));
        if hi < lo {
            return r;
        }
        let owed = |at: Instant| now.saturating_duration_since(at) <= within;
        if lo < t.first_kept {
            let below = (lo, hi.min(t.first_kept - 1));
            match t.dropped_sent_at {
                Some(at) if owed(at) => r.gone = Some(below),
                _ => r.skipped.push(below),
            }
        }
        let mut skipped_to = None;
        for seq in lo.max(t.first_kept)..=hi {
            let Some((at, payload)) = usize::try_from(seq - t.first_kept)
                .ok()
                .and_then(|i| t.kept.get(i))
            else {
                break;
            };
            if owed(*at) {
                r.again.push((seq, payload.clone()));
            } else {
                skipped_to = Some(seq);
            }
        }
        if let Some(to) = skipped_to {
            r.skipped.push((lo.max(t.first_kept), to));
        }
        r
    }

    /// When something is next due: a tail, or the oldest kept message's time being up.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let expiry = self.order.front().map(|(at, _)| *at + KEEP_FOR);
        [self.tails.first().map(|(at, _)| *at), expiry]
            .into_iter()
            .flatten()
            .min()
    }

    /// Lets go of what was kept for its time, and of trees long unused.
    pub(crate) fn expire(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(at, _)| *at + KEEP_FOR <= now)
        {
            self.drop_oldest();
        }
        if self
            .swept_at
            .is_none_or(|t| now.saturating_duration_since(t) >= FORGET_AFTER / 4)
        {
            self.swept_at = Some(now);
            self.forget_idle(now, FORGET_AFTER);
        }
    }

    /// Payload bytes kept.
    pub(crate) fn kept_bytes(&self) -> usize {
        self.bytes
    }

    /// Gives the next number on tree `key` to a message (`None`: a tail) and keeps it;
    /// returns the number and the wire's `prev_ms`.
    #[allow(clippy::too_many_arguments)]
    fn number(
        &mut self,
        now: Instant,
        key: NodeId,
        group: &Group,
        index: u8,
        start: u64,
        payload: Option<Bytes>,
        size: usize,
    ) -> (u64, u64) {
        if !self.trees.contains_key(&key) && self.trees.len() >= MAX_TREES {
            self.forget_idle(now, Duration::ZERO);
        }
        let t = self.trees.entry(key).or_insert_with(|| Outgoing {
            group: group.detached(),
            index,
            next: start,
            first_kept: start,
            kept: VecDeque::new(),
            dropped_sent_at: None,
            last_sent: None,
            last_used: now,
            tail: None,
        });
        let seq = t.next;
        t.next += 1;
        t.last_used = now;
        let prev_ms = t.last_sent.map_or(0, |at| {
            let ms = now.saturating_duration_since(at).as_millis();
            u64::try_from(ms).unwrap_or(u64::MAX - 1) + 1
        });
        t.last_sent = Some(now);
        if t.kept.is_empty() {
            t.first_kept = seq;
        }
        t.kept.push_back((now, payload));
        self.order.push_back((now, key));
        self.bytes += size + OVERHEAD;
        while self.bytes > KEEP_BYTES || self.order.len() > KEEP_MAX {
            self.drop_oldest();
        }
        (seq, prev_ms)
    }

    fn drop_oldest(&mut self) {
        let Some((_, key)) = self.order.pop_front() else {
            return;
        };
        if let Some(t) = self.trees.get_mut(&key)
            && let Some((at, p)) = t.kept.pop_front()
        {
            t.first_kept += 1;
            t.dropped_sent_at = Some(at);
            self.bytes -= p.map_or(0, |p| p.len()) + OVERHEAD;
        }
    }

    /// Forgets the trees with nothing kept nor due, unused for `idle`.
    fn forget_idle(&mut self, now: Instant, idle: Duration) {
        self.trees.retain(|_, t| {
            !t.kept.is_empty()
                || t.tail.is_some()
                || now.saturating_duration_since(t.last_used) < idle
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    const LONG: Duration = Duration::from_secs(3600);

    #[test]
    fn numbers_each_tree_on_its_own_and_sends_what_is_kept_again() {
        let mut s = Sent::default();
        let g = Group::topic("t".into());
        let (k1, k2) = (NodeId(1), NodeId(2));
        let p = Bytes::from_static(b"x");
        assert_eq!(
            s.send(at(0), k1, &g, 0, &p, 7),
            (7, 0),
            "the first: none before"
        );
        assert_eq!(s.send(at(0), k2, &g, 1, &p, 8), (8, 0));
        assert_eq!(
            s.send(at(250), k1, &g, 0, &p, 9),
            (8, 251),
            "250 ms after the last"
        );
        let r = s.resend(at(300), k1, (0, 100), LONG);
        assert_eq!(r.tree, Some((g.clone(), 0)));
        assert_eq!(r.again, [(7, Some(p.clone())), (8, Some(p.clone()))]);
        assert_eq!(r.skipped, [(0, 6)], "never sent on this tree");
        assert_eq!(r.gone, None);
        // Only what was sent within the time asked about is owed.
        let r = s.resend(at(300), k1, (0, 100), Duration::from_millis(100));
        assert_eq!(r.again, [(8, Some(p.clone()))]);
        assert_eq!(r.skipped, [(0, 6), (7, 7)]);
        // Kept for its time, then gone.
        s.expire(at(60_250));
        assert_eq!(s.resend(at(60_250), k1, (7, 8), LONG).gone, Some((7, 8)));
        assert_eq!(s.kept_bytes(), 0);
    }

    #[test]
    fn tails_follow_the_last_message_of_a_burst() {
        let mut s = Sent::default();
        let g = Group::topic("t".into());
        let p = Bytes::from_static(b"x");
        s.send(at(0), NodeId(1), &g, 0, &p, 0);
        s.send(at(500), NodeId(1), &g, 0, &p, 0);
        assert!(s.due_tails(at(1000)).is_empty(), "the burst went on");
        assert_eq!(s.poll_timeout(), Some(at(1500)));
        assert_eq!(
            s.due_tails(at(1500)),
            [(NodeId(1), g.clone(), 0, (2, 1001))]
        );
        assert_eq!(s.poll_timeout(), Some(at(4500)));
        assert_eq!(s.due_tails(at(4500))[0].3, (3, 3001));
        assert_eq!(s.due_tails(at(12_500))[0].3.0, 4);
        assert_eq!(s.due_tails(at(25_500))[0].3.0, 5);
        assert_eq!(s.due_tails(at(50_500))[0].3.0, 6);
        assert!(s.due_tails(at(90_000)).is_empty());
        // A tail is kept like a message, so that it can be sent again too.
        let r = s.resend(at(26_000), NodeId(1), (2, 3), LONG);
        assert_eq!(r.again, [(2, None), (3, None)]);
    }

    #[test]
    fn keeps_within_its_bounds_and_forgets_idle_trees() {
        let mut s = Sent::default();
        let g = Group::topic("t".into());
        let big = Bytes::from(vec![0u8; 1 << 20]);
        for i in 0..20 {
            s.send(at(i), NodeId(1), &g, 0, &big, 0);
        }
        assert!(s.kept_bytes() <= KEEP_BYTES);
        let r = s.resend(at(20), NodeId(1), (0, 19), LONG);
        assert_eq!(r.again.len(), 15);
        assert_eq!(r.gone, Some((0, 4)), "pushed out young: lost");
        for t in [10_000, 20_000, 40_000, 60_000, 100_000] {
            s.due_tails(at(t));
        }
        s.expire(at(300_000));
        s.expire(at(500_000));
        assert!(s.trees.is_empty());
    }
}
