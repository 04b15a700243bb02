//! The manifest as readers see it: owned types that hold exactly what
//! the writer ([`super::write`]) writes. Unknown keys are refused
//! (`deny_unknown_fields`), so a field the writer adds without adding it
//! here fails `contract::tests` rather than being silently ignored by a
//! reader; values whose type cannot say everything (class ids, address
//! lengths, names) are checked by [`super::validate`].
//!
//! Field order: every struct declares its fields in sorted key order,
//! which is the order the writer's JSON has (see [`super::write`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::ebpf::EbpfManifest;
use super::iptables::IptablesSection;
use crate::graph::classes::{Atom, AtomId, ClassId};
use crate::model::Sel;

/// A back end, as `targets` and `backends` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Ebpf,
    Iptables,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Ebpf => "ebpf",
            Target::Iptables => "iptables",
        }
    }
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// File name → SHA-256 (lowercase hex) of every other file of the
    /// bundle. A reader checks a file against it before using it.
    pub artifacts: BTreeMap<String, String>,
    /// One section per compiled back end.
    pub backends: Backends,
    pub classes: Classes,
    /// The endpoints compiled in, with their addresses' classes.
    pub endpoints: Vec<EndpointEntry>,
    pub format_version: u32,
    /// The capacity report of the decision graph (for people and
    /// `weir compile --report`; nothing reads it to enforce anything).
    pub graph: serde_json::Value,
    /// The redirect proxies whose address must be on the host the bundle
    /// is applied on ([`super::local_proxy`]; written only when there
    /// are any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_proxies: Vec<super::local_proxy::LocalProxy>,
    /// Provenance id → what decided (counters, log prefixes).
    pub provenance: Vec<ProvenanceEntry>,
    pub services: Vec<ServiceEntry>,
    /// SHA-256 over the program's sources (see `bundle::source_hash`).
    pub source_hash: String,
    /// Source file names, sorted.
    pub sources: Vec<String>,
    /// The back ends compiled; each has its section in `backends`.
    pub targets: Vec<Target>,
}

impl Manifest {
    /// The capacity summary of a back end's section, for
    /// `weir compile --report` (only the eBPF section has one).
    pub fn capacity(&self, t: Target) -> Option<&BTreeMap<String, serde_json::Value>> {
        match t {
            Target::Ebpf => self.backends.ebpf.as_ref().map(|e| &e.capacity),
            Target::Iptables => None,
        }
    }

    /// The back ends the bundle has a section for, for messages
    /// (`ebpf`, `ebpf and iptables`, `no back end`).
    pub fn backend_names(&self) -> String {
        let mut v = Vec::new();
        if self.backends.ebpf.is_some() {
            v.push("ebpf");
        }
        if self.backends.iptables.is_some() {
            v.push("iptables");
        }
        if v.is_empty() {
            "no back end".into()
        } else {
            v.join(" and ")
        }
    }
}

/// `backends`: a section per compiled back end.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backends {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ebpf: Option<EbpfSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iptables: Option<IptablesSection>,
}

/// `backends.ebpf`: what the runtime loads and fills, plus a capacity
/// summary for people.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EbpfSection {
    /// `map NAME` / `program NAME` → `"N filled / M max"` and the like.
    pub capacity: BTreeMap<String, serde_json::Value>,
    #[serde(flatten)]
    pub program: EbpfManifest,
}

// Not `#[serde(flatten)]` on reading: flattened fields are buffered in a
// form that loses integer map keys (the service state's `sets` by
// family), so the section is read as JSON, `capacity` split off, and the
// rest read as the program's manifest.
impl<'de> Deserialize<'de> for EbpfSection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EbpfSection, D::Error> {
        use serde::de::Error;
        let mut v = serde_json::Map::deserialize(d)?;
        let capacity = v
            .remove("capacity")
            .ok_or_else(|| D::Error::missing_field("capacity"))?;
        let capacity = serde_json::from_value(capacity).map_err(D::Error::custom)?;
        let program = serde_json::from_value(serde_json::Value::Object(v))
            .map_err(|e| D::Error::custom(format!("backends.ebpf: {e}")))?;
        Ok(EbpfSection { capacity, program })
    }
}

