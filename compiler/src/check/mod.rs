//! The checker: load files and imports, resolve names, validate, lint and
//! build the [`Model`].
//!
//! It never stops at the first problem: every diagnostic is collected and
//! a best-effort model is built even when there are errors (callers use it
//! only when [`Checked::has_errors`] is false).
//!
//! - [`load`]: roots, imports, the inventory file;
//! - [`names`]: the declaration table, duplicates, "did you mean";
//! - [`resolve`]: selectors, sets and peers (wrong kinds);
//! - [`named`]: named selectors and sets, iteratively (cycles, depth);
//! - [`build`]: endpoints, services, tiers, policies, steering;
//! - [`expect`]: test blocks and test peers;
//! - [`lints`]: warnings over the finished model;
//! - [`port_names`]: named ports (endpoint declarations, W0310/W0311);
//! - [`namespaces`]: namespace declarations, endpoints' namespaces,
//!   `namespace(…)` tests (E0275–E0277, W0325);
//! - [`proxy_addr`]: a `redirect` proxy address must be on the node
//!   (E0575, E0576).

mod build;
mod expect;
mod icmp_family;
mod lints;
mod load;
mod named;
mod names;
mod namespaces;
mod nodes;
mod port_names;
mod proxy_addr;
mod resolve;
/// The network of `addr/len` (host bits cleared); the importer masks with it too.
pub(crate) use resolve::network;

use crate::diagnostics::{self, Diagnostic, Kind};
use crate::model::{Model, Sel};
use crate::source::{SourceLoader, SourceMap};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use weir_grammar::ast;
use weir_grammar::{FileId, Span};

pub use names::suggest;

/// One parsed file of the program.
#[derive(Debug, Clone)]
pub struct ParsedFile {
    pub id: FileId,
    pub ast: ast::File,
    /// Named on the command line (its tests run, its lints are reported).
    pub root: bool,
}

/// The result of checking a program.
#[derive(Debug, Clone)]
pub struct Checked {
    pub sources: SourceMap,
    /// Every parsed file, roots first, then imports in load order.
    pub files: Vec<ParsedFile>,
    pub model: Model,
    /// Sorted by file, position and code.
    pub diagnostics: Vec<Diagnostic>,
}

impl Checked {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    pub fn warning_count(&self) -> usize {
        self.diagnostics.len() - self.error_count()
    }

    /// The model, only when there are no errors.
    pub fn model_if_ok(&self) -> Option<&Model> {
        (!self.has_errors()).then_some(&self.model)
    }
}

/// Checks the program made of `roots` and everything they import.
/// `inventory` is a JSON endpoint inventory file, loaded through `loader`.
pub fn check_program(
    roots: &[PathBuf],
    loader: &dyn SourceLoader,
    inventory: Option<&Path>,
) -> Checked {
    check_program_then(roots, loader, inventory, SyntaxTrees::Keep, |_| ()).0
}

/// The model of one in-memory file `p.weir`, which must check without
/// errors: the unit tests' way from source text to a model.
#[cfg(test)]
pub(crate) fn model_of(src: &str) -> crate::model::Model {
    let path = PathBuf::from("p.weir");
    let loader = crate::source::MemoryLoader::new().with(&path, src);
    let c = check_program(std::slice::from_ref(&path), &loader, None);
    assert!(!c.has_errors(), "{:?}", c.diagnostics);
    c.model
}

/// Whether [`check_program_then`] returns the syntax trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntaxTrees {
    /// In [`Checked::files`] (the language server, `weir check`, `weir test`).
    Keep,
    /// Freed as soon as the lints are done, while `then` still runs
    /// ([`ParsedFile::ast`] is then empty): `weir compile`, which reads
    /// only the model, the graph, the sources and spans. For 100,000
    /// one-peer-per-pod rules (an 11 MB source) the trees are ~210 MiB,
    /// which were alive at the graph optimiser's peak (issue 21).
    Free,
}

/// [`check_program`], and `then` on the model when it has no errors,
/// on another thread while the lints run (for a large program the lints
/// and the decision graph take comparable time; `crate::driver` builds
/// the graph here). `syntax` says whether the syntax trees are kept
/// ([`SyntaxTrees`]).
pub fn check_program_then<R: Send + 'static>(
    roots: &[PathBuf],
    loader: &dyn SourceLoader,
    inventory: Option<&Path>,
    syntax: SyntaxTrees,
    then: impl FnOnce(&Model) -> R + Send + 'static,
) -> (Checked, Option<R>) {
    let (checked, then_result, _) =
        check_program_meanwhile(roots, loader, inventory, syntax, then, |_, _| ());
    (checked, then_result)
}

