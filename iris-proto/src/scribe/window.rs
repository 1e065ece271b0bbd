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
//! after it noticed (`ASK_AFTER`, for the late arrivals), then every `ASK_EVERY` at first
//! and at gaps that double up to `ASK_GAP_MAX`, at most `ASKS` times: the asks span as long
//! as the origin keeps its messages, so that a gap noticed while the way to the origin is
//! down (a partition that has just begun: routes still lead across it until the peers
//! there are taken for dead) is still repaired once it is back. The origin sends back what
//! it still keeps, and says which numbers it no longer has. What is given up on, or gone at the origin, is counted as lost: never
//! silently.
//!
//! **The first message from an origin.** A node that has nothing from an origin on a tree
//! cannot count what it missed before the first message it takes. That message says how
//! long before it the origin sent its previous one on the tree: if this node already had
//! members then, it was owed that one (it was out of the tree for a while: re-parenting,
//! stalled, cut off), and it asks for what came before, within how long it has had members;
//! the origin sends back what it sent since, and says the rest was sent before (not owed).

use crate::overlay::NodeId;
use crate::time::Instant;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Ranges of missing numbers kept per origin and tree; past it the oldest is given up.
pub(crate) const MAX_RANGES: usize = 32;
/// How long a gap may close by itself (a late arrival) before the origin is asked.
const ASK_AFTER: Duration = Duration::from_millis(200);
/// How often an origin is asked again while the gap stays open, for the first asks.
const ASK_EVERY: Duration = Duration::from_secs(1);
/// The first asks go `ASK_EVERY` apart (one more than this many), then the gaps double...
const ASKS_EVERY: u8 = 3;
/// ...up to this gap.
const ASK_GAP_MAX: Duration = Duration::from_secs(16);
/// Asks before a gap is given up (its origin is gone or unreachable): the last goes about
/// 65 s after the gap was noticed, past what origins keep (`trees::sent::KEEP_FOR`).
const ASKS: u8 = 10;

/// How long after ask number `asks` (from 1) the next goes.
fn ask_gap(asks: u8) -> Duration {
    match asks.checked_sub(ASKS_EVERY) {
        None | Some(0) => ASK_EVERY,
        Some(n) => (ASK_EVERY * (1u32 << n.min(8))).min(ASK_GAP_MAX),
    }
}
/// How far below the first message taken an ask for what came before reaches: no origin
/// keeps more messages than that (`trees::sent::KEEP_MAX`).
const HEAD_SPAN: u64 = 1 << 16;

/// Most heads one [`Windows::heads`] lists (the latest taken).
pub(crate) const MAX_HEADS: usize = 64;
/// Heads taken longer ago than this are not listed: their messages are no longer kept
/// at their origins (`trees::sent::KEEP_FOR`).
const HEADS_FOR: Duration = Duration::from_secs(60);

