//! SCTP in the TC service path: what a DNAT changes in an SCTP packet.
//!
//! SCTP's checksum (RFC 9260 §6.8, CRC32c) covers the SCTP common header
//! and chunks only: unlike TCP and UDP there is no pseudo-header, so
//! rewriting the IP destination (DNAT) or source (reverse NAT) of an
//! SCTP packet needs no checksum change beyond the IPv4 header's own.
//! Rewriting a *port* does change the CRC32c, which the kernel offers no
//! helper for (`bpf_l4_csum_replace` is the Internet checksum); the TC
//! path therefore translates SCTP by address only, and `weir compile`
//! refuses an SCTP frontend whose backends may listen on another port
//! (E0501, "SCTP frontend whose target port differs":
//! [`crate::ebpf::codegen::untranslated_frontends`]). With that refusal
//! the port written by [`super::emit::emit_rewrite`] is the port already
//! there, and every checksum stays valid.
//!
//! The SCTP flow is tracked like a TCP / UDP one (5-tuple with ports: the
//! parse reads SCTP ports), so DNAT, reverse NAT and the flow's conntrack
//! entry share the TCP / UDP code; only the L4 checksum updates are
//! skipped ([`skip_if_sctp`]). The connect-time programs
//! ([`super::sock`]) leave SCTP sockets alone: their packets are
//! translated by the TC path.

use crate::ebpf::{Asm, JmpCond, Label, Op, Reg, Size};

use super::emit::CtxLayout;

/// `IPPROTO_SCTP`.
pub const IPPROTO_SCTP: i32 = 132;

/// Jumps to `to` when the context's packet is SCTP (no L4 checksum
/// update for an address; the port is unchanged, see the module docs).
/// Uses r1.
pub(crate) fn skip_if_sctp(a: &mut Asm, c: &CtxLayout, to: Label) {
    a.push(Op::load(Size::U8, Reg::R1, Reg::R6, c.proto));
    a.push(Op::jmp(JmpCond::Eq, Reg::R1, IPPROTO_SCTP, to));
}
