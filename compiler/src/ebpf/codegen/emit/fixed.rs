//! The per-flow tables as preallocated non-LRU hashes (`weir compile
//! --ct-table hash`, [`CtTable::Hash`]): what the pipeline does beyond
//! the LRU variant.
//!
//! - **Inserts before the verdict is counted.** An LRU insert never fails
//!   (it evicts); a hash insert into a full table does (`-E2BIG`). So on
//!   allow the final block writes `weir_ct` (and a new translation's
//!   a new translation's forward entry, also in `weir_ct`) *before* it counts the allowing rule and emits its
//!   event; when either insert fails the flow is denied (fail closed),
//!   counted once under `table full` (the `weir_cnt` slot after the last
//!   provenance id, [`table_full_id`]) and nothing else: a half-written
//!   flow's `weir_ct` entry is deleted again. Its retransmission is a new
//!   flow and passes once the collector has made room.
//! - **Seen since the last collection.** Nothing evicts an idle entry,
//!   so the collector in user space (`weir_runtime::ebpf::collect`)
//!   removes the entries idle longer than their protocol's timeout; for
//!   that an established packet or reply sets the entry's
//!   [`layout::ct::SEEN`] bit when it is clear (a load and a test; no
//!   clock read, which cost ~30 ns per established packet when every
//!   packet stored `bpf_ktime_get_ns`), and the collector clears it and
//!   stamps the entry with its own time: an entry's time is then when it
//!   was last found busy, to the collector's interval.
//!
//! Why a non-LRU table at all: a new flow's LRU insert pops from the LRU
//! free lists (`bpf_lru_pop_free`), the largest part of a new flow's cost
//! in a perf profile (issue 21); a preallocated hash pops a per-CPU free
//! list.

use super::*;
use crate::ebpf::state_tables::CtTable;

/// The `weir_cnt` slot of new flows denied because a non-LRU per-flow
/// table was full: the one after the last provenance id (the counter
/// map has it only with [`CtTable::Hash`]).
pub fn table_full_id(g: &Graph) -> u32 {
    g.provenance.len() as u32
}

impl Gen<'_> {
    pub(super) fn fixed_tables(&self) -> bool {
        self.ct_table == CtTable::Hash
    }

    /// The hash variant's inserts on allow, with the allowing id in r3:
    /// kept at `fp-4` across the helper calls and back in r3 after (the
    /// count and the events read it there). A failed insert jumps to
    /// `full` (nothing written) or `undo` (`weir_ct` written, to be
    /// deleted).
    pub(super) fn inserts_or_full(&self, em: &mut Em, full: Label, undo: Label) {
        em.push(Op::store(Size::U32, R10, -4, R3));
        self.conntrack_insert(em);
        em.jmp(JmpCond::Ne, R0, 0, full);
        if self.has_services {
            // r0 is 0 here; a flow without a new translation keeps it.
            self.record_translation(em);
            em.jmp(JmpCond::Ne, R0, 0, undo);
        }
        em.push(Op::load(Size::U32, R3, R10, -4));
    }

    /// `undo` (programs with services): deletes the flow's `weir_ct`
    /// entry (its key still at `CT_KEY_COPY`); `full`: counts `table
    /// full` and drops.
    pub(super) fn table_full(&self, em: &mut Em, full: Label, undo: Label) {
        em.a.set_origin(
            Origin::NONE,
            Some("per-flow table full: the new flow is denied and counted"),
        );
        em.bind(undo);
        // Only a program with services has a second insert to fail.
        if self.has_services {
            em.ct_call(CtCall::Delete, CT_KEY_COPY);
        }
        em.bind(full);
        em.count_imm(table_full_id(self.g));
        em.push(Op::mov64(R0, layout::TC_ACT_SHOT));
        em.push(Op::Exit);
    }

    /// On a conntrack hit (value pointer in r0, kept): the entry's
    /// [`layout::ct::SEEN`] bit set, unless it already is (no helper
    /// call, at most one store per flow per collection). Uses r1.
    pub(super) fn mark_seen(&self, em: &mut Em) {
        use layout::ct;
        em.a.set_origin(Origin(0), Some("conntrack: seen since the last collection"));
        let done = em.label("seen_already");
        em.push(Op::load(Size::U64, R1, R0, ct::TIME));
        em.jmp(JmpCond::Set, R1, ct::SEEN, done);
        em.push(Op::alu64(AluOp::Or, R1, ct::SEEN));
        em.push(Op::store(Size::U64, R0, ct::TIME, R1));
        em.bind(done);
    }
}
