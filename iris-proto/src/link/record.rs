//! Records: AES-256-GCM with a key per direction and counter nonces. A record's nonce is
//! its position in the stream, never sent, so a replayed, reordered or dropped record fails
//! authentication. Keys ratchet forward (HKDF) before a record or byte limit.
//!
//! **Why AES-256-GCM.** On this project's machines (AES-NI and carry-less multiply, as on
//! any x86-64 or ARMv8 server of the last decade) the `aes-gcm` crate seals 64 KiB at 1.5x
//! and 64 B at 7x the `chacha20poly1305` crate's rate (`cargo bench --bench link --
//! cipher`), and the link's cipher is most of a node's CPU per byte. Without those
//! instructions it falls back to a constant-time software AES, slower than ChaCha20.

use super::frame::{FrameKind, HEADER_LEN, header};
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::aes::cipher::consts::U12;
use aes_gcm::{Aes256Gcm, Key, Nonce, Tag};
use bytes::{BufMut, BytesMut};
use hkdf::Hkdf;
use sha2::Sha256;

/// Bytes of the GCM tag after every record.
pub(crate) const TAG_LEN: usize = 16;

/// When keys are replaced, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RekeyLimits {
    /// Records sealed under one key.
    pub records: u64,
    /// Plaintext bytes sealed under one key.
    pub bytes: u64,
}

impl Default for RekeyLimits {
    fn default() -> RekeyLimits {
        // Inside AES-GCM's per-key limits as TLS 1.3 and QUIC set them (2^24.5 records of
        // 16 KiB, 2^23 packets: about 2^38 bytes), with room; rekeying is cheap (one HKDF
        // and a key schedule).
        RekeyLimits {
            records: 1 << 23,
            bytes: 1 << 34,
        }
    }
}

/// The next key of a direction: both ends derive it alike, so no exchange is needed.
fn next_key(key: &[u8; 32]) -> [u8; 32] {
    let mut next = [0u8; 32];
    Hkdf::<Sha256>::new(None, key)
        .expand(b"iris-link rekey", &mut next)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    next
}

fn nonce(counter: u64) -> Nonce<U12> {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::from(n)
}

/// The sending half of a link's record layer.
#[derive(Debug)]
pub(crate) struct Sealer {
    key: [u8; 32],
    cipher: Aes256Gcm,
    counter: u64,
    bytes: u64,
    limits: RekeyLimits,
}

impl Sealer {
    /// A sealer starting at record 0 under `key`.
    pub(crate) fn new(key: [u8; 32], limits: RekeyLimits) -> Sealer {
        Sealer {
            cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(key)),
            key,
            counter: 0,
            bytes: 0,
            limits,
        }
    }

    /// True when the record about to be sealed must be the last under this key (the
    /// caller then puts a rekey marker in it and calls [`Sealer::rekey`] after sealing).
    pub(crate) fn rekey_due(&self, next_plaintext: usize) -> bool {
        self.counter + 1 >= self.limits.records
            || self.bytes + next_plaintext as u64 >= self.limits.bytes
    }

    /// Seals the record being built in `out[start..]`: a header placeholder of
    /// [`HEADER_LEN`] bytes followed by the plaintext. Fills in the header, encrypts in
    /// place and appends the tag.
    pub(crate) fn seal(&mut self, out: &mut BytesMut, start: usize) {
        let plain_len = out.len() - start - HEADER_LEN;
        let hdr = header(FrameKind::Record, plain_len + TAG_LEN);
        out[start..start + HEADER_LEN].copy_from_slice(&hdr);
        let body = &mut out[start + HEADER_LEN..];
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce(self.counter), &hdr, body.into())
            .expect("records are far below AES-GCM's message limit");
        out.put_slice(&tag);
        self.counter += 1;
        self.bytes += plain_len as u64;
    }

    /// Moves to the next key.
    pub(crate) fn rekey(&mut self) {
        self.key = next_key(&self.key);
        self.cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(self.key));
        self.counter = 0;
        self.bytes = 0;
    }
}

/// Why a record was rejected: always the peer's (or an attacker's) doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("record failed authentication (tampered, replayed, reordered or truncated)")]
pub struct BadRecord;

/// The receiving half of a link's record layer.
#[derive(Debug)]
pub(crate) struct Opener {
    key: [u8; 32],
    cipher: Aes256Gcm,
    counter: u64,
}

impl Opener {
    /// An opener expecting record 0 under `key`.
    pub(crate) fn new(key: [u8; 32]) -> Opener {
        Opener {
            cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(key)),
            key,
            counter: 0,
        }
    }

    /// Authenticates and decrypts a record's payload in place, leaving the plaintext.
    pub(crate) fn open(
        &mut self,
        header: &[u8; HEADER_LEN],
        payload: &mut BytesMut,
    ) -> Result<(), BadRecord> {
        if payload.len() < TAG_LEN {
            return Err(BadRecord);
        }
        let tag_at = payload.len() - TAG_LEN;
        let tag = Tag::try_from(&payload[tag_at..]).map_err(|_| BadRecord)?;
        let body = &mut payload[..tag_at];
        self.cipher
            .decrypt_inout_detached(&nonce(self.counter), header, body.into(), &tag)
            .map_err(|_| BadRecord)?;
        payload.truncate(tag_at);
        self.counter += 1;
        Ok(())
    }

    /// Moves to the next key, as the sender did after its marked record.
    pub(crate) fn rekey(&mut self) {
        self.key = next_key(&self.key);
        self.cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(self.key));
        self.counter = 0;
    }
}
