//! The iptables apply table (issue 21, item 5): how long `weir apply
//! --target iptables` takes at 10 to 100,000 rules, first into an empty
//! namespace, then replacing that generation with a different program,
//! then with the first program less one policy (the common update, where
//! unchanged sets are kept), split into the runtime's phases ([`weir_runtime::iptables::Phases`]),
//! beside the compile time of the same model. One run each: an apply is
//! seconds, not nanoseconds, and the phases say where a slow one went.

use std::time::Instant;

use weir_compiler::synth;
use weir_runtime::iptables::Variant;

use crate::case::Case;
use crate::compile::{run_measured, weir_binary, Whole};
use crate::iptables::{self, Scratch};
use crate::plan::Plan;
use crate::report::{Report, Table, Target, Verdict as TV};
use crate::stats::{ms, short, thousands};

/// The phases shown, in the runtime's names, and their column titles.
const PHASES: [(&str, &str); 8] = [
    ("kernel state", "kernel state (saves at the start)"),
    ("keep chains", "keep chains"),
    ("ipset restore", "ipset restore"),
    ("iptables-restore", "iptables-restore (both families)"),
    ("read-back: save", "read-back: save"),
    ("read-back: compare", "read-back: compare"),
    ("remove old generation", "remove old generation"),
    ("", "other (plan, records)"),
];

/// The apply target's size.
const TARGET_RULES: usize = 100_000;
const TARGET_MS: f64 = 5_000.0;

pub(crate) fn table(rep: &mut Report, rules: &[Case], plan: &Plan, log: &dyn Fn(&str)) {
    let mut header = vec![
        "rules",
        "rules / chains / sets (entries) per family",
        "compile (ms)",
        "apply (ms): first / one policy removed / replace",
        "`weir apply`, whole process (ms): first / one policy removed / replace",
        "whole process: CPU (ms) / peak RSS (MiB), replace",
        "CPU (ms): tools / weir, first; one policy removed; replace",
        "sets / chains kept: one policy removed; replace",
    ];
    header.extend(PHASES.iter().map(|(_, t)| *t));
    let mut t = Table::new(
        "iptables apply by rules (ms; first apply / one policy removed / replacing generation)",
        &header,
    );
    t.note("Wall time of the runtime's apply (`Iptables::apply`, what `weir apply --target iptables` runs, driving `iptables-legacy`, or `iptables-nft` with `--iptables nft`) of the rules sweep's bundle into a fresh namespace (first), then of the same model with its last policy removed (one policy removed: the common update; the sets whose members are unchanged and the chains whose content is unchanged are kept from the generation in force, `runtime/src/iptables/reuse.rs` and `keep.rs`), then of the bundle of the same sweep size drawn with the next seed (replace: a different program, so most sets and chains are new). `weir apply`, whole process: the same three applies by the `weir` binary (`weir apply --netns NODE --iptables VARIANT --state-dir DIR BUNDLE`, under this crate's `weir-rusage` for its CPU time and peak RSS) into a second, fresh set of namespaces: what a person or CI waits for, with the bundle's read and parse, the process's start and exit, and the CLI's allocator settings (during `weir apply` mimalloc never gives freed memory back, `cli/src/alloc.rs`); the target is judged on it. Compile: `graph::compile` plus the iptables generator, in process (the model of the first apply; the compile table's stages). Phases from the runtime's `ApplyReport::phases`, each cell `first / one policy removed / replace`: `ipset restore` (step 1: written to the kernel directly over netlink, `runtime/src/iptables/xt/ipset_load.rs`, one create and one many-member add per set, in batches of 256 sets, most-referenced first, over two concurrent workers, a batch it does not parse going to `ipset restore -exist`; only the sets not kept; on a replace it starts once the starting saves are done (beside `iptables-save` it would serialise with the save's set-name lookups on the kernel's ipset mutex) and runs beside the keep phase, `runtime/src/iptables/apply/start.rs`; on a first apply it runs beside the making, parsing and encoding of step 2's restores, on a replace those follow the keep phase while it still runs: the cell is the wait it adds after them), `iptables-restore` (one run per family: load then switch, and with the legacy tools the old generation's chains removed in the same COMMIT, `fold.rs`; with the legacy tools both families' COMMIT blocks are written to x_tables directly, one `IPT_SO_SET_REPLACE` each, `runtime/src/iptables/xt`, those it does not write by the tool, unless `WEIR_XTABLES=tools`; the cell includes step 2's preparation beside step 1, `xt/pre.rs`: its rules are encoded before their sets exist and the sets' indexes written after, and then, still beside step 1, the read of every table step 2 writes under the xtables lock, held to the last replace, `xt/ahead.rs`), read-back (both families' rules read from the kernel directly with the legacy tools, `xt/saved.rs`, printed as `iptables-save` prints them, or by `iptables-save` with the nf_tables ones, and the sets with one netlink dump printed as `ipset save` prints them, `xt/ipset_save.rs` (`ipset save` with `WEIR_XTABLES=tools`), concurrently; then the comparison in process), removal of the old generation (with the legacy tools its sets only, destroyed over netlink, one `IPSET_CMD_DESTROY` per set, `xt/ipset_load.rs`; with the nf_tables tools also one restore per family), kernel state (the saves an apply starts from: both families' rules (read directly with the legacy tools) and the sets in force (one netlink dump, as the read-back's) to find those to keep; the bundle is read, the old generation's record and chain keys computed and the sets to keep found beside them), keep chains (the content keys of the new generation's chains and the kernel check of each kept one, `keep.rs`), other (the bundle's checks and renaming, the state records). The rules model has no IPv6 address, so its IPv6 side is the class-0 ruleset (a few chains, no set; `ipv6_class0`): both families are applied, the rules / chains column is IPv4's, the sets are all IPv4 sets. One run per size. CPU: user + system time of the tools the apply ran (`getrusage(RUSAGE_CHILDREN)` before and after) and of the benchmark process itself (`RUSAGE_SELF`: the plan, the read-back comparison, threads included); on a loaded shared machine wall time is mostly waiting for a core, and CPU time is the steadier figure.");
    let mut top: Option<([f64; 3], [f64; 3])> = None;
    for c in rules {
        log(&format!("iptables apply: {}", c.label));
        match case(c, plan) {
            Ok((row, walls, whole)) => {
                if c.params.total_rules() >= TARGET_RULES {
                    top = Some((whole, walls));
                }
                t.row(row);
            }
            Err(e) => {
                t.row(vec![
                    thousands(c.params.total_rules()),
                    format!("error: {}", short(&e)),
                ]);
                rep.problems
                    .push(format!("iptables apply {}: {e}", c.label));
            }
        }
    }
    rep.tables.push(t);
    rep.targets.push(Target {
        name: target_name(),
        goal: format!("< {} s each", TARGET_MS / 1e3),
        measured: top.map_or("not run".into(), |(m, inproc)| {
            format!(
                "`weir apply` {} / {} ms (one policy removed: {} ms); in process {} / {} ms",
                ms(m[0]),
                ms(m[1]),
                ms(m[2]),
                ms(inproc[0]),
                ms(inproc[1])
            )
        }),
        verdict: match top {
            Some((m, _)) => TV::from(Some(m[0] < TARGET_MS && m[1] < TARGET_MS)),
            None => TV::NotMeasured,
        },
    });
}

