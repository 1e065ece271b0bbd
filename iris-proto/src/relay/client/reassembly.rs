//! Tunnel messages as chunks: cutting a message for the wire, and putting received chunks
//! back together. The chunk rules (spec section 7) in one place, for the client machine
//! and for tests that speak the protocol by hand.

use bytes::{Bytes, BytesMut};

/// Cuts a message into tunnel chunks of at most `chunk_limit` bytes: the first carries the
/// total size, the rest carry 0. Empty messages cannot be sent on a tunnel (their size would
/// read as a continuation), so they yield nothing; callers refuse them.
pub fn chunks(message: &Bytes, chunk_limit: usize) -> impl Iterator<Item = (u64, Bytes)> + '_ {
    let limit = chunk_limit.max(1);
    let total = message.len() as u64;
    (0..message.len()).step_by(limit).map(move |start| {
        let end = (start + limit).min(message.len());
        let size_or_cont = if start == 0 { total } else { 0 };
        (size_or_cont, message.slice(start..end))
    })
}

/// What one chunk did to a [`Reassembly`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reassembled {
    /// A message completed by this chunk.
    pub message: Option<Bytes>,
    /// Bytes of an incomplete or malformed message thrown away; the receiver re-grants
    /// these to the sender, as the protocol says.
    pub discarded: usize,
}

/// Receiver-side reassembly of tunnel chunks into whole messages.
#[derive(Debug, Default)]
pub struct Reassembly {
    buf: BytesMut,
    size: usize,
}

impl Reassembly {
    /// Adds a chunk. `max_message` bounds the size a first chunk may announce, so a hostile
    /// size never turns into a huge allocation.
    pub fn push(&mut self, size_or_cont: u64, payload: &[u8], max_message: u64) -> Reassembled {
        let mut out = Reassembled::default();
        if size_or_cont != 0 {
            // A new message: whatever was incomplete is dropped.
            out.discarded = self.buf.len();
            self.buf.clear();
            self.size = 0;
            if size_or_cont > max_message {
                out.discarded += payload.len();
                return out;
            }
            self.size = size_or_cont as usize;
            // The first chunk's own length, not the announced size: memory follows data.
            self.buf.reserve(payload.len());
        } else if self.size == 0 {
            // A continuation with no message started.
            out.discarded = payload.len();
            return out;
        }
        if self.buf.len() + payload.len() > self.size {
            out.discarded += self.buf.len() + payload.len();
            self.buf.clear();
            self.size = 0;
            return out;
        }
        self.buf.extend_from_slice(payload);
        if self.buf.len() == self.size {
            self.size = 0;
            out.message = Some(self.buf.split().freeze());
        }
        out
    }

    /// Bytes of the incomplete message held.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_carry_size_then_zero() {
        let msg = Bytes::from(vec![7u8; 10]);
        let got: Vec<_> = chunks(&msg, 4).map(|(s, c)| (s, c.len())).collect();
        assert_eq!(got, vec![(10, 4), (0, 4), (0, 2)]);
        assert_eq!(chunks(&Bytes::new(), 4).count(), 0);
    }

    #[test]
    fn reassembly_completes_discards_and_bounds() {
        let mut r = Reassembly::default();
        assert_eq!(r.push(6, b"abc", 100).message, None);
        let done = r.push(0, b"def", 100);
        assert_eq!(done.message.as_deref(), Some(&b"abcdef"[..]));
        // An incomplete message is discarded when the next starts.
        r.push(5, b"ab", 100);
        let next = r.push(2, b"xy", 100);
        assert_eq!(next.discarded, 2);
        assert_eq!(next.message.as_deref(), Some(&b"xy"[..]));
        // A continuation out of nowhere, an oversized announcement, an overrun.
        assert_eq!(r.push(0, b"zz", 100).discarded, 2);
        assert_eq!(r.push(1 << 40, b"zz", 100).discarded, 2);
        r.push(3, b"ab", 100);
        assert_eq!(r.push(0, b"cd", 100).discarded, 4);
        assert_eq!(r.pending(), 0);
    }
}
