//! `hashcons`: share identical subgraphs. Rebuilding bottom-up through an
//! interning builder gives every distinct (node payload, children) one id,
//! so the graph becomes a DAG with no duplicate subgraph: two chains that
//! end in the same verdicts after the same tests are one chain.

use crate::graph::ir::Dag;

pub fn run(dag: &Dag) -> Dag {
    dag.rebuild(true, |b, n| b.add(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ir::{Builder, Cond, Node, Roots, VerdictLeaf};

    #[test]
    fn identical_subtrees_become_one() {
        let mut b = Builder::new(false);
        let leaf = |b: &mut Builder, allow| {
            b.add(Node::Verdict(VerdictLeaf {
                allow,
                decided: 0,
                logged: vec![],
            }))
        };
        let (a1, d1) = (leaf(&mut b, true), leaf(&mut b, false));
        let t1 = b.add(Node::Test {
            cond: Cond::DstAtom(1),
            then: a1,
            els: d1,
        });
        let (a2, d2) = (leaf(&mut b, true), leaf(&mut b, false));
        let t2 = b.add(Node::Test {
            cond: Cond::DstAtom(1),
            then: a2,
            els: d2,
        });
        let root = b.add(Node::Test {
            cond: Cond::SrcAtom(0),
            then: t1,
            els: t2,
        });
        let dag = b.finish(Roots {
            steer: root,
            egress: root,
            ingress: root,
        });
        assert_eq!(dag.reachable().len(), 7);
        let out = run(&dag);
        // leaf allow, leaf deny, one test, root.
        assert_eq!(out.reachable().len(), 4);
    }
}
