//! The driver: relay sockets, peer links and timers feeding one [`Node`], on any
//! [`Runtime`].
//!
//! The node is a single state machine, so the driver runs it on one thread (a
//! single-threaded runtime with local tasks): every connection (a relay client or a link
//! to another node) has a reader task that feeds bytes into the node and a writer task that
//! drains what the node queued for it, and no channel sits between them and the node. Each
//! wake-up handles at most one read (of [`READ_CHUNK`] bytes, or the rest of a client's
//! large message in progress), so one busy connection cannot starve the others. A
//! connection is read into its own input buffer in the node, lent for the read
//! ([`Node::lend_input`], [`Node::lend_peer_input`]): no copy. A client's reader stops
//! while the node says so (its next message cannot be queued yet: TCP pushes back on that
//! client alone); its writer reports every
//! batch written, which is when the node hands it the next (pulled writes). A networked
//! node binds its peer listener first, dials what the node asks for, and opens the relay
//! port only once the overlay has converged; a shutdown asked for before that still leaves
//! the network gracefully.
//!
//! An application can also attach clients to a node it runs in its own process
//! ([`Attach`], [`NodeHandle::attach`]): an in-memory pipe instead of a socket, the same
//! relay protocol and the same reader and writer tasks on the node's side. The node may run
//! on a thread of its own ([`NodeHandle`]) or beside the application on the application's
//! thread ([`run_with`]), where nothing between a client and the node crosses threads.

use crate::discovery::Beacons;
use crate::log_limit::LogLimit;
use crate::runtime::{
    Datagrams, Listener, ReadBytes, Runtime, Task, WriteBytes, limit_buffers, sleep, timeout,
    write_all_vectored, yield_now,
};
use crate::wake::Wake;
use bytes::Bytes;
use iris_proto::NetworkKey;
use iris_proto::{
    CloseReason, ConnId, DialId, Event as NodeEvent, Input, Instant, LinkId, MeshEvent, Node,
    Output, Security, Stats,
};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, error, info, warn};

mod embedded;
mod options;

pub use embedded::{Attach, EMBEDDED_PIPE, NodeHandle, PipeEnd, run_with};
pub use options::{DEFAULT_LINK_BUFFER, NetworkOptions, NodeOptions, random_seed};

/// Most bytes read from one client per wake-up.
pub const READ_CHUNK: usize = 64 * 1024;
/// How long shutdown waits for clients to take their CLOSE before giving up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(2500);
/// A dial that has not connected by then has failed.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// The kernel buffers of a relay connection, each way ([`crate::runtime::bound_buffers`]):
/// what a client has in flight waits where the node's budget and back-pressure see it.
pub const RELAY_BUFFER: usize = 64 << 10;

/// Binds the relay listeners: 127.0.0.1 and `[::1]` on one port. Fails only if both fail.
pub async fn bind_relay<R: Runtime>(port: u16) -> io::Result<(Vec<R::Listener>, u16)> {
    let v4 = R::listen(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await;
    // With port 0, IPv6 takes the port IPv4 got so that both name one relay.
    let port6 = match &v4 {
        Ok(l) => l.local_addr()?.port(),
        Err(_) => port,
    };
    let v6 = R::listen(SocketAddr::from((Ipv6Addr::LOCALHOST, port6))).await;
    match (v4, v6) {
        (Ok(a), Ok(b)) => Ok((vec![a, b], port6)),
        (Ok(a), Err(e)) => {
            debug!("relay not on [::1]: {e}");
            Ok((vec![a], port6))
        }
        (Err(e), Ok(b)) => {
            debug!("relay not on 127.0.0.1: {e}");
            let p = b.local_addr()?.port();
            Ok((vec![b], p))
        }
        (Err(e), Err(_)) => Err(e),
    }
}

/// What a node reports once it serves.
pub struct Ready<R: Runtime> {
    /// The relay port.
    pub port: u16,
    /// The address peers dial (networked nodes only).
    pub peer_addr: Option<SocketAddr>,
    /// Where in-process clients are handed to the node (see [`Attach`]).
    pub attach: Attach<R>,
}

impl<R: Runtime> std::fmt::Debug for Ready<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ready")
            .field("port", &self.port)
            .field("peer_addr", &self.peer_addr)
            .finish_non_exhaustive()
    }
}

