//! `self` decided in the data path: "the source and destination addresses
//! belong to the same endpoint" (`Cond::SameEndpoint`).
//!
//! The meaning is the interpreter's (docs/language.md §4: `self` is "the
//! peer address belongs to E", E the judged endpoint, and the judged
//! endpoint of a side is the owner of the subject address). Deciding it
//! on classes needed one identity atom per endpoint a `self` policy
//! selects, so every such endpoint was a class and a chain of its own and
//! any pod churn under `allow from self` (every Kubernetes import) needed
//! a recompile. Here endpoint membership is data beside the program:
//!
//! - **eBPF**: per family an exact-match hash `address → the endpoint's
//!   canonical address` (`weir_self4`, `weir_self6`; the canonical address
//!   is the endpoint's smallest address of that family). The test looks
//!   up both addresses and compares the values: both found and equal.
//!   Addresses are owned by one endpoint each (E0210), so the canonical
//!   address names the endpoint without any id to allocate.
//! - **iptables**: per family an ipset `hash:net,net` of `(a, b)` pairs
//!   for every two addresses of one endpoint of that family (`a = b`
//!   included), matched `src,dst`.
//!
//! A packet's two addresses are of one family, so only same-family pairs
//! matter. Endpoint churn ([`crate::churn::self_relation`]) updates these
//! entries as it updates class-map entries; the classes no longer depend
//! on which endpoint an address belongs to, only on its labels and sets.
//!
//! This file is the one rule for the relation's contents: the graph
//! evaluator, the compile-time fill of both back ends and the churn path
//! all call [`entries`] / [`pairs`].

use crate::model::{Model, PeerMatch};
use rustc_hash::FxHashMap as HashMap;
use std::net::IpAddr;

/// Does any policy rule (audit ones too) use the `self` peer? Then the
/// program carries the relation.
pub fn uses_self(model: &Model) -> bool {
    model.policies.iter().any(|p| {
        [&p.ingress, &p.egress]
            .into_iter()
            .flatten()
            .flatten()
            .any(|r| r.peer == PeerMatch::SelfEndpoint)
    })
}

/// Endpoint membership of the model's addresses (empty when the model
/// has no `self` rule): what [`Cond::SameEndpoint`] asks at compile time.
///
/// [`Cond::SameEndpoint`]: super::ir::Cond::SameEndpoint
#[derive(Debug, Clone, Default)]
pub struct SameEndpoint {
    /// Address → index of the endpoint that owns it (the first that
    /// lists it, as the interpreter's address index).
    owner: HashMap<IpAddr, u32>,
}

impl SameEndpoint {
    pub fn build(model: &Model) -> SameEndpoint {
        let mut owner = HashMap::default();
        if uses_self(model) {
            for (i, e) in model.endpoints.iter().enumerate() {
                for &a in &e.addrs {
                    owner.entry(a).or_insert(i as u32);
                }
            }
        }
        SameEndpoint { owner }
    }

    /// The endpoint (its model index) that owns `a`, when the model has a
    /// `self` rule.
    pub fn owner(&self, a: IpAddr) -> Option<u32> {
        self.owner.get(&a).copied()
    }

    /// Do `a` and `b` belong to the same endpoint?
    pub fn same(&self, a: IpAddr, b: IpAddr) -> bool {
        match (self.owner.get(&a), self.owner.get(&b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        }
    }

    /// The addresses each model endpoint owns, for the back ends' fill
    /// (in endpoint order; endpoints owning none left out).
    pub fn owned(&self, model: &Model) -> Vec<Vec<IpAddr>> {
        let mut out: Vec<Vec<IpAddr>> = vec![Vec::new(); model.endpoints.len()];
        for (i, e) in model.endpoints.iter().enumerate() {
            for &a in &e.addrs {
                if self.owner.get(&a) == Some(&(i as u32)) && !out[i].contains(&a) {
                    out[i].push(a);
                }
            }
        }
        out.retain(|v| !v.is_empty());
        out
    }
}

/// The eBPF entries of one endpoint's addresses: `(address, canonical)`,
/// the canonical address being the smallest of the same family.
pub fn entries(addrs: &[IpAddr]) -> Vec<(IpAddr, IpAddr)> {
    let min_of = |v4: bool| addrs.iter().filter(|a| a.is_ipv4() == v4).min().copied();
    let (m4, m6) = (min_of(true), min_of(false));
    let mut out: Vec<(IpAddr, IpAddr)> = addrs
        .iter()
        .map(|&a| (a, if a.is_ipv4() { m4 } else { m6 }.expect("a's family")))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The iptables members of one endpoint's addresses: `(a, b)` for every
/// two addresses of the same family (each with itself included).
pub fn pairs(addrs: &[IpAddr]) -> Vec<(IpAddr, IpAddr)> {
    let mut out: Vec<(IpAddr, IpAddr)> = addrs
        .iter()
        .flat_map(|&a| {
            addrs
                .iter()
                .filter(move |b| b.is_ipv4() == a.is_ipv4())
                .map(move |&b| (a, b))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn entries_name_the_smallest_address_of_each_family() {
        let e = entries(&[ip("10.0.0.9"), ip("fd00::2"), ip("10.0.0.3"), ip("fd00::1")]);
        assert_eq!(
            e,
            [
                (ip("10.0.0.3"), ip("10.0.0.3")),
                (ip("10.0.0.9"), ip("10.0.0.3")),
                (ip("fd00::1"), ip("fd00::1")),
                (ip("fd00::2"), ip("fd00::1")),
            ]
        );
    }

    #[test]
    fn pairs_stay_within_a_family() {
        let p = pairs(&[ip("10.0.0.1"), ip("10.0.0.2"), ip("fd00::1")]);
        assert_eq!(
            p,
            [
                (ip("10.0.0.1"), ip("10.0.0.1")),
                (ip("10.0.0.1"), ip("10.0.0.2")),
                (ip("10.0.0.2"), ip("10.0.0.1")),
                (ip("10.0.0.2"), ip("10.0.0.2")),
                (ip("fd00::1"), ip("fd00::1")),
            ]
        );
    }
}
