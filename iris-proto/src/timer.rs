//! Deadlines, one idiom for every state machine of the core (node, mesh, overlay, trees):
//! a table of named timers whose earliest is the next deadline, in the manner of
//! quinn-proto's `connection/timer.rs`, with keys that may carry an id (a request, a link)
//! where quinn's are a fixed enum.

use crate::time::Instant;
use std::collections::{BTreeMap, BTreeSet};

/// Named deadlines: at most one per key.
#[derive(Debug, Clone)]
pub(crate) struct Timers<K> {
    by_time: BTreeSet<(Instant, K)>,
    by_key: BTreeMap<K, Instant>,
}

impl<K: Ord + Copy> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            by_time: BTreeSet::new(),
            by_key: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Copy> Timers<K> {
    /// Sets `key` to fire at `at`, replacing its earlier deadline if it had one.
    pub(crate) fn set(&mut self, key: K, at: Instant) {
        if let Some(old) = self.by_key.insert(key, at) {
            self.by_time.remove(&(old, key));
        }
        self.by_time.insert((at, key));
    }

    /// Stops `key`; returns when it would have fired.
    pub(crate) fn cancel(&mut self, key: K) -> Option<Instant> {
        let at = self.by_key.remove(&key)?;
        self.by_time.remove(&(at, key));
        Some(at)
    }

    /// When `key` fires, if it is set.
    pub(crate) fn get(&self, key: K) -> Option<Instant> {
        self.by_key.get(&key).copied()
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|&(at, _)| at)
    }

    /// The next timer due at `now`, removed (earliest first; ties in key order).
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<K> {
        let &(at, key) = self.by_time.first()?;
        if at > now {
            return None;
        }
        self.by_time.pop_first();
        self.by_key.remove(&key);
        Some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_order_and_resets_replace() {
        let mut t = Timers::default();
        let at = Instant::from_nanos;
        t.set('a', at(30));
        t.set('b', at(10));
        t.set('a', at(5));
        assert_eq!(t.next(), Some(at(5)));
        assert_eq!(t.pop_due(at(4)), None);
        assert_eq!(t.pop_due(at(20)), Some('a'));
        assert_eq!(t.pop_due(at(20)), Some('b'));
        assert_eq!(t.pop_due(at(20)), None);
        t.set('c', at(1));
        assert_eq!(t.cancel('c'), Some(at(1)));
        assert_eq!(t.next(), None);
    }
}
