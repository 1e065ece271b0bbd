//! Nodes finding each other with no seeds: host discovery over loopback (the seed's
//! tutorial: two nodes on one machine, no flag but the network and the key), networks
//! that must stay apart, and LAN discovery inside network namespaces this test creates
//! (with no route out of them).

use super::common;

use common::{Got, IrisProcess, Namespaces, fixture};
use iris_proto::relay::{ClientPacket, NodePacket, ReplyOutcome};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

// Default ports, and networks that stay apart, are the driver's and the mesh's; a runtime's
// UDP sockets are exercised by every network of its binary (`common::network` finds its
// nodes by host discovery) and by the LAN case, which sends to broadcast addresses.
runtime_independent!(
    the_tutorial_two_nodes_on_one_host_find_each_other_with_no_seed,
    another_key_or_another_network_name_never_joins_and_the_logs_say_why,
    forged_beacons_make_a_node_dial_nothing,
);

/// The address a networked node's log says its peers dial.
fn peer_addr(node: &IrisProcess) -> String {
    node.wait_line("peer listener on ")
        .split("advertised as ")
        .nth(1)
        .expect("advertised address")
        .trim()
        .to_string()
}

fn the_tutorial_two_nodes_on_one_host_find_each_other_with_no_seed() {
    // The well-known discovery ports, as a user's nodes would use them.
    let name = format!("tutorial {}", std::process::id());
    let key = fixture("net-pkcs8.pem");
    let mut a = IrisProcess::launch(&["--net", &name, "--rsa", &key]);
    let mut b = IrisProcess::launch(&["--net", &name, "--rsa", &key]);
    a.wait_port();
    b.wait_port();
    for n in [&a, &b] {
        n.wait_line("converged with 1 remote connections");
    }
    assert!(
        a.boot_log
            .iter()
            .chain(&b.boot_log)
            .any(|l| l.contains("discovered node")),
        "neither node said whom it discovered"
    );
    // A service on one, a client on the other.
    let mut member = a.connect("tutorial");
    let mut client = b.connect("");
    let deadline = Instant::now() + Duration::from_secs(20);
    for id in 0.. {
        assert!(Instant::now() < deadline, "the service was never reached");
        client.send(ClientPacket::Request {
            id,
            cluster: "tutorial".into(),
            request: "hello".into(),
            timeout_ms: 500,
        });
        if let Got::Packet(NodePacket::Request {
            id: rid, request, ..
        }) = member.poll(Duration::from_millis(600))
        {
            member.send(ClientPacket::Reply {
                id: rid,
                outcome: Ok(request),
            });
            assert_eq!(
                client.recv(),
                NodePacket::Reply {
                    id,
                    outcome: ReplyOutcome::Success("hello".into())
                }
            );
            break;
        }
        assert!(matches!(
            client.recv(),
            NodePacket::Reply {
                outcome: ReplyOutcome::TimedOut,
                ..
            }
        ));
    }
}

fn another_key_or_another_network_name_never_joins_and_the_logs_say_why() {
    let ports = ["--discovery-ports", "23201,23202,23203"];
    let mut a = IrisProcess::launch(
        &[
            &["--net", "apart", "--rsa", &fixture("net-pkcs8.pem")][..],
            &ports,
        ]
        .concat(),
    );
    let seed = peer_addr(&a);
    // Same name, another key: it hears A's beacons, cannot authenticate them, and says so
    // (it never dials A).
    let b = IrisProcess::launch(
        &[
            &["--net", "apart", "--rsa", &fixture("other-pkcs8.pem")][..],
            &ports,
        ]
        .concat(),
    );
    // Another name, A given as its seed: refused at the handshake.
    let c = IrisProcess::launch(&[
        "--net",
        "elsewhere",
        "--rsa",
        &fixture("net-pkcs8.pem"),
        "--seed",
        &seed,
        "--discovery-ports",
        "23201,23202,23203",
    ]);
    let at_b = b.wait_line("not made with its key");
    assert!(
        at_b.contains("WARN") && at_b.contains("another network key"),
        "{at_b}"
    );
    let at_c = c.wait_line("every seed refused this node");
    assert!(at_c.contains("ERROR"), "{at_c}");
    let at_c = c.wait_line("refused:");
    assert!(at_c.contains("network"), "{at_c}");
    // A serves alone and never counts either as a peer, through rounds of C's tries (it
    // retries its seed) and B's beacons, which A cannot authenticate either.
    a.wait_port();
    let (mut refusals, mut forged) = (
        0,
        a.boot_log
            .iter()
            .any(|l| l.contains("not made with its key")),
    );
    while refusals < 3 || !forged {
        let line = a
            .log
            .recv_timeout(Duration::from_secs(30))
            .expect("A went quiet");
        assert!(!line.contains("converged with 1"), "A joined: {line}");
        if line.contains("refused") {
            refusals += 1;
        }
        forged |= line.contains("not made with its key");
    }
    assert!(
        a.boot_log.iter().all(|l| !l.contains("converged with 1")),
        "A joined another network"
    );
}

