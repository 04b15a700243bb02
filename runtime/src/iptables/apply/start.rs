//! The start of an apply: the kernel's rules and sets saved, a free
//! generation number picked, the bundle planned for it, the sets kept
//! found, and then step 1 (`ipset restore` of the sets not kept) beside
//! the keep phase (issue 21).
//!
//! **Order: the rules' save first, then the set restore.** Everything
//! that does not need the kernel runs beside the saves (`iptables-save`
//! of both families and `ipset save`, concurrently): the bundle read and
//! renamed for the generation that most likely follows, the generation in
//! force's record and its chains' content keys, and, once `ipset save`
//! is in, the sets kept ([`super::super::reuse`]).
//! Step 1 starts only when the rules' save is done, beside the keep phase
//! (which does not use the kernel); after the keep phase, still beside
//! step 1, the old generation's removal is decided ([`super::super::fold`])
//! and step 2's restores are made, parsed and encoded
//! ([`Iptables::step2`]: they need neither the new sets nor the tables).
//!
//! Session 13 had started step 1 as soon as `ipset save` showed which
//! sets are kept, while `iptables-save` still ran, to hide step 1's
//! waiting behind the save. That overlap serialised the two instead.
//! Both take the kernel's ipset mutex (`nfnl_lock(NFNL_SUBSYS_IPSET)`,
//! one for the whole machine): libxt_set in `iptables-save` asks for
//! each `-m set` rule's set name by index (`IP_SET_OP_GET_BYINDEX`,
//! ~134,000 `getsockopt`s at 100,000 rules), and every `ipset restore`
//! command holds it, a `create` that grows the kernel's table of sets
//! for a whole RCU grace period ([`super::super::load`] has the
//! measurement). So the save finished last, and the keep phase, which
//! needs the save, ran after both. Measured (session 15, the benchmark's
//! 100,000-rule replace, the old and this order alternately, four runs
//! each, load 2–7): the starting `iptables-save` 2.8 s (1.3–3.0) against
//! 1.0 s (0.9–1.1); the start (saves, and step 1's wait after the keep
//! phase) 2.9 s against 2.3 s; the replace 7.7 s (7.5–8.1) against 6.9 s
//! (6.5–7.5). Creating the sets first and saving after was slower still
//! (8.3 s: the keep phase then waits for both). Finding the kept sets
//! beside the save rather than after it saves ~0.2 s more. In a
//! namespace whose table of sets already has room (a node's later
//! replaces: no growth) the overlap cost less, and this order still
//! gained 0.05–0.2 s in three such replaces. A
//! one-policy-removed apply keeps nearly every set, so it has (almost)
//! no step 1 and the order makes no difference there; a first apply has
//! no keep phase and creates its sets in the switch.
//!
//! **The generation number** is the next one after the generation in
//! force that no set and no chain uses ([`pick_generation`]); the bundle
//! is planned for the likely number beside the saves and planned again
//! (rare: something left a chain or set of that number) when another is
//! picked. No set is created before the number is known, so nothing has
//! to be undone when it is not the likely one.
//!
//! **Fail closed:** the intent lists every set and chain the generation
//! could load before any set is created ([`Iptables::start_sets`]), so a
//! crash in between rolls them back; a failed step 1 is undone by the
//! apply as before; the keep phase compares with the rules the kernel
//! holds, and the read-back compares every rule and set after the switch.

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
    /// Step 1 ran (beside the keep phase): its outcome.
    pub sets_loaded: Option<Result<(), Error>>,
    pub old_applied: Option<Applied>,
    /// Step 2's restores, made during step 1's wait (with `plan.removal`
    /// set), when step 1 ran here.
    pub prepared: Option<super::Step2>,
}

