//! `weir endpoints DIR INVENTORY.json`: apply a new endpoint inventory to
//! the generation in force as map / ipset updates, without recompiling
//! (see `weir_runtime::endpoints`).
//!
//! Exit codes (docs/runtime.md): 0 everything in force; 1 refused,
//! nothing changed (needs a recompile, conflicts with an endpoint declared
//! in the source, or the inventory has errors); 2 error (usage, IO or
//! kernel problems); 3 applied with warnings — iptables only: the class
//! part is in force but selector-backed services changed backends in a
//! way their frontend chains cannot take in place (each named with the
//! reason), which needs `weir compile` + `weir apply`. `--dry-run` prints the update in
//! endpoint names and writes nothing (exit 0, or 1 when it would be
//! refused).

use std::path::{Path, PathBuf};

use clap::Args as ClapArgs;
use weir_compiler::diagnostics::Kind;
use weir_grammar::FileId;
use weir_runtime::endpoints::{self, EndpointsError, Report, ServiceUpdate};

use crate::target::{Backend, Output, Target};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The applied bundle directory (written by `weir compile`).
    pub dir: PathBuf,
    /// The full new endpoint inventory (JSON, docs/language.md §3).
    pub inventory: PathBuf,
    /// Print what the update would change, in endpoint names, and write
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub output: Output,
}

/// Exit codes of `weir endpoints`.
pub const APPLIED: i32 = 0;
pub const REFUSED: i32 = 1;
pub const ERROR: i32 = 2;
pub const APPLIED_WITH_WARNINGS: i32 = 3;

