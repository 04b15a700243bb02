//! Naming joint classes as a person reads them: endpoint names (a class's
//! endpoints behave identically in both programs, so they are listed
//! together, or summarized by the labels they share when there are many),
//! CIDRs for addresses no endpoint has, and "any other IPv4 address" (or
//! IPv6) for the rest of a family's address space. A joint class holds
//! one address family, so a dual-stack endpoint is in one group per
//! family, named with the family it is: "web (IPv4)".

use super::space::{Joint, Space};
use crate::cidrs;
use crate::model::{Cidr, Model};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// A source or destination group of the diff: one joint class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The joint class (index into the diff's space).
    pub joint: usize,
    /// The display name (see the module docs).
    pub name: String,
    /// Endpoints all of whose addresses of the group's family are in this
    /// group, sorted.
    pub endpoints: Vec<String>,
    /// Endpoints only some of whose addresses are here: (name, address).
    pub partial: Vec<(String, IpAddr)>,
    /// Addresses of no endpoint, as disjoint prefixes.
    pub cidrs: Vec<Cidr>,
    /// Also every address of its family in no other group.
    pub other: bool,
    /// A service frontend address, with the services that use it.
    pub frontend: Option<(IpAddr, Vec<String>)>,
}

/// Endpoint name → its addresses and labels, over both programs (the
/// inventories may differ).
struct Endpoints {
    addrs: BTreeMap<String, BTreeSet<IpAddr>>,
    labels: BTreeMap<String, BTreeMap<String, String>>,
}

impl Endpoints {
    fn of(old: &Model, new: &Model) -> Endpoints {
        let mut addrs: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
        let mut labels = BTreeMap::new();
        for m in [old, new] {
            for e in &m.endpoints {
                addrs
                    .entry(e.name.clone())
                    .or_default()
                    .extend(e.addrs.iter().copied());
                labels.insert(e.name.clone(), (*e.labels).clone());
            }
        }
        Endpoints { addrs, labels }
    }
}

const LIST: usize = 4;

/// Merged address intervals: (IPv6, first, last).
type Interval = (bool, u128, u128);

fn intervals(cidrs: &[Cidr]) -> Vec<Interval> {
    let mut v: Vec<Interval> = cidrs
        .iter()
        .map(|c| {
            let (v6, bits, x) = match c.addr {
                IpAddr::V4(a) => (false, 32u32, u128::from(u32::from(a))),
                IpAddr::V6(a) => (true, 128u32, u128::from(a)),
            };
            let host = bits - u32::from(c.len);
            let span = if host >= 128 {
                u128::MAX
            } else {
                (1u128 << host) - 1
            };
            (v6, x, x | span)
        })
        .collect();
    v.sort_unstable();
    let mut out: Vec<Interval> = Vec::with_capacity(v.len());
    for (v6, lo, hi) in v {
        match out.last_mut() {
            Some(l) if l.0 == v6 && lo <= l.2.saturating_add(1) => l.2 = l.2.max(hi),
            _ => out.push((v6, lo, hi)),
        }
    }
    out
}

fn addr(v6: bool, x: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(x.into())
    } else {
        IpAddr::V4((x as u32).into())
    }
}

/// A prefix when the interval is one, else `first–last`.
fn interval_text(&(v6, lo, hi): &Interval) -> String {
    let size = hi - lo;
    let bits = if v6 { 128 } else { 32 };
    if size.wrapping_add(1) & size == 0 && lo & size == 0 {
        let len = bits - (128 - size.leading_zeros()).min(bits);
        return format!("{}/{len}", addr(v6, lo));
    }
    format!("{}–{}", addr(v6, lo), addr(v6, hi))
}

/// The named set (of either program) that is exactly these addresses.
fn named_set(iv: &[Interval], old: &Model, new: &Model) -> Option<String> {
    for m in [new, old] {
        for (name, set) in &m.named_sets {
            if intervals(&cidrs::minus(&set.include, &set.exclude)) == iv {
                return Some(name.clone());
            }
        }
    }
    None
}

fn list<T: std::fmt::Display>(xs: &[T]) -> String {
    let shown: Vec<String> = xs.iter().take(LIST).map(|x| x.to_string()).collect();
    match xs.len().checked_sub(LIST) {
        Some(more) if more > 0 => format!("{} (+{more} more)", shown.join(", ")),
        _ => shown.join(", "),
    }
}

fn endpoint_text(names: &[String], eps: &Endpoints) -> String {
    if names.len() <= LIST {
        return names.join(", ");
    }
    // The labels every endpoint of the group has.
    let mut common: Option<BTreeMap<String, String>> = None;
    for n in names {
        let l = eps.labels.get(n).cloned().unwrap_or_default();
        common = Some(match common {
            None => l,
            Some(c) => c.into_iter().filter(|(k, v)| l.get(k) == Some(v)).collect(),
        });
    }
    let common = common.unwrap_or_default();
    if common.is_empty() {
        return list(names);
    }
    let labels: Vec<String> = common.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{} endpoints with {}", names.len(), labels.join(", "))
}

