//! An x_tables table (IPv4 or IPv6: the offsets are the family's
//! [`Abi`]) as chains of entries: decoded from IPT_SO_GET_ENTRIES, laid
//! out again for IPT_SO_SET_REPLACE.
//!
//! The blob is libiptc's: built-in chains start at their `hook_entry` and
//! end with their policy (the `underflow` entry); a user chain is an
//! `ERROR` entry naming it, its rules, and a `RETURN` entry; one last
//! `ERROR` entry ends the table. A standard target's verdict `>= 0` is an
//! offset into the blob: decoding turns it into the name of the chain that
//! starts there (or "fall through", the offset of the next entry: a rule
//! without target), and layout turns names back into the new offsets, so
//! every entry the runtime does not touch is carried over as opaque bytes.
//! Each carried entry keeps its old index, for its counters.

use std::collections::HashMap;

use super::abi::Abi;

/// A match or target header: `u16 size`, `char name[29]`, `u8 revision`.
pub(crate) const XT_HEADER: usize = 32;
/// Standard verdicts (`-NF_DROP - 1`, `-NF_ACCEPT - 1`, `XT_RETURN`).
pub(crate) const DROP: i32 = -1;
pub(crate) const ACCEPT: i32 = -2;
pub(crate) const RETURN: i32 = -5;
const STANDARD_SIZE: usize = XT_HEADER + 8;
const ERROR_SIZE: usize = XT_HEADER + 32;

/// The built-in chains by hook number (`NF_INET_PRE_ROUTING` …).
pub(crate) const HOOKS: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// Where a standard target goes, when it goes to an offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Jump {
    /// Not a standard target with an offset: the bytes say it all.
    None,
    /// The first rule of this chain.
    Chain(String),
    /// The next entry (a rule without target).
    Next,
}

/// One entry: its bytes (counters, `comefrom` and an offset verdict are
/// rewritten at layout), where it jumps, and its index in the table it was
/// read from (for its counters).
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub bytes: Vec<u8>,
    pub jump: Jump,
    pub old: Option<u32>,
}

impl Rule {
    /// Whether two rules are the same rule (what `-D` looks for): equal
    /// bytes but for counters, `comefrom` and an offset verdict.
    pub fn same(&self, other: &Rule, abi: &Abi) -> bool {
        let (a, b) = (&self.bytes, &other.bytes);
        if self.jump != other.jump || a.len() != b.len() || a[..abi.comefrom] != b[..abi.comefrom] {
            return false;
        }
        if self.jump == Jump::None {
            return a[abi.entry..] == b[abi.entry..];
        }
        // Both verdicts at the same place (equal target offsets above).
        let v = u16_at(a, abi.target_offset) as usize + XT_HEADER;
        if v < abi.entry {
            return self.masked(abi) == other.masked(abi);
        }
        a[abi.entry..v] == b[abi.entry..v] && a[v + 4..] == b[v + 4..]
    }

