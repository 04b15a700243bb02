//! Service (v1) and EndpointSlice (discovery.k8s.io/v1) → weir services.
//!
//! One weir service per Service port (`svc_NS_NAME_PORT`): weir's
//! `backends select SEL port N` has one target port, a multi-port Service
//! has one per port. Frontends are the ClusterIPs (every family) at the
//! port. Backends, in order of preference:
//! - the Service's EndpointSlices in the input (ready endpoints at the
//!   slice port of the same name), as an explicit list;
//! - else the selector's pods (ready ones, from the inventory) at
//!   `targetPort`: a number, or a container port name resolved on the
//!   pods — `select … port N` when every selected pod has the same
//!   number, else an explicit list of each pod's own number;
//! - else none (`backends {}`: connections are rejected, as Kubernetes
//!   does for a Service without endpoints), said as W0604.
//!
//! NodePort / LoadBalancer frontends, `externalTrafficPolicy: Local` and
//! `internalTrafficPolicy: Local` have no weir form yet: left out with
//! W0604 (the ClusterIP frontend is imported with cluster-wide backends).

use super::cluster::{part, Cluster, Proto};
use super::emit::{mangle, Service};
use super::input::Obj;
use super::objects::{EndpointSlice, LabelSelector, Metadata, ServiceSpec};
use super::peers::resolve_named;
use super::report::Reporter;
use super::selector::PodMatch;
use serde_json::Value;
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

pub fn translate(obj: &Obj, objs: &[Obj], cluster: &Cluster, rep: &mut Reporter) -> Vec<Service> {
    let what = obj.describe();
    let Some(spec) = part::<ServiceSpec>(obj, "spec", rep) else {
        return Vec::new();
    };
    let ns = obj.namespace.clone().unwrap_or_else(|| "default".into());
    let kind = spec.kind.clone().unwrap_or_else(|| "ClusterIP".into());
    if kind == "ExternalName" {
        rep.not_imported(
            obj.span,
            &what,
            "the Service",
            "an ExternalName Service is a DNS alias, not a load balancer",
        );
        return Vec::new();
    }
    if kind == "NodePort" || kind == "LoadBalancer" {
        rep.not_imported(
            obj.span,
            &what,
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
                &what,
                format!("`spec.{field}: Local`"),
                "weir has no node-local backends yet; every ready backend is used",
            );
        }
    }
    let mut ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
    if ips.is_empty() {
        ips.extend(spec.cluster_ip.clone());
    }
    if ips.iter().any(|i| i == "None") || ips.is_empty() {
        rep.not_imported(
            obj.span,
            &what,
            "the Service",
            "a headless Service (no ClusterIP) has no frontend",
        );
        return Vec::new();
    }
    let mut vips = Vec::new();
    for i in &ips {
        match i.parse::<IpAddr>() {
            Ok(a) => vips.push(a),
            Err(_) => rep.malformed(
                obj.span,
                &what,
                format!("`spec.clusterIPs`: `{i}` is not an address"),
            ),
        }
    }
    let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        let secs = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.pointer("/clientIP/timeoutSeconds"))
            .and_then(Value::as_u64)
            .unwrap_or(10800);
        format!("{secs}s")
    });
    let slices: Vec<(&Obj, EndpointSlice)> = objs
        .iter()
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
        .collect();
    let mut out = Vec::new();
    for (k, p) in spec.ports.iter().flatten().enumerate() {
        let path = format!("spec.ports[{k}]");
        let Some(proto) = Proto::parse(p.protocol.as_deref()) else {
            rep.malformed(
                obj.span,
                &what,
                format!("`{path}.protocol` is not TCP, UDP or SCTP"),
            );
            continue;
        };
        let Ok(port) = u16::try_from(p.port) else {
            rep.malformed(obj.span, &what, format!("`{path}.port` is not a port"));
            continue;
        };
        let pname = p.name.clone().unwrap_or_default();
        let suffix = if pname.is_empty() {
            port.to_string()
        } else {
            mangle(&pname)
        };
        let frontends = vips
            .iter()
            .map(|a| format!("{}/{}", socket(*a, port), proto.keyword()))
            .collect();
        let mut comment = vec![format!(
            "{what} port {}",
            if pname.is_empty() {
                port.to_string()
            } else {
                pname.clone()
            }
        )];
        let backends = if !slices.is_empty() {
            comment.push(format!("backends from {} EndpointSlice(s)", slices.len()));
            let mut b = Vec::new();
            for (_, s) in &slices {
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
        } else if let Some(sel) = spec.selector.as_ref().filter(|s| !s.is_empty()) {
            let m = PodMatch {
                namespace: Some(ns.clone()),
                pods: Some(LabelSelector {
                    match_labels: Some(sel.clone()),
                    ..LabelSelector::default()
                }),
                ..PodMatch::default()
            };
            let text = m.text(&path).unwrap_or_default();
            let pods: Vec<_> = cluster
                .pods
                .iter()
                .filter(|q| m.matches(q, cluster))
                .collect();
            match &p.target_port {
                None | Some(Value::Null) => format!("backends select {text} port {port}"),
                Some(Value::Number(n)) => match n.as_u64().and_then(|n| u16::try_from(n).ok()) {
                    Some(t) => format!("backends select {text} port {t}"),
                    None => {
                        rep.malformed(
                            obj.span,
                            &what,
                            format!("`{path}.targetPort` is not a port"),
                        );
                        continue;
                    }
                },
                Some(Value::String(s)) if s.parse::<u16>().is_ok() => {
                    format!("backends select {text} port {s}")
                }
                Some(Value::String(s)) => {
                    let groups = resolve_named(pods.iter().copied(), s, proto);
                    if groups.len() == 1 && groups.values().next().unwrap().len() == pods.len() {
                        let n = groups.keys().next().unwrap();
                        comment.push(format!("targetPort `{s}` is {n} on every selected pod"));
                        format!("backends select {text} port {n}")
                    } else {
                        comment.push(format!("targetPort `{s}` resolved on each pod"));
                        let mut b = Vec::new();
                        for (n, members) in &groups {
                            for q in pods.iter().filter(|q| {
                                q.ready && members.contains(&(q.namespace.clone(), q.name.clone()))
                            }) {
                                b.extend(q.addrs.iter().map(|a| socket(*a, *n)));
                            }
                        }
                        explicit(b)
                    }
                }
                Some(_) => {
                    rep.malformed(
                        obj.span,
                        &what,
                        format!("`{path}.targetPort` is not a port"),
                    );
                    continue;
                }
            }
        } else {
            rep.not_imported(
                obj.span,
                &what,
                format!(
                    "backends of port {}",
                    if pname.is_empty() {
                        port.to_string()
                    } else {
                        pname.clone()
                    }
                ),
                "no selector and no EndpointSlice in the input: connections are rejected",
            );
            "backends {}".to_string()
        };
        out.push(Service {
            comment,
            name: format!("svc_{}_{}_{}", mangle(&ns), mangle(&obj.name), suffix),
            frontends,
            backends,
            affinity: affinity.clone(),
        });
    }
    out
}
