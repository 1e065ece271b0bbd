//! The runtime-agnostic half of every Iris driver: the node's run loop, the Rust client and
//! the `iris` command, written once over [`runtime::Runtime`].
//!
//! `iris-proto` is the node as a pure state machine; this crate feeds it sockets and timers
//! through the few operations a runtime must offer ([`runtime::Runtime`]: local tasks,
//! timers, TCP, UDP, an in-process pipe, signals). `iris-tokio` and `iris-smol` implement
//! them and re-export what is here under their runtime's name, so users depend on one of
//! those, not on this crate.
//!
//! - [`driver`] runs an [`iris_proto::Node`] on real sockets and timers;
//! - [`discovery`] carries the beacons by which nodes of one network find each other;
//! - [`client`] is the Rust client library, modeled on the original Go client;
//! - [`cli`] is the node command;
//! - [`key_file`] loads the network key with clear errors;
//! - [`metrics`] serves the node's counters to Prometheus.

pub mod cli;
pub mod client;
pub mod discovery;
pub mod driver;
pub mod key_file;
mod log_limit;
pub mod metrics;
pub mod runtime;
