//! Trees of a few nodes whose routes the test decides, messages carried at once.

use super::*;
use rand::SeedableRng;
use std::net::SocketAddr;

/// A node whose next hop toward every key is fixed by the test.
#[derive(Clone)]
struct Fixed {
    own: Contact,
    /// Next hops in order of preference; a hop avoided (or removed) falls to the next.
    hops: Vec<Contact>,
}

impl Router for Fixed {
    fn own(&self) -> Contact {
        self.own
    }

    fn next_hop(&self, _key: NodeId, avoid: Option<NodeId>) -> Option<Contact> {
        self.hops.iter().copied().find(|h| Some(h.id) != avoid)
    }
}

fn contact(i: u128) -> Contact {
    Contact::new(
        NodeId(i),
        SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
        1,
    )
}

struct Net {
    now: Instant,
    nodes: BTreeMap<NodeId, (Scribe, Fixed)>,
    /// Messages sent, for the test to look at.
    log: Vec<(NodeId, NodeId, ScribeMsg)>,
}

impl Net {
    /// Nodes 1..=n; node i routes to i+1, the last is the root of everything.
    fn chain(n: u128) -> Net {
        let mut net = Net {
            now: Instant::ZERO,
            nodes: BTreeMap::new(),
            log: Vec::new(),
        };
        for i in 1..=n {
            let hops = if i < n { vec![contact(i + 1)] } else { vec![] };
            let r = Fixed {
                own: contact(i),
                hops,
            };
            net.nodes.insert(
                NodeId(i),
                (Scribe::new(ScribeConfig::default(), net.now), r),
            );
        }
        net
    }

    fn scribe(&self, i: u128) -> &Scribe {
        &self.nodes[&NodeId(i)].0
    }

    fn with(&mut self, i: u128, f: impl FnOnce(&mut Scribe, &Fixed, Instant)) {
        let now = self.now;
        if let Some((s, r)) = self.nodes.get_mut(&NodeId(i)) {
            f(s, r, now);
        }
        self.deliver();
    }

    /// Carries every queued message until none is left.
    fn deliver(&mut self) {
        loop {
            let mut sent = Vec::new();
            for (&id, (s, _)) in self.nodes.iter_mut() {
                while let Some((to, msg)) = s.poll_output() {
                    sent.push((id, to, msg));
                }
            }
            if sent.is_empty() {
                return;
            }
            for (from, to, msg) in sent {
                self.log.push((from, to.id, msg.clone()));
                let now = self.now;
                if let Some((s, r)) = self.nodes.get_mut(&to.id) {
                    s.handle(now, ScribeInput::Message(contact(from.0), msg), r);
                }
            }
        }
    }

    /// Runs beats for `secs` seconds; nodes in `mute` neither beat nor hear.
    fn beats(&mut self, secs: u64, mute: &[u128]) {
        for _ in 0..secs {
            self.now = self.now + Duration::from_secs(1);
            let now = self.now;
            for (&id, (s, r)) in self.nodes.iter_mut() {
                if mute.contains(&id.0) {
                    continue;
                }
                s.handle(now, ScribeInput::Timeout(&|_| 3), r);
            }
            let mut sent = Vec::new();
            for (&id, (s, _)) in self.nodes.iter_mut() {
                while let Some((to, msg)) = s.poll_output() {
                    if !mute.contains(&id.0) && !mute.contains(&to.id.0) {
                        sent.push((id, to, msg));
                    }
                }
            }
            for (from, to, msg) in sent {
                let now = self.now;
                if let Some((s, r)) = self.nodes.get_mut(&to.id) {
                    s.handle(now, ScribeInput::Message(contact(from.0), msg), r);
                }
            }
            self.deliver();
        }
    }
}

fn group() -> Group {
    Group::cluster("svc".into())
}

