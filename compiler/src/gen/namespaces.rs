//! The generator's namespaces: some models get namespaces with labels of
//! their own, endpoints in them (their derived labels,
//! [`crate::namespaces`]) and `namespace(…)` tests in rule peers and
//! `applies to`, alone or in a conjunction with pod labels.
//!
//! Applied to a finished model from a generator of its own (seeded from
//! the model's seed), so the draws before are unchanged: a seed's model
//! differs from before only by these constructs.

use super::Rng;
use crate::model::{Model, PeerMatch, Sel};
use crate::namespaces;
use std::collections::{BTreeMap, BTreeSet};

const NAMES: [&str; 3] = ["ns-a", "ns-b", "ns-c"];

/// A test over namespace labels (`team`, `env`; the pods' `app`/`tier`
/// too, so a pod label of the same key never satisfies it).
fn inner(rng: &mut Rng) -> Sel {
    let v = |rng: &mut Rng| ["a", "b"][rng.below(2)].to_string();
    match rng.below(6) {
        0 => Sel::Eq("team".into(), v(rng)),
        1 => Sel::Has("env".into()),
        2 => Sel::Not(Box::new(Sel::Has("env".into()))),
        3 => Sel::NotIn("team".into(), BTreeSet::from([v(rng)])),
        4 => Sel::Eq("app".into(), v(rng)),
        _ => Sel::And(
            Box::new(Sel::Eq("team".into(), v(rng))),
            Box::new(Sel::Has("env".into())),
        ),
    }
}

/// Sometimes (half the models): namespaces, members and tests.
pub fn sprinkle(m: &mut Model, seed: u64) {
    let mut rng = Rng::new(seed ^ 0x4E5A_11CE);
    if !rng.chance(50) {
        return;
    }
    for name in NAMES {
        let mut l = BTreeMap::new();
        if rng.chance(80) {
            l.insert("team".to_string(), ["a", "b"][rng.below(2)].to_string());
        }
        if rng.chance(50) {
            l.insert("env".to_string(), "prod".to_string());
        }
        m.namespaces.insert(name.to_string(), l);
    }
    for e in &mut m.endpoints {
        if rng.chance(75) {
            let ns = NAMES[rng.below(NAMES.len())];
            e.labels = namespaces::derive(&e.labels, ns, &m.namespaces[ns]).into();
        }
    }
    let test = |rng: &mut Rng, s: &Sel| -> Sel {
        let t = namespaces::test(&inner(rng));
        match rng.below(3) {
            0 => t,
            1 => Sel::And(Box::new(t), Box::new(s.clone())),
            _ => Sel::Not(Box::new(t)),
        }
    };
    for p in &mut m.policies {
        if rng.chance(20) {
            p.applies_to = test(&mut rng, &p.applies_to);
        }
        for rules in [&mut p.ingress, &mut p.egress].into_iter().flatten() {
            for r in rules.iter_mut() {
                if let PeerMatch::Selector(s) = &r.peer {
                    if rng.chance(40) {
                        r.peer = PeerMatch::Selector(test(&mut rng, s));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::PeerMatch;
    use crate::namespaces::mentions;

    /// The differential tests (graph, eBPF, iptables against the
    /// interpreter) run on `gen::model`: enough of their models must have
    /// namespace tests in peers and `applies to`, and endpoints both in
    /// and outside namespaces.
    #[test]
    fn generated_models_use_namespaces() {
        let (mut peers, mut subjects, mut models, mut outside) = (0, 0, 0, 0);
        for seed in 0..60 {
            let m = crate::gen::model(seed);
            if m.namespaces.is_empty() {
                continue;
            }
            models += 1;
            outside += m
                .endpoints
                .iter()
                .filter(|e| crate::namespaces::of(&e.labels).is_none())
                .count();
            for p in &m.policies {
                subjects += usize::from(mentions(&p.applies_to));
                for r in [&p.ingress, &p.egress].into_iter().flatten().flatten() {
                    peers += usize::from(matches!(&r.peer, PeerMatch::Selector(s) if mentions(s)));
                }
            }
        }
        eprintln!("{models} models, {peers} peers, {subjects} subjects, {outside} outside");
        assert!(models >= 20 && peers >= 25 && subjects >= 10 && outside >= 10);
    }
}
