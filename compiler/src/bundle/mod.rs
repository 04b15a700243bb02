//! The bundle: `weir compile`'s output (file name → bytes), the contract
//! between compiler and runtime. Its files are written into a [`Sink`]
//! as they are made: into memory, or into a staging directory that the
//! CLI commits as a whole (`sink`).
//!
//! Files, under fixed names:
//!
//! - [`MANIFEST`] — `manifest.json` (its types and the readers' checks
//!   are [`crate::contract`]; docs/bundle.md describes it): format
//!   version, the SHA-256 of every other file (`artifacts`), source hash,
//!   targets,
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
//! `BTreeMap`s here; the typed views of [`write`]
//! declare their fields in that order) and a trailing newline.

mod early;
pub mod sink;
mod write;

pub use early::{prepare_early, write_graph_early, Early};
pub use sink::{FileOut, Sink, Written};

use crate::graph::{dump, Graph};
use crate::model::Model;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{self, Write};
use weir_grammar::Span;
use write::Head;

pub use crate::contract::{
    Location, Target, FORMAT_VERSION, GRAPH_TXT, IP6TABLES_RULES, IPSET_RULES, IPTABLES_RULES,
    MANIFEST, WEIR_ASM, WEIR_O,
};

/// Class ids the runtime may allocate for endpoints with new signatures.
pub const SPARE_CLASSES: u32 = 1024;

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
    /// Renders a span as a location (`{"at": "a.weir:3:5"}`); only the
    /// CLI knows file names.
    pub locate: &'a dyn Fn(Span) -> Option<Location>,
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

/// The manifest as a JSON value (the same data as the manifest's text).
pub fn manifest(input: &BundleInput) -> Value {
    let sink = Sink::memory();
    write_files(input, &sink).expect("writing to memory does not fail");
    let m = write::Manifest {
        artifacts: &sink.artifacts(),
        backends: write::Backends(&input.backends),
        head: Head::new(input),
    };
    serde_json::to_value(m).expect("the manifest serializes")
}

/// The graph dump and every back end's files of `input`, into `sink`.
fn write_files(input: &BundleInput, sink: &Sink) -> io::Result<()> {
    write_graph(input, sink)?;
    for a in input.backends.values() {
        for (name, bytes) in &a.files {
            sink.write(name, bytes)?;
        }
    }
    Ok(())
}

/// The manifest without `artifacts` and `backends`, already serialized
/// into the sink ([`Sink::part`]): `weir compile` prepares it while the
/// back ends run, and [`write_manifest`] appends it.
pub struct Prepared(());

/// The part of the sink that holds the manifest's head.
const HEAD_PART: &str = "manifest-head.part";

/// Everything of the manifest but the back ends' files and sections
/// (`input.backends` is not read), written into `sink` as it is made
/// (not held: ~60 MB for 100,000 one-peer-per-pod rules).
pub fn prepare(input: &BundleInput, sink: &Sink) -> io::Result<Prepared> {
    let mut f = sink.part(HEAD_PART)?;
    serde_json::to_writer(&mut f, &Head::new(input))?;
    f.finish()?;
    Ok(Prepared(()))
}

/// Writes [`GRAPH_TXT`], the decision graph's dump, into `sink` as it is
/// made.
pub fn write_graph(input: &BundleInput, sink: &Sink) -> io::Result<()> {
    let mut f = sink.file(GRAPH_TXT)?;
    let mut text = sink::FmtIo::new(&mut f);
    dump::write_text(input.model, input.graph, &mut text);
    text.into_result()?;
    f.finish().map(drop)
}

/// Writes the manifest into `sink`, after every other file: compact JSON
/// with a trailing newline. For a 10,000-service program
/// pretty-printing made the file 2.4x larger (72 MB) and its writing a
/// third of `weir compile`; `weir compile --emit manifest` prints it
/// indented for people. `artifacts` (the hashes of the files `sink`
/// holds) and `backends` sort before every other key, so the object is
/// `{"artifacts":…,"backends":…,` and then the head's keys.
pub fn write_manifest(
    prepared: Prepared,
    sections: BTreeMap<Target, Section>,
    sink: &Sink,
) -> io::Result<()> {
    let Prepared(()) = prepared;
    // Sorted by name, as a JSON object's keys are.
    let mut by_name: Vec<(&'static str, Section)> =
        sections.into_iter().map(|(t, s)| (t.name(), s)).collect();
    by_name.sort_by_key(|(name, _)| *name);
    let artifacts = sink.artifacts();
    let mut f = sink.file(MANIFEST)?;
    f.write_all(b"{\"artifacts\":")?;
    serde_json::to_writer(&mut f, &artifacts)?;
    f.write_all(b",\"backends\":{")?;
    for (i, (name, s)) in by_name.iter().enumerate() {
        if i > 0 {
            f.write_all(b",")?;
        }
        serde_json::to_writer(&mut f, name)?;
        f.write_all(b":")?;
        f.write_all(s.0.as_bytes())?;
    }
    f.write_all(b"},")?;
    // The head without its `{` (it ends with the object's `}`).
    sink.append_part(HEAD_PART, 1, &mut f)?;
    f.write_all(b"\n")?;
    f.finish().map(drop)
}

/// The bundle's files (see the module docs), in memory.
pub fn bundle(input: &BundleInput) -> BTreeMap<String, Vec<u8>> {
    let sink = Sink::memory();
    let sections = input
        .backends
        .iter()
        .map(|(t, a)| (*t, a.manifest.clone()))
        .collect();
    write_files(input, &sink)
        .and_then(|()| prepare(input, &sink))
        .and_then(|prepared| write_manifest(prepared, sections, &sink))
        .expect("writing to memory does not fail");
    sink.into_files()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deterministic_and_complete() {
        for seed in 0..20 {
            let model = crate::gen::model(seed);
            let g = crate::graph::build(&model);
            let sources = vec![
                ("b.weir".to_string(), "x".to_string()),
                ("a.weir".to_string(), "y".to_string()),
            ];
            let locate = |s: Span| {
                Some(Location {
                    at: format!("{}:{}-{}", s.file.0, s.start, s.end),
                })
            };
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
