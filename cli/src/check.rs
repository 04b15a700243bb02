//! `weir check PATH... [--format human|json|sarif] [--deny-warnings]
//! [--endpoints FILE] [--target ebpf|iptables|all]`
//!
//! Every file named (or found in a named directory) is its own program; a
//! file that others among them import is judged in their context
//! (`context.rs`). With `--target`, the back ends run too and what they
//! refuse (E05xx) is reported; nothing is written. Quiet when clean (human
//! format); JSON and SARIF go to stdout, always one document. SARIF file
//! URIs are relative to the current directory.

use crate::compile::TargetArg;
use crate::context::{self, Report};
use crate::program::{self, Color};
use clap::ValueEnum;
use std::collections::BTreeSet;
use std::path::PathBuf;
use weir_compiler::backends;
use weir_compiler::diagnostics::{render, sarif, Diagnostic};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
    /// SARIF 2.1.0, for code-scanning tools.
    Sarif,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories (searched recursively for *.weir).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Exit with status 1 when there are warnings.
    #[arg(long)]
    pub deny_warnings: bool,
    /// Also run these back ends and report what they refuse (E05xx),
    /// without writing anything. Without it, no back end runs.
    #[arg(long, value_enum)]
    pub target: Option<TargetArg>,
    /// Where weir's documentation is published (SARIF `helpUri`s point at
    /// DOCS/docs/diagnostics.md); defaults to `WEIR_DOCS_URL`.
    #[arg(long, value_name = "URL")]
    pub docs_url: Option<String>,
    /// A JSON endpoint inventory to check against.
    #[arg(long, value_name = "FILE")]
    pub endpoints: Option<PathBuf>,
    /// Colour in human output.
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
}

pub fn run(args: Args) -> i32 {
    if args.docs_url.is_some() && args.format != Format::Sarif {
        return program::usage("--docs-url applies only to --format sarif");
    }
    let roots = match program::roots(&args.paths) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut reports = match context::analyze_roots(&roots, args.endpoints.as_deref()) {
        Ok(r) => r,
        Err(code) => return code,
    };
    if let Some(t) = args.target {
        add_refusals(&mut reports, &crate::compile::targets(t));
    }
    let (errors, warnings) = print(&args, &dedup(reports), roots.len());
    if errors > 0 || (args.deny_warnings && warnings > 0) {
        1
    } else {
        0
    }
}

/// What the back ends refuse in each program that has a graph (a
/// library's context report repeats its importer's program: skipped).
fn add_refusals(reports: &mut [Report], targets: &[weir_compiler::bundle::Target]) {
    for r in reports.iter_mut().filter(|r| r.alone) {
        if let Some(compiled) = &r.analyzed.compiled {
            let refused = backends::refusals(targets, &r.analyzed.checked.model, &compiled.graph);
            r.diagnostics.extend(refused);
        }
    }
}

/// A diagnostic in a file that several programs import (the stdlib, a
/// shared library) is reported once.
fn dedup(mut reports: Vec<Report>) -> Vec<Report> {
    let mut seen: BTreeSet<(String, u32, u32, String)> = BTreeSet::new();
    for r in &mut reports {
        let sources = &r.analyzed.checked.sources;
        r.diagnostics.retain(|d| {
            let file = sources
                .get(d.primary.span.file)
                .map(|f| f.name())
                .unwrap_or_default();
            seen.insert((
                file,
                d.primary.span.start,
                d.primary.span.end,
                d.message.clone(),
            ))
        });
    }
    reports
}

/// Print the reports in the chosen format; returns (errors, warnings).
fn print(args: &Args, reports: &[Report], files: usize) -> (usize, usize) {
    let all: Vec<&Diagnostic> = reports.iter().flat_map(|r| &r.diagnostics).collect();
    let errors = all.iter().filter(|d| d.is_error()).count();
    let warnings = all.len() - errors;
    match args.format {
        Format::Json => {
            let mut report = render::JsonReport::default();
            for r in reports {
                let j = render::json_report(&r.diagnostics, &r.analyzed.checked.sources);
                report.diagnostics.extend(j.diagnostics);
            }
            report.errors = errors;
            report.warnings = warnings;
            crate::out::json_pretty(&report);
        }
        Format::Sarif => {
            let cwd = std::env::current_dir().ok();
            let docs = args
                .docs_url
                .clone()
                .or_else(|| std::env::var("WEIR_DOCS_URL").ok());
            let mut log = sarif::SarifLog::new(
                env!("CARGO_PKG_VERSION"),
                cwd.as_ref().and_then(|d| d.to_str()),
            )
            .with_docs(docs.as_deref());
            for r in reports {
                log.add(&r.diagnostics, &r.analyzed.checked.sources);
            }
            crate::out::print(format_args!("{}", log.render()));
        }
        Format::Human => {
            for r in reports {
                program::print_human(&r.diagnostics, &r.analyzed.checked.sources, args.color);
            }
            if errors + warnings > 0 {
                crate::out::eprint(format_args!(
                    "weir check: {} in {} file{}\n",
                    render::summary_counts(errors, warnings),
                    files,
                    if files == 1 { "" } else { "s" }
                ));
            }
        }
    }
    (errors, warnings)
}
