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
