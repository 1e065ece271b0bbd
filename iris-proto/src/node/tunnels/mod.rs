//! Tunnels: building (a balanced pick of one member, here or on another node), the
//! allowance flow control with the forced-continuation rule, and close acknowledgement.
//!
//! A tunnel has two ends. An end is a local client, or another node that carries the
//! tunnel on to its own client over their direct link. Between two nodes the flow control
//! is a plain byte window: each node grants the other `tunnel_window` bytes and re-grants
//! what it has passed on to its client, in batches of an eighth of the window (as
//! quinn-proto announces stream windows), so a slow receiving client holds back the sending
//! client end to end and nothing is ever dropped. Data and the close travel in order on the
//! link; if the link or the other node goes, both ends are closed with a reason.
//!
//! This part keeps the tunnels and their queues; forwarding toward a client one chunk at a
//! time, as long as that client is not congested, is driven by the node (`pump.rs` has the
//! step), which knows the client's congestion after every chunk.

mod build;
mod pump;

use super::config::Config;
use super::effect::{Effect, Effects, Refusal, to_peer};
use super::ids::{BuildId, ClientTunId, ConnId, Endpoint, PeerTunKey, TunKey};
use super::stats::Stats;
use super::wire::NodeMsg;
use crate::mesh::Class;
use crate::overlay::{Contact, NodeId};
use crate::relay::{Name, NodePacket};
use crate::time::Instant;
use crate::timer::Timers;
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};

/// The end that asked for the tunnel.
pub(crate) const ORIGIN: usize = 0;
/// The cluster member that accepted it.
pub(crate) const MEMBER: usize = 1;

/// Where a tunnel end is: a client (with its id for the tunnel, once it confirmed), another
/// node (with that node's key), or not known yet.
type At = Endpoint<Option<ClientTunId>, PeerTunKey>;

/// One tunnel as this node carries it.
#[derive(Debug)]
struct Tunnel {
    /// Not yet confirmed by the member.
    building: bool,
    /// The member's build id (what its TUN_CONFIRM names), when the member is local.
    build_id: BuildId,
    ends: [End; 2],
}

/// One end of a tunnel, and the data flowing toward it.
#[derive(Debug)]
struct End {
    at: At,
    /// What this end allows this node to send it: a client's grant (it goes negative when
    /// continuations are forced through, exactly as the protocol allows), or another
    /// node's window.
    allowance: i64,
    /// Chunks from the other end waiting for this end's allowance.
    queue: VecDeque<Chunk>,
    /// Bytes in `queue`.
    queued: u64,
    /// Bytes still missing from the message being forwarded to this end; 0 means the
    /// previous message is complete and the next first chunk needs allowance.
    remaining: u64,
    /// For another node as the source: bytes passed on from it and not yet re-granted.
    owed: u64,
}

#[derive(Debug)]
struct Chunk {
    size_or_cont: u64,
    payload: Bytes,
}

impl End {
    fn new(at: At) -> End {
        End {
            at,
            allowance: 0,
            queue: VecDeque::new(),
            queued: 0,
            remaining: 0,
            owed: 0,
        }
    }
}

/// One connection's tunnels: offers to it, and its tunnel ids.
#[derive(Debug, Default)]
struct OfConn {
    /// Inbound tunnel offers awaiting this member's TUN_CONFIRM.
    builds: BTreeMap<BuildId, TunKey>,
    /// Tunnels by this client's tunnel id (being built by it, or open).
    tunnels: BTreeMap<ClientTunId, TunKey>,
    /// The next build id for a TUN_INIT offered to this member.
    next_build_id: u64,
}

impl OfConn {
    /// Tunnels held, counting offers not yet confirmed, for the per-client bound.
    fn count(&self) -> usize {
        self.tunnels.len() + self.builds.len()
    }
}

