//! Overload and abuse against the real `iris` binary: a consumer that does not keep up
//! holds back only the producers sending to it, a broadcast to many is held once, silent
//! connections cannot keep clients out, and nobody is refused without a reason.

use super::common;

use bytes::{Bytes, BytesMut};
use common::{Got, IrisProcess, PROMPT, RawClient, b, small_window_client};
use iris_proto::relay::{ClientPacket, NodePacket, ReplyOutcome};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// A member of `cluster` on its own thread, answering every request with "re:" + request.
fn answering_member(port: u16, cluster: &'static str) {
    let mut m = RawClient::connect(port, cluster);
    std::thread::spawn(move || {
        loop {
            match m.poll(Duration::from_secs(3600)) {
                Got::Packet(NodePacket::Request { id, request, .. }) => {
                    let mut reply = b"re:".to_vec();
                    reply.extend_from_slice(&request);
                    m.send(ClientPacket::Reply {
                        id,
                        outcome: Ok(reply.into()),
                    });
                }
                Got::Packet(_) => {}
                Got::Eof | Got::Nothing => return,
            }
        }
    });
}

/// Sends `n` requests one after the other and asserts each gets the member's reply.
fn requests_are_answered(c: &mut RawClient, cluster: &str, n: u64, timeout_ms: u64) {
    for id in 0..n {
        let body = Bytes::from(format!("q{id}"));
        c.send(ClientPacket::Request {
            id,
            cluster: cluster.into(),
            request: body.clone(),
            timeout_ms,
        });
        let mut want = b"re:".to_vec();
        want.extend_from_slice(&body);
        assert_eq!(
            c.recv(),
            NodePacket::Reply {
                id,
                outcome: ReplyOutcome::Success(want.into())
            },
            "request {id} was not answered"
        );
    }
}

/// Subscribes `c` to `topic`, and returns once the node has it in place (a request on the
/// same connection is answered after it).
fn subscribe_and_sync(c: &mut RawClient, topic: &str, echo: &str) {
    c.send(ClientPacket::Subscribe {
        topic: topic.into(),
    });
    requests_are_answered(c, echo, 1, 5000);
}

/// Publishes `size`-byte events numbered from 0 to `topic` from a new client on its own
/// thread, as fast as the node takes them, until `stop` (or `count` events). Reports once
/// `signal_after` bytes are written.
fn publisher(
    port: u16,
    topic: &'static str,
    size: usize,
    count: u32,
    signal_after: usize,
    stop: Arc<AtomicBool>,
) -> (std::thread::JoinHandle<()>, mpsc::Receiver<()>) {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let mut p = RawClient::connect(port, "");
        let mut written = 0;
        let mut wire = BytesMut::new();
        for i in 0..count {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let mut event = vec![0u8; size];
            event[..4].copy_from_slice(&i.to_be_bytes());
            ClientPacket::Publish {
                topic: topic.into(),
                event: event.into(),
            }
            .encode(&mut wire);
            if wire.len() >= 64 << 10 || i + 1 == count {
                // The node may be gone when the test ends: a failed write just stops us.
                if std::io::Write::write_all(&mut p.stream, &wire).is_err() {
                    return;
                }
                written += wire.len();
                wire.clear();
                if written >= signal_after {
                    let _ = tx.send(());
                }
            }
        }
    });
    (t, rx)
}

#[test]
fn a_never_reading_subscriber_does_not_hold_up_a_third_partys_requests() {
    // The slow-consumer deadline is longer than the test: the stuck subscriber is never cut,
    // so only per-connection back-pressure can keep the others served.
    let iris = IrisProcess::start(&[
        "--client-backlog-high",
        "1048576",
        "--slow-consumer-timeout-ms",
        "600000",
    ]);
    answering_member(iris.port, "echo");
    let mut stuck = iris.connect("");
    subscribe_and_sync(&mut stuck, "flood", "echo");
    // From now on `stuck` reads nothing.
    let stop = Arc::new(AtomicBool::new(false));
    let (flood, flowing) = publisher(
        iris.port,
        "flood",
        64 << 10,
        u32::MAX,
        1 << 20,
        stop.clone(),
    );
    flowing
        .recv_timeout(PROMPT)
        .expect("the flood never started");
    // The flood is throttled at the stuck subscriber, and nobody else notices.
    let mut asker = iris.connect("");
    requests_are_answered(&mut asker, "echo", 200, 2000);
    stop.store(true, Ordering::Relaxed);
    drop(iris);
    let _ = flood.join();
}

