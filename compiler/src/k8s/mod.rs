//! `weir import k8s`: Kubernetes objects → a weir program and an endpoint
//! inventory (docs/kubernetes.md is the user's side of this).
//!
//! Pure like the rest of the compiler: the CLI reads the files and hands
//! over their text. The pieces:
//! - [`input`]: YAML/JSON documents and `List`s → objects with spans;
//! - [`objects`]: the serde structs (our own; unknown fields are kept so
//!   the translation can fail closed on them);
//! - [`cluster`]: Namespaces, Pods, Nodes → weir namespaces, labels,
//!   addresses, ports, and the inventory; [`selector`]: label selectors
//!   (`namespaceSelector` as `namespace(…)`) and the reserved `k8s:`
//!   labels (a pod's namespace and name);
//! - [`networkpolicy`], [`adminpolicy`], [`service`]: the translations,
//!   sharing [`peers`] (address blocks, named ports);
//! - [`emit`]: names and text; the program is formatted by `weir fmt`.
//!
//! The tiers, in Kubernetes' order: `k8s-implicit` (a pod may always talk
//! to itself and its node), `k8s-admin` (AdminNetworkPolicy and Admin
//! ClusterNetworkPolicy by priority), `k8s-netpol` (NetworkPolicy),
//! `k8s-baseline` (Baseline ClusterNetworkPolicy, then
//! BaselineAdminNetworkPolicy), then weir's "no policy selects": allow.
//! The implicit, admin and baseline tiers are `default pass`: what none of
//! their rules decides goes on to the next tier (Kubernetes' `Pass` when
//! nothing matched), where NetworkPolicy's tier isolates.

pub mod adminpolicy;
pub mod cluster;
pub mod emit;
pub mod frontends;
pub mod input;
pub mod networkpolicy;
pub mod objects;
pub mod peers;
pub mod report;
pub mod selector;
pub mod service;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_coredns;
#[cfg(test)]
mod tests_services;

use crate::diagnostics::{Diagnostic, K8sProblem};
use cluster::Cluster;
use emit::{Action, Peer, Policy, ProtoSpec, Rule};
use input::Obj;
use report::Reporter;
use selector::{quote, NS_KEY};
use serde_json::Value;
use weir_grammar::FileId;

pub const IMPLICIT_TIER: &str = "k8s-implicit";

/// Where the endpoints go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoints {
    /// An `inventory "FILE"` item naming the inventory file written next
    /// to the program.
    Inventory(String),
    /// `endpoint` items in the program itself.
    Inline,
}

/// What the import produced. When `diagnostics` has an error the program
/// must not be used (the import fails closed).
#[derive(Debug)]
pub struct Import {
    pub program: String,
    pub inventory: Value,
    pub diagnostics: Vec<Diagnostic>,
    /// Objects translated, by kind.
    pub counts: std::collections::BTreeMap<String, usize>,
}

/// What the import is for, beyond its input.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The node the program is compiled for (`--node NAME`; the agent's
    /// own node): its addresses serve node ports and its endpoints
    /// `Local` Services (frontends.rs). None: no node in particular.
    pub node: Option<String>,
}

/// Imports the objects of `files` (file id, text) for no node in
/// particular.
pub fn import(files: &[(FileId, &str)], endpoints: Endpoints) -> Import {
    import_with(files, endpoints, &Options::default())
}

/// Imports the objects of `files` (file id, text) with `opts`.
pub fn import_with(files: &[(FileId, &str)], endpoints: Endpoints, opts: &Options) -> Import {
    let mut rep = Reporter::default();
    let mut objs: Vec<Obj> = Vec::new();
    for (id, text) in files {
        objs.extend(input::parse_file(text, *id, &mut rep));
    }
    let objs = latest_objects(objs);
    let cluster = Cluster::read(&objs, &mut rep);
    let (mut policies, services, counts) = translate_objects(&objs, &cluster, opts, &mut rep);
    policies.sort_by(|a, b| (a.tier, a.priority, &a.name).cmp(&(b.tier, b.priority, &b.name)));
    let implicit = implicit_policies(&cluster, &mut rep, &objs);

    let mut text = String::new();
    text.push_str("# Imported from Kubernetes by `weir import k8s` (docs/kubernetes.md).\n");
    text.push_str(
        "# Regenerate it rather than editing it: every item names its source object.\n\n",
    );
    text.push_str(&node_decls(&cluster));
    match &endpoints {
        Endpoints::Inventory(f) => text.push_str(&format!("inventory {}\n\n", quote(f))),
        Endpoints::Inline => text.push_str(&inline_endpoints(&cluster)),
    }
    text.push_str(&tier_decls(&policies, !implicit.is_empty()));
    text.push('\n');
    for p in implicit.iter().chain(&policies) {
        text.push_str(&p.text());
        text.push('\n');
    }
    for s in &services {
        text.push_str(&s.text());
        text.push('\n');
    }
    let program = match crate::fmt::format(&text) {
        Ok(t) => t,
        Err(_) => text,
    };
    let mut diagnostics = rep.diagnostics;
    crate::diagnostics::sort(&mut diagnostics);
    Import {
        program,
        inventory: cluster.inventory(),
        diagnostics,
        counts,
    }
}

