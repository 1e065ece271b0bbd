//! The router: carries out what the parts ask of each other.
//!
//! Every call into a part goes through [`call!`] (or [`Node::with_trees`]): the part pushes
//! effects on the router's queue, and the router routes them before the next step, depth
//! first and each in the order pushed, so an effect happens exactly where the call it
//! stands for would have. Then, once an input is handled, [`Node::settle`] runs the one
//! router loop: it takes the parts' pending work, most urgent first (news from the mesh,
//! held messages a move may release, tree messages, cuts and the memory policy, producers
//! to try again, the end of a drained shutdown), until none is left, and hands the driver
//! what the sockets may take.

use super::effect::{Effect, Refusal, Start};
use super::tether;
use super::trees::{Trees, View};
use super::{CloseReason, ConnId, Event, Node, Output};
use crate::mesh::MeshOutput;
use crate::relay::Name;
use rand::rngs::ChaCha8Rng;

/// Calls a part with the router's queue (`|fx| expr`), then routes what it pushed.
macro_rules! call {
    ($node:ident, |$fx:ident| $body:expr) => {{
        let mark = $node.fx.len();
        let $fx = &mut $node.fx;
        let r = $body;
        $node.route_from(mark);
        r
    }};
}
pub(super) use call;

impl Node {
    /// Routes the effects pushed since `mark`, depth first, each in the order pushed.
    pub(super) fn route_from(&mut self, mark: usize) {
        self.fx.settle_order(mark);
        while let Some(effect) = self.fx.pop_above(mark) {
            let inner = self.fx.len();
            self.dispatch(effect);
            self.fx.settle_order(inner);
        }
    }

