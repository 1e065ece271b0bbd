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
}
