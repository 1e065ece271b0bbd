//! The node's life: ready to serve, and a graceful shutdown that first drains the requests
//! in progress, then closes its clients and leaves its peers.

use super::router::call;
use super::{CloseReason, Node};
use crate::mesh::MeshInput;
use crate::relay::NodePacket;
use crate::time::Instant;

/// Where the node is in its life.
#[derive(Debug, Default)]
pub(super) struct Lifecycle {
    /// [`super::Event::Ready`] has been emitted.
    pub(super) ready: bool,
    /// Shutdown began: no new connections.
    pub(super) stopped: bool,
    /// Shutdown waits for the requests in progress (until `drain_until`).
    pub(super) draining: bool,
    drain_until: Option<Instant>,
    /// What the clients are told when shutdown closes them.
    closing_reason: String,
    /// Shutdown is done once what it set off is out: [`super::Event::Stopped`] goes last.
    pub(super) stopping: bool,
}

impl Lifecycle {
    /// When a drain stops waiting.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.drain_until
    }
}

impl Node {
    /// Deadlines: every part's that is due, in a fixed order.
    pub(super) fn on_timeout(&mut self) {
        let now = self.now;
        call!(self, |fx| self.sessions.handle_timeout(now, fx));
        call!(self, |fx| self.requests.handle_timeout(now, fx));
        call!(self, |fx| self.tunnels.handle_timeout(now, fx));
        self.with_trees(|t, v, rng, fx| t.handle_held_timeout(v, rng, fx));
        self.with_trees(|t, v, _, fx| t.handle_repair_timeout(v, fx));
        if let Some(n) = self.net.as_mut() {
            call!(self, |fx| n.casts.handle_timeout(now, fx));
        }
        if self.life.drain_until.is_some_and(|t| t <= now) {
            self.finish_shutdown();
        }
        if let Some(n) = self.net.as_mut()
            && n.mesh.poll_timeout().is_some_and(|t| t <= now)
        {
            n.mesh.handle(now, MeshInput::Timeout);
        }
        let draining = self.life.draining;
        self.with_trees(|t, v, _, _| t.handle_timeout(v, draining));
    }

    /// Stops taking connections and, while requests are in progress, waits for them (up
    /// to `shutdown_drain`, its members taking no new ones) before it closes its clients
    /// and leaves: a restart does not fail the work it was doing.
    pub(super) fn shutdown(&mut self, reason: &str) {
        if self.life.stopped {
            return;
        }
        self.life.stopped = true;
        self.life.closing_reason = reason.into();
        if self.requests.is_empty() || self.cfg.shutdown_drain.is_zero() {
            return self.finish_shutdown();
        }
        self.life.draining = true;
        self.with_trees(|t, v, _, _| t.stop_offering(v));
        self.life.drain_until = Some(self.now + self.cfg.shutdown_drain);
    }

    /// The rest of the shutdown: clients answered and closed, peers told. Reached once:
    /// from `shutdown`, or from a drain (which this ends, with its deadline).
    pub(super) fn finish_shutdown(&mut self) {
        self.life.draining = false;
        self.life.drain_until = None;
        let reason = std::mem::take(&mut self.life.closing_reason);
        // Every pending request gets its one REPLY before its connection closes.
        call!(self, |fx| self.requests.expire_all(fx));
        for conn in self.sessions.conns() {
            if self.sessions.is_active(conn) {
                let bye = NodePacket::Close {
                    reason: reason.as_str().into(),
                };
                self.sessions.send(conn, &bye);
            }
            self.close_client(conn, CloseReason::Shutdown);
        }
        // Multicasts waiting for credit leave before the links close; peers hear of the
        // leave before the driver sees Stopped (once settled).
        let now = self.now;
        if let Some(n) = self.net.as_mut() {
            call!(self, |fx| n.casts.flush(fx));
        }
        if let Some(n) = self.net.as_mut() {
            n.mesh.handle(now, MeshInput::Leave);
        }
        self.life.stopping = true;
    }
}