/// `classes`: what the runtime needs to place an endpoint address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Classes {
    pub atoms: Vec<AtomEntry>,
    /// The atom every endpoint address satisfies (`all`).
    pub endpoint_atom: AtomId,
    /// CIDR → class: the class map (host entries and prefixes).
    pub map: Vec<(CidrText, ClassId)>,
    /// Class → the atoms it satisfies (its signature).
    pub rows: Vec<Vec<AtomId>>,
    /// Class ids a runtime may allocate (reserved; see graph/classes.rs).
    pub spare_classes: u32,
}

/// An atom: a selector or a set, for people (`text` / `include` /
/// `exclude`) and in its serde form (`value`) for the runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AtomEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    pub kind: AtomKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub value: Atom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AtomKind {
    Selector,
    Set,
    /// An endpoint's identity (for `self`): `text` is its name.
    Endpoint,
}

/// A CIDR in text (`10.0.0.0/8`, `fd00::/64`), checked on reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CidrText {
    pub addr: IpAddr,
    pub len: u8,
}

impl TryFrom<String> for CidrText {
    type Error = String;
    fn try_from(s: String) -> Result<CidrText, String> {
        let bad = || format!("`{s}` is not a CIDR (address/length)");
        let (a, l) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let len: u8 = l.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(format!("`{s}`: prefix length {len} exceeds {max}"));
        }
        Ok(CidrText { addr, len })
    }
}

impl From<CidrText> for String {
    fn from(c: CidrText) -> String {
        format!("{}/{}", c.addr, c.len)
    }
}

/// An endpoint compiled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointEntry {
    pub addrs: Vec<AddrClass>,
    /// Declared in the source (an `endpoint` statement), not taken from
    /// an inventory file: `weir endpoints` keeps it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub declared: bool,
    pub labels: BTreeMap<String, String>,
    pub name: String,
    pub ready: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddrClass {
    pub addr: IpAddr,
    pub class: ClassId,
}

/// What a provenance id stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProvenanceKind {
    Established,
    Rule,
    TierDefault,
    Unrestricted,
    DefaultDeny,
    Bypass,
    NoBackends,
    /// A non-first fragment (docs/language.md §4 "Headers").
    Fragment,
    /// A packet whose transport header could not be found.
    Unparsed,
}

impl ProvenanceKind {
    /// The manifest's and the counters' name (`tier-default`).
    pub fn name(self) -> &'static str {
        match self {
            ProvenanceKind::Established => "established",
            ProvenanceKind::Rule => "rule",
            ProvenanceKind::TierDefault => "tier-default",
            ProvenanceKind::Unrestricted => "unrestricted",
            ProvenanceKind::DefaultDeny => "default-deny",
            ProvenanceKind::Bypass => "bypass",
            ProvenanceKind::NoBackends => "no-backends",
            ProvenanceKind::Fragment => "fragment",
            ProvenanceKind::Unparsed => "unparsed",
        }
    }
}

/// A rule's action, as `provenance[].action` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionName {
    Allow,
    Deny,
    Pass,
    Log,
}

