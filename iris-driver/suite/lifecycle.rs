//! The node's life against the real `iris` binary: signals at any moment (a node still
//! joining its network leaves gracefully, a second signal exits at once), and a node whose
//! seed refuses it says so loudly on both sides instead of serving as a network of one.

use super::common;

use bytes::BytesMut;
use common::{IrisProcess, fixture};
use iris_proto::relay::ClientPacket;
use std::time::Duration;

// Refusing a peer of another key is the mesh's, and saying so the driver's; the signals are
// the runtime's, and run everywhere.
runtime_independent!(a_seed_with_another_key_is_a_warning_on_both_sides_and_no_network_of_one);

/// The address a networked node's log says its peers dial.
fn peer_addr(node: &IrisProcess) -> String {
    node.wait_line("peer listener on ")
        .split("advertised as ")
        .nth(1)
        .expect("advertised address")
        .trim()
        .to_string()
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut iris = IrisProcess::start(&[]);
    // A subscriber that never reads, its socket filled: the graceful shutdown waits for it
    // to take its CLOSE (up to the grace period).
    let mut stuck = iris.connect("");
    stuck.send(ClientPacket::Subscribe { topic: "t".into() });
    let mut p = iris.connect("");
    let mut wire = BytesMut::new();
    for _ in 0..256 {
        ClientPacket::Publish {
            topic: "t".into(),
            event: vec![0u8; 64 << 10].into(),
        }
        .encode(&mut wire);
    }
    p.write(&wire);
    iris.kill("TERM");
    iris.wait_line("shutting down");
    let (_, status) = iris.signal("INT");
    // 130: the exit of the second signal, not the graceful path's success.
    assert_eq!(status.code(), Some(130), "{status}");
    drop(stuck);
}

#[test]
fn a_node_still_joining_its_network_leaves_gracefully_on_sigterm() {
    let key = fixture("net-pkcs8.pem");
    let a = IrisProcess::launch(&["--net", "boot test", "--rsa", &key]);
    let seed = peer_addr(&a);
    let mut b = IrisProcess::launch(&[
        "--net",
        "boot test",
        "--rsa",
        &key,
        "--seed",
        &seed,
        "--log",
        "info,iris_driver=debug",
    ]);
    // B has reached A but the overlay has not been quiet for 10 s: its relay port is shut.
    b.wait_line("peer link up");
    let (_, status) = b.signal("TERM");
    assert!(status.success(), "killed instead of leaving: {status}");
    assert!(
        b.boot_log.iter().all(|l| !l.contains("listening on port")),
        "B was not booting any more"
    );
    let rest = b.rest_of_log();
    assert!(
        rest.iter()
            .any(|l| l.contains("shutting down before the relay port opened")),
        "{rest:?}"
    );
    // A hears B leave (a dead peer would take three missed heartbeats to notice, but the
    // leave names it at once).
    a.wait_line("is down");
}

fn a_seed_with_another_key_is_a_warning_on_both_sides_and_no_network_of_one() {
    let a = IrisProcess::launch(&["--net", "keys", "--rsa", &fixture("net-pkcs8.pem")]);
    let seed = peer_addr(&a);
    let b = IrisProcess::launch(&[
        "--net",
        "keys",
        "--rsa",
        &fixture("other-pkcs8.pem"),
        "--seed",
        &seed,
    ]);
    let at_b = b.wait_line(&format!("peer link to {seed} refused"));
    assert!(at_b.contains("WARN"), "{at_b}");
    // The dialing end sees that A accepts none of its keys (HELLO lists their
    // fingerprints) and gives up before anyone signs; A sees the connection cut and says
    // what that may mean.
    assert!(
        at_b.contains("holds none of this node's network keys"),
        "{at_b}"
    );
    let at_a = a.wait_line("peer link from 127.0.0.1");
    assert!(at_a.contains("WARN") && at_a.contains("refused"), "{at_a}");
    assert!(
        at_a.contains("wrong network key") || at_a.contains("another network key"),
        "{at_a}"
    );
    // B says at error level on each retry that it is on its own because its seed refused
    // it, and never opens its relay port: not before its overlay converges (alone, after
    // 10 s of quiet), nor on the next retry after that.
    let first = b.wait_line("every seed refused this node");
    assert!(first.contains("ERROR"), "{first}");
    let mut errors = 1;
    let mut converged = false;
    while !(converged && errors >= 2) {
        let line = b
            .log
            .recv_timeout(Duration::from_secs(30))
            .expect("B went quiet");
        assert!(
            !line.contains("listening on port"),
            "B serves alone: {line}"
        );
        if line.contains("every seed refused this node") {
            assert!(line.contains("ERROR"), "{line}");
            errors += 1;
        }
        if line.contains("overlay converged") {
            converged = true;
            errors = 0;
        }
    }
}
