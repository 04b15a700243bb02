//! The eBPF reject of an IPv4 UDP datagram to a service without backends
//! (docs/language.md §4 step 3): an ICMP destination unreachable, port
//! unreachable (type 3 code 3), checked byte by byte against RFC 792 in
//! the BPF_PROG_TEST_RUN output frame, with both checksums recomputed here
//! (not by the project's frame helpers), sent back out (`TC_ACT_REDIRECT`)
//! and counted under the service's reject provenance.
//!
//! RFC 792, "Destination Unreachable Message": type 3, code 3 = port
//! unreachable; 4 unused bytes (zero); then "Internet Header + 64 bits of
//! Original Data Datagram" at least; RFC 1812 §4.3.2.3 and Linux: as
//! much as fits in 576 bytes (`compiler/src/ebpf/codegen/unreachable.rs`).
//! RFC 1122 §3.2.2: no error about a datagram whose source is not a
//! unicast address.
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod ebpf_common;

use std::net::IpAddr;
use std::path::PathBuf;

use ebpf_common::*;
use weir_compiler::check::check_program;
use weir_compiler::ebpf::codegen::Mode;
use weir_compiler::ebpf::layout;
use weir_compiler::graph;
use weir_compiler::interp::{Interp, Packet};
use weir_compiler::model::Proto;
use weir_compiler::source::MemoryLoader;

