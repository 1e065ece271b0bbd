//! A connection to the local node: the handshake, the writer that coalesces packets into
//! few writes, and the reader that routes each packet to whoever waits for it.

use super::handler::{ServiceHandler, TopicHandler};
use super::pool::{Limits, Pool};
use super::spawner::Spawner;
use super::tunnel::{TUNNEL_WINDOW, Tunnel, TunnelShared, encode_accept};
use super::{Error, Result};
use crate::driver::NodeHandle;
use crate::runtime::{ReadBytes, Runtime, WriteBytes};
use bytes::{Bytes, BytesMut};
use event_listener::Event;
use iris_proto::relay::client::{ClientSession, SessionEvent};
use iris_proto::relay::codec::{
    self, encode_broadcast, encode_publish_client, encode_request, encode_tun_allow,
};
use iris_proto::relay::{ClientPacket, NodePacket, ReplyOutcome};
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Bytes a connection buffers for its socket before send-type calls wait.
pub const MAX_BUFFERED: usize = 1 << 20;
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
type Delivery = (u64, Bytes, Instant);

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

/// State shared by the handles, the reader and the writer of one connection.
#[derive(Debug)]
pub(crate) struct Inner {
    out: Mutex<Out>,
    writer_wake: Event,
    space: Event,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, OneShot<Result<Bytes>>>>,
    builds: Mutex<HashMap<u64, OneShot<Option<u64>>>>,
    tunnels: Mutex<HashMap<u64, Arc<TunnelShared>>>,
    topics: Mutex<HashMap<String, Arc<Pool<Bytes>>>>,
    service: Option<Service>,
    /// We sent CLOSE: the node's CLOSE "" is the expected answer, not a drop.
    closing: AtomicBool,
    /// Why the connection ended, once it has.
    ended: Mutex<Option<Error>>,
    ended_notify: Event,
    limits: codec::Limits,
    /// Where the connection's tasks run.
    pub(crate) spawner: Spawner,
}

/// The sending end of a one-answer channel (a request's reply, a tunnel's confirmation).
type OneShot<T> = async_channel::Sender<T>;

#[derive(Debug, Default)]
struct Out {
    buf: BytesMut,
    closed: bool,
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
        open::<R>(Transport::Pipe(self.attach().await?), "", None).await
    }

    /// Registers a member of `cluster` with this node, as [`NodeHandle::connect`]
    /// connects ([`register`] over a relay port).
    pub async fn register<H: ServiceHandler>(
        &self,
        cluster: &str,
        handler: H,
        limits: ServiceLimits,
    ) -> Result<Connection> {
        let pipe = self.attach().await?;
        register_over::<R, H>(Transport::Pipe(pipe), cluster, handler, limits).await
    }
}

impl Connection {
    /// Sends `message` to every member of `cluster`. Returns once it is queued for the socket.
    pub async fn broadcast(&self, cluster: &str, message: impl Into<Bytes>) -> Result<()> {
        let message = message.into();
        check_name(cluster, "empty cluster name")?;
        check_payload(&message, "empty broadcast message")?;
        self.inner.wait_for_space().await?;
        self.inner
            .push(|out| encode_broadcast(out, cluster, &message))
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
        check_name(cluster, "empty cluster name")?;
        check_payload(&request, "empty request")?;
        let ms = timeout_ms(timeout)?;
        self.inner.wait_for_space().await?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = async_channel::bounded(1);
        lock(&self.inner.pending).insert(id, tx);
        if let Err(e) = self
            .inner
            .push(|out| encode_request(out, id, cluster, &request, ms))
        {
            lock(&self.inner.pending).remove(&id);
            return Err(e);
        }
        rx.recv().await.unwrap_or(Err(Error::Closed))
    }

    /// Publishes `event` to every subscriber of `topic`.
    pub async fn publish(&self, topic: &str, event: impl Into<Bytes>) -> Result<()> {
        let event = event.into();
        check_name(topic, "empty topic name")?;
        check_payload(&event, "empty event")?;
        self.inner.wait_for_space().await?;
        self.inner
            .push(|out| encode_publish_client(out, topic, &event))
    }

