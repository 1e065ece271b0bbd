//! The relay protocol v1: what client libraries speak to their local node.
//!
//! [`codec`] is the wire format of both directions; [`client`] is the client's side of a
//! session, shared by the Rust client libraries of every driver.

pub mod client;
pub mod codec;
mod name;

pub use codec::{ClientPacket, DecodeError, Limits, NodePacket, ReplyOutcome};
pub use name::Name;
