//! Counters the node keeps for logs and metrics. Each part of the node counts what it does
//! in a [`Stats`] of its own (every field is some one part's); the node's counters are their
//! sum ([`Stats::absorb`]).

/// Declares the counters and their field-wise sum.
macro_rules! counters {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident: u64,)* }) => {
        $(#[$meta])*
        pub struct $name { $($(#[$fmeta])* pub $field: u64,)* }

        impl $name {
            /// Adds another part's counters to these.
            pub(crate) fn absorb(&mut self, other: &$name) {
                $(self.$field += other.$field;)*
            }
        }
    };
}

counters! {
/// Monotonic counters since the node started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Handshakes completed.
    pub clients_accepted: u64,
    /// Connections refused at connect (the node is shutting down).
    pub clients_refused: u64,
    /// Clients denied at INIT because the node served `max_clients` already.
    pub clients_denied: u64,
    /// Connections closed to make room in a full handshake pool (the oldest goes).
    pub handshakes_evicted: u64,
    /// Connections closed for any reason.
    pub clients_closed: u64,
    /// Clients dropped for breaking the protocol after their handshake.
    pub protocol_violations: u64,
    /// Clients dropped for not finishing the handshake in time.
    pub handshake_timeouts: u64,
    /// Clients cut as slow consumers, for any of the three reasons below.
    pub slow_consumers: u64,
    /// ... because they stayed over the congestion mark for `slow_consumer_timeout`.
    pub cut_lagging: u64,
    /// ... because their unwritten bytes passed `max_client_backlog`.
    pub cut_backlog_cap: u64,
    /// ... because the memory budget ran out and they held the most.
    pub cut_memory: u64,
    /// Times a producer's packet waited for a congested consumer (the producer paused).
    pub producers_held: u64,
    /// Congested consumers past their grace (`slow_consumer_grace`) or let go by the node
    /// that feeds them: from then on they hold back only a group with no other consumer,
    /// and what goes to them meanwhile queues in their own share.
    pub consumers_loosened: u64,
    /// Times a client waited for memory to start a large message.
    pub memory_waits: u64,
    /// Times the memory budget went over three quarters (input paused).
    pub memory_tight: u64,
    /// The most bytes ever charged to the memory budget.
    pub memory_peak: u64,
    /// BROADCAST packets received.
    pub broadcasts: u64,
    /// PUBLISH packets received.
    pub publishes: u64,
    /// REQUEST packets received.
    pub requests: u64,
    /// Requests answered "timed out".
    pub requests_timed_out: u64,
    /// Requests dropped unsent because their time ran out while they waited for a slow
    /// member's socket (a request is never delivered after its deadline).
    pub requests_expired_queued: u64,
    /// Requests refused at once because the client had too many pending.
    pub requests_shed: u64,
    /// Tunnels opened.
    pub tunnels_opened: u64,
    /// Tunnel builds that failed or timed out.
    pub tunnels_failed: u64,
    /// Requests that could not leave this node (the first hop's queue was full): answered
    /// "timed out" at once.
    pub requests_refused: u64,
    /// Requests of other nodes' clients delivered to members here.
    pub requests_served_for_peers: u64,
    /// Replies for other nodes that their links refused (the origin times out).
    pub replies_refused: u64,
    /// Tunnels of other nodes' clients offered to members here.
    pub tunnels_served_for_peers: u64,
    /// Tunnels ended because the other node or the link to it went, or it broke the window.
    pub tunnels_broken: u64,
    /// Broadcasts and events this node sent into the trees.
    pub casts_sent: u64,
    /// Broadcasts and events from other nodes delivered to members here.
    pub casts_delivered: u64,
    /// Broadcasts and events dropped for one peer whose queue was full (flow control
    /// between nodes keeps queues from filling: this counts only what a link refused).
    pub casts_dropped: u64,
    /// Broadcasts and events that waited in this node for a peer's credit.
    pub casts_waited: u64,
    /// Credit messages returned to peers for the multicasts they sent.
    pub cast_credits_sent: u64,
    /// Credit messages no link took (the peer unreachable for now): sent again a grace
    /// later.
    pub cast_credits_refused: u64,
    /// Peers told that a group has other consumers here to feed, after their members held
    /// its multicasts back past the grace (`slow_consumer_grace`).
    pub cast_untethers_sent: u64,
    /// Broadcasts and events seen before (a second path while a tree repairs): dropped.
    pub casts_duplicate: u64,
    /// Asks sent to origins for multicasts missing here (a stalled or crashed tree node
    /// on the way, a partition).
    pub casts_asked: u64,
    /// Multicasts of this node's clients sent again to tree nodes that asked.
    pub casts_resent: u64,
    /// Multicasts missing here that came when asked for.
    pub casts_repaired: u64,
    /// Multicasts missing here that their origin no longer kept: lost.
    pub casts_gone: u64,
    /// Multicasts missing here whose origin never answered (gone or unreachable): lost.
    pub casts_unrepaired: u64,
    /// Tails sent after bursts of this node's multicasts.
    pub cast_tails: u64,
    /// Broadcasts and events from a node this one is not a tree neighbour of: passed on
    /// from here (toward the tree, or through it), and the sender told to repair.
    pub casts_stray: u64,
    /// Broadcasts and events routed to the key's closest nodes and finding no tree there
    /// (nobody is a member, or the tree was moving).
    pub casts_no_tree: u64,
    /// Requests and tunnel builds routed to the key's closest nodes and finding no tree
    /// there (nobody is a member, or the tree was moving and did not come in time).
    pub anycasts_no_tree: u64,
    /// Broadcasts, events, requests and tunnel builds that found no tree while the overlay
    /// was moving, and waited for one (most then went on; the rest count as no tree).
    pub held: u64,
    /// Requests and tunnel builds that found no way on (stale capacities) or whose
    /// queue was full on the way: their origins time out.
    pub anycasts_lost: u64,
    /// Messages on their way to a tree sent again around a next hop that could not be
    /// reached.
    pub rerouted: u64,
    /// Trees refused because this node takes part in `ScribeConfig::max_trees` already:
    /// groups of its own clients, or peers' subscriptions through it. Each is reported
    /// ([`crate::Event::TreesFull`]).
    pub trees_refused: u64,
    /// Messages for a peer that could not be reached (replies, tunnel traffic, tree
    /// maintenance): dropped.
    pub undelivered: u64,
    /// Tree maintenance messages dropped because too many waited already for room on
    /// their links (`trees::deferred`).
    pub tree_messages_dropped: u64,
    /// Requests and tunnel builds whose time ran out on the way.
    pub anycasts_expired: u64,
    /// Node messages from peers that did not parse (a bug in the peer).
    pub peer_messages_bad: u64,
    /// Bytes of node messages sent to and received from peers (before link framing).
    pub peer_bytes_out: u64,
    /// ... received.
    pub peer_bytes_in: u64,
    /// Bytes of tree maintenance sent (subscriptions, beats).
    pub tree_bytes_out: u64,
    /// Tree neighbours routed around because they did not answer a probe under data
    /// (stalled, or slow: `scribe::probe`).
    pub tree_neighbours_suspected: u64,
    /// Peers on the way to a tree (or an origin) routed around because they did not
    /// answer a probe under data (`scribe::probe`).
    pub routed_hops_suspected: u64,
    /// Relay bytes received.
    pub bytes_in: u64,
    /// Relay bytes handed to the driver.
    pub bytes_out: u64,
}
}

/// Most reasons a part keeps between reports (there are a handful).
const MAX_REASONS: usize = 8;

/// Messages a part dropped since its node last reported them: for each reason (the label
/// of the `dropped` counter), how many, and what the last one was for. The node turns
/// them into [`crate::Event::Dropped`] after each input, so that no loss is silent.
#[derive(Debug, Default)]
pub(crate) struct Losses {
    by_reason: Vec<(&'static str, String, u64)>,
}

impl Losses {
    /// One more message dropped for `reason`; `what` names its group or kind.
    pub(crate) fn note(&mut self, reason: &'static str, what: impl FnOnce() -> String) {
        self.add(reason, 1, what);
    }

    /// `n` more messages dropped for `reason`; `what` names the last one's group or kind.
    pub(crate) fn add(&mut self, reason: &'static str, n: u64, what: impl FnOnce() -> String) {
        let room = self.by_reason.len() < MAX_REASONS;
        match self.by_reason.iter_mut().find(|(r, _, _)| *r == reason) {
            Some(entry) => {
                entry.1 = what();
                entry.2 += n;
            }
            None if room => self.by_reason.push((reason, what(), n)),
            None => {}
        }
    }

    /// What was noted since the last call.
    pub(crate) fn take(&mut self) -> Vec<(&'static str, String, u64)> {
        std::mem::take(&mut self.by_reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_keep_a_count_and_the_last_one_per_reason_within_a_bound() {
        let mut l = Losses::default();
        l.note("a", || "first".into());
        l.note("a", || "second".into());
        l.note("b", || "other".into());
        assert_eq!(
            l.take(),
            [
                ("a", "second".to_string(), 2),
                ("b", "other".to_string(), 1)
            ]
        );
        assert!(l.take().is_empty());
        let reasons = ["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9"];
        for r in reasons {
            l.note(r, String::new);
        }
        assert_eq!(l.take().len(), MAX_REASONS);
    }
}
