//! Forwarding a tunnel's data: chunks queue toward an end and go as its allowance permits.
//! A client gets chunks while it is not congested (the tunnel's window then holds the
//! sender instead), the first chunk of each message only within its allowance; another
//! node gets them within its window. What was forwarded is re-granted to the sender.
//!
//! The node drives forwarding one chunk at a time ([`Tunnels::pump_step`], then
//! [`Tunnels::regrant`]), since a client may become congested by the chunk before.

use super::{Chunk, End, Tunnels};
use crate::mesh::Class;
use crate::node::effect::{Effect, Effects, Refusal, to_peer};
use crate::node::ids::{ConnId, Endpoint, TunKey};
use crate::node::wire::NodeMsg;
use crate::relay::NodePacket;
use bytes::Bytes;

impl Tunnels {
    /// The client at end `dest` of tunnel `key`, if it is a client (its congestion gates
    /// what is forwarded to it).
    pub(crate) fn client_at(&self, key: TunKey, dest: usize) -> Option<ConnId> {
        match self.tunnels.get(&key)?.ends[dest].at {
            Endpoint::Local(conn, _) => Some(conn),
            _ => None,
        }
    }

    /// Forwards the next chunk queued toward end `dest` of tunnel `key` if it may go now
    /// (`congested`: that end is a client over its congestion mark); returns its size, or
    /// `None` if nothing went.
    pub(crate) fn pump_step(
        &mut self,
        key: TunKey,
        dest: usize,
        congested: bool,
        fx: &mut Effects,
    ) -> Option<u64> {
        let end = &mut self.tunnels.get_mut(&key)?.ends[dest];
        let front = end.queue.front()?;
        let len = front.payload.len() as u64;
        let may = match end.at {
            Endpoint::Local(..) => {
                // Only the first chunk of a message whose predecessor is complete waits for
                // allowance; continuations go regardless, or a message larger than the
                // receiver's window would deadlock.
                let gated = front.size_or_cont != 0 && end.remaining == 0;
                !(congested || gated && end.allowance < len as i64)
            }
            Endpoint::Remote(..) => end.allowance >= len as i64,
            Endpoint::Nowhere => false,
        };
        if !may {
            return None;
        }
        forward_front(end, fx)
    }

    /// Re-grants the sender of the data forwarded to end `dest` what went: a client at
    /// once, another node in batches of an eighth of the window, not per chunk.
    pub(crate) fn regrant(&mut self, key: TunKey, dest: usize, forwarded: u64, fx: &mut Effects) {
        if forwarded == 0 {
            return;
        }
        let Some(t) = self.tunnels.get_mut(&key) else {
            return;
        };
        let src = &mut t.ends[1 - dest];
        match src.at {
            Endpoint::Local(conn, Some(id)) => {
                let grant = NodePacket::TunAllow {
                    tun_id: id.0,
                    space: forwarded,
                };
                fx.push(Effect::Send(conn, grant));
            }
            Endpoint::Remote(node, tun) => {
                src.owed += forwarded;
                if src.owed >= self.cfg.tunnel_window / 8 {
                    let space = std::mem::take(&mut src.owed);
                    let msg = NodeMsg::TunnelAllow { tun: tun.0, space };
                    fx.push(to_peer(node, Class::Control, &msg, Refusal::Ignore));
                }
            }
            Endpoint::Local(_, None) | Endpoint::Nowhere => {}
        }
    }

    /// Everything queued toward `dest` goes now, whatever the allowance: the sender closed.
    /// Nothing is re-granted.
    pub(super) fn forward_all(&mut self, key: TunKey, dest: usize, fx: &mut Effects) {
        let Some(t) = self.tunnels.get_mut(&key) else {
            return;
        };
        let end = &mut t.ends[dest];
        if matches!(end.at, Endpoint::Nowhere) {
            return;
        }
        while forward_front(end, fx).is_some() {}
    }

    /// More allowance for end `side` of tunnel `key`: what waits for it may go.
    pub(super) fn grant(&mut self, key: TunKey, side: usize, space: u64, fx: &mut Effects) {
        if let Some(t) = self.tunnels.get_mut(&key) {
            let space = i64::try_from(space).unwrap_or(i64::MAX);
            t.ends[side].allowance = t.ends[side].allowance.saturating_add(space);
        }
        fx.push(Effect::Pump(key, side));
    }

    /// Queues a chunk toward end `dest`, charged to the memory budget; false if that
    /// would put more than `bound` bytes in the queue.
    pub(super) fn enqueue(
        &mut self,
        key: TunKey,
        dest: usize,
        size_or_cont: u64,
        payload: Bytes,
        bound: u64,
        fx: &mut Effects,
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
        fx.push(Effect::Charge(payload.len()));
        end.queue.push_back(Chunk {
            size_or_cont,
            payload,
        });
        end.queued <= bound
    }
}

/// Sends the chunk at the front of `end`'s queue to it; returns its size (`None`: nothing
/// was queued).
fn forward_front(end: &mut End, fx: &mut Effects) -> Option<u64> {
    let chunk = end.queue.pop_front()?;
    let len = chunk.payload.len() as u64;
    end.queued -= len;
    if len > 0 {
        fx.push(Effect::Release(len as usize));
    }
    end.allowance -= len as i64;
    end.remaining = if chunk.size_or_cont != 0 {
        chunk.size_or_cont.saturating_sub(len)
    } else {
        end.remaining.saturating_sub(len)
    };
    match end.at {
        Endpoint::Local(conn, id) => {
            let packet = NodePacket::TunTransfer {
                tun_id: id.map_or(u64::MAX, |id| id.0),
                size_or_cont: chunk.size_or_cont,
                payload: chunk.payload,
            };
            fx.push(Effect::Send(conn, packet));
        }
        Endpoint::Remote(node, tun) => {
            let msg = NodeMsg::TunnelData {
                tun: tun.0,
                size_or_cont: chunk.size_or_cont,
                payload: chunk.payload,
            };
            fx.push(to_peer(node, Class::Stream, &msg, Refusal::Ignore));
        }
        Endpoint::Nowhere => {}
    }
    Some(len)
}
