//! Removing everything the back end made, and nothing else.
//!
//! Detach removes what the state record (and an interrupted apply's
//! intent record) says weir created — chains, hook chains and their jumps,
//! sets — never a chain or set because its name looks like ours (a user's
//! `WEIR12-MINE` or `weir7-mine` stays). Then it returns the node to the
//! baseline recorded before the first apply ([`super::records`]): the
//! empty nf_tables tables the tools created go, and so do the state
//! directory's files (state, records, endpoint record and side files,
//! lock) and the directory itself when it did not exist before.

use super::state::State;
use super::{exec, files, names, Iptables};
use crate::error::Error;

/// What [`Iptables::detach`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DetachReport {
    /// `family/table/chain` of every chain removed.
    pub chains: Vec<String>,
    /// `family/table/builtin -> hook` of every jump removed.
    pub jumps: Vec<String>,
    pub sets: Vec<String>,
    /// nf_tables tables removed (`ip/filter`): created by the tools at
    /// weir's first apply, empty now.
    pub tables: Vec<String>,
    /// What was finished or rolled back of an interrupted apply first.
    pub recovered: Vec<String>,
}

/// Files of the state directory that belong to the iptables back end.
fn ours(name: &str) -> bool {
    matches!(
        name,
        "state.json"
            | "state.json.tmp"
            | super::intent::INTENT
            | super::records::APPLIED
            | super::records::APPLIED_NEXT
            | super::records::BASELINE
            | "endpoints.json"
            | "lock"
            | "intent.tmp"
            | "applied.tmp"
            | "baseline.tmp"
    ) || name.starts_with("endpoints.")
        || name.starts_with(super::orphans::PREFIX)
}

impl Iptables {
    /// Finishes or rolls back an interrupted apply, then removes what the
    /// generation in force recorded, the tables weir's tools created and
    /// the state directory's files.
    pub fn detach(&self) -> Result<DetachReport, Error> {
        exec::require_root()?;
        let dir = self.opts.state_dir.clone();
        let fresh_dir = !dir.exists();
        let lock = self.lock()?;
        let mut report = DetachReport {
            recovered: self.recover()?,
            ..DetachReport::default()
        };
        if let Some(state) = self.read_state()? {
            self.remove_generation(&state, &mut report)?;
        }
        let baseline = self.read_baseline();
        if let Some(b) = &baseline {
            report.tables = self.remove_created_tables(b)?;
        }
        for e in std::fs::read_dir(&dir)
            .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?
            .flatten()
        {
            let name = e.file_name();
            if ours(&name.to_string_lossy()) {
                files::remove(&e.path())?;
            }
        }
        drop(lock);
        if fresh_dir || baseline.is_some_and(|b| !b.state_dir_existed) {
            // Only when empty: a file we do not know stays, with its
            // directory.
            let _ = std::fs::remove_dir(&dir);
        }
        Ok(report)
    }

    fn remove_generation(&self, state: &State, report: &mut DetachReport) -> Result<(), Error> {
        let saved = self.save_all()?;
        let table = |f, t: &str| saved.get(&f).and_then(|s| s.get(t));
        for c in &state.chains {
            if table(c.family, &c.table).is_some_and(|t| t.chains.contains(&c.chain)) {
                report
                    .chains
                    .push(format!("{}/{}/{}", c.family.name(), c.table, c.chain));
            }
        }
        let mut hooks: Vec<(crate::bundle::Family, &str, &str)> = state
            .hooks
            .iter()
            .map(|h| (h.family, h.table.as_str(), h.builtin.as_str()))
            .collect();
        hooks.dedup();
        for (f, tb, builtin) in hooks {
            let hook = names::hook_chain(builtin);
            let Some(t) = table(f, tb) else { continue };
            for _ in 0..t.jumps(builtin, &hook) {
                report
                    .jumps
                    .push(format!("{}/{tb}/{builtin} -> {hook}", f.name()));
            }
            if t.chains.contains(&hook) {
                report.chains.push(format!("{}/{tb}/{hook}", f.name()));
            }
        }
        report.sets = state.sets.iter().map(|s| s.kernel_name.clone()).collect();
        let nothing = State {
            chains: Vec::new(),
            hooks: Vec::new(),
            sets: Vec::new(),
            ..state.clone()
        };
        let failures = self.remove_old(Some(state), &nothing, None)?;
        if !failures.is_empty() {
            return Err(Error::Step {
                step: format!("detach (generation {})", state.generation),
                program: "iptables-restore / ipset".into(),
                stderr: failures.join("; "),
            });
        }
        self.remove_state()
    }
}
