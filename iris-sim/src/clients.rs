//! The simulator as the driver of the workload's relay clients: placing them, attaching
//! them to their nodes once ready, carrying bytes between them and the nodes (a client's
//! socket drains at its read rate, FIFO; what a paused client writes waits), letting actors
//! act, and reporting everything to the auditor.

use crate::auditor::{Audit, Auditor, Windows};
use crate::workload::{Reaction, Report, Role, Sent, Slot};
use crate::{Event, Sim};
use bytes::Bytes;
use iris_proto::{ConnId, Input, Instant};
use rand::RngExt;

impl Sim {
    /// Gives every client slot of the workload a role and a home node.
    pub(crate) fn place_clients(&mut self) {
        let Some(w) = self.cfg.workload.clone() else {
            return;
        };
        let nodes = self.cfg.nodes;
        let mut roles = Vec::new();
        for i in 0..w.services {
            let slow = self.rng.random_bool(w.slow_services);
            roles.push(Role::Service {
                cluster: i % w.clusters.max(1),
                delay: if slow { w.slow_delay } else { w.fast_delay },
            });
        }
        for topic in 0..w.topics {
            for _ in 0..w.subscribers_per_topic {
                roles.push(Role::Subscriber { topic });
            }
        }
        roles.extend((0..w.actors).map(|_| Role::Actor));
        for role in roles {
            let home = self.rng.random_range(0..nodes);
            self.clients.push(Slot {
                role,
                home,
                life: None,
            });
        }
        // Trees form within a beat or two of a join; messages owe their delivery within five
        // seconds to members joined two seconds before. Delay spikes hold a link's every
        // message, control ones too: a message may meet one on its way and its repair
        // another (a swarm run's subscription was held 4.5 s by one, and the recipient
        // below it died 6.7 s after the send), so where spikes are on, the horizon grows by
        // two of them.
        let spikes = if self.cfg.spike_rate > 0.0 {
            2 * self.cfg.spike_delay.as_nanos() as u64
        } else {
            0
        };
        let mut auditor = Auditor::new(Windows {
            settle: 2_000_000_000,
            horizon: 5_000_000_000 + spikes,
        });
        auditor.inject_duplicate = self.cfg.inject_duplicate_deliveries;
        self.auditor = Some(auditor);
    }

    /// Node `slot` is ready: its clients attach (a new incarnation each).
    pub(crate) fn attach_clients(&mut self, slot: usize) {
        let Some(node_inc) = self.slots[slot].as_ref().map(|n| n.inc) else {
            return;
        };
        let homed: Vec<usize> = (0..self.clients.len())
            .filter(|&c| self.clients[c].home == slot && self.clients[c].life.is_none())
            .collect();
        for client in homed {
            let conn = ConnId(self.next_client_conn);
            self.next_client_conn += 1;
            let key = self.next_client_key;
            self.next_client_key += 1;
            let init = self.clients[client].attach(key, node_inc, conn, self.now);
            self.conn_owner.insert((slot, conn), client);
            let now = Instant::from_nanos(self.now);
            if let Some(n) = self.slots[slot].as_mut() {
                n.node.handle(now, Input::ClientConnected(conn));
            }
            self.client_write(client, init);
            if self.clients[client].role == Role::Actor {
                self.schedule_act(client, key);
            }
        }
    }

    /// Node `slot` died: so did its clients.
    pub(crate) fn clients_die(&mut self, slot: usize) {
        for client in 0..self.clients.len() {
            if self.clients[client].home != slot {
                continue;
            }
            if let Some(life) = self.clients[client].life.take() {
                self.conn_owner.remove(&(slot, life.conn));
                if let Some(a) = self.auditor.as_mut() {
                    a.left(life.key, self.now);
                }
            }
        }
    }

    /// The node wrote to a client: it is read when the client's socket gets to it.
    pub(crate) fn client_transmit(&mut self, slot: usize, conn: ConnId, data: Bytes) {
        let Some(&client) = self.conn_owner.get(&(slot, conn)) else {
            return;
        };
        let rate = self
            .cfg
            .workload
            .as_ref()
            .map_or(u64::MAX, |w| w.read_rate.max(1));
        let Some(life) = self.clients[client].life.as_mut() else {
            return;
        };
        let at = life.read_free.max(self.now) + data.len() as u64 * 1_000_000_000 / rate;
        life.read_free = at;
        let key = life.key;
        let written = self.now;
        self.push(
            at,
            Event::ClientRead {
                client,
                life: key,
                data,
                written,
            },
        );
    }

    /// The node closed a client (it broke the protocol, or was cut): it is gone.
    pub(crate) fn client_closed(&mut self, slot: usize, conn: ConnId) {
        let Some(client) = self.conn_owner.remove(&(slot, conn)) else {
            return;
        };
        if let Some(life) = self.clients[client].life.take()
            && let Some(a) = self.auditor.as_mut()
        {
            a.left(life.key, self.now);
        }
    }

    /// The node stopped (or resumed) reading a client.
    pub(crate) fn client_paused(&mut self, slot: usize, conn: ConnId, paused: bool) {
        let Some(&client) = self.conn_owner.get(&(slot, conn)) else {
            return;
        };
        let Some(life) = self.clients[client].life.as_mut() else {
            return;
        };
        life.paused = paused;
        if !paused && !life.waiting.is_empty() {
            let data = life.waiting.split().freeze();
            self.client_write(client, data);
        }
    }

