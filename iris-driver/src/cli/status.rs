//! `iris status`: a node's peers, trees, clients, rates and drops, read from its metrics
//! address (`/status.json`, what the status page reads) twice, rates from the difference.

use serde_json::Value as Json;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// `iris status`.
#[derive(Debug, clap::Args)]
pub(super) struct Status {
    /// The node's metrics address (what it was given with --metrics; the deploy files use
    /// 127.0.0.1:9555).
    #[arg(long, default_value = "127.0.0.1:9555", value_name = "ADDR:PORT")]
    metrics: SocketAddr,
    /// Milliseconds between the two readings that rates are taken from.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    interval: u64,
    /// Print the node's status as JSON (one reading) instead of the report.
    #[arg(long)]
    json: bool,
}

/// How long a reading may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes of a status answer read (a node with a few hundred peers sends ~100 KiB).
const MAX_ANSWER: u64 = 16 << 20;

/// `GET path` from the metrics address: the body of a 200 answer.
pub(super) fn get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let unreachable = |e: std::io::Error| {
        format!(
            "no metrics endpoint answers at {addr} ({e}); start the node with --metrics {addr} \
             or name its address with --metrics"
        )
    };
    let mut stream = TcpStream::connect_timeout(&addr, READ_TIMEOUT).map_err(unreachable)?;
    stream.set_read_timeout(Some(READ_TIMEOUT)).ok();
    stream.set_write_timeout(Some(READ_TIMEOUT)).ok();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(unreachable)?;
    let mut answer = String::new();
    stream
        .take(MAX_ANSWER)
        .read_to_string(&mut answer)
        .map_err(|e| format!("reading {path} from {addr}: {e}"))?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr} answered {path} with no HTTP head"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        return Err(format!("{addr} answered {path} with {status:?}"));
    }
    Ok(body.to_string())
}

/// The node's status, parsed.
pub(super) fn reading(addr: SocketAddr) -> Result<Json, String> {
    let body = get(addr, "/status.json")?;
    serde_json::from_str(&body).map_err(|e| format!("{addr}/status.json is not JSON: {e}"))
}

/// Bytes for people: B, KiB, MiB, GiB.
pub(super) fn bytes(n: f64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= size as f64 {
            return format!("{:.1} {unit}", n / size as f64);
        }
    }
    format!("{n:.0} B")
}

/// A counter of `s` by its path (`["dropped", "cast_no_tree"]`), 0 if absent.
fn count(s: &Json, path: &[&str]) -> f64 {
    path.iter()
        .fold(&s["counters"], |v, k| &v[*k])
        .as_f64()
        .unwrap_or(0.0)
}

