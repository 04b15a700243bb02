//! Proof of equivalence for the iptables back end: compiled rules applied
//! with the runtime in the node namespace of a client — node — server
//! topology, real TCP / UDP / ICMP sent for each case, and what got through
//! compared with the reference interpreter's verdict.
//!
//! Models: every example, generated policies (`gen::model`) and a
//! synthetic model with big root class tables (`synth::model`). Maglev
//! services are turned into random ones first (the back end refuses
//! Maglev, E0501; the interpreter is asked about the backend that actually
//! answered, so the comparison stays exact). Cases come from the graph's
//! leaf packets, the interpreter's random packets and the examples' tests,
//! normalized to what the harness can send (state new, both sides, ICMP as
//! echo request) and kept when their addresses can be placed: sources in
//! the client namespace, destinations in the server namespace. Bypass
//! cases are left out: a bypassed flow is untracked, so its replies are new
//! packets judged on their own (the meaning is per packet), which a
//! request/response probe cannot observe.
//!
//! Needs root; skipped without, unless `CI` is set (then it fails).

mod bundle_common;
mod events_check;
mod examples_common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use weir_compiler::gen;
use weir_compiler::graph::{self, cover, Graph};
use weir_compiler::interp::{expect_packet, BackendChoice, Interp, Outcome, Packet};
use weir_compiler::model::{Balance, ConnState, Model, Proto, SteerAction, Verdict};
use weir_compiler::synth;
use weir_runtime::iptables::{Iptables, Options, Variant};
use weir_runtime::netns::{Netns, Topology, NODE_SERVER_IF};
use weir_runtime::Bundle;

use examples_common::examples;

fn ready(test: &str) -> bool {
    weir_runtime::kernel_test::may_run(
        test,
        &["ip", "iptables-restore", "ip6tables-restore", "ipset"],
    )
}

/// Maglev → random (see the module docs).
fn random_balanced(mut m: Model) -> Model {
    for s in &mut m.services {
        s.balance = Balance::Random;
    }
    // iptables refuses `self` beside a `redirect` that can match a
    // service frontend (E0501: a backend is judged in nat before its
    // DNAT, where the relation computed is the frontend's): such a model
    // is probed without its redirect steering.
    if weir_compiler::graph::same_endpoint::uses_self(&m) {
        let g = graph::build(&m);
        let refused = weir_compiler::iptables::generate(&g, &m).is_err_and(|e| {
            e.iter().any(|u| {
                matches!(
                    &u.refusal,
                    weir_compiler::diagnostics::Refusal::NotExpressible {
                        construct: weir_compiler::diagnostics::Construct::SelfWithRedirect { .. },
                        ..
                    }
                )
            })
        });
        if refused {
            for s in &mut m.steers {
                s.rules
                    .retain(|r| !matches!(r.action, SteerAction::Redirect { .. }));
            }
        }
    }
    m
}

static DIRS: AtomicUsize = AtomicUsize::new(0);

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "weir-ipt-diff-{}-{}-{name}",
        std::process::id(),
        DIRS.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The bundle `weir compile --target iptables` would write, written to
/// `dir` and read back by the runtime.
fn write_bundle(model: &Model, g: &Graph, dir: &Path) -> Bundle {
    let sources = vec![("policy.weir".to_string(), format!("{model:?}"))];
    bundle_common::write_iptables_with(model, g, &sources, dir, &events_check::events_options())
}

fn placeable(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => {
            let o = v.octets();
            !(v.is_loopback()
                || v.is_unspecified()
                || v.is_multicast()
                || v.is_broadcast()
                || v.is_link_local()
                || o[0] == 0
                || o[0] >= 224)
        }
        IpAddr::V6(v) => {
            let s = v.segments()[0];
            !(v.is_loopback() || v.is_unspecified() || v.is_multicast() || (s & 0xffc0) == 0xfe80)
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Client,
    Server,
}

/// What the interpreter expects a probe to see.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    /// No answer.
    Nothing,
    /// The server at this address answered.
    Server(IpAddr),
    /// The local proxy answered (redirect).
    Proxy,
}

/// Marker the test proxy answers with.
const PROXY_MARK: &str = "127.0.0.1";

fn expected(o: &Outcome, answerer: IpAddr) -> Seen {
    if o.verdict == Verdict::Deny {
        return Seen::Nothing;
    }
    match o.steering.as_ref().map(|s| &s.action) {
        Some(SteerAction::Redirect { .. }) => Seen::Proxy,
        _ => Seen::Server(answerer),
    }
}

struct Case {
    p: Packet,
    /// Frontend cases: candidate backends (addr, port).
    backends: Option<Vec<(IpAddr, u16)>>,
}

