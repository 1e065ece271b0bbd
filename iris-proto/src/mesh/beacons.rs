//! Discovery beacons, as the mesh uses them (the beacons themselves and the judgement of
//! one heard are in `discovery.rs`): sent on a schedule and in answer, and a node of this
//! network heard and not known yet joined through.

use super::discovery::{self, Beacon};
use super::events::{MeshEvent, MeshOutput};
use super::{Mesh, MeshTimer};
use crate::time::Instant;
use std::net::SocketAddr;
use std::time::Duration;

/// Least time between two reports of forged beacons.
const FORGED_QUIET: Duration = Duration::from_secs(60);

impl Mesh {
    /// A datagram arrived on the discovery socket from `from`: maybe a beacon of a node of
    /// this network that this node does not know yet.
    pub(super) fn on_beacon(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let own = self.overlay.id();
        let peers = self.overlay.peer_count();
        let Some(d) = self.discovery.as_mut() else {
            return;
        };
        if self.leaving {
            return;
        }
        let overlay = &self.overlay;
        let verdict = match d.heard(now, from, data, own, peers, |id| {
            overlay.contact_of(id).is_some()
        }) {
            Ok(v) => v,
            Err(discovery::Ignored::Known) => return,
            Err(discovery::Ignored::Forged) => {
                self.stats.beacons_forged += 1;
                self.say_forged(now, from);
                return;
            }
            Err(discovery::Ignored::Replayed) => {
                self.stats.beacons_replayed += 1;
                return;
            }
            Err(discovery::Ignored::Garbage | discovery::Ignored::OtherNetwork) => {
                self.stats.beacons_foreign += 1;
                return;
            }
        };
        if verdict.answer {
            self.send_beacon(now, Some(from));
        }
        if let Some(addr) = verdict.join {
            self.stats.discovered += 1;
            if let Ok(b) = Beacon::decode(data) {
                self.outputs
                    .push_back(MeshOutput::Event(MeshEvent::Discovered {
                        peer: b.id,
                        addr,
                    }));
            }
            self.join_via(now, addr);
        }
    }

    /// Tells the owner of forged beacons, at the first and then at most once a minute.
    fn say_forged(&mut self, now: Instant, from: SocketAddr) {
        let (said_at, said) = self.forged_said;
        if said_at.is_some_and(|t| now.saturating_duration_since(t) < FORGED_QUIET) {
            return;
        }
        let count = self.stats.beacons_forged - said;
        self.forged_said = (Some(now), self.stats.beacons_forged);
        let e = MeshEvent::BeaconsForged { from, count };
        self.outputs.push_back(MeshOutput::Event(e));
    }

    /// Sends this node's beacon (`to` one address, or everywhere), and schedules the next
    /// round when it is the periodic one.
    pub(super) fn send_beacon(&mut self, now: Instant, to: Option<SocketAddr>) {
        let settled = self.overlay.peer_count() > 0 && self.overlay.is_converged();
        let own = self.overlay.contact();
        let peers = self.overlay.peer_count();
        let Some(d) = self.discovery.as_mut() else {
            return;
        };
        if self.leaving {
            return;
        }
        if to.is_none() {
            let next = d.next_after(now, settled);
            self.timers.set(MeshTimer::Beacon, next);
        }
        let data = d.beacon(own.id, own.epoch, self.cfg.listen, peers);
        self.stats.beacons_sent += 1;
        self.outputs.push_back(MeshOutput::Beacon { to, data });
    }
}
