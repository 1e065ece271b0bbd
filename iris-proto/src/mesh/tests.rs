//! Nodes wired together in memory (zero latency, virtual time), through their public
//! inputs and outputs only: what a driver sees.

use super::wire::{self, PeerMsg};
use super::*;
use crate::link::{Link, LinkConfig, LinkEvent, LinkInput, NetworkKey, Role};
use crate::overlay::OverlayMsg;
use crate::{Config, Event, Input, Node, Output};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

fn key(name: &str) -> Arc<NetworkKey> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    Arc::new(NetworkKey::from_bytes(&std::fs::read(path).unwrap()).unwrap())
}

pub(super) fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16))
}

/// Fast timers, so that tests cover many periods in little virtual time.
pub(super) fn mesh_config(i: usize, seeds: &[usize]) -> MeshConfig {
    let mut m = MeshConfig::new("test-net", addr(i));
    m.seeds = seeds.iter().map(|&s| addr(s)).collect();
    m.overlay.heartbeat_period = Duration::from_secs(1);
    m.overlay.boot_quiet = Duration::from_secs(5);
    m.overlay.change_quiet = Duration::from_secs(2);
    m
}

/// What a driver would do with a link or a dial.
#[derive(Debug)]
enum Action {
    Connected(LinkId, Option<DialId>),
    Data(LinkId, Bytes),
    Flushed(LinkId, usize),
    Gone(LinkId),
    DialFailed(DialId),
}

struct Net {
    now: Instant,
    nodes: Vec<Option<Node>>,
    /// Each end of a connection: (node, link) -> (node, link).
    peer_of: BTreeMap<(usize, LinkId), (usize, LinkId)>,
    next_link: u64,
    queue: VecDeque<(usize, Action)>,
    events: Vec<(usize, Event)>,
    dials: Vec<(usize, SocketAddr)>,
    closes: Vec<(usize, LinkId)>,
    /// Frames written to links whose other end is not a node (a test's raw link).
    raw: BTreeMap<(usize, LinkId), Vec<Bytes>>,
}

impl Net {
    fn new() -> Net {
        Net {
            now: Instant::ZERO,
            nodes: Vec::new(),
            peer_of: BTreeMap::new(),
            next_link: 0,
            queue: VecDeque::new(),
            events: Vec::new(),
            dials: Vec::new(),
            closes: Vec::new(),
            raw: BTreeMap::new(),
        }
    }

    /// Adds node `i` (listening at `addr(i)`), joining through `seeds`.
    fn add(&mut self, seeds: &[usize], security: Security) -> usize {
        self.add_with(mesh_config(self.nodes.len(), seeds), security)
    }

    fn add_with(&mut self, cfg: MeshConfig, security: Security) -> usize {
        let i = self.start(cfg, security);
        self.drain();
        i
    }

    /// Adds a node without carrying out its first outputs yet.
    fn start(&mut self, cfg: MeshConfig, security: Security) -> usize {
        let i = self.nodes.len();
        let seed = [i as u8 + 1; 32];
        let node = Node::networked(Config::default(), cfg, security, seed, self.now).unwrap();
        self.nodes.push(Some(node));
        i
    }

    fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("live node")
    }

    fn mesh(&self, i: usize) -> &Mesh {
        self.node(i).mesh().expect("networked")
    }

    fn handle(&mut self, i: usize, input: Input<'_>) {
        if let Some(n) = self.nodes[i].as_mut() {
            n.handle(self.now, input);
        }
    }

    fn new_link(&mut self) -> LinkId {
        self.next_link += 1;
        LinkId(self.next_link)
    }

    /// Carries out every output of every node, then delivers every queued action, until
    /// nothing moves.
    fn drain(&mut self) {
        loop {
            for i in 0..self.nodes.len() {
                while let Some(out) = self.nodes[i].as_mut().and_then(Node::poll_output) {
                    self.output(i, out);
                }
            }
            let Some((i, action)) = self.queue.pop_front() else {
                return;
            };
            match action {
                Action::Connected(link, dial) => self.handle(
                    i,
                    Input::PeerConnected {
                        link,
                        dial,
                        from: None,
                    },
                ),
                Action::Data(link, data) => self.handle(i, Input::PeerData(link, &data)),
                Action::Flushed(link, n) => self.handle(i, Input::PeerFlushed(link, n)),
                Action::Gone(link) => self.handle(i, Input::PeerGone(link)),
                Action::DialFailed(d) => self.handle(i, Input::DialFailed(d)),
            }
        }
    }

    fn output(&mut self, i: usize, out: Output) {
        match out {
            Output::Dial(d, to) => {
                self.dials.push((i, to));
                let target =
                    (0..self.nodes.len()).find(|&j| addr(j) == to && self.nodes[j].is_some());
                match target {
                    Some(j) => {
                        let (a, b) = (self.new_link(), self.new_link());
                        self.peer_of.insert((i, a), (j, b));
                        self.peer_of.insert((j, b), (i, a));
                        self.queue.push_back((j, Action::Connected(b, None)));
                        self.queue.push_back((i, Action::Connected(a, Some(d))));
                    }
                    None => self.queue.push_back((i, Action::DialFailed(d))),
                }
            }
            Output::PeerTransmit(link, data) => {
                self.queue.push_back((i, Action::Flushed(link, data.len())));
                match self.peer_of.get(&(i, link)) {
                    Some(&(j, other)) => self.queue.push_back((j, Action::Data(other, data))),
                    None => self.raw.entry((i, link)).or_default().push(data),
                }
            }
            Output::PeerClose(link) => {
                self.closes.push((i, link));
                if let Some((j, other)) = self.peer_of.remove(&(i, link)) {
                    self.peer_of.remove(&(j, other));
                    self.queue.push_back((j, Action::Gone(other)));
                }
            }
            Output::Event(e) => self.events.push((i, e)),
            // Links here sign in place (`offload_signatures` is off): never asked.
            Output::Sign(..) => {}
            other => panic!("no relay clients in these tests: {other:?}"),
        }
    }

    /// Runs timers and traffic until `t`.
    fn run_until(&mut self, t: Instant) {
        loop {
            self.drain();
            let next = self
                .nodes
                .iter()
                .flatten()
                .filter_map(Node::poll_timeout)
                .min();
            match next {
                Some(at) if at <= t => {
                    self.now = self.now.max(at);
                    for i in 0..self.nodes.len() {
                        let due = self.nodes[i]
                            .as_ref()
                            .and_then(Node::poll_timeout)
                            .is_some_and(|d| d <= self.now);
                        if due {
                            self.handle(i, Input::Timeout);
                        }
                    }
                }
                _ => break,
            }
        }
        self.now = self.now.max(t);
    }

    fn secs(&mut self, s: u64) {
        let t = self.now + Duration::from_secs(s);
        self.run_until(t);
    }

    fn events_of(&self, i: usize) -> Vec<&Event> {
        self.events
            .iter()
            .filter(|(n, _)| *n == i)
            .map(|(_, e)| e)
            .collect()
    }
}

#[test]
fn two_nodes_link_securely_and_are_ready_only_once_converged() {
    let k = key("net-pkcs8.pem");
    let mut net = Net::new();
    let a = net.add(&[], Security::Rsa(k.clone()));
    let b = net.add(&[a], Security::Rsa(k));
    net.secs(1);
    // Linked and known to each other, but not quiet for change_quiet yet: not ready.
    assert_eq!(net.mesh(a).overlay().peer_count(), 1);
    assert_eq!(net.mesh(b).overlay().peer_count(), 1);
    assert!(!net.events.iter().any(|(_, e)| *e == Event::Ready));
    net.secs(10);
    for n in [a, b] {
        let evs = net.events_of(n);
        let converged = evs
            .iter()
            .position(|e| matches!(e, Event::Mesh(MeshEvent::Converged { peers: 1 })))
            .expect("converged with its peer");
        let ready = evs.iter().position(|e| **e == Event::Ready).expect("ready");
        assert!(converged < ready, "ready follows convergence");
        assert_eq!(net.mesh(n).link_count(), 1, "one link per peer");
        assert_eq!(net.mesh(n).stats().links_failed, 0);
    }
}

