//! The headers of a logged packet: what an NFLOG record's payload (the IP
//! packet from its network header on, as the hook saw it) says about the
//! flow.
//!
//! **Why its own parser.** An event names the 5-tuple the policy judged,
//! so the payload is read the way docs/language.md §4 ("Headers") reads a
//! packet: IPv4 options skipped by IHL; IPv6 extension headers walked
//! (hop-by-hop, routing, destination options, fragment, AH) up to
//! [`MAX_EXTENSION_HEADERS`]; a non-first fragment has no transport header
//! (ports zero). A payload cut short before the ports still yields the
//! addresses; a payload that is not an IP packet yields nothing (the reader
//! counts it as undecodable).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use weir_compiler::interp::MAX_EXTENSION_HEADERS;

/// What an event needs of a packet's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The upper-layer protocol (after IPv6 extension headers).
    pub proto: u8,
    /// Ports of TCP, UDP, UDP-Lite and SCTP; zero otherwise or unseen.
    pub sport: u16,
    pub dport: u16,
    /// ICMP / ICMPv6 type and code, when the protocol is one of those.
    pub icmp: Option<(u8, u8)>,
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const UDPLITE: u8 = 136;
const SCTP: u8 = 132;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// Reads an IPv4 or IPv6 packet (the version nibble tells which).
pub fn parse(p: &[u8]) -> Option<Flow> {
    match p.first()? >> 4 {
        4 => parse_v4(p),
        6 => parse_v6(p),
        _ => None,
    }
}

