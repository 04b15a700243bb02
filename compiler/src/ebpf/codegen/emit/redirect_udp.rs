//! `redirect udp … to proxy`: every datagram of a steered UDP flow is
//! assigned to the proxy's socket, not only the first.
//!
//! Why this is more than the TCP redirect ([`Gen::redirect_to_proxy`]):
//! a TCP connection's first packet is assigned to the proxy's listener,
//! and the accepted socket (local address: the original destination)
//! then receives the later packets through the stack's own lookup. A UDP
//! proxy has one unconnected socket and no per-flow socket: a later
//! datagram to the original destination finds no socket there. And the
//! later datagrams take the conntrack `established` path, which passes
//! them before the steer walk. So when the flow's first datagram was
//! assigned ([`Gen::udp_first_assign`], before the conntrack insert), the
//! flow's `weir_ct` entry records the proxy ([`layout::ct::PROXY_PORT`]
//! and the lookup address in [`layout::ct::FE_ADDR`]), and an established
//! datagram from the flow's client (not a reply:
//! [`layout::ct::CLIENT_FIRST`] against its place in the key) is assigned
//! to that proxy again, with the same lookup and assignment as the first
//! ([`Gen::redirect_to_proxy`]).
//!
//! Why the entry and not the rule: `weir_ct` outlives a generation
//! (shared across reloads), so an index into this generation's rules
//! could name another proxy after a reload; the socket's address and
//! port mean the same in every generation. A steered UDP flow's entry
//! carries the proxy in place of a service frontend (it is not flagged
//! translated): the proxy took its first datagram, so the flow is the
//! proxy's, not the backend's, and no packet from the backend is a reply
//! of it to un-translate.
//!
//! No proxy socket found for the first datagram: the flow is not
//! steered (nothing recorded; a translated flow keeps its frontend for
//! its replies' reverse NAT), as a TCP connection whose first packet
//! found no listener. A steered flow's later datagram that finds no
//! socket (the proxy has gone) passes unsteered; the next one looks
//! again.

use super::*;

