//! The iptables/ipset back end's runtime: apply a bundle as an atomic
//! generation, detach, report status, update endpoint sets.
//!
//! # How a bundle is applied
//!
//! Generation `g` renames the bundle's `WEIR-…` chains to `WEIR<g>-…` and
//! its `weir-…` sets to `weir<g>-…` ([`names`]). Applying it (under the
//! namespace's lock, after finishing or rolling back an interrupted apply,
//! [`intent`]):
//!
//! 0. `intent.json` records generation `g` in progress: every chain, hook
//!    and set it creates, and the generation it replaces;
//! 1. `ipset restore -exist` creates the new generation's sets (new names:
//!    the old generation's sets are untouched, so no `swap` is needed), in
//!    batches of whole sets, most-referenced first ([`load`]);
//! 2. one `iptables-restore --noflush -w` run per family loads the new
//!    chains and their rules — only those not kept unchanged from the
//!    generation in force ([`keep`]) — (nothing jumps into them yet; with
//!    the nf_tables tools in transactions of 1,000 lines, whose cost grows
//!    with the square of a transaction's size), and then, in its last
//!    COMMIT blocks (with the legacy tools in the same COMMIT), redefines the stable hook chains `WEIR-HOOK-<BUILTIN>`
//!    to jump into them and inserts the single jump from each built-in
//!    chain to its hook chain where the save the apply started from has
//!    none (removing duplicates) — the switch is atomic per table. The
//!    families run one after the other (IPv4 switched, then IPv6 loaded
//!    and switched): a failure in IPv6 rolls IPv4 back too;
//! 3. the kernel's rules and sets are read back and compared with what was
//!    applied ([`readback`]); on a difference the previous generation is
//!    put back and the apply fails naming the rule;
//! 4. `applied.json` and the state file record what is in force;
//! 5. the old generation's recorded chains, hooks and sets are removed
//!    (those the read-back of step 3 saw), then `intent.json`. With the
//!    legacy tools its chains and hooks already went in step 2's COMMIT
//!    ([`fold`]; a rollback reloads them from its `applied.json`), and only
//!    its sets are left to destroy here.
//!
//! If a step up to 3 fails, the previous generation is put back and
//! everything of the new one removed (`Iptables::roll_back`); the error
//! names the step and carries the tool's message. Failures in step 5 are
//! reported as warnings: the new generation is already in force.
//!
//! Only what a record (state or intent) names is ever changed or removed —
//! never a chain or set because its name looks like ours.

pub mod apply;
pub mod detach;
pub(crate) mod endpoint_record;
pub mod exec;
mod files;
pub(crate) mod fold;
pub mod intent;
pub(crate) mod keep;
pub mod load;
pub mod names;
pub mod normalize;
pub(crate) mod orphans;
pub mod readback;
pub mod records;
pub mod restore;
pub(crate) mod reuse;
pub mod service_chains;
pub mod sets;
pub mod state;
pub mod stats;
pub mod status;
pub(crate) mod transaction;
pub mod xt;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

pub use apply::ApplyReport;
pub use detach::DetachReport;
pub use exec::Exec;
pub use load::Phases;
pub use state::State;
pub use status::{FamilyStatus, Status};

use crate::bundle::Family;
use crate::error::Error;
use crate::statefs;
use restore::SavedTable;

/// Which `iptables` implementation to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    /// `iptables-restore` etc. as installed (Debian's alternatives choose
    /// nf_tables or legacy).
    #[default]
    System,
    /// `iptables-legacy-restore` etc. (x_tables).
    Legacy,
    /// `iptables-nft-restore` etc. (nf_tables with xtables compatibility).
    Nft,
}

impl Variant {
    fn program(self, family: Family, tool: &str) -> String {
        let base = match family {
            Family::Ipv4 => "iptables",
            Family::Ipv6 => "ip6tables",
        };
        let suffix = if tool.is_empty() {
            String::new()
        } else {
            format!("-{tool}")
        };
        match self {
            Variant::System => format!("{base}{suffix}"),
            Variant::Legacy => format!("{base}-legacy{suffix}"),
            Variant::Nft => format!("{base}-nft{suffix}"),
        }
    }

