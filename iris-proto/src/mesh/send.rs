//! The send path: a node message for a peer goes on its identified link, or waits for the
//! link being opened to it (which it dials if none is), in the queue its class says.

use super::events::MeshStats;
use super::wire::{self, PeerMsg};
use super::{Mesh, MeshOutput};
use crate::link::{Link, SendError};
use crate::overlay::{Contact, NodeId};
use crate::time::Instant;
use bytes::Bytes;

/// Which queue of a link a node message takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Small and urgent (tree maintenance, replies, window updates): ahead of all data, in
    /// the link's control queue, which refuses more when full.
    Control,
    /// Bulk (broadcasts, events): behind control, in the link's data queue, which refuses
    /// more when it holds `max_data_queue` bytes.
    Data,
    /// Requests, tunnel builds and large replies: data, but each goes ahead of bulk data
    /// once the data message in progress is out; refused past `max_data_queue` bytes of
    /// its own.
    Urgent,
    /// Tunnel data: like data, but never refused; every tunnel's window bounds it.
    Stream,
}

/// Why a node message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The peer's queue for this class is full (the link is slower than the traffic).
    Full,
    /// No link could take it: the node is leaving, too many links, or too many messages
    /// waiting for the peer's link to come up.
    NoLink,
}

/// Queues a message on a link in the queue its class says.
pub(super) fn put(link: &mut Link, class: Class, bytes: Bytes) -> Result<(), Refused> {
    let sent = match class {
        Class::Control => link.send_control(bytes),
        Class::Data => link.send_data(bytes),
        Class::Urgent => link.send_urgent(bytes),
        Class::Stream => link.send_data_unbounded(bytes),
    };
    sent.map_err(|e| match e {
        SendError::Full => Refused::Full,
        _ => Refused::NoLink,
    })
}

impl Mesh {
    /// Sends a node message to a peer: on its link, or once the link dialed for it is up.
    pub fn send(
        &mut self,
        now: Instant,
        to: Contact,
        class: Class,
        bytes: Bytes,
    ) -> Result<(), Refused> {
        // Control messages share their channel with IDENT and the overlay: tagged.
        let bytes = match class {
            Class::Control => wire::encode(&PeerMsg::Node(bytes)),
            Class::Data | Class::Urgent | Class::Stream => bytes,
        };
        self.send_as(now, to, class, bytes)
    }

    /// Opens a link to `to` unless one is up or on its way: for a message that will need it
    /// soon. Nothing waits on it; an unused link closes when idle, as any.
    pub fn reach(&mut self, now: Instant, to: Contact) {
        let linked = self
            .by_id
            .get(&to.id)
            .is_some_and(|id| self.links.get(id).is_some_and(|pl| !pl.silent));
        let dialing = self.dials.pending_for(to.id).is_some() && !self.dials.is_stale(to.id, now);
        let busy = linked || dialing || self.opening(to.id).is_some();
        if busy || self.leaving || to.addr == self.cfg.listen || !self.can_dial(now) {
            return;
        }
        let held = self.dials.supersede(to.id);
        self.dial(now, to.addr, Some(to.id), held, false);
    }

    /// A link that is up but whose peer has not yet said who it is, dialed to reach `id`:
    /// the smallest such, whatever the map's order.
    fn opening(&self, id: NodeId) -> Option<super::LinkId> {
        self.links
            .iter_unordered()
            .filter(|(_, pl)| pl.peer.is_none() && pl.expect == Some(id) && !pl.link.is_closed())
            .map(|(&l, _)| l)
            .min()
    }

    /// Keeps the link to `peer` however idle, until as many [`Mesh::unpin`]s.
    pub fn pin(&mut self, peer: NodeId) {
        *self.pinned.entry(peer).or_default() += 1;
    }

