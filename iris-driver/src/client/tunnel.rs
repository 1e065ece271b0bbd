//! Tunnels: ordered, flow-controlled streams of whole messages. The machine keeps their
//! protocol (allowance, chunking, reassembly, closes); a [`Tunnel`] waits on it.

use super::connection::Inner;
use super::error::from_call;
use super::{Error, Result};
use bytes::Bytes;
use event_listener::{Event, EventListener};
use iris_proto::relay::client::{CallError, DEFAULT_TUNNEL_WINDOW, Outgoing, TunnelId};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// The window this client grants the node per tunnel, as the Go client does.
pub const TUNNEL_WINDOW: u64 = DEFAULT_TUNNEL_WINDOW;

/// One end of a tunnel. Dropping an open tunnel closes it without waiting; call
/// [`Tunnel::close`] to wait for the node's acknowledgement.
#[derive(Debug)]
pub struct Tunnel {
    pub(crate) id: TunnelId,
    /// The slot's: woken on a message, more allowance, or the close.
    pub(crate) notify: Arc<Event>,
    pub(crate) conn: Arc<Inner>,
}

/// What a tunnel's handle reads, kept with the connection's machine while the handle
/// exists: the messages the machine delivered and the application has not taken, and
/// why the tunnel closed, once it has.
#[derive(Debug, Default)]
pub(crate) struct TunnelSlot {
    /// Bounded by the window this end grants: the machine re-grants only what is taken.
    pub(crate) inbox: VecDeque<Bytes>,
    /// Empty text: closed gracefully.
    pub(crate) closed: Option<String>,
    pub(crate) notify: Arc<Event>,
}

impl Tunnel {
    /// Sends one message, blocking while the node's allowance is used up. On timeout the
    /// message may be partly sent; the other end discards the part when the next begins.
    pub async fn send(&self, message: impl Into<Bytes>, timeout: Duration) -> Result<()> {
        let mut message = Outgoing::new(self.id, message.into()).map_err(from_call)?;
        self.conn
            .spawner
            .timeout(timeout, self.send_chunks(&mut message))
            .await
            .unwrap_or(Err(Error::TimedOut))
    }

    async fn send_chunks(&self, message: &mut Outgoing) -> Result<()> {
        // A listener for what the last attempt waited on, made before trying once more
        // (no wake-up is lost) and only when the first try found no room.
        let mut waiting: Option<(CallError, EventListener)> = None;
        loop {
            let sent = {
                let mut st = self.conn.lock();
                let sent = st.machine.tunnel_send(message);
                self.conn.drive(st);
                sent
            };
            match sent {
                Ok(()) => return Ok(()),
                Err(wait @ (CallError::SendBufferFull | CallError::NoAllowance)) => {
                    match waiting.take() {
                        Some((on, listener)) if on == wait => listener.await,
                        _ => {
                            let event = match wait {
                                CallError::SendBufferFull => &self.conn.space,
                                _ => &*self.notify,
                            };
                            waiting = Some((wait, event.listen()));
                        }
                    }
                }
                Err(e) => return Err(from_call(e)),
            }
        }
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
        let mut listener = None;
        loop {
            {
                let mut st = self.conn.lock();
                let Some(slot) = st.tunnels.get_mut(&self.id) else {
                    return Err(Error::Closed);
                };
                if let Some(m) = slot.inbox.pop_front() {
                    // The window is re-granted per message taken, as the Go client does.
                    st.machine.tunnel_consumed(self.id, m.len());
                    self.conn.drive(st);
                    return Ok(m);
                }
                if slot.closed.is_some() {
                    return Err(Error::Closed);
                }
            }
            match listener.take() {
                Some(l) => l.await,
                None => listener = Some(self.notify.listen()),
            }
        }
    }

    /// Closes the tunnel and waits for the node's acknowledgement.
    pub async fn close(&self) -> Result<()> {
        let mut listener = None;
        let mut asked = false;
        loop {
            {
                let mut st = self.conn.lock();
                if st.tunnels.get(&self.id).is_none_or(|s| s.closed.is_some()) {
                    return Ok(());
                }
                if !asked {
                    asked = true;
                    let awaited = st.machine.close_tunnel(self.id);
                    self.conn.drive(st);
                    if !awaited {
                        return Ok(());
                    }
                    continue;
                }
            }
            match listener.take() {
                Some(l) => l.await,
                None => listener = Some(self.notify.listen()),
            }
        }
    }

    /// The close reason once closed: empty for a graceful close.
    pub fn closed_reason(&self) -> Option<String> {
        let st = self.conn.lock();
        st.tunnels.get(&self.id).and_then(|s| s.closed.clone())
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        // A tunnel nobody holds can never be read: the machine closes it (if it is open) so
        // that neither side keeps buffering for it.
        let mut st = self.conn.lock();
        st.tunnels.remove(&self.id);
        st.machine.release_tunnel(self.id);
        self.conn.drive(st);
    }
}
