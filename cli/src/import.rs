//! `weir import k8s PATH... [-o DIR] [--node NAME] [--format human|json]`: Kubernetes
//! objects (YAML or JSON as `kubectl get -o yaml|json` prints them: single
//! objects, `List`s, multi-document files; `-` reads standard input; a
//! directory is searched recursively for `*.yaml`, `*.yml`, `*.json`,
//! sorted) → a weir program and an endpoint inventory
//! (compiler/src/k8s, docs/kubernetes.md).
//!
//! With `-o DIR`: writes `DIR/policy.weir` (which names
//! `inventory "inventory.json"`) and `DIR/inventory.json`. Without it the
//! program goes to standard output with the pods as `endpoint` items.
//! Diagnostics go to standard error (`--format json`: the JSON report of
//! docs/json.md). Exit codes: 0 imported (warnings allowed), 1 the input
//! has errors — nothing is written, the import fails closed — 2 usage or
//! IO problems.

use crate::program::{self, Color};
use std::io::Read;
use std::path::{Path, PathBuf};
use weir_compiler::k8s::{self, Endpoints};
use weir_compiler::source::SourceMap;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Import Kubernetes NetworkPolicy, AdminNetworkPolicy,
    /// BaselineAdminNetworkPolicy, ClusterNetworkPolicy, Pod, Namespace,
    /// Node, Service and EndpointSlice objects.
    K8s(K8sArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct K8sArgs {
    /// Files, directories (searched for *.yaml, *.yml, *.json) or `-`.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Write policy.weir and inventory.json into this directory.
    #[arg(short = 'o', long = "out")]
    pub out: Option<PathBuf>,
    /// Diagnostics format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Compile for this node (a Node's name): node ports on its addresses,
    /// and internal/externalTrafficPolicy Local Services served by its
    /// endpoints only, as kube-proxy does on it. Without it node ports are
    /// every Node's addresses and Local Services use every ready endpoint
    /// (warning W0330).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
}

pub const PROGRAM_FILE: &str = "policy.weir";
pub const INVENTORY_FILE: &str = "inventory.json";

fn inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out)?;
            } else if p
                .extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
            {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" || !p.is_dir() {
            out.push(p.clone());
        } else {
            walk(p, &mut out).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        }
    }
    Ok(out)
}

pub fn run(args: Args) -> i32 {
    let What::K8s(args) = args.what;
    let files = match inputs(&args.paths) {
        Ok(f) => f,
        Err(e) => {
            crate::errln!("error: {e}");
            return 2;
        }
    };
    let mut sources = SourceMap::new();
    let mut ids = Vec::new();
    for path in &files {
        let text = if path.as_os_str() == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map(|_| s)
        } else {
            std::fs::read_to_string(path)
        };
        match text {
            Ok(t) => ids.push(sources.add(path, t)),
            Err(e) => {
                crate::errln!("error: cannot read {}: {e}", path.display());
                return 2;
            }
        }
    }
    let texts: Vec<_> = ids
        .iter()
        .map(|id| (*id, sources.file(*id).text.as_str()))
        .collect();
    let endpoints = match args.out {
        Some(_) => Endpoints::Inventory(INVENTORY_FILE.into()),
        None => Endpoints::Inline,
    };
    let opts = k8s::Options {
        node: args.node.clone(),
    };
    let imported = k8s::import_with(&texts, endpoints, &opts);
    match args.format {
        Format::Human => program::print_human(&imported.diagnostics, &sources, Color::Auto),
        Format::Json => crate::errln!(
            "{}",
            weir_compiler::diagnostics::render::json(&imported.diagnostics, &sources)
        ),
    }
    let errors = imported.diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = imported.diagnostics.len() - errors;
    let counts: Vec<String> = imported
        .counts
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    if errors > 0 {
        crate::errln!("weir import k8s: {errors} error(s), {warnings} warning(s): nothing written (the import fails closed)");
        return 1;
    }
    match &args.out {
        Some(dir) => {
            let inventory =
                serde_json::to_string_pretty(&imported.inventory).unwrap_or_default() + "\n";
            let written = std::fs::create_dir_all(dir)
                .and_then(|_| std::fs::write(dir.join(PROGRAM_FILE), &imported.program))
                .and_then(|_| std::fs::write(dir.join(INVENTORY_FILE), inventory));
            if let Err(e) = written {
                crate::errln!("error: cannot write into {}: {e}", dir.display());
                return 2;
            }
            crate::errln!(
                "weir import k8s: wrote {} and {} ({}; {warnings} warning(s))",
                dir.join(PROGRAM_FILE).display(),
                dir.join(INVENTORY_FILE).display(),
                counts.join(", ")
            );
        }
        None => {
            crate::out!("{}", imported.program);
            crate::errln!(
                "weir import k8s: {}; {warnings} warning(s)",
                counts.join(", ")
            );
        }
    }
    0
}
