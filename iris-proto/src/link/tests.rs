//! Links in virtual time, two ends joined by an in-memory pipe.

use super::frame::{FrameError, HEADER_LEN};
use super::handshake::HandshakeError;
use super::record::{BadRecord, RekeyLimits};
use super::*;
use crate::time::Instant;
use bytes::Bytes;
use proptest::prelude::*;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

fn load(name: &str) -> Arc<NetworkKey> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    Arc::new(NetworkKey::from_bytes(&std::fs::read(path).unwrap()).unwrap())
}

fn net_key() -> Arc<NetworkKey> {
    static KEY: OnceLock<Arc<NetworkKey>> = OnceLock::new();
    KEY.get_or_init(|| load("net-pkcs8.pem")).clone()
}

fn cfg() -> LinkConfig {
    LinkConfig {
        network: "test net".into(),
        ..LinkConfig::default()
    }
}

fn pair_with(a: (LinkConfig, Arc<NetworkKey>), b: (LinkConfig, Arc<NetworkKey>)) -> (Link, Link) {
    (
        Link::new(Role::Initiator, a.1, a.0, [1; 32], Instant::ZERO),
        Link::new(Role::Responder, b.1, b.0, [2; 32], Instant::ZERO),
    )
}

fn pair() -> (Link, Link) {
    pair_with((cfg(), net_key()), (cfg(), net_key()))
}

/// Moves every pending frame both ways until nothing moves; returns the events of each end.
fn run(a: &mut Link, b: &mut Link) -> (Vec<LinkEvent>, Vec<LinkEvent>) {
    let (mut ea, mut eb) = (Vec::new(), Vec::new());
    loop {
        let mut moved = false;
        while let Some(f) = a.poll_transmit() {
            b.handle(Instant::ZERO, LinkInput::Bytes(&f));
            moved = true;
        }
        while let Some(f) = b.poll_transmit() {
            a.handle(Instant::ZERO, LinkInput::Bytes(&f));
            moved = true;
        }
        while let Some(e) = a.poll_output() {
            ea.push(e);
        }
        while let Some(e) = b.poll_output() {
            eb.push(e);
        }
        if !moved {
            return (ea, eb);
        }
    }
}

fn established() -> (Link, Link) {
    let (mut a, mut b) = pair();
    let (ea, eb) = run(&mut a, &mut b);
    assert_eq!(ea, vec![LinkEvent::Established]);
    assert_eq!(eb, vec![LinkEvent::Established]);
    (a, b)
}

#[test]
fn handshake_then_messages_both_ways() {
    let (mut a, mut b) = established();
    a.send_control(Bytes::from_static(b"ping")).unwrap();
    a.send_data(Bytes::from_static(b"payload")).unwrap();
    b.send_data(Bytes::from_static(b"back")).unwrap();
    let (ea, eb) = run(&mut a, &mut b);
    assert_eq!(
        eb,
        vec![
            LinkEvent::Control(Bytes::from_static(b"ping")),
            LinkEvent::Data(Bytes::from_static(b"payload"))
        ]
    );
    assert_eq!(ea, vec![LinkEvent::Data(Bytes::from_static(b"back"))]);
}

/// Bytes read into the buffer the link lends (`Link::lend_input`, given back as
/// `LinkInput::Buf`) in pieces that cut records anywhere: the same messages, in order, and
/// a record is opened where it was read (its message is a slice of the lent buffer).
#[test]
fn records_read_into_the_lent_buffer_are_opened_in_place() {
    let (mut a, mut b) = established();
    let messages: Vec<Bytes> = [5usize, 60_000, 1, 3000, 65_000]
        .iter()
        .enumerate()
        .map(|(i, &n)| Bytes::from(vec![i as u8; n]))
        .collect();
    let mut wire = Vec::new();
    for m in &messages {
        a.send_data(m.clone()).unwrap();
        while let Some(f) = a.poll_transmit() {
            wire.extend_from_slice(&f);
        }
    }
    let (mut got, mut in_place) = (Vec::new(), 0);
    for piece in wire.chunks(10_007) {
        let mut input = b.lend_input(1 << 16);
        let range = input.as_ptr() as usize..input.as_ptr() as usize + input.capacity();
        input.extend_from_slice(piece);
        b.handle(Instant::ZERO, LinkInput::Buf(input));
        while let Some(e) = b.poll_output() {
            if let LinkEvent::Data(m) = e {
                in_place += usize::from(range.contains(&(m.as_ptr() as usize)));
                got.push(m);
            }
        }
    }
    assert_eq!(got, messages);
    assert!(in_place >= 3, "{in_place} of 5 opened where they were read");
}

