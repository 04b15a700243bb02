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
use std::io::Write;
use std::path::PathBuf;
use weir_compiler::backends;
use weir_compiler::bundle::{self, BundleInput, Target};
use weir_compiler::diagnostics::Diagnostic;
use weir_compiler::driver::Analyzed;
use weir_compiler::graph::{cost::capacity, dump};
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

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Policy files, combined into one program.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Output directory for the bundle.
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = TargetArg::All)]
    pub target: TargetArg,
    /// Print one artifact to standard output.
    #[arg(long, value_enum)]
    pub emit: Option<Emit>,
    /// Print the capacity report (graph nodes, depth, tables; back ends'
    /// maps, programs and rules).
    #[arg(long)]
    pub report: bool,
    /// Format of the report.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// A JSON endpoint inventory.
    #[arg(long, value_name = "FILE")]
    pub endpoints: Option<PathBuf>,
    /// Fail on warnings.
    #[arg(long)]
    pub deny_warnings: bool,
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
}

pub fn targets(t: TargetArg) -> Vec<Target> {
    match t {
        TargetArg::Ebpf => vec![Target::Ebpf],
        TargetArg::Iptables => vec![Target::Iptables],
        TargetArg::All => backends::ALL.to_vec(),
    }
}

/// Every file name a bundle may contain (stale ones are removed).
const ARTIFACTS: [&str; 7] = [
    bundle::MANIFEST,
    bundle::WEIR_ASM,
    bundle::GRAPH_TXT,
    bundle::WEIR_O,
    bundle::IPTABLES_RULES,
    bundle::IP6TABLES_RULES,
    bundle::IPSET_RULES,
];

pub fn run(args: Args) -> i32 {
    if args.output.is_none() && args.emit.is_none() && !args.report {
        eprintln!("error: nothing to do: give -o DIR, --emit or --report");
        return 2;
    }
    let analyzed = match program::analyze(&args.files, args.endpoints.as_deref()) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let checked = &analyzed.checked;
    program::print_human(&checked.diagnostics, &checked.sources, args.color);
    let Some(compiled) = &analyzed.compiled else {
        return 1;
    };
    let warnings = checked.warning_count();
    if args.deny_warnings && warnings > 0 {
        return 1;
    }
    let model = &checked.model;
    let graph = &compiled.graph;

    let targets = targets(args.target);
    // The graph dumps need no back end; everything else does.
    let needs_backends =
        args.output.is_some() || args.report || !matches!(args.emit, Some(Emit::Graph | Emit::Dot));
    let files = if needs_backends {
        match bundle_files(&analyzed, &targets, args.color) {
            Ok(f) => f,
            Err(code) => return code,
        }
    } else {
        BTreeMap::new()
    };

    let mut out = std::io::stdout().lock();
    if let Some(emit) = args.emit {
        let text = match emit {
            Emit::Graph => dump::text(model, graph),
            Emit::Dot => dump::dot(model, graph),
            // The file is compact JSON; people get it indented.
            Emit::Manifest => serde_json::from_slice::<Value>(&files[bundle::MANIFEST])
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .map(|s| s + "\n")
                .unwrap_or_else(|| artifact(&files, bundle::MANIFEST)),
            Emit::Iptables => artifact(&files, bundle::IPTABLES_RULES),
            Emit::Ipset => artifact(&files, bundle::IPSET_RULES),
            Emit::Asm => match files.get(bundle::WEIR_ASM) {
                Some(b) => String::from_utf8_lossy(b).into_owned(),
                None => {
                    eprintln!("error: --emit asm needs --target ebpf or all");
                    return 2;
                }
            },
        };
        let _ = write!(out, "{text}");
    }
    if args.report {
        let cap = capacity(graph);
        let manifest = weir_compiler::contract::parse(&files[bundle::MANIFEST]).ok();
        match args.format {
            Format::Human => {
                let _ = write!(out, "{}", cap.report());
                for t in &targets {
                    if let Some(obj) = manifest.as_ref().and_then(|m| m.capacity(*t)) {
                        let _ = writeln!(out, "{}:", t.name());
                        for (k, v) in obj {
                            match v.as_str() {
                                Some(text) => {
                                    let _ = writeln!(out, "  {k}: {text}");
                                }
                                None => {
                                    let _ = writeln!(out, "  {k}: {v}");
                                }
                            }
                        }
                    }
                }
            }
            Format::Json => {
                let v = report_json(&analyzed, &targets, &files);
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                );
            }
        }
    }
    if let Some(dir) = &args.output {
        if let Err(e) = write_bundle(dir, &files) {
            eprintln!("error: writing {}: {e}", dir.display());
            return 2;
        }
        if args.emit.is_none() && !args.report {
            for (name, bytes) in &files {
                let _ = writeln!(
                    out,
                    "{:>10} bytes  {}",
                    bytes.len(),
                    dir.join(name).display()
                );
            }
        }
    }
    // `main` exits right after: freeing the program, graph and bundle
    // (hundreds of MB for 10,000 services) would only delay the exit.
    std::mem::forget(files);
    std::mem::forget(analyzed);
    0
}

