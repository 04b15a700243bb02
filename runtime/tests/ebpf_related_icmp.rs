//! ICMP errors related to a connection in the eBPF back end
//! (docs/language.md §4 step 1; `interp::related`), driven with
//! BPF_PROG_TEST_RUN for both families, TCP and UDP, against the
//! interpreter (verdict and counters):
//!
//! - an error from the peer or from a router, addressed to the sender of
//!   the packet it quotes, of a flow in conntrack (either direction), is
//!   established: passed, counted `established`, the frame unchanged;
//! - the same error once the flow is gone, or addressed to someone else
//!   than the quoted sender, is new: judged by policy (here denied: the
//!   client allows no ICMP), as are non-error types quoting the flow;
//! - an error quoting a translated flow's packet (client → backend) is
//!   reverse-translated on its way to the client: the quote becomes the
//!   packet the client sent (client → frontend), byte for byte — IPv4
//!   header checksum, UDP checksum, and the TCP checksum when the whole
//!   TCP header is quoted — the ICMP / ICMPv6 checksum is valid, and the
//!   outer source is the frontend when the backend sent the error (a
//!   router's address is kept);
//! - an error about such a flow's reply as the client got it (quoting
//!   frontend → client, from the client or a router, to the frontend) is
//!   established and goes on to the backend, as Linux NATs it: the quote
//!   becomes the reply the backend sent, byte for byte with its
//!   checksums, and the error's destination the backend.
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod ebpf_common;

use std::collections::BTreeMap;
use std::net::IpAddr;

use ebpf_common::icmp_error::{
    error_checksums_ok, error_frame, error_packet, outer_dst, outer_src, quote, quoted,
};
use ebpf_common::*;
use weir_compiler::ebpf::codegen::Mode;
use weir_compiler::ebpf::layout;
use weir_compiler::graph::{self, Graph};
use weir_compiler::interp::{Interp, Packet};
use weir_compiler::model::{Model, Proto, Verdict};
use weir_runtime::ebpf::Generation;

const POLICY: &str = r#"
endpoint client4 { labels { app: "client" } addr 10.1.0.1 }
endpoint client6 { labels { app: "client" } addr fd00:1::1 }
service dns4 {
  frontend 10.96.0.10:53/udp
  backends { 10.2.0.1:5353 }
}
service web4 {
  frontend 10.96.0.1:80/tcp
  backends { 10.2.0.1:8080 }
}
service dns6 {
  frontend [fd00:96::10]:53/udp
  backends { [fd00:2::1]:5353 }
}
service web6 {
  frontend [fd00:96::1]:80/tcp
  backends { [fd00:2::1]:8080 }
}
policy client {
  applies to app == "client"
  ingress {
    allow tcp from any
    allow udp from any
  }
  egress {
    allow tcp to any
    allow udp to any
  }
}
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Check<'a> {
    model: &'a Model,
    g: Graph,
    gen: Generation,
    cases: usize,
}

impl<'a> Check<'a> {
    /// `model` compiled for a node and loaded, no case run yet.
    fn new(model: &'a Model) -> Self {
        let g = graph::build(model);
        let gen = load_output(&compile(model, &g, Mode::Node));
        Check {
            model,
            g,
            gen,
            cases: 0,
        }
    }

    /// Runs `f`, which the interpreter sees as `p`; verdict and counter
    /// deltas must be the interpreter's. Returns the output frame.
    fn run(&mut self, tag: &str, p: &Packet, f: &[u8]) -> Vec<u8> {
        self.cases += 1;
        let o = Interp::new(self.model).evaluate(p);
        let before = counts(&self.gen);
        let r = run_full(&self.gen, f);
        let after = counts(&self.gen);
        let got: BTreeMap<usize, u64> = before
            .iter()
            .zip(&after)
            .enumerate()
            .filter(|(_, (b, a))| a != b)
            .map(|(i, (b, a))| (i, a - b))
            .collect();
        let id = self.g.provenance.id(&o.decided_by) as usize;
        let want = BTreeMap::from([(id, 1u64)]);
        let ret = match o.verdict {
            Verdict::Allow => layout::TC_ACT_OK,
            Verdict::Deny => layout::TC_ACT_SHOT,
        } as u32;
        assert_eq!(
            (r.ret, &got),
            (ret, &want),
            "{tag}: {p:?} (interpreter: {:?})",
            o.decided_by
        );
        r.data
    }
}

fn error_type(v4: bool) -> (u8, u8) {
    if v4 {
        (3, 3)
    } else {
        (1, 4)
    }
}

