//! Audit policies (docs/language.md §4, "Audit policies"), as properties
//! over generated programs with random policies (and tiers) marked audit:
//!
//! - an audit policy never changes an enforced verdict: the interpreter's
//!   enforced outcome equals that of the program with the audit policies
//!   removed (provenance mapped back to the original policy ids);
//! - the audit verdict is the verdict of the program with the audit marks
//!   removed;
//! - the decision graph (what the back ends are generated from) gives the
//!   enforced outcome, and the graph of `Model::audit_enforced` (the audit
//!   sides) gives the audit verdict.

use weir_compiler::gen::{self, Rng};
use weir_compiler::graph::{self, GraphOutcome};
use weir_compiler::interp::{BackendChoice, Interp, Outcome};
use weir_compiler::model::Model;
use weir_compiler::provenance::Provenance;

/// `p` of the program without audit policies, in the original's ids.
fn map_back(p: Provenance, kept: &[usize]) -> Provenance {
    match p {
        Provenance::Rule { policy, dir, index } => Provenance::Rule {
            policy: kept[policy],
            dir,
            index,
        },
        other => other,
    }
}

fn enforced_view(o: &Outcome, kept: Option<&[usize]>) -> GraphOutcome {
    let mut g = GraphOutcome::from_interp(o);
    if let Some(kept) = kept {
        g.decided_by = map_back(g.decided_by, kept);
        g.logged = g.logged.iter().map(|p| map_back(*p, kept)).collect();
    }
    g
}

struct Counts {
    packets: usize,
    audited: usize,
    differing: usize,
}

fn check_seed(seed: u64, n: usize, c: &mut Counts) {
    let mut model: Model = gen::model(seed);
    let mut rng = Rng::new(seed ^ 0xA0D1);
    gen::mark_audit(&mut model, &mut rng);
    if !model.has_audit() {
        return;
    }
    let kept: Vec<usize> = (0..model.policies.len())
        .filter(|&i| !model.policies[i].audit)
        .collect();
    let without = model.without_audit();
    let enforced_all = model.audit_enforced();
    let interp = Interp::new(&model);
    let interp_without = Interp::new(&without);
    let interp_all = Interp::new(&enforced_all);
    let g = graph::build(&model);
    let g_audit = graph::build(&enforced_all);
    let mut packets = gen::packets(&model, &mut rng, n);
    packets.extend(graph::cover::leaf_packets(&g_audit, 2_000));
    for p in &packets {
        let o = interp.evaluate(p);
        // 1. Enforcement is the program without its audit policies.
        let bare = interp_without.evaluate(p);
        assert_eq!(
            enforced_view(&o, None),
            enforced_view(&bare, Some(&kept)),
            "seed {seed}: an audit policy changed the enforced verdict of {p:?}"
        );
        assert_eq!(o.steering, bare.steering, "seed {seed}: {p:?}");
        // 2. The audit verdict is the program with audit policies enforced.
        let full = interp_all.evaluate(p);
        let (av, aby) = o
            .audit
            .as_ref()
            .map_or((o.verdict, o.decided_by), |a| (a.verdict, a.decided_by));
        assert_eq!(
            (av, aby),
            (full.verdict, full.decided_by),
            "seed {seed}: audit verdict of {p:?}"
        );
        // 3. The graphs agree: enforced, and the audit sides.
        assert_eq!(
            g.evaluate(p, BackendChoice::ByHash),
            GraphOutcome::from_interp(&o),
            "seed {seed}: enforced graph disagrees on {p:?}"
        );
        let ga = g_audit.evaluate(p, BackendChoice::ByHash);
        assert_eq!(
            (ga.verdict, ga.decided_by),
            (av, aby),
            "seed {seed}: audit graph disagrees on {p:?}"
        );
        c.packets += 1;
        if let Some(a) = &o.audit {
            c.audited += 1;
            if a.differs(o.verdict, o.decided_by) {
                c.differing += 1;
            }
        }
    }
}

#[test]
fn audit_policies_never_change_an_enforced_verdict() {
    let mut c = Counts {
        packets: 0,
        audited: 0,
        differing: 0,
    };
    for seed in 0..300 {
        check_seed(seed, 60, &mut c);
    }
    eprintln!(
        "{} packets, {} with an audit verdict, {} where it differs",
        c.packets, c.audited, c.differing
    );
    assert!(c.packets >= 10_000, "only {} packets", c.packets);
    // The property is not vacuous: audit policies would often decide
    // otherwise.
    assert!(
        c.differing * 20 >= c.audited,
        "{} of {}",
        c.differing,
        c.audited
    );
}
