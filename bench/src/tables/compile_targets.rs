//! The headline compile per target (issue 21, item 6): `weir compile` of
//! the headline model as a whole process for `--target ebpf`, `iptables`
//! and `all`, each run several times — median CPU time (user + system),
//! wall time and peak RSS — and the targets of `--target all` (what
//! `weir compile` runs by default, both back ends): under 1 s wall, and
//! under 500 MB peak RSS, each a row of the Targets table.
//!
//! The headline model balances 30 % of its services with Maglev, which
//! the iptables back end refuses (E0501): the `iptables` and `all` rows
//! compile the same model with every service balanced randomly (one word
//! of the rendered source differs per Maglev service; everything else —
//! rules, endpoints, classes, graph — is the same model).
//!
//! The last row is 100,000 one-peer-per-pod rules ([`synth::per_pod`],
//! issue 21 item 4) for both targets: every pod its own class and its own
//! atom, the shape that made the class rows quadratic in memory; its
//! goal is a peak RSS under 1 GB.

use std::path::Path;

use weir_compiler::model::{Balance, Model};
use weir_compiler::synth;

use crate::case::Case;
use crate::compile::{self, Whole};
use crate::iptables::Scratch;
use crate::plan::Plan;
use crate::report::{Report, Table, Target, Verdict as TV};
use crate::stats::{median, ms, short};

/// Whole-process runs per target (more than the other rows' runs: these
/// figures are targets).
const RUNS: usize = 5;
/// The targets: wall time (ms) and peak RSS (MiB; 500 MB).
const WALL_GOAL_MS: f64 = 1000.0;
const RSS_GOAL_MIB: f64 = 500e6 / (1024.0 * 1024.0);
/// Runs of the one-peer-per-pod row (tens of seconds each at 100,000).
const PER_POD_RUNS: usize = 3;
/// The per-pod row's goal: 1 GB peak RSS.
const PER_POD_RSS_GOAL_MIB: f64 = 1e9 / (1024.0 * 1024.0);

/// `model` with every service balanced randomly.
fn random_balanced(model: &Model) -> Model {
    let mut m = model.clone();
    for s in &mut m.services {
        s.balance = Balance::Random;
    }
    m
}

/// Medians of `runs` runs of one target.
struct Runs {
    cpu_ms: f64,
    wall_ms: f64,
    wall_range: (f64, f64),
    peak_mib: f64,
    failure: Option<String>,
}

fn measure(weir: &Path, target: &str, dir: &Path, runs: usize) -> Result<Runs, String> {
    let (wf, inv) = (dir.join("synth.weir"), dir.join("inventory.json"));
    let out = dir.join(format!("out-{target}"));
    let mut all: Vec<Whole> = Vec::new();
    for _ in 0..runs.max(1) {
        all.push(compile::whole_process_for(weir, target, &wf, &inv, &out)?);
    }
    let walls: Vec<f64> = all.iter().map(|w| w.wall_ms).collect();
    let cpus: Vec<f64> = all.iter().map(|w| w.cpu_ms).collect();
    Ok(Runs {
        cpu_ms: median(&cpus),
        wall_ms: median(&walls),
        wall_range: (
            walls.iter().copied().fold(f64::INFINITY, f64::min),
            walls.iter().copied().fold(0.0, f64::max),
        ),
        peak_mib: median(&all.iter().map(|w| w.peak_mib).collect::<Vec<_>>()),
        failure: all
            .iter()
            .find(|w| w.exit != 0)
            .map(|w| format!("exit {}: {}", w.exit, short(&w.stderr_head))),
    })
}

pub(crate) fn table(rep: &mut Report, headline: &Case, plan: &Plan, weir: &Path) {
    let mut t = Table::new(
        "Headline `weir compile` per target (issue 21)",
        &[
            "`--target`",
            "model",
            "CPU, user + system (ms)",
            "wall (ms), median (min–max)",
            "peak RSS (MiB)",
        ],
    );
    t.note(format!(
        "`weir compile synth.weir --endpoints inventory.json --target T -o DIR` on {}, {RUNS} runs per target, medians (peak RSS too); CPU time and peak RSS of the `weir` process from `wait4`'s rusage (`weir-rusage`). Wall time includes waiting for a core: on a shared 2-core machine CPU time is the steadier figure (the back ends and the manifest run on three threads, so wall time on an idle machine is below CPU time). The `iptables` and `all` rows compile the headline model with every service balanced randomly (the iptables back end refuses Maglev, E0501; the rest of the model is the same).",
        headline.label
    ));
    let big = plan.headline.services >= 10_000;
    let as_is = Scratch::new("cli-headline-ebpf");
    let random = Scratch::new("cli-headline-random");
    let write = |m: &Model, dir: &Path| -> std::io::Result<()> {
        let r = synth::render(m);
        std::fs::write(dir.join("synth.weir"), &r.weir)?;
        std::fs::write(dir.join("inventory.json"), &r.inventory)
    };
    if let Err(e) = write(&headline.model, &as_is.0)
        .and_then(|()| write(&random_balanced(&headline.model), &random.0))
    {
        rep.problems.push(format!(
            "headline compile per target: writing the model: {e}"
        ));
        return;
    }
    for (target, dir, model) in [
        ("ebpf", &as_is, "as generated (30 % Maglev)"),
        ("iptables", &random, "every service random"),
        ("all", &random, "every service random"),
    ] {
        let r = match measure(weir, target, &dir.0, RUNS) {
            Ok(r) => r,
            Err(e) => {
                rep.problems
                    .push(format!("weir compile --target {target}: {e}"));
                continue;
            }
        };
        if let Some(f) = &r.failure {
            rep.problems.push(format!(
                "weir compile --target {target} of the headline: {f}"
            ));
        }
        t.row(vec![
            format!("`{target}`"),
            model.into(),
            ms(r.cpu_ms),
            format!(
                "{} ({}–{})",
                ms(r.wall_ms),
                ms(r.wall_range.0),
                ms(r.wall_range.1)
            ),
            format!("{:.0}", r.peak_mib),
        ]);
        if target == USER_TARGET {
            user_targets(rep, headline, &r, big);
        }
    }
    per_pod_row(rep, &mut t, big, weir);
    rep.tables.push(t);
}

