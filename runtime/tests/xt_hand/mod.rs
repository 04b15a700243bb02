//! The hand-written restore text both x_tables oracles load (the loader's,
//! `iptables_xt_oracle`, and the start's decoder's, `iptables_xt_save`):
//! the sets it names, and its nat, mangle and raw blocks, which use every
//! extension of those tables the loader writes. Each oracle adds its own
//! filter blocks in front. Included by the tests that use it.
#![allow(dead_code)]

use std::path::Path;

use weir_runtime::iptables::xt::XtMode;
use weir_runtime::iptables::{Iptables, Options, Variant};

/// The runtime both oracles' end-to-end tests drive: the legacy tools in
/// namespace `ns`, its state under `work`, the x_tables route `mode`.
pub fn runtime(ns: &str, work: &Path, mode: XtMode) -> Iptables {
    Iptables::new(
        Options::netns(ns)
            .with_state_dir(work.join("state"))
            .with_variant(Variant::Legacy)
            .with_xtables(mode),
    )
}

/// Their one-chain filter text: a set rule, `extra`, then `DROP`.
pub fn set_filter(extra: &str) -> String {
    format!(
        "*filter\n:WEIR-FWD - [0:0]\n-A WEIR-FWD -m set --match-set weir-a src -p tcp -m tcp --dport 80 -j ACCEPT\n{extra}-A WEIR-FWD -j DROP\nCOMMIT\n"
    )
}

/// The sets the hand-written text names.
pub const SETS: &str = "create xa hash:ip family inet\nadd xa 10.0.0.1\ncreate xb hash:net family inet\ncreate xc hash:ip,port family inet\ncreate xs hash:net family inet skbinfo\n";

/// The nat block (the mangle and raw ones: [`mangle_raw`]).
const NAT: &str = r#"*nat
:WEIR1-N - [0:0]
:WEIR1-N2 - [0:0]
-A WEIR1-N -m statistic --mode random --probability 0.3333333333 -p tcp -m comment --comment "b0" -j DNAT --to-destination 10.7.0.1:8000
-A WEIR1-N -m statistic --mode random ! --probability 0.5000000000 -p udp -j DNAT --to-destination 10.7.0.2:53
-A WEIR1-N -j DNAT --to-destination 10.7.0.3
-A WEIR1-N -m recent --name weir-aff1 --set --rsource -m comment --comment "aff"
-A WEIR1-N -m recent --name weir-aff1 --rcheck --seconds 10800 --reap --rsource -g WEIR1-N2
-A WEIR1-N -m recent ! --update --seconds 5 --rdest
-A WEIR1-N -m recent --remove
-A WEIR1-N -m iprange --src-range 10.0.0.1-10.0.0.9 ! --dst-range 10.1.0.0-10.1.255.255 -j RETURN
-A WEIR1-N -m iprange --dst-range 10.2.0.1 -j RETURN
-A WEIR1-N -m mark --mark 0x4000/0x4000 -j RETURN
-A WEIR1-N -m mark ! --mark 7 -j RETURN
-A WEIR1-N2 -j RETURN
-A WEIR1-N2 -p tcp -j REDIRECT --to-ports 15001
-A WEIR1-N2 -p udp -j REDIRECT --to-ports 1000-2000
-A WEIR1-N2 -j REDIRECT
-I PREROUTING 1 -j WEIR1-N
COMMIT
"#;

/// The mangle and raw blocks, the same in both families: every
/// extension of those tables the loader writes, the `SET --map-set`
/// rules naming the skbinfo set `set` (of the text's family).
fn mangle_raw(set: &str) -> String {
    format!(
        r#"*mangle
:WEIR1-M - [0:0]
-A WEIR1-M -j MARK --set-xmark 0x4000/0x4000
-A WEIR1-M -j MARK --set-xmark 0x10
-A WEIR1-M -j MARK --set-mark 0x1/0x3
-A WEIR1-M -m conntrack --ctstate NEW -j DSCP --set-dscp 46
-A WEIR1-M -j DSCP --set-dscp 0x0a
-A WEIR1-M -j SET --map-set {set} src --map-mark
-A WEIR1-M -j SET --map-set {set} dst --map-mark
-I POSTROUTING 1 -j WEIR1-M
COMMIT
*raw
:WEIR1-R - [0:0]
-A WEIR1-R -p udp -m udp --dport 53 -j ACCEPT
-A WEIR1-R -m comment --comment "weir:bypass" -j CT --notrack
-I PREROUTING 1 -j WEIR1-R
COMMIT
"#
    )
}

