//! Tunnels between two clients of this node: building, allowance-based flow control with the
//! forced-continuation rule, and close acknowledgement.

use super::session::Session;
use super::{ConnId, Node, Timer};
use crate::relay::codec::encode_tun_allow;
use crate::relay::{Name, NodePacket};
use crate::time::Instant;
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::Duration;

/// The end that asked for the tunnel.
const ORIGIN: usize = 0;
/// The cluster member that accepted it.
const MEMBER: usize = 1;

/// One tunnel; both ends are clients of this node.
#[derive(Debug)]
pub(crate) struct Tunnel {
    /// `Some(deadline)` while the member has not confirmed.
    building: Option<Instant>,
    /// The member's build id (what its TUN_CONFIRM names).
    build_id: u64,
    ends: [End; 2],
}

/// One end of a tunnel, and the data flowing toward it.
#[derive(Debug)]
struct End {
    conn: ConnId,
    /// The client's own id for the tunnel; the member's is known once it confirms.
    tun_id: Option<u64>,
    /// What this client allows the node to send it. Goes negative when continuations are
    /// forced through, exactly as the protocol allows.
    allowance: i64,
    /// Chunks from the other end waiting for this end's allowance.
    queue: VecDeque<Chunk>,
    /// Bytes in `queue`.
    queued: u64,
    /// Bytes still missing from the message being forwarded to this end; 0 means the
    /// previous message is complete and the next first chunk needs allowance.
    remaining: u64,
}

#[derive(Debug)]
struct Chunk {
    size_or_cont: u64,
    payload: Bytes,
}

