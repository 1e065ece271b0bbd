//! Nodes finding each other with no seeds: host discovery over loopback (the seed's
//! tutorial: two nodes on one machine, no flag but the network and the key), networks
//! that must stay apart, and LAN discovery inside network namespaces this test creates
//! (with no route out of them).

use super::common;

use common::{Got, IrisProcess, fixture};
use iris_proto::relay::{ClientPacket, NodePacket, ReplyOutcome};
use std::process::Command;
use std::time::{Duration, Instant};

// Default ports, and networks that stay apart, are the driver's and the mesh's; a runtime's
// UDP sockets are exercised by every network of its binary (`common::network` finds its
// nodes by host discovery) and by the LAN case, which sends to broadcast addresses.
runtime_independent!(
    the_tutorial_two_nodes_on_one_host_find_each_other_with_no_seed,
    another_key_or_another_network_name_never_joins_and_the_logs_say_why,
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
    // Same name, another key: it hears A's beacons and tries, and is refused.
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
    let at_b = b.wait_line("refused");
    assert!(at_b.contains("WARN") && at_b.contains("key"), "{at_b}");
    let at_c = c.wait_line("every seed refused this node");
    assert!(at_c.contains("ERROR"), "{at_c}");
    let at_c = c.wait_line("refused:");
    assert!(at_c.contains("network"), "{at_c}");
    // A serves alone and never counts either as a peer, through two rounds of B's tries
    // (it retries each 5 s beacon period).
    a.wait_port();
    let mut refusals = 0;
    while refusals < 3 {
        let line = a
            .log
            .recv_timeout(Duration::from_secs(30))
            .expect("A went quiet");
        assert!(!line.contains("converged with 1"), "A joined: {line}");
        if line.contains("refused") {
            refusals += 1;
        }
    }
    assert!(
        a.boot_log.iter().all(|l| !l.contains("converged with 1")),
        "A joined another network"
    );
}

/// Two network namespaces joined by a veth pair (10.231.N.1 and .2 /24), removed on drop.
struct Namespaces {
    names: [String; 2],
}

impl Namespaces {
    /// `None` (with the reason) where namespaces cannot be made (not root, no iproute2).
    fn create() -> Result<Namespaces, String> {
        let tag = std::process::id() % 200;
        let names = [format!("iris-lan-a{tag}"), format!("iris-lan-b{tag}")];
        let ns = Namespaces {
            names: names.clone(),
        };
        let veth = [format!("irisva{tag}"), format!("irisvb{tag}")];
        let ip = |args: &[&str]| -> Result<(), String> {
            let out = Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("ip: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        for n in &names {
            ip(&["netns", "add", n])?;
        }
        ip(&[
            "link", "add", &veth[0], "netns", &names[0], "type", "veth", "peer", "name", &veth[1],
            "netns", &names[1],
        ])?;
        for (i, (n, v)) in names.iter().zip(&veth).enumerate() {
            let addr = format!("10.231.{tag}.{}/24", i + 1);
            ip(&["-n", n, "addr", "add", &addr, "dev", v])?;
            ip(&["-n", n, "link", "set", v, "up"])?;
            ip(&["-n", n, "link", "set", "lo", "up"])?;
        }
        Ok(ns)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

#[test]
fn lan_discovery_finds_a_node_on_another_host_inside_namespaces() {
    let ns = match Namespaces::create() {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!("skipped: cannot create network namespaces here ({why})");
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
