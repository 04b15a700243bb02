//! One conntrack entry per translated flow (issue 21): the policy
//! pipeline keeps a translated flow's reverse translation (its frontend)
//! in the flow's `weir_ct` entry, keyed by the client ↔ backend tuple,
//! instead of a second table (`weir_lb_rev`). Driven with
//! BPF_PROG_TEST_RUN and read back from the kernel, for both families and
//! both orders of the client and backend in the canonical key (the
//! client's address below and above the backend's):
//!
//! - a new flow to the frontend is translated to the backend and leaves
//!   exactly two `weir_ct` entries: the flow's, flagged translated and
//!   carrying the frontend, and its forward entry (client ↔ frontend,
//!   carrying the backend); the object has no `weir_lb_rev` and no
//!   `weir_lb_ct` map;
//! - the backend's reply gets the frontend back as its source;
//! - a packet from the client sent straight to the backend on the same
//!   tuple (not through the frontend) is the flow's own direction, not a
//!   reply: it passes unchanged (the entry's `CLIENT_FIRST` bit against
//!   the packet's place in the key).
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod ebpf_common;

use std::net::IpAddr;

use ebpf_common::*;
use weir_compiler::ebpf::codegen::Mode;
use weir_compiler::ebpf::layout::{self, service::map as lb};
use weir_compiler::graph;
use weir_compiler::interp::Packet;
use weir_compiler::model::Proto;
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
    let model = model_of_source(POLICY);
    let g = graph::build(&model);
    let out = compile(&model, &g, Mode::Node);
    assert!(
        out.manifest
            .maps
            .iter()
            .all(|m| m.name != lb::REV && m.name != lb::CT),
        "the pipeline has no reverse-NAT or translation table"
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
            // The flow's entry (the other one is its forward entry).
            let v = ct_all(&gen)
                .into_iter()
                .map(|(_, v)| v)
                .find(|v| !is_forward(v))
                .expect("the flow's entry");
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

            // The reply as a second hook sees it after the reverse NAT
            // (frontend → client): the forward entry's other end, so
            // established — passed unchanged, nothing written over.
            let fwd_before = forward_values(&gen);
            let seen = Packet::new(Proto::Tcp, vip, 80, client, 40000);
            let input = frame(&seen);
            let r = run_full(&gen, &input);
            assert_eq!(r.ret, ok, "{tag}: reverse-NATed reply");
            assert_eq!(
                r.data, input,
                "{tag}: a reverse-NATed reply is not rewritten"
            );
            assert_eq!(
                forward_values(&gen),
                fwd_before,
                "{tag}: forward entry kept"
            );
            assert_eq!(ct_entries(&gen), 2, "{tag}: nothing new");
            // The client's next packet still goes to the backend.
            let r = run_full(&gen, &frame(&p));
            assert_eq!(
                ends(&r.data),
                (client, 40000, backend, 8080),
                "{tag}: again"
            );
            assert_eq!(ct_entries(&gen), 2, "{tag}: established");
        }
    }
}

/// The forward entries' values.
fn forward_values(gen: &weir_runtime::ebpf::Generation) -> Vec<Vec<u8>> {
    ct_all(gen)
        .into_iter()
        .filter(|(_, v)| is_forward(v))
        .map(|(_, v)| v)
        .collect()
}

/// An untranslated flow already in conntrack to an address:port that is
/// now a frontend (allowed before it became one, as kube-proxy's
/// conntrack keeps such a flow) stays untranslated: the one lookup finds
/// its entry, which is not a forward entry, and it passes unchanged. Its
/// entry's time has every low bit the clock can set (an older weir's
/// entry: only its translated bits were cleared), so a forward flag in
/// the time word would misread it.
#[test]
fn ebpf_untranslated_established_flow_to_a_new_frontend_stays_untranslated() {
    if !have_root("ebpf_untranslated_established_flow_to_a_new_frontend_stays_untranslated") {
        return;
    }
    let model = model_of_source(POLICY);
    let g = graph::build(&model);
    let out = compile(&model, &g, Mode::Node);
    let gen = load_output(&out);
    let ok = layout::TC_ACT_OK as u32;
    // Clients below and above the frontend in the canonical key.
    for (client, vip) in [
        ("10.1.0.1", "10.96.0.1"),
        ("10.200.0.1", "10.96.0.1"),
        ("fd00:1::1", "fd00:96::1"),
        ("fd00:ff::1", "fd00:96::1"),
    ] {
        let (client, vip) = (ip(client), ip(vip));
        clear_conntrack(&gen);
        clear_lb_state(&gen);
        let p = Packet::new(Proto::Tcp, client, 40000, vip, 80);
        let mut v = vec![0u8; layout::ct::VALUE_SIZE as usize];
        v[..8].copy_from_slice(&(0x0123_4567_89ab_cdfc_u64).to_ne_bytes());
        weir_runtime::ebpf::ct_tables::update(|n| gen.ebpf.map(n), &ct_key(&p), &v, 0).unwrap();
        for _ in 0..2 {
            let input = frame(&p);
            let r = run_full(&gen, &input);
            assert_eq!(r.ret, ok, "{client}");
            assert_eq!(r.data, input, "{client}: stays untranslated");
            assert_eq!(lb_state_len(&gen), (0, 0), "{client}: no translation");
            assert_eq!(ct_entries(&gen), 1, "{client}: nothing new");
        }
    }
}