/// Normalizes to what the harness can send; None if it cannot.
fn normalize(p: &Packet) -> Option<Packet> {
    let mut p = p.clone();
    p.state = ConnState::New;
    p.at = None;
    match p.proto {
        Proto::Tcp | Proto::Udp => {
            if p.dport == 0 {
                return None;
            }
        }
        // A raw ICMP socket sends its own family's ICMP only: ICMPv4 in
        // IPv6 / ICMPv6 in IPv4 cannot be sent (the eBPF differential
        // covers them).
        Proto::Icmp | Proto::Icmp6 if (p.proto == Proto::Icmp) != p.src.is_ipv4() => return None,
        Proto::Icmp | Proto::Icmp6 => {
            p.icmp_type = if p.src.is_ipv4() { 8 } else { 128 };
            p.icmp_code = 0;
            p.dport = 0;
            p.sport = 0;
        }
        Proto::Sctp => return None,
    }
    (p.src.is_ipv4() == p.dst.is_ipv4() && p.src != p.dst).then_some(p)
}

/// Picks the cases whose addresses can be placed.
fn cases(model: &Model, g: &Graph, candidates: &[Packet]) -> (Vec<Case>, usize) {
    let interp = Interp::new(model);
    let mut side: HashMap<IpAddr, Side> = HashMap::new();
    let vips: BTreeSet<IpAddr> = g
        .services
        .frontends
        .iter()
        .map(|f| f.frontend.addr)
        .collect();
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut bypass = 0;
    for p in candidates {
        let Some(p) = normalize(p) else { continue };
        let key = (p.proto, p.src, p.dst, p.dport);
        if !seen.insert(key) || vips.contains(&p.src) || !placeable(p.src) {
            continue;
        }
        let fe = g.services.lookup(p.dst, p.dport, p.proto);
        let mut need = vec![(p.src, Side::Client)];
        let backends = match fe {
            Some(fe) => {
                let bs: Vec<(IpAddr, u16)> = g.services.backend_sets[fe.backends]
                    .backends
                    .iter()
                    .map(|b| (b.addr, b.port))
                    .collect();
                need.extend(bs.iter().map(|b| (b.0, Side::Server)));
                Some(bs)
            }
            None => {
                if vips.contains(&p.dst) || !placeable(p.dst) {
                    continue;
                }
                need.push((p.dst, Side::Server));
                None
            }
        };
        // An address on both sides (a client reaching a service whose
        // backend is itself: hairpin) cannot be placed either.
        let hairpin = need
            .iter()
            .any(|(a, s)| need.iter().any(|(b, t)| a == b && s != t));
        if hairpin
            || need
                .iter()
                .any(|(a, s)| !placeable(*a) || side.get(a).is_some_and(|x| x != s))
        {
            continue;
        }
        // Bypass (and, for frontends, any backend's outcome) excluded.
        let outcomes: Vec<Outcome> = match &backends {
            None => vec![interp.evaluate(&p)],
            Some(bs) => bs
                .iter()
                .map(|b| interp.evaluate_with(&p, BackendChoice::Pinned(b.0, b.1)))
                .collect(),
        };
        let skip = outcomes.iter().any(|o| {
            matches!(
                o.steering.as_ref().map(|s| &s.action),
                Some(SteerAction::Bypass)
            ) || (p.proto.is_icmp()
                && matches!(
                    o.steering.as_ref().map(|s| &s.action),
                    Some(SteerAction::Redirect { .. })
                ))
        });
        // A TCP reply that matches a bypass rule is untracked, so the
        // client's next packet is INVALID to conntrack: the round trip
        // fails although each packet's verdict is allow.
        let answerers: Vec<IpAddr> = match &backends {
            None => vec![p.dst],
            Some(bs) => bs.iter().map(|b| b.0).collect(),
        };
        let reply_bypassed = p.proto == Proto::Tcp
            && answerers.iter().any(|&a| {
                [32768u16, 40000, 50000, 60999].iter().any(|&eph| {
                    let mut r = p.clone();
                    r.src = a;
                    r.dst = p.src;
                    r.sport = p.dport;
                    r.dport = eph;
                    matches!(
                        interp.first_steer(&r).map(|h| h.action),
                        Some(SteerAction::Bypass)
                    )
                })
            });
        if skip || reply_bypassed {
            bypass += 1;
            continue;
        }
        for (a, s) in need {
            side.insert(a, s);
        }
        out.push(Case { p, backends });
    }
    (out, bypass)
}

/// A proxy in the node namespace on `[::]:port` (TCP and UDP, both
/// families) answering with [`PROXY_MARK`].
fn start_proxy(node: &Netns, port: u16) {
    let sa: SocketAddr = format!("[::]:{port}").parse().unwrap();
    node.answer_tcp(sa, PROXY_MARK.into()).unwrap();
    let udp = node.run(move || UdpSocket::bind(sa)).unwrap().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((_, peer)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(PROXY_MARK.as_bytes(), peer);
        }
    });
}

const ALLOW_WAIT: Duration = Duration::from_millis(2500);
const DENY_WAIT: Duration = Duration::from_millis(500);

/// Sends one case; what answered.
fn probe(topo: &Topology, p: &Packet, wait: Duration) -> Seen {
    let answer = match p.proto {
        Proto::Tcp => topo.tcp_probe(p.src, p.dst, p.dport, wait),
        Proto::Udp => topo.udp_probe(p.src, p.dst, p.dport, wait),
        Proto::Icmp | Proto::Icmp6 => {
            return if topo.icmp_probe(p.src, p.dst, wait) {
                Seen::Server(p.dst)
            } else {
                Seen::Nothing
            }
        }
        Proto::Sctp => None,
    };
    match answer {
        None => Seen::Nothing,
        Some(a) if a.to_string() == PROXY_MARK => Seen::Proxy,
        Some(a) => Seen::Server(a),
    }
}

