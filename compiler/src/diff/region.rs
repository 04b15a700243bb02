//! Regions of packet space and the symbolic walk of a decision graph.
//!
//! A [`Region`] is a product of one set per field a graph reads: source
//! and destination *joint* classes (see [`super::space`]), protocol
//! number, destination port, ICMP type and code. [`slices`] are the
//! regions a diff starts from: per address family, the protocol numbers
//! and ICMP fields the rules see there (`crate::interp::rule_fields`),
//! between the family's classes only — no packet has an IPv4 source and
//! an IPv6 destination. [`walk`] pushes a region
//! through a graph from one entry point and returns the pieces that reach
//! each leaf: a test splits a region in two (the part that satisfies it
//! and the rest), a table splits it by its entries. Every packet of the
//! input region is in exactly one output piece, and it is the piece of the
//! leaf the packet reaches — so the pieces are the graph's own partition
//! of the region, computed without enumerating a single packet.

use crate::flowhash::proto_number;
use crate::graph::bits::Bits;
use crate::graph::ir::{Cond, Graph, Node, NodeId, TableKey};
use crate::interp::{rule_fields, rule_proto, Packet, OTHER_PROTO};
use crate::model::{Proto, PROTOS};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Sorted, disjoint, non-adjacent closed intervals of `u32`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ivs(pub Vec<(u32, u32)>);

impl Ivs {
    pub fn range(lo: u32, hi: u32) -> Ivs {
        Ivs(vec![(lo, hi)])
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, v: u32) -> bool {
        self.0.iter().any(|&(lo, hi)| lo <= v && v <= hi)
    }

    /// The part inside `lo..=hi` and the part outside it.
    pub fn split(&self, lo: u32, hi: u32) -> (Ivs, Ivs) {
        let mut inside = Vec::new();
        let mut outside = Vec::new();
        for &(a, b) in &self.0 {
            if b < lo || a > hi {
                outside.push((a, b));
                continue;
            }
            if a < lo {
                outside.push((a, lo - 1));
            }
            inside.push((a.max(lo), b.min(hi)));
            if b > hi {
                outside.push((hi + 1, b));
            }
        }
        (Ivs(inside), Ivs(outside))
    }

    /// The union with `o`, merged.
    pub fn union(&self, o: &Ivs) -> Ivs {
        let mut all: Vec<(u32, u32)> = self.0.iter().chain(&o.0).copied().collect();
        all.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(all.len());
        for (a, b) in all {
            match out.last_mut() {
                Some(l) if a <= l.1.saturating_add(1) => l.1 = l.1.max(b),
                _ => out.push((a, b)),
            }
        }
        Ivs(out)
    }

    /// Minus the single value `v`.
    pub fn without(&self, v: u32) -> Ivs {
        self.split(v, v).1
    }
}

/// Every [`Proto`] variant's position in [`PROTOS`] (the model's list of
/// keyword protocols, which the diff's [`slices`] range over): an
/// exhaustive match, so that a new protocol does not compile until it is
/// placed here and in that list — a diff that skipped a protocol would be
/// a silent approximation.
pub const fn listed(p: Proto) -> usize {
    match p {
        Proto::Icmp => 0,
        Proto::Tcp => 1,
        Proto::Udp => 2,
        Proto::Sctp => 3,
        Proto::Icmp6 => 4,
    }
}

pub fn has_ports(p: Proto) -> bool {
    matches!(p, Proto::Tcp | Proto::Udp | Proto::Sctp)
}

/// A row's protocol as the rules see it (`crate::interp::rule_proto`):
/// a keyword of the packets' family, or `Other` — every protocol without
/// a keyword there (ESP, GRE, …, and the other family's ICMP), which only
/// rules without a protocol match and which the graph reads as
/// [`OTHER_PROTO`] with ICMP type and code 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RowProto {
    Keyword(Proto),
    Other,
}

impl RowProto {
    /// The protocol the rules see in `p`.
    pub fn of(p: &Packet) -> RowProto {
        match rule_proto(p) {
            Some(q) => RowProto::Keyword(q),
            None => RowProto::Other,
        }
    }

