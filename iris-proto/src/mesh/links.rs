//! The link table: links opened and accepted, what each reports (its handshake, its peer's
//! IDENT, messages, closes), one identified link per peer, and closing them.

use super::events::Undelivered;
use super::events::{Incoming, MeshEvent, MeshOutput};
use super::send::{Class, Waiting, put};
use super::wire::{self, PeerMsg};
use super::{DialId, LinkId, Mesh, MeshTimer};
use crate::link::{Link, LinkError, LinkEvent, LinkInput, Role};
use crate::overlay::{Contact, NodeId, OverlayInput, OverlayMsg};
use crate::time::Instant;
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;

/// One link and what the mesh knows of it.
pub(super) struct PeerLink {
    pub(super) link: Link,
    dialed: bool,
    /// The address dialed, for links this node opened.
    addr: Option<SocketAddr>,
    /// Set by the peer's IDENT.
    pub(super) peer: Option<Contact>,
    /// Who we dialed this link to reach, if anyone in particular, until its peer says who
    /// it is.
    pub(super) expect: Option<NodeId>,
    /// Messages for `expect`, held until the peer identifies itself.
    pub(super) pending: Vec<Waiting>,
    /// Join the overlay through this peer once it identifies itself.
    join: bool,
    /// Broke the protocol: closing, and ignored meanwhile.
    bad: bool,
    /// Ended by an error or a cut rather than a close.
    failed: bool,
    /// This side closed it (it waits for the peer's CLOSE, up to `close_linger`).
    pub(super) closing: bool,
    /// The handshake deadline, until the link is up.
    deadline: Option<Instant>,
    /// In the `dirty` queue.
    pub(super) queued: bool,
    pub(super) last_used: Instant,
    /// Bytes handed to the driver and not yet reported written.
    pub(super) inflight: usize,
    /// Its peer stayed silent on it and was taken for dead, and nothing came on it since:
    /// a fresh link from that peer replaces it (see `keep_one_link`).
    pub(super) silent: bool,
}

/// The reason a link closed as a duplicate carries: its peer keeps another link.
const DUPLICATE: &str = "duplicate link";
/// The reason a link to an earlier start of a peer carries once a later start is known.
pub(super) const EARLIER_START: &str = "the node has started again since";

impl Mesh {
    /// The driver opened a connection: accepted (`dial` is `None`) or answering a dial.
    pub(super) fn on_connected(
        &mut self,
        now: Instant,
        id: LinkId,
        dial: Option<DialId>,
        from: Option<SocketAddr>,
    ) {
        let d = dial.and_then(|d| self.dials.take(d)).map(|(d, _)| d);
        // Anyone may connect to the peer listener: unauthenticated links are bounded too.
        if self.leaving || (d.is_none() && !self.room_for_link(now)) {
            self.stats.links_refused += 1;
            self.outputs.push_back(MeshOutput::Close(id));
            return;
        }
        if dial.is_none() && !self.admit_inbound(now, id, from.map(|a| a.ip())) {
            self.stats.handshakes_refused_per_addr += 1;
            self.outputs.push_back(MeshOutput::Close(id));
            return;
        }
        let role = if dial.is_some() {
            Role::Initiator
        } else {
            Role::Responder
        };
        let link = self.new_link(role, now);
        let addr = d.as_ref().map(|d| d.addr);
        let (expect, pending, join) =
            d.map_or((None, Vec::new(), false), |d| (d.expect, d.pending, d.join));
        let deadline = link.poll_timeout();
        if let Some(d) = deadline {
            self.timers.set(MeshTimer::Handshake(id), d);
        }
        self.links.insert(
            id,
            Box::new(PeerLink {
                link,
                dialed: dial.is_some(),
                addr,
                peer: None,
                expect,
                pending,
                join,
                bad: false,
                failed: false,
                closing: false,
                deadline,
                queued: false,
                last_used: now,
                inflight: 0,
                silent: false,
            }),
        );
        self.mark(id);
    }

    /// Bytes from a link's socket, in order.
    pub(super) fn on_data(&mut self, now: Instant, id: LinkId, data: &[u8]) {
        if let Some(pl) = self.links.get_mut(&id) {
            pl.silent = false;
        }
        self.feed_link(now, id, LinkInput::Bytes(data));
    }

