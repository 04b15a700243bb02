//! Endpoints declared in the source (`endpoint` statements) against a
//! runtime inventory: an inventory replaces only the inventory file's
//! endpoints; the declared ones stay until the next compile.

use std::collections::HashMap;
use std::net::IpAddr;

use super::record::{manifest_endpoints, EndpointRec};
use crate::contract::Manifest;

/// The manifest's endpoints split by origin: (from an inventory file,
/// declared in the source). `weir endpoints` replaces only the first:
/// a runtime inventory is the inventory file's new version, and the
/// source's `endpoint` statements stay until the next compile.
pub fn split_declared(m: &Manifest) -> (Vec<EndpointRec>, Vec<EndpointRec>) {
    let (declared, inv): (Vec<_>, Vec<_>) = manifest_endpoints(m)
        .into_iter()
        .zip(&m.endpoints)
        .partition(|(_, e)| e.declared);
    (
        inv.into_iter().map(|(r, _)| r).collect(),
        declared.into_iter().map(|(r, _)| r).collect(),
    )
}

/// Source-declared endpoints out of an update: `old` loses every
/// endpoint named like a declared one (an inventory that leaves it out
/// does not remove it), `new` loses those identical to a declared one (an
/// inventory may list it unchanged). Refused: a new endpoint with a
/// declared endpoint's name but other labels, readiness or addresses, or
/// with a declared endpoint's address.
pub fn filter_declared(
    declared: &[EndpointRec],
    old: Vec<EndpointRec>,
    new: Vec<EndpointRec>,
) -> (Vec<EndpointRec>, Vec<EndpointRec>, Vec<String>) {
    if declared.is_empty() {
        return (old, new, Vec::new());
    }
    let names: HashMap<&str, &EndpointRec> =
        declared.iter().map(|e| (e.name.as_str(), e)).collect();
    let addrs: HashMap<IpAddr, &str> = declared
        .iter()
        .flat_map(|e| e.addrs.iter().map(move |a| (*a, e.name.as_str())))
        .collect();
    let old = old
        .into_iter()
        .filter(|e| !names.contains_key(e.name.as_str()))
        .collect();
    let mut refused = Vec::new();
    let mut kept = Vec::with_capacity(new.len());
    for e in new {
        match names.get(e.name.as_str()) {
            Some(d) if **d == e => continue,
            Some(_) => refused.push(format!(
                "endpoint `{}` is declared in the source; an inventory cannot change it (change the source and recompile)",
                e.name
            )),
            None => {}
        }
        for a in &e.addrs {
            if let Some(owner) = addrs.get(a).filter(|o| **o != e.name) {
                refused.push(format!(
                    "address {a} of `{}` belongs to `{owner}`, declared in the source",
                    e.name
                ));
            }
        }
        kept.push(e);
    }
    (old, kept, refused)
}
