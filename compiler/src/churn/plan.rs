//! Update planning: which addresses appear, disappear or change class
//! between the endpoints in force and a new inventory, and the same in
//! endpoint names (`--dry-run`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use serde::Serialize;

use super::placement::{ClassView, Placement};
use super::record::{unique, EndpointRec};
use crate::graph::classes::ClassId;

/// An inventory update in endpoint names, for `weir endpoints --dry-run`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NamePlan {
    /// Endpoints that appear.
    pub added: Vec<EndpointRec>,
    /// Endpoints that disappear.
    pub removed: Vec<EndpointRec>,
    /// Endpoints whose labels, readiness or addresses change: (before,
    /// after).
    pub changed: Vec<(EndpointRec, EndpointRec)>,
}

/// [`NamePlan`] of the endpoints that differ (`old`, `new`: the changed
/// endpoints' versions, or two whole inventories).
pub fn name_plan(old: &[EndpointRec], new: &[EndpointRec]) -> NamePlan {
    let before: BTreeMap<&str, &EndpointRec> = old.iter().map(|e| (e.name.as_str(), e)).collect();
    let after: BTreeMap<&str, &EndpointRec> = new.iter().map(|e| (e.name.as_str(), e)).collect();
    let mut p = NamePlan::default();
    for (name, e) in &after {
        match before.get(name) {
            None => p.added.push((*e).clone()),
            Some(b) if b != e => p.changed.push(((*b).clone(), (*e).clone())),
            Some(_) => {}
        }
    }
    for (name, e) in &before {
        if !after.contains_key(name) {
            p.removed.push((*e).clone());
        }
    }
    p
}

/// The endpoints that differ between `old` and `new` (by name: present in
/// one only, or with other labels, readiness or addresses), each side in
/// its inventory's order. `None` when a name or an address appears twice
/// in either inventory (then only the full comparison is exact).
pub fn changed_endpoints(
    old: &[EndpointRec],
    new: &[EndpointRec],
) -> Option<(Vec<EndpointRec>, Vec<EndpointRec>)> {
    if !unique(old) || !unique(new) {
        return None;
    }
    let by_name: HashMap<&str, &EndpointRec> = old.iter().map(|e| (e.name.as_str(), e)).collect();
    let same: std::collections::HashSet<&str> = new
        .iter()
        .filter(|e| by_name.get(e.name.as_str()).is_some_and(|o| *o == *e))
        .map(|e| e.name.as_str())
        .collect();
    let pick = |eps: &[EndpointRec]| -> Vec<EndpointRec> {
        eps.iter()
            .filter(|e| !same.contains(e.name.as_str()))
            .cloned()
            .collect()
    };
    Some((pick(old), pick(new)))
}

/// [`plan`] when `old` was accepted before against the same view (every
/// address placed in a compiled class, no name or address twice — the
/// inventory recorded after an update, or the bundle's compiled one):
/// endpoints identical in both inventories keep their addresses and
/// classes, so only the others are placed. Falls back to [`plan`] when a
/// name or address appears twice in either inventory.
pub fn plan_update(view: &ClassView, old: &[EndpointRec], new: &[EndpointRec]) -> Plan {
    match changed_endpoints(old, new) {
        Some((o, n)) => plan(view, &o, &n),
        None => plan(view, old, new),
    }
}

/// One address whose class changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddrChange {
    pub addr: IpAddr,
    /// The endpoint that owns it now (or owned it, for a removal).
    pub endpoint: String,
    /// Class before (`None`: not an endpoint address).
    pub old: Option<ClassId>,
    /// Class after (`None`: no longer an endpoint address).
    pub new: Option<ClassId>,
    /// Class of the address without an endpoint (its set atoms): what
    /// the class map must give after a removal.
    pub base: ClassId,
}

/// What an inventory update changes.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Addresses that appear, disappear or change class (sorted).
    pub changes: Vec<AddrChange>,
    /// Reasons the update cannot be applied without a recompile or is
    /// malformed; when non-empty nothing may be applied.
    pub refused: Vec<String>,
}

/// Compares the applied endpoints with the new inventory.
pub fn plan(view: &ClassView, old: &[EndpointRec], new: &[EndpointRec]) -> Plan {
    let mut refused = Vec::new();
    let index = |eps: &[EndpointRec], refused: &mut Vec<String>, check: bool| {
        let mut m: BTreeMap<IpAddr, (String, ClassId)> = BTreeMap::new();
        let mut names = BTreeSet::new();
        for e in eps {
            if check && !names.insert(e.name.clone()) {
                refused.push(format!("endpoint `{}` appears twice", e.name));
            }
            for &a in &e.addrs {
                let class = match view.place(a, &e.name, &e.labels) {
                    Placement::Existing(c) => c,
                    Placement::New(sig) => {
                        if check {
                            refused.push(format!(
                                "endpoint `{}` needs a recompile: address {a} with labels {} satisfies a combination of selectors and sets that no compiled class has ({}); classes cannot be added at run time",
                                e.name,
                                serde_json::to_string(&e.labels).unwrap_or_default(),
                                view.describe(&sig)
                            ));
                        }
                        continue;
                    }
                };
                if let Some((other, _)) = m.get(&a) {
                    if check && other != &e.name {
                        refused.push(format!(
                            "address {a} belongs to both `{other}` and `{}`",
                            e.name
                        ));
                    }
                    continue;
                }
                m.insert(a, (e.name.clone(), class));
            }
        }
        m
    };
    let before = index(old, &mut refused, false);
    let after = index(new, &mut refused, true);
    let mut changes = Vec::new();
    let addrs: BTreeSet<IpAddr> = before.keys().chain(after.keys()).copied().collect();
    for a in addrs {
        let (b, n) = (before.get(&a), after.get(&a));
        let (old_c, new_c) = (b.map(|x| x.1), n.map(|x| x.1));
        if old_c == new_c {
            continue;
        }
        changes.push(AddrChange {
            addr: a,
            endpoint: n.or(b).map(|x| x.0.clone()).unwrap_or_default(),
            old: old_c,
            new: new_c,
            base: view.base_class(a),
        });
    }
    Plan { changes, refused }
}
