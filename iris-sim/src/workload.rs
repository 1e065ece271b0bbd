//! The messaging workload: relay clients on the simulated nodes, speaking the relay protocol
//! through the sans-IO client session, and what they do.
//!
//! Client slots are fixed for the run, each with a role and a home node slot: services in
//! clusters (answering requests after a delay of their own, accepting tunnels and echoing
//! what comes through them), subscribers of topics, and actors that broadcast, publish,
//! request and tunnel at random throughout the churn phase. A client lives while its node
//! does: when the node dies so do its clients, and a new incarnation attaches once the
//! node in that slot is ready again. Every send and every receipt is reported to the
//! [`Auditor`](crate::auditor).

use bytes::{BufMut, Bytes, BytesMut};
use iris_proto::ConnId;
use iris_proto::relay::client::{ClientSession, SessionEvent};
use iris_proto::relay::codec::Limits;
use iris_proto::relay::{ClientPacket, NodePacket, ReplyOutcome};
use std::collections::BTreeMap;

/// What the messaging workload puts on the network.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Clusters.
    pub clusters: usize,
    /// Services, spread over the clusters round-robin, each on a random node.
    pub services: usize,
    /// Topics.
    pub topics: usize,
    /// Subscribers of each topic, each on a random node.
    pub subscribers_per_topic: usize,
    /// Clients that act, each on a random node.
    pub actors: usize,
    /// How often each actor acts (per virtual second, exponential gaps).
    pub actions_per_sec: f64,
    /// Share of services that answer slowly.
    pub slow_services: f64,
    /// How long a fast service takes to answer (nanoseconds).
    pub fast_delay: u64,
    /// How long a slow one does.
    pub slow_delay: u64,
    /// Messages each way through a tunnel before it is closed.
    pub tunnel_messages: u32,
    /// Bytes a client reads per second (its socket drains at that rate).
    pub read_rate: u64,
}

impl Default for Workload {
    fn default() -> Workload {
        Workload {
            clusters: 10,
            services: 100,
            topics: 50,
            subscribers_per_topic: 3,
            actors: 100,
            actions_per_sec: 0.5,
            slow_services: 0.5,
            fast_delay: 2_000_000,
            slow_delay: 100_000_000,
            tunnel_messages: 5,
            read_rate: 50_000_000,
        }
    }
}

impl Workload {
    /// A small one for tests of a few dozen nodes.
    pub fn small() -> Workload {
        Workload {
            clusters: 3,
            services: 9,
            topics: 4,
            subscribers_per_topic: 2,
            actors: 10,
            actions_per_sec: 1.0,
            ..Workload::default()
        }
    }
}

/// What a client slot is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Service { cluster: usize, delay: u64 },
    Subscriber { topic: usize },
    Actor,
}

/// Kinds of payload, first byte of every message a client sends.
mod kind {
    pub(super) const BROADCAST: u8 = 1;
    pub(super) const PUBLISH: u8 = 2;
    pub(super) const REQUEST: u8 = 3;
    pub(super) const REPLY: u8 = 4;
    pub(super) const TUNNEL: u8 = 5;
}

/// An actor's tunnel: built, then `messages` sent, echoed, closed.
#[derive(Debug)]
struct OwnTunnel {
    id: u64,
    open: bool,
    echoes: u32,
}

/// One incarnation of a client.
#[derive(Debug)]
pub(crate) struct Life {
    pub(crate) key: u64,
    pub(crate) node_inc: u64,
    pub(crate) conn: ConnId,
    session: ClientSession,
    pub(crate) accepted: bool,
    pub(crate) paused: bool,
    /// Bytes written while the node did not read this client.
    pub(crate) waiting: BytesMut,
    /// When this client's socket has read everything handed to it so far.
    pub(crate) read_free: u64,
    next_id: u64,
    /// Actor: its tunnels by its own id.
    own_tunnels: BTreeMap<u64, OwnTunnel>,
    /// Service: inbound tunnels by its own id -> the run-wide tunnel id, once known.
    member_tunnels: BTreeMap<u64, Option<u64>>,
}

