//! The sizes of the tables the eBPF datapath writes per flow, declared at
//! compile time (`weir compile --ct-entries N --lb-entries N`) and
//! recorded in the manifest (`backends.ebpf.state_tables`).
//!
//! Two knobs, like Cilium's `bpf-ct-global-*-max` and
//! `bpf-nat-global-max`: the policy conntrack (`weir_ct4` for IPv4
//! flows and `weir_ct` for IPv6 ones, each of this size, one entry per
//! allowed flow and a second, the forward entry, per translated flow; a
//! translated flow's own entry also carries its reverse translation) and
//! the service state (the affinity `weir_lb_aff` and socket `weir_lb_sk`
//! tables; the standalone service object's `weir_lb_ct` and reverse-NAT
//! table `weir_lb_rev` too).
//! By default ([`CtTable::Hash`]) `weir_ct` is a preallocated non-LRU
//! hash: cheaper inserts (no LRU free-list work); a full table denies
//! the new flow and counts it (`codegen/emit/fixed.rs`), and the
//! object carries its collector (`codegen::ct_gc`: a BPF timer that
//! `weir apply` arms, so idle entries go wherever the programs run,
//! with no user-space process). With [`CtTable::Lru`] (`--ct-table
//! lru`) it is an LRU hash: when full, an insert evicts the least
//! recently used entries (the kernel's LRU lists; with per-CPU free
//! lists eviction can begin a little before the table is completely
//! full); no insert fails for lack of room, and there is no collector.
//! The service tables (affinity, sockets, and the standalone service
//! object's) are LRU hashes either way. What a full table costs is
//! documented in docs/runtime.md ("When a state table is full"). The
//! tables are
//! preallocated: their memory is taken at load time whatever the traffic
//! (~136 bytes per `weir_ct` entry, two per translated flow, see
//! docs/runtime.md for the measured figures).

/// `weir_ct` entries by default: 512 Ki flows (256 Ki translated ones: two
/// entries each), Cilium's
/// `bpf-ct-global-tcp-max`.
pub const DEFAULT_CONNTRACK: u32 = 524_288;
/// Service-state entries (affinity, sockets) by default,
/// Cilium's `bpf-ct-global-any-max` and `bpf-sock-rev-map-max`.
pub const DEFAULT_TRANSLATION: u32 = 262_144;

impl CtTable {
    /// The map type of the per-flow tables.
    pub fn map_type(self) -> crate::ebpf::MapType {
        match self {
            CtTable::Lru => crate::ebpf::MapType::LruHash,
            CtTable::Hash => crate::ebpf::MapType::Hash,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CtTable::Lru => "lru",
            CtTable::Hash => "hash",
        }
    }

    pub fn parse(s: &str) -> Option<CtTable> {
        match s {
            "lru" => Some(CtTable::Lru),
            "hash" => Some(CtTable::Hash),
            _ => None,
        }
    }
}

pub use crate::contract::ebpf::{CtTable, StateTables};

impl Default for StateTables {
    fn default() -> Self {
        StateTables {
            conntrack: DEFAULT_CONNTRACK,
            translation: DEFAULT_TRANSLATION,
            kind: CtTable::default(),
        }
    }
}
