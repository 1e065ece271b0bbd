//! The network key: one RSA private key shared by every node of a network. Holding it is
//! membership; links prove it by signing their handshake transcript with RSA-PSS (SHA-256).
//!
//! Parsing lives here (bytes in, no file IO); drivers read the file and add the file errors.

use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1::{DecodeRsaPublicKey, EncodeRsaPublicKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::pss::{Signature, SigningKey, VerifyingKey};
use rsa::signature::{RandomizedSigner, Verifier};
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{PrivateKey, PublicKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The smallest modulus accepted, in bits.
pub(crate) const MIN_KEY_BITS: usize = 2048;

/// Why bytes are not a usable network key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    /// A public key was given where the network's private key is needed.
    #[error("this is an RSA public key; the network key must be the private key")]
    PublicKey,
    /// Neither PKCS#1 nor PKCS#8, PEM or DER.
    #[error("not an RSA private key in PKCS#1 or PKCS#8 (PEM or DER) form")]
    UnknownFormat,
    /// The modulus is too small to be safe.
    #[error("RSA key of {bits} bits is too small: at least {MIN_KEY_BITS} bits are required")]
    TooSmall {
        /// The key's size.
        bits: usize,
    },
}

/// A key's public fingerprint: the first 8 bytes of SHA-256 of its public key (PKCS#1
/// DER). HELLO carries the ids of the keys a node accepts, so that during a key rotation
/// the dialing node signs with one its peer holds; an id says nothing of the private key.
pub type KeyId = [u8; 8];

/// The network's RSA key, ready to sign and verify handshakes.
#[derive(Clone)]
pub struct NetworkKey {
    signing: SigningKey<Sha256>,
    verifying: VerifyingKey<Sha256>,
    bits: usize,
    id: KeyId,
    /// The key discovery beacons are authenticated with: derived from the private key, so
    /// that only holders of the network key can make a node dial (see `beacon_secret`).
    beacon: [u8; 32],
}

impl std::fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself: configs holding keys get logged.
        f.debug_struct("NetworkKey")
            .field("bits", &self.bits)
            .field("id", &hex(&self.id))
            .finish()
    }
}

/// Two keys are the same key when their public halves are.
impl PartialEq for NetworkKey {
    fn eq(&self, other: &NetworkKey) -> bool {
        self.id == other.id
    }
}

impl Eq for NetworkKey {}