    /// A link's lent read buffer, back with bytes from its socket.
    pub(super) fn on_read(&mut self, now: Instant, id: LinkId, buf: BytesMut) {
        if let Some(pl) = self.links.get_mut(&id) {
            pl.silent = false;
        }
        self.feed_link(now, id, LinkInput::Buf(buf));
    }

    /// Link `id`'s read buffer, lent to the driver to read into (see [`Link::lend_input`]);
    /// a fresh one for a link it does not know.
    pub fn lend_input(&mut self, id: LinkId, room: usize) -> BytesMut {
        match self.links.get_mut(&id) {
            Some(pl) => pl.link.lend_input(room),
            None => BytesMut::with_capacity(room),
        }
    }

    /// The signature a link asked for ([`MeshOutput::Sign`]).
    pub(super) fn on_signed(&mut self, now: Instant, id: LinkId, signature: &[u8]) {
        self.feed_link(now, id, LinkInput::Signed(signature));
    }

    /// A link's socket closed under us.
    pub(super) fn on_gone(&mut self, now: Instant, id: LinkId) {
        if let Some(pl) = self.links.get_mut(&id) {
            pl.link.handle(now, LinkInput::Eof);
            self.drain_link(now, id);
            self.remove_link(id);
            self.pump(now);
        }
    }

    /// A link's handshake ran out of time.
    pub(super) fn handshake_timeout(&mut self, now: Instant, id: LinkId) {
        if let Some(pl) = self.links.get_mut(&id) {
            pl.link.handle(now, LinkInput::Timeout);
        }
        self.drain_link(now, id);
    }

    /// A link whose side closed waited its time for the peer's CLOSE: it is over.
    pub(super) fn linger_over(&mut self, now: Instant, id: LinkId) {
        if let Some(pl) = self.links.get_mut(&id) {
            pl.link.abandon();
        }
        self.drain_link(now, id);
    }

    fn feed_link(&mut self, now: Instant, id: LinkId, input: LinkInput<'_>) {
        let Some(pl) = self.links.get_mut(&id) else {
            return;
        };
        pl.link.handle(now, input);
        self.drain_link(now, id);
        self.pump(now);
    }

    /// Handles what a link reports after it was fed.
    pub(super) fn drain_link(&mut self, now: Instant, id: LinkId) {
        loop {
            let Some(pl) = self.links.get_mut(&id) else {
                return;
            };
            let Some(event) = pl.link.poll_output() else {
                break;
            };
            if pl.bad && !matches!(event, LinkEvent::Closed(_)) {
                continue; // closing for a violation: nothing more it says counts
            }
            match event {
                LinkEvent::Sign(to_sign) => self.outputs.push_back(MeshOutput::Sign(id, to_sign)),
                LinkEvent::Established => self.on_established(now, id),
                LinkEvent::Control(bytes) => self.on_control(now, id, bytes),
                LinkEvent::Data(bytes) => self.on_link_data(now, id, bytes),
                LinkEvent::PeerClosed(reason) => self.on_peer_closed(now, id, reason),
                LinkEvent::Closed(e) => self.on_closed(now, id, e),
            }
        }
        self.mark(id);
    }

    /// The handshake is done: this node says who it is.
    fn on_established(&mut self, now: Instant, id: LinkId) {
        let me = self.overlay.contact();
        let Some(pl) = self.links.get_mut(&id) else {
            return;
        };
        if pl.deadline.take().is_some() {
            self.timers.cancel(MeshTimer::Handshake(id));
        }
        // A fresh link's queue is empty: this cannot fail.
        let ident = PeerMsg::Ident(super::one_way::stamp(now), me);
        let _ = pl.link.send_control(wire::encode(&ident));
    }

    fn on_control(&mut self, now: Instant, id: LinkId, bytes: Bytes) {
        let Some(pl) = self.links.get_mut(&id) else {
            return;
        };
        pl.last_used = now;
        match (wire::decode_bytes(&bytes), pl.peer) {
            (Ok(PeerMsg::Ident(clock, c)), None) => {
                self.clock_sample(now, c, clock);
                self.on_ident(now, id, c)
            }
            (Ok(PeerMsg::Overlay(clock, m)), Some(c)) => {
                self.clock_sample(now, c, clock);
                let farewell = matches!(m, OverlayMsg::Leave);
                self.overlay.handle(now, OverlayInput::Message(c, m));
                if farewell {
                    // Nothing more goes to a peer that left: what is queued for it still
                    // does (it passes that on), then our CLOSE.
                    self.close_link(now, id, "you left");
                }
            }
            (Ok(PeerMsg::Node(b)), Some(c)) => self.inbox.push_back(Incoming::Message(c, b)),
            (Ok(PeerMsg::Overlay(..) | PeerMsg::Node(_)), None) => {
                self.violation(id, "message before IDENT")
            }
            (Ok(PeerMsg::Ident(..)), Some(_)) => self.violation(id, "second IDENT"),
            (Err(_), _) => self.violation(id, "malformed peer message"),
        }
    }

