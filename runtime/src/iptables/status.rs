//! What is applied, and whether the kernel still has it.

use super::state::{State, StateHook};
use super::{exec, Iptables};
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
    /// A generation is applied and the kernel has all of it.
    pub in_force: bool,
}

impl Iptables {
    /// The state file, checked against the kernel.
    pub fn status(&self) -> Result<Status, Error> {
        exec::require_root()?;
        match self.read_state()? {
            Some(state) => self.status_of(&state),
            None => Ok(Status {
                state: None,
                hooks: Vec::new(),
                missing_chains: Vec::new(),
                missing_sets: Vec::new(),
                in_force: false,
            }),
        }
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
        let in_force = hooks.iter().all(|h| h.jumps == 1 && h.targets_generation)
            && missing_chains.is_empty()
            && missing_sets.is_empty();
        Ok(Status {
            state: Some(state.clone()),
            hooks,
            missing_chains,
            missing_sets,
            in_force,
        })
    }
}