#[test]
fn subscribing_builds_the_path_to_the_root_and_leaving_prunes_it() {
    let mut net = Net::chain(3);
    net.with(1, |s, r, now| s.handle(now, ScribeInput::Join(&group()), r));
    let key = group().tree_key(0);
    for i in 1..=3 {
        assert!(net.scribe(i).in_tree(key), "node {i}");
    }
    assert!(net.scribe(2).is_neighbour(key, NodeId(1)));
    assert!(net.scribe(3).is_neighbour(key, NodeId(2)));
    assert_eq!(net.scribe(1).tree_count(), 5, "one tree per split");
    // Node 2 floods to both sides, never back.
    let targets: Vec<NodeId> = net
        .scribe(2)
        .flood_targets(key, Some(NodeId(1)))
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(targets, vec![NodeId(3)]);
    net.with(1, |s, r, now| {
        s.handle(now, ScribeInput::Leave(&group()), r)
    });
    for i in 1..=3 {
        assert_eq!(net.scribe(i).tree_count(), 0, "node {i} still holds trees");
    }
}

#[test]
fn a_silent_parent_is_routed_around() {
    let mut net = Net::chain(3);
    // Node 1 can also reach the root directly.
    net.nodes
        .get_mut(&NodeId(1))
        .unwrap()
        .1
        .hops
        .push(contact(3));
    net.with(1, |s, r, now| s.handle(now, ScribeInput::Join(&group()), r));
    let key = group().tree_key(0);
    net.beats(2, &[]);
    assert!(net.scribe(1).is_neighbour(key, NodeId(2)));
    // Node 2 falls silent: after three missed beats node 1 subscribes around it.
    net.beats(4, &[2]);
    assert!(net.scribe(1).is_neighbour(key, NodeId(3)));
    assert!(net.scribe(3).is_neighbour(key, NodeId(1)));
    assert!(net.scribe(1).stats().neighbours_lost >= 1);
}

#[test]
fn capacities_flow_through_beats_and_weight_anycasts() {
    let mut net = Net::chain(3);
    net.with(1, |s, r, now| s.handle(now, ScribeInput::Join(&group()), r));
    net.with(3, |s, r, now| s.handle(now, ScribeInput::Join(&group()), r));
    net.beats(2, &[]);
    let key = group().tree_key(0);
    // Node 3 (the root, capacity 3) sees 3 through node 2 (node 1's members); node 2
    // routes an anycast from node 1 only upward, from node 3 only downward.
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let s2 = net.scribe(2);
    assert_eq!(
        s2.anycast(key, Some(NodeId(1)), 0, &mut rng),
        Pick::Neighbour(contact(3))
    );
    assert_eq!(
        s2.anycast(key, Some(NodeId(3)), 0, &mut rng),
        Pick::Neighbour(contact(1))
    );
    // From the root: local and the subtree in proportion, 3 to 3.
    let s3 = net.scribe(3);
    let local = (0..1000)
        .filter(|_| s3.anycast(key, None, 3, &mut rng) == Pick::Local)
        .count();
    assert!((400..600).contains(&local), "{local} of 1000 local");
    // Nothing reachable but where it came from: nowhere.
    assert_eq!(
        net.scribe(1).anycast(key, Some(NodeId(2)), 0, &mut rng),
        Pick::None
    );
}

#[test]
fn a_parent_that_lost_the_tree_is_told_on_the_refresh_beat() {
    let mut net = Net::chain(2);
    net.with(1, |s, r, now| s.handle(now, ScribeInput::Join(&group()), r));
    let key = group().tree_key(0);
    // Node 2 restarts its scribe state without a new epoch (a bug or an eviction).
    let now = net.now;
    net.nodes.get_mut(&NodeId(2)).unwrap().0 = Scribe::new(ScribeConfig::default(), now);
    net.beats(10, &[]);
    assert!(net.scribe(2).is_neighbour(key, NodeId(1)), "re-subscribed");
}

#[test]
fn a_root_that_is_no_longer_closest_hands_over() {
    let mut net = Net::chain(2);
    net.with(1, |s, r, now| s.handle(now, ScribeInput::Join(&group()), r));
    let key = group().tree_key(0);
    // A closer node 9 appears; node 2 now routes the key to it.
    let r9 = Fixed {
        own: contact(9),
        hops: vec![],
    };
    let now = net.now;
    net.nodes
        .insert(NodeId(9), (Scribe::new(ScribeConfig::default(), now), r9));
    net.nodes.get_mut(&NodeId(2)).unwrap().1.hops = vec![contact(9)];
    net.beats(1, &[]);
    assert!(net.scribe(9).is_neighbour(key, NodeId(2)));
    assert!(net.scribe(2).is_neighbour(key, NodeId(9)));
}

