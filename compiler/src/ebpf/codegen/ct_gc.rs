//! The in-kernel collector of a non-LRU `weir_ct` (`--ct-table hash`, the
//! default): nothing in the kernel evicts from a preallocated hash, and a
//! full one denies new flows, so idle entries must be removed wherever the
//! programs run — not only where `weir agent` runs.
//!
//! Its pieces, in the pipeline object:
//! - `weir_ct_gc`, an array of one value ([`layout::gc`]) holding a
//!   `struct bpf_timer` and a `struct bpf_wq` (so its BTF names its value
//!   type, `btf_ext`), the
//!   sweep's configuration and its figures. The runtime pins it beside
//!   `weir_ct`, shared by every generation.
//! - the program `weir_gc_arm` (section `syscall`: a sleepable
//!   `BPF_PROG_TYPE_SYSCALL`, since this kernel sets a workqueue callback
//!   only from a sleepable program; never attached): the
//!   runtime test-runs it once per apply with a context holding the
//!   configuration ([`layout::gc::cfg`]). It writes the configuration,
//!   sweeps once (at the context's time, when given: tests use it as their
//!   clock), and arms: the workqueue (`bpf_wq_init`, `-EBUSY` when an
//!   earlier generation did: kept; `bpf_wq_set_callback_impl` to this
//!   object's work callback) and the timer (`bpf_timer_init`, likewise
//!   kept; `bpf_timer_set_callback` to this object's timer callback;
//!   `bpf_timer_start`). Both hold a reference to *this* program, so the
//!   old generation's programs are released. A run may also kick the
//!   workqueue (`bpf_wq_start`) without the timer (tests).
//! - the timer callback (`weir_gc_timer`) runs in softirq and only queues
//!   the work (`bpf_wq_start`) and re-arms itself after the interval.
//! - the work callback (`weir_gc_work`) runs in process context (a
//!   kernel worker) and sweeps at `bpf_ktime_get_ns` (or the time a kick
//!   injected); when it stopped at its budget it queues itself again, so
//!   the worker reaches a scheduling point between firings.
//!
//! The workqueue's kfuncs are kernel functions called by BTF id, which
//! the loader resolves on the node (`crate::ebpf::kfunc`).
//!
//! A sweep walks each conntrack table (`weir_ct`, then `weir_ct4`: one
//! per family) with `bpf_for_each_map_elem`, as one sequence for the
//! budget and the cursor below; the visit (`weir_gc_visit4` for
//! `weir_ct4`: its 16-byte key widened to the 40-byte layout first)
//! callback (`weir_gc_visit`) applies the rules of docs/runtime.md
//! ("Non-LRU tables and the collector"), the one place they are
//! written:
//! - an entry whose `SEEN` bit is set (a packet found it since the last
//!   look) gets the bit cleared and its time stamped with the sweep's
//!   time, flags kept;
//! - an entry not seen for longer than its protocol's timeout (TCP /
//!   other) is deleted;
//! - a forward entry (`FORWARD` in its service word) older than its
//!   protocol's timeout is deleted when its flow's entry (client ↔
//!   backend, canonical order as `emit/prologue.rs` writes it) is gone.
//!
//! Bounded work: a firing processes at most `budget` entries after
//! skipping the `cursor` entries the previous firings kept, then stops
//! and the next resumes after them (the walk's order is the table's
//! bucket order: the firing's own removals are accounted for; entries
//! the datapath inserts or removes meanwhile shift it, so an entry may
//! be skipped, or looked at twice, in one sweep and is seen in the
//! next). One firing is one [`sweep`] of one map: sweeping several maps
//! is a loop over them. docs/runtime.md gives the measured figures.

use super::*;
use crate::ebpf::btf_ext::{Field, TypedMap};
use crate::ebpf::elf::{FuncRef, Subprogram};
use crate::ebpf::insn::helper;
use crate::ebpf::kfunc;
use crate::ebpf::layout::gc;
use crate::ebpf::{AluOp, Asm, AsmError, Assembled, JmpCond, Label, Op, Reg, Size};

/// The collector's pieces for the object writer.
pub struct Collector {
    pub map: MapDef,
    pub typed: TypedMap,
    pub program: ProgramDef,
    pub subprograms: Vec<Subprogram>,
    pub refs: Vec<FuncRef>,
}

/// The visit callback's context (on the sweeping frame's stack), offsets
/// from its start.
mod vctx {
    pub const NOW: i16 = 0;
    pub const TCP: i16 = 8;
    pub const OTHER: i16 = 16;
    pub const REMOVED: i16 = 24;
    pub const VISITED: i16 = 32;
    pub const SKIP: i16 = 40;
    pub const BUDGET: i16 = 48;
}
/// Where the sweeping frame keeps it, and the walk's start time.
const CTX: i16 = -64;
const STARTED: i16 = -72;

