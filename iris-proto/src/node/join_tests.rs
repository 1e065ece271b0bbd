//! Joining a network whose seeds are not all there: a node whose seed did not answer is
//! not a network of its own, even once others joined through it.

use crate::mesh::Security;
use crate::overlay::NodeId;
use crate::testnet::{Net, mesh_config};
use std::collections::BTreeSet;

/// The ids in node `i`'s leaf set.
fn leaves(net: &Net, i: usize) -> BTreeSet<NodeId> {
    net.node(i)
        .mesh()
        .expect("networked")
        .overlay()
        .leaves()
        .members()
        .collect()
}

fn id(net: &Net, i: usize) -> NodeId {
    net.node(i).mesh().expect("networked").overlay().id()
}

#[test]
fn a_node_whose_seed_was_down_joins_the_network_with_those_that_joined_through_it() {
    let mut net = Net::new();
    // The network: nodes 0 to 2, then the others, each through node 0.
    for i in 0..3 {
        let seeds: &[usize] = if i == 0 { &[] } else { &[0] };
        net.add(mesh_config(i, seeds), Security::Plain);
    }
    net.secs(10);
    // Node 3's seed (the address of node 6) is not up yet, and node 4 takes node 3 for its
    // seed: the two know each other, and nobody else.
    net.add(mesh_config(3, &[6]), Security::Plain);
    net.secs(2);
    net.add(mesh_config(4, &[3]), Security::Plain);
    net.secs(10);
    assert_eq!(leaves(&net, 3), BTreeSet::from([id(&net, 4)]));
    // Node 6 comes up, as part of the network: node 3 reaches its seed, and the two rings
    // become one.
    net.add(mesh_config(5, &[0]), Security::Plain);
    net.add(mesh_config(6, &[0]), Security::Plain);
    net.secs(60);
    // Seven nodes, leaf sets of sixteen: every node has every other for a leaf.
    let all: BTreeSet<NodeId> = (0..7).map(|i| id(&net, i)).collect();
    for i in 0..7 {
        let mut want = all.clone();
        want.remove(&id(&net, i));
        assert_eq!(leaves(&net, i), want, "node {i}'s leaf set");
    }
}

/// Whether node `i` has said it serves.
fn ready(net: &Net, i: usize) -> bool {
    net.events_of(i).contains(&&crate::Event::Ready)
}

#[test]
fn a_lone_node_waits_its_boot_quiet_a_node_joining_a_network_serves_within_seconds() {
    // (The test network's overlay: boot_quiet 5 s, change_quiet 2 s; the defaults are 10 s
    // and 3 s.)
    let mut net = Net::new();
    net.add(mesh_config(0, &[]), Security::Plain);
    net.secs(4);
    assert!(!ready(&net, 0), "a lone node waits to be found");
    net.secs(2);
    assert!(ready(&net, 0));
    // A node joining it: answered at once, then quiet for change_quiet, not boot_quiet.
    net.add(mesh_config(1, &[0]), Security::Plain);
    net.secs(1);
    assert!(!ready(&net, 1), "not quiet for change_quiet yet");
    net.secs(2);
    assert!(ready(&net, 1), "joined and quiet for change_quiet");
    // A node whose seed is not there is alone: it waits the whole boot quiet (and keeps
    // looking for its network; see the test above).
    net.add(mesh_config(2, &[7]), Security::Plain);
    net.secs(4);
    assert!(!ready(&net, 2));
}
