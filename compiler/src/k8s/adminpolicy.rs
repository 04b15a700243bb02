//! AdminNetworkPolicy and BaselineAdminNetworkPolicy
//! (policy.networking.k8s.io/v1alpha1) and ClusterNetworkPolicy
//! (v1alpha2) → weir policies in the tiers `k8s-admin` and
//! `k8s-baseline`.
//!
//! Kubernetes evaluates Admin (by priority, lower first) → NetworkPolicy
//! → Baseline → allow. In weir a tier whose policies select a pod but
//! decide nothing *denies* (tier isolation), while an admin or baseline
//! policy that matches nothing must fall through. So each of these tiers
//! ends with a closing policy (priority 65535, `applies to` every pod)
//! whose rules are `pass` (see mod.rs): "nothing matched here" goes on to
//! the next tier, and after the baseline tier to "no policy selects".
//!
//! Actions: Allow/Accept → `allow`, Deny → `deny`, Pass → `pass`.
//! Fail closed as network-policy-api specifies: a rule with a field the
//! importer does not support (an unknown field, a `domainNames` peer, a
//! named port it cannot resolve exactly) matches nothing when it allows
//! and denies everything when it is Deny or Pass (W0601). An unknown or
//! malformed `subject`, `priority` or `tier` refuses the object (E0602):
//! which pods it governs would be a guess.

use super::cluster::{part, Cluster, Proto};
use super::emit::{group, mangle, Action, Peer, Policy, ProtoSpec, Rule};
use super::input::Obj;
use super::objects::{unknown, AdminPeer, AdminRule, AdminSpec};
use super::peers::{cidr, named, set_text, Named, PeerSrc};
use super::report::Reporter;
use super::selector::{matches, PodMatch};

pub const ADMIN_TIER: &str = "k8s-admin";
pub const BASELINE_TIER: &str = "k8s-baseline";
/// BaselineAdminNetworkPolicy (a singleton without a priority) runs after
/// every Baseline ClusterNetworkPolicy (priorities 0–1000).
pub const BANP_PRIORITY: u16 = 1001;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Anp,
    Banp,
    Cnp,
}

enum PortItem {
    Numeric(Proto, Option<(u16, u16)>),
    Named(Proto, String),
}

