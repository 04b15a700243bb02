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
//!
//! One table per family (issue 21): `weir_ct` holds IPv6 flows (40-byte
//! keys), `weir_ct4` IPv4 ones (16-byte keys, `layout::ct::v4`); each is
//! pinned and compared on its own. Entries are carried by family: an
//! IPv4 entry of a 40-byte-key table (a resized `weir_ct`, or the one
//! `weir_ct` of an earlier weir, [`split_v4`]) goes into `weir_ct4`
//! compacted, so an upgrade keeps its established IPv4 flows.

use std::path::Path;

use aya::maps::{Map, MapData};
use weir_compiler::ebpf::codegen::EbpfManifest;
use weir_compiler::ebpf::layout::map as names;

use weir_compiler::ebpf::layout::ct;

use super::load::{delete_raw, keys_raw, lookup_raw, update_raw, update_raw_flags};
use super::EbpfError;

/// The conntrack tables shared across generations, pinned by name.
pub(crate) const SHARED: [&str; 2] = [names::CT, names::CT4];

/// The pinned map at `path`, unpinned, when its definition differs from
/// the manifest's map `name`; `None` when there is none or it matches.
pub(crate) fn unpin_if_resized(
    path: &Path,
    name: &str,
    manifest: &EbpfManifest,
) -> Result<Option<Map>, EbpfError> {
    let Some(want) = manifest.maps.iter().find(|m| m.name == name) else {
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

/// The table of `new` (a generation's maps by name) an entry of a table
/// with `key_size`-byte keys goes to, and its key there.
fn route<'a>(
    key: &[u8],
    key_size: u32,
    new: &impl Fn(&str) -> Option<&'a Map>,
) -> Option<(&'a Map, Vec<u8>)> {
    match key_size {
        k if k == ct::v4::KEY_SIZE => new(names::CT4).map(|m| (m, key.to_vec())),
        k if k == ct::KEY_SIZE => super::ct_tables::table_of(new, key),
        _ => None,
    }
}

/// Copies `old`'s entries into the generation's conntrack tables (`new`:
/// its maps by name) when their value layout matches, each into its
/// family's table ([`route`]), as many as fit (a full hash table
/// refuses the rest, a full LRU one evicts); returns how many.
pub(crate) fn carry_over<'a>(
    old: &Map,
    new: impl Fn(&str) -> Option<&'a Map>,
) -> Result<usize, EbpfError> {
    let info = super::load::map_data(old)
        .info()
        .map_err(|e| EbpfError::Aya {
            step: "reading the old conntrack map".into(),
            message: e.to_string(),
        })?;
    if info.value_size() != ct::VALUE_SIZE {
        return Ok(0);
    }
    let io = |context: &str, source: std::io::Error| EbpfError::Io {
        context: context.into(),
        source,
    };
    let keys = keys_raw(old, info.key_size() as usize)
        .map_err(|e| io("reading the old conntrack map", e))?;
    let mut n = 0;
    for k in &keys {
        let Some((to, key)) = route(k, info.key_size(), &new) else {
            continue;
        };
        // An entry may have expired or been evicted since the key walk.
        if let Some(v) = lookup_raw(old, k, ct::VALUE_SIZE as usize)
            .map_err(|e| io("reading the old conntrack map", e))?
        {
            match update_raw(to, &key, &v) {
                Ok(()) => n += 1,
                // A full non-LRU table: the rest are judged again.
                Err(e) if e.raw_os_error() == Some(libc::E2BIG) => {}
                Err(e) => return Err(io("carrying conntrack entries over", e)),
            }
        }
    }
    Ok(n)
}

/// The first apply with per-family tables over an instance whose pinned
/// `weir_ct` holds both families (an earlier weir: no `weir_ct4` was
/// pinned): its IPv4 entries are copied into `ct4` (compacted; an entry
/// already there is kept), before the switch, so established IPv4 flows
/// survive the upgrade. Returns the IPv4 keys copied, for
/// [`drop_split`] to remove from `ct` once the new generation runs
/// (until then the old one still looks them up there).
pub(crate) fn split_v4(ct: &Map, ct4: &Map) -> Result<Vec<Vec<u8>>, EbpfError> {
    let io = |context: &str, source: std::io::Error| EbpfError::Io {
        context: context.into(),
        source,
    };
    let mut moved = Vec::new();
    for k in keys_raw(ct, ct::KEY_SIZE as usize)
        .map_err(|e| io("reading the shared conntrack map", e))?
    {
        if k[ct::FAMILY as usize] != 4 {
            continue;
        }
        let Some(v) = lookup_raw(ct, &k, ct::VALUE_SIZE as usize)
            .map_err(|e| io("reading the shared conntrack map", e))?
        else {
            continue;
        };
        match update_raw_flags(ct4, &ct::v4::compact(&k), &v, 1) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::E2BIG)) => {}
            Err(e) => return Err(io("moving IPv4 conntrack entries into weir_ct4", e)),
        }
        moved.push(k);
    }
    Ok(moved)
}

/// Removes the IPv4 entries [`split_v4`] copied from the shared
/// `weir_ct` (after the switch: no program looks IPv4 flows up there any
/// more). Best effort: an entry already gone is fine.
pub(crate) fn drop_split(ct: &Map, keys: &[Vec<u8>]) {
    for k in keys {
        let _ = delete_raw(ct, k);
    }
}
