//! The TC service stage: reverse NAT of replies, then for packets to a
//! frontend: the flow's backend from `weir_lb_ct`, or a new choice
//! (affinity → Maglev on the flow hash / weighted random), recorded in
//! `weir_lb_ct` and (standalone program) `weir_lb_rev` — the policy
//! pipeline defers the `weir_lb_ct` write to its verdict and keeps the
//! reverse translation in its conntrack entry — then DNAT with checksum
//! fix-up.
//!
//! Register contract (the policy pipeline's): `r6` = scratch context (a
//! map value with the [`CtxLayout`] fields), `r7` = the `__sk_buff`.
//! `r8`/`r9` are not touched. Everything else is scratch; the stage uses
//! the stack from [`STACK_TOP`] down to [`STACK_BOTTOM`] (the pipeline's
//! blocks use less than 160 bytes of stack).
//!
//! TCP, UDP and SCTP of both families are translated (one code path:
//! 16-byte addresses everywhere, the family only where the headers differ
//! — the address's place and the checksums, [`emit_rewrite`]; SCTP has no
//! pseudo-header, [`super::sctp`], and a CRC32c for a changed port,
//! [`super::sctp_crc`]); other packets
//! continue untouched.

use crate::ebpf::{AluOp, Asm, JmpCond, Label, Op, Operand, Reg, Size};

use super::layout::{
    aff, be, cnt, ct, fe, fe_key, map, rev, slot_key, tuple, FLAG_AFFINITY, FLAG_MAGLEV, MAGLEV_M,
};
use super::sctp::{skip_if_sctp, IPPROTO_SCTP};
use Reg::*;

/// Helper ids used here (`enum bpf_func_id`).
pub mod helper {
    pub const MAP_LOOKUP_ELEM: u32 = 1;
    pub const MAP_UPDATE_ELEM: u32 = 2;
    pub const KTIME_GET_NS: u32 = 5;
    pub const GET_PRANDOM_U32: u32 = 7;
    pub const SKB_STORE_BYTES: u32 = 9;
    pub const L3_CSUM_REPLACE: u32 = 10;
    pub const L4_CSUM_REPLACE: u32 = 11;
    pub const SKB_LOAD_BYTES: u32 = 26;
    pub const CSUM_DIFF: u32 = 28;
    pub const GET_SOCKET_COOKIE: u32 = 46;
}

/// `bpf_l4_csum_replace` flags.
pub const BPF_F_PSEUDO_HDR: i32 = 1 << 4;
pub const BPF_F_MARK_MANGLED_0: i32 = 1 << 5;
/// An IPv6 pseudo-header change (kernel ≥ 6.16: `skb->csum` of a
/// `CHECKSUM_COMPLETE` packet is left alone, as it does not cover the
/// IPv6 pseudo-header).
pub const BPF_F_IPV6: i32 = 1 << 7;

/// Stack area of the stage (offsets from r10).
pub const STACK_TOP: i16 = -160;
pub const STACK_BOTTOM: i16 = -432;
const _: () = assert!(STACK_BOTTOM >= -512, "BPF stack is 512 bytes");

/// Stack slots (from r10).
pub(crate) mod st {
    /// Frontend key (20).
    pub const FEK: i16 = -184;
    /// Frontend value copy (32).
    pub const FEV: i16 = -216;
    /// The chosen backend ([`be`](super::be) layout, 24), service (4),
    /// pad, timestamp (8): the `weir_lb_ct` value (40).
    pub const CTV: i16 = -256;
    /// The flow tuple (40): conntrack key and hash input.
    pub const TK: i16 = -296;
    /// Reverse tuple (40).
    pub const RK: i16 = -336;
    /// Reverse value (24).
    pub const RV: i16 = -360;
    /// Affinity key (24) and value (16).
    pub const AK: i16 = -384;
    pub const AV: i16 = -400;
    /// Slot key (8).
    pub const SK: i16 = -408;
    pub const TMP: i16 = -416;
    pub const TMP2: i16 = -424;
    pub const TMP3: i16 = -432;
    /// The IPv6 address checksum difference (8), in the reverse key's
    /// room: [`emit_rewrite`] runs after the reverse key is written (or
    /// never uses it: reverse NAT looks up `TK`).
    pub const DIFF: i16 = RK;
}

/// Where the stage finds the packet's fields in the scratch context.
/// Addresses: 16 bytes, network order; ports: u16 host order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtxLayout {
    pub src: i16,
    pub dst: i16,
    pub sport: i16,
    pub dport: i16,
    /// u8 IP protocol.
    pub proto: i16,
    /// u8 4 / 6.
    pub family: i16,
    /// u16: frame offset of an IPv6 packet's transport header past its
    /// extension headers, as the parse's walk left it; 0 when there were
    /// none (then 54: Ethernet + the fixed header).
    pub l6_l4: i16,
    /// The parse also left an IPv4 packet's transport header offset at
    /// `l6_l4` (the policy pipeline's parse does): the rewrite reads it
    /// there instead of loading the IHL with `bpf_skb_load_bytes`.
    pub l4_known: bool,
    /// Written on translation: original destination (16) and port.
    pub orig_dst: Option<i16>,
    pub orig_dport: Option<i16>,
    /// Written on translation: service index + 1 (u32).
    pub service: Option<i16>,
    /// A conntrack key in the context (tuple layout) whose destination
    /// and port are updated on translation.
    pub ct_key: Option<i16>,
    /// Defer the writes of a new translation to the caller (the policy
    /// pipeline writes `weir_lb_ct`, and its conntrack entry carries the
    /// reverse translation): `(state, value)` — `LB_PENDING` is stored at
    /// `state` and the `weir_lb_ct` value without its timestamp (32
    /// bytes) at `value`. `None`: written at once.
    pub lb_pending: Option<(i16, i16)>,
    /// The caller already looked the packet's tuple up in `weir_lb_ct`
    /// ([`emit_established_dnat`]) and reaches the stage only on a miss:
    /// the stage skips its own lookup.
    pub established_checked: bool,
    /// Emit the SCTP CRC32c update for a changed port
    /// ([`super::sctp_crc`]): set when the program can change an SCTP
    /// port ([`crate::ebpf::codegen::sctp_port_changes`]).
    pub sctp_crc: bool,
}