    /// Subscribes to `topic`; `handler` gets its events within `limits`. Subscribing twice
    /// to one topic is refused.
    pub async fn subscribe<H: TopicHandler>(
        &self,
        topic: &str,
        handler: H,
        limits: Limits,
    ) -> Result<()> {
        check_name(topic, "empty topic name")?;
        let pool = Arc::new(Pool::new(limits));
        {
            let mut topics = lock(&self.inner.topics);
            if topics.contains_key(topic) {
                return Err(Error::InvalidArgument("already subscribed to this topic"));
            }
            topics.insert(topic.to_string(), pool.clone());
        }
        let handler = Arc::new(handler);
        pool.start(self.inner.spawner, move |e: Bytes| {
            let h = handler.clone();
            async move { h.handle_event(e).await }
        });
        self.inner.wait_for_space().await?;
        self.inner.push(|out| codec::encode_subscribe(out, topic))
    }

    /// Stops the subscription to `topic`.
    pub async fn unsubscribe(&self, topic: &str) -> Result<()> {
        let Some(pool) = lock(&self.inner.topics).remove(topic) else {
            return Err(Error::InvalidArgument("not subscribed to this topic"));
        };
        pool.close();
        self.inner.wait_for_space().await?;
        self.inner.push(|out| codec::encode_unsubscribe(out, topic))
    }

    /// Opens a tunnel to one member of `cluster`, waiting at most `timeout` for it.
    pub async fn tunnel(&self, cluster: &str, timeout: Duration) -> Result<Tunnel> {
        check_name(cluster, "empty cluster name")?;
        let ms = timeout_ms(timeout)?;
        self.inner.wait_for_space().await?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(TunnelShared::new(id, 0));
        let (tx, rx) = async_channel::bounded(1);
        lock(&self.inner.tunnels).insert(id, shared.clone());
        lock(&self.inner.builds).insert(id, tx);
        let sent = self
            .inner
            .push(|out| codec::encode_tun_init(out, id, cluster, ms));
        if let Err(e) = sent {
            lock(&self.inner.tunnels).remove(&id);
            lock(&self.inner.builds).remove(&id);
            return Err(e);
        }
        match rx.recv().await {
            Ok(Some(_)) => {
                self.inner
                    .push(|out| encode_tun_allow(out, id, TUNNEL_WINDOW))?;
                Ok(Tunnel {
                    shared,
                    conn: self.inner.clone(),
                })
            }
            Ok(None) => {
                lock(&self.inner.tunnels).remove(&id);
                Err(Error::TimedOut)
            }
            Err(_) => Err(Error::Closed),
        }
    }

    /// Closes the connection gracefully and waits for the node to confirm.
    pub async fn close(&self) -> Result<()> {
        let ended = self.inner.ended_notify.listen();
        if lock(&self.inner.ended).is_some() {
            return Ok(());
        }
        self.inner.closing.store(true, Ordering::SeqCst);
        self.inner.push(codec::encode_close_request)?;
        let _ = self.inner.spawner.timeout(CLOSE_WAIT, ended).await;
        Ok(())
    }

    /// Why the connection ended, or `None` while it is open.
    pub fn ended(&self) -> Option<Error> {
        lock(&self.inner.ended).clone()
    }

    /// Deliveries dropped by the service's limits so far: (broadcasts, requests).
    pub fn dropped_deliveries(&self) -> (u64, u64) {
        match &self.inner.service {
            Some(s) => (s.broadcasts.dropped(), s.requests.dropped()),
            None => (0, 0),
        }
    }
}

fn check_name(name: &str, what: &'static str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidArgument(what));
    }
    Ok(())
}

fn check_payload(payload: &[u8], what: &'static str) -> Result<()> {
    if payload.is_empty() {
        return Err(Error::InvalidArgument(what));
    }
    Ok(())
}

fn timeout_ms(timeout: Duration) -> Result<u64> {
    let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Err(Error::InvalidArgument("timeout under 1 ms"));
    }
    Ok(ms)
}

impl Inner {
    /// Encodes a packet into the outgoing buffer and wakes the writer.
    pub(crate) fn push(&self, encode: impl FnOnce(&mut BytesMut)) -> Result<()> {
        {
            let mut out = lock(&self.out);
            if out.closed {
                return Err(Error::Closed);
            }
            encode(&mut out.buf);
        }
        self.writer_wake.notify(1);
        Ok(())
    }

    /// Waits until the outgoing buffer has room (backpressure from a slow socket).
    pub(crate) async fn wait_for_space(&self) -> Result<()> {
        // Checked before listening too: a listener is an allocation, and there is room
        // almost always.
        let room = || {
            let out = lock(&self.out);
            if out.closed {
                return Some(Err(Error::Closed));
            }
            (out.buf.len() < MAX_BUFFERED).then_some(Ok(()))
        };
        loop {
            if let Some(r) = room() {
                return r;
            }
            let notified = self.space.listen();
            if let Some(r) = room() {
                return r;
            }
            notified.await;
        }
    }

