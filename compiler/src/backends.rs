//! The one place that knows every back end: given a target, generate its
//! artifacts from the checked model and the decision graph, or say — as
//! diagnostics naming the back end and the construct — what it cannot
//! express. `weir compile` and the language server both call this.

use crate::bundle::{BackendArtifacts, Target};
use crate::diagnostics::Diagnostic;
use crate::graph::Graph;
use crate::model::Model;

/// Every target, in bundle order.
pub const ALL: [Target; 2] = [Target::Ebpf, Target::Iptables];

/// Generate one back end's artifacts.
pub fn generate(
    target: Target,
    model: &Model,
    graph: &Graph,
) -> Result<BackendArtifacts, Vec<Diagnostic>> {
    match target {
        Target::Ebpf => ebpf(model, graph),
        Target::Iptables => iptables(model, graph),
    }
}

/// Generate several back ends' artifacts, in `targets` order. With more
/// than one target, all but the first run on threads of their own (each
/// back end is a pure function of the model and the graph, so the results
/// are the same as one after the other).
pub fn generate_all(
    targets: &[Target],
    model: &Model,
    graph: &Graph,
) -> Vec<(Target, Result<BackendArtifacts, Vec<Diagnostic>>)> {
    let Some((&first, rest)) = targets.split_first() else {
        return Vec::new();
    };
    std::thread::scope(|s| {
        let running: Vec<_> = rest
            .iter()
            .map(|&t| {
                let h = std::thread::Builder::new()
                    .name(format!("weir-{}", t.name()))
                    // As much stack as the main thread may have.
                    .stack_size(64 << 20)
                    .spawn_scoped(s, move || generate(t, model, graph))
                    .expect("spawn a back-end thread");
                (t, h)
            })
            .collect();
        let mut out = vec![(first, generate(first, model, graph))];
        for (t, h) in running {
            let r = h
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            out.push((t, r));
        }
        out
    })
}

fn ebpf(model: &Model, graph: &Graph) -> Result<BackendArtifacts, Vec<Diagnostic>> {
    use crate::ebpf::codegen;
    codegen::generate(model, graph, &codegen::Options::default())
        .map(|out| out.artifacts())
        .map_err(|limits| limits.iter().map(|l| l.diagnostic(model)).collect())
}

fn iptables(model: &Model, graph: &Graph) -> Result<BackendArtifacts, Vec<Diagnostic>> {
    crate::iptables::generate(graph, model)
        .map_err(|unsupported| unsupported.iter().map(|u| u.diagnostic()).collect())
}
