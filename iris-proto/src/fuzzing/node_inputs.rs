//! Sequences of node inputs from arbitrary bytes: several clients, mostly valid packets with
//! extreme values, raw garbage, split writes, flushes, disconnects, time jumps and shutdown,
//! fed to a lone [`Node`] by a driver that keeps the contract (it reports only bytes it was
//! handed, feeds nothing for a closed connection). In the manner of quinn's `streams`
//! target: the bytes choose operations, the checks are the node's promises.
//!
//! Checked: no panic; the client promises of [`super::clients`] (every byte decodes, one
//! REPLY per REQUEST, one TUN_CONFIRM per TUN_INIT); after shutdown every connection is
//! closed, no deadline is left, and the memory budget is back to zero (every charge was
//! released).

use super::clients::{Clients, Drive, MAX_CONNS, client_op};
use super::reader::Reader;
use crate::node::{Config, ConnId, Input, Node};
use crate::relay::codec::Limits;
use crate::time::Instant;
use bytes::{Bytes, BytesMut};
use std::time::Duration;

/// Limits small enough for the fuzzer to reach every bound.
pub(super) fn config() -> Config {
    Config {
        limits: Limits {
            max_message_size: 1 << 16,
            max_name_size: 64,
            max_chunk_size: 1 << 12,
        },
        tunnel_window: 1 << 13,
        max_clients: 4,
        max_handshakes: 3,
        client_backlog_high: 1 << 12,
        max_client_backlog: 1 << 15,
        max_memory: 1 << 17,
        max_pending_requests: 4,
        max_tunnels_per_client: 3,
        max_subscriptions_per_client: 3,
        ..Config::default()
    }
}

struct Driver {
    node: Node,
    now: Instant,
    clients: Clients,
}

/// Runs the byte-chosen operations; panics if the node breaks a promise.
pub fn node_inputs(data: &[u8]) {
    let cfg = config();
    let limits = cfg.limits;
    let node = Node::new(cfg, [9; 32], Instant::ZERO).expect("valid fuzz config");
    let mut d = Driver {
        node,
        now: Instant::ZERO,
        clients: Clients::new(limits),
    };
    d.drain();
    let mut bytes = Bytes::copy_from_slice(data);
    let mut r = Reader(&mut bytes);
    while let Some(op) = r.byte() {
        match op % 10 {
            0 | 1 if d.clients.conns.len() < MAX_CONNS => client_op(&mut d, op % 10, &mut r),
            op @ 2..=8 => client_op(&mut d, op, &mut r),
            _ => {
                if r.byte() == Some(0) {
                    break;
                }
            }
        }
    }
    // Every deadline passes, then the node stops: all promises come due.
    d.advance(Duration::from_secs(86_400));
    d.handle(Input::Shutdown("fuzz over"));
    // Requests with deadlines beyond the day are waited for, but only the drain's time.
    d.advance(crate::Config::default().shutdown_drain);
    d.clients.assert_all_closed();
    assert_eq!(d.node.client_count(), 0);
    assert_eq!(d.node.poll_timeout(), None, "a deadline outlived shutdown");
    assert_eq!(
        d.node.memory_used(),
        0,
        "a memory charge was never released"
    );
}

impl Drive for Driver {
    fn handle(&mut self, input: Input<'_>) {
        self.node.handle(self.now, input);
        self.drain();
    }

    fn lend(&mut self, c: ConnId, room: usize) -> BytesMut {
        self.node.lend_input(c, room)
    }

    fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        while let Some(at) = self.node.poll_timeout().filter(|&at| at <= target) {
            self.now = self.now.max(at);
            self.handle(Input::Timeout);
        }
        self.now = target;
    }

    fn clients(&mut self) -> &mut Clients {
        &mut self.clients
    }
}

impl Driver {
    fn drain(&mut self) {
        while let Some(out) = self.node.poll_output() {
            match self.clients.on_output(out) {
                None | Some(crate::Output::Event(_)) => {}
                Some(other) => panic!("a lone node asked for {other:?}"),
            }
        }
    }
}
