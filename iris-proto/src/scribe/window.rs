//! Duplicate suppression and gap repair for multicast: what each tree node has taken from
//! each origin on each tree, and what it knows it missed.
//!
//! An origin numbers its messages on each tree with a counter of their own that grows by
//! one per message (per epoch: a restarted origin counts afresh). A tree node takes a
//! message whose number is above the last one it took from that origin on that tree; the
//! numbers it skipped are **missing**: lost with a tree node that stalled or crashed, or
//! still on a slower path while the tree repairs. A missing message that arrives late is
//! taken (once); anything else below the last one is a copy and is dropped. So a copy
//! arriving over a second path while the tree repairs is never delivered twice nor
//! forwarded again (no loops either), and a message overtaken on a repaired path is still
//! delivered.
//!
//! A node with members of the group asks the origin for what is still missing a little
//! after it noticed (`ASK_AFTER`, for the late arrivals), then every `ASK_EVERY`, at most
//! `ASKS` times; the origin sends back what it still keeps, and says which numbers it no
//! longer has. What is given up on, or gone at the origin, is counted as lost: never
//! silently. The first message a node takes from an origin on a tree sets where it starts:
//! nothing sent before it joined the tree is asked for.

use crate::overlay::NodeId;
use crate::time::Instant;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Ranges of missing numbers kept per origin and tree; past it the oldest is given up.
pub(crate) const MAX_RANGES: usize = 32;
/// How long a gap may close by itself (a late arrival) before the origin is asked.
const ASK_AFTER: Duration = Duration::from_millis(200);
/// How often an origin is asked again while the gap stays open.
const ASK_EVERY: Duration = Duration::from_secs(1);
/// Asks before a gap is given up (its origin is gone or unreachable).
const ASKS: u8 = 10;

/// What is remembered of one origin on one tree.
#[derive(Debug, Clone)]
struct Seen {
    epoch: u64,
    seq: u64,
    last_used: Instant,
    /// What is missing below `seq`, if anything (boxed: most entries have no gap).
    gap: Option<Box<Gap>>,
}

/// Numbers missing from one origin on one tree.
#[derive(Debug, Clone)]
struct Gap {
    /// Inclusive ranges, ascending, disjoint.
    missing: Vec<(u64, u64)>,
    /// When the origin is asked (again).
    ask_at: Instant,
    /// Times it was asked since the last new range.
    asks: u8,
}

/// The verdict on one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// New (or missing until now): deliver and forward.
    New,
    /// Taken already, or from before this node's window: drop.
    Old,
}

/// A request to an origin for the messages of a tree that are missing here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ask {
    pub(crate) key: NodeId,
    pub(crate) origin: NodeId,
    pub(crate) epoch: u64,
    /// Inclusive ranges of numbers.
    pub(crate) ranges: Vec<(u64, u64)>,
}

/// Bounded memory of (tree, origin) -> last message taken and what is missing.
#[derive(Debug)]
pub(crate) struct Windows {
    seen: BTreeMap<(NodeId, NodeId), Seen>,
    /// Entries with a gap.
    gappy: BTreeSet<(NodeId, NodeId)>,
    /// Messages given up on since last taken, per tree.
    given_up: BTreeMap<NodeId, u64>,
    max: usize,
    /// Entries unused this long are forgotten: far longer than any repair takes, so that no
    /// copy can still be on its way.
    idle: Duration,
}

impl Windows {
    pub(crate) fn new(max: usize, idle: Duration) -> Windows {
        Windows {
            seen: BTreeMap::new(),
            gappy: BTreeSet::new(),
            given_up: BTreeMap::new(),
            max,
            idle,
        }
    }

