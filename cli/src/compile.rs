//! `weir compile FILE... -o DIR [--target ebpf|iptables|all]`: check the
//! program, build the decision graph, run the back ends and write the
//! bundle (manifest.json, graph.txt, weir.o, iptables.rules,
//! ip6tables.rules, ipset.rules). `--emit` prints one artifact instead of
//! (or besides) writing; `--report` prints the capacity report.
//!
//! The files named are combined into one program.

use crate::program::{self, Color};
use crate::trace::locator;
use clap::ValueEnum;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use weir_compiler::backends;
use weir_compiler::bundle::{self, BundleInput, Sink, Target, Written};
use weir_compiler::check::SyntaxTrees;
use weir_compiler::diagnostics::Diagnostic;
use weir_compiler::driver::Analyzed;
use weir_compiler::ebpf::state_tables::{CtTable, StateTables};
use weir_compiler::graph::dump;
use weir_compiler::threads;
use weir_grammar::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetArg {
    Ebpf,
    Iptables,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Emit {
    /// The decision graph's text dump.
    Graph,
    /// The decision graph in Graphviz DOT.
    Dot,
    /// The manifest.
    Manifest,
    /// The eBPF listing with provenance.
    Asm,
    /// iptables-restore text.
    Iptables,
    /// ipset-restore text.
    Ipset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

impl TargetArg {
    pub fn name(self) -> &'static str {
        match self {
            TargetArg::Ebpf => "ebpf",
            TargetArg::Iptables => "iptables",
            TargetArg::All => "all",
        }
    }
}

impl Emit {
    fn name(self) -> &'static str {
        match self {
            Emit::Graph => "graph",
            Emit::Dot => "dot",
            Emit::Manifest => "manifest",
            Emit::Asm => "asm",
            Emit::Iptables => "iptables",
            Emit::Ipset => "ipset",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Policy files, combined into one program.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Output directory for the bundle.
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Back ends to compile for. `all` means every back end: a program
    /// that one of them refuses is an error naming it (compile with the
    /// other target instead).
    #[arg(long, value_enum, default_value_t = TargetArg::All)]
    pub target: TargetArg,
    /// Print one artifact to standard output.
    #[arg(long, value_enum)]
    pub emit: Option<Emit>,
    /// Print the capacity report (graph nodes, depth, tables; back ends'
    /// maps, programs and rules).
    #[arg(long)]
    pub report: bool,
    /// Format of the report, or of the list of files written.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// A JSON endpoint inventory.
    #[arg(long, value_name = "FILE")]
    pub endpoints: Option<PathBuf>,
    /// Entries of each eBPF conntrack table, one per family (`weir_ct4`
    /// for IPv4 flows, `weir_ct` for IPv6; see --ct-table for what
    /// happens when one is full). A translated (service) flow takes
    /// two entries, any other flow one. Default 524288.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub ct_entries: Option<u32>,
    /// Entries of each eBPF service state table (`weir_lb_aff`,
    /// `weir_lb_sk`; LRU; translations are in `weir_ct`). Default 262144.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub lb_entries: Option<u32>,
    /// Kind of the eBPF per-flow table `weir_ct`:
    /// `hash` (the default: preallocated; a full table denies new flows,
    /// counted as `table-full` in `weir stats`; an in-kernel collector,
    /// a BPF timer armed by `weir apply`, removes idle entries) or
    /// `lru` (a full table evicts the least recently used flows).
    /// See docs/runtime.md.
    #[arg(long, value_enum)]
    pub ct_table: Option<CtTableArg>,
    /// Verdict events (`weir monitor`, docs/monitor.md): every denied
    /// new flow, allows by rules with `log`, `log` rules, audit "would"
    /// verdicts; through the `weir_events` ring buffer (eBPF) or NFLOG
    /// (iptables, docs/events-iptables.md); `off` compiles without them
    /// (iptables `log` rules then write kernel log lines).
    #[arg(long, value_enum, default_value_t = EventsArg::On)]
    pub events: EventsArg,
    /// Bytes of the events ring buffer `weir_events` (a power of two,
    /// 4096 to 268435456). Default 262144.
    #[arg(long, value_name = "BYTES", value_parser = ring_bytes)]
    pub events_ring_bytes: Option<u32>,
    /// Events each CPU may send per second (token bucket rate); further
    /// ones are counted as dropped. Default 10000.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000_000))]
    pub events_rate: Option<u32>,
    /// Events each CPU may send at once after a quiet period (bucket
    /// size). Default 1000.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub events_burst: Option<u32>,
    /// The NFLOG group the iptables chains report events to. Default 100.
    #[arg(long, value_name = "N")]
    pub event_group: Option<u16>,
    /// The packet-mark bits the iptables back end uses for `self`: one
    /// contiguous run of at least 2 bits, hex; its lowest bit marks
    /// "source and destination are one endpoint", the bits above it hold
    /// endpoint ids (n bits: 2^(n-1) - 1 endpoints). Default 0xffff0000
    /// (32,767 endpoints), which leaves kube-proxy's bits 0xc000 alone.
    /// Choose bits no other user of the mark sets. See docs/kubernetes.md.
    #[arg(long, value_name = "MASK", value_parser = self_mark)]
    pub iptables_self_mark: Option<weir_compiler::iptables::self_set::SelfMark>,
    /// Fail on warnings.
    #[arg(long)]
    pub deny_warnings: bool,
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
}

/// `--events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventsArg {
    On,
    Off,
}

/// `--iptables-self-mark` (also `weir agent`'s).
pub fn self_mark(s: &str) -> Result<weir_compiler::iptables::self_set::SelfMark, String> {
    weir_compiler::iptables::self_set::SelfMark::parse(s)
}

fn ring_bytes(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("{e}"))?;
    let o = weir_compiler::ebpf::codegen::events::EventOptions {
        ring_bytes: n,
        ..Default::default()
    };
    o.check().map(|()| n)
}

