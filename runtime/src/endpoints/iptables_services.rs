//! `weir endpoints` on iptables: which service backend changes are
//! rewritten in place ([`crate::iptables::service_chains`]) and which
//! need the full path, and the record of both.
//!
//! A change that is made in place marks its record entry `in_place`
//! (the kernel holds those backends; the next update compares with
//! them). One that cannot be made says why, in the report's
//! `needs_recompile` entry: the caller (`weir endpoints`, exit 1; the
//! agent, a recompile) takes the full path. Never silently.

use weir_compiler::contract::endpoints_state::{ServiceUpdate, Stale};
use weir_compiler::ebpf::service::fill::Be;

use crate::iptables::service_chains::{self, BackendChange, Planned};

/// The decision for one update's service changes.
pub(super) struct Services {
    /// The record's list of services whose backends differ from the
    /// compiled ones, each marked in place or not.
    pub stale: Vec<Stale>,
    /// The rewrites to write, with the change each is for.
    planned: Vec<(Planned, usize)>,
    changes: Vec<BackendChange>,
    /// Services updated in place (the report's `services`).
    pub in_place: Vec<ServiceUpdate>,
}

fn sockets(bs: &[Be]) -> Vec<String> {
    bs.iter().map(crate::record::socket).collect()
}

impl Services {
    /// The services the caller must recompile for (with why).
    pub fn needs_recompile(&self) -> Vec<ServiceUpdate> {
        self.stale
            .iter()
            .filter(|s| !s.in_place)
            .map(|s| s.update.clone())
            .collect()
    }

    /// Marks change `i` not made in place, for `why`.
    fn refuse(&mut self, i: usize, why: String) {
        let c = &self.changes[i];
        match self
            .stale
            .iter_mut()
            .find(|s| s.index == c.service && s.group() == c.group)
        {
            Some(s) => {
                s.in_place = false;
                s.update.why = Some(why);
            }
            None => {
                // Back to the compiled backends, which the kernel does
                // not hold either: still a recompile.
                let mut update = ServiceUpdate::new(&c.name, c.group, sockets(&c.want));
                update.why = Some(why);
                self.stale.push(Stale {
                    index: c.service,
                    update,
                    backends: c.want.clone(),
                    in_place: false,
                });
                self.stale.sort_by_key(|s| (s.index, s.group()));
            }
        }
    }

    /// Writes the rewrites (one transaction per family, read back). A
    /// failure refuses every change of the update: the record then says
    /// they need the full path, and `weir status` compares the kernel
    /// with the rules last recorded. Returns the rule lines written.
    pub fn write(
        &mut self,
        rt: &crate::iptables::Iptables,
        state: &crate::iptables::State,
    ) -> usize {
        if self.planned.is_empty() {
            return 0;
        }
        let plans: Vec<Planned> = self.planned.iter().map(|(p, _)| p.clone()).collect();
        match rt.rewrite_service_chains(state, &plans) {
            Ok(n) => n,
            Err(e) => {
                let failed: Vec<usize> = self.planned.iter().map(|(_, i)| *i).collect();
                for i in failed {
                    self.refuse(i, format!("rewriting its chains failed: {e}"));
                }
                self.in_place.clear();
                0
            }
        }
    }
}

/// Plans each change against the rules in force (`applied.json`).
pub(super) fn decide(
    rt: &crate::iptables::Iptables,
    state: &crate::iptables::State,
    stale: Vec<Stale>,
    changes: &[BackendChange],
) -> Services {
    let mut out = Services {
        stale,
        planned: Vec::new(),
        changes: changes.to_vec(),
        in_place: Vec::new(),
    };
    if changes.is_empty() {
        return out;
    }
    let applied = rt.read_applied(state.generation);
    for (i, c) in changes.iter().enumerate() {
        let planned = match &applied {
            None => Err("no record of the rules applied (applied.json)".to_string()),
            Some(a) => service_chains::plan(a, state.generation, c),
        };
        match planned {
            Ok(p) => {
                if let Some(s) = out
                    .stale
                    .iter_mut()
                    .find(|s| s.index == c.service && s.group() == c.group)
                {
                    s.in_place = true;
                    s.update.why = None;
                }
                out.in_place
                    .push(ServiceUpdate::new(&c.name, c.group, sockets(&c.want)));
                if !p.is_noop() {
                    out.planned.push((p, i));
                }
            }
            Err(why) => out.refuse(i, why),
        }
    }
    out
}
