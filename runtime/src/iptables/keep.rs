//! Keeping unchanged chains from the generation in force (issue 21).
//!
//! Every generation used to load all of its chains under its own names
//! (`WEIR<g>-…`), so removing one policy of the 100,000-rule model loaded
//! 279,252 rules and 76,551 chains beside the old generation's, and then
//! deleted the old ones: most of an update's time, for chains nearly all
//! of which had not changed. The compiler numbers chains by their place in
//! the decision graph, and that numbering moves with any edit, so names
//! cannot say which chains are the same. Content can:
//!
//! - **A chain's key** is a hash of its table, its rules in order, with
//!   its own name left out and every jump (`-j`/`-g` or any word naming a
//!   chain of the same table) replaced by the target's key: two chains
//!   have the same key when they and everything they reach do the same
//!   thing, whatever they are called (a Merkle hash over the jump graph,
//!   which x_tables keeps acyclic). Set names are the kernel names after
//!   [`super::reuse`], so a rule naming a kept set matches the old rule.
//! - **The old side** is the generation in force as `applied.json`
//!   records it (the restore text it was applied from, read back at its
//!   apply), limited to the chains its state record owns.
//! - **Kept** means the new chain takes the old chain's kernel name, so
//!   the switch loads only the chains that changed. It is decided in the
//!   kernel, not from the records: children before parents, a chain is
//!   kept only when the kernel (`iptables-save` of the apply's start,
//!   under the lock) holds exactly the new chain's rules under the old
//!   name, compared as the read-back compares
//!   ([`super::readback::compare_chain`]) after renaming the chains
//!   already kept. A chain whose child was not kept therefore differs (it
//!   jumps to the new child) and is loaded too. Each old chain is kept by
//!   at most one new chain.
//! - **Never kept**: the hook targets (the generation's entry chains, so
//!   the hook chains always jump to `WEIR<g>-…` and `weir status` reads
//!   the generation from them), and a service's frontend and backend
//!   chains in nat (`WEIR<g>-FE…`, `WEIR<g>-BE…`), which `weir endpoints`
//!   rewrites in place under the generation's own names.
//!
//! **Why this stays atomic and fail closed:** a kept chain is not touched
//! while both generations exist (the old generation's rules keep seeing
//! exactly what they saw; both want the same content), the switch is the
//! same one transaction per family, and the read-back compares every
//! chain in force, kept ones included. **Ownership** works as for kept
//! sets: a chain belongs to every state record that lists it, and the
//! removal of the old generation and the rollback of a failed or
//! interrupted apply ([`super::intent`]) remove only the chains one record
//! lists and the other does not. A kept chain's rules keep their comments
//! byte for byte (the key covers them), so `weir stats` counts it under
//! the same provenance id; it counts every chain the state record lists.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use sha2::{Digest, Sha256};

use super::readback::{chain_rules, compare_chain, Index};
use super::restore::TableBlock;
use super::Saved;
use crate::bundle::Family;

type Key = [u8; 32];

/// Each chain's rules in order (hashed: tens of thousands of chains whose
/// names share a long prefix).
type Rules = HashMap<String, Vec<String>>;

/// Per family: new kernel chain name → the old one it keeps.
pub(crate) type KeptChains = BTreeMap<Family, BTreeMap<String, String>>;

/// The keys of the chains of one table (`rules`: each chain's rules in
/// order, `-A CHAIN …`), and the chains reached from `roots` in
/// post-order ([`post_order`]). A chain on a jump cycle (the kernel
/// refuses those) gets no key and is never kept.
fn keys<'r>(
    table: &str,
    rules: &'r Rules,
    roots: &'r [String],
) -> (HashMap<String, Key>, Vec<&'r str>) {
    let order = post_order(rules, roots);
    let mut out: HashMap<String, Key> = HashMap::new();
    'chains: for &c in &order {
        let mut h = Sha256::new();
        h.update(table.as_bytes());
        h.update(b"\n");
        for r in &rules[c] {
            for (i, w) in r.split(' ').enumerate() {
                if i == 1 {
                    h.update(b"\x01self");
                } else if let Some(k) = chain_word(w).and_then(|w| out.get(w)) {
                    h.update(b"\x01");
                    h.update(k);
                } else if i > 1 && chain_word(w).is_some_and(|w| rules.contains_key(w)) {
                    // On a cycle (a target not keyed before it): no key.
                    continue 'chains;
                } else {
                    h.update(w.as_bytes());
                }
                h.update(b" ");
            }
            h.update(b"\n");
        }
        out.insert(c.to_string(), h.finalize().into());
    }
    (out, order)
}

