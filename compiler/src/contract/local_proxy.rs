//! `local_proxies`: the redirect proxies that must be on the node the
//! bundle is applied on.
//!
//! The checker allows a `redirect … to proxy ADDR:PORT` whose ADDR is an
//! address of the program's only declared `node` (docs/language.md §4,
//! "Where the proxy is"; [`crate::proxy_addr`]). That is the meaning only
//! on the node that holds ADDR: applied on another host, iptables would
//! `DNAT` the packet to ADDR and forward it there while eBPF would assign
//! it to a socket on the host it runs on — the two back ends disagree
//! again. The compiler cannot know which host the bundle lands on, so it
//! writes these addresses into the manifest and the runtime refuses to
//! apply the bundle on a host that does not hold each of them (E0570,
//! `weir_runtime::proxy_local`). Loopback and unspecified addresses are
//! on every host and are not listed.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::manifest::Location;
use crate::model::{Model, SteerAction};
use crate::proxy_addr::{placement, Placement};
use weir_grammar::Span;

/// One redirect rule whose proxy is an address of the program's node.
/// Fields in sorted key order (the manifest's JSON order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalProxy {
    /// The proxy's address: the host applying the bundle must hold it.
    pub addr: IpAddr,
    /// The rule's position in its steer, from 1.
    pub index: usize,
    /// Where the rule is written (`file:line:column`), when known.
    pub location: Option<Location>,
    /// The declared node the address belongs to.
    pub node: String,
    pub port: u16,
    /// The steer the rule is in.
    pub steer: String,
}

impl std::fmt::Display for LocalProxy {
    /// `redirect rule 2 of steer `mesh` (a.weir:3:5) to proxy 10.0.0.1:15001`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "redirect rule {} of steer `{}`", self.index, self.steer)?;
        if let Some(l) = &self.location {
            write!(f, " ({})", l.at)?;
        }
        let sa = std::net::SocketAddr::new(self.addr, self.port);
        write!(f, " to proxy {sa}")
    }
}

/// Every redirect rule of `model` whose proxy is an address of its only
/// node ([`Placement::OwnNode`]), in steer and rule order; `locate`
/// turns a rule's span into its location.
pub fn of_model(model: &Model, locate: &dyn Fn(Span) -> Option<Location>) -> Vec<LocalProxy> {
    let mut out = Vec::new();
    for s in &model.steers {
        for (i, r) in s.rules.iter().enumerate() {
            let SteerAction::Redirect { addr, port } = r.action else {
                continue;
            };
            if let Placement::OwnNode(n) = placement(addr, &model.nodes) {
                out.push(LocalProxy {
                    addr,
                    index: i + 1,
                    location: locate(r.span),
                    node: n.name.clone(),
                    port,
                    steer: s.name.clone(),
                });
            }
        }
    }
    out
}