#[test]
fn nodes_dialing_each_other_at_once_keep_one_link() {
    let mut net = Net::new();
    // Each names the other as its seed: both dial before either link is up.
    let a = net.start(mesh_config(0, &[1]), Security::Plain);
    let b = net.start(mesh_config(1, &[0]), Security::Plain);
    net.secs(10);
    assert_eq!(net.mesh(a).overlay().peer_count(), 1);
    assert_eq!(net.mesh(b).overlay().peer_count(), 1);
    for n in [a, b] {
        assert_eq!(net.mesh(n).link_count(), 1, "node {n} kept one link");
    }
    let dup = net.mesh(a).stats().links_duplicate + net.mesh(b).stats().links_duplicate;
    assert!(dup >= 1, "a duplicate was seen and closed");
    assert!(!net.closes.is_empty());
}

#[test]
fn an_unreachable_seed_is_retried_until_it_answers() {
    let mut net = Net::new();
    // Node 0 names node 1's address, where nobody listens yet.
    let a = net.add_with(mesh_config(0, &[1]), Security::Plain);
    net.secs(5);
    let tries = net
        .dials
        .iter()
        .filter(|&&(n, to)| n == a && to == addr(1))
        .count();
    assert!(
        tries >= 4,
        "the seed is dialed every heartbeat period ({tries} tries)"
    );
    assert_eq!(net.mesh(a).stats().dials_failed as usize, tries);
    assert_eq!(net.mesh(a).overlay().peer_count(), 0);
    // Each period it says so, for discovery to offer another way in.
    let alone = |net: &Net, n| {
        net.events_of(n)
            .iter()
            .filter(|e| ***e == Event::Mesh(MeshEvent::Alone))
            .count()
    };
    assert!(alone(&net, a) >= 4);
    // The seed comes up: the next retry joins it.
    let b = net.add(&[], Security::Plain);
    net.secs(3);
    assert_eq!(net.mesh(a).overlay().peer_count(), 1);
    assert_eq!(net.mesh(b).overlay().peer_count(), 1);
    // A founder (no seeds) was never alone: it had nowhere to go.
    assert_eq!(alone(&net, b), 0);
    let before = alone(&net, a);
    net.secs(5);
    assert_eq!(alone(&net, a), before, "not alone any more");
}

#[test]
fn a_node_without_the_key_cannot_link() {
    let mut net = Net::new();
    let a = net.add(&[], Security::Rsa(key("net-pkcs8.pem")));
    let b = net.add(&[a], Security::Rsa(key("other-pkcs8.pem")));
    net.secs(10);
    assert_eq!(net.mesh(a).overlay().peer_count(), 0);
    assert_eq!(net.mesh(b).overlay().peer_count(), 0);
    assert!(net.mesh(a).stats().links_failed >= 1);
    assert!(net.mesh(b).stats().links_failed >= 1);
    assert_eq!(net.mesh(a).stats().links_up, 0);
}

#[test]
fn garbage_on_one_link_closes_that_link_and_nothing_else() {
    let mut net = Net::new();
    let a = net.add(&[], Security::Plain);
    let b = net.add(&[a], Security::Plain);
    let c = net.add(&[a], Security::Plain);
    net.secs(10);
    assert_eq!(net.mesh(a).overlay().peer_count(), 2);
    let (&(_, link_ab), _) = net
        .peer_of
        .iter()
        .find(|(k, v)| k.0 == a && v.0 == b)
        .expect("a link from a to b");
    net.handle(a, Input::PeerData(link_ab, b"\x01\x09 not a frame kind"));
    net.drain();
    assert_eq!(net.mesh(a).stats().links_failed, 1);
    assert!(net.closes.contains(&(a, link_ab)));
    // The next heartbeat redials b: nobody was declared dead, c never noticed.
    net.secs(10);
    assert_eq!(net.mesh(a).overlay().peer_count(), 2);
    assert!(
        !net.events
            .iter()
            .any(|(_, e)| matches!(e, Event::Mesh(MeshEvent::PeerDown(_))))
    );
    assert_eq!(net.mesh(c).stats().links_failed, 0);
}

/// A test's own end of a plain link of the tests' network.
pub(super) fn plain_end(role: Role, now: Instant) -> Link {
    let cfg = LinkConfig {
        network: "test-net".into(),
        ..LinkConfig::default()
    };
    Link::plain(role, cfg, now)
}

