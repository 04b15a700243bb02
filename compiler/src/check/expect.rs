//! `test` blocks: resolving test peers (docs/language.md §3 "Tests").
//!
//! An endpoint name stands for its first address of the packet's family
//! (IPv4 first); an address for itself; a label map for a synthetic
//! endpoint at the Nth address of `192.0.2.0/24` that no endpoint has (N
//! counts label maps in the test from 1); `any` for the first address of
//! `198.51.100.0/24` no endpoint has. Label maps and `any` take the
//! packet's family: their IPv6 addresses are the same Nth free host of
//! `2001:db8:2::/64` and `2001:db8:100::/64`. Skipping taken addresses keeps the
//! promise that these peers are no endpoint (a program may declare one at
//! `198.51.100.1`), and is deterministic: it depends on the program only.
//! Frontend and explicit backend addresses count as taken too.

use super::Cx;
use crate::diagnostics::Kind;
use crate::model::{self, BackendSource, Model, TestPeer, TestVia};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use weir_grammar::ast::{self, ByKind, Peer, Proto, SelExpr, SetElem, Via};
use weir_grammar::Span;

/// Where `any` is placed: the first free address of this /24.
const ANY_NET: [u8; 3] = [198, 51, 100];
/// Where label maps are placed: the Nth free address of this /24.
const MAP_NET: [u8; 3] = [192, 0, 2];
/// The IPv6 twins of [`ANY_NET`] and [`MAP_NET`] (the documentation
/// prefix, RFC 3849): the first four groups of a /64.
const ANY_NET6: [u16; 4] = [0x2001, 0xdb8, 0x100, 0];
const MAP_NET6: [u16; 4] = [0x2001, 0xdb8, 0x2, 0];

/// The addresses test peers may not stand for, and the label maps placed
/// so far in the current test.
struct TestAddrs {
    taken: BTreeSet<IpAddr>,
    maps: u32,
}

impl TestAddrs {
    fn new(model: &Model) -> TestAddrs {
        let mut taken: BTreeSet<IpAddr> = model
            .endpoints
            .iter()
            .flat_map(|e| e.addrs.iter().copied())
            .collect();
        for s in &model.services {
            taken.extend(s.frontends.iter().map(|f| f.addr));
            if let BackendSource::Explicit(bs) = &s.backends {
                taken.extend(bs.iter().map(|b| b.addr));
            }
        }
        TestAddrs { taken, maps: 0 }
    }

    /// The `n`th (1-based) address of `net` (hosts 1–254) no one has.
    fn free(&self, net: [u8; 3], n: u32) -> Option<Ipv4Addr> {
        (1..=254u8)
            .map(|h| Ipv4Addr::new(net[0], net[1], net[2], h))
            .filter(|a| !self.taken.contains(&IpAddr::V4(*a)))
            .nth(n as usize - 1)
    }

    /// The `n`th (1-based) address of the /64 `net` (hosts 1–254) no one
    /// has.
    fn free6(&self, net: [u16; 4], n: u32) -> Option<Ipv6Addr> {
        (1..=254u16)
            .map(|h| Ipv6Addr::new(net[0], net[1], net[2], net[3], 0, 0, 0, h))
            .filter(|a| !self.taken.contains(&IpAddr::V6(*a)))
            .nth(n as usize - 1)
    }
}

