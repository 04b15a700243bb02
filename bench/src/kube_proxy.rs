//! kube-proxy's iptables layout of a model's services: the baseline the
//! iptables services table compares weir with.
//!
//! Two variants, both as `iptables-restore` text:
//!
//! - [`Layout::Installed`]: what kube-proxy (iptables mode, current
//!   releases) installs for these services with a cluster CIDR configured
//!   (the normal case; [`CLUSTER_CIDR`]), followed from
//!   `kubernetes/kubernetes` `pkg/proxy/iptables/proxier.go`
//!   (`iptablesJumpChains`, `syncProxyRules`) and the rule text its
//!   `proxier_test.go` expects:
//!   - filter: `INPUT`, `FORWARD` and `OUTPUT` jump to `KUBE-PROXY-FIREWALL`
//!     / `KUBE-NODEPORTS` / `KUBE-EXTERNAL-SERVICES` / `KUBE-SERVICES`
//!     (`--ctstate NEW` where kube-proxy puts it); `KUBE-FORWARD` with its
//!     three rules (`INVALID` drop, masquerade-mark accept,
//!     `RELATED,ESTABLISHED` accept). The chains it fills only for
//!     firewalled, externally visible or endpoint-less services stay empty:
//!     the model has none.
//!   - nat: `PREROUTING` and `OUTPUT` → `KUBE-SERVICES`, `POSTROUTING` →
//!     `KUBE-POSTROUTING` (unmarked `RETURN`, clear the mark, `MASQUERADE
//!     --random-fully`); `KUBE-MARK-MASQ` (`--or-mark 0x4000`); per service
//!     a `KUBE-SERVICES` rule, then in `KUBE-SVC-i` first `! -s
//!     <clusterCIDR> -d VIP -p P --dport N -j KUBE-MARK-MASQ` (the
//!     `LocalDetector`'s off-cluster test), then the `-m statistic` choice;
//!     per endpoint `KUBE-SEP-i-j` with the hairpin `-s podIP -j
//!     KUBE-MARK-MASQ` before the DNAT; `KUBE-SERVICES` ends with the
//!     `addrtype LOCAL` jump to (empty) `KUBE-NODEPORTS`.
//!   - comments: every portal, masquerade, choice and endpoint rule starts
//!     with its `-m comment`, as proxier.go writes it and `proxier_test.go`
//!     expects it (`-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80
//!     cluster IP" -m tcp -p tcp -d … --dport 80 -j KUBE-SVC-…`, `-A
//!     KUBE-SVC-… -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m
//!     statistic …`, `-A KUBE-SEP-… -m comment --comment ns1/svc1:p80 -m
//!     tcp -p tcp -j DNAT …`); above [`LARGE_CLUSTER_ENDPOINTS`]
//!     endpoints (`largeClusterMode`) the choice and endpoint rules go
//!     without. A comment is a match the kernel calls whenever the rule's
//!     address test passes (~22 ns a call on the bench VM, session 16), so
//!     the layout without them (sessions 12–15) was cheaper per flow than
//!     what kube-proxy installs.
//!
//!   The bench's client (198.18.0.1) is outside the cluster CIDR, so its
//!   service flows are marked and masqueraded to the node's server-side
//!   address, as kube-proxy does to any off-cluster client: the reply comes
//!   back to the node, which un-NATs it (the probes would fail otherwise,
//!   and the bench counts failures). `--nfacct-name` on the `INVALID` drop
//!   (newer releases, when the kernel has nfacct) is left out: it counts,
//!   and does not change which packets the rule matches.
//! - [`Layout::NatOnly`]: the nat dispatch alone (`KUBE-SERVICES` →
//!   `KUBE-SVC-i` → `KUBE-SEP-i-j`, no masquerade marking, no filter
//!   rules): the layout the bench compared with before session 12, kept as
//!   a lower bound of kube-proxy's per-flow work.

use std::fmt::Write;

use weir_compiler::model::{Model, Proto};

use crate::iptables::resolved_services;

/// The cluster CIDR the installed layout is configured with: covers the
/// synthetic models' pod addresses (consecutive from 10.64.0.1,
/// `weir_compiler::synth`), not their service VIPs (10.96.0.0/16) nor the
/// bench's clients (198.18.0.0/24).
pub const CLUSTER_CIDR: &str = "10.64.0.0/12";

/// Whether `addr` is inside [`CLUSTER_CIDR`] (kube-proxy as installed
/// masquerades service flows from addresses outside it).
pub fn in_cluster(addr: std::net::IpAddr) -> bool {
    match addr {
        std::net::IpAddr::V4(v) => {
            u32::from(v) >> 20 == u32::from(std::net::Ipv4Addr::new(10, 64, 0, 0)) >> 20
        }
        std::net::IpAddr::V6(_) => false,
    }
}

/// Which kube-proxy layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// What kube-proxy installs (filter and nat, masquerade marking).
    Installed,
    /// The nat dispatch chains only.
    NatOnly,
}

