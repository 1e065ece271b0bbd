//! The tokio driver of the Iris node, the `iris` binary, and the async Rust client.
//!
//! - [`driver`] runs an [`iris_proto::Node`] on real sockets and timers;
//! - [`client`] is the Rust client library, modeled on the original Go client.

pub mod client;
pub mod driver;

/// The README's Rust snippets, compiled as doctests so they stay true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
