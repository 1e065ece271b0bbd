//! Finding nodes of the same network without being told where they are: beacons.
//!
//! A beacon says "a node of network N (by hash), protocol version V, id I in its
//! incarnation E, beacon number S, dial me at A, and I know P peers", and ends with a MAC
//! of all that. The core decides when to send one and what to do with one heard;
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
//! **Authenticated.** A network's name is often public; its key is not. The MAC
//! (HMAC-SHA256, 16 bytes) is under a secret derived from the network key's private part
//! (`NetworkKey::beacon_secret`; during a key rotation, beacons under either key are
//! taken), so nobody without the key can make a node dial anything: before, anyone who
//! knew the name could make a node dial an address of their choosing thousands of times a
//! second. A beacon never carries anything of the key. **Replays** of a genuine beacon are
//! ignored: each node numbers its beacons, and a beacon no newer (incarnation, number) than
//! the last one taken from its id is dropped. **Dials** that discovery causes are bounded
//! overall ([`MAX_JOINS`] a slow period), besides once a slow period per id. Beacons of the
//! earlier, unauthenticated layout are ignored (counted as foreign). Links without keys
//! (simulations) derive the secret from the network's name: no protection, none claimed.

use crate::overlay::NodeId;
use crate::overlay::wire::{WireError, put_addr, take_addr, take_u128};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use crate::Instant;

/// The first bytes of every beacon (`irisbcn1` was the unauthenticated layout).
const MAGIC: &[u8; 8] = b"irisbcn2";

/// Bytes of a beacon's MAC (HMAC-SHA256, truncated).
const TAG: usize = 16;

/// Most joins that discovery causes in one slow period, whatever the beacons claim.
pub(crate) const MAX_JOINS: usize = 8;

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
    /// The sender's incarnation (it grows with every start of an id).
    pub epoch: u64,
    /// The sender's beacon number in this incarnation.
    pub seq: u64,
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

/// The MAC of a beacon's `body` under `secret`.
fn mac(secret: &[u8; 32], body: &[u8]) -> Hmac<Sha256> {
    let mut m =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes a key of any length");
    m.update(body);
    m
}

impl Beacon {
    /// The beacon's bytes, authenticated under `secret`.
    pub(crate) fn encode(&self, secret: &[u8; 32]) -> Bytes {
        let mut out = BytesMut::with_capacity(96);
        out.put_slice(MAGIC);
        out.put_u16(self.version);
        out.put_slice(&self.network);
        out.put_u128(self.id.0);
        out.put_u64(self.epoch);
        out.put_u64(self.seq);
        put_addr(&mut out, &self.addr);
        out.put_u32(self.peers);
        let tag = mac(secret, &out).finalize().into_bytes();
        out.put_slice(&tag[..TAG]);
        out.freeze()
    }

    /// Parses a beacon (its MAC is not checked here: see [`Beacon::authentic`]); anything
    /// else is an error (never a panic).
    pub(crate) fn decode(mut p: &[u8]) -> Result<Beacon, WireError> {
        if p.len() < MAGIC.len() + 2 + 16 || &p[..MAGIC.len()] != MAGIC {
            return Err(WireError::Malformed("not a beacon"));
        }
        p.advance(MAGIC.len());
        let version = p.get_u16();
        let mut network = [0u8; 16];
        p.copy_to_slice(&mut network);
        let id = NodeId(take_u128(&mut p)?);
        if p.len() < 16 {
            return Err(WireError::Malformed("beacon length"));
        }
        let (epoch, seq) = (p.get_u64(), p.get_u64());
        let addr = take_addr(&mut p)?;
        if p.len() != 4 + TAG {
            return Err(WireError::Malformed("beacon length"));
        }
        let peers = p.get_u32();
        Ok(Beacon {
            network,
            version,
            id,
            epoch,
            seq,
            addr,
            peers,
        })
    }

