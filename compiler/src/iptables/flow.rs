//! Which protocols and ICMP types can reach each node: a forward pass over
//! the DAG from the entries. It only prunes rules (a port test reached by
//! TCP alone needs no UDP or SCTP rule; an ICMP code test under a type
//! test needs one `--icmp-type T/C` rule), so over-approximating is
//! always correct.
//!
//! The kernel-side convention the emitters follow, matching the model's
//! packets: a protocol without ports has destination port 0; a non-ICMP
//! packet has ICMP type 0 and code 0; a protocol the model does not know
//! (`Other`) takes every protocol test's else branch.
//!
//! The contexts are per family: the `ICMP` bit is the family's ICMP
//! (`icmp` in iptables, `icmp6` in ip6tables). The other family's ICMP is
//! a protocol without a keyword there (docs/language.md §4, "Headers"):
//! no packet of this family takes a test on it (its then-edge has an
//! empty context, so no rule is emitted for it), and a packet carrying
//! its number is `Other`.

use super::text::{Family, FastMap};
use crate::flowhash::proto_number;
use crate::graph::ir::{Cond, Node, NodeId, TableKey};
use crate::graph::Graph;
use crate::model::Proto;

pub const TCP: u8 = 1;
pub const UDP: u8 = 2;
pub const SCTP: u8 = 4;
pub const ICMP: u8 = 8;
pub const OTHER: u8 = 16;
pub const PORTS: u8 = TCP | UDP | SCTP;
pub const NON_ICMP: u8 = TCP | UDP | SCTP | OTHER;
pub const NO_PORTS: u8 = ICMP | OTHER;

/// The keyword protocols a packet of `fam` can have, with their bits.
pub fn model_protos(fam: Family) -> [(u8, Proto); 4] {
    [
        (TCP, Proto::Tcp),
        (UDP, Proto::Udp),
        (SCTP, Proto::Sctp),
        (ICMP, fam.icmp_proto()),
    ]
}

/// The bit of `p` in `fam` (0: no packet of `fam` is `p`).
pub fn bit(p: Proto, fam: Family) -> u8 {
    match p {
        Proto::Tcp => TCP,
        Proto::Udp => UDP,
        Proto::Sctp => SCTP,
        Proto::Icmp | Proto::Icmp6 if p == fam.icmp_proto() => ICMP,
        Proto::Icmp | Proto::Icmp6 => 0,
    }
}

/// Protocols (bits above) and, for ICMP packets, the ICMP types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctx {
    pub protos: u8,
    pub types: [u64; 4],
}

impl Ctx {
    pub const ALL: Ctx = Ctx {
        protos: TCP | UDP | SCTP | ICMP | OTHER,
        types: [u64::MAX; 4],
    };
    const NONE: Ctx = Ctx {
        protos: 0,
        types: [0; 4],
    };

    pub fn has(&self, bits: u8) -> bool {
        self.protos & bits != 0
    }

    pub fn has_type(&self, t: u8) -> bool {
        self.types[usize::from(t / 64)] >> (t % 64) & 1 == 1
    }

    /// The ICMP types possible for ICMP packets (empty if ICMP cannot get
    /// here).
    pub fn type_list(&self) -> Vec<u8> {
        if !self.has(ICMP) {
            return Vec::new();
        }
        (0..=255u8).filter(|&t| self.has_type(t)).collect()
    }

    fn join(&mut self, o: &Ctx) {
        self.protos |= o.protos;
        for i in 0..4 {
            self.types[i] |= o.types[i];
        }
    }

    fn keep(mut self, protos: u8) -> Ctx {
        self.protos &= protos;
        self
    }

    fn types_where(mut self, f: impl Fn(u8) -> bool) -> Ctx {
        for t in 0..=255u8 {
            if !f(t) {
                self.types[usize::from(t / 64)] &= !(1u64 << (t % 64));
            }
        }
        self
    }

    /// Keep ICMP only if `icmp`, the others only if `others`.
    fn split(self, icmp: bool, others: bool) -> Ctx {
        let mut m = 0;
        if icmp {
            m |= ICMP;
        }
        if others {
            m |= NON_ICMP;
        }
        self.keep(m)
    }
}

