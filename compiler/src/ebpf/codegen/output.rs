//! The generated back end: the object, its listing and the manifest
//! section as written (sorted keys), and `--report`'s summary.

use super::*;

// The section's reader types are the contract's (one home for what
// the compiler writes and the runtime reads).
pub use crate::contract::ebpf::{EbpfManifest, Fill, LpmEntry, MapInfo, ProgramInfo};

/// `backends.ebpf` as written: [`EbpfManifest`] plus a `capacity`
/// object for `weir compile --report`, fields in sorted key order (as are
/// the fields of every type it holds; see [`Section::sorted`]).
#[derive(Serialize)]
pub(super) struct SectionView<'a> {
    attach: &'a [String],
    #[serde(skip_serializing_if = "is_zero")]
    audit_counters: u32,
    capacity: BTreeMap<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    collector: Option<&'a crate::contract::collector::Collector>,
    counters: u32,
    entry: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<super::events::EventOptions>,
    fill: &'a Fill,
    #[serde(skip_serializing_if = "Option::is_none")]
    lb: Option<&'a LbState>,
    maps: &'a [MapInfo],
    max_tail_calls: usize,
    mode: Mode,
    object: &'a str,
    programs: &'a [ProgramInfo],
    state_tables: crate::ebpf::state_tables::StateTables,
}

/// The generated back end.
#[derive(Debug, Clone)]
pub struct EbpfOutput {
    pub object: Vec<u8>,
    pub manifest: EbpfManifest,
    /// `weir compile --emit asm`: every program's listing.
    pub listing: String,
}

impl EbpfOutput {
    /// The bundle files (`weir.o`, `weir.asm`) and manifest section (with
    /// a `capacity` object for `weir compile --report`), copied; see
    /// [`EbpfOutput::into_artifacts`].
    pub fn artifacts(&self) -> BackendArtifacts {
        self.clone().into_artifacts()
    }

    /// [`EbpfOutput::artifacts`], taking the object and listing instead of
    /// copying them: `weir compile` of 100,000 one-peer rules held its
    /// 195 MB listing twice (issue 21).
    pub fn into_artifacts(self) -> BackendArtifacts {
        let manifest = self.section();
        let mut files = BTreeMap::new();
        files.insert(WEIR_O.to_string(), self.object);
        files.insert(WEIR_ASM.to_string(), self.listing.into_bytes());
        BackendArtifacts { files, manifest }
    }

    /// The manifest section (`backends.ebpf`), with a `capacity` object.
    fn section(&self) -> Section {
        section(&self.manifest)
    }

    /// Capacity lines for `weir compile --report`.
    pub fn report(&self) -> String {
        let mut s = format!("ebpf ({} mode)\n  programs:\n", self.manifest.mode.name());
        for p in &self.manifest.programs {
            s += &format!(
                "    {:<12} {:>7} insns  {:>5} blocks  {:>4} entries\n",
                p.name, p.insns, p.blocks, p.entries
            );
        }
        s += &format!(
            "  tail calls: at most {} per packet (limit {MAX_TAIL_CALLS})\n",
            self.manifest.max_tail_calls
        );
        s += "  maps:\n";
        for m in &self.manifest.maps {
            s += &format!(
                "    {:<12} {:<14} key {:>3} value {:>4}  {:>8} filled / {:>8} max\n",
                m.name, m.map_type, m.key_size, m.value_size, m.filled, m.max_entries
            );
        }
        s
    }
}

/// The manifest section (`backends.ebpf`) of `m`, with a `capacity`
/// object for `weir compile --report`.
pub fn section(m: &EbpfManifest) -> Section {
    let mut capacity = BTreeMap::new();
    for p in &m.programs {
        capacity.insert(
            format!("program {}", p.name),
            serde_json::json!(format!("{} insns", p.insns)),
        );
    }
    for map in &m.maps {
        capacity.insert(
            format!("map {}", map.name),
            serde_json::json!(format!("{} filled / {} max", map.filled, map.max_entries)),
        );
    }
    capacity.insert(
        "tail calls per packet (most)".into(),
        serde_json::json!(m.max_tail_calls),
    );
    Section::sorted(&SectionView {
        attach: &m.attach,
        audit_counters: m.audit_counters,
        capacity,
        collector: m.collector.as_ref(),
        counters: m.counters,
        entry: &m.entry,
        events: m.events,
        fill: &m.fill,
        lb: m.lb.as_ref(),
        maps: &m.maps,
        max_tail_calls: m.max_tail_calls,
        mode: m.mode,
        object: &m.object,
        programs: &m.programs,
        state_tables: m.state_tables,
    })
}

pub(super) fn is_zero(n: &u32) -> bool {
    *n == 0
}

pub(super) fn type_name(t: MapType) -> &'static str {
    match t {
        MapType::Hash => "hash",
        MapType::Array => "array",
        MapType::ProgArray => "prog_array",
        MapType::PercpuArray => "percpu_array",
        MapType::LruHash => "lru_hash",
        MapType::LpmTrie => "lpm_trie",
        MapType::RingBuf => "ringbuf",
        _ => "other",
    }
}