/// The tunnels this node carries.
#[derive(Debug)]
pub(crate) struct Tunnels {
    cfg: Config,
    tunnels: BTreeMap<TunKey, Tunnel>,
    /// Per connection (kept while it lives, so that build ids are never reused).
    of: BTreeMap<ConnId, OfConn>,
    /// Builds still waiting for a member's confirmation.
    timers: Timers<TunKey>,
    pub(crate) stats: Stats,
}

impl Tunnels {
    pub(crate) fn new(cfg: &Config) -> Tunnels {
        Tunnels {
            cfg: cfg.clone(),
            tunnels: BTreeMap::new(),
            of: BTreeMap::new(),
            timers: Timers::default(),
            stats: Stats::default(),
        }
    }

    /// When the next build gives up.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Builds whose member did not confirm in time (or, for a build of this node's client,
    /// for which no member answered at all): the builder gets its timed-out TUN_CONFIRM.
    pub(crate) fn handle_timeout(&mut self, now: Instant, fx: &mut Effects) {
        while let Some(key) = self.timers.pop_due(now) {
            if self.is_building(key) {
                self.fail_build(key, fx);
            }
        }
    }

    /// TUN_ALLOW: the client grants `space` more on its tunnel.
    pub(crate) fn handle_allow(
        &mut self,
        conn: ConnId,
        id: ClientTunId,
        space: u64,
        fx: &mut Effects,
    ) {
        if let Some((key, side)) = self.side_of_client(conn, id) {
            self.grant(key, side, space, fx);
        }
    }

    /// Another node granted `space` more on this node's tunnel `key`.
    pub(crate) fn handle_remote_allow(
        &mut self,
        from: Contact,
        key: TunKey,
        space: u64,
        fx: &mut Effects,
    ) {
        if let Some(side) = self.side_of_node(from, key) {
            self.grant(key, side, space, fx);
        }
    }

    /// TUN_TRANSFER: a chunk from a client for the other end.
    pub(crate) fn handle_transfer(
        &mut self,
        conn: ConnId,
        id: ClientTunId,
        size_or_cont: u64,
        payload: Bytes,
        fx: &mut Effects,
    ) {
        let Some((key, side)) = self.side_of_client(conn, id) else {
            return;
        };
        let max = self.cfg.limits.max_message_size;
        if size_or_cont > max {
            let what = format!("tunnel message of {size_or_cont} bytes exceeds the limit of {max}");
            return fx.push(Effect::Violation(conn, what));
        }
        if size_or_cont != 0 && payload.len() as u64 > size_or_cont {
            let what = "tunnel chunk larger than its message".to_string();
            return fx.push(Effect::Violation(conn, what));
        }
        // The node re-grants only what it has forwarded, so a client that respects its
        // allowance never has more than a window queued here.
        let bound = self.cfg.tunnel_window + self.cfg.limits.max_chunk_size;
        if !self.enqueue(key, 1 - side, size_or_cont, payload, bound, fx) {
            let what = "tunnel allowance exceeded".to_string();
            return fx.push(Effect::Violation(conn, what));
        }
        fx.push(Effect::Pump(key, 1 - side));
    }

    /// A chunk from another node for this node's tunnel `key`.
    pub(crate) fn handle_remote_data(
        &mut self,
        from: Contact,
        key: TunKey,
        size_or_cont: u64,
        payload: Bytes,
        fx: &mut Effects,
    ) {
        let Some(side) = self.side_of_node(from, key) else {
            return;
        };
        // A node sends within the window granted it, but pushes what it held when its
        // client closed: twice the window bounds every honest case.
        let bound = 2 * self.cfg.tunnel_window + self.cfg.limits.max_chunk_size;
        if !self.enqueue(key, 1 - side, size_or_cont, payload, bound, fx) {
            self.stats.tunnels_broken += 1;
            let why = "tunnel window overrun by the other node";
            return self.close_open(key, side, why, fx);
        }
        fx.push(Effect::Pump(key, 1 - side));
    }

