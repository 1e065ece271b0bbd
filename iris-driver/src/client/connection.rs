//! A connection to the local node: the IO around `iris-proto`'s [`ClientMachine`], which
//! holds the protocol (request ids and outcomes, tunnels, subscriptions, the end). This
//! file is the async half: the handshake over a stream, the writer that writes what the
//! machine hands out, the reader that feeds it the node's bytes, and the waiters and
//! handlers its events go to, keyed by the machine's ids.

use super::error::{from_build, from_call, from_end, from_request};
use super::handler::{ServiceHandler, TopicHandler};
use super::pool::{Limits, Pool};
use super::spawner::Spawner;
use super::tunnel::{TUNNEL_WINDOW, Tunnel, TunnelSlot};
use super::{Error, Result};
use crate::driver::{Attach, NodeHandle};
use crate::runtime::{ReadBytes, Runtime, WriteBytes};
use bytes::Bytes;
use event_listener::Event;
use iris_proto::Instant;
use iris_proto::relay::Name;
use iris_proto::relay::client::{
    CallError, ClientConfig, ClientMachine, DEFAULT_SEND_BUFFER, Event as ClientEvent, Input,
    NodeRequestId, Output, RequestId, TunnelId,
};
use iris_proto::relay::codec;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Bytes a connection buffers for its socket before send-type calls wait.
pub const MAX_BUFFERED: usize = DEFAULT_SEND_BUFFER;
/// How long [`Connection::close`] waits for the node's CLOSE.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Limits of a registered service, per kind of delivery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceLimits {
    /// Broadcast handling.
    pub broadcast: Limits,
    /// Request handling.
    pub request: Limits,
}

/// A connection to the local Iris node; cheap to clone, all clones share it. It stays open
/// until [`Connection::close`] or until the node drops it.
#[derive(Debug, Clone)]
pub struct Connection {
    pub(crate) inner: Arc<Inner>,
}

/// A request delivered to this service: the node's id, the payload, when it expires.
type Delivery = (NodeRequestId, Bytes, Instant);

/// The service side of a connection, if it registered under a cluster.
struct Service {
    broadcasts: Arc<Pool<Bytes>>,
    requests: Arc<Pool<Delivery>>,
    on_tunnel: Box<dyn Fn(Tunnel) + Send + Sync>,
    on_drop: Box<dyn Fn(Error) + Send + Sync>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").finish_non_exhaustive()
    }
}

/// What the handles, the reader and the writer of one connection share.
#[derive(Debug)]
pub(crate) struct Inner {
    state: Mutex<State>,
    /// Wakes the writer: a transmit is ready, or the connection ended.
    writer_wake: Event,
    /// Wakes calls waiting for room in the machine's send buffer.
    pub(crate) space: Event,
    /// Wakes [`Connection::close`] once the connection has ended.
    ended_notify: Event,
    service: Option<Service>,
    /// The origin of the machine's time: its [`Instant`]s count from here.
    epoch: std::time::Instant,
    /// Where the connection's tasks run.
    pub(crate) spawner: Spawner,
}

/// The machine, and whoever waits on what it will report.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) machine: ClientMachine,
    /// The transmit the machine handed out, until the writer takes it (one at a time: the
    /// machine hands out no more before the writer reports it flushed).
    transmit: Option<Bytes>,
    /// The callers of [`Connection::request`], by request.
    replies: BTreeMap<RequestId, OneShot<Result<Bytes>>>,
    /// The callers of [`Connection::tunnel`], by tunnel.
    builds: BTreeMap<TunnelId, OneShot<Result<Tunnel>>>,
    /// What the [`Tunnel`] handles read, by tunnel, while they exist.
    pub(crate) tunnels: BTreeMap<TunnelId, TunnelSlot>,
    /// The topics' handler pools.
    topics: BTreeMap<Name, Arc<Pool<Bytes>>>,
}

