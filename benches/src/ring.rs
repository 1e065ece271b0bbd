//! The seed's benchmark on real processes: the whispers ring. Four `iris` processes of one
//! network on loopback, a gopher on each (a raw relay connection registered under its own
//! cluster); gopher #0 broadcasts to gopher #1, each gopher passes what it hears on to the
//! next, and a message counts once it has looped the whole ring back to gopher #0.
//!
//! Closed loop: at most `window` messages in flight. Open loop: gopher #0 writes as fast as
//! its node takes the bytes (TCP back-pressure only); every message sent must come back.
//! Forwarders read a message only when they have written the previous ones, so a slow hop
//! pushes back on the one before it through the sockets.

use crate::raw::{Raw, room};
use bytes::BytesMut;
use iris_proto::relay::ClientPacket;
use iris_proto::relay::NodePacket;
use iris_proto::relay::client::SessionEvent;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One `iris` process of the ring's network.
pub(crate) struct NodeProcess {
    child: Child,
    pub(crate) port: u16,
    /// Where it serves its Prometheus metrics.
    pub(crate) metrics: u16,
    /// Where it takes links from other nodes.
    pub(crate) peer: Option<std::net::SocketAddr>,
    /// The network's name.
    pub(crate) network: String,
}

impl NodeProcess {
    /// The node's counters of lost messages and cut clients that are not zero, as
    /// `name{labels} value` lines of its metrics.
    pub(crate) fn losses(&self) -> Vec<String> {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.metrics)) else {
            return vec!["metrics unreachable".into()];
        };
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text.lines()
            .filter(|l| {
                (l.starts_with("iris_dropped_total") || l.starts_with("iris_slow_consumers_cut"))
                    && !l.ends_with(" 0")
            })
            .map(str::to_string)
            .collect()
    }

    /// The node's metrics, as Prometheus text (empty if unreachable).
    pub(crate) fn metrics_text(&self) -> String {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.metrics)) else {
            return String::new();
        };
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text
    }

    /// The value of an unlabelled metric (`iris_trees`, ...), 0 if unreadable.
    pub(crate) fn metric(&self, name: &str) -> u64 {
        self.metrics_text()
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    }

    /// Peak and current resident memory of the process, KiB.
    pub(crate) fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    /// CPU time the process has used so far (user and system).
    pub(crate) fn cpu_time(&self) -> Duration {
        cpu_time_of(&self.child.id().to_string())
    }
}

