//! The writer's form of the manifest: borrowed, typed views of the model
//! and graph, serialized straight into the output. Building the manifest
//! as `serde_json::Value` trees (and `json!`, which deep-copies every
//! nested value) was a third of a whole `weir compile` of 10,000
//! services. The text is what a `Value` would print: **every struct
//! below declares its fields in sorted key order** (a `Value` object is a
//! sorted map), optional keys that a kind lacks are skipped, and
//! `bundle::tests` compares both. The reader's form is
//! [`crate::contract::manifest`]; `contract::tests` checks that this writes what
//! that reads.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};
use serde_json::Value;

use super::{source_hash, BackendArtifacts, BundleInput, SPARE_CLASSES};
use crate::contract::manifest::{ActionName, BalanceName, DirectionName, Location, ProvenanceKind};
use crate::contract::FORMAT_VERSION;
use crate::graph::cost::capacity;
use crate::graph::{dump, Atom, Graph};
use crate::model::Direction;
use crate::model::{Balance, Model};

/// The whole manifest in its writer form: `artifacts` and `backends`
/// sort first (for [`crate::bundle::manifest`], the `Value` form that
/// tests compare with the spliced text).
#[derive(Serialize)]
pub struct Manifest<'a> {
    pub artifacts: &'a BTreeMap<String, String>,
    pub backends: Backends<'a>,
    #[serde(flatten)]
    pub head: Head<'a>,
}

/// Every key of the manifest but `artifacts` and `backends`, in sorted
/// order: the keys before `graph`, `graph` (the optimized graph's
/// statistics), the keys after it. The keys around `graph` need only the
/// model and the parts of the graph the lowering makes first
/// ([`crate::graph::Parts`]): `weir compile` serializes them while the
/// graph is still being built ([`super::Early`]).
#[derive(Serialize)]
pub struct Head<'a> {
    #[serde(flatten)]
    before: HeadBefore<'a>,
    graph: Value,
    #[serde(flatten)]
    after: HeadAfter<'a>,
}

/// The head's keys that sort before `graph`.
#[derive(Serialize)]
pub struct HeadBefore<'a> {
    classes: Classes<'a>,
    endpoints: Vec<EndpointEntry<'a>>,
    format_version: u32,
}

/// The head's keys that sort after `graph`.
#[derive(Serialize)]
pub struct HeadAfter<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    local_proxies: Vec<crate::contract::local_proxy::LocalProxy>,
    provenance: Vec<ProvenanceEntry<'a>>,
    services: Vec<ServiceEntry<'a>>,
    source_hash: String,
    sources: Vec<&'a String>,
    targets: Vec<&'static str>,
}

/// What the head is made of: the model, the graph's parts the lowering
/// makes first, the sources and targets.
pub struct HeadInput<'a> {
    pub model: &'a Model,
    pub parts: crate::graph::PartsRef<'a>,
    pub sources: &'a [(String, String)],
    pub targets: &'a [crate::contract::Target],
    pub locate: &'a dyn Fn(weir_grammar::Span) -> Option<Location>,
}

/// The back ends' sections by name, borrowed (the manifest's text
/// splices the sections' text, `bundle::manifest_bytes`).
pub struct Backends<'a>(pub &'a BTreeMap<crate::contract::Target, BackendArtifacts>);

impl Serialize for Backends<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Sorted by name, as a JSON object's keys are.
        let by_name: BTreeMap<&str, Value> = self
            .0
            .iter()
            .map(|(t, a)| (t.name(), a.manifest.value()))
            .collect();
        s.collect_map(by_name)
    }
}

/// A value written as the JSON string of its `Display` form, without an
/// intermediate `String`.
struct Text<T>(T);

impl<T: std::fmt::Display> Serialize for Text<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

#[derive(Serialize)]
struct Classes<'a> {
    atoms: Vec<AtomJson<'a>>,
    endpoint_atom: crate::graph::classes::AtomId,
    map: Vec<(Text<&'a crate::model::Cidr>, crate::graph::classes::ClassId)>,
    rows: Vec<Vec<usize>>,
    spare_classes: u32,
}

#[derive(Serialize)]
struct EndpointEntry<'a> {
    addrs: Vec<AddrClass<'a>>,
    /// Declared in the source (an `endpoint` statement), not taken from
    /// an inventory file: `weir endpoints` keeps it (written only when
    /// true).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    declared: bool,
    labels: &'a BTreeMap<String, String>,
    name: &'a str,
    ready: bool,
}

#[derive(Serialize)]
struct AddrClass<'a> {
    addr: Text<&'a std::net::IpAddr>,
    class: crate::graph::classes::ClassId,
}

