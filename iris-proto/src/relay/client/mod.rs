//! The client's side of the relay protocol, without IO, shared by the Rust client
//! libraries of every driver.
//!
//! - [`ClientMachine`] is a whole client connection as a state machine: the handshake,
//!   request ids and their pending replies, tunnel builds, open tunnels with their
//!   allowance both ways and their reassembly, subscriptions, and how the connection
//!   ended. The async client of `iris-driver` drives it as the node's driver drives the
//!   node: calls and [`ClientMachine::handle`] in, [`ClientMachine::poll_output`] out
//!   ([`Output::Transmit`] to write, [`Event`]s to deliver), ids typed by the space they
//!   come from ([`RequestId`], [`NodeRequestId`], [`TunnelId`], [`BuildId`]).
//! - [`ClientSession`] is the handshake and the decoding alone, for code that speaks the
//!   protocol packet by packet (the node's tests, the simulator's clients, benchmarks);
//!   [`chunks`] and [`Reassembly`] are the tunnel chunk rules alone.
//!
//! ```
//! use iris_proto::Instant;
//! use iris_proto::relay::client::{ClientConfig, ClientMachine, Event, Input, Output};
//! use std::time::Duration;
//!
//! let mut client = ClientMachine::new("", ClientConfig::default());
//! // The INIT packet is the first thing to write.
//! let Some(Output::Transmit(init)) = client.poll_output() else { unreachable!() };
//! client.handle(Instant::ZERO, Input::Flushed(init.len()));
//! // ... the node's answer arrives: `client.handle(now, Input::Received(bytes))`, then
//! // `Event::Accepted`; from then on:
//! let id = client.request("echo", b"hello", Duration::from_secs(1)).unwrap();
//! // ... and an `Event::Reply { request: id, .. }` once the node answers.
//! # let _ = id;
//! ```

mod error;
mod event;
mod id;
mod machine;
mod reassembly;
mod session;
mod tunnel;

pub use error::{BuildError, CallError, End, RequestError};
pub use event::{Event, Input, Output};
pub use id::{BuildId, NodeRequestId, RequestId, TunnelId};
pub use machine::{ClientConfig, ClientMachine, DEFAULT_SEND_BUFFER, DEFAULT_TUNNEL_WINDOW};
pub use reassembly::{Reassembled, Reassembly, chunks};
pub use session::{ClientSession, SessionError, SessionEvent};
pub use tunnel::Outgoing;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
