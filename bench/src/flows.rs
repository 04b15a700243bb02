//! The packets the benchmarks send, chosen with the reference interpreter
//! so that each one takes a known, deep path: the deepest allowed flow
//! between two endpoints, a denied flow to a selected endpoint (all of its
//! ingress rules walked, then the tier default), and flows to service
//! frontends. Also the Ethernet frames for BPF_PROG_TEST_RUN.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use weir_compiler::interp::{Interp, Outcome, Packet};
use weir_compiler::model::{
    Action, BackendSource, Direction, Endpoint, Model, PeerMatch, Policy, PortRange, Proto,
    ProtoMatch, Rule, Sel, Verdict,
};
use weir_compiler::provenance::Provenance;
use weir_grammar::{FileId, Span};

/// A client address that is no endpoint (and in no rule's CIDR).
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// A pod client: inside kube-proxy's cluster CIDR
/// (`crate::kube_proxy::CLUSTER_CIDR`, 10.64.0.0/12), so kube-proxy as
/// installed neither marks nor masquerades its service flows, but no
/// endpoint of the synthetic models (their addresses run up from
/// 10.64.0.1; this is past a million of them) and in no rule's CIDR, so
/// weir's policies treat it as they treat [`CLIENT`] (checked with the
/// interpreter: [`same_service_verdicts`]).
pub const POD_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 79, 255, 1);
/// The address of the synthetic `bench-client` endpoint.
pub const BENCH_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The address of the synthetic `bench-open` endpoint (egress: any).
pub const BENCH_OPEN: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);

#[derive(Debug, Clone)]
pub struct Flow {
    pub packet: Packet,
    pub verdict: Verdict,
    /// Rules the interpreter walked past, roughly (for choosing).
    pub depth: usize,
    pub what: String,
}

fn rule_index(d: &Option<weir_compiler::interp::SideDecision>) -> usize {
    match d.as_ref().map(|d| &d.by) {
        Some(Provenance::Rule { index, .. }) => index + 1,
        _ => 0,
    }
}

fn rules_of(model: &Model, dir: Direction, labels: &BTreeMap<String, String>) -> usize {
    model
        .policies
        .iter()
        .filter(|p| p.applies_to.matches(labels))
        .map(|p| p.rules(dir).map_or(0, |r| r.len()))
        .sum()
}

fn first_port(r: &Rule) -> Option<u16> {
    match &r.proto {
        ProtoMatch::Ports {
            proto: Proto::Tcp,
            ports,
        } => ports.first().map(|p| p.lo),
        _ => None,
    }
}

/// The deepest allowed TCP flow between two endpoints and a denied TCP flow
/// to a selected endpoint, sampled over (at most) `budget` policies.
pub fn policy_flows(model: &Model, budget: usize) -> (Option<Flow>, Option<Flow>) {
    let interp = Interp::new(model);
    let mut best_allow: Option<Flow> = None;
    let mut best_deny: Option<Flow> = None;
    let n = model.policies.len();
    let step = (n / budget.max(1)).max(1);
    let find = |sel: &Sel, skip: Option<&str>| -> Option<&Endpoint> {
        model
            .endpoints
            .iter()
            .find(|e| sel.matches(&e.labels) && Some(e.name.as_str()) != skip)
    };
    for p in model.policies.iter().step_by(step) {
        let Some(rules) = p.ingress.as_ref() else {
            continue;
        };
        let Some(dst) = find(&p.applies_to, None) else {
            continue;
        };
        let dst_ip = dst.addrs[0];
        // Deny: a port no rule names (ingress isolation after every rule).
        let pkt = Packet::new(Proto::Tcp, CLIENT.into(), 40000, dst_ip, 1);
        let out = interp.evaluate(&pkt);
        if out.verdict == Verdict::Deny {
            let depth = rules_of(model, Direction::Ingress, &dst.labels);
            if best_deny.as_ref().is_none_or(|b| depth > b.depth) {
                best_deny = Some(Flow {
                    packet: pkt,
                    verdict: Verdict::Deny,
                    depth,
                    what: format!("{CLIENT} → {} ({}) tcp/1", dst_ip, dst.name),
                });
            }
        }
        // Allow: the last allow rules of the block, from an endpoint peer.
        for r in rules.iter().rev().take(4) {
            let (Action::Allow, PeerMatch::Selector(s), Some(port)) =
                (r.action, &r.peer, first_port(r))
            else {
                continue;
            };
            let Some(src) = find(s, Some(&dst.name)) else {
                continue;
            };
            let pkt = Packet::new(Proto::Tcp, src.addrs[0], 40000, dst_ip, port);
            let out: Outcome = interp.evaluate(&pkt);
            if out.verdict != Verdict::Allow {
                continue;
            }
            let depth = rule_index(&out.ingress) + rule_index(&out.egress);
            if best_allow.as_ref().is_none_or(|b| depth > b.depth) {
                best_allow = Some(Flow {
                    packet: pkt,
                    verdict: Verdict::Allow,
                    depth,
                    what: format!(
                        "{} ({}) → {} ({}) tcp/{port}",
                        src.addrs[0], src.name, dst_ip, dst.name
                    ),
                });
            }
        }
    }
    (best_allow, best_deny)
}

