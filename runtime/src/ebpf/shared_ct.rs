//! The conntrack map every generation of an instance shares (`weir_ct`,
//! pinned once, reused by name so that a switch loses no connection) must
//! be the size and kind the applied bundle declares (`weir compile
//! --ct-entries`, `--ct-table`, `backends.ebpf.state_tables` in the
//! manifest).
//!
//! aya reuses a pinned map by name without comparing its definition, so
//! without this a bundle compiled with another size — or a weir upgrade
//! that changed the default — would run on the old map while its
//! manifest (and `weir compile --report`) claimed the new size. Before a
//! generation loads, [`unpin_if_resized`] compares the pinned map with the
//! manifest's `weir_ct`; when they differ it keeps the old map open and
//! removes its pin, so the loader creates and pins one of the declared
//! size, and [`carry_over`] copies the old entries into it (as many as
//! fit), so established flows survive a resize as they survive any other
//! switch. Entries the old generation inserts between the copy and the
//! switch are not carried (they are decided again as new flows). When the
//! key or value layout differs (another weir version), nothing is
//! carried: the new map starts empty.

use std::path::Path;

use aya::maps::{Map, MapData};
use weir_compiler::ebpf::codegen::EbpfManifest;
use weir_compiler::ebpf::layout::map as names;

use super::load::{keys_raw, lookup_raw, update_raw};
use super::EbpfError;

/// The pinned map at `path`, unpinned, when its definition differs from
/// the manifest's `weir_ct`; `None` when there is none or it matches.
pub(crate) fn unpin_if_resized(
    path: &Path,
    manifest: &EbpfManifest,
) -> Result<Option<Map>, EbpfError> {
    let Some(want) = manifest.maps.iter().find(|m| m.name == names::CT) else {
        return Ok(None);
    };
    if !path.exists() {
        return Ok(None);
    }
    let err = |step: &str, e: String| EbpfError::Aya {
        step: format!("{step} {}", path.display()),
        message: e,
    };
    let old = MapData::from_pin(path)
        .map_err(|e| err("opening the pinned conntrack map", e.to_string()))?;
    let info = old
        .info()
        .map_err(|e| err("reading the pinned conntrack map", e.to_string()))?;
    let kind = info.map_type().map(|t| t as u32).ok();
    if (info.max_entries(), info.key_size(), info.value_size())
        == (want.max_entries, want.key_size, want.value_size)
        && kind == Some(manifest.state_tables.kind.map_type().id())
    {
        return Ok(None);
    }
    std::fs::remove_file(path).map_err(|source| EbpfError::Io {
        context: format!("unpinning the resized conntrack map {}", path.display()),
        source,
    })?;
    Ok(Some(
        if kind == Some(weir_compiler::ebpf::MapType::Hash.id()) {
            Map::HashMap(old)
        } else {
            Map::LruHashMap(old)
        },
    ))
}

/// Copies `old`'s entries into `new` (the generation's `weir_ct`) when
/// their layouts match, up to `new`'s size; returns how many.
pub(crate) fn carry_over(
    old: &Map,
    new: &Map,
    manifest: &EbpfManifest,
) -> Result<usize, EbpfError> {
    let Some(want) = manifest.maps.iter().find(|m| m.name == names::CT) else {
        return Ok(0);
    };
    let info = super::load::map_data(old)
        .info()
        .map_err(|e| EbpfError::Aya {
            step: "reading the old conntrack map".into(),
            message: e.to_string(),
        })?;
    if (info.key_size(), info.value_size()) != (want.key_size, want.value_size) {
        return Ok(0);
    }
    let io = |context: &str, source: std::io::Error| EbpfError::Io {
        context: context.into(),
        source,
    };
    let keys = keys_raw(old, want.key_size as usize)
        .map_err(|e| io("reading the old conntrack map", e))?;
    let mut n = 0;
    for k in keys.iter().take(want.max_entries as usize) {
        // An entry may have expired or been evicted since the key walk.
        if let Some(v) = lookup_raw(old, k, want.value_size as usize)
            .map_err(|e| io("reading the old conntrack map", e))?
        {
            update_raw(new, k, &v).map_err(|e| io("carrying conntrack entries over", e))?;
            n += 1;
        }
    }
    Ok(n)
}
