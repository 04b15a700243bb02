//! Decision-graph findings (W04xx) for the editor.
//!
//! The checker's diagnostics come worded from the compiler's diagnostics
//! module; graph findings are data (`weir_compiler::graph::GraphFinding`)
//! that module does not word yet, so they are worded here, briefly, until
//! it does. Building the graph runs under `catch_unwind`: an internal
//! compiler error there must not take the server down.

use weir_compiler::check::Checked;
use weir_compiler::graph::analysis::FindingKind;
use weir_compiler::model::{Direction, Model};
use weir_grammar::Span;

#[derive(Debug, Clone)]
pub struct GraphDiagnostic {
    pub code: String,
    pub message: String,
    pub primary: Span,
    pub secondary: Vec<(Span, String)>,
}

fn dir(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

fn policy(m: &Model, id: usize) -> &str {
    m.policies.get(id).map_or("?", |p| p.name.as_str())
}

fn steer(m: &Model, id: usize) -> &str {
    m.steers.get(id).map_or("?", |s| s.name.as_str())
}

/// The W04xx findings of a checked program without errors.
pub fn findings(checked: &Checked) -> Vec<GraphDiagnostic> {
    let model = &checked.model;
    let compiled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        weir_compiler::graph::compile(model)
    }));
    let Ok(compiled) = compiled else {
        eprintln!("weir lsp: internal error while building the decision graph");
        return Vec::new();
    };
    compiled
        .findings
        .iter()
        .map(|f| {
            let message = match &f.kind {
                FindingKind::ShadowedRule {
                    policy: p,
                    dir: d,
                    index,
                    by,
                } => {
                    let mut s = format!(
                        "rule {} of the {} block of policy `{}` never takes effect",
                        index + 1,
                        dir(*d),
                        policy(model, *p)
                    );
                    if let Some((bp, bi)) = by {
                        s.push_str(&format!(
                            ": rule {} of policy `{}` matches everything it matches first",
                            bi + 1,
                            policy(model, *bp)
                        ));
                    }
                    s
                }
                FindingKind::Conflict {
                    policy: p,
                    dir: d,
                    index,
                    other,
                    other_index,
                } => format!(
                    "rule {} of policy `{}` ({}) overlaps rule {} of policy `{}` with a different action at the same tier and priority; the policy names decide which wins",
                    index + 1,
                    policy(model, *p),
                    dir(*d),
                    other_index + 1,
                    policy(model, *other)
                ),
                FindingKind::SelectsNothing { policy: p } => {
                    format!("policy `{}` applies to no endpoint", policy(model, *p))
                }
                FindingKind::ShadowedSteer { steer: s, index, by } => {
                    let mut m = format!(
                        "steering rule {} of `{}` is never the first match",
                        index + 1,
                        steer(model, *s)
                    );
                    if let Some((bs, bi)) = by {
                        m.push_str(&format!(
                            ": rule {} of `{}` matches first",
                            bi + 1,
                            steer(model, *bs)
                        ));
                    }
                    m
                }
            };
            GraphDiagnostic {
                code: f.code.to_string(),
                message,
                primary: f.primary,
                secondary: f.secondary.clone(),
            }
        })
        .collect()
}
