//! Where a `redirect … to proxy ADDR:PORT` proxy is (docs/language.md §4,
//! "Where the proxy is"; the checker's E0575 / E0576): the same program,
//! applied by each back end in the node namespace of a client — node —
//! server topology, with the same proxy sockets on the node, and real TCP
//! connections from the client to an address nobody listens on.
//!
//! - **On the node, one socket for both back ends.** A loopback or
//!   unspecified ADDR (iptables `REDIRECT`, eBPF's socket lookup of
//!   ADDR:PORT) reaches the wildcard listener on PORT; the address of the
//!   program's only node (iptables `DNAT`, eBPF's lookup) reaches the
//!   socket bound to that address and port. IPv4 and IPv6.
//! - **A proxy bound to the loopback address alone** is reached by eBPF
//!   only: iptables' `REDIRECT` rewrites the destination to the primary
//!   address of the incoming interface. §4 says so; this keeps it true.
//! - **Off the node, the disagreement E0575 refuses:** the checker
//!   refuses the program; the same model with that address put in past
//!   the checker sends the connection to the wildcard proxy on the node
//!   under eBPF and forwards it to the host that has ADDR under iptables.
//!
//! Each proxy answers with the address it is bound to (`::` for a
//! wildcard), so the answer names the socket that took the connection.
//! UDP (the on-node cases): each datagram must reach the UDP socket of
//! the same address and port as its case's TCP connection, and no other.
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod bundle_common;
mod ebpf_common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ebpf_common::{attach_at_node_client_ingress, compile};
use weir_compiler::diagnostics::Code;
use weir_compiler::ebpf::codegen::Mode;
use weir_compiler::graph;
use weir_compiler::model::{Model, SteerAction};
use weir_runtime::iptables::{Iptables, Options};
use weir_runtime::netns::Topology;

/// `OFF` is the proxy of port 8006 (replaced in the model for the
/// off-node case).
const SRC: &str = r#"
node n1 { addr 10.99.0.1 addr fd99::1 }
endpoint client { labels { app: "client" } addr 10.1.0.10 addr fd01::10 }

steer proxies {
  redirect tcp 8001 from app == "client" to proxy 127.0.0.1:15001
  redirect tcp 8002 from app == "client" to proxy 10.99.0.1:15002
  redirect tcp 8003 from app == "client" to proxy 127.0.0.1:15003
  redirect tcp 8004 from app == "client" to proxy [fd99::1]:15004
  redirect tcp 8005 from app == "client" to proxy [::1]:15005
  redirect tcp 8006 from app == "client" to proxy OFF:15006
  redirect tcp 8007 from app == "client" to proxy 0.0.0.0:15007
  redirect udp 9001 from app == "client" to proxy 127.0.0.1:15001
  redirect udp 9002 from app == "client" to proxy 10.99.0.1:15002
  redirect udp 9003 from app == "client" to proxy 127.0.0.1:15003
  redirect udp 9004 from app == "client" to proxy [fd99::1]:15004
  redirect udp 9005 from app == "client" to proxy [::1]:15005
  redirect udp 9007 from app == "client" to proxy 0.0.0.0:15007
}
"#;

/// A host beside the node (on the server side): no node has it.
const OFF_NODE: &str = "10.2.0.30";

/// The proxy sockets on the node, a TCP listener and a UDP socket each:
/// (bind address, port).
const PROXIES: [(&str, u16); 7] = [
    ("[::]", 15001),
    ("10.99.0.1", 15002),
    ("127.0.0.1", 15003),
    ("[fd99::1]", 15004),
    ("[::]", 15005),
    ("[::]", 15006),
    ("[::]", 15007),
];

/// One connection: client address, original destination, port.
struct Case {
    client: &'static str,
    dst: &'static str,
    port: u16,
}

const CASES: [Case; 7] = [
    Case {
        client: "10.1.0.10",
        dst: "10.2.0.20",
        port: 8001,
    },
    Case {
        client: "10.1.0.10",
        dst: "10.2.0.20",
        port: 8002,
    },
    Case {
        client: "10.1.0.10",
        dst: "10.2.0.20",
        port: 8003,
    },
    Case {
        client: "fd01::10",
        dst: "fd02::20",
        port: 8004,
    },
    Case {
        client: "fd01::10",
        dst: "fd02::20",
        port: 8005,
    },
    Case {
        client: "10.1.0.10",
        dst: "10.2.0.20",
        port: 8006,
    },
    Case {
        client: "10.1.0.10",
        dst: "10.2.0.20",
        port: 8007,
    },
];

