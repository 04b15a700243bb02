//! The rewritten address and port written into the packet with direct
//! packet access, not `bpf_skb_store_bytes` (issue 21: the service stage's
//! cost).
//!
//! Why: a DNAT or reverse NAT wrote two fields with two helper calls,
//! each of which makes the skb writable again and recomputes the data
//! pointers; the checksum helpers before them
//! ([`super::emit::emit_rewrite`]) have already made the headers up to the
//! L4 checksum writable (`skb_ensure_writable`), and the verifier
//! unclones a cloned skb in the program's prologue once a program writes
//! the packet directly. So after the last checksum helper (which
//! invalidates packet pointers) the program reloads `data` / `data_end`,
//! checks the bounds and stores the address and the port with plain
//! stores: the same bytes, no calls.
//!
//! Checksums are unchanged: they stay with the helpers, which alone know
//! the skb's `ip_summed` (a `CHECKSUM_PARTIAL` packet's L4 checksum field
//! holds the pseudo-header sum, and a port change must not touch it).
//! A field beyond the linear data (a header in a fragment page: the
//! bounds check fails) is written with `bpf_skb_store_bytes` as before.

use crate::ebpf::layout::skb;
use crate::ebpf::{AluOp, Asm, JmpCond, Op, Reg, Size};

use super::emit::{st, store_bytes, store_port_bytes, CtxLayout};
use Reg::*;

/// Largest transport-header offset the parse leaves (its IPv6
/// extension-header walk's bound); a bound the verifier needs for the
/// variable-offset store.
const MAX_L4_OFFSET: i32 = 16383;

/// `r2` = `skb->data`, `r3` = `skb->data_end` (after a helper that may
/// have moved them).
fn data_pointers(a: &mut Asm) {
    a.push(Op::load(Size::U32, R2, R7, skb::DATA));
    a.push(Op::load(Size::U32, R3, R7, skb::DATA_END));
}

/// Stores the address at `fp + at.0` (16 bytes, network order; IPv4 in
/// the first 4) at its header offset `ip_off` (IPv4, IPv6) and the port
/// (u16 host order) at `fp + at.1` at `l4_port_off` past the transport
/// offset in `st::TMP`, into the packet in `r7` of the context's family.
/// Uses r1–r4.
pub(crate) fn store_ends(
    a: &mut Asm,
    c: &CtxLayout,
    ip_off: (i32, i32),
    at: (i16, i16),
    l4_port_off: i32,
) {
    let (v4_ip_off, v6_ip_off) = ip_off;
    let (addr, port) = at;
    let v6 = a.new_label("st_addr6");
    let port_direct = a.new_label("st_port");
    let slow = a.new_label("st_slow");
    let slow_port = a.new_label("st_slow_port");
    let done = a.new_label("st_done");
    // The address.
    a.push(Op::load(Size::U8, R1, R6, c.family));
    a.push(Op::jmp(JmpCond::Eq, R1, 6, v6));
    for (family_at, off, len) in [(None, v4_ip_off, 4i16), (Some(v6), v6_ip_off, 16)] {
        if let Some(l) = family_at {
            a.bind(l);
        }
        data_pointers(a);
        a.push(Op::mov64(R4, R2));
        a.push(Op::alu64(AluOp::Add, R4, 14 + off + i32::from(len)));
        a.push(Op::jmp(JmpCond::Gt, R4, R3, slow));
        for w in (0..len).step_by(4) {
            a.push(Op::load(Size::U32, R1, R10, addr + w));
            a.push(Op::store(Size::U32, R2, (14 + off) as i16 + w, R1));
        }
        a.push(Op::Ja {
            target: port_direct,
        });
    }
    // The port.
    a.bind(port_direct);
    data_pointers(a);
    a.push(Op::load(Size::U64, R1, R10, st::TMP));
    a.push(Op::jmp(JmpCond::Gt, R1, MAX_L4_OFFSET, slow_port));
    a.push(Op::alu64(AluOp::Add, R2, R1));
    a.push(Op::mov64(R4, R2));
    a.push(Op::alu64(AluOp::Add, R4, l4_port_off + 2));
    a.push(Op::jmp(JmpCond::Gt, R4, R3, slow_port));
    a.push(Op::load(Size::U16, R1, R10, port));
    a.push(Op::Endian {
        order: crate::ebpf::ByteOrder::Be,
        bits: 16,
        dst: R1,
    });
    a.push(Op::store(Size::U16, R2, l4_port_off as i16, R1));
    a.push(Op::Ja { target: done });
    // Not in the linear data: the helper, both fields.
    a.bind(slow);
    let slow6 = a.new_label("st_slow6");
    a.push(Op::load(Size::U8, R1, R6, c.family));
    a.push(Op::jmp(JmpCond::Eq, R1, 6, slow6));
    store_bytes(a, 14 + v4_ip_off, addr, 4);
    a.push(Op::Ja { target: slow_port });
    a.bind(slow6);
    store_bytes(a, 14 + v6_ip_off, addr, 16);
    a.bind(slow_port);
    store_port_bytes(a, port, l4_port_off);
    a.bind(done);
}
