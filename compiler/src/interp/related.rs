//! ICMP errors related to a connection (docs/language.md §4, step 1).
//!
//! The packet model carries connection state as [`ConnState`]: an ICMP
//! error *related* to a connection is an `established` packet, allowed by
//! conntrack with provenance `established`, exactly like the
//! connection's replies. What makes an ICMP packet such an error is
//! stated here once, for the interpreter's documentation, the eBPF back
//! end's data path (`ebpf::codegen::related`) and the differential tests
//! that generate related errors:
//!
//! - it is its family's ICMP (ICMPv4 in IPv4, ICMPv6 in IPv6) of an
//!   error type ([`is_icmp_error`]);
//! - it quotes (after its 8-byte ICMP header) an IP header of its own
//!   family and at least 8 bytes of what follows it, and that quoted
//!   packet belongs to a connection conntrack holds (either direction:
//!   the quote is a packet the connection sent, as seen where the error
//!   travels — for a translated connection the client's packet to the
//!   frontend or the reply from the frontend on the client's side, the
//!   same packets with the backend's address on the backend's side);
//! - it is addressed to the quoted packet's sender (its destination is
//!   the quote's source), as Linux conntrack requires
//!   (`nf_conntrack_inet_error`): an error about someone else's packet is
//!   not related.
//!
//! Any other ICMP packet — an error that quotes no known connection
//! included — is `new` and judged by policy by its type and code.
//!
//! [`ConnState`]: crate::model::ConnState

use crate::model::Proto;

/// ICMPv4 error types that relate to the connection they quote, the
/// ones Linux conntrack relates (`icmp_is_err`), so that both back ends
/// read one meaning (the iptables back end's `RELATED` is the kernel's):
/// destination unreachable (3), source quench (4, deprecated by RFC
/// 6633), redirect (5), time exceeded (11), parameter problem (12).
pub const ICMP4_ERRORS: [u8; 5] = [3, 4, 5, 11, 12];

/// ICMPv6 error messages are the types below this (RFC 4443 §2.1: "error
/// messages have message types from 0 to 127"; Linux conntrack relates
/// exactly these): destination unreachable (1), packet too big (2), time
/// exceeded (3), parameter problem (4), and the unassigned, private
/// (100, 101) and reserved (127) error types.
pub const ICMP6_ERRORS_BELOW: u8 = 128;

/// Whether an ICMP packet of protocol `proto` (its family's ICMP) with
/// type `icmp_type` is an error that can be related to a connection.
pub fn is_icmp_error(proto: Proto, icmp_type: u8) -> bool {
    match proto {
        Proto::Icmp => ICMP4_ERRORS.contains(&icmp_type),
        Proto::Icmp6 => icmp_type < ICMP6_ERRORS_BELOW,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_per_family() {
        assert!(is_icmp_error(Proto::Icmp, 3));
        assert!(is_icmp_error(Proto::Icmp, 5));
        assert!(is_icmp_error(Proto::Icmp6, 1));
        assert!(is_icmp_error(Proto::Icmp6, 127));
        // Echo, router / neighbour messages, ICMPv6 informational
        // messages: not errors.
        for (p, t) in [
            (Proto::Icmp, 0),
            (Proto::Icmp, 8),
            (Proto::Icmp, 9),
            (Proto::Icmp6, 128),
            (Proto::Icmp6, 135),
            (Proto::Udp, 3),
        ] {
            assert!(!is_icmp_error(p, t), "{p:?} {t}");
        }
    }
}
