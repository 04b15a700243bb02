//! A generator of synthetic but realistic policy sets at scale, for the
//! benchmarks (`bench/`, issue 9). Unlike [`crate::gen`] (small random
//! models that stress the compiler's corner cases), this builds what a
//! Kubernetes-like cluster looks like, sized by parameters:
//!
//! - **endpoints** (`K`, pods) belong to **deployments** (`D` distinct
//!   policy-relevant label sets: `app`, `tier`, `ns`, `env`). Endpoints are
//!   handed out in **replica groups** of `B` consecutive endpoints; every
//!   group is one deployment's instance and carries one more label,
//!   `instance: "i-<group>"`, which only service selectors mention (so it
//!   never creates address classes). A few endpoints (1 in 40) are not
//!   ready. Addresses are consecutive from `10.64.0.1`.
//! - **services** (`N`): frontend `10.96.x.y` (one per service), port 80,
//!   443, 8080 or 9090 over TCP, every fourth service UDP (port 53 or
//!   5353). 1 in 20 services has explicit external backends
//!   (`172.16.…:443`, weighted); the others select one replica group,
//!   `backends select app == "app-d" && instance == "i-g" port P`, so
//!   each has `B` backends (minus the unready ones). Balance is Maglev for
//!   `maglev_pct` percent of services, else random; `affinity_pct` percent
//!   have client-IP affinity. When there are more services than groups,
//!   services wrap around (several ports of one workload).
//! - **policies** (`M`, `R` rules each): 1 in 10 in a `security` tier
//!   (namespace-wide subjects, `deny`/`pass`/`log`, each block ending in
//!   `pass from any` so the default tier decides the rest), the rest in the
//!   default tier on one deployment (`app == …`, sometimes `&& env ==
//!   "prod"`; subjects spread evenly over the deployments). Rules allow TCP ports or ranges from deployments, tiers or
//!   namespaces, UDP 53 to DNS, ICMP echo, CIDR peers (`192.168.x.0/24`,
//!   `10.99.x.0/24` denies with `log`), `log` rules, a trailing `deny from
//!   any log` in some ingress blocks. About 70 % of a policy's rules are
//!   ingress.
//! - **CIDR rules** (`C`, on top of `M × R`): egress allows to external
//!   prefixes in `100.64.0.0/10` (mostly `/24`, every fifth a `/20` with an
//!   `except` of one `/24` inside), spread round-robin over the policies
//!   (policies get an egress block if they need one).
//!
//! Everything is deterministic from [`Params::seed`] (splitmix64, as
//! [`crate::gen`]). [`model`] builds the checked [`Model`] directly;
//! [`render`] writes the same program as `.weir` source plus a JSON
//! inventory, which the checker turns back into the same model (a test
//! checks this), so the CLI path can be benchmarked on identical input.

use crate::gen::Rng;
use crate::model::{
    Action, AddrSet, Backend, BackendSource, Balance, Cidr, DefaultDeny, Endpoint, Frontend, Model,
    PeerMatch, Policy, PortRange, Proto, ProtoMatch, Rule, Sel, Service, TargetPort, Tier,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};
use weir_grammar::{FileId, Span};

pub mod per_pod;

/// The size and mix of a synthetic policy set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub seed: u64,
    /// `N`: services.
    pub services: usize,
    /// `B`: backends per selector service (the replica-group size).
    pub backends: usize,
    /// `M`: policies.
    pub policies: usize,
    /// `R`: rules per policy.
    pub rules: usize,
    /// `K`: endpoints.
    pub endpoints: usize,
    /// `D`: deployments, i.e. distinct policy-relevant label sets.
    pub deployments: usize,
    /// `C`: extra CIDR rules (on top of `M × R`).
    pub cidr_rules: usize,
    /// Percent of services balanced with Maglev (the rest random).
    pub maglev_pct: u32,
    /// Percent of services with client-IP affinity.
    pub affinity_pct: u32,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            seed: 9,
            services: 10,
            backends: 3,
            policies: 1,
            rules: 10,
            endpoints: 100,
            deployments: 30,
            cidr_rules: 0,
            maglev_pct: 30,
            affinity_pct: 10,
        }
    }
}

