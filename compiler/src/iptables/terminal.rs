//! Conditional gotos to one-rule verdict chains become that rule.
//!
//! A graph leaf that only decides (the default allow of a side, a deny
//! without an event, an audit leaf) is a chain of one rule with no match:
//! `-A X -m comment --comment "weir:<id>" -j RETURN` (or `DROP`,
//! `ACCEPT`). Every branch that reaches it is a rule `… -g X`, so a new
//! flow pays a rule evaluation and a chain entry for nothing but the
//! verdict. Going to `X` with `-g` and leaving `X` by its one rule is the
//! same as that rule's target in the branch's own chain: `RETURN` in a
//! chain entered by `-g` returns to where the branching chain was called
//! from, which is where a `RETURN` of the branching chain goes; `DROP` and
//! `ACCEPT` end the packet's walk of the table either way. So
//! `M -g X` becomes `M -m comment --comment "weir:<id>" -j RETURN`: the
//! same verdict, and the same packets counted under `<id>` (`weir stats`
//! sums a provenance id's counters over every rule that names it, so a
//! leaf copied into several branches still counts each packet once).
//! Branching rules carry no comment (`chains.rs`); one that does (a
//! label counted by nothing) has it dropped. A chain no rule goes to any
//! more is removed.
//!
//! Only `-g` is rewritten (a `-j X` call would return to the rule after
//! it, not to the caller), only chains whose one rule has no match but
//! the comment and whose target is `RETURN`, `DROP` or `ACCEPT`, and
//! never an entry chain (the runtime's hooks jump to those by name).
//! Chains a rule reaches only through other tables' text do not exist
//! (rules only name chains of their own table).

use super::depth::jump_tokens;
use super::entries::ENTRIES;
use super::text::{FastMap, Tables};

/// The verdict part of chain `x`'s rules if they are exactly one rule
/// `-A x [-m comment --comment "C"] -j RETURN|DROP|ACCEPT`: that rule
/// without `-A x ` (comment included).
fn verdict_only<'a>(x: &str, rules: &'a [String]) -> Option<&'a str> {
    let [rule] = rules else {
        return None;
    };
    let rest = rule
        .strip_prefix("-A ")?
        .strip_prefix(x)?
        .strip_prefix(' ')?;
    let target = match rest.strip_prefix("-m comment --comment \"") {
        Some(r) => {
            let (c, after) = r.split_once('"')?;
            if c.contains(char::is_whitespace) {
                return None;
            }
            after.strip_prefix(' ')?
        }
        None => rest,
    };
    matches!(target, "-j RETURN" | "-j DROP" | "-j ACCEPT").then_some(rest)
}

/// `rule` is `… -g X` (X one token, last): the part before ` -g X`, and X.
///
/// X has no space, so its ` -g ` is the one ending at the rule's last
/// space: found with a byte search from the end instead of a substring
/// search for ` -g ` (`rsplit_once`) in each of the headline model's
/// 109,000 rules (issue 21).
fn goto_tail(rule: &str) -> Option<(&str, &str)> {
    let (before, x) = rule.rsplit_once(' ')?;
    let head = before.strip_suffix(" -g")?;
    (!x.is_empty() && !x.contains(char::is_whitespace)).then_some((head, x))
}

/// `head` without its own `-m comment --comment "…"` (the internal node's
/// label), if it has one.
fn without_comment(head: &str) -> String {
    const C: &str = " -m comment --comment \"";
    if let Some(at) = head.find(C) {
        if let Some(len) = head[at + C.len()..].find('"') {
            let end = at + C.len() + len + 1;
            let mut s = String::with_capacity(head.len());
            s.push_str(&head[..at]);
            s.push_str(&head[end..]);
            return s;
        }
    }
    head.to_string()
}

