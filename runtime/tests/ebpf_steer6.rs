//! `redirect … to proxy` for IPv6 TCP in the eBPF pipeline, end to end
//! in a network namespace (the IPv4 version is in `ebpf_steer.rs`): the
//! first packet of a connection to an address with no listener is
//! assigned (`bpf_sk_assign`, after `bpf_sk_lookup_tcp` on the 36-byte
//! IPv6 `bpf_sock_tuple`) to the local proxy's listener, whose accepted
//! socket has the original destination as its local address
//! (`getsockname`); a port that is not steered is refused; a rule whose
//! proxy address is IPv4 steers an IPv6 connection to a wildcard
//! listener on its port (the unspecified address is looked up).
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod ebpf_common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use ebpf_common::*;
use weir_compiler::check::check_program;
use weir_compiler::ebpf::codegen::Mode;
use weir_compiler::ebpf::layout;
use weir_compiler::graph;
use weir_compiler::interp::{Interp, Packet};
use weir_compiler::model::{Proto, SteerAction, Verdict};
use weir_runtime::netns::tcp_connect_from;

const SRC: &str = r#"
endpoint web { labels { app: "web" } addr 10.1.0.10 addr fd00::10 }
endpoint db  { labels { app: "db" }  addr 10.2.0.20 addr fd00::20 }

policy db-in {
  applies to app == "db"
  ingress { allow tcp { 8080, 8081, 8090 } from app == "web" }
}

steer proxies {
  redirect tcp 8080 from app == "web" to proxy [::1]:15001
  redirect tcp 8090 from app == "web" to proxy 127.0.0.1:15002
}
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// One connection from `web` (fd00::10) to db's `port`; what the proxy
/// (`listener`) accepted: its local address, after a ping / pong.
fn through_proxy(listener: &TcpListener, port: u16) -> Result<SocketAddr, String> {
    let t = Duration::from_secs(3);
    let mut c = tcp_connect_from(ip("fd00::10"), SocketAddr::new(ip("fd00::20"), port), t)
        .map_err(|e| format!("connect {port}: {e}"))?;
    let (mut a, _) = listener.accept().map_err(|e| e.to_string())?;
    let local = a.local_addr().map_err(|e| e.to_string())?;
    c.write_all(b"ping").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4];
    a.set_read_timeout(Some(t)).unwrap();
    a.read_exact(&mut buf).map_err(|e| e.to_string())?;
    a.write_all(b"pong").map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(t)).unwrap();
    c.read_exact(&mut buf).map_err(|e| e.to_string())?;
    if &buf != b"pong" {
        return Err(format!("{port}: no reply through the proxy"));
    }
    Ok(local)
}

#[test]
fn ebpf_redirect_ipv6_to_local_proxy_in_netns() {
    if !have_root("ebpf_redirect_ipv6_to_local_proxy_in_netns") {
        return;
    }
    let Some(_) = tool("ip") else { return };
    let path = PathBuf::from("main.weir");
    let loader = weir_compiler::source::MemoryLoader::new().with(&path, SRC);
    let checked = check_program(std::slice::from_ref(&path), &loader, None);
    assert!(!checked.has_errors(), "{:?}", checked.diagnostics);
    let model = checked.model;
    let g = graph::build(&model);
    // The interpreter steers both IPv6 connections (the meaning).
    let interp = Interp::new(&model);
    for port in [8080, 8090] {
        let p = Packet::new(Proto::Tcp, ip("fd00::10"), 40000, ip("fd00::20"), port);
        let o = interp.evaluate(&p);
        assert_eq!(o.verdict, Verdict::Allow, "{p:?}");
        assert!(
            matches!(
                o.steering.as_ref().map(|s| &s.action),
                Some(SteerAction::Redirect { .. })
            ),
            "{p:?}: {:?}",
            o.steering
        );
    }
    let out = compile(&model, &g, Mode::Node);
    let ns = weir_runtime::netns::Netns::create("weir-steer6").expect("netns");
    for args in [
        &["link", "set", "dev", "lo", "up"][..],
        &["-6", "route", "add", "local", "default", "dev", "lo"],
        &["-6", "addr", "add", "fd00::10/128", "dev", "lo", "nodad"],
    ] {
        let o = ns.exec("ip", args).unwrap();
        assert!(o.status.success(), "ip {args:?}: {o:?}");
    }
    let result = ns
        .run(move || -> Result<(SocketAddr, SocketAddr, bool), String> {
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
            let proxy = TcpListener::bind("[::1]:15001").map_err(|e| e.to_string())?;
            let wildcard = TcpListener::bind("[::]:15002").map_err(|e| e.to_string())?;
            let steered = through_proxy(&proxy, 8080)?;
            let cross = through_proxy(&wildcard, 8090)?;
            let refused = tcp_connect_from(
                ip("fd00::10"),
                SocketAddr::new(ip("fd00::20"), 8081),
                Duration::from_secs(3),
            )
            .is_err();
            drop(gen);
            Ok((steered, cross, refused))
        })
        .expect("run in netns");
    let (steered, cross, refused) = result.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        steered,
        SocketAddr::new(ip("fd00::20"), 8080),
        "the proxy sees the original destination"
    );
    assert_eq!(
        cross,
        SocketAddr::new(ip("fd00::20"), 8090),
        "an IPv4 proxy address: the wildcard listener, original destination"
    );
    assert!(refused, "port 8081 is not steered: nobody listens");
}
