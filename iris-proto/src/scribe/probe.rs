//! Noticing a stalled tree neighbour from the data, not only from its beats: when this
//! node passes a multicast to a neighbour it has not heard from for
//! [`ScribeConfig::probe_after`](super::ScribeConfig), it sends a PROBE, which a live
//! neighbour answers at once (with an empty beat: any message will do). A neighbour that
//! has not answered after `probe_wait` is suspect, and the trees route around it as
//! around a lost one: a parent is replaced, a child let go (it subscribes again when it
//! resumes; what it missed meanwhile it asks for, see the `window` module). Before, a
//! stopped neighbour was noticed only after `misses` silent beats: about 3-4 s in which
//! what went its way reached nobody beyond it.
//!
//! A neighbour that is merely slow (a delay spike on its link) loses its place in the
//! trees for nothing, and gets it back by subscribing again: the price of a short wait,
//! paid in tree messages, not in multicasts.
//!
//! On by default since the defect that kept it off was found: a swarm run with probes on
//! (`iris-sim --swarm-seed 911808975384783138 --max-nodes 300`) reported branches hanging
//! from parents outside their tree. The simulator looked at the trees at one instant, and
//! with probes trees move more often, so it saw subscriptions on their way; it now looks
//! twice, 2 s apart. Two real faults surfaced on the way, both fixed in `mod.rs`: a parent
//! lost while it lingered (being left) handed its lingering references to the next
//! subscription through it, which then hung from a parent this node no longer beat to
//! (`a_parent_lost_while_being_left_and_taken_again_keeps_its_child`); and a tree that
//! routed around a suspected neighbour kept avoiding it for good, off the overlay's routes.

use super::{Router, Scribe, ScribeMsg, Timer};
use crate::overlay::NodeId;
use crate::time::Instant;

impl Scribe {
    /// This node passes tree data to `to`: a neighbour silent for `probe_after` is probed
    /// (once until it answers or is given up), and has its round trip plus `probe_wait` to
    /// answer (a fixed wait took far neighbours, 400 ms away, for stalled: the simulator
    /// found trees churning, and a branch its parent had let go for good).
    pub(crate) fn sending_to(&mut self, now: Instant, to: NodeId, router: &impl Router) {
        let after = self.cfg.probe_after;
        if after.is_zero() {
            return; // probes off: nothing to look up per message
        }
        let Some(n) = self.neighbours.get_mut(&to) else {
            return;
        };
        if n.probed.is_some() || now.saturating_duration_since(n.last_heard) < after {
            return;
        }
        let wait = self.cfg.probe_wait + router.planned_rtt(to).unwrap_or_default();
        n.probed = Some(now);
        self.outbox.push_back((n.contact, ScribeMsg::Probe));
        self.timers.set(Timer::Probe(to), now + wait);
    }

    /// The wait for `id`'s answer is over: it is suspect unless it spoke since the probe.
    pub(super) fn probe_over(&mut self, now: Instant, id: NodeId, router: &impl Router) {
        let Some(n) = self.neighbours.get_mut(&id) else {
            return;
        };
        let Some(at) = n.probed.take() else {
            return;
        };
        if n.last_heard < at {
            self.stats.suspected += 1;
            self.tell_suspect(id);
            self.lost(now, id, router);
        }
    }

    /// Tells a suspected neighbour what this node is doing without it: it may be only slow
    /// (a delay spike) or stopped, and it reads this when it can. A child let go learns so
    /// at once and subscribes again (and asks for what it missed while the origins still
    /// keep it), instead of at its next refresh beat, up to 10 s later: a swarm run lost a
    /// broadcast to a child let go this way, whose origin crashed before that beat. A
    /// parent left stops sending this way.
    fn tell_suspect(&mut self, id: NodeId) {
        for (&key, t) in &self.trees {
            if let Some(c) = t.children.get(&id) {
                self.outbox
                    .push_back((c.contact, ScribeMsg::NotInTree { key }));
            } else if let Some(p) = t.parent.filter(|p| p.id == id) {
                self.outbox.push_back((p, ScribeMsg::Unsubscribe { key }));
            }
        }
        // A parent being left (lingering a beat) is forgotten with it: told now instead.
        for &(_, key, old) in &self.lingering {
            if old.id == id {
                self.outbox.push_back((old, ScribeMsg::Unsubscribe { key }));
            }
        }
    }

    /// A neighbour's probe: answered at once, so that it hears this node is alive.
    pub(super) fn on_probe(&mut self, from: crate::overlay::Contact) {
        self.outbox.push_back((
            from,
            ScribeMsg::Beat {
                caps: Vec::new(),
                parents: None,
            },
        ));
    }
}
