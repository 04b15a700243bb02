//! Services: what iptables cannot do (checked first), frontend dispatch
//! in nat, weighted random choice with optional client-IP affinity, DNAT,
//! and the REJECT of frontends without backends in filter.
//!
//! ```text
//! nat WEIR-NAT-PRE: -m iprange --dst-range LOWEST-HIGHEST -j <address tree>
//!   (up to 16 frontend addresses and no redirect: the leaf rules themselves)
//!   address tree: -m iprange --dst-range PIVOT-MAX -g RIGHT / -g LEFT …
//!   leaf: -d VIP -p tcp -m tcp --dport 80 -g WEIR-FE<k>
//! WEIR-FE<k>: [-m recent --rcheck per backend → WEIR-BE<k>-<i>]
//!             -m statistic --mode random --probability w_i/(w_i+…+w_n) -p P -j DNAT --to-destination ADDR:PORT …
//!   with affinity or a check before the DNAT, the choice goes to a chain:
//!             -m statistic … -g WEIR-BE<k>-<i>
//! WEIR-BE<k>-<i>: [-m recent --set] [-j <check>] -p P -j DNAT --to-destination ADDR:PORT
//! ```

use super::frontend_chain;
use super::text::{comment, Family, Tables};
use super::{Options, Unsupported};
use crate::contract::Target;
use crate::diagnostics::{Construct, Refusal};
use crate::graph::ir::{Cond, Node, NodeId, SteerLeaf, TableKey};
use crate::graph::Graph;
use crate::model::{Balance, Model, SteerAction};
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

/// Constructs iptables cannot express (see the module docs of
/// [`super`]).
pub fn check(g: &Graph, model: &Model, opts: &Options) -> Vec<Unsupported> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let st = &g.services;
    for fe in &st.frontends {
        let svc = &st.services[fe.service];
        let n = st.backend_sets[fe.backends].backends.len();
        if svc.balance == Balance::Maglev
            && n >= 2
            && !opts.maglev_as_random
            && seen.insert(fe.service)
        {
            out.push(Unsupported {
                span: model.services[fe.service].span,
                refusal: Refusal::NotExpressible {
                    backend: Target::Iptables,
                    construct: Construct::MaglevBalance {
                        service: svc.name.clone(),
                        backends: n,
                    },
                },
            });
        }
    }
    out
}

/// Can a redirect steering rule match connections to this frontend?
/// Then each of its backends checks steering and policy (for that
/// backend) before its DNAT.
pub fn redirect_overlaps(g: &Graph, f: &crate::model::Frontend) -> bool {
    let fields = Known {
        proto: u32::from(crate::flowhash::proto_number(f.proto)),
        dport: u32::from(f.port),
        dst: g.classes.classify(f.addr),
    };
    redirect_reachable(g, g.dag.roots.steer, &fields, &mut HashMap::new()).is_some()
}

struct Known {
    proto: u32,
    dport: u32,
    dst: u32,
}

/// A redirect leaf reachable from `n` for some source, given the
/// destination fields.
fn redirect_reachable(
    g: &Graph,
    n: NodeId,
    k: &Known,
    memo: &mut HashMap<NodeId, Option<(usize, usize)>>,
) -> Option<(usize, usize)> {
    if let Some(r) = memo.get(&n) {
        return *r;
    }
    let next: Vec<NodeId> = match g.node(n) {
        Node::Steer(SteerLeaf::Hit { steer, index }) => {
            let r = matches!(
                g.steer_actions[*steer][*index],
                SteerAction::Redirect { .. }
            )
            .then_some((*steer, *index));
            memo.insert(n, r);
            return r;
        }
        Node::Steer(SteerLeaf::None) | Node::Verdict(_) => Vec::new(),
        Node::Test { cond, then, els } => {
            let hit = match *cond {
                Cond::Proto(p) => Some(u32::from(crate::flowhash::proto_number(p)) == k.proto),
                Cond::DPort { lo, hi } => {
                    Some(u32::from(lo) <= k.dport && k.dport <= u32::from(hi))
                }
                Cond::IcmpType(t) => Some(t == 0),
                Cond::IcmpCode(c) => Some(c == 0),
                Cond::DstAtom(a) => Some(g.classes.has(k.dst, a)),
                Cond::SrcAtom(_) | Cond::SameEndpoint => None,
            };
            match hit {
                Some(true) => vec![*then],
                Some(false) => vec![*els],
                None => vec![*then, *els],
            }
        }
        Node::Table {
            key,
            entries,
            default,
            ..
        } => {
            let v = match key {
                TableKey::Proto => Some(k.proto),
                TableKey::DPort => Some(k.dport),
                TableKey::IcmpType | TableKey::IcmpCode => Some(0),
                TableKey::DstClass => Some(k.dst),
                TableKey::SrcClass => None,
            };
            match v {
                Some(v) => {
                    let i = entries.partition_point(|e| e.hi < v);
                    vec![match entries.get(i) {
                        Some(e) if e.lo <= v => e.next,
                        _ => *default,
                    }]
                }
                None => entries.iter().map(|e| e.next).chain([*default]).collect(),
            }
        }
    };
    let r = next
        .into_iter()
        .find_map(|c| redirect_reachable(g, c, k, memo));
    memo.insert(n, r);
    r
}