#[derive(Default)]
struct Tally {
    models: usize,
    cases: usize,
    allowed: usize,
    frontend: usize,
    proxied: usize,
    /// Of them IPv6 (ip6tables `REDIRECT`).
    proxied6: usize,
    skipped: usize,
    /// Cases by family: IPv4 / IPv6, and ICMPv4 echo (`icmp`) / ICMPv6
    /// echo (`icmp6`) among them.
    v4: usize,
    v6: usize,
    icmp4: usize,
    icmp6: usize,
    /// Cases whose verdict events were compared, events read.
    event_cases: usize,
    events: usize,
    /// IPv6 restore blocks the direct x_tables loader wrote, and those
    /// the tool did.
    direct6: usize,
    tool6: usize,
    disagreements: Vec<String>,
}

impl Tally {
    /// Prints the first 40 disagreements and fails if there is any.
    fn assert_agreed(&self) {
        for d in self.disagreements.iter().take(40) {
            eprintln!("  {d}");
        }
        assert!(
            self.disagreements.is_empty(),
            "{} disagreements",
            self.disagreements.len()
        );
    }

    fn merge(&mut self, o: Tally) {
        self.models += o.models;
        self.cases += o.cases;
        self.allowed += o.allowed;
        self.frontend += o.frontend;
        self.proxied += o.proxied;
        self.proxied6 += o.proxied6;
        self.skipped += o.skipped;
        self.v4 += o.v4;
        self.v6 += o.v6;
        self.icmp4 += o.icmp4;
        self.icmp6 += o.icmp6;
        self.event_cases += o.event_cases;
        self.events += o.events;
        self.direct6 += o.direct6;
        self.tool6 += o.tool6;
        self.disagreements.extend(o.disagreements);
    }
}

/// One model to check: its name, the model, its candidate packets.
type Job = (String, Model, Vec<Packet>);

/// How many models are probed at once (each in its own topology; a
/// model's probes mostly wait for answers or their absence).
const MODELS_AT_ONCE: usize = 3;

/// [`check_model`] over `jobs`, [`MODELS_AT_ONCE`] at a time; the tallies
/// added up in job order.
fn check_models(jobs: &[Job], t: &mut Tally) {
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(usize, Tally)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..MODELS_AT_ONCE {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                let Some((name, model, c)) = jobs.get(k) else {
                    break;
                };
                let mut own = Tally::default();
                check_model(name, model, c, &mut own);
                done.lock().unwrap().push((k, own));
            });
        }
    });
    let mut done = done.into_inner().unwrap();
    done.sort_by_key(|d| d.0);
    for (_, own) in done {
        t.merge(own);
    }
}

/// Whether a model has any case to probe (what [`check_model`] would
/// send), decided without a topology.
fn has_cases(model: &Model, candidates: &[Packet]) -> bool {
    !cases(model, &graph::build(model), candidates).0.is_empty()
}

/// Applies `model`'s rules in a fresh topology and checks `candidates`.
fn check_model(name: &str, model: &Model, candidates: &[Packet], t: &mut Tally) {
    check_model_with(name, model, candidates, Variant::System, t);
}

