//! What NetworkPolicy and the admin policies share: peers (pods or
//! address blocks), CIDRs (masked when written with host bits, W0603),
//! and named ports, resolved against the pods where that is exact.

use super::cluster::Proto;
use super::emit::{Action, Peer, ProtoSpec, Rule};
use super::input::Obj;
use super::report::Reporter;
use super::selector::PodMatch;
use crate::diagnostics::K8sProblem;
use std::net::IpAddr;

/// A peer before it is written: weir text needs the pods for named ports.
#[derive(Debug, Clone)]
pub enum PeerSrc {
    Any,
    Pods(PodMatch),
    /// A weir set expression (address blocks).
    Set(String),
    /// Nodes by label: a weir selector atom over node labels.
    Nodes(String),
}

impl PeerSrc {
    /// The weir peer, or the unsupported selector field.
    pub fn peer(&self, path: &str) -> Result<Peer, String> {
        Ok(match self {
            PeerSrc::Any => Peer::Any,
            PeerSrc::Pods(m) => Peer::Sel(m.text(path)?),
            PeerSrc::Set(s) => Peer::Set(s.clone()),
            PeerSrc::Nodes(s) => Peer::Nodes(s.clone()),
        })
    }
}

/// `text` as a CIDR in weir's form (a bare address is `/32` or `/128`),
/// masked with W0603 when it has host bits; `None` (reported) when it is
/// not one.
pub fn cidr(obj: &Obj, field: &str, text: &str, rep: &mut Reporter) -> Option<String> {
    let (a, len) = match text.split_once('/') {
        Some((a, l)) => (a, l.parse::<u8>().ok()),
        None => (text, None),
    };
    let Ok(addr) = a.trim().parse::<IpAddr>() else {
        rep.malformed(
            obj.span,
            &obj.describe(),
            format!("`{field}`: `{text}` is not a CIDR"),
        );
        return None;
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) if l <= max => l,
        None if !text.contains('/') => max,
        _ => {
            rep.malformed(
                obj.span,
                &obj.describe(),
                format!("`{field}`: `{text}` is not a CIDR"),
            );
            return None;
        }
    };
    let net = crate::check::network(addr, len);
    let out = format!("{net}/{len}");
    if net != addr {
        rep.push(
            obj.span,
            K8sProblem::HostBits {
                object: obj.describe(),
                field: field.to_string(),
                written: text.to_string(),
                network: out.clone(),
            },
        );
    }
    Some(out)
}

/// `{a, b}` or `{a, b} except {c}`.
pub fn set_text(cidrs: &[String], except: &[String]) -> String {
    let base = format!("{{{}}}", cidrs.join(", "));
    if except.is_empty() {
        base
    } else {
        format!("{base} except {{{}}}", except.join(", "))
    }
}

/// A named-port rule in weir's terms.
pub enum Named {
    /// Rules to put where the named rule was.
    Rules(Vec<Rule>),
    /// A peer the named port cannot be resolved against (an address
    /// block): the path of that peer.
    Unresolvable(String),
}

/// `action proto port "NAME"` for `peers`: weir resolves the name on the
/// destination endpoint (language.md §4, "Named ports") — the subject pod
/// for ingress, the peer pod for egress — from the pods' container ports,
/// which the inventory carries (`Cluster::inventory`), as Kubernetes
/// resolves it on the destination pod. A pod change is an inventory
/// change, never a rule change. An egress address block stays refused:
/// Kubernetes leaves resolving a named port on an ipBlock to the
/// implementation, and the upstream e2e model expects it to match
/// nothing.
pub fn named(
    ingress: bool,
    action: Action,
    proto: Proto,
    name: &str,
    peers: &[(PeerSrc, String)],
    note: &str,
) -> Result<Named, String> {
    let mut rules = Vec::new();
    for (peer, path) in peers {
        if !ingress {
            if let PeerSrc::Set(_) | PeerSrc::Nodes(_) = peer {
                return Ok(Named::Unresolvable(path.clone()));
            }
        }
        rules.push(Rule {
            action,
            proto: ProtoSpec::Named(proto, name.to_string()),
            peer: peer.peer(path)?,
            note: note.to_string(),
        });
    }
    Ok(Named::Rules(rules))
}

/// One address as a weir set element.
pub fn host_cidr(a: IpAddr) -> String {
    a.to_string()
}
