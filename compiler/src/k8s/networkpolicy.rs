//! NetworkPolicy (networking.k8s.io/v1) → one weir policy in the
//! NetworkPolicy tier (`k8s-netpol`).
//!
//! The meanings line up one to one: a NetworkPolicy isolates the pods its
//! `podSelector` picks (in its namespace) for each direction in
//! `policyTypes` — default `Ingress`, plus `Egress` when it has egress
//! rules — and allows the union of its rules; weir's tier isolation
//! default (docs/language.md §4 step 4) denies what no allow rule of the
//! tier's active policies allowed. So a policy *has* a direction exactly
//! when the NetworkPolicy's `policyTypes` has it (an empty block is
//! "deny all"), and every rule is `allow`.
//!
//! Fail closed: every constraint the importer does not understand makes
//! the *allowance* smaller, never larger. A rule, peer or port with an
//! unknown field is dropped (W0601), and a rule all of whose peers or
//! ports were dropped is dropped — it never becomes "from anywhere" or
//! "every port". An unknown field in `spec` refuses the object (E0602).

use super::cluster::{part, Proto};
use super::emit::{group, mangle, Action, Policy, Rule};
use super::input::Obj;
use super::objects::{unknown, NetworkPolicySpec, NpPeer, NpPort, NpRule};
use super::peers::{cidr, named, set_text, Named, PeerSrc};
use super::report::Reporter;
use super::selector::PodMatch;
use serde_json::Value;

pub const TIER: &str = "k8s-netpol";

enum PortItem {
    Numeric(Proto, Option<(u16, u16)>),
    Named(Proto, String),
}

pub fn translate(obj: &Obj, rep: &mut Reporter) -> Vec<Policy> {
    let what = obj.describe();
    if obj.api_version != "networking.k8s.io/v1" {
        rep.refused(
            obj.span,
            &what,
            "apiVersion",
            format!("`{}` is not networking.k8s.io/v1", obj.api_version),
        );
        return Vec::new();
    }
    let Some(spec) = part::<Option<NetworkPolicySpec>>(obj, "spec", rep) else {
        return Vec::new();
    };
    let Some(spec) = spec else {
        rep.malformed(obj.span, &what, "no `spec`".into());
        return Vec::new();
    };
    if let Some(f) = unknown(&spec.rest, "spec") {
        rep.refused(
            obj.span,
            &what,
            &f,
            "an unknown field of the policy itself could change which pods it isolates",
        );
        return Vec::new();
    }
    let ns = obj.namespace.clone().unwrap_or_else(|| "default".into());
    let subject = PodMatch {
        namespace: Some(ns.clone()),
        pods: Some(spec.pod_selector.clone().unwrap_or_default()),
        ..PodMatch::default()
    };
    let applies = match subject.text("spec") {
        Ok(t) => t,
        Err(f) => {
            rep.refused(obj.span, &what, &f, "the pods it selects are unknown");
            return Vec::new();
        }
    };
    let types = match &spec.policy_types {
        Some(t) if !t.is_empty() => t.clone(),
        _ => {
            let mut t = vec!["Ingress".to_string()];
            if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                t.push("Egress".into());
            }
            t
        }
    };
    if let Some(bad) = types.iter().find(|t| *t != "Ingress" && *t != "Egress") {
        rep.refused(
            obj.span,
            &what,
            "spec.policyTypes",
            format!("`{bad}` is not Ingress or Egress"),
        );
        return Vec::new();
    }
    let name = format!("np_{}_{}", mangle(&ns), mangle(&obj.name));
    let block = |ingress: bool, rules: &Option<Vec<NpRule>>, rep: &mut Reporter| -> Vec<Rule> {
        let dir = if ingress { "ingress" } else { "egress" };
        let mut out = Vec::new();
        for (i, r) in rules.iter().flatten().enumerate() {
            let path = format!("spec.{dir}[{i}]");
            rule(obj, ingress, r, &path, &ns, rep, &mut out);
        }
        out
    };
    let ingress = types
        .iter()
        .any(|t| t == "Ingress")
        .then(|| block(true, &spec.ingress, rep));
    let egress = types
        .iter()
        .any(|t| t == "Egress")
        .then(|| block(false, &spec.egress, rep));
    if !types.iter().any(|t| t == "Egress") && spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
        rep.not_imported(
            obj.span,
            &what,
            "`spec.egress`",
            "`spec.policyTypes` does not list Egress, so Kubernetes ignores these rules too",
        );
    }
    vec![Policy {
        comment: vec![what.clone()],
        name,
        tier: TIER,
        priority: 1000,
        applies,
        ingress,
        egress,
    }]
}