fn check_model_with(
    name: &str,
    model: &Model,
    candidates: &[Packet],
    variant: Variant,
    t: &mut Tally,
) {
    let g = graph::build(model);
    let (cases, skipped) = cases(model, &g, candidates);
    t.skipped += skipped;
    if cases.is_empty() {
        return;
    }
    let topo = Topology::new().unwrap();
    // Unknown destinations (frontends without a backend) reach FORWARD.
    let o = topo
        .node
        .exec("ip", &["route", "add", "default", "dev", NODE_SERVER_IF])
        .unwrap();
    assert!(o.status.success());
    let o = topo
        .node
        .exec(
            "ip",
            &["-6", "route", "add", "default", "dev", NODE_SERVER_IF],
        )
        .unwrap();
    assert!(o.status.success());
    let work = scratch(name);
    let rt = Iptables::new(
        Options::netns(topo.node.name())
            .with_state_dir(work.join("state"))
            .with_variant(variant),
    );
    let b = write_bundle(model, &g, &work.join("bundle"));
    let r = rt
        .apply(&b)
        .unwrap_or_else(|e| panic!("{name}: apply: {e}"));
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    for x in rt.exec().log() {
        if x.program == weir_runtime::iptables::xt::DIRECT && x.args.iter().any(|a| a == "ipv6") {
            t.direct6 += 1;
        } else if x.program.starts_with("ip6tables") && x.program.ends_with("restore") {
            t.tool6 += 1;
        }
    }
    let mut evc = events_check::EventCheck::open(&topo, &b);

    let mut proxies = BTreeSet::new();
    for per in g.steer_actions.iter() {
        for a in per {
            if let SteerAction::Redirect { port, .. } = a {
                proxies.insert(*port);
            }
        }
    }
    for port in proxies {
        start_proxy(&topo.node, port);
    }
    // Servers first, one at a time.
    for c in &cases {
        let targets: Vec<(IpAddr, u16)> = match &c.backends {
            Some(bs) => bs.clone(),
            None => vec![(c.p.dst, c.p.dport)],
        };
        for (a, port) in targets {
            match c.p.proto {
                Proto::Tcp => topo.serve_tcp(a, port).unwrap(),
                Proto::Udp => topo.serve_udp(a, port).unwrap(),
                _ => topo.add_server_addr(a).unwrap(),
            }
        }
        topo.add_client_addr(c.p.src).unwrap();
    }

    let interp = Interp::new(model);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Seen)>> = Mutex::new(Vec::new());
    let waits: Vec<Duration> = cases
        .iter()
        .map(|c| match &c.backends {
            Some(_) => ALLOW_WAIT,
            None => {
                if interp.evaluate(&c.p).verdict == Verdict::Allow {
                    ALLOW_WAIT
                } else {
                    DENY_WAIT
                }
            }
        })
        .collect();
    std::thread::scope(|s| {
        for _ in 0..48 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= cases.len() {
                    break;
                }
                let seen = probe(&topo, &cases[i].p, waits[i]);
                results.lock().unwrap().push((i, seen));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.0);
    t.models += 1;
    for (i, seen) in results {
        let c = &cases[i];
        t.cases += 1;
        match (c.p.src.is_ipv6(), c.p.proto) {
            (false, p) => {
                t.v4 += 1;
                t.icmp4 += usize::from(p == Proto::Icmp);
            }
            (true, p) => {
                t.v6 += 1;
                t.icmp6 += usize::from(p == Proto::Icmp6);
            }
        }
        if seen != Seen::Nothing {
            t.allowed += 1;
        }
        if seen == Seen::Proxy {
            t.proxied += 1;
            t.proxied6 += usize::from(c.p.src.is_ipv6());
        }
        let ok = match &c.backends {
            None => expected(&interp.evaluate(&c.p), c.p.dst) == seen,
            Some(bs) => {
                t.frontend += 1;
                // The back end chose some backend: the observation must be
                // the interpreter's outcome for one of them.
                bs.iter().any(|&(a, port)| {
                    let o = interp.evaluate_with(&c.p, BackendChoice::Pinned(a, port));
                    expected(&o, a) == seen
                }) || (bs.is_empty() && seen == Seen::Nothing)
            }
        };
        if !ok {
            let o = interp.evaluate(&c.p);
            t.disagreements.push(format!(
                "{name}: {:?} {} -> {}:{} saw {seen:?}, interpreter {:?} by {:?} steering {:?}",
                c.p.proto, c.p.src, c.p.dst, c.p.dport, o.verdict, o.decided_by, o.steering
            ));
        }
    }
    // The verdict events of the same traffic (`events_check`).
    let mut skip = Vec::new();
    for c in &cases {
        let o = interp.evaluate(&c.p);
        let redirected = matches!(
            o.steering.as_ref().map(|s| &s.action),
            Some(SteerAction::Redirect { .. })
        );
        let key =
            |dst: IpAddr, port: u16| (events_check::proto_number(c.p.proto), c.p.src, dst, port);
        match &c.backends {
            Some(bs) if !bs.is_empty() => {
                skip.push(key(c.p.dst, c.p.dport));
                skip.extend(bs.iter().map(|&(a, port)| key(a, port)));
            }
            _ if redirected => skip.push(key(c.p.dst, c.p.dport)),
            _ => evc.expect(model, &g, &c.p, &o),
        }
    }
    let skip: Vec<_> = skip
        .into_iter()
        .filter_map(|(n, s, d, p)| n.map(|n| (n, s, d, p)))
        .collect();
    t.event_cases += evc.cases;
    let (read, bad) = evc.finish(name, &skip);
    t.events += read;
    t.disagreements.extend(bad);
    rt.detach().unwrap();
    let _ = std::fs::remove_dir_all(work);
}

fn candidates(model: &Model, seed: u64) -> Vec<Packet> {
    let g = graph::build(model);
    let mut v = cover::leaf_packets(&g, 20_000);
    let mut rng = gen::Rng::new(seed ^ 0x1B7AB1E5);
    v.extend(gen::packets(model, &mut rng, 60));
    for t in &model.tests {
        for e in &t.expects {
            if e.from.synthetic_labels.is_none() && e.to.synthetic_labels.is_none() {
                v.push(expect_packet(e));
            }
        }
    }
    v
}

