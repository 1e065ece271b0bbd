//! The groups: which of this node's clients are members of which cluster and subscribers of
//! which topic. The trees hear when a group gets its first local member or loses its last
//! ([`Effect::GroupChanged`]); nothing else about local membership leaves the node.

use super::effect::{Effect, Effects};
use super::ids::ConnId;
use crate::relay::Name;
use crate::scribe::Group;
use std::collections::{BTreeMap, BTreeSet};

/// What one connection belongs to.
#[derive(Debug, Default)]
struct Membership {
    cluster: Option<Name>,
    topics: BTreeSet<Name>,
}

/// Local members of clusters and subscribers of topics.
#[derive(Debug)]
pub(crate) struct Groups {
    /// Most topics one connection may subscribe to.
    max_subscriptions: usize,
    /// Cluster name -> member connections, in join order.
    clusters: BTreeMap<Name, Vec<ConnId>>,
    /// Topic name -> subscribed connections, in subscription order.
    topics: BTreeMap<Name, Vec<ConnId>>,
    /// What each connection belongs to (only those that belong to something).
    of: BTreeMap<ConnId, Membership>,
}

impl Groups {
    pub(crate) fn new(max_subscriptions: usize) -> Groups {
        Groups {
            max_subscriptions,
            clusters: BTreeMap::new(),
            topics: BTreeMap::new(),
            of: BTreeMap::new(),
        }
    }

    /// The members of `cluster` here, in join order.
    pub(crate) fn members(&self, cluster: &Name) -> Option<&[ConnId]> {
        self.clusters.get(cluster).map(Vec::as_slice)
    }

    /// The subscribers of `topic` here, in subscription order.
    pub(crate) fn subscribers(&self, topic: &Name) -> Option<&[ConnId]> {
        self.topics.get(topic).map(Vec::as_slice)
    }

    /// The local members of a group (a cluster's members, a topic's subscribers).
    pub(crate) fn of_group(&self, group: &Group) -> Option<&[ConnId]> {
        match group.kind {
            crate::scribe::GroupKind::Cluster => self.members(&group.name),
            crate::scribe::GroupKind::Topic => self.subscribers(&group.name),
        }
    }

    /// The names of the clusters and topics with local members (for tests).
    #[cfg(test)]
    pub(crate) fn names(&self) -> (Vec<&Name>, Vec<&Name>) {
        (self.clusters.keys().collect(), self.topics.keys().collect())
    }

    /// Clusters with members here, and topics with subscribers here.
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.clusters.len(), self.topics.len())
    }

    /// `conn` finished its handshake as a member of `cluster` (a detached name).
    pub(crate) fn handle_registered(&mut self, conn: ConnId, cluster: Name, fx: &mut Effects) {
        self.of.entry(conn).or_default().cluster = Some(cluster.clone());
        let members = self.clusters.entry(cluster.clone()).or_default();
        members.push(conn);
        if members.len() == 1 {
            fx.push(Effect::GroupChanged(Group::cluster(cluster), true));
        }
    }

    /// SUBSCRIBE: a second one is ignored (the original node dropped the connection); one
    /// past the bound is a violation.
    pub(crate) fn handle_subscribe(&mut self, conn: ConnId, topic: Name, fx: &mut Effects) {
        let m = self.of.entry(conn).or_default();
        if m.topics.contains(&topic) {
            return;
        }
        if m.topics.len() >= self.max_subscriptions {
            let max = self.max_subscriptions;
            fx.push(Effect::Violation(
                conn,
                format!("more than {max} subscriptions"),
            ));
            return;
        }
        // Kept for the subscription's life: not in the read buffer it arrived in.
        let topic = topic.detached();
        m.topics.insert(topic.clone());
        let subscribers = self.topics.entry(topic.clone()).or_default();
        subscribers.push(conn);
        if subscribers.len() == 1 {
            fx.push(Effect::GroupChanged(Group::topic(topic), true));
        }
    }

    /// UNSUBSCRIBE: an unknown topic is ignored (the original dropped the connection).
    pub(crate) fn handle_unsubscribe(&mut self, conn: ConnId, topic: &Name, fx: &mut Effects) {
        let Some(m) = self.of.get_mut(&conn) else {
            return;
        };
        if m.topics.remove(topic) && remove_member(&mut self.topics, topic, conn) {
            fx.push(Effect::GroupChanged(Group::topic(topic.clone()), false));
        }
    }

    /// A connection is gone: it leaves its cluster and its topics.
    pub(crate) fn handle_closed(&mut self, conn: ConnId, fx: &mut Effects) {
        let Some(m) = self.of.remove(&conn) else {
            return;
        };
        if let Some(cluster) = m.cluster
            && remove_member(&mut self.clusters, &cluster, conn)
        {
            fx.push(Effect::GroupChanged(Group::cluster(cluster), false));
        }
        for topic in m.topics {
            if remove_member(&mut self.topics, &topic, conn) {
                fx.push(Effect::GroupChanged(Group::topic(topic), false));
            }
        }
    }
}

/// Removes `conn` from the list under `name`, dropping the entry once empty so that names
/// nobody uses do not accumulate; true if it was the last.
fn remove_member(map: &mut BTreeMap<Name, Vec<ConnId>>, name: &Name, conn: ConnId) -> bool {
    if let Some(list) = map.get_mut(name) {
        list.retain(|&c| c != conn);
        if list.is_empty() {
            map.remove(name);
            return true;
        }
    }
    false
}