#[allow(clippy::too_many_arguments)]
fn rule(
    obj: &Obj,
    ingress: bool,
    r: &NpRule,
    path: &str,
    ns: &str,
    rep: &mut Reporter,
    out: &mut Vec<Rule>,
) {
    let what = obj.describe();
    let drop = |rep: &mut Reporter, field: &str| {
        rep.fail_closed(
            obj.span,
            &what,
            field,
            "the rule matches nothing (it is left out)",
        )
    };
    if let Some(f) = unknown(&r.rest, path) {
        return drop(rep, &f);
    }
    let (peers, wrong) = if ingress {
        (&r.from, &r.to)
    } else {
        (&r.to, &r.from)
    };
    if wrong.is_some() {
        return drop(
            rep,
            &format!("{path}.{}", if ingress { "to" } else { "from" }),
        );
    }
    let key = if ingress { "from" } else { "to" };
    let mut srcs: Vec<(PeerSrc, String)> = Vec::new();
    match peers {
        None => srcs.push((PeerSrc::Any, path.to_string())),
        Some(list) if list.is_empty() => srcs.push((PeerSrc::Any, path.to_string())),
        Some(list) => {
            for (j, p) in list.iter().enumerate() {
                let ppath = format!("{path}.{key}[{j}]");
                match peer(obj, p, &ppath, ns, rep) {
                    Ok(s) => srcs.push((s, ppath)),
                    Err(f) => rep.fail_closed(
                        obj.span,
                        &what,
                        &f,
                        "this peer matches nothing (it is left out)",
                    ),
                }
            }
            if srcs.is_empty() {
                return drop(rep, &format!("{path}.{key}"));
            }
        }
    }
    let mut items = Vec::new();
    match &r.ports {
        None => {}
        Some(list) if list.is_empty() => {}
        Some(list) => {
            for (j, p) in list.iter().enumerate() {
                let ppath = format!("{path}.ports[{j}]");
                match port(p, &ppath) {
                    Ok(it) => items.push(it),
                    Err(f) => rep.fail_closed(
                        obj.span,
                        &what,
                        &f,
                        "this port matches nothing (it is left out)",
                    ),
                }
            }
            if items.is_empty() {
                return drop(rep, &format!("{path}.ports"));
            }
        }
    }
    let numeric: Vec<(Proto, Option<(u16, u16)>)> = items
        .iter()
        .filter_map(|i| match i {
            PortItem::Numeric(p, r) => Some((*p, *r)),
            PortItem::Named(..) => None,
        })
        .collect();
    let specs = if items.is_empty() {
        vec![super::emit::ProtoSpec::Any]
    } else {
        group(&numeric)
    };
    for (src, ppath) in &srcs {
        for spec in &specs {
            match src.peer(ppath) {
                Ok(peer) => out.push(Rule {
                    action: Action::Allow,
                    proto: spec.clone(),
                    peer,
                    note: path.to_string(),
                }),
                Err(f) => rep.fail_closed(
                    obj.span,
                    &what,
                    &f,
                    "this peer matches nothing (it is left out)",
                ),
            }
        }
    }
    for it in &items {
        let PortItem::Named(proto, pname) = it else {
            continue;
        };
        match named(ingress, Action::Allow, *proto, pname, &srcs, path) {
            Ok(Named::Rules(rs)) => out.extend(rs),
            Ok(Named::Unresolvable(p)) => rep.fail_closed(obj.span, &what, &format!("{p} with named port `{pname}`"), "a named port cannot be resolved on an address block: the rule matches nothing there"),
            Err(f) => rep.fail_closed(obj.span, &what, &f, "this peer matches nothing (it is left out)"),
        }
    }
}

fn peer(
    obj: &Obj,
    p: &NpPeer,
    path: &str,
    ns: &str,
    rep: &mut Reporter,
) -> Result<PeerSrc, String> {
    if let Some(f) = unknown(&p.rest, path) {
        return Err(f);
    }
    if let Some(b) = &p.ip_block {
        if p.pod_selector.is_some() || p.namespace_selector.is_some() {
            return Err(format!("{path}.ipBlock"));
        }
        let here = format!("{path}.ipBlock");
        if let Some(f) = unknown(&b.rest, &here) {
            return Err(f);
        }
        let base =
            cidr(obj, &format!("{here}.cidr"), &b.cidr, rep).ok_or(format!("{here}.cidr"))?;
        let mut ex = Vec::new();
        for (k, e) in b.except.iter().flatten().enumerate() {
            ex.push(
                cidr(obj, &format!("{here}.except[{k}]"), e, rep)
                    .ok_or(format!("{here}.except[{k}]"))?,
            );
        }
        return Ok(PeerSrc::Set(set_text(&[base], &ex)));
    }
    if p.pod_selector.is_none() && p.namespace_selector.is_none() {
        return Err(path.to_string());
    }
    let m = PodMatch {
        namespace: p.namespace_selector.is_none().then(|| ns.to_string()),
        namespaces: p.namespace_selector.clone(),
        pods: p.pod_selector.clone(),
        only: None,
    };
    m.text(path)?;
    Ok(PeerSrc::Pods(m))
}

fn port(p: &NpPort, path: &str) -> Result<PortItem, String> {
    if let Some(f) = unknown(&p.rest, path) {
        return Err(f);
    }
    let proto = Proto::parse(p.protocol.as_deref()).ok_or(format!("{path}.protocol"))?;
    let num = |v: i64, f: &str| {
        u16::try_from(v)
            .ok()
            .filter(|n| *n > 0)
            .ok_or(format!("{path}.{f}"))
    };
    match &p.port {
        None | Some(Value::Null) => {
            if p.end_port.is_some() {
                return Err(format!("{path}.endPort"));
            }
            Ok(PortItem::Numeric(proto, None))
        }
        Some(Value::Number(n)) => {
            let lo = num(n.as_i64().unwrap_or(0), "port")?;
            let hi = match p.end_port {
                Some(e) => num(e, "endPort")?,
                None => lo,
            };
            if hi < lo {
                return Err(format!("{path}.endPort"));
            }
            Ok(PortItem::Numeric(proto, Some((lo, hi))))
        }
        Some(Value::String(s)) => {
            if p.end_port.is_some() {
                return Err(format!("{path}.endPort"));
            }
            match s.parse::<i64>() {
                Ok(n) => Ok(PortItem::Numeric(
                    proto,
                    Some((num(n, "port")?, num(n, "port")?)),
                )),
                Err(_) => Ok(PortItem::Named(proto, s.clone())),
            }
        }
        Some(_) => Err(format!("{path}.port")),
    }
}
