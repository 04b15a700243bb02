//! Every UDP probe of the iptables tables is a new flow: the node's
//! conntrack table holds one entry per probe afterwards. With ports drawn
//! by `bind(…:0)` some probes reused an earlier probe's 5-tuple while its
//! entry lived (30 s), skipped the nat table and the policy, and were
//! counted as the layout's cost (`weir_bench::iptables`'s port sequence).
//! Kernel test: needs root; fails (does not skip) when `CI` is set.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use weir_bench::iptables as ipt;
use weir_compiler::model::Proto;
use weir_runtime::iptables::Variant;

#[test]
fn udp_probes_are_new_flows() {
    if !weir_runtime::kernel_test::may_run(
        "udp_probes_are_new_flows",
        &["ip", "iptables-legacy-restore"],
    ) {
        return;
    }
    let topo = weir_runtime::netns::Topology::new().unwrap();
    let server = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 64, 0, 1)), 8000);
    topo.serve_udp(server.ip(), server.port()).unwrap();
    // A conntrack match makes the node track connections.
    ipt::flush(&topo, Variant::Legacy).unwrap();
    ipt::restore(
        &topo,
        Variant::Legacy,
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A FORWARD -m conntrack --ctstate NEW\nCOMMIT\n",
    )
    .unwrap();
    let client = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    let n = 4_000;
    let (times, failed) = ipt::probe(&topo, Proto::Udp, client, server, n);
    assert_eq!((times.len(), failed), (n, 0));
    let out = topo
        .node
        .exec("cat", &["/proc/sys/net/netfilter/nf_conntrack_count"])
        .unwrap();
    let count: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(count, n, "conntrack entries after {n} probes to one server");
}
