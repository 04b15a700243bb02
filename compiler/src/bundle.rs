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
//! with sorted keys (`serde_json::Value` objects are `BTreeMap`s here)
//! and a trailing newline.

use crate::graph::cost::capacity;
use crate::graph::{dump, Atom, Graph};
use crate::model::{Balance, Model};
use crate::provenance::dir_name;
use serde_json::{json, Map, Value};
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
    pub manifest: Value,
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
    let mut m = manifest_without_backends(input);
    let backends: Map<String, Value> = input
        .backends
        .iter()
        .map(|(t, a)| (t.name().to_string(), a.manifest.clone()))
        .collect();
    m.insert("backends".into(), Value::Object(backends));
    Value::Object(m)
}

/// The manifest's text ([`manifest`] pretty-printed, with a trailing
/// newline), without copying the back ends' sections into one value.
fn manifest_bytes(input: &BundleInput) -> Vec<u8> {
    use serde::ser::{SerializeMap, Serializer};
    /// The back ends' sections by name, borrowed.
    struct Backends<'a>(&'a BTreeMap<Target, BackendArtifacts>);
    impl serde::Serialize for Backends<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            // Sorted by name, as a JSON object's keys are.
            let by_name: BTreeMap<&str, &Value> = self
                .0
                .iter()
                .map(|(t, a)| (t.name(), &a.manifest))
                .collect();
            let mut m = s.serialize_map(Some(by_name.len()))?;
            for (k, v) in by_name {
                m.serialize_entry(k, v)?;
            }
            m.end()
        }
    }
    /// The top-level object with `backends` spliced in, keys sorted.
    struct Top<'a>(&'a Map<String, Value>, Backends<'a>);
    impl serde::Serialize for Top<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(Some(self.0.len() + 1))?;
            let mut backends = Some(&self.1);
            for (k, v) in self.0 {
                if let Some(b) = backends.filter(|_| k.as_str() > "backends") {
                    m.serialize_entry("backends", b)?;
                    backends = None;
                }
                m.serialize_entry(k, v)?;
            }
            if let Some(b) = backends {
                m.serialize_entry("backends", b)?;
            }
            m.end()
        }
    }
    let top = manifest_without_backends(input);
    let mut out = Vec::with_capacity(1 << 20);
    // Compact: for a 10,000-service program pretty-printing made the file
    // 2.4x larger (72 MB) and its writing a third of `weir compile`;
    // `weir compile --emit manifest` prints it indented for people.
    serde_json::to_writer(&mut out, &Top(&top, Backends(&input.backends)))
        .expect("JSON values serialize");
    out.push(b'\n');
    out
}

