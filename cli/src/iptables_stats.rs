//! `weir stats` for the iptables back end (no `--iface`, `--backend
//! iptables`, the default): the enforced per-rule counters, then the
//! audit counters — what audit policies would have decided
//! (docs/language.md §4, "Audit policies") — kept apart, in every format
//! (rendered by `audit_stats.rs`, as for eBPF).

use weir_runtime::ebpf::RuleCount;

use crate::ebpf_cmd::StatsArgs;

/// Human or JSON (`json`); Prometheus text is `stats_serve.rs`'s.
pub fn run(args: &StatsArgs, json: bool) -> i32 {
    let rt = args.target.runtime();
    let stats = match rt.stats() {
        Ok(s) => s,
        Err(e) => {
            crate::errln!("error: {e}");
            return 2;
        }
    };
    if json {
        crate::outln!(
            "{}",
            serde_json::json!({ "rules": stats.rules, "audit": stats.audit, "services": [] })
        );
    } else {
        for c in shown(&stats.rules, args.all) {
            crate::outln!("{:>12}  [{:>3}] {}", c.packets, c.id, c.description);
        }
        crate::audit_stats::human(&stats.audit, args.all);
    }
    0
}

fn shown(counts: &[RuleCount], all: bool) -> impl Iterator<Item = &RuleCount> {
    counts.iter().filter(move |c| all || c.packets > 0)
}