    /// Checks message `seq` of `origin` (at `epoch`) on tree `key`, and remembers it if new.
    /// `repair`: numbers it skips are noted as missing, to be asked for.
    pub(crate) fn check(
        &mut self,
        now: Instant,
        origin: NodeId,
        epoch: u64,
        key: NodeId,
        seq: u64,
        repair: bool,
    ) -> Verdict {
        let id = (key, origin);
        let Some(s) = self.seen.get_mut(&id) else {
            if self.seen.len() >= self.max {
                self.evict(now);
            }
            self.seen.insert(id, Seen::fresh(epoch, seq, now));
            return Verdict::New;
        };
        if epoch < s.epoch {
            return Verdict::Old; // a zombie's
        }
        if epoch > s.epoch {
            // The origin restarted: it counts afresh, and what its old self sent is gone.
            let lost = s.gap.as_ref().map_or(0, |g| count(&g.missing));
            *s = Seen::fresh(epoch, seq, now);
            self.gappy.remove(&id);
            self.give_up(key, lost);
            return Verdict::New;
        }
        s.last_used = now;
        if seq > s.seq {
            let mut overflow = None;
            if repair && seq > s.seq + 1 {
                overflow = Some(s.note_missing(now, (s.seq + 1, seq - 1)));
            }
            s.seq = seq;
            if let Some(n) = overflow {
                self.gappy.insert(id);
                self.give_up(key, n);
            }
            return Verdict::New;
        }
        let Some(gap) = s.gap.as_mut() else {
            return Verdict::Old;
        };
        if !take(&mut gap.missing, seq) {
            return Verdict::Old;
        }
        if gap.missing.is_empty() {
            s.gap = None;
            self.gappy.remove(&id);
        }
        Verdict::New
    }

    /// Forgets every origin of tree `key` (this node left it).
    pub(crate) fn forget_tree(&mut self, key: NodeId) {
        let ids: Vec<_> = self
            .seen
            .range((key, NodeId(0))..=(key, NodeId(u128::MAX)))
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            self.seen.remove(&id);
            self.gappy.remove(&id);
        }
    }

    /// Stops asking for what tree `key` misses (this node's members of it left).
    pub(crate) fn clear_gaps(&mut self, key: NodeId) {
        let ids: Vec<_> = self
            .gappy
            .range((key, NodeId(0))..=(key, NodeId(u128::MAX)))
            .copied()
            .collect();
        for id in ids {
            self.gappy.remove(&id);
            if let Some(s) = self.seen.get_mut(&id) {
                s.gap = None;
            }
        }
    }

    /// When an origin is next to be asked for what is missing.
    pub(crate) fn next_ask(&self) -> Option<Instant> {
        self.gappy
            .iter()
            .filter_map(|id| self.seen.get(id)?.gap.as_ref().map(|g| g.ask_at))
            .min()
    }

    /// The asks due by `now`; gaps asked for `ASKS` times are given up (see
    /// [`Windows::take_given_up`]).
    pub(crate) fn asks(&mut self, now: Instant) -> Vec<Ask> {
        let mut out = Vec::new();
        let due: Vec<_> = self.gappy.iter().copied().collect();
        for id in due {
            let Some(s) = self.seen.get_mut(&id) else {
                self.gappy.remove(&id);
                continue;
            };
            let Some(gap) = s.gap.as_mut() else {
                self.gappy.remove(&id);
                continue;
            };
            if gap.ask_at > now {
                continue;
            }
            if gap.asks >= ASKS {
                let lost = count(&gap.missing);
                s.gap = None;
                self.gappy.remove(&id);
                self.give_up(id.0, lost);
                continue;
            }
            gap.asks += 1;
            gap.ask_at = now + ASK_EVERY;
            out.push(Ask {
                key: id.0,
                origin: id.1,
                epoch: s.epoch,
                ranges: gap.missing.clone(),
            });
        }
        out
    }

    /// The origin no longer has `ranges` of tree `key`: they are lost (returns how many
    /// were still missing here).
    pub(crate) fn gone(
        &mut self,
        origin: NodeId,
        epoch: u64,
        key: NodeId,
        ranges: &[(u64, u64)],
    ) -> u64 {
        let id = (key, origin);
        let Some(s) = self.seen.get_mut(&id) else {
            return 0;
        };
        let Some(gap) = s.gap.as_mut().filter(|_| s.epoch == epoch) else {
            return 0;
        };
        let before = count(&gap.missing);
        for &(lo, hi) in ranges {
            remove(&mut gap.missing, lo, hi);
        }
        let lost = before - count(&gap.missing);
        if gap.missing.is_empty() {
            s.gap = None;
            self.gappy.remove(&id);
        }
        lost
    }

    /// Messages given up on since the last call, per tree.
    pub(crate) fn take_given_up(&mut self) -> BTreeMap<NodeId, u64> {
        std::mem::take(&mut self.given_up)
    }

    /// Forgets entries idle for too long; called now and then.
    pub(crate) fn expire(&mut self, now: Instant) {
        let idle = self.idle;
        let gappy = &mut self.gappy;
        self.seen.retain(|id, s| {
            let keep = now.saturating_duration_since(s.last_used) < idle;
            if !keep {
                gappy.remove(id);
            }
            keep
        });
    }

    /// How many entries are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }

    fn give_up(&mut self, key: NodeId, n: u64) {
        if n > 0 {
            *self.given_up.entry(key).or_default() += n;
        }
    }

    /// Makes room: the idle first, else the least recently used.
    fn evict(&mut self, now: Instant) {
        self.expire(now);
        if self.seen.len() >= self.max
            && let Some((&k, _)) = self.seen.iter().min_by_key(|(k, s)| (s.last_used, **k))
        {
            self.seen.remove(&k);
            self.gappy.remove(&k);
        }
    }
}

