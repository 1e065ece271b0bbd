//! A bare mesh and the test's own ends of links to it, through the mesh's own inputs and
//! outputs: what it tells its node (`poll_incoming`) can be looked at, and races a whole
//! node would hide can be staged message by message.

use super::tests::{addr, mesh_config, plain_end};
use super::wire::{self, PeerMsg};
use super::*;
use crate::link::{Link, LinkEvent, LinkInput, Role};
use crate::overlay::OverlayMsg;
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::Duration;

/// A bare mesh and the test's own ends of links to it: only the mesh's own inputs and
/// outputs, so what it tells its node (`poll_incoming`) can be looked at.
struct Bare {
    mesh: Mesh,
    now: Instant,
}

impl Bare {
    fn new() -> Bare {
        let now = Instant::ZERO;
        let mesh = Mesh::new(mesh_config(0, &[]), Security::Plain, [1; 32], now);
        Bare { mesh, now }
    }

    /// Carries the mesh's transmissions on `link` to `ours`.
    fn carry_out(&mut self, link: LinkId, ours: &mut Link) {
        let mut rest = VecDeque::new();
        while let Some(out) = self.mesh.poll_output() {
            match out {
                MeshOutput::Transmit(l, bytes) if l == link => {
                    ours.handle(self.now, LinkInput::Bytes(&bytes));
                }
                other => rest.push_back(other),
            }
        }
        self.mesh.outputs.extend(rest);
    }

    fn carry_in(&mut self, link: LinkId, ours: &mut Link) {
        while let Some(frame) = ours.poll_transmit() {
            self.mesh.handle(self.now, MeshInput::Data(link, &frame));
        }
        self.carry_out(link, ours);
    }

    /// An inbound link, open (IDENT not sent yet).
    fn open(&mut self, link: LinkId) -> Link {
        self.mesh.handle(
            self.now,
            MeshInput::Connected {
                link,
                dial: None,
                from: None,
            },
        );
        let mut ours = plain_end(Role::Initiator, self.now);
        self.carry_in(link, &mut ours);
        self.carry_in(link, &mut ours);
        assert_eq!(ours.poll_output(), Some(LinkEvent::Established));
        ours
    }

    /// The dials the mesh asked for since last asked.
    fn dials(&mut self) -> Vec<DialId> {
        let mut dials = Vec::new();
        let mut rest = VecDeque::new();
        while let Some(out) = self.mesh.poll_output() {
            match out {
                MeshOutput::Dial(d, _) => dials.push(d),
                other => rest.push_back(other),
            }
        }
        self.mesh.outputs.extend(rest);
        dials
    }

    /// The link of `dial`, up: the test's end, answering at the address dialed.
    fn connect(&mut self, link: LinkId, dial: DialId) -> Link {
        self.mesh.handle(
            self.now,
            MeshInput::Connected {
                link,
                dial: Some(dial),
                from: None,
            },
        );
        let mut ours = plain_end(Role::Responder, self.now);
        for _ in 0..3 {
            self.carry_out(link, &mut ours);
            self.carry_in(link, &mut ours);
        }
        assert_eq!(ours.poll_output(), Some(LinkEvent::Established));
        ours
    }

    /// The link the mesh dialed last (`reach` or `send` asked for it), up.
    fn answer_dial(&mut self, link: LinkId) -> Link {
        let dial = *self.dials().last().expect("the mesh dialed");
        self.connect(link, dial)
    }

    /// The data messages the mesh sends on the link of `dial` once `peer` answers it and
    /// says who it is.
    fn data_through(
        &mut self,
        link: LinkId,
        dial: DialId,
        peer: crate::overlay::Contact,
    ) -> Vec<Bytes> {
        let mut ours = self.connect(link, dial);
        self.ident(link, &mut ours, peer);
        self.carry_out(link, &mut ours);
        data(&mut ours)
    }

    /// The peer at the test's end `ours` of `link` says who it is.
    fn ident(&mut self, link: LinkId, ours: &mut Link, peer: crate::overlay::Contact) {
        ours.send_control(wire::encode(&PeerMsg::Ident(0, peer)))
            .unwrap();
        self.carry_in(link, ours);
    }

