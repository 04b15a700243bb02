//! The document outline.

use super::convert::range;
use lsp_types::{DocumentSymbol, SymbolKind};
use weir_compiler::source::SourceFile;
use weir_grammar::ast::{File, Item, PolicyItem};
use weir_grammar::Span;

#[allow(deprecated)] // `DocumentSymbol::deprecated` must be written out.
fn symbol(
    f: &SourceFile,
    name: String,
    detail: &str,
    kind: SymbolKind,
    span: Span,
    sel: Span,
    children: Vec<DocumentSymbol>,
) -> DocumentSymbol {
    DocumentSymbol {
        name,
        detail: Some(detail.to_string()),
        kind,
        tags: None,
        deprecated: None,
        range: range(f, span.start as usize, span.end as usize),
        selection_range: range(f, sel.start as usize, sel.end as usize),
        children: (!children.is_empty()).then_some(children),
    }
}

pub fn outline(f: &SourceFile, ast: &File) -> Vec<DocumentSymbol> {
    let mut out = Vec::new();
    for item in &ast.items {
        let s = match item {
            Item::Import(i) => {
                let path: Vec<&str> = i.path.iter().map(|p| p.name.as_str()).collect();
                symbol(
                    f,
                    path.join("."),
                    "import",
                    SymbolKind::MODULE,
                    i.span,
                    i.span,
                    vec![],
                )
            }
            Item::Inventory(i) => symbol(
                f,
                i.path.clone(),
                "inventory",
                SymbolKind::FILE,
                i.span,
                i.path_span,
                vec![],
            ),
            Item::Selector(s) => sym(f, &s.name, "selector", SymbolKind::VARIABLE, s.span),
            Item::Set(s) => sym(f, &s.name, "set", SymbolKind::VARIABLE, s.span),
            Item::Endpoint(e) => sym(f, &e.name, "endpoint", SymbolKind::OBJECT, e.span),
            Item::Node(n) => sym(f, &n.decl.name, "node", SymbolKind::OBJECT, n.decl.span),
            Item::Namespace(n) => sym(f, &n.name, "namespace", SymbolKind::NAMESPACE, n.span),
            Item::Service(s) => sym(f, &s.name, "service", SymbolKind::CLASS, s.span),
            Item::Tier(t) => sym(f, &t.name, "tier", SymbolKind::ENUM_MEMBER, t.span),
            Item::Policy(p) => {
                let children = p
                    .items
                    .iter()
                    .filter_map(|it| match it {
                        PolicyItem::Rules(b) => {
                            let name = format!("{:?}", b.direction).to_lowercase();
                            let n = b.rules.len();
                            let detail = format!("{n} rule{}", if n == 1 { "" } else { "s" });
                            Some(symbol(
                                f,
                                name,
                                &detail,
                                SymbolKind::NAMESPACE,
                                b.span,
                                b.span,
                                vec![],
                            ))
                        }
                        PolicyItem::AppliesTo(..) => None,
                    })
                    .collect();
                symbol(
                    f,
                    p.name.name.clone(),
                    "policy",
                    SymbolKind::MODULE,
                    p.span,
                    p.name.span,
                    children,
                )
            }
            Item::DefaultDeny(d) => symbol(
                f,
                "default deny".to_string(),
                "default",
                SymbolKind::PROPERTY,
                d.span,
                d.span,
                vec![],
            ),
            Item::Steer(s) => sym(f, &s.name, "steer", SymbolKind::MODULE, s.span),
            Item::Test(t) => symbol(
                f,
                t.name.clone(),
                "test",
                SymbolKind::EVENT,
                t.span,
                t.name_span,
                vec![],
            ),
        };
        out.push(s);
    }
    out
}

fn sym(
    f: &SourceFile,
    name: &weir_grammar::ast::Ident,
    detail: &str,
    kind: SymbolKind,
    span: Span,
) -> DocumentSymbol {
    symbol(f, name.name.clone(), detail, kind, span, name.span, vec![])
}
