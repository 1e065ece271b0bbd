//! A network of nodes on both runtimes: a tokio node and two smol nodes (each on its own
//! thread of this process, over real loopback sockets) converge, and clients of each runtime
//! reach members on the others: requests, tunnels, broadcasts.

use bytes::Bytes;
use iris_driver::client::{Error, ServiceHandler, ServiceLimits, Tunnel};
use iris_driver::driver::{NetworkOptions, NodeHandle, NodeOptions};
use iris_driver::runtime::Runtime;
use iris_proto::NetworkKey;
use iris_proto::{MeshConfig, MeshEvent, Security};
use iris_smol::Smol;
use iris_tokio::Tokio;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

fn key() -> Arc<NetworkKey> {
    let path = format!(
        "{}/../iris-proto/tests/fixtures/net-pkcs8.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    Arc::new(NetworkKey::from_bytes(&std::fs::read(path).unwrap()).unwrap())
}

/// A node on runtime `R` of network "mixed" with fast overlay timers, once it serves.
fn node<R: Runtime>(seeds: &[SocketAddr]) -> (NodeHandle<R>, Receiver<MeshEvent>) {
    let mut mesh = MeshConfig::new("mixed", "127.0.0.1:0".parse().unwrap());
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
            security: Security::Rsa(key()),
            events: Some(tx),
            discover: iris_driver::discovery::Discover::None,
            discovery_ports: Vec::new(),
            seed_names: Vec::new(),
            link_buffer: iris_driver::driver::DEFAULT_LINK_BUFFER,
        }),
        ..NodeOptions::default()
    };
    (NodeHandle::<R>::spawn(opts).expect("node starts"), rx)
}

/// Waits for an event matching `want` (events are pushed as they happen: no polling).
fn wait_for(rx: &Receiver<MeshEvent>, want: impl Fn(&MeshEvent) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = rx.recv_timeout(left).expect("the awaited event never came");
        if want(&e) {
            return;
        }
    }
}

/// Answers with the request prefixed by its node's name, echoes tunnels, reports
/// broadcasts.
struct Member {
    name: &'static str,
    heard: async_channel::Sender<(&'static str, Bytes)>,
}

impl ServiceHandler for Member {
    async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
        Ok([self.name.as_bytes(), b":", &request].concat().into())
    }

    async fn handle_broadcast(&self, message: Bytes) {
        let _ = self.heard.try_send((self.name, message));
    }

    async fn handle_tunnel(&self, tunnel: Tunnel) {
        while let Ok(m) = tunnel.recv(Duration::from_secs(10)).await {
            if tunnel.send(m, Duration::from_secs(10)).await.is_err() {
                break;
            }
        }
    }
}

/// Asks `cluster` until a member answers (a member's subscription takes a moment to reach
/// the trees), then returns the answer.
async fn first_answer(c: &iris_driver::client::Connection, cluster: &str) -> Bytes {
    for _ in 0..40 {
        match c.request(cluster, "hi", Duration::from_millis(250)).await {
            Ok(reply) => return reply,
            Err(Error::TimedOut) => continue,
            Err(e) => panic!("request failed: {e}"),
        }
    }
    panic!("no member of {cluster} answered")
}

#[test]
fn tokio_and_smol_nodes_form_one_network_and_serve_each_other() {
    let (a, a_events) = node::<Tokio>(&[]);
    let seed = a.peer_addr().unwrap();
    let (b, _b_events) = node::<Smol>(&[seed]);
    let (c, _c_events) = node::<Smol>(&[seed]);
    wait_for(&a_events, |e| {
        matches!(e, MeshEvent::Converged { peers: 2 })
    });
    let (heard_tx, heard) = async_channel::unbounded();

    // Members: one on the tokio node (a tokio client), one on a smol node (a smol client,
    // in-process); requests from clients of the other runtime reach each.
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let on_a = tokio_rt.block_on(async {
        iris_tokio::client::register(
            a.port(),
            "on-a",
            Member {
                name: "a",
                heard: heard_tx.clone(),
            },
            ServiceLimits::default(),
        )
        .await
        .unwrap()
    });
    let on_b = smol::block_on(async {
        b.register(
            "on-b",
            Member {
                name: "b",
                heard: heard_tx.clone(),
            },
            ServiceLimits::default(),
        )
        .await
        .unwrap()
    });
    // A smol client of node c asks the tokio node's member, a tokio client of node a asks
    // the smol node's member.
    smol::block_on(async {
        let client = iris_smol::client::connect(c.port()).await.unwrap();
        assert_eq!(&first_answer(&client, "on-a").await[..], b"a:hi");
        let t = client.tunnel("on-a", Duration::from_secs(5)).await.unwrap();
        for i in 0..32u32 {
            t.send(vec![i as u8; 64 << 10], Duration::from_secs(10))
                .await
                .unwrap();
        }
        for i in 0..32u32 {
            let m = t.recv(Duration::from_secs(10)).await.unwrap();
            assert!(m.len() == 64 << 10 && m.iter().all(|&x| x == i as u8));
        }
        t.close().await.unwrap();
        client.close().await.unwrap();
    });
    tokio_rt.block_on(async {
        let client = iris_tokio::client::connect(a.port()).await.unwrap();
        assert_eq!(&first_answer(&client, "on-b").await[..], b"b:hi");
        for i in 0..50 {
            let reply = client
                .request("on-b", format!("{i}"), Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(reply, format!("b:{i}").as_bytes());
        }
        // A broadcast from the tokio node reaches the smol node's member.
        client.broadcast("on-b", "to b").await.unwrap();
        client.close().await.unwrap();
    });
    let got = smol::block_on(async {
        iris_driver::runtime::timeout::<Smol, _>(Duration::from_secs(10), heard.recv()).await
    });
    assert_eq!(got, Some(Ok(("b", Bytes::from_static(b"to b")))));
    smol::block_on(on_b.close()).unwrap();
    tokio_rt.block_on(on_a.close()).unwrap();
    for n in [b, c] {
        n.stop("test over").unwrap();
    }
    a.stop("test over").unwrap();
}
