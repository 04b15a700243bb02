//! Maps and object: the maps every object has, the LPM entries of the
//! class map, and the object with its manifest section built from the
//! assembled stages.

use super::output::type_name;
use super::*;

pub(super) fn lpm_entry(c: &crate::model::Cidr, class: u32) -> LpmEntry {
    let addr = match c.addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    LpmEntry {
        cidr: c.to_string(),
        addr,
        len: u32::from(c.len),
        class,
    }
}

/// The maps every object has (context, conntrack, class tries and host
/// hashes sized by their fill, counters), in object order.
pub(super) fn fixed_maps(
    g: &Graph,
    opts: &Options,
    class_fill: &HashMap<&str, u64>,
) -> Vec<MapDef> {
    let nfill = |m: &str| class_fill.get(m).copied().unwrap_or(0);
    vec![
        MapDef::new(
            layout::map::CTX,
            MapType::PercpuArray,
            4,
            layout::ctx::SIZE,
            1,
        ),
        MapDef::new(
            layout::map::CT,
            opts.tables.kind.map_type(),
            layout::ct::KEY_SIZE,
            layout::ct::VALUE_SIZE,
            opts.tables.conntrack.max(1),
        ),
        // IPv4 flows (16-byte keys), the same size: `--ct-entries` is
        // per family.
        MapDef::new(
            layout::map::CT4,
            opts.tables.kind.map_type(),
            layout::ct::v4::KEY_SIZE,
            layout::ct::VALUE_SIZE,
            opts.tables.conntrack.max(1),
        ),
        MapDef::lpm_trie(
            layout::map::CLS4,
            4,
            4,
            (nfill(layout::map::CLS4) as u32).max(1),
        ),
        MapDef::lpm_trie(
            layout::map::CLS6,
            16,
            4,
            (nfill(layout::map::CLS6) as u32).max(1),
        ),
        MapDef::new(
            layout::map::HOST4,
            MapType::Hash,
            4,
            4,
            nfill(layout::map::HOST4) as u32 + opts.spare_endpoints,
        ),
        MapDef::new(
            layout::map::HOST6,
            MapType::Hash,
            16,
            4,
            nfill(layout::map::HOST6) as u32 + opts.spare_endpoints,
        ),
        MapDef::new(
            layout::map::CNT,
            MapType::PercpuArray,
            4,
            8,
            // With non-LRU tables one more: `table full`.
            g.provenance.len().max(1) as u32
                + u32::from(opts.tables.kind == crate::ebpf::state_tables::CtTable::Hash),
        ),
    ]
}

/// A program the eBPF back end accepted ([`super::ready`]): its stages
/// assembled and its maps sized, to be written as an object, a listing
/// and a manifest section ([`Ready::write`]).
pub struct Ready<'a> {
    pub(super) g: &'a Graph,
    pub(super) opts: &'a Options,
    /// Whether the stages' listings were written (`stage_listing.rs`).
    pub(super) listed: std::io::Result<()>,
    /// The stages, their listings written.
    pub(super) staged: Vec<stages::Stage>,
    pub(super) maps: Vec<MapDef>,
    pub(super) filled: HashMap<&'static str, u64>,
    pub(super) fill: Fill,
    pub(super) calls: usize,
    pub(super) lb: Option<LbState>,
    pub(super) audit_counters: u32,
}

impl Ready<'_> {
    /// Writes the object (`weir.o`) to `object` and the rest of its
    /// listing (`weir.asm`: the collector's, after the stages' that
    /// [`super::ready`] wrote) to `listing`, the writer [`super::ready`]
    /// was given, and returns the manifest section's data. Each stage's
    /// listing text was written and freed as the stage was assembled,
    /// never held beside the others: the listing of 100,000 one-peer
    /// rules is 195 MB (issue 21).
    pub fn write(
        self,
        object: &mut dyn std::io::Write,
        listing: &mut dyn std::io::Write,
    ) -> std::io::Result<EbpfManifest> {
        let events = self.opts.events;
        let audit_counters = self.audit_counters;
        let mut m = write_object(self, object, listing)?;
        m.audit_counters = audit_counters;
        m.events = events;
        Ok(m)
    }
}

/// The object and its manifest section from the assembled stages and the
/// maps.
fn write_object(
    ready: Ready<'_>,
    object_out: &mut dyn std::io::Write,
    out: &mut dyn std::io::Write,
) -> std::io::Result<EbpfManifest> {
    let Ready {
        g,
        opts,
        listed,
        staged,
        maps,
        filled,
        fill,
        calls,
        lb,
        audit_counters: _,
    } = ready;
    listed?;
    let mut programs = Vec::new();
    let mut defs = Vec::new();
    for (k, s) in staged.into_iter().enumerate() {
        programs.push(ProgramInfo {
            name: s.name.clone(),
            section: "classifier".into(),
            insns: s.code.len(),
            slot: (k > 0).then_some(k as u32),
            blocks: s.blocks,
            entries: s.entries,
        });
        defs.push(ProgramDef {
            name: s.name,
            section: "classifier".into(),
            code: s.code,
        });
    }
    // Non-LRU tables carry their collector (`ct_gc`).
    let mut maps = maps;
    let mut extras = crate::ebpf::Extras::default();
    let mut collector = None;
    if opts.tables.kind == crate::ebpf::state_tables::CtTable::Hash {
        let gc = super::ct_gc::collector()
            .unwrap_or_else(|e| panic!("internal compiler error: conntrack collector: {e:?}"));
        let mut listing = String::new();
        gc.listing_into(&mut listing);
        out.write_all(listing.as_bytes())?;
        collector = Some(gc.declared());
        maps.push(gc.map);
        extras.described.push(gc.program.name.clone());
        defs.push(gc.program);
        extras.subprograms = gc.subprograms;
        extras.func_refs = gc.refs;
        extras.typed.push(gc.typed);
    }
    crate::ebpf::elf::write_object_to(
        &ObjectDef {
            programs: defs,
            maps: maps.clone(),
            license: "GPL".into(),
        },
        &extras,
        object_out,
    )
    .map_err(|e| match e {
        crate::ebpf::elf::WriteError::Io(e) => e,
        crate::ebpf::elf::WriteError::Elf(e) => {
            panic!("internal compiler error: eBPF object: {e}")
        }
    })?;
    let manifest = EbpfManifest {
        object: WEIR_O.into(),
        mode: opts.mode,
        attach: vec!["tc-ingress".into()],
        entry: layout::MAIN_PROGRAM.into(),
        programs,
        maps: maps
            .iter()
            .map(|m| MapInfo {
                name: m.name.clone(),
                map_type: type_name(m.map_type).into(),
                key_size: m.key_size,
                value_size: m.value_size,
                max_entries: m.max_entries,
                filled: filled.get(m.name.as_str()).copied().unwrap_or(0),
            })
            .collect(),
        fill,
        counters: g.provenance.len() as u32,
        audit_counters: 0,
        events: None,
        max_tail_calls: calls,
        lb,
        state_tables: opts.tables,
        collector,
    };
    Ok(manifest)
}