    /// A client writes to its node (or holds it while the node does not read it).
    pub(crate) fn client_write(&mut self, client: usize, data: Bytes) {
        let slot = self.clients[client].home;
        let Some(life) = self.clients[client].life.as_mut() else {
            return;
        };
        if life.paused {
            life.waiting.extend_from_slice(&data);
            return;
        }
        let conn = life.conn;
        let now = Instant::from_nanos(self.now);
        if let Some(n) = self.slots[slot].as_mut().filter(|n| n.inc == life.node_inc) {
            n.node.handle(now, Input::ClientData(conn, &data));
            self.after(slot);
        }
    }

    /// A client read what its node wrote: it reacts, then the node hears it was read.
    pub(crate) fn client_read(&mut self, client: usize, key: u64, data: Bytes, written: u64) {
        if self.clients[client]
            .life
            .as_ref()
            .is_none_or(|l| l.key != key)
        {
            return;
        }
        // Every byte a client reads is part of the run's trace.
        for chunk in data.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.hash = (self.hash ^ u64::from_le_bytes(word)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        let messages = self.cfg.workload.as_ref().map_or(0, |w| w.tunnel_messages);
        let (reports, reactions) = self.clients[client].read(&data, messages);
        self.report(client, key, reports, written);
        for r in reactions {
            match r {
                Reaction::Send(bytes) => self.client_write(client, bytes),
                Reaction::Later(delay, bytes) => self.push(
                    self.now + delay,
                    Event::ClientWrite {
                        client,
                        life: key,
                        data: bytes,
                    },
                ),
            }
        }
        let slot = self.clients[client].home;
        let Some(life) = self.clients[client].life.as_ref() else {
            return;
        };
        let (conn, inc) = (life.conn, life.node_inc);
        let now = Instant::from_nanos(self.now);
        if let Some(n) = self.slots[slot].as_mut().filter(|n| n.inc == inc) {
            n.node.handle(now, Input::ClientFlushed(conn, data.len()));
            self.after(slot);
        }
    }

    /// An actor acts (during the churn phase only: the quiet phase lets everything land).
    pub(crate) fn act(&mut self, client: usize, key: u64) {
        if self.now >= self.churn_until
            || self.clients[client]
                .life
                .as_ref()
                .is_none_or(|l| l.key != key)
        {
            return;
        }
        let Some(w) = self.cfg.workload.clone() else {
            return;
        };
        let msg_id = self.next_msg;
        self.next_msg += 1;
        let rng = &mut self.rng;
        let mut pick = |n: u64| rng.random_range(0..n.max(1));
        let action = self.clients[client].act(&mut pick, msg_id, &w);
        if let Some((bytes, sent)) = action {
            let now = self.now;
            if let Some(a) = self.auditor.as_mut() {
                match sent {
                    Sent::Broadcast { id, cluster } => a.sent_broadcast(id, cluster, key, now),
                    Sent::Publish { id, topic } => a.sent_publish(id, topic, key, now),
                    Sent::Request {
                        id,
                        cluster,
                        timeout_ms,
                    } => a.sent_request(key, id, cluster, now, now + timeout_ms * 1_000_000),
                    Sent::Tunnel => {}
                }
            }
            self.client_write(client, bytes);
        }
        self.schedule_act(client, key);
    }

    fn schedule_act(&mut self, client: usize, key: u64) {
        let rate = self
            .cfg
            .workload
            .as_ref()
            .map_or(0.0, |w| w.actions_per_sec);
        if rate > 0.0 {
            let at = self.now + self.gap(rate);
            self.push(at, Event::Act { client, life: key });
        }
    }

    /// Hands the auditor what a client saw; `written` is when the node wrote it (what the
    /// node did, whatever the client's own reading speed).
    fn report(&mut self, client: usize, key: u64, reports: Vec<Report>, written: u64) {
        let now = self.now;
        let slot = &self.clients[client];
        let Some(a) = self.auditor.as_mut() else {
            return;
        };
        for r in reports {
            match r {
                Report::Joined => {
                    let (cluster, topics) = match slot.role {
                        Role::Service { cluster, .. } => (Some(cluster), vec![]),
                        Role::Subscriber { topic } => (None, vec![topic]),
                        Role::Actor => (None, vec![]),
                    };
                    a.joined(key, slot.home, cluster, topics, now);
                }
                Report::Broadcast(id) => a.got_broadcast(key, id),
                Report::Publish(id) => a.got_publish(key, id),
                Report::RequestDelivered { origin, id } => {
                    a.request_delivered(key, origin, id, written)
                }
                Report::Reply {
                    id,
                    success,
                    timed_out,
                } => a.got_reply(key, id, success, timed_out),
                Report::TunnelStarted(t) => {
                    let messages = self.cfg.workload.as_ref().map_or(0, |w| w.tunnel_messages);
                    a.tunnel_started(t, key, messages)
                }
                Report::TunnelAccepted(t) => a.tunnel_accepted(t, key),
                Report::TunnelMessage { tunnel, side, seq } => a.tunnel_message(tunnel, side, seq),
                Report::TunnelClosed {
                    tunnel,
                    side,
                    reason,
                } => a.tunnel_closed(tunnel, side, &reason),
            }
        }
    }

    /// What the auditor concluded, at the run's end.
    pub(crate) fn finish_audit(&mut self, end: u64) -> Option<Audit> {
        self.auditor.take().map(|a| a.finish(end))
    }
}
