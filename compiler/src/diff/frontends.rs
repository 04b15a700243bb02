//! Connections sent to a service frontend (address, port, protocol).
//!
//! The service stage translates them before policy (docs/language.md §4:
//! bypass → service → egress ∧ ingress), so their verdict is not that of
//! the frontend address: per program, a source is either *not translated*
//! (a `bypass` steering rule allows it as sent; the frontend has no
//! backends and rejects it; the program has no such frontend, and policy
//! judges the packet as sent) or translated to one of the frontend's
//! backends, each judged by policy toward the backend's address and port.
//! Which backend a flow gets depends on its flow hash, so a row for a
//! frontend names the backend on each side (`Via`): "flows balanced to
//! web-1:8443 (before and now) from these sources change verdict". When a
//! frontend's translation is the same in both programs a flow gets the
//! same backend in both, and only (b, b) rows appear; when it changed,
//! every (old backend, new backend) combination whose verdicts differ is
//! a row — which flows fall into a combination is the flow hash's choice,
//! so such a row may hold no flow at all (the frontend is also listed as
//! a service change, see [`super::services`]).

use super::compare::{policy, steer, Decision};
use super::region::{Ivs, JointMap, Region};
use super::space::Space;
use crate::flowhash::proto_number;
use crate::graph::bits::Bits;
use crate::graph::Graph;
use crate::model::{Backend, Frontend, Verdict};
use crate::provenance::Provenance;

/// The backend a row's flows are translated to, per side (`None`: not
/// translated on that side).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Via {
    pub old: Option<Backend>,
    pub new: Option<Backend>,
}

/// One program's outcome for one source joint class.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Plain(Decision),
    Translated(Vec<(Backend, Decision)>),
}

fn point(src: Bits, dst: usize, proto: u32, port: u16) -> Region {
    let mut d = Bits::new();
    d.insert(dst);
    Region {
        src,
        dst: d,
        proto: Ivs::range(proto, proto),
        dport: Ivs::range(u32::from(port), u32::from(port)),
        icmp_type: Ivs::range(0, 0),
        icmp_code: Ivs::range(0, 0),
    }
}

/// Per source joint class, what program `g` does with a connection to `f`
/// (`None` for a source of the other address family: no such packet).
fn outcomes(
    g: &Graph,
    m: &JointMap,
    space: &Space,
    f: &Frontend,
    old: &Graph,
    new: &Graph,
) -> Vec<Option<Out>> {
    let n = space.len();
    let proto = u32::from(proto_number(f.proto));
    let dst = space.classify(old, new, f.addr);
    let mut out: Vec<Option<Out>> = vec![None; n];
    let mut rest = Bits::new();
    // Only sources of the frontend's family send to it.
    let srcs = space.family(f.addr.is_ipv6());
    for (r, bypass) in steer(g, m, point(srcs, dst, proto, f.port)) {
        match bypass {
            Some(d) => r.src.iter().for_each(|s| out[s] = Some(Out::Plain(d))),
            None => rest = rest.or(&r.src),
        }
    }
    match g.services.lookup(f.addr, f.port, f.proto) {
        None => {
            for (r, d) in policy(g, m, point(rest, dst, proto, f.port)) {
                r.src.iter().for_each(|s| out[s] = Some(Out::Plain(d)));
            }
        }
        Some(e) if g.services.backend_sets[e.backends].backends.is_empty() => {
            let d = Decision::of(Verdict::Deny, Provenance::NoBackends { service: e.service });
            rest.iter().for_each(|s| out[s] = Some(Out::Plain(d)));
        }
        Some(e) => {
            let mut per: Vec<Vec<(Backend, Decision)>> = vec![Vec::new(); n];
            for b in &g.services.backend_sets[e.backends].backends {
                let bj = space.classify(old, new, b.addr);
                for (r, d) in policy(g, m, point(rest.clone(), bj, proto, b.port)) {
                    r.src.iter().for_each(|s| per[s].push((b.clone(), d)));
                }
            }
            for s in rest.iter() {
                out[s] = Some(Out::Translated(std::mem::take(&mut per[s])));
            }
        }
    }
    out
}

/// Changed (source joint class, via, old, new) for connections to `f`.
pub fn changed(
    space: &Space,
    old: &Graph,
    new: &Graph,
    f: &Frontend,
) -> Vec<(usize, Via, Decision, Decision)> {
    let o = outcomes(old, &space.old, space, f, old, new);
    let n = outcomes(new, &space.new, space, f, old, new);
    let mut rows = Vec::new();
    for (s, (o, n)) in o.into_iter().zip(n).enumerate() {
        let (Some(o), Some(n)) = (o, n) else {
            continue;
        };
        let mut push = |bo: Option<&Backend>, bn: Option<&Backend>, a: Decision, b: Decision| {
            if a.allow != b.allow {
                let via = Via {
                    old: bo.cloned(),
                    new: bn.cloned(),
                };
                rows.push((s, via, a, b));
            }
        };
        match (&o, &n) {
            (Out::Plain(a), Out::Plain(b)) => push(None, None, *a, *b),
            (Out::Plain(a), Out::Translated(bs)) => {
                for (bb, b) in bs {
                    push(None, Some(bb), *a, *b);
                }
            }
            (Out::Translated(as_), Out::Plain(b)) => {
                for (ba, a) in as_ {
                    push(Some(ba), None, *a, *b);
                }
            }
            (Out::Translated(as_), Out::Translated(bs)) => {
                let same = {
                    let so = old
                        .services
                        .lookup(f.addr, f.port, f.proto)
                        .map(|e| &old.services.backend_sets[e.backends]);
                    let sn = new
                        .services
                        .lookup(f.addr, f.port, f.proto)
                        .map(|e| &new.services.backend_sets[e.backends]);
                    so == sn
                };
                for (ba, a) in as_ {
                    for (bb, b) in bs {
                        if !same || ba == bb {
                            push(Some(ba), Some(bb), *a, *b);
                        }
                    }
                }
            }
        }
    }
    rows
}
