//! `--metrics`: the node's counters scraped over HTTP while two processes exchange
//! messages.

use super::common;

use common::{Got, IrisProcess, fixture, get, metrics_addr, sample as value, scrape};
use iris_proto::relay::{ClientPacket, NodePacket};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn counters_are_scraped_while_two_nodes_carry_traffic() {
    let key = fixture("net-pkcs8.pem");
    let flags = |_: usize| {
        vec![
            "--net".to_string(),
            "metrics test".into(),
            "--rsa".into(),
            key.clone(),
            "--discovery-ports".into(),
            "23301,23302".into(),
            "--metrics".into(),
            "127.0.0.1:0".into(),
            // Room for the cluster's 5 trees and one topic's, not more (see the end).
            "--max-trees".into(),
            "12".into(),
        ]
    };
    let mut nodes: Vec<IrisProcess> = (0..2)
        .map(|i| {
            let f = flags(i);
            IrisProcess::launch(&f.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .collect();
    // Scraped while booting: not ready yet.
    let (a, b) = (metrics_addr(&nodes[0]), metrics_addr(&nodes[1]));
    let (status, body) = get(&a, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(value(&body, "iris_ready"), 0);
    // The readiness probe's answer agrees, by its status.
    assert_eq!(get(&a, "/ready").0, "HTTP/1.1 503 Service Unavailable");
    for n in &mut nodes {
        n.wait_port();
    }
    for n in &nodes {
        n.wait_line("converged with 1 remote connections");
    }
    let mut member = nodes[0].connect("svc");
    let mut sender = nodes[1].connect("");
    // 100 broadcasts that reach the member on the other node (after the trees form).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "trees never formed");
        sender.send(ClientPacket::Broadcast {
            cluster: "svc".into(),
            message: "probe".into(),
        });
        if let Got::Packet(_) = member.poll(Duration::from_millis(100)) {
            break;
        }
    }
    while let Got::Packet(_) = member.poll(Duration::from_millis(200)) {}
    for _ in 0..100 {
        sender.send(ClientPacket::Broadcast {
            cluster: "svc".into(),
            message: "m".into(),
        });
    }
    for _ in 0..100 {
        assert_eq!(
            member.recv(),
            NodePacket::Broadcast {
                message: "m".into()
            }
        );
    }
    let (_, at_b) = get(&b, "/metrics");
    let (_, at_a) = get(&a, "/metrics");
    assert_eq!(
        get(&a, "/ready"),
        ("HTTP/1.1 200 OK".into(), "ready\n".into())
    );
    for body in [&at_a, &at_b] {
        assert_eq!(value(body, "iris_ready"), 1);
        assert_eq!(value(body, "iris_converged"), 1);
        assert_eq!(value(body, "iris_peers"), 1);
        assert!(value(body, "iris_trees") >= 1);
        assert!(value(body, "iris_links_events_total{event=\"up\"}") >= 1);
        // Each genuine link costs each end one signature, no more (a link dialed both
        // ways at once is dropped as a duplicate after its handshake).
        let links = value(body, "iris_links_events_total{event=\"up\"}")
            + value(body, "iris_links_events_total{event=\"duplicate\"}");
        let signatures = value(body, "iris_signatures_total");
        assert!(
            (1..=links).contains(&signatures),
            "{signatures} for {links}"
        );
    }
    let sent = value(&at_b, "iris_client_messages_total{kind=\"broadcast\"}");
    assert!(
        sent >= 101,
        "{sent} broadcasts counted at the sender's node"
    );
    assert!(value(&at_b, "iris_casts_total{event=\"sent\"}") >= 101);
    assert!(value(&at_a, "iris_casts_total{event=\"delivered\"}") >= 101);
    assert_eq!(value(&at_a, "iris_clusters"), 1);
    assert_eq!(value(&at_a, "iris_clients"), 1);
    assert!(value(&at_b, "iris_bytes_total{way=\"peer_out\"}") > 100);
    // Served (value() panics on a missing series); what was held for a tree depends on
    // whether the first broadcasts raced the trees' forming.
    value(&at_b, "iris_held_for_tree_total");
    value(&at_b, "iris_dropped_total{reason=\"anycast_no_tree\"}");
    // Anything but GET /metrics is refused plainly.
    assert_eq!(get(&a, "/other").0, "HTTP/1.1 404 Not Found");
    let mut s = TcpStream::connect(&a).unwrap();
    write!(s, "POST /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 405"), "{out}");

    // Past --max-trees, trees are refused loudly: a warning naming the group, a counter.
    assert_eq!(value(&scrape(&a), "iris_trees_refused_total"), 0);
    let mut subscriber = nodes[0].connect("");
    for topic in ["t0", "t1", "t2"] {
        subscriber.send(ClientPacket::Subscribe {
            topic: topic.into(),
        });
    }
    let said = nodes[0].wait_line("multicast tree(s), the last for topic t");
    assert!(
        said.contains("WARN") && said.contains("12 trees already"),
        "{said}"
    );
    let refused = value(&scrape(&a), "iris_trees_refused_total");
    assert!(refused >= 5, "{refused} trees refused");
    assert!(value(&scrape(&a), "iris_trees") <= 12);
}
