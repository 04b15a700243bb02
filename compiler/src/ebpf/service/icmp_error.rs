//! ICMP errors about service flows, one implementation for both TC
//! programs that translate: the policy pipeline's related-error check
//! (`codegen::emit::related`, docs/language.md §4 step 1, keyed by its
//! `weir_ct` entry) and the standalone service program
//! ([`super::object::tc_program`], keyed by its reverse-NAT table
//! `weir_lb_rev`). What is shared: reading the error's quote into the
//! quoted packet's conntrack key, and the reverse NAT of an error quoting
//! a packet a translated flow's client sent, or of an error about the
//! flow's reply on its way to the backend (as Linux's
//! `nf_nat_icmp_reply_translation`; the rewrite is documented on
//! [`reverse_nat_error`], the direction is [`Toward`]). Each caller finds the flow its own way and
//! puts the frontend at [`FE`].
//!
//! The quote is read with `bpf_skb_load_bytes` — the quoted IP header
//! (IPv4: its first 20 bytes, options skipped by its IHL; IPv6: the fixed
//! 40, no extension headers walked) and the 8 bytes after it. A quote
//! that cannot be read (too short, another family, a non-first fragment,
//! IPv6 extension headers), or an error not addressed to the quoted
//! packet's sender (Linux's `nf_conntrack_inet_error`), is not related.

use crate::ebpf::layout::{ct as ctl, ctx};
use crate::ebpf::service::emit::{store_from_r2, BPF_F_IPV6, BPF_F_PSEUDO_HDR};
use crate::ebpf::{helper, AluOp, Asm, JmpCond, Label, Op, Operand, Reg, Size};
use crate::interp::related::{ICMP4_ERRORS, ICMP6_ERRORS_BELOW};

use Reg::*;

/// Stack: the quote as read ([`OLD`]) and as rewritten ([`NEW`]): the
/// quoted IP header (IPv4: its first 20 bytes; IPv6: 40) and the 8 bytes
/// after it, 48 bytes at most each; the entry's frontend (address 16,
/// port u16 host order); a scratch word. In the service stage's area
/// (free in the prologue), clear of `REV_FRONTEND`.
pub const OLD: i16 = -232;
pub const NEW: i16 = -280;
pub const FE: i16 = -304;
/// The direction of the rewrite ([`Toward`], a byte): between `FE`'s
/// 18 bytes and [`NEW`].
pub const DIR: i16 = -284;
pub const SCRATCH: i16 = -312;

/// IPv6 next-header values the quote's parse does not walk (the
/// extension headers of `codegen::parse`).
const EXTENSIONS: [i32; 5] = [0, 43, 44, 60, 51];

/// One family's offsets.
#[derive(Clone, Copy)]
pub struct Fam {
    pub v6: bool,
    /// Quoted header bytes read (and the offset of the 8 after it in the
    /// stack copies).
    pub hlen: i16,
    /// Source and destination address in an IP header, and their length.
    pub src: i16,
    pub dst: i16,
    pub alen: i16,
    /// The protocol / next-header byte in the IP header.
    pub proto: i16,
}

pub const V4: Fam = Fam {
    v6: false,
    hlen: 20,
    src: 12,
    dst: 16,
    alen: 4,
    proto: 9,
};
pub const V6: Fam = Fam {
    v6: true,
    hlen: 40,
    src: 8,
    dst: 24,
    alen: 16,
    proto: 6,
};

/// Which way a related error about a translated flow (client →
/// frontend, DNATed to a backend) travels, and so what it is rewritten to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(i32)]
pub enum Toward {
    /// Back to the client, quoting a packet the client sent (client →
    /// backend on the wire): the quote's destination becomes the
    /// frontend, and the error's source too when the backend sent it.
    Client = 0,
    /// To the backend, quoting a reply as the client got it (frontend →
    /// client, after the reply's reverse NAT): the quote's source becomes
    /// the backend (the reply as the backend sent it) and the error's
    /// destination, the frontend, becomes the backend.
    Backend = 1,
}

