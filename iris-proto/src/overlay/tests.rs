//! The overlay's state and routing against brute-force models.

use super::id::{BASE, DIGITS};
use super::*;
use proptest::prelude::*;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeSet;

/// The true leaf set of `own` among `ids`: the `half` nearest on each side.
fn model_leaves(own: NodeId, ids: &BTreeSet<NodeId>, half: usize) -> (Vec<NodeId>, Vec<NodeId>) {
    let others: Vec<NodeId> = ids.iter().copied().filter(|&x| x != own).collect();
    let mut right = others.clone();
    right.sort_by_key(|&x| own.cw(x));
    right.truncate(half);
    let mut left = others;
    left.sort_by_key(|&x| x.cw(own));
    left.truncate(half);
    (left, right)
}

/// The node of `ids` numerically closest to `key` (ties to the smaller id).
fn model_closest(key: NodeId, ids: &BTreeSet<NodeId>) -> NodeId {
    ids.iter()
        .copied()
        .fold(None, |best: Option<NodeId>, id| match best {
            Some(b) if !key.prefers(id, b) => Some(b),
            _ => Some(id),
        })
        .unwrap()
}

fn ids_strategy(max: usize) -> impl Strategy<Value = BTreeSet<NodeId>> {
    // Some ids clustered (shared prefixes, wrap-around), some spread.
    let id = prop_oneof![
        any::<u128>().prop_map(NodeId),
        (0u128..64).prop_map(NodeId),
        (0u128..64).prop_map(|x| NodeId(u128::MAX - x)),
        any::<u16>().prop_map(|x| NodeId(0xabcd_u128 << 112 | u128::from(x) << 60)),
    ];
    proptest::collection::btree_set(id, 2..max)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// After any inserts and removals the leaf set is exactly the true nearest nodes.
    #[test]
    fn leaf_set_matches_the_brute_force_model(
        ids in ids_strategy(60),
        removals in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
        size in prop_oneof![Just(4usize), Just(8), Just(16)],
    ) {
        let all: Vec<NodeId> = ids.iter().copied().collect();
        let own = all[0];
        let mut live = ids.clone();
        let mut ls = LeafSet::new(own, size);
        for &id in &all {
            ls.insert(id);
        }
        for r in removals {
            let victim = all[r.index(all.len())];
            if victim == own || !live.remove(&victim) {
                continue;
            }
            ls.remove(victim);
            // Repair as a node would: offer every live node it still knows of.
            for &id in &live {
                ls.insert(id);
            }
        }
        let (left, right) = model_leaves(own, &live, size / 2);
        prop_assert_eq!(ls.left(), &left[..]);
        prop_assert_eq!(ls.right(), &right[..]);
        // The closest leaf to any key within range is the true closest node.
        for &k in &all {
            if ls.covers(k) {
                let known: BTreeSet<NodeId> = ls.members().chain([own]).collect();
                prop_assert_eq!(ls.closest(k), model_closest(k, &known));
            }
        }
    }

    /// Every routing table entry sits in the row of its shared prefix and the column of its
    /// next digit, no slot stays empty that an offered node could fill, and a slot keeps
    /// the nearest of those offered.
    #[test]
    fn routing_table_slots_are_right_and_filled(ids in ids_strategy(200)) {
        let all: Vec<NodeId> = ids.iter().copied().collect();
        let own = all[0];
        let mut t = RoutingTable::new(own);
        for &id in &all {
            t.insert(id);
        }
        for r in 0..DIGITS {
            for (d, slot) in t.row(r).iter().enumerate() {
                if let Some(id) = slot {
                    prop_assert_eq!(own.shared_prefix(*id), r);
                    prop_assert_eq!(id.digit(r), d);
                }
            }
        }
        // Each slot keeps, of the nodes offered for it, the one nearest this node by XOR
        // distance (the table's load spreads: see routing_table.rs).
        for &id in &all[1..] {
            let r = own.shared_prefix(id);
            let kept = t.row(r)[id.digit(r)];
            prop_assert!(kept.is_some_and(|k| (k.0 ^ own.0) <= (id.0 ^ own.0)));
        }
        // Removing an entry empties its slot; removing a stranger changes nothing.
        let victim = t.entries().next().expect("an entry");
        prop_assert!(t.remove(victim));
        prop_assert!(!t.remove(victim));
    }

    /// With true leaf sets and any partial routing tables, every key routed from every node
    /// reaches the numerically closest node, never visiting a node twice.
    #[test]
    fn routing_reaches_the_closest_node_without_loops(
        ids in ids_strategy(120),
        keep in 0.0f64..1.0,
        seed in any::<u64>(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let nodes = build(&ids, 16, keep, &mut rng);
        for _ in 0..20 {
            let key = NodeId(rng.random::<u64>() as u128 * rng.random::<u64>() as u128);
            let start = rng.random_range(0..nodes.len());
            let (dest, _) = route(&nodes, start, key).map_err(TestCaseError::fail)?;
            prop_assert_eq!(dest, model_closest(key, &ids));
        }
    }
}

/// A node's state, for tests: its id, leaf set and routing table.
struct State {
    id: NodeId,
    leaves: LeafSet,
    table: RoutingTable,
}

/// True leaf sets; each other node enters a routing table with probability `keep`.
fn build(ids: &BTreeSet<NodeId>, leaf_size: usize, keep: f64, rng: &mut ChaCha8Rng) -> Vec<State> {
    ids.iter()
        .map(|&own| {
            let mut leaves = LeafSet::new(own, leaf_size);
            let mut table = RoutingTable::new(own);
            for &id in ids {
                leaves.insert(id);
                if rng.random_bool(keep) {
                    table.insert(id);
                }
            }
            State {
                id: own,
                leaves,
                table,
            }
        })
        .collect()
}

/// Routes `key` from `nodes[start]`; returns the destination and the hop count, or the loop.
fn route(nodes: &[State], start: usize, key: NodeId) -> Result<(NodeId, usize), String> {
    let index = |id: NodeId| {
        nodes
            .binary_search_by_key(&id, |s| s.id)
            .expect("known node")
    };
    let mut at = start;
    let mut seen = BTreeSet::new();
    let mut hops = 0;
    loop {
        let s = &nodes[at];
        if !seen.insert(s.id) {
            return Err(format!("routing loop at {:?} for key {:?}", s.id, key));
        }
        match next_hop(s.id, &s.leaves, &s.table, key) {
            None => return Ok((s.id, hops)),
            Some(next) => {
                at = index(next);
                hops += 1;
            }
        }
    }
}

#[test]
fn a_thousand_nodes_route_in_about_log16_n_hops() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let ids: BTreeSet<NodeId> = (0..1000).map(|_| NodeId(rng.random())).collect();
    // Every node knows a fifth of the others: far from complete tables, as after a join.
    let nodes = build(&ids, 16, 0.2, &mut rng);
    let mut total = 0;
    let trials = 2000;
    for _ in 0..trials {
        let key = NodeId(rng.random());
        let (dest, hops) = route(&nodes, rng.random_range(0..nodes.len()), key).unwrap();
        assert_eq!(dest, model_closest(key, &ids));
        total += hops;
    }
    let mean = total as f64 / trials as f64;
    let bound = (1000f64).log(BASE as f64) + 1.0;
    eprintln!("mean hops over {trials} routes among 1000 nodes: {mean:.2} (bound {bound:.2})");
    assert!(mean <= bound, "mean hops {mean}");
}

