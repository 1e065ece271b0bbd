//! A network of whole nodes in memory for tests: links carried at once, virtual time, and
//! relay clients (sans-IO sessions) attached to any node. What a driver does, in one place.

use crate::mesh::{DialId, LinkId, MeshConfig, Security};
use crate::relay::ClientPacket;
use crate::relay::NodePacket;
use crate::relay::client::{ClientSession, SessionEvent};
use crate::relay::codec::Limits;
use crate::{Config, ConnId, Event, Input, Instant, Node, Output};
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

/// The address node `i` listens on (a loopback address nobody dials for real).
pub fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16))
}

/// Fast timers, so that tests cover many periods in little virtual time.
pub fn mesh_config(i: usize, seeds: &[usize]) -> MeshConfig {
    let mut m = MeshConfig::new("test-net", addr(i));
    m.seeds = seeds.iter().map(|&s| addr(s)).collect();
    m.overlay.heartbeat_period = Duration::from_secs(1);
    m.overlay.boot_quiet = Duration::from_secs(5);
    m.overlay.change_quiet = Duration::from_secs(2);
    m
}

/// What a driver does with a link, a dial or a client.
#[derive(Debug)]
enum Action {
    Connected(LinkId, Option<DialId>),
    Data(LinkId, Bytes),
    Flushed(LinkId, usize),
    Gone(LinkId),
    DialFailed(DialId),
    ClientFlushed(ConnId, usize),
    Beacon(SocketAddr, Bytes),
}

/// A relay client of one node.
pub struct Client {
    session: ClientSession,
    /// Packets the node sent, not yet taken by [`Net::take`].
    pub inbox: Vec<NodePacket>,
    /// The node closed the connection.
    pub closed: bool,
}

/// Nodes, their links and their clients, driven in virtual time.
///
/// Links carry bytes at once and in order; a socket write completes as soon as it is made
/// (unless [`Net::stall`]ed). The harness panics when what it was asked to set up fails
/// (a node not ready, a client refused): it is for tests.
pub struct Net {
    /// The virtual clock.
    pub now: Instant,
    /// Every node by index; `None` once killed.
    pub nodes: Vec<Option<Node>>,
    peer_of: BTreeMap<(usize, LinkId), (usize, LinkId)>,
    next_link: u64,
    next_conn: u64,
    queue: VecDeque<(usize, Action)>,
    /// Events every node reported, with the node's index.
    pub events: Vec<(usize, Event)>,
    /// Every client by node and connection.
    pub clients: BTreeMap<(usize, ConnId), Client>,
    /// Links cut by the test: nothing crosses them.
    pub cut: BTreeSet<(usize, usize)>,
    /// Directions whose sockets take nothing (a slow link): what node `i` writes toward
    /// `j` waits, unwritten, until the test lets it go.
    stalled: BTreeSet<(usize, usize)>,
    held: Vec<(usize, LinkId, Bytes)>,
    /// Clients that read nothing (a stuck consumer) until the test lets them go.
    stalled_clients: BTreeSet<(usize, ConnId)>,
    held_client: Vec<(usize, ConnId, Bytes)>,
    /// Clients whose input the node does not read now (it paused them).
    paused: BTreeSet<(usize, ConnId)>,
    /// Nodes stopped (a SIGSTOPped process): they handle nothing, their input waits.
    frozen: BTreeSet<usize>,
    frozen_input: Vec<(usize, Action)>,
}

impl Default for Net {
    fn default() -> Net {
        Net::new()
    }
}

impl Net {
    /// An empty network at time zero.
    pub fn new() -> Net {
        Net {
            now: Instant::ZERO,
            nodes: Vec::new(),
            peer_of: BTreeMap::new(),
            next_link: 0,
            next_conn: 0,
            queue: VecDeque::new(),
            events: Vec::new(),
            clients: BTreeMap::new(),
            cut: BTreeSet::new(),
            stalled: BTreeSet::new(),
            held: Vec::new(),
            stalled_clients: BTreeSet::new(),
            held_client: Vec::new(),
            paused: BTreeSet::new(),
            frozen: BTreeSet::new(),
            frozen_input: Vec::new(),
        }
    }

