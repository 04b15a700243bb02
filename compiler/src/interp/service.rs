//! Service translation: frontend lookup and backend choice.

use super::{BackendChoice, Interp, Packet, ServiceHit};
use crate::flowhash::flow_hash;
use crate::maglev;
use crate::model::{Backend, BackendSource, Balance, Endpoint, Frontend, Service};

/// The usable backends of `svc` for a frontend of `fe`'s address family:
/// ready, weight > 0, sorted by (address, port). `endpoints` is every
/// endpoint the program knows (declared and inventory).
pub fn backends_of(svc: &Service, fe: &Frontend, endpoints: &[Endpoint]) -> Vec<Backend> {
    let mut out: Vec<Backend> = match &svc.backends {
        BackendSource::Explicit(list) => list
            .iter()
            .filter(|b| b.weight > 0 && b.addr.is_ipv4() == fe.addr.is_ipv4())
            .cloned()
            .collect(),
        BackendSource::Select { selector, port } => endpoints
            .iter()
            .filter(|e| e.ready && selector.matches(&e.labels))
            .flat_map(|e| {
                e.addrs
                    .iter()
                    .filter(|a| a.is_ipv4() == fe.addr.is_ipv4())
                    .map(|a| Backend {
                        addr: *a,
                        port: *port,
                        weight: 1,
                        endpoint: Some(e.name.clone()),
                    })
            })
            .collect(),
    };
    out.sort();
    out.dedup();
    out
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
