//! Read-back: what the kernel holds, compared with what was applied.
//!
//! A restore tool that exits 0 has only said that the kernel accepted the
//! text, not that the kernel enforces what the text says: the icmp match
//! takes type 255 as "any type", so `--icmp-type 255` comes back from
//! `iptables-save` as `--icmp-type any` — an allow widened to all ICMP.
//! So after every switch (and for `weir status`) the generation's chains,
//! hook chains and sets are read back — the rules as the family's save
//! tool prints them, read from the kernel directly where the restores
//! went to x_tables directly (`xt/saved.rs` says why that is sound),
//! else with `iptables-save` / `ip6tables-save`, and the sets with
//! `ipset save` — both sides go through [`super::normalize`], and the
//! first difference is reported by family, chain and rule.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::normalize;
use super::restore::{SavedTable, TableBlock};
use super::{names, Iptables, Saved};
use crate::bundle::Family;
use crate::error::Error;

/// What one family of a generation should look like in the kernel.
#[derive(Debug, Clone, Default)]
pub(crate) struct Expected {
    /// Table blocks of the generation (chains and rule lines).
    pub blocks: Vec<TableBlock>,
    /// (table, built-in) → hook targets, in order.
    pub hooks: BTreeMap<(String, String), Vec<String>>,
}

/// The rules of each chain of `block`, in the order the kernel keeps
/// them (`-A` appends, `-I CHAIN [N]` inserts).
pub(crate) fn chain_rules(block: &TableBlock) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = block
        .chains
        .iter()
        .map(|c| (c.clone(), Vec::new()))
        .collect();
    for r in &block.rules {
        // `-A CHAIN …` (nearly every line): the chain is the second word
        // (chain names have no quotes or spaces).
        if let Some(chain) = r.strip_prefix("-A ").and_then(|x| x.split(' ').next()) {
            if !chain.is_empty() && !chain.contains(['"', '\\', '\'']) {
                out.entry(chain.to_string()).or_default().push(r.clone());
                continue;
            }
        }
        let w = normalize::words(r);
        let (cmd, chain) = (w.first().map(String::as_str), w.get(1).cloned());
        let Some(chain) = chain else { continue };
        let list = out.entry(chain.clone()).or_default();
        if matches!(cmd, Some("-I" | "--insert")) {
            let pos = w.get(2).and_then(|n| n.parse::<usize>().ok());
            let mut line = w.clone();
            line[0] = "-A".into();
            if pos.is_some() {
                line.remove(2);
            }
            let at = pos.unwrap_or(1).saturating_sub(1).min(list.len());
            list.insert(at, requote(&line));
        } else {
            list.push(r.clone());
        }
    }
    out
}

