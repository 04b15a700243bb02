//! The intent record: a crash at any moment of an apply is recoverable.
//!
//! An apply changes the kernel in many steps (sets, then chains, then one
//! switch transaction per family, then removal of the old generation), and
//! `kill -9` may land between any two. Before the first step, `intent.json`
//! records generation N+1 in progress: every chain, hook and set it
//! creates (its future [`State`]) and the generation it replaces. The
//! record goes away only once the state file names the new generation and
//! the old one is removed. The next apply, status or detach (under the
//! lock) finds it and
//!
//! - **finishes** the apply when the state file already names the new
//!   generation (the read-back passed; only the old generation's removal
//!   was interrupted): the old generation's recorded chains, hooks and
//!   sets are removed;
//! - **rolls it back** otherwise: every hook chain gets the previous
//!   generation's targets back (or goes, with its jumps, when the previous
//!   generation had none there), and the new generation's recorded chains
//!   and sets are removed — whether the crash came before, between or
//!   after the two families' switch transactions.
//!
//! The same two routines serve a failed apply (`Iptables::roll_back`)
//! and the normal removal of the old generation (`Iptables::remove_old`),
//! and both remove only what a record names — never a chain or set merely
//! because its name looks like ours.
//!
//! Endpoint updates build new sets under temporary names and swap them in;
//! those names are recorded in `intent.json`'s `temp_sets` before they are
//! created, so a crash leaves nothing a later command does not remove.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use super::state::State;
use super::transaction::delete_chains_text;
use super::{names, table_text, Iptables, FAMILIES};
use crate::bundle::Family;
use crate::error::Error;

/// `intent.json`.
pub const INTENT: &str = "intent.json";

/// An apply (or endpoint update) in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// The generation being applied and everything it creates.
    #[serde(default)]
    pub new: Option<State>,
    /// The generation it replaces, as recorded when it started.
    #[serde(default)]
    pub previous: Option<State>,
    /// Sets an endpoint update creates under temporary names.
    #[serde(default)]
    pub temp_sets: Vec<String>,
    /// The switch also removes `previous`'s chains ([`super::fold`]): a
    /// rollback reloads them from `previous`'s `applied.json`.
    #[serde(default)]
    pub folded: bool,
}

/// What `Iptables::recover` did, in words (empty: nothing to recover).
pub type Recovered = Vec<String>;

/// `(family, table, builtin)` → hook targets of a state.
type HookMap = BTreeMap<(Family, String, String), Vec<String>>;

pub(crate) fn hook_map(s: Option<&State>) -> HookMap {
    let mut m = HookMap::new();
    for h in s.map_or(&[][..], |s| &s.hooks) {
        m.entry((h.family, h.table.clone(), h.builtin.clone()))
            .or_default()
            .push(h.target.clone());
    }
    m
}

pub(crate) fn chains_of(s: Option<&State>, family: Family, table: &str) -> Vec<String> {
    s.map_or(&[][..], |s| &s.chains)
        .iter()
        .filter(|c| c.family == family && c.table == table)
        .map(|c| c.chain.clone())
        .collect()
}

pub(crate) fn tables_of(a: Option<&State>, b: Option<&State>, family: Family) -> BTreeSet<String> {
    let mut t = BTreeSet::new();
    for s in [a, b].into_iter().flatten() {
        t.extend(
            s.chains
                .iter()
                .filter(|c| c.family == family)
                .map(|c| c.table.clone()),
        );
        t.extend(
            s.hooks
                .iter()
                .filter(|h| h.family == family)
                .map(|h| h.table.clone()),
        );
    }
    t
}

impl Iptables {
    fn intent_path(&self) -> std::path::PathBuf {
        self.opts.state_dir.join(INTENT)
    }

