//! How much of a rejected datagram the eBPF port unreachable quotes
//! (`compiler/src/ebpf/codegen/unreachable.rs`): as much as fits without
//! the error exceeding 576 bytes (IPv4, RFC 1812 §4.3.2.3) or 1,280 bytes
//! (IPv6, RFC 4443 §2.4 c) — what Linux's `icmp_send` / `icmp6_send`
//! quote — built in the packet itself.
//!
//! - BPF_PROG_TEST_RUN, both families, frames of 60, 600 and 1,400 bytes
//!   (and a 60-byte frame that is padding after a 28-byte datagram, and an
//!   IPv4 header with options): the answer's length, its quote byte for
//!   byte, and its checksums summed here (RFC 1071; ICMPv6 over the RFC
//!   8200 §8.1 pseudo-header). The kernel's test run takes at most a page
//!   of data, so 9,000 bytes go through the netns test.
//! - Real traffic in network namespaces (links at MTU 9,000): a client's
//!   connected UDP socket sends 60- (IPv6: 62-), 600-, 1,400- and
//!   9,000-byte frames
//!   to a frontend without backends; each `recv` fails with
//!   `ECONNREFUSED`, and a raw ICMP / ICMPv6 socket on the client sees a
//!   well-formed error of the right length and checksum. The same
//!   datagrams are first rejected by Linux itself (`iptables` /
//!   `ip6tables -j REJECT` on the node, the frontend a local address),
//!   and the two errors are compared: ICMPv6 byte for byte (the client
//!   sends no flow label); ICMP except
//!   the quoted IPv4 identification and header checksum (the client's
//!   kernel numbers each datagram) and so the ICMP checksum.
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod ebpf_common;

use std::net::IpAddr;

use ebpf_common::headers::with_options;
use ebpf_common::*;
use weir_compiler::ebpf::codegen::Mode;
use weir_compiler::ebpf::layout;
use weir_compiler::graph;
use weir_compiler::interp::Packet;
use weir_compiler::model::Proto;

const SRC: &str = r#"
endpoint web { labels { app: "web" } addr 10.1.0.10 }
service empty4 {
  frontend 10.96.0.9:53/udp
  backends select app == "nothing" port 53
}
service empty6 {
  frontend [fd00:96::9]:53/udp
  backends select app == "nothing" port 53
}
"#;