/// One object per kind/namespace/name: the last one read wins (as
/// `kubectl apply` of the files in order would leave it).
fn latest_objects(objs: Vec<Obj>) -> Vec<Obj> {
    let mut seen = std::collections::BTreeMap::new();
    for (i, o) in objs.iter().enumerate() {
        seen.insert((o.kind.clone(), o.namespace.clone(), o.name.clone()), i);
    }
    let keep: std::collections::BTreeSet<usize> = seen.values().copied().collect();
    objs.into_iter()
        .enumerate()
        .filter(|(i, _)| keep.contains(i))
        .map(|(_, o)| o)
        .collect()
}

/// The policies and services of `objs`, and how many objects of each
/// kind were read (kinds weir does not know are reported and skipped).
fn translate_objects(
    objs: &[Obj],
    cluster: &Cluster,
    opts: &Options,
    rep: &mut Reporter,
) -> (
    Vec<Policy>,
    Vec<emit::Service>,
    std::collections::BTreeMap<String, usize>,
) {
    let mut policies: Vec<Policy> = Vec::new();
    let mut services = Vec::new();
    let mut counts = std::collections::BTreeMap::new();
    for o in objs {
        match o.kind.as_str() {
            "NetworkPolicy" => policies.extend(networkpolicy::translate(o, rep)),
            "AdminNetworkPolicy" | "BaselineAdminNetworkPolicy" | "ClusterNetworkPolicy" => {
                policies.extend(adminpolicy::translate(o, cluster, rep))
            }
            "Service" => {
                let scope = frontends::Scope {
                    cluster,
                    node: opts.node.as_deref(),
                };
                services.extend(service::translate(o, objs, scope, rep))
            }
            "Pod" | "Namespace" | "Node" | "EndpointSlice" => {}
            _ => {
                rep.push(
                    o.span,
                    K8sProblem::KindIgnored {
                        object: o.describe(),
                        api_version: o.api_version.clone(),
                    },
                );
                continue;
            }
        }
        *counts.entry(o.kind.clone()).or_insert(0) += 1;
    }
    (policies, services, counts)
}

/// `--inline`: the namespaces in use and every pod, as declarations.
fn inline_endpoints(cluster: &Cluster) -> String {
    let mut text = String::new();
    for (ns, labels) in cluster.namespaces_used() {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{}: {}", quote(k), quote(v)))
            .collect();
        text.push_str(&format!(
            "# Namespace {ns}\nnamespace {} {{\n  labels {{ {} }}\n}}\n\n",
            emit::namespace_name(&ns),
            labels.join(", "),
        ));
    }
    for p in &cluster.pods {
        let labels: Vec<String> = cluster
            .endpoint_labels(p)
            .iter()
            .map(|(k, v)| format!("{}: {}", quote(k), quote(v)))
            .collect();
        let mut lines: Vec<String> = p.addrs.iter().map(|a| format!("addr {a}")).collect();
        let ports: Vec<String> = cluster::named_ports(p)
            .into_iter()
            .flat_map(|(n, specs)| {
                specs
                    .into_iter()
                    .map(move |spec| format!("{}: {spec}", quote(&n)))
            })
            .collect();
        if !ports.is_empty() {
            lines.push(format!("ports {{ {} }}", ports.join(", ")));
        }
        if let Some(n) = cluster.node_of(p) {
            lines.push(format!("node {n}"));
        }
        if p.host_network {
            lines.push("host network".to_string());
        }
        text.push_str(&format!(
            "# Pod {}/{}\nendpoint {} {{\n  namespace {}\n  labels {{ {} }}\n  {}\n}}\n\n",
            p.namespace,
            p.name,
            emit::pod_name(p),
            emit::namespace_name(&p.namespace),
            labels.join(", "),
            lines.join("\n  ")
        ));
    }
    text
}

