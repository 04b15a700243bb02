//! Endpoint churn: updates of the generation's sets, without touching any
//! rule — built beside the live sets and swapped in.
//!
//! A live set is never edited in place: an `ipset restore` batch stops at
//! the first failing line ("Hash is full" after 60,535 of 70,000 adds),
//! leaving the set half-updated and every later update failing. Instead,
//! for every set an update touches:
//!
//! 1. the set's members are read (`ipset save SET`; for more than one
//!    set, one `ipset restore` batch of `save SET` lines, which reads
//!    only those), the update applied to them in memory, and the result
//!    checked against the set's `maxelem` — over capacity, the update is
//!    refused and nothing is written. A set whose members come out the
//!    same (a `del` of an address it does not hold: an address's lines
//!    name every set of its family) is left alone: neither rebuilt nor
//!    swapped;
//! 2. the temporary names are recorded in the intent record
//!    ([`super::intent`]), then a new set is built under each
//!    (`weirt<g>-…`, one `ipset restore`); a failure destroys them and the
//!    live sets are untouched;
//! 3. each is swapped with its live set (`swap` lines, one `ipset
//!    restore` batch; each swap is atomic per set: rules keep referring
//!    to the live name), the live sets are read back against the intended
//!    members (`save SET` lines after the swaps, in the same batch: the
//!    kernel's contents after the swaps, read by the same process; a
//!    difference, or a batch that stopped part way, swaps back every set
//!    found holding the new members), and the old contents, now under the
//!    temporary names, are destroyed while the applied record's text of
//!    those sets is replaced by what was read back (side by side: they
//!    are independent).
//!
//! A crash at any point leaves either the old or the new contents under
//! the live name; the next command removes the temporary sets the intent
//! record names.

use std::collections::{BTreeMap, BTreeSet};

use super::intent::Intent;
use super::readback;
use super::{exec, names, Iptables};
use crate::error::Error;

/// ipset's default `maxelem`.
const DEFAULT_MAXELEM: usize = 65536;

/// A set as `ipset save` prints it: its create line and members.
#[derive(Default)]
struct Saved {
    create: Vec<String>,
    maxelem: usize,
    members: BTreeSet<String>,
}

/// `ipset save` text (of one set or all), by set name.
fn parse_saved(text: &str) -> BTreeMap<String, Saved> {
    let mut out: BTreeMap<String, Saved> = BTreeMap::new();
    for line in text.lines() {
        let w = super::normalize::words(line.trim());
        match (w.first().map(String::as_str), w.get(1)) {
            (Some("create"), Some(name)) => {
                let maxelem = w
                    .iter()
                    .position(|x| x == "maxelem")
                    .and_then(|i| w.get(i + 1)?.parse().ok())
                    .unwrap_or(DEFAULT_MAXELEM);
                let saved = out.entry(name.clone()).or_default();
                saved.maxelem = maxelem;
                saved.create = w;
            }
            (Some("add"), Some(name)) if w.len() > 2 => {
                out.entry(name.clone())
                    .or_default()
                    .members
                    .insert(w[2..].join(" "));
            }
            _ => {}
        }
    }
    out
}

/// The temporary name a set is built under: `weir4-c3` → `weirt4-c3`.
pub fn temp_name(kernel: &str) -> String {
    match kernel.strip_prefix("weir") {
        Some(rest) => format!("weirt{rest}"),
        None => format!("t{kernel}"),
    }
}

/// What [`Iptables::swap_sets`] swapped in.
#[derive(Debug, Default)]
struct Swapped {
    /// The swapped sets' contents as the kernel holds them after the
    /// swaps (`ipset save` lines, read back).
    readback: String,
}

/// Why [`Iptables::swap_sets`] wrote nothing.
#[derive(Debug)]
pub enum SwapError {
    /// The update does not fit a set's capacity: refused.
    Capacity(String),
    Failed(Error),
}

impl From<Error> for SwapError {
    fn from(e: Error) -> Self {
        SwapError::Failed(e)
    }
}

