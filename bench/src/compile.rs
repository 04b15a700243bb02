//! Compile time and peak memory.
//!
//! - **in process**: `graph::compile` (lower, optimize, verify, analyse),
//!   then each back end's generator on the graph, timed separately; peak
//!   RSS from `VmHWM` after resetting it (`/proc/self/clear_refs`, "5").
//! - **whole process**: `weir compile FILE --endpoints INV -o DIR` on the
//!   model rendered as source and inventory (parse, check, lints, graph,
//!   back ends, bundle written), wall time and the child's peak RSS from
//!   `wait4`'s rusage. Skipped when the `weir` binary is not found.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use weir_compiler::ebpf::codegen;
use weir_compiler::graph::{self, Compiled};
use weir_compiler::iptables as ipt;
use weir_compiler::model::Model;

/// In-process stage times (ms) and peak RSS (MiB).
#[derive(Debug, Clone, Default)]
pub struct InProcess {
    pub graph_ms: f64,
    /// Of `graph_ms`: classes (inside lowering), lowering, optimization,
    /// verification (twice) and analysis.
    pub classes_ms: f64,
    pub lower_ms: f64,
    pub opt_ms: f64,
    pub verify_ms: f64,
    pub analyze_ms: f64,
    pub ebpf_ms: Option<f64>,
    pub ebpf_error: Option<String>,
    /// Programs, instructions and filled map entries of the eBPF output.
    pub ebpf_size: Option<(usize, usize, u64)>,
    pub iptables_ms: Option<f64>,
    pub iptables_error: Option<String>,
    pub peak_mib: f64,
}

fn status_kib(field: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Compiles `model` in this process; returns the times and the graph.
pub fn in_process(model: &Model) -> (InProcess, Compiled) {
    reset_peak();
    // `graph::compile`, stage by stage (same calls, same order).
    let (compiled, mut r) = graph::with_stack(|| {
        let mut r = InProcess::default();
        let t = Instant::now();
        let _ = graph::classes::Classes::build(model);
        r.classes_ms = t.elapsed().as_secs_f64() * 1e3;
        let t0 = Instant::now();
        let t = Instant::now();
        let (g, info) = graph::lower::lower(model);
        r.lower_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        graph::verify::check(&g);
        r.verify_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let opt = graph::opt::optimize(&g);
        r.opt_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        graph::verify::check(&opt);
        r.verify_ms += t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let findings = graph::analysis::analyze(model, &opt.classes, &info);
        r.analyze_ms = t.elapsed().as_secs_f64() * 1e3;
        r.graph_ms = t0.elapsed().as_secs_f64() * 1e3;
        (
            Compiled {
                graph: opt,
                info,
                findings,
            },
            r,
        )
    });
    let t = Instant::now();
    match codegen::generate(model, &compiled.graph, &codegen::Options::default()) {
        Ok(out) => {
            r.ebpf_ms = Some(t.elapsed().as_secs_f64() * 1e3);
            r.ebpf_size = Some((
                out.manifest.programs.len(),
                out.manifest.programs.iter().map(|p| p.insns).sum(),
                out.manifest.maps.iter().map(|m| m.filled).sum(),
            ));
        }
        Err(ls) => {
            r.ebpf_error = Some(
                ls.iter()
                    .map(|l| l.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        }
    }
    let t = Instant::now();
    let opts = ipt::Options {
        maglev_as_random: true,
        ..ipt::Options::default()
    };
    match ipt::generate_with(&compiled.graph, model, &opts) {
        Ok(_) => r.iptables_ms = Some(t.elapsed().as_secs_f64() * 1e3),
        Err(us) => {
            r.iptables_error = Some(
                us.iter()
                    .map(|u| u.diagnostic().message)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        }
    }
    r.peak_mib = status_kib("VmHWM:").unwrap_or(f64::NAN) / 1024.0;
    (r, compiled)
}

/// The `weir` binary: `$WEIR_BIN`, else beside this executable (or one
/// directory up, for test binaries in `deps/`).
pub fn weir_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WEIR_BIN") {
        return Some(PathBuf::from(p));
    }
    sibling_binary("weir")
}

/// A binary of the workspace beside this executable (or one directory
/// up, for test binaries in `deps/`).
fn sibling_binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join(name), dir.parent()?.join(name)]
        .into_iter()
        .find(|p| p.is_file())
}

/// One whole-process run.
#[derive(Debug, Clone)]
pub struct Whole {
    pub wall_ms: f64,
    pub peak_mib: f64,
    pub exit: i32,
    pub stderr_head: String,
}

/// Runs `weir compile` once under `weir-rusage` (this crate's binary,
/// which forks it from a small process: see its docs for why the peak RSS
/// of a direct child of the benchmark is wrong). Without `weir-rusage`
/// the peak is NaN (not measured).
pub fn whole_process(
    weir: &Path,
    weir_file: &Path,
    inventory: &Path,
    out: &Path,
) -> Result<Whole, String> {
    let rusage = sibling_binary("weir-rusage");
    let mut cmd = match &rusage {
        Some(r) => {
            let mut c = Command::new(r);
            c.arg(weir);
            c
        }
        None => Command::new(weir),
    };
    cmd.arg("compile")
        .arg(weir_file)
        // The models balance with Maglev, which only the eBPF back end
        // expresses: this is the compile that succeeds and writes a bundle.
        .arg("--target")
        .arg("ebpf")
        .arg("--endpoints")
        .arg(inventory)
        .arg("-o")
        .arg(out)
        .arg("--color")
        .arg("never")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let out = cmd
        .output()
        .map_err(|e| format!("running {}: {e}", weir.display()))?;
    let wall_ms = t.elapsed().as_secs_f64() * 1e3;
    let err = String::from_utf8_lossy(&out.stderr);
    let peak_kib = err
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("weir-rusage: maxrss_kib="))
        .and_then(|n| n.trim().parse::<f64>().ok());
    if rusage.is_some() && peak_kib.is_none() {
        return Err(format!(
            "weir-rusage printed no peak: {}",
            err.lines().last().unwrap_or("")
        ));
    }
    Ok(Whole {
        wall_ms,
        peak_mib: peak_kib.map_or(f64::NAN, |k| k / 1024.0),
        exit: out.status.code().unwrap_or(-1),
        stderr_head: err
            .lines()
            .filter(|l| l.contains("error"))
            .take(1)
            .collect::<Vec<_>>()
            .join(" "),
    })
}