impl Params {
    /// Total policy rules: `M × R + C`.
    pub fn total_rules(&self) -> usize {
        self.policies * self.rules + self.cidr_rules
    }

    fn deployments(&self) -> usize {
        self.deployments.clamp(1, self.endpoints.max(1))
    }

    fn namespaces(&self) -> usize {
        (self.deployments() / 8).max(1)
    }

    fn groups(&self) -> usize {
        self.endpoints.div_ceil(self.backends.max(1)).max(1)
    }
}

const TIERS: [&str; 5] = ["web", "api", "data", "cache", "queue"];
const PORTS: [u16; 8] = [80, 443, 8080, 8443, 9090, 5432, 6379, 3306];
const SVC_PORTS_TCP: [u16; 4] = [80, 443, 8080, 9090];
const SVC_PORTS_UDP: [u16; 2] = [53, 5353];

fn span(n: usize) -> Span {
    let n = n.min(u32::MAX as usize - 2) as u32;
    Span {
        file: FileId(0),
        start: n,
        end: n + 1,
    }
}

/// The address of endpoint `i`: consecutive from 10.64.0.1.
pub fn endpoint_addr(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(
        u32::from(Ipv4Addr::new(10, 64, 0, 1)) + i as u32,
    ))
}

/// The frontend address of service `s`: consecutive from 10.96.0.1.
pub fn service_vip(s: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(
        u32::from(Ipv4Addr::new(10, 96, 0, 1)) + s as u32,
    ))
}

fn v4cidr(base: u32, len: u8) -> Cidr {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Cidr {
        addr: IpAddr::V4(Ipv4Addr::from(base & mask)),
        len,
    }
}

fn eq(k: &str, v: impl Into<String>) -> Sel {
    Sel::Eq(k.to_string(), v.into())
}

fn and(a: Sel, b: Sel) -> Sel {
    Sel::And(Box::new(a), Box::new(b))
}

fn width(n: usize) -> usize {
    n.max(1).to_string().len()
}

/// Labels of deployment `d`.
fn deployment_labels(p: &Params, d: usize) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert("app".to_string(), format!("app-{d}"));
    l.insert("tier".to_string(), TIERS[d % TIERS.len()].to_string());
    l.insert("ns".to_string(), format!("ns-{}", d % p.namespaces()));
    l.insert(
        "env".to_string(),
        if d % 7 == 3 { "staging" } else { "prod" }.to_string(),
    );
    l
}

fn ports(rng: &mut Rng) -> Vec<PortRange> {
    match rng.below(10) {
        0 => {
            let lo = 8000 + 100 * rng.below(10) as u16;
            vec![PortRange { lo, hi: lo + 99 }]
        }
        1 => {
            let mut v: Vec<u16> = (0..2).map(|_| *rng.pick(&PORTS)).collect();
            v.sort();
            v.dedup();
            PortRange::merge(v.into_iter().map(|p| PortRange { lo: p, hi: p }).collect())
        }
        _ => {
            let p = *rng.pick(&PORTS);
            vec![PortRange { lo: p, hi: p }]
        }
    }
}

/// A peer selector for a rule: a deployment, a tier in a namespace, a
/// namespace, or a few apps.
fn peer_sel(rng: &mut Rng, p: &Params) -> Sel {
    let d = p.deployments();
    match rng.below(10) {
        0..=5 => eq("app", format!("app-{}", rng.below(d))),
        6 | 7 => and(
            eq("tier", *rng.pick(&TIERS)),
            eq("ns", format!("ns-{}", rng.below(p.namespaces()))),
        ),
        8 => eq("ns", format!("ns-{}", rng.below(p.namespaces()))),
        _ => Sel::In(
            "app".into(),
            (0..3).map(|_| format!("app-{}", rng.below(d))).collect(),
        ),
    }
}

