//! Checking where a `redirect … to proxy ADDR:PORT` proxy is
//! (docs/language.md §4, "Where the proxy is"): ADDR must be on the node
//! ([`crate::proxy_addr::placement`]), where both back ends deliver to the
//! same socket. Off the node iptables `DNAT`s to ADDR:PORT and forwards
//! the packet to that host while eBPF assigns it to a local socket on
//! PORT: the two back ends would silently disagree, so the rule is
//! refused here, before either runs (E0575; E0576 for an address of one
//! of several declared nodes).
//!
//! Only steering rules are checked: an `expect … redirect to proxy S`
//! line asserts an outcome and is compared with the steering rules' (a
//! wrong one fails as a test).

use super::Cx;
use crate::diagnostics::Kind;
use crate::proxy_addr::{placement, Placement};
use weir_grammar::ast;

impl Cx<'_> {
    /// E0575 / E0576 for every redirect rule whose proxy is not on the
    /// node. Needs the declared nodes ([`Cx::node_model`]).
    pub(super) fn proxy_addresses(&mut self, decls: &[&ast::SteerDecl]) {
        let mut found = Vec::new();
        for d in decls {
            for (i, r) in d.rules.iter().enumerate() {
                let ast::SteerAction::Redirect(s) = &r.action else {
                    continue;
                };
                let (addr, port) = (s.addr.addr, s.port.value);
                let Ok(port) = u16::try_from(port) else {
                    continue; // E0204 already
                };
                let (steer, index, span) = (d.name.name.clone(), i + 1, s.addr.span);
                match placement(addr, &self.node_model) {
                    Placement::HostLocal | Placement::OwnNode(_) => {}
                    Placement::Off => found.push(Kind::ProxyNotOnNode {
                        span,
                        steer,
                        index,
                        addr,
                        port,
                    }),
                    Placement::OneOfNodes(n) => found.push(Kind::ProxyOfOneOfNodes {
                        span,
                        steer,
                        index,
                        addr,
                        port,
                        node: n.name.clone(),
                        node_span: n.span,
                        nodes: self.node_model.len(),
                    }),
                }
            }
        }
        for k in found {
            self.report(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::diagnostics::Code;
    use std::path::PathBuf;

    /// (code, the text its primary span covers) of every diagnostic.
    fn found(src: &str) -> Vec<(Code, String)> {
        let path = PathBuf::from("p.weir");
        let loader = crate::source::MemoryLoader::new().with(&path, src);
        let c = super::super::check_program(std::slice::from_ref(&path), &loader, None);
        c.diagnostics
            .iter()
            .map(|d| {
                let s = d.primary.span;
                (d.code, src[s.start as usize..s.end as usize].to_string())
            })
            .collect()
    }

    const ENDPOINTS: &str = "endpoint web { labels { app: \"web\" } addr 10.1.0.10 }\n";

    fn with_steer(nodes: &str, proxies: &[&str]) -> String {
        let rules: String = proxies
            .iter()
            .map(|p| format!("  redirect tcp 80 from app == \"web\" to proxy {p}\n"))
            .collect();
        format!("{nodes}{ENDPOINTS}steer s {{\n{rules}}}\n")
    }

    #[test]
    fn loopback_unspecified_and_the_only_nodes_addresses_are_on_the_node() {
        let src = with_steer(
            "node n1 { addr 10.0.0.1 addr fd00::1 }\n",
            &[
                "127.0.0.1:15001",
                "127.0.0.2:15001",
                "[::1]:15001",
                "0.0.0.0:15001",
                "[::]:15001",
                "10.0.0.1:15001",
                "[fd00::1]:15001",
            ],
        );
        assert_eq!(found(&src), vec![]);
    }

    #[test]
    fn an_address_on_no_node_is_refused_at_the_address() {
        let src = with_steer(
            "node n1 { addr 10.0.0.1 }\n",
            &[
                "10.0.0.9:15001",
                "[fd00::9]:15001",
                "[::ffff:127.0.0.1]:15001",
            ],
        );
        assert_eq!(
            found(&src),
            vec![
                (Code::E0575, "10.0.0.9".into()),
                (Code::E0575, "fd00::9".into()),
                (Code::E0575, "::ffff:127.0.0.1".into()),
            ]
        );
        // No node at all: only loopback and unspecified are on the node.
        let src = with_steer("", &["10.1.0.10:15001"]);
        assert_eq!(found(&src), vec![(Code::E0575, "10.1.0.10".into())]);
    }

    #[test]
    fn an_address_of_one_of_several_nodes_is_refused() {
        let src = with_steer(
            "node n1 { addr 10.0.0.1 }\nnode n2 { addr 10.0.0.2 }\n",
            &["10.0.0.2:15001", "127.0.0.1:15001"],
        );
        assert_eq!(found(&src), vec![(Code::E0576, "10.0.0.2".into())]);
    }

    #[test]
    fn the_message_names_the_rule_and_both_back_ends() {
        let src = with_steer("", &["127.0.0.1:1", "10.9.9.9:15001"]);
        let path = PathBuf::from("p.weir");
        let loader = crate::source::MemoryLoader::new().with(&path, &src);
        let c = super::super::check_program(std::slice::from_ref(&path), &loader, None);
        let [d] = &c.diagnostics[..] else {
            panic!("{:?}", c.diagnostics)
        };
        assert_eq!(d.code, Code::E0575);
        for want in ["rule #2 of steer `s`", "10.9.9.9:15001", "iptables", "eBPF"] {
            assert!(d.message.contains(want), "{want}: {}", d.message);
        }
        let help = d.help.as_deref().unwrap_or_default();
        assert!(help.contains("loopback") && help.contains("node"), "{help}");
    }
}