    /// The protocol number the graph tests.
    pub fn number(self) -> u32 {
        match self {
            RowProto::Keyword(p) => u32::from(proto_number(p)),
            RowProto::Other => u32::from(OTHER_PROTO),
        }
    }

    pub fn of_number(n: u32) -> Option<RowProto> {
        if n == u32::from(OTHER_PROTO) {
            return Some(RowProto::Other);
        }
        PROTOS
            .into_iter()
            .find(|&p| u32::from(proto_number(p)) == n)
            .map(RowProto::Keyword)
    }

    /// tcp, udp, sctp: rows list destination ports.
    pub fn has_ports(self) -> bool {
        matches!(self, RowProto::Keyword(p) if has_ports(p))
    }

    /// The family's ICMP: rows list ICMP types and codes.
    pub fn is_icmp(self) -> bool {
        matches!(self, RowProto::Keyword(p) if p.is_icmp())
    }

    /// `tcp`, …, `icmp6`, or `other`.
    pub fn name(self) -> &'static str {
        match self {
            RowProto::Keyword(p) => p.keyword(),
            RowProto::Other => "other",
        }
    }
}

/// The regions a diff walks, for each address family given as (any
/// address of the family, the joint classes of that family): only
/// same-family (source, destination) pairs exist. Per family, one region
/// per protocol number the rules can see there, with the ICMP type and
/// code they read — found by asking [`rule_fields`] (the one rule) about
/// a probe packet of each keyword protocol whose type and code are 255: a
/// field the rules read comes back 255 (every value is walked), one they
/// do not comes back as the constant they see instead. The other
/// family's ICMP lands on [`OTHER_PROTO`] this way; that region is there
/// for every family anyway, since ESP, GRE and every protocol without a
/// keyword are read as it too.
pub fn slices(families: &[(IpAddr, Bits)]) -> Vec<Region> {
    let field = |v: u8| {
        if v == u8::MAX {
            Ivs::range(0, u32::from(u8::MAX))
        } else {
            Ivs::range(u32::from(v), u32::from(v))
        }
    };
    let region = |set: &Bits, (n, t, c): (u8, u8, u8)| Region {
        src: set.clone(),
        dst: set.clone(),
        proto: Ivs::range(u32::from(n), u32::from(n)),
        dport: Ivs::range(0, u32::from(u16::MAX)),
        icmp_type: field(t),
        icmp_code: field(c),
    };
    let mut out = Vec::new();
    for (a, set) in families {
        let mut by_number: BTreeMap<u8, Region> = BTreeMap::new();
        for p in PROTOS {
            let mut probe = Packet::new(p, *a, 0, *a, 0);
            probe.icmp_type = u8::MAX;
            probe.icmp_code = u8::MAX;
            let f = rule_fields(&probe);
            by_number.insert(f.0, region(set, f));
        }
        by_number
            .entry(OTHER_PROTO)
            .or_insert_with(|| region(set, (OTHER_PROTO, 0, 0)));
        out.extend(by_number.into_values());
    }
    out
}

/// A product of field sets (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub src: Bits,
    pub dst: Bits,
    pub proto: Ivs,
    pub dport: Ivs,
    pub icmp_type: Ivs,
    pub icmp_code: Ivs,
}

impl Region {
    pub fn is_empty(&self) -> bool {
        self.src.is_empty()
            || self.dst.is_empty()
            || self.proto.is_empty()
            || self.dport.is_empty()
            || self.icmp_type.is_empty()
            || self.icmp_code.is_empty()
    }

    fn with_classes(&self, src: bool, set: Bits) -> Region {
        let mut r = self.clone();
        if src {
            r.src = set;
        } else {
            r.dst = set;
        }
        r
    }

    /// Split by a class set on the source (`src`) or destination side.
    fn split_classes(&self, src: bool, set: &Bits) -> (Region, Region) {
        let cur = if src { &self.src } else { &self.dst };
        (
            self.with_classes(src, cur.and(set)),
            self.with_classes(src, cur.and_not(set)),
        )
    }