/// One provenance id: `id`, `kind`, the kind's own keys, a description
/// and a location.
#[derive(Serialize)]
struct ProvenanceEntry<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<ActionName>,
    description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    direction: Option<DirectionName>,
    id: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    kind: ProvenanceKind,
    location: Option<Location>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    steer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tier: Option<&'a str>,
}

#[derive(Serialize)]
struct ServiceEntry<'a> {
    affinity_seconds: Option<u32>,
    /// Selector-backed services: what a runtime re-evaluates on an
    /// endpoint update (`null` for explicit backends).
    backend_selector: Option<BackendSelector<'a>>,
    balance: BalanceName,
    frontends: Vec<FrontendJson<'a>>,
    index: usize,
    name: &'a str,
    no_backends_provenance: u32,
}

#[derive(Serialize)]
struct BackendSelector<'a> {
    port: u16,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    port_keys: crate::contract::PortKeys,
    /// The selector in its serde form, serialized directly: every variant
    /// of `Sel` is a tuple or unit variant, whose serde form is a one-key
    /// object (or a string) — already sorted, as a `Value` would print it
    /// (the test `selector_serializes_as_its_value` checks this).
    selector: &'a crate::model::Sel,
    text: Text<&'a crate::model::Sel>,
}

#[derive(Serialize)]
struct FrontendJson<'a> {
    backends: Vec<BackendJson<'a>>,
    frontend: String,
    maglev_table_size: usize,
}

#[derive(Serialize)]
struct BackendJson<'a> {
    addr: String,
    endpoint: &'a Option<String>,
    weight: u16,
}

/// An atom for humans (`text` / `include` / `exclude`) and, under
/// `value`, in the serde form of [`Atom`] that a runtime deserializes to
/// evaluate the atom on a new endpoint ([`crate::churn`]).
fn atom_json(a: &Atom) -> Value {
    let mut v = match a {
        Atom::Sel(s) => serde_json::json!({ "kind": "selector", "text": s.to_string() }),
        Atom::Set(s) => serde_json::json!({
            "kind": "set",
            "include": s.include.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            "exclude": s.exclude.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        }),
        Atom::Endpoint(n) => serde_json::json!({ "kind": "endpoint", "text": n }),
    };
    v["value"] = serde_json::to_value(a).expect("atoms serialize");
    v
}

/// An atom as [`atom_json`] writes it, made when it is serialized: the
/// JSON trees of all atoms at once were ~200 MB for the 200,000 atoms of
/// 100,000 one-peer-per-pod rules (issue 21); one at a time they are a
/// few hundred bytes.
struct AtomJson<'a>(&'a Atom);

impl Serialize for AtomJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        atom_json(self.0).serialize(s)
    }
}

fn dir_name(d: Direction) -> DirectionName {
    match d {
        Direction::Egress => DirectionName::Egress,
        Direction::Ingress => DirectionName::Ingress,
    }
}

