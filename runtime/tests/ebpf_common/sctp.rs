//! SCTP frames for the eBPF kernel tests, and their CRC32c checked with
//! the `crc32c` crate (an implementation we did not write; RFC 9260
//! §6.8 and appendix A: the CRC32c of the SCTP packet with the checksum
//! field zero, stored least significant byte first).

use std::net::IpAddr;

/// The range of the SCTP packet (common header and chunks, to the IP
/// length) of an IPv4 or IPv6 (no extension headers) frame.
fn sctp_range(f: &[u8]) -> Option<std::ops::Range<usize>> {
    if f.len() >= 34 && f[12..14] == [0x08, 0x00] && f[23] == 132 {
        let ihl = usize::from(f[14] & 15) * 4;
        let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
        Some(14 + ihl..14 + total)
    } else if f.len() >= 54 && f[12..14] == [0x86, 0xdd] && f[20] == 132 {
        let plen = usize::from(u16::from_be_bytes([f[18], f[19]]));
        Some(54..54 + plen)
    } else {
        None
    }
}

/// The CRC32c the SCTP packet in `f` should carry (the crate's).
pub fn oracle_crc(f: &[u8]) -> Option<u32> {
    let r = sctp_range(f)?;
    let mut body = f.get(r)?.to_vec();
    body[8..12].fill(0);
    Some(crc32c::crc32c(&body))
}

/// The CRC32c field of the SCTP packet in `f`.
pub fn field(f: &[u8]) -> Option<u32> {
    let r = sctp_range(f)?;
    Some(u32::from_le_bytes(
        f[r.start + 8..r.start + 12].try_into().ok()?,
    ))
}

/// `Ok` unless `f` is an SCTP frame whose CRC32c the crate disagrees with.
pub fn sctp_crc_oracle(f: &[u8]) -> Result<(), String> {
    match (field(f), oracle_crc(f)) {
        (Some(have), Some(want)) if have != want => Err(format!(
            "SCTP CRC32c {have:#010x}, the crc32c crate says {want:#010x}"
        )),
        _ => Ok(()),
    }
}

/// An SCTP INIT chunk (RFC 9260 §3.3.2, no parameters).
pub fn init_chunk(tag: u32) -> Vec<u8> {
    let mut c = vec![1, 0, 0, 20];
    c.extend_from_slice(&tag.to_be_bytes());
    c.extend_from_slice(&65535u32.to_be_bytes()); // a_rwnd
    c.extend_from_slice(&10u16.to_be_bytes()); // outbound streams
    c.extend_from_slice(&10u16.to_be_bytes()); // inbound streams
    c.extend_from_slice(&tag.wrapping_mul(7).to_be_bytes()); // initial TSN
    c
}

/// An SCTP DATA chunk (RFC 9260 §3.3.1) of `n` user-data bytes, padded
/// to 4.
pub fn data_chunk(tsn: u32, n: usize) -> Vec<u8> {
    let mut c = vec![0, 3];
    c.extend_from_slice(&(16 + n as u16).to_be_bytes());
    c.extend_from_slice(&tsn.to_be_bytes());
    c.extend_from_slice(&[0, 1, 0, 0]); // stream 1, sequence 0
    c.extend_from_slice(&46u32.to_be_bytes()); // PPID (Diameter)
    c.extend((0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(tsn as u8)));
    while c.len() % 4 != 0 {
        c.push(0);
    }
    c
}

/// An Ethernet frame with an IPv4 or IPv6 header and the SCTP packet
/// (ports, verification tag, `chunks`), its CRC32c the crate's and the
/// IPv4 header checksum filled in.
pub fn sctp_frame(
    (src, sport): (IpAddr, u16),
    (dst, dport): (IpAddr, u16),
    vtag: u32,
    chunks: &[u8],
) -> Vec<u8> {
    let mut sctp = Vec::new();
    sctp.extend_from_slice(&sport.to_be_bytes());
    sctp.extend_from_slice(&dport.to_be_bytes());
    sctp.extend_from_slice(&vtag.to_be_bytes());
    sctp.extend_from_slice(&[0; 4]);
    sctp.extend_from_slice(chunks);
    let crc = crc32c::crc32c(&sctp);
    sctp[8..12].copy_from_slice(&crc.to_le_bytes());
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
            f.extend_from_slice(&(20 + sctp.len() as u16).to_be_bytes());
            f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, 132, 0, 0]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
            let c = super::internet_checksum(&f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&(sctp.len() as u16).to_be_bytes());
            f.extend_from_slice(&[132, 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        _ => panic!("one family"),
    }
    f.extend_from_slice(&sctp);
    f
}
