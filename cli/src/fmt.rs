//! `weir fmt [--check] [--format human|json] PATH...`: rewrite files in the
//! canonical layout.
//!
//! Directories are searched recursively for `*.weir` (sorted); a file
//! named must be a `.weir` file (a README.md is never rewritten). Files
//! are rewritten in place; with `--check` nothing is written and the files
//! that would change are listed. `--format json` prints `{"changed":
//! [...], "syntax_errors": [...]}` (docs/schemas/fmt.json). Exit codes: 0
//! all formatted, 1 a file would change (`--check`) or has syntax errors
//! (reported, left alone), 2 usage or IO errors.

use crate::program::{self, Color};
use serde::Serialize;
use std::path::{Path, PathBuf};
use weir_compiler::diagnostics::Kind;
use weir_compiler::source::SourceMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories (searched recursively for *.weir).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Do not write; list files that are not formatted and exit 1.
    #[arg(long)]
    pub check: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

/// What `weir fmt` did (or, with `--check`, would do).
#[derive(Debug, Default, Serialize)]
struct Outcome {
    /// Files rewritten, or with `--check` files that would be.
    changed: Vec<String>,
    /// Files left alone because they do not parse.
    syntax_errors: Vec<String>,
}

pub fn run(args: Args) -> i32 {
    let files = match program::roots(&args.paths) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let mut io_error = false;
    let mut outcome = Outcome::default();
    for path in files {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                crate::errln!("error: cannot read {}: {e}", path.display());
                io_error = true;
                continue;
            }
        };
        match weir_compiler::fmt::format(&text) {
            Ok(formatted) if formatted == text => {}
            Ok(formatted) => {
                if args.check && args.format == Format::Human {
                    crate::outln!("{}", path.display());
                }
                if !args.check {
                    if let Err(e) = std::fs::write(&path, formatted) {
                        crate::errln!("error: cannot write {}: {e}", path.display());
                        io_error = true;
                        continue;
                    }
                }
                outcome.changed.push(path.display().to_string());
            }
            Err(errors) => {
                report_syntax(&path, text, errors);
                outcome.syntax_errors.push(path.display().to_string());
            }
        }
    }
    if args.format == Format::Json {
        crate::out::json_pretty(&outcome);
    }
    if io_error {
        2
    } else if !outcome.syntax_errors.is_empty() || (args.check && !outcome.changed.is_empty()) {
        1
    } else {
        0
    }
}

fn report_syntax(path: &Path, text: String, errors: Vec<weir_grammar::SyntaxError>) {
    let mut sources = SourceMap::new();
    let id = sources.add(path, text);
    let diags: Vec<_> = errors
        .into_iter()
        .map(|mut e| {
            e.span.file = id;
            Kind::Syntax(e).into_diagnostic()
        })
        .collect();
    program::print_human(&diags, &sources, Color::Auto);
    crate::errln!("weir fmt: {} not formatted (syntax errors)", path.display());
}
