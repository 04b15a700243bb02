//! Test frames: Ethernet + IPv4/IPv6 + L4 headers for an interpreter
//! [`Packet`], with valid checksums (SCTP: its CRC32c, RFC 9260 §6.8),
//! and a checksum verifier. Shared by
//! the kernel tests (BPF_PROG_TEST_RUN input and output checks) and the
//! benchmarks, so both feed the programs the same bytes.

use std::net::IpAddr;
use weir_compiler::flowhash::proto_number;
use weir_compiler::interp::Packet;
use weir_compiler::model::Proto;

/// Ethernet + IPv4/IPv6 + L4 header for `p` (addresses of one family).
pub fn frame(p: &Packet) -> Vec<u8> {
    let l4: Vec<u8> = match p.proto {
        Proto::Tcp => {
            let mut h = vec![0u8; 20];
            h[0..2].copy_from_slice(&p.sport.to_be_bytes());
            h[2..4].copy_from_slice(&p.dport.to_be_bytes());
            h[12] = 5 << 4;
            h[13] = 0x02;
            h
        }
        Proto::Udp => {
            let mut h = vec![0u8; 8];
            h[0..2].copy_from_slice(&p.sport.to_be_bytes());
            h[2..4].copy_from_slice(&p.dport.to_be_bytes());
            h[4..6].copy_from_slice(&8u16.to_be_bytes());
            h
        }
        Proto::Sctp => {
            // Common header with a verification tag and a DATA chunk
            // (type 0, flags B|E, length 20: TSN, stream, sequence, PPID,
            // 4 bytes of data), so the CRC32c covers a chunk and no
            // header field is zero.
            let mut h = vec![0u8; 32];
            h[0..2].copy_from_slice(&p.sport.to_be_bytes());
            h[2..4].copy_from_slice(&p.dport.to_be_bytes());
            h[4..8].copy_from_slice(&0x5eed_c0deu32.to_be_bytes());
            h[13] = 0x03;
            h[14..16].copy_from_slice(&20u16.to_be_bytes());
            h[16..20].copy_from_slice(&0x0102_0304u32.to_be_bytes());
            h[20..24].copy_from_slice(&0x0001_0002u32.to_be_bytes());
            h[24..28].copy_from_slice(&46u32.to_be_bytes());
            h[28..32].copy_from_slice(b"weir");
            h
        }
        // The header of ICMP and ICMPv6 alike; the IP header carries the
        // packet's protocol as written, also in the other family (ICMPv4
        // in IPv6, ICMPv6 in IPv4), which rules see as no keyword's.
        Proto::Icmp | Proto::Icmp6 => {
            let mut h = vec![0u8; 8];
            h[0] = p.icmp_type;
            h[1] = p.icmp_code;
            h
        }
    };
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    match (p.src, p.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00]);
            let mut ip = vec![0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            ip[8] = 64;
            ip[9] = proto_number(p.proto);
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            f.extend(ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&[0x86, 0xdd]);
            let mut ip = vec![0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
            ip[6] = proto_number(p.proto);
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            f.extend(ip);
        }
        _ => panic!("mixed families in {p:?}"),
    }
    f.extend(l4);
    set_checksums(&mut f);
    // Pad to the Ethernet minimum like a NIC would.
    while f.len() < 60 {
        f.push(0);
    }
    f
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// Where a TCP / UDP frame's L4 checksum is: the checksum field's offset,
/// the L4 range (header and payload), the protocol and the pseudo-header
/// (IPv4: addresses, zero, protocol, length; IPv6, RFC 8200 §8.1: the
/// 16-byte addresses, the upper-layer length as 32 bits, three zeros,
/// the next header). IPv6 only without extension headers (the next
/// header is TCP or UDP).
fn l4_layout(f: &[u8]) -> Option<(usize, std::ops::Range<usize>, u8, Vec<u8>)> {
    let (l4, proto, mut pseudo) = if f.len() >= 34 && f[12..14] == [0x08, 0x00] {
        let ihl = usize::from(f[14] & 15) * 4;
        let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
        (
            14 + ihl..(14 + total).min(f.len()),
            f[23],
            f[26..34].to_vec(),
        )
    } else if f.len() >= 54 && f[12..14] == [0x86, 0xdd] {
        let plen = usize::from(u16::from_be_bytes([f[18], f[19]]));
        (54..(54 + plen).min(f.len()), f[20], f[22..54].to_vec())
    } else {
        return None;
    };
    let off = match proto {
        6 => 16,
        17 => 6,
        _ => return None,
    };
    if l4.start + off + 2 > l4.end {
        return None;
    }
    let len = (l4.end - l4.start) as u16;
    if f[12..14] == [0x08, 0x00] {
        pseudo.extend_from_slice(&[0, proto]);
        pseudo.extend_from_slice(&len.to_be_bytes());
    } else {
        pseudo.extend_from_slice(&[0, 0]);
        pseudo.extend_from_slice(&len.to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, proto]);
    }
    Some((l4.start + off, l4, proto, pseudo))
}