#[test]
fn a_root_whose_key_moved_to_its_own_child_lets_the_child_go_and_subscribes_through_it() {
    // Found by swarm testing (400 nodes): node 2, the root, has child 1; then the overlay
    // comes to route the key from 2 through 1, and from 1 to a new node 9. Without the
    // hand-over, 2 may not take its child as parent (a loop) and stays a second root.
    // (Subscribing through the child at once, before the child had re-subscribed, formed
    // a loop when the child's route still led back: seen at 1000 nodes, 30 %/min churn.)
    let mut net = Net::chain(2);
    net.with(1, |s, r, now| s.handle(now, ScribeInput::Join(&group()), r));
    let key = group().tree_key(0);
    assert!(net.scribe(2).is_neighbour(key, NodeId(1)));
    let now = net.now;
    let r9 = Fixed {
        own: contact(9),
        hops: vec![],
    };
    net.nodes
        .insert(NodeId(9), (Scribe::new(ScribeConfig::default(), now), r9));
    net.nodes.get_mut(&NodeId(2)).unwrap().1.hops = vec![contact(1)];
    net.nodes.get_mut(&NodeId(1)).unwrap().1.hops = vec![contact(9)];
    // First beat: 2 lets 1 go, and 1 subscribes to 9; next beat: 2 subscribes through 1.
    net.beats(2, &[]);
    // One tree again: 2 -> 1 -> 9, the root.
    let parent = |i: u128| net.scribe(i).relations(key).and_then(|(p, _)| p);
    assert_eq!(
        (parent(2), parent(1), parent(9)),
        (Some(NodeId(1)), Some(NodeId(9)), None)
    );
    // Every tree of the group (the test routes all keys alike).
    assert_eq!(
        net.scribe(2).stats().handed_over,
        u64::from(ScribeConfig::default().splits)
    );
}

#[test]
fn a_subscription_naming_another_groups_key_is_ignored() {
    let mut net = Net::chain(2);
    let now = net.now;
    let (s, r) = net.nodes.get_mut(&NodeId(2)).unwrap();
    let subscribe = ScribeMsg::Subscribe {
        key: NodeId(42),
        group: group(),
        index: 0,
    };
    s.handle(now, ScribeInput::Message(contact(1), subscribe), r);
    assert_eq!(net.scribe(2).tree_count(), 0);
}

#[test]
fn the_bounds_on_trees_and_children_refuse_and_count() {
    // Nodes 1 and 2 both route to node 3, which holds at most one child per tree and at
    // most 7 trees (the first group's 5, two of the next).
    let mut net = Net::chain(3);
    net.nodes.get_mut(&NodeId(1)).unwrap().1.hops = vec![contact(3)];
    net.nodes.get_mut(&NodeId(3)).unwrap().0 = Scribe::new(
        ScribeConfig {
            max_children: 1,
            max_trees: 7,
            ..ScribeConfig::default()
        },
        net.now,
    );
    net.with(1, |s, r, now| s.handle(now, ScribeInput::Join(&group()), r));
    net.with(2, |s, r, now| s.handle(now, ScribeInput::Join(&group()), r));
    // Node 1 got in first: it is node 3's one child in every tree; node 2 was refused.
    let key = group().tree_key(0);
    assert!(net.scribe(3).is_neighbour(key, NodeId(1)));
    assert!(!net.scribe(3).is_neighbour(key, NodeId(2)));
    assert_eq!(net.scribe(3).stats().refused, 5);
    // A second group: node 3 takes two more trees, refuses the other three.
    let other = Group::topic("news".into());
    net.with(1, |s, r, now| s.handle(now, ScribeInput::Join(&other), r));
    assert_eq!(net.scribe(3).tree_count(), 7);
    assert_eq!(net.scribe(3).stats().refused, 8);
    // Its own joins count against the same bound.
    net.with(3, |s, r, now| {
        s.handle(now, ScribeInput::Join(&Group::topic("mine".into())), r)
    });
    assert_eq!(net.scribe(3).tree_count(), 7);
    assert_eq!(net.scribe(3).stats().refused, 13);
}