/// Runs a node until `shutdown` completes, then closes every client (with `CLOSE
/// "<reason>"`), tells its peers it leaves, and returns the node's counters. Must run inside
/// [`Runtime::block_on`]; `ready` is told the relay port once it is open.
pub async fn run<R: Runtime>(
    opts: NodeOptions,
    ready: Option<async_channel::Sender<Ready<R>>>,
    shutdown: impl Future<Output = String>,
) -> io::Result<Stats> {
    run_local::<R>(opts, ready, shutdown).await
}

/// What the tasks of one node share. Never borrowed across an await.
pub(crate) struct Shared<R: Runtime> {
    node: Node,
    epoch: std::time::Instant,
    /// The sockets (or pipes) of relay clients and peer links.
    ios: BTreeMap<Endpoint, Rc<RefCell<ConnIo<R>>>>,
    next_link: u64,
    events: Option<std::sync::mpsc::Sender<MeshEvent>>,
    /// The node said it knows nobody, and has not converged with anyone since.
    alone_said: bool,
    /// Wakes the timer task when the node's deadline may have moved.
    timer_wake: Rc<Wake>,
    ready: bool,
    ready_wake: Rc<Wake>,
    /// Writer tasks still running, and the notice that the last one ended.
    live_writers: Rc<Cell<usize>>,
    writers_done: Rc<Wake>,
    /// Remote addresses of connections, for the log (removed when the node forgets them).
    addrs: BTreeMap<Endpoint, SocketAddr>,
    /// Budgets of the warnings a remote party can trigger at will.
    refusals: LogLimit,
    /// Trees refused for `max_trees` (reported in batches by the core).
    trees_full: LogLimit,
    /// Messages dropped between nodes (reported in batches by the core).
    losses: LogLimit,
    handshakes: LogLimit,
    /// The discovery socket, if the node looks for others.
    beacons: Option<Beacons<R>>,
    /// The network keys (current, then previous), for the handshakes' signatures, which
    /// run on the runtime's blocking pool.
    keys: Vec<Arc<NetworkKey>>,
    /// Each peer link's kernel buffers (`NetworkOptions::link_buffer`; 0: the kernel's).
    link_buffer: usize,
}

/// The driver's side of one connection (a client's or a peer link's).
struct ConnIo<R: Runtime> {
    /// Transmits not yet written.
    queue: VecDeque<Bytes>,
    /// The node asked to close once `queue` is written.
    closing: bool,
    /// The socket is gone: drop whatever is queued.
    gone: bool,
    /// The node asked not to read this socket for now.
    paused: bool,
    wake: Rc<Wake>,
    read_wake: Rc<Wake>,
    reader: Option<R::Task>,
}

pub(crate) type SharedRc<R> = Rc<RefCell<Shared<R>>>;

