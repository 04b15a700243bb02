//! The start of a replacing apply: the new generation's sets are created
//! while the kernel's rules are still being saved (issue 21).
//!
//! Measured at 100,000 rules (223,077 rules, 6,778 sets; session 13): an
//! apply that replaces a generation started with `iptables-save` of both
//! families (~0.8 s: every one of the ~134,000 `-m set` rules costs
//! libxt_set a socket and two `getsockopt`s to print its set's name) and
//! `ipset save` (~0.1–0.3 s) side by side, and only then began step 1,
//! `ipset restore` of the ~5,500 sets it does not keep. That step is
//! mostly waiting: the kernel's table of sets grows 64 slots at a time,
//! each growth waiting for an RCU grace period (~10 ms; [`super::super::load`]),
//! ~85 growths on the benchmark's replace. Step 1 ran beside the keep
//! phase (~0.3 s) and still added ~1.1 s of waiting after it.
//!
//! What step 1 needs is known before the rules' save ends:
//! - **which sets to create**: the bundle renamed for the generation
//!   (planned from the start, beside the saves) minus the sets kept
//!   because the kernel holds them with the same content
//!   ([`super::super::reuse`]), which is read from `ipset save` alone;
//! - **the generation number**: the next one after the generation in
//!   force, which must be used by no set and no chain. The sets' names
//!   come with `ipset save`; the chains' come with the rules' save. So
//!   step 1 starts once no set uses the number, and the number is
//!   checked against the chains when their save arrives. A chain of that
//!   number (left behind by something else) means the sets were created
//!   under a number that is not free: they are destroyed (they were
//!   written into the intent first, so a crash in between rolls them
//!   back) and the apply starts again in order, picking a free number as
//!   before ([`Iptables::free_generation`]).
//!
//! Nothing else changes: the intent lists every set and chain the
//! generation could load before any is created (as the keep phase's
//! overlap already did), the keep phase still compares with the rules
//! the kernel holds, and the read-back still compares every rule and
//! set after the switch.

use std::collections::BTreeSet;
use std::time::Instant;

use super::super::keep::OldKeys;
use super::super::records::Applied;
use super::super::{names, Iptables, Phases, Saved};
use super::Plan;
use crate::bundle::Bundle;
use crate::error::Error;
use crate::iptables::state::State;

/// How a generation's start went: what [`Iptables::apply`] continues
/// with.
pub(super) struct Started {
    pub g: u32,
    pub saved: Saved,
    pub plan: Plan,
    pub kept_sets: usize,
    pub kept_chains: usize,
    /// Step 1 ran (beside the saves and the keep phase): its outcome.
    pub sets_loaded: Option<Result<(), Error>>,
    pub old_applied: Option<Applied>,
}

/// The generation after `previous` that `live` (the generations of the
/// kernel's chains and sets) does not use; `None` when all are used.
pub(super) fn pick_generation(previous: Option<u32>, live: &BTreeSet<u32>) -> Option<u32> {
    let mut g = names::next_generation(previous.unwrap_or(0));
    while live.contains(&g) {
        g = names::next_generation(g);
        if Some(g) == previous {
            return None;
        }
    }
    Some(g)
}

/// The generations named by the sets of `ipset save` text.
fn set_generations(text: &str) -> BTreeSet<u32> {
    text.lines()
        .filter_map(|l| l.strip_prefix("create "))
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(names::set_generation)
        .collect()
}

/// The generations named by the chains of a save.
pub(super) fn chain_generations(saved: &Saved) -> BTreeSet<u32> {
    saved
        .values()
        .flat_map(|tables| tables.values())
        .flat_map(|t| t.chains.iter())
        .filter_map(|c| names::chain_generation(c))
        .collect()
}

