//! The workloads: Namespaces, Pods and Nodes, read into what the policy
//! translation needs (namespace labels, pod labels, addresses, container
//! ports, node addresses) and into the endpoint inventory.

use super::input::Obj;
use super::objects::{Metadata, NodeStatus, PodSpec, PodStatus};
use super::report::Reporter;
use super::selector::{NAME_KEY, NS_KEY};
use crate::diagnostics::K8sProblem;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// The label Kubernetes puts on every namespace (since 1.21).
pub const METADATA_NAME: &str = "kubernetes.io/metadata.name";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn parse(s: Option<&str>) -> Option<Proto> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }

    pub fn keyword(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub addrs: Vec<IpAddr>,
    pub ready: bool,
    pub node: Option<String>,
    /// `spec.hostNetwork`: no address of its own (its node's; it is
    /// judged as the node: language.md §4 "Nodes").
    pub host_network: bool,
    /// Named container ports: (name, protocol) → number.
    pub ports: BTreeMap<(String, Proto), u16>,
}

#[derive(Debug, Default)]
pub struct Cluster {
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub pods: Vec<Pod>,
    /// Node name → its labels and addresses (InternalIP, ExternalIP).
    pub nodes: BTreeMap<String, (BTreeMap<String, String>, Vec<IpAddr>)>,
}

/// Deserializes `obj.value[field]` (absent: the default), reporting E0601.
pub fn part<T: DeserializeOwned + Default>(
    obj: &Obj,
    field: &str,
    rep: &mut Reporter,
) -> Option<T> {
    match obj.value.get(field) {
        None | Some(Value::Null) => Some(T::default()),
        Some(v) => match serde_json::from_value(v.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                rep.malformed(obj.span, &obj.describe(), format!("`{field}`: {e}"));
                None
            }
        },
    }
}

fn metadata(obj: &Obj, rep: &mut Reporter) -> Metadata {
    part(obj, "metadata", rep).unwrap_or_default()
}

