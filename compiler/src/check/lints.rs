//! Warnings over the finished model (W03xx). Only diagnostics whose
//! primary span is in a root file are kept (see `check_program`), so the
//! standard library's unused definitions never warn in user programs.

use super::{Cx, PeerDecl};
use crate::diagnostics::Kind;
use crate::endpoint_index::EndpointIndex;
use crate::model::{Action, Direction, Model};

pub(super) fn run(cx: &mut Cx<'_>, model: &Model) {
    // Selectors are evaluated through the label index (posting lists),
    // not endpoint by endpoint.
    let index = EndpointIndex::new(&model.endpoints);
    // W0301: selectors and sets never referenced.
    let unused: Vec<Kind> = cx
        .peers
        .iter()
        .filter(|(name, d)| !cx.used.contains(*name) && cx.is_root(d.name_span().file))
        .map(|(name, d)| Kind::Unused {
            span: d.name_span(),
            kind: d.kind(),
            name: name.clone(),
        })
        .collect();
    cx.diags.extend(unused);

    let have_endpoints = !model.endpoints.is_empty();

    // The endpoints each policy applies to, selected once (W0306, W0304).
    let selected: Vec<Vec<u32>> = model
        .policies
        .iter()
        .map(|p| index.select(&p.applies_to))
        .collect();

    // W0306: ICMP rules of the other address family.
    super::icmp_family::run(cx, model, &index, &selected);

    // W0310 / W0311: named ports no endpoint declares (for the protocol).
    super::port_names::run(cx, model);

    // W0325: namespace tests no declared namespace satisfies.
    cx.namespace_lints(model);

    // W0302: selectors that match no declared endpoint.
    if have_endpoints {
        let mut out = Vec::new();
        for (name, d) in &cx.peers {
            if let PeerDecl::Selector(s) = d {
                if let Some(sel) = model.named_selectors.get(name) {
                    if !index.matches_any(sel) {
                        out.push(Kind::MatchesNothing {
                            span: s.name.span,
                            what: format!("selector `{name}`"),
                        });
                    }
                }
            }
        }
        for u in &cx.sel_uses {
            if u.what.starts_with("backends of service") {
                continue; // W0305 below
            }
            if u.what.starts_with("`applies to`") {
                continue; // W0403, from the decision graph (crate::driver)
            }
            if !index.matches_any(&u.sel) {
                out.push(Kind::MatchesNothing {
                    span: u.span,
                    what: u.what.clone(),
                });
            }
        }
        cx.diags.extend(out);
    }

    // W0305: services whose backend selector matches no endpoint.
    if have_endpoints {
        for s in &model.services {
            if let crate::model::BackendSource::Select { selector, .. } = &s.backends {
                if !index.matches_any(selector) {
                    if let Some(d) = cx.services.get(&s.name) {
                        let span = d
                            .items
                            .iter()
                            .find_map(|i| match i {
                                weir_grammar::ast::ServiceItem::Backends(
                                    weir_grammar::ast::Backends::Select { selector, .. },
                                ) => Some(selector.span()),
                                _ => None,
                            })
                            .unwrap_or(d.name.span);
                        cx.diags.push(Kind::ServiceSelectsNothing {
                            span,
                            service: s.name.clone(),
                        });
                    }
                }
            }
        }
    }

    // W0304: a policy that selects endpoints for a direction in which no
    // policy selecting them has any rule that lets traffic through.
    // Audit policies are left out on both counts: they turn nothing on,
    // and their allow rules open nothing.
    // `open[dir]`: endpoints selected by some policy with an allow or
    // pass rule in that direction.
    // Each policy's endpoints are selected once (`selected`); `open` is a
    // flag per endpoint (a running union of sorted lists was quadratic in
    // the number of policies).
    let n = model.endpoints.len();
    let mut open = [vec![false; n], vec![false; n]];
    for (side, dir) in [Direction::Ingress, Direction::Egress]
        .into_iter()
        .enumerate()
    {
        for (q, ids) in model.policies.iter().zip(&selected) {
            // A policy of a `default pass` tier lets through what it does
            // not decide: it goes on to the next tier.
            if !q.audit
                && q.rules(dir).is_some_and(|rs| {
                    model.tiers[q.tier].default_pass
                        || rs
                            .iter()
                            .any(|r| matches!(r.action, Action::Allow | Action::Pass))
                })
            {
                for &i in ids {
                    open[side][i as usize] = true;
                }
            }
        }
    }
    for (p, ids) in model.policies.iter().zip(&selected) {
        for (side, dir) in [Direction::Ingress, Direction::Egress]
            .into_iter()
            .enumerate()
        {
            if p.rules(dir).is_none() || p.audit || model.tiers[p.tier].default_pass {
                continue;
            }
            let denied: Vec<String> = ids
                .iter()
                .filter(|&&i| !open[side][i as usize])
                .map(|&i| model.endpoints[i as usize].name.clone())
                .collect();
            if !denied.is_empty() {
                cx.diags.push(Kind::DefaultDenyTurnedOn {
                    span: p.name_span,
                    policy: p.name.clone(),
                    direction: dir,
                    endpoints: denied,
                });
            }
        }
    }
}