const T: Duration = Duration::from_millis(1500);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The program with `off` as the proxy address of port 8006.
fn source(off: &str) -> String {
    SRC.replace("OFF", off)
}

/// The checked model of [`SRC`] with the loopback address at port 8006,
/// then that rule's proxy moved off the node (past the checker, which
/// refuses it).
fn off_node_model() -> Model {
    let mut model = ebpf_common::model_of_source(&source("127.0.0.1"));
    for s in &mut model.steers {
        for r in &mut s.rules {
            if let SteerAction::Redirect { addr, port: 15006 } = &mut r.action {
                *addr = ip(OFF_NODE);
            }
        }
    }
    model
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Ebpf,
    Iptables,
}

/// The node's side of the scene: its own addresses, the original
/// destinations routed locally (§4: the node must, for eBPF's socket
/// assignment), the proxies, and a server at [`OFF_NODE`] on the same
/// port as the off-node rule's proxy. The UDP proxies record what they
/// receive: (their bind address, payload).
fn scene() -> (Topology, Heard) {
    let topo = Topology::new().expect("netns topology");
    for args in [
        &["addr", "add", "10.99.0.1/32", "dev", "lo"][..],
        &["-6", "addr", "add", "fd99::1/128", "dev", "lo", "nodad"],
        &["route", "add", "local", "10.2.0.20/32", "dev", "lo"],
        &["-6", "route", "add", "local", "fd02::20/128", "dev", "lo"],
    ] {
        let o = topo.node.exec("ip", args).unwrap();
        assert!(o.status.success(), "ip {args:?}: {o:?}");
    }
    for (addr, port) in PROXIES {
        let sa: SocketAddr = format!("{addr}:{port}").parse().unwrap();
        topo.node
            .answer_tcp(sa, sa.ip().to_string().into())
            .unwrap_or_else(|e| panic!("bind {sa}: {e}"));
    }
    let heard: Heard = Arc::default();
    for (addr, port) in PROXIES {
        let sa: SocketAddr = format!("{addr}:{port}").parse().unwrap();
        let u = topo
            .node
            .run(move || UdpSocket::bind(sa))
            .unwrap()
            .unwrap_or_else(|e| panic!("bind udp {sa}: {e}"));
        let heard = heard.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((n, _)) = u.recv_from(&mut buf) {
                let payload = String::from_utf8_lossy(&buf[..n]).into_owned();
                heard.lock().unwrap().push((sa.ip(), payload));
            }
        });
    }
    topo.serve_tcp(ip(OFF_NODE), 15006).unwrap();
    (topo, heard)
}

/// What the UDP proxies received.
type Heard = Arc<Mutex<Vec<(IpAddr, String)>>>;

/// The UDP port of a case: its TCP port + 1000 (none for the off-node
/// case, which is TCP only).
fn udp_port(c: &Case) -> Option<u16> {
    (c.port != 8006).then_some(c.port + 1000)
}

/// Sends one datagram per case (payload: its UDP port) and returns, per
/// case, the bind addresses of the UDP proxies that received it.
fn udp_heard(topo: &Topology, heard: &Heard) -> Vec<Vec<IpAddr>> {
    for c in &CASES {
        let Some(port) = udp_port(c) else { continue };
        let (src, to) = (ip(c.client), SocketAddr::new(ip(c.dst), port));
        topo.add_client_addr(src).unwrap();
        topo.client
            .run(move || {
                UdpSocket::bind(SocketAddr::new(src, 0))?.send_to(port.to_string().as_bytes(), to)
            })
            .unwrap()
            .unwrap_or_else(|e| panic!("send to {to}: {e}"));
    }
    std::thread::sleep(Duration::from_millis(500));
    let heard = heard.lock().unwrap();
    CASES
        .iter()
        .map(|c| {
            let want = udp_port(c).map(|p| p.to_string());
            heard
                .iter()
                .filter(|(_, payload)| Some(payload) == want.as_ref())
                .map(|(a, _)| *a)
                .collect()
        })
        .collect()
}

