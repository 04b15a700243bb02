//! Namespaces in the checker (docs/language.md §3 "Namespaces"): the
//! table of declared namespaces (program and inventory, a name declared
//! twice is E0203), an endpoint's `namespace NAME` (unknown: E0201; a
//! second one: E0277; a reserved `@namespace…` label: E0276) and the
//! selector `namespace(SEL)` (nested: E0275; satisfied by no declared
//! namespace: W0325). How a namespace is held — derived labels — is
//! [`crate::namespaces`].

use super::Cx;
use crate::diagnostics::{Kind, NameKind};
use crate::inventory::Inventory;
use crate::model::{Model, Sel};
use crate::namespaces;
use std::collections::BTreeMap;
use weir_grammar::ast::{self, SelExpr};
use weir_grammar::Span;

impl<'a> Cx<'a> {
    /// `namespace(e)`: the endpoint selector it stands for.
    pub(super) fn namespace_test(&mut self, e: &SelExpr, span: Span) -> Option<Sel> {
        let inner = self.sel(e)?;
        if namespaces::mentions(&inner) {
            self.report(Kind::NestedNamespaceTest { span });
            return None;
        }
        self.ns_tests.push((inner.clone(), span));
        Some(namespaces::test(&inner))
    }

    /// Every declared namespace and its labels: the program's, then the
    /// inventory's (a name in both is E0203). Kept for the endpoints.
    pub(super) fn namespace_table(
        &mut self,
        inventory: Option<&Inventory>,
    ) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut table = BTreeMap::new();
        let decls: Vec<&ast::NamespaceDecl> = self.namespaces.values().copied().collect();
        for d in decls {
            let labels = self.label_map(&d.labels);
            table.insert(d.name.name.clone(), labels);
        }
        for (name, (labels, span)) in inventory.map(|i| &i.namespaces).into_iter().flatten() {
            if let Some(d) = self.namespaces.get(name) {
                self.report(Kind::Duplicate {
                    kind: NameKind::Namespace,
                    name: name.clone(),
                    span: *span,
                    first: d.name.span,
                });
                continue;
            }
            table.insert(name.clone(), labels.clone());
        }
        self.ns_table = table.clone();
        table
    }

    /// A declared endpoint's namespace: its derived labels added to
    /// `labels` (after its own were checked for reserved keys).
    pub(super) fn endpoint_namespace(
        &mut self,
        d: &ast::EndpointDecl,
        labels: &mut BTreeMap<String, String>,
    ) {
        for (k, _) in &d.labels {
            if namespaces::is_reserved(&k.text) {
                self.report(Kind::ReservedNamespaceLabel {
                    span: k.span,
                    key: k.text.clone(),
                });
                labels.remove(&k.text);
            }
        }
        let Some(first) = d.namespace.first() else {
            return;
        };
        for again in &d.namespace[1..] {
            self.report(Kind::TwoNamespaces {
                span: again.span,
                first: first.span,
            });
        }
        let Some(ns_labels) = self.ns_table.get(&first.name) else {
            let suggestion = super::suggest(&first.name, self.ns_table.keys().map(String::as_str));
            self.report(Kind::UnknownName {
                span: first.span,
                name: first.name.clone(),
                expected: "namespace",
                suggestion,
            });
            return;
        };
        *labels = namespaces::derive(labels, &first.name, ns_labels);
    }

    /// W0325: namespace tests that no declared namespace satisfies.
    pub(super) fn namespace_lints(&mut self, model: &Model) {
        let mut out = Vec::new();
        for (inner, span) in &self.ns_tests {
            if self.is_root(span.file) && !model.namespaces.values().any(|l| inner.matches(l)) {
                out.push(Kind::NamespaceTestMatchesNone {
                    span: *span,
                    namespaces: model.namespaces.len(),
                });
            }
        }
        out.dedup();
        self.diags.extend(out);
    }
}