    /// `iptables-restore`, `ip6tables-legacy-restore`, …
    pub fn restore(self, family: Family) -> String {
        self.program(family, "restore")
    }

    /// `iptables-save`, …
    pub fn save(self, family: Family) -> String {
        self.program(family, "save")
    }

    /// `iptables`, `ip6tables-nft`, …
    pub fn iptables(self, family: Family) -> String {
        self.program(family, "")
    }

    pub fn name(self) -> &'static str {
        match self {
            Variant::System => "system",
            Variant::Legacy => "legacy",
            Variant::Nft => "nft",
        }
    }
}

/// Where and how the back end runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Run every program in this named network namespace
    /// (`/var/run/netns/NAME`); `None` for the caller's namespace.
    pub netns: Option<String>,
    /// Directory of the state file (`state.json`) and lock file. One per
    /// network namespace: the kernel objects it describes are per namespace.
    pub state_dir: PathBuf,
    pub variant: Variant,
    /// Whether IPv4 and IPv6 restores write x_tables directly where the legacy
    /// tools are in use ([`xt`]); defaults from `WEIR_XTABLES`.
    pub xtables: xt::XtMode,
}

pub use crate::statefs::STATE_ROOT;

impl Options {
    /// The caller's namespace, state in `/run/weir/host` for the initial
    /// namespace, else `/run/weir/netns-<inode>` ([`statefs::netns_label`]:
    /// the same directory as `--netns NAME` of that namespace).
    pub fn host() -> Options {
        Options {
            netns: None,
            state_dir: PathBuf::from(STATE_ROOT).join(statefs::netns_label(None)),
            variant: Variant::System,
            xtables: xt::XtMode::from_env(),
        }
    }

    /// A named namespace, state in `/run/weir/netns-<inode>` (see
    /// [`Options::host`]).
    pub fn netns(name: &str) -> Options {
        Options {
            netns: Some(name.to_string()),
            state_dir: statefs::state_dir_of(Path::new(STATE_ROOT), name),
            variant: Variant::System,
            xtables: xt::XtMode::from_env(),
        }
    }

    pub fn with_state_dir(mut self, dir: impl Into<PathBuf>) -> Options {
        self.state_dir = dir.into();
        self
    }

    pub fn with_variant(mut self, variant: Variant) -> Options {
        self.variant = variant;
        self
    }

    pub fn with_xtables(mut self, mode: xt::XtMode) -> Options {
        self.xtables = mode;
        self
    }
}

/// The iptables back end's runtime for one network namespace.
#[derive(Debug, Clone)]
pub struct Iptables {
    opts: Options,
    exec: Exec,
    /// Per family (IPv4, IPv6): whether the system's tools are the
    /// nf_tables ones, asked once ([`Iptables::uses_nft`]).
    nft: [std::sync::OnceLock<bool>; 2],
}

/// What the kernel has, per family and table.
pub(crate) type Saved = BTreeMap<Family, BTreeMap<String, SavedTable>>;

pub(crate) const FAMILIES: [Family; 2] = [Family::Ipv4, Family::Ipv6];

