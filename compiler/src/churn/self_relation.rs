//! `self` under endpoint churn: which entries of the endpoint relation an
//! inventory update changes (`graph/same_endpoint.rs` is the relation;
//! this file only compares two versions of it).
//!
//! Classes no longer depend on which endpoint owns an address, so an
//! endpoint that appears, disappears or moves under `allow from self` is
//! placed like any other ([`super::plan`]); what changes besides its
//! class-map entries is the relation:
//!
//! - eBPF ([`ebpf_changes`]): `weir_self4` / `weir_self6` entries
//!   `address → canonical address`, deleted and written;
//! - iptables ([`iptables_changes`]): members `ADDR skbmark ID` of the id
//!   sets (`iptables/self_set.rs`). An endpoint keeps the id its addresses
//!   have in the live set; a new one takes the smallest id not in use.
//!
//! Both take the changed endpoints' old and new versions (or two whole
//! inventories), as the class plan does, and are applied in the same
//! batch as the class changes, so a reader never sees an endpoint in its
//! new class without its relation entries (eBPF writes them first, see
//! `runtime/src/endpoints/ebpf_update.rs`; iptables swaps the sets).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::record::EndpointRec;
use crate::graph::same_endpoint::entries;

/// Changes to the eBPF relation maps, applied deletes first: an entry
/// whose value changes is deleted before any entry is written, so while
/// the update runs no two addresses compare equal unless they belong to
/// one endpoint before or after it (a deleted address is nobody's: `self`
/// does not match it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelfChanges {
    /// Addresses whose entry goes or changes.
    pub delete: Vec<IpAddr>,
    /// Entries `(address, canonical)` written (new or changed).
    pub write: Vec<(IpAddr, IpAddr)>,
}

impl SelfChanges {
    pub fn is_empty(&self) -> bool {
        self.delete.is_empty() && self.write.is_empty()
    }
}

/// The relation's entries of some endpoints: address → canonical.
fn relation(eps: &[EndpointRec]) -> BTreeMap<IpAddr, IpAddr> {
    eps.iter().flat_map(|e| entries(&owned(e))).collect()
}

/// An endpoint's addresses, each once.
fn owned(e: &EndpointRec) -> Vec<IpAddr> {
    let set: BTreeSet<IpAddr> = e.addrs.iter().copied().collect();
    set.into_iter().collect()
}

/// The eBPF relation entries that differ between `old` and `new` (the
/// changed endpoints' versions, or two whole inventories).
pub fn ebpf_changes(old: &[EndpointRec], new: &[EndpointRec]) -> SelfChanges {
    let (before, after) = (relation(old), relation(new));
    SelfChanges {
        delete: before
            .iter()
            .filter(|(a, c)| after.get(a) != Some(c))
            .map(|(a, _)| *a)
            .collect(),
        write: after
            .iter()
            .filter(|(a, c)| before.get(a) != Some(c))
            .map(|(a, c)| (*a, *c))
            .collect(),
    }
}

/// Changes to the iptables id sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdChanges {
    /// Addresses removed from their family's id set.
    pub delete: Vec<IpAddr>,
    /// Members `(address, id)` added (an address already there is
    /// replaced).
    pub add: Vec<(IpAddr, u32)>,
}

/// The id-set changes for the changed endpoints (`old`, `new`), given the
/// live members (`live`: address → id) and the largest id (`max`).
/// `Err` when no id is free.
pub fn iptables_changes(
    live: &BTreeMap<IpAddr, u32>,
    old: &[EndpointRec],
    new: &[EndpointRec],
    max: u32,
) -> Result<IdChanges, String> {
    let gone: BTreeSet<IpAddr> = old.iter().flat_map(owned).collect();
    let mut in_use: BTreeSet<u32> = live
        .iter()
        .filter(|(a, _)| !gone.contains(a))
        .map(|(_, id)| *id)
        .collect();
    // An endpoint keeps the id its old version's addresses have.
    let old_id: BTreeMap<&str, u32> = old
        .iter()
        .filter_map(|e| {
            let id = e.addrs.iter().find_map(|a| live.get(a))?;
            Some((e.name.as_str(), *id))
        })
        .collect();
    let mut want: BTreeMap<IpAddr, u32> = BTreeMap::new();
    let mut next = 1u32;
    for e in new {
        let addrs = owned(e);
        if addrs.is_empty() {
            continue;
        }
        let id = match old_id.get(e.name.as_str()) {
            Some(&id) if !in_use.contains(&id) => id,
            _ => {
                while in_use.contains(&next) {
                    next += 1;
                }
                if next > max {
                    return Err(format!(
                        "endpoint `{}` needs a `self` id and all {max} are in use; recompile with the new inventory",
                        e.name
                    ));
                }
                next
            }
        };
        in_use.insert(id);
        for a in addrs {
            want.insert(a, id);
        }
    }
    Ok(IdChanges {
        delete: gone
            .iter()
            .filter(|a| live.contains_key(a) && !want.contains_key(a))
            .copied()
            .collect(),
        add: want
            .into_iter()
            .filter(|(a, id)| live.get(a) != Some(id))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(name: &str, addrs: &[&str]) -> EndpointRec {
        EndpointRec {
            name: name.into(),
            labels: Default::default(),
            ready: true,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_new_endpoint_writes_its_entries_and_a_removed_one_deletes_them() {
        let c = ebpf_changes(&[], &[ep("a", &["10.0.0.2", "10.0.0.1"])]);
        assert_eq!(
            c.write,
            [
                (ip("10.0.0.1"), ip("10.0.0.1")),
                (ip("10.0.0.2"), ip("10.0.0.1"))
            ]
        );
        let c = ebpf_changes(&[ep("a", &["10.0.0.1"])], &[]);
        assert_eq!(c.delete, [ip("10.0.0.1")]);
        // `a`'s address moves to `b` and becomes b's canonical one: b's
        // other address changes value (deleted first, then written); the
        // moved one keeps its value.
        let c = ebpf_changes(
            &[ep("a", &["10.0.0.1"]), ep("b", &["10.0.0.9"])],
            &[ep("b", &["10.0.0.1", "10.0.0.9"])],
        );
        assert_eq!(c.delete, [ip("10.0.0.9")]);
        assert_eq!(c.write, [(ip("10.0.0.9"), ip("10.0.0.1"))]);
    }

    #[test]
    fn ids_are_kept_reused_and_never_shared() {
        let live: BTreeMap<IpAddr, u32> = [(ip("10.0.0.1"), 1), (ip("10.0.0.2"), 2)].into();
        // `b` moves to a new address and keeps id 2; `c` is new: id 3.
        let c = iptables_changes(
            &live,
            &[ep("b", &["10.0.0.2"])],
            &[ep("b", &["10.0.0.5"]), ep("c", &["10.0.0.6"])],
            10,
        )
        .unwrap();
        assert_eq!(c.delete, [ip("10.0.0.2")]);
        assert_eq!(c.add, [(ip("10.0.0.5"), 2), (ip("10.0.0.6"), 3)]);
        // A removed endpoint frees its id for the next one.
        let c = iptables_changes(
            &live,
            &[ep("a", &["10.0.0.1"])],
            &[ep("d", &["10.0.0.7"])],
            10,
        )
        .unwrap();
        assert_eq!(c.add, [(ip("10.0.0.7"), 1)]);
        // No id left: refused.
        assert!(iptables_changes(&live, &[], &[ep("e", &["10.0.0.8"])], 2).is_err());
    }
}
