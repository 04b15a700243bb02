//! Applying a bundle as a new generation (see the module doc of
//! [`crate::iptables`] for the steps).

use std::collections::{BTreeMap, BTreeSet};

use super::names::{self, MAX_SET_LEN, SET_PREFIX};
use super::restore::{self, TableBlock, TABLES};
use super::state::{State, StateChain, StateHook, StateSet};
use super::{exec, table_text, Iptables, Saved, FAMILIES};
use crate::bundle::{Bundle, Family};
use crate::error::Error;

/// What [`Iptables::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// The generation now in force.
    pub generation: u32,
    /// The generation it replaced, if any.
    pub previous: Option<u32>,
    /// `true` if the same bundle was already in force and nothing ran.
    pub unchanged: bool,
    /// Problems removing the old generation (the new one is in force).
    pub warnings: Vec<String>,
}

/// Built-in chains per table.
fn builtins(table: &str) -> &'static [&'static str] {
    match table {
        "raw" => &["PREROUTING", "OUTPUT"],
        "mangle" => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        "nat" => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        "filter" | "security" => &["INPUT", "FORWARD", "OUTPUT"],
        _ => &[],
    }
}

/// The bundle, checked and rewritten for generation `g`.
struct Plan {
    g: u32,
    /// Per family: table blocks.
    blocks: BTreeMap<Family, Vec<TableBlock>>,
    /// Per family: (table, builtin) → generation targets, in manifest order.
    hooks: BTreeMap<Family, BTreeMap<(String, String), Vec<String>>>,
    /// `ipset restore` text.
    ipset: String,
    sets: Vec<StateSet>,
}

