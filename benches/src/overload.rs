//! Overload: publishers flood one node while one subscriber never reads and another reads
//! slowly, and a third party keeps doing request/reply. Measures what the third party sees
//! (against the same requests on the idle node, in the same run), what the slow subscriber
//! gets, what the node cut and why, and the process's peak memory under the budget.

use crate::raw::Raw;
use bytes::{Buf, BytesMut};
use iris_proto::Stats;
use iris_proto::relay::client::SessionEvent;
use iris_proto::relay::{ClientPacket, NodePacket};
use iris_tokio::Tokio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What one overload run measured.
pub(crate) struct Outcome {
    pub(crate) size: usize,
    pub(crate) seconds: f64,
    /// Events the publishers got the node to take.
    pub(crate) published: u64,
    /// Events the slow subscriber read.
    pub(crate) slow_got: u64,
    /// The slow subscriber's reading rate, bytes per second.
    pub(crate) slow_rate: u64,
    /// Third-party round trips on the idle node, then during the flood.
    pub(crate) idle: Vec<Duration>,
    pub(crate) flooded: Vec<Duration>,
    /// Requests that failed during the flood.
    pub(crate) failed: u64,
    /// The node's counters at the end.
    pub(crate) stats: Stats,
    /// Peak resident memory of this process (node and clients) during the run, KiB.
    pub(crate) peak_rss_kib: u64,
    pub(crate) max_memory: usize,
}

