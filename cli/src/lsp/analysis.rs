//! One checked program per open document (the document as root, plus
//! everything it imports), its graph-level findings and a symbol index.

use super::docs::{Documents, OverlayLoader};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use weir_compiler::check::{check_program, Checked};
use weir_grammar::ast::*;
use weir_grammar::{FileId, Span};

/// What a name can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SymKind {
    Selector,
    Set,
    Endpoint,
    Service,
    Policy,
    Tier,
    Steer,
    Test,
}

impl SymKind {
    pub fn noun(self) -> &'static str {
        match self {
            SymKind::Selector => "selector",
            SymKind::Set => "set",
            SymKind::Endpoint => "endpoint",
            SymKind::Service => "service",
            SymKind::Policy => "policy",
            SymKind::Tier => "tier",
            SymKind::Steer => "steer",
            SymKind::Test => "test",
        }
    }
}

/// A definition: the name and the whole item.
#[derive(Debug, Clone)]
pub struct Def {
    pub name: String,
    pub kind: SymKind,
    pub name_span: Span,
    pub span: Span,
}

/// Where a use of a name stands, which decides what it can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefCtx {
    /// A selector or set (rule peers, `applies to`, definitions).
    Peer,
    /// An endpoint first, then a selector or set (test peers).
    TestPeer,
    /// `tier NAME` in a policy header.
    Tier,
    /// `by NAME` in an expect line.
    By,
}

impl RefCtx {
    fn kinds(self) -> &'static [SymKind] {
        match self {
            RefCtx::Peer => &[SymKind::Selector, SymKind::Set],
            RefCtx::TestPeer => &[SymKind::Endpoint, SymKind::Selector, SymKind::Set],
            RefCtx::Tier => &[SymKind::Tier],
            RefCtx::By => &[SymKind::Policy, SymKind::Steer, SymKind::Service],
        }
    }
}

#[derive(Debug, Clone)]
pub struct Ref {
    pub name: String,
    pub span: Span,
    pub ctx: RefCtx,
}

/// An `import` and the file it loads.
#[derive(Debug, Clone)]
pub struct ImportRef {
    pub span: Span,
    pub target: PathBuf,
}

/// Names, uses, imports and labels of every file in one program.
#[derive(Debug, Clone, Default)]
pub struct Index {
    pub defs: Vec<Def>,
    pub refs: Vec<Ref>,
    pub imports: Vec<ImportRef>,
    /// Label keys with the values seen for them (endpoints, selectors).
    pub labels: BTreeMap<String, BTreeSet<String>>,
}

