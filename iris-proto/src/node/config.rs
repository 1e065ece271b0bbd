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
    /// Most relay clients past their handshake at once; the next is denied (`DENY` with
    /// the reason). Drivers derive it from the open-file limit.
    pub max_clients: usize,
    /// Most connections still in their handshake at once, counted apart from clients so that
    /// they can never keep real clients out; when full, the oldest is closed.
    pub max_handshakes: usize,
    /// Unwritten bytes for one client above which it is congested: producers whose next
    /// message would go to it stop being read (only they) until it has drained to half of
    /// this. Producers are throttled instead of messages being lost.
    pub client_backlog_high: usize,
    /// A client congested for this long is cut as a slow consumer (`CLOSE` with the
    /// reason), so that one stuck reader cannot hold its producers for ever.
    pub slow_consumer_timeout: Duration,
    /// How long a congested consumer may hold back a group that has other consumers (other
    /// local members not congested, or other nodes the group's multicasts go on to). Past
    /// it, what goes to it queues in its own share (up to `max_client_backlog`) while the
    /// others go on at their rate, and it is cut if it has not drained by
    /// `slow_consumer_timeout`. A group's only consumer keeps throttling its producers.
    pub slow_consumer_grace: Duration,
    /// Hard cap on unwritten bytes for one client (its share of the memory budget); beyond
    /// it the client is cut at once.
    pub max_client_backlog: usize,
    /// Every byte the node holds for clients (partial input, queued output, shared payloads
    /// once, tunnel buffers) counts against this. Over three quarters the node stops reading
    /// new input until it is back under half; over the whole it cuts its largest consumers.
    pub max_memory: usize,
    /// Most requests one client may have awaiting a reply; more are answered "timed out" at once.
    pub max_pending_requests: usize,
    /// Most tunnels (open or being built) per client; more are refused.
    pub max_tunnels_per_client: usize,
    /// Most topics one client may subscribe to; more are a protocol violation.
    pub max_subscriptions_per_client: usize,
    /// On shutdown, how long the node waits for the requests in progress (delivered to its
    /// members, or its clients' own, on their way) to be answered before it closes its
    /// clients. Meanwhile its members get no new requests while other members can take
    /// them. Zero: the pending requests time out at once.
    pub shutdown_drain: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            limits: Limits::default(),
            handshake_timeout: Duration::from_secs(5),
            tunnel_confirm_timeout: Duration::from_secs(5),
            tunnel_window: 4 << 20,
            max_clients: 16 << 10,
            max_handshakes: 1024,
            client_backlog_high: 8 << 20,
            slow_consumer_timeout: Duration::from_secs(10),
            slow_consumer_grace: Duration::from_millis(500),
            max_client_backlog: 256 << 20,
            max_memory: 1 << 30,
            max_pending_requests: 1 << 16,
            max_tunnels_per_client: 1 << 12,
            max_subscriptions_per_client: 1 << 12,
            shutdown_drain: Duration::from_secs(1),
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
    /// The budget must hold a client's share and, twice over, the largest message (large
    /// messages may take half of it).
    #[error(
        "max_memory {memory} must be at least max_client_backlog ({backlog}) and twice the message limit ({message})"
    )]
    Memory {
        /// Configured budget.
        memory: usize,
        /// Configured per-client cap.
        backlog: usize,
        /// Configured message limit.
        message: u64,
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
            (self.max_handshakes, "max_handshakes"),
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
        let message = usize::try_from(l.max_message_size).unwrap_or(usize::MAX);
        if self.max_memory < self.max_client_backlog || self.max_memory / 2 < message {
            return Err(ConfigError::Memory {
                memory: self.max_memory,
                backlog: self.max_client_backlog,
                message: l.max_message_size,
            });
        }
        if l.max_name_size == 0 {
            return Err(ConfigError::Zero("max_name_size"));
        }
        Ok(())
    }
}
