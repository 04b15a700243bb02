//! Nodes (docs/language.md §3 "Nodes", §4 "Nodes and host-network
//! endpoints"): the one statement of how an endpoint's node is held and
//! how the `node` peer is decided.
//!
//! An endpoint names the node it runs on with `node NAME` (source) or
//! `"node": "NAME"` (inventory). Like a named port ([`crate::named_ports`])
//! the attribute is held as a **label** of the endpoint, key [`KEY`],
//! value the node's name. The consequences are the ones named ports
//! wanted:
//!
//! - the decision graph's classes tell endpoints on different nodes apart
//!   with ordinary selector atoms ([`subject_atoms`]): `node == N` for each
//!   declared node and `has(node)`, so nothing in the manifest or either
//!   back end learns a new kind of fact;
//! - a pod that moves to another node is a relabel for endpoint churn
//!   (`weir endpoints`): moving next to a compiled endpoint with the same
//!   labels on the new node is an incremental update, anything else a
//!   signature no compiled class has, refused as "needs a recompile" (fail
//!   closed, never stale).
//!
//! The `node` peer ("the node the judged endpoint runs on") is the `self`
//! machinery one step removed: each declared node's addresses are a set
//! atom ([`node_set`]), and a policy chain is keyed by the subject's node
//! as it is by the subject's identity for `self` (graph/lower.rs).
//!
//! A host-network endpoint (`host network`) owns no address: its traffic
//! carries its node's address and is judged as the node's (the Cilium and
//! Calico reading), so E0210 never fires for it.

use crate::model::{AddrSet, Cidr, Model, Node, PeerMatch, Sel};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The label key that holds an endpoint's node.
pub const KEY: &str = "node:name";

/// The node an endpoint with `labels` runs on, if it names one.
pub fn node_of(labels: &BTreeMap<String, String>) -> Option<&str> {
    labels.get(KEY).map(String::as_str)
}

/// The node of this name.
pub fn find<'m>(model: &'m Model, name: &str) -> Option<&'m Node> {
    model
        .nodes
        .binary_search_by(|n| n.name.as_str().cmp(name))
        .ok()
        .map(|i| &model.nodes[i])
}

/// The `node` peer: is `addr` an address of the node the endpoint with
/// `subject` labels runs on? False for an endpoint without a node.
pub fn own_node_has(model: &Model, subject: &BTreeMap<String, String>, addr: IpAddr) -> bool {
    node_of(subject)
        .and_then(|n| find(model, n))
        .is_some_and(|n| n.addrs.contains(&addr))
}

/// The addresses of a node as a set (the set atom of the `node` peer).
pub fn node_set(n: &Node) -> AddrSet {
    let mut include: Vec<Cidr> = n.addrs.iter().map(|&a| Cidr::host(a)).collect();
    include.sort();
    include.dedup();
    AddrSet {
        include,
        exclude: Vec::new(),
    }
}

/// The addresses of the nodes whose labels match `sel` (`nodes SEL`).
pub fn selected_set(nodes: &[Node], sel: &Sel) -> AddrSet {
    let mut include: Vec<Cidr> = nodes
        .iter()
        .filter(|n| sel.matches(&n.labels))
        .flat_map(|n| n.addrs.iter().map(|&a| Cidr::host(a)))
        .collect();
    include.sort();
    include.dedup();
    AddrSet {
        include,
        exclude: Vec::new(),
    }
}

/// Is `addr` an address of a declared node? `world` excludes them
/// (docs/language.md §4: a node is a declared entity, as Cilium's `host`
/// and `remote-node` are not its `world`).
pub fn is_node_addr(model: &Model, addr: IpAddr) -> bool {
    model.nodes.iter().any(|n| n.addrs.contains(&addr))
}

/// Every declared node's addresses as one set: the atom `world` tests
/// beside "an endpoint's address" (graph/lower.rs); `None` when no node
/// has an address.
pub fn all_nodes_set(model: &Model) -> Option<AddrSet> {
    let mut include: Vec<Cidr> = model
        .nodes
        .iter()
        .flat_map(|n| n.addrs.iter().map(|&a| Cidr::host(a)))
        .collect();
    include.sort();
    include.dedup();
    (!include.is_empty()).then_some(AddrSet {
        include,
        exclude: Vec::new(),
    })
}

/// Does any policy rule use a `world` peer?
pub fn uses_world(model: &Model) -> bool {
    model.policies.iter().any(|p| {
        [&p.ingress, &p.egress]
            .into_iter()
            .flatten()
            .flatten()
            .any(|r| matches!(r.peer, PeerMatch::World(_)))
    })
}

/// The set atom of [`all_nodes_set`] when a `world` peer needs it.
pub fn world_nodes_atom(model: &Model) -> Option<AddrSet> {
    uses_world(model).then(|| all_nodes_set(model)).flatten()
}

/// Does any policy rule use the `node` peer?
pub fn uses_own_node(model: &Model) -> bool {
    model.policies.iter().any(|p| {
        [&p.ingress, &p.egress]
            .into_iter()
            .flatten()
            .flatten()
            .any(|r| r.peer == PeerMatch::OwnNode)
    })
}

/// The subject-side selector atoms of the `node` peer: `node == N` per
/// declared node, and `has(node)` (so an endpoint on a node the program
/// does not declare never passes for one without a node).
pub fn subject_atoms(model: &Model) -> Vec<Sel> {
    let mut v = vec![Sel::Has(KEY.to_string())];
    v.extend(
        model
            .nodes
            .iter()
            .map(|n| Sel::Eq(KEY.to_string(), n.name.clone())),
    );
    v
}
