//! The relay protocol between clients of different `iris` processes: three nodes of one
//! network on loopback, found by host discovery, with raw clients that control every byte.
//! Each test boots its own network (about 3 s: a node in a network serves once its overlay
//! has been quiet that long) on its own discovery ports.

use super::common;

use bytes::Bytes;
use common::{Got, RawClient, b, build_tunnel, network};
use iris_proto::relay::client::Reassembly;
use iris_proto::relay::{ClientPacket, NodePacket, ReplyOutcome};
use std::time::{Duration, Instant};

// What a crashed or leaving node means for the requests and events of the others is the
// core's (the origin's deadlines, repair, a leaving node's drain). On a runtime, a peer link
// that ends is one more end of a stream, read and closed as every case here reads and
// closes them.
runtime_independent!(
    kill_9_of_a_member_node_answers_its_pending_requests_once_and_the_rest_serve_on,
    sigterm_of_a_node_loses_nothing_it_sent_to_the_survivors,
    a_node_stopped_for_12_s_resumes_with_its_peers_and_trees,
    a_node_cut_off_for_20_s_reaches_the_others_within_seconds_of_the_heal,
);

fn request(id: u64, cluster: &str, timeout_ms: u64) -> ClientPacket {
    ClientPacket::Request {
        id,
        cluster: cluster.into(),
        request: b(&format!("q{id}")),
        timeout_ms,
    }
}

fn id_of(p: &NodePacket) -> u64 {
    match p {
        NodePacket::Reply { id, .. } => *id,
        other => panic!("expected a reply, got {other:?}"),
    }
}

/// Until every member has one, broadcasts probes to `cluster` from `sender`: a member on
/// another node gets broadcasts once its node's subscription has reached the cluster's
/// trees. Drains what the probes left.
fn await_trees(sender: &mut RawClient, cluster: &str, members: &mut [&mut RawClient]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut reached = vec![false; members.len()];
    while !reached.iter().all(|&r| r) {
        assert!(Instant::now() < deadline, "trees never reached {reached:?}");
        sender.send(ClientPacket::Broadcast {
            cluster: cluster.into(),
            message: b("probe"),
        });
        for (m, r) in members.iter_mut().zip(reached.iter_mut()) {
            while let Got::Packet(p) = m.poll(Duration::from_millis(100)) {
                assert_eq!(
                    p,
                    NodePacket::Broadcast {
                        message: b("probe")
                    }
                );
                *r = true;
            }
        }
    }
    for m in members.iter_mut() {
        while let Got::Packet(_) = m.poll(Duration::from_millis(200)) {}
    }
}

/// Answers every request it gets with `answer(request)` until `n` are answered.
fn serve(m: &mut RawClient, n: usize, answer: impl Fn(&Bytes) -> Bytes) {
    for _ in 0..n {
        let NodePacket::Request { id, request, .. } = m.recv() else {
            panic!("expected a request");
        };
        m.send(ClientPacket::Reply {
            id,
            outcome: Ok(answer(&request)),
        });
    }
}