/// The protocol bits whose number is in `lo..=hi`.
pub fn protos_in(lo: u32, hi: u32, fam: Family) -> u8 {
    model_protos(fam)
        .iter()
        .filter(|(_, p)| {
            let n = u32::from(proto_number(*p));
            lo <= n && n <= hi
        })
        .fold(0, |m, (b, _)| m | b)
}

/// The edge contexts of a node, in `Node::children` order.
pub fn edges(node: &Node, c: Ctx, fam: Family) -> Vec<Ctx> {
    match node {
        Node::Test { cond, .. } => {
            let (t, e) = match *cond {
                Cond::Proto(p) => (c.keep(bit(p, fam)), c.keep(!bit(p, fam))),
                Cond::DPort { lo, .. } => {
                    let zero = lo == 0;
                    (
                        c.keep(if zero { !0 } else { PORTS }),
                        c.keep(if zero { PORTS } else { !0 }),
                    )
                }
                Cond::IcmpType(ty) => {
                    let t = c.types_where(|x| x == ty);
                    let t = t.split(c.has_type(ty), ty == 0);
                    let e = c.types_where(|x| x != ty).split(true, ty != 0);
                    (t, e)
                }
                Cond::IcmpCode(code) => (c.split(true, code == 0), c.split(true, code != 0)),
                Cond::SrcAtom(_) | Cond::DstAtom(_) | Cond::SameEndpoint => (c, c),
            };
            vec![t, e]
        }
        Node::Table { key, entries, .. } => {
            let zero_entry = entries.first().is_some_and(|e| e.lo == 0);
            let mut v: Vec<Ctx> = entries
                .iter()
                .map(|e| match key {
                    TableKey::Proto => c.keep(protos_in(e.lo, e.hi, fam)),
                    TableKey::DPort => c.keep(if e.lo == 0 { !0 } else { PORTS }),
                    TableKey::IcmpType => c
                        .types_where(|t| e.lo <= u32::from(t) && u32::from(t) <= e.hi)
                        .split(true, e.lo == 0),
                    TableKey::IcmpCode => c.split(true, e.lo == 0),
                    TableKey::SrcClass | TableKey::DstClass => c,
                })
                .collect();
            let d = match key {
                TableKey::Proto => {
                    let covered = entries
                        .iter()
                        .fold(0, |m, e| m | protos_in(e.lo, e.hi, fam));
                    c.keep(!covered)
                }
                TableKey::DPort => c.keep(if zero_entry { PORTS } else { !0 }),
                TableKey::IcmpType => c
                    .types_where(|t| {
                        !entries
                            .iter()
                            .any(|e| e.lo <= u32::from(t) && u32::from(t) <= e.hi)
                    })
                    .split(true, !zero_entry),
                TableKey::IcmpCode => c.split(true, !zero_entry),
                TableKey::SrcClass | TableKey::DstClass => c,
            };
            v.push(d);
            v
        }
        Node::Verdict(_) | Node::Steer(_) => Vec::new(),
    }
}

/// The context of every node reachable from `roots`, for packets of
/// `fam`.
pub fn contexts(g: &Graph, roots: &[NodeId], fam: Family) -> FastMap<NodeId, Ctx> {
    let mut ctx: FastMap<NodeId, Ctx> = FastMap::default();
    for &r in roots {
        ctx.insert(r, Ctx::ALL);
    }
    // Children have smaller ids than parents: decreasing id order visits
    // every parent before its children.
    let mut nodes: Vec<NodeId> = g.dag.reachable();
    nodes.sort_by(|a, b| b.cmp(a));
    for n in nodes {
        let Some(&c) = ctx.get(&n) else {
            continue;
        };
        let node = g.node(n);
        for ((_, child), cc) in node.children().into_iter().zip(edges(node, c, fam)) {
            ctx.entry(child).or_insert(Ctx::NONE).join(&cc);
        }
    }
    ctx
}