    fn on_link_data(&mut self, now: Instant, id: LinkId, bytes: Bytes) {
        let Some(pl) = self.links.get_mut(&id) else {
            return;
        };
        pl.last_used = now;
        match pl.peer {
            Some(c) => self.inbox.push_back(Incoming::Message(c, bytes)),
            None => self.violation(id, "data before IDENT"),
        }
    }

    /// The peer closed its side: what is queued for it still goes out (it reads until our
    /// CLOSE), then ours.
    fn on_peer_closed(&mut self, now: Instant, id: LinkId, reason: String) {
        if self.leaving {
            // Its side is done; ours stays open for what we pass on, until every peer's
            // side is.
            return self.finish_leave_if_done(now);
        }
        let Some(pl) = self.links.get(&id) else {
            return;
        };
        if !pl.closing {
            let peer = pl.peer.map(|c| c.id);
            self.outputs
                .push_back(MeshOutput::Event(MeshEvent::LinkClosed {
                    link: id,
                    peer,
                    reason: format!("closed by peer: {reason:?}"),
                }));
        }
        if reason == DUPLICATE {
            // The peer keeps another link to us, which our side may not have identified
            // yet: the peer is not unlinked, so nothing that follows it (a tunnel, a tree)
            // may end. Its messages go by the other link once it is up (or a new one).
            if let Some(c) = pl.peer
                && self.by_id.get(&c.id) == Some(&id)
            {
                self.by_id.remove(&c.id);
            }
        }
        self.close_link(now, id, "closed");
    }

    /// The link is over.
    fn on_closed(&mut self, now: Instant, id: LinkId, e: LinkError) {
        let Some(pl) = self.links.get_mut(&id) else {
            return;
        };
        let closing = pl.closing;
        if closing {
            self.timers.cancel(MeshTimer::Linger(id));
        }
        let by_peer = matches!(e, LinkError::ClosedByPeer(_));
        if closing && by_peer {
            // The end of a close this side began: nothing to report.
            self.mark(id);
            return self.forget_peer_of(id);
        }
        if !by_peer {
            self.stats.links_failed += 1;
            pl.failed = true;
        }
        let event = if pl.deadline.is_some() {
            // Never established: the two ends are not one network.
            if let Some(a) = pl.addr.filter(|a| self.cfg.seeds.contains(a)) {
                self.dials.note_refusal(a, e.to_string());
            }
            MeshEvent::HandshakeFailed {
                link: id,
                addr: pl.addr,
                reason: e.to_string(),
            }
        } else {
            MeshEvent::LinkClosed {
                link: id,
                peer: pl.peer.map(|c| c.id),
                reason: e.to_string(),
            }
        };
        self.outputs.push_back(MeshOutput::Event(event));
        // Ended before its peer said who it is (refused: the node is leaving, full, or not
        // of this network): what was held for the node dialed goes back to be routed
        // another way, as when a dial fails.
        if pl.peer.is_none()
            && let Some(e) = pl.expect
            && !pl.pending.is_empty()
        {
            let pending = std::mem::take(&mut pl.pending);
            let returned = self.node_messages(now, pending);
            self.inbox.push_back(Incoming::Unreachable(e, returned));
        }
        // Let the driver write what is left (a close record) and close.
        self.mark(id);
        self.forget_peer_of(id);
    }

