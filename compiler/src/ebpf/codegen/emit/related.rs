//! ICMP errors related to a connection (docs/language.md §4, step 1;
//! what counts as one: [`crate::interp::related`]), in the prologue,
//! before the packet's own conntrack lookup.
//!
//! An ICMPv4 error (types [`ICMP4_ERRORS`]) or ICMPv6 error (types
//! below [`ICMP6_ERRORS_BELOW`]) has its quote read with `bpf_skb_load_bytes` (the
//! quoted IP header — IPv4: its first 20 bytes, options skipped by its
//! IHL; IPv6: the fixed 40, no extension headers walked — and the 8 bytes
//! after it) into a conntrack key of the quoted packet, built in
//! `ctx::CT_KEY` and looked up in canonical order, so either direction of
//! the flow finds its one `weir_ct` entry. It must be addressed to the
//! quoted packet's sender (outer destination = quoted source), as Linux's
//! `nf_conntrack_inet_error` requires. A hit is an established packet:
//! counted as provenance 0 and passed. A miss (or a quote that cannot be
//! read: too short, another family, a non-first fragment, IPv6 extension
//! headers) falls through to the packet's own lookup, which rebuilds
//! `ctx::CT_KEY`: the error is then judged as any ICMP packet.
//!
//! **Reverse NAT of the error** (as Linux's `nf_nat_icmp_reply_translation`):
//! when the entry is a translated flow (client → frontend, DNATed to a
//! backend) and the quote is a packet its client sent (client → backend,
//! the entry's `CLIENT_FIRST` bit against the quote's place in the key),
//! the error is on its way back to the client, which knows the frontend
//! only: the quote's destination address and port become the frontend's,
//! the quoted IPv4 header checksum is updated, the quoted L4 checksum too
//! where Linux updates it (UDP when non-zero, inside the 8 quoted bytes;
//! TCP only when the frame holds the quoted TCP header's checksum field,
//! i.e. beyond the 8 bytes RFC 792 guarantees; SCTP none: CRC32c has no
//! pseudo-header and the port does not change), and the ICMP / ICMPv6
//! checksum takes the difference of every changed byte. The outer source
//! becomes the frontend when it is the backend itself (the backend sent
//! the error); an error from a router on the way keeps its source — Linux
//! rewrites that one to the frontend too, weir keeps the hop's address
//! (the client matches an error by its quote, not by its sender).
//! IPv4: header checksum; ICMPv6: its checksum's pseudo-header.
//!
//! An error about a reply (quoting frontend → client after the reply's
//! reverse NAT) finds the flow's *forward* entry (client ↔ frontend,
//! [`layout::ct::FORWARD`], `forward.rs`) with the quote's source its
//! frontend end: the entry names the backend, and the flow's own entry
//! (backend ↔ client) is looked up; a hit is established and the error
//! goes on to the backend, rewritten ([`Toward::Backend`]). A quote of
//! the client's own packet to the frontend (not yet translated) that
//! finds the forward entry is not related (judged as any ICMP packet).
//!
//! The quote's reading and the error's reverse NAT are
//! [`crate::ebpf::service::icmp_error`], shared with the standalone
//! service program; this block finds the flow in `weir_ct`.

use super::*;
use crate::ebpf::service::icmp_error::{self as quote, Fam, Toward, FE, V4, V6};