impl Gen<'_> {
    /// Whether some `redirect` rule can match UDP (a `udp` rule or one
    /// without a protocol): only then is any of this module's code
    /// emitted, so TCP-only programs are unchanged.
    pub(super) fn udp_redirects(&self) -> bool {
        use crate::model::{Proto, ProtoMatch};
        self.model.steers.iter().flat_map(|s| &s.rules).any(|r| {
            matches!(r.action, SteerAction::Redirect { .. })
                && match &r.proto {
                    ProtoMatch::Any => true,
                    ProtoMatch::Ports { proto, .. } | ProtoMatch::Named { proto, .. } => {
                        *proto == Proto::Udp
                    }
                    ProtoMatch::Icmp { .. } => false,
                }
        })
    }

    /// At the start of the conntrack insert of an allowed packet: a UDP
    /// datagram the steer walk redirects is assigned to its proxy now
    /// ([`Gen::redirect_to_proxy`]), so the insert knows whether the
    /// proxy took it (`STEER_ASSIGNED`); otherwise its steering is
    /// dropped (the final block's steering would look again in vain).
    /// Uses r0–r5, r9 and the stack from fp-224 to fp-172 (nothing the
    /// insert keeps: the hash tables' allowing id is at fp-4).
    pub(super) fn udp_first_assign(&self, em: &mut Em) {
        if !self.udp_redirects() {
            return;
        }
        let done = em.label("udp_first_assigned");
        em.push(Op::load(Size::U32, R1, R6, ctx::STEER_KIND));
        em.jmp(JmpCond::Ne, R1, layout::STEER_REDIRECT, done);
        em.push(Op::load(Size::U8, R1, R6, ctx::RAW_PROTO));
        em.jmp(JmpCond::Ne, R1, 17, done);
        self.redirect_to_proxy(em);
        em.push(Op::load(Size::U32, R1, R6, ctx::STEER_KIND));
        em.jmp(JmpCond::Ne, R1, layout::STEER_REDIRECT, done);
        em.push(Op::store(
            Size::U32,
            R6,
            ctx::STEER_KIND,
            layout::STEER_NONE,
        ));
        em.bind(done);
    }

    /// In the conntrack insert, after the value is written at `fp +
    /// VALUE` and the canonical key at `fp + CT_KEY_COPY`: a UDP datagram
    /// the proxy took ([`Gen::udp_first_assign`]) records the proxy
    /// (lookup address for its family, port) in place of a frontend, and
    /// which end is its client; the translated flag is cleared (see the
    /// module docs).
    pub(super) fn ct_record_proxy(&self, em: &mut Em) {
        use layout::ct;
        if !self.udp_redirects() {
            return;
        }
        let none = em.label("ct_no_proxy");
        let v6 = em.label("ct_proxy_v6");
        let port = em.label("ct_proxy_port");
        em.push(Op::load(Size::U32, R1, R6, ctx::STEER_KIND));
        em.jmp(JmpCond::Ne, R1, layout::STEER_ASSIGNED, none);
        em.push(Op::load(Size::U8, R1, R6, ctx::RAW_PROTO));
        em.jmp(JmpCond::Ne, R1, 17, none);
        em.push(Op::load(Size::U64, R1, R10, VALUE + ct::TIME));
        em.push(Op::alu64(
            AluOp::And,
            R1,
            !(ct::TRANSLATED | ct::CLIENT_FIRST),
        ));
        self.src_first(em, R2);
        em.push(Op::alu64(AluOp::Or, R1, R2));
        em.push(Op::store(Size::U64, R10, VALUE + ct::TIME, R1));
        em.push(Op::load(Size::U8, R1, R6, ctx::FAMILY));
        em.jmp(JmpCond::Eq, R1, 6, v6);
        em.push(Op::load(Size::U32, R1, R6, ctx::STEER_ADDR));
        em.push(Op::store(Size::U32, R10, VALUE + ct::FE_ADDR, R1));
        em.push(Op::store(Size::U32, R10, VALUE + ct::FE_ADDR + 4, 0));
        em.push(Op::store(Size::U64, R10, VALUE + ct::FE_ADDR + 8, 0));
        em.push(Op::Ja { target: port });
        em.bind(v6);
        for i in 0..4i16 {
            em.push(Op::load(Size::U32, R1, R6, ctx::STEER_ADDR6 + 4 * i));
            em.push(Op::store(Size::U32, R10, VALUE + ct::FE_ADDR + 4 * i, R1));
        }
        em.bind(port);
        em.push(Op::store(Size::U16, R10, VALUE + ct::FE_PORT, 0));
        em.push(Op::load(Size::U32, R1, R6, ctx::STEER_ARG));
        em.push(Op::store(Size::U16, R10, VALUE + ct::PROXY_PORT, R1));
        em.push(Op::store(Size::U32, R10, VALUE + ct::SERVICE, 0));
        em.bind(none);
    }

    /// On a conntrack hit (value pointer in r0, kept; the canonical key
    /// at `fp + CT_KEY_COPY`): a packet from the client of a flow whose
    /// entry records a proxy gets that proxy as its steering in the
    /// context, as the steer leaf of its first packet wrote it
    /// ([`Gen::established_redirect`] applies it). Uses r1–r5.
    pub(super) fn flow_proxy(&self, em: &mut Em) {
        use layout::ct;
        if !self.udp_redirects() {
            return;
        }
        em.a.set_origin(Origin(0), Some("conntrack: the UDP flow's proxy"));
        let done = em.label("flow_no_proxy");
        em.push(Op::load(Size::U16, R1, R0, ct::PROXY_PORT));
        em.jmp(JmpCond::Eq, R1, 0, done);
        em.push(Op::load(Size::U64, R2, R0, ct::TIME));
        em.push(Op::alu64(AluOp::And, R2, ct::CLIENT_FIRST));
        self.src_first(em, R5);
        em.push(Op::jmp(JmpCond::Ne, R2, R5, done));
        em.push(Op::store(Size::U32, R6, ctx::STEER_ARG, R1));
        em.push(Op::load(Size::U32, R1, R0, ct::FE_ADDR));
        em.push(Op::store(Size::U32, R6, ctx::STEER_ADDR, R1));
        for i in 0..4i16 {
            em.push(Op::load(Size::U32, R1, R0, ct::FE_ADDR + 4 * i));
            em.push(Op::store(Size::U32, R6, ctx::STEER_ADDR6 + 4 * i, R1));
        }
        em.push(Op::store(
            Size::U32,
            R6,
            ctx::STEER_KIND,
            layout::STEER_REDIRECT,
        ));
        em.bind(done);
    }

    /// After an established packet is counted: the proxy
    /// [`Gen::flow_proxy`] found is assigned ([`Gen::redirect_to_proxy`]).
    pub(super) fn established_redirect(&self, em: &mut Em) {
        if !self.udp_redirects() {
            return;
        }
        em.a.set_origin(Origin(0), Some("conntrack: a UDP datagram to its proxy"));
        let skip = em.label("established_unsteered");
        em.push(Op::load(Size::U32, R1, R6, ctx::STEER_KIND));
        em.jmp(JmpCond::Ne, R1, layout::STEER_REDIRECT, skip);
        self.redirect_to_proxy(em);
        em.bind(skip);
    }
}