/// Found by swarm testing (502 nodes, a partition healing while leaf sets were mended):
/// three nodes subscribed each through the next while the routes were in flux, a cycle no
/// root reached that kept itself alive with beats, and the multicasts of its members were
/// lost for good. A tree whose parent is no longer its next hop now moves onto its route at
/// a refresh.
#[test]
fn a_cycle_formed_while_routes_were_in_flux_is_broken_once_they_settle() {
    let mut net = Net::chain(4);
    // Routes in flux: 1 -> 2 -> 3 -> 1.
    let set = |net: &mut Net, i: u128, to: u128| {
        net.nodes.get_mut(&NodeId(i)).unwrap().1.hops = vec![contact(to)];
    };
    set(&mut net, 3, 1);
    net.with(1, |s, r, now| s.handle(now, ScribeInput::Join(&group()), r));
    let key = group().tree_key(0);
    let parent = |net: &Net, i: u128| net.scribe(i).relations(key).and_then(|(p, _)| p);
    assert_eq!(
        (parent(&net, 1), parent(&net, 2), parent(&net, 3)),
        (Some(NodeId(2)), Some(NodeId(3)), Some(NodeId(1))),
        "the test builds the cycle"
    );
    // The routes settle on 4, the root; within two refreshes the tree follows them.
    for i in 1..=3 {
        set(&mut net, i, 4);
    }
    let refresh = u64::from(ScribeConfig::default().refresh_every);
    net.beats(2 * refresh + 1, &[]);
    // Node 1 (the member) hangs from the root; 2 and 3, needed by nobody now, left.
    assert_eq!((parent(&net, 1), parent(&net, 4)), (Some(NodeId(4)), None));
    assert!(net.scribe(4).in_tree(key));
    assert!(!net.scribe(2).in_tree(key) && !net.scribe(3).in_tree(key));
    assert!(net.scribe(1).stats().rerouted > 0);
}

/// A swarm run with probes on left branches hanging from parents that had let them go: a
/// node moved its trees off a parent (which lingers a beat, holding references), lost that
/// parent (a probe went unanswered) and subscribed through it again within the beat. When
/// the lingering entries were released they took the new subscription's reference, the
/// node forgot the parent it hung from, never beat to it, and was let go by it in silence.
#[test]
fn a_parent_lost_while_being_left_and_taken_again_keeps_its_child() {
    let mut net = Net::chain(3);
    let set = |net: &mut Net, hops: &[u128]| {
        net.nodes.get_mut(&NodeId(1)).unwrap().1.hops = hops.iter().map(|&i| contact(i)).collect();
    };
    net.with(1, |s, r, now| s.handle(now, ScribeInput::Join(&group()), r));
    // Node 1 now routes straight to the root: at the refresh its trees move, node 2
    // lingering a beat.
    set(&mut net, &[3, 2]);
    let refresh = u64::from(ScribeConfig::default().refresh_every);
    net.beats(refresh, &[]);
    assert!(
        !net.scribe(1).lingering.is_empty(),
        "the test moves the trees"
    );
    // Within that beat node 1 loses node 2, then routes through it again for a new group.
    net.with(1, |s, r, now| {
        s.handle(now, ScribeInput::Lost(NodeId(2)), r)
    });
    set(&mut net, &[2, 3]);
    let other = Group::cluster("other".into());
    net.with(1, |s, r, now| s.handle(now, ScribeInput::Join(&other), r));
    let key = other.tree_key(0);
    // And its members of the first group leave: nothing else takes node 2 again.
    net.with(1, |s, r, now| {
        s.handle(now, ScribeInput::Leave(&group()), r)
    });
    net.beats(3 * refresh, &[]);
    let parent = net.scribe(1).relations(key).and_then(|(p, _)| p);
    assert_eq!(parent, Some(NodeId(2)));
    assert!(
        net.scribe(2).is_neighbour(key, NodeId(1)),
        "node 2 let its child go while node 1 still hangs from it"
    );
}

