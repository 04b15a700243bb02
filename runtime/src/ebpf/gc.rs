//! Arming and reading the in-kernel conntrack collector of a non-LRU
//! `weir_ct` (`weir_compiler::ebpf::codegen::ct_gc`; the rules are in
//! docs/runtime.md, "Non-LRU tables and the collector").
//!
//! A generation whose object has the collector loads its program
//! `weir_gc_arm` (a sleepable syscall program, [`super::gc_prog`]; the
//! load does it) and test-runs it once ([`arm`]): the run writes the
//! configuration into the pinned `weir_ct_gc` value, sweeps `weir_ct`
//! once and arms the BPF timer and workqueue with this generation's
//! callbacks. From then on the timer queues the work every
//! [`Config::interval`] and the work sweeps in a kernel worker, with no
//! user-space process. [`arm`] reads the value back: the apply reports only a
//! collector the kernel shows armed (the run's walk counted in the
//! value, with the configuration it wrote). Tests arm with an injected time ([`sweep_at`]) or short
//! timeouts.

use std::time::Duration;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use aya::maps::{Map, MapData};
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

/// Entries one firing processes at most: the work re-queues itself
/// between firings, so its worker reaches a scheduling point
/// (docs/runtime.md has the measured figures).
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

/// Whether the generation has the collector (a non-LRU `weir_ct`).
pub fn present(g: &super::Generation) -> bool {
    g.collector.is_some()
}

/// Loads the collector's arming program of `object` when its manifest
/// declares one (`weir_compiler::contract::collector`); a declared
/// collector must be the one this runtime arms, and a hash bundle that
/// does not declare it (an older weir's) is refused.
pub fn load_program(
    ebpf: &Ebpf,
    object: &[u8],
    manifest: &weir_compiler::ebpf::codegen::EbpfManifest,
) -> Result<Option<OwnedFd>, EbpfError> {
    let Some(c) = &manifest.collector else {
        if ebpf.map(gc::MAP).is_some() {
            return Err(EbpfError::Bundle(format!(
                "the bundle has the map {} of a conntrack collector but does not declare it (compiled by an older weir): recompile it",
                gc::MAP
            )));
        }
        return Ok(None);
    };
    if c.program != gc::PROGRAM || c.map != gc::MAP || c.section != gc::SECTION {
        return Err(EbpfError::Bundle(format!(
            "the manifest declares a conntrack collector (program {} in {}, map {}) this weir does not arm (program {} in {}, map {})",
            c.program, c.section, c.map, gc::PROGRAM, gc::SECTION, gc::MAP
        )));
    }
    if ebpf.map(gc::MAP).is_none() {
        return Err(EbpfError::Bundle(format!(
            "the manifest declares the conntrack collector {} but the object has no map {}",
            c.program,
            gc::MAP
        )));
    }
    super::gc_prog::load(object, ebpf, &c.program, &c.section).map(Some)
}

fn program(g: &super::Generation) -> Result<BorrowedFd<'_>, EbpfError> {
    g.collector
        .as_ref()
        .map(|f| f.as_fd())
        .ok_or_else(|| EbpfError::Bundle(format!("object has no program {}", gc::PROGRAM)))
}

/// One run of the arming program: `now` 0 is the kernel's clock; `flags`
/// [`gc::cfg::SWEEP`] / [`gc::cfg::ARM`] / [`gc::cfg::KICK`].
fn run(g: &super::Generation, cfg: Config, now: u64, flags: u64) -> Result<State, EbpfError> {
    run_on(program(g)?, cfg, now, flags)?;
    state(&g.ebpf)
}