/// The direction for [`reverse_nat_error`] (a byte at [`DIR`]): it reads
/// it at run time, so that one instance per family serves both.
pub fn set_toward(a: &mut Asm, toward: Toward) {
    a.push(Op::store(Size::U8, R10, DIR, toward as i32));
}

/// Falls through when the packet (of `f`'s ICMP, `ctx::ICMP_TYPE` set by
/// the parse) is an error type Linux conntrack relates
/// ([`crate::interp::related`]), else jumps to `not`.
pub fn error_type(a: &mut Asm, f: Fam, not: Label) {
    let is_error = a.new_label("icmp_error");
    a.push(Op::load(Size::U8, R1, R6, ctx::ICMP_TYPE));
    if f.v6 {
        a.push(Op::jmp(JmpCond::Ge, R1, i32::from(ICMP6_ERRORS_BELOW), not));
    } else {
        for t in ICMP4_ERRORS {
            a.push(Op::jmp(JmpCond::Eq, R1, i32::from(t), is_error));
        }
        a.push(Op::Ja { target: not });
    }
    a.bind(is_error);
}

/// The error's quote read to [`OLD`] and the quoted packet's conntrack
/// key built in `ctx::CT_KEY` (see the module docs); r8 = the frame
/// offset of the outer ICMP header, r9 = of what follows the quoted IP
/// header. Jumps to `not` when it cannot be read or is not addressed to
/// the quoted packet's sender.
pub fn read_quote(a: &mut Asm, f: Fam, not: Label) {
    icmp_offset_to_r8(a, f);
    // The quoted IP header.
    load_bytes(a, R8, 8, OLD, f.hlen);
    a.push(Op::jmp(JmpCond::Ne, R0, 0, not));
    a.push(Op::load(Size::U8, R1, R10, OLD));
    a.push(Op::mov64(R2, R1));
    a.push(Op::alu64(AluOp::Rsh, R2, 4));
    a.push(Op::jmp(JmpCond::Ne, R2, if f.v6 { 6 } else { 4 }, not));
    // r9: the frame offset of what follows the quoted header.
    a.push(Op::mov64(R9, R8));
    if f.v6 {
        a.push(Op::alu64(AluOp::Add, R9, 8 + 40));
        a.push(Op::load(Size::U8, R1, R10, OLD + f.proto));
        for h in EXTENSIONS {
            a.push(Op::jmp(JmpCond::Eq, R1, h, not));
        }
    } else {
        a.push(Op::alu64(AluOp::And, R1, 15));
        a.push(Op::jmp(JmpCond::Lt, R1, 5, not));
        a.push(Op::alu64(AluOp::Lsh, R1, 2));
        a.push(Op::alu64(AluOp::Add, R9, R1));
        a.push(Op::alu64(AluOp::Add, R9, 8));
        // A non-first fragment quotes no transport header.
        a.push(Op::load(Size::U16, R1, R10, OLD + 6));
        a.push(Op::be16(R1));
        a.push(Op::alu64(AluOp::And, R1, 0x1fff));
        a.push(Op::jmp(JmpCond::Ne, R1, 0, not));
    }
    load_bytes(a, R9, 0, OLD + f.hlen, 8);
    a.push(Op::jmp(JmpCond::Ne, R0, 0, not));
    quoted_key(a, f, not);
}

/// r8 = the frame offset of the outer ICMP header (IPv4: 14 + IHL ×
/// 4; IPv6: past the parse's extension headers).
fn icmp_offset_to_r8(a: &mut Asm, f: Fam) {
    if f.v6 {
        let have = a.new_label("icmp6_off");
        a.push(Op::load(Size::U16, R8, R6, ctx::PARSE_OFF));
        a.push(Op::jmp(JmpCond::Ne, R8, 0, have));
        a.push(Op::mov64(R8, 54));
        a.bind(have);
    } else {
        a.push(Op::store(Size::U64, R10, SCRATCH, 0));
        a.push(Op::mov64(R8, 14));
        load_bytes(a, R8, 0, SCRATCH, 1);
        a.push(Op::load(Size::U8, R8, R10, SCRATCH));
        a.push(Op::alu64(AluOp::And, R8, 15));
        a.push(Op::alu64(AluOp::Lsh, R8, 2));
        a.push(Op::alu64(AluOp::Add, R8, 14));
    }
}