impl Seen {
    fn fresh(epoch: u64, seq: u64, now: Instant) -> Seen {
        Seen {
            epoch,
            seq,
            last_used: now,
            gap: None,
        }
    }

    /// Notes `range` as missing; returns how many older ones were given up for room.
    fn note_missing(&mut self, now: Instant, range: (u64, u64)) -> u64 {
        let gap = self.gap.get_or_insert_with(|| {
            Box::new(Gap {
                missing: Vec::new(),
                ask_at: now + ASK_AFTER,
                asks: 0,
            })
        });
        // Asked afresh for the new range (the ask includes the old ones).
        gap.asks = 0;
        gap.ask_at = gap.ask_at.min(now + ASK_AFTER);
        gap.missing.push(range);
        let mut over = 0;
        while gap.missing.len() > MAX_RANGES {
            let (lo, hi) = gap.missing.remove(0);
            over += hi - lo + 1;
        }
        over
    }
}

/// Numbers in `ranges`.
fn count(ranges: &[(u64, u64)]) -> u64 {
    ranges
        .iter()
        .fold(0u64, |n, &(lo, hi)| n.saturating_add(hi - lo + 1))
}

/// Takes `seq` out of `ranges` if it is in one.
fn take(ranges: &mut Vec<(u64, u64)>, seq: u64) -> bool {
    let i = ranges.partition_point(|&(_, hi)| hi < seq);
    let Some(&(lo, hi)) = ranges.get(i) else {
        return false;
    };
    if seq < lo {
        return false;
    }
    match (seq == lo, seq == hi) {
        (true, true) => {
            ranges.remove(i);
        }
        (true, false) => ranges[i].0 = seq + 1,
        (false, true) => ranges[i].1 = seq - 1,
        (false, false) => {
            ranges[i].1 = seq - 1;
            ranges.insert(i + 1, (seq + 1, hi));
        }
    }
    true
}

