//! `redirect udp … to proxy` in the eBPF pipeline, end to end in a
//! network namespace with real datagrams (the TCP versions are
//! `ebpf_steer.rs` and `ebpf_steer6.rs`): a client sends several
//! datagrams to an address and port nobody listens on, matched by a UDP
//! redirect; the proxy's plain UDP socket receives every one of them
//! (`recv_from` names the client), IPv4 and IPv6, with the rule's address
//! or, when it is of the other family, a wildcard socket on its port.
//! The first datagram is a new flow (the steer leaf); the later ones are
//! conntrack hits, which must be assigned to the proxy again (the flow's
//! `weir_ct` entry records it), also for a flow to a service frontend
//! (translated, then steered). Packets from the flow's other end are
//! replies, not steered. A port that is not steered reaches no proxy.
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod ebpf_common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use ebpf_common::*;
use weir_compiler::ebpf::codegen::Mode;
use weir_compiler::ebpf::layout;
use weir_compiler::graph;
use weir_compiler::interp::{Interp, Packet};
use weir_compiler::model::{Proto, SteerAction, Verdict};

const SRC: &str = r#"
endpoint web { labels { app: "web" } addr 10.1.0.10 addr fd00::10 }
endpoint db  { labels { app: "db" }  addr 10.2.0.20 addr fd00::20 }

policy db-in {
  applies to app == "db"
  ingress { allow udp { 5353, 5354, 5355, 5357, 5359, 5360 } from app == "web" }
}

service dns {
  frontend 10.96.0.53:53/udp
  backends select app == "db" port 5360
}

steer proxies {
  redirect udp 5353 from app == "web" to proxy 127.0.0.1:15001
  redirect udp 5355 from app == "web" to proxy [::1]:15002
  redirect udp 5357 from app == "web" to proxy [::1]:15003
  redirect udp 5359 from app == "web" to proxy 127.0.0.1:15004
  redirect udp 53 from app == "web" to proxy 127.0.0.1:15005
}
"#;

/// Datagrams per flow: the first is new, the others established.
const N: usize = 4;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// One case: the client's address, the destination port, the proxy
/// socket's bind address.
struct Case {
    client: &'static str,
    server: &'static str,
    port: u16,
    proxy: &'static str,
}

const CASES: [Case; 5] = [
    // IPv4, the rule's IPv4 address.
    Case {
        client: "10.1.0.10",
        server: "10.2.0.20",
        port: 5353,
        proxy: "127.0.0.1:15001",
    },
    // IPv6, the rule's IPv6 address.
    Case {
        client: "fd00::10",
        server: "fd00::20",
        port: 5355,
        proxy: "[::1]:15002",
    },
    // IPv4 flow, IPv6 proxy address: the IPv4 wildcard on its port.
    Case {
        client: "10.1.0.10",
        server: "10.2.0.20",
        port: 5357,
        proxy: "0.0.0.0:15003",
    },
    // IPv6 flow, IPv4 proxy address: the IPv6 wildcard on its port.
    Case {
        client: "fd00::10",
        server: "fd00::20",
        port: 5359,
        proxy: "[::]:15004",
    },
    // A service frontend: translated to its backend (db:5360) and
    // steered (the rule matches the packet as sent); the later datagrams
    // are translated by the flow's `weir_lb_ct` entry first.
    Case {
        client: "10.1.0.10",
        server: "10.96.0.53",
        port: 53,
        proxy: "127.0.0.1:15005",
    },
];

/// What a proxy socket received, up to `max` datagrams, each within `t`:
/// (payload, sender).
fn received(s: &UdpSocket, max: usize, t: Duration) -> Vec<(String, SocketAddr)> {
    s.set_read_timeout(Some(t)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 64];
    while out.len() < max {
        let Ok((n, from)) = s.recv_from(&mut buf) else {
            break;
        };
        out.push((String::from_utf8_lossy(&buf[..n]).into_owned(), from));
    }
    out
}

