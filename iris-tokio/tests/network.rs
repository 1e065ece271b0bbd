//! Nodes of one network on loopback: secure links over real sockets, the overlay converging,
//! and the relay port opening only after that.

use iris_proto::link::NetworkKey;
use iris_proto::{MeshConfig, MeshEvent, Security};
use iris_tokio::client::Connection;
use iris_tokio::driver::{NetworkOptions, NodeHandle, NodeOptions};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

fn key(name: &str) -> Arc<NetworkKey> {
    let path = format!(
        "{}/../iris-proto/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    Arc::new(NetworkKey::from_bytes(&std::fs::read(path).unwrap()).unwrap())
}

/// A node of network "itest" with fast overlay timers, joining through `seeds`.
fn node(seeds: &[SocketAddr], key: Arc<NetworkKey>) -> (NodeHandle, Receiver<MeshEvent>) {
    let mut mesh = MeshConfig::new("itest", "127.0.0.1:0".parse().unwrap());
    mesh.seeds = seeds.to_vec();
    mesh.overlay.heartbeat_period = Duration::from_millis(500);
    mesh.overlay.boot_quiet = Duration::from_secs(1);
    mesh.overlay.change_quiet = Duration::from_millis(500);
    let (tx, rx) = channel();
    let opts = NodeOptions {
        port: 0,
        network: Some(NetworkOptions {
            bind: "127.0.0.1:0".parse().unwrap(),
            advertise: None,
            mesh,
            security: Security::Rsa(key),
            events: Some(tx),
        }),
        ..NodeOptions::default()
    };
    (NodeHandle::spawn(opts).expect("node starts"), rx)
}

/// Waits for an event matching `want` (events are pushed as they happen: no polling).
fn wait_for(rx: &Receiver<MeshEvent>, want: impl Fn(&MeshEvent) -> bool) -> MeshEvent {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = rx.recv_timeout(left).expect("the awaited event never came");
        if want(&e) {
            return e;
        }
    }
}

#[test]
fn three_nodes_converge_over_secure_links_and_then_serve() {
    let k = key("net-pkcs8.pem");
    let (a, a_events) = node(&[], k.clone());
    // `spawn` returns once the relay port is open, which waits for convergence: the
    // event is already there.
    assert!(matches!(
        a_events.try_recv(),
        Ok(MeshEvent::Converged { peers: 0 })
    ));
    let seed = a.peer_addr().expect("a networked node has a peer address");
    assert!(seed.ip().is_loopback());
    let (b, b_events) = node(&[seed], k.clone());
    let (c, c_events) = node(&[seed], k);
    for events in [&a_events, &b_events, &c_events] {
        wait_for(events, |e| matches!(e, MeshEvent::Converged { peers: 2 }));
    }
    // Every node serves relay clients on its own port.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for n in [&a, &b, &c] {
            let conn = Connection::connect(n.port()).await.expect("relay is open");
            conn.close().await.unwrap();
        }
    });
    // A node that leaves is noticed by the others.
    drop(b);
    for events in [&a_events, &c_events] {
        wait_for(events, |e| matches!(e, MeshEvent::PeerDown(_)));
        wait_for(events, |e| matches!(e, MeshEvent::Converged { peers: 1 }));
    }
}

#[test]
fn a_node_with_another_key_stays_alone() {
    let (a, _a_events) = node(&[], key("net-pkcs8.pem"));
    let seed = a.peer_addr().unwrap();
    let (_b, b_events) = node(&[seed], key("other-pkcs8.pem"));
    // It served once quiet, alone: the handshakes with the network failed.
    let mut refused = false;
    loop {
        match wait_for(&b_events, |_| true) {
            MeshEvent::LinkClosed { reason, peer, .. } => {
                assert_eq!(peer, None, "never identified");
                refused |= reason.contains("signature") || reason.contains("handshake");
            }
            MeshEvent::Converged { peers } => {
                assert_eq!(peers, 0);
                break;
            }
            _ => {}
        }
    }
    assert!(refused, "a handshake failure was reported");
}
