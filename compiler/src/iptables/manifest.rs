//! The back end's manifest section (`backends.iptables`, typed in
//! [`crate::contract::iptables`]): hooks for the runtime, every set with
//! its role and classes (for incremental endpoint updates), chain and
//! rule counts.

use super::sets::{Role, Sets};
use super::text::Family;
use super::{LogTarget, Options};
use crate::contract::iptables as c;
use crate::graph::Graph;
use serde_json::Value;

/// The section as a JSON value (what [`super::Output`] carries).
pub fn section(
    g: &Graph,
    opts: &Options,
    hooks: &[(&str, &str, &str)],
    sets: &Sets,
    stats: &[(Family, usize, usize, usize)],
) -> Value {
    serde_json::to_value(typed(g, opts, hooks, sets, stats)).expect("the section serializes")
}

fn family(f: Family) -> c::Family {
    match f {
        Family::V4 => c::Family::Ipv4,
        Family::V6 => c::Family::Ipv6,
    }
}

/// The section.
pub fn typed(
    g: &Graph,
    opts: &Options,
    hooks: &[(&str, &str, &str)],
    sets: &Sets,
    stats: &[(Family, usize, usize, usize)],
) -> c::IptablesSection {
    let hooks: Vec<c::HookEntry> = hooks
        .iter()
        .map(|(table, chain, target)| c::HookEntry {
            chain: chain.to_string(),
            family: c::HookFamily::Both,
            table: table.to_string(),
            target: target.to_string(),
        })
        .collect();
    let mut list = Vec::new();
    for s in &sets.addr {
        for &f in sets.families() {
            let (kind, class, atom) = match s.role {
                Role::Class(cl) => (c::SetKind::Class, Some(cl), None),
                Role::Atom(a) => (c::SetKind::Atom, None, Some(a)),
                Role::Branch => (c::SetKind::Classes, None, None),
            };
            list.push(c::SetEntry {
                atom,
                class,
                classes: s.classes.clone(),
                family: family(f),
                kind,
                name: Sets::name(&s.name, f),
                set_type: c::SetType::HashNet,
            });
        }
    }
    // Only a program with a `self` test (the mangle FORWARD hook) has ids
    // to encode; without one the mask means nothing and is not written
    // (`LEGACY_MASK` reads as absent).
    let self_mark = if hooks
        .iter()
        .any(|h| h.target == super::self_set::MANGLE_FWD)
    {
        opts.self_mark.reserved()
    } else {
        super::self_set::LEGACY_MASK
    };
    let counts = stats
        .iter()
        .map(|&(f, chains, rules, depth)| c::Count {
            chains,
            depth,
            family: family(f),
            rules,
        })
        .collect();
    c::IptablesSection {
        classes: g.classes.len(),
        counts,
        endpoint_update: "add an address of class C to every set whose `classes` contain C (a host entry; `nomatch` to exclude a host from a covering prefix)".into(),
        events: opts.events.map(|e| c::Events {
            burst: e.burst,
            group: e.group,
            rate: e.rate,
        }),
        hooks,
        ipv6_class0: sets.v4_only,
        log: match (opts.events, opts.log) {
            (Some(e), _) => c::Log {
                group: Some(e.group),
                target: c::LogTarget::Nflog,
            },
            (None, LogTarget::Log) => c::Log {
                group: None,
                target: c::LogTarget::Log,
            },
            (None, LogTarget::Nflog { group }) => c::Log {
                group: Some(group),
                target: c::LogTarget::Nflog,
            },
        },
        self_mark,
        sets: list,
    }
}