/// The inventory's problems, located in the file.
fn inventory_problems(path: &Path, text: &str) -> String {
    let (_, problems) = weir_compiler::inventory::parse_inventory(FileId(0), text);
    if problems.is_empty() {
        return format!("{}: the inventory is not valid", path.display());
    }
    problems
        .iter()
        .map(|k| {
            let d = k.clone().into_diagnostic();
            let at = (d.primary.span.start as usize).min(text.len());
            let line = text[..at].matches('\n').count() + 1;
            let detail = match k {
                Kind::BadInventory { problem, .. } => problem.clone(),
                _ => d.primary.message.clone(),
            };
            format!("{}:{line}: {}: {detail}", path.display(), d.message)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn run(args: Args) -> i32 {
    if let Err(code) = args.target.validate() {
        return code;
    }
    // The runtime parses only the endpoints whose text changed since the
    // last update; a problem is located by the full parser.
    let text = match std::fs::read_to_string(&args.inventory) {
        Ok(t) => t,
        Err(e) => {
            crate::errln!("error: reading {}: {e}", args.inventory.display());
            return 2;
        }
    };
    let result = match args.target.backend {
        // The bundle is read (and hashed) only when its files are not
        // the ones recorded for the generation in force.
        Backend::Iptables if args.dry_run => {
            endpoints::iptables_dry_run(&args.target.runtime(), &args.dir, &text)
        }
        Backend::Iptables => endpoints::iptables_dir(&args.target.runtime(), &args.dir, &text),
        Backend::Ebpf => match crate::ebpf_cmd::instance(&args.target) {
            Ok(inst) if args.dry_run => endpoints::ebpf_dry_run(&inst, &args.dir, &text),
            Ok(inst) => endpoints::ebpf_text(&inst, &args.dir, &text),
            Err(c) => return c,
        },
    };
    match result {
        Ok(r) if r.dry_run.is_some() => {
            print_dry_run(&r, args.output.json());
            APPLIED
        }
        Ok(r) => {
            print_report(&r, args.output.json());
            if r.needs_recompile.is_empty() {
                APPLIED
            } else {
                APPLIED_WITH_WARNINGS
            }
        }
        Err(EndpointsError::Inventory) => {
            crate::errln!(
                "error: {}\nrefused: nothing changed",
                inventory_problems(&args.inventory, &text)
            );
            REFUSED
        }
        Err(e @ EndpointsError::Refused(_)) => {
            crate::errln!("error: {e}\nrefused: nothing changed");
            REFUSED
        }
        Err(e) => {
            crate::errln!("error: {e}");
            ERROR
        }
    }
}

fn addrs(e: &weir_compiler::churn::EndpointRec) -> String {
    e.addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The plan of `--dry-run`, in endpoint names.
fn print_dry_run(r: &Report, json: bool) {
    if json {
        crate::outln!("{}", serde_json::to_string(r).expect("JSON"));
        return;
    }
    let p = r.dry_run.as_ref().expect("a dry run");
    crate::outln!(
        "dry run (nothing written), generation {}: {} endpoint(s) added, {} removed, {} changed; {} address(es) change what they match, {} kernel write(s)",
        r.generation,
        p.added.len(),
        p.removed.len(),
        p.changed.len(),
        r.changes.len(),
        r.writes
    );
    for e in &p.added {
        crate::outln!("  add {} ({})", e.name, addrs(e));
    }
    for e in &p.removed {
        crate::outln!("  remove {} ({})", e.name, addrs(e));
    }
    for (old, new) in &p.changed {
        let mut what = Vec::new();
        if old.addrs != new.addrs {
            what.push(format!("addresses {} -> {}", addrs(old), addrs(new)));
        }
        if old.labels != new.labels {
            what.push(format!(
                "labels {} -> {}",
                serde_json::to_string(&old.labels).unwrap_or_default(),
                serde_json::to_string(&new.labels).unwrap_or_default()
            ));
        }
        if old.ready != new.ready {
            what.push(format!("ready {} -> {}", old.ready, new.ready));
        }
        crate::outln!("  change {}: {}", new.name, what.join("; "));
    }
    for s in &r.needs_recompile {
        crate::outln!(
            "  service {} ({}) would need `weir compile` + `weir apply`: backends {}{}",
            s.service,
            s.frontends(),
            backends_text(s, "none"),
            not_in_place(s)
        );
    }
}

/// A service update's backends, or `empty` when it has none.
fn backends_text(s: &ServiceUpdate, empty: &str) -> String {
    if s.backends.is_empty() {
        empty.to_string()
    } else {
        s.backends.join(", ")
    }
}

/// ` (not in place: why)` for an update that could not be made, else "".
fn not_in_place(s: &ServiceUpdate) -> String {
    s.why
        .as_deref()
        .map(|w| format!(" (not in place: {w})"))
        .unwrap_or_default()
}

fn class(c: Option<u32>) -> String {
    c.map_or("-".into(), |c| format!("class {c}"))
}

fn print_report(r: &Report, json: bool) {
    if json {
        crate::outln!("{}", serde_json::to_string(r).expect("JSON"));
        return;
    }
    crate::outln!(
        "generation {}: {} address(es) changed, {} service(s) updated, {} kernel write(s) in {:.2} ms ({:.2} ms total)",
        r.generation,
        r.changes.len(),
        r.services.len(),
        r.writes,
        r.apply_time.as_secs_f64() * 1e3,
        r.total_time.as_secs_f64() * 1e3,
    );
    for c in &r.changes {
        crate::outln!(
            "  {} ({}): {} -> {}",
            c.addr,
            c.endpoint,
            class(c.old),
            class(c.new)
        );
    }
    for s in &r.services {
        crate::outln!(
            "  service {} ({}): backends {}",
            s.service,
            s.frontends(),
            backends_text(s, "none (rejects)")
        );
    }
    if !r.needs_recompile.is_empty() {
        crate::errln!(
            "warning: {} service(s) changed backends that could not be updated in place; run `weir compile` and `weir apply` for them:",
            r.needs_recompile.len()
        );
        for s in &r.needs_recompile {
            crate::errln!(
                "  service {} ({}): now {}{}",
                s.service,
                s.frontends(),
                backends_text(s, "no backends"),
                not_in_place(s)
            );
        }
    }
}
