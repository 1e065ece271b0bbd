//! The Rust client of Iris, with the model of the original Go client, on any [`Runtime`]
//! (`iris_tokio::client` and `iris_smol::client` name it for theirs).
//!
//! ```no_run
//! use iris_driver::client::{ServiceHandler, ServiceLimits, connect, register};
//! # use iris_driver::runtime::Runtime;
//! use bytes::Bytes;
//! use std::time::Duration;
//!
//! struct Echo;
//! impl ServiceHandler for Echo {
//!     async fn handle_request(&self, request: Bytes) -> Result<Bytes, String> {
//!         Ok(request)
//!     }
//! }
//!
//! # async fn demo<R: Runtime>() -> iris_driver::client::Result<()> {
//! let service = register::<R, _>(55555, "echo", Echo, ServiceLimits::default()).await?;
//! let client = connect::<R>(55555).await?;
//! let reply = client.request("echo", "hello", Duration::from_secs(1)).await?;
//! assert_eq!(&reply[..], b"hello");
//! client.close().await?;
//! service.close().await?;
//! # Ok(()) }
//! ```
//!
//! Send-type calls (broadcast, publish) return once the packet is queued for the socket; the
//! queue is bounded ([`MAX_BUFFERED`]) and callers wait while it is full. Requests are
//! answered by the node (which owns their deadline), so `request` never needs a timer of
//! its own. Dropping a [`Tunnel`] closes it; dropping a [`Connection`] does not: call
//! [`Connection::close`].
//!
//! The protocol itself (request ids and their outcomes, tunnel builds, allowance and
//! reassembly, subscriptions, how a connection ends) is `iris-proto`'s sans-IO
//! [`ClientMachine`], one per connection; this module drives it over a stream and turns
//! its events into replies, handler calls and wake-ups.

mod connection;
mod dial;
mod error;
mod handler;
mod pool;
mod spawner;
mod tunnel;

#[cfg(doc)]
use crate::runtime::Runtime;
pub use connection::{Connection, MAX_BUFFERED, ServiceLimits, connect, register};
pub use dial::Dial;
pub use error::{Error, Result};
pub use handler::{ServiceHandler, TopicHandler};
#[cfg(doc)]
use iris_proto::relay::client::ClientMachine;
pub use pool::Limits;
pub use tunnel::{TUNNEL_WINDOW, Tunnel};