/// The most an error quotes: 576 − 20 − 8, 1,280 − 40 − 8.
const MAX4: usize = 548;
const MAX6: usize = 1232;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The one's-complement sum of RFC 1071 over `data` (an odd last byte
/// padded with zero), complemented: 0 over a block with a right checksum.
fn rfc1071(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    for c in data.chunks(2) {
        sum += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The ICMPv6 checksum check: RFC 1071 over the pseudo-header (source,
/// destination, length as 32 bits, 3 zero bytes, next header 58) and the
/// message.
fn icmp6_sum(src: &[u8], dst: &[u8], msg: &[u8]) -> u16 {
    let mut d = Vec::new();
    d.extend_from_slice(src);
    d.extend_from_slice(dst);
    d.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    d.extend_from_slice(&[0, 0, 0, 58]);
    d.extend_from_slice(msg);
    rfc1071(&d)
}

/// A UDP frame of `len` bytes (Ethernet included) of `p`, its payload a
/// pattern, lengths and checksums set.
fn udp_frame(p: &Packet, len: usize) -> Vec<u8> {
    let mut f = frame(p);
    let v4 = p.src.is_ipv4();
    let hdr = if v4 { 42 } else { 62 };
    f.truncate(hdr);
    f.extend((0..len - hdr).map(|i| (i * 7 + 3) as u8));
    let udp_len = (len - hdr + 8) as u16;
    if v4 {
        f[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
        f[38..40].copy_from_slice(&udp_len.to_be_bytes());
    } else {
        f[18..20].copy_from_slice(&udp_len.to_be_bytes());
        f[58..60].copy_from_slice(&udp_len.to_be_bytes());
    }
    set_checksums(&mut f);
    f
}

/// The IP length of the packet in frame `f` (padding excluded).
fn ip_len(f: &[u8]) -> usize {
    if f[12..14] == [0x08, 0x00] {
        usize::from(u16::from_be_bytes([f[16], f[17]]))
    } else {
        40 + usize::from(u16::from_be_bytes([f[18], f[19]]))
    }
}

/// Checks the answer `r` to the offending frame `f`: the quote is
/// `min(IP length, max)` bytes of the packet; returns the quote's length.
fn check_answer(r: &[u8], f: &[u8]) -> usize {
    let v4 = f[12..14] == [0x08, 0x00];
    let (hl, max) = if v4 { (20, MAX4) } else { (40, MAX6) };
    let q = ip_len(f).min(max);
    assert_eq!(r.len(), 14 + hl + 8 + q, "Ethernet + IP + ICMP + quote");
    assert!(
        r.len() - 14 <= if v4 { 576 } else { 1280 },
        "within the limit"
    );
    assert_eq!((&r[0..6], &r[6..12]), (&f[6..12], &f[0..6]), "MACs");
    assert_eq!(&r[12..14], &f[12..14], "type");
    let h = &r[14..14 + hl];
    let msg = &r[14 + hl..];
    if v4 {
        assert_eq!((h[0], h[9]), (0x45, 1), "IPv4, protocol ICMP");
        assert_eq!(usize::from(u16::from_be_bytes([h[2], h[3]])), 20 + 8 + q);
        assert_eq!(&h[12..16], &f[30..34], "source = the frontend");
        assert_eq!(&h[16..20], &f[26..30], "destination = the sender");
        assert_eq!(rfc1071(h), 0, "IPv4 header checksum");
        assert_eq!((msg[0], msg[1]), (3, 3), "port unreachable");
        assert_eq!(rfc1071(msg), 0, "ICMP checksum");
    } else {
        assert_eq!((h[0] >> 4, h[6]), (6, 58), "IPv6, ICMPv6");
        assert_eq!(usize::from(u16::from_be_bytes([h[4], h[5]])), 8 + q);
        assert_eq!(&h[8..24], &f[38..54], "source = the frontend");
        assert_eq!(&h[24..40], &f[22..38], "destination = the sender");
        assert_eq!((msg[0], msg[1]), (1, 4), "port unreachable");
        assert_eq!(icmp6_sum(&h[8..24], &h[24..40], msg), 0, "ICMPv6 checksum");
    }
    assert_eq!(&msg[4..8], &[0, 0, 0, 0], "unused");
    assert_eq!(&msg[8..], &f[14..14 + q], "the quote");
    q
}

#[test]
fn ebpf_port_unreachable_quotes_as_much_as_fits() {
    if !have_root("ebpf_port_unreachable_quotes_as_much_as_fits") {
        return;
    }
    let model = model_of_source(SRC);
    let g = graph::build(&model);
    let gen = load_output(&compile(&model, &g, Mode::Node));
    let p4 = Packet::new(Proto::Udp, ip("10.1.0.10"), 40001, ip("10.96.0.9"), 53);
    let p6 = Packet::new(Proto::Udp, ip("fd00:1::10"), 40001, ip("fd00:96::9"), 53);
    let mut quoted = Vec::new();
    for p in [&p4, &p6] {
        for len in [60usize, 600, 1400] {
            let len = if p.src.is_ipv6() && len == 60 {
                62
            } else {
                len
            };
            let f = udp_frame(p, len);
            let out = run_full(&gen, &f);
            assert_eq!(out.ret, layout::TC_ACT_REDIRECT as u32, "{len}: sent back");
            quoted.push(check_answer(&out.data, &f));
        }
    }
    assert_eq!(quoted, [46, 548, 548, 48, 586, 1232]);
    // A 28-byte datagram padded to a 60-byte frame: the padding is not
    // quoted.
    let f = frame(&p4);
    assert_eq!((f.len(), ip_len(&f)), (60, 28));
    let out = run_full(&gen, &f);
    assert_eq!(check_answer(&out.data, &f), 28);
    // IPv4 options are part of the quoted header.
    let f = with_options(&udp_frame(&p4, 300), 3);
    let out = run_full(&gen, &f);
    assert_eq!(
        out.ret,
        layout::TC_ACT_REDIRECT as u32,
        "options: sent back"
    );
    assert_eq!(check_answer(&out.data, &f), 298);
}

/// What the client saw of one rejected datagram.
#[derive(Debug)]
struct Seen {
    /// The UDP socket's error (`ECONNREFUSED` expected).
    refused: bool,
    /// The ICMP / ICMPv6 message (from its type on).
    msg: Vec<u8>,
}

/// In the client namespace: a connected UDP socket sends a datagram that
/// makes a frame of each of `sizes` bytes; a raw socket of the family
/// catches each error.
fn exchange(client: IpAddr, vip: IpAddr, sizes: &[usize]) -> std::io::Result<Vec<Seen>> {
    use std::net::{SocketAddr, UdpSocket};
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::time::Duration;
    let v4 = vip.is_ipv4();
    let raw = unsafe {
        let fd = if v4 {
            libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP)
        } else {
            libc::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6)
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 500_000,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
        OwnedFd::from_raw_fd(fd)
    };
    let s = UdpSocket::bind(SocketAddr::new(client, 40123))?;
    s.connect(SocketAddr::new(vip, 53))?;
    s.set_read_timeout(Some(Duration::from_millis(1500)))?;
    let over = if v4 { 14 + 20 + 8 } else { 14 + 40 + 8 };
    let mut seen = Vec::new();
    for &size in sizes {
        let payload: Vec<u8> = (0..size.max(over) - over)
            .map(|i| (i * 13 + 1) as u8)
            .collect();
        s.send(&payload)?;
        let mut buf = [0u8; 64];
        let refused =
            s.recv(&mut buf).err().map(|e| e.kind()) == Some(std::io::ErrorKind::ConnectionRefused);
        let mut msg = Vec::new();
        loop {
            let mut b = vec![0u8; 2048];
            let n = unsafe {
                libc::recv(
                    std::os::fd::AsRawFd::as_raw_fd(&raw),
                    b.as_mut_ptr() as *mut libc::c_void,
                    b.len(),
                    0,
                )
            };
            if n < 0 {
                break;
            }
            b.truncate(n as usize);
            // IPv4 raw sockets deliver the IP header too.
            let m = if v4 {
                b[usize::from(b[0] & 15) * 4..].to_vec()
            } else {
                b
            };
            if m[0] == if v4 { 3 } else { 1 } {
                msg = m;
                break;
            }
        }
        seen.push(Seen { refused, msg });
    }
    Ok(seen)
}

#[test]
fn ebpf_port_unreachable_in_netns_matches_linux_reject() {
    if !have_root("ebpf_port_unreachable_in_netns_matches_linux_reject") {
        return;
    }
    use weir_runtime::netns::{Topology, NODE_CLIENT_IF};
    let model = model_of_source(SRC);
    let g = graph::build(&model);
    let out = compile(&model, &g, Mode::Node);
    let topo = Topology::new().unwrap();
    let (c4, c6) = (ip("10.244.200.1"), ip("fd00:1::10"));
    let (v4, v6) = (ip("10.96.0.9"), ip("fd00:96::9"));
    topo.add_client_addr(c4).unwrap();
    topo.add_client_addr(c6).unwrap();
    let sh = |ns: &weir_runtime::netns::Netns, cmd: &str| {
        let args: Vec<&str> = cmd.split(' ').collect();
        let o = ns.exec(args[0], &args[1..]).unwrap();
        assert!(o.status.success(), "{cmd}: {o:?}");
    };
    sh(&topo.client, "ip link set eth0 mtu 9000");
    // No random flow label: both errors then quote the same bytes.
    sh(&topo.client, "sysctl -qw net.ipv6.auto_flowlabels=0");
    sh(
        &topo.node,
        &format!("ip link set {NODE_CLIENT_IF} mtu 9000"),
    );
    // Linux first: the frontend a local address of the node, rejected
    // by iptables / ip6tables (no rate limit on the node's errors).
    sh(&topo.node, "ip addr add 10.96.0.9/32 dev lo");
    sh(&topo.node, "ip addr add fd00:96::9/128 dev lo nodad");
    sh(&topo.node, "sysctl -qw net.ipv4.icmp_ratelimit=0");
    sh(&topo.node, "sysctl -qw net.ipv6.icmp.ratelimit=0");
    sh(
        &topo.node,
        "iptables -A INPUT -d 10.96.0.9 -p udp -j REJECT --reject-with icmp-port-unreachable",
    );
    sh(
        &topo.node,
        "ip6tables -A INPUT -d fd00:96::9 -p udp -j REJECT --reject-with icmp6-port-unreachable",
    );
    let sizes = [60usize, 600, 1400, 9000];
    let run = |client: IpAddr, vip: IpAddr| {
        topo.client
            .run(move || exchange(client, vip, &sizes))
            .unwrap()
            .unwrap()
    };
    let linux4 = run(c4, v4);
    let linux6 = run(c6, v6);
    // Then weir, at the node's client-facing ingress, before netfilter.
    let gen = attach_at_node_client_ingress(&topo, out);
    let weir4 = run(c4, v4);
    let weir6 = run(c6, v6);
    drop(gen);

    let c6o = match c6 {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(_) => unreachable!(),
    };
    let v6o = match v6 {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(_) => unreachable!(),
    };
    for (i, &size) in sizes.iter().enumerate() {
        let want4 = (size - 14).min(MAX4);
        let want6 = (size.max(62) - 14).min(MAX6);
        for (who, s4, s6) in [
            ("linux", &linux4[i], &linux6[i]),
            ("weir", &weir4[i], &weir6[i]),
        ] {
            assert!(s4.refused && s6.refused, "{who} {size}: ECONNREFUSED");
            assert_eq!(s4.msg.len(), 8 + want4, "{who} {size}: ICMP length");
            assert_eq!(s6.msg.len(), 8 + want6, "{who} {size}: ICMPv6 length");
            assert_eq!(rfc1071(&s4.msg), 0, "{who} {size}: ICMP checksum");
            assert_eq!(
                icmp6_sum(&v6o, &c6o, &s6.msg),
                0,
                "{who} {size}: ICMPv6 checksum"
            );
        }
        assert_eq!(weir6[i].msg, linux6[i].msg, "{size}: ICMPv6 as Linux's");
        let (w, l) = (&weir4[i].msg, &linux4[i].msg);
        assert_eq!(w[..2], l[..2], "{size}: type, code");
        assert_eq!(w[4..8 + 4], l[4..8 + 4], "{size}: up to the quoted id");
        assert_eq!(
            w[8 + 6..8 + 10],
            l[8 + 6..8 + 10],
            "{size}: flags, TTL, proto"
        );
        assert_eq!(w[8 + 12..], l[8 + 12..], "{size}: addresses, the datagram");
    }
}