pub fn translate(obj: &Obj, cluster: &Cluster, rep: &mut Reporter) -> Option<Policy> {
    let what = obj.describe();
    let (flavor, want_api) = match obj.kind.as_str() {
        "AdminNetworkPolicy" => (Flavor::Anp, "policy.networking.k8s.io/v1alpha1"),
        "BaselineAdminNetworkPolicy" => (Flavor::Banp, "policy.networking.k8s.io/v1alpha1"),
        _ => (Flavor::Cnp, "policy.networking.k8s.io/v1alpha2"),
    };
    if obj.api_version != want_api {
        rep.refused(
            obj.span,
            &what,
            "apiVersion",
            format!("`{}` is not {want_api}", obj.api_version),
        );
        return None;
    }
    let spec = part::<Option<AdminSpec>>(obj, "spec", rep)?;
    let Some(spec) = spec else {
        rep.malformed(obj.span, &what, "no `spec`".into());
        return None;
    };
    let refuse = |rep: &mut Reporter, f: &str, why: &str| {
        rep.refused(obj.span, &what, f, why.to_string());
        None
    };
    if let Some(f) = unknown(&spec.rest, "spec") {
        return refuse(
            rep,
            &f,
            "an unknown field of the policy itself could change which pods it governs",
        );
    }
    let (tier, priority) = match flavor {
        Flavor::Anp => (ADMIN_TIER, spec.priority),
        Flavor::Banp => {
            if spec.priority.is_some() {
                return refuse(
                    rep,
                    "spec.priority",
                    "a BaselineAdminNetworkPolicy has no priority",
                );
            }
            (BASELINE_TIER, Some(i64::from(BANP_PRIORITY)))
        }
        Flavor::Cnp => match spec.tier.as_deref() {
            Some("Admin") => (ADMIN_TIER, spec.priority),
            Some("Baseline") => (BASELINE_TIER, spec.priority),
            _ => return refuse(rep, "spec.tier", "the tier must be `Admin` or `Baseline`"),
        },
    };
    if flavor != Flavor::Cnp && spec.tier.is_some() {
        return refuse(rep, "spec.tier", "only a ClusterNetworkPolicy has a tier");
    }
    let priority = match priority.map(u16::try_from) {
        Some(Ok(p)) if flavor == Flavor::Banp || p <= 1000 => p,
        _ => return refuse(rep, "spec.priority", "the priority must be 0–1000"),
    };
    let s = &spec.subject;
    let subject = match (&s.namespaces, &s.pods, unknown(&s.rest, "spec.subject")) {
        (_, _, Some(f)) => return refuse(rep, &f, "the pods it governs are unknown"),
        (Some(n), None, None) => PodMatch {
            namespaces: Some(n.clone()),
            ..PodMatch::default()
        },
        (None, Some(p), None) => {
            if let Some(f) = unknown(&p.rest, "spec.subject.pods") {
                return refuse(rep, &f, "the pods it governs are unknown");
            }
            PodMatch {
                namespaces: Some(p.namespace_selector.clone().unwrap_or_default()),
                pods: Some(p.pod_selector.clone().unwrap_or_default()),
                ..PodMatch::default()
            }
        }
        _ => {
            return refuse(
                rep,
                "spec.subject",
                "exactly one of `namespaces` and `pods` must be set",
            )
        }
    };
    let applies = match subject.text("spec.subject") {
        Ok(t) => t,
        Err(f) => return refuse(rep, &f, "the pods it governs are unknown"),
    };
    let prefix = match flavor {
        Flavor::Anp => "anp",
        Flavor::Banp => "banp",
        Flavor::Cnp => "cnp",
    };
    let mut blocks = [None, None];
    for (k, (ingress, rules)) in [(true, &spec.ingress), (false, &spec.egress)]
        .into_iter()
        .enumerate()
    {
        let Some(rules) = rules else { continue };
        if rules.is_empty() {
            continue;
        }
        let mut out = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let path = format!("spec.{}[{i}]", if ingress { "ingress" } else { "egress" });
            let note = match &r.name {
                Some(n) => format!("{path} \"{n}\""),
                None => path.clone(),
            };
            match rule(obj, flavor, ingress, r, &path, &note, cluster, rep) {
                Ok(rs) => out.extend(rs),
                Err((action, field)) => fail_closed(obj, action, &field, &note, rep, &mut out),
            }
        }
        blocks[k] = Some(out);
    }
    let [ingress, egress] = blocks;
    Some(Policy {
        comment: vec![format!("{what} ({})", obj.api_version)],
        name: format!("{prefix}_{}", mangle(&obj.name)),
        tier,
        priority,
        applies,
        ingress,
        egress,
    })
}

/// A rule the importer cannot translate exactly: an allowing rule matches
/// nothing (left out); Deny and Pass deny everything.
fn fail_closed(
    obj: &Obj,
    action: Option<Action>,
    field: &str,
    note: &str,
    rep: &mut Reporter,
    out: &mut Vec<Rule>,
) {
    if action == Some(Action::Allow) {
        rep.fail_closed(
            obj.span,
            &obj.describe(),
            field,
            "the rule matches nothing (it is left out)",
        );
        return;
    }
    rep.fail_closed(
        obj.span,
        &obj.describe(),
        field,
        "the rule denies all traffic",
    );
    out.push(Rule {
        action: Action::Deny,
        proto: ProtoSpec::Any,
        peer: Peer::Any,
        note: format!("{note}: fail closed on `{field}`"),
    });
}

