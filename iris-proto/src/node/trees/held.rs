//! Multicasts and anycasts that reached the closest node of their tree's key before the
//! tree did.
//!
//! When a tree's root leaves or fails, its members subscribe again toward the key, and the
//! node now closest to it becomes the root once their subscriptions arrive. Messages the
//! other nodes route toward the key meanwhile race those subscriptions, and one that wins
//! finds no tree (see `Node::toward`). Rather than being dropped, it waits here: it goes on
//! as soon as this node is in the tree or a closer node appears, and is dropped (counted)
//! after a while. Only messages arriving while the overlay is moving are held, since in a
//! settled network a key's closest node without a tree means nobody is a member. Bounded in
//! number and bytes.

use crate::node::wire::{Anycast, Cast};
use crate::overlay::{Contact, NodeId};
use crate::time::Instant;
use std::collections::VecDeque;

/// A message waiting for its tree, and the peer it came from (`None`: sent from here).
#[derive(Debug)]
pub(crate) enum Parked {
    Cast(Cast, Option<Contact>),
    Anycast(Anycast, Option<Contact>),
}

impl Parked {
    /// The key of the tree it waits for.
    pub(crate) fn key(&self) -> NodeId {
        match self {
            Parked::Cast(c, _) => c.key,
            Parked::Anycast(a, _) => a.key,
        }
    }

    /// A multicast tail: numbered, carrying nothing (see `window`).
    pub(crate) fn is_tail(&self) -> bool {
        matches!(self, Parked::Cast(c, _) if c.tail)
    }

    /// Bytes it holds (its payload; the rest is small and fixed).
    fn size(&self) -> usize {
        match self {
            Parked::Cast(c, _) => c.payload.len(),
            Parked::Anycast(a, _) => match &a.wanted {
                crate::node::wire::Wanted::Request(r) => r.len(),
                crate::node::wire::Wanted::Tunnel => 0,
            },
        }
    }
}

/// The waiting messages, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Held {
    queue: VecDeque<(Instant, Parked)>,
    bytes: usize,
}

impl Held {
    /// Most messages held at once.
    pub(crate) const MAX: usize = 1024;
    /// Most payload bytes held at once.
    pub(crate) const MAX_BYTES: usize = 8 << 20;

    /// Holds `msg` from `now`; false (and `msg` dropped) if there is no room.
    pub(crate) fn park(&mut self, now: Instant, msg: Parked) -> bool {
        let size = msg.size();
        if self.queue.len() >= Self::MAX || self.bytes + size > Self::MAX_BYTES {
            return false;
        }
        self.bytes += size;
        self.queue.push_back((now, msg));
        true
    }

    /// True if nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// When the oldest was parked.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.queue.front().map(|(since, _)| *since)
    }

    /// Takes out every message, oldest first, with when it was parked.
    pub(crate) fn take_all(&mut self) -> VecDeque<(Instant, Parked)> {
        self.bytes = 0;
        std::mem::take(&mut self.queue)
    }

    /// Puts back one taken out by [`Held::take_all`], keeping its time (and the order, if
    /// put back in the order taken).
    pub(crate) fn put_back(&mut self, since: Instant, msg: Parked) {
        self.bytes += msg.size();
        self.queue.push_back((since, msg));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::wire::{Via, Wanted};
    use bytes::Bytes;

    fn request(key: u128, size: usize) -> Parked {
        Parked::Anycast(
            Anycast {
                key: NodeId(key),
                cluster: "c".into(),
                index: 0,
                origin: Contact::new(NodeId(1), ([127, 0, 0, 1], 1).into(), 1),
                id: 0,
                timeout_ms: 1000,
                budget_ms: 1000,
                due_ms: 0,
                via: Via::Routed,
                hops: 0,
                wanted: Wanted::Request(Bytes::from(vec![0; size])),
            },
            None,
        )
    }

    #[test]
    fn held_messages_are_bounded_in_number_and_bytes_and_keep_their_order() {
        let t = Instant::ZERO;
        let mut held = Held::default();
        for i in 0..Held::MAX {
            assert!(held.park(t, request(i as u128, 16)), "message {i}");
        }
        assert!(!held.park(t, request(0, 16)), "more than MAX held");
        let all = held.take_all();
        assert!(held.is_empty());
        let keys: Vec<u128> = all.iter().map(|(_, m)| m.key().0).collect();
        assert_eq!(keys, (0..Held::MAX as u128).collect::<Vec<_>>());
        // Bytes: one message as large as the bound fits, then nothing more.
        assert!(held.park(t, request(1, Held::MAX_BYTES)));
        assert!(!held.park(t, request(2, 1)));
        let (since, msg) = held.take_all().pop_front().unwrap();
        held.put_back(since, msg);
        assert!(!held.park(t, request(2, 1)), "put back, still counted");
        assert_eq!(held.oldest(), Some(t));
    }
}
