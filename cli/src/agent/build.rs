//! One generation of the agent: the imported program and inventory
//! written to `WORK/gen-N/` and compiled there (as `weir check` + `weir
//! compile` would) into `WORK/gen-N/bundle/`, the directory the runtime
//! applies and records. The directory of the generation in force is kept
//! (the endpoint path and `weir status` read it); a replaced or refused
//! one is removed.

use std::path::{Path, PathBuf};

use weir_compiler::bundle::Target;
use weir_compiler::diagnostics::Diagnostic;

use crate::import::{INVENTORY_FILE, PROGRAM_FILE};
use crate::loader::FsLoader;

#[derive(Debug, Clone)]
pub struct Generation {
    /// `WORK/gen-N`: the sources.
    pub dir: PathBuf,
    /// `WORK/gen-N/bundle`: what `weir compile` would write.
    pub bundle: PathBuf,
}

#[derive(Debug)]
pub enum Failure {
    /// The program has errors or the back end refuses it.
    Refused(String),
    /// Writing the files failed.
    Io(String),
}

fn errors(diags: &[Diagnostic]) -> String {
    let e: Vec<String> = diags
        .iter()
        .filter(|d| d.is_error())
        .map(|d| format!("{}: {}", d.code, d.message))
        .collect();
    e.join("; ")
}

/// The first `gen-N` not in `work`.
fn next_dir(work: &Path) -> PathBuf {
    let used = std::fs::read_dir(work)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_prefix("gen-"))
                        .and_then(|n| n.parse::<u64>().ok())
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    work.join(format!("gen-{}", used + 1))
}

/// Writes and compiles a generation for `target`.
pub fn generation(
    work: &Path,
    program: &str,
    inventory: &str,
    target: Target,
    opts: &weir_compiler::backends::Options,
) -> Result<Generation, Failure> {
    let dir = next_dir(work);
    let io = |e: std::io::Error| Failure::Io(format!("writing {}: {e}", dir.display()));
    std::fs::create_dir_all(&dir).map_err(io)?;
    let source = dir.join(PROGRAM_FILE);
    std::fs::write(&source, program).map_err(io)?;
    std::fs::write(dir.join(INVENTORY_FILE), inventory).map_err(io)?;
    let g = Generation {
        bundle: dir.join("bundle"),
        dir: dir.clone(),
    };
    let result = compile(&source, &g.bundle, target, opts);
    if result.is_err() {
        retire(&g);
    }
    result.map(|_| g)
}

fn compile(
    source: &Path,
    bundle: &Path,
    target: Target,
    opts: &weir_compiler::backends::Options,
) -> Result<(), Failure> {
    let analyzed = weir_compiler::driver::analyze(&[source.to_path_buf()], &FsLoader::new(), None);
    if analyzed.compiled.is_none() || analyzed.checked.has_errors() {
        return Err(Failure::Refused(errors(&analyzed.checked.diagnostics)));
    }
    // `opts`: the defaults but for `--iptables-self-mark` (the per-flow
    // tables at their node-sized defaults, docs/runtime.md, events on to
    // the default group: the agent has no `--ct-entries`, `--lb-entries`
    // or `--event-group` of its own yet).
    let built = crate::compile::build(&analyzed, &[target], opts).map_err(|_| {
        Failure::Refused(format!(
            "the {} back end is not in this build",
            target.name()
        ))
    })?;
    if !built.refused.is_empty() {
        let d: Vec<Diagnostic> = built.refused.into_iter().flat_map(|(_, d)| d).collect();
        return Err(Failure::Refused(errors(&d)));
    }
    std::fs::create_dir_all(bundle)
        .map_err(|e| Failure::Io(format!("writing {}: {e}", bundle.display())))?;
    for (name, bytes) in &built.files {
        std::fs::write(bundle.join(name), bytes)
            .map_err(|e| Failure::Io(format!("writing {}: {e}", bundle.join(name).display())))?;
    }
    Ok(())
}

/// Removes every `gen-N` directory of `work` but `keep`: after an
/// apply, the replaced generation and any left by an earlier run of the
/// agent (a restarted agent compiles and applies its own first).
pub fn retire_others(work: &Path, keep: &Path) {
    let Ok(rd) = std::fs::read_dir(work) else {
        return;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let p = e.path();
        let named = e
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("gen-"));
        if named && p != keep && p.is_dir() {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

/// Removes a generation's directory (best effort: a leftover directory
/// is only disk space, and the next `gen-N` number skips it).
pub fn retire(g: &Generation) {
    let _ = std::fs::remove_dir_all(&g.dir);
}