fn parse_v4(p: &[u8]) -> Option<Flow> {
    if p.len() < 20 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    if ihl < 20 {
        return None;
    }
    let src = IpAddr::V4(Ipv4Addr::new(p[12], p[13], p[14], p[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(p[16], p[17], p[18], p[19]));
    let proto = p[9];
    let offset = u16::from_be_bytes([p[6], p[7]]) & 0x1fff;
    let l4 = if offset == 0 { p.get(ihl..) } else { None };
    Some(transport(src, dst, proto, l4))
}

fn parse_v6(p: &[u8]) -> Option<Flow> {
    if p.len() < 40 {
        return None;
    }
    let mut a = [0u8; 16];
    a.copy_from_slice(&p[8..24]);
    let src = IpAddr::V6(Ipv6Addr::from(a));
    a.copy_from_slice(&p[24..40]);
    let dst = IpAddr::V6(Ipv6Addr::from(a));
    let mut next = p[6];
    let mut at = 40;
    let mut first_fragment = true;
    for _ in 0..=MAX_EXTENSION_HEADERS {
        let len = match next {
            // Hop-by-hop, routing, destination options: (len + 1) * 8.
            0 | 43 | 60 => (usize::from(*p.get(at + 1)?) + 1) * 8,
            // Fragment: 8 bytes; a non-first fragment ends the walk.
            44 => {
                let off = u16::from_be_bytes([*p.get(at + 2)?, *p.get(at + 3)?]) >> 3;
                first_fragment = off == 0;
                8
            }
            // Authentication header: (len + 2) * 4.
            51 => (usize::from(*p.get(at + 1)?) + 2) * 4,
            _ => {
                let l4 = if first_fragment { p.get(at..) } else { None };
                return Some(transport(src, dst, next, l4));
            }
        };
        next = *p.get(at)?;
        at += len;
        if !first_fragment {
            return Some(transport(src, dst, next, None));
        }
    }
    // Too long a chain: the protocol is not known (docs/language.md §4).
    Some(transport(src, dst, next, None))
}

/// Ports or ICMP type and code from the transport header `l4` (`None`: not
/// seen).
fn transport(src: IpAddr, dst: IpAddr, proto: u8, l4: Option<&[u8]>) -> Flow {
    let mut f = Flow {
        src,
        dst,
        proto,
        sport: 0,
        dport: 0,
        icmp: None,
    };
    let Some(l4) = l4 else {
        return f;
    };
    match proto {
        TCP | UDP | UDPLITE | SCTP if l4.len() >= 4 => {
            f.sport = u16::from_be_bytes([l4[0], l4[1]]);
            f.dport = u16::from_be_bytes([l4[2], l4[3]]);
        }
        ICMP | ICMPV6 if l4.len() >= 2 => f.icmp = Some((l4[0], l4[1])),
        _ => {}
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 header (no options) with `proto`, then `l4`.
    pub(crate) fn v4(src: [u8; 4], dst: [u8; 4], proto: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0];
        p.extend_from_slice(&frag.to_be_bytes());
        p.extend_from_slice(&[64, proto, 0, 0]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(l4);
        p
    }

    fn v6(next: u8, ext: &[u8], l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, next, 64];
        p.extend_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(ext);
        p.extend_from_slice(l4);
        p
    }

    #[test]
    fn ipv4_ports_icmp_and_fragments() {
        let f = parse(&v4(
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            6,
            0,
            &[0x9c, 0x40, 0, 80],
        ))
        .unwrap();
        assert_eq!((f.proto, f.sport, f.dport), (6, 40000, 80));
        assert_eq!(f.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        let f = parse(&v4([10, 0, 0, 1], [10, 0, 0, 2], 1, 0, &[8, 0, 0, 0])).unwrap();
        assert_eq!((f.sport, f.dport, f.icmp), (0, 0, Some((8, 0))));
        // A non-first fragment: no transport header.
        let f = parse(&v4(
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            17,
            185,
            &[0x9c, 0x40, 0, 53],
        ))
        .unwrap();
        assert_eq!((f.proto, f.sport, f.dport), (17, 0, 0));
        // Cut short before the ports: addresses only.
        let f = parse(&v4([10, 0, 0, 1], [10, 0, 0, 2], 17, 0, &[0x9c])).unwrap();
        assert_eq!((f.sport, f.dport), (0, 0));
        // IHL with options.
        let mut p = v4(
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            17,
            0,
            &[1, 2, 3, 4, 0, 7, 0, 9],
        );
        p[0] = 0x46;
        let f = parse(&p).unwrap();
        assert_eq!((f.sport, f.dport), (7, 9));
        assert_eq!(parse(&[0x45, 0, 0]), None);
        assert_eq!(parse(&[0x20; 40]), None);
    }

    #[test]
    fn ipv6_extension_headers() {
        let f = parse(&v6(17, &[], &[0, 53, 0x1f, 0x90])).unwrap();
        assert_eq!((f.proto, f.sport, f.dport), (17, 53, 8080));
        // Hop-by-hop (8 bytes) then destination options (16) then TCP.
        let mut ext = vec![60, 0, 0, 0, 0, 0, 0, 0];
        ext.extend_from_slice(&[6, 1]);
        ext.extend_from_slice(&[0; 14]);
        let f = parse(&v6(0, &ext, &[0x9c, 0x40, 0x01, 0xbb])).unwrap();
        assert_eq!((f.proto, f.sport, f.dport), (6, 40000, 443));
        // First fragment: ports; a later one: none.
        let first = [17, 0, 0, 0, 0, 0, 0, 1];
        let f = parse(&v6(44, &first, &[0, 1, 0, 2])).unwrap();
        assert_eq!((f.proto, f.sport, f.dport), (17, 1, 2));
        let later = [17, 0, 0, 0x08, 0, 0, 0, 1];
        let f = parse(&v6(44, &later, &[0, 1, 0, 2])).unwrap();
        assert_eq!((f.proto, f.sport, f.dport), (17, 0, 0));
        let f = parse(&v6(58, &[], &[128, 0, 0, 0])).unwrap();
        assert_eq!(f.icmp, Some((128, 0)));
        // More extension headers than the parser walks: protocol unknown.
        let mut long = Vec::new();
        for _ in 0..MAX_EXTENSION_HEADERS + 1 {
            long.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
        }
        let f = parse(&v6(60, &long, &[0, 1, 0, 2])).unwrap();
        assert_eq!((f.sport, f.dport), (0, 0));
        // A chain cut short inside an extension header.
        assert_eq!(parse(&v6(0, &[], &[])), None);
    }
}