/// A synthetic peer (`any`, a label map): an address of each family, the
/// packet's chosen when the ends are resolved (`None`: that range is
/// full, E0237 if it is the one needed).
struct Synthetic {
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
    labels: Option<BTreeMap<String, String>>,
    display: String,
    span: Span,
    what: &'static str,
    /// The ranges it is placed in, IPv4 then IPv6 (for E0237).
    ranges: [&'static str; 2],
}

enum TPeer {
    Fixed(IpAddr, Option<BTreeMap<String, String>>, String),
    Synthetic(Synthetic),
    Endpoint(String, Vec<IpAddr>, Span),
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

impl<'a> Cx<'a> {
    fn test_peer(&mut self, p: &Peer, model: &Model, addrs: &mut TestAddrs) -> Option<TPeer> {
        if self.subjectless_peer(p, "a test packet") {
            return None;
        }
        match p {
            Peer::Any(span) => Some(TPeer::Synthetic(Synthetic {
                v4: addrs.free(ANY_NET, 1),
                v6: addrs.free6(ANY_NET6, 1),
                labels: None,
                display: "any".into(),
                span: *span,
                what: "`any`",
                ranges: ["198.51.100.0/24", "2001:db8:100::/64"],
            })),
            Peer::Labels(ls, span) => {
                let labels = self.label_map(ls);
                addrs.maps += 1;
                let display = format!(
                    "{{ {} }}",
                    labels
                        .iter()
                        .map(|(k, v)| format!("{k}: {v:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                Some(TPeer::Synthetic(Synthetic {
                    v4: addrs.free(MAP_NET, addrs.maps),
                    v6: addrs.free6(MAP_NET6, addrs.maps),
                    labels: Some(labels),
                    display,
                    span: *span,
                    what: "a label map",
                    ranges: ["192.0.2.0/24", "2001:db8:2::/64"],
                }))
            }
            Peer::SelfEp(_) | Peer::World(..) | Peer::OwnNode(_) | Peer::Nodes(..) => None,
            Peer::Set(e) => match (&e.base[..], &e.except) {
                ([SetElem::Cidr(lit)], None)
                    if lit.prefix.is_none()
                        || lit.prefix == Some(if lit.addr.is_ipv4() { 32 } else { 128 }) =>
                {
                    Some(TPeer::Fixed(lit.addr, None, lit.addr.to_string()))
                }
                _ => {
                    self.report(Kind::BadTestPeer { span: e.span });
                    None
                }
            },
            Peer::Selector(SelExpr::Name(id)) => {
                match model.endpoints.iter().find(|ep| ep.name == id.name) {
                    Some(ep) => Some(TPeer::Endpoint(ep.name.clone(), ep.addrs.clone(), id.span)),
                    None => {
                        let is = self.kind_of(&id.name).map(|k| k.0);
                        let suggestion = if is.is_some() {
                            None
                        } else {
                            super::suggest(
                                &id.name,
                                model.endpoints.iter().map(|e| e.name.as_str()),
                            )
                        };
                        self.report(Kind::UnknownTestEndpoint {
                            span: id.span,
                            name: id.name.clone(),
                            suggestion,
                            is,
                        });
                        None
                    }
                }
            }
            Peer::Selector(e) => {
                self.report(Kind::BadTestPeer { span: e.span() });
                None
            }
        }
    }

    fn expect(&mut self, e: &ast::Expect, model: &Model, addrs: &mut TestAddrs) -> model::Expect {
        let proto = e.proto.0;
        let icmp_type = e
            .icmp_type
            .as_ref()
            .map(|n| self.num(n, "ICMP type", 0, 255) as u8);
        let icmp_code = e
            .icmp_code
            .as_ref()
            .map(|n| self.num(n, "ICMP code", 0, 255) as u8);
        if let (None, Some(n)) = (&e.icmp_type, &e.icmp_code) {
            self.report(Kind::IcmpCodeWithoutType { span: n.span });
        }
        let port = match (proto, &e.port) {
            (p, Some(n)) if p.is_icmp() => {
                self.report(Kind::TestPortOnIcmp { span: n.span });
                0
            }
            (p, None) if p.is_icmp() => 0,
            (_, None) => {
                self.report(Kind::TestPortMissing {
                    span: e.span,
                    proto,
                });
                0
            }
            // A packet may be sent to port 0 (`trace` takes it too); only
            // rules refuse it (E0204).
            (_, Some(n)) => self.num(n, "port", 0, 65535) as u16,
        };
        let from = self.test_peer(&e.from, model, addrs);
        let to = self.test_peer(&e.to, model, addrs);
        let (from, to) = self.test_family(from, to, e);
        let six = to.addr.is_ipv6();
        if (proto == Proto::Icmp && six)
            || (proto == Proto::Icmp6 && !six && !to.addr.is_unspecified())
        {
            self.report(Kind::TestIcmpFamily {
                span: e.proto.1,
                proto,
            });
        }
        let via = e
            .via
            .as_ref()
            .and_then(|v| self.via(v, model, proto, &to, port));
        let by = self.by_target(e.by.as_ref(), e.by_kind);
        let steering = e.steering.as_ref().map(|(a, _)| self.steer_action(a));
        let audit = e.audit.as_ref().map(|a| model::ExpectAudit {
            verdict: match a.verdict.0 {
                ast::Verdict::Allow => model::Verdict::Allow,
                ast::Verdict::Deny => model::Verdict::Deny,
            },
            by: self.by_target(a.by.as_ref(), a.by_kind),
            by_kind: a.by_kind.map(|k| k.0),
        });
        model::Expect {
            verdict: match e.verdict.0 {
                ast::Verdict::Allow => model::Verdict::Allow,
                ast::Verdict::Deny => model::Verdict::Deny,
            },
            proto,
            icmp_type: icmp_type.unwrap_or(0),
            icmp_code: icmp_code.unwrap_or(0),
            from,
            to,
            port,
            state: match e.state {
                Some((ast::ConnState::Established, _)) => model::ConnState::Established,
                _ => model::ConnState::New,
            },
            at: e.at.map(|a| a.0),
            via,
            by,
            by_kind: e.by_kind.map(|k| k.0),
            steering,
            audit,
            span: e.span,
        }
    }

