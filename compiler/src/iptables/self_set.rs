//! `self` in iptables (`Cond::SameEndpoint`; the relation is
//! `graph/same_endpoint.rs`).
//!
//! ipset has pair types (`hash:net,net`), but kernels without that module
//! are common (this project's CI kernel refuses it), and iptables cannot
//! compare a packet's source with its destination. So each endpoint gets
//! an id, kept as data: the per-family set `weir-self` / `weir-selfv6`
//! (`hash:ip` with `skbinfo`) maps each endpoint address to its
//! endpoint's id, stored as the element's `skbmark` *value* with mask 0.
//! The `SET --map-mark` target computes `mark = (mark & ~mask) ^ value`,
//! so with mask 0 it XORs the id into the packet mark. The kernel allows
//! `--map-set` in mangle only, so the relation is computed in mangle
//! FORWARD (after any DNAT: the destination is the backend) into one
//! packet-mark bit, [`SAME_BIT`], which the filter chains test:
//!
//! ```text
//! WEIR-MANGLE-FWD (mangle FORWARD):
//!   -m conntrack ! --ctstate NEW -j RETURN        (policy judges new packets only)
//!   -j MARK --set-xmark 0x0/RESERVED              (id bits and SAME_BIT cleared)
//!   -m set ! --match-set weir-self src -j RETURN  (the source is no endpoint)
//!   -j SET --map-set weir-self src --map-mark     (id bits = id(src))
//!   -j SET --map-set weir-self dst --map-mark     (id bits ^= id(dst), if an endpoint)
//!   -m mark --mark 0x0/ID_MASK -j MARK --set-xmark SAME_BIT/SAME_BIT
//!   -j MARK --set-xmark 0x0/ID_MASK
//! filter, the `self` test:  -m mark --mark SAME_BIT/SAME_BIT -g THEN
//! ```
//!
//! Ids are `1 ..= MAX_ID`, never 0, so a destination that is no endpoint
//! leaves a non-zero id and no `SAME_BIT`. The [`RESERVED`] bits of the
//! packet mark are the back end's. With `redirect` steering the same
//! chain also runs at the end of mangle PREROUTING (a redirected
//! connection is judged in nat PREROUTING, before mangle FORWARD; it is
//! never DNATed to a service backend, so its destination is already the
//! one judged). Refused (E0501): a steering `mark` that sets a reserved
//! bit (the mark would be overwritten), and a `redirect` that can match
//! connections to a service frontend with backends (each backend is
//! judged in nat before its DNAT, with the frontend still the packet's
//! destination, so the relation computed is not the backend's). Ids are
//! allocated densely at compile time (model order) and by `weir
//! endpoints` at run time (the smallest free one;
//! `crate::churn::self_relation`), so endpoint churn under `allow from
//! self` is set members, never a recompile.

use super::text::Family;
use super::Unsupported;
use crate::diagnostics::{Construct, Refusal};
use crate::graph::Graph;
use crate::model::{Model, SteerAction};
use std::net::IpAddr;

/// Packet-mark bits of endpoint ids.
pub const ID_MASK: u32 = 0xffff_f000;
/// The packet-mark bit "source and destination are one endpoint".
pub const SAME_BIT: u32 = 0x800;
/// Every packet-mark bit the `self` test writes.
pub const RESERVED: u32 = ID_MASK | SAME_BIT;
/// The shift of an id into [`ID_MASK`].
pub const SELF_SHIFT: u32 = 12;
/// The largest endpoint id.
pub const MAX_ID: u32 = ID_MASK >> SELF_SHIFT;
/// The mangle FORWARD chain that computes [`SAME_BIT`].
pub const MANGLE_FWD: &str = "WEIR-MANGLE-FWD";
/// Base name of the id sets (IPv6 appends [`Family::set_suffix`]).
pub const SET: &str = "weir-self";

/// The id set's name for a family.
pub fn set_name(f: Family) -> String {
    format!("{SET}{}", f.set_suffix())
}

/// The filter test of `self` (see the module docs): its match.
pub fn test_match() -> String {
    format!("-m mark --mark {SAME_BIT:#x}/{SAME_BIT:#x}")
}

/// The rules of [`MANGLE_FWD`] for a family, as (match, target) (as
/// `iptables-save` prints them: the apply reads the rules back; the
/// caller puts the comment between).
pub fn mangle_rules(f: Family) -> Vec<(String, String)> {
    let set = set_name(f);
    let r = |m: &str, t: String| (m.to_string(), t);
    vec![
        r("-m conntrack ! --ctstate NEW", "-j RETURN".into()),
        r("", format!("-j MARK --set-xmark 0x0/{RESERVED:#x}")),
        (
            format!("-m set ! --match-set {set} src"),
            "-j RETURN".into(),
        ),
        r("", format!("-j SET --map-set {set} src --map-mark")),
        r("", format!("-j SET --map-set {set} dst --map-mark")),
        (
            format!("-m mark --mark 0x0/{ID_MASK:#x}"),
            format!("-j MARK --set-xmark {SAME_BIT:#x}/{SAME_BIT:#x}"),
        ),
        r("", format!("-j MARK --set-xmark 0x0/{ID_MASK:#x}")),
    ]
}

