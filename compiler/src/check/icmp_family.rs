//! W0306: an `icmp` rule that can only see IPv6 packets, or an `icmp6`
//! rule that can only see IPv4 ones.
//!
//! `icmp` is ICMPv4 and `icmp6` ICMPv6, each in its own family only
//! (docs/language.md §4, "Headers"). Before `icmp6` existed, `icmp` also
//! meant ICMPv6, so `allow icmp` in a policy of IPv6-only endpoints was a
//! rule that let ICMPv6 through; after the change it matches nothing. The
//! lint finds the rules whose every packet is of the other family: the
//! peer is a set of that family's prefixes only, or a selector whose every
//! endpoint — at least one — has addresses of that family only, or
//! (policy rules) every endpoint the policy applies to has. It is a warning (the program still means something
//! exact), with a stable code so CI can refuse it (`--deny-warnings`).

use super::Cx;
use crate::diagnostics::Kind;
use crate::endpoint_index::EndpointIndex;
use crate::model::{Model, PeerMatch, Proto, ProtoMatch, Rule, SteerRule};

/// The family (`true`: IPv6) every address of the set is of, if one.
fn set_family(p: &PeerMatch) -> Option<bool> {
    let PeerMatch::Set(s) = p else { return None };
    let six = s.include.first()?.addr.is_ipv6();
    s.include
        .iter()
        .all(|c| c.addr.is_ipv6() == six)
        .then_some(six)
}

/// The family (`true`: IPv6) of every address of the endpoints `ids` —
/// at least one endpoint, each with an address — if they share one.
fn endpoints_family(model: &Model, ids: &[u32]) -> Option<bool> {
    if ids.is_empty() {
        return None;
    }
    let all_of = |six: bool| {
        ids.iter().all(|&i| {
            let a = &model.endpoints[i as usize].addrs;
            !a.is_empty() && a.iter().all(|x| x.is_ipv6() == six)
        })
    };
    [true, false].into_iter().find(|&six| all_of(six))
}

/// Why every packet a peer matches is of the family `other`, if it is:
/// a set of that family's prefixes, or a selector of that family's
/// endpoints.
fn peer_only(model: &Model, index: &EndpointIndex, p: &PeerMatch, other: bool) -> Option<String> {
    match p {
        PeerMatch::Set(_) if set_family(p) == Some(other) => {
            Some(format!("holds only {} addresses", fam(other)))
        }
        PeerMatch::Selector(sel) if endpoints_family(model, &index.select(sel)) == Some(other) => {
            Some(format!(
                "selects only endpoints without {} addresses",
                fam(!other)
            ))
        }
        _ => None,
    }
}

/// The ICMP keyword of a rule and whether it is the IPv6 one.
fn icmp_of(pm: &ProtoMatch) -> Option<(Proto, bool)> {
    match pm {
        ProtoMatch::Icmp { proto, .. } => Some((*proto, *proto == Proto::Icmp6)),
        _ => None,
    }
}

fn fam(six: bool) -> &'static str {
    if six {
        "IPv6"
    } else {
        "IPv4"
    }
}

/// `selected[i]`: the ids (into `model.endpoints`) of the endpoints
/// policy `i` applies to; `index` selects the selector peers' endpoints.
pub(super) fn run(cx: &mut Cx<'_>, model: &Model, index: &EndpointIndex, selected: &[Vec<u32>]) {
    let mut out = Vec::new();
    for (p, ids) in model.policies.iter().zip(selected) {
        // The family of every selected endpoint's addresses, if one.
        let subjects = endpoints_family(model, ids);
        for r in [&p.ingress, &p.egress].into_iter().flatten().flatten() {
            let Rule {
                proto, peer, span, ..
            } = r;
            let Some((kw, six)) = icmp_of(proto) else {
                continue;
            };
            if !cx.is_root(span.file) {
                continue;
            }
            let why = if let Some(w) = peer_only(model, index, peer, !six) {
                format!("its peer {w}")
            } else if subjects == Some(!six) {
                format!(
                    "policy `{}` applies only to endpoints without {} addresses",
                    p.name,
                    fam(six)
                )
            } else {
                continue;
            };
            out.push(Kind::IcmpOtherFamily {
                span: *span,
                proto: kw,
                why,
            });
        }
    }
    for s in &model.steers {
        for SteerRule {
            proto,
            from,
            to,
            span,
            ..
        } in &s.rules
        {
            let Some((kw, six)) = icmp_of(proto) else {
                continue;
            };
            if !cx.is_root(span.file) {
                continue;
            }
            let why =
                peer_only(model, index, from, !six).or_else(|| peer_only(model, index, to, !six));
            if let Some(w) = why {
                out.push(Kind::IcmpOtherFamily {
                    span: *span,
                    proto: kw,
                    why: format!("a peer {w}"),
                });
            }
        }
    }
    cx.diags.extend(out);
}
