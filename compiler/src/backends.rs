//! The one place that knows every back end: given a target, generate its
//! artifacts from the checked model and the decision graph, or say — as
//! diagnostics naming the back end and the construct — what it cannot
//! express. `weir compile` and the language server both call this.

use crate::bundle::{
    BackendArtifacts, Section, Sink, Target, IP6TABLES_RULES, IPSET_RULES, IPTABLES_RULES,
    WEIR_ASM, WEIR_O,
};
use crate::diagnostics::Diagnostic;
use crate::ebpf::state_tables::StateTables;
use crate::graph::Graph;
use crate::model::Model;

/// The eBPF back end's compile options: the per-flow tables' sizes and
/// verdict events (`weir compile --ct-entries/--lb-entries/--events…`;
/// the iptables back end has none of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EbpfOptions {
    pub tables: StateTables,
    /// `None`: no events (`--events off`).
    pub events: Option<crate::ebpf::codegen::events::EventOptions>,
}

impl Default for EbpfOptions {
    fn default() -> Self {
        EbpfOptions {
            tables: StateTables::default(),
            events: Some(Default::default()),
        }
    }
}

impl From<StateTables> for EbpfOptions {
    fn from(tables: StateTables) -> Self {
        EbpfOptions {
            tables,
            ..Default::default()
        }
    }
}

/// Everything `weir compile` may set for the back ends: the eBPF
/// options and the iptables generator's (its verdict events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    pub ebpf: EbpfOptions,
    pub iptables: crate::iptables::Options,
}

impl From<EbpfOptions> for Options {
    fn from(ebpf: EbpfOptions) -> Self {
        Options {
            ebpf,
            ..Default::default()
        }
    }
}

impl From<StateTables> for Options {
    fn from(tables: StateTables) -> Self {
        EbpfOptions::from(tables).into()
    }
}

/// Every target, in bundle order.
pub const ALL: [Target; 2] = [Target::Ebpf, Target::Iptables];

/// Generate one back end's artifacts. Refusals come back grouped: one
/// diagnostic per refused construct, with every site as a label
/// ([`group`]).
pub fn generate(
    target: Target,
    model: &Model,
    graph: &Graph,
) -> Result<BackendArtifacts, Vec<Diagnostic>> {
    generate_sized(target, model, graph, StateTables::default())
}

/// [`generate`] with the eBPF back end's per-flow tables sized by
/// `tables` (`weir compile --ct-entries/--lb-entries`; iptables keeps
/// its state in the kernel's conntrack, which the node sizes).
pub fn generate_sized(
    target: Target,
    model: &Model,
    graph: &Graph,
    opts: impl Into<Options>,
) -> Result<BackendArtifacts, Vec<Diagnostic>> {
    generate_with(target, model, graph, &opts.into())
}

/// [`generate`] with every option `weir compile` may set: the files in
/// memory ([`generate_into`] with a memory sink).
pub fn generate_with(
    target: Target,
    model: &Model,
    graph: &Graph,
    opts: &Options,
) -> Result<BackendArtifacts, Vec<Diagnostic>> {
    let sink = Sink::memory();
    let manifest = generate_into(target, model, graph, opts, &sink)
        .expect("writing to memory does not fail")?;
    Ok(BackendArtifacts {
        files: sink.into_files(),
        manifest,
    })
}

/// What [`generate_into`] returns: the outer error is writing (the
/// sink's), the inner one the back end's refusals.
pub type Generated = std::io::Result<Result<Section, Vec<Diagnostic>>>;

/// Generates one back end's files into `sink` as they are made, and
/// returns its manifest section. The outer error is writing (the sink's),
/// the inner one the back end's refusals (grouped, [`group`]); a refused
/// program writes no file.
pub fn generate_into(
    target: Target,
    model: &Model,
    graph: &Graph,
    opts: &Options,
    sink: &Sink,
) -> Generated {
    Ok(match target {
        Target::Ebpf => ebpf(model, graph, opts.ebpf, sink)?,
        Target::Iptables => iptables(model, graph, &opts.iptables, sink)?,
    }
    .map_err(group))
}

/// What each of `targets` refuses in this program (E05xx), without keeping
/// any artifact: `weir check --target`. Empty when every target accepts it.
pub fn refusals(targets: &[Target], model: &Model, graph: &Graph) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = generate_all(targets, model, graph)
        .into_iter()
        .filter_map(|(_, r)| r.err())
        .flatten()
        .collect();
    crate::diagnostics::sort(&mut out);
    out
}

