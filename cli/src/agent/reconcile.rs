//! The reconcile loop's core: events go into the [`Store`]; a reconcile
//! imports the whole store (`weir import k8s`, compiler/src/k8s) and
//! compares the result with the last good generation:
//!
//! - same program text, same inventory: **unchanged**;
//! - same program text, new inventory (pod churn, a pod IP reused, a
//!   relabelled pod that still fits a compiled class): the **endpoint**
//!   path — the runtime's map / ipset update, no recompile;
//! - new program text (a policy, service or namespace changed), or an
//!   endpoint update the generation in force cannot take (a new class
//!   needed, iptables service backends moved): **recompile** — check,
//!   compile, apply the new generation atomically;
//! - the import or the compiler refuses (errors): **refused** — the last
//!   good generation stays in force, the status and the event log say
//!   so. While a refused object is in the store no other change is
//!   applied either: the program without it would be a silent
//!   approximation (the import fails closed as a whole).
//!
//! Deciding on the imported text rather than on the kinds of the changed
//! objects is what keeps the endpoint path honest: a pod change is
//! endpoint-only exactly when it does not change the program.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;
use weir_compiler::k8s::{self, Endpoints};
use weir_grammar::FileId;

use super::build::{self, Generation};
use super::event::{Event, Key};
use super::node::{Churn, Node};
use super::status::{Record, Status};
use super::store::Store;
use crate::import::INVENTORY_FILE;

/// What one reconcile decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Nothing to do.
    Unchanged,
    /// The inventory applied to the generation in force.
    Endpoints,
    /// A new generation compiled and applied.
    Recompile,
    /// The import or the compiler refused; the last good generation
    /// stays in force.
    Refused,
    /// Applying failed (kernel, IO); the last good generation stays in
    /// force.
    Failed,
}

impl Verdict {
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Unchanged => "unchanged",
            Verdict::Endpoints => "endpoints",
            Verdict::Recompile => "recompile",
            Verdict::Refused => "refused",
            Verdict::Failed => "failed",
        }
    }

    pub const ALL: [Verdict; 5] = [
        Verdict::Unchanged,
        Verdict::Endpoints,
        Verdict::Recompile,
        Verdict::Refused,
        Verdict::Failed,
    ];
}

/// The record of one reconcile (`--dry-run` prints it; `/status` keeps
/// the last ones).
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub reconcile: u64,
    pub verdict: Verdict,
    /// The generation in force afterwards (`None`: none yet).
    pub generation: Option<u64>,
    /// Why, in words.
    pub detail: String,
    /// The objects changed since the previous reconcile (at most 10
    /// named).
    pub changed: Vec<String>,
    /// Wall time of the reconcile (not printed by `--dry-run`).
    #[serde(skip)]
    pub micros: u128,
}

/// The last good generation: what is in force.
struct Good {
    program: String,
    inventory: String,
    generation: Generation,
    in_force: u64,
}

pub struct Reconciler {
    pub store: Store,
    node: Box<dyn Node + Send>,
    work: PathBuf,
    target: weir_compiler::bundle::Target,
    good: Option<Good>,
    count: u64,
    pub status: Status,
    /// The node this agent runs on (`--node`): what `Local` Services and
    /// node ports are imported for (k8s/frontends.rs).
    node_name: Option<String>,
    /// The back ends' options each generation is compiled with.
    opts: weir_compiler::backends::Options,
}

impl Reconciler {
    /// `work`: where generations are compiled (`DIR/gen-N/`).
    pub fn new(
        node: Box<dyn Node + Send>,
        work: PathBuf,
        target: weir_compiler::bundle::Target,
    ) -> Reconciler {
        Reconciler {
            store: Store::default(),
            node,
            work,
            target,
            good: None,
            count: 0,
            status: Status::default(),
            node_name: None,
            opts: Default::default(),
        }
    }

    /// Compiles with `opts` (`weir agent --iptables-self-mark`).
    pub fn with_options(mut self, opts: weir_compiler::backends::Options) -> Reconciler {
        self.opts = opts;
        self
    }

    /// Imports for node `name` (`weir agent --node`).
    pub fn for_node(mut self, name: Option<String>) -> Reconciler {
        self.node_name = name;
        self
    }

    pub fn node(&self) -> &dyn Node {
        self.node.as_ref()
    }

