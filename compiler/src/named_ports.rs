//! Named ports (docs/language.md §3 "Endpoints", §4 "Named ports"): the
//! one statement of how an endpoint's declared ports are held and looked
//! up.
//!
//! An endpoint declares `ports { http: 8080/tcp }` (source) or
//! `"ports": { "http": "8080/tcp" }` (inventory). The declaration is held
//! as a **label** of the endpoint: key `port:NAME/PROTO`, value the port
//! number (`"port:http/tcp": "8080"`). That is a design choice with three
//! consequences, all wanted:
//!
//! - the decision graph's address classes, which are built from selector
//!   atoms over labels, tell endpoints with different named ports apart
//!   with ordinary selector atoms ([`rule_atoms`]): nothing in the class
//!   machinery, the manifest or either back end learns a new kind of fact;
//! - endpoint churn (`weir endpoints`) places an endpoint whose named port
//!   changed by the same signature computation as a relabelled one: the
//!   same port value as a compiled class is an incremental update, a value
//!   no compiled class has is a signature no class has ([`rule_atoms`]
//!   adds a `has(port:NAME/PROTO)` atom so it can never pass for an
//!   endpoint without the port), which churn refuses ("needs a
//!   recompile") — fail closed, never stale;
//! - selectors can ask for them (`has("port:http/tcp")`).
//!
//! The protocol is part of the key, so a rule `tcp port "dns"` against an
//! endpoint declaring `dns: 53/udp` finds no label and matches nothing, as
//! Kubernetes resolves a named port by name and protocol.

use crate::model::{Model, Proto, ProtoMatch, Sel};
use std::collections::{BTreeMap, BTreeSet};

/// Every label key that holds a named port starts with this.
pub const PREFIX: &str = "port:";

/// The label key of port `name` of protocol `proto`.
pub fn key(name: &str, proto: Proto) -> String {
    format!("{PREFIX}{name}/{}", proto.keyword())
}

/// The port an endpoint with `labels` declares as `name`/`proto`, if any.
pub fn resolve(labels: &BTreeMap<String, String>, name: &str, proto: Proto) -> Option<u16> {
    labels
        .get(&key(name, proto))
        .and_then(|v| v.parse::<u16>().ok())
        .filter(|&p| p != 0)
}

/// A port protocol keyword (`tcp`, `udp`, `sctp`).
pub fn port_proto(s: &str) -> Option<Proto> {
    match s {
        "tcp" => Some(Proto::Tcp),
        "udp" => Some(Proto::Udp),
        "sctp" => Some(Proto::Sctp),
        _ => None,
    }
}

/// What is wrong with a label map's named-port labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelProblem {
    /// A `port:` key that is not `port:NAME/PROTO` with a port 1–65535.
    Malformed { key: String },
}

/// Checks the named-port labels of one endpoint: each `port:` key is
/// `port:NAME/(tcp|udp|sctp)` with a value 1–65535. A name may be
/// declared once per protocol (the key holds the protocol), as a
/// Kubernetes pod may name a UDP and a TCP port alike in two containers:
/// a Service resolves `targetPort: dns` by name *and* protocol.
pub fn check_labels(labels: &BTreeMap<String, String>) -> Vec<LabelProblem> {
    let mut out = Vec::new();
    for (k, v) in labels.range(PREFIX.to_string()..) {
        let Some(rest) = k.strip_prefix(PREFIX) else {
            break;
        };
        let parsed = rest
            .rsplit_once('/')
            .filter(|(n, p)| valid_port_name(n) && port_proto(p).is_some());
        let port_ok = v.parse::<u16>().is_ok_and(|p| p != 0) && !v.starts_with('0');
        if parsed.is_none() || !port_ok {
            out.push(LabelProblem::Malformed { key: k.clone() });
        }
    }
    out
}

/// A port name: non-empty, no `/`, no whitespace or control characters
/// (Kubernetes' IANA service names are a subset).
pub fn valid_port_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '/' && c != '"')
}

/// An inventory endpoint's declaration of one port name: `"8080/tcp"`,
/// or one per protocol, `["53/udp", "5353/tcp"]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum PortSpecs {
    One(String),
    PerProtocol(Vec<String>),
}

impl PortSpecs {
    fn specs(&self) -> &[String] {
        match self {
            PortSpecs::One(s) => std::slice::from_ref(s),
            PortSpecs::PerProtocol(v) => v,
        }
    }
}

impl From<&str> for PortSpecs {
    fn from(s: &str) -> PortSpecs {
        PortSpecs::One(s.to_string())
    }
}

/// Adds an inventory endpoint's `"ports": { NAME: "PORT/PROTO" | [ … ] }`
/// to its labels. Errors name the offending entry; a name given twice
/// for one protocol is one.
pub fn merge_inventory_ports(
    labels: &mut BTreeMap<String, String>,
    ports: &BTreeMap<String, PortSpecs>,
) -> Result<(), String> {
    for (name, specs) in ports {
        if !valid_port_name(name) {
            return Err(format!("`{name}` is not a valid port name"));
        }
        for spec in specs.specs() {
            merge_one(labels, name, spec)?;
        }
    }
    Ok(())
}

fn merge_one(labels: &mut BTreeMap<String, String>, name: &str, spec: &str) -> Result<(), String> {
    let Some((num, proto)) = spec.split_once('/') else {
        return Err(format!(
            "port `{name}`: `{spec}` is not PORT/PROTO (like \"8080/tcp\")"
        ));
    };
    let port = num.parse::<u16>().ok().filter(|&p| p != 0);
    let (Some(port), Some(proto)) = (port, port_proto(proto)) else {
        return Err(format!(
            "port `{name}`: `{spec}` is not PORT/PROTO with a port 1–65535 and tcp, udp or sctp"
        ));
    };
    let k = key(name, proto);
    if labels.contains_key(&k) {
        return Err(format!(
            "port `{name}` is given twice for {} (or also as the label `{k}`)",
            proto.keyword()
        ));
    }
    labels.insert(k, port.to_string());
    Ok(())
}

