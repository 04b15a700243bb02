//! The bundle: `weir compile`'s output as data (file name → bytes), the
//! contract between compiler and runtime. No IO here: the CLI writes the
//! map into the output directory.
//!
//! Files, under fixed names:
//!
//! - [`MANIFEST`] — `manifest.json`: format version, source hash, targets,
//!   the provenance table (id → what decided, with source location),
//!   the class data the runtime needs to place endpoints (atoms with their
//!   selector / set text, class → atom bits, class-map entries, endpoint →
//!   class), services (frontends, backends, balance, affinity, Maglev
//!   table size), graph statistics (the capacity report), and one section
//!   per back end (`backends.<target>`: programs, maps or tables with
//!   sizes, attach points);
//! - [`GRAPH_TXT`] — the decision graph's text dump;
//! - back-end artifacts: [`WEIR_O`] (eBPF object), [`IPTABLES_RULES`],
//!   [`IP6TABLES_RULES`], [`IPSET_RULES`] (restore formats).
//!
//! **Extension point**: a back end returns a [`BackendArtifacts`] (its
//! files and its manifest section); [`bundle`] merges them. Output is
//! byte-for-byte deterministic: every map is ordered, JSON is written
//! with sorted keys (what a `serde_json::Value` prints, whose objects are
//! `BTreeMap`s here; the typed views below declare their fields in that
//! order) and a trailing newline.

use crate::graph::cost::capacity;
use crate::graph::{dump, Atom, Graph};
use crate::model::{Balance, Model};
use crate::provenance::dir_name;
use serde::{Serialize, Serializer};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use weir_grammar::Span;

pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST: &str = "manifest.json";
pub const GRAPH_TXT: &str = "graph.txt";
pub const WEIR_O: &str = "weir.o";
/// The eBPF listing with provenance (text; what `--emit asm` prints).
pub const WEIR_ASM: &str = "weir.asm";
pub const IPTABLES_RULES: &str = "iptables.rules";
pub const IP6TABLES_RULES: &str = "ip6tables.rules";
pub const IPSET_RULES: &str = "ipset.rules";

/// Class ids the runtime may allocate for endpoints with new signatures.
pub const SPARE_CLASSES: u32 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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

/// What a back end contributes to the bundle.
#[derive(Debug, Clone, Default)]
pub struct BackendArtifacts {
    /// Files under their fixed names ([`WEIR_O`], [`IPTABLES_RULES`], …).
    pub files: BTreeMap<String, Vec<u8>>,
    /// The back end's manifest section (programs, maps/tables with sizes,
    /// attach points, its own capacity numbers).
    pub manifest: Section,
}

/// A back end's manifest section, as compact JSON text whose object keys
/// are sorted like every other object of the manifest. A back end with a
/// large section serializes its typed data straight to text
/// ([`Section::sorted`]) instead of building a `serde_json::Value` tree
/// (for 10,000 services that tree cost a tenth of `weir compile`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section(String);

impl Section {
    /// Serializes `v`, whose structs declare their fields in sorted key
    /// order and whose maps have keys that sort as JSON strings sort. In
    /// debug builds (every test) this is checked against the text of the
    /// same data as a `Value`, whose objects are sorted maps.
    pub fn sorted<T: Serialize>(v: &T) -> Section {
        let text = serde_json::to_string(v).expect("manifest sections serialize");
        #[cfg(debug_assertions)]
        {
            let value = serde_json::to_value(v).expect("manifest sections serialize");
            let via_value = serde_json::to_string(&value).expect("values serialize");
            assert!(
                text == via_value,
                "internal compiler error: a manifest section's keys are not in sorted order"
            );
        }
        Section(text)
    }

    /// The section as a JSON value.
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.0).expect("sections are JSON")
    }

    /// The JSON text.
    pub fn text(&self) -> &str {
        &self.0
    }
}

impl Default for Section {
    fn default() -> Section {
        Section("null".into())
    }
}