/// `ctx::CT_KEY` = the quoted packet's conntrack key (source first;
/// ports for TCP / UDP / SCTP, else 0); jumps to `not` unless the
/// error is addressed to the quoted packet's source.
fn quoted_key(a: &mut Asm, f: Fam, not: Label) {
    use ctl as ct;
    let k = ctx::CT_KEY;
    for i in 0..5i16 {
        a.push(Op::store(Size::U64, R6, k + 8 * i, 0));
    }
    for i in 0..f.alen / 4 {
        a.push(Op::load(Size::U32, R1, R10, OLD + f.src + 4 * i));
        a.push(Op::store(Size::U32, R6, k + ct::SRC + 4 * i, R1));
        a.push(Op::load(Size::U32, R1, R10, OLD + f.dst + 4 * i));
        a.push(Op::store(Size::U32, R6, k + ct::DST + 4 * i, R1));
    }
    a.push(Op::load(Size::U8, R1, R10, OLD + f.proto));
    a.push(Op::store(Size::U8, R6, k + ct::PROTO, R1));
    a.push(Op::store(
        Size::U8,
        R6,
        k + ct::FAMILY,
        if f.v6 { 6 } else { 4 },
    ));
    let (ports, no_ports) = (a.new_label("quote_ports"), a.new_label("quote_no_ports"));
    for p in [6, 17, 132] {
        a.push(Op::jmp(JmpCond::Eq, R1, p, ports));
    }
    a.push(Op::Ja { target: no_ports });
    a.bind(ports);
    for (to, from) in [(ct::SPORT, 0i16), (ct::DPORT, 2)] {
        a.push(Op::load(Size::U16, R1, R10, OLD + f.hlen + from));
        a.push(Op::be16(R1));
        a.push(Op::store(Size::U16, R6, k + to, R1));
    }
    a.bind(no_ports);
    for w in [0i16, 8] {
        a.push(Op::load(Size::U64, R1, R6, ctx::DST + w));
        a.push(Op::load(Size::U64, R2, R6, k + ct::SRC + w));
        a.push(Op::jmp(JmpCond::Ne, R1, R2, not));
    }
}