impl Plan {
    fn new(bundle: &Bundle, g: u32) -> Result<Plan, Error> {
        let mut blocks = BTreeMap::new();
        for family in FAMILIES {
            let parsed = restore::parse_bundle_rules(bundle.rules(family), g)
                .map_err(|m| Error::bundle(bundle.rules_file(family), m))?;
            blocks.insert(family, parsed);
        }
        let manifest = bundle.dir.join(crate::bundle::MANIFEST);
        let mut hooks: BTreeMap<Family, BTreeMap<(String, String), Vec<String>>> = BTreeMap::new();
        for hook in &bundle.hooks {
            if !TABLES.contains(&hook.table.as_str()) {
                return Err(Error::bundle(
                    &manifest,
                    format!("hook into unknown table `{}`", hook.table),
                ));
            }
            if !builtins(&hook.table).contains(&hook.chain.as_str()) {
                return Err(Error::bundle(
                    &manifest,
                    format!(
                        "hook from `{}`, which is not a built-in chain of table `{}`",
                        hook.chain, hook.table
                    ),
                ));
            }
            let target = names::generation_chain(&hook.target, g);
            for &family in &hook.families {
                let declared = blocks[&family]
                    .iter()
                    .any(|b| b.table == hook.table && b.chains.contains(&target));
                if !declared {
                    return Err(Error::bundle(
                        bundle.rules_file(family),
                        format!(
                            "hook target `{}` is not a chain declared in table `{}`",
                            hook.target, hook.table
                        ),
                    ));
                }
                let list = hooks
                    .entry(family)
                    .or_default()
                    .entry((hook.table.clone(), hook.chain.clone()))
                    .or_default();
                if !list.contains(&target) {
                    list.push(target.clone());
                }
            }
        }

        let ipset_path = bundle.dir.join(crate::bundle::IPSET_RULES);
        let mut ipset = String::new();
        let mut sets = Vec::new();
        for (n, raw) in bundle.ipset_rules.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut t = line.split_whitespace();
            let cmd = t.next().unwrap_or("");
            let name = t.next().unwrap_or("");
            if !matches!(cmd, "create" | "add" | "-N" | "-A") {
                return Err(Error::bundle(
                    &ipset_path,
                    format!(
                        "line {}: `{cmd}` is not allowed in a bundle (only create and add)",
                        n + 1
                    ),
                ));
            }
            if !name.starts_with(SET_PREFIX) {
                return Err(Error::bundle(
                    &ipset_path,
                    format!(
                        "line {}: set `{name}` is not a bundle set (names start with `{SET_PREFIX}`)",
                        n + 1
                    ),
                ));
            }
            let kernel_name = names::generation_set(name, g);
            if kernel_name.len() > MAX_SET_LEN {
                return Err(Error::bundle(
                    &ipset_path,
                    format!(
                        "line {}: set name `{kernel_name}` is longer than {MAX_SET_LEN} characters",
                        n + 1
                    ),
                ));
            }
            if matches!(cmd, "create" | "-N") {
                sets.push(StateSet {
                    name: name.to_string(),
                    kernel_name,
                });
            }
            ipset.push_str(&names::rewrite_line(line, g));
            ipset.push('\n');
        }
        Ok(Plan {
            g,
            blocks,
            hooks,
            ipset,
            sets,
        })
    }

    fn families(&self) -> Vec<Family> {
        FAMILIES
            .into_iter()
            .filter(|f| {
                !self.blocks[f].is_empty() || self.hooks.get(f).is_some_and(|h| !h.is_empty())
            })
            .collect()
    }

    /// The switch transaction for one family.
    fn switch_text(&self, family: Family, saved: &Saved) -> String {
        let empty = BTreeMap::new();
        let hooks = self.hooks.get(&family).unwrap_or(&empty);
        let blocks = &self.blocks[&family];
        let mut text = String::new();
        for table in TABLES {
            let block = blocks.iter().find(|b| b.table == *table);
            let table_hooks: Vec<_> = hooks.iter().filter(|((t, _), _)| t == table).collect();
            if block.is_none() && table_hooks.is_empty() {
                continue;
            }
            let mut declare: Vec<String> = table_hooks
                .iter()
                .map(|((_, b), _)| names::hook_chain(b))
                .collect();
            let mut lines = Vec::new();
            if let Some(block) = block {
                declare.extend(block.chains.iter().cloned());
                lines.extend(block.rules.iter().cloned());
            }
            let saved_table = saved.get(&family).and_then(|s| s.get(*table));
            for ((_, builtin), targets) in &table_hooks {
                let hook = names::hook_chain(builtin);
                for target in *targets {
                    lines.push(format!("-A {hook} -j {target}"));
                }
                let present = saved_table.map_or(0, |t| t.jumps(builtin, &hook));
                if present == 0 {
                    lines.push(format!("-I {builtin} 1 -j {hook}"));
                }
                for _ in 1..present {
                    lines.push(format!("-D {builtin} -j {hook}"));
                }
            }
            text.push_str(&table_text(table, &declare, &lines));
        }
        text
    }

    /// Undoes this family's switch: hook chains get their saved rules back,
    /// jumps we inserted go, the new generation's chains go.
    fn revert_text(&self, family: Family, saved: &Saved) -> String {
        let empty = BTreeMap::new();
        let hooks = self.hooks.get(&family).unwrap_or(&empty);
        let mut text = String::new();
        for table in TABLES {
            let block = self.blocks[&family].iter().find(|b| b.table == *table);
            let table_hooks: Vec<_> = hooks.keys().filter(|(t, _)| t == table).collect();
            if block.is_none() && table_hooks.is_empty() {
                continue;
            }
            let saved_table = saved.get(&family).and_then(|s| s.get(*table));
            let mut declare = Vec::new();
            let mut lines = Vec::new();
            let mut delete = Vec::new();
            for (_, builtin) in table_hooks {
                let hook = names::hook_chain(builtin);
                declare.push(hook.clone());
                match saved_table.filter(|t| t.chains.contains(&hook)) {
                    Some(t) => {
                        let prefix = format!("-A {hook} ");
                        lines.extend(t.rules.iter().filter(|r| r.starts_with(&prefix)).cloned());
                    }
                    None => {
                        lines.push(format!("-D {builtin} -j {hook}"));
                        delete.push(hook);
                    }
                }
            }
            if let Some(block) = block {
                declare.extend(block.chains.iter().cloned());
                delete.extend(block.chains.iter().cloned());
            }
            lines.extend(delete.iter().map(|c| format!("-X {c}")));
            text.push_str(&table_text(table, &declare, &lines));
        }
        text
    }

    /// Removes what the kernel had of ours that the new generation does not
    /// use: old generation chains, unused hook chains and their jumps.
    fn cleanup_text(&self, family: Family, saved: &Saved) -> String {
        let empty = BTreeMap::new();
        let hooks = self.hooks.get(&family).unwrap_or(&empty);
        let mut text = String::new();
        let Some(tables) = saved.get(&family) else {
            return text;
        };
        for (table, t) in tables {
            let keep = |chain: &str| {
                names::is_hook_chain(chain)
                    && hooks
                        .keys()
                        .any(|(tb, b)| tb == table && names::hook_chain(b) == chain)
            };
            let stale: Vec<String> = t
                .our_chains()
                .into_iter()
                .filter(|c| !keep(c) && names::chain_generation(c) != Some(self.g))
                .collect();
            let jumps: Vec<(String, String)> = t
                .hook_jumps()
                .into_iter()
                .filter(|(_, hook)| !keep(hook))
                .collect();
            if stale.is_empty() && jumps.is_empty() {
                continue;
            }
            let mut lines: Vec<String> = jumps
                .iter()
                .map(|(b, h)| format!("-D {b} -j {h}"))
                .collect();
            lines.extend(stale.iter().map(|c| format!("-X {c}")));
            text.push_str(&table_text(table, &stale, &lines));
        }
        text
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Iptables {
    /// Applies `bundle` as a new generation, atomically replacing ours and
    /// nothing else. Re-applying the bundle in force (same content hash,
    /// hooks present) changes nothing.
    pub fn apply(&self, bundle: &Bundle) -> Result<ApplyReport, Error> {
        exec::require_root()?;
        for family in FAMILIES {
            exec::require_program(&self.opts.variant.restore(family))?;
            exec::require_program(&self.opts.variant.save(family))?;
        }
        let need_ipset = !bundle.ipset_rules.trim().is_empty();
        if need_ipset {
            exec::require_program("ipset")?;
        }
        let _lock = self.lock()?;
        let state = self.read_state()?;
        if let Some(state) = &state {
            if state.bundle_hash == bundle.content_hash && self.status_of(state)?.in_force {
                return Ok(ApplyReport {
                    generation: state.generation,
                    previous: Some(state.generation),
                    unchanged: true,
                    warnings: Vec::new(),
                });
            }
        }

        let saved = self.save_all()?;
        let kernel_sets = self.list_sets(need_ipset)?;
        let mut live: BTreeSet<u32> = kernel_sets
            .iter()
            .filter_map(|s| names::set_generation(s))
            .collect();
        for tables in saved.values() {
            for t in tables.values() {
                live.extend(t.chains.iter().filter_map(|c| names::chain_generation(c)));
            }
        }
        let previous = state
            .as_ref()
            .map(|s| s.generation)
            .or_else(|| live.iter().max().copied());
        let mut g = names::next_generation(previous.unwrap_or(0));
        while live.contains(&g) {
            g = names::next_generation(g);
            if Some(g) == previous {
                return Err(Error::State {
                    path: self.state_path(),
                    message: "no free generation number (999 generations present)".into(),
                });
            }
        }
        let plan = Plan::new(bundle, g)?;

        // Step 1: the new generation's sets.
        let new_sets: Vec<String> = plan.sets.iter().map(|s| s.kernel_name.clone()).collect();
        if !plan.ipset.is_empty() {
            let step = format!("step 1 (ipset restore of generation {g})");
            if let Err(e) =
                self.exec
                    .run_ok(&step, "ipset", &["restore", "-exist"], Some(&plan.ipset))
            {
                self.destroy_sets(&new_sets);
                return Err(super::annotate(e, &plan.ipset));
            }
        }

        // Step 2: the switch, one transaction per family.
        let families = plan.families();
        for (i, &family) in families.iter().enumerate() {
            let step = format!(
                "step 2 ({} transaction of generation {g})",
                self.opts.variant.restore(family)
            );
            let text = plan.switch_text(family, &saved);
            if let Err(e) = self.restore(&step, family, &text) {
                for &done in &families[..i] {
                    let _ = self.restore("reverting", done, &plan.revert_text(done, &saved));
                }
                self.destroy_sets(&new_sets);
                return Err(e);
            }
        }

        // Step 3: remove the old generation.
        let mut warnings = Vec::new();
        for family in FAMILIES {
            let text = plan.cleanup_text(family, &saved);
            if text.is_empty() {
                continue;
            }
            let step = format!("removing old chains ({})", family.name());
            if let Err(e) = self.restore(&step, family, &text) {
                warnings.push(e.to_string());
            }
        }
        let old_sets: Vec<String> = kernel_sets
            .into_iter()
            .filter(|s| names::set_generation(s).is_some_and(|sg| sg != g))
            .collect();
        warnings.extend(self.destroy_sets(&old_sets));

        // Step 4: record it.
        let mut chains = Vec::new();
        for (&family, blocks) in &plan.blocks {
            for b in blocks {
                chains.extend(b.chains.iter().map(|c| StateChain {
                    family,
                    table: b.table.clone(),
                    chain: c.clone(),
                }));
            }
        }
        let mut hooks = Vec::new();
        for (&family, map) in &plan.hooks {
            for ((table, builtin), targets) in map {
                hooks.extend(targets.iter().map(|t| StateHook {
                    family,
                    table: table.clone(),
                    builtin: builtin.clone(),
                    hook_chain: names::hook_chain(builtin),
                    target: t.clone(),
                }));
            }
        }
        self.write_state(&State {
            backend: "iptables".into(),
            generation: g,
            bundle_hash: bundle.content_hash.clone(),
            source_hash: bundle.source_hash.clone(),
            bundle_dir: bundle.dir.display().to_string(),
            netns: self.opts.netns.clone(),
            variant: self.opts.variant.name().into(),
            applied_at: now(),
            chains,
            hooks,
            sets: plan.sets,
        })?;
        Ok(ApplyReport {
            generation: g,
            previous,
            unchanged: false,
            warnings,
        })
    }
}