impl From<Value> for Section {
    fn from(v: Value) -> Section {
        Section(v.to_string())
    }
}

/// Everything [`bundle`] reads.
pub struct BundleInput<'a> {
    pub model: &'a Model,
    pub graph: &'a Graph,
    /// `(file name, text)` of every source file; hashed in name order.
    pub sources: &'a [(String, String)],
    pub targets: &'a [Target],
    /// Renders a span as a location (e.g. `{"file": "a.weir", "line": 3,
    /// "column": 5}`); only the CLI knows file names.
    pub locate: &'a dyn Fn(Span) -> Value,
    /// Back-end outputs, by target.
    pub backends: BTreeMap<Target, BackendArtifacts>,
}

/// SHA-256 over the sources in name order (name, NUL, length, text).
pub fn source_hash(sources: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = sources.iter().collect();
    sorted.sort();
    let mut h = Sha256::new();
    for (name, text) in sorted {
        h.update(name.as_bytes());
        h.update([0u8]);
        h.update((text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// An atom for humans (`text` / `include` / `exclude`) and, under
/// `value`, in the serde form of [`Atom`] that a runtime deserializes to
/// evaluate the atom on a new endpoint ([`crate::churn`]).
fn atom_json(a: &Atom) -> Value {
    let mut v = match a {
        Atom::Sel(s) => json!({ "kind": "selector", "text": s.to_string() }),
        Atom::Set(s) => json!({
            "kind": "set",
            "include": s.include.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            "exclude": s.exclude.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        }),
    };
    v["value"] = serde_json::to_value(a).expect("atoms serialize");
    v
}

/// The manifest as a JSON value.
pub fn manifest(input: &BundleInput) -> Value {
    let m = Manifest {
        backends: Backends(&input.backends),
        head: Head::new(input),
    };
    serde_json::to_value(m).expect("the manifest serializes")
}

/// The part of a bundle that does not depend on the back ends: the
/// manifest without `backends`, already serialized, and the graph dump.
/// `weir compile` prepares it while the back ends run on another thread.
pub struct Prepared {
    /// The manifest's other keys as a JSON object (`{"classes":…}`).
    head: Vec<u8>,
    graph_txt: Vec<u8>,
}

/// Everything of the bundle but the back ends' files and sections
/// (`input.backends` is not read).
pub fn prepare(input: &BundleInput) -> Prepared {
    let mut head = Vec::with_capacity(1 << 20);
    serde_json::to_writer(&mut head, &Head::new(input)).expect("the manifest serializes");
    Prepared {
        head,
        graph_txt: dump::text(input.model, input.graph).into_bytes(),
    }
}

/// The bundle's files from a prepared part and the back ends' outputs.
pub fn assemble(
    prepared: Prepared,
    backends: &BTreeMap<Target, BackendArtifacts>,
) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    files.insert(
        MANIFEST.to_string(),
        manifest_bytes(&prepared.head, backends),
    );
    files.insert(GRAPH_TXT.to_string(), prepared.graph_txt);
    for a in backends.values() {
        for (name, bytes) in &a.files {
            files.insert(name.clone(), bytes.clone());
        }
    }
    files
}

/// The manifest's text: compact JSON with a trailing newline. For a
/// 10,000-service program pretty-printing made the file 2.4x larger (72
/// MB) and its writing a third of `weir compile`; `weir compile --emit
/// manifest` prints it indented for people. `backends` sorts before every
/// other key, so the object is `{"backends":…,` and then the head's keys.
fn manifest_bytes(head: &[u8], backends: &BTreeMap<Target, BackendArtifacts>) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len() + (1 << 20));
    out.extend_from_slice(b"{\"backends\":{");
    // Sorted by name, as a JSON object's keys are.
    let by_name: BTreeMap<&str, &Section> = backends
        .iter()
        .map(|(t, a)| (t.name(), &a.manifest))
        .collect();
    for (i, (name, section)) in by_name.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, name).expect("names serialize");
        out.push(b':');
        out.extend_from_slice(section.text().as_bytes());
    }
    out.push(b'}');
    debug_assert!(head.starts_with(b"{\"") && head.ends_with(b"}"));
    out.push(b',');
    out.extend_from_slice(&head[1..]);
    out.push(b'\n');
    out
}

