//! `weir check` and `weir test` treat every file they are given as its own
//! program. A library file given beside the files that import it (`weir
//! check policies/` where `policies/common.weir` is imported by the others)
//! is also checked alone, and alone its selectors look unused (W0301) and
//! may match no endpoint the importers' inventories provide. This module
//! judges such a file in the context of its importers: a warning on a
//! library root is reported only when every program that imports it (the
//! importer checked together with the library as a root) gives it too.
//! Errors are the library's own and are always reported.

use crate::program;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use weir_compiler::diagnostics::Diagnostic;
use weir_compiler::driver::Analyzed;

/// One program's diagnostics to report, with the analysis whose source map
/// renders them (a library's context warnings come from an importer's
/// analysis, so they carry their own).
pub struct Report {
    pub analyzed: Analyzed,
    pub diagnostics: Vec<Diagnostic>,
    /// The root checked alone (false: a library's context report, whose
    /// analysis is an importer's program).
    pub alone: bool,
}

/// Analyze every root alone; for each root that another root imports,
/// replace its warnings by those every importing program agrees on.
/// Returns the reports in root order (a library may add a second report,
/// from its context, after its own).
pub fn analyze_roots(roots: &[PathBuf], endpoints: Option<&Path>) -> Result<Vec<Report>, i32> {
    let alone: Vec<Analyzed> = roots
        .iter()
        .map(|r| program::analyze(std::slice::from_ref(r), endpoints))
        .collect::<Result<_, _>>()?;
    let imported: Vec<BTreeSet<PathBuf>> = alone.iter().map(imported_files).collect();
    let mut out = Vec::new();
    for (i, analyzed) in alone.into_iter().enumerate() {
        let me = canonical(&roots[i]);
        let importers: Vec<&PathBuf> = (0..roots.len())
            .filter(|&j| j != i && imported[j].contains(&me))
            .map(|j| &roots[j])
            .collect();
        if importers.is_empty() {
            let diagnostics = analyzed.checked.diagnostics.clone();
            out.push(Report {
                analyzed,
                diagnostics,
                alone: true,
            });
            continue;
        }
        let errors: Vec<Diagnostic> = analyzed
            .checked
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .cloned()
            .collect();
        out.push(Report {
            analyzed,
            diagnostics: errors,
            alone: true,
        });
        if let Some(ctx) = in_context(&roots[i], &importers, endpoints)? {
            out.push(ctx);
        }
    }
    Ok(out)
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The files a program imports (directly or not), canonical.
fn imported_files(a: &Analyzed) -> BTreeSet<PathBuf> {
    let checked = &a.checked;
    checked
        .files
        .iter()
        .filter(|f| !f.root)
        .map(|f| canonical(&checked.sources.file(f.id).path))
        .collect()
}

/// The library's warnings as every importer sees them: the library checked
/// as a root together with each importer; a warning is kept when all of
/// them report it (same code, place and message).
fn in_context(
    lib: &Path,
    importers: &[&PathBuf],
    endpoints: Option<&Path>,
) -> Result<Option<Report>, i32> {
    let lib_canon = canonical(lib);
    let mut first: Option<(Analyzed, Vec<Diagnostic>)> = None;
    let mut agreed: Option<BTreeSet<(String, u32, u32, String)>> = None;
    for imp in importers {
        let pair = [(*imp).clone(), lib.to_path_buf()];
        let analyzed = program::analyze(&pair, endpoints)?;
        let sources = &analyzed.checked.sources;
        let on_lib: Vec<Diagnostic> = analyzed
            .checked
            .diagnostics
            .iter()
            .filter(|d| !d.is_error())
            .filter(|d| canonical(&sources.file(d.primary.span.file).path) == lib_canon)
            .cloned()
            .collect();
        let keys: BTreeSet<_> = on_lib.iter().map(key).collect();
        agreed = Some(match agreed {
            None => keys,
            Some(a) => a.intersection(&keys).cloned().collect(),
        });
        if first.is_none() {
            first = Some((analyzed, on_lib));
        }
    }
    let (Some((analyzed, on_lib)), Some(agreed)) = (first, agreed) else {
        return Ok(None);
    };
    let diagnostics = on_lib
        .into_iter()
        .filter(|d| agreed.contains(&key(d)))
        .collect();
    Ok(Some(Report {
        analyzed,
        diagnostics,
        alone: false,
    }))
}

fn key(d: &Diagnostic) -> (String, u32, u32, String) {
    (
        d.code.as_str().to_string(),
        d.primary.span.start,
        d.primary.span.end,
        d.message.clone(),
    )
}
