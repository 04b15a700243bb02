//! What is applied, and whether the kernel still has it.

use super::state::{State, StateHook};
use super::{exec, names, readback, records, Iptables, Saved, FAMILIES};
use crate::bundle::Family;
use crate::error::Error;

/// One hook as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookStatus {
    pub hook: StateHook,
    /// Jumps from the built-in chain to the hook chain (should be 1).
    pub jumps: usize,
    /// The hook chain jumps to the generation's chain.
    pub targets_generation: bool,
}

/// [`Iptables::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The state file, if anything was applied.
    pub state: Option<State>,
    pub hooks: Vec<HookStatus>,
    /// Generation chains recorded in the state file but absent.
    pub missing_chains: Vec<String>,
    /// Sets recorded in the state file but absent.
    pub missing_sets: Vec<String>,
    /// Per family: what the kernel holds against the record.
    pub families: Vec<FamilyStatus>,
    /// The recorded sets against the kernel's: the first difference.
    pub sets_difference: Option<String>,
    /// What this command finished or rolled back of an interrupted apply
    /// before looking ([`super::intent`]).
    pub recovered: Vec<String>,
    /// A generation is applied and the kernel holds exactly it.
    pub in_force: bool,
}

/// One family of [`Status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyStatus {
    pub family: Family,
    /// The generations the family's hook chains jump into: what IS in
    /// force (empty: none of ours).
    pub generations: Vec<u32>,
    /// The first difference between the recorded generation and the
    /// kernel's rules (`None`: they match).
    pub difference: Option<String>,
}

impl Iptables {
    /// The state file, checked against the kernel, after finishing or
    /// rolling back an interrupted apply.
    pub fn status(&self) -> Result<Status, Error> {
        exec::require_root()?;
        let _lock = self.lock()?;
        let recovered = self.recover()?;
        let mut status = match self.read_state()? {
            Some(state) => self.status_of(&state)?,
            None => Status {
                state: None,
                hooks: Vec::new(),
                missing_chains: Vec::new(),
                missing_sets: Vec::new(),
                families: Vec::new(),
                sets_difference: None,
                recovered: Vec::new(),
                in_force: false,
            },
        };
        status.recovered = recovered;
        Ok(status)
    }

    /// Per family: the generations in force and the first difference from
    /// the record (read back as the apply did, when `applied.json` is the
    /// generation's).
    fn families(&self, state: &State, saved: &Saved) -> Vec<FamilyStatus> {
        let applied = self.read_applied(state.generation);
        let expected = applied
            .as_ref()
            .map(|a| a.expected(&records::state_hooks(state)));
        FAMILIES
            .into_iter()
            .filter(|f| {
                state.hooks.iter().any(|h| h.family == *f)
                    || state.chains.iter().any(|c| c.family == *f)
            })
            .map(|family| {
                let mut generations: Vec<u32> = saved
                    .get(&family)
                    .into_iter()
                    .flat_map(|t| t.values())
                    .flat_map(|t| t.rules.iter())
                    .filter_map(|r| {
                        let w: Vec<&str> = r.split_whitespace().collect();
                        match w.as_slice() {
                            ["-A", hook, "-j", target] if names::is_hook_chain(hook) => {
                                names::chain_generation(target)
                            }
                            _ => None,
                        }
                    })
                    .collect();
                generations.sort_unstable();
                generations.dedup();
                let difference = expected
                    .as_ref()
                    .and_then(|e| e.get(&family))
                    .and_then(|e| readback::compare_family(family, e, saved));
                FamilyStatus {
                    family,
                    generations,
                    difference,
                }
            })
            .collect()
    }

    pub(crate) fn status_of(&self, state: &State) -> Result<Status, Error> {
        let saved = self.save_all()?;
        let table = |f, t: &str| saved.get(&f).and_then(|s| s.get(t));
        let hooks: Vec<HookStatus> = state
            .hooks
            .iter()
            .map(|h| {
                let t = table(h.family, &h.table);
                let want = format!("-A {} -j {}", h.hook_chain, h.target);
                HookStatus {
                    hook: h.clone(),
                    jumps: t.map_or(0, |t| t.jumps(&h.builtin, &h.hook_chain)),
                    targets_generation: t.is_some_and(|t| t.rules.contains(&want)),
                }
            })
            .collect();
        // One set of names per table: tens of thousands of chains.
        let present: std::collections::HashSet<(crate::bundle::Family, &str, &str)> = saved
            .iter()
            .flat_map(|(&f, tables)| {
                tables.iter().flat_map(move |(t, st)| {
                    st.chains.iter().map(move |c| (f, t.as_str(), c.as_str()))
                })
            })
            .collect();
        let missing_chains: Vec<String> = state
            .chains
            .iter()
            .filter(|c| !present.contains(&(c.family, c.table.as_str(), c.chain.as_str())))
            .map(|c| format!("{}/{}/{}", c.family.name(), c.table, c.chain))
            .collect();
        let missing_sets: Vec<String> = if state.sets.is_empty() {
            Vec::new()
        } else {
            let sets = self.list_sets(true)?;
            state
                .sets
                .iter()
                .filter(|s| !sets.contains(&s.kernel_name))
                .map(|s| s.kernel_name.clone())
                .collect()
        };
        let families = self.families(state, &saved);
        let sets_difference = match self.read_applied(state.generation) {
            Some(a) if !a.ipset.trim().is_empty() => {
                readback::compare_sets(&a.ipset, &self.save_sets(true)?)
            }
            _ => None,
        };
        let in_force = hooks.iter().all(|h| h.jumps == 1 && h.targets_generation)
            && missing_chains.is_empty()
            && missing_sets.is_empty()
            && sets_difference.is_none()
            && families.iter().all(|f| f.difference.is_none());
        Ok(Status {
            state: Some(state.clone()),
            hooks,
            missing_chains,
            missing_sets,
            families,
            sets_difference,
            recovered: Vec::new(),
            in_force,
        })
    }
}