#[test]
fn ebpf_icmp_errors_related_to_a_flow_are_established() {
    if !have_root("ebpf_icmp_errors_related_to_a_flow_are_established") {
        return;
    }
    let model = model_of_source(POLICY);
    let mut c = Check::new(&model);
    for (client, server, router, other) in [
        ("10.1.0.1", "10.5.0.1", "10.9.0.1", "10.1.0.77"),
        ("fd00:1::1", "fd00:5::1", "fd00:9::1", "fd00:1::77"),
    ] {
        let (client, server, router, other) = (ip(client), ip(server), ip(router), ip(other));
        let (t, code) = error_type(client.is_ipv4());
        for proto in [Proto::Tcp, Proto::Udp] {
            let tag = format!("{proto:?} {client} → {server}");
            clear_conntrack(&c.gen);
            clear_lb_state(&c.gen);
            let p = Packet::new(proto, client, 40000, server, 7000);
            let sent = frame(&p);
            c.run(&format!("{tag}: the flow"), &p, &sent);
            for (from, what) in [(server, "peer"), (router, "router")] {
                let e = error_frame(from, client, t, code, &quote(&sent, 8));
                let out = c.run(
                    &format!("{tag}: {what}'s error"),
                    &error_packet(from, client, t, code, true),
                    &e,
                );
                assert_eq!(out, e, "{tag}: a related error passes unchanged");
            }
            // About the flow's reply (server → client), sent to the server.
            let reply = frame(&Packet::new(proto, server, 7000, client, 40000));
            let e = error_frame(client, server, t, code, &quote(&reply, 8));
            c.run(
                &format!("{tag}: error about the reply"),
                &error_packet(client, server, t, code, true),
                &e,
            );
            // Not to the quoted packet's sender: not related.
            let e = error_frame(server, other, t, code, &quote(&sent, 8));
            c.run(
                &format!("{tag}: error to someone else"),
                &error_packet(server, other, t, code, false),
                &e,
            );
            // Not an error type (echo request quoting the flow).
            let echo = if client.is_ipv4() { 8 } else { 128 };
            let e = error_frame(server, client, echo, 0, &quote(&sent, 8));
            c.run(
                &format!("{tag}: not an error"),
                &error_packet(server, client, echo, 0, false),
                &e,
            );
            // The flow gone: judged as new ICMP (denied here).
            clear_conntrack(&c.gen);
            let e = error_frame(server, client, t, code, &quote(&sent, 8));
            let np = error_packet(server, client, t, code, false);
            assert_eq!(Interp::new(&model).evaluate(&np).verdict, Verdict::Deny);
            c.run(&format!("{tag}: no flow"), &np, &e);
        }
    }
    eprintln!("related ICMP errors: {} cases agree", c.cases);
}

#[test]
fn ebpf_icmp_errors_of_translated_flows_are_reverse_translated() {
    if !have_root("ebpf_icmp_errors_of_translated_flows_are_reverse_translated") {
        return;
    }
    let model = model_of_source(POLICY);
    let mut c = Check::new(&model);
    let mut translated = 0;
    for (client, router) in [("10.1.0.1", "10.9.0.1"), ("fd00:1::1", "fd00:9::1")] {
        let (client, router) = (ip(client), ip(router));
        let (t, code) = error_type(client.is_ipv4());
        for (proto, vip, backend) in [
            (Proto::Udp, "10.96.0.10:53", "10.2.0.1"),
            (Proto::Tcp, "10.96.0.1:80", "10.2.0.1"),
            (Proto::Udp, "[fd00:96::10]:53", "fd00:2::1"),
            (Proto::Tcp, "[fd00:96::1]:80", "fd00:2::1"),
        ] {
            let fe: std::net::SocketAddr = vip.parse().unwrap();
            if fe.is_ipv4() != client.is_ipv4() {
                continue;
            }
            let backend = ip(backend);
            // Quoting 8 bytes, and (TCP) the whole header.
            let sizes: &[usize] = if proto == Proto::Tcp { &[8, 20] } else { &[8] };
            for &n in sizes {
                for (from, what) in [(backend, "backend"), (router, "router")] {
                    let tag = format!("{proto:?} {client} → {fe}, {what}'s error quoting {n}");
                    clear_conntrack(&c.gen);
                    clear_lb_state(&c.gen);
                    let p = Packet::new(proto, client, 40000, fe.ip(), fe.port());
                    let sent = frame(&p);
                    let o = Interp::new(&model).evaluate(&p);
                    assert!(o.service.is_some(), "{tag}: a frontend");
                    let wire = c.run(&format!("{tag}: the flow"), &p, &sent);
                    assert_ne!(wire, sent, "{tag}: translated");
                    let e = error_frame(from, client, t, code, &quote(&wire, n));
                    let out = c.run(&tag, &error_packet(from, client, t, code, true), &e);
                    error_checksums_ok(&out).unwrap_or_else(|m| panic!("{tag}: {m}"));
                    assert_eq!(
                        quoted(&out),
                        &quote(&sent, n)[..],
                        "{tag}: the quote is the client's own packet"
                    );
                    let want_src = if from == backend { fe.ip() } else { router };
                    assert_eq!(outer_src(&out), want_src, "{tag}: outer source");
                    translated += 1;
                }
            }
        }
    }
    eprintln!(
        "reverse NAT of ICMP errors: {translated} errors translated, {} cases agree",
        c.cases
    );
    assert_eq!(translated, 12);
}