fn tcp(ports: Vec<PortRange>) -> ProtoMatch {
    ProtoMatch::Ports {
        proto: Proto::Tcp,
        ports,
    }
}

fn one_rule(rng: &mut Rng, p: &Params, ingress: bool, security: bool, n: usize) -> Rule {
    let (action, proto, peer, log) = match rng.below(20) {
        0..=10 => (
            Action::Allow,
            tcp(ports(rng)),
            PeerMatch::Selector(peer_sel(rng, p)),
            false,
        ),
        11 => (
            Action::Allow,
            ProtoMatch::Ports {
                proto: Proto::Udp,
                ports: vec![PortRange { lo: 53, hi: 53 }],
            },
            PeerMatch::Selector(eq("app", "app-0")),
            false,
        ),
        12 => (
            Action::Allow,
            ProtoMatch::Icmp {
                proto: Proto::Icmp,
                ty: Some(8),
                code: None,
            },
            PeerMatch::Any,
            false,
        ),
        13 | 14 => {
            let net = u32::from(Ipv4Addr::new(192, 168, rng.below(256) as u8, 0));
            (
                Action::Allow,
                tcp(ports(rng)),
                PeerMatch::Set(AddrSet {
                    include: vec![v4cidr(net, 24)],
                    exclude: vec![],
                }),
                false,
            )
        }
        15 => {
            let net = u32::from(Ipv4Addr::new(10, 99, rng.below(256) as u8, 0));
            (
                Action::Deny,
                ProtoMatch::Any,
                PeerMatch::Set(AddrSet {
                    include: vec![v4cidr(net, 24)],
                    exclude: vec![],
                }),
                true,
            )
        }
        16 => (
            Action::Log,
            tcp(vec![PortRange { lo: 22, hi: 22 }]),
            PeerMatch::Any,
            false,
        ),
        17 if security => (
            Action::Pass,
            ProtoMatch::Any,
            PeerMatch::Selector(eq("ns", format!("ns-{}", rng.below(p.namespaces())))),
            false,
        ),
        18 if security => (
            Action::Deny,
            tcp(vec![PortRange { lo: 23, hi: 23 }]),
            PeerMatch::Any,
            true,
        ),
        _ => (
            Action::Allow,
            tcp(ports(rng)),
            PeerMatch::Selector(peer_sel(rng, p)),
            rng.chance(10),
        ),
    };
    let _ = ingress;
    Rule {
        action,
        proto,
        peer,
        log,
        span: span(n),
    }
}

/// The `j`-th extra CIDR rule (egress allow to an external prefix).
fn cidr_rule(j: usize, n: usize) -> Rule {
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0)) + ((j as u32) << 8);
    let set = if j % 5 == 4 {
        let outer = v4cidr(base, 20);
        let hole = v4cidr(base, 24);
        AddrSet {
            include: vec![outer],
            exclude: if outer == hole { vec![] } else { vec![hole] },
        }
    } else {
        AddrSet {
            include: vec![v4cidr(base, 24)],
            exclude: vec![],
        }
    };
    Rule {
        action: Action::Allow,
        proto: tcp(vec![PortRange { lo: 443, hi: 443 }]),
        peer: PeerMatch::Set(set),
        log: false,
        span: span(n),
    }
}

/// The synthetic model for `p` (checker invariants hold: sorted, unique
/// names, no host bits, one endpoint per address).
///
/// Services draw from the generator before policies; keep that order,
/// or every seed's model changes.
pub fn model(p: &Params) -> Model {
    let mut rng = Rng::new(p.seed);
    let mut spans = 10usize;
    let endpoints = endpoints(p);
    let services = services(p, &mut rng);
    let tiers = tiers();
    let policies = policies(p, &tiers, &mut rng, &mut spans);
    Model {
        tiers,
        policies,
        endpoints,
        services,
        steers: Vec::new(),
        default_deny: DefaultDeny::default(),
        tests: Vec::new(),
        named_selectors: BTreeMap::new(),
        named_sets: BTreeMap::new(),
        nodes: Vec::new(),
        namespaces: BTreeMap::new(),
    }
}

