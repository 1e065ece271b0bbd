//! The idle sweep: links nobody used for `link_idle` are closed (peers probed once and not
//! kept), unless a tunnel keeps them ([`Mesh::pin`]); and what is known of the clocks of
//! peers unlinked and silent for long is forgotten.

use super::{LinkId, Mesh, MeshTimer};
use crate::time::Instant;

impl Mesh {
    /// Closes the links nobody used for `link_idle`, and schedules the next sweep.
    pub(super) fn sweep(&mut self, now: Instant) {
        self.timers
            .set(MeshTimer::Sweep, now + self.cfg.link_idle / 2);
        let mut idle: Vec<LinkId> = self
            .links
            .iter_unordered()
            .filter(|(_, pl)| now.saturating_duration_since(pl.last_used) >= self.cfg.link_idle)
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
