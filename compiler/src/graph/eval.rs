//! Evaluate a graph on a packet exactly as a back end does: classify the
//! addresses through the class map, look the frontend up in the service
//! table, walk the entry points, and combine the stages in the fixed
//! pipeline order of docs/language.md §4 (the same combination rules as
//! `Interp::evaluate_with`). The property tests compare this with the
//! interpreter on every generated packet.

use super::classes::ClassId;
use super::ir::{Cond, Graph, Node, NodeId, SteerLeaf, TableKey, VerdictLeaf};
use crate::flowhash::{flow_hash, proto_number};
use crate::interp::{BackendChoice, Outcome, Packet, SteerHit};
use crate::maglev;
use crate::model::{Backend, Balance, ConnState, Direction, SteerAction, Verdict};
use crate::provenance::Provenance;

/// What the graph concluded about one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphOutcome {
    pub verdict: Verdict,
    pub decided_by: Provenance,
    pub logged: Vec<Provenance>,
    /// The service hit, if any.
    pub service: Option<usize>,
    /// The backend chosen (None when no service or no backends).
    pub backend: Option<Backend>,
    pub steering: Option<SteerHit>,
    pub reject: bool,
}

impl GraphOutcome {
    /// The interpreter's outcome in the same shape, for comparison.
    pub fn from_interp(o: &Outcome) -> GraphOutcome {
        GraphOutcome {
            verdict: o.verdict,
            decided_by: o.decided_by,
            logged: o.logged.clone(),
            service: o.service.as_ref().map(|s| s.service),
            backend: o.service.as_ref().and_then(|s| s.chosen.clone()),
            steering: o.steering.clone(),
            reject: o.reject,
        }
    }
}

/// The packet fields a walk reads.
struct Fields {
    proto: u32,
    dport: u32,
    icmp_type: u32,
    icmp_code: u32,
    src: ClassId,
    dst: ClassId,
    /// Source and destination belong to the same endpoint (`self`).
    same: bool,
}

impl Graph {
    fn walk(&self, mut n: NodeId, f: &Fields) -> &Node {
        loop {
            match self.node(n) {
                Node::Test { .. } | Node::Table { .. } => n = self.step(n, f),
                leaf => return leaf,
            }
        }
    }

    /// The leaves the three entries reach for `p` as sent (no service
    /// translation): for coverage measurements.
    pub fn leaves_reached(&self, p: &Packet) -> [NodeId; 3] {
        let (proto, icmp_type, icmp_code) = crate::interp::rule_fields(p);
        let f = Fields {
            proto: u32::from(proto),
            dport: u32::from(p.dport),
            icmp_type: u32::from(icmp_type),
            icmp_code: u32::from(icmp_code),
            src: self.classes.classify(p.src),
            dst: self.classes.classify(p.dst),
            same: self.classes.same_endpoint(p.src, p.dst),
        };
        let r = self.dag.roots;
        [r.steer, r.egress, r.ingress].map(|mut n| loop {
            let next = match self.node(n) {
                Node::Test { .. } | Node::Table { .. } => self.step(n, &f),
                _ => break n,
            };
            n = next;
        })
    }

    fn step(&self, n: NodeId, f: &Fields) -> NodeId {
        match self.node(n) {
            Node::Test { cond, then, els } => {
                let hit = match *cond {
                    Cond::Proto(p) => u32::from(proto_number(p)) == f.proto,
                    Cond::DPort { lo, hi } => u32::from(lo) <= f.dport && f.dport <= u32::from(hi),
                    Cond::IcmpType(t) => u32::from(t) == f.icmp_type,
                    Cond::IcmpCode(c) => u32::from(c) == f.icmp_code,
                    Cond::SrcAtom(a) => self.classes.has(f.src, a),
                    Cond::DstAtom(a) => self.classes.has(f.dst, a),
                    Cond::SameEndpoint => f.same,
                };
                if hit {
                    *then
                } else {
                    *els
                }
            }
            Node::Table {
                key,
                entries,
                default,
                ..
            } => {
                let v = match key {
                    TableKey::SrcClass => f.src,
                    TableKey::DstClass => f.dst,
                    TableKey::Proto => f.proto,
                    TableKey::DPort => f.dport,
                    TableKey::IcmpType => f.icmp_type,
                    TableKey::IcmpCode => f.icmp_code,
                };
                let i = entries.partition_point(|e| e.hi < v);
                match entries.get(i) {
                    Some(e) if e.lo <= v => e.next,
                    _ => *default,
                }
            }
            _ => n,
        }
    }

