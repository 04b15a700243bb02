//! One copy per stage of a leaf's verdict events (issue 21: code size at
//! 100,000 rules).
//!
//! A side's leaf reports its `log` rules passed and, when it allows by a
//! rule with `log`, its allow ([`crate::graph::events::leaf_events`]).
//! Written inline, each event is a whole emission (token bucket, ring
//! buffer reserve, the 72-byte record: about 90 instructions), per event
//! and per leaf — and leaves are copied into every stage that reaches
//! them. In the 100,000-rule benchmark model that was 1.85 M of 2.36 M
//! instructions (126 programs; 29 programs and 444 k instructions before
//! verdict events existed).
//!
//! Instead a leaf with events writes their provenance ids as constants
//! to the stack ([`slot`]: their number, whether the last is the allow,
//! the ids), sets its side's word as before and jumps to
//! [`Block::LeafEvents`]: a copied block (every stage that reaches it has
//! its own copy, so no tail call lies between a leaf and its events) that
//! emits the pending events in order — a loop around the one emission
//! ([`Gen::event_with_code`]), bounded by the count the verifier knows
//! (bounded loops: kernel 5.3) — and goes on where the leaf went: the
//! ingress walk (an egress allow on a node) or the final block. There are
//! two such blocks, one per continuation, laid out before the ingress walk
//! and before the final block, so every jump between blocks stays forward.
//!
//! The events, their order and their content are the same as inline: the
//! record reads only the context and its own stack slots (`fp-8` to
//! `fp-32`), which the leaf's side word does not touch. A leaf with more
//! than [`PENDING_MAX`] events (more than the stack area holds) emits them
//! inline as before.

use super::emit::{Block, Em, Entry, Gen};
use super::events::IdAt;
use crate::contract::event::EventVerdict;
use crate::ebpf::{AluOp, JmpCond, Op, Origin, Size};
use crate::graph::ir::{Node, NodeId, VerdictLeaf};
use crate::graph::Graph;
use crate::model::Model;

use crate::ebpf::Reg::*;

/// Most events one leaf hands to the shared block: ids in the stack from
/// fp-64 to fp-156 (below the emission's own slots and above the service
/// stage's area, none of them live between a leaf and its events).
pub const PENDING_MAX: usize = 24;

/// Stack slots of the pending events. The count, index and flag are
/// 8-aligned, where the verifier keeps a stored constant: it then knows
/// the loop's bound and each id's address.
mod slot {
    /// How many (`u32`).
    pub const COUNT: i16 = -40;
    /// The shared block's loop index (`u32`).
    pub const INDEX: i16 = -48;
    /// Whether the last is the allow (`u32`, 0 or 1; the others are
    /// `log` events: `graph::events::leaf_events` lists the allow last).
    pub const ALLOW_LAST: i16 = -56;
    /// Event `i`'s provenance id (`u32`).
    pub const fn id(i: usize) -> i16 {
        IDS - 4 * i as i16
    }
    pub const IDS: i16 = -64;
}

/// The events an enforced leaf reports, in emission order (its denial is
/// the final block's).
pub fn events_of(model: &Model, g: &Graph, v: &VerdictLeaf) -> Vec<(EventVerdict, u32)> {
    crate::graph::events::leaf_events(model, &g.provenance, v)
        .into_iter()
        .filter(|(e, _)| *e != EventVerdict::Deny)
        .collect()
}

/// What the layout needs: the most events a routed leaf hands over (0:
/// no leaf routes, no block), and whether an egress leaf goes on to the
/// ingress walk with events (`to_ingress`) or any leaf to the final block
/// (`to_final`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SharedEvents {
    pub chain: usize,
    pub to_ingress: bool,
    pub to_final: bool,
}

impl SharedEvents {
    /// Adds the leaves of one enforced side's walk (`order`: its nodes).
    pub fn add(&mut self, model: &Model, g: &Graph, e: Entry, order: &[NodeId], node_mode: bool) {
        for &n in order {
            let Node::Verdict(v) = g.node(n) else {
                continue;
            };
            let k = events_of(model, g, v).len();
            if k == 0 || k > PENDING_MAX {
                continue;
            }
            self.chain = self.chain.max(k);
            if continues_to_ingress(e, v, node_mode) {
                self.to_ingress = true;
            } else {
                self.to_final = true;
            }
        }
    }
}

/// Whether a side's leaf goes on to the ingress walk (an egress allow on
/// a node), else to the final block.
pub fn continues_to_ingress(e: Entry, v: &VerdictLeaf, node_mode: bool) -> bool {
    e == Entry::Egress && v.allow && node_mode
}

