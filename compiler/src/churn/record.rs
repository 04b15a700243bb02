//! The endpoint as churn sees it ([`EndpointRec`]: name, labels,
//! readiness, addresses — what an inventory file holds), how it is read
//! from an inventory file fast, from a checked inventory and from a
//! manifest, and how it is written back as inventory text.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::contract::Manifest;
use crate::inventory::{Inventory, RawEndpoint, RawInventory};

/// An endpoint as the runtime records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRec {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default = "yes")]
    pub ready: bool,
    pub addrs: Vec<IpAddr>,
}

fn yes() -> bool {
    true
}

crate::interp::endpoint_view!(EndpointRec);

impl From<&crate::model::Endpoint> for EndpointRec {
    fn from(e: &crate::model::Endpoint) -> EndpointRec {
        EndpointRec {
            name: e.name.clone(),
            labels: (*e.labels).clone(),
            ready: e.ready,
            addrs: e.addrs.clone(),
        }
    }
}

/// The inventory schema with addresses read as addresses (the fast
/// path: any problem sends the caller to the diagnosing parser).
pub(crate) type FastEndpoint = RawEndpoint<IpAddr>;

impl From<FastEndpoint> for EndpointRec {
    fn from(e: FastEndpoint) -> EndpointRec {
        EndpointRec {
            name: e.name,
            labels: e.labels.into_map(),
            ready: e.ready,
            addrs: e.addrs,
        }
    }
}

impl EndpointRec {
    /// The endpoints of an inventory file (docs/language.md §3) without
    /// locating anything in the text: `None` when the file has any
    /// problem [`crate::inventory::parse_inventory`] would report (then
    /// that gives the diagnostics). The same endpoints as
    /// `from_inventory(&parse_inventory(..).0)` otherwise.
    pub fn parse_inventory(text: &str) -> Option<Vec<EndpointRec>> {
        let mut raw: RawInventory<IpAddr> = serde_json::from_str(text).ok()?;
        raw.derive_namespaces().ok()?;
        raw.endpoints
            .into_iter()
            .map(|e| crate::inventory::valid_name(&e.name).then(|| e.into()))
            .collect()
    }

    pub fn from_inventory(inv: &Inventory) -> Vec<EndpointRec> {
        inv.endpoints
            .iter()
            .map(|e| EndpointRec {
                name: e.name.clone(),
                labels: (*e.labels).clone(),
                ready: e.ready,
                addrs: e.addrs.clone(),
            })
            .collect()
    }
}

/// The endpoints a manifest was compiled with (`endpoints`).
pub fn manifest_endpoints(m: &Manifest) -> Vec<EndpointRec> {
    m.endpoints
        .iter()
        .map(|e| EndpointRec {
            name: e.name.clone(),
            labels: e.labels.clone(),
            ready: e.ready,
            addrs: e.addrs.iter().map(|a| a.addr).collect(),
        })
        .collect()
}

/// The inventory file text of `eps` (the records' own JSON).
pub fn inventory_text(eps: &[EndpointRec]) -> String {
    #[derive(Serialize)]
    struct Inv<'a> {
        endpoints: &'a [EndpointRec],
    }
    serde_json::to_string(&Inv { endpoints: eps }).expect("JSON")
}

/// FxHash (rustc-hash) for the comparisons of whole inventories: the
/// keys are the operator's own names and addresses, nothing iterates
/// these sets into output (the compiler's one FxHash: the `rustc-hash`
/// crate).
pub(crate) type FxBuild = rustc_hash::FxBuildHasher;

/// Does every name and every address appear once in `eps`?
pub fn unique(eps: &[EndpointRec]) -> bool {
    let mut names: std::collections::HashSet<&str, FxBuild> =
        std::collections::HashSet::with_capacity_and_hasher(eps.len(), FxBuild::default());
    let mut addrs: std::collections::HashSet<IpAddr, FxBuild> =
        std::collections::HashSet::with_capacity_and_hasher(eps.len(), FxBuild::default());
    eps.iter()
        .all(|e| names.insert(e.name.as_str()) && e.addrs.iter().all(|a| addrs.insert(*a)))
}
