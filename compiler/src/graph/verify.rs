//! The graph verifier: structural invariants every back end relies on.
//! A failure is an internal compiler error (a bug in lowering or a pass),
//! never a user diagnostic.
//!
//! Every violation is reported (not only the first), each naming its node
//! by its number in the text dump (`n12`).
//!
//! Checked: every node reachable from an entry is a leaf or has children
//! that exist; every path from `steer` ends in a steering leaf and every
//! path from `egress`/`ingress` in a verdict leaf; no cycles (children
//! have smaller ids, and petgraph agrees); the petgraph edges equal the
//! payload's children; table entries are non-empty intervals, sorted,
//! disjoint and inside the key's domain; a class table's decision-list
//! targets are entry targets or the default; atoms, classes, provenance
//! ids and steering rules referenced exist.

use super::classes::AtomId;
use super::ir::{Cond, Dag, Graph, Node, NodeId, SteerLeaf, TableKey};
use petgraph::visit::EdgeRef;
// FxHash: these maps are hot and keyed by ids, nodes and short strings;
// nothing iterates them into output.
use rustc_hash::FxHashMap as HashMap;
use std::fmt;

/// One violation. `at` names the node as the text dump does (`n12`, its
/// number in [`super::ir::Dag::numbering`]), or the entry (`entry
/// egress`), so an internal compiler error can be matched to `--emit
/// graph`; `None` for the graph as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    pub at: Option<String>,
    pub message: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some(at) => write!(f, "{at}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Every violation, one per line.
pub fn report(errors: &[VerifyError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The limits references are checked against: how many atoms, classes
/// and provenance ids exist, and how many rules each steer block has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounds {
    pub atoms: u32,
    pub classes: u32,
    pub provenance: u32,
    pub steer_rules: Vec<usize>,
}

impl Bounds {
    /// A compiled graph's bounds.
    pub fn of(g: &Graph) -> Bounds {
        Bounds {
            atoms: g.classes.atoms.len() as u32,
            classes: g.classes.len() as u32,
            provenance: g.provenance.len() as u32,
            steer_rules: g.steer_actions.iter().map(Vec::len).collect(),
        }
    }
}

/// Collects violations, naming nodes by their dump numbers.
struct Verifier<'g> {
    dag: &'g Dag,
    num: std::collections::HashMap<NodeId, usize>,
    errors: Vec<VerifyError>,
}

impl Verifier<'_> {
    fn fail(&mut self, n: NodeId, message: impl Into<String>) {
        let at = match self.num.get(&n) {
            Some(k) => format!("n{k}"),
            None => format!("node id {}", n.index()),
        };
        self.errors.push(VerifyError {
            at: Some(at),
            message: message.into(),
        });
    }

    fn fail_at(&mut self, at: &str, message: impl Into<String>) {
        self.errors.push(VerifyError {
            at: Some(at.to_string()),
            message: message.into(),
        });
    }

    fn name(&self, n: NodeId) -> String {
        self.num
            .get(&n)
            .map_or_else(|| format!("node id {}", n.index()), |k| format!("n{k}"))
    }

    /// The petgraph edges equal the payload's children, every child is
    /// older, and all children lead to one kind of leaf (true = steer).
    fn structure(&mut self, n: NodeId, node: &Node, kind: &HashMap<NodeId, bool>) -> Option<bool> {
        let children = node.children();
        let mut edges: Vec<(usize, String)> = self
            .dag
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
            self.fail(n, "edges do not match its children");
        }
        let mut leads: Option<bool> = None;
        let mut mixed = false;
        for (_, c) in &children {
            if *c >= n {
                let c = self.name(*c);
                self.fail(n, format!("child {c} is not older"));
                continue;
            }
            if let Some(&k) = kind.get(c) {
                mixed |= leads.is_some_and(|l| l != k);
                leads = Some(k);
            }
        }
        if mixed {
            self.fail(n, "mixes steering and verdict leaves");
        }
        leads
    }

    /// The payload's own fields: ranges, references to atoms, classes,
    /// provenance and steering rules. Returns the leaf kind of a leaf.
    fn payload(&mut self, n: NodeId, node: &Node, b: &Bounds) -> Option<bool> {
        match node {
            Node::Test { cond, .. } => {
                match *cond {
                    Cond::SrcAtom(a) | Cond::DstAtom(a) if a >= b.atoms => self.fail(
                        n,
                        format!("atom a{a} out of range (the graph has {})", b.atoms),
                    ),
                    Cond::DPort { lo, hi } if lo > hi => {
                        self.fail(n, format!("empty port range {lo}..={hi}"))
                    }
                    _ => {}
                }
                None
            }
            Node::Table {
                key,
                entries,
                default,
                rule,
            } => {
                let max = match key {
                    TableKey::SrcClass | TableKey::DstClass => b.classes.saturating_sub(1),
                    TableKey::DPort => 65535,
                    TableKey::Proto | TableKey::IcmpType | TableKey::IcmpCode => 255,
                };
                for (i, e) in entries.iter().enumerate() {
                    if e.lo > e.hi || e.hi > max {
                        self.fail(
                            n,
                            format!("table entry {}..={} outside 0..={max}", e.lo, e.hi),
                        );
                    }
                    if i > 0 && entries[i - 1].hi >= e.lo {
                        self.fail(
                            n,
                            format!(
                                "table entries not sorted and disjoint ({}..={} then {}..={})",
                                entries[i - 1].lo,
                                entries[i - 1].hi,
                                e.lo,
                                e.hi
                            ),
                        );
                    }
                }
                if let Some(r) = rule {
                    for &(a, _) in r.iter().filter(|&&(a, _)| a >= b.atoms) {
                        self.fail(n, format!("rule atom a{a} out of range"));
                    }
                    // The decision list's targets stay in the graph only
                    // as children (`Node::children` gives them no edges of
                    // their own; `Dag::reachable` follows children): one
                    // that is neither an entry target nor the default may
                    // be reached by no path, and the next rebuild or the
                    // text form loses it; a back end never emitted it.
                    let lost: Vec<(AtomId, NodeId)> = r
                        .iter()
                        .copied()
                        .filter(|&(_, t)| t != *default && !entries.iter().any(|e| e.next == t))
                        .collect();
                    for (a, t) in lost {
                        let reached = if self.num.contains_key(&t) {
                            "reached only by other paths"
                        } else {
                            "reached by no path"
                        };
                        let t = self.name(t);
                        self.fail(
                            n,
                            format!(
                                "rule target {t} of a{a} is neither an entry target nor the default ({reached})"
                            ),
                        );
                    }
                }
                None
            }
            Node::Verdict(v) => {
                for id in std::iter::once(v.decided)
                    .chain(v.logged.iter().copied())
                    .filter(|&id| id >= b.provenance)
                {
                    self.fail(n, format!("provenance id #{id} out of range"));
                }
                Some(false)
            }
            Node::Steer(s) => {
                if let SteerLeaf::Hit { steer, index } = *s {
                    let exists = b.steer_rules.get(steer).is_some_and(|&k| index < k);
                    if !exists {
                        self.fail(n, format!("steering rule {steer}.{index} out of range"));
                    }
                }
                Some(true)
            }
        }
    }
}