/// HKDF-SHA256 of `ikm` under the beacons' own label: a key for nothing else.
pub(crate) fn derive_beacon_secret(ikm: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    hkdf::Hkdf::<Sha256>::new(Some(b"iris discovery beacons v2"), ikm)
        .expand(b"beacon mac", &mut out)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl NetworkKey {
    /// Parses a private key: PEM (`RSA PRIVATE KEY` or `PRIVATE KEY`) or DER, PKCS#1 or PKCS#8.
    pub fn from_bytes(bytes: &[u8]) -> Result<NetworkKey, KeyError> {
        let key = match std::str::from_utf8(bytes) {
            Ok(text) if text.contains("-----BEGIN") => parse_pem(text)?,
            _ => parse_der(bytes)?,
        };
        let bits = key.size() * 8;
        if bits < MIN_KEY_BITS {
            return Err(KeyError::TooSmall { bits });
        }
        let public = key.to_public_key();
        let der = public.to_pkcs1_der().map_err(|_| KeyError::UnknownFormat)?;
        let digest = Sha256::digest(der.as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        let verifying = VerifyingKey::new(public);
        let beacon = derive_beacon_secret(&key.d().to_be_bytes());
        Ok(NetworkKey {
            signing: SigningKey::new(key),
            verifying,
            bits,
            id,
            beacon,
        })
    }

    /// The secret that authenticates this network's discovery beacons: HKDF-SHA256 of the
    /// private exponent, never the key itself nor anything a public key gives.
    pub(crate) fn beacon_secret(&self) -> [u8; 32] {
        self.beacon
    }

    /// The key's public fingerprint ([`KeyId`]).
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The fingerprint in hex, for logs.
    pub fn id_hex(&self) -> String {
        hex(&self.id)
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// Signs `message` (RSA-PSS, SHA-256), its salt drawn from `seed` (the caller's
    /// randomness: a driver answering [`crate::Output::Sign`] off the node's thread).
    pub fn sign_seeded(&self, seed: [u8; 32], message: &[u8]) -> Vec<u8> {
        use rand::SeedableRng;
        self.sign(&mut rand::rngs::ChaCha8Rng::from_seed(seed), message)
    }

    /// Signs `message` (RSA-PSS, SHA-256) with randomness from the caller's seeded RNG.
    pub(crate) fn sign(&self, rng: &mut rand::rngs::ChaCha8Rng, message: &[u8]) -> Vec<u8> {
        let sig: Signature = self.signing.sign_with_rng(rng, message);
        rsa::signature::SignatureEncoding::to_vec(&sig)
    }

    /// True if `signature` is this key's signature of `message`.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        Signature::try_from(signature).is_ok_and(|sig| self.verifying.verify(message, &sig).is_ok())
    }
}

fn parse_pem(text: &str) -> Result<PrivateKey, KeyError> {
    if text.contains("-----BEGIN RSA PRIVATE KEY-----") {
        return PrivateKey::from_pkcs1_pem(text).map_err(|_| KeyError::UnknownFormat);
    }
    if text.contains("-----BEGIN PRIVATE KEY-----") {
        return PrivateKey::from_pkcs8_pem(text).map_err(|_| KeyError::UnknownFormat);
    }
    if text.contains("PUBLIC KEY-----") {
        return Err(KeyError::PublicKey);
    }
    Err(KeyError::UnknownFormat)
}

fn parse_der(bytes: &[u8]) -> Result<PrivateKey, KeyError> {
    if let Ok(key) = PrivateKey::from_pkcs8_der(bytes) {
        return Ok(key);
    }
    if let Ok(key) = PrivateKey::from_pkcs1_der(bytes) {
        return Ok(key);
    }
    if PublicKey::from_public_key_der(bytes).is_ok() || PublicKey::from_pkcs1_der(bytes).is_ok() {
        return Err(KeyError::PublicKey);
    }
    Err(KeyError::UnknownFormat)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn loads_pkcs1_and_pkcs8_in_pem_and_der_as_the_same_key() {
        let keys: Vec<NetworkKey> = [
            "net-pkcs1.pem",
            "net-pkcs8.pem",
            "net-pkcs1.der",
            "net-pkcs8.der",
        ]
        .iter()
        .map(|f| NetworkKey::from_bytes(&fixture(f)).unwrap_or_else(|e| panic!("{f}: {e}")))
        .collect();
        let mut rng = <rand::rngs::ChaCha8Rng as rand::SeedableRng>::from_seed([1; 32]);
        let sig = keys[0].sign(&mut rng, b"transcript");
        for k in &keys {
            assert_eq!(k.bits(), 2048);
            assert!(k.verify(b"transcript", &sig));
            assert!(!k.verify(b"transcripT", &sig));
        }
    }

    #[test]
    fn rejects_public_small_and_unknown_keys_clearly() {
        assert_eq!(
            NetworkKey::from_bytes(&fixture("net-public.pem")).err(),
            Some(KeyError::PublicKey)
        );
        assert_eq!(
            NetworkKey::from_bytes(&fixture("small-1024.pem")).err(),
            Some(KeyError::TooSmall { bits: 1024 })
        );
        assert_eq!(
            NetworkKey::from_bytes(&fixture("garbage.txt")).err(),
            Some(KeyError::UnknownFormat)
        );
        assert_eq!(
            NetworkKey::from_bytes(&[]).err(),
            Some(KeyError::UnknownFormat)
        );
        let mut truncated = fixture("net-pkcs8.der");
        truncated.truncate(100);
        assert_eq!(
            NetworkKey::from_bytes(&truncated).err(),
            Some(KeyError::UnknownFormat)
        );
    }

    #[test]
    fn another_key_does_not_verify() {
        let a = NetworkKey::from_bytes(&fixture("net-pkcs8.pem")).unwrap();
        let b = NetworkKey::from_bytes(&fixture("other-pkcs8.pem")).unwrap();
        let mut rng = <rand::rngs::ChaCha8Rng as rand::SeedableRng>::from_seed([2; 32]);
        let sig = a.sign(&mut rng, b"x");
        assert!(!b.verify(b"x", &sig));
    }
}
