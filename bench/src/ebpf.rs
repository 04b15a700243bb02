//! eBPF per-packet cost with BPF_PROG_TEST_RUN: the baselines, built with
//! weir's own assembler and ELF writer ("the same way" as weir's
//! programs), and weir's compiled program.
//!
//! Baselines (all TC classifiers, one IPv4/TCP frame):
//! - **empty**: `r0 = TC_ACT_OK; exit` — the cost of the test-run loop;
//! - **one lookup**: parse Ethernet + IPv4, one hash lookup of the
//!   destination address (hit) — the "one-lookup program";
//! - **parse + LPM + hash**: parse Ethernet + IPv4 + ports, LPM lookup of
//!   the destination in a 10,000-prefix trie (→ class), then one hash
//!   lookup of (class, proto, port) in a 10,000-entry map — the issue's
//!   "hand-written parse + LPM + hash lookup program".
//!
//! Each cost is the kernel's per-repetition time (`repeat` repetitions per
//! run), the median of `runs` runs; every program is loaded first and the
//! runs are interleaved across programs ([`measure_interleaved`]).

use std::time::Instant;

use aya::maps::Map;
use aya::programs::SchedClassifier;
use aya::Ebpf;
use weir_compiler::ebpf::codegen::{self, Mode, Options};
use weir_compiler::ebpf::layout;
use weir_compiler::ebpf::*;
use weir_compiler::graph::Graph;
use weir_compiler::interp::Packet;
use weir_compiler::model::{Model, Verdict};
use weir_runtime::ebpf::load::update_raw;
use weir_runtime::ebpf::test_run;

use crate::stats::median;
use weir_runtime::frames::frame;

const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;

/// How hard to measure.
#[derive(Debug, Clone, Copy)]
pub struct Effort {
    pub repeat: u32,
    pub runs: usize,
    /// Independent loads of every program (and baseline), measured alike;
    /// a figure is the median over loads. One load of the same program
    /// can be ~40 % slower than the others (where the kernel put its code
    /// and maps), which one load per program turned into a ratio.
    pub loads: usize,
}

fn prog(name: &str, code: Assembled) -> ProgramDef {
    ProgramDef {
        name: name.into(),
        section: "classifier".into(),
        code,
    }
}

fn empty_object() -> ObjectDef {
    let mut a = Asm::new();
    a.push(Op::mov64(Reg::R0, 0));
    a.push(Op::Exit);
    ObjectDef {
        programs: vec![prog("bench_empty", a.assemble().expect("assembles"))],
        maps: vec![],
        license: "GPL".into(),
    }
}

/// r2 = data, r3 = data_end; to `fail` unless `need` bytes are there.
fn bounds(a: &mut Asm, need: i32, fail: Label) {
    a.push(Op::load(Size::U32, Reg::R2, Reg::R6, SKB_DATA));
    a.push(Op::load(Size::U32, Reg::R3, Reg::R6, SKB_DATA_END));
    a.push(Op::mov64(Reg::R4, Reg::R2));
    a.push(Op::alu64(AluOp::Add, Reg::R4, need));
    a.push(Op::jmp(JmpCond::Gt, Reg::R4, Reg::R3, fail));
}

/// Ethertype IPv4 and IHL 5, else `fail`; leaves r2 = data.
fn parse_ipv4(a: &mut Asm, need: i32, fail: Label) {
    bounds(a, need, fail);
    a.push(Op::load(Size::U16, Reg::R4, Reg::R2, 12));
    a.push(Op::Endian {
        order: ByteOrder::Be,
        bits: 16,
        dst: Reg::R4,
    });
    a.push(Op::jmp(JmpCond::Ne, Reg::R4, 0x0800, fail));
    a.push(Op::load(Size::U8, Reg::R4, Reg::R2, 14));
    a.push(Op::alu64(AluOp::And, Reg::R4, 0x0f));
    a.push(Op::jmp(JmpCond::Ne, Reg::R4, 5, fail));
}

