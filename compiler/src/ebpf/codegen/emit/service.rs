//! The service block: the pipeline's environment handed to
//! [`emit_service_stage`], then the translated packet classified again.

use super::*;

impl Gen<'_> {
    /// The service stage's environment (the pipeline's context, counters
    /// and drop label).
    pub(super) fn lb_env(&self, em: &Em, cont: Label) -> StageEnv {
        StageEnv {
            ctx: CtxLayout {
                lb_pending: Some((ctx::LB_STATE, ctx::LB_CTV)),
                // The prologue's `emit_established_dnat` looked first.
                established_checked: true,
                ..CtxLayout::pipeline()
            },
            cont,
            drop: em.drop,
            reject: RejectCount::Provenance(map::CNT.into()),
            rejected: None,
            lb_counters: false,
        }
    }

    /// Service stage (one block; it cannot be split across a tail call):
    /// frontends that cannot be translated (SCTP) are only checked for
    /// the no-backends reject; TCP / UDP of both families go through
    /// [`emit_service_stage`] (translation, or reject); a translated packet
    /// is classified again (the backend's class) before policy.
    pub(super) fn service(&self, em: &mut Em) {
        let next = self.after_service();
        em.a.set_origin(
            Origin::NONE,
            Some("service stage: frontend → backend (load-balance first, then policy)"),
        );
        if !self.has_services {
            em.goto(next);
            return;
        }
        let reclassify = em.label("reclassify");
        let rejected = em.label("rejected");
        let translatable = em.label("translatable");
        // TCP / UDP of either family: the service stage.
        em.push(Op::load(Size::U8, R1, R6, ctx::RAW_PROTO));
        em.jmp(JmpCond::Eq, R1, 6, translatable);
        em.jmp(JmpCond::Eq, R1, 17, translatable);
        // Others: a frontend without backends still rejects; one with
        // backends continues untranslated (SCTP translation is not
        // implemented: `weir compile` refuses SCTP frontends, E0501; the
        // tests' `Options::untranslated_frontends` reaches this).
        const K: i16 = -184;
        for i in 0..2i16 {
            em.push(Op::load(Size::U64, R1, R6, ctx::DST + 8 * i));
            em.push(Op::store(Size::U64, R10, K + 8 * i, R1));
        }
        em.push(Op::load(Size::U16, R1, R6, ctx::DPORT));
        em.push(Op::store(Size::U16, R10, K + lb::fe_key::PORT, R1));
        em.push(Op::load(Size::U8, R1, R6, ctx::RAW_PROTO));
        em.push(Op::store(Size::U8, R10, K + lb::fe_key::PROTO, R1));
        em.push(Op::load(Size::U8, R1, R6, ctx::FAMILY));
        em.push(Op::store(Size::U8, R10, K + lb::fe_key::FAMILY, R1));
        em.lookup(lb::map::FE, K);
        let miss = em.to(next);
        em.jmp(JmpCond::Eq, R0, 0, miss);
        em.push(Op::load(Size::U32, R1, R0, lb::fe::COUNT));
        em.jmp(JmpCond::Ne, R1, 0, miss);
        em.push(Op::load(Size::U32, R3, R0, lb::fe::NO_BACKENDS));
        em.count_reg(R3);
        self.event(em, EventVerdict::Reject, IdAt::Stack(-4), false);
        let drop = em.drop;
        em.push(Op::Ja { target: drop });

        em.bind(translatable);
        // Translated by the prologue (an established translation whose
        // conntrack entry is gone): classified as client → backend already.
        em.push(Op::load(Size::U32, R1, R6, ctx::SERVICE));
        let judged = em.to(next);
        em.jmp(JmpCond::Ne, R1, 0, judged);
        let mut env = self.lb_env(em, reclassify);
        env.rejected = Some(rejected);
        emit_service_stage(em.a, &env);
        // A conservative count of the stage's branches (it emits through
        // the assembler directly).
        em.jumps += 48;

        em.a.set_origin(
            Origin::NONE,
            Some(
                "service: no backends → TCP reset, ICMP / ICMPv6 port unreachable (UDP), else drop",
            ),
        );
        em.bind(rejected);
        self.event(em, EventVerdict::Reject, IdAt::Stack(NO_BACKENDS_ID), false);
        self.reject(em);

        em.a.set_origin(
            Origin::NONE,
            Some("service: translated → classify the backend, reload atom rows"),
        );
        em.bind(reclassify);
        em.push(Op::load(Size::U32, R1, R6, ctx::SERVICE));
        let to_next = em.to(next);
        em.jmp(JmpCond::Eq, R1, 0, to_next);
        // The backend has the frontend's family.
        let dst6 = em.label("reclassify6");
        let reclassified = em.label("reclassified");
        em.push(Op::load(Size::U8, R1, R6, ctx::FAMILY));
        em.jmp(JmpCond::Eq, R1, 6, dst6);
        self.classify(em, 4, ctx::DST, ctx::DST_CLASS);
        em.push(Op::Ja {
            target: reclassified,
        });
        em.bind(dst6);
        self.classify(em, 6, ctx::DST, ctx::DST_CLASS);
        em.bind(reclassified);
        self.load_rows(em);
        em.goto(next);
    }
}
