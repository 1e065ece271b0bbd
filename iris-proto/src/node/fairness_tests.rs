//! One bulk topic does not starve another topic or a tunnel on the same link: a group's
//! multicasts take at most its window of a link's queue (what is beyond it waits in the
//! node, per group), so another group's, or a tunnel's, data queues behind a window, not
//! behind the whole flood.

use super::network_tests::{event, open_tunnel, small_queues};
use crate::ConnId;
use crate::relay::{ClientPacket, NodePacket};
use crate::testnet::Net;
use bytes::{Bytes, BytesMut};

const BULK: u32 = 1024;
const FEW: u32 = 16;

/// Two nodes with 256 KiB link queues (16 KiB multicast windows); one client of node 1
/// subscribes to "bulk" and "small" and serves a tunnel from node 0, so that what it
/// receives shows the order of everything. Returns the net, that client, and node 0's
/// clients: a publisher of each topic and the tunnel's end (tunnel 1).
fn one_reader_of_everything() -> (Net, [ConnId; 4]) {
    let config = crate::Config {
        client_backlog_high: 64 << 20,
        ..crate::Config::default()
    };
    let mut net = small_queues(2, 256 << 10, config);
    let both = net.client(1, "svc");
    for topic in ["bulk", "small"] {
        net.send(
            1,
            both,
            ClientPacket::Subscribe {
                topic: topic.into(),
            },
        );
    }
    let (bulk, small, tunnel) = (net.client(0, ""), net.client(0, ""), net.client(0, ""));
    net.secs(2);
    open_tunnel(&mut net, (0, tunnel, 1), (1, both, 7));
    let allow = ClientPacket::TunAllow {
        tun_id: 7,
        space: 64 << 20,
    };
    net.send(1, both, allow);
    net.take(0, tunnel);
    net.take(1, both);
    (net, [both, bulk, small, tunnel])
}

#[test]
fn a_bulk_topic_holds_up_another_topic_and_a_tunnel_by_a_window_not_by_its_flood() {
    let (mut net, [both, bulk, small, tunnel]) = one_reader_of_everything();
    // The link stalls while 4 MiB of the bulk topic, then a few events of the other and a
    // few chunks of the tunnel, are sent; then it drains.
    net.stall(0, 1);
    let mut flood = BytesMut::new();
    for i in 0..BULK {
        let event = event(i, 4096);
        ClientPacket::Publish {
            topic: "bulk".into(),
            event,
        }
        .encode(&mut flood);
    }
    net.send_bytes(0, bulk, &flood);
    for i in 0..FEW {
        let event = event(i, 4096);
        net.send(
            0,
            small,
            ClientPacket::Publish {
                topic: "small".into(),
                event,
            },
        );
        let payload = Bytes::from(vec![i as u8; 4096]);
        let chunk = ClientPacket::TunTransfer {
            tun_id: 1,
            size_or_cont: 4096,
            payload,
        };
        net.send(0, tunnel, chunk);
    }
    net.unstall(0, 1);
    // The order they reached the client in: how many of the flood came before the last of
    // the other topic, and before the last of the tunnel's chunks.
    let got = net.take(1, both);
    let is_bulk =
        |p: &NodePacket| matches!(p, NodePacket::Publish { topic, .. } if topic.as_str() == "bulk");
    let is_small = |p: &NodePacket| matches!(p, NodePacket::Publish { topic, .. } if topic.as_str() == "small");
    let is_chunk = |p: &NodePacket| matches!(p, NodePacket::TunTransfer { .. });
    assert_eq!(
        got.iter().filter(|p| is_bulk(p)).count(),
        BULK as usize,
        "the flood, all of it"
    );
    assert_eq!(got.iter().filter(|p| is_small(p)).count(), FEW as usize);
    assert_eq!(got.iter().filter(|p| is_chunk(p)).count(), FEW as usize);
    let bulk_before = |last: usize| got[..last].iter().filter(|p| is_bulk(p)).count();
    let last_small = got.iter().rposition(is_small).expect("small events");
    let last_chunk = got.iter().rposition(is_chunk).expect("tunnel chunks");
    // Each waited for a few of the flood's windows (16 KiB, 4 events each), not for it.
    assert!(
        bulk_before(last_small) <= 64,
        "{} of the flood first",
        bulk_before(last_small)
    );
    assert!(
        bulk_before(last_chunk) <= 64,
        "{} of the flood first",
        bulk_before(last_chunk)
    );
}
