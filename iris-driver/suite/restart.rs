//! A rolling restart of the nodes that host a service, on real processes: three nodes, a
//! member of one cluster on nodes 1 and 2 (each answering 30 ms after a request came, so
//! that requests are in progress at any moment), a client on node 0 requesting every 5 ms.
//! Nodes 1 and 2 are restarted in turn with SIGTERM; each member, closed by its node once
//! its work is done, connects to the node's new process. Every request gets exactly one
//! REPLY, and it is the member's: the node drains what its member holds and gives it
//! nothing new, and the other member takes the rest; no member is ever closed with work in
//! progress.

use super::common::{Got, IrisProcess, RawClient, b, fixture, network};
use bytes::Bytes;
use iris_proto::relay::{ClientPacket, NodePacket, ReplyOutcome};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// The drain and the hand-over between members are the core's; SIGTERM on each runtime is
// `lifecycle`'s and `conformance`'s.
runtime_independent!(a_rolling_restart_of_a_services_nodes_fails_no_request);

const NET: &str = "restart";
const PORTS: &str = "23521,23522,23523";
const CLUSTER: &str = "restarted-svc";
/// How long a member takes to answer: requests are in progress at any moment.
const SERVICE_TIME: Duration = Duration::from_millis(30);

/// A member that answers each request 30 ms after it came (several at once, as a service
/// with a pool of workers), and reconnects to its node's new relay port (`port`, set by
/// the test) each time its node closes it. Returns how many it answered per connection.
fn member(
    port: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
) -> JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let mut per_connection = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let p = port.load(Ordering::SeqCst);
            if p == 0 {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            let mut m = RawClient::connect(p, CLUSTER);
            let mut working: VecDeque<(Instant, u64, Bytes)> = VecDeque::new();
            let mut n = 0;
            loop {
                while working.front().is_some_and(|w| w.0 <= Instant::now()) {
                    let (_, id, request) = working.pop_front().expect("front");
                    m.send(ClientPacket::Reply {
                        id,
                        outcome: Ok(request),
                    });
                    n += 1;
                    answered.fetch_add(1, Ordering::SeqCst);
                }
                let wait = working.front().map_or(Duration::from_millis(50), |w| {
                    w.0.saturating_duration_since(Instant::now())
                });
                match m.poll(wait.max(Duration::from_millis(1))) {
                    Got::Packet(NodePacket::Request { id, request, .. }) => {
                        working.push_back((Instant::now() + SERVICE_TIME, id, request));
                    }
                    // Its node is going: it closes it once the work in progress is done.
                    Got::Packet(NodePacket::Close { .. }) | Got::Eof => {
                        assert!(working.is_empty(), "closed with work in progress");
                        break;
                    }
                    Got::Nothing if stop.load(Ordering::SeqCst) && working.is_empty() => break,
                    Got::Nothing => {}
                    other => panic!("member got {other:?}"),
                }
            }
            per_connection.push(n);
            // Wait for the node's next process (the test clears the port while it is down).
            while port.load(Ordering::SeqCst) == p && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        per_connection
    })
}

/// Restarts node `i`: SIGTERM (it drains and leaves), then a new process on the network.
/// Returns the old process's warnings, for the diagnosis of a lost request.
fn restart(nodes: &mut [IrisProcess], i: usize, port: &AtomicU16) -> Vec<String> {
    port.store(0, Ordering::SeqCst);
    let (_, status) = nodes[i].terminate();
    assert!(status.success(), "node {i} did not stop cleanly: {status}");
    let warnings = warnings(&nodes[i]);
    let key = fixture("net-pkcs8.pem");
    nodes[i] = IrisProcess::launch(&["--net", NET, "--rsa", &key, "--discovery-ports", PORTS]);
    nodes[i].wait_port();
    nodes[i].wait_line("converged with 2 remote connections");
    port.store(nodes[i].port, Ordering::SeqCst);
    warnings
}

/// The WARN and ERROR lines of a node that has exited.
fn warnings(node: &IrisProcess) -> Vec<String> {
    node.rest_of_log()
        .into_iter()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect()
}