#[test]
fn an_urgent_message_goes_after_the_data_message_in_progress_not_after_all_data() {
    let (mut a, mut b) = established();
    let bulk: Vec<Bytes> = (0..10u8).map(|i| Bytes::from(vec![i; 100_000])).collect();
    for m in &bulk {
        a.send_data(m.clone()).unwrap();
    }
    // The first record carries the start of the first bulk message.
    let first = a.poll_transmit().unwrap();
    b.handle(Instant::ZERO, LinkInput::Bytes(&first));
    let queued = a.data_queued();
    a.send_urgent(Bytes::from_static(b"request")).unwrap();
    assert_eq!(a.data_queued(), queued + 7);
    let (_, eb) = run(&mut a, &mut b);
    let got: Vec<Bytes> = eb
        .into_iter()
        .map(|e| match e {
            LinkEvent::Data(d) => d,
            other => panic!("{other:?}"),
        })
        .collect();
    let mut want = vec![bulk[0].clone(), Bytes::from_static(b"request")];
    want.extend(bulk[1..].iter().cloned());
    assert_eq!(got, want);
}

#[test]
fn urgent_messages_keep_their_order_when_records_are_full_of_control() {
    let (mut a, mut b) = established();
    let big = cfg().max_record - 36;
    for i in 0..2u8 {
        a.send_control(Bytes::from(vec![i; big])).unwrap();
    }
    // Each too large for the room a full record of control leaves.
    let urgent: Vec<Bytes> = (0..3u8).map(|i| Bytes::from(vec![b'u' + i; 100])).collect();
    for m in &urgent {
        a.send_urgent(m.clone()).unwrap();
    }
    let (_, eb) = run(&mut a, &mut b);
    let data: Vec<Bytes> = eb
        .into_iter()
        .filter_map(|e| match e {
            LinkEvent::Data(d) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(data, urgent);
}

/// Runs a handshake that must fail with one of `want` on at least one end; the other end,
/// whose peer then closes the socket, fails too.
fn assert_handshake_fails(
    a: (LinkConfig, Arc<NetworkKey>),
    b: (LinkConfig, Arc<NetworkKey>),
    want: &[HandshakeError],
) {
    let (mut a, mut b) = pair_with(a, b);
    let (mut ea, mut eb) = run(&mut a, &mut b);
    let failed = |e: &[LinkEvent]| {
        want.iter()
            .any(|w| e.contains(&LinkEvent::Closed(LinkError::Handshake(w.clone()))))
    };
    assert!(failed(&ea) || failed(&eb), "{ea:?} / {eb:?}");
    // The driver closes a failed link's socket: the other end sees EOF.
    for (link, events) in [(&mut a, &mut ea), (&mut b, &mut eb)] {
        if !link.is_closed() {
            link.handle(Instant::ZERO, LinkInput::Eof);
            events.extend(std::iter::from_fn(|| link.poll_output()));
        }
    }
    assert!(a.is_closed() && b.is_closed());
    assert!(!ea.contains(&LinkEvent::Established) || !eb.contains(&LinkEvent::Established));
    assert_eq!(a.stats().handshake_failures, 1);
    assert_eq!(b.stats().handshake_failures, 1);
    // Nothing can be sent on a failed link.
    assert_eq!(
        a.send_data(Bytes::from_static(b"x"))
            .err()
            .or(b.send_data(Bytes::from_static(b"x")).err()),
        Some(SendError::NotOpen)
    );
}

#[test]
fn wrong_key_is_rejected() {
    assert_handshake_fails(
        (cfg(), net_key()),
        (cfg(), load("other-pkcs8.pem")),
        &[HandshakeError::NoCommonKey],
    );
}

/// With `offload_signatures`, each end asks for its signature instead of making it, sends
/// nothing more until it has it, and completes the handshake once it is handed over; a
/// stranger's frame while an end waits fails the link.
#[test]
fn offloaded_signatures_are_asked_for_and_the_handshake_waits_for_them() {
    let offload = || LinkConfig {
        offload_signatures: true,
        ..cfg()
    };
    let (mut a, mut b) = pair_with((offload(), net_key()), (offload(), net_key()));
    let (mut asked, mut rounds) = (Vec::new(), 0);
    loop {
        let (ea, eb) = run(&mut a, &mut b);
        let mut answered = false;
        for (link, events) in [(&mut a, ea), (&mut b, eb)] {
            for e in events {
                match e {
                    LinkEvent::Sign(to_sign) => {
                        // Nothing goes out while the signature is owed.
                        assert!(link.poll_transmit().is_none(), "sent before signing");
                        asked.push(to_sign.key);
                        let signature = net_key().sign_seeded([7; 32], &to_sign.message);
                        link.handle(Instant::ZERO, LinkInput::Signed(&signature));
                        answered = true;
                    }
                    LinkEvent::Established => {}
                    other => panic!("{other:?}"),
                }
            }
        }
        rounds += 1;
        if !answered || rounds > 4 {
            break;
        }
    }
    assert!(a.is_open() && b.is_open());
    assert_eq!(asked, vec![net_key().id(), net_key().id()], "one each");
    assert_eq!((a.stats().signatures, b.stats().signatures), (1, 1));
    // A responder owing its signature takes no further frame: the initiator waits for it.
    let mut i = Link::new(Role::Initiator, net_key(), cfg(), [1; 32], Instant::ZERO);
    let mut r = Link::new(
        Role::Responder,
        net_key(),
        offload(),
        [2; 32],
        Instant::ZERO,
    );
    let (_, er) = run(&mut i, &mut r);
    assert!(matches!(er[..], [LinkEvent::Sign(_)]), "{er:?}");
    r.handle(Instant::ZERO, LinkInput::Bytes(&[0, 0, 0, 0, 0, 0]));
    let events: Vec<LinkEvent> = std::iter::from_fn(|| r.poll_output()).collect();
    assert!(matches!(events[..], [LinkEvent::Closed(_)]), "{events:?}");
}

/// A link between `a` (the initiator) and `b`, each with a current key and maybe a
/// previous one, run to its end; the events of each end and their signature counts.
fn rotation_pair(
    a: (Arc<NetworkKey>, Option<Arc<NetworkKey>>),
    b: (Arc<NetworkKey>, Option<Arc<NetworkKey>>),
) -> (Vec<LinkEvent>, Vec<LinkEvent>, (u64, u64)) {
    let with = |previous: Option<Arc<NetworkKey>>| LinkConfig {
        previous_key: previous,
        ..cfg()
    };
    let (mut x, mut y) = pair_with((with(a.1), a.0), (with(b.1), b.0));
    let (ex, ey) = run(&mut x, &mut y);
    (ex, ey, (x.stats().signatures, y.stats().signatures))
}

/// A network rolls from key A to key B one node at a time: a node holding B and, as its
/// previous key, A links with nodes on A alone, on both and on B alone, whichever end
/// dials; a node on A alone and one on B alone never link, and neither signs anything.
#[test]
fn key_rotation_links_every_step_of_a_roll_and_nothing_across_it() {
    let a = net_key();
    let b = load("other-pkcs8.pem");
    let old = (a.clone(), None);
    let rolling = (b.clone(), Some(a.clone()));
    let new = (b.clone(), None);
    for (x, y, why) in [
        (&rolling, &old, "rolling dials old"),
        (&old, &rolling, "old dials rolling"),
        (&rolling, &rolling, "rolling with rolling"),
        (&rolling, &new, "rolling dials new"),
        (&new, &rolling, "new dials rolling"),
    ] {
        let (ex, ey, signatures) = rotation_pair(x.clone(), y.clone());
        assert_eq!(ex, vec![LinkEvent::Established], "{why}: {ey:?}");
        assert_eq!(ey, vec![LinkEvent::Established], "{why}");
        assert_eq!(signatures, (1, 1), "{why}");
    }
    for (x, y) in [(&old, &new), (&new, &old)] {
        let (ex, _, signatures) = rotation_pair(x.clone(), y.clone());
        assert!(
            ex.contains(&LinkEvent::Closed(LinkError::Handshake(
                HandshakeError::NoCommonKey
            ))),
            "{ex:?}"
        );
        assert_eq!(
            signatures,
            (0, 0),
            "a link across the roll made a signature"
        );
    }
}

/// Each side of a genuine handshake signs once; the responder only after the initiator's
/// signature has verified.
#[test]
fn a_genuine_handshake_costs_one_signature_per_side() {
    let (a, b) = established();
    assert_eq!((a.stats().signatures, b.stats().signatures), (1, 1));
}

/// Events of a responder fed `bytes` (what a stranger sends), and its signature count.
fn responder_fed(bytes: &[u8], seed: u8) -> (Vec<LinkEvent>, u64) {
    let mut r = Link::new(Role::Responder, net_key(), cfg(), [seed; 32], Instant::ZERO);
    while r.poll_transmit().is_some() {}
    r.handle(Instant::ZERO, LinkInput::Bytes(bytes));
    while r.poll_transmit().is_some() {}
    if !r.is_closed() {
        r.handle(Instant::ZERO, LinkInput::Eof);
    }
    let events = std::iter::from_fn(|| r.poll_output()).collect();
    (events, r.stats().signatures)
}

#[test]
fn a_stranger_never_makes_the_responder_sign() {
    // Garbage.
    let (events, signatures) = responder_fed(&[0x5a; 300], 3);
    assert!(matches!(events[..], [LinkEvent::Closed(_)]), "{events:?}");
    assert_eq!(signatures, 0);
    // A handshake with another key: the initiator sees that the responder does not
    // accept its key and gives up; nobody signs.
    let (mut a, mut b) = pair_with((cfg(), load("other-pkcs8.pem")), (cfg(), net_key()));
    let (ea, _) = run(&mut a, &mut b);
    assert!(
        ea.contains(&LinkEvent::Closed(LinkError::Handshake(
            HandshakeError::NoCommonKey
        ))),
        "{ea:?}"
    );
    assert_eq!((a.stats().signatures, b.stats().signatures), (0, 0));
    // A stranger that claims the responder's key (its id is public) and signs with
    // another: the AUTH does not verify, and the responder signs nothing. (The stranger is
    // shown a HELLO that accepts its own key, so that it signs the right transcript.)
    let other = load("other-pkcs8.pem");
    let mut liar = Link::new(
        Role::Initiator,
        other.clone(),
        cfg(),
        [4; 32],
        Instant::ZERO,
    );
    let mut r = Link::new(Role::Responder, net_key(), cfg(), [5; 32], Instant::ZERO);
    r.handle(
        Instant::ZERO,
        LinkInput::Bytes(&liar.poll_transmit().unwrap()),
    );
    let mut r_hello = r.poll_transmit().unwrap().to_vec();
    let n = r_hello.len();
    r_hello[n - 8..].copy_from_slice(&other.id());
    liar.handle(Instant::ZERO, LinkInput::Bytes(&r_hello));
    let mut forged = liar.poll_transmit().unwrap().to_vec();
    assert_eq!(liar.stats().signatures, 1);
    forged[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&net_key().id());
    r.handle(Instant::ZERO, LinkInput::Bytes(&forged));
    let events: Vec<LinkEvent> = std::iter::from_fn(|| r.poll_output()).collect();
    assert_eq!(
        events,
        vec![LinkEvent::Closed(LinkError::Handshake(
            HandshakeError::Signature
        ))]
    );
    assert_eq!(r.stats().signatures, 0, "signed for a forged AUTH");
}

/// A genuine member's first flight (HELLO and AUTH), recorded and replayed to another
/// responder: its signature covers the first responder's ephemeral key, not this one's.
#[test]
fn a_replayed_first_flight_is_refused_without_a_signature() {
    let (mut i, mut r) = pair();
    let mut flight = Vec::new();
    loop {
        let mut moved = false;
        while let Some(f) = i.poll_transmit() {
            flight.extend_from_slice(&f);
            r.handle(Instant::ZERO, LinkInput::Bytes(&f));
            moved = true;
        }
        while let Some(f) = r.poll_transmit() {
            i.handle(Instant::ZERO, LinkInput::Bytes(&f));
            moved = true;
        }
        if !moved {
            break;
        }
    }
    assert!(i.is_open() && r.is_open());
    let (events, signatures) = responder_fed(&flight, 9);
    assert_eq!(
        events,
        vec![LinkEvent::Closed(LinkError::Handshake(
            HandshakeError::Signature
        ))]
    );
    assert_eq!(signatures, 0);
}

#[test]
fn wrong_network_name_is_rejected() {
    let other = LinkConfig {
        network: "another net".into(),
        ..cfg()
    };
    assert_handshake_fails(
        (cfg(), net_key()),
        (other, net_key()),
        &[HandshakeError::Network],
    );
}

#[test]
fn wrong_version_is_rejected() {
    let (ours, theirs) = (HANDSHAKE_VERSION, HANDSHAKE_VERSION + 1);
    let newer = LinkConfig {
        version: theirs,
        ..cfg()
    };
    assert_handshake_fails(
        (cfg(), net_key()),
        (newer, net_key()),
        &[
            HandshakeError::Version { ours, theirs },
            HandshakeError::Version {
                ours: theirs,
                theirs: ours,
            },
        ],
    );
}

#[test]
fn stalled_handshake_times_out() {
    let (mut a, _b) = pair();
    let _ = a.poll_transmit(); // HELLO goes nowhere: the peer stalls.
    a.handle(
        Instant::ZERO + Duration::from_millis(9_999),
        LinkInput::Timeout,
    );
    assert!(!a.is_closed());
    a.handle(Instant::ZERO + Duration::from_secs(10), LinkInput::Timeout);
    assert_eq!(
        a.poll_output(),
        Some(LinkEvent::Closed(LinkError::HandshakeTimeout))
    );
    assert_eq!(a.stats().handshake_failures, 1);
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn oversized_handshake_frame_is_refused_before_buffering() {
    let (mut a, _b) = pair();
    a.handle(
        Instant::ZERO,
        LinkInput::Bytes(&[1, 2, 0xff, 0xff, 0xff, 0xff]),
    );
    assert_eq!(
        a.poll_output(),
        Some(LinkEvent::Closed(LinkError::Frame(FrameError::TooLong {
            len: u32::MAX as usize,
            max: super::handshake::MAX_AUTH_LEN
        })))
    );
    assert_eq!(a.stats().handshake_failures, 1);
}

/// Seals `n` records of one data message each from `a` and returns them.
fn records(a: &mut Link, n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| {
            a.send_data(Bytes::from(format!("message {i}"))).unwrap();
            a.poll_transmit().unwrap()
        })
        .collect()
}

fn rejected(b: &mut Link) {
    let mut last = None;
    while let Some(e) = b.poll_output() {
        last = Some(e);
    }
    assert_eq!(last, Some(LinkEvent::Closed(LinkError::Record(BadRecord))));
    assert!(b.is_closed());
    assert_eq!(b.stats().records_rejected, 1);
}

#[test]
fn flipped_byte_is_rejected() {
    for at in [0, 1, 3, 5, HEADER_LEN, HEADER_LEN + 2, 20] {
        let (mut a, mut b) = established();
        let rec = records(&mut a, 1).remove(0);
        let mut bad = rec.to_vec();
        let at = at.min(bad.len() - 1);
        bad[at] ^= 0x01;
        b.handle(Instant::ZERO, LinkInput::Bytes(&bad));
        // A flipped length makes the frame longer: it fails authentication once the bytes
        // that follow complete it (or as truncation if none ever come).
        for _ in 0..3 {
            a.send_data(Bytes::from(vec![1u8; 60_000])).unwrap();
            while let Some(f) = a.poll_transmit() {
                b.handle(Instant::ZERO, LinkInput::Bytes(&f));
            }
        }
        b.handle(Instant::ZERO, LinkInput::Eof);
        assert!(b.is_closed(), "flip at {at} went unnoticed");
        let s = b.stats();
        assert_eq!(
            s.records_rejected + s.handshake_failures + s.truncations,
            1,
            "flip at {at}"
        );
        let closed = std::iter::from_fn(|| b.poll_output()).last();
        assert!(
            matches!(closed, Some(LinkEvent::Closed(_))),
            "flip at {at}: {closed:?}"
        );
    }
}

#[test]
fn replayed_record_is_rejected() {
    let (mut a, mut b) = established();
    let recs = records(&mut a, 2);
    b.handle(Instant::ZERO, LinkInput::Bytes(&recs[0]));
    assert_eq!(
        b.poll_output(),
        Some(LinkEvent::Data(Bytes::from_static(b"message 0")))
    );
    b.handle(Instant::ZERO, LinkInput::Bytes(&recs[0]));
    rejected(&mut b);
}

#[test]
fn reordered_records_are_rejected() {
    let (mut a, mut b) = established();
    let recs = records(&mut a, 2);
    b.handle(Instant::ZERO, LinkInput::Bytes(&recs[1]));
    rejected(&mut b);
}

#[test]
fn truncated_stream_is_detected_and_a_graceful_close_is_not_truncation() {
    let (mut a, mut b) = established();
    let rec = records(&mut a, 1).remove(0);
    b.handle(Instant::ZERO, LinkInput::Bytes(&rec[..rec.len() - 5]));
    b.handle(Instant::ZERO, LinkInput::Eof);
    assert_eq!(
        b.poll_output(),
        Some(LinkEvent::Closed(LinkError::Truncated))
    );
    assert_eq!(b.stats().truncations, 1);

    let (mut a, mut b) = established();
    a.send_data(Bytes::from_static(b"last words")).unwrap();
    a.close("leaving");
    let (_, eb) = run(&mut a, &mut b);
    assert_eq!(
        eb,
        vec![
            LinkEvent::Data(Bytes::from_static(b"last words")),
            LinkEvent::PeerClosed("leaving".into())
        ]
    );
    // A peer of an earlier release closes its socket without waiting for our CLOSE.
    b.handle(Instant::ZERO, LinkInput::Eof);
    assert_eq!(
        b.poll_output(),
        Some(LinkEvent::Closed(LinkError::ClosedByPeer(String::new())))
    );
    assert!(b.is_closed());
    assert_eq!(b.stats().truncations, 0);
}

/// Each side ends only its own direction: what the other sends until its own CLOSE is
/// still delivered, and the link is over once both CLOSEs have crossed.
#[test]
fn a_closed_side_still_reads_what_the_peer_sends_until_its_close() {
    let (mut a, mut b) = established();
    a.close("leaving");
    let (ea, eb) = run(&mut a, &mut b);
    assert!(ea.is_empty(), "{ea:?}");
    assert_eq!(eb, vec![LinkEvent::PeerClosed("leaving".into())]);
    assert!(!a.is_closed() && !b.is_closed());
    assert_eq!(
        a.send_data(Bytes::from_static(b"too late")),
        Err(SendError::NotOpen)
    );
    // Whatever a peer sends after its CLOSE is dropped unread, not buffered.
    b.handle(Instant::ZERO, LinkInput::Bytes(&[0x5a; 4096]));
    assert!(b.poll_output().is_none());
    assert!(!b.is_closed());
    // The side still open sends on, then closes too.
    for i in 0..3 {
        b.send_data(Bytes::from(format!("after {i}"))).unwrap();
    }
    b.close("bye");
    let (ea, eb) = run(&mut a, &mut b);
    assert_eq!(
        ea,
        vec![
            LinkEvent::Data(Bytes::from_static(b"after 0")),
            LinkEvent::Data(Bytes::from_static(b"after 1")),
            LinkEvent::Data(Bytes::from_static(b"after 2")),
            LinkEvent::Closed(LinkError::ClosedByPeer("bye".into())),
        ]
    );
    assert!(eb.is_empty(), "{eb:?}");
    assert!(a.is_closed() && b.is_closed());
    assert_eq!(a.poll_transmit(), None);
    assert_eq!(b.poll_transmit(), None);
}

/// Closing abruptly does not wait for the peer; abandoning a link that never hears the
/// peer's CLOSE ends it at once.
#[test]
fn a_link_closed_abruptly_or_abandoned_does_not_wait_for_the_peer() {
    let (mut a, _b) = established();
    a.close_abruptly("violation");
    assert!(a.poll_transmit().is_some());
    assert!(a.is_closed());
    let (mut a, _b) = established();
    a.close("leaving");
    while a.poll_transmit().is_some() {}
    assert!(!a.is_closed(), "closed before the peer's CLOSE");
    a.abandon();
    assert!(a.is_closed());
    assert_eq!(
        a.poll_output(),
        Some(LinkEvent::Closed(LinkError::CloseTimeout))
    );
    assert_eq!(a.stats().records_rejected + a.stats().truncations, 0);
}

#[test]
fn keys_ratchet_before_the_limit_and_old_records_die_with_them() {
    let small = LinkConfig {
        rekey: RekeyLimits {
            records: 3,
            bytes: 1 << 40,
        },
        ..cfg()
    };
    let (mut a, mut b) = pair_with((small.clone(), net_key()), (small, net_key()));
    run(&mut a, &mut b);
    let recs = records(&mut a, 10);
    for (i, r) in recs.iter().enumerate() {
        b.handle(Instant::ZERO, LinkInput::Bytes(r));
        assert_eq!(
            b.poll_output(),
            Some(LinkEvent::Data(Bytes::from(format!("message {i}"))))
        );
    }
    assert_eq!(a.stats().rekeys, 3);
    assert_eq!(b.stats().rekeys, 3);
    // Record 1 again, now that both have moved on: its key is gone.
    b.handle(Instant::ZERO, LinkInput::Bytes(&recs[1]));
    rejected(&mut b);

    let by_bytes = LinkConfig {
        rekey: RekeyLimits {
            records: 1 << 40,
            bytes: 100,
        },
        ..cfg()
    };
    let (mut a, mut b) = pair_with((by_bytes.clone(), net_key()), (by_bytes, net_key()));
    run(&mut a, &mut b);
    for _ in 0..5 {
        a.send_data(Bytes::from(vec![9u8; 60])).unwrap();
        let (_, eb) = run(&mut a, &mut b);
        assert_eq!(eb.len(), 1);
    }
    assert!(a.stats().rekeys >= 2);
}

#[test]
fn small_messages_share_one_record() {
    let (mut a, mut b) = established();
    for i in 0..1000u32 {
        a.send_data(Bytes::from(i.to_be_bytes().to_vec())).unwrap();
    }
    let before = a.stats().records_sealed;
    let (_, eb) = run(&mut a, &mut b);
    assert_eq!(eb.len(), 1000);
    // 1000 x 6-byte items in one record.
    assert_eq!(a.stats().records_sealed - before, 1);
    for (i, e) in eb.iter().enumerate() {
        assert_eq!(
            e,
            &LinkEvent::Data(Bytes::from((i as u32).to_be_bytes().to_vec()))
        );
    }
}

#[test]
fn large_messages_go_in_bounded_records_and_come_back_whole() {
    let (mut a, mut b) = established();
    let big = Bytes::from((0..1_000_000u32).map(|i| i as u8).collect::<Vec<_>>());
    a.send_data(big.clone()).unwrap();
    a.send_control(Bytes::from_static(b"hb")).unwrap();
    let mut max_frame = 0;
    let mut events = Vec::new();
    while let Some(f) = a.poll_transmit() {
        max_frame = max_frame.max(f.len());
        b.handle(Instant::ZERO, LinkInput::Bytes(&f));
        while let Some(e) = b.poll_output() {
            events.push(e);
        }
    }
    assert!(
        max_frame <= HEADER_LEN + cfg().max_record + 16,
        "record of {max_frame} bytes"
    );
    // The control message, queued after the data, overtook it.
    assert_eq!(events[0], LinkEvent::Control(Bytes::from_static(b"hb")));
    assert_eq!(events[1], LinkEvent::Data(big));
}

#[test]
fn data_queue_is_bounded() {
    let small = LinkConfig {
        max_data_queue: 1000,
        ..cfg()
    };
    let (mut a, mut b) = pair_with((small.clone(), net_key()), (small, net_key()));
    run(&mut a, &mut b);
    a.send_data(Bytes::from(vec![0u8; 800])).unwrap();
    assert_eq!(
        a.send_data(Bytes::from(vec![0u8; 300])),
        Err(SendError::Full)
    );
    // Draining makes room again.
    run(&mut a, &mut b);
    a.send_data(Bytes::from(vec![0u8; 300])).unwrap();
}

/// A link saturated with data over a 1 MB/s pipe; a heartbeat is queued every 100 ms.
/// Returns the worst delay from queueing a heartbeat to its arrival.
fn worst_heartbeat_delay(heartbeats_as_data: bool) -> Duration {
    let (mut a, mut b) = established();
    let rate = 1_000_000.0; // bytes per second
    let period = Duration::from_millis(100);
    let mut now = Duration::ZERO;
    let mut next_beat = Duration::ZERO;
    let mut sent_at = std::collections::VecDeque::new();
    let mut worst = Duration::ZERO;
    let mut beats = 0;
    while now < Duration::from_secs(5) {
        // Keep the data queue full: the producer always has more.
        while a.data_queued() < 1 << 20 {
            a.send_data(Bytes::from(vec![0u8; 4096])).unwrap();
        }
        if now >= next_beat {
            let hb = Bytes::from_static(b"heartbeat");
            if heartbeats_as_data {
                a.send_data(hb).unwrap();
            } else {
                a.send_control(hb).unwrap();
            }
            sent_at.push_back(now);
            next_beat += period;
        }
        // The socket takes one frame at a time; the wire is busy for its length.
        let frame = a.poll_transmit().unwrap();
        now += Duration::from_secs_f64(frame.len() as f64 / rate);
        b.handle(Instant::ZERO, LinkInput::Bytes(&frame));
        while let Some(e) = b.poll_output() {
            let is_beat =
                matches!(&e, LinkEvent::Control(m) | LinkEvent::Data(m) if &m[..] == b"heartbeat");
            if is_beat {
                worst = worst.max(now - sent_at.pop_front().unwrap());
                beats += 1;
            }
        }
    }
    assert!(
        beats >= 40 || heartbeats_as_data,
        "only {beats} heartbeats arrived"
    );
    worst
}

#[test]
fn heartbeats_arrive_within_their_period_on_a_saturated_link() {
    let worst = worst_heartbeat_delay(false);
    eprintln!("worst heartbeat delay with priority: {worst:?}");
    assert!(
        worst < Duration::from_millis(100),
        "worst heartbeat delay {worst:?}"
    );
    // At most the record already on the wire plus its own: two records at 1 MB/s.
    let record = (cfg().max_record + 22) as f64 / 1e6;
    assert!(
        worst.as_secs_f64() <= 2.0 * record,
        "worst heartbeat delay {worst:?}"
    );
    // The same heartbeats queued behind the data would miss their period by far.
    let fifo = worst_heartbeat_delay(true);
    eprintln!("worst heartbeat delay behind data (FIFO): {fifo:?}");
    assert!(fifo > Duration::from_millis(500), "FIFO delay {fifo:?}");
}

fn message() -> impl Strategy<Value = (bool, Vec<u8>)> {
    (
        any::<bool>(),
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(any::<u8>(), 0..40_000),
        ],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Any sequence of messages, with transmits interleaved anywhere and the byte stream cut
    /// at any points, arrives complete and in order on each channel.
    #[test]
    fn seal_open_round_trips(
        msgs in proptest::collection::vec(message(), 1..40),
        flush_after in proptest::collection::vec(any::<bool>(), 40),
        cuts in proptest::collection::vec(1usize..5000, 1..20),
    ) {
        let (mut a, mut b) = established();
        let mut wire = Vec::new();
        let (mut want_c, mut want_d) = (Vec::new(), Vec::new());
        for (i, (control, body)) in msgs.iter().enumerate() {
            let body = Bytes::from(body.clone());
            if *control && body.len() < 8000 {
                a.send_control(body.clone()).unwrap();
                want_c.push(body);
            } else {
                a.send_data(body.clone()).unwrap();
                want_d.push(body);
            }
            if flush_after[i % flush_after.len()] {
                while let Some(f) = a.poll_transmit() { wire.extend_from_slice(&f); }
            }
        }
        while let Some(f) = a.poll_transmit() { wire.extend_from_slice(&f); }
        let mut pos = 0;
        let mut cut = cuts.iter().cycle();
        while pos < wire.len() {
            let n = (*cut.next().unwrap()).min(wire.len() - pos);
            b.handle(Instant::ZERO, LinkInput::Bytes(&wire[pos..pos + n]));
            pos += n;
        }
        let (mut got_c, mut got_d) = (Vec::new(), Vec::new());
        while let Some(e) = b.poll_output() {
            match e {
                LinkEvent::Control(m) => got_c.push(m),
                LinkEvent::Data(m) => got_d.push(m),
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
        prop_assert_eq!(got_c, want_c);
        prop_assert_eq!(got_d, want_d);
    }
}
