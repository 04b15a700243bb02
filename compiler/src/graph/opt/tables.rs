//! `tables`: choose between tests and table nodes by the cost model.
//!
//! - A **decision list of peer atom tests** on the same address (`dst a1 ?
//!   t1 : dst a2 ? t2 : … : d`) of at least [`MIN_CHAIN`] tests becomes one
//!   table keyed by that address's class: each class goes to the target of
//!   the first atom it satisfies, else to the default. A back end does one
//!   map lookup (eBPF hash map, iptables: one ipset per target via
//!   `hash:net` + `list:set`, or a verdict map) instead of a chain. The
//!   table keeps the list as its `rule`, so a runtime-allocated class can
//!   get its row without recompiling.
//!
//!   Every item's target must be a child of the table (an entry target or
//!   the default: `Node::children`), or the next rebuild loses it. It is,
//!   because no path has an infeasible branch: the lowering emits an atom
//!   test only when some class can take each branch given the tests
//!   above it, and `hashcons`, `redundant` and `order` only drop tests or
//!   merge paths, never making a path's constraints stronger. So along
//!   the chain's `else` path item k's atom holds for some class that
//!   satisfies none of the items before it: that class's row is item k's
//!   target (or it equals the default and is dropped as such). A
//!   subsumed item (`app == "web" && tier == "fe"` after `app == "web"`)
//!   or an atom with no class never reaches here. Should one reach here
//!   all the same, the chain is not tabled at that test (fail closed: the
//!   tests keep their meaning for every class, spare ones included);
//!   dropping the item instead would be wrong for a spare class that
//!   satisfies it alone.
//! - A **small table** on a packet field (protocol, port, ICMP type/code)
//!   with at most [`MAX_INLINE`] entries becomes that many range tests:
//!   two compares are cheaper than a lookup.
//!
//! The thresholds come from `cost.rs`: a table lookup costs about
//! [`crate::graph::cost::TABLE_COST`] tests.

use crate::graph::classes::{AtomId, Classes};
use crate::graph::ir::{Builder, Cond, Dag, Node, NodeId, TableEntry, TableKey};
use crate::model::Proto;
// FxHash: these maps are hot and keyed by ids, nodes and short strings;
// nothing iterates them into output.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

/// Shortest chain of atom tests turned into a class table.
pub const MIN_CHAIN: usize = 4;
/// Largest field table turned back into tests.
pub const MAX_INLINE: usize = 2;

pub fn run(dag: &Dag, classes: &Classes) -> Dag {
    let mut t = Tables {
        dag,
        classes,
        b: Builder::new(true),
        memo: HashMap::default(),
    };
    let roots = dag.roots.map(|r| t.conv(r));
    t.b.finish(roots)
}

struct Tables<'a> {
    dag: &'a Dag,
    classes: &'a Classes,
    b: Builder,
    memo: HashMap<NodeId, NodeId>,
}

fn side_atom(n: &Node) -> Option<(bool, AtomId, NodeId, NodeId)> {
    match n {
        Node::Test {
            cond: Cond::SrcAtom(a),
            then,
            els,
        } => Some((true, *a, *then, *els)),
        Node::Test {
            cond: Cond::DstAtom(a),
            then,
            els,
        } => Some((false, *a, *then, *els)),
        _ => None,
    }
}

fn proto_of(n: u32) -> Option<Proto> {
    match n {
        1 => Some(Proto::Icmp),
        58 => Some(Proto::Icmp6),
        6 => Some(Proto::Tcp),
        17 => Some(Proto::Udp),
        132 => Some(Proto::Sctp),
        _ => None,
    }
}

/// The test for `key ∈ [lo, hi]`, if one exists.
fn inline_cond(key: TableKey, lo: u32, hi: u32) -> Option<Cond> {
    match key {
        TableKey::Proto if lo == hi => proto_of(lo).map(Cond::Proto),
        TableKey::DPort => Some(Cond::DPort {
            lo: lo as u16,
            hi: hi as u16,
        }),
        TableKey::IcmpType if lo == hi => Some(Cond::IcmpType(lo as u8)),
        TableKey::IcmpCode if lo == hi => Some(Cond::IcmpCode(lo as u8)),
        _ => None,
    }
}