pub fn targets(t: TargetArg) -> Vec<Target> {
    match t {
        TargetArg::Ebpf => vec![Target::Ebpf],
        TargetArg::Iptables => vec![Target::Iptables],
        TargetArg::All => backends::ALL.to_vec(),
    }
}

/// A flag that does not apply to what was asked is a usage error, not a
/// silent no-op.
fn validate(args: &Args) -> Result<(), i32> {
    if args.output.is_none() && args.emit.is_none() && !args.report {
        return Err(program::usage(
            "nothing to do: give -o DIR, --emit or --report",
        ));
    }
    if args.target == TargetArg::Iptables
        && (args.events_ring_bytes.is_some()
            || args.events_rate.is_some()
            || args.events_burst.is_some())
    {
        return Err(program::usage(
            "--events-ring-bytes, --events-rate and --events-burst shape the ebpf back end's events, not --target iptables",
        ));
    }
    if args.target == TargetArg::Ebpf && args.event_group.is_some() {
        return Err(program::usage(
            "--event-group is the iptables back end's NFLOG group, not --target ebpf's (its events go to the weir_events ring buffer)",
        ));
    }
    if args.events == EventsArg::Off
        && (args.events_ring_bytes.is_some()
            || args.events_rate.is_some()
            || args.events_burst.is_some())
    {
        return Err(program::usage(
            "--events-ring-bytes, --events-rate and --events-burst size events; they make no sense with --events off",
        ));
    }
    if args.target == TargetArg::Iptables
        && (args.ct_entries.is_some() || args.lb_entries.is_some() || args.ct_table.is_some())
    {
        return Err(program::usage(
            "--ct-entries, --lb-entries and --ct-table shape the ebpf back end's tables, not --target iptables (iptables keeps flows in the kernel's conntrack)",
        ));
    }
    if args.target == TargetArg::Ebpf && args.iptables_self_mark.is_some() {
        return Err(program::usage(
            "--iptables-self-mark is the iptables back end's packet-mark bits for `self`, not --target ebpf's (the eBPF back end decides `self` without the mark)",
        ));
    }
    if args.events == EventsArg::Off && args.event_group.is_some() {
        return Err(program::usage(
            "--event-group names where events go, and --events off compiles without them: give one",
        ));
    }
    let Some(emit) = args.emit else {
        return Ok(());
    };
    let needs = match emit {
        Emit::Iptables | Emit::Ipset => Some(TargetArg::Iptables),
        Emit::Asm => Some(TargetArg::Ebpf),
        Emit::Graph | Emit::Dot | Emit::Manifest => None,
    };
    if let Some(needs) = needs.filter(|&n| args.target != n && args.target != TargetArg::All) {
        return Err(program::usage(format_args!(
            "--emit {} is an artifact of the {} back end, not of --target {}",
            emit.name(),
            needs.name(),
            args.target.name()
        )));
    }
    if args.report {
        return Err(program::usage(
            "--emit and --report both print to standard output: give one",
        ));
    }
    if args.format == Format::Json {
        return Err(program::usage(
            "--format applies to --report and to the list of files written with -o; --emit prints the artifact as it is",
        ));
    }
    Ok(())
}