impl Iptables {
    pub fn new(opts: Options) -> Iptables {
        let exec = Exec::new(opts.netns.clone()).marking_in(opts.state_dir.clone());
        Iptables {
            opts,
            exec,
            nft: Default::default(),
        }
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// The program runner, with its log of everything run.
    pub fn exec(&self) -> &Exec {
        &self.exec
    }

    pub fn state_path(&self) -> PathBuf {
        self.opts.state_dir.join("state.json")
    }

    /// Takes the per-namespace lock (released when the file is dropped),
    /// creating the state directory root-owned `0700` ([`statefs::lock`]),
    /// then stops the tools a killed weir left running there, before the
    /// caller reads the kernel ([`orphans`]).
    pub(crate) fn lock(&self) -> Result<File, Error> {
        let dir = &self.opts.state_dir;
        let lock = statefs::lock(dir)
            .map_err(|e| Error::io(format!("locking {}", dir.join(statefs::LOCK).display()), e))?;
        orphans::stop(dir).map_err(|e| {
            Error::io(
                format!(
                    "stopping the tools a killed weir left running ({})",
                    dir.display()
                ),
                e,
            )
        })?;
        Ok(lock)
    }

    /// `iptables-save` for every family, parsed (both at once:
    /// [`load`]).
    pub(crate) fn save_all(&self) -> Result<Saved, Error> {
        self.save_families()
    }

    /// Names of all ipsets (empty if `ipset` is not installed and
    /// `required` is false).
    pub(crate) fn list_sets(&self, required: bool) -> Result<Vec<String>, Error> {
        if !required && exec::find_program("ipset").is_none() {
            return Ok(Vec::new());
        }
        let out = self
            .exec
            .run_ok("listing ipsets", "ipset", &["list", "-n"], None)?;
        Ok(out
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// Runs one restore transaction without flushing other chains:
    /// with the legacy tools through the direct loader ([`xt`]).
    pub(crate) fn restore(&self, step: &str, family: Family, text: &str) -> Result<(), Error> {
        if self.direct_xtables(family) {
            return self.restore_direct(step, family, text);
        }
        self.restore_tool(step, family, text)
    }

    /// Runs `iptables-restore --noflush -w` with `text`.
    pub(crate) fn restore_tool(&self, step: &str, family: Family, text: &str) -> Result<(), Error> {
        let program = self.opts.variant.restore(family);
        self.exec
            .run_ok(step, &program, &["--noflush", "-w"], Some(text))
            .map(|_| ())
            .map_err(|e| annotate(e, text))
    }

    /// Destroys sets, retrying briefly while the kernel still holds a
    /// reference from rules that were just deleted. Returns the failures.
    pub(crate) fn destroy_sets(&self, sets: &[String]) -> Vec<String> {
        let mut failures = Vec::new();
        for set in sets {
            let mut last = String::new();
            let mut ok = false;
            for attempt in 0..20 {
                match self.exec.run("ipset", &["destroy", set], None) {
                    Ok(out) if out.success => {
                        ok = true;
                        break;
                    }
                    Ok(out) if out.stderr.contains("does not exist") => {
                        ok = true;
                        break;
                    }
                    Ok(out) => last = out.stderr,
                    Err(e) => {
                        last = e.to_string();
                        break;
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(10 * (attempt + 1)));
            }
            if !ok {
                failures.push(format!("destroying set {set}: {}", last.trim()));
            }
        }
        failures
    }
}

/// Adds the offending input line to a restore error: the tools number the
/// lines of the text we fed them (rewritten for the generation), not the
/// bundle file's.
pub(crate) fn annotate(e: Error, text: &str) -> Error {
    match e {
        Error::Step {
            step,
            program,
            stderr,
        } => {
            let n = ["at line: ", "in line "].iter().find_map(|m| {
                let at = stderr.find(m)? + m.len();
                let digits: String = stderr[at..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                digits.parse::<usize>().ok()
            });
            let stderr = match n.and_then(|n| text.lines().nth(n.wrapping_sub(1))) {
                Some(line) => format!("{}\n(input line: {line})", stderr.trim_end()),
                None => stderr,
            };
            Error::Step {
                step,
                program,
                stderr,
            }
        }
        other => other,
    }
}

/// Restore text for one table: declarations (each flushes or creates the
/// chain) and lines, then COMMIT.
pub(crate) fn table_text(table: &str, declare: &[String], lines: &[String]) -> String {
    let mut s = format!("*{table}\n");
    for c in declare {
        s.push_str(&format!(":{c} - [0:0]\n"));
    }
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s.push_str("COMMIT\n");
    s
}