/// The live sets (`have`: `ipset save` text of the swapped sets, read
/// after the swaps) hold the intended members; `have` is returned for the
/// applied record.
fn check_sets(
    built: &BTreeMap<String, (Saved, BTreeSet<String>)>,
    have: String,
) -> Result<String, Error> {
    let mut want = String::new();
    for (set, (saved, members)) in built {
        want.push_str(&saved.create.join(" "));
        want.push('\n');
        for m in members {
            want.push_str(&format!("add {set} {m}\n"));
        }
    }
    match readback::compare_sets(&want, &have) {
        Some(d) => Err(step_error("reading back the updated sets".into(), d)),
        None => Ok(have),
    }
}

/// A member (`None`: absent) in its canonical form
/// ([`readback::member`]): equal when the kernel would hold the same
/// entry.
fn canonical(member: Option<&str>) -> Option<String> {
    member.map(|m| readback::member(&super::normalize::words(m)))
}

/// An entry's key as ipset prints it (for matching `del` with members).
fn key(entry: &str) -> String {
    readback::member(&[entry.to_string()])
}

fn step_error(step: String, stderr: String) -> Error {
    Error::Step {
        step,
        program: "ipset".into(),
        stderr,
    }
}

impl Iptables {
    /// The members of a set as `ipset save` prints them (after the set
    /// name).
    pub(crate) fn set_members(&self, name: &str) -> Result<BTreeSet<String>, Error> {
        Ok(self.save_set(name)?.members)
    }

    /// Reads one set (`ipset save NAME`).
    fn save_set(&self, name: &str) -> Result<Saved, Error> {
        let out = self.exec.run_ok(
            &format!("reading set {name}"),
            "ipset",
            &["save", name],
            None,
        )?;
        Ok(parse_saved(&out.stdout).remove(name).unwrap_or_default())
    }

    /// Reads the sets `names`: one `ipset save NAME` for one set, one
    /// `ipset restore` batch of `save NAME` lines for more (a process per
    /// set was most of an endpoint update's time: an address's class can
    /// be in ~80 sets).
    fn read_sets(&self, names: &BTreeSet<&String>) -> Result<BTreeMap<String, Saved>, Error> {
        if let [only] = names.iter().collect::<Vec<_>>().as_slice() {
            return Ok(BTreeMap::from([(only.to_string(), self.save_set(only)?)]));
        }
        let batch: String = names.iter().map(|n| format!("save {n}\n")).collect();
        let out = self
            .exec
            .run_ok("reading sets", "ipset", &["restore"], Some(&batch))?;
        let mut all = parse_saved(&out.stdout);
        names
            .iter()
            .map(|n| match all.remove(n.as_str()) {
                Some(saved) => Ok((n.to_string(), saved)),
                None => Err(step_error(
                    format!("reading set {n}"),
                    "the set does not exist".into(),
                )),
            })
            .collect()
    }

