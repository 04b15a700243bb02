//! The update-latency table: endpoint churn through the runtime's
//! endpoint path (in process and as whole `weir endpoints` processes),
//! regenerated generations and re-applies, for both back ends.

use std::time::Instant;

use weir_compiler::churn::{self, EndpointRec};
use weir_compiler::model::{Model, PortRange, Proto, ProtoMatch};

use crate::case::Case;
use crate::compile;
use crate::ebpf;
use crate::iptables::{self, Scratch};
use crate::plan::{opts_quick, Plan};
use crate::report::{Report, Table, Target, Verdict as TV};
use crate::stats::{median, ms, short};

/// One back end's figure for a row, or why it is missing.
type Figure = Result<f64, String>;

/// Whole-process `weir endpoints` add / remove (`None`: no `weir` binary).
type CliFigures = Option<Result<(f64, f64), String>>;

/// One back end's column: endpoint add, remove, backend removed, rule
/// changed, full re-apply, unchanged re-apply; and the whole-process pair.
struct Column {
    rows: [Figure; 6],
    cli: CliFigures,
}

impl Column {
    fn failed(e: &str) -> Column {
        Column {
            rows: std::array::from_fn(|_| Err(e.to_string())),
            cli: None,
        }
    }
}

/// The model variants that need a new generation: a backend endpoint
/// becomes not ready; one rule's port changes.
struct Changed {
    backend_removed: Model,
    rule_changed: Model,
}

impl Changed {
    fn of(model: &Model) -> Changed {
        let mut backend_removed = model.clone();
        if let Some(e) = backend_removed.endpoints.iter_mut().find(|e| e.ready) {
            e.ready = false;
        }
        let mut rule_changed = model.clone();
        if let Some(r) = rule_changed
            .policies
            .iter_mut()
            .filter_map(|p| p.ingress.as_mut())
            .flat_map(|rs| rs.iter_mut())
            .find(|r| matches!(r.proto, ProtoMatch::Ports { .. }))
        {
            r.proto = ProtoMatch::Ports {
                proto: Proto::Tcp,
                ports: vec![PortRange { lo: 7777, hi: 7777 }],
            };
        }
        Changed {
            backend_removed,
            rule_changed,
        }
    }
}

const NOTE: &str = "Median of 5 for endpoint changes, one run for the rest. Endpoint add/remove: wall time of the runtime's endpoint path (`weir_runtime::endpoints::ebpf_text` / `endpoints::iptables_text`, what `weir endpoints` runs, called in process; iptables given the bundle read beforehand) given the text of the full inventory file with one endpoint more (labels of an existing endpoint without its `instance` label, at a fresh address of an existing class), then without it: state and recorded inventory read, the inventory compared with the recorded one (only endpoints whose text changed are parsed), churn plan, the writes (eBPF: class-map host entries in the pinned maps of a generation applied with `ebpf::apply` to a netns interface; iptables: the sets whose members change rebuilt beside the live ones, swapped in and read back: four `ipset restore` runs), the new inventory recorded (state under /dev/shm, tmpfs like `/run`). Whole `weir endpoints` process: the release `weir` binary run with the inventory file, as a user runs it (process start, the bundle recognised by its files' identities, the update, the report printed; eBPF on a generation applied with `weir apply`). Backend removed / rule changed: the model changes (a backend endpoint becomes not ready / one rule's port changes), so the graph and back end are regenerated and a new generation is applied (eBPF: codegen + load: verifier, maps, prog array; iptables: generate + `Iptables::apply`); except iptables' backend removed, which is the endpoint path with the backend not ready (median of 5; its service's frontend chains rewritten in one `iptables-restore --noflush` and read back with `iptables-save`). Full re-apply: the whole generation again (eBPF: load; iptables: apply of a changed bundle).";

