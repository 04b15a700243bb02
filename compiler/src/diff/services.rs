//! Service-stage changes: frontends added or removed, and frontends whose
//! service, balancing or backend set changed. The verdicts of connections
//! sent to a frontend are rows ([`super::frontends`]); this list says
//! why a frontend's rows name different backends before and now, and it
//! counts in the exit code even when no verdict changes (a new backend
//! receives traffic it did not before).

use crate::graph::ir::ServiceTable;
use crate::graph::Graph;
use crate::model::{Backend, Frontend};
use std::collections::BTreeSet;

/// One side of a frontend: its service, balancing and backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendSide {
    pub service: String,
    pub maglev: bool,
    pub backends: Vec<Backend>,
}

/// A frontend whose translation differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceChange {
    pub frontend: Frontend,
    /// `None`: no such frontend in that program.
    pub old: Option<FrontendSide>,
    pub new: Option<FrontendSide>,
}

impl ServiceChange {
    /// A new frontend, or a backend NEW has and OLD had not: some flow may
    /// now reach an address it could not.
    pub fn adds(&self) -> bool {
        match (&self.old, &self.new) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(o), Some(n)) => n.backends.iter().any(|b| {
                !o.backends
                    .iter()
                    .any(|x| x.addr == b.addr && x.port == b.port)
            }),
        }
    }
}

fn side(t: &ServiceTable, f: &Frontend) -> Option<FrontendSide> {
    let e = t.lookup(f.addr, f.port, f.proto)?;
    let set = &t.backend_sets[e.backends];
    Some(FrontendSide {
        service: t.services[e.service].name.clone(),
        maglev: set.maglev,
        backends: set.backends.clone(),
    })
}

/// Every frontend of either program whose translation differs.
pub fn changes(old: &Graph, new: &Graph) -> Vec<ServiceChange> {
    let all: BTreeSet<Frontend> = [old, new]
        .iter()
        .flat_map(|g| g.services.frontends.iter().map(|f| f.frontend))
        .collect();
    all.into_iter()
        .filter_map(|f| {
            let o = side(&old.services, &f);
            let n = side(&new.services, &f);
            (o != n).then_some(ServiceChange {
                frontend: f,
                old: o,
                new: n,
            })
        })
        .collect()
}
