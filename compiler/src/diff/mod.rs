//! `weir diff`: the exact connectivity change between two programs.
//!
//! ```text
//! OLD graph ─┐                         ┌─ decide(OLD) on the whole space
//!            ├─ space: joint classes ──┤   └─ decide(NEW) on each piece
//! NEW graph ─┘   (common refinement)   └─ pieces whose verdicts differ ─▶ rows
//! ```
//!
//! Computed from the two decision graphs the compiler deploys, never by
//! sampling packets: [`space`] refines both programs' address classes
//! into joint classes of one address family each, [`region`] walks a
//! graph symbolically over regions of (source class, destination class
//! of the same family, protocol as the rules see it — a keyword of that
//! family or "every other protocol" — port, ICMP type and code),
//! [`compare`] runs both pipelines and keeps the pieces whose verdict
//! changes, and this module turns those pieces into rows —
//! (source group, destination group, protocol, ports or ICMP type/code)
//! with the OLD and NEW deciding provenance — named by [`groups`].
//!
//! What a row means: every *new* connection (not a reply of an
//! established one; whole packets) sent from an address of a source group
//! to an address of a destination group, on those ports (or ICMP type and
//! code), changes verdict, from the OLD decision to the NEW one. A
//! connection sent to a service frontend (address, port, protocol) is
//! translated before policy, so it has rows of its own ([`frontends`]):
//! the destination is the frontend, and the row names the backend the
//! flows are balanced to on each side. [`services`] lists the frontends
//! whose translation itself changed. Steering actions other than `bypass`
//! do not change a verdict and are not compared; packets seen at one hook
//! only (`at ingress`/`at egress` in tests) are not rows; fragments and
//! unparsed packets are denied by every program, so they never change.

pub mod compare;
pub mod frontends;
pub mod groups;
pub mod region;
pub mod services;
pub mod space;

#[cfg(test)]
mod tests;

use crate::graph::Graph;
use crate::model::Model;
use compare::Decision;
use groups::Group;
use region::{Ivs, RowProto};
use services::ServiceChange;
use space::Space;
use std::collections::{BTreeMap, BTreeSet};

/// One program as the diff reads it.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    pub model: &'a Model,
    pub graph: &'a Graph,
}

/// One changed (source group, destination group, protocol, ports) row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Indices into [`Diff::groups`]: every source group, every
    /// destination group whose connections change alike (sorted).
    pub src: Vec<usize>,
    pub dst: Vec<usize>,
    /// The protocol as the rules see it: a keyword of the row's family, or
    /// every protocol without one there ([`RowProto::Other`]).
    pub proto: RowProto,
    /// Destination port ranges (tcp, udp, sctp); empty otherwise.
    pub ports: Vec<(u16, u16)>,
    /// ICMP type and code ranges (the family's ICMP only; empty otherwise).
    pub icmp_types: Vec<(u8, u8)>,
    pub icmp_codes: Vec<(u8, u8)>,
    pub old: Decision,
    pub new: Decision,
    /// For connections sent to a service frontend: the (old, new) backend
    /// combinations whose flows change ([`frontends`]), sorted; empty for
    /// connections not sent to one.
    pub via: Vec<frontends::Via>,
}

impl Change {
    /// Denied by OLD, allowed by NEW.
    pub fn allows_more(&self) -> bool {
        !self.old.allow && self.new.allow
    }
}

/// The overall direction of a diff (what `weir diff`'s exit code says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    /// No row and no service change.
    Same,
    /// Some row goes from deny to allow, or a frontend or backend was
    /// added.
    AllowsMore,
    /// Changes, none of which allows more.
    DeniesMore,
}

/// The whole result.
#[derive(Debug, Clone)]
pub struct Diff {
    /// The groups the rows name, in address order.
    pub groups: Vec<Group>,
    /// Sorted by (source group, destination group, protocol, first port).
    pub changes: Vec<Change>,
    pub services: Vec<ServiceChange>,
    pub space: Space,
    /// Every joint class's group name (for "any address except …").
    joint_names: Vec<String>,
}

