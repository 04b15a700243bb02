//! The final block: logged ids counted, both sides combined as the
//! interpreter does, the deciding id counted; on allow the flow is entered
//! into conntrack with its pending translation, on deny a translation is
//! forgotten.

use super::*;

impl Gen<'_> {
    /// Counts the logged ids both sides' leaves recorded in the context
    /// (unrolled up to the most any leaf records).
    pub(super) fn count_logged(&self, em: &mut Em) {
        if self.log_slots == 0 {
            return;
        }
        em.a.set_origin(Origin::NONE, Some("count the log rules the leaves passed"));
        for (word, log) in [(ctx::EG_WORD, ctx::EG_LOG), (ctx::IN_WORD, ctx::IN_LOG)] {
            let done = em.label("logged_done");
            for i in 0..self.log_slots {
                em.push(Op::load(Size::U32, R1, R6, word));
                em.push(Op::alu64(AluOp::Rsh, R1, LOGGED_SHIFT as i32));
                em.push(Op::alu64(
                    AluOp::And,
                    R1,
                    (1 << (DECIDED_SHIFT - LOGGED_SHIFT)) - 1,
                ));
                em.jmp(JmpCond::Le, R1, i as i32, done);
                em.push(Op::load(Size::U32, R3, R6, log + 4 * i as i16));
                em.count_reg(R3);
            }
            em.bind(done);
        }
    }

    pub(super) fn final_verdict(&self, em: &mut Em) {
        em.a.set_origin(
            Origin::NONE,
            Some("verdict: egress ∧ ingress, count, conntrack insert on allow"),
        );
        let deny_eg = em.label("deny_eg");
        let deny_in = em.label("deny_in");
        let id_in = em.label("allow_by_ingress");
        let id_eg = em.label("allow_by_egress");
        let allow = em.label("allow");
        let deny = em.label("deny");
        self.count_logged(em);
        em.push(Op::load(Size::U32, R4, R6, ctx::EG_WORD));
        em.push(Op::load(Size::U32, R5, R6, ctx::IN_WORD));
        let sides = Sides {
            deny_eg,
            deny_in,
            id_in,
            id_eg,
            allow,
            deny,
        };
        sides.allowed_id(em);
        // Non-LRU tables (`fixed.rs`): inserted before the count, a full
        // table denies.
        let fixed = self
            .fixed_tables()
            .then(|| (em.label("table_full"), em.label("table_full_undo")));
        if let Some((full, undo)) = fixed {
            self.inserts_or_full(em, full, undo);
        }
        em.count_reg(R3);
        self.final_events(em, true);
        if fixed.is_none() {
            self.conntrack_insert(em);
            if self.has_services {
                self.record_translation(em);
            }
        }
        self.steering(em);
        em.push(Op::mov64(R0, layout::TC_ACT_OK));
        em.push(Op::Exit);
        if let Some((full, undo)) = fixed {
            self.table_full(em, full, undo);
        }
        sides.denied_id(em);
        em.count_reg(R3);
        self.final_events(em, false);
        if self.has_services {
            self.forget_translation(em);
        }
        em.push(Op::mov64(R0, layout::TC_ACT_SHOT));
        em.push(Op::Exit);
    }

    /// Conntrack insert (key built by the prologue, in canonical order):
    /// the time, its low bits flagging a translated flow (its replies
    /// need reverse NAT) and whether its client is the key's first end;
    /// for a translated flow the frontend and service, which a reply's
    /// reverse NAT reads from this entry (see [`layout::ct`]).
    ///
    /// The time is the coarse monotonic clock
    /// (`bpf_ktime_get_coarse_ns`): the clock the collector compares
    /// with (`CLOCK_MONOTONIC`) as of the last timer tick, so an entry
    /// reads at most one tick older than it is, against idle timeouts of
    /// seconds. `bpf_ktime_get_ns` reads the clock source (`rdtsc` here)
    /// and was ~4 % of a new allowed flow in a perf profile (issue 21);
    /// nothing reads an entry's time to finer than its timeout.
    pub(super) fn conntrack_insert(&self, em: &mut Em) {
        use layout::ct;
        self.udp_first_assign(em);
        self.canonical_ct_key(em, CT_KEY_COPY);
        em.push(Op::Call {
            helper: helper::KTIME_GET_COARSE_NS,
        });
        if self.has_services {
            // The same time for a new translation's forward entry
            // ([`Self::record_translation`], always after this insert):
            // its timestamp slot, past the 32 bytes `weir_ct` reads.
            em.push(Op::store(Size::U64, R10, NOW, R0));
        }
        let flags = ct::TRANSLATED | ct::CLIENT_FIRST;
        // Non-LRU tables: a new entry is not yet `SEEN` (`fixed.rs`).
        let flags = if self.fixed_tables() {
            flags | ct::SEEN
        } else {
            flags
        };
        em.push(Op::alu64(AluOp::And, R0, !flags));
        let plain = em.label("not_translated");
        let written = em.label("ct_value_written");
        if self.has_services {
            em.push(Op::load(Size::U32, R1, R6, ctx::SERVICE));
            em.jmp(JmpCond::Eq, R1, 0, plain);
            em.push(Op::alu64(AluOp::Or, R0, ct::TRANSLATED));
            self.src_first(em, R2);
            em.push(Op::alu64(AluOp::Or, R0, R2));
            em.push(Op::store(Size::U64, R10, VALUE + ct::TIME, R0));
            for (to, from, size) in [
                (ct::FE_ADDR, ctx::ORIG_DST, Size::U64),
                (ct::FE_ADDR + 8, ctx::ORIG_DST + 8, Size::U64),
                (ct::FE_PORT, ctx::ORIG_DPORT, Size::U16),
                (ct::SERVICE, ctx::SERVICE, Size::U32),
            ] {
                em.push(Op::load(size, R1, R6, from));
                em.push(Op::store(size, R10, VALUE + to, R1));
            }
            em.push(Op::store(Size::U16, R10, VALUE + ct::FE_PORT + 2, 0));
            em.push(Op::Ja { target: written });
        }
        em.bind(plain);
        em.push(Op::store(Size::U64, R10, VALUE + ct::TIME, R0));
        for off in [ct::FE_ADDR, ct::FE_ADDR + 8, ct::FE_PORT] {
            em.push(Op::store(Size::U64, R10, VALUE + off, 0));
        }
        em.bind(written);
        self.ct_record_proxy(em);
        em.ct_call(CtCall::Update(VALUE), CT_KEY_COPY);
    }

    /// An allowed packet of a new translation (the service stage left
    /// `LB_PENDING` in the context): the flow's *forward* entry
    /// ([`layout::ct::FORWARD`]) written into `weir_ct` beside the flow's
    /// own entry [`Self::conntrack_insert`] wrote (which runs first on
    /// both the LRU and the non-LRU path and left the clock's value at
    /// `NOW`: one clock read per new flow). Key: the
    /// client ↔ frontend tuple in canonical order at `fp + TUPLE`;
    /// value: the backend (the packet's destination now), the service.
    /// The flow's entry at `CT_KEY_COPY` is left alone (the non-LRU
    /// path deletes it when this insert fails). r0: the update's result.
    pub(super) fn record_translation(&self, em: &mut Em) {
        use layout::ct;
        let done = em.label("no_new_translation");
        em.push(Op::load(Size::U32, R1, R6, ctx::LB_STATE));
        em.jmp(JmpCond::Ne, R1, layout::LB_PENDING, done);
        self.forward_key(em, TUPLE);
        em.push(Op::load(Size::U64, R1, R10, NOW));
        em.push(Op::alu64(AluOp::And, R1, !ct::FLAGS));
        self.first_end_is(em, R2, (ctx::SRC, ctx::SPORT), TUPLE);
        em.push(Op::alu64(AluOp::Or, R1, R2));
        em.push(Op::store(Size::U64, R10, VALUE + ct::TIME, R1));
        for (to, from, size) in [
            (ct::FE_ADDR, ctx::DST, Size::U64),
            (ct::FE_ADDR + 8, ctx::DST + 8, Size::U64),
            (ct::FE_PORT, ctx::DPORT, Size::U16),
        ] {
            em.push(Op::load(size, R1, R6, from));
            em.push(Op::store(size, R10, VALUE + to, R1));
        }
        em.push(Op::store(Size::U16, R10, VALUE + ct::PROXY_PORT, 0));
        em.push(Op::load(Size::U32, R1, R6, ctx::SERVICE));
        em.push(Op::alu32(AluOp::Or, R1, ct::FORWARD));
        em.push(Op::store(Size::U32, R10, VALUE + ct::SERVICE, R1));
        em.ct_call(CtCall::Update(VALUE), TUPLE);
        em.bind(done);
    }

    /// A denied translated packet leaves no translation state behind: a
    /// new translation never wrote any ([`Self::record_translation`]);
    /// a flow translated earlier (its forward entry found by the
    /// prologue, whose flow entry was gone) has that entry deleted, so a
    /// later packet of the flow is load-balanced and judged afresh. (Its
    /// replies are un-translated only through an allowed flow's
    /// conntrack entry: a denied flow has none.)
    pub(super) fn forget_translation(&self, em: &mut Em) {
        let done = em.label("no_translation");
        em.push(Op::load(Size::U32, R1, R6, ctx::SERVICE));
        em.jmp(JmpCond::Eq, R1, 0, done);
        em.push(Op::load(Size::U32, R1, R6, ctx::LB_STATE));
        em.jmp(JmpCond::Eq, R1, layout::LB_PENDING, done);
        self.forward_key(em, TUPLE);
        em.ct_call(CtCall::Delete, TUPLE);
        em.bind(done);
    }

    /// The forward entry's key of a translated packet: client (the
    /// packet's source) ↔ frontend (`ctx::ORIG_DST`, `ctx::ORIG_DPORT`)
    /// in canonical order at `fp + out`.
    pub(super) fn forward_key(&self, em: &mut Em, out: i16) {
        self.canonical_key_of(
            em,
            [(ctx::SRC, ctx::SPORT), (ctx::ORIG_DST, ctx::ORIG_DPORT)],
            out,
        );
    }
}

