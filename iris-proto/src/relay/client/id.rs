//! The ids of a client's relay session, typed by the space they come from: the client's
//! own requests and tunnels (chosen here), and the node's requests and tunnel builds
//! (chosen by the node). On the wire all four are varints; mixing them up is a bug that
//! these types make a compile error.

use std::fmt;

macro_rules! wire_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub(super) u64);

        impl $name {
            /// The id as it travels on the wire.
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

wire_id! {
    /// One of this client's own requests (REQUEST's reqId, echoed by the node's REPLY).
    /// Chosen by the [`super::ClientMachine`], counting up from 0.
    RequestId
}

wire_id! {
    /// A request the node delivered to this member (the node's reqId, which the member's
    /// REPLY names). Chosen by the node.
    NodeRequestId
}

wire_id! {
    /// A tunnel of this connection, outbound or inbound: the tunId that names it on the
    /// wire in both directions. Chosen by the [`super::ClientMachine`], counting up from 0.
    TunnelId
}

wire_id! {
    /// The node's id for an inbound tunnel it is building to this member (TUN_INIT's
    /// buildId), which the member's TUN_CONFIRM names once. Chosen by the node.
    BuildId
}