    fn field(&mut self, key: TableKey) -> &mut Ivs {
        match key {
            TableKey::Proto => &mut self.proto,
            TableKey::DPort => &mut self.dport,
            TableKey::IcmpType => &mut self.icmp_type,
            TableKey::IcmpCode => &mut self.icmp_code,
            TableKey::SrcClass | TableKey::DstClass => unreachable!("class keys split by Bits"),
        }
    }

    /// Split by `lo..=hi` of a numeric field.
    fn split_field(&self, key: TableKey, lo: u32, hi: u32) -> (Region, Region) {
        let (a, b) = self.clone().field(key).split(lo, hi);
        let mut inside = self.clone();
        *inside.field(key) = a;
        let mut outside = self.clone();
        *outside.field(key) = b;
        (inside, outside)
    }
}

/// One program's classes seen as sets of joint classes.
#[derive(Debug, Clone)]
pub struct JointMap {
    /// Program class id → the joint classes in it.
    pub class: Vec<Bits>,
    /// Program atom id → the joint classes whose program class satisfies it.
    pub atom: Vec<Bits>,
    /// Joint class → the endpoint owning its addresses in this program
    /// (`self`; see [`super::space`]).
    pub owner: Vec<Option<u32>>,
    /// Endpoint → its joint classes.
    pub by_owner: BTreeMap<u32, Bits>,
}

impl JointMap {
    fn classes_in(&self, lo: u32, hi: u32) -> Bits {
        let hi = (hi as usize).min(self.class.len().saturating_sub(1));
        let mut b = Bits::new();
        for c in (lo as usize)..=hi {
            if let Some(s) = self.class.get(c) {
                b = b.or(s);
            }
        }
        b
    }
}

fn split_cond(r: &Region, cond: Cond, m: &JointMap) -> (Region, Region) {
    match cond {
        Cond::Proto(p) => {
            let n = u32::from(proto_number(p));
            r.split_field(TableKey::Proto, n, n)
        }
        Cond::DPort { lo, hi } => r.split_field(TableKey::DPort, u32::from(lo), u32::from(hi)),
        Cond::IcmpType(t) => r.split_field(TableKey::IcmpType, u32::from(t), u32::from(t)),
        Cond::IcmpCode(c) => r.split_field(TableKey::IcmpCode, u32::from(c), u32::from(c)),
        Cond::SrcAtom(a) => r.split_classes(true, &m.atom[a as usize]),
        Cond::DstAtom(a) => r.split_classes(false, &m.atom[a as usize]),
        Cond::SameEndpoint => unreachable!("`walk` splits `self` by `split_same`"),
    }
}

/// `self` (`Cond::SameEndpoint`): the pieces of `r` whose source and
/// destination joint classes have one owner (`true`) and the rest
/// (`false`). Joint classes are split by owner ([`super::space`]), so
/// each source with an owner whose classes meet the destinations is a
/// piece of its own; sources without one stay together.
fn split_same(r: &Region, m: &JointMap) -> Vec<(Region, bool)> {
    let mut out = Vec::new();
    let mut rest = Bits::new();
    for s in r.src.iter() {
        let own = m.owner[s].and_then(|o| m.by_owner.get(&o));
        match own {
            Some(own) if r.dst.intersects(own) => {
                let one = |dst: Bits| Region {
                    src: {
                        let mut b = Bits::new();
                        b.insert(s);
                        b
                    },
                    dst,
                    ..r.clone()
                };
                out.push((one(r.dst.and(own)), true));
                let other = r.dst.and_not(own);
                if !other.is_empty() {
                    out.push((one(other), false));
                }
            }
            _ => rest.insert(s),
        }
    }
    if !rest.is_empty() {
        out.push((r.with_classes(true, rest), false));
    }
    out
}

fn split_key(r: &Region, key: TableKey, lo: u32, hi: u32, m: &JointMap) -> (Region, Region) {
    match key {
        TableKey::SrcClass => r.split_classes(true, &m.classes_in(lo, hi)),
        TableKey::DstClass => r.split_classes(false, &m.classes_in(lo, hi)),
        k => r.split_field(k, lo, hi),
    }
}