mod versions {
    use crate::overlay::{
        Contact, NodeId, Overlay, OverlayConfig, OverlayEvent, OverlayInput, OverlayMsg,
        OverlayOutput,
    };
    use crate::time::Instant;
    use std::time::Duration;

    fn contact(id: u128, epoch: u64) -> Contact {
        Contact::new(NodeId(id), ([127, 0, 0, 1], 7000 + id as u16).into(), epoch)
    }

    fn sent_to(o: &mut Overlay, id: u128) -> Vec<OverlayMsg> {
        let mut out = Vec::new();
        while let Some(x) = o.poll_output() {
            if let OverlayOutput::Send(to, m) = x
                && to.id == NodeId(id)
            {
                out.push(m);
            }
        }
        out
    }

    fn ping() -> OverlayMsg {
        OverlayMsg::Ping {
            leaves: None,
            rtt: None,
        }
    }

    #[test]
    fn news_of_a_dead_epoch_is_ignored_and_a_later_epoch_is_probed_at_once() {
        let t0 = Instant::ZERO;
        let mut a = Overlay::new(contact(1, 1), OverlayConfig::default(), t0, true);
        a.handle(t0, OverlayInput::Message(contact(2, 5), ping()));
        assert_eq!(a.peer_count(), 1);
        // B falls silent: after three missed periods it is dead.
        let mut t = t0;
        for _ in 0..5 {
            t = t + Duration::from_secs(3);
            a.handle(t, OverlayInput::Timeout);
        }
        let mut down = false;
        while let Some(x) = a.poll_output() {
            down |= x == OverlayOutput::Event(OverlayEvent::PeerDown(NodeId(2)));
        }
        assert!(down && a.peer_count() == 0);
        sent_to(&mut a, 2);
        // C gossips about B's dead epoch: ignored.
        let stale = OverlayMsg::LeafReply {
            leaves: vec![contact(2, 5)],
        };
        a.handle(t, OverlayInput::Message(contact(3, 1), stale));
        assert!(sent_to(&mut a, 2).is_empty(), "stale news probed");
        // Then about a later epoch of B: a restart, probed at once despite the tombstone.
        let fresh = OverlayMsg::LeafReply {
            leaves: vec![contact(2, 6)],
        };
        a.handle(t, OverlayInput::Message(contact(3, 1), fresh));
        assert_eq!(sent_to(&mut a, 2), vec![ping()]);
    }