#[test]
fn iptables_agrees_with_interpreter_in_netns() {
    if !ready("iptables_agrees_with_interpreter_in_netns") {
        return;
    }
    let started = Instant::now();
    let mut t = Tally::default();
    let mut jobs: Vec<Job> = Vec::new();
    for (name, model) in examples() {
        let model = random_balanced(model);
        let c = candidates(&model, 1);
        jobs.push((name, model, c));
    }
    let mut seeds = 0;
    for seed in 0..40u64 {
        if seeds >= 24 {
            break;
        }
        let model = random_balanced(gen::model(seed));
        let c = candidates(&model, seed);
        if has_cases(&model, &c) {
            seeds += 1;
            jobs.push((format!("gen{seed}"), model, c));
        }
    }
    // A synthetic model whose root class tables have enough groups to be
    // tested in chunks (a chunk's union, then its groups in a sub-chain).
    let model = random_balanced(synth::model(&synth::Params {
        seed: 3,
        services: 3,
        policies: 20,
        rules: 3,
        endpoints: 60,
        deployments: 20,
        ..synth::Params::default()
    }));
    let c = candidates(&model, 3);
    jobs.push(("synth-chunks".into(), model, c));
    let policies = jobs.len();
    check_models(&jobs, &mut t);
    eprintln!(
        "iptables diff: {policies} policies ({} with cases), {} cases ({} got through, {} to frontends, {} to the proxy), {} bypass cases (or bypassed TCP replies) left out, verdict events of {} cases compared ({} events read), {} disagreements, {:.1}s",
        t.models,
        t.cases,
        t.allowed,
        t.frontend,
        t.proxied,
        t.skipped,
        t.event_cases,
        t.events,
        t.disagreements.len(),
        started.elapsed().as_secs_f64()
    );
    t.assert_agreed();
    assert!(
        policies >= 20 && t.cases >= 500,
        "{policies} policies, {} cases",
        t.cases
    );
}

/// Dual-stack generated policies (`gen::dual_stack`: IPv6-only
/// endpoints, IPv6 prefixes, `icmp6` rules beside `icmp` ones, IPv6
/// services): IPv4 and IPv6 TCP / UDP and ICMPv4 / ICMPv6 echo through
/// iptables and ip6tables, compared with the interpreter. `icmp` rules
/// must not reach ip6tables nor `icmp6` rules iptables: an ICMPv6 echo
/// under `allow icmp` is denied, an ICMPv4 echo under `allow icmp6` too.
#[test]
fn iptables_agrees_with_interpreter_on_dual_stack_in_netns() {
    if !ready("iptables_agrees_with_interpreter_on_dual_stack_in_netns") {
        return;
    }
    let started = Instant::now();
    let mut t = Tally::default();
    let jobs: Vec<Job> = (0..40u64)
        .map(|seed| {
            let model = random_balanced(gen::dual_stack(seed));
            let c = candidates(&model, seed);
            (format!("dual-stack gen{seed}"), model, c)
        })
        .collect();
    let policies = jobs.len();
    check_models(&jobs, &mut t);
    eprintln!(
        "iptables dual-stack diff: {policies} policies ({} with cases), {} cases ({} IPv4 of which {} ICMPv4 echo, {} IPv6 of which {} ICMPv6 echo; {} got through, {} to frontends, {} to the proxy ({} IPv6)), {} bypass cases left out, verdict events of {} cases compared ({} events read), {} disagreements, {:.1}s",
        t.models,
        t.cases,
        t.v4,
        t.icmp4,
        t.v6,
        t.icmp6,
        t.allowed,
        t.frontend,
        t.proxied,
        t.proxied6,
        t.skipped,
        t.event_cases,
        t.events,
        t.disagreements.len(),
        started.elapsed().as_secs_f64()
    );
    t.assert_agreed();
    // The generator's IPv6 steering redirects (issue 18): ip6tables'
    // REDIRECT reached the proxy.
    assert!(t.proxied6 >= 5, "{} IPv6 cases to the proxy", t.proxied6);
    assert!(
        t.icmp6 >= 50 && t.icmp4 >= 50,
        "{} ICMPv6, {} ICMPv4 cases",
        t.icmp6,
        t.icmp4
    );
}

/// Generated programs with random policies (and tiers) marked audit
/// (`gen::mark_audit`): the rules applied enforce exactly what the
/// interpreter's enforced verdict says — the audit chains count and never
/// decide. `redirect` steering is dropped first (iptables refuses it
/// beside audit policies, E0501).
#[test]
fn iptables_with_audit_policies_agrees_in_netns() {
    if !ready("iptables_with_audit_policies_agrees_in_netns") {
        return;
    }
    let mut t = Tally::default();
    let mut jobs: Vec<Job> = Vec::new();
    for seed in 0..80u64 {
        if jobs.len() >= 20 {
            break;
        }
        let mut model = random_balanced(gen::model(seed));
        let mut rng = gen::Rng::new(seed ^ 0xA0D1);
        gen::mark_audit(&mut model, &mut rng);
        if !model.has_audit() {
            continue;
        }
        for s in &mut model.steers {
            s.rules
                .retain(|r| !matches!(r.action, SteerAction::Redirect { .. }));
        }
        let c = candidates(&model, seed);
        if has_cases(&model, &c) {
            jobs.push((format!("audit{seed}"), model, c));
        }
    }
    let audited = jobs.len();
    check_models(&jobs, &mut t);
    eprintln!(
        "iptables audit diff: {audited} programs with audit policies, {} cases ({} got through), verdict events of {} cases compared ({} events read), {} disagreements",
        t.cases,
        t.allowed,
        t.event_cases,
        t.events,
        t.disagreements.len()
    );
    t.assert_agreed();
    assert!(
        t.events > 0 && t.event_cases * 2 >= t.cases,
        "events of {} cases",
        t.event_cases
    );
    assert!(
        audited >= 10 && t.cases >= 200,
        "{audited} programs, {} cases",
        t.cases
    );
}