impl Cluster {
    pub fn read(objs: &[Obj], rep: &mut Reporter) -> Cluster {
        let mut c = Cluster::default();
        for o in objs.iter().filter(|o| o.kind == "Namespace") {
            let mut labels = metadata(o, rep).labels.unwrap_or_default();
            labels.insert(METADATA_NAME.into(), o.name.clone());
            c.namespaces.insert(o.name.clone(), labels);
        }
        for o in objs.iter().filter(|o| o.kind == "Node") {
            let labels = metadata(o, rep).labels.unwrap_or_default();
            let status: NodeStatus = part(o, "status", rep).unwrap_or_default();
            let addrs = status
                .addresses
                .unwrap_or_default()
                .iter()
                .filter(|a| a.kind == "InternalIP" || a.kind == "ExternalIP")
                .filter_map(|a| a.address.parse().ok())
                .collect();
            c.nodes.insert(o.name.clone(), (labels, addrs));
        }
        let mut missing_ns = BTreeSet::new();
        for o in objs.iter().filter(|o| o.kind == "Pod") {
            let what = o.describe();
            let ns = o.namespace.clone().unwrap_or_else(|| "default".into());
            let labels = metadata(o, rep).labels.unwrap_or_default();
            let (Some(spec), Some(status)) = (
                part::<PodSpec>(o, "spec", rep),
                part::<PodStatus>(o, "status", rep),
            ) else {
                continue;
            };
            let host_network = spec.host_network == Some(true);
            if host_network
                && !spec
                    .node_name
                    .as_ref()
                    .is_some_and(|n| c.nodes.contains_key(n))
            {
                rep.not_imported(o.span, &what, "the pod", "it uses the host network and its Node is not in the input (its address is the node's)");
                continue;
            }
            if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
                rep.not_imported(o.span, &what, "the pod", "it has terminated");
                continue;
            }
            let mut texts: Vec<String> = status
                .pod_ips
                .iter()
                .flatten()
                .map(|i| i.ip.clone())
                .collect();
            if texts.is_empty() {
                texts.extend(status.pod_ip.clone());
            }
            let mut addrs: Vec<IpAddr> = Vec::new();
            for t in &texts {
                match t.parse::<IpAddr>() {
                    Ok(a) if !addrs.contains(&a) => addrs.push(a),
                    Ok(_) => {}
                    Err(_) => rep.malformed(
                        o.span,
                        &what,
                        format!("`status.podIPs`: `{t}` is not an address"),
                    ),
                }
            }
            if host_network {
                // Its traffic carries the node's address and is judged as
                // the node's (crate::nodes): the endpoint owns none.
                addrs.clear();
            } else if addrs.is_empty() {
                rep.not_imported(
                    o.span,
                    &what,
                    "the pod",
                    "it has no IP address yet (`status.podIP`)",
                );
                continue;
            }
            let ready = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.kind == "Ready")
                .is_none_or(|c| c.status == "True");
            let mut ports = BTreeMap::new();
            for p in spec
                .containers
                .iter()
                .flatten()
                .flat_map(|c| c.ports.iter().flatten())
            {
                if let (Some(n), Some(pr), Ok(num)) = (
                    &p.name,
                    Proto::parse(p.protocol.as_deref()),
                    u16::try_from(p.container_port),
                ) {
                    ports.entry((n.clone(), pr)).or_insert(num);
                }
            }
            if !c.namespaces.contains_key(&ns) && missing_ns.insert(ns.clone()) {
                rep.not_imported(o.span, &what, format!("the labels of namespace `{ns}`"), format!("Namespace {ns} is not in the input; only its `{METADATA_NAME}` label is known"));
            }
            c.pods.push(Pod {
                namespace: ns,
                name: o.name.clone(),
                labels,
                addrs,
                ready,
                node: spec.node_name,
                host_network,
                ports,
            });
        }
        c.pods
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        c.check_addresses(objs, rep);
        c
    }

    /// Two pods with one address (a stale object next to its successor):
    /// the later one in name order is left out, said as W0604.
    fn check_addresses(&mut self, objs: &[Obj], rep: &mut Reporter) {
        let mut seen: BTreeMap<IpAddr, String> = BTreeMap::new();
        let mut keep = Vec::new();
        for p in std::mem::take(&mut self.pods) {
            let clash = p
                .addrs
                .iter()
                .find_map(|a| seen.get(a).map(|o| (*a, o.clone())));
            if let Some((a, other)) = clash {
                if let Some(o) = objs.iter().find(|o| {
                    o.kind == "Pod"
                        && o.name == p.name
                        && o.namespace.as_deref().unwrap_or("default") == p.namespace
                }) {
                    rep.push(
                        o.span,
                        K8sProblem::NotImported {
                            object: o.describe(),
                            what: "the pod".into(),
                            why: format!("its address {a} is also pod {other}'s"),
                        },
                    );
                }
                continue;
            }
            for a in &p.addrs {
                seen.insert(*a, format!("{}/{}", p.namespace, p.name));
            }
            keep.push(p);
        }
        self.pods = keep;
    }

    /// The weir name of the node a pod runs on, when that Node is in the
    /// input (else the pod names no node).
    pub fn node_of(&self, p: &Pod) -> Option<String> {
        p.node
            .as_ref()
            .filter(|n| self.nodes.contains_key(*n))
            .map(|n| super::emit::mangle(n))
    }

    /// A namespace's labels (just its name label when the Namespace
    /// object is not in the input).
    pub fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        self.namespaces
            .get(ns)
            .cloned()
            .unwrap_or_else(|| BTreeMap::from([(METADATA_NAME.to_string(), ns.to_string())]))
    }

    /// The endpoint labels of a pod: its own, plus the reserved `k8s:`
    /// keys for its namespace's and its own name (selector.rs). Its
    /// namespace's labels are not among them: they belong to the
    /// namespace ([`Cluster::namespaces_used`]), which the endpoint names.
    pub fn endpoint_labels(&self, pod: &Pod) -> BTreeMap<String, String> {
        let mut l = pod.labels.clone();
        l.insert(NS_KEY.into(), pod.namespace.clone());
        l.insert(NAME_KEY.into(), pod.name.clone());
        l
    }

    /// Every namespace a pod is in or a Namespace object declares, with
    /// its labels: the weir namespaces (language.md §3 "Namespaces").
    pub fn namespaces_used(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.namespaces
            .keys()
            .chain(self.pods.iter().map(|p| &p.namespace))
            .map(|ns| (ns.clone(), self.namespace_labels(ns)))
            .collect()
    }

    /// The endpoint inventory (compiler/src/inventory.rs format).
    /// Named container ports are its `"ports"`, see [`named_ports`].
    pub fn inventory(&self) -> Value {
        let eps: Vec<Value> = self
            .pods
            .iter()
            .map(|p| {
                let mut e = json!({
                    "name": super::emit::pod_name(p),
                    "namespace": super::emit::namespace_name(&p.namespace),
                    "labels": self.endpoint_labels(p),
                    "addrs": p.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    "ready": p.ready,
                });
                if let Some(n) = self.node_of(p) {
                    e["node"] = json!(n);
                }
                if p.host_network {
                    e["hostNetwork"] = json!(true);
                }
                let ports: serde_json::Map<String, Value> = named_ports(p)
                    .into_iter()
                    .map(|(name, specs)| match specs.as_slice() {
                        [one] => (name, json!(one)),
                        _ => (name, json!(specs)),
                    })
                    .collect();
                if !ports.is_empty() {
                    e["ports"] = Value::Object(ports);
                }
                e
            })
            .collect();
        let namespaces: serde_json::Map<String, Value> = self
            .namespaces_used()
            .into_iter()
            .map(|(ns, labels)| (super::emit::namespace_name(&ns), json!(labels)))
            .collect();
        json!({ "endpoints": eps, "namespaces": namespaces })
    }
}

/// A pod's named container ports as weir declares them, `(NAME,
/// ["PORT/PROTO", …])` (one per protocol), for the rules' and services'
/// `port "NAME"` (language.md §4, "Named ports"). The API server accepts
/// one name in two containers with different protocols (with a warning),
/// and a Service's `targetPort` name is resolved by name and protocol
/// (`podutil.FindPort`), so a name may have a UDP and a TCP port. (One
/// name twice for one protocol: the first container's, as the warning
/// says — `ports` keeps the first.)
pub fn named_ports(p: &Pod) -> Vec<(String, Vec<String>)> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ((name, proto), num) in &p.ports {
        out.entry(name.clone())
            .or_default()
            .push(format!("{num}/{}", proto.keyword()));
    }
    out.into_iter().collect()
}