/// `K` endpoints in replica groups of `B`, labelled by deployment.
fn endpoints(p: &Params) -> Vec<Endpoint> {
    let deployments = p.deployments();
    let b = p.backends.max(1);
    let ew = width(p.endpoints);
    (0..p.endpoints)
        .map(|i| {
            let g = i / b;
            let mut labels = deployment_labels(p, g % deployments);
            labels.insert("instance".into(), format!("i-{g}"));
            Endpoint {
                name: format!("pod-{i:0ew$}"),
                labels: labels.into(),
                addrs: vec![endpoint_addr(i)],
                ready: i % 40 != 39,
                span: None,
            }
        })
        .collect()
}

/// `N` services, sorted by name: most select a replica group, every
/// twentieth lists its backends.
fn services(p: &Params, rng: &mut Rng) -> Vec<Service> {
    let sw = width(p.services);
    let mut services: Vec<Service> = (0..p.services)
        .map(|s| {
            let udp = s % 4 == 3;
            let port = if udp {
                SVC_PORTS_UDP[(s / 4) % SVC_PORTS_UDP.len()]
            } else {
                SVC_PORTS_TCP[s % SVC_PORTS_TCP.len()]
            };
            Service {
                name: format!("svc-{s:0sw$}"),
                frontends: vec![Frontend {
                    addr: service_vip(s),
                    port,
                    proto: if udp { Proto::Udp } else { Proto::Tcp },
                }],
                backends: service_backends(p, s),
                balance: if rng.chance(p.maglev_pct) {
                    Balance::Maglev
                } else {
                    Balance::Random
                },
                affinity: rng.chance(p.affinity_pct).then_some(3 * 3600),
                span: span(1),
            }
        })
        .collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    services
}

/// Service `s`'s backends: an explicit list for every twentieth service
/// (and when there are no endpoints), otherwise a replica group's selector.
fn service_backends(p: &Params, s: usize) -> BackendSource {
    let b = p.backends.max(1);
    if s % 20 == 19 || p.endpoints == 0 {
        let mut list: Vec<Backend> = (0..b)
            .map(|k| Backend {
                addr: IpAddr::V4(Ipv4Addr::from(
                    u32::from(Ipv4Addr::new(172, 16, 0, 1)) + (s * 8 + k) as u32,
                )),
                port: 443,
                weight: 1 + (k % 3) as u16,
                endpoint: None,
            })
            .collect();
        list.sort();
        BackendSource::Explicit(list)
    } else {
        let deployments = p.deployments();
        let groups = p.groups();
        let g = s % groups;
        BackendSource::Select {
            selector: and(
                eq("app", format!("app-{}", g % deployments)),
                eq("instance", format!("i-{g}")),
            ),
            port: TargetPort::Number(8000 + ((s / groups) % 1000) as u16),
        }
    }
}

/// The `security` and `default` tiers, in order.
fn tiers() -> Vec<Tier> {
    let mut tiers = vec![
        Tier {
            name: "security".into(),
            order: 10,
            audit: false,
            default_pass: false,
            span: Some(span(2)),
        },
        Tier {
            name: "default".into(),
            order: 1000,
            audit: false,
            default_pass: false,
            span: None,
        },
    ];
    tiers.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
    tiers
}

