//! The events a decision-graph leaf emits: the interpreter's per-side
//! rule ([`crate::interp::events::side_events`],
//! [`crate::interp::events::audit_side_event`]) applied to a leaf's
//! provenance ids. Both back ends call these where a side's leaf is
//! emitted (docs/language.md §4 "Events"), so the graph depends on the
//! meaning and not the other way round.

use super::ir::VerdictLeaf;
use crate::contract::event::EventVerdict;
use crate::interp::events::{audit_side_event, has_log_flag, side_events};
use crate::model::Model;
use crate::provenance::ProvenanceTable;

/// An enforced side's leaf: its `log` events and, when it denies or
/// allows by a rule with `log`, its judgement, by provenance id.
pub fn leaf_events(
    model: &Model,
    table: &ProvenanceTable,
    v: &VerdictLeaf,
) -> Vec<(EventVerdict, u32)> {
    let log = table.get(v.decided).is_some_and(|p| has_log_flag(model, p));
    side_events(v.allow, v.decided, &v.logged, log)
}

/// An audit graph's leaf: its audit event, by provenance id.
pub fn audit_leaf_event(
    model: &Model,
    table: &ProvenanceTable,
    v: &VerdictLeaf,
) -> Option<(EventVerdict, u32)> {
    let p = table.get(v.decided)?;
    audit_side_event(model, v.allow, p).map(|e| (e, v.decided))
}