/// CPU time (user and system) of process `pid` (`self` for this one), from `/proc`.
pub(crate) fn cpu_time_of(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces, inside parentheses):
    // utime and stime are the 14th and 15th fields of the line, in clock ticks.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    // Clock ticks are 100 a second on Linux for every architecture this runs on.
    Duration::from_millis(ticks * 10)
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `n` nodes of a fresh network (the `iris` binary at `iris`, host discovery on
/// ports of their own) and returns once each serves and has converged with all the others.
pub(crate) fn boot(iris: &Path, n: usize, key: &Path) -> Result<Vec<NodeProcess>, BoxError> {
    boot_with(iris, n, key, &[])
}

/// [`boot`], each node with the flags `extra` besides.
pub(crate) fn boot_with(
    iris: &Path,
    n: usize,
    key: &Path,
    extra: &[&str],
) -> Result<Vec<NodeProcess>, BoxError> {
    let name = format!("whispers bench {}", std::process::id());
    let ports = "23601,23602,23603,23604,23605,23606,23607,23608";
    let mut nodes = Vec::new();
    let mut logs = Vec::new();
    for i in 0..n {
        let metrics = 23611 + i as u16;
        let mut child = Command::new(iris)
            .args(["--net", &name, "--rsa"])
            .arg(key)
            .args(["--port", "0", "--discovery-ports", ports, "--log", "info"])
            .args(extra)
            .arg("--metrics")
            .arg(format!("127.0.0.1:{metrics}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", iris.display()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().ok_or("no stdout")?;
        std::thread::spawn(move || {
            // Read to the end even once nobody listens: a node must never block (or fail)
            // on a full log pipe. Once booted, its warnings and errors are shown.
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Err(e) = tx.send(line)
                    && (e.0.contains("WARN") || e.0.contains("ERROR"))
                {
                    eprintln!("node {i}: {}", e.0);
                }
            }
        });
        nodes.push(NodeProcess {
            child,
            port: 0,
            metrics,
            peer: None,
            network: name.clone(),
        });
        logs.push(rx);
    }
    let all = format!("converged with {} remote connections", n - 1);
    for (node, log) in nodes.iter_mut().zip(&logs) {
        let (mut port, mut converged) = (None, false);
        while port.is_none() || !converged {
            let line = log
                .recv_timeout(Duration::from_secs(60))
                .map_err(|_| "a node did not boot within 60 s")?;
            if let Some(rest) = line.split("listening on port ").nth(1) {
                port = Some(rest.trim_end_matches('.').parse()?);
            }
            if let Some(rest) = line.split("peer listener on ").nth(1) {
                node.peer = rest.split(',').next().and_then(|a| a.trim().parse().ok());
            }
            converged |= line.contains(&all);
        }
        node.port = port.unwrap_or_default();
    }
    Ok(nodes)
}

/// How gopher #0 sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// At most this many messages in flight.
    Closed(u64),
    /// As fast as its node takes them.
    Open,
}

/// What one run of the ring measured.
#[derive(Debug, Clone)]
pub(crate) struct RingRun {
    pub(crate) size: usize,
    pub(crate) mode: Mode,
    /// Messages gopher #0 sent, and those that came back around the ring.
    pub(crate) sent: u64,
    pub(crate) looped: u64,
    /// From the first send to the last message back.
    pub(crate) elapsed: Duration,
    /// Nothing came back for 10 s while messages were in flight, or a connection failed.
    pub(crate) broken: Option<String>,
    /// The largest peak resident memory of a node process so far, MiB.
    pub(crate) peak_rss_mib: u64,
}

impl RingRun {
    /// Looped messages per second.
    pub(crate) fn rate(&self) -> f64 {
        self.looped as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The fraction of sent messages that did not come back.
    pub(crate) fn loss(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            (self.sent - self.looped.min(self.sent)) as f64 / self.sent as f64
        }
    }
}

fn gopher(run: u64, i: usize) -> String {
    format!("ring {run} gopher {i}")
}

/// A forwarder: every broadcast it hears goes on to `next`, written before more is read.
async fn forward(mut raw: Raw, next: String, stop: Arc<AtomicBool>) -> Result<(), BoxError> {
    let mut out = BytesMut::new();
    while !stop.load(Ordering::Relaxed) {
        // Everything already received goes on in one write; then read more.
        while let Some(e) = raw.session.poll()? {
            if let SessionEvent::Packet(NodePacket::Broadcast { message }) = e {
                ClientPacket::Broadcast {
                    cluster: next.as_str().into(),
                    message,
                }
                .encode(&mut out);
            }
            if out.len() >= 256 << 10 {
                break;
            }
        }
        if !out.is_empty() {
            stalled_write(raw.stream.write_all(&out), "a forwarder").await?;
            out.clear();
            continue;
        }
        let read = tokio::time::timeout(
            Duration::from_millis(200),
            raw.stream.read_buf(room(raw.session.read_buf())),
        )
        .await;
        if let Ok(n) = read
            && n? == 0
        {
            return Err("the node closed a forwarder's connection".into());
        }
    }
    Ok(())
}

/// A write that the node has not taken for this long means the ring is stuck.
const WRITE_STALL: Duration = Duration::from_secs(15);

/// Awaits a write, or fails once the node has taken nothing of it for [`WRITE_STALL`].
async fn stalled_write(
    write: impl std::future::Future<Output = std::io::Result<()>>,
    who: &str,
) -> Result<(), BoxError> {
    match tokio::time::timeout(WRITE_STALL, write).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(format!("{who}'s node took nothing for {} s", WRITE_STALL.as_secs()).into()),
    }
}