/// The sets `ipset restore` text creates.
fn created(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("create "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

impl Iptables {
    /// The generation in force's record and its chains' content keys
    /// (what the keep phase compares with), read beside the saves: none
    /// without a state or a record of that generation.
    pub(super) fn old_record(&self, state: Option<&State>) -> (Option<Applied>, Option<OldKeys>) {
        let a = state.and_then(|st| self.read_applied(st.generation));
        let keys = a.as_ref().map(|a| super::super::keep::old_keys(&a.blocks));
        (a, keys)
    }

    /// Step 1 started before the keep phase: the intent lists `first`
    /// (every set and chain the generation could load) before any set
    /// is created, so a crash in between rolls them back; then
    /// `ipset restore` of the plan's sets on a thread of `s`.
    pub(super) fn start_sets<'s>(
        &'s self,
        s: &'s std::thread::Scope<'s, '_>,
        g: u32,
        plan: &Plan,
        first: State,
        previous: Option<&State>,
    ) -> Result<std::thread::ScopedJoinHandle<'s, Result<(), Error>>, Error> {
        self.write_intent(&super::super::intent::Intent {
            new: Some(first),
            previous: previous.cloned(),
            temp_sets: Vec::new(),
            folded: false,
        })?;
        let (load, refs) = (plan.load_ipset.clone(), plan.set_refs());
        Ok(s.spawn(move || {
            let step = format!("step 1 (ipset restore of generation {g})");
            self.restore_sets(&step, &load, &refs)
        }))
    }

    /// Replacing `state`'s generation (which has sets): saves the kernel's
    /// rules and sets, plans generation `likely`, and creates its sets as
    /// soon as `ipset save` shows which to keep and that no set uses
    /// `likely`, while the rules' save is still running; then keeps the
    /// chains it can. `Ok(None)`: nothing was changed and the apply must
    /// start in order (a set uses the number, or the sets were created
    /// under a number a chain uses and were destroyed again).
    pub(super) fn start_replacing(
        &self,
        bundle: &Bundle,
        state: &State,
        likely: u32,
        phases: &mut Phases,
    ) -> Result<Option<Started>, Error> {
        let t0 = Instant::now();
        std::thread::scope(|s| {
            let rules = s.spawn(|| self.save_all());
            let planned = s.spawn(|| Plan::new(bundle, likely));
            let old = s.spawn(|| self.old_record(Some(state)));
            let kernel_sets = self.save_sets(true);
            let mut plan = planned.join().expect("plan thread")?;
            let kernel_sets = kernel_sets?;
            if set_generations(&kernel_sets).contains(&likely) {
                rules.join().expect("save thread")?;
                return Ok(None);
            }
            let kept_sets = plan.share(&state.sets, &kernel_sets);
            let first = (!plan.load_ipset.is_empty()).then(|| plan.state(bundle, &self.opts));
            let sets = match &first {
                Some(first) => {
                    Some(self.start_sets(s, likely, &plan, first.clone(), Some(state))?)
                }
                None => None,
            };
            let saved = rules.join().expect("save thread");
            phases.add("kernel state", t0.elapsed());
            // Past this point step 1 may have created sets: any way out
            // waits for it and removes them.
            let undo = |e: Error| -> Error {
                match &first {
                    Some(first) => self.undo(e, first, Some(state), None),
                    None => e,
                }
            };
            let saved = match saved {
                Ok(saved) => saved,
                Err(e) => {
                    let _ = sets.map(|h| h.join().expect("ipset thread"));
                    return Err(undo(e));
                }
            };
            if chain_generations(&saved).contains(&likely) {
                let _ = sets.map(|h| h.join().expect("ipset thread"));
                if first.is_some() {
                    let failed = self.destroy_sets_batch(&created(&plan.load_ipset));
                    if !failed.is_empty() {
                        let e = Error::State {
                            path: self.state_path(),
                            message: format!(
                                "generation {likely} is used by chains in the kernel; removing the sets created for it failed: {}",
                                failed.join("; ")
                            ),
                        };
                        return Err(undo(e));
                    }
                    self.remove_intent()?;
                }
                return Ok(None);
            }
            // The old record was read beside all this; without it no
            // chain is kept (all are loaded).
            let (old_applied, old_keys) = old.join().expect("applied record thread");
            let kept_chains = match &old_keys {
                Some(old_keys) => {
                    phases.time("keep chains", || plan.keep_chains(state, old_keys, &saved))
                }
                None => 0,
            };
            let sets_loaded =
                sets.map(|h| phases.time("ipset restore", || h.join().expect("ipset thread")));
            Ok(Some(Started {
                g: likely,
                saved,
                plan,
                kept_sets,
                kept_chains,
                sets_loaded,
                old_applied,
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_free_generation_skips_used_ones_and_wraps() {
        let live: BTreeSet<u32> = [3, 4].into_iter().collect();
        assert_eq!(pick_generation(Some(2), &live), Some(5));
        assert_eq!(pick_generation(None, &BTreeSet::new()), Some(1));
        assert_eq!(
            pick_generation(Some(names::MAX_GENERATION), &BTreeSet::new()),
            Some(1)
        );
        let all: BTreeSet<u32> = (1..=names::MAX_GENERATION).collect();
        assert_eq!(pick_generation(Some(7), &all), None);
    }

    #[test]
    fn generations_of_sets_and_created_names() {
        let text = "create weir12-c1 hash:net family inet\nadd weir12-c1 10.0.0.0/8\ncreate other hash:net\ncreate weir3-s2 hash:net\n";
        assert_eq!(
            set_generations(text),
            [3, 12].into_iter().collect::<BTreeSet<u32>>()
        );
        assert_eq!(created(text), ["weir12-c1", "other", "weir3-s2"]);
    }
}