/// Measures the update latencies on the services case of
/// `plan.update_services` services and pushes the table and its targets.
pub(crate) fn table(
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
    t.note(NOTE.to_string());
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
    let changed = Changed::of(&c.model);
    let eb = ebpf_column(c, &changed);
    let ip = if ipt_ok {
        iptables_updates(c, plan, &changed.backend_removed, &changed.rule_changed)
            .map(|(rows, cli)| Column {
                rows: rows.map(Ok),
                cli,
            })
            .unwrap_or_else(|e| {
                rep.problems.push(format!("iptables updates: {e}"));
                Column::failed(&e)
            })
    } else {
        Column::failed("iptables not available")
    };
    if let Err(e) = &eb.rows[0] {
        rep.problems.push(format!("eBPF updates: {e}"));
    }
    for (what, col) in [("eBPF", &eb), ("iptables", &ip)] {
        if let Some(Err(e)) = &col.cli {
            rep.problems.push(format!("{what} `weir endpoints`: {e}"));
        }
    }
    rows(&mut t, &eb, &ip);
    rep.tables.push(t);
    targets(rep, plan, &eb, &ip);
}

/// The eBPF column: endpoint churn and a full load on the case's graph,
/// then each changed model regenerated and loaded.
fn ebpf_column(c: &Case, changed: &Changed) -> Column {
    let regen = |m: &Model| -> Figure {
        let t0 = Instant::now();
        let g = weir_compiler::graph::compile(m);
        ebpf::updates(m, &g.graph, 0).map(|_| t0.elapsed().as_secs_f64() * 1e3)
    };
    match ebpf::updates(&c.model, &c.compiled.graph, 5) {
        Ok(u) => Column {
            rows: [
                Ok(u.endpoint_add_ms),
                Ok(u.endpoint_remove_ms),
                regen(&changed.backend_removed),
                regen(&changed.rule_changed),
                Ok(u.full_load_ms),
                Err("–".into()),
            ],
            cli: u.cli,
        },
        Err(e) => {
            let mut col = Column::failed(&e);
            col.rows[2] = regen(&changed.backend_removed);
            col.rows[3] = regen(&changed.rule_changed);
            col
        }
    }
}

fn rows(t: &mut Table, eb: &Column, ip: &Column) {
    let f = |r: &Figure| match r {
        Ok(v) => ms(*v),
        Err(e) if e == "–" => "–".into(),
        Err(e) => format!("error: {}", short(e)),
    };
    let cli = |r: &CliFigures| -> [String; 2] {
        match r {
            Some(Ok((a, d))) => [ms(*a), ms(*d)],
            Some(Err(e)) => {
                let e = format!("error: {}", short(e));
                [e.clone(), e]
            }
            None => ["not measured (no `weir` binary)".into(), "–".into()],
        }
    };
    let [ce_add, ce_del] = cli(&eb.cli);
    let [ci_add, ci_del] = cli(&ip.cli);
    let measured = |i: usize, what: &str, how: &str| {
        vec![what.into(), f(&eb.rows[i]), f(&ip.rows[i]), how.into()]
    };
    t.row(measured(0, "one endpoint added", "incremental"));
    t.row(measured(1, "one endpoint removed", "incremental"));
    let whole = "incremental; process start and bundle check included";
    t.row(vec![
        "one endpoint added, whole `weir endpoints` process".into(),
        ce_add,
        ci_add,
        whole.into(),
    ]);
    t.row(vec![
        "one endpoint removed, whole `weir endpoints` process".into(),
        ce_del,
        ci_del,
        whole.into(),
    ]);
    let regen = "regenerate + new generation";
    t.row(measured(
        2,
        "one backend removed",
        "eBPF: regenerate + new generation; iptables: incremental (the service's chains rewritten in place)",
    ));
    t.row(measured(3, "one rule changed", regen));
    t.row(measured(
        4,
        "full re-apply",
        "new generation (eBPF: load only)",
    ));
    t.row(measured(
        5,
        "re-apply, unchanged bundle",
        "runtime sees the same content hash",
    ));
}

