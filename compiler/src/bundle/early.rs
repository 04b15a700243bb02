//! The manifest's head and the graph dump's first part made early.
//!
//! Every key of the manifest's head but `graph` needs only the
//! model, the sources and the graph's model-only parts
//! ([`crate::graph::parts`]), so `weir compile` serializes them on the
//! core that would otherwise wait while the graph is walked and
//! optimized (`driver::analyze_meanwhile`; for BENCHMARKS.md's headline
//! model ~18 MB of JSON, which were on the critical path beside the back
//! ends, issue 21). [`prepare_early`] then writes the head as
//! [`super::prepare`] would: the keys before `graph`, `graph`, the keys
//! after it (the head's keys sort that way, `write::Head`). Early text
//! that is not of this graph or of these targets (a target refused the
//! program, and the manifest lists only the others) is not used: the
//! head is made again from the input. The same holds for the graph
//! dump's text up to its nodes (~3 MB of its 4 MB for that model:
//! atoms, classes, class map, services).

use super::sink::FmtIo;
use super::write::{graph_value, HeadAfter, HeadBefore, HeadInput};
use super::{
    prepare, write_graph, BundleInput, Location, Prepared, Sink, Target, GRAPH_TXT, HEAD_PART,
};
use crate::graph::{dump, Parts};
use crate::model::Model;
use std::io::{self, Write};
use weir_grammar::Span;

/// The head's keys around `graph`, serialized: `{"classes":…,
/// "format_version":1}` and `{"local_proxies":…,"targets":[…]}`.
pub struct Early {
    parts: Parts,
    targets: Vec<Target>,
    before: Vec<u8>,
    after: Vec<u8>,
    /// [`GRAPH_TXT`]'s text up to the nodes (`dump::write_parts_text`).
    graph_parts: String,
}

impl Early {
    /// The head's keys but `graph`, for `targets` (`None` if they do not
    /// serialize as two non-empty JSON objects, which they always do:
    /// the head is then made the usual way).
    pub fn new(
        model: &Model,
        parts: &Parts,
        sources: &[(String, String)],
        targets: &[Target],
        locate: &dyn Fn(Span) -> Option<Location>,
    ) -> Option<Early> {
        let input = HeadInput {
            model,
            parts: parts.as_ref(),
            sources,
            targets,
            locate,
        };
        let before = serde_json::to_vec(&HeadBefore::new(&input)).ok()?;
        let after = serde_json::to_vec(&HeadAfter::new(&input)).ok()?;
        let object = |t: &[u8]| t.len() > 2 && t.starts_with(b"{") && t.ends_with(b"}");
        let mut graph_parts = String::new();
        dump::write_parts_text(parts.as_ref(), &mut graph_parts);
        (object(&before) && object(&after)).then(|| Early {
            parts: parts.clone(),
            targets: targets.to_vec(),
            before,
            after,
            graph_parts,
        })
    }

    /// Whether this was made from `input`'s graph (its very parts) and
    /// for `input`'s targets.
    fn of(&self, input: &BundleInput) -> bool {
        self.parts.of(input.graph) && self.targets == input.targets
    }
}

/// [`write_graph`], with the text up to the nodes from `early` when it
/// was made from `input`'s graph (the same bytes).
pub fn write_graph_early(
    early: Option<&Early>,
    input: &BundleInput,
    sink: &Sink,
) -> io::Result<()> {
    let Some(e) = early.filter(|e| e.parts.of(input.graph)) else {
        return write_graph(input, sink);
    };
    let mut f = sink.file(GRAPH_TXT)?;
    f.write_all(e.graph_parts.as_bytes())?;
    let mut text = FmtIo::new(&mut f);
    dump::write_nodes_text(input.model, input.graph, &mut text);
    text.into_result()?;
    f.finish().map(drop)
}