#[test]
fn ebpf_icmp_errors_about_replies_of_translated_flows_go_to_the_backend() {
    if !have_root("ebpf_icmp_errors_about_replies_of_translated_flows_go_to_the_backend") {
        return;
    }
    let model = model_of_source(POLICY);
    let mut c = Check::new(&model);
    let mut translated = 0;
    for (client, router) in [("10.1.0.1", "10.9.0.1"), ("fd00:1::1", "fd00:9::1")] {
        let (client, router) = (ip(client), ip(router));
        let (t, code) = error_type(client.is_ipv4());
        for (proto, vip) in [
            (Proto::Udp, "10.96.0.10:53"),
            (Proto::Tcp, "10.96.0.1:80"),
            (Proto::Udp, "[fd00:96::10]:53"),
            (Proto::Tcp, "[fd00:96::1]:80"),
        ] {
            let fe: std::net::SocketAddr = vip.parse().unwrap();
            if fe.is_ipv4() != client.is_ipv4() {
                continue;
            }
            let sizes: &[usize] = if proto == Proto::Tcp { &[8, 20] } else { &[8] };
            for &n in sizes {
                for (from, what) in [(client, "client"), (router, "router")] {
                    let tag = format!(
                        "{proto:?} {client} → {fe}, {what}'s error about the reply, quoting {n}"
                    );
                    clear_conntrack(&c.gen);
                    clear_lb_state(&c.gen);
                    let p = Packet::new(proto, client, 40000, fe.ip(), fe.port());
                    let wire = c.run(&format!("{tag}: the flow"), &p, &frame(&p));
                    let (backend, bport) = match wire[12..14] {
                        [0x08, 0x00] => (
                            IpAddr::from(<[u8; 4]>::try_from(&wire[30..34]).unwrap()),
                            u16::from_be_bytes([wire[36], wire[37]]),
                        ),
                        _ => (
                            IpAddr::from(<[u8; 16]>::try_from(&wire[38..54]).unwrap()),
                            u16::from_be_bytes([wire[56], wire[57]]),
                        ),
                    };
                    // The reply as the backend sent it and as the client
                    // got it.
                    let mut reply = Packet::new(proto, backend, bport, client, 40000);
                    reply.state = weir_compiler::model::ConnState::Established;
                    let got = Packet {
                        src: fe.ip(),
                        sport: fe.port(),
                        ..reply.clone()
                    };
                    let e = error_frame(from, fe.ip(), t, code, &quote(&frame(&got), n));
                    let out = c.run(&tag, &error_packet(from, fe.ip(), t, code, true), &e);
                    error_checksums_ok(&out).unwrap_or_else(|m| panic!("{tag}: {m}"));
                    assert_eq!(
                        quoted(&out),
                        &quote(&frame(&reply), n)[..],
                        "{tag}: the quote is the backend's own reply"
                    );
                    assert_eq!(
                        (outer_src(&out), outer_dst(&out)),
                        (from, backend),
                        "{tag}: to the backend"
                    );
                    translated += 1;
                }
            }
        }
    }
    eprintln!(
        "ICMP errors about replies: {translated} errors translated, {} cases agree",
        c.cases
    );
    assert_eq!(translated, 12);
}

/// The netns tests' flows, one per family: (client, frontend, backend).
const DNS_FLOWS: [(&str, &str, &str); 2] = [
    ("10.244.200.1", "10.96.0.9", "10.244.100.1"),
    ("fd00:244:200::1", "fd00:96::9", "fd00:244:100::1"),
];

