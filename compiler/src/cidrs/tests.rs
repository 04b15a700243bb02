//! The interval sweeps against the pairwise definitions they replaced, on
//! random IPv4 and IPv6 sets with holes.

use super::*;
use crate::gen::Rng;

fn c(s: &str) -> Cidr {
    let (a, l) = s.split_once('/').unwrap();
    Cidr {
        addr: a.parse().unwrap(),
        len: l.parse().unwrap(),
    }
}

/// The former `normalize_cidrs`: pairwise covering.
fn naive_normalize(mut v: Vec<Cidr>) -> Vec<Cidr> {
    v.sort();
    v.dedup();
    let all = v.clone();
    v.retain(|c| !all.iter().any(|o| o != c && o.covers(c)));
    v
}

/// The former `subtract`: split in halves around one hole.
fn naive_subtract(c: Cidr, e: &Cidr) -> Vec<Cidr> {
    if e.covers(&c) {
        return vec![];
    }
    if !c.covers(e) {
        return vec![c];
    }
    let len = c.len + 1;
    let hi_addr = match c.addr {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(
            u32::from(a) | (1u32 << (32 - u32::from(len))),
        )),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(
            u128::from(a) | (1u128 << (128 - u32::from(len))),
        )),
    };
    let mut out = naive_subtract(Cidr { addr: c.addr, len }, e);
    out.extend(naive_subtract(Cidr { addr: hi_addr, len }, e));
    out
}

/// The former `flatten`.
fn naive_minus(include: &[Cidr], exclude: &[Cidr]) -> Vec<Cidr> {
    let mut out = include.to_vec();
    for e in exclude {
        out = out.into_iter().flat_map(|c| naive_subtract(c, e)).collect();
    }
    naive_normalize(out)
}

/// `addr/len` with the host bits cleared.
fn masked(addr: IpAddr, len: u8) -> Cidr {
    let r = range(&Cidr { addr, len });
    prefix(r.v6, r.lo, width(r.v6) - u32::from(len))
}

/// A random prefix inside a small window, so that sets overlap often.
fn random_cidr(rng: &mut Rng, v6: bool) -> Cidr {
    let len = 20 + rng.below(13) as u8; // 20..=32 bits of the window
    let bits = rng.next_u64() as u32 & 0x0000_3fff; // 14 free bits
    if v6 {
        let base: u128 = 0xfd00_0000_0000_0000_0000_0000_0000_0000;
        let a = base | (u128::from(bits) << 96);
        let len = len + 96;
        masked(IpAddr::V6(Ipv6Addr::from(a)), len)
    } else {
        let a = 0x0a00_0000 | (bits << 8) | (rng.next_u64() as u32 & 0xff);
        masked(IpAddr::V4(Ipv4Addr::from(a)), len)
    }
}

fn random_list(rng: &mut Rng, n: usize) -> Vec<Cidr> {
    (0..n)
        .map(|_| {
            let v6 = rng.chance(40);
            random_cidr(rng, v6)
        })
        .collect()
}

#[test]
fn agrees_with_the_pairwise_version_on_random_sets() {
    let mut rng = Rng::new(15);
    for round in 0..400 {
        let (ni, ne) = (1 + rng.below(40), rng.below(30));
        let include = random_list(&mut rng, ni);
        let exclude = random_list(&mut rng, ne);
        assert_eq!(
            normalize(include.clone()),
            naive_normalize(include.clone()),
            "normalize, round {round}"
        );
        let got = minus(&include, &exclude);
        assert_eq!(got, naive_minus(&include, &exclude), "minus, round {round}");
        for x in &exclude {
            let naive = got.iter().any(|o| o.overlaps(x));
            assert_eq!(
                overlaps_any(&got, x),
                naive,
                "overlap of {x}, round {round}"
            );
        }
    }
}

#[test]
fn whole_address_spaces() {
    assert_eq!(minus(&[c("0.0.0.0/0")], &[c("0.0.0.0/0")]), vec![]);
    assert_eq!(minus(&[c("::/0")], &[c("::/1")]), vec![c("8000::/1")]);
    assert_eq!(
        minus(
            &[c("::/0")],
            &[c("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128")]
        )
        .len(),
        128
    );
    assert_eq!(
        minus(&[c("0.0.0.0/0"), c("::/0")], &[c("255.255.255.255/32")]).len(),
        33
    );
}

#[test]
fn splits_around_holes() {
    assert_eq!(
        minus(&[c("10.0.0.0/30")], &[c("10.0.0.1/32")]),
        vec![c("10.0.0.0/32"), c("10.0.0.2/31")]
    );
    assert_eq!(
        minus(&[c("10.0.0.0/8")], &[c("10.0.0.0/9")]),
        vec![c("10.128.0.0/9")]
    );
}
