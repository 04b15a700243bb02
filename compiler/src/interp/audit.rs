//! The audit verdict (docs/language.md §4, "Audit policies").
//!
//! An audit policy is evaluated but never enforced: the enforced verdict
//! is the verdict of the program without its audit policies, and the
//! **audit verdict** is the verdict of the same packet with them enforced
//! (their `audit` marks removed). Audit policies only take part in step 4
//! (policy), so the audit verdict differs from the enforced one only for
//! packets that reach it; for every other packet they are equal. Kept
//! apart from the pipeline in `mod.rs` so that the enforced path reads as
//! if audit did not exist — which is the property it must have.

use super::{Outcome, Packet, SideDecision};
use crate::model::{Direction, Verdict};
use crate::provenance::{combine_sides, Provenance};
use serde::Serialize;

/// The verdict a packet would get if the audit policies were enforced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditOutcome {
    pub verdict: Verdict,
    pub decided_by: Provenance,
    pub egress: Option<SideDecision>,
    pub ingress: Option<SideDecision>,
}

impl AuditOutcome {
    /// Does the audit verdict differ from the enforced one (verdict or
    /// deciding provenance)? This is when `weir trace` says "would".
    pub fn differs(&self, verdict: Verdict, decided_by: Provenance) -> bool {
        self.verdict != verdict || self.decided_by != decided_by
    }

    /// What the back ends' audit counters count for this packet: the
    /// provenance deciding each side the audit evaluation judged, egress
    /// then ingress — both, even when egress would deny (an audit side is
    /// only counted, so nothing stops at it).
    pub fn counted(&self) -> Vec<Provenance> {
        [&self.egress, &self.ingress]
            .into_iter()
            .flatten()
            .map(|s| s.by)
            .collect()
    }
}

impl super::Interp<'_> {
    /// The audit verdict for a packet that reached step 4 (policy), its
    /// destination already translated. `None` when the program has no
    /// audit policies.
    pub(super) fn audit_policy(&self, translated: &Packet) -> Option<AuditOutcome> {
        if !self.has_audit {
            return None;
        }
        let at = translated.at;
        let egress = (at != Some(Direction::Ingress))
            .then(|| self.side_as(Direction::Egress, translated, true));
        let ingress = (at != Some(Direction::Egress))
            .then(|| self.side_as(Direction::Ingress, translated, true));
        let pair =
            |s: &Option<SideDecision>| s.as_ref().map(|s| (s.verdict == Verdict::Allow, s.by));
        let (verdict, decided_by) = combine_sides(pair(&egress), pair(&ingress));
        Some(AuditOutcome {
            verdict,
            decided_by,
            egress,
            ingress,
        })
    }

    /// Gives a packet decided before step 4 (headers, conntrack, bypass, a
    /// service without backends) its audit verdict: the enforced one.
    pub(super) fn audit_beside(&self, o: &mut Outcome) {
        if self.has_audit && o.audit.is_none() {
            o.audit = Some(AuditOutcome {
                verdict: o.verdict,
                decided_by: o.decided_by,
                egress: None,
                ingress: None,
            });
        }
    }
}