/// [`prepare`], from `early` when it was made from `input`'s graph and
/// targets (the same bytes).
pub fn prepare_early(
    early: Option<Early>,
    input: &BundleInput,
    sink: &Sink,
) -> io::Result<Prepared> {
    let Some(e) = early.filter(|e| e.of(input)) else {
        return prepare(input, sink);
    };
    let mut f = sink.part(HEAD_PART)?;
    // `{"classes":…,"format_version":1` `,"graph":…,` `"local_proxies":…}`
    f.write_all(&e.before[..e.before.len() - 1])?;
    f.write_all(b",\"graph\":")?;
    serde_json::to_writer(&mut f, &graph_value(input.graph))?;
    f.write_all(b",")?;
    f.write_all(&e.after[1..])?;
    f.finish()?;
    Ok(Prepared(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Graph, Parts};
    use std::collections::BTreeMap;

    const ALL: [Target; 2] = [Target::Ebpf, Target::Iptables];

    /// A generated model, its compiled graph and the parts announced.
    fn built(seed: u64) -> (Model, Graph, Parts) {
        let model = crate::gen::model(seed);
        let (tx, rx) = std::sync::mpsc::channel();
        let c = crate::graph::compile_announcing(&model, move |p| tx.send(p).unwrap());
        let parts = rx.recv().expect("the parts are announced");
        (model, c.graph, parts)
    }

    fn sources() -> Vec<(String, String)> {
        vec![
            ("b.weir".to_string(), "x".to_string()),
            ("a.weir".to_string(), "y".to_string()),
        ]
    }

    fn locate(s: Span) -> Option<Location> {
        Some(Location {
            at: format!("{}:{}-{}", s.file.0, s.start, s.end),
        })
    }

    /// What a compile of `model` to both targets hands the bundle writer
    /// (no back ends).
    fn input<'a>(
        model: &'a Model,
        g: &'a Graph,
        sources: &'a [(String, String)],
    ) -> BundleInput<'a> {
        BundleInput {
            model,
            graph: g,
            sources,
            targets: &ALL,
            locate: &locate,
            backends: BTreeMap::new(),
        }
    }

    /// The graph dump and the manifest (no back ends) of `input`, made
    /// from `early` or without.
    fn files(input: &BundleInput, early: Option<Early>) -> BTreeMap<String, Vec<u8>> {
        let sink = Sink::memory();
        write_graph_early(early.as_ref(), input, &sink).unwrap();
        let prepared = prepare_early(early, input, &sink).unwrap();
        super::super::write_manifest(prepared, BTreeMap::new(), &sink).unwrap();
        sink.into_files()
    }

    /// Made early, the graph dump and the manifest are the bytes made
    /// from the finished graph.
    #[test]
    fn early_text_is_the_same_bytes() {
        for seed in 0..12 {
            let (model, g, parts) = built(seed);
            assert!(
                parts.of(&g),
                "seed {seed}: the graph holds the parts announced"
            );
            let sources = sources();
            let input = input(&model, &g, &sources);
            let early = Early::new(&model, &parts, &sources, &ALL, &locate);
            assert!(early.is_some(), "seed {seed}");
            assert_eq!(files(&input, early), files(&input, None), "seed {seed}");
        }
    }

    /// Early text of another graph (equal parts of another build, or
    /// another model's), or of other targets, is not used.
    #[test]
    fn early_text_of_another_graph_or_targets_is_not_used() {
        for seed in 0..6 {
            let (model, g, _) = built(seed);
            let (other_model, _, other_parts) = built(seed + 100);
            let (_, _, same_model_other_build) = built(seed);
            let sources = sources();
            let input = input(&model, &g, &sources);
            let expected = files(&input, None);
            let of_other = Early::new(&other_model, &other_parts, &sources, &ALL, &locate);
            assert_eq!(
                files(&input, of_other),
                expected,
                "seed {seed}: another model"
            );
            let rebuilt = Early::new(&model, &same_model_other_build, &sources, &ALL, &locate);
            assert_eq!(
                files(&input, rebuilt),
                expected,
                "seed {seed}: another build"
            );
            let own = Parts {
                classes: g.classes.clone(),
                provenance: g.provenance.clone(),
                services: g.services.clone(),
            };
            let one_target = Early::new(&model, &own, &sources, &[Target::Ebpf], &locate);
            assert_eq!(
                files(&input, one_target),
                expected,
                "seed {seed}: other targets"
            );
        }
    }
}
