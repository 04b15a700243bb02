//! The old generation's removal inside the switch transaction (issue 21).
//!
//! With the legacy tools every COMMIT rewrites the whole table, and an
//! update used to pay for three whole-table passes after the sets: the
//! restore that loads the new chains and switches the hooks (one COMMIT
//! per table), the read-back's `iptables-save` of a table holding both
//! generations, and a second restore that deletes the old generation's
//! chains. At 100,000 rules the removal cost ~1 s and the read-back of
//! the doubled table ~0.9 s more than of one generation.
//!
//! So with the legacy tools (one COMMIT per table) the switch's COMMIT
//! also flushes and deletes the old generation's chains that the new one
//! does not keep, and removes the hooks the new one does not use: what
//! `Iptables::remove_old` would remove next, computed by the same
//! function ([`removal`]) from the kernel state the apply started from
//! (under the lock; the switch already counts the built-in chains' jumps
//! in it). The table goes from the old generation to the new one in one
//! atomic replacement, and the read-back reads one generation.
//!
//! **Fail closed:** the read-back still compares everything in force; if
//! it differs (or a later table's or family's COMMIT fails), the rollback
//! must put the old generation back *exactly*, but its chains are gone.
//! The intent record says the removal was folded ([`super::intent::Intent`]'s
//! `folded`), and the rollback then reloads every chain of the previous
//! state that the kernel no longer holds from the previous generation's
//! `applied.json` (the restore text it was applied from, read back equal
//! at its apply) before it points the hooks back at them, in the same
//! COMMIT per table ([`reload`]). Its sets are still there: sets are
//! destroyed only once the new generation is recorded in force. The
//! record of the new generation is written beside the old one
//! (`applied.next.json`) and renamed over it only after the state file
//! names the new generation, so a crash at any point leaves the record
//! the rollback or the finishing step needs.
//!
//! Only when the previous generation's `applied.json` is there (it is
//! after every apply of this version) and the tools are the legacy ones:
//! the nf_tables tools keep their 1,000-line transactions, and their
//! switch stays apart from the removal.

use std::collections::{HashMap, HashSet};

use super::intent::{chains_of, hook_map};
use super::records::Applied;
use super::restore::SavedTable;
use super::state::State;
use super::{names, Saved, FAMILIES};
use crate::bundle::Family;

/// What removing `old` from one table (`t`, as the kernel holds it) takes
/// when `new` is in force: the removals of built-in jumps into hook chains
/// `new` does not use (`unhook`), and the chains to flush and delete
/// (those hook chains, and `old`'s chains that exist and `new` does not
/// list).
pub(crate) struct TableRemoval {
    pub unhook: Vec<String>,
    pub chains: Vec<String>,
}

/// See [`TableRemoval`]: what `Iptables::remove_old` and the folded
/// switch remove.
pub(crate) fn removal(
    old: &State,
    new: &State,
    family: Family,
    table: &str,
    t: &SavedTable,
) -> TableRemoval {
    let old_hooks = hook_map(Some(old));
    let new_hooks = hook_map(Some(new));
    let present: HashSet<&str> = t.chains.iter().map(String::as_str).collect();
    let mut unhook = Vec::new();
    let mut chains: Vec<String> = Vec::new();
    for key in old_hooks.keys() {
        if key.0 != family || key.1 != table || new_hooks.contains_key(key) {
            continue;
        }
        let hook = names::hook_chain(&key.2);
        for _ in 0..t.jumps(&key.2, &hook) {
            unhook.push(format!("-D {} -j {hook}", key.2));
        }
        if present.contains(hook.as_str()) {
            chains.push(hook);
        }
    }
    let keep: HashSet<String> = chains_of(Some(new), family, table).into_iter().collect();
    chains.extend(
        chains_of(Some(old), family, table)
            .into_iter()
            .filter(|c| present.contains(c.as_str()) && !keep.contains(c)),
    );
    TableRemoval { unhook, chains }
}

/// Per family and table: the removal of `old` as of `saved` (see the
/// module doc), for the tables that have something to remove.
pub(crate) type Removals = HashMap<(Family, String), TableRemoval>;

/// [`removal`] of every table `old` used, as of `saved`.
pub(crate) fn removals(old: &State, new: &State, saved: &Saved) -> Removals {
    let mut out = Removals::new();
    for family in FAMILIES {
        let Some(tables) = saved.get(&family) else {
            continue;
        };
        for table in super::intent::tables_of(Some(old), None, family) {
            let Some(t) = tables.get(&table) else {
                continue;
            };
            let r = removal(old, new, family, &table, t);
            if !r.unhook.is_empty() || !r.chains.is_empty() {
                out.insert((family, table), r);
            }
        }
    }
    out
}

/// The rollback's reload (see the module doc): the chains of `previous`
/// in `family`/`table` that the kernel (`t`) no longer holds, with their
/// rules from the previous generation's record (`applied`): declarations
/// and rule lines for the rollback's COMMIT, and the chains reloaded.
/// Chains the record does not hold are left out (and so are not jumped
/// to: the rollback's hook lines filter on what exists).
pub(crate) fn reload(
    previous: &State,
    applied: &Applied,
    family: Family,
    table: &str,
    t: &SavedTable,
) -> (Vec<String>, Vec<String>) {
    let present: HashSet<&str> = t.chains.iter().map(String::as_str).collect();
    let Some(block) = applied
        .blocks
        .get(&family)
        .and_then(|b| b.iter().find(|b| b.table == table))
    else {
        return (Vec::new(), Vec::new());
    };
    let recorded: HashSet<&str> = block.chains.iter().map(String::as_str).collect();
    let missing: HashSet<String> = chains_of(Some(previous), family, table)
        .into_iter()
        .filter(|c| !present.contains(c.as_str()) && recorded.contains(c.as_str()))
        .collect();
    if missing.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let rules = block
        .rules
        .iter()
        .filter(|r| missing.contains(super::keep::rule_chain(r)))
        .cloned()
        .collect();
    let mut chains: Vec<String> = missing.into_iter().collect();
    chains.sort();
    (chains, rules)
}
