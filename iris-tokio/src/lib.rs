//! The tokio driver of the Iris node, the `iris` binary, and the async Rust client.
//!
//! - [`driver`] runs an [`iris_proto::Node`] on real sockets and timers;
//! - [`discovery`] carries the beacons by which nodes of one network find each other;
//! - [`client`] is the Rust client library, modeled on the original Go client;
//! - [`key_file`] loads the network key with clear errors;
//! - [`metrics`] serves the node's counters to Prometheus.

pub mod client;
pub mod discovery;
pub mod driver;
pub mod key_file;
mod log_limit;
pub mod metrics;

/// The README's Rust snippets, compiled as doctests so they stay true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