impl Gen<'_> {
    /// A leaf's events handed to the shared block: `true` when they were
    /// (the leaf then jumps to [`Self::leaf_events_block`]); `false` when
    /// it has none, or too many (then emitted inline).
    pub(super) fn pending_events(&self, em: &mut Em, v: &VerdictLeaf) -> bool {
        if self.events.is_none() || self.shared_events.chain == 0 {
            return false;
        }
        let evs = events_of(self.model, self.g, v);
        if evs.is_empty() || evs.len() > PENDING_MAX {
            return false;
        }
        // Logs, then possibly the allow.
        let allow_last = evs.last().is_some_and(|(e, _)| *e == EventVerdict::Allow);
        debug_assert!(evs[..evs.len() - usize::from(allow_last)]
            .iter()
            .all(|(e, _)| *e == EventVerdict::Log));
        for (i, (e, id)) in evs.iter().enumerate() {
            em.a.set_origin(
                Origin(*id),
                Some(&format!(
                    "event: {} {} (pending)",
                    e.name(),
                    self.describe_id(*id)
                )),
            );
            em.push(Op::store(Size::U32, R10, slot::id(i), *id as i32));
        }
        em.push(Op::store(Size::U32, R10, slot::COUNT, evs.len() as i32));
        em.push(Op::store(
            Size::U32,
            R10,
            slot::ALLOW_LAST,
            i32::from(allow_last),
        ));
        true
    }

    /// Whether block `b` is copied into every stage that reaches it and
    /// kept room for in each (the final block, the leaves' events).
    pub(super) fn copied_in_reserve(&self, b: usize) -> bool {
        matches!(self.blocks[b], Block::Final | Block::LeafEvents { .. })
    }

    /// The shared block a leaf with pending events jumps to.
    pub(super) fn leaf_events_block(&self, to_ingress: bool) -> usize {
        self.index[&Block::LeafEvents { to_ingress }]
    }

    /// [`Block::LeafEvents`]: each pending event in order (a loop over
    /// the ids, the one back edge bounded by the count the leaf stored),
    /// then on to the ingress walk or the final block.
    pub(super) fn shared_leaf_events(&self, em: &mut Em, to_ingress: bool) {
        em.a.set_origin(
            Origin::NONE,
            Some("events: the leaf's pending log / allow events"),
        );
        let top = em.label("pending_event");
        let code = em.label("pending_code");
        em.push(Op::store(Size::U32, R10, slot::INDEX, 0));
        em.bind(top);
        // r5 = verdict code: the allow for the last when the leaf says so.
        em.push(Op::mov64(R5, i32::from(EventVerdict::Log.code())));
        em.push(Op::load(Size::U32, R1, R10, slot::INDEX));
        em.push(Op::alu64(AluOp::Add, R1, 1));
        em.push(Op::load(Size::U32, R2, R10, slot::COUNT));
        em.push(Op::jmp(JmpCond::Ne, R1, R2, code));
        em.push(Op::load(Size::U32, R2, R10, slot::ALLOW_LAST));
        em.jmp(JmpCond::Eq, R2, 0, code);
        em.push(Op::mov64(R5, i32::from(EventVerdict::Allow.code())));
        em.bind(code);
        // The id: at fp + IDS - 4 * index = fp - 4 * (index + 1) +
        // (IDS + 4) (the verifier takes a constant added to the frame
        // pointer, not one subtracted).
        em.push(Op::alu64(AluOp::Mul, R1, -4));
        em.push(Op::mov64(R2, R10));
        em.push(Op::alu64(AluOp::Add, R2, R1));
        em.push(Op::load(Size::U32, R1, R2, slot::IDS + 4));
        self.event_with_code(em, R5, IdAt::Reg(R1));
        em.push(Op::load(Size::U32, R1, R10, slot::INDEX));
        em.push(Op::alu64(AluOp::Add, R1, 1));
        em.push(Op::store(Size::U32, R10, slot::INDEX, R1));
        em.push(Op::load(Size::U32, R2, R10, slot::COUNT));
        em.push(Op::jmp(JmpCond::Lt, R1, R2, top));
        let next = if to_ingress {
            self.root_block(Entry::Ingress)
        } else {
            self.final_block()
        };
        em.goto(next);
    }
}

#[cfg(test)]
mod tests {
    use crate::check::model_of;
    use crate::ebpf::codegen::{generate, Options};

    /// `n` pods, each allowing TCP 80 from the next one by a rule with
    /// `log`, and a `log` rule every pod's ingress passes.
    fn source(n: usize) -> String {
        let mut s = String::new();
        for i in 0..n {
            s += &format!(
                "endpoint a{i} {{ labels {{ app: \"a{i}\" }} addr 10.0.0.{} }}\n",
                i + 1
            );
        }
        for i in 0..n {
            s += &format!(
                "policy p{i} {{\n  applies to app == \"a{i}\"\n  ingress {{ allow tcp 80 from app == \"a{}\" log }}\n}}\n",
                (i + 1) % n
            );
        }
        s
    }

    /// Ring-buffer reserves (`bpf_ringbuf_reserve`, helper 131) and
    /// instructions of the program for `n` pods.
    fn emissions(n: usize) -> (usize, usize) {
        let model = model_of(&source(n));
        let g = crate::graph::build(&model);
        let out = generate(&model, &g, &Options::default()).unwrap();
        let insns = out.manifest.programs.iter().map(|p| p.insns).sum();
        (out.listing.matches("call #131").count(), insns)
    }

    /// The leaves' events share the stage's emission: as many reserves
    /// for 40 logging leaves as for 4 (inline, one per leaf's event: 4
    /// and 40 more than the shared ones), and about 90 instructions per
    /// leaf fewer.
    #[test]
    fn leaf_events_share_one_emission_per_stage() {
        let (few, few_insns) = emissions(4);
        let (many, many_insns) = emissions(40);
        assert_eq!(few, many, "reserves grow with the logging leaves");
        // Each further leaf: its search branch, a few stores, the jump.
        assert!(
            many_insns - few_insns < 36 * 30,
            "{few_insns} -> {many_insns} instructions"
        );
    }
}
