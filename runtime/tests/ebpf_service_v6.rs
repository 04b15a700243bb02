//! IPv6 services in the eBPF TC path (issue 18), in the kernel, beside
//! the differential test (`ebpf_diff.rs`, which compares single flows of
//! generated dual-stack programs with the interpreter):
//!
//! - client-IP affinity over IPv6: every flow of one client goes to the
//!   backend its first flow got, though Maglev alone would spread its
//!   flows (the interpreter's choice per flow shows it) — affinity is
//!   state across flows, which the differential test (one flow from empty
//!   maps) does not see;
//! - a frontend packet behind IPv6 extension headers is translated at the
//!   transport header the parse found (ports, addresses, checksum over
//!   the pseudo-header), to the backend the whole packet gets;
//! - end to end in network namespaces: a dual-stack service (IPv4 and
//!   IPv6 frontends, backends selected by label, each endpoint with an
//!   address of each family) applied with `weir_runtime::ebpf::apply` on
//!   both node links answers real TCP and UDP from a client over both
//!   families, through the TC program only (replies reverse-translated on
//!   the server link);
//! - connect time: `cgroup/connect6`, `sendmsg6` and `recvmsg6` attached
//!   to a real cgroup send a child process's TCP, connected UDP and
//!   unconnected UDP to an IPv6 frontend straight to a backend (Maglev:
//!   the interpreter's choice at source port 0), `recvfrom` reports the
//!   frontend, a frontend without backends fails `connect()` with EPERM,
//!   and IPv4 keeps working beside them; dual-stack IPv6 sockets to the
//!   IPv4 frontend written IPv4-mapped (`::ffff:10.96.7.1`) are balanced
//!   like IPv4 (the IPv4 Maglev choice), and `recvfrom` reports the
//!   mapped frontend.
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod ebpf_common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ebpf_common::cgroup::{self, cgroup2_root, Cgroup};
use ebpf_common::headers::{with_extensions, Ext};
use ebpf_common::*;
use weir_compiler::bundle::{self, BundleInput, Target};
use weir_compiler::check::check_program;
use weir_compiler::ebpf::codegen::{generate, Mode, Options};
use weir_compiler::ebpf::layout;
use weir_compiler::graph;
use weir_compiler::interp::{Interp, Packet};
use weir_compiler::model::{Model, Proto};
use weir_compiler::source::MemoryLoader;
use weir_runtime::ebpf::{self, Instance};
use weir_runtime::netns::{Topology, NODE_CLIENT_IF, NODE_SERVER_IF};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn model_of(text: &str) -> Model {
    let path = PathBuf::from("policy.weir");
    let loader = MemoryLoader::new().with(&path, text);
    let checked = check_program(std::slice::from_ref(&path), &loader, None);
    assert!(!checked.has_errors(), "{:?}", checked.diagnostics);
    checked.model
}

/// Destination (address, port) of an IPv6 TCP / UDP frame whose
/// transport header is at `l4`.
fn v6_dst(f: &[u8], l4: usize) -> (IpAddr, u16) {
    let a: [u8; 16] = f[38..54].try_into().unwrap();
    (IpAddr::from(a), u16::from_be_bytes([f[l4 + 2], f[l4 + 3]]))
}

const AFFINITY: &str = r#"
service six {
  frontend [fd00:96::1]:80/tcp
  frontend [fd00:96::1]:53/udp
  backends { [fd00:1::1]:8080, [fd00:1::2]:8080, [fd00:1::3]:8080, [fd00:1::4]:8080, [fd00:1::5]:8080 }
  balance maglev
  affinity client-ip 10m
}
"#;

