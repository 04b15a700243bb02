//! The answer to a packet a service rejects (a frontend without backends,
//! docs/language.md §4 step 3), sent back out of the interface it arrived
//! on: a TCP reset for TCP (`emit::tcp_reset`), an ICMP destination
//! unreachable, port unreachable (type 3 code 3, RFC 792) for an IPv4 UDP
//! datagram or SCTP packet (what iptables' `REJECT` sends for any
//! protocol but TCP; SCTP has no ABORT here: an ABORT would need the
//! peer's verification tag and a CRC32c over the whole chunk, and the
//! port unreachable is what the sender's SCTP stack already handles).
//! Everything else is dropped.
//!
//! The ICMP and ICMPv6 port unreachables are built in the packet by
//! `unreachable.rs` (quoting as much of the datagram as fits in 576 /
//! 1,280 bytes, as Linux does). IPv6 packets are answered by
//! `reject6.rs` (a reset, or ICMPv6 type 1 code 4, RFC 4443).

use super::emit::{Em, Gen};
use super::layout::{ctx, skb};
use crate::ebpf::service::emit::store_bytes;
use crate::ebpf::service::sctp::IPPROTO_SCTP;
use crate::ebpf::{helper, AluOp, ByteOrder, JmpCond, Op, Reg, Size};

use Reg::*;

impl Gen<'_> {
    /// The reject of a service without backends: UDP and SCTP get an
    /// ICMP (IPv4) or ICMPv6 (IPv6, `reject6.rs`) port unreachable, TCP a
    /// reset, the rest is dropped.
    pub(super) fn reject(&self, em: &mut Em) {
        let tcp = em.label("reject_tcp");
        let v6 = em.label("reject6");
        em.push(Op::load(Size::U8, R1, R6, ctx::FAMILY));
        em.jmp(JmpCond::Eq, R1, 6, v6);
        em.push(Op::load(Size::U8, R1, R6, ctx::RAW_PROTO));
        // Bound only when some frontend is SCTP (a bound label shows
        // in the listing).
        let unreachable = self
            .sctp_frontends()
            .then(|| em.label("reject_unreachable"));
        if let Some(u) = unreachable {
            em.jmp(JmpCond::Eq, R1, IPPROTO_SCTP, u);
        }
        em.jmp(JmpCond::Ne, R1, 17, tcp);
        if let Some(u) = unreachable {
            em.bind(u);
        }
        self.udp_unreachable(em);
        em.bind(tcp);
        self.tcp_reset(em);
        em.bind(v6);
        self.reject6(em);
    }

    /// Whether some service frontend is SCTP: only then is a rejected
    /// packet's protocol compared with SCTP's.
    pub(super) fn sctp_frontends(&self) -> bool {
        (self.g.services.frontends.iter()).any(|f| f.frontend.proto == crate::model::Proto::Sctp)
    }

    /// The TCP header at `tcp` (on the stack) of the offending segment
    /// becomes a reset's (both families): ports swapped; with no `ACK` in
    /// the offending segment, seq 0 and `ACK` = its seq + length, else
    /// seq = its ack; data offset 5; window, checksum, urgent pointer 0.
    /// Takes the offending flags in r8 and the segment length (with SYN
    /// and FIN) in r9.
    pub(super) fn rst_segment(em: &mut Em, tcp: i16) {
        // TCP: ports swapped; seq / ack; data offset 5; RST(|ACK).
        em.push(Op::load(Size::U16, R1, R10, tcp));
        em.push(Op::load(Size::U16, R2, R10, tcp + 2));
        em.push(Op::store(Size::U16, R10, tcp, R2));
        em.push(Op::store(Size::U16, R10, tcp + 2, R1));
        let had_ack = em.label("rst_had_ack");
        let flags_done = em.label("rst_flags");
        em.jmp(JmpCond::Set, R8, 0x10, had_ack);
        // No ACK: seq 0, ack = seq + length, RST|ACK.
        em.push(Op::load(Size::U32, R1, R10, tcp + 4));
        em.push(Op::Endian {
            order: ByteOrder::Be,
            bits: 32,
            dst: R1,
        });
        em.push(Op::alu64(AluOp::Add, R1, R9));
        em.push(Op::Endian {
            order: ByteOrder::Be,
            bits: 32,
            dst: R1,
        });
        em.push(Op::store(Size::U32, R10, tcp + 8, R1));
        em.push(Op::store(Size::U32, R10, tcp + 4, 0));
        em.push(Op::store(Size::U8, R10, tcp + 13, 0x14));
        em.push(Op::Ja { target: flags_done });
        // ACK: seq = its ack, RST only.
        em.bind(had_ack);
        em.push(Op::load(Size::U32, R1, R10, tcp + 8));
        em.push(Op::store(Size::U32, R10, tcp + 4, R1));
        em.push(Op::store(Size::U32, R10, tcp + 8, 0));
        em.push(Op::store(Size::U8, R10, tcp + 13, 0x04));
        em.bind(flags_done);
        em.push(Op::store(Size::U8, R10, tcp + 12, 0x50));
        for off in [14, 16, 18] {
            // window, checksum, urgent pointer
            em.push(Op::store(Size::U16, R10, tcp + off, 0));
        }
    }
}

