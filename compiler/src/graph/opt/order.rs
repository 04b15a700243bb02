//! `order`: field ordering.
//!
//! The global order is fixed by the lowering and chosen for size: the
//! subject class first (one table lookup picks the whole chain of active
//! policies, so chains are built once per distinct policy list), then the
//! protocol (four values; a rule's protocol is the cheapest, most
//! selective fact), then the destination port or ICMP type/code (interval
//! tables whose boundaries are the rules' own range ends, so every port
//! bucket is one exact set of candidate rules), and the peer last, in rule
//! order (first match wins, so rule order is the only order that needs no
//! duplication). Peer tests come last because they are the only tests that
//! depend on both the rule and the address space; everything above them is
//! shared by all peers.
//!
//! This pass then makes local improvements that never grow the graph: a
//! test on `x` whose two branches both test the same `y`, where the
//! outcome does not depend on `x` on one side of `y`, is rotated so that
//! `y` is tested first:
//!
//! ```text
//! x ? (y ? a : b) : (y ? a : d)   ⇒   y ? a : (x ? b : d)     (3 tests → 2)
//! x ? (y ? a : b) : (y ? c : b)   ⇒   y ? (x ? a : c) : b
//! ```
//!
//! Typical source: two policies' chains that differ only before a common
//! peer test.

use crate::graph::ir::{Builder, Dag, Node, NodeId};

pub fn run(dag: &Dag) -> Dag {
    dag.rebuild(true, rotate)
}

fn rotate(b: &mut Builder, n: Node) -> NodeId {
    if let Node::Test { cond: x, then, els } = &n {
        if let (
            Node::Test {
                cond: y1,
                then: a,
                els: bb,
            },
            Node::Test {
                cond: y2,
                then: c,
                els: d,
            },
        ) = (b.get(*then).clone(), b.get(*els).clone())
        {
            if y1 == y2 && y1 != *x {
                if a == c {
                    let inner = if bb == d {
                        bb
                    } else {
                        b.add(Node::Test {
                            cond: *x,
                            then: bb,
                            els: d,
                        })
                    };
                    return b.add(Node::Test {
                        cond: y1,
                        then: a,
                        els: inner,
                    });
                }
                if bb == d {
                    let inner = b.add(Node::Test {
                        cond: *x,
                        then: a,
                        els: c,
                    });
                    return b.add(Node::Test {
                        cond: y1,
                        then: inner,
                        els: bb,
                    });
                }
            }
        }
    }
    b.add(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ir::{Cond, Roots, VerdictLeaf};

    #[test]
    fn rotation_removes_a_test() {
        let mut b = Builder::new(true);
        let l: Vec<NodeId> = (0..3)
            .map(|i| {
                b.add(Node::Verdict(VerdictLeaf {
                    allow: i == 0,
                    decided: i,
                    logged: vec![],
                }))
            })
            .collect();
        let y1 = b.add(Node::Test {
            cond: Cond::DstAtom(2),
            then: l[0],
            els: l[1],
        });
        let y2 = b.add(Node::Test {
            cond: Cond::DstAtom(2),
            then: l[0],
            els: l[2],
        });
        let root = b.add(Node::Test {
            cond: Cond::SrcAtom(1),
            then: y1,
            els: y2,
        });
        let dag = b.finish(Roots {
            steer: root,
            egress: root,
            ingress: root,
        });
        let out = run(&dag);
        assert_eq!(out.reachable().len(), 5);
        match out.node(out.roots.egress) {
            Node::Test { cond, then, .. } => {
                assert_eq!(*cond, Cond::DstAtom(2));
                assert!(out.node(*then).is_leaf());
            }
            n => panic!("{n:?}"),
        }
    }
}
