//! Leaving the overlay for good: peers are told, and repair at once.
//!
//! The node does not vanish with its farewells: what its peers sent it before they heard of
//! the leave is still on its way, and it passes that on (it is no message's destination any
//! more) until every peer has closed its side of their link, which each does on reading the
//! farewell, or `close_linger` has passed. Then it closes its own sides. Dials in flight
//! and links not yet identified are not waited for.
//!
//! A peer's last message often comes in the same read as its close: the node has not
//! passed it on yet when the last side closes, and closing ours at once would leave it no
//! link to pass it on by (a request was lost so in a rolling restart). So the sides close
//! only once the node has taken everything the mesh had for it, on the next timeout.

use super::{Mesh, MeshTimer};
use crate::overlay::OverlayInput;
use crate::time::Instant;

impl Mesh {
    /// Says farewell on every link and waits for the peers to close their sides.
    pub(super) fn leave(&mut self, now: Instant) {
        if self.leaving {
            return;
        }
        self.leaving = true;
        self.overlay.handle(now, OverlayInput::Leave);
        self.pump(now);
        for id in self.sorted_links() {
            if self.links.get(&id).is_some_and(|pl| pl.peer.is_none()) {
                self.close_link(now, id, "leaving");
            }
        }
        self.timers
            .set(MeshTimer::Left, now + self.cfg.close_linger);
        self.finish_leave_if_done(now);
    }

    /// A leaving node's peers have all closed their sides: nothing more is coming, and
    /// its own sides close (at once, or when they have nothing more to send), unless the
    /// node has yet to pass on what came last (then on the next timeout, right away).
    pub(super) fn finish_leave_if_done(&mut self, now: Instant) {
        if !self.leaving || self.waiting_for_peers() {
            return;
        }
        if self.inbox.is_empty() {
            self.close_own_sides(now);
        } else {
            self.timers.set(MeshTimer::Passed, now);
        }
    }

    /// The node has passed on what the last peers sent: the leave is done.
    pub(super) fn passed_timeout(&mut self, now: Instant) {
        if self.leaving && !self.waiting_for_peers() {
            self.close_own_sides(now);
        }
    }

    /// Whether a peer has yet to close its side.
    fn waiting_for_peers(&self) -> bool {
        self.links
            .iter_unordered()
            .any(|(_, pl)| pl.peer.is_some() && !pl.closing && !pl.link.is_peer_closed())
    }

    fn close_own_sides(&mut self, now: Instant) {
        self.timers.cancel(MeshTimer::Left);
        for id in self.sorted_links() {
            self.close_link(now, id, "left");
        }
    }

    /// Peers that did not close in time are not waited for any longer.
    pub(super) fn left_timeout(&mut self) {
        for id in self.sorted_links() {
            if let Some(pl) = self.links.get_mut(&id) {
                pl.link.close_abruptly("left");
            }
            self.mark(id);
        }
    }
}
