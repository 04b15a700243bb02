//! The SCTP CRC32c update when a translation changes a port (DNAT to a
//! backend port, and the reply's source port back to the frontend's).
//!
//! SCTP's checksum (RFC 9260 §6.8 and appendix A, RFC 3309) is the
//! CRC32c of the SCTP packet — common header and chunks, the checksum
//! field taken as zero — with no pseudo-header, stored in the byte order
//! of the reflected CRC register (least significant byte first: Linux's
//! `cpu_to_le32`). The kernel has no helper for it, so the update is
//! computed here.
//!
//! **Why a delta, not a recompute.** A CRC is linear over GF(2): for two
//! packets of the same length, `crc(A) ^ crc(B)` is the raw CRC (zero
//! initial value, no final xor) of `A ^ B`. A port change makes `A ^ B`
//! zero but for two bytes `d` at offset `o` of a packet of `L` bytes, and
//! the raw CRC of that is `d · x^(8·(L − o))` mod P (in the register's
//! reflected representation, `d` the two bytes as the register's low 16
//! bits: processing two bytes from a zero register is the same as
//! loading them into it and advancing over two zero bytes; each zero byte
//! multiplies by `x^8`). So `new = old ^ delta`, with `x^(8m)` taken as
//! the product of the constants `x^(8·2^k)` for the set bits `k` of
//! `m = L − o` (< 2^16: the IP length fields are 16 bits), each a
//! carry-less multiply mod P in a loop the verifier runs exactly (its
//! multiplier is a known constant: every branch on it is decided). The
//! cost grows with the number of set bits of `m`, not with `L`; a full
//! recompute would read every byte (the unit test checks the delta
//! against one; BENCHMARKS.md has the cost).
//! A delta also keeps a corrupt packet corrupt: it never turns a wrong
//! checksum into a right one.
//!
//! **When the field is not updated** (the packet goes on unchanged but
//! for the port, and its checksum is right afterwards):
//! - a GSO packet (`gso_size` non-zero): SCTP's segmentation computes each
//!   segment's CRC32c itself;
//! - a checksum field of zero: the sender left the CRC32c to be computed
//!   later (`CHECKSUM_PARTIAL` with `csum_not_inet`: SCTP over a veth,
//!   whose features include `NETIF_F_SCTP_CRC`, leaves the field zero and
//!   the kernel or the NIC computes it over the final bytes, the field
//!   still zero — so it must stay zero). A program at TC cannot read
//!   `ip_summed`; a complete packet whose CRC32c happens to be 0 (one in
//!   2^32) is indistinguishable and keeps its stale 0 (the receiver drops
//!   it as corrupt; SCTP retransmits). Documented in docs/language.md.
//!
//! **Fail closed** (dropped and counted in `weir_lb_cnt[SCTP_CRC]`,
//! [`cnt::SCTP_CRC`]): where the SCTP packet's length cannot be known
//! from this packet — a first fragment (IPv4 with MF set; IPv6 with a
//! fragment header, found by walking the extension headers again as the
//! parse does; later fragments never reach a translation) — or the IP
//! length disagrees with the frame (beyond `skb->len`, or shorter than an
//! SCTP header: an IPv6 jumbogram's payload length is 0). Never a wrong
//! checksum.
//!
//! Called from the one place ports are rewritten,
//! [`super::emit::emit_rewrite`], and only in programs that can change an
//! SCTP port ([`CtxLayout::sctp_crc`]; `weir compile` sets it from
//! [`crate::ebpf::codegen::sctp_port_changes`]).

use crate::ebpf::layout::service::{cnt, map};
use crate::ebpf::layout::TC_ACT_SHOT;
use crate::ebpf::{AluOp, Asm, ByteOrder, JmpCond, Op, Operand, Reg, Size, Width};

use super::emit::{count, helper, st, CtxLayout};
use super::sctp::IPPROTO_SCTP;
use crate::interp::MAX_EXTENSION_HEADERS;
use Reg::*;

/// The CRC32c polynomial, reflected (RFC 9260 appendix A: 0x1EDC6F41).
pub const POLY: u32 = 0x82F6_3B78;

/// IPv6 next-header values of the fragment and AH headers.
const FRAGMENT: i32 = 44;
const AH: i32 = 51;

/// `__sk_buff` fields read here.
const SKB_LEN: i16 = 0;
const SKB_GSO_SIZE: i16 = 176;

