//! `weir apply` refuses a bundle whose node-address redirect proxy is
//! not on the host it is applied on (E0570, `weir_runtime::proxy_local`;
//! docs/language.md §4 "Where the proxy is").
//!
//! For each back end, through its real apply entry (`Iptables::apply`,
//! `ebpf::apply_with`, what `weir apply` and `weir agent` call), in the
//! node namespace of a client — node — server topology:
//!
//! 1. the node holds neither proxy address: the apply is refused with
//!    E0570 naming both addresses and their rules, and the kernel shows
//!    nothing of weir's (`iptables-save` / `ip6tables-save` / `ipset
//!    list` in the namespace; `bpftool net show`, `tc filter show`, the
//!    pin directory);
//! 2. the addresses are on an interface that is down (no local route: a
//!    `DNAT` there would leave the host): refused the same way;
//! 3. the interface is up: the apply succeeds and real TCP connections
//!    from the client (IPv4 and IPv6) reach the proxy sockets bound to
//!    the node addresses.
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod bundle_common;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use weir_compiler::bundle::Target;
use weir_runtime::iptables::{Iptables, Options};
use weir_runtime::netns::{Topology, NODE_CLIENT_IF};

const SRC: &str = r#"
node n1 { addr 10.99.0.1 addr fd99::1 }
endpoint client { labels { app: "client" } addr 10.1.0.10 addr fd01::10 }

steer proxies {
  redirect tcp 8001 from app == "client" to proxy 127.0.0.1:15001
  redirect tcp 8002 from app == "client" to proxy 10.99.0.1:15002
  redirect tcp 8004 from app == "client" to proxy [fd99::1]:15004
}
"#;

/// (client, original destination, port, the proxy that must answer).
const CASES: [(&str, &str, u16, &str); 2] = [
    ("10.1.0.10", "10.2.0.20", 8002, "10.99.0.1"),
    ("fd01::10", "fd02::20", 8004, "fd99::1"),
];

const T: Duration = Duration::from_millis(1500);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ip_cmd(topo: &Topology, args: &[&str]) {
    let o = topo.node.exec("ip", args).unwrap();
    assert!(o.status.success(), "ip {args:?}: {o:?}");
}

