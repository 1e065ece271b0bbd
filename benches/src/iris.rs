//! Scenarios through one Iris node with the Rust client.

use crate::report::Rate;
use bytes::Bytes;
pub(crate) use iris_driver::client::Dial;
use iris_driver::runtime::Runtime;
use iris_tokio::client::{Connection, Limits, ServiceHandler, ServiceLimits, TopicHandler};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Handler limits that never drop in a benchmark: a drop would show as missing deliveries.
pub(crate) fn roomy() -> Limits {
    Limits {
        concurrency: 1,
        memory: 1 << 30,
    }
}

/// Counts deliveries and says when `target` is reached.
struct Counter {
    seen: AtomicU64,
    target: u64,
    done: Notify,
}

impl Counter {
    fn new(target: usize) -> Arc<Counter> {
        Arc::new(Counter {
            seen: AtomicU64::new(0),
            target: target as u64,
            done: Notify::new(),
        })
    }

    fn hit(&self) {
        if self.seen.fetch_add(1, Ordering::Relaxed) + 1 == self.target {
            self.done.notify_one();
        }
    }

    /// Waits for the target, or gives up after a while and reports what arrived.
    async fn wait(&self, start: Instant, dropped: impl Fn() -> u64) -> Rate {
        let _ = tokio::time::timeout(Duration::from_secs(120), self.done.notified()).await;
        Rate {
            delivered: self.seen.load(Ordering::Relaxed),
            dropped: dropped(),
            elapsed: start.elapsed(),
        }
    }
}

struct CountingService(Arc<Counter>);

impl ServiceHandler for CountingService {
    async fn handle_broadcast(&self, _message: Bytes) {
        self.0.hit();
    }
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        Ok(request)
    }
}

struct CountingTopic(Arc<Counter>);

impl TopicHandler for CountingTopic {
    async fn handle_event(&self, _event: Bytes) {
        self.0.hit();
    }
}

/// Waits until requests from `client` reach a member of `cluster` on every one of its
/// trees (a member on another node is reachable only once its trees have formed).
pub(crate) async fn settle(client: &Connection, cluster: &str) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut in_a_row = 0;
    while in_a_row < 10 {
        if Instant::now() > deadline {
            return Err(format!("cluster {cluster} never became reachable").into());
        }
        match client
            .request(
                cluster,
                Bytes::from_static(b"settle"),
                Duration::from_millis(500),
            )
            .await
        {
            Ok(_) => in_a_row += 1,
            Err(_) => in_a_row = 0,
        }
    }
    Ok(())
}

/// `n` broadcasts from a client of the node at `from` to a member on the node at `port`.
pub(crate) async fn broadcast<R: Runtime>(
    port: impl Into<Dial<R>>,
    from: impl Into<Dial<R>>,
    size: usize,
    n: usize,
) -> Result<Rate, BoxError> {
    let port: Dial<R> = port.into();
    let from: Dial<R> = from.into();
    let counter = Counter::new(n);
    let limits = ServiceLimits {
        broadcast: roomy(),
        request: roomy(),
    };
    // Named for where the member is too: broadcasts of a run still on their way to another
    // node (to a tree root there) would otherwise reach the next run's member and count.
    let cluster = format!("bench-bcast-{size}-{port}");
    let member = port
        .register(&cluster, CountingService(counter.clone()), limits)
        .await?;
    let sender = from.connect().await?;
    settle(&sender, &cluster).await?;
    let payload = Bytes::from(vec![0x5a; size]);
    let start = Instant::now();
    for _ in 0..n {
        sender.broadcast(&cluster, payload.clone()).await?;
    }
    let rate = counter.wait(start, || member.dropped_deliveries().0).await;
    sender.close().await?;
    member.close().await?;
    Ok(rate)
}

pub(crate) async fn publish<R: Runtime>(
    port: impl Into<Dial<R>>,
    size: usize,
    n: usize,
) -> Result<Rate, BoxError> {
    let port: Dial<R> = port.into();
    let counter = Counter::new(n);
    let topic = format!("bench-topic-{size}");
    let subscriber = port.connect().await?;
    subscriber
        .subscribe(&topic, CountingTopic(counter.clone()), roomy())
        .await?;
    let publisher = port.connect().await?;
    // The subscription is in place once a round trip on its own connection completes.
    let _ = subscriber
        .request("nobody", "sync", Duration::from_millis(1))
        .await;
    let payload = Bytes::from(vec![0x5a; size]);
    let start = Instant::now();
    for _ in 0..n {
        publisher.publish(&topic, payload.clone()).await?;
    }
    let rate = counter.wait(start, || 0).await;
    publisher.close().await?;
    subscriber.close().await?;
    Ok(rate)
}

