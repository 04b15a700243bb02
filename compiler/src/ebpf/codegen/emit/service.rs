//! The service block: the pipeline's environment handed to
//! [`emit_service_stage`], then the translated packet classified again.

use super::*;
use crate::ebpf::service::sctp::IPPROTO_SCTP;

impl Gen<'_> {
    /// The service stage's environment (the pipeline's context, counters
    /// and drop label).
    pub(super) fn lb_env(&self, em: &Em, cont: Label) -> StageEnv {
        StageEnv {
            ctx: CtxLayout {
                lb_pending: Some((ctx::LB_STATE, ctx::LB_CTV)),
                // The prologue's conntrack lookup found any forward entry first
                // (`forward.rs`): a packet reaching the stage has none.
                established_checked: true,
                // The pipeline's parse leaves both families' transport
                // offset in the context.
                l4_known: true,
                // The CRC32c update, where an SCTP port can change.
                sctp_crc: crate::ebpf::codegen::sctp_port_changes(self.model),
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
    /// TCP / UDP / SCTP of both families go through
    /// [`emit_service_stage`] (translation, or reject); a translated packet
    /// is classified again (the backend's class) before policy — or,
    /// when the prologue left the destination's class to this block
    /// (`dst_class.rs`), every packet's destination is classified here.
    /// Other protocols have no frontends.
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
        // Every way to the policy classifies the destination when the
        // prologue left it (`dst_class.rs`).
        let defer = self.defers_dst_class();
        em.push(Op::load(Size::U8, R1, R6, ctx::RAW_PROTO));
        em.jmp(JmpCond::Eq, R1, 6, translatable);
        em.jmp(JmpCond::Eq, R1, 17, translatable);
        em.jmp(JmpCond::Eq, R1, IPPROTO_SCTP, translatable);
        let other = if defer { reclassify } else { em.to(next) };
        em.push(Op::Ja { target: other });

        em.bind(translatable);
        // Translated by the prologue (a forward entry whose flow's
        // conntrack entry is gone): classified as client → backend already.
        em.push(Op::load(Size::U32, R1, R6, ctx::SERVICE));
        let judged = if defer { reclassify } else { em.to(next) };
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
            Some(if defer {
                "service: classify the destination (a translated packet's backend), load atom rows"
            } else {
                "service: translated → classify the backend, reload atom rows"
            }),
        );
        em.bind(reclassify);
        if !defer {
            em.push(Op::load(Size::U32, R1, R6, ctx::SERVICE));
            let to_next = em.to(next);
            em.jmp(JmpCond::Eq, R1, 0, to_next);
        }
        // The backend has the frontend's family.
        self.classify_dst(em);
        em.goto(next);
    }
}