impl CtxLayout {
    /// The policy pipeline's `weir_ctx` (`layout::ctx`).
    pub fn pipeline() -> CtxLayout {
        use crate::ebpf::layout::ctx;
        CtxLayout {
            src: ctx::SRC,
            dst: ctx::DST,
            sport: ctx::SPORT,
            dport: ctx::DPORT,
            proto: ctx::RAW_PROTO,
            family: ctx::FAMILY,
            l6_l4: ctx::PARSE_OFF,
            l4_known: false,
            orig_dst: Some(ctx::ORIG_DST),
            orig_dport: Some(ctx::ORIG_DPORT),
            service: Some(ctx::SERVICE),
            ct_key: Some(ctx::CT_KEY),
            lb_pending: None,
            established_checked: false,
            sctp_crc: false,
        }
    }
}

/// How a rejected (no backends) packet is counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectCount {
    /// `weir_lb_cnt[NO_BACKENDS]` (standalone programs).
    LbCounter,
    /// `MAP[frontend.no_backends]`, a per-CPU u64 array indexed by
    /// provenance id (the pipeline's `weir_cnt`).
    Provenance(String),
}

/// What the stage needs from its caller.
#[derive(Debug, Clone)]
pub struct StageEnv {
    pub ctx: CtxLayout,
    /// Continue here: not a frontend, translated, or a reply un-translated.
    pub cont: Label,
    /// Drop here (no backends, or a frontend entry pointing at a missing
    /// slot during an update).
    pub drop: Label,
    pub reject: RejectCount,
    /// Continue here after counting a reject (no backends), with the
    /// frontend value at `st::FEV` — e.g. to answer with a TCP reset;
    /// `None`: `drop`.
    pub rejected: Option<Label>,
    /// Count translations / replies in `weir_lb_cnt` too.
    pub lb_counters: bool,
}

/// `r0 = lookup(map, fp + key)`.
pub(crate) fn lookup(a: &mut Asm, m: &str, key: i16) {
    a.push(Op::mov64(R2, R10));
    a.push(Op::alu64(AluOp::Add, R2, i32::from(key)));
    a.push(Op::ld_map_fd(R1, m));
    a.push(Op::Call {
        helper: helper::MAP_LOOKUP_ELEM,
    });
}

/// `update(map, fp + key, fp + value, BPF_ANY)`.
pub(crate) fn update(a: &mut Asm, m: &str, key: i16, value: i16) {
    a.push(Op::ld_map_fd(R1, m));
    a.push(Op::mov64(R2, R10));
    a.push(Op::alu64(AluOp::Add, R2, i32::from(key)));
    a.push(Op::mov64(R3, R10));
    a.push(Op::alu64(AluOp::Add, R3, i32::from(value)));
    a.push(Op::mov64(R4, 0));
    a.push(Op::Call {
        helper: helper::MAP_UPDATE_ELEM,
    });
}

/// Copies `len` bytes (a multiple of 4, or 2 / 1) from `src + so` to
/// `dst + do_` through r1.
pub(crate) fn copy(a: &mut Asm, dst: Reg, do_: i16, src: Reg, so: i16, len: i16) {
    let mut i = 0;
    while i < len {
        let (size, n) = match len - i {
            n if n >= 8 => (Size::U64, 8),
            n if n >= 4 => (Size::U32, 4),
            n if n >= 2 => (Size::U16, 2),
            _ => (Size::U8, 1),
        };
        a.push(Op::load(size, R1, src, so + i));
        a.push(Op::store(size, dst, do_ + i, R1));
        i += n;
    }
}

/// Counts a new flow (or connect) of the service at `st::FEV` to the
/// backend at `st::CTV`: `weir_lb_scnt[service]`, `weir_lb_bcnt[id]` (an
/// id beyond the map's capacity — backends added at run time past the
/// spare ids — is not counted).
pub(crate) fn count_flow(a: &mut Asm) {
    a.push(Op::load(Size::U32, R3, R10, st::FEV + fe::SERVICE));
    count(a, map::SVC_CNT, Operand::Reg(R3));
    a.push(Op::load(Size::U32, R3, R10, st::CTV + be::ID));
    count(a, map::BE_CNT, Operand::Reg(R3));
}

