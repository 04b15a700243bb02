//! A Service's frontends beyond its ClusterIPs, and which node's
//! endpoints serve them (docs/kubernetes.md "Services").
//!
//! kube-proxy programs, on every node, the ClusterIPs at `port`, the
//! node's own addresses at `nodePort` (NodePort and LoadBalancer
//! Services), `spec.externalIPs` and the load balancer's ingress IPs
//! (`status.loadBalancer.ingress[].ip`) at `port`. The first are
//! *internal* frontends, governed by `internalTrafficPolicy`; the others
//! *external*, governed by `externalTrafficPolicy`. `Local` keeps only
//! the endpoints on the node kube-proxy runs on. weir compiles one
//! generation per node, so the importer is told the node (`--node NAME`;
//! the agent passes its own): with it, node ports are that node's
//! addresses and `Local` backends its endpoints; without it, node ports
//! are every Node's addresses in the input and `Local` falls back to
//! every ready endpoint, said as W0330 (a program for no node in
//! particular cannot say which endpoints are local).

use super::cluster::Cluster;
use super::input::Obj;
use super::objects::{ServiceSpec, ServiceStatus};
use super::report::Reporter;
use crate::diagnostics::K8sProblem;
use std::net::IpAddr;

/// What the import is for: the cluster's workloads and the node the
/// program is compiled for, if any.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    pub cluster: &'a Cluster,
    pub node: Option<&'a str>,
}

/// A Service's external frontends, before ports are known.
#[derive(Debug, Default)]
pub struct External {
    /// `externalIPs` and load-balancer ingress IPs (served at `port`).
    pub at_port: Vec<IpAddr>,
    /// The node addresses node ports are served on (empty unless the
    /// Service is NodePort or LoadBalancer).
    pub node_addrs: Vec<IpAddr>,
    /// The node whose endpoints serve internal / external frontends
    /// (`Local` with a node); None: every ready endpoint.
    pub internal_node: Option<String>,
    pub external_node: Option<String>,
}

impl External {
    pub fn read(
        obj: &Obj,
        what: &str,
        spec: &ServiceSpec,
        scope: Scope<'_>,
        rep: &mut Reporter,
    ) -> External {
        let mut ext = External::default();
        for i in spec.external_ips.iter().flatten() {
            match i.parse::<IpAddr>() {
                Ok(a) => ext.at_port.push(a),
                Err(_) => rep.malformed(
                    obj.span,
                    what,
                    format!("`spec.externalIPs`: `{i}` is not an address"),
                ),
            }
        }
        let kind = spec.kind.as_deref().unwrap_or("ClusterIP");
        if kind == "LoadBalancer" {
            ext.load_balancer(obj, what, rep);
        }
        if kind == "NodePort" || kind == "LoadBalancer" {
            ext.node_addrs = node_addrs(obj, what, scope, rep);
        }
        ext.at_port.sort();
        ext.at_port.dedup();
        ext.internal_node = local(
            obj,
            what,
            "internalTrafficPolicy",
            spec.internal_traffic_policy.as_deref(),
            scope,
            rep,
        );
        // externalTrafficPolicy only governs external frontends.
        let has_external = !ext.at_port.is_empty() || !ext.node_addrs.is_empty();
        let policy = spec
            .external_traffic_policy
            .as_deref()
            .filter(|_| has_external);
        ext.external_node = local(obj, what, "externalTrafficPolicy", policy, scope, rep);
        ext
    }

    fn load_balancer(&mut self, obj: &Obj, what: &str, rep: &mut Reporter) {
        let status: ServiceStatus = obj
            .value
            .get("status")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let ingress = status
            .load_balancer
            .and_then(|l| l.ingress)
            .unwrap_or_default();
        for (k, i) in ingress.iter().enumerate() {
            match (&i.ip, &i.hostname) {
                (Some(ip), _) => match ip.parse::<IpAddr>() {
                    Ok(a) => self.at_port.push(a),
                    Err(_) => rep.malformed(
                        obj.span,
                        what,
                        format!("`status.loadBalancer.ingress[{k}].ip`: `{ip}` is not an address"),
                    ),
                },
                (None, Some(h)) => rep.not_imported(
                    obj.span,
                    what,
                    format!("load-balancer ingress `{h}`"),
                    "a hostname ingress is a DNS name, not an address; its traffic arrives at the node ports",
                ),
                (None, None) => {}
            }
        }
    }

    /// The external frontends of one Service port, `ADDR:PORT` texts.
    pub fn sockets(&self, port: u16, node_port: Option<u16>) -> Vec<(IpAddr, u16)> {
        let mut out: Vec<(IpAddr, u16)> = self.at_port.iter().map(|a| (*a, port)).collect();
        if let Some(np) = node_port {
            out.extend(self.node_addrs.iter().map(|a| (*a, np)));
        }
        out.sort();
        out.dedup();
        out
    }
}

/// The addresses node ports are served on: the node's (with a node), else
/// every Node's in the input (InternalIP and ExternalIP, as kube-proxy
/// serves node ports on the node's own addresses).
fn node_addrs(obj: &Obj, what: &str, scope: Scope<'_>, rep: &mut Reporter) -> Vec<IpAddr> {
    let nodes = &scope.cluster.nodes;
    let mut out: Vec<IpAddr> = match scope.node {
        Some(n) => match nodes.get(n) {
            Some((_, a)) => a.clone(),
            None => {
                rep.not_imported(
                    obj.span,
                    what,
                    "its node ports",
                    format!("Node {n} (the node compiled for) is not in the input, so its addresses are unknown"),
                );
                Vec::new()
            }
        },
        None => nodes
            .values()
            .flat_map(|(_, a)| a.iter().copied())
            .collect(),
    };
    if out.is_empty() && scope.node.is_none() {
        rep.not_imported(
            obj.span,
            what,
            "its node ports",
            "no Node with an address is in the input",
        );
    }
    out.sort();
    out.dedup();
    out
}

/// `spec.<field>: Local` → the node whose endpoints serve (None: every
/// ready endpoint; with W0330 when Local but no node is known).
fn local(
    obj: &Obj,
    what: &str,
    field: &str,
    policy: Option<&str>,
    scope: Scope<'_>,
    rep: &mut Reporter,
) -> Option<String> {
    if policy != Some("Local") {
        return None;
    }
    match scope.node {
        Some(n) => Some(n.to_string()),
        None => {
            rep.push(
                obj.span,
                K8sProblem::LocalWithoutNode {
                    object: what.to_string(),
                    field: field.to_string(),
                },
            );
            None
        }
    }
}
