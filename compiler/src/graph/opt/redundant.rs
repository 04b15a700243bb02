//! `redundant`: remove tests that decide nothing.
//!
//! Locally (bottom-up): a test whose two branches are the same node is its
//! branch; a test whose branch tests the same condition again skips that
//! second test; a table drops entries that equal its default, merges
//! adjacent entries with the same target, becomes its default when no
//! entry is left, and looks through a child table on the same key when the
//! entry's interval falls in one place of it.
//!
//! Along paths (top-down): the outcome of a test may be known from an
//! ancestor — the same atom tested higher up, a port range inside the
//! interval an enclosing port table already selected, a protocol test
//! under a protocol-table entry. Facts are carried down and a node is
//! rebuilt once per distinct set of facts *that it can use* (facts about
//! fields it never tests are dropped from the memo key), so shared
//! subgraphs stay shared.

use crate::flowhash::proto_number;
use crate::graph::classes::AtomId;
use crate::graph::ir::{Builder, Cond, Dag, Node, NodeId, TableEntry, TableKey};
use std::collections::BTreeSet;
// FxHash: these maps are hot and keyed by ids, nodes and short strings;
// nothing iterates them into output.
use rustc_hash::FxHashMap as HashMap;
use std::rc::Rc;

pub fn run(dag: &Dag) -> Dag {
    let local = dag.rebuild(false, simplify);
    // The locally simplified graph and the memo are freed before the
    // last round (one graph less held at once; issue 21).
    let out = {
        let mut p = Paths {
            dag: &local,
            b: Builder::new(false),
            memo: HashMap::default(),
            support: support(&local),
        };
        let roots = local.roots.map(|r| p.go(r, &Facts::default()));
        p.b.finish(roots)
    };
    drop(local);
    // One more local round: path pruning can create equal branches.
    out.rebuild(false, simplify)
}

/// Add `n` after local simplification (see the module docs).
pub fn simplify(b: &mut Builder, n: Node) -> NodeId {
    match n {
        Node::Test {
            cond,
            mut then,
            mut els,
        } => {
            if let Node::Test {
                cond: c2, then: t2, ..
            } = b.get(then)
            {
                if *c2 == cond {
                    then = *t2;
                }
            }
            if let Node::Test {
                cond: c2, els: e2, ..
            } = b.get(els)
            {
                if *c2 == cond {
                    els = *e2;
                }
            }
            if then == els {
                then
            } else {
                b.add(Node::Test { cond, then, els })
            }
        }
        Node::Table {
            key,
            entries,
            default,
            rule,
        } => {
            let mut out: Vec<TableEntry> = Vec::with_capacity(entries.len());
            // A class table's decision list names its entries' targets
            // (`Node::Table::rule`): looking through one would leave the
            // list naming a node that is no longer a child, which the
            // next rebuild drops.
            let see_through = rule.is_none();
            for mut e in entries {
                if see_through {
                    e.next = look_through(b, key, e.lo, e.hi, e.next);
                }
                if e.next == default {
                    continue;
                }
                match out.last_mut() {
                    Some(l) if l.next == e.next && l.hi + 1 == e.lo => l.hi = e.hi,
                    _ => out.push(e),
                }
            }
            if out.is_empty() {
                default
            } else {
                b.add(Node::Table {
                    key,
                    entries: out,
                    default,
                    rule,
                })
            }
        }
        leaf => b.add(leaf),
    }
}

