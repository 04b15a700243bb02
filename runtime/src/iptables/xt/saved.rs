//! The kernel's tables of one family read directly (GET_INFO +
//! GET_ENTRIES) and printed ([`super::save`]) into what
//! `iptables-legacy-save` (`ip6tables-legacy-save`) would give
//! [`crate::iptables::restore::parse_save`], without the tools (issue
//! 21): every read of the kernel's rules where the family's restores go
//! to x_tables directly — an apply's start and its read-back, `weir
//! status`, the rollback, `weir detach`
//! ([`crate::iptables::Iptables::save_family`]).
//!
//! # Why the read-back may use it
//! The read-back's question is what the kernel holds, and this reads
//! exactly that (GET_ENTRIES: the entries the kernel matches packets
//! with) and prints each rule as the save tool would. The tool was the
//! read-back's reader until session 17; at 100,000 rules it took 2.6 s
//! of a 6.7 s apply on the benchmark's machine, nearly all of it
//! libxt_set asking the kernel for each `-m set` rule's set name (a
//! socket and two getsockopts per rule). What the tool gave beyond the
//! kernel's bytes is an independent decoder: a loader bug mirrored by a
//! printer bug would pass a read-back made by this module alone. That
//! independence is kept where it can be checked, in CI rather than on
//! every apply: `iptables_xt_oracle` loads the same texts with the tool
//! and with the loader and compares the entries byte for byte, and
//! `iptables_xt_save` compares every line this module prints with the
//! tool's (hand texts with every extension, the examples, dual-stack
//! synth models); a rule the printer does not print exactly sends the
//! whole family to the tool. `WEIR_XTABLES=tools` gives the tools'
//! read-back (and load) back.
//!
//! The tables are those `/proc/net/ip_tables_names` (`ip6_tables_names`)
//! lists in the target namespace (read from a thread inside it), as the
//! save tool does: a
//! GET_INFO of a table not listed would create it. Each table is read
//! under `/run/xtables.lock`. A rule of one of our chains
//! ([`names::is_our_chain`]) the printer cannot print exactly makes the
//! whole read `Err` (the caller uses the tool); a rule of another chain
//! becomes a [`save::placeholder`] line, because what the apply reads of
//! such rules is only the exact `-A BUILTIN -j WEIR-…` jump lines (which
//! the printer always prints: a standard jump without matches) and the
//! chain names.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::time::Instant;

use super::abi::{self, Abi};
use super::save::{self, SetNames};
use super::sys::{self, Sock};
use super::table::Table;
use crate::bundle::Family;
use crate::iptables::exec::{in_netns, NETNS_DIR};
use crate::iptables::names;
use crate::iptables::restore::SavedTable;

/// What the read found besides the tables.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ReadStats {
    pub rules: usize,
    /// Foreign rules kept as placeholders.
    pub placeholders: usize,
    /// Distinct set indexes resolved.
    pub sets: usize,
    /// Seconds reading (GET_INFO + GET_ENTRIES), decoding and printing.
    pub read_s: f64,
    pub decode_s: f64,
    pub print_s: f64,
}