    /// True if the beacon `data` (parsed already) carries a MAC under one of `secrets`.
    pub(crate) fn authentic(data: &[u8], secrets: &[[u8; 32]]) -> bool {
        let Some(split) = data.len().checked_sub(TAG) else {
            return false;
        };
        let (body, tag) = data.split_at(split);
        secrets
            .iter()
            .any(|s| mac(s, body).verify_truncated_left(tag).is_ok())
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
pub(crate) struct Discovery {
    cfg: DiscoveryConfig,
    network: [u8; 16],
    version: u16,
    /// The secrets beacons are taken under; this node's own are under the first.
    secrets: Vec<[u8; 32]>,
    /// This node's next beacon number.
    seq: u64,
    /// When this node last answered each sender address.
    answered: BTreeMap<SocketAddr, Instant>,
    /// When this node last joined through each node.
    joined: BTreeMap<NodeId, Instant>,
    /// The newest beacon taken from each node: (incarnation, number), and when.
    newest: BTreeMap<NodeId, Newest>,
    /// When the joins of the last slow period were made (at most [`MAX_JOINS`]).
    joins: VecDeque<Instant>,
}

/// The newest beacon taken from a node.
#[derive(Debug, Clone, Copy)]
struct Newest {
    epoch: u64,
    seq: u64,
    at: Instant,
}

/// Secrets are never printed.
impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("cfg", &self.cfg)
            .field("seq", &self.seq)
            .field("secrets", &self.secrets.len())
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// Discovery for network `network` at protocol `version`, with beacons authenticated
    /// under `secrets` (this node signs with the first; see `NetworkKey::beacon_secret`).
    pub(crate) fn new(
        cfg: DiscoveryConfig,
        network: &str,
        version: u16,
        secrets: Vec<[u8; 32]>,
    ) -> Discovery {
        assert!(!secrets.is_empty(), "discovery needs a secret");
        Discovery {
            cfg,
            network: network_hash(network),
            version,
            secrets,
            seq: 0,
            answered: BTreeMap::new(),
            joined: BTreeMap::new(),
            newest: BTreeMap::new(),
            joins: VecDeque::new(),
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

    /// This node's next beacon (`epoch`: its incarnation).
    pub(crate) fn beacon(
        &mut self,
        id: NodeId,
        epoch: u64,
        addr: SocketAddr,
        peers: usize,
    ) -> Bytes {
        self.seq += 1;
        Beacon {
            network: self.network,
            version: self.version,
            id,
            epoch,
            seq: self.seq,
            addr,
            peers: u32::try_from(peers).unwrap_or(u32::MAX),
        }
        .encode(&self.secrets[0])
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
        if !Beacon::authentic(data, &self.secrets) {
            return Err(Ignored::Forged);
        }
        if b.id == own {
            return Err(Ignored::Known);
        }
        if !self.newer(now, &b) {
            return Err(Ignored::Replayed);
        }
        if knows(b.id) {
            return Err(Ignored::Known);
        }
        let answer = fresh(&mut self.answered, from, now, self.cfg.slow);
        let merge = own_peers == 0 || (b.peers > 0 && own < b.id);
        let join =
            (merge && self.may_join(now) && fresh(&mut self.joined, b.id, now, self.cfg.slow))
                .then_some(b.addr);
        if join.is_some() {
            self.joins.push_back(now);
        }
        Ok(Verdict { answer, join })
    }

    /// True (and remembered) if `b` is newer than every beacon taken from its node before.
    /// The memory is bounded: beyond [`MAX_REMEMBERED`] nodes the stalest is forgotten
    /// (a replay of its beacons is then taken once more, and limited as any beacon).
    fn newer(&mut self, now: Instant, b: &Beacon) -> bool {
        if let Some(n) = self.newest.get(&b.id)
            && (b.epoch, b.seq) <= (n.epoch, n.seq)
        {
            return false;
        }
        if self.newest.len() >= MAX_REMEMBERED
            && !self.newest.contains_key(&b.id)
            && let Some(stalest) = self
                .newest
                .iter()
                .min_by_key(|(_, n)| n.at)
                .map(|(k, _)| *k)
        {
            self.newest.remove(&stalest);
        }
        let n = Newest {
            epoch: b.epoch,
            seq: b.seq,
            at: now,
        };
        self.newest.insert(b.id, n);
        true
    }

    /// True if fewer than [`MAX_JOINS`] joins were made in the last slow period.
    fn may_join(&mut self, now: Instant) -> bool {
        while self
            .joins
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= self.cfg.slow)
        {
            self.joins.pop_front();
        }
        self.joins.len() < MAX_JOINS
    }
}

/// Why a beacon led to nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ignored {
    /// Not a beacon.
    Garbage,
    /// Another network's, or another protocol version's.
    OtherNetwork,
    /// Of this network by its name, but without a MAC under its key: forged.
    Forged,
    /// A beacon no newer than one taken from its node already: replayed.
    Replayed,
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

    /// The secret of network `net` in these tests (the key's, in a real network).
    fn secret(net: &str) -> [u8; 32] {
        crate::link::key::derive_beacon_secret(net.as_bytes())
    }

    fn discovery(cfg: DiscoveryConfig, net: &str) -> Discovery {
        Discovery::new(cfg, net, 7, vec![secret(net)])
    }

    /// A genuine beacon of `net`, numbered `seq`.
    fn numbered(net: &str, id: u128, peers: u32, seq: u64) -> Bytes {
        Beacon {
            network: network_hash(net),
            version: 7,
            id: NodeId(id),
            epoch: 1,
            seq,
            addr: addr(9000 + id as u16),
            peers,
        }
        .encode(&secret(net))
    }

    /// Numbers beacons as their senders do: each new one newer.
    fn beacon(net: &str, id: u128, peers: u32) -> Bytes {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        numbered(
            net,
            id,
            peers,
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        )
    }

    #[test]
    fn beacons_round_trip_and_anything_else_is_refused() {
        let b = Beacon {
            network: network_hash("n"),
            version: 3,
            id: NodeId(u128::MAX),
            epoch: 9,
            seq: 4,
            addr: "[::1]:65535".parse().unwrap(),
            peers: 12,
        };
        let bytes = b.encode(&secret("n"));
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
        let bytes = named.encode(&secret(name));
        assert!(!bytes.windows(name.len()).any(|w| w == name.as_bytes()));
    }

    #[test]
    fn a_beacon_of_another_network_or_version_or_a_known_node_is_ignored() {
        let mut d = discovery(DiscoveryConfig::default(), "mine");
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
            heard(&mut d, &other_version.encode(&secret("mine")), false),
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
        let mut d = discovery(DiscoveryConfig::default(), "n");
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
        let mut d = discovery(cfg.clone(), "n");
        let t0 = Instant::ZERO;
        let first = d
            .heard(t0, addr(1), &beacon("n", 9, 0), NodeId(5), 0, |_| false)
            .unwrap();
        assert!(first.answer && first.join.is_some());
        let again = d
            .heard(
                t0 + cfg.fast,
                addr(1),
                &beacon("n", 9, 0),
                NodeId(5),
                0,
                |_| false,
            )
            .unwrap();
        assert_eq!(
            again,
            Verdict {
                answer: false,
                join: None
            }
        );
        let later = d
            .heard(
                t0 + cfg.slow,
                addr(1),
                &beacon("n", 9, 0),
                NodeId(5),
                0,
                |_| false,
            )
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
        assert!(d.newest.len() <= MAX_REMEMBERED);
    }

    /// Someone who knows the network's name but not its key, sending beacons that name an
    /// address of their choosing under fresh ids: ignored, whatever the layout.
    #[test]
    fn forged_replayed_and_old_layout_beacons_are_ignored() {
        let mut d = discovery(DiscoveryConfig::default(), "n");
        let now = Instant::ZERO;
        let mut heard = |b: &[u8]| d.heard(now, addr(1), b, NodeId(5), 0, |_| false);
        // The right name, no key: a MAC under a guessed secret, or bytes flipped.
        let mut forged = Beacon::decode(&numbered("n", 9, 0, 1)).unwrap();
        forged.addr = addr(4444);
        assert_eq!(heard(&forged.encode(&[7; 32])), Err(Ignored::Forged));
        let mut flipped = numbered("n", 10, 0, 1).to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(heard(&flipped), Err(Ignored::Forged));
        // The earlier layout (no MAC), as a forger would send it: not even a beacon now.
        let mut old = b"irisbcn1".to_vec();
        old.extend_from_slice(&numbered("n", 11, 0, 1)[8..]);
        assert_eq!(heard(&old), Err(Ignored::Garbage));
        // A genuine beacon, then the same again (replayed), then an older one.
        let genuine = numbered("n", 12, 0, 5);
        assert!(heard(&genuine).is_ok());
        assert_eq!(heard(&genuine), Err(Ignored::Replayed));
        assert_eq!(heard(&numbered("n", 12, 0, 4)), Err(Ignored::Replayed));
        assert!(heard(&numbered("n", 12, 0, 6)).is_ok());
    }

    /// During a key rotation a node takes beacons under its current and its previous key,
    /// and signs its own with the current one.
    #[test]
    fn beacons_under_either_key_of_a_rotation_are_taken() {
        let (new, old) = (secret("new key"), secret("old key"));
        let mut d = Discovery::new(DiscoveryConfig::default(), "n", 7, vec![new, old]);
        let under = |s: &[u8; 32], id: u128| {
            let b = Beacon::decode(&numbered("n", id, 0, 1)).unwrap();
            b.encode(s)
        };
        let now = Instant::ZERO;
        for (s, id) in [(&new, 20), (&old, 21)] {
            assert!(
                d.heard(now, addr(1), &under(s, id), NodeId(5), 0, |_| false)
                    .is_ok()
            );
        }
        let third = secret("a third key");
        let refused = d.heard(now, addr(1), &under(&third, 22), NodeId(5), 0, |_| false);
        assert_eq!(refused, Err(Ignored::Forged));
        let own = d.beacon(NodeId(5), 1, addr(5), 0);
        assert!(Beacon::authentic(&own, &[new]) && !Beacon::authentic(&own, &[old]));
    }

    /// However many genuine-looking nodes beacon at once, discovery joins through at most
    /// [`MAX_JOINS`] a slow period.
    #[test]
    fn joins_caused_by_discovery_are_bounded_overall() {
        let cfg = DiscoveryConfig::default();
        let mut d = discovery(cfg.clone(), "n");
        let t0 = Instant::ZERO;
        let joins = |d: &mut Discovery, t: Instant, ids: std::ops::Range<u128>| {
            ids.filter(|&id| {
                let v = d.heard(
                    t,
                    addr(id as u16),
                    &beacon("n", id, 0),
                    NodeId(5),
                    0,
                    |_| false,
                );
                v.unwrap().join.is_some()
            })
            .count()
        };
        assert_eq!(joins(&mut d, t0, 100..200), MAX_JOINS);
        assert_eq!(joins(&mut d, t0 + cfg.fast, 200..300), 0);
        assert_eq!(joins(&mut d, t0 + cfg.slow, 300..400), MAX_JOINS);
    }

    proptest::proptest! {
        /// Whatever a datagram holds, judging it never panics, and only a beacon under the
        /// network's secret makes a node answer or join; a genuine beacon with any byte
        /// changed is refused (forged, or not a beacon at all).
        #[test]
        fn any_datagram_is_judged_without_panic_and_only_genuine_ones_count(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..128),
            flip in 0usize..85,
            bit in 0u8..8,
        ) {
            let mut d = discovery(DiscoveryConfig::default(), "n");
            let now = Instant::ZERO;
            let verdict = d.heard(now, addr(1), &data, NodeId(5), 0, |_| false);
            proptest::prop_assert!(verdict.is_err());
            let genuine = numbered("n", 9, 0, 1);
            proptest::prop_assert_eq!(genuine.len(), 85);
            let mut changed = genuine.to_vec();
            changed[flip] ^= 1 << bit;
            let verdict = d.heard(now, addr(1), &changed, NodeId(5), 0, |_| false);
            proptest::prop_assert!(verdict.is_err(), "byte {} bit {}: {:?}", flip, bit, verdict);
            proptest::prop_assert!(d.heard(now, addr(1), &genuine, NodeId(5), 0, |_| false).is_ok());
        }
    }
}
