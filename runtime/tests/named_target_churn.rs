//! A CoreDNS-like service — frontends `53/udp` and `53/tcp`, backends
//! `select app == "dns" port "dns"` — over endpoints whose `dns` port
//! differs per protocol (issue 19: the named-port key per frontend
//! protocol, E0267 retired).
//!
//! eBPF: the pinned entry program (BPF_PROG_TEST_RUN) translates a UDP
//! query to the UDP backends at their UDP `dns` port and a TCP one to the
//! TCP backends at their TCP port, as the interpreter does; `weir
//! endpoints` adding a TCP replica changes the TCP frontend's backends
//! only (one service update, `IPv4 tcp`), without a reload.
//!
//! iptables: the applied DNAT rules (iptables-save) send each frontend to
//! its own protocol's backends; `weir endpoints` adding the TCP replica
//! rewrites exactly the TCP frontend's chain in place.
//!
//! Needs root; skipped without it unless `CI` is set (then it fails).

mod ebpf_common;

mod bundle_common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use weir_compiler::bundle::Target;
use weir_compiler::churn::EndpointRec;
use weir_compiler::interp::{BackendChoice, Interp, Packet};
use weir_compiler::model::{Model, Proto};
use weir_runtime::endpoints;
use weir_runtime::iptables::{Iptables, Options};
use weir_runtime::netns::{Topology, NODE_CLIENT_IF};
use weir_runtime::Bundle;

const SRC: &str = r#"
inventory "inventory.json"
service kube-dns {
  frontend 10.96.0.10:53/udp
  frontend 10.96.0.10:53/tcp
  backends select app == "dns" port "dns"
}
"#;

/// `dns-a` serves `dns` on UDP 53 and TCP 5353 (one name, two
/// protocols, as two containers of a pod may), `dns-b` on UDP 1053 only:
/// the UDP frontend's backends are a:53 and b:1053, the TCP one's a:5353.
const INVENTORY: &str = r#"{ "endpoints": [
  { "name": "client", "labels": { "app": "client" }, "addrs": ["10.1.0.10"] },
  { "name": "dns-a", "labels": { "app": "dns" }, "addrs": ["10.3.0.53"], "ports": { "dns": ["53/udp", "5353/tcp"] } },
  { "name": "dns-b", "labels": { "app": "dns" }, "addrs": ["10.3.0.54"], "ports": { "dns": "1053/udp" } }
] }"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Compiles [`SRC`] for `target` into `dir`; the checked model.
fn write_bundle(dir: &Path, target: Target) -> Model {
    bundle_common::write_source(dir, SRC, Some(INVENTORY), target, &Default::default()).0
}

/// The inventory as records, plus `extra`.
fn inventory(extra: &[(&str, &str, &str)]) -> Vec<EndpointRec> {
    let mut v = EndpointRec::parse_inventory(INVENTORY).unwrap();
    for (name, addr, port) in extra {
        v.push(EndpointRec {
            name: name.to_string(),
            labels: [
                ("app".to_string(), "dns".to_string()),
                ("port:dns/tcp".to_string(), port.to_string()),
            ]
            .into(),
            ready: true,
            addrs: vec![ip(addr)],
        });
    }
    v
}

/// The interpreter's candidates for the frontend `10.96.0.10:53/proto`.
fn interp_backends(model: &Model, proto: Proto) -> BTreeSet<(IpAddr, u16)> {
    let p = Packet::new(proto, ip("10.1.0.10"), 40000, ip("10.96.0.10"), 53);
    let hit = Interp::new(model)
        .service_hit(&p, BackendChoice::ByHash)
        .expect("a frontend");
    hit.candidates.iter().map(|b| (b.addr, b.port)).collect()
}

/// (address, port) the pinned program translates `n` new flows of
/// `proto` client → VIP:53 to, from source ports `sport0..` (new ones
/// each call: a known flow keeps its translation).
fn chosen(
    prog: &aya::programs::SchedClassifier,
    proto: Proto,
    sport0: u16,
    n: u16,
) -> BTreeSet<(IpAddr, u16)> {
    use aya::programs::{TestRun, TestRunOptions};
    let mut out = BTreeSet::new();
    for i in 0..n {
        let p = Packet::new(proto, ip("10.1.0.10"), sport0 + i, ip("10.96.0.10"), 53);
        let mut f = ebpf_common::frame(&p);
        ebpf_common::set_checksums(&mut f);
        let mut data = vec![0u8; f.len() + 256];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(&f),
                data_out: Some(&mut data),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(r.return_value, 0, "allowed (TC_ACT_OK)");
        // Ethernet 14 + IPv4 20: the transport header's destination port.
        out.insert((
            IpAddr::from([data[30], data[31], data[32], data[33]]),
            u16::from_be_bytes([data[36], data[37]]),
        ));
    }
    out
}

fn set(v: &[(&str, u16)]) -> BTreeSet<(IpAddr, u16)> {
    v.iter().map(|(a, p)| (ip(a), *p)).collect()
}