    /// Applies `text` (`del SET ENTRY` / `add SET ENTRY [nomatch]` lines,
    /// in order) by building every touched set anew and swapping it in
    /// (see the module doc); the applied record of `state` then holds the
    /// swapped sets as read back ([`Self::refresh_applied_sets`]). Call
    /// with the lock held.
    pub(crate) fn swap_sets(&self, text: &str, state: &super::State) -> Result<(), SwapError> {
        let mut edits: BTreeMap<String, Vec<(bool, Vec<String>)>> = BTreeMap::new();
        for line in text.lines() {
            let w = super::normalize::words(line.trim());
            match w.as_slice() {
                [verb, set, entry @ ..]
                    if !entry.is_empty() && (verb == "add" || verb == "del") =>
                {
                    edits
                        .entry(set.clone())
                        .or_default()
                        .push((verb == "add", entry.to_vec()));
                }
                [] => {}
                _ => {
                    return Err(step_error(
                        "updating sets".into(),
                        format!("invalid line {line:?}"),
                    )
                    .into())
                }
            }
        }
        if edits.is_empty() {
            return Ok(());
        }
        // 1. The new contents, checked against each set's capacity.
        let mut built: BTreeMap<String, (Saved, BTreeSet<String>)> = BTreeMap::new();
        let mut saved_sets = self.read_sets(&edits.keys().collect())?;
        for (set, list) in &edits {
            let saved = saved_sets.remove(set).unwrap_or_default();
            // Keyed by the element as ipset prints it: one lookup per edit.
            let mut by_key: BTreeMap<String, String> = saved
                .members
                .iter()
                .map(|m| (key(m.split_whitespace().next().unwrap_or("")), m.clone()))
                .collect();
            // Each edited element as the set held it before the edits.
            let mut before: BTreeMap<String, Option<String>> = BTreeMap::new();
            for (add, entry) in list {
                let k = key(&entry[0]);
                before
                    .entry(k.clone())
                    .or_insert_with(|| by_key.get(&k).cloned());
                if *add {
                    by_key.insert(k, entry.join(" "));
                } else {
                    by_key.remove(&k);
                }
            }
            // Only edited elements can differ: a set none of whose edited
            // elements changed (in canonical form) is left alone.
            let changed = before.iter().any(|(k, was)| {
                canonical(was.as_deref()) != canonical(by_key.get(k).map(String::as_str))
            });
            if !changed {
                continue;
            }
            let members: BTreeSet<String> = by_key.into_values().collect();
            if members.len() > saved.maxelem {
                return Err(SwapError::Capacity(format!(
                    "set {set} would hold {} entries and its capacity (maxelem) is {}; recompile with the new inventory",
                    members.len(),
                    saved.maxelem
                )));
            }
            built.insert(set.clone(), (saved, members));
        }
        if built.is_empty() {
            return Ok(());
        }
        // 2. Built under temporary names, recorded first.
        let temps: Vec<String> = built.keys().map(|s| temp_name(s)).collect();
        self.write_intent(&Intent {
            temp_sets: temps.clone(),
            ..Intent::default()
        })?;
        let mut restore = String::new();
        for (set, (saved, members)) in &built {
            let tmp = temp_name(set);
            let mut create = saved.create.clone();
            if create.len() < 3 {
                return Err(
                    step_error(format!("reading set {set}"), "no create line".into()).into(),
                );
            }
            create[1] = tmp.clone();
            restore.push_str(&create.join(" "));
            restore.push('\n');
            for m in members {
                restore.push_str(&format!("add {tmp} {m}\n"));
            }
        }
        if let Err(e) = self.exec.run_ok(
            "building the updated sets",
            "ipset",
            &["restore"],
            Some(&restore),
        ) {
            self.drop_temps(&temps);
            return Err(super::annotate(e, &restore).into());
        }
        // 3. Swapped in and read back (one batch: the swaps, then a
        // `save` of each swapped set), the old contents destroyed.
        let mut swaps: String = built
            .keys()
            .map(|set| format!("swap {} {set}\n", temp_name(set)))
            .collect();
        for set in built.keys() {
            swaps.push_str(&format!("save {set}\n"));
        }
        let checked = self
            .exec
            .run_ok(
                "swapping in the updated sets",
                "ipset",
                &["restore"],
                Some(&swaps),
            )
            .and_then(|out| check_sets(&built, out.stdout));
        match checked {
            Ok(readback) => {
                // Independent, so side by side: the old contents destroyed
                // (an `ipset` run) while the applied record is rewritten.
                let swapped = Swapped { readback };
                std::thread::scope(|s| {
                    s.spawn(|| self.drop_temps(&temps));
                    self.refresh_applied_sets(state, &swapped)
                })?;
                Ok(())
            }
            Err(e) => {
                self.swap_back(&built);
                self.drop_temps(&temps);
                Err(e.into())
            }
        }
    }

    /// After a failed swap batch or read-back: every set whose live name
    /// holds the new members (and not the old) is swapped back. A batch
    /// stops at its first failing line, so which sets were swapped is read
    /// from the kernel, not assumed.
    fn swap_back(&self, built: &BTreeMap<String, (Saved, BTreeSet<String>)>) {
        let Ok(now) = self.read_sets(&built.keys().collect()) else {
            return;
        };
        for (set, (saved, members)) in built {
            let live = now.get(set).map(|s| &s.members);
            if live == Some(members) && *members != saved.members {
                let _ = self
                    .exec
                    .run("ipset", &["swap", &temp_name(set), set], None);
            }
        }
    }

    /// Destroys the temporary sets and clears the intent record.
    fn drop_temps(&self, temps: &[String]) {
        if self.destroy_sets_batch(temps).is_empty() {
            let _ = self.remove_intent();
        }
    }