pub fn collector() -> Result<Collector, AsmError> {
    let (program, prog_ref) = arming_program()?;
    let timer = timer_callback()?;
    let (work, work_ref) = work_callback()?;
    let visit = visit_callback(false)?;
    let visit4 = visit_callback(true)?;
    let typed = TypedMap {
        map: gc::MAP.into(),
        value_name: "weir_ct_gc_value".into(),
        fields: gc::FIELDS
            .iter()
            .map(|f| {
                let kind = match *f {
                    "timer" => Field::Timer,
                    "wq" => Field::Wq,
                    _ => Field::U64,
                };
                (f.to_string(), kind)
            })
            .collect(),
    };
    debug_assert_eq!(typed.value_size(), gc::VALUE_SIZE);
    Ok(Collector {
        map: MapDef::new(gc::MAP, MapType::Array, 4, gc::VALUE_SIZE, 1),
        typed,
        program: ProgramDef {
            name: gc::PROGRAM.into(),
            section: "syscall".into(),
            code: program,
        },
        subprograms: vec![
            Subprogram {
                name: gc::TIMER_CB.into(),
                args: 3,
                code: timer,
            },
            Subprogram {
                name: gc::WORK_CB.into(),
                args: 3,
                code: work,
            },
            Subprogram {
                name: gc::SWEEP_CB.into(),
                args: 4,
                code: visit,
            },
            Subprogram {
                name: gc::SWEEP_CB4.into(),
                args: 4,
                code: visit4,
            },
        ],
        refs: vec![
            FuncRef {
                from: gc::PROGRAM.into(),
                slot: prog_ref.sweep[0],
                to: gc::SWEEP_CB.into(),
            },
            FuncRef {
                from: gc::PROGRAM.into(),
                slot: prog_ref.sweep[1],
                to: gc::SWEEP_CB4.into(),
            },
            FuncRef {
                from: gc::PROGRAM.into(),
                slot: prog_ref.timer,
                to: gc::TIMER_CB.into(),
            },
            FuncRef {
                from: gc::PROGRAM.into(),
                slot: prog_ref.work,
                to: gc::WORK_CB.into(),
            },
            FuncRef {
                from: gc::WORK_CB.into(),
                slot: work_ref[0],
                to: gc::SWEEP_CB.into(),
            },
            FuncRef {
                from: gc::WORK_CB.into(),
                slot: work_ref[1],
                to: gc::SWEEP_CB4.into(),
            },
        ],
    })
}

impl Collector {
    /// What the manifest declares of it (`contract::collector`).
    pub fn declared(&self) -> crate::contract::collector::Collector {
        use crate::contract::collector::{Collector as Declared, CollectorCallback};
        Declared {
            program: self.program.name.clone(),
            section: self.program.section.clone(),
            insns: self.program.code.len(),
            map: self.map.name.clone(),
            callbacks: self
                .subprograms
                .iter()
                .map(|s| CollectorCallback {
                    name: s.name.clone(),
                    role: match s.name.as_str() {
                        gc::TIMER_CB => "timer",
                        gc::WORK_CB => "work",
                        _ => "for-each",
                    }
                    .into(),
                    insns: s.code.len(),
                })
                .collect(),
        }
    }

    /// Appends the listings of the program and its callbacks.
    pub(super) fn listing_into(&self, out: &mut String) {
        let mut one = |name: &str, section: &str, code: &Assembled| {
            out.push_str(&format!(
                "; program {name} (section {section}, the conntrack collector), {} insns\n",
                code.len()
            ));
            code.clone().take_listing_into(out);
            out.push('\n');
        };
        one(
            &self.program.name,
            &self.program.section,
            &self.program.code,
        );
        for s in &self.subprograms {
            one(&s.name, ".text", &s.code);
        }
    }
}

/// `dst = &callback` (an `ld_imm64` the object writer relocates); returns
/// its slot.
fn func_addr(a: &mut Asm, dst: Reg) -> usize {
    let slot = a.slot_count();
    a.push(Op::LoadImm64 { dst, imm: 0 });
    slot
}

/// The conntrack tables a sweep walks, in order (their visit callbacks:
/// `gc::SWEEP_CB`, `gc::SWEEP_CB4`).
const CT_MAPS: [&str; 2] = [layout::map::CT, layout::map::CT4];

