//! The sizes of the tables the eBPF datapath writes per flow, declared at
//! compile time (`weir compile --ct-entries N --lb-entries N`) and
//! recorded in the manifest (`backends.ebpf.state_tables`).
//!
//! Two knobs, like Cilium's `bpf-ct-global-*-max` and
//! `bpf-nat-global-max`: the policy conntrack (`weir_ct`, one entry per
//! allowed flow; a translated flow's also carries its reverse
//! translation) and the service translation state (`weir_lb_ct`, one
//! entry per translated flow, plus the affinity `weir_lb_aff` and socket
//! `weir_lb_sk` tables, which share the size; the standalone service
//! object's reverse-NAT table `weir_lb_rev` too).
//! Every one of them is an LRU hash: when one is full, an insert evicts
//! the least recently used entries of that table (the kernel's LRU lists;
//! with per-CPU free lists eviction can begin a little before the table
//! is completely full). No insert fails for lack of room, so no packet is
//! dropped for it; what an eviction costs is documented in
//! docs/runtime.md ("When a state table is full"). The tables are
//! preallocated: their memory is taken at load time whatever the traffic
//! (~136 bytes per `weir_ct` entry, ~130 per `weir_lb_ct` entry, see
//! docs/runtime.md for the measured figures).

use serde::{Deserialize, Serialize};

/// `weir_ct` entries by default: 512 Ki flows, Cilium's
/// `bpf-ct-global-tcp-max`.
pub const DEFAULT_CONNTRACK: u32 = 524_288;
/// Translation-state entries by default: 256 Ki translated flows,
/// Cilium's `bpf-ct-global-any-max` and `bpf-sock-rev-map-max`.
pub const DEFAULT_TRANSLATION: u32 = 262_144;

/// The per-flow tables' sizes (entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateTables {
    /// `weir_ct`: the policy conntrack (LRU).
    pub conntrack: u32,
    /// `weir_lb_ct`, `weir_lb_aff`, `weir_lb_sk` (and the standalone
    /// service object's `weir_lb_rev`): the
    /// service translation state (LRU; only in programs with services).
    pub translation: u32,
}

impl Default for StateTables {
    fn default() -> Self {
        StateTables {
            conntrack: DEFAULT_CONNTRACK,
            translation: DEFAULT_TRANSLATION,
        }
    }
}
