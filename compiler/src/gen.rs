//! Deterministic generators of random but valid models and packets, for
//! property and differential tests (graph vs interpreter, back ends vs
//! interpreter). Seeded splitmix64: the same seed gives the same model on
//! every platform and Rust version.
//!
//! Models use a small label vocabulary and a small pool of nested CIDRs so
//! that selectors and sets overlap a lot (which is where classes, shadowing
//! and pruning get interesting); every rule kind appears (allow, deny,
//! pass, log, the log flag, ports and ranges, ICMP type/code, `any`), with
//! tiers, default deny, services (random and Maglev, explicit weights
//! including drained backends, no-backend services) and steering.
//! Packets are drawn so that they exercise the boundaries the compiler cuts
//! at: endpoint addresses, set prefix ends ± 1, rule port boundaries ± 1,
//! service frontends, both families, all `at` values, some established;
//! ICMP packets are mostly their family's (`icmp` in IPv4, `icmp6` in
//! IPv6), sometimes the other family's (a protocol without a keyword).
//! [`dual_stack`] adds IPv6-only endpoints, IPv6 and SCTP services, IPv6
//! prefixes in rules and steering, and `icmp6` rules to a [`model`].
//! `peers.rs` adds `self` / `world` peers and `default pass` tiers.

mod namespaces;
mod nodes;
mod peers;

