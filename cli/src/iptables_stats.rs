//! `weir stats` for the iptables back end (no `--iface`, `--backend
//! iptables`, the default): the enforced per-rule counters, then the
//! audit counters — what audit policies would have decided
//! (docs/language.md §4, "Audit policies") — kept apart, in every format
//! (rendered by `audit_stats.rs`, as for eBPF).

use weir_runtime::ebpf::attach::prometheus_rules;
use weir_runtime::ebpf::RuleCount;

use crate::ebpf_cmd::{StatsArgs, StatsFormat};

pub fn run(args: &StatsArgs) -> i32 {
    let rt = args.target.runtime();
    let stats = match rt.stats() {
        Ok(s) => s,
        Err(e) => {
            crate::errln!("error: {e}");
            return 2;
        }
    };
    let format = if args.json {
        StatsFormat::Json
    } else {
        args.format
    };
    let instance = weir_runtime::statefs::netns_label(args.target.netns.as_deref());
    match format {
        StatsFormat::Prometheus => {
            crate::out!(
                "{}",
                prometheus_rules(
                    &instance,
                    "weir_rule_packets_total",
                    "Packets decided or logged by each rule (iptables back end).",
                    &stats.rules,
                )
            );
            crate::out!(
                "{}",
                crate::audit_stats::prometheus(&instance, "iptables", &stats.audit)
            );
        }
        StatsFormat::Json => crate::outln!(
            "{}",
            serde_json::json!({ "rules": stats.rules, "audit": stats.audit, "services": [] })
        ),
        StatsFormat::Human => {
            for c in shown(&stats.rules, args.all) {
                crate::outln!("{:>12}  [{:>3}] {}", c.packets, c.id, c.description);
            }
            crate::audit_stats::human(&stats.audit, args.all);
        }
    }
    0
}

fn shown(counts: &[RuleCount], all: bool) -> impl Iterator<Item = &RuleCount> {
    counts.iter().filter(move |c| all || c.packets > 0)
}
