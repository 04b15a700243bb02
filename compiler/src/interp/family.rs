//! Which protocol a packet is to the rules (docs/language.md §4,
//! "Headers"): `icmp` is ICMPv4 and `icmp6` is ICMPv6, each in its own
//! address family only.
//!
//! An IPv6 packet whose upper-layer protocol is 1 (ICMPv4 carried in IPv6)
//! and an IPv4 packet with protocol 58 (ICMPv6 carried in IPv4) are not
//! ICMP of their family: like ESP or an unknown protocol, they are matched
//! only by rules without a protocol (`any`), carry no type or code, and
//! every back end reads them so — as nftables' `icmp type` (implied
//! `meta nfproto ipv4`) and `icmpv6 type` (`meta nfproto ipv6`) and as
//! iptables' `icmp` match, which exists in `iptables` only, do. One place
//! says this: the interpreter's rule match, the decision graph's walk and
//! the back ends' differential tests all call [`rule_proto`].

use super::Packet;
use crate::flowhash::proto_number;
use crate::model::Proto;

/// The protocol number the back ends use for "a protocol weir has no
/// keyword for in this family" (255: reserved by IANA, never a keyword's
/// number).
pub const OTHER_PROTO: u8 = 255;

/// The keyword protocol the rules see in `p`, or `None` when the
/// packet's protocol has no keyword in its family (ICMPv4 in IPv6, ICMPv6
/// in IPv4).
pub fn rule_proto(p: &Packet) -> Option<Proto> {
    match p.proto {
        Proto::Icmp if p.dst.is_ipv6() => None,
        Proto::Icmp6 if p.dst.is_ipv4() => None,
        other => Some(other),
    }
}

/// The fields a decision-graph walk (and a back end) reads for `p`:
/// protocol number, ICMP type, ICMP code. A packet that is not its
/// family's ICMP has type and code 0 (as every non-ICMP packet).
pub fn rule_fields(p: &Packet) -> (u8, u8, u8) {
    match rule_proto(p) {
        Some(q) if q.is_icmp() => (proto_number(q), p.icmp_type, p.icmp_code),
        Some(q) => (proto_number(q), 0, 0),
        None => (OTHER_PROTO, 0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(proto: Proto, src: &str, dst: &str) -> Packet {
        let mut p = Packet::new(proto, src.parse().unwrap(), 0, dst.parse().unwrap(), 0);
        p.icmp_type = 8;
        p
    }

    #[test]
    fn icmp_is_per_family() {
        assert_eq!(
            rule_proto(&pkt(Proto::Icmp, "10.0.0.1", "10.0.0.2")),
            Some(Proto::Icmp)
        );
        assert_eq!(rule_proto(&pkt(Proto::Icmp, "fd00::1", "fd00::2")), None);
        assert_eq!(
            rule_proto(&pkt(Proto::Icmp6, "fd00::1", "fd00::2")),
            Some(Proto::Icmp6)
        );
        assert_eq!(rule_proto(&pkt(Proto::Icmp6, "10.0.0.1", "10.0.0.2")), None);
        assert_eq!(
            rule_fields(&pkt(Proto::Icmp6, "fd00::1", "fd00::2")),
            (58, 8, 0)
        );
        assert_eq!(
            rule_fields(&pkt(Proto::Icmp, "fd00::1", "fd00::2")),
            (OTHER_PROTO, 0, 0)
        );
        assert_eq!(
            rule_fields(&pkt(Proto::Tcp, "fd00::1", "fd00::2")),
            (6, 0, 0)
        );
    }
}
