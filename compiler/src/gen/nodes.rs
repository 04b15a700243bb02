//! The generator's nodes: sometimes two or three declared nodes, the
//! endpoints placed on them (the `node` attribute, a label:
//! [`crate::nodes`]) and rules whose peer is `node` (the subject's node).
//!
//! Applied after [`super::peers::sprinkle`] with a generator of its own,
//! so a seed's model differs from before only by these constructs;
//! [`node_packets`] aims packets between endpoints and node addresses,
//! which the random draws never pick.

use super::{v4, Rng};
use crate::interp::Packet;
use crate::model::{Model, Node, PeerMatch};
use std::collections::BTreeMap;

/// Sometimes: nodes at 10.0.3.N, endpoints on them (some on none), and
/// rules whose peer becomes `node`.
pub fn sprinkle(m: &mut Model, seed: u64) {
    let mut rng = Rng::new(seed ^ 0x90DE_5EED);
    if !rng.chance(70) {
        return;
    }
    let n = 2 + rng.below(2);
    m.nodes = (0..n)
        .map(|i| Node {
            name: format!("n{i}"),
            labels: BTreeMap::from([("zone".to_string(), format!("z{}", i % 2))]),
            addrs: vec![v4(10, 0, 3, 1 + i as u8)],
            span: None,
        })
        .collect();
    for e in &mut m.endpoints {
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
/// decides. At most [`NODE_PACKETS`].
pub fn node_packets(m: &Model, template: &[Packet]) -> Vec<Packet> {
    if m.nodes.is_empty() || template.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for n in &m.nodes {
        for &na in &n.addrs {
            for e in &m.endpoints {
                for &ea in e.addrs.iter().filter(|a| a.is_ipv4() == na.is_ipv4()) {
                    for (src, dst) in [(na, ea), (ea, na)] {
                        let mut p = template[out.len() % template.len()].clone();
                        p.src = src;
                        p.dst = dst;
                        out.push(p);
                        if out.len() == NODE_PACKETS {
                            return out;
                        }
                    }
                }
            }
        }
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
        let m = models.iter().find(|m| !m.nodes.is_empty()).unwrap();
        let t = crate::gen::packets(m, &mut crate::gen::Rng::new(1), 4);
        assert!(t
            .iter()
            .any(|p| m.nodes.iter().any(|n| n.addrs.contains(&p.src))));
    }
}