/// What the cursor is on.
#[derive(Debug, Clone)]
pub enum Target<'a> {
    Def(&'a Def),
    Ref(&'a Ref),
    Import(&'a ImportRef),
}

impl Index {
    pub fn build(checked: &Checked, stdlib: Option<&Path>) -> Index {
        let mut ix = Index::default();
        for f in &checked.files {
            let importer = &checked.sources.file(f.id).path;
            for item in &f.ast.items {
                ix.item(item, importer, stdlib);
            }
        }
        for e in &checked.model.endpoints {
            for (k, v) in &e.labels {
                ix.labels.entry(k.clone()).or_default().insert(v.clone());
            }
        }
        ix
    }

    /// The definition a use resolves to.
    pub fn resolve(&self, r: &Ref) -> Option<&Def> {
        r.ctx
            .kinds()
            .iter()
            .find_map(|k| self.defs.iter().find(|d| d.kind == *k && d.name == r.name))
    }

    /// The definition under a target (itself for a definition).
    pub fn def_of<'a>(&'a self, t: &Target<'a>) -> Option<&'a Def> {
        match t {
            Target::Def(d) => Some(d),
            Target::Ref(r) => self.resolve(r),
            Target::Import(_) => None,
        }
    }

    /// The name or import at a byte offset of a file.
    pub fn at(&self, file: FileId, offset: usize) -> Option<Target<'_>> {
        let hit =
            |s: &Span| s.file == file && s.start as usize <= offset && offset <= s.end as usize;
        if let Some(d) = self.defs.iter().find(|d| hit(&d.name_span)) {
            return Some(Target::Def(d));
        }
        if let Some(r) = self.refs.iter().find(|r| hit(&r.span)) {
            return Some(Target::Ref(r));
        }
        self.imports
            .iter()
            .find(|i| hit(&i.span))
            .map(Target::Import)
    }

    /// Every use of a definition.
    pub fn references<'a>(&'a self, def: &'a Def) -> impl Iterator<Item = &'a Ref> + 'a {
        self.refs.iter().filter(move |r| {
            r.name == def.name
                && self
                    .resolve(r)
                    .is_some_and(|d| d.kind == def.kind && d.name_span == def.name_span)
        })
    }

    fn def(&mut self, name: &Ident, kind: SymKind, span: Span) {
        self.defs.push(Def {
            name: name.name.clone(),
            kind,
            name_span: name.span,
            span,
        });
    }

    fn use_(&mut self, name: &Ident, ctx: RefCtx) {
        self.refs.push(Ref {
            name: name.name.clone(),
            span: name.span,
            ctx,
        });
    }

    fn label(&mut self, k: &Label, v: Option<&Label>) {
        let vals = self.labels.entry(k.text.clone()).or_default();
        if let Some(v) = v {
            vals.insert(v.text.clone());
        }
    }

    fn item(&mut self, item: &Item, importer: &Path, stdlib: Option<&Path>) {
        match item {
            Item::Import(i) => {
                if let Some(target) = import_target(i, importer, stdlib) {
                    self.imports.push(ImportRef {
                        span: i.span,
                        target,
                    });
                }
            }
            Item::Selector(s) => {
                self.def(&s.name, SymKind::Selector, s.span);
                self.sel(&s.expr, RefCtx::Peer);
            }
            Item::Set(s) => {
                self.def(&s.name, SymKind::Set, s.span);
                self.set(&s.expr, RefCtx::Peer);
            }
            // Node names are no symbols yet; their labels are node labels.
            Item::Node(_) => {}
            Item::Endpoint(e) => {
                self.def(&e.name, SymKind::Endpoint, e.span);
                for (k, v) in &e.labels {
                    self.label(k, Some(v));
                }
                // A declared port is its `port:NAME/PROTO` label (language.md
                // §3), so completion finds it even when the check failed.
                for p in &e.ports {
                    self.labels
                        .entry(format!(
                            "{}{}/{}",
                            weir_compiler::named_ports::PREFIX,
                            p.name.text,
                            p.proto.0.keyword()
                        ))
                        .or_default()
                        .insert(p.port.value.to_string());
                }
            }
            // A namespace's labels are not endpoint labels: not offered
            // as completions of endpoint selectors.
            Item::Namespace(_) => {}
            Item::Service(s) => {
                self.def(&s.name, SymKind::Service, s.span);
                for it in &s.items {
                    if let ServiceItem::Backends(Backends::Select { selector, .. }) = it {
                        self.sel(selector, RefCtx::Peer);
                    }
                }
            }
            Item::Tier(t) => self.def(&t.name, SymKind::Tier, t.span),
            Item::Policy(p) => {
                self.def(&p.name, SymKind::Policy, p.span);
                if let Some(t) = &p.tier {
                    self.use_(t, RefCtx::Tier);
                }
                for it in &p.items {
                    match it {
                        PolicyItem::AppliesTo(s, _) => self.sel(s, RefCtx::Peer),
                        PolicyItem::Rules(b) => {
                            for r in &b.rules {
                                for p in r.from.iter().chain(&r.to) {
                                    self.peer(p, RefCtx::Peer);
                                }
                            }
                        }
                    }
                }
            }
            Item::Steer(s) => {
                self.def(&s.name, SymKind::Steer, s.span);
                for r in &s.rules {
                    for p in r.from.iter().chain(&r.to) {
                        self.peer(p, RefCtx::Peer);
                    }
                }
            }
            Item::Test(t) => {
                self.defs.push(Def {
                    name: t.name.clone(),
                    kind: SymKind::Test,
                    name_span: t.name_span,
                    span: t.span,
                });
                for e in &t.expects {
                    self.peer(&e.from, RefCtx::TestPeer);
                    self.peer(&e.to, RefCtx::TestPeer);
                    if let Some(by) = &e.by {
                        if by.name != "default" {
                            self.use_(by, RefCtx::By);
                        }
                    }
                }
            }
            Item::DefaultDeny(_) | Item::Inventory(_) => {}
        }
    }

    fn sel(&mut self, e: &SelExpr, ctx: RefCtx) {
        match e {
            SelExpr::Eq(k, v, _) | SelExpr::Ne(k, v, _) => self.label(k, Some(v)),
            SelExpr::In(k, vs, _) | SelExpr::NotIn(k, vs, _) => {
                self.label(k, None);
                for v in vs {
                    self.label(k, Some(v));
                }
            }
            SelExpr::Has(k, _) => self.label(k, None),
            SelExpr::Not(e, _) | SelExpr::Paren(e, _) | SelExpr::Namespace(e, _) => {
                self.sel(e, ctx)
            }
            SelExpr::And(a, b, _) | SelExpr::Or(a, b, _) => {
                self.sel(a, ctx);
                self.sel(b, ctx);
            }
            SelExpr::Name(i) => self.use_(i, ctx),
            SelExpr::All(_) | SelExpr::Error(_) => {}
        }
    }

    fn set(&mut self, e: &SetExpr, ctx: RefCtx) {
        let except = e.except.iter().flat_map(|(v, _)| v);
        for el in e.base.iter().chain(except) {
            if let SetElem::Name(n) = el {
                self.use_(n, ctx);
            }
        }
    }

    fn peer(&mut self, p: &Peer, ctx: RefCtx) {
        match p {
            // `nodes SEL` selects nodes, not endpoints.
            Peer::Any(_)
            | Peer::SelfEp(_)
            | Peer::World(None, _)
            | Peer::OwnNode(_)
            | Peer::Nodes(..) => {}
            Peer::Set(s) | Peer::World(Some(s), _) => self.set(s, ctx),
            Peer::Selector(s) => self.sel(s, ctx),
            Peer::Labels(pairs, _) => {
                for (k, v) in pairs {
                    self.label(k, Some(v));
                }
            }
        }
    }
}