/// kube-proxy's filter chains (`proxier.go`'s `iptablesJumpChains` and
/// `KUBE-FORWARD`), declared in the filter table.
pub const FILTER_CHAINS: &str = ":KUBE-EXTERNAL-SERVICES - [0:0]\n:KUBE-FORWARD - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-PROXY-FIREWALL - [0:0]\n:KUBE-SERVICES - [0:0]\n";

/// kube-proxy's filter rules on the forwarding path: the `FORWARD` jumps
/// and the three `KUBE-FORWARD` rules, in kube-proxy's order.
pub const FORWARD_RULES: &str = "-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n\
-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n\
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n\
-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT\n\
-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n";

/// kube-proxy's filter `INPUT` and `OUTPUT` jumps (not on the forwarding
/// path; installed all the same).
const LOCAL_RULES: &str = "-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
-A INPUT -m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS\n\
-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n\
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n";

/// kube-proxy's nat rules that do not depend on the services.
const NAT_FIXED_RULES: &str = "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n\
-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n\
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n";

/// proxier.go's `largeClusterEndpointsThreshold`: with more endpoints
/// than this, kube-proxy writes no comment on the per-endpoint rules.
pub const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

fn pname(p: Proto) -> &'static str {
    match p {
        Proto::Udp => "udp",
        Proto::Sctp => "sctp",
        _ => "tcp",
    }
}

/// The number of `-A` rules of an `iptables-restore` text.
fn count(text: &str) -> usize {
    text.lines().filter(|l| l.starts_with("-A ")).count()
}

