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
                    .map(|u| u.construct.clone())
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
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join("weir"), dir.parent()?.join("weir")]
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

/// Runs `weir compile` once and reads the child's rusage.
pub fn whole_process(
    weir: &Path,
    weir_file: &Path,
    inventory: &Path,
    out: &Path,
) -> Result<Whole, String> {
    let t = Instant::now();
    let child = Command::new(weir)
        .arg("compile")
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
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {}: {e}", weir.display()))?;
    let pid = child.id() as libc::pid_t;
    let mut stderr = child.stderr;
    // Drain stderr on a thread so a chatty child cannot block.
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = std::io::Read::read_to_string(e, &mut s);
        }
        s
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 on our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall_ms = t.elapsed().as_secs_f64() * 1e3;
    if r < 0 {
        return Err(format!("wait4: {}", std::io::Error::last_os_error()));
    }
    let err = reader.join().unwrap_or_default();
    let exit = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Ok(Whole {
        wall_ms,
        peak_mib: ru.ru_maxrss as f64 / 1024.0,
        exit,
        stderr_head: err
            .lines()
            .filter(|l| l.contains("error"))
            .take(1)
            .collect::<Vec<_>>()
            .join(" "),
    })
}
