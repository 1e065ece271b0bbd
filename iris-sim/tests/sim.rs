//! Fixed-seed simulations: correctness under churn, determinism, and an oracle that can fail.

use iris_sim::{SimConfig, Violation, run};

fn small(seed: u64) -> SimConfig {
    SimConfig {
        nodes: 40,
        minutes: 2.0,
        churn: 0.1,
        seed,
        ..SimConfig::default()
    }
}

#[test]
fn small_networks_under_churn_satisfy_the_oracle() {
    for seed in 1..=4 {
        let s = run(&small(seed));
        assert!(
            s.violations.is_empty(),
            "seed {seed}: {:?}",
            &s.violations[..s.violations.len().min(5)]
        );
        assert!(s.nodes >= 35, "seed {seed}: only {} live nodes", s.nodes);
        assert!(
            s.mean_hops > 0.0 && s.mean_hops <= 40f64.log(16.0) + 1.0,
            "seed {seed}: {}",
            s.mean_hops
        );
    }
}

/// The smallest network and seed that showed nodes misplaced for good (issue 20): a node
/// joined through a seed that was leaving and never answered; another node joined through
/// it; the two took each other for the network, and their leaf sets stayed wrong (51
/// violations). A node now keeps joining through its seeds until one answers, and the
/// island merges.
#[test]
fn a_node_whose_seed_left_does_not_stay_an_island_with_those_that_joined_through_it() {
    let s = run(&SimConfig {
        nodes: 100,
        churn: 0.2,
        seed: 1,
        ..small(1)
    });
    assert!(
        s.violations.is_empty(),
        "{:?}",
        &s.violations[..s.violations.len().min(5)]
    );
}

#[test]
fn a_small_network_on_secure_links_satisfies_the_oracle() {
    use iris_proto::NetworkKey;
    use iris_proto::Security;
    let path = format!(
        "{}/../iris-proto/tests/fixtures/net-pkcs8.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let key = NetworkKey::from_bytes(&std::fs::read(path).unwrap()).unwrap();
    // The real handshake (X25519, RSA-PSS signatures, sealed records) on every link.
    let cfg = SimConfig {
        nodes: 12,
        minutes: 1.0,
        security: Security::Rsa(std::sync::Arc::new(key)),
        ..small(6)
    };
    let s = run(&cfg);
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    assert!(s.nodes >= 10);
    // Same seed, same run, cryptography included.
    assert_eq!(run(&cfg).trace_hash, s.trace_hash);
}

#[test]
fn the_same_seed_replays_the_same_run_and_another_seed_does_not() {
    for seed in [3, 11, 42] {
        let a = run(&small(seed));
        let b = run(&small(seed));
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}");
        assert_eq!(a.events, b.events);
        assert_eq!(a.mean_hops, b.mean_hops);
    }
    assert_ne!(run(&small(3)).trace_hash, run(&small(4)).trace_hash);
}

#[test]
fn the_oracle_catches_a_network_without_leaf_set_repair() {
    let mut cfg = small(5);
    cfg.churn = 0.3;
    cfg.overlay.repair = false;
    let s = run(&cfg);
    let wrong = s
        .violations
        .iter()
        .filter(|v| matches!(v, Violation::WrongLeafSet { .. }))
        .count();
    assert!(
        wrong > 0,
        "no leaf-set violation found without repair: {:?}",
        s.violations
    );
    // And the liveness check sees that the ring never came right within the bound.
    assert!(
        s.violations
            .iter()
            .any(|v| matches!(v, Violation::NotConverged { .. })),
        "{:?}",
        s.violations
    );
    // With repair, the same run is clean.
    cfg.overlay.repair = true;
    assert_eq!(run(&cfg).violations, vec![]);
}