/// Generated policies whose chains, one per graph node, nested deeper
/// than nf_tables allows (17 to 19 jumps below the entry chain; the
/// compiler's `deep_generated_policies_fit_nftables` checks the numbers):
/// the generator's tail inlining brings them within the limit, and they
/// apply with `iptables-nft` and agree with the interpreter.
#[test]
fn deep_policies_apply_on_nftables() {
    if !ready("deep_policies_apply_on_nftables") {
        return;
    }
    if weir_runtime::iptables::exec::find_program("iptables-nft-restore").is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "iptables-nft-restore is not installed (CI is set)"
        );
        eprintln!("deep_policies_apply_on_nftables: skipped, no iptables-nft");
        return;
    }
    let mut t = Tally::default();
    for seed in [1316u64, 1526, 396, 863] {
        let model = random_balanced(gen::base_model(seed));
        let c = candidates(&model, seed);
        check_model_with(&format!("gen{seed}"), &model, &c, Variant::Nft, &mut t);
    }
    t.assert_agreed();
    assert!(
        t.models >= 2 && t.cases >= 40,
        "{} models, {} cases",
        t.models,
        t.cases
    );
}

/// The interpreter against packets through tables the direct x_tables
/// loader wrote (`runtime/src/iptables/xt`: the default with the legacy
/// tools; the rest of this file drives the system's, nf_tables, tools):
/// the examples without services' nat (whose filter tables it writes
/// whole), a few generated models, and dual-stack generated models whose
/// IPv6 tables (IPv6 sets, `icmp6`, IPv6 services and redirects) the
/// loader writes: IPv6 and ICMPv6 traffic through them.
#[test]
fn iptables_agrees_with_interpreter_through_direct_xtables() {
    if !ready("iptables_agrees_with_interpreter_through_direct_xtables") {
        return;
    }
    let mut t = Tally::default();
    for (name, model) in examples() {
        if ["three-tier", "zero-trust", "host-firewall"].contains(&name.as_str()) {
            let model = random_balanced(model);
            let c = candidates(&model, 1);
            check_model_with(&name, &model, &c, Variant::Legacy, &mut t);
        }
    }
    for seed in [1316u64, 396] {
        let model = random_balanced(gen::base_model(seed));
        let c = candidates(&model, seed);
        check_model_with(&format!("gen{seed}"), &model, &c, Variant::Legacy, &mut t);
    }
    let before = (t.v6, t.icmp6, t.direct6);
    for seed in [2u64, 5, 11, 17] {
        let model = random_balanced(gen::dual_stack(seed));
        let c = candidates(&model, seed);
        check_model_with(
            &format!("dual-stack gen{seed}"),
            &model,
            &c,
            Variant::Legacy,
            &mut t,
        );
    }
    eprintln!(
        "direct x_tables diff: {} models, {} cases ({} IPv6 of which {} ICMPv6 echo through directly written IPv6 tables; {} IPv6 blocks direct, {} by the tool)",
        t.models,
        t.cases,
        t.v6 - before.0,
        t.icmp6 - before.1,
        t.direct6,
        t.tool6
    );
    t.assert_agreed();
    assert!(
        t.models >= 4 && t.cases >= 40,
        "{} models, {} cases",
        t.models,
        t.cases
    );
    assert_eq!(t.tool6, 0, "every IPv6 block is written directly");
    assert!(
        t.v6 - before.0 >= 20 && t.icmp6 - before.1 >= 5 && t.direct6 - before.2 >= 4,
        "IPv6 through the loader's tables: {} cases, {} ICMPv6, {} blocks",
        t.v6 - before.0,
        t.icmp6 - before.1,
        t.direct6 - before.2
    );
}

