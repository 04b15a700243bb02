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

pub mod compile;
pub mod ebpf;
pub mod flows;
pub mod iptables;
pub mod report;
pub mod stats;

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use weir_compiler::churn::{self, EndpointRec};
use weir_compiler::graph::cost::{capacity, Capacity};
use weir_compiler::graph::Compiled;
use weir_compiler::model::{Model, Proto, Verdict};
use weir_compiler::synth::{self, Params};

use crate::ebpf::{Baselines, Effort, Probe, WeirEbpf};
use crate::iptables::Scratch;
use crate::report::{Report, Table, Target, Verdict as TV};
use crate::stats::{median, ms, ns, ratio, thousands, us};

/// What to run.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Tiny sizes, few repetitions (seconds; no timing claims).
    pub quick: bool,
    pub seed: u64,
    /// Run the parts that need root (eBPF, namespaces).
    pub kernel: bool,
    /// Print progress to stderr.
    pub verbose: bool,
    /// Which iptables the namespace measurements drive.
    pub variant: weir_runtime::iptables::Variant,
    /// Only these figures (`--only`, for iterating on one back end; such
    /// a partial report must not rewrite BENCHMARKS.md). Empty: all.
    pub only: Vec<Figure>,
}

/// The groups of tables `--only` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    Ebpf,
    Iptables,
    Compile,
    Updates,
    Sizes,
}

impl Figure {
    pub const ALL: [(&'static str, Figure); 5] = [
        ("ebpf", Figure::Ebpf),
        ("iptables", Figure::Iptables),
        ("compile", Figure::Compile),
        ("updates", Figure::Updates),
        ("sizes", Figure::Sizes),
    ];

    pub fn parse(s: &str) -> Option<Figure> {
        Figure::ALL.iter().find(|(n, _)| *n == s).map(|&(_, f)| f)
    }
}

impl Opts {
    fn wants(&self, f: Figure) -> bool {
        self.only.is_empty() || self.only.contains(&f)
    }
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            quick: false,
            seed: 9,
            kernel: true,
            verbose: true,
            variant: weir_runtime::iptables::Variant::Legacy,
            only: Vec::new(),
        }
    }
}

/// The sizes of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub rules: Vec<usize>,
    pub services: Vec<usize>,
    pub headline: Params,
    pub effort: Effort,
    pub probes: usize,
    pub cli_runs: usize,
    /// Services of the model the update latencies are measured on.
    pub update_services: usize,
    /// Endpoints of the rules-sweep models (and the services sweep's minimum).
    pub endpoints: usize,
    pub variant: weir_runtime::iptables::Variant,
}

impl Plan {
    pub fn new(quick: bool, seed: u64) -> Plan {
        if quick {
            Plan {
                rules: vec![10, 100],
                services: vec![10, 100],
                headline: Params {
                    seed,
                    services: 100,
                    backends: 5,
                    policies: 9,
                    rules: 10,
                    endpoints: 500,
                    deployments: 50,
                    cidr_rules: 10,
                    ..Params::default()
                },
                effort: Effort {
                    repeat: 10_000,
                    runs: 3,
                    loads: 1,
                },
                probes: 40,
                cli_runs: 1,
                update_services: 10,
                endpoints: 300,
                variant: weir_runtime::iptables::Variant::Legacy,
            }
        } else {
            Plan {
                rules: vec![10, 100, 1_000, 10_000, 100_000],
                services: vec![10, 100, 1_000, 10_000],
                headline: Params {
                    seed,
                    services: 10_000,
                    backends: 5,
                    policies: 900,
                    rules: 10,
                    endpoints: 50_000,
                    deployments: 300,
                    cidr_rules: 1_000,
                    ..Params::default()
                },
                effort: Effort {
                    repeat: 1_000_000,
                    runs: 5,
                    loads: 3,
                },
                probes: 2_000,
                cli_runs: 3,
                update_services: 1_000,
                endpoints: 2_000,
                variant: weir_runtime::iptables::Variant::Legacy,
            }
        }
    }

    /// The rules sweep: `total` rules (policies of 10), 10 services.
    pub fn rules_params(&self, total: usize, seed: u64) -> Params {
        Params {
            seed,
            services: 10,
            backends: 3,
            policies: (total / 10).max(1),
            rules: total.min(10),
            endpoints: self.endpoints,
            deployments: 300,
            cidr_rules: 0,
            ..Params::default()
        }
    }

    /// The services sweep: `n` services of 5 backends, 100 rules.
    pub fn services_params(&self, n: usize, seed: u64) -> Params {
        Params {
            seed,
            services: n,
            backends: 5,
            policies: 10,
            rules: 10,
            endpoints: (n * 5).max(self.endpoints),
            deployments: 300,
            cidr_rules: 0,
            ..Params::default()
        }
    }
}

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

/// One synthetic model with everything measured on it.
struct Case {
    label: String,
    params: Params,
    model: Model,
    compiled: Compiled,
    cap: Capacity,
    inproc: compile::InProcess,
}

/// Writes the headline model of `opts` as `synth.weir` and
/// `inventory.json` into `dir` (what the whole-process compile row runs).
pub fn render_headline(opts: &Opts, dir: &std::path::Path) -> std::io::Result<()> {
    let plan = Plan::new(opts.quick, opts.seed);
    let r = synth::render(&synth::model(&plan.headline));
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("synth.weir"), &r.weir)?;
    std::fs::write(dir.join("inventory.json"), &r.inventory)
}

