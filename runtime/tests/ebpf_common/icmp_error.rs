//! ICMP / ICMPv6 error frames quoting a packet (docs/language.md §4 step
//! 1: an error related to a connection is established), and their
//! checksums, computed here from the bytes (RFC 792 / RFC 4443 §2.3),
//! independently of the eBPF code under test.

use std::net::IpAddr;

use weir_compiler::interp::Packet;
use weir_compiler::model::{ConnState, Proto};

fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The Internet checksum of `data` (RFC 1071; an odd tail byte padded
/// with a zero): over a block that includes its own right checksum
/// field, 0.
pub fn internet_checksum(data: &[u8]) -> u16 {
    !fold(sum16(data))
}

/// The IP packet of an Ethernet frame (IPv4 with its options, or IPv6
/// without extension headers) cut after its header and `l4` more bytes
/// (fewer if the packet is shorter): what an ICMP error quotes.
pub fn quote(frame: &[u8], l4: usize) -> Vec<u8> {
    let (hlen, total) = if frame[12..14] == [0x08, 0x00] {
        let ihl = usize::from(frame[14] & 15) * 4;
        (ihl, usize::from(u16::from_be_bytes([frame[16], frame[17]])))
    } else {
        let plen = usize::from(u16::from_be_bytes([frame[18], frame[19]]));
        (40, 40 + plen)
    };
    let end = 14 + (hlen + l4).min(total);
    frame[14..end.min(frame.len())].to_vec()
}

/// An Ethernet frame carrying an ICMP (IPv4) or ICMPv6 (IPv6) error
/// `src` → `dst` of `typ` / `code` quoting `quoted`, checksums valid.
pub fn error_frame(src: IpAddr, dst: IpAddr, typ: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let mut icmp = vec![typ, code, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(quoted);
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00]);
            let mut ip = vec![0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
            ip[8] = 64;
            ip[9] = 1;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let c = !fold(sum16(&ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend(ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&[0x86, 0xdd]);
            let mut ip = vec![0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(icmp.len() as u16).to_be_bytes());
            ip[6] = 58;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            f.extend(ip);
        }
        _ => panic!("mixed families"),
    }
    f.extend(icmp);
    let c = icmp_checksum(&f);
    let at = icmp_offset(&f) + 2;
    f[at..at + 2].copy_from_slice(&c.to_be_bytes());
    while f.len() < 60 {
        f.push(0);
    }
    f
}

fn v4(f: &[u8]) -> bool {
    f[12..14] == [0x08, 0x00]
}

fn icmp_offset(f: &[u8]) -> usize {
    if v4(f) {
        14 + usize::from(f[14] & 15) * 4
    } else {
        54
    }
}

fn icmp_range(f: &[u8]) -> std::ops::Range<usize> {
    let start = icmp_offset(f);
    let end = if v4(f) {
        14 + usize::from(u16::from_be_bytes([f[16], f[17]]))
    } else {
        54 + usize::from(u16::from_be_bytes([f[18], f[19]]))
    };
    start..end
}

/// The checksum the frame's ICMP message should carry (ICMPv6: over the
/// pseudo-header too).
fn icmp_checksum(f: &[u8]) -> u16 {
    let r = icmp_range(f);
    let mut body = f[r.clone()].to_vec();
    body[2] = 0;
    body[3] = 0;
    let mut sum = sum16(&body);
    if !v4(f) {
        sum += sum16(&f[22..54]) + (r.len() as u32) + 58;
    }
    !fold(sum)
}

/// The outer IPv4 header checksum, the ICMP / ICMPv6 checksum and the
/// quoted IPv4 header's checksum are valid.
pub fn error_checksums_ok(f: &[u8]) -> Result<(), String> {
    if v4(f) && fold(sum16(&f[14..34])) != 0xffff {
        return Err("bad outer IPv4 header checksum".into());
    }
    let at = icmp_offset(f) + 2;
    let (have, want) = (u16::from_be_bytes([f[at], f[at + 1]]), icmp_checksum(f));
    if have != want {
        return Err(format!("bad ICMP checksum {have:#06x}, want {want:#06x}"));
    }
    let q = icmp_offset(f) + 8;
    if v4(f) {
        let ihl = usize::from(f[q] & 15) * 4;
        if fold(sum16(&f[q..q + ihl])) != 0xffff {
            return Err("bad quoted IPv4 header checksum".into());
        }
    }
    Ok(())
}

/// The quoted bytes of an error frame (from the quoted IP header on).
pub fn quoted(f: &[u8]) -> &[u8] {
    let r = icmp_range(f);
    &f[r.start + 8..r.end]
}

/// The outer destination address of a frame.
pub fn outer_dst(f: &[u8]) -> IpAddr {
    if v4(f) {
        IpAddr::from(<[u8; 4]>::try_from(&f[30..34]).unwrap())
    } else {
        IpAddr::from(<[u8; 16]>::try_from(&f[38..54]).unwrap())
    }
}

/// The outer source address of a frame.
pub fn outer_src(f: &[u8]) -> IpAddr {
    if v4(f) {
        IpAddr::from(<[u8; 4]>::try_from(&f[26..30]).unwrap())
    } else {
        IpAddr::from(<[u8; 16]>::try_from(&f[22..38]).unwrap())
    }
}

/// The interpreter's view of an error `src` → `dst` of `typ` / `code`
/// of the family's ICMP: established when related to a connection.
pub fn error_packet(src: IpAddr, dst: IpAddr, typ: u8, code: u8, related: bool) -> Packet {
    let proto = if src.is_ipv4() {
        Proto::Icmp
    } else {
        Proto::Icmp6
    };
    let mut p = Packet::new(proto, src, 0, dst, 0);
    (p.icmp_type, p.icmp_code) = (typ, code);
    if related {
        p.state = ConnState::Established;
    }
    p
}