    fn verdict_leaf(&self, root: NodeId, f: &Fields) -> &VerdictLeaf {
        match self.walk(root, f) {
            Node::Verdict(v) => v,
            other => panic!("internal compiler error: policy entry ended in {other:?}"),
        }
    }

    /// Evaluate one packet (see the module docs).
    pub fn evaluate(&self, p: &Packet, choice: BackendChoice) -> GraphOutcome {
        let prov = |id: u32| *self.provenance.get(id).expect("provenance id in range");
        let simple = |verdict, by| GraphOutcome {
            verdict,
            decided_by: by,
            logged: Vec::new(),
            service: None,
            backend: None,
            steering: None,
            reject: false,
        };
        // 0. Headers not all seen: denied.
        if let Some(by) = crate::interp::unseen(p) {
            return simple(Verdict::Deny, by);
        }
        // 1. Connection state.
        if p.state == ConnState::Established {
            return simple(Verdict::Allow, Provenance::Established);
        }
        let (proto, icmp_type, icmp_code) = crate::interp::rule_fields(p);
        let mut f = Fields {
            proto: u32::from(proto),
            dport: u32::from(p.dport),
            icmp_type: u32::from(icmp_type),
            icmp_code: u32::from(icmp_code),
            src: self.classes.classify(p.src),
            dst: self.classes.classify(p.dst),
            same: self.classes.same_endpoint(p.src, p.dst),
        };
        // 2. Steering on the packet as sent; bypass ends here.
        let steering = match self.walk(self.dag.roots.steer, &f) {
            Node::Steer(SteerLeaf::Hit { steer, index }) => Some(SteerHit {
                steer: *steer,
                index: *index,
                action: self.steer_actions[*steer][*index].clone(),
            }),
            Node::Steer(SteerLeaf::None) => None,
            other => panic!("internal compiler error: steer entry ended in {other:?}"),
        };
        if let Some(hit) = &steering {
            if hit.action == SteerAction::Bypass {
                let mut o = simple(
                    Verdict::Allow,
                    Provenance::Bypass {
                        steer: hit.steer,
                        index: hit.index,
                    },
                );
                o.steering = steering;
                return o;
            }
        }
        // 3. Service.
        let mut service = None;
        let mut backend = None;
        if let Some(fe) = self.services.lookup(p.dst, p.dport, p.proto) {
            service = Some(fe.service);
            let set = &self.services.backend_sets[fe.backends];
            let chosen = if set.backends.is_empty() {
                None
            } else {
                match choice {
                    BackendChoice::Pinned(addr, port) => set
                        .backends
                        .iter()
                        .find(|b| b.addr == addr && b.port == port)
                        .cloned(),
                    BackendChoice::ByHash => {
                        let h = flow_hash(p.src, p.dst, p.sport, p.dport, p.proto);
                        Some(match self.services.services[fe.service].balance {
                            Balance::Maglev => set.backends
                                [set.maglev_table()[(h % maglev::TABLE_SIZE) as usize] as usize]
                                .clone(),
                            Balance::Random => crate::interp::weighted(&set.backends, h),
                        })
                    }
                }
            };
            match chosen {
                None => {
                    let mut o = simple(
                        Verdict::Deny,
                        Provenance::NoBackends {
                            service: fe.service,
                        },
                    );
                    o.service = service;
                    o.reject = true;
                    return o;
                }
                Some(b) => {
                    f.dst = self.classes.classify(b.addr);
                    f.same = self.classes.same_endpoint(p.src, b.addr);
                    f.dport = u32::from(b.port);
                    backend = Some(b);
                }
            }
        }
        // 4. Policy: egress ∧ ingress.
        let egress = (p.at != Some(Direction::Ingress))
            .then(|| self.verdict_leaf(self.dag.roots.egress, &f));
        let ingress = (p.at != Some(Direction::Egress))
            .then(|| self.verdict_leaf(self.dag.roots.ingress, &f));
        let mut logged = Vec::new();
        for side in [egress, ingress].into_iter().flatten() {
            logged.extend(side.logged.iter().map(|&i| prov(i)));
            if !side.allow {
                break;
            }
        }
        let pair = |s: Option<&VerdictLeaf>| s.map(|s| (s.allow, prov(s.decided)));
        let (verdict, decided_by) = crate::provenance::combine_sides(pair(egress), pair(ingress));
        // 5. Steering on allowed packets.
        GraphOutcome {
            verdict,
            decided_by,
            logged,
            service,
            backend,
            steering: if verdict == Verdict::Allow {
                steering
            } else {
                None
            },
            reject: false,
        }
    }
}
