//! The declaration table: one namespace per kind of thing (selectors and
//! sets share one), first definition wins, later ones are E0203.

use super::{Cx, PeerDecl};
use crate::diagnostics::{Kind, NameKind};
use std::collections::BTreeMap;
use weir_grammar::ast::{Ident, Item};
use weir_grammar::Span;

fn insert<T>(
    map: &mut BTreeMap<String, T>,
    diags: &mut Vec<Kind>,
    kind: NameKind,
    name: &Ident,
    value: T,
    first_span: impl Fn(&T) -> Span,
) {
    if let Some(prev) = map.get(&name.name) {
        diags.push(Kind::Duplicate {
            kind,
            name: name.name.clone(),
            span: name.span,
            first: first_span(prev),
        });
    } else {
        map.insert(name.name.clone(), value);
    }
}

impl<'a> Cx<'a> {
    /// Fills the declaration tables from every file.
    pub(super) fn collect(&mut self) {
        let mut test_names: BTreeMap<String, Span> = BTreeMap::new();
        let files = self.files;
        for f in files {
            for item in &f.ast.items {
                match item {
                    Item::Import(_) | Item::Inventory(_) => {}
                    Item::Selector(d) => insert(
                        &mut self.peers,
                        &mut self.diags,
                        NameKind::Selector,
                        &d.name,
                        PeerDecl::Selector(d),
                        PeerDecl::name_span,
                    ),
                    Item::Set(d) => insert(
                        &mut self.peers,
                        &mut self.diags,
                        NameKind::Set,
                        &d.name,
                        PeerDecl::Set(d),
                        PeerDecl::name_span,
                    ),
                    Item::Endpoint(d) => insert(
                        &mut self.endpoints,
                        &mut self.diags,
                        NameKind::Endpoint,
                        &d.name,
                        d,
                        |p| p.name.span,
                    ),
                    Item::Node(d) => insert(
                        &mut self.nodes,
                        &mut self.diags,
                        NameKind::Node,
                        &d.decl.name,
                        d,
                        |p| p.decl.name.span,
                    ),
                    Item::Namespace(d) => insert(
                        &mut self.namespaces,
                        &mut self.diags,
                        NameKind::Namespace,
                        &d.name,
                        d,
                        |p| p.name.span,
                    ),
                    Item::Service(d) => insert(
                        &mut self.services,
                        &mut self.diags,
                        NameKind::Service,
                        &d.name,
                        d,
                        |p| p.name.span,
                    ),
                    Item::Tier(d) => insert(
                        &mut self.tiers,
                        &mut self.diags,
                        NameKind::Tier,
                        &d.name,
                        d,
                        |p| p.name.span,
                    ),
                    Item::Policy(d) => insert(
                        &mut self.policies,
                        &mut self.diags,
                        NameKind::Policy,
                        &d.name,
                        d,
                        |p| p.name.span,
                    ),
                    Item::Steer(d) => insert(
                        &mut self.steers,
                        &mut self.diags,
                        NameKind::Steer,
                        &d.name,
                        d,
                        |p| p.name.span,
                    ),
                    Item::DefaultDeny(d) => self.default_denies.push(d),
                    Item::Test(t) => {
                        if f.root {
                            let ident = Ident {
                                name: t.name.clone(),
                                span: t.name_span,
                            };
                            let before = self.diags.len();
                            insert(
                                &mut test_names,
                                &mut self.diags,
                                NameKind::Test,
                                &ident,
                                t.name_span,
                                |s| *s,
                            );
                            if self.diags.len() == before {
                                self.tests.push(t);
                            }
                        }
                    }
                }
            }
        }
    }

    /// What a name is, if it is anything: for wrong-kind messages.
    pub(super) fn kind_of(&self, name: &str) -> Option<(NameKind, Span)> {
        if let Some(p) = self.peers.get(name) {
            return Some((p.kind(), p.name_span()));
        }
        if let Some(d) = self.endpoints.get(name) {
            return Some((NameKind::Endpoint, d.name.span));
        }
        if let Some(d) = self.services.get(name) {
            return Some((NameKind::Service, d.name.span));
        }
        if let Some(d) = self.policies.get(name) {
            return Some((NameKind::Policy, d.name.span));
        }
        if let Some(d) = self.steers.get(name) {
            return Some((NameKind::Steer, d.name.span));
        }
        if let Some(d) = self.tiers.get(name) {
            return Some((NameKind::Tier, d.name.span));
        }
        None
    }
}

impl PeerDecl<'_> {
    pub fn name_span(&self) -> Span {
        match self {
            PeerDecl::Selector(d) => d.name.span,
            PeerDecl::Set(d) => d.name.span,
        }
    }

    pub fn kind(&self) -> NameKind {
        match self {
            PeerDecl::Selector(_) => NameKind::Selector,
            PeerDecl::Set(_) => NameKind::Set,
        }
    }
}

/// Edit distance for suggestions: Damerau–Levenshtein (optimal string
/// alignment), so that swapping two neighbouring characters (`wbe` for
/// `web`) costs one edit, like an insertion, deletion or substitution.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Rows i-2, i-1 and i of the table.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 0..a.len() {
        let mut cur = vec![i + 1; b.len() + 1];
        for j in 0..b.len() {
            let sub = prev[j] + usize::from(a[i] != b[j]);
            let mut d = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
            if i > 0 && j > 0 && a[i] == b[j - 1] && a[i - 1] == b[j] {
                d = d.min(before[j - 1] + 1);
            }
            cur[j + 1] = d;
        }
        before = std::mem::replace(&mut prev, cur);
    }
    prev[b.len()]
}

/// The closest candidate to `name`, if it is close enough to be a typo.
pub fn suggest<'c>(name: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<String> {
    let limit = (name.chars().count() / 3).max(1);
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = distance(name, c);
        if d == 0 || d > limit {
            continue;
        }
        if best.is_none_or(|(bd, bc)| (d, c) < (bd, bc)) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(
            suggest("fronted", ["frontend", "api"]),
            Some("frontend".into())
        );
        assert_eq!(suggest("xyz", ["frontend", "api"]), None);
        assert_eq!(suggest("ap", ["api", "app"]), Some("api".into()));
        // A transposition is one edit.
        assert_eq!(distance("wbe", "web"), 1);
        assert_eq!(distance("ca", "abc"), 3);
        assert_eq!(suggest("wbe", ["web", "db"]), Some("web".into()));
    }
}