/// Waits until `answered` has grown by `n`.
fn flows(answered: &AtomicU64, n: u64) {
    let target = answered.load(Ordering::SeqCst) + n;
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered.load(Ordering::SeqCst) < target {
        assert!(Instant::now() < deadline, "the member is not served again");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn a_rolling_restart_of_a_services_nodes_fails_no_request() {
    let mut nodes = network(NET, 3, PORTS);
    let stop = Arc::new(AtomicBool::new(false));
    let ports = [1, 2].map(|i| Arc::new(AtomicU16::new(nodes[i].port)));
    let answered = [(); 2].map(|_| Arc::new(AtomicU64::new(0)));
    let members: Vec<_> = (0..2)
        .map(|k| member(ports[k].clone(), stop.clone(), answered[k].clone()))
        .collect();
    let mut c = RawClient::connect(nodes[0].port, "");
    // The members' subscriptions take a moment to reach the trees.
    flows_after_asking(&mut c, &answered);
    let requester = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut sent, mut failed, mut timed_out) = (0u64, Vec::new(), Vec::new());
            let mut sent_at = std::collections::BTreeMap::new();
            let mut pending = std::collections::BTreeSet::new();
            let mut last_reply = Instant::now();
            while !stop.load(Ordering::SeqCst) || !pending.is_empty() {
                // Every request gets a REPLY within its 5 s: past that, something is lost.
                if last_reply.elapsed() > Duration::from_secs(10) {
                    failed.push(format!("no REPLY for {pending:?}"));
                    break;
                }
                if !stop.load(Ordering::SeqCst) {
                    sent += 1;
                    c.send(ClientPacket::Request {
                        id: sent,
                        cluster: CLUSTER.into(),
                        request: b(&format!("r{sent}")),
                        timeout_ms: 5000,
                    });
                    pending.insert(sent);
                    sent_at.insert(sent, Instant::now());
                }
                while let Got::Packet(p) = c.poll(Duration::from_millis(5)) {
                    last_reply = Instant::now();
                    match p {
                        NodePacket::Reply {
                            id,
                            outcome: ReplyOutcome::TimedOut,
                        } if pending.remove(&id) => timed_out.push((id, sent_at[&id])),
                        NodePacket::Reply { id, outcome } if pending.remove(&id) => {
                            if outcome != ReplyOutcome::Success(b(&format!("r{id}"))) {
                                failed.push(format!("request {id}: {outcome:?}"));
                            }
                        }
                        other => failed.push(format!("unexpected {other:?}")),
                    }
                }
            }
            (sent, failed, timed_out)
        })
    };
    let start = Instant::now();
    let mut diagnosis = Vec::new();
    for (k, i) in [(0, 1), (1, 2)] {
        flows(&answered[k], 20);
        let at = start.elapsed();
        let old = restart(&mut nodes, i, &ports[k]);
        diagnosis.push(format!(
            "node {i}: SIGTERM at {at:?}, its new process converged at {:?}; its warnings: {old:?}",
            start.elapsed()
        ));
        flows(&answered[k], 20);
    }
    stop.store(true, Ordering::SeqCst);
    let (sent, failed, timed_out) = requester.join().expect("requester");
    let timed_out: Vec<String> = timed_out
        .into_iter()
        .map(|(id, at)| format!("{id} (sent at {:?})", at.saturating_duration_since(start)))
        .collect();
    if !timed_out.is_empty() {
        for (i, node) in nodes.iter_mut().enumerate() {
            let _ = node.terminate();
            diagnosis.push(format!("node {i} now: its warnings {:?}", warnings(node)));
        }
    }
    let served: Vec<Vec<u64>> = members
        .into_iter()
        .map(|m| m.join().expect("member"))
        .collect();
    eprintln!(
        "rolling restart: {sent} requests, {} timed out, {} failed",
        timed_out.len(),
        failed.len()
    );
    assert!(sent >= 100, "only {sent} requests");
    // Exactly one REPLY each, and none a wrong answer.
    assert!(
        failed.is_empty(),
        "{} of {sent} failed: {failed:?}",
        failed.len()
    );
    // None lost. (Until the dial and link fixes of 2026-12-07 about one run in 20 lost one
    // request sent within 5 ms of the first SIGTERM. Two rarer losses since, each a request
    // that reached the leaving node as it finished, with no link left to pass it on by:
    // once as it chose an unlinked neighbour over its own member (a760ba8), once as the
    // close that came with it closed the node's last links (`mesh/leave.rs`).) The message
    // names when each lost request went and what the nodes warned of. Without the drain
    // every restart loses what its member holds (~6 here).
    assert!(
        timed_out.is_empty(),
        "{} of {sent} timed out: {timed_out:?}\n{}",
        timed_out.len(),
        diagnosis.join("\n")
    );
    // Each member served before and after its node's restart.
    for (k, per) in served.iter().enumerate() {
        assert!(
            per.len() >= 2 && per.iter().all(|&n| n > 0),
            "member {k}: {per:?}"
        );
    }
}

/// Asks until both members have answered: the trees have formed.
fn flows_after_asking(c: &mut RawClient, answered: &[Arc<AtomicU64>; 2]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut id = 1_000_000;
    while answered.iter().any(|a| a.load(Ordering::SeqCst) == 0) {
        assert!(Instant::now() < deadline, "no member became reachable");
        id += 1;
        c.send(ClientPacket::Request {
            id,
            cluster: CLUSTER.into(),
            request: b("hello"),
            timeout_ms: 100,
        });
        assert!(matches!(c.recv(), NodePacket::Reply { .. }));
    }
}
