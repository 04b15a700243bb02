//! Lowering declarations into the [`Model`], validating as we go.

use super::resolve::peer_span;
use super::{Cx, PeerDecl, SelUse};
use crate::diagnostics::{Kind, NameKind, PortProblem, ServiceLine};
use crate::inventory::Inventory;
use crate::model::{self, Model};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::net::IpAddr;
use weir_grammar::ast::{self, Direction, Num, Peer};
use weir_grammar::Span;

impl<'a> Cx<'a> {
    /// A number that must be in `min..=max` (E0209 otherwise; clamped).
    pub(super) fn num(&mut self, n: &Num, what: &'static str, min: u64, max: u64) -> u64 {
        if n.value < min || n.value > max {
            self.report(Kind::OutOfRange {
                span: n.span,
                what,
                value: n.value,
                min,
                max,
            });
        }
        n.value.clamp(min, max)
    }

    /// A port 1–65535 (0 is E0204).
    pub(super) fn port(&mut self, n: &Num) -> u16 {
        if n.value == 0 {
            self.report(Kind::BadPort {
                span: n.span,
                problem: PortProblem::Zero,
            });
            return 0;
        }
        self.num(n, "port", 1, 65535) as u16
    }

    pub(super) fn proto(&mut self, p: Option<&ast::ProtoMatch>) -> model::ProtoMatch {
        match p {
            None | Some(ast::ProtoMatch::Any(_)) => model::ProtoMatch::Any,
            Some(ast::ProtoMatch::Ports { proto, ports, .. }) => {
                let mut rs = Vec::new();
                for r in ports {
                    let lo = self.port(&r.lo);
                    let hi = match &r.hi {
                        Some(h) => self.port(h),
                        None => lo,
                    };
                    if lo == 0 || hi == 0 {
                        continue;
                    }
                    if lo > hi {
                        self.report(Kind::BadPort {
                            span: r.span,
                            problem: PortProblem::Reversed {
                                lo: u64::from(lo),
                                hi: u64::from(hi),
                            },
                        });
                        continue;
                    }
                    rs.push(model::PortRange { lo, hi });
                }
                model::ProtoMatch::Ports {
                    proto: *proto,
                    ports: model::PortRange::merge(rs),
                }
            }
            Some(ast::ProtoMatch::Named { proto, name, .. }) => model::ProtoMatch::Named {
                proto: *proto,
                name: name.text.clone(),
            },
            Some(ast::ProtoMatch::Icmp {
                proto, ty, code, ..
            }) => {
                let t = ty.as_ref().map(|n| self.num(n, "ICMP type", 0, 255) as u8);
                let c = code
                    .as_ref()
                    .map(|n| self.num(n, "ICMP code", 0, 255) as u8);
                if let (None, Some(n)) = (ty, code) {
                    self.report(Kind::IcmpCodeWithoutType { span: n.span });
                }
                model::ProtoMatch::Icmp {
                    proto: *proto,
                    ty: t,
                    code: c,
                }
            }
        }
    }