/// Words of `lines` (after the chain name) that name a chain of `rules`.
fn targets<'a>(lines: &'a [String], rules: &'a Rules) -> impl Iterator<Item = &'a str> + 'a {
    lines.iter().flat_map(move |r| {
        r.split(' ')
            .skip(2)
            .filter_map(chain_word)
            .filter(move |w| rules.contains_key(*w))
    })
}

/// `w` if it may name one of our chains (`WEIR…`): the cheap test before
/// a lookup, and what the jump graph counts as a jump.
fn chain_word(w: &str) -> Option<&str> {
    w.starts_with("WEIR").then_some(w)
}

/// The chains of `new` (one table of the new generation) to keep from
/// `old` (the same table of the generation in force, as applied), checked
/// against `kernel`: new name → old name. `owned`: the old chains the
/// state record lists; `never`: new chains that are always loaded.
fn table_plan(
    family: Family,
    new: &TableBlock,
    old_keys: &[(String, Key)],
    owned: &HashSet<&str>,
    kernel: &Index<'_>,
    never: &dyn Fn(&str) -> bool,
) -> BTreeMap<String, String> {
    let new_rules: Rules = chain_rules(new).into_iter().collect();
    let (new_keys, order) = keys(&new.table, &new_rules, &new.chains);
    let mut by_key: HashMap<&Key, Vec<&str>> = HashMap::new();
    for (c, k) in old_keys {
        if owned.contains(c.as_str()) && kernel.has(c) {
            by_key.entry(k).or_default().push(c.as_str());
        }
    }
    // Children before parents (`order`), so a parent is compared with
    // its kept children's old names.
    let mut map: HashMap<String, String> = HashMap::new();
    for c in order {
        if never(c) {
            continue;
        }
        let Some(candidates) = new_keys.get(c).and_then(|k| by_key.get_mut(k)) else {
            continue;
        };
        let Some(pos) = candidates.iter().position(|o| {
            map.insert(c.to_string(), o.to_string());
            let renamed: Vec<String> = new_rules[c]
                .iter()
                .map(|r| renamed(r, &map).into_owned())
                .collect();
            map.remove(c);
            compare_chain(family, &new.table, o, &renamed, kernel.rules(o)).is_none()
        }) else {
            continue;
        };
        let o = candidates.remove(pos);
        map.insert(c.to_string(), o.to_string());
    }
    map.into_iter().collect()
}

/// `line` with every space-separated word that is a key of `map` replaced
/// by its value (chain names are single words); borrowed if none is.
fn renamed<'l>(line: &'l str, map: &HashMap<String, String>) -> Cow<'l, str> {
    super::reuse::rename_words_by(line, |w| {
        chain_word(w).and_then(|w| map.get(w)).map(String::as_str)
    })
}

/// The chains of `rules` reached from `roots` (in that order) in
/// post-order of the jump graph (every chain after the chains it jumps
/// to; cycles cut anywhere).
fn post_order<'a>(rules: &'a Rules, roots: &'a [String]) -> Vec<&'a str> {
    let mut out = Vec::with_capacity(rules.len());
    let mut seen: HashSet<&str> = HashSet::new();
    for root in roots.iter().filter(|r| rules.contains_key(*r)) {
        let mut stack: Vec<(&str, bool)> = vec![(root.as_str(), false)];
        while let Some((c, expanded)) = stack.pop() {
            if expanded {
                out.push(c);
                continue;
            }
            if !seen.insert(c) {
                continue;
            }
            stack.push((c, true));
            for w in targets(&rules[c], rules) {
                if !seen.contains(w) {
                    stack.push((w, false));
                }
            }
        }
    }
    out
}

/// The keys of the generation in force's chains, per family and table,
/// each table's in declaration order (they do not depend on the kernel,
/// so the apply computes them while the tools save the kernel's state).
pub(crate) type OldKeys = HashMap<(Family, String), Vec<(String, Key)>>;

/// [`OldKeys`] of `old` (the generation in force's applied blocks).
pub(crate) fn old_keys(old: &BTreeMap<Family, Vec<TableBlock>>) -> OldKeys {
    let mut out = OldKeys::new();
    for (&family, blocks) in old {
        for b in blocks {
            let rules: Rules = chain_rules(b).into_iter().collect();
            let (mut k, _) = keys(&b.table, &rules, &b.chains);
            let ordered = b
                .chains
                .iter()
                .filter_map(|c| k.remove(c).map(|key| (c.clone(), key)))
                .collect();
            out.insert((family, b.table.clone()), ordered);
        }
    }
    out
}

