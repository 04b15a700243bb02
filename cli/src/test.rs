//! `weir test PATH...`: run the in-language `test` blocks of every file
//! (each file its own program, with its imports) through the reference
//! interpreter. The last line is `N passed, N failed`.

use crate::program::{self, Color};
use crate::trace::locator;
use std::io::Write;
use std::path::PathBuf;
use weir_compiler::interp::explain::{explain, packet_text};
use weir_compiler::interp::{run_tests, verdict_name, Interp};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories (searched recursively for *.weir).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// An extra JSON endpoint inventory for every program.
    #[arg(long, value_name = "FILE")]
    pub endpoints: Option<PathBuf>,
    /// Print passing expectations too.
    #[arg(long, short)]
    pub verbose: bool,
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
    #[arg(long, value_enum, default_value_t = crate::compile::TargetArg::All)]
    pub target: crate::compile::TargetArg,
}

pub fn run(args: Args) -> i32 {
    let roots = match program::roots(&args.paths) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut passed = 0usize;
    let mut failed = 0usize;
    let mut out = std::io::stdout().lock();
    for root in &roots {
        let analyzed = match program::analyze(std::slice::from_ref(root), args.endpoints.as_deref())
        {
            Ok(a) => a,
            Err(code) => return code,
        };
        let checked = &analyzed.checked;
        if checked.has_errors() {
            program::print_human(&checked.diagnostics, &checked.sources, args.color);
            let _ = writeln!(out, "FAIL {}: the program has errors", root.display());
            failed += 1;
            continue;
        }
        if let Some(dir) = &args.snapshot {
            let targets = crate::compile::targets(args.target);
            match crate::compile::bundle_files(&analyzed, &targets, args.color) {
                Ok(mut files) => {
                    let report = crate::compile::report_json(&analyzed, &targets, &files);
                    let mut text = serde_json::to_string_pretty(&report).unwrap_or_default();
                    text.push('\n');
                    files.insert("capacity.json".into(), text.into_bytes());
                    match crate::snapshot::check_program(&mut out, dir, root, &files, args.update) {
                        Ok(0) => passed += 1,
                        Ok(_) => failed += 1,
                        Err(e) => {
                            eprintln!("error: snapshots in {}: {e}", dir.display());
                            return 2;
                        }
                    }
                }
                Err(_) => {
                    let _ = writeln!(out, "FAIL {}: does not compile", root.display());
                    failed += 1;
                }
            }
        }
        let report = run_tests(&checked.model);
        let locate = locator(&checked.sources);
        for r in &report.results {
            let at = locate(r.expect.span).map(|l| l.at).unwrap_or_default();
            match &r.failure {
                None => {
                    passed += 1;
                    if args.verbose {
                        let _ = writeln!(
                            out,
                            "ok   {at} {:?}: expect {} {}",
                            r.test,
                            verdict_name(r.expect.verdict),
                            packet_text(&r.packet)
                        );
                    }
                }
                Some(why) => {
                    failed += 1;
                    let _ = writeln!(out, "FAIL {at} test {:?}", r.test);
                    let _ = writeln!(
                        out,
                        "     expect {} {} (from {} to {})",
                        verdict_name(r.expect.verdict),
                        packet_text(&r.packet),
                        r.expect.from.display,
                        r.expect.to.display
                    );
                    let _ = writeln!(out, "     {why}");
                    let extra = weir_compiler::interp::synthetic_endpoints(&r.expect);
                    let interp = Interp::with_extra(&checked.model, extra);
                    for line in explain(&interp, &r.packet, &r.outcome, &locate).lines() {
                        let _ = writeln!(out, "     | {line}");
                    }
                }
            }
        }
    }
    let _ = writeln!(out, "{passed} passed, {failed} failed");
    if failed > 0 {
        1
    } else {
        0
    }
}