impl ActionName {
    pub fn of(a: crate::model::Action) -> ActionName {
        use crate::model::Action;
        match a {
            Action::Allow => ActionName::Allow,
            Action::Deny => ActionName::Deny,
            Action::Pass => ActionName::Pass,
            Action::Log => ActionName::Log,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ActionName::Allow => "allow",
            ActionName::Deny => "deny",
            ActionName::Pass => "pass",
            ActionName::Log => "log",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectionName {
    Egress,
    Ingress,
}

/// A source location as the CLI renders it (`{"at": "a.weir:3:5"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub at: String,
}

/// One provenance id: its kind, the kind's own keys, a description and
/// a location.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvenanceEntry {
    /// A rule's action as written (kind `rule` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionName>,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<DirectionName>,
    pub id: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub kind: ProvenanceKind,
    pub location: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BalanceName {
    Random,
    Maglev,
}

/// A service with its frontends and compiled backends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceEntry {
    pub affinity_seconds: Option<u32>,
    /// Selector-backed services: what a runtime re-evaluates on an
    /// endpoint update (`null` for explicit backends).
    pub backend_selector: Option<BackendSelector>,
    pub balance: BalanceName,
    pub frontends: Vec<FrontendEntry>,
    /// Position in the service list (= in the eBPF service state).
    pub index: usize,
    pub name: String,
    /// The provenance id counted when the service has no backend.
    pub no_backends_provenance: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSelector {
    /// 0 with `port_keys`.
    pub port: u16,
    /// A named target port: per protocol of the service's frontends, the
    /// label key each backend's port is the value of ([`PortKeys`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_keys: PortKeys,
    /// The selector in its serde form.
    pub selector: Sel,
    /// The selector as written.
    pub text: String,
}

impl BackendSelector {
    /// Are the backends resolved per frontend protocol (a named target
    /// port; [`super::BackendGroup`])?
    pub fn per_protocol(&self) -> bool {
        !self.port_keys.is_empty()
    }
}

/// A named target port's label keys, one per protocol of the service's
/// frontends (`{"tcp": "port:dns/tcp", "udp": "port:dns/udp"}`): for a
/// frontend of protocol P a backend's port is the value of its label
/// `keys[P]` (docs/language.md §4, "Services"; [`crate::named_ports`]).
/// Empty for a numeric target port. The one statement of the field, for
/// the writer ([`port_keys`]) and the readers.
pub type PortKeys = BTreeMap<String, String>;

/// The [`PortKeys`] of a model service (empty unless its target port is
/// named).
pub fn port_keys(s: &crate::model::Service) -> PortKeys {
    match &s.backends {
        crate::model::BackendSource::Select {
            port: crate::model::TargetPort::Named(name),
            ..
        } => s
            .frontends
            .iter()
            .map(|f| {
                (
                    f.proto.keyword().to_string(),
                    crate::named_ports::key(name, f.proto),
                )
            })
            .collect(),
        _ => PortKeys::new(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendEntry {
    pub backends: Vec<BackendEntry>,
    /// `addr:port/proto`.
    pub frontend: FrontendText,
    pub maglev_table_size: usize,
}

/// `10.96.0.1:80/tcp`, `[fd00::1]:53/udp`, checked on reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FrontendText {
    pub addr: SocketAddr,
    /// `tcp`, `udp`, `sctp` or a protocol number.
    pub proto: String,
}

impl TryFrom<String> for FrontendText {
    type Error = String;
    fn try_from(s: String) -> Result<FrontendText, String> {
        let bad = || format!("`{s}` is not a frontend (address:port/protocol)");
        let (a, p) = s.rsplit_once('/').ok_or_else(bad)?;
        let addr: SocketAddr = a.parse().map_err(|_| bad())?;
        let known = matches!(p, "tcp" | "udp" | "sctp") || p.parse::<u8>().is_ok();
        if !known {
            return Err(bad());
        }
        Ok(FrontendText {
            addr,
            proto: p.to_string(),
        })
    }
}

impl FrontendText {
    /// The IP protocol number of `proto`.
    pub fn proto_number(&self) -> u8 {
        super::backend_group::proto_number(&self.proto).unwrap_or(0)
    }
}

impl From<FrontendText> for String {
    fn from(f: FrontendText) -> String {
        format!("{}/{}", f.addr, f.proto)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendEntry {
    pub addr: SocketAddr,
    /// The endpoint it came from (selector-backed services).
    pub endpoint: Option<String>,
    pub weight: u16,
}