/// [`check_program_then`], and `meanwhile` on this thread once the lints
/// are done, while `then` may still run (`Some` when `then` runs: the
/// program has no errors before the lints). `meanwhile` gets the model
/// and the sources (the syntax trees already freed with
/// [`SyntaxTrees::Free`]).
pub fn check_program_meanwhile<R: Send + 'static, M>(
    roots: &[PathBuf],
    loader: &dyn SourceLoader,
    inventory: Option<&Path>,
    syntax: SyntaxTrees,
    then: impl FnOnce(&Model) -> R + Send + 'static,
    meanwhile: impl FnOnce(&Model, &SourceMap) -> M,
) -> (Checked, Option<R>, Option<M>) {
    let mut loaded = load::load_program(roots, inventory, loader);
    let mut cx = Cx::new(&loaded.files);
    cx.diags.extend(loaded.diags.iter().cloned());
    let syntax_spans: Vec<Span> = loaded
        .diags
        .iter()
        .filter_map(|k| match k {
            Kind::Syntax(e) => Some(e.span),
            _ => None,
        })
        .collect();
    // The inventory moves into the model (its endpoints are not cloned).
    let model = cx.build(loaded.inventory.take());
    // Lints run on programs without errors only: after an error, names
    // and selectors are partly unresolved and warnings would be noise.
    let clean = !cx
        .diags
        .iter()
        .any(|k| k.code().severity() == diagnostics::Severity::Error);
    // Shared with `then`'s thread, which is not scoped: the lints' state
    // borrows the syntax trees, which this thread frees (with
    // `SyntaxTrees::Free`) while `then` still runs.
    let model = std::sync::Arc::new(model);
    let running = clean.then(|| {
        let model = std::sync::Arc::clone(&model);
        crate::threads::detached(crate::threads::named("weir-after-check"), move || {
            then(&model)
        })
    });
    if clean {
        lints::run(&mut cx, &model);
    }
    // The lints' state (tables of declarations) is not needed any more.
    let kinds = std::mem::take(&mut cx.diags);
    drop(cx);
    if syntax == SyntaxTrees::Free {
        for f in &mut loaded.files {
            f.ast = ast::File::default();
        }
    }
    let meanwhile_result = running.as_ref().map(|_| meanwhile(&model, &loaded.sources));
    let then_result = running.map(|h| h.join());
    // `then`'s thread is joined: this is the only reference left.
    let model = std::sync::Arc::into_inner(model).expect("the model's only owner");

    let roots: BTreeSet<FileId> = loaded
        .files
        .iter()
        .filter(|f| f.root)
        .map(|f| f.id)
        .collect();
    let mut diagnostics: Vec<Diagnostic> = kinds
        .into_iter()
        .map(Kind::into_diagnostic)
        .filter(|d| {
            // Lints speak only about the files the user asked about.
            d.is_error() || roots.contains(&d.primary.span.file)
        })
        .filter(|d| {
            // A value the parser already rejected is not reported again.
            d.code.as_str().starts_with("E00")
                || !syntax_spans.iter().any(|s| overlaps(*s, d.primary.span))
        })
        .collect();
    diagnostics::sort(&mut diagnostics);
    let checked = Checked {
        sources: loaded.sources,
        files: loaded.files,
        model,
        diagnostics,
    };
    (checked, then_result, meanwhile_result)
}

fn overlaps(a: Span, b: Span) -> bool {
    a.file == b.file && a.start < b.end.max(b.start + 1) && b.start < a.end.max(a.start + 1)
}

/// Where a name is defined.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PeerDecl<'a> {
    Selector(&'a ast::SelectorDecl),
    Set(&'a ast::SetDecl),
}

#[derive(Debug, Clone)]
enum Memo<T> {
    Visiting,
    Done(Option<T>),
}

/// A selector the lints should look at.
#[derive(Debug, Clone)]
pub(crate) struct SelUse {
    pub span: Span,
    pub what: String,
    pub sel: Sel,
}

/// Checker state shared by the passes.
pub(crate) struct Cx<'a> {
    pub files: &'a [ParsedFile],
    pub diags: Vec<Kind>,
    /// Selectors and sets (one namespace), first definition of each.
    pub peers: BTreeMap<String, PeerDecl<'a>>,
    pub endpoints: BTreeMap<String, &'a ast::EndpointDecl>,
    /// `node` declarations, first definition of each.
    pub nodes: BTreeMap<String, &'a ast::NodeDecl>,
    /// The checked nodes (built before endpoints and policies read them).
    pub node_model: Vec<crate::model::Node>,
    pub namespaces: BTreeMap<String, &'a ast::NamespaceDecl>,
    /// Every declared namespace's labels (program and inventory).
    pub ns_table: BTreeMap<String, BTreeMap<String, String>>,
    /// `namespace(SEL)` tests as resolved (SEL, span), for W0325.
    pub ns_tests: Vec<(Sel, Span)>,
    pub services: BTreeMap<String, &'a ast::ServiceDecl>,
    pub policies: BTreeMap<String, &'a ast::PolicyDecl>,
    pub tiers: BTreeMap<String, &'a ast::TierDecl>,
    pub steers: BTreeMap<String, &'a ast::SteerDecl>,
    pub default_denies: Vec<&'a ast::DefaultDenyDecl>,
    /// Tests of root files, in order.
    pub tests: Vec<&'a ast::TestDecl>,
    /// Selector and set names referenced from anywhere.
    pub used: BTreeSet<String>,
    /// Named selectors and sets, resolved or being resolved.
    memo: BTreeMap<String, Memo<named::Named>>,
    /// Selectors written inline (applies-to, peers), for lints.
    pub sel_uses: Vec<SelUse>,
}

impl<'a> Cx<'a> {
    fn new(files: &'a [ParsedFile]) -> Cx<'a> {
        let mut cx = Cx {
            files,
            diags: Vec::new(),
            peers: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            nodes: BTreeMap::new(),
            node_model: Vec::new(),
            namespaces: BTreeMap::new(),
            ns_table: BTreeMap::new(),
            ns_tests: Vec::new(),
            services: BTreeMap::new(),
            policies: BTreeMap::new(),
            tiers: BTreeMap::new(),
            steers: BTreeMap::new(),
            default_denies: Vec::new(),
            tests: Vec::new(),
            used: BTreeSet::new(),
            memo: BTreeMap::new(),
            sel_uses: Vec::new(),
        };
        cx.collect();
        cx
    }

    pub fn report(&mut self, k: Kind) {
        self.diags.push(k);
    }

    pub fn is_root(&self, file: FileId) -> bool {
        self.files.iter().any(|f| f.id == file && f.root)
    }
}