    /// Adds and removes entries of one set of the generation in force
    /// (deletions first; adding a present entry or deleting an absent one
    /// is not an error), built and swapped in as the module doc says.
    /// `set` is the bundle's name (`weir-c3`) or the kernel's
    /// (`weir4-c3`); entries are in ipset syntax for the set's type
    /// (`10.1.0.5`, `10.1.0.0/24`, `10.1.0.5,tcp:80`).
    pub fn update_set(&self, set: &str, add: &[String], del: &[String]) -> Result<(), Error> {
        exec::require_root()?;
        exec::require_program("ipset")?;
        let _lock = self.lock()?;
        self.recover()?;
        let state = self.read_state()?.ok_or_else(|| Error::State {
            path: self.state_path(),
            message: "nothing is applied, so there is no set to update".into(),
        })?;
        let bundle_name = names::bundle_set_name(set).unwrap_or_else(|| set.to_string());
        let kernel = state
            .sets
            .iter()
            .find(|s| s.name == bundle_name)
            .map(|s| s.kernel_name.clone())
            .ok_or_else(|| Error::State {
                path: self.state_path(),
                message: format!("generation {} has no set `{bundle_name}`", state.generation),
            })?;
        let mut text = String::new();
        for (verb, entries) in [("del", del), ("add", add)] {
            for e in entries {
                let e = e.trim();
                if e.is_empty() || e.contains(['\n', '\r']) {
                    return Err(step_error(
                        format!("updating set {kernel}"),
                        format!("invalid entry {e:?}"),
                    ));
                }
                text.push_str(&format!("{verb} {kernel} {e}\n"));
            }
        }
        match self.swap_sets(&text, &state) {
            Ok(()) => Ok(()),
            Err(SwapError::Failed(e)) => Err(e),
            Err(SwapError::Capacity(m)) => Err(step_error(
                format!("updating set {kernel}"),
                format!("refused, nothing changed: {m}"),
            )),
        }
    }

    /// Rewrites the applied record's text of the sets an update swapped
    /// with what was read back after the swaps (each set's lines where
    /// they were), so `weir status` compares the updated members. Nothing
    /// to do when nothing was swapped.
    fn refresh_applied_sets(&self, state: &super::State, swapped: &Swapped) -> Result<(), Error> {
        if swapped.readback.is_empty() {
            return Ok(());
        }
        let Some(mut applied) = self.read_applied(state.generation) else {
            return Ok(());
        };
        applied.ipset = replace_sets(&applied.ipset, &swapped.readback);
        self.write_applied(&applied)
    }
}

/// `text` (`ipset save` lines) with the lines of every set `new` has
/// replaced by `new`'s, at the place of the set's first line (at the end
/// for a set `text` lacks).
fn replace_sets(text: &str, new: &str) -> String {
    let set_of = |l: &str| l.split_whitespace().nth(1).map(str::to_string);
    let mut blocks: BTreeMap<String, String> = BTreeMap::new();
    for l in new.lines() {
        if let Some(set) = set_of(l) {
            let b = blocks.entry(set).or_default();
            b.push_str(l);
            b.push('\n');
        }
    }
    let replaced: BTreeSet<String> = blocks.keys().cloned().collect();
    let mut out = String::with_capacity(text.len() + new.len());
    for l in text.lines() {
        match set_of(l) {
            Some(set) if replaced.contains(&set) => {
                if let Some(b) = blocks.remove(&set) {
                    out.push_str(&b);
                }
            }
            _ => {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    for b in blocks.into_values() {
        out.push_str(&b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_sets_keeps_each_set_in_place() {
        let text = "create a hash:net\nadd a 10.0.0.1\ncreate b hash:net\nadd b 10.0.0.2\ncreate c hash:net\n";
        let new = "create b hash:net\nadd b 10.0.0.3\ncreate d hash:net\n";
        assert_eq!(
            replace_sets(text, new),
            "create a hash:net\nadd a 10.0.0.1\ncreate b hash:net\nadd b 10.0.0.3\ncreate c hash:net\ncreate d hash:net\n"
        );
    }
}