/// `MAP[idx] += 1` for a per-CPU u64 array; `idx` an immediate or a
/// register other than r0–r2.
pub(crate) fn count(a: &mut Asm, m: &str, idx: Operand) {
    let skip = a.new_label("cnt_skip");
    a.push(Op::store(Size::U32, R10, st::TMP3, idx));
    lookup(a, m, st::TMP3);
    a.push(Op::jmp(JmpCond::Eq, R0, 0, skip));
    a.push(Op::load(Size::U64, R1, R0, 0));
    a.push(Op::alu64(AluOp::Add, R1, 1));
    a.push(Op::store(Size::U64, R0, 0, R1));
    a.bind(skip);
}

/// `w1 = mix(w1)` ([`crate::flowhash`]): multiply by the golden ratio,
/// fold the high half. Clobbers r2.
fn mix(a: &mut Asm) {
    a.push(Op::alu32(AluOp::Mul, R1, 0x9E37_79B1_u32 as i32));
    a.push(Op::mov32(R2, R1));
    a.push(Op::alu32(AluOp::Rsh, R2, 16));
    a.push(Op::alu32(AluOp::Xor, R1, R2));
}

/// `w1 = flow_hash(src, dst, sport, dport, proto)` over a tuple
/// ([`tuple`] layout, either family) at `base + off`: exactly
/// [`crate::flowhash::flow_hash`] on host-order values. An address is
/// folded as the xor of its four 32-bit words
/// ([`crate::flowhash::fold_addr`]); an IPv4 address is its first word
/// with the other three zero, so one sequence serves both families (the
/// byte swap commutes with xor: the words are xored in network order and
/// swapped once). Clobbers r2, r3.
pub fn emit_flow_hash(a: &mut Asm, base: Reg, off: i16) {
    fold_addr(a, R1, base, off + tuple::SRC);
    mix(a);
    fold_addr(a, R2, base, off + tuple::DST);
    a.push(Op::alu32(AluOp::Xor, R1, R2));
    mix(a);
    a.push(Op::load(Size::U16, R2, base, off + tuple::SPORT));
    a.push(Op::alu32(AluOp::Lsh, R2, 16));
    a.push(Op::load(Size::U16, R3, base, off + tuple::DPORT));
    a.push(Op::alu32(AluOp::Or, R2, R3));
    a.push(Op::alu32(AluOp::Xor, R1, R2));
    mix(a);
    a.push(Op::load(Size::U8, R2, base, off + tuple::PROTO));
    a.push(Op::alu32(AluOp::Xor, R1, R2));
    mix(a);
}

/// `dst = fold_addr(16 bytes at base + off)` in host order. Clobbers r3
/// (`dst` is r1 or r2).
fn fold_addr(a: &mut Asm, dst: Reg, base: Reg, off: i16) {
    a.push(Op::load(Size::U32, dst, base, off));
    for w in 1..4i16 {
        a.push(Op::load(Size::U32, R3, base, off + 4 * w));
        a.push(Op::alu32(AluOp::Xor, dst, R3));
    }
    a.push(Op::be32(dst));
}

/// Builds the frontend key at `st::FEK` from the tuple at `st::TK`.
pub(crate) fn frontend_key_from_tuple(a: &mut Asm) {
    copy(a, R10, st::FEK + fe_key::ADDR, R10, st::TK + tuple::DST, 16);
    copy(
        a,
        R10,
        st::FEK + fe_key::PORT,
        R10,
        st::TK + tuple::DPORT,
        2,
    );
    copy(
        a,
        R10,
        st::FEK + fe_key::PROTO,
        R10,
        st::TK + tuple::PROTO,
        2,
    );
}

