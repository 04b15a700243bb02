//! The eBPF side of `weir apply`, `weir detach`, `weir status` (selected
//! with `--backend ebpf --iface IF`) and `weir stats` (per-rule counters).

use std::path::Path;

use clap::{Args as ClapArgs, ValueEnum};
use weir_runtime::ebpf::{self, Instance};

use crate::target::Target;

pub(crate) fn instance(target: &Target) -> Result<Instance, i32> {
    match target.iface.split_first() {
        Some((i, rest)) => {
            let mut inst = Instance::new(i, target.netns.as_deref());
            inst.extra_ifaces = rest.to_vec();
            Ok(inst)
        }
        None => {
            crate::errln!(
                "error: the eBPF back end needs `--iface IF` (the interface to attach to)"
            );
            Err(2)
        }
    }
}

fn fail(e: impl std::fmt::Display) -> i32 {
    crate::errln!("error: {e}");
    2
}

pub fn apply(dir: &Path, target: &Target, cgroup: Option<&Path>, json: bool) -> i32 {
    let inst = match instance(target) {
        Ok(i) => i,
        Err(c) => return c,
    };
    match ebpf::apply_with(dir, &inst, cgroup) {
        Ok(r) => {
            if json {
                let v = serde_json::json!({
                    "instance": inst.name(),
                    "generation": r.generation,
                    "previous": r.previous,
                    "cgroup": cgroup.map(|c| c.display().to_string()),
                    "programs": r.programs.iter().map(|(n, i)| serde_json::json!({"name": n, "insns": i})).collect::<Vec<_>>(),
                    "collector": r.collector,
                });
                crate::outln!("{v}");
            } else {
                match r.previous {
                    Some(p) => crate::outln!(
                        "applied generation {} on {} (replacing {p})",
                        r.generation,
                        inst.ifaces().join(", ")
                    ),
                    None => crate::outln!(
                        "applied generation {} on {}",
                        r.generation,
                        inst.ifaces().join(", ")
                    ),
                }
                for (n, i) in &r.programs {
                    crate::outln!("  {n}: {i} insns");
                }
                if let Some(c) = cgroup {
                    crate::outln!("  connect-time load balancing on cgroup {}", c.display());
                }
                if let Some(c) = &r.collector {
                    crate::outln!(
                        "  conntrack collector armed in the kernel: every {} s, swept {} entries in {} us",
                        c.interval_ns / 1_000_000_000,
                        c.last_visited,
                        c.last_duration_ns / 1000
                    );
                }
            }
            0
        }
        Err(e) => fail(e),
    }
}

pub fn detach(target: &Target, json: bool) -> i32 {
    let inst = match instance(target) {
        Ok(i) => i,
        Err(c) => return c,
    };
    match ebpf::detach(&inst) {
        Ok(found) => {
            if json {
                crate::outln!(
                    "{}",
                    serde_json::json!({ "instance": inst.name(), "removed": found })
                );
            } else if found {
                crate::outln!("detached {} and removed its pins", inst.name());
            } else {
                crate::outln!("nothing applied for {}", inst.name());
            }
            0
        }
        Err(e) => fail(e),
    }
}

