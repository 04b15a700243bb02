//! Removing everything the back end made, and nothing else.

use super::apply::delete_chains_text;
use super::names;
use super::{exec, Iptables, FAMILIES};
use crate::error::Error;

/// What [`Iptables::detach`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DetachReport {
    /// `family/table/chain` of every chain removed.
    pub chains: Vec<String>,
    /// `family/table/builtin -> hook` of every jump removed.
    pub jumps: Vec<String>,
    pub sets: Vec<String>,
}

impl Iptables {
    /// Removes our hook jumps, hook chains, every generation's chains and
    /// sets, and the state file. Works from what the kernel has (chains
    /// named `WEIR-HOOK-…`/`WEIR<g>-…`, sets `weir<g>-…`), so it also
    /// cleans up after a crash or a lost state file.
    pub fn detach(&self) -> Result<DetachReport, Error> {
        exec::require_root()?;
        let _lock = self.lock()?;
        let saved = self.save_all()?;
        let mut report = DetachReport::default();
        for family in FAMILIES {
            let mut text = String::new();
            let mut max = None;
            for (table, t) in &saved[&family] {
                let chains = t.our_chains();
                let jumps = t.hook_jumps();
                if chains.is_empty() && jumps.is_empty() {
                    continue;
                }
                let unhook: Vec<String> = jumps
                    .iter()
                    .map(|(b, h)| format!("-D {b} -j {h}"))
                    .collect();
                let max = *max.get_or_insert_with(|| self.lines_per_commit(family));
                text.push_str(&delete_chains_text(table, &unhook, &chains, max));
                let f = family.name();
                report
                    .chains
                    .extend(chains.iter().map(|c| format!("{f}/{table}/{c}")));
                report
                    .jumps
                    .extend(jumps.iter().map(|(b, h)| format!("{f}/{table}/{b} -> {h}")));
            }
            if !text.is_empty() {
                let step = format!("detach ({})", self.opts.variant.restore(family));
                self.restore(&step, family, &text)?;
            }
        }
        let sets: Vec<String> = self
            .list_sets(false)?
            .into_iter()
            .filter(|s| names::set_generation(s).is_some())
            .collect();
        let failures = self.destroy_sets_batch(&sets);
        if !failures.is_empty() {
            return Err(Error::Step {
                step: "detach (ipset destroy)".into(),
                program: "ipset".into(),
                stderr: failures.join("; "),
            });
        }
        report.sets = sets;
        self.remove_state()?;
        Ok(report)
    }
}