    fn incoming(&mut self) -> Vec<Incoming> {
        std::iter::from_fn(|| self.mesh.poll_incoming()).collect()
    }
}

/// The data messages that reached the test's end `ours` of a link.
fn data(ours: &mut Link) -> Vec<Bytes> {
    std::iter::from_fn(|| ours.poll_output())
        .filter_map(|e| match e {
            LinkEvent::Data(b) => Some(b),
            _ => None,
        })
        .collect()
}

/// Found in a rolling restart on real processes (a request lost, the leaving node warning
/// "its next hop took nothing"): a peer's last message came in the same read as its close,
/// the last close the leaving node waited for, and the node closed its own sides before it
/// had passed the message on.
#[test]
fn a_leaving_node_passes_on_what_came_with_its_last_peers_close() {
    let mut m = Bare::new();
    let (p, q) = (
        crate::overlay::Contact::new(NodeId(42), addr(9), 1),
        crate::overlay::Contact::new(NodeId(43), addr(10), 1),
    );
    let (lp, lq) = (LinkId(1), LinkId(2));
    let mut from_p = m.open(lp);
    m.ident(lp, &mut from_p, p);
    let mut from_q = m.open(lq);
    m.ident(lq, &mut from_q, q);
    m.incoming();
    m.mesh.handle(m.now, MeshInput::Leave);
    // q read the farewell and closed its side.
    from_q.close("you left");
    m.carry_in(lq, &mut from_q);
    // p sent a request for q's side before it read the farewell, then its close: one read.
    from_p.send_urgent(Bytes::from_static(b"for q")).unwrap();
    from_p.close("you left");
    let read: Vec<u8> = std::iter::from_fn(|| from_p.poll_transmit())
        .flat_map(|b| b.to_vec())
        .collect();
    m.mesh.handle(m.now, MeshInput::Data(lp, &read));
    let got: Vec<Bytes> = m
        .incoming()
        .into_iter()
        .filter_map(|i| match i {
            Incoming::Message(c, b) if c == p => Some(b),
            _ => None,
        })
        .collect();
    assert_eq!(got, [Bytes::from_static(b"for q")]);
    // The node passes it on: q's side still takes it, and q reads it before our CLOSE.
    m.mesh
        .send(m.now, q, Class::Urgent, got[0].clone())
        .expect("the leaving node's link to q is still open");
    m.carry_out(lq, &mut from_q);
    let events: Vec<LinkEvent> = std::iter::from_fn(|| from_q.poll_output()).collect();
    assert!(
        events.contains(&LinkEvent::Data(Bytes::from_static(b"for q"))),
        "{events:?}"
    );
    // Then the leave is done: every side closes.
    let due = m.mesh.poll_timeout().expect("the close is due");
    assert_eq!(due, m.now, "right away");
    m.mesh.handle(m.now, MeshInput::Timeout);
    m.carry_out(lp, &mut from_p);
    m.carry_out(lq, &mut from_q);
    assert_eq!(m.mesh.link_count(), 0, "the leaver closed its links");
}

#[test]
fn a_link_its_peer_closed_as_a_duplicate_does_not_unlink_the_peer() {
    for (reason, unlinked) in [("duplicate link", false), ("idle", true)] {
        let mut m = Bare::new();
        let peer = crate::overlay::Contact::new(NodeId(42), addr(9), 1);
        let (l1, l2) = (LinkId(1), LinkId(2));
        let mut first = m.open(l1);
        m.ident(l1, &mut first, peer);
        assert!(m.mesh.is_linked(NodeId(42)));
        // The peer's second link is up, its IDENT not here yet, when the peer keeps it
        // and closes the first.
        let mut second = m.open(l2);
        m.incoming();
        first.close(reason);
        m.carry_in(l1, &mut first);
        let lost = m
            .incoming()
            .iter()
            .any(|i| matches!(i, Incoming::Unlinked { node, .. } if *node == NodeId(42)));
        assert_eq!(lost, unlinked, "closed as {reason:?}");
        // The second link's IDENT: linked again.
        m.ident(l2, &mut second, peer);
        assert!(m.mesh.is_linked(NodeId(42)), "closed as {reason:?}");
    }
}

