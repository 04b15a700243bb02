//! Hover: a name shows its definition (a selector or set also the declared
//! endpoints it matches); a policy rule shows its effective meaning.

use super::analysis::{Analysis, SymKind, Target};
use weir_compiler::model::{
    Action, AddrSet, Direction, Endpoint, Model, PeerMatch, ProtoMatch, Rule, Sel,
};
use weir_grammar::ast::{Item, PolicyItem};
use weir_grammar::FileId;

/// The hover text (markdown) at a byte offset, if any.
pub fn hover(a: &Analysis, file: FileId, offset: usize) -> Option<String> {
    if let Some(t) = a.index.at(file, offset) {
        if let Target::Import(i) = &t {
            return Some(format!("imports `{}`", i.target.display()));
        }
        let def = a.index.def_of(&t)?;
        return Some(definition(a, def));
    }
    rule_at(a, file, offset)
}

fn code_block(text: &str) -> String {
    format!("```weir\n{}\n```", text.trim_end())
}

fn endpoint_list(eps: &[&Endpoint]) -> String {
    if eps.is_empty() {
        return "no declared endpoint".to_string();
    }
    let names: Vec<String> = eps.iter().map(|e| format!("`{}`", e.name)).collect();
    let n = eps.len();
    format!(
        "{n} endpoint{}: {}",
        if n == 1 { "" } else { "s" },
        names.join(", ")
    )
}

fn sel_endpoints<'m>(m: &'m Model, sel: &Sel) -> Vec<&'m Endpoint> {
    m.endpoints
        .iter()
        .filter(|e| sel.matches(&e.labels))
        .collect()
}

fn set_endpoints<'m>(m: &'m Model, set: &AddrSet) -> Vec<&'m Endpoint> {
    m.endpoints
        .iter()
        .filter(|e| e.addrs.iter().any(|ip| set.contains(*ip)))
        .collect()
}

fn set_words(set: &AddrSet) -> String {
    let inc: Vec<String> = set.include.iter().map(|c| c.to_string()).collect();
    let mut s = format!("{{{}}}", inc.join(", "));
    if !set.exclude.is_empty() {
        let exc: Vec<String> = set.exclude.iter().map(|c| c.to_string()).collect();
        s.push_str(&format!(" except {{{}}}", exc.join(", ")));
    }
    s
}

fn definition(a: &Analysis, def: &super::analysis::Def) -> String {
    let m = &a.checked.model;
    let src = a.checked.sources.snippet(def.span);
    let mut out = code_block(src);
    match def.kind {
        SymKind::Selector => {
            if let Some(sel) = m.named_selectors.get(&def.name) {
                out.push_str(&format!(
                    "\n\nselects `{sel}`: matches {}",
                    endpoint_list(&sel_endpoints(m, sel))
                ));
            }
        }
        SymKind::Set => {
            if let Some(set) = m.named_sets.get(&def.name) {
                out.push_str(&format!(
                    "\n\naddresses {}; contains {}",
                    set_words(set),
                    endpoint_list(&set_endpoints(m, set))
                ));
            }
        }
        SymKind::Endpoint => {
            if let Some(e) = m.endpoints.iter().find(|e| e.name == def.name) {
                let sels: Vec<String> = m
                    .named_selectors
                    .iter()
                    .filter(|(_, s)| s.matches(&e.labels))
                    .map(|(n, _)| format!("`{n}`"))
                    .collect();
                if !sels.is_empty() {
                    out.push_str(&format!("\n\nmatched by {}", sels.join(", ")));
                }
            }
        }
        SymKind::Policy => {
            if let Some(p) = m.policies.iter().find(|p| p.name == def.name) {
                let tier = m.tiers.get(p.tier);
                out = code_block(src.lines().next().unwrap_or(""));
                out.push_str(&format!(
                    "\n\ntier `{}` (order {}), priority {}; applies to `{}`: {}",
                    tier.map_or("?", |t| t.name.as_str()),
                    tier.map_or(0, |t| t.order),
                    p.priority,
                    p.applies_to,
                    endpoint_list(&sel_endpoints(m, &p.applies_to))
                ));
            }
        }
        SymKind::Service | SymKind::Steer | SymKind::Test => {}
        SymKind::Tier => {}
    }
    out
}

