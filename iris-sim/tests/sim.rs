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
    assert!(
        s.mean_hops <= 1000f64.log(16.0) + 1.0,
        "mean hops {}",
        s.mean_hops
    );
    assert!(
        s.maintenance_bytes_per_node_per_sec <= 1024.0,
        "{} B/s",
        s.maintenance_bytes_per_node_per_sec
    );
}
