//! Keeping an unchanged set from the generation in force (issue 21).
//!
//! A new generation used to create every set under its own name
//! (`weir<g>-…`) even when the set in force held exactly the same members.
//! At 100,000 rules that is ~6,800 sets re-created on every replace, and
//! while both generations exist the kernel's name lookup, which
//! `iptables-restore` makes for every `-m set` rule and which is linear
//! over the namespace's sets, walks past all of the old ones too
//! ([`super::load`]). So a set of the new generation whose content is
//! exactly that of a set the generation in force owns is not created: the
//! new generation's rules name the old set's kernel name (`weir<g'>-…`,
//! `g'` an earlier generation) and its state record lists it.
//!
//! Why content equality and not "same name, diff the members": the old
//! generation's rules still decide every packet until the switch, and
//! they must keep seeing their own members. A set is shared only when
//! both generations want the same members, so nothing is edited while two
//! generations exist, and the switch stays atomic.
//!
//! **What "the same" is:** read from the kernel (`ipset save`, under the
//! lock, at the start of the apply), not from our records: type, family,
//! `maxelem` and the members as the read-back normalises them. Only
//! `hash:net` sets whose members carry no option but `nomatch` are shared
//! (the address sets, all but a few of a program's sets); anything else
//! (the `self` id set with its `skbmark`s) is always created anew. Each
//! old set is shared with at most one new set, so an endpoint update of
//! one bundle set never changes another's.
//!
//! **Ownership:** a set belongs to every state record that lists its
//! kernel name. The removal of the old generation and the rollback of a
//! failed or interrupted apply ([`super::intent`]) already remove only the
//! sets one record lists and the other does not, so a shared set survives
//! both. The read-back compares the shared set with the new generation's
//! members like any other, and `weir endpoints` (which first finishes or
//! rolls back any interrupted apply, so only one generation exists when it
//! edits) reaches it through the state record's kernel name.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use super::names;
use super::readback::{parse_sets, SetContent};
use super::state::StateSet;

/// The sets of `ipset restore` / `ipset save` text that may be shared,
/// by name (only names `keep` accepts): `hash:net` sets whose members
/// carry no option but `nomatch` ([`parse_sets`]). Two sets have the same
/// content when type, family, `maxelem` and members are equal.
fn shareable(text: &str, keep: &dyn Fn(&str) -> bool) -> BTreeMap<String, SetContent> {
    let mut sets = parse_sets(text, keep);
    sets.retain(|_, c| c.kind == "hash:net" && !c.options);
    sets
}

/// Which of the new generation's sets (`ipset`, its restore text with
/// kernel names) keep a set of the generation in force (`previous`, its
/// recorded sets; `kernel`, `ipset save` of the namespace): new kernel
/// name → old kernel name. A set of the same bundle name is preferred,
/// then the first in the old generation's order.
pub(crate) fn plan(
    ipset: &str,
    new_sets: &[StateSet],
    previous: &[StateSet],
    kernel: &str,
) -> BTreeMap<String, String> {
    if previous.is_empty() {
        return BTreeMap::new();
    }
    let old_bundle: HashMap<&str, &str> = previous
        .iter()
        .map(|s| (s.kernel_name.as_str(), s.name.as_str()))
        .collect();
    let new_names: HashMap<&str, &str> = new_sets
        .iter()
        .map(|s| (s.kernel_name.as_str(), s.name.as_str()))
        .collect();
    let old = shareable(kernel, &|n| old_bundle.contains_key(n));
    let new = shareable(ipset, &|n| new_names.contains_key(n));
    let mut by_content: HashMap<&SetContent, Vec<&str>> = HashMap::new();
    for s in previous {
        if let Some(c) = old.get(&s.kernel_name) {
            by_content
                .entry(c)
                .or_default()
                .push(s.kernel_name.as_str());
        }
    }
    let mut out = BTreeMap::new();
    for s in new_sets {
        let Some(c) = new.get(&s.kernel_name) else {
            continue;
        };
        let Some(candidates) = by_content.get_mut(c) else {
            continue;
        };
        let pick = candidates
            .iter()
            .position(|k| old_bundle.get(k) == Some(&s.name.as_str()))
            .unwrap_or(0);
        if pick < candidates.len() {
            let k = candidates.remove(pick);
            out.insert(s.kernel_name.clone(), k.to_string());
        }
    }
    out
}