/// The target whose figures are the headline's targets: `all`, what
/// `weir compile` runs when no `--target` is given (its default) and the
/// most work (both back ends, both sets of files in the bundle). The
/// `ebpf` and `iptables` rows of the table show each back end alone.
const USER_TARGET: &str = "all";

/// The headline's two whole-process targets for [`USER_TARGET`]: wall
/// time (CPU time beside it, the steadier figure on a shared machine)
/// under 1 s, and peak RSS under 500 MB.
fn user_targets(rep: &mut Report, headline: &Case, r: &Runs, big: bool) {
    let verdict = |ok: bool| {
        if big {
            TV::from(Some(r.failure.is_none() && ok))
        } else {
            TV::NotMeasured
        }
    };
    let name = |what: &str| {
        format!(
            "compile {} (`weir compile --target {USER_TARGET}`, whole process): {what}",
            headline.label
        )
    };
    rep.targets.push(Target {
        name: name("wall time"),
        goal: "< 1 s".into(),
        measured: format!(
            "{} ms wall, median of {RUNS} ({} ms CPU)",
            ms(r.wall_ms),
            ms(r.cpu_ms)
        ),
        verdict: verdict(r.wall_ms < WALL_GOAL_MS),
    });
    rep.targets.push(Target {
        name: name("peak RSS"),
        goal: "< 500 MB".into(),
        measured: format!("{:.0} MiB ({:.0} MB)", r.peak_mib, r.peak_mib * 1.048576),
        verdict: verdict(r.peak_mib < RSS_GOAL_MIB),
    });
}

/// One rule per pod (issue 21, item 4): 100,000 one-peer rules
/// ([`synth::per_pod`]) compiled for both targets, its peak RSS against
/// 1 GB (1,000 pods in a quick run).
fn per_pod_row(rep: &mut Report, t: &mut Table, big: bool, weir: &Path) {
    let pods = if big { 100_000 } else { 1_000 };
    let dir = Scratch::new("cli-per-pod");
    let r = synth::render(&synth::per_pod::model(pods));
    if let Err(e) = std::fs::write(dir.0.join("synth.weir"), &r.weir)
        .and_then(|()| std::fs::write(dir.0.join("inventory.json"), &r.inventory))
    {
        rep.problems
            .push(format!("per-pod compile: writing the model: {e}"));
        return;
    }
    let r = match measure(weir, "all", &dir.0, PER_POD_RUNS) {
        Ok(r) => r,
        Err(e) => {
            rep.problems.push(format!("per-pod compile: {e}"));
            return;
        }
    };
    if let Some(f) = &r.failure {
        rep.problems.push(format!(
            "weir compile --target all of {pods} per-pod rules: {f}"
        ));
    }
    t.row(vec![
        "`all`".into(),
        format!("{} one-peer-per-pod rules", crate::stats::thousands(pods)),
        ms(r.cpu_ms),
        format!(
            "{} ({}–{})",
            ms(r.wall_ms),
            ms(r.wall_range.0),
            ms(r.wall_range.1)
        ),
        format!("{:.0}", r.peak_mib),
    ]);
    rep.targets.push(Target {
        name: format!(
            "compile {} one-peer-per-pod rules (`weir compile --target all`, whole process)",
            crate::stats::thousands(pods)
        ),
        goal: "< 1 GB peak RSS".into(),
        measured: format!("{} ms CPU, {:.0} MiB", ms(r.cpu_ms), r.peak_mib),
        verdict: if big {
            TV::from(Some(
                r.failure.is_none() && r.peak_mib < PER_POD_RSS_GOAL_MIB,
            ))
        } else {
            TV::NotMeasured
        },
    });
}