/// Every `(name, proto)` a policy rule of the model names.
pub fn rule_names(model: &Model) -> BTreeSet<(String, Proto)> {
    let mut out = BTreeSet::new();
    for p in &model.policies {
        for r in p.ingress.iter().chain(p.egress.iter()).flatten() {
            if let ProtoMatch::Named { proto, name } = &r.proto {
                out.insert((name.clone(), *proto));
            }
        }
    }
    out
}

/// The port values the model's endpoints declare for `name`/`proto`.
pub fn values(model: &Model, name: &str, proto: Proto) -> BTreeSet<u16> {
    model
        .endpoints
        .iter()
        .filter_map(|e| resolve(&e.labels, name, proto))
        .collect()
}

/// The selector atoms the address classes need for the model's named
/// ports: per `(name, proto)` a rule names, `has(port:NAME/PROTO)` and one
/// `port:NAME/PROTO == "V"` per value an endpoint declares. Every endpoint
/// with the port satisfies exactly one value atom, so a class tells its
/// port exactly; an endpoint that appears at run time with a new value
/// satisfies `has` and no value atom — a signature no compiled class has.
pub fn rule_atoms(model: &Model) -> Vec<Sel> {
    let mut out = Vec::new();
    for (name, proto) in rule_names(model) {
        let k = key(&name, proto);
        out.push(Sel::Has(k.clone()));
        for v in values(model, &name, proto) {
            out.push(value_sel(&name, proto, v));
        }
    }
    out
}

/// The selector "declares `name`/`proto` as port `v`".
pub fn value_sel(name: &str, proto: Proto, v: u16) -> Sel {
    Sel::Eq(key(name, proto), v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn resolves_by_name_and_protocol() {
        let l = m(&[("app", "web"), ("port:http/tcp", "8080")]);
        assert_eq!(resolve(&l, "http", Proto::Tcp), Some(8080));
        assert_eq!(resolve(&l, "http", Proto::Udp), None);
        assert_eq!(resolve(&l, "dns", Proto::Tcp), None);
    }

    #[test]
    fn checks_labels() {
        assert!(check_labels(&m(&[("port:http/tcp", "80"), ("a", "b")])).is_empty());
        // One name per protocol.
        assert!(check_labels(&m(&[("port:dns/tcp", "5353"), ("port:dns/udp", "53")])).is_empty());
        for bad in [
            ("port:http", "80"),
            ("port:http/icmp", "1"),
            ("port:x/tcp", "0"),
        ] {
            assert_eq!(check_labels(&m(&[bad])).len(), 1, "{bad:?}");
        }
        assert_eq!(check_labels(&m(&[("port:x/tcp", "080")])).len(), 1);
        assert_eq!(check_labels(&m(&[("port:x/tcp", "70000")])).len(), 1);
    }

    /// The differential tests (graph, eBPF, iptables against the
    /// interpreter) run on `gen::model`: enough of them must use named
    /// ports that some endpoint declares, in both directions.
    #[test]
    fn generated_models_use_named_ports() {
        let (mut ingress, mut egress, mut services) = (0, 0, 0);
        for seed in 0..60 {
            let m = crate::gen::model(seed);
            services += m
                .services
                .iter()
                .filter(|s| {
                    matches!(
                        &s.backends,
                        crate::model::BackendSource::Select {
                            port: crate::model::TargetPort::Named(_),
                            ..
                        }
                    )
                })
                .count();
            for p in &m.policies {
                for (dir, rules) in [(0, &p.ingress), (1, &p.egress)] {
                    let used = rules.iter().flatten().any(|r| match &r.proto {
                        ProtoMatch::Named { proto, name } => !values(&m, name, *proto).is_empty(),
                        _ => false,
                    });
                    if used && dir == 0 {
                        ingress += 1;
                    } else if used {
                        egress += 1;
                    }
                }
            }
        }
        assert!(
            ingress >= 10 && egress >= 10 && services >= 5,
            "{ingress} ingress, {egress} egress, {services} named target ports"
        );
    }

    #[test]
    fn merges_inventory_ports() {
        let mut l = m(&[("app", "web")]);
        let specs = |kv: &[(&str, &str)]| -> BTreeMap<String, PortSpecs> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), (*v).into()))
                .collect()
        };
        merge_inventory_ports(&mut l, &specs(&[("http", "8080/tcp"), ("dns", "53/udp")])).unwrap();
        assert_eq!(l.get("port:http/tcp").map(String::as_str), Some("8080"));
        assert_eq!(l.get("port:dns/udp").map(String::as_str), Some("53"));
        for bad in ["8080", "0/tcp", "8080/icmp", "x/tcp"] {
            let mut l = BTreeMap::new();
            assert!(merge_inventory_ports(&mut l, &specs(&[("http", bad)])).is_err());
        }
        // One name for two protocols; not twice for one.
        let two = |a: &str, b: &str| {
            BTreeMap::from([(
                "dns".to_string(),
                PortSpecs::PerProtocol(vec![a.into(), b.into()]),
            )])
        };
        let mut l = BTreeMap::new();
        merge_inventory_ports(&mut l, &two("53/udp", "5353/tcp")).unwrap();
        assert_eq!(resolve(&l, "dns", Proto::Udp), Some(53));
        assert_eq!(resolve(&l, "dns", Proto::Tcp), Some(5353));
        assert!(merge_inventory_ports(&mut BTreeMap::new(), &two("53/udp", "54/udp")).is_err());
    }
}
