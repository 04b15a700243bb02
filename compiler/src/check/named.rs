//! Named selectors and sets, resolved without recursing along chains of
//! names.
//!
//! Why: a program may chain thousands of definitions (`selector s1 = s2`,
//! `s2 = s3`, ...). Resolving a name by recursing into the next one puts
//! one stack frame per link on the stack and aborts the process (the
//! language server too: a stack overflow cannot be caught). Here a name is
//! resolved by a depth-first walk over an explicit stack of definitions:
//! the names a definition refers to are resolved first, then its own
//! expression, whose names are then all memoised. Expressions themselves
//! are shallow (the parser bounds their nesting).
//!
//! One memo serves selectors and sets (they share one namespace); a name
//! met again while it is still on the walk's stack closes a cycle (E0207
//! for selectors, E0208 for sets). A selector that inlining makes deeper
//! than [`MAX_SELECTOR_DEPTH`] is refused (E0013): every later pass walks
//! selectors recursively.

use super::{Cx, Memo, PeerDecl};
use crate::diagnostics::Kind;
use crate::model::{AddrSet, Sel};
use weir_grammar::ast::{self, SelExpr, SetElem};
use weir_grammar::Span;

/// The deepest selector inlining may build: deep enough for any selector
/// a person writes, shallow enough for every recursive pass over the
/// model (the interpreter, the lints, `Clone` and `Drop`) on a 2 MiB
/// thread stack in a debug build.
pub(crate) const MAX_SELECTOR_DEPTH: usize = 1024;

/// A resolved named definition.
#[derive(Debug, Clone)]
pub(crate) enum Named {
    /// The selector and its depth (a leaf is 1).
    Sel(Sel, usize),
    Set(AddrSet),
}

/// A definition on the walk's stack.
struct Frame<'a> {
    name: String,
    /// The reference that led here.
    via: Span,
    decl: PeerDecl<'a>,
    /// Names of the same kind its expression refers to, in source order.
    deps: Vec<(String, Span)>,
    next: usize,
}

fn decl_name<'a>(d: PeerDecl<'a>) -> &'a ast::Ident {
    match d {
        PeerDecl::Selector(d) => &d.name,
        PeerDecl::Set(d) => &d.name,
    }
}

impl<'a> Cx<'a> {
    /// Resolves a named selector (memoized; cycles are E0207).
    pub(super) fn named_sel(&mut self, d: &'a ast::SelectorDecl, via: Span) -> Option<Sel> {
        match self.named(PeerDecl::Selector(d), via)? {
            Named::Sel(s, _) => Some(s),
            Named::Set(_) => None,
        }
    }

    /// Resolves a named set (memoized; cycles are E0208).
    pub(super) fn named_set(&mut self, d: &'a ast::SetDecl, via: Span) -> Option<AddrSet> {
        match self.named(PeerDecl::Set(d), via)? {
            Named::Set(s) => Some(s),
            Named::Sel(..) => None,
        }
    }

    /// Resolves `decl` and every definition it reaches, deepest first.
    fn named(&mut self, decl: PeerDecl<'a>, via: Span) -> Option<Named> {
        let name = decl_name(decl).name.clone();
        if self.memo.contains_key(&name) {
            return self.memoised(&name);
        }
        self.memo.insert(name.clone(), Memo::Visiting);
        let mut stack = vec![self.frame(decl, via)];
        while let Some(top) = stack.last_mut() {
            if let Some((dep, span)) = top.deps.get(top.next).cloned() {
                top.next += 1;
                match self.memo.get(&dep) {
                    Some(Memo::Done(_)) => {}
                    Some(Memo::Visiting) => self.cycle(&stack, &dep, span),
                    None => {
                        let d = self.peers[&dep];
                        self.memo.insert(dep, Memo::Visiting);
                        stack.push(self.frame(d, span));
                    }
                }
                continue;
            }
            let f = stack.pop().expect("the stack is not empty");
            if matches!(self.memo.get(&f.name), Some(Memo::Visiting)) {
                // Not on a cycle: its names are all resolved.
                let r = self.evaluate(f.decl);
                self.memo.insert(f.name, Memo::Done(r));
            }
        }
        self.memoised(&name)
    }