/// The rule's weir rules, or (its action, the unsupported field).
#[allow(clippy::too_many_arguments)]
fn rule(
    obj: &Obj,
    flavor: Flavor,
    ingress: bool,
    r: &AdminRule,
    path: &str,
    note: &str,
    cluster: &Cluster,
    rep: &mut Reporter,
) -> Result<Vec<Rule>, (Option<Action>, String)> {
    let action = match (flavor, r.action.as_deref()) {
        (Flavor::Cnp, Some("Accept")) | (Flavor::Anp | Flavor::Banp, Some("Allow")) => {
            Action::Allow
        }
        (_, Some("Deny")) => Action::Deny,
        (Flavor::Cnp | Flavor::Anp, Some("Pass")) => Action::Pass,
        _ => return Err((None, format!("{path}.action"))),
    };
    let e = |f: String| (Some(action), f);
    if let Some(f) = unknown(&r.rest, path) {
        return Err(e(f));
    }
    let (key, peers, wrong) = if ingress {
        ("from", &r.from, &r.to)
    } else {
        ("to", &r.to, &r.from)
    };
    if wrong.is_some() {
        return Err(e(format!("{path}.{}", if ingress { "to" } else { "from" })));
    }
    let list = match peers {
        Some(l) if !l.is_empty() => l,
        _ => return Err(e(format!("{path}.{key}"))),
    };
    let mut srcs = Vec::new();
    for (j, p) in list.iter().enumerate() {
        let ppath = format!("{path}.{key}[{j}]");
        if let Some(s) = peer(obj, ingress, p, &ppath, cluster, rep).map_err(e)? {
            srcs.push((s, ppath));
        }
    }
    let items = ports(flavor, r, path).map_err(e)?;
    let numeric: Vec<(Proto, Option<(u16, u16)>)> = items
        .iter()
        .filter_map(|i| match i {
            PortItem::Numeric(p, r) => Some((*p, *r)),
            PortItem::Named(..) => None,
        })
        .collect();
    let specs = if items.is_empty() {
        vec![ProtoSpec::Any]
    } else {
        group(&numeric)
    };
    let mut out = Vec::new();
    // Numeric ports first, then named ones: both only allow, deny or pass
    // the same peers, so within one Kubernetes rule their order is moot.
    for (src, ppath) in &srcs {
        for spec in &specs {
            let peer = src.peer(ppath).map_err(e)?;
            out.push(Rule {
                action,
                proto: spec.clone(),
                peer,
                note: note.to_string(),
            });
        }
    }
    for it in &items {
        let PortItem::Named(proto, pname) = it else {
            continue;
        };
        match named(ingress, action, *proto, pname, &srcs, note).map_err(e)? {
            Named::Rules(rs) => out.extend(rs),
            Named::Unresolvable(p) => return Err(e(format!("{p} with named port `{pname}`"))),
        }
    }
    Ok(out)
}

/// One peer; `Ok(None)` when it exactly matches nothing (nodes that are
/// not in the input, say).
fn peer(
    obj: &Obj,
    ingress: bool,
    p: &AdminPeer,
    path: &str,
    cluster: &Cluster,
    rep: &mut Reporter,
) -> Result<Option<PeerSrc>, String> {
    if let Some(f) = unknown(&p.rest, path) {
        return Err(f);
    }
    let set = [
        p.namespaces.is_some(),
        p.pods.is_some(),
        p.nodes.is_some(),
        p.networks.is_some(),
    ];
    if set.iter().filter(|b| **b).count() != 1 {
        return Err(path.to_string());
    }
    if ingress && (p.nodes.is_some() || p.networks.is_some()) {
        return Err(format!(
            "{path}.{}",
            if p.nodes.is_some() {
                "nodes"
            } else {
                "networks"
            }
        ));
    }
    if let Some(n) = &p.namespaces {
        let m = PodMatch {
            namespaces: Some(n.clone()),
            ..PodMatch::default()
        };
        m.text(path)?;
        return Ok(Some(PeerSrc::Pods(m)));
    }
    if let Some(pp) = &p.pods {
        if let Some(f) = unknown(&pp.rest, &format!("{path}.pods")) {
            return Err(f);
        }
        let m = PodMatch {
            namespaces: Some(pp.namespace_selector.clone().unwrap_or_default()),
            pods: Some(pp.pod_selector.clone().unwrap_or_default()),
            ..PodMatch::default()
        };
        m.text(&format!("{path}.pods"))?;
        return Ok(Some(PeerSrc::Pods(m)));
    }
    if let Some(sel) = &p.nodes {
        // `nodes SEL` over the declared nodes' labels (language.md §4,
        // "Nodes"); nodes with addresses that none matches: the peer
        // matches nothing, said by leaving it out (as before).
        let conj = super::selector::conjuncts(sel, "", &format!("{path}.nodes"))?;
        let any = cluster
            .nodes
            .values()
            .any(|(labels, a)| !a.is_empty() && matches(sel, labels));
        let text = match conj.as_slice() {
            [] => "all".to_string(),
            [one] => one.clone(),
            many => format!("({})", many.join(" && ")),
        };
        return Ok(any.then_some(PeerSrc::Nodes(text)));
    }
    let mut cidrs = Vec::new();
    for (k, c) in p.networks.iter().flatten().enumerate() {
        let f = format!("{path}.networks[{k}]");
        cidrs.push(cidr(obj, &f, c, rep).ok_or(f)?);
    }
    if cidrs.is_empty() {
        return Err(format!("{path}.networks"));
    }
    Ok(Some(PeerSrc::Set(set_text(&cidrs, &[]))))
}

