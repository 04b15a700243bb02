//! Service (v1) and EndpointSlice (discovery.k8s.io/v1) → weir services.
//!
//! One weir service per Service port (`svc_NS_NAME_PORT`): weir's
//! `backends select SEL port N` has one target port, a multi-port Service
//! has one per port (each with its own name, protocol, port and
//! `targetPort`). Frontends are the ClusterIPs (every family) at the
//! port, plus the external ones ([`super::frontends`]: node ports,
//! `externalIPs`, load-balancer ingress IPs). Backends, in order of
//! preference:
//! - the Service's EndpointSlices in the input (ready endpoints at the
//!   slice port of the same name and protocol), as an explicit list;
//! - else the selector's pods (ready ones, from the inventory) at
//!   `targetPort`: a number (`select … port N`), or a container port
//!   name (`select … port "NAME"`: each pod's own port of that name, the
//!   pods' named ports being in the inventory);
//! - else none (`backends {}`: connections are rejected, as Kubernetes
//!   does for a Service without endpoints), said as W0604.
//!
//! A traffic policy `Local` with a node keeps that node's endpoints
//! (EndpointSlice `nodeName`, pod `spec.nodeName`). When the internal and
//! external frontends end up with different backends (one policy `Local`,
//! the other not), the external frontends are a second weir service,
//! `svc_NS_NAME_PORT_external`.

use super::cluster::{part, Proto};
use super::emit::{mangle, Service};
use super::frontends::{External, Scope};
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

pub fn translate(obj: &Obj, objs: &[Obj], scope: Scope<'_>, rep: &mut Reporter) -> Vec<Service> {
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
    let external = External::read(obj, &what, &spec, scope, rep);
    let svc = Translating {
        obj,
        what: &what,
        ns: &ns,
        spec: &spec,
        vips: &vips,
        external,
        scope,
        affinity: affinity(&spec),
        slices: endpoint_slices(obj, objs, &ns),
    };
    spec.ports
        .iter()
        .flatten()
        .enumerate()
        .flat_map(|(k, p)| svc.port(k, p, rep))
        .collect()
}

/// False when nothing of the Service is imported (an ExternalName
/// Service), said as W0604.
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
    external: External,
    scope: Scope<'a>,
    affinity: Option<String>,
    slices: Vec<(&'a Obj, EndpointSlice)>,
}

/// One Service port, read.
struct Port {
    path: String,
    proto: Proto,
    port: u16,
    node_port: Option<u16>,
    /// `spec.ports[k].name` ("" when unnamed).
    name: String,
}