/// A client slot.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) role: Role,
    pub(crate) home: usize,
    pub(crate) life: Option<Life>,
}

/// What a client does in answer to what it received, for the simulator to carry out.
#[derive(Debug)]
pub(crate) enum Reaction {
    /// Write these bytes to the node.
    Send(Bytes),
    /// Write these bytes after `delay` nanoseconds (a service thinking).
    Later(u64, Bytes),
}

/// What the auditor must hear of, from a client's receipts and sends.
#[derive(Debug)]
pub(crate) enum Report {
    Joined,
    Broadcast(u64),
    Publish(u64),
    RequestDelivered {
        origin: u64,
        id: u64,
    },
    Reply {
        id: u64,
        success: bool,
        timed_out: bool,
    },
    TunnelStarted(u64),
    TunnelAccepted(u64),
    TunnelMessage {
        tunnel: u64,
        side: usize,
        seq: u32,
    },
    TunnelClosed {
        tunnel: u64,
        side: usize,
        reason: String,
    },
}

impl Slot {
    /// Starts a new incarnation: the handshake bytes to write.
    pub(crate) fn attach(&mut self, key: u64, node_inc: u64, conn: ConnId, now: u64) -> Bytes {
        let cluster = match self.role {
            Role::Service { cluster, .. } => format!("svc-{cluster}"),
            _ => String::new(),
        };
        let mut b = BytesMut::new();
        ClientSession::encode_init(&cluster, &mut b);
        if let Role::Subscriber { topic } = self.role {
            ClientPacket::Subscribe {
                topic: format!("topic-{topic}").as_str().into(),
            }
            .encode(&mut b);
        }
        self.life = Some(Life {
            key,
            node_inc,
            conn,
            session: ClientSession::new(Limits::default()),
            accepted: false,
            paused: false,
            waiting: BytesMut::new(),
            read_free: now,
            next_id: 0,
            own_tunnels: BTreeMap::new(),
            member_tunnels: BTreeMap::new(),
        });
        b.freeze()
    }