#[test]
fn a_peers_clock_is_remembered_across_its_links_and_forgotten_when_it_restarts() {
    let mut m = Bare::new();
    let ms = |t: u64| Instant::from_nanos(t * 1_000_000);
    // The peer's clock reads 5000 ms more than ours; its trips here take no time.
    let ident = |epoch, stamp| {
        let peer = crate::overlay::Contact::new(NodeId(42), addr(9), epoch);
        wire::encode(&PeerMsg::Ident(stamp, peer))
    };
    let mut first = m.open(LinkId(1));
    first.send_control(ident(1, 5_000)).unwrap();
    m.carry_in(LinkId(1), &mut first);
    first.close("idle");
    m.carry_in(LinkId(1), &mut first);
    assert!(!m.mesh.is_linked(NodeId(42)));
    // Ten seconds on, a new link whose IDENT was held up 3 s on the way (as after a
    // partition): it is not taken for the fastest trip.
    m.now = ms(10_000);
    let mut second = m.open(LinkId(2));
    second.send_control(ident(1, 12_000)).unwrap();
    m.carry_in(LinkId(2), &mut second);
    let excess = |m: &Bare, stamp| m.mesh.transit_excess(NodeId(42), m.now, stamp);
    assert_eq!(excess(&m, 12_000), Some(Duration::from_secs(3)));
    assert_eq!(excess(&m, 15_000), Some(Duration::ZERO));
    // Restarted (a new epoch, a new clock reading 100 ms): what was known is dropped.
    second.close("idle");
    m.carry_in(LinkId(2), &mut second);
    let mut third = m.open(LinkId(3));
    third.send_control(ident(2, 100)).unwrap();
    m.carry_in(LinkId(3), &mut third);
    assert_eq!(excess(&m, 100), Some(Duration::ZERO));
}

/// Found by swarm testing (a multicast tree split for good): a node dialed the old address
/// of a peer that had restarted elsewhere, and another node answered there. The link was
/// kept as that other node's, still marked as dialed for the old peer; every later link to
/// the address (dialed for other stale contacts, merged into it) said again that the old
/// peer was unreachable, so its trees routed around it, alive at its new address, forever.
#[test]
fn a_stale_address_answered_by_another_node_says_so_once_and_for_the_right_node() {
    let mut m = Bare::new();
    let there = |id| crate::overlay::Contact::new(NodeId(id), addr(9), 1);
    let unreachable = |incoming: &[Incoming]| -> Vec<(NodeId, usize)> {
        incoming
            .iter()
            .filter_map(|i| match i {
                Incoming::Unreachable(n, back) => Some((*n, back.len())),
                _ => None,
            })
            .collect()
    };
    // Dialed for 41 (a stale contact); 42 lives at that address now.
    m.mesh.reach(m.now, there(41));
    let mut first = m.answer_dial(LinkId(1));
    m.ident(LinkId(1), &mut first, there(42));
    assert_eq!(unreachable(&m.incoming()), vec![(NodeId(41), 0)]);
    assert!(m.mesh.is_linked(NodeId(42)));
    // A node message and an overlay ping for 43, another stale contact at that address:
    // dialed, answered by 42 again. The node message goes back to be routed another way
    // (not to 42), said of 43 only; the ping goes to 42, which answers and is learned.
    let msg = Bytes::from_static(b"for 43");
    m.mesh.send(m.now, there(43), Class::Control, msg).unwrap();
    let ping = OverlayMsg::Ping {
        leaves: None,
        rtt: None,
    };
    let ping = wire::encode(&PeerMsg::Overlay(0, ping));
    m.mesh
        .send_as(m.now, there(43), Class::Control, ping)
        .unwrap();
    let mut second = m.answer_dial(LinkId(2));
    m.ident(LinkId(2), &mut second, there(42));
    assert_eq!(unreachable(&m.incoming()), vec![(NodeId(43), 1)]);
    assert!(m.mesh.is_linked(NodeId(42)));
    // (On the link to 42 that is kept: the first.)
    m.carry_out(LinkId(1), &mut first);
    let pinged = std::iter::from_fn(|| first.poll_output()).any(|e| {
        matches!(e, LinkEvent::Control(b)
            if matches!(wire::decode_bytes(&b), Ok(PeerMsg::Overlay(_, OverlayMsg::Ping { .. }))))
    });
    assert!(pinged, "the ping did not reach the node at that address");
}

