//! Differential tests: graph vs interpreter, optimized vs unoptimized.

use super::*;
use crate::gen::{self, Rng};
use crate::interp::{BackendChoice, Interp, Packet};
use std::collections::BTreeSet;

struct Stats {
    pairs: usize,
    leaves: usize,
    reached: usize,
}

fn check_model(seed: u64, n: usize) -> Stats {
    let model = gen::model(seed);
    let interp = Interp::new(&model);
    let unopt = build_unoptimized(&model);
    let opt = build(&model);
    let mut rng = Rng::new(seed.wrapping_mul(7).wrapping_add(1));
    let mut packets = gen::packets(&model, &mut rng, n);
    packets.extend(cover::leaf_packets(&unopt, 20_000));
    let mut pairs = 0;
    let mut reached: BTreeSet<NodeId> = BTreeSet::new();
    for p in &packets {
        let want = GraphOutcome::from_interp(&interp.evaluate(p));
        let got = opt.evaluate(p, BackendChoice::ByHash);
        assert_eq!(got, want, "seed {seed}: optimized graph disagrees on {p:?}");
        let got_u = unopt.evaluate(p, BackendChoice::ByHash);
        assert_eq!(
            got_u, want,
            "seed {seed}: unoptimized graph disagrees on {p:?}"
        );
        pairs += 1;
        let mut q: Packet = p.clone();
        q.at = None;
        reached.extend(opt.leaves_reached(&q));
        // Pinned backends: every candidate gives the interpreter's verdict.
        if let Some(hit) = interp.service_hit(p, BackendChoice::ByHash) {
            for b in hit.candidates.iter().take(3) {
                let choice = BackendChoice::Pinned(b.addr, b.port);
                let want = GraphOutcome::from_interp(&interp.evaluate_with(p, choice));
                assert_eq!(
                    opt.evaluate(p, choice),
                    want,
                    "seed {seed}: pinned {b:?} on {p:?}"
                );
                pairs += 1;
            }
        }
    }
    let leaves = opt
        .dag
        .reachable()
        .into_iter()
        .filter(|&n| opt.node(n).is_leaf())
        .count();
    Stats {
        pairs,
        leaves,
        reached: reached.len(),
    }
}

/// The graph gives the interpreter's verdict, deciding provenance, logged
/// list, service, backend and steering on ≥ 10,000 (policy, packet) pairs,
/// and the packets reach (almost) every leaf of the optimized graph.
#[test]
fn graph_agrees_with_interpreter() {
    let (mut pairs, mut leaves, mut reached) = (0, 0, 0);
    for seed in 0..300 {
        let s = check_model(seed, 30);
        pairs += s.pairs;
        leaves += s.leaves;
        reached += s.reached;
    }
    assert!(pairs >= 10_000, "only {pairs} pairs");
    let pct = reached * 100 / leaves.max(1);
    eprintln!("{pairs} pairs, {reached}/{leaves} leaves reached ({pct}%)");
    assert!(pct >= 90, "leaf coverage {pct}% < 90%");
}
