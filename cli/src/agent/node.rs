//! Where a decision takes effect. The reconciler (reconcile.rs) decides;
//! a [`Node`] applies: a whole generation (`weir apply`'s runtime calls,
//! with freed memory held until the apply ends, [`crate::alloc`])
//! or an endpoint inventory on the generation in force (`weir
//! endpoints`' runtime calls). [`DryRun`] applies nothing: it answers
//! the endpoint question with the same pure churn plan the runtime
//! computes ([`weir_compiler::churn`]), so replay tests need no kernel.

use std::path::{Path, PathBuf};

use weir_compiler::churn::{self, ClassView, EndpointRec};
use weir_compiler::contract::Manifest;
use weir_runtime::ebpf::{self, Instance};
use weir_runtime::endpoints::{self, EndpointsError};
use weir_runtime::iptables::Iptables;
use weir_runtime::Bundle;

/// What an endpoint update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Churn {
    /// In force: `changes` addresses changed class.
    Applied { changes: usize },
    /// Cannot be done without a new generation (nothing was written).
    NeedsRecompile(String),
}

pub trait Node {
    /// Applies the bundle in `dir` atomically; the generation now in
    /// force. On error the previous generation stays in force (the
    /// runtime's guarantee).
    fn apply(&mut self, dir: &Path) -> Result<u64, String>;
    /// Applies the full inventory `text` to the generation in force,
    /// compiled into `dir`.
    fn endpoints(&mut self, dir: &Path, text: &str) -> Result<Churn, String>;
    /// The back end's name, for the log.
    fn name(&self) -> String;
}

/// The iptables + ipset back end (`weir apply --backend iptables`).
pub struct IptablesNode(pub Iptables);

impl Node for IptablesNode {
    fn apply(&mut self, dir: &Path) -> Result<u64, String> {
        crate::alloc::holding_freed_memory(|| {
            let bundle = Bundle::read(dir).map_err(|e| e.to_string())?;
            let r = self.0.apply(&bundle).map_err(|e| e.to_string())?;
            Ok(r.generation.into())
        })
    }

    fn endpoints(&mut self, dir: &Path, text: &str) -> Result<Churn, String> {
        churn_result(endpoints::iptables_dir(&self.0, dir, text))
    }

    fn name(&self) -> String {
        "iptables".into()
    }
}

/// The eBPF back end (`weir apply --backend ebpf --iface …`).
pub struct EbpfNode {
    pub inst: Instance,
    pub cgroup: Option<PathBuf>,
}

impl Node for EbpfNode {
    fn apply(&mut self, dir: &Path) -> Result<u64, String> {
        crate::alloc::holding_freed_memory(|| {
            ebpf::apply_with(dir, &self.inst, self.cgroup.as_deref())
                .map(|r| r.generation)
                .map_err(|e| e.to_string())
        })
    }

    fn endpoints(&mut self, dir: &Path, text: &str) -> Result<Churn, String> {
        churn_result(endpoints::ebpf_text(&self.inst, dir, text))
    }

    fn name(&self) -> String {
        format!("ebpf on {}", self.inst.ifaces().join(", "))
    }
}

fn churn_result(r: Result<endpoints::Report, EndpointsError>) -> Result<Churn, String> {
    match r {
        Ok(r) if !r.needs_recompile.is_empty() => Ok(Churn::NeedsRecompile(format!(
            "service(s) {} changed backends that could not be updated in place",
            r.needs_recompile
                .iter()
                .map(|s| match &s.why {
                    Some(w) => format!("{} ({w})", s.service),
                    None => s.service.clone(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        Ok(r) => Ok(Churn::Applied {
            changes: r.changes.len(),
        }),
        Err(EndpointsError::Refused(why)) => Ok(Churn::NeedsRecompile(why.join("; "))),
        Err(e) => Err(e.to_string()),
    }
}

/// Applies nothing; keeps the manifest and endpoints of the last bundle
/// "applied" to answer the endpoint question as the runtime would.
pub struct DryRun {
    /// The back end the bundles are compiled for (iptables changes
    /// selector-backed service backends in place only in some cases).
    pub iptables: bool,
    generation: u64,
    applied: Option<(Manifest, Vec<EndpointRec>)>,
}

impl DryRun {
    pub fn new(iptables: bool) -> DryRun {
        DryRun {
            iptables,
            generation: 0,
            applied: None,
        }
    }
}

impl Node for DryRun {
    fn apply(&mut self, dir: &Path) -> Result<u64, String> {
        let path = dir.join(weir_compiler::bundle::MANIFEST);
        let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let m = weir_compiler::contract::parse(&text).map_err(|e| e.to_string())?;
        let eps = churn::manifest_endpoints(&m);
        self.applied = Some((m, eps));
        self.generation += 1;
        Ok(self.generation)
    }

    fn endpoints(&mut self, _dir: &Path, text: &str) -> Result<Churn, String> {
        let Some((m, old)) = &mut self.applied else {
            return Err("nothing applied".into());
        };
        let new = EndpointRec::parse_inventory(text).ok_or("the inventory has problems")?;
        let plan = churn::plan_update(&ClassView::from_manifest(m), old, &new);
        if !plan.refused.is_empty() {
            return Ok(Churn::NeedsRecompile(plan.refused.join("; ")));
        }
        if self.iptables {
            // The runtime rewrites a service's chains in place unless
            // (runtime/src/iptables/service_chains.rs) the frontends had
            // no backends compiled or have none now, Maglev needs two or
            // more, or affinity needs more backend chains than were
            // compiled. (Chains not in the plain layout, a redirect over
            // the frontend, are seen only in the kernel's rules.)
            let moved: Vec<String> = churn::selector_services(m)
                .iter()
                .filter(|s| {
                    let affinity = m
                        .services
                        .iter()
                        .any(|e| e.index == s.index && e.affinity_seconds.is_some());
                    s.groups.iter().any(|g| {
                        let want = churn::backends_for(s, g, &new);
                        want != churn::backends_for(s, g, old)
                            && (g.compiled.is_empty()
                                || want.is_empty()
                                || (s.maglev != Some(false) && want.len() >= 2)
                                || (affinity && want.len() > g.compiled.len()))
                    })
                })
                .map(|s| s.name.clone())
                .collect();
            if !moved.is_empty() {
                return Ok(Churn::NeedsRecompile(format!(
                    "service(s) {} changed backends that could not be updated in place",
                    moved.join(", ")
                )));
            }
        }
        *old = new;
        Ok(Churn::Applied {
            changes: plan.changes.len(),
        })
    }

    fn name(&self) -> String {
        "dry run".into()
    }
}
