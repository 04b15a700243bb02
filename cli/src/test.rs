//! `weir test PATH...`: run the in-language `test` blocks of every file
//! (each file its own program, with its imports) through the reference
//! interpreter. Human output ends with `N passed, N failed`; `--format
//! json` is one document (docs/schemas/test.json) and `--format junit` a
//! JUnit XML report for CI systems (`junit.rs`).
//!
//! With `--snapshot DIR` each program is also compiled and its text
//! artifacts compared with `DIR/<program>/`. A back end that refuses the
//! program is recorded too: its refusal (`refused-<target>.txt`) is the
//! snapshot, so a program that one back end cannot express still has a
//! snapshot of what the other makes, and a change in what is refused
//! shows up as a diff like any other.

use crate::program::{self, Color};
use crate::trace::locator;
use serde::Serialize;
use std::path::{Path, PathBuf};
use weir_compiler::diagnostics::{render, Diagnostic};
use weir_compiler::driver::Analyzed;
use weir_compiler::interp::explain::{explain, packet_text};
use weir_compiler::interp::{run_tests, verdict_name, Interp};
use weir_compiler::source::SourceMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
    /// JUnit XML (one test suite per program, one test case per
    /// `expect` line).
    Junit,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories (searched recursively for *.weir).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// An extra JSON endpoint inventory for every program.
    #[arg(long, value_name = "FILE")]
    pub endpoints: Option<PathBuf>,
    /// Print passing expectations too (human format).
    #[arg(long, short)]
    pub verbose: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
    /// Also compile each program and compare its text artifacts with the
    /// snapshots in DIR/<program>/ (docs/ci.md).
    #[arg(long, value_name = "DIR")]
    pub snapshot: Option<PathBuf>,
    /// With --snapshot: rewrite the snapshots instead of comparing.
    #[arg(long, requires = "snapshot")]
    pub update: bool,
    /// With --snapshot: which back ends' artifacts to keep.
    #[arg(long, value_enum, requires = "snapshot")]
    pub target: Option<crate::compile::TargetArg>,
}

/// One `expect` line's result.
#[derive(Debug, Serialize)]
pub struct Case {
    pub test: String,
    /// `file:line:column` of the `expect` line.
    pub at: String,
    /// `allow`, `deny`, …
    pub expect: String,
    pub packet: String,
    pub from: String,
    pub to: String,
    pub passed: bool,
    /// Why it failed.
    pub failure: Option<String>,
    /// The interpreter's explanation of the verdict (failures only).
    pub explanation: Vec<String>,
}

/// One program's results.
#[derive(Debug, Serialize)]
pub struct ProgramResult {
    pub file: String,
    /// A problem that failed the whole program: it has errors, or it does
    /// not compile (with --snapshot).
    pub error: Option<String>,
    pub cases: Vec<Case>,
    /// The program's errors (or a back end's refusal), as `weir check
    /// --format json` gives them.
    pub diagnostics: Vec<render::JsonDiagnostic>,
    /// With --snapshot: what the comparison printed (one line each), and
    /// how many artifacts differ.
    pub snapshot: Vec<String>,
    pub snapshot_problems: usize,
}

#[derive(Debug, Serialize)]
pub struct TestRun {
    pub programs: Vec<ProgramResult>,
    pub passed: usize,
    pub failed: usize,
}

pub fn run(args: Args) -> i32 {
    if args.verbose && args.format != Format::Human {
        return program::usage("--verbose applies to --format human");
    }
    let roots = match program::roots(&args.paths) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut programs = Vec::new();
    for root in &roots {
        let analyzed = match program::analyze(std::slice::from_ref(root), args.endpoints.as_deref())
        {
            Ok(a) => a,
            Err(code) => return code,
        };
        match one_program(&args, root, &analyzed) {
            Ok(p) => programs.push(p),
            Err(code) => return code,
        }
    }
    // A program whose snapshots match counts as one pass.
    let snapshots_ok = programs
        .iter()
        .filter(|p| args.snapshot.is_some() && p.error.is_none() && p.snapshot_problems == 0)
        .count();
    let passed = snapshots_ok
        + programs
            .iter()
            .flat_map(|p| &p.cases)
            .filter(|c| c.passed)
            .count();
    let failed = programs.iter().map(failures).sum();
    let run = TestRun {
        programs,
        passed,
        failed,
    };
    match args.format {
        Format::Human => print_human(&run, args.verbose),
        Format::Json => crate::out::json_pretty(&run),
        Format::Junit => crate::out!("{}", crate::junit::render(&run)),
    }
    i32::from(failed > 0)
}

/// Failures of one program: its failed cases, plus one for a program-wide
/// error and one for snapshots that differ (as the human summary counts).
fn failures(p: &ProgramResult) -> usize {
    p.cases.iter().filter(|c| !c.passed).count()
        + usize::from(p.error.is_some())
        + usize::from(p.snapshot_problems > 0)
}