/// Found by swarm testing: a dial begun while a partition was on hangs until the driver's
/// connect timeout, and messages to its peer waited for it even once the path was back (a
/// graveyard ping across a healed partition, 3 s late). A dial in flight for
/// `STALE_DIAL` is superseded by a fresh one, which takes what waited.
#[test]
fn a_message_does_not_wait_for_a_dial_begun_long_ago() {
    let mut m = Bare::new();
    let peer = crate::overlay::Contact::new(NodeId(42), addr(9), 1);
    let msg = |s: &'static str| Bytes::from_static(s.as_bytes());
    m.mesh.send(m.now, peer, Class::Data, msg("first")).unwrap();
    let old = m.dials();
    assert_eq!(old.len(), 1);
    // Within STALE_DIAL a second message waits for the same dial...
    m.now = m.now + super::dials::STALE_DIAL / 2;
    m.mesh
        .send(m.now, peer, Class::Data, msg("second"))
        .unwrap();
    assert!(m.dials().is_empty());
    // ...past it, a fresh dial goes, with both.
    m.now = m.now + super::dials::STALE_DIAL;
    m.mesh.send(m.now, peer, Class::Data, msg("third")).unwrap();
    let fresh = m.dials();
    assert_eq!(fresh.len(), 1);
    // The old dial times out: that says nothing of the peer, whose fresh dial is on its way.
    m.mesh.handle(m.now, MeshInput::DialFailed(old[0]));
    assert!(
        m.incoming()
            .iter()
            .all(|i| !matches!(i, Incoming::Unreachable(..)))
    );
    let got = m.data_through(LinkId(1), fresh[0], peer);
    assert_eq!(got, vec![msg("first"), msg("second"), msg("third")]);
}

/// A dial taken over by a fresher one that fails while the peer is still not linked, the
/// fresher one trying for a second too, says the peer is unreachable: toward a peer that cannot be reached (a broken pair), a message
/// every second moves what waits to a fresh dial each time, and no dial would ever fail as
/// the peer's; what waited would never go another way (found by swarm testing: an
/// origin's answers to an ask, lost so). The freshest dial goes on.
#[test]
fn a_peer_whose_dials_hang_is_unreachable_with_all_that_waited() {
    let mut m = Bare::new();
    let peer = crate::overlay::Contact::new(NodeId(42), addr(9), 1);
    let msg = |s: &'static str| Bytes::from_static(s.as_bytes());
    let step = super::dials::STALE_DIAL + Duration::from_millis(1);
    m.mesh.send(m.now, peer, Class::Data, msg("first")).unwrap();
    let mut dials = m.dials();
    for _ in 0..4 {
        m.now = m.now + step;
        m.mesh.send(m.now, peer, Class::Data, msg("more")).unwrap();
        dials.extend(m.dials());
    }
    assert_eq!(dials.len(), 5, "each message past a second takes over");
    // The first dial times out while the freshest has been trying for a second too:
    // everything waiting goes another way.
    m.now = m.now + step;
    m.mesh.handle(m.now, MeshInput::DialFailed(dials[0]));
    let back: Vec<usize> = m
        .incoming()
        .iter()
        .filter_map(|i| match i {
            Incoming::Unreachable(n, back) if *n == NodeId(42) => Some(back.len()),
            _ => None,
        })
        .collect();
    assert_eq!(back, vec![5], "all that waited goes another way");
    // What comes next takes a fresh dial, which goes through.
    m.mesh.send(m.now, peer, Class::Data, msg("next")).unwrap();
    let fresh = m.dials();
    assert_eq!(fresh.len(), 1);
    let got = m.data_through(LinkId(1), fresh[0], peer);
    assert_eq!(got, vec![msg("next")]);
}

