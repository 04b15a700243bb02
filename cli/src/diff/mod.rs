//! `weir diff OLD NEW` and `weir diff --git RANGE PATH...`: the exact
//! connectivity change between two programs (the computation is
//! `weir_compiler::diff`; this module loads the two programs — from disk,
//! or from two git revisions materialized into a temporary directory —
//! and renders the result: human, JSON, Markdown or SARIF).
//!
//! Exit codes: 0 no change, 3 some connection is allowed that was denied
//! (or a service frontend or backend was added), 4 changes that only deny
//! more; 1 a program has errors, 2 usage, IO or git problems.

mod git;
mod json;
mod text;

use crate::program::{self, Color};
use std::path::{Path, PathBuf};
use weir_compiler::check::Checked;
use weir_compiler::diff::{self, Diff, Side, Summary};
use weir_compiler::graph::{self, Graph};
use weir_compiler::interp::explain::Located;
use weir_grammar::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
    /// A pull-request comment.
    Markdown,
    /// SARIF 2.1.0: one result per changed row, at the deciding rule.
    Sarif,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// OLD and NEW: each a policy file or a directory of them (the files
    /// of each are combined into one program). With --git: the program's
    /// files or directories, as paths in the working tree.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Compare two git revisions of the program: `A..B` (B against A),
    /// `A...B` (B against the merge base of A and B, what a pull request
    /// changes) or `A` (the working tree against A).
    #[arg(long, value_name = "RANGE")]
    pub git: Option<String>,
    /// A JSON endpoint inventory for both programs (with --git: a path in
    /// the repository, read at each revision).
    #[arg(long, value_name = "FILE")]
    pub endpoints: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
}

/// One loaded program and how to name its source locations.
pub struct Program {
    /// The path given, or the git revision.
    pub label: String,
    pub checked: Checked,
    pub graph: Graph,
    /// A directory prefix to strip from file names (a materialized
    /// revision), so locations read as paths in the repository.
    pub strip: Option<PathBuf>,
}

impl Program {
    /// `file:line:col` and the line's text of a span.
    pub fn locate(&self, span: Span) -> Option<Located> {
        let mut l = crate::trace::locator(&self.checked.sources)(span)?;
        if let Some(dir) = &self.strip {
            let prefix = format!("{}/", dir.display());
            if let Some(rest) = l.at.strip_prefix(&prefix) {
                l.at = rest.to_string();
            }
        }
        Some(l)
    }

    pub fn side(&self) -> Side<'_> {
        Side {
            model: &self.checked.model,
            graph: &self.graph,
        }
    }
}

fn load(
    label: &str,
    paths: &[PathBuf],
    endpoints: Option<&Path>,
    strip: Option<PathBuf>,
    color: Color,
) -> Result<Program, i32> {
    let roots = program::roots(paths)?;
    if roots.is_empty() {
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(program::usage(format_args!(
            "{label}: no .weir files in {}",
            shown.join(", ")
        )));
    }
    let checked = program::check(&roots, endpoints)?;
    if checked.has_errors() {
        program::print_human(&checked.diagnostics, &checked.sources, color);
        crate::errln!("weir diff: {label} has errors");
        return Err(1);
    }
    let graph = graph::build(&checked.model);
    Ok(Program {
        label: label.to_string(),
        checked,
        graph,
        strip,
    })
}

/// The exit code of a diff (module docs).
pub fn exit_code(d: &Diff) -> i32 {
    match d.summary() {
        Summary::Same => 0,
        Summary::AllowsMore => 3,
        Summary::DeniesMore => 4,
    }
}

pub fn run(args: Args) -> i32 {
    let loaded = match &args.git {
        None => {
            let [old, new] = args.paths.as_slice() else {
                return program::usage(
                    "weir diff takes two programs, OLD and NEW (or --git RANGE PATH...)",
                );
            };
            let e = args.endpoints.as_deref();
            let label = |p: &PathBuf| p.display().to_string();
            load(&label(old), std::slice::from_ref(old), e, None, args.color).and_then(|o| {
                load(&label(new), std::slice::from_ref(new), e, None, args.color)
                    .map(|n| (o, n, None))
            })
        }
        Some(range) => git::load_range(range, &args),
    };
    let (old, new, _tmp) = match loaded {
        Ok(x) => x,
        Err(code) => return code,
    };
    let d = diff::diff(old.side(), new.side());
    match args.format {
        Format::Human => crate::out!("{}", text::human(&d, &old, &new)),
        Format::Markdown => crate::out!("{}", text::markdown(&d, &old, &new)),
        Format::Json => crate::out::json_pretty(&json::report(&d, &old, &new)),
        Format::Sarif => crate::out!("{}", json::sarif(&d, &old, &new)),
    }
    exit_code(&d)
}