fn build_case(label: String, params: Params, log: &dyn Fn(&str)) -> Case {
    log(&format!("{label}: generating and compiling"));
    let model = synth::model(&params);
    let (inproc, compiled) = compile::in_process(&model);
    let cap = capacity(&compiled.graph);
    Case {
        label,
        params,
        model,
        compiled,
        cap,
        inproc,
    }
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
    let verbose = opts.verbose;
    let started = Instant::now();
    let log = move |s: &str| {
        if verbose {
            eprintln!("[{:>6.1}s] {s}", started.elapsed().as_secs_f64());
        }
    };
    let mut rep = Report::default();
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

    let kernel = opts.kernel && is_root();
    if opts.kernel && !is_root() {
        rep.problems
            .push("not root: eBPF and iptables measurements skipped".into());
    }
    let missing = iptables::missing_programs(plan.variant);
    let ipt_ok = kernel && missing.is_empty();
    if kernel && !missing.is_empty() {
        rep.problems.push(format!(
            "not installed: {} — iptables measurements skipped (apt-get install iptables ipset iproute2)",
            missing.join(", ")
        ));
    }

    // Models.
    let rules_cases: Vec<Case> = plan
        .rules
        .iter()
        .map(|&t| {
            build_case(
                format!("{} rules", thousands(t)),
                plan.rules_params(t, opts.seed),
                &log,
            )
        })
        .collect();
    let svc_cases: Vec<Case> = plan
        .services
        .iter()
        .map(|&n| {
            build_case(
                format!("{} services", thousands(n)),
                plan.services_params(n, opts.seed),
                &log,
            )
        })
        .collect();
    let headline = (opts.wants(Figure::Compile) || opts.wants(Figure::Sizes)).then(|| {
        build_case(
            format!(
                "{} services + {} rules + {} endpoints",
                thousands(plan.headline.services),
                thousands(plan.headline.total_rules()),
                thousands(plan.headline.endpoints)
            ),
            plan.headline,
            &log,
        )
    });

    // eBPF: every program loaded first, then measured in interleaved
    // rounds (see `ebpf::measure_interleaved`).
    let loaded = if kernel && opts.wants(Figure::Ebpf) {
        log("eBPF baselines");
        match (0..plan.effort.loads.max(1))
            .map(|_| ebpf::load_baselines(10_000))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(b) => Some(b),
            Err(e) => {
                rep.problems.push(format!("eBPF baselines: {e}"));
                None
            }
        }
    } else {
        None
    };
    let mut ebpf_rules = Vec::new();
    let mut ebpf_svcs = Vec::new();
    if let Some(base_subjects) = loaded {
        let load_all = |cases: &[Case], load: fn(&Case, usize) -> Loaded| -> Vec<Loaded> {
            cases
                .iter()
                .map(|c| {
                    log(&format!("eBPF: loading {}", c.label));
                    load(c, plan.effort.loads)
                })
                .collect()
        };
        let rules_loaded = load_all(&rules_cases, ebpf_rules_case);
        let svcs_loaded = load_all(&svc_cases, ebpf_service_case);
        let mut subjects: Vec<&ebpf::Subject> = base_subjects.iter().flatten().collect();
        let nbase = subjects.len();
        subjects.extend(
            rules_loaded
                .iter()
                .chain(&svcs_loaded)
                .filter_map(|r| r.as_ref().ok())
                .flat_map(|(w, _)| &w.subjects),
        );
        log(&format!(
            "eBPF: measuring {} loaded programs in {} interleaved rounds",
            subjects.len(),
            plan.effort.runs
        ));
        let mut costs = ebpf::measure_interleaved(&subjects, plan.effort).into_iter();
        let base = ebpf::Baselines::from_costs(&costs.by_ref().take(nbase).collect::<Vec<_>>());
        let mut figures = |loaded: Vec<Loaded>| {
            loaded
                .into_iter()
                .map(|r| {
                    let (w, what) = r?;
                    let c: Vec<_> = costs.by_ref().take(w.subjects.len()).collect();
                    Ok((w.figures(&c)?, what))
                })
                .collect::<Vec<EbpfResult>>()
        };
        ebpf_rules = figures(rules_loaded);
        ebpf_svcs = figures(svcs_loaded);
        match base {
            Ok(b) => ebpf_tables(
                &mut rep,
                &b,
                &rules_cases,
                &ebpf_rules,
                &svc_cases,
                &ebpf_svcs,
                &plan,
            ),
            Err(e) => rep.problems.push(format!("eBPF baselines: {e}")),
        }
    } else if opts.wants(Figure::Ebpf) {
        rep.targets.push(Target {
            name: "eBPF: 100,000 rules vs 10 rules".into(),
            goal: "≤ 1.2×".into(),
            measured: "not run (needs root)".into(),
            verdict: TV::NotMeasured,
        });
        rep.targets.push(Target {
            name: "eBPF: 10,000 services vs parse + LPM + hash".into(),
            goal: "≤ 1.3×".into(),
            measured: "not run (needs root)".into(),
            verdict: TV::NotMeasured,
        });
    }

    // iptables.
    if ipt_ok && opts.wants(Figure::Iptables) {
        // Idle CPUs poll instead of halting during the round trips (see
        // `NoIdleHalt`); not during anything else (compile times are
        // measured as a user's machine runs them).
        let no_halt = match NoIdleHalt::request() {
            Ok(h) => {
                rep.header.push(
                    "- idle CPUs poll during the namespace round trips (`/dev/cpu_dma_latency` = 0): they are not measured through a halted vCPU's wake-up".into(),
                );
                Some(h)
            }
            Err(e) => {
                rep.header.push(format!(
                    "- `/dev/cpu_dma_latency` not held ({e}): namespace round trips include idle vCPUs' wake-up latency"
                ));
                None
            }
        };
        iptables_figures(&mut rep, &rules_cases, &svc_cases, &plan, &log);
        drop(no_halt);
    } else if opts.wants(Figure::Iptables) {
        rep.targets.push(Target {
            name: "iptables: 10,000 services vs empty ruleset".into(),
            goal: "≤ 1.3×".into(),
            measured: "not run".into(),
            verdict: TV::NotMeasured,
        });
        rep.targets.push(Target {
            name: "iptables: kube-proxy overhead / weir overhead at 10,000 services".into(),
            goal: "≥ 10×".into(),
            measured: "not run".into(),
            verdict: TV::NotMeasured,
        });
    }

    // Compile.
    if let Some(headline) = &headline {
        if opts.wants(Figure::Compile) {
            compile_table(&mut rep, &rules_cases, &svc_cases, headline, &plan, &log);
        }
    }

    // Updates.
    if opts.wants(Figure::Updates) {
        updates_table(&mut rep, &svc_cases, &plan, kernel, ipt_ok, &log);
    }

    // Sizes.
    if let Some(headline) = &headline {
        if opts.wants(Figure::Sizes) {
            sizes_table(
                &mut rep,
                &rules_cases,
                &svc_cases,
                headline,
                &ebpf_rules,
                &ebpf_svcs,
            );
        }
    }

    rep.header.push(format!(
        "- total time of this run: {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    rep
}

type EbpfResult = Result<(WeirEbpf, Vec<String>), String>;

type Loaded = Result<(ebpf::LoadedWeir, Vec<String>), String>;

fn ebpf_rules_case(c: &Case, loads: usize) -> Loaded {
    let (allow, deny) = flows::policy_flows(&c.model, 300);
    let mut probes = Vec::new();
    let mut what = Vec::new();
    if let Some(d) = deny {
        what.push(format!(
            "new flow, denied after every ingress rule: {}",
            d.what
        ));
        probes.push(Probe {
            label: "new flow (deny, deepest)".into(),
            packet: d.packet,
            verdict: d.verdict,
        });
    }
    if let Some(a) = allow {
        what.push(format!("allowed flow: {}", a.what));
        probes.push(Probe {
            label: "allowed flow (same packet repeated)".into(),
            packet: a.packet,
            verdict: a.verdict,
        });
    }
    ebpf::load_weir(&c.model, &c.compiled.graph, &probes, loads).map(|w| (w, what))
}

fn ebpf_service_case(c: &Case, loads: usize) -> Loaded {
    let m = flows::with_bench_client(&c.model);
    let compiled = weir_compiler::graph::compile(&m);
    let svcs = flows::service_flows(&m, Proto::Tcp, flows::BENCH_CLIENT.into());
    let Some((_, last)) = svcs.last() else {
        return Err("no TCP selector service".into());
    };
    let interp = weir_compiler::interp::Interp::new(&m);
    let verdict = interp.evaluate(&last.packet).verdict;
    let probes = vec![Probe {
        label: "new flow to the last service".into(),
        packet: last.packet.clone(),
        verdict,
    }];
    ebpf::load_weir(&m, &compiled.graph, &probes, loads).map(|w| {
        (
            w,
            vec![format!("bench-client → last service: {}", last.what)],
        )
    })
}

fn cost_of(r: &EbpfResult, i: usize) -> Option<f64> {
    r.as_ref()
        .ok()
        .and_then(|(w, _)| w.costs.get(i).map(|c| c.1))
}

fn cell(r: &EbpfResult, i: usize) -> String {
    match r {
        Ok((w, _)) => match w.costs.get(i) {
            Some((_, v, true)) => ns(*v),
            Some((_, v, false)) => format!("{} (wrong verdict!)", ns(*v)),
            None => "–".into(),
        },
        Err(e) => format!("error: {}", short(e)),
    }
}

fn short(s: &str) -> String {
    let s = s.replace('|', "/").replace('\n', " ");
    if s.len() > 120 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(117).map_or(s.len(), |x| x.0)]
        )
    } else {
        s
    }
}