pub(crate) struct Echo;

impl ServiceHandler for Echo {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        Ok(request)
    }
}

/// A tunnel-accepting service that hands tunnels to the benchmark.
struct Accept(tokio::sync::mpsc::UnboundedSender<iris_tokio::client::Tunnel>);

impl ServiceHandler for Accept {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        Ok(request)
    }
    async fn handle_tunnel(&self, tunnel: iris_tokio::client::Tunnel) {
        let _ = self.0.send(tunnel);
    }
}

/// `n` chunks through a tunnel from a client of the node at `from` to a member on the node
/// at `port`.
pub(crate) async fn tunnel<R: Runtime>(
    port: impl Into<Dial<R>>,
    from: impl Into<Dial<R>>,
    size: usize,
    n: usize,
) -> Result<Rate, BoxError> {
    let port: Dial<R> = port.into();
    let from: Dial<R> = from.into();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cluster = format!("bench-tunnel-{size}");
    let member = port
        .register(&cluster, Accept(tx), ServiceLimits::default())
        .await?;
    let client = from.connect().await?;
    settle(&client, &cluster).await?;
    let t = client.tunnel(&cluster, Duration::from_secs(5)).await?;
    let remote = rx.recv().await.ok_or("no inbound tunnel")?;
    let receiver = tokio::spawn(async move {
        let mut got = 0u64;
        while got < n as u64 {
            if remote.recv(Duration::from_secs(30)).await.is_err() {
                break;
            }
            got += 1;
        }
        got
    });
    let payload = Bytes::from(vec![0x5a; size]);
    let start = Instant::now();
    for _ in 0..n {
        t.send(payload.clone(), Duration::from_secs(30)).await?;
    }
    let delivered = receiver.await?;
    let elapsed = start.elapsed();
    t.close().await?;
    client.close().await?;
    member.close().await?;
    Ok(Rate {
        delivered,
        dropped: n as u64 - delivered,
        elapsed,
    })
}

/// Round trips, one at a time, from a client of the node at `from` to a member on the node
/// at `port`.
pub(crate) async fn request_latency<R: Runtime>(
    port: impl Into<Dial<R>>,
    from: impl Into<Dial<R>>,
    size: usize,
    rounds: usize,
) -> Result<Vec<Duration>, BoxError> {
    let port: Dial<R> = port.into();
    let from: Dial<R> = from.into();
    let cluster = format!("bench-echo-{size}");
    let member = port
        .register(&cluster, Echo, ServiceLimits::default())
        .await?;
    let client = from.connect().await?;
    settle(&client, &cluster).await?;
    let payload = Bytes::from(vec![0x5a; size]);
    // Warm up connections and allocators before measuring.
    for _ in 0..rounds / 10 {
        client
            .request(&cluster, payload.clone(), Duration::from_secs(5))
            .await?;
    }
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        client
            .request(&cluster, payload.clone(), Duration::from_secs(5))
            .await?;
        samples.push(t.elapsed());
    }
    client.close().await?;
    member.close().await?;
    Ok(samples)
}

pub(crate) async fn request_rate<R: Runtime>(
    port: impl Into<Dial<R>>,
    size: usize,
    total: usize,
    in_flight: usize,
) -> Result<Rate, BoxError> {
    let port: Dial<R> = port.into();
    let cluster = format!("bench-echo-rate-{size}");
    let member = port
        .register(&cluster, Echo, ServiceLimits::default())
        .await?;
    let client = port.connect().await?;
    let payload = Bytes::from(vec![0x5a; size]);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (client, cluster, payload) = (client.clone(), cluster.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            let mut ok = 0u64;
            for _ in 0..total / in_flight {
                if client
                    .request(&cluster, payload.clone(), Duration::from_secs(5))
                    .await
                    .is_ok()
                {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut delivered = 0;
    for t in tasks {
        delivered += t.await?;
    }
    let elapsed = start.elapsed();
    client.close().await?;
    member.close().await?;
    Ok(Rate {
        delivered,
        dropped: (total / in_flight * in_flight) as u64 - delivered,
        elapsed,
    })
}
