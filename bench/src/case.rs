//! One synthetic model with everything measured on it in process: the
//! model, its compiled graph, its capacity report and in-process compile
//! figures. Every table reads cases; none builds its own models.

use weir_compiler::graph::cost::{capacity, Capacity};
use weir_compiler::graph::Compiled;
use weir_compiler::model::Model;
use weir_compiler::synth::{self, Params};

use crate::compile;
use crate::plan::{Opts, Plan};

/// One synthetic model with everything measured on it.
pub(crate) struct Case {
    pub(crate) label: String,
    pub(crate) params: Params,
    pub(crate) model: Model,
    pub(crate) compiled: Compiled,
    pub(crate) cap: Capacity,
    pub(crate) inproc: compile::InProcess,
}

/// Writes the headline model of `opts` as `synth.weir` and
/// `inventory.json` into `dir` (what the whole-process compile row runs).
pub fn render_headline(opts: &Opts, dir: &std::path::Path) -> std::io::Result<()> {
    let plan = Plan::new(opts.quick, opts.seed);
    let params = match (opts.render_rules, opts.render_services) {
        (_, Some(n)) => plan.services_params(n, opts.seed),
        (Some(n), None) => plan.rules_params(n, opts.seed),
        (None, None) => plan.headline,
    };
    let r = synth::render(&synth::model(&params));
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("synth.weir"), &r.weir)?;
    std::fs::write(dir.join("inventory.json"), &r.inventory)
}

/// Writes the one-peer-per-pod model of `pods` pods
/// ([`synth::per_pod`]) as `synth.weir` and `inventory.json` into `dir`,
/// to profile `weir compile` on it by hand.
pub fn render_per_pod(pods: usize, dir: &std::path::Path) -> std::io::Result<()> {
    let r = synth::render(&synth::per_pod::model(pods));
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("synth.weir"), &r.weir)?;
    std::fs::write(dir.join("inventory.json"), &r.inventory)
}

pub(crate) fn build_case(label: String, params: Params, log: &dyn Fn(&str)) -> Case {
    build_case_runs(label, params, 1, log)
}

/// [`build_case`] with the model compiled in process `runs` times: the
/// figures of the run whose in-process total is the median, so one slow
/// run on a shared machine does not become the table's figure (the
/// headline model's compile is a target). Each run's graph is dropped
/// before the next run starts, so no run's peak RSS holds another's; the
/// last run's graph is the case's (the compile is deterministic).
pub(crate) fn build_case_runs(
    label: String,
    params: Params,
    runs: usize,
    log: &dyn Fn(&str),
) -> Case {
    log(&format!("{label}: generating and compiling"));
    let model = synth::model(&params);
    let mut figures = Vec::new();
    let mut compiled = None;
    for _ in 0..runs.max(1) {
        drop(compiled.take());
        let (ip, c) = compile::in_process(&model);
        figures.push(ip);
        compiled = Some(c);
    }
    let compiled = compiled.expect("at least one run");
    figures.sort_by(|a, b| a.total_ms().total_cmp(&b.total_ms()));
    let inproc = figures.swap_remove(figures.len() / 2);
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
