//! The Rust client against the real `iris` binary on a free loopback port.

mod common;

use bytes::Bytes;
use common::IrisProcess;
use iris_tokio::client::{
    Connection, Error, Limits, ServiceHandler, ServiceLimits, TopicHandler, Tunnel,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};

const SECOND: Duration = Duration::from_secs(1);

/// Starts the binary on a blocking thread (it waits for the boot line).
async fn node() -> IrisProcess {
    tokio::task::spawn_blocking(|| IrisProcess::start(&[]))
        .await
        .expect("start iris")
}

/// A service that echoes requests, fails on "fail", reports broadcasts and tunnels.
#[derive(Clone)]
struct Echo {
    broadcasts: mpsc::UnboundedSender<Bytes>,
    tunnels: mpsc::UnboundedSender<Tunnel>,
    drops: mpsc::UnboundedSender<Error>,
}

impl ServiceHandler for Echo {
    async fn handle_broadcast(&self, message: Bytes) {
        let _ = self.broadcasts.send(message);
    }
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        if &request[..] == b"fail" {
            return Err("it failed".into());
        }
        Ok(request)
    }
    async fn handle_tunnel(&self, tunnel: Tunnel) {
        let _ = self.tunnels.send(tunnel);
    }
    async fn handle_drop(&self, reason: Error) {
        let _ = self.drops.send(reason);
    }
}

struct Channels {
    broadcasts: mpsc::UnboundedReceiver<Bytes>,
    tunnels: mpsc::UnboundedReceiver<Tunnel>,
    drops: mpsc::UnboundedReceiver<Error>,
}

fn echo() -> (Echo, Channels) {
    let (b, br) = mpsc::unbounded_channel();
    let (t, tr) = mpsc::unbounded_channel();
    let (d, dr) = mpsc::unbounded_channel();
    (
        Echo {
            broadcasts: b,
            tunnels: t,
            drops: d,
        },
        Channels {
            broadcasts: br,
            tunnels: tr,
            drops: dr,
        },
    )
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("took too long")
}

#[tokio::test]
async fn request_reply_fault_and_timeout() {
    let node = node().await;
    let (h, _ch) = echo();
    let svc = Connection::register(node.port, "echo", h, ServiceLimits::default())
        .await
        .unwrap();
    let c = Connection::connect(node.port).await.unwrap();
    let reply = c.request("echo", "hello", SECOND).await.unwrap();
    assert_eq!(&reply[..], b"hello");
    assert_eq!(
        c.request("echo", "fail", SECOND).await,
        Err(Error::Remote("it failed".into()))
    );
    assert_eq!(
        c.request("nobody", "x", Duration::from_millis(20)).await,
        Err(Error::TimedOut)
    );
    c.close().await.unwrap();
    svc.close().await.unwrap();
    assert_eq!(c.ended(), Some(Error::Closed));
}

#[tokio::test]
async fn arguments_are_checked_before_sending() {
    let node = node().await;
    let c = Connection::connect(node.port).await.unwrap();
    let bad = |r: Result<_, Error>| matches!(r, Err(Error::InvalidArgument(_)));
    assert!(bad(c.broadcast("", "x").await));
    assert!(bad(c.broadcast("c", Bytes::new()).await));
    assert!(bad(c
        .request("c", "x", Duration::from_micros(999))
        .await
        .map(|_| ())));
    assert!(bad(c.request("c", Bytes::new(), SECOND).await.map(|_| ())));
    assert!(bad(c.publish("", "x").await));
    assert!(bad(c.publish("t", Bytes::new()).await));
    assert!(bad(c.tunnel("", SECOND).await.map(|_| ())));
    assert!(bad(c.unsubscribe("never").await));
    // The connection is still fine.
    assert_eq!(c.ended(), None);
    c.close().await.unwrap();
}

#[tokio::test]
async fn broadcast_reaches_every_member_including_the_sender() {
    let node = node().await;
    let (h1, mut ch1) = echo();
    let (h2, mut ch2) = echo();
    let s1 = Connection::register(node.port, "group", h1, ServiceLimits::default())
        .await
        .unwrap();
    let _s2 = Connection::register(node.port, "group", h2, ServiceLimits::default())
        .await
        .unwrap();
    s1.broadcast("group", "all").await.unwrap();
    assert_eq!(&within(ch1.broadcasts.recv()).await.unwrap()[..], b"all");
    assert_eq!(&within(ch2.broadcasts.recv()).await.unwrap()[..], b"all");
}

