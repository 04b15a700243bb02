//! `self` in the eBPF data path (`Cond::SameEndpoint`; the relation is
//! `graph/same_endpoint.rs`): the exact-match hashes `weir_self4` /
//! `weir_self6` send each endpoint address to its endpoint's canonical
//! address (the smallest of that family), so "source and destination are
//! one endpoint" is two lookups and a compare: both found and equal.
//!
//! The maps exist only in programs with a `self` rule; the compiler fills
//! them from the model ([`fill`]) and `weir endpoints` keeps them in step
//! with the inventory, as it keeps the host hashes
//! (`crate::churn::self_relation`), so an endpoint added under `allow
//! from self` is an entry write, not a recompile. Each map has room for
//! the compiled endpoints plus `spare_endpoints` more, like the host
//! hashes.

use super::emit::{Em, Gen};
use super::*;
use crate::ebpf::layout::ctx;
use crate::ebpf::{JmpCond, Label, Op, Reg, Size};
use Reg::*;

/// Stack slot of the source's canonical address (16 bytes), between the
/// lookup key (fp-16) and the conntrack key copy (fp-104).
const SRC_CANON: i16 = -40;

/// The relation's entries `(address, canonical)` of the model's endpoints
/// (empty without a `self` rule).
pub(super) fn fill(model: &Model, g: &Graph) -> Vec<(IpAddr, IpAddr)> {
    g.classes
        .same
        .owned(model)
        .iter()
        .flat_map(|addrs| crate::graph::same_endpoint::entries(addrs))
        .collect()
}

/// The two maps, sized by their fill plus the spare endpoints, when the
/// program has a `self` rule.
pub(super) fn maps(
    model: &Model,
    entries: &[(IpAddr, IpAddr)],
    opts: &Options,
) -> Vec<(MapDef, u64)> {
    if !crate::graph::same_endpoint::uses_self(model) {
        return Vec::new();
    }
    let n4 = entries.iter().filter(|(a, _)| a.is_ipv4()).count() as u64;
    let n6 = entries.len() as u64 - n4;
    [(layout::map::SELF4, 4, n4), (layout::map::SELF6, 16, n6)]
        .into_iter()
        .map(|(name, size, n)| {
            (
                MapDef::new(
                    name,
                    MapType::Hash,
                    size,
                    size,
                    (n as u32).saturating_add(opts.spare_endpoints).max(1),
                ),
                n,
            )
        })
        .collect()
}

impl Gen<'_> {
    /// `Cond::SameEndpoint`: to `then` when the packet's source and
    /// destination (`ctx::SRC`, `ctx::DST`, after any DNAT) map to the
    /// same canonical address; falls through when not (the caller
    /// continues at `els`). Uses r0–r5, fp-40..fp-1.
    pub(super) fn same_endpoint(&self, em: &mut Em, then: Label, els: Label) {
        let six = em.label("self_v6");
        em.push(Op::load(Size::U8, R1, R6, ctx::FAMILY));
        em.jmp(JmpCond::Eq, R1, 6, six);
        Self::same_in(em, 1, layout::map::SELF4, then, els);
        em.push(Op::Ja { target: els });
        em.bind(six);
        Self::same_in(em, 4, layout::map::SELF6, then, els);
    }

    /// One family: `words` 32-bit words of address.
    fn same_in(em: &mut Em, words: i16, map: &str, then: Label, els: Label) {
        let key = |em: &mut Em, from: i16| {
            for i in 0..words {
                em.push(Op::load(Size::U32, R4, R6, from + 4 * i));
                em.push(Op::store(Size::U32, R10, -16 + 4 * i, R4));
            }
        };
        key(em, ctx::SRC);
        em.lookup(map, -16);
        em.jmp(JmpCond::Eq, R0, 0, els);
        for i in 0..words {
            em.push(Op::load(Size::U32, R4, R0, 4 * i));
            em.push(Op::store(Size::U32, R10, SRC_CANON + 4 * i, R4));
        }
        key(em, ctx::DST);
        em.lookup(map, -16);
        em.jmp(JmpCond::Eq, R0, 0, els);
        for i in 0..words {
            em.push(Op::load(Size::U32, R1, R0, 4 * i));
            em.push(Op::load(Size::U32, R2, R10, SRC_CANON + 4 * i));
            if i + 1 < words {
                em.push(Op::jmp(JmpCond::Ne, R1, R2, els));
            } else {
                em.push(Op::jmp(JmpCond::Eq, R1, R2, then));
            }
        }
    }
}