/// The tiers the program uses, in Kubernetes' order: the implicit
/// allowances, Admin, NetworkPolicy, Baseline.
fn tier_decls(policies: &[Policy], implicit: bool) -> String {
    let has_tier = |t: &str| policies.iter().any(|p| p.tier == t);
    // (name, order, used, falls through, what)
    let tiers = [
        (
            IMPLICIT_TIER,
            10,
            implicit,
            true,
            "a pod can always reach itself, and its node can always reach it",
        ),
        (
            adminpolicy::ADMIN_TIER,
            20,
            has_tier(adminpolicy::ADMIN_TIER),
            true,
            "AdminNetworkPolicy and ClusterNetworkPolicy tier Admin; what no rule decides goes on to NetworkPolicy",
        ),
        (
            networkpolicy::TIER,
            30,
            has_tier(networkpolicy::TIER),
            false,
            "NetworkPolicy",
        ),
        (
            adminpolicy::BASELINE_TIER,
            40,
            has_tier(adminpolicy::BASELINE_TIER),
            true,
            "ClusterNetworkPolicy tier Baseline, then BaselineAdminNetworkPolicy; what no rule decides is allowed",
        ),
    ];
    let mut text = String::new();
    for (name, order, used, pass, what) in tiers {
        if used {
            let pass = if pass { " default pass" } else { "" };
            text.push_str(&format!("# {what}\ntier {name} order {order}{pass}\n"));
        }
    }
    text
}

/// The Nodes of the input as `node` declarations (labels, InternalIP and
/// ExternalIP addresses).
fn node_decls(cluster: &Cluster) -> String {
    let mut text = String::new();
    for (name, (labels, addrs)) in &cluster.nodes {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{}: {}", quote(k), quote(v)))
            .collect();
        let mut lines = vec![format!("labels {{ {} }}", labels.join(", "))];
        lines.extend(addrs.iter().map(|a| format!("addr {a}")));
        text.push_str(&format!(
            "# Node {name}\nnode {} {{\n  {}\n}}\n\n",
            emit::mangle(name),
            lines.join("\n  ")
        ));
    }
    text
}

/// Kubernetes' implicit allowances: a pod's traffic with itself (`self`)
/// and with the node it runs on (`node`: the Node's addresses, when the
/// Node is in the input; else W0604), one policy each for every pod. The tier is `default pass`: everything else
/// goes on to the next tier.
fn implicit_policies(cluster: &Cluster, rep: &mut Reporter, objs: &[Obj]) -> Vec<Policy> {
    if cluster.pods.is_empty() {
        return Vec::new();
    }
    let both = |peer: Peer| {
        let rules = Some(vec![Rule {
            action: Action::Allow,
            proto: ProtoSpec::Any,
            peer,
            note: String::new(),
        }]);
        (rules.clone(), rules)
    };
    let (ingress, egress) = both(Peer::SelfPod);
    let mut out = vec![Policy {
        comment: vec!["a pod cannot block traffic with itself".to_string()],
        name: "k8s-self".to_string(),
        tier: IMPLICIT_TIER,
        priority: 1000,
        applies: format!("has({})", quote(NS_KEY)),
        ingress,
        egress,
    }];
    // One `node` policy for every pod on a declared node with addresses:
    // a pod moving to another node is an endpoint change, not a policy
    // change (language.md §4 "Nodes"). A pod whose Node (with addresses)
    // is not in the input keeps no allowance, said as W0604.
    let mut reported = std::collections::BTreeSet::new();
    let mut any = false;
    for p in &cluster.pods {
        let Some(node) = &p.node else { continue };
        if cluster.nodes.get(node).is_some_and(|(_, a)| !a.is_empty()) {
            any = true;
        } else if reported.insert(node.clone()) {
            if let Some(o) = objs.iter().find(|o| {
                o.kind == "Pod"
                    && o.name == p.name
                    && o.namespace.as_deref().unwrap_or("default") == p.namespace
            }) {
                rep.not_imported(
                    o.span,
                    &o.describe(),
                    format!("the implicit allowance of node `{node}`"),
                    "the Node (with its addresses) is not in the input",
                );
            }
        }
    }
    if any {
        let (ingress, egress) = both(Peer::OwnNode);
        out.push(Policy {
            comment: vec![
                "traffic between a pod and the node it runs on is always allowed".to_string(),
            ],
            name: "k8s-node".to_string(),
            tier: IMPLICIT_TIER,
            priority: 1000,
            applies: format!("has({})", quote(NS_KEY)),
            ingress,
            egress,
        });
    }
    out
}