impl Translating<'_> {
    /// The weir services of port `k` (`p`): one, or two when the external
    /// frontends have other backends; none when the port is malformed.
    fn port(&self, k: usize, p: &ServicePort, rep: &mut Reporter) -> Vec<Service> {
        let Some(sp) = self.read_port(k, p, rep) else {
            return Vec::new();
        };
        let suffix = if sp.name.is_empty() {
            sp.port.to_string()
        } else {
            mangle(&sp.name)
        };
        let name = format!(
            "svc_{}_{}_{}",
            mangle(self.ns),
            mangle(&self.obj.name),
            suffix
        );
        let shown = if sp.name.is_empty() {
            sp.port.to_string()
        } else {
            sp.name.clone()
        };
        let text = |fs: &[(IpAddr, u16)]| -> Vec<String> {
            fs.iter()
                .map(|(a, n)| format!("{}/{}", socket(*a, *n), sp.proto.keyword()))
                .collect()
        };
        let internal: Vec<(IpAddr, u16)> = self.vips.iter().map(|a| (*a, sp.port)).collect();
        let external = self.external.sockets(sp.port, sp.node_port);
        let int_node = self.external.internal_node.as_deref();
        let ext_node = self.external.external_node.as_deref();
        let Some((backends, notes)) = self.backends(&sp, p, int_node, rep) else {
            return Vec::new();
        };
        let service =
            |name: String, what: String, fs: &[(IpAddr, u16)], b: String, notes: Vec<String>| {
                let mut comment = vec![format!("{} port {shown}{what}", self.what)];
                comment.extend(notes);
                Service {
                    comment,
                    name,
                    frontends: text(fs),
                    backends: b,
                    affinity: self.affinity.clone(),
                }
            };
        if external.is_empty() || int_node == ext_node {
            let mut all = internal;
            all.extend(external);
            return vec![service(name, String::new(), &all, backends, notes)];
        }
        let Some((ext_backends, ext_notes)) = self.backends(&sp, p, ext_node, rep) else {
            return Vec::new();
        };
        vec![
            service(
                name.clone(),
                " (ClusterIP)".into(),
                &internal,
                backends,
                notes,
            ),
            service(
                format!("{name}_external"),
                " (node ports, external and load-balancer IPs)".into(),
                &external,
                ext_backends,
                ext_notes,
            ),
        ]
    }

    fn read_port(&self, k: usize, p: &ServicePort, rep: &mut Reporter) -> Option<Port> {
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
        let node_port = match p.node_port {
            None | Some(0) => None,
            Some(n) => match u16::try_from(n) {
                Ok(n) => Some(n),
                Err(_) => {
                    rep.malformed(obj.span, what, format!("`{path}.nodePort` is not a port"));
                    return None;
                }
            },
        };
        Some(Port {
            path,
            proto,
            port,
            node_port,
            name: p.name.clone().unwrap_or_default(),
        })
    }

    /// A port's backends line and comment lines; `node`: only that node's
    /// endpoints (`Local`). None when `targetPort` is malformed.
    fn backends(
        &self,
        sp: &Port,
        p: &ServicePort,
        node: Option<&str>,
        rep: &mut Reporter,
    ) -> Option<(String, Vec<String>)> {
        let mut comment = Vec::new();
        if let Some(n) = node {
            comment.push(format!("traffic policy Local: the endpoints on node {n}"));
        }
        let backends = if !self.slices.is_empty() {
            comment.push(format!(
                "backends from {} EndpointSlice(s)",
                self.slices.len()
            ));
            slice_backends(&self.slices, &sp.name, sp.proto, node)
        } else if let Some(sel) = self.spec.selector.as_ref().filter(|s| !s.is_empty()) {
            let target = Target {
                sel,
                path: &sp.path,
                port: sp.port,
                node,
            };
            self.selector_backends(&target, p, &mut comment, rep)?
        } else {
            let shown = if sp.name.is_empty() {
                sp.port.to_string()
            } else {
                sp.name.clone()
            };
            rep.not_imported(
                self.obj.span,
                self.what,
                format!("backends of port {shown}"),
                "no selector and no EndpointSlice in the input: connections are rejected",
            );
            "backends {}".to_string()
        };
        Some((backends, comment))
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
        let mut m = PodMatch {
            namespace: Some(self.ns.to_string()),
            pods: Some(LabelSelector {
                match_labels: Some(t.sel.clone()),
                ..LabelSelector::default()
            }),
            ..PodMatch::default()
        };
        if let Some(node) = t.node {
            // Local: the selected pods that run on the node.
            let cluster = self.scope.cluster;
            let on_node: Vec<(String, String)> = cluster
                .pods
                .iter()
                .filter(|pod| pod.node.as_deref() == Some(node) && m.matches(pod, cluster))
                .map(|pod| (pod.namespace.clone(), pod.name.clone()))
                .collect();
            if on_node.is_empty() {
                comment.push(format!(
                    "no selected pod runs on node {node}: connections are refused there"
                ));
                return Some("backends {}".into());
            }
            // `only` names the namespace already.
            m.namespace = None;
            m.only = Some(on_node);
        }
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
    /// `Local`: only the pods on this node.
    node: Option<&'a str>,
}

/// A port's backends from EndpointSlices: the ready endpoints (on
/// `node`, when given) at the slice port of the same name and protocol.
fn slice_backends(
    slices: &[(&Obj, EndpointSlice)],
    pname: &str,
    proto: Proto,
    node: Option<&str>,
) -> String {
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
            if node.is_some() && e.node_name.as_deref() != node {
                continue;
            }
            for a in e.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                b.push(socket(a, tp));
            }
        }
    }
    explicit(b)
}