#[test]
fn ebpf_named_target_per_protocol_and_churn() {
    if !weir_runtime::kernel_test::may_run("ebpf_named_target_per_protocol_and_churn", &["ip"]) {
        return;
    }
    let work = weir_runtime::kernel_test::state_dir("named-target-ebpf").unwrap();
    let dir = work.join("bundle");
    let model = write_bundle(&dir, Target::Ebpf);
    let (udp, tcp) = (
        set(&[("10.3.0.53", 53), ("10.3.0.54", 1053)]),
        set(&[("10.3.0.53", 5353)]),
    );
    assert_eq!(interp_backends(&model, Proto::Udp), udp);
    assert_eq!(interp_backends(&model, Proto::Tcp), tcp);

    let topo = Topology::new().expect("netns topology");
    let pid = std::process::id();
    let mut inst = weir_runtime::ebpf::Instance::new(NODE_CLIENT_IF, Some(topo.node.name()));
    inst.pin_root = PathBuf::from(format!("/sys/fs/bpf/weir-test-named-target-{pid}"));
    inst.state_root = work.join("state");
    let g = weir_runtime::ebpf::apply(&dir, &inst).unwrap().generation;
    let prog = aya::programs::SchedClassifier::from_pin(
        inst.pin_dir()
            .join(format!("gen-{g}"))
            .join("prog_weir_main"),
    )
    .unwrap();
    assert_eq!(
        chosen(&prog, Proto::Udp, 21000, 64),
        udp,
        "UDP: the UDP dns ports"
    );
    assert_eq!(
        chosen(&prog, Proto::Tcp, 22000, 64),
        tcp,
        "TCP: the TCP dns port"
    );

    // A TCP replica: the TCP frontend's backends change, the UDP one's
    // do not.
    let r = endpoints::ebpf(&inst, &dir, &inventory(&[("dns-d", "10.3.0.56", "1054")])).unwrap();
    assert_eq!(r.services.len(), 1, "{r:?}");
    assert_eq!(r.services[0].frontends(), "IPv4 tcp");
    assert_eq!(
        r.services[0].backends,
        vec!["10.3.0.53:5353".to_string(), "10.3.0.56:1054".to_string()]
    );
    let tcp2 = set(&[("10.3.0.53", 5353), ("10.3.0.56", 1054)]);
    assert_eq!(
        chosen(&prog, Proto::Tcp, 23000, 64),
        tcp2,
        "the new TCP backend"
    );
    assert_eq!(chosen(&prog, Proto::Udp, 24000, 64), udp, "UDP unchanged");
    // And back.
    let r = endpoints::ebpf(&inst, &dir, &inventory(&[])).unwrap();
    assert_eq!(r.services.len(), 1, "{r:?}");
    assert_eq!(chosen(&prog, Proto::Tcp, 25000, 64), tcp);
    assert_eq!(weir_runtime::ebpf::status(&inst).unwrap().generation, g);
    weir_runtime::ebpf::detach(&inst).unwrap();
    let _ = std::fs::remove_dir_all(&inst.pin_root);
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn iptables_named_target_per_protocol_and_churn() {
    if !weir_runtime::kernel_test::may_run(
        "iptables_named_target_per_protocol_and_churn",
        &["ip", "iptables-restore", "ip6tables-restore", "ipset"],
    ) {
        return;
    }
    let work = weir_runtime::kernel_test::state_dir("named-target-ipt").unwrap();
    let dir = work.join("bundle");
    write_bundle(&dir, Target::Iptables);
    let topo = Topology::new().expect("netns topology");
    let rt = Iptables::new(Options::netns(topo.node.name()).with_state_dir(work.join("state")));
    let b = Bundle::read(&dir).unwrap();
    rt.apply(&b).unwrap();
    // The DNAT targets per protocol, as the kernel has them.
    let out = topo.node.exec("iptables-save", &["-t", "nat"]).unwrap();
    let saved = String::from_utf8_lossy(&out.stdout).to_string();
    let dnat = |proto: &str| dnat_targets(&saved, proto);
    assert_eq!(
        dnat("udp"),
        BTreeSet::from(["10.3.0.53:53".to_string(), "10.3.0.54:1053".to_string()]),
        "{saved}"
    );
    assert_eq!(
        dnat("tcp"),
        BTreeSet::from(["10.3.0.53:5353".to_string()]),
        "{saved}"
    );
    // The TCP replica: only the TCP frontend's chain is rewritten in
    // place (iptables/service_chains.rs); the UDP one keeps its targets.
    let r = endpoints::iptables(&rt, &b, &inventory(&[("dns-d", "10.3.0.56", "1054")])).unwrap();
    assert!(r.needs_recompile.is_empty(), "{r:?}");
    let updated: Vec<String> = r.services.iter().map(|s| s.frontends()).collect();
    assert_eq!(updated, vec!["IPv4 tcp"], "{r:?}");
    assert_eq!(
        r.services[0].backends,
        vec!["10.3.0.53:5353".to_string(), "10.3.0.56:1054".to_string()]
    );
    let out = topo.node.exec("iptables-save", &["-t", "nat"]).unwrap();
    let saved = String::from_utf8_lossy(&out.stdout).to_string();
    let dnat = |proto: &str| dnat_targets(&saved, proto);
    assert_eq!(
        dnat("udp"),
        BTreeSet::from(["10.3.0.53:53".to_string(), "10.3.0.54:1053".to_string()]),
        "{saved}"
    );
    assert_eq!(
        dnat("tcp"),
        BTreeSet::from(["10.3.0.53:5353".to_string(), "10.3.0.56:1054".to_string()]),
        "{saved}"
    );
    rt.detach().unwrap();
    let _ = std::fs::remove_dir_all(&work);
}

/// The DNAT targets (`ADDR:PORT`) of `saved`'s (`iptables-save -t nat`)
/// rules for `proto`.
fn dnat_targets(saved: &str, proto: &str) -> BTreeSet<String> {
    saved
        .lines()
        .filter(|l| l.contains("DNAT") && l.contains(&format!("-p {proto}")))
        .filter_map(|l| l.split("--to-destination ").nth(1))
        .map(|t| t.split_whitespace().next().unwrap().to_string())
        .collect()
}
