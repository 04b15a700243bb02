//! weir's benchmarks (issue 9): one command, every figure measured in the
//! same run against baselines measured in that run.
//!
//! `cargo run --release -p weir-bench -- [--quick] [--out BENCHMARKS.md]`
//!
//! Figures: eBPF per-packet cost (BPF_PROG_TEST_RUN) against an empty
//! program, a one-lookup program and a parse + LPM + hash program built
//! with weir's assembler; iptables per-packet cost in network namespaces
//! against an empty ruleset and kube-proxy's linear layout of the same
//! services; compile time and peak memory; update latency; program, map
//! and rule sizes. Models come from [`weir_compiler::synth`].
//!
//! Kernel parts need root and `ip`, `iptables`, `ipset`: without them they
//! are skipped and listed as problems (`--quick` under the smoke test
//! fails instead when `CI` is set).

mod case;
pub mod compile;
pub mod driver;
pub mod ebpf;
pub mod flows;
pub mod ipt_rounds;
pub mod iptables;
pub mod kube_proxy;
mod plan;
pub mod report;
pub mod stats;
mod tables;

use std::time::Instant;

use crate::case::{build_case, build_case_runs, Case};
pub use crate::case::{render_headline, render_per_pod};
pub use crate::plan::{Figure, Opts, Plan};
use crate::report::Report;
use crate::stats::thousands;
pub use crate::tables::updates::{churn_inventory, cli_endpoints};

/// `true` if this process may use BPF and namespaces.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn machine() -> Vec<String> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or("?".into(), |k| format!("{:.1} GiB", k / 1024.0 / 1024.0));
    let ipt = std::process::Command::new("iptables")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "not installed".into());
    vec![
        format!("- CPU: {model}, {cores} cores; memory {mem}"),
        format!("- kernel: {kernel}; {ipt} (the namespace measurements drive `iptables-legacy`, see below)"),
    ]
}

/// A PM QoS request for zero CPU wake-up latency, held while it lives:
/// the cpuidle governor then keeps idle CPUs polling rather than halting.
/// On this VM a halted vCPU takes tens of µs to wake, and namespace round
/// trips (which wake the server's thread and the client's) jumped between
/// ~9 µs and ~55 µs phases; that is the hypervisor, not the rules being
/// measured, and it hit baseline and layout alike but not in step. (The
/// usual practice of latency benchmarks such as cyclictest.)
pub struct NoIdleHalt(#[allow(dead_code)] std::fs::File);

impl NoIdleHalt {
    pub fn request() -> std::io::Result<NoIdleHalt> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/cpu_dma_latency")?;
        f.write_all(&0i32.to_ne_bytes())?;
        Ok(NoIdleHalt(f))
    }
}