#[test]
fn a_thousand_nodes_join_and_churn() {
    let cfg = SimConfig {
        nodes: 1000,
        minutes: 2.0,
        churn: 0.05,
        seed: 7,
        ..SimConfig::default()
    };
    let s = run(&cfg);
    eprintln!("{}", s.to_json());
    assert!(
        s.violations.is_empty(),
        "{:?}",
        &s.violations[..s.violations.len().min(5)]
    );
    assert!(s.nodes >= 990);
    // Every table entry live and in its slot (else a violation above), and nearly every
    // slot a live node fits is filled.
    assert!(s.table_fill >= 0.99, "table fill {}", s.table_fill);
    assert!(
        s.mean_hops <= 1000f64.log(16.0) + 1.0,
        "mean hops {}",
        s.mean_hops
    );
    // About 1 KiB/s a node: 972, 1004 and 1043 B/s with seeds 1, 2 and 7 at 513f37a (981,
    // 981 and 1016 before messages waiting for a dial went out on a link that came up the
    // other way, instead of waiting for the dial's end).
    assert!(
        s.maintenance_bytes_per_node_per_sec <= 1100.0,
        "{} B/s",
        s.maintenance_bytes_per_node_per_sec
    );
}

#[test]
fn the_liveness_bound_grows_with_log_n_and_with_faults() {
    let cfg = SimConfig::default();
    let at = |n| iris_sim::liveness_bound(&cfg, n).as_secs();
    // 33 s to find a dead table entry, 3 s quiet, a 3 s gossip round per hop plus two.
    assert_eq!(
        (at(100), at(1000), at(10_000), at(100_000)),
        (48, 51, 54, 57)
    );
    let faults = SimConfig {
        link_breaks: 1.0,
        ..SimConfig::default()
    };
    assert_eq!(iris_sim::liveness_bound(&faults, 1000).as_secs(), 51 + 60);
}

fn faulty(seed: u64) -> SimConfig {
    SimConfig {
        nodes: 60,
        minutes: 2.0,
        churn: 0.05,
        seed,
        ..SimConfig::default()
    }
}

#[test]
fn a_partition_heals_into_one_ring() {
    use iris_sim::Partition;
    use std::time::Duration;
    // Forgotten neighbours are pinged every few seconds however long the partition
    // lasted (`overlay::graveyard`: every period for a minute, then every 6 s): the rings
    // are one again within seconds of the heal (13 s with seed 1 when the pings backed off
    // to every 30 s). The oracle's clock starts at the last fault; so that it starts at
    // the heal, the first part has no churn and the partition (20 s to 110 s after the
    // joins) outlasts the minute of faults: over seeds 1 to 24, right again 1 s after the
    // heal for 10 seeds, 3 s for one, 6 s (the graveyard's gap) for 12 and 7 s for one.
    // The second part churns through the heal as well (5 %/min, to 2 min), so the clock
    // starts at the last churn, and a crash then is found by silence (up to 33 s for a
    // table entry): 1 to 16 s over these seeds, held to the liveness bound like every run.
    for seed in 1..=24 {
        let partition = Some(Partition {
            start: Duration::from_secs(20),
            length: Duration::from_secs(90),
            fraction: 0.4,
        });
        let healed = SimConfig {
            partition,
            churn: 0.0,
            minutes: 1.0,
            ..faulty(seed)
        };
        let s = run(&healed);
        assert!(s.violations.is_empty(), "seed {seed}: {:?}", s.violations);
        assert!(s.convergence_secs <= 10.0, "seed {seed}: {}", s.to_json());
        let churned = SimConfig {
            partition,
            ..faulty(seed)
        };
        let s = run(&churned);
        assert!(
            s.violations.is_empty(),
            "seed {seed}: {:?}",
            &s.violations[..s.violations.len().min(5)]
        );
        assert!(s.nodes >= 55, "seed {seed}");
    }
}

#[test]
fn broken_links_and_limited_bandwidth_are_survived() {
    let cfg = SimConfig {
        link_breaks: 30.0,
        bandwidth: Some(20_000),
        ..faulty(3)
    };
    let s = run(&cfg);
    assert!(
        s.violations.is_empty(),
        "{:?}",
        &s.violations[..s.violations.len().min(5)]
    );
}

