//! Loading programs for the subcommands, and rendering their diagnostics.
//!
//! `check` and `test` treat every file they are given (directories are
//! searched for `*.weir`) as its own program root, with its imports: a
//! directory of examples is a set of independent programs, not one big
//! program. `compile` and `trace` combine the files they are given into one
//! program.

use crate::loader::{expand_paths, FsLoader};
use clap::ValueEnum;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use weir_compiler::check::{check_program, Checked};
use weir_compiler::diagnostics::{render, Diagnostic};
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

/// Expand paths to root files; prints the error and returns exit code 2 on
/// failure.
pub fn roots(paths: &[PathBuf]) -> Result<Vec<PathBuf>, i32> {
    expand_paths(paths).map_err(|e| {
        eprintln!("error: {e}");
        2
    })
}

/// Check one program made of `roots` (plus imports and inventories).
pub fn check(roots: &[PathBuf], endpoints: Option<&Path>) -> Result<Checked, i32> {
    if let Some(inv) = endpoints {
        if let Err(e) = std::fs::metadata(inv) {
            eprintln!("error: cannot read {}: {e}", inv.display());
            return Err(2);
        }
    }
    Ok(check_program(roots, &FsLoader::new(), endpoints))
}

/// Check one program and, when it has no errors, build its decision graph
/// and add the graph's findings to the diagnostics.
pub fn analyze(roots: &[PathBuf], endpoints: Option<&Path>) -> Result<Analyzed, i32> {
    if let Some(inv) = endpoints {
        if let Err(e) = std::fs::metadata(inv) {
            eprintln!("error: cannot read {}: {e}", inv.display());
            return Err(2);
        }
    }
    Ok(weir_compiler::driver::analyze(
        roots,
        &FsLoader::new(),
        endpoints,
    ))
}

/// Write human diagnostics to stderr (nothing when there are none).
pub fn print_human(diags: &[Diagnostic], sources: &SourceMap, color: Color) {
    if diags.is_empty() {
        return;
    }
    let text = render::human(diags, sources, color.enabled());
    let _ = write!(std::io::stderr().lock(), "{text}");
}
