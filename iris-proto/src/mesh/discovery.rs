//! Finding nodes of the same network without being told where they are: beacons.
//!
//! A beacon says "a node of network N (by hash), protocol version V, id I, dial me at A,
//! and I know P peers". The core decides when to send one and what to do with one heard;
//! the driver decides where beacons go (a few well-known UDP ports on loopback for host
//! discovery, the local subnet too when asked) and carries them.
//!
//! What a node does with a beacon from a node it does not know:
//! - it answers it, to the address it came from, so that a node whose beacons reach only
//!   others (every well-known port taken) is found too;
//! - it joins the overlay through it if it knows nobody yet (the usual case: a new node), or
//!   if both know peers but not each other (two halves of a partition, or two networks of
//!   one name that formed apart); of such a pair only the node with the smaller id joins, so
//!   that one join merges them.
//!
//! Beacons are not authenticated: the link handshake that follows is. A beacon can at worst
//! make a node dial an address (rate-limited, per sender) and fail a handshake there; it
//! never carries anything of the key.

use crate::overlay::NodeId;
use crate::overlay::wire::{WireError, put_addr, take_addr, take_u128};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::Instant;

/// The first bytes of every beacon.
const MAGIC: &[u8; 8] = b"irisbcn1";

/// Most senders remembered for rate limiting; the oldest are forgotten first.
const MAX_REMEMBERED: usize = 1024;

/// How often a node sends beacons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// Period while the node has not converged with peers (booting, or alone).
    pub fast: Duration,
    /// Period afterwards, so that partitions find each other again.
    pub slow: Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> DiscoveryConfig {
        DiscoveryConfig {
            fast: Duration::from_millis(250),
            slow: Duration::from_secs(5),
        }
    }
}

/// One beacon, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Beacon {
    /// Hash of the network's name (the name itself is not sent).
    pub network: [u8; 16],
    /// The link protocol version the sender speaks.
    pub version: u16,
    /// The sender's overlay id.
    pub id: NodeId,
    /// Where the sender's peer listener is dialed.
    pub addr: SocketAddr,
    /// Peers the sender knows (0: it is alone).
    pub peers: u32,
}

/// The hash of a network name that beacons carry.
pub(crate) fn network_hash(name: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"iris discovery v1\0");
    h.update(name.as_bytes());
    let digest = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

impl Beacon {
    /// The beacon's bytes.
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        out.put_slice(MAGIC);
        out.put_u16(self.version);
        out.put_slice(&self.network);
        out.put_u128(self.id.0);
        put_addr(&mut out, &self.addr);
        out.put_u32(self.peers);
        out.freeze()
    }

    /// Parses a beacon; anything else is an error (never a panic).
    pub(crate) fn decode(mut p: &[u8]) -> Result<Beacon, WireError> {
        if p.len() < MAGIC.len() + 2 + 16 || &p[..MAGIC.len()] != MAGIC {
            return Err(WireError::Malformed("not a beacon"));
        }
        p.advance(MAGIC.len());
        let version = p.get_u16();
        let mut network = [0u8; 16];
        p.copy_to_slice(&mut network);
        let id = NodeId(take_u128(&mut p)?);
        let addr = take_addr(&mut p)?;
        if p.len() != 4 {
            return Err(WireError::Malformed("beacon length"));
        }
        let peers = p.get_u32();
        Ok(Beacon {
            network,
            version,
            id,
            addr,
            peers,
        })
    }
}

/// What to do about a beacon heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Answer the sender with this node's beacon.
    pub(crate) answer: bool,
    /// Join the overlay through the node at this address.
    pub(crate) join: Option<SocketAddr>,
}

/// The beacon schedule and the memory of whom this node answered and joined through.
#[derive(Debug)]
pub(crate) struct Discovery {
    cfg: DiscoveryConfig,
    network: [u8; 16],
    version: u16,
    /// When this node last answered each sender address.
    answered: BTreeMap<SocketAddr, Instant>,
    /// When this node last joined through each node.
    joined: BTreeMap<NodeId, Instant>,
}

