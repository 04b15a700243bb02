//! Graph-level findings (W04xx) as diagnostics: the graph's analysis
//! reports rule ids; this names the rules so the message module can word
//! them.

use super::messages::Kind;
use super::Diagnostic;
use crate::graph::analysis::{FindingKind, GraphFinding};
use crate::model::Model;
use crate::provenance::{dir_name, Provenance};

fn rule_name(model: &Model, policy: usize, dir: crate::model::Direction, index: usize) -> String {
    format!(
        "rule #{} of policy `{}` ({})",
        index + 1,
        model.policies[policy].name,
        dir_name(dir)
    )
}

fn steer_name(model: &Model, steer: usize, index: usize) -> String {
    format!(
        "rule #{} of steer `{}`",
        index + 1,
        model.steers[steer].name
    )
}

/// Turn graph findings into diagnostics.
pub fn diagnostics(model: &Model, findings: &[GraphFinding]) -> Vec<Diagnostic> {
    findings
        .iter()
        .map(|f| {
            let kind = match &f.kind {
                FindingKind::ShadowedRule {
                    policy,
                    dir,
                    index,
                    by,
                } => Kind::ShadowedRule {
                    span: f.primary,
                    rule: rule_name(model, *policy, *dir, *index),
                    by: by.and_then(|(p, i)| {
                        Provenance::Rule {
                            policy: p,
                            dir: *dir,
                            index: i,
                        }
                        .span(model)
                        .map(|s| (s, rule_name(model, p, *dir, i)))
                    }),
                },
                FindingKind::Conflict {
                    policy,
                    dir,
                    index,
                    other,
                    other_index,
                } => {
                    let first = if model.policies[*policy].name < model.policies[*other].name {
                        policy
                    } else {
                        other
                    };
                    Kind::RuleConflict {
                        span: f.primary,
                        rule: rule_name(model, *policy, *dir, *index),
                        other_span: Provenance::Rule {
                            policy: *other,
                            dir: *dir,
                            index: *other_index,
                        }
                        .span(model)
                        .unwrap_or(f.primary),
                        other: rule_name(model, *other, *dir, *other_index),
                        priority: model.policies[*policy].priority,
                        winner: model.policies[*first].name.clone(),
                    }
                }
                FindingKind::SelectsNothing { policy } => Kind::PolicySelectsNothing {
                    span: f.primary,
                    policy: model.policies[*policy].name.clone(),
                },
                FindingKind::ShadowedSteer { steer, index, by } => Kind::ShadowedSteer {
                    span: f.primary,
                    rule: steer_name(model, *steer, *index),
                    by: by.map(|(s, i)| (model.steers[s].rules[i].span, steer_name(model, s, i))),
                },
            };
            kind.into_diagnostic()
        })
        .collect()
}