/// Rules of one address: `(match after -d, target)`.
pub type AddrRules = (IpAddr, Vec<(String, String)>);

/// Fan-out of the address tree. nf_tables refuses chain graphs deeper
/// than 16 jumps/gotos, so the tree is wide and shallow: 10,000 frontends
/// are four levels.
const FANOUT: usize = 8;

/// Addresses a leaf of the address tree tests one after the other. A
/// leaf rule that does not match fails on its `-d` in the kernel's fixed
/// header compare, before any match module runs, while a tree level
/// costs about half of its `FANOUT` `iprange` matches and a chain entry:
/// sixteen `-d` rules (eight tested on average) cost less than the level
/// they replace, and 16 frontends or fewer (a small cluster) need no
/// tree at all.
const LEAF: usize = 16;

/// A tree of chains over destination addresses (`FANOUT` ranges per
/// level); leaves hold the rules of at most `LEAF` addresses (their
/// matches carry their own comments; `cmt` is for the tree's rules).
/// Returns the root chain.
pub fn addr_tree(
    out: &mut Tables,
    table: &'static str,
    fam: Family,
    prefix: &str,
    counter: &mut usize,
    items: &[AddrRules],
    cmt: &str,
) -> String {
    *counter += 1;
    let name = format!("WEIR-{prefix}{counter}");
    out.chain(table, &name);
    if items.len() <= LEAF {
        leaf_rules(out, table, &name, fam, items);
        return name;
    }
    // FANOUT slices of equal size, tested from the highest down.
    let per = items.len().div_ceil(FANOUT);
    let slices: Vec<&[AddrRules]> = items.chunks(per).collect();
    let children: Vec<String> = slices
        .iter()
        .map(|sl| addr_tree(out, table, fam, prefix, counter, sl, cmt))
        .collect();
    for (i, (sl, child)) in slices.iter().zip(&children).enumerate().rev() {
        if i == 0 {
            out.rule(table, &name, &[cmt, &format!("-g {child}")]);
        } else {
            let range = format!("-m iprange --dst-range {}-{}", sl[0].0, fam.max_addr());
            out.rule(table, &name, &[&range, cmt, &format!("-g {child}")]);
        }
    }
    name
}

/// The rules of `items` (at most [`LEAF`] addresses), each behind its
/// `-d ADDR`, appended to `chain`.
fn leaf_rules(
    out: &mut Tables,
    table: &'static str,
    chain: &str,
    fam: Family,
    items: &[AddrRules],
) {
    for (addr, rules) in items {
        let d = format!("-d {addr}/{}", fam.host_len());
        for (m, t) in rules {
            out.rule(table, chain, &[&d, m, t]);
        }
    }
}

/// An address tree's root chain and the match its entry rule needs: the
/// destination range from its lowest to its highest address. The tree's
/// leaves test every frontend exactly, so the range only keeps traffic to
/// other addresses out of the tree at the cost of one cheap rule (a set
/// lookup of the frontends before the tree would cost a hash lookup more
/// on every connection to a service).
pub struct AddrTree {
    pub root: String,
    pub range: String,
}

/// `-m iprange --dst-range LO-HI` (`-d ADDR` for one address) over the
/// (sorted) items.
fn range_match(fam: Family, items: &[AddrRules]) -> String {
    let (lo, hi) = (items[0].0, items[items.len() - 1].0);
    if lo == hi {
        format!("-d {lo}/{}", fam.host_len())
    } else {
        format!("-m iprange --dst-range {lo}-{hi}")
    }
}