/// The sweep's clock in r8: the time a test injected (already loaded
/// into r8; 0: none), else `bpf_ktime_get_ns`. `label` names the join.
fn clock_unless_injected(a: &mut Asm, label: &str) {
    let have_now = a.new_label(label);
    a.push(Op::jmp(JmpCond::Ne, Reg::R8, 0, have_now));
    a.push(Op::Call {
        helper: helper::KTIME_GET_NS,
    });
    a.push(Op::mov64(Reg::R8, Reg::R0));
    a.bind(have_now);
}

/// One walk of each conntrack table from the frame of the arming program
/// or the work callback: `r7` the gc value, `r8` the time. Leaves `r9` =
/// 1 when the walk stopped at its budget (more to do), else 0. Returns
/// the slots of its callback references ([`CT_MAPS`] order).
fn sweep(a: &mut Asm) -> [usize; 2] {
    let v = Reg::R7;
    a.push(Op::Call {
        helper: helper::KTIME_GET_NS,
    });
    a.push(Op::store(Size::U64, Reg::R10, STARTED, Reg::R0));
    a.push(Op::store(Size::U64, Reg::R10, CTX + vctx::NOW, Reg::R8));
    for (from, to) in [
        (gc::TCP_TIMEOUT, vctx::TCP),
        (gc::OTHER_TIMEOUT, vctx::OTHER),
        (gc::CURSOR, vctx::SKIP),
        (gc::BUDGET, vctx::BUDGET),
    ] {
        a.push(Op::load(Size::U64, Reg::R1, v, from));
        a.push(Op::store(Size::U64, Reg::R10, CTX + to, Reg::R1));
    }
    a.push(Op::store(Size::U64, Reg::R10, CTX + vctx::REMOVED, 0));
    a.push(Op::store(Size::U64, Reg::R10, CTX + vctx::VISITED, 0));
    let mut slot = [0; 2];
    let walked = a.new_label("gc_walked");
    for (i, m) in CT_MAPS.into_iter().enumerate() {
        if i > 0 {
            // The tables are one sequence: no further walk once the
            // budget is spent (skip + budget visited).
            let more = a.new_label("gc_next_table");
            a.push(Op::load(Size::U64, Reg::R2, Reg::R10, CTX + vctx::BUDGET));
            a.push(Op::jmp(JmpCond::Eq, Reg::R2, 0, more));
            a.push(Op::load(Size::U64, Reg::R3, Reg::R10, CTX + vctx::SKIP));
            a.push(Op::alu64(AluOp::Add, Reg::R3, Reg::R2));
            a.push(Op::load(Size::U64, Reg::R1, Reg::R10, CTX + vctx::VISITED));
            a.push(Op::jmp(JmpCond::Ge, Reg::R1, Reg::R3, walked));
            a.bind(more);
        }
        a.push(Op::ld_map_fd(Reg::R1, m));
        slot[i] = func_addr(a, Reg::R2);
        a.push(Op::mov64(Reg::R3, Reg::R10));
        a.push(Op::alu64(AluOp::Add, Reg::R3, i32::from(CTX)));
        a.push(Op::mov64(Reg::R4, 0));
        a.push(Op::Call {
            helper: helper::FOR_EACH_MAP_ELEM,
        });
    }
    a.bind(walked);
    // Figures.
    a.push(Op::Call {
        helper: helper::KTIME_GET_NS,
    });
    a.push(Op::load(Size::U64, Reg::R1, Reg::R10, STARTED));
    a.push(Op::alu64(AluOp::Sub, Reg::R0, Reg::R1));
    a.push(Op::store(Size::U64, v, gc::LAST_DURATION, Reg::R0));
    let not_max = a.new_label("gc_not_max");
    a.push(Op::load(Size::U64, Reg::R1, v, gc::MAX_DURATION));
    a.push(Op::jmp(JmpCond::Le, Reg::R0, Reg::R1, not_max));
    a.push(Op::store(Size::U64, v, gc::MAX_DURATION, Reg::R0));
    a.bind(not_max);
    add_to(a, v, gc::FIRINGS, None);
    a.push(Op::load(Size::U64, Reg::R1, Reg::R10, CTX + vctx::REMOVED));
    add_to(a, v, gc::REMOVED, Some(Reg::R1));
    a.push(Op::load(Size::U64, Reg::R1, Reg::R10, CTX + vctx::VISITED));
    a.push(Op::store(Size::U64, v, gc::LAST_VISITED, Reg::R1));
    // Complete unless it stopped at skip + budget.
    let complete = a.new_label("gc_complete");
    let done = a.new_label("gc_done");
    a.push(Op::load(Size::U64, Reg::R2, Reg::R10, CTX + vctx::BUDGET));
    a.push(Op::jmp(JmpCond::Eq, Reg::R2, 0, complete));
    a.push(Op::load(Size::U64, Reg::R3, Reg::R10, CTX + vctx::SKIP));
    a.push(Op::alu64(AluOp::Add, Reg::R3, Reg::R2));
    a.push(Op::jmp(JmpCond::Lt, Reg::R1, Reg::R3, complete));
    // Resume after what this firing kept: the entries it removed no
    // longer come before the stop.
    a.push(Op::load(Size::U64, Reg::R1, Reg::R10, CTX + vctx::REMOVED));
    a.push(Op::alu64(AluOp::Sub, Reg::R3, Reg::R1));
    a.push(Op::store(Size::U64, v, gc::CURSOR, Reg::R3));
    a.push(Op::mov64(Reg::R9, 1));
    a.push(Op::Ja { target: done });
    a.bind(complete);
    a.push(Op::store(Size::U64, v, gc::CURSOR, 0));
    add_to(a, v, gc::SWEEPS, None);
    a.push(Op::store(Size::U64, v, gc::LAST_SWEEP, Reg::R8));
    a.push(Op::mov64(Reg::R9, 0));
    a.bind(done);
    slot
}

