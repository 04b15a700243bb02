//! One conntrack entry per translated flow (issue 21): the policy
//! pipeline keeps a translated flow's reverse translation (its frontend)
//! in the flow's `weir_ct` entry, keyed by the client ↔ backend tuple,
//! instead of a second table (`weir_lb_rev`). Driven with
//! BPF_PROG_TEST_RUN and read back from the kernel, for both families and
//! both orders of the client and backend in the canonical key (the
//! client's address below and above the backend's):
//!
//! - a new flow to the frontend is translated to the backend and leaves
//!   exactly one `weir_lb_ct` entry and one conntrack entry, flagged
//!   translated and carrying the frontend; the object has no
//!   `weir_lb_rev` map;
//! - the backend's reply gets the frontend back as its source;
//! - a packet from the client sent straight to the backend on the same
//!   tuple (not through the frontend) is the flow's own direction, not a
//!   reply: it passes unchanged (the entry's `CLIENT_FIRST` bit against
//!   the packet's place in the key).
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod ebpf_common;

use std::net::IpAddr;
use std::path::PathBuf;

use ebpf_common::*;
use weir_compiler::check::check_program;
use weir_compiler::ebpf::codegen::Mode;
use weir_compiler::ebpf::layout::{self, service::map as lb};
use weir_compiler::graph;
use weir_compiler::interp::Packet;
use weir_compiler::model::Proto;
use weir_compiler::source::MemoryLoader;
use weir_runtime::ebpf::load::{keys_raw, lookup_raw};
use weir_runtime::frames::{checksums_ok, frame};

const POLICY: &str = r#"
service web4 {
  frontend 10.96.0.1:80/tcp
  backends { 10.2.0.1:8080 }
}
service web6 {
  frontend [fd00:96::1]:80/tcp
  backends { [fd00:2::1]:8080 }
}
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Source and destination (address, port) of a TCP frame (IPv4 without
/// options, IPv6 without extension headers).
fn ends(f: &[u8]) -> (IpAddr, u16, IpAddr, u16) {
    let port = |o: usize| u16::from_be_bytes([f[o], f[o + 1]]);
    if f[12..14] == [0x86, 0xdd] {
        let a = |o: usize| IpAddr::from(<[u8; 16]>::try_from(&f[o..o + 16]).unwrap());
        return (a(22), port(54), a(38), port(56));
    }
    let a = |o: usize| IpAddr::from([f[o], f[o + 1], f[o + 2], f[o + 3]]);
    (a(26), port(34), a(30), port(36))
}

#[test]
fn ebpf_translated_flow_keeps_its_reverse_translation_in_conntrack() {
    if !have_root("ebpf_translated_flow_keeps_its_reverse_translation_in_conntrack") {
        return;
    }
    let path = PathBuf::from("policy.weir");
    let loader = MemoryLoader::new().with(&path, POLICY);
    let checked = check_program(std::slice::from_ref(&path), &loader, None);
    assert!(!checked.has_errors(), "{:?}", checked.diagnostics);
    let g = graph::build(&checked.model);
    let out = compile(&checked.model, &g, Mode::Node);
    assert!(
        out.manifest.maps.iter().all(|m| m.name != lb::REV),
        "the pipeline has no reverse-NAT table"
    );
    let gen = load_output(&out);
    let ok = layout::TC_ACT_OK as u32;
    // (frontend, backend, a client below the backend, one above).
    for (vip, backend, clients) in [
        ("10.96.0.1", "10.2.0.1", ["10.1.0.1", "10.3.0.1"]),
        ("fd00:96::1", "fd00:2::1", ["fd00:1::1", "fd00:3::1"]),
    ] {
        let (vip, backend) = (ip(vip), ip(backend));
        for client in clients.map(ip) {
            let tag = format!("{client} → {vip}");
            clear_conntrack(&gen);
            clear_lb_state(&gen);
            // The new flow: translated, one entry of each.
            let p = Packet::new(Proto::Tcp, client, 40000, vip, 80);
            let r = run_full(&gen, &frame(&p));
            assert_eq!(r.ret, ok, "{tag}");
            assert_eq!(ends(&r.data), (client, 40000, backend, 8080), "{tag}");
            assert_eq!(lb_state_len(&gen), (1, 1), "{tag}: translation state");
            assert_eq!(conntrack_len(&gen), 1, "{tag}");
            let m = gen.ebpf.map(layout::map::CT).unwrap();
            let key = &keys_raw(m, layout::ct::KEY_SIZE as usize).unwrap()[0];
            let v = lookup_raw(m, key, layout::ct::VALUE_SIZE as usize)
                .unwrap()
                .unwrap();
            let fe = |o: i16| o as usize;
            let addr_len = if vip.is_ipv4() { 4 } else { 16 };
            let want_addr = match vip {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            assert_eq!(
                &v[fe(layout::ct::FE_ADDR)..fe(layout::ct::FE_ADDR) + addr_len],
                &want_addr[..],
                "{tag}: frontend in the entry"
            );
            let port = u16::from_ne_bytes(
                v[fe(layout::ct::FE_PORT)..fe(layout::ct::FE_PORT) + 2]
                    .try_into()
                    .unwrap(),
            );
            assert_eq!(port, 80, "{tag}");

            // The backend's reply: the frontend as its source.
            let reply = Packet::new(Proto::Tcp, backend, 8080, client, 40000);
            let r = run_full(&gen, &frame(&reply));
            assert_eq!(r.ret, ok, "{tag}: reply");
            assert_eq!(ends(&r.data), (vip, 80, client, 40000), "{tag}: reply");
            checksums_ok(&r.data).unwrap_or_else(|e| panic!("{tag}: reply: {e}"));

            // The client straight to the backend, same tuple: no reverse
            // NAT (it is not a reply).
            let direct = Packet::new(Proto::Tcp, client, 40000, backend, 8080);
            let input = frame(&direct);
            let r = run_full(&gen, &input);
            assert_eq!(r.ret, ok, "{tag}: direct");
            assert_eq!(r.data, input, "{tag}: a direct packet is not rewritten");
            assert_eq!(conntrack_len(&gen), 1, "{tag}: nothing new");
        }
    }
}