fn target_name() -> String {
    format!(
        "iptables: apply {} rules, first / replace (both families)",
        thousands(TARGET_RULES)
    )
}

/// The target, marked not measured.
pub(crate) fn not_run(rep: &mut Report) {
    rep.targets.push(Target {
        name: target_name(),
        goal: format!("< {} s each", TARGET_MS / 1e3),
        measured: "not run".into(),
        verdict: TV::NotMeasured,
    });
}

/// The first model with its last policy removed.
fn one_policy_removed(c: &Case) -> weir_compiler::model::Model {
    let mut m = c.model.clone();
    m.policies.pop();
    m
}

/// Walls of the in-process applies and of `weir apply`'s, each `[first,
/// replace, one policy removed]`.
type Walls = [f64; 3];

fn case(c: &Case, plan: &Plan) -> Result<(Vec<String>, Walls, Walls), String> {
    let total = c.params.total_rules();
    let dir = Scratch::new(&format!("apply-{total}"));
    let stats = iptables::write_bundle(&c.model, &c.compiled.graph, &dir.0.join("first"))?;
    for (name, next) in [
        (
            "replace",
            synth::model(&plan.rules_params(total, c.params.seed + 1)),
        ),
        ("edit", one_policy_removed(c)),
    ] {
        let g = weir_compiler::graph::compile(&next);
        iptables::write_bundle(&next, &g.graph, &dir.0.join(name))?;
    }
    let topo = weir_runtime::netns::Topology::new().map_err(|e| format!("netns: {e}"))?;
    let rt = iptables::runtime(&topo, &dir.0.join("state"), plan.variant);
    let mut runs = Vec::new();
    let mut cpu = Vec::new();
    let mut kept = Vec::new();
    for b in ["first", "edit", "replace"] {
        let bundle = weir_runtime::Bundle::read(dir.0.join(b)).map_err(|e| format!("{b}: {e}"))?;
        let (tools0, self0) = (cpu_ms(libc::RUSAGE_CHILDREN), cpu_ms(libc::RUSAGE_SELF));
        let t = Instant::now();
        let r = rt.apply(&bundle).map_err(|e| format!("{b}: {e}"))?;
        let wall = t.elapsed().as_secs_f64() * 1e3;
        cpu.push((
            cpu_ms(libc::RUSAGE_CHILDREN) - tools0,
            cpu_ms(libc::RUSAGE_SELF) - self0,
        ));
        if !r.warnings.is_empty() {
            return Err(format!("{b}: {}", r.warnings.join("; ")));
        }
        kept.push((r.kept_sets, r.kept_chains));
        runs.push((wall, r.phases));
    }
    // No detach: deleting the namespaces frees every rule and set at once.
    drop(rt);
    drop(topo);
    let whole = whole_process(&dir.0, plan)?;
    let each = |f: &dyn Fn(&(f64, weir_runtime::iptables::Phases)) -> f64| {
        runs.iter()
            .map(|r| ms(f(r)))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let msf = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let mut row = vec![
        thousands(total),
        format!(
            "{} / {} / {} ({})",
            thousands(stats.rules),
            thousands(stats.chains),
            thousands(stats.sets),
            thousands(stats.set_entries)
        ),
        ms(c.inproc.graph_ms + stats.gen_ms),
        each(&|r| r.0),
        whole
            .iter()
            .map(|w| ms(w.wall_ms))
            .collect::<Vec<_>>()
            .join(" / "),
        format!("{} / {:.0}", ms(whole[2].cpu_ms), whole[2].peak_mib),
        cpu.iter()
            .map(|(tools, me)| format!("{} / {}", ms(*tools), ms(*me)))
            .collect::<Vec<_>>()
            .join("; "),
        format!(
            "{} / {}; {} / {}",
            thousands(kept[1].0),
            thousands(kept[1].1),
            thousands(kept[2].0),
            thousands(kept[2].1)
        ),
    ];
    for (name, _) in PHASES {
        row.push(if name.is_empty() {
            each(&|r| {
                let shown: f64 = PHASES
                    .iter()
                    .filter(|(n, _)| !n.is_empty())
                    .map(|(n, _)| msf(r.1.get(n)))
                    .sum();
                r.0 - shown
            })
        } else {
            each(&|r| msf(r.1.get(name)))
        });
    }
    Ok((
        row,
        [runs[0].0, runs[2].0, runs[1].0],
        [whole[0].wall_ms, whole[2].wall_ms, whole[1].wall_ms],
    ))
}

/// The same three applies (`first`, `edit`, `replace` under `dir`) by
/// the `weir` binary, each a whole process (`weir apply --netns NODE
/// --iptables VARIANT --state-dir DIR BUNDLE`) into a fresh topology:
/// what a person or CI runs, with its own allocator settings, the
/// bundle's read and parse and the process's start and exit — which the
/// in-process column leaves out.
fn whole_process(dir: &std::path::Path, plan: &Plan) -> Result<Vec<Whole>, String> {
    use std::ffi::OsStr;
    let weir = weir_binary().ok_or("no `weir` binary beside the benchmark")?;
    let topo = weir_runtime::netns::Topology::new().map_err(|e| format!("netns: {e}"))?;
    let variant = match plan.variant {
        Variant::System => "system",
        Variant::Legacy => "legacy",
        Variant::Nft => "nft",
    };
    let state = dir.join("state-cli");
    let mut out = Vec::new();
    for b in ["first", "edit", "replace"] {
        let bundle = dir.join(b);
        let args: [&OsStr; 8] = [
            OsStr::new("apply"),
            OsStr::new("--netns"),
            OsStr::new(topo.node.name()),
            OsStr::new("--iptables"),
            OsStr::new(variant),
            OsStr::new("--state-dir"),
            state.as_os_str(),
            bundle.as_os_str(),
        ];
        let w = run_measured(&weir, &args)?;
        if w.exit != 0 {
            return Err(format!(
                "weir apply {b}: exit {}: {}",
                w.exit, w.stderr_head
            ));
        }
        out.push(w);
    }
    Ok(out)
}

/// User + system CPU time of `who` (`RUSAGE_SELF`, `RUSAGE_CHILDREN`)
/// so far, in ms.
fn cpu_ms(who: libc::c_int) -> f64 {
    // SAFETY: rusage is plain integers (all-zero is valid); getrusage
    // only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrusage(who, &mut u) } != 0 {
        return 0.0;
    }
    let t = |v: libc::timeval| v.tv_sec as f64 * 1e3 + v.tv_usec as f64 / 1e3;
    t(u.ru_utime) + t(u.ru_stime)
}
