//! Counters the node keeps for logs and metrics.

/// Monotonic counters since the node started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Handshakes completed.
    pub clients_accepted: u64,
    /// Connections refused at connect (the node is shutting down).
    pub clients_refused: u64,
    /// Clients denied at INIT because the node served `max_clients` already.
    pub clients_denied: u64,
    /// Connections closed to make room in a full handshake pool (the oldest goes).
    pub handshakes_evicted: u64,
    /// Connections closed for any reason.
    pub clients_closed: u64,
    /// Clients dropped for breaking the protocol after their handshake.
    pub protocol_violations: u64,
    /// Clients dropped for not finishing the handshake in time.
    pub handshake_timeouts: u64,
    /// Clients cut as slow consumers, for any of the three reasons below.
    pub slow_consumers: u64,
    /// ... because they stayed over the congestion mark for `slow_consumer_timeout`.
    pub cut_lagging: u64,
    /// ... because their unwritten bytes passed `max_client_backlog`.
    pub cut_backlog_cap: u64,
    /// ... because the memory budget ran out and they held the most.
    pub cut_memory: u64,
    /// Times a producer's packet waited for a congested consumer (the producer paused).
    pub producers_held: u64,
    /// Times a client waited for memory to start a large message.
    pub memory_waits: u64,
    /// Times the memory budget went over three quarters (input paused).
    pub memory_tight: u64,
    /// The most bytes ever charged to the memory budget.
    pub memory_peak: u64,
    /// BROADCAST packets received.
    pub broadcasts: u64,
    /// PUBLISH packets received.
    pub publishes: u64,
    /// REQUEST packets received.
    pub requests: u64,
    /// Requests answered "timed out".
    pub requests_timed_out: u64,
    /// Requests refused at once because the client had too many pending.
    pub requests_shed: u64,
    /// Tunnels opened.
    pub tunnels_opened: u64,
    /// Tunnel builds that failed or timed out.
    pub tunnels_failed: u64,
    /// Relay bytes received.
    pub bytes_in: u64,
    /// Relay bytes handed to the driver.
    pub bytes_out: u64,
}
