//! The collector of the non-LRU per-flow tables (`weir compile
//! --ct-table hash`): nothing in the kernel evicts from a preallocated
//! hash, and a full one denies new flows (counted `table-full`), so idle
//! entries must be removed from user space, as Cilium's agent does for
//! its conntrack. `weir agent` runs [`collect`] every
//! [`INTERVAL`]; tests call [`collect_maps`] with their own clock.
//!
//! What expires (docs/runtime.md, "Non-LRU tables and the collector"):
//! - a `weir_ct` entry not seen (no packet either way) for longer than
//!   its protocol's idle timeout. Its time is when it was inserted or
//!   last found busy: a packet of the flow sets the entry's `SEEN` bit,
//!   and the collector clears the bit and stamps the entry with its own
//!   time (so idleness is known to the collector's interval; a packet
//!   between its read and its write may be missed, and the entry then
//!   looks idle for one interval more). The idle timeouts ([`Timeouts`]: TCP 6 h like Cilium's
//!   established TCP, every other protocol 60 s). TCP states are not
//!   tracked: a closed connection's entry stays until it is idle that
//!   long.
//! - a translated flow's forward entry (`FORWARD`, keyed client ↔
//!   frontend, written once when the flow was translated; never marked
//!   seen) older than its protocol's timeout *and* whose flow has no
//!   `weir_ct` entry any more (client ↔ backend, the key the pipeline
//!   wrote beside it): a translation lives exactly as long as its flow's
//!   conntrack entry.
//!
//! An LRU program's tables are left alone (the kernel evicts).

use std::path::Path;
use std::time::Duration;

use aya::maps::{Map, MapData};
use weir_compiler::ebpf::layout::{ct, map as names};
use weir_compiler::ebpf::state_tables::CtTable;

use super::attach::Instance;
use super::load::{delete_raw, keys_raw, lookup_raw};
use super::EbpfError;

/// How often `weir agent` collects.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Idle timeouts by protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp: Duration,
    pub other: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp: Duration::from_secs(6 * 3600),
            other: Duration::from_secs(60),
        }
    }
}

impl Timeouts {
    fn of(&self, proto: u8) -> u64 {
        let d = if proto == 6 { self.tcp } else { self.other };
        d.as_nanos().min(u128::from(u64::MAX)) as u64
    }
}

/// What one collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Collected {
    /// `weir_ct` entries looked at / removed.
    pub conntrack: usize,
    pub conntrack_removed: usize,
    /// Forward entries (translated flows) looked at / removed.
    pub translation: usize,
    pub translation_removed: usize,
}

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

/// Collects the running generation's tables when they are non-LRU
/// (`None`: an LRU program, or nothing applied).
pub fn collect(inst: &Instance, t: Timeouts) -> Result<Option<Collected>, EbpfError> {
    let Ok(text) = std::fs::read_to_string(inst.state_dir().join("manifest.json")) else {
        return Ok(None);
    };
    let kind = weir_compiler::contract::parse(text.as_bytes())
        .ok()
        .and_then(|m| m.backends.ebpf.map(|e| e.program.state_tables.kind));
    if kind != Some(CtTable::Hash) {
        return Ok(None);
    }
    let open = |p: &Path| -> Option<Map> { Map::from_map_data(MapData::from_pin(p).ok()?).ok() };
    let Some(ctm) = open(&inst.pin_dir().join(names::CT)) else {
        return Ok(None);
    };
    collect_maps(&ctm, monotonic_ns(), t)
        .map(Some)
        .map_err(|source| EbpfError::Io {
            context: "collecting expired conntrack entries".into(),
            source,
        })
}

/// Removes the expired entries of `weir_ct` at time `now` (the
/// programs' clock, `CLOCK_MONOTONIC` ns): flows first, then the forward
/// entries of translated flows whose flow is gone (module docs).
pub fn collect_maps(ctm: &Map, now: u64, t: Timeouts) -> std::io::Result<Collected> {
    let mut out = Collected::default();
    let flags = (ct::TRANSLATED | ct::CLIENT_FIRST) as u64;
    let seen_bit = ct::SEEN as u64;
    let mut forward = Vec::new();
    for k in keys_raw(ctm, ct::KEY_SIZE as usize)? {
        let Some(mut v) = lookup_raw(ctm, &k, ct::VALUE_SIZE as usize)? else {
            continue;
        };
        let word = u64::from_ne_bytes(v[..8].try_into().expect("8 bytes"));
        if forward_entry(&v) {
            forward.push((k, v, word));
            continue;
        }
        out.conntrack += 1;
        if word & seen_bit != 0 {
            let stamped = (now & !(flags | seen_bit)) | (word & flags);
            v[..8].copy_from_slice(&stamped.to_ne_bytes());
            update_existing(ctm, &k, &v)?;
            continue;
        }
        let seen = word & !(flags | seen_bit);
        if now.saturating_sub(seen) > t.of(k[ct::PROTO as usize]) {
            ignore_gone(delete_raw(ctm, &k))?;
            out.conntrack_removed += 1;
        }
    }
    for (k, v, word) in forward {
        out.translation += 1;
        let written = word & !(flags | seen_bit);
        if now.saturating_sub(written) <= t.of(k[ct::PROTO as usize]) {
            continue;
        }
        let flow = flow_key(&k, &v, word & ct::CLIENT_FIRST as u64 != 0);
        if lookup_raw(ctm, &flow, ct::VALUE_SIZE as usize)?.is_none() {
            ignore_gone(delete_raw(ctm, &k))?;
            out.translation_removed += 1;
        }
    }
    Ok(out)
}

fn update_existing(m: &Map, key: &[u8], value: &[u8]) -> std::io::Result<()> {
    ignore_gone(super::load::update_raw_flags(m, key, value, 2))
}

/// An entry the datapath removed meanwhile is not an error.
fn ignore_gone(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}

/// Whether a `weir_ct` value is a translated flow's forward entry
/// ([`ct::FORWARD`], a bit of its service word).
pub(crate) fn forward_entry(v: &[u8]) -> bool {
    let at = ct::SERVICE as usize;
    let service = u32::from_ne_bytes(v[at..at + 4].try_into().expect("4 bytes"));
    service & ct::FORWARD as u32 != 0
}

/// The `weir_ct` key of a translated flow from its forward entry's key
/// (client ↔ frontend, canonical; `client_first`: the client is its
/// first end) and value (the backend): client ↔ backend, canonical.
fn flow_key(k: &[u8], v: &[u8], client_first: bool) -> Vec<u8> {
    let end = |addr: usize, port: usize| {
        let a: [u8; 16] = k[addr..addr + 16].try_into().expect("16 bytes");
        (a, u16::from_ne_bytes([k[port], k[port + 1]]))
    };
    let client = if client_first {
        end(ct::SRC as usize, ct::SPORT as usize)
    } else {
        end(ct::DST as usize, ct::DPORT as usize)
    };
    let (ba, bp) = (ct::FE_ADDR as usize, ct::FE_PORT as usize);
    let backend = (
        v[ba..ba + 16].try_into().expect("16 bytes"),
        u16::from_ne_bytes([v[bp], v[bp + 1]]),
    );
    canonical_key(
        client,
        backend,
        k[ct::PROTO as usize],
        k[ct::FAMILY as usize],
    )
    .0
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
