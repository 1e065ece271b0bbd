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

use super::session::Session;
use super::wire::{Anycast, NodeMsg, Wanted};
use super::{ConnId, Endpoint, Node, Timer};
use crate::mesh::Class;
use crate::overlay::Contact;
use crate::relay::codec::encode_tun_allow;
use crate::relay::{Name, NodePacket};
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::Duration;

/// The end that asked for the tunnel.
const ORIGIN: usize = 0;
/// The cluster member that accepted it.
const MEMBER: usize = 1;

/// One tunnel as this node carries it.
#[derive(Debug)]
pub(crate) struct Tunnel {
    /// Not yet confirmed by the member.
    building: bool,
    /// The member's build id (what its TUN_CONFIRM names), when the member is local.
    build_id: u64,
    ends: [End; 2],
}

/// One end of a tunnel, and the data flowing toward it.
#[derive(Debug)]
struct End {
    /// A local client (with its own id for the tunnel, once known), another node (with
    /// that node's key for the tunnel), or not known yet (a build on its way).
    at: Endpoint,
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
    fn new(at: Endpoint) -> End {
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

impl Node {
    pub(super) fn on_tun_init(&mut self, conn: ConnId, tun_id: u64, cluster: Name, timeout: u64) {
        let Some(s) = self.conns.map.get(&conn) else {
            return;
        };
        if s.tunnels.contains_key(&tun_id) {
            return self.violation(conn, format!("tunnel id {tun_id} is already in use"));
        }
        if s.tunnel_count() >= self.cfg.max_tunnels_per_client || timeout == 0 {
            return self.refuse_build(conn, tun_id);
        }
        if self.scribe.is_none() {
            // A lone node knows every member: none means none, at once.
            let Some(member) = self.pick_member(&cluster, true) else {
                return self.refuse_build(conn, tun_id);
            };
            let key = self.new_tunnel(conn, tun_id, Endpoint::Nowhere, timeout);
            return self.offer_tunnel(key, member);
        }
        // Across nodes a member may be anywhere: the build travels like a request, and
        // with no member anywhere it times out, as the original did.
        let wait = Duration::from_millis(timeout).min(self.cfg.tunnel_confirm_timeout * 2);
        let key = self.new_tunnel(conn, tun_id, Endpoint::Nowhere, timeout);
        self.timers.set(Timer::TunnelBuild(key), self.now + wait);
        let anycast = Anycast {
            key: Default::default(),
            cluster,
            index: 0,
            origin: self.own_contact(),
            id: key,
            timeout_ms: timeout,
            budget_ms: timeout,
            via: super::wire::Via::Routed,
            hops: 0,
            wanted: Wanted::Tunnel,
        };
        if !self.start_anycast(anycast) {
            self.fail_build(key);
        }
    }

    /// A tunnel this node was chosen for: offered to one of its members (`key` names the
    /// tunnel here; the other end is in it already).
    pub(super) fn offer_tunnel(&mut self, key: u64, member: ConnId) {
        let Some(m) = self.conns.map.get_mut(&member) else {
            return;
        };
        let build_id = m.next_build_id;
        m.next_build_id += 1;
        m.builds.insert(build_id, key);
        let Some(t) = self.tunnels.get_mut(&key) else {
            return;
        };
        t.build_id = build_id;
        t.ends[MEMBER].at = Endpoint::Local(member, u64::MAX);
        let wait = self.cfg.tunnel_confirm_timeout;
        let deadline = self.now + wait;
        let at = self
            .timers
            .get(Timer::TunnelBuild(key))
            .map_or(deadline, |d| d.min(deadline));
        self.timers.set(Timer::TunnelBuild(key), at);
        let chunk_limit = self.cfg.limits.max_chunk_size;
        self.conns.send(
            member,
            &NodePacket::TunInit {
                build_id,
                chunk_limit,
            },
        );
    }

    /// A tunnel build from another node ended here: one of this node's members is offered it.
    pub(super) fn accept_remote_tunnel(&mut self, a: &Anycast, member: ConnId) {
        let key = self.next_key();
        self.tunnels.insert(
            key,
            Tunnel {
                building: true,
                build_id: 0,
                ends: [
                    End::new(Endpoint::Remote(a.origin, a.id)),
                    End::new(Endpoint::Nowhere),
                ],
            },
        );
        let budget = self.now + Duration::from_millis(a.budget_ms);
        self.timers.set(Timer::TunnelBuild(key), budget);
        self.stats.tunnels_served_for_peers += 1;
        self.offer_tunnel(key, member);
    }

    pub(super) fn on_tun_confirm(&mut self, conn: ConnId, build_id: u64, tun_id: u64) {
        let Some(s) = self.conns.map.get_mut(&conn) else {
            return;
        };
        let Some(key) = s.builds.remove(&build_id) else {
            // The offer expired or its builder left: tell the member its tunnel is dead,
            // unless the id names one of its live tunnels.
            if !s.tunnels.contains_key(&tun_id) {
                self.conns.send(
                    conn,
                    &NodePacket::TunClose {
                        tun_id,
                        reason: "tunnel offer expired".into(),
                    },
                );
            }
            return;
        };
        if s.tunnels.contains_key(&tun_id) {
            return self.violation(conn, format!("tunnel id {tun_id} is already in use"));
        }
        s.tunnels.insert(tun_id, key);
        let window = self.cfg.tunnel_window;
        let Some(t) = self.tunnels.get_mut(&key) else {
            return;
        };
        t.building = false;
        self.timers.cancel(Timer::TunnelBuild(key));
        t.ends[MEMBER].at = Endpoint::Local(conn, tun_id);
        let origin = t.ends[ORIGIN].at;
        self.stats.tunnels_opened += 1;
        match origin {
            Endpoint::Local(origin, origin_tun) => self.open_for_client(origin, origin_tun),
            Endpoint::Remote(node, tun) => {
                // The origin's node learns the tunnel is up, with the window it may fill.
                self.pin(node);
                let msg = NodeMsg::TunnelConfirm {
                    tun,
                    peer: key,
                    window,
                };
                self.send_peer(node, Class::Control, &msg);
            }
            Endpoint::Nowhere => {}
        }
        self.conns.send(
            conn,
            &NodePacket::TunAllow {
                tun_id,
                space: window,
            },
        );
    }

    /// The member's node confirmed this node's tunnel `key`: the client hears it is up.
    pub(super) fn on_remote_confirm(&mut self, from: Contact, key: u64, peer: u64, window: u64) {
        let building = self.tunnels.get(&key).is_some_and(|t| t.building);
        if !building {
            // Given up on already: the member's end must not wait for data.
            let msg = NodeMsg::TunnelClose {
                tun: peer,
                reason: "tunnel build timed out".into(),
            };
            self.send_peer(from, Class::Stream, &msg);
            return;
        }
        let Some(t) = self.tunnels.get_mut(&key) else {
            return;
        };
        t.building = false;
        self.timers.cancel(Timer::TunnelBuild(key));
        t.ends[MEMBER].at = Endpoint::Remote(from, peer);
        t.ends[MEMBER].allowance = i64::try_from(window).unwrap_or(i64::MAX);
        let Endpoint::Local(origin, origin_tun) = t.ends[ORIGIN].at else {
            return;
        };
        self.pin(from);
        self.stats.tunnels_opened += 1;
        let grant = NodeMsg::TunnelAllow {
            tun: peer,
            space: self.cfg.tunnel_window,
        };
        self.send_peer(from, Class::Control, &grant);
        self.open_for_client(origin, origin_tun);
    }

    /// No member took this node's tunnel `key`.
    pub(super) fn on_remote_refused(&mut self, key: u64) {
        if self.tunnels.get(&key).is_some_and(|t| t.building) {
            self.fail_build(key);
        }
    }

    /// The member did not confirm in time (or, for a build of this node's client, no member
    /// answered at all): the builder gets its timed-out TUN_CONFIRM.
    pub(super) fn expire_build(&mut self, key: u64) {
        if self.tunnels.get(&key).is_some_and(|t| t.building) {
            self.fail_build(key);
        }
    }

    pub(super) fn on_tun_allow(&mut self, conn: ConnId, tun_id: u64, space: u64) {
        let Some((key, side)) = self.tunnel_side(conn, tun_id) else {
            return;
        };
        self.grant(key, side, space);
    }

    /// Another node granted `space` more on this node's tunnel `key`.
    pub(super) fn on_remote_allow(&mut self, from: Contact, key: u64, space: u64) {
        if let Some(side) = self.remote_side(from, key) {
            self.grant(key, side, space);
        }
    }

    pub(super) fn on_tun_transfer(
        &mut self,
        conn: ConnId,
        tun_id: u64,
        size_or_cont: u64,
        payload: Bytes,
    ) {
        let Some((key, side)) = self.tunnel_side(conn, tun_id) else {
            return;
        };
        let max = self.cfg.limits.max_message_size;
        if size_or_cont > max {
            return self.violation(
                conn,
                format!("tunnel message of {size_or_cont} bytes exceeds the limit of {max}"),
            );
        }
        if size_or_cont != 0 && payload.len() as u64 > size_or_cont {
            return self.violation(conn, "tunnel chunk larger than its message".into());
        }
        // The node re-grants only what it has forwarded, so a client that respects its
        // allowance never has more than a window queued here.
        let bound = self.cfg.tunnel_window + self.cfg.limits.max_chunk_size;
        if !self.enqueue(key, 1 - side, size_or_cont, payload, bound) {
            return self.violation(conn, "tunnel allowance exceeded".into());
        }
        self.pump(key, 1 - side, false);
    }

    /// A chunk from another node for this node's tunnel `key`.
    pub(super) fn on_remote_data(
        &mut self,
        from: Contact,
        key: u64,
        size_or_cont: u64,
        payload: Bytes,
    ) {
        let Some(side) = self.remote_side(from, key) else {
            return;
        };
        // A node sends within the window granted it, but pushes what it held when its
        // client closed: twice the window bounds every honest case.
        let bound = 2 * self.cfg.tunnel_window + self.cfg.limits.max_chunk_size;
        if !self.enqueue(key, 1 - side, size_or_cont, payload, bound) {
            self.stats.tunnels_broken += 1;
            return self.close_open_tunnel(key, side, "tunnel window overrun by the other node");
        }
        self.pump(key, 1 - side, false);
    }

    pub(super) fn on_tun_close(&mut self, conn: ConnId, tun_id: u64) {
        if let Some((key, side)) = self.tunnel_side(conn, tun_id) {
            if self.tunnels.get(&key).is_some_and(|t| t.building) {
                // Closed while being built: it still gets its one TUN_CONFIRM first.
                self.fail_build(key);
            } else {
                self.close_open_tunnel(key, 1 - side, "");
            }
        }
        // Clients block until acknowledged, so even an unknown id gets an answer.
        self.conns.send(
            conn,
            &NodePacket::TunClose {
                tun_id,
                reason: Name::default(),
            },
        );
    }

    /// The other node closed this node's tunnel `key` (after everything it sent).
    pub(super) fn on_remote_close(&mut self, from: Contact, key: u64, reason: Name) {
        let Some(side) = self.remote_side(from, key) else {
            return;
        };
        if self.tunnels.get(&key).is_some_and(|t| t.building) {
            return self.fail_build(key);
        }
        self.close_open_tunnel(key, 1 - side, reason.as_str());
    }

    /// Another node is gone (or its link is): every tunnel through it ends, with a reason.
    pub(super) fn tunnels_lost(&mut self, node: crate::overlay::NodeId) {
        let keys: Vec<(u64, usize)> = self
            .tunnels
            .iter()
            .filter_map(|(&k, t)| {
                t.ends
                    .iter()
                    .position(|e| matches!(e.at, Endpoint::Remote(c, _) if c.id == node))
                    .map(|side| (k, side))
            })
            .collect();
        for (key, side) in keys {
            self.stats.tunnels_broken += 1;
            if self.tunnels.get(&key).is_some_and(|t| t.building) {
                self.fail_build(key);
            } else {
                // The link is gone: nothing more can go to that side.
                if let Some(t) = self.tunnels.get_mut(&key) {
                    t.ends[side].at = Endpoint::Nowhere;
                }
                self.close_open_tunnel(key, 1 - side, "the other node is gone");
            }
        }
    }

    /// Tears down the tunnels of a connection that is going away.
    pub(super) fn forget_tunnels(&mut self, s: &mut Session) {
        for (_, key) in std::mem::take(&mut s.tunnels) {
            let Some(t) = self.tunnels.get(&key) else {
                continue;
            };
            if t.building {
                self.fail_build(key);
            } else {
                let side = if matches!(t.ends[ORIGIN].at, Endpoint::Local(c, _) if c == s.id) {
                    ORIGIN
                } else {
                    MEMBER
                };
                self.close_open_tunnel(key, 1 - side, "");
            }
        }
        for (_, key) in std::mem::take(&mut s.builds) {
            self.fail_build(key);
        }
    }

    /// Which tunnel and which end a client's tunnel id names.
    fn tunnel_side(&self, conn: ConnId, tun_id: u64) -> Option<(u64, usize)> {
        let key = *self.conns.map.get(&conn)?.tunnels.get(&tun_id)?;
        let t = self.tunnels.get(&key)?;
        let side = t
            .ends
            .iter()
            .position(|e| e.at == Endpoint::Local(conn, tun_id))?;
        Some((key, side))
    }

    /// Which end of tunnel `key` is the node `from` (a peer may only speak for its own end).
    fn remote_side(&self, from: Contact, key: u64) -> Option<usize> {
        let t = self.tunnels.get(&key)?;
        t.ends
            .iter()
            .position(|e| matches!(e.at, Endpoint::Remote(c, _) if c.id == from.id))
    }

    fn new_tunnel(&mut self, conn: ConnId, tun_id: u64, member: Endpoint, timeout: u64) -> u64 {
        let key = self.next_key();
        if let Some(s) = self.conns.map.get_mut(&conn) {
            s.tunnels.insert(tun_id, key);
        }
        self.tunnels.insert(
            key,
            Tunnel {
                building: true,
                build_id: 0,
                ends: [End::new(Endpoint::Local(conn, tun_id)), End::new(member)],
            },
        );
        let wait = Duration::from_millis(timeout).min(self.cfg.tunnel_confirm_timeout);
        self.timers.set(Timer::TunnelBuild(key), self.now + wait);
        key
    }

    /// The builder's client hears its tunnel is up, with the node's window.
    fn open_for_client(&mut self, origin: ConnId, origin_tun: u64) {
        let chunk_limit = self.cfg.limits.max_chunk_size;
        let window = self.cfg.tunnel_window;
        self.conns.send(
            origin,
            &NodePacket::TunConfirm {
                tun_id: origin_tun,
                chunk_limit: Some(chunk_limit),
            },
        );
        self.conns.send(
            origin,
            &NodePacket::TunAllow {
                tun_id: origin_tun,
                space: window,
            },
        );
    }

    /// The one timed-out TUN_CONFIRM for a TUN_INIT no tunnel came of.
    fn refuse_build(&mut self, conn: ConnId, tun_id: u64) {
        self.stats.tunnels_failed += 1;
        self.conns.send(
            conn,
            &NodePacket::TunConfirm {
                tun_id,
                chunk_limit: None,
            },
        );
    }

    fn grant(&mut self, key: u64, side: usize, space: u64) {
        if let Some(t) = self.tunnels.get_mut(&key) {
            let space = i64::try_from(space).unwrap_or(i64::MAX);
            t.ends[side].allowance = t.ends[side].allowance.saturating_add(space);
        }
        self.pump(key, side, false);
    }

    /// Queues a chunk toward end `dest`, charged to the memory budget; false if that
    /// would put more than `bound` bytes in the queue.
    fn enqueue(
        &mut self,
        key: u64,
        dest: usize,
        size_or_cont: u64,
        payload: Bytes,
        bound: u64,
    ) -> bool {
        let Some(t) = self.tunnels.get_mut(&key) else {
            return true;
        };
        if t.building {
            // Data before the tunnel is confirmed has nowhere to go.
            return true;
        }
        let end = &mut t.ends[dest];
        end.queued += payload.len() as u64;
        self.conns.mem.charge(payload.len());
        end.queue.push_back(Chunk {
            size_or_cont,
            payload,
        });
        end.queued <= bound
    }

    /// Ends a tunnel still being built: the builder (a local client, or the origin's node)
    /// hears it failed.
    fn fail_build(&mut self, key: u64) {
        let Some(t) = self.remove_tunnel(key) else {
            return;
        };
        self.stats.tunnels_failed += 1;
        if let Endpoint::Local(m, _) = t.ends[MEMBER].at
            && let Some(m) = self.conns.map.get_mut(&m)
        {
            m.builds.remove(&t.build_id);
        }
        match t.ends[ORIGIN].at {
            Endpoint::Local(origin, origin_tun) => {
                if let Some(s) = self.conns.map.get_mut(&origin) {
                    s.tunnels.remove(&origin_tun);
                }
                self.conns.send(
                    origin,
                    &NodePacket::TunConfirm {
                        tun_id: origin_tun,
                        chunk_limit: None,
                    },
                );
            }
            Endpoint::Remote(node, tun) => {
                self.send_peer(node, Class::Control, &NodeMsg::TunnelRefused { tun });
            }
            Endpoint::Nowhere => {}
        }
    }

    /// Closes an open tunnel from one end: what was already queued toward `survivor` is
    /// delivered (no data lost), then it is told the tunnel closed, with `reason` (empty:
    /// the other end closed it).
    fn close_open_tunnel(&mut self, key: u64, survivor: usize, reason: &str) {
        self.pump(key, survivor, true);
        let Some(t) = self.remove_tunnel(key) else {
            return;
        };
        match t.ends[survivor].at {
            Endpoint::Local(conn, tun_id) => {
                if let Some(s) = self.conns.map.get_mut(&conn) {
                    s.tunnels.remove(&tun_id);
                }
                self.conns.send(
                    conn,
                    &NodePacket::TunClose {
                        tun_id,
                        reason: reason.into(),
                    },
                );
            }
            Endpoint::Remote(node, tun) => {
                // After the data, on the same queue, so it cannot overtake it.
                let msg = NodeMsg::TunnelClose {
                    tun,
                    reason: reason.into(),
                };
                self.send_peer(node, Class::Stream, &msg);
            }
            Endpoint::Nowhere => {}
        }
    }

    /// Removes a tunnel, releasing the memory of chunks still queued in it and the links
    /// it kept.
    fn remove_tunnel(&mut self, key: u64) -> Option<Tunnel> {
        let t = self.tunnels.remove(&key)?;
        self.timers.cancel(Timer::TunnelBuild(key));
        for end in &t.ends {
            self.conns.mem.release(end.queued as usize);
            if let Endpoint::Remote(node, _) = end.at
                && !t.building
            {
                self.unpin(node);
            }
        }
        Some(t)
    }

    /// Forwards what tunnel `key` holds for `conn` (it drained and takes more again).
    pub(super) fn pump_toward(&mut self, key: u64, conn: ConnId) {
        let Some(t) = self.tunnels.get(&key) else {
            return;
        };
        if let Some(side) = t
            .ends
            .iter()
            .position(|e| matches!(e.at, Endpoint::Local(c, _) if c == conn))
        {
            self.pump(key, side, false);
        }
    }

    /// Forwards queued chunks to end `dest` as its allowance permits, and re-grants the
    /// sender what was forwarded. A client gets chunks while it is not congested (the
    /// tunnel's window then holds the sender instead), the first chunk of each message only
    /// within its allowance; another node gets them within its window. `force` (the
    /// sender closed) forwards everything and re-grants nothing.
    fn pump(&mut self, key: u64, dest: usize, force: bool) {
        let Node {
            tunnels,
            conns,
            mesh,
            now,
            stats,
            cfg,
            ..
        } = self;
        let Some(t) = tunnels.get_mut(&key) else {
            return;
        };
        let src_at = t.ends[1 - dest].at;
        let end = &mut t.ends[dest];
        let mut forwarded = 0u64;
        while let Some(front) = end.queue.front() {
            let len = front.payload.len() as u64;
            let may = match end.at {
                Endpoint::Local(conn, _) => {
                    // Only the first chunk of a message whose predecessor is complete waits
                    // for allowance; continuations go regardless, or a message larger than
                    // the receiver's window would deadlock.
                    let gated = front.size_or_cont != 0 && end.remaining == 0;
                    force || !(conns.is_congested(conn) || gated && end.allowance < len as i64)
                }
                Endpoint::Remote(..) => force || end.allowance >= len as i64,
                Endpoint::Nowhere => false,
            };
            if !may {
                break;
            }
            let Some(chunk) = end.queue.pop_front() else {
                break;
            };
            end.queued -= len;
            conns.mem.release(len as usize);
            end.allowance -= len as i64;
            end.remaining = if chunk.size_or_cont != 0 {
                chunk.size_or_cont.saturating_sub(len)
            } else {
                end.remaining.saturating_sub(len)
            };
            forwarded += len;
            match end.at {
                Endpoint::Local(conn, tun_id) => conns.send(
                    conn,
                    &NodePacket::TunTransfer {
                        tun_id,
                        size_or_cont: chunk.size_or_cont,
                        payload: chunk.payload,
                    },
                ),
                Endpoint::Remote(node, tun) => {
                    if let Some(m) = mesh.as_mut() {
                        let msg = NodeMsg::TunnelData {
                            tun,
                            size_or_cont: chunk.size_or_cont,
                            payload: chunk.payload,
                        };
                        let bytes = super::wire::encode(&msg);
                        stats.peer_bytes_out += bytes.len() as u64;
                        let _ = m.send(*now, node, Class::Stream, bytes);
                    }
                }
                Endpoint::Nowhere => {}
            }
        }
        if forwarded == 0 || force {
            return;
        }
        match src_at {
            Endpoint::Local(src_conn, src_tun) => {
                conns.write(src_conn, |out| encode_tun_allow(out, src_tun, forwarded));
            }
            Endpoint::Remote(node, tun) => {
                // Re-granted in batches of an eighth of the window, not per chunk.
                let src = &mut t.ends[1 - dest];
                src.owed += forwarded;
                if src.owed >= cfg.tunnel_window / 8 {
                    let space = std::mem::take(&mut src.owed);
                    if let Some(m) = mesh.as_mut() {
                        let bytes = super::wire::encode(&NodeMsg::TunnelAllow { tun, space });
                        stats.peer_bytes_out += bytes.len() as u64;
                        let _ = m.send(*now, node, Class::Control, bytes);
                    }
                }
            }
            Endpoint::Nowhere => {}
        }
    }
}
