//! The Rust client, one suite run three times per runtime: against the node binary over
//! its relay port (`process::`), against a node embedded in the test's process on a thread
//! of its own over an in-memory pipe (`embedded::`), and against a node on the case's own
//! thread (`in_thread::`, the node run inside the runtime's `block_on` beside the case).
//! `cargo test -p iris-tokio --test suite client::embedded::` runs one.

use super::common;

use crate::rt::client::{
    Connection, Dial, Error, Limits, ServiceHandler, ServiceLimits, TopicHandler, Tunnel,
};
use crate::rt::driver::{NodeHandle, NodeOptions, run};
use crate::rt::{Rt, block_on, unblock};
use async_channel::{Receiver, Sender, unbounded};
use bytes::Bytes;
use common::IrisProcess;
use iris_driver::runtime::{Runtime, timeout};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(1);

/// The node of a case.
struct Target {
    dial: Dial,
    process: Option<IrisProcess>,
    /// An in-thread node's stop (its reason), and its end (whether it ended well).
    stop: Option<(Sender<String>, Receiver<bool>)>,
}

impl Target {
    /// The `iris` binary in dev mode, started on a blocking thread (it waits for the boot
    /// line).
    async fn process() -> Target {
        let process = unblock(|| IrisProcess::start(&[])).await;
        Target {
            dial: Dial::Port(process.port),
            process: Some(process),
            stop: None,
        }
    }

    /// A dev-mode node on a thread of this process.
    async fn embedded() -> Target {
        // Port 0: its relay port too is free, whatever else runs.
        let opts = NodeOptions {
            port: 0,
            ..NodeOptions::default()
        };
        let node = unblock(|| NodeHandle::spawn(opts))
            .await
            .expect("start the node");
        Target {
            dial: Dial::Embedded(Arc::new(node)),
            process: None,
            stop: None,
        }
    }

    /// Runs `case` against a dev-mode node on this thread: the node and the case inside
    /// one `block_on` of the runtime, the clients attached to the node there. The node
    /// stops when the case shuts it down or ends.
    fn in_thread<F: std::future::Future<Output = ()>>(case: impl FnOnce(Target) -> F) {
        Rt::block_on(async move {
            let (ready_tx, ready_rx) = async_channel::bounded(1);
            let (stop_tx, stop_rx) = async_channel::bounded::<String>(1);
            let (done_tx, done_rx) = async_channel::bounded(1);
            let opts = NodeOptions {
                port: 0,
                ..NodeOptions::default()
            };
            let node = async move {
                let stop = async move { stop_rx.recv().await.unwrap_or("the case ended".into()) };
                let stats = run(opts, Some(ready_tx), stop).await;
                let _ = done_tx.try_send(stats.is_ok());
            };
            let case = async move {
                let ready = ready_rx.recv().await.expect("the node serves");
                // The whole target goes to the case (its stop included): a case that used
                // only its dial would otherwise stop the node at once.
                case(Target {
                    dial: Dial::Attached(ready.attach),
                    process: None,
                    stop: Some((stop_tx, done_rx)),
                })
                .await
            };
            futures_lite::future::zip(node, case).await;
        })
        .expect("the runtime")
    }

    /// Shuts the node down as its operator would (SIGTERM, or the embedding application's
    /// stop); returns the reason its clients are told.
    async fn shut_down(self) -> String {
        match (self.process, self.dial) {
            (Some(mut process), _) => {
                let (_, status) = unblock(move || process.terminate()).await;
                assert!(status.success());
                "node shutting down (SIGTERM)".into()
            }
            (None, Dial::Embedded(node)) => {
                let node = Arc::try_unwrap(node).unwrap_or_else(|_| panic!("dialers left"));
                let reason = "node shutting down (the application stops)";
                unblock(move || node.stop(reason)).await.unwrap();
                reason.into()
            }
            (None, Dial::Attached(_)) => {
                let (stop, done) = self.stop.expect("an in-thread node's stop");
                let reason = "node shutting down (the application stops)";
                stop.send(reason.into()).await.unwrap();
                assert!(done.recv().await.unwrap(), "the node ended well");
                reason.into()
            }
            (None, Dial::Port(_)) => unreachable!("a port is a process's"),
        }
    }
}

/// Each case once per target, as `process::case`, `embedded::case` and `in_thread::case`.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod process {
            $(
                #[test]
                fn $case() {
                    super::block_on(async { super::$case(super::Target::process().await).await })
                }
            )*
        }
        mod embedded {
            $(
                #[test]
                fn $case() {
                    super::block_on(async { super::$case(super::Target::embedded().await).await })
                }
            )*
        }
        mod in_thread {
            $(
                #[test]
                fn $case() {
                    super::Target::in_thread(super::$case)
                }
            )*
        }
    };
}