/// The file an import loads (the checker's rule, docs/language.md
/// §"Imports").
pub fn import_target(i: &Import, importer: &Path, stdlib: Option<&Path>) -> Option<PathBuf> {
    let segs: Vec<&str> = i.path.iter().map(|s| s.name.as_str()).collect();
    let (dir, rel): (PathBuf, &[&str]) = if segs.first() == Some(&"std") {
        (stdlib?.to_path_buf(), &segs[1..])
    } else {
        (importer.parent()?.to_path_buf(), &segs[..])
    };
    if rel.is_empty() {
        return None;
    }
    let rel: PathBuf = rel.iter().collect();
    Some(weir_compiler::source::normalize(
        &dir.join(rel).with_extension("weir"),
    ))
}

/// The analysis of one open document.
pub struct Analysis {
    pub root_id: FileId,
    pub checked: Checked,
    pub index: Index,
    /// Every file the program loaded (for re-checking on changes).
    pub loaded: BTreeSet<PathBuf>,
}

impl Analysis {
    pub fn run(root: &Path, docs: &Documents, stdlib: Option<PathBuf>) -> Analysis {
        Analysis::new(root, docs, stdlib, true)
    }

    /// The checker only (no decision graph): enough for names and uses,
    /// as find-references needs for files that are not open.
    pub fn checked_only(root: &Path, docs: &Documents, stdlib: Option<PathBuf>) -> Analysis {
        Analysis::new(root, docs, stdlib, false)
    }

    fn new(root: &Path, docs: &Documents, stdlib: Option<PathBuf>, graph: bool) -> Analysis {
        let loader = OverlayLoader {
            docs,
            stdlib: stdlib.clone(),
        };
        if !graph {
            let checked = check_program(&[root.to_path_buf()], &loader, None);
            return Analysis::of(root, checked, stdlib);
        }
        // The driver: the checker's diagnostics plus the decision graph's
        // (W04xx), exactly what `weir check` reports. An internal compiler
        // error while building the graph must not take the server down.
        let path = root.to_path_buf();
        let checked = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            weir_compiler::driver::analyze(std::slice::from_ref(&path), &loader, None).checked
        })) {
            Ok(c) => c,
            Err(_) => {
                eprintln!(
                    "weir lsp: internal error while analysing {}",
                    root.display()
                );
                check_program(&[root.to_path_buf()], &loader, None)
            }
        };
        Analysis::of(root, checked, stdlib)
    }

    fn of(root: &Path, checked: Checked, stdlib: Option<PathBuf>) -> Analysis {
        let root_id = checked.sources.id_of(root).unwrap_or(FileId(0));
        let index = Index::build(&checked, stdlib.as_deref());
        let loaded = checked
            .sources
            .iter()
            .map(|(_, f)| f.path.clone())
            .collect();
        Analysis {
            root_id,
            checked,
            index,
            loaded,
        }
    }

    /// The file id of a path in this program.
    pub fn file_id(&self, path: &Path) -> Option<FileId> {
        self.checked.sources.id_of(path)
    }

    pub fn ast(&self, id: FileId) -> Option<&File> {
        self.checked
            .files
            .iter()
            .find(|f| f.id == id)
            .map(|f| &f.ast)
    }
}
