//! Service translation: frontend lookup and backend choice, and the
//! one rule for which endpoints back a selector service
//! ([`selector_backends`]).

use super::{BackendChoice, Interp, Packet, ServiceHit};
use crate::flowhash::flow_hash;
use crate::maglev;
use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::endpoint_index::EndpointIndex;
use crate::model::{Backend, BackendSource, Balance, Endpoint, Frontend, Sel, Service};

/// What the backend rule reads of an endpoint: the one endpoint view,
/// implemented by the model's [`Endpoint`] and by churn's
/// [`crate::churn::EndpointRec`] (an inventory at run time), both through
/// [`endpoint_view!`](crate::interp::endpoint_view).
pub trait EndpointView {
    fn labels(&self) -> &BTreeMap<String, String>;
    fn ready(&self) -> bool;
    fn addrs(&self) -> &[IpAddr];
}

/// Implements [`EndpointView`] for a struct with `labels` (a map or
/// [`crate::labels::Labels`]), `ready` and `addrs` fields.
macro_rules! endpoint_view {
    ($t:ty) => {
        impl $crate::interp::EndpointView for $t {
            fn labels(&self) -> &std::collections::BTreeMap<String, String> {
                &self.labels
            }
            fn ready(&self) -> bool {
                self.ready
            }
            fn addrs(&self) -> &[std::net::IpAddr] {
                &self.addrs
            }
        }
    };
}
pub(crate) use endpoint_view;

endpoint_view!(Endpoint);

/// **Which endpoints back a selector service** — the rule, written once
/// (docs/language.md §4): every ready endpoint whose labels `selector`
/// matches contributes each of its addresses of the frontend's family
/// (`ipv4`), one backend per address (built by `backend`, which gives
/// the port and the shape — `None` when the endpoint has no port of a
/// named target port, which makes it no backend); the result is sorted
/// and deduplicated.
///
/// `index`, when given, is an [`EndpointIndex`] of exactly `endpoints`:
/// the selector is then evaluated as posting-list operations instead of
/// once per endpoint (the same endpoints: `endpoint_index`'s tests check
/// `select` against [`crate::model::Sel::matches`]). Callers: the
/// interpreter ([`backends_of`]), the decision graph and both back ends'
/// fills (through [`backends_of_indexed`]), churn and the runtime
/// ([`crate::churn::backends_for`], [`crate::churn::backends_indexed`]).
pub fn selector_backends<'e, E: EndpointView, B: Ord>(
    selector: &Sel,
    ipv4: bool,
    endpoints: &'e [E],
    index: Option<&EndpointIndex<'_>>,
    backend: impl Fn(&'e E, IpAddr) -> Option<B>,
) -> Vec<B> {
    let mut out = Vec::new();
    let mut add = |e: &'e E| {
        if e.ready() {
            out.extend(
                e.addrs()
                    .iter()
                    .filter(|a| a.is_ipv4() == ipv4)
                    .filter_map(|a| backend(e, *a)),
            );
        }
    };
    match index {
        Some(index) => index
            .select(selector)
            .into_iter()
            .for_each(|i| add(&endpoints[i as usize])),
        None => endpoints
            .iter()
            .filter(|e| selector.matches(e.labels()))
            .for_each(add),
    }
    out.sort();
    out.dedup();
    out
}

/// The usable backends of `svc` for a frontend of `fe`'s address family:
/// ready, weight > 0, sorted by (address, port). `endpoints` is every
/// endpoint the program knows (declared and inventory).
pub fn backends_of(svc: &Service, fe: &Frontend, endpoints: &[Endpoint]) -> Vec<Backend> {
    backends_of_indexed(svc, fe, endpoints, None)
}

/// [`backends_of`], a selector evaluated through `index` (an
/// [`EndpointIndex`] of `endpoints`) when given.
pub fn backends_of_indexed(
    svc: &Service,
    fe: &Frontend,
    endpoints: &[Endpoint],
    index: Option<&EndpointIndex<'_>>,
) -> Vec<Backend> {
    match &svc.backends {
        BackendSource::Explicit(list) => {
            let mut out: Vec<Backend> = list
                .iter()
                .filter(|b| b.weight > 0 && b.addr.is_ipv4() == fe.addr.is_ipv4())
                .cloned()
                .collect();
            out.sort();
            out.dedup();
            out
        }
        BackendSource::Select { selector, port } => {
            selector_backends(selector, fe.addr.is_ipv4(), endpoints, index, |e, addr| {
                Some(Backend {
                    addr,
                    port: port.on(&e.labels, fe.proto)?,
                    weight: 1,
                    endpoint: Some(e.name.clone()),
                })
            })
        }
    }
}

impl Interp<'_> {
    pub fn service_hit(&self, p: &Packet, choice: BackendChoice) -> Option<ServiceHit> {
        let (service, svc, fe) = self.model.services.iter().enumerate().find_map(|(i, s)| {
            s.frontends
                .iter()
                .find(|f| f.addr == p.dst && f.port == p.dport && f.proto == p.proto)
                .map(|f| (i, s, *f))
        })?;
        let candidates = backends_of(svc, &fe, &self.model.endpoints);
        let chosen = if candidates.is_empty() {
            None
        } else {
            match choice {
                BackendChoice::Pinned(addr, port) => candidates
                    .iter()
                    .find(|b| b.addr == addr && b.port == port)
                    .cloned(),
                BackendChoice::ByHash => {
                    let h = flow_hash(p.src, p.dst, p.sport, p.dport, p.proto);
                    Some(pick(svc.balance, &candidates, h))
                }
            }
        };
        Some(ServiceHit {
            service,
            frontend: fe,
            candidates,
            chosen,
        })
    }
}

/// The deterministic choice for a flow hash. For Maglev this is exactly
/// what the data path does; for random it is a stand-in (the data path
/// draws a random number), weighted the same way.
pub fn pick(balance: Balance, candidates: &[Backend], hash: u32) -> Backend {
    match balance {
        Balance::Maglev => {
            let t = maglev::table(candidates, maglev::TABLE_SIZE);
            candidates[t[(hash % maglev::TABLE_SIZE) as usize] as usize].clone()
        }
        Balance::Random => weighted(candidates, hash),
    }
}

/// Weighted choice by hash: the interpreter's stand-in for a random draw
/// (and the graph evaluator's, which must agree with it).
pub fn weighted(candidates: &[Backend], hash: u32) -> Backend {
    let total: u32 = candidates.iter().map(|b| u32::from(b.weight)).sum();
    let mut x = hash % total;
    for b in candidates {
        if x < u32::from(b.weight) {
            return b.clone();
        }
        x -= u32::from(b.weight);
    }
    unreachable!("weights sum to total")
}
