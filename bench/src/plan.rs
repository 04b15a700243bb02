//! What a run measures: the options (`Opts`, `--only` figures) and the
//! model sizes of a full or quick run (`Plan`).

use weir_compiler::synth::Params;

use crate::ebpf::Effort;

/// What to run.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Tiny sizes, few repetitions (seconds; no timing claims).
    pub quick: bool,
    pub seed: u64,
    /// Run the parts that need root (eBPF, namespaces).
    pub kernel: bool,
    /// Print progress to stderr.
    pub verbose: bool,
    /// Which iptables the namespace measurements drive.
    pub variant: weir_runtime::iptables::Variant,
    /// Only these figures (`--only`, for iterating on one back end; such
    /// a partial report must not rewrite BENCHMARKS.md). Empty: all.
    pub only: Vec<Figure>,
    /// `--render DIR --rules N`: render the rules sweep's model of `N`
    /// rules instead of the headline model.
    pub render_rules: Option<usize>,
    /// `--render DIR --services N`: the services sweep's model of N services.
    pub render_services: Option<usize>,
    /// The kind of the per-flow tables the eBPF programs are compiled
    /// with (`--ct-table`, default: what `weir compile` defaults to).
    pub ct_table: weir_compiler::ebpf::state_tables::CtTable,
    /// Where the per-pod table's programs keep the atom bits (`--atoms
    /// auto|dense|sparse`; default: what `weir compile` does).
    pub atoms: weir_compiler::ebpf::codegen::sparse_atoms::AtomLayout,
    /// Only these sizes in both sweeps (`--sizes 1000,10000`, with
    /// `--only`: to compare one change at the sizes it is about).
    pub sizes: Option<Vec<usize>>,
}

/// The groups of tables `--only` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    Ebpf,
    Iptables,
    /// The iptables apply times (`iptables-apply`).
    IptablesApply,
    Compile,
    Updates,
    Sizes,
    /// One rule per pod at 10,000 and 100,000 (`per-pod`, eBPF).
    PerPod,
}

impl Figure {
    pub const ALL: [(&'static str, Figure); 7] = [
        ("ebpf", Figure::Ebpf),
        ("iptables", Figure::Iptables),
        ("iptables-apply", Figure::IptablesApply),
        ("compile", Figure::Compile),
        ("updates", Figure::Updates),
        ("sizes", Figure::Sizes),
        ("per-pod", Figure::PerPod),
    ];

    pub fn parse(s: &str) -> Option<Figure> {
        Figure::ALL.iter().find(|(n, _)| *n == s).map(|&(_, f)| f)
    }
}

impl Opts {
    pub(crate) fn wants(&self, f: Figure) -> bool {
        self.only.is_empty() || self.only.contains(&f)
    }
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            quick: false,
            seed: 9,
            kernel: true,
            verbose: true,
            variant: weir_runtime::iptables::Variant::Legacy,
            only: Vec::new(),
            render_rules: None,
            render_services: None,
            ct_table: Default::default(),
            atoms: Default::default(),
            sizes: None,
        }
    }
}

/// The sizes of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub rules: Vec<usize>,
    pub services: Vec<usize>,
    pub headline: Params,
    pub effort: Effort,
    pub probes: usize,
    /// Interleaved rounds of the iptables services layouts
    /// (`crate::ipt_rounds`) at the sizes where they are compared closely
    /// ([`Plan::rounds_for`]).
    pub rounds: usize,
    /// The largest services model measured in [`Plan::rounds`] rounds.
    pub rounds_upto: usize,
    /// Probes to the last service per layout and round when there are
    /// several rounds (half as many to the random services). 2,000 since
    /// session 21: with 200, the round-by-round difference of weir's and
    /// kube-proxy's overheads at 10 services (pod client) had a spread
    /// (SD) of ~1,000 ns and the target's interval was ~1 µs wide; with
    /// 2,000, ~190 ns and ~0.4 µs (`bench/examples/ipt_ablate.rs
    /// measure`, 24 rounds each). A probe is a ~25 µs round trip: a
    /// row measured in rounds takes ~10 s more.
    pub round_probes: usize,
    pub cli_runs: usize,
    /// Services of the model the update latencies are measured on.
    pub update_services: usize,
    /// Endpoints of the rules-sweep models (and the services sweep's minimum).
    pub endpoints: usize,
    /// Endpoints of the generated inventory `weir check` reads for the
    /// compile table's memory row (issue 15, item 7).
    pub inventory_check: usize,
    pub variant: weir_runtime::iptables::Variant,
    /// `Opts::ct_table`.
    pub ct_table: weir_compiler::ebpf::state_tables::CtTable,
    /// `Opts::atoms`.
    pub atoms: weir_compiler::ebpf::codegen::sparse_atoms::AtomLayout,
}

