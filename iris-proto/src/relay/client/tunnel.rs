//! One tunnel as the client machine keeps it: where it is in its life, the allowance the
//! node has granted this end, the chunk limit, and the reassembly of what arrives; and
//! [`Outgoing`], a message on its way out chunk by chunk.

use super::error::CallError;
use super::id::TunnelId;
use super::reassembly::Reassembly;
use bytes::Bytes;

/// A tunnel of the machine.
#[derive(Debug)]
pub(super) struct TunnelState {
    pub(super) phase: Phase,
    /// Bytes the node allows this end to send. Only first chunks that find it short wait;
    /// this end never sends past it, so it never goes below zero.
    pub(super) allowance: u64,
    /// Largest chunk either end may send (the node's, from TUN_INIT or TUN_CONFIRM).
    pub(super) chunk_limit: usize,
    pub(super) reassembly: Reassembly,
}

/// Where a tunnel is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Phase {
    /// This end sent TUN_INIT and waits for TUN_CONFIRM. A TUN_CLOSE that comes first is
    /// kept (`closed`) and reported right after the build's outcome, so the builder learns
    /// both in order.
    Building { closed: Option<String> },
    /// Confirmed; data flows both ways.
    Open,
    /// This end sent TUN_CLOSE and waits for the node's acknowledgement. Data still
    /// arriving is delivered; nothing more is sent.
    Closing,
}

impl TunnelState {
    /// A tunnel this end is building.
    pub(super) fn building() -> TunnelState {
        TunnelState::new(Phase::Building { closed: None }, 0)
    }

    /// A tunnel confirmed with `chunk_limit`.
    pub(super) fn open(chunk_limit: u64) -> TunnelState {
        TunnelState::new(Phase::Open, chunk_limit_of(chunk_limit))
    }

    fn new(phase: Phase, chunk_limit: usize) -> TunnelState {
        TunnelState {
            phase,
            allowance: 0,
            chunk_limit,
            reassembly: Reassembly::default(),
        }
    }
}

/// The chunk limit the node announced, as a size; at least 1, so that chunking always
/// makes progress whatever a confused node says.
pub(super) fn chunk_limit_of(announced: u64) -> usize {
    usize::try_from(announced).unwrap_or(usize::MAX).max(1)
}

/// A tunnel message being sent: [`super::ClientMachine::tunnel_send`] queues as many of
/// its chunks as the node's allowance and the send buffer allow, and is called again with
/// it after the wait it names. Dropping it part way leaves the message partly sent; the
/// other end discards the part when the next message starts (spec section 7).
#[derive(Debug, Clone)]
pub struct Outgoing {
    tunnel: TunnelId,
    message: Bytes,
    sent: usize,
}

impl Outgoing {
    /// `message` for `tunnel`; empty messages cannot be sent on a tunnel.
    pub fn new(tunnel: TunnelId, message: Bytes) -> Result<Outgoing, CallError> {
        if message.is_empty() {
            return Err(CallError::EmptyTunnelMessage);
        }
        Ok(Outgoing {
            tunnel,
            message,
            sent: 0,
        })
    }

    /// The tunnel it goes on.
    pub fn tunnel(&self) -> TunnelId {
        self.tunnel
    }

    /// Bytes of the message queued so far.
    pub fn sent(&self) -> usize {
        self.sent
    }

    /// True once every chunk is queued.
    pub fn is_done(&self) -> bool {
        self.sent == self.message.len()
    }

    /// The next chunk under `chunk_limit`: its sizeOrCont (the whole size on the first
    /// chunk, 0 after) and its bytes. `None` once done.
    pub(super) fn next_chunk(&self, chunk_limit: usize) -> Option<(u64, Bytes)> {
        if self.is_done() {
            return None;
        }
        let end = self
            .sent
            .saturating_add(chunk_limit.max(1))
            .min(self.message.len());
        let size_or_cont = if self.sent == 0 {
            self.message.len() as u64
        } else {
            0
        };
        Some((size_or_cont, self.message.slice(self.sent..end)))
    }

    /// The chunk of `len` bytes was queued.
    pub(super) fn advance(&mut self, len: usize) {
        self.sent += len;
    }
}
