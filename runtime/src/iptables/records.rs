//! Two records beside the state file.
//!
//! - `applied.json`: the rules and sets of the generation in force, as
//!   they were fed to the tools, so `weir status` reads them back against
//!   the kernel as the apply did ([`super::readback`]), and says what
//!   differs rather than only that a chain is missing.
//! - `baseline.json`: what the node had before weir's first apply in this
//!   namespace (the nf_tables tables, and whether the state directory
//!   existed), so `weir detach` returns the node to exactly that: the
//!   `filter`/`raw`/`mangle`/`nat` tables the iptables-nft tools create on
//!   first use are removed when they did not exist before and hold
//!   nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::readback::Expected;
use super::restore::TableBlock;
use super::state::State;
use super::{exec, files, Iptables, FAMILIES};
use crate::bundle::Family;
use crate::error::Error;

/// `applied.json`.
pub const APPLIED: &str = "applied.json";
/// The new generation's `applied.json` until the state file names it
/// ([`super::fold`]: a rollback needs the previous generation's record).
pub const APPLIED_NEXT: &str = "applied.next.json";
/// `baseline.json`.
pub const BASELINE: &str = "baseline.json";

/// Hooks per family: (table, built-in) → targets.
pub(crate) type Hooks = BTreeMap<Family, BTreeMap<(String, String), Vec<String>>>;

/// The rules and sets of a generation (names rewritten for it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied {
    pub generation: u32,
    pub blocks: BTreeMap<Family, Vec<TableBlock>>,
    /// `ipset restore` text.
    pub ipset: String,
}

impl Applied {
    /// Per family, what the kernel must hold.
    pub(crate) fn expected(&self, hooks: &Hooks) -> BTreeMap<Family, Expected> {
        FAMILIES
            .into_iter()
            .map(|f| {
                let e = Expected {
                    blocks: self.blocks.get(&f).cloned().unwrap_or_default(),
                    hooks: hooks.get(&f).cloned().unwrap_or_default(),
                };
                (f, e)
            })
            .collect()
    }
}

/// A state's hooks by family.
pub(crate) fn state_hooks(s: &State) -> Hooks {
    let mut h = Hooks::new();
    for x in &s.hooks {
        h.entry(x.family)
            .or_default()
            .entry((x.table.clone(), x.builtin.clone()))
            .or_default()
            .push(x.target.clone());
    }
    h
}

/// What the node had before weir's first apply.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Baseline {
    /// The state directory existed.
    pub state_dir_existed: bool,
    /// `nft list tables`: `(family, name)`, e.g. `("ip", "filter")`;
    /// `None` when `nft` is not installed.
    pub nft_tables: Option<BTreeSet<(String, String)>>,
}

/// The tables the back end may create, by nft family.
const NFT_FAMILIES: [(Family, &str); 2] = [(Family::Ipv4, "ip"), (Family::Ipv6, "ip6")];

impl Iptables {
    pub(crate) fn write_applied(&self, a: &Applied) -> Result<(), Error> {
        let text = serde_json::to_vec(a).expect("applied serialises");
        files::write_private(&self.opts.state_dir.join(APPLIED), &text)
    }

    /// Writes the new generation's record beside the one in force
    /// ([`APPLIED_NEXT`]); [`Iptables::commit_applied`] puts it in place.
    pub(crate) fn write_applied_next(&self, a: &Applied) -> Result<(), Error> {
        let text = serde_json::to_vec(a).expect("applied serialises");
        files::write_private(&self.opts.state_dir.join(APPLIED_NEXT), &text)
    }

    /// Renames [`APPLIED_NEXT`] over `applied.json` when it holds
    /// `generation` (the state file names it now); a stale one (of a
    /// generation rolled back) is removed. Nothing to do without one.
    /// `known`: the caller has just written it for `generation` (the
    /// apply), so it is not read again.
    pub(crate) fn commit_applied(&self, generation: u32, known: bool) -> Result<(), Error> {
        let next = self.opts.state_dir.join(APPLIED_NEXT);
        if !known {
            let Ok(text) = std::fs::read(&next) else {
                return Ok(());
            };
            let ours =
                serde_json::from_slice::<Applied>(&text).is_ok_and(|a| a.generation == generation);
            if !ours {
                return self.discard_applied_next();
            }
        }
        let path = self.opts.state_dir.join(APPLIED);
        std::fs::rename(&next, &path)
            .and_then(|()| crate::statefs::sync_dir(&self.opts.state_dir))
            .map_err(|e| {
                Error::io(
                    format!("renaming {} to {}", next.display(), path.display()),
                    e,
                )
            })
    }

