//! Key rotation without downtime, on real processes: five nodes on key A move to key B one
//! node at a time (each restarted with `--rsa B --rsa-previous A`, then each with `--rsa B`
//! alone) while a client requests every 10 ms. Every restarted node links with all four
//! others, and requests flow again, before the next goes down; every request is answered
//! by the member, none lost (a leaving node passes on what reaches it until its peers have
//! closed their sides, and requests that race a tree's repair wait for it at the new
//! root); at the end a node holding only A is refused, saying why.

use super::common::{Got, IrisProcess, RawClient, b, fixture};
use iris_proto::relay::{ClientPacket, NodePacket, ReplyOutcome};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// Keys and handshakes are the core's; a runtime's links and signals are checked elsewhere.
runtime_independent!(a_network_rolls_from_key_a_to_key_b_one_node_at_a_time_with_traffic_flowing);

const NET: &str = "rotation";
const PORTS: &str = "23501,23502,23503,23504,23505";

/// A node of the network holding `keys`: the current key, then maybe the previous one.
fn launch(keys: &[&str]) -> IrisProcess {
    let (current, previous) = (fixture(keys[0]), keys.get(1).map(|k| fixture(k)));
    let mut flags = vec![
        "--net",
        NET,
        "--rsa",
        &current,
        "--discovery-ports",
        PORTS,
        "--log",
        "info,iris_driver::driver=debug",
    ];
    if let Some(p) = &previous {
        flags.extend(["--rsa-previous", p.as_str()]);
    }
    IrisProcess::launch(&flags)
}

/// Waits until `node` has had links up with `n` distinct peers.
fn wait_links(node: &IrisProcess, n: usize) {
    let mut peers = BTreeSet::new();
    while peers.len() < n {
        let line = node.wait_line("peer link up: ");
        let peer = line.split("peer link up: ").nth(1).unwrap_or_default();
        peers.insert(
            peer.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
        );
    }
}

/// Replaces node `i` by one holding `keys`: SIGTERM (it leaves gracefully), a new process,
/// and its links to the four others.
fn restart(nodes: &mut [IrisProcess], i: usize, keys: &[&str]) {
    let (_, status) = nodes[i].terminate();
    assert!(status.success(), "node {i} did not stop cleanly: {status}");
    nodes[i] = launch(keys);
    wait_links(&nodes[i], nodes.len() - 1);
}

/// A member on one node answering requests and a requester on another asking every 10 ms,
/// until stopped; then the requests sent and how many failed.
struct Traffic {
    stop: Arc<AtomicBool>,
    /// Requests answered so far.
    answered: Arc<AtomicU64>,
    member: JoinHandle<()>,
    requester: JoinHandle<(u64, Vec<String>)>,
}