/// The endpoint add/remove targets: the worse of add and remove.
fn targets(rep: &mut Report, plan: &Plan, eb: &Column, ip: &Column) {
    let claim = !plan.rules.is_empty() && !opts_quick(plan);
    for (name, col, goal) in [
        ("eBPF: endpoint add/remove", eb, 5.0),
        ("iptables: endpoint add/remove", ip, 50.0),
    ] {
        let worst = match (&col.rows[0], &col.rows[1]) {
            (Ok(a), Ok(d)) => Some(a.max(*d)),
            _ => None,
        };
        rep.targets.push(Target {
            name: name.into(),
            goal: format!("< {goal} ms"),
            measured: worst.map_or("failed".into(), |v| {
                format!("{} ms (worst of add, remove)", ms(v))
            }),
            verdict: match worst {
                Some(v) if claim => TV::from(Some(v < goal)),
                Some(_) => TV::NotMeasured,
                None => TV::Missed,
            },
        });
    }
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
        let mut trimmed = (*e.labels).clone();
        trimmed.remove("instance");
        for labels in [trimmed, (*e.labels).clone()] {
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
fn iptables_updates(
    c: &Case,
    plan: &Plan,
    backend_removed: &Model,
    rule_changed: &Model,
) -> Result<([f64; 6], CliFigures), String> {
    let topo = weir_runtime::netns::Topology::new().map_err(|e| format!("netns: {e}"))?;
    let dir = Scratch::new("updates");
    let b0 = dir.0.join("b0");
    let stats = iptables::write_bundle(&c.model, &c.compiled.graph, &b0)?;
    let state = Scratch::shm("updates-state");
    let rt = iptables::runtime(&topo, &state.0, plan.variant);
    iptables::apply(&rt, &b0)?;
    // One endpoint added and removed again through the runtime's endpoint
    // path (`weir endpoints`, given the inventory file's text): the
    // inventory compared with the recorded one, churn plan, the changed
    // sets rebuilt, swapped in and read back.
    let _ = &stats;
    let bundle = weir_runtime::Bundle::read(&b0).map_err(|e| e.to_string())?;
    let (base, extra) = churn_inventory(&c.model, &bundle.manifest)?;
    let mut with = base.clone();
    with.push(extra);
    let with = weir_compiler::churn::inventory_text(&with);
    let base_recs = base.clone();
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
    let backend = backend_not_ready(&rt, &bundle, &base_recs, c, backend_removed)?;
    let rule = regen_apply(rule_changed, "b2")?;
    let full = iptables::apply(&rt, &b0)?;
    let unchanged = iptables::apply(&rt, &b0)?;
    // No detach: deleting the namespaces frees every rule and set at
    // once (detaching large generations one `ipset destroy` at a time
    // takes minutes).
    drop(rt);
    Ok((
        [median(&add), median(&del), backend, rule, full, unchanged],
        cli,
    ))
}

/// iptables "one backend removed" (ms, median of 5): the backend endpoint
/// `backend_removed` makes not ready, through the endpoint path (`weir
/// endpoints`: its service's frontend chains rewritten in place, read
/// back), then ready again; the update must be made in place.
fn backend_not_ready(
    rt: &weir_runtime::iptables::Iptables,
    bundle: &weir_runtime::Bundle,
    base: &[EndpointRec],
    c: &Case,
    backend_removed: &Model,
) -> Result<f64, String> {
    let name = backend_removed
        .endpoints
        .iter()
        .zip(&c.model.endpoints)
        .find(|(a, b)| a.ready != b.ready)
        .map(|(a, _)| a.name.clone())
        .ok_or("no backend made not ready")?;
    let mut off = base.to_vec();
    off.iter_mut()
        .filter(|e| e.name == name)
        .for_each(|e| e.ready = false);
    let off = weir_compiler::churn::inventory_text(&off);
    let on = weir_compiler::churn::inventory_text(base);
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let r = weir_runtime::endpoints::iptables_text(rt, bundle, &off)
            .map_err(|e| format!("backend not ready: {e}"))?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        if r.services.len() != 1 || !r.needs_recompile.is_empty() {
            return Err(format!(
                "backend not ready: not updated in place ({:?})",
                r.needs_recompile
            ));
        }
        weir_runtime::endpoints::iptables_text(rt, bundle, &on)
            .map_err(|e| format!("backend ready again: {e}"))?;
    }
    Ok(median(&times))
}