    fn labels(&mut self, ls: &[(ast::Label, ast::Label)]) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut first: BTreeMap<&str, Span> = BTreeMap::new();
        for (k, v) in ls {
            if let Some(f) = first.get(k.text.as_str()) {
                self.report(Kind::DuplicateLabel {
                    span: k.span,
                    key: k.text.clone(),
                    first: *f,
                });
                continue;
            }
            first.insert(&k.text, k.span);
            out.insert(k.text.clone(), v.text.clone());
        }
        out
    }

    pub(super) fn label_map(
        &mut self,
        ls: &[(ast::Label, ast::Label)],
    ) -> BTreeMap<String, String> {
        self.labels(ls)
    }

    /// The model's endpoints: the declared ones, then the inventory's,
    /// moved (not cloned: a node inventory may hold a million).
    fn endpoints(&mut self, inventory: Option<Inventory>) -> Vec<model::Endpoint> {
        let mut out: Vec<model::Endpoint> = Vec::new();
        // address -> (index in `out` of the endpoint that claimed it, span).
        let addrs = inventory
            .as_ref()
            .map_or(0, |i| i.endpoints.iter().map(|e| e.addrs.len()).sum());
        let mut owners: FxHashMap<IpAddr, (usize, Span)> =
            FxHashMap::with_capacity_and_hasher(addrs + self.endpoints.len(), Default::default());
        let mut claim =
            |cx: &mut Cx<'a>, out: &[model::Endpoint], ip: IpAddr, ep: &str, span: Span| -> bool {
                if let Some(&(other, first)) = owners.get(&ip) {
                    // `other == out.len()`: the endpoint being built itself.
                    let other = out.get(other).map_or(ep, |e| e.name.as_str());
                    cx.report(Kind::AddressInTwoEndpoints {
                        span,
                        addr: ip.to_string(),
                        endpoint: ep.to_string(),
                        other: other.to_string(),
                        first,
                    });
                    false
                } else {
                    owners.insert(ip, (out.len(), span));
                    true
                }
            };
        let decls: Vec<&ast::EndpointDecl> =
            self.sorted_by_source(self.endpoints.values().copied(), |d| d.span);
        for d in decls {
            let mut labels = self.labels(&d.labels);
            self.endpoint_ports(d, &mut labels);
            // A host-network endpoint owns no address (crate::nodes).
            let host = self.endpoint_node(d, &mut labels);
            self.endpoint_namespace(d, &mut labels);
            let mut addrs = Vec::new();
            for a in d.addrs.iter().filter(|_| !host) {
                let ip = self.single_addr(a, "an endpoint address");
                if claim(self, &out, ip, &d.name.name, a.span) {
                    addrs.push(ip);
                }
            }
            out.push(model::Endpoint {
                name: d.name.name.clone(),
                labels: labels.into(),
                addrs,
                ready: true,
                span: Some(d.span),
            });
        }
        if let Some(inv) = inventory {
            // The span of the first endpoint of the same name, for each
            // inventory endpoint (names borrowed; the endpoints are moved
            // below).
            let firsts: Vec<Option<Span>> = {
                let mut seen: FxHashMap<&str, Span> = FxHashMap::default();
                inv.endpoints
                    .iter()
                    .map(|ep| {
                        let first = self
                            .endpoints
                            .get(&ep.name)
                            .map(|d| d.name.span)
                            .or_else(|| seen.get(ep.name.as_str()).copied());
                        if first.is_none() {
                            seen.insert(&ep.name, ep.span);
                        }
                        first
                    })
                    .collect()
            };
            out.reserve(inv.endpoints.len());
            for (ep, first) in inv.endpoints.into_iter().zip(firsts) {
                if let Some(first) = first {
                    self.report(Kind::Duplicate {
                        kind: NameKind::Endpoint,
                        name: ep.name,
                        span: ep.span,
                        first,
                    });
                    continue;
                }
                self.inventory_node(&ep);
                let mut addrs = Vec::with_capacity(ep.addrs.len());
                for (ip, span) in ep.addrs.iter().zip(&ep.addr_spans) {
                    if claim(self, &out, *ip, &ep.name, *span) {
                        addrs.push(*ip);
                    }
                }
                out.push(model::Endpoint {
                    name: ep.name,
                    labels: ep.labels,
                    addrs,
                    ready: ep.ready,
                    span: None,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Declarations in source order (file load order, then position).
    fn sorted_by_source<T>(
        &self,
        it: impl Iterator<Item = T>,
        span: impl Fn(&T) -> Span,
    ) -> Vec<T> {
        let order: BTreeMap<_, usize> = self
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.id, i))
            .collect();
        let mut v: Vec<T> = it.collect();
        v.sort_by_key(|t| {
            let s = span(t);
            (order.get(&s.file).copied().unwrap_or(usize::MAX), s.start)
        });
        v
    }

    fn service(&mut self, d: &'a ast::ServiceDecl) -> model::Service {
        let mut frontends = Vec::new();
        let mut backends_lines: Vec<&ast::Backends> = Vec::new();
        let mut balance: Option<(model::Balance, Span)> = None;
        let mut affinity: Option<(u32, Span)> = None;
        for item in &d.items {
            match item {
                ast::ServiceItem::Frontend(f) => {
                    let addr = self.single_addr(&f.socket.addr, "a frontend address");
                    let port = self.port(&f.socket.port);
                    frontends.push((
                        model::Frontend {
                            addr,
                            port,
                            proto: f.proto.0,
                        },
                        f.span,
                    ));
                }
                ast::ServiceItem::Backends(b) => backends_lines.push(b),
                ast::ServiceItem::Balance(b, span) => {
                    if let Some((_, first)) = balance {
                        self.report(Kind::DuplicateServiceLine {
                            span: *span,
                            line: ServiceLine::Balance,
                            first,
                        });
                    } else {
                        let b = match b {
                            ast::Balance::Random => model::Balance::Random,
                            ast::Balance::Maglev => model::Balance::Maglev,
                        };
                        balance = Some((b, *span));
                    }
                }
                ast::ServiceItem::Affinity(dur, span) => {
                    if let Some((_, first)) = affinity {
                        self.report(Kind::DuplicateServiceLine {
                            span: *span,
                            line: ServiceLine::Affinity,
                            first,
                        });
                    } else {
                        let n = Num {
                            value: dur.seconds,
                            span: dur.span,
                        };
                        let secs =
                            self.num(&n, "affinity timeout (seconds)", 1, u64::from(u32::MAX));
                        affinity = Some((secs as u32, *span));
                    }
                }
            }
        }
        if frontends.is_empty() {
            self.report(Kind::NoFrontend {
                span: d.name.span,
                service: d.name.name.clone(),
            });
        }
        if backends_lines.len() != 1 {
            self.report(Kind::BackendsCount {
                span: d.name.span,
                service: d.name.name.clone(),
                lines: backends_lines.iter().map(|b| backends_span(b)).collect(),
            });
        }
        let backends = match backends_lines.first() {
            None => model::BackendSource::Explicit(vec![]),
            Some(ast::Backends::Select { selector, port, .. }) => {
                let sel = self.sel(selector);
                let port = self.target_port(port);
                if let Some(s) = &sel {
                    self.sel_uses.push(SelUse {
                        span: selector.span(),
                        what: format!("backends of service `{}`", d.name.name),
                        sel: s.clone(),
                    });
                }
                model::BackendSource::Select {
                    selector: sel.unwrap_or(model::Sel::All),
                    port,
                }
            }
            Some(ast::Backends::Explicit { list, .. }) => {
                let mut bs = Vec::new();
                for b in list {
                    let addr = self.single_addr(&b.socket.addr, "a backend address");
                    let port = self.port(&b.socket.port);
                    let weight = b
                        .weight
                        .as_ref()
                        .map(|w| self.num(w, "weight", 0, 65535) as u16)
                        .unwrap_or(1);
                    bs.push(model::Backend {
                        addr,
                        port,
                        weight,
                        endpoint: None,
                    });
                }
                model::BackendSource::Explicit(bs)
            }
        };
        model::Service {
            name: d.name.name.clone(),
            frontends: frontends.into_iter().map(|(f, _)| f).collect(),
            backends,
            balance: balance.map(|b| b.0).unwrap_or(model::Balance::Random),
            affinity: affinity.map(|a| a.0),
            span: d.span,
        }
    }

    fn services(&mut self) -> Vec<model::Service> {
        let decls = self.sorted_by_source(self.services.values().copied(), |d| d.span);
        let mut owners: BTreeMap<model::Frontend, (String, Span)> = BTreeMap::new();
        let mut out = Vec::new();
        for d in decls {
            let s = self.service(d);
            let spans = d.items.iter().filter_map(|i| match i {
                ast::ServiceItem::Frontend(f) => Some(f.socket.span),
                _ => None,
            });
            for (f, span) in s.frontends.iter().zip(spans) {
                if let Some((other, first)) = owners.get(f) {
                    self.report(Kind::SharedFrontend {
                        span,
                        frontend: format!("{}/{}", socket(f.addr, f.port), proto_name(f.proto)),
                        service: s.name.clone(),
                        other: other.clone(),
                        first: *first,
                    });
                } else {
                    owners.insert(*f, (s.name.clone(), span));
                }
            }
            out.push(s);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn tiers(&mut self) -> Vec<model::Tier> {
        let mut out = Vec::new();
        let decls: Vec<&ast::TierDecl> = self.tiers.values().copied().collect();
        for d in decls {
            let order = self.num(&d.order, "tier order", 0, u64::from(u32::MAX)) as u32;
            out.push(model::Tier {
                name: d.name.name.clone(),
                order,
                audit: d.audit.is_some(),
                default_pass: d.default_pass.is_some(),
                span: Some(d.span),
            });
        }
        if !out.iter().any(|t| t.name == "default") {
            out.push(model::Tier {
                name: "default".into(),
                order: 1000,
                audit: false,
                default_pass: false,
                span: None,
            });
        }
        out.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
        out
    }

    fn rules(&mut self, block: &ast::RuleBlock, policy: &str) -> Vec<model::Rule> {
        let mut out = Vec::with_capacity(block.rules.len());
        for r in &block.rules {
            let (good, bad) = match block.direction {
                Direction::Ingress => (&r.from, &r.to),
                Direction::Egress => (&r.to, &r.from),
            };
            if let Some(b) = bad {
                self.report(Kind::WrongPeerKeyword {
                    span: peer_span(b),
                    direction: block.direction,
                });
            }
            let what = format!("peer of a rule in policy `{policy}`");
            let peer = match good.as_ref().or(bad.as_ref()) {
                None => Some(model::PeerMatch::Any),
                Some(p) => self.peer(p, &what),
            };
            let proto = self.proto(r.proto.as_ref());
            let action = match r.action.0 {
                ast::Action::Allow => model::Action::Allow,
                ast::Action::Deny => model::Action::Deny,
                ast::Action::Pass => model::Action::Pass,
                ast::Action::Log => model::Action::Log,
            };
            out.push(model::Rule {
                action,
                proto,
                // An unresolvable peer matches nothing useful; the model is
                // only used when there are no errors.
                peer: peer.unwrap_or(model::PeerMatch::Set(model::AddrSet::default())),
                log: r.log.is_some(),
                span: r.span,
            });
        }
        out
    }

    /// A steering action as written (a steer rule, or an `expect` line's
    /// steering assertion).
    pub(super) fn steer_action(&mut self, a: &ast::SteerAction) -> model::SteerAction {
        match a {
            ast::SteerAction::Redirect(s) => {
                let addr = self.single_addr(&s.addr, "a proxy address");
                let port = self.port(&s.port);
                model::SteerAction::Redirect { addr, port }
            }
            ast::SteerAction::Mark(n) => {
                model::SteerAction::Mark(self.num(n, "mark", 0, u64::from(u32::MAX)) as u32)
            }
            ast::SteerAction::Dscp(n) => {
                model::SteerAction::Dscp(self.num(n, "DSCP value", 0, 63) as u8)
            }
            ast::SteerAction::Bypass => model::SteerAction::Bypass,
        }
    }

    fn policy(&mut self, d: &'a ast::PolicyDecl, tiers: &[model::Tier]) -> model::Policy {
        let priority = d
            .priority
            .as_ref()
            .map(|n| self.num(n, "priority", 0, 65535) as u16)
            .unwrap_or(1000);
        let tier_name = d
            .tier
            .as_ref()
            .map(|t| t.name.as_str())
            .unwrap_or("default");
        let tier = match tiers.iter().position(|t| t.name == tier_name) {
            Some(i) => i,
            None => {
                let t = d.tier.as_ref().expect("default tier always exists");
                let suggestion = super::suggest(&t.name, tiers.iter().map(|t| t.name.as_str()));
                self.report(Kind::UnknownTier {
                    span: t.span,
                    name: t.name.clone(),
                    suggestion,
                });
                tiers.iter().position(|t| t.name == "default").unwrap_or(0)
            }
        };
        let mut applies: Option<(model::Sel, Span)> = None;
        let mut applies_seen: Option<Span> = None;
        let mut blocks: BTreeMap<Direction, (Vec<model::Rule>, Span)> = BTreeMap::new();
        for item in &d.items {
            match item {
                ast::PolicyItem::AppliesTo(e, span) => {
                    if let Some(first) = applies_seen {
                        self.report(Kind::DuplicateAppliesTo { span: *span, first });
                        continue;
                    }
                    applies_seen = Some(*span);
                    if let Some(s) = self.sel(e) {
                        self.sel_uses.push(SelUse {
                            span: e.span(),
                            what: format!("`applies to` of policy `{}`", d.name.name),
                            sel: s.clone(),
                        });
                        applies = Some((s, *span));
                    }
                }
                ast::PolicyItem::Rules(b) => {
                    if let Some((_, first)) = blocks.get(&b.direction) {
                        let first = *first;
                        self.report(Kind::DuplicateBlock {
                            span: b.span,
                            direction: b.direction,
                            first,
                        });
                        // Still check its rules.
                        self.rules(b, &d.name.name);
                        continue;
                    }
                    let rules = self.rules(b, &d.name.name);
                    blocks.insert(b.direction, (rules, b.span));
                }
            }
        }
        if applies_seen.is_none() {
            self.report(Kind::NoAppliesTo {
                span: d.name.span,
                policy: d.name.name.clone(),
            });
        }
        model::Policy {
            name: d.name.name.clone(),
            tier,
            priority,
            // Without a valid selector the policy applies to nothing.
            applies_to: applies
                .map(|a| a.0)
                .unwrap_or_else(|| model::Sel::Not(Box::new(model::Sel::All))),
            ingress: blocks.remove(&Direction::Ingress).map(|b| b.0),
            egress: blocks.remove(&Direction::Egress).map(|b| b.0),
            audit: d.audit.is_some() || tiers[tier].audit,
            span: d.span,
            name_span: d.name.span,
        }
    }

    fn steer(&mut self, d: &'a ast::SteerDecl) -> model::Steer {
        let priority = d
            .priority
            .as_ref()
            .map(|n| self.num(n, "priority", 0, 65535) as u16)
            .unwrap_or(1000);
        let mut rules = Vec::new();
        for r in &d.rules {
            let action = self.steer_action(&r.action);
            self.no_named_port(r.proto.as_ref(), "a steering rule");
            let proto = self.proto(r.proto.as_ref());
            let what = format!("peer of a rule in steer block `{}`", d.name.name);
            let peer = |cx: &mut Cx<'a>, p: &Option<Peer>| match p {
                None => model::PeerMatch::Any,
                Some(p) if cx.subjectless_peer(p, "a steering rule") => {
                    model::PeerMatch::Set(model::AddrSet::default())
                }
                Some(p) => cx
                    .peer(p, &what)
                    .unwrap_or(model::PeerMatch::Set(model::AddrSet::default())),
            };
            let from = peer(self, &r.from);
            let to = peer(self, &r.to);
            rules.push(model::SteerRule {
                action,
                proto,
                from,
                to,
                span: r.span,
            });
        }
        model::Steer {
            name: d.name.name.clone(),
            priority,
            rules,
            span: d.span,
        }
    }

    /// Builds the whole model.
    pub(super) fn build(&mut self, inventory: Option<Inventory>) -> Model {
        let mut model = Model::default();

        // Named selectors and sets (also reports errors in unused ones).
        let peers: Vec<(String, PeerDecl<'a>)> =
            self.peers.iter().map(|(n, d)| (n.clone(), *d)).collect();
        for (name, d) in peers {
            match d {
                PeerDecl::Selector(s) => {
                    if let Some(sel) = self.named_sel(s, s.name.span) {
                        model.named_selectors.insert(name, sel);
                    }
                }
                PeerDecl::Set(s) => {
                    if let Some(set) = self.named_set(s, s.name.span) {
                        model.named_sets.insert(name, set);
                    }
                }
            }
        }

        self.node_model = self.nodes();
        model.nodes = self.node_model.clone();
        model.namespaces = self.namespace_table(inventory.as_ref());
        model.endpoints = self.endpoints(inventory);
        model.services = self.services();
        model.tiers = self.tiers();

        let decls = self.sorted_by_source(self.policies.values().copied(), |d| d.span);
        let mut policies: Vec<model::Policy> = decls
            .into_iter()
            .map(|d| self.policy(d, &model.tiers))
            .collect();
        policies.sort_by(|a, b| {
            let ta = &model.tiers[a.tier];
            let tb = &model.tiers[b.tier];
            (ta.order, &ta.name, a.priority, &a.name)
                .cmp(&(tb.order, &tb.name, b.priority, &b.name))
        });
        model.policies = policies;

        let decls = self.sorted_by_source(self.steers.values().copied(), |d| d.span);
        self.proxy_addresses(&decls);
        let mut steers: Vec<model::Steer> = decls.into_iter().map(|d| self.steer(d)).collect();
        steers.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
        model.steers = steers;

        for d in self.default_denies.clone() {
            for (dir, span) in &d.directions {
                let slot = match dir {
                    Direction::Ingress => &mut model.default_deny.ingress,
                    Direction::Egress => &mut model.default_deny.egress,
                };
                if slot.is_none() {
                    *slot = Some(*span);
                }
            }
        }

        let tests = self.tests.clone();
        model.tests = tests.into_iter().map(|t| self.test(t, &model)).collect();
        model
    }
}

fn backends_span(b: &ast::Backends) -> Span {
    match b {
        ast::Backends::Select { span, .. } | ast::Backends::Explicit { span, .. } => *span,
    }
}

pub(super) fn socket(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

pub(super) fn proto_name(p: ast::Proto) -> &'static str {
    p.keyword()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_ports() {
        let r = |lo, hi| model::PortRange { lo, hi };
        assert_eq!(
            model::PortRange::merge(vec![r(80, 80), r(81, 90), r(443, 443), r(85, 86)]),
            vec![r(80, 90), r(443, 443)]
        );
    }
}