/// `line` with every space-separated word that is a key of `map` replaced
/// by its value (set names are single words; quoted comments never equal
/// a kernel set name).
pub(crate) fn rename_words<'l>(line: &'l str, map: &BTreeMap<String, String>) -> Cow<'l, str> {
    // Only a generation set's name is a key: the cheap test first (most
    // words of a rule are not; the map's lookup compares strings).
    rename_words_by(line, |w| {
        names::set_generation(w)?;
        map.get(w).map(String::as_str)
    })
}

/// `line` with every space-separated word for which `rename` gives a new
/// name replaced by it: the one renaming of set and chain names
/// (`keep.rs` renames chains with a hash map). Borrowed when no word is
/// renamed (most rules: no copy).
pub(crate) fn rename_words_by<'l, 'm>(
    line: &'l str,
    rename: impl Fn(&str) -> Option<&'m str>,
) -> Cow<'l, str> {
    if !line.split(' ').any(|w| rename(w).is_some()) {
        return Cow::Borrowed(line);
    }
    let words: Vec<&str> = line.split(' ').map(|w| rename(w).unwrap_or(w)).collect();
    Cow::Owned(words.join(" "))
}

/// Splits the new generation's `ipset restore` text: what must be
/// restored (sets not kept), and the whole text with kept sets under
/// their old names (what the kernel must then hold, for the read-back).
pub(crate) fn split_text(ipset: &str, map: &BTreeMap<String, String>) -> (String, String) {
    if map.is_empty() {
        return (ipset.to_string(), ipset.to_string());
    }
    let mut load = String::new();
    let mut whole = String::with_capacity(ipset.len());
    for line in ipset.lines() {
        let name = line.split_whitespace().nth(1).unwrap_or("");
        if map.contains_key(name) {
            whole.push_str(&rename_words(line, map));
        } else {
            load.push_str(line);
            whole.push_str(line);
        }
        load.push('\n');
        whole.push('\n');
    }
    // Lines of kept sets leave empty lines in `load`: drop them.
    let load = load
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    (load, whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, kernel: &str) -> StateSet {
        StateSet {
            name: name.into(),
            kernel_name: kernel.into(),
        }
    }

    #[test]
    fn renaming_words_copies_only_a_line_it_changes() {
        let map = |w: &str| match w {
            "a" => Some("AA"),
            "c" => Some("C"),
            _ => None,
        };
        for (line, want) in [
            ("a b  c", "AA b  C"),
            ("x a", "x AA"),
            ("c", "C"),
            (" a ", " AA "),
            ("b  d ", "b  d "),
            ("", ""),
        ] {
            let got = rename_words_by(line, map);
            assert_eq!(got, want, "{line:?}");
            assert_eq!(matches!(got, Cow::Borrowed(_)), line == want, "{line:?}");
        }
    }

    #[test]
    fn a_set_read_in_several_runs_is_one_set() {
        let grouped = "create weir1-a hash:net family inet maxelem 65536\n\
            add weir1-a 10.0.0.1\nadd weir1-a 10.0.0.2\n\
            create weir1-b hash:net family inet maxelem 65536\nadd weir1-b 10.0.0.3\n";
        let split = "add weir1-a 10.0.0.2\n\
            create weir1-b hash:net family inet maxelem 65536\n\
            create weir1-a hash:net family inet maxelem 65536\nadd weir1-b 10.0.0.3\n\
            add weir1-a 10.0.0.1/32\nadd weir1-c 10.0.0.4\nadd weir1-a 10.0.0.9 skbmark 0x1\n";
        let ours = |n: &str| n != "weir1-c";
        let want = shareable(grouped, &ours);
        assert_eq!(want.len(), 2);
        assert_eq!(want["weir1-a"].members.len(), 2);
        // The same sets, but an option other than `nomatch` refuses `a`.
        let got = shareable(split, &ours);
        assert_eq!(got.keys().collect::<Vec<_>>(), ["weir1-b"]);
        assert_eq!(got["weir1-b"], want["weir1-b"]);
        let without = split.replace("add weir1-a 10.0.0.9 skbmark 0x1\n", "");
        assert_eq!(shareable(&without, &ours), want);
    }

    #[test]
    fn keeps_equal_content_once_and_only_plain_net_sets() {
        // The kernel's save: hashsize grown, extra options, /32 spelled out.
        let kernel = "create weir1-a1 hash:net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x1\n\
            add weir1-a1 10.0.0.0/24\nadd weir1-a1 10.0.1.5\n\
            create weir1-a2 hash:net family inet hashsize 64 maxelem 65536\n\
            add weir1-a2 10.0.0.0/24\nadd weir1-a2 10.0.1.5\n\
            create weir1-c3 hash:net family inet hashsize 64 maxelem 65536\nadd weir1-c3 10.9.0.0/16\n\
            create weir1-self hash:ip family inet hashsize 64 maxelem 65536 skbmark\n\
            add weir1-self 10.0.0.1 skbmark 0x1000\n\
            create other hash:net family inet hashsize 64 maxelem 65536\nadd other 10.9.0.0/16 nomatch\n";
        let previous = [
            set("weir-a1", "weir1-a1"),
            set("weir-a2", "weir1-a2"),
            set("weir-c3", "weir1-c3"),
            set("weir-self", "weir1-self"),
        ];
        let new = "create weir2-a2 hash:net family inet hashsize 64 maxelem 65536\n\
            add weir2-a2 10.0.1.5/32\nadd weir2-a2 10.0.0.0/24\n\
            create weir2-a7 hash:net family inet hashsize 64 maxelem 65536\n\
            add weir2-a7 10.0.1.5/32\nadd weir2-a7 10.0.0.0/24\n\
            create weir2-a8 hash:net family inet hashsize 64 maxelem 65536\n\
            add weir2-a8 10.0.1.5/32\nadd weir2-a8 10.0.0.0/24\n\
            create weir2-c3 hash:net family inet hashsize 64 maxelem 131072\nadd weir2-c3 10.9.0.0/16\n\
            create weir2-c4 hash:net family inet hashsize 64 maxelem 65536\nadd weir2-c4 10.9.0.0/16 nomatch\n\
            create weir2-self hash:ip family inet hashsize 64 maxelem 65536 skbmark\n\
            add weir2-self 10.0.0.1 skbmark 0x1000\n";
        let new_sets = [
            set("weir-a2", "weir2-a2"),
            set("weir-a7", "weir2-a7"),
            set("weir-a8", "weir2-a8"),
            set("weir-c3", "weir2-c3"),
            set("weir-c4", "weir2-c4"),
            set("weir-self", "weir2-self"),
        ];
        let map = plan(new, &new_sets, &previous, kernel);
        // a2 keeps its namesake; a7 takes a1 (same members); a8 finds none
        // left; c3's maxelem differs; c4's nomatch differs from every old
        // set's (`other` is not ours); the self set is never shared.
        let want: BTreeMap<String, String> = [("weir2-a2", "weir1-a2"), ("weir2-a7", "weir1-a1")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(map, want);
        assert!(plan(new, &new_sets, &[], kernel).is_empty());

        let (load, whole) = split_text(new, &map);
        assert!(!load.contains("weir2-a2") && !load.contains("weir2-a7"));
        assert!(load.contains("create weir2-a8") && load.contains("add weir2-self"));
        assert!(whole.contains("create weir1-a2 ") && whole.contains("add weir1-a1 10.0.0.0/24"));
        assert_eq!(whole.lines().count(), new.lines().count());
        assert_eq!(
            rename_words(
                "-A WEIR2-X -m set --match-set weir2-a7 src -m comment --comment \"weir2-a7\" -j DROP",
                &map
            ),
            "-A WEIR2-X -m set --match-set weir1-a1 src -m comment --comment \"weir2-a7\" -j DROP"
        );
    }
}
