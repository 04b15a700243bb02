//! Service (v1) and EndpointSlice (discovery.k8s.io/v1) → weir services.
//!
//! One weir service per Service port (`svc_NS_NAME_PORT`): weir's
//! `backends select SEL port N` has one target port, a multi-port Service
//! has one per port. Frontends are the ClusterIPs (every family) at the
//! port. Backends, in order of preference:
//! - the Service's EndpointSlices in the input (ready endpoints at the
//!   slice port of the same name), as an explicit list;
//! - else the selector's pods (ready ones, from the inventory) at
//!   `targetPort`: a number (`select … port N`), or a container port
//!   name (`select … port "NAME"`: each pod's own port of that name, the
//!   pods' named ports being in the inventory);
//! - else none (`backends {}`: connections are rejected, as Kubernetes
//!   does for a Service without endpoints), said as W0604.
//!
//! NodePort / LoadBalancer frontends, `externalTrafficPolicy: Local` and
//! `internalTrafficPolicy: Local` have no weir form yet: left out with
//! W0604 (the ClusterIP frontend is imported with cluster-wide backends).

use super::cluster::{part, Proto};
use super::emit::{mangle, Service};
use super::input::Obj;
use super::objects::{EndpointSlice, LabelSelector, Metadata, ServicePort, ServiceSpec};
use super::report::Reporter;
use super::selector::{quote, PodMatch};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

fn socket(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

fn explicit(mut b: Vec<String>) -> String {
    b.sort();
    b.dedup();
    format!("backends {{{}}}", b.join(", "))
}

pub fn translate(obj: &Obj, objs: &[Obj], rep: &mut Reporter) -> Vec<Service> {
    let what = obj.describe();
    let Some(spec) = part::<ServiceSpec>(obj, "spec", rep) else {
        return Vec::new();
    };
    let ns = obj.namespace.clone().unwrap_or_else(|| "default".into());
    if !importable(obj, &what, &spec, rep) {
        return Vec::new();
    }
    let Some(vips) = cluster_ips(obj, &what, &spec, rep) else {
        return Vec::new();
    };
    let svc = Translating {
        obj,
        what: &what,
        ns: &ns,
        spec: &spec,
        vips: &vips,
        affinity: affinity(&spec),
        slices: endpoint_slices(obj, objs, &ns),
    };
    spec.ports
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(k, p)| svc.port(k, p, rep))
        .collect()
}

/// Says what of the Service is not imported; false when nothing is (an
/// ExternalName Service).
fn importable(obj: &Obj, what: &str, spec: &ServiceSpec, rep: &mut Reporter) -> bool {
    let kind = spec.kind.clone().unwrap_or_else(|| "ClusterIP".into());
    if kind == "ExternalName" {
        rep.not_imported(
            obj.span,
            what,
            "the Service",
            "an ExternalName Service is a DNS alias, not a load balancer",
        );
        return false;
    }
    if kind == "NodePort" || kind == "LoadBalancer" {
        rep.not_imported(
            obj.span,
            what,
            format!("its {kind} frontends"),
            "weir has no node-port or load-balancer frontends yet; the ClusterIP is imported",
        );
    }
    for (field, v) in [
        ("externalTrafficPolicy", &spec.external_traffic_policy),
        ("internalTrafficPolicy", &spec.internal_traffic_policy),
    ] {
        if v.as_deref() == Some("Local") {
            rep.not_imported(
                obj.span,
                what,
                format!("`spec.{field}: Local`"),
                "weir has no node-local backends yet; every ready backend is used",
            );
        }
    }
    true
}

/// The ClusterIPs that parse as addresses; None for a headless Service.
fn cluster_ips(
    obj: &Obj,
    what: &str,
    spec: &ServiceSpec,
    rep: &mut Reporter,
) -> Option<Vec<IpAddr>> {
    let mut ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
    if ips.is_empty() {
        ips.extend(spec.cluster_ip.clone());
    }
    if ips.iter().any(|i| i == "None") || ips.is_empty() {
        rep.not_imported(
            obj.span,
            what,
            "the Service",
            "a headless Service (no ClusterIP) has no frontend",
        );
        return None;
    }
    let mut vips = Vec::new();
    for i in &ips {
        match i.parse::<IpAddr>() {
            Ok(a) => vips.push(a),
            Err(_) => rep.malformed(
                obj.span,
                what,
                format!("`spec.clusterIPs`: `{i}` is not an address"),
            ),
        }
    }
    Some(vips)
}

/// `ClientIP` session affinity's timeout (Kubernetes' default 3 hours).
fn affinity(spec: &ServiceSpec) -> Option<String> {
    (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        let secs = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.pointer("/clientIP/timeoutSeconds"))
            .and_then(Value::as_u64)
            .unwrap_or(10800);
        format!("{secs}s")
    })
}

/// The input's EndpointSlices of the Service `obj` (namespace `ns`).
fn endpoint_slices<'a>(obj: &Obj, objs: &'a [Obj], ns: &str) -> Vec<(&'a Obj, EndpointSlice)> {
    objs.iter()
        .filter(|o| o.kind == "EndpointSlice" && o.namespace.as_deref().unwrap_or("default") == ns)
        .filter(|o| {
            part::<Metadata>(o, "metadata", &mut Reporter::default())
                .and_then(|m| m.labels)
                .is_some_and(|l| l.get(SERVICE_NAME_LABEL) == Some(&obj.name))
        })
        .filter_map(|o| {
            serde_json::from_value::<EndpointSlice>(o.value.clone())
                .ok()
                .map(|s| (o, s))
        })
        .collect()
}