    /// `n` nodes, each joining through node 0, run until all are ready.
    pub fn ready(n: usize) -> Net {
        Net::ready_with(n, Security::Plain)
    }

    /// [`Net::ready`] with links of the given security.
    pub fn ready_with(n: usize, security: Security) -> Net {
        let mut net = Net::new();
        for i in 0..n {
            let seeds: Vec<usize> = if i == 0 { vec![] } else { vec![0] };
            net.add(mesh_config(i, &seeds), security.clone());
        }
        net.secs(20);
        for i in 0..n {
            assert!(
                net.events_of(i).contains(&&Event::Ready),
                "node {i} not ready"
            );
        }
        net
    }

    /// Starts a node with `cfg` (its seed derived from its index); returns its index.
    pub fn add(&mut self, cfg: MeshConfig, security: Security) -> usize {
        self.add_with(Config::default(), cfg, security)
    }

    /// [`Net::add`] with the node's own configuration.
    pub fn add_with(&mut self, config: Config, cfg: MeshConfig, security: Security) -> usize {
        let i = self.nodes.len();
        let seed = [i as u8 + 1; 32];
        let node = Node::networked(config, cfg, security, seed, self.now).unwrap();
        self.nodes.push(Some(node));
        self.drain();
        i
    }

    /// Node `i`, which must be alive.
    pub fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("live node")
    }

    fn handle(&mut self, i: usize, input: Input<'_>) {
        if let Some(n) = self.nodes[i].as_mut() {
            n.handle(self.now, input);
        }
    }

    /// A client of node `i`, handshaken (as a member of `cluster` unless empty).
    pub fn client(&mut self, i: usize, cluster: &str) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.clients.insert(
            (i, conn),
            Client {
                session: ClientSession::new(Limits::default()),
                inbox: Vec::new(),
                closed: false,
            },
        );
        self.handle(i, Input::ClientConnected(conn));
        let mut b = BytesMut::new();
        ClientSession::encode_init(cluster, &mut b);
        self.handle(i, Input::ClientData(conn, &b));
        self.drain();
        assert!(self.clients[&(i, conn)].session.is_accepted());
        conn
    }

    /// Client `conn` of node `i` sends `p`; everything it causes is carried out.
    pub fn send(&mut self, i: usize, conn: ConnId, p: ClientPacket) {
        let mut b = BytesMut::new();
        p.encode(&mut b);
        self.handle(i, Input::ClientData(conn, &b));
        self.drain();
    }

    /// Client `conn` of node `i` sends bytes it encoded itself (many packets in one read,
    /// as a socket delivers them).
    pub fn send_bytes(&mut self, i: usize, conn: ConnId, wire: &[u8]) {
        self.handle(i, Input::ClientData(conn, wire));
        self.drain();
    }

    /// What a client received since last asked.
    pub fn take(&mut self, i: usize, conn: ConnId) -> Vec<NodePacket> {
        self.clients
            .get_mut(&(i, conn))
            .map(|c| std::mem::take(&mut c.inbox))
            .unwrap_or_default()
    }

    /// What node `i` writes to node `j` stays unwritten (its socket is full) until
    /// [`Net::unstall`].
    pub fn stall(&mut self, i: usize, j: usize) {
        self.stalled.insert((i, j));
    }

    /// Node `i` stops, as a process stopped by SIGSTOP: it handles nothing, its timers do
    /// not fire, what reaches it waits in its sockets, until [`Net::thaw`].
    pub fn freeze(&mut self, i: usize) {
        self.frozen.insert(i);
    }

    /// Node `i` resumes (SIGCONT): its timers, all late, fire first (the worst order for
    /// it), then it reads what waited in its sockets.
    pub fn thaw(&mut self, i: usize) {
        self.frozen.remove(&i);
        self.handle(i, Input::Timeout);
        let waited = std::mem::take(&mut self.frozen_input);
        let (mine, others): (Vec<_>, Vec<_>) = waited.into_iter().partition(|(n, _)| *n == i);
        self.frozen_input = others;
        for action in mine.into_iter().rev() {
            self.queue.push_front(action);
        }
        self.drain();
    }

    /// The socket from `i` to `j` takes everything again, in order.
    pub fn unstall(&mut self, i: usize, j: usize) {
        self.stalled.remove(&(i, j));
        for (from, link, data) in std::mem::take(&mut self.held) {
            self.output(from, Output::PeerTransmit(link, data));
        }
        self.drain();
    }

    /// Client `conn` of node `i` reads nothing (its socket takes no more) until
    /// [`Net::unstall_client`].
    pub fn stall_client(&mut self, i: usize, conn: ConnId) {
        self.stalled_clients.insert((i, conn));
    }

    /// Client `conn` of node `i` reads again: what waited for it first, in order.
    pub fn unstall_client(&mut self, i: usize, conn: ConnId) {
        self.stalled_clients.remove(&(i, conn));
        let (go, keep) = std::mem::take(&mut self.held_client)
            .into_iter()
            .partition(|(n, c, _)| (*n, *c) == (i, conn));
        self.held_client = keep;
        for (n, c, data) in go {
            self.output(n, Output::Transmit(c, data));
        }
        self.drain();
    }

    /// Whether node `i` reads client `conn` now (a client whose writes block does not
    /// write more).
    pub fn is_paused(&self, i: usize, conn: ConnId) -> bool {
        self.paused.contains(&(i, conn))
    }

    /// Whether client `conn` of node `i` was closed by its node.
    pub fn is_closed(&self, i: usize, conn: ConnId) -> bool {
        self.clients.get(&(i, conn)).is_some_and(|c| c.closed)
    }

    /// Node `i` is told to join through the node at `addr` (as a driver does with a seed
    /// it resolved).
    pub fn join_via(&mut self, i: usize, addr: SocketAddr) {
        self.handle(i, Input::JoinVia(addr));
        self.drain();
    }

    /// Node `i` shuts down gracefully (as on SIGTERM), telling its clients `reason`; what
    /// it sends meanwhile is carried out.
    pub fn shutdown(&mut self, i: usize, reason: &str) {
        self.handle(i, Input::Shutdown(reason));
        self.drain();
    }

    /// Kills node `i` at once: its sockets close, its peers learn of it after.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i] = None;
        let ends: Vec<(usize, LinkId)> = self
            .peer_of
            .keys()
            .filter(|(n, _)| *n == i)
            .copied()
            .collect();
        for end in ends {
            if let Some((j, other)) = self.peer_of.remove(&end) {
                self.peer_of.remove(&(j, other));
                self.queue.push_back((j, Action::Gone(other)));
            }
        }
        self.drain();
    }

    /// Node `i`'s links to node `j` fail on `i`'s side only (a socket error there): `j`
    /// is told nothing and its ends stay open, but nothing more crosses them.
    pub fn fail_links_one_side(&mut self, i: usize, j: usize) {
        let ends: Vec<(usize, LinkId)> = self
            .peer_of
            .iter()
            .filter(|(end, other)| end.0 == i && other.0 == j)
            .map(|(&end, _)| end)
            .collect();
        for end in ends {
            if let Some(other) = self.peer_of.remove(&end) {
                self.peer_of.remove(&other);
                self.queue.push_back((i, Action::Gone(end.1)));
            }
        }
        self.drain();
    }

    fn new_link(&mut self) -> LinkId {
        self.next_link += 1;
        LinkId(self.next_link)
    }

    /// Carries out every output of every node, then delivers every queued action, until
    /// nothing moves.
    pub fn drain(&mut self) {
        loop {
            for i in 0..self.nodes.len() {
                while let Some(out) = self.nodes[i].as_mut().and_then(Node::poll_output) {
                    self.output(i, out);
                }
            }
            let Some((i, action)) = self.queue.pop_front() else {
                return;
            };
            if self.frozen.contains(&i) {
                self.frozen_input.push((i, action));
                continue;
            }

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
                Action::ClientFlushed(c, n) => self.handle(i, Input::ClientFlushed(c, n)),
                Action::Beacon(from, data) => self.handle(i, Input::Beacon { from, data: &data }),
            }
        }
    }

    fn output(&mut self, i: usize, out: Output) {
        match out {
            Output::Dial(d, to) => self.dial(i, d, to),
            Output::PeerTransmit(link, data) => {
                if let Some(&(j, _)) = self.peer_of.get(&(i, link))
                    && self.stalled.contains(&(i, j))
                {
                    self.held.push((i, link, data));
                    return;
                }
                self.queue.push_back((i, Action::Flushed(link, data.len())));
                if let Some(&(j, other)) = self.peer_of.get(&(i, link)) {
                    self.queue.push_back((j, Action::Data(other, data)));
                }
            }
            Output::PeerClose(link) => {
                if let Some((j, other)) = self.peer_of.remove(&(i, link)) {
                    self.peer_of.remove(&(j, other));
                    self.queue.push_back((j, Action::Gone(other)));
                }
            }
            Output::Transmit(conn, data) => self.write_client(i, conn, data),
            Output::Close(conn) => {
                if let Some(c) = self.clients.get_mut(&(i, conn)) {
                    c.closed = true;
                }
            }
            Output::PauseReading(conn) => {
                self.paused.insert((i, conn));
            }
            Output::ResumeReading(conn) => {
                self.paused.remove(&(i, conn));
            }
            // Every node hears beacons sent "everywhere" (one host, every well-known port),
            // from the node's own address; an answer reaches the node at that address.
            Output::Beacon { to, data } => {
                for j in 0..self.nodes.len() {
                    let reached = match to {
                        None => j != i,
                        Some(a) => addr(j) == a,
                    };
                    if reached && self.nodes[j].is_some() && !self.cut.contains(&pair(i, j)) {
                        self.queue
                            .push_back((j, Action::Beacon(addr(i), data.clone())));
                    }
                }
            }
            Output::Event(e) => self.events.push((i, e)),
            // Links here sign in place (`offload_signatures` is off): never asked.
            Output::Sign(..) => {}
        }
    }

    /// Node `i` dials `to`: a link to the node there, unless there is none or the two are
    /// cut off.
    fn dial(&mut self, i: usize, d: DialId, to: SocketAddr) {
        let target = (0..self.nodes.len())
            .find(|&j| addr(j) == to && self.nodes[j].is_some() && !self.cut.contains(&pair(i, j)));
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

    /// Bytes node `i` writes to its client `conn` (held while the client is stalled).
    fn write_client(&mut self, i: usize, conn: ConnId, data: Bytes) {
        if self.stalled_clients.contains(&(i, conn)) {
            self.held_client.push((i, conn, data));
            return;
        }
        if let Some(c) = self.clients.get_mut(&(i, conn)) {
            c.session.feed(&data);
            while let Some(ev) = c.session.poll().unwrap() {
                if let SessionEvent::Packet(p) = ev {
                    c.inbox.push(p);
                }
            }
        }
        self.queue
            .push_back((i, Action::ClientFlushed(conn, data.len())));
    }

    /// Runs timers and traffic until `t`.
    pub fn run_until(&mut self, t: Instant) {
        loop {
            self.drain();
            let next = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(i, _)| !self.frozen.contains(i))
                .filter_map(|(_, n)| n.as_ref().and_then(Node::poll_timeout))
                .min();
            match next {
                Some(at) if at <= t => {
                    self.now = self.now.max(at);
                    for i in 0..self.nodes.len() {
                        if self.frozen.contains(&i) {
                            continue;
                        }
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

    /// Runs `s` seconds of virtual time.
    pub fn secs(&mut self, s: u64) {
        let t = self.now + Duration::from_secs(s);
        self.run_until(t);
    }

    /// Runs `ms` milliseconds of virtual time.
    pub fn millis(&mut self, ms: u64) {
        let t = self.now + Duration::from_millis(ms);
        self.run_until(t);
    }

    /// The events node `i` reported.
    pub fn events_of(&self, i: usize) -> Vec<&Event> {
        self.events
            .iter()
            .filter(|(n, _)| *n == i)
            .map(|(_, e)| e)
            .collect()
    }
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    if a <= b { (a, b) } else { (b, a) }
}