/// `before_dnat(k, i, out)` may return a call to put in front of the DNAT
/// of backend `i` of frontend `k`.
///
/// With `inline_into` (the entry chain, when nothing follows the service
/// dispatch in it) and at most [`LEAF`] frontend addresses, there is no
/// tree and no range guard: the leaf's rules go straight into that chain
/// (kube-proxy's layout: hook → `KUBE-SERVICES` → per-service chain), so
/// a new flow to a service enters one chain fewer and skips the
/// `iprange` match, and returns `None`. Each leaf rule goes (`-g`) to its
/// frontend chain, which ends in a DNAT; were it to fall off its end, the
/// packet would continue after the entry chain's call, which is where
/// the tree's chain would have returned it too, since nothing follows.
pub fn nat(
    g: &Graph,
    fam: Family,
    out: &mut Tables,
    before_dnat: &mut dyn FnMut(usize, usize, &mut Tables) -> Option<String>,
    inline_into: Option<&str>,
) -> Option<AddrTree> {
    let st = &g.services;
    let mut items: Vec<AddrRules> = Vec::new();
    let mut statistic = frontend_chain::StatisticCache::default();
    for (k, fe) in st.frontends.iter().enumerate() {
        let f = fe.frontend;
        let set = &st.backend_sets[fe.backends];
        if Family::of(f.addr) != fam || set.backends.is_empty() {
            continue;
        }
        let svc = &st.services[fe.service];
        let c = comment(&format!("svc{}", fe.service));
        let chain = frontend_chain::frontend_chain(k);
        out.chain("nat", &chain);
        let n = set.backends.len();
        let extras: Vec<Option<String>> = (0..n).map(|i| before_dnat(k, i, out)).collect();
        let spec = frontend_chain::FrontendSpec {
            k,
            service: fe.service,
            fam,
            proto: f.proto,
            affinity: svc.affinity,
        };
        let slots: Vec<frontend_chain::Slot> = set
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| frontend_chain::Slot {
                slot: i,
                addr: b.addr,
                port: b.port,
                weight: u32::from(b.weight),
            })
            .collect();
        for (name, rules) in frontend_chain::chains(&spec, &slots, &extras, &mut statistic) {
            if name != chain {
                out.chain("nat", &name);
            }
            for r in &rules {
                out.rule("nat", &name, &[r]);
            }
        }
        let p = fam.proto(f.proto);
        let m = format!("-p {p} -m {p} --dport {} {c}", f.port);
        match items.last_mut() {
            Some((a, rules)) if *a == f.addr => rules.push((m, format!("-g {chain}"))),
            _ => items.push((f.addr, vec![(m, format!("-g {chain}"))])),
        }
    }
    if items.is_empty() {
        return None;
    }
    if let Some(entry) = inline_into.filter(|_| items.len() <= LEAF) {
        leaf_rules(out, "nat", entry, fam, &items);
        return None;
    }
    let mut counter = 0;
    Some(AddrTree {
        root: addr_tree(
            out,
            "nat",
            fam,
            "SVC",
            &mut counter,
            &items,
            &comment("services"),
        ),
        range: range_match(fam, &items),
    })
}

/// filter chains rejecting connections to frontends of `fam` without
/// backends; the root, if there is any.
/// With events, each REJECT is preceded by its `R` event (same match).
pub fn reject(
    g: &Graph,
    fam: Family,
    events: Option<&super::Events>,
    out: &mut Tables,
) -> Option<AddrTree> {
    let st = &g.services;
    let mut items: Vec<AddrRules> = Vec::new();
    for fe in &st.frontends {
        let f = fe.frontend;
        if Family::of(f.addr) != fam || !st.backend_sets[fe.backends].backends.is_empty() {
            continue;
        }
        let id = g.provenance.id(&crate::provenance::Provenance::NoBackends {
            service: fe.service,
        });
        let p = fam.proto(f.proto);
        let with = if f.proto == crate::model::Proto::Tcp {
            "tcp-reset"
        } else {
            fam.port_unreachable()
        };
        let m = format!(
            "-p {p} -m {p} --dport {} {}",
            f.port,
            comment(&id.to_string())
        );
        let t = format!("-j REJECT --reject-with {with}");
        let mut rules = Vec::new();
        if let Some(ev) = events {
            let event = ev.rule(id, crate::contract::event::EventVerdict::Reject, false);
            rules.push((format!("-p {p} -m {p} --dport {}", f.port), event));
        }
        rules.push((m, t));
        match items.last_mut() {
            Some((a, r)) if *a == f.addr => r.extend(rules),
            _ => items.push((f.addr, rules)),
        }
    }
    if items.is_empty() {
        return None;
    }
    let mut counter = 0;
    Some(AddrTree {
        root: addr_tree(
            out,
            "filter",
            fam,
            "REJ",
            &mut counter,
            &items,
            &comment("no-backends"),
        ),
        range: range_match(fam, &items),
    })
}
