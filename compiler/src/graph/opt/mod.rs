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

use super::ir::Graph;

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
    let d = hashcons::run(&g.dag);
    let d = redundant::run(&d);
    let d = order::run(&d);
    let d = tables::run(&d, &g.classes);
    let d = redundant::run(&d);
    let d = hashcons::run(&d);
    g.with_dag(d)
}