/// Groups for the joint classes `used`, in that order.
pub fn groups(
    space: &Space,
    old: &Model,
    new: &Model,
    used: &[usize],
    classify: impl Fn(IpAddr) -> usize,
) -> Vec<Group> {
    let eps = Endpoints::of(old, new);
    let mut whole: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut partial: BTreeMap<usize, Vec<(String, IpAddr)>> = BTreeMap::new();
    // Joint classes holding a dual-stack endpoint whole: their name says
    // which of its families they are.
    let mut dual: BTreeSet<usize> = BTreeSet::new();
    let mut endpoint_hosts: BTreeSet<IpAddr> = BTreeSet::new();
    for (name, addrs) in &eps.addrs {
        endpoint_hosts.extend(addrs.iter().copied());
        let both = addrs.iter().any(|a| a.is_ipv4()) && addrs.iter().any(|a| a.is_ipv6());
        // Per family: a joint class holds one family only.
        for v6 in [false, true] {
            let fam: Vec<IpAddr> = addrs
                .iter()
                .copied()
                .filter(|a| a.is_ipv6() == v6)
                .collect();
            let js: BTreeSet<usize> = fam.iter().map(|&a| classify(a)).collect();
            match js.first() {
                None => {}
                Some(&j) if js.len() == 1 => {
                    whole.entry(j).or_default().push(name.clone());
                    if both {
                        dual.insert(j);
                    }
                }
                Some(_) => {
                    for &a in &fam {
                        partial
                            .entry(classify(a))
                            .or_default()
                            .push((name.clone(), a));
                    }
                }
            }
        }
    }
    let services = |a: IpAddr| -> Vec<String> {
        let mut v: BTreeSet<String> = BTreeSet::new();
        for m in [old, new] {
            for s in &m.services {
                if s.frontends.iter().any(|f| f.addr == a) {
                    v.insert(s.name.clone());
                }
            }
        }
        v.into_iter().collect()
    };
    used.iter()
        .map(|&j| {
            let joint: &Joint = &space.joints[j];
            let endpoints = whole.get(&j).cloned().unwrap_or_default();
            let partial = partial.get(&j).cloned().unwrap_or_default();
            let cidrs: Vec<Cidr> = joint
                .cidrs
                .iter()
                .filter(|c| !(c.len == Cidr::host(c.addr).len && endpoint_hosts.contains(&c.addr)))
                .copied()
                .collect();
            let frontend = joint.frontend.map(|a| (a, services(a)));
            let mut parts = Vec::new();
            if !endpoints.is_empty() {
                let mut t = endpoint_text(&endpoints, &eps);
                if dual.contains(&j) {
                    t.push_str(if joint.v6 { " (IPv6)" } else { " (IPv4)" });
                }
                parts.push(t);
            }
            if !partial.is_empty() {
                let p: Vec<String> = partial.iter().map(|(n, a)| format!("{n} ({a})")).collect();
                parts.push(list(&p));
            }
            if let Some((a, svcs)) = &frontend {
                parts.push(format!("{a} (frontend of {})", svcs.join(", ")));
            } else if !cidrs.is_empty() {
                let iv = intervals(&cidrs);
                match named_set(&iv, old, new) {
                    Some(n) => parts.push(format!("set {n}")),
                    None => {
                        let t: Vec<String> = iv.iter().map(interval_text).collect();
                        parts.push(list(&t));
                    }
                }
            }
            if joint.other {
                parts.push(if joint.v6 {
                    "any other IPv6 address".into()
                } else {
                    "any other IPv4 address".into()
                });
            }
            Group {
                joint: j,
                name: parts.join(", "),
                endpoints,
                partial,
                cidrs,
                other: joint.other,
                frontend,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        let (a, l) = s.split_once('/').unwrap();
        Cidr {
            addr: a.parse().unwrap(),
            len: l.parse().unwrap(),
        }
    }

    #[test]
    fn adjacent_prefixes_read_as_one_range_or_prefix() {
        let iv = intervals(&[
            cidr("10.0.0.0/25"),
            cidr("10.0.0.128/25"),
            cidr("10.0.1.0/31"),
        ]);
        let t: Vec<String> = iv.iter().map(interval_text).collect();
        assert_eq!(t, ["10.0.0.0–10.0.1.1"]);
        let iv = intervals(&[cidr("10.0.0.0/25"), cidr("10.0.0.128/25")]);
        assert_eq!(interval_text(&iv[0]), "10.0.0.0/24");
        let iv = intervals(&[cidr("0.0.0.0/0"), cidr("::/0")]);
        let t: Vec<String> = iv.iter().map(interval_text).collect();
        assert_eq!(t, ["0.0.0.0/0", "::/0"]);
        let iv = intervals(&[cidr("fd00::/64"), cidr("fd00:0:0:1::/64")]);
        assert_eq!(interval_text(&iv[0]), "fd00::/63");
    }

    #[test]
    fn long_lists_are_cut() {
        let xs: Vec<String> = (0..6).map(|i| format!("e{i}")).collect();
        assert_eq!(list(&xs), "e0, e1, e2, e3 (+2 more)");
        assert_eq!(list(&xs[..2]), "e0, e1");
    }
}