/// A child that does not answer a probe is let go, and told so: if it was only slow it
/// subscribes again as soon as it reads that, not at its next refresh beat (up to 10 s
/// later, with what went down the tree meanwhile to be asked for from the origins, which
/// may be gone by then).
#[test]
fn a_child_let_go_for_an_unanswered_probe_is_told_and_subscribes_again() {
    let mut net = Net::chain(2);
    net.with(1, |s, r, now| s.handle(now, ScribeInput::Join(&group()), r));
    let key = group().tree_key(0);
    net.beats(2, &[]);
    assert!(net.scribe(2).is_neighbour(key, NodeId(1)));
    // Node 2 passes data to node 1, silent for longer than `probe_after`: it probes it,
    // and node 1 (slow) does not answer in time.
    let cfg = ScribeConfig::default();
    net.now = net.now + cfg.probe_after + Duration::from_millis(100);
    let (s2, r2) = net.nodes.get_mut(&NodeId(2)).unwrap();
    s2.sending_to(net.now, NodeId(1), r2);
    let probed: Vec<_> = std::iter::from_fn(|| s2.poll_output()).collect();
    assert!(
        probed
            .iter()
            .any(|(to, m)| to.id == NodeId(1) && *m == ScribeMsg::Probe),
        "{probed:?}"
    );
    net.now = net.now + cfg.probe_wait + Duration::from_millis(1);
    let now = net.now;
    let (s2, r2) = net.nodes.get_mut(&NodeId(2)).unwrap();
    s2.handle(now, ScribeInput::Timeout(&|_| 3), r2);
    assert_eq!(s2.stats().suspected, 1);
    assert!(!s2.is_neighbour(key, NodeId(1)), "let go");
    // Node 1 reads what node 2 sent meanwhile: it is back in the tree at once.
    net.deliver();
    assert!(
        net.log
            .iter()
            .any(|(from, to, m)| (from.0, to.0) == (2, 1) && *m == ScribeMsg::NotInTree { key }),
        "node 1 was not told"
    );
    assert!(net.scribe(2).is_neighbour(key, NodeId(1)), "not taken back");
    assert_eq!(
        net.scribe(1).relations(key).and_then(|(p, _)| p),
        Some(NodeId(2))
    );
}

/// A parent being left (lingering a beat after the tree moved) that does not answer a
/// probe is told to let this node go at once: forgotten with it, the lingering entry would
/// never tell it, and it would keep passing the tree's messages here.
#[test]
fn a_lingering_parent_that_does_not_answer_a_probe_is_told_to_let_go() {
    let mut net = Net::chain(3);
    // Node 1 probes quickly, so that the probe's wait ends within the beat that node 2
    // lingers.
    let cfg = ScribeConfig {
        probe_after: Duration::from_millis(100),
        probe_wait: Duration::from_millis(100),
        ..ScribeConfig::default()
    };
    net.nodes.get_mut(&NodeId(1)).unwrap().0 = Scribe::new(cfg.clone(), net.now);
    net.with(1, |s, r, now| s.handle(now, ScribeInput::Join(&group()), r));
    let key = group().tree_key(0);
    // Node 1 now routes straight to the root: at the refresh its trees move, node 2
    // lingering a beat.
    net.nodes.get_mut(&NodeId(1)).unwrap().1.hops = vec![contact(3), contact(2)];
    net.beats(u64::from(cfg.refresh_every), &[]);
    assert!(
        !net.scribe(1).lingering.is_empty(),
        "the test moves the trees"
    );
    assert!(net.scribe(2).is_neighbour(key, NodeId(1)));
    // Within that beat node 1 probes node 2 (silent for a while), which does not answer.
    net.now = net.now + cfg.probe_after + Duration::from_millis(100);
    let (s1, r1) = net.nodes.get_mut(&NodeId(1)).unwrap();
    s1.sending_to(net.now, NodeId(2), r1);
    let _unanswered: Vec<_> = std::iter::from_fn(|| s1.poll_output()).collect();
    net.now = net.now + cfg.probe_wait + Duration::from_millis(1);
    let now = net.now;
    let (s1, r1) = net.nodes.get_mut(&NodeId(1)).unwrap();
    s1.handle(now, ScribeInput::Timeout(&|_| 3), r1);
    assert_eq!(s1.stats().suspected, 1);
    net.deliver();
    assert!(
        !net.scribe(2).is_neighbour(key, NodeId(1)),
        "node 2 still counts node 1 as its child"
    );
}