fn one_program(args: &Args, root: &Path, analyzed: &Analyzed) -> Result<ProgramResult, i32> {
    let checked = &analyzed.checked;
    let mut result = ProgramResult {
        file: root.display().to_string(),
        error: None,
        diagnostics: Vec::new(),
        cases: Vec::new(),
        snapshot: Vec::new(),
        snapshot_problems: 0,
    };
    if checked.has_errors() {
        if args.format == Format::Human {
            program::print_human(&checked.diagnostics, &checked.sources, args.color);
        }
        result.error = Some("the program has errors".into());
        result.diagnostics =
            render::json_report(&checked.diagnostics, &checked.sources).diagnostics;
        return Ok(result);
    }
    if let Some(dir) = &args.snapshot {
        snapshot(args, dir, root, analyzed, &mut result)?;
    }
    let report = run_tests(&checked.model);
    let locate = locator(&checked.sources);
    for r in &report.results {
        let explanation = match &r.failure {
            None => Vec::new(),
            Some(_) => {
                let extra = weir_compiler::interp::synthetic_endpoints(&r.expect);
                let interp = Interp::with_extra(&checked.model, extra);
                explain(&interp, &r.packet, &r.outcome, &locate)
                    .lines()
                    .map(str::to_string)
                    .collect()
            }
        };
        result.cases.push(Case {
            test: r.test.clone(),
            at: locate(r.expect.span).map(|l| l.at).unwrap_or_default(),
            expect: verdict_name(r.expect.verdict).to_string(),
            packet: packet_text(&r.packet),
            from: r.expect.from.display.clone(),
            to: r.expect.to.display.clone(),
            passed: r.failure.is_none(),
            failure: r.failure.clone(),
            explanation,
        });
    }
    Ok(result)
}

/// Compile the program and compare (or update) its snapshots. Without
/// `--target`, every back end: the refusing ones are recorded as their
/// refusal; with `--target`, the targets named must accept the program.
fn snapshot(
    args: &Args,
    dir: &Path,
    root: &Path,
    analyzed: &Analyzed,
    result: &mut ProgramResult,
) -> Result<(), i32> {
    let targets = crate::compile::targets(args.target.unwrap_or(crate::compile::TargetArg::All));
    let built = crate::compile::build(analyzed, &targets, &Default::default())?;
    if args.target.is_some() && !built.refused.is_empty() {
        let diags: Vec<Diagnostic> = built.refused.into_iter().flat_map(|(_, d)| d).collect();
        if args.format == Format::Human {
            program::print_human(&diags, &analyzed.checked.sources, args.color);
        }
        result.error = Some("does not compile".into());
        result.diagnostics = render::json_report(&diags, &analyzed.checked.sources).diagnostics;
        return Ok(());
    }
    let mut files = built.files;
    let accepted: Vec<_> = targets
        .iter()
        .copied()
        .filter(|t| !built.refused.iter().any(|(r, _)| r == t))
        .collect();
    let report = crate::report::build(analyzed, &accepted, &files);
    let text = crate::out::json_text(&report);
    files.insert("capacity.json".into(), text.into_bytes());
    for (t, diags) in &built.refused {
        let text = refusal_text(diags, &analyzed.checked.sources);
        files.insert(crate::snapshot::refused_file(*t), text.into_bytes());
    }
    let mut lines = Vec::new();
    match crate::snapshot::check_program(&mut lines, dir, root, &files, args.update) {
        Ok(n) => result.snapshot_problems = n,
        Err(e) => {
            return Err(program::usage(format_args!(
                "snapshots in {}: {e}",
                dir.display()
            )))
        }
    }
    result.snapshot = String::from_utf8_lossy(&lines)
        .lines()
        .map(str::to_string)
        .collect();
    Ok(())
}

/// A refusal as snapshot text, independent of where weir runs: per
/// diagnostic the code and message, then each site as `FILE:LINE:COL`
/// (file name only) and its label.
fn refusal_text(diags: &[Diagnostic], sources: &SourceMap) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&format!("{}: {}\n", d.code, d.message));
        for l in std::iter::once(&d.primary).chain(&d.secondary) {
            let file = sources.file(l.span.file);
            let (line, col) = file.line_col(l.span.start as usize);
            let name = file
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push_str(&format!("  {name}:{line}:{col}: {}\n", l.message));
        }
    }
    out
}

fn print_human(run: &TestRun, verbose: bool) {
    for p in &run.programs {
        for line in &p.snapshot {
            crate::outln!("{line}");
        }
        if let Some(e) = &p.error {
            crate::outln!("FAIL {}: {e}", p.file);
        }
        for c in &p.cases {
            if c.passed {
                if verbose {
                    crate::outln!(
                        "ok   {} {:?}: expect {} {}",
                        c.at,
                        c.test,
                        c.expect,
                        c.packet
                    );
                }
                continue;
            }
            crate::outln!("FAIL {} test {:?}", c.at, c.test);
            crate::outln!(
                "     expect {} {} (from {} to {})",
                c.expect,
                c.packet,
                c.from,
                c.to
            );
            crate::outln!("     {}", c.failure.as_deref().unwrap_or_default());
            for line in &c.explanation {
                crate::outln!("     | {line}");
            }
        }
    }
    crate::outln!("{} passed, {} failed", run.passed, run.failed);
}
