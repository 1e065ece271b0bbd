//! Requests beside a flood, across two `iris` processes: a client of node A asks a member
//! on node B every 20 ms, alone and then while another client of A publishes 64 KiB events
//! as fast as A takes them to a subscriber on B that reads at full speed. The two share
//! the link from A to B; requests go ahead of bulk data on it (`Class::Urgent`).

use crate::groups::Count;
use crate::iris::{Dial, Echo, roomy, settle};
use crate::report::Report;
use bytes::Bytes;
use iris_tokio::Tokio;
use iris_tokio::client::{Connection, ServiceLimits};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CLUSTER: &str = "priority-echo";
const TOPIC: &str = "priority-flood";

/// `n` requests of 64 B, one every 20 ms: each one's round trip.
async fn paced(client: &Connection, n: usize) -> Result<Vec<Duration>, BoxError> {
    let payload = Bytes::from(vec![0x5a; 64]);
    let start = Instant::now();
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        client
            .request(CLUSTER, payload.clone(), Duration::from_secs(5))
            .await?;
        samples.push(t.elapsed());
        let next = start + Duration::from_millis(20 * (i as u64 + 1));
        tokio::time::sleep(next.saturating_duration_since(Instant::now())).await;
    }
    Ok(samples)
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    s[((s.len() - 1) as f64 * p) as usize]
}

/// Runs the scenario into `report`.
pub(crate) async fn run(report: &mut Report, quick: bool) -> Result<(), BoxError> {
    let iris_bin = crate::ring::iris_binary()?;
    let nodes = crate::ring::boot(&iris_bin, 2, &crate::ring::key())?;
    let (a, b): (Dial<Tokio>, Dial<Tokio>) = (nodes[0].port.into(), nodes[1].port.into());
    let member = b.register(CLUSTER, Echo, ServiceLimits::default()).await?;
    let requester = a.connect().await?;
    settle(&requester, CLUSTER).await?;
    let n = if quick { 150 } else { 500 };
    let alone = paced(&requester, n).await?;

    // The flood's two clients run on a thread and runtime of their own: on the requester's
    // they would delay its requests and the member's answers themselves.
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let (stop, received) = (stop.clone(), received.clone());
        let (a, b) = (nodes[0].port, nodes[1].port);
        std::thread::spawn(move || -> Result<(), BoxError> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let (a, b): (Dial<Tokio>, Dial<Tokio>) = (a.into(), b.into());
                let subscriber = b.connect().await?;
                subscriber
                    .subscribe(TOPIC, Count(received), roomy())
                    .await?;
                let publisher = a.connect().await?;
                let payload = Bytes::from(vec![0xa5; 64 << 10]);
                while !stop.load(Ordering::Relaxed) {
                    publisher.publish(TOPIC, payload.clone()).await?;
                }
                publisher.close().await?;
                subscriber.close().await?;
                Ok(())
            })
        })
    };
    // The flood is under way once events arrive at B.
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.load(Ordering::Relaxed) < 100 {
        if Instant::now() > deadline {
            return Err("the flood never reached node B".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (t0, r0) = (Instant::now(), received.load(Ordering::Relaxed));
    let beside = paced(&requester, n).await?;
    let rate =
        (received.load(Ordering::Relaxed) - r0) as f64 * 65536.0 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    flood.join().map_err(|_| "the flood's thread panicked")??;

    report.latency("request 64 B every 20 ms, A to B, alone", alone.clone());
    report.latency(
        "request 64 B every 20 ms, A to B, beside a 64 KiB publish flood A to B",
        beside.clone(),
    );
    report.row(format!(
        "| the flood meanwhile | {:.0} MB/s to the subscriber on B | p99 beside / alone {:.2}x | p50 {:.2}x |",
        rate / 1e6,
        percentile(&beside, 0.99).as_secs_f64() / percentile(&alone, 0.99).as_secs_f64(),
        percentile(&beside, 0.5).as_secs_f64() / percentile(&alone, 0.5).as_secs_f64(),
    ));
    requester.close().await?;
    member.close().await?;
    Ok(())
}
