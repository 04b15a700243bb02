//! One rule per pod, each naming one peer pod: the shape of generated
//! policies (one policy per workload, allowing exactly its clients) at
//! scale, for the tests and the benchmark of issue 21.
//!
//! Pod `i` (address [`super::endpoint_addr`]`(i)`, label `app: "p<i>"`)
//! is the subject of policy `r<i>`, whose one ingress rule is `allow tcp
//! 80 from app == "p<i+1>"` (the last pod's peer is pod 0). Every pod is
//! its own address class and every rule its own atom, so the ingress
//! entry is one class table with a branch per pod: what used to be one
//! block too large for a stage (E0510) at 10,000 pods.

use super::{endpoint_addr, span};
use crate::model::{
    Action, DefaultDeny, Endpoint, Model, PeerMatch, Policy, PortRange, Proto, ProtoMatch, Rule,
    Sel, Tier,
};
use std::collections::BTreeMap;

/// The port every rule allows.
pub const PORT: u16 = 80;

/// The peer pod rule `i` allows.
pub fn peer(pods: usize, i: usize) -> usize {
    (i + 1) % pods.max(1)
}

/// `pods` pods and one one-peer rule per pod.
pub fn model(pods: usize) -> Model {
    let app = |i: usize| Sel::Eq("app".into(), format!("p{i}"));
    let endpoints = (0..pods)
        .map(|i| Endpoint {
            name: format!("p{i}"),
            labels: BTreeMap::from([("app".to_string(), format!("p{i}"))]).into(),
            addrs: vec![endpoint_addr(i)],
            ready: true,
            span: None,
        })
        .collect();
    let mut policies: Vec<Policy> = (0..pods)
        .map(|i| Policy {
            name: format!("r{i}"),
            tier: 0,
            priority: 100,
            applies_to: app(i),
            ingress: Some(vec![Rule {
                action: Action::Allow,
                proto: ProtoMatch::Ports {
                    proto: Proto::Tcp,
                    ports: vec![PortRange { lo: PORT, hi: PORT }],
                },
                peer: PeerMatch::Selector(app(peer(pods, i))),
                log: false,
                span: span(2 * i + 11),
            }]),
            egress: None,
            audit: false,
            span: span(2 * i + 10),
            name_span: span(2 * i + 10),
        })
        .collect();
    policies.sort_by(|a, b| a.name.cmp(&b.name));
    Model {
        tiers: vec![Tier {
            name: "default".into(),
            order: 1000,
            audit: false,
            default_pass: false,
            span: None,
        }],
        policies,
        endpoints,
        services: Vec::new(),
        steers: Vec::new(),
        default_deny: DefaultDeny::default(),
        tests: Vec::new(),
        named_selectors: BTreeMap::new(),
        named_sets: BTreeMap::new(),
        nodes: Vec::new(),
        namespaces: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use crate::ebpf::codegen::{generate, Options};
    use crate::graph;

    /// 10,000 one-peer rules: refused before (E0510, one 14,096-
    /// instruction, 12,047-branch table block); now the table is a
    /// search over groups, each its own block, split across stages.
    #[test]
    fn ten_thousand_one_peer_rules_compile_for_ebpf() {
        let model = super::model(10_000);
        let g = graph::build(&model);
        let out =
            generate(&model, &g, &Options::default()).unwrap_or_else(|e| panic!("refused: {e:?}"));
        assert!(out.manifest.programs.len() > 1, "expected several stages");
        assert!(out.manifest.max_tail_calls <= crate::ebpf::codegen::MAX_TAIL_CALLS);
        assert!(
            out.listing.contains("group 9: intervals from 9216"),
            "expected the 10,000-branch table searched in groups"
        );
    }
}