#[test]
fn a_slowly_reading_subscriber_gets_every_event_and_others_are_served_meanwhile() {
    let iris = IrisProcess::start(&[
        "--client-backlog-high",
        "2097152",
        "--slow-consumer-timeout-ms",
        "600000",
    ]);
    answering_member(iris.port, "echo");
    let mut slow = small_window_client(iris.port, "");
    subscribe_and_sync(&mut slow, "news", "echo");
    const EVENTS: u32 = 4000;
    const SIZE: usize = 4096;
    // The subscriber reads slowly (about 4 MB/s, far slower than the publisher writes),
    // and every 800 events it stops reading altogether until a third party's requests have
    // been answered: a node that stopped reading everyone while one consumer is congested
    // would never answer them.
    let (stopped_tx, stopped) = mpsc::channel::<()>();
    let (go, go_rx) = mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut next = 0u32;
        while next < EVENTS {
            match slow.poll(PROMPT) {
                Got::Packet(NodePacket::Publish { event, .. }) => {
                    assert_eq!(event.len(), SIZE);
                    let n = u32::from_be_bytes(event[..4].try_into().unwrap());
                    assert_eq!(n, next, "lost or reordered");
                    next += 1;
                    if next.is_multiple_of(4) {
                        std::thread::sleep(Duration::from_millis(4));
                    }
                    if next.is_multiple_of(800) {
                        stopped_tx.send(()).unwrap();
                        go_rx
                            .recv_timeout(Duration::from_secs(20))
                            .expect("the third party's requests were held up");
                    }
                }
                other => panic!("event {next}: got {other:?}"),
            }
        }
        next
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (flood, flowing) = publisher(iris.port, "news", SIZE, EVENTS, 1 << 20, stop);
    flowing
        .recv_timeout(PROMPT)
        .expect("the flood never started");
    let mut asker = iris.connect("");
    let mut rounds = 0;
    while stopped.recv().is_ok() {
        requests_are_answered(&mut asker, "echo", 5, 5000);
        rounds += 1;
        let _ = go.send(());
    }
    assert_eq!(reader.join().unwrap(), EVENTS, "every event arrived");
    assert_eq!(rounds, EVENTS / 800);
    flood.join().unwrap();
}

#[test]
fn a_32_mib_broadcast_to_30_stalled_members_is_held_once() {
    let iris = IrisProcess::start(&["--slow-consumer-timeout-ms", "600000"]);
    answering_member(iris.port, "echo");
    let members: Vec<RawClient> = (0..30).map(|_| iris.connect("wide")).collect();
    let mut sender = iris.connect("");
    // Settle the node's heap before measuring.
    requests_are_answered(&mut sender, "echo", 10, 5000);
    let before = iris.rss_kib();
    let message: Bytes = (0..32u32 << 20)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    sender.send(ClientPacket::Broadcast {
        cluster: "wide".into(),
        message: message.clone(),
    });
    // The node handles the sender's packets in order: once this is answered, the broadcast
    // has been queued for all 30 members, none of which has read anything.
    requests_are_answered(&mut sender, "echo", 1, 30_000);
    let grown_mib = iris.rss_kib().saturating_sub(before) / 1024;
    assert!(
        grown_mib < 80,
        "RSS grew by {grown_mib} MiB for one 32 MiB message (30 copies would be 960)"
    );
    // And it is intact for whoever reads it.
    let mut first = members.into_iter().next().unwrap();
    match first.poll(Duration::from_secs(30)) {
        Got::Packet(NodePacket::Broadcast { message: got }) => {
            assert!(got == message, "corrupted")
        }
        other => panic!("expected the broadcast, got {other:?}"),
    }
}

#[test]
fn silent_connections_cannot_keep_a_client_out() {
    // 1200 connections that never send INIT, against a node that serves 1000 clients. The
    // handshake deadline is far away: only the full pool, not the clock, may close a silent
    // connection (1200 connects can take seconds, the kernel's accept queue overflowing, and
    // silent connections that time out are no eviction and fill the log's quota of refusals).
    let iris = IrisProcess::start(&["--max-clients", "1000", "--handshake-timeout-ms", "600000"]);
    let silent: Vec<std::net::TcpStream> = (0..1200)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", iris.port)).unwrap())
        .collect();
    // A real client still gets in and is served.
    let mut c = iris.connect("real");
    c.send(ClientPacket::Broadcast {
        cluster: "real".into(),
        message: b("in"),
    });
    assert_eq!(c.recv(), NodePacket::Broadcast { message: b("in") });
    // The oldest silent connections made room; the node said so in its log.
    iris.wait_line("refused: no INIT while 1024 newer connections waited");
    drop(silent);
}

#[test]
fn the_client_past_the_cap_is_told_why() {
    let iris = IrisProcess::start(&["--max-clients", "2"]);
    let _a = iris.connect("");
    let _b = iris.connect("");
    let mut c = RawClient::open(iris.port);
    let mut init = BytesMut::new();
    iris_proto::relay::client::ClientSession::encode_init("", &mut init);
    c.write(&init);
    assert_eq!(
        c.expect_eof(),
        vec![NodePacket::Deny {
            magic: b("iris-relay-magic"),
            reason: "Too many clients: this node serves at most 2.".into()
        }]
    );
    let line = iris.wait_line("Too many clients");
    assert!(line.contains("WARN"), "refusals are warnings: {line}");
}
