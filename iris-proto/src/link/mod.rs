//! Secure links between nodes, without IO.
//!
//! - [`key`]: the network's shared RSA key (PKCS#1 or PKCS#8, PEM or DER);
//! - [`handshake`]: ephemeral X25519, both sides signing the transcript with the network key
//!   (RSA-PSS, SHA-256), session keys from HKDF-SHA256;
//! - [`frame`]: `version | kind | length` framing, bounded before buffering;
//! - [`record`]: AES-256-GCM records with per-direction keys and counter nonces, keys
//!   ratcheted before a record or byte limit;
//! - grouping: queued small messages share one record, large ones are cut into bounded parts;
//! - [`Link`]: all of it as one state machine, with control messages always sealed before
//!   data, and pulled by the driver only when the socket can take more.
//!
//! Control before data is one link with strict priority and bounded records (64 KiB by
//! default), not two sockets: a heartbeat waits at most for the record being written, and
//! one handshake per peer suffices.

pub(crate) mod frame;
mod grouping;
pub(crate) mod handshake;
pub(crate) mod key;
mod outbox;
pub(crate) mod record;
mod session;

#[cfg(test)]
mod tests;

pub use handshake::{Role, ToSign};
pub use key::{KeyError, KeyId, NetworkKey};
pub use record::RekeyLimits;
#[cfg(any(test, feature = "inspect"))]
pub use session::HANDSHAKE_VERSION;
#[cfg(feature = "inspect")]
pub use session::LinkStats;
pub use session::{Link, LinkConfig, LinkError, LinkEvent, LinkInput, SendError};
