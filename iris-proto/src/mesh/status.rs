//! What the mesh tells of each peer the overlay keeps, for status pages and tools.

use super::Mesh;
use crate::overlay::NodeId;
use std::net::SocketAddr;
use std::time::Duration;

/// One peer the overlay keeps (leaf set or routing table), as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's overlay id.
    pub id: NodeId,
    /// The address it listens at.
    pub addr: SocketAddr,
    /// A neighbour on the ring (in the leaf set); otherwise a routing-table entry.
    pub leaf: bool,
    /// A link to it is up and the peer said who it is; otherwise the next message to it
    /// dials first.
    pub linked: bool,
    /// The round trip to it, smoothed, once measured.
    pub rtt: Option<Duration>,
    /// Messages sent to it and received from it over its current link.
    pub messages: (u64, u64),
    /// Bytes waiting in its link, not yet sealed for the socket.
    pub queued: usize,
}

impl Mesh {
    /// Every peer the overlay keeps, in id order: where it is, whether it is linked, its
    /// round trip and its link's traffic.
    pub fn peer_statuses(&self) -> Vec<PeerStatus> {
        let overlay = &self.overlay;
        let mut ids: Vec<NodeId> = overlay
            .leaves()
            .members()
            .chain(overlay.table().entries())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .filter_map(|id| {
                let addr = overlay.peer_addr(id)?;
                let link = self
                    .by_id
                    .get(&id)
                    .and_then(|l| self.links.get(l))
                    .map(|pl| &pl.link);
                Some(PeerStatus {
                    id,
                    addr,
                    leaf: overlay.leaves().contains(id),
                    linked: link.is_some(),
                    rtt: overlay.rtt(id),
                    messages: link.map_or((0, 0), |l| {
                        let s = l.stats();
                        (s.sent.0 + s.sent.1, s.received.0 + s.received.1)
                    }),
                    queued: link.map_or(0, |l| l.data_queued()),
                })
            })
            .collect()
    }
}