pub fn run(args: Args) -> i32 {
    if let Err(code) = validate(&args) {
        return code;
    }
    let targets = targets(args.target);
    // The graph dumps need no back end; everything else does.
    let needs_backends =
        args.output.is_some() || args.report || !matches!(args.emit, Some(Emit::Graph | Emit::Dot));
    // Nothing below reads the syntax trees (the model and graph are
    // built): freed as soon as the lints are done, while the graph is
    // still being built and optimised (issue 21). Meanwhile, this thread
    // serializes most of the manifest's head (`bundle::Early`).
    let analyzed = program::analyze_meanwhile(
        &args.files,
        args.endpoints.as_deref(),
        SyntaxTrees::Free,
        |e| needs_backends.then(|| early_head(&e, &targets)).flatten(),
    );
    let (mut analyzed, early) = match analyzed {
        Ok((a, early)) => (a, early.flatten()),
        Err(code) => return code,
    };
    // What the lowering recorded for the graph's findings (made in
    // `driver::analyze`) is read by nothing below: freed before the back
    // ends' peak (for 100,000 one-peer-per-pod rules, a list of policy
    // chains per pod).
    if let Some(compiled) = &mut analyzed.compiled {
        compiled.info = Default::default();
    }
    let checked = &analyzed.checked;
    let print_diagnostics =
        || program::print_human(&checked.diagnostics, &checked.sources, args.color);
    let Some(compiled) = &analyzed.compiled else {
        print_diagnostics();
        return 1;
    };
    let warnings = checked.warning_count();
    if args.deny_warnings && warnings > 0 {
        print_diagnostics();
        return 1;
    }
    let model = &checked.model;
    let graph = &compiled.graph;

    // With -o the files go to the bundle's directory as they are made
    // (staged, committed when all are written); otherwise they are kept
    // in memory for --emit and --report.
    let writing = |dir: &std::path::Path, e: std::io::Error| {
        program::usage(format_args!("writing {}: {e}", dir.display()))
    };
    let mut sink = match &args.output {
        Some(dir) => match Sink::dir(dir) {
            Ok(s) => s,
            Err(e) => {
                print_diagnostics();
                return writing(dir, e);
            }
        },
        None => Sink::memory(),
    };
    // With back ends, the diagnostics (thousands of warnings for
    // BENCHMARKS.md's headline model, ~30 ms to render) are printed
    // while they run (issue 21), before any refusal of theirs.
    if !needs_backends {
        print_diagnostics();
    } else {
        match bundle_into(
            &analyzed,
            &targets,
            &backend_options(&args),
            args.color,
            &sink,
            early,
            print_diagnostics,
        ) {
            Ok(()) => {}
            Err(Failed::Refused(code)) => return code,
            Err(Failed::Io(e)) => {
                let dir = args.output.as_deref().unwrap_or(std::path::Path::new("."));
                return writing(dir, e);
            }
        }
    }
    // A file of the bundle (read back from the staging directory with -o).
    let file = |name: &str| -> Result<Vec<u8>, i32> {
        sink.read(name).map(Option::unwrap_or_default).map_err(|e| {
            let dir = args.output.as_deref().unwrap_or(std::path::Path::new("."));
            writing(dir, e)
        })
    };

    if let Some(emit) = args.emit {
        let text = match emit {
            Emit::Graph => dump::text(model, graph),
            Emit::Dot => dump::dot(model, graph),
            // The file is compact JSON; people get it indented.
            Emit::Manifest => {
                let bytes = match file(bundle::MANIFEST) {
                    Ok(b) => b,
                    Err(code) => return code,
                };
                serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .and_then(|v| serde_json::to_string_pretty(&v).ok())
                    .map(|s| s + "\n")
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned())
            }
            Emit::Iptables | Emit::Ipset | Emit::Asm => {
                let name = match emit {
                    Emit::Iptables => bundle::IPTABLES_RULES,
                    Emit::Ipset => bundle::IPSET_RULES,
                    _ => bundle::WEIR_ASM,
                };
                match file(name) {
                    Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                    Err(code) => return code,
                }
            }
        };
        crate::out!("{text}");
    }
    if args.report {
        let manifest = match file(bundle::MANIFEST) {
            Ok(b) => b,
            Err(code) => return code,
        };
        let files = BTreeMap::from([(bundle::MANIFEST.to_string(), manifest)]);
        let report = crate::report::build(&analyzed, &targets, &files);
        match args.format {
            Format::Human => crate::out!("{}", report.human()),
            Format::Json => crate::out::json_pretty(&report),
        }
    }
    if let Some(dir) = &args.output {
        if let Err(e) = sink.commit() {
            return writing(dir, e);
        }
        if args.emit.is_none() && !args.report {
            print_written(dir, &sink.written(), args.format);
        }
    }
    // `main` exits right after: freeing the program, graph and bundle
    // (hundreds of MB for 10,000 services) would only delay the exit.
    std::mem::forget(sink);
    std::mem::forget(analyzed);
    0
}