fn run_ok(ns: &Netns, program: &str, args: &[&str], input: &str) {
    let o = ns.exec_with_input(program, args, Some(input)).unwrap();
    assert!(
        o.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `ipset restore` and `iptables-restore --test` / `ip6tables-restore
/// --test` in a throwaway namespace accept every example's output (refused
/// examples: with `maglev_as_random`, after checking the refusal).
#[test]
fn restore_accepts_every_example() {
    if !ready("restore_accepts_every_example") {
        return;
    }
    for (name, model) in examples() {
        let g = graph::build(&model);
        let out = match weir_compiler::iptables::generate_text(&g, &model, &Default::default()) {
            Ok(o) => o,
            Err(refused) => {
                for u in &refused {
                    let d = u.diagnostic();
                    assert_eq!(d.code.as_str(), "E0501", "{name}");
                    assert!(d.message.contains("iptables") && d.message.contains("maglev"));
                }
                let opts = weir_compiler::iptables::Options {
                    maglev_as_random: true,
                    ..Default::default()
                };
                weir_compiler::iptables::generate_text(&g, &model, &opts).unwrap()
            }
        };
        let ns = Netns::create(&format!("weir-t{}-restore-{name}", std::process::id())).unwrap();
        run_ok(&ns, "ipset", &["restore"], &out.ipset);
        run_ok(&ns, "iptables-restore", &["--test"], &out.iptables);
        run_ok(&ns, "ip6tables-restore", &["--test"], &out.ip6tables);
        eprintln!("{name}: restore --test ok");
    }
}

/// Connecting to a frontend reaches a backend the policy allows; random
/// balancing spreads, client-IP affinity sticks.
#[test]
fn services_reach_allowed_backends() {
    if !ready("services_reach_allowed_backends") {
        return;
    }
    let (_, model) = examples()
        .into_iter()
        .find(|(n, _)| n == "three-tier")
        .expect("three-tier example");
    let model = random_balanced(model);
    let g = graph::build(&model);
    let interp = Interp::new(&model);
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    // One topology per frontend: web-1 is a client here and a backend
    // there.
    for (src, vip, port, affinity) in [
        (ip("203.0.113.9"), ip("10.96.0.10"), 443u16, false),
        (ip("10.1.0.5"), ip("10.96.0.20"), 80, true),
    ] {
        let topo = Topology::new().unwrap();
        let work = scratch("svc");
        let rt = Iptables::new(Options::netns(topo.node.name()).with_state_dir(work.join("state")));
        rt.apply(&write_bundle(&model, &g, &work.join("b")))
            .unwrap();
        let fe = g.services.lookup(vip, port, Proto::Tcp).unwrap();
        let backends = &g.services.backend_sets[fe.backends].backends;
        for b in backends {
            topo.serve_tcp(b.addr, b.port).unwrap();
        }
        let mut seen: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for _ in 0..30 {
            let a = topo
                .tcp_probe(src, vip, port, ALLOW_WAIT)
                .unwrap_or_else(|| panic!("{src} -> {vip}:{port} got no answer"));
            let b = backends
                .iter()
                .find(|b| b.addr == a)
                .expect("a backend answered");
            let mut p = Packet::new(Proto::Tcp, src, 40000, vip, port);
            p.state = ConnState::New;
            let o = interp.evaluate_with(&p, BackendChoice::Pinned(b.addr, b.port));
            assert_eq!(o.verdict, Verdict::Allow, "backend {a} is not allowed");
            *seen.entry(a).or_default() += 1;
        }
        eprintln!("{vip}:{port} from {src}: {seen:?}");
        if affinity {
            assert_eq!(seen.len(), 1, "affinity keeps one backend: {seen:?}");
        } else {
            assert!(seen.len() >= 2, "random balancing spreads: {seen:?}");
        }
        rt.detach().unwrap();
        let _ = std::fs::remove_dir_all(work);
    }
}

/// iptables-save and ipset list of the node, without counters and
/// without tables that hold nothing (iptables-nft creates a table with its
/// built-in chains on first use).
fn dump(topo: &Topology) -> String {
    let mut out = String::new();
    for program in ["iptables-save", "ip6tables-save"] {
        let o = topo.node.exec(program, &[]).unwrap();
        let mut table: Vec<String> = Vec::new();
        for line in String::from_utf8(o.stdout).unwrap().lines() {
            if line.starts_with('#') {
                continue;
            }
            let line = match line.split_once(" [") {
                Some((decl, _)) if line.starts_with(':') => decl,
                _ => line,
            };
            table.push(line.to_string());
            if line == "COMMIT" {
                let trivial = table
                    .iter()
                    .all(|l| l.starts_with('*') || l == "COMMIT" || l.ends_with(" ACCEPT"));
                if !trivial {
                    out.push_str(&format!("{program}:\n{}\n", table.join("\n")));
                }
                table.clear();
            }
        }
    }
    let o = topo.node.exec("ipset", &["list", "-n"]).unwrap();
    out.push_str(&String::from_utf8(o.stdout).unwrap());
    out
}

/// Apply a generated bundle, apply another, detach: exactly what was there
/// before remains.
#[test]
fn generated_bundles_apply_change_and_detach_cleanly() {
    if !ready("generated_bundles_apply_change_and_detach_cleanly") {
        return;
    }
    let topo = Topology::new().unwrap();
    // Someone else's rules and set.
    for args in [
        &["-w", "-A", "FORWARD", "-s", "192.0.2.1", "-j", "ACCEPT"][..],
        &[
            "-w",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-d",
            "192.0.2.9",
            "-j",
            "RETURN",
        ],
    ] {
        assert!(topo.node.exec("iptables", args).unwrap().status.success());
    }
    assert!(topo
        .node
        .exec("ipset", &["create", "other-set", "hash:ip"])
        .unwrap()
        .status
        .success());
    let before = dump(&topo);
    let work = scratch("life");
    let rt = Iptables::new(Options::netns(topo.node.name()).with_state_dir(work.join("state")));
    // Two generated models that use every table between them.
    let pick = |from: u64| {
        (from..from + 200)
            .map(|s| random_balanced(gen::model(s)))
            .find(|m| !m.services.is_empty() && !m.steers.is_empty())
            .unwrap()
    };
    let (a, b) = (pick(0), pick(100));
    let (ga, gb) = (graph::build(&a), graph::build(&b));
    let r = rt.apply(&write_bundle(&a, &ga, &work.join("a"))).unwrap();
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let mid = dump(&topo);
    assert!(
        mid.contains("WEIR1-FWD") && mid.contains("-j WEIR-HOOK-FORWARD"),
        "{mid}"
    );
    let r = rt.apply(&write_bundle(&b, &gb, &work.join("b"))).unwrap();
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let mid = dump(&topo);
    assert!(
        mid.contains("WEIR2-FWD") && !mid.contains(":WEIR1-FWD"),
        "{mid}"
    );
    // Generation 1's chains left are exactly those generation 2 kept
    // unchanged (runtime/src/iptables/keep.rs) and lists as its own.
    let state = rt.read_state().unwrap().unwrap();
    let left: BTreeSet<&str> = mid
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split(' ').next())
        .filter(|c| c.starts_with("WEIR1-"))
        .collect();
    let kept: BTreeSet<&str> = state
        .chains
        .iter()
        .map(|c| c.chain.as_str())
        .filter(|c| c.starts_with("WEIR1-"))
        .collect();
    assert_eq!(left, kept, "{mid}");
    let listed = state
        .chains
        .iter()
        .filter(|c| c.chain.starts_with("WEIR1-"))
        .count();
    assert_eq!(listed, r.kept_chains, "{r:?}");
    assert!(rt.status().unwrap().in_force);
    rt.detach().unwrap();
    assert_eq!(dump(&topo), before);
    let _ = std::fs::remove_dir_all(work);
}

/// IPv6 twins of IPv4 candidates (same protocol and ports, ICMP as
/// ICMPv6), from a few client and server addresses that no program of
/// the test names: what an IPv4-only program meets on a dual-stack node.
fn v6_twins(candidates: &[Packet]) -> Vec<Packet> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for p in candidates.iter().filter(|p| p.src.is_ipv4()) {
        let proto = if p.proto == Proto::Icmp {
            Proto::Icmp6
        } else {
            p.proto
        };
        if !seen.insert((proto, p.dport)) {
            continue;
        }
        let k = out.len() as u16 % 4;
        let mut q = p.clone();
        q.proto = proto;
        q.src = IpAddr::from([0xfd00, 0xc1, 0, 0, 0, 0, 0, 1 + k]);
        q.dst = IpAddr::from([0xfd00, 0x5e, 0, 0, 0, 0, 0, 1 + k]);
        out.push(q);
    }
    out
}