/// Rewrites every conditional or unconditional goto to a one-rule
/// verdict chain as that rule, in every table, and removes the chains
/// left without a reference (see the module docs). Returns how many
/// rules were rewritten.
pub fn inline_verdicts(out: &mut Tables) -> usize {
    let mut rewritten = 0;
    for t in out.tables.values_mut() {
        let verdicts: FastMap<String, String> = t
            .chains
            .iter()
            .filter(|c| !ENTRIES.contains(&c.as_str()))
            .filter_map(|c| {
                let v = verdict_only(c, t.rules.get(c)?)?;
                Some((c.clone(), v.to_string()))
            })
            .collect();
        if verdicts.is_empty() {
            continue;
        }
        for (chain, rules) in t.rules.iter_mut() {
            if verdicts.contains_key(chain) {
                continue;
            }
            for r in rules.iter_mut() {
                let Some((head, x)) = goto_tail(r) else {
                    continue;
                };
                let Some(v) = verdicts.get(x) else {
                    continue;
                };
                let mut line = without_comment(head);
                line.push(' ');
                line.push_str(v);
                *r = line;
                rewritten += 1;
            }
        }
        // Chains still named by some rule (a verdict chain may also be
        // called with `-j`, or be the target of a rule this pass does not
        // rewrite): the rules' jump targets as the depth pass reads them
        // (one scan for `-`, no word list per rule; with the tail goto
        // found from the last space, this pass went from 47 to 41 ms of
        // CPU for the headline model, issue 21). Its tokens end at ASCII
        // whitespace, the only kind the generated rules have.
        let mut named: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for rules in t.rules.values() {
            for r in rules {
                jump_tokens(r, |x| {
                    if let Some((k, _)) = verdicts.get_key_value(x) {
                        named.insert(k.as_str());
                    }
                });
            }
        }
        let gone: Vec<String> = verdicts
            .keys()
            .filter(|c| !named.contains(c.as_str()))
            .cloned()
            .collect();
        for c in &gone {
            t.rules.remove(c);
        }
        let gone: std::collections::HashSet<String> = gone.into_iter().collect();
        t.chains.retain(|c| !gone.contains(c));
    }
    rewritten
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rules: &[(&str, &str)]) -> Tables {
        let mut t = Tables::default();
        let mut seen = Vec::new();
        for (c, _) in rules {
            if !seen.contains(c) {
                seen.push(*c);
                t.chain("filter", c);
            }
        }
        for (c, r) in rules {
            t.rule("filter", c, &[r]);
        }
        t
    }

    fn rules_of(t: &Tables, c: &str) -> Vec<String> {
        t.tables["filter"].rules.get(c).cloned().unwrap_or_default()
    }

    #[test]
    fn conditional_goto_to_a_verdict_chain_becomes_the_verdict() {
        let mut t = table(&[
            (
                "WEIR-FWD",
                "-m comment --comment \"weir:egress\" -j WEIR-F1",
            ),
            (
                "WEIR-F1",
                "-m set ! --match-set weir-s1 src -m comment --comment \"weir:n1\" -g WEIR-F8",
            ),
            (
                "WEIR-F1",
                "-m set --match-set weir-s2 src -m comment --comment \"weir:n1\" -g WEIR-F9",
            ),
            ("WEIR-F1", "-m comment --comment \"weir:n1\" -g WEIR-F8"),
            ("WEIR-F8", "-m comment --comment \"weir:3\" -j RETURN"),
            ("WEIR-F9", "-j LOG --log-prefix \"weir:4 \""),
            ("WEIR-F9", "-m comment --comment \"weir:4\" -j DROP"),
        ]);
        assert_eq!(inline_verdicts(&mut t), 2);
        assert_eq!(
            rules_of(&t, "WEIR-F1"),
            vec![
                "-A WEIR-F1 -m set ! --match-set weir-s1 src -m comment --comment \"weir:3\" -j RETURN",
                "-A WEIR-F1 -m set --match-set weir-s2 src -m comment --comment \"weir:n1\" -g WEIR-F9",
                "-A WEIR-F1 -m comment --comment \"weir:3\" -j RETURN",
            ]
        );
        let chains = &t.tables["filter"].chains;
        assert!(!chains.contains(&"WEIR-F8".to_string()), "{chains:?}");
        // Two rules (an event before the verdict): kept.
        assert!(chains.contains(&"WEIR-F9".to_string()));
    }

    /// `goto_tail` is "split at the last ` -g `, one token after it".
    #[test]
    fn goto_tail_matches_the_substring_split() {
        fn reference(rule: &str) -> Option<(&str, &str)> {
            let (head, x) = rule.rsplit_once(" -g ")?;
            (!x.is_empty() && !x.contains(char::is_whitespace)).then_some((head, x))
        }
        let rules = [
            "-A WEIR-F1 -m comment --comment \"weir:n1\" -g WEIR-F2",
            "-A WEIR-F1 -g WEIR-F2 -j RETURN",
            "-A X -g Y -g Z",
            " -g Z",
            "-g Z",
            "-A X -g ",
            "-A X -g",
            "-A X -g  Y",
            "-A X -g\tY",
            "-A X -g Y\t",
            "-A X --g Y",
            "-A X -gg Y",
            "-A X -g Y\u{a0}Z",
            "",
            " ",
        ];
        for r in rules {
            assert_eq!(goto_tail(r), reference(r), "{r:?}");
        }
    }

    #[test]
    fn calls_and_entries_are_kept() {
        let mut t = table(&[
            ("WEIR-FWD", "-m comment --comment \"weir:allow\" -j ACCEPT"),
            ("WEIR-X", "-m comment --comment \"weir:n2\" -j WEIR-F8"),
            ("WEIR-X", "-p tcp -g WEIR-FWD"),
            ("WEIR-X", "-p udp -g WEIR-F8"),
            ("WEIR-F8", "-m comment --comment \"weir:3\" -j DROP"),
        ]);
        assert_eq!(inline_verdicts(&mut t), 1);
        assert_eq!(
            rules_of(&t, "WEIR-X"),
            vec![
                "-A WEIR-X -m comment --comment \"weir:n2\" -j WEIR-F8",
                "-A WEIR-X -p tcp -g WEIR-FWD",
                "-A WEIR-X -p udp -m comment --comment \"weir:3\" -j DROP",
            ]
        );
        // Still called with -j: kept.
        assert!(t.tables["filter"].chains.contains(&"WEIR-F8".to_string()));
    }
}