impl Gen<'_> {
    /// The related-error check (see the module docs); falls through when
    /// the packet is not a related ICMP error.
    pub(super) fn related_icmp(&self, em: &mut Em) {
        em.a.set_origin(
            Origin::NONE,
            Some("conntrack: ICMP error quoting a known flow (related)"),
        );
        let not = em.label("not_related");
        let (v4, v6) = (em.label("related4"), em.label("related6"));
        em.push(Op::load(Size::U8, R1, R6, ctx::PROTO));
        em.jmp(JmpCond::Eq, R1, 1, v4);
        em.jmp(JmpCond::Eq, R1, 58, v6);
        em.push(Op::Ja { target: not });
        em.bind(v4);
        self.related_family(em, V4, not);
        em.bind(v6);
        self.related_family(em, V6, not);
        em.bind(not);
    }

    fn related_family(&self, em: &mut Em, f: Fam, not: Label) {
        em.asm(|a| {
            quote::error_type(a, f, not);
            quote::read_quote(a, f, not);
        });

        // The flow's entry, either direction.
        self.canonical_ct_key(em, CT_KEY_COPY);
        em.ct_call(CtCall::Lookup, CT_KEY_COPY);
        em.jmp(JmpCond::Eq, R0, 0, not);
        let pass = em.label("related_pass");
        let translates = self.has_services && translates(self.g);
        // A forward entry: with a translated frontend, maybe a translated
        // flow's reply; else not related (`forward.rs`).
        let reply = if translates {
            em.label("related_reply")
        } else {
            not
        };
        em.push(Op::load(Size::U32, R1, R0, layout::ct::SERVICE));
        em.jmp(JmpCond::Set, R1, layout::ct::FORWARD, reply);
        let mut nat = None;
        if self.has_services {
            let count = em.label("related_count");
            let translate = em.label("related_rev_nat");
            let n = em.label("related_nat");
            nat = Some(n);
            em.push(Op::load(Size::U64, R1, R0, layout::ct::TIME));
            em.jmp(JmpCond::Set, R1, layout::ct::TRANSLATED, translate);
            em.push(Op::Ja { target: count });
            em.bind(translate);
            // Quoting a packet its client sent: on its way to the client.
            em.push(Op::alu64(AluOp::And, R1, layout::ct::CLIENT_FIRST));
            self.src_first(em, R2);
            em.push(Op::jmp(JmpCond::Ne, R1, R2, count));
            entry_address_to_fe(em);
            em.a.set_origin(Origin(0), Some("conntrack: established connection"));
            em.count_imm(0);
            em.asm(|a| quote::set_toward(a, Toward::Client));
            // One rewrite for both directions (`related_reply` jumps here).
            em.bind(n);
            em.a.set_origin(
                Origin(0),
                Some("service: NAT of an ICMP error about a translated flow"),
            );
            em.asm(|a| quote::reverse_nat_error(a, f));
            em.push(Op::Ja { target: pass });
            em.bind(count);
        }
        em.a.set_origin(Origin(0), Some("conntrack: established connection"));
        em.count_imm(0);
        em.bind(pass);
        em.push(Op::mov64(R0, layout::TC_ACT_OK));
        em.push(Op::Exit);
        em.a.set_origin(
            Origin::NONE,
            Some("conntrack: ICMP error quoting a known flow (related)"),
        );
        if let (Some(nat), true) = (nat, translates) {
            em.bind(reply);
            self.related_reply(em, not, nat);
        }
    }

    /// An error about a translated flow's reply as the client got it
    /// (quoting frontend → client; from the client's host or a router on
    /// its way, to the frontend), its flow's forward entry in r0: the
    /// entry names the backend; with the flow's own entry (backend ↔
    /// client) in `weir_ct`, the error is established and goes to the
    /// backend, rewritten as Linux's `nf_nat_icmp_reply_translation` does
    /// for the original direction: the quote becomes the reply as the
    /// backend sent it, the error's destination the backend (the rewrite
    /// at `nat`). A quote from the entry's client (its packet to the
    /// frontend, before translation), or no flow entry: jumps to `not`.
    fn related_reply(&self, em: &mut Em, not: Label, nat: Label) {
        em.push(Op::load(Size::U64, R1, R0, layout::ct::TIME));
        em.push(Op::alu64(AluOp::And, R1, layout::ct::CLIENT_FIRST));
        self.src_first(em, R2);
        em.push(Op::jmp(JmpCond::Eq, R1, R2, not));
        // The backend, as `quote::reverse_nat_error` reads it at `FE`.
        entry_address_to_fe(em);
        // The flow's entry: the quoted key with the backend as source.
        for (to, from, size) in [
            (layout::ct::SRC, 0i16, Size::U64),
            (layout::ct::SRC + 8, 8, Size::U64),
            (layout::ct::SPORT, 16, Size::U16),
        ] {
            em.push(Op::load(size, R1, R10, FE + from));
            em.push(Op::store(size, R6, ctx::CT_KEY + to, R1));
        }
        self.canonical_ct_key(em, CT_KEY_COPY);
        em.ct_call(CtCall::Lookup, CT_KEY_COPY);
        em.jmp(JmpCond::Eq, R0, 0, not);
        em.a.set_origin(Origin(0), Some("conntrack: established connection"));
        em.count_imm(0);
        em.asm(|a| quote::set_toward(a, Toward::Backend));
        em.push(Op::Ja { target: nat });
        em.a.set_origin(
            Origin::NONE,
            Some("conntrack: ICMP error quoting a known flow (related)"),
        );
    }
}

/// Copies the conntrack entry in r0's recorded address and port (the
/// frontend of a flow's own entry, the backend of a forward entry) to the
/// `FE` stack slot, where `quote::reverse_nat_error` reads them.
fn entry_address_to_fe(em: &mut Em) {
    for (to, from, size) in [
        (0i16, layout::ct::FE_ADDR, Size::U64),
        (8, layout::ct::FE_ADDR + 8, Size::U64),
        (16, layout::ct::FE_PORT, Size::U16),
    ] {
        em.push(Op::load(size, R1, R0, from));
        em.push(Op::store(size, R10, FE + to, R1));
    }
}
