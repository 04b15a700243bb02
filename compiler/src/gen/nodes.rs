//! The generator's nodes: sometimes two or three declared nodes, the
//! endpoints placed on them (the `node` attribute, a label:
//! [`crate::nodes`]) and rules whose peer is `node` (the subject's node).
//!
//! Applied after [`super::peers::sprinkle`] with a generator of its own,
//! so a seed's model differs from before only by these constructs;
//! [`node_packets`] aims packets between endpoints and node addresses,
//! which the random draws never pick. Most nodes are dual stack (an
//! IPv6 address beside the IPv4 one, as a dual-stack cluster's Nodes
//! have), so IPv6 `node` peers are decided too; and sometimes a
//! host-network endpoint (no address of its own: judged as its node's)
//! sits on a node.

use super::{v4, v6, Rng};
use crate::interp::Packet;
use crate::model::{Model, Node, PeerMatch};
use std::collections::BTreeMap;

/// Sometimes: nodes at 10.0.3.N (and, three times in four, fd00::3:N),
/// endpoints on them (some on none), a host-network endpoint, and rules
/// whose peer becomes `node`.
pub fn sprinkle(m: &mut Model, seed: u64) {
    let mut rng = Rng::new(seed ^ 0x90DE_5EED);
    if !rng.chance(70) {
        return;
    }
    let n = 2 + rng.below(2);
    let dual = rng.chance(75);
    m.nodes = (0..n)
        .map(|i| Node {
            name: format!("n{i}"),
            labels: BTreeMap::from([("zone".to_string(), format!("z{}", i % 2))]),
            addrs: if dual {
                vec![v4(10, 0, 3, 1 + i as u8), v6(0x3_0001 + i as u128)]
            } else {
                vec![v4(10, 0, 3, 1 + i as u8)]
            },
            span: None,
        })
        .collect();
    if !m.endpoints.is_empty() && rng.chance(50) {
        // A host-network endpoint with the labels of another: selectors
        // match it, its (node's) traffic is not its own.
        let like = rng.pick(&m.endpoints).labels.clone();
        let mut l = like.into_map();
        l.insert(crate::nodes::KEY.into(), format!("n{}", rng.below(n)));
        m.endpoints.push(crate::model::Endpoint {
            name: "host-net".into(),
            labels: l.into(),
            addrs: Vec::new(),
            ready: true,
            span: None,
        });
        m.endpoints.sort_by(|a, b| a.name.cmp(&b.name));
    }
    for e in m.endpoints.iter_mut().filter(|e| !e.addrs.is_empty()) {
        if rng.chance(80) {
            let mut l = e.labels.clone().into_map();
            l.insert(crate::nodes::KEY.into(), format!("n{}", rng.below(n)));
            e.labels = l.into();
        }
    }
    for p in &mut m.policies {
        for rules in [&mut p.ingress, &mut p.egress].into_iter().flatten() {
            for r in rules.iter_mut() {
                if rng.chance(12) {
                    r.peer = PeerMatch::OwnNode;
                }
            }
        }
    }
}

/// Packets between every node address and every endpoint address of the
/// family (both ways), when the model declares nodes: the packets `node`
/// decides. At most [`NODE_PACKETS`], half of them IPv6 when there are
/// enough IPv6 pairs.
pub fn node_packets(m: &Model, template: &[Packet]) -> Vec<Packet> {
    if m.nodes.is_empty() || template.is_empty() {
        return Vec::new();
    }
    let pairs = |v4: bool| {
        let mut out = Vec::new();
        for n in &m.nodes {
            for &na in n.addrs.iter().filter(|a| a.is_ipv4() == v4) {
                for e in &m.endpoints {
                    for &ea in e.addrs.iter().filter(|a| a.is_ipv4() == v4) {
                        out.push((na, ea));
                        out.push((ea, na));
                    }
                }
            }
        }
        out
    };
    let (four, six) = (pairs(true), pairs(false));
    let n6 = six.len().min(NODE_PACKETS / 2);
    let n4 = four.len().min(NODE_PACKETS - n6);
    let mut out = Vec::new();
    for (src, dst) in four.into_iter().take(n4).chain(six.into_iter().take(n6)) {
        // A template of the pair's family (ICMP types differ by family).
        let t = template
            .iter()
            .cycle()
            .skip(out.len() % template.len())
            .take(template.len())
            .find(|p| p.src.is_ipv4() == src.is_ipv4())
            .unwrap_or(&template[out.len() % template.len()]);
        let mut p = t.clone();
        p.src = src;
        p.dst = dst;
        out.push(p);
    }
    out
}

/// The most packets [`node_packets`] adds to one model's.
pub const NODE_PACKETS: usize = 24;

#[cfg(test)]
mod tests {
    use crate::model::PeerMatch;

    /// The seeds the kernel differential tests use (0..12) see `node`
    /// rules on models with endpoints on nodes, and packets aimed at them.
    #[test]
    fn the_differential_seeds_use_nodes() {
        let models: Vec<_> = (0..12).map(crate::gen::model).collect();
        let with_nodes = models.iter().filter(|m| !m.nodes.is_empty()).count();
        let rules = models
            .iter()
            .flat_map(|m| &m.policies)
            .flat_map(|p| [&p.ingress, &p.egress])
            .flatten()
            .flatten()
            .filter(|r| r.peer == PeerMatch::OwnNode)
            .count();
        assert!(with_nodes >= 4, "{with_nodes} models with nodes");
        assert!(rules >= 4, "{rules} `node` rules");
        // Dual-stack nodes with IPv6 packets aimed at them (the
        // dual-stack differential tests add the IPv6 endpoints), and
        // host-network endpoints.
        let six: usize = (0..12)
            .map(crate::gen::dual_stack)
            .map(|m| {
                crate::gen::packets(&m, &mut crate::gen::Rng::new(1), 4)
                    .iter()
                    .filter(|p| {
                        !p.src.is_ipv4()
                            && m.nodes
                                .iter()
                                .any(|n| n.addrs.contains(&p.src) || n.addrs.contains(&p.dst))
                    })
                    .count()
            })
            .sum();
        assert!(six >= 10, "{six} IPv6 packets to or from nodes");
        let host_net = models
            .iter()
            .flat_map(|m| &m.endpoints)
            .filter(|e| e.addrs.is_empty())
            .count();
        assert!(host_net >= 2, "{host_net} host-network endpoints");
        let m = models.iter().find(|m| !m.nodes.is_empty()).unwrap();
        let t = crate::gen::packets(m, &mut crate::gen::Rng::new(1), 4);
        assert!(t
            .iter()
            .any(|p| m.nodes.iter().any(|n| n.addrs.contains(&p.src))));
    }
}
