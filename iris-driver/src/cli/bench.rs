//! `iris bench`: publish, broadcast, request and tunnel throughput and latency against a
//! running node, as `nats bench` measures a NATS server.
//!
//! The tool is both ends: it subscribes, registers a member and opens tunnels to it on the
//! node it is pointed at, so what it measures is that node's relay path (and the client
//! library), not a network. Every message carries the moment it was sent (nanoseconds since
//! the run began, in this one process), so one-way latency is measured where it arrives;
//! requests measure their round trip.

use super::status::bytes;
use super::tools::{Target, connect, refused, run_tool};
use crate::client::{
    self, Connection, Limits, ServiceHandler, ServiceLimits, TopicHandler, Tunnel,
};
use crate::runtime::Runtime;
use bytes::{Bytes, BytesMut};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What `iris bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Op {
    /// Events published to a topic this tool subscribes to.
    Pub,
    /// Broadcasts to a cluster this tool is the member of.
    Bcast,
    /// Requests to that member, answered at once (round trips).
    Req,
    /// Messages through a tunnel to that member.
    Tunnel,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Pub => "publish",
            Op::Bcast => "broadcast",
            Op::Req => "request",
            Op::Tunnel => "tunnel",
        }
    }
}

/// `iris bench`.
#[derive(Debug, clap::Args)]
pub(super) struct Bench {
    /// Messages (requests) per operation.
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    count: u64,
    /// Bytes per message, at least 16.
    #[arg(long, default_value_t = 128, value_name = "BYTES",
          value_parser = clap::value_parser!(u32).range(16..=(16 << 20)))]
    size: u32,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
    /// The operations to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_values = ["pub", "bcast", "req", "tunnel"])]
    ops: Vec<Op>,
    /// Print the results as JSON, for scripts (no table, no progress bar).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

/// What one operation measured.
#[derive(Debug, Clone)]
struct Outcome {
    op: Op,
    /// Messages sent.
    sent: u64,
    /// Messages that arrived (replies, for requests).
    arrived: u64,
    /// From the first send to the last arrival.
    elapsed: Duration,
    /// Latencies, in nanoseconds, sorted.
    latencies: Vec<u64>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.arrived as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The latency below which `p` percent of the messages arrived, in microseconds.
    fn percentile(&self, p: f64) -> f64 {
        match self.latencies.len() {
            0 => f64::NAN,
            n => {
                let rank = ((p / 100.0) * n as f64).ceil() as usize;
                self.latencies[rank.clamp(1, n) - 1] as f64 / 1e3
            }
        }
    }
}

/// Where arrivals are counted, shared by the handlers that see them.
#[derive(Default)]
struct Arrivals {
    state: Mutex<(Vec<u64>, Option<Instant>)>,
    /// Signalled when the expected count is reached.
    done: event_listener::Event,
    expected: std::sync::atomic::AtomicU64,
    /// A warm-up probe arrived (the subscription or membership is live).
    probed: std::sync::atomic::AtomicBool,
}

/// The marker of a warm-up probe in place of a send time.
const PROBE: u64 = u64::MAX;

impl Arrivals {
    fn arrive(&self, origin: Instant, message: &[u8]) {
        use std::sync::atomic::Ordering::SeqCst;
        let Some(stamp) = message
            .get(..8)
            .map(|s| u64::from_be_bytes(s.try_into().unwrap()))
        else {
            return;
        };
        if stamp == PROBE {
            self.probed.store(true, SeqCst);
            return;
        }
        let now = Instant::now();
        let sent = origin + Duration::from_nanos(stamp);
        let mut st = self.state.lock().unwrap();
        st.0.push(now.saturating_duration_since(sent).as_nanos() as u64);
        st.1 = Some(now);
        if st.0.len() as u64 >= self.expected.load(SeqCst) {
            self.done.notify(usize::MAX);
        }
    }

    fn reset(&self, expected: u64) {
        use std::sync::atomic::Ordering::SeqCst;
        *self.state.lock().unwrap() = (Vec::new(), None);
        self.expected.store(expected, SeqCst);
    }

    fn count(&self) -> u64 {
        self.state.lock().unwrap().0.len() as u64
    }

    fn take(&self) -> (Vec<u64>, Option<Instant>) {
        std::mem::take(&mut *self.state.lock().unwrap())
    }
}

/// The bench's subscriber and member: it counts what arrives, echoes requests and drains
/// tunnels.
struct Sink<R> {
    origin: Instant,
    arrivals: Arc<Arrivals>,
    runtime: std::marker::PhantomData<fn() -> R>,
}

impl<R: Runtime> TopicHandler for Sink<R> {
    async fn handle_event(&self, event: Bytes) {
        self.arrivals.arrive(self.origin, &event);
    }
}

impl<R: Runtime> ServiceHandler for Sink<R> {
    async fn handle_broadcast(&self, message: Bytes) {
        self.arrivals.arrive(self.origin, &message);
    }

    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        Ok(request)
    }

    async fn handle_tunnel(&self, tunnel: Tunnel) {
        while let Ok(m) = tunnel.recv(IDLE).await {
            self.arrivals.arrive(self.origin, &m);
        }
    }
}

/// Longest wait for the next arrival before the rest counts as lost.
const IDLE: Duration = Duration::from_secs(10);

/// A message of `size` bytes stamped with the time since `origin`.
fn stamped(origin: Instant, size: usize) -> Bytes {
    let mut m = BytesMut::zeroed(size);
    let at = origin.elapsed().as_nanos() as u64;
    m[..8].copy_from_slice(&at.to_be_bytes());
    m.freeze()
}

fn probe() -> Bytes {
    Bytes::copy_from_slice(&PROBE.to_be_bytes())
}

fn progress(json: bool, op: Op, count: u64) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(count);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>9} [{bar:40}] {pos}/{len} {per_sec} {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(op.name());
    bar
}

/// Sends warm-up probes with `send` until one arrives: the subscription or the membership
/// is live at the node.
async fn warm_up<R: Runtime, F, Fut>(arrivals: &Arrivals, send: F) -> Result<(), String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), client::Error>>,
{
    use std::sync::atomic::Ordering::SeqCst;
    arrivals.probed.store(false, SeqCst);
    for _ in 0..500 {
        send().await.map_err(|e| format!("warm-up: {e}"))?;
        crate::runtime::sleep::<R>(Duration::from_millis(20)).await;
        if arrivals.probed.load(SeqCst) {
            return Ok(());
        }
    }
    Err("the node delivered none of the bench's warm-up messages in 10 s".into())
}

/// Waits until everything arrived, or nothing more for [`IDLE`].
async fn settle<R: Runtime>(arrivals: &Arrivals, bar: &ProgressBar, sent: u64) {
    loop {
        let before = arrivals.count();
        bar.set_position(before);
        if before >= sent {
            return;
        }
        let listen = arrivals.done.listen();
        if arrivals.count() >= sent {
            return;
        }
        let woke = crate::runtime::timeout::<R, _>(IDLE, listen).await;
        if woke.is_none() && arrivals.count() == before {
            return;
        }
    }
}

/// Measures publish or broadcast: `send` one stamped message after another.
async fn multicast<R: Runtime, F, Fut>(
    op: Op,
    b: &Bench,
    origin: Instant,
    arrivals: &Arrivals,
    send: F,
) -> Result<Outcome, String>
where
    F: Fn(Bytes) -> Fut,
    Fut: std::future::Future<Output = Result<(), client::Error>>,
{
    warm_up::<R, _, _>(arrivals, || send(probe())).await?;
    arrivals.reset(b.count);
    let bar = progress(b.json, op, b.count);
    let start = Instant::now();
    for i in 0..b.count {
        send(stamped(origin, b.size as usize))
            .await
            .map_err(|e| format!("{}: {e}", op.name()))?;
        if i % 256 == 0 {
            bar.set_position(arrivals.count());
        }
    }
    settle::<R>(arrivals, &bar, b.count).await;
    bar.finish_and_clear();
    Ok(outcome(op, b.count, start, arrivals))
}

fn outcome(op: Op, sent: u64, start: Instant, arrivals: &Arrivals) -> Outcome {
    let (mut latencies, last) = arrivals.take();
    latencies.sort_unstable();
    Outcome {
        op,
        sent,
        arrived: latencies.len() as u64,
        elapsed: last.unwrap_or(start).saturating_duration_since(start),
        latencies,
    }
}

/// Measures requests: `concurrency` callers, each one request after another.
async fn requests<R: Runtime>(
    b: &Bench,
    conn: &Connection,
    cluster: &str,
) -> Result<Outcome, String> {
    let bar = progress(b.json, Op::Req, b.count);
    let workers = u64::from(b.concurrency).min(b.count.max(1));
    let (tx, rx) = async_channel::unbounded::<Result<Vec<u64>, String>>();
    let start = Instant::now();
    for w in 0..workers {
        let n = b.count / workers + u64::from(w < b.count % workers);
        let (conn, cluster, tx, bar) = (conn.clone(), cluster.to_string(), tx.clone(), bar.clone());
        let size = b.size as usize;
        R::spawn(async move {
            let mut lat = Vec::with_capacity(n as usize);
            let mut result = Ok(());
            for _ in 0..n {
                let asked = Instant::now();
                let request = Bytes::from(vec![0u8; size]);
                match conn.request(&cluster, request, IDLE).await {
                    Ok(_) => lat.push(asked.elapsed().as_nanos() as u64),
                    Err(e) => {
                        result = Err(format!("request: {e}"));
                        break;
                    }
                }
                bar.inc(1);
            }
            let _ = tx.send(result.map(|()| lat)).await;
        });
    }
    drop(tx);
    let mut latencies = Vec::with_capacity(b.count as usize);
    let mut failure = None;
    while let Ok(got) = rx.recv().await {
        match got {
            Ok(l) => latencies.extend(l),
            Err(e) => failure = Some(e),
        }
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    if let Some(e) = failure.filter(|_| latencies.is_empty()) {
        return Err(e);
    }
    latencies.sort_unstable();
    Ok(Outcome {
        op: Op::Req,
        sent: b.count,
        arrived: latencies.len() as u64,
        elapsed,
        latencies,
    })
}

/// Measures a tunnel: one stream of stamped messages to the member.
async fn tunnel<R: Runtime>(
    b: &Bench,
    origin: Instant,
    conn: &Connection,
    cluster: &str,
    arrivals: &Arrivals,
) -> Result<Outcome, String> {
    let t = conn
        .tunnel(cluster, IDLE)
        .await
        .map_err(|e| format!("tunnel to {cluster:?}: {e}"))?;
    arrivals.reset(b.count);
    let bar = progress(b.json, Op::Tunnel, b.count);
    let start = Instant::now();
    for i in 0..b.count {
        t.send(stamped(origin, b.size as usize), IDLE)
            .await
            .map_err(|e| format!("tunnel: {e}"))?;
        if i % 256 == 0 {
            bar.set_position(arrivals.count());
        }
    }
    settle::<R>(arrivals, &bar, b.count).await;
    bar.finish_and_clear();
    let _ = t.close().await;
    Ok(outcome(Op::Tunnel, b.count, start, arrivals))
}

/// A latency for the table.
fn ms(us: f64) -> String {
    if us.is_nan() {
        "-".into()
    } else {
        format!("{:.3} ms", us / 1e3)
    }
}

fn table(b: &Bench, results: &[Outcome]) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:<11}{:>9}{:>10}{:>12}{:>14}{:>11}{:>11}{:>11}{:>11}{:>7}\n",
        "operation", "messages", "size", "msgs/s", "bytes/s", "p50", "p90", "p99", "max", "lost"
    );
    for r in results {
        let _ = writeln!(
            out,
            "{:<11}{:>9}{:>10}{:>12.0}{:>14}{:>11}{:>11}{:>11}{:>11}{:>7}",
            r.op.name(),
            r.sent,
            bytes(f64::from(b.size)),
            r.rate(),
            format!("{}/s", bytes(r.rate() * f64::from(b.size))),
            ms(r.percentile(50.0)),
            ms(r.percentile(90.0)),
            ms(r.percentile(99.0)),
            ms(r.percentile(100.0)),
            r.sent.saturating_sub(r.arrived),
        );
    }
    out.push_str(
        "(latency: one way for publish, broadcast and tunnel, the round trip for requests; \
         requests ",
    );
    let _ = writeln!(out, "{} at a time)", b.concurrency);
    out
}

fn as_json(b: &Bench, results: &[Outcome]) -> String {
    let finite = |v: f64| if v.is_finite() { json!(v) } else { json!(null) };
    let ops: Vec<_> = results
        .iter()
        .map(|r| {
            json!({
                "op": r.op.name(),
                "messages": r.sent,
                "arrived": r.arrived,
                "lost": r.sent.saturating_sub(r.arrived),
                "seconds": r.elapsed.as_secs_f64(),
                "msgs_per_sec": finite(r.rate()),
                "bytes_per_sec": finite(r.rate() * f64::from(b.size)),
                "latency_us": {
                    "p50": finite(r.percentile(50.0)),
                    "p90": finite(r.percentile(90.0)),
                    "p99": finite(r.percentile(99.0)),
                    "max": finite(r.percentile(100.0)),
                },
            })
        })
        .collect();
    json!({
        "port": b.target.port,
        "size": b.size,
        "count": b.count,
        "concurrency": b.concurrency,
        "results": ops,
    })
    .to_string()
}

/// `iris bench`.
pub(super) fn run<R: Runtime>(b: Bench) -> ExitCode {
    run_tool::<R>(async move {
        let origin = Instant::now();
        let arrivals = Arc::new(Arrivals::default());
        let sink = || Sink::<R> {
            origin,
            arrivals: arrivals.clone(),
            runtime: std::marker::PhantomData,
        };
        // Names of this run only: several benches against one node do not mix.
        let name = format!(
            "iris-bench-{}-{}",
            std::process::id(),
            origin.elapsed().as_nanos()
        );
        let port = b.target.port;
        let sender = connect::<R>(port).await?;
        // One at a time and with room: a measurement must not drop what it counts.
        let roomy = Limits {
            concurrency: 1,
            memory: 1 << 30,
        };
        let member = client::register::<R, _>(
            port,
            &name,
            sink(),
            ServiceLimits {
                broadcast: roomy,
                request: Limits {
                    concurrency: (b.concurrency as usize).max(4),
                    memory: 1 << 30,
                },
            },
        )
        .await
        .map_err(|e| refused(port, e))?;
        let mut results = Vec::new();
        for &op in &b.ops {
            let r = match op {
                Op::Pub => {
                    let sub = connect::<R>(port).await?;
                    sub.subscribe(&name, sink(), roomy)
                        .await
                        .map_err(|e| format!("subscribe: {e}"))?;
                    let r = multicast::<R, _, _>(op, &b, origin, &arrivals, |m| {
                        sender.publish(&name, m)
                    })
                    .await;
                    let _ = sub.close().await;
                    r?
                }
                Op::Bcast => {
                    multicast::<R, _, _>(op, &b, origin, &arrivals, |m| sender.broadcast(&name, m))
                        .await?
                }
                Op::Req => requests::<R>(&b, &sender, &name).await?,
                Op::Tunnel => tunnel::<R>(&b, origin, &sender, &name, &arrivals).await?,
            };
            results.push(r);
        }
        let _ = sender.close().await;
        let _ = member.close().await;
        if b.json {
            println!("{}", as_json(&b, &results));
        } else {
            print!("{}", table(&b, &results));
        }
        match results.iter().find(|r| r.arrived < r.sent) {
            Some(r) => Err(format!(
                "{} lost {} of {} messages",
                r.op.name(),
                r.sent.saturating_sub(r.arrived),
                r.sent
            )),
            None => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_ranks_of_the_sorted_latencies() {
        let r = Outcome {
            op: Op::Req,
            sent: 100,
            arrived: 100,
            elapsed: Duration::from_secs(2),
            latencies: (1..=100).map(|us| us * 1000).collect(),
        };
        assert_eq!(r.percentile(50.0), 50.0);
        assert_eq!(r.percentile(99.0), 99.0);
        assert_eq!(r.percentile(100.0), 100.0);
        assert_eq!(r.rate(), 50.0);
        let empty = Outcome {
            latencies: vec![],
            arrived: 0,
            ..r
        };
        assert!(empty.percentile(50.0).is_nan());
    }
}
