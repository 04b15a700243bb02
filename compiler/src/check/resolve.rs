//! Name resolution for selectors, sets and peers. Named selectors are
//! inlined, set names flattened; cycles are E0207/E0208.

use super::{Cx, PeerDecl, SelUse};
use crate::cidrs;
use crate::diagnostics::{Kind, NameKind};
use crate::model::{AddrSet, Cidr, PeerMatch, Sel};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use weir_grammar::ast::{CidrLit, Label, Peer, SelExpr, SetElem, SetExpr};
use weir_grammar::Span;

pub(super) fn peer_span(p: &Peer) -> Span {
    match p {
        Peer::Any(s)
        | Peer::Labels(_, s)
        | Peer::SelfEp(s)
        | Peer::World(_, s)
        | Peer::OwnNode(s)
        | Peer::Nodes(_, s) => *s,
        Peer::Set(e) => e.span,
        Peer::Selector(e) => e.span(),
    }
}

fn max_len(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

/// The network of `addr/len` (host bits cleared).
pub(crate) fn network(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

/// The exact addresses of a set as include-only prefixes.
fn flatten(s: &AddrSet) -> Vec<Cidr> {
    cidrs::minus(&s.include, &s.exclude)
}

/// The union of the element sets, include-only. Collected and normalised
/// once: normalising per element made a set of n elements cost n² prefix
/// comparisons per element.
fn union(sets: Vec<AddrSet>) -> AddrSet {
    let mut include = Vec::new();
    for s in &sets {
        if s.exclude.is_empty() {
            include.extend_from_slice(&s.include);
        } else {
            include.extend(flatten(s));
        }
    }
    AddrSet {
        include: cidrs::normalize(include),
        exclude: vec![],
    }
}

fn label_list(ls: &[Label]) -> BTreeSet<String> {
    ls.iter().map(|l| l.text.clone()).collect()
}

impl<'a> Cx<'a> {
    /// A CIDR literal, checking host bits (E0202).
    pub(super) fn cidr(&mut self, lit: &CidrLit) -> Cidr {
        let max = max_len(lit.addr);
        let len = lit.prefix.unwrap_or(max).min(max);
        let net = network(lit.addr, len);
        if net != lit.addr {
            self.report(Kind::HostBits {
                span: lit.span,
                written: format!("{}/{}", lit.addr, len),
                network: format!("{net}/{len}"),
            });
        }
        Cidr { addr: net, len }
    }

    /// A literal that must be one address (E0212 otherwise).
    pub(super) fn single_addr(&mut self, lit: &CidrLit, what: &'static str) -> IpAddr {
        if let Some(p) = lit.prefix {
            if p != max_len(lit.addr) {
                self.report(Kind::NotAnAddress {
                    span: lit.span,
                    written: format!("{}/{}", lit.addr, p),
                    what,
                });
            }
        }
        lit.addr
    }

    fn unknown(&mut self, span: Span, name: &str, expected: &'static str, kinds: &[NameKind]) {
        let cands: Vec<&str> = self
            .peers
            .iter()
            .filter(|(_, d)| kinds.contains(&d.kind()))
            .map(|(n, _)| n.as_str())
            .collect();
        let suggestion = super::suggest(name, cands);
        self.report(Kind::UnknownName {
            span,
            name: name.to_string(),
            expected,
            suggestion,
        });
    }

    fn wrong_kind(&mut self, span: Span, name: &str, expected: &'static str) -> bool {
        if let Some((found, defined)) = self.kind_of(name) {
            self.report(Kind::WrongKind {
                span,
                name: name.to_string(),
                found,
                expected,
                defined: Some(defined),
            });
            true
        } else {
            false
        }
    }

    /// Resolves a selector expression; `None` after an error.
    pub(super) fn sel(&mut self, e: &SelExpr) -> Option<Sel> {
        match e {
            SelExpr::All(_) => Some(Sel::All),
            SelExpr::Eq(k, v, _) => Some(Sel::Eq(k.text.clone(), v.text.clone())),
            SelExpr::Ne(k, v, _) => Some(Sel::Ne(k.text.clone(), v.text.clone())),
            SelExpr::In(k, vs, _) => Some(Sel::In(k.text.clone(), label_list(vs))),
            SelExpr::NotIn(k, vs, _) => Some(Sel::NotIn(k.text.clone(), label_list(vs))),
            SelExpr::Has(k, _) => Some(Sel::Has(k.text.clone())),
            SelExpr::Not(e, _) => self.sel(e).map(|s| Sel::Not(Box::new(s))),
            SelExpr::And(a, b, _) => {
                let a = self.sel(a);
                let b = self.sel(b);
                Some(Sel::And(Box::new(a?), Box::new(b?)))
            }
            SelExpr::Or(a, b, _) => {
                let a = self.sel(a);
                let b = self.sel(b);
                Some(Sel::Or(Box::new(a?), Box::new(b?)))
            }
            SelExpr::Paren(e, _) => self.sel(e),
            SelExpr::Namespace(e, span) => self.namespace_test(e, *span),
            SelExpr::Error(_) => None,
            SelExpr::Name(id) => match self.peers.get(&id.name).copied() {
                Some(PeerDecl::Selector(d)) => {
                    self.used.insert(id.name.clone());
                    self.named_sel(d, id.span)
                }
                Some(PeerDecl::Set(_)) | None => {
                    if !self.wrong_kind(id.span, &id.name, "a selector") {
                        self.unknown(id.span, &id.name, "selector", &[NameKind::Selector]);
                    }
                    None
                }
            },
        }
    }

    fn set_elem(&mut self, e: &SetElem) -> Option<AddrSet> {
        match e {
            SetElem::Cidr(lit) => {
                let c = self.cidr(lit);
                Some(AddrSet {
                    include: vec![c],
                    exclude: vec![],
                })
            }
            SetElem::Name(id) => match self.peers.get(&id.name).copied() {
                Some(PeerDecl::Set(d)) => {
                    self.used.insert(id.name.clone());
                    self.named_set(d, id.span)
                }
                Some(PeerDecl::Selector(_)) | None => {
                    if !self.wrong_kind(id.span, &id.name, "a set") {
                        self.unknown(id.span, &id.name, "set", &[NameKind::Set]);
                    }
                    None
                }
            },
        }
    }

    fn set_elems(&mut self, elems: &[SetElem], span: Span) -> Option<AddrSet> {
        if elems.is_empty() {
            self.report(Kind::EmptySet { span });
            return None;
        }
        let mut sets = Some(Vec::with_capacity(elems.len()));
        for e in elems {
            let r = self.set_elem(e);
            sets = sets.zip(r).map(|(mut v, r)| {
                v.push(r);
                v
            });
        }
        sets.map(union)
    }

    /// Resolves a set expression, with W0303 for `except` elements that
    /// exclude nothing.
    pub(super) fn set_expr(&mut self, e: &SetExpr) -> Option<AddrSet> {
        let base = self.set_elems(&e.base, e.base_span);
        let Some((except, espan)) = &e.except else {
            return base;
        };
        if except.is_empty() {
            self.report(Kind::EmptySet { span: *espan });
            return None;
        }
        let base_cidrs = base.as_ref().map(flatten);
        let mut holes = Some(Vec::new());
        for x in except {
            let r = self.set_elem(x);
            if let (Some(b), Some(r)) = (&base_cidrs, &r) {
                let xs = flatten(r);
                if !xs.iter().any(|c| cidrs::overlaps_any(b, c)) {
                    let span = match x {
                        SetElem::Cidr(l) => l.span,
                        SetElem::Name(i) => i.span,
                    };
                    let element = match x {
                        SetElem::Cidr(_) => xs.first().map(|c| c.to_string()).unwrap_or_default(),
                        SetElem::Name(i) => format!("`{}`", i.name),
                    };
                    self.report(Kind::ExceptOutsideBase {
                        span,
                        element,
                        base: e.base_span,
                    });
                }
            }
            holes = holes.zip(r).map(|(mut v, r)| {
                v.extend(flatten(&r));
                v
            });
        }
        let (base, holes) = (base?, holes?);
        Some(AddrSet {
            include: base.include,
            exclude: cidrs::normalize(holes),
        })
    }

    /// Resolves a rule or steering peer. Label maps are tests-only (E0236).
    pub(super) fn peer(&mut self, p: &Peer, what: &str) -> Option<PeerMatch> {
        match p {
            Peer::Any(_) => Some(PeerMatch::Any),
            Peer::Set(e) => self.set_expr(e).map(PeerMatch::Set),
            Peer::Selector(SelExpr::Name(id)) => match self.peers.get(&id.name).copied() {
                Some(PeerDecl::Set(d)) => {
                    self.used.insert(id.name.clone());
                    self.named_set(d, id.span).map(PeerMatch::Set)
                }
                Some(PeerDecl::Selector(d)) => {
                    self.used.insert(id.name.clone());
                    self.named_sel(d, id.span).map(PeerMatch::Selector)
                }
                None => {
                    if !self.wrong_kind(id.span, &id.name, "a selector or set") {
                        self.unknown(
                            id.span,
                            &id.name,
                            "selector or set",
                            &[NameKind::Selector, NameKind::Set],
                        );
                    }
                    None
                }
            },
            Peer::Selector(e) => {
                let s = self.sel(e)?;
                self.sel_uses.push(SelUse {
                    span: e.span(),
                    what: what.to_string(),
                    sel: s.clone(),
                });
                Some(PeerMatch::Selector(s))
            }
            Peer::Labels(_, span) => {
                self.report(Kind::LabelMapOutsideTest { span: *span });
                None
            }
            Peer::SelfEp(_) => Some(PeerMatch::SelfEndpoint),
            Peer::World(None, _) => Some(PeerMatch::World(None)),
            Peer::World(Some(e), _) => self.set_expr(e).map(|s| PeerMatch::World(Some(s))),
            Peer::OwnNode(_) => Some(PeerMatch::OwnNode),
            Peer::Nodes(e, span) => self.nodes_peer(e, *span),
        }
    }

    /// Refuses `self` and `world` where a peer has no endpoint side to be
    /// judged for (a steering rule): E0260 / E0261. True when refused.
    pub(super) fn subjectless_peer(&mut self, p: &Peer, place: &'static str) -> bool {
        match p {
            Peer::SelfEp(span) => {
                self.report(Kind::SelfOutsidePolicy { span: *span, place });
                true
            }
            Peer::World(_, span) => {
                self.report(Kind::WorldOutsidePolicy { span: *span, place });
                true
            }
            Peer::OwnNode(span) | Peer::Nodes(_, span) => {
                self.report(Kind::NodeOutsidePolicy { span: *span, place });
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        let (a, l) = s.split_once('/').unwrap();
        Cidr {
            addr: a.parse().unwrap(),
            len: l.parse().unwrap(),
        }
    }

    #[test]
    fn union_with_except_is_exact() {
        let a = AddrSet {
            include: vec![c("10.0.0.0/8")],
            exclude: vec![c("10.99.0.0/16")],
        };
        let b = AddrSet {
            include: vec![c("10.99.1.0/24")],
            exclude: vec![],
        };
        let u = union(vec![a, b]);
        assert!(u.contains("10.99.1.5".parse().unwrap()));
        assert!(!u.contains("10.99.2.5".parse().unwrap()));
        assert!(u.contains("10.1.2.3".parse().unwrap()));
    }
}