/// `*(u64 *)(base + off) += src` (1 when `None`); clobbers `r2`.
fn add_to(a: &mut Asm, base: Reg, off: i16, src: Option<Reg>) {
    a.push(Op::load(Size::U64, Reg::R2, base, off));
    match src {
        Some(r) => a.push(Op::alu64(AluOp::Add, Reg::R2, r)),
        None => a.push(Op::alu64(AluOp::Add, Reg::R2, 1)),
    }
    a.push(Op::store(Size::U64, base, off, Reg::R2));
}

/// `r0 = code; exit`.
fn exit_with(a: &mut Asm, code: u32) {
    a.push(Op::mov64(Reg::R0, code as i32));
    a.push(Op::Exit);
}

/// Jumps to `skip` unless the run's configuration flags (the stack slot
/// `flags`) have `flag` set; clobbers r1.
fn unless_flag(a: &mut Asm, flags: i16, flag: u64, skip: Label) {
    a.push(Op::load(Size::U64, Reg::R1, Reg::R10, flags));
    a.push(Op::alu64(AluOp::And, Reg::R1, flag as i32));
    a.push(Op::jmp(JmpCond::Eq, Reg::R1, 0, skip));
}

/// `r1 = &value->wq` (`r7` the value).
fn wq_ptr(a: &mut Asm) {
    a.push(Op::mov64(Reg::R1, Reg::R7));
    a.push(Op::alu64(AluOp::Add, Reg::R1, i32::from(gc::WQ)));
}

/// `bpf_wq_start(&value->wq, 0)` (`r7` the value): the work callback
/// runs soon in a kernel worker.
fn kick(a: &mut Asm) {
    wq_ptr(a);
    a.push(Op::mov64(Reg::R2, 0));
    a.push(Op::CallKfunc {
        name: kfunc::WQ_START.name.into(),
    });
}

/// The slots of the arming program's callback references.
struct ArmRefs {
    /// Each conntrack table's visit ([`CT_MAPS`] order).
    sweep: [usize; 2],
    timer: usize,
    work: usize,
}