impl End {
    fn new(conn: ConnId, tun_id: Option<u64>) -> End {
        End {
            conn,
            tun_id,
            allowance: 0,
            queue: VecDeque::new(),
            queued: 0,
            remaining: 0,
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
        let over = s.tunnel_count() >= self.cfg.max_tunnels_per_client;
        let member = if over || timeout == 0 {
            None
        } else {
            self.pick_member(&cluster, true)
        };
        let Some(member) = member else {
            // No member (or no room): fail now, the one TUN_CONFIRM for this TUN_INIT.
            self.stats.tunnels_failed += 1;
            return self.conns.send(
                conn,
                &NodePacket::TunConfirm {
                    tun_id,
                    chunk_limit: None,
                },
            );
        };
        let key = self.next_key();
        let Some(m) = self.conns.map.get_mut(&member) else {
            return;
        };
        let build_id = m.next_build_id;
        m.next_build_id += 1;
        m.builds.insert(build_id, key);
        if let Some(s) = self.conns.map.get_mut(&conn) {
            s.tunnels.insert(tun_id, key);
        }
        let wait = Duration::from_millis(timeout).min(self.cfg.tunnel_confirm_timeout);
        let deadline = self.now + wait;
        self.tunnels.insert(
            key,
            Tunnel {
                building: Some(deadline),
                build_id,
                ends: [End::new(conn, Some(tun_id)), End::new(member, None)],
            },
        );
        self.timers.insert((deadline, Timer::TunnelBuild(key)));
        let chunk_limit = self.cfg.limits.max_chunk_size;
        self.conns.send(
            member,
            &NodePacket::TunInit {
                build_id,
                chunk_limit,
            },
        );
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
        let Some(t) = self.tunnels.get_mut(&key) else {
            return;
        };
        if let Some(deadline) = t.building.take() {
            self.timers.remove(&(deadline, Timer::TunnelBuild(key)));
        }
        t.ends[MEMBER].tun_id = Some(tun_id);
        let origin = t.ends[ORIGIN].conn;
        let origin_tun = t.ends[ORIGIN].tun_id.unwrap_or_default();
        self.stats.tunnels_opened += 1;
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
        self.conns.send(
            conn,
            &NodePacket::TunAllow {
                tun_id,
                space: window,
            },
        );
    }

    /// The member did not confirm in time: the builder gets its timed-out TUN_CONFIRM.
    pub(super) fn expire_build(&mut self, key: u64) {
        let Some(t) = self.tunnels.get(&key) else {
            return;
        };
        if t.building.is_none() {
            return;
        }
        self.fail_build(key);
    }

    pub(super) fn on_tun_allow(&mut self, conn: ConnId, tun_id: u64, space: u64) {
        let Some((key, side)) = self.tunnel_side(conn, tun_id) else {
            return;
        };
        if let Some(t) = self.tunnels.get_mut(&key) {
            let space = i64::try_from(space).unwrap_or(i64::MAX);
            t.ends[side].allowance = t.ends[side].allowance.saturating_add(space);
        }
        self.pump(key, side, false);
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
        let bound = self.cfg.tunnel_window + self.cfg.limits.max_chunk_size;
        let Some(t) = self.tunnels.get_mut(&key) else {
            return;
        };
        if t.building.is_some() {
            // Data before the tunnel is confirmed has nowhere to go.
            return;
        }
        let dest = &mut t.ends[1 - side];
        dest.queued += payload.len() as u64;
        self.conns.mem.charge(payload.len());
        dest.queue.push_back(Chunk {
            size_or_cont,
            payload,
        });
        // The node re-grants only what it has forwarded, so a client that respects its
        // allowance never has more than a window queued here.
        if dest.queued > bound {
            return self.violation(conn, "tunnel allowance exceeded".into());
        }
        self.pump(key, 1 - side, false);
    }

    pub(super) fn on_tun_close(&mut self, conn: ConnId, tun_id: u64) {
        if let Some((key, side)) = self.tunnel_side(conn, tun_id) {
            if self.tunnels.get(&key).is_some_and(|t| t.building.is_some()) {
                // Closed while being built: it still gets its one TUN_CONFIRM first.
                self.fail_build(key);
            } else {
                self.close_open_tunnel(key, 1 - side);
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

    /// Tears down the tunnels of a connection that is going away.
    pub(super) fn forget_tunnels(&mut self, s: &mut Session) {
        for (_, key) in std::mem::take(&mut s.tunnels) {
            let Some(t) = self.tunnels.get(&key) else {
                continue;
            };
            if t.building.is_some() {
                self.fail_build(key);
            } else {
                let side = if t.ends[ORIGIN].conn == s.id {
                    ORIGIN
                } else {
                    MEMBER
                };
                self.close_open_tunnel(key, 1 - side);
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
        let side = if t.ends[ORIGIN].conn == conn && t.ends[ORIGIN].tun_id == Some(tun_id) {
            ORIGIN
        } else {
            MEMBER
        };
        Some((key, side))
    }

    /// Ends a tunnel still being built: the builder gets a timed-out TUN_CONFIRM.
    fn fail_build(&mut self, key: u64) {
        let Some(t) = self.remove_tunnel(key) else {
            return;
        };
        if let Some(deadline) = t.building {
            self.timers.remove(&(deadline, Timer::TunnelBuild(key)));
        }
        self.stats.tunnels_failed += 1;
        let origin = &t.ends[ORIGIN];
        let origin_tun = origin.tun_id.unwrap_or_default();
        if let Some(s) = self.conns.map.get_mut(&origin.conn) {
            s.tunnels.remove(&origin_tun);
        }
        if let Some(m) = self.conns.map.get_mut(&t.ends[MEMBER].conn) {
            m.builds.remove(&t.build_id);
        }
        self.conns.send(
            origin.conn,
            &NodePacket::TunConfirm {
                tun_id: origin_tun,
                chunk_limit: None,
            },
        );
    }

    /// Closes an open tunnel from one end: what was already queued toward `survivor` is
    /// delivered (no data lost), then it is told the tunnel closed.
    fn close_open_tunnel(&mut self, key: u64, survivor: usize) {
        self.pump(key, survivor, true);
        let Some(t) = self.remove_tunnel(key) else {
            return;
        };
        let end = &t.ends[survivor];
        let Some(tun_id) = end.tun_id else {
            return;
        };
        if let Some(s) = self.conns.map.get_mut(&end.conn) {
            s.tunnels.remove(&tun_id);
        }
        self.conns.send(
            end.conn,
            &NodePacket::TunClose {
                tun_id,
                reason: Name::default(),
            },
        );
    }

    /// Removes a tunnel, releasing the memory of chunks still queued in it.
    fn remove_tunnel(&mut self, key: u64) -> Option<Tunnel> {
        let t = self.tunnels.remove(&key)?;
        for end in &t.ends {
            self.conns.mem.release(end.queued as usize);
        }
        Some(t)
    }

    /// Forwards what tunnel `key` holds for `conn` (it drained and takes more again).
    pub(super) fn pump_toward(&mut self, key: u64, conn: ConnId) {
        let Some(t) = self.tunnels.get(&key) else {
            return;
        };
        if let Some(side) = t.ends.iter().position(|e| e.conn == conn) {
            self.pump(key, side, false);
        }
    }

    /// Forwards queued chunks to end `dest` as its allowance permits and while its client
    /// is not congested (the tunnel's window then holds the sender instead), and re-grants
    /// the sender what was forwarded. `force` (the sender closed) forwards everything and
    /// re-grants nothing.
    fn pump(&mut self, key: u64, dest: usize, force: bool) {
        let Node { tunnels, conns, .. } = self;
        let Some(t) = tunnels.get_mut(&key) else {
            return;
        };
        let (Some(dest_tun), src) = (t.ends[dest].tun_id, &t.ends[1 - dest]) else {
            return;
        };
        let (src_conn, src_tun) = (src.conn, src.tun_id);
        let end = &mut t.ends[dest];
        let mut forwarded = 0u64;
        while let Some(front) = end.queue.front() {
            if !force && conns.is_congested(end.conn) {
                break;
            }
            let len = front.payload.len() as u64;
            // Only the first chunk of a message whose predecessor is complete waits for
            // allowance; continuations go regardless, or a message larger than the
            // receiver's window would deadlock.
            let gated = front.size_or_cont != 0 && end.remaining == 0;
            if gated && !force && end.allowance < len as i64 {
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
            conns.send(
                end.conn,
                &NodePacket::TunTransfer {
                    tun_id: dest_tun,
                    size_or_cont: chunk.size_or_cont,
                    payload: chunk.payload,
                },
            );
        }
        if forwarded > 0 && !force {
            if let Some(src_tun) = src_tun {
                conns.write(src_conn, |out| encode_tun_allow(out, src_tun, forwarded));
            }
        }
    }
}
