//! The flow hash used for Maglev backend choice.
//!
//! The interpreter and every back end must pick the same Maglev slot for a
//! flow, so the hash is defined here once, over 32-bit words, with only
//! operations that a BPF program does in a handful of instructions
//! (xor, rotate, multiply, shift). It is not cryptographic; it only needs
//! to spread flows evenly over the lookup table.

use crate::model::Proto;
use std::net::IpAddr;

/// Fold an address to 32 bits (IPv4: itself; IPv6: xor of its words).
pub fn fold_addr(a: IpAddr) -> u32 {
    match a {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => {
            let x = u128::from(v6);
            (x as u32) ^ ((x >> 32) as u32) ^ ((x >> 64) as u32) ^ ((x >> 96) as u32)
        }
    }
}

pub fn proto_number(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 6,
        Proto::Udp => 17,
        Proto::Sctp => 132,
        Proto::Icmp => 1,
        Proto::Icmp6 => 58,
    }
}

/// Mix step: multiply by the 32-bit golden ratio and fold the high half.
fn mix(h: u32) -> u32 {
    let h = h.wrapping_mul(0x9E37_79B1);
    h ^ (h >> 16)
}

/// Hash of (source, destination, source port, destination port, protocol)
/// with addresses in host byte order.
pub fn flow_hash(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, proto: Proto) -> u32 {
    let mut h = mix(fold_addr(src));
    h = mix(h ^ fold_addr(dst));
    h = mix(h ^ ((u32::from(sport) << 16) | u32::from(dport)));
    mix(h ^ u32::from(proto_number(proto)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_ports() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.96.0.10".parse().unwrap();
        let mut buckets = [0u32; 16];
        for sport in 1000..17000u16 {
            buckets[(flow_hash(a, b, sport, 443, Proto::Tcp) % 16) as usize] += 1;
        }
        for n in buckets {
            assert!((800..1200).contains(&n), "uneven buckets: {buckets:?}");
        }
    }
}
