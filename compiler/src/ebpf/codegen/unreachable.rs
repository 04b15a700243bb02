//! The ICMP (IPv4, RFC 792) and ICMPv6 (RFC 4443 §3.1) port unreachable
//! a service sends for a UDP datagram or SCTP packet it rejects (a
//! frontend without backends, docs/language.md §4 step 3; `reject.rs`
//! picks the answer), **built in the packet itself**.
//!
//! **How much is quoted.** As much of the offending IP packet as fits
//! without the error exceeding 576 bytes (IPv4, RFC 1812 §4.3.2.3: 576 −
//! 20 − 8 = 548 bytes of quote) or the minimum IPv6 MTU (RFC 4443 §2.4 c:
//! 1,280 − 40 − 8 = 1,232 bytes) — what Linux's `icmp_send` and
//! `icmp6_send` quote. The quote is the packet's own bytes from its IP
//! header on, up to its IP length (Ethernet padding is never quoted), IP
//! options and IPv6 extension headers included.
//!
//! **Built in place, not on the stack** (512 bytes could not hold 1,280):
//! `bpf_skb_change_tail` cuts the frame to Ethernet + quote, then
//! `bpf_skb_change_head` pushes room for the answer's headers in front of
//! the old Ethernet header (28 bytes for IPv4, 48 for IPv6), so the new
//! Ethernet (14, MACs swapped) + IP (20 / 40) + ICMP (8) headers, built on
//! the stack from the offending ones and written with one
//! `bpf_skb_store_bytes` at offset 0, cover the pushed room and the old
//! Ethernet header exactly; the quote stays where it was.
//!
//! **The ICMP checksum** covers the whole message (ICMPv6: with the IPv6
//! pseudo-header, RFC 8200 §8.1, taken from the answer's header written
//! in pseudo-header form as in `reject6.rs`). The header's sum seeds a
//! running sum over the quote, read from the packet with
//! `bpf_skb_load_bytes` in 128-byte chunks into a stack buffer (a
//! non-linear skb — a 9,000-byte frame — needs no pull) and summed with
//! `bpf_csum_diff`: one unrolled block per whole chunk the largest quote
//! can hold (4 for IPv4, 9 for IPv6), then the last 0–127 bytes loaded
//! into the zeroed buffer and summed rounded up to 4 bytes (zeros add
//! nothing; every chunk starts at an even offset of the message, so the
//! 16-bit words line up). Every length the verifier sees is a constant
//! or a register bounded by a compare.
//!
//! No error answers a packet from a multicast, broadcast or unspecified
//! source (RFC 1122 §3.2.2, RFC 4443 §2.4 e): it is dropped, still
//! counted as the reject.

use super::emit::{Em, Gen};
use super::layout::skb;
use super::reject::load_frame;
use crate::ebpf::service::icmp_error::fold_complement;
use crate::ebpf::{helper, AluOp, JmpCond, Op, Reg, Size};

use Reg::*;

/// The answer's Ethernet + IP + ICMP headers (≡ 2 mod 8: the IP header is
/// 8-aligned). The same place as `reject6.rs`'s frame, whose IPv6 header
/// helpers write at `HEAD + 14`.
pub(super) const HEAD: i16 = -502;
/// The offending Ethernet + IP headers as read (≡ 2 mod 8).
const ORIG: i16 = -430;
/// The quote's chunk buffer and the running sum.
const BUF: i16 = -368;
const CHUNK: i32 = 128;
const SUM: i16 = -232;

/// The largest quote: 576 − 20 − 8 (IPv4), 1,280 − 40 − 8 (IPv6).
pub const QUOTE_MAX4: i32 = 576 - 20 - 8;
pub const QUOTE_MAX6: i32 = 1280 - 40 - 8;