/// The report of two readings `secs` apart.
fn report(before: &Json, now: &Json, secs: f64) -> String {
    let g = |k: &str| now["gauges"][k].as_u64().unwrap_or(0);
    let per_sec = |path: &[&str]| (count(now, path) - count(before, path)).max(0.0) / secs;
    let mut out = String::new();
    let id = now["id"]
        .as_str()
        .map_or("(development node)", |s| s.get(..8).unwrap_or(s));
    let flag = |k: &str, yes: &'static str, no: &'static str| match now[k].as_bool() {
        Some(true) => yes,
        _ => no,
    };
    let _ = writeln!(
        out,
        "node {id}  {}  {}",
        flag("ready", "ready", "NOT READY"),
        flag("converged", "converged", "converging")
    );
    let _ = writeln!(
        out,
        "peers {}  links {}  clients {}  trees {}  clusters {}  topics {}  memory {} of {}",
        g("peers"),
        g("links"),
        g("clients"),
        g("trees"),
        g("clusters"),
        g("topics"),
        bytes(g("memory_used_bytes") as f64),
        bytes(g("memory_budget_bytes") as f64),
    );
    let _ = writeln!(
        out,
        "\nper second   broadcasts {:.1}  publishes {:.1}  requests {:.1}  multicasts out {:.1}  in {:.1}",
        per_sec(&["client_messages", "broadcast"]),
        per_sec(&["client_messages", "publish"]),
        per_sec(&["client_messages", "request"]),
        per_sec(&["casts", "sent"]),
        per_sec(&["casts", "delivered"]),
    );
    let _ = writeln!(
        out,
        "bytes/s      from clients {}  to clients {}  from peers {}  to peers {}",
        bytes(per_sec(&["bytes", "client_in"])),
        bytes(per_sec(&["bytes", "client_out"])),
        bytes(per_sec(&["bytes", "peer_in"])),
        bytes(per_sec(&["bytes", "peer_out"])),
    );
    let peers = now["peers"].as_array().cloned().unwrap_or_default();
    if peers.is_empty() {
        let _ = writeln!(out, "\nno peers");
    } else {
        let _ = writeln!(
            out,
            "\n{:<10}{:<24}{:<7}{:<6}{:>10}{:>10}{:>10}{:>11}",
            "PEER", "ADDRESS", "ROLE", "LINK", "RTT", "SENT/S", "RECV/S", "QUEUED"
        );
    }
    let was: Vec<Json> = before["peers"].as_array().cloned().unwrap_or_default();
    for p in &peers {
        let id = p["id"].as_str().unwrap_or("?");
        let old = was.iter().find(|q| q["id"] == p["id"]);
        let rate = |k: &str| {
            let then = old.and_then(|q| q[k].as_f64());
            then.map_or("-".to_string(), |t| {
                format!("{:.1}", (p[k].as_f64().unwrap_or(0.0) - t).max(0.0) / secs)
            })
        };
        let rtt = p["rtt_ms"]
            .as_f64()
            .map_or("-".to_string(), |ms| format!("{ms:.2} ms"));
        let _ = writeln!(
            out,
            "{:<10}{:<24}{:<7}{:<6}{:>10}{:>10}{:>10}{:>11}",
            id.get(..8).unwrap_or(id),
            p["addr"].as_str().unwrap_or("?"),
            p["role"].as_str().unwrap_or("?"),
            if p["linked"].as_bool() == Some(true) {
                "up"
            } else {
                "idle"
            },
            rtt,
            rate("sent"),
            rate("received"),
            bytes(p["queued"].as_f64().unwrap_or(0.0)),
        );
    }
    let mut drops = Vec::new();
    for family in ["dropped", "link_messages_dropped", "slow_consumers_cut"] {
        if let Some(reasons) = now["counters"][family].as_object() {
            for (reason, total) in reasons {
                let total = total.as_u64().unwrap_or(0);
                if total > 0 {
                    let r = per_sec(&[family, reason]);
                    drops.push(format!("  {family:<22}{reason:<24}{total:>10}{r:>10.1}/s"));
                }
            }
        }
    }
    let timed_out = count(now, &["requests", "timed_out"]);
    if timed_out > 0.0 {
        let r = per_sec(&["requests", "timed_out"]);
        drops.push(format!(
            "  {:<22}{:<24}{timed_out:>10}{r:>10.1}/s",
            "requests", "timed_out"
        ));
    }
    let trees = count(now, &["trees_refused"]);
    if trees > 0.0 {
        let r = per_sec(&["trees_refused"]);
        drops.push(format!(
            "  {:<22}{:<24}{trees:>10}{r:>10.1}/s",
            "trees_refused", "over --max-trees"
        ));
    }
    if drops.is_empty() {
        let _ = writeln!(out, "\ndrops: none");
    } else {
        let _ = writeln!(out, "\ndrops (total, per second):\n{}", drops.join("\n"));
    }
    out
}

/// `iris status`.
pub(super) fn run(t: Status) -> ExitCode {
    let result = (|| -> Result<(), String> {
        let before = reading(t.metrics)?;
        if t.json {
            println!("{before}");
            return Ok(());
        }
        let started = Instant::now();
        std::thread::sleep(Duration::from_millis(t.interval.max(1)));
        let now = reading(t.metrics)?;
        print!("{}", report(&before, &now, started.elapsed().as_secs_f64()));
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iris: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_report_shows_rates_peers_and_only_the_drops_that_happened() {
        let reading = |published: u64, sent: u64, dropped: u64| {
            json!({
                "id": "0123456789abcdef0123456789abcdef",
                "ready": true,
                "converged": true,
                "gauges": {"peers": 1, "links": 1, "clients": 2, "trees": 3},
                "counters": {
                    "client_messages": {"broadcast": 0, "publish": published, "request": 0},
                    "dropped": {"cast_no_tree": dropped, "cast_stray": 0},
                    "requests": {"timed_out": 0},
                },
                "peers": [{"id": "fedcba98765432100000000000000000", "addr": "127.0.0.1:7000",
                           "role": "leaf", "linked": true, "rtt_ms": 0.25, "sent": sent,
                           "received": 0, "queued": 2048}],
            })
        };
        let text = report(&reading(10, 100, 0), &reading(30, 140, 4), 2.0);
        assert!(
            text.starts_with("node 01234567  ready  converged\n"),
            "{text}"
        );
        assert!(
            text.contains("peers 1  links 1  clients 2  trees 3"),
            "{text}"
        );
        assert!(text.contains("publishes 10.0"), "{text}");
        let peer = text.lines().find(|l| l.starts_with("fedcba98")).unwrap();
        let words: Vec<&str> = peer.split_whitespace().collect();
        assert_eq!(
            words,
            [
                "fedcba98",
                "127.0.0.1:7000",
                "leaf",
                "up",
                "0.25",
                "ms",
                "20.0",
                "0.0",
                "2.0",
                "KiB"
            ]
        );
        assert!(text.contains("cast_no_tree"), "{text}");
        assert!(!text.contains("cast_stray"), "{text}");
        assert!(!text.contains("drops: none"), "{text}");
        assert!(report(&reading(0, 0, 0), &reading(0, 0, 0), 1.0).contains("drops: none"));
    }
}
