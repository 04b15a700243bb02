//! Applying a bundle as a new generation (see the module doc of
//! [`crate::iptables`] for the steps).

mod start;

use std::collections::{BTreeMap, BTreeSet};

use super::names::{self, MAX_SET_LEN, SET_PREFIX};
use super::records::Applied;
use super::restore::{self, TableBlock, TABLES};
use super::state::{State, StateChain, StateHook, StateSet};
use super::transaction::{blocks_text, declare, delete_chains_lines};
use super::xt::{Ahead, Prepared};

/// Step 2's restores, prepared, and the tables they write if read ahead
/// (while step 1 still ran).
pub(super) type Step2 = (Vec<(Family, Prepared)>, Option<Ahead>);
use super::{exec, table_text, Iptables, Phases, Saved, FAMILIES};
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
    /// Where the apply's wall time went ([`super::load`]).
    pub phases: super::Phases,
    /// Sets of the replaced generation the new one kept, unchanged,
    /// instead of creating them ([`super::reuse`]).
    pub kept_sets: usize,
    /// Chains of the replaced generation the new one kept, unchanged,
    /// instead of loading them ([`super::keep`]).
    pub kept_chains: usize,
    /// IPv4 and IPv6 restore blocks written to x_tables directly, and those the
    /// direct loader sent to the tool ([`super::xt`]).
    pub xtables: super::xt::Counts,
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
    /// `ipset restore` text: every set of the generation, kept sets
    /// ([`super::reuse`]) under their old names (what the kernel must hold).
    ipset: String,
    /// What step 1 restores: `ipset` without the kept sets.
    load_ipset: String,
    sets: Vec<StateSet>,
    /// Chains kept from the generation in force ([`super::keep`]): in
    /// `blocks` under their old names, not loaded.
    kept: super::keep::KeptChains,
    /// The generation in force's removal, done by the switch's COMMIT
    /// ([`super::fold`]; empty: removed afterwards).
    removal: super::fold::Removals,
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
            load_ipset: ipset.clone(),
            ipset,
            sets,
            kept: Default::default(),
            removal: Default::default(),
        })
    }

    /// Keeps the sets of the generation in force (`previous`) whose
    /// content in the kernel (`kernel`, `ipset save`) is exactly a new
    /// set's ([`super::reuse`]): the rules and the state name the old set,
    /// and step 1 does not create it. Returns how many were kept.
    fn share(&mut self, previous: &[StateSet], kernel: &str) -> usize {
        let map = super::reuse::plan(&self.ipset, &self.sets, previous, kernel);
        if map.is_empty() {
            return 0;
        }
        for s in &mut self.sets {
            if let Some(old) = map.get(&s.kernel_name) {
                s.kernel_name = old.clone();
            }
        }
        for block in self.blocks.values_mut().flatten() {
            for r in &mut block.rules {
                if r.contains("--match-set ") {
                    if let std::borrow::Cow::Owned(n) = super::reuse::rename_words(r, &map) {
                        *r = n;
                    }
                }
            }
        }
        let (load, whole) = super::reuse::split_text(&self.ipset, &map);
        self.load_ipset = load;
        self.ipset = whole;
        map.len()
    }

    /// Keeps the chains of the generation in force (`previous`, recorded
    /// as `old`) whose content the kernel (`saved`) holds exactly as a
    /// new chain's ([`super::keep`]): the new generation's blocks name the
    /// old chain, and step 2 does not load it. Returns how many were kept.
    fn keep_chains(
        &mut self,
        previous: &State,
        old: &super::keep::OldKeys,
        saved: &Saved,
    ) -> usize {
        let owned: std::collections::HashSet<(Family, &str, &str)> = previous
            .chains
            .iter()
            .map(|c| (c.family, c.table.as_str(), c.chain.as_str()))
            .collect();
        let entries: BTreeSet<&String> = self
            .hooks
            .values()
            .flat_map(|m| m.values())
            .flatten()
            .collect();
        let fe = names::generation_chain("WEIR-FE", self.g);
        let be = names::generation_chain("WEIR-BE", self.g);
        let never =
            |c: &str| entries.contains(&c.to_string()) || c.starts_with(&fe) || c.starts_with(&be);
        let kept = super::keep::plan(&self.blocks, old, &owned, saved, &never);
        super::keep::rename(&mut self.blocks, &kept);
        self.kept = kept;
        self.kept.values().map(BTreeMap::len).sum()
    }

    /// How many rule lines name each set ([`super::load::set_refs`]).
    fn set_refs(&self) -> std::collections::HashMap<String, usize> {
        super::load::set_refs(self.blocks.values().flatten().flat_map(|b| b.rules.iter()))
    }

    fn families(&self) -> Vec<Family> {
        FAMILIES
            .into_iter()
            .filter(|f| {
                !self.blocks[f].is_empty() || self.hooks.get(f).is_some_and(|h| !h.is_empty())
            })
            .collect()
    }

    /// The new generation's chains and rules for one family, per table:
    /// declarations first, then rules (kept chains, [`super::keep`], are
    /// neither: they are in the kernel already).
    fn load_lines(&self, family: Family) -> Vec<(&str, Vec<String>)> {
        let kept: std::collections::HashSet<&str> = self
            .kept
            .get(&family)
            .into_iter()
            .flat_map(|m| m.values())
            .map(String::as_str)
            .collect();
        let is_kept = |r: &String| !kept.is_empty() && kept.contains(super::keep::rule_chain(r));
        self.blocks[&family]
            .iter()
            .map(|block| {
                let mut lines: Vec<String> = block
                    .chains
                    .iter()
                    .filter(|c| !kept.contains(c.as_str()))
                    .map(|c| declare(c))
                    .collect();
                lines.extend(block.rules.iter().filter(|r| !is_kept(r)).cloned());
                (block.table.as_str(), lines)
            })
            .collect()
    }

    /// Steps 2's restore text for one family: the new generation's chains
    /// ([`Plan::load_lines`]), then the switch ([`Plan::switch_lines`]).
    /// With the nf_tables tools (`max` lines per COMMIT) the load is cut
    /// into blocks and the switch comes in the last blocks: nothing jumps
    /// into the new chains until it, so splitting the load changes nothing
    /// traffic can see. The legacy tools (`max` unbounded) get one COMMIT
    /// per table holding both: x_tables replaces a whole table per
    /// COMMIT, atomically, so one COMMIT is as atomic and costs one table
    /// replacement instead of two.
    fn restore_text(&self, family: Family, saved: &Saved, max: usize) -> String {
        let mut load = self.load_lines(family);
        let mut switch = self.switch_lines(family, saved);
        let mut text = String::new();
        if max == usize::MAX {
            let mut removal: BTreeMap<&str, Vec<String>> = self
                .removal
                .iter()
                .filter(|((f, _), _)| *f == family)
                .map(|((_, t), r)| (t.as_str(), delete_chains_lines(&r.unhook, &r.chains)))
                .collect();
            for (table, lines) in &mut load {
                if let Some(i) = switch.iter().position(|(t, _, _)| t == table) {
                    let (_, hook_chains, mut sw) = switch.remove(i);
                    let at = lines.iter().take_while(|l| l.starts_with(':')).count();
                    lines.splice(at..at, hook_chains.iter().map(|c| declare(c)));
                    lines.append(&mut sw);
                }
                if let Some(mut r) = removal.remove(table) {
                    lines.append(&mut r);
                }
                text.push_str(&blocks_text(table, lines, max));
            }
            for (table, _, lines) in &mut switch {
                if let Some(mut r) = removal.remove(table) {
                    lines.append(&mut r);
                }
            }
            for (table, lines) in &removal {
                text.push_str(&blocks_text(table, lines, max));
            }
        } else {
            for (table, lines) in &load {
                text.push_str(&blocks_text(table, lines, max));
            }
        }
        for (table, declare, lines) in &switch {
            text.push_str(&table_text(table, declare, lines));
        }
        text
    }

    /// The switch for one family, per table: hook chains to redefine
    /// (declared: flushed) and lines that make them jump into the new
    /// generation and add the jumps from the built-in chains where
    /// missing. Atomic per table.
    fn switch_lines(
        &self,
        family: Family,
        saved: &Saved,
    ) -> Vec<(&'static str, Vec<String>, Vec<String>)> {
        let empty = BTreeMap::new();
        let hooks = self.hooks.get(&family).unwrap_or(&empty);
        let mut out = Vec::new();
        for table in TABLES {
            let table_hooks: Vec<_> = hooks.iter().filter(|((t, _), _)| t == table).collect();
            if table_hooks.is_empty() {
                continue;
            }
            let declare: Vec<String> = table_hooks
                .iter()
                .map(|((_, b), _)| names::hook_chain(b))
                .collect();
            let mut lines = Vec::new();
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
            out.push((*table, declare, lines));
        }
        out
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Plan {
    /// The state record of this generation once in force.
    fn state(&self, bundle: &Bundle, opts: &super::Options) -> State {
        let mut chains = Vec::new();
        for (&family, blocks) in &self.blocks {
            for b in blocks {
                chains.extend(b.chains.iter().map(|c| StateChain {
                    family,
                    table: b.table.clone(),
                    chain: c.clone(),
                }));
            }
        }
        let mut hooks = Vec::new();
        for (&family, map) in &self.hooks {
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
        State {
            backend: "iptables".into(),
            generation: self.g,
            bundle_hash: bundle.content_hash.clone(),
            source_hash: bundle.source_hash.clone(),
            bundle_dir: bundle.dir.display().to_string(),
            netns: opts.netns.clone(),
            variant: opts.variant.name().into(),
            applied_at: now(),
            chains,
            hooks,
            sets: self.sets.clone(),
        }
    }

    /// What the kernel must hold once the generation is in force.
    fn applied(&self) -> Applied {
        Applied {
            generation: self.g,
            blocks: self.blocks.clone(),
            ipset: self.ipset.clone(),
        }
    }
}

impl Iptables {
    /// Applies `bundle` as a new generation, atomically replacing ours and
    /// nothing else. Re-applying the bundle in force (same content hash,
    /// read back in force) changes nothing. An apply interrupted earlier
    /// is finished or rolled back first ([`super::intent`]).
    pub fn apply(&self, bundle: &Bundle) -> Result<ApplyReport, Error> {
        exec::require_root()?;
        let xt0 = self.exec.xt_counts();
        for family in FAMILIES {
            exec::require_program(&self.opts.variant.restore(family))?;
            exec::require_program(&self.opts.variant.save(family))?;
        }
        let need_ipset = !bundle.ipset_rules.trim().is_empty();
        if need_ipset {
            exec::require_program("ipset")?;
        }
        // Before the lock, recovery and anything loaded: a refused bundle
        // leaves nothing behind (E0570).
        crate::proxy_local::check(&bundle.manifest, self.opts.netns.as_deref())?;
        let fresh_dir = !self.opts.state_dir.exists();
        let mut phases = Phases::default();
        let _lock = self.lock()?;
        let mut warnings = self.recover()?;
        self.record_baseline(fresh_dir)?;
        let state = self.read_state()?;
        if let Some(state) = &state {
            if state.bundle_hash == bundle.content_hash && self.status_of(state)?.in_force {
                return Ok(ApplyReport {
                    generation: state.generation,
                    previous: Some(state.generation),
                    unchanged: true,
                    warnings,
                    phases,
                    kept_sets: 0,
                    kept_chains: 0,
                    xtables: self.exec.xt_counts().since(xt0),
                });
            }
        }
        // While the tools save the kernel's state: the bundle read for the
        // generation that most likely follows (read again if another one
        // is free) and the record of the generation in force with its
        // chains' keys ([`super::keep`]); then the sets beside the keep
        // phase ([`start`]).
        let likely = names::next_generation(state.as_ref().map_or(0, |s| s.generation));
        let start::Started {
            g,
            saved,
            mut plan,
            kept_sets,
            kept_chains,
            sets_loaded,
            old_applied,
            prepared,
        } = self.start(bundle, state.as_ref(), likely, need_ipset, &mut phases)?;
        let sets_early = sets_loaded.is_some();
        let new = plan.state(bundle, &self.opts);
        if let Some(Err(e)) = sets_loaded {
            return Err(self.undo(e, &new, state.as_ref(), None));
        }
        // (With step 1 beside the keep phase, the start did both.)
        if prepared.is_none() {
            self.fold(
                &mut plan,
                bundle,
                state.as_ref(),
                old_applied.as_ref(),
                &saved,
            );
        }
        let plan = plan;
        let folded = !plan.removal.is_empty();
        phases.time("records", || {
            self.write_intent(&super::intent::Intent {
                new: Some(new.clone()),
                previous: state.clone(),
                temp_sets: Vec::new(),
                folded,
            })
        })?;
        // The new record is written beside the old one (while the tools
        // run) until the state names the new generation: a crash before
        // that rolls back, and the rollback reloads from the old record
        // ([`super::fold`]).
        let (switched, written) = std::thread::scope(|s| {
            let written = s.spawn(|| self.write_applied_next(&plan.applied()));
            let switched = self.switch(&plan, &saved, sets_early, prepared, &mut phases);
            (switched, written.join().expect("record thread"))
        });
        let saved = match switched.and_then(|saved| written.map(|()| saved)) {
            Ok(saved) => saved,
            Err(e) => {
                let reload = old_applied.as_ref().filter(|_| folded);
                let e = self.undo(e, &new, state.as_ref(), reload);
                let _ = self.discard_applied_next();
                return Err(e);
            }
        };
        phases.time("records", || -> Result<(), Error> {
            self.write_state(&new)?;
            self.commit_applied(g, true)?;
            // The endpoints in force, for `weir endpoints`.
            super::endpoint_record::applied(self, bundle, &new);
            Ok(())
        })?;
        // Step 5: remove the old generation (the new one is in force),
        // from what the read-back saw.
        let removed = phases.time("remove old generation", || {
            self.remove_old(state.as_ref(), &new, Some(saved))
        })?;
        warnings.extend(removed);
        phases.time("records", || self.remove_intent())?;
        Ok(ApplyReport {
            generation: g,
            previous: state.map(|s| s.generation),
            unchanged: false,
            warnings,
            phases,
            kept_sets,
            kept_chains,
            xtables: self.exec.xt_counts().since(xt0),
        })
    }

    /// Steps 1 and 2, then the read-back: sets, then per family one
    /// restore run that loads the chains and then switches the hooks
    /// (COMMIT blocks in that order: nothing jumps into the new chains
    /// before all of them are loaded), and a comparison of what the kernel
    /// holds with the plan. Returns what the read-back saw.
    fn switch(
        &self,
        plan: &Plan,
        before: &Saved,
        sets_loaded: bool,
        prepared: Option<Step2>,
        phases: &mut Phases,
    ) -> Result<Saved, Error> {
        let g = plan.g;
        let step2 = if !plan.load_ipset.is_empty() && !sets_loaded {
            let step = format!("step 1 (ipset restore of generation {g})");
            let refs = plan.set_refs();
            // Step 2's text is made, parsed and encoded while step 1 runs
            // (mostly the kernel waiting, see [`Iptables::step2`]).
            let (sets, step2) = std::thread::scope(|s| {
                let h = s.spawn(|| self.restore_sets(&step, &plan.load_ipset, &refs));
                let step2 = phases.time("iptables-restore", || {
                    let step2 = self.step2(plan, before, true);
                    let ahead = self.read_ahead(&step2);
                    (step2, ahead)
                });
                let sets = phases.time("ipset restore", || h.join().expect("ipset thread"));
                (sets, step2)
            });
            // A failed step 1 drops the tables read ahead, and with them
            // the lock, before the rollback.
            sets?;
            step2
        } else {
            // Nothing to overlap with: each block is parsed and encoded
            // beside its table's read instead.
            match prepared {
                Some(p) => p,
                None => (
                    phases.time("iptables-restore", || self.step2(plan, before, false)),
                    None,
                ),
            }
        };
        let (step2, mut ahead) = step2;
        for (family, text) in step2 {
            let step = format!(
                "step 2 ({} load and switch of generation {g})",
                self.opts.variant.restore(family)
            );
            phases.time("iptables-restore", || {
                self.restore_prepared(&step, family, text, &mut ahead)
            })?;
        }
        // Held until every family's tables are replaced; the read-back
        // takes the lock again.
        drop(ahead);
        let want = plan.applied().expected(&plan.hooks);
        match self.read_back(&want, &plan.ipset, phases)? {
            (None, saved) => Ok(saved),
            (Some(difference), _) => Err(Error::Step {
                step: format!("reading back generation {g}"),
                program: plan
                    .families()
                    .into_iter()
                    .map(|f| self.rules_reader(f))
                    .chain(std::iter::once("ipset save".to_string()))
                    .collect::<Vec<_>>()
                    .join(" / "),
                stderr: format!(
                    "the kernel does not hold what was applied, so generation {g} is not in force: {difference}"
                ),
            }),
        }
    }

    /// Once step 2 is prepared beside step 1: the tables step 2 writes,
    /// read under the xtables lock now rather than after step 1
    /// ([`super::xt::read_ahead`]). (When step 1 is already done this is
    /// the read the restore would make, a moment earlier.)
    pub(super) fn read_ahead(&self, step2: &[(Family, Prepared)]) -> Option<Ahead> {
        let t = std::time::Instant::now();
        let ahead = super::xt::read_ahead(self.exec.netns(), step2);
        if std::env::var_os(super::exec::TRACE_VAR).is_some() {
            eprintln!(
                "weir: {} tables read ahead of step 2 in {:.3}s",
                ahead.as_ref().map_or(0, Ahead::len),
                t.elapsed().as_secs_f64()
            );
        }
        ahead
    }

    /// Step 2's restore text per family that has one, each block's lines
    /// parsed and its rules encoded when the family's restores go to
    /// x_tables directly ([`super::xt::prepare`]). Nothing here needs the
    /// kernel's sets or tables (the sets' kernel indexes are written into
    /// the rules after step 1, `xt/pre.rs`, and the table is read and
    /// replaced under the xtables lock after that), so it runs while step 1 — mostly
    /// the kernel growing its table of sets through RCU grace periods,
    /// the CPU idle — still runs: beside it on a first apply
    /// ([`Iptables::switch`]), during its wait after the keep phase on a
    /// replace ([`start`]).
    ///
    /// Without `parse` only the text is made.
    fn step2(&self, plan: &Plan, before: &Saved, parse: bool) -> Vec<(Family, Prepared)> {
        plan.families()
            .into_iter()
            .filter_map(|family| {
                let text = plan.restore_text(family, before, self.lines_per_commit(family));
                (!text.is_empty()).then(|| {
                    let p = if parse && self.direct_xtables(family) {
                        super::xt::prepare(self.exec.netns(), family, &text)
                    } else {
                        Prepared::Text(text)
                    };
                    (family, p)
                })
            })
            .collect()
    }

    /// The generation in force (`old`, recorded as `old_applied`) goes
    /// in the switch's COMMIT when a rollback can reload it
    /// ([`super::fold`]): `plan.removal`, as of `saved`.
    fn fold(
        &self,
        plan: &mut Plan,
        bundle: &Bundle,
        old: Option<&State>,
        old_applied: Option<&Applied>,
        saved: &Saved,
    ) {
        if let (Some(old), Some(_)) = (old, old_applied) {
            if FAMILIES
                .into_iter()
                .all(|f| self.lines_per_commit(f) == usize::MAX)
            {
                let new = plan.state(bundle, &self.opts);
                plan.removal = super::fold::removals(old, &new, saved);
            }
        }
    }

    /// After a failed step: the previous generation back in force, the
    /// new one removed; the error says both what failed and, if the
    /// rollback failed too, that the intent record stays for the next
    /// command to finish it.
    fn undo(
        &self,
        e: Error,
        new: &State,
        previous: Option<&State>,
        reload: Option<&Applied>,
    ) -> Error {
        match self.roll_back(new, previous, reload) {
            Ok(()) => {
                let _ = self.remove_intent();
                e
            }
            Err(r) => Error::Step {
                step: format!("rolling back generation {}", new.generation),
                program: "iptables-restore".into(),
                stderr: format!(
                    "{e}; then the rollback failed too ({r}); the next apply, status or detach retries it"
                ),
            },
        }
    }
}
