//! The in-kernel conntrack collector's state (`weir_ct_gc`, one array
//! entry pinned beside `weir_ct`; `codegen::ct_gc`): a `struct bpf_timer`
//! and the sweep's configuration and figures, all `u64` (ns or counts).
//! The runtime arms it by a test run of [`PROGRAM`] whose packet carries
//! a [`cfg`] after the 14-byte Ethernet header.

/// The map and the arming program.
pub const MAP: &str = "weir_ct_gc";
pub const PROGRAM: &str = "weir_gc_arm";
/// The callbacks (static functions in `.text`).
pub const TIMER_CB: &str = "weir_gc_timer";
pub const SWEEP_CB: &str = "weir_gc_visit";
/// The visit callback of `weir_ct4` (IPv4 flows' 16-byte keys).
pub const SWEEP_CB4: &str = "weir_gc_visit4";

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
pub const VALUE_SIZE: u32 = 112;

/// The names of the value's fields in its BTF struct, in order (the
/// timer first).
pub const FIELDS: [&str; 13] = [
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
];

/// Delay (ns) before a firing that stopped at its budget resumes.
pub const RESUME_NS: i32 = 1_000_000;

/// The arming test run's input after the Ethernet header: six `u64`
/// (native order).
pub mod cfg {
    /// 0: now is `bpf_ktime_get_ns`; else the time the sweep runs at.
    pub const NOW: usize = 0;
    pub const INTERVAL: usize = 8;
    pub const TCP_TIMEOUT: usize = 16;
    pub const OTHER_TIMEOUT: usize = 24;
    pub const BUDGET: usize = 32;
    pub const FLAGS: usize = 40;
    pub const SIZE: usize = 48;
    /// [`FLAGS`] bits: sweep once now, and (re)arm the timer.
    pub const SWEEP: u64 = 1;
    pub const ARM: u64 = 2;
}

/// The arming program's return values.
pub mod ret {
    pub const OK: u32 = 0;
    pub const SHORT: u32 = 2;
    pub const NO_VALUE: u32 = 3;
    pub const TIMER_INIT: u32 = 4;
    pub const SET_CALLBACK: u32 = 5;
    pub const START: u32 = 6;
}