/// `M` policies of `R` rules each, then the `C` extra CIDR rules spread
/// over them, sorted as the checker sorts policies.
fn policies(p: &Params, tiers: &[Tier], rng: &mut Rng, spans: &mut usize) -> Vec<Policy> {
    let tier_id = |name: &str| tiers.iter().position(|t| t.name == name).unwrap_or(0);
    let (security, default) = (tier_id("security"), tier_id("default"));
    let pw = width(p.policies);
    let mut policies: Vec<Policy> = (0..p.policies)
        .map(|m| {
            let sec = m % 10 == 0 && p.policies > 1;
            let n_in = if p.rules == 0 {
                0
            } else {
                (p.rules * 7).div_ceil(10)
            };
            let n_eg = p.rules - n_in;
            let ingress = ingress_rules(p, m, sec, n_in, rng, spans);
            let egress = egress_rules(p, sec, n_eg, rng, spans);
            *spans += 2;
            Policy {
                name: format!("pol-{m:0pw$}"),
                tier: if sec { security } else { default },
                priority: 100 * (1 + (m % 5) as u16),
                applies_to: policy_subject(p, m, sec),
                ingress: (n_in > 0).then_some(ingress),
                egress: (n_eg > 0).then_some(egress),
                audit: false,
                span: span(*spans),
                name_span: span(*spans),
            }
        })
        .collect();
    if !policies.is_empty() {
        for j in 0..p.cidr_rules {
            *spans += 2;
            let pol = &mut policies[j % p.policies];
            pol.egress
                .get_or_insert_with(Vec::new)
                .push(cidr_rule(j, *spans));
        }
    }
    policies.sort_by(|a, b| {
        let ta = &tiers[a.tier];
        let tb = &tiers[b.tier];
        (ta.order, &ta.name, a.priority, &a.name).cmp(&(tb.order, &tb.name, b.priority, &b.name))
    });
    policies
}

/// Policy `m`'s `applies to`: a namespace for security policies,
/// otherwise a deployment (sometimes only its `prod` endpoints).
fn policy_subject(p: &Params, m: usize, sec: bool) -> Sel {
    let deployments = p.deployments();
    // Spread subjects over the deployments (policy m on deployment
    // m × D / M when there are fewer policies than deployments).
    let d = if p.policies < deployments {
        m * (deployments / p.policies.max(1))
    } else {
        m % deployments
    };
    if sec {
        eq("ns", format!("ns-{}", m % p.namespaces()))
    } else if m % 3 == 1 {
        and(eq("app", format!("app-{d}")), eq("env", "prod"))
    } else {
        eq("app", format!("app-{d}"))
    }
}

/// Policy `m`'s `n_in` ingress rules: random ones, the last a `pass`
/// (security policies) or a logged deny (every fourth policy).
fn ingress_rules(
    p: &Params,
    m: usize,
    sec: bool,
    n_in: usize,
    rng: &mut Rng,
    spans: &mut usize,
) -> Vec<Rule> {
    let mut ingress = Vec::new();
    for k in 0..n_in {
        *spans += 2;
        if k + 1 == n_in && sec && n_in > 1 {
            // Security policies hand what they do not decide to
            // the next tier (Calico's "pass" idiom).
            ingress.push(Rule {
                action: Action::Pass,
                proto: ProtoMatch::Any,
                peer: PeerMatch::Any,
                log: false,
                span: span(*spans),
            });
        } else if k + 1 == n_in && n_in > 2 && m.is_multiple_of(4) {
            ingress.push(Rule {
                action: Action::Deny,
                proto: ProtoMatch::Any,
                peer: PeerMatch::Any,
                log: true,
                span: span(*spans),
            });
        } else {
            ingress.push(one_rule(rng, p, true, sec, *spans));
        }
    }
    ingress
}

/// A policy's `n_eg` egress rules: random ones, the last a `pass` for
/// security policies.
fn egress_rules(p: &Params, sec: bool, n_eg: usize, rng: &mut Rng, spans: &mut usize) -> Vec<Rule> {
    (0..n_eg)
        .map(|k| {
            *spans += 2;
            if sec && k + 1 == n_eg {
                Rule {
                    action: Action::Pass,
                    proto: ProtoMatch::Any,
                    peer: PeerMatch::Any,
                    log: false,
                    span: span(*spans),
                }
            } else {
                one_rule(rng, p, false, sec, *spans)
            }
        })
        .collect()
}

/// A program as files: `.weir` source and a JSON inventory (the endpoints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub weir: String,
    pub inventory: String,
}