/// One run: `size`-byte messages for `secs` seconds of sending, then until everything in
/// flight has come back (or nothing has for 10 s).
pub(crate) async fn run(
    ports: Vec<u16>,
    run: u64,
    size: usize,
    mode: Mode,
    secs: f64,
) -> Result<RingRun, BoxError> {
    let n = ports.len();
    let stop = Arc::new(AtomicBool::new(false));
    let mut forwarders = Vec::new();
    let mut members = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        members.push(Raw::connect(port, &gopher(run, i)).await?);
    }
    let mut initiator = members.remove(0);
    for (i, raw) in members.into_iter().enumerate() {
        let next = gopher(run, (i + 2) % n);
        forwarders.push(tokio::spawn(forward(raw, next, stop.clone())));
    }
    // The trees of every gopher's cluster must reach it before messages are counted: a
    // probe goes round until one comes back; late probes are drained.
    let first = gopher(run, 1);
    let probe_deadline = Instant::now() + Duration::from_secs(30);
    'probe: loop {
        if Instant::now() > probe_deadline {
            return Err("the ring never closed".into());
        }
        initiator
            .send(ClientPacket::Broadcast {
                cluster: first.as_str().into(),
                message: vec![0u8; 8].into(),
            })
            .await?;
        let until = Instant::now() + Duration::from_millis(500);
        while let Ok(e) = tokio::time::timeout_at(until.into(), initiator.next()).await {
            if let SessionEvent::Packet(NodePacket::Broadcast { .. }) = e? {
                break 'probe;
            }
        }
    }
    while tokio::time::timeout(Duration::from_millis(500), initiator.next())
        .await
        .is_ok()
    {}

    let sent = Arc::new(AtomicU64::new(0));
    let looped = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(tokio::sync::Notify::new());
    let (mut rd, mut wr) = initiator.stream.into_split();
    let mut session = initiator.session;
    // Gopher #0's reader counts what comes back.
    let reader = {
        let (looped, progress) = (looped.clone(), progress.clone());
        tokio::spawn(async move {
            loop {
                while let Some(e) = session.poll()? {
                    if let SessionEvent::Packet(NodePacket::Broadcast { .. }) = e {
                        looped.fetch_add(1, Ordering::Relaxed);
                        progress.notify_one();
                    }
                }
                if rd.read_buf(room(session.read_buf())).await? == 0 {
                    return Err::<(), BoxError>("the node closed gopher #0".into());
                }
            }
        })
    };
    let payload = bytes::Bytes::from(vec![0xa5u8; size]);
    let mut batch = BytesMut::new();
    let per_write = ((64 << 10) / size).clamp(1, 256) as u64;
    let start = Instant::now();
    let sending_until = start + Duration::from_secs_f64(secs);
    while Instant::now() < sending_until {
        let mut k = per_write;
        if let Mode::Closed(window) = mode {
            // Wait for room in the window: a quarter of it (or a full write), so that
            // refills go in batches rather than one message per message back.
            let room = (window / 4).clamp(1, per_write);
            loop {
                let in_flight = sent.load(Ordering::Relaxed) - looped.load(Ordering::Relaxed);
                if in_flight + room <= window {
                    k = k.min(window - in_flight);
                    break;
                }
                let notified = progress.notified();
                if tokio::time::timeout(Duration::from_secs(10), notified)
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
        for _ in 0..k {
            ClientPacket::Broadcast {
                cluster: first.as_str().into(),
                message: payload.clone(),
            }
            .encode(&mut batch);
        }
        if let Err(e) = stalled_write(wr.write_all(&batch), "gopher #0").await {
            stop.store(true, Ordering::Relaxed);
            reader.abort();
            return Ok(RingRun {
                size,
                mode,
                sent: sent.load(Ordering::Relaxed),
                looped: looped.load(Ordering::Relaxed),
                elapsed: start.elapsed(),
                broken: Some(e.to_string()),
                peak_rss_mib: 0,
            });
        }
        batch.clear();
        sent.fetch_add(k, Ordering::Relaxed);
        if reader.is_finished() {
            break;
        }
    }
    // Drain: wait until everything is back, or nothing moved for 10 s.
    let total = sent.load(Ordering::Relaxed);
    let mut last = looped.load(Ordering::Relaxed);
    let mut last_move = Instant::now();
    let mut broken = None;
    while looped.load(Ordering::Relaxed) < total {
        let notified = progress.notified();
        let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        let now = looped.load(Ordering::Relaxed);
        if now != last {
            last = now;
            last_move = Instant::now();
        } else if last_move.elapsed() > Duration::from_secs(10) {
            broken = Some(format!("{} of {total} never came back", total - now));
            break;
        }
        if reader.is_finished() {
            broken = Some("gopher #0 lost its connection".into());
            break;
        }
    }
    // The last message back ends the run (a broken ring: the last that came back).
    let end = if looped.load(Ordering::Relaxed) >= total {
        Instant::now()
    } else {
        last_move
    };
    stop.store(true, Ordering::Relaxed);
    reader.abort();
    for f in forwarders {
        if let Ok(Err(e)) = f.await {
            broken.get_or_insert(format!("a forwarder failed: {e}"));
        }
    }
    let _ = wr.shutdown().await;
    Ok(RingRun {
        size,
        mode,
        sent: total,
        looped: looped.load(Ordering::Relaxed),
        elapsed: end.saturating_duration_since(start),
        broken,
        peak_rss_mib: 0,
    })
}

/// What the ring scenario runs.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Nodes (and gophers) in the ring.
    pub(crate) nodes: usize,
    pub(crate) sizes: Vec<usize>,
    pub(crate) modes: Vec<Mode>,
    /// Runs per size and mode.
    pub(crate) runs: u64,
    /// Seconds of sending per run.
    pub(crate) secs: f64,
}