/// Scratch in the reverse key's room ([`st::RK`], 40 bytes): free once
/// [`super::emit::emit_rewrite`] has passed the address (its IPv6
/// difference, [`st::DIFF`], lives there too), and never the source of
/// the address or port being written.
const FIELD: i16 = st::RK; // the checksum field (4)
const IPHDR: i16 = st::RK + 8; // the first 8 bytes of the IP header
const XOR: i16 = st::RK + 16; // old port ^ new port (u64)
const WALK_OFF: i16 = st::RK + 24; // the extension-header walk's offset (u64)
const WALK_TYPE: i16 = st::RK + 32; // and the type of the header there (u64)
/// The walk's step count (u64) and the two bytes of a header it reads
/// (`st::TMP2`: the TCP / UDP checksum offset, not used for SCTP;
/// `st::TMP3`: the key of [`count`], only on the way out).
const WALK_STEPS: i16 = st::TMP2;
const WALK_BYTES: i16 = st::TMP3;

/// Bits of `m`: the IP length fields are 16 bits.
const M_BITS: u32 = 16;

/// `a · b mod P` in the reflected representation (bit 31 is `x^0`): the
/// loop [`emit_port_crc`] emits, as zlib's `multmodp`.
pub fn mulmod(mut a: u32, mut b: u32) -> u32 {
    let mut p = 0;
    while a != 0 {
        if a & 0x8000_0000 != 0 {
            p ^= b;
        }
        a <<= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    p
}

/// `x^(8·2^k) mod P` for `k < M_BITS`: advancing a CRC register over
/// `2^k` zero bytes.
pub fn zero_bytes_constants() -> [u32; M_BITS as usize] {
    // x^8: x^0 (bit 31) times x, eight times.
    let mut c = 0x8000_0000u32;
    for _ in 0..8 {
        c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
    }
    let mut out = [0; M_BITS as usize];
    for o in &mut out {
        *o = c;
        c = mulmod(c, c);
    }
    out
}

/// The CRC32c change of an SCTP packet of `len` bytes whose port at
/// offset `port_off` (0 source, 2 destination) goes from `old` to `new`
/// (host order): what the emitted code xors into the field (read
/// least-significant byte first). For tests and documentation.
pub fn port_delta(len: u32, port_off: u32, old: u16, new: u16) -> u32 {
    let d = (old ^ new).to_be_bytes();
    let mut v = u32::from(d[0]) | u32::from(d[1]) << 8;
    let m = len - port_off;
    for (k, c) in zero_bytes_constants().iter().enumerate() {
        if m & (1 << k) != 0 {
            v = mulmod(*c, v);
        }
    }
    v
}

/// The CRC32c update for the port at `ctx_port` (context, u16 host
/// order) becoming the one at `fp + port`, at `port_off` in the SCTP
/// header (0 source, 2 destination), of the packet in r7 whose transport
/// offset is in `st::TMP` (see the module docs). Emits nothing unless
/// `c.sctp_crc`. Uses r0–r5 and the reverse key's room; exits with
/// `TC_ACT_SHOT` where it fails closed.
pub(crate) fn emit_port_crc(a: &mut Asm, c: &CtxLayout, ctx_port: i16, port: i16, port_off: i32) {
    if !c.sctp_crc {
        return;
    }
    let done = a.new_label("crc_done");
    let fail = a.new_label("crc_fail");
    let v6 = a.new_label("crc_v6");
    let have_end = a.new_label("crc_end");

    a.push(Op::load(Size::U8, R1, R6, c.proto));
    a.push(Op::jmp(JmpCond::Ne, R1, IPPROTO_SCTP, done));
    // The two bytes' xor; an unchanged port changes nothing.
    a.push(Op::load(Size::U16, R1, R6, ctx_port));
    a.push(Op::load(Size::U16, R2, R10, port));
    a.push(Op::alu64(AluOp::Xor, R1, R2));
    a.push(Op::jmp(JmpCond::Eq, R1, 0, done));
    a.push(Op::store(Size::U64, R10, XOR, R1));
    // GSO: segmentation computes each segment's CRC32c.
    a.push(Op::load(Size::U32, R1, R7, SKB_GSO_SIZE));
    a.push(Op::jmp(JmpCond::Ne, R1, 0, done));
    // The checksum field (transport offset + 8); zero: not computed yet.
    load_bytes(a, Some(8), FIELD, 4);
    a.push(Op::jmp(JmpCond::Ne, R0, 0, fail));
    a.push(Op::load(Size::U32, R1, R10, FIELD));
    a.push(Op::jmp(JmpCond::Eq, R1, 0, done));
    // The IP header's first 8 bytes: the packet's length.
    load_bytes(a, None, IPHDR, 8);
    a.push(Op::jmp(JmpCond::Ne, R0, 0, fail));
    a.push(Op::load(Size::U8, R1, R6, c.family));
    a.push(Op::jmp(JmpCond::Eq, R1, 6, v6));
    // IPv4: a first fragment (MF) does not hold the whole SCTP packet.
    a.push(Op::load(Size::U8, R1, R10, IPHDR + 6));
    a.push(Op::alu64(AluOp::And, R1, 0x20));
    a.push(Op::jmp(JmpCond::Ne, R1, 0, fail));
    a.push(Op::load(Size::U16, R1, R10, IPHDR + 2));
    a.push(Op::be16(R1));
    a.push(Op::alu64(AluOp::Add, R1, 14));
    a.push(Op::Ja { target: have_end });
    // IPv6: no fragment header among the extension headers (a
    // jumbogram's payload length, 0, fails the length check below).
    a.bind(v6);
    no_fragment_header(a, fail);
    a.push(Op::load(Size::U16, R1, R10, IPHDR + 4));
    a.push(Op::be16(R1));
    a.push(Op::alu64(AluOp::Add, R1, 54));
    // r1: the frame offset where the IP packet ends; within the frame,
    // and an SCTP header long at least.
    a.bind(have_end);
    a.push(Op::load(Size::U32, R2, R7, SKB_LEN));
    a.push(Op::jmp(JmpCond::Gt, R1, R2, fail));
    a.push(Op::load(Size::U64, R2, R10, st::TMP));
    a.push(Op::alu64(AluOp::Add, R2, 12));
    a.push(Op::jmp(JmpCond::Gt, R2, R1, fail));
    // m = end − (transport offset + port_off): bytes from the port to the
    // end of the packet.
    a.push(Op::alu64(AluOp::Sub, R2, 12 - port_off));
    a.push(Op::alu64(AluOp::Sub, R1, R2));
    a.push(Op::jmp(JmpCond::Gt, R1, (1 << M_BITS) - 1, fail));
    // r3 = the xor as the register's low 16 bits (first byte lowest).
    a.push(Op::load(Size::U64, R3, R10, XOR));
    a.push(Op::mov64(R4, R3));
    a.push(Op::alu64(AluOp::Rsh, R4, 8));
    a.push(Op::alu64(AluOp::And, R3, 0xff));
    a.push(Op::alu64(AluOp::Lsh, R3, 8));
    a.push(Op::alu64(AluOp::Or, R3, R4));
    for (k, ck) in zero_bytes_constants().iter().enumerate() {
        emit_mul_step(a, k as u32, *ck);
    }
    // The field (least significant byte first) xor the delta.
    a.push(Op::load(Size::U32, R1, R10, FIELD));
    a.push(le32(R1));
    a.push(Op::alu32(AluOp::Xor, R1, R3));
    a.push(le32(R1));
    a.push(Op::store(Size::U32, R10, FIELD, R1));
    a.push(Op::mov64(R1, R7));
    a.push(Op::load(Size::U64, R2, R10, st::TMP));
    a.push(Op::alu64(AluOp::Add, R2, 8));
    a.push(Op::mov64(R3, R10));
    a.push(Op::alu64(AluOp::Add, R3, i32::from(FIELD)));
    a.push(Op::mov64(R4, 4));
    a.push(Op::mov64(R5, 0));
    a.push(Op::Call {
        helper: helper::SKB_STORE_BYTES,
    });
    a.push(Op::jmp(JmpCond::Eq, R0, 0, done));
    // Fail closed: counted, dropped.
    a.bind(fail);
    count(a, map::CNT, Operand::Imm(cnt::SCTP_CRC as i32));
    a.push(Op::mov64(R0, TC_ACT_SHOT));
    a.push(Op::Exit);
    a.bind(done);
}

/// IPv6: jumps to `fail` if a fragment header lies between the fixed
/// header and the transport header (at `st::TMP`): the packet is a first
/// fragment, and its SCTP packet goes on in the next. The chain is walked
/// again as the parse walked it (hop-by-hop, routing, destination
/// options: (len + 1) × 8 bytes; AH: (len + 2) × 4; at most
/// [`MAX_EXTENSION_HEADERS`] steps), with `bpf_skb_load_bytes`; the
/// IP header's first 8 bytes are at `IPHDR`. Falls through otherwise.
fn no_fragment_header(a: &mut Asm, fail: crate::ebpf::Label) {
    let step = a.new_label("crc_ext_step");
    let ah = a.new_label("crc_ext_ah");
    let advance = a.new_label("crc_ext_advance");
    let done = a.new_label("crc_ext_done");
    a.push(Op::store(Size::U64, R10, WALK_OFF, 54));
    a.push(Op::load(Size::U8, R1, R10, IPHDR + 6));
    a.push(Op::store(Size::U64, R10, WALK_TYPE, R1));
    a.push(Op::store(Size::U64, R10, WALK_STEPS, 0));
    a.bind(step);
    // At the transport header: no fragment header on the way.
    a.push(Op::load(Size::U64, R2, R10, WALK_OFF));
    a.push(Op::load(Size::U64, R3, R10, st::TMP));
    a.push(Op::jmp(JmpCond::Eq, R2, R3, done));
    a.push(Op::jmp(JmpCond::Gt, R2, R3, fail));
    a.push(Op::load(Size::U64, R1, R10, WALK_STEPS));
    a.push(Op::jmp(JmpCond::Ge, R1, MAX_EXTENSION_HEADERS as i32, fail));
    a.push(Op::alu64(AluOp::Add, R1, 1));
    a.push(Op::store(Size::U64, R10, WALK_STEPS, R1));
    a.push(Op::load(Size::U64, R1, R10, WALK_TYPE));
    a.push(Op::jmp(JmpCond::Eq, R1, FRAGMENT, fail));
    // The header's next-header and length bytes.
    a.push(Op::store(Size::U64, R10, WALK_BYTES, 0));
    a.push(Op::mov64(R1, R7));
    a.push(Op::load(Size::U64, R2, R10, WALK_OFF));
    a.push(Op::mov64(R3, R10));
    a.push(Op::alu64(AluOp::Add, R3, i32::from(WALK_BYTES)));
    a.push(Op::mov64(R4, 2));
    a.push(Op::Call {
        helper: helper::SKB_LOAD_BYTES,
    });
    a.push(Op::jmp(JmpCond::Ne, R0, 0, fail));
    a.push(Op::load(Size::U8, R2, R10, WALK_BYTES + 1));
    a.push(Op::load(Size::U64, R1, R10, WALK_TYPE));
    a.push(Op::jmp(JmpCond::Eq, R1, AH, ah));
    a.push(Op::alu64(AluOp::Add, R2, 1));
    a.push(Op::alu64(AluOp::Lsh, R2, 3));
    a.push(Op::Ja { target: advance });
    a.bind(ah);
    a.push(Op::alu64(AluOp::Add, R2, 2));
    a.push(Op::alu64(AluOp::Lsh, R2, 2));
    a.bind(advance);
    a.push(Op::load(Size::U64, R1, R10, WALK_OFF));
    a.push(Op::alu64(AluOp::Add, R1, R2));
    a.push(Op::store(Size::U64, R10, WALK_OFF, R1));
    a.push(Op::load(Size::U8, R1, R10, WALK_BYTES));
    a.push(Op::store(Size::U64, R10, WALK_TYPE, R1));
    a.push(Op::Ja { target: step });
    a.bind(done);
}

/// The CRC32c update alone, for measuring its cost
/// (`runtime/tests/ebpf_sctp_crc.rs`): a TC program that puts an IPv4
/// SCTP packet's destination port 3868 → 3869 in a context of its own
/// (`weir_crc_ctx`) and, with `with_crc`, runs [`emit_port_crc`] on the
/// packet (the field takes the delta; the port bytes are not written, so
/// a repeated run toggles it), then returns `TC_ACT_OK`. Without it, the
/// same setup: the difference is the update's cost.
pub fn bench_program(with_crc: bool) -> (crate::ebpf::Assembled, Vec<crate::ebpf::MapDef>) {
    use crate::ebpf::maps::{MapDef, MapType};
    let c = CtxLayout {
        sctp_crc: true,
        ..CtxLayout::pipeline()
    };
    let mut a = Asm::new();
    let out = a.new_label("out");
    a.push(Op::mov64(R7, R1));
    a.push(Op::store(Size::U32, R10, st::TMP3, 0));
    a.push(Op::mov64(R2, R10));
    a.push(Op::alu64(AluOp::Add, R2, i32::from(st::TMP3)));
    a.push(Op::ld_map_fd(R1, "weir_crc_ctx"));
    a.push(Op::Call {
        helper: helper::MAP_LOOKUP_ELEM,
    });
    a.push(Op::jmp(JmpCond::Eq, R0, 0, out));
    a.push(Op::mov64(R6, R0));
    a.push(Op::store(Size::U8, R6, c.proto, IPPROTO_SCTP));
    a.push(Op::store(Size::U8, R6, c.family, 4));
    a.push(Op::store(Size::U16, R6, c.dport, 3868));
    a.push(Op::store(Size::U16, R10, st::CTV, 3869));
    a.push(Op::store(Size::U64, R10, st::TMP, 34));
    if with_crc {
        emit_port_crc(&mut a, &c, c.dport, st::CTV, 2);
    }
    a.bind(out);
    a.push(Op::mov64(R0, 0));
    a.push(Op::Exit);
    let maps = vec![
        MapDef::new("weir_crc_ctx", MapType::PercpuArray, 4, 256, 1),
        MapDef::new(map::CNT, MapType::PercpuArray, 4, 8, cnt::SIZE),
    ];
    (a.assemble().expect("the CRC32c bench assembles"), maps)
}

/// `if m (r1) has bit k: r3 = C_k · r3 mod P`. The multiplier (r4) is the
/// constant, shifted left until it is zero: a loop of at most 32 turns
/// that the verifier follows exactly. Uses r0, r2, r4, r5.
fn emit_mul_step(a: &mut Asm, k: u32, ck: u32) {
    let skip = a.new_label("crc_skip");
    let top = a.new_label("crc_mul");
    let no_xor = a.new_label("crc_noxor");
    let end = a.new_label("crc_mul_end");
    a.push(Op::mov64(R2, R1));
    a.push(Op::alu64(AluOp::And, R2, 1 << k));
    a.push(Op::jmp(JmpCond::Eq, R2, 0, skip));
    a.push(Op::mov32(R4, ck as i32));
    a.push(Op::mov32(R0, 0));
    a.bind(top);
    a.push(Op::mov32(R2, R4));
    a.push(Op::alu32(AluOp::And, R2, i32::MIN));
    a.push(Op::jmp(JmpCond::Eq, R2, 0, no_xor));
    a.push(Op::alu32(AluOp::Xor, R0, R3));
    a.bind(no_xor);
    a.push(Op::alu32(AluOp::Lsh, R4, 1));
    a.push(Op::jmp(JmpCond::Eq, R4, 0, end));
    // b = b·x: (b >> 1) ^ (POLY if b's low bit), without a branch on b
    // (a branch would make the verifier track b's value and never merge
    // the paths of the bits of m).
    a.push(Op::mov32(R5, R3));
    a.push(Op::alu32(AluOp::And, R5, 1));
    a.push(Op::Neg {
        width: Width::W32,
        dst: R5,
    });
    a.push(Op::alu32(AluOp::And, R5, POLY as i32));
    a.push(Op::alu32(AluOp::Rsh, R3, 1));
    a.push(Op::alu32(AluOp::Xor, R3, R5));
    a.push(Op::Ja { target: top });
    a.bind(end);
    a.push(Op::mov32(R3, R0));
    a.bind(skip);
}

/// `bpf_skb_load_bytes(skb, off, fp + to, len)`: `off` past the transport
/// offset in `st::TMP`, or (None) the IP header's (14).
fn load_bytes(a: &mut Asm, l4_off: Option<i32>, to: i16, len: i32) {
    a.push(Op::mov64(R1, R7));
    match l4_off {
        Some(o) => {
            a.push(Op::load(Size::U64, R2, R10, st::TMP));
            a.push(Op::alu64(AluOp::Add, R2, o));
        }
        None => a.push(Op::mov64(R2, 14)),
    }
    a.push(Op::mov64(R3, R10));
    a.push(Op::alu64(AluOp::Add, R3, i32::from(to)));
    a.push(Op::mov64(R4, len));
    a.push(Op::Call {
        helper: helper::SKB_LOAD_BYTES,
    });
}

/// The field as the CRC register (least significant byte first: a no-op
/// on a little-endian host).
fn le32(r: Reg) -> Op {
    Op::Endian {
        order: ByteOrder::Le,
        bits: 32,
        dst: r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9260 appendix A's CRC32c, bit by bit (the test's own
    /// reference; the kernel test checks against the `crc32c` crate).
    fn crc32c(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            }
        }
        !c
    }

    #[test]
    fn delta_matches_a_recompute() {
        let mut seed = 0x1234_5678u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for len in [12u32, 13, 28, 60, 61, 255, 256, 1452, 1480, 8952, 65515] {
            let mut pkt: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            pkt[8..12].fill(0);
            let old = crc32c(&pkt);
            for port_off in [0u32, 2] {
                let o = port_off as usize;
                let before = u16::from_be_bytes([pkt[o], pkt[o + 1]]);
                let after = next() as u16;
                let mut q = pkt.clone();
                q[o..o + 2].copy_from_slice(&after.to_be_bytes());
                assert_eq!(
                    old ^ port_delta(len, port_off, before, after),
                    crc32c(&q),
                    "len {len} off {port_off}"
                );
            }
        }
    }
}