/// The arming program (see the module docs). Returns its code and the
/// slots of its callback references: the sweep's, the timer's, the
/// work's.
fn arming_program() -> Result<(Assembled, ArmRefs), AsmError> {
    use gc::cfg;
    const CFG: i16 = -128;
    const KEY: i16 = -132;
    let mut a = Asm::new();
    a.push(Op::mov64(Reg::R6, Reg::R1));
    // The configuration is the test run's context (a `syscall`
    // program's: read directly, its size checked by the kernel against
    // the loads).
    for w in 0..(cfg::SIZE / 8) as i16 {
        a.push(Op::load(Size::U64, Reg::R2, Reg::R1, 8 * w));
        a.push(Op::store(Size::U64, Reg::R10, CFG + 8 * w, Reg::R2));
    }
    a.push(Op::store(Size::U32, Reg::R10, KEY, 0));
    a.push(Op::ld_map_fd(Reg::R1, gc::MAP));
    a.push(Op::mov64(Reg::R2, Reg::R10));
    a.push(Op::alu64(AluOp::Add, Reg::R2, i32::from(KEY)));
    a.push(Op::Call {
        helper: helper::MAP_LOOKUP_ELEM,
    });
    let found = a.new_label("gc_value");
    a.push(Op::jmp(JmpCond::Ne, Reg::R0, 0, found));
    exit_with(&mut a, gc::ret::NO_VALUE);
    a.bind(found);
    a.push(Op::mov64(Reg::R7, Reg::R0));
    let at = |o: usize| CFG + o as i16;
    for (from, to) in [
        (cfg::INTERVAL, gc::INTERVAL),
        (cfg::TCP_TIMEOUT, gc::TCP_TIMEOUT),
        (cfg::OTHER_TIMEOUT, gc::OTHER_TIMEOUT),
        (cfg::BUDGET, gc::BUDGET),
    ] {
        a.push(Op::load(Size::U64, Reg::R1, Reg::R10, at(from)));
        a.push(Op::store(Size::U64, Reg::R7, to, Reg::R1));
    }
    // Arming (an apply) starts a new sweep; a sweep-only run (tests)
    // resumes where the last firing stopped, as the timer does.
    let keep_cursor = a.new_label("gc_keep_cursor");
    unless_flag(&mut a, at(cfg::FLAGS), cfg::ARM, keep_cursor);
    a.push(Op::store(Size::U64, Reg::R7, gc::CURSOR, 0));
    a.bind(keep_cursor);
    let arm = a.new_label("gc_arm");
    unless_flag(&mut a, at(cfg::FLAGS), cfg::SWEEP, arm);
    a.push(Op::load(Size::U64, Reg::R8, Reg::R10, at(cfg::NOW)));
    clock_unless_injected(&mut a, "gc_have_now");
    let sweep_ref = sweep(&mut a);
    a.bind(arm);
    let kick_label = a.new_label("gc_kick");
    unless_flag(&mut a, at(cfg::FLAGS), cfg::ARM, kick_label);
    // The workqueue first: a timer firing finds the work's callback set.
    wq_ptr(&mut a);
    a.push(Op::ld_map_fd(Reg::R2, gc::MAP));
    a.push(Op::mov64(Reg::R3, 0));
    a.push(Op::CallKfunc {
        name: kfunc::WQ_INIT.name.into(),
    });
    let wq_cb = a.new_label("gc_wq_callback");
    // A kfunc returns `int`: compare 32 bits.
    a.push(Op::jmp32(JmpCond::Eq, Reg::R0, 0, wq_cb));
    a.push(Op::jmp32(JmpCond::Eq, Reg::R0, -libc_ebusy(), wq_cb));
    exit_with(&mut a, gc::ret::WQ_INIT);
    a.bind(wq_cb);
    wq_ptr(&mut a);
    let work_ref = func_addr(&mut a, Reg::R2);
    a.push(Op::mov64(Reg::R3, 0));
    a.push(Op::mov64(Reg::R4, 0));
    a.push(Op::CallKfunc {
        name: kfunc::WQ_SET_CALLBACK.name.into(),
    });
    let timer_init = a.new_label("gc_timer_init");
    a.push(Op::jmp32(JmpCond::Eq, Reg::R0, 0, timer_init));
    exit_with(&mut a, gc::ret::WQ_SET_CALLBACK);
    a.bind(timer_init);
    a.push(Op::mov64(Reg::R1, Reg::R7));
    a.push(Op::ld_map_fd(Reg::R2, gc::MAP));
    a.push(Op::mov64(Reg::R3, 1)); // CLOCK_MONOTONIC
    a.push(Op::Call {
        helper: helper::TIMER_INIT,
    });
    let set_cb = a.new_label("gc_set_callback");
    a.push(Op::jmp(JmpCond::Eq, Reg::R0, 0, set_cb));
    a.push(Op::jmp(JmpCond::Eq, Reg::R0, -libc_ebusy(), set_cb));
    exit_with(&mut a, gc::ret::TIMER_INIT);
    a.bind(set_cb);
    a.push(Op::mov64(Reg::R1, Reg::R7));
    let timer_ref = func_addr(&mut a, Reg::R2);
    a.push(Op::Call {
        helper: helper::TIMER_SET_CALLBACK,
    });
    let start = a.new_label("gc_start");
    a.push(Op::jmp(JmpCond::Eq, Reg::R0, 0, start));
    exit_with(&mut a, gc::ret::SET_CALLBACK);
    a.bind(start);
    a.push(Op::mov64(Reg::R1, Reg::R7));
    a.push(Op::load(Size::U64, Reg::R2, Reg::R7, gc::INTERVAL));
    a.push(Op::mov64(Reg::R3, 0));
    a.push(Op::Call {
        helper: helper::TIMER_START,
    });
    a.push(Op::jmp(JmpCond::Eq, Reg::R0, 0, kick_label));
    exit_with(&mut a, gc::ret::START);
    // A kick: the work sweeps at the given time (0: its clock).
    a.bind(kick_label);
    let ok = a.new_label("gc_ok");
    unless_flag(&mut a, at(cfg::FLAGS), cfg::KICK, ok);
    a.push(Op::load(Size::U64, Reg::R1, Reg::R10, at(cfg::NOW)));
    a.push(Op::store(Size::U64, Reg::R7, gc::WQ_NOW, Reg::R1));
    kick(&mut a);
    a.push(Op::jmp32(JmpCond::Eq, Reg::R0, 0, ok));
    exit_with(&mut a, gc::ret::WQ_START);
    a.bind(ok);
    exit_with(&mut a, gc::ret::OK);
    Ok((
        a.assemble()?,
        ArmRefs {
            sweep: sweep_ref,
            timer: timer_ref,
            work: work_ref,
        },
    ))
}

