//! `weir apply`, `weir detach`, `weir status`: load a bundle onto this node
//! (or a named network namespace) with the runtime crate.
//!
//! Wiring in main.rs:
//! ```text
//! mod apply;
//! /// Apply a compiled bundle atomically.        Apply(apply::Args),
//! /// Remove every chain and set weir made.      Detach(apply::DetachArgs),
//! /// Show what is applied and whether it is in force.  Status(apply::StatusArgs),
//! Command::Apply(a) => apply::run(a), Command::Detach(a) => apply::run_detach(a),
//! Command::Status(a) => apply::run_status(a),
//! ```

use std::path::PathBuf;

use clap::Args as ClapArgs;
use weir_runtime::Bundle;

use crate::target::{Backend, Output, Target};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The bundle directory written by `weir compile`.
    pub dir: PathBuf,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub output: Output,
    /// Also attach connect-time load balancing (`cgroup/connect4`,
    /// `sendmsg4`, `recvmsg4` and their IPv6 twins) to this cgroup v2
    /// directory
    /// (`--backend ebpf`; the bundle must have services).
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
}

#[derive(Debug, ClapArgs)]
pub struct DetachArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub output: Output,
}

#[derive(Debug, ClapArgs)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub output: Output,
}

fn fail(e: impl std::fmt::Display) -> i32 {
    crate::errln!("error: {e}");
    2
}

pub fn run(args: Args) -> i32 {
    if let Err(code) = args.target.validate() {
        return code;
    }
    if args.cgroup.is_some() && args.target.backend != Backend::Ebpf {
        return crate::program::usage("--cgroup applies to --backend ebpf");
    }
    if args.target.backend == Backend::Ebpf {
        return crate::ebpf_cmd::apply(
            &args.dir,
            &args.target,
            args.cgroup.as_deref(),
            args.output.json(),
        );
    }
    let bundle = match Bundle::read(&args.dir) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let rt = args.target.runtime();
    match rt.apply(&bundle) {
        Ok(r) => {
            for w in &r.warnings {
                crate::errln!("warning: {w}");
            }
            if args.output.json() {
                let v = serde_json::json!({
                    "generation": r.generation,
                    "previous": r.previous,
                    "unchanged": r.unchanged,
                    "warnings": r.warnings,
                    "kept_sets": r.kept_sets,
                    "kept_chains": r.kept_chains,
                    "xtables_direct": r.xtables.direct,
                    "xtables_tool": r.xtables.tool,
                });
                crate::outln!("{v}");
            } else if r.unchanged {
                crate::outln!(
                    "generation {} already in force: nothing to do",
                    r.generation
                );
            } else {
                match r.previous {
                    Some(p) if r.kept_sets > 0 || r.kept_chains > 0 => crate::outln!(
                        "applied generation {} (replacing {p}; kept {} unchanged sets, {} unchanged chains)",
                        r.generation,
                        r.kept_sets,
                        r.kept_chains
                    ),
                    Some(p) => crate::outln!("applied generation {} (replacing {p})", r.generation),
                    None => crate::outln!("applied generation {}", r.generation),
                }
            }
            0
        }
        Err(e) => fail(e),
    }
}

pub fn run_detach(args: DetachArgs) -> i32 {
    if let Err(code) = args.target.validate() {
        return code;
    }
    if args.target.backend == Backend::Ebpf {
        return crate::ebpf_cmd::detach(&args.target, args.output.json());
    }
    match args.target.runtime().detach() {
        Ok(r) => {
            if args.output.json() {
                let v = serde_json::json!({
                    "chains": r.chains, "jumps": r.jumps, "sets": r.sets,
                    "tables": r.tables, "recovered": r.recovered,
                });
                crate::outln!("{v}");
            } else {
                for x in &r.recovered {
                    crate::outln!("recovered: {x}");
                }
                crate::outln!(
                    "removed {} chains, {} hook jumps, {} sets, {} empty tables weir created",
                    r.chains.len(),
                    r.jumps.len(),
                    r.sets.len(),
                    r.tables.len()
                );
            }
            0
        }
        Err(e) => fail(e),
    }
}

/// One family of `weir status`: what IS in force, and how it differs
/// from the record.
fn print_family(f: &weir_runtime::iptables::FamilyStatus, recorded: u32) {
    let gens: Vec<String> = f.generations.iter().map(|g| g.to_string()).collect();
    let in_force = match gens.as_slice() {
        [] => "no generation of ours is hooked in".to_string(),
        [g] if *g == recorded.to_string() => format!("generation {g} is hooked in"),
        _ => format!(
            "generation(s) {} hooked in, NOT the recorded generation {recorded}",
            gens.join(", ")
        ),
    };
    crate::outln!("  {}: {in_force}", f.family.name());
    if let Some(d) = &f.difference {
        crate::outln!(
            "  {}: the kernel differs from the record: {d}",
            f.family.name()
        );
    }
}

pub fn run_status(args: StatusArgs) -> i32 {
    if let Err(code) = args.target.validate() {
        return code;
    }
    if args.target.backend == Backend::Ebpf {
        return crate::ebpf_cmd::status(&args.target, args.output.json());
    }
    match args.target.runtime().status() {
        Ok(s) => {
            if args.output.json() {
                let v = serde_json::json!({
                    "state": s.state,
                    "in_force": s.in_force,
                    "hooks": s.hooks.iter().map(|h| serde_json::json!({
                        "family": h.hook.family, "table": h.hook.table,
                        "builtin": h.hook.builtin, "target": h.hook.target,
                        "jumps": h.jumps, "targets_generation": h.targets_generation,
                    })).collect::<Vec<_>>(),
                    "missing_chains": s.missing_chains,
                    "missing_sets": s.missing_sets,
                    "families": s.families.iter().map(|f| serde_json::json!({
                        "family": f.family, "generations": f.generations,
                        "difference": f.difference,
                    })).collect::<Vec<_>>(),
                    "sets_difference": s.sets_difference,
                    "recovered": s.recovered,
                });
                crate::outln!("{v}");
            } else {
                for r in &s.recovered {
                    crate::outln!("recovered: {r}");
                }
                match &s.state {
                    None => crate::outln!("nothing applied"),
                    Some(st) => {
                        crate::outln!(
                            "generation {} from {} ({}), {}",
                            st.generation,
                            st.bundle_dir,
                            st.source_hash.as_deref().unwrap_or("no source hash"),
                            if s.in_force {
                                "in force"
                            } else {
                                "NOT fully in force"
                            }
                        );
                        for h in &s.hooks {
                            crate::outln!(
                                "  {}/{} {} -> {}: {} jump(s){}",
                                h.hook.family.name(),
                                h.hook.table,
                                h.hook.builtin,
                                h.hook.target,
                                h.jumps,
                                if h.targets_generation {
                                    ""
                                } else {
                                    ", hook chain does not reach the generation"
                                }
                            );
                        }
                        for f in &s.families {
                            print_family(f, st.generation);
                        }
                        if let Some(d) = &s.sets_difference {
                            crate::outln!("  sets differ from the record: {d}");
                        }
                        for c in &s.missing_chains {
                            crate::outln!("  missing chain {c}");
                        }
                        for c in &s.missing_sets {
                            crate::outln!("  missing set {c}");
                        }
                    }
                }
            }
            if s.state.is_some() && !s.in_force {
                1
            } else {
                0
            }
        }
        Err(e) => fail(e),
    }
}