suite!(
    request_reply_fault_and_timeout,
    arguments_are_checked_before_sending,
    broadcast_reaches_every_member_including_the_sender,
    publish_subscribe_and_local_double_subscribe_refusal,
    tunnel_carries_16_mib_and_small_messages_in_order,
    a_timed_out_64_mib_send_leaves_the_tunnel_usable,
    tunnel_to_an_empty_cluster_times_out,
    failed_init_fails_registration_and_early_deliveries_wait_for_init,
    memory_limit_drops_broadcasts_beyond_the_cap,
    node_shutdown_reaches_the_drop_handler_with_its_reason,
);

/// A service that echoes requests, fails on "fail", reports broadcasts and tunnels.
#[derive(Clone)]
struct Echo {
    broadcasts: Sender<Bytes>,
    tunnels: Sender<Tunnel>,
    drops: Sender<Error>,
}

impl ServiceHandler for Echo {
    async fn handle_broadcast(&self, message: Bytes) {
        let _ = self.broadcasts.try_send(message);
    }
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        if &request[..] == b"fail" {
            return Err("it failed".into());
        }
        Ok(request)
    }
    async fn handle_tunnel(&self, tunnel: Tunnel) {
        let _ = self.tunnels.try_send(tunnel);
    }
    async fn handle_drop(&self, reason: Error) {
        let _ = self.drops.try_send(reason);
    }
}

struct Channels {
    broadcasts: Receiver<Bytes>,
    tunnels: Receiver<Tunnel>,
    drops: Receiver<Error>,
}

fn echo() -> (Echo, Channels) {
    let (b, br) = unbounded();
    let (t, tr) = unbounded();
    let (d, dr) = unbounded();
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
    timeout::<Rt, _>(Duration::from_secs(10), f)
        .await
        .expect("took too long")
}