async fn run_local<R: Runtime>(
    opts: NodeOptions,
    ready: Option<async_channel::Sender<Ready<R>>>,
    shutdown: impl Future<Output = String>,
) -> io::Result<Stats> {
    let epoch = std::time::Instant::now();
    let invalid = |e: iris_proto::ConfigError| io::Error::new(io::ErrorKind::InvalidInput, e);
    let mut keys = Vec::new();
    let mut seed_names = (Vec::new(), Duration::ZERO);
    let link_buffer = opts.network.as_ref().map_or(0, |n| n.link_buffer);
    let (node, peer_listener, events, beacons) = match opts.network {
        None => (
            Node::new(opts.config, opts.seed, Instant::ZERO).map_err(invalid)?,
            None,
            None,
            None,
        ),
        Some(net) => {
            let listener = R::listen(net.bind).await.map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot bind the peer listener on {}: {e}", net.bind),
                )
            })?;
            let bound = listener.local_addr()?;
            let listen = net.advertise.unwrap_or(bound);
            if listen.ip().is_unspecified() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("peers cannot dial {listen}: give the address to advertise"),
                ));
            }
            info!("peer listener on {bound}, advertised as {listen}");
            let mut mesh = net.mesh;
            mesh.listen = listen;
            // Handshake signatures (1-4.5 ms each) go to the blocking pool.
            mesh.link.offload_signatures = true;
            if let Security::Rsa(key) = &net.security {
                keys.push(key.clone());
            }
            keys.extend(mesh.link.previous_key.clone());
            let beacons = Beacons::<R>::bind(net.discover, &net.discovery_ports)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("discovery socket: {e}")))?;
            mesh.discovery = match (&beacons, mesh.discovery.take()) {
                (None, _) => None,
                (Some(_), Some(d)) => Some(d),
                (Some(_), None) => Some(Default::default()),
            };
            if mesh.epoch == 0 {
                // This start's incarnation: later starts of the same id get larger ones.
                mesh.epoch = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_millis() as u64);
            }
            let network = mesh.link.network.clone();
            mesh.seeds_to_come |= !net.seed_names.is_empty();
            seed_names = (net.seed_names, mesh.overlay.heartbeat_period);
            let node = Node::networked(opts.config, mesh, net.security, opts.seed, Instant::ZERO)
                .map_err(invalid)?;
            if let Some(id) = node.status().id {
                info!("booting iris overlay: node {id}, network {network:?}");
            }
            (node, Some((listener, listen)), net.events, beacons)
        }
    };
    let peer_addr = peer_listener.as_ref().map(|(_, a)| *a);
    let shared = Rc::new(RefCell::new(Shared {
        node,
        epoch,
        ios: BTreeMap::new(),
        next_link: 0,
        events,
        alone_said: false,
        timer_wake: Rc::new(Wake::default()),
        ready: false,
        ready_wake: Rc::new(Wake::default()),
        live_writers: Rc::new(Cell::new(0)),
        writers_done: Rc::new(Wake::default()),
        addrs: BTreeMap::new(),
        refusals: LogLimit::new(),
        trees_full: LogLimit::new(),
        losses: LogLimit::new(),
        handshakes: LogLimit::new(),
        beacons,
        keys,
        link_buffer,
    }));
    pump(&shared);
    let timer = R::spawn_local(timer_task(shared.clone()));
    let mut acceptors = Vec::new();
    if let Some(addr) = opts.metrics {
        let listener = R::listen(addr).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot bind the metrics endpoint on {addr}: {e}"),
            )
        })?;
        let at = listener.local_addr()?;
        info!("metrics on http://{at}/metrics, status page on http://{at}/");
        acceptors.push(R::spawn_local(metrics_task(shared.clone(), listener)));
    }
    let beacon_socket = shared.borrow().beacons.as_ref().map(Beacons::socket);
    if let Some(socket) = beacon_socket {
        acceptors.push(R::spawn_local(beacon_task(shared.clone(), socket)));
    }
    if let Some((listener, _)) = peer_listener {
        acceptors.push(R::spawn_local(peer_accept_task(shared.clone(), listener)));
    }
    if !seed_names.0.is_empty() {
        let (names, period) = seed_names;
        let task = crate::seeds::seed_names_task(shared.clone(), names, period);
        acceptors.push(R::spawn_local(task));
    }

    // The relay port opens only once the node says it serves; a shutdown asked for while
    // it boots is served all the same (peers are told the node leaves).
    let mut shutdown = std::pin::pin!(shutdown);
    let ready_wake = shared.borrow().ready_wake.clone();
    let early = futures_lite::future::or(async { Some(shutdown.as_mut().await) }, async {
        while !shared.borrow().ready {
            ready_wake.wait().await;
        }
        None
    })
    .await;
    let reason = match early {
        Some(reason) => {
            info!("shutting down before the relay port opened: {reason}");
            reason
        }
        None => {
            let (listeners, port) = if opts.relay {
                let (listeners, port) = bind_relay::<R>(opts.port).await?;
                info!("iris successfully booted, listening on port {port}.");
                (listeners, port)
            } else {
                info!(
                    "iris successfully booted, serving clients of this process only (no relay port)."
                );
                (Vec::new(), 0)
            };
            let (attach, attached) = async_channel::bounded(16);
            acceptors.push(R::spawn_local(attach_task(shared.clone(), attached)));
            if let Some(ready) = ready {
                let _ = ready.try_send(Ready {
                    port,
                    peer_addr,
                    attach: Attach::new(attach, port),
                });
            }
            for listener in listeners {
                acceptors.push(R::spawn_local(accept_task(shared.clone(), listener)));
            }
            let reason = shutdown.await;
            info!("shutting down: {reason}");
            reason
        }
    };
    for a in acceptors {
        a.abort();
    }
    let done = shared.borrow().writers_done.clone();
    let live = shared.borrow().live_writers.clone();
    handle(&shared, Input::Shutdown(&reason));
    let all_done = async {
        while live.get() > 0 {
            done.wait().await;
        }
    };
    if timeout::<R, _>(SHUTDOWN_GRACE, all_done).await.is_none() {
        warn!("{} clients did not take their CLOSE in time", live.get());
    }
    timer.abort();
    let stats = shared.borrow().node.stats();
    info!("node stopped: {stats:?}");
    if let Some(mesh) = shared.borrow().node.status().mesh {
        info!("links: {mesh:?}");
    }
    Ok(stats)
}

