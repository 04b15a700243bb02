//! Loading programs for the subcommands, and rendering their diagnostics.
//!
//! `check` and `test` treat every file they are given (directories are
//! searched for `*.weir`) as its own program root, with its imports: a
//! directory of examples is a set of independent programs, not one big
//! program. `compile` and `trace` combine the files they are given into one
//! program.

use crate::loader::{expand_paths, FsLoader};
use clap::ValueEnum;
use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use weir_compiler::check::{check_program, Checked, SyntaxTrees};
use weir_compiler::diagnostics::{render, Code, Diagnostic};
use weir_compiler::driver::Analyzed;
use weir_compiler::source::SourceMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

impl Color {
    pub fn enabled(self) -> bool {
        match self {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => {
                std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        }
    }
}

/// Report a usage problem (a flag that does not apply, a wrong file);
/// returns exit code 2.
pub fn usage(problem: impl std::fmt::Display) -> i32 {
    crate::errln!("error: {problem}");
    2
}

/// Expand paths to root files; prints the error and returns exit code 2 on
/// failure. A file named on the command line must be a `.weir` file (a
/// README.md given by a shell glob would otherwise be parsed as policy and
/// give hundreds of errors); directories are walked for `*.weir`.
pub fn roots(paths: &[PathBuf]) -> Result<Vec<PathBuf>, i32> {
    // A path that does not exist is reported by `expand_paths` ("cannot
    // read"), whatever its name.
    if let Some(p) = paths
        .iter()
        .find(|p| p.exists() && !p.is_dir() && !is_weir(p))
    {
        return Err(usage(format_args!(
            "{} is not a policy file: weir reads `.weir` files (and directories, searched for *.weir)",
            p.display()
        )));
    }
    expand_paths(paths).map_err(usage)
}

fn is_weir(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "weir")
}

/// Check one program made of `roots` (plus imports and inventories).
/// The files must be `.weir` files.
pub fn check(roots: &[PathBuf], endpoints: Option<&Path>) -> Result<Checked, i32> {
    inputs(roots, endpoints)?;
    Ok(check_program(roots, &FsLoader::new(), endpoints))
}

/// Check one program and, when it has no errors, build its decision graph
/// and add the graph's findings to the diagnostics.
pub fn analyze(roots: &[PathBuf], endpoints: Option<&Path>) -> Result<Analyzed, i32> {
    analyze_with(roots, endpoints, SyntaxTrees::Keep)
}

/// [`analyze`], keeping the syntax trees or freeing them once the lints
/// are done (`weir compile` reads only the model and the graph).
pub fn analyze_with(
    roots: &[PathBuf],
    endpoints: Option<&Path>,
    syntax: SyntaxTrees,
) -> Result<Analyzed, i32> {
    inputs(roots, endpoints)?;
    Ok(weir_compiler::driver::analyze_with(
        roots,
        &FsLoader::new(),
        endpoints,
        syntax,
    ))
}

/// [`analyze_with`], and `meanwhile` while the graph is built
/// ([`weir_compiler::driver::analyze_meanwhile`]).
pub fn analyze_meanwhile<M>(
    roots: &[PathBuf],
    endpoints: Option<&Path>,
    syntax: SyntaxTrees,
    meanwhile: impl FnOnce(weir_compiler::driver::Early<'_>) -> M,
) -> Result<(Analyzed, Option<M>), i32> {
    inputs(roots, endpoints)?;
    Ok(weir_compiler::driver::analyze_meanwhile(
        roots,
        &FsLoader::new(),
        endpoints,
        syntax,
        meanwhile,
    ))
}

/// The files of one program are `.weir` files and the inventory exists.
fn inputs(roots: &[PathBuf], endpoints: Option<&Path>) -> Result<(), i32> {
    if let Some(p) = roots.iter().find(|p| !is_weir(p)) {
        return Err(usage(format_args!(
            "{} is not a policy file: weir reads `.weir` files",
            p.display()
        )));
    }
    if let Some(inv) = endpoints {
        if let Err(e) = std::fs::metadata(inv) {
            return Err(usage(format_args!("cannot read {}: {e}", inv.display())));
        }
    }
    Ok(())
}

/// The codes of every human diagnostic printed in this run, for the one
/// `weir explain` hint at the end ([`print_explain_hint`]).
static SHOWN: Mutex<BTreeSet<Code>> = Mutex::new(BTreeSet::new());

/// Write human diagnostics to stderr (nothing when there are none).
pub fn print_human(diags: &[Diagnostic], sources: &SourceMap, color: Color) {
    if diags.is_empty() {
        return;
    }
    if let Ok(mut shown) = SHOWN.lock() {
        shown.extend(diags.iter().map(|d| d.code));
    }
    let text = render::human(diags, sources, color.enabled());
    crate::out::eprint(format_args!("{text}"));
}

/// Once per run, after every diagnostic: how to read the documentation of
/// the codes shown (nothing when no human diagnostic was printed).
pub fn print_explain_hint() {
    let codes: Vec<Code> = SHOWN
        .lock()
        .map(|s| s.iter().copied().collect())
        .unwrap_or_default();
    if let Some(hint) = render::explain_hint(&codes) {
        crate::out::eprint(format_args!("{hint}"));
    }
}