impl Diff {
    /// How a row's source or destination list reads: "any IPv4
    /// address" when it holds every joint class of its family (a row's
    /// groups are all of one family), else its groups' names. When most
    /// of the family is listed, it reads "any IPv4 address except …"
    /// instead.
    pub fn names(&self, groups: &[usize]) -> String {
        let joints: BTreeSet<usize> = groups.iter().map(|&g| self.groups[g].joint).collect();
        let fams: BTreeSet<bool> = joints.iter().map(|&j| self.space.joints[j].v6).collect();
        let (scope, any) = match fams.first() {
            Some(&v6) if fams.len() == 1 => (
                Some(v6),
                if v6 {
                    "any IPv6 address"
                } else {
                    "any IPv4 address"
                },
            ),
            _ => (None, "any address"),
        };
        let rest: Vec<&str> = (0..self.space.len())
            .filter(|&j| scope.is_none_or(|v6| self.space.joints[j].v6 == v6))
            .filter(|j| !joints.contains(j))
            .map(|j| self.joint_names[j].as_str())
            .collect();
        if rest.is_empty() {
            return any.into();
        }
        if rest.len() <= 3 && rest.len() < joints.len() {
            return format!("{any} except {}", rest.join("; "));
        }
        let names: Vec<&str> = groups
            .iter()
            .map(|&g| self.groups[g].name.as_str())
            .collect();
        names.join("; ")
    }

    pub fn summary(&self) -> Summary {
        if self.changes.iter().any(Change::allows_more) || self.services.iter().any(|s| s.adds()) {
            Summary::AllowsMore
        } else if self.changes.is_empty() && self.services.is_empty() {
            Summary::Same
        } else {
            Summary::DeniesMore
        }
    }
}

fn to_u16(v: &Ivs) -> Vec<(u16, u16)> {
    v.0.iter().map(|&(a, b)| (a as u16, b as u16)).collect()
}

fn to_u8(v: &Ivs) -> Vec<(u8, u8)> {
    v.0.iter().map(|&(a, b)| (a as u8, b as u8)).collect()
}

/// Row key before naming: joint classes, protocol number, ICMP ranges,
/// decisions.
type Key = (
    usize,
    usize,
    u32,
    Option<(Ivs, Ivs)>,
    Option<frontends::Via>,
    Decision,
    Decision,
);

