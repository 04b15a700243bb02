//! The syntax tree as [`Doc`]s, item by item.

use super::{Doc, Emitter, List, WIDTH};
use weir_grammar::ast::*;
use weir_grammar::Span;

fn seq(v: Vec<Doc>) -> Doc {
    Doc::Seq(v)
}

fn t(s: impl Into<String>) -> Doc {
    Doc::text(s)
}

/// Which top-level items group without blank lines when on one line.
fn group_kind(item: &Item) -> Option<u8> {
    match item {
        Item::Import(_) => Some(0),
        Item::Selector(_) => Some(1),
        Item::Set(_) => Some(2),
        Item::Endpoint(_) => Some(3),
        Item::Tier(_) => Some(4),
        Item::DefaultDeny(_) => Some(5),
        Item::Inventory(_) => Some(6),
        _ => None,
    }
}

impl Emitter<'_> {
    pub(super) fn file(&mut self, file: &File) {
        let mut prev: Option<Option<u8>> = None;
        for item in &file.items {
            let kind = group_kind(item).filter(|_| self.one_line(item));
            let forced = match prev {
                None => false,
                Some(p) => kind.is_none() || p != kind,
            };
            self.item_gap(item.span().start as usize, forced);
            self.item(item);
            prev = Some(kind);
        }
    }

    /// Whether a groupable item prints on one line.
    fn one_line(&self, item: &Item) -> bool {
        let doc = match item {
            Item::Import(i) => self.import(i),
            Item::Selector(s) => self.selector_decl(s),
            Item::Set(s) => self.set_decl(s),
            Item::Endpoint(e) => self.endpoint(e),
            Item::Node(n) => self.endpoint_kw(&n.decl, "node"),
            Item::Tier(t) => self.tier(t),
            Item::DefaultDeny(d) => self.default_deny(d),
            Item::Inventory(i) => self.inventory(i),
            _ => return false,
        };
        !self.has_comments_in(item.span()) && doc.flat_string().chars().count() <= WIDTH
    }

    fn item(&mut self, item: &Item) {
        match item {
            Item::Import(i) => {
                let d = self.import(i);
                self.construct(i.span, &d, "");
            }
            Item::Selector(s) => {
                let d = self.selector_decl(s);
                self.construct(s.span, &d, "");
            }
            Item::Set(s) => {
                let d = self.set_decl(s);
                self.construct(s.span, &d, "");
            }
            Item::Namespace(n) => {
                let d = self.namespace_decl(n);
                self.construct(n.span, &d, "");
            }
            Item::Endpoint(e) => {
                let d = self.endpoint(e);
                self.construct(e.span, &d, "");
            }
            Item::Node(n) => {
                let d = self.endpoint_kw(&n.decl, "node");
                self.construct(n.decl.span, &d, "");
            }
            Item::Tier(x) => {
                let d = self.tier(x);
                self.construct(x.span, &d, "");
            }
            Item::DefaultDeny(x) => {
                let d = self.default_deny(x);
                self.construct(x.span, &d, "");
            }
            Item::Inventory(x) => {
                let d = self.inventory(x);
                self.construct(x.span, &d, "");
            }
            Item::Service(s) => self.service(s),
            Item::Policy(p) => self.policy(p),
            Item::Steer(s) => self.steer(s),
            Item::Test(x) => self.test(x),
        }
    }

    // ------------------------------------------------------------ leaves

    fn lit(&self, span: Span) -> Doc {
        t(self.slice(span))
    }

    fn label(&self, l: &Label) -> String {
        self.slice(l.span).to_string()
    }

    fn num(&self, n: &Num) -> String {
        self.slice(n.span).to_string()
    }

    fn target_port(&self, p: &TargetPort) -> String {
        match p {
            TargetPort::Number(n) => self.num(n),
            TargetPort::Named(l) => self.label(l),
        }
    }

    fn socket(&self, s: &SocketLit) -> String {
        let addr = self.slice(s.addr.span);
        if s.addr.addr.is_ipv6() {
            format!("[{addr}]:{}", self.num(&s.port))
        } else {
            format!("{addr}:{}", self.num(&s.port))
        }
    }

    fn list(&self, items: Vec<(Span, Doc)>, span: Span) -> Doc {
        Doc::List(Box::new(List {
            items,
            commas: true,
            span,
        }))
    }

    fn label_list(&self, labels: &[Label], span: Span) -> Doc {
        let items = labels.iter().map(|l| (l.span, t(self.label(l)))).collect();
        self.list(items, span)
    }

    fn label_map(&self, pairs: &[(Label, Label)], span: Span) -> Doc {
        let items = pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.span.to(v.span),
                    t(format!("{}: {}", self.label(k), self.label(v))),
                )
            })
            .collect();
        self.list(items, span)
    }

    // ------------------------------------------------------------ selectors

    fn sel(&self, e: &SelExpr) -> Doc {
        match e {
            SelExpr::All(_) => t("all"),
            SelExpr::Eq(k, v, _) => t(format!("{} == {}", self.label(k), self.label(v))),
            SelExpr::Ne(k, v, _) => t(format!("{} != {}", self.label(k), self.label(v))),
            SelExpr::In(k, vs, s) | SelExpr::NotIn(k, vs, s) => {
                let op = if matches!(e, SelExpr::In(..)) {
                    " in "
                } else {
                    " not in "
                };
                let start = vs.first().map_or(s.end, |v| v.span.start);
                let span = Span {
                    start,
                    end: s.end,
                    file: s.file,
                };
                seq(vec![
                    t(format!("{}{op}", self.label(k))),
                    self.label_list(vs, span),
                ])
            }
            SelExpr::Has(k, _) => t(format!("has({})", self.label(k))),
            SelExpr::Namespace(e, _) => seq(vec![t("namespace("), self.sel(e), t(")")]),
            SelExpr::Not(e, _) => seq(vec![t("!"), self.sel(e)]),
            SelExpr::And(a, b, _) => seq(vec![self.sel(a), t(" && "), self.sel(b)]),
            SelExpr::Or(a, b, _) => seq(vec![self.sel(a), t(" || "), self.sel(b)]),
            SelExpr::Name(i) => t(i.name.clone()),
            SelExpr::Paren(e, _) => seq(vec![t("("), self.sel(e), t(")")]),
            // Not reached: files with errors are not formatted.
            SelExpr::Error(s) => self.lit(*s),
        }
    }

    // ------------------------------------------------------------ sets

    fn set_elem(&self, e: &SetElem) -> (Span, Doc) {
        match e {
            SetElem::Cidr(c) => (c.span, self.lit(c.span)),
            SetElem::Name(n) => (n.span, t(n.name.clone())),
        }
    }

    /// A set atom: bare when written bare (one element whose span is the
    /// atom's), else a brace list.
    fn set_atom(&self, elems: &[SetElem], span: Span) -> Doc {
        if let [one] = elems {
            let (s, d) = self.set_elem(one);
            if s == span {
                return d;
            }
        }
        self.list(elems.iter().map(|e| self.set_elem(e)).collect(), span)
    }

    fn set_expr(&self, e: &SetExpr) -> Doc {
        let mut v = vec![self.set_atom(&e.base, e.base_span)];
        if let Some((x, s)) = &e.except {
            v.push(t(" except "));
            v.push(self.set_atom(x, *s));
        }
        seq(v)
    }

    fn peer(&self, p: &Peer) -> Doc {
        match p {
            Peer::Any(_) => t("any"),
            Peer::Set(s) => self.set_expr(s),
            Peer::Selector(s) => self.sel(s),
            Peer::Labels(pairs, span) => self.label_map(pairs, *span),
            Peer::SelfEp(_) => t("self"),
            Peer::World(None, _) => t("world"),
            Peer::World(Some(s), _) => seq(vec![t("world "), self.set_expr(s)]),
            Peer::OwnNode(_) => t("node"),
            Peer::Nodes(s, _) => seq(vec![t("nodes "), self.sel(s)]),
        }
    }

    fn proto(&self, p: &ProtoMatch) -> Doc {
        match p {
            ProtoMatch::Any(_) => t("any"),
            ProtoMatch::Ports { proto, ports, span } => {
                let name = proto_name(*proto);
                match ports.as_slice() {
                    [] => t(name),
                    [one] => t(format!("{name} {}", self.port_range(one))),
                    many => {
                        let list_span = Span {
                            start: many[0].span.start,
                            ..*span
                        };
                        let items = many
                            .iter()
                            .map(|r| (r.span, t(self.port_range(r))))
                            .collect();
                        seq(vec![t(format!("{name} ")), self.list(items, list_span)])
                    }
                }
            }
            ProtoMatch::Named { proto, name, .. } => {
                t(format!("{} port {}", proto_name(*proto), self.label(name)))
            }
            ProtoMatch::Icmp {
                proto, ty, code, ..
            } => {
                let mut s = proto.keyword().to_string();
                if let Some(ty) = ty {
                    s.push_str(&format!(" type {}", self.num(ty)));
                    if let Some(c) = code {
                        s.push_str(&format!(" code {}", self.num(c)));
                    }
                }
                t(s)
            }
        }
    }

    fn port_range(&self, r: &PortRange) -> String {
        match &r.hi {
            Some(hi) => format!("{}-{}", self.num(&r.lo), self.num(hi)),
            None => self.num(&r.lo),
        }
    }

    // ------------------------------------------------------------ items

    fn import(&self, i: &Import) -> Doc {
        let path: Vec<&str> = i.path.iter().map(|s| s.name.as_str()).collect();
        t(format!("import {}", path.join(".")))
    }

    fn inventory(&self, i: &InventoryDecl) -> Doc {
        t(format!("inventory {}", self.slice(i.path_span)))
    }

    fn selector_decl(&self, s: &SelectorDecl) -> Doc {
        seq(vec![
            t(format!("selector {} = ", s.name.name)),
            self.sel(&s.expr),
        ])
    }

    fn set_decl(&self, s: &SetDecl) -> Doc {
        seq(vec![
            t(format!("set {} = ", s.name.name)),
            self.set_expr(&s.expr),
        ])
    }

    fn tier(&self, x: &TierDecl) -> Doc {
        let audit = if x.audit.is_some() { " audit" } else { "" };
        let pass = if x.default_pass.is_some() {
            " default pass"
        } else {
            ""
        };
        t(format!(
            "tier {} order {}{audit}{pass}",
            x.name.name,
            self.num(&x.order)
        ))
    }

    fn default_deny(&self, d: &DefaultDenyDecl) -> Doc {
        let dirs: Vec<&str> = d.directions.iter().map(|(d, _)| dir_name(*d)).collect();
        t(format!("default deny {}", dirs.join(", ")))
    }

    fn endpoint(&self, e: &EndpointDecl) -> Doc {
        self.endpoint_kw(e, "endpoint")
    }

    /// An endpoint or a node (`keyword`): the same lines.
    fn endpoint_kw(&self, e: &EndpointDecl, keyword: &str) -> Doc {
        let mut items = Vec::new();
        for n in &e.namespace {
            items.push((n.span, t(format!("namespace {}", n.name))));
        }
        if let (Some(first), Some(last)) = (e.labels.first(), e.labels.last()) {
            let span = first.0.span.to(last.1.span);
            items.push((
                span,
                seq(vec![t("labels "), self.label_map(&e.labels, span)]),
            ));
        }
        for a in &e.addrs {
            items.push((a.span, t(format!("addr {}", self.slice(a.span)))));
        }
        if let (Some(first), Some(last)) = (e.ports.first(), e.ports.last()) {
            let span = first.span.to(last.span);
            let ports = e
                .ports
                .iter()
                .map(|p| {
                    let text = format!(
                        "{}: {}/{}",
                        self.label(&p.name),
                        self.num(&p.port),
                        proto_name(p.proto.0)
                    );
                    (p.span, t(text))
                })
                .collect();
            items.push((span, seq(vec![t("ports "), self.list(ports, span)])));
        }
        for n in &e.node {
            items.push((n.span, t(format!("node {}", n.name))));
        }
        for s in &e.host_network {
            items.push((*s, t("host network")));
        }
        let body_start = e.name.span.end;
        let body = Span {
            start: body_start,
            ..e.span
        };
        seq(vec![
            t(format!("{keyword} {} ", e.name.name)),
            Doc::List(Box::new(List {
                items,
                commas: false,
                span: body,
            })),
        ])
    }

    /// `namespace NAME { labels { … } }`, laid out as an endpoint is.
    fn namespace_decl(&self, n: &NamespaceDecl) -> Doc {
        let mut items = Vec::new();
        if let (Some(first), Some(last)) = (n.labels.first(), n.labels.last()) {
            let span = first.0.span.to(last.1.span);
            items.push((
                span,
                seq(vec![t("labels "), self.label_map(&n.labels, span)]),
            ));
        }
        let body = Span {
            start: n.name.span.end,
            ..n.span
        };
        seq(vec![
            t(format!("namespace {} ", n.name.name)),
            Doc::List(Box::new(List {
                items,
                commas: false,
                span: body,
            })),
        ])
    }

    fn service(&mut self, s: &ServiceDecl) {
        let header = Span {
            end: s.name.span.end,
            ..s.span
        };
        let hd = t(format!("service {}", s.name.name));
        self.block(header, &hd, s.span, s.items.is_empty(), |e| {
            for item in &s.items {
                let (span, doc) = match item {
                    ServiceItem::Frontend(f) => (
                        f.span,
                        t(format!(
                            "frontend {}/{}",
                            e.socket(&f.socket),
                            proto_name(f.proto.0)
                        )),
                    ),
                    ServiceItem::Backends(Backends::Select {
                        selector,
                        port,
                        span,
                    }) => (
                        *span,
                        seq(vec![
                            t("backends select "),
                            e.sel(selector),
                            t(format!(" port {}", e.target_port(port))),
                        ]),
                    ),
                    ServiceItem::Backends(Backends::Explicit { list, span }) => {
                        let items = list
                            .iter()
                            .map(|b| {
                                let mut s = e.socket(&b.socket);
                                if let Some(w) = &b.weight {
                                    s.push_str(&format!(" weight {}", e.num(w)));
                                }
                                (b.span, t(s))
                            })
                            .collect();
                        (*span, seq(vec![t("backends "), e.list(items, *span)]))
                    }
                    ServiceItem::Balance(b, span) => (
                        *span,
                        t(match b {
                            Balance::Random => "balance random",
                            Balance::Maglev => "balance maglev",
                        }),
                    ),
                    ServiceItem::Affinity(d, span) => {
                        (*span, t(format!("affinity client-ip {}", e.slice(d.span))))
                    }
                };
                e.construct(span, &doc, "");
            }
        });
    }

    fn policy(&mut self, p: &PolicyDecl) {
        let mut h = format!("policy {}", p.name.name);
        let mut end = p.name.span.end;
        if let Some(n) = &p.priority {
            h.push_str(&format!(" priority {}", self.num(n)));
            end = n.span.end;
        }
        if let Some(tier) = &p.tier {
            h.push_str(&format!(" tier {}", tier.name));
            end = tier.span.end;
        }
        if let Some(a) = p.audit {
            h.push_str(" audit");
            end = a.end;
        }
        let header = Span { end, ..p.span };
        self.block(header, &t(h), p.span, p.items.is_empty(), |e| {
            for item in &p.items {
                match item {
                    PolicyItem::AppliesTo(sel, span) => {
                        let d = seq(vec![t("applies to "), e.sel(sel)]);
                        e.construct(*span, &d, "");
                    }
                    PolicyItem::Rules(b) => e.rule_block(b),
                }
            }
        });
    }

    fn rule_block(&mut self, b: &RuleBlock) {
        let kw = dir_name(b.direction);
        let header = Span {
            end: b.span.start + kw.len() as u32,
            ..b.span
        };
        self.block(header, &t(kw), b.span, b.rules.is_empty(), |e| {
            for r in &b.rules {
                let d = e.rule(r);
                e.construct(r.span, &d, "");
            }
        });
    }

    fn rule(&self, r: &Rule) -> Doc {
        let mut v = vec![t(match r.action.0 {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Pass => "pass",
            Action::Log => "log",
        })];
        if let Some(p) = &r.proto {
            v.push(t(" "));
            v.push(self.proto(p));
        }
        if let Some(p) = &r.from {
            v.push(t(" from "));
            v.push(self.peer(p));
        }
        if let Some(p) = &r.to {
            v.push(t(" to "));
            v.push(self.peer(p));
        }
        if r.log.is_some() {
            v.push(t(" log"));
        }
        seq(v)
    }

    fn steer(&mut self, s: &SteerDecl) {
        let mut h = format!("steer {}", s.name.name);
        let mut end = s.name.span.end;
        if let Some(n) = &s.priority {
            h.push_str(&format!(" priority {}", self.num(n)));
            end = n.span.end;
        }
        let header = Span { end, ..s.span };
        self.block(header, &t(h), s.span, s.rules.is_empty(), |e| {
            for r in &s.rules {
                let d = e.steer_rule(r);
                e.construct(r.span, &d, "");
            }
        });
    }

    fn steer_rule(&self, r: &SteerRule) -> Doc {
        let mut v = vec![t(match &r.action {
            SteerAction::Redirect(_) => "redirect".to_string(),
            SteerAction::Mark(n) => format!("mark {}", self.num(n)),
            SteerAction::Dscp(n) => format!("dscp {}", self.num(n)),
            SteerAction::Bypass => "bypass".to_string(),
        })];
        if let Some(p) = &r.proto {
            v.push(t(" "));
            v.push(self.proto(p));
        }
        if let Some(p) = &r.from {
            v.push(t(" from "));
            v.push(self.peer(p));
        }
        if let Some(p) = &r.to {
            v.push(t(" to "));
            v.push(self.peer(p));
        }
        if let SteerAction::Redirect(s) = &r.action {
            v.push(t(format!(" to proxy {}", self.socket(s))));
        }
        seq(v)
    }

    fn test(&mut self, x: &TestDecl) {
        let header = Span {
            end: x.name_span.end,
            ..x.span
        };
        let hd = t(format!("test {}", self.slice(x.name_span)));
        self.block(header, &hd, x.span, x.expects.is_empty(), |e| {
            for ex in &x.expects {
                let d = e.expect(ex);
                e.construct(ex.span, &d, "");
            }
        });
    }

    fn expect(&self, x: &Expect) -> Doc {
        let verdict = match x.verdict.0 {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        };
        let mut p = proto_name(x.proto.0).to_string();
        if let Some(ty) = &x.icmp_type {
            p.push_str(&format!(" type {}", self.num(ty)));
            if let Some(c) = &x.icmp_code {
                p.push_str(&format!(" code {}", self.num(c)));
            }
        }
        let mut v = vec![
            t(format!("expect {verdict} {p} from ")),
            self.peer(&x.from),
            t(" to "),
            self.peer(&x.to),
        ];
        let mut tail = String::new();
        if let Some(n) = &x.port {
            tail.push_str(&format!(" port {}", self.num(n)));
        }
        if let Some((s, _)) = &x.state {
            tail.push_str(match s {
                ConnState::New => " state new",
                ConnState::Established => " state established",
            });
        }
        if let Some((d, _)) = &x.at {
            tail.push_str(&format!(" at {}", dir_name(*d)));
        }
        match &x.via {
            Some(Via::Endpoint(id)) => tail.push_str(&format!(" via {}", id.name)),
            Some(Via::Socket(s)) => tail.push_str(&format!(" via {}", self.socket(s))),
            None => {}
        }
        match &x.steering {
            Some((SteerAction::Redirect(s), _)) => {
                tail.push_str(&format!(" redirect to proxy {}", self.socket(s)))
            }
            Some((SteerAction::Mark(n), _)) => tail.push_str(&format!(" mark {}", self.num(n))),
            Some((SteerAction::Dscp(n), _)) => tail.push_str(&format!(" dscp {}", self.num(n))),
            Some((SteerAction::Bypass, _)) => tail.push_str(" bypass"),
            None => {}
        }
        by_text(&mut tail, x.by.as_ref(), x.by_kind);
        if let Some(a) = &x.audit {
            tail.push_str(match a.verdict.0 {
                Verdict::Allow => " audit allow",
                Verdict::Deny => " audit deny",
            });
            by_text(&mut tail, a.by.as_ref(), a.by_kind);
        }
        v.push(t(tail));
        seq(v)
    }
}

/// ` by [KIND] NAME` of an `expect` line or its audit part.
fn by_text(tail: &mut String, by: Option<&Ident>, kind: Option<(ByKind, Span)>) {
    if let Some(by) = by {
        let kind = match kind {
            Some((ByKind::Policy, _)) => "policy ",
            Some((ByKind::Steer, _)) => "steer ",
            Some((ByKind::Service, _)) => "service ",
            None => "",
        };
        tail.push_str(&format!(" by {kind}{}", by.name));
    }
}

fn proto_name(p: Proto) -> &'static str {
    p.keyword()
}

fn dir_name(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}
