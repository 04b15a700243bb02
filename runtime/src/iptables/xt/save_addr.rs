//! Addresses and interfaces as the save tools print them:
//! `save_ipv4_addr` / `save_ipv6_addr` and `save_iface` of iptables 1.8,
//! IPv6 as glibc's `inet_ntop` writes it ([`ntop6`]).

use std::fmt::Write;
use std::net::Ipv4Addr;

use crate::bundle::Family;

pub(super) fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

pub(super) fn ip6_at(b: &[u8], at: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    a
}

/// The address at `b[at..]` of `family` as the tools print it.
pub(super) fn ip_text(b: &[u8], at: usize, family: Family) -> String {
    match family {
        Family::Ipv4 => ip_at(b, at).to_string(),
        Family::Ipv6 => ntop6(&ip6_at(b, at)),
    }
}

/// glibc's `inet_ntop(AF_INET6)`: the longest run of two or more zero
/// words (the first of equal ones) as `::`, and the last 32 bits as a
/// dotted quad after 96 zero bits (but `::` and `::1`) or `::ffff:`.
/// (Rust's `Display` writes `::1.2.3.4` as `::102:304`.)
pub(crate) fn ntop6(a: &[u8; 16]) -> String {
    let w: Vec<u16> = a
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    // Runs of zero words as (first, length).
    let mut best: Option<(usize, usize)> = None;
    let mut cur: Option<(usize, usize)> = None;
    for (i, &x) in w.iter().enumerate() {
        if x == 0 {
            cur = Some(cur.map_or((i, 1), |(b, l)| (b, l + 1)));
            if let Some((b, l)) = cur {
                if best.is_none_or(|(_, bl)| l > bl) {
                    best = Some((b, l));
                }
            }
        } else {
            cur = None;
        }
    }
    let best = best.filter(|&(_, l)| l >= 2);
    let mut out = String::with_capacity(40);
    let mut i = 0;
    while i < 8 {
        if let Some((b, l)) = best {
            if i >= b && i < b + l {
                if i == b {
                    out.push(':');
                }
                i += 1;
                continue;
            }
        }
        if i != 0 {
            out.push(':');
        }
        if i == 6 && best.is_some_and(|(b, l)| b == 0 && (l == 6 || (l == 5 && w[5] == 0xffff))) {
            let _ = write!(out, "{}.{}.{}.{}", a[12], a[13], a[14], a[15]);
            return out;
        }
        let _ = write!(out, "{:x}", w[i]);
        i += 1;
    }
    if best.is_some_and(|(b, l)| b + l == 8) {
        out.push(':');
    }
    out
}

/// `save_ipv4_addr`: `[!] -s ADDR/LEN` (or `/MASK` when not a prefix).
pub(super) fn addr(out: &mut String, letter: char, a: Ipv4Addr, m: Ipv4Addr, invert: bool) {
    if m.is_unspecified() && a.is_unspecified() && !invert {
        return;
    }
    let mask = u32::from(m);
    let suffix = if mask.leading_ones() + mask.trailing_zeros() == 32 {
        format!("/{}", mask.leading_ones())
    } else {
        format!("/{m}")
    };
    let _ = write!(
        out,
        "{} -{letter} {a}{suffix}",
        if invert { " !" } else { "" }
    );
}

/// `save_ipv6_addr`: `[!] -s ADDR/LEN` (or `/MASK` when not a prefix);
/// nothing for a zero mask not inverted.
pub(super) fn addr6(out: &mut String, letter: char, a: &[u8; 16], m: &[u8; 16], invert: bool) {
    let mask = u128::from_be_bytes(*m);
    if mask == 0 && !invert {
        return;
    }
    let suffix = if mask.leading_ones() + mask.trailing_zeros() == 128 {
        format!("/{}", mask.leading_ones())
    } else {
        format!("/{}", ntop6(m))
    };
    let _ = write!(
        out,
        "{} -{letter} {}{suffix}",
        if invert { " !" } else { "" },
        ntop6(a)
    );
}

/// `save_iface`: the name, with `+` where the mask stops before its end.
pub(super) fn iface(out: &mut String, letter: char, name: &[u8], mask: &[u8], invert: bool) {
    if mask[0] == 0 {
        return;
    }
    let _ = write!(out, "{} -{letter} ", if invert { " !" } else { "" });
    for i in 0..16 {
        if mask[i] != 0 {
            if name[i] != 0 {
                out.push(name[i] as char);
            }
        } else {
            if name[i - 1] != 0 {
                out.push('+');
            }
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As glibc's `inet_ntop` (checked against `ip6tables-save`).
    #[test]
    fn ipv6_addresses_as_inet_ntop() {
        let p = |s: &str| ntop6(&s.parse::<std::net::Ipv6Addr>().unwrap().octets());
        assert_eq!(p("::"), "::");
        assert_eq!(p("::1"), "::1");
        assert_eq!(p("::1.2.3.4"), "::1.2.3.4");
        assert_eq!(p("::ffff:1.2.3.4"), "::ffff:1.2.3.4");
        assert_eq!(p("fd00:0:0:1::"), "fd00:0:0:1::");
        assert_eq!(p("1:0:0:1:0:0:0:1"), "1:0:0:1::1");
        assert_eq!(p("1:0:0:1:0:0:1:1"), "1::1:0:0:1:1");
        assert_eq!(p("1:0:1:1:1:1:1:1"), "1:0:1:1:1:1:1:1");
        assert_eq!(p("ffff:0:ffff::"), "ffff:0:ffff::");
        assert_eq!(p("0:0:1::"), "0:0:1::");
        let mut s = String::new();
        addr6(&mut s, 's', &[0; 16], &[0; 16], false);
        addr6(&mut s, 's', &[0; 16], &[0; 16], true);
        addr6(
            &mut s,
            'd',
            &"fd00::".parse::<std::net::Ipv6Addr>().unwrap().octets(),
            &"ffff:0:ffff::"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
            false,
        );
        assert_eq!(s, " ! -s ::/0 -d fd00::/ffff:0:ffff::");
    }
}