    /// Feeds one event; `true` when it asks for a reconcile now (`SYNC`).
    pub fn event(&mut self, e: Event) -> bool {
        let r = match e {
            Event::Upsert(o) => self.store.upsert(o),
            Event::Delete(o) => self.store.delete(&o),
            Event::Relist { kind, objects } => {
                let r = self.store.relist(&kind, objects);
                self.status.relisted(&kind);
                r
            }
            Event::Sync => return true,
            Event::Error(m) => {
                self.status.unreachable(&m);
                Ok(())
            }
        };
        if let Err(e) = r {
            self.status.log(Record::warning("EventIgnored", None, e));
        }
        false
    }

    /// Decides and applies (see the module docs).
    pub fn reconcile(&mut self) -> Decision {
        let t0 = Instant::now();
        self.count += 1;
        let dirty = self.store.take_dirty();
        let (verdict, detail) = self.decide(&dirty);
        let d = Decision {
            reconcile: self.count,
            verdict,
            generation: self.good.as_ref().map(|g| g.in_force),
            detail,
            changed: describe(&dirty),
            micros: t0.elapsed().as_micros(),
        };
        self.status.decided(&d, self.store.counts());
        d
    }

    fn decide(&mut self, dirty: &BTreeSet<Key>) -> (Verdict, String) {
        let list = self.store.documents();
        let imported = k8s::import_with(
            &[(FileId(0), list.as_str())],
            Endpoints::Inventory(INVENTORY_FILE.into()),
            &k8s::Options {
                node: self.node_name.clone(),
            },
        );
        let errors: Vec<String> = imported
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| format!("{}: {}", d.code, d.message))
            .collect();
        if !errors.is_empty() {
            return self.refused(format!("the import refused: {}", errors.join("; ")), dirty);
        }
        let inventory =
            serde_json::to_string_pretty(&imported.inventory).unwrap_or_default() + "\n";
        let program = imported.program;
        let mut why = match &self.good {
            None => "first generation".to_string(),
            Some(g) if g.program != program => "the program changed".to_string(),
            Some(g) if g.inventory == inventory => {
                return (
                    Verdict::Unchanged,
                    "the program and the endpoints are as in force".into(),
                )
            }
            Some(g) => match self.node.endpoints(&g.generation.bundle, &inventory) {
                Ok(Churn::Applied { changes }) => {
                    let g = self.good.as_mut().expect("a good generation");
                    g.inventory = inventory;
                    return (
                        Verdict::Endpoints,
                        format!("endpoint update without recompile: {changes} address(es) changed class"),
                    );
                }
                Ok(Churn::NeedsRecompile(why)) => format!("the endpoints need a recompile: {why}"),
                Err(e) => format!("the endpoint update failed ({e}); recompiling"),
            },
        };
        let generation =
            match build::generation(&self.work, &program, &inventory, self.target, &self.opts) {
                Ok(g) => g,
                Err(build::Failure::Refused(e)) => {
                    return self.refused(format!("the compiler refused: {e}"), dirty)
                }
                Err(build::Failure::Io(e)) => return self.failed(e),
            };
        match self.node.apply(&generation.bundle) {
            Ok(in_force) => {
                build::retire_others(&self.work, &generation.dir);
                why = format!("{why}: generation {in_force} applied");
                self.status
                    .log(Record::normal("GenerationApplied", why.clone()));
                self.good = Some(Good {
                    program,
                    inventory,
                    generation,
                    in_force,
                });
                (Verdict::Recompile, why)
            }
            Err(e) => {
                build::retire(&generation);
                self.failed(format!("applying the new generation failed: {e}"))
            }
        }
    }

    fn refused(&mut self, why: String, dirty: &BTreeSet<Key>) -> (Verdict, String) {
        let kept = self.kept();
        let about = dirty
            .iter()
            .find(|k| !matches!(k.kind.as_str(), "Pod" | "EndpointSlice" | "Node"))
            .cloned();
        self.status.log(Record::warning(
            "PolicyRefused",
            about,
            format!("{why}; {kept}"),
        ));
        (Verdict::Refused, format!("{why}; {kept}"))
    }

    fn failed(&mut self, why: String) -> (Verdict, String) {
        let kept = self.kept();
        self.status.log(Record::warning(
            "ApplyFailed",
            None,
            format!("{why}; {kept}"),
        ));
        (Verdict::Failed, format!("{why}; {kept}"))
    }

    fn kept(&self) -> String {
        match &self.good {
            Some(g) => format!("generation {} stays in force", g.in_force),
            None => "nothing is applied yet".into(),
        }
    }
}

fn describe(dirty: &BTreeSet<Key>) -> Vec<String> {
    let mut v: Vec<String> = dirty.iter().take(10).map(ToString::to_string).collect();
    if dirty.len() > 10 {
        v.push(format!("and {} more", dirty.len() - 10));
    }
    v
}