#[test]
fn ebpf_ipv6_affinity_keeps_a_client_on_its_first_backend() {
    if !have_root("ebpf_ipv6_affinity_keeps_a_client_on_its_first_backend") {
        return;
    }
    let model = model_of(AFFINITY);
    let g = graph::build(&model);
    let gen = load_output(&compile(&model, &g, Mode::Node));
    let interp = Interp::new(&model);
    let vip = ip("fd00:96::1");
    let mut firsts = BTreeSet::new();
    let mut hash_would_move = 0;
    for c in 1..=8u16 {
        let client = ip(&format!("2001:db8::{c:x}"));
        clear_conntrack(&gen);
        let mut first = None;
        for (i, proto) in [Proto::Tcp, Proto::Udp].into_iter().enumerate() {
            let dport = if proto == Proto::Tcp { 80 } else { 53 };
            for sport in 0..12u16 {
                let p = Packet::new(proto, client, 40000 + 97 * sport, vip, dport);
                let out = run_full(&gen, &frame(&p));
                assert_eq!(out.ret, layout::TC_ACT_OK as u32, "{p:?}");
                checksums_ok(&out.data).unwrap_or_else(|e| panic!("{p:?}: {e}"));
                let (d, dp) = v6_dst(&out.data, 54);
                assert_eq!(dp, 8080);
                let by_hash = interp.evaluate(&p).service.unwrap().chosen.unwrap();
                match first {
                    None if i == 0 && sport == 0 => {
                        // The first flow: Maglev, exactly the interpreter's.
                        assert_eq!(by_hash.addr, d, "{p:?}");
                        first = Some(d);
                    }
                    _ => {
                        assert_eq!(Some(d), first, "{p:?}: affinity");
                        hash_would_move += usize::from(by_hash.addr != d);
                    }
                }
            }
        }
        firsts.insert(first.unwrap());
    }
    eprintln!(
        "8 IPv6 clients × 24 flows: {} first backends, {hash_would_move} flows kept by affinity against the flow hash",
        firsts.len()
    );
    assert!(firsts.len() >= 2, "clients spread over backends");
    assert!(hash_would_move >= 50, "affinity, not chance");
}

const SPREAD: &str = r#"
service six {
  frontend [fd00:96::1]:80/tcp
  frontend [fd00:96::1]:53/udp
  backends { [fd00:1::1]:8080, [fd00:1::2]:8080, [fd00:1::3]:8080 }
  balance maglev
}
"#;

/// A frontend packet behind extension headers: translated at the
/// transport header, to the backend the whole packet gets (Maglev), with
/// a valid checksum once the chain is taken out again.
#[test]
fn ebpf_ipv6_frontend_behind_extension_headers_is_translated() {
    if !have_root("ebpf_ipv6_frontend_behind_extension_headers_is_translated") {
        return;
    }
    let model = model_of(SPREAD);
    let g = graph::build(&model);
    let gen = load_output(&compile(&model, &g, Mode::Node));
    let interp = Interp::new(&model);
    let chains: [&[Ext]; 3] = [
        &[Ext::HopByHop(8)],
        &[Ext::HopByHop(16), Ext::DestOpts(8), Ext::Routing],
        &[
            Ext::Ah,
            Ext::Fragment {
                offset: 0,
                more: true,
            },
        ],
    ];
    let mut n = 0;
    for (proto, dport) in [(Proto::Tcp, 80), (Proto::Udp, 53)] {
        for sport in 0..10u16 {
            let p = Packet::new(
                proto,
                ip("2001:db8::9"),
                50000 + sport,
                ip("fd00:96::1"),
                dport,
            );
            let want = interp.evaluate(&p).service.unwrap().chosen.unwrap();
            for chain in chains {
                clear_conntrack(&gen);
                clear_lb_state(&gen);
                let f = with_extensions(&frame(&p), chain);
                let ext = f.len() - frame(&p).len();
                let out = run_full(&gen, &f);
                assert_eq!(out.ret, layout::TC_ACT_OK as u32, "{p:?} {chain:?}");
                assert_eq!(
                    v6_dst(&out.data, 54 + ext),
                    (want.addr, want.port),
                    "{p:?} {chain:?}"
                );
                // Without the chain (and the next header and length it
                // changed) the frame is the translated whole packet.
                let mut whole = out.data[..54].to_vec();
                whole[20] = if proto == Proto::Tcp { 6 } else { 17 };
                let plen = u16::from_be_bytes([whole[18], whole[19]]) - ext as u16;
                whole[18..20].copy_from_slice(&plen.to_be_bytes());
                whole.extend_from_slice(&out.data[54 + ext..]);
                checksums_ok(&whole).unwrap_or_else(|e| panic!("{p:?} {chain:?}: {e}"));
                n += 1;
            }
        }
    }
    eprintln!("{n} IPv6 frontend packets behind extension headers translated");
}