#[test]
fn ebpf_redirect_udp_to_local_proxy_in_netns() {
    if !have_root("ebpf_redirect_udp_to_local_proxy_in_netns") {
        return;
    }
    let Some(_) = tool("ip") else { return };
    let model = model_of_source(SRC);
    let g = graph::build(&model);
    // The interpreter steers every case's datagram (the meaning) and not
    // the unsteered port's.
    let interp = Interp::new(&model);
    for (c, port) in CASES
        .iter()
        .map(|c| (c, c.port))
        .chain([(&CASES[0], 5354), (&CASES[1], 5354)])
    {
        let p = Packet::new(Proto::Udp, ip(c.client), 40000, ip(c.server), port);
        let o = interp.evaluate(&p);
        assert_eq!(o.verdict, Verdict::Allow, "{p:?}");
        let steered = matches!(
            o.steering.as_ref().map(|s| &s.action),
            Some(SteerAction::Redirect { .. })
        );
        assert_eq!(steered, port != 5354, "{p:?}: {:?}", o.steering);
    }
    let out = compile(&model, &g, Mode::Node);
    let ns = weir_runtime::netns::Netns::create("weir-udpredir").expect("netns");
    for args in [
        &["link", "set", "dev", "lo", "up"][..],
        &["route", "add", "local", "default", "dev", "lo"],
        &["-6", "route", "add", "local", "default", "dev", "lo"],
        &["addr", "add", "10.1.0.10/32", "dev", "lo"],
        &["-6", "addr", "add", "fd00::10/128", "dev", "lo", "nodad"],
        &["addr", "add", "10.2.0.20/32", "dev", "lo"],
        &["-6", "addr", "add", "fd00::20/128", "dev", "lo", "nodad"],
    ] {
        let o = ns.exec("ip", args).unwrap();
        assert!(o.status.success(), "ip {args:?}: {o:?}");
    }
    // Per case (or per reply): what a socket received, and from whom it
    // should have come.
    type Heard = Vec<(Vec<(String, SocketAddr)>, SocketAddr)>;
    type Stray = Vec<(String, SocketAddr)>;
    let result = ns
        .run(move || -> Result<(Heard, Heard, Stray), String> {
            use aya::programs::{tc, SchedClassifier, TcAttachType};
            let mut gen = load_output(&out);
            let _ = tc::qdisc_add_clsact("lo");
            let p: &mut SchedClassifier = gen
                .ebpf
                .program_mut(layout::MAIN_PROGRAM)
                .unwrap()
                .try_into()
                .unwrap();
            p.attach("lo", TcAttachType::Ingress)
                .map_err(|e| e.to_string())?;
            let e = |e: std::io::Error| e.to_string();
            let proxies: Vec<UdpSocket> = CASES
                .iter()
                .map(|c| UdpSocket::bind(c.proxy))
                .collect::<Result<_, _>>()
                .map_err(e)?;
            let t = Duration::from_millis(500);
            let mut got = Vec::new();
            let mut clients = Vec::new();
            for (c, proxy) in CASES.iter().zip(&proxies) {
                let client = UdpSocket::bind(SocketAddr::new(ip(c.client), 0)).map_err(e)?;
                let to = SocketAddr::new(ip(c.server), c.port);
                for i in 0..N {
                    client
                        .send_to(format!("{}-{i}", c.port).as_bytes(), to)
                        .map_err(e)?;
                }
                got.push((received(proxy, N, t), client.local_addr().map_err(e)?));
                clients.push(client);
            }
            // A packet from the flow's other end (the original
            // destination) to the client is a reply: not steered, it
            // reaches the client.
            let mut replies = Vec::new();
            for (c, client) in CASES.iter().zip(&clients).take(2) {
                let server = SocketAddr::new(ip(c.server), c.port);
                let s = UdpSocket::bind(server).map_err(e)?;
                s.send_to(b"reply", client.local_addr().map_err(e)?)
                    .map_err(e)?;
                replies.push((received(client, 1, t), server));
            }
            // Not steered: allowed, but no proxy hears it (nor any
            // surplus datagram of the cases above).
            for c in &CASES[..2] {
                let client = UdpSocket::bind(SocketAddr::new(ip(c.client), 0)).map_err(e)?;
                let to = SocketAddr::new(ip(c.server), 5354);
                client.send_to(b"unsteered", to).map_err(e)?;
            }
            let short = Duration::from_millis(200);
            let stray: Vec<_> = proxies.iter().flat_map(|p| received(p, 1, short)).collect();
            drop(gen);
            Ok((got, replies, stray))
        })
        .expect("run in netns");
    let (got, replies, stray) = result.unwrap_or_else(|e| panic!("{e}"));
    for (r, server) in replies {
        assert_eq!(
            r,
            vec![("reply".to_string(), server)],
            "a reply is not steered"
        );
    }
    for (c, (datagrams, client)) in CASES.iter().zip(got) {
        let want: Vec<(String, SocketAddr)> = (0..N)
            .map(|i| (format!("{}-{i}", c.port), client))
            .collect();
        assert_eq!(
            datagrams, want,
            "{} → {}:{}: every datagram at the proxy {}, from the client",
            c.client, c.server, c.port, c.proxy
        );
    }
    assert!(stray.is_empty(), "port 5354 is not steered: {stray:?}");
}