fn ebpf_tables(
    rep: &mut Report,
    b: &Baselines,
    rules: &[Case],
    er: &[EbpfResult],
    svcs: &[Case],
    es: &[EbpfResult],
    plan: &Plan,
) {
    let mut t = Table::new(
        "eBPF per-packet cost by rules (BPF_PROG_TEST_RUN, ns)",
        &[
            "rules",
            "weir: new flow, deny after all rules",
            "× empty",
            "× one lookup",
            "× parse+LPM+hash",
            "× at smallest size",
            "weir: allowed flow, same packet repeated",
        ],
    );
    t.note(format!(
        "Baselines in this run: empty program {} ns, one lookup {} ns, parse + LPM + hash {} ns (10,000 entries each). Every program of this table and the next and the baselines are loaded first, each loaded {} times (one load of a program can be ~40 % slower than another: where the kernel put its code and maps), then measured in {} interleaved rounds of {} repetitions each (every load of every program once per round, so that a drift of the machine's speed hits all alike); each figure is the median over loads of the medians of their rounds. Models: `rules` rules in policies of 10, 10 services, 2,000 endpoints, 300 deployments. \"New flow\": a packet the policy denies at the ingress default of an endpoint after walking all of its rules (a denied packet makes no conntrack entry, so every repetition takes the whole new-flow path). \"Allowed flow\": the deepest allowed endpoint-to-endpoint flow, the same packet repeated (after the first repetition its flow is in conntrack).",
        ns(b.empty),
        ns(b.one_lookup),
        ns(b.lpm_hash),
        plan.effort.loads,
        plan.effort.runs,
        thousands(plan.effort.repeat as usize)
    ));
    let base = cost_of(&er[0], 0);
    for (c, r) in rules.iter().zip(er) {
        let v = cost_of(r, 0).unwrap_or(f64::NAN);
        t.row(vec![
            thousands(c.params.total_rules()),
            cell(r, 0),
            ratio(v, b.empty),
            ratio(v, b.one_lookup),
            ratio(v, b.lpm_hash),
            ratio(v, base.unwrap_or(f64::NAN)),
            cell(r, 1),
        ]);
    }
    for (c, r) in rules.iter().zip(er) {
        match r {
            Ok((_, what)) => {
                for w in what {
                    t.note(format!("- {}: {w}", c.label));
                }
            }
            Err(e) => rep.problems.push(format!("eBPF {}: {e}", c.label)),
        }
    }
    rep.tables.push(t);
    let top = rules.last().map(|c| c.params.total_rules()).unwrap_or(0);
    let (first, last) = (cost_of(&er[0], 0), er.last().and_then(|r| cost_of(r, 0)));
    rep.targets.push(match (first, last) {
        (Some(a), Some(z)) => Target {
            name: format!("eBPF: {} rules vs 10 rules", thousands(top)),
            goal: "≤ 1.2×".into(),
            measured: format!("{} ({} vs {} ns)", ratio(z, a), ns(z), ns(a)),
            verdict: if top >= 100_000 {
                TV::from(Some(z / a <= 1.2))
            } else {
                TV::NotMeasured
            },
        },
        _ => Target {
            name: "eBPF: 100,000 rules vs 10 rules".into(),
            goal: "≤ 1.2×".into(),
            measured: "failed (see problems)".into(),
            verdict: TV::from(Some(false)),
        },
    });

    let mut t = Table::new(
        "eBPF per-packet cost by services (BPF_PROG_TEST_RUN, ns)",
        &[
            "services",
            "weir: new flow to the last service",
            "× empty",
            "× one lookup",
            "× parse+LPM+hash",
        ],
    );
    t.note("Models: `services` services of 5 backends (30 % Maglev), 100 rules, max(2,000, 5 × services) endpoints. The packet comes from an extra endpoint `bench-client` whose egress policy allows only tcp/1, to the last TCP service's frontend: parse, classify both addresses, conntrack miss, steering, frontend lookup and backend choice, egress policy (denied at its default, so no conntrack entry is made and every repetition is a new flow).".to_string());
    for (c, r) in svcs.iter().zip(es) {
        let v = cost_of(r, 0).unwrap_or(f64::NAN);
        t.row(vec![
            thousands(c.params.services),
            cell(r, 0),
            ratio(v, b.empty),
            ratio(v, b.one_lookup),
            ratio(v, b.lpm_hash),
        ]);
        if let Err(e) = r {
            rep.problems.push(format!("eBPF {}: {e}", c.label));
        }
    }
    rep.tables.push(t);
    let top = svcs.last().map(|c| c.params.services).unwrap_or(0);
    let last = es.last().and_then(|r| cost_of(r, 0));
    rep.targets.push(Target {
        name: format!("eBPF: {} services vs parse + LPM + hash", thousands(top)),
        goal: "≤ 1.3×".into(),
        measured: last.map_or("failed (see problems)".into(), |v| {
            format!(
                "{} ({} vs {} ns)",
                ratio(v, b.lpm_hash),
                ns(v),
                ns(b.lpm_hash)
            )
        }),
        verdict: match last {
            Some(v) if top >= 10_000 => TV::from(Some(v / b.lpm_hash <= 1.3)),
            Some(_) => TV::NotMeasured,
            None => TV::Missed,
        },
    });
}

fn sock(p: &weir_compiler::interp::Packet) -> SocketAddr {
    SocketAddr::new(p.dst, p.dport)
}

