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
//! reverse NAT) is not related: the entry is keyed client ↔ backend.

use super::*;
use crate::ebpf::service::emit::{BPF_F_IPV6, BPF_F_PSEUDO_HDR};
use crate::ebpf::Operand;
use crate::interp::related::{ICMP4_ERRORS, ICMP6_ERRORS_BELOW};

/// Stack: the quote as read ([`OLD`]) and as rewritten ([`NEW`]): the
/// quoted IP header (IPv4: its first 20 bytes; IPv6: 40) and the 8 bytes
/// after it, 48 bytes at most each; the entry's frontend (address 16,
/// port u16 host order); a scratch word. In the service stage's area
/// (free in the prologue), clear of `REV_FRONTEND`.
const OLD: i16 = -232;
const NEW: i16 = -280;
const FE: i16 = -304;
const SCRATCH: i16 = -312;

/// IPv6 next-header values the quote's parse does not walk (the
/// extension headers of `codegen::parse`).
const EXTENSIONS: [i32; 5] = [0, 43, 44, 60, 51];

/// One family's offsets.
#[derive(Clone, Copy)]
struct Fam {
    v6: bool,
    /// Quoted header bytes read (and the offset of the 8 after it in the
    /// stack copies).
    hlen: i16,
    /// Source and destination address in an IP header, and their length.
    src: i16,
    dst: i16,
    alen: i16,
    /// The protocol / next-header byte in the IP header.
    proto: i16,
}