/// One test run of the arming program `p` (see [`run`]).
fn run_on(p: BorrowedFd<'_>, cfg: Config, now: u64, flags: u64) -> Result<(), EbpfError> {
    let mut data = vec![0u8; gc::cfg::SIZE];
    for (at, v) in [
        (gc::cfg::NOW, now),
        (gc::cfg::INTERVAL, ns(cfg.interval)),
        (gc::cfg::TCP_TIMEOUT, ns(cfg.tcp)),
        (gc::cfg::OTHER_TIMEOUT, ns(cfg.other)),
        (gc::cfg::BUDGET, cfg.budget),
        (gc::cfg::FLAGS, flags),
    ] {
        data[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    }
    let r = super::gc_prog::run(p, &data)
        .map_err(|e| aya("test-running the conntrack collector", e))?;
    if r != gc::ret::OK {
        return Err(EbpfError::Aya {
            step: "arming the conntrack collector".into(),
            message: format!(
                "program {} returned {} (3: no value, 4: bpf_timer_init, \
                 5: bpf_timer_set_callback, 6: bpf_timer_start, 7: bpf_wq_init, \
                 8: bpf_wq_set_callback_impl, 9: bpf_wq_start failed)",
                gc::PROGRAM,
                r
            ),
        });
    }
    Ok(())
}

/// The pin of a generation's arming program, in its directory.
pub fn program_pin(gen_dir: &std::path::Path) -> std::path::PathBuf {
    gen_dir.join(format!("prog_{}", gc::PROGRAM))
}

/// Pins the arming program of `g` in its generation's directory.
pub fn pin(g: &super::Generation, gen_dir: &std::path::Path) -> Result<(), EbpfError> {
    super::gc_prog::pin(program(g)?, &program_pin(gen_dir)).map_err(|e| aya("pinning programs", e))
}

/// Re-arms the collector of the generation in force on `inst` with
/// `cfg` through its pinned arming program (`sweep`: and sweeps once
/// now), without loading anything; returns the figures read back.
pub fn rearm(inst: &super::Instance, cfg: Config, sweep: bool) -> Result<State, EbpfError> {
    let st = super::record::read_state(inst)?;
    let base = inst.pin_dir();
    let pin = program_pin(&super::pins::gen_dir(&base, st.generation));
    let p = super::gc_prog::from_pin(&pin)
        .map_err(|e| aya(&format!("opening {}", pin.display()), e))?;
    let flags = gc::cfg::ARM | if sweep { gc::cfg::SWEEP } else { 0 };
    run_on(p.as_fd(), cfg, 0, flags)?;
    read_pinned(&base.join(gc::MAP))
}

/// Arms the collector of a loaded generation: writes `cfg`, sweeps once
/// at the kernel's clock, (re)arms the timer and the workqueue with this
/// generation's callbacks; returns the value read back, which must show
/// the run's firing (one more walk of `weir_ct`).
pub fn arm(g: &super::Generation, cfg: Config) -> Result<State, EbpfError> {
    let before = state(&g.ebpf)?;
    let s = run(g, cfg, 0, gc::cfg::SWEEP | gc::cfg::ARM)?;
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

/// One sweep at `now` (an injected clock) without arming, in the test
/// run itself: the kernel applies its rules as the work would.
pub fn sweep_at(g: &super::Generation, cfg: Config, now: u64) -> Result<State, EbpfError> {
    run(g, cfg, now, gc::cfg::SWEEP)
}

/// Arms the timer and workqueue with `cfg` without sweeping now (tests:
/// a short interval and timeouts).
pub fn arm_only(g: &super::Generation, cfg: Config) -> Result<State, EbpfError> {
    run(g, cfg, 0, gc::cfg::ARM)
}

/// Queues the work now (`bpf_wq_start`, no timer): it sweeps in a kernel
/// worker at `now` (0: its clock), re-queueing itself until the sweep is
/// complete. Returns at once; the figures change when the work ran.
/// Needs an earlier [`arm`] / [`arm_only`] (the work's callback).
pub fn kick(g: &super::Generation, cfg: Config, now: u64) -> Result<State, EbpfError> {
    run(g, cfg, now, gc::cfg::KICK)
}

/// Before a load: a pinned `weir_ct_gc` of another layout than the
/// manifest's (an older weir's, without the workqueue) is unpinned, so
/// the load creates the new one. With its last user reference the old
/// map's timer is cancelled (the kernel frees a map's timers when no fd
/// or pin holds it), which releases the old generation's collector. The
/// figures start again; `weir_ct` is untouched.
pub fn unpin_if_changed(
    path: &std::path::Path,
    manifest: &weir_compiler::ebpf::codegen::EbpfManifest,
) -> Result<(), EbpfError> {
    let Some(want) = manifest.maps.iter().find(|m| m.name == gc::MAP) else {
        return Ok(());
    };
    let Ok(old) = MapData::from_pin(path) else {
        return Ok(());
    };
    let info = old
        .info()
        .map_err(|e| aya("reading the pinned conntrack collector", e))?;
    if info.value_size() == want.value_size {
        return Ok(());
    }
    std::fs::remove_file(path).map_err(|source| EbpfError::Io {
        context: format!("unpinning the older conntrack collector {}", path.display()),
        source,
    })
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
