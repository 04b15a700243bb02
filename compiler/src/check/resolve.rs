//! Name resolution for selectors, sets and peers. Named selectors are
//! inlined, set names flattened; cycles are E0207/E0208.

use super::{Cx, Memo, PeerDecl, SelUse};
use crate::diagnostics::{Kind, NameKind};
use crate::model::{AddrSet, Cidr, PeerMatch, Sel};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use weir_grammar::ast::{self, CidrLit, Label, Peer, SelExpr, SetElem, SetExpr};
use weir_grammar::Span;

pub(super) fn peer_span(p: &Peer) -> Span {
    match p {
        Peer::Any(s) | Peer::Labels(_, s) => *s,
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
pub(super) fn network(addr: IpAddr, len: u8) -> IpAddr {
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

/// `c` minus `e`, as disjoint prefixes.
fn subtract(c: Cidr, e: &Cidr) -> Vec<Cidr> {
    if e.covers(&c) {
        return vec![];
    }
    if !c.covers(e) {
        return vec![c];
    }
    // e is strictly inside c: split c in halves.
    let len = c.len + 1;
    let lo = Cidr { addr: c.addr, len };
    let hi_addr = match c.addr {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(
            u32::from(a) | (1u32 << (32 - u32::from(len))),
        )),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(
            u128::from(a) | (1u128 << (128 - u32::from(len))),
        )),
    };
    let hi = Cidr { addr: hi_addr, len };
    let mut out = subtract(lo, e);
    out.extend(subtract(hi, e));
    out
}

/// Sorts, deduplicates and drops prefixes covered by others.
pub(super) fn normalize_cidrs(mut v: Vec<Cidr>) -> Vec<Cidr> {
    v.sort();
    v.dedup();
    let all = v.clone();
    v.retain(|c| !all.iter().any(|o| o != c && o.covers(c)));
    v
}

/// The exact addresses of a set as include-only prefixes.
fn flatten(s: &AddrSet) -> Vec<Cidr> {
    let mut out = s.include.clone();
    for e in &s.exclude {
        out = out.into_iter().flat_map(|c| subtract(c, e)).collect();
    }
    normalize_cidrs(out)
}

fn union(a: AddrSet, b: AddrSet) -> AddrSet {
    if a.exclude.is_empty() && b.exclude.is_empty() {
        let mut include = a.include;
        include.extend(b.include);
        AddrSet {
            include: normalize_cidrs(include),
            exclude: vec![],
        }
    } else {
        let mut include = flatten(&a);
        include.extend(flatten(&b));
        AddrSet {
            include: normalize_cidrs(include),
            exclude: vec![],
        }
    }
}

fn difference(a: AddrSet, b: &AddrSet) -> AddrSet {
    let mut exclude = a.exclude;
    exclude.extend(flatten(b));
    AddrSet {
        include: a.include,
        exclude: normalize_cidrs(exclude),
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

    /// Resolves a named selector (memoized; cycles are E0207).
    pub(super) fn named_sel(&mut self, d: &'a ast::SelectorDecl, via: Span) -> Option<Sel> {
        let name = d.name.name.clone();
        match self.sel_memo.get(&name) {
            Some(Memo::Done(s)) => return s.clone(),
            Some(Memo::Visiting) => {
                let pos = self.stack.iter().position(|(n, _)| *n == name).unwrap_or(0);
                let mut through: Vec<(String, Span)> = self.stack[pos..].to_vec();
                // Each element's span is the reference leading to the next.
                for i in 0..through.len() {
                    through[i].1 = if i + 1 < through.len() {
                        self.stack[pos + i + 1].1
                    } else {
                        via
                    };
                }
                for (n, _) in &through {
                    self.sel_memo.insert(n.clone(), Memo::Done(None));
                }
                self.report(Kind::SelectorCycle {
                    span: d.name.span,
                    name,
                    through,
                });
                return None;
            }
            None => {}
        }
        self.sel_memo.insert(name.clone(), Memo::Visiting);
        self.stack.push((name.clone(), via));
        let r = self.sel(&d.expr);
        self.stack.pop();
        if let Some(Memo::Done(s)) = self.sel_memo.get(&name) {
            // A cycle through this selector was reported while resolving it.
            return s.clone();
        }
        self.sel_memo.insert(name, Memo::Done(r.clone()));
        r
    }

    /// Resolves a named set (memoized; cycles are E0208).
    pub(super) fn named_set(&mut self, d: &'a ast::SetDecl, via: Span) -> Option<AddrSet> {
        let name = d.name.name.clone();
        match self.set_memo.get(&name) {
            Some(Memo::Done(s)) => return s.clone(),
            Some(Memo::Visiting) => {
                let pos = self.stack.iter().position(|(n, _)| *n == name).unwrap_or(0);
                let mut through: Vec<(String, Span)> = self.stack[pos..].to_vec();
                for i in 0..through.len() {
                    through[i].1 = if i + 1 < through.len() {
                        self.stack[pos + i + 1].1
                    } else {
                        via
                    };
                }
                for (n, _) in &through {
                    self.set_memo.insert(n.clone(), Memo::Done(None));
                }
                self.report(Kind::SetCycle {
                    span: d.name.span,
                    name,
                    through,
                });
                return None;
            }
            None => {}
        }
        self.set_memo.insert(name.clone(), Memo::Visiting);
        self.stack.push((name.clone(), via));
        let r = self.set_expr(&d.expr);
        self.stack.pop();
        if let Some(Memo::Done(s)) = self.set_memo.get(&name) {
            return s.clone();
        }
        self.set_memo.insert(name, Memo::Done(r.clone()));
        r
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
        let mut acc: Option<AddrSet> = Some(AddrSet::default());
        for e in elems {
            let r = self.set_elem(e);
            acc = match (acc, r) {
                (Some(a), Some(b)) => Some(union(a, b)),
                _ => None,
            };
        }
        acc
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
        let mut acc = base;
        for x in except {
            let r = self.set_elem(x);
            if let (Some(b), Some(r)) = (&base_cidrs, &r) {
                let xs = flatten(r);
                if !xs.iter().any(|c| b.iter().any(|o| o.overlaps(c))) {
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
            acc = match (acc, r) {
                (Some(a), Some(b)) => Some(difference(a, &b)),
                _ => None,
            };
        }
        acc
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
    fn subtracts() {
        let r = subtract(c("10.0.0.0/8"), &c("10.0.0.0/9"));
        assert_eq!(r, vec![c("10.128.0.0/9")]);
        let r = subtract(c("10.0.0.0/30"), &c("10.0.0.1/32"));
        assert_eq!(r, vec![c("10.0.0.0/32"), c("10.0.0.2/31")]);
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
        let u = union(a, b);
        assert!(u.contains("10.99.1.5".parse().unwrap()));
        assert!(!u.contains("10.99.2.5".parse().unwrap()));
        assert!(u.contains("10.1.2.3".parse().unwrap()));
    }
}