impl Discovery {
    pub(crate) fn new(cfg: DiscoveryConfig, network: &str, version: u16) -> Discovery {
        Discovery {
            cfg,
            network: network_hash(network),
            version,
            answered: BTreeMap::new(),
            joined: BTreeMap::new(),
        }
    }

    /// When the next beacon is due after one sent at `now`.
    pub(crate) fn next_after(&self, now: Instant, settled: bool) -> Instant {
        now + if settled {
            self.cfg.slow
        } else {
            self.cfg.fast
        }
    }

    /// This node's beacon.
    pub(crate) fn beacon(&self, id: NodeId, addr: SocketAddr, peers: usize) -> Bytes {
        Beacon {
            network: self.network,
            version: self.version,
            id,
            addr,
            peers: u32::try_from(peers).unwrap_or(u32::MAX),
        }
        .encode()
    }

    /// Judges a beacon from `from`: `Err` if it is not one of this network's (or is this
    /// node's own). `own_peers` is how many peers this node knows; `knows` tells whether it
    /// knows the sender already.
    pub(crate) fn heard(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
        own: NodeId,
        own_peers: usize,
        knows: impl Fn(NodeId) -> bool,
    ) -> Result<Verdict, Ignored> {
        let b = Beacon::decode(data).map_err(|_| Ignored::Garbage)?;
        if b.network != self.network || b.version != self.version {
            return Err(Ignored::OtherNetwork);
        }
        if b.id == own || knows(b.id) {
            return Err(Ignored::Known);
        }
        let answer = fresh(&mut self.answered, from, now, self.cfg.slow);
        let merge = own_peers == 0 || (b.peers > 0 && own < b.id);
        let join = (merge && fresh(&mut self.joined, b.id, now, self.cfg.slow)).then_some(b.addr);
        Ok(Verdict { answer, join })
    }
}

/// Why a beacon led to nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ignored {
    /// Not a beacon.
    Garbage,
    /// Another network's, or another protocol version's.
    OtherNetwork,
    /// This node's own, or a node it knows.
    Known,
}