/// Backend choice for a new flow. Needs the tuple at `st::TK` and the
/// frontend value at `st::FEV` (count > 0); leaves the backend in
/// `st::CTV` (24 bytes) and refreshes / records affinity. Jumps to
/// `missing` when the entry points at a missing table or slot.
pub(crate) fn emit_choose(a: &mut Asm, missing: Label) {
    let aff_miss = a.new_label("lb_aff_miss");
    let random = a.new_label("lb_random");
    let slot = a.new_label("lb_slot");
    let got = a.new_label("lb_got");
    let done = a.new_label("lb_choice_done");

    // The affinity key is built on every path (the verifier does not
    // correlate two loads of the flags).
    copy(a, R10, st::AK + aff::CLIENT, R10, st::TK + tuple::SRC, 16);
    copy(a, R10, st::AK + aff::SERVICE, R10, st::FEV + fe::SERVICE, 4);
    a.push(Op::store(Size::U32, R10, st::AK + aff::FAMILY, 0));
    copy(a, R10, st::AK + aff::FAMILY, R10, st::TK + tuple::FAMILY, 1);

    // Client-IP affinity: (client, service) → backend id, if used within
    // the timeout and the backend still exists.
    a.push(Op::load(Size::U32, R1, R10, st::FEV + fe::FLAGS));
    a.push(Op::alu64(AluOp::And, R1, FLAG_AFFINITY as i32));
    a.push(Op::jmp(JmpCond::Eq, R1, 0, aff_miss));
    lookup(a, map::AFF, st::AK);
    a.push(Op::jmp(JmpCond::Eq, R0, 0, aff_miss));
    a.push(Op::load(Size::U64, R1, R0, aff::V_TS));
    a.push(Op::store(Size::U64, R10, st::TMP, R1));
    a.push(Op::load(Size::U32, R1, R0, aff::V_ID));
    a.push(Op::store(Size::U32, R10, st::TMP2, R1));
    a.push(Op::Call {
        helper: helper::KTIME_GET_NS,
    });
    a.push(Op::load(Size::U64, R1, R10, st::TMP));
    a.push(Op::alu64(AluOp::Sub, R0, R1));
    a.push(Op::load(Size::U32, R2, R10, st::FEV + fe::AFFINITY_SECS));
    a.push(Op::alu64(AluOp::Mul, R2, 1_000_000_000));
    a.push(Op::jmp(JmpCond::Gt, R0, R2, aff_miss));
    lookup(a, map::BE, st::TMP2);
    a.push(Op::jmp(JmpCond::Eq, R0, 0, aff_miss));
    copy(a, R10, st::CTV, R0, 0, be::SIZE as i16);
    a.push(Op::Ja { target: got });

    a.bind(aff_miss);
    a.push(Op::load(Size::U32, R1, R10, st::FEV + fe::FLAGS));
    a.push(Op::alu64(AluOp::And, R1, FLAG_MAGLEV as i32));
    a.push(Op::jmp(JmpCond::Eq, R1, 0, random));
    // Maglev: table[flow_hash % M].
    emit_flow_hash(a, R10, st::TK);
    a.push(Op::alu32(AluOp::Mod, R1, MAGLEV_M as i32));
    a.push(Op::store(Size::U32, R10, st::TMP, R1));
    copy(a, R10, st::TMP2, R10, st::FEV + fe::TABLE, 4);
    lookup(a, map::MGL, st::TMP2);
    a.push(Op::jmp(JmpCond::Eq, R0, 0, missing));
    a.push(Op::load(Size::U32, R1, R10, st::TMP));
    a.push(Op::jmp(JmpCond::Ge, R1, MAGLEV_M as i32, missing));
    a.push(Op::alu64(AluOp::Lsh, R1, 2));
    a.push(Op::alu64(AluOp::Add, R0, R1));
    a.push(Op::load(Size::U32, R1, R0, 0));
    a.push(Op::Ja { target: slot });

    // Random: a uniform draw over the weight-expanded slots.
    a.bind(random);
    a.push(Op::Call {
        helper: helper::GET_PRANDOM_U32,
    });
    a.push(Op::load(Size::U32, R1, R10, st::FEV + fe::COUNT));
    a.push(Op::alu32(AluOp::Mod, R0, R1));
    a.push(Op::mov64(R1, R0));

    a.bind(slot);
    a.push(Op::store(Size::U32, R10, st::SK + slot_key::SLOT, R1));
    copy(a, R10, st::SK + slot_key::SET, R10, st::FEV + fe::SET, 4);
    lookup(a, map::SLOT, st::SK);
    a.push(Op::jmp(JmpCond::Eq, R0, 0, missing));
    copy(a, R10, st::CTV, R0, 0, be::SIZE as i16);

    a.bind(got);
    a.push(Op::load(Size::U32, R1, R10, st::FEV + fe::FLAGS));
    a.push(Op::alu64(AluOp::And, R1, FLAG_AFFINITY as i32));
    a.push(Op::jmp(JmpCond::Eq, R1, 0, done));
    a.push(Op::Call {
        helper: helper::KTIME_GET_NS,
    });
    a.push(Op::store(Size::U64, R10, st::AV + aff::V_TS, R0));
    a.push(Op::store(Size::U32, R10, st::AV + 4, 0));
    copy(a, R10, st::AV + aff::V_ID, R10, st::CTV + be::ID, 4);
    update(a, map::AFF, st::AK, st::AV);
    a.bind(done);
}

/// Which end of the packet [`emit_rewrite`] changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Destination address and port (DNAT).
    Dst,
    /// Source address and port (reverse NAT).
    Src,
}

/// Rewrites one end of the TCP/UDP packet in `r7` (IPv4 or IPv6, by the
/// context's family) to the address (16 bytes, network order; IPv4 in
/// the first 4, the rest zero) at `fp + addr` and the port (u16 host
/// order) at `fp + port`, fixing the checksums, and updates the context.
/// Reads the old values from the context.
///
/// - IPv4: the header checksum (`bpf_l3_csum_replace`) and the L4
///   checksum's pseudo-header word (`bpf_l4_csum_replace`, 4 bytes).
/// - IPv6 (no header checksum): the L4 checksum covers the 16-byte
///   addresses of the pseudo-header; their difference
///   (`bpf_csum_diff` of the old and new address) is folded in with one
///   `bpf_l4_csum_replace` (size 0: "`to` is a difference"). The
///   transport header is at `c.l6_l4` (the parse's walk's offset past
///   any extension headers; 0: none, 54).
///
/// Then the port's checksum (both families; SCTP's CRC32c,
/// [`super::sctp_crc`], in programs that can change an SCTP port). A
/// zero UDP checksum stays
/// zero (`BPF_F_MARK_MANGLED_0`; a zero IPv6 UDP checksum is invalid
/// anyway and the kernel drops it before or after us). Last, the address
/// and port bytes, with direct packet stores ([`super::direct`]).
pub fn emit_rewrite(a: &mut Asm, c: &CtxLayout, end: End, addr: i16, port: i16) {
    let (ctx_addr, ctx_port, l4_port_off) = match end {
        End::Dst => (c.dst, c.dport, 2),
        End::Src => (c.src, c.sport, 0),
    };
    // IPv4 / IPv6 header offsets of the address.
    let (v4_ip_off, v6_ip_off) = match end {
        End::Dst => (16, 24),
        End::Src => (12, 8),
    };
    l4_offset_to_tmp(a, c);
    l4_csum_offset_and_flags(a, c);
    rewrite_address(a, c, ctx_addr, addr);
    rewrite_port(a, c, ctx_port, port);
    super::sctp_crc::emit_port_crc(a, c, ctx_port, port, l4_port_off);
    super::direct::store_ends(a, c, (v4_ip_off, v6_ip_off), (addr, port), l4_port_off);
    update_context(a, c, end, (ctx_addr, ctx_port), (addr, port));
}