    /// `by [KIND] NAME` resolved (E0239 ambiguous, unknown names).
    fn by_target(
        &mut self,
        by: Option<&ast::Ident>,
        by_kind: Option<(ByKind, weir_grammar::Span)>,
    ) -> Option<String> {
        by.map(|b| {
            let kinds: Vec<&'static str> = [
                ("policy", self.policies.contains_key(&b.name)),
                ("steer", self.steers.contains_key(&b.name)),
                ("service", self.services.contains_key(&b.name)),
            ]
            .into_iter()
            .filter_map(|(k, has)| has.then_some(k))
            .collect();
            let known = b.name == "default" || !kinds.is_empty();
            if let Some((kind, _)) = by_kind {
                let kind = by_kind_name(kind);
                if !kinds.contains(&kind) {
                    self.report(Kind::UnknownByOfKind {
                        span: b.span,
                        name: b.name.clone(),
                        kind,
                    });
                }
            } else if kinds.len() > 1 {
                self.report(Kind::AmbiguousBy {
                    span: b.span,
                    name: b.name.clone(),
                    kinds: kinds.clone(),
                });
            } else if !known {
                let cands: Vec<&str> = self
                    .policies
                    .keys()
                    .chain(self.steers.keys())
                    .chain(self.services.keys())
                    .map(String::as_str)
                    .collect();
                let suggestion = super::suggest(&b.name, cands);
                self.report(Kind::UnknownBy {
                    span: b.span,
                    name: b.name.clone(),
                    suggestion,
                });
            }
            b.name.clone()
        })
    }

