//! Counters the node keeps for logs and metrics.

/// Monotonic counters since the node started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Handshakes completed.
    pub clients_accepted: u64,
    /// Connections refused at connect (capacity, shutdown).
    pub clients_refused: u64,
    /// Connections closed for any reason.
    pub clients_closed: u64,
    /// Clients dropped for breaking the protocol after their handshake.
    pub protocol_violations: u64,
    /// Clients dropped for not finishing the handshake in time.
    pub handshake_timeouts: u64,
    /// Clients dropped for letting their backlog exceed the cap.
    pub slow_consumers: u64,
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