impl Traffic {
    fn start(member_port: u16, requester_port: u16, cluster: &'static str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let mut m = RawClient::connect(member_port, cluster);
        let s = stop.clone();
        let member = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match m.poll(Duration::from_millis(50)) {
                    Got::Packet(NodePacket::Request { id, request, .. }) => {
                        m.send(ClientPacket::Reply {
                            id,
                            outcome: Ok(request),
                        })
                    }
                    Got::Nothing => {}
                    other => panic!("member got {other:?}"),
                }
            }
        });
        let mut c = RawClient::connect(requester_port, "");
        // The member's subscription takes a moment to reach the trees: ask until it answers.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut id = 1_000_000;
        loop {
            assert!(
                Instant::now() < deadline,
                "the member never became reachable"
            );
            id += 1;
            c.send(ClientPacket::Request {
                id,
                cluster: cluster.into(),
                request: b("hello"),
                timeout_ms: 250,
            });
            match c.recv() {
                NodePacket::Reply {
                    outcome: ReplyOutcome::Success(_),
                    ..
                } => break,
                NodePacket::Reply { .. } => continue,
                other => panic!("requester got {other:?}"),
            }
        }
        let s = stop.clone();
        let answered = Arc::new(AtomicU64::new(0));
        let done = answered.clone();
        let requester = std::thread::spawn(move || {
            let (mut sent, mut failed) = (0u64, Vec::new());
            while !s.load(Ordering::SeqCst) {
                sent += 1;
                c.send(ClientPacket::Request {
                    id: sent,
                    cluster: cluster.into(),
                    request: b(&format!("r{sent}")),
                    timeout_ms: 5000,
                });
                match c.poll(Duration::from_secs(10)) {
                    Got::Packet(NodePacket::Reply {
                        id,
                        outcome: ReplyOutcome::Success(reply),
                    }) if id == sent && reply == b(&format!("r{sent}")) => {
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    other => failed.push(format!("request {sent}: {other:?}")),
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (sent, failed)
        });
        Traffic {
            stop,
            answered,
            member,
            requester,
        }
    }

    /// Waits until `n` more requests have been answered: the network carries traffic
    /// again after a restart before the next node goes down.
    fn flows(&self, n: u64) {
        let target = self.answered.load(Ordering::SeqCst) + n;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.answered.load(Ordering::SeqCst) < target {
            assert!(Instant::now() < deadline, "requests stopped flowing");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops it and checks that every request was answered by the member, once.
    fn finish(self, during: &str) {
        self.stop.store(true, Ordering::SeqCst);
        let (sent, failed) = self.requester.join().expect("requester");
        self.member.join().expect("member");
        assert!(sent >= 20, "{during}: only {sent} requests");
        assert!(
            failed.is_empty(),
            "{during}: {} of {sent} not answered once: {failed:?}",
            failed.len()
        );
    }
}

fn a_network_rolls_from_key_a_to_key_b_one_node_at_a_time_with_traffic_flowing() {
    const A: &str = "net-pkcs8.pem";
    const B: &str = "other-pkcs8.pem";
    let mut nodes: Vec<IrisProcess> = (0..5).map(|_| launch(&[A])).collect();
    for n in &mut nodes {
        n.wait_port();
    }
    for n in &nodes {
        n.wait_line("converged with 4 remote connections");
    }
    // Step 1: every node restarted with B, keeping A as its previous key. Traffic between
    // nodes 0 and 1 while 2, 3, 4 restart; between 3 and 4 while 0 and 1 do.
    let traffic = Traffic::start(nodes[0].port, nodes[1].port, "rot-1");
    for i in [2, 3, 4] {
        restart(&mut nodes, i, &[B, A]);
        traffic.flows(20);
    }
    traffic.finish("nodes 2-4 moving to B with A");
    for i in [3, 4] {
        nodes[i].wait_port();
    }
    let traffic = Traffic::start(nodes[3].port, nodes[4].port, "rot-2");
    for i in [0, 1] {
        restart(&mut nodes, i, &[B, A]);
        traffic.flows(20);
    }
    // Step 2: every node restarted with B alone.
    for i in [0, 1, 2] {
        restart(&mut nodes, i, &[B]);
        traffic.flows(20);
    }
    traffic.finish("nodes 0-1 moving to B with A, then 0-2 to B alone");
    for i in [0, 1] {
        nodes[i].wait_port();
    }
    let traffic = Traffic::start(nodes[0].port, nodes[1].port, "rot-3");
    for i in [3, 4] {
        restart(&mut nodes, i, &[B]);
        traffic.flows(20);
    }
    traffic.finish("nodes 3-4 moving to B alone");
    // Every node serves (the last two restarted open their relay ports too).
    for n in nodes.iter_mut().filter(|n| n.port == 0) {
        n.wait_port();
    }
    // A node still on A alone beacons under A: the network's nodes (on B alone) cannot
    // authenticate its beacons and say so, and nobody dials anybody (no key in common).
    let _stale = launch(&[A]);
    let said = nodes[0].wait_line("not made with its key");
    assert!(said.contains("another network key"), "{said}");
}