/// The error, about a packet a translated flow's client sent, on its way
/// back to that client (after [`read_quote`]; the frontend at `fp + FE`,
/// the outer ICMP header at r8, the bytes after the quoted header at r9),
/// as Linux's `nf_nat_icmp_reply_translation`: the quote's destination
/// address and port become the frontend's, the quoted IPv4 header
/// checksum is updated, the quoted L4 checksum too where Linux updates it
/// (UDP when non-zero, inside the 8 quoted bytes; TCP only when the frame
/// holds the quoted TCP header's checksum field, beyond the 8 bytes RFC
/// 792 guarantees; SCTP none: CRC32c has no pseudo-header and the port
/// does not change), and the ICMP / ICMPv6 checksum takes the difference
/// of every changed byte. The outer source becomes the frontend when it
/// is the backend itself (the backend sent the error); an error from a
/// router on the way keeps its source (Linux rewrites that one too; the
/// client matches an error by its quote, not by its sender).
///
/// [`Toward::Backend`] (the direction at [`DIR`], [`set_toward`]), an
/// error about the flow's reply (the backend at `fp + FE`): the quote's
/// source address and port become the backend's, with the same
/// checksums, and the error's destination (the frontend) becomes the
/// backend.
pub fn reverse_nat_error(a: &mut Asm, f: Fam) {
    let n = f.hlen + 8;
    // The checksummed bytes that can change: both addresses and both
    // ports (an unchanged byte adds nothing to a difference), so one
    // instance serves both directions.
    let (first, span) = (f.src, f.hlen + 4 - f.src);
    for off in (0..n).step_by(4) {
        a.push(Op::load(Size::U32, R1, R10, OLD + off));
        a.push(Op::store(Size::U32, R10, NEW + off, R1));
    }
    // The quoted destination becomes the frontend (toward the client),
    // the quoted source the backend (toward the backend).
    let (to_backend, written) = (
        a.new_label("quote_to_backend"),
        a.new_label("quote_written"),
    );
    a.push(Op::load(Size::U8, R1, R10, DIR));
    a.push(Op::jmp(JmpCond::Eq, R1, Toward::Backend as i32, to_backend));
    for (addr, port, done) in [(f.dst, f.hlen + 2, Some(written)), (f.src, f.hlen, None)] {
        for i in 0..f.alen / 4 {
            a.push(Op::load(Size::U32, R1, R10, FE + 4 * i));
            a.push(Op::store(Size::U32, R10, NEW + addr + 4 * i, R1));
        }
        a.push(Op::load(Size::U16, R1, R10, FE + 16));
        a.push(Op::be16(R1));
        a.push(Op::store(Size::U16, R10, NEW + port, R1));
        if let Some(d) = done {
            a.push(Op::Ja { target: d });
            a.bind(to_backend);
        }
    }
    a.bind(written);
    if !f.v6 {
        // The quoted IPv4 header's checksum (its two addresses).
        checksum_update(a, NEW + 10, OLD + f.src, NEW + f.src, 8);
        a.push(Op::store(Size::U16, R10, NEW + 10, R0));
    }
    // The quoted UDP checksum (pseudo-header address and the port),
    // unless zero (none).
    let (not_udp, l4_done) = (a.new_label("quote_not_udp"), a.new_label("quote_l4_done"));
    a.push(Op::load(Size::U8, R1, R10, OLD + f.proto));
    a.push(Op::jmp(JmpCond::Ne, R1, 17, not_udp));
    a.push(Op::load(Size::U16, R1, R10, OLD + f.hlen + 6));
    a.push(Op::jmp(JmpCond::Eq, R1, 0, l4_done));
    checksum_update(a, OLD + f.hlen + 6, OLD + first, NEW + first, span);
    let nonzero = a.new_label("udp_csum_nonzero");
    a.push(Op::jmp(JmpCond::Ne, R0, 0, nonzero));
    a.push(Op::mov64(R0, 0xffff));
    a.bind(nonzero);
    a.push(Op::store(Size::U16, R10, NEW + f.hlen + 6, R0));
    a.bind(not_udp);
    a.bind(l4_done);

    // The ICMP checksum: the difference of the whole quote.
    csum_diff(a, (R10, OLD), (R10, NEW), n, None);
    a.push(Op::mov64(R3, 0));
    a.push(Op::mov64(R4, R0));
    l4_csum_replace(a, 0, 0);
    store_bytes(a, R8, 8, NEW, f.hlen);
    store_bytes(a, R9, 0, NEW + f.hlen, 8);

    // TCP: its checksum only when the frame holds it (beyond the 8
    // bytes), as Linux's `tcp_manip_pkt`.
    let not_tcp = a.new_label("quote_not_tcp");
    a.push(Op::load(Size::U8, R1, R10, OLD + f.proto));
    a.push(Op::jmp(JmpCond::Ne, R1, 6, not_tcp));
    a.push(Op::store(Size::U64, R10, SCRATCH, 0));
    load_bytes(a, R9, 16, SCRATCH, 4);
    a.push(Op::jmp(JmpCond::Ne, R0, 0, not_tcp));
    checksum_update(a, SCRATCH, OLD + first, NEW + first, span);
    a.push(Op::store(Size::U16, R10, SCRATCH + 2, R0));
    a.push(Op::load(Size::U16, R3, R10, SCRATCH));
    a.push(Op::load(Size::U16, R4, R10, SCRATCH + 2));
    l4_csum_replace(a, 2, 0);
    store_bytes(a, R9, 16, SCRATCH + 2, 2);
    a.bind(not_tcp);

    // The outer address: toward the backend, the destination; toward
    // the client, the source when the backend itself sent the error.
    let (keep_src, client) = (
        a.new_label("error_src_kept"),
        a.new_label("error_to_client"),
    );
    a.push(Op::load(Size::U8, R1, R10, DIR));
    a.push(Op::jmp(JmpCond::Ne, R1, Toward::Backend as i32, client));
    outer_destination(a, f);
    a.push(Op::Ja { target: keep_src });
    a.bind(client);
    for i in 0..f.alen / 4 {
        a.push(Op::load(Size::U32, R1, R6, ctx::SRC + 4 * i));
        a.push(Op::load(Size::U32, R2, R10, OLD + f.dst + 4 * i));
        a.push(Op::jmp(JmpCond::Ne, R1, R2, keep_src));
    }
    // ICMPv6's checksum covers the pseudo-header's source.
    outer_address(a, f, ctx::SRC, (14 + 8, 14 + 12), "error_src_csum6");
    a.bind(keep_src);
}