fn iptables_figures(
    rep: &mut Report,
    rules: &[Case],
    svcs: &[Case],
    plan: &Plan,
    log: &dyn Fn(&str),
) {
    // Rules sweep: deepest allowed TCP flow between endpoints.
    let mut t = Table::new(
        "iptables per-packet cost by rules (network namespace, µs per new flow)",
        &[
            "rules",
            "empty ruleset",
            "weir",
            "weir overhead",
            "weir × empty",
            "weir rules / sets (entries)",
            "apply (ms)",
        ],
    );
    t.note(format!(
        "Median round trip of {} new TCP flows (fresh socket: connect + the server's reply) from a client endpoint through the node namespace to a server endpoint — the deepest allowed endpoint-to-endpoint flow the interpreter finds. Empty: a baseline client whose packets skip every rule (`-s 198.18.0.9 -j ACCEPT` first in each built-in chain) to the same server, probed in alternating batches of 20 with the flow under test; overhead = median over batch pairs of the difference of batch medians (round trips on this VM switch between ~9 µs and ~55 µs phases). Same models as the eBPF rules table.",
        plan.probes
    ));
    for c in rules {
        log(&format!("iptables: {}", c.label));
        match iptables_rules_case(c, plan) {
            Ok(row) => t.row(row),
            Err(e) => {
                t.row(vec![
                    thousands(c.params.total_rules()),
                    format!("error: {}", short(&e)),
                ]);
                rep.problems.push(format!("iptables {}: {e}", c.label));
            }
        }
    }
    rep.tables.push(t);

    let mut t = Table::new(
        "iptables per-packet cost by services (network namespace, µs per new flow)",
        &[
            "services",
            "kube-proxy: baseline / last / random",
            "kube-proxy overhead: last / random",
            "weir: baseline / last / random",
            "weir overhead: last / random",
            "weir × baseline (last)",
            "kube-proxy overhead / weir overhead (last)",
            "rules: kube-proxy / weir",
            "weir apply (ms)",
        ],
    );
    t.note(format!(
        "Median round trip of {} new UDP flows (fresh socket each) from a non-endpoint client to the last UDP service's frontend (the worst case for kube-proxy's linear `KUBE-SERVICES`), and round-robin over 8 random UDP services, DNATed by the node to a backend in the server namespace. Empty: a baseline client whose packets skip every rule (`-s 198.18.0.9 -j ACCEPT` first in each built-in chain) straight to the backends the flows under test are DNATed to, each probe to one of them at random as the service's `-m statistic` spreads the flows under test (a baseline batch that kept waking one server thread was 0.4–2 µs faster than one spread over five: that was counted as rule cost before), probed in alternating batches of 20 with the flows under test. Overhead = median over batch pairs of (batch median − the baseline batch median just before it): only paired differences are meaningful on this VM, whose speed drifts; the medians are shown for context. kube-proxy: the same services and backends in kube-proxy's layout (see `bench/src/iptables.rs`). weir: the iptables back end's bundle (Maglev balanced randomly, `maglev_as_random`), applied by the runtime. Same models as the eBPF services table.",
        plan.probes
    ));
    let mut top: Option<(usize, f64, f64, f64)> = None;
    for c in svcs {
        log(&format!("iptables: {}", c.label));
        match iptables_services_case(c, plan) {
            Ok((row, empty, kube_over, weir_cost)) => {
                top = Some((c.params.services, empty, kube_over, weir_cost));
                t.row(row);
            }
            Err(e) => {
                t.row(vec![
                    thousands(c.params.services),
                    format!("error: {}", short(&e)),
                ]);
                rep.problems.push(format!("iptables {}: {e}", c.label));
                top = None;
            }
        }
    }
    rep.tables.push(t);
    match top {
        Some((n, empty, kube_over, weir_cost)) => {
            let weir_over = weir_cost - empty;
            let claim = n >= 10_000;
            rep.targets.push(Target {
                name: format!("iptables: {} services vs empty ruleset", thousands(n)),
                goal: "≤ 1.3×".into(),
                measured: format!(
                    "{} ({} vs {} µs)",
                    ratio(weir_cost, empty),
                    us(weir_cost),
                    us(empty)
                ),
                verdict: if claim {
                    TV::from(Some(weir_cost / empty <= 1.3))
                } else {
                    TV::NotMeasured
                },
            });
            // A weir overhead within noise counts as 0.5 µs (the ratio is
            // then a lower bound).
            let floor = 500.0;
            let (w, bound) = if weir_over < floor {
                (floor, "≥ ")
            } else {
                (weir_over, "")
            };
            rep.targets.push(Target {
                name: format!(
                    "iptables: kube-proxy overhead / weir overhead at {} services",
                    thousands(n)
                ),
                goal: "≥ 10×".into(),
                measured: format!(
                    "{bound}{} ({} vs {} µs)",
                    ratio(kube_over, w),
                    us(kube_over),
                    us(weir_over)
                ),
                verdict: if claim {
                    TV::from(Some(kube_over / w >= 10.0))
                } else {
                    TV::NotMeasured
                },
            });
        }
        None => {
            rep.targets.push(Target {
                name: "iptables: 10,000 services vs empty ruleset".into(),
                goal: "≤ 1.3×".into(),
                measured: "failed (see problems)".into(),
                verdict: TV::Missed,
            });
        }
    }
}

fn iptables_rules_case(c: &Case, plan: &Plan) -> Result<Vec<String>, String> {
    let (allow, _) = flows::policy_flows(&c.model, 300);
    let flow = allow.ok_or("no allowed endpoint-to-endpoint flow")?;
    let topo = weir_runtime::netns::Topology::new().map_err(|e| format!("netns: {e}"))?;
    let p = &flow.packet;
    topo.serve_tcp(p.dst, p.dport)
        .map_err(|e| format!("server: {e}"))?;
    let dir = Scratch::new(&format!("rules-{}", c.params.total_rules()));
    let stats = iptables::write_bundle(&c.model, &c.compiled.graph, &dir.0.join("bundle"))?;
    let rt = iptables::runtime(&topo, &dir.0.join("state"), plan.variant);
    let apply_ms = iptables::apply(&rt, &dir.0.join("bundle"))?;
    iptables::bypass(&topo, plan.variant)?;
    let pair = iptables::measure_pair(
        &topo,
        Proto::Tcp,
        &[sock(p)],
        p.src,
        &[sock(p)],
        plan.probes,
    );
    let (empty, weir) = (pair.base, pair.test);
    // No detach: deleting the namespaces frees every rule and set at
    // once (detaching large generations one `ipset destroy` at a time
    // takes minutes).
    drop(rt);
    if weir.failed > weir.n / 10 || empty.failed > empty.n / 10 {
        return Err(format!(
            "probes failed: weir {} of {}, baseline {} of {} ({})",
            weir.failed, weir.n, empty.failed, empty.n, flow.what
        ));
    }
    Ok(vec![
        thousands(c.params.total_rules()),
        us(empty.median),
        us(weir.median),
        us(pair.overhead),
        ratio(empty.median + pair.overhead, empty.median),
        format!(
            "{} / {} ({})",
            thousands(stats.rules),
            thousands(stats.sets),
            thousands(stats.set_entries)
        ),
        ms(apply_ms),
    ])
}

