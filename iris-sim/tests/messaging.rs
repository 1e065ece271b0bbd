//! The messaging workload on small networks: relay clients on every node broadcasting,
//! publishing, requesting and tunnelling through churn, partitions and crashes, checked by
//! the delivery auditor; and the auditor shown to catch a node that delivers twice.

use iris_sim::{Audit, Partition, SimConfig, Summary, Workload, run};
use std::time::Duration;

fn messaging(seed: u64) -> SimConfig {
    SimConfig {
        nodes: 40,
        minutes: 2.0,
        churn: 0.05,
        seed,
        workload: Some(Workload::small()),
        ..SimConfig::default()
    }
}

/// The safety properties, which hold whatever the faults: nothing twice, nothing to the
/// wrong client, one outcome per request, tunnels in order.
fn assert_safe(s: &Summary) -> &Audit {
    assert_safe_with(s, 1000)
}

fn assert_safe_with(s: &Summary, min_deliveries: u64) -> &Audit {
    assert!(s.violations.is_empty(), "oracle: {:?}", &s.violations);
    let a = s.audit.as_ref().expect("the messaging workload ran");
    assert!(
        a.violations.is_empty(),
        "auditor: {:?}",
        &a.violations[..a.violations.len().min(5)]
    );
    assert_eq!(
        (
            a.duplicates,
            a.misdeliveries,
            a.requests_without_one_outcome
        ),
        (0, 0, 0)
    );
    assert_eq!((a.late_requests, a.tunnel_order_violations), (0, 0));
    assert!(
        a.expected_deliveries > min_deliveries,
        "too little traffic: {a:?}"
    );
    assert!(
        a.requests > 100 && a.tunnels > 30,
        "too little traffic: {a:?}"
    );
    a
}

/// Every message once, but for at most one delivery of each kind a run lost to a node
/// that left or crashed while the message crossed it: seed 3 loses a broadcast and an
/// event sent within half a second of a graceful leave (at 89.2 s), as seeds 6 and 8 did
/// before 2026-12-06 (the trace changes with any change to the overlay). Multicast that
/// survives a node leaving its path is issue 21's; until then this says how much is lost.
#[test]
fn small_networks_under_churn_deliver_every_message_once() {
    for seed in 1..=3 {
        let s = run(&messaging(seed));
        let a = assert_safe(&s);
        // About 900 broadcast and 600 event deliveries are owed a run: 0.998 allows one
        // lost of each.
        assert!(a.broadcast_delivery >= 0.998, "seed {seed}: {a:?}");
        assert!(a.publish_delivery >= 0.998, "seed {seed}: {a:?}");
        assert!(a.requests_answered >= 0.99, "seed {seed}: {a:?}");
        assert!(
            a.tunnels_completed * 10 >= a.tunnels * 9,
            "seed {seed}: {a:?}"
        );
    }
}

#[test]
fn the_same_seed_replays_the_same_messaging_run() {
    let a = run(&messaging(4));
    let b = run(&messaging(4));
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(
        a.audit,
        b.audit.clone().map(|mut x| {
            x.violations = a.audit.as_ref().unwrap().violations.clone();
            x
        })
    );
    assert_ne!(run(&messaging(5)).trace_hash, a.trace_hash);
}

