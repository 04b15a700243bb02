//! The Kubernetes objects the importer reads, as minimal serde structs of
//! our own (docs/kubernetes.md, "Why not k8s-openapi").
//!
//! Only the fields the translation needs are typed. Every policy struct
//! keeps the fields it does not know in `rest` (`#[serde(flatten)]`), so
//! a field added by a newer API version is *seen*: the importer fails
//! closed on it (network-policy-api: an Accept/Allow rule that uses it
//! matches nothing, a Deny/Pass rule denies everything) instead of
//! silently dropping a constraint, which is what a generated client that
//! ignores unknown fields would do. Pods, Services and the other
//! inventory objects ignore fields they do not use: none of their other
//! fields changes which packets a policy allows.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Fields a struct did not declare.
pub type Rest = BTreeMap<String, Value>;

/// The first unknown field of `rest`, as `path.field`.
pub fn unknown(rest: &Rest, path: &str) -> Option<String> {
    rest.keys().next().map(|k| format!("{path}.{k}"))
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct LabelSelector {
    #[serde(default, rename = "matchLabels")]
    pub match_labels: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "matchExpressions")]
    pub match_expressions: Option<Vec<Requirement>>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Requirement {
    pub key: String,
    pub operator: String,
    #[serde(default)]
    pub values: Option<Vec<String>>,
    #[serde(flatten)]
    pub rest: Rest,
}

// ---- NetworkPolicy networking.k8s.io/v1 ----

#[derive(Debug, Clone, Deserialize)]
pub struct NetworkPolicySpec {
    #[serde(default, rename = "podSelector")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, rename = "policyTypes")]
    pub policy_types: Option<Vec<String>>,
    #[serde(default)]
    pub ingress: Option<Vec<NpRule>>,
    #[serde(default)]
    pub egress: Option<Vec<NpRule>>,
    #[serde(flatten)]
    pub rest: Rest,
}