const SRC: &str = r#"
endpoint web { labels { app: "web" } addr 10.1.0.10 }
service empty {
  frontend 10.96.0.9:53/udp
  frontend 10.96.0.9:80/tcp
  backends select app == "nothing" port 53
}
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn ebpf_answers_udp_to_a_service_without_backends_with_icmp_port_unreachable() {
    if !have_root("ebpf_answers_udp_to_a_service_without_backends_with_icmp_port_unreachable") {
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

    // A datagram with a 100-byte payload: all of it is quoted (it fits in
    // 576 bytes; lengths up to 9,000 in ebpf_reject_quote.rs).
    let udp = Packet::new(Proto::Udp, ip("10.1.0.10"), 40001, ip("10.96.0.9"), 53);
    let mut f = frame(&udp);
    f.truncate(42);
    f.extend((0..100u8).map(|i| i ^ 0x5a));
    f[16..18].copy_from_slice(&(20u16 + 8 + 100).to_be_bytes());
    f[38..40].copy_from_slice(&(8u16 + 100).to_be_bytes());
    f[18..20].copy_from_slice(&0x1234u16.to_be_bytes()); // IP id, quoted as is
    set_checksums(&mut f);
    let id = reject_id(&udp);
    let before = counts(&gen);
    let out = run_full(&gen, &f);
    let after = counts(&gen);
    assert_eq!(out.ret, layout::TC_ACT_REDIRECT as u32, "sent back out");
    assert_eq!(after[id] - before[id], 1, "counted under the reject");
    let r = &out.data;
    assert_eq!(r.len(), 14 + 20 + 8 + 128, "Ethernet + IPv4 + ICMP + quote");
    // Ethernet: back to the sender's MAC, from ours, IPv4.
    assert_eq!(&r[0..6], &f[6..12]);
    assert_eq!(&r[6..12], &f[0..6]);
    assert_eq!(&r[12..14], &[0x08, 0x00]);
    // IPv4 header (RFC 791): version 4 / IHL 5, total length 156,
    // protocol 1, from the frontend to the sender, valid checksum.
    let iph = &r[14..34];
    assert_eq!(iph[0], 0x45);
    assert_eq!(u16::from_be_bytes([iph[2], iph[3]]), 156);
    assert!(iph[8] > 0, "TTL");
    assert_eq!(iph[9], 1, "protocol ICMP");
    assert_eq!(&iph[12..16], &f[30..34], "source = the frontend");
    assert_eq!(&iph[16..20], &f[26..30], "destination = the sender");
    assert_eq!(internet_checksum(iph), 0, "IPv4 header checksum");
    // ICMP (RFC 792): type 3, code 3, checksum over the whole message,
    // 4 unused zero bytes, then the offending datagram.
    let icmp = &r[34..];
    assert_eq!((icmp[0], icmp[1]), (3, 3), "destination / port unreachable");
    assert_eq!(internet_checksum(icmp), 0, "ICMP checksum");
    assert_ne!(u16::from_be_bytes([icmp[2], icmp[3]]), 0);
    assert_eq!(&icmp[4..8], &[0, 0, 0, 0], "unused");
    assert_eq!(&icmp[8..28], &f[14..34], "the offending IP header");
    assert_eq!(&icmp[28..136], &f[34..142], "its data");

    // A minimal datagram (a frame padded to 60 bytes) grows to 70: the
    // padding is not quoted.
    let out = run_full(&gen, &frame(&udp));
    assert_eq!(out.ret, layout::TC_ACT_REDIRECT as u32);
    assert_eq!(out.data.len(), 70);
    assert_eq!(internet_checksum(&out.data[34..]), 0);

    // No error about a datagram from a multicast source (RFC 1122):
    // dropped, still counted as the reject.
    let mut m = frame(&udp);
    m[26..30].copy_from_slice(&[224, 0, 0, 9]);
    set_checksums(&mut m);
    let before = counts(&gen);
    assert_eq!(run_full(&gen, &m).ret, layout::TC_ACT_SHOT as u32);
    assert_eq!(counts(&gen)[id] - before[id], 1);

    // The TCP reject is still a reset.
    let syn = Packet::new(Proto::Tcp, ip("10.1.0.10"), 40000, ip("10.96.0.9"), 80);
    reject_id(&syn);
    let out = run_full(&gen, &frame(&syn));
    assert_eq!(out.ret, layout::TC_ACT_REDIRECT as u32);
    assert_eq!(out.data.len(), 54);
}

/// End to end: the program on the node's client-facing interface, a
/// client in its own namespace sends a datagram from a connected UDP
/// socket to the frontend without backends; the client's kernel matches
/// the ICMP port unreachable to the socket (it checks the checksum and
/// reads the quoted headers) and the next receive fails with
/// `ECONNREFUSED` at once.
#[test]
fn ebpf_udp_reject_reaches_the_client_socket_in_netns() {
    if !have_root("ebpf_udp_reject_reaches_the_client_socket_in_netns") {
        return;
    }
    use std::net::{SocketAddr, UdpSocket};
    use std::time::{Duration, Instant};
    use weir_runtime::netns::Topology;
    let path = PathBuf::from("main.weir");
    let loader = MemoryLoader::new().with(&path, SRC);
    let checked = check_program(std::slice::from_ref(&path), &loader, None);
    let model = checked.model;
    let g = graph::build(&model);
    let out = compile(&model, &g, Mode::Node);
    let topo = Topology::new().unwrap();
    let gen = attach_at_node_client_ingress(&topo, out);
    let client = ip("10.244.200.1");
    topo.add_client_addr(client).unwrap();
    let vip = SocketAddr::new(ip("10.96.0.9"), 53);
    let timeout = Duration::from_millis(1500);
    let started = Instant::now();
    let r = topo
        .client
        .run(move || {
            let s = UdpSocket::bind(SocketAddr::new(client, 0))?;
            s.connect(vip)?;
            s.set_read_timeout(Some(timeout))?;
            s.send(b"is anyone there?")?;
            let mut buf = [0u8; 64];
            s.recv(&mut buf).map(|_| ())
        })
        .unwrap()
        .map_err(|e| e.kind());
    assert_eq!(
        r,
        Err(std::io::ErrorKind::ConnectionRefused),
        "the ICMP port unreachable reached the socket"
    );
    assert!(started.elapsed() < timeout, "at once");
    drop(gen);
}
