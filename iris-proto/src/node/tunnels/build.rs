//! Building a tunnel: a client's TUN_INIT, the offer to a member (here, or on another node
//! that the build reached as an anycast), the member's TUN_CONFIRM, and the origin hearing
//! of it.

use super::{End, MEMBER, ORIGIN, Tunnel, Tunnels};
use crate::mesh::Class;
use crate::node::effect::{Effect, Effects, Refusal, to_peer};
use crate::node::ids::{BuildId, ClientTunId, ConnId, Endpoint, KeyCounter, PeerTunKey, TunKey};
use crate::node::wire::NodeMsg;
use crate::overlay::Contact;
use crate::relay::NodePacket;
use crate::time::Instant;
use std::time::Duration;

impl Tunnels {
    /// The checks of a client's TUN_INIT: false if it got its answer already (a violation,
    /// or its one timed-out TUN_CONFIRM: over its bound, or a zero timeout).
    pub(crate) fn check_init(
        &mut self,
        conn: ConnId,
        id: ClientTunId,
        timeout_ms: u64,
        fx: &mut Effects,
    ) -> bool {
        let o = self.of.entry(conn).or_default();
        if o.tunnels.contains_key(&id) {
            let what = format!("tunnel id {} is already in use", id.0);
            fx.push(Effect::Violation(conn, what));
            return false;
        }
        if o.count() >= self.cfg.max_tunnels_per_client || timeout_ms == 0 {
            self.refuse_build(conn, id, fx);
            return false;
        }
        true
    }

    /// The one timed-out TUN_CONFIRM for a TUN_INIT no tunnel came of.
    pub(crate) fn refuse_build(&mut self, conn: ConnId, id: ClientTunId, fx: &mut Effects) {
        self.stats.tunnels_failed += 1;
        let refused = NodePacket::TunConfirm {
            tun_id: id.0,
            chunk_limit: None,
        };
        fx.push(Effect::Send(conn, refused));
    }

    /// A tunnel of a local client, being built; its member is not known yet.
    pub(crate) fn open(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: ClientTunId,
        timeout_ms: u64,
        keys: &mut KeyCounter,
    ) -> TunKey {
        let key = TunKey(keys.next());
        self.of.entry(conn).or_default().tunnels.insert(id, key);
        self.tunnels.insert(
            key,
            Tunnel {
                building: true,
                build_id: BuildId(0),
                ends: [
                    End::new(Endpoint::Local(conn, Some(id))),
                    End::new(Endpoint::Nowhere),
                ],
            },
        );
        let wait = Duration::from_millis(timeout_ms).min(self.cfg.tunnel_confirm_timeout);
        self.timers.set(key, now + wait);
        key
    }

    /// A build that travels to a member on some node: with no member anywhere it times
    /// out, as the original did, after its timeout or twice the confirmation time.
    pub(crate) fn wait_for_member(&mut self, now: Instant, key: TunKey, timeout_ms: u64) {
        let wait = Duration::from_millis(timeout_ms).min(self.cfg.tunnel_confirm_timeout * 2);
        self.timers.set(key, now + wait);
    }

    /// A tunnel this node was chosen for is offered to `member` (`key` names the tunnel
    /// here; its other end is in it already).
    pub(crate) fn offer(&mut self, now: Instant, key: TunKey, member: ConnId, fx: &mut Effects) {
        let m = self.of.entry(member).or_default();
        let build_id = BuildId(m.next_build_id);
        m.next_build_id += 1;
        m.builds.insert(build_id, key);
        let Some(t) = self.tunnels.get_mut(&key) else {
            return;
        };
        t.build_id = build_id;
        t.ends[MEMBER].at = Endpoint::Local(member, None);
        let deadline = now + self.cfg.tunnel_confirm_timeout;
        let at = self.timers.get(key).map_or(deadline, |d| d.min(deadline));
        self.timers.set(key, at);
        let offer = NodePacket::TunInit {
            build_id: build_id.0,
            chunk_limit: self.cfg.limits.max_chunk_size,
        };
        fx.push(Effect::Send(member, offer));
    }

