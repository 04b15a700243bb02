//! `weir check PATH... [--format human|json|sarif] [--deny-warnings] [--endpoints FILE]`
//!
//! Every file named (or found in a named directory) is its own program.
//! Quiet when clean (human format); JSON and SARIF go to stdout, always one
//! document. SARIF file URIs are relative to the current directory.

use crate::program::{self, Color};
use clap::ValueEnum;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
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
    let roots = match program::roots(&args.paths) {
        Ok(r) => r,
        Err(code) => return code,
    };
    // Each file is its own program; a diagnostic in a file that several
    // programs import (the stdlib, a shared library) is reported once.
    let mut seen: BTreeSet<(String, u32, u32, String)> = BTreeSet::new();
    let mut report = render::JsonReport::default();
    let mut human = String::new();
    let cwd = std::env::current_dir().ok();
    let docs = args
        .docs_url
        .clone()
        .or_else(|| std::env::var("WEIR_DOCS_URL").ok());
    let mut sarif_log = sarif::SarifLog::new(
        env!("CARGO_PKG_VERSION"),
        cwd.as_ref().and_then(|d| d.to_str()),
    )
    .with_docs(docs.as_deref());
    for root in &roots {
        let checked = match program::analyze(std::slice::from_ref(root), args.endpoints.as_deref())
        {
            Ok(a) => a.checked,
            Err(code) => return code,
        };
        let fresh: Vec<Diagnostic> = checked
            .diagnostics
            .iter()
            .filter(|d| {
                let file = checked
                    .sources
                    .get(d.primary.span.file)
                    .map(|f| f.name())
                    .unwrap_or_default();
                seen.insert((
                    file,
                    d.primary.span.start,
                    d.primary.span.end,
                    d.message.clone(),
                ))
            })
            .cloned()
            .collect();
        match args.format {
            Format::Json => {
                let r = render::json_report(&fresh, &checked.sources);
                report.errors += r.errors;
                report.warnings += r.warnings;
                report.diagnostics.extend(r.diagnostics);
            }
            Format::Sarif => {
                sarif_log.add(&fresh, &checked.sources);
                report.errors += fresh.iter().filter(|d| d.is_error()).count();
                report.warnings += fresh.iter().filter(|d| !d.is_error()).count();
            }
            Format::Human => {
                human.push_str(&render::human(
                    &fresh,
                    &checked.sources,
                    args.color.enabled(),
                ));
                report.errors += fresh.iter().filter(|d| d.is_error()).count();
                report.warnings += fresh.iter().filter(|d| !d.is_error()).count();
            }
        }
    }
    let (errors, warnings) = (report.errors, report.warnings);
    match args.format {
        Format::Json => {
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = writeln!(
                std::io::stdout().lock(),
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_else(|_| "{}".into())
            );
        }
        Format::Sarif => {
            let _ = write!(std::io::stdout().lock(), "{}", sarif_log.render());
        }
        Format::Human => {
            if errors + warnings > 0 {
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "{human}");
                let _ = writeln!(
                    err,
                    "weir check: {} error{}, {} warning{} in {} file{}",
                    errors,
                    if errors == 1 { "" } else { "s" },
                    warnings,
                    if warnings == 1 { "" } else { "s" },
                    roots.len(),
                    if roots.len() == 1 { "" } else { "s" }
                );
            }
        }
    }
    if errors > 0 || (args.deny_warnings && warnings > 0) {
        1
    } else {
        0
    }
}
