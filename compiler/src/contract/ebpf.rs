//! The eBPF back end's part of the contract: the manifest's
//! `backends.ebpf` section ([`EbpfManifest`]: object, hooks, programs,
//! maps and what fills them) and the service maps' allocation state
//! ([`LbState`]), which the manifest carries and the endpoints record
//! (`endpoints.state`) keeps after run-time backend changes. Types only:
//! the code generator writes them ([`crate::ebpf::codegen`]), the service
//! fill computes and changes them ([`crate::ebpf::service::fill`]), the
//! runtime reads them.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::BackendGroup;
use crate::flowhash::proto_number;
use crate::model::{Backend, Frontend};

/// One program of the object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramInfo {
    /// Layout blocks it holds and blocks entered by tail call.
    pub blocks: usize,
    pub entries: usize,
    /// Instruction slots.
    pub insns: usize,
    pub name: String,
    pub section: String,
    /// Prog-array slot (`weir_jmp`); `None` for the entry program.
    pub slot: Option<u32>,
}

/// One map of the object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapInfo {
    /// Entries the runtime fills from [`Fill`].
    pub filled: u64,
    pub key_size: u32,
    pub max_entries: u32,
    pub name: String,
    #[serde(rename = "type")]
    pub map_type: String,
    pub value_size: u32,
}

/// One LPM entry: address bytes (network order), prefix length, class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LpmEntry {
    pub addr: Vec<u8>,
    pub cidr: String,
    pub class: u32,
    pub len: u32,
}

/// What the runtime writes into the maps before attaching.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Fill {
    /// Class → its atom bits, when they are not in the rows but in the
    /// hash `weir_atom_bits` (`(class, word index)` → word, one entry per
    /// non-zero word; `ebpf::codegen::sparse_atoms`); empty otherwise.
    #[serde(default, skip_serializing_if = "super::atom_rows::AtomRows::is_empty")]
    pub atom_bits: super::atom_rows::AtomRows,
    /// Class → its row in `weir_atoms`, as 32-bit words: the atom bits
    /// (bit `a % 32` of word `a / 32`), then one `u16` branch index per
    /// map-backed class table (`NO_BRANCH`: the table's default).
    /// Held and written by their non-zero words ([`super::atom_rows`]:
    /// `{"rows": [[[index, word], …], …], "width": words}`).
    pub atom_rows: super::atom_rows::AtomRows,
    pub cls4: Vec<LpmEntry>,
    pub cls6: Vec<LpmEntry>,
    /// `self` (`weir_self4` / `weir_self6`): each endpoint address with
    /// its endpoint's canonical address (`graph/same_endpoint.rs`); empty
    /// without a `self` rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub same_endpoint: Vec<(std::net::IpAddr, std::net::IpAddr)>,
}

/// The `backends.ebpf` section of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EbpfManifest {
    pub object: String,
    pub mode: Mode,
    /// TC hooks the entry program attaches to (`tc-ingress`, …).
    pub attach: Vec<String>,
    pub entry: String,
    pub programs: Vec<ProgramInfo>,
    pub maps: Vec<MapInfo>,
    pub fill: Fill,
    /// Provenance ids counted in `weir_cnt` (= its size).
    pub counters: u32,
    /// Provenance ids counted in `weir_audit_cnt` (= its size): the audit
    /// decisions (docs/language.md §4, "Audit policies"); 0 when the
    /// program has no audit policies (and no such map).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub audit_counters: u32,
    /// Verdict events (`weir_events` ring buffer and its per-CPU rate
    /// limit, `weir_ev_state`; docs/monitor.md); `None`: compiled with
    /// `--events off`, or before events existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<EventOptions>,
    /// The most tail calls one packet's path makes (kernel limit 33).
    #[serde(default)]
    pub max_tail_calls: usize,
    /// Service maps: what fills them (`LbState::initial_ops`) and the
    /// allocation state run-time backend changes continue from. `None`
    /// when the program has no service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lb: Option<LbState>,
    /// The per-flow tables' sizes this object was compiled with
    /// (`weir compile --ct-entries/--lb-entries`); read as the defaults
    /// from a manifest written before they were recorded.
    #[serde(default)]
    pub state_tables: StateTables,
    /// The conntrack collector's program, callbacks and map (a non-LRU
    /// `weir_ct`); `None` for an LRU table, or a manifest written before
    /// it was declared (`super::collector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector: Option<super::collector::Collector>,
}

/// A backend as the maps hold it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Be {
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u16,
}

impl From<&Backend> for Be {
    fn from(b: &Backend) -> Be {
        Be {
            addr: b.addr,
            port: b.port,
            weight: b.weight,
        }
    }
}

/// A frontend as the maps key it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FeAddr {
    pub addr: IpAddr,
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
}

impl From<&Frontend> for FeAddr {
    fn from(f: &Frontend) -> FeAddr {
        FeAddr {
            addr: f.addr,
            port: f.port,
            proto: proto_number(f.proto),
        }
    }
}

