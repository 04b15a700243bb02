//! The IPv6 answers to a packet a service rejects (a frontend without
//! backends, docs/language.md §4 step 3), sent back out of the interface
//! it arrived on like the IPv4 ones (`reject.rs`): a TCP reset for a TCP
//! segment, an ICMPv6 destination unreachable, port unreachable (type 1
//! code 4, RFC 4443 §3.1) for a UDP datagram or SCTP packet (as
//! `reject.rs`, and ip6tables' `REJECT`). Neither answers a packet
//! from a multicast (RFC 4443 §2.4 e) or unspecified source; such a
//! packet is dropped (still counted as the reject).
//!
//! The ICMPv6 answer is built in the packet by `unreachable.rs` (the
//! quote: as much of the datagram as fits in 1,280 bytes, RFC 4443 §2.4
//! c), with this module's IPv6 header helpers.
//!
//! The reset answers from the transport header the parse found (after
//! any extension headers, `ctx::PARSE_OFF`) and drops them: Ethernet +
//! IPv6 (40, next header 6) + TCP (20) = 74 bytes, with the TCP fields of
//! the IPv4 reset (`Gen::rst_segment`).
//!
//! **Checksums.** The upper-layer checksum covers the IPv6 pseudo-header
//! (source, destination, upper-layer length as 32 bits, next header,
//! RFC 8200 §8.1). Its 16-bit words are the IPv6 header's own when the
//! header's first word is zero and its next-header / hop-limit word reads
//! `0x00NN`: so the header is written that way first, the checksum is
//! taken over header + message in one `bpf_csum_diff`, and then the real
//! version, next header and hop limit go in.

use super::emit::{Em, Gen};
use super::layout::ctx;
use super::reject::{add_syn_fin, load_frame, send_back};
use crate::ebpf::service::sctp::IPPROTO_SCTP;
use crate::ebpf::{AluOp, ByteOrder, JmpCond, Op, Operand, Reg, Size};

use Reg::*;

/// The answer's frame on the stack (B ≡ 2 mod 8: the IPv6 header is
/// 8-aligned, its addresses copied 64 bits at a time); the ICMPv6 port
/// unreachable's headers are built at the same place.
const B: i16 = super::unreachable::HEAD;
const IP: i16 = B + 14;
/// The TCP header of a reset.
const L4: i16 = B + 54;
const RESET_LEN: i32 = 14 + 40 + 20;

fn be(bits: u8, r: Reg) -> Op {
    Op::Endian {
        order: ByteOrder::Be,
        bits,
        dst: r,
    }
}