pub fn status(target: &Target, json: bool) -> i32 {
    let inst = match instance(target) {
        Ok(i) => i,
        Err(c) => return c,
    };
    match ebpf::status(&inst) {
        Ok(s) => {
            if json {
                crate::outln!("{}", serde_json::to_string(&s).expect("JSON"));
            } else {
                crate::outln!(
                    "generation {} on {} ({}), {}",
                    s.generation,
                    s.ifaces.join(", "),
                    s.instance,
                    if s.attached {
                        "attached"
                    } else {
                        "NOT attached"
                    }
                );
                if let Some(r) = &s.recovered {
                    crate::outln!("  {r}");
                }
                // What the kernel holds where it differs from the record.
                for d in &s.differences {
                    crate::outln!("  in force: {d}");
                }
                for p in &s.programs {
                    crate::outln!("  {p}");
                }
                if let Some(c) = &s.cgroup {
                    crate::outln!(
                        "  cgroup {c}: connect4/6, sendmsg4/6, recvmsg4/6 {}",
                        if s.cgroup_attached {
                            "attached"
                        } else {
                            "NOT attached"
                        }
                    );
                }
                if let Some(c) = &s.collector {
                    let ago = weir_runtime::ebpf::collect::monotonic_ns()
                        .saturating_sub(c.last_sweep_ns)
                        / 1_000_000_000;
                    crate::outln!(
                        "  conntrack collector: last sweep {ago} s ago, {} sweeps, {} entries removed",
                        c.sweeps,
                        c.removed
                    );
                }
                for svc in &s.services {
                    crate::outln!(
                        "  service {} ({}) {}: {}",
                        svc.name,
                        svc.balance,
                        svc.frontends.join(", "),
                        if svc.backends.is_empty() {
                            "no backends".to_string()
                        } else {
                            svc.backends.join(", ")
                        }
                    );
                }
            }
            i32::from(!s.attached || (s.cgroup.is_some() && !s.cgroup_attached))
        }
        Err(ebpf::EbpfError::NotApplied { .. }) => {
            if json {
                crate::outln!("{}", serde_json::json!({ "applied": false }));
            } else {
                crate::outln!("nothing applied");
            }
            0
        }
        Err(e) => fail(e),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatsFormat {
    /// Counters as text (`text` is accepted too, the name before 0.2).
    #[value(alias = "text")]
    Human,
    Json,
    /// Prometheus text exposition format.
    Prometheus,
}

#[derive(Debug, ClapArgs)]
pub struct StatsArgs {
    #[command(flatten)]
    pub target: Target,
    /// Output format.
    #[arg(long, value_enum, default_value_t = StatsFormat::Human)]
    pub format: StatsFormat,
    /// The same as `--format json` (kept, hidden, for scripts written
    /// before `--format`).
    #[arg(long, hide = true, conflicts_with = "format")]
    pub json: bool,
    /// Also list rules that counted no packet.
    #[arg(long)]
    pub all: bool,
    /// Serve the counters as Prometheus metrics at
    /// `http://ADDR/metrics` (e.g. 127.0.0.1:9464), read at each scrape,
    /// until killed (docs/metrics.md).
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["format", "json", "all"])]
    pub serve: Option<String>,
}

/// `weir stats`: per-rule packet counters of the running eBPF generation,
/// then the audit counters apart (`audit_stats.rs`), then per-service and
/// per-backend flow counts, then the verdict events the data path dropped
/// (JSON: `{"rules": [...], "audit": [...], "services": [...],
/// "events_dropped": N}`, `null` without events). Prometheus text and `--serve`: `stats_serve.rs`
/// (the one renderer of `metrics/`, for both back ends).
pub fn run_stats(args: StatsArgs) -> i32 {
    if let Some(addr) = &args.serve {
        return crate::stats_serve::serve(&args.target, addr);
    }
    let json = match (args.json, args.format) {
        (true, _) | (_, StatsFormat::Json) => true,
        (_, StatsFormat::Human) => false,
        (_, StatsFormat::Prometheus) => return crate::stats_serve::once(&args.target),
    };
    // Without `--iface` (and not `--backend ebpf`): the iptables back end.
    if args.target.backend == crate::target::Backend::Iptables && args.target.iface.is_empty() {
        return crate::iptables_stats::run(&args, json);
    }
    let inst = match instance(&args.target) {
        Ok(i) => i,
        Err(c) => return c,
    };
    let counts = match ebpf::stats(&inst) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let audit = match ebpf::audit_stats(&inst) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let services = match ebpf::service_stats(&inst) {
        Ok(s) => s,
        Err(e) => {
            crate::errln!("warning: no service counters: {e}");
            Vec::new()
        }
    };
    // Events the data path could not write (rate limit, full ring
    // buffer): `null` / not shown for a generation compiled without.
    let events_dropped = match weir_runtime::events::ringbuf::open_applied(&inst) {
        Ok(Some(r)) => {
            use weir_runtime::events::EventSource;
            match r.dropped() {
                Ok(n) => Some(n),
                Err(e) => return fail(e),
            }
        }
        Ok(None) => None,
        Err(e) => return fail(e),
    };
    if json {
        crate::outln!(
            "{}",
            serde_json::json!({
                "rules": counts,
                "audit": audit,
                "services": services,
                "events_dropped": events_dropped
            })
        );
    } else {
        for c in counts.iter().filter(|c| args.all || c.packets > 0) {
            crate::outln!("{:>12}  [{:>3}] {}", c.packets, c.id, c.description);
        }
        crate::audit_stats::human(&audit, args.all);
        if !services.is_empty() {
            crate::outln!(
                "flows (new TC flows and connect-time rewrites) per service and backend:"
            );
        }
        for c in services.iter().filter(|c| args.all || c.flows > 0) {
            match &c.backend {
                None => crate::outln!("{:>12}  service {}", c.flows, c.service),
                Some(b) => crate::outln!("{:>12}    {} → {b}", c.flows, c.service),
            }
        }
        if let Some(n) = events_dropped.filter(|&n| args.all || n > 0) {
            crate::outln!("{n:>12}  verdict events dropped (rate limit or full ring buffer)");
        }
    }
    0
}