impl Gen<'_> {
    /// ICMP port unreachable for the IPv4 datagram in the skb.
    pub(super) fn udp_unreachable(&self, em: &mut Em) {
        let drop = em.drop;
        let ip = ORIG + 14;
        load_frame(em, None, ORIG, 14 + 20);
        // No error about a datagram from a multicast / broadcast /
        // unspecified source (RFC 1122 §3.2.2).
        em.push(Op::load(Size::U8, R1, R10, ip + 12));
        em.jmp(JmpCond::Ge, R1, 224, drop);
        em.push(Op::load(Size::U32, R1, R10, ip + 12));
        em.jmp(JmpCond::Eq, R1, 0, drop);
        // r9 = the quote's length: the total length.
        em.push(Op::load(Size::U16, R9, R10, ip + 2));
        em.push(Op::be16(R9));
        quote_len(em, QUOTE_MAX4, 20);
        make_room(em, 20 + 8);
        // Ethernet back to the sender, from ours, type IPv4.
        for i in 0..3i16 {
            em.push(Op::load(Size::U16, R1, R10, ORIG + 6 + 2 * i));
            em.push(Op::store(Size::U16, R10, HEAD + 2 * i, R1));
            em.push(Op::load(Size::U16, R1, R10, ORIG + 2 * i));
            em.push(Op::store(Size::U16, R10, HEAD + 6 + 2 * i, R1));
        }
        em.push(Op::mov64(R1, 0x0800));
        em.push(Op::be16(R1));
        em.push(Op::store(Size::U16, R10, HEAD + 12, R1));
        // IPv4: version 4, IHL 5, TOS 0, total length, id 0, no fragment
        // flags, TTL 64, protocol 1 (ICMP), checksum below, source = the
        // frontend the datagram was sent to, destination = its sender.
        let h = HEAD + 14;
        em.push(Op::store(Size::U8, R10, h, 0x45));
        em.push(Op::store(Size::U8, R10, h + 1, 0));
        em.push(Op::mov64(R1, R9));
        em.push(Op::alu64(AluOp::Add, R1, 20 + 8));
        em.push(Op::be16(R1));
        em.push(Op::store(Size::U16, R10, h + 2, R1));
        em.push(Op::store(Size::U32, R10, h + 4, 0));
        em.push(Op::store(Size::U8, R10, h + 8, 64));
        em.push(Op::store(Size::U8, R10, h + 9, 1));
        em.push(Op::store(Size::U16, R10, h + 10, 0));
        em.push(Op::load(Size::U32, R1, R10, ip + 16));
        em.push(Op::store(Size::U32, R10, h + 12, R1));
        em.push(Op::load(Size::U32, R1, R10, ip + 12));
        em.push(Op::store(Size::U32, R10, h + 16, R1));
        self.csum_into(em, h, 20, h + 10);
        // ICMP: type 3 (destination unreachable), code 3 (port
        // unreachable), checksum, 4 unused bytes 0.
        let icmp = h + 20;
        em.push(Op::store(Size::U8, R10, icmp, 3));
        em.push(Op::store(Size::U8, R10, icmp + 1, 3));
        em.push(Op::store(Size::U16, R10, icmp + 2, 0));
        em.push(Op::store(Size::U32, R10, icmp + 4, 0));
        message_checksum(em, icmp, 8, 14 + 20 + 8, QUOTE_MAX4);
        send_head(em, 14 + 20 + 8);
    }

    /// ICMPv6 port unreachable for the IPv6 datagram in the skb.
    pub(super) fn udp6_unreachable(&self, em: &mut Em) {
        let ip = ORIG + 14;
        load_frame(em, None, ORIG, 14 + 40);
        Self::drop_unless_unicast6(em, ip + 8);
        // r9 = the quote's length: the header + the payload length.
        em.push(Op::load(Size::U16, R9, R10, ip + 4));
        em.push(Op::be16(R9));
        em.push(Op::alu64(AluOp::Add, R9, 40));
        quote_len(em, QUOTE_MAX6, 40);
        make_room(em, 40 + 8);
        Self::ether6_back(em, ORIG);
        em.push(Op::mov64(R5, R9));
        em.push(Op::alu64(AluOp::Add, R5, 8));
        Self::pseudo_ip6(em, ip, R5, 58);
        // ICMPv6: type 1 (destination unreachable), code 4 (port
        // unreachable), checksum, 4 unused bytes 0.
        let icmp = HEAD + 54;
        em.push(Op::store(Size::U8, R10, icmp, 1));
        em.push(Op::store(Size::U8, R10, icmp + 1, 4));
        em.push(Op::store(Size::U16, R10, icmp + 2, 0));
        em.push(Op::store(Size::U32, R10, icmp + 4, 0));
        // The pseudo-header's words are the header's (reject6.rs).
        message_checksum(em, HEAD + 14, 40 + 8, 14 + 40 + 8, QUOTE_MAX6);
        Self::finish_ip6(em, 58, 255);
        send_head(em, 14 + 40 + 8);
    }
}

/// r9 (the IP length) := min(r9, skb->len − 14, `max`); drops below
/// `min` (a header the parse would not have taken).
fn quote_len(em: &mut Em, max: i32, min: i32) {
    let drop = em.drop;
    let (fits, capped) = (em.label("quote_fits"), em.label("quote_capped"));
    em.push(Op::load(Size::U32, R1, R7, skb::LEN));
    em.push(Op::alu64(AluOp::Sub, R1, 14));
    em.push(Op::jmp(JmpCond::Le, R9, R1, fits));
    em.push(Op::mov64(R9, R1));
    em.bind(fits);
    em.jmp(JmpCond::Le, R9, max, capped);
    em.push(Op::mov64(R9, max));
    em.bind(capped);
    em.jmp(JmpCond::Lt, R9, min, drop);
}

