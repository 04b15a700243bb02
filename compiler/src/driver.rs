//! The whole front half in one call: check the program, and when it has no
//! errors, lower it to the decision graph and add the graph's findings
//! (shadowed rules, conflicts, policies selecting nothing) to the
//! diagnostics. `weir check`, `weir compile` and the language server all
//! go through here, so they report the same diagnostics.

use crate::check::{check_program_meanwhile, Checked, SyntaxTrees};
use crate::diagnostics::{self, graph_diagnostics};
use crate::graph::{self, Compiled, Parts};
use crate::model::Model;
use crate::source::{SourceLoader, SourceMap};
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
    analyze_meanwhile(roots, loader, inventory, syntax, |_| ()).0
}

/// What [`analyze_meanwhile`]'s `meanwhile` gets: the model, the sources
/// and the graph's model-only parts ([`graph::parts`]).
pub struct Early<'a> {
    pub model: &'a Model,
    pub sources: &'a SourceMap,
    pub parts: &'a Parts,
}

/// [`analyze_with`], and `meanwhile` on this thread while the graph is
/// still being built (after the lints, once the lowering has made the
/// graph's model-only parts; on two cores this thread would otherwise
/// wait for the graph). `Some` when the graph was built; `None` with
/// errors before the lints, or when the graph's thread ended without
/// its parts (its panic is resumed here as it would be without).
pub fn analyze_meanwhile<M>(
    roots: &[PathBuf],
    loader: &dyn SourceLoader,
    inventory: Option<&Path>,
    syntax: SyntaxTrees,
    meanwhile: impl FnOnce(Early<'_>) -> M,
) -> (Analyzed, Option<M>) {
    // The graph is built while the lints run.
    let (announce, announced) = std::sync::mpsc::channel();
    let then = move |model: &Model| {
        graph::compile_announcing(model, move |parts| {
            // Nobody listening (an error after the lints) is no error.
            let _ = announce.send(parts);
        })
    };
    let (mut checked, compiled, early) =
        check_program_meanwhile(roots, loader, inventory, syntax, then, |model, sources| {
            let parts = announced.recv().ok()?;
            Some(meanwhile(Early {
                model,
                sources,
                parts: &parts,
            }))
        });
    let early = early.flatten();
    let Some(compiled) = compiled.filter(|_| !checked.has_errors()) else {
        return (
            Analyzed {
                checked,
                compiled: None,
            },
            None,
        );
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
    (
        Analyzed {
            checked,
            compiled: Some(compiled),
        },
        early,
    )
}

#[cfg(test)]
mod tests;