    /// The intent record, if an apply or update was interrupted.
    pub fn read_intent(&self) -> Result<Option<Intent>, Error> {
        let path = self.intent_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::State {
                    path,
                    message: format!("not a weir intent record: {e}"),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Writes the intent record (whole, by rename) before the kernel is
    /// touched.
    pub(crate) fn write_intent(&self, intent: &Intent) -> Result<(), Error> {
        let text = serde_json::to_string(intent).expect("intent serialises");
        super::files::write_private(&self.intent_path(), text.as_bytes())
    }

    pub(crate) fn remove_intent(&self) -> Result<(), Error> {
        super::files::remove(&self.intent_path())
    }

    /// Finishes or rolls back what an interrupted command left (see the
    /// module doc). Call with the lock held.
    pub(crate) fn recover(&self) -> Result<Recovered, Error> {
        let Some(intent) = self.read_intent()? else {
            return Ok(Vec::new());
        };
        let mut done = Vec::new();
        if let Some(new) = &intent.new {
            let state = self.read_state()?;
            let finished = state.as_ref().is_some_and(|s| {
                s.generation == new.generation && s.bundle_hash == new.bundle_hash
            });
            if finished {
                // The new generation's record, if the crash came before
                // it was put in place ([`super::fold`]).
                self.commit_applied(new.generation, false)?;
                let warnings = self.remove_old(intent.previous.as_ref(), new, None)?;
                if !warnings.is_empty() {
                    return Err(Error::Step {
                        step: format!(
                            "finishing the interrupted apply of generation {}",
                            new.generation
                        ),
                        program: "iptables-restore".into(),
                        stderr: warnings.join("; "),
                    });
                }
                done.push(format!(
                    "finished the interrupted apply of generation {} (removed the generation it replaced)",
                    new.generation
                ));
            } else {
                let reload = match (&intent.previous, intent.folded) {
                    (Some(p), true) => self.read_applied(p.generation),
                    _ => None,
                };
                self.roll_back(new, intent.previous.as_ref(), reload.as_ref())?;
                // A record of the rolled-back generation goes.
                self.discard_applied_next()?;
                done.push(format!(
                    "rolled back the interrupted apply of generation {}{}",
                    new.generation,
                    match &intent.previous {
                        Some(p) => format!(" (generation {} is in force)", p.generation),
                        None => " (nothing was in force before it)".into(),
                    }
                ));
            }
        }
        if !intent.temp_sets.is_empty() {
            let failures = self.destroy_sets_batch(&intent.temp_sets);
            if !failures.is_empty() {
                return Err(Error::Step {
                    step: "removing the sets of an interrupted endpoint update".into(),
                    program: "ipset".into(),
                    stderr: failures.join("; "),
                });
            }
            done.push(format!(
                "removed {} set(s) of an interrupted endpoint update",
                intent.temp_sets.len()
            ));
        }
        self.remove_intent()?;
        Ok(done)
    }

    /// Puts `previous` back in force and removes what `new` created (that
    /// `previous` does not also own), using only what exists — and, when
    /// the switch removed `previous`'s chains ([`super::fold`]), `reload`
    /// (`previous`'s `applied.json`) gives back those the kernel no
    /// longer holds, in the COMMIT that points the hooks at them.
    pub(crate) fn roll_back(
        &self,
        new: &State,
        previous: Option<&State>,
        reload: Option<&super::records::Applied>,
    ) -> Result<(), Error> {
        let saved = self.save_all()?;
        let prev_hooks = hook_map(previous);
        let new_hooks = hook_map(Some(new));
        for family in FAMILIES {
            let Some(tables) = saved.get(&family) else {
                continue;
            };
            let mut text = String::new();
            let mut drop = String::new();
            for table in tables_of(Some(new), previous, family) {
                let Some(t) = tables.get(&table) else {
                    continue;
                };
                let (mut declare, mut lines) = match (previous, reload) {
                    (Some(p), Some(a)) => super::fold::reload(p, a, family, &table, t),
                    _ => (Vec::new(), Vec::new()),
                };
                let reloaded: HashSet<String> = declare.iter().cloned().collect();
                let mut delete = Vec::new();
                let keys: BTreeSet<&(Family, String, String)> = prev_hooks
                    .keys()
                    .chain(new_hooks.keys())
                    .filter(|(f, tb, _)| *f == family && *tb == table)
                    .collect();
                for key in keys {
                    let builtin = &key.2;
                    let hook = names::hook_chain(builtin);
                    let present = t.jumps(builtin, &hook);
                    match prev_hooks.get(key) {
                        Some(targets) => {
                            declare.push(hook.clone());
                            // A previous chain someone removed is not
                            // jumped to (the restore would fail and every
                            // later command with it); status then says
                            // the previous generation is not in force.
                            lines.extend(
                                targets
                                    .iter()
                                    .filter(|g| t.chains.contains(g) || reloaded.contains(*g))
                                    .map(|g| format!("-A {hook} -j {g}")),
                            );
                            if present == 0 {
                                lines.push(format!("-I {builtin} 1 -j {hook}"));
                            }
                            for _ in 1..present {
                                lines.push(format!("-D {builtin} -j {hook}"));
                            }
                        }
                        None if t.chains.contains(&hook) => {
                            for _ in 0..present {
                                lines.push(format!("-D {builtin} -j {hook}"));
                            }
                            declare.push(hook.clone());
                            delete.push(hook);
                        }
                        None => {}
                    }
                }
                lines.extend(delete.iter().map(|c| format!("-X {c}")));
                if !declare.is_empty() || !lines.is_empty() {
                    text.push_str(&table_text(&table, &declare, &lines));
                }
                let present: HashSet<&str> = t.chains.iter().map(String::as_str).collect();
                let owned: HashSet<String> =
                    chains_of(previous, family, &table).into_iter().collect();
                let gone: Vec<String> = chains_of(Some(new), family, &table)
                    .into_iter()
                    .filter(|c| present.contains(c.as_str()) && !owned.contains(c))
                    .collect();
                drop.push_str(&delete_chains_text(
                    &table,
                    &[],
                    &gone,
                    self.lines_per_commit(family),
                ));
            }
            for (step, text) in [("restoring the hooks", text), ("removing chains", drop)] {
                if !text.is_empty() {
                    let step = format!("rolling back generation {}: {step}", new.generation);
                    self.restore(&step, family, &text)?;
                }
            }
        }
        let keep: BTreeSet<&String> = previous
            .map_or(&[][..], |p| &p.sets)
            .iter()
            .map(|s| &s.kernel_name)
            .collect();
        let sets: Vec<String> = new
            .sets
            .iter()
            .map(|s| s.kernel_name.clone())
            .filter(|s| !keep.contains(s))
            .collect();
        let failures = self.destroy_sets_batch(&sets);
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Step {
                step: format!("rolling back generation {}: removing sets", new.generation),
                program: "ipset".into(),
                stderr: failures.join("; "),
            })
        }
    }

