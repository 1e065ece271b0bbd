//! Admission of links. Anyone can connect to the peer port and say nothing, so links still
//! in their handshake are bounded in all (the oldest is closed for a newer one: a genuine
//! handshake takes milliseconds, so it completes before it is oldest) and per source
//! address (beyond its share an address's new connections are refused at once, before any
//! key work). All links together are bounded by `max_links`: at the bound, the least
//! recently used link that no route and no tunnel needs makes room (a probe answered once,
//! a peer a table no longer holds), so that a node many others talk to (an early node of a
//! large network, a seed) does not turn joiners away while it holds idle links.

use super::{LinkId, Mesh};
use crate::time::Instant;
use std::collections::VecDeque;
use std::net::IpAddr;

/// Inbound links in their handshake, oldest first (some may be open or gone since).
#[derive(Debug, Default)]
pub(super) struct Admission {
    handshaking: VecDeque<(LinkId, Option<IpAddr>)>,
}

impl Mesh {
    /// Room for one more link or dial under `max_links`, made if need be by closing the
    /// least recently used link nobody needs; false if every link is needed.
    pub(super) fn room_for_link(&mut self, now: Instant) -> bool {
        let max = self.cfg.max_links;
        let total = self.links.len() + self.dials.len();
        if total < max {
            return true;
        }
        // Links closing wait only for their peer's CLOSE (at most `close_linger`): they
        // count up to as many again.
        let closing = self
            .links
            .iter_unordered()
            .filter(|(_, pl)| pl.closing || pl.link.is_closed())
            .count();
        if total - closing < max && total < 2 * max {
            return true;
        }
        if total >= 2 * max {
            return false;
        }
        let pinned = &self.pinned;
        let overlay = &self.overlay;
        // The least recently used (then the smallest id: whatever the map's order).
        let victim = self
            .links
            .iter_unordered()
            .filter(|(_, pl)| !pl.closing && !pl.link.is_closed())
            .filter(|(_, pl)| {
                pl.peer.is_some_and(|c| {
                    !pinned.contains_key(&c.id) && overlay.contact_of(c.id).is_none()
                })
            })
            .min_by_key(|&(&id, pl)| (pl.last_used, id))
            .map(|(&id, _)| id);
        let Some(id) = victim else {
            return false;
        };
        self.stats.links_evicted += 1;
        self.close_link(now, id, "room for another link");
        true
    }

    /// Makes room for inbound link `id` (from `ip`, if known) among those in their
    /// handshake: `false` if its address already has its share in flight (the link is to
    /// be refused); past the overall bound, the oldest still handshaking is closed.
    pub(super) fn admit_inbound(&mut self, now: Instant, id: LinkId, ip: Option<IpAddr>) -> bool {
        let links = &self.links;
        self.admission.handshaking.retain(|(l, _)| {
            links
                .get(l)
                .is_some_and(|pl| !pl.link.is_open() && !pl.link.is_closed())
        });
        if let Some(ip) = ip {
            let same = self
                .admission
                .handshaking
                .iter()
                .filter(|(_, from)| *from == Some(ip))
                .count();
            if same >= self.cfg.max_inbound_handshakes_per_addr {
                return false;
            }
        }
        while self.admission.handshaking.len() >= self.cfg.max_inbound_handshakes {
            let Some((oldest, _)) = self.admission.handshaking.pop_front() else {
                break;
            };
            self.stats.handshakes_evicted += 1;
            self.close_link(now, oldest, "handshake evicted by a newer one");
        }
        self.admission.handshaking.push_back((id, ip));
        true
    }
}
