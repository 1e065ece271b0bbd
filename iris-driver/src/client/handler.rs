//! The callbacks a service or a topic subscription implements.

use super::{Connection, Error, Tunnel};
use bytes::Bytes;
use std::future::Future;

/// Callbacks of a service registered under a cluster. Every method but
/// [`ServiceHandler::handle_request`] has a do-nothing default.
pub trait ServiceHandler: Send + Sync + 'static {
    /// Runs once after registration, before any delivery is handled (deliveries that arrive
    /// meanwhile are queued). An error closes the connection and fails the registration.
    fn init(&self, conn: &Connection) -> impl Future<Output = Result<(), String>> + Send {
        let _ = conn;
        async { Ok(()) }
    }

    /// A broadcast to the service's cluster.
    fn handle_broadcast(&self, message: Bytes) -> impl Future<Output = ()> + Send {
        let _ = message;
        async {}
    }

    /// A request to the service's cluster: the reply, or a fault text for the requester.
    fn handle_request(&self, request: Bytes) -> impl Future<Output = Result<Bytes, String>> + Send;

    /// An inbound tunnel from a remote client.
    fn handle_tunnel(&self, tunnel: Tunnel) -> impl Future<Output = ()> + Send {
        drop(tunnel);
        async {}
    }

    /// The node dropped the connection unexpectedly.
    fn handle_drop(&self, reason: Error) -> impl Future<Output = ()> + Send {
        let _ = reason;
        async {}
    }
}

/// Callback of a topic subscription.
pub trait TopicHandler: Send + Sync + 'static {
    /// An event published to the topic.
    fn handle_event(&self, event: Bytes) -> impl Future<Output = ()> + Send;
}