/// IPv4-only programs (no IPv6 prefix in the class map, so the bundle has
/// no IPv6 sets and its ip6tables rules decide every address as class 0):
/// IPv6 traffic gets exactly the interpreter's verdict for it. No IPv6
/// address is an endpoint's, so no policy side and no `default deny`
/// applies to it (docs/language.md §4): it is allowed, or steered by a
/// rule `from any`; an emitter that took an address test's then-branch
/// for class 0 would deny it by some isolation default.
#[test]
fn iptables_judges_ipv6_under_ipv4_only_programs_in_netns() {
    if !ready("iptables_judges_ipv6_under_ipv4_only_programs_in_netns") {
        return;
    }
    let synth = synth::model(&synth::Params {
        seed: 5,
        services: 3,
        policies: 12,
        rules: 3,
        endpoints: 40,
        deployments: 10,
        ..synth::Params::default()
    });
    let generated = (0..200u64).map(|seed| (format!("gen{seed}"), gen::model(seed)));
    let programs = examples()
        .into_iter()
        .chain([("synth".to_string(), synth)])
        .chain(generated);
    let mut jobs: Vec<Job> = Vec::new();
    for (name, model) in programs {
        if jobs.len() >= 8 {
            break;
        }
        let model = random_balanced(model);
        let g = graph::build(&model);
        if g.classes.classifies_v6() {
            continue;
        }
        let opts = weir_compiler::iptables::Options::default();
        let Ok(out) = weir_compiler::iptables::generate_text(&g, &model, &opts) else {
            continue;
        };
        assert!(
            !out.ip6tables.contains("--match-set") && !out.ipset.contains("family inet6"),
            "{name}: an IPv4-only program has IPv6 sets"
        );
        assert_eq!(out.manifest["ipv6_class0"], true, "{name}");
        let c = v6_twins(&candidates(&model, 7));
        if has_cases(&model, &c) {
            jobs.push((format!("v4-only {name}"), model, c));
        }
    }
    let mut t = Tally::default();
    check_models(&jobs, &mut t);
    eprintln!(
        "iptables IPv6 under IPv4-only programs: {} programs, {} IPv6 cases ({} got through, {} to the proxy), {} disagreements",
        t.models,
        t.v6,
        t.allowed,
        t.proxied,
        t.disagreements.len()
    );
    t.assert_agreed();
    assert!(
        t.models >= 6 && t.v6 == t.cases && t.cases >= 60,
        "{} programs, {} cases",
        t.models,
        t.cases
    );
}