impl Plan {
    pub fn new(quick: bool, seed: u64) -> Plan {
        if quick {
            Plan {
                rules: vec![10, 100],
                services: vec![10, 100],
                headline: Params {
                    seed,
                    services: 100,
                    backends: 5,
                    policies: 9,
                    rules: 10,
                    endpoints: 500,
                    deployments: 50,
                    cidr_rules: 10,
                    ..Params::default()
                },
                effort: Effort {
                    repeat: 10_000,
                    runs: 3,
                    loads: 1,
                },
                probes: 40,
                rounds: 2,
                // The smoke run covers both paths: 10 in rounds, 100 in one.
                rounds_upto: 10,
                round_probes: 20,
                cli_runs: 1,
                update_services: 10,
                endpoints: 300,
                inventory_check: 10_000,
                variant: weir_runtime::iptables::Variant::Legacy,
                ct_table: Default::default(),
                atoms: Default::default(),
            }
        } else {
            Plan {
                rules: vec![10, 100, 1_000, 10_000, 100_000],
                services: vec![10, 100, 1_000, 10_000],
                headline: Params {
                    seed,
                    services: 10_000,
                    backends: 5,
                    policies: 900,
                    rules: 10,
                    endpoints: 50_000,
                    deployments: 300,
                    cidr_rules: 1_000,
                    ..Params::default()
                },
                effort: Effort {
                    repeat: 1_000_000,
                    runs: 5,
                    loads: 3,
                },
                probes: 2_000,
                rounds: 24,
                rounds_upto: 100,
                round_probes: 2_000,
                cli_runs: 3,
                update_services: 1_000,
                endpoints: 2_000,
                inventory_check: 1_000_000,
                variant: weir_runtime::iptables::Variant::Legacy,
                ct_table: Default::default(),
                atoms: Default::default(),
            }
        }
    }

    /// Rounds of the services table at `services`: [`Plan::rounds`] up to
    /// [`Plan::rounds_upto`] (100 services), where weir's and kube-proxy's
    /// overheads are tens of ns apart; one above (kube-proxy's overhead is
    /// µs above weir's, and restoring its 16,720-rule layout each round
    /// would cost seconds).
    pub fn rounds_for(&self, services: usize) -> usize {
        if services <= self.rounds_upto {
            self.rounds
        } else {
            1
        }
    }

    /// The rules sweep: `total` rules (policies of 10), 10 services.
    pub fn rules_params(&self, total: usize, seed: u64) -> Params {
        Params {
            seed,
            services: 10,
            backends: 3,
            policies: (total / 10).max(1),
            rules: total.min(10),
            endpoints: self.endpoints,
            deployments: 300,
            cidr_rules: 0,
            ..Params::default()
        }
    }

    /// The services sweep: `n` services of 5 backends, 100 rules.
    pub fn services_params(&self, n: usize, seed: u64) -> Params {
        Params {
            seed,
            services: n,
            backends: 5,
            policies: 10,
            rules: 10,
            endpoints: (n * 5).max(self.endpoints),
            deployments: 300,
            cidr_rules: 0,
            ..Params::default()
        }
    }
}

/// `true` for a run whose repetitions are too few to claim a target.
pub(crate) fn opts_quick(plan: &Plan) -> bool {
    plan.effort.repeat < 1_000_000
}
