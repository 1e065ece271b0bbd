//! A slow consumer holds back its own share only: between nodes, in memory. A subscriber
//! that reads nothing holds up the other subscribers of its topic for its grace
//! (`slow_consumer_grace`), then they go on at their rate while what goes to it queues in
//! its own share until its deadline cuts it, loudly. A topic whose only subscriber is
//! stuck stays throttled.

use super::network_tests::{event, event_indices, small_queues};
use crate::ConnId;
use crate::relay::{ClientPacket, NodePacket};
use crate::testnet::Net;

const EVENTS: u32 = 1024;

/// `n` nodes whose links and members congest early (256 KiB link queues: 16 KiB windows,
/// producers held past 128 KiB waiting; members congested past 64 KiB unread).
fn congestible(n: usize) -> Net {
    let config = crate::Config {
        client_backlog_high: 64 << 10,
        ..crate::Config::default()
    };
    small_queues(n, 256 << 10, config)
}

fn subscriber(net: &mut Net, i: usize) -> ConnId {
    let c = net.client(i, "");
    net.send(i, c, ClientPacket::Subscribe { topic: "t".into() });
    c
}

/// 4 MiB of events on topic "t" from `p` on node 0.
fn flood(net: &mut Net, p: ConnId) {
    for i in 0..EVENTS {
        let event = event(i, 4096);
        net.send(
            0,
            p,
            ClientPacket::Publish {
                topic: "t".into(),
                event,
            },
        );
    }
}

/// A subscriber on node `stuck_at` reads nothing; one on node `fast_at` reads freely. The
/// fast one gets every event once the stuck one's grace ran out, long before the stuck
/// one's deadline, which then cuts it with a reason; nothing is dropped anywhere.
fn fast_beside_stuck(nodes: usize, stuck_at: usize, fast_at: usize) {
    let mut net = congestible(nodes);
    let stuck = subscriber(&mut net, stuck_at);
    let fast = subscriber(&mut net, fast_at);
    let p = net.client(0, "");
    net.secs(2);
    net.stall_client(stuck_at, stuck);
    flood(&mut net, p);
    // Within the grace the publisher is throttled for everyone.
    assert!(net.is_paused(0, p), "the publisher was never held");
    let early = event_indices(net.take(fast_at, fast));
    assert!(early.len() < EVENTS as usize / 2, "{} arrived", early.len());
    // Past it the fast subscriber gets the rest, the stuck one still within its deadline.
    net.millis(600);
    assert!(!net.is_paused(0, p), "the publisher is still held");
    let mut got = early;
    got.extend(event_indices(net.take(fast_at, fast)));
    got.sort_unstable();
    assert_eq!(got, (0..EVENTS).collect::<Vec<_>>());
    assert!(!net.is_closed(stuck_at, stuck));
    let loosened: u64 = (0..nodes)
        .map(|i| net.node(i).stats().consumers_loosened)
        .sum();
    assert_eq!(loosened, 1);
    // Its share waits at its node, not in the network.
    assert_eq!(net.node(0).casts_waiting_bytes(), 0);
    // At its deadline (10 s after it congested) it is cut, loudly.
    net.secs(10);
    assert!(
        net.is_closed(stuck_at, stuck),
        "the stuck subscriber was not cut"
    );
    let st = net.node(stuck_at).stats();
    assert_eq!((st.slow_consumers, st.cut_lagging), (1, 1));
    for i in 0..nodes {
        assert_eq!(net.node(i).stats().casts_dropped, 0, "node {i} dropped");
    }
}

#[test]
fn a_stuck_subscriber_on_another_node_holds_back_one_beside_the_publisher_only_for_its_grace() {
    fast_beside_stuck(2, 1, 0);
}

#[test]
fn a_stuck_subscriber_holds_back_one_on_a_third_node_only_for_its_grace() {
    fast_beside_stuck(3, 1, 2);
}

#[test]
fn a_stuck_subscriber_holds_back_one_on_its_own_node_only_for_its_grace() {
    fast_beside_stuck(2, 1, 1);
}

/// A topic's only subscriber, on node 1 of `nodes`, reads nothing while node 0's
/// publisher floods: nobody is told to let go, and the publisher stays throttled past the
/// grace (nothing is queued for a consumer that nobody else waits for); once it reads
/// again, before its deadline, it gets every event and nothing is cut. Returns the net.
fn only_subscriber_stays_throttling(nodes: usize) -> Net {
    let mut net = congestible(nodes);
    let stuck = subscriber(&mut net, 1);
    let p = net.client(0, "");
    net.secs(2);
    net.stall_client(1, stuck);
    flood(&mut net, p);
    net.secs(5);
    assert!(net.is_paused(0, p), "the publisher went on");
    let untethers: u64 = (0..nodes)
        .map(|i| net.node(i).stats().cast_untethers_sent)
        .sum();
    assert_eq!(untethers, 0);
    assert_eq!(net.node(1).stats().consumers_loosened, 1, "past its grace");
    net.unstall_client(1, stuck);
    assert_eq!(
        event_indices(net.take(1, stuck)),
        (0..EVENTS).collect::<Vec<_>>()
    );
    assert!(!net.is_closed(1, stuck));
    net
}

#[test]
fn a_topics_only_subscriber_throttles_its_publisher_past_its_grace() {
    only_subscriber_stays_throttling(2);
}

/// The same where the topic's trees pass nodes without members (roots, the nodes closest
/// to their keys): multicasts flow freely to those, which proves nothing about other
/// consumers.
#[test]
fn a_topics_only_subscriber_throttles_its_publisher_through_nodes_without_members() {
    let net = only_subscriber_stays_throttling(5);
    let group = crate::scribe::Group::topic("t".into());
    let passed = (2..5).any(|i| {
        let scribe = net.node(i).scribe().expect("networked");
        scribe.keys(&group).any(|k| scribe.in_tree(k))
    });
    assert!(passed, "no tree passes a node without members");
}

/// What the multicasts of a stuck subscriber's node were not held back for anymore is
/// visible as the node's events: a fast subscriber's events are all there, the stuck one
/// gets what it reads before its cut, in order, then the node's CLOSE.
#[test]
fn a_stuck_subscriber_gets_a_prefix_of_the_events_in_order_and_then_its_close() {
    let mut net = congestible(2);
    let stuck = subscriber(&mut net, 1);
    let _fast = subscriber(&mut net, 0);
    let p = net.client(0, "");
    net.secs(2);
    net.stall_client(1, stuck);
    flood(&mut net, p);
    net.secs(12);
    net.unstall_client(1, stuck);
    let got = net.take(1, stuck);
    let Some(NodePacket::Close { reason }) = got.last() else {
        panic!("no CLOSE: {:?}", got.last());
    };
    assert!(reason.as_str().starts_with("slow consumer"), "{reason}");
    let indices = event_indices(got);
    assert_eq!(indices, (0..indices.len() as u32).collect::<Vec<_>>());
}

#[test]
fn a_stuck_subscriber_beside_the_publisher_holds_back_one_on_another_node_only_for_its_grace() {
    fast_beside_stuck(2, 0, 1);
}

#[test]
fn a_stuck_subscriber_beside_the_publisher_holds_back_one_beside_it_only_for_its_grace() {
    fast_beside_stuck(2, 0, 0);
}