/// What every port of one Service shares.
struct Translating<'a> {
    obj: &'a Obj,
    what: &'a str,
    ns: &'a str,
    spec: &'a ServiceSpec,
    vips: &'a [IpAddr],
    affinity: Option<String>,
    slices: Vec<(&'a Obj, EndpointSlice)>,
}

impl Translating<'_> {
    /// The weir service of port `k` (`p`); None when the port is malformed.
    fn port(&self, k: usize, p: &ServicePort, rep: &mut Reporter) -> Option<Service> {
        let (obj, what) = (self.obj, self.what);
        let path = format!("spec.ports[{k}]");
        let Some(proto) = Proto::parse(p.protocol.as_deref()) else {
            rep.malformed(
                obj.span,
                what,
                format!("`{path}.protocol` is not TCP, UDP or SCTP"),
            );
            return None;
        };
        let Ok(port) = u16::try_from(p.port) else {
            rep.malformed(obj.span, what, format!("`{path}.port` is not a port"));
            return None;
        };
        let pname = p.name.clone().unwrap_or_default();
        let suffix = if pname.is_empty() {
            port.to_string()
        } else {
            mangle(&pname)
        };
        let frontends = self
            .vips
            .iter()
            .map(|a| format!("{}/{}", socket(*a, port), proto.keyword()))
            .collect();
        let shown = if pname.is_empty() {
            port.to_string()
        } else {
            pname.clone()
        };
        let mut comment = vec![format!("{what} port {shown}")];
        let backends = if !self.slices.is_empty() {
            comment.push(format!(
                "backends from {} EndpointSlice(s)",
                self.slices.len()
            ));
            slice_backends(&self.slices, &pname, proto)
        } else if let Some(sel) = self.spec.selector.as_ref().filter(|s| !s.is_empty()) {
            let target = Target {
                sel,
                path: &path,
                port,
            };
            self.selector_backends(&target, p, &mut comment, rep)?
        } else {
            rep.not_imported(
                obj.span,
                what,
                format!("backends of port {shown}"),
                "no selector and no EndpointSlice in the input: connections are rejected",
            );
            "backends {}".to_string()
        };
        Some(Service {
            comment,
            name: format!("svc_{}_{}_{}", mangle(self.ns), mangle(&obj.name), suffix),
            frontends,
            backends,
            affinity: self.affinity.clone(),
        })
    }

    /// A port's backends from the Service's selector and `targetPort`
    /// (see the module docs); None when `targetPort` is malformed.
    fn selector_backends(
        &self,
        t: &Target<'_>,
        p: &ServicePort,
        comment: &mut Vec<String>,
        rep: &mut Reporter,
    ) -> Option<String> {
        let (path, port) = (t.path, t.port);
        let m = PodMatch {
            namespace: Some(self.ns.to_string()),
            pods: Some(LabelSelector {
                match_labels: Some(t.sel.clone()),
                ..LabelSelector::default()
            }),
            ..PodMatch::default()
        };
        let text = m.text(path).unwrap_or_default();
        let malformed = |rep: &mut Reporter| {
            rep.malformed(
                self.obj.span,
                self.what,
                format!("`{path}.targetPort` is not a port"),
            );
            None
        };
        Some(match &p.target_port {
            None | Some(Value::Null) => format!("backends select {text} port {port}"),
            Some(Value::Number(n)) => match n.as_u64().and_then(|n| u16::try_from(n).ok()) {
                Some(t) => format!("backends select {text} port {t}"),
                None => return malformed(rep),
            },
            Some(Value::String(s)) if s.parse::<u16>().is_ok() => {
                format!("backends select {text} port {s}")
            }
            Some(Value::String(s)) => {
                // Resolved on each backend pod's container ports, as
                // Kubernetes does (language.md §3 "Services": a pod
                // without the name is no backend).
                comment.push(format!(
                    "targetPort `{s}`: each pod's own port of that name"
                ));
                format!("backends select {text} port {}", quote(s))
            }
            Some(_) => return malformed(rep),
        })
    }
}

/// One Service port as the selector path needs it.
struct Target<'a> {
    sel: &'a BTreeMap<String, String>,
    path: &'a str,
    port: u16,
}

/// A port's backends from EndpointSlices: the ready endpoints at the
/// slice port of the same name and protocol.
fn slice_backends(slices: &[(&Obj, EndpointSlice)], pname: &str, proto: Proto) -> String {
    let mut b = Vec::new();
    for (_, s) in slices {
        let Some(sp) = s.ports.iter().flatten().find(|sp| {
            sp.name.clone().unwrap_or_default() == pname
                && Proto::parse(sp.protocol.as_deref()) == Some(proto)
        }) else {
            continue;
        };
        let Some(tp) = sp.port.and_then(|v| u16::try_from(v).ok()) else {
            continue;
        };
        for e in s.endpoints.iter().flatten() {
            if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for a in e.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                b.push(socket(a, tp));
            }
        }
    }
    explicit(b)
}