/// Check `g`; `Err` lists every violation found.
pub fn verify(g: &Graph) -> Result<(), Vec<VerifyError>> {
    verify_dag(&g.dag, &Bounds::of(g))
}

/// Check a node set against `bounds` (a graph read from its text form has
/// no model to take them from).
pub fn verify_dag(dag: &Dag, bounds: &Bounds) -> Result<(), Vec<VerifyError>> {
    let n_nodes = dag.g.node_count();
    let mut v = Verifier {
        dag,
        num: std::collections::HashMap::new(),
        errors: Vec::new(),
    };
    for (name, r) in dag.roots.all() {
        if r.index() >= n_nodes {
            v.fail_at(&format!("entry {name}"), "does not exist");
        }
    }
    if !v.errors.is_empty() {
        return Err(v.errors);
    }
    v.num = dag.numbering().1;
    if petgraph::algo::is_cyclic_directed(&dag.g) {
        v.errors.push(VerifyError {
            at: None,
            message: "the graph has a cycle".into(),
        });
        return Err(v.errors);
    }
    // Kind of leaf each reachable node leads to: true = steer, false = verdict.
    let mut kind: HashMap<NodeId, bool> = HashMap::default();
    for n in dag.reachable() {
        let node = dag.node(n);
        let leads = v.structure(n, node, &kind);
        let leaf = v.payload(n, node, bounds);
        if let Some(k) = leaf.or(leads) {
            kind.insert(n, k);
        }
    }
    let leads = |r: NodeId| kind.get(&r).copied();
    if leads(dag.roots.steer) == Some(false) {
        v.fail_at("entry steer", "reaches a verdict leaf");
    }
    for (name, r) in [("egress", dag.roots.egress), ("ingress", dag.roots.ingress)] {
        if leads(r) == Some(true) {
            v.fail_at(&format!("entry {name}"), "reaches a steering leaf");
        }
    }
    if v.errors.is_empty() {
        Ok(())
    } else {
        Err(v.errors)
    }
}

/// [`verify`], panicking with an internal-compiler-error message that
/// lists every violation.
pub fn check(g: &Graph) {
    if let Err(e) = verify(g) {
        panic!("internal compiler error: graph verifier:\n{}", report(&e));
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
            verify(&g).unwrap_or_else(|e| panic!("seed {seed}: {}", report(&e)));
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
        assert!(report(&verify(&bad).unwrap_err()).contains("sorted"));
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