    #[test]
    fn a_zombie_is_ignored_and_a_restarted_peer_is_told_the_leaf_set_again() {
        let t0 = Instant::ZERO;
        let mut a = Overlay::new(contact(1, 1), OverlayConfig::default(), t0, true);
        a.handle(t0, OverlayInput::Message(contact(3, 1), ping()));
        a.handle(t0, OverlayInput::Message(contact(2, 6), ping()));
        let pong = |leaves| OverlayMsg::Pong { leaves };
        // B is told the leaf set once; after that pongs are bare.
        assert!(matches!(
            &sent_to(&mut a, 2)[..],
            [OverlayMsg::Pong { leaves: Some(_) }]
        ));
        a.handle(t0, OverlayInput::Message(contact(2, 6), ping()));
        assert_eq!(sent_to(&mut a, 2), vec![pong(None)]);
        // An older incarnation of B says goodbye: a zombie, ignored.
        a.handle(t0, OverlayInput::Message(contact(2, 5), OverlayMsg::Leave));
        assert_eq!(a.peer_count(), 2);
        assert!(a.peer_addr(NodeId(2)).is_some());
        // B restarts elsewhere: it lost our leaf set, so it is told again, at its new address.
        let moved = Contact::new(NodeId(2), ([127, 0, 0, 9], 9000).into(), 7);
        a.handle(t0, OverlayInput::Message(moved, ping()));
        let mut out = Vec::new();
        while let Some(x) = a.poll_output() {
            if let OverlayOutput::Send(to, m) = x {
                out.push((to, m));
            }
        }
        assert!(matches!(&out[..], [(to, OverlayMsg::Pong { leaves: Some(_) })] if *to == moved));
        assert_eq!(a.peer_addr(NodeId(2)), Some(moved.addr));
    }

