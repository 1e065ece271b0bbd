//! What many groups cost and whether it comes back: five whole nodes in memory (the
//! core's testnet), every node subscribed to the same topics, the heap measured by a
//! counting allocator. One test in this binary, so that no other test's allocations mix in.

use bytes::{Bytes, BytesMut};
use iris_proto::relay::{ClientPacket, NodePacket};
use iris_proto::testnet::{Net, mesh_config};
use iris_proto::{Config, ConnId, Event, Security};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract is passed on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE.fetch_add(new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const NODES: usize = 5;
/// Topics every node subscribes to. 100,000 is the figure; this many keeps the
/// test quick in a debug build, and the cost per group does not depend on the count.
const TOPICS: usize = 6000;
fn topics() -> usize {
    std::env::var("TOPICS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(TOPICS)
}
/// Topics per subscribing connection (under `max_subscriptions_per_client`).
const PER_CONN: usize = 3000;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn topic(t: usize) -> String {
    format!("topic-{t}")
}

/// Subscribes `conns`' connections to every topic, `PER_CONN` each, in one read each.
fn subscribe(net: &mut Net, node: usize, conns: &[ConnId], on: bool) {
    for (c, &conn) in conns.iter().enumerate() {
        let mut b = BytesMut::new();
        for t in c * PER_CONN..((c + 1) * PER_CONN).min(topics()) {
            let p = if on {
                ClientPacket::Subscribe {
                    topic: topic(t).as_str().into(),
                }
            } else {
                ClientPacket::Unsubscribe {
                    topic: topic(t).as_str().into(),
                }
            };
            p.encode(&mut b);
        }
        net.send_bytes(node, conn, &b);
    }
}

/// Publishes one event to each of `sample` topics from node 0, and checks that every
/// node's subscriber got each exactly once.
fn publish_sample(net: &mut Net, conns: &[Vec<ConnId>], sample: usize) {
    let publisher = net.client(0, "");
    for (n, c) in conns.iter().enumerate() {
        for &c in c {
            net.take(n, c);
        }
    }
    let step = topics() / sample;
    for s in 0..sample {
        net.send(
            0,
            publisher,
            ClientPacket::Publish {
                topic: topic(s * step).as_str().into(),
                event: Bytes::from(vec![s as u8; 16]),
            },
        );
    }
    net.secs(2);
    for (n, c) in conns.iter().enumerate() {
        let mut got: Vec<String> = c
            .iter()
            .flat_map(|&c| net.take(n, c))
            .filter_map(|p| match p {
                NodePacket::Publish { topic, .. } => Some(topic.as_str().to_owned()),
                _ => None,
            })
            .collect();
        got.sort();
        let mut want: Vec<String> = (0..sample).map(|s| topic(s * step)).collect();
        want.sort();
        assert_eq!(got, want, "node {n}'s subscribers");
    }
    net.send(0, publisher, ClientPacket::Close);
}

#[test]
fn many_groups_cost_little_and_give_their_memory_back() {
    let config = Config {
        max_subscriptions_per_client: PER_CONN,
        ..Config::default()
    };
    let mut net = Net::new();
    for i in 0..NODES {
        let seeds: Vec<usize> = if i == 0 { vec![] } else { vec![0] };
        let mut m = mesh_config(i, &seeds);
        m.scribe.max_trees = usize::MAX;
        net.add_with(config.clone(), m, Security::Plain);
    }
    net.secs(20);
    for i in 0..NODES {
        assert!(
            net.events_of(i).contains(&&Event::Ready),
            "node {i} not ready"
        );
    }
    // The connections outlive the cycles: what is measured is the groups.
    let conns: Vec<Vec<ConnId>> = (0..NODES)
        .map(|n| {
            (0..topics().div_ceil(PER_CONN))
                .map(|_| net.client(n, ""))
                .collect()
        })
        .collect();
    net.events.clear();
    net.secs(2);
    let base = live();

    let left_after: Vec<usize> = (0..3)
        .map(|cycle| one_cycle(&mut net, &conns, base, cycle))
        .collect();
    // What is left is small beside what the groups took (the connections' read buffers,
    // grown for thousands of subscriptions in one read, and the harness's own queue), and
    // does not grow with cycles.
    assert!(left_after[0] < 100 * topics() + (1 << 20), "{left_after:?}");
    assert!(
        left_after[2] <= left_after[0] + (16 << 10),
        "{left_after:?}"
    );
}

/// Every node subscribes to every topic, the heap is measured and checked, a sample is
/// published, every topic is left; returns the bytes left over `base` once it has all gone.
fn one_cycle(net: &mut Net, conns: &[Vec<ConnId>], base: usize, cycle: usize) -> usize {
    for (n, c) in conns.iter().enumerate() {
        subscribe(net, n, c, true);
    }
    net.secs(5);
    let trees: usize = (0..NODES).map(|n| net.node(n).status().trees).sum();
    assert_eq!(trees, NODES * topics() * 5, "every node in every tree");
    let held = live() - base;
    // What the nodes charge to their memory budgets for it (idle clients hold nothing).
    let charged: usize = (0..NODES).map(|n| net.node(n).memory_used()).sum();
    eprintln!(
        "cycle {cycle}: {held} bytes over {NODES} nodes for {} topics \
         ({} trees): {} bytes a topic on each node, {} a tree; charged {charged} ({:.2}x)",
        topics(),
        trees,
        held / topics() / NODES,
        held / trees,
        charged as f64 / held as f64
    );
    // The estimate the budget uses is near the truth, on the safe side or close.
    assert!(
        charged as f64 >= 0.8 * held as f64 && charged as f64 <= 1.5 * held as f64,
        "charged {charged} for {held} bytes held"
    );
    // Within what a node of 5 may take for the 100,000 groups in a quarter of
    // the default budget (256 MiB / 100,000 topics = 2684 bytes a topic).
    assert!(
        held / topics() / NODES <= 2000,
        "{} bytes a topic",
        held / topics() / NODES
    );
    publish_sample(net, conns, 200);

    for (n, c) in conns.iter().enumerate() {
        subscribe(net, n, c, false);
    }
    // Past the time origins keep their messages and windows remember them.
    net.secs(130);
    net.events.clear();
    net.events.shrink_to_fit();
    let left = live().saturating_sub(base);
    eprintln!("cycle {cycle}: {left} bytes left after every topic was left");
    let charged: usize = (0..NODES).map(|n| net.node(n).memory_used()).sum();
    assert_eq!(charged, 0, "nothing charged once every group is gone");
    left
}