    /// The peer of link `id` said who it is: of two links to one peer, both ends keep the
    /// same one; what waited for the link goes out on it.
    fn on_ident(&mut self, now: Instant, id: LinkId, c: Contact) {
        if c.id == self.overlay.id() {
            // A stale contact led back here (a seed list naming this node, say): harmless.
            return self.close_link(now, id, "connected to itself");
        }
        let pl = self.links.get_mut(&id).expect("caller holds the link");
        pl.peer = Some(c);
        // Whom the link was dialed for is settled here, on this link, and then forgotten:
        // this link may be kept as the peer's for a long time, and later links to its
        // address, dialed for other stale contacts, are merged into it.
        let (addr, expected) = (pl.addr, pl.expect.take());
        let other = expected.filter(|&e| e != c.id);
        // What was held for a stale contact is not the answering node's, but for overlay
        // messages: a ping meant for a node gone from that address reaches the one there
        // now, which answers and is learned. After a partition, a node's graveyard pings
        // of the far side's dead nodes find its live ones so (the partition test's rings
        // took 13 s to be right again instead of 5 s when they were dropped).
        let held = match other {
            Some(_) => {
                let (overlay, node): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut pl.pending)
                    .into_iter()
                    .partition(Waiting::is_overlay);
                pl.pending = overlay;
                node
            }
            None => Vec::new(),
        };
        // A seed let us in: whatever others said, this node is not on its own.
        self.dials.clear_refusals();
        let keep = self.keep_one_link(now, id, c.id);
        self.stats.links_up += 1;
        self.outputs.push_back(MeshOutput::Event(MeshEvent::LinkUp {
            link: id,
            peer: c.id,
        }));
        self.inbox.push_back(Incoming::Linked(c.id));
        if let Some(e) = other {
            // Someone else lives at that address now: the node expected there is gone for
            // sure, and what was meant for it goes back to be routed another way.
            let returned = self.node_messages(now, held);
            self.inbox.push_back(Incoming::Unreachable(e, returned));
            self.overlay
                .handle(now, OverlayInput::Replaced { id: e, addr });
        }
        // A dial toward the peer may still be in flight, begun before this link came the
        // other way (after a partition heals, both ends dial): what waits for it goes out
        // on this link now, and the dial is no longer the peer's, so that its end, a
        // timeout seconds later, says nothing of a peer that is linked. Found by swarm
        // testing: such a timeout made the node take a linked tree child for
        // unreachable, let it go, and a multicast missed the child's members.
        let mut pending = self.dials.supersede(c.id);
        let pl = self.links.get_mut(&keep).expect("live");
        pending.append(&mut pl.pending);
        pl.last_used = now;
        let join = std::mem::take(&mut pl.join);
        for Waiting { class, bytes, .. } in pending {
            if put(&mut pl.link, class, bytes).is_err() {
                self.stats.messages_dropped += 1;
            }
        }
        self.mark(keep);
        if join {
            self.overlay.handle(now, OverlayInput::Join(c));
        }
    }

    /// Link `id` to `peer` is identified: if another one is, both ends keep the link dialed
    /// by the smaller id (the older one if the same node dialed both), so they agree
    /// without a word, and the other closes. Returns the one kept.
    ///
    /// Unless the other one is a link the peer was silent on until it was taken for dead:
    /// after a partition that one is often half-open (the peer's end is gone, nothing told
    /// ours), and the peer dials afresh because it has no link to us. Keeping the dead one
    /// by the rule would leave the peer cut off for good; the fresh one replaces it.
    fn keep_one_link(&mut self, now: Instant, id: LinkId, peer: NodeId) -> LinkId {
        let own = self.overlay.id();
        let dialer = |pl: &PeerLink| if pl.dialed { own } else { peer };
        let Some(&other) = self.by_id.get(&peer) else {
            self.by_id.insert(peer, id);
            return id;
        };
        let (mine, theirs) = (self.links.get(&id), self.links.get(&other));
        let (mine, theirs) = (mine.expect("live"), theirs.expect("live"));
        let start = |pl: &PeerLink| pl.peer.map_or(0, |c| c.epoch);
        if start(mine) != start(theirs) {
            // One link is to an earlier start of the peer: it restarted while a link to its
            // old process lingered (stopped, or leaving and not yet closed). The later
            // start's link is the peer's, whoever dialed: by the rule below the old one
            // could be kept and the new one closed, and everything for the peer went to a
            // process that was gone (found by swarm testing: a restarted node's asks for a
            // broadcast were answered for 50 s, into its old self's link). What the node
            // had with the earlier start ends with it (unlinked, then linked again).
            let newer = start(mine) > start(theirs);
            let (keep, drop) = if newer { (id, other) } else { (other, id) };
            self.by_id.insert(peer, keep);
            self.stats.links_replaced += 1;
            if newer {
                self.inbox.push_back(Incoming::Unlinked {
                    node: peer,
                    failed: false,
                });
            }
            self.close_link(now, drop, EARLIER_START);
            return keep;
        }
        if theirs.silent && !mine.silent {
            self.by_id.insert(peer, id);
            self.stats.links_replaced += 1;
            // Said as a duplicate: if the peer's end of the old link is alive after all, it
            // drops that link without taking this node for unlinked (its tunnels go on).
            self.close_link(now, other, DUPLICATE);
            return id;
        }
        let (keep, drop) = if dialer(mine) < dialer(theirs) {
            (id, other)
        } else {
            (other, id)
        };
        let moved = std::mem::take(&mut self.links.get_mut(&drop).expect("live").pending);
        self.links
            .get_mut(&keep)
            .expect("live")
            .pending
            .extend(moved);
        self.by_id.insert(peer, keep);
        self.stats.links_duplicate += 1;
        self.close_link(now, drop, DUPLICATE);
        keep
    }

    /// The node messages among messages that waited for a link, with how long each waited
    /// (overlay messages, only worth their moment, are dropped).
    pub(super) fn node_messages(
        &mut self,
        now: Instant,
        pending: Vec<Waiting>,
    ) -> Vec<Undelivered> {
        let mut out = Vec::new();
        for Waiting {
            class,
            bytes,
            since,
        } in pending
        {
            let waited = now.saturating_duration_since(since);
            // Control messages were tagged for the link: node messages are unwrapped.
            let bytes = match class {
                Class::Data | Class::Urgent | Class::Stream => bytes,
                Class::Control => match wire::decode_bytes(&bytes) {
                    Ok(PeerMsg::Node(b)) => b,
                    _ => {
                        self.stats.messages_dropped += 1;
                        continue;
                    }
                },
            };
            out.push(Undelivered { bytes, waited });
        }
        out
    }

    /// A peer broke the link protocol: the link closes at once, and nothing more it says
    /// counts.
    fn violation(&mut self, id: LinkId, why: &str) {
        self.stats.bad_messages += 1;
        let Some(pl) = self.links.get_mut(&id) else {
            return;
        };
        pl.bad = true;
        let peer = pl.peer.map(|c| c.id);
        pl.link.close_abruptly(why);
        self.outputs
            .push_back(MeshOutput::Event(MeshEvent::LinkClosed {
                link: id,
                peer,
                reason: why.to_string(),
            }));
        self.forget_peer_of(id);
        self.mark(id);
    }

    /// Closes this side of a link gracefully: nothing new is sent on it, what is queued
    /// goes out, then its CLOSE; it reads on until the peer's CLOSE (for `close_linger` at
    /// most), then the driver closes the socket.
    pub(super) fn close_link(&mut self, now: Instant, id: LinkId, why: &str) {
        self.forget_peer_of(id);
        if let Some(pl) = self.links.get_mut(&id) {
            self.stats.messages_dropped += pl.pending.len() as u64;
            pl.pending.clear();
            pl.link.close(why);
            if !pl.closing && !pl.link.is_closed() {
                pl.closing = true;
                self.timers
                    .set(MeshTimer::Linger(id), now + self.cfg.close_linger);
            }
            self.mark(id);
        }
    }

    /// Unmaps the link from its peer, so that new messages go elsewhere.
    fn forget_peer_of(&mut self, id: LinkId) {
        if let Some(c) = self.links.get(&id).and_then(|pl| pl.peer)
            && self.by_id.get(&c.id) == Some(&id)
        {
            self.by_id.remove(&c.id);
            let failed = self.links.get(&id).is_some_and(|pl| pl.failed || pl.bad);
            self.inbox
                .push_back(Incoming::Unlinked { node: c.id, failed });
        }
    }

    pub(super) fn remove_link(&mut self, id: LinkId) {
        self.forget_peer_of(id);
        if let Some(pl) = self.links.remove(&id) {
            self.stats.messages_dropped += pl.pending.len() as u64;
            self.stats.signatures_closed_links += pl.link.stats().signatures;
            if pl.deadline.is_some() {
                self.timers.cancel(MeshTimer::Handshake(id));
            }
            if pl.closing {
                self.timers.cancel(MeshTimer::Linger(id));
            }
        }
    }
}
