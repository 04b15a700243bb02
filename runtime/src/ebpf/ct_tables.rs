//! The conntrack tables as one: `weir_ct` (IPv6 flows, 40-byte keys) and
//! `weir_ct4` (IPv4 flows, 16-byte keys, `layout::ct::v4`), addressed by
//! the 40-byte key the programs build for either family (issue 21: one
//! table per family so an IPv4 flow hashes and compares 16 bytes). Every
//! reader and writer outside the programs (the migrations at apply, the
//! tests, the bench) goes through here, so which table holds a flow is
//! decided in one place (the programs' twin is
//! `weir_compiler::ebpf::codegen::emit::ct_family`).
//!
//! A generation without `weir_ct4` (a bundle of an earlier weir) keeps
//! both families in `weir_ct`: [`table_of`] then answers `weir_ct`.

use std::io;

use aya::maps::Map;
use weir_compiler::ebpf::layout::{ct, map as names};

use super::load::{delete_raw, keys_raw, lookup_raw, update_raw_flags};

/// The table (by the generation's maps, `get`) that holds the flow of a
/// 40-byte key, and the key in its layout.
pub fn table_of<'a>(
    get: &impl Fn(&str) -> Option<&'a Map>,
    key: &[u8],
) -> Option<(&'a Map, Vec<u8>)> {
    if key[ct::FAMILY as usize] == 4 {
        if let Some(m) = get(names::CT4) {
            return Some((m, ct::v4::compact(key).to_vec()));
        }
    }
    get(names::CT).map(|m| (m, key.to_vec()))
}

/// Every entry of the conntrack tables, keys in the 40-byte layout.
pub fn entries<'a>(get: impl Fn(&str) -> Option<&'a Map>) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    for (name, size) in [(names::CT, ct::KEY_SIZE), (names::CT4, ct::v4::KEY_SIZE)] {
        let Some(m) = get(name) else { continue };
        for k in keys_raw(m, size as usize)? {
            if let Some(v) = lookup_raw(m, &k, ct::VALUE_SIZE as usize)? {
                let wide = if size == ct::KEY_SIZE {
                    k
                } else {
                    ct::v4::widen(&k).to_vec()
                };
                out.push((wide, v));
            }
        }
    }
    Ok(out)
}

/// The value of the flow of a 40-byte key.
pub fn lookup<'a>(
    get: impl Fn(&str) -> Option<&'a Map>,
    key: &[u8],
) -> io::Result<Option<Vec<u8>>> {
    match table_of(&get, key) {
        Some((m, k)) => lookup_raw(m, &k, ct::VALUE_SIZE as usize),
        None => Ok(None),
    }
}

/// Writes the entry of a 40-byte key (`flags`: `BPF_ANY` 0,
/// `BPF_NOEXIST` 1).
pub fn update<'a>(
    get: impl Fn(&str) -> Option<&'a Map>,
    key: &[u8],
    value: &[u8],
    flags: u64,
) -> io::Result<()> {
    match table_of(&get, key) {
        Some((m, k)) => update_raw_flags(m, &k, value, flags),
        None => Err(io::Error::from_raw_os_error(libc::ENOENT)),
    }
}

/// Removes the entry of a 40-byte key.
pub fn delete<'a>(get: impl Fn(&str) -> Option<&'a Map>, key: &[u8]) -> io::Result<()> {
    match table_of(&get, key) {
        Some((m, k)) => delete_raw(m, &k),
        None => Ok(()),
    }
}