    /// Takes bytes the node wrote; returns what to report and what to do.
    pub(crate) fn read(
        &mut self,
        data: &[u8],
        tunnel_messages: u32,
    ) -> (Vec<Report>, Vec<Reaction>) {
        let mut reports = Vec::new();
        let mut reactions = Vec::new();
        let role = self.role;
        let Some(life) = self.life.as_mut() else {
            return (reports, reactions);
        };
        life.session.feed(data);
        loop {
            let ev = match life.session.poll() {
                Ok(Some(ev)) => ev,
                Ok(None) => break,
                Err(e) => panic!("the node broke the relay protocol: {e}"),
            };
            let p = match ev {
                SessionEvent::Accepted => {
                    life.accepted = true;
                    reports.push(Report::Joined);
                    continue;
                }
                SessionEvent::Packet(p) => p,
            };
            match p {
                NodePacket::Broadcast { message } => {
                    if let Some((kind::BROADCAST, id, _)) = parse(&message) {
                        reports.push(Report::Broadcast(id));
                    }
                }
                NodePacket::Publish { event, .. } => {
                    if let Some((kind::PUBLISH, id, _)) = parse(&event) {
                        reports.push(Report::Publish(id));
                    }
                }
                NodePacket::Request {
                    id: node_id,
                    request,
                    ..
                } => {
                    if let (Some((kind::REQUEST, id, origin)), Role::Service { delay, .. }) =
                        (parse(&request), role)
                    {
                        reports.push(Report::RequestDelivered { origin, id });
                        let mut b = BytesMut::new();
                        ClientPacket::Reply {
                            id: node_id,
                            outcome: Ok(payload(kind::REPLY, id, origin)),
                        }
                        .encode(&mut b);
                        reactions.push(Reaction::Later(delay, b.freeze()));
                    }
                }
                NodePacket::Reply { id, outcome } => reports.push(Report::Reply {
                    id,
                    success: matches!(outcome, ReplyOutcome::Success(_)),
                    timed_out: outcome == ReplyOutcome::TimedOut,
                }),
                NodePacket::TunInit { build_id, .. } => {
                    let tun_id = life.next_id;
                    life.next_id += 1;
                    life.member_tunnels.insert(tun_id, None);
                    let mut b = BytesMut::new();
                    ClientPacket::TunConfirm { build_id, tun_id }.encode(&mut b);
                    ClientPacket::TunAllow {
                        tun_id,
                        space: 1 << 20,
                    }
                    .encode(&mut b);
                    reactions.push(Reaction::Send(b.freeze()));
                }
                NodePacket::TunConfirm {
                    tun_id,
                    chunk_limit,
                } => {
                    let Some(t) = life.own_tunnels.get_mut(&tun_id) else {
                        continue;
                    };
                    if chunk_limit.is_none() {
                        life.own_tunnels.remove(&tun_id);
                        continue;
                    }
                    t.open = true;
                    reports.push(Report::TunnelStarted(t.id));
                    let mut b = BytesMut::new();
                    ClientPacket::TunAllow {
                        tun_id,
                        space: 1 << 20,
                    }
                    .encode(&mut b);
                    for seq in 0..tunnel_messages {
                        let msg = tunnel_payload(t.id, seq);
                        ClientPacket::TunTransfer {
                            tun_id,
                            size_or_cont: msg.len() as u64,
                            payload: msg,
                        }
                        .encode(&mut b);
                    }
                    reactions.push(Reaction::Send(b.freeze()));
                }
                NodePacket::TunTransfer {
                    tun_id, payload, ..
                } => {
                    let Some((tunnel, seq)) = parse_tunnel(&payload) else {
                        continue;
                    };
                    if let Some(t) = life.own_tunnels.get_mut(&tun_id) {
                        // An echo back to the actor.
                        reports.push(Report::TunnelMessage {
                            tunnel,
                            side: 0,
                            seq,
                        });
                        t.echoes += 1;
                        if t.echoes == tunnel_messages {
                            let mut b = BytesMut::new();
                            ClientPacket::TunClose { tun_id }.encode(&mut b);
                            reactions.push(Reaction::Send(b.freeze()));
                        }
                    } else if let Some(known) = life.member_tunnels.get_mut(&tun_id) {
                        if known.is_none() {
                            *known = Some(tunnel);
                            reports.push(Report::TunnelAccepted(tunnel));
                        }
                        reports.push(Report::TunnelMessage {
                            tunnel,
                            side: 1,
                            seq,
                        });
                        // Echo, after thinking as long as for a request, with what it
                        // grants back for the node to keep sending.
                        let delay = match role {
                            Role::Service { delay, .. } => delay,
                            _ => 0,
                        };
                        let mut b = BytesMut::new();
                        ClientPacket::TunTransfer {
                            tun_id,
                            size_or_cont: payload.len() as u64,
                            payload: payload.clone(),
                        }
                        .encode(&mut b);
                        ClientPacket::TunAllow {
                            tun_id,
                            space: payload.len() as u64,
                        }
                        .encode(&mut b);
                        reactions.push(Reaction::Later(delay, b.freeze()));
                    }
                }
                NodePacket::TunClose { tun_id, reason } => {
                    if let Some(t) = life.own_tunnels.remove(&tun_id) {
                        if t.open {
                            reports.push(Report::TunnelClosed {
                                tunnel: t.id,
                                side: 0,
                                reason: reason.as_str().to_string(),
                            });
                        }
                    } else if let Some(Some(tunnel)) = life.member_tunnels.remove(&tun_id) {
                        reports.push(Report::TunnelClosed {
                            tunnel,
                            side: 1,
                            reason: reason.as_str().to_string(),
                        });
                    }
                }
                NodePacket::TunAllow { .. }
                | NodePacket::Init { .. }
                | NodePacket::Deny { .. }
                | NodePacket::Close { .. } => {}
            }
        }
        (reports, reactions)
    }

