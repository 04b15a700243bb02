//! The whole front half in one call: check the program, and when it has no
//! errors, lower it to the decision graph and add the graph's findings
//! (shadowed rules, conflicts, policies selecting nothing) to the
//! diagnostics. `weir check`, `weir compile` and the language server all
//! go through here, so they report the same diagnostics.

use crate::check::{check_program_then, Checked, SyntaxTrees};
use crate::diagnostics::{self, graph_diagnostics};
use crate::graph::{self, Compiled};
use crate::source::SourceLoader;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub struct Analyzed {
    pub checked: Checked,
    /// The compiled graph, when the program has no errors.
    pub compiled: Option<Compiled>,
}

/// Check `roots` and, if clean of errors, build and analyse the graph.
/// Graph findings are reported only for rules in root files (a library's
/// own shadowed rules are its authors' business, as with unused names).
pub fn analyze(roots: &[PathBuf], loader: &dyn SourceLoader, inventory: Option<&Path>) -> Analyzed {
    analyze_with(roots, loader, inventory, SyntaxTrees::Keep)
}

/// [`analyze`], keeping or freeing the syntax trees ([`SyntaxTrees`]).
pub fn analyze_with(
    roots: &[PathBuf],
    loader: &dyn SourceLoader,
    inventory: Option<&Path>,
    syntax: SyntaxTrees,
) -> Analyzed {
    // The graph is built while the lints run.
    let (mut checked, compiled) =
        check_program_then(roots, loader, inventory, syntax, graph::compile);
    let Some(compiled) = compiled.filter(|_| !checked.has_errors()) else {
        return Analyzed {
            checked,
            compiled: None,
        };
    };
    let root_files: BTreeSet<_> = checked
        .files
        .iter()
        .filter(|f| f.root)
        .map(|f| f.id)
        .collect();
    let extra = graph_diagnostics(&checked.model, &compiled.findings)
        .into_iter()
        .filter(|d| root_files.contains(&d.primary.span.file));
    checked.diagnostics.extend(extra);
    diagnostics::sort(&mut checked.diagnostics);
    Analyzed {
        checked,
        compiled: Some(compiled),
    }
}

#[cfg(test)]
mod tests;