/// `EBUSY`: `bpf_timer_init` / `bpf_wq_init` on a timer / workqueue an
/// earlier run initialised.
const fn libc_ebusy() -> i32 {
    16
}

/// `weir_gc_timer(map, key, value)` (softirq): queues the work, re-arms
/// after the interval. Nothing else runs here: the sweep is the work's.
fn timer_callback() -> Result<Assembled, AsmError> {
    let mut a = Asm::new();
    a.push(Op::mov64(Reg::R7, Reg::R3));
    kick(&mut a);
    a.push(Op::mov64(Reg::R1, Reg::R7));
    a.push(Op::load(Size::U64, Reg::R2, Reg::R7, gc::INTERVAL));
    a.push(Op::mov64(Reg::R3, 0));
    a.push(Op::Call {
        helper: helper::TIMER_START,
    });
    exit_with(&mut a, 0);
    a.assemble()
}

/// `weir_gc_work(map, key, value)` (process context): one firing of the
/// sweep at the injected time ([`gc::WQ_NOW`]) or the clock; queued
/// again while the sweep is not complete, else the injected time is
/// cleared.
fn work_callback() -> Result<(Assembled, [usize; 2]), AsmError> {
    let mut a = Asm::new();
    a.push(Op::mov64(Reg::R7, Reg::R3));
    a.push(Op::load(Size::U64, Reg::R8, Reg::R7, gc::WQ_NOW));
    clock_unless_injected(&mut a, "work_have_now");
    let r = sweep(&mut a);
    let complete = a.new_label("work_complete");
    a.push(Op::jmp(JmpCond::Eq, Reg::R9, 0, complete));
    kick(&mut a);
    exit_with(&mut a, 0);
    a.bind(complete);
    a.push(Op::store(Size::U64, Reg::R7, gc::WQ_NOW, 0));
    exit_with(&mut a, 0);
    Ok((a.assemble()?, r))
}

