//! Nodes of one network on loopback: secure links over real sockets, the overlay converging,
//! and the relay port opening only after that.

use crate::rt::driver::{NetworkOptions, NodeHandle, NodeOptions};
use iris_proto::NetworkKey;
use iris_proto::{MeshConfig, MeshEvent, Security};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

fn key(name: &str) -> Arc<NetworkKey> {
    let path = format!(
        "{}/../iris-proto/tests/fixtures/{name}",
        crate::rt::MANIFEST_DIR
    );
    Arc::new(NetworkKey::from_bytes(&std::fs::read(path).unwrap()).unwrap())
}

/// Options of a node of network "itest" with fast overlay timers, joining through `seeds`.
fn options(seeds: &[SocketAddr], key: Arc<NetworkKey>) -> NodeOptions {
    let mut mesh = MeshConfig::new("itest", "127.0.0.1:0".parse().unwrap());
    mesh.seeds = seeds.to_vec();
    mesh.overlay.heartbeat_period = Duration::from_millis(500);
    mesh.overlay.boot_quiet = Duration::from_secs(1);
    mesh.overlay.change_quiet = Duration::from_millis(500);
    NodeOptions {
        port: 0,
        network: Some(NetworkOptions {
            bind: "127.0.0.1:0".parse().unwrap(),
            advertise: None,
            mesh,
            security: Security::Rsa(key),
            events: None,
            discover: crate::rt::discovery::Discover::None,
            discovery_ports: Vec::new(),
            seed_names: Vec::new(),
            link_buffer: crate::rt::driver::DEFAULT_LINK_BUFFER,
        }),
        ..NodeOptions::default()
    }
}

/// A node of network "itest", once it serves, with its mesh events.
fn node(seeds: &[SocketAddr], key: Arc<NetworkKey>) -> (NodeHandle, Receiver<MeshEvent>) {
    let mut opts = options(seeds, key);
    let (tx, rx) = channel();
    if let Some(net) = opts.network.as_mut() {
        net.events = Some(tx);
    }
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
    crate::rt::block_on(async {
        for n in [&a, &b, &c] {
            let conn = crate::rt::client::connect(n.port())
                .await
                .expect("relay is open");
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
fn a_node_refused_by_its_seed_says_so_and_does_not_serve_alone() {
    let (a, _a_events) = node(&[], key("net-pkcs8.pem"));
    let seed = a.peer_addr().unwrap();
    // B holds another key. It never becomes ready, so it runs on a thread of its own here
    // (`NodeHandle::spawn` would wait for its relay port).
    let mut opts = options(&[seed], key("other-pkcs8.pem"));
    let (tx, b_events) = channel();
    if let Some(net) = opts.network.as_mut() {
        net.events = Some(tx);
    }
    let (ready_tx, ready_rx) = async_channel::bounded(1);
    let (stop_tx, stop_rx) = async_channel::bounded::<String>(1);
    let b = std::thread::spawn(move || {
        use iris_driver::runtime::Runtime;
        crate::rt::Rt::block_on(crate::rt::driver::run(opts, Some(ready_tx), async move {
            stop_rx.recv().await.unwrap_or_default()
        }))
        .unwrap()
    });
    let mut failed = false;
    let mut refusals = 0;
    let mut converged = false;
    while !(converged && refusals >= 2) {
        match wait_for(&b_events, |_| true) {
            MeshEvent::HandshakeFailed { reason, addr, .. } => {
                assert_eq!(addr, Some(seed));
                failed |= reason.contains("key");
            }
            MeshEvent::SeedsRefused { reasons } => {
                assert_eq!(reasons.len(), 1);
                assert_eq!(reasons[0].0, seed);
                refusals += 1;
            }
            MeshEvent::Converged { peers } => {
                assert_eq!(peers, 0);
                // Refused, it does not pass for a network of one: still not ready after.
                converged = true;
                refusals = 0;
            }
            _ => {}
        }
    }
    assert!(failed, "the handshake failure named the key");
    assert!(
        matches!(ready_rx.try_recv(), Err(async_channel::TryRecvError::Empty)),
        "B opened its relay port"
    );
    stop_tx.try_send("test over".into()).unwrap();
    b.join().unwrap().expect("B stops cleanly");
}

/// Answers with the request, prefixed by the name of the node it runs on.
struct Tagged(&'static str);

impl crate::rt::client::ServiceHandler for Tagged {
    async fn handle_request(&self, request: bytes::Bytes) -> Result<bytes::Bytes, String> {
        let mut out = self.0.as_bytes().to_vec();
        out.extend_from_slice(&request);
        Ok(out.into())
    }

    async fn handle_tunnel(&self, tunnel: crate::rt::client::Tunnel) {
        // Echoes every message until the builder closes.
        while let Ok(m) = tunnel.recv(Duration::from_secs(10)).await {
            if tunnel.send(m, Duration::from_secs(10)).await.is_err() {
                break;
            }
        }
    }
}

#[test]
fn requests_and_tunnels_cross_nodes_over_sockets() {
    use crate::rt::client::{Error, ServiceLimits};
    let k = key("net-pkcs8.pem");
    let (a, a_events) = node(&[], k.clone());
    let seed = a.peer_addr().unwrap();
    let (b, _b_events) = node(&[seed], k);
    wait_for(&a_events, |e| {
        matches!(e, MeshEvent::Converged { peers: 1 })
    });
    crate::rt::block_on(async {
        let service =
            crate::rt::client::register(b.port(), "tagged", Tagged("b:"), ServiceLimits::default())
                .await
                .unwrap();
        let client = crate::rt::client::connect(a.port()).await.unwrap();
        // The member's node joins the cluster's trees as it registers; until its subscribe
        // has reached them a request finds nobody and times out. It must be answered
        // within a few tries.
        let mut answered = None;
        for _ in 0..20 {
            match client
                .request("tagged", "hello", Duration::from_millis(250))
                .await
            {
                Ok(reply) => {
                    answered = Some(reply);
                    break;
                }
                Err(Error::TimedOut) => continue,
                Err(e) => panic!("request failed: {e}"),
            }
        }
        assert_eq!(answered.as_deref(), Some(&b"b:hello"[..]));
        // Once reachable, every request is answered by the member on node b.
        for i in 0..100 {
            let body = format!("m{i}");
            let reply = client
                .request("tagged", body.clone(), Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(reply, format!("b:{body}").as_bytes());
        }
        // A tunnel to it carries 4 MiB each way in order, in 64 KiB messages.
        let tunnel = client
            .tunnel("tagged", Duration::from_secs(5))
            .await
            .unwrap();
        for i in 0..64u32 {
            let mut m = vec![(i % 251) as u8; 64 << 10];
            m[..4].copy_from_slice(&i.to_be_bytes());
            tunnel.send(m, Duration::from_secs(10)).await.unwrap();
        }
        for i in 0..64u32 {
            let m = tunnel.recv(Duration::from_secs(10)).await.unwrap();
            assert_eq!(m.len(), 64 << 10);
            assert_eq!(m[..4], i.to_be_bytes());
            assert!(m[4..].iter().all(|&x| x == (i % 251) as u8));
        }
        tunnel.close().await.unwrap();
        client.close().await.unwrap();
        service.close().await.unwrap();
    });
}