type SvcRow = (Vec<String>, f64, f64, f64);

fn iptables_services_case(c: &Case, plan: &Plan) -> Result<SvcRow, String> {
    let client: IpAddr = flows::CLIENT.into();
    let allowed: Vec<(usize, flows::Flow)> = flows::service_flows(&c.model, Proto::Udp, client)
        .into_iter()
        .filter(|(_, f)| f.verdict == Verdict::Allow)
        .collect();
    let (last_i, last) = allowed.last().cloned().ok_or("no allowed UDP service")?;
    let mut rng = weir_compiler::gen::Rng::new(c.params.seed ^ 0xbe7c);
    let mut random: Vec<(usize, flows::Flow)> = (0..8.min(allowed.len()))
        .map(|_| allowed[rng.below(allowed.len())].clone())
        .collect();
    random.sort_by_key(|r| r.0);
    random.dedup_by_key(|r| r.0);
    let resolved = iptables::resolved_services(&c.model);
    let mut backends = Vec::new();
    for i in std::iter::once(last_i).chain(random.iter().map(|r| r.0)) {
        backends.extend(resolved[i].3.iter().copied());
    }
    let topo = weir_runtime::netns::Topology::new().map_err(|e| format!("netns: {e}"))?;
    iptables::serve_backends(&topo, Proto::Udp, &backends)?;
    // Baselines go straight to the backends the flows under test are
    // DNATed to (all of them, round-robin), so that they reach the same
    // servers and differ only in the rules skipped.
    let backends_of = |i: usize| -> Vec<SocketAddr> {
        resolved[i]
            .3
            .iter()
            .map(|&(a, p)| SocketAddr::new(a, p))
            .collect()
    };
    let direct = backends_of(last_i);
    if direct.is_empty() {
        return Err("last service has no backends".into());
    }
    let direct_rand: Vec<SocketAddr> = random.iter().flat_map(|r| backends_of(r.0)).collect();
    let last_sock = sock(&last.packet);
    let random_socks: Vec<SocketAddr> = random.iter().map(|r| sock(&r.1.packet)).collect();
    let n = plan.probes;

    let (kube_text, kube_rules) = iptables::kube_proxy_rules(&c.model);
    iptables::restore(&topo, plan.variant, &kube_text)?;
    iptables::bypass(&topo, plan.variant)?;
    // The last service, then the random ones, against their backends.
    let measure = || {
        (
            iptables::measure_pair(&topo, Proto::Udp, &direct, client, &[last_sock], n),
            iptables::measure_pair(
                &topo,
                Proto::Udp,
                &direct_rand,
                client,
                &random_socks,
                n / 2,
            ),
        )
    };
    let (kube, kube_rand) = measure();
    iptables::flush(&topo, plan.variant)?;
    if kube.test.failed > kube.test.n / 10 {
        return Err(format!(
            "{} of {} kube-proxy probes failed",
            kube.test.failed, kube.test.n
        ));
    }

    let dir = Scratch::new(&format!("svc-{}", c.params.services));
    let stats = iptables::write_bundle(&c.model, &c.compiled.graph, &dir.0.join("bundle"))?;
    let rt = iptables::runtime(&topo, &dir.0.join("state"), plan.variant);
    let apply_ms = iptables::apply(&rt, &dir.0.join("bundle"))?;
    iptables::bypass(&topo, plan.variant)?;
    let (weir, weir_rand) = measure();
    let (empty, weir_last) = (weir.base, weir.test);
    // No detach: deleting the namespaces frees every rule and set at
    // once (detaching large generations one `ipset destroy` at a time
    // takes minutes).
    drop(rt);
    if weir_last.failed > weir_last.n / 10 {
        return Err(format!(
            "{} of {} weir probes failed ({})",
            weir_last.failed, weir_last.n, last.what
        ));
    }
    let e = empty.median;
    let kube_over = kube.overhead;
    let weir_over = weir.overhead;
    Ok((
        vec![
            thousands(c.params.services),
            format!(
                "{} / {} / {}",
                us(kube.base.median),
                us(kube.test.median),
                us(kube_rand.test.median)
            ),
            format!("{} / {}", us(kube_over), us(kube_rand.overhead)),
            format!(
                "{} / {} / {}",
                us(e),
                us(weir_last.median),
                us(weir_rand.test.median)
            ),
            format!("{} / {}", us(weir_over), us(weir_rand.overhead)),
            ratio(e + weir_over, e),
            if weir_over < 500.0 {
                format!("≥ {}", ratio(kube_over, 500.0))
            } else {
                ratio(kube_over, weir_over)
            },
            format!("{} / {}", thousands(kube_rules), thousands(stats.rules)),
            ms(apply_ms),
        ],
        e,
        kube_over,
        e + weir_over,
    ))
}

