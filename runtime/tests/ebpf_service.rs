//! Kernel tests of the eBPF service back end (issue 6): the service
//! programs pass the verifier; the TC stage, run with BPF_PROG_TEST_RUN
//! on crafted packets, translates exactly as the interpreter says (Maglev:
//! same backend; random: a candidate), with valid checksums, keeps a
//! flow's backend, reverse-translates replies and rejects frontends
//! without backends; a Maglev backend removal moves few flows through the
//! real programs; backend changes are seen without reloading; and the
//! TC and cgroup (connect4 / sendmsg4 / recvmsg4) paths carry real TCP and
//! UDP between network namespaces. Also prints ns/packet numbers.
//!
//! Needs root. Without root the tests are skipped, unless `CI` is set, in
//! which case they fail.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod ebpf_common;
use ebpf_common::cgroup::{self, cgroup2_root, Cgroup, CHILD_ENV};
use ebpf_common::run_lb;

use aya::programs::SchedClassifier;
use weir_compiler::driver::analyze;
use weir_compiler::ebpf::layout::service::{cnt, map as names, tuple};
use weir_compiler::ebpf::service::fill::{Be, Options};
use weir_compiler::ebpf::service::object::prog;
use weir_compiler::ebpf::service::sock::connect_flow_hash;
use weir_compiler::ebpf::service::LbState;
use weir_compiler::graph::ir::{BackendSet, FrontendEntry, ServiceInfo, ServiceTable};
use weir_compiler::graph::Graph;
use weir_compiler::interp::{Interp, Packet};
use weir_compiler::model::{Backend, Balance, Frontend, Model, Proto};
use weir_compiler::provenance::Provenance;
use weir_compiler::source::MemoryLoader;
use weir_runtime::ebpf::load::keys_raw;
use weir_runtime::ebpf::service::LbRuntime;
use weir_runtime::netns::Topology;

fn have_root(test: &str) -> bool {
    weir_runtime::kernel_test::may_run(test, &[])
}

const SRC: &str = r#"
service web {
  frontend 10.96.0.1:80/tcp
  frontend 10.96.0.1:53/udp
  backends { 10.1.0.1:8080 weight 3, 10.1.0.2:8080, 10.1.0.3:8080 weight 0 }
}
service db {
  frontend 10.96.0.2:5432/tcp
  frontend 10.96.0.2:5353/udp
  backends { 10.2.0.1:5432, 10.2.0.2:5432, 10.2.0.3:5432 }
  balance maglev
}
service fan {
  frontend 10.96.1.1:80/tcp
  frontend 10.96.1.2:80/tcp
  frontend 10.96.1.3:80/tcp
  frontend 10.96.1.4:80/tcp
  frontend 10.96.1.5:80/tcp
  frontend 10.96.1.6:80/tcp
  frontend 10.96.1.7:80/tcp
  frontend 10.96.1.8:80/tcp
  frontend 10.96.1.9:80/tcp
  frontend 10.96.1.10:80/tcp
  backends { 10.4.0.1:80, 10.4.0.2:80, 10.4.0.3:80, 10.4.0.4:80 }
  balance maglev
}
service sticky {
  frontend 10.96.0.4:80/tcp
  backends { 10.5.0.1:80, 10.5.0.2:80, 10.5.0.3:80 }
  affinity client-ip 1h
}
service empty {
  frontend 10.96.0.3:80/tcp
  backends { 10.3.0.1:80 weight 0 }
}
"#;

fn compile(src: &str) -> (Model, Graph) {
    let loader = MemoryLoader::new().with("main.weir", src);
    let a = analyze(&[PathBuf::from("main.weir")], &loader, None);
    assert!(!a.checked.has_errors(), "{:?}", a.checked.diagnostics);
    (a.checked.model, a.compiled.expect("compiled").graph)
}

fn state_for(t: &ServiceTable, g: Option<&Graph>) -> LbState {
    let prov = g.map(|g| g.provenance.clone());
    LbState::new(
        t,
        &move |s| {
            prov.as_ref()
                .map_or(0, |p| p.id(&Provenance::NoBackends { service: s }))
        },
        &Options::default(),
    )
}