/// One diagnostic per refused construct: refusals with the same code and
/// message (the same back end refusing the same construct, e.g. `balance
/// maglev` on eight services) become the first one, sorted by position,
/// with every other site as a secondary label carrying its own detail. A
/// refusal that repeats for many constructs is one problem to fix, not
/// many. In a group every label points at where its declaration starts
/// (a whole multi-line declaration per site would draw one nested bracket
/// per site).
pub fn group(mut diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    crate::diagnostics::sort(&mut diags);
    let mut out: Vec<Diagnostic> = Vec::with_capacity(diags.len());
    for d in diags {
        match out
            .iter_mut()
            .find(|g| g.code == d.code && g.message == d.message)
        {
            Some(g) => {
                g.secondary.push(d.primary);
                g.secondary.extend(d.secondary);
            }
            None => out.push(d),
        }
    }
    for g in out.iter_mut().filter(|g| !g.secondary.is_empty()) {
        for l in std::iter::once(&mut g.primary).chain(g.secondary.iter_mut()) {
            l.span.end = l.span.start;
        }
    }
    out
}

/// Generate several back ends' artifacts, in `targets` order. With more
/// than one target, all but the first run on threads of their own (each
/// back end is a pure function of the model and the graph, so the results
/// are the same as one after the other).
pub fn generate_all(
    targets: &[Target],
    model: &Model,
    graph: &Graph,
) -> Vec<(Target, Result<BackendArtifacts, Vec<Diagnostic>>)> {
    generate_all_sized(targets, model, graph, StateTables::default())
}

/// [`generate_all`] with the per-flow tables sized by `tables`
/// ([`generate_sized`]).
pub fn generate_all_sized(
    targets: &[Target],
    model: &Model,
    graph: &Graph,
    opts: impl Into<Options>,
) -> Vec<(Target, Result<BackendArtifacts, Vec<Diagnostic>>)> {
    generate_all_with(targets, model, graph, &opts.into())
}

/// [`generate_all`] with every option `weir compile` may set.
pub fn generate_all_with(
    targets: &[Target],
    model: &Model,
    graph: &Graph,
    opts: &Options,
) -> Vec<(Target, Result<BackendArtifacts, Vec<Diagnostic>>)> {
    on_threads(targets, |t| generate_with(t, model, graph, opts))
}

/// [`generate_all_with`] into one sink ([`generate_into`]): `weir
/// compile`, whose files go to the bundle's directory as each back end
/// makes them. Results in `targets` order.
///
/// On threads of their own, as [`generate_all_with`]: their memory peaks
/// add up (for 100,000 one-peer-per-pod rules the eBPF back end held
/// ~400 MiB at its peak, ~80 MiB since its stages' listings are written
/// as they are assembled, and the iptables one ~220 MiB), but one after the
/// other the same compile took ~1.4 s (~20 %) more wall time on a 2-core
/// machine for ~170 MiB less peak RSS (issue 21, BENCHMARKS.md "the
/// 100,000-rule compile"): a compile step in CI waits for the wall time,
/// and both peaks are well under the 1 GB target.
pub fn generate_all_into(
    targets: &[Target],
    model: &Model,
    graph: &Graph,
    opts: &Options,
    sink: &Sink,
) -> Vec<(Target, Generated)> {
    on_threads(targets, |t| generate_into(t, model, graph, opts, sink))
}

/// `run` for each of `targets`, in `targets` order: all but the first on
/// threads of their own (each back end is a pure function of the model
/// and the graph, so the results are the same as one after the other).
fn on_threads<R: Send>(targets: &[Target], run: impl Fn(Target) -> R + Sync) -> Vec<(Target, R)> {
    let Some((&first, rest)) = targets.split_first() else {
        return Vec::new();
    };
    let run = &run;
    std::thread::scope(|s| {
        let running: Vec<_> = rest
            .iter()
            .map(|&t| {
                let name = format!("weir-{}", t.name());
                // As much stack as the main thread may have.
                let spec = crate::threads::with_stack(&name, 64 << 20);
                (t, crate::threads::scoped(s, spec, move || run(t)))
            })
            .collect();
        let mut out = vec![(first, run(first))];
        for (t, h) in running {
            out.push((t, h.join()));
        }
        out
    })
}

/// The eBPF back end: every refusal before anything is written, then the
/// object and its listing straight into their files.
fn ebpf(model: &Model, graph: &Graph, o: EbpfOptions, sink: &Sink) -> Generated {
    use crate::ebpf::codegen;
    let opts = codegen::Options {
        tables: o.tables,
        events: o.events,
        ..codegen::Options::default()
    };
    // The stages' listings go into `listing` as they are assembled; a
    // refused program's part of one is never finished, so never kept.
    let mut listing = sink.file(WEIR_ASM)?;
    let ready = match codegen::ready(model, graph, &opts, &mut listing) {
        Ok(r) => r,
        Err(limits) => return Ok(Err(limits.iter().map(|l| l.diagnostic(model)).collect())),
    };
    let mut object = sink.file(WEIR_O)?;
    let manifest = ready.write(&mut object, &mut listing)?;
    object.finish()?;
    listing.finish()?;
    Ok(Ok(codegen::section(&manifest)))
}