/// True (and remembered) unless `key` was seen less than `period` ago. The memory is
/// bounded: beyond [`MAX_REMEMBERED`] the stalest entry goes.
fn fresh<K: Ord + Copy>(
    seen: &mut BTreeMap<K, Instant>,
    key: K,
    now: Instant,
    period: Duration,
) -> bool {
    if seen
        .get(&key)
        .is_some_and(|&t| now.saturating_duration_since(t) < period)
    {
        return false;
    }
    if seen.len() >= MAX_REMEMBERED
        && !seen.contains_key(&key)
        && let Some(stalest) = seen.iter().min_by_key(|(_, t)| **t).map(|(k, _)| *k)
    {
        seen.remove(&stalest);
    }
    seen.insert(key, now);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn beacon(net: &str, id: u128, peers: u32) -> Bytes {
        Beacon {
            network: network_hash(net),
            version: 7,
            id: NodeId(id),
            addr: addr(9000 + id as u16),
            peers,
        }
        .encode()
    }

    #[test]
    fn beacons_round_trip_and_anything_else_is_refused() {
        let b = Beacon {
            network: network_hash("n"),
            version: 3,
            id: NodeId(u128::MAX),
            addr: "[::1]:65535".parse().unwrap(),
            peers: 12,
        };
        let bytes = b.encode();
        assert_eq!(Beacon::decode(&bytes), Ok(b));
        for cut in 0..bytes.len() {
            assert!(Beacon::decode(&bytes[..cut]).is_err());
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(Beacon::decode(&longer).is_err());
        assert!(Beacon::decode(b"hello, are you iris?").is_err());
        // The network's name is not in it, only a hash.
        let name = "chinese whisperers";
        let mut named = Beacon::decode(&bytes).unwrap();
        named.network = network_hash(name);
        let bytes = named.encode();
        assert!(!bytes.windows(name.len()).any(|w| w == name.as_bytes()));
    }

    #[test]
    fn a_beacon_of_another_network_or_version_or_a_known_node_is_ignored() {
        let mut d = Discovery::new(DiscoveryConfig::default(), "mine", 7);
        let now = Instant::ZERO;
        let heard = |d: &mut Discovery, b: &[u8], knows: bool| {
            d.heard(now, addr(1), b, NodeId(5), 0, |_| knows)
        };
        assert_eq!(
            heard(&mut d, &beacon("theirs", 9, 0), false),
            Err(Ignored::OtherNetwork)
        );
        let mut other_version = Beacon::decode(&beacon("mine", 9, 0)).unwrap();
        other_version.version = 8;
        assert_eq!(
            heard(&mut d, &other_version.encode(), false),
            Err(Ignored::OtherNetwork)
        );
        assert_eq!(
            heard(&mut d, &beacon("mine", 5, 0), false),
            Err(Ignored::Known)
        );
        assert_eq!(
            heard(&mut d, &beacon("mine", 9, 3), true),
            Err(Ignored::Known)
        );
        assert_eq!(heard(&mut d, b"junk", false), Err(Ignored::Garbage));
    }

    #[test]
    fn a_lone_node_joins_a_stranger_and_of_two_settled_ones_the_smaller_joins() {
        let mut d = Discovery::new(DiscoveryConfig::default(), "n", 7);
        let now = Instant::ZERO;
        // Alone: join through whoever is heard, and answer.
        let v = d
            .heard(now, addr(1), &beacon("n", 9, 4), NodeId(5), 0, |_| false)
            .unwrap();
        assert_eq!(v.join, Some(addr(9009)));
        assert!(v.answer);
        // Settled, hearing a new node that is alone: answer only (it joins through us).
        let v = d
            .heard(now, addr(2), &beacon("n", 10, 0), NodeId(5), 3, |_| false)
            .unwrap();
        assert_eq!(
            v,
            Verdict {
                answer: true,
                join: None
            }
        );
        // Settled, hearing a settled stranger: the smaller id joins.
        let v = d
            .heard(now, addr(3), &beacon("n", 11, 2), NodeId(5), 3, |_| false)
            .unwrap();
        assert_eq!(v.join, Some(addr(9011)));
        let v = d
            .heard(now, addr(4), &beacon("n", 3, 2), NodeId(5), 3, |_| false)
            .unwrap();
        assert_eq!(v.join, None);
    }

    #[test]
    fn answers_and_joins_are_rate_limited_per_sender_with_bounded_memory() {
        let cfg = DiscoveryConfig::default();
        let mut d = Discovery::new(cfg.clone(), "n", 7);
        let b = beacon("n", 9, 0);
        let t0 = Instant::ZERO;
        let first = d.heard(t0, addr(1), &b, NodeId(5), 0, |_| false).unwrap();
        assert!(first.answer && first.join.is_some());
        let again = d
            .heard(t0 + cfg.fast, addr(1), &b, NodeId(5), 0, |_| false)
            .unwrap();
        assert_eq!(
            again,
            Verdict {
                answer: false,
                join: None
            }
        );
        let later = d
            .heard(t0 + cfg.slow, addr(1), &b, NodeId(5), 0, |_| false)
            .unwrap();
        assert!(later.answer && later.join.is_some());
        // A flood of senders does not grow the memory past its bound.
        for port in 0..3000u16 {
            let _ = d.heard(
                t0,
                addr(port),
                &beacon("n", 100 + u128::from(port), 0),
                NodeId(5),
                0,
                |_| false,
            );
        }
        assert!(d.answered.len() <= MAX_REMEMBERED && d.joined.len() <= MAX_REMEMBERED);
    }
}
