//! The fuzzer's bytes as a source of choices, consumed from the front. Once they run out
//! every choice is its zero value, so that any input is a complete run.

use bytes::Bytes;

/// The fuzzer's bytes, consumed from the front.
pub(super) struct Reader<'a>(pub(super) &'a mut Bytes);

impl Reader<'_> {
    pub(super) fn byte(&mut self) -> Option<u8> {
        if self.0.is_empty() {
            return None;
        }
        let b = self.0[0];
        *self.0 = self.0.slice(1..);
        Some(b)
    }

    /// The next byte, 0 once they ran out.
    pub(super) fn b(&mut self) -> u8 {
        self.byte().unwrap_or(0)
    }

    pub(super) fn take(&mut self, n: usize) -> Bytes {
        self.0.split_to(n.min(self.0.len()))
    }

    /// A number, mostly small, sometimes at the edges.
    pub(super) fn number(&mut self) -> u64 {
        match self.byte().unwrap_or(0) {
            0 => 0,
            1 => 1,
            2 => u64::MAX,
            3 => u64::from(u32::MAX),
            b => u64::from(b) % 16,
        }
    }

    /// A number for a varint field: the edges of every varint length, or any 64 bits.
    pub(super) fn wide(&mut self) -> u64 {
        match self.b() % 12 {
            0 => 0,
            1 => 1,
            2 => 127,
            3 => 128,
            4 => (1 << 14) - 1,
            5 => 1 << 14,
            6 => u64::from(u32::MAX),
            7 => 1 << 32,
            8 => u64::MAX,
            9 => u64::from(self.b()),
            _ => {
                let raw = self.take(8);
                let mut b = [0u8; 8];
                b[..raw.len()].copy_from_slice(&raw);
                u64::from_le_bytes(b)
            }
        }
    }

    /// 128 bits (a node id or a tree key): the edges of the ring, or any value.
    pub(super) fn u128(&mut self) -> u128 {
        match self.b() % 6 {
            0 => 0,
            1 => u128::MAX,
            2 => 1 << 127,
            3 => u128::from(self.b()),
            _ => {
                let raw = self.take(16);
                let mut b = [0u8; 16];
                b[..raw.len()].copy_from_slice(&raw);
                u128::from_le_bytes(b)
            }
        }
    }

    /// A payload length near the interesting sizes.
    pub(super) fn size(&mut self) -> usize {
        match self.byte().unwrap_or(0) {
            0 => 0,
            1 => (1 << 12) - 1,
            2 => 1 << 12,
            3 => 1 << 14,
            4 => (1 << 16) - 64,
            b => usize::from(b),
        }
    }

    /// Text of up to `max` bytes taken from the input (not always valid UTF-8 there:
    /// invalid sequences become U+FFFD, so the text is).
    pub(super) fn text(&mut self, max: usize) -> String {
        let n = usize::from(self.b()) % (max + 1);
        String::from_utf8_lossy(&self.take(n)).into_owned()
    }
}
