//! ICMP errors about the standalone service TC program's translated flows
//! (`weir_lb_tc`, `compiler/src/ebpf/service/object.rs`): the same
//! reverse NAT the policy pipeline does (one implementation,
//! `ebpf/service/icmp_error.rs`; Linux's `nf_nat_icmp_reply_translation`).
//! A client's UDP datagram and TCP segment to a frontend are translated
//! by the program (BPF_PROG_TEST_RUN); an ICMP port unreachable from the
//! backend, quoting the translated packet, must come out quoting the
//! client's own packet byte for byte (to the frontend), from the
//! frontend, with every checksum recomputed here right (RFC 1071); one
//! from a router keeps the router's address; one quoting no flow is left
//! as it is; each reverse-translated error counts as a reverse NAT.
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod ebpf_common;
use ebpf_common::run_lb;

use std::net::IpAddr;
use std::path::PathBuf;

use ebpf_common::icmp_error::{error_checksums_ok, error_frame, outer_src, quote, quoted};
use weir_compiler::driver::analyze;
use weir_compiler::ebpf::layout::service::cnt;
use weir_compiler::ebpf::service::fill::Options;
use weir_compiler::ebpf::service::LbState;
use weir_compiler::interp::Packet;
use weir_compiler::model::Proto;
use weir_compiler::provenance::Provenance;
use weir_compiler::source::MemoryLoader;
use weir_runtime::ebpf::service::LbRuntime;
use weir_runtime::frames::{frame, set_checksums};

const SRC: &str = r#"
service web {
  frontend 10.96.0.1:53/udp
  frontend 10.96.0.1:80/tcp
  backends { 10.1.0.1:8053 }
}
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn load() -> LbRuntime {
    let loader = MemoryLoader::new().with("main.weir", SRC);
    let a = analyze(&[PathBuf::from("main.weir")], &loader, None);
    assert!(!a.checked.has_errors(), "{:?}", a.checked.diagnostics);
    let g = a.compiled.expect("compiled").graph;
    let prov = g.provenance.clone();
    let state = LbState::new(
        &g.services,
        &move |s| prov.id(&Provenance::NoBackends { service: s }),
        &Options::default(),
    );
    LbRuntime::load(state).unwrap_or_else(|e| panic!("{e}"))
}

/// `p`'s frame with `payload` bytes of data (lengths and checksums set).
fn with_payload(p: &Packet, payload: usize) -> Vec<u8> {
    let mut f = frame(p);
    let l4 = if p.proto == Proto::Tcp { 20 } else { 8 };
    f.truncate(34 + l4);
    f.extend((0..payload).map(|i| (i * 5 + 1) as u8));
    f[16..18].copy_from_slice(&((20 + l4 + payload) as u16).to_be_bytes());
    if p.proto == Proto::Udp {
        f[38..40].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    }
    set_checksums(&mut f);
    f
}

#[test]
fn ebpf_service_tc_reverse_translates_icmp_errors_of_its_flows() {
    if !weir_runtime::kernel_test::may_run(
        "ebpf_service_tc_reverse_translates_icmp_errors_of_its_flows",
        &[],
    ) {
        return;
    }
    let r = load();
    let (client, vip, backend, router) = (
        ip("172.16.0.7"),
        ip("10.96.0.1"),
        ip("10.1.0.1"),
        ip("192.168.9.1"),
    );
    let reverse = |r: &LbRuntime| r.counters().unwrap()[cnt::REVERSE as usize];
    let mut checked = 0;
    for (proto, port, l4) in [(Proto::Udp, 53u16, 8usize), (Proto::Tcp, 80, 20)] {
        // The client's packet, as sent and as translated.
        let sent = with_payload(&Packet::new(proto, client, 40_000, vip, port), 16);
        let (ret, translated) = run_lb(&r, &sent);
        assert_eq!(ret, 0);
        assert_eq!(&translated[30..34], &[10, 1, 0, 1], "{proto:?}: DNATed");
        assert_eq!(&translated[36..38], &8053u16.to_be_bytes());
        // Quotes of 8 bytes after the IP header (RFC 792) and of the
        // whole packet (the TCP checksum then quoted too).
        for extra in [8, l4 + 16] {
            for (from, outer_is_vip) in [(backend, true), (router, false)] {
                let err = error_frame(from, client, 3, 3, &quote(&translated, extra));
                let before = reverse(&r);
                let (ret, out) = run_lb(&r, &err);
                assert_eq!(ret, 0, "passed");
                assert_eq!(reverse(&r) - before, 1, "counted as a reverse NAT");
                error_checksums_ok(&out).unwrap_or_else(|e| panic!("{proto:?} {extra}: {e}"));
                assert_eq!(
                    quoted(&out),
                    &quote(&sent, extra)[..],
                    "{proto:?} {extra}: the client's own packet"
                );
                let want_src = if outer_is_vip { vip } else { from };
                assert_eq!(outer_src(&out), want_src, "outer source");
                checked += 1;
            }
        }
        // An error quoting no flow of the program: untouched.
        let other = with_payload(&Packet::new(proto, client, 40_001, backend, 8053), 16);
        let err = error_frame(backend, client, 3, 3, &quote(&other, 8));
        let before = reverse(&r);
        let (ret, out) = run_lb(&r, &err);
        assert_eq!((ret, &out), (0, &err), "no flow: as it came");
        assert_eq!(reverse(&r), before);
    }
    assert_eq!(checked, 8);
}
