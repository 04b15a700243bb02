//! W0306: an `icmp` rule that can only see IPv6 packets, or an `icmp6`
//! rule that can only see IPv4 ones.
//!
//! `icmp` is ICMPv4 and `icmp6` ICMPv6, each in its own family only
//! (docs/language.md §4, "Headers"). Before `icmp6` existed, `icmp` also
//! meant ICMPv6, so `allow icmp` in a policy of IPv6-only endpoints was a
//! rule that let ICMPv6 through; after the change it matches nothing. The
//! lint finds the rules whose every packet is of the other family: the
//! peer is a set of that family's prefixes only, or (policy rules) every
//! endpoint the policy applies to — at least one — has addresses of that
//! family only. It is a warning (the program still means something
//! exact), with a stable code so CI can refuse it (`--deny-warnings`).

use super::Cx;
use crate::diagnostics::Kind;
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
/// policy `i` applies to.
pub(super) fn run(cx: &mut Cx<'_>, model: &Model, selected: &[Vec<u32>]) {
    let mut out = Vec::new();
    for (p, ids) in model.policies.iter().zip(selected) {
        // The family of every selected endpoint's addresses, if one.
        let subjects = if ids.is_empty() {
            None
        } else {
            let all_of = |six: bool| {
                ids.iter().all(|&i| {
                    let a = &model.endpoints[i as usize].addrs;
                    !a.is_empty() && a.iter().all(|x| x.is_ipv6() == six)
                })
            };
            [true, false].into_iter().find(|&six| all_of(six))
        };
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
            let why = if set_family(peer) == Some(!six) {
                format!("its peer holds only {} addresses", fam(!six))
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
            if set_family(from) == Some(!six) || set_family(to) == Some(!six) {
                out.push(Kind::IcmpOtherFamily {
                    span: *span,
                    proto: kw,
                    why: format!("a peer holds only {} addresses", fam(!six)),
                });
            }
        }
    }
    cx.diags.extend(out);
}
