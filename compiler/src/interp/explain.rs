//! Human and JSON explanations of an [`Outcome`]: the text of `weir trace`
//! and of failing `weir test` expectations. Locations are rendered by the
//! caller's `locate` (the compiler's source map) so this module stays
//! independent of how files are stored.

use super::{verdict_name, Interp, Outcome, Packet, SideDecision};
use crate::model::{ConnState, Endpoint, Proto, SteerAction};
use crate::provenance::{dir_name, Provenance};
use serde_json::{json, Value};
use std::fmt::Write;
use std::net::IpAddr;
use weir_grammar::Span;

/// A rendered source location: `file:line:column` and the line's text.
pub struct Located {
    pub at: String,
    pub line: String,
}

pub type Locate<'a> = &'a dyn Fn(Span) -> Option<Located>;

pub fn proto_name(p: Proto) -> &'static str {
    p.keyword()
}

fn sock(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(_) => format!("{addr}:{port}"),
        IpAddr::V6(_) => format!("[{addr}]:{port}"),
    }
}

/// The packet in `weir trace --packet` notation.
pub fn packet_text(p: &Packet) -> String {
    let addr = |a: std::net::IpAddr| match a {
        std::net::IpAddr::V6(_) => format!("[{a}]"),
        _ => a.to_string(),
    };
    let unseen = match p.headers {
        super::Headers::Whole => None,
        super::Headers::Fragment => Some("fragment"),
        super::Headers::Unparsed => Some("unparsed"),
    };
    let mut s = if let Some(word) = unseen {
        // No ports, type or code: the notation has none either.
        let name = proto_name(p.proto);
        format!("{name} {} -> {} {word}", addr(p.src), addr(p.dst))
    } else if p.proto.is_icmp() {
        format!(
            "{} {} -> {} type {} code {}",
            p.proto.keyword(),
            addr(p.src),
            addr(p.dst),
            p.icmp_type,
            p.icmp_code
        )
    } else {
        format!(
            "{} {} -> {}",
            proto_name(p.proto),
            sock(p.src, p.sport),
            sock(p.dst, p.dport)
        )
    };
    if p.state == ConnState::Established {
        s.push_str(" established");
    }
    if let Some(d) = p.at {
        let _ = write!(s, " at {}", dir_name(d));
    }
    s
}

fn endpoint_text(e: Option<&Endpoint>) -> String {
    match e {
        None => "not an endpoint".into(),
        Some(e) => {
            let labels: Vec<String> = e
                .labels
                .iter()
                .map(|(k, v)| format!("{k}: {v:?}"))
                .collect();
            format!("endpoint {} {{ {} }}", e.name, labels.join(", "))
        }
    }
}

fn prov_text(interp: &Interp, p: &Provenance, locate: Locate, out: &mut String, indent: &str) {
    let _ = writeln!(out, "{}", p.describe(interp.model));
    if let Some(loc) = p.span(interp.model).and_then(locate) {
        let _ = writeln!(out, "{indent}--> {}", loc.at);
        let _ = writeln!(out, "{indent}    {}", loc.line.trim_end());
    }
}

fn side_text(
    interp: &Interp,
    name: &str,
    side: &Option<SideDecision>,
    locate: Locate,
    out: &mut String,
) {
    match side {
        None => {
            let _ = writeln!(out, "{name:<9}not evaluated at this hook");
        }
        Some(s) => {
            let _ = write!(out, "{name:<9}{:<6}", verdict_name(s.verdict));
            prov_text(interp, &s.by, locate, out, "               ");
        }
    }
}

/// The multi-line explanation `weir trace` prints.
pub fn explain(interp: &Interp, packet: &Packet, o: &Outcome, locate: Locate) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "packet   {}", packet_text(packet));
    let _ = writeln!(
        out,
        "source   {} is {}",
        packet.src,
        endpoint_text(interp.endpoint_of(packet.src))
    );
    let _ = writeln!(
        out,
        "dest     {} is {}",
        packet.dst,
        endpoint_text(interp.endpoint_of(packet.dst))
    );
    if let Some(s) = &o.steering {
        let _ = writeln!(
            out,
            "steer    {} rule #{}: {}",
            interp.model.steers[s.steer].name,
            s.index + 1,
            steer_text(&s.action)
        );
    }
    if let Some(hit) = &o.service {
        let svc = &interp.model.services[hit.service];
        match &hit.chosen {
            Some(b) => {
                let _ = writeln!(
                    out,
                    "service  {} -> backend {} (one of {})",
                    svc.name,
                    sock(b.addr, b.port),
                    hit.candidates.len()
                );
                let _ = writeln!(
                    out,
                    "         policy applies to the backend (dest {})",
                    b.addr
                );
                let _ = writeln!(
                    out,
                    "         backend is {}",
                    endpoint_text(interp.endpoint_of(b.addr))
                );
            }
            None => {
                let _ = writeln!(out, "service  {} has no ready backends: rejected", svc.name);
            }
        }
    }
    if o.egress.is_some() || o.ingress.is_some() {
        side_text(interp, "egress", &o.egress, locate, &mut out);
        side_text(interp, "ingress", &o.ingress, locate, &mut out);
    }
    for l in &o.logged {
        let _ = writeln!(out, "logged   {}", l.describe(interp.model));
    }
    let _ = write!(out, "verdict  {}", verdict_name(o.verdict).to_uppercase());
    let _ = write!(out, " — ");
    prov_text(interp, &o.decided_by, locate, &mut out, "         ");
    if let Some(a) = &o.audit {
        if a.differs(o.verdict, o.decided_by) {
            let _ = write!(
                out,
                "audit    WOULD {} — ",
                verdict_name(a.verdict).to_uppercase()
            );
            prov_text(interp, &a.decided_by, locate, &mut out, "         ");
        } else {
            let _ = writeln!(out, "audit    same — no audit policy changes this verdict");
        }
    }
    // The events a back end reports for this packet (docs/language.md
    // §4, "Events"); no line when none.
    let evs = super::events::events(interp.model, o);
    if !evs.is_empty() {
        let _ = writeln!(
            out,
            "events   {}",
            super::events::describe(interp.model, &evs)
        );
    }
    out
}