#[test]
fn every_relay_operation_works_between_clients_of_different_processes() {
    let nodes = network("multinode ops", 3, "23101,23102,23103");
    let (n0, n1, n2) = (&nodes[0], &nodes[1], &nodes[2]);
    let mut m1 = n1.connect("svc");
    let mut m2 = n2.connect("svc");
    let mut plain1 = n1.connect("");
    let mut c = n0.connect("");
    await_trees(&mut c, "svc", &mut [&mut m1, &mut m2]);

    // Broadcast: each member on each other node once, plain clients never.
    for i in 0..20 {
        c.send(ClientPacket::Broadcast {
            cluster: "svc".into(),
            message: b(&format!("b{i}")),
        });
    }
    for m in [&mut m1, &mut m2] {
        let mut got: Vec<Bytes> = (0..20)
            .map(|_| match m.recv() {
                NodePacket::Broadcast { message } => message,
                other => panic!("{other:?}"),
            })
            .collect();
        got.sort();
        let mut want: Vec<Bytes> = (0..20).map(|i| b(&format!("b{i}"))).collect();
        want.sort();
        assert_eq!(got, want);
        m.expect_silence(Duration::from_millis(200));
    }
    plain1.expect_silence(Duration::from_millis(10));

    // Requests are balanced over both members; each gets exactly one REPLY, empty
    // successes and faults intact.
    for id in 0..40 {
        c.send(request(id, "svc", 5000));
    }
    let count = |m: &mut RawClient| {
        let mut n = 0;
        while let Got::Packet(NodePacket::Request { id, request, .. }) =
            m.poll(Duration::from_millis(1500))
        {
            let outcome = match &request[..] {
                b"q0" => Ok(Bytes::new()),
                b"q1" => Err("kaput".into()),
                _ => Ok(request.clone()),
            };
            m.send(ClientPacket::Reply { id, outcome });
            n += 1;
        }
        n
    };
    let served = std::thread::scope(|s| {
        let a = s.spawn(|| count(&mut m1));
        let b2 = s.spawn(|| count(&mut m2));
        (a.join().unwrap(), b2.join().unwrap())
    });
    assert_eq!(served.0 + served.1, 40);
    assert!(served.0 > 0 && served.1 > 0, "unbalanced: {served:?}");
    let mut replies: Vec<NodePacket> = (0..40).map(|_| c.recv()).collect();
    replies.sort_by_key(id_of);
    for (id, r) in replies.iter().enumerate() {
        let want = match id {
            0 => ReplyOutcome::Success(Bytes::new()),
            1 => ReplyOutcome::Fault("kaput".into()),
            _ => ReplyOutcome::Success(b(&format!("q{id}"))),
        };
        assert_eq!(
            *r,
            NodePacket::Reply {
                id: id as u64,
                outcome: want
            }
        );
    }
    c.expect_silence(Duration::from_millis(200));

    // A silent member and a cluster nobody serves: one timed-out REPLY each, at the
    // deadline, not before; the member got the requester's timeout unchanged.
    let mut silent = n2.connect("silent");
    await_trees(&mut c, "silent", &mut [&mut silent]);
    let t = Instant::now();
    c.send(request(100, "silent", 500));
    c.send(request(101, "nobody-anywhere", 500));
    assert!(matches!(
        silent.recv(),
        NodePacket::Request {
            timeout_ms: 500,
            ..
        }
    ));
    let mut got = [c.recv(), c.recv()];
    got.sort_by_key(id_of);
    for (p, id) in got.iter().zip([100, 101]) {
        assert_eq!(
            *p,
            NodePacket::Reply {
                id,
                outcome: ReplyOutcome::TimedOut
            }
        );
    }
    assert!(t.elapsed() >= Duration::from_millis(500), "timed out early");
    // The member's late answer is ignored.
    silent.send(ClientPacket::Reply {
        id: 0,
        outcome: Ok(b("late")),
    });
    c.expect_silence(Duration::from_millis(300));

    // Publish/subscribe across nodes, and unsubscribe.
    let mut sub = n2.connect("");
    sub.send(ClientPacket::Subscribe {
        topic: "news".into(),
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "the subscription never took");
        c.send(ClientPacket::Publish {
            topic: "news".into(),
            event: b("probe"),
        });
        if let Got::Packet(_) = sub.poll(Duration::from_millis(100)) {
            break;
        }
    }
    while let Got::Packet(_) = sub.poll(Duration::from_millis(200)) {}
    c.send(ClientPacket::Publish {
        topic: "news".into(),
        event: b("e1"),
    });
    assert_eq!(
        sub.recv(),
        NodePacket::Publish {
            topic: "news".into(),
            event: b("e1")
        }
    );
    sub.send(ClientPacket::Unsubscribe {
        topic: "news".into(),
    });
    // The unsubscribe is processed before this request (one connection, in order): once
    // it is answered, no later event may come.
    let mut echo = n0.connect("echo");
    await_trees(&mut sub, "echo", &mut [&mut echo]);
    sub.send(request(7, "echo", 5000));
    serve(&mut echo, 1, |r| r.clone());
    assert_eq!(id_of(&sub.recv()), 7);
    c.send(ClientPacket::Publish {
        topic: "news".into(),
        event: b("e2"),
    });
    sub.expect_silence(Duration::from_millis(500));

    // A tunnel to a member on another node: 16 MiB in 64 KiB chunks within the allowance,
    // intact; then a close reaches the other end.
    let mut tm = n1.connect("tun");
    await_trees(&mut c, "tun", &mut [&mut tm]);
    build_tunnel(&mut c, &mut tm, "tun");
    let message: Bytes = (0..16u32 << 20)
        .map(|i| (i * 31 % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let mut allowance: i64 = 4 << 20;
    let (got, mut tm) = std::thread::scope(|s| {
        let reader = s.spawn(move || {
            let mut r = Reassembly::default();
            loop {
                match tm.recv() {
                    NodePacket::TunTransfer {
                        tun_id: 9,
                        size_or_cont,
                        payload,
                    } => {
                        if let Some(msg) = r.push(size_or_cont, &payload, 64 << 20).message {
                            return (msg, tm);
                        }
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        });
        for (size_or_cont, chunk) in iris_proto::relay::client::chunks(&message, 65536) {
            while allowance < chunk.len() as i64 {
                match c.recv() {
                    NodePacket::TunAllow { tun_id: 5, space } => allowance += space as i64,
                    other => panic!("unexpected {other:?}"),
                }
            }
            allowance -= chunk.len() as i64;
            c.send(ClientPacket::TunTransfer {
                tun_id: 5,
                size_or_cont,
                payload: chunk,
            });
        }
        reader.join().unwrap()
    });
    assert!(got == message, "16 MiB message corrupted");
    c.send(ClientPacket::TunClose { tun_id: 5 });
    loop {
        match c.recv() {
            NodePacket::TunAllow { tun_id: 5, .. } => {}
            other => {
                assert_eq!(
                    other,
                    NodePacket::TunClose {
                        tun_id: 5,
                        reason: "".into()
                    }
                );
                break;
            }
        }
    }
    assert_eq!(
        tm.recv(),
        NodePacket::TunClose {
            tun_id: 9,
            reason: "".into()
        }
    );
}

fn kill_9_of_a_member_node_answers_its_pending_requests_once_and_the_rest_serve_on() {
    let nodes = network("multinode kill", 3, "23111,23112,23113");
    let mut alive = nodes[1].connect("svc");
    let mut doomed = nodes[2].connect("svc");
    let mut c = nodes[0].connect("");
    await_trees(&mut c, "svc", &mut [&mut alive, &mut doomed]);
    // 40 requests: the member on node 1 answers its share, the one on node 2 sits on its.
    let asked = Instant::now();
    for id in 0..40 {
        c.send(request(id, "svc", 3000));
    }
    let answered = std::thread::scope(|s| {
        let a = s.spawn(|| {
            let mut n = 0;
            while let Got::Packet(NodePacket::Request { id, request, .. }) =
                alive.poll(Duration::from_millis(1000))
            {
                alive.send(ClientPacket::Reply {
                    id,
                    outcome: Ok(request),
                });
                n += 1;
            }
            n
        });
        let mut pending = 0;
        while let Got::Packet(NodePacket::Request { .. }) = doomed.poll(Duration::from_millis(1000))
        {
            pending += 1;
        }
        (a.join().unwrap(), pending)
    });
    assert_eq!(answered.0 + answered.1, 40, "{answered:?}");
    assert!(answered.1 > 0, "nothing went to the doomed node");
    nodes[2].kill("KILL");
    // Exactly one REPLY per request: the answered ones, and a timed-out one for each
    // request pending on the dead node, at its deadline. Node 0 owns the deadlines: none
    // comes before its 3 s, and none is put off by the crash: a request to a cluster nobody
    // serves, asked now with the same timeout, has a later deadline, and a node fires its
    // deadlines in order, so its timed-out REPLY comes after all 40. (Events, not the wall
    // clock: a loaded machine may run a node's timers late, never out of order.)
    c.send(request(999, "nobody-anywhere", 3000));
    let mut ok = 0;
    let mut timed_out = 0;
    let mut ids = Vec::new();
    loop {
        // A bound against hanging only: the last REPLY is due 3 s from now.
        let Got::Packet(r) = c.poll(Duration::from_secs(60)) else {
            panic!("replies missing; got those to {ids:?}");
        };
        let id = id_of(&r);
        if id == 999 {
            assert_eq!(
                r,
                NodePacket::Reply {
                    id,
                    outcome: ReplyOutcome::TimedOut
                }
            );
            break;
        }
        ids.push(id);
        match r {
            NodePacket::Reply {
                outcome: ReplyOutcome::Success(_),
                ..
            } => ok += 1,
            NodePacket::Reply {
                outcome: ReplyOutcome::TimedOut,
                ..
            } => {
                assert!(
                    asked.elapsed() >= Duration::from_secs(3),
                    "request {id} timed out early"
                );
                timed_out += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    ids.sort_unstable();
    assert_eq!(ids, (0..40).collect::<Vec<_>>());
    assert_eq!((ok, timed_out), answered);
    c.expect_silence(Duration::from_millis(500));
    // The others find it dead, repair, and serve new requests: once one is answered,
    // every following one is.
    nodes[0].wait_line("is down");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut id = 1000;
    loop {
        assert!(Instant::now() < deadline, "requests never served again");
        c.send(request(id, "svc", 1000));
        if let Got::Packet(NodePacket::Request {
            id: rid, request, ..
        }) = alive.poll(Duration::from_millis(1100))
        {
            alive.send(ClientPacket::Reply {
                id: rid,
                outcome: Ok(request),
            });
            assert_eq!(id_of(&c.recv()), id);
            break;
        }
        assert_eq!(
            c.recv(),
            NodePacket::Reply {
                id,
                outcome: ReplyOutcome::TimedOut
            }
        );
        id += 1;
    }
    for id in 2000..2020 {
        c.send(request(id, "svc", 5000));
    }
    serve(&mut alive, 20, |r| r.clone());
    for _ in 0..20 {
        assert!(matches!(
            c.recv(),
            NodePacket::Reply {
                outcome: ReplyOutcome::Success(_),
                ..
            }
        ));
    }
}

fn sigterm_of_a_node_loses_nothing_it_sent_to_the_survivors() {
    let mut nodes = network("multinode term", 3, "23121,23122,23123");
    let mut sub = nodes[0].connect("");
    sub.send(ClientPacket::Subscribe {
        topic: "feed".into(),
    });
    let mut member = nodes[1].connect("svc");
    let mut publisher = nodes[2].connect("");
    let mut requester = nodes[0].connect("");
    // The subscription and the service are reachable from node 2 and node 0.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "the subscription never took");
        publisher.send(ClientPacket::Publish {
            topic: "feed".into(),
            event: b("probe"),
        });
        if let Got::Packet(_) = sub.poll(Duration::from_millis(100)) {
            break;
        }
    }
    while let Got::Packet(_) = sub.poll(Duration::from_millis(300)) {}
    await_trees(&mut requester, "svc", &mut [&mut member]);
    // 2000 events of 1 KiB from node 2, then a request through the same connection: once
    // its reply is back, node 2 has read every event (one connection is read in order).
    for i in 0..2000u32 {
        let mut e = vec![0u8; 1024];
        e[..4].copy_from_slice(&i.to_be_bytes());
        publisher.send(ClientPacket::Publish {
            topic: "feed".into(),
            event: e.into(),
        });
    }
    publisher.send(request(1, "svc", 10_000));
    serve(&mut member, 1, |r| r.clone());
    assert_eq!(id_of(&publisher.recv()), 1);
    // Node 2 leaves at once. Meanwhile node 0 keeps asking node 1: nothing fails.
    nodes[2].kill("TERM");
    let status = nodes[2].child.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut got = Vec::new();
    while got.len() < 2000 {
        match sub.recv() {
            NodePacket::Publish { event, .. } => {
                got.push(u32::from_be_bytes(event[..4].try_into().unwrap()))
            }
            other => panic!("{other:?}"),
        }
    }
    got.sort_unstable();
    assert_eq!(
        got,
        (0..2000).collect::<Vec<_>>(),
        "events lost or repeated"
    );
    for id in 0..20 {
        requester.send(request(id, "svc", 5000));
    }
    serve(&mut member, 20, |r| r.clone());
    for _ in 0..20 {
        assert!(matches!(
            requester.recv(),
            NodePacket::Reply {
                outcome: ReplyOutcome::Success(_),
                ..
            }
        ));
    }
    drop(nodes);
}

/// SIGSTOP for 12 s, then SIGCONT: the stopped node's timers are all late when it resumes.
/// It must take that for its own stall, not for the deaths of its peers: it keeps its peers
/// and trees, forwards what its clients sent meanwhile, and its subscriber hears the others
/// again (issue 21, item 3; multicasts sent to it during the stall are issue 21's item 1).
fn a_node_stopped_for_12_s_resumes_with_its_peers_and_trees() {
    let nodes = network("multinode stop", 3, "23131,23132,23133");
    let mut member = nodes[0].connect("svc");
    let mut sender = nodes[2].connect("");
    let mut sub = nodes[2].connect("");
    sub.send(ClientPacket::Subscribe {
        topic: "feed".into(),
    });
    let mut publisher = nodes[0].connect("");
    await_trees(&mut sender, "svc", &mut [&mut member]);
    let reaches_sub = |publisher: &mut RawClient, sub: &mut RawClient, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(
                Instant::now() < deadline,
                "{what}: events never reached node 2"
            );
            publisher.send(ClientPacket::Publish {
                topic: "feed".into(),
                event: b(what),
            });
            if let Got::Packet(_) = sub.poll(Duration::from_millis(100)) {
                break;
            }
        }
        while let Got::Packet(_) = sub.poll(Duration::from_millis(300)) {}
    };
    reaches_sub(&mut publisher, &mut sub, "before");
    for line in nodes[2].log.try_iter() {
        drop(line);
    }

    nodes[2].kill("STOP");
    // What its client sends meanwhile waits in the stopped node's socket.
    for i in 0..10u8 {
        sender.send(ClientPacket::Broadcast {
            cluster: "svc".into(),
            message: Bytes::from(vec![i]),
        });
    }
    // The fault itself: 12 s stopped (its peers take it for dead after 3).
    std::thread::sleep(Duration::from_secs(12));
    nodes[2].kill("CONT");
    // Every line it logs from the resume on, up to its warning, kept for the check below.
    let mut since_resume = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let said = loop {
        let line = nodes[2]
            .log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("it never said it was stopped");
        since_resume.push(line.clone());
        if line.contains("this node was stopped for about") {
            break line;
        }
    };
    assert!(said.contains("WARN"), "{said}");

    // Sent while it was stopped, forwarded once it resumed, each once.
    let mut got: Vec<u8> = (0..10)
        .map(|_| match member.recv() {
            NodePacket::Broadcast { message } => message[0],
            other => panic!("{other:?}"),
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..10).collect::<Vec<u8>>());
    member.expect_silence(Duration::from_millis(500));
    // The others reach its subscriber again.
    reaches_sub(&mut publisher, &mut sub, "after");
    // It never took its peers for dead.
    since_resume.extend(nodes[2].log.try_iter());
    let downs: Vec<&String> = since_resume
        .iter()
        .filter(|l| l.contains(" is down"))
        .collect();
    assert!(downs.is_empty(), "{downs:#?}");
}

/// Broadcasts `what` from inside `ns` until the member's output shows it: how long that
/// took.
fn bcast_until_heard(
    ns: &str,
    port: u16,
    heard: &std::sync::mpsc::Receiver<String>,
    what: &str,
) -> Duration {
    let start = Instant::now();
    let port = port.to_string();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what}: never heard"
        );
        let (mut c, _, _) = common::tool_in(ns, &["bcast", "svc", what, "--port", &port], false);
        let _ = c.wait();
        if heard
            .recv_timeout(Duration::from_millis(100))
            .is_ok_and(|line| line == what)
        {
            let took = start.elapsed();
            while heard.recv_timeout(Duration::from_millis(200)).is_ok() {}
            return took;
        }
    }
}

/// Two nodes on two hosts (network namespaces joined by a veth pair, no route out): one's
/// link goes down for 20 s (`ip link set down`), then up. What the cut-off node's clients
/// send reaches the other node again within seconds of the heal (issue 21, item 4; with 5
/// nodes on a bridge it took 8-9 s). The figure is printed (0.2-0.3 s here); the bound
/// asserted is looser than the 3 s, for a loaded machine.
fn a_node_cut_off_for_20_s_reaches_the_others_within_seconds_of_the_heal() {
    let ns = match common::Namespaces::create("cut", 232) {
        Ok(ns) => ns,
        Err(why) => {
            common::skip_without_namespaces(&why);
            return;
        }
    };
    let tag = std::process::id() % 200;
    let addrs: Vec<String> = (1..=2).map(|i| format!("10.232.{tag}.{i}:7000")).collect();
    let mut nodes = common::network_in(&ns.names, "cut test", &addrs).into_iter();
    let (a, b) = (nodes.next().unwrap(), nodes.next().unwrap());
    a.wait_line("converged with 1 remote connections");
    b.wait_line("converged with 1 remote connections");
    let (mut member, _, heard) = common::tool_in(
        &ns.names[0],
        &["serve", "svc", "--port", &a.port.to_string()],
        false,
    );
    bcast_until_heard(&ns.names[1], b.port, &heard, "before");

    let link = |state: &str| {
        let ok = std::process::Command::new("ip")
            .args(["-n", &ns.names[0], "link", "set", &ns.veth[0], state])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip link set {state}");
    };
    link("down");
    // The fault itself: 20 s cut off (each side takes the other for dead after 3).
    std::thread::sleep(Duration::from_secs(20));
    link("up");
    let took = bcast_until_heard(&ns.names[1], b.port, &heard, "after");
    eprintln!("partition of 20 s: the cut-off node's broadcasts arrive {took:?} after the heal");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let _ = member.kill();
    let _ = member.wait();
    drop((a, b));
    drop(ns);
}
