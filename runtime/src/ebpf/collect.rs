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
//! - a `weir_lb_ct` entry (written once, when the flow was translated)
//!   older than its protocol's timeout *and* whose flow has no `weir_ct`
//!   entry any more (client ↔ backend, the key the pipeline wrote): a
//!   translation lives exactly as long as its flow's conntrack entry.
//!
//! An LRU program's tables are left alone (the kernel evicts).

use std::path::Path;
use std::time::Duration;

use aya::maps::{Map, MapData};
use weir_compiler::ebpf::layout::{ct, map as names, service as lb};
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
    /// `weir_lb_ct` entries looked at / removed.
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
    let gen = super::record::read_state(inst)?.generation;
    let open = |p: &Path| -> Option<Map> { Map::from_map_data(MapData::from_pin(p).ok()?).ok() };
    let Some(ctm) = open(&inst.pin_dir().join(names::CT)) else {
        return Ok(None);
    };
    let lbm = open(&inst.pin_dir().join(format!("gen-{gen}")).join(lb::map::CT));
    collect_maps(&ctm, lbm.as_ref(), monotonic_ns(), t)
        .map(Some)
        .map_err(|source| EbpfError::Io {
            context: "collecting expired conntrack entries".into(),
            source,
        })
}

/// Removes the expired entries of `weir_ct` (and `weir_lb_ct`) at time
/// `now` (ns, the programs' clock).
pub fn collect_maps(
    ctm: &Map,
    lbm: Option<&Map>,
    now: u64,
    t: Timeouts,
) -> std::io::Result<Collected> {
    let mut out = Collected::default();
    let flags = (ct::TRANSLATED | ct::CLIENT_FIRST) as u64;
    let seen_bit = ct::SEEN as u64;
    for k in keys_raw(ctm, ct::KEY_SIZE as usize)? {
        let Some(mut v) = lookup_raw(ctm, &k, ct::VALUE_SIZE as usize)? else {
            continue;
        };
        out.conntrack += 1;
        let word = u64::from_ne_bytes(v[..8].try_into().expect("8 bytes"));
        if word & seen_bit != 0 {
            // Busy since the last look: stamped now, bit cleared.
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
    let Some(lbm) = lbm else {
        return Ok(out);
    };
    for k in keys_raw(lbm, lb::tuple::SIZE as usize)? {
        let Some(v) = lookup_raw(lbm, &k, lb::ct::VALUE_SIZE as usize)? else {
            continue;
        };
        out.translation += 1;
        let ts = lb::ct::TS as usize;
        let written = u64::from_ne_bytes(v[ts..ts + 8].try_into().expect("8 bytes"));
        if now.saturating_sub(written) <= t.of(k[lb::tuple::PROTO as usize]) {
            continue;
        }
        if lookup_raw(ctm, &flow_key(&k, &v), ct::VALUE_SIZE as usize)?.is_none() {
            ignore_gone(delete_raw(lbm, &k))?;
            out.translation_removed += 1;
        }
    }
    Ok(out)
}

/// Rewrites an entry in place (`BPF_EXIST`: an entry removed meanwhile is
/// not re-created, and a full table is no obstacle).
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

/// The `weir_ct` key of a translated flow from its `weir_lb_ct` key
/// (client → frontend) and value (the backend): client ↔ backend in the
/// canonical order of `codegen/emit/prologue.rs` (the ends compared as
/// first 8 address bytes, next 8 — native-order unsigned words — then
/// the port; the smaller first).
fn flow_key(k: &[u8], v: &[u8]) -> Vec<u8> {
    use lb::{be, tuple};
    let end = |addr: &[u8], port: u16| {
        let w = |i: usize| u64::from_ne_bytes(addr[i..i + 8].try_into().expect("8 bytes"));
        ((w(0), w(8), port), addr.to_vec())
    };
    let port = |b: &[u8], at: i16| u16::from_ne_bytes([b[at as usize], b[at as usize + 1]]);
    let s = tuple::SRC as usize;
    let a = end(&k[s..s + 16], port(k, tuple::SPORT));
    let ba = be::ADDR as usize;
    let b = end(&v[ba..ba + 16], port(v, be::PORT));
    let (first, second) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    let mut out = vec![0u8; ct::KEY_SIZE as usize];
    out[ct::SRC as usize..ct::SRC as usize + 16].copy_from_slice(&first.1);
    out[ct::DST as usize..ct::DST as usize + 16].copy_from_slice(&second.1);
    out[ct::SPORT as usize..ct::SPORT as usize + 2].copy_from_slice(&first.0 .2.to_ne_bytes());
    out[ct::DPORT as usize..ct::DPORT as usize + 2].copy_from_slice(&second.0 .2.to_ne_bytes());
    out[ct::PROTO as usize] = k[tuple::PROTO as usize];
    out[ct::FAMILY as usize] = k[tuple::FAMILY as usize];
    out
}
