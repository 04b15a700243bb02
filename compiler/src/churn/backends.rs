//! Selector-backed services at run time: the services of a manifest
//! whose backends are chosen by a label selector, and their backends over
//! an inventory. The rule itself ("ready endpoints whose labels match,
//! their addresses of the frontend's family, sorted") is the
//! interpreter's ([`crate::interp::selector_backends`]); this module only
//! says which endpoints and which backend shape.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::record::EndpointRec;
use crate::contract::{BackendGroup, Manifest};
use crate::ebpf::service::fill::Be;
use crate::endpoint_index::EndpointIndex;
use crate::model::Sel;

/// A selector-backed service of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectorService {
    /// Index in the manifest's (and `LbState`'s) service list.
    pub index: usize,
    pub name: String,
    pub selector: Sel,
    /// Its frontends' backend groups ([`BackendGroup`]: one per family,
    /// or per family and protocol for a named target port), sorted.
    pub groups: Vec<GroupBackends>,
    /// Balanced by Maglev (iptables cannot hash flows: an in-place
    /// update to two or more backends needs the full path); `None` in a
    /// record written before this was recorded (never updated in place).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev: Option<bool>,
}

/// The backends of one group of a selector service's frontends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupBackends {
    pub group: BackendGroup,
    /// The target port; 0 with `port_key`.
    pub port: u16,
    /// A named target port: the label key (`port:NAME/PROTO`,
    /// [`crate::named_ports`]) whose value is each backend's port for
    /// this group's protocol; an endpoint without it is no backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_key: Option<String>,
    /// Backends compiled into the bundle.
    pub compiled: Vec<Be>,
}

/// The manifest's selector-backed services (`services[].backend_selector`).
pub fn selector_services(m: &Manifest) -> Vec<SelectorService> {
    let mut out = Vec::new();
    for s in &m.services {
        let Some(bs) = &s.backend_selector else {
            continue;
        };
        let mut groups: BTreeMap<BackendGroup, GroupBackends> = BTreeMap::new();
        for f in &s.frontends {
            let proto = &f.frontend.proto;
            let group = BackendGroup::of(
                f.frontend.addr.ip(),
                f.frontend.proto_number(),
                bs.per_protocol(),
            );
            groups.entry(group).or_insert_with(|| GroupBackends {
                group,
                port: bs.port,
                port_key: bs.port_keys.get(proto).cloned(),
                compiled: f
                    .backends
                    .iter()
                    .map(|b| Be {
                        addr: b.addr.ip(),
                        port: b.addr.port(),
                        weight: b.weight,
                    })
                    .collect(),
            });
        }
        out.push(SelectorService {
            index: s.index,
            name: s.name.clone(),
            selector: bs.selector.clone(),
            groups: groups.into_values().collect(),
            maglev: Some(s.balance == crate::contract::BalanceName::Maglev),
        });
    }
    out
}

/// The backends `s` has over `endpoints` for its group `g`: the
/// interpreter's rule ([`crate::interp::selector_backends`]), each
/// backend at the group's port with weight 1.
pub fn backends_for(s: &SelectorService, g: &GroupBackends, endpoints: &[EndpointRec]) -> Vec<Be> {
    backends_in(s, g, endpoints, None)
}

/// [`backends_for`] through an [`EndpointIndex`] of `endpoints` (built
/// with `from_labels` over the same slice): the same result without
/// evaluating the selector on every endpoint.
pub fn backends_indexed(
    s: &SelectorService,
    g: &GroupBackends,
    endpoints: &[EndpointRec],
    index: &EndpointIndex<'_>,
) -> Vec<Be> {
    backends_in(s, g, endpoints, Some(index))
}

fn backends_in(
    s: &SelectorService,
    g: &GroupBackends,
    endpoints: &[EndpointRec],
    index: Option<&EndpointIndex<'_>>,
) -> Vec<Be> {
    let ipv4 = g.group.family == 4;
    crate::interp::selector_backends(&s.selector, ipv4, endpoints, index, |e, addr| {
        let port = match &g.port_key {
            None => g.port,
            Some(k) => e.labels.get(k)?.parse().ok().filter(|&p| p != 0)?,
        };
        Some(Be {
            addr,
            port,
            weight: 1,
        })
    })
}

/// The backends of `s` for its group `g` after a change, from those it
/// had (`have`, over the recorded endpoints) and the changed endpoints
/// (both versions): exact when every address appears once in each
/// inventory (an address of a changed endpoint belongs to no other).
pub fn backends_delta(
    s: &SelectorService,
    g: &GroupBackends,
    have: &[Be],
    old_changed: &[EndpointRec],
    new_changed: &[EndpointRec],
) -> Vec<Be> {
    let gone: BTreeSet<IpAddr> = old_changed
        .iter()
        .flat_map(|e| e.addrs.iter().copied())
        .collect();
    let mut v: Vec<Be> = have
        .iter()
        .filter(|b| !gone.contains(&b.addr))
        .cloned()
        .collect();
    v.extend(backends_for(s, g, new_changed));
    v.sort();
    v.dedup();
    v
}

/// The backends of `s` over `endpoints` for its group `g`: a scan for a
/// few services, [`backends_indexed`] through `index` (built on first
/// use) for many.
pub fn backends_auto<'a>(
    s: &SelectorService,
    g: &GroupBackends,
    endpoints: &'a [EndpointRec],
    index: &mut Option<EndpointIndex<'a>>,
    many: bool,
) -> Vec<Be> {
    if !many && index.is_none() {
        return backends_for(s, g, endpoints);
    }
    let index = index
        .get_or_insert_with(|| EndpointIndex::from_labels(endpoints.iter().map(|e| &e.labels)));
    backends_indexed(s, g, endpoints, index)
}