/// Cuts (or grows) the packet to the answer of `len` bytes built on the
/// stack at `fp + at`, writes it and sends it back out of the interface
/// it came in on (`TC_ACT_REDIRECT`); drops when a helper fails. The one
/// ending of every reject answer: the TCP resets of both families, the
/// ICMP and ICMPv6 port unreachables.
/// `bpf_skb_load_bytes(skb, off, fp + to, len)`, dropping on failure
/// (`off` a register, or `None` for the frame's start).
pub(super) fn load_frame(em: &mut Em, off: Option<Reg>, to: i16, len: i32) {
    let drop = em.drop;
    em.push(Op::mov64(R1, R7));
    match off {
        Some(r) => em.push(Op::mov64(R2, r)),
        None => em.push(Op::mov64(R2, 0)),
    }
    em.push(Op::mov64(R3, R10));
    em.push(Op::alu64(AluOp::Add, R3, i32::from(to)));
    em.push(Op::mov64(R4, len));
    em.push(Op::Call {
        helper: helper::SKB_LOAD_BYTES,
    });
    em.jmp(JmpCond::Ne, R0, 0, drop);
}

/// A TCP segment's sequence space: `r2 += FIN + SYN` of the flags in
/// `r1` (RFC 9293 §3.4), for the `ACK` of a reset (IPv4 and IPv6).
pub(super) fn add_syn_fin(em: &mut Em) {
    em.push(Op::mov64(R3, R1));
    em.push(Op::alu64(AluOp::And, R3, 1)); // FIN
    em.push(Op::alu64(AluOp::Add, R2, R3));
    em.push(Op::mov64(R3, R1));
    em.push(Op::alu64(AluOp::Rsh, R3, 1));
    em.push(Op::alu64(AluOp::And, R3, 1)); // SYN
    em.push(Op::alu64(AluOp::Add, R2, R3));
}

pub(super) fn send_back(em: &mut Em, at: i16, len: i32) {
    let drop = em.drop;
    em.push(Op::mov64(R1, R7));
    em.push(Op::mov64(R2, len));
    em.push(Op::mov64(R3, 0));
    em.push(Op::Call {
        helper: helper::SKB_CHANGE_TAIL,
    });
    em.jmp(JmpCond::Ne, R0, 0, drop);
    store_and_send(em, at, len);
}

/// Writes the `len` bytes at `fp + at` over the frame's start and sends
/// the answer back out of the interface it came in on.
pub(super) fn store_and_send(em: &mut Em, at: i16, len: i32) {
    let drop = em.drop;
    store_bytes(em.a, 0, at, len);
    em.jmp(JmpCond::Ne, R0, 0, drop);
    em.push(Op::load(Size::U32, R1, R7, skb::IFINDEX));
    em.push(Op::mov64(R2, 0));
    em.push(Op::Call {
        helper: helper::REDIRECT,
    });
    em.push(Op::Exit);
}
