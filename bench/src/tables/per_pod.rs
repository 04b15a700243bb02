//! One rule per pod at scale (issue 21, item 4): the per-packet figure of
//! the one-peer-per-pod model ([`weir_compiler::synth::per_pod`]: N pods,
//! N policies, each allowing TCP 80 from one other pod), which the eBPF
//! back end refused at 10,000 (E0510) before its class tables were
//! searched in groups and split across stages.
//!
//! Each size is compiled in process, loaded (verifier, maps filled) and
//! driven like the headline table ([`super::driven`]): a new allowed
//! flow (a fresh source port each repetition, so each pays its conntrack
//! insert), the same flow established, and a denied new flow (a pod that
//! is not the subject's peer), in interleaved rounds with the driven
//! floors; each cell is ns and its ratio to the parse + LPM + hash floor
//! of the same run (absolute ns drift with the machine's load).

use weir_compiler::interp::{Interp, Packet};
use weir_compiler::model::{Proto, Verdict};
use weir_compiler::synth::{endpoint_addr, per_pod};

use crate::ebpf::{self, Probe};
use crate::plan::Plan;
use crate::report::{Report, Table};
use crate::stats::{ns, ratio, thousands};
use crate::tables::driven::{self, Flow, Path};

/// The sizes (pods = rules).
fn sizes(plan: &Plan) -> Vec<usize> {
    if crate::plan::opts_quick(plan) {
        vec![1_000]
    } else {
        vec![10_000, 100_000]
    }
}

/// The flows of a model of `pods` pods: to the pod in the middle (its
/// branch deep in the class table) from its peer, and from another pod.
fn flows(pods: usize) -> Vec<Flow> {
    let model_free = |from: usize, to: usize| {
        Packet::new(
            Proto::Tcp,
            endpoint_addr(from),
            40000,
            endpoint_addr(to),
            per_pod::PORT,
        )
    };
    let subject = pods / 2;
    let peer = per_pod::peer(pods, subject);
    let other = (peer + 1) % pods;
    let mut out = Flow::pair(
        Path::NewAllowed,
        Some(Path::Established),
        model_free(peer, subject),
        Verdict::Allow,
    );
    out.extend(Flow::pair(
        Path::DeniedDeepest,
        None,
        model_free(other, subject),
        Verdict::Deny,
    ));
    out
}

/// Pushes the table.
pub(crate) fn table(rep: &mut Report, plan: &Plan, log: &dyn Fn(&str)) {
    let base = match ebpf::load_baselines(10_000) {
        Ok(b) => b,
        Err(e) => {
            rep.problems
                .push(format!("per-pod rules: eBPF baselines: {e}"));
            return;
        }
    };
    let floors = match driven::drive_floors(std::slice::from_ref(&base), plan.effort.repeat) {
        Ok(f) => f,
        Err(e) => {
            rep.problems
                .push(format!("per-pod rules: driven floors: {e}"));
            return;
        }
    };
    let fresh = crate::driver::fresh_repeat(plan.effort.repeat, plan.effort.runs);
    let mut loaded = Vec::new();
    for n in sizes(plan) {
        log(&format!("per-pod rules: compiling and loading {n}"));
        let model = per_pod::model(n);
        let graph = weir_compiler::graph::compile(&model).graph;
        let fl = flows(n);
        // The interpreter is the meaning: each flow's verdict is its.
        let interp = Interp::new(&model);
        if let Some(f) = fl
            .iter()
            .find(|f| interp.evaluate(&f.packet).verdict != f.verdict)
        {
            rep.problems.push(format!(
                "per-pod rules at {n}: the interpreter disagrees with the flow {:?}",
                f.path
            ));
            continue;
        }
        let probes: Vec<Probe> = Vec::new();
        let r =
            ebpf::load_weir(&model, &graph, &probes, 1, plan.ct_table, plan.atoms).and_then(|w| {
                let d = driven::drive(&w, fl, plan.effort.repeat, fresh)?;
                Ok((w, d))
            });
        loaded.push((n, r));
    }
    let mut subjects: Vec<&ebpf::Subject> = floors.iter().collect();
    for (_, r) in &loaded {
        if let Ok((_, d)) = r {
            subjects.extend(&d.subjects);
        }
    }
    log(&format!(
        "per-pod rules: measuring {} drivers in {} interleaved rounds",
        subjects.len(),
        plan.effort.runs
    ));
    let mut costs = ebpf::measure_interleaved(&subjects, plan.effort).into_iter();
    let floor = driven::floors(&costs.by_ref().take(floors.len()).collect::<Vec<_>>());
    let lpm = floor.as_ref().map(|f| f[2]).unwrap_or(f64::NAN);
    let mut t = Table::new(
        "eBPF, one rule per pod (one peer pod each): per packet through the test driver (ns)",
        &[
            "rules = pods",
            "programs",
            "instructions",
            "new allowed flow",
            "established",
            "new flow denied",
        ],
    );
    t.note(format!(
        "`synth::per_pod`: N pods, N policies each allowing TCP 80 from one other pod (every pod its own class; the ingress entry one class table with a branch per pod). Driven as the headline table: the new rows a fresh 5-tuple each repetition ({} per round), established {} repetitions; {} interleaved rounds, one load, with the driven floors (parse + LPM + hash: {}). Each cell: ns and its ratio to that floor; absolute figures drift with the machine's load, the ratios less.",
        thousands(fresh as usize),
        thousands(plan.effort.repeat as usize),
        plan.effort.runs,
        ns(lpm),
    ));
    for (n, r) in loaded {
        let (w, d) = match r {
            Ok(x) => x,
            Err(e) => {
                rep.problems.push(format!("per-pod rules at {n}: {e}"));
                t.row(vec![
                    thousands(n),
                    "–".into(),
                    "–".into(),
                    format!("refused: {}", crate::stats::short(&e)),
                    "–".into(),
                    "–".into(),
                ]);
                continue;
            }
        };
        let c: Vec<_> = costs.by_ref().take(d.subjects.len()).collect();
        let paths = match d.costs(&c) {
            Ok(p) => p,
            Err(e) => {
                rep.problems.push(format!("per-pod rules at {n}: {e}"));
                continue;
            }
        };
        let cell = |p: Path| -> String {
            paths
                .iter()
                .find(|x| x.0 == p)
                .map_or("–".into(), |&(_, v, ok)| {
                    if ok {
                        format!("{} ({})", ns(v), ratio(v, lpm))
                    } else {
                        "wrong verdict".into()
                    }
                })
        };
        if paths.iter().any(|x| !x.2) {
            rep.problems.push(format!(
                "per-pod rules at {n}: a verdict differs from the interpreter's"
            ));
        }
        t.row(vec![
            thousands(n),
            w.programs.to_string(),
            thousands(w.insns),
            cell(Path::NewAllowed),
            cell(Path::Established),
            cell(Path::DeniedDeepest),
        ]);
    }
    rep.tables.push(t);
}
