//! The first apply of the one-table layout (issue 21): a translated
//! flow's forward state moved from the per-generation `weir_lb_ct` into
//! the shared `weir_ct` (a forward entry, `layout::ct::FORWARD`). A
//! generation of the older layout keeps its flows' translations in its
//! own `gen-N/weir_lb_ct`, which the new generation does not load; so
//! before the switch each of them is written into `weir_ct` as the
//! forward entry the new pipeline would have written (client ↔ frontend
//! in canonical order; the backend, the service index + 1 with the
//! forward bit; the translation's time with the client's end), and an
//! established translated flow keeps its backend across the upgrade.
//! Its flow's own entry (client ↔ backend) is already in `weir_ct`,
//! written the same way by both layouts.
//!
//! An entry is only added, never overwritten (`BPF_NOEXIST`); one that
//! does not fit a full non-LRU table is skipped (the flow is then judged
//! again as new, as when the older layout lost a translation).
//! Translations the old generation writes between the copy and the
//! switch are not copied (those flows are balanced and judged again).

use std::path::Path;

use aya::maps::{Map, MapData};
use weir_compiler::ebpf::codegen::EbpfManifest;
use weir_compiler::ebpf::layout::{ct, service as lb};

use super::collect::canonical_key;
use super::load::{keys_raw, lookup_raw};
use super::EbpfError;

/// `BPF_NOEXIST`.
const NOEXIST: u64 = 1;

/// Copies the translations of the generation pinned in `prev_gen_dir`
/// (its `weir_lb_ct`, when it has one: the older layout) into `ctm` as
/// forward entries, when `manifest` (the new generation's) has no
/// `weir_lb_ct`. Returns how many were written.
pub fn lb_ct_to_forward<'a>(
    prev_gen_dir: &Path,
    maps: impl Fn(&str) -> Option<&'a Map>,
    manifest: &EbpfManifest,
) -> Result<usize, EbpfError> {
    let path = prev_gen_dir.join(lb::map::CT);
    if manifest.maps.iter().any(|m| m.name == lb::map::CT) || !path.exists() {
        return Ok(0);
    }
    let io = |context: &str, source: std::io::Error| EbpfError::Io {
        context: format!("{context} {}", path.display()),
        source,
    };
    let data = MapData::from_pin(&path).map_err(|e| EbpfError::Aya {
        step: format!("opening the previous translation table {}", path.display()),
        message: e.to_string(),
    })?;
    let old = Map::from_map_data(data).map_err(|e| EbpfError::Aya {
        step: format!("opening the previous translation table {}", path.display()),
        message: e.to_string(),
    })?;
    let (ks, vs) = (lb::tuple::SIZE as usize, lb::ct::VALUE_SIZE as usize);
    let mut n = 0;
    for k in keys_raw(&old, ks).map_err(|e| io("reading", e))? {
        let Some(v) = lookup_raw(&old, &k, vs).map_err(|e| io("reading", e))? else {
            continue;
        };
        let (key, value) = forward_entry_of(&k, &v);
        // Each family's flows in its own table.
        match super::ct_tables::update(&maps, &key, &value, NOEXIST) {
            Ok(()) => n += 1,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::E2BIG)) => {}
            Err(e) => return Err(io("copying translations from", e)),
        }
    }
    Ok(n)
}

/// The forward entry (key, value) of a `weir_lb_ct` entry: key `{ client,
/// frontend, ports, proto, family }` as the client sent it, value `{
/// backend addr, port, family, pad, id, service index, pad, time }`.
fn forward_entry_of(k: &[u8], v: &[u8]) -> (Vec<u8>, Vec<u8>) {
    use lb::{be, tuple};
    let end = |b: &[u8], addr: i16, port: i16| {
        let (a, p) = (addr as usize, port as usize);
        let x: [u8; 16] = b[a..a + 16].try_into().expect("16 bytes");
        (x, u16::from_ne_bytes([b[p], b[p + 1]]))
    };
    let client = end(k, tuple::SRC, tuple::SPORT);
    let frontend = end(k, tuple::DST, tuple::DPORT);
    let (key, client_first) = canonical_key(
        client,
        frontend,
        k[tuple::PROTO as usize],
        k[tuple::FAMILY as usize],
    );
    let u32_at =
        |at: i16| u32::from_ne_bytes(v[at as usize..at as usize + 4].try_into().expect("4"));
    let ts = lb::ct::TS as usize;
    let time = u64::from_ne_bytes(v[ts..ts + 8].try_into().expect("8 bytes"));
    let flags = (ct::TRANSLATED | ct::CLIENT_FIRST | ct::SEEN) as u64;
    let time = (time & !flags)
        | if client_first {
            ct::CLIENT_FIRST as u64
        } else {
            0
        };
    let backend = end(v, be::ADDR, be::PORT);
    let mut out = vec![0u8; ct::VALUE_SIZE as usize];
    out[ct::TIME as usize..ct::TIME as usize + 8].copy_from_slice(&time.to_ne_bytes());
    out[ct::FE_ADDR as usize..ct::FE_ADDR as usize + 16].copy_from_slice(&backend.0);
    out[ct::FE_PORT as usize..ct::FE_PORT as usize + 2].copy_from_slice(&backend.1.to_ne_bytes());
    let service = (u32_at(lb::ct::SERVICE) + 1) | ct::FORWARD as u32;
    out[ct::SERVICE as usize..ct::SERVICE as usize + 4].copy_from_slice(&service.to_ne_bytes());
    (key, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A translation 10.0.0.9:40000 → 10.96.0.1:80 to 10.1.0.2:8080
    /// (service 3) becomes the forward entry the pipeline writes.
    #[test]
    fn forward_entry_of_an_lb_ct_entry() {
        let mut k = vec![0u8; 40];
        k[0..4].copy_from_slice(&[10, 0, 0, 9]);
        k[16..20].copy_from_slice(&[10, 96, 0, 1]);
        k[32..34].copy_from_slice(&40000u16.to_ne_bytes());
        k[34..36].copy_from_slice(&80u16.to_ne_bytes());
        k[36] = 6;
        k[37] = 4;
        let mut v = vec![0u8; 40];
        v[0..4].copy_from_slice(&[10, 1, 0, 2]);
        v[16..18].copy_from_slice(&8080u16.to_ne_bytes());
        v[24..28].copy_from_slice(&3u32.to_ne_bytes());
        v[32..40].copy_from_slice(&0x1234_5677u64.to_ne_bytes());
        let (key, val) = forward_entry_of(&k, &v);
        let (want, first) = canonical_key(
            ([10, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 40000),
            ([10, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 80),
            6,
            4,
        );
        assert_eq!(key, want);
        let time = u64::from_ne_bytes(val[0..8].try_into().unwrap());
        assert_eq!(time & !7, 0x1234_5670);
        assert_eq!(time & ct::CLIENT_FIRST as u64 != 0, first);
        assert_eq!(time & ct::TRANSLATED as u64, 0);
        assert_eq!(&val[8..12], &[10, 1, 0, 2]);
        assert_eq!(u16::from_ne_bytes([val[24], val[25]]), 8080);
        assert!(super::super::collect::forward_entry(&val));
        let service = u32::from_ne_bytes(val[28..32].try_into().unwrap());
        assert_eq!(service & !(ct::FORWARD as u32), 4);
    }
}