fn compile_table(
    rep: &mut Report,
    rules: &[Case],
    svcs: &[Case],
    headline: &Case,
    plan: &Plan,
    log: &dyn Fn(&str),
) {
    let weir = compile::weir_binary();
    let mut t = Table::new(
        "Compile time and peak memory",
        &[
            "model",
            "graph (ms)",
            "of which lower (classes) / optimize / verify / analyse",
            "eBPF codegen (ms)",
            "iptables gen (ms)",
            "in-process total (ms)",
            "in-process peak RSS (MiB)",
            "`weir compile` wall (ms)",
            "`weir compile` peak RSS (MiB)",
        ],
    );
    t.note(format!(
        "In process: `graph::compile`'s stages (lower — which builds the address classes, timed separately too —, verify, optimize, verify, analyse) then each back end's generator, one run; peak RSS is the bench process's `VmHWM` (reset before each model; includes the model itself). Whole process: `weir compile FILE --endpoints INVENTORY -o DIR --target ebpf` on the model rendered as `.weir` + JSON (`synth::render`): parse, check, lints, graph, eBPF back end, bundle written (the models balance with Maglev, which the iptables back end refuses with E0501, so the whole-process figure is the eBPF compile that succeeds; the in-process iptables column generates with Maglev balanced randomly); median wall time of {} run(s) (one when a run takes over 5 s), peak RSS of the `weir` process (`ru_maxrss`, read by this crate's `weir-rusage`, which forks it: a direct child of the benchmark starts from the benchmark's own high-water mark, which is what earlier versions of this table showed). {}",
        plan.cli_runs,
        match &weir {
            Some(p) => format!("Binary: `{}`.", p.display()),
            None => "The `weir` binary was not found (build it with `cargo build --release -p weir`), so whole-process runs are skipped.".into(),
        }
    ));
    let mut headline_whole = None;
    for c in rules.iter().chain(svcs).chain(std::iter::once(headline)) {
        let ip = &c.inproc;
        let total = ip.graph_ms + ip.ebpf_ms.unwrap_or(0.0) + ip.iptables_ms.unwrap_or(0.0);
        let (wall, rss) = match &weir {
            Some(bin) => {
                log(&format!("weir compile: {}", c.label));
                match cli_runs(bin, c, plan.cli_runs) {
                    Ok((w, r, note)) => {
                        if std::ptr::eq(c, headline) {
                            headline_whole = Some(w);
                        }
                        let rss = if r.is_nan() {
                            "–".into()
                        } else {
                            format!("{r:.0}")
                        };
                        (format!("{}{note}", ms(w)), rss)
                    }
                    Err(e) => {
                        rep.problems.push(format!("weir compile {}: {e}", c.label));
                        ("error".into(), "–".into())
                    }
                }
            }
            None => ("–".into(), "–".into()),
        };
        t.row(vec![
            c.label.clone(),
            ms(ip.graph_ms),
            format!(
                "{} ({}) / {} / {} / {}",
                ms(ip.lower_ms),
                ms(ip.classes_ms),
                ms(ip.opt_ms),
                ms(ip.verify_ms),
                ms(ip.analyze_ms)
            ),
            ip.ebpf_ms.map_or_else(
                || {
                    format!(
                        "refused: {}",
                        short(ip.ebpf_error.as_deref().unwrap_or("?"))
                    )
                },
                ms,
            ),
            ip.iptables_ms.map_or_else(
                || {
                    format!(
                        "refused: {}",
                        short(ip.iptables_error.as_deref().unwrap_or("?"))
                    )
                },
                ms,
            ),
            ms(total),
            format!("{:.0}", ip.peak_mib),
            wall,
            rss,
        ]);
    }
    rep.tables.push(t);
    let ip = &headline.inproc;
    let total = ip.graph_ms + ip.ebpf_ms.unwrap_or(f64::NAN) + ip.iptables_ms.unwrap_or(f64::NAN);
    let big = plan.headline.services >= 10_000;
    rep.targets.push(Target {
        name: format!(
            "compile {} (in process: graph + both back ends)",
            headline.label
        ),
        goal: "< 1 s".into(),
        measured: format!("{} ms", ms(total)),
        verdict: if big {
            TV::from(Some(total < 1000.0))
        } else {
            TV::NotMeasured
        },
    });
    if let Some(w) = headline_whole {
        rep.targets.push(Target {
            name: format!("compile {} (`weir compile`, whole process)", headline.label),
            goal: "< 1 s".into(),
            measured: format!("{} ms", ms(w)),
            verdict: if big {
                TV::from(Some(w < 1000.0))
            } else {
                TV::NotMeasured
            },
        });
    }
}

fn cli_runs(bin: &std::path::Path, c: &Case, runs: usize) -> Result<(f64, f64, String), String> {
    let dir = Scratch::new(&format!(
        "cli-{}",
        c.label.replace(' ', "_").replace(['+', ','], "")
    ));
    let r = synth::render(&c.model);
    let wf = dir.0.join("synth.weir");
    let inv = dir.0.join("inventory.json");
    std::fs::write(&wf, &r.weir).map_err(|e| e.to_string())?;
    std::fs::write(&inv, &r.inventory).map_err(|e| e.to_string())?;
    let mut walls = Vec::new();
    let mut peak = f64::NAN;
    let mut note = String::new();
    for i in 0..runs.max(1) {
        // Slow models run once (keeps the whole benchmark under 10 minutes).
        if i > 0 && walls.iter().any(|&w| w > 5_000.0) {
            break;
        }
        let w = compile::whole_process(bin, &wf, &inv, &dir.0.join("out"))?;
        walls.push(w.wall_ms);
        peak = peak.max(w.peak_mib);
        if w.exit != 0 {
            note = format!(" (exit {}: {})", w.exit, short(&w.stderr_head));
        }
    }
    Ok((median(&walls), peak, note))
}

