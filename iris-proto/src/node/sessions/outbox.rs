//! A connection's outgoing bytes: small packets coalesced into one buffer, large payloads
//! shared between every connection they go to, and bytes handed to the driver only as its
//! socket takes them (pulled writes), so that the node still holds everything not yet in
//! flight and can drop or reorder it (a CLOSE ahead of queued data) at a packet boundary,
//! and drop a request whose time ran out while it waited (it is never delivered late).

use crate::time::Instant;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

/// Payloads at least this large are shared (one allocation for every recipient), smaller
/// ones are copied into each recipient's buffer: below this a copy is cheaper than the extra
/// segment and write it costs.
pub(crate) const SHARE_MIN: usize = 16 << 10;
/// Coalesced bytes are sealed into a segment at this size, so that a batch in flight stays
/// small and a cut connection's CLOSE waits behind little.
const SEGMENT: usize = 64 << 10;
/// The driver is handed more only while less than this is in flight.
const BATCH: usize = 256 << 10;

/// Names one shared payload in the node's registry (for memory accounting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SharedId(pub(crate) u64);

/// A run of bytes to write, private to this connection or a shared payload.
#[derive(Debug)]
struct Segment {
    bytes: Bytes,
    shared: Option<SharedId>,
    /// A packet worth sending only until then (a request): dropped if still queued.
    expires: Option<Instant>,
}

/// What leaving the outbox released, for the node's memory accounting.
#[derive(Debug, Default)]
pub(crate) struct Released {
    /// Private bytes no longer held.
    pub(crate) private: usize,
    /// Shared payloads this connection no longer references (one entry per reference).
    pub(crate) shared: Vec<SharedId>,
}

/// One connection's outgoing queue.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    /// Small packets being coalesced.
    buf: BytesMut,
    /// Sealed segments, oldest first, after which `buf` comes.
    segments: VecDeque<Segment>,
    /// Bytes in `buf` and `segments`.
    queued: usize,
    /// Handed to the driver and not yet reported written: (length left, shared payload).
    inflight: VecDeque<(usize, Option<SharedId>)>,
    inflight_bytes: usize,
}

impl Outbox {
    /// Appends a packet encoded by `encode`; returns the bytes added (all private).
    pub(crate) fn push(&mut self, encode: impl FnOnce(&mut BytesMut)) -> usize {
        let before = self.buf.len();
        encode(&mut self.buf);
        let n = self.buf.len() - before;
        self.queued += n;
        if self.buf.len() >= SEGMENT {
            self.seal();
        }
        n
    }

    /// Appends a packet whose middle is a shared payload: `head`, then `payload` (not
    /// copied), then `tail`. Returns the private bytes added (head and tail).
    pub(crate) fn push_shared(
        &mut self,
        head: impl FnOnce(&mut BytesMut),
        payload: Bytes,
        id: SharedId,
        tail: impl FnOnce(&mut BytesMut),
    ) -> usize {
        let mut private = self.push(head);
        self.seal();
        self.queued += payload.len();
        self.segments.push_back(Segment {
            bytes: payload,
            shared: Some(id),
            expires: None,
        });
        private += self.push(tail);
        private
    }

    /// Appends a packet of its own that is dropped unsent if it is still queued at
    /// `expires`; returns the bytes added.
    pub(crate) fn push_expiring(&mut self, bytes: Bytes, expires: Instant) -> usize {
        self.seal();
        let n = bytes.len();
        self.queued += n;
        self.segments.push_back(Segment {
            bytes,
            shared: None,
            expires: Some(expires),
        });
        n
    }

    /// Bytes this connection still has to read: queued here and in flight.
    pub(crate) fn backlog(&self) -> usize {
        self.queued + self.inflight_bytes
    }

    /// True when the driver may be handed more and there is something to hand.
    pub(crate) fn wants_transmit(&self) -> bool {
        self.queued > 0 && self.inflight_bytes < BATCH
    }

    /// The next run of bytes for the driver at `now`, if its socket may take more; packets
    /// that expired while queued are dropped on the way (counted in `expired`, their bytes
    /// in `released`).
    pub(crate) fn poll_transmit(
        &mut self,
        now: Instant,
        expired: &mut u64,
        released: &mut usize,
    ) -> Option<Bytes> {
        if self.inflight_bytes >= BATCH {
            return None;
        }
        loop {
            if self.segments.is_empty() {
                self.seal();
            }
            let seg = self.segments.pop_front()?;
            let len = seg.bytes.len();
            self.queued -= len;
            if seg.expires.is_some_and(|at| at <= now) {
                *expired += 1;
                *released += len;
                continue;
            }
            self.inflight_bytes += len;
            self.inflight.push_back((len, seg.shared));
            return Some(seg.bytes);
        }
    }

    /// Everything queued, whatever is in flight: the connection is closing and the node
    /// will not be asked again.
    pub(crate) fn poll_transmit_all(&mut self) -> Option<Bytes> {
        self.seal();
        let seg = self.segments.pop_front()?;
        let len = seg.bytes.len();
        self.queued -= len;
        self.inflight_bytes += len;
        self.inflight.push_back((len, seg.shared));
        Some(seg.bytes)
    }