/// Runs everything in `opts`; never panics on a failing part (it becomes
/// a problem in the report).
pub fn run(opts: &Opts) -> Report {
    let mut plan = Plan::new(opts.quick, opts.seed);
    plan.variant = opts.variant;
    plan.ct_table = opts.ct_table;
    plan.atoms = opts.atoms;
    if let Some(sizes) = &opts.sizes {
        plan.rules = sizes.clone();
        plan.services = sizes.clone();
    }
    let verbose = opts.verbose;
    let started = Instant::now();
    let log = move |s: &str| {
        if verbose {
            eprintln!("[{:>6.1}s] {s}", started.elapsed().as_secs_f64());
        }
    };
    let mut rep = Report::default();
    header(&mut rep, opts);
    let (kernel, ipt_ok) = kernel_parts(&mut rep, opts, &plan);
    let cases = Cases::build(opts, &plan, &log);

    let (ebpf_rules, ebpf_svcs) = if kernel && opts.wants(Figure::Ebpf) {
        tables::ebpf::figures(&mut rep, &cases.rules, &cases.svcs, &plan, &log)
    } else {
        if opts.wants(Figure::Ebpf) {
            tables::ebpf::not_run(&mut rep);
        }
        (Vec::new(), Vec::new())
    };
    if kernel && opts.wants(Figure::PerPod) {
        tables::per_pod::table(&mut rep, &plan, &log);
    }
    if opts.wants(Figure::Iptables) {
        if ipt_ok {
            tables::iptables::figures(&mut rep, &cases.rules, &cases.svcs, &plan, &log);
        } else {
            tables::iptables::not_run(&mut rep);
        }
    }
    if opts.wants(Figure::IptablesApply) {
        if ipt_ok {
            tables::ipt_apply::table(&mut rep, &cases.rules, &plan, &log);
        } else {
            tables::ipt_apply::not_run(&mut rep);
        }
    }
    if let (Some(headline), true) = (&cases.headline, opts.wants(Figure::Compile)) {
        tables::compile::table(&mut rep, &cases.rules, &cases.svcs, headline, &plan, &log);
    }
    if opts.wants(Figure::Updates) {
        tables::updates::table(&mut rep, &cases.svcs, &plan, kernel, ipt_ok, &log);
    }
    if let (Some(headline), true) = (&cases.headline, opts.wants(Figure::Sizes)) {
        tables::sizes::table(
            &mut rep,
            &cases.rules,
            &cases.svcs,
            headline,
            &ebpf_rules,
            &ebpf_svcs,
        );
    }
    rep.header.push(format!(
        "- total time of this run: {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    rep
}

/// The report's header: the command, the seed and the machine.
fn header(rep: &mut Report, opts: &Opts) {
    rep.header.push(format!(
        "Run: `{}` (seed {}){}",
        if opts.quick {
            "cargo run --release -p weir-bench -- --quick"
        } else {
            "cargo run --release -p weir-bench -- --out BENCHMARKS.md"
        },
        opts.seed,
        if opts.quick {
            " — quick mode: tiny sizes, few repetitions, no claims"
        } else {
            ""
        }
    ));
    rep.header.extend(machine());
}

/// Whether the kernel parts can run: (eBPF and namespaces, iptables);
/// what is missing becomes a problem in the report.
fn kernel_parts(rep: &mut Report, opts: &Opts, plan: &Plan) -> (bool, bool) {
    let kernel = opts.kernel && is_root();
    if opts.kernel && !is_root() {
        rep.problems
            .push("not root: eBPF and iptables measurements skipped".into());
    }
    let missing = iptables::missing_programs(plan.variant);
    if kernel && !missing.is_empty() {
        rep.problems.push(format!(
            "not installed: {} — iptables measurements skipped (apt-get install iptables ipset iproute2)",
            missing.join(", ")
        ));
    }
    (kernel, kernel && missing.is_empty())
}

/// The models of one run: the rules sweep, the services sweep and the
/// headline model (only when the compile or sizes tables want it).
struct Cases {
    rules: Vec<Case>,
    svcs: Vec<Case>,
    headline: Option<Case>,
}

impl Cases {
    fn build(opts: &Opts, plan: &Plan, log: &dyn Fn(&str)) -> Cases {
        let rules = plan
            .rules
            .iter()
            .map(|&t| {
                build_case(
                    format!("{} rules", thousands(t)),
                    plan.rules_params(t, opts.seed),
                    log,
                )
            })
            .collect();
        let svcs = plan
            .services
            .iter()
            .map(|&n| {
                build_case(
                    format!("{} services", thousands(n)),
                    plan.services_params(n, opts.seed),
                    log,
                )
            })
            .collect();
        let headline = (opts.wants(Figure::Compile) || opts.wants(Figure::Sizes)).then(|| {
            build_case_runs(
                format!(
                    "{} services + {} rules + {} endpoints",
                    thousands(plan.headline.services),
                    thousands(plan.headline.total_rules()),
                    thousands(plan.headline.endpoints)
                ),
                plan.headline,
                plan.cli_runs,
                log,
            )
        });
        Cases {
            rules,
            svcs,
            headline,
        }
    }
}