fn updates_table(
    rep: &mut Report,
    svcs: &[Case],
    plan: &Plan,
    kernel: bool,
    ipt_ok: bool,
    log: &dyn Fn(&str),
) {
    let Some(c) = svcs
        .iter()
        .find(|c| c.params.services == plan.update_services)
        .or(svcs.first())
    else {
        return;
    };
    let mut t = Table::new(
        &format!("Update latency ({}, ms)", c.label),
        &["change", "eBPF", "iptables", "how"],
    );
    t.note("Median of 5 for endpoint changes, one run for the rest. Endpoint add/remove: wall time of the runtime's endpoint path (`weir_runtime::endpoints::ebpf_text` / `endpoints::iptables_text`, what `weir endpoints` runs, called in process; iptables given the bundle read beforehand) given the text of the full inventory file with one endpoint more (labels of an existing endpoint without its `instance` label, at a fresh address of an existing class), then without it: state and recorded inventory read, the inventory compared with the recorded one (only endpoints whose text changed are parsed), churn plan, the writes (eBPF: class-map host entries in the pinned maps of a generation applied with `ebpf::apply` to a netns interface; iptables: one `ipset restore` batch), the new inventory recorded (state under /dev/shm, tmpfs like `/run`). Whole `weir endpoints` process: the release `weir` binary run with the inventory file, as a user runs it (process start, the bundle recognised by its files' identities, the update, the report printed; eBPF on a generation applied with `weir apply`). Backend removed / rule changed: the model changes (a backend endpoint becomes not ready / one rule's port changes), so the graph and back end are regenerated and a new generation is applied (eBPF: codegen + load: verifier, maps, prog array; iptables: generate + `Iptables::apply`). Full re-apply: the whole generation again (eBPF: load; iptables: apply of a changed bundle).".to_string());
    if !kernel {
        t.row(vec![
            "–".into(),
            "not run (needs root)".into(),
            "not run".into(),
            String::new(),
        ]);
        rep.tables.push(t);
        return;
    }
    log(&format!("updates: {}", c.label));
    // Changed models.
    let mut backend_removed = c.model.clone();
    if let Some(e) = backend_removed.endpoints.iter_mut().find(|e| e.ready) {
        e.ready = false;
    }
    let mut rule_changed = c.model.clone();
    if let Some(r) = rule_changed
        .policies
        .iter_mut()
        .filter_map(|p| p.ingress.as_mut())
        .flat_map(|rs| rs.iter_mut())
        .find(|r| matches!(r.proto, weir_compiler::model::ProtoMatch::Ports { .. }))
    {
        r.proto = weir_compiler::model::ProtoMatch::Ports {
            proto: Proto::Tcp,
            ports: vec![weir_compiler::model::PortRange { lo: 7777, hi: 7777 }],
        };
    }

    // eBPF.
    let eb = ebpf::updates(&c.model, &c.compiled.graph, 5);
    let eb_regen = |m: &Model| -> Result<f64, String> {
        let t0 = Instant::now();
        let g = weir_compiler::graph::compile(m);
        ebpf::updates(m, &g.graph, 0).map(|u| {
            let _ = u;
            t0.elapsed().as_secs_f64() * 1e3
        })
    };
    let eb_backend = eb_regen(&backend_removed);
    let eb_rule = eb_regen(&rule_changed);

    // iptables.
    let ip = if ipt_ok {
        iptables_updates(c, plan, &backend_removed, &rule_changed)
    } else {
        Err("iptables not available".into())
    };
    let f = |r: &Result<f64, String>| match r {
        Ok(v) => ms(*v),
        Err(e) => format!("error: {}", short(e)),
    };
    let (e_add, e_del, e_full) = match &eb {
        Ok(u) => (
            Ok(u.endpoint_add_ms),
            Ok(u.endpoint_remove_ms),
            Ok(u.full_load_ms),
        ),
        Err(e) => (Err(e.clone()), Err(e.clone()), Err(e.clone())),
    };
    if let Err(e) = &eb {
        rep.problems.push(format!("eBPF updates: {e}"));
    }
    let get = |i: usize| -> Result<f64, String> {
        match &ip {
            Ok((v, _)) => Ok(v[i]),
            Err(e) => Err(e.clone()),
        }
    };
    // Whole-process `weir endpoints` (add, remove) cells.
    let cli_cells = |r: Option<&Result<(f64, f64), String>>| -> [String; 2] {
        match r {
            Some(Ok((a, d))) => [ms(*a), ms(*d)],
            Some(Err(e)) => {
                let e = format!("error: {}", short(e));
                [e.clone(), e]
            }
            None => ["not measured (no `weir` binary)".into(), "–".into()],
        }
    };
    let [ce_add, ce_del] = cli_cells(match &eb {
        Ok(u) => u.cli.as_ref(),
        Err(_) => None,
    });
    let [ci_add, ci_del] = cli_cells(match &ip {
        Ok((_, c)) => c.as_ref(),
        Err(_) => None,
    });
    for (what, r) in [
        ("eBPF", eb.as_ref().ok().and_then(|u| u.cli.as_ref())),
        ("iptables", ip.as_ref().ok().and_then(|(_, c)| c.as_ref())),
    ] {
        if let Some(Err(e)) = r {
            rep.problems.push(format!("{what} `weir endpoints`: {e}"));
        }
    }
    if let Err(e) = &ip {
        rep.problems.push(format!("iptables updates: {e}"));
    }
    t.row(vec![
        "one endpoint added".into(),
        f(&e_add),
        f(&get(0)),
        "incremental".into(),
    ]);
    t.row(vec![
        "one endpoint removed".into(),
        f(&e_del),
        f(&get(1)),
        "incremental".into(),
    ]);
    t.row(vec![
        "one endpoint added, whole `weir endpoints` process".into(),
        ce_add,
        ci_add,
        "incremental; process start and bundle check included".into(),
    ]);
    t.row(vec![
        "one endpoint removed, whole `weir endpoints` process".into(),
        ce_del,
        ci_del,
        "incremental; process start and bundle check included".into(),
    ]);
    t.row(vec![
        "one backend removed".into(),
        f(&eb_backend),
        f(&get(2)),
        "regenerate + new generation".into(),
    ]);
    t.row(vec![
        "one rule changed".into(),
        f(&eb_rule),
        f(&get(3)),
        "regenerate + new generation".into(),
    ]);
    t.row(vec![
        "full re-apply".into(),
        f(&e_full),
        f(&get(4)),
        "new generation (eBPF: load only)".into(),
    ]);
    t.row(vec![
        "re-apply, unchanged bundle".into(),
        "–".into(),
        f(&get(5)),
        "runtime sees the same content hash".into(),
    ]);
    rep.tables.push(t);
    let claim = !plan.rules.is_empty() && !opts_quick(plan);
    let e_worst = match (&e_add, &e_del) {
        (Ok(a), Ok(d)) => Some(a.max(*d)),
        _ => None,
    };
    rep.targets.push(Target {
        name: "eBPF: endpoint add/remove".into(),
        goal: "< 5 ms".into(),
        measured: e_worst.map_or("failed".into(), |v| {
            format!("{} ms (worst of add, remove)", ms(v))
        }),
        verdict: match e_worst {
            Some(v) if claim => TV::from(Some(v < 5.0)),
            Some(_) => TV::NotMeasured,
            None => TV::Missed,
        },
    });
    let i_worst = match (get(0), get(1)) {
        (Ok(a), Ok(d)) => Some(a.max(d)),
        _ => None,
    };
    rep.targets.push(Target {
        name: "iptables: endpoint add/remove".into(),
        goal: "< 50 ms".into(),
        measured: i_worst.map_or("failed".into(), |v| {
            format!("{} ms (worst of add, remove)", ms(v))
        }),
        verdict: match i_worst {
            Some(v) if claim => TV::from(Some(v < 50.0)),
            Some(_) => TV::NotMeasured,
            None => TV::Missed,
        },
    });
}

fn opts_quick(plan: &Plan) -> bool {
    plan.effort.repeat < 1_000_000
}

