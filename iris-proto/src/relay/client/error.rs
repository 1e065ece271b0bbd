//! What can go wrong, typed by whose doing it is: [`CallError`] for what the application
//! asked (its own mistake, or "not now"), [`RequestError`] and [`BuildError`] for the
//! outcome the node reports, [`End`] for why the whole session stopped.

use super::session::SessionError;
use std::fmt;
use thiserror::Error;

/// Why the machine refused a call of the application. Nothing was sent.
///
/// The argument checks are the ones every Iris client library makes before sending
/// (spec section 9): the node would refuse or misread such packets. Their texts
/// ([`CallError::as_str`]) are the ones the Rust client has always reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    /// A cluster name was empty.
    EmptyCluster,
    /// A topic name was empty.
    EmptyTopic,
    /// A broadcast message was empty.
    EmptyBroadcast,
    /// A request was empty.
    EmptyRequest,
    /// An event was empty.
    EmptyEvent,
    /// A tunnel message was empty (its first chunk would read as a continuation).
    EmptyTunnelMessage,
    /// A timeout under one millisecond: the wire counts whole milliseconds, and 0 would
    /// time out before anything could answer.
    TimeoutUnderOneMs,
    /// The connection is already subscribed to this topic.
    AlreadySubscribed,
    /// The connection is not subscribed to this topic.
    NotSubscribed,
    /// The send buffer holds its limit ([`super::ClientConfig::send_buffer`]): call again
    /// once the driver has reported a flush ([`super::Input::Flushed`]). This is how a slow
    /// socket pushes back on the application.
    SendBufferFull,
    /// The node's allowance for this tunnel does not cover the next chunk: call again
    /// after [`super::Event::TunnelAllowance`] for it.
    NoAllowance,
    /// The tunnel is not open: closed (by either end, or with the connection), still
    /// being built, or never known.
    TunnelClosed,
    /// The session has ended ([`super::Event::Ended`]).
    Ended,
}

impl CallError {
    /// True for the errors that are the caller's arguments (as opposed to the state of the
    /// connection or a tunnel, or a wait).
    pub fn is_argument(self) -> bool {
        !matches!(
            self,
            CallError::SendBufferFull
                | CallError::NoAllowance
                | CallError::TunnelClosed
                | CallError::Ended
        )
    }

    /// The error's text, for callers that report it as a static string.
    pub fn as_str(self) -> &'static str {
        match self {
            CallError::EmptyCluster => "empty cluster name",
            CallError::EmptyTopic => "empty topic name",
            CallError::EmptyBroadcast => "empty broadcast message",
            CallError::EmptyRequest => "empty request",
            CallError::EmptyEvent => "empty event",
            CallError::EmptyTunnelMessage => "empty tunnel message",
            CallError::TimeoutUnderOneMs => "timeout under 1 ms",
            CallError::AlreadySubscribed => "already subscribed to this topic",
            CallError::NotSubscribed => "not subscribed to this topic",
            CallError::SendBufferFull => "send buffer full",
            CallError::NoAllowance => "no tunnel allowance",
            CallError::TunnelClosed => "tunnel closed",
            CallError::Ended => "connection ended",
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for CallError {}

/// How one of this client's requests failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    /// The node's REPLY said it timed out: no member answered within the request's timeout.
    #[error("timed out")]
    TimedOut,
    /// The member's handler failed; its fault text.
    #[error("remote error: {0}")]
    Remote(String),
    /// The connection ended before the node answered.
    #[error("closed")]
    Closed,
}

/// How one of this client's tunnel builds failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BuildError {
    /// The node's TUN_CONFIRM said it timed out (no member, or none confirmed in time).
    #[error("timed out")]
    TimedOut,
    /// The connection ended before the node answered.
    #[error("closed")]
    Closed,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum End {
    /// This client closed the connection and the node confirmed (CLOSE with no reason).
    #[error("closed")]
    Closed,
    /// The node closed the connection, with its reason, or the stream ended or failed
    /// (the text says which).
    #[error("connection dropped: {0}")]
    Dropped(String),
    /// The node refused the handshake or broke the protocol.
    #[error(transparent)]
    Session(#[from] SessionError),
}
