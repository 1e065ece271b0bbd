//! [`Link`]: one authenticated, encrypted connection to a peer node, as a state machine.

use super::frame::{FrameKind, HEADER_LEN, decode_frame, put_header};
use super::grouping::{item_len, parse_items, put_item, tag};
use super::handshake::{Handshake, HandshakeError, Hello, Keyring, MAX_AUTH_LEN, Role, ToSign};
use super::key::NetworkKey;
use super::outbox::Outbox;
use super::record::{BadRecord, Opener, RekeyLimits, Sealer, TAG_LEN};
use crate::time::Instant;
use bytes::{Bytes, BytesMut};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// The handshake protocol version this build speaks. 2: the responder signs only after
/// the initiator's signature verifies (see `handshake`). 3: HELLO lists the ids of the keys
/// a node accepts and AUTH names its key (key rotation). 4: overlay messages and anycasts
/// carry the sender's clock, so a node knows how late they arrived (`mesh::one_way`). 5: a
/// ping carries the pinger's round trip to the pinged (`OverlayMsg::Ping`). 6: multicasts
/// are numbered per tree and carry flags (tails, messages sent again), and tree nodes ask
/// origins for what they missed (`scribe::window`). 7: tree neighbours probe each other
/// under data (`scribe::probe`). 8: an ask for multicasts carries its sender's clock, for
/// the time it was held up on the way (`NodeMsg::CastAsk`). 9: refresh beats list a
/// range of tree keys each (`scribe::Listed`), so that a node in many trees needs several.
/// 10: a node tells a peer its multicasts of a group went on elsewhere while they waited
/// for that peer (`NodeMsg::CastUntether`). 11: records are sealed with AES-256-GCM instead
/// of ChaCha20-Poly1305 (`record`). A node speaking another version is refused with both
/// versions named.
pub const HANDSHAKE_VERSION: u16 = 11;

/// Bounds and timers of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkConfig {
    /// The network name; peers of another network are refused.
    pub network: String,
    /// The handshake protocol version announced (tests change it; nodes should not).
    pub version: u16,
    /// A handshake not done by then fails.
    pub handshake_timeout: Duration,
    /// Largest record plaintext. Bounds how long a control message can wait behind data:
    /// one record, 64 KiB by default (0.5 ms at 1 Gb/s, 65 ms at 1 MB/s, against a 3 s
    /// heartbeat period), while a 64 KiB message still fits one record (one AEAD call).
    pub max_record: usize,
    /// Largest message, reassembled from parts.
    pub max_message: usize,
    /// Bytes of control messages queued before `send_control` refuses more.
    pub max_control_queue: usize,
    /// Bytes of data messages queued before `send_data` refuses more.
    pub max_data_queue: usize,
    /// When keys are ratcheted.
    pub rekey: RekeyLimits,
    /// The network key before the current one, during a key rotation: links authenticated
    /// with it are accepted too, and the node signs with it for peers that hold only it.
    pub previous_key: Option<Arc<NetworkKey>>,
    /// Hand the handshake's signature to the driver ([`crate::Output::Sign`], answered
    /// with [`crate::Input::Signed`]) instead of making it here: an RSA private-key operation takes
    /// 1-4.5 ms, too long for the node's thread. Off for simulations, which sign in place.
    pub offload_signatures: bool,
}

impl Default for LinkConfig {
    fn default() -> LinkConfig {
        LinkConfig {
            network: String::new(),
            version: HANDSHAKE_VERSION,
            handshake_timeout: Duration::from_secs(10),
            max_record: (64 << 10) + 64,
            max_message: 64 << 20,
            max_control_queue: 1 << 20,
            max_data_queue: 16 << 20,
            rekey: RekeyLimits::default(),
            previous_key: None,
            offload_signatures: false,
        }
    }
}