/// A test's own end of a plain link to node `to`, opened as if dialed from elsewhere.
fn raw_link(net: &mut Net, to: usize) -> (LinkId, Link) {
    let link = net.new_link();
    net.handle(
        to,
        Input::PeerConnected {
            link,
            dial: None,
            from: None,
        },
    );
    let mut ours = plain_end(Role::Initiator, net.now);
    while let Some(frame) = ours.poll_transmit() {
        net.handle(to, Input::PeerData(link, &frame));
    }
    net.drain();
    for frame in net.raw.remove(&(to, link)).unwrap_or_default() {
        ours.handle(net.now, LinkInput::Bytes(&frame));
    }
    assert_eq!(ours.poll_output(), Some(LinkEvent::Established));
    (link, ours)
}

fn send_raw(net: &mut Net, to: usize, link: LinkId, ours: &mut Link, msg: &PeerMsg) {
    ours.send_control(wire::encode(msg)).unwrap();
    while let Some(frame) = ours.poll_transmit() {
        net.handle(to, Input::PeerData(link, &frame));
    }
    net.drain();
}

#[test]
fn an_overlay_message_before_ident_is_a_violation() {
    let mut net = Net::new();
    let a = net.add(&[], Security::Plain);
    let (link, mut ours) = raw_link(&mut net, a);
    send_raw(
        &mut net,
        a,
        link,
        &mut ours,
        &PeerMsg::Overlay(
            0,
            OverlayMsg::Ping {
                leaves: None,
                rtt: None,
            },
        ),
    );
    assert_eq!(net.mesh(a).stats().bad_messages, 1);
    assert!(net.closes.contains(&(a, link)));
    assert_eq!(net.mesh(a).overlay().peer_count(), 0);
}

/// A link nobody uses is closed; one to a peer the overlay does not track (it came for a
/// join, a lookup's answer, a direct reply) after a third of `link_idle`, swept every
/// sixth: here 10 s, so between 10 and 15 s.
#[test]
fn an_identified_link_nobody_uses_is_closed() {
    let mut net = Net::new();
    let mut cfg = mesh_config(0, &[]);
    cfg.link_idle = Duration::from_secs(30);
    let a = net.add_with(cfg, Security::Plain);
    let (link, mut ours) = raw_link(&mut net, a);
    let stranger = crate::overlay::Contact::new(NodeId(42), addr(9), 1);
    send_raw(&mut net, a, link, &mut ours, &PeerMsg::Ident(0, stranger));
    assert_eq!(net.mesh(a).stats().links_up, 1);
    assert!(net.mesh(a).overlay().peer_addr(stranger.id).is_none());
    net.secs(9);
    assert!(!net.closes.contains(&(a, link)), "not idle yet");
    net.secs(6);
    assert!(net.closes.contains(&(a, link)), "idle link closed");
    assert_eq!(net.mesh(a).stats().links_idle, 1);
}

#[test]
fn a_leaving_node_is_mourned_at_once() {
    let mut net = Net::new();
    let a = net.add(&[], Security::Plain);
    let b = net.add(&[a], Security::Plain);
    let c = net.add(&[a], Security::Plain);
    net.secs(10);
    let b_id = net.mesh(b).overlay().id();
    net.handle(b, Input::Shutdown("leaving"));
    // Zero latency and no time passing: the farewell, not the failure detector, did it.
    net.drain();
    for n in [a, c] {
        assert!(
            net.events_of(n)
                .contains(&&Event::Mesh(MeshEvent::PeerDown(b_id))),
            "node {n} repaired at once"
        );
        assert_eq!(net.mesh(n).overlay().peer_count(), 1);
    }
    assert!(net.events_of(b).contains(&&Event::Stopped));
    assert_eq!(net.mesh(b).link_count(), 0, "the leaver closed its links");
}

#[test]
fn inbound_connections_beyond_the_link_limit_are_refused() {
    let mut net = Net::new();
    let mut cfg = mesh_config(0, &[]);
    cfg.max_links = 3;
    let a = net.add_with(cfg, Security::Plain);
    let links: Vec<LinkId> = (0..5).map(|_| net.new_link()).collect();
    for &link in &links {
        net.handle(
            a,
            Input::PeerConnected {
                link,
                dial: None,
                from: None,
            },
        );
    }
    net.drain();
    assert_eq!(net.mesh(a).link_count(), 3);
    assert_eq!(net.mesh(a).stats().links_refused, 2);
    for link in &links[3..] {
        assert!(net.closes.contains(&(a, *link)), "{link:?} closed at once");
    }
    // The three held are unauthenticated: the handshake deadline frees them.
    net.secs(11);
    assert_eq!(net.mesh(a).link_count(), 0);
    assert_eq!(net.mesh(a).stats().links_failed, 3);
}

