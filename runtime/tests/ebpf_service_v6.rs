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
//!   the server link).
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod ebpf_common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