const V4: Fam = Fam {
    v6: false,
    hlen: 20,
    src: 12,
    dst: 16,
    alen: 4,
    proto: 9,
};
const V6: Fam = Fam {
    v6: true,
    hlen: 40,
    src: 8,
    dst: 24,
    alen: 16,
    proto: 6,
};

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
        let is_error = em.label("icmp_error");
        em.push(Op::load(Size::U8, R1, R6, ctx::ICMP_TYPE));
        if f.v6 {
            em.jmp(JmpCond::Ge, R1, i32::from(ICMP6_ERRORS_BELOW), not);
        } else {
            for t in ICMP4_ERRORS {
                em.jmp(JmpCond::Eq, R1, i32::from(t), is_error);
            }
            em.push(Op::Ja { target: not });
        }
        em.bind(is_error);
        Self::icmp_offset_to_r8(em, f);
        // The quoted IP header.
        load_bytes(em, R8, 8, OLD, f.hlen);
        em.jmp(JmpCond::Ne, R0, 0, not);
        em.push(Op::load(Size::U8, R1, R10, OLD));
        em.push(Op::mov64(R2, R1));
        em.push(Op::alu64(AluOp::Rsh, R2, 4));
        em.jmp(JmpCond::Ne, R2, if f.v6 { 6 } else { 4 }, not);
        // r9: the frame offset of what follows the quoted header.
        em.push(Op::mov64(R9, R8));
        if f.v6 {
            em.push(Op::alu64(AluOp::Add, R9, 8 + 40));
            em.push(Op::load(Size::U8, R1, R10, OLD + f.proto));
            for h in EXTENSIONS {
                em.jmp(JmpCond::Eq, R1, h, not);
            }
        } else {
            em.push(Op::alu64(AluOp::And, R1, 15));
            em.jmp(JmpCond::Lt, R1, 5, not);
            em.push(Op::alu64(AluOp::Lsh, R1, 2));
            em.push(Op::alu64(AluOp::Add, R9, R1));
            em.push(Op::alu64(AluOp::Add, R9, 8));
            // A non-first fragment quotes no transport header.
            em.push(Op::load(Size::U16, R1, R10, OLD + 6));
            em.push(be16(R1));
            em.push(Op::alu64(AluOp::And, R1, 0x1fff));
            em.jmp(JmpCond::Ne, R1, 0, not);
        }
        load_bytes(em, R9, 0, OLD + f.hlen, 8);
        em.jmp(JmpCond::Ne, R0, 0, not);
        self.quoted_key(em, f, not);

        // The flow's entry, either direction.
        self.canonical_ct_key(em, CT_KEY_COPY);
        em.lookup(map::CT, CT_KEY_COPY);
        em.jmp(JmpCond::Eq, R0, 0, not);
        let pass = em.label("related_pass");
        if self.has_services {
            let count = em.label("related_count");
            let translate = em.label("related_rev_nat");
            em.push(Op::load(Size::U64, R1, R0, layout::ct::TIME));
            em.jmp(JmpCond::Set, R1, layout::ct::TRANSLATED, translate);
            em.push(Op::Ja { target: count });
            em.bind(translate);
            // Quoting a packet its client sent: on its way to the client.
            em.push(Op::alu64(AluOp::And, R1, layout::ct::CLIENT_FIRST));
            self.src_first(em, R2);
            em.push(Op::jmp(JmpCond::Ne, R1, R2, count));
            for (to, from, size) in [
                (0i16, layout::ct::FE_ADDR, Size::U64),
                (8, layout::ct::FE_ADDR + 8, Size::U64),
                (16, layout::ct::FE_PORT, Size::U16),
            ] {
                em.push(Op::load(size, R1, R0, from));
                em.push(Op::store(size, R10, FE + to, R1));
            }
            em.a.set_origin(Origin(0), Some("conntrack: established connection"));
            em.count_imm(0);
            em.a.set_origin(
                Origin(0),
                Some("service: reverse NAT of an ICMP error quoting a translated flow"),
            );
            self.reverse_nat_error(em, f);
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
    }

    /// r8 = the frame offset of the outer ICMP header (IPv4: 14 + IHL ×
    /// 4; IPv6: past the parse's extension headers).
    fn icmp_offset_to_r8(em: &mut Em, f: Fam) {
        if f.v6 {
            let have = em.label("icmp6_off");
            em.push(Op::load(Size::U16, R8, R6, ctx::PARSE_OFF));
            em.jmp(JmpCond::Ne, R8, 0, have);
            em.push(Op::mov64(R8, 54));
            em.bind(have);
        } else {
            em.push(Op::store(Size::U64, R10, SCRATCH, 0));
            em.push(Op::mov64(R8, 14));
            load_bytes(em, R8, 0, SCRATCH, 1);
            em.push(Op::load(Size::U8, R8, R10, SCRATCH));
            em.push(Op::alu64(AluOp::And, R8, 15));
            em.push(Op::alu64(AluOp::Lsh, R8, 2));
            em.push(Op::alu64(AluOp::Add, R8, 14));
        }
    }

    /// `ctx::CT_KEY` = the quoted packet's conntrack key (source first;
    /// ports for TCP / UDP / SCTP, else 0); jumps to `not` unless the
    /// error is addressed to the quoted packet's source.
    fn quoted_key(&self, em: &mut Em, f: Fam, not: Label) {
        use layout::ct;
        let k = ctx::CT_KEY;
        for i in 0..5i16 {
            em.push(Op::store(Size::U64, R6, k + 8 * i, 0));
        }
        for i in 0..f.alen / 4 {
            em.push(Op::load(Size::U32, R1, R10, OLD + f.src + 4 * i));
            em.push(Op::store(Size::U32, R6, k + ct::SRC + 4 * i, R1));
            em.push(Op::load(Size::U32, R1, R10, OLD + f.dst + 4 * i));
            em.push(Op::store(Size::U32, R6, k + ct::DST + 4 * i, R1));
        }
        em.push(Op::load(Size::U8, R1, R10, OLD + f.proto));
        em.push(Op::store(Size::U8, R6, k + ct::PROTO, R1));
        em.push(Op::store(
            Size::U8,
            R6,
            k + ct::FAMILY,
            if f.v6 { 6 } else { 4 },
        ));
        let (ports, no_ports) = (em.label("quote_ports"), em.label("quote_no_ports"));
        for p in [6, 17, 132] {
            em.jmp(JmpCond::Eq, R1, p, ports);
        }
        em.push(Op::Ja { target: no_ports });
        em.bind(ports);
        for (to, from) in [(ct::SPORT, 0i16), (ct::DPORT, 2)] {
            em.push(Op::load(Size::U16, R1, R10, OLD + f.hlen + from));
            em.push(be16(R1));
            em.push(Op::store(Size::U16, R6, k + to, R1));
        }
        em.bind(no_ports);
        for w in [0i16, 8] {
            em.push(Op::load(Size::U64, R1, R6, ctx::DST + w));
            em.push(Op::load(Size::U64, R2, R6, k + ct::SRC + w));
            em.push(Op::jmp(JmpCond::Ne, R1, R2, not));
        }
    }

    /// The translated flow's error back to its client (module docs): the
    /// frontend at `fp + FE`, the outer ICMP header at r8, the bytes
    /// after the quoted header at r9.
    fn reverse_nat_error(&self, em: &mut Em, f: Fam) {
        let n = f.hlen + 8;
        for off in (0..n).step_by(4) {
            em.push(Op::load(Size::U32, R1, R10, OLD + off));
            em.push(Op::store(Size::U32, R10, NEW + off, R1));
        }
        // The quoted destination becomes the frontend.
        for i in 0..f.alen / 4 {
            em.push(Op::load(Size::U32, R1, R10, FE + 4 * i));
            em.push(Op::store(Size::U32, R10, NEW + f.dst + 4 * i, R1));
        }
        em.push(Op::load(Size::U16, R1, R10, FE + 16));
        em.push(be16(R1));
        em.push(Op::store(Size::U16, R10, NEW + f.hlen + 2, R1));
        if !f.v6 {
            // The quoted IPv4 header's checksum.
            checksum_update(em, NEW + 10, OLD + f.dst, NEW + f.dst, 4);
            em.push(Op::store(Size::U16, R10, NEW + 10, R0));
        }
        // The quoted UDP checksum (pseudo-header destination and the
        // port), unless zero (none).
        let (not_udp, l4_done) = (em.label("quote_not_udp"), em.label("quote_l4_done"));
        let span = f.alen + 4;
        em.push(Op::load(Size::U8, R1, R10, OLD + f.proto));
        em.jmp(JmpCond::Ne, R1, 17, not_udp);
        em.push(Op::load(Size::U16, R1, R10, OLD + f.hlen + 6));
        em.jmp(JmpCond::Eq, R1, 0, l4_done);
        checksum_update(em, OLD + f.hlen + 6, OLD + f.dst, NEW + f.dst, span);
        let nonzero = em.label("udp_csum_nonzero");
        em.jmp(JmpCond::Ne, R0, 0, nonzero);
        em.push(Op::mov64(R0, 0xffff));
        em.bind(nonzero);
        em.push(Op::store(Size::U16, R10, NEW + f.hlen + 6, R0));
        em.bind(not_udp);
        em.bind(l4_done);

        // The ICMP checksum: the difference of the whole quote.
        csum_diff(em, (R10, OLD), (R10, NEW), n, None);
        em.push(Op::mov64(R3, 0));
        em.push(Op::mov64(R4, R0));
        l4_csum_replace(em, 0, 0);
        store_bytes(em, R8, 8, NEW, f.hlen);
        store_bytes(em, R9, 0, NEW + f.hlen, 8);

        // TCP: its checksum only when the frame holds it (beyond the 8
        // bytes), as Linux's `tcp_manip_pkt`.
        let not_tcp = em.label("quote_not_tcp");
        em.push(Op::load(Size::U8, R1, R10, OLD + f.proto));
        em.jmp(JmpCond::Ne, R1, 6, not_tcp);
        em.push(Op::store(Size::U64, R10, SCRATCH, 0));
        load_bytes(em, R9, 16, SCRATCH, 4);
        em.jmp(JmpCond::Ne, R0, 0, not_tcp);
        checksum_update(em, SCRATCH, OLD + f.dst, NEW + f.dst, span);
        em.push(Op::store(Size::U16, R10, SCRATCH + 2, R0));
        em.push(Op::load(Size::U16, R3, R10, SCRATCH));
        em.push(Op::load(Size::U16, R4, R10, SCRATCH + 2));
        l4_csum_replace(em, 2, 0);
        store_bytes(em, R9, 16, SCRATCH + 2, 2);
        em.bind(not_tcp);

        // The outer source, when the backend itself sent the error.
        let keep_src = em.label("error_src_kept");
        for i in 0..f.alen / 4 {
            em.push(Op::load(Size::U32, R1, R6, ctx::SRC + 4 * i));
            em.push(Op::load(Size::U32, R2, R10, OLD + f.dst + 4 * i));
            em.push(Op::jmp(JmpCond::Ne, R1, R2, keep_src));
        }
        if f.v6 {
            // ICMPv6's checksum covers the pseudo-header's source.
            csum_diff(em, (R6, ctx::SRC), (R10, FE), 16, None);
            em.push(Op::store(Size::U64, R10, SCRATCH, R0));
            let replaced = em.label("error_src_csum6");
            for flags in [BPF_F_PSEUDO_HDR | BPF_F_IPV6, BPF_F_PSEUDO_HDR] {
                em.push(Op::mov64(R3, 0));
                em.push(Op::load(Size::U64, R4, R10, SCRATCH));
                l4_csum_replace(em, 0, flags);
                // A kernel before 6.16 refuses `BPF_F_IPV6`.
                em.jmp(JmpCond::Eq, R0, 0, replaced);
            }
            em.bind(replaced);
            store_bytes_at(em, 14 + 8, FE, 16);
        } else {
            em.push(Op::mov64(R1, R7));
            em.push(Op::mov64(R2, 14 + 10));
            em.push(Op::load(Size::U32, R3, R6, ctx::SRC));
            em.push(Op::load(Size::U32, R4, R10, FE));
            em.push(Op::mov64(R5, 4));
            em.push(Op::Call {
                helper: helper::L3_CSUM_REPLACE,
            });
            store_bytes_at(em, 14 + 12, FE, 4);
        }
        em.bind(keep_src);
    }
}