/// An ingress rule (`from`) or an egress rule (`to`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NpRule {
    #[serde(default)]
    pub from: Option<Vec<NpPeer>>,
    #[serde(default)]
    pub to: Option<Vec<NpPeer>>,
    #[serde(default)]
    pub ports: Option<Vec<NpPort>>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NpPeer {
    #[serde(default, rename = "podSelector")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, rename = "namespaceSelector")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default, rename = "ipBlock")]
    pub ip_block: Option<IpBlock>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IpBlock {
    pub cidr: String,
    #[serde(default)]
    pub except: Option<Vec<String>>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NpPort {
    #[serde(default)]
    pub protocol: Option<String>,
    /// A number or a container port name (IntOrString).
    #[serde(default)]
    pub port: Option<Value>,
    #[serde(default, rename = "endPort")]
    pub end_port: Option<i64>,
    #[serde(flatten)]
    pub rest: Rest,
}

// ---- AdminNetworkPolicy / BaselineAdminNetworkPolicy v1alpha1 and
// ---- ClusterNetworkPolicy v1alpha2 (one shape: the differences are
// ---- checked by the translation) ----

#[derive(Debug, Clone, Deserialize)]
pub struct AdminSpec {
    #[serde(default)]
    pub priority: Option<i64>,
    /// ClusterNetworkPolicy only: `Admin` or `Baseline`.
    #[serde(default)]
    pub tier: Option<String>,
    pub subject: Subject,
    #[serde(default)]
    pub ingress: Option<Vec<AdminRule>>,
    #[serde(default)]
    pub egress: Option<Vec<AdminRule>>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Subject {
    #[serde(default)]
    pub namespaces: Option<LabelSelector>,
    #[serde(default)]
    pub pods: Option<PodsPeer>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PodsPeer {
    #[serde(default, rename = "namespaceSelector")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default, rename = "podSelector")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AdminRule {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub from: Option<Vec<AdminPeer>>,
    #[serde(default)]
    pub to: Option<Vec<AdminPeer>>,
    /// v1alpha1 ports.
    #[serde(default)]
    pub ports: Option<Vec<AdminPort>>,
    /// v1alpha2 protocols.
    #[serde(default)]
    pub protocols: Option<Vec<CnpProtocol>>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AdminPeer {
    #[serde(default)]
    pub namespaces: Option<LabelSelector>,
    #[serde(default)]
    pub pods: Option<PodsPeer>,
    #[serde(default)]
    pub nodes: Option<LabelSelector>,
    #[serde(default)]
    pub networks: Option<Vec<String>>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AdminPort {
    #[serde(default, rename = "portNumber")]
    pub port_number: Option<PortNumber>,
    #[serde(default, rename = "portRange")]
    pub port_range: Option<PortRangeSpec>,
    #[serde(default, rename = "namedPort")]
    pub named_port: Option<String>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PortNumber {
    #[serde(default)]
    pub protocol: Option<String>,
    pub port: i64,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PortRangeSpec {
    #[serde(default)]
    pub protocol: Option<String>,
    pub start: i64,
    pub end: i64,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CnpProtocol {
    #[serde(default)]
    pub tcp: Option<CnpTransport>,
    #[serde(default)]
    pub udp: Option<CnpTransport>,
    #[serde(default)]
    pub sctp: Option<CnpTransport>,
    #[serde(default, rename = "destinationNamedPort")]
    pub destination_named_port: Option<String>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CnpTransport {
    #[serde(default, rename = "destinationPort")]
    pub destination_port: Option<CnpPort>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CnpPort {
    #[serde(default)]
    pub number: Option<i64>,
    #[serde(default)]
    pub range: Option<CnpRange>,
    #[serde(flatten)]
    pub rest: Rest,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CnpRange {
    pub start: i64,
    pub end: i64,
    #[serde(flatten)]
    pub rest: Rest,
}

// ---- Inventory objects (unknown fields ignored: see the module doc) ----

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PodSpec {
    #[serde(default, rename = "nodeName")]
    pub node_name: Option<String>,
    #[serde(default, rename = "hostNetwork")]
    pub host_network: Option<bool>,
    #[serde(default)]
    pub containers: Option<Vec<Container>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Container {
    #[serde(default)]
    pub ports: Option<Vec<ContainerPort>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContainerPort {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "containerPort")]
    pub container_port: i64,
    #[serde(default)]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PodStatus {
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default, rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(default, rename = "podIPs")]
    pub pod_ips: Option<Vec<IpEntry>>,
    #[serde(default)]
    pub conditions: Option<Vec<Condition>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IpEntry {
    pub ip: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct NodeStatus {
    #[serde(default)]
    pub addresses: Option<Vec<NodeAddress>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NodeAddress {
    #[serde(rename = "type")]
    pub kind: String,
    pub address: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServiceSpec {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub selector: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(default, rename = "clusterIPs")]
    pub cluster_ips: Option<Vec<String>>,
    #[serde(default)]
    pub ports: Option<Vec<ServicePort>>,
    #[serde(default, rename = "sessionAffinity")]
    pub session_affinity: Option<String>,
    #[serde(default, rename = "sessionAffinityConfig")]
    pub session_affinity_config: Option<Value>,
    #[serde(default, rename = "externalTrafficPolicy")]
    pub external_traffic_policy: Option<String>,
    #[serde(default, rename = "internalTrafficPolicy")]
    pub internal_traffic_policy: Option<String>,
    #[serde(default, rename = "externalIPs")]
    pub external_ips: Option<Vec<String>>,
}

/// A Service's `status` (the load balancer's ingress points).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServiceStatus {
    #[serde(default, rename = "loadBalancer")]
    pub load_balancer: Option<LoadBalancerStatus>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct LoadBalancerStatus {
    #[serde(default)]
    pub ingress: Option<Vec<LoadBalancerIngress>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct LoadBalancerIngress {
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServicePort {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
    pub port: i64,
    #[serde(default, rename = "targetPort")]
    pub target_port: Option<Value>,
    #[serde(default, rename = "nodePort")]
    pub node_port: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct EndpointSlice {
    #[serde(default, rename = "addressType")]
    pub address_type: Option<String>,
    #[serde(default)]
    pub endpoints: Option<Vec<SliceEndpoint>>,
    #[serde(default)]
    pub ports: Option<Vec<SlicePort>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SliceEndpoint {
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub conditions: Option<SliceConditions>,
    #[serde(default, rename = "nodeName")]
    pub node_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SliceConditions {
    #[serde(default)]
    pub ready: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SlicePort {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub port: Option<i64>,
    #[serde(default)]
    pub protocol: Option<String>,
}