/// Peers the node knows.
pub(crate) fn peers<R: Runtime>(shared: &SharedRc<R>) -> usize {
    shared.borrow().node.status().peers
}

/// Feeds one input and carries out everything the node asks for.
pub(crate) fn handle<R: Runtime>(shared: &SharedRc<R>, input: Input<'_>) {
    {
        let mut s = shared.borrow_mut();
        let now = Instant::from_nanos(s.epoch.elapsed().as_nanos() as u64);
        s.node.handle(now, input);
    }
    pump(shared);
}

fn pump<R: Runtime>(shared: &SharedRc<R>) {
    let mut s = shared.borrow_mut();
    while let Some(out) = s.node.poll_output() {
        match out {
            Output::Transmit(conn, data) => transmit(s.ios.get(&Endpoint::Client(conn)), data),
            Output::Close(conn) => close_after_flush(s.ios.remove(&Endpoint::Client(conn))),
            Output::PeerTransmit(link, data) => transmit(s.ios.get(&Endpoint::Peer(link)), data),
            Output::PeerClose(link) => close_after_flush(s.ios.remove(&Endpoint::Peer(link))),
            Output::PauseReading(conn) => {
                if let Some(io) = s.ios.get(&Endpoint::Client(conn)) {
                    io.borrow_mut().paused = true;
                }
            }
            Output::ResumeReading(conn) => {
                if let Some(io) = s.ios.get(&Endpoint::Client(conn)) {
                    let mut io = io.borrow_mut();
                    io.paused = false;
                    io.read_wake.notify();
                }
            }
            Output::Event(e) => log_event(&mut s, e),
            Output::Dial(dial, addr) => {
                R::spawn_local(dial_task(shared.clone(), dial, addr)).detach();
            }
            Output::Beacon { to, data } => {
                if let Some(b) = s.beacons.as_mut() {
                    b.send(to, &data);
                }
            }
            Output::Sign(link, to_sign) => {
                match s.keys.iter().find(|k| k.id() == to_sign.key).cloned() {
                    Some(key) => {
                        R::spawn_local(sign_task(shared.clone(), link, key, to_sign)).detach()
                    }
                    // The core names only keys it was given: cannot happen.
                    None => error!("link {} asked for a key this node lacks", link.0),
                }
            }
        }
    }
    s.timer_wake.notify();
}

/// Signs for a link's handshake on the blocking pool, then hands the node the signature.
async fn sign_task<R: Runtime>(
    shared: SharedRc<R>,
    link: LinkId,
    key: Arc<NetworkKey>,
    to_sign: iris_proto::ToSign,
) {
    let seed = random_seed();
    let signature = R::unblock(move || key.sign_seeded(seed, &to_sign.message)).await;
    handle(&shared, Input::Signed(link, &signature));
}

/// Hands bytes to a connection's writer (a client's or a peer link's).
fn transmit<R: Runtime>(io: Option<&Rc<RefCell<ConnIo<R>>>>, data: Bytes) {
    if let Some(io) = io {
        let mut io = io.borrow_mut();
        io.queue.push_back(data);
        io.wake.notify();
    }
}

/// Tells a connection's writer to close once its queue is written.
fn close_after_flush<R: Runtime>(io: Option<Rc<RefCell<ConnIo<R>>>>) {
    if let Some(io) = io {
        let mut io = io.borrow_mut();
        io.closing = true;
        io.wake.notify();
    }
}

