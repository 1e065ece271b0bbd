//! Message grouping: what a record's plaintext holds. Small messages already queued go into
//! one record (one AEAD operation, one length prefix), control messages first; a data
//! message too large for the room left is cut into parts across bounded records.
//!
//! Item: `tag u8 | varint length | bytes`.

use crate::relay::codec::{put_varint, take_varint, varint_len};
use bytes::{BufMut, Bytes, BytesMut};

/// Item tags.
pub(crate) mod tag {
    pub(crate) const CONTROL: u8 = 0;
    pub(crate) const DATA: u8 = 1;
    pub(crate) const DATA_PART: u8 = 2;
    pub(crate) const DATA_END: u8 = 3;
    pub(crate) const REKEY: u8 = 4;
    pub(crate) const CLOSE: u8 = 5;
}

/// Bytes an item of `len` payload bytes takes.
pub(crate) fn item_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

pub(crate) fn put_item(out: &mut BytesMut, tag: u8, payload: &[u8]) {
    out.put_u8(tag);
    put_varint(out, payload.len() as u64);
    out.put_slice(payload);
}

/// Largest payload that fits an item in `room` bytes (0 if none does).
pub(crate) fn fits(room: usize) -> usize {
    if room <= 1 {
        return 0;
    }
    // Start from the smallest possible overhead (tag + 1-byte length) and shrink.
    let mut n = room - 2;
    while n > 0 && item_len(n) > room {
        n -= 1;
    }
    n
}

/// One item of an opened record; payloads share the record's buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Item {
    pub(crate) tag: u8,
    pub(crate) payload: Bytes,
}

/// Splits a record's plaintext into items; `None` if it is malformed.
pub(crate) fn parse_items(mut plain: Bytes) -> Option<Vec<Item>> {
    let mut items = Vec::new();
    while !plain.is_empty() {
        let tag = plain[0];
        let mut rest = &plain[1..];
        let (len, used) = take_varint(&mut rest)?;
        let len = usize::try_from(len).ok()?;
        if rest.len() < len {
            return None;
        }
        let _ = plain.split_to(1 + used);
        items.push(Item {
            tag,
            payload: plain.split_to(len),
        });
    }
    Some(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_sizes_and_fits_agree() {
        for room in 0..2000 {
            let n = fits(room);
            if n > 0 {
                assert!(item_len(n) <= room);
                assert!(
                    item_len(n + 1) > room,
                    "room {room}: {n} is not the largest"
                );
            }
        }
        assert_eq!(item_len(0), 2);
        assert_eq!(item_len(127), 129);
        assert_eq!(item_len(128), 131);
    }

    #[test]
    fn items_round_trip_and_garbage_is_refused() {
        let mut b = BytesMut::new();
        put_item(&mut b, tag::CONTROL, b"hb");
        put_item(&mut b, tag::DATA, &[7; 300]);
        put_item(&mut b, tag::REKEY, b"");
        let items = parse_items(b.freeze()).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[1].payload.len(), 300);
        assert_eq!(parse_items(Bytes::from_static(&[1, 5, 1])), None);
        assert_eq!(parse_items(Bytes::from_static(&[1, 0x80])), None);
    }
}