    /// Undoes one [`Mesh::pin`].
    pub fn unpin(&mut self, peer: NodeId) {
        if let Some(n) = self.pinned.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                self.pinned.remove(&peer);
            }
        }
    }

    /// Queues `bytes` for `to`: on its identified link, else held for the link being
    /// opened to it (dialed if none is). A link its peer was silent on until taken for
    /// dead is not trusted while a fresh one can be dialed: after a partition it is often
    /// half-open, its kernel's retries backed off for many seconds, while a fresh link
    /// goes through at once (and replaces it, `links.rs`).
    pub(super) fn send_as(
        &mut self,
        now: Instant,
        to: Contact,
        class: Class,
        bytes: Bytes,
    ) -> Result<(), Refused> {
        self.close_earlier_start(now, to);
        let trusted = self
            .by_id
            .get(&to.id)
            .filter(|id| self.links.get(id).is_some_and(|pl| !pl.silent))
            .copied();
        let redial = trusted.is_none() && !self.leaving && self.can_dial(now);
        if let Some(&id) = self
            .by_id
            .get(&to.id)
            .filter(|_| trusted.is_some() || !redial)
        {
            let pl = self.links.get_mut(&id).expect("by_id names live links");
            pl.last_used = now;
            let sent = put(&mut pl.link, class, bytes);
            self.mark(id);
            return sent.inspect_err(|e| match (class, e) {
                (Class::Data | Class::Urgent, _) => self.stats.data_refused += 1,
                // The sender keeps it for later (tree maintenance) or counts its own loss.
                (_, Refused::Full) => self.stats.control_refused += 1,
                _ => self.stats.messages_dropped += 1,
            });
        }
        if self.leaving {
            return Err(Refused::NoLink);
        }
        if to.addr == self.cfg.listen {
            // Stale: that node lived at this address before us. Its silence will tell the
            // overlay it is gone.
            self.stats.messages_dropped += 1;
            return Err(Refused::NoLink);
        }
        let max = self.cfg.max_pending;
        if self.dials.is_stale(to.id, now) && self.can_dial(now) {
            let mut held = self.dials.supersede(to.id);
            let queued = hold(
                &mut held,
                max,
                &mut self.stats,
                Waiting::new(class, bytes, now),
            );
            self.dial(now, to.addr, Some(to.id), held, false);
            return queued;
        }
        if let Some(pending) = self.dials.pending_for(to.id) {
            return hold(
                pending,
                max,
                &mut self.stats,
                Waiting::new(class, bytes, now),
            );
        }
        // A link that is up but whose peer has not yet said who it is may be the one.
        let opening = self.opening(to.id).and_then(|l| self.links.get_mut(&l));
        if let Some(pl) = opening {
            return hold(
                &mut pl.pending,
                max,
                &mut self.stats,
                Waiting::new(class, bytes, now),
            );
        }
        if !self.can_dial(now) {
            self.stats.messages_dropped += 1;
            return Err(Refused::NoLink);
        }
        self.dial(
            now,
            to.addr,
            Some(to.id),
            vec![Waiting::new(class, bytes, now)],
            false,
        );
        Ok(())
    }

    /// Closes the link to `to`'s id if it is to an earlier start of that node: its process
    /// is gone or going (stopped, or leaving and not yet closed), and what is sent there is
    /// lost; the later start is dialed at its address instead.
    fn close_earlier_start(&mut self, now: Instant, to: Contact) {
        if let Some(&id) = self.by_id.get(&to.id)
            && self
                .links
                .get(&id)
                .and_then(|pl| pl.peer)
                .is_some_and(|c| c.epoch < to.epoch)
        {
            self.stats.links_replaced += 1;
            self.close_link(now, id, super::links::EARLIER_START);
        }
    }

    /// Notes that a link may have frames to transmit.
    pub(super) fn mark(&mut self, id: super::LinkId) {
        if let Some(pl) = self.links.get_mut(&id)
            && !pl.queued
        {
            pl.queued = true;
            self.dirty.push_back(id);
        }
    }

    /// The next frame a link's socket may take, or the close of a link whose last frame
    /// is out. The driver is handed a link's frames only while less than [`BATCH`] is in
    /// flight, so that what is queued stays in the link, control ahead of data, until the
    /// socket can take it.
    pub(super) fn poll_transmit(&mut self) -> Option<MeshOutput> {
        while let Some(&id) = self.dirty.front() {
            let Some(pl) = self.links.get_mut(&id) else {
                self.dirty.pop_front(); // removed meanwhile
                continue;
            };
            if pl.inflight < BATCH
                && let Some(frame) = pl.link.poll_transmit()
            {
                pl.inflight += frame.len();
                return Some(MeshOutput::Transmit(id, frame));
            }
            self.dirty.pop_front();
            pl.queued = false;
            if pl.link.is_closed() && pl.inflight < BATCH {
                // Its last frame (the close) is out: the socket can go.
                self.remove_link(id);
                return Some(MeshOutput::Close(id));
            }
        }
        None
    }

    /// The driver wrote `n` bytes of a link's frames: it may be handed more.
    pub(super) fn on_flushed(&mut self, id: super::LinkId, n: usize) {
        if let Some(pl) = self.links.get_mut(&id) {
            pl.inflight = pl.inflight.saturating_sub(n);
            self.mark(id);
        }
    }
}

/// The most of a link's frames handed to the driver and not yet written.
const BATCH: usize = 256 << 10;

/// A message held for a link that is not up yet.
#[derive(Debug)]
pub(super) struct Waiting {
    pub(super) class: Class,
    pub(super) bytes: Bytes,
    /// Since when: a message that comes back undelivered says how long it waited, so that
    /// what had a deadline (a request's time left) is not passed on as if it had not.
    pub(super) since: Instant,
}

impl Waiting {
    /// Whether it is an overlay message (any peer may take those).
    pub(super) fn is_overlay(&self) -> bool {
        self.class == Class::Control
            && matches!(wire::decode_bytes(&self.bytes), Ok(PeerMsg::Overlay(..)))
    }

    fn new(class: Class, bytes: Bytes, since: Instant) -> Waiting {
        Waiting {
            class,
            bytes,
            since,
        }
    }
}

/// Holds a message for a link that is not up yet, if there is room.
fn hold(
    pending: &mut Vec<Waiting>,
    max: usize,
    stats: &mut MeshStats,
    msg: Waiting,
) -> Result<(), Refused> {
    if pending.len() < max {
        pending.push(msg);
        Ok(())
    } else {
        stats.messages_dropped += 1;
        Err(Refused::NoLink)
    }
}
