//! `weir endpoints DIR INVENTORY.json`: apply a new endpoint inventory to
//! the generation in force as map / ipset updates, without recompiling
//! (see `weir_runtime::endpoints`).
//!
//! Exit codes: 0 everything in force; 1 the update was refused (needs a
//! recompile, or the inventory has errors), or — iptables only — the
//! class part was applied but selector-backed services changed backends,
//! which needs `weir compile` + `weir apply`; 2 usage, IO or kernel
//! problems.

use std::path::{Path, PathBuf};

use clap::Args as ClapArgs;
use weir_compiler::diagnostics::Kind;
use weir_grammar::FileId;
use weir_runtime::endpoints::{self, EndpointsError, Report};

use crate::apply::{Backend, Output, Target};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The applied bundle directory (written by `weir compile`).
    pub dir: PathBuf,
    /// The full new endpoint inventory (JSON, docs/language.md §3).
    pub inventory: PathBuf,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub output: Output,
}

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
        Backend::Iptables => endpoints::iptables_dir(&args.target.runtime(), &args.dir, &text),
        Backend::Ebpf => match crate::ebpf_cmd::instance(&args.target) {
            Ok(inst) => endpoints::ebpf_text(&inst, &args.dir, &text),
            Err(c) => return c,
        },
    };
    match result {
        Ok(r) => {
            print_report(&r, args.output.json());
            if r.needs_recompile.is_empty() {
                0
            } else {
                1
            }
        }
        Err(EndpointsError::Inventory) => {
            crate::errln!("error: {}", inventory_problems(&args.inventory, &text));
            1
        }
        Err(e @ EndpointsError::Refused(_)) => {
            crate::errln!("error: {e}");
            1
        }
        Err(e) => {
            crate::errln!("error: {e}");
            2
        }
    }
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
            "  service {} (IPv{}): backends {}",
            s.service,
            s.family,
            if s.backends.is_empty() {
                "none (rejects)".to_string()
            } else {
                s.backends.join(", ")
            }
        );
    }
    if !r.needs_recompile.is_empty() {
        crate::errln!(
            "warning: {} service(s) changed backends; the iptables back end compiles backends into DNAT rules, so run `weir compile` and `weir apply` for them:",
            r.needs_recompile.len()
        );
        for s in &r.needs_recompile {
            crate::errln!(
                "  service {} (IPv{}): now {}",
                s.service,
                s.family,
                if s.backends.is_empty() {
                    "no backends".to_string()
                } else {
                    s.backends.join(", ")
                }
            );
        }
    }
}
