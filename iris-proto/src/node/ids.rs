//! Typed ids. A request or a tunnel is named in three spaces, and a bare number would let
//! one be taken for another:
//!
//! - **the client's**: the id a client gave its own request or tunnel end (the relay
//!   protocol's REQUEST and TUN_INIT ids): [`ClientReqId`], [`ClientTunId`];
//! - **this node's**: the key of a request or tunnel in this node's tables
//!   ([`ReqKey`], [`TunKey`]), and the ids it gives the members it delivers to (what a
//!   REQUEST or TUN_INIT to a member says, per member: [`MemberReqId`], [`BuildId`]);
//! - **the other node's**: the key the node at the other end keeps the same request or
//!   tunnel under, which messages to that node name ([`PeerReqKey`], [`PeerTunKey`]).
//!
//! On the wire between nodes an id is a plain number that belongs to the receiver: the
//! conversions happen where messages are built and read (`network`, `tunnels`, `requests`).

use crate::overlay::Contact;

macro_rules! id {
    ($(#[$doc:meta])* $vis:vis $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        $vis struct $name(pub(crate) u64);
    };
}

/// A relay client connection, named by the driver. Ids must not be reused while the node
/// still knows the connection (a driver counting up from 0 is fine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

id!(
    /// This node's key for a request in progress: asked by one of its clients, or
    /// delivered to one of its members for another node.
    pub(crate) ReqKey
);
id!(
    /// This node's key for a tunnel it carries.
    pub(crate) TunKey
);
id!(
    /// A client's own id for one of its requests (REQUEST's id; its REPLY names it).
    pub(crate) ClientReqId
);
id!(
    /// A client's own id for a tunnel end (TUN_INIT's, or TUN_CONFIRM's tunnel id).
    pub(crate) ClientTunId
);
id!(
    /// The id this node gave a request it delivered to a member (per member; the
    /// member's REPLY names it).
    pub(crate) MemberReqId
);
id!(
    /// The id of a tunnel offered to a member (TUN_INIT's build id, per member; the
    /// member's TUN_CONFIRM names it).
    pub(crate) BuildId
);
id!(
    /// Another node's key for a request: what replies to that node name.
    pub(crate) PeerReqKey
);
id!(
    /// Another node's key for a tunnel: what tunnel messages to that node name.
    pub(crate) PeerTunKey
);

/// Where one end of a request or a tunnel is: a client of this node (with its id there),
/// another node (with that node's key), or not known yet (a tunnel build on its way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint<L, R> {
    /// A client of this node.
    Local(ConnId, L),
    /// Another node.
    Remote(Contact, R),
    /// Not known yet.
    Nowhere,
}

/// Counts keys up from 1 (0 is never a key, so that a zeroed field is never one).
#[derive(Debug, Default)]
pub(crate) struct KeyCounter(u64);

impl KeyCounter {
    /// The next number.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
}