pub fn steer_text(a: &SteerAction) -> String {
    match a {
        SteerAction::Redirect { addr, port } => format!("redirect to proxy {}", sock(*addr, *port)),
        SteerAction::Mark(m) => format!("mark {m:#x}"),
        SteerAction::Dscp(d) => format!("dscp {d}"),
        SteerAction::Bypass => "bypass".into(),
    }
}

/// What decided, as plain values: `kind` is a name (`rule`,
/// `tier-default`, `unrestricted`, `default-deny`, `bypass`, `no-backends`,
/// `established`, `fragment`, `unparsed`), `direction` and the 1-based `rule` number where they
/// apply (docs/schemas/trace.json).
pub fn prov_json(interp: &Interp, p: &Provenance, locate: Locate) -> Value {
    let loc = p.span(interp.model).and_then(locate);
    let (kind, dir, rule) = match *p {
        Provenance::Established => ("established", None, None),
        Provenance::Rule { dir, index, .. } => ("rule", Some(dir), Some(index + 1)),
        Provenance::TierDefault { dir, .. } => ("tier-default", Some(dir), None),
        Provenance::Unrestricted { dir } => ("unrestricted", Some(dir), None),
        Provenance::DefaultDeny { dir } => ("default-deny", Some(dir), None),
        Provenance::Bypass { index, .. } => ("bypass", None, Some(index + 1)),
        Provenance::NoBackends { .. } => ("no-backends", None, None),
        Provenance::Fragment => ("fragment", None, None),
        Provenance::Unparsed => ("unparsed", None, None),
    };
    json!({
        "kind": kind,
        "direction": dir.map(dir_name),
        "rule": rule,
        "owner": p.owner_name(interp.model),
        "description": p.describe(interp.model),
        "location": loc.map(|l| json!({ "at": l.at, "line": l.line.trim_end() })),
    })
}

/// The `--format json` form of a trace.
pub fn explain_json(interp: &Interp, packet: &Packet, o: &Outcome, locate: Locate) -> Value {
    let side = |s: &Option<SideDecision>| {
        s.as_ref().map(|s| {
            json!({
                "verdict": verdict_name(s.verdict),
                "subject": s.subject,
                "decided_by": prov_json(interp, &s.by, locate),
            })
        })
    };
    let mut v = json!({
        "packet": json!({
            "proto": proto_name(packet.proto),
            "src": packet.src,
            "sport": packet.sport,
            "dst": packet.dst,
            "dport": packet.dport,
            "icmp_type": packet.icmp_type,
            "icmp_code": packet.icmp_code,
            "state": match packet.state {
                ConnState::New => "new",
                ConnState::Established => "established",
            },
            "at": packet.at.map(dir_name),
        }),
        "packet_text": packet_text(packet),
        "verdict": verdict_name(o.verdict),
        "reject": o.reject,
        "decided_by": prov_json(interp, &o.decided_by, locate),
        "egress": side(&o.egress),
        "ingress": side(&o.ingress),
        "logged": o.logged.iter().map(|p| prov_json(interp, p, locate)).collect::<Vec<_>>(),
        "service": o.service.as_ref().map(|h| json!({
            "name": interp.model.services[h.service].name,
            "frontend": json!({
                "addr": h.frontend.addr,
                "port": h.frontend.port,
                "proto": proto_name(h.frontend.proto),
            }),
            "chosen": h.chosen,
            "candidates": h.candidates,
        })),
        "steering": o.steering.as_ref().map(|s| json!({
            "steer": interp.model.steers[s.steer].name,
            "rule": s.index + 1,
            "action": steer_text(&s.action),
        })),
    });
    // Present exactly when the program has audit policies.
    if let Some(a) = &o.audit {
        v["audit"] = json!({
            "verdict": verdict_name(a.verdict),
            "differs": a.differs(o.verdict, o.decided_by),
            "decided_by": prov_json(interp, &a.decided_by, locate),
            "egress": side(&a.egress),
            "ingress": side(&a.ingress),
        });
    }
    v
}
