//! The trees machine alone, over a mesh that knows nobody: what it does where its overlay
//! offers no route.

use super::*;
use crate::mesh::{Mesh, MeshConfig, Security};
use crate::node::effect::Effect;
use crate::relay::Name;
use crate::scribe::{Router, ScribeInput};
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

/// Found by swarm testing: a node that joined on one side of a partition, seconds after
/// the heal, learned from its tree the head of an origin on the other side, but its
/// overlay knew no node there: it routed asks for that origin's messages nowhere, for 8 s,
/// and its member, leaving meanwhile, lost what was sent during the cut. Such an ask goes
/// up the tree that brought the head (never back where it came from).
#[test]
fn an_ask_for_an_origin_this_node_knows_no_way_to_goes_up_the_tree() {
    let now = Instant::ZERO;
    let listen = SocketAddr::from(([127, 0, 0, 1], 7000));
    let mesh = Mesh::new(
        MeshConfig::new("test-net", listen),
        Security::Plain,
        [1; 32],
        now,
    );
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