/// The error's own destination (the frontend, the quoted source) becomes
/// the backend at `fp + FE`, as the flow's packets to the frontend are
/// DNATed: the IPv4 header checksum, or the ICMPv6 checksum's
/// pseudo-header, follows.
fn outer_destination(a: &mut Asm, f: Fam) {
    outer_address(a, f, ctx::DST, (14 + 24, 14 + 16), "error_dst_csum6");
}

/// The error's outer address in the context at `field` (`ctx::SRC` or
/// `ctx::DST`) becomes `fp + FE`, stored at the frame offset `at` (IPv6,
/// IPv4): the IPv4 header checksum follows, or the ICMPv6 checksum, whose
/// pseudo-header covers both addresses.
fn outer_address(a: &mut Asm, f: Fam, field: i16, at: (i32, i32), label: &str) {
    if f.v6 {
        csum_diff(a, (R6, field), (R10, FE), 16, None);
        a.push(Op::store(Size::U64, R10, SCRATCH, R0));
        let replaced = a.new_label(label);
        for flags in [BPF_F_PSEUDO_HDR | BPF_F_IPV6, BPF_F_PSEUDO_HDR] {
            a.push(Op::mov64(R3, 0));
            a.push(Op::load(Size::U64, R4, R10, SCRATCH));
            l4_csum_replace(a, 0, flags);
            // A kernel before 6.16 refuses `BPF_F_IPV6`.
            a.push(Op::jmp(JmpCond::Eq, R0, 0, replaced));
        }
        a.bind(replaced);
        store_bytes_at(a, at.0, FE, 16);
    } else {
        a.push(Op::mov64(R1, R7));
        a.push(Op::mov64(R2, 14 + 10));
        a.push(Op::load(Size::U32, R3, R6, field));
        a.push(Op::load(Size::U32, R4, R10, FE));
        a.push(Op::mov64(R5, 4));
        a.push(Op::Call {
            helper: helper::L3_CSUM_REPLACE,
        });
        store_bytes_at(a, at.1, FE, 4);
    }
}

/// `fp + to` (40 bytes, the conntrack key layout) = the quoted packet's
/// key (`ctx::CT_KEY`, after [`read_quote`]) reversed: the tuple of the
/// packet that went the other way. For a quoted client packet (client →
/// backend), the flow's reply tuple (`weir_lb_rev`'s key); for a quoted
/// reply as the client got it (frontend → client), the flow's tuple as
/// the client sent it (`weir_lb_ct`'s key).
pub fn reversed_quote_key(a: &mut Asm, to: i16) {
    use crate::ebpf::service::emit::copy;
    for (at, from, len) in [
        (ctl::SRC, ctl::DST, 16),
        (ctl::DST, ctl::SRC, 16),
        (ctl::SPORT, ctl::DPORT, 2),
        (ctl::DPORT, ctl::SPORT, 2),
        (ctl::PROTO, ctl::PROTO, 4),
    ] {
        copy(a, R10, to + at, R6, ctx::CT_KEY + from, len);
    }
}