    /// Picks one address family for both ends and resolves endpoints to
    /// their first address of it (E0252 when impossible).
    fn test_family(
        &mut self,
        from: Option<TPeer>,
        to: Option<TPeer>,
        e: &ast::Expect,
    ) -> (TestPeer, TestPeer) {
        let placeholder = |p: &Peer| TestPeer {
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            synthetic_labels: None,
            display: format!("<{}>", p_display(p)),
        };
        let fixed_family = |p: &Option<TPeer>| match p {
            Some(TPeer::Fixed(ip, _, _)) => Some(ip.is_ipv4()),
            _ => None,
        };
        let has = |p: &Option<TPeer>, v4: bool| match p {
            Some(TPeer::Endpoint(_, addrs, _)) => addrs.iter().any(|a| a.is_ipv4() == v4),
            _ => true,
        };
        let v4 = match (fixed_family(&from), fixed_family(&to)) {
            (Some(a), Some(b)) if a != b => {
                let fam = |p: &Option<TPeer>| match p {
                    Some(TPeer::Fixed(ip, _, _)) => family(*ip),
                    _ => "",
                };
                self.report(Kind::TestMixedFamilies {
                    span: e.span,
                    from: fam(&from),
                    to: fam(&to),
                });
                a
            }
            (Some(a), _) | (None, Some(a)) => a,
            // `icmp6` is IPv6 only: IPv6 when both ends have it.
            (None, None) if e.proto.0 == Proto::Icmp6 => !(has(&from, false) && has(&to, false)),
            (None, None) => {
                // IPv4 first; IPv6 when only that is common to both ends.
                (has(&from, true) && has(&to, true)) || !(has(&from, false) && has(&to, false))
            }
        };
        let resolve = |cx: &mut Cx<'a>, p: Option<TPeer>, written: &Peer| -> TestPeer {
            match p {
                None => placeholder(written),
                Some(TPeer::Fixed(addr, synthetic_labels, display)) => TestPeer {
                    addr,
                    synthetic_labels,
                    display,
                },
                Some(TPeer::Synthetic(p)) => {
                    let addr = if v4 {
                        p.v4.map(IpAddr::V4)
                    } else {
                        p.v6.map(IpAddr::V6)
                    };
                    let addr = addr.unwrap_or_else(|| {
                        cx.report(Kind::NoFreeTestAddress {
                            span: p.span,
                            what: p.what,
                            range: p.ranges[usize::from(!v4)],
                        });
                        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                    });
                    TestPeer {
                        addr,
                        synthetic_labels: p.labels,
                        display: p.display,
                    }
                }
                Some(TPeer::Endpoint(name, addrs, span)) => {
                    match addrs.iter().find(|a| a.is_ipv4() == v4) {
                        Some(a) => TestPeer {
                            addr: *a,
                            synthetic_labels: None,
                            display: name,
                        },
                        None => {
                            cx.report(Kind::TestNoAddressOfFamily {
                                span,
                                endpoint: name.clone(),
                                family: if v4 { "IPv4" } else { "IPv6" },
                            });
                            TestPeer {
                                addr: addrs
                                    .first()
                                    .copied()
                                    .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                                synthetic_labels: None,
                                display: name,
                            }
                        }
                    }
                }
            }
        };
        let f = resolve(self, from, &e.from);
        let t = resolve(self, to, &e.to);
        (f, t)
    }

    pub(super) fn test(&mut self, t: &'a ast::TestDecl, model: &Model) -> model::Test {
        let mut addrs = TestAddrs::new(model);
        let expects = t
            .expects
            .iter()
            .map(|e| self.expect(e, model, &mut addrs))
            .collect();
        model::Test {
            name: t.name.clone(),
            expects,
            span: t.span,
        }
    }
}

fn by_kind_name(k: ByKind) -> &'static str {
    match k {
        ByKind::Policy => "policy",
        ByKind::Steer => "steer",
        ByKind::Service => "service",
    }
}

impl<'a> Cx<'a> {
    /// Resolves `via` against the service the packet reaches (E0238 when
    /// it reaches none, or the backend is not one of its usable ones).
    fn via(
        &mut self,
        v: &Via,
        model: &Model,
        proto: Proto,
        to: &TestPeer,
        port: u16,
    ) -> Option<TestVia> {
        let (span, display) = match v {
            Via::Endpoint(id) => (id.span, id.name.clone()),
            Via::Socket(s) => (s.span, format!("{}:{}", s.addr.addr, s.port.value)),
        };
        let hit = model.services.iter().find_map(|svc| {
            svc.frontends
                .iter()
                .find(|f| f.addr == to.addr && f.port == port && f.proto == proto)
                .map(|fe| (svc, crate::interp::backends_of(svc, fe, &model.endpoints)))
        });
        let Some((svc, candidates)) = hit else {
            self.report(Kind::BadVia {
                span,
                via: display,
                service: None,
            });
            return None;
        };
        let found = match v {
            Via::Endpoint(id) => candidates
                .iter()
                .find(|b| b.endpoint.as_deref() == Some(id.name.as_str()))
                .map(|b| TestVia {
                    addr: b.addr,
                    port: None,
                    display: display.clone(),
                }),
            Via::Socket(s) => candidates
                .iter()
                .find(|b| b.addr == s.addr.addr && u64::from(b.port) == s.port.value)
                .map(|b| TestVia {
                    addr: b.addr,
                    port: Some(b.port),
                    display: display.clone(),
                }),
        };
        if found.is_none() {
            self.report(Kind::BadVia {
                span,
                via: display,
                service: Some(svc.name.clone()),
            });
        }
        found
    }
}

fn p_display(p: &Peer) -> String {
    match p {
        Peer::Any(_) => "any".into(),
        Peer::Selector(SelExpr::Name(id)) => id.name.clone(),
        _ => "peer".into(),
    }
}
