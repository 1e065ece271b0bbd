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

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16))
}

/// Fast timers, so that tests cover many periods in little virtual time.
fn mesh_config(i: usize, seeds: &[usize]) -> MeshConfig {
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
    let cfg = LinkConfig {
        network: "test-net".into(),
        ..LinkConfig::default()
    };
    let mut ours = Link::plain(Role::Initiator, cfg, net.now);
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

#[test]
fn an_identified_link_nobody_uses_is_closed() {
    let mut net = Net::new();
    let mut cfg = mesh_config(0, &[]);
    cfg.link_idle = Duration::from_secs(6);
    let a = net.add_with(cfg, Security::Plain);
    let (link, mut ours) = raw_link(&mut net, a);
    let stranger = crate::overlay::Contact::new(NodeId(42), addr(9), 1);
    send_raw(&mut net, a, link, &mut ours, &PeerMsg::Ident(0, stranger));
    assert_eq!(net.mesh(a).stats().links_up, 1);
    net.secs(5);
    assert!(!net.closes.contains(&(a, link)), "not idle yet");
    net.secs(5);
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

/// A bare mesh and the test's own ends of links to it: only the mesh's own inputs and
/// outputs, so what it tells its node (`poll_incoming`) can be looked at.
struct Bare {
    mesh: Mesh,
    now: Instant,
}

impl Bare {
    fn new() -> Bare {
        let now = Instant::ZERO;
        let mesh = Mesh::new(mesh_config(0, &[]), Security::Plain, [1; 32], now);
        Bare { mesh, now }
    }

    /// Carries the mesh's transmissions on `link` to `ours`.
    fn carry_out(&mut self, link: LinkId, ours: &mut Link) {
        let mut rest = VecDeque::new();
        while let Some(out) = self.mesh.poll_output() {
            match out {
                MeshOutput::Transmit(l, bytes) if l == link => {
                    ours.handle(self.now, LinkInput::Bytes(&bytes));
                }
                other => rest.push_back(other),
            }
        }
        self.mesh.outputs.extend(rest);
    }

    fn carry_in(&mut self, link: LinkId, ours: &mut Link) {
        while let Some(frame) = ours.poll_transmit() {
            self.mesh.handle(self.now, MeshInput::Data(link, &frame));
        }
        self.carry_out(link, ours);
    }

    /// An inbound link, open (IDENT not sent yet).
    fn open(&mut self, link: LinkId) -> Link {
        self.mesh.handle(
            self.now,
            MeshInput::Connected {
                link,
                dial: None,
                from: None,
            },
        );
        let cfg = LinkConfig {
            network: "test-net".into(),
            ..LinkConfig::default()
        };
        let mut ours = Link::plain(Role::Initiator, cfg, self.now);
        self.carry_in(link, &mut ours);
        self.carry_in(link, &mut ours);
        assert_eq!(ours.poll_output(), Some(LinkEvent::Established));
        ours
    }

    /// The dials the mesh asked for since last asked.
    fn dials(&mut self) -> Vec<DialId> {
        let mut dials = Vec::new();
        let mut rest = VecDeque::new();
        while let Some(out) = self.mesh.poll_output() {
            match out {
                MeshOutput::Dial(d, _) => dials.push(d),
                other => rest.push_back(other),
            }
        }
        self.mesh.outputs.extend(rest);
        dials
    }

    /// The link of `dial`, up: the test's end, answering at the address dialed.
    fn connect(&mut self, link: LinkId, dial: DialId) -> Link {
        self.mesh.handle(
            self.now,
            MeshInput::Connected {
                link,
                dial: Some(dial),
                from: None,
            },
        );
        let cfg = LinkConfig {
            network: "test-net".into(),
            ..LinkConfig::default()
        };
        let mut ours = Link::plain(Role::Responder, cfg, self.now);
        for _ in 0..3 {
            self.carry_out(link, &mut ours);
            self.carry_in(link, &mut ours);
        }
        assert_eq!(ours.poll_output(), Some(LinkEvent::Established));
        ours
    }

    /// The link the mesh dialed last (`reach` or `send` asked for it), up.
    fn answer_dial(&mut self, link: LinkId) -> Link {
        let dial = *self.dials().last().expect("the mesh dialed");
        self.connect(link, dial)
    }

    /// The data messages the mesh sends on the link of `dial` once `peer` answers it and
    /// says who it is.
    fn data_through(
        &mut self,
        link: LinkId,
        dial: DialId,
        peer: crate::overlay::Contact,
    ) -> Vec<Bytes> {
        let mut ours = self.connect(link, dial);
        ours.send_control(wire::encode(&PeerMsg::Ident(0, peer)))
            .unwrap();
        self.carry_in(link, &mut ours);
        self.carry_out(link, &mut ours);
        std::iter::from_fn(|| ours.poll_output())
            .filter_map(|e| match e {
                LinkEvent::Data(b) => Some(b),
                _ => None,
            })
            .collect()
    }

    fn incoming(&mut self) -> Vec<Incoming> {
        std::iter::from_fn(|| self.mesh.poll_incoming()).collect()
    }
}

/// Found in a rolling restart on real processes (a request lost, the leaving node warning
/// "its next hop took nothing"): a peer's last message came in the same read as its close,
/// the last close the leaving node waited for, and the node closed its own sides before it
/// had passed the message on.
#[test]
fn a_leaving_node_passes_on_what_came_with_its_last_peers_close() {
    let mut m = Bare::new();
    let (p, q) = (
        crate::overlay::Contact::new(NodeId(42), addr(9), 1),
        crate::overlay::Contact::new(NodeId(43), addr(10), 1),
    );
    let (lp, lq) = (LinkId(1), LinkId(2));
    let mut from_p = m.open(lp);
    from_p
        .send_control(wire::encode(&PeerMsg::Ident(0, p)))
        .unwrap();
    m.carry_in(lp, &mut from_p);
    let mut from_q = m.open(lq);
    from_q
        .send_control(wire::encode(&PeerMsg::Ident(0, q)))
        .unwrap();
    m.carry_in(lq, &mut from_q);
    m.incoming();
    m.mesh.handle(m.now, MeshInput::Leave);
    // q read the farewell and closed its side.
    from_q.close("you left");
    m.carry_in(lq, &mut from_q);
    // p sent a request for q's side before it read the farewell, then its close: one read.
    from_p.send_urgent(Bytes::from_static(b"for q")).unwrap();
    from_p.close("you left");
    let read: Vec<u8> = std::iter::from_fn(|| from_p.poll_transmit())
        .flat_map(|b| b.to_vec())
        .collect();
    m.mesh.handle(m.now, MeshInput::Data(lp, &read));
    let got: Vec<Bytes> = m
        .incoming()
        .into_iter()
        .filter_map(|i| match i {
            Incoming::Message(c, b) if c == p => Some(b),
            _ => None,
        })
        .collect();
    assert_eq!(got, [Bytes::from_static(b"for q")]);
    // The node passes it on: q's side still takes it, and q reads it before our CLOSE.
    m.mesh
        .send(m.now, q, Class::Urgent, got[0].clone())
        .expect("the leaving node's link to q is still open");
    m.carry_out(lq, &mut from_q);
    let events: Vec<LinkEvent> = std::iter::from_fn(|| from_q.poll_output()).collect();
    assert!(
        events.contains(&LinkEvent::Data(Bytes::from_static(b"for q"))),
        "{events:?}"
    );
    // Then the leave is done: every side closes.
    let due = m.mesh.poll_timeout().expect("the close is due");
    assert_eq!(due, m.now, "right away");
    m.mesh.handle(m.now, MeshInput::Timeout);
    m.carry_out(lp, &mut from_p);
    m.carry_out(lq, &mut from_q);
    assert_eq!(m.mesh.link_count(), 0, "the leaver closed its links");
}

#[test]
fn a_link_its_peer_closed_as_a_duplicate_does_not_unlink_the_peer() {
    for (reason, unlinked) in [("duplicate link", false), ("idle", true)] {
        let mut m = Bare::new();
        let peer = crate::overlay::Contact::new(NodeId(42), addr(9), 1);
        let (l1, l2) = (LinkId(1), LinkId(2));
        let mut first = m.open(l1);
        first
            .send_control(wire::encode(&PeerMsg::Ident(0, peer)))
            .unwrap();
        m.carry_in(l1, &mut first);
        assert!(m.mesh.is_linked(NodeId(42)));
        // The peer's second link is up, its IDENT not here yet, when the peer keeps it
        // and closes the first.
        let mut second = m.open(l2);
        m.incoming();
        first.close(reason);
        m.carry_in(l1, &mut first);
        let lost = m
            .incoming()
            .iter()
            .any(|i| matches!(i, Incoming::Unlinked { node, .. } if *node == NodeId(42)));
        assert_eq!(lost, unlinked, "closed as {reason:?}");
        // The second link's IDENT: linked again.
        second
            .send_control(wire::encode(&PeerMsg::Ident(0, peer)))
            .unwrap();
        m.carry_in(l2, &mut second);
        assert!(m.mesh.is_linked(NodeId(42)), "closed as {reason:?}");
    }
}

#[test]
fn a_peers_clock_is_remembered_across_its_links_and_forgotten_when_it_restarts() {
    let mut m = Bare::new();
    let ms = |t: u64| Instant::from_nanos(t * 1_000_000);
    // The peer's clock reads 5000 ms more than ours; its trips here take no time.
    let ident = |epoch, stamp| {
        let peer = crate::overlay::Contact::new(NodeId(42), addr(9), epoch);
        wire::encode(&PeerMsg::Ident(stamp, peer))
    };
    let mut first = m.open(LinkId(1));
    first.send_control(ident(1, 5_000)).unwrap();
    m.carry_in(LinkId(1), &mut first);
    first.close("idle");
    m.carry_in(LinkId(1), &mut first);
    assert!(!m.mesh.is_linked(NodeId(42)));
    // Ten seconds on, a new link whose IDENT was held up 3 s on the way (as after a
    // partition): it is not taken for the fastest trip.
    m.now = ms(10_000);
    let mut second = m.open(LinkId(2));
    second.send_control(ident(1, 12_000)).unwrap();
    m.carry_in(LinkId(2), &mut second);
    let excess = |m: &Bare, stamp| m.mesh.transit_excess(NodeId(42), m.now, stamp);
    assert_eq!(excess(&m, 12_000), Some(Duration::from_secs(3)));
    assert_eq!(excess(&m, 15_000), Some(Duration::ZERO));
    // Restarted (a new epoch, a new clock reading 100 ms): what was known is dropped.
    second.close("idle");
    m.carry_in(LinkId(2), &mut second);
    let mut third = m.open(LinkId(3));
    third.send_control(ident(2, 100)).unwrap();
    m.carry_in(LinkId(3), &mut third);
    assert_eq!(excess(&m, 100), Some(Duration::ZERO));
}

/// Found by swarm testing (a multicast tree split for good): a node dialed the old address
/// of a peer that had restarted elsewhere, and another node answered there. The link was
/// kept as that other node's, still marked as dialed for the old peer; every later link to
/// the address (dialed for other stale contacts, merged into it) said again that the old
/// peer was unreachable, so its trees routed around it, alive at its new address, forever.
#[test]
fn a_stale_address_answered_by_another_node_says_so_once_and_for_the_right_node() {
    let mut m = Bare::new();
    let there = |id| crate::overlay::Contact::new(NodeId(id), addr(9), 1);
    let unreachable = |incoming: &[Incoming]| -> Vec<(NodeId, usize)> {
        incoming
            .iter()
            .filter_map(|i| match i {
                Incoming::Unreachable(n, back) => Some((*n, back.len())),
                _ => None,
            })
            .collect()
    };
    // Dialed for 41 (a stale contact); 42 lives at that address now.
    m.mesh.reach(m.now, there(41));
    let mut first = m.answer_dial(LinkId(1));
    first
        .send_control(wire::encode(&PeerMsg::Ident(0, there(42))))
        .unwrap();
    m.carry_in(LinkId(1), &mut first);
    assert_eq!(unreachable(&m.incoming()), vec![(NodeId(41), 0)]);
    assert!(m.mesh.is_linked(NodeId(42)));
    // A node message and an overlay ping for 43, another stale contact at that address:
    // dialed, answered by 42 again. The node message goes back to be routed another way
    // (not to 42), said of 43 only; the ping goes to 42, which answers and is learned.
    let msg = Bytes::from_static(b"for 43");
    m.mesh.send(m.now, there(43), Class::Control, msg).unwrap();
    let ping = OverlayMsg::Ping {
        leaves: None,
        rtt: None,
    };
    let ping = wire::encode(&PeerMsg::Overlay(0, ping));
    m.mesh
        .send_as(m.now, there(43), Class::Control, ping)
        .unwrap();
    let mut second = m.answer_dial(LinkId(2));
    second
        .send_control(wire::encode(&PeerMsg::Ident(0, there(42))))
        .unwrap();
    m.carry_in(LinkId(2), &mut second);
    assert_eq!(unreachable(&m.incoming()), vec![(NodeId(43), 1)]);
    assert!(m.mesh.is_linked(NodeId(42)));
    // (On the link to 42 that is kept: the first.)
    m.carry_out(LinkId(1), &mut first);
    let pinged = std::iter::from_fn(|| first.poll_output()).any(|e| {
        matches!(e, LinkEvent::Control(b)
            if matches!(wire::decode_bytes(&b), Ok(PeerMsg::Overlay(_, OverlayMsg::Ping { .. }))))
    });
    assert!(pinged, "the ping did not reach the node at that address");
}

/// Found by swarm testing: a dial begun while a partition was on hangs until the driver's
/// connect timeout, and messages to its peer waited for it even once the path was back (a
/// graveyard ping across a healed partition, 3 s late). A dial in flight for
/// `STALE_DIAL` is superseded by a fresh one, which takes what waited.
#[test]
fn a_message_does_not_wait_for_a_dial_begun_long_ago() {
    let mut m = Bare::new();
    let peer = crate::overlay::Contact::new(NodeId(42), addr(9), 1);
    let msg = |s: &'static str| Bytes::from_static(s.as_bytes());
    m.mesh.send(m.now, peer, Class::Data, msg("first")).unwrap();
    let old = m.dials();
    assert_eq!(old.len(), 1);
    // Within STALE_DIAL a second message waits for the same dial...
    m.now = m.now + super::dials::STALE_DIAL / 2;
    m.mesh
        .send(m.now, peer, Class::Data, msg("second"))
        .unwrap();
    assert!(m.dials().is_empty());
    // ...past it, a fresh dial goes, with both.
    m.now = m.now + super::dials::STALE_DIAL;
    m.mesh.send(m.now, peer, Class::Data, msg("third")).unwrap();
    let fresh = m.dials();
    assert_eq!(fresh.len(), 1);
    // The old dial times out: that says nothing of the peer, whose fresh dial is on its way.
    m.mesh.handle(m.now, MeshInput::DialFailed(old[0]));
    assert!(
        m.incoming()
            .iter()
            .all(|i| !matches!(i, Incoming::Unreachable(..)))
    );
    let got = m.data_through(LinkId(1), fresh[0], peer);
    assert_eq!(got, vec![msg("first"), msg("second"), msg("third")]);
}

/// A dial taken over by a fresher one that fails while the peer is still not linked, the
/// fresher one trying for a second too, says the peer is unreachable: toward a peer that cannot be reached (a broken pair), a message
/// every second moves what waits to a fresh dial each time, and no dial would ever fail as
/// the peer's; what waited would never go another way (found by swarm testing: an
/// origin's answers to an ask, lost so). The freshest dial goes on.
#[test]
fn a_peer_whose_dials_hang_is_unreachable_with_all_that_waited() {
    let mut m = Bare::new();
    let peer = crate::overlay::Contact::new(NodeId(42), addr(9), 1);
    let msg = |s: &'static str| Bytes::from_static(s.as_bytes());
    let step = super::dials::STALE_DIAL + Duration::from_millis(1);
    m.mesh.send(m.now, peer, Class::Data, msg("first")).unwrap();
    let mut dials = m.dials();
    for _ in 0..4 {
        m.now = m.now + step;
        m.mesh.send(m.now, peer, Class::Data, msg("more")).unwrap();
        dials.extend(m.dials());
    }
    assert_eq!(dials.len(), 5, "each message past a second takes over");
    // The first dial times out while the freshest has been trying for a second too:
    // everything waiting goes another way.
    m.now = m.now + step;
    m.mesh.handle(m.now, MeshInput::DialFailed(dials[0]));
    let back: Vec<usize> = m
        .incoming()
        .iter()
        .filter_map(|i| match i {
            Incoming::Unreachable(n, back) if *n == NodeId(42) => Some(back.len()),
            _ => None,
        })
        .collect();
    assert_eq!(back, vec![5], "all that waited goes another way");
    // What comes next takes a fresh dial, which goes through.
    m.mesh.send(m.now, peer, Class::Data, msg("next")).unwrap();
    let fresh = m.dials();
    assert_eq!(fresh.len(), 1);
    let got = m.data_through(LinkId(1), fresh[0], peer);
    assert_eq!(got, vec![msg("next")]);
}

/// Found by swarm testing (a multicast lost to a tree child after a partition healed): a
/// dial begun during the partition was still in flight when the peer linked in from its
/// side, and timed out seconds later; the mesh said the peer was unreachable although its
/// link was up, and the trees let the child go. The link that came the other way takes
/// what waited for the dial, whose end then says nothing of the peer.
#[test]
fn a_dial_outrun_by_the_peers_own_link_says_nothing_when_it_fails() {
    let mut m = Bare::new();
    let peer = crate::overlay::Contact::new(NodeId(42), addr(9), 1);
    let msg = |s: &'static str| Bytes::from_static(s.as_bytes());
    m.mesh
        .send(m.now, peer, Class::Data, msg("waited"))
        .unwrap();
    let dial = m.dials();
    assert_eq!(dial.len(), 1);
    // The peer links in from its side while the dial hangs.
    let link = LinkId(1);
    let mut theirs = m.open(link);
    theirs
        .send_control(wire::encode(&PeerMsg::Ident(0, peer)))
        .unwrap();
    m.carry_in(link, &mut theirs);
    assert!(m.mesh.is_linked(NodeId(42)));
    let got: Vec<Bytes> = std::iter::from_fn(|| theirs.poll_output())
        .filter_map(|e| match e {
            LinkEvent::Data(b) => Some(b),
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        vec![msg("waited")],
        "what waited went on the link at once"
    );
    m.incoming();
    // The dial times out: the peer is linked, nothing is said of it.
    m.now = m.now + Duration::from_secs(5);
    m.mesh.handle(m.now, MeshInput::DialFailed(dial[0]));
    let news = m.incoming();
    assert!(
        news.iter()
            .all(|i| !matches!(i, Incoming::Unreachable(..) | Incoming::Unlinked { .. })),
        "{news:?}"
    );
    assert!(m.mesh.is_linked(NodeId(42)));
}

/// Found by swarm testing (a restarted node's asks for a broadcast answered for 50 s, and
/// every answer lost): a node restarted under its id while a link to its old process
/// lingered (stopped, its close not sent). The later start's link is the peer's whoever
/// dialed, and what the node had with the earlier start ends (unlinked, linked again); an
/// earlier start linking in late takes nothing over.
#[test]
fn a_later_start_of_a_peer_takes_its_link_over_whoever_dialed() {
    let mut m = Bare::new();
    let old = crate::overlay::Contact::new(NodeId(42), addr(9), 1);
    let new = crate::overlay::Contact::new(NodeId(42), addr(8), 2);
    let ident = |link: &mut Link, c| {
        link.send_control(wire::encode(&PeerMsg::Ident(0, c)))
            .unwrap()
    };
    let (l1, l2, l3) = (LinkId(1), LinkId(2), LinkId(3));
    let mut first = m.open(l1);
    ident(&mut first, old);
    m.carry_in(l1, &mut first);
    m.incoming();
    // The later start links in; by the dialer rule (both inbound) the first would stay.
    let mut second = m.open(l2);
    ident(&mut second, new);
    m.carry_in(l2, &mut second);
    let news = m.incoming();
    assert_eq!(
        news,
        vec![
            Incoming::Unlinked {
                node: NodeId(42),
                failed: false
            },
            Incoming::Linked(NodeId(42))
        ]
    );
    assert_eq!(m.mesh.linked_contact(NodeId(42)), Some(new));
    // An earlier start linking in now takes nothing over.
    let mut third = m.open(l3);
    ident(&mut third, old);
    m.carry_in(l3, &mut third);
    assert_eq!(m.mesh.linked_contact(NodeId(42)), Some(new));
    // What is sent goes to the later start.
    let msg = Bytes::from_static(b"hello");
    m.mesh.send(m.now, new, Class::Data, msg.clone()).unwrap();
    m.carry_out(l2, &mut second);
    let got: Vec<Bytes> = std::iter::from_fn(|| second.poll_output())
        .filter_map(|e| match e {
            LinkEvent::Data(b) => Some(b),
            _ => None,
        })
        .collect();
    assert_eq!(got, vec![msg]);
}

/// The same restart, the later start not linked yet: a message for it does not go to the
/// earlier start's link, which closes; the later start is dialed at its address.
#[test]
fn a_message_for_a_later_start_of_a_peer_does_not_go_to_its_earlier_self() {
    let mut m = Bare::new();
    let old = crate::overlay::Contact::new(NodeId(42), addr(9), 1);
    let new = crate::overlay::Contact::new(NodeId(42), addr(8), 2);
    let l1 = LinkId(1);
    let mut first = m.open(l1);
    first
        .send_control(wire::encode(&PeerMsg::Ident(0, old)))
        .unwrap();
    m.carry_in(l1, &mut first);
    m.incoming();
    let msg = Bytes::from_static(b"for the later start");
    m.mesh.send(m.now, new, Class::Data, msg.clone()).unwrap();
    assert!(
        !m.mesh.is_linked(NodeId(42)),
        "the earlier start's link closed"
    );
    assert_eq!(
        m.incoming(),
        vec![Incoming::Unlinked {
            node: NodeId(42),
            failed: false
        }]
    );
    let dials = m.dials();
    assert_eq!(dials.len(), 1);
    assert_eq!(m.data_through(LinkId(2), dials[0], new), vec![msg]);
}