const DUAL: &str = r#"
endpoint web { labels { app: "web" } addr 10.1.0.10 }
endpoint b1  { labels { app: "b" }   addr 10.2.0.1 }
endpoint b1v6 { labels { app: "b" }  addr fd00:2::1 }
endpoint b2  { labels { app: "b" }   addr 10.2.0.2 }
endpoint b2v6 { labels { app: "b" }  addr fd00:2::2 }
service s {
  frontend 10.96.0.1:80/tcp
  frontend 10.96.0.1:53/udp
  frontend [fd00:96::1]:80/tcp
  frontend [fd00:96::1]:53/udp
  backends select app == "b" port 8080
}
policy b-in {
  applies to app == "b"
  ingress {
    allow tcp 8080 from any
    allow udp 8080 from any
    deny from any
  }
}
"#;

/// Compiles `text` for eBPF and writes the bundle into `dir`.
fn write_bundle(dir: &Path, text: &str) {
    let model = model_of(text);
    let g = graph::build(&model);
    let out = generate(&model, &g, &Options::default()).unwrap_or_else(|e| panic!("{e:?}"));
    let mut backends = BTreeMap::new();
    backends.insert(Target::Ebpf, out.artifacts());
    let sources = vec![("policy.weir".to_string(), text.to_string())];
    let locate = |_| None;
    let files = bundle::bundle(&BundleInput {
        model: &model,
        graph: &g,
        sources: &sources,
        targets: &[Target::Ebpf],
        locate: &locate,
        backends,
    });
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Real TCP and UDP from a client to a dual-stack service over both
/// families, through the TC program on both node links.
#[test]
fn ebpf_dual_stack_service_answers_real_traffic_over_both_families() {
    if !have_root("ebpf_dual_stack_service_answers_real_traffic_over_both_families") {
        return;
    }
    let pid = std::process::id();
    let scratch = std::env::temp_dir().join(format!("weir-ebpf-v6svc-{pid}"));
    let dir = scratch.join("bundle");
    write_bundle(&dir, DUAL);
    let topo = Topology::new().unwrap();
    let v4_backends = [ip("10.2.0.1"), ip("10.2.0.2")];
    let v6_backends = [ip("fd00:2::1"), ip("fd00:2::2")];
    for b in v4_backends.iter().chain(&v6_backends) {
        topo.serve_tcp(*b, 8080).unwrap();
        topo.serve_udp(*b, 8080).unwrap();
    }
    let mut inst = Instance::new(NODE_CLIENT_IF, Some(topo.node.name()));
    inst.extra_ifaces = vec![NODE_SERVER_IF.to_string()];
    inst.pin_root = PathBuf::from(format!("/sys/fs/bpf/weir-v6svc-test-{pid}"));
    inst.state_root = scratch.join("state");
    ebpf::apply(&dir, &inst).unwrap_or_else(|e| panic!("{e}"));

    let t = Duration::from_millis(1500);
    let mut seen = BTreeSet::new();
    for (client, vip, backends) in [
        (ip("10.1.0.10"), ip("10.96.0.1"), &v4_backends),
        (ip("fd00:1::10"), ip("fd00:96::1"), &v6_backends),
    ] {
        for i in 0..6 {
            let got = topo
                .tcp_probe(client, vip, 80, t)
                .unwrap_or_else(|| panic!("TCP {client} → {vip}:80 (#{i}): no answer"));
            assert!(backends.contains(&got), "TCP {vip}: {got} is not a backend");
            seen.insert(got);
            let got = topo
                .udp_probe(client, vip, 53, t)
                .unwrap_or_else(|| panic!("UDP {client} → {vip}:53 (#{i}): no answer"));
            assert!(backends.contains(&got), "UDP {vip}: {got} is not a backend");
            seen.insert(got);
        }
    }
    eprintln!("dual-stack service: answered by {seen:?}");
    assert!(
        seen.iter().any(|a| a.is_ipv6()) && seen.iter().any(|a| a.is_ipv4()),
        "both families served"
    );
    // Without the program nothing answers at the VIPs.
    assert!(ebpf::detach(&inst).unwrap());
    assert!(topo
        .tcp_probe(
            ip("fd00:1::10"),
            ip("fd00:96::1"),
            80,
            Duration::from_millis(400)
        )
        .is_none());
    let _ = std::fs::remove_dir(&inst.pin_root);
    let _ = std::fs::remove_dir_all(&scratch);
}

const CONNECT: &str = r#"
service six {
  frontend [fd00:96::1]:80/tcp
  frontend [fd00:96::1]:53/udp
  backends { [fd00:7::1]:8080, [fd00:7::2]:8080, [fd00:7::3]:8080 }
  balance maglev
}
service empty6 {
  frontend [fd00:96::2]:80/tcp
  backends { }
}
service four {
  frontend 10.96.7.1:80/tcp
  frontend 10.96.7.1:53/udp
  backends { 10.7.0.1:8080, 10.7.0.2:8080, 10.7.0.3:8080 }
  balance maglev
}
"#;

/// Not a test by itself: the child process of
/// `ebpf_connect6_sendmsg6_recvmsg6_balance_ipv6_sockets` (does nothing
/// without its env var).
#[test]
fn ebpf_v6_cgroup_child() {
    cgroup::child_main();
}

#[test]
fn ebpf_connect6_sendmsg6_recvmsg6_balance_ipv6_sockets() {
    use weir_compiler::ebpf::layout::service::cnt;
    use weir_compiler::ebpf::service::fill::Options as LbOptions;
    use weir_compiler::ebpf::service::sock::connect_flow_hash;
    use weir_compiler::ebpf::service::LbState;
    use weir_compiler::provenance::Provenance;
    use weir_runtime::ebpf::service::LbRuntime;
    if !have_root("ebpf_connect6_sendmsg6_recvmsg6_balance_ipv6_sockets") {
        return;
    }
    let model = model_of(CONNECT);
    let g = graph::build(&model);
    let prov = g.provenance.clone();
    let state = LbState::new(
        &g.services,
        &move |s| prov.id(&Provenance::NoBackends { service: s }),
        &LbOptions::default(),
    );
    let mut r = LbRuntime::load(state).unwrap_or_else(|e| panic!("{e}"));
    let topo = Topology::new().unwrap();
    for set in &g.services.backend_sets {
        for b in &set.backends {
            topo.serve_tcp(b.addr, b.port).unwrap();
            topo.serve_udp(b.addr, b.port).unwrap();
        }
    }
    let cg = Cgroup(cgroup2_root().join(format!("weir-v6-test-{}", std::process::id())));
    std::fs::create_dir_all(&cg.0).unwrap();
    r.attach_cgroup(&cg.0).unwrap_or_else(|e| panic!("{e}"));
    let mut jobs = Vec::new();
    for c in 1..=6 {
        let client = ip(&format!("fd00:1::{c:x}"));
        topo.add_client_addr(client).unwrap();
        jobs.push(format!("tcp {client} fd00:96::1 80"));
        jobs.push(format!("udpc {client} fd00:96::1 53"));
        jobs.push(format!("udpu {client} fd00:96::1 53"));
        jobs.push(format!("tcp {client} fd00:96::2 80"));
    }
    topo.add_client_addr(ip("10.1.0.10")).unwrap();
    jobs.push("tcp 10.1.0.10 10.96.7.1 80".into());
    // Dual-stack IPv6 sockets to the IPv4 frontend, IPv4-mapped
    // (`mapped.rs`): balanced like IPv4 by connect6 / sendmsg6, the
    // backend written back mapped, recvmsg6 reporting the mapped frontend.
    for c in 11..=13 {
        let client = format!("10.1.0.{c}");
        topo.add_client_addr(ip(&client)).unwrap();
        for (kind, port) in [("tcp", 80), ("udpc", 53), ("udpu", 53)] {
            jobs.push(format!("{kind} ::ffff:{client} ::ffff:10.96.7.1 {port}"));
        }
    }
    let results = cgroup::child_results("ebpf_v6_cgroup_child", &cg.0, &topo, &jobs);
    assert_eq!(results.len(), jobs.len(), "{results:?}");
    let interp = Interp::new(&model);
    let (mut balanced, mut mapped, mut chosen) = (0, 0, BTreeSet::new());
    for line in &results {
        let f: Vec<&str> = line.split(' ').collect();
        let (kind, client, vip, port) = (f[0], ip(f[1]), ip(f[2]), f[3].parse::<u16>().unwrap());
        // An IPv4-mapped destination is the IPv4 frontend.
        let is_mapped = vip.is_ipv6() && vip.to_canonical().is_ipv4();
        let (client4, vip4) = (client.to_canonical(), vip.to_canonical());
        let proto = if kind == "tcp" {
            Proto::Tcp
        } else {
            Proto::Udp
        };
        let fe = g.services.lookup(vip4, port, proto).unwrap();
        let cands = &g.services.backend_sets[fe.backends].backends;
        if cands.is_empty() {
            assert_eq!(f[4], "ERR", "{line}: no backends must reject");
            assert!(f[5].contains("os_error_1)"), "{line}: EPERM");
            continue;
        }
        assert_ne!(f[4], "ERR", "{line}");
        let got = ip(f[4]);
        assert!(cands.iter().any(|b| b.addr == got), "{line}: not a backend");
        if kind == "udpu" {
            assert_eq!(
                f[5],
                std::net::SocketAddr::new(vip, port).to_string(),
                "{line}: recvmsg6 reports the frontend"
            );
        }
        if is_mapped {
            // The IPv4 frontend's Maglev choice at the connect-time hash
            // of the unmapped tuple, which is the interpreter's for the
            // IPv4 packets on the wire at source port 0.
            let o = interp.evaluate(&Packet::new(proto, client4, 0, vip4, port));
            let want = o.service.unwrap().chosen.unwrap();
            let h = connect_flow_hash(Some(client4), vip4, port, proto);
            assert_eq!(
                r.state.pick(fe.service, 4, h).map(|b| b.addr),
                Some(want.addr)
            );
            assert_eq!(got, want.addr, "{line}: Maglev (mapped)");
            mapped += 1;
        } else if vip.is_ipv6() {
            // Maglev at connect time: the interpreter's choice with source
            // port 0, which is the maps' choice at the connect-time hash.
            let o = interp.evaluate(&Packet::new(proto, client, 0, vip, port));
            let want = o.service.unwrap().chosen.unwrap();
            let h = connect_flow_hash(Some(client), vip, port, proto);
            assert_eq!(
                r.state.pick(fe.service, 6, h).map(|b| b.addr),
                Some(want.addr)
            );
            assert_eq!(got, want.addr, "{line}: Maglev");
            balanced += 1;
            chosen.insert(got);
        }
    }
    let c = r.counters().unwrap();
    eprintln!(
        "connect6 / sendmsg6 / recvmsg6: {balanced} IPv6 connects and datagrams balanced to {} backends, {mapped} to IPv4-mapped frontends, 0 disagreements; counters {c:?}",
        chosen.len()
    );
    assert_eq!(balanced, 18);
    assert_eq!(mapped, 9);
    assert!(chosen.len() >= 2, "clients spread over backends");
    assert!(c[cnt::REVERSE as usize] >= 6, "recvmsg6 rewrote: {c:?}");
    assert!(c[cnt::NO_BACKENDS as usize] >= 6, "EPERM counted: {c:?}");
}
