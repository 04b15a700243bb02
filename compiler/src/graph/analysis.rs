//! Static analysis from the graph (W04xx).
//!
//! The lowering records which rules got a "match" branch anywhere
//! ([`LowerInfo`]); because it prunes by the exact set of classes a peer
//! can still be in, a rule without one can never decide, pass or log
//! anything. This module turns that into findings:
//!
//! - **W0401** a policy rule that never takes effect, with a secondary
//!   label on the earlier rule that shadows it (the first earlier rule on
//!   the same path whose protocol, ports and peer classes contain it);
//! - **W0402** two rules of different policies at the same tier and
//!   priority that overlap (some packet matches both) with different
//!   actions — which one wins depends only on the policies' names;
//! - **W0403** a policy whose `applies to` selects no endpoint;
//! - **W0404** a steering rule that is never the first match, with the
//!   shadowing steering rule as secondary label.
//!
//! Findings are data; the diagnostics module words them.

use super::bits::Bits;
use super::classes::Classes;
use super::lower::LowerInfo;
use crate::model::{Action, Direction, Model, PeerMatch, PolicyId, ProtoMatch};
use crate::provenance::{Provenance, ProvenanceTable};
use serde::Serialize;
use std::collections::BTreeSet;
use weir_grammar::Span;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum FindingKind {
    /// W0401.
    ShadowedRule {
        policy: PolicyId,
        dir: Direction,
        index: usize,
        /// The shadowing rule `(policy, index)` (same direction), if one
        /// rule alone covers it.
        by: Option<(PolicyId, usize)>,
    },
    /// W0402: rule `index` of `policy` conflicts with `other`'s rule.
    Conflict {
        policy: PolicyId,
        dir: Direction,
        index: usize,
        other: PolicyId,
        other_index: usize,
    },
    /// W0403.
    SelectsNothing { policy: PolicyId },
    /// W0404.
    ShadowedSteer {
        steer: usize,
        index: usize,
        by: Option<(usize, usize)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GraphFinding {
    /// "W0401" … "W0404".
    pub code: &'static str,
    pub kind: FindingKind,
    pub primary: Span,
    /// Secondary spans with a short label.
    pub secondary: Vec<(Span, String)>,
}

/// Does protocol part `a` match every packet `b` matches?
pub fn proto_covers(a: &ProtoMatch, b: &ProtoMatch) -> bool {
    match (a, b) {
        (ProtoMatch::Any, _) => true,
        (
            ProtoMatch::Ports {
                proto: p,
                ports: pa,
            },
            ProtoMatch::Ports {
                proto: q,
                ports: pb,
            },
        ) => {
            p == q
                && (pa.is_empty()
                    || (!pb.is_empty()
                        && pb
                            .iter()
                            .all(|r| pa.iter().any(|s| s.lo <= r.lo && r.hi <= s.hi))))
        }
        (
            ProtoMatch::Icmp {
                proto: p,
                ty: t1,
                code: c1,
            },
            ProtoMatch::Icmp {
                proto: q,
                ty: t2,
                code: c2,
            },
        ) => p == q && t1.is_none_or(|t| Some(t) == *t2) && c1.is_none_or(|c| Some(c) == *c2),
        // A named port is some port of its protocol, which one depending on
        // the destination: only every port of it, or the same name, covers it.
        (ProtoMatch::Ports { proto: p, ports }, ProtoMatch::Named { proto: q, .. }) => {
            p == q && ports.is_empty()
        }
        (ProtoMatch::Named { proto: p, name: n }, ProtoMatch::Named { proto: q, name: m }) => {
            p == q && n == m
        }
        _ => false,
    }
}

/// Is there a packet both protocol parts match?
pub fn proto_overlaps(a: &ProtoMatch, b: &ProtoMatch) -> bool {
    match (a, b) {
        (ProtoMatch::Any, _) | (_, ProtoMatch::Any) => true,
        (
            ProtoMatch::Ports {
                proto: p,
                ports: pa,
            },
            ProtoMatch::Ports {
                proto: q,
                ports: pb,
            },
        ) => {
            p == q
                && (pa.is_empty()
                    || pb.is_empty()
                    || pa
                        .iter()
                        .any(|r| pb.iter().any(|s| r.lo <= s.hi && s.lo <= r.hi)))
        }
        (
            ProtoMatch::Icmp {
                proto: p,
                ty: t1,
                code: c1,
            },
            ProtoMatch::Icmp {
                proto: q,
                ty: t2,
                code: c2,
            },
        ) => {
            p == q
                && (t1.is_none() || t2.is_none() || t1 == t2)
                && (c1.is_none() || c2.is_none() || c1 == c2)
        }
        (ProtoMatch::Named { proto: p, .. }, ProtoMatch::Ports { proto: q, .. })
        | (ProtoMatch::Ports { proto: q, .. }, ProtoMatch::Named { proto: p, .. })
        | (ProtoMatch::Named { proto: p, .. }, ProtoMatch::Named { proto: q, .. }) => p == q,
        _ => false,
    }
}

/// The classes a peer matches; `self` and `node` (which depend on the
/// subject) count as matching none, so no finding rests on them.
fn peer_classes(cl: &Classes, p: &PeerMatch) -> Bits {
    cl.peer_classes(cl.peer_test(p))
}

/// Analyse a lowered model.
pub fn analyze(model: &Model, classes: &Classes, info: &LowerInfo) -> Vec<GraphFinding> {
    let mut out = Vec::new();
    let selects_something = selects_nothing(model, classes, &mut out);
    shadowed_rules(model, classes, info, &selects_something, &mut out);
    conflicts(model, classes, info, &mut out);
    shadowed_steers(model, classes, info, &mut out);
    out.sort_by(|a, b| (a.primary, a.code).cmp(&(b.primary, b.code)));
    out
}

/// W0403: policies whose `applies to` selects no endpoint. Returns, per
/// policy, whether it selects something.
fn selects_nothing(model: &Model, classes: &Classes, out: &mut Vec<GraphFinding>) -> Vec<bool> {
    let mut selects_something = vec![false; model.policies.len()];
    for (pid, p) in model.policies.iter().enumerate() {
        let a = classes
            .atom_id(&super::classes::Atom::Sel(p.applies_to.clone()))
            .expect("applies-to selectors are atoms");
        selects_something[pid] = !classes.classes_with(a).is_empty();
        // Like W0302: a program without endpoints (a library checked on
        // its own) selects nothing by construction; say nothing then.
        if !selects_something[pid] && !model.endpoints.is_empty() {
            out.push(GraphFinding {
                code: "W0403",
                kind: FindingKind::SelectsNothing { policy: pid },
                primary: p.name_span,
                secondary: Vec::new(),
            });
        }
    }
    selects_something
}

/// W0401: rules of policies that select something which no packet
/// reaches, with the earlier rule that decides all of them when one does.
fn shadowed_rules(
    model: &Model,
    classes: &Classes,
    info: &LowerInfo,
    selects_something: &[bool],
    out: &mut Vec<GraphFinding>,
) {
    let prov = ProvenanceTable::new(model);
    // The first chain of each direction that holds each policy, found in
    // one pass (a search per policy was quadratic: 100,000 one-peer
    // policies each on a chain of its own).
    let mut first_chain: rustc_hash::FxHashMap<(Direction, PolicyId), usize> =
        rustc_hash::FxHashMap::default();
    for (i, (d, pols, _)) in info.chains.iter().enumerate() {
        for &q in pols {
            first_chain.entry((*d, q)).or_insert(i);
        }
    }
    for (pid, p) in model.policies.iter().enumerate() {
        if !selects_something[pid] {
            continue;
        }
        for dir in [Direction::Ingress, Direction::Egress] {
            let Some(rules) = p.rules(dir) else { continue };
            let chain = first_chain.get(&(dir, pid)).map(|&i| &info.chains[i]);
            let Some((_, pols, _)) = chain else { continue };
            for (index, r) in rules.iter().enumerate() {
                let id = prov.id(&Provenance::Rule {
                    policy: pid,
                    dir,
                    index,
                });
                if info.live_rules.contains(&id) {
                    continue;
                }
                let mine = peer_classes(classes, &r.peer);
                if mine.is_empty() {
                    continue; // matches no address at all: the checker's W0302
                }
                let by = shadowing_rule(model, classes, pols, (pid, dir, index), &mine);
                let secondary = by
                    .map(|(q, j)| {
                        let s = &model.policies[q].rules(dir).unwrap_or(&[])[j];
                        vec![(
                            s.span,
                            "this earlier rule matches every packet it would".to_string(),
                        )]
                    })
                    .unwrap_or_default();
                out.push(GraphFinding {
                    code: "W0401",
                    kind: FindingKind::ShadowedRule {
                        policy: pid,
                        dir,
                        index,
                        by,
                    },
                    primary: r.span,
                    secondary,
                });
            }
        }
    }
}

/// The first rule before rule `index` of policy `pid` on the chain
/// `pols` (in evaluation order) that decides every packet the rule
/// matches (`mine`: its peer's classes).
fn shadowing_rule(
    model: &Model,
    classes: &Classes,
    pols: &[PolicyId],
    (pid, dir, index): (PolicyId, Direction, usize),
    mine: &Bits,
) -> Option<(PolicyId, usize)> {
    let p = &model.policies[pid];
    let r = &p.rules(dir).unwrap_or(&[])[index];
    for &q in pols {
        let qp = &model.policies[q];
        for (j, s) in qp.rules(dir).unwrap_or(&[]).iter().enumerate() {
            if q == pid && j == index {
                return None;
            }
            let decides = matches!(s.action, Action::Allow | Action::Deny)
                || (s.action == Action::Pass && qp.tier == p.tier);
            if decides
                && proto_covers(&s.proto, &r.proto)
                && mine.is_subset(&peer_classes(classes, &s.peer))
            {
                return Some((q, j));
            }
        }
    }
    None
}

/// W0402: allow and deny rules of two policies at the same tier and
/// priority on one chain that match a common packet.
fn conflicts(model: &Model, classes: &Classes, info: &LowerInfo, out: &mut Vec<GraphFinding>) {
    let mut seen: BTreeSet<(PolicyId, PolicyId, Direction)> = BTreeSet::new();
    for (dir, pols, _) in &info.chains {
        for (i, &a) in pols.iter().enumerate() {
            for &b in &pols[i + 1..] {
                let (pa, pb) = (&model.policies[a], &model.policies[b]);
                if pa.tier != pb.tier || pa.priority != pb.priority || !seen.insert((a, b, *dir)) {
                    continue;
                }
                let (ra, rb) = (pa.rules(*dir).unwrap_or(&[]), pb.rules(*dir).unwrap_or(&[]));
                for (jb, sb) in rb.iter().enumerate() {
                    let hit = ra.iter().enumerate().find(|(_, sa)| {
                        matches!(
                            (sa.action, sb.action),
                            (Action::Allow, Action::Deny) | (Action::Deny, Action::Allow)
                        ) && proto_overlaps(&sa.proto, &sb.proto)
                            && peer_classes(classes, &sa.peer)
                                .intersects(&peer_classes(classes, &sb.peer))
                    });
                    if let Some((ja, sa)) = hit {
                        out.push(GraphFinding {
                            code: "W0402",
                            kind: FindingKind::Conflict {
                                policy: b,
                                dir: *dir,
                                index: jb,
                                other: a,
                                other_index: ja,
                            },
                            primary: sb.span,
                            secondary: vec![(
                                sa.span,
                                "conflicting rule at the same priority".to_string(),
                            )],
                        });
                    }
                }
            }
        }
    }
}

/// W0404: steering rules no packet reaches, with the earlier steering
/// rule that matches all of their packets when one does.
fn shadowed_steers(
    model: &Model,
    classes: &Classes,
    info: &LowerInfo,
    out: &mut Vec<GraphFinding>,
) {
    let steer_rules: Vec<(usize, usize)> = model
        .steers
        .iter()
        .enumerate()
        .flat_map(|(s, st)| (0..st.rules.len()).map(move |i| (s, i)))
        .collect();
    for (k, &(s, i)) in steer_rules.iter().enumerate() {
        if info.live_steer.contains(&(s, i)) {
            continue;
        }
        let r = &model.steers[s].rules[i];
        let (f, t) = (peer_classes(classes, &r.from), peer_classes(classes, &r.to));
        if f.is_empty() || t.is_empty() {
            continue;
        }
        let by = steer_rules[..k].iter().copied().find(|&(s2, i2)| {
            let e = &model.steers[s2].rules[i2];
            proto_covers(&e.proto, &r.proto)
                && f.is_subset(&peer_classes(classes, &e.from))
                && t.is_subset(&peer_classes(classes, &e.to))
        });
        out.push(GraphFinding {
            code: "W0404",
            kind: FindingKind::ShadowedSteer {
                steer: s,
                index: i,
                by,
            },
            primary: r.span,
            secondary: by
                .map(|(s2, i2)| {
                    vec![(
                        model.steers[s2].rules[i2].span,
                        "this earlier steering rule matches every packet it would".to_string(),
                    )]
                })
                .unwrap_or_default(),
        });
    }
}