/// The files written: `   123 bytes  DIR/NAME` lines, or with `--format
/// json` `{"files": [{"path": ..., "bytes": N}]}`.
fn print_written(dir: &std::path::Path, files: &BTreeMap<String, Written>, format: Format) {
    match format {
        Format::Human => {
            for (name, w) in files {
                crate::outln!("{:>10} bytes  {}", w.len, dir.join(name).display());
            }
        }
        Format::Json => {
            let list: Vec<Value> = files
                .iter()
                .map(|(name, w)| {
                    json!({ "path": dir.join(name).display().to_string(), "bytes": w.len })
                })
                .collect();
            crate::out::json_pretty(&json!({ "files": list }));
        }
    }
}

/// The eBPF options the flags ask for (defaults for the rest).
fn ebpf_options(args: &Args) -> backends::EbpfOptions {
    use weir_compiler::ebpf::codegen::events::EventOptions;
    let d = EventOptions::default();
    backends::EbpfOptions {
        tables: state_tables(args),
        events: (args.events == EventsArg::On).then(|| EventOptions {
            burst: args.events_burst.unwrap_or(d.burst),
            rate: args.events_rate.unwrap_or(d.rate),
            ring_bytes: args.events_ring_bytes.unwrap_or(d.ring_bytes),
        }),
    }
}

