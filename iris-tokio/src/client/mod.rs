//! The Rust client of Iris, on tokio, with the model of the original Go client.
//!
//! ```no_run
//! use iris_tokio::client::{Connection, ServiceHandler, ServiceLimits};
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
//! # async fn demo() -> iris_tokio::client::Result<()> {
//! let service = Connection::register(55555, "echo", Echo, ServiceLimits::default()).await?;
//! let client = Connection::connect(55555).await?;
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

mod connection;
mod dial;
mod error;
mod handler;
mod pool;
mod tunnel;

pub use connection::{Connection, MAX_BUFFERED, ServiceLimits};
pub use dial::Dial;
pub use error::{Error, Result};
pub use handler::{ServiceHandler, TopicHandler};
pub use pool::Limits;
pub use tunnel::{TUNNEL_WINDOW, Tunnel};