/// The transport header's offset to `st::TMP`, also left in r1. IPv4:
/// the parse's offset in the context when it left one
/// ([`CtxLayout::l4_known`]), else 14 + IHL * 4 (read with skb_load_bytes:
/// the stage may run after helpers that invalidated packet pointers).
/// IPv6: the parse's offset in the context.
fn l4_offset_to_tmp(a: &mut Asm, c: &CtxLayout) {
    let have_l4 = a.new_label("rw_l4");
    if c.l4_known {
        // Both families' offset in the context (IPv6: 0 = 54).
        a.push(Op::load(Size::U16, R1, R6, c.l6_l4));
        a.push(Op::jmp(JmpCond::Ne, R1, 0, have_l4));
        a.push(Op::mov64(R1, 54));
        a.bind(have_l4);
        a.push(Op::store(Size::U64, R10, st::TMP, R1));
        return;
    }
    let v6 = a.new_label("rw_v6");
    a.push(Op::load(Size::U8, R1, R6, c.family));
    a.push(Op::jmp(JmpCond::Eq, R1, 6, v6));
    a.push(Op::mov64(R1, R7));
    a.push(Op::mov64(R2, 14));
    a.push(Op::mov64(R3, R10));
    a.push(Op::alu64(AluOp::Add, R3, i32::from(st::TMP)));
    a.push(Op::mov64(R4, 1));
    a.push(Op::store(Size::U64, R10, st::TMP, 0));
    a.push(Op::Call {
        helper: helper::SKB_LOAD_BYTES,
    });
    a.push(Op::load(Size::U8, R1, R10, st::TMP));
    a.push(Op::alu64(AluOp::And, R1, 15));
    a.push(Op::alu64(AluOp::Lsh, R1, 2));
    a.push(Op::alu64(AluOp::Add, R1, 14));
    a.push(Op::Ja { target: have_l4 });
    a.bind(v6);
    a.push(Op::load(Size::U16, R1, R6, c.l6_l4));
    a.push(Op::jmp(JmpCond::Ne, R1, 0, have_l4));
    a.push(Op::mov64(R1, 54));
    a.bind(have_l4);
    a.push(Op::store(Size::U64, R10, st::TMP, R1));
}

/// The L4 checksum's offset (TCP +16, UDP +6) to `st::TMP2` and the
/// checksum flags (UDP: mangled-0) to `st::TMP3`; the offset is in r1.
fn l4_csum_offset_and_flags(a: &mut Asm, c: &CtxLayout) {
    let udp = a.new_label("rw_udp");
    let have_off = a.new_label("rw_off");
    a.push(Op::mov64(R2, R1));
    a.push(Op::alu64(AluOp::Add, R2, 16));
    a.push(Op::mov64(R5, 0));
    a.push(Op::load(Size::U8, R3, R6, c.proto));
    a.push(Op::jmp(JmpCond::Ne, R3, 6, udp));
    a.push(Op::Ja { target: have_off });
    a.bind(udp);
    a.push(Op::mov64(R2, R1));
    a.push(Op::alu64(AluOp::Add, R2, 6));
    a.push(Op::mov64(R5, BPF_F_MARK_MANGLED_0));
    a.bind(have_off);
    a.push(Op::store(Size::U64, R10, st::TMP2, R2));
    a.push(Op::store(Size::U64, R10, st::TMP3, R5));
}

