//! Tunnels: ordered, flow-controlled streams of whole messages.

use super::connection::Inner;
use super::{Error, Result};
use bytes::{Bytes, BytesMut};
use event_listener::Event;
use iris_proto::relay::client::{Reassembly, chunks};
use iris_proto::relay::codec::{
    Limits, encode_tun_allow, encode_tun_close_request, encode_tun_confirm, encode_tun_transfer,
};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The window this client grants the node per tunnel, as the Go client does.
pub const TUNNEL_WINDOW: u64 = 64 << 20;

/// One end of a tunnel. Dropping an open tunnel closes it without waiting; call
/// [`Tunnel::close`] to wait for the node's acknowledgement.
#[derive(Debug)]
pub struct Tunnel {
    pub(crate) shared: Arc<TunnelShared>,
    pub(crate) conn: Arc<Inner>,
}

/// State shared between a [`Tunnel`] and the connection's reader.
#[derive(Debug)]
pub(crate) struct TunnelShared {
    pub(crate) id: u64,
    pub(crate) state: Mutex<TunnelState>,
    pub(crate) notify: Event,
}

#[derive(Debug)]
pub(crate) struct TunnelState {
    /// What the node allows this end to send.
    pub(crate) allowance: i64,
    pub(crate) chunk_limit: usize,
    /// Whole messages received and not yet taken.
    pub(crate) inbox: VecDeque<Bytes>,
    pub(crate) reassembly: Reassembly,
    /// Set once the tunnel closed (empty text: graceful).
    pub(crate) closed: Option<String>,
}

impl TunnelShared {
    pub(crate) fn new(id: u64, chunk_limit: usize) -> TunnelShared {
        TunnelShared {
            id,
            state: Mutex::new(TunnelState {
                allowance: 0,
                chunk_limit,
                inbox: VecDeque::new(),
                reassembly: Reassembly::default(),
                closed: None,
            }),
            notify: Event::new(),
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, TunnelState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A chunk arrived; returns the bytes to re-grant for discarded partial messages.
    pub(crate) fn on_transfer(&self, size_or_cont: u64, payload: &[u8], limits: &Limits) -> usize {
        let mut s = self.lock();
        let r = s
            .reassembly
            .push(size_or_cont, payload, limits.max_message_size);
        if let Some(m) = r.message {
            s.inbox.push_back(m);
            drop(s);
            self.notify.notify(usize::MAX);
        }
        r.discarded
    }

    pub(crate) fn on_allow(&self, space: u64) {
        let mut s = self.lock();
        s.allowance = s
            .allowance
            .saturating_add(i64::try_from(space).unwrap_or(i64::MAX));
        drop(s);
        self.notify.notify(usize::MAX);
    }

    pub(crate) fn on_close(&self, reason: String) {
        let mut s = self.lock();
        if s.closed.is_none() {
            s.closed = Some(reason);
        }
        drop(s);
        self.notify.notify(usize::MAX);
    }
}

impl Tunnel {
    /// Sends one message, blocking while the node's allowance is used up. On timeout the
    /// message may be partly sent; the other end discards the part when the next begins.
    pub async fn send(&self, message: impl Into<Bytes>, timeout: Duration) -> Result<()> {
        let message = message.into();
        if message.is_empty() {
            return Err(Error::InvalidArgument("empty tunnel message"));
        }
        self.conn
            .spawner
            .timeout(timeout, self.send_chunks(message))
            .await
            .unwrap_or(Err(Error::TimedOut))
    }

    async fn send_chunks(&self, message: Bytes) -> Result<()> {
        let limit = self.shared.lock().chunk_limit;
        for (size_or_cont, chunk) in chunks(&message, limit) {
            // Room in the socket buffer first, then the allowance: once the allowance is
            // taken the chunk is queued without another await, so a timeout never loses it.
            self.conn.wait_for_space().await?;
            loop {
                let notified = self.shared.notify.listen();
                {
                    let mut s = self.shared.lock();
                    if s.closed.is_some() {
                        return Err(Error::Closed);
                    }
                    if s.allowance >= chunk.len() as i64 {
                        s.allowance -= chunk.len() as i64;
                        break;
                    }
                }
                notified.await;
            }
            self.conn
                .push(|out| encode_tun_transfer(out, self.shared.id, size_or_cont, &chunk))?;
        }
        Ok(())
    }

    /// The next whole message, in order.
    pub async fn recv(&self, timeout: Duration) -> Result<Bytes> {
        self.conn
            .spawner
            .timeout(timeout, self.recv_inner())
            .await
            .unwrap_or(Err(Error::TimedOut))
    }

    async fn recv_inner(&self) -> Result<Bytes> {
        loop {
            let notified = self.shared.notify.listen();
            {
                let mut s = self.shared.lock();
                if let Some(m) = s.inbox.pop_front() {
                    drop(s);
                    // The window is re-granted per message taken, as the Go client does.
                    let _ = self
                        .conn
                        .push(|out| encode_tun_allow(out, self.shared.id, m.len() as u64));
                    return Ok(m);
                }
                if s.closed.is_some() {
                    return Err(Error::Closed);
                }
            }
            notified.await;
        }
    }

    /// Closes the tunnel and waits for the node's acknowledgement.
    pub async fn close(&self) -> Result<()> {
        let mut notified = self.shared.notify.listen();
        if self.shared.lock().closed.is_some() {
            return Ok(());
        }
        self.conn
            .push(|out| encode_tun_close_request(out, self.shared.id))?;
        loop {
            if self.shared.lock().closed.is_some() {
                return Ok(());
            }
            notified.await;
            notified = self.shared.notify.listen();
        }
    }

    /// The close reason once closed: empty for a graceful close.
    pub fn closed_reason(&self) -> Option<String> {
        self.shared.lock().closed.clone()
    }
}

/// Builds the packets that accept an inbound tunnel: TUN_CONFIRM then our window.
pub(crate) fn encode_accept(out: &mut BytesMut, build_id: u64, tun_id: u64) {
    encode_tun_confirm(out, build_id, tun_id);
    encode_tun_allow(out, tun_id, TUNNEL_WINDOW);
}