use crate::interp::Packet;
use crate::model::{
    Action, AddrSet, Backend, BackendSource, Balance, Cidr, ConnState, DefaultDeny, Direction,
    Endpoint, Frontend, Model, PeerMatch, Policy, PortRange, Proto, ProtoMatch, Rule, Sel, Service,
    Steer, SteerAction, SteerRule, TargetPort, Tier,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use weir_grammar::Span;

/// splitmix64.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5EED_0F7E_A500)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `pct` percent.
    pub fn chance(&mut self, pct: u32) -> bool {
        self.below(100) < pct as usize
    }

    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

const KEYS: [&str; 3] = ["app", "tier", "env"];
const VALUES: [&str; 3] = ["a", "b", "c"];
const PORTS: [u16; 8] = [22, 53, 80, 443, 1000, 1005, 8080, 65535];

fn span(n: u32) -> Span {
    Span {
        file: weir_grammar::FileId(0),
        start: n,
        end: n + 1,
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(x: u128) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(0xfd00_u128 << 112 | x))
}

fn cidr(addr: IpAddr, len: u8) -> Cidr {
    // Clear host bits.
    let c = Cidr { addr, len };
    match addr {
        IpAddr::V4(a) => {
            let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            Cidr {
                addr: IpAddr::V4((u32::from(a) & m).into()),
                ..c
            }
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            Cidr {
                addr: IpAddr::V6((u128::from(a) & m).into()),
                ..c
            }
        }
    }
}

fn cidr_pool() -> Vec<Cidr> {
    vec![
        cidr(v4(0, 0, 0, 0), 0),
        cidr(v4(10, 0, 0, 0), 8),
        cidr(v4(10, 0, 0, 0), 16),
        cidr(v4(10, 0, 1, 0), 24),
        cidr(v4(10, 0, 0, 0), 30),
        cidr(v4(10, 0, 0, 4), 30),
        cidr(v4(10, 0, 0, 5), 32),
        cidr(v4(10, 1, 0, 0), 16),
        cidr(v4(192, 168, 0, 0), 16),
        cidr(v4(192, 168, 1, 0), 24),
        cidr(v6(0), 8),
        cidr(v6(0), 120),
        cidr(v6(0x10), 124),
        cidr(v6(3), 128),
    ]
}

fn gen_sel(rng: &mut Rng, depth: u32) -> Sel {
    let k = rng.pick(&KEYS).to_string();
    let v = rng.pick(&VALUES).to_string();
    let choice = if depth == 0 {
        rng.below(6)
    } else {
        rng.below(9)
    };
    match choice {
        0 => Sel::Eq(k, v),
        1 => Sel::Ne(k, v),
        2 => {
            let vs: BTreeSet<String> = (0..1 + rng.below(2))
                .map(|_| rng.pick(&VALUES).to_string())
                .collect();
            Sel::In(k, vs)
        }
        3 => {
            let vs: BTreeSet<String> = (0..1 + rng.below(2))
                .map(|_| rng.pick(&VALUES).to_string())
                .collect();
            Sel::NotIn(k, vs)
        }
        4 => Sel::Has(k),
        5 => {
            if rng.chance(50) {
                Sel::All
            } else {
                Sel::Eq(k, v)
            }
        }
        6 => Sel::Not(Box::new(gen_sel(rng, depth - 1))),
        7 => Sel::And(
            Box::new(gen_sel(rng, depth - 1)),
            Box::new(gen_sel(rng, depth - 1)),
        ),
        _ => Sel::Or(
            Box::new(gen_sel(rng, depth - 1)),
            Box::new(gen_sel(rng, depth - 1)),
        ),
    }
}

fn gen_set(rng: &mut Rng, pool: &[Cidr]) -> AddrSet {
    let mut include: Vec<Cidr> = (0..1 + rng.below(2)).map(|_| *rng.pick(pool)).collect();
    let mut exclude: Vec<Cidr> = if rng.chance(40) {
        (0..1 + rng.below(2)).map(|_| *rng.pick(pool)).collect()
    } else {
        Vec::new()
    };
    include.sort();
    include.dedup();
    exclude.sort();
    exclude.dedup();
    AddrSet { include, exclude }
}

fn gen_peer(rng: &mut Rng, pool: &[Cidr]) -> PeerMatch {
    match rng.below(10) {
        0..=2 => PeerMatch::Any,
        3..=6 => PeerMatch::Selector(gen_sel(rng, 1)),
        _ => PeerMatch::Set(gen_set(rng, pool)),
    }
}

fn gen_ports(rng: &mut Rng) -> Vec<PortRange> {
    let mut rs: Vec<PortRange> = (0..rng.below(3))
        .map(|_| {
            let a = *rng.pick(&PORTS);
            let b = if rng.chance(30) { *rng.pick(&PORTS) } else { a };
            PortRange {
                lo: a.min(b),
                hi: a.max(b),
            }
        })
        .collect();
    rs.sort();
    // Merge overlapping and adjacent ranges (the model's invariant).
    let mut out: Vec<PortRange> = Vec::new();
    for r in rs {
        match out.last_mut() {
            Some(l) if u32::from(r.lo) <= u32::from(l.hi) + 1 => l.hi = l.hi.max(r.hi),
            _ => out.push(r),
        }
    }
    out
}

fn gen_proto(rng: &mut Rng) -> ProtoMatch {
    match rng.below(10) {
        0..=2 => ProtoMatch::Any,
        3..=7 => ProtoMatch::Ports {
            proto: *rng.pick(&[Proto::Tcp, Proto::Tcp, Proto::Udp, Proto::Sctp]),
            ports: gen_ports(rng),
        },
        _ => {
            let ty = rng.chance(70).then(|| *rng.pick(&[0u8, 3, 8]));
            let code = if ty.is_some() && rng.chance(40) {
                Some(*rng.pick(&[0u8, 1]))
            } else {
                None
            };
            ProtoMatch::Icmp {
                proto: Proto::Icmp,
                ty,
                code,
            }
        }
    }
}

fn gen_rules(rng: &mut Rng, pool: &[Cidr], spans: &mut u32) -> Vec<Rule> {
    (0..rng.below(6))
        .map(|_| {
            let action = match rng.below(20) {
                0..=6 => Action::Allow,
                7..=11 => Action::Deny,
                12..=14 => Action::Pass,
                _ => Action::Log,
            };
            *spans += 2;
            Rule {
                action,
                proto: gen_proto(rng),
                peer: gen_peer(rng, pool),
                log: action != Action::Log && rng.chance(20),
                span: span(*spans),
            }
        })
        .collect()
}

/// A random valid model (checker invariants hold: sorted, unique names,
/// no host bits, one endpoint per address).
///
/// The steps draw from one generator in a fixed order (tiers, endpoints,
/// host prefixes, policies, services, steering, default deny); reordering
/// them changes every seed's model.
pub fn model(seed: u64) -> Model {
    let mut m = base_model(seed);
    peers::sprinkle(&mut m, seed);
    nodes::sprinkle(&mut m, seed);
    namespaces::sprinkle(&mut m, seed);
    m
}

/// [`model`] without `self` / `world` peers and `default pass` tiers: the
/// models tests that pinned a seed's shape (chain depths) were chosen on.
pub fn base_model(seed: u64) -> Model {
    let mut rng = Rng::new(seed);
    let mut spans = 0u32;
    let tiers = gen_tiers(&mut rng);
    let mut pool = cidr_pool();
    let endpoints = gen_endpoints(&mut rng, &mut pool);
    let policies = gen_policies(&mut rng, &tiers, &pool, &mut spans);
    let services = gen_services(&mut rng, &endpoints);
    let steers = gen_steers(&mut rng, &pool, &mut spans);
    let mut m = Model {
        tiers,
        policies,
        endpoints,
        services,
        steers,
        default_deny: DefaultDeny {
            ingress: rng.chance(30).then(|| span(9)),
            egress: rng.chance(30).then(|| span(11)),
        },
        tests: Vec::new(),
        named_selectors: BTreeMap::new(),
        named_sets: BTreeMap::new(),
        nodes: Vec::new(),
        namespaces: BTreeMap::new(),
    };
    add_named_ports(&mut m, &mut Rng::new(seed ^ 0x9A3E_D907));
    m
}

/// Named ports (language.md §4), drawn from a generator of their own so
/// the draws above stay what they were: in about half the models, the
/// endpoints declare `http` (80 or 8080, mostly TCP, sometimes UDP — a
/// protocol mismatch) and `dns` (53/udp), and some policy rules name
/// `http`, `dns` or a name nobody declares, as TCP or UDP.
fn add_named_ports(m: &mut Model, rng: &mut Rng) {
    if !rng.chance(50) {
        return;
    }
    for e in &mut m.endpoints {
        let mut labels: BTreeMap<String, String> = (*e.labels).clone();
        if rng.chance(60) {
            let proto = if rng.chance(80) {
                Proto::Tcp
            } else {
                Proto::Udp
            };
            let port = *rng.pick(&[80u16, 8080]);
            labels.insert(crate::named_ports::key("http", proto), port.to_string());
        }
        if rng.chance(30) {
            labels.insert(crate::named_ports::key("dns", Proto::Udp), "53".into());
        }
        e.labels = labels.into();
    }
    // Selector services: sometimes a named target port (each backend's
    // own `http` for the frontend's protocol; those without it are no
    // backends of that frontend), then half the time a second frontend
    // at the first one's address and port with the other protocol, whose
    // backends are the endpoints declaring `http` for that protocol
    // (contract::backend_group: a set per family and protocol).
    for s in &mut m.services {
        if let BackendSource::Select { port, .. } = &mut s.backends {
            if rng.chance(50) {
                *port = TargetPort::Named("http".into());
                let f = s.frontends[0];
                if matches!(f.proto, Proto::Tcp | Proto::Udp) && rng.chance(50) {
                    let proto = match f.proto {
                        Proto::Tcp => Proto::Udp,
                        _ => Proto::Tcp,
                    };
                    s.frontends.push(Frontend { proto, ..f });
                }
            }
        }
    }
    for p in &mut m.policies {
        for r in [&mut p.ingress, &mut p.egress]
            .into_iter()
            .flatten()
            .flatten()
        {
            if rng.chance(30) {
                r.proto = ProtoMatch::Named {
                    proto: *rng.pick(&[Proto::Tcp, Proto::Tcp, Proto::Udp]),
                    name: rng.pick(&["http", "http", "dns", "none"]).to_string(),
                };
            }
        }
    }
}

/// The default tier, and half the time a `security` tier before it.
fn gen_tiers(rng: &mut Rng) -> Vec<Tier> {
    let mut tiers = vec![Tier {
        name: "default".into(),
        order: 1000,
        audit: false,
        default_pass: false,
        span: None,
    }];
    if rng.chance(50) {
        tiers.push(Tier {
            name: "security".into(),
            order: 10,
            audit: false,
            default_pass: false,
            span: Some(span(1)),
        });
    }
    tiers.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
    tiers
}

/// Endpoints with distinct addresses; some of their addresses are added
/// to `pool` as host prefixes so rules can name them.
fn gen_endpoints(rng: &mut Rng, pool: &mut Vec<Cidr>) -> Vec<Endpoint> {
    let mut addr_pool: Vec<IpAddr> = vec![
        v4(10, 0, 0, 1),
        v4(10, 0, 0, 5),
        v4(10, 0, 0, 6),
        v4(10, 0, 1, 7),
        v4(10, 1, 2, 3),
        v4(192, 168, 1, 1),
        v4(172, 16, 0, 1),
        v4(10, 0, 0, 0),
    ];
    let n_ep = 2 + rng.below(6);
    let mut endpoints = Vec::new();
    for i in 0..n_ep {
        if addr_pool.is_empty() {
            break;
        }
        let a = addr_pool.remove(rng.below(addr_pool.len()));
        let mut addrs = vec![a];
        if rng.chance(25) {
            addrs.push(v6(1 + i as u128 * 17));
        }
        let mut labels: BTreeMap<String, String> = BTreeMap::new();
        for k in KEYS {
            if rng.chance(60) {
                labels.insert(k.to_string(), rng.pick(&VALUES).to_string());
            }
        }
        endpoints.push(Endpoint {
            name: format!("ep{i}"),
            labels: labels.into(),
            addrs,
            ready: rng.chance(85),
            span: Some(span(3)),
        });
    }
    for e in &endpoints {
        if rng.chance(30) {
            pool.push(Cidr::host(e.addrs[0]));
        }
    }
    endpoints.sort_by(|a, b| a.name.cmp(&b.name));
    endpoints
}

/// One to five policies, sorted as the checker sorts them.
fn gen_policies(rng: &mut Rng, tiers: &[Tier], pool: &[Cidr], spans: &mut u32) -> Vec<Policy> {
    let mut policies = Vec::new();
    for i in 0..1 + rng.below(5) {
        *spans += 2;
        let ingress = rng.chance(70).then(|| gen_rules(rng, pool, spans));
        let egress = rng.chance(60).then(|| gen_rules(rng, pool, spans));
        policies.push(Policy {
            name: format!("p{i}"),
            tier: rng.below(tiers.len()),
            priority: *rng.pick(&[100u16, 100, 200, 1000]),
            applies_to: gen_sel(rng, 1),
            ingress,
            egress,
            audit: false,
            span: span(*spans),
            name_span: span(*spans),
        });
    }
    policies.sort_by(|a, b| {
        let ta = &tiers[a.tier];
        let tb = &tiers[b.tier];
        (ta.order, &ta.name, a.priority, &a.name).cmp(&(tb.order, &tb.name, b.priority, &b.name))
    });
    policies
}

/// Up to two services, each selecting its backends or listing them from
/// the endpoints' addresses.
fn gen_services(rng: &mut Rng, endpoints: &[Endpoint]) -> Vec<Service> {
    let mut services = Vec::new();
    for i in 0..rng.below(3) {
        let fe_proto = *rng.pick(&[Proto::Tcp, Proto::Udp]);
        let mut frontends = vec![Frontend {
            addr: v4(10, 96, 0, 1 + i as u8),
            port: *rng.pick(&[80u16, 443]),
            proto: fe_proto,
        }];
        if rng.chance(30) {
            frontends.push(Frontend {
                addr: v6(0x9600 + i as u128),
                port: 80,
                proto: Proto::Tcp,
            });
        }
        let backends = gen_service_backends(rng, endpoints);
        services.push(Service {
            name: format!("s{i}"),
            frontends,
            backends,
            balance: if rng.chance(40) {
                Balance::Maglev
            } else {
                Balance::Random
            },
            affinity: rng.chance(30).then_some(3600),
            span: span(5),
        });
    }
    services
}

/// A service's backends: a selector half the time, otherwise an explicit
/// sorted, deduplicated list.
fn gen_service_backends(rng: &mut Rng, endpoints: &[Endpoint]) -> BackendSource {
    if rng.chance(50) {
        return BackendSource::Select {
            selector: gen_sel(rng, 0),
            port: TargetPort::Number(*rng.pick(&[80u16, 443, 8080])),
        };
    }
    let mut list: Vec<Backend> = (0..rng.below(4))
        .map(|_| {
            let e = rng.pick(endpoints);
            Backend {
                addr: e.addrs[0],
                port: *rng.pick(&[80u16, 22, 8080]),
                weight: *rng.pick(&[0u16, 1, 1, 3]),
                endpoint: None,
            }
        })
        .collect();
    list.sort();
    list.dedup_by(|a, b| a.addr == b.addr && a.port == b.port);
    BackendSource::Explicit(list)
}

/// Up to two steering blocks of one to three rules each.
fn gen_steers(rng: &mut Rng, pool: &[Cidr], spans: &mut u32) -> Vec<Steer> {
    let mut steers = Vec::new();
    for i in 0..rng.below(3) {
        let rules = (0..1 + rng.below(3))
            .map(|_| {
                *spans += 2;
                SteerRule {
                    action: match rng.below(4) {
                        0 => SteerAction::Redirect {
                            addr: v4(127, 0, 0, 1),
                            port: 15001,
                        },
                        1 => SteerAction::Mark(0x10),
                        2 => SteerAction::Dscp(46),
                        _ => SteerAction::Bypass,
                    },
                    proto: gen_proto(rng),
                    from: gen_peer(rng, pool),
                    to: gen_peer(rng, pool),
                    span: span(*spans),
                }
            })
            .collect();
        steers.push(Steer {
            name: format!("st{i}"),
            priority: *rng.pick(&[10u16, 20]),
            rules,
            span: span(7),
        });
    }
    steers.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
    steers
}

/// A dual-stack variant of [`model`]`(seed)`: the same model (so the
/// tests built on `model` keep their inputs) plus, from a generator of its
/// own, IPv6-only endpoints, IPv6 backends, an IPv6-only service, an SCTP
/// service, and policy and steering rules whose sets are IPv6 prefixes.
/// Everything compiles for both back ends (the eBPF back end updates the
/// CRC32c of an SCTP packet whose port the translation changes).
pub fn dual_stack(seed: u64) -> Model {
    let mut m = model(seed);
    let mut rng = Rng::new(seed ^ 0xD0A1_57AC);
    add_v6_endpoints(&mut m, &mut rng);
    let v6_pool = vec![
        cidr(v6(0), 64),
        cidr(v6(0x5000), 116),
        cidr(v6(0x6000), 120),
        Cidr::host(*rng.pick(&addrs_of(&m, true))),
    ];
    add_v6_and_sctp_services(&mut m, &mut rng);
    add_v6_rules(&mut m, &mut rng, &v6_pool);
    peers::worlds(&mut m, seed);
    m
}

/// Endpoint addresses of one family.
fn addrs_of(m: &Model, six: bool) -> Vec<IpAddr> {
    m.endpoints
        .iter()
        .flat_map(|e| e.addrs.iter().copied())
        .filter(|a| a.is_ipv6() == six)
        .collect()
}

/// IPv6-only endpoints, and an IPv6 address for some IPv4 ones.
fn add_v6_endpoints(m: &mut Model, rng: &mut Rng) {
    for i in 0..1 + rng.below(3) {
        let mut labels: BTreeMap<String, String> = BTreeMap::new();
        for k in KEYS {
            if rng.chance(60) {
                labels.insert(k.to_string(), rng.pick(&VALUES).to_string());
            }
        }
        m.endpoints.push(Endpoint {
            name: format!("v6ep{i}"),
            labels: labels.into(),
            addrs: vec![v6(0x5000 + i as u128)],
            ready: rng.chance(90),
            span: Some(span(3)),
        });
    }
    for (i, e) in m.endpoints.iter_mut().enumerate() {
        if e.addrs.iter().all(|a| a.is_ipv4()) && rng.chance(40) {
            e.addrs.push(v6(0x6000 + i as u128));
        }
    }
    m.endpoints.sort_by(|a, b| a.name.cmp(&b.name));
}

/// A selector (which takes the frontend's family) or explicit backends
/// from `pool`.
fn gen_backends(rng: &mut Rng, pool: &[IpAddr]) -> BackendSource {
    if rng.chance(40) {
        return BackendSource::Select {
            selector: gen_sel(rng, 0),
            port: TargetPort::Number(*rng.pick(&[80u16, 8080])),
        };
    }
    let mut list: Vec<Backend> = (0..rng.below(4))
        .map(|_| Backend {
            addr: *rng.pick(pool),
            port: *rng.pick(&[80u16, 8080]),
            weight: *rng.pick(&[0u16, 1, 2]),
            endpoint: None,
        })
        .collect();
    list.sort();
    list.dedup_by(|a, b| a.addr == b.addr && a.port == b.port);
    BackendSource::Explicit(list)
}

/// An IPv6-only service, and (half the time) an SCTP one of both
/// families.
fn add_v6_and_sctp_services(m: &mut Model, rng: &mut Rng) {
    let (v6_addrs, v4_addrs) = (addrs_of(m, true), addrs_of(m, false));
    let mut services = vec![Service {
        name: "six".into(),
        frontends: vec![Frontend {
            addr: v6(0x9700),
            port: *rng.pick(&[80u16, 443]),
            proto: *rng.pick(&[Proto::Tcp, Proto::Udp]),
        }],
        backends: gen_backends(rng, &v6_addrs),
        balance: if rng.chance(40) {
            Balance::Maglev
        } else {
            Balance::Random
        },
        affinity: rng.chance(30).then_some(600),
        span: span(5),
    }];
    if rng.chance(50) {
        // Backends on the frontend's port half the time (an address-only
        // translation); otherwise the port changes too (the CRC32c
        // update in eBPF).
        let both: Vec<IpAddr> = v4_addrs.iter().chain(&v6_addrs).copied().collect();
        let mut backends = gen_backends(rng, &both);
        if rng.chance(50) {
            match &mut backends {
                BackendSource::Select { port, .. } => *port = TargetPort::Number(3868),
                BackendSource::Explicit(list) => list.iter_mut().for_each(|b| b.port = 3868),
            }
        }
        services.push(Service {
            name: "sctp".into(),
            frontends: vec![
                Frontend {
                    addr: v4(10, 96, 12, 2),
                    port: 3868,
                    proto: Proto::Sctp,
                },
                Frontend {
                    addr: v6(0x9702),
                    port: 3868,
                    proto: Proto::Sctp,
                },
            ],
            backends,
            balance: Balance::Random,
            affinity: None,
            span: span(5),
        });
    }
    m.services.extend(services);
    m.services.sort_by(|a, b| a.name.cmp(&b.name));
}

/// A rule's protocol for IPv6 peers: [`gen_proto`], whose `icmp` becomes
/// `icmp6` three times in four (the rest stay `icmp`, which never matches
/// an IPv6 packet), and an extra `icmp6` rule on any peer.
fn icmp6_mostly(rng: &mut Rng) -> ProtoMatch {
    match gen_proto(rng) {
        ProtoMatch::Icmp { ty, code, .. } if rng.chance(75) => ProtoMatch::Icmp {
            proto: Proto::Icmp6,
            ty: ty.map(|t| t + 128),
            code,
        },
        other => other,
    }
}

/// Policy rules and a steering rule on IPv6 prefixes of `pool` (mark,
/// DSCP, bypass, or a TCP / UDP redirect to a loopback proxy of either
/// family).
fn add_v6_rules(m: &mut Model, rng: &mut Rng, pool: &[Cidr]) {
    let mut spans = 10_000u32;
    for p in &mut m.policies {
        for rules in [&mut p.ingress, &mut p.egress].into_iter().flatten() {
            if rng.chance(50) {
                spans += 2;
                rules.insert(
                    rng.below(rules.len() + 1),
                    Rule {
                        action: *rng.pick(&[Action::Allow, Action::Deny]),
                        proto: icmp6_mostly(rng),
                        peer: PeerMatch::Set(gen_set(rng, pool)),
                        log: rng.chance(20),
                        span: span(spans),
                    },
                );
            }
            if rng.chance(30) {
                spans += 2;
                let ty = rng.chance(70).then(|| *rng.pick(&[128u8, 129, 135, 1, 2]));
                rules.insert(
                    rng.below(rules.len() + 1),
                    Rule {
                        action: *rng.pick(&[Action::Allow, Action::Deny]),
                        proto: ProtoMatch::Icmp {
                            proto: Proto::Icmp6,
                            ty,
                            code: (ty.is_some() && rng.chance(30)).then_some(0),
                        },
                        peer: PeerMatch::Any,
                        log: false,
                        span: span(spans),
                    },
                );
            }
        }
    }
    if rng.chance(50) {
        spans += 2;
        let action = [
            SteerAction::Mark(0x20),
            SteerAction::Dscp(10),
            SteerAction::Bypass,
            SteerAction::Redirect {
                addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                port: 15001,
            },
            SteerAction::Redirect {
                addr: v4(127, 0, 0, 1),
                port: 15001,
            },
        ];
        let action = rng.pick(&action).clone();
        let (proto, from) = match action {
            // A redirect where both back ends can express it: TCP or UDP
            // (eBPF's socket assignment takes no SCTP, E0525), to a
            // loopback proxy of either family (iptables' REDIRECT to the
            // port, eBPF's assignment to the socket on it; a proxy of the
            // other family is its wildcard socket); from IPv6 prefixes,
            // or from anyone (a dual-stack redirect).
            SteerAction::Redirect { .. } => (
                ProtoMatch::Ports {
                    proto: *rng.pick(&[Proto::Tcp, Proto::Udp]),
                    ports: gen_ports(rng),
                },
                if rng.chance(30) {
                    PeerMatch::Any
                } else {
                    PeerMatch::Set(gen_set(rng, pool))
                },
            ),
            _ => (icmp6_mostly(rng), PeerMatch::Set(gen_set(rng, pool))),
        };
        m.steers.push(Steer {
            name: "st6".into(),
            priority: 30,
            rules: vec![SteerRule {
                action,
                proto,
                from,
                to: gen_peer(rng, pool),
                span: span(spans),
            }],
            span: span(7),
        });
    }
}

fn step(a: IpAddr, d: i128) -> IpAddr {
    match a {
        IpAddr::V4(x) => IpAddr::V4(((i128::from(u32::from(x)) + d) as u32).into()),
        IpAddr::V6(x) => IpAddr::V6(((u128::from(x) as i128 + d) as u128).into()),
    }
}

fn last(c: &Cidr) -> IpAddr {
    match c.addr {
        IpAddr::V4(x) => {
            let host = if c.len == 0 {
                u32::MAX
            } else {
                (1u32 << (32 - c.len)).wrapping_sub(1)
            };
            IpAddr::V4((u32::from(x) | host).into())
        }
        IpAddr::V6(x) => {
            let host = if c.len == 0 {
                u128::MAX
            } else {
                (1u128 << (128 - c.len)).wrapping_sub(1)
            };
            IpAddr::V6((u128::from(x) | host).into())
        }
    }
}

/// Addresses worth testing: endpoint addresses, every set prefix's first
/// and last address ± 1, frontends, and `extra` random ones of both
/// families.
pub fn interesting_addrs(model: &Model, rng: &mut Rng, extra: usize) -> Vec<IpAddr> {
    let mut out: BTreeSet<IpAddr> = BTreeSet::new();
    for e in &model.endpoints {
        out.extend(e.addrs.iter().copied());
    }
    let mut cidrs: Vec<Cidr> = Vec::new();
    let mut add_peer = |p: &PeerMatch| {
        if let PeerMatch::Set(s) | PeerMatch::World(Some(s)) = p {
            cidrs.extend(s.include.iter().chain(&s.exclude).copied());
        }
    };
    for p in &model.policies {
        for r in [&p.ingress, &p.egress].into_iter().flatten().flatten() {
            add_peer(&r.peer);
        }
    }
    for s in &model.steers {
        for r in &s.rules {
            add_peer(&r.from);
            add_peer(&r.to);
        }
    }
    for c in cidrs {
        for a in [c.addr, last(&c)] {
            out.insert(a);
            out.insert(step(a, 1));
            out.insert(step(a, -1));
        }
    }
    for s in &model.services {
        out.extend(s.frontends.iter().map(|f| f.addr));
    }
    for _ in 0..extra {
        let x = rng.next_u64();
        out.insert(if rng.chance(70) {
            match rng.below(3) {
                0 => v4(10, 0, (x >> 8) as u8 % 3, x as u8),
                1 => IpAddr::V4((x as u32).into()),
                _ => v4(192, 168, (x >> 8) as u8 % 2, x as u8),
            }
        } else {
            v6(u128::from(x % 300))
        });
    }
    out.into_iter().collect()
}

/// Random packets for `model`: see the module docs.
pub fn packets(model: &Model, rng: &mut Rng, n: usize) -> Vec<Packet> {
    let addrs = interesting_addrs(model, rng, 20);
    let (v4s, v6s): (Vec<IpAddr>, Vec<IpAddr>) = addrs.iter().partition(|a| a.is_ipv4());
    let mut ports: BTreeSet<u16> = [0u16, 1, 65535].into_iter().collect();
    let mut icmp: BTreeSet<(u8, u8)> = [(0, 0), (8, 0), (3, 1), (128, 0), (135, 0), (1, 4)]
        .into_iter()
        .collect();
    let mut note = |pm: &ProtoMatch| match pm {
        ProtoMatch::Ports { ports: rs, .. } => {
            for r in rs {
                for p in [r.lo, r.hi] {
                    ports.insert(p);
                    ports.insert(p.saturating_add(1));
                    ports.insert(p.saturating_sub(1));
                }
            }
        }
        ProtoMatch::Icmp { ty, code, .. } => {
            icmp.insert((ty.unwrap_or(5), code.unwrap_or(0)));
            icmp.insert((ty.unwrap_or(5), code.map_or(0, |c| c.wrapping_add(1))));
        }
        ProtoMatch::Any => {}
        // The ports endpoints declare are noted below.
        ProtoMatch::Named { .. } => {}
    };
    for p in &model.policies {
        for r in [&p.ingress, &p.egress].into_iter().flatten().flatten() {
            note(&r.proto);
        }
    }
    for s in &model.steers {
        for r in &s.rules {
            note(&r.proto);
        }
    }
    // Named ports: the ports endpoints declare, and their neighbours.
    for e in &model.endpoints {
        for (k, v) in e.labels.iter() {
            if let (true, Ok(p)) = (k.starts_with(crate::named_ports::PREFIX), v.parse::<u16>()) {
                ports.extend([p, p.saturating_add(1), p.saturating_sub(1)]);
            }
        }
    }
    let ports: Vec<u16> = ports.into_iter().collect();
    let icmp: Vec<(u8, u8)> = icmp.into_iter().collect();
    let frontends: Vec<Frontend> = model
        .services
        .iter()
        .flat_map(|s| s.frontends.iter().copied())
        .collect();
    let mut out: Vec<Packet> = (0..n)
        .map(|_| {
            let six = !v6s.is_empty() && rng.chance(20);
            let fam = if six { &v6s } else { &v4s };
            let eps: Vec<IpAddr> = model
                .endpoints
                .iter()
                .flat_map(|e| e.addrs.iter().copied())
                .filter(|a| a.is_ipv4() != six)
                .collect();
            let draw = |rng: &mut Rng| {
                if !eps.is_empty() && rng.chance(60) {
                    *rng.pick(&eps)
                } else {
                    *rng.pick(fam)
                }
            };
            let src = draw(rng);
            let proto = *rng.pick(&[Proto::Tcp, Proto::Tcp, Proto::Udp, Proto::Sctp, Proto::Icmp]);
            let (dst, dport, proto) = if !frontends.is_empty() && rng.chance(15) {
                let f = *rng.pick(&frontends);
                (f.addr, f.port, f.proto)
            } else {
                (draw(rng), *rng.pick(&ports), proto)
            };
            // ICMP packets are mostly their family's ICMP (`icmp` in IPv4,
            // `icmp6` in IPv6), sometimes the other family's (a protocol
            // without a keyword there: only `any` matches it).
            let proto = if proto == Proto::Icmp && six != rng.chance(15) {
                Proto::Icmp6
            } else {
                proto
            };
            let mut p = Packet::new(proto, src, 40000 + rng.below(1000) as u16, dst, dport);
            if proto.is_icmp() {
                let (t, c) = *rng.pick(&icmp);
                p.sport = 0;
                p.icmp_type = t;
                p.icmp_code = c;
            }
            if rng.chance(5) {
                p.state = ConnState::Established;
            }
            p.at = match rng.below(4) {
                0 => Some(Direction::Ingress),
                1 => Some(Direction::Egress),
                _ => None,
            };
            p
        })
        .collect();
    let mine = peers::self_packets(model, &out);
    let theirs = nodes::node_packets(model, &out);
    out.extend(mine);
    out.extend(theirs);
    out
}

/// Marks random policies of `model` audit (each with probability 1/3),
/// and sometimes a whole tier (all its policies with it), for the audit
/// property tests (language.md §4, "Audit policies").
pub fn mark_audit(model: &mut Model, rng: &mut Rng) {
    if model.tiers.len() > 1 && rng.chance(25) {
        let t = rng.below(model.tiers.len());
        model.tiers[t].audit = true;
    }
    for p in &mut model.policies {
        p.audit = model.tiers[p.tier].audit || rng.chance(33);
    }
}
