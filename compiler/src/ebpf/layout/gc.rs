//! The in-kernel conntrack collector's state (`weir_ct_gc`, one array
//! entry pinned beside `weir_ct`; `codegen::ct_gc`): a `struct bpf_timer`
//! that fires every interval, a `struct bpf_wq` whose work does the sweep
//! in process context, and the sweep's configuration and figures, all
//! `u64` (ns or counts).
//! The runtime arms it by a test run of [`PROGRAM`] whose context is a
//! [`cfg`].

/// The map and the arming program.
pub const MAP: &str = "weir_ct_gc";
pub const PROGRAM: &str = "weir_gc_arm";
/// The arming program's section: a sleepable `BPF_PROG_TYPE_SYSCALL`
/// (libbpf's `syscall`), because this kernel sets a workqueue's callback
/// only from a sleepable program. aya 0.14 has no such program type: the
/// runtime loads it itself (`weir_runtime::ebpf::gc_prog`).
pub const SECTION: &str = "syscall";
/// The callbacks (static functions in `.text`).
pub const TIMER_CB: &str = "weir_gc_timer";
/// The workqueue callback: one firing of the sweep, in process context.
pub const WORK_CB: &str = "weir_gc_work";
pub const SWEEP_CB: &str = "weir_gc_visit";
/// The visit callback of `weir_ct4` (IPv4 flows' 16-byte keys).
pub const SWEEP_CB4: &str = "weir_gc_visit4";
/// Every callback, in `.text` order (the manifest lists them).
pub const CALLBACKS: [&str; 4] = [TIMER_CB, WORK_CB, SWEEP_CB, SWEEP_CB4];

/// Value offsets.
pub const TIMER: i16 = 0;
/// Clock (`CLOCK_MONOTONIC` ns, or the test run's injected time) of the
/// last completed sweep.
pub const LAST_SWEEP: i16 = 16;
/// Completed sweeps (all of `weir_ct` looked at).
pub const SWEEPS: i16 = 24;
/// Entries removed, in total.
pub const REMOVED: i16 = 32;
/// Duration (ns) of the last firing's walk, and the longest.
pub const LAST_DURATION: i16 = 40;
pub const MAX_DURATION: i16 = 48;
/// Entries the last firing walked (skipped ones included).
pub const LAST_VISITED: i16 = 56;
/// Firings (each walks at most [`BUDGET`] entries past [`CURSOR`]).
pub const FIRINGS: i16 = 64;
/// Where the next firing resumes (entries to skip; 0: a new sweep).
pub const CURSOR: i16 = 72;
/// Configuration, written by each arming run.
pub const INTERVAL: i16 = 80;
pub const TCP_TIMEOUT: i16 = 88;
pub const OTHER_TIMEOUT: i16 = 96;
/// Entries a firing processes at most (0: all).
pub const BUDGET: i16 = 104;
/// The `struct bpf_wq` (16 bytes).
pub const WQ: i16 = 112;
/// The time the workqueue's sweep runs at (0: `bpf_ktime_get_ns`): set
/// by a kick with an injected clock (tests), cleared when that sweep is
/// complete.
pub const WQ_NOW: i16 = 128;
pub const VALUE_SIZE: u32 = 136;

/// The names of the value's fields in its BTF struct, in order (the
/// timer first).
pub const FIELDS: [&str; 15] = [
    "timer",
    "last_sweep_ns",
    "sweeps",
    "removed",
    "last_duration_ns",
    "max_duration_ns",
    "last_visited",
    "firings",
    "cursor",
    "interval_ns",
    "tcp_timeout_ns",
    "other_timeout_ns",
    "budget",
    "wq",
    "wq_now",
];

/// The arming test run's context: six `u64` (native order).
pub mod cfg {
    /// 0: now is `bpf_ktime_get_ns`; else the time the sweep runs at.
    pub const NOW: usize = 0;
    pub const INTERVAL: usize = 8;
    pub const TCP_TIMEOUT: usize = 16;
    pub const OTHER_TIMEOUT: usize = 24;
    pub const BUDGET: usize = 32;
    pub const FLAGS: usize = 40;
    pub const SIZE: usize = 48;
    /// [`FLAGS`] bits: sweep once now (in the test run), (re)arm the
    /// timer and the workqueue, and kick the workqueue (a sweep in
    /// process context at [`NOW`], without the timer).
    pub const SWEEP: u64 = 1;
    pub const ARM: u64 = 2;
    pub const KICK: u64 = 4;
}

/// The arming program's return values.
pub mod ret {
    pub const OK: u32 = 0;
    pub const SHORT: u32 = 2;
    pub const NO_VALUE: u32 = 3;
    pub const TIMER_INIT: u32 = 4;
    pub const SET_CALLBACK: u32 = 5;
    pub const START: u32 = 6;
    pub const WQ_INIT: u32 = 7;
    pub const WQ_SET_CALLBACK: u32 = 8;
    pub const WQ_START: u32 = 9;
}