/// The per-flow tables' sizes the flags ask for (defaults for the rest).
fn state_tables(args: &Args) -> StateTables {
    let d = StateTables::default();
    StateTables {
        conntrack: args.ct_entries.unwrap_or(d.conntrack),
        translation: args.lb_entries.unwrap_or(d.translation),
        kind: args.ct_table.map_or(d.kind, |k| match k {
            CtTableArg::Lru => CtTable::Lru,
            CtTableArg::Hash => CtTable::Hash,
        }),
    }
}

/// `--ct-table`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CtTableArg {
    Lru,
    Hash,
}

/// The back ends' options the flags ask for.
fn backend_options(args: &Args) -> backends::Options {
    let events = match args.events {
        EventsArg::Off => None,
        EventsArg::On => Some(weir_compiler::iptables::Events {
            group: args
                .event_group
                .unwrap_or(weir_compiler::iptables::DEFAULT_GROUP),
            ..Default::default()
        }),
    };
    backends::Options {
        ebpf: ebpf_options(args),
        iptables: weir_compiler::iptables::Options {
            events,
            self_mark: args.iptables_self_mark.unwrap_or_default(),
            ..Default::default()
        },
    }
}

/// The manifest's head but its `graph` key, for `targets`, made while the
/// graph is built ([`bundle::Early`]).
fn early_head(e: &weir_compiler::driver::Early<'_>, targets: &[Target]) -> Option<bundle::Early> {
    let sources = source_texts(e.sources);
    let loc = locator(e.sources);
    let locate = |span: Span| loc(span).map(|l| bundle::Location { at: l.at });
    bundle::Early::new(e.model, e.parts, &sources, targets, &locate)
}

/// `(file name, text)` of every source, as the manifest's head hashes
/// them.
fn source_texts(sources: &weir_compiler::source::SourceMap) -> Vec<(String, String)> {
    sources
        .iter()
        .map(|(_, f)| (f.name(), f.text.clone()))
        .collect()
}

/// Why [`bundle_into`] made no bundle: a back end refused the program
/// (printed; the exit code), or writing failed.
pub enum Failed {
    Refused(i32),
    Io(std::io::Error),
}

/// Run the back ends for `targets` and write the bundle into `sink`.
/// Every target must accept the program (`--target all` means all: a
/// bundle never silently lacks a back end); refusals are printed, after
/// `first` has run on this thread while the back ends started. `early`:
/// the manifest's head made while the graph was built, if it was.
pub fn bundle_into(
    analyzed: &Analyzed,
    targets: &[Target],
    opts: &backends::Options,
    color: Color,
    sink: &Sink,
    early: Option<bundle::Early>,
    first: impl FnOnce(),
) -> Result<(), Failed> {
    let refused = build_into(analyzed, targets, opts, sink, early, first).map_err(|e| match e {
        BuildError::Unavailable(code) => Failed::Refused(code),
        BuildError::Io(e) => Failed::Io(e),
    })?;
    let failures: Vec<Diagnostic> = refused.into_iter().flat_map(|(_, d)| d).collect();
    if !failures.is_empty() {
        program::print_human(&failures, &analyzed.checked.sources, color);
        return Err(Failed::Refused(1));
    }
    Ok(())
}

/// What the back ends made of a program: the bundle of the targets that
/// accept it, and each refusing target's diagnostics.
pub struct Built {
    pub files: BTreeMap<String, Vec<u8>>,
    pub refused: Vec<(Target, Vec<Diagnostic>)>,
}

/// Run the back ends for `targets`; assemble the bundle of those that
/// accept the program, in memory (`weir test --snapshot` records the
/// others' refusals). A back end missing from this build is an error.
pub fn build(
    analyzed: &Analyzed,
    targets: &[Target],
    opts: &backends::Options,
) -> Result<Built, i32> {
    let sink = Sink::memory();
    match build_into(analyzed, targets, opts, &sink, None, || {}) {
        Ok(refused) => Ok(Built {
            files: sink.into_files(),
            refused,
        }),
        Err(BuildError::Unavailable(code)) => Err(code),
        Err(BuildError::Io(e)) => unreachable!("writing to memory does not fail: {e}"),
    }
}

