//! "Chinese whispers": gopher #0 starts a whisper, gophers #1..#N-1 each registered under
//! their own name pass it on around the ring (each mishears one word), and gopher #0 prints
//! what comes back.
//!
//! ```text
//! cargo run --release -p iris-tokio --example chinese_whispers -- --gophers 5 --rounds 3
//! ```
//!
//! Without `--port` the example starts its own node in-process on a free loopback port and
//! runs the whole ring there; with `--port 55555` it uses a running node. With `--gopher I`
//! it runs gopher #I alone, so that each gopher can sit on its own node, as in the
//! original's tutorial (see the README): forwarders serve until interrupted, gopher #0
//! whispers once the ring answers.

use bytes::Bytes;
use clap::Parser;
use iris_tokio::client::{Connection, ServiceHandler, ServiceLimits};
use iris_tokio::driver::{NodeHandle, NodeOptions};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::mpsc;

/// Pass whispers around a ring of services on one Iris node.
#[derive(Debug, Parser)]
struct Args {
    /// Relay port of a running node; default: start one in-process.
    #[arg(long)]
    port: Option<u16>,
    /// Gophers in the ring, the initiator included (at least 2).
    #[arg(long, default_value_t = 5)]
    gophers: usize,
    /// Whispers to send around.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Run only this gopher (needs `--port`): each gopher on its own node.
    #[arg(long)]
    gopher: Option<usize>,
}

/// Words a gopher may mishear, and what it hears instead.
const MISHEARD: [(&str, &str); 6] = [
    ("gophers", "golfers"),
    ("like", "bike"),
    ("to", "two"),
    ("dig", "dance"),
    ("tunnels", "funnels"),
    ("deep", "cheap"),
];

/// A forwarder: hears a whisper, mishears one word, whispers it to the next gopher.
struct Forwarder {
    index: usize,
    next: String,
    conn: OnceLock<Connection>,
}

impl ServiceHandler for Forwarder {
    async fn init(&self, conn: &Connection) -> Result<(), String> {
        self.conn
            .set(conn.clone())
            .map_err(|_| "initialized twice".to_string())
    }

    async fn handle_broadcast(&self, message: Bytes) {
        let heard = String::from_utf8_lossy(&message).into_owned();
        let (from, to) = MISHEARD[self.index % MISHEARD.len()];
        let said = heard.replacen(from, to, 1);
        if let Some(conn) = self.conn.get()
            && let Err(e) = conn.broadcast(&self.next, said).await
        {
            eprintln!("gopher #{} could not whisper on: {e}", self.index);
        }
    }

    async fn handle_request(&self, _request: Bytes) -> Result<Bytes, String> {
        Err("gophers only whisper".into())
    }
}

/// The initiator: whatever loops back goes to `main`.
struct Initiator(mpsc::UnboundedSender<Bytes>);

impl ServiceHandler for Initiator {
    async fn handle_broadcast(&self, message: Bytes) {
        let _ = self.0.send(message);
    }

    async fn handle_request(&self, _request: Bytes) -> Result<Bytes, String> {
        Err("gophers only whisper".into())
    }
}

fn name(i: usize) -> String {
    format!("gopher #{i}")
}

/// Gopher #i alone on the node at `port`: passes whispers on until interrupted.
async fn forward(port: u16, i: usize, gophers: usize) -> Result<(), Box<dyn std::error::Error>> {
    let forwarder = Forwarder {
        index: i,
        next: name((i + 1) % gophers),
        conn: OnceLock::new(),
    };
    let conn =
        iris_tokio::client::register(port, &name(i), forwarder, ServiceLimits::default()).await?;
    println!("gopher #{i} listens on the node at port {port}");
    tokio::signal::ctrl_c().await?;
    conn.close().await?;
    Ok(())
}

/// Gopher #0 alone on the node at `port`: whispers into a ring of gophers on other nodes.
/// The others may still be starting: the first whisper is repeated until one comes back.
async fn initiate(port: u16, args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let (tx, mut looped) = mpsc::unbounded_channel();
    let initiator =
        iris_tokio::client::register(port, &name(0), Initiator(tx), ServiceLimits::default())
            .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        initiator.broadcast(&name(1), "is anybody there?").await?;
        if tokio::time::timeout(Duration::from_secs(1), looped.recv())
            .await
            .is_ok()
        {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err("no ring answered within 60 s".into());
        }
    }
    // Late echoes of the probes are dropped before the rounds start.
    while tokio::time::timeout(Duration::from_millis(500), looped.recv())
        .await
        .is_ok()
    {}
    for round in 0..args.rounds {
        let whisper = format!("gophers like to dig tunnels deep (whisper {round})");
        println!("gopher #0 whispers: {whisper}");
        initiator.broadcast(&name(1), whisper).await?;
        let back = tokio::time::timeout(Duration::from_secs(5), looped.recv())
            .await
            .map_err(|_| "the whisper got lost in the ring")?
            .ok_or("the ring broke")?;
        println!("gopher #0 hears:    {}", String::from_utf8_lossy(&back));
    }
    initiator.close().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.gophers < 2 {
        return Err("a ring needs at least 2 gophers".into());
    }
    if let Some(i) = args.gopher {
        let port = args.port.ok_or("--gopher needs the --port of its node")?;
        if i >= args.gophers {
            return Err(format!("gopher #{i} is not in a ring of {}", args.gophers).into());
        }
        return if i == 0 {
            initiate(port, &args).await
        } else {
            forward(port, i, args.gophers).await
        };
    }
    let node = match args.port {
        Some(_) => None,
        None => Some(NodeHandle::spawn(NodeOptions {
            port: 0,
            ..NodeOptions::default()
        })?),
    };
    let port = args
        .port
        .or(node.as_ref().map(NodeHandle::port))
        .unwrap_or(55555);
    println!(
        "ring of {} gophers on the node at port {port}",
        args.gophers
    );

    let (tx, mut looped) = mpsc::unbounded_channel();
    let initiator =
        iris_tokio::client::register(port, &name(0), Initiator(tx), ServiceLimits::default())
            .await?;
    let mut ring = Vec::new();
    for i in 1..args.gophers {
        let forwarder = Forwarder {
            index: i,
            next: name((i + 1) % args.gophers),
            conn: OnceLock::new(),
        };
        ring.push(
            iris_tokio::client::register(port, &name(i), forwarder, ServiceLimits::default())
                .await?,
        );
    }

    for round in 0..args.rounds {
        let whisper = format!("gophers like to dig tunnels deep (whisper {round})");
        println!("gopher #0 whispers: {whisper}");
        initiator.broadcast(&name(1), whisper).await?;
        let back = tokio::time::timeout(Duration::from_secs(5), looped.recv())
            .await
            .map_err(|_| "the whisper got lost in the ring")?
            .ok_or("the ring broke")?;
        println!("gopher #0 hears:    {}", String::from_utf8_lossy(&back));
    }

    for conn in ring.iter().chain([&initiator]) {
        conn.close().await?;
    }
    if let Some(node) = node {
        node.stop("example finished")?;
    }
    Ok(())
}