/// A UDP service per family (the frontends and backends of
/// [`DNS_FLOWS`], backend port 5353), compiled in node mode and attached
/// at the node's ingress from the client and from the server.
fn dns_services_in_netns() -> (weir_runtime::netns::Topology, Generation) {
    use weir_runtime::netns::{Topology, NODE_CLIENT_IF, NODE_SERVER_IF};
    let model = model_of_source(
        r#"
service dns4 {
  frontend 10.96.0.9:53/udp
  backends { 10.244.100.1:5353 }
}
service dns6 {
  frontend [fd00:96::9]:53/udp
  backends { [fd00:244:100::1]:5353 }
}
"#,
    );
    let g = graph::build(&model);
    let out = compile(&model, &g, Mode::Node);
    let topo = Topology::new().unwrap();
    let gen = attach_at_node_ingress(&topo, out, &[NODE_CLIENT_IF, NODE_SERVER_IF]);
    (topo, gen)
}

/// Real traffic through three network namespaces: one program (node mode)
/// at the node's ingress from the client and from the server; a UDP
/// client, connected to a service frontend of each family, sends to it;
/// the backend (an address of the server namespace with no listener on
/// the port) answers with an ICMP / ICMPv6 port unreachable, which the
/// program reverse-translates on its way back. The client's connected
/// socket reports it (`ECONNREFUSED`, at once) only if the quote is its
/// own datagram to the frontend — the kernel's UDP error lookup matches
/// the quoted 4-tuple against its sockets, so this is checked by Linux.
/// Without the reverse NAT the error, allowed by policy (there is none),
/// quotes the backend and reaches no socket: the receive times out.
#[test]
fn ebpf_port_unreachable_from_a_backend_reaches_the_client_socket_in_netns() {
    if !have_root("ebpf_port_unreachable_from_a_backend_reaches_the_client_socket_in_netns") {
        return;
    }
    use std::net::{SocketAddr, UdpSocket};
    use std::time::{Duration, Instant};
    let (topo, gen) = dns_services_in_netns();
    for (client, vip, backend) in DNS_FLOWS {
        let (client, vip, backend) = (ip(client), SocketAddr::new(ip(vip), 53), ip(backend));
        topo.add_client_addr(client).unwrap();
        topo.add_server_addr(backend).unwrap();
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
            "{client} → {vip}: the backend's port unreachable reached the client's socket"
        );
        assert!(started.elapsed() < timeout, "{client} → {vip}: at once");
    }
    drop(gen);
}

/// Real traffic, the other way: a client sends a datagram to a frontend
/// from a socket it then closes; the backend (a real socket in the server
/// namespace) connects back to the client's address and port and answers.
/// The reply is reverse-translated on its way (frontend → client), the
/// client's kernel answers it with a port unreachable to the frontend,
/// and the program must send that error on to the backend translated as
/// Linux's conntrack does: the backend's connected socket reports it
/// (`ECONNREFUSED`, at once) only if the error reached it with the quote
/// its own reply (backend → client) — checked by the backend's kernel.
/// Without the translation the error, allowed by policy (there is none),
/// goes to the frontend address, which nobody owns: the receive times
/// out.
#[test]
fn ebpf_port_unreachable_about_a_reply_reaches_the_backend_socket_in_netns() {
    if !have_root("ebpf_port_unreachable_about_a_reply_reaches_the_backend_socket_in_netns") {
        return;
    }
    use std::net::{SocketAddr, UdpSocket};
    use std::time::{Duration, Instant};
    let (topo, gen) = dns_services_in_netns();
    for (client, vip, backend) in DNS_FLOWS {
        let (client, vip, backend) = (ip(client), SocketAddr::new(ip(vip), 53), ip(backend));
        topo.add_client_addr(client).unwrap();
        topo.add_server_addr(backend).unwrap();
        let timeout = Duration::from_millis(1500);
        let b = topo
            .server
            .run(move || UdpSocket::bind(SocketAddr::new(backend, 5353)))
            .unwrap()
            .unwrap();
        b.set_read_timeout(Some(timeout)).unwrap();
        let from = SocketAddr::new(client, 40555);
        topo.client
            .run(move || UdpSocket::bind(from)?.send_to(b"hello", vip).map(|_| ()))
            .unwrap()
            .unwrap();
        let mut buf = [0u8; 64];
        let (_, peer) = b.recv_from(&mut buf).unwrap();
        assert_eq!(peer, from, "{client} → {vip}: translated to the backend");
        b.connect(peer).unwrap();
        let started = Instant::now();
        b.send(b"too late").unwrap();
        let r = b.recv(&mut buf).map(|_| ()).map_err(|e| e.kind());
        assert_eq!(
            r,
            Err(std::io::ErrorKind::ConnectionRefused),
            "{client} → {vip}: the client's port unreachable about the reply reached the backend's socket"
        );
        assert!(started.elapsed() < timeout, "{client} → {vip}: at once");
    }
    drop(gen);
}