    /// Removes [`APPLIED_NEXT`] (a rolled-back generation's record).
    pub(crate) fn discard_applied_next(&self) -> Result<(), Error> {
        files::remove(&self.opts.state_dir.join(APPLIED_NEXT))
    }

    /// The applied record, when it belongs to `generation`.
    pub(crate) fn read_applied(&self, generation: u32) -> Option<Applied> {
        let text = std::fs::read(self.opts.state_dir.join(APPLIED)).ok()?;
        let a: Applied = serde_json::from_slice(&text).ok()?;
        (a.generation == generation).then_some(a)
    }

    /// `nft list tables` as `(family, name)` pairs.
    fn nft_tables(&self) -> Result<Option<BTreeSet<(String, String)>>, Error> {
        if exec::find_program("nft").is_none() {
            return Ok(None);
        }
        let out = self
            .exec
            .run_ok("listing nf_tables tables", "nft", &["list", "tables"], None)?;
        Ok(Some(
            out.stdout
                .lines()
                .filter_map(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    match w.as_slice() {
                        ["table", fam, name] => Some((fam.to_string(), name.to_string())),
                        _ => None,
                    }
                })
                .collect(),
        ))
    }

    /// Records the baseline at the first apply (no state, no baseline).
    pub(crate) fn record_baseline(&self, fresh_dir: bool) -> Result<(), Error> {
        let path = self.opts.state_dir.join(BASELINE);
        if path.exists() || self.state_path().exists() {
            return Ok(());
        }
        let b = Baseline {
            state_dir_existed: !fresh_dir,
            nft_tables: self.nft_tables()?,
        };
        files::write_private(&path, &serde_json::to_vec(&b).expect("baseline serialises"))
    }

    pub(crate) fn read_baseline(&self) -> Option<Baseline> {
        let text = std::fs::read(self.opts.state_dir.join(BASELINE)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Deletes the nf_tables tables weir's tools created: absent from the
    /// baseline and holding no rule, no user chain and no non-accepting
    /// policy. Returns the tables removed (`ip/filter`).
    pub(crate) fn remove_created_tables(&self, baseline: &Baseline) -> Result<Vec<String>, Error> {
        let Some(before) = &baseline.nft_tables else {
            return Ok(Vec::new());
        };
        let Some(now) = self.nft_tables()? else {
            return Ok(Vec::new());
        };
        let mut removed = Vec::new();
        for (fam, name) in now.difference(before) {
            if !NFT_FAMILIES.iter().any(|(_, f)| f == fam)
                || !super::restore::TABLES.contains(&name.as_str())
            {
                continue;
            }
            let out = self.exec.run_ok(
                "reading an nf_tables table",
                "nft",
                &["list", "table", fam, name],
                None,
            )?;
            if !table_is_empty(&out.stdout) {
                continue;
            }
            self.exec.run_ok(
                &format!("removing the empty table {fam} {name} weir created"),
                "nft",
                &["delete", "table", fam, name],
                None,
            )?;
            removed.push(format!("{fam}/{name}"));
        }
        Ok(removed)
    }
}

/// `nft list table` output with nothing but base chains that accept.
fn table_is_empty(listing: &str) -> bool {
    let mut chains = 0;
    for l in listing.lines().map(str::trim) {
        if l.is_empty() || l == "}" || l.starts_with("table ") {
            continue;
        }
        if l.starts_with("chain ") {
            chains += 1;
            continue;
        }
        if l.starts_with("type ") && l.contains("hook") && l.ends_with("policy accept;") {
            chains -= 1;
            continue;
        }
        return false;
    }
    chains == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn empty_tables() {
        let empty = "table ip filter {\n\tchain INPUT {\n\t\ttype filter hook input priority filter; policy accept;\n\t}\n}\n";
        assert!(super::table_is_empty(empty));
        let user = "table ip filter {\n\tchain X {\n\t}\n}\n";
        assert!(!super::table_is_empty(user));
        let rule = "table ip filter {\n\tchain INPUT {\n\t\ttype filter hook input priority filter; policy accept;\n\t\tcounter accept\n\t}\n}\n";
        assert!(!super::table_is_empty(rule));
        let drop = "table ip filter {\n\tchain INPUT {\n\t\ttype filter hook input priority filter; policy drop;\n\t}\n}\n";
        assert!(!super::table_is_empty(drop));
    }
}