    /// A node that counts us among its leaves although it lies far outside our leaf set
    /// has a leaf set from another part of the ring (formed apart in a join storm): we look
    /// it up for it, once a heartbeat period; a true neighbour's leaf set is no news.
    #[test]
    fn a_peer_whose_leaf_set_is_from_elsewhere_on_the_ring_is_looked_up_for_it() {
        let t0 = Instant::ZERO;
        let id = |hi: u128| hi << 112;
        let mut a = Overlay::new(contact(id(0x5000), 1), OverlayConfig::default(), t0, true);
        // Twenty neighbours on either side: A's leaf set is full and narrow.
        for i in 1..=20u128 {
            for n in [id(0x5000) + i * id(1), id(0x5000) - i * id(1)] {
                a.handle(t0, OverlayInput::Message(contact(n, 1), ping()));
            }
        }
        sent_to(&mut a, 0);
        while a.poll_output().is_some() {}
        let own = a.contact();
        let leaves_with_a = |others: &[u128]| {
            let mut v: Vec<Contact> = others.iter().map(|&n| contact(n, 1)).collect();
            v.push(own);
            v
        };
        // A true neighbour's leaf set holds A: nothing to do.
        let near = contact(id(0x5001), 1);
        let told = OverlayMsg::Ping {
            leaves: Some(leaves_with_a(&[id(0x5002), id(0x4fff)])),
            rtt: None,
        };
        a.handle(t0, OverlayInput::Message(near, told));
        let mut joins = 0;
        while let Some(x) = a.poll_output() {
            joins += matches!(x, OverlayOutput::Send(_, OverlayMsg::Join { .. })) as usize;
        }
        assert_eq!(joins, 0);
        // Two nodes half the ring away count A as a leaf. Each is asked again two
        // heartbeat periods later; the one that still counts A is looked up and told A's
        // rows, the one that has found its place meanwhile (a node that had just joined) is not.
        let (stuck, moved) = (contact(id(0xd000), 1), contact(id(0xe000), 1));
        let counts_a = OverlayMsg::Ping {
            leaves: Some(vec![contact(id(0x1000), 1), own]),
            rtt: None,
        };
        for far in [stuck, moved] {
            a.handle(t0, OverlayInput::Message(far, counts_a.clone()));
        }
        let period = OverlayConfig::default().heartbeat_period;
        let mut t = t0;
        let mut asked = Vec::new();
        for _ in 0..3 {
            t = t + period;
            a.handle(t, OverlayInput::Timeout);
            while let Some(x) = a.poll_output() {
                match x {
                    OverlayOutput::Send(to, OverlayMsg::LeafRequest) => asked.push(to),
                    OverlayOutput::Send(_, OverlayMsg::Join { .. }) => panic!("looked up at once"),
                    _ => {}
                }
            }
        }
        assert_eq!(asked, vec![stuck, moved]);
        let reply = |leaves| OverlayMsg::LeafReply { leaves };
        a.handle(
            t,
            OverlayInput::Message(stuck, reply(vec![contact(id(0x1000), 1), own])),
        );
        a.handle(
            t,
            OverlayInput::Message(moved, reply(vec![contact(id(0xe001), 1)])),
        );
        let (mut lookups, mut rows) = (Vec::new(), Vec::new());
        while let Some(x) = a.poll_output() {
            match x {
                OverlayOutput::Send(_, OverlayMsg::Join { joiner }) => lookups.push(joiner),
                OverlayOutput::Send(to, OverlayMsg::JoinState { .. }) => rows.push(to),
                _ => {}
            }
        }
        assert_eq!((lookups, rows), (vec![stuck], vec![stuck]));
        assert_eq!(a.misplaced_helped(), 1);
    }