/// The `iris` binary built beside this one (`target/release/iris` for a release bench), or
/// the one `IRIS_BIN` names (another build, to compare).
pub(crate) fn iris_binary() -> Result<std::path::PathBuf, BoxError> {
    if let Some(bin) = std::env::var_os("IRIS_BIN") {
        return Ok(bin.into());
    }
    let exe = std::env::current_exe()?;
    let iris = exe.with_file_name("iris");
    if iris.exists() {
        Ok(iris)
    } else {
        Err(format!(
            "the ring needs the iris binary at {}: run `cargo build --release -p iris-tokio` first",
            iris.display()
        )
        .into())
    }
}

/// The network key the ring's nodes share (a test fixture of iris-proto).
pub(crate) fn key() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../iris-proto/tests/fixtures/net-pkcs8.pem")
}

/// Boots the ring's network once and runs every size and mode of `plan` on it; each run
/// uses gophers of its own so that nothing of one run reaches the next.
pub(crate) async fn bench(plan: &Plan) -> Result<Vec<RingRun>, BoxError> {
    let iris = iris_binary()?;
    let nodes = boot(&iris, plan.nodes, &key())?;
    let mut out = Vec::new();
    let mut id = 0;
    for &mode in &plan.modes {
        for &size in &plan.sizes {
            for _ in 0..plan.runs {
                id += 1;
                // On the runtime's worker, with the tasks it spawns: no thread hand-off
                // per message in the harness.
                let ports = nodes.iter().map(|n| n.port).collect();
                let mut r = tokio::spawn(run(ports, id, size, mode, plan.secs)).await??;
                r.peak_rss_mib = nodes.iter().map(|p| p.rss_kib().0).max().unwrap_or(0) / 1024;
                eprintln!("{}", row(&r));
                for (i, node) in nodes.iter().enumerate() {
                    for line in node.losses() {
                        eprintln!("  node {i}: {line}");
                    }
                }
                out.push(r);
            }
        }
    }
    Ok(out)
}

/// One run as a row of the report.
pub(crate) fn row(r: &RingRun) -> String {
    let mode = match r.mode {
        Mode::Closed(w) => format!("closed ≤{w}"),
        Mode::Open => "open".to_string(),
    };
    format!(
        "| ring {mode} {} B | {:.0} looped/s | {:.1} MB/s | sent {}, looped {}, loss {:.4} %, {}, peak node RSS {} MiB |",
        r.size,
        r.rate(),
        r.rate() * r.size as f64 / 1e6,
        r.sent,
        r.looped,
        r.loss() * 100.0,
        r.broken.as_deref().unwrap_or("ring whole"),
        r.peak_rss_mib
    )
}

/// One line over all runs: losses, broken rings, the largest node.
pub(crate) fn summary(runs: &[RingRun]) -> String {
    let lost: u64 = runs.iter().map(|r| r.sent - r.looped.min(r.sent)).sum();
    let broken = runs.iter().filter(|r| r.broken.is_some()).count();
    let peak = runs.iter().map(|r| r.peak_rss_mib).max().unwrap_or(0);
    format!(
        "| ring, all {} runs | {lost} messages lost | {broken} rings broken | largest node peak RSS {peak} MiB |",
        runs.len()
    )
}