/// The sending end of a one-answer channel (a request's reply, a tunnel's build).
type OneShot<T> = async_channel::Sender<T>;

/// What [`Inner::drive`] does once the state is unlocked: these may lock it again.
enum After {
    /// A built tunnel for its builder, who may have gone (the tunnel then closes).
    Built(OneShot<Result<Tunnel>>, Tunnel),
    /// An inbound tunnel for the service's handler.
    Offered(Tunnel),
    /// The connection ended: stop the handlers.
    Ended(Error, Vec<Arc<Pool<Bytes>>>),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Connects to the local node on `port` as a plain client, on runtime `R` (the runtime
/// crates wrap this: `iris_tokio::client::connect(port)`).
pub async fn connect<R: Runtime>(port: u16) -> Result<Connection> {
    open::<R>(Transport::Port(port), "", None).await
}

/// Connects as a member of `cluster`, served by `handler` within `limits`, on runtime `R`.
/// The handler's `init` runs before any delivery reaches it; if it fails, the connection
/// is closed.
pub async fn register<R: Runtime, H: ServiceHandler>(
    port: u16,
    cluster: &str,
    handler: H,
    limits: ServiceLimits,
) -> Result<Connection> {
    register_over::<R, H>(Transport::Port(port), cluster, handler, limits).await
}

impl<R: Runtime> NodeHandle<R> {
    /// Connects as a plain client to this node, which runs in this process, through an
    /// in-memory pipe: no socket and no system call between them.
    pub async fn connect(&self) -> Result<Connection> {
        self.attacher().connect().await
    }

    /// Registers a member of `cluster` with this node, as [`NodeHandle::connect`]
    /// connects ([`register`] over a relay port).
    pub async fn register<H: ServiceHandler>(
        &self,
        cluster: &str,
        handler: H,
        limits: ServiceLimits,
    ) -> Result<Connection> {
        self.attacher().register(cluster, handler, limits).await
    }
}

impl<R: Runtime> Attach<R> {
    /// Connects as a plain client to the node, which runs in this process, through an
    /// in-memory pipe: no socket and no system call between them.
    pub async fn connect(&self) -> Result<Connection> {
        open::<R>(Transport::Pipe(self.pipe().await?), "", None).await
    }

    /// Registers a member of `cluster` with the node, as [`Attach::connect`] connects
    /// ([`register`] over a relay port).
    pub async fn register<H: ServiceHandler>(
        &self,
        cluster: &str,
        handler: H,
        limits: ServiceLimits,
    ) -> Result<Connection> {
        let pipe = self.pipe().await?;
        register_over::<R, H>(Transport::Pipe(pipe), cluster, handler, limits).await
    }
}

impl Connection {
    /// Sends `message` to every member of `cluster`. Returns once it is queued for the socket.
    pub async fn broadcast(&self, cluster: &str, message: impl Into<Bytes>) -> Result<()> {
        let message = message.into();
        self.inner
            .call(|st| st.machine.broadcast(cluster, &message))
            .await
    }

    /// Sends `request` to one member of `cluster` and waits for its reply, at most `timeout`
    /// (the node keeps that deadline and always answers).
    pub async fn request(
        &self,
        cluster: &str,
        request: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Bytes> {
        let request = request.into();
        let (tx, rx) = async_channel::bounded(1);
        let mut waiter = Some(tx);
        self.inner
            .call(|st| {
                let id = st.machine.request(cluster, &request, timeout)?;
                st.replies.extend(waiter.take().map(|tx| (id, tx)));
                Ok(())
            })
            .await?;
        rx.recv().await.unwrap_or(Err(Error::Closed))
    }

    /// Publishes `event` to every subscriber of `topic`.
    pub async fn publish(&self, topic: &str, event: impl Into<Bytes>) -> Result<()> {
        let event = event.into();
        self.inner
            .call(|st| st.machine.publish(topic, &event))
            .await
    }

    /// Subscribes to `topic`; `handler` gets its events within `limits`. Subscribing twice
    /// to one topic is refused.
    pub async fn subscribe<H: TopicHandler>(
        &self,
        topic: &str,
        handler: H,
        limits: Limits,
    ) -> Result<()> {
        let pool = Arc::new(Pool::new(limits));
        self.inner
            .call(|st| {
                st.machine.subscribe(topic)?;
                st.topics.insert(Name::from(topic), pool.clone());
                Ok(())
            })
            .await?;
        let handler = Arc::new(handler);
        pool.start(self.inner.spawner, move |e: Bytes| {
            let h = handler.clone();
            async move { h.handle_event(e).await }
        });
        Ok(())
    }

    /// Stops the subscription to `topic`.
    pub async fn unsubscribe(&self, topic: &str) -> Result<()> {
        let pool = self
            .inner
            .call(|st| {
                st.machine.unsubscribe(topic)?;
                Ok(st.topics.remove(topic.as_bytes()))
            })
            .await?;
        if let Some(pool) = pool {
            pool.close();
        }
        Ok(())
    }

    /// Opens a tunnel to one member of `cluster`, waiting at most `timeout` for it.
    pub async fn tunnel(&self, cluster: &str, timeout: Duration) -> Result<Tunnel> {
        let (tx, rx) = async_channel::bounded(1);
        let mut waiter = Some(tx);
        self.inner
            .call(|st| {
                let id = st.machine.tunnel(cluster, timeout)?;
                st.builds.extend(waiter.take().map(|tx| (id, tx)));
                Ok(())
            })
            .await?;
        rx.recv().await.unwrap_or(Err(Error::Closed))
    }

    /// Closes the connection gracefully and waits for the node to confirm.
    pub async fn close(&self) -> Result<()> {
        let ended = self.inner.ended_notify.listen();
        {
            let mut st = self.inner.lock();
            if st.machine.close().is_err() {
                // Already ended.
                return Ok(());
            }
            self.inner.drive(st);
        }
        let _ = self.inner.spawner.timeout(CLOSE_WAIT, ended).await;
        Ok(())
    }

    /// Why the connection ended, or `None` while it is open.
    pub fn ended(&self) -> Option<Error> {
        self.inner.lock().machine.ended().cloned().map(from_end)
    }

    /// Deliveries dropped by the service's limits so far: (broadcasts, requests).
    pub fn dropped_deliveries(&self) -> (u64, u64) {
        match &self.inner.service {
            Some(s) => (s.broadcasts.dropped(), s.requests.dropped()),
            None => (0, 0),
        }
    }
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Now, on the machine's clock.
    fn now(&self) -> Instant {
        Instant::from_nanos(u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// Runs `op`, a call of the application, on the state, waiting and calling again while
    /// the send buffer is full (backpressure from a slow socket); then drives the machine.
    /// The machine checks the arguments first, then that the connection is up, then the
    /// room: a bad call fails at once, a closed connection too, a good one waits.
    pub(crate) async fn call<T>(
        self: &Arc<Self>,
        mut op: impl FnMut(&mut State) -> std::result::Result<T, CallError>,
    ) -> Result<T> {
        let mut listener = None;
        loop {
            {
                let mut st = self.lock();
                match op(&mut st) {
                    Err(CallError::SendBufferFull) => {}
                    r => {
                        self.drive(st);
                        return r.map_err(from_call);
                    }
                }
            }
            // Listen, then try once more before sleeping: a listener is an allocation, and
            // there is room almost always.
            match listener.take() {
                Some(l) => l.await,
                None => listener = Some(self.space.listen()),
            }
        }
    }

    /// Feeds what the stream did to the machine, then drives it.
    fn handle(self: &Arc<Self>, input: Input) {
        let mut st = self.lock();
        let now = self.now();
        st.machine.handle(now, input);
        self.drive(st);
    }

    /// Drains the machine after a call: its transmit goes to the writer, its events to
    /// whoever waits for them. Run after every change to the machine, so that nothing it
    /// has to say waits for the next one.
    pub(crate) fn drive(self: &Arc<Self>, mut st: MutexGuard<'_, State>) {
        let mut after = Vec::new();
        let mut wake_writer = false;
        while let Some(out) = st.machine.poll_output() {
            match out {
                Output::Transmit(bytes) => {
                    debug_assert!(st.transmit.is_none(), "one transmit in flight");
                    st.transmit = Some(bytes);
                    wake_writer = true;
                }
                Output::Event(event) => self.deliver(&mut st, event, &mut after),
            }
        }
        drop(st);
        if wake_writer {
            self.writer_wake.notify(1);
        }
        for a in after {
            match a {
                After::Built(tx, tunnel) => {
                    // A builder that gave up drops the tunnel here, which closes it.
                    let _ = tx.try_send(Ok(tunnel));
                }
                After::Offered(tunnel) => match &self.service {
                    Some(s) => (s.on_tunnel)(tunnel),
                    None => drop(tunnel),
                },
                After::Ended(why, topics) => self.on_ended(why, topics),
            }
        }
    }

    /// Routes one event of the machine, with the state locked: what could lock it again
    /// (a tunnel handle, whose drop closes it) waits in `after`.
    fn deliver(self: &Arc<Self>, st: &mut State, event: ClientEvent, after: &mut Vec<After>) {
        match event {
            ClientEvent::Accepted => {}
            ClientEvent::Reply { request, outcome } => {
                if let Some(tx) = st.replies.remove(&request) {
                    let _ = tx.try_send(outcome.map_err(from_request));
                }
            }
            ClientEvent::Broadcast(message) => {
                if let Some(s) = &self.service {
                    let len = message.len();
                    s.broadcasts.submit(message, len);
                }
            }
            ClientEvent::Request {
                id,
                request,
                deadline,
            } => {
                if let Some(s) = &self.service {
                    let len = request.len();
                    s.requests.submit((id, request, deadline), len);
                }
            }
            ClientEvent::Publish { topic, event } => {
                if let Some(pool) = st.topics.get(&topic.as_bytes()[..]) {
                    let len = event.len();
                    pool.submit(event, len);
                }
            }
            ClientEvent::TunnelBuilt { tunnel, outcome } => {
                let Some(tx) = st.builds.remove(&tunnel) else {
                    // Nobody asked for it (cannot happen: the waiter is added with the
                    // build); an open tunnel nobody holds is closed.
                    st.machine.release_tunnel(tunnel);
                    return;
                };
                match outcome {
                    Ok(()) => after.push(After::Built(tx, self.tunnel_handle(st, tunnel))),
                    Err(e) => {
                        let _ = tx.try_send(Err(from_build(e)));
                    }
                }
            }
            ClientEvent::InboundTunnel { tunnel, .. } => {
                after.push(After::Offered(self.tunnel_handle(st, tunnel)));
            }
            ClientEvent::TunnelMessage { tunnel, message } => {
                if let Some(slot) = st.tunnels.get_mut(&tunnel) {
                    slot.inbox.push_back(message);
                    slot.notify.notify(usize::MAX);
                }
            }
            ClientEvent::TunnelAllowance { tunnel } => {
                if let Some(slot) = st.tunnels.get(&tunnel) {
                    slot.notify.notify(usize::MAX);
                }
            }
            ClientEvent::TunnelClosed { tunnel, reason } => {
                if let Some(slot) = st.tunnels.get_mut(&tunnel) {
                    slot.closed.get_or_insert(reason);
                    slot.notify.notify(usize::MAX);
                }
            }
            ClientEvent::Ended(end) => {
                // Every topic stops at once: the order does not matter.
                #[allow(clippy::disallowed_methods)]
                let topics = std::mem::take(&mut st.topics).into_values().collect();
                after.push(After::Ended(from_end(end), topics));
            }
        }
    }

    /// A handle on a tunnel the machine has just opened, and the slot it reads.
    fn tunnel_handle(self: &Arc<Self>, st: &mut State, id: TunnelId) -> Tunnel {
        let slot = TunnelSlot::default();
        let notify = slot.notify.clone();
        st.tunnels.insert(id, slot);
        Tunnel {
            id,
            notify,
            conn: self.clone(),
        }
    }

    /// The connection ended: handlers stop, and everyone waiting is told.
    fn on_ended(&self, why: Error, topics: Vec<Arc<Pool<Bytes>>>) {
        for pool in topics {
            pool.close();
        }
        if let Some(s) = &self.service {
            s.broadcasts.close();
            s.requests.close();
            if !matches!(why, Error::Closed) {
                (s.on_drop)(why);
            }
        }
        self.writer_wake.notify(1);
        self.space.notify(usize::MAX);
        self.ended_notify.notify(usize::MAX);
    }
}

/// How a connection reaches its node.
enum Transport<R: Runtime> {
    /// The relay port on loopback.
    Port(u16),
    /// An in-memory pipe to a node in this process.
    Pipe((R::PipeReader, R::PipeWriter)),
}

/// Opens a member's connection of `cluster` and starts its handler's pools.
async fn register_over<R: Runtime, H: ServiceHandler>(
    transport: Transport<R>,
    cluster: &str,
    handler: H,
    limits: ServiceLimits,
) -> Result<Connection> {
    if cluster.is_empty() {
        return Err(from_call(CallError::EmptyCluster));
    }
    let handler = Arc::new(handler);
    let broadcasts = Arc::new(Pool::new(limits.broadcast));
    let requests = Arc::new(Pool::new(limits.request));
    let spawner = Spawner::of::<R>();
    let h = handler.clone();
    let on_tunnel = Box::new(move |t: Tunnel| {
        let h = h.clone();
        spawner.spawn(async move { h.handle_tunnel(t).await });
    });
    let h = handler.clone();
    let on_drop = Box::new(move |e: Error| {
        let h = h.clone();
        spawner.spawn(async move { h.handle_drop(e).await });
    });
    let service = Service {
        broadcasts: broadcasts.clone(),
        requests: requests.clone(),
        on_tunnel,
        on_drop,
    };
    let conn = open::<R>(transport, cluster, Some(service)).await?;
    if let Err(e) = handler.init(&conn).await {
        let _ = conn.close().await;
        return Err(Error::Init(e));
    }
    let h = handler.clone();
    broadcasts.start(spawner, move |m: Bytes| {
        let h = h.clone();
        async move { h.handle_broadcast(m).await }
    });
    let (h, inner) = (handler, conn.inner.clone());
    requests.start(spawner, move |(id, request, deadline): Delivery| {
        let (h, inner) = (h.clone(), inner.clone());
        async move {
            // Its requester has already given up: do not run it.
            if inner.now() >= deadline {
                return;
            }
            let outcome = h.handle_request(request).await;
            let mut st = inner.lock();
            let outcome = match &outcome {
                Ok(reply) => Ok(&reply[..]),
                Err(fault) => Err(fault.as_str()),
            };
            // Refused only once the connection has ended: nobody to answer then.
            if st.machine.reply(id, outcome).is_ok() {
                inner.drive(st);
            }
        }
    });
    Ok(conn)
}

/// Connects (a port: 127.0.0.1 first, then [::1]), hand-shakes and starts the reader and
/// writer.
async fn open<R: Runtime>(
    transport: Transport<R>,
    cluster: &str,
    service: Option<Service>,
) -> Result<Connection> {
    match transport {
        Transport::Port(port) => {
            let (rd, wr) = match R::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await {
                Ok(s) => s,
                Err(e4) => R::connect(SocketAddr::from((Ipv6Addr::LOCALHOST, port)))
                    .await
                    .map_err(|_| Error::from(e4))?,
            };
            start(rd, wr, cluster, service, Spawner::of::<R>()).await
        }
        Transport::Pipe((rd, wr)) => start(rd, wr, cluster, service, Spawner::of::<R>()).await,
    }
}

/// Hand-shakes over a stream's halves and starts the reader and writer.
async fn start(
    mut rd: impl ReadBytes,
    mut wr: impl WriteBytes,
    cluster: &str,
    service: Option<Service>,
    spawner: Spawner,
) -> Result<Connection> {
    let epoch = std::time::Instant::now();
    let now = || Instant::from_nanos(u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX));
    let config = ClientConfig {
        limits: codec::Limits::default(),
        send_buffer: MAX_BUFFERED,
        tunnel_window: TUNNEL_WINDOW,
    };
    let mut machine = ClientMachine::new(cluster, config);
    // The machine alone until the node answers: nothing else can use it yet. What the node
    // sends right after its answer stays queued in the machine for the first drive.
    loop {
        match machine.poll_output() {
            Some(Output::Transmit(bytes)) => {
                wr.write_all(&bytes).await?;
                machine.handle(now(), Input::Flushed(bytes.len()));
            }
            Some(Output::Event(ClientEvent::Accepted)) => break,
            Some(Output::Event(ClientEvent::Ended(end))) => return Err(from_end(end)),
            Some(Output::Event(e)) => unreachable!("an event before the handshake's: {e:?}"),
            None => {
                let mut buf = machine.read_buffer();
                buf.reserve(4096);
                let input = match rd.read_buf(&mut buf).await? {
                    0 => Input::Eof,
                    _ => Input::Received(buf),
                };
                machine.handle(now(), input);
            }
        }
    }
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            machine,
            transmit: None,
            replies: BTreeMap::new(),
            builds: BTreeMap::new(),
            tunnels: BTreeMap::new(),
            topics: BTreeMap::new(),
        }),
        writer_wake: Event::new(),
        space: Event::new(),
        ended_notify: Event::new(),
        service,
        epoch,
        spawner,
    });
    inner.drive(inner.lock());
    spawner.spawn(writer(inner.clone(), wr));
    spawner.spawn(reader(inner.clone(), rd));
    Ok(Connection { inner })
}