    /// The driver wrote `n` more bytes of what it was handed.
    pub(crate) fn flushed(&mut self, mut n: usize) -> Released {
        let mut released = Released::default();
        n = n.min(self.inflight_bytes);
        self.inflight_bytes -= n;
        while n > 0 {
            let Some((left, shared)) = self.inflight.front_mut() else {
                break;
            };
            let take = n.min(*left);
            *left -= take;
            n -= take;
            if shared.is_none() {
                released.private += take;
            }
            if *left == 0 {
                if let Some(id) = *shared {
                    released.shared.push(id);
                }
                self.inflight.pop_front();
            }
        }
        released
    }

    /// Drops everything not yet handed to the driver (a cut connection: its CLOSE goes next).
    pub(crate) fn discard_queued(&mut self) -> Released {
        let mut released = Released {
            private: self.buf.len(),
            shared: Vec::new(),
        };
        self.buf.clear();
        for seg in self.segments.drain(..) {
            match seg.shared {
                Some(id) => released.shared.push(id),
                None => released.private += seg.bytes.len(),
            }
        }
        self.queued = 0;
        released
    }

    /// Drops everything, in flight included (the socket is gone).
    pub(crate) fn discard_all(&mut self) -> Released {
        let mut released = self.discard_queued();
        for (left, shared) in self.inflight.drain(..) {
            match shared {
                Some(id) => released.shared.push(id),
                None => released.private += left,
            }
        }
        self.inflight_bytes = 0;
        released
    }

    fn seal(&mut self) {
        if !self.buf.is_empty() {
            self.segments.push_back(Segment {
                bytes: self.buf.split().freeze(),
                shared: None,
                expires: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesces_small_packets_and_hands_out_at_most_a_batch() {
        let mut o = Outbox::default();
        for _ in 0..10 {
            assert_eq!(o.push(|b| b.extend_from_slice(&[1; 100])), 100);
        }
        let first = o.poll_transmit(Instant::ZERO, &mut 0, &mut 0).unwrap();
        assert_eq!(first.len(), 1000, "ten packets, one write");
        assert!(o.poll_transmit(Instant::ZERO, &mut 0, &mut 0).is_none());
        // 1 MiB more: handed out in segments while less than a batch is in flight.
        for _ in 0..16 {
            o.push(|b| b.extend_from_slice(&[2; 64 << 10]));
        }
        let mut handed = 0;
        while let Some(b) = o.poll_transmit(Instant::ZERO, &mut 0, &mut 0) {
            handed += b.len();
        }
        assert!((BATCH..BATCH + SEGMENT + 1000).contains(&(handed + 1000)));
        assert_eq!(o.backlog(), 1000 + (16 << 16));
        let r = o.flushed(handed + 1000);
        assert_eq!(r.private, handed + 1000);
        assert!(o.wants_transmit());
    }

    #[test]
    fn shared_payloads_are_released_once_fully_written() {
        let mut o = Outbox::default();
        let payload = Bytes::from(vec![7u8; SHARE_MIN]);
        let private = o.push_shared(
            |b| b.extend_from_slice(b"head"),
            payload.clone(),
            SharedId(3),
            |b| b.extend_from_slice(b"t"),
        );
        assert_eq!(private, 5);
        let got: Vec<Bytes> =
            std::iter::from_fn(|| o.poll_transmit(Instant::ZERO, &mut 0, &mut 0)).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].as_ptr(), payload.as_ptr(), "not copied");
        let r = o.flushed(4 + 10);
        assert_eq!((r.private, r.shared.len()), (4, 0));
        let r = o.flushed(SHARE_MIN - 10 + 1);
        assert_eq!((r.private, r.shared), (1, vec![SharedId(3)]));
        assert_eq!(o.backlog(), 0);
    }

    #[test]
    fn an_expiring_packet_still_queued_at_its_time_is_dropped() {
        let mut o = Outbox::default();
        o.push(|b| b.extend_from_slice(&[0; 300 << 10]));
        let t = |n| Instant::from_nanos(n);
        o.push_expiring(Bytes::from_static(b"request"), t(10));
        o.push(|b| b.extend_from_slice(b"after"));
        let (mut expired, mut released) = (0, 0);
        // The first batch fills the socket; the request waits behind it.
        assert!(o.poll_transmit(t(0), &mut expired, &mut released).is_some());
        assert!(o.poll_transmit(t(0), &mut expired, &mut released).is_none());
        o.flushed(300 << 10);
        let next = o.poll_transmit(t(10), &mut expired, &mut released).unwrap();
        assert_eq!(&next[..], b"after", "the expired request was skipped");
        assert_eq!((expired, released), (1, 7));
        assert_eq!(o.backlog(), 5);
    }

    #[test]
    fn discarding_releases_every_byte_and_reference() {
        let mut o = Outbox::default();
        o.push(|b| b.extend_from_slice(&[0; 10]));
        assert!(o.poll_transmit(Instant::ZERO, &mut 0, &mut 0).is_some());
        o.push_shared(|_| {}, Bytes::from(vec![1; 100]), SharedId(1), |_| {});
        o.push(|b| b.extend_from_slice(&[0; 5]));
        let r = o.discard_queued();
        assert_eq!((r.private, r.shared), (5, vec![SharedId(1)]));
        assert_eq!(o.backlog(), 10);
        let r = o.discard_all();
        assert_eq!(r.private, 10);
        assert_eq!(o.backlog(), 0);
    }
}
