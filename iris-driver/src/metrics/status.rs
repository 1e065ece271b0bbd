//! The status page (`/`) and what it reads (`/status.json`): the node, its peers and its
//! counters as JSON, which `iris status` reads too.

use super::{Snapshot, Value, metrics};
use serde_json::{Map, Value as Json, json};

/// The status page: static HTML whose script reads `/status.json` every second and shows
/// rates from the differences.
pub const PAGE: &str = include_str!("status.html");

/// The snapshot as JSON: `id`, `ready`, `converged`, `gauges` (name to level), `counters`
/// (name to a count, or to counts by label value), `help` (name to what it counts) and
/// `peers` (one object a peer: `id`, `addr`, `role` "leaf" or "table", `linked`, `rtt_ms`,
/// `sent`, `received`, `queued`).
pub fn status_json(s: &Snapshot) -> String {
    let (mut gauges, mut counters, mut help) = (Map::new(), Map::new(), Map::new());
    for m in metrics(s) {
        help.insert(m.name.into(), m.help.into());
        match m.value {
            Value::Gauge(v) => {
                gauges.insert(m.name.into(), v.into());
            }
            Value::Counter(v) => {
                counters.insert(m.name.into(), v.into());
            }
            Value::Family(_, series) => {
                let by: Map<String, Json> = series
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect();
                counters.insert(m.name.into(), by.into());
            }
        }
    }
    let peers: Vec<Json> = s
        .peer_list
        .iter()
        .map(|p| {
            json!({
                "id": format!("{:?}", p.id),
                "addr": p.addr.to_string(),
                "role": if p.leaf { "leaf" } else { "table" },
                "linked": p.linked,
                "rtt_ms": p.rtt.map(|d| d.as_secs_f64() * 1e3),
                "sent": p.messages.0,
                "received": p.messages.1,
                "queued": p.queued,
            })
        })
        .collect();
    json!({
        "id": s.id.map(|id| format!("{id:?}")),
        "ready": s.ready,
        "converged": s.converged,
        "gauges": gauges,
        "counters": counters,
        "help": help,
        "peers": peers,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use iris_proto::{NodeId, PeerStatus};
    use std::time::Duration;

    #[test]
    fn the_json_holds_every_metric_and_every_peer() {
        let peer = PeerStatus {
            id: NodeId(0xab << 120),
            addr: "127.0.0.1:7000".parse().unwrap(),
            leaf: true,
            linked: true,
            rtt: Some(Duration::from_micros(1500)),
            messages: (5, 6),
            queued: 7,
        };
        let mut s = Snapshot {
            id: Some(NodeId(1)),
            peer_list: vec![peer],
            peers: 1,
            ready: true,
            ..Snapshot::default()
        };
        s.stats.casts_no_tree = 3;
        s.stats.held = 2;
        let j: Json = serde_json::from_str(&status_json(&s)).unwrap();
        assert_eq!(j["id"], "00000000000000000000000000000001");
        assert_eq!(j["ready"], true);
        assert_eq!(j["gauges"]["peers"], 1);
        assert_eq!(j["counters"]["dropped"]["cast_no_tree"], 3);
        assert_eq!(j["counters"]["held_for_tree"], 2);
        assert_eq!(j["help"]["peers"], "Nodes the overlay knows");
        let p = &j["peers"][0];
        assert_eq!(p["id"], "ab000000000000000000000000000000");
        assert_eq!(p["addr"], "127.0.0.1:7000");
        assert_eq!(p["role"], "leaf");
        assert_eq!(p["rtt_ms"], 1.5);
        assert_eq!(
            (&p["sent"], &p["received"], &p["queued"]),
            (&5.into(), &6.into(), &7.into())
        );
        // Every metric the Prometheus text has, the JSON has too.
        for m in metrics(&s) {
            let there = j["gauges"].get(m.name).or(j["counters"].get(m.name));
            assert!(there.is_some(), "{} missing", m.name);
        }
    }
}