/// The `family` tables of `netns` as `parse_save` gives them.
pub fn read(
    netns: Option<&str>,
    family: Family,
) -> Result<(BTreeMap<String, SavedTable>, ReadStats), String> {
    let abi = abi::of(family);
    let file = netns
        .map(|n| File::open(Path::new(NETNS_DIR).join(n)))
        .transpose()
        .map_err(|e| format!("namespace: {e}"))?;
    let listed = |r: std::io::Result<String>| r.map_err(|e| format!("{}: {e}", abi.names));
    let names_text = match &file {
        Some(f) => {
            listed(in_netns(f, || table_names(abi)).map_err(|e| format!("namespace: {e}"))?)?
        }
        None => listed(table_names(abi))?,
    };
    let sock = Sock::open(file.as_ref(), abi).map_err(|e| format!("socket: {e}"))?;
    let mut sets = SetNames::new(&sock);
    let mut stats = ReadStats::default();
    let mut out = BTreeMap::new();
    for name in names_text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let at = Instant::now();
        let (info, blob) = {
            let _lock = sys::XtLock::take().map_err(|e| format!("xtables lock: {e}"))?;
            let info = sock
                .info(name)
                .map_err(|e| format!("GET_INFO {name}: {e}"))?;
            let blob = sock
                .entries_reply(name, info.size)
                .map_err(|e| format!("GET_ENTRIES {name}: {e}"))?;
            (info, blob)
        };
        stats.read_s += at.elapsed().as_secs_f64();
        let at = Instant::now();
        let t = Table::decode(
            abi,
            &blob[sys::ENTRIES_AT..],
            info.valid_hooks,
            info.hook_entry,
            info.underflow,
        )?;
        stats.decode_s += at.elapsed().as_secs_f64();
        let at = Instant::now();
        out.insert(name.to_string(), print(&t, &mut sets, &mut stats)?);
        stats.print_s += at.elapsed().as_secs_f64();
    }
    stats.sets = sets.asked();
    Ok((out, stats))
}

fn table_names(abi: &Abi) -> std::io::Result<String> {
    // The calling thread's namespace (`/proc/net` is the process's).
    std::fs::read_to_string(format!("/proc/thread-self/net/{}", abi.names))
}

/// A decoded table as `parse_save` gives it.
fn print(t: &Table, sets: &mut SetNames, stats: &mut ReadStats) -> Result<SavedTable, String> {
    let mut s = SavedTable::default();
    let live: Vec<_> = t.chains.iter().filter(|c| !c.gone).collect();
    for c in &live {
        s.chains.push(c.name.clone());
    }
    for c in &live {
        for r in &c.rules {
            stats.rules += 1;
            match save::rule(t.abi, &c.name, r, sets) {
                Ok(line) => s.rules.push(line),
                Err(why) if names::is_our_chain(&c.name) => {
                    return Err(format!("chain {}: {why}", c.name))
                }
                Err(why) => {
                    stats.placeholders += 1;
                    s.rules.push(save::placeholder(&c.name, &why));
                }
            }
        }
    }
    Ok(s)
}

/// The exec log's program name for a family's rules read directly (its
/// argument is the family).
pub const SAVE_DIRECT: &str = "x_tables save (direct)";

impl crate::iptables::Iptables {
    /// One family's rules read directly ([`read`]). A read that fails (a
    /// rule of ours the printer cannot print exactly, a socket error) is
    /// traced, counted as a fallback, and the family's save tool runs.
    pub(crate) fn read_family(
        &self,
        family: Family,
    ) -> Result<BTreeMap<String, SavedTable>, crate::error::Error> {
        let trace = std::env::var_os(crate::iptables::exec::TRACE_VAR).is_some();
        let t = Instant::now();
        match read(self.exec().netns(), family) {
            Ok((tables, stats)) => {
                if trace {
                    eprintln!(
                        "weir: {} rules read directly ({} rules, {} foreign placeholders, {} sets) in {:.3}s (read {:.3}s, decode {:.3}s, print {:.3}s)",
                        abi::of(family).label,
                        stats.rules,
                        stats.placeholders,
                        stats.sets,
                        t.elapsed().as_secs_f64(),
                        stats.read_s,
                        stats.decode_s,
                        stats.print_s
                    );
                }
                self.exec().record(crate::iptables::exec::Ran {
                    program: SAVE_DIRECT.to_string(),
                    args: vec![family.name().to_string()],
                    netns: self.exec().netns().map(str::to_string),
                    stdin: None,
                    status: Some(0),
                    stderr: String::new(),
                });
                Ok(tables)
            }
            Err(why) => {
                if trace {
                    eprintln!(
                        "weir: {} rules go to {}: {why}",
                        abi::of(family).label,
                        abi::of(family).save_tool
                    );
                }
                self.exec().count_fallback();
                self.save_family_tool(family)
            }
        }
    }
}
