//! The compile table: each model's in-process compile stages and peak
//! memory, and whole `weir compile` processes on the model rendered as
//! `.weir` + JSON; the compile-time targets.

use weir_compiler::synth;

use crate::case::Case;
use crate::compile;
use crate::iptables::Scratch;
use crate::plan::Plan;
use crate::report::{Report, Table, Target, Verdict as TV};
use crate::stats::{median, ms, short, thousands};

pub(crate) fn table(
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
        "In process: `graph::compile`'s stages (lower — which builds the address classes, timed separately too —, verify, optimize, verify, analyse) then each back end's generator, one run (the headline model, whose compile is a target: the run of median total of {} run(s)); peak RSS is the bench process's `VmHWM` (reset before each model; includes the model itself). Whole process: `weir compile FILE --endpoints INVENTORY -o DIR --target ebpf` on the model rendered as `.weir` + JSON (`synth::render`): parse, check, lints, graph, eBPF back end, bundle written (the models balance with Maglev, which the iptables back end refuses with E0501, so the whole-process figure is the eBPF compile that succeeds; the in-process iptables column generates with Maglev balanced randomly); median wall time of {} run(s) (one when a run takes over 5 s), peak RSS of the `weir` process (`ru_maxrss`, read by this crate's `weir-rusage`, which forks it: a direct child of the benchmark starts from the benchmark's own high-water mark, which is what earlier versions of this table showed). The last row is `weir check PROGRAM --endpoints INVENTORY` over a generated node inventory ({} endpoints, three labels each from 1,000 deployments, one address; `compile::inventory_check`): parse, check and lints, peak RSS as above — what a node with that many endpoints needs to check its policy (issue 15: well under 1 GB for a million). {}",
        plan.cli_runs,
        plan.cli_runs,
        thousands(plan.inventory_check),
        match &weir {
            Some(p) => format!("Binary: `{}`.", p.display()),
            None => "The `weir` binary was not found (build it with `cargo build --release -p weir`), so whole-process runs are skipped.".into(),
        }
    ));
    for c in rules.iter().chain(svcs).chain(std::iter::once(headline)) {
        let ip = &c.inproc;
        let total = ip.total_ms();
        let (wall, rss) = match &weir {
            Some(bin) => {
                log(&format!("weir compile: {}", c.label));
                match cli_runs(bin, c, plan.cli_runs) {
                    Ok((w, r, note)) => {
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
    if let Some(bin) = &weir {
        log(&format!("weir check: {} endpoints", plan.inventory_check));
        t.row(inventory_row(rep, bin, plan.inventory_check));
    }
    rep.tables.push(t);
    targets(rep, headline, plan);
    if let Some(bin) = &weir {
        log("weir compile: the headline model per target");
        super::compile_targets::table(rep, headline, plan, bin);
    }
}

/// The headline model's in-process compile-time target (the whole
/// process's, per back end, are [`super::compile_targets`]'s).
fn targets(rep: &mut Report, headline: &Case, plan: &Plan) {
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
}

/// The memory row: `weir check` over a generated `n`-endpoint inventory
/// (whole process; the in-process columns do not apply).
fn inventory_row(rep: &mut Report, bin: &std::path::Path, n: usize) -> Vec<String> {
    let dir = Scratch::new("cli-inventory-check");
    let (wall, rss) = match compile::inventory_check(bin, n, &dir.0) {
        Ok(w) if w.exit == 0 => (ms(w.wall_ms), format!("{:.0}", w.peak_mib)),
        Ok(w) => {
            let e = format!("exit {}: {}", w.exit, short(&w.stderr_head));
            rep.problems
                .push(format!("weir check of {n} endpoints: {e}"));
            (format!("error ({e})"), "–".into())
        }
        Err(e) => {
            rep.problems
                .push(format!("weir check of {n} endpoints: {e}"));
            ("error".into(), "–".into())
        }
    };
    let mut row = vec![format!(
        "`weir check`, {} endpoints in an inventory (column: `weir check`)",
        thousands(n)
    )];
    row.extend(std::iter::repeat_n("–".to_string(), 6));
    row.extend([wall, rss]);
    row
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