/// If `next` is a table on `key` and all of `lo..=hi` goes one way in it,
/// that way.
fn look_through(b: &Builder, key: TableKey, lo: u32, hi: u32, next: NodeId) -> NodeId {
    if let Node::Table {
        key: k2,
        entries,
        default,
        ..
    } = b.get(next)
    {
        if *k2 == key {
            let overlapping: Vec<&TableEntry> = entries
                .iter()
                .filter(|e| e.lo <= hi && lo <= e.hi)
                .collect();
            match overlapping.as_slice() {
                [] => return *default,
                [e] if e.lo <= lo && hi <= e.hi => return e.next,
                _ => {}
            }
        }
    }
    next
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum FKey {
    Src(AtomId),
    Dst(AtomId),
    Field(TableKey),
    /// `Cond::SameEndpoint`.
    Same,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum FVal {
    Bool(bool),
    Range(u32, u32),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct Facts(Vec<(FKey, FVal)>);

impl Facts {
    fn get(&self, k: FKey) -> Option<FVal> {
        self.0
            .binary_search_by(|(x, _)| x.cmp(&k))
            .ok()
            .map(|i| self.0[i].1)
    }

    fn with(&self, k: FKey, v: FVal) -> Facts {
        let mut f = self.clone();
        match f.0.binary_search_by(|(x, _)| x.cmp(&k)) {
            Ok(i) => f.0[i].1 = v,
            Err(i) => f.0.insert(i, (k, v)),
        }
        f
    }

    fn restrict(&self, keep: &BTreeSet<FKey>) -> Facts {
        Facts(
            self.0
                .iter()
                .filter(|(k, _)| keep.contains(k))
                .copied()
                .collect(),
        )
    }
}

fn domain(k: TableKey) -> (u32, u32) {
    match k {
        TableKey::DPort => (0, 65535),
        TableKey::Proto | TableKey::IcmpType | TableKey::IcmpCode => (0, 255),
        TableKey::SrcClass | TableKey::DstClass => (0, u32::MAX),
    }
}

/// A range condition as (key, interval).
fn range_cond(c: Cond) -> Option<(TableKey, u32, u32)> {
    match c {
        Cond::Proto(p) => {
            let n = u32::from(proto_number(p));
            Some((TableKey::Proto, n, n))
        }
        Cond::DPort { lo, hi } => Some((TableKey::DPort, u32::from(lo), u32::from(hi))),
        Cond::IcmpType(t) => Some((TableKey::IcmpType, u32::from(t), u32::from(t))),
        Cond::IcmpCode(c) => Some((TableKey::IcmpCode, u32::from(c), u32::from(c))),
        Cond::SrcAtom(_) | Cond::DstAtom(_) | Cond::SameEndpoint => None,
    }
}

fn own_keys(n: &Node) -> Vec<FKey> {
    match n {
        Node::Test { cond, .. } => match *cond {
            Cond::SrcAtom(a) => vec![FKey::Src(a)],
            Cond::DstAtom(a) => vec![FKey::Dst(a)],
            Cond::SameEndpoint => vec![FKey::Same],
            c => range_cond(c)
                .map(|(k, _, _)| FKey::Field(k))
                .into_iter()
                .collect(),
        },
        Node::Table { key, .. } => match key {
            TableKey::SrcClass | TableKey::DstClass => Vec::new(),
            k => vec![FKey::Field(*k)],
        },
        _ => Vec::new(),
    }
}

/// The facts each node can use: keys tested in its subgraph.
fn support(dag: &Dag) -> HashMap<NodeId, Rc<BTreeSet<FKey>>> {
    let mut s: HashMap<NodeId, Rc<BTreeSet<FKey>>> = HashMap::default();
    let empty = Rc::new(BTreeSet::new());
    for n in dag.reachable() {
        let node = dag.node(n);
        let own = own_keys(node);
        let kids: Vec<Rc<BTreeSet<FKey>>> =
            node.children().iter().map(|(_, c)| s[c].clone()).collect();
        let nonempty: Vec<&Rc<BTreeSet<FKey>>> = kids.iter().filter(|k| !k.is_empty()).collect();
        let set = if own.is_empty() && nonempty.is_empty() {
            empty.clone()
        } else if own
            .iter()
            .all(|k| nonempty.first().is_some_and(|f| f.contains(k)))
            && nonempty
                .windows(2)
                .all(|w| Rc::ptr_eq(w[0], w[1]) || w[0] == w[1])
        {
            nonempty[0].clone()
        } else {
            let mut u: BTreeSet<FKey> = own.into_iter().collect();
            for k in nonempty {
                u.extend(k.iter().copied());
            }
            Rc::new(u)
        };
        s.insert(n, set);
    }
    s
}

struct Paths<'d> {
    dag: &'d Dag,
    b: Builder,
    memo: HashMap<(NodeId, Facts), NodeId>,
    support: HashMap<NodeId, Rc<BTreeSet<FKey>>>,
}

impl Paths<'_> {
    fn go(&mut self, n: NodeId, facts: &Facts) -> NodeId {
        let facts = facts.restrict(&self.support[&n]);
        if let Some(&m) = self.memo.get(&(n, facts.clone())) {
            return m;
        }
        let out = self.go_inner(n, &facts);
        self.memo.insert((n, facts), out);
        out
    }

    fn go_inner(&mut self, n: NodeId, facts: &Facts) -> NodeId {
        match self.dag.node(n).clone() {
            Node::Test { cond, then, els } => {
                if let Some(k) = match cond {
                    Cond::SrcAtom(a) => Some(FKey::Src(a)),
                    Cond::DstAtom(a) => Some(FKey::Dst(a)),
                    Cond::SameEndpoint => Some(FKey::Same),
                    _ => None,
                } {
                    return match facts.get(k) {
                        Some(FVal::Bool(true)) => self.go(then, facts),
                        Some(FVal::Bool(false)) => self.go(els, facts),
                        _ => {
                            let t = self.go(then, &facts.with(k, FVal::Bool(true)));
                            let e = self.go(els, &facts.with(k, FVal::Bool(false)));
                            simplify(
                                &mut self.b,
                                Node::Test {
                                    cond,
                                    then: t,
                                    els: e,
                                },
                            )
                        }
                    };
                }
                let (key, lo, hi) = range_cond(cond).expect("non-atom conditions are ranges");
                let fk = FKey::Field(key);
                let (rlo, rhi) = match facts.get(fk) {
                    Some(FVal::Range(a, b)) => (a, b),
                    _ => domain(key),
                };
                if lo <= rlo && rhi <= hi {
                    return self.go(then, facts);
                }
                if rhi < lo || hi < rlo {
                    return self.go(els, facts);
                }
                let t = self.go(then, &facts.with(fk, FVal::Range(rlo.max(lo), rhi.min(hi))));
                let rest = if lo <= rlo {
                    Some((hi + 1, rhi))
                } else if rhi <= hi {
                    Some((rlo, lo - 1))
                } else {
                    None
                };
                let ef = match rest {
                    Some((a, b)) => facts.with(fk, FVal::Range(a, b)),
                    None => facts.clone(),
                };
                let e = self.go(els, &ef);
                simplify(
                    &mut self.b,
                    Node::Test {
                        cond,
                        then: t,
                        els: e,
                    },
                )
            }
            Node::Table {
                key,
                entries,
                default,
                rule,
            } => {
                let class_key = matches!(key, TableKey::SrcClass | TableKey::DstClass);
                let fk = FKey::Field(key);
                let (rlo, rhi) = match facts.get(fk) {
                    Some(FVal::Range(a, b)) if !class_key => (a, b),
                    _ => domain(key),
                };
                let live: Vec<TableEntry> = entries
                    .iter()
                    .copied()
                    .filter(|e| e.lo <= rhi && rlo <= e.hi)
                    .collect();
                if !class_key {
                    match live.as_slice() {
                        [] => return self.go(default, facts),
                        [e] if e.lo <= rlo && rhi <= e.hi => return self.go(e.next, facts),
                        _ => {}
                    }
                }
                let mut new_entries = Vec::with_capacity(live.len());
                for e in live {
                    let next = if class_key {
                        self.go(e.next, facts)
                    } else {
                        let f = facts.with(fk, FVal::Range(rlo.max(e.lo), rhi.min(e.hi)));
                        self.go(e.next, &f)
                    };
                    new_entries.push(TableEntry { next, ..e });
                }
                let d = self.go(default, facts);
                // A class table's rule list maps through the same children.
                let rule = rule.map(|r| {
                    r.into_iter()
                        .map(|(a, t)| (a, self.go(t, facts)))
                        .collect::<Vec<_>>()
                });
                simplify(
                    &mut self.b,
                    Node::Table {
                        key,
                        entries: new_entries,
                        default: d,
                        rule,
                    },
                )
            }
            leaf => self.b.add(leaf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ir::{Roots, VerdictLeaf};

    fn leaf(b: &mut Builder, decided: u32) -> NodeId {
        b.add(Node::Verdict(VerdictLeaf {
            allow: true,
            decided,
            logged: vec![],
        }))
    }

    fn dag(b: Builder, root: NodeId) -> Dag {
        b.finish(Roots {
            steer: root,
            egress: root,
            ingress: root,
        })
    }

    /// A class table (with its decision list) whose entry goes to another
    /// class table on the same key that sends the whole entry one way:
    /// looking through it would leave the outer list naming a node no
    /// path reaches, and the path pass then panicked on it (exit 101 on a
    /// 100,000-rule model, seed 2).
    #[test]
    fn a_class_table_keeps_the_tables_its_decision_list_names() {
        let mut b = Builder::new(false);
        let (x, y) = (leaf(&mut b, 1), leaf(&mut b, 2));
        let inner = b.add(Node::Table {
            key: TableKey::SrcClass,
            entries: vec![TableEntry {
                lo: 0,
                hi: 1,
                next: x,
            }],
            default: y,
            rule: Some(vec![(0, x)]),
        });
        let outer = b.add(Node::Table {
            key: TableKey::SrcClass,
            entries: vec![TableEntry {
                lo: 0,
                hi: 0,
                next: inner,
            }],
            default: y,
            rule: Some(vec![(1, inner)]),
        });
        let steer = b.add(Node::Steer(crate::graph::ir::SteerLeaf::None));
        let out = run(&b.finish(Roots {
            steer,
            egress: outer,
            ingress: outer,
        }));
        let bounds = crate::graph::verify::Bounds {
            atoms: 2,
            classes: 2,
            provenance: 3,
            steer_rules: vec![],
        };
        crate::graph::verify::verify_dag(&out, &bounds).unwrap();
        let Node::Table { entries, rule, .. } = out.node(out.roots.egress) else {
            panic!("the outer table stays: {:?}", out.node(out.roots.egress));
        };
        let inner = rule.as_ref().unwrap()[0].1;
        assert_eq!(
            entries[0].next, inner,
            "its entry still goes to the inner table"
        );
    }

    #[test]
    fn equal_branches_and_known_atoms_go() {
        let mut b = Builder::new(false);
        let (x, y) = (leaf(&mut b, 1), leaf(&mut b, 2));
        let same = b.add(Node::Test {
            cond: Cond::DstAtom(3),
            then: x,
            els: x,
        });
        // dst a1 ? (dst a1 ? x : y) : same  →  dst a1 ? x : x → x
        let inner = b.add(Node::Test {
            cond: Cond::DstAtom(1),
            then: same,
            els: y,
        });
        let root = b.add(Node::Test {
            cond: Cond::DstAtom(1),
            then: inner,
            els: same,
        });
        let out = run(&dag(b, root));
        assert_eq!(out.reachable().len(), 1);
        assert_eq!(
            out.node(out.roots.egress),
            &Node::Verdict(VerdictLeaf {
                allow: true,
                decided: 1,
                logged: vec![]
            })
        );
    }

    #[test]
    fn port_test_known_from_enclosing_table() {
        let mut b = Builder::new(false);
        let (x, y, z) = (leaf(&mut b, 1), leaf(&mut b, 2), leaf(&mut b, 3));
        let t = b.add(Node::Test {
            cond: Cond::DPort { lo: 80, hi: 90 },
            then: x,
            els: y,
        });
        let root = b.add(Node::Table {
            key: TableKey::DPort,
            entries: vec![TableEntry {
                lo: 81,
                hi: 85,
                next: t,
            }],
            default: z,
            rule: None,
        });
        let out = run(&dag(b, root));
        match out.node(out.roots.egress) {
            Node::Table { entries, .. } => {
                assert_eq!(out.node(entries[0].next), out.node(NodeId::new(0)));
                assert!(out.node(entries[0].next).is_leaf());
            }
            n => panic!("{n:?}"),
        }
    }

    #[test]
    fn table_entries_equal_to_default_go() {
        let mut b = Builder::new(false);
        let (x, y) = (leaf(&mut b, 1), leaf(&mut b, 2));
        let root = b.add(Node::Table {
            key: TableKey::Proto,
            entries: vec![
                TableEntry {
                    lo: 1,
                    hi: 1,
                    next: x,
                },
                TableEntry {
                    lo: 6,
                    hi: 6,
                    next: y,
                },
            ],
            default: y,
            rule: None,
        });
        let out = run(&dag(b, root));
        match out.node(out.roots.egress) {
            Node::Table { entries, .. } => assert_eq!(entries.len(), 1),
            n => panic!("{n:?}"),
        }
    }
}