    /// Calls the trees with a view of the rest of the node (the overlay, capacities, the
    /// node's state), then routes what they pushed. Nothing for a lone node.
    pub(super) fn with_trees(
        &mut self,
        f: impl FnOnce(&mut Trees, &View<'_>, &mut ChaCha8Rng, &mut super::effect::Effects),
    ) {
        let mark = self.fx.len();
        let Node {
            net,
            groups,
            sessions,
            requests,
            rng,
            fx,
            now,
            life,
            ..
        } = self;
        let Some(net) = net.as_mut() else {
            return;
        };
        let capacity = |cluster: &Name| super::relay::capacity(groups, sessions, requests, cluster);
        let free =
            |cluster: &Name| super::relay::free_capacity(groups, sessions, requests, cluster);
        let v = View {
            now: *now,
            overlay: net.mesh.overlay(),
            mesh: &net.mesh,
            capacity: &capacity,
            free: &free,
            stopped: life.stopped,
        };
        f(&mut net.trees, &v, rng, fx);
        self.route_from(mark);
    }

    /// Carries out one effect.
    fn dispatch(&mut self, effect: Effect) {
        let now = self.now;
        match effect {
            Effect::Send(conn, packet) => self.sessions.send(conn, &packet),
            Effect::SendExpiring(conn, packet, at) => {
                self.sessions.send_expiring(conn, &packet, at)
            }
            Effect::Violation(conn, what) => {
                call!(self, |fx| self.sessions.violation(conn, what, fx))
            }
            Effect::Cut(conn, why) => call!(self, |fx| self.sessions.cut(conn, why, fx)),
            Effect::Charge(n) => self.sessions.charge(n),
            Effect::Release(n) => self.sessions.release(n),
            Effect::Wake(conn) => self.sessions.wake(conn),
            Effect::Retry(conn) => self.retry_producer(conn),
            Effect::ReadOn(conn) => self.process(conn),
            Effect::Registered(conn, cluster) => {
                call!(self, |fx| self.groups.handle_registered(conn, cluster, fx))
            }
            Effect::Closed {
                conn,
                held_for_network,
            } => self.forget_client(conn, held_for_network),
            Effect::Decongested(conn) => {
                call!(self, |fx| self.tunnels.handle_decongested(conn, fx))
            }
            Effect::GroupChanged(group, present) => {
                self.with_trees(|t, v, _, _| t.handle_group_changed(v, group, present))
            }
            Effect::Reroute(bytes) => self.with_trees(|t, v, rng, fx| {
                t.reroute(v, rng, (&bytes, None), std::time::Duration::ZERO, fx)
            }),
            Effect::CastTo(to, group, bytes, child) => {
                if let Some(net) = self.net.as_mut() {
                    call!(self, |fx| net.casts.send_cast(to, &group, bytes, child, fx));
                }
            }
            Effect::Deliver(group, payload) => self.deliver(&group, payload),
            Effect::Landed(a) => self.landed(a),
            Effect::ToPeer {
                to,
                class,
                bytes,
                refused,
            } => self.send_to_peer(to, class, bytes, refused),
            Effect::Reach(peer) => {
                if let Some(n) = self.net.as_mut() {
                    n.mesh.reach(now, peer);
                }
            }
            Effect::Pin(node) => {
                if let Some(n) = self.net.as_mut() {
                    n.mesh.pin(node);
                }
            }
            Effect::Unpin(node) => {
                if let Some(n) = self.net.as_mut() {
                    n.mesh.unpin(node);
                }
            }
            Effect::Pump(key, side) => self.pump(key, side),
            Effect::News(news) => self.on_news(news),
            Effect::ReleaseHeld => self.with_trees(|t, v, rng, fx| t.release_held(v, rng, fx)),
            Effect::Drained => self.finish_shutdown(),
        }
    }

    /// A node message for a peer: on its link, or kept for later (tree maintenance), or
    /// refused (what that means is the sending part's: `refused`).
    fn send_to_peer(
        &mut self,
        to: crate::overlay::Contact,
        class: crate::mesh::Class,
        bytes: bytes::Bytes,
        refused: Refusal,
    ) {
        let now = self.now;
        let Some(n) = self.net.as_mut() else {
            return self.refused(refused);
        };
        n.trees.sent(bytes.len());
        if let Refusal::Defer = refused {
            let mesh = &mut n.mesh;
            return n
                .trees
                .send_or_defer(to, bytes, |to, b| mesh.send(now, to, class, b));
        }
        if n.mesh.send(now, to, class, bytes).is_err() {
            self.refused(refused);
        }
    }

    /// A message no link took: what that means for the part that sent it.
    fn refused(&mut self, refused: Refusal) {
        match refused {
            Refusal::Ignore | Refusal::Defer => {}
            Refusal::Cast { to, group, len } => {
                if let Some(n) = self.net.as_mut() {
                    n.casts.refused(to, group, len);
                }
            }
            Refusal::Credit { to, group, bytes } => {
                if let Some(n) = self.net.as_mut() {
                    n.casts.credit_refused(to, group, bytes);
                }
            }
            Refusal::Untether { to, group } => {
                if let Some(n) = self.net.as_mut() {
                    n.casts.untether_refused(to, group);
                }
            }
            Refusal::Anycast(start) => {
                if let Some(n) = self.net.as_mut() {
                    n.trees.anycast_refused();
                }
                match start {
                    Some(Start::Request(key)) => call!(self, |fx| self.requests.refused(key, fx)),
                    Some(Start::Build(key)) => {
                        call!(self, |fx| self.tunnels.handle_refused(key, fx))
                    }
                    None => {}
                }
            }
            Refusal::Reply(_) => self.requests.reply_refused(),
        }
    }

    /// A client connection is gone: every part forgets it.
    fn forget_client(&mut self, conn: ConnId, held_for_network: bool) {
        if held_for_network && let Some(n) = self.net.as_mut() {
            n.casts.unhold(conn);
        }
        call!(self, |fx| self.groups.handle_closed(conn, fx));
        self.requests.handle_closed(conn);
        call!(self, |fx| self.tunnels.handle_closed(conn, fx));
    }

    /// Runs everything the input set off to completion (the one router loop), then hands
    /// the driver what its sockets may take.
    pub(super) fn settle(&mut self) {
        while let Some(effect) = self.next_effect() {
            let mark = self.fx.len();
            self.fx.push(effect);
            self.route_from(mark);
        }
        if let Some(n) = self.net.as_mut() {
            let (sessions, groups, scribe) = (&self.sessions, &self.groups, n.trees.scribe());
            let congested = |c| sessions.is_congested(c);
            let holds = |c, g: &_, from| {
                tether::holds_back(sessions, groups, Some(scribe), c, g, Some(from))
            };
            call!(self, |fx| n.casts.return_credit(congested, holds, fx));
        }
        self.sessions.tell_pauses();
        self.sessions.transmit(self.now);
        while let Some(o) = self.sessions.poll_output() {
            self.outputs.push_back(o);
        }
        if let Some(n) = self.net.as_mut() {
            let (mesh, now) = (&mut n.mesh, self.now);
            n.trees
                .retry_deferred(|to, b| mesh.send(now, to, crate::mesh::Class::Control, b));
        }
        self.drain_mesh();
        self.report_full_trees();
        if std::mem::take(&mut self.life.stopping) {
            self.outputs.push_back(Output::Event(Event::Stopped));
        }
    }

    /// The parts' pending work, most urgent first.
    fn next_effect(&mut self) -> Option<Effect> {
        if let Some(n) = self.net.as_mut() {
            if let Some(news) = n.mesh.poll_incoming() {
                return Some(Effect::News(news));
            }
            if n.trees.poll_moved() {
                return Some(Effect::ReleaseHeld);
            }
            if let Some(send) = n.trees.poll_send() {
                return Some(send);
            }
        }
        if let Some(e) = self.sessions.poll_effect(self.now) {
            return Some(e);
        }
        // A shutdown that waited for the requests in progress goes on once they are done.
        (self.life.draining && self.requests.is_empty()).then_some(Effect::Drained)
    }

    /// Says what was dropped, and when trees were refused (for `max_trees` or memory):
    /// never a silent loss or refusal. And charges the trees' memory to the budget.
    fn report_full_trees(&mut self) {
        let Some(n) = self.net.as_mut() else {
            return;
        };
        let losses = n
            .trees
            .losses
            .take()
            .into_iter()
            .chain(n.casts.losses.take())
            .chain(self.requests.losses.take());
        for (reason, what, count) in losses {
            self.outputs.push_back(Output::Event(Event::Dropped {
                reason,
                what,
                count,
            }));
        }
        if let Some(r) = n.trees.take_full() {
            let scribe = n.trees.scribe();
            self.outputs.push_back(Output::Event(Event::TreesFull {
                group: r.group.to_string(),
                refused: r.count,
                max_trees: scribe.config().max_trees,
                memory: r.memory.then(|| scribe.max_bytes()),
            }));
        }
        // Tree state, and tree messages waiting for room on their links, count against the
        // memory budget beside what clients hold.
        self.sessions.set_group_bytes(n.trees.memory_bytes());
    }

    /// Moves the mesh's outputs to the node's, noting convergence.
    fn drain_mesh(&mut self) {
        let Some(n) = self.net.as_mut() else {
            return;
        };
        // A node its seeds refused must not pass for a network of one: it stays unready
        // (relay port closed) and keeps retrying, loudly.
        let refused = n.mesh.refused_by_seeds();
        while let Some(out) = n.mesh.poll_output() {
            let out = match out {
                MeshOutput::Dial(d, addr) => Output::Dial(d, addr),
                MeshOutput::Transmit(l, b) => Output::PeerTransmit(l, b),
                MeshOutput::Close(l) => Output::PeerClose(l),
                MeshOutput::Beacon { to, data } => Output::Beacon { to, data },
                MeshOutput::Sign(l, s) => Output::Sign(l, s),
                MeshOutput::Event(e) => {
                    let converged = matches!(e, crate::mesh::MeshEvent::Converged { .. });
                    if converged {
                        n.trees.handle_converged(self.now);
                    }
                    self.outputs.push_back(Output::Event(Event::Mesh(e)));
                    if converged && !self.life.ready && !refused {
                        self.life.ready = true;
                        self.outputs.push_back(Output::Event(Event::Ready));
                    }
                    continue;
                }
            };
            self.outputs.push_back(out);
        }
    }

    /// Closes a client connection (every part forgets it).
    pub(super) fn close_client(&mut self, conn: ConnId, reason: CloseReason) {
        call!(self, |fx| self.sessions.close(conn, reason, fx));
    }
}