    /// A neighbour given up for silence (a partition) is probed again every period,
    /// however many others were given up before it: before, one entry was probed a round
    /// (every 30 s), oldest first.
    #[test]
    fn a_forgotten_leaf_is_probed_at_once_and_before_older_forgotten_peers() {
        let t0 = Instant::ZERO;
        let id = |hi: u128| hi << 112;
        let mut a = Overlay::new(contact(id(0x5000), 1), OverlayConfig::default(), t0, true);
        // Fifteen table entries (row 0, one per first digit), then a leaf heard later.
        for d in (0..16u128).filter(|&d| d != 5) {
            a.handle(t0, OverlayInput::Message(contact(id(d << 12), 1), ping()));
        }
        let leaf = contact(id(0x5001), 1);
        let period = OverlayConfig::default().heartbeat_period;
        let mut t = t0;
        let mut pinged = Vec::new();
        for tick in 1..=30 {
            t = t + period;
            if tick == 7 {
                a.handle(t, OverlayInput::Message(leaf, ping()));
            }
            a.handle(t, OverlayInput::Timeout);
            while let Some(x) = a.poll_output() {
                if let OverlayOutput::Send(to, OverlayMsg::Ping { .. }) = x
                    && to == leaf
                {
                    pinged.push(tick);
                }
            }
        }
        // The leaf fell silent after tick 7: pinged every tick as a leaf until given up
        // at tick 11, then every tick from the graveyard (a minute at most), its
        // tombstone notwithstanding; it was first probed again at tick 25, at the first
        // graveyard round after its tombstone expired, before.
        assert!(
            (12..=25).all(|k| pinged.contains(&k)),
            "pinged at ticks {pinged:?}"
        );
    }

    /// Two nodes far apart on the ring, each in the other's routing table (row 0) and not
    /// in its leaf set, ping each other every `table_ping_every` periods; the one whose
    /// turn comes second finds the pair covered by the other's ping and stays quiet, as
    /// two leaves do every period, whatever the phase between their timers. Before, a
    /// ping covered only half a period: both pinged unless their turns fell within 1.5 s.
    #[test]
    fn two_table_entries_of_each_other_ping_one_way_per_table_period() {
        // B starts this long after A: its table turns fall 0.4 to 8.2 s after A's.
        for ms in [400, 1300, 2200, 3100, 4300, 5200, 6100, 7300, 8200] {
            let pings = table_pings_between(Duration::from_millis(ms));
            assert!(
                pings <= 11,
                "{pings} pings in 10 table periods, B {ms} ms after A"
            );
        }
    }

    /// Pings between two nodes that are each other's table entries, over ten table
    /// periods, with B's timer `offset` after A's.
    fn table_pings_between(offset: Duration) -> usize {
        let t0 = Instant::ZERO;
        let id = |hi: u128| hi << 112;
        let cfg = OverlayConfig {
            leaf_set_size: 2,
            ..OverlayConfig::default()
        };
        let (period, every) = (cfg.heartbeat_period, cfg.table_ping_every);
        let mut a = Overlay::new(contact(id(0x1000), 1), cfg.clone(), t0, true);
        let mut b = Overlay::new(contact(id(0x9000), 1), cfg, t0 + offset, true);
        // Each has a neighbour on either side: its leaf set is full, and the other is not in it.
        let near = |o: &Overlay| [o.id().0 - id(1), o.id().0 + id(1)].map(|n| contact(n, 1));
        let (near_a, near_b) = (near(&a), near(&b));
        for n in near_a {
            a.handle(t0, OverlayInput::Message(n, ping()));
        }
        for n in near_b {
            b.handle(t0 + offset, OverlayInput::Message(n, ping()));
        }
        b.handle(t0 + offset, OverlayInput::Message(a.contact(), ping()));
        a.handle(t0 + offset, OverlayInput::Message(b.contact(), ping()));
        assert!(!a.leaves().contains(b.id()) && a.peer_addr(b.id()).is_some());
        assert!(!b.leaves().contains(a.id()) && b.peer_addr(a.id()).is_some());
        // The neighbours answer every ping at once; A and B hear each other 20 ms later.
        let one_way = Duration::from_millis(20);
        let step = |o: &mut Overlay, other: &mut Overlay, near: &[Contact], at: Instant| {
            o.handle(at, OverlayInput::Timeout);
            let mut pings = 0;
            while let Some(x) = o.poll_output() {
                let OverlayOutput::Send(to, m) = x else {
                    continue;
                };
                if near.contains(&to) {
                    if matches!(m, OverlayMsg::Ping { .. }) {
                        let pong = OverlayMsg::Pong { leaves: None };
                        o.handle(at, OverlayInput::Message(to, pong));
                    }
                } else if to.id == other.id() {
                    pings += usize::from(matches!(m, OverlayMsg::Ping { .. }));
                    other.handle(at + one_way, OverlayInput::Message(o.contact(), m));
                    for back in sent_to(other, o.id().0) {
                        o.handle(
                            at + one_way * 2,
                            OverlayInput::Message(other.contact(), back),
                        );
                    }
                }
            }
            pings
        };
        let mut t = t0;
        let mut pings = 0;
        for _ in 0..10 * every {
            t = t + period;
            pings += step(&mut a, &mut b, &near_a, t);
            pings += step(&mut b, &mut a, &near_b, t + offset);
        }
        // Neither took the other for dead meanwhile.
        assert!(a.peer_addr(b.id()).is_some() && b.peer_addr(a.id()).is_some());
        pings
    }