/// Found by swarm testing (a multicast lost to a tree child after a partition healed): a
/// dial begun during the partition was still in flight when the peer linked in from its
/// side, and timed out seconds later; the mesh said the peer was unreachable although its
/// link was up, and the trees let the child go. The link that came the other way takes
/// what waited for the dial, whose end then says nothing of the peer.
#[test]
fn a_dial_outrun_by_the_peers_own_link_says_nothing_when_it_fails() {
    let mut m = Bare::new();
    let peer = crate::overlay::Contact::new(NodeId(42), addr(9), 1);
    let msg = |s: &'static str| Bytes::from_static(s.as_bytes());
    m.mesh
        .send(m.now, peer, Class::Data, msg("waited"))
        .unwrap();
    let dial = m.dials();
    assert_eq!(dial.len(), 1);
    // The peer links in from its side while the dial hangs.
    let link = LinkId(1);
    let mut theirs = m.open(link);
    m.ident(link, &mut theirs, peer);
    assert!(m.mesh.is_linked(NodeId(42)));
    let got: Vec<Bytes> = data(&mut theirs);
    assert_eq!(
        got,
        vec![msg("waited")],
        "what waited went on the link at once"
    );
    m.incoming();
    // The dial times out: the peer is linked, nothing is said of it.
    m.now = m.now + Duration::from_secs(5);
    m.mesh.handle(m.now, MeshInput::DialFailed(dial[0]));
    let news = m.incoming();
    assert!(
        news.iter()
            .all(|i| !matches!(i, Incoming::Unreachable(..) | Incoming::Unlinked { .. })),
        "{news:?}"
    );
    assert!(m.mesh.is_linked(NodeId(42)));
}

/// Found by swarm testing (a restarted node's asks for a broadcast answered for 50 s, and
/// every answer lost): a node restarted under its id while a link to its old process
/// lingered (stopped, its close not sent). The later start's link is the peer's whoever
/// dialed, and what the node had with the earlier start ends (unlinked, linked again); an
/// earlier start linking in late takes nothing over.
#[test]
fn a_later_start_of_a_peer_takes_its_link_over_whoever_dialed() {
    let mut m = Bare::new();
    let old = crate::overlay::Contact::new(NodeId(42), addr(9), 1);
    let new = crate::overlay::Contact::new(NodeId(42), addr(8), 2);
    let (l1, l2, l3) = (LinkId(1), LinkId(2), LinkId(3));
    let mut first = m.open(l1);
    m.ident(l1, &mut first, old);
    m.incoming();
    // The later start links in; by the dialer rule (both inbound) the first would stay.
    let mut second = m.open(l2);
    m.ident(l2, &mut second, new);
    let news = m.incoming();
    assert_eq!(
        news,
        vec![
            Incoming::Unlinked {
                node: NodeId(42),
                failed: false
            },
            Incoming::Linked(NodeId(42))
        ]
    );
    assert_eq!(m.mesh.linked_contact(NodeId(42)), Some(new));
    // An earlier start linking in now takes nothing over.
    let mut third = m.open(l3);
    m.ident(l3, &mut third, old);
    assert_eq!(m.mesh.linked_contact(NodeId(42)), Some(new));
    // What is sent goes to the later start.
    let msg = Bytes::from_static(b"hello");
    m.mesh.send(m.now, new, Class::Data, msg.clone()).unwrap();
    m.carry_out(l2, &mut second);
    let got: Vec<Bytes> = data(&mut second);
    assert_eq!(got, vec![msg]);
}

/// The same restart, the later start not linked yet: a message for it does not go to the
/// earlier start's link, which closes; the later start is dialed at its address.
#[test]
fn a_message_for_a_later_start_of_a_peer_does_not_go_to_its_earlier_self() {
    let mut m = Bare::new();
    let old = crate::overlay::Contact::new(NodeId(42), addr(9), 1);
    let new = crate::overlay::Contact::new(NodeId(42), addr(8), 2);
    let l1 = LinkId(1);
    let mut first = m.open(l1);
    m.ident(l1, &mut first, old);
    m.incoming();
    let msg = Bytes::from_static(b"for the later start");
    m.mesh.send(m.now, new, Class::Data, msg.clone()).unwrap();
    assert!(
        !m.mesh.is_linked(NodeId(42)),
        "the earlier start's link closed"
    );
    assert_eq!(
        m.incoming(),
        vec![Incoming::Unlinked {
            node: NodeId(42),
            failed: false
        }]
    );
    let dials = m.dials();
    assert_eq!(dials.len(), 1);
    assert_eq!(m.data_through(LinkId(2), dials[0], new), vec![msg]);
}