/// Whole-process `weir endpoints` add / remove latency (ms, medians of
/// `reps`): `weir endpoints DIR FILE ARGS` with the inventory file `with`
/// (one endpoint more), then `base`, as a user runs it: process start,
/// the bundle recognised, the update, the report printed.
pub fn cli_endpoints(
    weir: &std::path::Path,
    dir: &std::path::Path,
    work: &std::path::Path,
    (with, base): (&str, &str),
    args: &[&str],
    reps: usize,
) -> Result<(f64, f64), String> {
    let files = [work.join("cli-with.json"), work.join("cli-base.json")];
    for (f, text) in files.iter().zip([with, base]) {
        std::fs::write(f, text).map_err(|e| e.to_string())?;
    }
    let run = |file: &std::path::Path| -> Result<f64, String> {
        let t = Instant::now();
        let out = std::process::Command::new(weir)
            .arg("endpoints")
            .arg(dir)
            .arg(file)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output()
            .map_err(|e| format!("running {}: {e}", weir.display()))?;
        let wall = t.elapsed().as_secs_f64() * 1e3;
        if !out.status.success() {
            return Err(format!(
                "weir endpoints: exit {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(wall)
    };
    let (mut add, mut del) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        add.push(run(&files[0])?);
        del.push(run(&files[1])?);
    }
    Ok((median(&add), median(&del)))
}

/// The endpoints a bundle was compiled with (as the runtime records them)
/// and one extra endpoint the runtime can add without a recompile: the
/// labels of an existing endpoint without the service-only `instance`
/// label (so no service's backends change) at a fresh address whose
/// class exists (checked with the runtime's own planner).
pub fn churn_inventory(
    model: &Model,
    manifest: &weir_compiler::contract::Manifest,
) -> Result<(Vec<EndpointRec>, EndpointRec), String> {
    let base = churn::manifest_endpoints(manifest);
    let view = churn::ClassView::from_manifest(manifest);
    let n = model.endpoints.len();
    let addrs = [
        weir_compiler::synth::endpoint_addr(n + 16),
        weir_compiler::synth::endpoint_addr(n + 4096),
        "10.127.0.1".parse().expect("address"),
    ];
    for e in model.endpoints.iter().filter(|e| e.ready).take(64) {
        let mut trimmed = e.labels.clone();
        trimmed.remove("instance");
        for labels in [trimmed, e.labels.clone()] {
            for addr in addrs {
                let extra = EndpointRec {
                    name: "bench-new-endpoint".into(),
                    labels: labels.clone(),
                    ready: true,
                    addrs: vec![addr],
                };
                let mut with = base.clone();
                with.push(extra.clone());
                let p = churn::plan(&view, &base, &with);
                if p.refused.is_empty() && p.changes.len() == 1 {
                    return Ok((base, extra));
                }
            }
        }
    }
    Err("no endpoint the runtime can add without a recompile".into())
}

/// iptables update latencies (ms): add, remove, backend removed, rule
/// changed, full re-apply, unchanged re-apply; and whole-process `weir
/// endpoints` add / remove (`None`: no `weir` binary found).
#[allow(clippy::type_complexity)]
fn iptables_updates(
    c: &Case,
    plan: &Plan,
    backend_removed: &Model,
    rule_changed: &Model,
) -> Result<(Vec<f64>, Option<Result<(f64, f64), String>>), String> {
    let topo = weir_runtime::netns::Topology::new().map_err(|e| format!("netns: {e}"))?;
    let dir = Scratch::new("updates");
    let b0 = dir.0.join("b0");
    let stats = iptables::write_bundle(&c.model, &c.compiled.graph, &b0)?;
    let state = Scratch::shm("updates-state");
    let rt = iptables::runtime(&topo, &state.0, plan.variant);
    iptables::apply(&rt, &b0)?;
    // One endpoint added and removed again through the runtime's endpoint
    // path (`weir endpoints`, given the inventory file's text): the
    // inventory compared with the recorded one, churn plan, one `ipset
    // restore` batch.
    let _ = &stats;
    let bundle = weir_runtime::Bundle::read(&b0).map_err(|e| e.to_string())?;
    let (base, extra) = churn_inventory(&c.model, &bundle.manifest)?;
    let mut with = base.clone();
    with.push(extra);
    let with = weir_compiler::churn::inventory_text(&with);
    let base = weir_compiler::churn::inventory_text(&base);
    let (mut add, mut del) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = Instant::now();
        let r = weir_runtime::endpoints::iptables_text(&rt, &bundle, &with)
            .map_err(|e| format!("endpoints add: {e}"))?;
        add.push(t.elapsed().as_secs_f64() * 1e3);
        if r.changes.len() != 1 {
            return Err(format!("endpoint add: {} changes", r.changes.len()));
        }
        let t = Instant::now();
        weir_runtime::endpoints::iptables_text(&rt, &bundle, &base)
            .map_err(|e| format!("endpoints remove: {e}"))?;
        del.push(t.elapsed().as_secs_f64() * 1e3);
    }
    // The same through the `weir` binary (`weir endpoints` as a whole
    // process, on the same state).
    let cli = compile::weir_binary().map(|weir| {
        let st = state.0.display().to_string();
        cli_endpoints(
            &weir,
            &b0,
            &dir.0,
            (&with, &base),
            &[
                "--backend",
                "iptables",
                "--netns",
                topo.node.name(),
                "--state-dir",
                &st,
                "--iptables",
                plan.variant.name(),
            ],
            5,
        )
    });
    let regen_apply = |m: &Model, name: &str| -> Result<f64, String> {
        let t = Instant::now();
        let g = weir_compiler::graph::compile(m);
        let d = dir.0.join(name);
        iptables::write_bundle(m, &g.graph, &d)?;
        iptables::apply(&rt, &d)?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    let backend = regen_apply(backend_removed, "b1")?;
    let rule = regen_apply(rule_changed, "b2")?;
    let full = iptables::apply(&rt, &b0)?;
    let unchanged = iptables::apply(&rt, &b0)?;
    // No detach: deleting the namespaces frees every rule and set at
    // once (detaching large generations one `ipset destroy` at a time
    // takes minutes).
    drop(rt);
    Ok((
        vec![median(&add), median(&del), backend, rule, full, unchanged],
        cli,
    ))
}

fn sizes_table(
    rep: &mut Report,
    rules: &[Case],
    svcs: &[Case],
    headline: &Case,
    er: &[EbpfResult],
    es: &[EbpfResult],
) {
    let mut t = Table::new(
        "Program, map and rule sizes (capacity report)",
        &[
            "model",
            "graph nodes (tests / tables)",
            "max depth egress / ingress",
            "atoms / classes",
            "class-map entries",
            "table entries",
            "frontends / backends / Maglev slots",
            "eBPF programs (insns)",
            "eBPF map entries filled",
        ],
    );
    t.note("From `graph::cost::capacity` and the eBPF back end's manifest (programs are the entry program plus tail-called stages). Label sets: the models have at most 300 distinct policy-relevant label sets (deployments); the `instance` label that service selectors use never becomes an atom.".to_string());
    let none: Vec<Option<&EbpfResult>> = vec![None];
    let ebs: Vec<Option<&EbpfResult>> = er
        .iter()
        .map(Some)
        .chain(es.iter().map(Some))
        .chain(none)
        .collect();
    for (c, e) in rules
        .iter()
        .chain(svcs)
        .chain(std::iter::once(headline))
        .zip(ebs)
    {
        let cap = &c.cap;
        let depth = |name: &str| {
            cap.entries
                .iter()
                .find(|x| x.entry == name)
                .map_or("–".into(), |x| x.max_depth.to_string())
        };
        let (progs, filled) = match e {
            Some(Ok((w, _))) => (
                format!("{} ({})", w.programs, thousands(w.insns)),
                thousands(w.maps.iter().map(|m| m.2 as usize).sum()),
            ),
            _ => match c.inproc.ebpf_size {
                Some((p, i, f)) => (format!("{p} ({})", thousands(i)), thousands(f as usize)),
                None => ("refused".into(), "–".into()),
            },
        };
        t.row(vec![
            c.label.clone(),
            format!(
                "{} ({} / {})",
                thousands(cap.nodes),
                thousands(cap.tests),
                thousands(cap.tables)
            ),
            format!("{} / {}", depth("egress"), depth("ingress")),
            format!("{} / {}", thousands(cap.atoms), thousands(cap.classes)),
            thousands(cap.class_map_entries),
            thousands(cap.table_entries_total),
            format!(
                "{} / {} / {}",
                thousands(cap.frontends),
                thousands(cap.backends),
                thousands(cap.maglev_slots)
            ),
            progs,
            filled,
        ]);
    }
    rep.tables.push(t);
}
