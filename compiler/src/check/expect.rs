//! `test` blocks: resolving test peers (docs/language.md §3 "Tests").
//!
//! An endpoint name stands for its first address of the packet's family
//! (IPv4 first); an address for itself; a label map for a synthetic
//! endpoint at `192.0.2.N` (N counts label maps in the test from 1); `any`
//! for `198.51.100.1`, an address no endpoint has.

use super::Cx;
use crate::diagnostics::{Kind, PortProblem};
use crate::model::{self, Model, TestPeer};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use weir_grammar::ast::{self, Peer, Proto, SelExpr, SetElem};
use weir_grammar::Span;

/// The address `any` stands for in tests.
pub const TEST_ANY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

/// The address of the `n`th label map of a test (1-based).
pub fn synthetic_addr(n: u32) -> Ipv4Addr {
    let n = n.clamp(1, 254);
    Ipv4Addr::new(192, 0, 2, n as u8)
}

enum TPeer {
    Fixed(IpAddr, Option<BTreeMap<String, String>>, String),
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
    fn test_peer(&mut self, p: &Peer, model: &Model, maps: &mut u32) -> Option<TPeer> {
        match p {
            Peer::Any(_) => Some(TPeer::Fixed(IpAddr::V4(TEST_ANY), None, "any".into())),
            Peer::Labels(ls, _) => {
                let labels = self.label_map(ls);
                *maps += 1;
                let display = format!(
                    "{{ {} }}",
                    labels
                        .iter()
                        .map(|(k, v)| format!("{k}: {v:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                Some(TPeer::Fixed(
                    IpAddr::V4(synthetic_addr(*maps)),
                    Some(labels),
                    display,
                ))
            }
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

    fn expect(&mut self, e: &ast::Expect, model: &Model, maps: &mut u32) -> model::Expect {
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
            (Proto::Icmp, Some(n)) => {
                self.report(Kind::TestPortOnIcmp { span: n.span });
                0
            }
            (Proto::Icmp, None) => 0,
            (_, None) => {
                self.report(Kind::TestPortMissing {
                    span: e.span,
                    proto,
                });
                0
            }
            (_, Some(n)) if n.value == 0 => {
                self.report(Kind::BadPort {
                    span: n.span,
                    problem: PortProblem::Zero,
                });
                0
            }
            (_, Some(n)) => self.num(n, "port", 1, 65535) as u16,
        };
        let from = self.test_peer(&e.from, model, maps);
        let to = self.test_peer(&e.to, model, maps);
        let (from, to) = self.test_family(from, to, e);
        let by = e.by.as_ref().map(|b| {
            let known = b.name == "default"
                || self.policies.contains_key(&b.name)
                || self.steers.contains_key(&b.name)
                || self.services.contains_key(&b.name);
            if !known {
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
            by,
            span: e.span,
        }
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
        let mut maps = 0;
        let expects = t
            .expects
            .iter()
            .map(|e| self.expect(e, model, &mut maps))
            .collect();
        model::Test {
            name: t.name.clone(),
            expects,
            span: t.span,
        }
    }
}

fn p_display(p: &Peer) -> String {
    match p {
        Peer::Any(_) => "any".into(),
        Peer::Selector(SelExpr::Name(id)) => id.name.clone(),
        _ => "peer".into(),
    }
}
