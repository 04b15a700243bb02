//! The hand-written restore text both x_tables oracles load (the loader's,
//! `iptables_xt_oracle`, and the start's decoder's, `iptables_xt_save`):
//! the sets it names, and its nat, mangle and raw blocks, which use every
//! extension of those tables the loader writes. Each oracle adds its own
//! filter blocks in front. Included by the tests that use it.
#![allow(dead_code)]

/// The sets the hand-written text names.
pub const SETS: &str = "create xa hash:ip family inet\nadd xa 10.0.0.1\ncreate xb hash:net family inet\ncreate xc hash:ip,port family inet\n";

/// The nat, mangle and raw blocks.
pub const OTHER_TABLES: &str = r#"*nat
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
*mangle
:WEIR1-M - [0:0]
-A WEIR1-M -j MARK --set-xmark 0x4000/0x4000
-A WEIR1-M -j MARK --set-xmark 0x10
-A WEIR1-M -j MARK --set-mark 0x1/0x3
-I POSTROUTING 1 -j WEIR1-M
COMMIT
*raw
:WEIR1-R - [0:0]
-A WEIR1-R -p udp -m udp --dport 53 -j ACCEPT
-I PREROUTING 1 -j WEIR1-R
COMMIT
"#;

/// An oracle's filter blocks, then [`OTHER_TABLES`].
pub fn text(filter: &str) -> String {
    format!("{filter}{OTHER_TABLES}")
}