/// The checksum updates for the address (`fp + addr`) replacing the
/// context's `ctx_addr`, by its family (the bytes are written by
/// [`super::direct::store_ends`]).
fn rewrite_address(a: &mut Asm, c: &CtxLayout, ctx_addr: i16, addr: i16) {
    let addr6 = a.new_label("rw_addr6");
    let addr_done = a.new_label("rw_addr_done");
    a.push(Op::load(Size::U8, R1, R6, c.family));
    a.push(Op::jmp(JmpCond::Eq, R1, 6, addr6));
    // IPv4: L4 pseudo-header word (SCTP: no pseudo-header).
    let header4 = a.new_label("rw_header4");
    skip_if_sctp(a, c, header4);
    a.push(Op::mov64(R1, R7));
    a.push(Op::load(Size::U32, R3, R6, ctx_addr));
    a.push(Op::load(Size::U32, R4, R10, addr));
    a.push(Op::alu64(AluOp::Or, R5, BPF_F_PSEUDO_HDR | 4));
    a.push(Op::Call {
        helper: helper::L4_CSUM_REPLACE,
    });
    // IPv4 header checksum.
    a.bind(header4);
    a.push(Op::mov64(R1, R7));
    a.push(Op::mov64(R2, 14 + 10));
    a.push(Op::load(Size::U32, R3, R6, ctx_addr));
    a.push(Op::load(Size::U32, R4, R10, addr));
    a.push(Op::mov64(R5, 4));
    a.push(Op::Call {
        helper: helper::L3_CSUM_REPLACE,
    });
    a.push(Op::Ja { target: addr_done });
    // IPv6: the 16-byte difference into the L4 checksum (SCTP: none).
    a.bind(addr6);
    let replaced = a.new_label("rw_csum6_done");
    skip_if_sctp(a, c, replaced);
    a.push(Op::mov64(R1, R6));
    a.push(Op::alu64(AluOp::Add, R1, i32::from(ctx_addr)));
    a.push(Op::mov64(R2, 16));
    a.push(Op::mov64(R3, R10));
    a.push(Op::alu64(AluOp::Add, R3, i32::from(addr)));
    a.push(Op::mov64(R4, 16));
    a.push(Op::mov64(R5, 0));
    a.push(Op::Call {
        helper: helper::CSUM_DIFF,
    });
    a.push(Op::store(Size::U64, R10, st::DIFF, R0));
    for flags in [BPF_F_PSEUDO_HDR | BPF_F_IPV6, BPF_F_PSEUDO_HDR] {
        a.push(Op::mov64(R1, R7));
        a.push(Op::load(Size::U64, R2, R10, st::TMP2));
        a.push(Op::mov64(R3, 0));
        a.push(Op::load(Size::U64, R4, R10, st::DIFF));
        a.push(Op::load(Size::U64, R5, R10, st::TMP3));
        a.push(Op::alu64(AluOp::Or, R5, flags));
        a.push(Op::Call {
            helper: helper::L4_CSUM_REPLACE,
        });
        // A kernel before 6.16 refuses `BPF_F_IPV6` (EINVAL, nothing
        // written): the same update without it.
        a.push(Op::jmp(JmpCond::Eq, R0, 0, replaced));
    }
    a.bind(replaced);
    a.bind(addr_done);
}

/// The port's TCP / UDP checksum update (SCTP's CRC32c is
/// [`super::sctp_crc`]'s); the bytes are written by
/// [`super::direct::store_ends`].
fn rewrite_port(a: &mut Asm, c: &CtxLayout, ctx_port: i16, port: i16) {
    let done = a.new_label("rw_port_csum_done");
    skip_if_sctp(a, c, done);
    a.push(Op::mov64(R1, R7));
    a.push(Op::load(Size::U64, R2, R10, st::TMP2));
    a.push(Op::load(Size::U16, R3, R6, ctx_port));
    a.push(Op::be16(R3));
    a.push(Op::load(Size::U16, R4, R10, port));
    a.push(Op::be16(R4));
    a.push(Op::load(Size::U64, R5, R10, st::TMP3));
    a.push(Op::alu64(AluOp::Or, R5, 2));
    a.push(Op::Call {
        helper: helper::L4_CSUM_REPLACE,
    });
    a.bind(done);
}

/// The port's bytes with `bpf_skb_store_bytes` (the fallback of
/// [`super::direct::store_ends`]): `port` (u16 host order) at the
/// transport offset in `st::TMP` + `l4_port_off`. Clobbers `st::TMP2`.
pub(crate) fn store_port_bytes(a: &mut Asm, port: i16, l4_port_off: i32) {
    a.push(Op::load(Size::U16, R1, R10, port));
    a.push(Op::be16(R1));
    a.push(Op::store(Size::U16, R10, st::TMP2, R1));
    a.push(Op::load(Size::U64, R2, R10, st::TMP));
    a.push(Op::alu64(AluOp::Add, R2, l4_port_off));
    store_from_r2(a, st::TMP2, 2);
}

/// The context after the rewrite (16-byte addresses: an IPv4 one's
/// padding is zero on both sides): the original destination kept, the
/// new end, and the conntrack key's destination for a DNAT.
fn update_context(a: &mut Asm, c: &CtxLayout, end: End, at: (i16, i16), new: (i16, i16)) {
    let ((ctx_addr, ctx_port), (addr, port)) = (at, new);
    if end == End::Dst {
        if let Some(o) = c.orig_dst {
            copy(a, R6, o, R6, c.dst, 16);
        }
        if let Some(o) = c.orig_dport {
            copy(a, R6, o, R6, c.dport, 2);
        }
    }
    copy(a, R6, ctx_addr, R10, addr, 16);
    copy(a, R6, ctx_port, R10, port, 2);
    if let (End::Dst, Some(k)) = (end, c.ct_key) {
        copy(a, R6, k + tuple::DST, R10, addr, 16);
        copy(a, R6, k + tuple::DPORT, R10, port, 2);
    }
}

/// `skb_store_bytes(skb, r2, fp + from, len, 0)`: the offset already in
/// r2 (computed from a saved header offset).
pub(crate) fn store_from_r2(a: &mut Asm, from: i16, len: i32) {
    a.push(Op::mov64(R1, R7));
    a.push(Op::mov64(R3, R10));
    a.push(Op::alu64(AluOp::Add, R3, i32::from(from)));
    a.push(Op::mov64(R4, len));
    a.push(Op::mov64(R5, 0));
    a.push(Op::Call {
        helper: helper::SKB_STORE_BYTES,
    });
}

/// `skb_store_bytes(skb, off, fp + from, len, 0)`.
pub(crate) fn store_bytes(a: &mut Asm, off: i32, from: i16, len: i32) {
    a.push(Op::mov64(R1, R7));
    a.push(Op::mov64(R2, off));
    a.push(Op::mov64(R3, R10));
    a.push(Op::alu64(AluOp::Add, R3, i32::from(from)));
    a.push(Op::mov64(R4, len));
    a.push(Op::mov64(R5, 0));
    a.push(Op::Call {
        helper: helper::SKB_STORE_BYTES,
    });
}

