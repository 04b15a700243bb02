//! `new-flow-loop N SECONDS [lru|hash] [v4|v6|deny|est|svc|svcdeny|svcest]
//! [auto|dense|sparse]` (the last: where the atom bits go, `--atoms`):
//! runs the driven new allowed flow of the rules sweep's model at N rules
//! (or its IPv6 twin, the denied-after-all-rules flow, or the established
//! flow; or, with `svc*`, the headline's new flow to a service, the denied
//! flow to a frontend port and the established service flow of the
//! services sweep's model at N services, built as `tables::ebpf` builds
//! them) in
//! BPF_PROG_TEST_RUN batches of 60,000 fresh 5-tuples for SECONDS, emptying
//! `weir_ct` / `weir_ct4` between batches (outside the test run) so every repetition
//! stays a new flow; prints the median ns per packet over batches. For
//! profiling one path by hand (issue 21: `perf record -e cpu-clock -g --
//! new-flow-loop 10000 12`, then keep the samples under
//! `bpf_prog_test_run`); not a benchmark table (no floors, no claims).
use std::process::ExitCode;
use std::time::Instant;

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use weir_bench::{driver, ebpf, flows, Plan};
use weir_compiler::ebpf::layout;
use weir_compiler::ebpf::state_tables::CtTable;
use weir_compiler::interp::Packet;
use weir_compiler::model::{Model, Proto, Verdict};
use weir_runtime::ebpf::load::{delete_raw, keys_raw};

/// Fresh flows per test run (below the driver's distinct ports).
const BATCH: u32 = 60_000;

fn main() -> ExitCode {
    match run(&std::env::args().skip(1).collect::<Vec<_>>()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("new-flow-loop: {e}");
            eprintln!(
                "usage: new-flow-loop N SECONDS [lru|hash] [v4|v6|deny|est|svc|svcdeny|svcest] [auto|dense|sparse]"
            );
            ExitCode::FAILURE
        }
    }
}

fn run(a: &[String]) -> Result<(), String> {
    let arg = |i: usize| a.get(i).map(String::as_str);
    let n: usize = arg(0)
        .and_then(|s| s.parse().ok())
        .ok_or("N: a number of rules")?;
    let secs: f64 = arg(1)
        .and_then(|s| s.parse().ok())
        .ok_or("SECONDS: a number")?;
    let kind = match arg(2) {
        None | Some("lru") => CtTable::Lru,
        Some("hash") => CtTable::Hash,
        Some(k) => return Err(format!("table kind {k}")),
    };
    let what = arg(3).unwrap_or("v4");
    use weir_compiler::ebpf::codegen::sparse_atoms::AtomLayout;
    let atoms = match arg(4) {
        None | Some("auto") => AtomLayout::Auto,
        Some("dense") => AtomLayout::Dense,
        Some("sparse") => AtomLayout::Sparse,
        Some(a) => return Err(format!("atom layout {a}")),
    };
    let plan = Plan::new(false, 9);
    let (m6, packet) = if what.starts_with("svc") {
        service_flow(&plan, n, what)?
    } else {
        rules_flow(&plan, n, what)?
    };
    let g = weir_compiler::graph::compile(&m6);
    eprintln!("{packet:?}");
    let w = ebpf::load_weir(&m6, &g.graph, &[], 1, kind, atoms)?;
    let s = w.subjects.first().ok_or("not loaded")?;
    let frame = weir_runtime::frames::frame(&packet);
    let rotate = !what.ends_with("est");
    let d = driver::drive(
        s.ebpf(),
        layout::MAIN_PROGRAM,
        what,
        frame.clone(),
        rotate,
        BATCH,
    )?;
    let p: &SchedClassifier = d
        .ebpf()
        .program(driver::DRIVER)
        .ok_or("no driver")?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    let cts = [
        (layout::map::CT, layout::ct::KEY_SIZE),
        (layout::map::CT4, layout::ct::v4::KEY_SIZE),
    ]
    .map(|(name, size)| (s.ebpf().map(name), size as usize));
    let t = Instant::now();
    let mut out = vec![0u8; 2048];
    let mut per = Vec::new();
    while t.elapsed().as_secs_f64() < secs {
        let r = p
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                data_out: Some(&mut out),
                repeat: BATCH,
                ..Default::default()
            })
            .map_err(|e| format!("BPF_PROG_TEST_RUN: {e}"))?;
        per.push(r.duration.as_nanos() as f64);
        if rotate {
            for (ct, size) in &cts {
                let Some(ct) = ct else { continue };
                let keys = keys_raw(ct, *size).map_err(|e| e.to_string())?;
                for k in keys {
                    let _ = delete_raw(ct, &k);
                }
            }
        }
    }
    per.sort_by(f64::total_cmp);
    println!(
        "{what}: {} batches of {BATCH}, median {:.1} ns per packet",
        per.len(),
        per.get(per.len() / 2).copied().unwrap_or(f64::NAN)
    );
    Ok(())
}

/// The rules sweep's model at `n` rules (with IPv6 twins) and its flow.
fn rules_flow(plan: &Plan, n: usize, what: &str) -> Result<(Model, Packet), String> {
    let model = weir_compiler::synth::model(&plan.rules_params(n, 9));
    let (allow, deny) = flows::policy_flows(&model, 300);
    let allow = allow.ok_or("no allowed flow in the model")?;
    let (m6, q6) = flows::with_v6_twins(&model, &allow.packet);
    let packet = match what {
        "v4" | "est" => allow.packet.clone(),
        "v6" => q6,
        "deny" => deny.ok_or("no denied flow in the model")?.packet,
        w => return Err(format!("flow {w}")),
    };
    Ok((m6, packet))
}

/// The services sweep's model at `n` services with the bench clients, and
/// the headline's flow: `svc` / `svcest` from `bench-open` to the last
/// service its backend's ingress allows, `svcdeny` from `bench-client` to
/// the last TCP service (as `tables::ebpf::service_case` picks them).
fn service_flow(plan: &Plan, n: usize, what: &str) -> Result<(Model, Packet), String> {
    let m = flows::with_bench_client(&weir_compiler::synth::model(&plan.services_params(n, 9)));
    let packet = match what {
        "svc" | "svcest" => {
            let open = flows::service_flows(&m, Proto::Tcp, flows::BENCH_OPEN.into());
            let (_, f) = open
                .iter()
                .rev()
                .find(|(_, f)| f.verdict == Verdict::Allow)
                .ok_or("no allowed service flow")?;
            let mut p = f.packet.clone();
            if what == "svcest" {
                p.sport = 1000;
            }
            p
        }
        "svcdeny" => {
            let svcs = flows::service_flows(&m, Proto::Tcp, flows::BENCH_CLIENT.into());
            svcs.last()
                .ok_or("no TCP selector service")?
                .1
                .packet
                .clone()
        }
        w => return Err(format!("flow {w}")),
    };
    Ok((m, packet))
}