fn load(t: &ServiceTable, g: Option<&Graph>) -> LbRuntime {
    match LbRuntime::load(state_for(t, g)) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

// ---- packets ----------------------------------------------------------

/// Ethernet + IPv4 + TCP (SYN) / UDP with valid checksums and a payload.
fn packet(proto: Proto, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let payload = b"weir-payload";
    let l4len = match proto {
        Proto::Tcp => 20,
        _ => 8,
    } + payload.len();
    let mut p = vec![0u8; 14 + 20 + l4len];
    p[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    p[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    p[12..14].copy_from_slice(&[0x08, 0x00]);
    {
        let ip = &mut p[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + l4len) as u16).to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = if proto == Proto::Tcp { 6 } else { 17 };
        ip[12..16].copy_from_slice(&src.octets());
        ip[16..20].copy_from_slice(&dst.octets());
    }
    {
        let l4 = &mut p[34..];
        l4[0..2].copy_from_slice(&sport.to_be_bytes());
        l4[2..4].copy_from_slice(&dport.to_be_bytes());
        match proto {
            Proto::Tcp => {
                l4[4..8].copy_from_slice(&1u32.to_be_bytes());
                l4[12] = 5 << 4;
                l4[13] = 0x02;
                l4[14..16].copy_from_slice(&64240u16.to_be_bytes());
                l4[20..].copy_from_slice(payload);
            }
            _ => {
                l4[4..6].copy_from_slice(&(l4len as u16).to_be_bytes());
                l4[8..].copy_from_slice(payload);
            }
        }
    }
    weir_runtime::frames::set_checksums(&mut p);
    p
}

struct Parsed {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
}

/// Checks both checksums and returns the addresses and ports.
fn parse_checked(p: &[u8]) -> Parsed {
    if let Err(e) = weir_runtime::frames::checksums_ok(p) {
        panic!("{e}");
    }
    // Our UDP packets carry a checksum; a translated one must too (a zero
    // one would pass as "none").
    assert!(p[23] != 17 || p[40..42] != [0, 0], "UDP checksum dropped");
    Parsed {
        src: Ipv4Addr::new(p[26], p[27], p[28], p[29]),
        dst: Ipv4Addr::new(p[30], p[31], p[32], p[33]),
        sport: u16::from_be_bytes([p[34], p[35]]),
        dport: u16::from_be_bytes([p[36], p[37]]),
    }
}

fn v4(a: IpAddr) -> Ipv4Addr {
    match a {
        IpAddr::V4(v) => v,
        IpAddr::V6(_) => panic!("v6"),
    }
}

fn clear(r: &LbRuntime, map: &str, key_size: usize) {
    let m = r.ebpf.map(map).unwrap();
    for k in keys_raw(m, key_size).unwrap() {
        let _ = weir_runtime::ebpf::load::delete_raw(m, &k);
    }
}

fn frontend_v4(f: &Frontend) -> (Proto, Ipv4Addr, u16) {
    (f.proto, v4(f.addr), f.port)
}

// ---- TC path through BPF_PROG_TEST_RUN --------------------------------

#[test]
fn ebpf_service_programs_pass_the_verifier() {
    if !have_root("ebpf_service_programs_pass_the_verifier") {
        return;
    }
    let (_, g) = compile(SRC);
    let r = load(&g.services, Some(&g));
    assert_eq!(r.counters().unwrap().len(), cnt::SIZE as usize);
}

#[test]
fn ebpf_service_tc_differential() {
    if !have_root("ebpf_service_tc_differential") {
        return;
    }
    let (model, g) = compile(SRC);
    let r = load(&g.services, Some(&g));
    let interp = Interp::new(&model);
    let mut checked = 0;
    let mut disagreements = Vec::new();
    let mut rejects = 0;
    let mut random_seen: BTreeSet<(Ipv4Addr, u16)> = BTreeSet::new();
    for (fi, fe) in g.services.frontends.iter().enumerate() {
        let (proto, vip, port) = frontend_v4(&fe.frontend);
        let svc = &model.services[fe.service];
        let mut sticky: Option<Ipv4Addr> = None;
        for i in 0..24u16 {
            let client = if svc.affinity.is_some() {
                Ipv4Addr::new(172, 16, 9, 9)
            } else {
                Ipv4Addr::new(172, 16, (i % 5) as u8, (i + 1) as u8)
            };
            let sport = 30_000 + i * 37 + fi as u16;
            let pkt = packet(proto, client, sport, vip, port);
            let (rc, out) = run_lb(&r, &pkt);
            let o = interp.evaluate(&Packet::new(proto, client.into(), sport, vip.into(), port));
            let hit = o.service.expect("frontend hit");
            let Some(chosen) = hit.chosen.clone() else {
                assert!(o.reject);
                assert_eq!(rc, 2, "no backends: TC_ACT_SHOT");
                rejects += 1;
                continue;
            };
            assert_eq!(rc, 0, "translated packets pass");
            let p = parse_checked(&out);
            assert_eq!((p.src, p.sport), (client, sport), "source preserved");
            assert_eq!(
                &out[out.len() - 12..],
                &pkt[pkt.len() - 12..],
                "payload intact"
            );
            let got = (IpAddr::V4(p.dst), p.dport);
            assert!(
                hit.candidates.iter().any(|b| (b.addr, b.port) == got),
                "{got:?} is not a candidate of {}",
                svc.name
            );
            if svc.balance == Balance::Maglev && got != (chosen.addr, chosen.port) {
                disagreements.push(format!(
                    "{} {client}:{sport}: bpf {got:?}, interp {}:{}",
                    svc.name, chosen.addr, chosen.port
                ));
            }
            if svc.balance == Balance::Random && svc.affinity.is_none() {
                random_seen.insert((p.dst, p.dport));
            }
            if svc.affinity.is_some() {
                assert_eq!(*sticky.get_or_insert(p.dst), p.dst, "client-IP affinity");
            }
            // The flow keeps its backend.
            let (rc2, out2) = run_lb(&r, &pkt);
            assert_eq!(rc2, 0);
            let p2 = parse_checked(&out2);
            assert_eq!(
                (p2.dst, p2.dport),
                (p.dst, p.dport),
                "conntrack keeps the backend"
            );
            // The reply gets the frontend back as its source.
            let reply = packet(proto, p.dst, p.dport, client, sport);
            let (rc3, out3) = run_lb(&r, &reply);
            assert_eq!(rc3, 0);
            let q = parse_checked(&out3);
            assert_eq!(
                (q.src, q.sport, q.dst, q.dport),
                (vip, port, client, sport),
                "reverse NAT"
            );
            checked += 1;
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} disagreements:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    assert!(checked >= 200, "{checked}");
    assert!(random_seen.contains(&(Ipv4Addr::new(10, 1, 0, 1), 8080)));
    assert!(random_seen.contains(&(Ipv4Addr::new(10, 1, 0, 2), 8080)));
    assert!(
        !random_seen.contains(&(Ipv4Addr::new(10, 1, 0, 3), 8080)),
        "weight 0 is drained"
    );
    // Not a frontend: untouched.
    let other = packet(
        Proto::Tcp,
        Ipv4Addr::new(172, 16, 0, 1),
        1234,
        Ipv4Addr::new(10, 1, 0, 1),
        8080,
    );
    let (rc, out) = run_lb(&r, &other);
    assert_eq!((rc, &out), (0, &other));
    let c = r.counters().unwrap();
    assert_eq!(c[cnt::NO_BACKENDS as usize], rejects);
    assert_eq!(c[cnt::TRANSLATED as usize], checked);
    assert_eq!(c[cnt::ESTABLISHED as usize], checked);
    assert_eq!(c[cnt::REVERSE as usize], checked);
    // Every new flow is counted once per service and once per backend.
    let per = |name: &str, n: u32| -> Vec<u64> {
        weir_runtime::ebpf::load::read_counters(r.ebpf.map(name).unwrap(), n).unwrap()
    };
    let svc = per(names::SVC_CNT, r.state.capacity.services);
    let bes = per(names::BE_CNT, r.state.capacity.backends);
    assert_eq!(svc.iter().sum::<u64>(), checked, "{svc:?}");
    assert_eq!(bes.iter().sum::<u64>(), checked, "{bes:?}");
    let empty = r.state.services.iter().position(|s| s.name == "empty");
    assert_eq!(svc[empty.unwrap()], 0, "no backends: nothing translated");
    eprintln!("tc differential: {checked} translated flows, {rejects} rejects, 0 disagreements");
}

fn maglev_src(n: u8) -> String {
    let mut src = String::from("service s {\n  frontend 10.96.0.9:80/tcp\n  backends { ");
    src += &(1..=n)
        .map(|i| format!("10.9.0.{i}:80"))
        .collect::<Vec<_>>()
        .join(", ");
    src += " }\n  balance maglev\n}\n";
    src
}

/// Remove one of 10 backends: ≤ 15% of 10,000 new flows move, measured
/// through the TC program; the change is a map update (same programs).
#[test]
fn ebpf_service_maglev_disruption_through_bpf() {
    if !have_root("ebpf_service_maglev_disruption_through_bpf") {
        return;
    }
    let (model, g) = compile(&maglev_src(10));
    let mut r = load(&g.services, Some(&g));
    let vip = Ipv4Addr::new(10, 96, 0, 9);
    let flows: Vec<(Ipv4Addr, u16)> = (0..10_000u32)
        .map(|i| {
            (
                Ipv4Addr::new(172, 16, (i / 250) as u8, (i % 250) as u8 + 1),
                20_000 + (i % 40_000) as u16,
            )
        })
        .collect();
    let choose = |r: &LbRuntime| -> Vec<Ipv4Addr> {
        flows
            .iter()
            .map(|&(c, sport)| {
                let (rc, out) = run_lb(r, &packet(Proto::Tcp, c, sport, vip, 80));
                assert_eq!(rc, 0);
                parse_checked(&out).dst
            })
            .collect()
    };
    let before = choose(&r);
    // The interpreter agrees on every flow.
    let interp = Interp::new(&model);
    for (&(c, sport), b) in flows.iter().zip(&before).step_by(10) {
        let o = interp.evaluate(&Packet::new(Proto::Tcp, c.into(), sport, vip.into(), 80));
        assert_eq!(o.service.unwrap().chosen.unwrap().addr, IpAddr::V4(*b));
    }
    let removed = Ipv4Addr::new(10, 9, 0, 4);
    let fewer: Vec<Be> = (1..=10u8)
        .filter(|&i| i != 4)
        .map(|i| Be {
            addr: IpAddr::from([10, 9, 0, i]),
            port: 80,
            weight: 1,
        })
        .collect();
    r.set_backends(0, 4, fewer).unwrap();
    // Known flows keep their backend (conntrack), even the removed one's.
    let (_, out) = run_lb(&r, &packet(Proto::Tcp, flows[0].0, flows[0].1, vip, 80));
    assert_eq!(parse_checked(&out).dst, before[0]);
    // New flows: forget the old ones.
    clear(&r, names::CT, tuple::SIZE as usize);
    clear(&r, names::REV, tuple::SIZE as usize);
    let after = choose(&r);
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    let on_removed = before.iter().filter(|&&b| b == removed).count();
    assert!(!after.contains(&removed));
    assert!(moved >= on_removed);
    eprintln!("maglev disruption: {moved} of 10000 flows moved ({on_removed} were on the removed backend)");
    assert!(moved <= 1_500, "moved {moved} of 10000");
}

fn synthetic_table(n: usize, maglev: bool) -> ServiceTable {
    let mut t = ServiceTable::default();
    for i in 0..n {
        t.services.push(ServiceInfo {
            name: format!("s{i}"),
            balance: if maglev {
                Balance::Maglev
            } else {
                Balance::Random
            },
            affinity: None,
            per_protocol: false,
        });
        let backends: Vec<Backend> = (1..=2u8)
            .map(|k| Backend {
                addr: IpAddr::from([10, 50 + k, (i / 256) as u8, (i % 256) as u8]),
                port: 8080,
                weight: 1,
                endpoint: None,
            })
            .collect();
        t.backend_sets.push(BackendSet::new(backends, maglev));
        t.frontends.push(FrontendEntry {
            frontend: Frontend {
                addr: IpAddr::from([10, 200, (i / 256) as u8, (i % 256) as u8]),
                port: 80,
                proto: Proto::Tcp,
            },
            service: i,
            backends: i,
        });
    }
    t.frontends.sort_by_key(|f| f.frontend);
    t
}

fn time(r: &LbRuntime, name: &str, pkt: &[u8], repeat: u32) -> f64 {
    let p: &SchedClassifier = r.ebpf.program(name).unwrap().try_into().unwrap();
    let mut out = vec![0u8; pkt.len() + 256];
    let res =
        weir_runtime::ebpf::test_run::repeat(p, pkt, &mut out, repeat).expect("BPF_PROG_TEST_RUN");
    res.duration.as_nanos() as f64
}

/// ns per packet for 10 and 10,000 services next to a hand-written parse
/// + hash-lookup program, in one run (BPF_PROG_TEST_RUN, 1M repeats).
#[test]
fn ebpf_service_measure_ns_per_packet() {
    if !have_root("ebpf_service_measure_ns_per_packet") {
        return;
    }
    const REPEAT: u32 = 1_000_000;
    let client = Ipv4Addr::new(172, 16, 0, 1);
    let mut lines = Vec::new();
    for (n, maglev) in [(10usize, false), (10_000, false), (10, true), (1000, true)] {
        let t = synthetic_table(n, maglev);
        let r = load(&t, None);
        let last = v4(IpAddr::from([
            10,
            200,
            ((n - 1) / 256) as u8,
            ((n - 1) % 256) as u8,
        ]));
        let to_vip = packet(Proto::Tcp, client, 40_000, last, 80);
        let miss = packet(Proto::Tcp, client, 40_000, Ipv4Addr::new(10, 1, 1, 1), 80);
        let base = time(&r, prog::BASELINE, &to_vip, REPEAT);
        // First run creates the flow; the repeats take the established path.
        let (rc, out) = run_lb(&r, &to_vip);
        assert_eq!(rc, 0);
        assert_ne!(parse_checked(&out).dst, last);
        let est = time(&r, prog::TC, &to_vip, REPEAT);
        let other = time(&r, prog::TC, &miss, REPEAT);
        let reply = packet(Proto::Tcp, parse_checked(&out).dst, 8080, client, 40_000);
        let rev = time(&r, prog::TC, &reply, REPEAT);
        lines.push(format!(
            "{n:>6} services ({:<6}): baseline parse+lookup {base:>5.1} ns | service stage: established flow (ct hit + DNAT) {est:>5.1} ns, reply (reverse NAT) {rev:>5.1} ns, non-service packet {other:>5.1} ns",
            if maglev { "maglev" } else { "random" }
        ));
    }
    eprintln!(
        "ns/packet, BPF_PROG_TEST_RUN repeat {REPEAT}:\n{}",
        lines.join("\n")
    );
}

// ---- end to end in network namespaces --------------------------------

/// Starts a server on every backend of every frontend (its protocol).
fn serve_backends(topo: &Topology, t: &ServiceTable) {
    for fe in &t.frontends {
        for b in &t.backend_sets[fe.backends].backends {
            match fe.frontend.proto {
                Proto::Tcp => topo.serve_tcp(b.addr, b.port).unwrap(),
                Proto::Udp => topo.serve_udp(b.addr, b.port).unwrap(),
                _ => {}
            }
        }
    }
}

fn clients() -> Vec<Ipv4Addr> {
    (1..=3).map(|i| Ipv4Addr::new(172, 16, 5, i)).collect()
}

/// TC path: the program on the node's ingress of both links translates
/// client → frontend traffic and un-translates replies; real TCP and UDP.
#[test]
fn ebpf_service_netns_tc_path() {
    if !have_root("ebpf_service_netns_tc_path") {
        return;
    }
    let (model, g) = compile(SRC);
    let topo = Topology::new().unwrap();
    serve_backends(&topo, &g.services);
    let r = load(&g.services, Some(&g));
    let r = topo
        .node
        .run(move || {
            let mut r = r;
            r.attach_tc(weir_runtime::netns::NODE_CLIENT_IF)?;
            r.attach_tc(weir_runtime::netns::NODE_SERVER_IF)?;
            Ok::<_, weir_runtime::ebpf::EbpfError>(r)
        })
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    let interp = Interp::new(&model);
    let timeout = Duration::from_millis(1500);
    let mut answered = Vec::new();
    for fe in &g.services.frontends {
        let (proto, vip, port) = frontend_v4(&fe.frontend);
        let cands = &g.services.backend_sets[fe.backends].backends;
        for c in clients() {
            let got = match proto {
                Proto::Tcp => topo.tcp_probe(c.into(), vip.into(), port, timeout),
                _ => topo.udp_probe(c.into(), vip.into(), port, timeout),
            };
            if cands.is_empty() {
                assert_eq!(got, None, "{vip}:{port} has no backends: rejected");
                continue;
            }
            let got = got.unwrap_or_else(|| panic!("{c} → {vip}:{port}/{proto:?}: no answer"));
            assert!(
                cands.iter().any(|b| b.addr == got),
                "{got} not a backend of {vip}:{port}"
            );
            answered.push((proto, c, vip, port, got));
        }
    }
    assert!(answered.len() >= 3 * 13, "{}", answered.len());
    // Every flow the program created, against the interpreter (the real
    // source port is in the conntrack key).
    let ct: aya::maps::HashMap<_, [u8; 40], [u8; 40]> =
        aya::maps::HashMap::try_from(r.ebpf.map(names::CT).unwrap()).unwrap();
    let mut flows = 0;
    let mut disagreements = Vec::new();
    for item in ct.iter() {
        let (k, v) = item.unwrap();
        let client = Ipv4Addr::new(k[0], k[1], k[2], k[3]);
        let vip = Ipv4Addr::new(k[16], k[17], k[18], k[19]);
        let sport = u16::from_ne_bytes([k[32], k[33]]);
        let dport = u16::from_ne_bytes([k[34], k[35]]);
        let proto = if k[36] == 6 { Proto::Tcp } else { Proto::Udp };
        let backend = Ipv4Addr::new(v[0], v[1], v[2], v[3]);
        let o = interp.evaluate(&Packet::new(proto, client.into(), sport, vip.into(), dport));
        let hit = o.service.unwrap();
        let svc = &model.services[hit.service];
        assert!(hit.candidates.iter().any(|b| b.addr == IpAddr::V4(backend)));
        if svc.balance == Balance::Maglev && hit.chosen.unwrap().addr != IpAddr::V4(backend) {
            disagreements.push(format!("{client}:{sport} → {vip}:{dport}: {backend}"));
        }
        // The probe saw the backend the program recorded.
        let probe = answered
            .iter()
            .find(|a| a.0 == proto && a.1 == client && a.2 == vip && a.3 == dport)
            .expect("a probe made this flow");
        assert_eq!(probe.4, IpAddr::V4(backend));
        flows += 1;
    }
    assert_eq!(flows, answered.len(), "one flow per probe");
    assert!(disagreements.is_empty(), "{disagreements:?}");
    let c = r.counters().unwrap();
    assert!(c[cnt::NO_BACKENDS as usize] >= 3);
    eprintln!("netns TC path: {flows} flows over TCP and UDP, 0 disagreements; counters {c:?}");
}

/// Connect-time path: a child process in the test cgroup (the test binary
/// itself, see `ebpf_service_cgroup_child`) connects to frontends from the
/// client namespace; `connect4` / `sendmsg4` send it straight to a
/// backend, `recvmsg4` reports the frontend as the datagram's source.
#[test]
fn ebpf_service_netns_cgroup_path() {
    if !have_root("ebpf_service_netns_cgroup_path") {
        return;
    }
    let (model, g) = compile(SRC);
    let topo = Topology::new().unwrap();
    serve_backends(&topo, &g.services);
    let mut r = load(&g.services, Some(&g));
    let cg = Cgroup(cgroup2_root().join(format!("weir-lb-test-{}", std::process::id())));
    std::fs::create_dir_all(&cg.0).unwrap();
    r.attach_cgroup(&cg.0).unwrap_or_else(|e| panic!("{e}"));
    let mut jobs = Vec::new();
    for fe in &g.services.frontends {
        let (proto, vip, port) = frontend_v4(&fe.frontend);
        for c in clients() {
            topo.add_client_addr(c.into()).unwrap();
            match proto {
                Proto::Tcp => jobs.push(format!("tcp {c} {vip} {port}")),
                _ => {
                    jobs.push(format!("udpc {c} {vip} {port}"));
                    jobs.push(format!("udpu {c} {vip} {port}"));
                }
            }
        }
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "ebpf_service_cgroup_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            CHILD_ENV,
            format!(
                "{}|{}|{}",
                cg.0.display(),
                topo.client.name(),
                jobs.join(";")
            ),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let interp = Interp::new(&model);
    let mut n = 0;
    let mut disagreements = Vec::new();
    for line in stdout
        .lines()
        .filter_map(|l| l.find("RESULT ").map(|i| &l[i + 7..]))
    {
        let f: Vec<&str> = line.split(' ').collect();
        let (kind, client, vip, port) = (
            f[0],
            f[1].parse::<Ipv4Addr>().unwrap(),
            f[2].parse::<Ipv4Addr>().unwrap(),
            f[3].parse::<u16>().unwrap(),
        );
        let proto = if kind == "tcp" {
            Proto::Tcp
        } else {
            Proto::Udp
        };
        let fe = g.services.lookup(vip.into(), port, proto).unwrap();
        let cands = &g.services.backend_sets[fe.backends].backends;
        let svc = &model.services[fe.service];
        if cands.is_empty() {
            assert_eq!(f[4], "ERR", "{line}: no backends must reject");
            assert!(f[5].contains("os_error_1)"), "{line}: EPERM");
            n += 1;
            continue;
        }
        assert_ne!(f[4], "ERR", "{line}");
        let got: IpAddr = f[4].parse().unwrap();
        assert!(cands.iter().any(|b| b.addr == got), "{line}: not a backend");
        if kind == "udpu" {
            assert_eq!(
                f[5],
                format!("{vip}:{port}"),
                "recvmsg4 reports the frontend"
            );
        }
        if svc.balance == Balance::Maglev {
            // Connect-time convention: source port 0.
            let o = interp.evaluate(&Packet::new(proto, client.into(), 0, vip.into(), port));
            let want = o.service.unwrap().chosen.unwrap();
            // ... which is the maps' choice at the connect-time hash.
            let h = connect_flow_hash(Some(client.into()), vip.into(), port, proto);
            assert_eq!(
                r.state.pick(fe.service, 4, h).map(|b| b.addr),
                Some(want.addr)
            );
            if want.addr != got {
                disagreements.push(line.to_string());
            }
        }
        n += 1;
    }
    assert_eq!(n, jobs.len(), "{stdout}");
    assert!(disagreements.is_empty(), "{disagreements:?}");
    let c = r.counters().unwrap();
    assert!(c[cnt::REVERSE as usize] >= 3, "recvmsg4 rewrote: {c:?}");
    eprintln!("netns cgroup path: {n} connects / datagrams, 0 disagreements; counters {c:?}");
}

/// Not a test by itself: the child process of
/// `ebpf_service_netns_cgroup_path` (does nothing without its env var).
#[test]
fn ebpf_service_cgroup_child() {
    cgroup::child_main();
}

fn child_results(cg: &Path, topo: &Topology, jobs: &[String]) -> Vec<String> {
    cgroup::child_results("ebpf_service_cgroup_child", cg, topo, jobs)
}

const APPLY_SRC: &str = r#"
service api {
  frontend 10.96.7.1:80/tcp
  backends { 10.7.0.1:8080, 10.7.0.2:8080 }
}
"#;

/// `weir apply --backend ebpf --cgroup`: the bundle's connect-time
/// programs share the applied generation's service maps, their links are
/// pinned, follow a re-apply, show in `status`, and `detach` removes them.
#[test]
fn ebpf_service_apply_with_cgroup() {
    use weir_runtime::ebpf::{self, Instance};
    if !have_root("ebpf_service_apply_with_cgroup") {
        return;
    }
    let (model, g) = compile(APPLY_SRC);
    let out = weir_compiler::ebpf::codegen::generate(
        &model,
        &g,
        &weir_compiler::ebpf::codegen::Options::default(),
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let mut backends = std::collections::BTreeMap::new();
    backends.insert(weir_compiler::bundle::Target::Ebpf, out.artifacts());
    let sources = vec![("main.weir".to_string(), APPLY_SRC.to_string())];
    let locate = |_| None;
    let files = weir_compiler::bundle::bundle(&weir_compiler::bundle::BundleInput {
        model: &model,
        graph: &g,
        sources: &sources,
        targets: &[weir_compiler::bundle::Target::Ebpf],
        locate: &locate,
        backends,
    });
    let pid = std::process::id();
    let scratch = std::env::temp_dir().join(format!("weir-ebpf-cgroup-{pid}"));
    let dir = scratch.join("bundle");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    let topo = Topology::new().unwrap();
    serve_backends(&topo, &g.services);
    let client = clients()[0];
    topo.add_client_addr(client.into()).unwrap();
    let mut inst = Instance::new(weir_runtime::netns::NODE_CLIENT_IF, Some(topo.node.name()));
    inst.pin_root = PathBuf::from(format!("/sys/fs/bpf/weir-cg-test-{pid}"));
    inst.state_root = scratch.join("state");
    let cg = Cgroup(cgroup2_root().join(format!("weir-apply-test-{pid}")));
    std::fs::create_dir_all(&cg.0).unwrap();

    // A path that is not a cgroup fails before anything is loaded.
    let bad = ebpf::apply_with(&dir, &inst, Some(Path::new("/nonexistent-cgroup")));
    assert!(bad.is_err());

    let backends: Vec<IpAddr> = ["10.7.0.1", "10.7.0.2"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let jobs: Vec<String> = (0..4)
        .map(|_| format!("tcp {client} 10.96.7.1 80"))
        .collect();
    let reach = |what: &str| {
        let res = child_results(&cg.0, &topo, &jobs);
        assert_eq!(res.len(), jobs.len(), "{what}: {res:?}");
        for line in &res {
            let f: Vec<&str> = line.split(' ').collect();
            assert_ne!(f[4], "ERR", "{what}: {line}");
            let got: IpAddr = f[4].parse().unwrap();
            assert!(backends.contains(&got), "{what}: {line}: not a backend");
        }
    };

    let a = ebpf::apply_with(&dir, &inst, Some(&cg.0)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.generation, 1);
    let s = ebpf::status(&inst).unwrap();
    assert!(s.attached && s.cgroup_attached, "{s:?}");
    assert_eq!(s.cgroup.as_deref(), Some(cg.0.to_str().unwrap()));
    for (_, pin) in weir_runtime::ebpf::cgroup::HOOKS {
        assert!(inst.pin_dir().join(pin).exists(), "{pin} pinned");
    }
    reach("generation 1");
    // The connect-time programs count in the generation's weir_lb_cnt.
    let cnt_path = inst.pin_dir().join("gen-1").join(names::CNT);
    let m =
        aya::maps::Map::from_map_data(aya::maps::MapData::from_pin(&cnt_path).unwrap()).unwrap();
    let arr: aya::maps::PerCpuArray<&aya::maps::MapData, u64> =
        aya::maps::PerCpuArray::try_from(&m).unwrap();
    let translated: u64 = arr.get(&cnt::TRANSLATED, 0).unwrap().iter().sum();
    assert!(translated >= jobs.len() as u64, "{translated}");
    drop(m);

    // Re-apply without `--cgroup`: the links follow the new generation.
    let b = ebpf::apply(&dir, &inst).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(b.generation, 2);
    assert!(!inst.pin_dir().join("gen-1").exists());
    let s = ebpf::status(&inst).unwrap();
    assert!(s.cgroup_attached, "{s:?}");
    reach("generation 2");
    // Per-service / per-backend counts (`weir stats`): the connects of
    // generation 2 (each generation has its own counters).
    let counts = ebpf::service_stats(&inst).unwrap();
    let total = counts
        .iter()
        .find(|c| c.service == "api" && c.backend.is_none())
        .unwrap_or_else(|| panic!("{counts:?}"))
        .flows;
    assert_eq!(total, jobs.len() as u64, "{counts:?}");
    let per_backend: u64 = counts
        .iter()
        .filter(|c| c.backend.is_some())
        .map(|c| c.flows)
        .sum();
    assert_eq!(per_backend, total, "{counts:?}");
    assert_eq!(counts.len(), 3, "api and its two backends: {counts:?}");

    // Detach: links and pins gone; connects to the frontend no longer
    // reach a backend.
    assert!(ebpf::detach(&inst).unwrap());
    for (_, pin) in weir_runtime::ebpf::cgroup::HOOKS {
        assert!(!inst.pin_dir().join(pin).exists());
    }
    let res = child_results(&cg.0, &topo, &jobs[..1]);
    assert!(res[0].contains(" ERR "), "{res:?}");
    let _ = std::fs::remove_dir(&inst.pin_root);
    let _ = std::fs::remove_dir_all(&scratch);
}