fn one_lookup_object(entries: u32) -> ObjectDef {
    let mut a = Asm::new();
    let pass = a.new_label("pass");
    a.push(Op::mov64(Reg::R6, Reg::R1));
    parse_ipv4(&mut a, 34, pass);
    a.push(Op::load(Size::U32, Reg::R4, Reg::R2, 30));
    a.push(Op::store(Size::U32, Reg::R10, -4, Reg::R4));
    a.push(Op::mov64(Reg::R2, Reg::R10));
    a.push(Op::alu64(AluOp::Add, Reg::R2, -4));
    a.push(Op::ld_map_fd(Reg::R1, "bench_hash"));
    a.push(Op::Call {
        helper: helper::MAP_LOOKUP_ELEM,
    });
    a.push(Op::jmp(JmpCond::Eq, Reg::R0, 0, pass));
    a.push(Op::load(Size::U32, Reg::R0, Reg::R0, 0));
    a.push(Op::Exit);
    a.bind(pass);
    a.push(Op::mov64(Reg::R0, 0));
    a.push(Op::Exit);
    ObjectDef {
        programs: vec![prog("bench_lookup", a.assemble().expect("assembles"))],
        maps: vec![MapDef::new("bench_hash", MapType::Hash, 4, 4, entries)],
        license: "GPL".into(),
    }
}

fn lpm_hash_object(entries: u32) -> ObjectDef {
    let mut a = Asm::new();
    let pass = a.new_label("pass");
    let classed = a.new_label("classed");
    a.push(Op::mov64(Reg::R6, Reg::R1));
    parse_ipv4(&mut a, 38, pass);
    a.push(Op::load(Size::U8, Reg::R7, Reg::R2, 23)); // protocol
    a.push(Op::load(Size::U16, Reg::R8, Reg::R2, 36)); // dport (network order)
    a.push(Op::load(Size::U32, Reg::R4, Reg::R2, 30)); // daddr
    a.push(Op::store(Size::U32, Reg::R10, -8, 32));
    a.push(Op::store(Size::U32, Reg::R10, -4, Reg::R4));
    a.push(Op::mov64(Reg::R2, Reg::R10));
    a.push(Op::alu64(AluOp::Add, Reg::R2, -8));
    a.push(Op::ld_map_fd(Reg::R1, "bench_lpm"));
    a.push(Op::Call {
        helper: helper::MAP_LOOKUP_ELEM,
    });
    a.push(Op::mov64(Reg::R9, 0));
    a.push(Op::jmp(JmpCond::Eq, Reg::R0, 0, classed));
    a.push(Op::load(Size::U32, Reg::R9, Reg::R0, 0));
    a.bind(classed);
    a.push(Op::store(Size::U32, Reg::R10, -16, Reg::R9));
    a.push(Op::store(Size::U16, Reg::R10, -12, Reg::R8));
    a.push(Op::store(Size::U8, Reg::R10, -10, Reg::R7));
    a.push(Op::store(Size::U8, Reg::R10, -9, 0));
    a.push(Op::mov64(Reg::R2, Reg::R10));
    a.push(Op::alu64(AluOp::Add, Reg::R2, -16));
    a.push(Op::ld_map_fd(Reg::R1, "bench_rules"));
    a.push(Op::Call {
        helper: helper::MAP_LOOKUP_ELEM,
    });
    a.push(Op::jmp(JmpCond::Eq, Reg::R0, 0, pass));
    a.push(Op::load(Size::U32, Reg::R0, Reg::R0, 0));
    a.push(Op::Exit);
    a.bind(pass);
    a.push(Op::mov64(Reg::R0, 0));
    a.push(Op::Exit);
    ObjectDef {
        programs: vec![prog("bench_lpm_hash", a.assemble().expect("assembles"))],
        maps: vec![
            MapDef::lpm_trie("bench_lpm", 4, 4, entries + 16),
            MapDef::new("bench_rules", MapType::Hash, 8, 4, entries + 16),
        ],
        license: "GPL".into(),
    }
}

fn load(obj: &ObjectDef, name: &str) -> Result<Ebpf, String> {
    let bytes = write_object(obj).map_err(|e| format!("{name}: ELF: {e:?}"))?;
    let mut ebpf = Ebpf::load(&bytes).map_err(|e| format!("{name}: load: {e}"))?;
    let p: &mut SchedClassifier = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("no program {name}"))?
        .try_into()
        .map_err(|e| format!("{name}: {e}"))?;
    p.load().map_err(|e| format!("{name}: verifier: {e}"))?;
    Ok(ebpf)
}

fn map<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a Map, String> {
    ebpf.map(name).ok_or_else(|| format!("no map {name}"))
}

/// A loaded object, the program in it to run and the frames to run it
/// on (label, frame).
pub struct Subject {
    ebpf: Ebpf,
    program: String,
    frames: Vec<(String, Vec<u8>)>,
    /// Repetitions per round instead of the effort's (a rotating driver
    /// must not run out of fresh flows, [`crate::driver`]).
    repeat: Option<u32>,
}