impl Tables<'_> {
    fn conv(&mut self, n: NodeId) -> NodeId {
        if let Some(&m) = self.memo.get(&n) {
            return m;
        }
        let out = self.conv_inner(n);
        self.memo.insert(n, out);
        out
    }

    fn conv_inner(&mut self, n: NodeId) -> NodeId {
        let node = self.dag.node(n).clone();
        if let Some((src, a, then, els)) = side_atom(&node) {
            let mut list = vec![(a, then)];
            let mut cur = els;
            while let Some((s2, a2, t2, e2)) = side_atom(self.dag.node(cur)) {
                if s2 != src {
                    break;
                }
                list.push((a2, t2));
                cur = e2;
            }
            if list.len() >= MIN_CHAIN {
                let rule: Vec<(AtomId, NodeId)> =
                    list.iter().map(|&(a, t)| (a, self.conv(t))).collect();
                let default = self.conv(cur);
                if let Some(table) = self.class_table(src, rule, default) {
                    return table;
                }
                // Not tabled: the first test stays a test and the rest of
                // the chain is tried again on its own below.
            }
            let then = self.conv(then);
            let els = self.conv(els);
            return self.b.add(Node::Test {
                cond: if src {
                    Cond::SrcAtom(a)
                } else {
                    Cond::DstAtom(a)
                },
                then,
                els,
            });
        }
        match node {
            Node::Table {
                key,
                entries,
                default,
                rule,
            } => {
                let entries: Vec<TableEntry> = entries
                    .iter()
                    .map(|e| TableEntry {
                        next: self.conv(e.next),
                        ..*e
                    })
                    .collect();
                let default = self.conv(default);
                let rule = rule.map(|r| r.iter().map(|&(a, t)| (a, self.conv(t))).collect());
                if entries.len() <= MAX_INLINE {
                    let conds: Option<Vec<Cond>> = entries
                        .iter()
                        .map(|e| inline_cond(key, e.lo, e.hi))
                        .collect();
                    if let Some(conds) = conds {
                        let mut acc = default;
                        for (e, c) in entries.iter().zip(conds).rev() {
                            acc = self.b.add(Node::Test {
                                cond: c,
                                then: e.next,
                                els: acc,
                            });
                        }
                        return acc;
                    }
                }
                self.b.add(Node::Table {
                    key,
                    entries,
                    default,
                    rule,
                })
            }
            other => {
                let mapped = other.map_children(|c| self.conv(c));
                self.b.add(mapped)
            }
        }
    }

    /// The class table of the decision list `rule` (else `default`), or
    /// `None` when an item's target would be no child of the table (see
    /// the module docs).
    fn class_table(
        &mut self,
        src: bool,
        rule: Vec<(AtomId, NodeId)>,
        default: NodeId,
    ) -> Option<NodeId> {
        let mut row: HashMap<usize, NodeId> = HashMap::default();
        for &(a, t) in &rule {
            for c in self.classes.classes_with(a).iter() {
                row.entry(c).or_insert(t);
            }
        }
        let children: HashSet<NodeId> = row.values().copied().collect();
        if rule
            .iter()
            .any(|&(_, t)| t != default && !children.contains(&t))
        {
            return None;
        }
        let mut cls: Vec<(usize, NodeId)> =
            row.into_iter().filter(|&(_, t)| t != default).collect();
        cls.sort();
        let mut entries: Vec<TableEntry> = Vec::new();
        for (c, t) in cls {
            match entries.last_mut() {
                Some(l) if l.next == t && l.hi + 1 == c as u32 => l.hi = c as u32,
                _ => entries.push(TableEntry {
                    lo: c as u32,
                    hi: c as u32,
                    next: t,
                }),
            }
        }
        if entries.is_empty() {
            return Some(default);
        }
        Some(self.b.add(Node::Table {
            key: if src {
                TableKey::SrcClass
            } else {
                TableKey::DstClass
            },
            entries,
            default,
            rule: Some(rule),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ir::{Roots, SteerLeaf, VerdictLeaf};

    /// A chain whose second item is first for no class (its atom is the
    /// first item's again; the lowering never leaves one, the module docs
    /// say why): tabled, its list would name a node that is no child of
    /// the table, which the verifier reports and the next rebuild panics
    /// on. The chain stays tests and every pass after `tables` runs.
    #[test]
    fn a_chain_item_first_for_no_class_is_not_tabled() {
        let (classes, atoms) = classes_with_atoms_first_somewhere(3);
        let a = atoms[0];
        let mut b = Builder::new(false);
        let leaves = verdict_leaves(&mut b, 5);
        let mut cur = leaves[4];
        for (i, x) in [a, a, atoms[1], atoms[2]].into_iter().enumerate().rev() {
            cur = b.add(Node::Test {
                cond: Cond::DstAtom(x),
                then: leaves[i],
                els: cur,
            });
        }
        let steer = b.add(Node::Steer(SteerLeaf::None));
        let dag = b.finish(Roots {
            steer,
            egress: cur,
            ingress: cur,
        });
        let bounds = crate::graph::verify::Bounds {
            atoms: classes.atoms.len() as u32,
            classes: classes.len() as u32,
            provenance: 5,
            steer_rules: vec![],
        };
        let out = run(&dag, &classes);
        if let Err(errs) = crate::graph::verify::verify_dag(&out, &bounds) {
            panic!("{}", crate::graph::verify::report(&errs));
        }
        assert!(
            matches!(out.node(out.roots.egress), Node::Test { cond: Cond::DstAtom(x), .. } if *x == a),
            "the first test stays: {:?}",
            out.node(out.roots.egress)
        );
        let after = crate::graph::opt::redundant::run(&out);
        crate::graph::verify::verify_dag(&after, &bounds).unwrap();
    }

    /// The classes of the first generated model with `n` atoms each of
    /// which, in order, holds for a class none of the earlier ones holds
    /// for (a chain of tests on them is what the lowering can emit).
    fn classes_with_atoms_first_somewhere(n: usize) -> (Classes, Vec<AtomId>) {
        for seed in 0..100 {
            let classes = Classes::build(&crate::gen::model(seed));
            let mut seen = crate::graph::bits::Bits::new();
            let mut atoms = Vec::new();
            for a in 0..classes.atoms.len() as AtomId {
                let w = classes.classes_with(a);
                if atoms.len() < n && !w.and_not(&seen).is_empty() {
                    seen = seen.or(w);
                    atoms.push(a);
                }
            }
            if atoms.len() == n {
                return (classes, atoms);
            }
        }
        panic!("no generated model has {n} such atoms");
    }

    /// `n` verdict leaves, allow and deny in turn, decided by 0..n.
    fn verdict_leaves(b: &mut Builder, n: u32) -> Vec<NodeId> {
        (0..n)
            .map(|i| {
                b.add(Node::Verdict(VerdictLeaf {
                    allow: i % 2 == 0,
                    decided: i,
                    logged: vec![],
                }))
            })
            .collect()
    }

    #[test]
    fn long_atom_chain_becomes_class_table_and_small_tables_become_tests() {
        let (classes, atoms) = classes_with_atoms_first_somewhere(5);
        let mut b = Builder::new(false);
        let leaves = verdict_leaves(&mut b, 6);
        let mut cur = leaves[5];
        for i in (0..5).rev() {
            cur = b.add(Node::Test {
                cond: Cond::DstAtom(atoms[i]),
                then: leaves[i],
                els: cur,
            });
        }
        let port = b.add(Node::Table {
            key: TableKey::DPort,
            entries: vec![TableEntry {
                lo: 80,
                hi: 80,
                next: cur,
            }],
            default: leaves[0],
            rule: None,
        });
        let dag = b.finish(Roots {
            steer: port,
            egress: port,
            ingress: port,
        });
        let out = run(&dag, &classes);
        match out.node(out.roots.egress) {
            Node::Test {
                cond: Cond::DPort { lo: 80, hi: 80 },
                then,
                ..
            } => match out.node(*then) {
                Node::Table { key, rule, .. } => {
                    assert_eq!(*key, TableKey::DstClass);
                    assert_eq!(rule.as_ref().map(Vec::len), Some(5));
                }
                n => panic!("{n:?}"),
            },
            n => panic!("{n:?}"),
        }
    }
}