/// Service indexes (model order) whose frontend is `proto`, IPv4 and
/// allowed from `src` by the interpreter, with the flow.
pub fn service_flows(model: &Model, proto: Proto, src: IpAddr) -> Vec<(usize, Flow)> {
    let interp = Interp::new(model);
    let mut out = Vec::new();
    for (i, s) in model.services.iter().enumerate() {
        let Some(f) = s
            .frontends
            .iter()
            .find(|f| f.proto == proto && f.addr.is_ipv4())
        else {
            continue;
        };
        if let BackendSource::Select { .. } = s.backends {
        } else {
            continue;
        }
        let pkt = Packet::new(proto, src, 40000, f.addr, f.port);
        let o = interp.evaluate(&pkt);
        out.push((
            i,
            Flow {
                packet: pkt,
                verdict: o.verdict,
                depth: 0,
                what: format!("{src} → {} {}:{}", s.name, f.addr, f.port),
            },
        ));
    }
    out
}

/// Of the services [`service_flows`] lists for `proto`: how many the
/// interpreter gives the same verdict from `a` as from `b`, and how many
/// there are.
pub fn same_service_verdicts(model: &Model, proto: Proto, a: IpAddr, b: IpAddr) -> (usize, usize) {
    let fa = service_flows(model, proto, a);
    let fb = service_flows(model, proto, b);
    let same = fa
        .iter()
        .zip(&fb)
        .filter(|(x, y)| x.0 == y.0 && x.1.verdict == y.1.verdict)
        .count();
    (same, fa.len())
}

/// Whether `addr` is an address of one of the model's endpoints.
pub fn is_endpoint(model: &Model, addr: IpAddr) -> bool {
    model.endpoints.iter().any(|e| e.addrs.contains(&addr))
}

fn span() -> Span {
    Span {
        file: FileId(0),
        start: 0,
        end: 1,
    }
}

/// The model plus an endpoint `bench-client` ([`BENCH_CLIENT`]) whose
/// egress policy allows only tcp/1: its packets to anything else are
/// denied at its egress default after the service lookup, so they take
/// the whole new-flow path without creating a conntrack entry.
///
/// Also an endpoint `bench-open` ([`BENCH_OPEN`]) whose egress policy
/// allows any TCP: its packets to a service frontend are translated and
/// allowed where the backend's ingress allows them (a new service flow).
pub fn with_bench_client(model: &Model) -> Model {
    let mut m = model.clone();
    let tier = m
        .tiers
        .iter()
        .position(|t| t.name == "default")
        .unwrap_or(0);
    let clients = [
        (
            "bench-client",
            BENCH_CLIENT,
            vec![PortRange { lo: 1, hi: 1 }],
        ),
        (
            "bench-open",
            BENCH_OPEN,
            vec![PortRange { lo: 1, hi: 65535 }],
        ),
    ];
    for (name, addr, ports) in clients {
        let mut labels = BTreeMap::new();
        labels.insert("app".to_string(), name.to_string());
        m.endpoints.push(Endpoint {
            name: name.into(),
            labels: labels.into(),
            addrs: vec![addr.into()],
            ready: true,
            span: None,
        });
        m.policies.push(Policy {
            name: name.into(),
            tier,
            priority: 100,
            applies_to: Sel::Eq("app".into(), name.into()),
            ingress: None,
            egress: Some(vec![Rule {
                action: Action::Allow,
                proto: ProtoMatch::Ports {
                    proto: Proto::Tcp,
                    ports,
                },
                peer: PeerMatch::Any,
                log: false,
                span: span(),
            }]),
            span: span(),
            audit: false,
            name_span: span(),
        });
    }
    m.endpoints.sort_by(|a, b| a.name.cmp(&b.name));
    let tiers = m.tiers.clone();
    m.policies.sort_by(|a, b| {
        let ta = &tiers[a.tier];
        let tb = &tiers[b.tier];
        (ta.order, &ta.name, a.priority, &a.name).cmp(&(tb.order, &tb.name, b.priority, &b.name))
    });
    m
}

/// The IPv6 twin of an IPv4 address: `fd00::a.b.c.d` (an address in no
/// rule's CIDR and no generated endpoint's).
pub fn v6_twin(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            let mut o = [0u8; 16];
            o[..2].copy_from_slice(&[0xfd, 0]);
            o[12..].copy_from_slice(&[a, b, c, d]);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        v6 => v6,
    }
}

/// The model with an IPv6 address ([`v6_twin`]) added to each endpoint
/// that has one of `addrs`, and the IPv6 twin of `p`: the same flow
/// between the same endpoints (so judged by the same rules, as deep), in
/// the other family — for IPv6 rows beside the IPv4 ones on one program.
pub fn with_v6_twins(model: &Model, p: &Packet) -> (Model, Packet) {
    let mut m = model.clone();
    for e in &mut m.endpoints {
        if e.addrs.iter().any(|a| *a == p.src || *a == p.dst) {
            let twin = v6_twin(e.addrs[0]);
            if !e.addrs.contains(&twin) {
                e.addrs.push(twin);
            }
        }
    }
    let mut q = p.clone();
    q.src = v6_twin(p.src);
    q.dst = v6_twin(p.dst);
    (m, q)
}