/// The bundle's input for `targets`, before the back ends' outputs.
fn bundle_input<'a>(
    model: &'a weir_compiler::model::Model,
    graph: &'a weir_compiler::graph::Graph,
    sources: &'a [(String, String)],
    targets: &'a [Target],
    locate: &'a dyn Fn(Span) -> Option<bundle::Location>,
) -> BundleInput<'a> {
    BundleInput {
        model,
        graph,
        sources,
        targets,
        locate,
        backends: BTreeMap::new(),
    }
}

/// Why [`build_into`] wrote no manifest.
enum BuildError {
    /// A back end is not in this build (printed; the exit code).
    Unavailable(i32),
    Io(std::io::Error),
}

/// [`build`] into `sink`: the bundle of the targets that accept the
/// program, and the refusals of the others. `first` runs on this thread
/// as soon as the back ends have started. The manifest's head is made
/// from `early` when that was made for this graph and these targets.
fn build_into(
    analyzed: &Analyzed,
    targets: &[Target],
    opts: &backends::Options,
    sink: &Sink,
    early: Option<bundle::Early>,
    first: impl FnOnce(),
) -> Result<Vec<(Target, Vec<Diagnostic>)>, BuildError> {
    let checked = &analyzed.checked;
    let Some(compiled) = &analyzed.compiled else {
        return Err(BuildError::Unavailable(1));
    };
    let model = &checked.model;
    let graph = &compiled.graph;
    // The manifest's head hashes the sources' texts: a copy made for it
    // and freed once it is written, while the back ends run (19
    // MB for 100,000 one-peer-per-pod rules; made again in the rare case
    // of a refusing target).
    let source_texts = || source_texts(&checked.sources);
    let loc = locator(&checked.sources);
    let locate = |span: Span| loc(span).map(|l| bundle::Location { at: l.at });
    // The back ends run on their own thread while this one prepares the
    // rest of the bundle (manifest head, graph dump): on two cores that
    // halves the time after the graph is built.
    let (results, prepared) = std::thread::scope(|s| {
        // As much stack as the main thread may have.
        let spec = threads::with_stack("weir-backends", 64 << 20);
        let running = threads::scoped(s, spec, || {
            backends::generate_all_into(targets, model, graph, opts, sink)
        });
        first();
        let sources = source_texts();
        let input = bundle_input(model, graph, &sources, targets, &locate);
        let prepared = bundle::write_graph_early(early.as_ref(), &input, sink)
            .and_then(|()| bundle::prepare_early(early, &input, sink));
        drop(input);
        drop(sources);
        let results = running.join();
        (results, prepared)
    });
    let prepared = prepared.map_err(BuildError::Io)?;
    let mut sections = BTreeMap::new();
    let mut refused = Vec::new();
    let mut unavailable = Vec::new();
    for (t, result) in results {
        match result.map_err(BuildError::Io)? {
            Ok(section) => {
                sections.insert(t, section);
            }
            Err(d) if d.is_empty() => unavailable.push(t.name()),
            Err(d) => refused.push((t, d)),
        }
    }
    if !unavailable.is_empty() {
        crate::errln!(
            "error: back end not available in this build: {}",
            unavailable.join(", ")
        );
        return Err(BuildError::Unavailable(1));
    }
    let prepared = if refused.is_empty() {
        prepared
    } else {
        // The manifest lists the targets it holds: only those accepted.
        let accepted: Vec<Target> = sections.keys().copied().collect();
        let sources = source_texts();
        let input = bundle_input(model, graph, &sources, &accepted, &locate);
        bundle::prepare(&input, sink).map_err(BuildError::Io)?
    };
    bundle::write_manifest(prepared, sections, sink).map_err(BuildError::Io)?;
    Ok(refused)
}