    /// TUN_CLOSE from a client; always acknowledged (clients block until it is), even for
    /// an unknown id.
    pub(crate) fn handle_close(&mut self, conn: ConnId, id: ClientTunId, fx: &mut Effects) {
        if let Some((key, side)) = self.side_of_client(conn, id) {
            if self.is_building(key) {
                // Closed while being built: it still gets its one TUN_CONFIRM first.
                self.fail_build(key, fx);
            } else {
                self.close_open(key, 1 - side, "", fx);
            }
        }
        let ack = NodePacket::TunClose {
            tun_id: id.0,
            reason: Name::default(),
        };
        fx.push(Effect::Send(conn, ack));
    }

    /// The other node closed this node's tunnel `key` (after everything it sent).
    pub(crate) fn handle_remote_close(
        &mut self,
        from: Contact,
        key: TunKey,
        reason: Name,
        fx: &mut Effects,
    ) {
        let Some(side) = self.side_of_node(from, key) else {
            return;
        };
        if self.is_building(key) {
            return self.fail_build(key, fx);
        }
        self.close_open(key, 1 - side, reason.as_str(), fx);
    }

    /// Another node is gone (or its link is): every tunnel through it ends, with a reason.
    pub(crate) fn handle_peer_lost(&mut self, node: NodeId, fx: &mut Effects) {
        let lost: Vec<(TunKey, usize)> = self
            .tunnels
            .iter()
            .filter_map(|(&k, t)| {
                t.ends
                    .iter()
                    .position(|e| matches!(e.at, Endpoint::Remote(c, _) if c.id == node))
                    .map(|side| (k, side))
            })
            .collect();
        for (key, side) in lost {
            self.stats.tunnels_broken += 1;
            if self.is_building(key) {
                self.fail_build(key, fx);
            } else {
                // The link is gone: nothing more of the tunnel's goes to that side. But the
                // other node may well be alive (a failed dial after a partition healed, a
                // link lost between two live nodes) and would keep its end open for good:
                // it is told, if it can still be reached (otherwise this is dropped).
                if let Some(t) = self.tunnels.get_mut(&key)
                    && let Endpoint::Remote(node, tun) = t.ends[side].at
                {
                    let msg = NodeMsg::TunnelClose {
                        tun: tun.0,
                        reason: "the link between the nodes was lost".into(),
                    };
                    fx.push(to_peer(node, Class::Stream, &msg, Refusal::Ignore));
                    fx.push(Effect::Unpin(node.id));
                    t.ends[side].at = Endpoint::Nowhere;
                }
                self.close_open(key, 1 - side, "the other node is gone", fx);
            }
        }
    }

    /// A connection is gone: its tunnels are torn down, its offers fail.
    pub(crate) fn handle_closed(&mut self, conn: ConnId, fx: &mut Effects) {
        let Some(o) = self.of.remove(&conn) else {
            return;
        };
        for (_, key) in o.tunnels {
            let Some(t) = self.tunnels.get(&key) else {
                continue;
            };
            if t.building {
                self.fail_build(key, fx);
            } else {
                let side = if matches!(t.ends[ORIGIN].at, Endpoint::Local(c, _) if c == conn) {
                    ORIGIN
                } else {
                    MEMBER
                };
                self.close_open(key, 1 - side, "", fx);
            }
        }
        // Offers still waiting for this member fail; one already taken elsewhere does not
        // (a peer confirmed it first): its origin has had its TUN_CONFIRM.
        for (_, key) in o.builds {
            if self.is_building(key) {
                self.fail_build(key, fx);
            }
        }
    }

    /// A consumer drained: the tunnels toward it forward again.
    pub(crate) fn handle_decongested(&mut self, conn: ConnId, fx: &mut Effects) {
        let Some(o) = self.of.get(&conn) else {
            return;
        };
        for &key in o.tunnels.values() {
            let Some(t) = self.tunnels.get(&key) else {
                continue;
            };
            if let Some(side) = t
                .ends
                .iter()
                .position(|e| matches!(e.at, Endpoint::Local(c, _) if c == conn))
            {
                fx.push(Effect::Pump(key, side));
            }
        }
    }