/// Every key of the manifest but `backends`.
fn manifest_without_backends(input: &BundleInput) -> Map<String, Value> {
    let (model, g) = (input.model, input.graph);
    let locate = input.locate;
    let provenance: Vec<Value> = g
        .provenance
        .entries
        .iter()
        .enumerate()
        .map(|(id, p)| {
            use crate::provenance::Provenance as P;
            let mut o = Map::new();
            o.insert("id".into(), json!(id));
            let (kind, extra) = match *p {
                P::Established => ("established", json!({})),
                P::Rule { policy, dir, index } => (
                    "rule",
                    json!({ "policy": model.policies[policy].name, "direction": dir_name(dir), "index": index }),
                ),
                P::TierDefault { tier, dir } => (
                    "tier-default",
                    json!({ "tier": model.tiers[tier].name, "direction": dir_name(dir) }),
                ),
                P::Unrestricted { dir } => ("unrestricted", json!({ "direction": dir_name(dir) })),
                P::DefaultDeny { dir } => ("default-deny", json!({ "direction": dir_name(dir) })),
                P::Bypass { steer, index } => (
                    "bypass",
                    json!({ "steer": model.steers[steer].name, "index": index }),
                ),
                P::NoBackends { service } => (
                    "no-backends",
                    json!({ "service": model.services[service].name }),
                ),
            };
            o.insert("kind".into(), json!(kind));
            if let Value::Object(m) = extra {
                o.extend(m);
            }
            o.insert("description".into(), json!(p.describe(model)));
            o.insert(
                "location".into(),
                p.span(model).map_or(Value::Null, locate),
            );
            Value::Object(o)
        })
        .collect();
    let cl = &g.classes;
    let classes = json!({
        "atoms": cl.atoms.iter().map(atom_json).collect::<Vec<_>>(),
        "endpoint_atom": cl.endpoint_atom,
        "rows": cl.classes.iter().map(|b| b.iter().collect::<Vec<_>>()).collect::<Vec<_>>(),
        "spare_classes": SPARE_CLASSES,
        "map": cl.entries.iter().map(|e| json!([e.cidr.to_string(), e.class])).collect::<Vec<_>>(),
    });
    let endpoints: Vec<Value> = model
        .endpoints
        .iter()
        .zip(&cl.endpoint_classes)
        .map(|(e, per)| {
            json!({
                "name": e.name,
                "labels": e.labels,
                "ready": e.ready,
                "addrs": per.iter().map(|(a, c)| json!({ "addr": a.to_string(), "class": c })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let services: Vec<Value> = g
        .services
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let frontends: Vec<Value> = g
                .services
                .frontends
                .iter()
                .filter(|f| f.service == i)
                .map(|f| {
                    let set = &g.services.backend_sets[f.backends];
                    json!({
                        "frontend": format!("{}/{}", socket(f.frontend.addr, f.frontend.port), dump::pname(f.frontend.proto)),
                        "backends": set.backends.iter().map(|b| json!({
                            "addr": socket(b.addr, b.port),
                            "weight": b.weight,
                            "endpoint": b.endpoint,
                        })).collect::<Vec<_>>(),
                        "maglev_table_size": set.maglev_slots(),
                    })
                })
                .collect();
            // Selector-backed services: what a runtime re-evaluates on an
            // endpoint update (`null` for explicit backends).
            let selector = model.services.get(i).and_then(|m| match &m.backends {
                crate::model::BackendSource::Select { selector, port } => Some(json!({
                    "selector": serde_json::to_value(selector).expect("selectors serialize"),
                    "text": selector.to_string(),
                    "port": port,
                })),
                crate::model::BackendSource::Explicit(_) => None,
            });
            json!({
                "index": i,
                "name": s.name,
                "backend_selector": selector,
                "balance": match s.balance { Balance::Random => "random", Balance::Maglev => "maglev" },
                "affinity_seconds": s.affinity,
                "no_backends_provenance": g.provenance.id(&crate::provenance::Provenance::NoBackends { service: i }),
                "frontends": frontends,
            })
        })
        .collect();
    let stats = serde_json::to_value(capacity(g)).unwrap_or(Value::Null);
    let mut names: Vec<&String> = input.sources.iter().map(|s| &s.0).collect();
    names.sort();
    let Value::Object(m) = json!({
        "format_version": FORMAT_VERSION,
        "source_hash": source_hash(input.sources),
        "sources": names,
        "targets": input.targets.iter().map(|t| t.name()).collect::<Vec<_>>(),
        "provenance": provenance,
        "classes": classes,
        "endpoints": endpoints,
        "services": services,
        "graph": stats,
    }) else {
        unreachable!("an object")
    };
    m
}

fn socket(a: std::net::IpAddr, port: u16) -> String {
    match a {
        std::net::IpAddr::V4(_) => format!("{a}:{port}"),
        std::net::IpAddr::V6(_) => format!("[{a}]:{port}"),
    }
}

/// The bundle's files (see the module docs).
pub fn bundle(input: &BundleInput) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    files.insert(MANIFEST.to_string(), manifest_bytes(input));
    files.insert(
        GRAPH_TXT.to_string(),
        dump::text(input.model, input.graph).into_bytes(),
    );
    for a in input.backends.values() {
        for (name, bytes) in &a.files {
            files.insert(name.clone(), bytes.clone());
        }
    }
    files
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
                            manifest: json!({ "maps": [1, 2], "z": null }),
                        },
                    ),
                    (
                        Target::Iptables,
                        BackendArtifacts {
                            files: BTreeMap::new(),
                            manifest: json!({ "sets": {} }),
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