impl Subject {
    pub fn new(ebpf: Ebpf, program: &str, frames: Vec<(String, Vec<u8>)>) -> Subject {
        Subject {
            ebpf,
            program: program.into(),
            frames,
            repeat: None,
        }
    }

    pub fn with_repeat(mut self, repeat: u32) -> Subject {
        self.repeat = Some(repeat);
        self
    }

    /// The bytes of frame `i`.
    pub fn frame(&self, i: usize) -> &[u8] {
        &self.frames[i].1
    }

    /// The loaded object (to read its maps back after a run).
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }
}

/// Per frame of a subject: (median ns per repetition, return value).
pub type Costs = Vec<(f64, u32)>;

/// Measures every frame of every subject with BPF_PROG_TEST_RUN: one
/// warm-up run each, then `e.runs` rounds in which every frame runs once
/// (`e.repeat` repetitions). Interleaving the rounds makes a drift of the
/// machine's speed over the minutes of a run (tens of percent on this VM)
/// hit every program alike, so ratios between them are meaningful; one
/// program measured after another's five runs were not (a one-stage
/// program once measured above a 28-stage one). Per subject: its costs, or
/// why it could not run.
pub fn measure_interleaved(subjects: &[&Subject], e: Effort) -> Vec<Result<Costs, String>> {
    let mut out = vec![0u8; 2048];
    let mut times: Vec<Vec<Vec<f64>>> = subjects
        .iter()
        .map(|s| vec![Vec::new(); s.frames.len()])
        .collect();
    let mut rets: Vec<Vec<u32>> = subjects.iter().map(|s| vec![0; s.frames.len()]).collect();
    let mut failed: Vec<Option<String>> = vec![None; subjects.len()];
    for round in 0..=e.runs {
        for (i, s) in subjects.iter().enumerate() {
            if failed[i].is_some() {
                continue;
            }
            let p = match classifier(&s.ebpf, &s.program) {
                Ok(p) => p,
                Err(x) => {
                    failed[i] = Some(x);
                    continue;
                }
            };
            for (j, (_, data)) in s.frames.iter().enumerate() {
                out.resize(data.len() + 256, 0);
                match test_run::repeat(p, data, &mut out, s.repeat.unwrap_or(e.repeat)) {
                    Ok(r) => {
                        rets[i][j] = r.return_value;
                        // Round 0 warms up.
                        if round > 0 {
                            times[i][j].push(r.duration.as_nanos() as f64);
                        }
                    }
                    Err(x) => {
                        failed[i] = Some(format!("{}: BPF_PROG_TEST_RUN: {x}", s.program));
                        break;
                    }
                }
            }
        }
    }
    times
        .into_iter()
        .zip(rets)
        .zip(failed)
        .map(|((t, r), f)| match f {
            Some(x) => Err(x),
            None => Ok(t.iter().map(|xs| median(xs)).zip(r).collect()),
        })
        .collect()
}

fn classifier<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a SchedClassifier, String> {
    ebpf.program(name)
        .ok_or_else(|| format!("no program {name}"))?
        .try_into()
        .map_err(|e| format!("{name}: {e}"))
}

/// The three baselines' costs (ns).
#[derive(Debug, Clone, Copy)]
pub struct Baselines {
    pub empty: f64,
    pub one_lookup: f64,
    pub lpm_hash: f64,
}