/// Which chains of the new generation (`new`, its blocks after set
/// sharing) keep a chain of the generation in force (`old`: its keys,
/// [`old_keys`]; `owned`: (family, table, chain) its state lists), as the
/// kernel holds them (`saved`). `never`: chains always loaded (see the
/// module doc).
pub(crate) fn plan(
    new: &BTreeMap<Family, Vec<TableBlock>>,
    old: &OldKeys,
    owned: &HashSet<(Family, &str, &str)>,
    saved: &Saved,
    never: &dyn Fn(&str) -> bool,
) -> KeptChains {
    let mut out = KeptChains::new();
    for (&family, blocks) in new {
        let Some(tables) = saved.get(&family) else {
            continue;
        };
        for block in blocks {
            let (Some(o), Some(t)) = (
                old.get(&(family, block.table.clone())),
                tables.get(&block.table),
            ) else {
                continue;
            };
            let mine: HashSet<&str> = owned
                .iter()
                .filter(|(f, tb, _)| *f == family && *tb == block.table)
                .map(|(_, _, c)| *c)
                .collect();
            let index = Index::new(t);
            let m = table_plan(family, block, o, &mine, &index, never);
            out.entry(family).or_default().extend(m);
        }
    }
    out.retain(|_, m| !m.is_empty());
    out
}

/// `blocks` with the kept chains renamed (declarations and every rule).
pub(crate) fn rename(blocks: &mut BTreeMap<Family, Vec<TableBlock>>, kept: &KeptChains) {
    for (family, map) in kept {
        let map: HashMap<String, String> =
            map.iter().map(|(a, b)| (a.clone(), b.clone())).collect();
        for b in blocks.get_mut(family).into_iter().flatten() {
            for c in &mut b.chains {
                if let Some(o) = map.get(c) {
                    *c = o.clone();
                }
            }
            for r in &mut b.rules {
                if let Cow::Owned(n) = renamed(r, &map) {
                    *r = n;
                }
            }
        }
    }
}

