//! Optimization passes. Each is a function `Dag → Dag` with its own tests;
//! none changes what any packet gets (the property tests check the
//! optimized graph against the unoptimized one and the interpreter).
//!
//! The pipeline ([`optimize`]) runs, in order:
//!
//! 1. [`hashcons`] — share identical subgraphs first, so that every later
//!    pass sees (and pays for) each distinct subgraph once;
//! 2. [`redundant`] — drop tests with equal branches or an outcome known
//!    from an ancestor, prune tables;
//! 3. [`order`] — local rotations that remove tests;
//! 4. [`tables`] — long atom-test chains → class tables, tiny field tables
//!    → tests (by the cost model);
//! 5. [`redundant`] then [`hashcons`] again — clean up what 3–4 exposed
//!    and leave a maximally shared DAG.
//!
//! The unoptimized pipeline is the lowering's output as is.

pub mod hashcons;
pub mod order;
pub mod redundant;
pub mod tables;
#[cfg(test)]
mod tests;

use super::classes::Classes;
use super::ir::{Dag, Graph};

/// A named pass, for `--report` and debugging.
pub const PIPELINE: [&str; 6] = [
    "hashcons",
    "redundant",
    "order",
    "tables",
    "redundant",
    "hashcons",
];

pub fn optimize(g: &Graph) -> Graph {
    g.with_dag(after_first(hashcons::run(&g.dag), &g.classes))
}

/// [`optimize`], taking the graph: its unoptimized nodes are freed after
/// the first pass, not held to the end (`weir compile`'s graph).
pub fn optimize_into(mut g: Graph) -> Graph {
    let roots = g.dag.roots;
    let unoptimized = std::mem::replace(
        &mut g.dag,
        Dag {
            g: Default::default(),
            roots,
        },
    );
    g.dag = after_first(then(unoptimized, hashcons::run), &g.classes);
    g
}

/// The pipeline after its first pass. Each pass's input is freed as soon
/// as its output exists: a shadowed `let d = pass(&d)` kept all six
/// graphs alive to the end (for 100,000 one-peer-per-pod rules, ~500 MB
/// at the peak of `weir compile`, issue 21).
fn after_first(d: Dag, classes: &Classes) -> Dag {
    let d = then(d, redundant::run);
    let d = then(d, order::run);
    let d = then(d, |d| tables::run(d, classes));
    let d = then(d, redundant::run);
    then(d, hashcons::run)
}

/// `pass(&d)`, with `d` freed once the pass is done.
fn then(d: Dag, pass: impl FnOnce(&Dag) -> Dag) -> Dag {
    pass(&d)
}