// The manifest is serialized from borrowed, typed views of the model and
// graph, straight into the output: building it as `serde_json::Value`
// trees (and `json!`, which deep-copies every nested value) was a third
// of a whole `weir compile` of 10,000 services. The text is what a
// `Value` would print: **every struct below declares its fields in
// sorted key order** (a `Value` object is a sorted map), optional keys
// that a kind lacks are skipped, and `bundle::tests` compares both.

/// The whole manifest: `backends` sorts first.
#[derive(Serialize)]
struct Manifest<'a> {
    backends: Backends<'a>,
    #[serde(flatten)]
    head: Head<'a>,
}

/// Every key of the manifest but `backends`, in sorted order.
#[derive(Serialize)]
struct Head<'a> {
    classes: Classes<'a>,
    endpoints: Vec<EndpointEntry<'a>>,
    format_version: u32,
    graph: Value,
    provenance: Vec<ProvenanceEntry<'a>>,
    services: Vec<ServiceEntry<'a>>,
    source_hash: String,
    sources: Vec<&'a String>,
    targets: Vec<&'static str>,
}

/// The back ends' sections by name, borrowed (for [`manifest`]; the
/// manifest's text splices the sections' text, [`manifest_bytes`]).
struct Backends<'a>(&'a BTreeMap<Target, BackendArtifacts>);

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
    atoms: Vec<Value>,
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
    description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    direction: Option<&'static str>,
    id: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    kind: &'static str,
    location: Value,
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
    balance: &'static str,
    frontends: Vec<FrontendJson<'a>>,
    index: usize,
    name: &'a str,
    no_backends_provenance: u32,
}

#[derive(Serialize)]
struct BackendSelector<'a> {
    port: u16,
    /// The selector in its serde form, as a `Value` so that its keys are
    /// sorted like every other object's.
    selector: Value,
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

impl<'a> Head<'a> {
    fn new(input: &'a BundleInput) -> Head<'a> {
        let (model, g) = (input.model, input.graph);
        let cl = &g.classes;
        let mut sources: Vec<&String> = input.sources.iter().map(|s| &s.0).collect();
        sources.sort();
        Head {
            classes: Classes {
                atoms: cl.atoms.iter().map(atom_json).collect(),
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
            graph: serde_json::to_value(capacity(g)).unwrap_or(Value::Null),
            provenance: provenance_entries(input),
            services: service_entries(model, g),
            source_hash: source_hash(input.sources),
            sources,
            targets: input.targets.iter().map(|t| t.name()).collect(),
        }
    }
}

fn provenance_entries<'a>(input: &'a BundleInput) -> Vec<ProvenanceEntry<'a>> {
    use crate::provenance::Provenance as P;
    let (model, g) = (input.model, input.graph);
    g.provenance
        .entries
        .iter()
        .enumerate()
        .map(|(id, p)| {
            let mut e = ProvenanceEntry {
                description: p.describe(model),
                direction: None,
                id,
                index: None,
                kind: "",
                location: p.span(model).map_or(Value::Null, input.locate),
                policy: None,
                service: None,
                steer: None,
                tier: None,
            };
            e.kind = match *p {
                P::Established => "established",
                P::Rule { policy, dir, index } => {
                    e.policy = Some(&model.policies[policy].name);
                    e.direction = Some(dir_name(dir));
                    e.index = Some(index);
                    "rule"
                }
                P::TierDefault { tier, dir } => {
                    e.tier = Some(&model.tiers[tier].name);
                    e.direction = Some(dir_name(dir));
                    "tier-default"
                }
                P::Unrestricted { dir } => {
                    e.direction = Some(dir_name(dir));
                    "unrestricted"
                }
                P::DefaultDeny { dir } => {
                    e.direction = Some(dir_name(dir));
                    "default-deny"
                }
                P::Bypass { steer, index } => {
                    e.steer = Some(&model.steers[steer].name);
                    e.index = Some(index);
                    "bypass"
                }
                P::NoBackends { service } => {
                    e.service = Some(&model.services[service].name);
                    "no-backends"
                }
            };
            e
        })
        .collect()
}