/// `r0 = bpf_skb_load_bytes(skb, base + off, fp + to, len)`.
fn load_bytes(a: &mut Asm, base: Reg, off: i32, to: i16, len: i16) {
    a.push(Op::mov64(R2, base));
    a.push(Op::alu64(AluOp::Add, R2, off));
    a.push(Op::mov64(R1, R7));
    a.push(Op::mov64(R3, R10));
    a.push(Op::alu64(AluOp::Add, R3, i32::from(to)));
    a.push(Op::mov64(R4, i32::from(len)));
    a.push(Op::Call {
        helper: helper::SKB_LOAD_BYTES,
    });
}

/// `bpf_skb_store_bytes(skb, base + off, fp + from, len, 0)`.
fn store_bytes(a: &mut Asm, base: Reg, off: i32, from: i16, len: i16) {
    a.push(Op::mov64(R2, base));
    a.push(Op::alu64(AluOp::Add, R2, off));
    store_from_r2(a, from, i32::from(len));
}

/// `bpf_skb_store_bytes(skb, off, fp + from, len, 0)`.
fn store_bytes_at(a: &mut Asm, off: i32, from: i16, len: i16) {
    a.push(Op::mov64(R2, off));
    store_from_r2(a, from, i32::from(len));
}

/// `r0 = bpf_csum_diff(from, len, to, len, seed)` (`seed`: a register
/// other than r1–r4, or 0).
fn csum_diff(a: &mut Asm, from: (Reg, i16), to: (Reg, i16), len: i16, seed: Option<Reg>) {
    a.push(Op::mov64(R5, seed.map_or(Operand::Imm(0), Operand::Reg)));
    a.push(Op::mov64(R1, from.0));
    a.push(Op::alu64(AluOp::Add, R1, i32::from(from.1)));
    a.push(Op::mov64(R2, i32::from(len)));
    a.push(Op::mov64(R3, to.0));
    a.push(Op::alu64(AluOp::Add, R3, i32::from(to.1)));
    a.push(Op::mov64(R4, i32::from(len)));
    a.push(Op::Call {
        helper: helper::CSUM_DIFF,
    });
}

/// `bpf_l4_csum_replace(skb, r8 + 2, r3, r4, size | flags)`: the outer
/// ICMP / ICMPv6 checksum (size 0: r4 is a difference).
fn l4_csum_replace(a: &mut Asm, size: i32, flags: i32) {
    a.push(Op::mov64(R1, R7));
    a.push(Op::mov64(R2, R8));
    a.push(Op::alu64(AluOp::Add, R2, 2));
    a.push(Op::mov64(R5, size | flags));
    a.push(Op::Call {
        helper: helper::L4_CSUM_REPLACE,
    });
}

/// r0 = the 16-bit checksum at `fp + check` (native order, as stored)
/// updated for the `len` bytes at `fp + old` becoming those at
/// `fp + new` (RFC 1624: ~(~C + ~m + m')), in the same order.
fn checksum_update(a: &mut Asm, check: i16, old: i16, new: i16, len: i16) {
    a.push(Op::load(Size::U16, R5, R10, check));
    a.push(Op::alu64(AluOp::Xor, R5, 0xffff));
    csum_diff(a, (R10, old), (R10, new), len, Some(R5));
    // The 32-bit sum folded to 16 bits, then complemented.
    a.push(Op::mov32(R0, R0));
    fold_complement(a);
}

/// `r0` (a 32-bit one's-complement sum) folded to 16 bits, twice (a
/// carry of the first fold folds in the second), then complemented: the
/// checksum field's value (RFC 1071). Uses `r1`.
pub fn fold_complement(a: &mut Asm) {
    for _ in 0..2 {
        a.push(Op::mov64(R1, R0));
        a.push(Op::alu64(AluOp::Rsh, R1, 16));
        a.push(Op::alu64(AluOp::And, R0, 0xffff));
        a.push(Op::alu64(AluOp::Add, R0, R1));
    }
    a.push(Op::alu64(AluOp::Xor, R0, 0xffff));
}