/// What is remembered of one origin on one tree.
#[derive(Debug, Clone)]
struct Seen {
    epoch: u64,
    seq: u64,
    /// When `seq` was taken.
    taken_at: Instant,
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
    /// The range asked for before the first message taken, if any (how many of it were
    /// sent is unknown here: it counts as one if given up).
    head: Option<(u64, u64)>,
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
    /// How long the asker has had members of the group (ms): messages sent before that are
    /// not owed (filled in by the trees machine).
    pub(crate) within_ms: u64,
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
    /// `prev_ms`: how long before it the origin sent its previous one on the tree (0: none;
    /// else milliseconds plus one). `owed`: how long this node has had members of the
    /// group, if it has any; then numbers it skips are noted as missing, to be asked for.
    pub(crate) fn check(
        &mut self,
        now: Instant,
        origin: NodeId,
        epoch: u64,
        key: NodeId,
        (seq, prev_ms): (u64, u64),
        owed: Option<Duration>,
    ) -> Verdict {
        let id = (key, origin);
        let repair = owed.is_some();
        let Some(s) = self.seen.get_mut(&id) else {
            if self.seen.len() >= self.max {
                self.evict(now);
            }
            let mut fresh = Seen::fresh(epoch, seq, now);
            // Members here when the previous one was sent: what came before is owed.
            let before_owed =
                owed.is_some_and(|o| prev_ms > 0 && Duration::from_millis(prev_ms - 1) < o);
            if before_owed && seq > 0 {
                let head = (seq.saturating_sub(HEAD_SPAN), seq - 1);
                fresh.note_missing(now, head);
                if let Some(g) = fresh.gap.as_mut() {
                    g.head = Some(head);
                }
                self.gappy.insert(id);
            }
            self.seen.insert(id, fresh);
            return Verdict::New;
        };
        if epoch < s.epoch {
            return Verdict::Old; // a zombie's
        }
        if epoch > s.epoch {
            // The origin restarted: it counts afresh, and what its old self sent is gone.
            // This is the first message of its new self: what that sent before is owed as
            // for an origin never heard from (found by swarm testing: a restarted origin's
            // broadcast missed by a node in repair was never asked for, that node having
            // heard the origin's old self).
            let lost = s.gap.as_ref().map_or(0, |g| g.lost());
            self.seen.remove(&id);
            self.gappy.remove(&id);
            self.give_up(key, lost);
            return self.check(now, origin, epoch, key, (seq, prev_ms), owed);
        }
        s.last_used = now;
        if seq > s.seq {
            let mut overflow = None;
            if repair && seq > s.seq + 1 {
                overflow = Some(s.note_missing(now, (s.seq + 1, seq - 1)));
            }
            s.seq = seq;
            s.taken_at = now;
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

    /// The latest messages taken on tree `key` lately, one per origin: (origin, epoch,
    /// number, how long ago in ms), the latest first, at most [`MAX_HEADS`].
    pub(crate) fn heads(&self, now: Instant, key: NodeId) -> Vec<(NodeId, u64, u64, u64)> {
        let mut heads: Vec<_> = self
            .seen
            .range((key, NodeId(0))..=(key, NodeId(u128::MAX)))
            .filter_map(|(&(_, origin), s)| {
                let age = now.saturating_duration_since(s.taken_at);
                let ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
                (age <= HEADS_FOR).then_some((origin, s.epoch, s.seq, ms))
            })
            .collect();
        heads.sort_by_key(|&(origin, _, _, ms)| (ms, origin));
        heads.truncate(MAX_HEADS);
        heads
    }

    /// What the parent took lately on tree `key` (see [`Windows::heads`]): what of it this
    /// node lacks is missing here, if it is owed (`owed`: how long this node has had
    /// members; `None`: none, and it only notes how far each origin went). Returns the
    /// heads that went further than this node had (for its own children: see
    /// `Scribe::on_heads`).
    pub(crate) fn learn_heads(
        &mut self,
        now: Instant,
        key: NodeId,
        heads: &[(NodeId, u64, u64, u64)],
        owed: Option<Duration>,
    ) -> Vec<(NodeId, u64, u64, u64)> {
        let mut ahead = Vec::new();
        for &(origin, epoch, seq, age_ms) in heads.iter().take(MAX_HEADS) {
            let id = (key, origin);
            let known = self
                .seen
                .get(&id)
                .filter(|s| s.epoch >= epoch)
                .map(|s| (s.epoch, s.seq));
            let missing = match known {
                Some((e, last)) if e > epoch || seq <= last => continue,
                Some((_, last)) => Some((last + 1, seq)),
                // Nothing from that origin here: owed only if this node had members when
                // the parent took it (and then what came before may be owed too).
                None if owed.is_some_and(|o| Duration::from_millis(age_ms) < o) => {
                    Some((seq.saturating_sub(HEAD_SPAN), seq))
                }
                None => None,
            };
            ahead.push((origin, epoch, seq, age_ms));
            // No members here (nothing to ask for, and the messages may still come this
            // way, to be passed on), or none when the parent took it: nothing owed.
            let (Some(missing), Some(_)) = (missing, owed) else {
                continue;
            };
            if self.seen.len() >= self.max && !self.seen.contains_key(&id) {
                self.evict(now);
            }
            let fresh = known.is_none();
            let s = self
                .seen
                .entry(id)
                .and_modify(|s| {
                    if fresh {
                        *s = Seen::fresh(epoch, seq, now);
                    }
                })
                .or_insert_with(|| Seen::fresh(epoch, seq, now));
            let over = s.note_missing(now, missing);
            if fresh && let Some(g) = s.gap.as_mut() {
                g.head = Some(missing);
            }
            s.seq = seq;
            self.gappy.insert(id);
            self.give_up(key, over);
        }
        ahead
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
                let lost = gap.lost();
                s.gap = None;
                self.gappy.remove(&id);
                self.give_up(id.0, lost);
                continue;
            }
            gap.asks += 1;
            gap.ask_at = now + ask_gap(gap.asks);
            out.push(Ask {
                key: id.0,
                origin: id.1,
                epoch: s.epoch,
                ranges: gap.missing.clone(),
                within_ms: 0,
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
        let before = gap.lost();
        for &(lo, hi) in ranges {
            remove(&mut gap.missing, lo, hi);
        }
        let lost = before - gap.lost();
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

impl Gap {
    /// Messages missing, as far as known: those of the head range count as one.
    fn lost(&self) -> u64 {
        let Some((lo, hi)) = self.head else {
            return count(&self.missing);
        };
        let mut outside = self.missing.clone();
        remove(&mut outside, lo, hi);
        let in_head = count(&self.missing) > count(&outside);
        count(&outside) + u64::from(in_head)
    }
}

impl Seen {
    fn fresh(epoch: u64, seq: u64, now: Instant) -> Seen {
        Seen {
            epoch,
            seq,
            taken_at: now,
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
                head: None,
            })
        });
        // Asked afresh for the new range (the ask includes the old ones).
        gap.asks = 0;
        gap.ask_at = gap.ask_at.min(now + ASK_AFTER);
        gap.missing.push(range);
        let mut over = 0;
        while gap.missing.len() > MAX_RANGES {
            let (lo, hi) = gap.missing.remove(0);
            let in_head = gap.head.is_some_and(|(a, b)| lo >= a && hi <= b);
            over += if in_head { 1 } else { hi - lo + 1 };
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
    /// A node that has had members for an hour.
    const MEMBER: Option<Duration> = Some(Duration::from_secs(3600));
    const T: NodeId = NodeId(10);

    fn at(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    #[test]
    fn takes_each_message_once_per_tree_and_a_restarted_origin_afresh() {
        let mut w = Windows::new(10, Duration::from_secs(60));
        let (o, t1, t2) = (O, T, NodeId(20));
        let now = Instant::ZERO;
        assert_eq!(w.check(now, o, 1, t1, (5, 0), MEMBER), Verdict::New);
        assert_eq!(
            w.check(now, o, 1, t1, (5, 0), MEMBER),
            Verdict::Old,
            "a duplicate"
        );
        assert_eq!(
            w.check(now, o, 1, t1, (4, 0), MEMBER),
            Verdict::Old,
            "from before"
        );
        // Another tree has its own numbers.
        assert_eq!(w.check(now, o, 1, t2, (3, 0), MEMBER), Verdict::New);
        assert_eq!(w.check(now, o, 1, t1, (6, 0), MEMBER), Verdict::New);
        // A restarted origin counts afresh.
        assert_eq!(w.check(now, o, 2, t1, (0, 0), MEMBER), Verdict::New);
        assert_eq!(
            w.check(now, o, 1, t1, (100, 0), MEMBER),
            Verdict::Old,
            "a zombie's"
        );
    }

    #[test]
    fn a_skipped_message_is_taken_late_once_and_asked_for_until_it_comes() {
        let mut w = Windows::new(10, Duration::from_secs(60));
        assert_eq!(w.check(at(0), O, 1, T, (1, 0), MEMBER), Verdict::New);
        assert_eq!(w.check(at(0), O, 1, T, (5, 0), MEMBER), Verdict::New);
        // 2..=4 are missing; a late 3 is taken, once.
        assert_eq!(w.check(at(10), O, 1, T, (3, 0), MEMBER), Verdict::New);
        assert_eq!(w.check(at(10), O, 1, T, (3, 0), MEMBER), Verdict::Old);
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
                ranges: vec![(2, 2), (4, 4)],
                within_ms: 0,
            }]
        );
        // Asked again a period later, not before.
        assert!(w.asks(at(300)).is_empty());
        assert_eq!(w.asks(at(1200)).len(), 1);
        // The origin resends 2 and says 4 is gone: the gap closes, 4 counted lost.
        assert_eq!(w.check(at(1300), O, 1, T, (2, 0), MEMBER), Verdict::New);
        assert_eq!(w.gone(O, 1, T, &[(4, 4)]), 1);
        assert_eq!(w.next_ask(), None);
        assert!(w.take_given_up().is_empty());
    }

    #[test]
    fn a_gap_nobody_fills_is_given_up_and_counted() {
        let mut w = Windows::new(10, Duration::from_secs(60));
        w.check(at(0), O, 1, T, (1, 0), MEMBER);
        w.check(at(0), O, 1, T, (11, 0), MEMBER);
        let mut t = 0;
        let mut asked = 0;
        while let Some(next) = w.next_ask() {
            t = next.saturating_duration_since(Instant::ZERO).as_millis() as u64;
            asked += w.asks(at(t)).len();
        }
        assert_eq!(asked, usize::from(ASKS));
        // Asked at 0.2, 1.2, 2.2, 3.2, 5.2, 9.2, 17.2, 33.2, 49.2 and 65.2 s: the last one
        // after the 60 s its origin keeps a message; given up 16 s later.
        assert_eq!(t, 81_200, "gave up after {t} ms");
        assert_eq!(w.take_given_up(), BTreeMap::from([(T, 9)]));
    }

    #[test]
    fn a_forwarder_without_members_asks_for_nothing_and_leaving_forgets() {
        let mut w = Windows::new(10, Duration::from_secs(60));
        w.check(at(0), O, 1, T, (1, 0), None);
        w.check(at(0), O, 1, T, (9, 0), None);
        assert_eq!(w.next_ask(), None);
        // Nor does a member once its members left.
        w.check(at(0), O, 1, NodeId(20), (1, 0), MEMBER);
        w.check(at(0), O, 1, NodeId(20), (9, 0), MEMBER);
        w.clear_gaps(NodeId(20));
        assert_eq!(w.next_ask(), None);
        w.forget_tree(T);
        assert_eq!(w.len(), 1);
        assert_eq!(
            w.check(at(1), O, 1, T, (2, 0), MEMBER),
            Verdict::New,
            "starts afresh"
        );
    }

    #[test]
    fn the_first_message_asks_for_what_came_before_if_it_was_owed() {
        let mut w = Windows::new(10, Duration::from_secs(60));
        // The origin's previous message went 2 s before: owed to a node with members for
        // 10 s, not to one with members for 1 s.
        let owed = Some(Duration::from_secs(10));
        assert_eq!(w.check(at(0), O, 1, T, (500, 2001), owed), Verdict::New);
        let recent = Some(Duration::from_secs(1));
        w.check(at(0), O, 1, NodeId(20), (500, 2001), recent);
        // Nor to one whose origin sent nothing before on the tree.
        w.check(at(0), O, 1, NodeId(30), (500, 0), owed);
        let asks = w.asks(at(200));
        assert_eq!(asks.len(), 1);
        assert_eq!((asks[0].key, &asks[0].ranges), (T, &vec![(0, 499)]));
        // The origin resends 498 and 499; the rest, were it gone, counts as one (how many
        // were sent is unknown here).
        assert_eq!(w.check(at(300), O, 1, T, (499, 0), owed), Verdict::New);
        assert_eq!(w.check(at(300), O, 1, T, (498, 0), owed), Verdict::New);
        assert_eq!(w.check(at(300), O, 1, T, (498, 0), owed), Verdict::Old);
        assert_eq!(w.gone(O, 1, T, &[(0, 497)]), 1, "unknown: counts one");
        assert_eq!(w.next_ask(), None);
    }

    /// Found by swarm testing: a node that had heard an origin's old self took the first
    /// message of its new self (a tail, 7 s after the broadcast before it, which the node
    /// missed while its tree repaired) as a fresh start, and never asked for that
    /// broadcast. A restarted origin's first message is as an unknown origin's.
    #[test]
    fn the_first_message_of_a_restarted_origin_asks_for_what_came_before_if_owed() {
        let mut w = Windows::new(10, Duration::from_secs(60));
        assert_eq!(w.check(at(0), O, 1, T, (14, 0), MEMBER), Verdict::New);
        assert_eq!(w.check(at(9000), O, 2, T, (65, 6928), MEMBER), Verdict::New);
        let asks = w.asks(at(9200));
        assert_eq!(asks.len(), 1);
        assert_eq!((asks[0].epoch, &asks[0].ranges), (2, &vec![(0, 64)]));
    }

    #[test]
    fn a_child_back_in_the_tree_learns_from_its_parents_heads_what_it_missed() {
        let mut parent = Windows::new(10, Duration::from_secs(60));
        let mut child = Windows::new(10, Duration::from_secs(60));
        let other = NodeId(2);
        for seq in 1..=5 {
            parent.check(at(0), O, 1, T, (seq, 0), MEMBER);
        }
        parent.check(at(500), other, 7, T, (40, 0), MEMBER);
        child.check(at(0), O, 1, T, (2, 0), MEMBER);
        let heads = parent.heads(at(1000), T);
        assert_eq!(heads, [(other, 7, 40, 500), (O, 1, 5, 1000)]);
        // The child has had members for 10 s: it misses 3..=5 of O, and 40 of the other
        // origin and whatever came before it; nothing of another tree.
        child.learn_heads(at(1000), T, &heads, Some(Duration::from_secs(10)));
        let mut asks = child.asks(at(1200));
        asks.sort_by_key(|a| a.origin);
        assert_eq!(asks.len(), 2);
        assert_eq!(asks[0].ranges, [(3, 5)]);
        assert_eq!(asks[1].ranges, [(0, 40)]);
        // What then comes is taken once.
        assert_eq!(child.check(at(1300), O, 1, T, (4, 0), MEMBER), Verdict::New);
        assert_eq!(child.check(at(1300), O, 1, T, (4, 0), MEMBER), Verdict::Old);
        // A child whose members came after the parent took them is owed nothing.
        let mut late = Windows::new(10, Duration::from_secs(60));
        late.learn_heads(at(1000), T, &heads, Some(Duration::from_millis(100)));
        assert_eq!(late.next_ask(), None);
        // Heads taken long ago are not told.
        assert!(parent.heads(at(62_000), T).is_empty());
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
            w.check(at(i), NodeId(i.into()), 0, NodeId(0), (1, 0), MEMBER);
        }
        w.check(at(3), NodeId(9), 0, NodeId(0), (1, 0), MEMBER);
        assert_eq!(w.len(), 3);
        // The least recently used (origin 0) went.
        assert_eq!(
            w.check(at(4), NodeId(0), 0, NodeId(0), (1, 0), MEMBER),
            Verdict::New
        );
        w.expire(at(1000));
        assert_eq!(w.len(), 0);
    }
}