/// Stdout of `program args` in the node namespace.
fn node_out(topo: &Topology, program: &str, args: &[&str]) -> String {
    let o = topo.node.exec(program, args).unwrap();
    assert!(o.status.success(), "{program} {args:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Nothing of weir's in the node namespace: no chain, rule or set named
/// for weir, no tc program on the node's interfaces, no pin directory.
fn nothing_of_weirs(topo: &Topology, pin_dir: &Path) {
    for tool in ["iptables-save", "ip6tables-save"] {
        let s = node_out(topo, tool, &[]);
        assert!(!s.to_ascii_lowercase().contains("weir"), "{tool}:\n{s}");
    }
    let sets = node_out(topo, "ipset", &["list", "-n"]);
    assert!(
        !sets.to_ascii_lowercase().contains("weir"),
        "ipset:\n{sets}"
    );
    let net = node_out(topo, "bpftool", &["net", "show"]);
    assert!(
        !net.contains("tcx") && !net.contains("weir"),
        "bpftool net show:\n{net}"
    );
    for dir in ["ingress", "egress"] {
        let f = node_out(topo, "tc", &["filter", "show", "dev", NODE_CLIENT_IF, dir]);
        assert!(f.trim().is_empty(), "tc filter {dir}:\n{f}");
    }
    assert!(!pin_dir.exists(), "{} exists", pin_dir.display());
}

/// One back end's apply of the bundle in `dir` onto the node namespace.
type Apply<'a> = dyn Fn(&Topology) -> Result<(), String> + 'a;

/// Steps 1–3 for one back end; `pin_dir` is where its eBPF pins would be.
fn refused_then_applied(topo: &Topology, apply: &Apply, pin_dir: &Path) {
    // The original destinations are local (the node must route them to
    // itself for eBPF's socket assignment, §4), as in redirect_proxy_addr.
    ip_cmd(
        topo,
        &["route", "add", "local", "10.2.0.20/32", "dev", "lo"],
    );
    ip_cmd(
        topo,
        &["-6", "route", "add", "local", "fd02::20/128", "dev", "lo"],
    );

    // 1. Neither address on the node.
    let e = apply(topo).expect_err("applied with the proxy addresses off the host");
    for want in [
        "E0570",
        "10.99.0.1 of redirect rule 2 of steer `proxies`",
        "fd99::1 of redirect rule 3 of steer `proxies`",
        "node `n1`",
    ] {
        assert!(e.contains(want), "{want:?} not in: {e}");
    }
    assert!(!e.contains("127.0.0.1"), "loopback is never checked: {e}");
    nothing_of_weirs(topo, pin_dir);

    // 2. On an interface that is down.
    ip_cmd(
        topo,
        &[
            "link", "add", "proxies0", "type", "veth", "peer", "name", "proxies1",
        ],
    );
    ip_cmd(topo, &["addr", "add", "10.99.0.1/32", "dev", "proxies0"]);
    ip_cmd(
        topo,
        &[
            "-6",
            "addr",
            "add",
            "fd99::1/128",
            "dev",
            "proxies0",
            "nodad",
        ],
    );
    let e = apply(topo).expect_err("applied with the proxy addresses on a down interface");
    assert!(e.contains("E0570") && e.contains("10.99.0.1"), "{e}");
    nothing_of_weirs(topo, pin_dir);

    // 3. Up: applied, and the connections reach the node-address proxies.
    ip_cmd(topo, &["link", "set", "proxies1", "up"]);
    ip_cmd(topo, &["link", "set", "proxies0", "up"]);
    for (_, _, _, proxy) in CASES {
        let port = if proxy.contains(':') { 15004 } else { 15002 };
        let sa = SocketAddr::new(ip(proxy), port);
        topo.node
            .answer_tcp(sa, sa.ip().to_string().into())
            .unwrap_or_else(|e| panic!("bind {sa}: {e}"));
    }
    apply(topo).unwrap_or_else(|e| panic!("apply with the addresses up: {e}"));
    for (client, dst, port, proxy) in CASES {
        let got = topo.tcp_probe(ip(client), ip(dst), port, T);
        assert_eq!(got, Some(ip(proxy)), "{client} -> {dst}:{port}");
    }
}

#[test]
fn apply_refuses_a_node_address_proxy_this_host_does_not_hold() {
    if !weir_runtime::kernel_test::may_run(
        "apply_refuses_a_node_address_proxy_this_host_does_not_hold",
        &[
            "ip",
            "iptables-restore",
            "ip6tables-restore",
            "iptables-save",
            "ipset",
            "bpftool",
            "tc",
        ],
    ) {
        return;
    }
    let work = weir_runtime::kernel_test::state_dir("proxy-on-host").unwrap();
    let pin_root = PathBuf::from(format!(
        "/sys/fs/bpf/weir-test-proxy-on-host-{}",
        std::process::id()
    ));

    // iptables.
    let dir = work.join("iptables");
    bundle_common::write_source(&dir, SRC, None, Target::Iptables, &Default::default());
    let topo = Topology::new().expect("netns topology");
    let rt = Iptables::new(Options::netns(topo.node.name()).with_state_dir(work.join("ipt-state")));
    let apply = |_: &Topology| -> Result<(), String> {
        let b = weir_runtime::Bundle::read(&dir).map_err(|e| e.to_string())?;
        rt.apply(&b).map(|_| ()).map_err(|e| e.to_string())
    };
    refused_then_applied(&topo, &apply, &pin_root.join("none"));
    rt.detach().unwrap();
    drop(topo);

    // eBPF.
    let dir = work.join("ebpf");
    bundle_common::write_source(&dir, SRC, None, Target::Ebpf, &Default::default());
    let topo = Topology::new().expect("netns topology");
    let mut inst = weir_runtime::ebpf::Instance::new(NODE_CLIENT_IF, Some(topo.node.name()));
    inst.pin_root = pin_root.clone();
    inst.state_root = work.join("ebpf-state");
    let apply = |_: &Topology| -> Result<(), String> {
        weir_runtime::ebpf::apply_with(&dir, &inst, None)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    refused_then_applied(&topo, &apply, &inst.pin_dir());
    weir_runtime::ebpf::detach(&inst).unwrap();
    drop(topo);
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(&pin_root);
}