/// The L4 checksum a TCP / UDP frame should carry.
fn l4_checksum(f: &[u8]) -> Option<u16> {
    let (off, range, proto, pseudo) = l4_layout(f)?;
    let mut body = f[range.clone()].to_vec();
    let rel = off - range.start;
    body[rel] = 0;
    body[rel + 1] = 0;
    let c = !fold(sum16(&pseudo) + sum16(&body));
    Some(if proto == 17 && c == 0 { 0xffff } else { c })
}

/// CRC32c (Castagnoli, reflected polynomial 0x82F63B78; RFC 9260
/// appendix B), bit by bit: the test side's own, independent of the
/// eBPF code under test.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The SCTP packet of an IPv4 / IPv6 (no extension headers) frame: its
/// range (common header and chunks, to the IP length).
fn sctp_range(f: &[u8]) -> Option<std::ops::Range<usize>> {
    let r = if f.len() >= 34 && f[12..14] == [0x08, 0x00] && f[23] == 132 {
        let ihl = usize::from(f[14] & 15) * 4;
        let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
        14 + ihl..(14 + total).min(f.len())
    } else if f.len() >= 54 && f[12..14] == [0x86, 0xdd] && f[20] == 132 {
        let plen = usize::from(u16::from_be_bytes([f[18], f[19]]));
        54..(54 + plen).min(f.len())
    } else {
        return None;
    };
    (r.end >= r.start + 12).then_some(r)
}

/// The CRC32c an SCTP frame should carry (over the SCTP packet with the
/// checksum field zero; stored little-endian on the wire, RFC 9260 B).
fn sctp_checksum(f: &[u8]) -> Option<u32> {
    let r = sctp_range(f)?;
    let mut body = f[r].to_vec();
    body[8..12].fill(0);
    Some(crc32c(&body))
}

/// Fills in the IPv4 header checksum and the TCP / UDP checksum or the
/// SCTP CRC32c (IPv4, or IPv6 without extension headers).
pub fn set_checksums(f: &mut [u8]) {
    if f.len() >= 34 && f[12..14] == [0x08, 0x00] {
        let ihl = usize::from(f[14] & 15) * 4;
        f[24] = 0;
        f[25] = 0;
        let c = !fold(sum16(&f[14..14 + ihl]));
        f[24..26].copy_from_slice(&c.to_be_bytes());
    }
    if let (Some((off, ..)), Some(c)) = (l4_layout(f), l4_checksum(f)) {
        f[off..off + 2].copy_from_slice(&c.to_be_bytes());
    }
    if let (Some(r), Some(c)) = (sctp_range(f), sctp_checksum(f)) {
        f[r.start + 8..r.start + 12].copy_from_slice(&c.to_le_bytes());
    }
}

/// Checks the IPv4 header checksum and the TCP / UDP checksum or the
/// SCTP CRC32c (IPv4, or IPv6 without extension headers; a zero IPv4 UDP
/// checksum is "none").
pub fn checksums_ok(f: &[u8]) -> Result<(), String> {
    let v4 = f.len() >= 34 && f[12..14] == [0x08, 0x00];
    if v4 {
        let ihl = usize::from(f[14] & 15) * 4;
        if fold(sum16(&f[14..14 + ihl])) != 0xffff {
            return Err("bad IPv4 header checksum".into());
        }
    }
    if let (Some((off, _, proto, _)), Some(want)) = (l4_layout(f), l4_checksum(f)) {
        let have = u16::from_be_bytes([f[off], f[off + 1]]);
        if !(v4 && proto == 17 && have == 0) && have != want {
            return Err(format!("bad L4 checksum {have:#06x}, want {want:#06x}"));
        }
    }
    if let (Some(r), Some(want)) = (sctp_range(f), sctp_checksum(f)) {
        let have = u32::from_le_bytes(f[r.start + 8..r.start + 12].try_into().expect("4 bytes"));
        if have != want {
            return Err(format!("bad SCTP CRC32c {have:#010x}, want {want:#010x}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::crc32c;

    /// RFC 9260 / iSCSI (RFC 3720 B.4) check values.
    #[test]
    fn crc32c_matches_the_published_check_values() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
    }
}
