//! The trees machine alone, over a mesh that knows nobody: what it does where its overlay
//! offers no route.

use super::*;
use crate::mesh::{Mesh, MeshConfig, Security};
use crate::node::effect::Effect;
use crate::node::wire::{Anycast, Via, Wanted};
use crate::relay::Name;
use crate::scribe::{Router, ScribeInput};
use bytes::Bytes;
use rand::SeedableRng;
use std::net::SocketAddr;

/// A router whose next hop toward every key is one fixed node.
struct Through(Contact, Contact);

impl Router for Through {
    fn own(&self) -> Contact {
        self.0
    }

    fn next_hop(&self, _key: NodeId, _avoid: Option<NodeId>) -> Option<Contact> {
        Some(self.1)
    }
}

fn contact(i: u16) -> Contact {
    Contact::new(
        NodeId(u128::from(i)),
        SocketAddr::from(([127, 0, 0, 1], 7000 + i)),
        1,
    )
}

/// A mesh that knows nobody and has no link.
fn lone_mesh(now: Instant) -> Mesh {
    let listen = SocketAddr::from(([127, 0, 0, 1], 7000));
    Mesh::new(
        MeshConfig::new("test-net", listen),
        Security::Plain,
        [1; 32],
        now,
    )
}

/// Found by swarm testing: a node that joined on one side of a partition, seconds after
/// the heal, learned from its tree the head of an origin on the other side, but its
/// overlay knew no node there: it routed asks for that origin's messages nowhere, for 8 s,
/// and its member, leaving meanwhile, lost what was sent during the cut. Such an ask goes
/// up the tree that brought the head (never back where it came from).
#[test]
fn an_ask_for_an_origin_this_node_knows_no_way_to_goes_up_the_tree() {
    let now = Instant::ZERO;
    let mesh = lone_mesh(now);
    let (parent, child) = (contact(7), contact(8));
    let mut trees = Trees::new(ScribeConfig::default(), now);
    let group = Group::topic("t".into());
    let router = Through(mesh.overlay().contact(), parent);
    trees.scribe.handle(now, ScribeInput::Join(&group), &router);
    let key = trees.scribe.keys(&group).next().expect("a tree");
    assert_eq!(trees.scribe.parent(key), Some(parent));
    let capacity = |_: &Name| 0;
    let v = View {
        now,
        overlay: mesh.overlay(),
        mesh: &mesh,
        capacity: &capacity,
        free: &capacity,
        stopped: false,
    };
    let ask = NodeMsg::CastAsk {
        key,
        origin: NodeId(99),
        epoch: 1,
        asker: child,
        ranges: vec![(1, 2)],
        within_ms: 1000,
        sent_ms: 0,
        hops: 0,
    };
    let sent_to = |from: Contact, trees: &mut Trees| {
        let mut fx = Effects::default();
        trees.handle_repair_msg(&v, from, ask.clone(), &mut fx);
        fx.drain()
            .filter_map(|e| match e {
                Effect::ToPeer { to, .. } => Some(to.id),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(sent_to(child, &mut trees), vec![parent.id]);
    assert_eq!(
        sent_to(parent, &mut trees),
        vec![],
        "sent back where it came from"
    );
}

/// Found by the rolling-restart test: a request reached a leaving node after it had closed
/// its links (by a link its requester's node dialed to it since), and the tree neighbour
/// it picked had no link any more, which a leaving node does not dial: the request was
/// dropped, though the node's own member was still draining. Such an anycast lands on that
/// member; and once the node has left (its members gone), it goes back where it came from,
/// rather than to a neighbour it has no link to, or nowhere.
#[test]
fn a_leaving_node_lands_an_anycast_on_its_member_or_sends_it_back_rather_than_drop_it() {
    let now = Instant::ZERO;
    let mut mesh = lone_mesh(now);
    let (parent, requester) = (contact(7), contact(8));
    let mut trees = Trees::new(ScribeConfig::default(), now);
    let cluster: Name = "svc".into();
    let group = Group::cluster(cluster.clone());
    let router = Through(mesh.overlay().contact(), parent);
    trees.scribe.handle(now, ScribeInput::Join(&group), &router);
    let key = trees.scribe.keys(&group).next().expect("a tree");
    // The parent's side of the tree can take requests.
    let beat = ScribeMsg::Beat {
        caps: vec![(key, 50)],
        parents: None,
    };
    trees
        .scribe
        .handle(now, ScribeInput::Message(parent, beat), &router);
    let anycast = Anycast {
        key,
        cluster: cluster.clone(),
        index: 0,
        origin: requester,
        id: 1,
        timeout_ms: 5000,
        budget_ms: 5000,
        due_ms: 0,
        via: Via::Routed,
        hops: 0,
        wanted: Wanted::Request(Bytes::from_static(b"x")),
    };
    let mut rng = ChaCha8Rng::from_seed([3; 32]);
    let mut goes = |mesh: &Mesh, stopped: bool, members: u32, from: Contact| {
        let capacity = move |_: &Name| members;
        let free = |_: &Name| 0;
        let v = View {
            now,
            overlay: mesh.overlay(),
            mesh,
            capacity: &capacity,
            free: &free,
            stopped,
        };
        let mut fx = Effects::default();
        trees.handle_anycast(&v, &mut rng, from, anycast.clone(), &mut fx);
        fx.drain()
            .map(|e| match e {
                Effect::Landed(_) => "landed".to_string(),
                Effect::ToPeer { to, .. } => format!("to {}", to.id.0),
                other => format!("{other:?}"),
            })
            .collect::<Vec<_>>()
    };
    // Shutting down, its member draining: here, not to the unlinked parent.
    assert_eq!(goes(&mesh, true, 3, requester), vec!["landed"]);
    // Draining with no member of the cluster: the node still dials, the parent is the way.
    assert_eq!(goes(&mesh, true, 0, requester), vec!["to 7"]);
    // Left: not to the parent it has no link to (and may not dial), but back.
    mesh.handle(now, crate::mesh::MeshInput::Leave);
    assert_eq!(goes(&mesh, true, 0, requester), vec!["to 8"]);
    // From the parent, its only tree neighbour (no way on at all): back too.
    assert_eq!(goes(&mesh, true, 0, parent), vec!["to 7"]);
}
