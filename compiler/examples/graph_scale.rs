//! Scale benchmark for the decision graph: 1,000 selectors over 10,000
//! endpoints and 5,000 CIDR rules.
//!
//! `cargo run --release -p weir-compiler --example graph_scale`

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;
use weir_compiler::graph;
use weir_compiler::model::*;
use weir_grammar::Span;

fn sel(app: usize) -> Sel {
    Sel::Eq("app".into(), format!("app{app}"))
}

fn main() {
    const APPS: usize = 1000;
    const ENDPOINTS: usize = 10_000;
    const CIDR_RULES_PER_POLICY: usize = 5;
    let endpoints: Vec<Endpoint> = (0..ENDPOINTS)
        .map(|i| {
            let mut labels = BTreeMap::new();
            labels.insert("app".to_string(), format!("app{}", i % APPS));
            labels.insert("tier".to_string(), format!("t{}", i % 5));
            Endpoint {
                name: format!("ep{i:05}"),
                labels: labels.into(),
                addrs: vec![IpAddr::V4(Ipv4Addr::new(
                    10,
                    (i >> 16) as u8,
                    (i >> 8) as u8,
                    i as u8,
                ))],
                ready: true,
                span: None,
            }
        })
        .collect();
    let mut policies = Vec::new();
    let mut cidr_rules = 0;
    for k in 0..APPS {
        let mut ingress = vec![
            Rule {
                action: Action::Allow,
                proto: ProtoMatch::Ports {
                    proto: Proto::Tcp,
                    ports: vec![PortRange { lo: 443, hi: 443 }],
                },
                peer: PeerMatch::Selector(sel((k + 1) % APPS)),
                log: false,
                span: Span::default(),
            },
            Rule {
                action: Action::Allow,
                proto: ProtoMatch::Ports {
                    proto: Proto::Tcp,
                    ports: vec![PortRange { lo: 8000, hi: 8100 }],
                },
                peer: PeerMatch::Selector(Sel::And(
                    Box::new(sel((k + 7) % APPS)),
                    Box::new(Sel::Eq("tier".into(), "t1".into())),
                )),
                log: false,
                span: Span::default(),
            },
        ];
        for j in 0..CIDR_RULES_PER_POLICY {
            let n = k * CIDR_RULES_PER_POLICY + j;
            let include = vec![Cidr {
                addr: IpAddr::V4(Ipv4Addr::new(
                    172,
                    16 + (n >> 12) as u8,
                    (n >> 4) as u8,
                    ((n & 15) << 4) as u8,
                )),
                len: 28,
            }];
            ingress.push(Rule {
                action: if j == 4 { Action::Deny } else { Action::Allow },
                proto: ProtoMatch::Ports {
                    proto: Proto::Tcp,
                    ports: vec![PortRange { lo: 80, hi: 80 }],
                },
                peer: PeerMatch::Set(AddrSet {
                    include,
                    exclude: Vec::new(),
                }),
                log: j == 0,
                span: Span::default(),
            });
            cidr_rules += 1;
        }
        policies.push(Policy {
            name: format!("pol{k:04}"),
            tier: 0,
            priority: 1000,
            applies_to: sel(k),
            ingress: Some(ingress),
            egress: Some(vec![Rule {
                action: Action::Allow,
                proto: ProtoMatch::Any,
                peer: PeerMatch::Selector(sel((k + 3) % APPS)),
                log: false,
                span: Span::default(),
            }]),
            audit: false,
            span: Span::default(),
            name_span: Span::default(),
        });
    }
    let model = Model {
        tiers: vec![Tier {
            name: "default".into(),
            order: 1000,
            audit: false,
            default_pass: false,
            span: None,
        }],
        policies,
        endpoints,
        ..Model::default()
    };
    let selectors: BTreeSet<String> = graph::classes::collect_atoms(&model)
        .iter()
        .filter(|a| matches!(a, graph::Atom::Sel(_)))
        .map(|a| a.to_string())
        .collect();
    println!(
        "model: {} selectors, {} endpoints, {} CIDR rules, {} policies",
        selectors.len(),
        model.endpoints.len(),
        cidr_rules,
        model.policies.len()
    );
    let t0 = Instant::now();
    let (unopt, info) = graph::lower::lower(&model);
    let t1 = Instant::now();
    let g = graph::opt::optimize(&unopt);
    let t2 = Instant::now();
    graph::verify::check(&g);
    let t3 = Instant::now();
    let findings = graph::analysis::analyze(&model, &g.classes, &info);
    let t4 = Instant::now();
    let cap = graph::cost::capacity(&g);
    let cap_u = graph::cost::capacity(&unopt);
    println!(
        "lower {:?}, optimize {:?}, verify {:?}, analyze {:?}; total {:?}",
        t1 - t0,
        t2 - t1,
        t3 - t2,
        t4 - t3,
        t4 - t0
    );
    println!(
        "unoptimized: {} nodes ({} tests, {} tables)",
        cap_u.nodes, cap_u.tests, cap_u.tables
    );
    print!("{}", cap.report());
    let by_key: BTreeMap<String, usize> =
        cap.table_stats.iter().fold(BTreeMap::new(), |mut m, t| {
            *m.entry(format!("{:?}", t.key)).or_insert(0) += 1;
            m
        });
    println!("table nodes by key: {by_key:?}");
    println!("findings: {}", findings.len());
}