/// At the link limit a new connection takes the place of the least recently used link
/// nobody needs (a node many others talk to would otherwise turn joiners away), and only
/// when every link is needed is it refused.
#[test]
fn at_the_link_limit_the_idlest_unneeded_link_makes_room() {
    let mut net = Net::new();
    let mut cfg = mesh_config(0, &[]);
    cfg.max_links = 2;
    let a = net.add_with(cfg, Security::Plain);
    // Two peers that said who they are but are in no route (they never spoke the
    // overlay's protocol): the first is the idler.
    let mut raws = Vec::new();
    for n in 0..2u128 {
        let (link, mut ours) = raw_link(&mut net, a);
        let c = crate::overlay::Contact::new(NodeId(40 + n), addr(9 + n as usize), 1);
        send_raw(&mut net, a, link, &mut ours, &PeerMsg::Ident(0, c));
        net.secs(1);
        raws.push(link);
    }
    assert_eq!(net.mesh(a).link_count(), 2);
    // A third connects: the idler makes room (closed gracefully), the newcomer is taken.
    let third = net.new_link();
    net.handle(
        a,
        Input::PeerConnected {
            link: third,
            dial: None,
            from: None,
        },
    );
    net.drain();
    assert_eq!(net.mesh(a).stats().links_evicted, 1);
    assert_eq!(net.mesh(a).stats().links_refused, 0);
    assert!(!net.closes.contains(&(a, third)), "the newcomer is kept");
    assert_eq!(net.mesh(a).link_count(), 3, "the idler lingers, closing");
    // The evicted link lingers for its peer's close (the test's end never sends it):
    // it counts only up to as many again. A fourth makes the other idle peer room; a
    // fifth finds nothing more to spare (the two newcomers are still in their
    // handshake: needed) and is refused.
    let (fourth, fifth) = (net.new_link(), net.new_link());
    for link in [fourth, fifth] {
        net.handle(
            a,
            Input::PeerConnected {
                link,
                dial: None,
                from: None,
            },
        );
    }
    net.drain();
    assert_eq!(net.mesh(a).stats().links_evicted, 2);
    assert_eq!(net.mesh(a).stats().links_refused, 1);
    assert!(!net.closes.contains(&(a, fourth)));
    assert!(net.closes.contains(&(a, fifth)), "refused at once");
}

/// Strangers that connect and say nothing cannot hold the link slots: past the bound of
/// inbound handshakes the oldest is closed, and a genuine node still joins meanwhile.
#[test]
fn silent_strangers_are_evicted_and_a_genuine_node_still_joins() {
    let mut net = Net::new();
    let mut cfg = mesh_config(0, &[]);
    cfg.max_inbound_handshakes = 4;
    let a = net.add_with(cfg, Security::Plain);
    net.secs(3);
    let strangers: Vec<LinkId> = (0..10).map(|_| net.new_link()).collect();
    for &link in &strangers {
        net.handle(
            a,
            Input::PeerConnected {
                link,
                dial: None,
                from: None,
            },
        );
    }
    net.drain();
    assert_eq!(net.mesh(a).link_count(), 4, "only the newest four wait");
    assert_eq!(net.mesh(a).stats().handshakes_evicted, 6);
    for link in &strangers[..6] {
        assert!(net.closes.contains(&(a, *link)), "{link:?} evicted");
    }
    // A genuine node joins through `a` while the four wait.
    let b = net.add(&[0], Security::Plain);
    net.secs(5);
    assert_eq!(net.mesh(b).overlay().peer_count(), 1, "b joined a");
    assert_eq!(net.mesh(a).overlay().peer_count(), 1, "a knows b");
}

