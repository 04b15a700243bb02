//! One conntrack table for translated flows (issue 21, "one table"): a
//! translated flow's forward state lives in the shared `weir_ct`, not in
//! a per-generation `weir_lb_ct`.
//!
//! A new flow to a service that is allowed writes two `weir_ct` entries
//! (`verdict.rs`): the flow's own, keyed client ↔ backend and flagged
//! [`layout::ct::TRANSLATED`] (its replies' reverse NAT reads the
//! frontend from it, as before), and its *forward* entry, keyed client ↔
//! frontend — the packet as its client sends it — and flagged
//! [`layout::ct::FORWARD`] (a bit of its service word), carrying the
//! backend and the service. So the
//! one conntrack lookup every packet makes, under the packet's own
//! tuple, finds for a packet to a frontend:
//!
//! - a forward entry, from its client: a translated flow. The packet is
//!   DNATed to the recorded backend (context and conntrack key too) and
//!   the flow's own entry is looked up (a second hit: established; a
//!   miss: the flow's entry is gone, and the packet is judged as client
//!   → backend, the service stage skipping it);
//! - a forward entry, from its other end (frontend → client: a
//!   reverse-NATed reply seen by a second hook): established. It is not a
//!   new flow, so it never overwrites the forward entry;
//! - any other entry: an untranslated established flow (e.g. one allowed
//!   before its destination became a frontend), which stays untranslated;
//! - nothing: a new flow (the service stage chooses a backend).
//!
//! Before, a packet to a frontend looked up `weir_lb_ct` and then
//! `weir_ct`: one miss fewer for a new or denied flow to a frontend, and
//! the forward state is shared by generations like the rest of
//! `weir_ct` (a switch keeps the flow's backend). A program without a
//! translated frontend treats a forward entry (left by an earlier
//! generation) as no entry: the packet is judged as a new flow, as it
//! was when `weir_lb_ct` went with its generation.

use super::*;

impl Gen<'_> {
    /// On the prologue's conntrack hit (value pointer in r0): the forward
    /// entry's cases above. Falls through with r0 the flow's entry (the
    /// packet's own, or after the DNAT the client ↔ backend one); jumps to
    /// `new` or `established`.
    pub(super) fn forward_entry(&self, em: &mut Em, new: Label, established: Label) {
        use layout::ct;
        let translates = self.has_services && translates(self.g);
        em.a.set_origin(
            Origin::NONE,
            Some("conntrack: a translated flow's forward entry"),
        );
        em.push(Op::load(Size::U32, R1, R0, ct::SERVICE));
        if !translates {
            em.jmp(JmpCond::Set, R1, ct::FORWARD, new);
            return;
        }
        let flow = em.label("not_forward");
        let fwd = em.label("forward");
        em.jmp(JmpCond::Set, R1, ct::FORWARD, fwd);
        em.push(Op::Ja { target: flow });
        em.bind(fwd);
        // From the end that is not the client: established.
        em.push(Op::load(Size::U64, R1, R0, ct::TIME));
        em.push(Op::alu64(AluOp::And, R1, ct::CLIENT_FIRST));
        self.src_first(em, R2);
        em.push(Op::jmp(JmpCond::Ne, R1, R2, established));
        em.a.set_origin(
            Origin::NONE,
            Some("service: established translated flow → its backend"),
        );
        for (to, from, size) in [
            (BACKEND + lb::be::ADDR, ct::FE_ADDR, Size::U64),
            (BACKEND + lb::be::ADDR + 8, ct::FE_ADDR + 8, Size::U64),
            (BACKEND + lb::be::PORT, ct::FE_PORT, Size::U16),
        ] {
            em.push(Op::load(size, R1, R0, from));
            em.push(Op::store(size, R10, to, R1));
        }
        em.push(Op::load(Size::U32, R1, R0, ct::SERVICE));
        em.push(Op::alu32(AluOp::And, R1, !ct::FORWARD));
        em.push(Op::alu64(AluOp::Sub, R1, 1));
        em.push(Op::store(Size::U32, R10, SERVICE_INDEX, R1));
        let env = self.lb_env(em, new);
        emit_recorded_dnat(em.a, &env);
        em.a.set_origin(Origin::NONE, Some("conntrack: the translated flow's entry"));
        self.canonical_ct_key(em, CT_KEY_COPY);
        em.ct_call(CtCall::Lookup, CT_KEY_COPY);
        em.jmp(JmpCond::Eq, R0, 0, new);
        em.bind(flow);
    }
}