fn set_text(s: &AddrSet) -> String {
    let list = |v: &[Cidr]| {
        v.iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if s.exclude.is_empty() {
        format!("{{{}}}", list(&s.include))
    } else {
        format!("{{{}}} except {{{}}}", list(&s.include), list(&s.exclude))
    }
}

fn proto_text(p: &ProtoMatch) -> String {
    match p {
        ProtoMatch::Any => "any".into(),
        ProtoMatch::Ports { proto, ports } => {
            let name = proto.keyword();
            let one = |r: &PortRange| {
                if r.lo == r.hi {
                    r.lo.to_string()
                } else {
                    format!("{}-{}", r.lo, r.hi)
                }
            };
            match ports.as_slice() {
                [] => name.to_string(),
                [r] => format!("{name} {}", one(r)),
                rs => format!(
                    "{name} {{{}}}",
                    rs.iter().map(one).collect::<Vec<_>>().join(", ")
                ),
            }
        }
        ProtoMatch::Named { proto, name } => format!("{} port \"{name}\"", proto.keyword()),
        ProtoMatch::Icmp { proto, ty, code } => {
            let k = proto.keyword();
            match (ty, code) {
                (None, _) => k.into(),
                (Some(t), None) => format!("{k} type {t}"),
                (Some(t), Some(c)) => format!("{k} type {t} code {c}"),
            }
        }
    }
}

fn peer_text(p: &PeerMatch) -> String {
    match p {
        PeerMatch::Any => "any".into(),
        PeerMatch::Selector(s) => s.to_string(),
        PeerMatch::Set(s) => set_text(s),
        PeerMatch::SelfEndpoint => "self".into(),
        PeerMatch::World(None) => "world".into(),
        PeerMatch::World(Some(s)) => format!("world {}", set_text(s)),
        PeerMatch::OwnNode => "node".into(),
    }
}

fn socket(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(_) => format!("{a}:{port}"),
        IpAddr::V6(_) => format!("[{a}]:{port}"),
    }
}

/// Writes `model` (as built by [`model`]: no steering, tests or named
/// declarations) as `.weir` source and a JSON inventory of its endpoints.
pub fn render(model: &Model) -> Rendered {
    let mut w = String::new();
    let _ = writeln!(
        w,
        "# Synthetic policy set (weir_compiler::synth): {} services, {} policies, {} endpoints.\n",
        model.services.len(),
        model.policies.len(),
        model.endpoints.len()
    );
    for t in &model.tiers {
        if t.span.is_some() {
            let _ = writeln!(w, "tier {} order {}", t.name, t.order);
        }
    }
    for s in &model.services {
        let _ = writeln!(w, "\nservice {} {{", s.name);
        for f in &s.frontends {
            let proto = match f.proto {
                Proto::Udp => "udp",
                Proto::Sctp => "sctp",
                _ => "tcp",
            };
            let _ = writeln!(w, "  frontend {}/{proto}", socket(f.addr, f.port));
        }
        match &s.backends {
            BackendSource::Select { selector, port } => {
                let _ = writeln!(w, "  backends select {selector} port {port}");
            }
            BackendSource::Explicit(list) => {
                let items: Vec<String> = list
                    .iter()
                    .map(|b| format!("{} weight {}", socket(b.addr, b.port), b.weight))
                    .collect();
                let _ = writeln!(w, "  backends {{ {} }}", items.join(", "));
            }
        }
        let _ = writeln!(
            w,
            "  balance {}",
            match s.balance {
                Balance::Random => "random",
                Balance::Maglev => "maglev",
            }
        );
        if let Some(a) = s.affinity {
            let _ = writeln!(w, "  affinity client-ip {a}s");
        }
        let _ = writeln!(w, "}}");
    }
    for p in &model.policies {
        let tier = &model.tiers[p.tier];
        let tier_text = if tier.span.is_some() {
            format!(" tier {}", tier.name)
        } else {
            String::new()
        };
        let _ = writeln!(
            w,
            "\npolicy {} priority {}{tier_text} {{",
            p.name, p.priority
        );
        let _ = writeln!(w, "  applies to {}", p.applies_to);
        for (dir, rules, kw) in [("ingress", &p.ingress, "from"), ("egress", &p.egress, "to")] {
            let Some(rules) = rules else { continue };
            let _ = writeln!(w, "  {dir} {{");
            for r in rules {
                let action = match r.action {
                    Action::Allow => "allow",
                    Action::Deny => "deny",
                    Action::Pass => "pass",
                    Action::Log => "log",
                };
                let _ = writeln!(
                    w,
                    "    {action} {} {kw} {}{}",
                    proto_text(&r.proto),
                    peer_text(&r.peer),
                    if r.log { " log" } else { "" }
                );
            }
            let _ = writeln!(w, "  }}");
        }
        let _ = writeln!(w, "}}");
    }
    let endpoints: Vec<serde_json::Value> = model
        .endpoints
        .iter()
        .map(|e| {
            serde_json::json!({
                "name": e.name,
                "labels": e.labels,
                "addrs": e.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "ready": e.ready,
            })
        })
        .collect();
    let mut inventory =
        serde_json::to_string(&serde_json::json!({ "endpoints": endpoints })).unwrap_or_default();
    inventory.push('\n');
    Rendered { weir: w, inventory }
}

