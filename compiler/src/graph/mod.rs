//! The decision graph: what both back ends generate code from.
//!
//! ```text
//! Model ──lower──▶ Graph (unoptimized) ──opt::optimize──▶ Graph ──verify──▶ back ends
//!   │                  ▲
//!   └─ classes ────────┘  (atoms → classes → class map)
//! ```
//!
//! - [`classes`]: partition refinement of selectors and address sets into
//!   disjoint classes, and the class map (LPM entries);
//! - [`ir`]: nodes (tests, tables, leaves), entries, the service table;
//! - [`lower`]: partial evaluation of the interpreter's side logic;
//! - [`opt`]: named passes (hashcons, redundant, order, tables);
//! - [`verify`]: structural invariants (failure = internal compiler error);
//! - [`eval`]: the graph run on a packet, as a back end would;
//! - [`dump`]: text and DOT; [`text`]: the text form read back (fixtures);
//!   [`cost`]: cost model and capacity report;
//! - [`analysis`]: W04xx findings;
//! - [`same_endpoint`]: the endpoint relation `self` tests in the data path.

pub mod analysis;
pub mod bits;
pub mod classes;
pub mod cost;
pub mod cover;
pub mod dump;
pub mod eval;
pub mod events;
pub mod ir;
pub mod lower;
pub mod opt;
pub mod parts;
pub mod same_endpoint;
pub mod text;
pub mod verify;

pub use analysis::{analyze, GraphFinding};
pub use classes::{Atom, AtomId, ClassId, Classes};
pub use eval::GraphOutcome;
pub use ir::{Graph, Node, NodeId};
pub use lower::LowerInfo;
pub use parts::{Parts, PartsRef};

use crate::model::Model;
use crate::threads;

/// Everything the compile command needs from this stage.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The optimized, verified graph.
    pub graph: Graph,
    pub info: LowerInfo,
    pub findings: Vec<GraphFinding>,
}

/// Stack for lowering and passes: they recurse along rule chains (one
/// frame per rule of a chain), which overflows a 2 MiB test thread around
/// 1,500 rules in one chain. Only touched pages are committed.
const STACK: usize = 1 << 30;

/// Run `f` on a thread with a [`STACK`]-sized stack.
pub fn with_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| threads::scoped(s, threads::with_stack("weir-graph", STACK), f).join())
}

/// Lower, optimize, verify and analyse.
pub fn compile(model: &Model) -> Compiled {
    compile_announcing(model, |_| ())
}

/// [`compile`], calling `announce` with the graph's model-only parts as
/// soon as the lowering has made them ([`parts`]), long before the graph
/// is done.
pub fn compile_announcing(model: &Model, announce: impl FnOnce(Parts) + Send) -> Compiled {
    with_stack(|| compile_here(model, announce))
}

fn compile_here(model: &Model, announce: impl FnOnce(Parts)) -> Compiled {
    let (g, info) = lower::lower_announcing(model, announce);
    verify::check(&g);
    // Taken: the unoptimized nodes are freed during the passes (the
    // tables they share with `graph` are reference-counted).
    let graph = opt::optimize_into(g);
    verify::check(&graph);
    let findings = analysis::analyze(model, &graph.classes, &info);
    Compiled {
        graph,
        info,
        findings,
    }
}

/// The optimized, verified graph.
pub fn build(model: &Model) -> Graph {
    with_stack(|| build_here(model))
}

fn build_here(model: &Model) -> Graph {
    let g = opt::optimize_into(lower::lower_graph(model));
    verify::check(&g);
    g
}

/// The lowering's output, verified, with no optimization.
pub fn build_unoptimized(model: &Model) -> Graph {
    with_stack(|| {
        let g = lower::lower_graph(model);
        verify::check(&g);
        g
    })
}

#[cfg(test)]
mod tests;
