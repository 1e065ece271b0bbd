//! Typed errors of the client library.

use iris_proto::relay::client::{BuildError, CallError, End, RequestError, SessionError};
use thiserror::Error;

/// What can go wrong with a client operation.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// The operation did not complete within its timeout.
    #[error("timed out")]
    TimedOut,
    /// The connection or tunnel is closed.
    #[error("closed")]
    Closed,
    /// The remote handler failed; carries its fault text.
    #[error("remote error: {0}")]
    Remote(String),
    /// The node refused the handshake.
    #[error("denied by the node: {0}")]
    Denied(String),
    /// The node's bytes broke the protocol.
    #[error("protocol violation by the node: {0}")]
    Protocol(String),
    /// The node closed the connection unexpectedly (a reason, or the socket just ended).
    #[error("connection dropped: {0}")]
    Dropped(String),
    /// An argument was refused before anything was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The service handler's `init` failed; registration was abandoned.
    #[error("service init failed: {0}")]
    Init(String),
    /// A socket error.
    #[error("io error: {0}")]
    Io(String),
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Io(e.to_string())
    }
}

/// Shorthand for results of client operations.
pub type Result<T> = std::result::Result<T, Error>;

/// A call the machine refused: the caller's arguments, or a connection or tunnel that is
/// closed. (Waits, `SendBufferFull` and `NoAllowance`, are the callers' to handle.)
pub(crate) fn from_call(e: CallError) -> Error {
    if e.is_argument() {
        Error::InvalidArgument(e.as_str())
    } else {
        Error::Closed
    }
}

/// Why the session ended, as the client has always reported it.
pub(crate) fn from_end(end: End) -> Error {
    match end {
        End::Closed => Error::Closed,
        End::Dropped(why) => Error::Dropped(why),
        End::Session(SessionError::Denied(why)) => Error::Denied(why),
        End::Session(e) => Error::Protocol(e.to_string()),
    }
}

/// How a request failed.
pub(crate) fn from_request(e: RequestError) -> Error {
    match e {
        RequestError::TimedOut => Error::TimedOut,
        RequestError::Remote(fault) => Error::Remote(fault),
        RequestError::Closed => Error::Closed,
    }
}

/// How a tunnel build failed.
pub(crate) fn from_build(e: BuildError) -> Error {
    match e {
        BuildError::TimedOut => Error::TimedOut,
        BuildError::Closed => Error::Closed,
    }
}
