//! The eBPF code generator without the kernel: determinism and manifest
//! round trips for every example (listings are snapshotted by
//! cli/tests/artifacts.rs), stage splitting under a small
//! budget, and the E0510 limits. (The kernel tests are
//! `runtime/tests/ebpf_*.rs`.)

mod common;

use weir_compiler::ebpf::codegen::{generate, Budget, Limit, Mode, Options};
use weir_compiler::gen;
use weir_compiler::graph;

#[test]
fn ebpf_examples_are_deterministic() {
    for f in common::example_files() {
        let checked = common::check_example(&f);
        let g = graph::build(&checked.model);
        let out = generate(&checked.model, &g, &Options::default()).unwrap();
        let again = generate(&checked.model, &g, &Options::default()).unwrap();
        assert_eq!(out.object, again.object, "deterministic object");
        // The manifest (with the service maps' state) survives JSON, as
        // the bundle stores it.
        let json = serde_json::to_string(&out.manifest).expect("manifest to JSON");
        let back: weir_compiler::ebpf::codegen::EbpfManifest =
            serde_json::from_str(&json).expect("manifest from JSON");
        assert_eq!(back, out.manifest, "{}", f.display());
        // The listing is snapshotted with every other artifact by
        // cli/tests/artifacts.rs (snapshots/artifacts/).
        assert!(!out.listing.is_empty());
    }
}

#[test]
fn ebpf_small_budget_splits_every_generated_policy() {
    for seed in 0..40 {
        let model = gen::model(seed);
        let g = graph::build(&model);
        let small = Options {
            budget: Budget {
                max_slots: 400,
                max_jumps: 120,
            },
            ..Options::default()
        };
        match generate(&model, &g, &small) {
            Ok(out) => {
                for p in &out.manifest.programs {
                    assert!(
                        p.insns <= 400 + 64,
                        "seed {seed}: {} has {}",
                        p.name,
                        p.insns
                    );
                }
            }
            Err(limits) => {
                assert!(
                    limits.iter().all(|l| matches!(
                        l,
                        Limit::BlockTooLarge { .. } | Limit::TooManyStages { .. }
                    )),
                    "seed {seed}: {limits:?}"
                );
            }
        }
        for mode in [Mode::Node, Mode::Ingress, Mode::Egress] {
            let out = generate(
                &model,
                &g,
                &Options {
                    mode,
                    ..Options::default()
                },
            )
            .unwrap();
            assert_eq!(
                out.manifest.programs.len(),
                1,
                "seed {seed}: small policy, one program"
            );
        }
    }
}

#[test]
fn ebpf_limits_become_e0510() {
    let model = gen::model(1);
    let g = graph::build(&model);
    let tiny = Options {
        budget: Budget {
            max_slots: 100,
            max_jumps: 10,
        },
        ..Options::default()
    };
    let limits = generate(&model, &g, &tiny).unwrap_err();
    let d = limits[0].diagnostic(&model);
    assert_eq!(d.code.as_str(), "E0510");
    assert!(d.message.contains("ebpf"), "{}", d.message);
    let huge = Options {
        conntrack_entries: 2_000_000,
        ..Options::default()
    };
    let limits = generate(&model, &g, &huge).unwrap_err();
    assert!(
        matches!(&limits[0], Limit::MapTooLarge { map, .. } if map == "weir_ct"),
        "{limits:?}"
    );
}

/// Stage splitting on realistic policies (`synth`, 1,000 rules) under
/// budgets from tight to the default: every split assembles (no stage is
/// entered that cannot be — the entry program is never a tail-call
/// target, no stage has unreachable code: both are internal errors at
/// compile time), stays within the per-packet tail-call limit, and the
/// tighter the budget, the more programs.
#[test]
fn ebpf_synth_policy_splits_at_every_budget() {
    let model = weir_compiler::synth::model(&weir_compiler::synth::Params {
        seed: 3,
        policies: 100,
        rules: 10,
        endpoints: 600,
        deployments: 200,
        ..Default::default()
    });
    let g = graph::build(&model);
    let mut last = 0;
    for slots in [24_000, 6_000, 3_000, 1_500] {
        let opts = Options {
            budget: Budget {
                max_slots: slots,
                max_jumps: slots / 2,
            },
            ..Options::default()
        };
        let out = generate(&model, &g, &opts).unwrap_or_else(|e| panic!("{slots}: {e:?}"));
        let programs = out.manifest.programs.len();
        assert!(programs >= last, "{slots}: {programs} programs");
        assert!(out.manifest.max_tail_calls <= weir_compiler::ebpf::codegen::MAX_TAIL_CALLS);
        for p in &out.manifest.programs {
            assert!(
                p.insns <= slots * 5 / 4,
                "{slots}: {} has {}",
                p.name,
                p.insns
            );
        }
        last = programs;
    }
    assert!(last >= 4, "the tightest budget splits ({last} programs)");
    // And generated policies of every shape, at budgets around the size of
    // their pipelines (where a block's predecessors straddle stages).
    for seed in 0..60 {
        let model = gen::model(seed);
        let g = graph::build(&model);
        for slots in [1_000, 1_400, 2_000, 3_000] {
            let opts = Options {
                budget: Budget {
                    max_slots: slots,
                    max_jumps: slots / 2,
                },
                ..Options::default()
            };
            if let Err(e) = generate(&model, &g, &opts) {
                assert!(
                    e.iter().all(|l| matches!(l, Limit::BlockTooLarge { .. })),
                    "seed {seed}, {slots}: {e:?}"
                );
            }
        }
    }
}
