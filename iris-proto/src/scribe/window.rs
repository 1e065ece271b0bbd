//! Duplicate suppression for multicast: what each tree node has already seen from each
//! origin on each tree.
//!
//! An origin numbers its messages with one counter that only grows (per epoch). On one tree
//! its messages travel one path at a time, so they arrive in order; a node accepts a message
//! only if its number is above the last one it took from that origin on that tree. A copy
//! arriving over a second path while the tree repairs (a node re-parented mid-flight) is
//! therefore never delivered twice nor forwarded again (no loops either); the price is that
//! a message overtaken on a repaired path is dropped rather than delivered late.

use crate::overlay::NodeId;
use crate::time::Instant;
use std::collections::BTreeMap;
use std::time::Duration;

/// What is remembered of one origin on one tree.
#[derive(Debug, Clone, Copy)]
struct Seen {
    epoch: u64,
    seq: u64,
    last_used: Instant,
}

/// Bounded memory of (origin, tree) -> last message taken.
#[derive(Debug)]
pub(crate) struct Windows {
    seen: BTreeMap<(NodeId, NodeId), Seen>,
    max: usize,
    /// Entries unused this long are forgotten: far longer than any repair takes, so that no
    /// copy can still be on its way.
    idle: Duration,
}

/// The verdict on one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// New: deliver and forward.
    New,
    /// Seen already, or overtaken: drop.
    Old,
}

impl Windows {
    pub(crate) fn new(max: usize, idle: Duration) -> Windows {
        Windows {
            seen: BTreeMap::new(),
            max,
            idle,
        }
    }

    /// Checks message `seq` of `origin` (at `epoch`) on tree `key`, and remembers it if new.
    pub(crate) fn check(
        &mut self,
        now: Instant,
        origin: NodeId,
        epoch: u64,
        key: NodeId,
        seq: u64,
    ) -> Verdict {
        if let Some(s) = self.seen.get_mut(&(origin, key)) {
            if (epoch, seq) <= (s.epoch, s.seq) {
                return Verdict::Old;
            }
            *s = Seen {
                epoch,
                seq,
                last_used: now,
            };
            return Verdict::New;
        }
        if self.seen.len() >= self.max {
            self.evict(now);
        }
        self.seen.insert(
            (origin, key),
            Seen {
                epoch,
                seq,
                last_used: now,
            },
        );
        Verdict::New
    }

    /// Forgets entries idle for too long; called now and then.
    pub(crate) fn expire(&mut self, now: Instant) {
        let idle = self.idle;
        self.seen
            .retain(|_, s| now.saturating_duration_since(s.last_used) < idle);
    }

    /// How many entries are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }

    /// Makes room: the idle first, else the least recently used.
    fn evict(&mut self, now: Instant) {
        self.expire(now);
        if self.seen.len() >= self.max
            && let Some((&k, _)) = self.seen.iter().min_by_key(|(k, s)| (s.last_used, **k))
        {
            self.seen.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_each_message_once_and_in_order_per_tree() {
        let mut w = Windows::new(10, Duration::from_secs(60));
        let (o, t1, t2) = (NodeId(1), NodeId(10), NodeId(20));
        let now = Instant::ZERO;
        assert_eq!(w.check(now, o, 1, t1, 5), Verdict::New);
        assert_eq!(w.check(now, o, 1, t1, 5), Verdict::Old, "a duplicate");
        assert_eq!(w.check(now, o, 1, t1, 4), Verdict::Old, "overtaken");
        // Another tree has its own order.
        assert_eq!(w.check(now, o, 1, t2, 3), Verdict::New);
        assert_eq!(w.check(now, o, 1, t1, 9), Verdict::New);
        // A restarted origin counts afresh.
        assert_eq!(w.check(now, o, 2, t1, 0), Verdict::New);
        assert_eq!(w.check(now, o, 1, t1, 100), Verdict::Old, "a zombie's");
    }

    #[test]
    fn stays_bounded_forgetting_the_idle_first() {
        let mut w = Windows::new(3, Duration::from_secs(60));
        let at = |s| Instant::ZERO + Duration::from_secs(s);
        for i in 0..3 {
            w.check(at(i), NodeId(i.into()), 0, NodeId(0), 1);
        }
        w.check(at(3), NodeId(9), 0, NodeId(0), 1);
        assert_eq!(w.len(), 3);
        // The least recently used (origin 0) went.
        assert_eq!(w.check(at(4), NodeId(0), 0, NodeId(0), 1), Verdict::New);
        w.expire(at(1000));
        assert_eq!(w.len(), 0);
    }
}