/// Cuts the frame to Ethernet + the quote (r9), then pushes `room` bytes
/// in front of it; drops when a helper fails.
fn make_room(em: &mut Em, room: i32) {
    let drop = em.drop;
    em.push(Op::mov64(R1, R7));
    em.push(Op::mov64(R2, R9));
    em.push(Op::alu64(AluOp::Add, R2, 14));
    em.push(Op::mov64(R3, 0));
    em.push(Op::Call {
        helper: helper::SKB_CHANGE_TAIL,
    });
    em.jmp(JmpCond::Ne, R0, 0, drop);
    em.push(Op::mov64(R1, R7));
    em.push(Op::mov64(R2, room));
    em.push(Op::mov64(R3, 0));
    em.push(Op::Call {
        helper: helper::SKB_CHANGE_HEAD,
    });
    em.jmp(JmpCond::Ne, R0, 0, drop);
}

/// The ICMP checksum into `fp + icmp + 2`: the `len` header bytes at
/// `fp + from` (ICMPv6: the pseudo-header form of the IPv6 header and
/// the ICMPv6 header), then the r9 quote bytes at frame offset `quote`
/// (module docs). Uses r8 and r9.
fn message_checksum(em: &mut Em, from: i16, len: i32, quote: i32, max: i32) {
    let drop = em.drop;
    super::emit::reset::csum_of_stack(em, from, len);
    em.push(Op::store(Size::U64, R10, SUM, R0));
    em.push(Op::mov64(R8, quote));
    let (tail, done) = (em.label("quote_tail"), em.label("quote_summed"));
    for _ in 0..max / CHUNK {
        em.jmp(JmpCond::Lt, R9, CHUNK, tail);
        load_chunk(em, Some(CHUNK));
        sum_chunk(em, Some(CHUNK));
        em.push(Op::alu64(AluOp::Add, R8, CHUNK));
        em.push(Op::alu64(AluOp::Sub, R9, CHUNK));
    }
    em.bind(tail);
    // 0–127 bytes left; the verifier is told so.
    em.jmp(JmpCond::Ge, R9, CHUNK, drop);
    em.jmp(JmpCond::Lt, R9, 1, done);
    for off in (0..CHUNK as i16).step_by(8) {
        em.push(Op::store(Size::U64, R10, BUF + off, 0));
    }
    load_chunk(em, None);
    sum_chunk(em, None);
    em.bind(done);
    em.push(Op::load(Size::U64, R0, R10, SUM));
    em.push(Op::mov32(R0, R0));
    fold_complement(em.a);
    // The checksum field: 2 bytes into the ICMP header, which ends the
    // stack headers.
    em.push(Op::store(Size::U16, R10, from + len as i16 - 8 + 2, R0));
}

/// `bpf_skb_load_bytes(skb, r8, BUF, len or r9)`, dropping on failure.
fn load_chunk(em: &mut Em, len: Option<i32>) {
    let drop = em.drop;
    em.push(Op::mov64(R1, R7));
    em.push(Op::mov64(R2, R8));
    em.push(Op::mov64(R3, R10));
    em.push(Op::alu64(AluOp::Add, R3, i32::from(BUF)));
    match len {
        Some(n) => em.push(Op::mov64(R4, n)),
        None => em.push(Op::mov64(R4, R9)),
    }
    em.push(Op::Call {
        helper: helper::SKB_LOAD_BYTES,
    });
    em.jmp(JmpCond::Ne, R0, 0, drop);
}

/// SUM := `bpf_csum_diff(NULL, 0, BUF, len, SUM)`; `None`: r9 rounded up
/// to 4 (the buffer's rest is zero).
fn sum_chunk(em: &mut Em, len: Option<i32>) {
    match len {
        Some(n) => em.push(Op::mov64(R4, n)),
        None => {
            em.push(Op::mov64(R4, R9));
            em.push(Op::alu64(AluOp::Add, R4, 3));
            em.push(Op::alu64(AluOp::Rsh, R4, 2));
            em.push(Op::alu64(AluOp::Lsh, R4, 2));
        }
    }
    em.push(Op::mov64(R1, 0));
    em.push(Op::mov64(R2, 0));
    em.push(Op::mov64(R3, R10));
    em.push(Op::alu64(AluOp::Add, R3, i32::from(BUF)));
    em.push(Op::load(Size::U64, R5, R10, SUM));
    em.push(Op::Call {
        helper: helper::CSUM_DIFF,
    });
    em.push(Op::store(Size::U64, R10, SUM, R0));
}

/// Writes the `len` header bytes at `HEAD` over the frame's start and
/// sends the answer back out of the interface it came in on.
fn send_head(em: &mut Em, len: i32) {
    super::reject::store_and_send(em, HEAD, len);
}
