//! The eBPF side of `weir apply`, `weir detach`, `weir status` (selected
//! with `--backend ebpf --iface IF`) and `weir stats` (per-rule counters).

use std::path::Path;

use clap::{Args as ClapArgs, ValueEnum};
use weir_runtime::ebpf::{self, attach::prometheus, Instance};

use crate::apply::Target;

pub(crate) fn instance(target: &Target) -> Result<Instance, i32> {
    match &target.iface {
        Some(i) => Ok(Instance::new(i, target.netns.as_deref())),
        None => {
            eprintln!("error: the eBPF back end needs `--iface IF` (the interface to attach to)");
            Err(2)
        }
    }
}

fn fail(e: impl std::fmt::Display) -> i32 {
    eprintln!("error: {e}");
    2
}

pub fn apply(dir: &Path, target: &Target) -> i32 {
    let inst = match instance(target) {
        Ok(i) => i,
        Err(c) => return c,
    };
    match ebpf::apply(dir, &inst) {
        Ok(r) => {
            if target.json {
                let v = serde_json::json!({
                    "instance": inst.name(),
                    "generation": r.generation,
                    "previous": r.previous,
                    "programs": r.programs.iter().map(|(n, i)| serde_json::json!({"name": n, "insns": i})).collect::<Vec<_>>(),
                });
                println!("{v}");
            } else {
                match r.previous {
                    Some(p) => println!(
                        "applied generation {} on {} (replacing {p})",
                        r.generation, inst.iface
                    ),
                    None => println!("applied generation {} on {}", r.generation, inst.iface),
                }
                for (n, i) in &r.programs {
                    println!("  {n}: {i} insns");
                }
            }
            0
        }
        Err(e) => fail(e),
    }
}

pub fn detach(target: &Target) -> i32 {
    let inst = match instance(target) {
        Ok(i) => i,
        Err(c) => return c,
    };
    match ebpf::detach(&inst) {
        Ok(found) => {
            if target.json {
                println!(
                    "{}",
                    serde_json::json!({ "instance": inst.name(), "removed": found })
                );
            } else if found {
                println!("detached {} and removed its pins", inst.name());
            } else {
                println!("nothing applied for {}", inst.name());
            }
            0
        }
        Err(e) => fail(e),
    }
}

pub fn status(target: &Target) -> i32 {
    let inst = match instance(target) {
        Ok(i) => i,
        Err(c) => return c,
    };
    match ebpf::status(&inst) {
        Ok(s) => {
            if target.json {
                println!("{}", serde_json::to_string(&s).expect("JSON"));
            } else {
                println!(
                    "generation {} on {} ({}), {}",
                    s.generation,
                    s.iface,
                    s.instance,
                    if s.attached {
                        "attached"
                    } else {
                        "NOT attached"
                    }
                );
                for p in &s.programs {
                    println!("  {p}");
                }
                for svc in &s.services {
                    println!(
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
            i32::from(!s.attached)
        }
        Err(ebpf::EbpfError::NotApplied { .. }) => {
            println!("nothing applied");
            0
        }
        Err(e) => fail(e),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatsFormat {
    Text,
    Json,
    Prometheus,
}

#[derive(Debug, ClapArgs)]
pub struct StatsArgs {
    #[command(flatten)]
    pub target: Target,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: StatsFormat,
    /// Also list rules that counted no packet.
    #[arg(long)]
    pub all: bool,
}

/// `weir stats`: per-rule packet counters of the running eBPF generation.
pub fn run_stats(args: StatsArgs) -> i32 {
    let inst = match instance(&args.target) {
        Ok(i) => i,
        Err(c) => return c,
    };
    let counts = match ebpf::stats(&inst) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let format = if args.target.json {
        StatsFormat::Json
    } else {
        args.format
    };
    match format {
        StatsFormat::Prometheus => print!("{}", prometheus(&inst, &counts)),
        StatsFormat::Json => println!("{}", serde_json::to_string(&counts).expect("JSON")),
        StatsFormat::Text => {
            for c in counts.iter().filter(|c| args.all || c.packets > 0) {
                println!("{:>12}  [{:>3}] {}", c.packets, c.id, c.description);
            }
        }
    }
    0
}