/// Diff two programs (module docs).
pub fn diff(old: Side<'_>, new: Side<'_>) -> Diff {
    let space = Space::build((old.model, old.graph), (new.model, new.graph));
    let changed = crate::graph::with_stack(|| {
        compare::changed(
            space.slices(),
            (old.graph, &space.old),
            (new.graph, &space.new),
        )
    });
    // Frontend (address, protocol) → ports the service stage translates.
    let mut fe_ports: BTreeMap<(std::net::IpAddr, u32), BTreeSet<u16>> = BTreeMap::new();
    for g in [old.graph, new.graph] {
        for f in &g.services.frontends {
            let n = u32::from(crate::flowhash::proto_number(f.frontend.proto));
            fe_ports
                .entry((f.frontend.addr, n))
                .or_default()
                .insert(f.frontend.port);
        }
    }
    let mut rows: BTreeMap<Key, Ivs> = BTreeMap::new();
    for c in &changed {
        let r = &c.region;
        for s in r.src.iter() {
            for d in r.dst.iter() {
                for &(plo, phi) in &r.proto.0 {
                    for p in plo..=phi {
                        let Some(proto) = RowProto::of_number(p) else {
                            continue;
                        };
                        let (icmp, mut ports) = if proto.has_ports() {
                            (None, r.dport.clone())
                        } else if proto.is_icmp() {
                            (
                                Some((r.icmp_type.clone(), r.icmp_code.clone())),
                                Ivs::default(),
                            )
                        } else {
                            (None, Ivs::default())
                        };
                        if let (Some(a), true) = (space.joints[d].frontend, proto.has_ports()) {
                            for &port in fe_ports.get(&(a, p)).into_iter().flatten() {
                                ports = ports.without(u32::from(port));
                            }
                            if ports.is_empty() {
                                continue;
                            }
                        }
                        let e = rows.entry((s, d, p, icmp, None, c.old, c.new)).or_default();
                        *e = e.union(&ports);
                    }
                }
            }
        }
    }
    // Connections sent to a frontend, decided toward its backends.
    let fes: BTreeSet<crate::model::Frontend> = [old.graph, new.graph]
        .iter()
        .flat_map(|g| g.services.frontends.iter().map(|f| f.frontend))
        .collect();
    for f in &fes {
        let d = space.classify(old.graph, new.graph, f.addr);
        let p = u32::from(crate::flowhash::proto_number(f.proto));
        let port = Ivs::range(u32::from(f.port), u32::from(f.port));
        for (s, via, o, n) in frontends::changed(&space, old.graph, new.graph, f) {
            rows.insert((s, d, p, None, Some(via), o, n), port.clone());
        }
    }
    // Rows that differ only in the backends of a frontend are one row,
    // then rows that differ only in the source group, then only in the
    // destination group.
    type Traffic = (u32, Option<(Ivs, Ivs)>, Ivs, Decision, Decision);
    type Rest = (Traffic, Vec<frontends::Via>);
    let mut vias: BTreeMap<(usize, usize, Traffic), Vec<frontends::Via>> = BTreeMap::new();
    for ((s, d, p, icmp, via, o, n), ports) in rows {
        vias.entry((s, d, (p, icmp, ports, o, n)))
            .or_default()
            .extend(via);
    }
    let mut by_dst: BTreeMap<(usize, Rest), Vec<usize>> = BTreeMap::new();
    for ((s, d, t), via) in vias {
        by_dst.entry((d, (t, via))).or_default().push(s);
    }
    let mut by_src: BTreeMap<(Vec<usize>, Rest), Vec<usize>> = BTreeMap::new();
    for ((d, rest), srcs) in by_dst {
        by_src.entry((srcs, rest)).or_default().push(d);
    }
    let used: BTreeSet<usize> = by_src
        .iter()
        .flat_map(|((s, _), d)| s.iter().chain(d).copied())
        .collect();
    let used: Vec<usize> = used.into_iter().collect();
    let position: BTreeMap<usize, usize> = used.iter().enumerate().map(|(i, &j)| (j, i)).collect();
    let classify = |a| space.classify(old.graph, new.graph, a);
    let all: Vec<usize> = (0..space.len()).collect();
    let joint_names = groups::groups(&space, old.model, new.model, &all, classify)
        .into_iter()
        .map(|g| g.name)
        .collect();
    let groups = groups::groups(&space, old.model, new.model, &used, classify);
    let mut changes: Vec<Change> = by_src
        .into_iter()
        .map(|((s, ((p, icmp, ports, o, n), via)), d)| {
            let proto = RowProto::of_number(p).expect("a row protocol");
            let (icmp_types, icmp_codes) = match &icmp {
                Some((t, c)) => (to_u8(t), to_u8(c)),
                None => (Vec::new(), Vec::new()),
            };
            Change {
                src: s.iter().map(|j| position[j]).collect(),
                dst: d.iter().map(|j| position[j]).collect(),
                proto,
                ports: to_u16(&ports),
                icmp_types,
                icmp_codes,
                old: o,
                new: n,
                via,
            }
        })
        .collect();
    changes.sort_by(|a, b| {
        (
            &a.src,
            &a.dst,
            a.proto,
            &a.ports,
            &a.icmp_types,
            &a.icmp_codes,
        )
            .cmp(&(
                &b.src,
                &b.dst,
                b.proto,
                &b.ports,
                &b.icmp_types,
                &b.icmp_codes,
            ))
    });
    Diff {
        groups,
        changes,
        services: services::changes(old.graph, new.graph),
        space,
        joint_names,
    }
}