/// `weir_gc_visit(map, key, value, ctx)`: the rules for one entry
/// (module docs); returns 1 (stop) once the budget is spent. `v4`: the
/// callback of `weir_ct4` (`weir_gc_visit4`), whose 16-byte key
/// ([`layout::ct::v4`]) is widened to the 40-byte layout on the stack
/// first, so the rules read one layout; the flow lookup's key is
/// compacted back, and the delete takes the map's own key.
fn visit_callback(v4: bool) -> Result<Assembled, AsmError> {
    use layout::ct;
    const KEY: i16 = -40;
    /// v4: the widened key (40), the map's key pointer (spilled), the
    /// compacted lookup key (16).
    const WIDE: i16 = -80;
    const ORIG: i16 = -88;
    const KEY4: i16 = -104;
    let (map, key, val, c) = (Reg::R6, Reg::R7, Reg::R8, Reg::R9);
    let mut a = Asm::new();
    a.push(Op::mov64(map, Reg::R1));
    if v4 {
        a.push(Op::store(Size::U64, Reg::R10, ORIG, Reg::R2));
        for off in (0..ct::KEY_SIZE as i16).step_by(8) {
            a.push(Op::store(Size::U64, Reg::R10, WIDE + off, 0));
        }
        for (to, from, size) in [
            (ct::SRC, ct::v4::SRC, Size::U32),
            (ct::DST, ct::v4::DST, Size::U32),
            (ct::SPORT, ct::v4::SPORT, Size::U64),
        ] {
            a.push(Op::load(size, Reg::R1, Reg::R2, from));
            a.push(Op::store(size, Reg::R10, WIDE + to, Reg::R1));
        }
        a.push(Op::mov64(key, Reg::R10));
        a.push(Op::alu64(AluOp::Add, key, i32::from(WIDE)));
    } else {
        a.push(Op::mov64(key, Reg::R2));
    }
    a.push(Op::mov64(val, Reg::R3));
    a.push(Op::mov64(c, Reg::R4));
    let ret0 = a.new_label("visit_continue");
    let next = a.new_label("visit_next");
    a.push(Op::load(Size::U64, Reg::R1, c, vctx::VISITED));
    a.push(Op::alu64(AluOp::Add, Reg::R1, 1));
    a.push(Op::store(Size::U64, c, vctx::VISITED, Reg::R1));
    a.push(Op::load(Size::U64, Reg::R2, c, vctx::SKIP));
    a.push(Op::jmp(JmpCond::Le, Reg::R1, Reg::R2, ret0));
    // r4 = this protocol's timeout, r5 = now, r0 = the time word.
    a.push(Op::load(Size::U64, Reg::R4, c, vctx::OTHER));
    a.push(Op::load(Size::U8, Reg::R3, key, ct::PROTO));
    let timeout = a.new_label("visit_timeout");
    a.push(Op::jmp(JmpCond::Ne, Reg::R3, 6, timeout));
    a.push(Op::load(Size::U64, Reg::R4, c, vctx::TCP));
    a.bind(timeout);
    a.push(Op::load(Size::U64, Reg::R5, c, vctx::NOW));
    a.push(Op::load(Size::U64, Reg::R0, val, ct::TIME));
    a.push(Op::load(Size::U32, Reg::R1, val, ct::SERVICE));
    let forward = a.new_label("visit_forward");
    a.push(Op::jmp32(JmpCond::Set, Reg::R1, ct::FORWARD, forward));
    let seen = a.new_label("visit_seen");
    a.push(Op::jmp(JmpCond::Set, Reg::R0, ct::SEEN, seen));
    // Idle longer than the timeout: removed.
    a.push(Op::alu64(AluOp::And, Reg::R0, !ct::FLAGS));
    a.push(Op::jmp(JmpCond::Le, Reg::R5, Reg::R0, next));
    a.push(Op::alu64(AluOp::Sub, Reg::R5, Reg::R0));
    a.push(Op::jmp(JmpCond::Le, Reg::R5, Reg::R4, next));
    let delete = a.new_label("visit_delete");
    a.push(Op::Ja { target: delete });
    // Seen: the bit cleared, stamped with the sweep's time, flags kept.
    a.bind(seen);
    a.push(Op::alu64(
        AluOp::And,
        Reg::R0,
        ct::TRANSLATED | ct::CLIENT_FIRST,
    ));
    a.push(Op::alu64(AluOp::And, Reg::R5, !ct::FLAGS));
    a.push(Op::alu64(AluOp::Or, Reg::R5, Reg::R0));
    a.push(Op::store(Size::U64, val, ct::TIME, Reg::R5));
    a.push(Op::Ja { target: next });
    // A forward entry: past its timeout and its flow's entry gone.
    a.bind(forward);
    a.push(Op::mov64(Reg::R1, Reg::R0));
    a.push(Op::alu64(AluOp::And, Reg::R1, !ct::FLAGS));
    a.push(Op::jmp(JmpCond::Le, Reg::R5, Reg::R1, next));
    a.push(Op::alu64(AluOp::Sub, Reg::R5, Reg::R1));
    a.push(Op::jmp(JmpCond::Le, Reg::R5, Reg::R4, next));
    // The client end: the key's first end when CLIENT_FIRST, else its
    // second. r1 = &client address, r3 = client port.
    let second = a.new_label("visit_client_second");
    let have_client = a.new_label("visit_have_client");
    a.push(Op::mov64(Reg::R1, key));
    let first = a.new_label("visit_client_first");
    a.push(Op::jmp(JmpCond::Set, Reg::R0, ct::CLIENT_FIRST, first));
    a.push(Op::Ja { target: second });
    a.bind(first);
    a.push(Op::alu64(AluOp::Add, Reg::R1, i32::from(ct::SRC)));
    a.push(Op::load(Size::U16, Reg::R3, key, ct::SPORT));
    a.push(Op::Ja {
        target: have_client,
    });
    a.bind(second);
    a.push(Op::alu64(AluOp::Add, Reg::R1, i32::from(ct::DST)));
    a.push(Op::load(Size::U16, Reg::R3, key, ct::DPORT));
    a.bind(have_client);
    // Canonical order (prologue's canonical_key_of): first 8 address
    // bytes, next 8 (native-order unsigned words), then the port.
    let client_first = a.new_label("visit_client_is_first");
    let backend_first = a.new_label("visit_backend_is_first");
    for w in [0i16, 8] {
        a.push(Op::load(Size::U64, Reg::R4, Reg::R1, w));
        a.push(Op::load(Size::U64, Reg::R5, val, ct::FE_ADDR + w));
        a.push(Op::jmp(JmpCond::Lt, Reg::R4, Reg::R5, client_first));
        a.push(Op::jmp(JmpCond::Gt, Reg::R4, Reg::R5, backend_first));
    }
    a.push(Op::load(Size::U16, Reg::R5, val, ct::FE_PORT));
    a.push(Op::jmp(JmpCond::Le, Reg::R3, Reg::R5, client_first));
    a.push(Op::Ja {
        target: backend_first,
    });
    let lookup = a.new_label("visit_lookup");
    // Writes the key's ends: `client_at` gets the client, the other the
    // backend.
    for (label, client_at, backend_at, cport, bport) in [
        (client_first, ct::SRC, ct::DST, ct::SPORT, ct::DPORT),
        (backend_first, ct::DST, ct::SRC, ct::DPORT, ct::SPORT),
    ] {
        a.bind(label);
        for w in [0i16, 8] {
            a.push(Op::load(Size::U64, Reg::R4, Reg::R1, w));
            a.push(Op::store(Size::U64, Reg::R10, KEY + client_at + w, Reg::R4));
            a.push(Op::load(Size::U64, Reg::R4, val, ct::FE_ADDR + w));
            a.push(Op::store(
                Size::U64,
                Reg::R10,
                KEY + backend_at + w,
                Reg::R4,
            ));
        }
        a.push(Op::store(Size::U16, Reg::R10, KEY + cport, Reg::R3));
        a.push(Op::load(Size::U16, Reg::R4, val, ct::FE_PORT));
        a.push(Op::store(Size::U16, Reg::R10, KEY + bport, Reg::R4));
        a.push(Op::Ja { target: lookup });
    }
    a.bind(lookup);
    a.push(Op::load(Size::U8, Reg::R4, key, ct::PROTO));
    a.push(Op::store(Size::U8, Reg::R10, KEY + ct::PROTO, Reg::R4));
    a.push(Op::load(Size::U8, Reg::R4, key, ct::FAMILY));
    a.push(Op::store(Size::U8, Reg::R10, KEY + ct::FAMILY, Reg::R4));
    a.push(Op::store(Size::U16, Reg::R10, KEY + ct::FAMILY + 1, 0));
    let mut lookup_key = KEY;
    if v4 {
        for (to, from, size) in [
            (ct::v4::SRC, ct::SRC, Size::U32),
            (ct::v4::DST, ct::DST, Size::U32),
            (ct::v4::SPORT, ct::SPORT, Size::U64),
        ] {
            a.push(Op::load(size, Reg::R4, Reg::R10, KEY + from));
            a.push(Op::store(size, Reg::R10, KEY4 + to, Reg::R4));
        }
        lookup_key = KEY4;
    }
    a.push(Op::mov64(Reg::R1, map));
    a.push(Op::mov64(Reg::R2, Reg::R10));
    a.push(Op::alu64(AluOp::Add, Reg::R2, i32::from(lookup_key)));
    a.push(Op::Call {
        helper: helper::MAP_LOOKUP_ELEM,
    });
    a.push(Op::jmp(JmpCond::Ne, Reg::R0, 0, next));
    a.bind(delete);
    a.push(Op::mov64(Reg::R1, map));
    if v4 {
        a.push(Op::load(Size::U64, Reg::R2, Reg::R10, ORIG));
    } else {
        a.push(Op::mov64(Reg::R2, key));
    }
    a.push(Op::Call {
        helper: helper::MAP_DELETE_ELEM,
    });
    a.push(Op::jmp(JmpCond::Ne, Reg::R0, 0, next));
    add_to(&mut a, c, vctx::REMOVED, None);
    // Stop once skip + budget entries were walked (budget 0: never).
    a.bind(next);
    a.push(Op::load(Size::U64, Reg::R1, c, vctx::BUDGET));
    a.push(Op::jmp(JmpCond::Eq, Reg::R1, 0, ret0));
    a.push(Op::load(Size::U64, Reg::R2, c, vctx::SKIP));
    a.push(Op::alu64(AluOp::Add, Reg::R2, Reg::R1));
    a.push(Op::load(Size::U64, Reg::R1, c, vctx::VISITED));
    a.push(Op::jmp(JmpCond::Lt, Reg::R1, Reg::R2, ret0));
    exit_with(&mut a, 1);
    a.bind(ret0);
    exit_with(&mut a, 0);
    a.assemble()
}
