//! Packets aimed at leaves: for every leaf of an entry, a packet whose
//! walk from that entry ends there (when one exists with the four
//! protocols the packet type has). Differential tests add these to random
//! packets so that every leaf of the graph is exercised.
//!
//! The walk collects constraints on the way down (field intervals in or
//! out, atoms of the source or destination class, class-table rows) and
//! materializes a packet from them: field values from the constraints'
//! boundaries, addresses from a representative address per class.

use super::classes::ClassId;
use super::ir::{Cond, Graph, Node, NodeId, TableKey};
use crate::flowhash::proto_number;
use crate::interp::Packet;
use crate::model::{Direction, Proto};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum F {
    Proto,
    DPort,
    Type,
    Code,
}

#[derive(Debug, Clone, Default)]
struct Cs {
    /// (field, lo, hi, inside?)
    fields: Vec<(F, u32, u32, bool)>,
    /// (src?, allowed classes)
    classes: Vec<(bool, Vec<ClassId>)>,
    /// `Cond::SameEndpoint`'s outcome on the path, if tested.
    same: Option<bool>,
}

/// A representative address of each class, where one exists.
pub fn representatives(g: &Graph) -> BTreeMap<ClassId, IpAddr> {
    let cl = &g.classes;
    let mut rep = BTreeMap::new();
    for per in &cl.endpoint_classes {
        for &(a, c) in per {
            rep.entry(c).or_insert(a);
        }
    }
    for e in cl.disjoint_entries() {
        rep.entry(e.class).or_insert(e.cidr.addr);
    }
    for a in ["203.0.113.77", "198.51.100.1", "2001:db8::77"] {
        let a: IpAddr = a.parse().expect("literal");
        let c = cl.classify(a);
        rep.entry(c).or_insert(a);
    }
    rep
}

fn field_of(c: &Cond) -> Option<(F, u32, u32)> {
    match *c {
        Cond::Proto(p) => {
            let n = u32::from(proto_number(p));
            Some((F::Proto, n, n))
        }
        Cond::DPort { lo, hi } => Some((F::DPort, u32::from(lo), u32::from(hi))),
        Cond::IcmpType(t) => Some((F::Type, u32::from(t), u32::from(t))),
        Cond::IcmpCode(c) => Some((F::Code, u32::from(c), u32::from(c))),
        _ => None,
    }
}

fn pick(cs: &Cs, f: F, max: u32, prefer: &[u32]) -> Option<u32> {
    let mut cand: BTreeSet<u32> = prefer.iter().copied().collect();
    cand.insert(0);
    cand.insert(max);
    for &(g, lo, hi, _) in &cs.fields {
        if g == f {
            for v in [lo, hi, lo.saturating_sub(1), hi.saturating_add(1)] {
                if v <= max {
                    cand.insert(v);
                }
            }
        }
    }
    cand.into_iter().find(|&v| {
        cs.fields
            .iter()
            .filter(|c| c.0 == f)
            .all(|&(_, lo, hi, inside)| (lo <= v && v <= hi) == inside)
    })
}

struct Cover<'g> {
    g: &'g Graph,
    rep: BTreeMap<ClassId, IpAddr>,
    all: Vec<ClassId>,
}

