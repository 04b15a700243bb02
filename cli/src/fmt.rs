//! `weir fmt [--check] PATH...`: rewrite files in the canonical layout.
//!
//! Directories are searched recursively for `*.weir` (sorted). Files are
//! rewritten in place; with `--check` nothing is written and the files that
//! would change are listed. Exit codes: 0 all formatted, 1 a file would
//! change (`--check`) or has syntax errors (reported, left alone), 2 usage
//! or IO errors.

use crate::loader::expand_paths;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use weir_compiler::diagnostics::{render, Kind};
use weir_compiler::source::SourceMap;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories (searched recursively for *.weir).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Do not write; list files that are not formatted and exit 1.
    #[arg(long)]
    pub check: bool,
}

pub fn run(args: Args) -> i32 {
    let files = match expand_paths(&args.paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let (mut io_error, mut failed) = (false, false);
    let mut out = std::io::stdout().lock();
    for path in files {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", path.display());
                io_error = true;
                continue;
            }
        };
        match weir_compiler::fmt::format(&text) {
            Ok(formatted) if formatted == text => {}
            Ok(formatted) => {
                if args.check {
                    let _ = writeln!(out, "{}", path.display());
                    failed = true;
                } else if let Err(e) = std::fs::write(&path, formatted) {
                    eprintln!("error: cannot write {}: {e}", path.display());
                    io_error = true;
                }
            }
            Err(errors) => {
                let mut sources = SourceMap::new();
                let id = sources.add(&path, text);
                let diags: Vec<_> = errors
                    .into_iter()
                    .map(|mut e| {
                        e.span.file = id;
                        Kind::Syntax(e).into_diagnostic()
                    })
                    .collect();
                eprint!("{}", render::human(&diags, &sources, color));
                eprintln!("weir fmt: {} not formatted (syntax errors)", path.display());
                failed = true;
            }
        }
    }
    if io_error {
        2
    } else if failed {
        1
    } else {
        0
    }
}
