//! Peers forgotten for silence, a few of them remembered so that a partition that heals,
//! or a link that comes back, is found: the node pings them now and then, and one that
//! answers is learned again and the two rings merge through it (`Overlay::alive` looks
//! the node up through it at once).
//!
//! **Cadence.** A forgotten peer the leaf set would take back (a neighbour: after a
//! partition, the nodes just across the cut) is pinged every heartbeat period for
//! [`EAGER_FOR`] after it was given up, so that a partition that heals within that time is
//! found within a period; then at gaps that double up to [`MAX_GAP`] (6 s), so that one
//! that lasts longer is found within seconds too (with 30 s, a partition of 90 s took 13 s
//! to merge in the simulator, and 1 s with 6 s). A node that crashed for good is pinged so
//! only while the leaf set would take it back: in a network of more than a leaf set, until
//! its neighbours have found the next live nodes. A node
//! that knows nobody has an empty leaf set, which would take anyone back: it pings every
//! entry so, and finds its network again through any former peer, not only through its
//! seeds. Other entries take turns, one per graveyard round of the overlay.
//!
//! Such a ping is first-hand: the peer's tombstone, which keeps gossip about it away for
//! a while, does not hold it back.

use super::{Contact, NodeId};
use crate::time::Instant;
use std::collections::VecDeque;
use std::time::Duration;

/// Forgotten peers remembered at most (the oldest goes first).
pub(super) const GRAVEYARD: usize = 32;
/// How long after it was given up a forgotten neighbour is pinged every period.
pub(super) const EAGER_FOR: Duration = Duration::from_secs(60);
/// The longest gap between two pings of a forgotten neighbour.
pub(super) const MAX_GAP: Duration = Duration::from_secs(6);

/// One forgotten peer.
#[derive(Debug, Clone)]
struct Grave {
    contact: Contact,
    /// When it was given up.
    buried: Instant,
    /// When it is pinged next if the leaf set would take it back.
    next: Instant,
    /// The gap after that ping.
    gap: Duration,
}

/// The forgotten peers, oldest first.
#[derive(Debug, Default)]
pub(super) struct Graveyard {
    graves: VecDeque<Grave>,
}

impl Graveyard {
    /// `c` was given up for silence at `now`; it is first pinged a `period` later.
    pub(super) fn bury(&mut self, c: Contact, now: Instant, period: Duration) {
        self.graves.retain(|g| g.contact.id != c.id);
        self.graves.push_back(Grave {
            contact: c,
            buried: now,
            next: now + period,
            gap: period,
        });
        if self.graves.len() > GRAVEYARD {
            self.graves.pop_front();
        }
    }

    /// Whether `id` is remembered here.
    pub(super) fn contains(&self, id: NodeId) -> bool {
        self.graves.iter().any(|g| g.contact.id == id)
    }

    /// Forgets `id` (it answered, and was learned again).
    pub(super) fn remove(&mut self, id: NodeId) {
        self.graves.retain(|g| g.contact.id != id);
    }

    /// The entries `wanted` (the leaf set would take them back, and they are not known
    /// again already) whose ping is due at `now`, each due again a gap later.
    pub(super) fn due(
        &mut self,
        now: Instant,
        period: Duration,
        wanted: impl Fn(NodeId) -> bool,
    ) -> Vec<Contact> {
        let mut due = Vec::new();
        for g in &mut self.graves {
            if g.next > now || !wanted(g.contact.id) {
                continue;
            }
            due.push(g.contact);
            let eager = now.saturating_duration_since(g.buried) < EAGER_FOR;
            g.gap = if eager {
                period
            } else {
                (g.gap * 2).clamp(period, MAX_GAP.max(period))
            };
            g.next = now + g.gap;
        }
        due
    }

    /// The next entry in turn for which `ok` holds: it goes to the back, so every entry
    /// gets its turn. Entries for which `gone` holds are dropped on the way.
    pub(super) fn next_in_turn(
        &mut self,
        gone: impl Fn(NodeId) -> bool,
        ok: impl Fn(NodeId) -> bool,
    ) -> Option<Contact> {
        for _ in 0..self.graves.len() {
            let g = self.graves.pop_front()?;
            if gone(g.contact.id) {
                continue;
            }
            let c = g.contact;
            self.graves.push_back(g);
            if ok(c.id) {
                return Some(c);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn contact(id: u128) -> Contact {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        Contact::new(NodeId(id), addr, 1)
    }

    /// The ticks (of `period`) at which a neighbour buried at tick 0 is pinged, up to `n`.
    fn pinged(n: u64) -> Vec<u64> {
        let period = Duration::from_secs(3);
        let mut g = Graveyard::default();
        g.bury(contact(1), Instant::ZERO, period);
        (1..=n)
            .filter(|&k| {
                !g.due(Instant::ZERO + period * k as u32, period, |_| true)
                    .is_empty()
            })
            .collect()
    }

    #[test]
    fn a_forgotten_neighbour_is_pinged_every_period_for_a_minute_then_less_often() {
        let ticks = pinged(100);
        // Every period (3 s) while it is within EAGER_FOR (60 s) of its burial...
        assert_eq!(ticks[..20], (1..=20).collect::<Vec<_>>()[..]);
        // ...then every other period (6 s), for as long as it is remembered.
        let gaps: Vec<u64> = ticks.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps[19..].iter().all(|&g| g == 2), "{gaps:?}");
        assert!(ticks.len() > 50);
    }

    #[test]
    fn only_wanted_entries_are_due_and_the_turns_go_round() {
        let period = Duration::from_secs(3);
        let mut g = Graveyard::default();
        for id in 1..=3 {
            g.bury(contact(id), Instant::ZERO, period);
        }
        let at = Instant::ZERO + period;
        let due = g.due(at, period, |id| id == NodeId(2));
        assert_eq!(due, vec![contact(2)]);
        // Turns: 1, 2, 3, 1... skipping what `ok` refuses, dropping what is gone.
        let turn = |g: &mut Graveyard| g.next_in_turn(|id| id == NodeId(3), |_| true);
        assert_eq!(turn(&mut g), Some(contact(1)));
        assert_eq!(turn(&mut g), Some(contact(2)));
        assert_eq!(turn(&mut g), Some(contact(1)));
        assert!(!g.contains(NodeId(3)));
    }

    #[test]
    fn the_graveyard_keeps_the_newest() {
        let mut g = Graveyard::default();
        for id in 0..(GRAVEYARD as u128 + 5) {
            g.bury(contact(id), Instant::ZERO, Duration::from_secs(3));
        }
        assert!(!g.contains(NodeId(4)));
        assert!(g.contains(NodeId(5)));
        assert_eq!(g.graves.len(), GRAVEYARD);
    }
}