impl Cover<'_> {
    fn classes(&self, cs: &Cs, src: bool) -> Vec<ClassId> {
        let mut v = self.all.clone();
        for (s, allowed) in &cs.classes {
            if *s == src {
                v.retain(|c| allowed.contains(c));
            }
        }
        v
    }

    fn materialize(&self, cs: &Cs, dir: Option<Direction>) -> Option<Packet> {
        let proto_n = pick(cs, F::Proto, 255, &[6, 17, 132, 1, 58])?;
        let proto = crate::model::PROTOS
            .into_iter()
            .find(|p| u32::from(proto_number(*p)) == proto_n)?;
        let dport = pick(cs, F::DPort, 65535, &[])?;
        let ty = pick(cs, F::Type, 255, &[])?;
        let code = pick(cs, F::Code, 255, &[])?;
        let srcs = self.classes(cs, true);
        let dsts = self.classes(cs, false);
        // Same family for both ends.
        for &s in &srcs {
            let sa = self.rep[&s];
            // ICMP (ICMPv6) only in IPv4 (IPv6): `crate::interp::rule_proto`.
            let family_ok = match proto {
                Proto::Icmp => sa.is_ipv4(),
                Proto::Icmp6 => sa.is_ipv6(),
                _ => true,
            };
            if !family_ok {
                continue;
            }
            // `self`: the source's own address (a class's representative
            // is one address), or a destination of another endpoint.
            let da = match cs.same {
                Some(true) => dsts.contains(&s).then_some(sa),
                same => dsts.iter().map(|d| self.rep[d]).find(|&da| {
                    da.is_ipv4() == sa.is_ipv4()
                        && (same.is_none() || !self.g.classes.same_endpoint(sa, da))
                }),
            };
            if let Some(da) = da {
                let mut p = Packet::new(proto, sa, 40000, da, dport as u16);
                if proto.is_icmp() {
                    p.sport = 0;
                    p.icmp_type = ty as u8;
                    p.icmp_code = code as u8;
                }
                p.at = dir;
                return Some(p);
            }
        }
        None
    }

    fn feasible(&self, cs: &Cs) -> bool {
        pick(cs, F::Proto, 255, &[6]).is_some()
            && pick(cs, F::DPort, 65535, &[]).is_some()
            && pick(cs, F::Type, 255, &[]).is_some()
            && pick(cs, F::Code, 255, &[]).is_some()
            && !self.classes(cs, true).is_empty()
            && !self.classes(cs, false).is_empty()
    }

    fn walk(
        &self,
        n: NodeId,
        cs: &mut Cs,
        dir: Option<Direction>,
        done: &mut BTreeSet<NodeId>,
        out: &mut Vec<Packet>,
        budget: &mut usize,
    ) {
        if *budget == 0 || !self.feasible(cs) {
            return;
        }
        *budget -= 1;
        match self.g.node(n) {
            Node::Test { cond, then, els } => {
                let mut branch = |cs: &mut Cs, yes: bool, next: NodeId| {
                    let saved = cs.clone();
                    match (field_of(cond), cond) {
                        (Some((f, lo, hi)), _) => cs.fields.push((f, lo, hi, yes)),
                        (None, Cond::SrcAtom(a)) | (None, Cond::DstAtom(a)) => {
                            let src = matches!(cond, Cond::SrcAtom(_));
                            let allowed = self
                                .all
                                .iter()
                                .copied()
                                .filter(|&c| self.g.classes.has(c, *a) == yes)
                                .collect();
                            cs.classes.push((src, allowed));
                        }
                        (None, Cond::SameEndpoint) => cs.same = Some(yes),
                        _ => {}
                    }
                    self.walk(next, cs, dir, done, out, budget);
                    *cs = saved;
                };
                branch(cs, true, *then);
                branch(cs, false, *els);
            }
            Node::Table {
                key,
                entries,
                default,
                ..
            } => {
                let f = match key {
                    TableKey::Proto => Some(F::Proto),
                    TableKey::DPort => Some(F::DPort),
                    TableKey::IcmpType => Some(F::Type),
                    TableKey::IcmpCode => Some(F::Code),
                    _ => None,
                };
                for e in entries {
                    let saved = cs.clone();
                    match f {
                        Some(f) => cs.fields.push((f, e.lo, e.hi, true)),
                        None => cs
                            .classes
                            .push((*key == TableKey::SrcClass, (e.lo..=e.hi).collect())),
                    }
                    self.walk(e.next, cs, dir, done, out, budget);
                    *cs = saved;
                }
                let saved = cs.clone();
                for e in entries {
                    match f {
                        Some(f) => cs.fields.push((f, e.lo, e.hi, false)),
                        None => {
                            let src = *key == TableKey::SrcClass;
                            let allowed = self
                                .all
                                .iter()
                                .copied()
                                .filter(|c| *c < e.lo || *c > e.hi)
                                .collect();
                            cs.classes.push((src, allowed));
                        }
                    }
                }
                self.walk(*default, cs, dir, done, out, budget);
                *cs = saved;
            }
            Node::Verdict(_) | Node::Steer(_) => {
                if done.insert(n) {
                    if let Some(p) = self.materialize(cs, dir) {
                        out.push(p);
                    }
                }
            }
        }
    }
}

/// Packets aimed at every leaf of every entry (see the module docs).
/// `budget` bounds the number of nodes visited.
pub fn leaf_packets(g: &Graph, budget: usize) -> Vec<Packet> {
    let rep = representatives(g);
    let all: Vec<ClassId> = rep.keys().copied().collect();
    let c = Cover { g, rep, all };
    let mut out = Vec::new();
    let mut budget = budget;
    let roots = g.dag.roots;
    for (root, dir) in [
        (roots.steer, None),
        (roots.egress, Some(Direction::Egress)),
        (roots.ingress, Some(Direction::Ingress)),
    ] {
        let mut done = BTreeSet::new();
        c.walk(
            root,
            &mut Cs::default(),
            dir,
            &mut done,
            &mut out,
            &mut budget,
        );
    }
    // Each policy-side packet once more with both sides evaluated.
    let both: Vec<Packet> = out
        .iter()
        .filter(|p| p.at.is_some())
        .map(|p| Packet {
            at: None,
            ..p.clone()
        })
        .collect();
    out.extend(both);
    out
}