fn service_entries<'a>(model: &'a Model, g: &'a Graph) -> Vec<ServiceEntry<'a>> {
    let table = &g.services;
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
                    port: *port,
                    selector: serde_json::to_value(selector).expect("selectors serialize"),
                    text: Text(selector),
                }),
                crate::model::BackendSource::Explicit(_) => None,
            }),
            balance: match s.balance {
                Balance::Random => "random",
                Balance::Maglev => "maglev",
            },
            frontends: frontends
                .into_iter()
                .map(|f| {
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
                })
                .collect(),
            index: i,
            name: &s.name,
            no_backends_provenance: g
                .provenance
                .id(&crate::provenance::Provenance::NoBackends { service: i }),
        })
        .collect()
}

fn socket(a: std::net::IpAddr, port: u16) -> String {
    match a {
        std::net::IpAddr::V4(_) => format!("{a}:{port}"),
        std::net::IpAddr::V6(_) => format!("[{a}]:{port}"),
    }
}

/// The bundle's files (see the module docs).
pub fn bundle(input: &BundleInput) -> BTreeMap<String, Vec<u8>> {
    assemble(prepare(input), &input.backends)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_complete() {
        for seed in 0..20 {
            let model = crate::gen::model(seed);
            let g = crate::graph::build(&model);
            let sources = vec![
                ("b.weir".to_string(), "x".to_string()),
                ("a.weir".to_string(), "y".to_string()),
            ];
            let locate = |s: Span| json!({ "file": s.file.0, "start": s.start, "end": s.end });
            let input = BundleInput {
                model: &model,
                graph: &g,
                sources: &sources,
                targets: &[Target::Ebpf, Target::Iptables],
                locate: &locate,
                backends: BTreeMap::from([
                    (
                        Target::Ebpf,
                        BackendArtifacts {
                            files: BTreeMap::new(),
                            manifest: json!({ "maps": [1, 2], "z": null }).into(),
                        },
                    ),
                    (
                        Target::Iptables,
                        BackendArtifacts {
                            files: BTreeMap::new(),
                            manifest: json!({ "sets": {} }).into(),
                        },
                    ),
                ]),
            };
            let a = bundle(&input);
            let mut whole = serde_json::to_vec(&manifest(&input)).unwrap();
            whole.push(b'\n');
            assert_eq!(a[MANIFEST], whole);
            let g2 = crate::graph::build(&model);
            let b = bundle(&BundleInput {
                graph: &g2,
                ..input
            });
            assert_eq!(a, b);
            let m: Value = serde_json::from_slice(&a[MANIFEST]).unwrap();
            assert_eq!(m["format_version"], json!(FORMAT_VERSION));
            assert_eq!(
                m["provenance"].as_array().unwrap().len(),
                g.provenance.len()
            );
            assert!(a.contains_key(GRAPH_TXT));
        }
        // Hash is order independent and content sensitive.
        let s1 = vec![
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ];
        let s2 = vec![
            ("b".to_string(), "2".to_string()),
            ("a".to_string(), "1".to_string()),
        ];
        let s3 = vec![
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "3".to_string()),
        ];
        assert_eq!(source_hash(&s1), source_hash(&s2));
        assert_ne!(source_hash(&s1), source_hash(&s3));
    }
}
