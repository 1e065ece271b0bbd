//! Reading the network key file: the file errors around the core's parsing.

use iris_proto::{KeyError, NetworkKey};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why the network key could not be loaded.
#[derive(Debug, Error)]
pub enum KeyFileError {
    /// No file at that path.
    #[error("network key file {0} does not exist")]
    Missing(PathBuf),
    /// The file exists but cannot be read.
    #[error("cannot read network key file {path}: {source}")]
    Unreadable {
        /// The path.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file holds no usable key.
    #[error("network key file {path}: {source}")]
    Invalid {
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        source: KeyError,
    },
}

/// Loads the network's RSA private key (PKCS#1 or PKCS#8, PEM or DER) from `path`.
pub fn load_network_key(path: &Path) -> Result<NetworkKey, KeyFileError> {
    let bytes = std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => KeyFileError::Missing(path.to_path_buf()),
        _ => KeyFileError::Unreadable {
            path: path.to_path_buf(),
            source,
        },
    })?;
    NetworkKey::from_bytes(&bytes).map_err(|source| KeyFileError::Invalid {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../iris-proto/tests/fixtures")
            .join(name)
    }

    #[test]
    fn loads_a_key_and_names_every_failure() {
        assert_eq!(
            load_network_key(&fixture("net-pkcs1.pem")).unwrap().bits(),
            2048
        );
        let missing = load_network_key(&fixture("no-such-key.pem")).unwrap_err();
        assert!(matches!(missing, KeyFileError::Missing(_)), "{missing}");
        assert!(missing.to_string().contains("does not exist"));
        // A directory exists but cannot be read as a file.
        let dir = load_network_key(&fixture("")).unwrap_err();
        assert!(matches!(dir, KeyFileError::Unreadable { .. }), "{dir}");
        let public = load_network_key(&fixture("net-public.pem")).unwrap_err();
        assert!(public.to_string().contains("public key"), "{public}");
        let small = load_network_key(&fixture("small-1024.pem")).unwrap_err();
        assert!(
            small.to_string().contains("1024 bits is too small"),
            "{small}"
        );
        let junk = load_network_key(&fixture("garbage.txt")).unwrap_err();
        assert!(junk.to_string().contains("PKCS#1 or PKCS#8"), "{junk}");
    }
}