/// Where [`Sides::allowed_id`] and [`Sides::denied_id`] go: the two
/// sides' decision words in r4 (egress) and r5 (ingress), combined as the
/// interpreter does (docs/language.md §4: the first denying side, egress
/// first; an allow names the ingress rule, else the egress rule, else the
/// ingress default). One combination for the enforced sides (the final
/// block) and the audit sides (`events.rs`).
pub(in crate::ebpf::codegen) struct Sides {
    pub deny_eg: Label,
    pub deny_in: Label,
    pub id_in: Label,
    pub id_eg: Label,
    pub allow: Label,
    pub deny: Label,
}

impl Sides {
    /// Jumps to `deny_eg` / `deny_in` when a side denies; else falls
    /// through past `allow` with the allowing id in r3.
    pub(in crate::ebpf::codegen) fn allowed_id(&self, em: &mut Em) {
        let both = FLAG_EVALUATED | FLAG_ALLOW;
        em.push(Op::mov64(R3, R4));
        em.push(Op::alu64(AluOp::And, R3, both));
        em.jmp(JmpCond::Eq, R3, FLAG_EVALUATED, self.deny_eg);
        em.push(Op::mov64(R3, R5));
        em.push(Op::alu64(AluOp::And, R3, both));
        em.jmp(JmpCond::Eq, R3, FLAG_EVALUATED, self.deny_in);
        em.jmp(JmpCond::Set, R5, FLAG_RULE, self.id_in);
        em.jmp(JmpCond::Set, R4, FLAG_RULE, self.id_eg);
        em.jmp(JmpCond::Set, R5, FLAG_EVALUATED, self.id_in);
        em.bind(self.id_eg);
        em.push(Op::mov64(R3, R4));
        em.push(Op::Ja { target: self.allow });
        em.bind(self.id_in);
        em.push(Op::mov64(R3, R5));
        em.bind(self.allow);
        em.push(Op::alu64(AluOp::Rsh, R3, DECIDED_SHIFT as i32));
    }

    /// `deny_eg` / `deny_in`: falls through past `deny` with the denying
    /// id in r3.
    pub(in crate::ebpf::codegen) fn denied_id(&self, em: &mut Em) {
        em.bind(self.deny_eg);
        em.push(Op::mov64(R3, R4));
        em.push(Op::Ja { target: self.deny });
        em.bind(self.deny_in);
        em.push(Op::mov64(R3, R5));
        em.bind(self.deny);
        em.push(Op::alu64(AluOp::Rsh, R3, DECIDED_SHIFT as i32));
    }
}

/// The flags of a verdict leaf's side word: evaluated, allowed, decided by
/// a rule (the enforced leaves in `node.rs`, the audit leaves' copy in
/// `events.rs`).
pub(in crate::ebpf::codegen) fn leaf_flags(allow: bool, by_rule: bool) -> i32 {
    let mut f = FLAG_EVALUATED;
    if allow {
        f |= FLAG_ALLOW;
    }
    if by_rule {
        f |= FLAG_RULE;
    }
    f
}