impl Gen<'_> {
    /// The reject of an IPv6 packet: UDP and SCTP an ICMPv6 port
    /// unreachable, TCP a reset, the rest dropped.
    pub(super) fn reject6(&self, em: &mut Em) {
        let drop = em.drop;
        let tcp = em.label("reject6_tcp");
        em.push(Op::load(Size::U8, R1, R6, ctx::RAW_PROTO));
        em.jmp(JmpCond::Eq, R1, 6, tcp);
        // Bound only when some frontend is SCTP (a bound label shows
        // in the listing).
        let unreachable = self
            .sctp_frontends()
            .then(|| em.label("reject6_unreachable"));
        if let Some(u) = unreachable {
            em.jmp(JmpCond::Eq, R1, IPPROTO_SCTP, u);
        }
        em.jmp(JmpCond::Ne, R1, 17, drop);
        if let Some(u) = unreachable {
            em.bind(u);
        }
        self.udp6_unreachable(em);
        em.bind(tcp);
        self.tcp6_reset(em);
    }

    /// Drops the packet unless the IPv6 source at `src` (on the stack)
    /// is unicast: not multicast (ff00::/8), not unspecified (::).
    pub(super) fn drop_unless_unicast6(em: &mut Em, src: i16) {
        let drop = em.drop;
        em.push(Op::load(Size::U8, R1, R10, src));
        em.jmp(JmpCond::Eq, R1, 0xff, drop);
        em.push(Op::load(Size::U64, R1, R10, src));
        em.push(Op::load(Size::U64, R2, R10, src + 8));
        em.push(Op::alu64(AluOp::Or, R1, R2));
        em.jmp(JmpCond::Eq, R1, 0, drop);
    }

    /// The answer's Ethernet header at `B` from the offending one at
    /// `orig`: back to the sender's MAC, from ours, type IPv6.
    pub(super) fn ether6_back(em: &mut Em, orig: i16) {
        if orig == B {
            // In place: swap.
            for i in 0..3i16 {
                em.push(Op::load(Size::U16, R1, R10, B + 2 * i));
                em.push(Op::load(Size::U16, R2, R10, B + 6 + 2 * i));
                em.push(Op::store(Size::U16, R10, B + 2 * i, R2));
                em.push(Op::store(Size::U16, R10, B + 6 + 2 * i, R1));
            }
        } else {
            for i in 0..3i16 {
                em.push(Op::load(Size::U16, R1, R10, orig + 6 + 2 * i));
                em.push(Op::store(Size::U16, R10, B + 2 * i, R1));
                em.push(Op::load(Size::U16, R1, R10, orig + 2 * i));
                em.push(Op::store(Size::U16, R10, B + 6 + 2 * i, R1));
            }
        }
        em.push(Op::mov64(R1, 0x86dd));
        em.push(be(16, R1));
        em.push(Op::store(Size::U16, R10, B + 12, R1));
    }

    /// The answer's IPv6 header at `IP`, written as the pseudo-header's
    /// words (see the module docs): first word 0, payload length `len`,
    /// next header 0, hop limit = `next` (`finish_ip6` sets the real
    /// fields after the checksum). Source = the offending destination at
    /// `orig_ip + 24`, destination = its source at `orig_ip + 8`.
    pub(super) fn pseudo_ip6(em: &mut Em, orig_ip: i16, len: impl Into<Operand>, next: i32) {
        em.push(Op::store(Size::U32, R10, IP, 0));
        em.push(Op::mov64(R1, len));
        em.push(be(16, R1));
        em.push(Op::store(Size::U16, R10, IP + 4, R1));
        em.push(Op::store(Size::U8, R10, IP + 6, 0));
        em.push(Op::store(Size::U8, R10, IP + 7, next));
        // Both addresses read before either is written (in place for
        // the reset).
        em.push(Op::load(Size::U64, R1, R10, orig_ip + 8));
        em.push(Op::load(Size::U64, R2, R10, orig_ip + 16));
        em.push(Op::load(Size::U64, R3, R10, orig_ip + 24));
        em.push(Op::load(Size::U64, R4, R10, orig_ip + 32));
        em.push(Op::store(Size::U64, R10, IP + 8, R3));
        em.push(Op::store(Size::U64, R10, IP + 16, R4));
        em.push(Op::store(Size::U64, R10, IP + 24, R1));
        em.push(Op::store(Size::U64, R10, IP + 32, R2));
    }

    /// The real version (6, traffic class and flow label 0), next header
    /// and hop limit, once the checksum is taken.
    pub(super) fn finish_ip6(em: &mut Em, next: i32, hops: i32) {
        em.push(Op::store(Size::U8, R10, IP, 0x60));
        em.push(Op::store(Size::U8, R10, IP + 6, next));
        em.push(Op::store(Size::U8, R10, IP + 7, hops));
    }

    /// A reset to the sender of the IPv6 TCP segment in the skb (see the
    /// module docs).
    fn tcp6_reset(&self, em: &mut Em) {
        let drop = em.drop;
        load_frame(em, None, B, 54);
        // The transport header: where the extension-header walk left it
        // (0: no walk, right after the IPv6 header).
        let at = em.label("rst6_at");
        em.push(Op::load(Size::U16, R9, R6, ctx::PARSE_OFF));
        em.jmp(JmpCond::Ne, R9, 0, at);
        em.push(Op::mov64(R9, 54));
        em.bind(at);
        load_frame(em, Some(R9), L4, 20);
        Self::drop_unless_unicast6(em, IP + 8);
        // Never answer a reset. r8 := the offending segment's flags.
        em.push(Op::load(Size::U8, R1, R10, L4 + 13));
        em.jmp(JmpCond::Set, R1, 0x04, drop);
        em.push(Op::mov64(R8, R1));
        // Segment length: payload length − extension headers (r9 − 54) −
        // data offset·4, + SYN + FIN.
        em.push(Op::load(Size::U16, R2, R10, IP + 4));
        em.push(be(16, R2));
        em.push(Op::alu64(AluOp::Sub, R2, R9));
        em.push(Op::alu64(AluOp::Add, R2, 54));
        em.push(Op::load(Size::U8, R3, R10, L4 + 12));
        em.push(Op::alu64(AluOp::Rsh, R3, 4));
        em.push(Op::alu64(AluOp::Lsh, R3, 2));
        em.push(Op::alu64(AluOp::Sub, R2, R3));
        add_syn_fin(em);
        em.push(Op::mov64(R9, R2));
        Self::ether6_back(em, B);
        Self::pseudo_ip6(em, IP, 20, 6);
        Self::rst_segment(em, L4);
        self.csum_into(em, IP, 40 + 20, L4 + 16);
        Self::finish_ip6(em, 6, 64);
        send_back(em, B, RESET_LEN);
    }
}
