//! The TCP reset a frontend without backends answers with (IPv4), and
//! the checksum helper it and the ICMP answers share.

use super::*;
use crate::ebpf::service::icmp_error::fold_complement;

impl Gen<'_> {
    /// Answers the IPv4 TCP packet in the context (a frontend without
    /// backends) with a reset to its sender, redirected out of the
    /// interface it came in on; anything else (UDP, IP options, a reset)
    /// is dropped. The packet becomes the reset: MACs, addresses and ports
    /// swapped, payload and options cut, `RST` (with `ACK` = seq + length
    /// when the offending segment had no ACK, else seq = its ack), fresh
    /// IPv4 and TCP checksums.
    pub(in crate::ebpf::codegen) fn tcp_reset(&self, em: &mut Em) {
        let drop = em.drop;
        // Frame copy: Ethernet (14) + IPv4 (20) + TCP (20) = 54 bytes at B
        // (B ≡ 2 mod 4, so the IP and TCP headers are 4-aligned); the
        // pseudo-header (12) and a TCP header copy at P.
        const B: i16 = -250;
        const IP: i16 = B + 14;
        const TCP: i16 = B + 34;
        const P: i16 = -288; // pseudo (12) + TCP (20), 8-aligned
        em.push(Op::load(Size::U8, R1, R6, ctx::RAW_PROTO));
        em.jmp(JmpCond::Ne, R1, 6, drop);
        super::super::reject::load_frame(em, None, B, 54);
        // IHL 5 only; never answer a reset.
        em.push(Op::load(Size::U8, R1, R10, IP));
        em.jmp(JmpCond::Ne, R1, 0x45, drop);
        em.push(Op::load(Size::U8, R1, R10, TCP + 13));
        em.jmp(JmpCond::Set, R1, 0x04, drop);
        // r8 := flags of the offending segment (r8 / r9 are reloaded by
        // nothing after this: the packet leaves here).
        em.push(Op::mov64(R8, R1));
        // Segment length: IP total − 20 − data offset·4, + SYN + FIN.
        em.push(Op::load(Size::U16, R2, R10, IP + 2));
        em.push(Op::be16(R2));
        em.push(Op::alu64(AluOp::Sub, R2, 20));
        em.push(Op::load(Size::U8, R3, R10, TCP + 12));
        em.push(Op::alu64(AluOp::Rsh, R3, 4));
        em.push(Op::alu64(AluOp::Lsh, R3, 2));
        em.push(Op::alu64(AluOp::Sub, R2, R3));
        super::super::reject::add_syn_fin(em);
        em.push(Op::mov64(R9, R2));
        // Ethernet: swap the MACs (3 × 16 bits each).
        for i in 0..3i16 {
            em.push(Op::load(Size::U16, R1, R10, B + 2 * i));
            em.push(Op::load(Size::U16, R2, R10, B + 6 + 2 * i));
            em.push(Op::store(Size::U16, R10, B + 2 * i, R2));
            em.push(Op::store(Size::U16, R10, B + 6 + 2 * i, R1));
        }
        // IPv4: total length 40, id 0, DF, TTL 64, addresses swapped.
        em.push(Op::store(Size::U8, R10, IP + 1, 0));
        em.push(Op::mov64(R1, 40));
        em.push(Op::be16(R1));
        em.push(Op::store(Size::U16, R10, IP + 2, R1));
        em.push(Op::store(Size::U16, R10, IP + 4, 0));
        em.push(Op::mov64(R1, 0x4000));
        em.push(Op::be16(R1));
        em.push(Op::store(Size::U16, R10, IP + 6, R1));
        em.push(Op::store(Size::U8, R10, IP + 8, 64));
        em.push(Op::store(Size::U16, R10, IP + 10, 0));
        em.push(Op::load(Size::U32, R1, R10, IP + 12));
        em.push(Op::load(Size::U32, R2, R10, IP + 16));
        em.push(Op::store(Size::U32, R10, IP + 12, R2));
        em.push(Op::store(Size::U32, R10, IP + 16, R1));
        Self::rst_segment(em, TCP);
        // IPv4 header checksum.
        self.csum_into(em, IP, 20, IP + 10);
        // TCP checksum over the pseudo-header and the header.
        em.push(Op::load(Size::U32, R1, R10, IP + 12));
        em.push(Op::store(Size::U32, R10, P, R1));
        em.push(Op::load(Size::U32, R1, R10, IP + 16));
        em.push(Op::store(Size::U32, R10, P + 4, R1));
        em.push(Op::mov64(R1, 0x0006_0014u32 as i32)); // 0, proto 6, length 20
        em.push(Op::Endian {
            order: ByteOrder::Be,
            bits: 32,
            dst: R1,
        });
        em.push(Op::store(Size::U32, R10, P + 8, R1));
        for i in 0..5i16 {
            em.push(Op::load(Size::U32, R1, R10, TCP + 4 * i));
            em.push(Op::store(Size::U32, R10, P + 12 + 4 * i, R1));
        }
        self.csum_into(em, P, 32, TCP + 16);
        // Cut to 54 bytes, write it, send it back out.
        send_back(em, B, 54);
    }

    /// `*(u16 *)(fp + out) = ~fold(csum(fp + from, len))` (len a multiple
    /// of 4; the checksum field inside must be zero).
    pub(in crate::ebpf::codegen) fn csum_into(&self, em: &mut Em, from: i16, len: i32, out: i16) {
        csum_of_stack(em, from, len);
        fold_complement(em.a);
        em.push(Op::store(Size::U16, R10, out, R0));
    }
}

/// `r0 = bpf_csum_diff(NULL, 0, fp + from, len, 0)`: the unfolded
/// 32-bit sum of `len` stack bytes (a multiple of 4) at `fp + from`.
pub(in crate::ebpf::codegen) fn csum_of_stack(em: &mut Em, from: i16, len: i32) {
    em.push(Op::mov64(R1, 0));
    em.push(Op::mov64(R2, 0));
    em.push(Op::mov64(R3, R10));
    em.push(Op::alu64(AluOp::Add, R3, i32::from(from)));
    em.push(Op::mov64(R4, len));
    em.push(Op::mov64(R5, 0));
    em.push(Op::Call {
        helper: helper::CSUM_DIFF,
    });
}