/// Per case under `backend`: who answered its TCP connection (None:
/// nobody), and which UDP proxies received its datagram.
type Answers = (Vec<Option<IpAddr>>, Vec<Vec<IpAddr>>);

fn answers(model: &Model, backend: Backend) -> Answers {
    let g = graph::build(model);
    let (topo, heard) = scene();
    let probe = |topo: &Topology| -> Answers {
        let tcp = CASES
            .iter()
            .map(|c| topo.tcp_probe(ip(c.client), ip(c.dst), c.port, T))
            .collect();
        (tcp, udp_heard(topo, &heard))
    };
    match backend {
        Backend::Ebpf => {
            let out = compile(model, &g, Mode::Node);
            let gen = attach_at_node_client_ingress(&topo, out);
            let got = probe(&topo);
            drop(gen);
            got
        }
        Backend::Iptables => {
            let work = weir_runtime::kernel_test::state_dir("redirect-proxy-addr").unwrap();
            let b = bundle_common::write_iptables(model, &g, &[], &work.join("bundle"));
            let rt =
                Iptables::new(Options::netns(topo.node.name()).with_state_dir(work.join("state")));
            rt.apply(&b)
                .unwrap_or_else(|e| panic!("iptables apply: {e}"));
            let got = probe(&topo);
            let _ = std::fs::remove_dir_all(&work);
            got
        }
    }
}

#[test]
fn redirect_proxy_on_the_node_is_one_socket_for_both_back_ends() {
    if !weir_runtime::kernel_test::may_run(
        "redirect_proxy_on_the_node_is_one_socket_for_both_back_ends",
        &["ip", "iptables-restore", "ip6tables-restore", "ipset"],
    ) {
        return;
    }
    // The checker refuses the off-node proxy at its address.
    let path = std::path::PathBuf::from("main.weir");
    let src = source(OFF_NODE);
    let loader = weir_compiler::source::MemoryLoader::new().with(&path, &src);
    let c = weir_compiler::check::check_program(std::slice::from_ref(&path), &loader, None);
    let codes: Vec<_> = c.diagnostics.iter().map(|d| d.code).collect();
    assert_eq!(codes, vec![Code::E0575], "{:?}", c.diagnostics);

    let model = off_node_model();
    let (ebpf, ebpf_udp) = answers(&model, Backend::Ebpf);
    let (ipt, ipt_udp) = answers(&model, Backend::Iptables);
    let a = |s: &str| Some(ip(s));
    for (c, (e, i)) in CASES.iter().zip(ebpf.iter().zip(&ipt)) {
        // (eBPF, iptables): who answers.
        let want = match c.port {
            // On the node: both back ends, the same socket (the
            // wildcard listener; the node address's own socket).
            8001 | 8005 | 8007 => (a("::"), a("::")),
            8002 => (a("10.99.0.1"), a("10.99.0.1")),
            8004 => (a("fd99::1"), a("fd99::1")),
            // A proxy bound to 127.0.0.1 alone: eBPF only.
            8003 => (a("127.0.0.1"), None),
            // Off the node: eBPF's wildcard proxy here, iptables' host
            // there (why E0575 refuses it).
            8006 => (a("::"), a(OFF_NODE)),
            p => panic!("no expectation for port {p}"),
        };
        assert_eq!((*e, *i), want, "{} -> {}:{}", c.client, c.dst, c.port);
    }
    // UDP: each datagram at the same socket as the TCP connection of its
    // case (the UDP socket of that bind address and port), and nowhere
    // else.
    for (k, c) in CASES.iter().enumerate() {
        let Some(port) = udp_port(c) else { continue };
        let want = |a: Option<IpAddr>| a.into_iter().collect::<Vec<_>>();
        assert_eq!(
            (&ebpf_udp[k], &ipt_udp[k]),
            (&want(ebpf[k]), &want(ipt[k])),
            "udp {} -> {}:{port}",
            c.client,
            c.dst
        );
    }
    eprintln!(
        "redirect proxy addresses: {} TCP and {} UDP cases, eBPF {ebpf:?} / {ebpf_udp:?}, iptables {ipt:?} / {ipt_udp:?}",
        CASES.len(),
        CASES.iter().filter_map(udp_port).count(),
    );
}
