//! The back end's manifest section (`backends.iptables`): hooks for the
//! runtime, every set with its role and classes (for incremental endpoint
//! updates), chain and rule counts.

use super::sets::{Role, Sets};
use super::text::Family;
use super::{LogTarget, Options};
use crate::graph::Graph;
use serde_json::{json, Value};

pub fn section(
    g: &Graph,
    opts: &Options,
    hooks: &[(&str, &str, &str)],
    sets: &Sets,
    stats: &[(Family, usize, usize, usize)],
) -> Value {
    let hooks: Vec<Value> = hooks
        .iter()
        .map(|(table, chain, target)| {
            json!({ "table": table, "chain": chain, "target": target, "family": "both" })
        })
        .collect();
    let mut list = Vec::new();
    for s in &sets.addr {
        for f in [Family::V4, Family::V6] {
            let mut o = json!({
                "name": Sets::name(&s.name, f),
                "family": f.name(),
                "type": "hash:net",
                "classes": s.classes,
            });
            match s.role {
                Role::Class(c) => {
                    o["kind"] = json!("class");
                    o["class"] = json!(c);
                }
                Role::Atom(a) => {
                    o["kind"] = json!("atom");
                    o["atom"] = json!(a);
                }
                Role::Branch => o["kind"] = json!("classes"),
            }
            list.push(o);
        }
    }
    let counts: Vec<Value> = stats
        .iter()
        .map(|(f, chains, rules, depth)| {
            json!({ "family": f.name(), "chains": chains, "rules": rules, "depth": depth })
        })
        .collect();
    json!({
        "hooks": hooks,
        "sets": list,
        "log": match opts.log {
            LogTarget::Log => json!({ "target": "LOG" }),
            LogTarget::Nflog { group } => json!({ "target": "NFLOG", "group": group }),
        },
        "counts": counts,
        "classes": g.classes.len(),
        "endpoint_update": "add an address of class C to every set whose `classes` contain C (a host entry; `nomatch` to exclude a host from a covering prefix)",
    })
}