/// The iptables back end: its texts are written into their files (the
/// two large ones at once) and freed as soon as they are written.
fn iptables(
    model: &Model,
    graph: &Graph,
    opts: &crate::iptables::Options,
    sink: &Sink,
) -> Generated {
    let out = match crate::iptables::generate_text(graph, model, opts) {
        Ok(out) => out,
        Err(unsupported) => return Ok(Err(unsupported.iter().map(|u| u.diagnostic()).collect())),
    };
    let crate::iptables::Output {
        iptables,
        ip6tables,
        ipset,
        manifest,
    } = out;
    // The two large texts (13 MB each for BENCHMARKS.md's headline model)
    // are hashed and written at once, on two threads: by the time this
    // back end is done the others are, and a core would wait (~20 ms of
    // `weir compile`'s critical path, issue 21).
    std::thread::scope(|s| {
        let sets = crate::threads::scoped(s, crate::threads::named("weir-ipset-write"), || {
            sink.write(IPSET_RULES, ipset.as_bytes()).map(drop)
        });
        let rules = sink
            .write(IPTABLES_RULES, iptables.as_bytes())
            .and_then(|_| sink.write(IP6TABLES_RULES, ip6tables.as_bytes()));
        rules.and(sets.join())
    })?;
    Ok(Ok(manifest.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::{Construct, Kind, Refusal};
    use weir_grammar::{FileId, Span};

    fn refusal(start: usize, construct: &str, detail: &str) -> Diagnostic {
        let mut d = Kind::Refused {
            span: Span::new(FileId(0), start, start + 40),
            refusal: Refusal::NotExpressible {
                backend: crate::contract::Target::Iptables,
                construct: Construct::MaglevBalance {
                    service: String::new(),
                    backends: 2,
                },
            },
        }
        .into_diagnostic();
        // The grouping is by code and message; the test words its own.
        d.message = format!("the iptables back end cannot express `{construct}`");
        d.primary.message = detail.into();
        d
    }

    #[test]
    fn a_repeated_refusal_is_one_diagnostic_with_every_site() {
        let grouped = group(vec![
            refusal(300, "balance maglev", "service `c`"),
            refusal(100, "balance maglev", "service `a`"),
            refusal(200, "balance maglev", "service `b`"),
            refusal(50, "something else", "here"),
        ]);
        assert_eq!(grouped.len(), 2);
        let maglev = grouped
            .iter()
            .find(|d| d.message.contains("maglev"))
            .unwrap();
        assert_eq!(maglev.primary.message, "service `a`");
        let rest: Vec<&str> = maglev
            .secondary
            .iter()
            .map(|l| l.message.as_str())
            .collect();
        assert_eq!(rest, ["service `b`", "service `c`"]);
        // Sites point at where each declaration starts.
        assert!(std::iter::once(&maglev.primary)
            .chain(&maglev.secondary)
            .all(|l| l.span.start == l.span.end));
        // A refusal alone keeps its whole span.
        let single = grouped.iter().find(|d| d.message.contains("else")).unwrap();
        assert_eq!(single.primary.span.end, 90);
    }

    /// The back ends into one sink (`generate_all_into`, on threads of
    /// their own): the results come back in the order asked for, and the
    /// files are the ones each back end makes on its own.
    #[test]
    fn back_ends_into_one_sink_answer_in_the_order_asked() {
        for seed in 0..4 {
            let model = crate::gen::model(seed);
            let g = crate::graph::build(&model);
            let opts = Options::default();
            let mut files = Vec::new();
            for order in [ALL, [Target::Iptables, Target::Ebpf]] {
                let sink = Sink::memory();
                let out = generate_all_into(&order, &model, &g, &opts, &sink);
                let got: Vec<Target> = out.iter().map(|(t, _)| *t).collect();
                assert_eq!(got, order);
                for (t, r) in out {
                    let alone = Sink::memory();
                    let one = generate_into(t, &model, &g, &opts, &alone).unwrap();
                    assert_eq!(
                        format!("{:?}", r.unwrap()),
                        format!("{one:?}"),
                        "seed {seed} {t:?}"
                    );
                }
                files.push(sink.into_files());
            }
            assert_eq!(files[0], files[1], "seed {seed}");
        }
    }
}
