//! Node ids and keys: 128-bit positions on a ring, read as 32 hexadecimal digits.

use sha2::{Digest, Sha256};
use std::fmt;
use std::net::SocketAddr;

/// Bits per routing digit (Pastry's b = 4: hexadecimal digits).
pub const DIGIT_BITS: u32 = 4;
/// Digits in an id.
pub const DIGITS: usize = 128 / DIGIT_BITS as usize;
/// Values a digit takes.
pub const BASE: usize = 1 << DIGIT_BITS;

/// A node id, or a key (a name's position): the same 128-bit ring.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub u128);

impl NodeId {
    /// The key of a name (cluster, topic): the first 128 bits of its SHA-256.
    pub fn of_name(name: &str) -> NodeId {
        let digest = Sha256::digest(name.as_bytes());
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        NodeId(u128::from_be_bytes(first))
    }

    /// Digit `i`, most significant first.
    pub fn digit(self, i: usize) -> usize {
        debug_assert!(i < DIGITS);
        ((self.0 >> (128 - DIGIT_BITS as usize * (i + 1))) & (BASE as u128 - 1)) as usize
    }

    /// How many leading digits `self` and `other` share.
    pub fn shared_prefix(self, other: NodeId) -> usize {
        ((self.0 ^ other.0).leading_zeros() / DIGIT_BITS) as usize
    }

    /// Distance going clockwise (upwards, wrapping) from `self` to `other`.
    pub fn cw(self, other: NodeId) -> u128 {
        other.0.wrapping_sub(self.0)
    }

    /// Distance on the ring, the shorter way round.
    pub fn distance(self, other: NodeId) -> u128 {
        let d = self.cw(other);
        d.min(d.wrapping_neg())
    }

    /// True if `a` is strictly closer to `self` than `b` is; ties go to the smaller id, so
    /// that every node agrees on one closest node for a key.
    pub fn prefers(self, a: NodeId, b: NodeId) -> bool {
        (self.distance(a), a) < (self.distance(b), b)
    }
}

/// A node as others reach it: its id, the address its peer listener is bound to, and its
/// epoch (incarnation), which grows each time a node with that id starts. The epoch is the
/// version of everything said about the node: news of an older epoch is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Contact {
    /// The node's id.
    pub id: NodeId,
    /// Where to dial it.
    pub addr: SocketAddr,
    /// Its incarnation: larger for a later start (drivers use the boot time).
    pub epoch: u64,
}

impl Contact {
    /// A contact.
    pub fn new(id: NodeId, addr: SocketAddr, epoch: u64) -> Contact {
        Contact { id, addr, epoch }
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The first 8 digits name a node well enough in logs.
        write!(f, "{:08x}", self.0 >> 96)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_prefixes_and_distances() {
        let a = NodeId(0x1234_5678_9abc_def0_0000_0000_0000_0000);
        assert_eq!(a.digit(0), 1);
        assert_eq!(a.digit(3), 4);
        assert_eq!(a.digit(15), 0);
        let b = NodeId(0x1235_0000_0000_0000_0000_0000_0000_0000);
        assert_eq!(a.shared_prefix(b), 3);
        assert_eq!(a.shared_prefix(a), DIGITS);
        // Distance wraps around the ring.
        assert_eq!(NodeId(1).distance(NodeId(u128::MAX)), 2);
        assert_eq!(NodeId(u128::MAX).cw(NodeId(1)), 2);
        assert!(NodeId(10).prefers(NodeId(12), NodeId(7)));
        // Equal distance: the smaller id wins, from every viewpoint.
        assert!(NodeId(10).prefers(NodeId(8), NodeId(12)));
        assert_ne!(
            NodeId::of_name("chinese whisperers"),
            NodeId::of_name("gophers")
        );
    }
}