    /// An actor's next action: the bytes to write and what it reports as sent. `pick`
    /// gives random numbers below its argument; `msg_id` is a fresh run-wide id.
    pub(crate) fn act(
        &mut self,
        pick: &mut impl FnMut(u64) -> u64,
        msg_id: u64,
        w: &Workload,
    ) -> Option<(Bytes, Sent)> {
        let life = self.life.as_mut().filter(|l| l.accepted)?;
        let mut b = BytesMut::new();
        let sent = match pick(10) {
            0..=2 => {
                let cluster = pick(w.clusters as u64) as usize;
                ClientPacket::Broadcast {
                    cluster: format!("svc-{cluster}").as_str().into(),
                    message: payload(kind::BROADCAST, msg_id, life.key),
                }
                .encode(&mut b);
                Sent::Broadcast {
                    id: msg_id,
                    cluster,
                }
            }
            3..=5 => {
                let topic = pick(w.topics as u64) as usize;
                ClientPacket::Publish {
                    topic: format!("topic-{topic}").as_str().into(),
                    event: payload(kind::PUBLISH, msg_id, life.key),
                }
                .encode(&mut b);
                Sent::Publish { id: msg_id, topic }
            }
            6..=8 => {
                let cluster = pick(w.clusters as u64) as usize;
                let timeout_ms = [500, 2000, 5000][pick(3) as usize];
                let id = life.next_id;
                life.next_id += 1;
                ClientPacket::Request {
                    id,
                    cluster: format!("svc-{cluster}").as_str().into(),
                    request: payload(kind::REQUEST, id, life.key),
                    timeout_ms,
                }
                .encode(&mut b);
                Sent::Request {
                    id,
                    cluster,
                    timeout_ms,
                }
            }
            _ => {
                let cluster = pick(w.clusters as u64) as usize;
                let tun_id = life.next_id;
                life.next_id += 1;
                life.own_tunnels.insert(
                    tun_id,
                    OwnTunnel {
                        id: msg_id,
                        open: false,
                        echoes: 0,
                    },
                );
                ClientPacket::TunInit {
                    tun_id,
                    cluster: format!("svc-{cluster}").as_str().into(),
                    timeout_ms: 2000,
                }
                .encode(&mut b);
                Sent::Tunnel
            }
        };
        Some((b.freeze(), sent))
    }
}

/// What an actor sent, for the auditor.
#[derive(Debug)]
pub(crate) enum Sent {
    Broadcast {
        id: u64,
        cluster: usize,
    },
    Publish {
        id: u64,
        topic: usize,
    },
    Request {
        id: u64,
        cluster: usize,
        timeout_ms: u64,
    },
    Tunnel,
}

/// A message: its kind, an id and the sender, padded to 32 bytes.
fn payload(kind: u8, id: u64, sender: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(32);
    b.put_u8(kind);
    b.put_u64(id);
    b.put_u64(sender);
    b.put_bytes(0x5a, 15);
    b.freeze()
}

fn parse(p: &[u8]) -> Option<(u8, u64, u64)> {
    if p.len() != 32 {
        return None;
    }
    let id = u64::from_be_bytes(p[1..9].try_into().ok()?);
    let sender = u64::from_be_bytes(p[9..17].try_into().ok()?);
    Some((p[0], id, sender))
}

fn tunnel_payload(tunnel: u64, seq: u32) -> Bytes {
    let mut b = BytesMut::with_capacity(32);
    b.put_u8(kind::TUNNEL);
    b.put_u64(tunnel);
    b.put_u32(seq);
    b.put_bytes(0xa5, 19);
    b.freeze()
}

fn parse_tunnel(p: &[u8]) -> Option<(u64, u32)> {
    if p.len() != 32 || p[0] != kind::TUNNEL {
        return None;
    }
    Some((
        u64::from_be_bytes(p[1..9].try_into().ok()?),
        u32::from_be_bytes(p[9..13].try_into().ok()?),
    ))
}
