//! A slow subscriber holds back its topic's other subscribers only for its grace, between
//! two node processes: a subscriber that reads nothing and one that reads everything, on
//! node B, and a publisher flooding on node A. Past the grace the fast one goes on, and the
//! stuck one's share grows until its node cuts it at `--max-client-backlog` (had it held the
//! topic back, its backlog would have stopped at the congestion mark and nothing but its
//! 60 s deadline could have cut it). In memory, the same for other placements:
//! `iris-proto/src/node/tether_tests.rs`; the fast one's rate: `benches/README.md`.

use super::common;

use bytes::{Bytes, BytesMut};
use common::{Got, PROMPT, RawClient, network_with, small_window_client};
use iris_proto::relay::{ClientPacket, NodePacket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

runtime_independent!(a_stuck_subscriber_holds_up_a_fast_one_only_for_its_grace_then_is_cut);

const SIZE: usize = 64 << 10;
/// Events the fast subscriber reads: twice what the stuck one may hold (32 MiB).
const EVENTS: usize = 1024;
/// Events that may still be on their way when the fast one stops reading (they take
/// several trees, so they may come out of order).
const SLACK: usize = 256;

/// Publishes numbered events to "t" from a client of `port` until `stop`.
fn flood(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut p = RawClient::connect(port, "");
        let mut wire = BytesMut::new();
        let mut event = vec![0u8; SIZE];
        let mut seq = 0u64;
        while !stop.load(Ordering::Relaxed) {
            event[..8].copy_from_slice(&seq.to_be_bytes());
            let e = Bytes::copy_from_slice(&event);
            ClientPacket::Publish {
                topic: "t".into(),
                event: e,
            }
            .encode(&mut wire);
            p.write(&wire);
            wire.clear();
            seq += 1;
        }
    })
}

fn a_stuck_subscriber_holds_up_a_fast_one_only_for_its_grace_then_is_cut() {
    let flags = [
        "--max-client-backlog",
        "33554432",
        "--slow-consumer-timeout-ms",
        "60000",
    ];
    let nodes = network_with("slowsub test", 2, "23801,23802", &flags);
    let mut fast = nodes[1].connect("");
    let mut stuck = small_window_client(nodes[1].port, "");
    for c in [&mut fast, &mut stuck] {
        c.send(ClientPacket::Subscribe { topic: "t".into() });
    }
    // From now on `stuck` reads nothing. Events sent before the topic's trees reach node B
    // have nobody to go to; the fast one counts from the first it gets.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = flood(nodes[0].port, stop.clone());
    let mut seen = Vec::<bool>::new();
    let mut first = None;
    for _ in 0..EVENTS {
        let Got::Packet(NodePacket::Publish { event, .. }) = fast.poll(Duration::from_secs(30))
        else {
            panic!("the fast subscriber stopped getting events");
        };
        let seq = u64::from_be_bytes(event[..8].try_into().unwrap()) as usize;
        let first = *first.get_or_insert(seq);
        let at = seq
            .checked_sub(first)
            .expect("an event from before the first");
        if seen.len() <= at {
            seen.resize(at + 1, false);
        }
        assert!(!std::mem::replace(&mut seen[at], true), "event {seq} twice");
    }
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    let settled = seen.len().saturating_sub(SLACK);
    let missing = seen[..settled].iter().filter(|&&s| !s).count();
    assert_eq!(missing, 0, "the fast subscriber missed events");
    // The stuck one was cut for its backlog, with the reason, after some events.
    let mut events = 0;
    let reason = loop {
        match stuck.poll(PROMPT) {
            Got::Packet(NodePacket::Publish { .. }) => events += 1,
            Got::Packet(NodePacket::Close { reason }) => break reason,
            other => panic!("the stuck subscriber got {other:?} after {events} events"),
        }
    };
    assert_eq!(
        reason.as_str(),
        "slow consumer: more than 33554432 bytes unread"
    );
    assert!(events > 0);
}