    /// Ends the connection: everyone waiting is told, handlers stop.
    fn end(&self, why: Error) {
        {
            let mut ended = lock(&self.ended);
            if ended.is_some() {
                return;
            }
            *ended = Some(why.clone());
        }
        lock(&self.out).closed = true;
        self.writer_wake.notify(1);
        self.space.notify(usize::MAX);
        // Everything is ended at once: the order does not matter.
        #[allow(clippy::disallowed_methods)]
        for (_, tx) in lock(&self.pending).drain() {
            let _ = tx.try_send(Err(Error::Closed));
        }
        lock(&self.builds).clear();
        #[allow(clippy::disallowed_methods)]
        for (_, t) in lock(&self.tunnels).drain() {
            t.on_close("connection closed".into());
        }
        #[allow(clippy::disallowed_methods)]
        for (_, pool) in lock(&self.topics).drain() {
            pool.close();
        }
        if let Some(s) = &self.service {
            s.broadcasts.close();
            s.requests.close();
            if !matches!(why, Error::Closed) {
                (s.on_drop)(why);
            }
        }
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
        return Err(Error::InvalidArgument("empty cluster name"));
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
            if Instant::now() >= deadline {
                return;
            }
            let outcome = h
                .handle_request(request)
                .await
                .map_err(|e| e.as_str().into());
            let _ = inner.push(|out| ClientPacket::Reply { id, outcome }.encode(out));
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
    let limits = codec::Limits::default();
    let mut session = ClientSession::new(limits);
    let mut init = BytesMut::new();
    ClientSession::encode_init(cluster, &mut init);
    wr.write_all(&init).await?;
    loop {
        match session.poll() {
            Ok(Some(SessionEvent::Accepted)) => break,
            Ok(Some(SessionEvent::Packet(_))) => unreachable!("packets come only after Accepted"),
            Ok(None) => {}
            Err(iris_proto::relay::client::SessionError::Denied(why)) => {
                return Err(Error::Denied(why));
            }
            Err(e) => return Err(Error::Protocol(e.to_string())),
        }
        let buf = session.read_buf();
        buf.reserve(4096);
        if rd.read_buf(buf).await? == 0 {
            return Err(Error::Dropped(
                "node closed the connection during the handshake".into(),
            ));
        }
    }
    let inner = Arc::new(Inner {
        out: Mutex::new(Out::default()),
        writer_wake: Event::new(),
        space: Event::new(),
        next_id: AtomicU64::new(0),
        pending: Mutex::new(HashMap::new()),
        builds: Mutex::new(HashMap::new()),
        tunnels: Mutex::new(HashMap::new()),
        topics: Mutex::new(HashMap::new()),
        service,
        closing: AtomicBool::new(false),
        ended: Mutex::new(None),
        ended_notify: Event::new(),
        limits,
        spawner,
    });
    spawner.spawn(writer(inner.clone(), wr));
    spawner.spawn(reader(inner.clone(), rd, session));
    Ok(Connection { inner })
}

async fn writer(inner: Arc<Inner>, mut wr: impl WriteBytes) {
    let mut notified = None;
    loop {
        let (data, closed) = {
            let mut out = lock(&inner.out);
            (out.buf.split().freeze(), out.closed)
        };
        if !data.is_empty() {
            if let Err(e) = wr.write_all(&data).await {
                inner.end(Error::Dropped(format!("write failed: {e}")));
                return;
            }
            inner.space.notify(usize::MAX);
            continue;
        }
        if closed {
            let _ = wr.shutdown().await;
            return;
        }
        // Nothing to write: listen, then look once more before sleeping (a listener is an
        // allocation, so only an idle writer makes one).
        match notified.take() {
            Some(listener) => listener.await,
            None => notified = Some(inner.writer_wake.listen()),
        }
    }
}

async fn reader(inner: Arc<Inner>, mut rd: impl ReadBytes, mut session: ClientSession) {
    let why = loop {
        match session.poll() {
            Ok(Some(SessionEvent::Packet(p))) => {
                if let Some(why) = dispatch(&inner, p) {
                    break why;
                }
                continue;
            }
            Ok(Some(SessionEvent::Accepted)) => continue,
            Ok(None) => {}
            Err(e) => break Error::Protocol(e.to_string()),
        }
        let buf = session.read_buf();
        buf.reserve(64 * 1024);
        match rd.read_buf(buf).await {
            Ok(0) => break Error::Dropped("the node closed the connection".into()),
            Ok(_) => {}
            Err(e) => break Error::Dropped(e.to_string()),
        }
    };
    inner.end(why);
}

/// Routes one packet from the node; `Some` ends the connection for that reason.
fn dispatch(inner: &Arc<Inner>, packet: NodePacket) -> Option<Error> {
    match packet {
        NodePacket::Reply { id, outcome } => {
            if let Some(tx) = lock(&inner.pending).remove(&id) {
                let _ = tx.try_send(match outcome {
                    ReplyOutcome::Success(reply) => Ok(reply),
                    ReplyOutcome::Fault(f) => Err(Error::Remote(f.to_string())),
                    ReplyOutcome::TimedOut => Err(Error::TimedOut),
                });
            }
        }
        NodePacket::Broadcast { message } => {
            if let Some(s) = &inner.service {
                let len = message.len();
                s.broadcasts.submit(message, len);
            }
        }
        NodePacket::Request {
            id,
            request,
            timeout_ms,
        } => {
            if let Some(s) = &inner.service {
                let deadline = Instant::now() + Duration::from_millis(timeout_ms);
                let len = request.len();
                s.requests.submit((id, request, deadline), len);
            }
        }
        NodePacket::Publish { topic, event } => {
            let pool = lock(&inner.topics).get(topic.as_str()).cloned();
            if let Some(pool) = pool {
                let len = event.len();
                pool.submit(event, len);
            }
        }
        NodePacket::TunInit {
            build_id,
            chunk_limit,
        } => {
            let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
            let limit = usize::try_from(chunk_limit).unwrap_or(usize::MAX).max(1);
            let shared = Arc::new(TunnelShared::new(id, limit));
            lock(&inner.tunnels).insert(id, shared.clone());
            let _ = inner.push(|out| encode_accept(out, build_id, id));
            let tunnel = Tunnel {
                shared,
                conn: inner.clone(),
            };
            match &inner.service {
                Some(s) => (s.on_tunnel)(tunnel),
                // Only members are offered tunnels; a plain client just lets it close.
                None => drop(tunnel),
            }
        }
        NodePacket::TunConfirm {
            tun_id,
            chunk_limit,
        } => {
            if let (Some(limit), Some(t)) = (chunk_limit, lock(&inner.tunnels).get(&tun_id)) {
                t.lock().chunk_limit = usize::try_from(limit).unwrap_or(usize::MAX).max(1);
            }
            let tx = lock(&inner.builds).remove(&tun_id);
            let delivered = tx.is_some_and(|tx| tx.try_send(chunk_limit).is_ok());
            if !delivered && chunk_limit.is_some() {
                // The builder gave up waiting: close what it will never use.
                lock(&inner.tunnels).remove(&tun_id);
                let _ = inner.push(|out| codec::encode_tun_close_request(out, tun_id));
            }
        }
        NodePacket::TunAllow { tun_id, space } => {
            if let Some(t) = lock(&inner.tunnels).get(&tun_id) {
                t.on_allow(space);
            }
        }
        NodePacket::TunTransfer {
            tun_id,
            size_or_cont,
            payload,
        } => {
            let t = lock(&inner.tunnels).get(&tun_id).cloned();
            if let Some(t) = t {
                let discarded = t.on_transfer(size_or_cont, &payload, &inner.limits);
                if discarded > 0 {
                    let _ = inner.push(|out| encode_tun_allow(out, tun_id, discarded as u64));
                }
            }
        }
        NodePacket::TunClose { tun_id, reason } => {
            if let Some(t) = lock(&inner.tunnels).remove(&tun_id) {
                t.on_close(reason.to_string());
            }
        }
        NodePacket::Close { reason } => {
            let graceful = reason.is_empty() && inner.closing.load(Ordering::SeqCst);
            return Some(if graceful {
                Error::Closed
            } else if reason.is_empty() {
                Error::Dropped("the node closed the connection".into())
            } else {
                Error::Dropped(reason.to_string())
            });
        }
        NodePacket::Init { .. } | NodePacket::Deny { .. } => {
            return Some(Error::Protocol(
                "handshake packet after the handshake".into(),
            ));
        }
    }
    None
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        // A tunnel nobody holds can never be read: close it so that neither side keeps
        // buffering for it.
        let open = self.shared.lock().closed.is_none();
        if open {
            lock(&self.conn.tunnels).remove(&self.shared.id);
            let id = self.shared.id;
            let _ = self
                .conn
                .push(|out| codec::encode_tun_close_request(out, id));
        }
    }
}