/// One source address holds at most its share of the inbound handshakes: beyond it its new
/// connections are refused at once and counted, while other addresses are admitted, and
/// its share frees as its handshakes end.
#[test]
fn inbound_handshakes_are_bounded_per_source_address() {
    let mut net = Net::new();
    let mut cfg = mesh_config(0, &[]);
    cfg.max_inbound_handshakes_per_addr = 3;
    let a = net.add_with(cfg, Security::Plain);
    net.secs(3);
    let flood: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    let other: SocketAddr = "198.51.100.9:40000".parse().unwrap();
    let connect = |net: &mut Net, from: SocketAddr| {
        let link = net.new_link();
        net.handle(
            a,
            Input::PeerConnected {
                link,
                dial: None,
                from: Some(SocketAddr::new(from.ip(), from.port() + link.0 as u16)),
            },
        );
        link
    };
    let floods: Vec<LinkId> = (0..5).map(|_| connect(&mut net, flood)).collect();
    let elsewhere = connect(&mut net, other);
    net.drain();
    assert_eq!(net.mesh(a).stats().handshakes_refused_per_addr, 2);
    assert_eq!(net.mesh(a).stats().handshakes_evicted, 0);
    for link in &floods[3..] {
        assert!(net.closes.contains(&(a, *link)), "{link:?} refused at once");
    }
    for link in floods[..3].iter().chain([&elsewhere]) {
        assert!(!net.closes.contains(&(a, *link)), "{link:?} admitted");
    }
    assert_eq!(net.mesh(a).link_count(), 4);
    // The handshake deadline ends the three; the address may try again.
    net.secs(11);
    assert_eq!(net.mesh(a).link_count(), 0);
    let again = connect(&mut net, flood);
    net.drain();
    assert!(
        !net.closes.contains(&(a, again)),
        "admitted once its share freed"
    );
    assert_eq!(net.mesh(a).stats().handshakes_refused_per_addr, 2);
}

#[test]
fn settings_that_would_spin_or_refuse_everything_are_errors() {
    type Spoil = fn(&mut MeshConfig);
    let bad: [(&str, Spoil); 5] = [
        ("max_links", |c| c.max_links = 0),
        ("max_inbound_handshakes", |c| c.max_inbound_handshakes = 0),
        ("max_inbound_handshakes_per_addr", |c| {
            c.max_inbound_handshakes_per_addr = 0
        }),
        ("heartbeat_period", |c| {
            c.overlay.heartbeat_period = Duration::ZERO
        }),
        ("link_idle", |c| c.link_idle = Duration::ZERO),
    ];
    for (name, spoil) in bad {
        let mut cfg = mesh_config(0, &[]);
        spoil(&mut cfg);
        let err = Node::networked(
            Config::default(),
            cfg,
            Security::Plain,
            [0; 32],
            Instant::ZERO,
        )
        .unwrap_err();
        assert_eq!(err, crate::ConfigError::Zero(name));
    }
}

#[test]
fn a_leaving_node_waits_for_its_peers_to_close_but_not_for_ever() {
    let mut net = Net::new();
    let a = net.add(&[], Security::Plain);
    // A peer that never answers the farewell (one of an earlier release, or stuck).
    let (link, mut ours) = raw_link(&mut net, a);
    let stranger = crate::overlay::Contact::new(NodeId(42), addr(9), 1);
    send_raw(&mut net, a, link, &mut ours, &PeerMsg::Ident(0, stranger));
    net.handle(a, Input::Shutdown("leaving"));
    net.drain();
    assert!(!net.closes.contains(&(a, link)), "closed before the peer");
    // What the peer still sends is read and handled meanwhile.
    send_raw(
        &mut net,
        a,
        link,
        &mut ours,
        &PeerMsg::Overlay(
            0,
            OverlayMsg::Ping {
                leaves: None,
                rtt: None,
            },
        ),
    );
    assert_eq!(net.mesh(a).stats().bad_messages, 0);
    let linger = MeshConfig::new("t", addr(0)).close_linger;
    let t = net.now + (linger - Duration::from_millis(100));
    net.run_until(t);
    assert!(
        !net.closes.contains(&(a, link)),
        "closed before close_linger"
    );
    let t = net.now + Duration::from_millis(200);
    net.run_until(t);
    assert!(
        net.closes.contains(&(a, link)),
        "still waiting after close_linger"
    );
    assert_eq!(net.mesh(a).link_count(), 0);
}
