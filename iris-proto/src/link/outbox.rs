//! What a link has queued and not yet put into records: control messages, urgent data
//! messages and bulk data, in that order of priority, with their byte counts.
//!
//! A link keeps its outbox in a box that exists only while something waits: most links of
//! a large network are idle between heartbeats, and the queues inline made every link a
//! fifth larger (a simulation of 10,000 nodes holds 1.5 million links).

use super::grouping::{fits, item_len, put_item, tag};
use super::session::SendError;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;

/// The queues of one link (see the module docs).
#[derive(Default)]
pub(super) struct Outbox {
    control: VecDeque<Bytes>,
    control_bytes: usize,
    data: VecDeque<Bytes>,
    data_bytes: usize,
    /// Data messages that go ahead of bulk data (requests, large replies): each starts as
    /// soon as the data message in progress is out, before anything queued in `data`.
    urgent: VecDeque<Bytes>,
    urgent_bytes: usize,
    /// Bytes of the front data message already sent as parts.
    data_offset: usize,
}

impl Outbox {
    /// Nothing waits.
    pub(super) fn is_empty(&self) -> bool {
        self.control.is_empty() && self.data.is_empty() && self.urgent.is_empty()
    }

    /// Bytes of data queued and not yet sealed.
    pub(super) fn data_queued(&self) -> usize {
        self.data_bytes - self.data_offset + self.urgent_bytes
    }

    /// About how large a record of everything queued would be: a record of three
    /// heartbeats gets a buffer its size, not 64 KiB.
    pub(super) fn record_len(&self) -> usize {
        self.control_bytes
            + self.data_queued()
            + 12 * (self.control.len() + self.data.len() + self.urgent.len())
            + 64
    }

    /// Queues a control message unless more than `max` bytes of them would wait.
    pub(super) fn push_control(&mut self, max: usize, msg: Bytes) -> Result<(), SendError> {
        if self.control_bytes + msg.len() > max {
            return Err(SendError::Full);
        }
        self.control_bytes += msg.len();
        self.control.push_back(msg);
        Ok(())
    }

    /// Queues a bulk data message (see [`push_bounded`]).
    pub(super) fn push_data(&mut self, max: usize, msg: Bytes) -> Result<(), SendError> {
        push_bounded(&mut self.data, &mut self.data_bytes, max, msg)
    }

    /// Queues an urgent data message (see [`push_bounded`]).
    pub(super) fn push_urgent(&mut self, max: usize, msg: Bytes) -> Result<(), SendError> {
        push_bounded(&mut self.urgent, &mut self.urgent_bytes, max, msg)
    }

    /// Queues a bulk data message whatever waits already.
    pub(super) fn push_unbounded(&mut self, msg: Bytes) {
        self.data_bytes += msg.len();
        self.data.push_back(msg);
    }

    /// Control messages into a record, as many as fit; returns how many.
    pub(super) fn put_control(&mut self, rec: &mut BytesMut, limit: usize) -> u64 {
        let mut put = 0;
        while let Some(msg) = self.control.front() {
            if rec.len() + item_len(msg.len()) > limit {
                break;
            }
            put_item(rec, tag::CONTROL, msg);
            self.control_bytes -= msg.len();
            self.control.pop_front();
            put += 1;
        }
        put
    }

    /// Data messages into what room a record has left: whole while they fit, then a part
    /// of the next (unless the room is too small to bother). Returns how many messages
    /// went out whole or with their last part.
    pub(super) fn put_data(&mut self, rec: &mut BytesMut, limit: usize) -> u64 {
        let mut put = 0;
        loop {
            // Between data messages, an urgent one goes first (parts of two messages cannot
            // interleave: the one in progress finishes first). Whole if it fits; else it
            // becomes the message in progress once its first part goes, not before (two
            // urgent messages would otherwise swap places).
            if self.data_offset == 0
                && let Some(msg) = self.urgent.front()
            {
                let room = limit - rec.len();
                if item_len(msg.len()) <= room {
                    put_item(rec, tag::DATA, msg);
                    self.urgent_bytes -= msg.len();
                    self.urgent.pop_front();
                    put += 1;
                    continue;
                }
                if fits(room).min(msg.len()) < 64.min(msg.len()) {
                    break;
                }
                let msg = self.urgent.pop_front().expect("the front is there");
                self.urgent_bytes -= msg.len();
                self.data_bytes += msg.len();
                self.data.push_front(msg);
            }
            let Some(msg) = self.data.front() else {
                break;
            };
            let room = limit - rec.len();
            if self.data_offset == 0 && item_len(msg.len()) <= room {
                put_item(rec, tag::DATA, msg);
                self.data_bytes -= msg.len();
                self.data.pop_front();
                put += 1;
                continue;
            }
            let n = fits(room).min(msg.len() - self.data_offset);
            if n < 64.min(msg.len() - self.data_offset) {
                break;
            }
            let last = self.data_offset + n == msg.len();
            let part = &msg[self.data_offset..self.data_offset + n];
            put_item(rec, if last { tag::DATA_END } else { tag::DATA_PART }, part);
            if !last {
                self.data_offset += n;
                break;
            }
            self.data_bytes -= msg.len();
            self.data_offset = 0;
            self.data.pop_front();
            put += 1;
        }
        put
    }
}

/// Queues `msg` unless more than `max` bytes would wait (a message larger than `max` still
/// goes into an empty queue, or it could never be sent).
fn push_bounded(
    queue: &mut VecDeque<Bytes>,
    queued: &mut usize,
    max: usize,
    msg: Bytes,
) -> Result<(), SendError> {
    if *queued + msg.len() > max && !queue.is_empty() {
        return Err(SendError::Full);
    }
    *queued += msg.len();
    queue.push_back(msg);
    Ok(())
}
