//! The parts of a graph that depend on the model alone: the classes, the
//! provenance table and the service table. The lowering makes them
//! first and announces them ([`super::compile_announcing`]) before it
//! walks the rules and the passes optimize the nodes (for BENCHMARKS.md's
//! headline model ~250 ms on one core, issue 21): meanwhile `weir
//! compile` serializes the manifest's keys that need only these parts on
//! the other core ([`crate::bundle::Early`]). The finished graph holds
//! the same `Arc`s, which is how a reader checks that what it made early
//! belongs to the graph ([`Parts::of`]).

use super::classes::Classes;
use super::ir::{Graph, ServiceTable};
use crate::provenance::ProvenanceTable;
use std::sync::Arc;

/// The model-only parts of a graph, shared with it.
#[derive(Debug, Clone)]
pub struct Parts {
    pub classes: Arc<Classes>,
    pub provenance: Arc<ProvenanceTable>,
    pub services: Arc<ServiceTable>,
}

/// The same parts, borrowed (from [`Parts`] or from a [`Graph`]).
#[derive(Debug, Clone, Copy)]
pub struct PartsRef<'a> {
    pub classes: &'a Classes,
    pub provenance: &'a ProvenanceTable,
    pub services: &'a ServiceTable,
}

impl Parts {
    pub fn as_ref(&self) -> PartsRef<'_> {
        PartsRef {
            classes: &self.classes,
            provenance: &self.provenance,
            services: &self.services,
        }
    }

    /// Whether these are `g`'s own parts (the same allocations, not
    /// merely equal ones).
    pub fn of(&self, g: &Graph) -> bool {
        Arc::ptr_eq(&self.classes, &g.classes)
            && Arc::ptr_eq(&self.provenance, &g.provenance)
            && Arc::ptr_eq(&self.services, &g.services)
    }
}

impl Graph {
    /// The graph's model-only parts, borrowed.
    pub fn parts(&self) -> PartsRef<'_> {
        PartsRef {
            classes: &self.classes,
            provenance: &self.provenance,
            services: &self.services,
        }
    }
}