/// An `ipset` member line's element: `ADDR skbmark 0xID000/0x0`, as
/// `ipset save` prints it.
pub fn member(addr: IpAddr, id: u32) -> String {
    format!("{addr} skbmark {:#x}/0x0", id << SELF_SHIFT)
}

/// A member as `ipset save` prints it ([`member`]), read back: `None`
/// for anything else.
pub fn parse_member(m: &str) -> Option<(IpAddr, u32)> {
    let w: Vec<&str> = m.split_whitespace().collect();
    let [addr, "skbmark", mark] = w.as_slice() else {
        return None;
    };
    let (value, _) = mark.split_once('/')?;
    let v = u32::from_str_radix(value.strip_prefix("0x")?, 16).ok()?;
    Some((addr.parse().ok()?, v >> SELF_SHIFT))
}

/// Compile-time ids: the model's endpoints that own addresses, in order,
/// from 1; each with its addresses.
pub fn compiled_ids(model: &Model, g: &Graph) -> Vec<(u32, Vec<IpAddr>)> {
    g.classes
        .same
        .owned(model)
        .into_iter()
        .enumerate()
        .map(|(i, a)| (i as u32 + 1, a))
        .collect()
}

/// The `ipset restore` text of the id sets of `families` (both, or IPv4
/// alone when no IPv6 address has a class: `sets.rs`'s `v4_only`, where
/// the IPv6 side's mangle chain stays empty), empty without a `self` rule.
pub fn render(model: &Model, g: &Graph, families: &[Family]) -> String {
    if !crate::graph::same_endpoint::uses_self(model) {
        return String::new();
    }
    let ids = compiled_ids(model, g);
    let mut s = String::new();
    for &f in families {
        let members: Vec<String> = ids
            .iter()
            .flat_map(|(id, addrs)| {
                addrs
                    .iter()
                    .filter(|a| Family::of(**a) == f)
                    .map(move |&a| member(a, *id))
            })
            .collect();
        let name = set_name(f);
        s.push_str(&format!(
            "create {name} hash:ip family {} hashsize {} maxelem {} skbinfo\n",
            f.ipset_family(),
            (members.len() / 2).next_power_of_two().max(64),
            (members.len() * 2).max(65536),
        ));
        for m in members {
            s.push_str(&format!("add {name} {m}\n"));
        }
    }
    s
}

/// What iptables refuses about `self` (E0501): a steering `mark` that
/// sets reserved bits, a `redirect` that can match connections to a
/// service frontend with backends, and more endpoints than ids.
pub fn check(model: &Model, g: &Graph) -> Vec<Unsupported> {
    if !crate::graph::same_endpoint::uses_self(model) {
        return Vec::new();
    }
    let mut out = Vec::new();
    // A redirect over a service frontend judges each backend in nat
    // before its DNAT, with the frontend as the packet's destination:
    // the relation computed for the packet is not the backend's.
    let overlap = g.services.frontends.iter().any(|f| {
        !g.services.backend_sets[f.backends].backends.is_empty()
            && super::services::redirect_overlaps(g, &f.frontend)
    });
    for s in &model.steers {
        for r in &s.rules {
            if matches!(r.action, SteerAction::Redirect { .. }) && overlap {
                out.push(Unsupported {
                    span: r.span,
                    refusal: Refusal::NotExpressible {
                        backend: crate::contract::Target::Iptables,
                        construct: Construct::SelfWithRedirect {
                            steer: s.name.clone(),
                        },
                    },
                });
            }
            if let SteerAction::Mark(m) = r.action {
                if m & RESERVED != 0 {
                    out.push(Unsupported {
                        span: r.span,
                        refusal: Refusal::NotExpressible {
                            backend: crate::contract::Target::Iptables,
                            construct: Construct::SelfWithMark {
                                steer: s.name.clone(),
                                mark: m,
                                mask: RESERVED,
                            },
                        },
                    });
                }
            }
        }
    }
    let owning = model
        .endpoints
        .iter()
        .filter(|e| !e.addrs.is_empty())
        .count();
    if owning > MAX_ID as usize {
        out.push(Unsupported {
            span: model.endpoints[MAX_ID as usize]
                .span
                .unwrap_or(model.policies[0].span),
            refusal: Refusal::NotExpressible {
                backend: crate::contract::Target::Iptables,
                construct: Construct::SelfTooManyEndpoints {
                    endpoints: owning,
                    max: MAX_ID as usize,
                },
            },
        });
    }
    out
}
