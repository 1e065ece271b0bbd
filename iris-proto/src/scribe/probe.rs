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
//!
//! **Hops.** The same holds for the peers a message is routed through on its way to its
//! tree (or an ask on its way to an origin): a node passing one to a peer it has not heard
//! from lately probes it, and a peer that does not answer in time is taken as suspect; the
//! node's routes go around it (see `node::trees::routes`) until it speaks again. Found by
//! swarm testing: an origin routed a broadcast, and its tails 1, 4 and 11 s later, into its
//! next hop, stopped 3 s before, a routing-table peer that the overlay pings only every 9 s;
//! nothing reached the tree until the hop resumed, 16 s later, after a member had left.

use super::{Router, Scribe, ScribeMsg, Timer};
use crate::overlay::{Contact, NodeId};
use crate::time::Instant;
use std::collections::BTreeMap;
use std::time::Duration;

/// Hops remembered at most: past it, a new one is not probed (they are peers with links,
/// which the mesh bounds well below this).
const MAX_HOPS: usize = 4096;
/// A hop nothing was routed through for this long is forgotten.
const HOP_KEPT: Duration = Duration::from_secs(10);

/// The peers this node routes tree traffic through without being their tree neighbour.
#[derive(Debug, Default)]
pub(super) struct Hops {
    hops: BTreeMap<NodeId, Hop>,
}

/// One such peer.
#[derive(Debug, Clone, Copy)]
struct Hop {
    /// When it was last heard from (`None`: not since it became a hop).
    last_heard: Option<Instant>,
    /// When it was probed, until it answers.
    probed: Option<Instant>,
    /// When a message was last routed through it.
    used: Instant,
}

impl Hops {
    /// Whether no hop is remembered (the trees need no timer for them).
    pub(super) fn is_empty(&self) -> bool {
        self.hops.is_empty()
    }

    /// Forgets the hops unused for [`HOP_KEPT`] (unless a probe is out).
    pub(super) fn forget_unused(&mut self, now: Instant) {
        self.hops
            .retain(|_, h| h.probed.is_some() || now.saturating_duration_since(h.used) < HOP_KEPT);
    }

    /// A message from `id`: a hop that answers (or speaks of itself) is not suspect.
    fn heard(&mut self, now: Instant, id: NodeId) {
        if let Some(h) = self.hops.get_mut(&id) {
            h.last_heard = Some(now);
            h.probed = None;
        }
    }
}

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

    /// This node routes tree traffic (a multicast toward its tree, an ask toward an
    /// origin) through `to`: a neighbour as in [`Scribe::sending_to`]; another peer not
    /// heard from for `probe_after` (or not since it became a hop) is probed likewise, and
    /// is suspect if it does not answer in time (see [`Scribe::take_unanswered`]).
    pub(crate) fn routing_via(&mut self, now: Instant, to: Contact, router: &impl Router) {
        let after = self.cfg.probe_after;
        if after.is_zero() {
            return;
        }
        if self.neighbours.contains_key(&to.id) {
            return self.sending_to(now, to.id, router);
        }
        let hops = &mut self.hops.hops;
        if hops.len() >= MAX_HOPS && !hops.contains_key(&to.id) {
            return;
        }
        let h = hops.entry(to.id).or_insert(Hop {
            last_heard: None,
            probed: None,
            used: now,
        });
        h.used = now;
        let heard = h
            .last_heard
            .is_some_and(|t| now.saturating_duration_since(t) < after);
        if h.probed.is_some() || heard {
            return;
        }
        h.probed = Some(now);
        let wait = self.cfg.probe_wait + router.planned_rtt(to.id).unwrap_or_default();
        self.outbox.push_back((to, ScribeMsg::Probe));
        self.timers.set(Timer::Probe(to.id), now + wait);
    }

    /// The hops and neighbours that did not answer a probe since the last call: the trees
    /// route around them until they speak again.
    pub(crate) fn take_unanswered(&mut self) -> Vec<NodeId> {
        std::mem::take(&mut self.unanswered)
    }

    /// The wait for `id`'s answer is over: it is suspect unless it spoke since the probe.
    pub(super) fn probe_over(&mut self, now: Instant, id: NodeId, router: &impl Router) {
        let probed = self.neighbours.get_mut(&id).and_then(|n| {
            let at = n.probed.take()?;
            Some((n, at))
        });
        let Some((n, at)) = probed else {
            return self.hop_probe_over(id);
        };
        if n.last_heard < at {
            self.stats.suspected += 1;
            self.tell_suspect(id);
            self.lost(now, id, router);
            // Routed around too, as a hop is: a swarm run's origin routed a broadcast's
            // tails into a stopped node it had just given up as a neighbour on another tree.
            self.unanswered.push(id);
        }
    }

    /// The wait for hop `id`'s answer is over: suspect unless it spoke since the probe.
    fn hop_probe_over(&mut self, id: NodeId) {
        let Some(h) = self.hops.hops.get_mut(&id) else {
            return;
        };
        let Some(at) = h.probed.take() else {
            return;
        };
        if h.last_heard.is_none_or(|t| t < at) {
            self.stats.hops_suspected += 1;
            self.hops.hops.remove(&id);
            self.unanswered.push(id);
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

    /// Any message from a peer: a neighbour or hop is alive; a neighbour of another epoch
    /// restarted, and what this node had with its earlier start is lost.
    pub(super) fn heard_from(&mut self, now: Instant, from: Contact, router: &impl Router) {
        self.hops.heard(now, from.id);
        let Some(n) = self.neighbours.get_mut(&from.id) else {
            return;
        };
        if n.contact.epoch != from.epoch {
            self.lost(now, from.id, router);
            return;
        }
        n.last_heard = now;
        n.probed = None;
    }

    /// A neighbour is gone (silent, unlinked, dead, left or restarted): its children
    /// entries go, the trees it was parent in subscribe again around it.
    pub(super) fn lost(&mut self, now: Instant, node: NodeId, router: &impl Router) {
        let Some(gone) = self.neighbours.remove(&node) else {
            return;
        };
        self.refs -= gone.trees as usize;
        self.stats.neighbours_lost += 1;
        // Its lingering entries held references to the entry just removed: released later,
        // they would take references a new subscription through it holds by then.
        self.lingering.retain(|&(_, _, old)| old.id != node);
        let keys: Vec<NodeId> = self
            .trees
            .iter()
            .filter(|(_, t)| t.is_neighbour(node))
            .map(|(&k, _)| k)
            .collect();
        for key in keys {
            let Some(t) = self.trees.get_mut(&key) else {
                continue;
            };
            t.children.remove(&node);
            if t.parent.is_some_and(|p| p.id == node) {
                t.parent = None;
                t.parent_capacity = 0;
                self.avoided.insert(key, node);
                // Once a beat at most: the next beat's root check attaches it otherwise.
                let recent = t
                    .attached_at
                    .is_some_and(|at| now.saturating_duration_since(at) < self.cfg.beat);
                if !recent {
                    self.attach(now, key, Some(node), false, router);
                }
            }
            self.prune(key);
        }
    }
}
