//! Where a `redirect … to proxy ADDR:PORT` proxy is (docs/language.md §4,
//! "Where the proxy is"): the one statement of which proxy addresses are
//! *on the node*, so that both back ends deliver to the same socket.
//!
//! The back ends carry a redirect out differently: iptables `REDIRECT`s
//! to the port when ADDR is loopback or unspecified (or of the other
//! family than the connection) and `DNAT`s to ADDR:PORT otherwise; eBPF
//! assigns the packet to the socket `bpf_sk_lookup_*` finds for ADDR:PORT
//! on the node it runs on. They agree only where ADDR is on that node:
//! loopback and unspecified addresses (both reach the wildcard listener
//! on PORT) and the address of the node the program is for (both reach
//! the socket bound to ADDR:PORT, or the wildcard listener). A program
//! does not say which of several declared nodes it is for, so a node's
//! address counts only when the program declares that node alone.
//! Anything else is refused by the checker (check/proxy_addr.rs, E0575 /
//! E0576) rather than given one back end's meaning.

use crate::model::Node;
use std::net::IpAddr;

/// Loopback (`127.0.0.0/8`, `::1`) or unspecified (`0.0.0.0`, `::`): an
/// address that is on every node, where iptables `REDIRECT`s to the port.
/// An IPv4-mapped IPv6 address is neither.
pub fn is_host_local(a: IpAddr) -> bool {
    a.is_loopback() || a.is_unspecified()
}

/// Where a proxy address is, for the program's declared `nodes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement<'m> {
    /// Loopback or unspecified ([`is_host_local`]).
    HostLocal,
    /// An address of the program's only declared node.
    OwnNode(&'m Node),
    /// An address of `node`, one of several declared nodes: which one
    /// the program is for is unknown.
    OneOfNodes(&'m Node),
    /// On no node: no declared node has it.
    Off,
}

impl Placement<'_> {
    /// Both back ends deliver to the same socket on the node.
    pub fn on_node(self) -> bool {
        matches!(self, Placement::HostLocal | Placement::OwnNode(_))
    }
}

/// Where the proxy address `addr` is.
pub fn placement(addr: IpAddr, nodes: &[Node]) -> Placement<'_> {
    if is_host_local(addr) {
        return Placement::HostLocal;
    }
    match nodes.iter().find(|n| n.addrs.contains(&addr)) {
        Some(n) if nodes.len() == 1 => Placement::OwnNode(n),
        Some(n) => Placement::OneOfNodes(n),
        None => Placement::Off,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, addrs: &[&str]) -> Node {
        Node {
            name: name.into(),
            labels: Default::default(),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            span: None,
        }
    }

    fn at<'m>(a: &str, nodes: &'m [Node]) -> Placement<'m> {
        placement(a.parse().unwrap(), nodes)
    }

    #[test]
    fn loopback_and_unspecified_are_on_every_node() {
        for a in ["127.0.0.1", "127.1.2.3", "0.0.0.0", "::1", "::"] {
            assert_eq!(at(a, &[]), Placement::HostLocal, "{a}");
        }
        // Mapped and other special addresses are not.
        for a in ["::ffff:127.0.0.1", "169.254.0.1", "fe80::1", "10.0.0.1"] {
            assert_eq!(at(a, &[]), Placement::Off, "{a}");
        }
    }

    #[test]
    fn a_node_address_counts_only_for_the_only_node() {
        let one = [node("n1", &["10.0.0.1", "fd00::1"])];
        assert!(matches!(at("fd00::1", &one), Placement::OwnNode(n) if n.name == "n1"));
        assert!(at("10.0.0.1", &one).on_node());
        assert_eq!(at("10.0.0.2", &one), Placement::Off);
        let two = [node("n1", &["10.0.0.1"]), node("n2", &["10.0.0.2"])];
        assert!(matches!(at("10.0.0.2", &two), Placement::OneOfNodes(n) if n.name == "n2"));
        assert!(!at("10.0.0.2", &two).on_node());
        assert!(at("127.0.0.1", &two).on_node());
    }
}