/// Writes what the machine hands out, one transmit at a time, and reports each flushed.
async fn writer(inner: Arc<Inner>, mut wr: impl WriteBytes) {
    let mut listener = None;
    loop {
        let (transmit, ended) = {
            let mut st = inner.lock();
            (st.transmit.take(), st.machine.ended().is_some())
        };
        if let Some(bytes) = transmit {
            if let Err(e) = wr.write_all(&bytes).await {
                inner.handle(Input::Failed(format!("write failed: {e}")));
                return;
            }
            inner.handle(Input::Flushed(bytes.len()));
            inner.space.notify(usize::MAX);
            continue;
        }
        if ended {
            // Everything the machine had to send is written.
            let _ = wr.shutdown().await;
            return;
        }
        // Nothing to write: listen, then look once more before sleeping (a listener is an
        // allocation, so only an idle writer makes one).
        match listener.take() {
            Some(l) => l.await,
            None => listener = Some(inner.writer_wake.listen()),
        }
    }
}

/// Reads the node's bytes into the machine until the connection ends.
async fn reader(inner: Arc<Inner>, mut rd: impl ReadBytes) {
    loop {
        let mut buf = {
            let mut st = inner.lock();
            if st.machine.ended().is_some() {
                return;
            }
            st.machine.read_buffer()
        };
        buf.reserve(64 * 1024);
        let input = match rd.read_buf(&mut buf).await {
            Ok(0) => Input::Eof,
            Ok(_) => Input::Received(buf),
            Err(e) => Input::Failed(e.to_string()),
        };
        inner.handle(input);
    }
}