fn be16(r: Reg) -> Op {
    Op::Endian {
        order: ByteOrder::Be,
        bits: 16,
        dst: r,
    }
}

/// `r0 = bpf_skb_load_bytes(skb, base + off, fp + to, len)`.
fn load_bytes(em: &mut Em, base: Reg, off: i32, to: i16, len: i16) {
    em.push(Op::mov64(R2, base));
    em.push(Op::alu64(AluOp::Add, R2, off));
    em.push(Op::mov64(R1, R7));
    em.push(Op::mov64(R3, R10));
    em.push(Op::alu64(AluOp::Add, R3, i32::from(to)));
    em.push(Op::mov64(R4, i32::from(len)));
    em.push(Op::Call {
        helper: helper::SKB_LOAD_BYTES,
    });
}

/// `bpf_skb_store_bytes(skb, base + off, fp + from, len, 0)`.
fn store_bytes(em: &mut Em, base: Reg, off: i32, from: i16, len: i16) {
    em.push(Op::mov64(R2, base));
    em.push(Op::alu64(AluOp::Add, R2, off));
    store_from_r2(em, from, len);
}

/// `bpf_skb_store_bytes(skb, off, fp + from, len, 0)`.
fn store_bytes_at(em: &mut Em, off: i32, from: i16, len: i16) {
    em.push(Op::mov64(R2, off));
    store_from_r2(em, from, len);
}