    /// A neighbour lists a node this one wants as a leaf but cannot reach (its probes go
    /// unanswered: a broken pair). Once the neighbour has listed it for `vouch::HELD`,
    /// a key closer to that node than to this one goes to the neighbour; not before (a
    /// node that crashed is dropped by its neighbours within that time), and no longer
    /// once the neighbour stops listing it.
    #[test]
    fn a_key_of_a_node_only_a_neighbour_reaches_goes_through_that_neighbour() {
        let t0 = Instant::ZERO;
        let id = |hi: u128| hi << 112;
        let cfg = OverlayConfig {
            leaf_set_size: 4,
            ..OverlayConfig::default()
        };
        let period = cfg.heartbeat_period;
        let mut a = Overlay::new(contact(id(0x5000), 1), cfg, t0, true);
        let (below, above) = (contact(id(0x4000), 1), contact(id(0x7000), 1));
        for n in [below, above] {
            a.handle(t0, OverlayInput::Message(n, ping()));
        }
        // B lies between A and `above`; the key is closer to B than to A or `above`.
        let b = contact(id(0x6000), 1);
        let key = NodeId(id(0x5c00));
        assert_eq!(a.route(key, None), None, "A is the closest it knows");
        let own = a.contact();
        let listing = |with_b: bool| OverlayMsg::LeafReply {
            leaves: [below, own, b, above]
                .into_iter()
                .filter(|c| with_b || *c != b)
                .collect(),
        };
        let mut t = t0;
        let mut routed = Vec::new();
        for tick in 1..=6 {
            let with_b = tick <= 5;
            let reply = listing(with_b);
            a.handle(t, OverlayInput::Message(below, reply));
            t = t + period;
            a.handle(t, OverlayInput::Timeout);
            // The neighbours answer pings (B never does) and `below` its leaf requests.
            while let Some(x) = a.poll_output() {
                if let OverlayOutput::Send(to, m) = x
                    && to != b
                {
                    match m {
                        OverlayMsg::Ping { .. } => {
                            let pong = OverlayMsg::Pong { leaves: None };
                            a.handle(t, OverlayInput::Message(to, pong));
                        }
                        OverlayMsg::LeafRequest if to == below => {
                            a.handle(t, OverlayInput::Message(below, listing(with_b)));
                        }
                        _ => {}
                    }
                }
            }
            routed.push(a.route(key, None).map(|c| c.id));
        }
        assert!(a.peer_addr(b.id).is_none(), "B was never reached");
        // Listed from 0 s: held at the tick of 12 s (the fourth), gone once unlisted.
        let via = Some(below.id);
        assert_eq!(routed, [None, None, None, via, via, None], "{routed:?}");
    }

