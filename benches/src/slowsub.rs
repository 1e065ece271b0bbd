//! A slow subscriber beside a fast one, across two `iris` processes: a client of node A
//! publishes 64 KiB events on one topic as fast as A takes them; a subscriber on node B
//! reads them at full speed, alone and then beside a second subscriber that reads 64 KiB
//! every 10 ms (6.5 MB/s), placed on node B beside it or on node A beside the publisher.
//! The fast one's rate while the slow one is congested, against its rate alone, with the
//! nodes' default grace (`--slow-consumer-grace-ms 500`) and with a grace as long as the
//! slow-consumer deadline (10 s: how every node behaved before the grace existed, the slow
//! subscriber setting everyone's pace).

use crate::raw::{Raw, room};
use crate::report::Report;
use bytes::Bytes;
use iris_proto::relay::NodePacket;
use iris_proto::relay::client::SessionEvent;
use iris_tokio::Tokio;
use iris_tokio::client::Connection;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const SIZE: usize = 64 << 10;

/// What the fast subscriber got in a phase.
struct Fast {
    events: u64,
    /// Numbers it never got, below the last it got by more than what may still be on its
    /// way (events take several trees, so they may come out of order).
    missing: u64,
    elapsed: Duration,
}

impl Fast {
    fn mb_s(&self) -> f64 {
        self.events as f64 * SIZE as f64 / self.elapsed.as_secs_f64() / 1e6
    }
}

/// What became of the slow subscriber.
struct Slow {
    events: u64,
    /// When its node closed it (from the phase's start), and why.
    cut: Option<(Duration, String)>,
}

/// Events that may still be on their way when a phase ends (16 MiB, several windows).
const SLACK: usize = 256;

/// Reads events at full speed for `secs`, checking that none comes twice and counting
/// those missing (each starts with its number).
async fn fast_reader(mut raw: Raw, secs: f64, start: Instant) -> Result<Fast, BoxError> {
    let mut seen = Vec::<bool>::new();
    let mut events = 0;
    let end = start + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        let read = raw.stream.read_buf(room(raw.session.read_buf()));
        let n = match tokio::time::timeout_at(end.into(), read).await {
            Ok(n) => n?,
            Err(_) => break,
        };
        if n == 0 {
            return Err("the fast subscriber was closed".into());
        }
        while let Some(e) = raw.session.poll()? {
            if let SessionEvent::Packet(NodePacket::Publish { event, .. }) = e {
                let seq = u64::from_be_bytes(event[..8].try_into()?) as usize;
                if seen.len() <= seq {
                    seen.resize(seq + 1, false);
                }
                if std::mem::replace(&mut seen[seq], true) {
                    return Err(format!("the fast subscriber got {seq} twice").into());
                }
                events += 1;
            }
        }
    }
    let settled = seen.len().saturating_sub(SLACK);
    let missing = seen[..settled].iter().filter(|&&s| !s).count() as u64;
    Ok(Fast {
        events,
        missing,
        elapsed: start.elapsed(),
    })
}

/// Reads at most 64 KiB every 10 ms until its node closes it or `stop`.
async fn slow_reader(mut raw: Raw, start: Instant, stop: Arc<AtomicBool>) -> Slow {
    let mut buf = vec![0u8; 64 << 10];
    let mut events = 0;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let n = match tokio::time::timeout(Duration::from_millis(10), raw.stream.read(&mut buf))
            .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => {
                let why = "closed without a CLOSE".to_string();
                return Slow {
                    events,
                    cut: Some((start.elapsed(), why)),
                };
            }
            Ok(Ok(n)) => n,
            Err(_) => continue,
        };
        raw.session.read_buf().extend_from_slice(&buf[..n]);
        while let Ok(Some(e)) = raw.session.poll() {
            match e {
                SessionEvent::Packet(NodePacket::Publish { .. }) => events += 1,
                SessionEvent::Packet(NodePacket::Close { reason }) => {
                    return Slow {
                        events,
                        cut: Some((start.elapsed(), reason.to_string())),
                    };
                }
                _ => {}
            }
        }
    }
    Slow { events, cut: None }
}

/// Publishes numbered events to `topic` until `stop`.
async fn publish(
    publisher: Connection,
    topic: String,
    stop: Arc<AtomicBool>,
) -> Result<(), BoxError> {
    let mut seq = 0u64;
    let mut event = vec![0xa5u8; SIZE];
    while !stop.load(Ordering::Relaxed) {
        event[..8].copy_from_slice(&seq.to_be_bytes());
        publisher
            .publish(&topic, Bytes::copy_from_slice(&event))
            .await?;
        seq += 1;
    }
    publisher.close().await?;
    Ok(())
}

/// One phase of `secs` on a topic of its own (nothing of an earlier one reaches it): the
/// fast subscriber on node B, the slow one (if any) on node `slow_at`, the publisher on
/// node A.
async fn phase(
    ports: [u16; 2],
    topic: String,
    slow_at: Option<usize>,
    secs: f64,
) -> Result<(Fast, Option<Slow>), BoxError> {
    let mut fast = Raw::connect(ports[1], "").await?;
    fast.subscribe(&topic).await?;
    let slow = match slow_at {
        Some(i) => {
            let mut s = Raw::connect(ports[i], "").await?;
            s.subscribe(&topic).await?;
            Some(s)
        }
        None => None,
    };
    let dial: crate::iris::Dial<Tokio> = ports[0].into();
    let publisher = dial.connect().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let slow = slow.map(|s| tokio::spawn(slow_reader(s, start, stop.clone())));
    let publishing = tokio::spawn(publish(publisher, topic, stop.clone()));
    let fast = fast_reader(fast, secs, start).await;
    stop.store(true, Ordering::Relaxed);
    publishing.await??;
    let slow = match slow {
        Some(s) => Some(s.await?),
        None => None,
    };
    Ok((fast?, slow))
}

/// Runs the scenario into `report`.
pub(crate) async fn run(report: &mut Report, quick: bool) -> Result<(), BoxError> {
    let iris_bin = crate::ring::iris_binary()?;
    let secs = if quick { 3.0 } else { 6.0 };
    for (grace, label) in [
        ("500", "grace 500 ms (default)"),
        ("10000", "grace 10 s = deadline (before)"),
    ] {
        let nodes = crate::ring::boot_with(
            &iris_bin,
            2,
            &crate::ring::key(),
            &["--slow-consumer-grace-ms", grace],
        )?;
        let ports = [nodes[0].port, nodes[1].port];
        let topic = format!("slowsub-{grace}-alone");
        let (alone, _) = phase(ports, topic, None, secs).await?;
        report.row(format!(
            "| {label}: fast subscriber on B alone | {:.0} MB/s | {} events, {} missing |",
            alone.mb_s(),
            alone.events,
            alone.missing
        ));
        for (slow_at, place) in [(1, "on B beside it"), (0, "on A beside the publisher")] {
            let topic = format!("slowsub-{grace}-{slow_at}");
            let (fast, slow) = phase(ports, topic, Some(slow_at), secs).await?;
            let slow = slow.ok_or("no slow subscriber")?;
            let fate = match &slow.cut {
                Some((after, why)) => format!("cut after {:.1} s: {why}", after.as_secs_f64()),
                None => "not cut".to_string(),
            };
            report.row(format!(
                "| {label}: beside a subscriber reading 6.5 MB/s {place} | {:.0} MB/s ({:.2}x alone), {} events, {} missing | slow one: {} events, {fate} |",
                fast.mb_s(),
                fast.mb_s() / alone.mb_s(),
                fast.events,
                fast.missing,
                slow.events,
            ));
        }
    }
    Ok(())
}
