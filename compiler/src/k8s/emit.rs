//! The weir program the importer writes: names, rules, policies and
//! services as text, formatted by `weir fmt` at the end (crate::fmt).
//!
//! Names are mangled stably and injectively: Kubernetes names are DNS
//! labels or subdomains (`[a-z0-9-.]`), never containing `_`, so
//! `KINDPREFIX_NAMESPACE_NAME` with `.` written `_` cannot collide, can
//! never be a weir keyword (the prefix has a `_` after it) and never
//! starts with a digit. Synthesized parts use `__` (`np_x_web__port8080`).

use super::cluster::{Pod, Proto};

/// One name part: `.` and anything outside `[A-Za-z0-9-]` become `_`.
pub fn mangle(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The weir namespace a Kubernetes namespace is declared as.
pub fn namespace_name(ns: &str) -> String {
    format!("ns_{}", mangle(ns))
}

pub fn pod_name(p: &Pod) -> String {
    format!("pod_{}_{}", mangle(&p.namespace), mangle(&p.name))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    Pass,
}

impl Action {
    fn keyword(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Pass => "pass",
        }
    }
}

/// A protocol with destination port ranges (empty: every port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoSpec {
    Any,
    One(Proto, Vec<(u16, u16)>),
    /// `tcp port "http"`: resolved on the destination endpoint.
    Named(Proto, String),
}

impl ProtoSpec {
    fn text(&self) -> String {
        match self {
            ProtoSpec::Any => String::new(),
            ProtoSpec::Named(p, name) => format!(" {} port \"{name}\"", p.keyword()),
            ProtoSpec::One(p, ranges) if ranges.is_empty() => format!(" {}", p.keyword()),
            ProtoSpec::One(p, ranges) => {
                let r: Vec<String> = ranges
                    .iter()
                    .map(|&(lo, hi)| {
                        if lo == hi {
                            lo.to_string()
                        } else {
                            format!("{lo}-{hi}")
                        }
                    })
                    .collect();
                if r.len() == 1 {
                    format!(" {} {}", p.keyword(), r[0])
                } else {
                    format!(" {} {{{}}}", p.keyword(), r.join(", "))
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Any,
    /// A weir selector expression.
    Sel(String),
    /// A weir set expression.
    Set(String),
    /// `self`: the pod the side is judged for.
    SelfPod,
    /// `node`: the node of the pod the side is judged for.
    OwnNode,
    /// `nodes SEL`: nodes by label (a weir selector atom).
    Nodes(String),
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub action: Action,
    pub proto: ProtoSpec,
    pub peer: Peer,
    /// Where it came from (`spec.ingress[0]`), written as a comment.
    pub note: String,
}

impl Rule {
    fn text(&self, ingress: bool) -> String {
        let kw = if ingress { "from" } else { "to" };
        let peer = match &self.peer {
            Peer::Any => String::new(),
            Peer::Sel(s) | Peer::Set(s) => format!(" {kw} {s}"),
            Peer::SelfPod => format!(" {kw} self"),
            Peer::OwnNode => format!(" {kw} node"),
            Peer::Nodes(s) => format!(" {kw} nodes {s}"),
        };
        format!("{}{}{}", self.action.keyword(), self.proto.text(), peer)
    }
}

#[derive(Debug, Clone)]
pub struct Policy {
    /// The Kubernetes object, `Kind namespace/name`, and any remark.
    pub comment: Vec<String>,
    pub name: String,
    pub tier: &'static str,
    pub priority: u16,
    pub applies: String,
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
}

impl Policy {
    pub fn text(&self) -> String {
        let mut s = String::new();
        for c in &self.comment {
            s.push_str(&format!("# {c}\n"));
        }
        s.push_str(&format!(
            "policy {} priority {} tier {} {{\n  applies to {}\n",
            self.name, self.priority, self.tier, self.applies
        ));
        for (dir, rules) in [("ingress", &self.ingress), ("egress", &self.egress)] {
            let Some(rules) = rules else { continue };
            s.push_str(&format!("  {dir} {{\n"));
            let mut last_note = "";
            for r in rules {
                if r.note != last_note && !r.note.is_empty() {
                    s.push_str(&format!("    # {}\n", r.note));
                    last_note = &r.note;
                }
                s.push_str(&format!("    {}\n", r.text(dir == "ingress")));
            }
            s.push_str("  }\n");
        }
        s.push_str("}\n");
        s
    }
}

#[derive(Debug, Clone)]
pub struct Service {
    pub comment: Vec<String>,
    pub name: String,
    pub frontends: Vec<String>,
    /// The whole `backends …` line.
    pub backends: String,
    pub affinity: Option<String>,
}

impl Service {
    pub fn text(&self) -> String {
        let mut s = String::new();
        for c in &self.comment {
            s.push_str(&format!("# {c}\n"));
        }
        s.push_str(&format!("service {} {{\n", self.name));
        for f in &self.frontends {
            s.push_str(&format!("  frontend {f}\n"));
        }
        s.push_str(&format!("  {}\n", self.backends));
        if let Some(a) = &self.affinity {
            s.push_str(&format!("  affinity client-ip {a}\n"));
        }
        s.push_str("}\n");
        s
    }
}

/// Port specs grouped by protocol: `(proto, None)` (every port) absorbs
/// that protocol's ranges; nothing at all is `Any`.
pub fn group(items: &[(Proto, Option<(u16, u16)>)]) -> Vec<ProtoSpec> {
    let mut out = Vec::new();
    for p in [Proto::Tcp, Proto::Udp, Proto::Sctp] {
        let mine: Vec<_> = items.iter().filter(|(q, _)| *q == p).collect();
        if mine.is_empty() {
            continue;
        }
        if mine.iter().any(|(_, r)| r.is_none()) {
            out.push(ProtoSpec::One(p, Vec::new()));
        } else {
            let mut r: Vec<(u16, u16)> = mine.iter().filter_map(|(_, r)| *r).collect();
            r.sort();
            r.dedup();
            out.push(ProtoSpec::One(p, r));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_injective_and_never_keywords() {
        assert_eq!(mangle("a.b"), "a_b");
        let p = |ns: &str, n: &str| format!("np_{}_{}", mangle(ns), mangle(n));
        assert_ne!(p("x", "a.b"), p("x-a", "b"));
        assert_eq!(p("x", "test"), "np_x_test");
    }

    #[test]
    fn ports_group_by_protocol() {
        let g = group(&[
            (Proto::Tcp, Some((81, 81))),
            (Proto::Tcp, Some((80, 80))),
            (Proto::Udp, None),
            (Proto::Udp, Some((53, 53))),
        ]);
        assert_eq!(
            g,
            [
                ProtoSpec::One(Proto::Tcp, vec![(80, 80), (81, 81)]),
                ProtoSpec::One(Proto::Udp, vec![])
            ]
        );
        assert_eq!(g[0].text(), " tcp {80, 81}");
    }
}