/// Someone who knows a network's name but not its key: it captured one genuine beacon
/// (the name's hash is public in every beacon) and sends beacons under fresh ids that name
/// an address the test listens on, in the current layout (the MAC cannot be made) and in
/// the earlier one (no MAC: it made a node dial the address 12,977 times in 6 s). The node
/// counts both kinds and never connects there. (Replays: `mesh::discovery`'s tests.)
fn forged_beacons_make_a_node_dial_nothing() {
    use std::net::{TcpListener, UdpSocket};
    // The test holds the second discovery port, so the node takes the first and beacons
    // to the test too.
    let ports = [common::own_port(23401), common::own_port(23402)];
    let listen = UdpSocket::bind(("127.0.0.1", ports[1])).unwrap();
    listen
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let key = fixture("net-pkcs8.pem");
    let flags = [
        "--net",
        "forged",
        "--rsa",
        &key,
        "--discovery-ports",
        "23401,23402",
    ];
    let node = IrisProcess::launch(&[&flags[..], &["--metrics", "127.0.0.1:0"]].concat());
    let mut genuine = [0u8; 512];
    let (len, _) = listen.recv_from(&mut genuine).expect("the node's beacon");
    let genuine = &genuine[..len];
    // magic 8, version 2, network hash 16, id 16, incarnation 8, number 8, address 7
    // (IPv4), peers 4, MAC 16.
    assert_eq!((len, &genuine[..8]), (85, &b"irisbcn2"[..]));
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let SocketAddr::V4(bait) = trap.local_addr().unwrap() else {
        unreachable!("bound on IPv4")
    };
    let mut addr = vec![4];
    addr.extend_from_slice(&bait.ip().octets());
    addr.extend_from_slice(&bait.port().to_be_bytes());
    let header = &genuine[8..26]; // version and network hash
    let forged = |id: u128| {
        let mut b = b"irisbcn2".to_vec();
        b.extend_from_slice(header);
        b.extend_from_slice(&id.to_be_bytes());
        b.extend_from_slice(&genuine[42..58]); // incarnation and number, any will do
        b.extend_from_slice(&addr);
        b.extend_from_slice(&0u32.to_be_bytes()); // alone: a node would join through it
        b.extend_from_slice(&id.to_le_bytes()); // a made-up MAC
        b
    };
    let old = |id: u128| {
        let mut b = b"irisbcn1".to_vec();
        b.extend_from_slice(header);
        b.extend_from_slice(&id.to_be_bytes());
        b.extend_from_slice(&addr);
        b.extend_from_slice(&0u32.to_be_bytes());
        b
    };
    let metrics = common::metrics_addr(&node);
    let count = |body: &str, event: &str| {
        common::sample(body, &format!("iris_discovery_total{{event=\"{event}\"}}"))
    };
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    // Until the node has counted at least 200 of each kind, 100 of each at a time.
    for round in 0u128.. {
        for i in 0..100 {
            let id = (round << 64) | (i + 1);
            for b in [forged(id), old(id)] {
                udp.send_to(&b, ("127.0.0.1", ports[0])).unwrap();
            }
        }
        let body = common::scrape(&metrics);
        let counts = ["forged", "foreign"].map(|e| count(&body, e));
        if counts.iter().all(|&n| n >= 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "counted (forged, foreign) {counts:?}"
        );
    }
    // The node judged every beacon it counted before answering the scrape: a dial would
    // have been started by then, and a connect to loopback lands at once.
    match trap.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the node dialed the forger's address: {other:?}"),
    }
    assert_eq!(count(&common::scrape(&metrics), "joined"), 0);
}