/// Takes `lo..=hi` out of `ranges`.
fn remove(ranges: &mut Vec<(u64, u64)>, lo: u64, hi: u64) {
    let mut out = Vec::with_capacity(ranges.len() + 1);
    for &(a, b) in ranges.iter() {
        if b < lo || a > hi {
            out.push((a, b));
            continue;
        }
        if a < lo {
            out.push((a, lo - 1));
        }
        if b > hi {
            out.push((hi + 1, b));
        }
    }
    *ranges = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    const O: NodeId = NodeId(1);
    const T: NodeId = NodeId(10);

    fn at(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    #[test]
    fn takes_each_message_once_per_tree_and_a_restarted_origin_afresh() {
        let mut w = Windows::new(10, Duration::from_secs(60));
        let (o, t1, t2) = (O, T, NodeId(20));
        let now = Instant::ZERO;
        assert_eq!(w.check(now, o, 1, t1, 5, true), Verdict::New);
        assert_eq!(w.check(now, o, 1, t1, 5, true), Verdict::Old, "a duplicate");
        assert_eq!(w.check(now, o, 1, t1, 4, true), Verdict::Old, "from before");
        // Another tree has its own numbers.
        assert_eq!(w.check(now, o, 1, t2, 3, true), Verdict::New);
        assert_eq!(w.check(now, o, 1, t1, 6, true), Verdict::New);
        // A restarted origin counts afresh.
        assert_eq!(w.check(now, o, 2, t1, 0, true), Verdict::New);
        assert_eq!(
            w.check(now, o, 1, t1, 100, true),
            Verdict::Old,
            "a zombie's"
        );
    }

    #[test]
    fn a_skipped_message_is_taken_late_once_and_asked_for_until_it_comes() {
        let mut w = Windows::new(10, Duration::from_secs(60));
        assert_eq!(w.check(at(0), O, 1, T, 1, true), Verdict::New);
        assert_eq!(w.check(at(0), O, 1, T, 5, true), Verdict::New);
        // 2..=4 are missing; a late 3 is taken, once.
        assert_eq!(w.check(at(10), O, 1, T, 3, true), Verdict::New);
        assert_eq!(w.check(at(10), O, 1, T, 3, true), Verdict::Old);
        // Nothing asked before the late arrivals had their chance.
        assert!(w.asks(at(100)).is_empty());
        assert_eq!(w.next_ask(), Some(at(200)));
        let asks = w.asks(at(200));
        assert_eq!(
            asks,
            [Ask {
                key: T,
                origin: O,
                epoch: 1,
                ranges: vec![(2, 2), (4, 4)]
            }]
        );
        // Asked again a period later, not before.
        assert!(w.asks(at(300)).is_empty());
        assert_eq!(w.asks(at(1200)).len(), 1);
        // The origin resends 2 and says 4 is gone: the gap closes, 4 counted lost.
        assert_eq!(w.check(at(1300), O, 1, T, 2, true), Verdict::New);
        assert_eq!(w.gone(O, 1, T, &[(4, 4)]), 1);
        assert_eq!(w.next_ask(), None);
        assert!(w.take_given_up().is_empty());
    }

    #[test]
    fn a_gap_nobody_fills_is_given_up_and_counted() {
        let mut w = Windows::new(10, Duration::from_secs(60));
        w.check(at(0), O, 1, T, 1, true);
        w.check(at(0), O, 1, T, 11, true);
        let mut t = 0;
        let mut asked = 0;
        while let Some(next) = w.next_ask() {
            t = next.saturating_duration_since(Instant::ZERO).as_millis() as u64;
            asked += w.asks(at(t)).len();
        }
        assert_eq!(asked, usize::from(ASKS));
        assert!(t >= 9_000, "gave up after {t} ms");
        assert_eq!(w.take_given_up(), BTreeMap::from([(T, 9)]));
    }

    #[test]
    fn a_forwarder_without_members_asks_for_nothing_and_leaving_forgets() {
        let mut w = Windows::new(10, Duration::from_secs(60));
        w.check(at(0), O, 1, T, 1, false);
        w.check(at(0), O, 1, T, 9, false);
        assert_eq!(w.next_ask(), None);
        // Nor does a member once its members left.
        w.check(at(0), O, 1, NodeId(20), 1, true);
        w.check(at(0), O, 1, NodeId(20), 9, true);
        w.clear_gaps(NodeId(20));
        assert_eq!(w.next_ask(), None);
        w.forget_tree(T);
        assert_eq!(w.len(), 1);
        assert_eq!(
            w.check(at(1), O, 1, T, 2, true),
            Verdict::New,
            "starts afresh"
        );
    }

    #[test]
    fn ranges_split_and_shrink() {
        let mut r = vec![(2, 8), (10, 10)];
        assert!(take(&mut r, 5));
        assert_eq!(r, [(2, 4), (6, 8), (10, 10)]);
        assert!(!take(&mut r, 9));
        assert!(take(&mut r, 10));
        remove(&mut r, 3, 7);
        assert_eq!(r, [(2, 2), (8, 8)]);
        assert_eq!(count(&r), 2);
    }

    #[test]
    fn stays_bounded_forgetting_the_idle_first() {
        let mut w = Windows::new(3, Duration::from_secs(60));
        let at = |s| Instant::ZERO + Duration::from_secs(s);
        for i in 0..3 {
            w.check(at(i), NodeId(i.into()), 0, NodeId(0), 1, true);
        }
        w.check(at(3), NodeId(9), 0, NodeId(0), 1, true);
        assert_eq!(w.len(), 3);
        // The least recently used (origin 0) went.
        assert_eq!(
            w.check(at(4), NodeId(0), 0, NodeId(0), 1, true),
            Verdict::New
        );
        w.expire(at(1000));
        assert_eq!(w.len(), 0);
    }
}