/// One backend set: the usable backends of one service for one
/// [`BackendGroup`] of its frontends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetState {
    /// Candidates: ready, weight > 0, sorted (the interpreter's order).
    pub backends: Vec<Be>,
    pub id: u32,
    /// Slot → index into `backends`. Maglev: the identity (the table holds
    /// indexes); random: each backend `weight / gcd` times.
    pub slots: Vec<u32>,
    /// Maglev table index, when balanced by Maglev and non-empty.
    pub table: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SvcState {
    pub affinity: Option<u32>,
    pub frontends: Vec<FeAddr>,
    pub maglev: bool,
    pub name: String,
    pub no_backends: u32,
    /// Its backends are resolved per frontend protocol (a named target
    /// port): the sets are keyed by family and protocol.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub per_protocol: bool,
    /// Backend group ([`BackendGroup`]: the family, and the protocol when
    /// `per_protocol`) → current set.
    pub sets: BTreeMap<BackendGroup, SetState>,
}

impl SvcState {
    /// The group of one of its frontends.
    pub fn group_of(&self, f: &FeAddr) -> BackendGroup {
        BackendGroup::of(f.addr, f.proto, self.per_protocol)
    }
}

/// Allocation state of the service maps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbState {
    /// (service, addr, port) → backend id (a list in JSON: tuple keys
    /// are not JSON object keys).
    #[serde(with = "id_list")]
    pub(crate) backend_ids: BTreeMap<(usize, IpAddr, u16), u32>,
    pub capacity: Capacity,
    pub(crate) free_tables: VecDeque<u32>,
    pub(crate) next_backend_id: u32,
    pub(crate) next_set: u32,
    pub services: Vec<SvcState>,
}

mod id_list {
    use std::collections::BTreeMap;
    use std::net::IpAddr;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    type Ids = BTreeMap<(usize, IpAddr, u16), u32>;

    pub fn serialize<S: Serializer>(m: &Ids, s: S) -> Result<S::Ok, S::Error> {
        let v: Vec<(usize, IpAddr, u16, u32)> =
            m.iter().map(|(&(a, b, c), &d)| (a, b, c, d)).collect();
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Ids, D::Error> {
        let v: Vec<(usize, IpAddr, u16, u32)> = Vec::deserialize(d)?;
        Ok(v.into_iter().map(|(a, b, c, d)| ((a, b, c), d)).collect())
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

// The option and capacity types the section records. They are defined
// here, in the contract, so that the contract depends on nothing in
// `ebpf/`; their methods live beside the code that gives them meaning
// (`ebpf::codegen::Mode::name`, `ebpf::layout::service::Capacity`
// map definitions, `ebpf::codegen::events::EventOptions::check`,
// `ebpf::state_tables`).

/// Which sides one hook enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Egress of the source ∧ ingress of the destination (a node or router
    /// hook that sees both ends).
    #[default]
    Node,
    /// Only the destination's ingress side (`at ingress`).
    Ingress,
    /// Only the source's egress side (`at egress`).
    Egress,
}

/// Map capacities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Capacity {
    pub affinity: u32,
    pub backends: u32,
    pub conntrack: u32,
    pub frontends: u32,
    /// Services (entries of [`map::SVC_CNT`]).
    #[serde(default)]
    pub services: u32,
    pub slots: u32,
    pub sockets: u32,
    /// Maglev tables (64 KiB each, preallocated).
    pub tables: u32,
}

/// The events options of a compile (`weir compile --events …`); fields
/// in sorted order (the manifest's rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventOptions {
    /// Bucket size in events, ≥ 1.
    pub burst: u32,
    /// Events per second per CPU (token bucket refill), ≥ 1.
    pub rate: u32,
    /// Ring buffer bytes: a power of two, at least a page (4096).
    pub ring_bytes: u32,
}

/// What kind of kernel table `weir_ct` and `weir_lb_ct` are
/// (`weir compile --ct-table lru|hash`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CtTable {
    /// `BPF_MAP_TYPE_LRU_HASH`: a full table evicts its least recently
    /// used entries; no insert fails.
    Lru,
    /// `BPF_MAP_TYPE_HASH`, preallocated (the default): an insert into a
    /// full table fails, and the flow is denied and counted (`table
    /// full`); the in-kernel collector the object carries (`weir_ct_gc`,
    /// a BPF timer armed at apply) removes expired entries.
    #[default]
    Hash,
}

/// The kind an older manifest without `kind` was compiled with.
fn older_kind() -> CtTable {
    CtTable::Lru
}

/// The per-flow tables' sizes (entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateTables {
    /// `weir_ct`: the policy conntrack (two entries per translated flow:
    /// its own and its forward entry; one per other flow).
    pub conntrack: u32,
    /// The kind of `weir_ct` (an older manifest without
    /// it was compiled with LRU tables). Fields in sorted key order (the
    /// manifest's sections are written sorted).
    #[serde(default = "older_kind")]
    pub kind: CtTable,
    /// `weir_lb_aff`, `weir_lb_sk` (and the standalone service object's
    /// `weir_lb_ct` and `weir_lb_rev`): the
    /// service translation state (LRU; only in programs with services).
    pub translation: u32,
}
