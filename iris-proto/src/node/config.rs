//! Node configuration: every bound the core enforces comes from here.

use crate::relay::Limits;
use std::time::Duration;
use thiserror::Error;

/// What a node is allowed to hold and how long it waits. The defaults suit a node serving a
/// few hundred local clients; every queue the core keeps is bounded by one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Size bounds of the relay codec. `max_chunk_size` is the tunnel chunk limit
    /// advertised to clients (the protocol's 64 KiB).
    pub limits: Limits,
    /// A client that has not completed its handshake by then is dropped.
    pub handshake_timeout: Duration,
    /// How long a member may take to confirm an inbound tunnel.
    pub tunnel_confirm_timeout: Duration,
    /// The send window the node grants each tunnel end (the protocol's 4 MiB).
    pub tunnel_window: u64,
    /// Most relay clients at once; more are refused at connect.
    pub max_clients: usize,
    /// Unwritten bytes for one client above which the node is congested: it asks its driver
    /// to stop reading from clients ([`crate::Node::reading_paused`]) until the backlog falls
    /// to half of this. Producers are throttled instead of messages being lost.
    pub client_backlog_high: usize,
    /// A client congested for this long is dropped as a slow consumer, so that one stuck
    /// reader cannot stall the node for ever.
    pub slow_consumer_timeout: Duration,
    /// Hard cap on unwritten bytes for one client; beyond it the client is dropped at once.
    pub max_client_backlog: usize,
    /// Most requests one client may have awaiting a reply; more are answered "timed out" at once.
    pub max_pending_requests: usize,
    /// Most tunnels (open or being built) per client; more are refused.
    pub max_tunnels_per_client: usize,
    /// Most topics one client may subscribe to; more are a protocol violation.
    pub max_subscriptions_per_client: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            limits: Limits::default(),
            handshake_timeout: Duration::from_secs(5),
            tunnel_confirm_timeout: Duration::from_secs(5),
            tunnel_window: 4 << 20,
            max_clients: 4096,
            client_backlog_high: 8 << 20,
            slow_consumer_timeout: Duration::from_secs(10),
            max_client_backlog: 256 << 20,
            max_pending_requests: 1 << 16,
            max_tunnels_per_client: 1 << 12,
            max_subscriptions_per_client: 1 << 12,
        }
    }
}

/// A configuration the node cannot run with. The caller's mistake, never a remote's.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The chunk limit must be positive and no larger than the message limit.
    #[error("chunk limit {chunk} must be in 1..={message} (the message limit)")]
    ChunkLimit {
        /// Configured chunk limit.
        chunk: u64,
        /// Configured message limit.
        message: u64,
    },
    /// The tunnel window must hold at least one chunk.
    #[error("tunnel window {window} must be at least one chunk ({chunk})")]
    TunnelWindow {
        /// Configured window.
        window: u64,
        /// Configured chunk limit.
        chunk: u64,
    },
    /// The congestion watermark must not exceed the hard cap.
    #[error("client_backlog_high {high} exceeds max_client_backlog {max}")]
    Backlog {
        /// Configured watermark.
        high: usize,
        /// Configured cap.
        max: usize,
    },
    /// A bound that must be positive is zero.
    #[error("{0} must be positive")]
    Zero(&'static str),
}

impl Config {
    /// Checks the bounds for consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if l.max_chunk_size == 0 || l.max_chunk_size > l.max_message_size {
            return Err(ConfigError::ChunkLimit {
                chunk: l.max_chunk_size,
                message: l.max_message_size,
            });
        }
        if self.tunnel_window < l.max_chunk_size {
            return Err(ConfigError::TunnelWindow {
                window: self.tunnel_window,
                chunk: l.max_chunk_size,
            });
        }
        for (v, name) in [
            (self.max_clients, "max_clients"),
            (self.max_client_backlog, "max_client_backlog"),
            (self.client_backlog_high, "client_backlog_high"),
            (self.max_pending_requests, "max_pending_requests"),
            (self.max_tunnels_per_client, "max_tunnels_per_client"),
            (
                self.max_subscriptions_per_client,
                "max_subscriptions_per_client",
            ),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.client_backlog_high > self.max_client_backlog {
            return Err(ConfigError::Backlog {
                high: self.client_backlog_high,
                max: self.max_client_backlog,
            });
        }
        if l.max_name_size == 0 {
            return Err(ConfigError::Zero("max_name_size"));
        }
        Ok(())
    }
}