#[test]
fn messaging_over_secure_links_is_delivered_and_deterministic() {
    use iris_proto::NetworkKey;
    use iris_proto::Security;
    let path = format!(
        "{}/../iris-proto/tests/fixtures/net-pkcs8.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let key = NetworkKey::from_bytes(&std::fs::read(path).unwrap()).unwrap();
    let cfg = SimConfig {
        nodes: 12,
        minutes: 1.0,
        churn: 0.0,
        security: Security::Rsa(std::sync::Arc::new(key)),
        ..messaging(6)
    };
    let s = run(&cfg);
    let a = assert_safe_with(&s, 500);
    assert_eq!((a.broadcast_delivery, a.publish_delivery), (1.0, 1.0));
    assert_eq!(a.requests_answered, 1.0);
    assert_eq!(run(&cfg).trace_hash, s.trace_hash);
}

#[test]
fn a_partition_that_heals_leaves_whole_trees_and_loses_nothing() {
    let cfg = SimConfig {
        churn: 0.0,
        partition: Some(Partition {
            start: Duration::from_secs(40),
            length: Duration::from_secs(30),
            fraction: 0.3,
        }),
        ..messaging(7)
    };
    let s = run(&cfg);
    // Safety holds throughout; the oracle found every tree whole again (one root each,
    // every node of a tree reached from it) once quiet.
    let a = assert_safe(&s);
    // Across the partition nothing can arrive, but once it heals every tree node asks the
    // origins for what it missed (30 s of it, within the minute they keep): nothing is
    // lost. (Before the repair, delivery was 0.6-0.9 here.)
    assert_eq!(a.stable_losses, 0, "{:?}", a.stable_loss_examples);
    assert_eq!(
        (a.broadcast_delivery, a.publish_delivery),
        (1.0, 1.0),
        "{a:?}"
    );
}

#[test]
fn a_crashed_member_node_ends_its_requests_and_tunnels_properly() {
    // One service per cluster, taking 1.5 s to answer a request or echo a tunnel message:
    // when a member's node crashes, requests and tunnels to it are in flight (at 8 actions
    // a second, some tunnels to it are open at the crash whatever course the seed takes).
    let w = Workload {
        services: 3,
        actions_per_sec: 8.0,
        slow_services: 1.0,
        slow_delay: 1_500_000_000,
        ..Workload::small()
    };
    let calm = SimConfig {
        churn: 0.0,
        workload: Some(w),
        ..messaging(8)
    };
    let crash = SimConfig {
        kill_service_node_at: Some(Duration::from_secs(45)),
        ..calm.clone()
    };
    let (calm, crash) = (run(&calm), run(&crash));
    let (before, after) = (assert_safe(&calm), assert_safe(&crash));
    assert_eq!(before.tunnels_broken, 0);
    // Its requests timed out (one REPLY each, as the auditor checked) and its tunnels ended
    // with an error at the surviving end; everyone else was served as before.
    assert!(
        after.requests_timed_out > before.requests_timed_out,
        "{after:?} against {before:?}"
    );
    assert!(after.tunnels_broken > 0, "{after:?}");
    assert!(after.broadcast_delivery >= 0.999, "{after:?}");
}

#[test]
fn the_auditor_catches_a_node_that_delivers_twice() {
    let cfg = SimConfig {
        inject_duplicate_deliveries: true,
        ..messaging(9)
    };
    let s = run(&cfg);
    let a = s.audit.as_ref().unwrap();
    assert!(a.duplicates > 0, "{a:?}");
    assert!(s.violation_count() > 0);
}

/// Found by swarm testing: 50 nodes, links 13-201 ms, broken links and a partition. A
/// request's time budget ignored the dial a hop first needed and the time a message had
/// waited for a link that then failed, so members got requests after their callers had
/// given up. Replay: `cargo run --release -p iris-sim -- --swarm-seed 5346406434305546273
/// --max-nodes 50`.
#[test]
fn no_request_reaches_a_member_after_its_deadline_on_slow_breaking_links() {
    let cfg = iris_sim::swarm::draw(5_346_406_434_305_546_273, 50);
    assert!(cfg.partition.is_some() && cfg.link_breaks > 0.0 && cfg.workload.is_some());
    assert_no_late_request(&cfg, 100);
}

/// Found by swarm testing: 50 nodes, links 16-207 ms, a partition, and one message in 200
/// held up 3.5 s on its link (a delay spike). A request's budget counted each hop's
/// planned round trip but not a trip that took seconds longer, so members got requests
/// their callers had given up on. Each node now learns how late a peer's messages arrive
/// from the clock stamps on them. Replay: `cargo run --release -p iris-sim --
/// --swarm-seed 13730156981370488622 --max-nodes 50`.
#[test]
fn no_request_reaches_a_member_late_through_delay_spikes() {
    let cfg = iris_sim::swarm::draw(13_730_156_981_370_488_622, 50);
    assert!(cfg.spike_rate > 0.0 && cfg.spike_delay.as_secs() >= 3 && cfg.workload.is_some());
    assert_no_late_request(&cfg, 100);
}

/// Found by swarm testing (200 nodes, a 15 s partition, 1 % of messages delayed 2.8 s):
/// what a node knew of a peer's clock went with the link, and the first link after the
/// partition carried only late messages at first, which it took for the fastest trip; a
/// request held up 1.3 s on it reached its member after the deadline. A peer's clock is
/// now remembered across its links. Replay: `cargo run --release -p iris-sim --
/// --swarm-seed 10400885895595338549 --max-nodes 200`.
#[test]
fn no_request_reaches_a_member_late_on_the_first_link_after_a_partition() {
    let cfg = iris_sim::swarm::draw(10_400_885_895_595_338_549, 200);
    assert!(cfg.partition.is_some() && cfg.spike_rate > 0.0 && cfg.workload.is_some());
    assert_no_late_request(&cfg, 1000);
}

/// A swarm run of the messaging workload: the oracle and the auditor find nothing, and no
/// request reached its member after its deadline (with at least `requests` sent).
fn assert_no_late_request(cfg: &SimConfig, requests: u64) {
    let s = run(cfg);
    assert!(s.violations.is_empty(), "oracle: {:?}", &s.violations);
    let a = s.audit.as_ref().expect("the messaging workload ran");
    assert!(a.requests > requests, "too little traffic: {a:?}");
    assert_eq!(a.late_requests, 0, "{:?}", &a.violations);
    assert!(a.violations.is_empty(), "{:?}", &a.violations);
}

/// Found by swarm testing: 502 nodes, a partition of 11 % healing while leaf sets were
/// mended. Three nodes subscribed to a tree each through the next while the routes were
/// in flux: a cycle no root reached, kept alive by its beats (two trees, seven nodes). A
/// tree now follows its route at each refresh. Replay: `cargo run --release -p iris-sim --
/// --swarm-seed 12282837761255523018 --max-nodes 2000`.
#[test]
fn no_tree_keeps_a_cycle_formed_while_a_partition_heals() {
    let cfg = iris_sim::swarm::draw(12_282_837_761_255_523_018, 2000);
    assert!(cfg.partition.is_some() && cfg.workload.is_some() && cfg.nodes > 400);
    let s = run(&cfg);
    assert_eq!(s.violations, vec![]);
}

/// Stalls (a node stopped for 12 s, as under SIGSTOP, then resumed with every timer late)
/// keep every safety property and replay from the seed. They still cost deliveries (what
/// others sent to the stopped node while its peers routed around it is lost: issue 21,
/// item 1); the run prints how much (seed 5: about 0.98 of broadcasts and events).
#[test]
fn stalls_keep_every_message_safe_and_replay_from_the_seed() {
    let stalling = |seed| SimConfig {
        stalls: 3.0,
        stall_length: Duration::from_secs(12),
        ..messaging(seed)
    };
    let s = run(&stalling(5));
    let a = assert_safe(&s);
    eprintln!(
        "stalls: broadcast {:.5}, publish {:.5}, requests answered {:.5}",
        a.broadcast_delivery, a.publish_delivery, a.requests_answered
    );
    // The stalls acted (the run is not the same without them), and replay.
    assert_ne!(run(&messaging(5)).trace_hash, s.trace_hash);
    assert_eq!(run(&stalling(5)).trace_hash, s.trace_hash);
}
