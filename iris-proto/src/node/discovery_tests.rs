//! Nodes that find each other by beacons, with no seeds, in memory.

use crate::mesh::discovery::DiscoveryConfig;
use crate::mesh::{MeshConfig, Security};
use crate::testnet::{Net, mesh_config};
use crate::{Event, MeshEvent};

/// Node `i` of network `name`, with no seeds and discovery on.
fn discovering(i: usize, name: &str) -> MeshConfig {
    let mut cfg = mesh_config(i, &[]);
    cfg.link.network = name.into();
    cfg.discovery = Some(DiscoveryConfig::default());
    cfg
}

fn peers(net: &Net, i: usize) -> usize {
    net.node(i).mesh().unwrap().overlay().peer_count()
}

#[test]
fn nodes_without_seeds_find_each_other_and_converge_as_one_network() {
    let mut net = Net::new();
    for i in 0..4 {
        net.add(discovering(i, "n"), Security::Plain);
        // Started a second apart: each later one finds the ones before.
        net.secs(1);
    }
    net.secs(20);
    for i in 0..4 {
        assert_eq!(peers(&net, i), 3, "node {i}");
        assert!(net.events_of(i).contains(&&Event::Ready), "node {i}");
    }
    // Each node joined through a node it discovered, or was joined.
    let found = net
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Mesh(MeshEvent::Discovered { .. })))
        .count();
    assert!(found >= 3, "{found} discoveries");
}

#[test]
fn networks_of_other_names_hear_each_other_and_stay_apart() {
    let mut net = Net::new();
    net.add(discovering(0, "a"), Security::Plain);
    net.add(discovering(1, "a"), Security::Plain);
    net.add(discovering(2, "b"), Security::Plain);
    net.add(discovering(3, "b"), Security::Plain);
    net.secs(20);
    for i in 0..4 {
        assert_eq!(peers(&net, i), 1, "node {i}");
    }
    let foreign: u64 = (0..4)
        .map(|i| net.node(i).mesh().unwrap().stats().beacons_foreign)
        .sum();
    assert!(
        foreign > 0,
        "the beacons of the other network were heard and ignored"
    );
}

#[test]
fn two_halves_that_formed_apart_merge_once_they_hear_each_other() {
    let mut net = Net::new();
    // {0, 1} and {2, 3} cannot reach each other at first.
    for a in [0, 1] {
        for b in [2, 3] {
            net.cut.insert((a, b));
        }
    }
    for i in 0..4 {
        net.add(discovering(i, "n"), Security::Plain);
    }
    net.secs(20);
    for i in 0..4 {
        assert_eq!(peers(&net, i), 1, "node {i} before the heal");
    }
    net.cut.clear();
    // Settled nodes beacon every 5 s: within a few periods the halves are one.
    net.secs(30);
    for i in 0..4 {
        assert_eq!(peers(&net, i), 3, "node {i} after the heal");
    }
}

#[test]
fn a_node_without_discovery_sends_no_beacons_and_ignores_them() {
    let mut net = Net::new();
    net.add(discovering(0, "n"), Security::Plain);
    net.add(mesh_config(1, &[]), Security::Plain);
    net.secs(20);
    assert_eq!(peers(&net, 0), 0);
    assert_eq!(peers(&net, 1), 0);
    assert_eq!(net.node(1).mesh().unwrap().stats().beacons_sent, 0);
    assert!(net.node(0).mesh().unwrap().stats().beacons_sent > 10);
}

/// A node whose seeds are names its driver resolves later (a Kubernetes Service before its
/// pods are up) founds no network of its own meanwhile (as with seeds that are down, it
/// serves its own clients alone, still seeking): it says it is alone each heartbeat
/// period, so that the driver resolves the names again, and joins once it is given where.
#[test]
fn a_node_with_seeds_still_to_come_waits_for_them_and_joins_through_them() {
    let mut net = Net::new();
    net.add(mesh_config(0, &[]), Security::Plain);
    let mut cfg = mesh_config(1, &[]);
    cfg.seeds_to_come = true;
    net.add(cfg, Security::Plain);
    net.secs(20);
    let alone = net
        .events_of(1)
        .iter()
        .filter(|e| ***e == Event::Mesh(MeshEvent::Alone))
        .count();
    assert!(alone >= 5, "said alone {alone} times in 20 s");
    let seeded = |net: &Net, i: usize| net.node(i).mesh().unwrap().overlay().is_seeded();
    assert!(!seeded(&net, 1), "it founded a network of its own");
    assert!(seeded(&net, 0));
    net.join_via(1, crate::testnet::addr(0));
    net.secs(15);
    assert_eq!((peers(&net, 0), peers(&net, 1)), (1, 1));
    assert!(seeded(&net, 1));
}