/// Jumps to `skip` unless the context holds a TCP, UDP or SCTP packet of
/// either family (what the TC path translates).
fn guard_tcp_udp(a: &mut Asm, c: &CtxLayout, skip: Label) {
    let ok = a.new_label("lb_l4_ok");
    let family_ok = a.new_label("lb_family_ok");
    a.push(Op::load(Size::U8, R1, R6, c.family));
    a.push(Op::jmp(JmpCond::Eq, R1, 4, family_ok));
    a.push(Op::jmp(JmpCond::Ne, R1, 6, skip));
    a.bind(family_ok);
    a.push(Op::load(Size::U8, R1, R6, c.proto));
    a.push(Op::jmp(JmpCond::Eq, R1, 6, ok));
    a.push(Op::jmp(JmpCond::Eq, R1, IPPROTO_SCTP, ok));
    a.push(Op::jmp(JmpCond::Ne, R1, 17, skip));
    a.bind(ok);
}

/// The packet's tuple at `st::TK` (conntrack key layout).
fn tuple_from_ctx(a: &mut Asm, c: &CtxLayout) {
    copy(a, R10, st::TK + tuple::SRC, R6, c.src, 16);
    copy(a, R10, st::TK + tuple::DST, R6, c.dst, 16);
    copy(a, R10, st::TK + tuple::SPORT, R6, c.sport, 2);
    copy(a, R10, st::TK + tuple::DPORT, R6, c.dport, 2);
    a.push(Op::store(Size::U32, R10, st::TK + tuple::PROTO, 0));
    copy(a, R10, st::TK + tuple::PROTO, R6, c.proto, 1);
    copy(a, R10, st::TK + tuple::FAMILY, R6, c.family, 1);
}

/// Reverse NAT: a reply of a translated flow (its tuple is in
/// `weir_lb_rev`) gets the frontend back as its source, then jumps to
/// `replied`; anything else falls through. Run it on every packet, before
/// conntrack shortcuts (the reply of a translated flow is "established").
pub fn emit_reverse_nat(a: &mut Asm, env: &StageEnv, replied: Label) {
    let not = a.new_label("lb_not_reply");
    guard_tcp_udp(a, &env.ctx, not);
    tuple_from_ctx(a, &env.ctx);
    lookup(a, map::REV, st::TK);
    a.push(Op::jmp(JmpCond::Eq, R0, 0, not));
    copy(a, R10, st::RV, R0, 0, rev::VALUE_SIZE as i16);
    if env.lb_counters {
        count(a, map::CNT, Operand::Imm(cnt::REVERSE as i32));
    }
    emit_rewrite(
        a,
        &env.ctx,
        End::Src,
        st::RV + rev::ADDR,
        st::RV + rev::PORT,
    );
    a.push(Op::Ja { target: replied });
    a.bind(not);
}

/// Reverse NAT of a reply whose frontend the caller found itself (the
/// policy pipeline: in the flow's conntrack entry) and copied to
/// `fp + addr` (16 bytes) and `fp + port` (u16, host order), inside the
/// stage's stack area (e.g. [`st::RV`]): the reply gets it back as its
/// source. A packet other than TCP / UDP / SCTP is left alone.
pub fn emit_reverse_nat_from(a: &mut Asm, env: &StageEnv, addr: i16, port: i16) {
    let not = a.new_label("lb_not_reply");
    guard_tcp_udp(a, &env.ctx, not);
    if env.lb_counters {
        count(a, map::CNT, Operand::Imm(cnt::REVERSE as i32));
    }
    emit_rewrite(a, &env.ctx, End::Src, addr, port);
    a.bind(not);
}

/// The fast path for packets of flows the stage already translated: if
/// the packet's tuple is in `weir_lb_ct`, DNAT it to the recorded backend
/// (context updated, including `ct_key`); otherwise fall through. Meant
/// for the policy pipeline's prologue, before its conntrack lookup, so
/// that an established translated flow matches the (translated) conntrack
/// entry and skips policy. After a translation, jumps to `done` if given,
/// else falls through like on a miss.
pub fn emit_established_dnat(a: &mut Asm, env: &StageEnv, done: Option<Label>) {
    let skip = a.new_label("lb_not_established");
    guard_tcp_udp(a, &env.ctx, skip);
    tuple_from_ctx(a, &env.ctx);
    recorded_translation(a, env, skip);
    dnat(a, env);
    if let Some(d) = done {
        a.push(Op::Ja { target: d });
    }
    a.bind(skip);
}

/// DNAT of a packet of a translated flow whose backend the caller found
/// itself (the policy pipeline: in the flow's forward entry in
/// `weir_ct`) and copied to `st::CTV` ([`be`] layout: address and port),
/// with the service index at `st::FEV + fe::SERVICE`: context updated
/// as [`emit_established_dnat`] does (original destination, service,
/// conntrack key). Only for TCP / UDP / SCTP packets (a forward entry's
/// protocol).
pub fn emit_recorded_dnat(a: &mut Asm, env: &StageEnv) {
    dnat(a, env);
}