/// Why a link ended.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LinkError {
    /// The handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The handshake did not finish in time.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// A frame that does not parse or is too long.
    #[error("bad frame: {0}")]
    Frame(#[from] super::frame::FrameError),
    /// A record that fails authentication.
    #[error(transparent)]
    Record(#[from] BadRecord),
    /// An authenticated record whose content is malformed.
    #[error("malformed record content: {0}")]
    Malformed(&'static str),
    /// A message larger than `max_message`.
    #[error("message exceeds {0} bytes")]
    MessageTooLarge(usize),
    /// The stream ended without the peer's close: cut off, or truncated by an attacker.
    #[error("stream truncated")]
    Truncated,
    /// The peer closed the link, saying why (empty: graceful).
    #[error("closed by peer: {0:?}")]
    ClosedByPeer(String),
    /// Our side was closed and the peer did not close its own in time.
    #[error("the peer did not close its side in time")]
    CloseTimeout,
}

/// What a link is told: bytes from its socket, their end, the signature it asked for, or
/// that its deadline passed.
#[derive(Debug)]
pub enum LinkInput<'a> {
    /// Bytes from the socket, in order.
    Bytes(&'a [u8]),
    /// Bytes from the socket in a buffer the link may keep: when nothing is pending, no
    /// copy is made and records are decrypted where the driver read them.
    Buf(BytesMut),
    /// The socket reached end of stream.
    Eof,
    /// The signature asked for by [`LinkEvent::Sign`].
    Signed(&'a [u8]),
    /// The deadline from [`Link::poll_timeout`] passed.
    Timeout,
}

/// What a link reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// The handshake succeeded; messages may flow.
    Established,
    /// A control message (heartbeats, overlay maintenance).
    Control(Bytes),
    /// A data message.
    Data(Bytes),
    /// The peer closed its side, saying why: it sends nothing more, but reads what this
    /// side still sends until this side closes too ([`Link::close`]).
    PeerClosed(String),
    /// The link is over; transmit nothing more and close the socket.
    Closed(LinkError),
    /// The handshake needs this signed with the named key (only with
    /// [`LinkConfig::offload_signatures`]): sign it off the node's thread and hand the
    /// signature back ([`LinkInput::Signed`]). Nothing more happens on the link until then.
    Sign(ToSign),
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SendError {
    /// The queue is full: back off until `poll_transmit` has drained it.
    #[error("link queue full")]
    Full,
    /// The link is closed or not yet established.
    #[error("link not open")]
    NotOpen,
    /// Larger than `max_message`.
    #[error("message too large")]
    TooLarge,
}

/// Counters of one link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Handshakes that failed (any reason, timeout included).
    pub handshake_failures: u64,
    /// Records rejected (authentication or content).
    pub records_rejected: u64,
    /// Streams that ended without a close.
    pub truncations: u64,
    /// Records sealed.
    pub records_sealed: u64,
    /// Records opened.
    pub records_opened: u64,
    /// Key ratchets, both directions.
    pub rekeys: u64,
    /// Signatures made with the network key (a private-key operation each): at most one
    /// per link, and none for a peer that has not proven it holds the key.
    pub signatures: u64,
    /// Messages sent (control, data).
    pub sent: (u64, u64),
    /// Messages received (control, data).
    pub received: (u64, u64),
}

/// Boxed in their states: a node has hundreds of links, and a state as large as its
/// largest variant would make every plain (simulated) link carry room for ciphers.
enum State {
    Handshaking(Box<Handshake>),
    Open(Box<Ciphers>),
    /// A plain link awaiting the peer's HELLO (ours is sent).
    PlainHello(Box<Hello>),
    /// A plain link: records travel as unsealed `Plain` frames.
    PlainOpen,
    Closed,
}

/// Frees an emptied queue's buffer: a node has hundreds of links, most of them idle
/// between heartbeats, and each would otherwise keep the most it ever queued.
fn release<T>(queue: &mut VecDeque<T>) {
    if queue.is_empty() && queue.capacity() > 0 {
        *queue = VecDeque::new();
    }
}

/// An open secure link's record ciphers.
struct Ciphers {
    sealer: Sealer,
    opener: Opener,
}

/// The keys a handshake yields: what this side seals with, what it opens with.
type SessionKeys = ([u8; 32], [u8; 32]);

/// One link to a peer node. Feed it the socket's bytes, drain [`Link::poll_transmit`] when
/// the socket can take more (pull, so control messages never wait behind a deep queue of
/// data), and handle [`Link::poll_output`].
pub struct Link {
    /// Shared by every link of a node: the same for all of them.
    cfg: Arc<LinkConfig>,
    /// `None` on a plain link.
    key: Option<Arc<NetworkKey>>,
    /// A signature our AUTH waits for (offloaded), and the session keys (send, receive) it
    /// opens the link with, for the responder.
    owed: Option<Box<(ToSign, Option<SessionKeys>)>>,
    /// Signs our AUTH; only a secure link in its handshake has one (a third of a
    /// kilobyte a link that a simulation of many nodes would otherwise carry for nothing).
    rng: Option<Box<ChaCha8Rng>>,
    state: State,
    deadline: Option<Instant>,
    rbuf: BytesMut,
    /// Handshake frames not yet transmitted.
    out: BytesMut,
    /// What waits to be sent, while anything does (see [`Outbox`]).
    outbox: Option<Box<Outbox>>,
    /// A data message being reassembled from parts.
    partial: BytesMut,
    /// Each side ends its own direction with a CLOSE, and reads on until the other's: what
    /// either sent before its CLOSE is delivered. Our CLOSE's reason, once asked for.
    close: Option<String>,
    /// Our CLOSE is out: nothing more is sent.
    close_sent: bool,
    /// The link ends as soon as our CLOSE is out, without waiting for the peer's.
    close_abrupt: bool,
    /// The peer's CLOSE came: nothing more is read.
    peer_closed: bool,
    events: VecDeque<LinkEvent>,
    stats: LinkStats,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("open", &self.is_open())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// A link just connected (`Initiator` if we dialed). Its HELLO is ready to transmit.
    pub fn new(
        role: Role,
        key: Arc<NetworkKey>,
        cfg: impl Into<Arc<LinkConfig>>,
        seed: [u8; 32],
        now: Instant,
    ) -> Link {
        let cfg = cfg.into();
        let mut rng = ChaCha8Rng::from_seed(seed);
        let ids = Keyring {
            current: &key,
            previous: cfg.previous_key.as_deref(),
        }
        .ids();
        let hs = Handshake::new(role, cfg.version, &cfg.network, ids, &mut rng);
        let hello = hs.hello.clone();
        Link::hello_sent(
            cfg,
            Some(key),
            Some(Box::new(rng)),
            State::Handshaking(Box::new(hs)),
            &hello,
            now,
        )
    }

    /// A link without cryptography, for simulations of many nodes: the HELLO exchange still
    /// checks the version, the network name and the roles, and messages are grouped and
    /// prioritised as on a secure link, but nothing is signed or sealed, so anyone can
    /// forge one. Never use it between real nodes.
    pub fn plain(role: Role, cfg: impl Into<Arc<LinkConfig>>, now: Instant) -> Link {
        let cfg = cfg.into();
        let hello = Hello {
            version: cfg.version,
            role,
            network: super::handshake::network_hash(&cfg.network),
            ephemeral: [0; 32],
            keys: Vec::new(),
        };
        Link::hello_sent(
            cfg,
            None,
            None,
            State::PlainHello(Box::new(hello.clone())),
            &hello,
            now,
        )
    }

    /// A fresh link in `state` with `hello` ready to transmit; both kinds start this way.
    fn hello_sent(
        cfg: Arc<LinkConfig>,
        key: Option<Arc<NetworkKey>>,
        rng: Option<Box<ChaCha8Rng>>,
        state: State,
        hello: &Hello,
        now: Instant,
    ) -> Link {
        let mut out = BytesMut::new();
        put_header(&mut out, FrameKind::Hello, hello.encoded_len());
        hello.encode(&mut out);
        Link {
            deadline: Some(now + cfg.handshake_timeout),
            cfg,
            key,
            owed: None,
            rng,
            state,
            rbuf: BytesMut::new(),
            out,
            outbox: None,
            partial: BytesMut::new(),
            close: None,
            close_sent: false,
            close_abrupt: false,
            peer_closed: false,
            events: VecDeque::new(),
            stats: LinkStats::default(),
        }
    }

    /// An open link with the given record keys, skipping the handshake: only for fuzzing
    /// the record path, which a fuzzer could not reach through a signed handshake.
    #[cfg(any(test, fuzzing))]
    #[doc(hidden)]
    pub fn open_with_keys(
        key: Arc<NetworkKey>,
        cfg: LinkConfig,
        send: [u8; 32],
        recv: [u8; 32],
    ) -> Link {
        let rekey = cfg.rekey;
        let mut link = Link::new(Role::Initiator, key, cfg, [0; 32], Instant::ZERO);
        link.out.clear();
        link.deadline = None;
        link.state = State::Open(Box::new(Ciphers {
            sealer: Sealer::new(send, rekey),
            opener: Opener::new(recv),
        }));
        link
    }

    /// True once established and until closed.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_) | State::PlainOpen)
    }

    /// True once the link has ended.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Counters.
    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// The handshake deadline while handshaking.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Feeds one input; what it led to comes out of [`Link::poll_output`] and
    /// [`Link::poll_transmit`].
    pub fn handle(&mut self, now: Instant, input: LinkInput<'_>) {
        match input {
            LinkInput::Bytes(data) => self.handle_bytes(data),
            LinkInput::Buf(data) => self.handle_buf(data),
            LinkInput::Eof => self.handle_eof(),
            LinkInput::Signed(signature) => self.signed(signature),
            LinkInput::Timeout => self.handle_timeout(now),
        }
    }

    /// Fails the handshake if its deadline has passed.
    fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| now >= d) {
            self.fail(LinkError::HandshakeTimeout);
        }
    }

    fn handle_bytes(&mut self, data: &[u8]) {
        // Nothing may follow the peer's CLOSE: whatever does is not even buffered.
        if self.is_closed() || self.peer_closed {
            return;
        }
        self.rbuf.extend_from_slice(data);
        self.process();
    }

    /// The link's read buffer, lent to the driver to read into with room for `room` more
    /// bytes: what waits undecoded (the start of a record) stays at its front, so that bytes
    /// read are neither copied in nor moved, and records are opened where they were read.
    /// It comes back as [`LinkInput::Buf`], before any other input of bytes.
    pub fn lend_input(&mut self, room: usize) -> BytesMut {
        let mut buf = std::mem::take(&mut self.rbuf);
        buf.reserve(room);
        buf
    }

    fn handle_buf(&mut self, data: BytesMut) {
        if self.is_closed() || self.peer_closed {
            return;
        }
        if self.rbuf.is_empty() {
            self.rbuf = data;
        } else {
            self.rbuf.extend_from_slice(&data);
        }
        self.process();
    }

    fn process(&mut self) {
        while !self.is_closed() && !self.peer_closed {
            // Handshake frames are small; records are bounded by the record size.
            let max = match self.state {
                State::Handshaking(_) | State::PlainHello(_) => MAX_AUTH_LEN,
                _ => self.cfg.max_record + TAG_LEN,
            };
            match decode_frame(&mut self.rbuf, max) {
                Ok(None) => {
                    if self.rbuf.is_empty() {
                        // Messages cut from it keep their part alive; an idle link keeps
                        // no read buffer.
                        self.rbuf = BytesMut::new();
                    }
                    return;
                }
                Ok(Some(frame)) => self.on_frame(frame.kind, &frame.header, frame.payload),
                Err(e) => self.fail(e.into()),
            }
        }
    }

    fn handle_eof(&mut self) {
        match self.state {
            State::Handshaking(_) | State::PlainHello(_) => {
                self.fail(HandshakeError::PeerClosed.into())
            }
            // Either side's CLOSE came first: the stream may end (a peer of an earlier
            // release closes its socket at once, or gives up waiting for ours).
            State::Open(_) | State::PlainOpen if self.close_sent || self.peer_closed => {
                self.state = State::Closed;
                self.events
                    .push_back(LinkEvent::Closed(LinkError::ClosedByPeer(String::new())));
            }
            State::Open(_) | State::PlainOpen => self.fail(LinkError::Truncated),
            State::Closed => {}
        }
    }

    /// Queues a control message; control always goes out before data.
    pub fn send_control(&mut self, msg: Bytes) -> Result<(), SendError> {
        self.check_send(&msg)?;
        // A control message must fit one record: it is never cut into parts.
        if item_len(msg.len()) + 2 > self.cfg.max_record {
            return Err(SendError::TooLarge);
        }
        let max = self.cfg.max_control_queue;
        self.outbox().push_control(max, msg)
    }

    /// Queues a data message; refused when more than `max_data_queue` bytes wait.
    pub fn send_data(&mut self, msg: Bytes) -> Result<(), SendError> {
        self.check_send(&msg)?;
        let max = self.cfg.max_data_queue;
        self.outbox().push_data(max, msg)
    }

    /// Queues a data message ahead of bulk data: it goes once the data message in progress
    /// is out (a request waits behind at most one broadcast, not behind 16 MiB of them).
    /// Refused when more than `max_data_queue` bytes of such messages wait.
    pub fn send_urgent(&mut self, msg: Bytes) -> Result<(), SendError> {
        self.check_send(&msg)?;
        let max = self.cfg.max_data_queue;
        self.outbox().push_urgent(max, msg)
    }

    /// Queues a data message whatever waits already: for traffic whose sender is bounded
    /// by a window of its own (tunnels), which must never be dropped.
    pub fn send_data_unbounded(&mut self, msg: Bytes) -> Result<(), SendError> {
        self.check_send(&msg)?;
        self.outbox().push_unbounded(msg);
        Ok(())
    }

    /// The queues, made if nothing waited.
    fn outbox(&mut self) -> &mut Outbox {
        self.outbox.get_or_insert_default()
    }

    /// Bytes of data queued and not yet sealed.
    pub fn data_queued(&self) -> usize {
        self.outbox.as_ref().map_or(0, |q| q.data_queued())
    }

    /// Ends this side gracefully once what is queued has gone out; the link ends when the
    /// peer's CLOSE comes (or has come). Until then what the peer sends is still read:
    /// nothing either side sent before its CLOSE is lost.
    pub fn close(&mut self, reason: &str) {
        if self.is_open() {
            if self.close.is_none() {
                self.close = Some(reason.to_string());
            }
        } else {
            self.state = State::Closed;
            self.deadline = None;
        }
    }

    /// Ends the link once what is queued has gone out, without waiting for the peer's
    /// CLOSE (what it still sends is not read).
    pub fn close_abruptly(&mut self, reason: &str) {
        self.close_abrupt = true;
        if self.close_sent {
            self.state = State::Closed;
        }
        self.close(reason);
    }

    /// Gives up on a peer that did not close its side in time (or at all): the link is
    /// over now, whatever is still queued.
    pub fn abandon(&mut self) {
        if self.is_open() {
            self.fail(LinkError::CloseTimeout);
        }
    }

    /// True once the peer has closed its side (it sends nothing more).
    pub fn is_peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// The next frame to write, if any: handshake frames, then records, control first.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        if !self.out.is_empty() {
            // Taken whole: handshake frames are sent once, so keep no buffer for them.
            return Some(std::mem::take(&mut self.out).freeze());
        }
        if !matches!(self.state, State::Open(_) | State::PlainOpen) || self.close_sent {
            return None;
        }
        // (A CLOSE alone goes in a record of its own: an empty outbox for it, once.)
        let mut q = self
            .outbox
            .take()
            .filter(|q| !q.is_empty())
            .or_else(|| self.close.is_some().then(Box::default))?;
        // Sized by what is queued, so a record of three heartbeats is not a 64 KiB buffer.
        let queued = q.record_len();
        let mut rec =
            BytesMut::with_capacity(HEADER_LEN + queued.min(self.cfg.max_record) + TAG_LEN);
        rec.extend_from_slice(&[0; HEADER_LEN]);
        // Two bytes stay free for a rekey marker.
        let limit = HEADER_LEN + self.cfg.max_record - 2;
        self.stats.sent.0 += q.put_control(&mut rec, limit);
        self.stats.sent.1 += q.put_data(&mut rec, limit);
        if !q.is_empty() {
            self.outbox = Some(q);
        }
        let closing = self.put_close(&mut rec, limit);
        self.seal(&mut rec);
        if closing {
            self.close_sent = true;
            if self.peer_closed || self.close_abrupt {
                self.state = State::Closed;
            }
        }
        Some(rec.freeze())
    }

    /// This side's CLOSE, once everything before it went and if it fits; true if it went.
    fn put_close(&mut self, rec: &mut BytesMut, limit: usize) -> bool {
        let Some(reason) = &self.close else {
            return false;
        };
        let room = limit - rec.len();
        if self.outbox.is_some() || item_len(reason.len()) > room {
            return false;
        }
        put_item(rec, tag::CLOSE, reason.as_bytes());
        true
    }

    /// Seals a record (rekeying when due), or frames it plain.
    fn seal(&mut self, rec: &mut BytesMut) {
        match &mut self.state {
            State::Open(ciphers) => {
                let sealer = &mut ciphers.sealer;
                let rekey = sealer.rekey_due(rec.len() - HEADER_LEN);
                if rekey {
                    put_item(rec, tag::REKEY, &[]);
                }
                sealer.seal(rec, 0);
                self.stats.records_sealed += 1;
                if rekey {
                    sealer.rekey();
                    self.stats.rekeys += 1;
                }
            }
            _ => {
                let len = rec.len() - HEADER_LEN;
                rec[..HEADER_LEN].copy_from_slice(&super::frame::header(FrameKind::Plain, len));
            }
        }
    }

    /// The signature asked for by [`LinkEvent::Sign`]: our AUTH goes out with it (and the
    /// responder's link opens). Ignored if none is owed (the link closed meanwhile).
    fn signed(&mut self, signature: &[u8]) {
        if let Some((to_sign, keys)) = self.owed.take().map(|b| *b) {
            self.send_auth(&to_sign, signature, keys);
        }
    }

    /// Our AUTH needs `to_sign` signed: here and now, or by the driver.
    fn owe(&mut self, to_sign: ToSign, keys: Option<SessionKeys>) {
        self.stats.signatures += 1;
        if self.cfg.offload_signatures {
            self.owed = Some(Box::new((to_sign.clone(), keys)));
            self.events.push_back(LinkEvent::Sign(to_sign));
            return;
        }
        let key = self.key.as_deref().and_then(|current| {
            Keyring {
                current,
                previous: self.cfg.previous_key.as_deref(),
            }
            .get(&to_sign.key)
        });
        let (Some(key), Some(rng)) = (key, self.rng.as_deref_mut()) else {
            return self.fail(HandshakeError::Malformed("no key").into());
        };
        let signature = key.sign(rng, &to_sign.message);
        self.send_auth(&to_sign, &signature, keys);
    }

    /// Queues our AUTH; for the responder, the link is then open.
    fn send_auth(&mut self, to_sign: &ToSign, signature: &[u8], keys: Option<SessionKeys>) {
        if self.is_closed() {
            return;
        }
        let auth = to_sign.auth(signature);
        put_header(&mut self.out, FrameKind::Auth, auth.len());
        self.out.extend_from_slice(&auth);
        if let Some((send, recv)) = keys {
            self.open(send, recv);
        }
    }

    /// The handshake is done: records may flow.
    fn open(&mut self, send: [u8; 32], recv: [u8; 32]) {
        self.state = State::Open(Box::new(Ciphers {
            sealer: Sealer::new(send, self.cfg.rekey),
            opener: Opener::new(recv),
        }));
        self.rng = None; // nothing more to sign
        self.deadline = None;
        self.events.push_back(LinkEvent::Established);
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<LinkEvent> {
        let event = self.events.pop_front();
        if event.is_none() {
            release(&mut self.events);
        }
        event
    }

    fn check_send(&self, msg: &Bytes) -> Result<(), SendError> {
        if !self.is_open() || self.close.is_some() {
            return Err(SendError::NotOpen);
        }
        if msg.len() > self.cfg.max_message {
            return Err(SendError::TooLarge);
        }
        Ok(())
    }

    fn on_frame(&mut self, kind: FrameKind, header: &[u8; HEADER_LEN], mut payload: BytesMut) {
        if self.owed.is_some() {
            // A genuine peer waits for our AUTH before it sends anything more.
            return self.fail(HandshakeError::Malformed("frame before our AUTH").into());
        }
        match (&mut self.state, kind) {
            (State::Handshaking(_), FrameKind::Hello) => self.on_hello(&payload),
            (State::Handshaking(_), FrameKind::Auth) => self.on_auth(&payload),
            (State::Open(ciphers), FrameKind::Record) => {
                if let Err(e) = ciphers.opener.open(header, &mut payload) {
                    return self.fail(e.into());
                }
                self.stats.records_opened += 1;
                self.on_record(payload.freeze());
            }
            (State::Handshaking(_), FrameKind::Record) => {
                self.fail(HandshakeError::Malformed("record before the handshake finished").into())
            }
            (State::Handshaking(_), FrameKind::Plain) => {
                self.fail(HandshakeError::Malformed("plain frame on a secure link").into())
            }
            (State::PlainHello(_), FrameKind::Hello) => self.on_plain_hello(&payload),
            (State::PlainOpen, FrameKind::Plain) => {
                self.stats.records_opened += 1;
                self.on_record(payload.freeze());
            }
            (State::PlainHello(_), _) => {
                self.fail(HandshakeError::Malformed("frame before the plain HELLO").into())
            }
            (State::Open(_) | State::PlainOpen, _) => {
                self.fail(LinkError::Malformed("unexpected frame on an open link"))
            }
            (State::Closed, _) => {}
        }
    }

    /// The peer's HELLO during the handshake: ours to sign, maybe.
    fn on_hello(&mut self, payload: &[u8]) {
        let State::Handshaking(hs) = &mut self.state else {
            return;
        };
        let Some(peer) = Hello::decode(payload) else {
            return self.fail(HandshakeError::Malformed("HELLO").into());
        };
        let Some(key) = &self.key else {
            return self.fail(HandshakeError::Malformed("no key").into());
        };
        let keys = Keyring {
            current: key,
            previous: self.cfg.previous_key.as_deref(),
        };
        match hs.on_hello(&peer, keys) {
            Ok(Some(to_sign)) => self.owe(to_sign, None),
            Ok(None) => {}
            Err(e) => self.fail(e.into()),
        }
    }

    /// The peer's AUTH: the link opens, after our own AUTH if we owe one.
    fn on_auth(&mut self, payload: &[u8]) {
        let State::Handshaking(hs) = &mut self.state else {
            return;
        };
        let verified = self
            .key
            .as_ref()
            .ok_or(HandshakeError::Malformed("no key"))
            .and_then(|key| {
                let keys = Keyring {
                    current: key,
                    previous: self.cfg.previous_key.as_deref(),
                };
                hs.on_auth(payload, keys)
            });
        match verified {
            Ok(keys) => match keys.auth {
                Some(to_sign) => self.owe(to_sign, Some((keys.send, keys.recv))),
                None => self.open(keys.send, keys.recv),
            },
            Err(e) => self.fail(e.into()),
        }
    }

    /// The peer's HELLO on a plain link: the same network and version, the other role.
    fn on_plain_hello(&mut self, payload: &[u8]) {
        let State::PlainHello(ours) = &self.state else {
            return;
        };
        let checked = match Hello::decode(payload) {
            None => Err(HandshakeError::Malformed("HELLO")),
            Some(peer) if peer.version != ours.version => Err(HandshakeError::Version {
                ours: ours.version,
                theirs: peer.version,
            }),
            Some(peer) if peer.network != ours.network => Err(HandshakeError::Network),
            Some(peer) if peer.role == ours.role => Err(HandshakeError::Role),
            Some(_) => Ok(()),
        };
        match checked {
            Ok(()) => {
                self.state = State::PlainOpen;
                self.deadline = None;
                self.events.push_back(LinkEvent::Established);
            }
            Err(e) => self.fail(e.into()),
        }
    }

    fn on_record(&mut self, plain: Bytes) {
        let Some(items) = parse_items(plain) else {
            return self.fail(LinkError::Malformed("items"));
        };
        let n = items.len();
        for (i, item) in items.into_iter().enumerate() {
            match item.tag {
                tag::CONTROL => {
                    self.stats.received.0 += 1;
                    self.events.push_back(LinkEvent::Control(item.payload));
                }
                tag::DATA if self.partial.is_empty() => {
                    self.stats.received.1 += 1;
                    self.events.push_back(LinkEvent::Data(item.payload));
                }
                tag::DATA_PART | tag::DATA_END => {
                    if self.partial.len() + item.payload.len() > self.cfg.max_message {
                        return self.fail(LinkError::MessageTooLarge(self.cfg.max_message));
                    }
                    self.partial.extend_from_slice(&item.payload);
                    if item.tag == tag::DATA_END {
                        self.stats.received.1 += 1;
                        let msg = self.partial.split().freeze();
                        self.events.push_back(LinkEvent::Data(msg));
                    }
                }
                tag::REKEY if i + 1 == n => {
                    if let State::Open(ciphers) = &mut self.state {
                        ciphers.opener.rekey();
                        self.stats.rekeys += 1;
                    }
                }
                tag::CLOSE => {
                    let reason = String::from_utf8_lossy(&item.payload).into_owned();
                    self.peer_closed = true;
                    if self.close_sent {
                        self.state = State::Closed;
                        self.events
                            .push_back(LinkEvent::Closed(LinkError::ClosedByPeer(reason)));
                    } else {
                        self.events.push_back(LinkEvent::PeerClosed(reason));
                    }
                    return;
                }
                _ => return self.fail(LinkError::Malformed("unexpected item")),
            }
        }
    }

    fn fail(&mut self, e: LinkError) {
        if self.is_closed() {
            return;
        }
        match &e {
            LinkError::Handshake(_) | LinkError::HandshakeTimeout => {
                self.stats.handshake_failures += 1
            }
            LinkError::Frame(_) if !self.is_open() => self.stats.handshake_failures += 1,
            LinkError::Truncated => self.stats.truncations += 1,
            LinkError::CloseTimeout | LinkError::ClosedByPeer(_) => {}
            _ => self.stats.records_rejected += 1,
        }
        self.state = State::Closed;
        self.deadline = None;
        self.out.clear();
        self.outbox = None;
        self.events.push_back(LinkEvent::Closed(e));
    }
}
