//! The graph verifier: structural invariants every back end relies on.
//! A failure is an internal compiler error (a bug in lowering or a pass),
//! never a user diagnostic.
//!
//! Checked: every node reachable from an entry is a leaf or has children
//! that exist; every path from `steer` ends in a steering leaf and every
//! path from `egress`/`ingress` in a verdict leaf; no cycles (children
//! have smaller ids, and petgraph agrees); the petgraph edges equal the
//! payload's children; table entries are non-empty intervals, sorted,
//! disjoint and inside the key's domain; atoms, classes, provenance ids and
//! steering rules referenced exist.

use super::ir::{Cond, Graph, Node, NodeId, SteerLeaf, TableKey};
use petgraph::visit::EdgeRef;
// FxHash: these maps are hot and keyed by ids, nodes and short strings;
// nothing iterates them into output.
use rustc_hash::FxHashMap as HashMap;

/// Check `g`; `Err` names the first violation.
pub fn verify(g: &Graph) -> Result<(), String> {
    let dag = &g.dag;
    let n_nodes = dag.g.node_count();
    let n_atoms = g.classes.atoms.len() as u32;
    let n_classes = g.classes.len() as u32;
    let n_prov = g.provenance.len() as u32;
    for (_, r) in dag.roots.all() {
        if r.index() >= n_nodes {
            return Err(format!("entry {r:?} does not exist"));
        }
    }
    if petgraph::algo::is_cyclic_directed(&dag.g) {
        return Err("the graph has a cycle".into());
    }
    // Kind of leaf each reachable node leads to: true = steer, false = verdict.
    let mut kind: HashMap<NodeId, bool> = HashMap::default();
    for n in dag.reachable() {
        let node = dag.node(n);
        let children = node.children();
        let mut edges: Vec<(usize, String)> = dag
            .g
            .edges(n)
            .map(|e| (e.target().index(), format!("{:?}", e.weight())))
            .collect();
        let mut want: Vec<(usize, String)> = children
            .iter()
            .map(|(e, c)| (c.index(), format!("{e:?}")))
            .collect();
        edges.sort();
        want.sort();
        if edges != want {
            return Err(format!(
                "node {}: edges do not match its children",
                n.index()
            ));
        }
        for (_, c) in &children {
            if *c >= n {
                return Err(format!(
                    "node {}: child {} is not older",
                    n.index(),
                    c.index()
                ));
            }
        }
        let mut leads: Option<bool> = None;
        for (_, c) in &children {
            let k = kind[c];
            if leads.is_some_and(|l| l != k) {
                return Err(format!(
                    "node {}: mixes steering and verdict leaves",
                    n.index()
                ));
            }
            leads = Some(k);
        }
        match node {
            Node::Test { cond, .. } => match *cond {
                Cond::SrcAtom(a) | Cond::DstAtom(a) if a >= n_atoms => {
                    return Err(format!("node {}: atom {a} out of range", n.index()))
                }
                Cond::DPort { lo, hi } if lo > hi => {
                    return Err(format!("node {}: empty port range", n.index()))
                }
                _ => {}
            },
            Node::Table {
                key, entries, rule, ..
            } => {
                let max = match key {
                    TableKey::SrcClass | TableKey::DstClass => n_classes.saturating_sub(1),
                    TableKey::DPort => 65535,
                    TableKey::Proto | TableKey::IcmpType | TableKey::IcmpCode => 255,
                };
                for (i, e) in entries.iter().enumerate() {
                    if e.lo > e.hi || e.hi > max {
                        return Err(format!(
                            "node {}: table entry {}..={} outside 0..={max}",
                            n.index(),
                            e.lo,
                            e.hi
                        ));
                    }
                    if i > 0 && entries[i - 1].hi >= e.lo {
                        return Err(format!(
                            "node {}: table entries not sorted and disjoint",
                            n.index()
                        ));
                    }
                }
                if let Some(r) = rule {
                    if r.iter().any(|&(a, _)| a >= n_atoms) {
                        return Err(format!("node {}: rule atom out of range", n.index()));
                    }
                }
            }
            Node::Verdict(v) => {
                if v.decided >= n_prov || v.logged.iter().any(|&l| l >= n_prov) {
                    return Err(format!("node {}: provenance id out of range", n.index()));
                }
                leads = Some(false);
            }
            Node::Steer(s) => {
                if let SteerLeaf::Hit { steer, index } = *s {
                    if g.steer_actions
                        .get(steer)
                        .and_then(|r| r.get(index))
                        .is_none()
                    {
                        return Err(format!("node {}: steering rule out of range", n.index()));
                    }
                }
                leads = Some(true);
            }
        }
        kind.insert(n, leads.expect("internal nodes have children"));
    }
    if !kind[&dag.roots.steer] {
        return Err("the steer entry reaches a verdict leaf".into());
    }
    for r in [dag.roots.egress, dag.roots.ingress] {
        if kind[&r] {
            return Err("a policy entry reaches a steering leaf".into());
        }
    }
    Ok(())
}

/// [`verify`], panicking with an internal-compiler-error message.
pub fn check(g: &Graph) {
    if let Err(e) = verify(g) {
        panic!("internal compiler error: graph verifier: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ir::{TableEntry, VerdictLeaf};

    #[test]
    fn generated_graphs_verify_and_broken_ones_do_not() {
        for seed in 0..50 {
            let model = crate::gen::model(seed);
            let g = crate::graph::build(&model);
            verify(&g).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        }
        // Unsorted table entries.
        let model = crate::gen::model(1);
        let g = crate::graph::build(&model);
        let mut b = crate::graph::ir::Builder::new(false);
        let leaf = b.add(Node::Verdict(VerdictLeaf {
            allow: true,
            decided: 0,
            logged: vec![],
        }));
        let steer = b.add(Node::Steer(SteerLeaf::None));
        let t = b.add(Node::Table {
            key: TableKey::DPort,
            entries: vec![
                TableEntry {
                    lo: 10,
                    hi: 20,
                    next: leaf,
                },
                TableEntry {
                    lo: 15,
                    hi: 30,
                    next: leaf,
                },
            ],
            default: leaf,
            rule: None,
        });
        let bad = g.with_dag(b.finish(crate::graph::ir::Roots {
            steer,
            egress: t,
            ingress: leaf,
        }));
        assert!(verify(&bad).unwrap_err().contains("sorted"));
        let swapped = g.with_dag({
            let mut b = crate::graph::ir::Builder::new(false);
            let leaf = b.add(Node::Verdict(VerdictLeaf {
                allow: true,
                decided: 0,
                logged: vec![],
            }));
            b.finish(crate::graph::ir::Roots {
                steer: leaf,
                egress: leaf,
                ingress: leaf,
            })
        });
        assert!(verify(&swapped).is_err());
    }
}