/// The effective meaning of the policy rule at `offset`, in words.
fn rule_at(a: &Analysis, file: FileId, offset: usize) -> Option<String> {
    let ast = a.ast(file)?;
    let inside = |s: weir_grammar::Span| s.start as usize <= offset && offset <= s.end as usize;
    for item in &ast.items {
        let Item::Policy(p) = item else { continue };
        if !inside(p.span) {
            continue;
        }
        for it in &p.items {
            let PolicyItem::Rules(b) = it else { continue };
            for (i, r) in b.rules.iter().enumerate() {
                if !inside(r.span) {
                    continue;
                }
                let m = &a.checked.model;
                let policy = m.policies.iter().find(|mp| mp.name == p.name.name)?;
                let rule = policy
                    .rules(b.direction)?
                    .iter()
                    .find(|mr| mr.span == r.span)?;
                let tier = m.tiers.get(policy.tier);
                let subject = format!(
                    "endpoints matching `{}` ({})",
                    policy.applies_to,
                    endpoint_list(&sel_endpoints(m, &policy.applies_to))
                );
                return Some(format!(
                    "{}\n\n{}\n\nRule {} of the {} block of policy `{}` (tier `{}`, priority {}).",
                    code_block(a.checked.sources.snippet(r.span)),
                    rule_words(m, rule, b.direction, &subject),
                    i + 1,
                    dir(b.direction),
                    policy.name,
                    tier.map_or("?", |t| t.name.as_str()),
                    policy.priority
                ));
            }
        }
    }
    None
}

fn dir(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

fn proto_words(p: &ProtoMatch) -> String {
    match p {
        ProtoMatch::Any => "traffic of any protocol".to_string(),
        ProtoMatch::Ports { proto, ports } => {
            let name = format!("{proto:?}").to_uppercase();
            if ports.is_empty() {
                format!("{name} traffic to any port")
            } else {
                let list: Vec<String> = ports
                    .iter()
                    .map(|r| {
                        if r.lo == r.hi {
                            r.lo.to_string()
                        } else {
                            format!("{}–{}", r.lo, r.hi)
                        }
                    })
                    .collect();
                let s = if list.len() == 1 && ports[0].lo == ports[0].hi {
                    ""
                } else {
                    "s"
                };
                format!("{name} traffic to port{s} {}", list.join(", "))
            }
        }
        ProtoMatch::Named { proto, name } => {
            let p = format!("{proto:?}").to_uppercase();
            format!("{p} traffic to the port the destination endpoint declares as `{name}`")
        }
        ProtoMatch::Icmp { proto, ty, code } => {
            // `icmp` is ICMPv4 only, `icmp6` ICMPv6 only (§4, "Headers").
            let name = if *proto == weir_compiler::model::Proto::Icmp6 {
                "ICMPv6 (IPv6 only)"
            } else {
                "ICMPv4 (IPv4 only)"
            };
            match (ty, code) {
                (None, _) => format!("{name} traffic"),
                (Some(t), None) => format!("{name} type {t}"),
                (Some(t), Some(c)) => format!("{name} type {t} code {c}"),
            }
        }
    }
}

fn peer_words(m: &Model, p: &PeerMatch) -> String {
    match p {
        PeerMatch::Any => "anywhere".to_string(),
        PeerMatch::Selector(s) => format!(
            "endpoints matching `{s}` ({})",
            endpoint_list(&sel_endpoints(m, s))
        ),
        PeerMatch::Set(set) => format!("addresses in {}", set_words(set)),
        PeerMatch::SelfEndpoint => "the endpoint itself".to_string(),
        PeerMatch::OwnNode => "the node the endpoint runs on".to_string(),
        PeerMatch::World(None) => "addresses of no endpoint".to_string(),
        PeerMatch::World(Some(set)) => {
            format!("addresses of no endpoint in {}", set_words(set))
        }
    }
}

fn rule_words(m: &Model, r: &Rule, d: Direction, subject: &str) -> String {
    let peer = peer_words(m, &r.peer);
    let what = proto_words(&r.proto);
    let flow = match d {
        Direction::Ingress => format!("{what} from {peer} to {subject}"),
        Direction::Egress => format!("{what} from {subject} to {peer}"),
    };
    let log = if r.log { ", and logs it" } else { "" };
    match r.action {
        Action::Allow => format!("**Allows** new connections of {flow}{log}."),
        Action::Deny => format!("**Denies** new connections of {flow}{log}."),
        Action::Pass => format!("**Passes** new connections of {flow} on to the next tier{log}."),
        Action::Log => {
            format!("**Logs** new connections of {flow}, then goes on with the next rule.")
        }
    }
}