fn log_event<R: Runtime>(s: &mut Shared<R>, e: NodeEvent) {
    match e {
        NodeEvent::Ready => {
            s.ready = true;
            s.ready_wake.notify();
        }
        NodeEvent::ClientAttached { conn, cluster } if cluster.is_empty() => {
            debug!(conn = conn.0, "client attached")
        }
        NodeEvent::ClientAttached { conn, cluster } => {
            debug!(conn = conn.0, %cluster, "service registered")
        }
        NodeEvent::ClientClosed { conn, reason } => {
            let addr = s.addrs.remove(&Endpoint::Client(conn));
            let client = ClientName(conn, addr);
            match reason {
                // Anyone on the host can trigger these: warn, within a budget.
                CloseReason::Violation(why) => {
                    limited_warn(&mut s.refusals, format_args!("{client} dropped: {why}"))
                }
                CloseReason::Refused(why) => {
                    limited_warn(&mut s.refusals, format_args!("{client} refused: {why}"))
                }
                CloseReason::SlowConsumer(why) => {
                    limited_warn(&mut s.refusals, format_args!("{client} cut: {why}"))
                }
                other => debug!("{client} closed: {other:?}"),
            }
        }
        NodeEvent::Stopped => debug!("all clients closed"),
        NodeEvent::Dropped {
            reason,
            what,
            count,
        } => limited_warn(
            &mut s.losses,
            format_args!("dropped {count} message(s) ({reason}), the last {what}"),
        ),
        NodeEvent::TreesFull {
            group,
            refused,
            max_trees,
            memory: None,
        } => limited_warn(
            &mut s.trees_full,
            format_args!(
                "refused {refused} multicast tree(s), the last for {group}: this node takes part \
                 in {max_trees} trees already (--max-trees); messages of those groups do not \
                 pass through it"
            ),
        ),
        NodeEvent::TreesFull {
            group,
            refused,
            memory: Some(bytes),
            ..
        } => limited_warn(
            &mut s.trees_full,
            format_args!(
                "refused {refused} multicast tree(s), the last for {group}: this node's tree \
                 state reached {} MiB, the quarter of --max-memory it may take; messages of \
                 those groups do not pass through it",
                bytes >> 20
            ),
        ),
        NodeEvent::Mesh(e) => {
            match &e {
                MeshEvent::Converged { peers } => {
                    s.alone_said = false;
                    info!("iris overlay converged with {peers} remote connections")
                }
                MeshEvent::Discovered { peer, addr } => {
                    info!("discovered node {peer} at {addr}: joining through it")
                }
                MeshEvent::PeerDown(id) => info!("peer {id} is down"),
                MeshEvent::Resumed { late } => warn!(
                    "this node was stopped for about {:.1} s (its heartbeat came that late): \
                     its peers are checked again rather than taken for dead",
                    late.as_secs_f64()
                ),
                MeshEvent::BeaconsForged { from, count } => warn!(
                    "ignored {count} discovery beacon(s) of this network's name not made with \
                     its key, the last from {from}: a node with another network key, or forged"
                ),
                MeshEvent::LinkUp { link, peer } => debug!(link = link.0, "peer link up: {peer}"),
                MeshEvent::LinkClosed { link, peer, reason } => {
                    s.addrs.remove(&Endpoint::Peer(*link));
                    debug!(link = link.0, ?peer, "peer link closed: {reason}")
                }
                MeshEvent::HandshakeFailed { link, addr, reason } => {
                    let remote = s.addrs.remove(&Endpoint::Peer(*link));
                    let (who, dir) = match addr {
                        Some(a) => (Some(*a), "to"),
                        None => (remote, "from"),
                    };
                    let who = who.map_or_else(|| "?".to_string(), |a| a.to_string());
                    limited_warn(
                        &mut s.handshakes,
                        format_args!("peer link {dir} {who} refused: {reason}"),
                    )
                }
                MeshEvent::SeedsRefused { reasons } => {
                    let list: Vec<String> =
                        reasons.iter().map(|(a, r)| format!("{a}: {r}")).collect();
                    error!(
                        "every seed refused this node ({}); it will not serve clients as a \
                         network of one: check --net and --rsa; retrying",
                        list.join("; ")
                    )
                }
                MeshEvent::DialFailed(addr) => debug!("could not reach {addr}"),
                // Said each seed retry while it lasts: log the first.
                MeshEvent::Alone if !s.alone_said => {
                    s.alone_said = true;
                    warn!("no peer reachable; retrying the seeds every heartbeat period")
                }
                MeshEvent::Alone => debug!("still no peer reachable"),
            }
            if let Some(tx) = &s.events {
                let _ = tx.send(e);
            }
        }
    }
}

/// A client as the log names it: its id and, when known, its address.
struct ClientName(ConnId, Option<SocketAddr>);

impl std::fmt::Display for ClientName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            Some(a) => write!(f, "client {} ({a})", self.0.0),
            None => write!(f, "client {}", self.0.0),
        }
    }
}

/// A warning within `limit`'s budget; what the budget held back is summed up later.
fn limited_warn(limit: &mut LogLimit, line: std::fmt::Arguments<'_>) {
    let (log, suppressed) = limit.allow(std::time::Instant::now());
    if suppressed > 0 {
        warn!("{suppressed} more like the next were not logged in the last 10 s");
    }
    if log {
        warn!("{line}");
    }
}