fn ports(flavor: Flavor, r: &AdminRule, path: &str) -> Result<Vec<PortItem>, String> {
    let mut items = Vec::new();
    let num = |v: i64, f: String| u16::try_from(v).ok().filter(|n| *n > 0).ok_or(f);
    if flavor == Flavor::Cnp {
        if r.ports.is_some() {
            return Err(format!("{path}.ports"));
        }
        for (j, p) in r.protocols.iter().flatten().enumerate() {
            let here = format!("{path}.protocols[{j}]");
            if let Some(f) = unknown(&p.rest, &here) {
                return Err(f);
            }
            let set = [
                p.tcp.is_some(),
                p.udp.is_some(),
                p.sctp.is_some(),
                p.destination_named_port.is_some(),
            ];
            if set.iter().filter(|b| **b).count() != 1 {
                return Err(here);
            }
            if let Some(n) = &p.destination_named_port {
                // The protocol of a named port is the container port's;
                // TCP is what ports are named for in practice, and the
                // other protocols' ports of that name are looked up too.
                for pr in [Proto::Tcp, Proto::Udp, Proto::Sctp] {
                    items.push(PortItem::Named(pr, n.clone()));
                }
                continue;
            }
            let (pr, t, key) = match (&p.tcp, &p.udp, &p.sctp) {
                (Some(t), _, _) => (Proto::Tcp, t, "tcp"),
                (_, Some(t), _) => (Proto::Udp, t, "udp"),
                (_, _, Some(t)) => (Proto::Sctp, t, "sctp"),
                _ => unreachable!("one of them is set"),
            };
            let here = format!("{here}.{key}");
            if let Some(f) = unknown(&t.rest, &here) {
                return Err(f);
            }
            match &t.destination_port {
                None => items.push(PortItem::Numeric(pr, None)),
                Some(d) => {
                    let here = format!("{here}.destinationPort");
                    if let Some(f) = unknown(&d.rest, &here) {
                        return Err(f);
                    }
                    match (d.number, &d.range) {
                        (Some(n), None) => {
                            let n = num(n, format!("{here}.number"))?;
                            items.push(PortItem::Numeric(pr, Some((n, n))));
                        }
                        (None, Some(rg)) => {
                            if let Some(f) = unknown(&rg.rest, &format!("{here}.range")) {
                                return Err(f);
                            }
                            let lo = num(rg.start, format!("{here}.range.start"))?;
                            let hi = num(rg.end, format!("{here}.range.end"))?;
                            if hi < lo {
                                return Err(format!("{here}.range"));
                            }
                            items.push(PortItem::Numeric(pr, Some((lo, hi))));
                        }
                        _ => return Err(here),
                    }
                }
            }
        }
        return Ok(items);
    }
    if r.protocols.is_some() {
        return Err(format!("{path}.protocols"));
    }
    for (j, p) in r.ports.iter().flatten().enumerate() {
        let here = format!("{path}.ports[{j}]");
        if let Some(f) = unknown(&p.rest, &here) {
            return Err(f);
        }
        match (&p.port_number, &p.port_range, &p.named_port) {
            (Some(n), None, None) => {
                if let Some(f) = unknown(&n.rest, &format!("{here}.portNumber")) {
                    return Err(f);
                }
                let pr = Proto::parse(n.protocol.as_deref())
                    .ok_or(format!("{here}.portNumber.protocol"))?;
                let v = num(n.port, format!("{here}.portNumber.port"))?;
                items.push(PortItem::Numeric(pr, Some((v, v))));
            }
            (None, Some(rg), None) => {
                if let Some(f) = unknown(&rg.rest, &format!("{here}.portRange")) {
                    return Err(f);
                }
                let pr = Proto::parse(rg.protocol.as_deref())
                    .ok_or(format!("{here}.portRange.protocol"))?;
                let lo = num(rg.start, format!("{here}.portRange.start"))?;
                let hi = num(rg.end, format!("{here}.portRange.end"))?;
                if hi < lo {
                    return Err(format!("{here}.portRange"));
                }
                items.push(PortItem::Numeric(pr, Some((lo, hi))));
            }
            (None, None, Some(n)) => {
                for pr in [Proto::Tcp, Proto::Udp, Proto::Sctp] {
                    items.push(PortItem::Named(pr, n.clone()));
                }
            }
            _ => return Err(here),
        }
    }
    Ok(items)
}
