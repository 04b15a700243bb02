//! IPv4-mapped destinations at connect time: an IPv6 socket (not
//! `IPV6_V6ONLY`) that connects or sends to `::ffff:a.b.c.d` talks IPv4
//! on the wire, to `a.b.c.d` (RFC 4291 §2.5.5.2, RFC 3493 §3.7). Such a
//! destination is balanced like the IPv4 frontend `a.b.c.d`
//! (docs/language.md §4, "IPv4-mapped destinations"): `connect6` /
//! `sendmsg6` look up and hash the IPv4 tuple (family 4, the bound
//! source unmapped too: `::ffff:x` → `x`, anything else → unspecified),
//! choose from the frontend's IPv4 backend set, and write the backend
//! back mapped, `::ffff:BACKEND`. A UDP socket's `weir_lb_sk` entry is
//! the IPv4 one (backend and frontend unmapped, family 4) — what
//! `sendmsg4` records too, as the kernel hands an unconnected IPv6
//! socket's datagram to a mapped destination to the IPv4 `sendmsg` path
//! and its hook — and `recvmsg6` looks a mapped source up unmapped and
//! reports the frontend mapped again.
//!
//! The stack slot below is past the service stage's area
//! ([`super::emit::STACK_BOTTOM`]); only the connect-time programs use
//! it.
//!
//! (IPv4-mapped addresses never appear on the wire, RFC 4291 §2.5.5.2:
//! the TC path sees such a socket's IPv4 packets and needs nothing.)

use crate::ebpf::{Asm, JmpCond, Op, Reg, Size};

use super::emit::st;
use super::layout::tuple;
use Reg::*;

/// 1 when the destination (or `recvmsg6`'s source) is IPv4-mapped (u64).
pub const FLAG: i16 = -440;
const _: () = assert!(FLAG + 8 <= super::emit::STACK_BOTTOM);

/// The third address word of `::ffff:0:0/96` as loaded from memory
/// (bytes `00 00 ff ff`, little-endian load).
const MAPPED_WORD: i32 = 0xffff_0000_u32 as i32;

/// Jumps to `no` unless the 16-byte address at `base + off` is
/// IPv4-mapped (32-bit compares).
fn unless_mapped(a: &mut Asm, base: Reg, off: i16, no: crate::ebpf::Label) {
    a.push(Op::load(Size::U64, R1, base, off));
    a.push(Op::jmp(JmpCond::Ne, R1, 0, no));
    a.push(Op::load(Size::U32, R1, base, off + 8));
    a.push(Op::jmp32(JmpCond::Ne, R1, MAPPED_WORD, no));
}

/// For the IPv6 hooks, after the tuple at `st::TK` was built from the
/// socket address (family 6): if the destination is IPv4-mapped, turns the tuple into the IPv4 one (destination and
/// bound source unmapped, family 4) and sets [`FLAG`].
pub fn unmap_tuple(a: &mut Asm) {
    let done = a.new_label("mapped_done");
    let src_other = a.new_label("mapped_src_other");
    let src_done = a.new_label("mapped_src_done");
    a.push(Op::store(Size::U64, R10, FLAG, 0));
    unless_mapped(a, R10, st::TK + tuple::DST, done);
    a.push(Op::store(Size::U64, R10, FLAG, 1));
    a.push(Op::load(Size::U32, R1, R10, st::TK + tuple::DST + 12));
    a.push(Op::store(Size::U64, R10, st::TK + tuple::DST, 0));
    a.push(Op::store(Size::U64, R10, st::TK + tuple::DST + 8, 0));
    a.push(Op::store(Size::U32, R10, st::TK + tuple::DST, R1));
    // The bound source: `::ffff:x` is `x`; the unspecified address or a
    // real IPv6 one (which cannot reach an IPv4 destination) is 0.
    unless_mapped(a, R10, st::TK + tuple::SRC, src_other);
    a.push(Op::load(Size::U32, R2, R10, st::TK + tuple::SRC + 12));
    a.push(Op::Ja { target: src_done });
    a.bind(src_other);
    a.push(Op::mov64(R2, 0));
    a.bind(src_done);
    a.push(Op::store(Size::U64, R10, st::TK + tuple::SRC, 0));
    a.push(Op::store(Size::U64, R10, st::TK + tuple::SRC + 8, 0));
    a.push(Op::store(Size::U32, R10, st::TK + tuple::SRC, R2));
    a.push(Op::store(Size::U8, R10, st::TK + tuple::FAMILY, 4));
    a.bind(done);
}

/// Writes the 16-byte address at `base + off` to `user_ip6` at
/// `ctx + user_ip`: mapped (`::ffff:` and its first word) when [`FLAG`]
/// is set, else as it is. Uses r1.
pub fn write_user_ip6(a: &mut Asm, user_ip: i16, base: Reg, off: i16) {
    let plain = a.new_label("mapped_plain");
    let done = a.new_label("mapped_written");
    a.push(Op::load(Size::U64, R1, R10, FLAG));
    a.push(Op::jmp(JmpCond::Eq, R1, 0, plain));
    a.push(Op::store(Size::U32, R6, user_ip, 0));
    a.push(Op::store(Size::U32, R6, user_ip + 4, 0));
    a.push(Op::store(Size::U32, R6, user_ip + 8, MAPPED_WORD));
    a.push(Op::load(Size::U32, R1, base, off));
    a.push(Op::store(Size::U32, R6, user_ip + 12, R1));
    a.push(Op::Ja { target: done });
    a.bind(plain);
    for w in 0..4 {
        a.push(Op::load(Size::U32, R1, base, off + 4 * w));
        a.push(Op::store(Size::U32, R6, user_ip + 4 * w, R1));
    }
    a.bind(done);
}

/// `recvmsg6`: if the `weir_lb_sk` key's address (at `fp + key + addr`,
/// family at `fp + key + family`) is IPv4-mapped, makes it the IPv4 key
/// `connect6` / `sendmsg4` recorded (address unmapped, family 4) and sets
/// [`FLAG`]; else clears it.
pub fn unmap_sk_key(a: &mut Asm, addr: i16, family: i16) {
    let done = a.new_label("mapped_key_done");
    a.push(Op::store(Size::U64, R10, FLAG, 0));
    unless_mapped(a, R10, addr, done);
    a.push(Op::store(Size::U64, R10, FLAG, 1));
    a.push(Op::load(Size::U32, R1, R10, addr + 12));
    a.push(Op::store(Size::U64, R10, addr, 0));
    a.push(Op::store(Size::U64, R10, addr + 8, 0));
    a.push(Op::store(Size::U32, R10, addr, R1));
    a.push(Op::store(Size::U16, R10, family, 4));
    a.bind(done);
}