/// The three baselines, loaded and filled, each with a frame to
/// 10.64.0.5:5432 (measure with [`measure_interleaved`], read with
/// [`Baselines::from_costs`]).
pub fn load_baselines(entries: u32) -> Result<[Subject; 3], String> {
    let pkt = Packet::new(
        weir_compiler::model::Proto::Tcp,
        crate::flows::CLIENT.into(),
        40000,
        "10.64.0.5".parse().expect("address"),
        5432,
    );
    let data = frame(&pkt);
    let dst = [10u8, 64, 0, 5];

    let empty = load(&empty_object(), "bench_empty")?;

    let lookup = load(&one_lookup_object(entries + 1), "bench_lookup")?;
    {
        let m = map(&lookup, "bench_hash")?;
        for i in 0..entries {
            let k = (u32::from_be_bytes([10, 128, 0, 0]) + i).to_be_bytes();
            update_raw(m, &k, &0u32.to_ne_bytes()).map_err(|x| format!("fill: {x}"))?;
        }
        update_raw(m, &dst, &0u32.to_ne_bytes()).map_err(|x| format!("fill: {x}"))?;
    }

    let lpm = load(&lpm_hash_object(entries), "bench_lpm_hash")?;
    {
        let trie = map(&lpm, "bench_lpm")?;
        for i in 0..entries {
            let net = (u32::from_be_bytes([100, 64, 0, 0]) + (i << 8)).to_be_bytes();
            let mut k = 24u32.to_ne_bytes().to_vec();
            k.extend_from_slice(&net);
            update_raw(trie, &k, &(i + 2).to_ne_bytes()).map_err(|x| format!("fill: {x}"))?;
        }
        let mut k = 10u32.to_ne_bytes().to_vec();
        k.extend_from_slice(&[10, 64, 0, 0]);
        update_raw(trie, &k, &1u32.to_ne_bytes()).map_err(|x| format!("fill: {x}"))?;
        let rules = map(&lpm, "bench_rules")?;
        for i in 0..entries {
            let mut k = (i + 1).to_ne_bytes().to_vec();
            k.extend_from_slice(&(1000 + (i % 50000) as u16).to_be_bytes());
            k.extend_from_slice(&[6, 0]);
            update_raw(rules, &k, &0u32.to_ne_bytes()).map_err(|x| format!("fill: {x}"))?;
        }
        let mut k = 1u32.to_ne_bytes().to_vec();
        k.extend_from_slice(&5432u16.to_be_bytes());
        k.extend_from_slice(&[6, 0]);
        update_raw(rules, &k, &0u32.to_ne_bytes()).map_err(|x| format!("fill: {x}"))?;
    }
    let subject = |ebpf: Ebpf, program: &str| {
        Subject::new(ebpf, program, vec![("baseline".into(), data.clone())])
    };
    Ok([
        subject(empty, "bench_empty"),
        subject(lookup, "bench_lookup"),
        subject(lpm, "bench_lpm_hash"),
    ])
}

impl Baselines {
    /// The baselines' costs from [`measure_interleaved`]'s results for
    /// the subjects of one or more [`load_baselines`], in order (median
    /// over the loads).
    pub fn from_costs(r: &[Result<Costs, String>]) -> Result<Baselines, String> {
        let one = |i: usize| -> Result<f64, String> {
            let loads: Vec<Result<Costs, String>> = r.iter().skip(i).step_by(3).cloned().collect();
            across_loads(&loads)?
                .first()
                .map(|c| c.0)
                .ok_or_else(|| "baseline not measured".into())
        };
        Ok(Baselines {
            empty: one(0)?,
            one_lookup: one(1)?,
            lpm_hash: one(2)?,
        })
    }
}

/// One packet weir's program is measured on.
#[derive(Debug, Clone)]
pub struct Probe {
    pub label: String,
    pub packet: Packet,
    pub verdict: Verdict,
}

/// What weir's eBPF back end produced and what its program cost.
#[derive(Debug, Clone, Default)]
pub struct WeirEbpf {
    /// Per probe: (label, median ns, verdict as expected).
    pub costs: Vec<(String, f64, bool)>,
    pub programs: usize,
    pub insns: usize,
    pub maps: Vec<(String, u32, u64)>,
    pub codegen_ms: f64,
    pub load_ms: f64,
}

/// weir's compiled program, loaded, with its probes' frames: what
/// [`load_weir`] built, to be measured with [`measure_interleaved`].
pub struct LoadedWeir {
    /// One per load.
    pub subjects: Vec<Subject>,
    /// Per probe: the return value of its expected verdict.
    want: Vec<u32>,
    pub programs: usize,
    pub insns: usize,
    pub maps: Vec<(String, u32, u64)>,
    pub codegen_ms: f64,
    pub load_ms: f64,
}