    /// Whether this node carries tunnel `key`.
    pub(crate) fn contains(&self, key: TunKey) -> bool {
        self.tunnels.contains_key(&key)
    }

    fn is_building(&self, key: TunKey) -> bool {
        self.tunnels.get(&key).is_some_and(|t| t.building)
    }

    /// Which tunnel and which end a client's tunnel id names.
    fn side_of_client(&self, conn: ConnId, id: ClientTunId) -> Option<(TunKey, usize)> {
        let key = *self.of.get(&conn)?.tunnels.get(&id)?;
        let t = self.tunnels.get(&key)?;
        let side = t
            .ends
            .iter()
            .position(|e| e.at == Endpoint::Local(conn, Some(id)))?;
        Some((key, side))
    }

    /// Which end of tunnel `key` is the node `from` (a peer may only speak for its own end).
    fn side_of_node(&self, from: Contact, key: TunKey) -> Option<usize> {
        let t = self.tunnels.get(&key)?;
        t.ends
            .iter()
            .position(|e| matches!(e.at, Endpoint::Remote(c, _) if c.id == from.id))
    }

    /// Ends a tunnel still being built: the builder (a local client, or the origin's node)
    /// hears it failed.
    fn fail_build(&mut self, key: TunKey, fx: &mut Effects) {
        let Some(t) = self.remove(key, fx) else {
            return;
        };
        self.stats.tunnels_failed += 1;
        if let Endpoint::Local(m, _) = t.ends[MEMBER].at
            && let Some(m) = self.of.get_mut(&m)
        {
            m.builds.remove(&t.build_id);
        }
        match t.ends[ORIGIN].at {
            Endpoint::Local(origin, Some(id)) => {
                if let Some(o) = self.of.get_mut(&origin) {
                    o.tunnels.remove(&id);
                }
                let refused = NodePacket::TunConfirm {
                    tun_id: id.0,
                    chunk_limit: None,
                };
                fx.push(Effect::Send(origin, refused));
            }
            Endpoint::Remote(node, tun) => {
                let msg = NodeMsg::TunnelRefused { tun: tun.0 };
                fx.push(to_peer(node, Class::Control, &msg, Refusal::Ignore));
            }
            Endpoint::Local(_, None) | Endpoint::Nowhere => {}
        }
    }

    /// Closes an open tunnel from one end: what was already queued toward `survivor` is
    /// delivered (no data lost), then it is told the tunnel closed, with `reason` (empty:
    /// the other end closed it).
    fn close_open(&mut self, key: TunKey, survivor: usize, reason: &str, fx: &mut Effects) {
        self.forward_all(key, survivor, fx);
        let Some(t) = self.remove(key, fx) else {
            return;
        };
        match t.ends[survivor].at {
            Endpoint::Local(conn, Some(id)) => {
                if let Some(o) = self.of.get_mut(&conn) {
                    o.tunnels.remove(&id);
                }
                let close = NodePacket::TunClose {
                    tun_id: id.0,
                    reason: reason.into(),
                };
                fx.push(Effect::Send(conn, close));
            }
            Endpoint::Remote(node, tun) => {
                // After the data, on the same queue, so it cannot overtake it.
                let msg = NodeMsg::TunnelClose {
                    tun: tun.0,
                    reason: reason.into(),
                };
                fx.push(to_peer(node, Class::Stream, &msg, Refusal::Ignore));
            }
            Endpoint::Local(_, None) | Endpoint::Nowhere => {}
        }
    }

    /// Removes a tunnel, releasing the memory of chunks still queued in it and the links
    /// it kept.
    fn remove(&mut self, key: TunKey, fx: &mut Effects) -> Option<Tunnel> {
        let t = self.tunnels.remove(&key)?;
        self.timers.cancel(key);
        for end in &t.ends {
            if end.queued > 0 {
                fx.push(Effect::Release(end.queued as usize));
            }
            if let Endpoint::Remote(node, _) = end.at
                && !t.building
            {
                fx.push(Effect::Unpin(node.id));
            }
        }
        Some(t)
    }
}
