//! Arming and reading the in-kernel conntrack collector of a non-LRU
//! `weir_ct` (`weir_compiler::ebpf::codegen::ct_gc`; the rules are in
//! docs/runtime.md, "Non-LRU tables and the collector").
//!
//! A generation whose object has the collector loads its program
//! `weir_gc_arm` and test-runs it once ([`arm`]): the run writes the
//! configuration into the pinned `weir_ct_gc` value, sweeps `weir_ct`
//! once and arms the BPF timer with this generation's callback. From then
//! on the kernel sweeps every [`Config::interval`] with no user-space
//! process. [`arm`] reads the value back: the apply reports only a
//! collector the kernel shows armed (the run's walk counted in the
//! value, with the configuration it wrote). Tests arm with an injected time ([`sweep_at`]) or short
//! timeouts.

use std::time::Duration;

use aya::maps::{Map, MapData};
use aya::programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions};
use aya::Ebpf;
use weir_compiler::ebpf::layout::gc;

use super::EbpfError;

/// How often the timer sweeps, the idle timeouts, and how many entries
/// one firing processes at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub interval: Duration,
    /// Idle timeout of a TCP entry (6 h, like Cilium's established TCP).
    pub tcp: Duration,
    /// Idle timeout of every other protocol's entry (60 s).
    pub other: Duration,
    /// Entries one firing processes at most (0: all).
    pub budget: u64,
}

/// Entries one timer firing processes at most: keeps a firing under
/// about a millisecond of softirq time (docs/runtime.md has the
/// measured figures).
pub const BUDGET: u64 = 32_768;

impl Default for Config {
    fn default() -> Self {
        Config {
            interval: Duration::from_secs(10),
            tcp: Duration::from_secs(6 * 3600),
            other: Duration::from_secs(60),
            budget: BUDGET,
        }
    }
}

/// The collector's figures (the `weir_ct_gc` value).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct State {
    /// Time (`CLOCK_MONOTONIC` ns) of the last completed sweep.
    pub last_sweep_ns: u64,
    pub sweeps: u64,
    pub removed: u64,
    pub last_duration_ns: u64,
    pub max_duration_ns: u64,
    pub last_visited: u64,
    pub firings: u64,
    pub interval_ns: u64,
    pub tcp_timeout_ns: u64,
    pub other_timeout_ns: u64,
    pub budget: u64,
}

impl State {
    fn parse(v: &[u8]) -> State {
        let w = |o: i16| u64::from_ne_bytes(v[o as usize..o as usize + 8].try_into().expect("8"));
        State {
            last_sweep_ns: w(gc::LAST_SWEEP),
            sweeps: w(gc::SWEEPS),
            removed: w(gc::REMOVED),
            last_duration_ns: w(gc::LAST_DURATION),
            max_duration_ns: w(gc::MAX_DURATION),
            last_visited: w(gc::LAST_VISITED),
            firings: w(gc::FIRINGS),
            interval_ns: w(gc::INTERVAL),
            tcp_timeout_ns: w(gc::TCP_TIMEOUT),
            other_timeout_ns: w(gc::OTHER_TIMEOUT),
            budget: w(gc::BUDGET),
        }
    }
}

fn aya(step: &str, e: impl std::fmt::Display) -> EbpfError {
    EbpfError::Aya {
        step: step.into(),
        message: e.to_string(),
    }
}

