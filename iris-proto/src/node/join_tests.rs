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

/// How many peers node `i` knows.
fn peers(net: &Net, i: usize) -> usize {
    net.node(i).status().peers
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

#[test]
fn a_node_cut_off_for_20_s_is_back_within_3_s_of_the_heal() {
    let mut net = Net::new();
    for i in 0..4 {
        let seeds: &[usize] = if i == 0 { &[] } else { &[0] };
        net.add(mesh_config(i, seeds), Security::Plain);
    }
    net.secs(20);
    let member = net.client(0, "svc");
    let sender = net.client(3, "");
    net.secs(3);
    // Node 3's link goes down: nothing crosses. Its own ends of the links fail; the
    // others' stay open, as half-open TCP connections do (nothing tells them).
    for j in 0..3 {
        net.cut.insert((j, 3));
        net.fail_links_one_side(3, j);
    }
    net.secs(20);
    assert_eq!(peers(&net, 3), 0, "node 3 took the others for dead");
    net.take(0, member);
    net.cut.clear();
    let healed = net.now;
    let mut back = None;
    while net.now.saturating_duration_since(healed) < std::time::Duration::from_secs(30) {
        net.millis(100);
        if back.is_none() && (0..4).all(|i| peers(&net, i) == 3) {
            back = Some(net.now.saturating_duration_since(healed));
            break;
        }
    }
    let back = back.expect("the ring never became whole");
    assert!(back <= std::time::Duration::from_secs(3), "{back:?}");
    // And its clients reach the others again.
    net.send(
        3,
        sender,
        crate::relay::ClientPacket::Broadcast {
            cluster: "svc".into(),
            message: "back".into(),
        },
    );
    net.secs(1);
    assert_eq!(
        net.take(0, member),
        [crate::relay::NodePacket::Broadcast {
            message: "back".into()
        }]
    );
}

/// A node cut off while its only seed crashed comes back through the peers it gave up
/// (`overlay::graveyard`): it pings them every period, not only its seed.
#[test]
fn a_node_cut_off_while_its_seed_died_comes_back_through_its_former_peers() {
    let mut net = Net::new();
    for i in 0..5 {
        let seeds: &[usize] = if i == 0 { &[] } else { &[0] };
        net.add(mesh_config(i, seeds), Security::Plain);
    }
    net.secs(23);
    assert!((0..5).all(|i| peers(&net, i) == 4));
    for j in 0..4 {
        net.cut.insert((j, 4));
        net.fail_links_one_side(4, j);
    }
    net.secs(5);
    net.kill(0);
    net.secs(15);
    assert_eq!(peers(&net, 4), 0, "node 4 took the others for dead");
    net.cut.clear();
    let healed = net.now;
    let mut back = None;
    while net.now.saturating_duration_since(healed) < std::time::Duration::from_secs(60) {
        net.millis(100);
        if (1..5).all(|i| peers(&net, i) == 3) {
            back = Some(net.now.saturating_duration_since(healed));
            break;
        }
    }
    let back = back.expect("node 4 never found the others again");
    assert!(back <= std::time::Duration::from_secs(3), "{back:?}");
}