async fn timer_task<R: Runtime>(shared: SharedRc<R>) {
    let wake = shared.borrow().timer_wake.clone();
    loop {
        let deadline = {
            let s = shared.borrow();
            s.node
                .poll_timeout()
                .map(|at| s.epoch + Duration::from_nanos(at.as_nanos()))
        };
        match deadline {
            Some(at) => {
                let fired = futures_lite::future::or(
                    async {
                        R::sleep_until(at).await;
                        true
                    },
                    async {
                        wake.wait().await;
                        false
                    },
                )
                .await;
                if fired {
                    handle(&shared, Input::Timeout);
                }
            }
            None => wake.wait().await,
        }
    }
}

async fn accept_task<R: Runtime>(shared: SharedRc<R>, listener: R::Listener) {
    let mut next = 0u64;
    let base = listener
        .local_addr()
        .map(|a| u64::from(a.is_ipv6()))
        .unwrap_or(0);
    let mut limit = LogLimit::new();
    loop {
        let (rd, wr, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                limited_warn(&mut limit, format_args!("relay accept failed: {e}"));
                sleep::<R>(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Relay connections are on loopback, where small buffers cost no throughput.
        limit_buffers::<R>(&rd, RELAY_BUFFER);
        // Two listeners share one id space: even ids for IPv4, odd for IPv6.
        let conn = ConnId(next * 2 + base);
        next += 1;
        start_io(&shared, Endpoint::Client(conn), rd, wr, Some(from), None);
    }
}

/// In-process clients get ids of their own, apart from the relay listeners' (which count
/// up from 0, even for IPv4 and odd for IPv6).
const EMBEDDED_IDS: u64 = 1 << 62;

/// Starts a client connection for each pipe an in-process client hands over.
async fn attach_task<R: Runtime>(
    shared: SharedRc<R>,
    attached: async_channel::Receiver<PipeEnd<R>>,
) {
    let mut next = 0u64;
    while let Ok((rd, wr)) = attached.recv().await {
        let conn = ConnId(EMBEDDED_IDS + next);
        next += 1;
        start_io(&shared, Endpoint::Client(conn), rd, wr, None, None);
    }
}

/// Most scrapes served at once; more connections are closed at once.
const MAX_SCRAPES: usize = 8;

/// Serves `GET /metrics`: each scrape a snapshot of the node, taken on its thread.
async fn metrics_task<R: Runtime>(shared: SharedRc<R>, listener: R::Listener) {
    let busy = Rc::new(Cell::new(0usize));
    let mut limit = LogLimit::new();
    loop {
        match listener.accept().await {
            Ok((rd, wr, _)) if busy.get() < MAX_SCRAPES => {
                busy.set(busy.get() + 1);
                let (shared, busy) = (shared.clone(), busy.clone());
                R::spawn_local(async move {
                    crate::metrics::serve::<R>(rd, wr, || {
                        let s = shared.borrow();
                        crate::metrics::Snapshot::of(&s.node, s.ready)
                    })
                    .await;
                    busy.set(busy.get() - 1);
                })
                .detach();
            }
            Ok(_) => {} // too many at once: dropped
            Err(e) => {
                limited_warn(&mut limit, format_args!("metrics accept failed: {e}"));
                sleep::<R>(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Feeds the datagrams of the discovery socket to the node.
async fn beacon_task<R: Runtime>(shared: SharedRc<R>, socket: Rc<R::Udp>) {
    let mut buf = [0u8; 512];
    let mut limit = LogLimit::new();
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => handle(
                &shared,
                Input::Beacon {
                    from,
                    data: &buf[..n],
                },
            ),
            Err(e) => {
                // ICMP errors of earlier sends surface here on some systems: not fatal.
                limited_warn(&mut limit, format_args!("discovery socket: {e}"));
                sleep::<R>(Duration::from_millis(50)).await;
            }
        }
    }
}

/// New peer connections taken per second, and in a burst. Anyone who can reach the peer
/// port can open connections, and each costs the node's thread about 0.1-0.2 ms before a
/// stranger is refused (an X25519 key, a signature check, the bookkeeping): unpaced, a
/// flood from one process took 90 % of the thread and relay requests waited 10-20 ms. Paced,
/// strangers cost at most a few percent of it; the kernel's backlog holds (or, when full,
/// drops) the rest, and a genuine node that is kept waiting dials again. A network's real
/// joins come far slower than this.
const PEER_ACCEPTS_PER_SEC: f64 = 200.0;
const PEER_ACCEPT_BURST: f64 = 64.0;

async fn peer_accept_task<R: Runtime>(shared: SharedRc<R>, listener: R::Listener) {
    let mut limit = LogLimit::new();
    let mut paced = LogLimit::new();
    let (mut tokens, mut last) = (PEER_ACCEPT_BURST, std::time::Instant::now());
    loop {
        let now = std::time::Instant::now();
        tokens = (tokens + now.duration_since(last).as_secs_f64() * PEER_ACCEPTS_PER_SEC)
            .min(PEER_ACCEPT_BURST);
        last = now;
        if tokens < 1.0 {
            limited_warn(
                &mut paced,
                format_args!(
                    "peer connections arrive faster than {PEER_ACCEPTS_PER_SEC} a second: taking them at that pace"
                ),
            );
            let wait = (1.0 - tokens) / PEER_ACCEPTS_PER_SEC;
            sleep::<R>(Duration::from_secs_f64(wait)).await;
            continue;
        }
        tokens -= 1.0;
        match listener.accept().await {
            Ok((rd, wr, from)) => {
                debug!("peer connection from {from}");
                limit_buffers::<R>(&rd, shared.borrow().link_buffer);
                let link = new_link(&shared);
                start_io(&shared, Endpoint::Peer(link), rd, wr, Some(from), None);
            }
            Err(e) => {
                limited_warn(&mut limit, format_args!("peer accept failed: {e}"));
                sleep::<R>(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Connects to another node for the core, and reports the link or the failure.
async fn dial_task<R: Runtime>(shared: SharedRc<R>, dial: DialId, addr: SocketAddr) {
    match timeout::<R, _>(DIAL_TIMEOUT, R::connect(addr)).await {
        Some(Ok((rd, wr))) => {
            limit_buffers::<R>(&rd, shared.borrow().link_buffer);
            let link = new_link(&shared);
            start_io(
                &shared,
                Endpoint::Peer(link),
                rd,
                wr,
                Some(addr),
                Some(dial),
            );
        }
        Some(Err(e)) => {
            debug!("dial {addr} failed: {e}");
            handle(&shared, Input::DialFailed(dial));
        }
        None => {
            debug!("dial {addr} timed out");
            handle(&shared, Input::DialFailed(dial));
        }
    }
}

fn new_link<R: Runtime>(shared: &SharedRc<R>) -> LinkId {
    let mut s = shared.borrow_mut();
    s.next_link += 1;
    LinkId(s.next_link)
}

/// Whose socket a reader and a writer serve: the key of the driver's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Endpoint {
    Client(ConnId),
    Peer(LinkId),
}

/// Starts the reader and writer tasks of a connection (a socket's halves, or an in-process
/// client's pipe, which has no address) and tells the node of it.
fn start_io<R: Runtime>(
    shared: &SharedRc<R>,
    ep: Endpoint,
    rd: impl ReadBytes,
    wr: impl WriteBytes,
    remote: Option<SocketAddr>,
    dial: Option<DialId>,
) {
    let io = Rc::new(RefCell::new(ConnIo {
        queue: VecDeque::new(),
        closing: false,
        gone: false,
        paused: false,
        wake: Rc::new(Wake::default()),
        read_wake: Rc::new(Wake::default()),
        reader: None,
    }));
    {
        let mut s = shared.borrow_mut();
        s.live_writers.set(s.live_writers.get() + 1);
        if let Some(remote) = remote {
            s.addrs.insert(ep, remote);
        }
        s.ios.insert(ep, io.clone());
    }
    R::spawn_local(writer_task(shared.clone(), ep, io.clone(), wr)).detach();
    let reader = R::spawn_local(reader_task(shared.clone(), ep, io.clone(), rd));
    io.borrow_mut().reader = Some(reader);
    match ep {
        Endpoint::Client(conn) => handle(shared, Input::ClientConnected(conn)),
        Endpoint::Peer(link) => handle(
            shared,
            Input::PeerConnected {
                link,
                dial,
                from: remote,
            },
        ),
    }
}

async fn reader_task<R: Runtime>(
    shared: SharedRc<R>,
    ep: Endpoint,
    io: Rc<RefCell<ConnIo<R>>>,
    mut rd: impl ReadBytes,
) {
    let read_wake = io.borrow().read_wake.clone();
    loop {
        // While the node cannot queue this client's next message, it is not read: TCP
        // pushes back on it alone.
        while io.borrow().paused {
            read_wake.wait().await;
        }
        // Bytes are read into the connection's own input buffer in the node (a client's or
        // a link's), lent for the read, so that they are not copied on their way in.
        let mut input = match ep {
            Endpoint::Client(conn) => shared.borrow_mut().node.lend_input(conn, READ_CHUNK),
            Endpoint::Peer(link) => shared.borrow_mut().node.lend_peer_input(link, READ_CHUNK),
        };
        match rd.read_buf(&mut input).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if !shared.borrow().ios.contains_key(&ep) {
                    return;
                }
                match ep {
                    Endpoint::Client(conn) => handle(&shared, Input::ClientRead(conn, input)),
                    Endpoint::Peer(link) => handle(&shared, Input::PeerRead(link, input)),
                }
                // A socket that always has more (a publisher's flood) would otherwise be
                // read again at once, up to the runtime's budget (tokio's is 128 reads, 8 MiB
                // here): other connections, a reply among them, wait behind that.
                yield_now().await;
            }
        }
    }
    report_gone(&shared, ep);
}

/// A connection's socket failed or ended: its other half stops, and the node forgets it.
fn report_gone<R: Runtime>(shared: &SharedRc<R>, ep: Endpoint) {
    let known = shared.borrow_mut().ios.remove(&ep);
    if let Some(io) = known {
        let mut io = io.borrow_mut();
        io.gone = true;
        io.wake.notify();
    }
    match ep {
        Endpoint::Client(conn) => handle(shared, Input::ClientGone(conn)),
        Endpoint::Peer(link) => {
            // The node may name the link in what it reports about its end: forget its
            // address after.
            handle(shared, Input::PeerGone(link));
            shared.borrow_mut().addrs.remove(&Endpoint::Peer(link));
        }
    }
}

/// How long a closing connection may take to accept its last bytes.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);

/// Bookkeeping that must happen however a writer task ends, aborted included.
struct WriterGuard<R: Runtime> {
    shared: SharedRc<R>,
    io: Rc<RefCell<ConnIo<R>>>,
}

impl<R: Runtime> Drop for WriterGuard<R> {
    fn drop(&mut self) {
        // Both halves must go for the socket to close: stop the reader too (a no-op if it
        // already ended).
        if let Ok(mut io) = self.io.try_borrow_mut()
            && let Some(reader) = io.reader.take()
        {
            reader.abort();
        }
        if let Ok(s) = self.shared.try_borrow() {
            s.live_writers.set(s.live_writers.get() - 1);
            if s.live_writers.get() == 0 {
                s.writers_done.notify();
            }
        }
    }
}

async fn writer_task<R: Runtime>(
    shared: SharedRc<R>,
    ep: Endpoint,
    io: Rc<RefCell<ConnIo<R>>>,
    mut wr: impl WriteBytes,
) {
    let _guard = WriterGuard {
        shared: shared.clone(),
        io: io.clone(),
    };
    let wake = io.borrow().wake.clone();
    let mut batch: VecDeque<Bytes> = VecDeque::new();
    loop {
        let closing = {
            let mut io = io.borrow_mut();
            if io.gone {
                return;
            }
            batch.extend(io.queue.drain(..));
            io.closing
        };
        if batch.is_empty() {
            if closing {
                let _ = timeout::<R, _>(CLOSE_FLUSH, wr.shutdown()).await;
                return;
            }
            wake.wait().await;
            continue;
        }
        let written: usize = batch.iter().map(Bytes::len).sum();
        let write = write_all_vectored(&mut wr, &mut batch);
        // A closing client that stops reading must not hold its socket for ever.
        let result = if closing {
            timeout::<R, _>(CLOSE_FLUSH, write)
                .await
                .unwrap_or_else(|| Err(io::ErrorKind::TimedOut.into()))
        } else {
            write.await
        };
        if result.is_err() {
            // Reported here, not left to the reader: this task's end aborts the reader,
            // which may not have seen the failure yet, and the node would keep a dead
            // client (a member drawing requests) until its deadline. Unless the node
            // already let it go (a close whose last bytes were not taken).
            let known = shared
                .borrow()
                .ios
                .get(&ep)
                .is_some_and(|known| Rc::ptr_eq(known, &io));
            io.borrow_mut().gone = true;
            if known {
                report_gone(&shared, ep);
            }
            return;
        }
        // The node hands over the next batch in answer (pulled writes).
        match ep {
            Endpoint::Client(conn) => handle(&shared, Input::ClientFlushed(conn, written)),
            Endpoint::Peer(link) => handle(&shared, Input::PeerFlushed(link, written)),
        }
    }
}