fn store_from_r2(em: &mut Em, from: i16, len: i16) {
    em.push(Op::mov64(R1, R7));
    em.push(Op::mov64(R3, R10));
    em.push(Op::alu64(AluOp::Add, R3, i32::from(from)));
    em.push(Op::mov64(R4, i32::from(len)));
    em.push(Op::mov64(R5, 0));
    em.push(Op::Call {
        helper: helper::SKB_STORE_BYTES,
    });
}

/// `r0 = bpf_csum_diff(from, len, to, len, seed)` (`seed`: a register
/// other than r1–r4, or 0).
fn csum_diff(em: &mut Em, from: (Reg, i16), to: (Reg, i16), len: i16, seed: Option<Reg>) {
    em.push(Op::mov64(R5, seed.map_or(Operand::Imm(0), Operand::Reg)));
    em.push(Op::mov64(R1, from.0));
    em.push(Op::alu64(AluOp::Add, R1, i32::from(from.1)));
    em.push(Op::mov64(R2, i32::from(len)));
    em.push(Op::mov64(R3, to.0));
    em.push(Op::alu64(AluOp::Add, R3, i32::from(to.1)));
    em.push(Op::mov64(R4, i32::from(len)));
    em.push(Op::Call {
        helper: helper::CSUM_DIFF,
    });
}

/// `bpf_l4_csum_replace(skb, r8 + 2, r3, r4, size | flags)`: the outer
/// ICMP / ICMPv6 checksum (size 0: r4 is a difference).
fn l4_csum_replace(em: &mut Em, size: i32, flags: i32) {
    em.push(Op::mov64(R1, R7));
    em.push(Op::mov64(R2, R8));
    em.push(Op::alu64(AluOp::Add, R2, 2));
    em.push(Op::mov64(R5, size | flags));
    em.push(Op::Call {
        helper: helper::L4_CSUM_REPLACE,
    });
}

/// r0 = the 16-bit checksum at `fp + check` (native order, as stored)
/// updated for the `len` bytes at `fp + old` becoming those at
/// `fp + new` (RFC 1624: ~(~C + ~m + m')), in the same order.
fn checksum_update(em: &mut Em, check: i16, old: i16, new: i16, len: i16) {
    em.push(Op::load(Size::U16, R5, R10, check));
    em.push(Op::alu64(AluOp::Xor, R5, 0xffff));
    csum_diff(em, (R10, old), (R10, new), len, Some(R5));
    // The 32-bit sum folded to 16 bits, then complemented.
    em.push(Op::mov32(R0, R0));
    super::reset::fold_complement(em);
}