impl<'a> Head<'a> {
    pub fn new(input: &'a BundleInput) -> Head<'a> {
        let head = HeadInput {
            model: input.model,
            parts: input.graph.parts(),
            sources: input.sources,
            targets: input.targets,
            locate: input.locate,
        };
        Head {
            before: HeadBefore::new(&head),
            graph: graph_value(input.graph),
            after: HeadAfter::new(&head),
        }
    }
}

/// The head's `graph` value.
pub fn graph_value(g: &Graph) -> Value {
    serde_json::to_value(capacity(g)).unwrap_or(Value::Null)
}

impl<'a> HeadBefore<'a> {
    pub fn new(input: &HeadInput<'a>) -> HeadBefore<'a> {
        let model = input.model;
        let cl = input.parts.classes;
        HeadBefore {
            classes: Classes {
                atoms: cl.atoms.iter().map(AtomJson).collect(),
                endpoint_atom: cl.endpoint_atom,
                map: cl
                    .entries
                    .iter()
                    .map(|e| (Text(&e.cidr), e.class))
                    .collect(),
                rows: cl.classes.iter().map(|b| b.iter().collect()).collect(),
                spare_classes: SPARE_CLASSES,
            },
            endpoints: model
                .endpoints
                .iter()
                .zip(&cl.endpoint_classes)
                .map(|(e, per)| EndpointEntry {
                    addrs: per
                        .iter()
                        .map(|(addr, class)| AddrClass {
                            addr: Text(addr),
                            class: *class,
                        })
                        .collect(),
                    declared: e.span.is_some(),
                    labels: &e.labels,
                    name: &e.name,
                    ready: e.ready,
                })
                .collect(),
            format_version: FORMAT_VERSION,
        }
    }
}

impl<'a> HeadAfter<'a> {
    pub fn new(input: &HeadInput<'a>) -> HeadAfter<'a> {
        let model = input.model;
        let mut sources: Vec<&String> = input.sources.iter().map(|s| &s.0).collect();
        sources.sort();
        HeadAfter {
            local_proxies: crate::contract::local_proxy::of_model(model, input.locate),
            provenance: provenance_entries(input),
            services: service_entries(model, input.parts),
            source_hash: source_hash(input.sources),
            sources,
            targets: input.targets.iter().map(|t| t.name()).collect(),
        }
    }
}

fn provenance_entries<'a>(input: &HeadInput<'a>) -> Vec<ProvenanceEntry<'a>> {
    use crate::provenance::Provenance as P;
    let model = input.model;
    input
        .parts
        .provenance
        .entries
        .iter()
        .enumerate()
        .map(|(id, p)| {
            let mut e = ProvenanceEntry {
                action: None,
                description: p.describe(model),
                direction: None,
                id,
                index: None,
                kind: ProvenanceKind::Established,
                location: p.span(model).and_then(input.locate),
                policy: None,
                service: None,
                steer: None,
                tier: None,
            };
            e.kind = match *p {
                P::Established => ProvenanceKind::Established,
                P::Rule { policy, dir, index } => {
                    let pol = &model.policies[policy];
                    e.policy = Some(&pol.name);
                    e.direction = Some(dir_name(dir));
                    e.index = Some(index);
                    e.tier = Some(&model.tiers[pol.tier].name);
                    e.action = pol
                        .rules(dir)
                        .and_then(|r| r.get(index))
                        .map(|r| ActionName::of(r.action));
                    ProvenanceKind::Rule
                }
                P::TierDefault { tier, dir } => {
                    e.tier = Some(&model.tiers[tier].name);
                    e.direction = Some(dir_name(dir));
                    ProvenanceKind::TierDefault
                }
                P::Unrestricted { dir } => {
                    e.direction = Some(dir_name(dir));
                    ProvenanceKind::Unrestricted
                }
                P::DefaultDeny { dir } => {
                    e.direction = Some(dir_name(dir));
                    ProvenanceKind::DefaultDeny
                }
                P::Bypass { steer, index } => {
                    e.steer = Some(&model.steers[steer].name);
                    e.index = Some(index);
                    ProvenanceKind::Bypass
                }
                P::NoBackends { service } => {
                    e.service = Some(&model.services[service].name);
                    ProvenanceKind::NoBackends
                }
                P::Fragment => ProvenanceKind::Fragment,
                P::Unparsed => ProvenanceKind::Unparsed,
            };
            e
        })
        .collect()
}

fn service_entries<'a>(model: &'a Model, g: crate::graph::PartsRef<'a>) -> Vec<ServiceEntry<'a>> {
    let table = g.services;
    // Frontends are sorted by frontend, not by service: group them once.
    let mut by_service: Vec<Vec<&crate::graph::ir::FrontendEntry>> =
        vec![Vec::new(); table.services.len()];
    for f in &table.frontends {
        if let Some(v) = by_service.get_mut(f.service) {
            v.push(f);
        }
    }
    table
        .services
        .iter()
        .zip(by_service)
        .enumerate()
        .map(|(i, (s, frontends))| ServiceEntry {
            affinity_seconds: s.affinity,
            backend_selector: model.services.get(i).and_then(|m| match &m.backends {
                crate::model::BackendSource::Select { selector, port } => Some(BackendSelector {
                    port: match port {
                        crate::model::TargetPort::Number(n) => *n,
                        crate::model::TargetPort::Named(_) => 0,
                    },
                    port_keys: crate::contract::port_keys(m),
                    selector,
                    text: Text(selector),
                }),
                crate::model::BackendSource::Explicit(_) => None,
            }),
            balance: match s.balance {
                Balance::Random => BalanceName::Random,
                Balance::Maglev => BalanceName::Maglev,
            },
            frontends: frontends.into_iter().map(|f| frontend(table, f)).collect(),
            index: i,
            name: &s.name,
            no_backends_provenance: g
                .provenance
                .id(&crate::provenance::Provenance::NoBackends { service: i }),
        })
        .collect()
}

fn frontend<'a>(
    table: &'a crate::graph::ir::ServiceTable,
    f: &crate::graph::ir::FrontendEntry,
) -> FrontendJson<'a> {
    let set = &table.backend_sets[f.backends];
    FrontendJson {
        backends: set
            .backends
            .iter()
            .map(|b| BackendJson {
                addr: socket(b.addr, b.port),
                endpoint: &b.endpoint,
                weight: b.weight,
            })
            .collect(),
        frontend: format!(
            "{}/{}",
            socket(f.frontend.addr, f.frontend.port),
            dump::pname(f.frontend.proto)
        ),
        maglev_table_size: set.maglev_slots(),
    }
}

fn socket(a: std::net::IpAddr, port: u16) -> String {
    match a {
        std::net::IpAddr::V4(_) => format!("{a}:{port}"),
        std::net::IpAddr::V6(_) => format!("[{a}]:{port}"),
    }
}
