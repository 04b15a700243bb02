//! Audit policies in the TC programs (docs/language.md §4, "Audit
//! policies").
//!
//! The enforced blocks come from the graph of the program without its
//! audit policies (the lowering leaves them out). The audit verdict is
//! the graph of `Model::audit_enforced` — built over the same class
//! partition and provenance table (neither depends on the audit marks;
//! [`AuditPlan::new`] checks it and refuses, E0501, if they ever differ,
//! so one `weir_atoms` row and one classification serve both graphs).
//! Its egress and ingress roots become two more walks of blocks
//! ([`Entry::AuditEgress`], [`Entry::AuditIngress`]) laid out between the
//! service block and the enforced sides, so every new packet that reaches
//! policy (after headers, conntrack, bypass and the service stage; not a
//! no-backends reject) evaluates them first. An audit leaf only counts:
//! `weir_audit_cnt[id] += 1` (per-CPU array indexed by provenance id, the
//! id deciding that side in the audit evaluation), then jumps on — audit
//! egress to audit ingress (both sides are counted, even when audit
//! egress would deny), audit ingress to the enforced policy start. No
//! audit block writes the context's side words, the verdict or the
//! packet, so the enforced path is exactly that of the program without
//! audit. This is what the interpreter's `AuditOutcome::counted` counts.
//!
//! Audit walks use no class-row columns (their class tables are inline
//! searches), so the row layout is the enforced graph's alone. The extra
//! blocks may add stages and tail calls: the usual limits apply
//! ([`super::MAX_TAIL_CALLS`], E0510).

use std::collections::HashMap;
use std::sync::Arc;

use super::emit::{Em, Entry, Gen};
use super::Limit;
use crate::diagnostics::Construct;
use crate::ebpf::layout::map;
use crate::ebpf::{Op, Origin, Size};
use crate::graph::ir::{NodeId, VerdictLeaf};
use crate::graph::Graph;
use crate::model::Model;

use crate::ebpf::Reg::*;

/// The audit graph as the code generator uses it.
pub struct AuditPlan<'a> {
    pub g: &'a Graph,
    pub node_numbers: HashMap<NodeId, usize>,
}

/// The audit graph of `model`, or the refusals when it cannot share the
/// enforced graph's classes and provenance ids. `Ok(None)` without audit
/// policies.
pub fn audit_graph(model: &Model, enforced: &Graph) -> Result<Option<Graph>, Vec<Limit>> {
    if !model.has_audit() {
        return Ok(None);
    }
    let a = crate::graph::build(&model.audit_enforced());
    if same_partition(enforced, &a) {
        return Ok(Some(a));
    }
    Err(model
        .policies
        .iter()
        .filter(|p| p.audit)
        .map(|p| Limit::Unsupported {
            span: p.span,
            construct: Construct::AuditPolicy {
                policy: p.name.clone(),
            },
        })
        .collect())
}

/// Same atoms, classes, class map and provenance ids: the audit walks
/// may then read the enforced graph's classification and rows.
fn same_partition(a: &Graph, b: &Graph) -> bool {
    a.classes.atoms == b.classes.atoms
        && a.classes.classes == b.classes.classes
        && a.classes.entries == b.classes.entries
        && a.provenance.entries == b.provenance.entries
}

impl<'a> AuditPlan<'a> {
    pub fn new(g: &'a Graph) -> AuditPlan<'a> {
        let (_, node_numbers) = g.dag.numbering();
        AuditPlan { g, node_numbers }
    }
}

/// `weir_audit_cnt`'s size: one counter per provenance id.
pub fn counters(audit: &Graph) -> u32 {
    audit.provenance.len().max(1) as u32
}

impl Gen<'_> {
    /// The graph whose nodes an entry's blocks are.
    pub fn graph_of(&self, e: Entry) -> &Graph {
        match (&self.audit, e.is_audit()) {
            (Some(a), true) => a.g,
            _ => self.g,
        }
    }

    /// The node numbers (block names) of an entry's graph.
    pub fn numbers_of(&self, e: Entry) -> &HashMap<NodeId, usize> {
        match (&self.audit, e.is_audit()) {
            (Some(a), true) => &a.node_numbers,
            _ => &self.node_numbers,
        }
    }

    /// The block an audit walk starts at.
    pub(super) fn audit_root_block(&self, e: Entry) -> usize {
        let a = self.audit.as_ref().expect("audit blocks only with audit");
        let r = a.g.dag.roots;
        let n = if e == Entry::AuditEgress {
            r.egress
        } else {
            r.ingress
        };
        self.index[&super::emit::Block::Node(e, n)]
    }

    /// The audit walks this mode evaluates, in order (the interpreter's
    /// sides: egress unless `at ingress`, ingress unless `at egress`).
    pub fn audit_entries(&self) -> Vec<Entry> {
        if self.audit.is_none() {
            return Vec::new();
        }
        audit_entries(self.mode)
    }

    /// Where the service block goes on: the first audit walk, else policy.
    pub(super) fn after_service(&self) -> usize {
        match self.audit_entries().first() {
            Some(&e) => self.audit_root_block(e),
            None => self.policy_start(),
        }
    }

    /// An audit leaf: count the deciding id in `weir_audit_cnt`, go on to
    /// the next audit walk or the enforced policy start.
    pub(super) fn audit_leaf(&self, em: &mut Em, e: Entry, v: &VerdictLeaf) {
        let text: Arc<str> = Arc::from(format!(
            "audit {} would {}: {}",
            if e == Entry::AuditEgress {
                "egress"
            } else {
                "ingress"
            },
            if v.allow { "allow" } else { "deny" },
            self.audit_describe(v.decided)
        ));
        em.a.set_origin(Origin(v.decided), Some(&text));
        self.audit_leaf_event(em, v);
        em.push(Op::store(Size::U32, R10, -4, v.decided as i32));
        em.count_in_at_fp4(map::AUDIT_CNT);
        let walks = self.audit_entries();
        let pos = walks.iter().position(|&w| w == e);
        let next = match pos.and_then(|i| walks.get(i + 1)) {
            Some(&w) => self.audit_root_block(w),
            None => self.policy_start(),
        };
        em.goto(next);
    }

    fn audit_describe(&self, id: u32) -> String {
        self.g
            .provenance
            .get(id)
            .map_or_else(|| format!("provenance {id}"), |p| p.describe(self.model))
    }
}

/// The audit walks of a mode, in pipeline order.
pub fn audit_entries(mode: super::Mode) -> Vec<Entry> {
    use super::Mode;
    match mode {
        Mode::Node => vec![Entry::AuditEgress, Entry::AuditIngress],
        Mode::Egress => vec![Entry::AuditEgress],
        Mode::Ingress => vec![Entry::AuditIngress],
    }
}