/// Found by swarm testing: after a tree that was split came together, the parent a node
/// was leaving (lingering a beat after the tree moved) was the only one to pass it the
/// head of an origin its side never heard from. Those heads were dropped as from a
/// stranger, and what that origin sent during the split was never asked for.
#[test]
fn heads_from_a_parent_being_left_are_taken_and_passed_on() {
    let mut net = Net::chain(3);
    net.with(1, |s, r, now| s.handle(now, ScribeInput::Join(&group()), r));
    let key = group().tree_key(0);
    net.beats(2, &[]);
    // Node 1 now routes straight to the root: at the refresh its trees move, node 2
    // lingering a beat.
    net.nodes.get_mut(&NodeId(1)).unwrap().1.hops = vec![contact(3), contact(2)];
    let refresh = u64::from(ScribeConfig::default().refresh_every);
    net.beats(refresh - 2, &[]);
    assert!(
        !net.scribe(1).lingering.is_empty(),
        "the test moves the trees"
    );
    assert!(!net.scribe(1).is_neighbour(key, NodeId(2)));
    // Node 2 passes the head of an origin that sent 100 ms ago, while node 1 had members.
    let origin = NodeId(99);
    let heads = vec![(origin, 1, 5, 100)];
    net.log.clear();
    net.with(2, |s, _, _| {
        s.outbox
            .push_back((contact(1), ScribeMsg::Heads { key, heads }))
    });
    let passed = net.log.iter().any(|(from, to, m)| {
        (from.0, to.0) == (1, 3)
            && matches!(m, ScribeMsg::Heads { heads, .. } if heads.iter().any(|h| h.0 == origin))
    });
    assert!(passed, "the head was not passed on to the new parent");
    let later = net.now + Duration::from_secs(5);
    let (s1, _) = net.nodes.get_mut(&NodeId(1)).unwrap();
    let asks = s1.asks(later);
    assert!(
        asks.iter()
            .any(|a| a.origin == origin && a.ranges.iter().any(|&(lo, hi)| lo <= 5 && 5 <= hi)),
        "what the origin sent is not asked for: {asks:?}"
    );
}

#[test]
fn beats_of_a_node_in_many_trees_fit_a_record_and_their_lists_cover_every_key() {
    use crate::node::wire::{NodeMsg, encode};
    let keys: Vec<NodeId> = (0..5000u128).map(|i| NodeId(i * 7 + 3)).collect();
    let caps: Vec<(NodeId, u32)> = (0..3000u128).map(|i| (NodeId(i), u32::MAX)).collect();
    let msgs = beats::beat_messages(caps.clone(), Some(keys.clone()));
    assert!(msgs.len() > 2);
    let record = crate::link::LinkConfig::default().max_record;
    let (mut all_caps, mut all_keys, mut next) = (Vec::new(), Vec::new(), Some(0u128));
    for m in msgs {
        let len = encode(&NodeMsg::Tree(m.clone())).len();
        assert!(len + 64 < record, "{len} bytes");
        let ScribeMsg::Beat { caps, parents } = m else {
            panic!("not a beat")
        };
        all_caps.extend(caps);
        let l = parents.expect("every beat of a refresh lists a range");
        // Ranges follow each other with no gap, from the first key to the last.
        assert_eq!(Some(l.from.0), next);
        assert!(l.keys.iter().all(|k| l.from <= *k && *k <= l.to));
        next = l.to.0.checked_add(1);
        all_keys.extend(l.keys);
    }
    assert_eq!(next, None, "the last range ends at the last key");
    assert_eq!((all_caps, all_keys), (caps, keys));
    // Few trees: one beat, its list the whole range (as older nodes sent it).
    let one = beats::beat_messages(vec![(NodeId(1), 2)], Some(vec![NodeId(5)]));
    assert_eq!(
        one,
        vec![ScribeMsg::Beat {
            caps: vec![(NodeId(1), 2)],
            parents: Some(Listed::all(vec![NodeId(5)])),
        }]
    );
    // Not a refresh: no list.
    let plain = beats::beat_messages(Vec::new(), None);
    assert_eq!(
        plain,
        vec![ScribeMsg::Beat {
            caps: Vec::new(),
            parents: None,
        }]
    );
}
