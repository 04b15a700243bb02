//! A block's rules encoded before the sets they name exist, the set
//! indexes written afterwards (issue 21).
//!
//! # Why
//! An entry names a set by the kernel's index, known only once the set
//! exists, so the direct loader could encode nothing before step 1 (the
//! `ipset restore`) was over — and step 1 is mostly the kernel waiting
//! (each `create` that grows the namespace's table of sets does so
//! through an RCU grace period), the CPU idle. At 100,000 rules the parse
//! and the encoding of the ~260,000 entries are over a second of CPU.
//!
//! # How
//! [`encode`] encodes every rule with [`Ctx::defer`]: the set match and
//! the SET target write index 0, and the context notes where in the
//! entry and for which set name. [`resolve`] then (after step 1, beside
//! the table's read) looks the names up — one ipset header dump past a
//! few dozen, [`Ctx::prefetch_names`], as before — and writes each index.
//! The entries are then byte for byte what encoding after step 1 wrote
//! (the oracle tests compare them with the tools'). A set that does not
//! exist (or is of the other family) then is the same error as before,
//! met before the table is touched.
//!
//! The one other thing encoding asked of the table, whether a jump's
//! target is a chain, is asked when the rule is applied ([`apply`]), at
//! the same point of the block as before. Every load encodes this way,
//! whether before step 1 ([`super::prepare`]) or beside the read.

use super::ext::Ctx;
use super::spec::{self, Cmd};
use super::table::{Jump, Rule, Table};

/// A block's commands with their rules encoded, set indexes pending.
pub(super) struct Encoded {
    /// Per command, its rule (`None`: a `:CHAIN` or a `-X`).
    rules: Vec<Option<Rule>>,
    /// Every index to write: (command, offset in its entry, set).
    fixups: Vec<(u32, u32, u32)>,
    /// The sets named, in the order met (a fixup's set is a place here).
    names: Vec<String>,
}

/// Encodes every rule of `cmds`, no set looked up (see the module doc).
pub(super) fn encode(cmds: &[Cmd], ctx: &mut Ctx) -> Result<Encoded, String> {
    ctx.defer();
    let mut rules = Vec::with_capacity(cmds.len());
    let mut fixups = Vec::new();
    let mut failed = None;
    for (i, c) in cmds.iter().enumerate() {
        let s = match c {
            Cmd::Append(_, s) | Cmd::Insert(_, _, s) | Cmd::Delete(_, s) => s,
            Cmd::Declare(_) | Cmd::DeleteChain(_) => {
                rules.push(None);
                continue;
            }
        };
        // Any name may be a chain here; `apply` asks the table.
        match spec::encode(s, ctx, &|_| true) {
            Ok(r) => rules.push(Some(r)),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
        if let Some(d) = ctx.deferred() {
            fixups.extend(
                d.placed
                    .drain(..)
                    .map(|(at, set)| (i as u32, at as u32, set)),
            );
        }
    }
    let names = ctx.undefer();
    match failed {
        Some(e) => Err(e),
        None => Ok(Encoded {
            rules,
            fixups,
            names,
        }),
    }
}

/// Looks up the sets `e` names (in `ctx`'s namespace and family) and
/// writes their indexes; `Err` as encoding them would have been.
pub(super) fn resolve(e: &mut Encoded, ctx: &mut Ctx) -> Result<(), String> {
    let names: Vec<&str> = e.names.iter().map(String::as_str).collect();
    ctx.prefetch_names(&names);
    let indexes = names
        .iter()
        .map(|n| ctx.set_index(n))
        .collect::<Result<Vec<u16>, String>>()?;
    for &(cmd, at, set) in &e.fixups {
        let r = e.rules[cmd as usize]
            .as_mut()
            .ok_or("a set index outside a rule")?;
        let at = at as usize;
        let index = indexes.get(set as usize).ok_or("a set index of no set")?;
        r.bytes
            .get_mut(at..at + 2)
            .ok_or("a set index outside its entry")?
            .copy_from_slice(&index.to_ne_bytes());
    }
    Ok(())
}

/// Applies the block (`cmds`, encoded and resolved as `e`) to `t` with
/// `iptables-restore --noflush`'s meaning.
pub(super) fn apply_all(t: &mut Table, cmds: &[Cmd], e: Encoded) -> Result<(), String> {
    if e.rules.len() != cmds.len() {
        return Err("encoded rules do not match the block".into());
    }
    for (c, r) in cmds.iter().zip(e.rules) {
        apply(t, c, r)?;
    }
    Ok(())
}

/// One command; `r` its rule. A jump to a name that is not a chain of
/// `t` is the error encoding gave before (`spec::encode`'s `target`).
fn apply(t: &mut Table, c: &Cmd, r: Option<Rule>) -> Result<(), String> {
    match c {
        Cmd::Declare(name) => t.declare(name),
        Cmd::Append(name, _) => {
            let r = checked(t, r)?;
            t.add(name, None, r)
        }
        Cmd::Insert(name, n, _) => {
            let r = checked(t, r)?;
            t.add(name, Some(n - 1), r)
        }
        Cmd::Delete(name, _) => {
            let r = checked(t, r)?;
            t.delete(name, &r)
        }
        Cmd::DeleteChain(name) => t.delete_chain(name),
    }
}

fn checked(t: &Table, r: Option<Rule>) -> Result<Rule, String> {
    let r = r.ok_or("a rule command without its rule")?;
    match &r.jump {
        Jump::Chain(n) if t.chain(n).is_none() => Err(format!("target `{n}`")),
        _ => Ok(r),
    }
}
