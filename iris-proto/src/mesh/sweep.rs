//! The idle sweep: links nobody used for `link_idle` are closed (a third of it for peers
//! the overlay does not track), unless a tunnel keeps them ([`Mesh::pin`]); and what is
//! known of the clocks of peers unlinked and silent for long is forgotten.

use super::{LinkId, Mesh, MeshTimer};
use crate::time::Instant;

impl Mesh {
    /// Closes the links nobody used for `link_idle`, or for a third of it if the overlay
    /// does not track their peer, and schedules the next sweep.
    ///
    /// A peer the overlay tracks (a leaf, a table entry) is pinged at least every table
    /// period, and so is one that tracks this node: their links are never idle for long.
    /// A link to anyone else was opened for a join, a lookup's answer or a direct reply,
    /// and most are not used again; kept for the full `link_idle` they were a third of a
    /// large network's links (3000 simulated nodes: 41 of 143 links a node, idle 10 to 90 s).
    pub(super) fn sweep(&mut self, now: Instant) {
        let stranger_idle = self.cfg.link_idle / 3;
        self.timers
            .set(MeshTimer::Sweep, now + self.cfg.link_idle / 6);
        let mut idle: Vec<LinkId> = self
            .links
            .iter_unordered()
            .filter(|(_, pl)| {
                let tracked = pl
                    .peer
                    .is_none_or(|c| self.overlay.peer_addr(c.id).is_some());
                let limit = if tracked {
                    self.cfg.link_idle
                } else {
                    stranger_idle
                };
                now.saturating_duration_since(pl.last_used) >= limit
            })
            .filter(|(_, pl)| !pl.peer.is_some_and(|c| self.pinned.contains_key(&c.id)))
            .map(|(&id, _)| id)
            .collect();
        idle.sort_unstable();
        for id in idle {
            self.stats.links_idle += 1;
            self.close_link(now, id, "idle");
        }
        for peer in self.clocks.keys_sorted() {
            let stale = self.clocks.get(&peer).is_some_and(|(_, c)| c.is_stale(now));
            if stale && !self.by_id.contains_key(&peer) {
                self.clocks.remove(&peer);
            }
        }
    }
}
