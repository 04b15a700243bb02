//! The eBPF reject of an SCTP packet to a service without backends
//! (docs/language.md §4 step 3), IPv4 and IPv6: what iptables' `REJECT`
//! sends for every protocol but TCP — an ICMP destination unreachable,
//! port unreachable (type 3 code 3, RFC 792), or ICMPv6 type 1 code 4
//! (RFC 4443 §3.1) — quoting the packet's IP header and the first 8 bytes
//! after it (SCTP's ports and verification tag, which is what the
//! sender's SCTP stack matches an ICMP error with, RFC 9260 §10), sent
//! back out (`TC_ACT_REDIRECT`) and counted under the service's reject.
//! Checksums are recomputed here from RFC 1071 (with the RFC 8200
//! pseudo-header for ICMPv6), not by the project's frame helpers.
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod ebpf_common;

use std::net::IpAddr;

use ebpf_common::*;
use weir_compiler::ebpf::codegen::Mode;
use weir_compiler::ebpf::layout;
use weir_compiler::graph;
use weir_compiler::interp::{Interp, Packet};
use weir_compiler::model::Proto;

const SRC: &str = r#"
endpoint web { labels { app: "web" } addr 10.1.0.10 addr fd00:1::10 }
service empty {
  frontend 10.96.0.9:3868/sctp
  frontend [fd00:96::9]:3868/sctp
  backends select app == "nothing" port 3868
}
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn ebpf_answers_sctp_to_a_service_without_backends_with_port_unreachable() {
    if !have_root("ebpf_answers_sctp_to_a_service_without_backends_with_port_unreachable") {
        return;
    }
    let model = model_of_source(SRC);
    let g = graph::build(&model);
    let interp = Interp::new(&model);
    let gen = load_output(&compile(&model, &g, Mode::Node));
    let reject_id = |p: &Packet| {
        let o = interp.evaluate(p);
        assert!(o.reject, "{p:?} is rejected by the interpreter");
        g.provenance.id(&o.decided_by) as usize
    };

    // IPv4: Ethernet + IPv4 + ICMP + (IPv4 header + 8 bytes).
    let p4 = Packet::new(Proto::Sctp, ip("10.1.0.10"), 40001, ip("10.96.0.9"), 3868);
    let f = frame(&p4);
    let id = reject_id(&p4);
    let before = counts(&gen);
    let out = run_full(&gen, &f);
    assert_eq!(
        out.ret,
        layout::TC_ACT_REDIRECT as u32,
        "IPv4: sent back out"
    );
    assert_eq!(counts(&gen)[id] - before[id], 1, "counted under the reject");
    let r = &out.data;
    // The whole packet is quoted (it fits in 576 bytes).
    let q = ebpf_common::icmp_error::quote(&f, 548);
    assert_eq!(r.len(), 14 + 20 + 8 + q.len());
    assert_eq!((&r[0..6], &r[6..12]), (&f[6..12], &f[0..6]), "MACs");
    let iph = &r[14..34];
    assert_eq!((iph[0], iph[9]), (0x45, 1), "IPv4, protocol ICMP");
    assert_eq!(&iph[12..16], &f[30..34], "source = the frontend");
    assert_eq!(&iph[16..20], &f[26..30], "destination = the sender");
    assert_eq!(internet_checksum(iph), 0, "IPv4 header checksum");
    let icmp = &r[34..];
    assert_eq!((icmp[0], icmp[1]), (3, 3), "destination / port unreachable");
    assert_eq!(internet_checksum(icmp), 0, "ICMP checksum");
    assert_eq!(&icmp[8..], &q[..], "the offending packet");
    assert_eq!(&icmp[28..36], &f[34..42], "ports and verification tag");

    // IPv6: Ethernet + IPv6 + ICMPv6 + the packet (fits in 1,280).
    let p6 = Packet::new(Proto::Sctp, ip("fd00:1::10"), 40001, ip("fd00:96::9"), 3868);
    let f = frame(&p6);
    let id = reject_id(&p6);
    let before = counts(&gen);
    let out = run_full(&gen, &f);
    assert_eq!(
        out.ret,
        layout::TC_ACT_REDIRECT as u32,
        "IPv6: sent back out"
    );
    assert_eq!(counts(&gen)[id] - before[id], 1, "counted under the reject");
    let r = &out.data;
    let q = ebpf_common::icmp_error::quote(&f, 1232);
    assert_eq!(r.len(), 14 + 40 + 8 + q.len());
    assert_eq!((&r[0..6], &r[6..12]), (&f[6..12], &f[0..6]), "MACs");
    let h = &r[14..54];
    assert_eq!((h[0] >> 4, h[6]), (6, 58), "IPv6, next header ICMPv6");
    assert_eq!(&h[8..24], &f[38..54], "source = the frontend");
    assert_eq!(&h[24..40], &f[22..38], "destination = the sender");
    let icmp6 = &r[54..];
    assert_eq!(
        (icmp6[0], icmp6[1]),
        (1, 4),
        "destination / port unreachable"
    );
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&h[8..40]);
    pseudo.extend_from_slice(&(icmp6.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(icmp6);
    assert_eq!(internet_checksum(&pseudo), 0, "ICMPv6 checksum");
    assert_eq!(&icmp6[8..], &q[..], "IPv6 header, ports, tag");
}