/// The pieces of `region` that reach each leaf from `root` (module docs).
pub fn walk<'g>(
    g: &'g Graph,
    m: &JointMap,
    root: NodeId,
    region: Region,
) -> Vec<(Region, &'g Node)> {
    let mut out = Vec::new();
    let mut stack = vec![(root, region)];
    while let Some((n, r)) = stack.pop() {
        if r.is_empty() {
            continue;
        }
        match g.node(n) {
            Node::Test {
                cond: Cond::SameEndpoint,
                then,
                els,
            } => {
                for (piece, same) in split_same(&r, m) {
                    stack.push((if same { *then } else { *els }, piece));
                }
            }
            Node::Test { cond, then, els } => {
                let (a, b) = split_cond(&r, *cond, m);
                stack.push((*els, b));
                stack.push((*then, a));
            }
            Node::Table {
                key,
                entries,
                default,
                ..
            } => {
                let mut rest = r;
                for e in entries {
                    if rest.is_empty() {
                        break;
                    }
                    let (a, b) = split_key(&rest, *key, e.lo, e.hi, m);
                    stack.push((e.next, a));
                    rest = b;
                }
                stack.push((*default, rest));
            }
            leaf => out.push((r, leaf)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_protocol_is_listed() {
        // `listed` places every keyword protocol in PROTOS, once.
        for (i, &p) in PROTOS.iter().enumerate() {
            assert_eq!(listed(p), i, "{p:?}");
        }
        // Per family: each of the family's keywords with the ICMP fields
        // its rules read, and one region for every other protocol; every
        // region pairs the family's classes with themselves only.
        let (mut b4, mut b6) = (Bits::new(), Bits::new());
        b4.insert(0);
        b6.insert(1);
        let fams = [
            ("10.0.0.1".parse().unwrap(), b4.clone()),
            ("fd00::1".parse().unwrap(), b6.clone()),
        ];
        let all = Ivs::range(0, 255);
        let zero = Ivs::range(0, 0);
        let got: Vec<(bool, RowProto, Ivs, Ivs)> = slices(&fams)
            .into_iter()
            .map(|r| {
                assert_eq!(r.src, r.dst);
                assert!(r.src == b4 || r.src == b6);
                assert_eq!(r.dport, Ivs::range(0, 65535));
                assert_eq!(r.proto.0.len(), 1);
                let p = RowProto::of_number(r.proto.0[0].0).expect("a row protocol");
                assert_eq!(p.number(), r.proto.0[0].0);
                (r.src == b6, p, r.icmp_type, r.icmp_code)
            })
            .collect();
        let k = RowProto::Keyword;
        let plain = |v6, p| (v6, p, zero.clone(), zero.clone());
        let icmp = |v6, p| (v6, p, all.clone(), all.clone());
        assert_eq!(
            got,
            [
                icmp(false, k(Proto::Icmp)),
                plain(false, k(Proto::Tcp)),
                plain(false, k(Proto::Udp)),
                plain(false, k(Proto::Sctp)),
                plain(false, RowProto::Other),
                plain(true, k(Proto::Tcp)),
                plain(true, k(Proto::Udp)),
                icmp(true, k(Proto::Icmp6)),
                plain(true, k(Proto::Sctp)),
                plain(true, RowProto::Other),
            ]
        );
    }

    #[test]
    fn split_and_union() {
        let v = Ivs(vec![(0, 10), (20, 30)]);
        let (a, b) = v.split(5, 25);
        assert_eq!(a, Ivs(vec![(5, 10), (20, 25)]));
        assert_eq!(b, Ivs(vec![(0, 4), (26, 30)]));
        assert_eq!(a.union(&b), v);
        assert_eq!(
            Ivs(vec![(0, 4)]).union(&Ivs(vec![(5, 9)])),
            Ivs(vec![(0, 9)])
        );
        assert_eq!(Ivs::range(0, 3).without(0), Ivs::range(1, 3));
    }
}
