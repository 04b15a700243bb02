//! Conntrack-entry helpers the runtime shares (the migration of older
//! translations, tests): the programs' clock, a forward entry's flag and
//! the canonical key of a flow.
//!
//! The collector of a non-LRU `weir_ct` is not here: it runs in the
//! kernel, wherever the programs run (`weir_compiler::ebpf::codegen::ct_gc`,
//! armed by [`super::gc`] at apply; its rules are written once, in
//! docs/runtime.md "Non-LRU tables and the collector"). Until session 12
//! `weir agent` ran a user-space sweep of the same rules every 10 s;
//! that sweep is gone so that one implementation holds the rules.

use weir_compiler::ebpf::layout::ct;

/// `CLOCK_MONOTONIC` in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Whether a `weir_ct` value is a translated flow's forward entry
/// ([`ct::FORWARD`], a bit of its service word).
#[cfg(test)]
pub(crate) fn forward_entry(v: &[u8]) -> bool {
    let at = ct::SERVICE as usize;
    let service = u32::from_ne_bytes(v[at..at + 4].try_into().expect("4 bytes"));
    service & ct::FORWARD as u32 != 0
}

/// The `weir_ct` key of the flow between two (address, port) ends in the
/// canonical order of `codegen/emit/prologue.rs` (`canonical_key_of`:
/// the ends compared as first 8 address bytes, next 8 — native-order
/// unsigned words — then the port; the smaller first), and whether `a`
/// is its first end.
pub(crate) fn canonical_key(
    a: ([u8; 16], u16),
    b: ([u8; 16], u16),
    proto: u8,
    family: u8,
) -> (Vec<u8>, bool) {
    let order = |e: &([u8; 16], u16)| {
        let w = |i: usize| u64::from_ne_bytes(e.0[i..i + 8].try_into().expect("8 bytes"));
        (w(0), w(8), e.1)
    };
    let a_first = order(&a) <= order(&b);
    let (first, second) = if a_first { (a, b) } else { (b, a) };
    let mut out = vec![0u8; ct::KEY_SIZE as usize];
    out[ct::SRC as usize..ct::SRC as usize + 16].copy_from_slice(&first.0);
    out[ct::DST as usize..ct::DST as usize + 16].copy_from_slice(&second.0);
    out[ct::SPORT as usize..ct::SPORT as usize + 2].copy_from_slice(&first.1.to_ne_bytes());
    out[ct::DPORT as usize..ct::DPORT as usize + 2].copy_from_slice(&second.1.to_ne_bytes());
    out[ct::PROTO as usize] = proto;
    out[ct::FAMILY as usize] = family;
    (out, a_first)
}