    /// Removes what `old` recorded and `new` does not use: its chains, its
    /// hooks (jumps and hook chains) and its sets — only those that exist.
    /// Returns the failures (`new` is already in force).
    /// `saved`: what the kernel holds, when the caller has just read it
    /// under the lock (the apply's read-back); else it is read here.
    pub(crate) fn remove_old(
        &self,
        old: Option<&State>,
        new: &State,
        saved: Option<super::Saved>,
    ) -> Result<Vec<String>, Error> {
        let Some(old) = old else {
            return Ok(Vec::new());
        };
        let saved = match saved {
            Some(s) => s,
            None => self.save_all()?,
        };
        let mut warnings = Vec::new();
        for family in FAMILIES {
            let Some(tables) = saved.get(&family) else {
                continue;
            };
            let mut text = String::new();
            for table in tables_of(Some(old), None, family) {
                let Some(t) = tables.get(&table) else {
                    continue;
                };
                let r = super::fold::removal(old, new, family, &table, t);
                text.push_str(&delete_chains_text(
                    &table,
                    &r.unhook,
                    &r.chains,
                    self.lines_per_commit(family),
                ));
            }
            if !text.is_empty() {
                let step = format!("removing generation {} ({})", old.generation, family.name());
                if let Err(e) = self.restore(&step, family, &text) {
                    warnings.push(e.to_string());
                }
            }
        }
        let keep: BTreeSet<&String> = new.sets.iter().map(|s| &s.kernel_name).collect();
        let sets: Vec<String> = old
            .sets
            .iter()
            .map(|s| s.kernel_name.clone())
            .filter(|s| !keep.contains(s))
            .collect();
        warnings.extend(self.destroy_sets_batch(&sets));
        Ok(warnings)
    }
}