/// The generation after `previous` that `live` (the generations of the
/// kernel's chains and sets) does not use; `None` when all are used.
fn pick_generation(previous: Option<u32>, live: &BTreeSet<u32>) -> Option<u32> {
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
fn chain_generations(saved: &Saved) -> BTreeSet<u32> {
    saved
        .values()
        .flat_map(|tables| tables.values())
        .flat_map(|t| t.chains.iter())
        .filter_map(|c| names::chain_generation(c))
        .collect()
}

impl Iptables {
    /// The generation in force's record and its chains' content keys
    /// (what the keep phase compares with), read beside the saves: none
    /// without a state or a record of that generation.
    fn old_record(&self, state: Option<&State>) -> (Option<Applied>, Option<OldKeys>) {
        let a = state.and_then(|st| self.read_applied(st.generation));
        let keys = a.as_ref().map(|a| super::super::keep::old_keys(&a.blocks));
        (a, keys)
    }

    /// Step 1 started before the keep phase: the intent lists `first`
    /// (every set and chain the generation could load) before any set
    /// is created, so a crash in between rolls them back; then
    /// `ipset restore` of the plan's sets on a thread of `s`.
    fn start_sets<'s>(
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

    /// The start of an apply (see the module doc): the kernel's state,
    /// the generation picked and planned, the sets kept; then step 1
    /// beside the keep phase when both have work (a replace).
    pub(super) fn start(
        &self,
        bundle: &Bundle,
        state: Option<&State>,
        likely: u32,
        need_ipset: bool,
        phases: &mut Phases,
    ) -> Result<Started, Error> {
        // The sets' content is needed when the generation in force has
        // sets (which to keep); otherwise their names (which numbers).
        let contents = state.filter(|s| !s.sets.is_empty());
        let t0 = Instant::now();
        let (saved, kernel_sets, planned, old) = std::thread::scope(|s| {
            let rules = s.spawn(|| self.save_families());
            let planned = s.spawn(|| Plan::new(bundle, likely));
            let old = s.spawn(|| self.old_record(state));
            let kernel_sets = match contents {
                Some(_) => self.save_sets(true).map(KernelSets::Saved),
                None => self.list_sets(need_ipset).map(KernelSets::Names),
            };
            // Beside the rules' save: the sets kept, for the likely
            // number (when no set uses it).
            let planned = planned.join().expect("plan thread").map(|mut plan| {
                let kept = match (contents, &kernel_sets) {
                    (Some(st), Ok(KernelSets::Saved(text)))
                        if !set_generations(text).contains(&likely) =>
                    {
                        Some(plan.share(&st.sets, text))
                    }
                    _ => None,
                };
                (plan, kept)
            });
            let saved = rules.join().expect("save thread");
            (
                saved,
                kernel_sets,
                planned,
                old.join().expect("applied record thread"),
            )
        });
        phases.add("kernel state", t0.elapsed());
        let (saved, kernel_sets) = (saved?, kernel_sets?);
        let mut live = kernel_sets.generations();
        live.extend(chain_generations(&saved));
        let previous = state
            .map(|s| s.generation)
            .or_else(|| live.iter().max().copied());
        let g = pick_generation(previous, &live).ok_or_else(|| Error::State {
            path: self.state_path(),
            message: "no free generation number (999 generations present)".into(),
        })?;
        let (mut plan, kept_sets) = phases.time("plan", || -> Result<(Plan, usize), Error> {
            match planned {
                // (With sets in force, `kept` is `None` only when a set
                // uses `likely`, so `g` is another number.)
                Ok((plan, kept)) if g == likely && (kept.is_some() || contents.is_none()) => {
                    Ok((plan, kept.unwrap_or(0)))
                }
                Err(e) if g == likely => Err(e),
                // (A set name's length depends on the generation's digits.)
                _ => {
                    let mut plan = Plan::new(bundle, g)?;
                    let kept = match (contents, &kernel_sets) {
                        (Some(st), KernelSets::Saved(text)) => plan.share(&st.sets, text),
                        _ => 0,
                    };
                    Ok((plan, kept))
                }
            }
        })?;
        let (old_applied, old_keys) = old;
        let mut kept_chains = 0;
        let mut prepared = None;
        // Step 1 runs beside the keep phase when both have work (a
        // replace): the sets do not depend on which chains are kept, and
        // the intent written first lists every set and every chain the
        // generation could load (kept chains only lose their new names).
        let sets_early = state.is_some() && old_keys.is_some() && !plan.load_ipset.is_empty();
        let sets_loaded = std::thread::scope(|s| -> Result<_, Error> {
            let sets = if sets_early {
                let first = plan.state(bundle, &self.opts);
                Some(phases.time("records", || self.start_sets(s, g, &plan, first, state))?)
            } else {
                None
            };
            // After the sets: a kept set's rules name it by its old name,
            // as the old chains do.
            if let (Some(state), Some(old)) = (state, &old_keys) {
                phases.time("keep chains", || {
                    kept_chains = plan.keep_chains(state, old, &saved);
                });
            }
            // Step 1 is mostly the kernel waiting: step 2's restores
            // are made meanwhile (they follow from the kept chains and
            // the old generation's removal).
            if sets.is_some() {
                prepared = Some(phases.time("iptables-restore", || {
                    self.fold(&mut plan, bundle, state, old_applied.as_ref(), &saved);
                    let step2 = self.step2(&plan, &saved, true);
                    let ahead = self.read_ahead(&step2);
                    (step2, ahead)
                }));
            }
            // What step 1 adds to the wall time here: its wait.
            let loaded =
                sets.map(|h| phases.time("ipset restore", || h.join().expect("ipset thread")));
            // A failed step 1 drops the tables read ahead, and with them
            // the lock, before the apply rolls back.
            if let (Some(Err(_)), Some((_, ahead))) = (&loaded, &mut prepared) {
                *ahead = None;
            }
            Ok(loaded)
        })?;
        Ok(Started {
            g,
            saved,
            plan,
            kept_sets,
            kept_chains,
            sets_loaded,
            old_applied,
            prepared,
        })
    }
}

/// The namespace's sets at the start: `ipset save` (when their content
/// is needed) or their names.
enum KernelSets {
    Saved(String),
    Names(Vec<String>),
}

impl KernelSets {
    /// The generations the sets' names use.
    fn generations(&self) -> BTreeSet<u32> {
        match self {
            KernelSets::Saved(text) => set_generations(text),
            KernelSets::Names(names) => names
                .iter()
                .filter_map(|s| names::set_generation(s))
                .collect(),
        }
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
    fn generations_of_saved_sets() {
        let text = "create weir12-c1 hash:net family inet\nadd weir12-c1 10.0.0.0/8\ncreate other hash:net\ncreate weir3-s2 hash:net\n";
        assert_eq!(
            set_generations(text),
            [3, 12].into_iter().collect::<BTreeSet<u32>>()
        );
    }
}