    fn memoised(&self, name: &str) -> Option<Named> {
        match self.memo.get(name) {
            Some(Memo::Done(r)) => r.clone(),
            _ => None,
        }
    }

    fn frame(&self, decl: PeerDecl<'a>, via: Span) -> Frame<'a> {
        let mut deps = Vec::new();
        let mut dep = |id: &ast::Ident, selector: bool| {
            let same = matches!(
                (self.peers.get(&id.name), selector),
                (Some(PeerDecl::Selector(_)), true) | (Some(PeerDecl::Set(_)), false)
            );
            if same {
                deps.push((id.name.clone(), id.span));
            }
        };
        match decl {
            PeerDecl::Selector(d) => {
                let mut todo = vec![&d.expr];
                while let Some(e) = todo.pop() {
                    match e {
                        SelExpr::Not(x, _) | SelExpr::Paren(x, _) => todo.push(x),
                        SelExpr::And(a, b, _) | SelExpr::Or(a, b, _) => {
                            todo.push(b);
                            todo.push(a);
                        }
                        SelExpr::Name(id) => dep(id, true),
                        _ => {}
                    }
                }
            }
            PeerDecl::Set(d) => {
                let except = d.expr.except.iter().flat_map(|(x, _)| x);
                for e in d.expr.base.iter().chain(except) {
                    if let SetElem::Name(id) = e {
                        dep(id, false);
                    }
                }
            }
        }
        Frame {
            name: decl_name(decl).name.clone(),
            via,
            decl,
            deps,
            next: 0,
        }
    }

    /// Resolves one definition whose names are all memoised.
    fn evaluate(&mut self, decl: PeerDecl<'a>) -> Option<Named> {
        match decl {
            PeerDecl::Selector(d) => {
                let sel = self.sel(&d.expr)?;
                let depth = self.sel_depth(&d.expr);
                if depth > MAX_SELECTOR_DEPTH {
                    self.report(Kind::SelectorTooDeep {
                        span: d.name.span,
                        name: d.name.name.clone(),
                        depth,
                        limit: MAX_SELECTOR_DEPTH,
                    });
                    return None;
                }
                Some(Named::Sel(sel, depth))
            }
            PeerDecl::Set(d) => self.set_expr(&d.expr).map(Named::Set),
        }
    }

    /// The depth of the selector `e` resolves to (its names memoised).
    fn sel_depth(&self, e: &SelExpr) -> usize {
        match e {
            SelExpr::Not(x, _) => 1 + self.sel_depth(x),
            SelExpr::Paren(x, _) => self.sel_depth(x),
            SelExpr::And(a, b, _) | SelExpr::Or(a, b, _) => {
                1 + self.sel_depth(a).max(self.sel_depth(b))
            }
            SelExpr::Name(id) => match self.memo.get(&id.name) {
                Some(Memo::Done(Some(Named::Sel(_, d)))) => *d,
                _ => 1,
            },
            _ => 1,
        }
    }

    /// Reports the cycle closed by a reference to `dep` (on the stack) at
    /// `closing`; every definition on it resolves to nothing.
    fn cycle(&mut self, stack: &[Frame<'a>], dep: &str, closing: Span) {
        let pos = stack.iter().position(|f| f.name == dep).unwrap_or(0);
        // Each element's span is the reference leading to the next.
        let through: Vec<(String, Span)> = (pos..stack.len())
            .map(|i| {
                let next = stack.get(i + 1).map_or(closing, |f| f.via);
                (stack[i].name.clone(), next)
            })
            .collect();
        for (n, _) in &through {
            self.memo.insert(n.clone(), Memo::Done(None));
        }
        let name = dep.to_string();
        self.report(match stack[pos].decl {
            PeerDecl::Selector(d) => Kind::SelectorCycle {
                span: d.name.span,
                name,
                through,
            },
            PeerDecl::Set(d) => Kind::SetCycle {
                span: d.name.span,
                name,
                through,
            },
        });
    }
}