#[test]
fn lan_discovery_finds_a_node_on_another_host_inside_namespaces() {
    let ns = match Namespaces::create("lan", 231) {
        Ok(ns) => ns,
        Err(why) => {
            common::skip_without_namespaces(&why);
            return;
        }
    };
    let tag = std::process::id() % 200;
    let key = fixture("net-pkcs8.pem");
    let mut nodes: Vec<IrisProcess> = ns
        .names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let bind = format!("10.231.{tag}.{}:7000", i + 1);
            IrisProcess::launch_in(
                Some(n),
                &[
                    "--net",
                    "lan test",
                    "--rsa",
                    &key,
                    "--discover",
                    "lan",
                    "--peer-bind",
                    &bind,
                ],
            )
        })
        .collect();
    for n in &mut nodes {
        n.wait_port();
    }
    for n in &nodes {
        n.wait_line("converged with 1 remote connections");
    }
    assert!(
        nodes.iter().any(|n| n
            .boot_log
            .iter()
            .any(|l| l.contains("discovered node 0") || l.contains("discovered node"))),
        "nobody said whom it discovered"
    );
    drop(nodes);
    drop(ns);
}

/// A network namespace with only loopback, and a hosts file and a resolver configuration of
/// its own (`ip netns exec` puts `/etc/netns/NAME/*` over `/etc/*`): names resolve from
/// the hosts file alone, and a lookup of any other name goes nowhere (the name server is
/// this namespace's loopback, where nothing listens). Removed on drop.
struct Resolver {
    name: String,
    dir: std::path::PathBuf,
}

impl Resolver {
    fn create() -> Result<Resolver, String> {
        let name = format!("iris-dns{}", std::process::id() % 10_000);
        let dir = std::path::PathBuf::from("/etc/netns").join(&name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let r = Resolver { name, dir };
        r.hosts(&[]);
        std::fs::write(r.dir.join("resolv.conf"), "nameserver 127.0.0.1\n")
            .map_err(|e| format!("resolv.conf: {e}"))?;
        for args in [
            &["netns", "add", &r.name][..],
            &["-n", &r.name, "link", "set", "lo", "up"],
        ] {
            let out = Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("ip: {e}"))?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
            }
        }
        Ok(r)
    }

    /// Rewrites the hosts file in place (the namespace's processes see it at once): `name`
    /// resolves to each of `addrs`, in order.
    fn hosts(&self, lines: &[(&str, &str)]) {
        let mut text = String::from("127.0.0.1 localhost\n");
        for (addr, name) in lines {
            text.push_str(&format!("{addr} {name}\n"));
        }
        std::fs::write(self.dir.join("hosts"), text).expect("the namespace's hosts file");
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `--seed NAME:PORT` where the name resolves to nothing at first (a Kubernetes headless
/// Service before its pods are up): the node logs it and retries, not fatal; once the name
/// resolves to a dead address and two nodes, it joins through the addresses that answer.
#[test]
fn a_seed_name_is_resolved_again_on_every_retry_and_every_address_is_tried() {
    let dns = match Resolver::create() {
        Ok(r) => r,
        Err(why) => {
            common::skip_without_namespaces(&why);
            return;
        }
    };
    let key = fixture("net-pkcs8.pem");
    let node = |bind: &str, seed: &str| {
        IrisProcess::launch_in(
            Some(&dns.name),
            &[
                "--net",
                "dns seeds",
                "--rsa",
                &key,
                "--discover",
                "none",
                "--peer-bind",
                bind,
                "--seed",
                seed,
            ],
        )
    };
    // Two nodes of a network at 127.0.0.2 and .3 (each the other's seed).
    let a = node("127.0.0.2:7100", "127.0.0.3:7100");
    let b = node("127.0.0.3:7100", "127.0.0.2:7100");
    for n in [&a, &b] {
        n.wait_line("converged with 1 remote connections");
    }
    let seed = "iris-seeds.test:7100";
    let c = node("127.0.0.4:7100", seed);
    let first = c.wait_line("retrying");
    assert!(first.contains("WARN") && first.contains(seed), "{first}");
    // The name now lists an address where nobody listens, then the two nodes.
    let name = "iris-seeds.test";
    dns.hosts(&[
        ("127.0.0.9", name),
        ("127.0.0.2", name),
        ("127.0.0.3", name),
    ]);
    let resolved = c.wait_line("resolves to 127.");
    for addr in ["127.0.0.9:7100", "127.0.0.2:7100", "127.0.0.3:7100"] {
        assert!(resolved.contains(addr), "{resolved}");
    }
    c.wait_line("converged with 2 remote connections");
}