/// Selector atoms and distinct label sets, for reports.
pub fn label_sets(model: &Model) -> usize {
    let sets: BTreeSet<Vec<(&String, &String)>> = model
        .endpoints
        .iter()
        .map(|e| e.labels.iter().filter(|(k, _)| *k != "instance").collect())
        .collect();
    sets.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::check_program;
    use crate::source::MemoryLoader;
    use std::path::PathBuf;

    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("span");
                m.remove("name_span");
                for x in m.values_mut() {
                    strip(x);
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }

    fn params() -> Params {
        Params {
            seed: 3,
            services: 40,
            backends: 3,
            policies: 12,
            rules: 6,
            endpoints: 90,
            deployments: 10,
            cidr_rules: 7,
            maglev_pct: 30,
            affinity_pct: 20,
        }
    }

    #[test]
    fn deterministic_and_sized() {
        let p = params();
        let a = model(&p);
        assert_eq!(a, model(&p));
        assert_ne!(a, model(&Params { seed: 4, ..p }));
        assert_eq!(a.services.len(), 40);
        assert_eq!(a.endpoints.len(), 90);
        assert_eq!(a.policies.len(), 12);
        let rules: usize = a
            .policies
            .iter()
            .map(|p| p.ingress.as_ref().map_or(0, Vec::len) + p.egress.as_ref().map_or(0, Vec::len))
            .sum();
        assert_eq!(rules, p.total_rules());
        assert_eq!(label_sets(&a), 10);
        // Selector services have B backends (ready ones) in the inventory.
        let interp = crate::interp::Interp::new(&a);
        let s = &a.services[0];
        let BackendSource::Select { selector, .. } = &s.backends else {
            panic!("first service selects")
        };
        let n = a
            .endpoints
            .iter()
            .filter(|e| selector.matches(&e.labels))
            .count();
        assert_eq!(n, 3);
        assert!(interp.endpoint_of(endpoint_addr(0)).is_some());
    }

    /// The rendered source and inventory check back into the same model.
    #[test]
    fn rendered_text_checks_to_the_same_model() {
        let p = params();
        let m = model(&p);
        let r = render(&m);
        let loader = MemoryLoader::new()
            .with("synth.weir", r.weir.clone())
            .with("inventory.json", r.inventory.clone());
        let checked = check_program(
            &[PathBuf::from("synth.weir")],
            &loader,
            Some(std::path::Path::new("inventory.json")),
        );
        assert!(
            !checked.has_errors(),
            "{:#?}\n{}",
            checked.diagnostics,
            r.weir
        );
        let mut a = serde_json::to_value(&m).unwrap();
        let mut b = serde_json::to_value(&checked.model).unwrap();
        strip(&mut a);
        strip(&mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn compiles_to_a_graph() {
        let m = model(&params());
        let c = crate::graph::compile(&m);
        let cap = crate::graph::cost::capacity(&c.graph);
        assert!(cap.nodes > 0 && cap.classes > 1);
    }
}
