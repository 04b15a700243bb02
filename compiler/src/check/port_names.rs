//! Named ports in the checker (docs/language.md §3 "Endpoints", §4 "Named
//! ports"): an endpoint's `ports { NAME: PORT/PROTO }` become its
//! `port:NAME/PROTO` labels ([`crate::named_ports`] says why labels),
//! checked for duplicate names (E0264) and malformed hand-written port
//! labels (E0265); named ports where there is no destination endpoint to
//! resolve them against are refused (E0266); and, over the finished
//! model, rules naming a port no endpoint declares (W0310) or declares
//! only with another protocol (W0311).

use super::Cx;
use crate::diagnostics::Kind;
use crate::model::{self, BackendSource, Model, Proto, ProtoMatch, TargetPort};
use crate::named_ports::{self, LabelProblem};
use std::collections::{BTreeMap, BTreeSet};
use weir_grammar::ast;
use weir_grammar::Span;

impl Cx<'_> {
    /// Adds a source endpoint's declared ports to its labels and checks
    /// the result.
    pub(super) fn endpoint_ports(
        &mut self,
        d: &ast::EndpointDecl,
        labels: &mut BTreeMap<String, String>,
    ) {
        // (name, protocol) → where first declared: a name is declared once
        // per protocol (named_ports::check_labels says why).
        let mut first: BTreeMap<(&str, &str), Span> = BTreeMap::new();
        // Hand-written `port:` labels are declarations too.
        for (k, _) in &d.labels {
            if let Some(np) = k
                .text
                .strip_prefix(named_ports::PREFIX)
                .and_then(|r| r.rsplit_once('/'))
            {
                first.entry(np).or_insert(k.span);
            }
        }
        for p in &d.ports {
            let port = self.port(&p.port);
            let np = (p.name.text.as_str(), p.proto.0.keyword());
            if let Some(f) = first.get(&np) {
                self.report(Kind::DuplicatePortName {
                    span: p.name.span,
                    name: p.name.text.clone(),
                    first: Some(*f),
                });
                continue;
            }
            first.insert(np, p.name.span);
            if !named_ports::valid_port_name(&p.name.text) {
                self.report(Kind::BadPortLabel {
                    span: p.name.span,
                    key: named_ports::key(&p.name.text, p.proto.0),
                });
                continue;
            }
            if port != 0 {
                labels.insert(named_ports::key(&p.name.text, p.proto.0), port.to_string());
            }
        }
        for LabelProblem::Malformed { key } in named_ports::check_labels(labels) {
            let span = d
                .labels
                .iter()
                .find(|(k, _)| k.text == key)
                .map_or(d.name.span, |(k, _)| k.span);
            self.report(Kind::BadPortLabel { span, key });
        }
    }

    /// The port of `backends select … port N | "NAME"`. A named target
    /// port is resolved with each frontend's own protocol
    /// (docs/language.md §4, "Services"), so frontends of several
    /// protocols may share it (E0267 is retired).
    pub(super) fn target_port(&mut self, p: &ast::TargetPort) -> model::TargetPort {
        match p {
            ast::TargetPort::Number(n) => model::TargetPort::Number(self.port(n)),
            ast::TargetPort::Named(name) => model::TargetPort::Named(name.text.clone()),
        }
    }

    /// A named port in a steering rule: steering matches the packet as
    /// sent, before any destination endpoint is known (E0266).
    pub(super) fn no_named_port(&mut self, p: Option<&ast::ProtoMatch>, what: &'static str) {
        if let Some(ast::ProtoMatch::Named { span, .. }) = p {
            self.report(Kind::NamedPortMisplaced { span: *span, what });
        }
    }
}

/// W0310 / W0311 over the finished model (only when it has
/// endpoints: an inventory given later may declare the port).
pub(super) fn run(cx: &mut Cx<'_>, model: &Model) {
    if model.endpoints.is_empty() {
        return;
    }
    // (name) → the protocols some endpoint declares it with.
    let mut declared: BTreeMap<&str, BTreeSet<Proto>> = BTreeMap::new();
    for e in &model.endpoints {
        for k in e.labels.keys() {
            if let Some((name, proto)) = k
                .strip_prefix(named_ports::PREFIX)
                .and_then(|r| r.rsplit_once('/'))
            {
                if let Some(p) = named_ports::port_proto(proto) {
                    declared.entry(name).or_default().insert(p);
                }
            }
        }
    }
    let mut out = Vec::new();
    for pol in &model.policies {
        for r in pol.ingress.iter().chain(pol.egress.iter()).flatten() {
            let ProtoMatch::Named { proto, name } = &r.proto else {
                continue;
            };
            match declared.get(name.as_str()) {
                None => out.push(Kind::UnknownPortName {
                    span: r.span,
                    name: name.clone(),
                    proto: *proto,
                }),
                Some(ps) if !ps.contains(proto) => out.push(Kind::PortProtocolMismatch {
                    span: r.span,
                    name: name.clone(),
                    proto: *proto,
                    declared: ps.iter().copied().collect(),
                }),
                Some(_) => {}
            }
        }
    }
    out.extend(backends_without_port(cx, model));
    cx.diags.extend(out);
}

/// W0312: endpoints a `backends select … port "NAME"` selects that
/// declare NAME for none of the frontends' protocols — they are no
/// backends. (An endpoint declares a name with one protocol, E0264: one
/// that declares it for one protocol of a service whose frontends have
/// several is a backend of that protocol's frontends, as a Kubernetes
/// pod is an endpoint of a Service port whose `targetPort` name and
/// protocol it has.)
fn backends_without_port(cx: &Cx<'_>, model: &Model) -> Vec<Kind> {
    let mut out = Vec::new();
    for s in &model.services {
        let BackendSource::Select {
            selector,
            port: TargetPort::Named(name),
        } = &s.backends
        else {
            continue;
        };
        let protos: BTreeSet<Proto> = s.frontends.iter().map(|f| f.proto).collect();
        if protos.is_empty() {
            continue;
        }
        let lacking: Vec<&str> = model
            .endpoints
            .iter()
            .filter(|e| {
                selector.matches(&e.labels)
                    && protos
                        .iter()
                        .all(|&p| named_ports::resolve(&e.labels, name, p).is_none())
            })
            .map(|e| e.name.as_str())
            .collect();
        if lacking.is_empty() {
            continue;
        }
        let span = cx.services.get(&s.name).map_or(s.span, |d| {
            d.items
                .iter()
                .find_map(|i| match i {
                    ast::ServiceItem::Backends(ast::Backends::Select { span, .. }) => Some(*span),
                    _ => None,
                })
                .unwrap_or(d.name.span)
        });
        out.push(Kind::BackendsWithoutPort {
            span,
            service: s.name.clone(),
            name: name.clone(),
            endpoints: lacking.iter().take(5).map(|s| s.to_string()).collect(),
            count: lacking.len(),
        });
    }
    out
}
