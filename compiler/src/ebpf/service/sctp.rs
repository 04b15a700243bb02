//! SCTP in the TC service path: what a DNAT changes in an SCTP packet.
//!
//! SCTP's checksum (RFC 9260 §6.8, CRC32c) covers the SCTP common header
//! and chunks only: unlike TCP and UDP there is no pseudo-header, so
//! rewriting the IP destination (DNAT) or source (reverse NAT) of an
//! SCTP packet needs no checksum change beyond the IPv4 header's own.
//! Rewriting a *port* does change the CRC32c, which the kernel offers no
//! helper for (`bpf_l4_csum_replace` is the Internet checksum): the
//! update is [`super::sctp_crc`], emitted where a port can change.
//!
//! The SCTP flow is tracked like a TCP / UDP one (5-tuple with ports: the
//! parse reads SCTP ports), so DNAT, reverse NAT and the flow's conntrack
//! entry share the TCP / UDP code; only the Internet checksum updates
//! are skipped ([`skip_if_sctp`]). The connect-time programs
//! ([`super::sock`]) leave SCTP sockets alone: their packets are
//! translated by the TC path.

use crate::ebpf::{Asm, JmpCond, Label, Op, Reg, Size};

use super::emit::CtxLayout;

/// `IPPROTO_SCTP`.
pub const IPPROTO_SCTP: i32 = 132;

/// Jumps to `to` when the context's packet is SCTP (no Internet checksum
/// to update; a port's CRC32c change is [`super::sctp_crc`]'s).
/// Uses r1.
pub(crate) fn skip_if_sctp(a: &mut Asm, c: &CtxLayout, to: Label) {
    a.push(Op::load(Size::U8, Reg::R1, Reg::R6, c.proto));
    a.push(Op::jmp(JmpCond::Eq, Reg::R1, IPPROTO_SCTP, to));
}