    /// The bytes without counters, `comefrom` and an offset verdict.
    pub fn masked(&self, abi: &Abi) -> Vec<u8> {
        let mut b = self.bytes.clone();
        b[abi.comefrom..abi.entry].fill(0);
        if self.jump != Jump::None {
            let at = u16_at(&b, abi.target_offset) as usize + XT_HEADER;
            b[at..at + 4].fill(0);
        }
        b
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Chain {
    pub name: String,
    /// The hook of a built-in chain.
    pub hook: Option<usize>,
    pub rules: Vec<Rule>,
    /// A built-in chain's policy entry.
    pub policy: Option<Rule>,
    /// Deleted (`-X`): not laid out.
    pub gone: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub abi: &'static Abi,
    pub valid_hooks: u32,
    /// Built-in chains in hook order, then user chains.
    pub chains: Vec<Chain>,
    /// How many entries the table read had (`num_counters` of the
    /// replace).
    pub num_entries: u32,
    /// Chains by name (a table has tens of thousands).
    index: HashMap<String, usize>,
    /// How many rules jump to each chain.
    refs: HashMap<String, usize>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The NUL-terminated name at `b[..]`.
pub(crate) fn c_name(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The target's name (up to its NUL) and data of an entry.
fn target<'b>(b: &'b [u8], abi: &Abi) -> (&'b [u8], &'b [u8]) {
    let t = u16_at(b, abi.target_offset) as usize;
    let name = &b[t + 2..t + 31];
    let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
    (&name[..end], &b[t + XT_HEADER..])
}

impl Table {
    /// Decodes GET_ENTRIES' blob with GET_INFO's hooks.
    pub fn decode(
        abi: &'static Abi,
        blob: &[u8],
        valid_hooks: u32,
        hook_entry: [u32; 5],
        underflow: [u32; 5],
    ) -> Result<Table, String> {
        // Entries by offset.
        let mut entries: Vec<(u32, &[u8])> = Vec::new();
        let mut at = 0usize;
        while at < blob.len() {
            if blob.len() - at < abi.entry {
                return Err("truncated entry".into());
            }
            let next = u16_at(blob, at + abi.next_offset) as usize;
            let toff = u16_at(blob, at + abi.target_offset) as usize;
            if next < abi.entry || at + next > blob.len() || toff + XT_HEADER > next {
                return Err(format!("bad entry at offset {at}"));
            }
            entries.push((at as u32, &blob[at..at + next]));
            at += next;
        }
        let hook_at =
            |off: u32| (0..5).find(|&h| valid_hooks & (1 << h) != 0 && hook_entry[h] == off);
        let is_underflow =
            |off: u32| (0..5).any(|h| valid_hooks & (1 << h) != 0 && underflow[h] == off);
        // Where each chain's first rule is: built-in at its hook entry,
        // user chains right after their ERROR head.
        let mut starts: HashMap<u32, String> = HashMap::new();
        for (i, (off, e)) in entries.iter().enumerate() {
            if let Some(h) = hook_at(*off) {
                starts.insert(*off, HOOKS[h].to_string());
            }
            let (name, data) = target(e, abi);
            if name == b"ERROR" && i + 1 < entries.len() {
                starts.insert(entries[i + 1].0, c_name(&data[..data.len().min(30)]));
            }
        }
        let mut chains: Vec<Chain> = Vec::new();
        let mut user_open = false;
        for (i, (off, e)) in entries.iter().enumerate() {
            let (tname, data) = target(e, abi);
            let last = i + 1 == entries.len();
            if tname == b"ERROR" {
                if last {
                    break;
                }
                chains.push(Chain {
                    name: c_name(&data[..data.len().min(30)]),
                    hook: None,
                    rules: Vec::new(),
                    policy: None,
                    gone: false,
                });
                user_open = true;
                continue;
            }
            if let Some(h) = hook_at(*off) {
                chains.push(Chain {
                    name: HOOKS[h].to_string(),
                    hook: Some(h),
                    rules: Vec::new(),
                    policy: None,
                    gone: false,
                });
                user_open = false;
            }
            let Some(chain) = chains.last_mut() else {
                return Err(format!("entry at offset {off} outside a chain"));
            };
            let jump = if tname.is_empty() {
                let v = i32_at(data, 0);
                if v < 0 {
                    Jump::None
                } else if v as usize == *off as usize + e.len() {
                    Jump::Next
                } else if let Some(c) = starts.get(&(v as u32)) {
                    Jump::Chain(c.clone())
                } else {
                    return Err(format!("verdict {v} at offset {off} is no chain's start"));
                }
            } else {
                Jump::None
            };
            let rule = Rule {
                bytes: e.to_vec(),
                jump,
                old: Some(i as u32),
            };
            if chain.hook.is_some() && is_underflow(*off) {
                chain.policy = Some(rule);
                continue;
            }
            // A user chain's RETURN tail: the entry before the next head.
            let tail = user_open
                && entries
                    .get(i + 1)
                    .is_some_and(|(_, n)| target(n, abi).0 == b"ERROR");
            if tail {
                continue;
            }
            chain.rules.push(rule);
        }
        if chains
            .iter()
            .any(|c| c.hook.is_some() && c.policy.is_none())
        {
            return Err("a built-in chain without its policy".into());
        }
        Ok(Table::new(abi, valid_hooks, chains, entries.len() as u32))
    }

    pub fn new(abi: &'static Abi, valid_hooks: u32, chains: Vec<Chain>, num_entries: u32) -> Table {
        let mut t = Table {
            abi,
            valid_hooks,
            chains: Vec::new(),
            num_entries,
            index: HashMap::new(),
            refs: HashMap::new(),
        };
        for c in chains {
            for r in &c.rules {
                t.count(r, true);
            }
            t.index.insert(c.name.clone(), t.chains.len());
            t.chains.push(c);
        }
        t
    }

    fn count(&mut self, r: &Rule, add: bool) {
        if let Jump::Chain(to) = &r.jump {
            let n = match self.refs.get_mut(to.as_str()) {
                Some(n) => n,
                None => self.refs.entry(to.clone()).or_default(),
            };
            if add {
                *n += 1;
            } else {
                *n = n.saturating_sub(1);
            }
        }
    }

    pub fn chain(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// A user chain's index.
    pub fn user(&self, name: &str) -> Option<usize> {
        self.chain(name).filter(|&i| self.chains[i].hook.is_none())
    }

    /// `:CHAIN - [0:0]`: creates a user chain, or flushes it.
    pub fn declare(&mut self, name: &str) -> Result<(), String> {
        match self.chain(name) {
            Some(i) if self.chains[i].hook.is_none() => {
                for r in std::mem::take(&mut self.chains[i].rules) {
                    self.count(&r, false);
                }
            }
            Some(_) => return Err(format!("declaring built-in chain {name}")),
            None => {
                self.index.insert(name.to_string(), self.chains.len());
                self.chains.push(Chain {
                    name: name.to_string(),
                    hook: None,
                    rules: Vec::new(),
                    policy: None,
                    gone: false,
                });
            }
        }
        Ok(())
    }

    /// Puts `r` into chain `name` at `at` (from 0; `None`: appended).
    pub fn add(&mut self, name: &str, at: Option<usize>, r: Rule) -> Result<(), String> {
        if let Jump::Chain(to) = &r.jump {
            if self.user(to).is_none() {
                return Err(format!("jump to {to}, not a user chain"));
            }
        }
        let i = self.chain(name).ok_or_else(|| format!("no chain {name}"))?;
        self.count(&r, true);
        let rules = &mut self.chains[i].rules;
        match at {
            Some(n) if n <= rules.len() => rules.insert(n, r),
            Some(_) => return Err("rule number past the end".into()),
            None => rules.push(r),
        }
        Ok(())
    }

    /// `-D`: removes the first rule of `name` that is `r`.
    pub fn delete(&mut self, name: &str, r: &Rule) -> Result<(), String> {
        let i = self.chain(name).ok_or_else(|| format!("no chain {name}"))?;
        let at = self.chains[i]
            .rules
            .iter()
            .position(|x| x.same(r, self.abi))
            .ok_or_else(|| format!("no such rule in {name}"))?;
        let gone = self.chains[i].rules.remove(at);
        self.count(&gone, false);
        Ok(())
    }

    /// `-X`: removes an empty user chain nothing jumps to.
    pub fn delete_chain(&mut self, name: &str) -> Result<(), String> {
        let i = self
            .user(name)
            .ok_or_else(|| format!("no user chain {name}"))?;
        if !self.chains[i].rules.is_empty() {
            return Err(format!("chain {name} is not empty"));
        }
        if self.refs.get(name).is_some_and(|n| *n > 0) {
            return Err(format!("chain {name} is referenced"));
        }
        self.chains[i].gone = true;
        self.index.remove(name);
        Ok(())
    }

    /// The blob for IPT_SO_SET_REPLACE: built-in chains in hook order,
    /// user chains sorted by name (as libiptc keeps them), each with its
    /// ERROR head and RETURN tail, then the final ERROR entry. Returns the
    /// blob, the entry count, `hook_entry`, `underflow` and each new
    /// entry's old index.
    pub fn layout(&self) -> Result<Layout, String> {
        let mut order: Vec<&Chain> = Vec::new();
        let live = || self.chains.iter().filter(|c| !c.gone);
        let mut builtin: Vec<&Chain> = live().filter(|c| c.hook.is_some()).collect();
        builtin.sort_by_key(|c| c.hook);
        let mut user: Vec<&Chain> = live().filter(|c| c.hook.is_none()).collect();
        user.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        order.extend(builtin);
        order.extend(user);
        // First pass: offsets of each chain's first rule.
        let mut starts: HashMap<&str, u32> = HashMap::with_capacity(order.len());
        let abi = self.abi;
        let mut at = 0usize;
        for c in &order {
            if c.hook.is_none() {
                at += abi.entry + ERROR_SIZE;
            }
            starts.insert(&c.name, at as u32);
            at += c.rules.iter().map(|r| r.bytes.len()).sum::<usize>();
            at += match &c.policy {
                Some(p) => p.bytes.len(),
                None => abi.entry + STANDARD_SIZE,
            };
        }
        let mut out = Layout::default();
        out.blob.reserve(at + abi.entry + ERROR_SIZE);
        for c in &order {
            if c.hook.is_none() {
                out.push(error_entry(abi, &c.name), None);
            }
            if let Some(h) = c.hook {
                out.hook_entry[h] = out.blob.len() as u32;
            }
            for r in &c.rules {
                out.push_rule(abi, r, &starts)?;
            }
            match (&c.policy, c.hook) {
                (Some(p), Some(h)) => {
                    out.underflow[h] = out.blob.len() as u32;
                    out.push_rule(abi, p, &starts)?;
                }
                _ => out.push(standard_entry(abi, RETURN), None),
            }
        }
        out.push(error_entry(abi, "ERROR"), None);
        Ok(out)
    }
}

/// A laid-out table.
#[derive(Debug, Default)]
pub(crate) struct Layout {
    pub blob: Vec<u8>,
    pub hook_entry: [u32; 5],
    pub underflow: [u32; 5],
    /// Per new entry, its old index.
    pub old: Vec<Option<u32>>,
}

impl Layout {
    fn push(&mut self, bytes: Vec<u8>, old: Option<u32>) {
        self.blob.extend_from_slice(&bytes);
        self.old.push(old);
    }

    fn push_rule(
        &mut self,
        abi: &Abi,
        r: &Rule,
        starts: &HashMap<&str, u32>,
    ) -> Result<(), String> {
        let here = self.blob.len();
        let verdict = match &r.jump {
            Jump::None => None,
            Jump::Next => Some((here + r.bytes.len()) as i32),
            Jump::Chain(c) => Some(
                *starts
                    .get(c.as_str())
                    .ok_or_else(|| format!("jump to chain `{c}`, which does not exist"))?
                    as i32,
            ),
        };
        // The bytes copied once, then counters, `comefrom` and an offset
        // verdict rewritten in place.
        self.blob.extend_from_slice(&r.bytes);
        let b = &mut self.blob[here..];
        b[abi.comefrom..abi.entry].fill(0);
        if let Some(v) = verdict {
            let at = u16_at(b, abi.target_offset) as usize + XT_HEADER;
            b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        }
        self.old.push(r.old);
        Ok(())
    }

    pub fn num_entries(&self) -> u32 {
        self.old.len() as u32
    }
}

/// An entry with an all-zero IP part, no match, and `target`.
pub(crate) fn entry_with(abi: &Abi, target: &[u8]) -> Vec<u8> {
    entry(abi, &[], &[], target)
}

/// A match or target: header (size, name, revision) and data padded to 8.
pub(crate) fn xt_object(name: &str, revision: u8, data: &[u8]) -> Vec<u8> {
    let size = XT_HEADER + data.len().div_ceil(8) * 8;
    let mut b = vec![0u8; size];
    b[..2].copy_from_slice(&(size as u16).to_ne_bytes());
    let n = name.len().min(28);
    b[2..2 + n].copy_from_slice(&name.as_bytes()[..n]);
    b[31] = revision;
    b[XT_HEADER..XT_HEADER + data.len()].copy_from_slice(data);
    b
}

/// The standard target with `verdict`.
pub(crate) fn standard_target(verdict: i32) -> Vec<u8> {
    xt_object("", 0, &verdict.to_ne_bytes())
}

fn standard_entry(abi: &Abi, verdict: i32) -> Vec<u8> {
    entry_with(abi, &standard_target(verdict))
}

fn error_entry(abi: &Abi, name: &str) -> Vec<u8> {
    let mut data = [0u8; 30];
    let n = name.len().min(29);
    data[..n].copy_from_slice(&name.as_bytes()[..n]);
    entry_with(abi, &xt_object("ERROR", 0, &data))
}

/// Finishes an entry: `ip` (the IP part, at most `abi.ip` bytes, zeros
/// after it), then `matches`, then `target`.
pub(crate) fn entry(abi: &Abi, ip: &[u8], matches: &[u8], target: &[u8]) -> Vec<u8> {
    // One allocation of the entry's final size.
    let mut b = Vec::with_capacity(abi.entry + matches.len() + target.len());
    b.extend_from_slice(&ip[..ip.len().min(abi.ip)]);
    b.resize(abi.entry, 0);
    let toff = abi.entry + matches.len();
    b[abi.target_offset..abi.target_offset + 2].copy_from_slice(&(toff as u16).to_ne_bytes());
    b[abi.next_offset..abi.next_offset + 2]
        .copy_from_slice(&((toff + target.len()) as u16).to_ne_bytes());
    b.extend_from_slice(matches);
    b.extend_from_slice(target);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table laid out and decoded again is the same table, in both
    /// families' layouts.
    #[test]
    fn layout_then_decode() {
        for abi in [&super::super::abi::V4, &super::super::abi::V6] {
            layout_then_decode_in(abi);
        }
    }

    fn layout_then_decode_in(abi: &'static Abi) {
        let policy = |h: usize| Chain {
            name: HOOKS[h].into(),
            hook: Some(h),
            rules: Vec::new(),
            policy: Some(Rule {
                bytes: standard_entry(abi, ACCEPT),
                jump: Jump::None,
                old: None,
            }),
            gone: false,
        };
        let mut t = Table::new(abi, 0b1110, vec![policy(1), policy(2), policy(3)], 0);
        let jump = |c: &str, goto: bool| {
            let mut b = standard_entry(abi, 0);
            if goto {
                b[abi.flags] = abi.f_goto;
            }
            Rule {
                bytes: b,
                jump: Jump::Chain(c.into()),
                old: None,
            }
        };
        t.declare("B").unwrap();
        t.declare("A").unwrap();
        t.declare("GONE").unwrap();
        t.add("FORWARD", None, jump("B", false)).unwrap();
        t.add("B", None, jump("A", true)).unwrap();
        t.add("B", Some(0), jump("GONE", false)).unwrap();
        let next = Rule {
            bytes: standard_entry(abi, 0),
            jump: Jump::Next,
            old: None,
        };
        t.add("A", None, next).unwrap();
        assert!(t.delete_chain("GONE").is_err(), "referenced");
        t.delete("B", &jump("GONE", false)).unwrap();
        assert!(t.delete("B", &jump("GONE", false)).is_err(), "no such rule");
        t.delete_chain("GONE").unwrap();
        assert!(t.delete_chain("A").is_err(), "not empty");
        let l = t.layout().unwrap();
        assert_eq!(l.num_entries(), 3 + 1 + 2 * 2 + 2 + 1);
        let back = Table::decode(abi, &l.blob, t.valid_hooks, l.hook_entry, l.underflow).unwrap();
        let names: Vec<&str> = back.chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["INPUT", "FORWARD", "OUTPUT", "A", "B"]);
        assert_eq!(back.chains[1].rules[0].jump, Jump::Chain("B".into()));
        assert_eq!(back.chains[4].rules[0].jump, Jump::Chain("A".into()));
        assert_eq!(back.chains[4].rules[0].bytes[abi.flags], abi.f_goto);
        assert_eq!(back.chains[3].rules[0].jump, Jump::Next);
        assert!(back.chains[1].rules[0].same(&t.chains[1].rules[0], abi));
        assert_eq!(back.chain("GONE"), None);
    }
}
