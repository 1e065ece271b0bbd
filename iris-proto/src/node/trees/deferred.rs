//! Tree maintenance a link could not take yet. Subscribing to 100,000 topics sends about
//! 400,000 SUBSCRIBEs to four peers within seconds, and a link's control queue holds 1 MiB:
//! the rest was dropped, silently (tree messages were fire-and-forget), and trees were
//! left half-built: a parent that never heard of its child sent it nothing (issue 22, 5
//! processes, 12 % of events lost at two nodes). What a link refuses as full now waits
//! here, per peer and in order (a beat must not overtake the SUBSCRIBE before it), and
//! goes as the link drains. Bounded (a sixteenth of the memory budget, at most
//! [`Deferred::MAX_BYTES`]): past that a message is dropped, counted and reported.

use crate::mesh::Refused;
use crate::overlay::{Contact, NodeId};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};

/// Tree messages waiting for their peer's link to take them.
#[derive(Debug)]
pub(crate) struct Deferred {
    by_peer: BTreeMap<NodeId, VecDeque<(Contact, Bytes)>>,
    bytes: usize,
    max: usize,
}

impl Default for Deferred {
    fn default() -> Deferred {
        Deferred {
            by_peer: BTreeMap::new(),
            bytes: 0,
            max: Self::MAX_BYTES,
        }
    }
}

impl Deferred {
    /// Bytes waiting at most, over every peer, whatever the memory budget.
    pub(crate) const MAX_BYTES: usize = 64 << 20;

    /// Bounds the bytes waiting (at most [`Deferred::MAX_BYTES`]).
    pub(crate) fn set_max(&mut self, max: usize) {
        self.max = max.min(Self::MAX_BYTES);
    }

    /// Forgets what waits for a peer the trees lost: it was for trees that repair around
    /// it, and sent later it would mislead a peer that restarted.
    pub(crate) fn forget(&mut self, peer: NodeId) {
        if let Some(queue) = self.by_peer.remove(&peer) {
            self.bytes -= queue.iter().map(|(_, m)| m.len()).sum::<usize>();
        }
    }

    /// Whether messages for `peer` wait already (a new one goes behind them).
    pub(crate) fn is_waiting(&self, peer: NodeId) -> bool {
        self.by_peer.contains_key(&peer)
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.by_peer.is_empty()
    }

    /// Bytes waiting.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Keeps a message for later; false (it is dropped) past the bound.
    pub(crate) fn defer(&mut self, to: Contact, bytes: Bytes) -> bool {
        if self.bytes + bytes.len() > self.max {
            return false;
        }
        self.bytes += bytes.len();
        self.by_peer
            .entry(to.id)
            .or_default()
            .push_back((to, bytes));
        true
    }

    /// Sends what waits, each peer's in order, until its link is full again. A message no
    /// link takes (the link is gone, or it is too large) is dropped, and the next tried;
    /// returns how many were dropped.
    pub(crate) fn retry(
        &mut self,
        mut send: impl FnMut(Contact, Bytes) -> Result<(), Refused>,
    ) -> usize {
        let mut lost = 0;
        let bytes = &mut self.bytes;
        self.by_peer.retain(|_, queue| {
            while let Some((to, msg)) = queue.front() {
                match send(*to, msg.clone()) {
                    Ok(()) => {}
                    Err(Refused::Full) => return true,
                    Err(Refused::NoLink) => lost += 1,
                }
                *bytes -= msg.len();
                queue.pop_front();
            }
            false
        });
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(id: u128) -> Contact {
        Contact::new(NodeId(id), ([127, 0, 0, 1], 7000).into(), 1)
    }

    #[test]
    fn what_waits_goes_in_order_as_room_comes_and_is_bounded() {
        let mut d = Deferred::default();
        for i in 0..5u8 {
            assert!(d.defer(contact(1), Bytes::from(vec![i; 10])));
        }
        assert!(d.defer(contact(2), Bytes::from(vec![9; 10])));
        assert!(d.is_waiting(NodeId(1)) && d.bytes() == 60);
        // Room for two of peer 1's; peer 2's link is gone.
        let mut sent = Vec::new();
        let lost = d.retry(|to, m| {
            if to.id == NodeId(2) {
                return Err(Refused::NoLink);
            }
            if sent.len() == 2 {
                return Err(Refused::Full);
            }
            sent.push(m[0]);
            Ok(())
        });
        assert_eq!(
            (sent.clone(), lost),
            (vec![0, 1], 1),
            "each refused message counted"
        );
        assert!(d.is_waiting(NodeId(1)) && !d.is_waiting(NodeId(2)));
        assert_eq!(d.bytes(), 30);
        d.retry(|_, m| {
            sent.push(m[0]);
            Ok(())
        });
        assert_eq!(sent, vec![0, 1, 2, 3, 4]);
        assert!(d.is_empty() && d.bytes() == 0);
        // Past the bound, a message is refused.
        d.set_max(100);
        assert!(d.defer(contact(1), Bytes::from(vec![0; 100])));
        assert!(!d.defer(contact(1), Bytes::from_static(b"x")));
        // A lost peer's messages go.
        d.forget(NodeId(1));
        assert!(d.is_empty() && d.bytes() == 0);
    }
}
