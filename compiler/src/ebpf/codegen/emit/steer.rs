//! Steering of an allowed packet: `mark`, `dscp` rewrite and the
//! redirect to a local proxy by socket assignment.

use super::*;

impl Gen<'_> {
    /// Steering of an allowed packet (docs/language.md §4 step 5): `mark`
    /// sets `skb->mark`; `dscp` rewrites the DSCP bits (IPv4: header
    /// checksum fixed with `bpf_l3_csum_replace`; IPv6: traffic class);
    /// `redirect` assigns the packet to the local proxy's socket
    /// ([`Gen::redirect_to_proxy`]).
    pub(super) fn steering(&self, em: &mut Em) {
        let has = |f: fn(&SteerAction) -> bool| self.g.steer_actions.iter().flatten().any(f);
        let (mark, dscp_used, redirect_used) = (
            has(|a| matches!(a, SteerAction::Mark(_))),
            has(|a| matches!(a, SteerAction::Dscp(_))),
            has(|a| matches!(a, SteerAction::Redirect { .. })),
        );
        if !(mark || dscp_used || redirect_used) {
            return;
        }
        em.a.set_origin(Origin::NONE, Some("steering of the allowed packet"));
        let done = em.label("steered");
        let dscp = em.label("steer_dscp");
        let redirect = em.label("steer_redirect");
        em.push(Op::load(Size::U32, R1, R6, ctx::STEER_KIND));
        if dscp_used {
            em.jmp(JmpCond::Eq, R1, layout::STEER_DSCP, dscp);
        }
        if redirect_used {
            em.jmp(JmpCond::Eq, R1, layout::STEER_REDIRECT, redirect);
        }
        if mark {
            em.jmp(JmpCond::Ne, R1, layout::STEER_MARK, done);
            em.push(Op::load(Size::U32, R1, R6, ctx::STEER_ARG));
            em.push(Op::store(Size::U32, R7, skb::MARK, R1));
        }
        em.push(Op::Ja { target: done });
        if dscp_used {
            em.bind(dscp);
            self.rewrite_dscp(em, done);
        }
        if redirect_used {
            em.bind(redirect);
            self.redirect_to_proxy(em);
        }
        em.bind(done);
    }

    /// DSCP rewrite (`STEER_ARG`), then jump to `done`.
    pub(super) fn rewrite_dscp(&self, em: &mut Em, done: Label) {
        const W: i16 = -168;
        em.push(Op::mov64(R1, R7));
        em.push(Op::mov64(R2, 14));
        em.push(Op::mov64(R3, R10));
        em.push(Op::alu64(AluOp::Add, R3, i32::from(W)));
        em.push(Op::mov64(R4, 2));
        em.push(Op::store(Size::U64, R10, W, 0));
        em.push(Op::Call {
            helper: helper::SKB_LOAD_BYTES,
        });
        em.jmp(JmpCond::Ne, R0, 0, done);
        // r2 = the first 16 bits as a number (big-endian on the wire).
        em.push(Op::load(Size::U16, R2, R10, W));
        em.push(Op::be16(R2));
        em.push(Op::load(Size::U32, R3, R6, ctx::STEER_ARG));
        let v6 = em.label("dscp_v6");
        em.push(Op::load(Size::U8, R1, R6, ctx::FAMILY));
        em.jmp(JmpCond::Eq, R1, 6, v6);
        // IPv4: version/IHL, then TOS = DSCP << 2 | ECN.
        em.push(Op::alu64(AluOp::And, R2, 0xff03));
        em.push(Op::alu64(AluOp::Lsh, R3, 2));
        em.push(Op::alu64(AluOp::Or, R2, R3));
        em.push(Op::be16(R2));
        em.push(Op::store(Size::U16, R10, W + 2, R2));
        em.push(Op::mov64(R1, R7));
        em.push(Op::mov64(R2, 14 + 10));
        em.push(Op::load(Size::U16, R3, R10, W));
        em.push(Op::load(Size::U16, R4, R10, W + 2));
        em.push(Op::mov64(R5, 2));
        em.push(Op::Call {
            helper: helper::L3_CSUM_REPLACE,
        });
        let store = em.label("dscp_store");
        em.push(Op::Ja { target: store });
        // IPv6: version (4) | traffic class (8) | flow label: DSCP is the
        // top 6 bits of the traffic class (bits 11..6 here).
        em.bind(v6);
        em.push(Op::alu64(AluOp::And, R2, 0xf03f));
        em.push(Op::alu64(AluOp::Lsh, R3, 6));
        em.push(Op::alu64(AluOp::Or, R2, R3));
        em.push(Op::be16(R2));
        em.push(Op::store(Size::U16, R10, W + 2, R2));
        em.bind(store);
        crate::ebpf::service::emit::store_bytes(em.a, 14, W + 2, 2);
        em.push(Op::Ja { target: done });
    }

    /// `redirect … to proxy ADDR:PORT` for TCP and UDP of either family:
    /// the packet is assigned (`bpf_sk_assign`) to the proxy's listening
    /// socket, found with `bpf_sk_lookup_tcp` (UDP: `bpf_sk_lookup_udp`,
    /// the proxy's bound socket) on (ADDR, PORT) — the
    /// 12-byte IPv4 or the 36-byte IPv6 `bpf_sock_tuple`, ADDR the
    /// rule's address when it is of the connection's family, else the
    /// unspecified address (only a wildcard listener matches); the
    /// destination address is not rewritten, so the proxy (the node
    /// routes the original destination locally) sees the original
    /// destination. No proxy socket, or neither TCP nor UDP: the packet
    /// passes unsteered. For TCP only the first packet is assigned: the
    /// connection's request and established sockets carry the original
    /// destination as their local address, so the stack's own lookup
    /// finds them for the later packets (which take the `established`
    /// path). For UDP every datagram from the client is (`redirect_udp.rs`).
    pub(super) fn redirect_to_proxy(&self, em: &mut Em) {
        let done = em.label("redirect_done");
        let v6 = em.label("redirect_v6");
        em.push(Op::load(Size::U8, R1, R6, ctx::RAW_PROTO));
        if self.udp_redirects() {
            let socket_proto = em.label("redirect_socket_proto");
            em.jmp(JmpCond::Eq, R1, 17, socket_proto);
            em.jmp(JmpCond::Ne, R1, 6, done);
            em.bind(socket_proto);
        } else {
            em.jmp(JmpCond::Ne, R1, 6, done);
        }
        em.push(Op::load(Size::U8, R1, R6, ctx::FAMILY));
        em.jmp(JmpCond::Eq, R1, 6, v6);
        em.jmp(JmpCond::Ne, R1, 4, done);
        // Tuple (saddr, daddr, sport, dport) of the listener.
        const T: i16 = -184;
        em.push(Op::load(Size::U32, R1, R6, ctx::SRC));
        em.push(Op::store(Size::U32, R10, T, R1));
        em.push(Op::load(Size::U32, R1, R6, ctx::STEER_ADDR));
        em.push(Op::store(Size::U32, R10, T + 4, R1));
        em.push(Op::load(Size::U16, R1, R6, ctx::SPORT));
        em.push(Op::be16(R1));
        em.push(Op::store(Size::U16, R10, T + 8, R1));
        em.push(Op::load(Size::U32, R1, R6, ctx::STEER_ARG));
        em.push(Op::be16(R1));
        em.push(Op::store(Size::U16, R10, T + 10, R1));
        self.sk_assign(em, T, 12, done);
        // IPv6: saddr (16), daddr (16), sport, dport.
        em.bind(v6);
        const T6: i16 = -224;
        for i in 0..4i16 {
            em.push(Op::load(Size::U32, R1, R6, ctx::SRC + 4 * i));
            em.push(Op::store(Size::U32, R10, T6 + 4 * i, R1));
            em.push(Op::load(Size::U32, R1, R6, ctx::STEER_ADDR6 + 4 * i));
            em.push(Op::store(Size::U32, R10, T6 + 16 + 4 * i, R1));
        }
        em.push(Op::load(Size::U16, R1, R6, ctx::SPORT));
        em.push(Op::be16(R1));
        em.push(Op::store(Size::U16, R10, T6 + 32, R1));
        em.push(Op::load(Size::U32, R1, R6, ctx::STEER_ARG));
        em.push(Op::be16(R1));
        em.push(Op::store(Size::U16, R10, T6 + 34, R1));
        self.sk_assign(em, T6, 36, done);
        em.bind(done);
    }

    /// `sk = sk_lookup_tcp(tuple of `size` bytes at fp + t)` (a UDP
    /// packet: `sk_lookup_udp`); `sk_assign(skb, sk); release`. Jumps to
    /// `done` (also when no socket is found). Clobbers r9.
    pub(super) fn sk_assign(&self, em: &mut Em, t: i16, size: i32, done: Label) {
        em.push(Op::mov64(R1, R7));
        em.push(Op::mov64(R2, R10));
        em.push(Op::alu64(AluOp::Add, R2, i32::from(t)));
        em.push(Op::mov64(R3, size));
        em.push(Op::mov64(R4, -1)); // BPF_F_CURRENT_NETNS
        em.push(Op::mov64(R5, 0));
        if self.udp_redirects() {
            let udp = em.label("sk_lookup_udp");
            let found = em.label("sk_looked_up");
            em.push(Op::load(Size::U8, R0, R6, ctx::RAW_PROTO));
            em.jmp(JmpCond::Eq, R0, 17, udp);
            em.push(Op::Call {
                helper: helper::SK_LOOKUP_TCP,
            });
            em.push(Op::Ja { target: found });
            em.bind(udp);
            em.push(Op::Call {
                helper: helper::SK_LOOKUP_UDP,
            });
            em.bind(found);
        } else {
            em.push(Op::Call {
                helper: helper::SK_LOOKUP_TCP,
            });
        }
        em.jmp(JmpCond::Eq, R0, 0, done);
        em.push(Op::mov64(R9, R0));
        em.push(Op::mov64(R2, R0));
        em.push(Op::mov64(R1, R7));
        em.push(Op::mov64(R3, 0));
        em.push(Op::Call {
            helper: helper::SK_ASSIGN,
        });
        if self.udp_redirects() {
            // Assigned: `redirect_udp.rs` records the flow's proxy.
            let failed = em.label("sk_assign_failed");
            em.jmp(JmpCond::Ne, R0, 0, failed);
            em.push(Op::store(
                Size::U32,
                R6,
                ctx::STEER_KIND,
                layout::STEER_ASSIGNED,
            ));
            em.bind(failed);
        }
        em.push(Op::mov64(R1, R9));
        em.push(Op::Call {
            helper: helper::SK_RELEASE,
        });
        em.push(Op::Ja { target: done });
    }
}
