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

impl InProcess {
    /// The graph and both back ends' generators, in milliseconds.
    pub fn total_ms(&self) -> f64 {
        self.graph_ms + self.ebpf_ms.unwrap_or(0.0) + self.iptables_ms.unwrap_or(0.0)
    }
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
    /// User + system CPU time of the `weir` process (NaN without
    /// `weir-rusage`): on a shared machine a steadier figure than wall
    /// time, which waits for the cores.
    pub cpu_ms: f64,
    pub peak_mib: f64,
    pub exit: i32,
    pub stderr_head: String,
}

/// Runs `weir compile FILE --target ebpf --endpoints INVENTORY -o OUT`
/// once, measured ([`run_measured`]).
pub fn whole_process(
    weir: &Path,
    weir_file: &Path,
    inventory: &Path,
    out: &Path,
) -> Result<Whole, String> {
    // The models balance with Maglev, which only the eBPF back end
    // expresses: this is the compile that succeeds and writes a bundle.
    whole_process_for(weir, "ebpf", weir_file, inventory, out)
}

/// [`whole_process`] with `--target TARGET` (`ebpf`, `iptables`, `all`).
pub fn whole_process_for(
    weir: &Path,
    target: &str,
    weir_file: &Path,
    inventory: &Path,
    out: &Path,
) -> Result<Whole, String> {
    use std::ffi::OsStr;
    let args: [&OsStr; 10] = [
        OsStr::new("compile"),
        weir_file.as_os_str(),
        OsStr::new("--target"),
        OsStr::new(target),
        OsStr::new("--endpoints"),
        inventory.as_os_str(),
        OsStr::new("-o"),
        out.as_os_str(),
        OsStr::new("--color"),
        OsStr::new("never"),
    ];
    run_measured(weir, &args)
}

/// Runs `weir ARGS` once under `weir-rusage` (this crate's binary,
/// which forks it from a small process: see its docs for why the peak RSS
/// of a direct child of the benchmark is wrong). Without `weir-rusage`
/// the peak is NaN (not measured).
pub(crate) fn run_measured(weir: &Path, args: &[&std::ffi::OsStr]) -> Result<Whole, String> {
    let rusage = sibling_binary("weir-rusage");
    let mut cmd = match &rusage {
        Some(r) => {
            let mut c = Command::new(r);
            c.arg(weir);
            c
        }
        None => Command::new(weir),
    };
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
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
    let cpu_ms = err
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("weir-rusage: cpu_ms="))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    Ok(Whole {
        wall_ms,
        cpu_ms,
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

/// `weir check` of a generated program over a generated inventory of
/// `n` endpoints (issue 15, item 7: a node inventory of a million
/// endpoints must be checked in well under 1 GB). The inventory is shaped
/// like a node's: a name, three labels (`app` of 1,000 deployments,
/// `tier`, `ns`), one IPv4 address each; the program has two policies
/// and a selector service over those labels. Both files are written to
/// `dir` (streamed: the benchmark itself never holds the text) and
/// removed after.
pub fn inventory_check(weir: &Path, n: usize, dir: &Path) -> Result<Whole, String> {
    use std::io::Write;
    const TIERS: [&str; 5] = ["web", "api", "data", "cache", "queue"];
    let inv = dir.join("inventory.json");
    let prog = dir.join("program.weir");
    let io = |e: std::io::Error| e.to_string();
    let mut w = std::io::BufWriter::new(std::fs::File::create(&inv).map_err(io)?);
    w.write_all(b"{\"endpoints\": [\n").map_err(io)?;
    for i in 0..n {
        let a = std::net::Ipv4Addr::from(0x0a40_0001u32.wrapping_add(i as u32));
        let sep = if i + 1 < n { ",\n" } else { "\n" };
        write!(
            w,
            r#"  {{"name": "ep-{i}", "labels": {{"app": "app-{}", "tier": "{}", "ns": "ns-{}"}}, "addrs": ["{a}"], "ready": true}}{sep}"#,
            i % 1000,
            TIERS[i % 5],
            i % 50
        )
        .map_err(io)?;
    }
    w.write_all(b"]}\n").map_err(io)?;
    w.flush().map_err(io)?;
    drop(w);
    std::fs::write(
        &prog,
        r#"service api {
  frontend 10.96.0.1:80/tcp
  backends select app == "app-7" port 8080
  balance random
}
policy db-in {
  applies to tier == "data"
  ingress { allow tcp 5432 from tier == "api" }
}
policy web-in {
  applies to tier == "web"
  ingress { allow tcp 443 from any }
}
"#,
    )
    .map_err(io)?;
    use std::ffi::OsStr;
    let args: [&OsStr; 6] = [
        OsStr::new("check"),
        prog.as_os_str(),
        OsStr::new("--endpoints"),
        inv.as_os_str(),
        OsStr::new("--color"),
        OsStr::new("never"),
    ];
    let r = run_measured(weir, &args);
    let _ = std::fs::remove_file(&inv);
    let _ = std::fs::remove_file(&prog);
    r
}
