//! What both back ends' `stats` report per provenance: one counter with
//! the rule it counts, named as the manifest names it. A type of its own
//! so that neither back end's statistics depend on the other's module.

use serde::Serialize;

/// One counter of `weir stats` (eBPF: a slot of `weir_cnt` /
/// `weir_audit_cnt`; iptables: the packets of a rule's counting rule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleCount {
    pub id: u32,
    pub kind: String,
    pub description: String,
    pub packets: u64,
}