/// The chain a rule line (`-A CHAIN …` / `-I CHAIN …`) belongs to.
pub(crate) fn rule_chain(rule: &str) -> &str {
    rule.split_whitespace().nth(1).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iptables::restore::SavedTable;

    fn block(table: &str, chains: &[&str], rules: &[&str]) -> TableBlock {
        TableBlock {
            table: table.into(),
            chains: chains.iter().map(|s| s.to_string()).collect(),
            rules: rules.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn chains_on_a_jump_cycle_get_no_key() {
        let b = block(
            "filter",
            &["WEIR1-A", "WEIR1-B", "WEIR1-C", "WEIR1-D"],
            &[
                "-A WEIR1-A -j WEIR1-B",
                "-A WEIR1-B -j WEIR1-A",
                "-A WEIR1-C -p tcp -j WEIR1-D",
                "-A WEIR1-D -j ACCEPT",
            ],
        );
        let rules: Rules = chain_rules(&b).into_iter().collect();
        let (k, order) = keys(&b.table, &rules, &b.chains);
        // One of the cycle's two chains is reached first and cut there;
        // neither gets a key. C and D do, children first.
        assert!(!k.contains_key("WEIR1-A") && !k.contains_key("WEIR1-B"));
        assert!(k.contains_key("WEIR1-C") && k.contains_key("WEIR1-D"));
        let at = |c: &str| order.iter().position(|o| *o == c).unwrap();
        assert!(at("WEIR1-D") < at("WEIR1-C"));
        assert_eq!(order.len(), 4);
    }

    fn saved(b: &TableBlock) -> Saved {
        let t = SavedTable {
            chains: b.chains.clone(),
            rules: b.rules.clone(),
        };
        Saved::from([(Family::Ipv4, BTreeMap::from([(b.table.clone(), t)]))])
    }

    fn owned(b: &TableBlock) -> HashSet<(Family, &str, &str)> {
        b.chains
            .iter()
            .map(|c| (Family::Ipv4, b.table.as_str(), c.as_str()))
            .collect()
    }

    #[test]
    fn unchanged_subtrees_are_kept_whatever_their_numbers() {
        let old = block(
            "filter",
            &["WEIR1-FWD", "WEIR1-F1", "WEIR1-F2", "WEIR1-F3"],
            &[
                "-A WEIR1-FWD -s 10.0.0.0/8 -j WEIR1-F1",
                "-A WEIR1-FWD -j WEIR1-F3",
                "-A WEIR1-F1 -p tcp --dport 80 -j WEIR1-F2",
                "-A WEIR1-F2 -m comment --comment \"weir:4\" -j ACCEPT",
                "-A WEIR1-F3 -j DROP",
            ],
        );
        // Renumbered; F3's content changed, so the root changes too.
        let new = block(
            "filter",
            &["WEIR2-FWD", "WEIR2-F7", "WEIR2-F8", "WEIR2-F9"],
            &[
                "-A WEIR2-FWD -s 10.0.0.0/8 -j WEIR2-F8",
                "-A WEIR2-FWD -j WEIR2-F9",
                "-A WEIR2-F8 -p tcp --dport 80 -j WEIR2-F7",
                "-A WEIR2-F7 -m comment --comment \"weir:4\" -j ACCEPT",
                "-A WEIR2-F9 -j REJECT",
            ],
        );
        let new_map = BTreeMap::from([(Family::Ipv4, vec![new.clone()])]);
        let old_map = old_keys(&BTreeMap::from([(Family::Ipv4, vec![old.clone()])]));
        let kept = plan(&new_map, &old_map, &owned(&old), &saved(&old), &|_| false);
        assert_eq!(
            kept[&Family::Ipv4],
            BTreeMap::from([
                ("WEIR2-F7".to_string(), "WEIR1-F2".to_string()),
                ("WEIR2-F8".to_string(), "WEIR1-F1".to_string()),
            ])
        );
        let mut renamed = new_map.clone();
        rename(&mut renamed, &kept);
        let b = &renamed[&Family::Ipv4][0];
        assert_eq!(b.chains, ["WEIR2-FWD", "WEIR1-F2", "WEIR1-F1", "WEIR2-F9"]);
        assert_eq!(b.rules[0], "-A WEIR2-FWD -s 10.0.0.0/8 -j WEIR1-F1");
        assert_eq!(b.rules[2], "-A WEIR1-F1 -p tcp --dport 80 -j WEIR1-F2");

        // Never-kept chains and chains the old state does not own load.
        let none = plan(&new_map, &old_map, &owned(&old), &saved(&old), &|c| {
            c == "WEIR2-F7"
        });
        assert!(none.is_empty(), "{none:?}");
        let none = plan(&new_map, &old_map, &HashSet::new(), &saved(&old), &|_| {
            false
        });
        assert!(none.is_empty());
    }

    #[test]
    fn kept_only_when_the_kernel_holds_it() {
        let old = block(
            "filter",
            &["WEIR1-F1", "WEIR1-F2"],
            &["-A WEIR1-F1 -j WEIR1-F2", "-A WEIR1-F2 -j ACCEPT"],
        );
        let new = block(
            "filter",
            &["WEIR2-F1", "WEIR2-F2"],
            &["-A WEIR2-F1 -j WEIR2-F2", "-A WEIR2-F2 -j ACCEPT"],
        );
        let new_map = BTreeMap::from([(Family::Ipv4, vec![new])]);
        let old_map = old_keys(&BTreeMap::from([(Family::Ipv4, vec![old.clone()])]));
        // Someone changed F2 in the kernel: neither F2 nor its parent is
        // kept (the parent would jump to the new F2).
        let mut drifted = old.clone();
        drifted.rules[1] = "-A WEIR1-F2 -j DROP".into();
        let kept = plan(&new_map, &old_map, &owned(&old), &saved(&drifted), &|_| {
            false
        });
        assert!(kept.is_empty(), "{kept:?}");
        let kept = plan(&new_map, &old_map, &owned(&old), &saved(&old), &|_| false);
        assert_eq!(kept[&Family::Ipv4].len(), 2);
        // A chain missing from the kernel is not kept.
        let mut gone = old.clone();
        gone.chains.remove(1);
        gone.rules.remove(1);
        let kept = plan(&new_map, &old_map, &owned(&old), &saved(&gone), &|_| false);
        assert!(kept.is_empty(), "{kept:?}");
    }

    #[test]
    fn identical_chains_keep_distinct_old_chains() {
        let old = block(
            "filter",
            &["WEIR1-A", "WEIR1-B"],
            &["-A WEIR1-A -j ACCEPT", "-A WEIR1-B -j ACCEPT"],
        );
        let new = block(
            "filter",
            &["WEIR2-X", "WEIR2-Y", "WEIR2-Z"],
            &[
                "-A WEIR2-X -j ACCEPT",
                "-A WEIR2-Y -j ACCEPT",
                "-A WEIR2-Z -j ACCEPT",
            ],
        );
        let kept = plan(
            &BTreeMap::from([(Family::Ipv4, vec![new])]),
            &old_keys(&BTreeMap::from([(Family::Ipv4, vec![old.clone()])])),
            &owned(&old),
            &saved(&old),
            &|_| false,
        );
        let m = &kept[&Family::Ipv4];
        assert_eq!(m.len(), 2);
        let olds: HashSet<&String> = m.values().collect();
        assert_eq!(olds.len(), 2);
    }
}