/// The flow's recorded translation (`weir_lb_ct`, key at `st::TK`): its
/// backend to `st::CTV`, its service to `st::FEV`, counted; `miss` when
/// there is none.
fn recorded_translation(a: &mut Asm, env: &StageEnv, miss: Label) {
    lookup(a, map::CT, st::TK);
    a.push(Op::jmp(JmpCond::Eq, R0, 0, miss));
    copy(a, R10, st::CTV, R0, 0, ct::VALUE_SIZE as i16);
    if env.lb_counters {
        count(a, map::CNT, Operand::Imm(cnt::ESTABLISHED as i32));
    }
    copy(a, R10, st::FEV + fe::SERVICE, R10, st::CTV + ct::SERVICE, 4);
}

/// DNAT to the backend at `st::CTV`, service at `st::FEV`.
fn dnat(a: &mut Asm, env: &StageEnv) {
    emit_rewrite(
        a,
        &env.ctx,
        End::Dst,
        st::CTV + be::ADDR,
        st::CTV + be::PORT,
    );
    if let Some(o) = env.ctx.service {
        a.push(Op::load(Size::U32, R1, R10, st::FEV + fe::SERVICE));
        a.push(Op::alu64(AluOp::Add, R1, 1));
        a.push(Op::store(Size::U32, R6, o, R1));
    }
}

/// The service stage (see the module docs). Falls through to nothing:
/// always ends in a jump to `env.cont` or `env.drop`.
pub fn emit_service_stage(a: &mut Asm, env: &StageEnv) {
    let c = &env.ctx;
    let new = a.new_label("lb_new_flow");
    let dnat_label = a.new_label("lb_dnat");
    let no_backends = a.new_label("lb_no_backends");
    let missing = a.new_label("lb_missing");

    guard_tcp_udp(a, c, env.cont);
    tuple_from_ctx(a, c);
    if !c.established_checked {
        // A translated flow keeps its backend.
        recorded_translation(a, env, new);
        a.push(Op::Ja { target: dnat_label });
    }

    // New flow: frontend?
    a.bind(new);
    frontend_key_from_tuple(a);
    lookup(a, map::FE, st::FEK);
    a.push(Op::jmp(JmpCond::Eq, R0, 0, env.cont));
    copy(a, R10, st::FEV, R0, 0, fe::SIZE as i16);
    a.push(Op::load(Size::U32, R1, R10, st::FEV + fe::COUNT));
    a.push(Op::jmp(JmpCond::Eq, R1, 0, no_backends));
    emit_choose(a, missing);
    copy(a, R10, st::CTV + ct::SERVICE, R10, st::FEV + fe::SERVICE, 4);
    a.push(Op::store(Size::U32, R10, st::CTV + ct::SERVICE + 4, 0));
    if let Some((state, value)) = c.lb_pending {
        // The caller writes the state once the packet is allowed.
        copy(a, R6, value, R10, st::CTV, ct::TS);
        a.push(Op::store(
            Size::U32,
            R6,
            state,
            crate::ebpf::layout::LB_PENDING,
        ));
    } else {
        // Remember the flow (client → frontend) and its reply (backend →
        // client).
        a.push(Op::Call {
            helper: helper::KTIME_GET_NS,
        });
        a.push(Op::store(Size::U64, R10, st::CTV + ct::TS, R0));
        update(a, map::CT, st::TK, st::CTV);
        copy(a, R10, st::RK + tuple::SRC, R10, st::CTV + be::ADDR, 16);
        copy(a, R10, st::RK + tuple::DST, R10, st::TK + tuple::SRC, 16);
        copy(a, R10, st::RK + tuple::SPORT, R10, st::CTV + be::PORT, 2);
        copy(a, R10, st::RK + tuple::DPORT, R10, st::TK + tuple::SPORT, 2);
        copy(a, R10, st::RK + tuple::PROTO, R10, st::TK + tuple::PROTO, 4);
        copy(a, R10, st::RV + rev::ADDR, R10, st::TK + tuple::DST, 16);
        copy(a, R10, st::RV + rev::PORT, R10, st::TK + tuple::DPORT, 2);
        a.push(Op::store(Size::U16, R10, st::RV + rev::FAMILY, 0));
        copy(a, R10, st::RV + rev::FAMILY, R10, st::TK + tuple::FAMILY, 1);
        copy(a, R10, st::RV + rev::SERVICE, R10, st::FEV + fe::SERVICE, 4);
        update(a, map::REV, st::RK, st::RV);
    }
    count_flow(a);
    if env.lb_counters {
        count(a, map::CNT, Operand::Imm(cnt::TRANSLATED as i32));
    }

    a.bind(dnat_label);
    dnat(a, env);
    a.push(Op::Ja { target: env.cont });

    // No usable backend: reject (counted, then `rejected`: the policy
    // pipeline answers TCP with a reset; otherwise dropped).
    a.bind(no_backends);
    match &env.reject {
        RejectCount::LbCounter => count(a, map::CNT, Operand::Imm(cnt::NO_BACKENDS as i32)),
        RejectCount::Provenance(m) => {
            a.push(Op::load(Size::U32, R3, R10, st::FEV + fe::NO_BACKENDS));
            count(a, m, Operand::Reg(R3));
        }
    }
    a.push(Op::Ja {
        target: env.rejected.unwrap_or(env.drop),
    });

    a.bind(missing);
    count(a, map::CNT, Operand::Imm(cnt::MISSING as i32));
    a.push(Op::Ja { target: env.drop });
}