/// Run the back ends for `targets` and assemble the bundle (file name →
/// bytes). Prints back-end diagnostics; `Err` carries the exit code.
pub fn bundle_files(
    analyzed: &Analyzed,
    targets: &[Target],
    color: Color,
) -> Result<BTreeMap<String, Vec<u8>>, i32> {
    let checked = &analyzed.checked;
    let Some(compiled) = &analyzed.compiled else {
        return Err(1);
    };
    let model = &checked.model;
    let graph = &compiled.graph;
    let sources: Vec<(String, String)> = checked
        .sources
        .iter()
        .map(|(_, f)| (f.name(), f.text.clone()))
        .collect();
    let loc = locator(&checked.sources);
    let locate = |span: Span| loc(span).map(|l| bundle::Location { at: l.at });
    let input = BundleInput {
        model,
        graph,
        sources: &sources,
        targets,
        locate: &locate,
        backends: BTreeMap::new(),
    };
    // The back ends run on their own thread while this one prepares the
    // rest of the bundle (manifest head, graph dump): on two cores that
    // halves the time after the graph is built.
    let (results, prepared) = std::thread::scope(|s| {
        let running = std::thread::Builder::new()
            .name("weir-backends".into())
            // As much stack as the main thread may have.
            .stack_size(64 << 20)
            .spawn_scoped(s, || backends::generate_all(targets, model, graph))
            .expect("spawn the back-end thread");
        let prepared = bundle::prepare(&input);
        let results = running
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (results, prepared)
    });
    let mut outputs = BTreeMap::new();
    let mut failures: Vec<Diagnostic> = Vec::new();
    let mut unavailable = Vec::new();
    for (t, result) in results {
        match result {
            Ok(a) => {
                outputs.insert(t, a);
            }
            Err(d) if d.is_empty() => unavailable.push(t.name()),
            Err(d) => failures.extend(d),
        }
    }
    if !failures.is_empty() {
        program::print_human(&failures, &checked.sources, color);
        return Err(1);
    }
    if !unavailable.is_empty() {
        eprintln!(
            "error: back end not available in this build: {}",
            unavailable.join(", ")
        );
        return Err(1);
    }
    Ok(bundle::assemble(prepared, &outputs))
}

/// The capacity report as JSON: the graph's numbers and each back end's
/// `capacity` section of the manifest.
pub fn report_json(
    analyzed: &Analyzed,
    targets: &[Target],
    files: &BTreeMap<String, Vec<u8>>,
) -> Value {
    let cap = analyzed.compiled.as_ref().map(|c| capacity(&c.graph));
    let manifest = files
        .get(bundle::MANIFEST)
        .and_then(|b| weir_compiler::contract::parse(b).ok());
    let backends: serde_json::Map<String, Value> = targets
        .iter()
        .filter_map(|t| {
            let cap = manifest.as_ref()?.capacity(*t)?;
            Some((t.name().to_string(), json!(cap)))
        })
        .collect();
    json!({ "graph": cap, "backends": backends })
}

fn artifact(files: &BTreeMap<String, Vec<u8>>, name: &str) -> String {
    files
        .get(name)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// Write the bundle; remove artifacts of an earlier compile that this one
/// did not produce, so the directory is exactly this bundle.
fn write_bundle(dir: &std::path::Path, files: &BTreeMap<String, Vec<u8>>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for name in ARTIFACTS {
        let p = dir.join(name);
        if !files.contains_key(name) && p.exists() {
            std::fs::remove_file(p)?;
        }
    }
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}
