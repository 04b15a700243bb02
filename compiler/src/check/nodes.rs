//! Checking nodes (docs/language.md §3 "Nodes"): `node` declarations, an
//! endpoint's `node NAME` / `host network` lines (held as the label
//! [`crate::nodes::KEY`]), and the `nodes SEL` peer, which resolves to the
//! set of the selected nodes' addresses.

use super::Cx;
use crate::diagnostics::Kind;
use crate::inventory::InventoryEndpoint;
use crate::model::{self, AddrSet, PeerMatch};
use std::collections::BTreeMap;
use std::net::IpAddr;
use weir_grammar::ast::{EndpointDecl, SelExpr};
use weir_grammar::Span;

impl Cx<'_> {
    /// The declared nodes, sorted by name. A node has labels and
    /// addresses only (E0271); an address belongs to one node (E0274).
    pub(super) fn nodes(&mut self) -> Vec<model::Node> {
        let decls: Vec<_> = self.nodes.values().copied().collect();
        let mut owner: BTreeMap<IpAddr, String> = BTreeMap::new();
        let mut out = Vec::with_capacity(decls.len());
        for n in decls {
            let d = &n.decl;
            for p in &d.ports {
                self.report(Kind::NodeLine {
                    span: p.span,
                    what: "a named port in a node",
                    why: "a node has labels and addresses only",
                });
            }
            for l in &d.node {
                self.report(Kind::NodeLine {
                    span: l.span,
                    what: "`node` in a node",
                    why: "a node has labels and addresses only",
                });
            }
            for s in &d.host_network {
                self.report(Kind::NodeLine {
                    span: *s,
                    what: "`host network` in a node",
                    why: "a node has labels and addresses only",
                });
            }
            let labels = self.label_map(&d.labels);
            let mut addrs = Vec::new();
            for a in &d.addrs {
                let ip = self.single_addr(a, "a node address");
                if let Some(other) = owner.get(&ip) {
                    self.report(Kind::AddressInTwoNodes {
                        span: a.span,
                        addr: ip.to_string(),
                        node: d.name.name.clone(),
                        other: other.clone(),
                    });
                    continue;
                }
                owner.insert(ip, d.name.name.clone());
                if !addrs.contains(&ip) {
                    addrs.push(ip);
                }
            }
            out.push(model::Node {
                name: d.name.name.clone(),
                labels,
                addrs,
                span: Some(d.span),
            });
        }
        out
    }

    /// An endpoint's `node NAME` and `host network` lines: the node goes
    /// into `labels`; true when the endpoint is host-network (it then owns
    /// no address: E0272 when it has one or names no node).
    pub(super) fn endpoint_node(
        &mut self,
        d: &EndpointDecl,
        labels: &mut BTreeMap<String, String>,
    ) -> bool {
        for extra in d.node.iter().skip(1) {
            self.report(Kind::NodeLine {
                span: extra.span,
                what: "a second `node` line",
                why: "an endpoint runs on one node",
            });
        }
        if let Some(n) = d.node.first() {
            if !self.nodes.contains_key(&n.name) {
                self.report(Kind::UnknownNode {
                    span: n.span,
                    endpoint: d.name.name.clone(),
                    node: n.name.clone(),
                });
            }
            labels.insert(crate::nodes::KEY.to_string(), n.name.clone());
        }
        let Some(&host) = d.host_network.first() else {
            return false;
        };
        if d.node.is_empty() || !d.addrs.is_empty() {
            self.report(Kind::HostNetworkShape {
                span: d.addrs.first().map_or(host, |a| a.span),
                endpoint: d.name.name.clone(),
                has_addr: !d.addrs.is_empty(),
            });
        }
        true
    }

    /// An inventory endpoint's node must be declared (E0270).
    pub(super) fn inventory_node(&mut self, ep: &InventoryEndpoint) {
        if let Some(n) = crate::nodes::node_of(&ep.labels) {
            if !self.nodes.contains_key(n) {
                self.report(Kind::UnknownNode {
                    span: ep.span,
                    endpoint: ep.name.clone(),
                    node: n.to_string(),
                });
            }
        }
    }

    /// `nodes SEL`: the addresses of the declared nodes whose labels
    /// match (W0320 when none does).
    pub(super) fn nodes_peer(&mut self, e: &SelExpr, span: Span) -> Option<PeerMatch> {
        let sel = self.sel(e)?;
        if !self.node_model.iter().any(|n| sel.matches(&n.labels)) {
            self.report(Kind::NodesSelectNone { span });
        }
        let set: AddrSet = crate::nodes::selected_set(&self.node_model, &sel);
        Some(PeerMatch::Set(set))
    }
}
