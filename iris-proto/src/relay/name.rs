//! `Name`: a UTF-8 string that shares its bytes with the packet it was decoded from.

use bytes::Bytes;
use std::fmt;

/// An immutable UTF-8 string backed by [`Bytes`], so that cluster and topic names decoded
/// from a read buffer are not copied on the hot path.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Name(Bytes);

impl Name {
    /// Wraps bytes already known to be valid UTF-8; `None` if they are not.
    pub fn from_utf8(bytes: Bytes) -> Option<Name> {
        std::str::from_utf8(&bytes).ok()?;
        Some(Name(bytes))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Every constructor checks UTF-8, so this cannot fail; fall back to "" rather than panic.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// True when the name holds no text.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The same name in an allocation of its own. A decoded name shares the read buffer it
    /// came from; one kept for long (a registration, a subscription, a cache entry) would
    /// keep that whole buffer alive.
    pub fn detached(&self) -> Name {
        Name(Bytes::copy_from_slice(&self.0))
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Name {
        Name(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for Name {
    fn from(s: String) -> Name {
        Name(Bytes::from(s))
    }
}

impl std::borrow::Borrow<[u8]> for Name {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