#[test]
fn delay_spikes_shorter_than_the_detector_kill_nobody_and_longer_ones_do() {
    use std::time::Duration;
    let spiky = |delay| SimConfig {
        churn: 0.0,
        spike_rate: 0.002,
        spike_delay: Duration::from_secs(delay),
        ..faulty(4)
    };
    // Leaves are declared dead after 3 silent 3 s periods: a 5 s spike is merely slow.
    let s = run(&spiky(5));
    assert_eq!(s.false_deaths, 0, "{}", s.to_json());
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    // A 20 s spike on a FIFO link silences it past the detector: the count shows it.
    let s = run(&spiky(20));
    assert!(s.false_deaths > 0, "{}", s.to_json());
}

#[test]
fn a_hundred_nodes_joining_at_once_converge() {
    let cfg = SimConfig {
        nodes: 100,
        minutes: 0.5,
        churn: 0.05,
        join_spread: std::time::Duration::ZERO,
        seed: 12,
        ..SimConfig::default()
    };
    let s = run(&cfg);
    assert!(
        s.violations.is_empty(),
        "{:?}",
        &s.violations[..s.violations.len().min(5)]
    );
    assert!(s.nodes >= 95);
}

/// Found by swarm testing: the first link break of a run was drawn without regard to the
/// end of the faults, so a short run could break a link after the quiet phase began, and
/// the oracle then judged leaf sets while a live neighbour was cut off. Faults now all end
/// where the quiet phase begins. Replay: `cargo run --release -p iris-sim -- --swarm-seed
/// 9323506177413806589 --max-nodes 200`.
#[test]
fn no_fault_strikes_after_the_quiet_phase_begins() {
    let cfg = iris_sim::swarm::draw(9_323_506_177_413_806_589, 200);
    assert!(cfg.link_breaks > 0.0 && cfg.minutes <= 0.5);
    assert_eq!(run(&cfg).violations, vec![]);
}

/// Found by swarm testing: 300 nodes joining within 2 s, 0.7 % of messages held up 4.8 s.
/// Two nodes ended with leaf sets of far nodes only (each the other's one near node, the
/// rest spread over the ring), and their true neighbours never heard of them: lookups of
/// their keys stopped at them, nine trees had two roots, and the overlay was never right.
/// Leaves are mutual in a settled ring, so a node that is counted as a leaf by a peer far
/// outside its own leaf set now looks that peer up for it. Found with `--swarm-seed
/// 1729491876580050592 --max-nodes 300` (and, with 1000 nodes joining within 1 s,
/// `--swarm-seed 10158426608714123043 --max-nodes 1000`); since a node alone dials its
/// seeds every second, that run no longer leaves nodes apart, and this one does (162
/// nodes joining at once): `cargo run --release -p iris-sim -- --swarm-seed
/// 13291661556140048642 --max-nodes 300`.
#[test]
fn nodes_whose_leaf_sets_formed_apart_from_the_ring_find_their_place() {
    let cfg = iris_sim::swarm::draw(13_291_661_556_140_048_642, 300);
    assert!(cfg.join_spread.as_secs() <= 2 && cfg.spike_rate > 0.0);
    let s = run(&cfg);
    assert_eq!(s.violations, vec![]);
    assert!(s.misplaced_helped > 0, "{}", s.to_json());
}

/// Found by swarm testing: 939 nodes, 20 %/min churn, a third of them cut off for 35 s.
/// Two neighbours gave each other up during the partition; each was the other's only
/// missing leaf, and each waited in a graveyard of 32 probed one entry every 30 s, so the
/// overlay was not right within its bound. Forgotten peers the leaf set would take back
/// are now probed at every graveyard round. Replay: `cargo run --release -p iris-sim --
/// --swarm-seed 9944229612336663958 --max-nodes 2000`.
#[test]
fn neighbours_given_up_in_a_partition_find_each_other_again_in_time() {
    let cfg = iris_sim::swarm::draw(9_944_229_612_336_663_958, 2000);
    assert!(cfg.partition.is_some() && cfg.nodes > 900);
    assert_eq!(run(&cfg).violations, vec![]);
}
