//! Audit policies in iptables (docs/language.md §4, "Audit policies").
//!
//! The enforced chains are generated from the graph of the program
//! without its audit policies (the lowering leaves them out). The audit
//! verdict is the graph of `Model::audit_enforced` — the same classes and
//! provenance ids, so the same ipsets — emitted once more in filter as
//! chains `WEIR-A<n>` whose leaves only count: each leaf is one rule
//! `-m comment --comment "weir:audit:<id>" -j RETURN` (id = the provenance
//! that decides that side in the audit evaluation). `WEIR-FWD` calls the
//! audit egress and ingress roots after conntrack, bypass and the
//! no-backend rejects and before the enforced sides, so every new packet
//! that reaches policy is counted once per side, and nothing in an audit
//! chain can accept, drop or mark: control always returns to `WEIR-FWD`,
//! whose next rules are exactly those of the program without audit.
//!
//! With events on, an audit leaf decided by an audit policy (one of its
//! rules, or an audit tier's default) reports an event with the audit
//! flag before it returns, when it denies or its rule has the `log` flag
//! (`events.rs`).
//!
//! Refused (E0501): audit policies with a `redirect` steering rule. A
//! redirected connection is judged in nat before its REDIRECT and never
//! reaches FORWARD, so its audit decision would silently go uncounted.

use super::chains::{Leaf, Stage};
use super::entries::FWD;
use super::flow::{self, Ctx};
use super::sets::Sets;
use super::text::{comment, Family, FastMap, Tables};
use super::Unsupported;
use crate::diagnostics::{Construct, Refusal};
use crate::graph::ir::{Node, NodeId};
use crate::graph::Graph;
use crate::model::{Model, SteerAction};

/// The comment of an audit leaf: `audit:<id>`.
pub fn audit_comment(id: u32) -> String {
    comment(&format!("audit:{id}"))
}

/// The audit sides' graph, numbered and with flow contexts, ready to emit
/// for each family.
pub struct AuditGraph<'m> {
    g: Graph,
    /// For the events of audit leaves.
    model: &'m Model,
    num: FastMap<NodeId, usize>,
    /// The flow contexts for IPv4 and for IPv6 packets.
    ctx: [FastMap<NodeId, Ctx>; 2],
}

impl<'m> AuditGraph<'m> {
    /// `None` when the program has no audit policies.
    pub fn new(model: &'m Model) -> Option<AuditGraph<'m>> {
        if !model.has_audit() {
            return None;
        }
        let g = crate::graph::build(&model.audit_enforced());
        let (_, num) = g.dag.numbering();
        let num = num.into_iter().collect();
        let r = g.dag.roots;
        let ctx = [Family::V4, Family::V6].map(|f| flow::contexts(&g, &[r.egress, r.ingress], f));
        Some(AuditGraph { g, model, num, ctx })
    }

    /// The audit chains and their calls from `WEIR-FWD`.
    /// With `events`, a leaf decided by an audit policy reports its event
    /// (the audit flag set) before it returns.
    pub fn emit(&self, fam: Family, opts: &super::Options, sets: &mut Sets, out: &mut Tables) {
        let events = opts.events.as_ref();
        let leaf = |n: &Node| match n {
            Node::Verdict(v) => {
                let event = events.and_then(|ev| ev.audit_leaf(self.model, &self.g.provenance, v));
                let count = format!("{} -j RETURN", audit_comment(v.decided));
                Leaf::Rules(event.into_iter().chain([count]).collect())
            }
            _ => Leaf::Return,
        };
        let ctx = &self.ctx[usize::from(fam == Family::V6)];
        let mut stage = Stage::new(&self.g, fam, "filter", "A", &self.num, ctx, &leaf);
        stage.self_mark = opts.self_mark;
        let r = self.g.dag.roots;
        for (root, what) in [(r.egress, "audit-egress"), (r.ingress, "audit-ingress")] {
            let t = stage.target(root, sets, out);
            if let Some(c) = t.strip_prefix("-g ") {
                out.rule("filter", FWD, &[&comment(what), &format!("-j {c}")]);
            }
        }
    }
}

/// What iptables refuses about audit policies (see the module docs).
pub fn check(model: &Model) -> Vec<Unsupported> {
    let redirect = model.steers.iter().any(|s| {
        s.rules
            .iter()
            .any(|r| matches!(r.action, SteerAction::Redirect { .. }))
    });
    if !redirect {
        return Vec::new();
    }
    model
        .policies
        .iter()
        .filter(|p| p.audit)
        .map(|p| Unsupported {
            span: p.span,
            refusal: Refusal::NotExpressible {
                backend: crate::contract::Target::Iptables,
                construct: Construct::AuditWithRedirect {
                    policy: p.name.clone(),
                },
            },
        })
        .collect()
}