/// Runs the scenario for `seconds` with `size`-byte events on a fresh in-process node whose
/// memory budget is `max_memory`.
pub(crate) async fn run(size: usize, seconds: u64, max_memory: usize) -> Result<Outcome, BoxError> {
    let mut config = iris_proto::Config {
        max_memory,
        max_client_backlog: (max_memory / 4).min(256 << 20),
        ..iris_proto::Config::default()
    };
    config.client_backlog_high = (config.max_client_backlog / 2).min(8 << 20);
    let node = iris_tokio::driver::NodeHandle::spawn(iris_tokio::driver::NodeOptions {
        port: 0,
        config,
        ..Default::default()
    })?;
    let port = node.port();
    // The third party's requests on the idle node: the baseline of this run.
    let idle = crate::iris::request_latency::<Tokio>(port, port, 64, 2000).await?;
    reset_peak_rss();

    let mut stalled = Raw::connect(port, "").await?;
    stalled.subscribe("flood").await?;
    let mut slow = Raw::connect(port, "").await?;
    slow.subscribe("flood").await?;

    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::new(tokio::sync::Notify::new());
    let published = Arc::new(AtomicU64::new(0));
    let mut publishers = Vec::new();
    for _ in 0..2 {
        let (stop, stopped, published) = (stop.clone(), stopped.clone(), published.clone());
        let mut p = Raw::connect(port, "").await?;
        publishers.push(tokio::spawn(async move {
            let mut batch = BytesMut::new();
            let per_batch = ((64 << 10) / size).max(1);
            for _ in 0..per_batch {
                ClientPacket::Publish {
                    topic: "flood".into(),
                    event: vec![0x5a; size].into(),
                }
                .encode(&mut batch);
            }
            let batch = batch.freeze();
            while !stop.load(Ordering::Relaxed) {
                // A write the node throttles blocks here, for as long as it takes: that is
                // the back-pressure. Only the end of the run interrupts it.
                tokio::select! {
                    written = p.stream.write_all(&batch) => {
                        if written.is_err() {
                            return;
                        }
                        published.fetch_add(per_batch as u64, Ordering::Relaxed);
                    }
                    () = stopped.notified() => return,
                }
            }
        }));
    }

    // The slow subscriber reads at 1 MB/s.
    let slow_rate = 1_000_000u64;
    let slow_got = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, slow_got) = (stop.clone(), slow_got.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            let mut read = 0u64;
            let mut buf = BytesMut::with_capacity(16 << 10);
            while !stop.load(Ordering::Relaxed) {
                // Never ahead of the rate.
                let due = Duration::from_secs_f64(read as f64 / slow_rate as f64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
                buf.clear();
                let mut limited = (&mut slow.stream).take(16 << 10);
                match tokio::time::timeout(Duration::from_millis(200), limited.read_buf(&mut buf))
                    .await
                {
                    Ok(Ok(0)) | Ok(Err(_)) => return,
                    Ok(Ok(n)) => {
                        read += n as u64;
                        slow.session.read_buf().extend_from_slice(&buf);
                        while let Ok(Some(e)) = slow.session.poll() {
                            if let SessionEvent::Packet(NodePacket::Publish { .. }) = e {
                                slow_got.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Err(_) => {}
                }
                buf.advance(buf.len());
            }
        })
    };

    // The third party, throughout the flood.
    let member = iris_tokio::client::register(
        port,
        "overload-echo",
        Echo,
        iris_tokio::client::ServiceLimits::default(),
    )
    .await?;
    let asker = iris_tokio::client::connect(port).await?;
    let start = Instant::now();
    let mut flooded = Vec::new();
    let mut failed = 0;
    while start.elapsed() < Duration::from_secs(seconds) {
        let t = Instant::now();
        match asker
            .request("overload-echo", vec![0x5a; 64], Duration::from_secs(5))
            .await
        {
            Ok(_) => flooded.push(t.elapsed()),
            Err(_) => failed += 1,
        }
        // About 100 requests a second: a client doing its own work, not a benchmark of requests.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    stopped.notify_waiters();
    for p in publishers {
        let _ = p.await;
    }
    let _ = reader.await;
    let peak_rss_kib = peak_rss_kib();
    asker.close().await?;
    member.close().await?;
    drop(stalled);
    let stats = node.stop("benchmark finished")?;
    Ok(Outcome {
        size,
        seconds,
        published: published.load(Ordering::Relaxed),
        slow_got: slow_got.load(Ordering::Relaxed),
        slow_rate,
        idle,
        flooded,
        failed,
        stats,
        peak_rss_kib,
        max_memory,
    })
}

struct Echo;

impl iris_tokio::client::ServiceHandler for Echo {
    async fn handle_request(&self, request: bytes::Bytes) -> Result<bytes::Bytes, String> {
        Ok(request)
    }
}

/// Starts a new peak of resident memory (Linux: writing 5 to `clear_refs` resets VmHWM).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

impl Outcome {
    /// The rows for `benches/README.md`.
    pub(crate) fn rows(&self) -> Vec<String> {
        let pct = |v: &[Duration], p: f64| {
            let mut v = v.to_vec();
            v.sort();
            v.get(((v.len().max(1) - 1) as f64 * p) as usize)
                .map_or(0.0, |d| d.as_secs_f64() * 1e6)
        };
        let s = &self.stats;
        vec![
            format!(
                "| overload {} B, {:.0} s | third party p50 {:.0} µs (idle {:.0} µs, {:.2}x) | p99 {:.0} µs (idle {:.0} µs, {:.2}x) | {} requests, {} failed |",
                self.size,
                self.seconds,
                pct(&self.flooded, 0.5),
                pct(&self.idle, 0.5),
                pct(&self.flooded, 0.5) / pct(&self.idle, 0.5),
                pct(&self.flooded, 0.99),
                pct(&self.idle, 0.99),
                pct(&self.flooded, 0.99) / pct(&self.idle, 0.99),
                self.flooded.len(),
                self.failed
            ),
            format!(
                "| overload {} B, {:.0} s | published {:.0}/s, slow subscriber got {} ({:.2} MB/s of its {:.1} MB/s) | peak RSS {} MiB, node budget peak {} MiB of {} MiB | cut: {} lagging, {} over cap, {} for memory; producers held {} times; memory tight {} times |",
                self.size,
                self.seconds,
                self.published as f64 / self.seconds,
                self.slow_got,
                self.slow_got as f64 * self.size as f64 / self.seconds / 1e6,
                self.slow_rate as f64 / 1e6,
                self.peak_rss_kib / 1024,
                s.memory_peak >> 20,
                self.max_memory >> 20,
                s.cut_lagging,
                s.cut_backlog_cap,
                s.cut_memory,
                s.producers_held,
                s.memory_tight
            ),
        ]
    }
}