/// Words back into a line the parser reads the same way.
fn requote(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if w.is_empty() || w.contains(char::is_whitespace) || w.contains('"') {
                format!("\"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""))
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A saved table indexed by chain: its chains, and each chain's rules in
/// order (one pass, so tens of thousands of chains compare in linear time).
pub(crate) struct Index<'a> {
    chains: HashSet<&'a str>,
    rules: HashMap<&'a str, Vec<&'a String>>,
}

impl<'a> Index<'a> {
    pub(crate) fn new(t: &'a SavedTable) -> Index<'a> {
        let mut rules: HashMap<&str, Vec<&String>> = HashMap::new();
        for r in &t.rules {
            if let Some(chain) = r.strip_prefix("-A ").and_then(|x| x.split(' ').next()) {
                rules.entry(chain).or_default().push(r);
            }
        }
        Index {
            chains: t.chains.iter().map(String::as_str).collect(),
            rules,
        }
    }

    pub(crate) fn rules(&self, chain: &str) -> &[&'a String] {
        self.rules.get(chain).map_or(&[], Vec::as_slice)
    }

    /// The kernel has chain `chain` (in this table).
    pub(crate) fn has(&self, chain: &str) -> bool {
        self.chains.contains(chain)
    }
}

/// Compares one family's chains and hooks with the kernel's: `None` when
/// they match, else the first difference, in words.
pub(crate) fn compare_family(family: Family, want: &Expected, saved: &Saved) -> Option<String> {
    let f = family.name();
    let empty = BTreeMap::new();
    let tables = saved.get(&family).unwrap_or(&empty);
    let missing = SavedTable::default();
    let table = |name: &str| tables.get(name).unwrap_or(&missing);
    for block in &want.blocks {
        let t = Index::new(table(&block.table));
        for (chain, rules) in chain_rules(block) {
            if !t.chains.contains(chain.as_str()) {
                return Some(format!("{f} {}: chain {chain} is missing", block.table));
            }
            let have = t.rules(&chain);
            if let Some(d) = compare_chain(family, &block.table, &chain, &rules, have) {
                return Some(d);
            }
        }
    }
    for ((tname, builtin), targets) in &want.hooks {
        let t = table(tname);
        let hook = names::hook_chain(builtin);
        let prefix = format!("-A {hook} ");
        let have: Vec<&String> = t.rules.iter().filter(|r| r.starts_with(&prefix)).collect();
        let want_lines: Vec<String> = targets
            .iter()
            .map(|g| format!("-A {hook} -j {g}"))
            .collect();
        if have.len() != want_lines.len() || have.iter().zip(&want_lines).any(|(h, w)| *h != w) {
            return Some(format!(
                "{f} {tname} hook chain {hook}: should jump to {}, the kernel has {}",
                targets.join(", "),
                if have.is_empty() {
                    "no rule".to_string()
                } else {
                    have.iter()
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ));
        }
        let jumps = t.jumps(builtin, &hook);
        if jumps != 1 {
            return Some(format!(
                "{f} {tname} {builtin}: {jumps} jump(s) to {hook} (should be 1)"
            ));
        }
    }
    None
}

/// One chain's rules, applied against the kernel's, in order.
pub(crate) fn compare_chain(
    family: Family,
    table: &str,
    chain: &str,
    rules: &[String],
    have: &[&String],
) -> Option<String> {
    let f = family.name();
    for (i, want_line) in rules.iter().enumerate() {
        let Some(have_line) = have.get(i) else {
            return Some(format!(
                "{f} {table} chain {chain} rule {}: applied `{want_line}`, the kernel has no such rule",
                i + 1
            ));
        };
        // The same text has the same canonical form (`canon` is a
        // function of the text): most lines come back byte for byte, and
        // only the others need parsing.
        if want_line == *have_line {
            continue;
        }
        let (a, b) = (
            normalize::canon(want_line, family),
            normalize::canon(have_line, family),
        );
        if !matches!((&a, &b), (Ok(a), Ok(b)) if a == b) {
            return Some(format!(
                "{f} {table} chain {chain} rule {}: applied `{want_line}`, the kernel holds `{have_line}`",
                i + 1
            ));
        }
    }
    have.get(rules.len())
        .map(|extra| format!("{f} {table} chain {chain}: the kernel holds an extra rule `{extra}`"))
}

/// One set of `ipset save` (or `ipset restore`) text: type, family,
/// `maxelem` and members (canonical, [`member`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct SetContent {
    pub kind: String,
    pub family: String,
    pub maxelem: String,
    pub members: BTreeSet<String>,
    /// A member carries an option other than `nomatch` (`skbmark`).
    pub options: bool,
}

/// A member's canonical form: addresses with the prefix masked and a
/// host length dropped (as ipset prints them), a bare port with `tcp:`.
pub(crate) fn member<W: AsRef<str>>(words: &[W]) -> String {
    let Some(first) = words.first().map(AsRef::as_ref) else {
        return String::new();
    };
    let mut s = if first.contains(',') {
        first.split(',').map(element).collect::<Vec<_>>().join(",")
    } else {
        element(first)
    };
    let mut rest = words[1..].iter().map(AsRef::as_ref);
    while let Some(w) = rest.next() {
        match w {
            "nomatch" => s.push_str(" nomatch"),
            "skbmark" => {
                s.push_str(" skbmark ");
                s.push_str(&skbmark(rest.next().unwrap_or_default()));
            }
            _ => {}
        }
    }
    s
}

/// One element of a member (an address or a port) in canonical form.
fn element(c: &str) -> String {
    if c.parse::<u16>().is_ok() {
        return format!("tcp:{c}");
    }
    // The common member, a host or a host written `/32`, without the
    // address printed again: Rust reads IPv4 only in the form ipset
    // prints (dotted decimal, no leading zeros), so what it reads is
    // already canonical.
    let host = c.strip_suffix("/32").unwrap_or(c);
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return host.to_string();
    }
    let n = normalize::cidr(c);
    n.strip_suffix("/32")
        .or_else(|| n.strip_suffix("/128"))
        .map(str::to_string)
        .unwrap_or(n)
}

/// An `skbmark VALUE[/MASK]` option in one form: `ipset save` omits a
/// mask of `0xffffffff` and prints hex in lower case; a restore line may
/// say either. Compared, not dropped, so the `self` set's ids are read
/// back (`iptables::self_set`). Text that is not a mark stays as written,
/// so it differs from any well-formed one.
fn skbmark(text: &str) -> String {
    let hex =
        |t: &str| u32::from_str_radix(t.trim_start_matches("0x").trim_start_matches("0X"), 16);
    let (value, mask) = text.split_once('/').unwrap_or((text, "0xffffffff"));
    match (hex(value), hex(mask)) {
        (Ok(v), Ok(m)) => format!("{v:#x}/{m:#x}"),
        _ => text.to_string(),
    }
}

/// The sets of `ipset save` / `ipset restore` text whose names `keep`
/// accepts, by name.
///
/// A set's lines come together (its `create`, then its `add`s), so each
/// run of lines naming one set is read into one [`Run`] and looked up
/// once, not per member (~240,000 members in a 100,000-rule replace's
/// read-back); runs of the same name merge as the lines would. Only the
/// lines of sets kept are split into words.
pub(crate) fn parse_sets(text: &str, keep: &dyn Fn(&str) -> bool) -> BTreeMap<String, SetContent> {
    let mut out: BTreeMap<String, SetContent> = BTreeMap::new();
    let mut run: Option<Run> = None;
    for line in text.lines() {
        let line = line.trim();
        let mut head = line.split_whitespace();
        let (Some(cmd), Some(name)) = (head.next(), head.next()) else {
            continue;
        };
        let create = matches!(cmd, "create" | "-N");
        if !create && !matches!(cmd, "add" | "-A") {
            continue;
        }
        if run.as_ref().is_none_or(|r| r.name != name) {
            if let Some(r) = run.take() {
                r.merge(&mut out);
            }
            run = Some(Run::new(name, keep(name)));
        }
        let Some(r) = run.as_mut().filter(|r| r.keep) else {
            continue;
        };
        // Set lines quote nothing: their words are borrowed, not copied.
        let quoted;
        let w: Vec<&str> = if normalize::plain(line) {
            line.split_whitespace().collect()
        } else {
            quoted = normalize::words(line);
            quoted.iter().map(String::as_str).collect()
        };
        if create {
            let at = |k: &str| {
                w.iter()
                    .position(|x| *x == k)
                    .and_then(|i| w.get(i + 1).map(|v| v.to_string()))
            };
            r.created = Some((
                w.get(2).map(|v| v.to_string()).unwrap_or_default(),
                at("family").unwrap_or_else(|| "inet".into()),
                at("maxelem").unwrap_or_else(|| "65536".into()),
            ));
        } else {
            r.options |= w.len() > 3 && !(w.len() == 4 && w[3] == "nomatch");
            r.members.insert(member(&w[2..]));
        }
    }
    if let Some(r) = run {
        r.merge(&mut out);
    }
    out
}

/// One run of [`parse_sets`]'s lines naming the same set.
struct Run<'t> {
    name: &'t str,
    keep: bool,
    options: bool,
    /// The last `create`'s type, family and `maxelem`.
    created: Option<(String, String, String)>,
    members: BTreeSet<String>,
}

impl<'t> Run<'t> {
    fn new(name: &'t str, keep: bool) -> Self {
        Run {
            name,
            keep,
            options: false,
            created: None,
            members: BTreeSet::new(),
        }
    }

    fn merge(self, out: &mut BTreeMap<String, SetContent>) {
        if !self.keep {
            return;
        }
        let c = out.entry(self.name.to_string()).or_default();
        if let Some((kind, family, maxelem)) = self.created {
            (c.kind, c.family, c.maxelem) = (kind, family, maxelem);
        }
        c.options |= self.options;
        c.members.extend(self.members);
    }
}

/// Compares the sets applied (`ipset restore` text) with the kernel's.
pub(crate) fn compare_sets(applied: &str, kernel: &str) -> Option<String> {
    let want = parse_sets(applied, &|_| true);
    let have = parse_sets(kernel, &|n| want.contains_key(n));
    for (name, w) in &want {
        let Some(h) = have.get(name) else {
            return Some(format!("set {name} is missing"));
        };
        if (&w.kind, &w.family, &w.maxelem) != (&h.kind, &h.family, &h.maxelem) {
            return Some(format!(
                "set {name}: applied {} {} maxelem {}, the kernel has {} {} maxelem {}",
                w.kind, w.family, w.maxelem, h.kind, h.family, h.maxelem
            ));
        }
        if let Some(m) = w.members.difference(&h.members).next() {
            return Some(format!(
                "set {name}: applied member {m}, the kernel lacks it"
            ));
        }
        if let Some(m) = h.members.difference(&w.members).next() {
            return Some(format!(
                "set {name}: the kernel holds member {m}, not applied"
            ));
        }
    }
    None
}

impl Iptables {
    /// The namespace's sets as `ipset save` prints them (empty when
    /// `ipset` is not installed and not needed): with one netlink dump
    /// ([`super::xt::ipset_save`], weir's sets only) unless
    /// `WEIR_XTABLES=tools` (the switch of the direct set loader, which
    /// wrote them), else — and whenever the dump holds a weir set the
    /// printer cannot print exactly — by the tool (every set).
    pub(crate) fn save_sets(&self, required: bool) -> Result<String, Error> {
        if !required && super::exec::find_program("ipset").is_none() {
            return Ok(String::new());
        }
        if self.opts.xtables == super::xt::XtMode::Direct {
            if let Some(text) = self.save_sets_direct() {
                return Ok(text);
            }
        }
        Ok(self
            .exec
            .run_ok("reading sets (ipset save)", "ipset", &["save"], None)?
            .stdout)
    }

    /// Reads back a generation: `None` when every family and every set
    /// matches, else the first difference (families in order, then sets);
    /// with what the kernel holds. The families and the sets are saved
    /// concurrently, and compared concurrently ([`super::load`]).
    pub(crate) fn read_back(
        &self,
        want: &BTreeMap<Family, Expected>,
        ipset: &str,
        phases: &mut super::Phases,
    ) -> Result<(Option<String>, Saved), Error> {
        let sets = !ipset.trim().is_empty();
        let (saved, kernel_sets) = phases.time("read-back: save", || self.save_with_sets(sets))?;
        let diff = phases.time("read-back: compare", || {
            std::thread::scope(|s| {
                let sets = kernel_sets
                    .as_deref()
                    .map(|k| s.spawn(move || compare_sets(ipset, k)));
                let families: Vec<_> = want
                    .iter()
                    .map(|(&family, e)| {
                        let saved = &saved;
                        s.spawn(move || compare_family(family, e, saved))
                    })
                    .collect();
                let mut first = None;
                for h in families {
                    let d = h.join().expect("compare thread");
                    first = first.or(d);
                }
                let sets = sets.and_then(|h| h.join().expect("compare sets thread"));
                first.or(sets)
            })
        });
        Ok((diff, saved))
    }
}

#[cfg(test)]
mod member_tests {
    use super::member;

    fn m(line: &str) -> String {
        member(
            &line
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn the_sets_read_back_are_compared_member_by_member() {
        use super::compare_sets;
        let applied = "create weir2-a hash:net family inet hashsize 64 maxelem 65536\n\
            add weir2-a 10.0.0.1/32\nadd weir2-a 10.1.0.0/16\n\
            create weir2-b hash:net family inet6 hashsize 64 maxelem 65536\nadd weir2-b fd00::1\n";
        // As the kernel prints them, among sets that are not compared.
        let kernel = "create weir1-a hash:net family inet hashsize 64 maxelem 65536\nadd weir1-a 10.9.9.9\n\
            create weir2-a hash:net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x1\n\
            add weir2-a 10.1.0.0/16\nadd weir2-a 10.0.0.1\n\
            create other hash:ip family inet\nadd other 10.0.0.1\n\
            create weir2-b hash:net family inet6 hashsize 64 maxelem 65536\nadd weir2-b fd00::1\n";
        assert_eq!(compare_sets(applied, kernel), None);
        let lacks = kernel.replace("add weir2-a 10.0.0.1\n", "");
        assert_eq!(
            compare_sets(applied, &lacks).as_deref(),
            Some("set weir2-a: applied member 10.0.0.1, the kernel lacks it")
        );
        let extra = kernel.replace(
            "add weir2-b fd00::1\n",
            "add weir2-b fd00::1\nadd weir2-b fd00::2\n",
        );
        assert_eq!(
            compare_sets(applied, &extra).as_deref(),
            Some("set weir2-b: the kernel holds member fd00::2, not applied")
        );
        let gone = kernel.replace("weir2-b", "weir1-b");
        assert_eq!(
            compare_sets(applied, &gone).as_deref(),
            Some("set weir2-b is missing")
        );
        let family = kernel.replace(
            "weir2-b hash:net family inet6",
            "weir2-b hash:net family inet",
        );
        assert!(compare_sets(applied, &family)
            .is_some_and(|d| d.starts_with("set weir2-b: applied hash:net inet6")));
        // A smaller limit than applied would refuse members later.
        let smaller = kernel.replace(
            "weir2-b hash:net family inet6 hashsize 64 maxelem 65536",
            "weir2-b hash:net family inet6 hashsize 64 maxelem 1024",
        );
        assert_eq!(
            compare_sets(applied, &smaller).as_deref(),
            Some("set weir2-b: applied hash:net inet6 maxelem 65536, the kernel has hash:net inet6 maxelem 1024")
        );
    }

    #[test]
    fn hosts_are_canonical_without_printing_them_again() {
        for (given, canonical) in [
            ("10.0.0.1", "10.0.0.1"),
            ("10.0.0.1/32", "10.0.0.1"),
            ("10.0.0.1/24", "10.0.0.0/24"),
            ("10.0.0.0/8 nomatch", "10.0.0.0/8 nomatch"),
            ("fd00::1/128", "fd00::1"),
            ("fd00:0::1", "fd00::1"),
            ("10.0.0.1,tcp:80", "10.0.0.1,tcp:80"),
            ("10.0.0.1/32,80", "10.0.0.1,tcp:80"),
        ] {
            assert_eq!(m(given), canonical, "{given}");
        }
        // The fast path relies on this: a form ipset does not print is
        // not read as an address, so it goes the long way (and stays as
        // written, different from any canonical member).
        assert!("010.0.0.1".parse::<std::net::Ipv4Addr>().is_err());
        assert_eq!(m("010.0.0.1"), "010.0.0.1");
    }

    #[test]
    fn skbmark_is_compared_in_one_form() {
        // As `weir` writes it and as `ipset save` prints it back.
        assert_eq!(
            m("10.0.0.1 skbmark 0x60000/0x0"),
            m("10.0.0.1 skbmark 0x60000/0x0")
        );
        assert_eq!(
            m("10.0.0.3 skbmark 0x30000"),
            m("10.0.0.3 skbmark 0x30000/0xFFFFFFFF")
        );
        // A different id or mask is a different member.
        assert_ne!(
            m("10.0.0.1 skbmark 0x60000/0x0"),
            m("10.0.0.1 skbmark 0x70000/0x0")
        );
        assert_ne!(m("10.0.0.1 skbmark 0x60000/0x0"), m("10.0.0.1"));
        assert_ne!(
            m("10.0.0.1 skbmark 0x60000/0x0"),
            m("10.0.0.1 skbmark 0x60000")
        );
        assert_eq!(m("10.0.0.0/8 nomatch"), "10.0.0.0/8 nomatch");
    }
}