/// kube-proxy's layout of `model`'s services as `iptables-restore` text
/// (full tables: nat, and filter for [`Layout::Installed`]; each replaces
/// whatever the table had) and its number of rules.
pub fn rules(model: &Model, layout: Layout) -> (String, usize) {
    let installed = layout == Layout::Installed;
    let mut chains = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n",
    );
    let mut rules = String::new();
    if installed {
        chains.push_str(
            ":KUBE-MARK-MASQ - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-POSTROUTING - [0:0]\n",
        );
        rules.push_str(NAT_FIXED_RULES);
    } else {
        rules.push_str(
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
        );
    }
    let services = resolved_services(model);
    let endpoints: usize = services.iter().map(|s| s.3.len()).sum();
    // proxier.go's `largeClusterMode`: above this many endpoints it drops
    // the comments of the `KUBE-SVC` choice and `KUBE-SEP` rules
    // (`appendServiceCommentLocked`); the portal and masquerade rules keep
    // theirs.
    let endpoint_comments = endpoints <= LARGE_CLUSTER_ENDPOINTS;
    for (i, (vip, port, proto, backends)) in services.iter().enumerate() {
        let p = pname(*proto);
        let svc = format!("KUBE-SVC-{i}");
        let name = format!("bench/svc-{i}:p{port}");
        let _ = writeln!(chains, ":{svc} - [0:0]");
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -m comment --comment \"{name} cluster IP\" -m {p} -p {p} -d {vip} --dport {port} -j {svc}"
        );
        if installed {
            let _ = writeln!(
                rules,
                "-A {svc} -m comment --comment \"{name} cluster IP\" -m {p} -p {p} -d {vip} --dport {port} ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ"
            );
        }
        let k = backends.len();
        for (j, (addr, bport)) in backends.iter().enumerate() {
            let sep = format!("KUBE-SEP-{i}-{j}");
            let _ = writeln!(chains, ":{sep} - [0:0]");
            let choice = match endpoint_comments {
                true => format!("-m comment --comment \"{name} -> {addr}:{bport}\" "),
                false => String::new(),
            };
            let cmt = match endpoint_comments {
                true => format!("-m comment --comment {name} "),
                false => String::new(),
            };
            if j + 1 < k {
                let _ = writeln!(
                    rules,
                    "-A {svc} {choice}-m statistic --mode random --probability {:.10} -j {sep}",
                    1.0 / (k - j) as f64
                );
            } else {
                let _ = writeln!(rules, "-A {svc} {choice}-j {sep}");
            }
            if installed {
                let _ = writeln!(rules, "-A {sep} {cmt}-s {addr} -j KUBE-MARK-MASQ");
            }
            let _ = writeln!(
                rules,
                "-A {sep} {cmt}-m {p} -p {p} -j DNAT --to-destination {addr}:{bport}"
            );
        }
    }
    if installed {
        rules.push_str("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n");
    }
    let mut text = format!("{chains}{rules}COMMIT\n");
    if installed {
        let _ = write!(
            text,
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n{FILTER_CHAINS}{LOCAL_RULES}{FORWARD_RULES}COMMIT\n"
        );
    }
    let n = count(&text);
    (text, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        let params = crate::Plan::new(true, 9).services_params(10, 9);
        weir_compiler::synth::model(&params)
    }

    #[test]
    fn nat_only_is_the_dispatch_alone() {
        let (text, n) = rules(&model(), Layout::NatOnly);
        assert!(!text.contains("*filter"));
        assert!(!text.contains("KUBE-MARK-MASQ"));
        // One portal jump, a rule per service, two per backend.
        let svcs = resolved_services(&model());
        let backends: usize = svcs.iter().map(|s| s.3.len()).sum();
        assert_eq!(n, 1 + svcs.len() + 2 * backends);
    }

    #[test]
    fn installed_marks_off_cluster_sources_and_has_the_forward_rules() {
        let m = model();
        let (text, n) = rules(&m, Layout::Installed);
        let svcs = resolved_services(&m);
        let backends: usize = svcs.iter().map(|s| s.3.len()).sum();
        // Fixed nat 7 + nodeports jump; per service portal + mark; per
        // backend choice + hairpin + DNAT; filter 5 local + 7 forward.
        assert_eq!(n, 8 + 2 * svcs.len() + 3 * backends + 12);
        assert!(text.contains(" ! -s 10.64.0.0/12 -j KUBE-MARK-MASQ\n"));
        assert!(text.contains("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n"));
        assert!(text.contains("-j MASQUERADE --random-fully\n"));
        // Every backend address is inside the cluster CIDR (the hairpin
        // test's premise); the VIPs and the bench client are not.
        let inside = in_cluster;
        for s in &svcs {
            assert!(!inside(s.0), "{}", s.0);
            for (a, _) in &s.3 {
                assert!(inside(*a), "{a}");
            }
        }
        assert!(!inside(crate::flows::CLIENT.into()));
        // The pod client is inside (kube-proxy does not masquerade it).
        assert!(inside(crate::flows::POD_CLIENT.into()));
    }

    /// The rules of one service have the words, comments included, in the
    /// order of the text `proxier_test.go` expects of kube-proxy (its
    /// `ns1/svc1:p80` service there, the bench's names here).
    #[test]
    fn rules_read_as_kube_proxy_writes_them() {
        let m = model();
        let (text, _) = rules(&m, Layout::Installed);
        let svcs = resolved_services(&m);
        let (vip, port, proto, backends) = &svcs[0];
        let p = pname(*proto);
        let name = format!("bench/svc-0:p{port}");
        let (a0, b0) = backends[0];
        let (al, bl) = backends[backends.len() - 1];
        for line in [
            format!("-A KUBE-SERVICES -m comment --comment \"{name} cluster IP\" -m {p} -p {p} -d {vip} --dport {port} -j KUBE-SVC-0"),
            format!("-A KUBE-SVC-0 -m comment --comment \"{name} cluster IP\" -m {p} -p {p} -d {vip} --dport {port} ! -s 10.64.0.0/12 -j KUBE-MARK-MASQ"),
            format!("-A KUBE-SVC-0 -m comment --comment \"{name} -> {a0}:{b0}\" -m statistic --mode random --probability 0.2000000000 -j KUBE-SEP-0-0"),
            format!("-A KUBE-SVC-0 -m comment --comment \"{name} -> {al}:{bl}\" -j KUBE-SEP-0-4"),
            format!("-A KUBE-SEP-0-0 -m comment --comment {name} -s {a0} -j KUBE-MARK-MASQ"),
            format!("-A KUBE-SEP-0-0 -m comment --comment {name} -m {p} -p {p} -j DNAT --to-destination {a0}:{b0}"),
        ] {
            assert!(text.contains(&format!("{line}\n")), "missing: {line}");
        }
    }

    /// Above 1,000 endpoints kube-proxy leaves the comments off the
    /// per-endpoint rules, not off the portals and masquerade rules.
    #[test]
    fn large_clusters_lose_the_endpoint_comments_only() {
        let params = crate::Plan::new(true, 9).services_params(1000, 9);
        let m = weir_compiler::synth::model(&params);
        let svcs = resolved_services(&m);
        assert!(svcs.iter().map(|s| s.3.len()).sum::<usize>() > LARGE_CLUSTER_ENDPOINTS);
        let (text, _) = rules(&m, Layout::Installed);
        for l in text.lines().filter(|l| l.starts_with("-A KUBE-SEP-")) {
            assert!(!l.contains("-m comment"), "{l}");
        }
        for l in text.lines().filter(|l| l.starts_with("-A KUBE-SVC-")) {
            assert_eq!(
                l.contains("-m comment"),
                l.contains("KUBE-MARK-MASQ"),
                "{l}"
            );
        }
        let portals = text
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SERVICES -m comment --comment \"bench/"));
        assert_eq!(portals.count(), svcs.len());
    }

    /// The pod client is no endpoint, and weir's interpreter decides its
    /// service flows as it decides the off-cluster client's: the pod row
    /// compares kube-proxy's unmasqueraded path with the same weir work.
    #[test]
    fn pod_client_gets_the_off_cluster_clients_verdicts() {
        use crate::flows::{is_endpoint, same_service_verdicts, CLIENT, POD_CLIENT};
        let m = model();
        assert!(!is_endpoint(&m, POD_CLIENT.into()));
        let (same, total) = same_service_verdicts(&m, Proto::Udp, POD_CLIENT.into(), CLIENT.into());
        assert!(total > 0);
        assert_eq!(same, total);
    }
}
