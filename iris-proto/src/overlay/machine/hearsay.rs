//! What a node makes of the leaf sets its peers tell it: the nodes in them it does not
//! know are probed (`hear_of`), a peer whose leaf set is from elsewhere on the ring is
//! suspected and looked up for it (`doubt`), and the nodes it lists that this node cannot
//! reach are vouched for by it (`overlay/vouch.rs`).

use super::{Overlay, OverlayMsg};
use crate::overlay::Contact;
use crate::time::Instant;

/// A peer whose leaf set seemed to be from elsewhere on the ring.
#[derive(Debug, Clone, Copy)]
pub(super) struct Suspect {
    contact: Contact,
    since: Instant,
    asked: bool,
}

/// Most suspects kept at once (a join storm may show many; each is asked in turn).
const SUSPECTS: usize = 32;

impl Overlay {
    /// `from` told us its leaf set.
    pub(super) fn hear_leaves(&mut self, now: Instant, from: Contact, leaves: Vec<Contact>) {
        self.doubt(now, from, &leaves);
        self.note_vouches(now, from, &leaves);
        for c in leaves {
            self.hear_of(now, c);
        }
    }

    /// A peer told us its leaf set. Leaves are mutual in a settled ring: if we are among
    /// its nearest nodes, it is among ours. One that counts us as a leaf although it lies
    /// far outside our leaf set (`LeafSet::far_beyond`) has a leaf set from another part
    /// of the ring: it formed apart (nodes joining all at once, each hearing of only some
    /// of the others), and its true neighbours do not know it either. Leaf-set gossip
    /// cannot mend that (all its leaves are far), nor its own lookups if they route into
    /// the same few misinformed nodes; so we look it up for it, from here, as if it had
    /// joined through us: the lookup reaches its true neighbours, which answer it with
    /// their leaf set. A node that has just joined shows the same for a moment (its leaf
    /// set first fills with whomever it heard of), so a suspect is asked for its leaf set
    /// again two heartbeat periods later (`ask_suspects`), and looked up only if that
    /// still counts us.
    fn doubt(&mut self, now: Instant, from: Contact, leaves: &[Contact]) {
        let misplaced = self.seeded
            && self.joined
            && self.leaves.far_beyond(from.id)
            && leaves.iter().any(|c| c.id == self.own.id);
        match self.suspects.get(&from.id) {
            Some(s) if s.asked => {
                self.suspects.remove(&from.id);
                if misplaced {
                    self.misplaced += 1;
                    self.on_join(now, from);
                }
            }
            Some(_) if !misplaced => {
                self.suspects.remove(&from.id);
            }
            Some(_) => {}
            None if misplaced && self.suspects.len() < SUSPECTS => {
                let s = Suspect {
                    contact: from,
                    since: now,
                    asked: false,
                };
                self.suspects.insert(from.id, s);
            }
            None => {}
        }
    }

    /// Asks each suspect of `doubt` seen two heartbeat periods ago for its leaf set again;
    /// forgets those that did not answer within two more.
    pub(super) fn ask_suspects(&mut self, now: Instant) {
        let wait = self.cfg.heartbeat_period * 2;
        self.suspects
            .retain(|_, s| !s.asked || now.saturating_duration_since(s.since) < wait * 2);
        let due: Vec<Contact> = self
            .suspects
            .values_mut()
            .filter(|s| !s.asked && now.saturating_duration_since(s.since) >= wait)
            .map(|s| {
                s.asked = true;
                s.contact
            })
            .collect();
        for c in due {
            self.send(c, OverlayMsg::LeafRequest);
        }
    }

    /// `from` listed `leaves` as its leaf set: it vouches for the nodes in it that this
    /// node wants as leaves and does not know (`vouch.rs`).
    fn note_vouches(&mut self, now: Instant, from: Contact, leaves: &[Contact]) {
        if !self.peers.contains_key(&from.id) {
            return; // a suspect's or a stranger's list: no neighbour of ours vouches
        }
        let (own, peers, ls) = (self.own.id, &self.peers, &self.leaves);
        self.vouches.note(now, from.id, leaves, |id| {
            id != own && !peers.contains_key(&id) && ls.wants(id)
        });
    }

    /// Asks each voucher for its leaf set again (once a period, only while a node is
    /// vouched for), dropping the vouches its last answers did not renew.
    pub(super) fn ask_vouchers(&mut self, now: Instant) {
        let stale = self.cfg.heartbeat_period * 2;
        let peers = &self.peers;
        let vouchers = self
            .vouches
            .refresh(now, stale, |id| peers.contains_key(&id));
        for via in vouchers {
            if let Some(c) = self.contact_of(via) {
                self.send(c, OverlayMsg::LeafRequest);
            }
        }
    }
}