/// An oracle's filter blocks, then the nat, mangle and raw blocks.
pub fn text(filter: &str) -> String {
    format!("{filter}{NAT}{}", mangle_raw("xs"))
}

/// The IPv6 sets the hand-written IPv6 text names (and an IPv4 one,
/// `xv4`, that no IPv6 rule may name).
pub const SETS6: &str = "create ya hash:ip family inet6\nadd ya fd00::1\ncreate yb hash:net family inet6\ncreate yc hash:ip,port family inet6\ncreate xv4 hash:ip family inet\ncreate ys hash:net family inet6 skbinfo\n";

/// The hand-written IPv6 text's filter and nat blocks ([`text6`] adds
/// the mangle and raw ones): every extension the loader writes for IPv6 (icmp6 with and without codes, each REJECT
/// code, DNAT with `[ADDR]:PORT`, IPv6 iprange and recent masks), every
/// shape of IPv6 address `inet_ntop` prints differently (embedded IPv4,
/// runs of zeros, a mask that is no prefix), the `-p` spellings, and the
/// runtime's `-I`/`-D`/`-X` lines.
const FILTER_NAT6: &str = r#"*filter
:WEIR1-A - [0:0]
:WEIR1-B - [0:0]
:WEIR1-Z - [0:0]
:WEIR-HOOK-FORWARD - [0:0]
-A WEIR1-A -s fd00:1:2::3/48 -d fd00:9::/ffff:ffff:0:ffff:: -j ACCEPT
-A WEIR1-A ! -s fd00::1 ! -d fd00::2/128 -p udp -m udp --sport 53 ! --dport 1000:2000 -j DROP
-A WEIR1-A -s ::1.2.3.4 -d ::ffff:10.0.0.1/128 -i eth0 -o veth+ -p 50 -j RETURN
-A WEIR1-A -s 2001:db8:0:1::/64 -d 2001:db8::1:0:0:1 -j RETURN
-A WEIR1-A -s 1:0:0:1:0:0:1:1 -d ::/0 -j RETURN
-A WEIR1-A ! -s ::/0 -d 0:0:1::2/48 -j RETURN
-A WEIR1-A ! -i lo ! -o eth1 ! -p tcp -m comment --comment "a b: c" -g WEIR1-B
-A WEIR1-A -p tcp -m tcp --dport 80 -m comment --comment "weir:3" -g WEIR1-B
-A WEIR1-A -p udp --dport 53 -m set --match-set ya src -j ACCEPT
-A WEIR1-A -p tcp -m tcp ! --sport 1024: --dport :99 -j WEIR1-Z
-A WEIR1-A -p sctp -m set --match-set ya src -m comment --comment "x" -j RETURN
-A WEIR1-A -m set ! --match-set yb dst -j ACCEPT
-A WEIR1-A -m set --match-set yc src,dst -j ACCEPT
-A WEIR1-A -m set --match-set yc dst,src -j ACCEPT
-A WEIR1-A -m comment --comment "ev" -m limit --limit 5/sec --limit-burst 10 -j NFLOG --nflog-group 7 --nflog-prefix "weir-ev 1"
-A WEIR1-A -m limit --limit 3/min -j NFLOG --nflog-group 1 --nflog-size 128 --nflog-threshold 2
-A WEIR1-A -m limit -j NFLOG
-A WEIR1-A -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT
-A WEIR1-A -p ipv6-icmp -m icmp6 ! --icmpv6-type 1/4 -j DROP
-A WEIR1-A -p icmpv6 --icmpv6-type 255/255 -j DROP
-A WEIR1-A -p ipv6-icmp --icmpv6-type 3/0 -j DROP
-A WEIR1-A -p 58 -m icmp6 --icmpv6-type 2 -j DROP
-A WEIR1-A -p icmp -j DROP
-A WEIR1-A -p all -j DROP
-A WEIR1-A -p tcp -m multiport --dports 80,8081:8099,443 -m comment --comment "m" -g WEIR1-B
-A WEIR1-A -p udp -m multiport ! --sports 53,5353 -j DROP
-A WEIR1-A -p sctp -m sctp --dport 80 -j ACCEPT
-A WEIR1-A -p sctp -m sctp ! --sport 1000:2000 --dport 5:6 -j DROP
-A WEIR1-A -p sctp --dport 7 -j DROP
-A WEIR1-A -p sctp -m sctp ! --dport 0:65535 -j DROP
-A WEIR1-A -m conntrack --ctstate INVALID -j DROP
-A WEIR1-A -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A WEIR1-A -m conntrack ! --ctstate NEW -j ACCEPT
-A WEIR1-A -m comment --comment "count"
-A WEIR1-A
-A WEIR1-B -j DROP
-A WEIR1-B -p tcp -j REJECT --reject-with tcp-reset
-A WEIR1-B -j REJECT --reject-with icmp6-adm-prohibited
-A WEIR1-B -j REJECT --reject-with icmp6-no-route
-A WEIR1-B -j REJECT --reject-with addr-unreach
-A WEIR1-B -j REJECT --reject-with icmp6-policy-fail
-A WEIR1-B -j REJECT --reject-with icmp6-reject-route
-A WEIR1-B -j REJECT --reject-with icmp6-port-unreachable
-A WEIR1-B -j REJECT
-A WEIR1-Z -p 136 -j RETURN
-A WEIR-HOOK-FORWARD -j WEIR1-A
-I FORWARD 1 -j WEIR-HOOK-FORWARD
-A FORWARD -s fd09::/16 -j WEIR1-Z
-A FORWARD -s fd0a::/16 -j WEIR1-Z
COMMIT
*filter
:WEIR1-Y - [0:0]
-D FORWARD -j WEIR-HOOK-FORWARD
-I FORWARD 1 -j WEIR-HOOK-FORWARD
-A WEIR1-A -j WEIR1-Y
-D WEIR1-A -j WEIR1-Y
-D FORWARD -s fd09::/16 -j WEIR1-Z
-X WEIR1-Y
COMMIT
*nat
:WEIR1-N - [0:0]
:WEIR1-N2 - [0:0]
-A WEIR1-N -m statistic --mode random --probability 0.3333333333 -p tcp -m comment --comment "b0" -j DNAT --to-destination [fd07::1]:8000
-A WEIR1-N -m statistic --mode random ! --probability 0.5000000000 -p udp -j DNAT --to-destination [fd07::2]:53
-A WEIR1-N -j DNAT --to-destination fd07::3
-A WEIR1-N -m recent --name weir-aff1 --set --rsource -m comment --comment "aff"
-A WEIR1-N -m recent --name weir-aff1 --rcheck --seconds 10800 --reap --rsource -g WEIR1-N2
-A WEIR1-N -m recent ! --update --seconds 5 --rdest
-A WEIR1-N -m recent --remove
-A WEIR1-N -m iprange --src-range fd00::1-fd00::9 ! --dst-range fd01::-fd01::ffff:ffff -j RETURN
-A WEIR1-N -m iprange --dst-range fd02::1 -j RETURN
-A WEIR1-N -m mark --mark 0x4000/0x4000 -j RETURN
-A WEIR1-N -m mark ! --mark 7 -j RETURN
-A WEIR1-N -d fd00:96::20/128 -p tcp -m tcp --dport 8080 -g WEIR1-N2
-A WEIR1-N2 -j RETURN
-A WEIR1-N2 -p tcp -j REDIRECT --to-ports 15001
-A WEIR1-N2 -p udp -j REDIRECT --to-ports 1000-2000
-A WEIR1-N2 -j REDIRECT
-I PREROUTING 1 -j WEIR1-N
COMMIT
"#;

/// The hand-written IPv6 text: its filter and nat blocks, then the mangle
/// and raw ones.
pub fn text6() -> String {
    format!("{FILTER_NAT6}{}", mangle_raw("ys"))
}

/// `rt.apply(b)` on a thread of its own, so that a deadlock (a tool
/// waiting for the xtables lock this process holds) fails the test
/// rather than hanging it; the runtime comes back for its exec log.
pub fn apply_or_deadlock(
    rt: weir_runtime::iptables::Iptables,
    b: weir_runtime::bundle::Bundle,
) -> (
    weir_runtime::iptables::Iptables,
    Result<weir_runtime::iptables::ApplyReport, String>,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = rt.apply(&b).map_err(|e| e.to_string());
        let _ = tx.send((rt, r));
    });
    rx.recv_timeout(std::time::Duration::from_secs(120))
        .expect("the apply did not return: a tool waits for the xtables lock we hold")
}
