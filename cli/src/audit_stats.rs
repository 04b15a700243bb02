//! The audit counters in `weir stats` — what audit policies would have
//! decided (docs/language.md §4, "Audit policies"), kept apart from the
//! enforced counters — rendered the same way for both back ends
//! (iptables: `iptables_stats.rs`; eBPF: `ebpf_cmd.rs`): human lines
//! `would: …` under their own heading; JSON puts them in an `audit`
//! array; Prometheus metric `weir_audit_rule_packets_total` (written by
//! `metrics/`, the one renderer).

use weir_runtime::ebpf::RuleCount;

/// The human lines (nothing when no audit decision counted a packet,
/// unless `all` and there are audit counters).
pub fn human(audit: &[RuleCount], all: bool) {
    let shown: Vec<&RuleCount> = audit.iter().filter(|c| all || c.packets > 0).collect();
    if audit.iter().any(|c| c.packets > 0) || (all && !shown.is_empty()) {
        crate::outln!("audit (would have decided; not enforced):");
        for c in shown {
            crate::outln!("{:>12}  [{:>3}] would: {}", c.packets, c.id, c.description);
        }
    }
}