    /// Delivers what `from` sends to `to` at `at`; returns what was delivered.
    fn pass(from: &mut Overlay, to: &mut Overlay, at: Instant) -> Vec<OverlayMsg> {
        let msgs = sent_to(from, to.id().0);
        for m in &msgs {
            to.handle(at, OverlayInput::Message(from.contact(), m.clone()));
        }
        msgs
    }

    #[test]
    fn the_node_that_is_pinged_learns_the_round_trip_from_the_pinger() {
        let t0 = Instant::ZERO;
        let period = OverlayConfig::default().heartbeat_period;
        let mut a = Overlay::new(contact(1, 1), OverlayConfig::default(), t0, true);
        let mut b = Overlay::new(contact(2, 1), OverlayConfig::default(), t0, true);
        let one_way = Duration::from_millis(20);
        // B hears of A and pings it first; from then on A's pings are covered by B's.
        b.handle(t0, OverlayInput::Message(a.contact(), ping()));
        sent_to(&mut b, 1);
        let mut t = t0;
        let mut a_pinged = false;
        for _ in 0..3 {
            t = t + period;
            b.handle(t, OverlayInput::Timeout);
            pass(&mut b, &mut a, t + one_way);
            a.handle(t + one_way, OverlayInput::Timeout);
            let answers = pass(&mut a, &mut b, t + one_way * 2);
            a_pinged |= answers.iter().any(|m| matches!(m, OverlayMsg::Ping { .. }));
        }
        assert!(!a_pinged, "both ends pinged: the test shows nothing");
        assert_eq!(b.rtt(a.id()), Some(one_way * 2));
        assert_eq!(a.rtt(b.id()), Some(one_way * 2), "A plans with B's measure");
    }
}

#[test]
fn a_join_passes_on_to_the_closest_node_other_than_the_joiner() {
    use super::route::next_hop_avoiding;
    let id = |hi: u128| NodeId(hi << 120);
    let own = id(0x10);
    let mut leaves = LeafSet::new(own, 16);
    let mut table = RoutingTable::new(own);
    for x in [0x20, 0x30, 0x34, 0x80] {
        leaves.insert(id(x));
        table.insert(id(x));
    }
    let joiner = id(0x30);
    // Plain routing for the joiner's id stops at the joiner, which is known here...
    assert_eq!(next_hop(own, &leaves, &table, joiner), Some(joiner));
    // ...but its join goes on to the closest other node, which will hand it its leaf set.
    assert_eq!(
        next_hop_avoiding(own, &leaves, &table, joiner, joiner),
        Some(id(0x34))
    );
    // When this node is the closest other node, the join ends here.
    let near = id(0x11);
    leaves.insert(near);
    assert_eq!(next_hop_avoiding(own, &leaves, &table, near, near), None);
}

#[test]
fn a_node_is_far_beyond_a_full_leaf_set_only_past_twice_its_reach() {
    let id = |hi: u128| NodeId(hi << 112);
    let mut leaves = LeafSet::new(id(0x5000), 16);
    for i in 1..=7 {
        leaves.insert(id(0x5000 + i));
        leaves.insert(id(0x5000 - i));
    }
    // Not full yet: it knows the whole ring, as far as it can tell.
    assert!(!leaves.far_beyond(id(0xd000)));
    leaves.insert(id(0x5008));
    leaves.insert(id(0x4ff8));
    // Just past the edge, on either side: a node not heard of yet, or a death not yet seen.
    for near in [0x5009, 0x5010, 0x4ff7, 0x4ff0] {
        assert!(!leaves.far_beyond(id(near)), "{near:x}");
    }
    for far in [0x5011, 0x4fef, 0xd000, 0x0000] {
        assert!(leaves.far_beyond(id(far)), "{far:x}");
    }
}