fn ns(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

/// Whether the loaded object has the collector (a non-LRU `weir_ct`), as
/// its manifest declares it (`weir_compiler::contract::collector`): a
/// declared collector must be the one this runtime arms (its program and
/// map names) and be in the object, else the bundle is refused. A
/// manifest written before the declaration existed has the collector
/// when the object has its program and map.
pub fn present(
    ebpf: &Ebpf,
    manifest: &weir_compiler::ebpf::codegen::EbpfManifest,
) -> Result<bool, EbpfError> {
    let in_object = ebpf.program(gc::PROGRAM).is_some() && ebpf.map(gc::MAP).is_some();
    let Some(c) = &manifest.collector else {
        return Ok(in_object);
    };
    if c.program != gc::PROGRAM || c.map != gc::MAP {
        return Err(EbpfError::Bundle(format!(
            "the manifest declares a conntrack collector (program {}, map {}) this weir does not arm (program {}, map {})",
            c.program,
            c.map,
            gc::PROGRAM,
            gc::MAP
        )));
    }
    if !in_object {
        return Err(EbpfError::Bundle(format!(
            "the manifest declares the conntrack collector {} but the object has no program {} or map {}",
            c.program,
            gc::PROGRAM,
            gc::MAP
        )));
    }
    Ok(true)
}

/// Loads the arming program (once per generation; no-op when loaded).
pub fn load_program(ebpf: &mut Ebpf) -> Result<(), EbpfError> {
    let p: &mut SchedClassifier = ebpf
        .program_mut(gc::PROGRAM)
        .ok_or_else(|| EbpfError::Bundle(format!("object has no program {}", gc::PROGRAM)))?
        .try_into()
        .map_err(|e: ProgramError| super::load::verifier(gc::PROGRAM, e))?;
    if p.fd().is_err() {
        p.load()
            .map_err(|e| super::load::verifier(gc::PROGRAM, e))?;
    }
    Ok(())
}

/// One run of the arming program: `now` 0 is the kernel's clock; `flags`
/// [`gc::cfg::SWEEP`] / [`gc::cfg::ARM`].
fn run(ebpf: &Ebpf, cfg: Config, now: u64, flags: u64) -> Result<State, EbpfError> {
    let p: &SchedClassifier = ebpf
        .program(gc::PROGRAM)
        .ok_or_else(|| EbpfError::Bundle(format!("object has no program {}", gc::PROGRAM)))?
        .try_into()
        .map_err(|e: ProgramError| super::load::verifier(gc::PROGRAM, e))?;
    run_on(p, cfg, now, flags)?;
    state(ebpf)
}

/// One test run of the arming program `p` (see [`run`]).
fn run_on(p: &SchedClassifier, cfg: Config, now: u64, flags: u64) -> Result<(), EbpfError> {
    let mut data = vec![0u8; 14 + gc::cfg::SIZE];
    for (at, v) in [
        (gc::cfg::NOW, now),
        (gc::cfg::INTERVAL, ns(cfg.interval)),
        (gc::cfg::TCP_TIMEOUT, ns(cfg.tcp)),
        (gc::cfg::OTHER_TIMEOUT, ns(cfg.other)),
        (gc::cfg::BUDGET, cfg.budget),
        (gc::cfg::FLAGS, flags),
    ] {
        data[14 + at..14 + at + 8].copy_from_slice(&v.to_ne_bytes());
    }
    let mut out = vec![0u8; data.len() + 64];
    let r = p
        .test_run(TestRunOptions {
            data_in: Some(&data),
            data_out: Some(&mut out),
            ..Default::default()
        })
        .map_err(|e| aya("test-running the conntrack collector", e))?;
    if r.return_value != gc::ret::OK {
        return Err(EbpfError::Aya {
            step: "arming the conntrack collector".into(),
            message: format!(
                "program {} returned {} (2: short input, 3: no value, 4: bpf_timer_init, \
                 5: bpf_timer_set_callback, 6: bpf_timer_start failed)",
                gc::PROGRAM,
                r.return_value
            ),
        });
    }
    Ok(())
}

/// The pin of a generation's arming program, in its directory.
pub fn program_pin(gen_dir: &std::path::Path) -> std::path::PathBuf {
    gen_dir.join(format!("prog_{}", gc::PROGRAM))
}

/// Re-arms the collector of the generation in force on `inst` with
/// `cfg` through its pinned arming program (`sweep`: and sweeps once
/// now), without loading anything; returns the figures read back.
pub fn rearm(inst: &super::Instance, cfg: Config, sweep: bool) -> Result<State, EbpfError> {
    let st = super::record::read_state(inst)?;
    let base = inst.pin_dir();
    let pin = program_pin(&super::pins::gen_dir(&base, st.generation));
    let p = SchedClassifier::from_pin(&pin)
        .map_err(|e| aya(&format!("opening {}", pin.display()), e))?;
    let flags = gc::cfg::ARM | if sweep { gc::cfg::SWEEP } else { 0 };
    run_on(&p, cfg, 0, flags)?;
    read_pinned(&base.join(gc::MAP))
}

/// Arms the collector of a loaded generation: writes `cfg`, sweeps once
/// at the kernel's clock, (re)arms the timer with this generation's
/// callback; returns the value read back, which must show the run's
/// firing (one more walk of `weir_ct`).
pub fn arm(ebpf: &mut Ebpf, cfg: Config) -> Result<State, EbpfError> {
    load_program(ebpf)?;
    let before = state(ebpf)?;
    let s = run(ebpf, cfg, 0, gc::cfg::SWEEP | gc::cfg::ARM)?;
    // A firing, not a whole sweep: on a table larger than the budget the
    // arming run's walk stops at the budget and the timer goes on.
    if s.firings <= before.firings || s.interval_ns != ns(cfg.interval) {
        return Err(EbpfError::Aya {
            step: "arming the conntrack collector".into(),
            message: format!("read back shows no sweep: {s:?}"),
        });
    }
    Ok(s)
}

/// One sweep at `now` (an injected clock) without arming, by the loaded
/// program ([`load_program`]): the kernel applies its rules as the timer
/// would.
pub fn sweep_at(ebpf: &Ebpf, cfg: Config, now: u64) -> Result<State, EbpfError> {
    run(ebpf, cfg, now, gc::cfg::SWEEP)
}

/// Arms the timer with `cfg` without sweeping now (tests: a short
/// interval and timeouts).
pub fn arm_only(ebpf: &Ebpf, cfg: Config) -> Result<State, EbpfError> {
    run(ebpf, cfg, 0, gc::cfg::ARM)
}

/// The collector's figures of a loaded generation.
pub fn state(ebpf: &Ebpf) -> Result<State, EbpfError> {
    let m = ebpf
        .map(gc::MAP)
        .ok_or_else(|| EbpfError::Bundle(format!("object has no map {}", gc::MAP)))?;
    read(m)
}

/// The figures of a `weir_ct_gc` map.
pub fn read(m: &Map) -> Result<State, EbpfError> {
    let v = super::load::lookup_raw(m, &0u32.to_ne_bytes(), gc::VALUE_SIZE as usize)
        .map_err(|e| aya("reading the conntrack collector", e))?
        .ok_or_else(|| aya("reading the conntrack collector", "no value"))?;
    Ok(State::parse(&v))
}

/// The figures of the collector pinned at `path` (`weir status`).
pub fn read_pinned(path: &std::path::Path) -> Result<State, EbpfError> {
    let d = MapData::from_pin(path).map_err(|e| aya("opening the pinned collector", e))?;
    read(&Map::Array(d))
}
