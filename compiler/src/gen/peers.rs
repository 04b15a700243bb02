//! The generator's `self`, `world` and `default pass` draws.
//!
//! Applied to a finished model from a generator of its own (seeded from
//! the model's seed), so the draws of [`super::model`] are unchanged: a
//! seed's model differs from before only by these constructs. A model
//! that gets a `self` rule also gets second IPv4 addresses for some
//! endpoints, so `self` is seen between two addresses of one endpoint
//! (what a network-namespace harness can send) and not only from an
//! address to itself; [`self_packets`] aims packets at it.

use super::{v4, Rng};
use crate::interp::Packet;
use crate::model::{Model, PeerMatch};
use std::net::IpAddr;

/// Sometimes: tiers that pass when nothing matched, rules whose peer is
/// `self`, `world` or `world SET` (the rule's own set: IPv4 or IPv6).
pub fn sprinkle(m: &mut Model, seed: u64) {
    let mut rng = Rng::new(seed ^ 0x5E1F_0A1D);
    for t in &mut m.tiers {
        t.default_pass = rng.chance(35);
    }
    let mut has_self = false;
    for p in &mut m.policies {
        for rules in [&mut p.ingress, &mut p.egress].into_iter().flatten() {
            for r in rules.iter_mut() {
                match rng.below(100) {
                    0..=9 => {
                        r.peer = PeerMatch::SelfEndpoint;
                        has_self = true;
                    }
                    10..=15 => r.peer = PeerMatch::World(None),
                    16..=30 => {
                        if let PeerMatch::Set(s) = &r.peer {
                            r.peer = PeerMatch::World(Some(s.clone()));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    if has_self {
        for (i, e) in m.endpoints.iter_mut().enumerate() {
            if rng.chance(50) {
                e.addrs.push(v4(10, 0, 2, 10 + i as u8));
            }
        }
    }
}

/// Sometimes turns a set peer into `world SET` (after [`super::dual_stack`]
/// added its IPv6 sets).
pub fn worlds(m: &mut Model, seed: u64) {
    let mut rng = Rng::new(seed ^ 0x3041_D5E7);
    for p in &mut m.policies {
        for rules in [&mut p.ingress, &mut p.egress].into_iter().flatten() {
            for r in rules.iter_mut() {
                if let PeerMatch::Set(s) = &r.peer {
                    if rng.chance(20) {
                        r.peer = PeerMatch::World(Some(s.clone()));
                    }
                }
            }
        }
    }
}

/// Packets from an endpoint address to itself and to its endpoint's
/// other address of the family, when the model has a `self` rule (else
/// none): the packets `self` decides. At most [`SELF_PACKETS`], pairs of
/// two addresses first (what a network-namespace harness can send).
pub fn self_packets(m: &Model, template: &[Packet]) -> Vec<Packet> {
    let uses_self = m.policies.iter().any(|p| {
        [&p.ingress, &p.egress]
            .into_iter()
            .flatten()
            .flatten()
            .any(|r| r.peer == PeerMatch::SelfEndpoint)
    });
    if !uses_self || template.is_empty() {
        return Vec::new();
    }
    let mut pairs: Vec<(IpAddr, IpAddr)> = Vec::new();
    for e in &m.endpoints {
        for &a in &e.addrs {
            let same: Vec<IpAddr> = e
                .addrs
                .iter()
                .copied()
                .filter(|b| b.is_ipv4() == a.is_ipv4())
                .collect();
            pairs.extend(same.into_iter().map(|b| (a, b)));
        }
    }
    pairs.sort_by_key(|&(a, b)| (a == b, a, b));
    let mut out = Vec::new();
    for (i, (a, b)) in pairs.into_iter().enumerate() {
        let mut p = template[i % template.len()].clone();
        p.src = a;
        p.dst = b;
        out.push(p);
        if out.len() == SELF_PACKETS {
            break;
        }
    }
    out
}

/// The most packets [`self_packets`] adds to one model's.
pub const SELF_PACKETS: usize = 8;

#[cfg(test)]
mod tests {
    use crate::model::{Model, PeerMatch};

    fn count(models: &[Model], f: impl Fn(&PeerMatch) -> bool) -> usize {
        models
            .iter()
            .flat_map(|m| &m.policies)
            .flat_map(|p| [&p.ingress, &p.egress])
            .flatten()
            .flatten()
            .filter(|r| f(&r.peer))
            .count()
    }

    /// The seeds the kernel differential tests use see every construct:
    /// `self` with packets aimed at it, `world` alone and with IPv4 and
    /// IPv6 sets, and tiers that fall through.
    #[test]
    fn the_differential_seeds_use_the_new_constructs() {
        let v4: Vec<Model> = (0..12).map(crate::gen::model).collect();
        let dual: Vec<Model> = (0..12).map(crate::gen::dual_stack).collect();
        assert!(count(&v4, |p| *p == PeerMatch::SelfEndpoint) >= 3);
        assert!(count(&v4, |p| *p == PeerMatch::World(None)) >= 3);
        let world6 = |p: &PeerMatch| matches!(p, PeerMatch::World(Some(s)) if s.include.iter().any(|c| c.addr.is_ipv6()));
        assert!(count(&dual, world6) >= 1);
        assert!(count(&v4, |p| matches!(p, PeerMatch::World(Some(_)))) >= 3);
        let passing = v4
            .iter()
            .flat_map(|m| &m.tiers)
            .filter(|t| t.default_pass)
            .count();
        assert!(passing >= 3);
        let aimed: usize = v4
            .iter()
            .map(|m| {
                let mut rng = crate::gen::Rng::new(1);
                crate::gen::packets(m, &mut rng, 10)
                    .iter()
                    .filter(|p| {
                        p.src == p.dst
                            || m.endpoints
                                .iter()
                                .any(|e| e.addrs.contains(&p.src) && e.addrs.contains(&p.dst))
                    })
                    .count()
            })
            .sum();
        assert!(aimed >= 10, "{aimed}");
    }
}