/// `codegen::generate` (node mode) → `weir_runtime::ebpf::load` (verifier,
/// maps filled from the manifest, prog array) of weir's program, with a
/// frame per probe for BPF_PROG_TEST_RUN on the entry program. `Err`
/// names what failed (a limit, the verifier…).
pub fn load_weir(
    model: &Model,
    graph: &Graph,
    probes: &[Probe],
    loads: usize,
    kind: weir_compiler::ebpf::state_tables::CtTable,
    atoms: weir_compiler::ebpf::codegen::sparse_atoms::AtomLayout,
) -> Result<LoadedWeir, String> {
    let t = Instant::now();
    let out = codegen::generate(
        model,
        graph,
        &Options {
            mode: Mode::Node,
            tables: weir_compiler::ebpf::state_tables::StateTables {
                kind,
                ..Default::default()
            },
            atoms,
            ..Options::default()
        },
    )
    .map_err(|ls| {
        ls.iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let codegen_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let mut subjects = Vec::new();
    for _ in 0..loads.max(1) {
        let g = weir_runtime::ebpf::load(&out.object, &out.manifest, None)
            .map_err(|e| format!("load: {e}"))?;
        classifier(&g.ebpf, layout::MAIN_PROGRAM)?;
        subjects.push(Subject::new(
            g.ebpf,
            layout::MAIN_PROGRAM,
            probes
                .iter()
                .map(|p| (p.label.clone(), frame(&p.packet)))
                .collect(),
        ));
    }
    let load_ms = t.elapsed().as_secs_f64() * 1e3 / subjects.len() as f64;
    Ok(LoadedWeir {
        subjects,
        want: probes
            .iter()
            .map(|p| match p.verdict {
                Verdict::Allow => layout::TC_ACT_OK as u32,
                Verdict::Deny => layout::TC_ACT_SHOT as u32,
            })
            .collect(),
        programs: out.manifest.programs.len(),
        insns: out.manifest.programs.iter().map(|p| p.insns).sum(),
        maps: out
            .manifest
            .maps
            .iter()
            .map(|m| (m.name.clone(), m.max_entries, m.filled))
            .collect(),
        codegen_ms,
        load_ms,
    })
}

impl LoadedWeir {
    /// The figures, given the costs [`measure_interleaved`] found for
    /// [`LoadedWeir::subjects`] (in order).
    pub fn figures(&self, costs: &[Result<Costs, String>]) -> Result<WeirEbpf, String> {
        let costs = across_loads(costs)?;
        Ok(WeirEbpf {
            costs: self.subjects[0]
                .frames
                .iter()
                .zip(&costs)
                .zip(&self.want)
                .map(|(((label, _), &(ns, ret)), &want)| (label.clone(), ns, ret == want))
                .collect(),
            programs: self.programs,
            insns: self.insns,
            maps: self.maps.clone(),
            codegen_ms: self.codegen_ms,
            load_ms: self.load_ms,
        })
    }
}

/// Per frame, the median over loads of the costs of one program's loads
/// (the return value of the first load; all run the same program).
pub fn across_loads(loads: &[Result<Costs, String>]) -> Result<Costs, String> {
    let loads: Vec<&Costs> = loads
        .iter()
        .map(|r| r.as_ref().map_err(Clone::clone))
        .collect::<Result<_, _>>()?;
    let first = loads.first().ok_or("no load measured")?;
    Ok((0..first.len())
        .map(|j| {
            let xs: Vec<f64> = loads.iter().map(|c| c[j].0).collect();
            (median(&xs), first[j].1)
        })
        .collect())
}

/// Update latencies of the eBPF data path (ms): endpoint add / remove as
/// the class-map host entry the runtime writes for an endpoint of an
/// existing class, and a full generation load (codegen + verifier + fill).
#[derive(Debug, Clone, Default)]
pub struct EbpfUpdates {
    pub endpoint_add_ms: f64,
    pub endpoint_remove_ms: f64,
    pub full_load_ms: f64,
    pub codegen_ms: f64,
    /// Whole-process `weir endpoints` add / remove (ms; `None`: no `weir`
    /// binary found).
    pub cli: Option<Result<(f64, f64), String>>,
}

/// One endpoint added and removed again, `reps` times, through the
/// runtime's endpoint path (`weir_runtime::endpoints::ebpf_text`, what
/// `weir endpoints` runs, given the inventory file's text) on a
/// generation applied with `weir_runtime::ebpf::apply` to the node's
/// client-facing interface of a netns topology: the inventory compared
/// with the recorded one, churn plan, class-map host entries in the
/// pinned maps, no program reload. Wall time of the call (ms). Then, when
/// the `weir` binary is found, the same as whole `weir endpoints`
/// processes on a generation applied with `weir apply` (`cli`).
fn endpoint_churn(
    model: &Model,
    graph: &Graph,
    reps: usize,
    add: &mut Vec<f64>,
    del: &mut Vec<f64>,
    cli: &mut Option<Result<(f64, f64), String>>,
) -> Result<(), String> {
    use weir_compiler::bundle::{self, BundleInput, Target};
    let art = weir_compiler::backends::generate(Target::Ebpf, model, graph)
        .map_err(|e| format!("eBPF back end: {e:?}"))?;
    let mut backends = std::collections::BTreeMap::new();
    backends.insert(Target::Ebpf, art);
    let sources = vec![("synth.weir".to_string(), String::new())];
    let files = bundle::bundle(&BundleInput {
        model,
        graph,
        sources: &sources,
        targets: &[Target::Ebpf],
        locate: &|_| None,
        backends,
    });
    let work = crate::iptables::Scratch::shm("ebpf-updates");
    let dir = work.0.join("bundle");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).map_err(|e| e.to_string())?;
    }
    let manifest = weir_runtime::bundle::read_manifest(&dir)
        .map_err(|e| e.to_string())?
        .1;
    let (base, extra) = crate::churn_inventory(model, &manifest)?;
    let mut with = base.clone();
    with.push(extra);
    let with = weir_compiler::churn::inventory_text(&with);
    let base = weir_compiler::churn::inventory_text(&base);
    let topo = weir_runtime::netns::Topology::new().map_err(|e| format!("netns: {e}"))?;
    let mut inst = weir_runtime::ebpf::Instance::new(
        weir_runtime::netns::NODE_CLIENT_IF,
        Some(topo.node.name()),
    );
    inst.pin_root = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/weir-bench-updates-{}",
        std::process::id()
    ));
    inst.state_root = work.0.join("state");
    let mut run = || -> Result<(), String> {
        weir_runtime::ebpf::apply(&dir, &inst).map_err(|e| format!("apply: {e}"))?;
        for _ in 0..reps {
            let t = Instant::now();
            let r = weir_runtime::endpoints::ebpf_text(&inst, &dir, &with)
                .map_err(|e| format!("endpoints add: {e}"))?;
            add.push(t.elapsed().as_secs_f64() * 1e3);
            if r.changes.len() != 1 {
                return Err(format!("endpoint add: {} changes", r.changes.len()));
            }
            let t = Instant::now();
            weir_runtime::endpoints::ebpf_text(&inst, &dir, &base)
                .map_err(|e| format!("endpoints remove: {e}"))?;
            del.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok(())
    };
    let r = run();
    let _ = weir_runtime::ebpf::detach(&inst);
    let _ = std::fs::remove_dir_all(&inst.pin_root);
    r?;
    // The same through the `weir` binary, as a user runs it: `weir
    // apply`, then `weir endpoints` as whole processes (the CLI's pin and
    // state directories, named after the namespace).
    *cli = crate::compile::weir_binary().map(|weir| {
        let args = [
            "--backend",
            "ebpf",
            "--netns",
            topo.node.name(),
            "--iface",
            weir_runtime::netns::NODE_CLIENT_IF,
        ];
        let weir_cmd = |verb: &str, dir: Option<&std::path::Path>| -> Result<(), String> {
            let mut c = std::process::Command::new(&weir);
            c.arg(verb);
            if let Some(d) = dir {
                c.arg(d);
            }
            let out = c
                .args(args)
                .output()
                .map_err(|e| format!("running {}: {e}", weir.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "weir {verb}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            Ok(())
        };
        weir_cmd("apply", Some(&dir))?;
        let r = crate::cli_endpoints(&weir, &dir, &work.0, (&with, &base), &args, reps);
        let _ = weir_cmd("detach", None);
        r
    });
    Ok(())
}

pub fn updates(model: &Model, graph: &Graph, reps: usize) -> Result<EbpfUpdates, String> {
    let t = Instant::now();
    let out = codegen::generate(model, graph, &Options::default()).map_err(|ls| {
        ls.iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let codegen_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let g = weir_runtime::ebpf::load(&out.object, &out.manifest, None)
        .map_err(|e| format!("load: {e}"))?;
    let full_load_ms = t.elapsed().as_secs_f64() * 1e3;
    drop(g);
    let (mut add, mut del, mut cli) = (Vec::new(), Vec::new(), None);
    if reps > 0 {
        endpoint_churn(model, graph, reps, &mut add, &mut del, &mut cli)?;
    }
    Ok(EbpfUpdates {
        endpoint_add_ms: median(&add),
        endpoint_remove_ms: median(&del),
        full_load_ms,
        codegen_ms,
        cli,
    })
}