struct Events(mpsc::UnboundedSender<Bytes>);

impl TopicHandler for Events {
    async fn handle_event(&self, event: Bytes) {
        let _ = self.0.send(event);
    }
}

#[tokio::test]
async fn publish_subscribe_and_local_double_subscribe_refusal() {
    let node = node().await;
    let c = Connection::connect(node.port).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    c.subscribe("news", Events(tx.clone()), Limits::default())
        .await
        .unwrap();
    assert!(matches!(
        c.subscribe("news", Events(tx), Limits::default()).await,
        Err(Error::InvalidArgument(_))
    ));
    c.publish("news", "first").await.unwrap();
    assert_eq!(&within(rx.recv()).await.unwrap()[..], b"first");
    c.unsubscribe("news").await.unwrap();
    c.publish("news", "second").await.unwrap();
    // A request round trip orders us after the publish: nothing more may have arrived.
    let _ = c.request("nobody", "x", Duration::from_millis(5)).await;
    assert!(rx.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_carries_16_mib_and_small_messages_in_order() {
    let node = node().await;
    let (h, mut ch) = echo();
    let _svc = Connection::register(node.port, "tun", h, ServiceLimits::default())
        .await
        .unwrap();
    let c = Connection::connect(node.port).await.unwrap();
    let t = c.tunnel("tun", SECOND).await.unwrap();
    let remote = within(ch.tunnels.recv()).await.unwrap();
    let big: Bytes = (0..16u32 << 20)
        .map(|i| (i % 253) as u8)
        .collect::<Vec<_>>()
        .into();
    let sender = {
        let big = big.clone();
        tokio::spawn(async move {
            t.send(big, Duration::from_secs(30)).await.unwrap();
            for i in 0..100u32 {
                t.send(i.to_be_bytes().to_vec(), SECOND).await.unwrap();
            }
            t
        })
    };
    let got = remote.recv(Duration::from_secs(30)).await.unwrap();
    assert!(got == big, "16 MiB message corrupted");
    for i in 0..100u32 {
        assert_eq!(&remote.recv(SECOND).await.unwrap()[..], &i.to_be_bytes());
    }
    let t = sender.await.unwrap();
    // Closing is acknowledged, and the other end's receive returns "closed".
    t.close().await.unwrap();
    assert_eq!(remote.recv(SECOND).await, Err(Error::Closed));
    assert_eq!(t.send("x", SECOND).await, Err(Error::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_64_mib_send_leaves_the_tunnel_usable() {
    let node = node().await;
    let (h, mut ch) = echo();
    let _svc = Connection::register(node.port, "tun64", h, ServiceLimits::default())
        .await
        .unwrap();
    let c = Connection::connect(node.port).await.unwrap();
    let t = c.tunnel("tun64", SECOND).await.unwrap();
    let remote = within(ch.tunnels.recv()).await.unwrap();
    let huge = Bytes::from(vec![7u8; 64 << 20]);
    assert_eq!(
        t.send(huge, Duration::from_millis(10)).await,
        Err(Error::TimedOut)
    );
    // Small messages flow again; the partial message is discarded by the receiver.
    for i in 0..10u8 {
        t.send(vec![i; 10], SECOND).await.unwrap();
    }
    for i in 0..10u8 {
        assert_eq!(
            &remote.recv(Duration::from_secs(10)).await.unwrap()[..],
            &[i; 10]
        );
    }
}

#[tokio::test]
async fn tunnel_to_an_empty_cluster_times_out() {
    let node = node().await;
    let c = Connection::connect(node.port).await.unwrap();
    assert!(matches!(
        c.tunnel("nobody", SECOND).await,
        Err(Error::TimedOut)
    ));
}

/// A service whose init fails, or waits for a gate; it records whether init had returned
/// when each broadcast was handled.
struct Slow {
    started: mpsc::UnboundedSender<()>,
    gate: Arc<Semaphore>,
    fail: bool,
    init_done: Arc<std::sync::atomic::AtomicBool>,
    seen: mpsc::UnboundedSender<(Bytes, bool)>,
}

impl ServiceHandler for Slow {
    async fn init(&self, _conn: &Connection) -> Result<(), String> {
        if self.fail {
            return Err("no config".into());
        }
        let _ = self.started.send(());
        let _ = self.gate.acquire().await;
        self.init_done.store(true, Ordering::SeqCst);
        Ok(())
    }
    async fn handle_broadcast(&self, message: Bytes) {
        let _ = self
            .seen
            .send((message, self.init_done.load(Ordering::SeqCst)));
    }
    async fn handle_request(&self, r: Bytes) -> Result<Bytes, String> {
        Ok(r)
    }
}

#[tokio::test]
async fn failed_init_fails_registration_and_early_deliveries_wait_for_init() {
    let node = node().await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let make = |fail, gate: &Arc<Semaphore>| Slow {
        started: started_tx.clone(),
        gate: gate.clone(),
        fail,
        init_done: Arc::default(),
        seen: seen_tx.clone(),
    };
    let gate = Arc::new(Semaphore::new(0));
    assert_eq!(
        Connection::register(
            node.port,
            "svc",
            make(true, &gate),
            ServiceLimits::default()
        )
        .await
        .err(),
        Some(Error::Init("no config".into()))
    );
    let port = node.port;
    let slow = make(false, &gate);
    let registering = tokio::spawn(async move {
        Connection::register(port, "svc", slow, ServiceLimits::default()).await
    });
    // init runs after the handshake, so the node already counts the member.
    within(started.recv()).await.unwrap();
    let (probe, mut probe_ch) = echo();
    let _probe = Connection::register(port, "svc", probe, ServiceLimits::default())
        .await
        .unwrap();
    let c = Connection::connect(port).await.unwrap();
    c.broadcast("svc", "early").await.unwrap();
    // The probe member has it, so the node has written it to the slow member too.
    assert_eq!(
        &within(probe_ch.broadcasts.recv()).await.unwrap()[..],
        b"early"
    );
    assert!(seen.try_recv().is_err(), "handled before init returned");
    gate.add_permits(1);
    let _svc = within(registering).await.unwrap().unwrap();
    let (message, after_init) = within(seen.recv()).await.unwrap();
    assert_eq!(&message[..], b"early");
    assert!(after_init, "a delivery ran before init returned");
}

/// A broadcast handler that says when it starts, then blocks until released.
struct Blocked {
    started: mpsc::UnboundedSender<()>,
    gate: Arc<Semaphore>,
    handled: Arc<AtomicUsize>,
}

impl ServiceHandler for Blocked {
    async fn handle_broadcast(&self, _m: Bytes) {
        let _ = self.started.send(());
        let _ = self.gate.acquire().await.map(|p| p.forget());
        self.handled.fetch_add(1, Ordering::SeqCst);
    }
    async fn handle_request(&self, r: Bytes) -> Result<Bytes, String> {
        Ok(r)
    }
}

#[tokio::test]
async fn memory_limit_drops_broadcasts_beyond_the_cap() {
    let node = node().await;
    let gate = Arc::new(Semaphore::new(0));
    let handled = Arc::new(AtomicUsize::new(0));
    let limits = ServiceLimits {
        broadcast: Limits {
            concurrency: 1,
            memory: 3000,
        },
        request: Limits::default(),
    };
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let h = Blocked {
        started: started_tx,
        gate: gate.clone(),
        handled: handled.clone(),
    };
    let svc = Connection::register(node.port, "capped", h, limits)
        .await
        .unwrap();
    let c = Connection::connect(node.port).await.unwrap();
    // One runs (blocked); then three fit in 3000 bytes and the other six are dropped.
    c.broadcast("capped", vec![0u8; 1000]).await.unwrap();
    within(started.recv()).await.unwrap();
    for _ in 0..9 {
        c.broadcast("capped", vec![0u8; 1000]).await.unwrap();
    }
    // On c's socket the request follows the broadcasts, and the node delivers them to svc
    // in that order: once it is answered, svc has seen every broadcast.
    c.request("capped", "sync", SECOND).await.unwrap();
    assert_eq!(svc.dropped_deliveries().0, 6);
    gate.add_permits(100);
    within(async {
        while handled.load(Ordering::SeqCst) < 4 {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn node_shutdown_reaches_the_drop_handler_with_its_reason() {
    let node = node().await;
    let (h, mut ch) = echo();
    let svc = Connection::register(node.port, "d", h, ServiceLimits::default())
        .await
        .unwrap();
    let mut node = node;
    let (_, status) = tokio::task::spawn_blocking(move || node.terminate())
        .await
        .unwrap();
    assert!(status.success());
    let why = within(ch.drops.recv()).await.unwrap();
    assert_eq!(why, Error::Dropped("node shutting down (SIGTERM)".into()));
    assert_eq!(svc.broadcast("d", "x").await, Err(Error::Closed));
}
