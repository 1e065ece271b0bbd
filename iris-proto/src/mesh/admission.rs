//! Admission of inbound links: anyone can connect to the peer port and say nothing, so
//! links still in their handshake are bounded in all (the oldest is closed for a newer one:
//! a genuine handshake takes milliseconds, so it completes before it is oldest) and per
//! source address (beyond its share an address's new connections are refused at once,
//! before any key work).

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