async fn request_reply_fault_and_timeout(node: Target) {
    let (h, _ch) = echo();
    let svc = node
        .dial
        .register("echo", h, ServiceLimits::default())
        .await
        .unwrap();
    let c = node.dial.connect().await.unwrap();
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

async fn arguments_are_checked_before_sending(node: Target) {
    let c = node.dial.connect().await.unwrap();
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

async fn broadcast_reaches_every_member_including_the_sender(node: Target) {
    let (h1, ch1) = echo();
    let (h2, ch2) = echo();
    let s1 = node
        .dial
        .register("group", h1, ServiceLimits::default())
        .await
        .unwrap();
    let _s2 = node
        .dial
        .register("group", h2, ServiceLimits::default())
        .await
        .unwrap();
    s1.broadcast("group", "all").await.unwrap();
    assert_eq!(&within(ch1.broadcasts.recv()).await.unwrap()[..], b"all");
    assert_eq!(&within(ch2.broadcasts.recv()).await.unwrap()[..], b"all");
}

struct Events(Sender<Bytes>);

impl TopicHandler for Events {
    async fn handle_event(&self, event: Bytes) {
        let _ = self.0.try_send(event);
    }
}

async fn publish_subscribe_and_local_double_subscribe_refusal(node: Target) {
    let c = node.dial.connect().await.unwrap();
    let (tx, rx) = unbounded();
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

async fn tunnel_carries_16_mib_and_small_messages_in_order(node: Target) {
    let (h, ch) = echo();
    let _svc = node
        .dial
        .register("tun", h, ServiceLimits::default())
        .await
        .unwrap();
    let c = node.dial.connect().await.unwrap();
    let t = c.tunnel("tun", SECOND).await.unwrap();
    let remote = within(ch.tunnels.recv()).await.unwrap();
    let big: Bytes = (0..16u32 << 20)
        .map(|i| (i % 253) as u8)
        .collect::<Vec<_>>()
        .into();
    let sender = {
        let big = big.clone();
        spawn(async move {
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
    let t = sender.await;
    // Closing is acknowledged, and the other end's receive returns "closed".
    t.close().await.unwrap();
    assert_eq!(remote.recv(SECOND).await, Err(Error::Closed));
    assert_eq!(t.send("x", SECOND).await, Err(Error::Closed));
}

async fn a_timed_out_64_mib_send_leaves_the_tunnel_usable(node: Target) {
    let (h, ch) = echo();
    let _svc = node
        .dial
        .register("tun64", h, ServiceLimits::default())
        .await
        .unwrap();
    let c = node.dial.connect().await.unwrap();
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

async fn tunnel_to_an_empty_cluster_times_out(node: Target) {
    let c = node.dial.connect().await.unwrap();
    assert!(matches!(
        c.tunnel("nobody", SECOND).await,
        Err(Error::TimedOut)
    ));
}

/// A service whose init fails, or waits for a gate; it records whether init had returned
/// when each broadcast was handled.
struct Slow {
    started: Sender<()>,
    gate: Receiver<()>,
    fail: bool,
    init_done: Arc<std::sync::atomic::AtomicBool>,
    seen: Sender<(Bytes, bool)>,
}

impl ServiceHandler for Slow {
    async fn init(&self, _conn: &Connection) -> Result<(), String> {
        if self.fail {
            return Err("no config".into());
        }
        let _ = self.started.try_send(());
        let _ = self.gate.recv().await;
        self.init_done.store(true, Ordering::SeqCst);
        Ok(())
    }
    async fn handle_broadcast(&self, message: Bytes) {
        let _ = self
            .seen
            .try_send((message, self.init_done.load(Ordering::SeqCst)));
    }
    async fn handle_request(&self, r: Bytes) -> Result<Bytes, String> {
        Ok(r)
    }
}

async fn failed_init_fails_registration_and_early_deliveries_wait_for_init(node: Target) {
    let (started_tx, started) = unbounded();
    let (seen_tx, seen) = unbounded();
    let make = |fail, gate: &Receiver<()>| Slow {
        started: started_tx.clone(),
        gate: gate.clone(),
        fail,
        init_done: Arc::default(),
        seen: seen_tx.clone(),
    };
    let (open, gate) = unbounded();
    assert_eq!(
        node.dial
            .register("svc", make(true, &gate), ServiceLimits::default())
            .await
            .err(),
        Some(Error::Init("no config".into()))
    );
    let dial = node.dial.clone();
    let slow = make(false, &gate);
    let registering =
        spawn(async move { dial.register("svc", slow, ServiceLimits::default()).await });
    // init runs after the handshake, so the node already counts the member.
    within(started.recv()).await.unwrap();
    let (probe, probe_ch) = echo();
    let _probe = node
        .dial
        .register("svc", probe, ServiceLimits::default())
        .await
        .unwrap();
    let c = node.dial.connect().await.unwrap();
    c.broadcast("svc", "early").await.unwrap();
    // The probe member has it, so the node has written it to the slow member too.
    assert_eq!(
        &within(probe_ch.broadcasts.recv()).await.unwrap()[..],
        b"early"
    );
    assert!(seen.try_recv().is_err(), "handled before init returned");
    open.try_send(()).unwrap();
    let _svc = within(registering).await.unwrap();
    let (message, after_init) = within(seen.recv()).await.unwrap();
    assert_eq!(&message[..], b"early");
    assert!(after_init, "a delivery ran before init returned");
}

/// A broadcast handler that says when it starts, then blocks until released.
struct Blocked {
    started: Sender<()>,
    gate: Receiver<()>,
    handled: Arc<AtomicUsize>,
}

impl ServiceHandler for Blocked {
    async fn handle_broadcast(&self, _m: Bytes) {
        let _ = self.started.try_send(());
        let _ = self.gate.recv().await;
        self.handled.fetch_add(1, Ordering::SeqCst);
    }
    async fn handle_request(&self, r: Bytes) -> Result<Bytes, String> {
        Ok(r)
    }
}

async fn memory_limit_drops_broadcasts_beyond_the_cap(node: Target) {
    let (open, gate) = unbounded();
    let handled = Arc::new(AtomicUsize::new(0));
    let limits = ServiceLimits {
        broadcast: Limits {
            concurrency: 1,
            memory: 3000,
        },
        request: Limits::default(),
    };
    let (started_tx, started) = unbounded();
    let h = Blocked {
        started: started_tx,
        gate: gate.clone(),
        handled: handled.clone(),
    };
    let svc = node.dial.register("capped", h, limits).await.unwrap();
    let c = node.dial.connect().await.unwrap();
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
    for _ in 0..100 {
        open.try_send(()).unwrap();
    }
    within(async {
        while handled.load(Ordering::SeqCst) < 4 {
            futures_lite::future::yield_now().await;
        }
    })
    .await;
}

async fn node_shutdown_reaches_the_drop_handler_with_its_reason(node: Target) {
    let (h, ch) = echo();
    let svc = node
        .dial
        .register("d", h, ServiceLimits::default())
        .await
        .unwrap();
    let reason = node.shut_down().await;
    let why = within(ch.drops.recv()).await.unwrap();
    assert_eq!(why, Error::Dropped(reason));
    assert_eq!(svc.broadcast("d", "x").await, Err(Error::Closed));
}

/// An embedded node serves in-process clients and relay clients over its port alike, and
/// they reach each other.
#[test]
fn embedded_and_socket_clients_of_one_node_reach_each_other() {
    block_on(embedded_and_socket_clients())
}

async fn embedded_and_socket_clients() {
    let node = Target::embedded().await;
    let Dial::Embedded(handle) = &node.dial else {
        unreachable!()
    };
    let (h, ch) = echo();
    let inside = node
        .dial
        .register("svc", h, ServiceLimits::default())
        .await
        .unwrap();
    let outside = crate::rt::client::connect(handle.port()).await.unwrap();
    assert_eq!(
        &outside.request("svc", "over tcp", SECOND).await.unwrap()[..],
        b"over tcp"
    );
    outside.broadcast("svc", "to the inside").await.unwrap();
    assert_eq!(
        &within(ch.broadcasts.recv()).await.unwrap()[..],
        b"to the inside"
    );
    let (h, _ch) = echo();
    let _tcp_member =
        crate::rt::client::register(handle.port(), "tcp", h, ServiceLimits::default())
            .await
            .unwrap();
    assert_eq!(
        &inside.request("tcp", "from inside", SECOND).await.unwrap()[..],
        b"from inside"
    );
}

/// An embedded node can go without a relay port and still serve its own process.
#[test]
fn an_embedded_node_without_a_relay_port_serves_its_process() {
    block_on(embedded_without_relay_port())
}

async fn embedded_without_relay_port() {
    let opts = NodeOptions {
        relay: false,
        ..NodeOptions::default()
    };
    let node = unblock(|| NodeHandle::spawn(opts)).await.unwrap();
    assert_eq!(node.port(), 0, "no relay port");
    let (h, _ch) = echo();
    let _svc = node
        .register("svc", h, ServiceLimits::default())
        .await
        .unwrap();
    let c = node.connect().await.unwrap();
    assert_eq!(&c.request("svc", "hi", SECOND).await.unwrap()[..], b"hi");
    c.close().await.unwrap();
    unblock(move || node.stop("done")).await.unwrap();
}

/// A node run beside the application on its thread (`run_with`) keeps the application's
/// clients, their handlers and itself on that one thread: nothing crosses threads on the
/// way of a request and its reply (what makes this path fast). The node stops once the
/// application is done.
#[test]
fn an_in_thread_nodes_clients_and_handlers_stay_on_its_thread() {
    let opts = NodeOptions {
        relay: false,
        ..NodeOptions::default()
    };
    let app = |node: crate::rt::driver::Attach| async move {
        let here = std::thread::current().id();
        let (seen_tx, seen) = unbounded();
        let svc = node
            .register("where", Where(seen_tx), ServiceLimits::default())
            .await
            .unwrap();
        let c = node.connect().await.unwrap();
        for _ in 0..20 {
            let reply = c.request("where", "?", SECOND).await.unwrap();
            assert_eq!(&reply[..], b"?");
            assert_eq!(std::thread::current().id(), here, "the requester moved");
        }
        let threads: Vec<_> = std::iter::from_fn(|| seen.try_recv().ok()).collect();
        assert_eq!(threads.len(), 20, "one handler run per request");
        assert!(
            threads.iter().all(|t| *t == here),
            "a handler ran elsewhere"
        );
        c.close().await.unwrap();
        svc.close().await.unwrap();
        node.port()
    };
    let (port, stats) = Rt::block_on(crate::rt::driver::run_with(opts, app))
        .expect("the runtime")
        .expect("the node");
    assert_eq!(port, 0, "no relay port was asked for");
    assert_eq!(stats.requests, 20, "the node counted the requests");
    assert_eq!(stats.requests_timed_out, 0);
}

/// A service that reports the thread each request is handled on.
struct Where(Sender<std::thread::ThreadId>);

impl ServiceHandler for Where {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        let _ = self.0.try_send(std::thread::current().id());
        Ok(request)
    }
}

/// Runs `fut` as a task of the runtime under test; its output once it ends.
fn spawn<T: Send + 'static>(
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> impl std::future::Future<Output = T> {
    let (tx, rx) = async_channel::bounded(1);
    Rt::spawn(async move {
        let _ = tx.try_send(fut.await);
    });
    async move { rx.recv().await.expect("the task panicked") }
}