    /// A tunnel build from another node ended here: `member` is offered it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn accept_remote(
        &mut self,
        now: Instant,
        origin: Contact,
        their_key: PeerTunKey,
        budget_ms: u64,
        member: ConnId,
        keys: &mut KeyCounter,
        fx: &mut Effects,
    ) {
        let key = TunKey(keys.next());
        self.tunnels.insert(
            key,
            Tunnel {
                building: true,
                build_id: BuildId(0),
                ends: [
                    End::new(Endpoint::Remote(origin, their_key)),
                    End::new(Endpoint::Nowhere),
                ],
            },
        );
        self.timers.set(key, now + Duration::from_millis(budget_ms));
        self.stats.tunnels_served_for_peers += 1;
        self.offer(now, key, member, fx);
    }

    /// A member's TUN_CONFIRM of offer `build` under its tunnel id `id`.
    pub(crate) fn handle_confirm(
        &mut self,
        conn: ConnId,
        build: BuildId,
        id: ClientTunId,
        fx: &mut Effects,
    ) {
        let o = self.of.entry(conn).or_default();
        let taken = |key: &TunKey| !self.tunnels.get(key).is_some_and(|t| t.building);
        let Some(key) = o.builds.remove(&build).filter(|k| !taken(k)) else {
            // The offer expired or its builder left: tell the member its tunnel is dead,
            // unless the id names one of its live tunnels.
            if !o.tunnels.contains_key(&id) {
                let dead = NodePacket::TunClose {
                    tun_id: id.0,
                    reason: "tunnel offer expired".into(),
                };
                fx.push(Effect::Send(conn, dead));
            }
            return;
        };
        if o.tunnels.contains_key(&id) {
            let what = format!("tunnel id {} is already in use", id.0);
            return fx.push(Effect::Violation(conn, what));
        }
        o.tunnels.insert(id, key);
        let window = self.cfg.tunnel_window;
        let Some(t) = self.tunnels.get_mut(&key) else {
            return;
        };
        t.building = false;
        self.timers.cancel(key);
        t.ends[MEMBER].at = Endpoint::Local(conn, Some(id));
        let origin = t.ends[ORIGIN].at;
        self.stats.tunnels_opened += 1;
        match origin {
            Endpoint::Local(origin, Some(origin_id)) => self.open_for_client(origin, origin_id, fx),
            Endpoint::Remote(node, tun) => {
                // The origin's node learns the tunnel is up, with the window it may fill.
                fx.push(Effect::Pin(node.id));
                let msg = NodeMsg::TunnelConfirm {
                    tun: tun.0,
                    peer: key.0,
                    window,
                };
                fx.push(to_peer(node, Class::Control, &msg, Refusal::Ignore));
            }
            Endpoint::Local(_, None) | Endpoint::Nowhere => {}
        }
        let grant = NodePacket::TunAllow {
            tun_id: id.0,
            space: window,
        };
        fx.push(Effect::Send(conn, grant));
    }

    /// The member's node confirmed this node's tunnel `key`: the client hears it is up.
    pub(crate) fn handle_remote_confirm(
        &mut self,
        from: Contact,
        key: TunKey,
        peer: PeerTunKey,
        window: u64,
        fx: &mut Effects,
    ) {
        if !self.is_building(key) {
            // Given up on already: the member's end must not wait for data.
            let msg = NodeMsg::TunnelClose {
                tun: peer.0,
                reason: "tunnel build timed out".into(),
            };
            return fx.push(to_peer(from, Class::Stream, &msg, Refusal::Ignore));
        }
        let Some(t) = self.tunnels.get_mut(&key) else {
            return;
        };
        t.building = false;
        self.timers.cancel(key);
        t.ends[MEMBER].at = Endpoint::Remote(from, peer);
        t.ends[MEMBER].allowance = i64::try_from(window).unwrap_or(i64::MAX);
        let Endpoint::Local(origin, Some(origin_id)) = t.ends[ORIGIN].at else {
            return;
        };
        fx.push(Effect::Pin(from.id));
        self.stats.tunnels_opened += 1;
        let grant = NodeMsg::TunnelAllow {
            tun: peer.0,
            space: self.cfg.tunnel_window,
        };
        fx.push(to_peer(from, Class::Control, &grant, Refusal::Ignore));
        self.open_for_client(origin, origin_id, fx);
    }

    /// No member took this node's tunnel `key`, or the build could not leave the node.
    pub(crate) fn handle_refused(&mut self, key: TunKey, fx: &mut Effects) {
        if self.is_building(key) {
            self.fail_build(key, fx);
        }
    }

    /// The builder's client hears its tunnel is up, with the node's window.
    fn open_for_client(&mut self, origin: ConnId, id: ClientTunId, fx: &mut Effects) {
        let confirm = NodePacket::TunConfirm {
            tun_id: id.0,
            chunk_limit: Some(self.cfg.limits.max_chunk_size),
        };
        fx.push(Effect::Send(origin, confirm));
        let grant = NodePacket::TunAllow {
            tun_id: id.0,
            space: self.cfg.tunnel_window,
        };
        fx.push(Effect::Send(origin, grant));
    }
}
